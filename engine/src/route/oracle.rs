//! The reference oracle (issue 4, "Tests that must exist"): given central and a node, the
//! exact rows that node should hold, which is DESIGN.md invariant 1 ("Visible projection")
//! written as code.
//!
//! It is the specification the router is tested against, so it is written as plainly as
//! possible and shares nothing with the router but the docking model: it reads every row of
//! central, evaluates rules one instance at a time, and follows member paths one join and
//! one row at a time. It finds those paths itself, too (see "How member paths are found"):
//! the router takes them from [`super::check::resolve`], and a mistake there must not be
//! in both. Clarity over speed; it is meant for tests, not for routing. Every routing test
//! ends by comparing a replica ([`replica_rows`]) with [`project`], row for row.
//!
//! It is one file on purpose (about 1,000 lines before its tests): read from top to bottom,
//! it is the specification; split up, it would no longer read as one.
//!
//! # What a node holds
//!
//! 1. **Tables.** Every row of an `enterprise` table. No row of a `central` table. Of a
//!    `limited` table, the member rows of the docking-object instances visible to the node;
//!    a row that is a member of several instances (of one object or of several) is held if
//!    any of them is visible.
//! 2. **Instances.** An instance of a docking object is a row of its primary table, named by
//!    its primary key (a row whose key is NULL, which SQLite allows in a key that is not an
//!    INTEGER PRIMARY KEY, is no instance: `=` never matches it). The visible instances are
//!    the *smallest* set such that
//!    - **(SQL rule)** an instance is visible if one of its object's SQL rules matches it for
//!      the node (Fig. 7 steps 207-213). When the rule has its pair form (`sql`), that is
//!      run with `:primary_row_id` bound to the instance's id, `:node_id` to the node's name
//!      and `:attr_NAME` to the node's attribute NAME (NULL if the node has none), and
//!      matches if it returns any row. Otherwise its set form (`set_sql`) is run once and
//!      matches if it returns the pair (instance id, node name). Node identity for set forms
//!      is in the TEMP relations `berth_node` / `berth_node_attr`, holding only this node.
//!    - **(object rule)** an instance is visible if one of its object's object rules maps it
//!      to a visible instance of the rule's object (Fig. 7 steps 221-227). The mapping is the
//!      pair form run with `:primary_row_id` bound (its first column: the other object's
//!      ids), or else the set form's pairs (instance id, other id).
//!    - **(related object)** an instance is visible if an `[[object.related]]` mapping of a
//!      visible instance leads to it (mapped as object rules are): related objects travel
//!      with the object (seed: "When an Opportunity Docking Object is propagated ..., the
//!      related docking objects are also propagated").
//!
//!    Rules are evaluated in file order as the seed does, but visibility is their OR, so the
//!    order changes nothing. "Smallest" (a least fixpoint) is what makes cycles terminate:
//!    an instance whose only way to visibility runs round a cycle of object rules or related
//!    objects, with no SQL rule matching anywhere on the way in, is not visible. Ids that a
//!    rule or mapping returns but that name no row of the primary table are no instance.
//! 3. **Member rows of an instance.** Its primary row, and every row of a member table whose
//!    path to the primary table leads to the instance's primary row. A member with several
//!    paths belongs to every instance any of them leads to (the seed's GeneratePrimaryIdSQL
//!    unions them). A path is followed join by join: from the rows reached so far to the
//!    rows of the join's table whose join columns equal theirs (SQL `=`, so NULL reaches
//!    nothing); the ids are the primary keys of the primary-table rows reached at the end.
//!
//! # How member paths are found
//!
//! From the model as written ([`DockingObject::members`], each with its [`PathSpec`]) and
//! central's schema as SQLite reports it, nothing else:
//!
//! - **The primary table** ([`PathSpec::Primary`]): a row is its own instance.
//! - **Declared paths** ([`PathSpec::Declared`]): as written, every one of them.
//! - **Foreign keys** ([`PathSpec::ForeignKeys`], a member without `paths`): the chains of
//!   foreign keys (`PRAGMA foreign_key_list`; a reference that names no parent columns means
//!   the parent's primary key, from `PRAGMA table_info`) that start at the member table,
//!   pass only through tables that are members of the same object, visit no table twice and
//!   end at the primary table, where a chain stops (the seed's AddPKTable, with its "no
//!   loops" assumption enforced; `docs/decisions/0001-docking-model.md`). A foreign key on
//!   several columns is one join on all of them.
//!
//! A foreign-key member with no such chain, or with more than one, is an error of the model
//! (`berth docking check` reports `NoPath` / `AmbiguousPath`: a second foreign key is as often
//! another relationship as another way to the same object). [`project`] refuses a model
//! with any error finding; it runs [`check::check`] for those findings only and takes nothing
//! else from it. Evaluated regardless (this module's tests do), several chains are unioned
//! as the seed's GeneratePrimaryIdSQL unions paths, and none leaves the member's rows in no
//! instance.
//!
//! # Forms
//!
//! Rows are keyed by their *key text*, the JSON array of their primary key values in key
//! order, in wire form ([`crate::value::from_sql`]; blobs are `["b", "HEX"]`): the form of
//! `berth_log.pk`, e.g. `["O1"]`, `["O4","E1"]`, `[["b","00FF"]]`. An instance is named by
//! the key text of its primary row. Tables are named as declared in the docking model, and
//! objects by their declared name.
//!
//! # Example
//!
//! ```
//! use berth_engine::route::{model::DockingModel, oracle::{self, Node}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = DockingModel::from_toml(r#"
//! version = 1
//! [nodes]
//! attributes = ["employee"]
//! [tables]
//! opty = { visibility = "limited" }
//! opty_emp = { visibility = "limited" }
//! [[object]]
//! name = "opportunity"
//! primary_table = "opty"
//! [[object.member]]
//! table = "opty_emp"
//! [[object.rule]]
//! sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
//! "#)?;
//! let central = rusqlite::Connection::open_in_memory()?;
//! central.execute_batch(
//!     "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
//!      CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
//!                            PRIMARY KEY (opty_id, emp_id));
//!      INSERT INTO opty VALUES ('O1', 'Fleet renewal'), ('O2', 'Warehouse sync');
//!      INSERT INTO opty_emp VALUES ('O1', 'E1'), ('O2', 'E2');",
//! )?;
//! let alice = Node::new("alice").attr("employee", "E1");
//! let seen = oracle::project(&central, &model, &alice)?;
//! let keys = seen.keys();
//! assert_eq!(keys["opty"], [r#"["O1"]"#.to_string()].into());
//! assert_eq!(keys["opty_emp"], [r#"["O1","E1"]"#.to_string()].into());
//! assert_eq!(seen.instances["opportunity"], [r#"["O1"]"#.to_string()].into());
//! # Ok(()) }
//! ```

use super::check::{self, Finding, Severity};
use super::model::{
    DockingModel, DockingObject, Join, NODE_RELATIONS_DDL, PARAM_ATTR_PREFIX, PARAM_NODE_ID,
    PARAM_PRIMARY_ROW_ID, Path, PathSpec, Rule, RuleSql, Visibility,
};
use crate::store::ident;
use crate::value::{Bind, Row, from_sql};
use rusqlite::Connection;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// A node's identity as rules see it: its name (`:node_id`) and the attributes given at
/// `node add --attr NAME=VALUE` (`:attr_NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The node's name.
    pub name: String,
    /// Attribute name -> value.
    pub attributes: BTreeMap<String, String>,
}

impl Node {
    /// A node with no attributes.
    pub fn new(name: impl Into<String>) -> Node {
        Node {
            name: name.into(),
            attributes: BTreeMap::new(),
        }
    }

    /// The same node with attribute `name` set to `value`.
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Node {
        self.attributes.insert(name.into(), value.into());
        self
    }
}

/// What a node should hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Projection {
    /// Every table declared in the model -> the rows the node holds, by key text, with their
    /// values as central has them. Tables the node holds nothing of are present and empty.
    pub rows: BTreeMap<String, BTreeMap<String, Row>>,
    /// Every docking object -> the key texts of its instances visible to the node (what the
    /// node's instance set must say).
    pub instances: BTreeMap<String, BTreeSet<String>>,
    /// Every visible instance (object, key text) -> why it is visible: the rule chain
    /// `berth explain` prints.
    pub reasons: BTreeMap<(String, String), Reason>,
}

/// Why an instance is visible to a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// SQL rule number `rule` (1-based, in the object's sequence) matches it for the node.
    Rule {
        /// The rule's number.
        rule: usize,
    },
    /// It is visible because instance `id` of `object` is (an object rule or a related
    /// object), as `how` says.
    Via {
        /// The mapping, in words.
        how: String,
        /// The other instance's object.
        object: String,
        /// The other instance's id (key text).
        id: String,
    },
}

impl Projection {
    /// Just the keys: table -> key texts of the rows the node holds.
    pub fn keys(&self) -> BTreeMap<String, BTreeSet<String>> {
        self.rows
            .iter()
            .map(|(t, rows)| (t.clone(), rows.keys().cloned().collect()))
            .collect()
    }
}

/// Why [`project`] gave no answer.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    /// Reading central failed.
    #[error("reading central: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The model does not fit central's schema: `berth docking check` reports errors.
    #[error("the docking model does not fit central's schema; run `berth docking check`: {}", list(.findings))]
    Model {
        /// The error findings.
        findings: Vec<Finding>,
    },
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The key text of a row whose primary key values are `key` (in key order).
pub fn key_text(key: &[Json]) -> String {
    Json::Array(key.to_vec()).to_string()
}

/// What `node` should hold, given central and the docking model. The model is refused if
/// [`check::check`] finds errors in it against central's schema (its findings are all this
/// takes from `check`; member paths are found here, as the module doc says).
///
/// Central is left as it was: the oracle only reads, inside a savepoint it rolls back.
pub fn project(
    central: &Connection,
    model: &DockingModel,
    node: &Node,
) -> Result<Projection, OracleError> {
    let errors: Vec<Finding> = check::check(model, central)?
        .into_iter()
        .filter(|f| f.severity() == Severity::Error)
        .collect();
    if !errors.is_empty() {
        return Err(OracleError::Model { findings: errors });
    }
    Ok(evaluate(central, model, node)?)
}

/// [`project`] without the check: the model is evaluated as it is, whatever `check` would
/// say of it (a member without a path holds no rows; a cycle with no way in shows nothing).
fn evaluate(
    central: &Connection,
    model: &DockingModel,
    node: &Node,
) -> rusqlite::Result<Projection> {
    // Set forms read node identity from TEMP relations; this node is put there inside a
    // savepoint that is rolled back, so central (and any relations the router filled) is
    // left as it was. The savepoint also makes every read below see one snapshot.
    central.execute_batch("SAVEPOINT berth_oracle")?;
    let answer = identify(central, node).and_then(|()| {
        let visible = visible_instances(central, model, node)?;
        let instances: BTreeMap<String, BTreeSet<String>> = visible
            .iter()
            .map(|(o, ids)| (o.clone(), ids.keys().cloned().collect()))
            .collect();
        let reasons = visible
            .into_iter()
            .flat_map(|(o, ids)| ids.into_iter().map(move |(id, why)| ((o.clone(), id), why)))
            .collect();
        let rows = held_rows(central, model, &instances)?;
        Ok(Projection {
            rows,
            instances,
            reasons,
        })
    });
    let undone = central.execute_batch("ROLLBACK TO berth_oracle; RELEASE berth_oracle");
    let answer = answer?;
    undone?;
    Ok(answer)
}

/// The rows a replica holds, in the form of [`Projection::rows`]: every table declared in
/// the model (a table the replica lacks counts as empty). Compare with [`project`].
pub fn replica_rows(
    replica: &Connection,
    model: &DockingModel,
) -> rusqlite::Result<BTreeMap<String, BTreeMap<String, Row>>> {
    let mut out = BTreeMap::new();
    for spec in model.tables.values() {
        let exists: bool = replica.query_row(
            "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [&spec.name],
            |r| r.get(0),
        )?;
        let rows = if exists {
            table_rows(replica, &spec.name)?
        } else {
            BTreeMap::new()
        };
        out.insert(spec.name.clone(), rows);
    }
    Ok(out)
}

/// One way a node differs from what it should hold (see [`differences`]).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Central's instance set (S_DOBJ_INST) of `object` for the node is not the projection's.
    Instances {
        /// The docking object.
        object: String,
        /// What central's router holds.
        held: BTreeSet<String>,
        /// What the oracle projects.
        want: BTreeSet<String>,
    },
    /// Central's record of the limited rows the node holds (`berth_node_rows`) is not the
    /// projection's limited rows.
    Recorded {
        /// (table, key text) recorded but not projected.
        extra: BTreeSet<(String, String)>,
        /// (table, key text) projected but not recorded.
        missing: BTreeSet<(String, String)>,
    },
    /// The replica's rows of `table` are not the projection's.
    Table {
        /// The table.
        table: String,
        /// Keys the replica holds that it should not.
        extra: BTreeSet<String>,
        /// Keys it lacks.
        missing: BTreeSet<String>,
        /// Keys it holds with other values than central's.
        changed: BTreeSet<String>,
    },
}

fn few<T: std::fmt::Debug>(set: &BTreeSet<T>) -> String {
    let shown: Vec<String> = set.iter().take(5).map(|k| format!("{k:?}")).collect();
    let more = set.len().saturating_sub(shown.len());
    if more > 0 {
        format!("[{} and {more} more]", shown.join(", "))
    } else {
        format!("[{}]", shown.join(", "))
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Instances { object, held, want } => write!(
                f,
                "central's instance set of {object} holds {} (oracle: {})",
                few(held),
                few(want)
            ),
            Difference::Recorded { extra, missing } => write!(
                f,
                "central's record of rows held has {} extra, misses {}",
                few(extra),
                few(missing)
            ),
            Difference::Table {
                table,
                extra,
                missing,
                changed,
            } => write!(
                f,
                "table {table}: {} extra, {} missing, {} with other values",
                few(extra),
                few(missing),
                few(changed)
            ),
        }
    }
}

/// Every way `node`'s replica, and central's router state for it (instance set, rows
/// recorded as held), differ from [`project`]; empty when the node holds exactly its visible
/// projection (DESIGN.md invariant 1). `node` is named and attributed as registered at
/// central.
pub fn differences(
    central: &Connection,
    model: &DockingModel,
    node: &Node,
    replica: &Connection,
) -> Result<Vec<Difference>, OracleError> {
    let want = project(central, model, node)?;
    let mut out = Vec::new();
    for (object, ids) in &want.instances {
        let held: BTreeSet<String> = central
            .prepare_cached("SELECT id FROM berth_instances WHERE node = ?1 AND obj = ?2")?
            .query_map([node.name.as_str(), object.as_str()], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        if &held != ids {
            out.push(Difference::Instances {
                object: object.clone(),
                held,
                want: ids.clone(),
            });
        }
    }
    let recorded: BTreeSet<(String, String)> = central
        .prepare_cached("SELECT tbl, pk FROM berth_node_rows WHERE node = ?1")?
        .query_map([node.name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let limited: BTreeSet<(String, String)> = want
        .rows
        .iter()
        .filter(|(t, _)| {
            model
                .table(t)
                .is_some_and(|s| s.visibility == Visibility::Limited)
        })
        .flat_map(|(t, rows)| rows.keys().map(move |k| (t.clone(), k.clone())))
        .collect();
    if recorded != limited {
        out.push(Difference::Recorded {
            extra: recorded.difference(&limited).cloned().collect(),
            missing: limited.difference(&recorded).cloned().collect(),
        });
    }
    let have = replica_rows(replica, model)?;
    let empty = BTreeMap::new();
    for (table, rows) in &want.rows {
        let h = have.get(table).unwrap_or(&empty);
        if h == rows {
            continue;
        }
        out.push(Difference::Table {
            table: table.clone(),
            extra: h
                .keys()
                .filter(|k| !rows.contains_key(*k))
                .cloned()
                .collect(),
            missing: rows
                .keys()
                .filter(|k| !h.contains_key(*k))
                .cloned()
                .collect(),
            changed: rows
                .iter()
                .filter(|(k, v)| h.get(*k).is_some_and(|hv| hv != *v))
                .map(|(k, _)| k.clone())
                .collect(),
        });
    }
    Ok(out)
}

/// Every row of `table`, by key text.
pub fn table_rows(conn: &Connection, table: &str) -> rusqlite::Result<BTreeMap<String, Row>> {
    let key = key_columns(conn, table)?;
    let mut out = BTreeMap::new();
    for row in select_rows(conn, &format!("SELECT * FROM {}", ident(table)), &[])? {
        let values: Vec<Json> = key
            .iter()
            .map(|c| column(&row, c).cloned().unwrap_or(Json::Null))
            .collect();
        out.insert(key_text(&values), row);
    }
    Ok(out)
}

/// The primary key columns of `table`, in key order.
fn key_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

/// Fills the TEMP node relations with this node only (inside the caller's savepoint).
fn identify(conn: &Connection, node: &Node) -> rusqlite::Result<()> {
    conn.execute_batch(NODE_RELATIONS_DDL)?;
    conn.execute_batch("DELETE FROM temp.berth_node; DELETE FROM temp.berth_node_attr;")?;
    conn.execute(
        "INSERT INTO temp.berth_node(node_id) VALUES (?1)",
        [&node.name],
    )?;
    for (name, value) in &node.attributes {
        conn.execute(
            "INSERT INTO temp.berth_node_attr(node_id, name, value) VALUES (?1, ?2, ?3)",
            [&node.name, name, value],
        )?;
    }
    Ok(())
}

/// An instance: (object name, key text of its primary row).
type Instance = (String, String);

/// Part 2 of the module doc: the least fixpoint of SQL rules, object rules and related
/// objects.
fn visible_instances(
    central: &Connection,
    model: &DockingModel,
    node: &Node,
) -> rusqlite::Result<BTreeMap<String, BTreeMap<String, Reason>>> {
    // Every instance of every object: key text -> primary key value (to bind).
    let mut all: BTreeMap<String, BTreeMap<String, Json>> = BTreeMap::new();
    for o in &model.objects {
        all.insert(o.name.clone(), instance_ids(central, &o.primary_table)?);
    }
    let none = BTreeMap::new();
    let instances_of = |object: &str| -> (String, &BTreeMap<String, Json>) {
        let name = model
            .object(object)
            .map_or_else(|| object.to_string(), |o| o.name.clone());
        let ids = all.get(&name).unwrap_or(&none);
        (name, ids)
    };

    // Where visibility starts: SQL rules. And the ways it spreads, as (from, to, how): "if
    // `from` is visible, so is `to`".
    let mut visible: BTreeMap<Instance, Reason> = BTreeMap::new();
    let mut spreads: Vec<(Instance, Instance, String)> = Vec::new();
    for o in &model.objects {
        let (name, ids) = instances_of(&o.name);
        for (i, rule) in o.rules.iter().enumerate() {
            match rule {
                Rule::Sql { sql, .. } => {
                    for id in sql_rule_matches(central, sql, ids, node)? {
                        // Rules are tried in sequence; the first that matches is the reason.
                        visible
                            .entry((name.clone(), id))
                            .or_insert(Reason::Rule { rule: i + 1 });
                    }
                }
                // Visible if the instance it maps to is: visibility flows from there to here.
                Rule::Object { object, sql, .. } => {
                    let (other, other_ids) = instances_of(object);
                    for (id, to) in mapping(central, sql, ids, other_ids, node)? {
                        spreads.push((
                            (other.clone(), to),
                            (name.clone(), id),
                            format!(
                                "rule {} of {} (object rule: visible with its {other})",
                                i + 1,
                                name
                            ),
                        ));
                    }
                }
            }
        }
        // Related objects travel with this one: visibility flows from here to there.
        for related in &o.related {
            let (other, other_ids) = instances_of(&related.object);
            for (id, to) in mapping(central, &related.sql, ids, other_ids, node)? {
                spreads.push((
                    (name.clone(), id),
                    (other.clone(), to),
                    format!("{other} is a related object of {name} and travels with it"),
                ));
            }
        }
    }

    // The least fixpoint: spread until nothing changes. Each round adds at least one
    // instance or ends, so this terminates, cycles or not.
    loop {
        let mut added = false;
        for (from, to, how) in &spreads {
            if visible.contains_key(from) && !visible.contains_key(to) {
                visible.insert(
                    to.clone(),
                    Reason::Via {
                        how: how.clone(),
                        object: from.0.clone(),
                        id: from.1.clone(),
                    },
                );
                added = true;
            }
        }
        if !added {
            break;
        }
    }

    let mut out: BTreeMap<String, BTreeMap<String, Reason>> = model
        .objects
        .iter()
        .map(|o| (o.name.clone(), BTreeMap::new()))
        .collect();
    for ((object, id), why) in visible {
        out.entry(object).or_default().insert(id, why);
    }
    Ok(out)
}

/// Every row of a primary table, as key text -> primary key value, but for rows whose key
/// is NULL. (Primary tables have a single-column key; `check` refuses others.)
fn instance_ids(conn: &Connection, table: &str) -> rusqlite::Result<BTreeMap<String, Json>> {
    let mut out = BTreeMap::new();
    if let [key] = key_columns(conn, table)?.as_slice() {
        let sql = format!("SELECT {} FROM {}", ident(key), ident(table));
        let mut st = conn.prepare_cached(&sql)?;
        let ids = st.query_map([], |r| Ok(from_sql(r.get_ref(0)?)))?;
        for id in ids {
            let id = id?;
            if !id.is_null() {
                out.insert(key_text(std::slice::from_ref(&id)), id);
            }
        }
    }
    Ok(out)
}

/// The instances among `ids` that an SQL rule makes visible to `node`.
fn sql_rule_matches(
    conn: &Connection,
    sql: &RuleSql,
    ids: &BTreeMap<String, Json>,
    node: &Node,
) -> rusqlite::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if let Some(pair) = &sql.pair {
        for (text, id) in ids {
            if !run_pair(conn, pair, id, node)?.is_empty() {
                out.insert(text.clone());
            }
        }
    } else if let Some(set) = &sql.set {
        let me = Json::String(node.name.clone());
        for (id, who) in run_set(conn, set)? {
            let text = key_text(&[id]);
            if who == me && ids.contains_key(&text) {
                out.insert(text);
            }
        }
    }
    Ok(out)
}

/// The pairs (instance in `from`, instance in `to`) an object rule's or related object's
/// SQL maps.
fn mapping(
    conn: &Connection,
    sql: &RuleSql,
    from: &BTreeMap<String, Json>,
    to: &BTreeMap<String, Json>,
    node: &Node,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if let Some(pair) = &sql.pair {
        for (text, id) in from {
            for other in run_pair(conn, pair, id, node)? {
                let other = key_text(&[other]);
                if to.contains_key(&other) {
                    out.push((text.clone(), other));
                }
            }
        }
    } else if let Some(set) = &sql.set {
        for (id, other) in run_set(conn, set)? {
            let (id, other) = (key_text(&[id]), key_text(&[other]));
            if from.contains_key(&id) && to.contains_key(&other) {
                out.push((id, other));
            }
        }
    }
    Ok(out)
}

/// Runs a pair-form statement for one instance and one node; the first column of each row.
fn run_pair(conn: &Connection, sql: &str, id: &Json, node: &Node) -> rusqlite::Result<Vec<Json>> {
    let mut st = conn.prepare_cached(sql)?;
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i).unwrap_or_default();
        let value = if name == PARAM_PRIMARY_ROW_ID {
            id.clone()
        } else if name == PARAM_NODE_ID {
            Json::String(node.name.clone())
        } else if let Some(attr) = name.strip_prefix(PARAM_ATTR_PREFIX) {
            node.attributes
                .get(attr)
                .map_or(Json::Null, |v| Json::String(v.clone()))
        } else {
            Json::Null
        };
        st.raw_bind_parameter(i, Bind(&value))?;
    }
    let mut rows = st.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_sql(r.get_ref(0)?));
    }
    Ok(out)
}

/// Runs a set-form statement: its two columns, row by row.
fn run_set(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<(Json, Json)>> {
    let mut st = conn.prepare_cached(sql)?;
    let rows = st.query_map([], |r| {
        Ok((from_sql(r.get_ref(0)?), from_sql(r.get_ref(1)?)))
    })?;
    rows.collect()
}

/// Part 1 of the module doc: per declared table, the rows the node holds.
fn held_rows(
    central: &Connection,
    model: &DockingModel,
    instances: &BTreeMap<String, BTreeSet<String>>,
) -> rusqlite::Result<BTreeMap<String, BTreeMap<String, Row>>> {
    let ways = Ways::find(central, model)?;
    let mut out = BTreeMap::new();
    for spec in model.tables.values() {
        let held = match spec.visibility {
            Visibility::Enterprise => table_rows(central, &spec.name)?,
            Visibility::Central => BTreeMap::new(),
            // Each site's own rows: nothing central could predict.
            Visibility::Local => continue,
            Visibility::Limited => {
                let mut held = BTreeMap::new();
                for (key, row) in table_rows(central, &spec.name)? {
                    if ways.is_member_of_visible(central, instances, &spec.name, &row)? {
                        held.insert(key, row);
                    }
                }
                held
            }
        };
        out.insert(spec.name.clone(), held);
    }
    Ok(out)
}

/// How the rows of each member table find their instances: per object, its primary key
/// column and, per member, its paths (see "How member paths are found").
struct Ways {
    objects: Vec<ObjectWays>,
}

/// One docking object's part of [`Ways`].
struct ObjectWays {
    /// The object's name.
    name: String,
    /// The primary table's key column; None when it has no single-column key (`check`
    /// refuses that), so that nothing is an instance.
    primary_key: Option<String>,
    /// Member table -> its paths to the primary table; None for the primary table itself.
    members: Vec<(String, Option<Vec<Path>>)>,
}

impl Ways {
    /// Finds every member's paths, from the model as written and central's schema.
    fn find(central: &Connection, model: &DockingModel) -> rusqlite::Result<Ways> {
        let mut objects = Vec::new();
        for o in &model.objects {
            let primary_key = match key_columns(central, &o.primary_table)?.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            };
            let mut members = Vec::new();
            for m in &o.members {
                let paths = match &m.path {
                    PathSpec::Primary => None,
                    PathSpec::Declared(paths) => Some(paths.clone()),
                    PathSpec::ForeignKeys => Some(foreign_key_paths(central, o, &m.table)?),
                };
                members.push((m.table.clone(), paths));
            }
            objects.push(ObjectWays {
                name: o.name.clone(),
                primary_key,
                members,
            });
        }
        Ok(Ways { objects })
    }

    /// Whether a row of `table` is a member row of any visible instance of any object.
    fn is_member_of_visible(
        &self,
        central: &Connection,
        instances: &BTreeMap<String, BTreeSet<String>>,
        table: &str,
        row: &Row,
    ) -> rusqlite::Result<bool> {
        for o in &self.objects {
            let Some(visible) = instances.get(&o.name) else {
                continue;
            };
            for (member, paths) in &o.members {
                if !member.eq_ignore_ascii_case(table) {
                    continue;
                }
                for id in o.primary_ids(central, paths.as_deref(), row)? {
                    if visible.contains(&id) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

impl ObjectWays {
    /// Part 3 of the module doc: the instances (key texts) a member row belongs to, given
    /// its member's paths (None: the row is a primary row).
    fn primary_ids(
        &self,
        central: &Connection,
        paths: Option<&[Path]>,
        row: &Row,
    ) -> rusqlite::Result<BTreeSet<String>> {
        let mut ids = BTreeSet::new();
        let Some(key) = &self.primary_key else {
            return Ok(ids);
        };
        let ends = match paths {
            None => vec![row.clone()],
            Some(paths) => {
                let mut ends = Vec::new();
                for path in paths {
                    ends.extend(walk(central, path, row)?);
                }
                ends
            }
        };
        for end in &ends {
            if let Some(id) = column(end, key).filter(|id| !id.is_null()) {
                ids.insert(key_text(std::slice::from_ref(id)));
            }
        }
        Ok(ids)
    }
}

/// The rows a path leads to from `row`, join by join.
fn walk(central: &Connection, path: &Path, row: &Row) -> rusqlite::Result<Vec<Row>> {
    let mut reached = vec![row.clone()];
    for join in &path.joins {
        let mut next = Vec::new();
        for r in &reached {
            next.extend(follow(central, join, r)?);
        }
        reached = next;
    }
    Ok(reached)
}

/// The rows of `join.to_table` whose `to_columns` equal `row`'s `from_columns`.
fn follow(central: &Connection, join: &Join, row: &Row) -> rusqlite::Result<Vec<Row>> {
    let mut values = Vec::new();
    for c in &join.from_columns {
        match column(row, c) {
            Some(v) if !v.is_null() => values.push(v.clone()),
            _ => return Ok(Vec::new()),
        }
    }
    let filter: Vec<String> = join
        .to_columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
        .collect();
    let sql = format!(
        "SELECT * FROM {} WHERE {}",
        ident(&join.to_table),
        filter.join(" AND ")
    );
    select_rows(central, &sql, &values)
}

/// The paths of a member without declared paths: every chain of foreign keys from `member`
/// to `o`'s primary table through `o`'s member tables, no table twice (module doc, "How
/// member paths are found"). Sorted, each once.
fn foreign_key_paths(
    central: &Connection,
    o: &DockingObject,
    member: &str,
) -> rusqlite::Result<Vec<Path>> {
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let mut found = Vec::new();
    // Chains still to extend; the empty chain stands at the member table.
    let mut open: Vec<Vec<Join>> = vec![Vec::new()];
    while let Some(chain) = open.pop() {
        let here = chain.last().map_or(member, |j| j.to_table.as_str());
        for fk in foreign_keys(central, here)? {
            let parent = fk.to_table.clone();
            let visited = same(&parent, member) || chain.iter().any(|j| same(&j.to_table, &parent));
            if visited || o.member(&parent).is_none() {
                continue;
            }
            let mut longer = chain.clone();
            longer.push(fk);
            if same(&parent, &o.primary_table) {
                found.push(Path { joins: longer });
            } else {
                open.push(longer);
            }
        }
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// The foreign keys of `table`, each as the join it makes from `table` to its parent.
/// Parent columns left implicit are the parent's primary key; a key whose two sides do not
/// have the same number of columns (SQLite calls it a mismatch when used) leads nowhere and
/// is left out.
fn foreign_keys(central: &Connection, table: &str) -> rusqlite::Result<Vec<Join>> {
    let mut st = central.prepare_cached(
        "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
    )?;
    let parts = st.query_map([table], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    // Foreign key id -> the join, its parent columns as given (none when implicit).
    let mut by_id: BTreeMap<i64, Join> = BTreeMap::new();
    for part in parts {
        let (id, parent, from, to) = part?;
        let fk = by_id.entry(id).or_insert_with(|| Join {
            from_table: table.to_string(),
            from_columns: Vec::new(),
            to_table: parent,
            to_columns: Vec::new(),
        });
        fk.from_columns.push(from);
        fk.to_columns.extend(to);
    }
    let mut out = Vec::new();
    for mut fk in by_id.into_values() {
        if fk.to_columns.is_empty() {
            fk.to_columns = key_columns(central, &fk.to_table)?;
        }
        if fk.to_columns.len() == fk.from_columns.len() {
            out.push(fk);
        }
    }
    Ok(out)
}

/// Runs `sql` with `params` bound as `?1..?n`; each row as column name -> value.
fn select_rows(conn: &Connection, sql: &str, params: &[Json]) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare_cached(sql)?;
    let names: Vec<String> = st.column_names().map(str::to_string).collect();
    let rows = st.query_map(rusqlite::params_from_iter(params.iter().map(Bind)), |r| {
        let mut row = Row::new();
        for (i, name) in names.iter().enumerate() {
            row.insert(name.clone(), from_sql(r.get_ref(i)?));
        }
        Ok(row)
    })?;
    rows.collect()
}

/// A column of a row, by case-insensitive name (SQL names are).
fn column<'r>(row: &'r Row, name: &str) -> Option<&'r Json> {
    row.iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    fn model(toml: &str) -> DockingModel {
        DockingModel::from_toml(toml).unwrap()
    }

    fn project_toml(central: &Connection, toml: &str, node: &Node) -> Projection {
        project(central, &model(toml), node).unwrap()
    }

    /// Key texts of one-column keys.
    fn ids(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|i| key_text(&[Json::from(*i)])).collect()
    }

    fn employee(e: &str) -> Node {
        Node::new(format!("n-{e}")).attr("employee", e)
    }

    const OPTY_SCHEMA: &str = "
        CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
                              PRIMARY KEY (opty_id, emp_id));
        INSERT INTO opty VALUES ('O1', 'fleet'), ('O2', 'depots'), ('O3', 'public');
        INSERT INTO opty_emp VALUES ('O1', 'E1'), ('O2', 'E2');";

    fn opty_model(rules: &str) -> String {
        format!(
            r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = {{ visibility = "limited" }}
opty_emp = {{ visibility = "limited" }}
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
{rules}"#
        )
    }

    #[test]
    fn sql_rules_in_each_form() {
        let central = db(OPTY_SCHEMA);
        let by_attr = r#"sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee""#;
        let cases: &[(&str, String, Node, &[&str])] = &[
            (
                "pair form, :attr_NAME",
                format!("[[object.rule]]\n{by_attr}"),
                employee("E1"),
                &["O1"],
            ),
            (
                "pair form, :node_id",
                "[[object.rule]]\nsql = \"SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND 'n-' || emp_id = :node_id\"".into(),
                employee("E2"),
                &["O2"],
            ),
            (
                "pair form, a node without the attribute gets NULL and matches nothing",
                format!("[[object.rule]]\n{by_attr}"),
                Node::new("n-E1"),
                &[],
            ),
            (
                "pair form, any row matches, even one of NULLs",
                "[[object.rule]]\nsql = \"SELECT NULL FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee\"".into(),
                employee("E2"),
                &["O2"],
            ),
            (
                "set form, reading berth_node_attr",
                "[[object.rule]]\nset_sql = \"SELECT oe.opty_id, na.node_id FROM opty_emp oe JOIN berth_node_attr na ON na.name = 'employee' AND na.value = oe.emp_id\"".into(),
                employee("E1"),
                &["O1"],
            ),
            (
                "set form, reading berth_node; pairs for other nodes do not count",
                "[[object.rule]]\nset_sql = \"SELECT opty_id, 'n-' || emp_id FROM opty_emp\"".into(),
                employee("E2"),
                &["O2"],
            ),
            (
                "set form, ids that name no row are no instance",
                "[[object.rule]]\nset_sql = \"SELECT 'O9', node_id FROM berth_node UNION ALL SELECT 'O3', node_id FROM berth_node\"".into(),
                employee("E1"),
                &["O3"],
            ),
            (
                "both forms: the pair form is the one used",
                format!(
                    "[[object.rule]]\n{by_attr}\nset_sql = \"SELECT 'O3', node_id FROM berth_node\""
                ),
                employee("E1"),
                &["O1"],
            ),
            (
                "several SQL rules: visible if any matches",
                format!(
                    "[[object.rule]]\n{by_attr}\n[[object.rule]]\nsql = \"SELECT 'X' FROM opty WHERE id = :primary_row_id AND name = 'public'\""
                ),
                employee("E1"),
                &["O1", "O3"],
            ),
        ];
        for (what, rules, node, want) in cases {
            let seen = project_toml(&central, &opty_model(rules), node);
            assert_eq!(seen.instances["opportunity"], ids(want), "{what}");
            assert_eq!(seen.keys()["opty"], ids(want), "{what}: the primary rows");
            let members: BTreeSet<String> = seen.rows["opty_emp"]
                .values()
                .map(|r| key_text(&[r["opty_id"].clone()]))
                .collect();
            let with_members: BTreeSet<String> = ids(want)
                .into_iter()
                .filter(|o| o != &key_text(&[Json::from("O3")]))
                .collect();
            assert_eq!(members, with_members, "{what}: the member rows");
        }
    }

    const CHAIN_SCHEMA: &str = "
        CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
                              PRIMARY KEY (opty_id, emp_id));
        CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id), owner TEXT);
        CREATE TABLE item(id TEXT PRIMARY KEY, quote_id TEXT REFERENCES quote(id));
        INSERT INTO opty VALUES ('O1', 'fleet'), ('O2', 'depots');
        INSERT INTO opty_emp VALUES ('O1', 'E1'), ('O2', 'E2');
        INSERT INTO quote VALUES ('Q1', 'O1', 'E9'), ('Q2', 'O2', 'E9'), ('Q3', NULL, 'E9');
        INSERT INTO item VALUES ('I1', 'Q1'), ('I2', 'Q2'), ('I3', 'Q3');";

    /// item -> quote -> opportunity, with the mappings in the pair or the set form.
    fn chain_model(pair: bool) -> String {
        let map = |pair_sql: &str, set_sql: &str| {
            if pair {
                format!("sql = \"{pair_sql}\"")
            } else {
                format!("set_sql = \"{set_sql}\"")
            }
        };
        format!(
            r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = {{ visibility = "limited" }}
opty_emp = {{ visibility = "limited" }}
quote = {{ visibility = "limited" }}
item = {{ visibility = "limited" }}
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
[[object]]
name = "quote"
primary_table = "quote"
[[object.rule]]
object = "Opportunity"
{}
[[object]]
name = "item"
primary_table = "item"
[[object.rule]]
object = "quote"
{}
"#,
            map(
                "SELECT opty_id FROM quote WHERE id = :primary_row_id",
                "SELECT id, opty_id FROM quote"
            ),
            map(
                "SELECT quote_id FROM item WHERE id = :primary_row_id",
                "SELECT id, quote_id FROM item"
            ),
        )
    }

    #[test]
    fn object_rules_chain_to_an_sql_rule() {
        let central = db(CHAIN_SCHEMA);
        for pair in [true, false] {
            for (e, o, q, i) in [("E1", "O1", "Q1", "I1"), ("E2", "O2", "Q2", "I2")] {
                let seen = project_toml(&central, &chain_model(pair), &employee(e));
                let what = format!("{e}, pair form: {pair}");
                assert_eq!(seen.instances["opportunity"], ids(&[o]), "{what}");
                assert_eq!(seen.instances["quote"], ids(&[q]), "{what}");
                assert_eq!(seen.instances["item"], ids(&[i]), "{what}");
                assert_eq!(seen.keys()["quote"], ids(&[q]), "{what}");
                assert_eq!(seen.keys()["item"], ids(&[i]), "{what}");
            }
            let nobody = project_toml(&central, &chain_model(pair), &employee("E3"));
            assert!(nobody.instances.values().all(BTreeSet::is_empty));
            assert!(nobody.rows.values().all(BTreeMap::is_empty));
        }
    }

    const CYCLE_SCHEMA: &str = "
        CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
                              PRIMARY KEY (opty_id, emp_id));
        CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id), owner TEXT);
        INSERT INTO opty VALUES ('O1', 'assigned'), ('O2', 'nobody'), ('O3', 'quoted');
        INSERT INTO opty_emp VALUES ('O1', 'E1');
        INSERT INTO quote VALUES
          ('Q1', 'O1', 'E9'),  -- with its opportunity
          ('Q2', 'O2', 'E9'), ('Q3', 'O2', 'E9'),  -- a cycle with no way in
          ('Q4', 'O3', 'E1'),  -- by its owner, bringing its opportunity ...
          ('Q5', 'O3', 'E9');  -- ... and that one's other quote";

    /// opportunity <-> quote: each visible with the other; `grounded` adds their SQL rules.
    fn cycle_model(grounded: bool) -> String {
        let (opty_rule, quote_rule) = if grounded {
            (
                "[[object.rule]]\nsql = \"SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee\"",
                "[[object.rule]]\nsql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
            )
        } else {
            ("", "")
        };
        format!(
            r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = {{ visibility = "limited" }}
opty_emp = {{ visibility = "limited" }}
quote = {{ visibility = "limited" }}
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
{opty_rule}
[[object.rule]]
object = "quote"
sql = "SELECT id FROM quote WHERE opty_id = :primary_row_id"
[[object]]
name = "quote"
primary_table = "quote"
{quote_rule}
[[object.rule]]
object = "opportunity"
set_sql = "SELECT id, opty_id FROM quote"
"#
        )
    }

    #[test]
    fn cycles_terminate_and_need_an_sql_rule_on_the_way_in() {
        let central = db(CYCLE_SCHEMA);
        let seen = project_toml(&central, &cycle_model(true), &employee("E1"));
        assert_eq!(seen.instances["opportunity"], ids(&["O1", "O3"]));
        assert_eq!(seen.instances["quote"], ids(&["Q1", "Q4", "Q5"]));
        assert_eq!(
            seen.keys()["quote"],
            ids(&["Q1", "Q4", "Q5"]),
            "not Q2, Q3: O2 and its quotes are reachable only round the cycle"
        );

        // With no SQL rule at all, `check` refuses the model ...
        let m = model(&cycle_model(false));
        let err = project(&central, &m, &employee("E1")).unwrap_err();
        assert!(
            matches!(&err, OracleError::Model { findings } if findings.iter().all(|f| matches!(f.kind, check::Kind::NeverVisible { .. }))),
            "{err}"
        );
        // ... and evaluated anyway, the cycle terminates with nothing visible.
        let seen = evaluate(&central, &m, &employee("E1")).unwrap();
        assert!(seen.instances.values().all(BTreeSet::is_empty));
        assert!(seen.rows.values().all(BTreeMap::is_empty));
    }

    #[test]
    fn related_objects_travel_with_a_visible_instance() {
        let central = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
            CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
                                  PRIMARY KEY (opty_id, emp_id));
            CREATE TABLE doc(id TEXT PRIMARY KEY, opty_id TEXT, public INTEGER);
            CREATE TABLE page(id TEXT PRIMARY KEY, doc_id TEXT REFERENCES doc(id));
            INSERT INTO opty VALUES ('O1', 'fleet'), ('O2', 'depots');
            INSERT INTO opty_emp VALUES ('O1', 'E1'), ('O2', 'E2');
            INSERT INTO doc VALUES ('D1', 'O1', 0), ('D2', 'O2', 0), ('D3', 'O2', 1);
            INSERT INTO page VALUES ('P1', 'D1'), ('P2', 'D2'), ('P3', 'D3');");
        // Neither doc nor page has an object rule back: they are visible by their own rules
        // or by travelling with a visible instance (transitively: opportunity -> doc -> page).
        let toml = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = { visibility = "limited" }
opty_emp = { visibility = "limited" }
doc = { visibility = "limited" }
page = { visibility = "limited" }
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
[[object.related]]
object = "doc"
sql = "SELECT id FROM doc WHERE opty_id = :primary_row_id"
[[object]]
name = "doc"
primary_table = "doc"
[[object.rule]]
sql = "SELECT 'X' FROM doc WHERE id = :primary_row_id AND public = 1"
[[object.related]]
object = "page"
set_sql = "SELECT doc_id, id FROM page"
[[object]]
name = "page"
primary_table = "page"
[[object.rule]]
sql = "SELECT 'X' FROM page WHERE id = :primary_row_id AND 0"
"#;
        let e1 = project_toml(&central, toml, &employee("E1"));
        assert_eq!(
            e1.instances["doc"],
            ids(&["D1", "D3"]),
            "D1 related, D3 public"
        );
        assert_eq!(e1.instances["page"], ids(&["P1", "P3"]));
        assert_eq!(e1.keys()["page"], ids(&["P1", "P3"]));
        let e2 = project_toml(&central, toml, &employee("E2"));
        assert_eq!(e2.instances["doc"], ids(&["D2", "D3"]));
        assert_eq!(e2.instances["page"], ids(&["P2", "P3"]));
        // Related does not run backwards: a visible doc does not bring its opportunity.
        let e3 = project_toml(&central, toml, &employee("E3"));
        assert_eq!(e3.instances["opportunity"], ids(&[]));
        assert_eq!(e3.instances["doc"], ids(&["D3"]));
    }

    #[test]
    fn a_member_row_with_several_paths_belongs_to_every_instance_they_reach() {
        let central = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
            CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
                                  PRIMARY KEY (opty_id, emp_id));
            CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT);
            CREATE TABLE activity(id TEXT PRIMARY KEY, opty_id TEXT, quote_id TEXT);
            INSERT INTO opty VALUES ('O1', 'fleet'), ('O2', 'depots'), (NULL, 'keyless');
            INSERT INTO opty_emp VALUES ('O1', 'E1'), ('O2', 'E2');
            INSERT INTO quote VALUES ('Q1', 'O1'), ('Q2', NULL);
            INSERT INTO activity VALUES
              ('ACT1', 'O1', NULL),   -- directly
              ('ACT2', NULL, 'Q1'),   -- through its quote
              ('ACT3', 'O2', 'Q1'),   -- both ways, to two instances
              ('ACT4', NULL, NULL),   -- nowhere
              ('ACT5', 'O2', NULL),
              ('ACT6', NULL, 'Q2'),   -- to a quote of no opportunity
              ('ACT7', 'O9', 'Q9');   -- to rows that do not exist");
        let toml = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = { visibility = "limited" }
opty_emp = { visibility = "limited" }
quote = { visibility = "enterprise" }
activity = { visibility = "limited" }
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
[[object.member]]
table = "activity"
paths = [
  ["activity.opty_id -> opty.id"],
  ["activity.quote_id -> quote.id", "quote.opty_id -> opty.id"],
]
[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
[[object.rule]]
set_sql = "SELECT id, node_id FROM opty, berth_node WHERE name = 'keyless'"
"#;
        let e1 = project_toml(&central, toml, &employee("E1"));
        assert_eq!(
            e1.instances["opportunity"],
            ids(&["O1"]),
            "a NULL key is no instance, even where a rule names it"
        );
        assert_eq!(e1.keys()["opty"], ids(&["O1"]));
        assert_eq!(e1.keys()["activity"], ids(&["ACT1", "ACT2", "ACT3"]));
        assert_eq!(e1.keys()["quote"], ids(&["Q1", "Q2"]), "enterprise");
        let e2 = project_toml(&central, toml, &employee("E2"));
        assert_eq!(e2.keys()["activity"], ids(&["ACT3", "ACT5"]));
    }

    #[test]
    fn enterprise_tables_go_whole_central_tables_never_and_keys_are_wire_json() {
        let central = db("
            CREATE TABLE emp(id TEXT PRIMARY KEY, name TEXT);
            CREATE TABLE pay(emp_id TEXT PRIMARY KEY REFERENCES emp(id), rate REAL);
            CREATE TABLE badge(code BLOB PRIMARY KEY, emp_id TEXT, issued INTEGER);
            CREATE TABLE skill(emp_id TEXT, skill TEXT, level REAL, PRIMARY KEY (skill, emp_id));
            INSERT INTO emp VALUES ('E1', 'Keith'), ('E2', 'Carl');
            INSERT INTO pay VALUES ('E1', 0.06), ('E2', 0.06);
            INSERT INTO badge VALUES (x'00ff', 'E1', 2025);
            INSERT INTO skill VALUES ('E1', 'sql', 2.5), ('E2', 'sql', NULL);");
        let m = model(
            r#"version = 1
[tables]
emp = { visibility = "enterprise" }
pay = { visibility = "central" }
badge = { visibility = "enterprise" }
skill = { visibility = "enterprise" }
"#,
        );
        let seen = project(&central, &m, &Node::new("anyone")).unwrap();
        let keys = seen.keys();
        assert_eq!(keys["emp"], ids(&["E1", "E2"]));
        assert_eq!(keys["pay"], ids(&[]), "central: present, empty");
        assert_eq!(keys["badge"], [r#"[["b","00FF"]]"#.to_string()].into());
        assert_eq!(
            keys["skill"],
            [r#"["sql","E1"]"#.to_string(), r#"["sql","E2"]"#.to_string()].into(),
            "composite keys in key order, not column order"
        );
        assert_eq!(
            seen.rows["badge"][r#"[["b","00FF"]]"#],
            Row::from([
                ("code".to_string(), serde_json::json!(["b", "00FF"])),
                ("emp_id".to_string(), serde_json::json!("E1")),
                ("issued".to_string(), serde_json::json!(2025)),
            ])
        );
        assert!(seen.instances.is_empty());

        // A replica holding exactly that reads back equal; one with a central row does not.
        let replica = db("
            CREATE TABLE emp(id TEXT PRIMARY KEY, name TEXT);
            CREATE TABLE badge(code BLOB PRIMARY KEY, emp_id TEXT, issued INTEGER);
            CREATE TABLE skill(emp_id TEXT, skill TEXT, level REAL, PRIMARY KEY (skill, emp_id));
            INSERT INTO emp VALUES ('E1', 'Keith'), ('E2', 'Carl');
            INSERT INTO badge VALUES (x'00ff', 'E1', 2025);
            INSERT INTO skill VALUES ('E1', 'sql', 2.5), ('E2', 'sql', NULL);");
        assert_eq!(replica_rows(&replica, &m).unwrap(), seen.rows);
        replica
            .execute_batch("UPDATE skill SET level = 3 WHERE emp_id = 'E1'")
            .unwrap();
        assert_ne!(
            replica_rows(&replica, &m).unwrap(),
            seen.rows,
            "values count"
        );
        replica
            .execute_batch(
                "UPDATE skill SET level = 2.5 WHERE emp_id = 'E1';
                 CREATE TABLE pay(emp_id TEXT PRIMARY KEY, rate REAL);",
            )
            .unwrap();
        assert_eq!(replica_rows(&replica, &m).unwrap(), seen.rows);
        replica
            .execute_batch("INSERT INTO pay VALUES ('E1', 0.06)")
            .unwrap();
        assert_ne!(replica_rows(&replica, &m).unwrap(), seen.rows);
    }

    #[test]
    fn central_is_left_as_it_was() {
        let central = db(&format!("{OPTY_SCHEMA}{NODE_RELATIONS_DDL}"));
        central
            .execute_batch(
                "INSERT INTO berth_node VALUES ('other');
                 INSERT INTO berth_node_attr VALUES ('other', 'employee', 'E2');",
            )
            .unwrap();
        let toml = opty_model(
            "[[object.rule]]\nset_sql = \"SELECT oe.opty_id, na.node_id FROM opty_emp oe JOIN berth_node_attr na ON na.name = 'employee' AND na.value = oe.emp_id\"",
        );
        let seen = project_toml(&central, &toml, &employee("E1"));
        assert_eq!(seen.instances["opportunity"], ids(&["O1"]));
        let nodes: Vec<(String, String)> = central
            .prepare("SELECT node_id, value FROM berth_node_attr")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(nodes, [("other".to_string(), "E2".to_string())]);
        assert!(central.is_autocommit(), "no transaction left open");

        // Without the relations beforehand, none are left behind.
        let bare = db(OPTY_SCHEMA);
        project_toml(&bare, &toml, &employee("E1"));
        let temp: i64 = bare
            .query_row("SELECT count(*) FROM temp.sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(temp, 0);
    }

    #[test]
    fn a_model_that_does_not_fit_the_schema_is_refused() {
        let central = db(OPTY_SCHEMA);
        let toml = opty_model("[[object.rule]]\nsql = \"SELECT 'X' FROM nowhere\"");
        let err = project(&central, &model(&toml), &employee("E1")).unwrap_err();
        assert!(
            matches!(&err, OracleError::Model { findings } if !findings.is_empty()),
            "{err}"
        );
        assert!(err.to_string().contains("nowhere"), "{err}");
    }

    const SALES_SCHEMA: &str = include_str!("../../../samples/sales/schema.sql");
    const SALES_DATA: &str = include_str!("../../../samples/sales/data.sql");
    const SALES_MODEL: &str = include_str!("../../../samples/sales/docking.toml");

    /// What the comments of `samples/sales/data.sql` say each employee's node sees.
    #[test]
    fn the_sales_sample_nodes_see_what_data_sql_says() {
        let central = db(&format!("{SALES_SCHEMA}{SALES_DATA}"));
        let m = model(SALES_MODEL);
        let see = |e: &str| project(&central, &m, &employee(e)).unwrap();
        let pairs = |list: &[(&str, &str)]| -> BTreeSet<String> {
            list.iter()
                .map(|(a, b)| key_text(&[Json::from(*a), Json::from(*b)]))
                .collect()
        };
        let everyone = |seen: &Projection| {
            let keys = seen.keys();
            assert_eq!(keys["employee"], ids(&["E1", "E2", "E3", "E4", "E5"]));
            assert_eq!(keys["position"].len(), 5);
            assert_eq!(keys["emp_postn"].len(), 6);
            assert_eq!(keys["product"], ids(&["P1", "P2", "P3", "P4", "P5"]));
            assert_eq!(keys["commission"], ids(&[]), "no node gets commission");
        };
        let instances = |seen: &Projection, a: &[&str], o: &[&str], q: &[&str]| {
            assert_eq!(seen.instances["account"], ids(a));
            assert_eq!(seen.instances["opportunity"], ids(o));
            assert_eq!(seen.instances["quote"], ids(q));
            assert_eq!(seen.instances.len(), 3);
        };

        // E1 (P-NORTH): accounts A1, A3 by position and A5 through O4; opportunities O1, O4
        // (assigned); quotes Q1, Q4. Not O3: seeing account A3 does not give its
        // opportunities.
        let e1 = see("E1");
        everyone(&e1);
        instances(&e1, &["A1", "A3", "A5"], &["O1", "O4"], &["Q1", "Q4"]);
        let k = e1.keys();
        assert_eq!(k["account"], ids(&["A1", "A3", "A5"]));
        assert_eq!(
            k["acct_postn"],
            pairs(&[("A1", "P-NORTH"), ("A3", "P-NORTH"), ("A5", "P-KEY")])
        );
        assert_eq!(k["contact"], ids(&["C1", "C2", "C4", "C6"]));
        assert_eq!(k["opty"], ids(&["O1", "O4"]));
        assert_eq!(
            k["opty_emp"],
            pairs(&[("O1", "E1"), ("O4", "E4"), ("O4", "E1")])
        );
        assert_eq!(k["opty_prod"], ids(&["OP1", "OP2", "OP6", "OP7"]));
        assert_eq!(k["quote"], ids(&["Q1", "Q4"]));
        assert_eq!(k["quote_item"], ids(&["QI1", "QI2", "QI6", "QI7"]));
        // ACT3 is on quote Q3, which E1 does not see, but also on account A3, which E1 does:
        // activity is a member of both objects, and one visible instance is enough.
        assert_eq!(k["activity"], ids(&["ACT1", "ACT2", "ACT3", "ACT5"]));
        assert_eq!(
            e1.rows["opty"][&key_text(&[Json::from("O1")])]["name"],
            Json::from("Fleet renewal"),
            "rows carry central's values"
        );

        // E2 (P-SOUTH): accounts A2, A4; opportunity O2; quote Q2. Not O5 (on A4, unassigned).
        let e2 = see("E2");
        everyone(&e2);
        instances(&e2, &["A2", "A4"], &["O2"], &["Q2"]);
        let k = e2.keys();
        assert_eq!(k["contact"], ids(&["C3", "C5"]));
        assert_eq!(k["opty_prod"], ids(&["OP3"]));
        assert_eq!(k["quote_item"], ids(&["QI3"]));
        assert_eq!(k["activity"], ids(&["ACT4"]));

        // E3 (P-PRICING) owns quote Q3, which brings opportunity O3 and account A3.
        let e3 = see("E3");
        everyone(&e3);
        instances(&e3, &["A3"], &["O3"], &["Q3"]);
        let k = e3.keys();
        assert_eq!(k["account"], ids(&["A3"]));
        assert_eq!(k["acct_postn"], pairs(&[("A3", "P-NORTH")]));
        assert_eq!(k["contact"], ids(&["C4"]));
        assert_eq!(k["opty"], ids(&["O3"]));
        assert_eq!(k["opty_emp"], pairs(&[]));
        assert_eq!(k["opty_prod"], ids(&["OP4", "OP5"]));
        assert_eq!(k["quote_item"], ids(&["QI4", "QI5"]));
        assert_eq!(k["activity"], ids(&["ACT3"]));

        // E4 (P-NORTH, P-KEY): accounts A1, A3, A5; opportunity O4; quote Q4.
        let e4 = see("E4");
        everyone(&e4);
        instances(&e4, &["A1", "A3", "A5"], &["O4"], &["Q4"]);
        let k = e4.keys();
        assert_eq!(k["opty_prod"], ids(&["OP6", "OP7"]));
        assert_eq!(k["activity"], ids(&["ACT1", "ACT2", "ACT3", "ACT5"]));

        // E5 (P-MGR): no account position, no assignment: nothing limited.
        let e5 = see("E5");
        everyone(&e5);
        instances(&e5, &[], &[], &[]);
        for (table, spec) in &m.tables {
            if spec.visibility != Visibility::Enterprise {
                assert!(e5.rows[table].is_empty(), "E5 holds rows of {table}");
            }
        }

        // A node standing for no employee sees the enterprise tables only.
        assert_eq!(
            project(&central, &m, &Node::new("kiosk")).unwrap().rows,
            e5.rows
        );
    }

    #[test]
    fn differences_name_what_a_node_and_centrals_router_state_get_wrong() {
        let m = model(&opty_model(
            "[[object.rule]]\nsql = \"SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee\"",
        ));
        let central = db(&format!(
            "{OPTY_SCHEMA}
             CREATE TABLE berth_instances(node TEXT, obj TEXT, id TEXT);
             CREATE TABLE berth_node_rows(node TEXT, tbl TEXT, pk TEXT);
             INSERT INTO berth_instances VALUES ('n-E1', 'opportunity', '[\"O1\"]');
             INSERT INTO berth_node_rows VALUES ('n-E1', 'opty', '[\"O1\"]'),
                                                ('n-E1', 'opty_emp', '[\"O1\",\"E1\"]');"
        ));
        let replica = db(&format!(
            "{OPTY_SCHEMA} DELETE FROM opty WHERE id = 'O3'; DELETE FROM opty_emp WHERE opty_id = 'O2';
             DELETE FROM opty WHERE id = 'O2';"
        ));
        let e1 = employee("E1");
        assert_eq!(differences(&central, &m, &e1, &replica).unwrap(), vec![]);
        // The replica: a row too many, a value changed; central: an instance forgotten.
        replica
            .execute_batch("INSERT INTO opty VALUES ('O9', 'stray'); UPDATE opty SET name = 'x' WHERE id = 'O1';")
            .unwrap();
        central
            .execute_batch("DELETE FROM berth_instances")
            .unwrap();
        let d = differences(&central, &m, &e1, &replica).unwrap();
        assert_eq!(
            d,
            vec![
                Difference::Instances {
                    object: "opportunity".into(),
                    held: BTreeSet::new(),
                    want: ids(&["O1"]),
                },
                Difference::Table {
                    table: "opty".into(),
                    extra: ids(&["O9"]),
                    missing: BTreeSet::new(),
                    changed: ids(&["O1"]),
                },
            ]
        );
        assert!(d[1].to_string().contains("O9"), "{}", d[1]);
    }

    /// The paths of member `table` of the model's only object, as the oracle finds them.
    fn paths_of(central: &Connection, toml: &str, table: &str) -> Vec<String> {
        let m = model(toml);
        let o = &m.objects[0];
        let ways = Ways::find(central, &m).unwrap();
        let found = ways.objects[0]
            .members
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(table))
            .and_then(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("{table} is a member of {} with paths", o.name));
        found.iter().map(Path::to_string).collect()
    }

    /// grp <- part (grp_id, n) <- note: a note reaches its group only through its part.
    const COMPOSITE_SCHEMA: &str = "
        PRAGMA foreign_keys = OFF; -- dangling ids are the point
        CREATE TABLE grp(id TEXT PRIMARY KEY, owner TEXT);
        CREATE TABLE part(grp_id TEXT REFERENCES grp, n INTEGER, PRIMARY KEY (grp_id, n));
        CREATE TABLE note(id INTEGER PRIMARY KEY, g TEXT, k INTEGER,
                          FOREIGN KEY (g, k) REFERENCES part);
        INSERT INTO grp VALUES ('G1', 'E1'), ('G2', 'E2');
        INSERT INTO part VALUES ('G1', 1), ('G1', 2), ('G2', 1);
        INSERT INTO note VALUES
          (1, 'G1', 1), (2, 'G1', 2), (3, 'G2', 1),
          (4, 'G1', 9),   -- names no part, though its first column names G1
          (5, 'G9', 1),   -- names no part and no group
          (6, 'G1', NULL);";

    const COMPOSITE_MODEL: &str = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
grp = { visibility = "limited" }
part = { visibility = "limited" }
note = { visibility = "limited" }
[[object]]
name = "group"
primary_table = "grp"
[[object.member]]
table = "part"
[[object.member]]
table = "note"
[[object.rule]]
sql = "SELECT 'X' FROM grp WHERE id = :primary_row_id AND owner = :attr_employee"
"#;

    #[test]
    fn a_composite_foreign_key_is_one_join_on_all_its_columns() {
        let central = db(COMPOSITE_SCHEMA);
        assert_eq!(
            paths_of(&central, COMPOSITE_MODEL, "note"),
            ["[note.(g, k) -> part.(grp_id, n), part.grp_id -> grp.id]"],
            "parent columns left implicit are the parent's key, in key order"
        );
        assert_eq!(
            paths_of(&central, COMPOSITE_MODEL, "part"),
            ["[part.grp_id -> grp.id]"]
        );
        let notes = |e: &str| -> BTreeSet<String> {
            let seen = project_toml(&central, COMPOSITE_MODEL, &employee(e));
            seen.rows["note"]
                .values()
                .map(|r| r["id"].to_string())
                .collect()
        };
        assert_eq!(
            notes("E1"),
            BTreeSet::from(["1".to_string(), "2".to_string()]),
            "not 4 (dangling: both columns must match) nor 6 (NULL matches nothing)"
        );
        assert_eq!(notes("E2"), BTreeSet::from(["3".to_string()]));
    }

    const TWO_WAYS_SCHEMA: &str = "
        PRAGMA foreign_keys = OFF; -- dangling ids are the point
        CREATE TABLE opty(id TEXT PRIMARY KEY, owner TEXT);
        CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id));
        CREATE TABLE item(id TEXT PRIMARY KEY, quote_id TEXT REFERENCES quote(id),
                          opty_id TEXT REFERENCES opty(id));
        INSERT INTO opty VALUES ('O1', 'E1'), ('O2', 'E2');
        INSERT INTO quote VALUES ('Q1', 'O2'), ('Q2', 'O9');
        INSERT INTO item VALUES ('I1', 'Q1', 'O1'), ('I2', NULL, 'O1'), ('I3', 'Q1', NULL),
                                ('I4', 'Q2', NULL), ('I5', 'Q9', 'O9');";

    fn two_ways_model(item_paths: &str) -> String {
        format!(
            r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = {{ visibility = "limited" }}
quote = {{ visibility = "limited" }}
item = {{ visibility = "limited" }}
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "quote"
[[object.member]]
table = "item"
{item_paths}
[[object.rule]]
sql = "SELECT 'X' FROM opty WHERE id = :primary_row_id AND owner = :attr_employee"
"#
        )
    }

    #[test]
    fn two_foreign_key_paths_are_refused_by_project_and_unioned_when_declared() {
        let central = db(TWO_WAYS_SCHEMA);
        let undeclared = two_ways_model("");
        assert_eq!(
            paths_of(&central, &undeclared, "item"),
            [
                "[item.opty_id -> opty.id]",
                "[item.quote_id -> quote.id, quote.opty_id -> opty.id]"
            ],
            "both chains through member tables are found"
        );
        let err = project(&central, &model(&undeclared), &employee("E1")).unwrap_err();
        assert!(
            matches!(&err, OracleError::Model { findings }
                if findings.iter().any(|f| matches!(f.kind, check::Kind::AmbiguousPath { .. }))),
            "{err}"
        );
        let items = |seen: &Projection| seen.keys()["item"].clone();
        // Evaluated regardless, the two are unioned, as the seed's GeneratePrimaryIdSQL does.
        let e1 = evaluate(&central, &model(&undeclared), &employee("E1")).unwrap();
        assert_eq!(items(&e1), ids(&["I1", "I2"]));
        let e2 = evaluate(&central, &model(&undeclared), &employee("E2")).unwrap();
        assert_eq!(
            items(&e2),
            ids(&["I1", "I3"]),
            "I1 by both ways, to two instances"
        );
        // Declared, they are accepted and give the same.
        let declared = two_ways_model(
            r#"paths = [["item.opty_id -> opty.id"], ["item.quote_id -> quote.id", "quote.opty_id -> opty.id"]]"#,
        );
        assert_eq!(
            items(&project_toml(&central, &declared, &employee("E1"))),
            ids(&["I1", "I2"])
        );
        assert_eq!(
            items(&project_toml(&central, &declared, &employee("E2"))),
            ids(&["I1", "I3"])
        );
        // One declared: only that one counts.
        let one = two_ways_model(r#"paths = [["item.opty_id -> opty.id"]]"#);
        assert_eq!(
            items(&project_toml(&central, &one, &employee("E2"))),
            ids(&[])
        );
        // Dangling ids (Q2 names no opportunity, I5 names nothing) reach no instance, and
        // the rows are held by nobody.
        for e in ["E1", "E2", "E3"] {
            let seen = project_toml(&central, &declared, &employee(e));
            assert!(!seen.keys()["item"].contains(&key_text(&[Json::from("I4")])));
            assert!(!seen.keys()["item"].contains(&key_text(&[Json::from("I5")])));
            assert!(!seen.keys()["quote"].contains(&key_text(&[Json::from("Q2")])));
        }
    }

    #[test]
    fn foreign_keys_through_non_member_tables_or_round_a_loop_are_not_paths() {
        let central = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY, owner TEXT);
            CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id));
            CREATE TABLE item(id TEXT PRIMARY KEY, quote_id TEXT REFERENCES quote(id),
                              next_id TEXT REFERENCES item(id), peer_id TEXT REFERENCES peer(id));
            CREATE TABLE peer(id TEXT PRIMARY KEY, item_id TEXT REFERENCES item(id));");
        let toml = |members: &str| {
            format!(
                r#"version = 1
[tables]
opty = {{ visibility = "limited" }}
quote = {{ visibility = "enterprise" }}
item = {{ visibility = "limited" }}
peer = {{ visibility = "limited" }}
[[object]]
name = "opportunity"
primary_table = "opty"
{members}
[[object.rule]]
set_sql = "SELECT id, 'n' FROM opty"
"#
            )
        };
        // quote is no member: item has no path (check calls it NoPath) ...
        let bare = toml("[[object.member]]\ntable = \"item\"\n[[object.member]]\ntable = \"peer\"");
        assert!(paths_of(&central, &bare, "item").is_empty());
        assert!(
            paths_of(&central, &bare, "peer").is_empty(),
            "item <-> peer loops, never reaching opty"
        );
        // ... unless declared, through any table.
        let declared = toml(
            "[[object.member]]\ntable = \"item\"\npaths = [[\"item.quote_id -> quote.id\", \"quote.opty_id -> opty.id\"]]\n[[object.member]]\ntable = \"peer\"\npaths = [[\"peer.item_id -> item.id\", \"item.quote_id -> quote.id\", \"quote.opty_id -> opty.id\"]]",
        );
        assert_eq!(
            paths_of(&central, &declared, "item"),
            ["[item.quote_id -> quote.id, quote.opty_id -> opty.id]"]
        );
        assert_eq!(paths_of(&central, &declared, "peer").len(), 1);
    }

    #[test]
    fn a_member_without_foreign_keys_follows_its_declared_path_two_hops() {
        let central = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY, owner TEXT);
            CREATE TABLE quote(id TEXT PRIMARY KEY, opty_ref TEXT);
            CREATE TABLE item(id TEXT PRIMARY KEY, q TEXT);
            INSERT INTO opty VALUES ('O1', 'E1'), ('O2', 'E2');
            INSERT INTO quote VALUES ('Q1', 'O1'), ('Q2', 'O2'), ('Q3', 'O9');
            INSERT INTO item VALUES ('I1', 'Q1'), ('I2', 'Q2'), ('I3', 'Q3'), ('I4', 'Q9');");
        let toml = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
opty = { visibility = "limited" }
quote = { visibility = "enterprise" }
item = { visibility = "limited" }
[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "item"
paths = [["item.q -> quote.id", "quote.opty_ref -> opty.id"]]
[[object.rule]]
sql = "SELECT 'X' FROM opty WHERE id = :primary_row_id AND owner = :attr_employee"
"#;
        assert_eq!(
            paths_of(&central, toml, "item"),
            ["[item.q -> quote.id, quote.opty_ref -> opty.id]"],
            "as written"
        );
        assert_eq!(
            project_toml(&central, toml, &employee("E1")).keys()["item"],
            ids(&["I1"])
        );
        assert_eq!(
            project_toml(&central, toml, &employee("E2")).keys()["item"],
            ids(&["I2"])
        );
        let nobody = project_toml(&central, toml, &employee("E9"));
        assert!(nobody.keys()["item"].is_empty(), "I3 and I4 dangle");
    }
}
