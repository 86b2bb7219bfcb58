//! The docking model (seed 004, Figure 2) read from a TOML file: table visibility, docking
//! objects, member tables with their paths to the primary row, visibility rules in sequence,
//! related objects and the node attributes rules may use.
//!
//! [`DockingModel::from_toml`] is pure: it parses the file ([`mod@file`] holds the serde shape)
//! and validates everything that can be decided without the database (names, references
//! between objects, path syntax and chaining). What needs the schema is
//! [`super::check`]'s job. The file format is described in
//! `docs/decisions/0001-docking-model.md`; `samples/sales/docking.toml` uses all of it.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The only format version this code reads.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the parameter bound to the primary row id of the instance being evaluated.
pub const PARAM_PRIMARY_ROW_ID: &str = ":primary_row_id";
/// Name of the parameter bound to the node's name.
pub const PARAM_NODE_ID: &str = ":node_id";
/// Prefix of the parameters bound to node attributes (`:attr_employee`).
pub const PARAM_ATTR_PREFIX: &str = ":attr_";

/// The relations the router provides (as TEMP tables) for rules to read node identity from.
/// Set-form rules join them to answer for all nodes at once; `check` creates them to compile
/// rules the same way the router will. One row per node in `berth_node`; one row per node
/// attribute in `berth_node_attr` (`name` is the attribute, without the `attr_` prefix).
pub const NODE_RELATIONS_DDL: &str = "\
CREATE TEMP TABLE IF NOT EXISTS berth_node(node_id TEXT PRIMARY KEY NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS berth_node_attr(
  node_id TEXT NOT NULL,
  name TEXT NOT NULL,
  value TEXT,
  PRIMARY KEY (node_id, name)
);
CREATE INDEX IF NOT EXISTS temp.berth_node_attr_value ON berth_node_attr(name, value);";

/// Names of the relations created by [`NODE_RELATIONS_DDL`].
pub const NODE_RELATIONS: [&str; 2] = ["berth_node", "berth_node_attr"];

/// Who gets a table's rows (seed: "Enterprise" / "Limited" table visibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Every node gets every row.
    Enterprise,
    /// Docking objects decide: a node gets the member rows of the instances visible to it.
    Limited,
    /// Never leaves central.
    Central,
    /// Part of the schema (versioned, migrated, checksummed) but never captured or sent:
    /// every site holds its own rows (a cache, a log, a key-value store).
    Local,
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enterprise => "enterprise",
            Self::Limited => "limited",
            Self::Central => "central",
            Self::Local => "local",
        })
    }
}

/// Where an item of the model is: what it is and the line of the file it starts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    /// The item, e.g. `object "quote" rule 2`.
    pub item: String,
    /// 1-based line in the TOML file, when known.
    pub line: Option<usize>,
}

impl Location {
    fn new(item: impl Into<String>, line: Option<usize>) -> Self {
        Self {
            item: item.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} (line {l})", self.item),
            None => f.write_str(&self.item),
        }
    }
}

/// A docking model that cannot be used. Each variant names the offending item.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The file is not TOML of the expected shape (unknown key, wrong type, missing field).
    #[error("docking model, line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line (0 when the parser gave no position).
        line: usize,
        /// 1-based column (0 when the parser gave no position).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// `version` is missing or not one this code reads.
    #[error(
        "docking model: version {found} is not supported; this berth reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion {
        /// The version found in the file.
        found: u32,
    },
    /// A name is empty or has characters that cannot be used there.
    #[error("{at}: {name:?} is not a valid {what}: {rule}")]
    BadName {
        /// Where.
        at: Location,
        /// The name given.
        name: String,
        /// What kind of name (table, object, attribute).
        what: &'static str,
        /// What a valid one looks like.
        rule: &'static str,
    },
    /// Two items that must have distinct names do not.
    #[error(
        "{at}: {what} {name:?} is declared twice (names are case-insensitive); remove or rename one"
    )]
    Duplicate {
        /// Where the second one is.
        at: Location,
        /// What kind of item.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// An object's primary or member table is not declared under `[tables]`.
    #[error(
        "{at}: table {table:?} is not declared under [tables]; add `{table} = {{ visibility = \"limited\" }}`"
    )]
    TableNotDeclared {
        /// Where it is used.
        at: Location,
        /// The table.
        table: String,
    },
    /// An object rule or related object names an object that is not declared.
    #[error(
        "{at}: there is no docking object named {object:?}; declare it with [[object]] or fix the name"
    )]
    UnknownObject {
        /// Where it is named.
        at: Location,
        /// The name.
        object: String,
    },
    /// A rule or related object has neither `sql` nor `set_sql`.
    #[error("{at}: give `sql` (one instance at a time), `set_sql` (all at once), or both")]
    MissingSql {
        /// Where.
        at: Location,
    },
    /// A join step of a declared path cannot be read.
    #[error("{at}: join {text:?} is not of the form \"table.column -> table.column\": {reason}")]
    BadJoin {
        /// Where.
        at: Location,
        /// The text given.
        text: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A setting given where it means nothing.
    #[error("{at}: {reason}")]
    Misplaced {
        /// Where.
        at: Location,
        /// Why it does not belong there.
        reason: String,
    },
    /// A declared path does not lead from the member table to the primary table.
    #[error("{at}: {reason}")]
    BrokenPath {
        /// Where.
        at: Location,
        /// How the chain is broken.
        reason: String,
    },
}

/// How one table travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableSpec {
    /// The table name as written.
    pub name: String,
    /// Who gets its rows.
    pub visibility: Visibility,
    /// Whether nodes may write it (refused at central otherwise).
    pub node_write: bool,
    /// The columns that identify a row of a table without a PRIMARY KEY (`key = [..]`):
    /// NOT NULL, with a UNIQUE index on exactly them (`check` verifies both).
    pub key: Option<Vec<String>>,
    /// Line of the declaration.
    pub line: Option<usize>,
}

/// One join of a path: `from_table.from_columns = to_table.to_columns`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Join {
    /// The table holding the reference.
    pub from_table: String,
    /// Its referencing columns.
    pub from_columns: Vec<String>,
    /// The referenced table.
    pub to_table: String,
    /// Its referenced columns (same count).
    pub to_columns: Vec<String>,
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |t: &str, c: &[String]| match c {
            [one] => format!("{t}.{one}"),
            many => format!("{t}.({})", many.join(", ")),
        };
        write!(
            f,
            "{} -> {}",
            side(&self.from_table, &self.from_columns),
            side(&self.to_table, &self.to_columns)
        )
    }
}

impl Join {
    /// Parses `"table.column -> table.column"`, or `"table.(a, b) -> table.(c, d)"` for a
    /// reference on several columns (as `Display` writes it and `docking check` suggests).
    pub fn parse(text: &str) -> Result<Join, &'static str> {
        let (l, r) = text
            .split_once("->")
            .ok_or("the two sides must be separated by \"->\"")?;
        let side = |s: &str| -> Result<(String, Vec<String>), &'static str> {
            let (t, c) = s
                .trim()
                .split_once('.')
                .ok_or("each side must be table.column or table.(column, ...)")?;
            let (t, c) = (t.trim(), c.trim());
            let columns: Vec<String> = match c.strip_prefix('(') {
                Some(list) => list
                    .strip_suffix(')')
                    .ok_or("a column list must end with \")\"")?
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .collect(),
                None => vec![c.to_string()],
            };
            if !is_identifier(t) || !columns.iter().all(|c| is_identifier(c)) {
                return Err(
                    "table and column names must be plain identifiers (letters, digits, _)",
                );
            }
            Ok((t.to_string(), columns))
        };
        let (ft, fc) = side(l)?;
        let (tt, tc) = side(r)?;
        if fc.len() != tc.len() {
            return Err("the two sides must name as many columns each");
        }
        Ok(Join {
            from_table: ft,
            from_columns: fc,
            to_table: tt,
            to_columns: tc,
        })
    }
}

/// A chain of joins from a member table to the primary table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Path {
    /// The joins in order; the first starts at the member table, the last ends at the primary
    /// table.
    pub joins: Vec<Join>,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.joins.iter().map(Join::to_string).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// How a member row finds its primary row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathSpec {
    /// The member is the primary table itself.
    Primary,
    /// Follow the schema's foreign keys through member tables (must be unambiguous).
    ForeignKeys,
    /// The declared paths, all followed and their results unioned.
    Declared(Vec<Path>),
}

/// A member table of a docking object (seed: S_DOBJ_TBL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// The table.
    pub table: String,
    /// VIS_EVENT_FLG: a change to this table can change which nodes see the instance.
    pub vis_event: bool,
    /// The way from a row to its primary row(s).
    pub path: PathSpec,
    /// Whether a node's write may put a row of this table into an instance the node does
    /// not hold (SPEC 2.10, link grants). False unless the model says so.
    pub node_link: bool,
    /// Line of the declaration (None for the implicit primary member).
    pub line: Option<usize>,
}

/// The SQL of a rule or related object, in one or both forms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleSql {
    /// The seed's form, evaluated for one instance (and one node) at a time with named
    /// parameters.
    pub pair: Option<String>,
    /// The set form, evaluated once for many instances and all nodes; no parameters.
    pub set: Option<String>,
}

/// A visibility rule (seed: S_DOBJ_VIS_RULE), evaluated in file order (RULE_SEQUENCE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Rule {
    /// RULE_TYPE "R": visible when the query returns a row.
    /// `pair`: any columns, parameters `:primary_row_id`, `:node_id`, `:attr_NAME`;
    /// `set`: two columns `(primary_row_id, node_id)`.
    Sql {
        /// The rule's SQL.
        sql: RuleSql,
        /// Line of the rule.
        line: Option<usize>,
    },
    /// RULE_TYPE "O": visible when an instance of `object` that this instance maps to is
    /// visible. `pair`: one column (the other object's primary ids), parameter
    /// `:primary_row_id`; `set`: two columns `(primary_row_id, other_primary_row_id)`.
    Object {
        /// CHECK_DOBJ_ID: the object whose visibility decides.
        object: String,
        /// The mapping from this object's primary ids to the other's.
        sql: RuleSql,
        /// Whether a node's write may map an instance it does not hold to one visible to
        /// someone (SPEC 2.10, link grants).
        node_link: bool,
        /// Line of the rule.
        line: Option<usize>,
    },
}

impl Rule {
    /// The rule's SQL.
    pub fn sql(&self) -> &RuleSql {
        match self {
            Rule::Sql { sql, .. } | Rule::Object { sql, .. } => sql,
        }
    }
    /// The rule's line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Rule::Sql { line, .. } | Rule::Object { line, .. } => *line,
        }
    }
}

/// A related docking object (seed: S_REL_DOBJ): re-checked, and downloaded or removed, when
/// this object is. Same SQL contract as an object rule's mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Related {
    /// REL_DOBJ_ID.
    pub object: String,
    /// The mapping from this object's primary ids to the related object's.
    pub sql: RuleSql,
    /// Whether a node's write may relate an instance it does not hold to one visible to
    /// someone (SPEC 2.10, link grants).
    pub node_link: bool,
    /// Line of the declaration.
    pub line: Option<usize>,
}

/// A docking object (seed: S_DOBJ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockingObject {
    /// OBJ_NAME.
    pub name: String,
    /// PRIMARY_TABLE_ID: its primary key is the instance's primary row id.
    pub primary_table: String,
    /// Member tables, the primary table first.
    pub members: Vec<Member>,
    /// Visibility rules in sequence.
    pub rules: Vec<Rule>,
    /// Related objects.
    pub related: Vec<Related>,
    /// Line of the declaration.
    pub line: Option<usize>,
}

impl DockingObject {
    /// The member entry of `table` (case-insensitive), if it is one.
    pub fn member(&self, table: &str) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.table.eq_ignore_ascii_case(table))
    }
}

/// A validated docking model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DockingModel {
    /// Node attributes the rules may use as `:attr_NAME` (given at `node add --attr`).
    pub node_attributes: BTreeSet<String>,
    /// Declared tables, keyed by lower-case name.
    pub tables: BTreeMap<String, TableSpec>,
    /// Docking objects in file order.
    pub objects: Vec<DockingObject>,
}

impl DockingModel {
    /// Parses and validates a docking model.
    pub fn from_toml(text: &str) -> Result<DockingModel, ModelError> {
        let raw: file::File = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            ModelError::Toml {
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        validate(raw, text)
    }

    /// The declared table (case-insensitive).
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.get(&name.to_ascii_lowercase())
    }

    /// The docking object named `name` (case-insensitive).
    pub fn object(&self, name: &str) -> Option<&DockingObject> {
        self.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
    }

    /// Every object `table` is a member of, with its member entry (seed: "FOR all docking
    /// objects that the table belongs to").
    pub fn objects_of(&self, table: &str) -> impl Iterator<Item = (&DockingObject, &Member)> {
        self.objects
            .iter()
            .filter_map(move |o| o.member(table).map(|m| (o, m)))
    }

    /// The tables it takes out of plain replication by primary key: the `local` ones and
    /// those that name their key.
    pub fn classes(&self) -> crate::schema::Classes {
        let mut c = crate::schema::Classes::default();
        for (lower, t) in &self.tables {
            if t.visibility == Visibility::Local {
                c.local.insert(lower.clone());
            } else if let Some(key) = &t.key {
                c.keys.insert(lower.clone(), key.clone());
            }
        }
        c
    }
}

/// The serde shape of the TOML file, before validation.
pub mod file;

/// True for names usable unquoted in SQL and in `:attr_NAME` parameters.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> Option<usize> {
    Some(line_col(text, span.start).0)
}

fn rule_sql(
    sql: Option<String>,
    set: Option<String>,
    at: &Location,
) -> Result<RuleSql, ModelError> {
    let nonblank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let (pair, set) = (nonblank(sql), nonblank(set));
    if pair.is_none() && set.is_none() {
        return Err(ModelError::MissingSql { at: at.clone() });
    }
    Ok(RuleSql { pair, set })
}

fn validate(raw: file::File, text: &str) -> Result<DockingModel, ModelError> {
    if raw.version != FORMAT_VERSION {
        return Err(ModelError::UnsupportedVersion { found: raw.version });
    }
    let mut node_attributes = BTreeSet::new();
    for a in raw.nodes.attributes {
        let at = Location::new("[nodes] attributes", None);
        if !is_identifier(&a) {
            return Err(ModelError::BadName {
                at,
                name: a,
                what: "node attribute",
                rule: "letters, digits and _, not starting with a digit (it becomes :attr_NAME)",
            });
        }
        if !node_attributes.insert(a.clone()) {
            return Err(ModelError::Duplicate {
                at,
                what: "node attribute",
                name: a,
            });
        }
    }

    let mut tables = BTreeMap::new();
    for (name, spec) in raw.tables {
        let line = line_of(text, spec.span());
        let at = Location::new(format!("table {name:?}"), line);
        if !is_identifier(&name) {
            return Err(ModelError::BadName {
                at,
                name,
                what: "table name",
                rule: "letters, digits and _, not starting with a digit",
            });
        }
        let spec = spec.into_inner();
        let key = name.to_ascii_lowercase();
        if tables.contains_key(&key) {
            return Err(ModelError::Duplicate {
                at,
                what: "table",
                name,
            });
        }
        tables.insert(
            key,
            TableSpec {
                name,
                visibility: spec.visibility,
                node_write: spec.node_write,
                key: spec.key,
                line,
            },
        );
    }
    let declared = |t: &str, at: &Location| -> Result<String, ModelError> {
        match tables.get(&t.to_ascii_lowercase()) {
            Some(spec) => Ok(spec.name.clone()),
            None => Err(ModelError::TableNotDeclared {
                at: at.clone(),
                table: t.to_string(),
            }),
        }
    };

    // Object names first, so rules may refer to objects declared further down.
    let mut names = BTreeSet::new();
    for o in &raw.object {
        let line = line_of(text, o.span());
        let name = &o.get_ref().name;
        let at = Location::new(format!("object {name:?}"), line);
        if !is_identifier(name) {
            return Err(ModelError::BadName {
                at,
                name: name.clone(),
                what: "object name",
                rule: "letters, digits and _, not starting with a digit",
            });
        }
        if !names.insert(name.to_ascii_lowercase()) {
            return Err(ModelError::Duplicate {
                at,
                what: "docking object",
                name: name.clone(),
            });
        }
    }
    let known_object = |o: &str, at: &Location| -> Result<String, ModelError> {
        raw.object
            .iter()
            .map(|x| &x.get_ref().name)
            .find(|n| n.eq_ignore_ascii_case(o))
            .cloned()
            .ok_or_else(|| ModelError::UnknownObject {
                at: at.clone(),
                object: o.to_string(),
            })
    };

    let mut objects = Vec::new();
    for o in &raw.object {
        let oline = line_of(text, o.span());
        let o = o.get_ref();
        let oname = &o.name;
        let oat = Location::new(format!("object {oname:?}"), oline);
        let primary = declared(&o.primary_table, &oat)?;
        let mut members = vec![Member {
            table: primary.clone(),
            vis_event: true,
            path: PathSpec::Primary,
            node_link: false,
            line: None,
        }];
        for m in &o.member {
            let mline = line_of(text, m.span());
            let m = m.get_ref();
            let mat = Location::new(format!("object {oname:?} member {:?}", m.table), mline);
            let table = declared(&m.table, &mat)?;
            if table.eq_ignore_ascii_case(&primary) {
                // Listing the primary table only sets its VIS_EVENT_FLG.
                if m.paths.is_some() {
                    return Err(ModelError::BrokenPath {
                        at: mat,
                        reason: "the primary table is its own path; remove `paths`".into(),
                    });
                }
                if members[0].line.is_some() {
                    return Err(ModelError::Duplicate {
                        at: mat,
                        what: "member",
                        name: table,
                    });
                }
                members[0].vis_event = m.vis_event;
                members[0].line = mline;
                continue;
            }
            if members.iter().any(|x| x.table.eq_ignore_ascii_case(&table)) {
                return Err(ModelError::Duplicate {
                    at: mat,
                    what: "member",
                    name: table,
                });
            }
            let path = match &m.paths {
                None => PathSpec::ForeignKeys,
                Some(paths) => PathSpec::Declared(declared_paths(paths, &table, &primary, &mat)?),
            };
            members.push(Member {
                table,
                vis_event: m.vis_event,
                path,
                node_link: m.node_link,
                line: mline,
            });
        }

        let mut rules = Vec::new();
        for (i, r) in o.rule.iter().enumerate() {
            let line = line_of(text, r.span());
            let r = r.get_ref();
            let at = Location::new(format!("object {oname:?} rule {}", i + 1), line);
            let sql = rule_sql(r.sql.clone(), r.set_sql.clone(), &at)?;
            rules.push(match &r.object {
                None if r.node_link => {
                    return Err(ModelError::Misplaced {
                        at,
                        reason: "`node_link` grants links made by an object rule (`object = ...`), a member or a related object; an SQL rule makes none".into(),
                    });
                }
                None => Rule::Sql { sql, line },
                Some(other) => Rule::Object {
                    object: known_object(other, &at)?,
                    sql,
                    node_link: r.node_link,
                    line,
                },
            });
        }

        let mut related = Vec::new();
        for r in &o.related {
            let line = line_of(text, r.span());
            let r = r.get_ref();
            let at = Location::new(format!("object {oname:?} related {:?}", r.object), line);
            let object = known_object(&r.object, &at)?;
            if related
                .iter()
                .any(|x: &Related| x.object.eq_ignore_ascii_case(&object))
            {
                return Err(ModelError::Duplicate {
                    at,
                    what: "related object",
                    name: object,
                });
            }
            related.push(Related {
                object,
                sql: rule_sql(r.sql.clone(), r.set_sql.clone(), &at)?,
                node_link: r.node_link,
                line,
            });
        }

        objects.push(DockingObject {
            name: oname.clone(),
            primary_table: primary,
            members,
            rules,
            related,
            line: oline,
        });
    }

    Ok(DockingModel {
        node_attributes,
        tables,
        objects,
    })
}

fn declared_paths(
    paths: &[Vec<String>],
    member: &str,
    primary: &str,
    mat: &Location,
) -> Result<Vec<Path>, ModelError> {
    if paths.is_empty() {
        return Err(ModelError::BrokenPath {
            at: mat.clone(),
            reason:
                "`paths` is empty; remove it to follow foreign keys, or declare at least one path"
                    .into(),
        });
    }
    let mut out = Vec::new();
    for (pi, steps) in paths.iter().enumerate() {
        let pat = Location::new(format!("{} path {}", mat.item, pi + 1), mat.line);
        if steps.is_empty() {
            return Err(ModelError::BrokenPath {
                at: pat,
                reason: "a path needs at least one join".into(),
            });
        }
        let mut joins = Vec::new();
        let mut at_table = member.to_string();
        let mut seen = BTreeSet::from([member.to_ascii_lowercase()]);
        for text in steps {
            let j = Join::parse(text).map_err(|reason| ModelError::BadJoin {
                at: pat.clone(),
                text: text.clone(),
                reason,
            })?;
            if !j.from_table.eq_ignore_ascii_case(&at_table) {
                return Err(ModelError::BrokenPath {
                    at: pat,
                    reason: format!(
                        "join {text:?} starts at {:?} but the path is at {at_table:?}; each join \
                         starts where the previous one ended, the first at the member table",
                        j.from_table
                    ),
                });
            }
            if !seen.insert(j.to_table.to_ascii_lowercase()) {
                return Err(ModelError::BrokenPath {
                    at: pat,
                    reason: format!(
                        "join {text:?} returns to {:?}: a path must not loop",
                        j.to_table
                    ),
                });
            }
            at_table = j.to_table.clone();
            joins.push(j);
        }
        if !at_table.eq_ignore_ascii_case(primary) {
            return Err(ModelError::BrokenPath {
                at: pat,
                reason: format!(
                    "the path ends at {at_table:?}, not at the primary table {primary:?}"
                ),
            });
        }
        let path = Path { joins };
        if out.contains(&path) {
            return Err(ModelError::Duplicate {
                at: pat,
                what: "path",
                name: path.to_string(),
            });
        }
        out.push(path);
    }
    Ok(out)
}

/// Asks the next routing pass to rebuild edges and instance sets (the model changed).
pub fn request_resync(conn: &rusqlite::Connection) -> crate::Result<()> {
    crate::store::set_meta(conn, crate::store::meta_keys::ROUTING_RESYNC, "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = { visibility = "limited", node_write = true }
opty_emp = { visibility = "limited" }
product = { visibility = "enterprise" }

[[object]]
name = "opportunity"
primary_table = "opty"

[[object.member]]
table = "opty_emp"

[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
"#;

    #[test]
    fn a_minimal_model_reads() {
        let m = DockingModel::from_toml(MINIMAL).unwrap();
        assert_eq!(m.node_attributes, BTreeSet::from(["employee".to_string()]));
        let o = m.object("OPPORTUNITY").unwrap();
        assert_eq!(o.members.len(), 2);
        assert_eq!(o.members[0].path, PathSpec::Primary);
        assert_eq!(o.members[1].path, PathSpec::ForeignKeys);
        assert!(o.members[1].vis_event, "vis_event defaults to true");
        assert_eq!(o.line, Some(10));
        assert_eq!(o.rules[0].line(), Some(17));
        assert!(m.table("Opty").unwrap().node_write);
        assert_eq!(m.objects_of("opty_emp").count(), 1);
        assert_eq!(m.objects_of("product").count(), 0);
    }

    #[test]
    fn node_link_is_read_where_it_grants_a_link_and_refused_on_an_sql_rule() {
        let text = |rule_extra: &str| {
            format!(
                r#"
version = 1
[tables]
opty = {{ visibility = "limited", node_write = true }}
activity = {{ visibility = "limited", node_write = true }}
quote = {{ visibility = "limited", node_write = true }}

[[object]]
name = "opportunity"
primary_table = "opty"

[[object.member]]
table = "activity"
node_link = true

[[object.rule]]
sql = "SELECT 1"
{rule_extra}

[[object.related]]
object = "quote"
sql = "SELECT id FROM quote WHERE opty_id = :primary_row_id"
node_link = true

[[object]]
name = "quote"
primary_table = "quote"

[[object.rule]]
object = "opportunity"
sql = "SELECT opty_id FROM quote WHERE id = :primary_row_id"
"#
            )
        };
        let m = DockingModel::from_toml(&text("")).unwrap();
        let o = m.object("opportunity").unwrap();
        assert!(o.member("activity").unwrap().node_link);
        assert!(!o.member("opty").unwrap().node_link, "default false");
        assert!(o.related[0].node_link);
        assert!(matches!(
            m.object("quote").unwrap().rules[0],
            Rule::Object {
                node_link: false,
                ..
            }
        ));
        let e = DockingModel::from_toml(&text("node_link = true")).unwrap_err();
        assert!(
            matches!(&e, ModelError::Misplaced { at, .. } if at.item == "object \"opportunity\" rule 1"),
            "{e}"
        );
        assert!(e.to_string().contains("an SQL rule makes none"), "{e}");
    }

    #[test]
    fn declared_paths_parse_and_chain() {
        let text = r#"
version = 1
[tables]
opty = { visibility = "limited" }
quote = { visibility = "limited" }
activity = { visibility = "limited" }
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "activity"
vis_event = false
paths = [
  ["activity.opty_id -> opty.id"],
  ["activity.quote_id -> quote.id", "quote.opty_id -> opty.id"],
]
[[object.rule]]
set_sql = "SELECT 1, 2"
"#;
        let m = DockingModel::from_toml(text).unwrap();
        let member = &m.objects[0].members[1];
        assert!(!member.vis_event);
        let PathSpec::Declared(paths) = &member.path else {
            panic!("declared paths expected, got {:?}", member.path)
        };
        assert_eq!(paths.len(), 2);
        assert_eq!(
            paths[1].to_string(),
            "[activity.quote_id -> quote.id, quote.opty_id -> opty.id]"
        );
    }

    #[test]
    fn join_text_round_trips() {
        let j = Join::parse(" a.x ->b.y ").unwrap();
        assert_eq!(j.to_string(), "a.x -> b.y");
        // Several columns, as `docking check` suggests them.
        let j = Join::parse("note.(grp_id, n) -> part.( grp_id,n )").unwrap();
        assert_eq!(j.from_columns, ["grp_id", "n"]);
        assert_eq!(j.to_columns, ["grp_id", "n"]);
        assert_eq!(Join::parse(&j.to_string()).unwrap(), j);
        for bad in [
            "a.(x, y) -> b.z",
            "a.(x, y -> b.(z, w)",
            "a.(x,) -> b.(z, w)",
            "a.() -> b.()",
            "a.x b.y",
            "a -> b.y",
            "a.x -> b",
            "a.x y -> b.y",
            "1a.x -> b.y",
        ] {
            assert!(Join::parse(bad).is_err(), "{bad}");
        }
    }

    /// Each case: a TOML document and a fragment the error's message must contain.
    #[test]
    fn invalid_models_are_refused_with_their_location() {
        let head = "version = 1\n[tables]\nopty = { visibility = \"limited\" }\n\
                    opty_emp = { visibility = \"limited\" }\n";
        let obj = "[[object]]\nname = \"opportunity\"\nprimary_table = \"opty\"\n";
        let rule = "[[object.rule]]\nsql = \"SELECT 1\"\n";
        let cases: Vec<(String, &str)> = vec![
            ("version = 2\n".into(), "version 2 is not supported"),
            (format!("{head}bogus = 1\n"), "line 5"),
            (
                "version = 1\n[tables]\nt = { visibility = \"everyone\" }\n".into(),
                "line 3",
            ),
            (
                format!(
                    "{head}{obj}{rule}[[object]]\nname = \"Opportunity\"\nprimary_table = \"opty\"\n"
                ),
                "docking object \"Opportunity\" is declared twice",
            ),
            (
                format!("{head}[[object]]\nname = \"o\"\nprimary_table = \"nope\"\n"),
                "table \"nope\" is not declared under [tables]",
            ),
            (
                format!("{head}{obj}[[object.member]]\ntable = \"quote\"\n"),
                "object \"opportunity\" member \"quote\" (line 8): table \"quote\" is not declared",
            ),
            (
                format!("{head}{obj}[[object.rule]]\nobject = \"quote\"\nsql = \"SELECT 1\"\n"),
                "object \"opportunity\" rule 1 (line 8): there is no docking object named \"quote\"",
            ),
            (
                format!("{head}{obj}[[object.related]]\nobject = \"acct\"\nsql = \"SELECT 1\"\n"),
                "related \"acct\" (line 8): there is no docking object",
            ),
            (
                format!("{head}{obj}[[object.rule]]\nsql = \"  \"\n"),
                "rule 1 (line 8): give `sql`",
            ),
            (
                format!(
                    "{head}{obj}[[object.member]]\ntable = \"opty_emp\"\npaths = [[\"opty_emp.opty_id = opty.id\"]]\n"
                ),
                "separated by \"->\"",
            ),
            (
                format!(
                    "{head}{obj}[[object.member]]\ntable = \"opty_emp\"\npaths = [[\"opty.id -> opty.id\"]]\n"
                ),
                "the first at the member table",
            ),
            (
                format!(
                    "{head}{obj}[[object.member]]\ntable = \"opty_emp\"\npaths = [[\"opty_emp.x -> opty_emp.y\"]]\n"
                ),
                "must not loop",
            ),
            (
                format!("{head}{obj}[[object.member]]\ntable = \"opty_emp\"\npaths = []\n"),
                "`paths` is empty",
            ),
            (
                format!(
                    "{head}{obj}[[object.member]]\ntable = \"opty\"\npaths = [[\"opty.id -> opty.id\"]]\n"
                ),
                "the primary table is its own path",
            ),
            (
                format!(
                    "{head}{obj}[[object.member]]\ntable = \"opty_emp\"\n[[object.member]]\ntable = \"OPTY_EMP\"\n"
                ),
                "member \"opty_emp\" is declared twice",
            ),
            (
                format!("{head}[nodes]\nattributes = [\"emp-id\"]\n"),
                "not a valid node attribute",
            ),
        ];
        for (text, want) in cases {
            let err = DockingModel::from_toml(&text).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "want {want:?} in {err:?}\n--- for:\n{text}"
            );
        }
    }

    #[test]
    fn the_primary_table_listed_as_member_sets_its_flag() {
        let text = format!("{MINIMAL}[[object.member]]\ntable = \"opty\"\nvis_event = false\n");
        let m = DockingModel::from_toml(&text).unwrap();
        let o = &m.objects[0];
        assert_eq!(o.members.len(), 2);
        assert!(!o.members[0].vis_event);
    }
}
