//! Validates a [`DockingModel`] against a real SQLite schema (`berth docking check`).
//!
//! [`resolve`] reads the schema ([`Schema::read`]), resolves every member's paths to its
//! primary table (the seed's GeneratePrimaryIdSQL: declared joins, or the schema's foreign
//! keys through member tables), compiles every rule's SQL the way the router will run it,
//! and returns the [`Resolved`] model together with the [`Finding`]s. [`check`] returns only
//! the findings; [`model_findings`] is the part that needs no database.
//!
//! Nothing here writes to the database: compiling rules needs the router's TEMP relations
//! ([`NODE_RELATIONS_DDL`]); they are created in the connection's temp schema if missing and
//! dropped again afterwards.

use super::model::{
    DockingModel, DockingObject, Join, Location, ModelError, NODE_RELATIONS, NODE_RELATIONS_DDL,
    PARAM_ATTR_PREFIX, PARAM_NODE_ID, PARAM_PRIMARY_ROW_ID, Path, PathSpec, Rule, RuleSql,
    Visibility,
};
use crate::sqlpolicy::{QueryProbe, Vetted};
use crate::store::ident;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Legal, but probably not what was meant.
    Warning,
    /// The model cannot be used with this schema.
    Error,
}

/// One problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The item of the model it concerns.
    pub at: Location,
    /// What is wrong, and what to do.
    pub kind: Kind,
}

impl Finding {
    /// Whether it stops the model from being used.
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}: {}", self.at, self.kind)
    }
}

/// Which SQL of a rule or related object a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `sql` of an SQL rule: one instance and one node at a time.
    RulePair,
    /// `set_sql` of an SQL rule: `(primary_row_id, node_id)` pairs.
    RuleSet,
    /// `sql` of an object rule or related object: this instance's id to the other's ids.
    MapPair,
    /// `set_sql` of an object rule or related object: `(primary_row_id, other_id)` pairs.
    MapSet,
    /// The primary id SQL generated from a member's paths.
    PrimaryId,
}

impl Form {
    fn field(self) -> &'static str {
        match self {
            Form::RulePair | Form::MapPair => "sql",
            Form::RuleSet | Form::MapSet => "set_sql",
            Form::PrimaryId => "generated primary id SQL",
        }
    }
    fn columns(self) -> Option<usize> {
        match self {
            Form::RulePair => None,
            Form::MapPair | Form::PrimaryId => Some(1),
            Form::RuleSet | Form::MapSet => Some(2),
        }
    }
    fn contract(self) -> &'static str {
        match self {
            Form::RulePair => "any columns; a row means visible",
            Form::RuleSet => "(primary_row_id, node_id)",
            Form::MapPair => "the other object's primary row id",
            Form::MapSet => "(primary_row_id, other_primary_row_id)",
            Form::PrimaryId => "the primary row id",
        }
    }
    fn allowed(self) -> &'static str {
        match self {
            Form::RulePair => ":primary_row_id, :node_id and :attr_NAME",
            Form::MapPair => ":primary_row_id",
            Form::RuleSet | Form::MapSet | Form::PrimaryId => {
                "none (read node identity from berth_node / berth_node_attr)"
            }
        }
    }
}

/// What a finding says. Each message says what is wrong and what to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Kind {
    /// The model file itself cannot be read.
    #[error("{0}")]
    Model(ModelError),
    /// A table of the schema is not declared under `[tables]`.
    #[error(
        "table {table:?} of the schema is not declared; add it under [tables] with its visibility (enterprise, limited, central or local)"
    )]
    UndeclaredTable {
        /// The table.
        table: String,
    },
    /// A declared table does not exist in the schema.
    #[error("table {table:?} does not exist in the schema; fix the name or remove the declaration")]
    UnknownTable {
        /// The table.
        table: String,
    },
    /// A `local` table that does not exist yet: a later migration may create it.
    #[error(
        "table {table:?} is declared local but does not exist in the schema yet; it will be local once a migration creates it"
    )]
    LocalNotYet {
        /// The table.
        table: String,
    },
    /// A replicated table without a PRIMARY KEY and without a named key.
    #[error("table {table:?} {}", crate::schema::no_key_reason())]
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// `key = [..]` that cannot identify the rows.
    #[error("table {table:?}: {reason}")]
    BadNamedKey {
        /// The table.
        table: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A declared join names a column the table does not have.
    #[error("join {join}: table {table:?} has no column {column:?}")]
    UnknownColumn {
        /// The join as written.
        join: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A table's key cannot identify instances or rows.
    #[error("table {table:?} {reason}")]
    Key {
        /// The table.
        table: String,
        /// What is wrong with its key.
        reason: &'static str,
    },
    /// A member has no foreign-key path to the primary table and declares none.
    #[error(
        "no foreign-key path leads from {member:?} to {primary:?} through member tables; declare one, e.g. paths = [[\"{member}.COLUMN -> {primary}.KEY\"]]"
    )]
    NoPath {
        /// The member table.
        member: String,
        /// The primary table.
        primary: String,
    },
    /// A member reaches the primary table by several foreign-key paths.
    #[error(
        "{} foreign-key paths lead from {member:?} to the primary table: {}; declare the one(s) to follow, e.g. paths = [{}]",
        .candidates.len(), display_paths(.candidates), toml_paths(.candidates)
    )]
    AmbiguousPath {
        /// The member table.
        member: String,
        /// Every path found.
        candidates: Vec<Path>,
    },
    /// A member of a docking object is not a `limited` table.
    #[error(
        "{table:?} is {visibility} but is a member of this object; only limited tables are members: make it limited, or remove the member"
    )]
    MemberNotLimited {
        /// The table.
        table: String,
        /// Its declared visibility.
        visibility: Visibility,
    },
    /// A `limited` table belongs to no docking object, so no node would ever get a row.
    #[error(
        "{table:?} is limited but no docking object has it as a member, so no node would ever get its rows; add it to an object or make it enterprise or central"
    )]
    LimitedWithoutObject {
        /// The table.
        table: String,
    },
    /// `node_write = true` on a table nodes never hold.
    #[error(
        "{table:?} is central, so nodes never hold it; node_write = true has no effect: remove it"
    )]
    NodeWriteOnCentral {
        /// The table.
        table: String,
    },
    /// No chain of rules can ever make an instance of the object visible.
    #[error(
        "no instance can ever be visible: {reason}; give this object (or one its object rules lead to) an SQL rule"
    )]
    NeverVisible {
        /// Why.
        reason: String,
    },
    /// A related object has no object rule back to this object.
    #[error(
        "related object {related:?} travels and leaves with {object:?}, but has no object rule naming {object:?}: a node that sees {related:?} by its own rules does not get {object:?} with it; add to {related:?} a rule with object = {object:?} if it should"
    )]
    RelatedWithoutRule {
        /// This object.
        object: String,
        /// The related object.
        related: String,
    },
    /// SQL that SQLite will not compile against the schema.
    #[error("{} does not compile: {error}", .form.field())]
    Sql {
        /// Which SQL.
        form: Form,
        /// SQLite's message.
        error: String,
    },
    /// SQL that returns the wrong number of columns.
    #[error("{} returns {found} column(s); it must return {expected}: {}", .form.field(), .form.contract())]
    Columns {
        /// Which SQL.
        form: Form,
        /// How many it must return.
        expected: usize,
        /// How many it returns.
        found: usize,
    },
    /// SQL with a parameter the router will not bind.
    #[error("{} uses parameter {name}, which the router does not bind here; parameters allowed: {}", .form.field(), .form.allowed())]
    Parameter {
        /// Which SQL.
        form: Form,
        /// The parameter.
        name: String,
    },
    /// `:attr_NAME` for an attribute not listed under `[nodes] attributes`.
    #[error(
        "{} uses {PARAM_ATTR_PREFIX}{attribute} but {attribute:?} is not listed in [nodes] attributes; add it there (nodes get it at `node add --attr {attribute}=VALUE`)",
        .form.field()
    )]
    UndeclaredAttribute {
        /// Which SQL.
        form: Form,
        /// The attribute.
        attribute: String,
    },
    /// SQL that writes.
    #[error("{} is not a read-only query; rules and mappings must only SELECT", .form.field())]
    NotReadOnly {
        /// Which SQL.
        form: Form,
    },
    /// SQL that does what rules may not (SPEC 2.8: the allow-list), seen by SQLite's
    /// authorizer while preparing it.
    #[error(
        "{} uses {what}, which rules and mappings may not: they must be one read-only SELECT (reading tables and views, calling functions); ATTACH, DETACH, PRAGMA, transaction statements and writes are refused",
        .form.field()
    )]
    NotAllowed {
        /// Which SQL.
        form: Form,
        /// What it does (`ATTACH "x.db"`, `PRAGMA foreign_keys`, `INSERT INTO t`).
        what: String,
    },
    /// An SQL rule reads a table nodes may write that is on none of the object's member
    /// paths: a node's write there could change who sees any instance, so central refuses
    /// every node write to it (SPEC 2.10, "Links").
    #[error(
        "this rule reads {table:?}, which nodes may write (node_write = true) but which is not a member of the object: a node's write there could make any instance visible, so central refuses every node write to it; set node_write = false, or make it a member so each write is checked against the instance it belongs to"
    )]
    NodeWritesRuleInput {
        /// The table.
        table: String,
    },
    /// A rule reads a member table whose changes are declared not to change visibility.
    #[error(
        "this rule reads {table:?}, a member of the object with vis_event = false, so changes there would not re-evaluate visibility; set vis_event = true on that member"
    )]
    VisEventOff {
        /// The member table.
        table: String,
    },
}

fn display_paths(p: &[Path]) -> String {
    p.iter()
        .map(Path::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

fn toml_paths(p: &[Path]) -> String {
    p.iter()
        .map(|p| {
            let joins: Vec<String> = p
                .joins
                .iter()
                .map(|j| format!("{:?}", j.to_string()))
                .collect();
            format!("[{}]", joins.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind {
    /// Whether it stops the model from being used.
    pub fn severity(&self) -> Severity {
        match self {
            Kind::NodeWriteOnCentral { .. }
            | Kind::LocalNotYet { .. }
            | Kind::RelatedWithoutRule { .. }
            | Kind::VisEventOff { .. }
            | Kind::NodeWritesRuleInput { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// A foreign key as SQLite reports it, with the parent's key filled in when implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Referencing columns.
    pub from: Vec<String>,
    /// Parent table.
    pub table: String,
    /// Parent columns.
    pub to: Vec<String>,
}

/// One table of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Name as declared.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<String>,
    /// Primary key columns in key order (empty if none).
    pub pk: Vec<String>,
    /// Foreign keys.
    pub fks: Vec<ForeignKey>,
}

impl TableInfo {
    fn column(&self, c: &str) -> Option<&String> {
        self.columns.iter().find(|x| x.eq_ignore_ascii_case(c))
    }
}

/// The user tables of a database (berth's and SQLite's own excluded), keyed by lower-case
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Tables by lower-case name.
    pub tables: BTreeMap<String, TableInfo>,
}

impl Schema {
    /// Reads tables, keys and foreign keys.
    pub fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let names: Vec<String> = conn
            .prepare("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut tables = BTreeMap::new();
        let shadow = crate::schema::shadow_tables(conn)?;
        for name in names
            .into_iter()
            .filter(|n| !crate::schema::is_internal(n) && !shadow.contains(&n.to_ascii_lowercase()))
        {
            let cols: Vec<(String, i64)> = conn
                .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?
                .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut pk: Vec<(i64, String)> = cols
                .iter()
                .filter(|c| c.1 > 0)
                .map(|c| (c.1, c.0.clone()))
                .collect();
            pk.sort();
            let pk: Vec<String> = pk.into_iter().map(|p| p.1).collect();
            let rows: Vec<(i64, String, String, Option<String>)> = conn
                .prepare(
                    "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) \
                     ORDER BY id, seq",
                )?
                .query_map([&name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
            for (id, parent, from, to) in rows {
                let fk = by_id.entry(id).or_insert_with(|| ForeignKey {
                    from: vec![],
                    table: parent,
                    to: vec![],
                });
                fk.from.push(from);
                // NULL `to` (the parent's key) is filled in below.
                fk.to.extend(to);
            }
            let fks = by_id.into_values().collect();
            tables.insert(
                name.to_ascii_lowercase(),
                TableInfo {
                    name,
                    columns: cols.into_iter().map(|c| c.0).collect(),
                    pk,
                    fks,
                },
            );
        }
        // `REFERENCES parent` without columns means the parent's primary key.
        let keys: BTreeMap<String, Vec<String>> = tables
            .iter()
            .map(|(k, t)| (k.clone(), t.pk.clone()))
            .collect();
        for t in tables.values_mut() {
            for fk in &mut t.fks {
                if fk.to.len() != fk.from.len() {
                    fk.to = keys
                        .get(&fk.table.to_ascii_lowercase())
                        .cloned()
                        .unwrap_or_default();
                }
            }
        }
        Ok(Schema { tables })
    }

    /// The table (case-insensitive).
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.get(&name.to_ascii_lowercase())
    }
}

/// A member table with its paths resolved against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMember {
    /// The table.
    pub table: String,
    /// Its primary key columns.
    pub key: Vec<String>,
    /// VIS_EVENT_FLG.
    pub vis_event: bool,
    /// The paths to the primary table (empty for the primary table itself).
    pub paths: Vec<Path>,
    /// Nodes may link its rows to instances they do not hold (SPEC 2.10).
    pub node_link: bool,
}

/// A docking object resolved against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedObject {
    /// Object name.
    pub name: String,
    /// Primary table.
    pub primary_table: String,
    /// The primary table's key column: its values are the primary row ids.
    pub primary_key: String,
    /// Members, the primary table first.
    pub members: Vec<ResolvedMember>,
    /// Per rule (in sequence), the tables its SQL reads: a change to any of them can change
    /// what the rule answers.
    pub rule_reads: Vec<BTreeSet<String>>,
    /// Per `[[object.related]]` mapping (in sequence), the tables its SQL reads.
    pub related_reads: Vec<BTreeSet<String>>,
}

impl ResolvedMember {
    /// The seed's GeneratePrimaryIdSQL: the primary row ids of the member row whose key is
    /// bound as `?1..?n` (in key order), every path followed and the results unioned.
    pub fn primary_id_sql(&self, primary_table: &str, primary_key: &str) -> String {
        let filter: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t0.{} = +?{}", ident(k), i + 1))
            .collect();
        self.selects(primary_table, primary_key, &[])
            .into_iter()
            .map(|s| format!("{s} WHERE {}", filter.join(" AND ")))
            .collect::<Vec<_>>()
            .join(" UNION ")
    }

    /// The set form: `(member key columns..., primary_row_id)` for every member row.
    pub fn primary_id_set_sql(&self, primary_table: &str, primary_key: &str) -> String {
        self.selects(primary_table, primary_key, &self.key)
            .join(" UNION ")
    }

    fn selects(&self, primary_table: &str, primary_key: &str, key_cols: &[String]) -> Vec<String> {
        let lead: String = key_cols
            .iter()
            .map(|k| format!("t0.{}, ", ident(k)))
            .collect();
        if self.paths.is_empty() {
            return vec![format!(
                "SELECT {lead}t0.{} FROM {} t0",
                ident(primary_key),
                ident(primary_table)
            )];
        }
        self.paths
            .iter()
            .map(|p| {
                let from = join_chain(&self.table, 0, &p.joins);
                format!(
                    "SELECT {lead}t{}.{} FROM {from}",
                    p.joins.len(),
                    ident(primary_key)
                )
            })
            .collect()
    }
}

/// `TABLE t{start} JOIN ... ON ...` along `joins`: join k leads from alias `t{start+k}` to
/// alias `t{start+k+1}` (its columns compared with SQL `=`, so NULL reaches nothing).
pub(crate) fn join_chain(table: &str, start: usize, joins: &[Join]) -> String {
    let mut from = format!("{} t{start}", ident(table));
    for (k, j) in joins.iter().enumerate() {
        let (a, b) = (start + k, start + k + 1);
        let on: Vec<String> = j
            .from_columns
            .iter()
            .zip(&j.to_columns)
            .map(|(f, t)| format!("t{b}.{} = t{a}.{}", ident(t), ident(f)))
            .collect();
        from.push_str(&format!(
            " JOIN {} t{b} ON {}",
            ident(&j.to_table),
            on.join(" AND ")
        ));
    }
    from
}

/// The model resolved against a schema: what the router works from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Objects in model order (objects whose tables are missing are left out).
    pub objects: Vec<ResolvedObject>,
}

/// Findings of [`DockingModel`] against the schema of `conn`.
pub fn check(model: &DockingModel, conn: &Connection) -> rusqlite::Result<Vec<Finding>> {
    Ok(resolve(model, conn)?.1)
}

/// The links the model lets nodes make to instances they do not hold (`node_link`), one
/// line each; empty when nodes may link rows only to instances they hold (SPEC 2.10).
pub fn link_grants(model: &DockingModel) -> Vec<String> {
    let mut out = Vec::new();
    for o in &model.objects {
        for m in o.members.iter().filter(|m| m.node_link) {
            out.push(format!(
                "object {:?} member {:?}: nodes may put {} rows into any {} by its id",
                o.name, m.table, m.table, o.name
            ));
        }
        for (i, r) in o.rules.iter().enumerate() {
            if let Rule::Object {
                object,
                node_link: true,
                ..
            } = r
            {
                out.push(format!(
                    "object {:?} rule {}: nodes' writes may make any {} visible where the {object} they map it to is",
                    o.name,
                    i + 1,
                    o.name
                ));
            }
        }
        for r in o.related.iter().filter(|r| r.node_link) {
            out.push(format!(
                "object {:?} related {:?}: nodes' writes may bring any {} along with a {}",
                o.name, r.object, r.object, o.name
            ));
        }
    }
    out
}

/// Parses `text` and checks it; a model that does not parse is one finding.
pub fn check_toml(text: &str, conn: &Connection) -> rusqlite::Result<Vec<Finding>> {
    match DockingModel::from_toml(text) {
        Ok(m) => check(&m, conn),
        Err(e) => Ok(vec![Finding {
            at: Location {
                item: "docking model".into(),
                line: None,
            },
            kind: Kind::Model(e),
        }]),
    }
}

/// The findings that need no database: visibility of members, orphan tables, rules that can
/// never match, related objects without a way back.
pub fn model_findings(model: &DockingModel) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in model.tables.values() {
        let at = loc(format!("table {:?}", t.name), t.line);
        match t.visibility {
            Visibility::Limited if model.objects_of(&t.name).next().is_none() => {
                out.push(Finding {
                    at,
                    kind: Kind::LimitedWithoutObject {
                        table: t.name.clone(),
                    },
                })
            }
            Visibility::Central if t.node_write => out.push(Finding {
                at,
                kind: Kind::NodeWriteOnCentral {
                    table: t.name.clone(),
                },
            }),
            _ => {}
        }
    }
    for o in &model.objects {
        for m in &o.members {
            if let Some(spec) = model.table(&m.table)
                && spec.visibility != Visibility::Limited
            {
                out.push(Finding {
                    at: member_loc(o, &m.table, m.line),
                    kind: Kind::MemberNotLimited {
                        table: m.table.clone(),
                        visibility: spec.visibility,
                    },
                });
            }
        }
        for r in &o.related {
            let back = model.object(&r.object).is_some_and(|rel| {
                rel.rules.iter().any(
                    |x| matches!(x, Rule::Object { object, .. } if object.eq_ignore_ascii_case(&o.name)),
                )
            });
            if !back {
                out.push(Finding {
                    at: loc(
                        format!("object {:?} related {:?}", o.name, r.object),
                        r.line,
                    ),
                    kind: Kind::RelatedWithoutRule {
                        object: o.name.clone(),
                        related: r.object.clone(),
                    },
                });
            }
        }
    }
    out.extend(never_visible(model));
    out
}

/// Fig. 7: an instance is visible when an SQL rule matches, or an object rule leads to a
/// visible instance. So an object can be visible only if following object rules reaches an
/// object with an SQL rule; a cycle of object rules with no SQL rule in reach never matches.
fn never_visible(model: &DockingModel) -> Vec<Finding> {
    let key = |s: &str| s.to_ascii_lowercase();
    let mut can: BTreeSet<String> = model
        .objects
        .iter()
        .filter(|o| o.rules.iter().any(|r| matches!(r, Rule::Sql { .. })))
        .map(|o| key(&o.name))
        .collect();
    loop {
        let before = can.len();
        for o in &model.objects {
            if o.rules
                .iter()
                .any(|r| matches!(r, Rule::Object { object, .. } if can.contains(&key(object))))
            {
                can.insert(key(&o.name));
            }
            // A related object travels with a visible instance (route::oracle).
            if can.contains(&key(&o.name)) {
                for r in &o.related {
                    can.insert(key(&r.object));
                }
            }
        }
        if can.len() == before {
            break;
        }
    }
    model
        .objects
        .iter()
        .filter(|o| !can.contains(&key(&o.name)))
        .map(|o| {
            let targets: BTreeSet<&str> = o
                .rules
                .iter()
                .filter_map(|r| match r {
                    Rule::Object { object, .. } => Some(object.as_str()),
                    Rule::Sql { .. } => None,
                })
                .collect();
            let reason = if targets.is_empty() {
                "it has no rules".to_string()
            } else {
                format!(
                    "it has no SQL rule and its object rules lead only to {} (a cycle or chain of object rules with no SQL rule in it)",
                    targets.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            Finding {
                at: loc(format!("object {:?}", o.name), o.line),
                kind: Kind::NeverVisible { reason },
            }
        })
        .collect()
}

fn loc(item: String, line: Option<usize>) -> Location {
    Location { item, line }
}

fn member_loc(o: &DockingObject, table: &str, line: Option<usize>) -> Location {
    loc(
        format!("object {:?} member {table:?}", o.name),
        line.or(o.line),
    )
}

/// Tables without a PRIMARY KEY must be `local` or name their key; a named key must
/// identify the rows (SPEC 2.2). A valid named key becomes the table's key in `schema`, so
/// members and routing use it.
fn key_findings(
    model: &DockingModel,
    conn: &Connection,
    schema: &mut Schema,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<()> {
    for t in schema.tables.values_mut() {
        let spec = model.table(&t.name);
        let at = loc(format!("table {:?}", t.name), spec.and_then(|s| s.line));
        let local = spec.is_some_and(|s| s.visibility == Visibility::Local);
        let bad = |reason: String| Finding {
            at: at.clone(),
            kind: Kind::BadNamedKey {
                table: t.name.clone(),
                reason,
            },
        };
        match spec.and_then(|s| s.key.as_ref()) {
            Some(_) if local => findings.push(bad(
                "a local table is never sent, so it needs no key; remove `key`".into(),
            )),
            Some(_) if !t.pk.is_empty() => findings.push(bad(format!(
                "has a PRIMARY KEY ({}); `key` is only for tables without one, remove it",
                t.pk.join(", ")
            ))),
            Some(key) => match crate::schema::key_problem(conn, &t.name, key) {
                Ok(Some(reason)) => findings.push(bad(reason)),
                Ok(None) => {
                    t.pk = key
                        .iter()
                        .filter_map(|k| t.columns.iter().find(|c| c.eq_ignore_ascii_case(k)))
                        .cloned()
                        .collect();
                }
                Err(crate::error::EngineError::Sql(e)) => return Err(e),
                Err(e) => findings.push(bad(e.to_string())),
            },
            None if t.pk.is_empty() && !local => findings.push(Finding {
                at,
                kind: Kind::NoPrimaryKey {
                    table: t.name.clone(),
                },
            }),
            None => {}
        }
    }
    Ok(())
}

/// Resolves the model against the schema of `conn` and lists every finding.
pub fn resolve(
    model: &DockingModel,
    conn: &Connection,
) -> rusqlite::Result<(Resolved, Vec<Finding>)> {
    let mut schema = Schema::read(conn)?;
    let mut findings = model_findings(model);
    key_findings(model, conn, &mut schema, &mut findings)?;

    for t in schema.tables.values() {
        if model.table(&t.name).is_none() {
            findings.push(Finding {
                at: loc("[tables]".into(), None),
                kind: Kind::UndeclaredTable {
                    table: t.name.clone(),
                },
            });
        }
    }
    for t in model.tables.values() {
        if schema.table(&t.name).is_none() {
            let table = t.name.clone();
            findings.push(Finding {
                at: loc(format!("table {:?}", t.name), t.line),
                kind: if t.visibility == Visibility::Local {
                    Kind::LocalNotYet { table }
                } else {
                    Kind::UnknownTable { table }
                },
            });
        }
    }

    // Every rule is vetted in a copy of the schema under the rules' allow-list before it
    // is prepared here (SPEC 2.8).
    let probe = QueryProbe::new(conn, NODE_RELATIONS_DDL)?;
    let db = Db {
        conn,
        probe: &probe,
    };
    let temp = TempRelations::create(conn)?;
    let mut resolved = Resolved::default();
    let outcome: rusqlite::Result<()> = model.objects.iter().try_for_each(|o| {
        if let Some(r) = resolve_object(model, o, &schema, &db, &mut findings)? {
            resolved.objects.push(r);
        }
        Ok(())
    });
    temp.remove(conn)?;
    outcome?;
    Ok((resolved, findings))
}

/// The database rules are compiled against, with the probe that vets them first.
struct Db<'a> {
    conn: &'a Connection,
    probe: &'a QueryProbe,
}

fn resolve_object(
    model: &DockingModel,
    o: &DockingObject,
    schema: &Schema,
    conn: &Db<'_>,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<Option<ResolvedObject>> {
    let oat = loc(format!("object {:?}", o.name), o.line);
    // Missing tables were reported once at their declaration.
    if o.members.iter().any(|m| schema.table(&m.table).is_none()) {
        return Ok(None);
    }
    let Some(primary) = schema.table(&o.primary_table) else {
        return Ok(None);
    };
    let primary_key = match primary.pk.as_slice() {
        [one] => one.clone(),
        _ => {
            findings.push(Finding {
                at: oat,
                kind: Kind::Key {
                    table: primary.name.clone(),
                    reason: "is a primary table, so it needs a single-column PRIMARY KEY: its values are the instances' primary row ids",
                },
            });
            return Ok(None);
        }
    };

    let mut members = Vec::new();
    for m in &o.members {
        let at = member_loc(o, &m.table, m.line);
        let Some(info) = schema.table(&m.table) else {
            continue;
        };
        if info.pk.is_empty() {
            findings.push(Finding {
                at: at.clone(),
                kind: Kind::Key {
                    table: info.name.clone(),
                    reason: "has no PRIMARY KEY, so its rows cannot be routed; declare one",
                },
            });
            continue;
        }
        let paths = match &m.path {
            PathSpec::Primary => vec![],
            PathSpec::Declared(paths) => {
                let mut ok = true;
                for p in paths {
                    for j in &p.joins {
                        ok &= check_join(j, schema, &at, findings);
                    }
                }
                if !ok {
                    continue;
                }
                paths.clone()
            }
            PathSpec::ForeignKeys => {
                let found = fk_paths(o, &info.name, schema);
                match found.len() {
                    0 => {
                        findings.push(Finding {
                            at,
                            kind: Kind::NoPath {
                                member: info.name.clone(),
                                primary: primary.name.clone(),
                            },
                        });
                        continue;
                    }
                    1 => found,
                    _ => {
                        findings.push(Finding {
                            at,
                            kind: Kind::AmbiguousPath {
                                member: info.name.clone(),
                                candidates: found,
                            },
                        });
                        continue;
                    }
                }
            }
        };
        let rm = ResolvedMember {
            table: info.name.clone(),
            key: info.pk.clone(),
            vis_event: m.vis_event,
            paths,
            node_link: m.node_link,
        };
        // The generated SQL must compile too (it will, given the columns exist; this guards
        // the generator).
        let sql = rm.primary_id_sql(&primary.name, &primary_key);
        compile(conn, &sql, Form::PrimaryId, model, &at, findings)?;
        members.push(rm);
    }

    let mut rule_reads = Vec::new();
    for (i, r) in o.rules.iter().enumerate() {
        let at = loc(format!("object {:?} rule {}", o.name, i + 1), r.line());
        let (pair, set) = match r {
            Rule::Sql { .. } => (Form::RulePair, Form::RuleSet),
            Rule::Object { .. } => (Form::MapPair, Form::MapSet),
        };
        let reads = compile_both(conn, r.sql(), pair, set, model, &at, findings)?;
        if matches!(r, Rule::Sql { .. }) {
            for t in &reads {
                if o.member(t).is_none() && model.table(t).is_some_and(|spec| spec.node_write) {
                    findings.push(Finding {
                        at: at.clone(),
                        kind: Kind::NodeWritesRuleInput { table: t.clone() },
                    });
                }
            }
        }
        for t in &reads {
            if let Some(m) = o.member(t)
                && !m.vis_event
            {
                findings.push(Finding {
                    at: at.clone(),
                    kind: Kind::VisEventOff {
                        table: m.table.clone(),
                    },
                });
            }
        }
        rule_reads.push(reads);
    }
    let mut related_reads = Vec::new();
    for r in &o.related {
        let at = loc(
            format!("object {:?} related {:?}", o.name, r.object),
            r.line,
        );
        let reads = compile_both(
            conn,
            &r.sql,
            Form::MapPair,
            Form::MapSet,
            model,
            &at,
            findings,
        )?;
        related_reads.push(reads);
    }

    Ok(Some(ResolvedObject {
        name: o.name.clone(),
        primary_table: primary.name.clone(),
        primary_key,
        members,
        rule_reads,
        related_reads,
    }))
}

fn check_join(j: &Join, schema: &Schema, at: &Location, findings: &mut Vec<Finding>) -> bool {
    let mut ok = true;
    for (t, cols) in [
        (&j.from_table, &j.from_columns),
        (&j.to_table, &j.to_columns),
    ] {
        let Some(info) = schema.table(t) else {
            findings.push(Finding {
                at: at.clone(),
                kind: Kind::UnknownTable { table: t.clone() },
            });
            ok = false;
            continue;
        };
        for c in cols {
            if info.column(c).is_none() {
                findings.push(Finding {
                    at: at.clone(),
                    kind: Kind::UnknownColumn {
                        join: j.to_string(),
                        table: info.name.clone(),
                        column: c.clone(),
                    },
                });
                ok = false;
            }
        }
    }
    ok
}

/// Every foreign-key chain from `member` to the primary table that passes only through
/// member tables of `o` (the seed's AddPKTable), without visiting a table twice.
fn fk_paths(o: &DockingObject, member: &str, schema: &Schema) -> Vec<Path> {
    fn walk(
        o: &DockingObject,
        schema: &Schema,
        at: &str,
        seen: &mut Vec<String>,
        joins: &mut Vec<Join>,
        out: &mut Vec<Path>,
    ) {
        let Some(info) = schema.table(at) else {
            return;
        };
        for fk in &info.fks {
            let Some(parent) = schema.table(&fk.table) else {
                continue;
            };
            let lower = parent.name.to_ascii_lowercase();
            if o.member(&parent.name).is_none()
                || seen.contains(&lower)
                || fk.to.len() != fk.from.len()
            {
                continue;
            }
            joins.push(Join {
                from_table: info.name.clone(),
                from_columns: fk.from.clone(),
                to_table: parent.name.clone(),
                to_columns: fk.to.clone(),
            });
            if parent.name.eq_ignore_ascii_case(&o.primary_table) {
                out.push(Path {
                    joins: joins.clone(),
                });
            } else {
                seen.push(lower);
                walk(o, schema, &parent.name, seen, joins, out);
                seen.pop();
            }
            joins.pop();
        }
    }
    let mut out = Vec::new();
    let mut seen = vec![member.to_ascii_lowercase()];
    walk(o, schema, member, &mut seen, &mut Vec::new(), &mut out);
    out.sort();
    out.dedup();
    out
}

fn compile_both(
    conn: &Db<'_>,
    sql: &RuleSql,
    pair: Form,
    set: Form,
    model: &DockingModel,
    at: &Location,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<BTreeSet<String>> {
    let mut reads = BTreeSet::new();
    if let Some(s) = &sql.pair {
        reads.extend(compile(conn, s, pair, model, at, findings)?);
    }
    if let Some(s) = &sql.set {
        reads.extend(compile(conn, s, set, model, at, findings)?);
    }
    Ok(reads)
}

/// Prepares `sql` as the router will, checks its columns, parameters and that it only reads;
/// returns the user tables it reads.
fn compile(
    db: &Db<'_>,
    sql: &str,
    form: Form,
    model: &DockingModel,
    at: &Location,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<BTreeSet<String>> {
    let conn = db.conn;
    let mut push = |kind| {
        findings.push(Finding {
            at: at.clone(),
            kind,
        })
    };
    let vetted = db.probe.vet(sql);
    if let Vetted::Refused(what) = vetted {
        push(Kind::NotAllowed { form, what });
        return Ok(BTreeSet::new());
    }
    let st = match conn.prepare(sql) {
        Ok(st) => st,
        Err(e) => {
            push(Kind::Sql {
                form,
                error: e.to_string(),
            });
            return Ok(BTreeSet::new());
        }
    };
    if !st.readonly() {
        push(Kind::NotReadOnly { form });
        return Ok(BTreeSet::new());
    }
    if let Vetted::Unknown(error) = vetted {
        // It compiles here but not in the copy of the schema: it cannot be vetted, so it
        // may not run.
        push(Kind::Sql {
            form,
            error: format!("it could not be checked against a copy of the schema: {error}"),
        });
        return Ok(BTreeSet::new());
    }
    if let Some(expected) = form.columns() {
        let found = st.column_count();
        if found != expected {
            push(Kind::Columns {
                form,
                expected,
                found,
            });
        }
    }
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i).unwrap_or("?").to_string();
        let allowed = match form {
            Form::RulePair => {
                name == PARAM_PRIMARY_ROW_ID
                    || name == PARAM_NODE_ID
                    || name.starts_with(PARAM_ATTR_PREFIX)
            }
            Form::MapPair => name == PARAM_PRIMARY_ROW_ID,
            Form::RuleSet | Form::MapSet | Form::PrimaryId => {
                // Generated SQL binds the member key positionally.
                form == Form::PrimaryId && !name.starts_with([':', '@', '$'])
            }
        };
        if !allowed {
            push(Kind::Parameter { form, name });
        } else if let Some(attr) = name.strip_prefix(PARAM_ATTR_PREFIX)
            && !model.node_attributes.contains(attr)
        {
            push(Kind::UndeclaredAttribute {
                form,
                attribute: attr.to_string(),
            });
        }
    }
    drop(st);
    tables_read(conn, sql)
}

/// The user tables a statement reads, from its bytecode: every `OpenRead` cursor's root page,
/// mapped to its table (an index's root page to the index's table).
fn tables_read(conn: &Connection, sql: &str) -> rusqlite::Result<BTreeSet<String>> {
    let mut roots: BTreeMap<(i64, i64), String> = BTreeMap::new();
    for (db, master) in [(0, "main.sqlite_master"), (1, "temp.sqlite_master")] {
        let mut st = conn.prepare(&format!(
            "SELECT rootpage, tbl_name FROM {master} WHERE rootpage > 0"
        ))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (page, table) = row?;
            roots.insert((db, page), table);
        }
    }
    let mut out = BTreeSet::new();
    let mut st = conn.prepare(&format!("EXPLAIN {sql}"))?;
    // Parameters stay unbound (NULL): only the program is read, not the answer.
    let mut rows = st.raw_query();
    while let Some(r) = rows.next()? {
        let opcode: String = r.get(1)?;
        if opcode == "OpenRead" {
            let page: i64 = r.get(3)?;
            let db: i64 = r.get(4)?;
            if let Some(t) = roots.get(&(db, page))
                && !crate::schema::is_internal(t)
            {
                out.insert(t.clone());
            }
        }
    }
    Ok(out)
}

/// The router's TEMP relations, created for compiling rules and dropped again if we made them.
struct TempRelations {
    created: bool,
}

impl TempRelations {
    fn create(conn: &Connection) -> rusqlite::Result<Self> {
        let existing: i64 = conn.query_row(
            "SELECT count(*) FROM temp.sqlite_master WHERE type = 'table' AND name IN (?1, ?2)",
            NODE_RELATIONS,
            |r| r.get(0),
        )?;
        let created = existing == 0;
        if created {
            conn.execute_batch(NODE_RELATIONS_DDL)?;
        }
        Ok(Self { created })
    }

    fn remove(self, conn: &Connection) -> rusqlite::Result<()> {
        if self.created {
            for t in NODE_RELATIONS {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", ident(t)))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "
        CREATE TABLE emp(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty_emp(
          opty_id TEXT REFERENCES opty(id), emp_id TEXT REFERENCES emp(id),
          PRIMARY KEY (opty_id, emp_id));
        CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id), owner TEXT);";

    const MODEL: &str = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
emp = { visibility = "enterprise" }
opty = { visibility = "limited", node_write = true }
opty_emp = { visibility = "limited" }
quote = { visibility = "limited" }

[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
set_sql = "SELECT oe.opty_id, na.node_id FROM opty_emp oe JOIN berth_node_attr na ON na.name = 'employee' AND na.value = oe.emp_id"
[[object.related]]
object = "quote"
sql = "SELECT id FROM quote WHERE opty_id = :primary_row_id"

[[object]]
name = "quote"
primary_table = "quote"
[[object.rule]]
sql = "SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee"
[[object.rule]]
object = "opportunity"
sql = "SELECT opty_id FROM quote WHERE id = :primary_row_id"
set_sql = "SELECT id, opty_id FROM quote WHERE opty_id IS NOT NULL"
"#;

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    fn findings(schema: &str, toml: &str) -> Vec<Finding> {
        check_toml(toml, &db(schema)).unwrap()
    }

    #[test]
    fn the_base_case_is_clean_and_resolves() {
        let c = db(SCHEMA);
        let model = DockingModel::from_toml(MODEL).unwrap();
        let (resolved, found) = resolve(&model, &c).unwrap();
        assert!(found.is_empty(), "{found:#?}");
        let o = &resolved.objects[0];
        assert_eq!(o.primary_key, "id");
        assert_eq!(o.members[1].key, vec!["opty_id", "emp_id"]);
        assert_eq!(
            o.members[1].paths[0].to_string(),
            "[opty_emp.opty_id -> opty.id]"
        );
        assert_eq!(
            o.rule_reads[0],
            BTreeSet::from(["opty_emp".to_string()]),
            "the TEMP node relations are not user tables"
        );
        assert_eq!(
            resolved.objects[1].rule_reads[1],
            BTreeSet::from(["quote".to_string()])
        );
        // The TEMP relations made for compiling are gone again.
        let temp: i64 = c
            .query_row("SELECT count(*) FROM temp.sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(temp, 0);
    }

    /// One case per kind of finding: the schema and model (the base ones, changed), what
    /// must be found, and a fragment of where.
    #[test]
    fn each_kind_of_finding_is_reported_where_it_is() {
        type Expect = fn(&Kind) -> bool;
        let swap = |from: &str, to: &str| {
            assert!(MODEL.contains(from), "{from}");
            MODEL.replacen(from, to, 1)
        };
        let plus = |more: &str| format!("{MODEL}{more}");
        let s = SCHEMA.to_string();
        let cases: Vec<(&str, String, String, Expect, &str)> = vec![
            (
                "model error",
                s.clone(),
                swap("object = \"opportunity\"", "object = \"opportunityy\""),
                |k| matches!(k, Kind::Model(ModelError::UnknownObject { .. })),
                "docking model",
            ),
            (
                "schema table not declared",
                format!("{s} CREATE TABLE note(id TEXT PRIMARY KEY);"),
                MODEL.into(),
                |k| matches!(k, Kind::UndeclaredTable { table } if table == "note"),
                "[tables]",
            ),
            (
                "declared table not in schema",
                s.clone(),
                swap(
                    "[[object]]",
                    "ghost = { visibility = \"central\" }\n[[object]]",
                ),
                |k| matches!(k, Kind::UnknownTable { table } if table == "ghost"),
                "table \"ghost\" (line",
            ),
            (
                "unknown column in a declared join",
                s.clone(),
                swap(
                    "table = \"opty_emp\"\n",
                    "table = \"opty_emp\"\npaths = [[\"opty_emp.opty -> opty.id\"]]\n",
                ),
                |k| matches!(k, Kind::UnknownColumn { column, .. } if column == "opty"),
                "member \"opty_emp\" (line 13)",
            ),
            (
                "no path",
                format!("{s} CREATE TABLE note(id TEXT PRIMARY KEY, opty TEXT);"),
                swap(
                    "[[object]]",
                    "note = { visibility = \"limited\" }\n[[object]]",
                )
                .replacen(
                    "[[object.rule]]",
                    "[[object.member]]\ntable = \"note\"\n[[object.rule]]",
                    1,
                ),
                |k| matches!(k, Kind::NoPath { member, .. } if member == "note"),
                "member \"note\"",
            ),
            (
                "ambiguous foreign-key paths",
                format!(
                    "{s} CREATE TABLE swap(id TEXT PRIMARY KEY,
                     from_opty TEXT REFERENCES opty(id), to_opty TEXT REFERENCES opty);"
                ),
                swap(
                    "[[object]]",
                    "swap = { visibility = \"limited\" }\n[[object]]",
                )
                .replacen(
                    "[[object.rule]]",
                    "[[object.member]]\ntable = \"swap\"\n[[object.rule]]",
                    1,
                ),
                |k| {
                    matches!(k, Kind::AmbiguousPath { candidates, .. } if candidates.len() == 2
                    && k.to_string().contains("paths = [[\"swap.from_opty -> opty.id\"], [\"swap.to_opty -> opty.id\"]]"))
                },
                "member \"swap\"",
            ),
            (
                "SQL that does not compile",
                s.clone(),
                swap("AND owner = :attr_employee", "AND ownr = :attr_employee"),
                |k| matches!(k, Kind::Sql { form: Form::RulePair, error } if error.contains("ownr")),
                "object \"quote\" rule 1 (line 25)",
            ),
            (
                "two statements",
                s.clone(),
                swap(
                    "WHERE opty_id IS NOT NULL\"",
                    "WHERE opty_id IS NOT NULL; SELECT 1\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Sql {
                            form: Form::MapSet,
                            ..
                        }
                    )
                },
                "object \"quote\" rule 2",
            ),
            (
                "set form with three columns",
                s.clone(),
                swap(
                    "SELECT oe.opty_id, na.node_id",
                    "SELECT oe.opty_id, na.node_id, 1",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Columns {
                            form: Form::RuleSet,
                            expected: 2,
                            found: 3
                        }
                    )
                },
                "object \"opportunity\" rule 1",
            ),
            (
                "mapping with two columns",
                s.clone(),
                swap(
                    "sql = \"SELECT opty_id FROM quote",
                    "sql = \"SELECT opty_id, owner FROM quote",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Columns {
                            form: Form::MapPair,
                            expected: 1,
                            found: 2
                        }
                    )
                },
                "object \"quote\" rule 2",
            ),
            (
                "node parameter in a set form",
                s.clone(),
                swap(
                    "WHERE opty_id IS NOT NULL\"",
                    "WHERE opty_id IS NOT NULL AND owner = :node_id\"",
                ),
                |k| matches!(k, Kind::Parameter { form: Form::MapSet, name } if name == ":node_id"),
                "object \"quote\" rule 2",
            ),
            (
                "node parameter in a mapping",
                s.clone(),
                swap(
                    "WHERE id = :primary_row_id\"\nset_sql",
                    "WHERE id = :primary_row_id AND owner = :node_id\"\nset_sql",
                ),
                |k| matches!(k, Kind::Parameter { form: Form::MapPair, name } if name == ":node_id"),
                "object \"quote\" rule 2",
            ),
            (
                "unknown parameter in a rule",
                s.clone(),
                swap("owner = :attr_employee", "owner = :employee"),
                |k| matches!(k, Kind::Parameter { form: Form::RulePair, name } if name == ":employee"),
                "object \"quote\" rule 1",
            ),
            (
                "undeclared attribute",
                s.clone(),
                swap("owner = :attr_employee", "owner = :attr_region"),
                |k| matches!(k, Kind::UndeclaredAttribute { attribute, .. } if attribute == "region"),
                "object \"quote\" rule 1",
            ),
            (
                "a rule that writes",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"DELETE FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what == "DELETE FROM quote"
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a rule that attaches a database (read-only to SQLite)",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"ATTACH 'evil.db' AS evil\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what.starts_with("ATTACH")
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a rule that runs a pragma",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"PRAGMA foreign_keys = OFF\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what == "PRAGMA foreign_keys = OFF"
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a cycle of object rules with no SQL rule",
                s.clone(),
                plus(
                    "[[object]]\nname = \"a\"\nprimary_table = \"emp\"\n[[object.rule]]\nobject = \"b\"\nsql = \"SELECT 1\"\n\
                      [[object]]\nname = \"b\"\nprimary_table = \"emp\"\n[[object.rule]]\nobject = \"a\"\nsql = \"SELECT 1\"\n",
                ),
                |k| matches!(k, Kind::NeverVisible { reason } if reason.contains("lead only to b")),
                "object \"a\" (line 31)",
            ),
            (
                "an object without rules",
                s.clone(),
                plus("[[object]]\nname = \"lonely\"\nprimary_table = \"quote\"\n"),
                |k| matches!(k, Kind::NeverVisible { reason } if reason == "it has no rules"),
                "object \"lonely\"",
            ),
            (
                "limited table in no object",
                s.clone(),
                swap(
                    "emp = { visibility = \"enterprise\" }",
                    "emp = { visibility = \"limited\" }",
                ),
                |k| matches!(k, Kind::LimitedWithoutObject { table } if table == "emp"),
                "table \"emp\" (line 5)",
            ),
            (
                "enterprise member",
                s.clone(),
                swap(
                    "opty_emp = { visibility = \"limited\" }",
                    "opty_emp = { visibility = \"enterprise\" }",
                ),
                |k| matches!(k, Kind::MemberNotLimited { table, visibility: Visibility::Enterprise } if table == "opty_emp"),
                "object \"opportunity\" member \"opty_emp\" (line 13)",
            ),
            (
                "central primary table",
                s.clone(),
                swap(
                    "quote = { visibility = \"limited\" }",
                    "quote = { visibility = \"central\" }",
                ),
                |k| matches!(k, Kind::MemberNotLimited { table, visibility: Visibility::Central } if table == "quote"),
                "object \"quote\" member \"quote\"",
            ),
            (
                "node_write on a central table",
                format!("{s} CREATE TABLE secret(id TEXT PRIMARY KEY);"),
                swap(
                    "[[object]]",
                    "secret = { visibility = \"central\", node_write = true }\n[[object]]",
                ),
                |k| matches!(k, Kind::NodeWriteOnCentral { table } if table == "secret"),
                "table \"secret\"",
            ),
            (
                "related object without a rule back",
                s.clone(),
                plus(
                    "[[object.related]]\nobject = \"quote\"\nsql = \"SELECT id FROM quote WHERE id = :primary_row_id\"\n",
                ),
                |k| matches!(k, Kind::RelatedWithoutRule { object, related } if object == "quote" && related == "quote"),
                "object \"quote\" related \"quote\"",
            ),
            (
                "a rule reads a member without vis_event",
                s.clone(),
                swap(
                    "table = \"opty_emp\"\n",
                    "table = \"opty_emp\"\nvis_event = false\n",
                ),
                |k| matches!(k, Kind::VisEventOff { table } if table == "opty_emp"),
                "object \"opportunity\" rule 1",
            ),
            (
                "primary table with a composite key",
                s.replace(
                    "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT)",
                    "CREATE TABLE opty(id TEXT, name TEXT, PRIMARY KEY (id, name))",
                ),
                MODEL.into(),
                |k| matches!(k, Kind::Key { table, .. } if table == "opty"),
                "object \"opportunity\"",
            ),
        ];
        for (name, schema, toml, expect, at) in cases {
            let found = findings(&schema, &toml);
            assert!(
                found
                    .iter()
                    .any(|f| expect(&f.kind) && f.at.to_string().contains(at)),
                "{name}: expected a finding at {at:?}; got:\n{}",
                found.iter().map(|f| format!("  {f}\n")).collect::<String>()
            );
        }
    }

    #[test]
    fn severities_and_messages_say_what_where_and_what_to_do() {
        let found = findings(
            &format!("{SCHEMA} CREATE TABLE note(id TEXT PRIMARY KEY);"),
            &MODEL.replacen(
                "table = \"opty_emp\"\n",
                "table = \"opty_emp\"\nvis_event = false\n",
                1,
            ),
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("error: [tables]: table \"note\"")
                    && t.contains("add it under [tables]")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(
                |t| t.starts_with("warning: object \"opportunity\" rule 1 (line 16)")
                    && t.contains("set vis_event = true")
            ),
            "{text:#?}"
        );
    }

    #[test]
    fn fk_paths_pass_only_through_member_tables_and_are_unioned() {
        let c = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY);
            CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id));
            CREATE TABLE item(id TEXT PRIMARY KEY, quote_id TEXT REFERENCES quote(id),
                              opty_id TEXT REFERENCES opty(id));");
        let base = r#"version = 1
[tables]
opty = { visibility = "limited" }
quote = { visibility = "limited" }
item = { visibility = "limited" }
[[object]]
name = "o"
primary_table = "opty"
[[object.rule]]
set_sql = "SELECT id, 'n' FROM opty"
[[object.member]]
table = "item"
"#;
        // quote is not a member: one path, and quote itself is in no object.
        let model = DockingModel::from_toml(base).unwrap();
        let (r, found) = resolve(&model, &c).unwrap();
        assert!(
            found
                .iter()
                .all(|f| matches!(f.kind, Kind::LimitedWithoutObject { .. })),
            "{found:?}"
        );
        assert_eq!(r.objects[0].members[1].paths.len(), 1);
        // quote is a member: two paths, ambiguous until declared.
        let with_quote = format!("{base}[[object.member]]\ntable = \"quote\"\n");
        let found = check_toml(&with_quote, &c).unwrap();
        assert!(
            matches!(
                &found[..],
                [Finding {
                    kind: Kind::AmbiguousPath { .. },
                    ..
                }]
            ),
            "{found:?}"
        );
        let declared = with_quote.replacen(
            "table = \"item\"\n",
            "table = \"item\"\npaths = [[\"item.opty_id -> opty.id\"], [\"item.quote_id -> quote.id\", \"quote.opty_id -> opty.id\"]]\n",
            1,
        );
        let model = DockingModel::from_toml(&declared).unwrap();
        let (r, found) = resolve(&model, &c).unwrap();
        assert!(found.is_empty(), "{found:?}");
        let item = &r.objects[0].members[1];
        c.execute_batch(
            "INSERT INTO opty VALUES ('O1'), ('O2');
             INSERT INTO quote VALUES ('Q1', 'O2');
             INSERT INTO item VALUES ('I1', 'Q1', 'O1'), ('I2', NULL, 'O1'), ('I3', 'Q1', NULL);",
        )
        .unwrap();
        let ids = |key: &str| -> Vec<String> {
            let sql = item.primary_id_sql("opty", "id");
            let mut st = c.prepare(&format!("{sql} ORDER BY 1")).unwrap();
            st.query_map([key], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(ids("I1"), vec!["O1", "O2"], "both paths are followed");
        assert_eq!(ids("I2"), vec!["O1"]);
        assert_eq!(ids("I3"), vec!["O2"]);
        let mut st = c
            .prepare(&format!(
                "{} ORDER BY 1, 2",
                item.primary_id_set_sql("opty", "id")
            ))
            .unwrap();
        let all: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [("I1", "O1"), ("I1", "O2"), ("I2", "O1"), ("I3", "O2")];
        assert_eq!(all, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    const SALES_SCHEMA: &str = include_str!("../../../samples/sales/schema.sql");
    const SALES_DATA: &str = include_str!("../../../samples/sales/data.sql");
    const SALES_MODEL: &str = include_str!("../../../samples/sales/docking.toml");

    #[test]
    fn the_sales_sample_passes_check_with_no_findings() {
        let c = db(SALES_SCHEMA);
        let found = check_toml(SALES_MODEL, &c).unwrap();
        assert!(
            found.is_empty(),
            "{}",
            found.iter().map(|f| format!("{f}\n")).collect::<String>()
        );
        let model = DockingModel::from_toml(SALES_MODEL).unwrap();
        let (r, _) = resolve(&model, &c).unwrap();
        let account = &r.objects[0];
        assert_eq!(
            account.rule_reads[0],
            BTreeSet::from(["acct_postn".to_string(), "emp_postn".to_string()]),
            "the account-position rule depends on emp_postn, which is no member"
        );
        let opportunity = &r.objects[1];
        assert_eq!(opportunity.members.len(), 4);
        assert_eq!(opportunity.members[3].paths.len(), 2);
    }

    /// Every rule and mapping of the sample gives the same answer in its pair form and its
    /// set form, on the sample data, for a node per employee.
    #[test]
    fn the_sales_sample_rules_agree_in_both_forms() {
        let c = db(&format!("{SALES_SCHEMA}{SALES_DATA}{NODE_RELATIONS_DDL}"));
        let emps: Vec<String> = c
            .prepare("SELECT id FROM employee ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for e in &emps {
            c.execute("INSERT INTO berth_node VALUES ('n-' || ?1)", [e])
                .unwrap();
            c.execute(
                "INSERT INTO berth_node_attr VALUES ('n-' || ?1, 'employee', ?1)",
                [e],
            )
            .unwrap();
        }
        let pairs = |sql: &str| -> BTreeSet<(String, String)> {
            let mut st = c.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let run = |sql: &str, id: &str, emp: &str| -> Vec<Option<String>> {
            let mut st = c.prepare(sql).unwrap();
            for (name, value) in [
                (PARAM_PRIMARY_ROW_ID, id.to_string()),
                (PARAM_NODE_ID, format!("n-{emp}")),
                (":attr_employee", emp.to_string()),
            ] {
                if let Some(i) = st.parameter_index(name).unwrap() {
                    st.raw_bind_parameter(i, value).unwrap();
                }
            }
            let mut rows = st.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                out.push(r.get::<_, Option<String>>(0).ok().flatten());
            }
            out
        };
        let model = DockingModel::from_toml(SALES_MODEL).unwrap();
        let mut compared = 0;
        for o in &model.objects {
            let ids: Vec<String> = c
                .prepare(&format!("SELECT id FROM {}", ident(&o.primary_table)))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let maps = o.rules.iter().filter_map(|r| match r {
                Rule::Object { sql, .. } => Some(sql),
                Rule::Sql { .. } => None,
            });
            for sql in maps.chain(o.related.iter().map(|r| &r.sql)) {
                let (Some(pair), Some(set)) = (&sql.pair, &sql.set) else {
                    continue;
                };
                let by_pair: BTreeSet<(String, String)> = ids
                    .iter()
                    .flat_map(|id| {
                        run(pair, id, "-")
                            .into_iter()
                            .flatten()
                            .map(move |x| (id.clone(), x))
                    })
                    .collect();
                assert_eq!(by_pair, pairs(set), "object {} mapping {pair}", o.name);
                compared += 1;
            }
            for r in &o.rules {
                let Rule::Sql { sql, .. } = r else { continue };
                let (Some(pair), Some(set)) = (&sql.pair, &sql.set) else {
                    continue;
                };
                let mut by_pair = BTreeSet::new();
                for id in &ids {
                    for e in &emps {
                        if !run(pair, id, e).is_empty() {
                            by_pair.insert((id.clone(), format!("n-{e}")));
                        }
                    }
                }
                assert!(
                    !by_pair.is_empty(),
                    "object {}: rule matches nothing in the sample",
                    o.name
                );
                assert_eq!(by_pair, pairs(set), "object {} rule {pair}", o.name);
                compared += 1;
            }
        }
        assert_eq!(
            compared, 9,
            "3 SQL rules, 3 object rules, 3 related objects"
        );
    }

    /// An object with no rules of its own is visible when a visible object relates it.
    #[test]
    fn a_related_object_without_rules_is_not_never_visible() {
        let text = r#"
version = 1
[tables]
a = { visibility = "limited" }
b = { visibility = "limited" }
[[object]]
name = "a"
primary_table = "a"
[[object.rule]]
sql = "SELECT 1 FROM a WHERE id = :primary_row_id AND :node_id IS NOT NULL"
[[object.related]]
object = "b"
sql = "SELECT b_id FROM a WHERE id = :primary_row_id"
[[object]]
name = "b"
primary_table = "b"
"#;
        let model = DockingModel::from_toml(text).unwrap();
        let findings = model_findings(&model);
        assert!(
            !findings
                .iter()
                .any(|f| matches!(f.kind, Kind::NeverVisible { .. })),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| matches!(f.kind, Kind::RelatedWithoutRule { .. }))
        );
    }

    /// The paths `check` suggests for an ambiguous member, composite keys included, are a
    /// model the checker then accepts, resolving to exactly those joins.
    #[test]
    fn suggested_composite_paths_are_accepted_as_written() {
        let schema = "
            CREATE TABLE grp(id TEXT PRIMARY KEY);
            CREATE TABLE part(grp_id TEXT REFERENCES grp(id), n INTEGER, PRIMARY KEY (grp_id, n));
            CREATE TABLE note(id INTEGER PRIMARY KEY, grp_id TEXT REFERENCES grp(id), n INTEGER,
                              FOREIGN KEY (grp_id, n) REFERENCES part(grp_id, n));";
        let model = |paths: &str| {
            format!(
                r#"version = 1
[tables]
grp = {{ visibility = "limited" }}
part = {{ visibility = "limited" }}
note = {{ visibility = "limited" }}
[[object]]
name = "group"
primary_table = "grp"
[[object.member]]
table = "part"
[[object.member]]
table = "note"
{paths}
[[object.rule]]
sql = "SELECT 'X' FROM grp WHERE id = :primary_row_id AND id = :node_id"
"#
            )
        };
        let found = findings(schema, &model(""));
        let suggested = found
            .iter()
            .find_map(|f| match &f.kind {
                Kind::AmbiguousPath { candidates, .. } => Some(toml_paths(candidates)),
                _ => None,
            })
            .expect("two paths from note to grp");
        assert!(
            suggested.contains("note.(grp_id, n) -> part.(grp_id, n)"),
            "{suggested}"
        );
        let text = model(&format!("paths = [{suggested}]"));
        let errors: Vec<String> = findings(schema, &text)
            .iter()
            .filter(|f| f.severity() == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let (resolved, _) = resolve(&DockingModel::from_toml(&text).unwrap(), &db(schema)).unwrap();
        let note = resolved.objects[0]
            .members
            .iter()
            .find(|m| m.table == "note")
            .unwrap();
        let composite = note
            .paths
            .iter()
            .find(|p| p.joins.len() == 2)
            .expect("the path through part");
        assert_eq!(composite.joins[0].from_columns, ["grp_id", "n"]);
        assert_eq!(composite.joins[0].to_columns, ["grp_id", "n"]);
    }
}
