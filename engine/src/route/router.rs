//! The router (seed 004, Figures 6, 7 and 8): central's update log, routed to every node at
//! once, incrementally.
//!
//! A routing pass takes the log entries after the nodes' routing checkpoints in bounded
//! batches. For each batch:
//!
//! 1. **Which instances a change can affect** (Figure 7's entry): a row change in a table on
//!    a member path of a docking object names, by the row's old and new values, the
//!    instances at the end of that path ([`Plan::dirty_from_row`]). Only members with
//!    `vis_event` (or tables that a mapping between objects reads) count, as the seed's
//!    VIS_EVENT_FLG says. A change to a table that a rule reads but that is on no member path
//!    (the account rule reads `emp_postn`) makes every instance of that object dirty.
//! 2. **Mappings between objects** (object rules and related objects) are kept as edges
//!    (`berth_edges`: this instance depends on that one). The edges touching a dirty
//!    instance are recomputed with the set form restricted to the dirty ids, so edges that
//!    disappeared are known too.
//! 3. **The region**: the dirty instances and everything that depends on them through the
//!    edges, transitively. Nothing outside it can change visibility. Inside it, visibility is
//!    recomputed for every node at once as the least fixpoint of the rules (cycles terminate):
//!    set-form SQL rules restricted to the region's ids answer `(id, node)` pairs for all
//!    nodes in one query; edges to instances outside the region take their support from the
//!    instance set (`berth_instances`, the seed's S_DOBJ_INST). The difference with the
//!    instance set is what each node gains and loses.
//! 4. **Rows**: each change goes to the nodes that hold the row and still may; a node that
//!    may now see a changed row gets it whole, one that no longer may has it removed.
//!    Instances gained bring all their member rows (download, Figure 8), instances lost take
//!    away the member rows no other visible instance covers; rows below a changed row on a
//!    member path (an activity under a quote that moved) are re-checked. `berth_node_rows`
//!    records exactly what each node holds, so deletes reach exactly the holders.
//!
//! A batch is cut every `batch` entries, also inside a merged node bundle, and its entries
//! are read from the log again in each of the steps that walk them (1, 4, and the rows
//! below), never held: what a batch keeps in memory is its holdings, so a node bundle of
//! millions of changes routes in bounded memory. The marker that closes node N's merge must
//! come before the removals and downloads N's own changes call for (SPEC 2.10), so a batch
//! that ends inside N's merge keeps N's rows to settle in `berth_route_later` (committed with
//! the batch), and the first batch that does not settles them ([`Batch::open`], SPEC 2.8).
//!
//! Bound parameters in the joins it generates are written `+?N`: with STAT4 (enabled in
//! the bundled SQLite), a join whose WHERE compares a column with a plain parameter is
//! re-prepared at every new binding, which cost half the routing time; the unary plus keeps
//! the plan (and the index) without that.
//!
//! The output is appended to each node's partial log; the checkpoints advance in the same
//! transaction (the caller's). [`Evaluation::PerPair`] answers rules one `(instance, node)`
//! pair at a time with their pair form and checks holders node by node: the seed's
//! algorithm, kept as the benchmark's baseline.

use super::check::{self, ResolvedMember, ResolvedObject, Severity};
use super::model::{
    DockingModel, NODE_RELATIONS_DDL, PARAM_ATTR_PREFIX, PARAM_NODE_ID, PARAM_PRIMARY_ROW_ID, Rule,
    RuleSql, Visibility,
};
use crate::change::{Change, Logged, Op};
use crate::error::{EngineError, Result};
use crate::merge::apply::{Catalog, read_row};
use crate::store::meta_keys;
use crate::store::{self, ident};
use crate::value::{Bind, Row, from_sql};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

mod links;
pub use links::{Gain, Probe};

/// An instance id: the key text of its primary row (`["O1"]`).
pub type Id = String;

/// How rules are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// Set forms for all nodes at once (pair forms where a rule has no set form).
    Set,
    /// The seed's algorithm: every rule and every holder check one `(instance, node)` pair
    /// at a time. Slow; the benchmark's baseline.
    PerPair,
}

/// Log entries routed per batch (bounds memory; the checkpoints move per batch).
pub const BATCH: i64 = crate::config::DEFAULT_BATCH as i64;

/// A mapping between two objects: an object rule of `dep` (visible if that `sup` instance is)
/// or a related object of `sup` (`dep` travels with it).
#[derive(Debug, Clone)]
struct Mapping {
    /// Stable name, the key of its edges in `berth_edges`.
    name: String,
    dep: usize,
    sup: usize,
    /// Set form, and whether its first column is the dependent's id.
    set: Option<String>,
    dep_first: bool,
    /// Pair form, and whether `:primary_row_id` is bound to the dependent's id.
    pair: Option<String>,
    pair_binds_dep: bool,
    /// Tables it reads (lowercase).
    reads: BTreeSet<String>,
    /// Every table it reads lies on a member path of `dep` or `sup`, so its pairs change only
    /// with a dirty instance at one end.
    anchored: bool,
    /// Nodes' writes may create its pairs to dependents they do not hold (SPEC 2.10).
    node_link: bool,
}

/// One docking object, ready for routing.
#[derive(Debug, Clone)]
struct Object {
    r: ResolvedObject,
    /// The SQL rules (object rules are mappings).
    rules: Vec<RuleSql>,
    /// Tables (lowercase) read by SQL rules but on no member path: a change there makes every
    /// instance dirty.
    whole_reads: BTreeSet<String>,
    /// Tables (lowercase) whose changes can change visibility through a member path.
    vis_tables: BTreeSet<String>,
}

/// A place on a member path: member `m`, path `p` (`None` for the primary table), hop `hop`
/// (0 is the member table; the last is the primary table).
#[derive(Debug, Clone, Copy)]
struct Hop {
    m: usize,
    p: Option<usize>,
    hop: usize,
}

/// The docking model resolved against central's schema, ready to route.
#[derive(Debug, Clone)]
pub struct Plan {
    objects: Vec<Object>,
    maps: Vec<Mapping>,
    visibility: BTreeMap<String, Visibility>,
    /// Table (lowercase) -> the objects and path places it appears at.
    hops: BTreeMap<String, Vec<(usize, Hop)>>,
    /// Tables (lowercase) a node's write can link through: on a member path, read by a
    /// mapping or by a rule (SPEC 2.10, "Links").
    link_tables: BTreeSet<String>,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The paths of member `m` as `joins` takes them: `None` alone for the primary table.
fn path_choices(m: &ResolvedMember) -> Vec<Option<usize>> {
    if m.paths.is_empty() {
        vec![None]
    } else {
        (0..m.paths.len()).map(Some).collect()
    }
}

fn joins(m: &ResolvedMember, p: Option<usize>) -> &[super::model::Join] {
    p.and_then(|p| m.paths.get(p))
        .map_or(&[][..], |path| &path.joins[..])
}

/// The value of column `c` of `row` (column names compare case-insensitively).
fn col<'a>(row: &'a Row, c: &str) -> Option<&'a Json> {
    row.get(c).or_else(|| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(c))
            .map(|(_, v)| v)
    })
}

fn id_of(v: &Json) -> Id {
    serde_json::to_string(&[v]).unwrap_or_default()
}

/// `id_of(&from_sql(v))`, written straight from the value.
fn id_text(v: ValueRef<'_>) -> Id {
    let mut out = Vec::new();
    crate::value::write_key(&mut out, [v]);
    String::from_utf8_lossy(&out).into_owned()
}

fn id_value(id: &str) -> Json {
    serde_json::from_str::<Vec<Json>>(id)
        .ok()
        .and_then(|v| v.into_iter().next())
        .unwrap_or(Json::Null)
}

/// `FROM t0 JOIN t1 ... JOIN t{upto}` along a member path.
fn path_from(m: &ResolvedMember, js: &[super::model::Join], upto: usize) -> String {
    check::join_chain(&m.table, 0, &js[..upto.min(js.len())])
}

/// A rule's or mapping's SQL as a statement or subquery body (no trailing `;`).
fn sql_body(sql: &str) -> &str {
    sql.trim().trim_end_matches(';')
}

/// A set-form query wrapped so that its first (`first`) or second column is restricted to
/// the ids in `temp.berth_route_ids` for object `?1`.
fn restricted(set: &str, first: bool) -> String {
    let body = sql_body(set);
    let c = if first { "a" } else { "b" };
    format!(
        "WITH berth_q(a, b) AS ({body}\n) SELECT a, b FROM berth_q WHERE {c} IN (SELECT id FROM temp.berth_route_ids WHERE obj = +?1)"
    )
}

impl Plan {
    /// Resolves `model` against central's schema; refuses a model with errors.
    pub fn new(conn: &Connection, model: &DockingModel) -> Result<Plan> {
        let (resolved, findings) = check::resolve(model, conn)?;
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.severity() == Severity::Error)
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(EngineError::Docking {
                path: "docking.toml".into(),
                findings: errors,
            });
        }
        let index: BTreeMap<String, usize> = resolved
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.clone(), i))
            .collect();
        let mut objects = Vec::new();
        let mut maps = Vec::new();
        for (oi, r) in resolved.objects.iter().enumerate() {
            let Some(o) = model.object(&r.name) else {
                continue;
            };
            let mut rules = Vec::new();
            for (ri, rule) in o.rules.iter().enumerate() {
                let reads = r.rule_reads.get(ri).cloned().unwrap_or_default();
                match rule {
                    Rule::Sql { sql, .. } => rules.push((sql.clone(), reads)),
                    Rule::Object {
                        object,
                        sql,
                        node_link,
                        ..
                    } => {
                        if let Some(&sup) = index.get(object) {
                            maps.push(Mapping {
                                name: format!("{}/rule/{}", r.name, ri + 1),
                                dep: oi,
                                sup,
                                set: sql.set.clone(),
                                dep_first: true,
                                pair: sql.pair.clone(),
                                pair_binds_dep: true,
                                reads: reads.iter().map(|t| lower(t)).collect(),
                                anchored: false,
                                node_link: *node_link,
                            });
                        }
                    }
                }
            }
            for (ri, rel) in o.related.iter().enumerate() {
                if let Some(&dep) = index.get(&rel.object) {
                    let reads = r.related_reads.get(ri).cloned().unwrap_or_default();
                    maps.push(Mapping {
                        name: format!("{}/related/{}", r.name, ri + 1),
                        dep,
                        sup: oi,
                        set: rel.sql.set.clone(),
                        dep_first: false,
                        pair: rel.sql.pair.clone(),
                        pair_binds_dep: false,
                        reads: reads.iter().map(|t| lower(t)).collect(),
                        anchored: false,
                        node_link: rel.node_link,
                    });
                }
            }
            let on_paths: BTreeSet<String> = path_tables(r);
            let mut whole_reads = BTreeSet::new();
            for (_, reads) in &rules {
                for t in reads {
                    if !on_paths.contains(&lower(t)) {
                        whole_reads.insert(lower(t));
                    }
                }
            }
            let mut vis_tables: BTreeSet<String> = BTreeSet::new();
            for m in r.members.iter().filter(|m| m.vis_event) {
                vis_tables.insert(lower(&m.table));
            }
            objects.push(Object {
                r: r.clone(),
                rules: rules.into_iter().map(|(s, _)| s).collect(),
                whole_reads,
                vis_tables,
            });
        }
        // A mapping is anchored when the tables it reads lie on member paths of its two
        // objects; those tables then change visibility of the objects at its ends.
        for m in &mut maps {
            let mut ends = path_tables(&objects[m.dep].r);
            ends.extend(path_tables(&objects[m.sup].r));
            m.anchored = m.set.is_some() && m.reads.iter().all(|t| ends.contains(t));
            for t in &m.reads {
                for end in [m.dep, m.sup] {
                    if path_tables(&objects[end].r).contains(t) {
                        objects[end].vis_tables.insert(t.clone());
                    }
                }
            }
        }
        let mut hops: BTreeMap<String, Vec<(usize, Hop)>> = BTreeMap::new();
        for (oi, o) in objects.iter().enumerate() {
            for (mi, m) in o.r.members.iter().enumerate() {
                let paths = path_choices(m);
                for p in paths {
                    let js = joins(m, p);
                    for hop in 0..=js.len() {
                        let table = if hop == 0 {
                            &m.table
                        } else {
                            &js[hop - 1].to_table
                        };
                        hops.entry(lower(table))
                            .or_default()
                            .push((oi, Hop { m: mi, p, hop }));
                    }
                }
            }
        }
        let link_tables = hops
            .keys()
            .cloned()
            .chain(maps.iter().flat_map(|m| m.reads.iter().cloned()))
            .chain(objects.iter().flat_map(|o| o.whole_reads.iter().cloned()))
            .collect();
        Ok(Plan {
            objects,
            maps,
            visibility: model
                .tables
                .iter()
                .map(|(k, v)| (lower(k), v.visibility))
                .collect(),
            hops,
            link_tables,
        })
    }

    /// A table's visibility (tables the model does not name are enterprise).
    pub fn visibility(&self, table: &str) -> Visibility {
        self.visibility
            .get(&lower(table))
            .copied()
            .unwrap_or(Visibility::Enterprise)
    }

    fn object_index(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.r.name == name)
    }

    /// The instance ids reached from `row` (of the table at `at`) along the rest of the path.
    fn ids_from_row(&self, conn: &Connection, oi: usize, at: Hop, row: &Row) -> Result<Vec<Id>> {
        let o = &self.objects[oi].r;
        let m = &o.members[at.m];
        let js = joins(m, at.p);
        if at.hop == js.len() {
            return Ok(match col(row, &o.primary_key) {
                Some(v) if !v.is_null() => vec![id_of(v)],
                _ => vec![],
            });
        }
        let j = &js[at.hop];
        let mut vals = Vec::new();
        for c in &j.from_columns {
            match col(row, c) {
                Some(v) if !v.is_null() => vals.push(v),
                _ => return Ok(vec![]),
            }
        }
        if at.hop + 1 == js.len()
            && j.to_columns.len() == 1
            && j.to_columns[0].eq_ignore_ascii_case(&o.primary_key)
        {
            return Ok(vec![id_of(vals[0])]);
        }
        // Follow the rest of the path through central's tables as they are now.
        let from = check::join_chain(&j.to_table, at.hop + 1, &js[at.hop + 1..]);
        let filter: Vec<String> = j
            .to_columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t{}.{} = +?{}", at.hop + 1, ident(c), i + 1))
            .collect();
        let sql = format!(
            "SELECT t{}.{} FROM {from} WHERE {}",
            js.len(),
            ident(&o.primary_key),
            filter.join(" AND ")
        );
        let mut st = conn.prepare_cached(&sql)?;
        let ids = st
            .query_map(params_from_iter(vals.iter().map(|v| Bind(v))), |r| {
                Ok(from_sql(r.get_ref(0)?))
            })?
            .collect::<rusqlite::Result<Vec<Json>>>()?;
        Ok(ids.iter().filter(|v| !v.is_null()).map(id_of).collect())
    }

    /// Keys of the member-table rows whose path runs through `row` (of the table at `at`,
    /// `at.hop >= 1`): the rows whose membership moves when `row` changes.
    fn rows_below(
        &self,
        conn: &Connection,
        oi: usize,
        at: Hop,
        row: &Row,
    ) -> Result<Vec<Vec<Json>>> {
        let m = &self.objects[oi].r.members[at.m];
        let js = joins(m, at.p);
        let Some(j) = at.hop.checked_sub(1).and_then(|h| js.get(h)) else {
            return Ok(vec![]);
        };
        let mut vals = Vec::new();
        for c in &j.to_columns {
            match col(row, c) {
                Some(v) if !v.is_null() => vals.push(v),
                _ => return Ok(vec![]),
            }
        }
        let from = path_from(m, js, at.hop - 1);
        let filter: Vec<String> = j
            .from_columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t{}.{} = +?{}", at.hop - 1, ident(c), i + 1))
            .collect();
        let keys: Vec<String> = m.key.iter().map(|k| format!("t0.{}", ident(k))).collect();
        let sql = format!(
            "SELECT {} FROM {from} WHERE {}",
            keys.join(", "),
            filter.join(" AND ")
        );
        let mut st = conn.prepare_cached(&sql)?;
        let n = m.key.len();
        let out = st
            .query_map(params_from_iter(vals.iter().map(|v| Bind(v))), |r| {
                (0..n).map(|i| Ok(from_sql(r.get_ref(i)?))).collect()
            })?
            .collect::<rusqlite::Result<Vec<Vec<Json>>>>()?;
        Ok(out)
    }

    /// Whether a change of a row at `at` (from `old` to `new`) can move the member rows
    /// below it on the path to another instance: it came or went, or changed a column the
    /// path joins on (into it or out of it).
    fn moves_below(&self, oi: usize, at: Hop, old: Option<&Row>, new: Option<&Row>) -> bool {
        let (Some(old), Some(new)) = (old, new) else {
            return true;
        };
        let m = &self.objects[oi].r.members[at.m];
        let js = joins(m, at.p);
        let into = js.get(at.hop.wrapping_sub(1)).map(|j| &j.to_columns);
        let out_of = js.get(at.hop).map(|j| &j.from_columns);
        into.into_iter()
            .chain(out_of)
            .flatten()
            .any(|c| match (col(old, c), col(new, c)) {
                (Some(a), Some(b)) => !crate::value::same(a, b),
                (None, None) => false,
                _ => true,
            })
    }

    /// The instances (object, id) a row of `table` with key `key` belongs to now.
    fn row_instances(
        &self,
        conn: &Connection,
        table: &str,
        key: &[Json],
    ) -> Result<Vec<(usize, Id)>> {
        let mut out = Vec::new();
        for (oi, o) in self.objects.iter().enumerate() {
            for m in
                o.r.members
                    .iter()
                    .filter(|m| m.table.eq_ignore_ascii_case(table))
            {
                if key.len() != m.key.len() {
                    continue;
                }
                let sql = m.primary_id_sql(&o.r.primary_table, &o.r.primary_key);
                let mut st = conn.prepare_cached(&sql)?;
                let ids = st
                    .query_map(params_from_iter(key.iter().map(Bind)), |r| {
                        Ok(from_sql(r.get_ref(0)?))
                    })?
                    .collect::<rusqlite::Result<Vec<Json>>>()?;
                out.extend(ids.iter().filter(|v| !v.is_null()).map(|v| (oi, id_of(v))));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether [`Plan::dirty_from_row`] reads the rows of a change of `table` or marks
    /// objects whole for it (when not, it does nothing with them).
    fn rows_matter(&self, table: &str) -> bool {
        let t = lower(table);
        self.objects.iter().any(|o| o.whole_reads.contains(&t))
            || self.hops.get(&t).is_some_and(|places| {
                places
                    .iter()
                    .any(|&(oi, _)| self.objects[oi].vis_tables.contains(&t))
            })
    }

    /// Instances a change of `table` from `old` to `new` can make visible or invisible
    /// (Figure 7's entry point), into `dirty`; `whole` collects objects all of whose
    /// instances are affected.
    fn dirty_from_row(
        &self,
        conn: &Connection,
        table: &str,
        rows: &[&Row],
        dirty: &mut [BTreeSet<Id>],
        whole: &mut [bool],
    ) -> Result<()> {
        let t = lower(table);
        for (oi, o) in self.objects.iter().enumerate() {
            if o.whole_reads.contains(&t) {
                whole[oi] = true;
            }
        }
        let Some(places) = self.hops.get(&t) else {
            return Ok(());
        };
        for &(oi, at) in places {
            if whole[oi] || !self.objects[oi].vis_tables.contains(&t) {
                continue;
            }
            for row in rows {
                dirty[oi].extend(self.ids_from_row(conn, oi, at, row)?);
            }
        }
        Ok(())
    }
}

/// The tables (lowercase) on any member path of `o`, its primary table included.
fn path_tables(o: &ResolvedObject) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(lower(&o.primary_table));
    for m in &o.members {
        out.insert(lower(&m.table));
        for p in &m.paths {
            for j in &p.joins {
                out.insert(lower(&j.to_table));
            }
        }
    }
    out
}

/// A node as one routing pass sees it.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Its name (`node_id` in rules).
    pub name: String,
    /// Its attributes.
    pub attrs: BTreeMap<String, String>,
    /// Its routing checkpoint: central's log is routed to it up to here.
    pub routed_pos: i64,
    /// The last position of its partial log.
    pub ppos: i64,
}

/// The active nodes (not revoked), in name order.
pub fn nodes(conn: &Connection) -> Result<Vec<NodeState>> {
    let mut st = conn.prepare_cached(
        "SELECT name, attrs, routed_pos, partial_pos FROM berth_peers
         WHERE role = 'node' AND revoked IS NULL ORDER BY name",
    )?;
    let out = st
        .query_map([], |r| {
            let attrs: String = r.get(1)?;
            Ok(NodeState {
                name: r.get(0)?,
                attrs: serde_json::from_str(&attrs).unwrap_or_default(),
                routed_pos: r.get(2)?,
                ppos: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(out)
}

/// Puts `nodes` into the TEMP relations set-form rules read node identity from, and makes
/// the router's scratch table.
fn identify(conn: &Connection, nodes: &[NodeState]) -> Result<()> {
    conn.execute_batch(NODE_RELATIONS_DDL)?;
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS berth_route_ids(obj INTEGER NOT NULL, id);
         CREATE INDEX IF NOT EXISTS temp.berth_route_ids_obj ON berth_route_ids(obj, id);
         CREATE TEMP TABLE IF NOT EXISTS berth_route_keys(obj INTEGER NOT NULL, id TEXT NOT NULL);
         CREATE INDEX IF NOT EXISTS temp.berth_route_keys_obj ON berth_route_keys(obj, id);
         DELETE FROM temp.berth_node; DELETE FROM temp.berth_node_attr;",
    )?;
    let mut n = conn.prepare_cached("INSERT INTO temp.berth_node(node_id) VALUES (?1)")?;
    let mut a = conn.prepare_cached(
        "INSERT INTO temp.berth_node_attr(node_id, name, value) VALUES (?1, ?2, ?3)",
    )?;
    for node in nodes {
        n.execute(params![node.name])?;
        for (k, v) in &node.attrs {
            a.execute(params![node.name, k, v])?;
        }
    }
    // Without statistics SQLite takes the node relations as small and drives set-form rules
    // from them: one index probe per node per instance. With them it starts from the
    // instances asked about.
    conn.execute_batch("ANALYZE temp.berth_node; ANALYZE temp.berth_node_attr;")?;
    Ok(())
}

/// Fills `temp.berth_route_ids` with `ids` per object.
fn load_ids(conn: &Connection, ids: &[BTreeSet<Id>]) -> Result<()> {
    conn.execute("DELETE FROM temp.berth_route_ids", [])?;
    let mut st =
        conn.prepare_cached("INSERT INTO temp.berth_route_ids(obj, id) VALUES (?1, ?2)")?;
    for (oi, set) in ids.iter().enumerate() {
        for id in set {
            st.execute(params![oi as i64, Bind(&id_value(id))])?;
        }
    }
    Ok(())
}

/// Fills `temp.berth_route_keys` with `ids` (key texts, as `berth_edges` holds them) per
/// object.
fn load_keys(conn: &Connection, ids: &[BTreeSet<Id>]) -> Result<()> {
    conn.execute("DELETE FROM temp.berth_route_keys", [])?;
    for (oi, set) in ids.iter().enumerate() {
        bulk_insert(
            conn,
            "INSERT INTO temp.berth_route_keys(obj, id) SELECT ?1, value FROM json_each(?2)",
            &[&(oi as i64)],
            set.iter(),
        )?;
    }
    Ok(())
}

/// Runs a pair-form statement for `id` (and `node`, for rules); returns its first column.
fn run_pair(
    conn: &Connection,
    sql: &str,
    id: &Json,
    node: Option<&NodeState>,
) -> Result<Vec<Json>> {
    let mut st = conn.prepare_cached(sql)?;
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i).unwrap_or_default().to_string();
        if name == PARAM_PRIMARY_ROW_ID {
            st.raw_bind_parameter(i, Bind(id))?;
        } else if name == PARAM_NODE_ID {
            st.raw_bind_parameter(i, node.map(|n| n.name.as_str()))?;
        } else if let Some(attr) = name.strip_prefix(PARAM_ATTR_PREFIX) {
            st.raw_bind_parameter(i, node.and_then(|n| n.attrs.get(attr)).map(String::as_str))?;
        }
    }
    let mut rows = st.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(from_sql(r.get_ref(0)?));
    }
    Ok(out)
}

/// The ids of every row of object `oi`'s primary table.
fn all_ids(conn: &Connection, o: &ResolvedObject) -> Result<BTreeSet<Id>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {} FROM {}",
        ident(&o.primary_key),
        ident(&o.primary_table)
    ))?;
    let ids = st
        .query_map([], |r| Ok(from_sql(r.get_ref(0)?)))?
        .collect::<rusqlite::Result<Vec<Json>>>()?;
    Ok(ids.iter().filter(|v| !v.is_null()).map(id_of).collect())
}

/// Mapping `mi`'s pairs (dep, sup) now: all of them, or those with a dependent in
/// `ids[dep]` or a support in `ids[sup]` (the ids are in `temp.berth_route_ids`).
fn mapping_pairs(
    conn: &Connection,
    plan: &Plan,
    mi: usize,
    ids: &[BTreeSet<Id>],
    all: bool,
) -> Result<BTreeSet<(Id, Id)>> {
    let m = &plan.maps[mi];
    let mut out = BTreeSet::new();
    let mut add = |a: Json, b: Json| {
        if a.is_null() || b.is_null() {
            return;
        }
        let (d, s) = if m.dep_first { (a, b) } else { (b, a) };
        out.insert((id_of(&d), id_of(&s)));
    };
    if let Some(set) = &m.set {
        let queries: Vec<(String, Option<usize>)> = if all {
            vec![(sql_body(set).to_string(), None)]
        } else {
            vec![
                (restricted(set, m.dep_first), Some(m.dep)),
                (restricted(set, !m.dep_first), Some(m.sup)),
            ]
        };
        for (sql, obj) in queries {
            if obj.is_some_and(|o| ids[o].is_empty()) {
                continue;
            }
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = match obj {
                Some(o) => st.query(params![o as i64])?,
                None => st.query([])?,
            };
            while let Some(r) = rows.next()? {
                add(from_sql(r.get_ref(0)?), from_sql(r.get_ref(1)?));
            }
        }
        return Ok(out);
    }
    let Some(pair) = &m.pair else {
        return Ok(out);
    };
    // Pair form: evaluated from the side it binds, for every instance of that side
    // unless only ids of that side are asked for.
    let bound = if m.pair_binds_dep { m.dep } else { m.sup };
    let other = if m.pair_binds_dep { m.sup } else { m.dep };
    let from: BTreeSet<Id> = if all || !ids[other].is_empty() {
        all_ids(conn, &plan.objects[bound].r)?
    } else {
        ids[bound].clone()
    };
    for id in &from {
        let v = id_value(id);
        // The pair form binds the dependent for object rules (`dep_first`) and the
        // support for related objects, so (bound, found) is in `add`'s order.
        for found in run_pair(conn, pair, &v, None)? {
            add(v.clone(), found);
        }
    }
    Ok(out)
}

/// Visibility of a region of instances: object -> id -> the nodes that see it.
type Seen = Vec<BTreeMap<Id, BTreeSet<String>>>;

struct Pass<'a> {
    conn: &'a Connection,
    plan: &'a Plan,
    nodes: &'a [NodeState],
    eval: Evaluation,
}

impl<'a> Pass<'a> {
    /// The node named `name`, if it takes part in this pass.
    fn node(&self, name: &str) -> Option<&'a NodeState> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    fn n_obj(&self) -> usize {
        self.plan.objects.len()
    }

    /// Edges of mapping `mi` touching the given dependent or supporting ids (all its edges
    /// when `all`).
    fn stored_edges(
        &self,
        mi: usize,
        deps: &BTreeSet<Id>,
        sups: &BTreeSet<Id>,
        all: bool,
    ) -> Result<BTreeSet<(Id, Id)>> {
        let name = &self.plan.maps[mi].name;
        let mut out = BTreeSet::new();
        if all {
            let mut st = self
                .conn
                .prepare_cached("SELECT dep_id, sup_id FROM berth_edges WHERE map = ?1")?;
            let rows = st.query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for r in rows {
                out.insert(r?);
            }
            return Ok(out);
        }
        let mut by_dep = self
            .conn
            .prepare_cached("SELECT sup_id FROM berth_edges WHERE map = ?1 AND dep_id = ?2")?;
        for d in deps {
            let rows = by_dep.query_map(params![name, d], |r| r.get::<_, String>(0))?;
            for s in rows {
                out.insert((d.clone(), s?));
            }
        }
        let mut by_sup = self
            .conn
            .prepare_cached("SELECT dep_id FROM berth_edges WHERE map = ?1 AND sup_id = ?2")?;
        for s in sups {
            let rows = by_sup.query_map(params![name, s], |r| r.get::<_, String>(0))?;
            for d in rows {
                out.insert((d?, s.clone()));
            }
        }
        Ok(out)
    }

    /// Recomputes the edges touching `dirty` (all edges of mappings in `full`), stores
    /// them, and returns the dependents whose edges changed.
    fn refresh_edges(&self, dirty: &[BTreeSet<Id>], full: &[bool]) -> Result<Vec<BTreeSet<Id>>> {
        let mut seeds = vec![BTreeSet::new(); self.n_obj()];
        if full.contains(&false) {
            load_ids(self.conn, dirty)?;
        }
        let mut del = self.conn.prepare_cached(
            "DELETE FROM berth_edges WHERE map = ?1 AND dep_id = ?2 AND sup_id = ?3",
        )?;
        let mut ins = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO berth_edges(map, dep_id, sup_id) VALUES (?1, ?2, ?3)",
        )?;
        for (mi, m) in self.plan.maps.iter().enumerate() {
            let all = full[mi];
            if !all && dirty[m.dep].is_empty() && dirty[m.sup].is_empty() {
                continue;
            }
            let old = self.stored_edges(mi, &dirty[m.dep], &dirty[m.sup], all)?;
            let new = mapping_pairs(self.conn, self.plan, mi, dirty, all)?;
            for (d, s) in old.difference(&new) {
                del.execute(params![m.name, d, s])?;
                seeds[m.dep].insert(d.clone());
            }
            for (d, s) in new.difference(&old) {
                ins.execute(params![m.name, d, s])?;
                seeds[m.dep].insert(d.clone());
            }
        }
        Ok(seeds)
    }

    /// Closes `region` under "depends on": everything whose visibility can follow it.
    fn close(&self, region: &mut [BTreeSet<Id>]) -> Result<()> {
        let mut frontier: Vec<BTreeSet<Id>> = region.to_vec();
        let mut st = self
            .conn
            .prepare_cached("SELECT dep_id FROM berth_edges WHERE map = ?1 AND sup_id = ?2")?;
        while frontier.iter().any(|f| !f.is_empty()) {
            let mut next = vec![BTreeSet::new(); self.n_obj()];
            for m in &self.plan.maps {
                for s in &frontier[m.sup] {
                    let rows = st.query_map(params![m.name, s], |r| r.get::<_, String>(0))?;
                    for d in rows {
                        let d = d?;
                        if region[m.dep].insert(d.clone()) {
                            next[m.dep].insert(d);
                        }
                    }
                }
            }
            frontier = next;
        }
        Ok(())
    }

    /// Holders of an instance, from the instance set.
    fn holders(&self, oi: usize, id: &str) -> Result<BTreeSet<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT node FROM berth_instances WHERE obj = ?1 AND id = ?2")?;
        let rows = st.query_map(params![self.plan.objects[oi].r.name, id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Visibility of every instance in `region` for every node: the least fixpoint of the
    /// rules, with support from outside the region taken from the instance set.
    fn evaluate(&self, region: &[BTreeSet<Id>]) -> Result<Seen> {
        let conn = self.conn;
        load_ids(conn, region)?;
        let known: HashSet<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let mut seen: Seen = vec![BTreeMap::new(); self.n_obj()];
        let mut exists: Vec<BTreeSet<Id>> = vec![BTreeSet::new(); self.n_obj()];
        for (oi, o) in self.plan.objects.iter().enumerate() {
            if region[oi].is_empty() {
                continue;
            }
            let mut st = conn.prepare_cached(&format!(
                "SELECT {k} FROM {t} WHERE {k} IN (SELECT id FROM temp.berth_route_ids WHERE obj = +?1)",
                k = ident(&o.r.primary_key),
                t = ident(&o.r.primary_table)
            ))?;
            let ids = st
                .query_map(params![oi as i64], |r| Ok(from_sql(r.get_ref(0)?)))?
                .collect::<rusqlite::Result<Vec<Json>>>()?;
            exists[oi] = ids.iter().map(id_of).collect();
        }
        let mut work: Vec<(usize, Id, String)> = Vec::new();
        let mark = |seen: &mut Seen,
                    work: &mut Vec<(usize, Id, String)>,
                    oi: usize,
                    id: &Id,
                    node: &str| {
            if seen[oi]
                .entry(id.clone())
                .or_default()
                .insert(node.to_string())
            {
                work.push((oi, id.clone(), node.to_string()));
            }
        };
        // SQL rules (Figure 7, steps 207-213).
        for (oi, o) in self.plan.objects.iter().enumerate() {
            if exists[oi].is_empty() {
                continue;
            }
            for rule in &o.rules {
                match (&rule.set, self.eval) {
                    (Some(set), Evaluation::Set) => {
                        let mut st = conn.prepare_cached(&restricted(set, true))?;
                        let mut rows = st.query(params![oi as i64])?;
                        while let Some(r) = rows.next()? {
                            let id = id_of(&from_sql(r.get_ref(0)?));
                            let node = from_sql(r.get_ref(1)?);
                            if let Some(node) = node.as_str()
                                && known.contains(node)
                                && exists[oi].contains(&id)
                            {
                                mark(&mut seen, &mut work, oi, &id, node);
                            }
                        }
                    }
                    _ => {
                        for id in &exists[oi] {
                            for node in self.rule_pairs(rule, id)? {
                                mark(&mut seen, &mut work, oi, id, &node);
                            }
                        }
                    }
                }
            }
        }
        // Object rules and related objects (Figure 7, steps 221-227): edges from the region
        // to outside it take their support from the instance set; inside, support spreads.
        let mut inside: HashMap<(usize, Id), Vec<(usize, Id)>> = HashMap::new();
        let mut by_dep =
            conn.prepare_cached("SELECT sup_id FROM berth_edges WHERE map = ?1 AND dep_id = ?2")?;
        for m in &self.plan.maps {
            for x in &exists[m.dep] {
                let sups = by_dep
                    .query_map(params![m.name, x], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
                for y in sups {
                    if region[m.sup].contains(&y) {
                        inside
                            .entry((m.sup, y))
                            .or_default()
                            .push((m.dep, x.clone()));
                    } else {
                        for node in self.holders(m.sup, &y)? {
                            if known.contains(node.as_str()) {
                                mark(&mut seen, &mut work, m.dep, x, &node);
                            }
                        }
                    }
                }
            }
        }
        while let Some((oi, id, node)) = work.pop() {
            if let Some(deps) = inside.get(&(oi, id)) {
                for (doi, did) in deps.clone() {
                    mark(&mut seen, &mut work, doi, &did, &node);
                }
            }
        }
        Ok(seen)
    }

    /// The first round of an evaluation over every instance: what the SQL rules make
    /// visible to the pass's nodes (object -> id -> nodes).
    fn rule_round(&self) -> Result<Seen> {
        let mut round: Seen = vec![BTreeMap::new(); self.n_obj()];
        self.rule_hits(|oi, id, node| {
            round[oi].entry(id).or_default().insert(node.to_string());
        })?;
        Ok(round)
    }

    /// Calls `f(object, id, node)` for every instance an SQL rule makes visible to one of the
    /// pass's nodes, evaluated over every instance.
    fn rule_hits(&self, mut f: impl FnMut(usize, Id, &str)) -> Result<()> {
        let conn = self.conn;
        let known: HashSet<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        for (oi, o) in self.plan.objects.iter().enumerate() {
            for rule in &o.rules {
                match (&rule.set, self.eval) {
                    (Some(set), Evaluation::Set) => {
                        let mut st = conn.prepare_cached(sql_body(set))?;
                        let mut rows = st.query([])?;
                        while let Some(r) = rows.next()? {
                            // Node names are valid UTF-8 text (`enroll::check_name`).
                            if let ValueRef::Text(t) = r.get_ref(1)?
                                && let Ok(node) = std::str::from_utf8(t)
                                && known.contains(node)
                            {
                                f(oi, id_text(r.get_ref(0)?), node);
                            }
                        }
                    }
                    _ => {
                        for id in &all_ids(conn, &o.r)? {
                            for node in self.rule_pairs(rule, id)? {
                                f(oi, id.clone(), &node);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// What the pass's one node sees, evaluated over every instance (enrollment), into
    /// `temp.berth_seen(obj, id)`. The same answer as [`Pass::evaluate_all`], computed by
    /// SQLite in rounds of set-based statements instead of key texts through Rust maps:
    /// each round follows every mapping's edges from what became visible in the last one
    /// (one join per mapping), and a candidate counts once it names a row of its primary
    /// table; only then does it spread.
    fn evaluate_one(&self) -> Result<()> {
        let conn = self.conn;
        let mut seeds: Vec<BTreeSet<Id>> = vec![BTreeSet::new(); self.n_obj()];
        self.rule_hits(|oi, id, _| {
            seeds[oi].insert(id);
        })?;
        load_keys(conn, &seeds)?;
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS berth_seen(obj INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (obj, id)) WITHOUT ROWID;
             CREATE TEMP TABLE IF NOT EXISTS berth_fresh(obj INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (obj, id)) WITHOUT ROWID;
             CREATE TEMP TABLE IF NOT EXISTS berth_reached(obj INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (obj, id)) WITHOUT ROWID;
             DELETE FROM temp.berth_seen; DELETE FROM temp.berth_fresh;",
        )?;
        // The id's value (as `load_ids` binds it, `id_value`) names a row of the primary
        // table of object `oi`. Object indexes and mapping names are written into the SQL:
        // bound, they would make SQLite re-plan at every binding (STAT4).
        let exists = |oi: usize, id: &str| {
            let o = &self.plan.objects[oi].r;
            format!(
                "EXISTS (SELECT 1 FROM {t} p WHERE p.{k} = json_extract({id}, '$[0]'))",
                t = ident(&o.primary_table),
                k = ident(&o.primary_key)
            )
        };
        for oi in 0..self.n_obj() {
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO temp.berth_fresh(obj, id)
                     SELECT s.obj, s.id FROM temp.berth_route_keys s WHERE s.obj = {oi} AND {}",
                    exists(oi, "s.id")
                ),
                [],
            )?;
        }
        loop {
            conn.execute_batch(
                "INSERT INTO temp.berth_seen(obj, id) SELECT obj, id FROM temp.berth_fresh;
                 DELETE FROM temp.berth_reached;",
            )?;
            for m in &self.plan.maps {
                conn.execute(
                    &format!(
                        "INSERT OR IGNORE INTO temp.berth_reached(obj, id)
                         SELECT {dep}, e.dep_id FROM temp.berth_fresh v
                          CROSS JOIN berth_edges e ON e.map = {name} AND e.sup_id = v.id
                          WHERE v.obj = {sup}",
                        dep = m.dep,
                        sup = m.sup,
                        name = store::literal(&m.name)
                    ),
                    [],
                )?;
            }
            conn.execute("DELETE FROM temp.berth_fresh", [])?;
            let mut grew = false;
            for oi in 0..self.n_obj() {
                grew |= conn.execute(
                    &format!(
                        "INSERT INTO temp.berth_fresh(obj, id)
                         SELECT r.obj, r.id FROM temp.berth_reached r
                          WHERE r.obj = {oi}
                            AND NOT EXISTS (SELECT 1 FROM temp.berth_seen x WHERE x.obj = {oi} AND x.id = r.id)
                            AND {}",
                        exists(oi, "r.id")
                    ),
                    [],
                )? > 0;
            }
            if !grew {
                return Ok(());
            }
        }
    }

    /// Visibility of every instance of every object for the pass's nodes (enrollment,
    /// resynchronisation): rules evaluated without restriction, then support spread along
    /// the edges from what is visible. Returns the ids of every instance too.
    fn evaluate_all(&self) -> Result<Seen> {
        let conn = self.conn;
        // Candidates per round: object -> id -> nodes. The SQL rules give the first round;
        // each round then follows the edges from what became visible in the last one.
        let mut round = self.rule_round()?;
        let mut seen: Seen = vec![BTreeMap::new(); self.n_obj()];
        let mut exists: HashMap<(usize, Id), bool> = HashMap::new();
        loop {
            // Ids that name no row of their primary table are no instance.
            self.check_exist(&round, &mut exists)?;
            let mut fresh: Seen = vec![BTreeMap::new(); self.n_obj()];
            for (oi, ids) in round.into_iter().enumerate() {
                for (id, nodes) in ids {
                    if !exists.get(&(oi, id.clone())).copied().unwrap_or(false) {
                        continue;
                    }
                    let have = seen[oi].entry(id.clone()).or_default();
                    for n in nodes {
                        if have.insert(n.clone()) {
                            fresh[oi].entry(id.clone()).or_default().insert(n);
                        }
                    }
                }
            }
            if fresh.iter().all(BTreeMap::is_empty) {
                return Ok(seen);
            }
            round = vec![BTreeMap::new(); self.n_obj()];
            let keys: Vec<BTreeSet<Id>> =
                fresh.iter().map(|m| m.keys().cloned().collect()).collect();
            load_keys(conn, &keys)?;
            for m in &self.plan.maps {
                if fresh[m.sup].is_empty() {
                    continue;
                }
                let mut st = conn.prepare_cached(
                    "SELECT e.sup_id, e.dep_id FROM temp.berth_route_keys k
                       JOIN berth_edges e ON e.map = ?2 AND e.sup_id = k.id
                      WHERE k.obj = +?1",
                )?;
                let mut rows = st.query(params![m.sup as i64, m.name])?;
                while let Some(r) = rows.next()? {
                    let (sup, dep): (String, String) = (r.get(0)?, r.get(1)?);
                    if let Some(nodes) = fresh[m.sup].get(&sup) {
                        round[m.dep]
                            .entry(dep)
                            .or_default()
                            .extend(nodes.iter().cloned());
                    }
                }
            }
        }
    }

    /// Finds out, in one query per object, which of the candidate ids not asked yet name a
    /// row of their primary table.
    fn check_exist(
        &self,
        candidates: &Seen,
        exists: &mut HashMap<(usize, Id), bool>,
    ) -> Result<()> {
        let ask: Vec<BTreeSet<Id>> = candidates
            .iter()
            .enumerate()
            .map(|(oi, ids)| {
                ids.keys()
                    .filter(|id| !exists.contains_key(&(oi, (*id).clone())))
                    .cloned()
                    .collect()
            })
            .collect();
        if ask.iter().all(BTreeSet::is_empty) {
            return Ok(());
        }
        load_ids(self.conn, &ask)?;
        for (oi, o) in self.plan.objects.iter().enumerate() {
            if ask[oi].is_empty() {
                continue;
            }
            let mut st = self.conn.prepare_cached(&format!(
                "SELECT {k} FROM {t} WHERE {k} IN (SELECT id FROM temp.berth_route_ids WHERE obj = +?1)",
                k = ident(&o.r.primary_key),
                t = ident(&o.r.primary_table)
            ))?;
            let found: HashSet<Id> = st
                .query_map(params![oi as i64], |r| Ok(id_of(&from_sql(r.get_ref(0)?))))?
                .collect::<rusqlite::Result<_>>()?;
            for id in &ask[oi] {
                exists.insert((oi, id.clone()), found.contains(id));
            }
        }
        Ok(())
    }

    /// The nodes a rule matches instance `id` for, one pair at a time (rules without a set
    /// form, and the per-pair baseline).
    fn rule_pairs(&self, rule: &RuleSql, id: &Id) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let v = id_value(id);
        for node in self.nodes {
            let hit = match (&rule.pair, &rule.set) {
                (Some(pair), _) => !run_pair(self.conn, pair, &v, Some(node))?.is_empty(),
                (None, Some(set)) => self.set_pair(set, &v, &node.name)?,
                (None, None) => false,
            };
            if hit {
                out.push(node.name.clone());
            }
        }
        Ok(out)
    }

    /// Per-pair check of a set-form rule (the baseline for rules that have only a set form).
    fn set_pair(&self, set: &str, id: &Json, node: &str) -> Result<bool> {
        let body = sql_body(set);
        let mut st = self.conn.prepare_cached(&format!(
            "WITH berth_q(a, b) AS ({body}\n) SELECT 1 FROM berth_q WHERE a = ?1 AND b = ?2 LIMIT 1"
        ))?;
        Ok(st.exists(params![Bind(id), node])?)
    }

    /// Writes `seen` for `region` into the instance set; returns what each instance gained
    /// and lost (object -> id -> nodes).
    #[allow(clippy::type_complexity)]
    fn store_instances(&self, region: &[BTreeSet<Id>], seen: &Seen) -> Result<(Seen, Seen)> {
        let mut gained: Seen = vec![BTreeMap::new(); self.n_obj()];
        let mut lost: Seen = vec![BTreeMap::new(); self.n_obj()];
        let mut ins = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO berth_instances(obj, id, node) VALUES (?1, ?2, ?3)",
        )?;
        let mut del = self.conn.prepare_cached(
            "DELETE FROM berth_instances WHERE obj = ?1 AND id = ?2 AND node = ?3",
        )?;
        let empty = BTreeSet::new();
        for (oi, ids) in region.iter().enumerate() {
            let name = &self.plan.objects[oi].r.name;
            for id in ids {
                let before = self.holders(oi, id)?;
                let now = seen[oi].get(id).unwrap_or(&empty);
                for n in now.difference(&before) {
                    ins.execute(params![name, id, n])?;
                    gained[oi].entry(id.clone()).or_default().insert(n.clone());
                }
                for n in before.difference(now) {
                    del.execute(params![name, id, n])?;
                    lost[oi].entry(id.clone()).or_default().insert(n.clone());
                }
            }
        }
        Ok((gained, lost))
    }

    /// Brings visibility up to date for `dirty` (and objects in `whole`): edges, region,
    /// fixpoint, instance set. Returns what was gained and lost.
    fn revisit(
        &self,
        mut dirty: Vec<BTreeSet<Id>>,
        whole: &[bool],
        touched: &BTreeSet<String>,
    ) -> Result<(Seen, Seen)> {
        for (oi, w) in whole.iter().enumerate() {
            if *w {
                let o = &self.plan.objects[oi].r;
                dirty[oi] = all_ids(self.conn, o)?;
                let mut st = self
                    .conn
                    .prepare_cached("SELECT DISTINCT id FROM berth_instances WHERE obj = ?1")?;
                let held = st
                    .query_map(params![o.name], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                dirty[oi].extend(held);
            }
        }
        let full: Vec<bool> = self
            .plan
            .maps
            .iter()
            .map(|m| !m.anchored && m.reads.iter().any(|t| touched.contains(t)))
            .collect();
        if dirty.iter().all(BTreeSet::is_empty) && !full.contains(&true) {
            let none = vec![BTreeMap::new(); self.n_obj()];
            return Ok((none.clone(), none));
        }
        let t = std::time::Instant::now();
        let seeds = self.refresh_edges(&dirty, &full)?;
        let t1 = t.elapsed();
        let mut region = dirty;
        for (r, s) in region.iter_mut().zip(seeds) {
            r.extend(s);
        }
        self.close(&mut region)?;
        let t2 = t.elapsed();
        let seen = self.evaluate(&region)?;
        let t3 = t.elapsed();
        let r = self.store_instances(&region, &seen);
        tracing::debug!(
            region = ?region.iter().map(BTreeSet::len).collect::<Vec<_>>(),
            edges = ?t1,
            close = ?(t2 - t1),
            evaluate = ?(t3 - t2),
            store = ?(t.elapsed() - t3),
            "visibility revisited"
        );
        r
    }
}

/// What the nodes hold, row by row, while a batch is routed; written back at its end.
#[derive(Default)]
struct Holdings {
    held: HashMap<(String, String), BTreeSet<String>>,
    loaded: HashMap<(String, String), BTreeSet<String>>,
    desired: HashMap<(String, String), BTreeSet<String>>,
    /// (node, table, key) sent whole in this batch: later changes of it in the batch are
    /// already in what was sent.
    fresh: HashSet<(String, String, String)>,
    /// Rows a node holds but may not, or may but does not hold, found while routing the
    /// batch's changes. They are downloaded or removed after every entry of the batch, so
    /// after the marker that acknowledges the node's own change to the row: a node keeps a
    /// local change that central decided without knowing of it (SPEC 2.10), and a removal
    /// sent before that marker would be ignored.
    later: Vec<((String, String), String)>,
}

impl Holdings {
    fn held(&mut self, conn: &Connection, key: &(String, String)) -> Result<&mut BTreeSet<String>> {
        if !self.held.contains_key(key) {
            let mut st =
                conn.prepare_cached("SELECT node FROM berth_node_rows WHERE tbl = ?1 AND pk = ?2")?;
            let nodes: BTreeSet<String> = st
                .query_map(params![key.0, key.1], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            self.loaded.insert(key.clone(), nodes.clone());
            self.held.insert(key.clone(), nodes);
        }
        Ok(self.held.entry(key.clone()).or_default())
    }

    fn save(&self, conn: &Connection) -> Result<()> {
        let mut add = conn.prepare_cached(
            "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
        )?;
        let mut del = conn.prepare_cached(
            "DELETE FROM berth_node_rows WHERE node = ?1 AND tbl = ?2 AND pk = ?3",
        )?;
        for (key, now) in &self.held {
            let empty = BTreeSet::new();
            let before = self.loaded.get(key).unwrap_or(&empty);
            for n in now.difference(before) {
                add.execute(params![n, key.0, key.1])?;
            }
            for n in before.difference(now) {
                del.execute(params![n, key.0, key.1])?;
            }
        }
        Ok(())
    }
}

/// Appends wire changes to the nodes' partial logs.
struct Out<'a> {
    conn: &'a Connection,
    ppos: HashMap<String, i64>,
    clock: i64,
}

impl Out<'_> {
    fn emit(&mut self, node: &str, ch: &Change) -> Result<()> {
        let p = self.ppos.entry(node.to_string()).or_insert(0);
        *p += 1;
        let mut ch = ch.clone();
        ch.pos = *p;
        let text = serde_json::to_string(&ch).map_err(|e| EngineError::BadPayload {
            bundle: String::new(),
            entry: "partial log".into(),
            reason: e.to_string(),
        })?;
        self.conn
            .prepare_cached("INSERT INTO berth_partial(node, ppos, change) VALUES (?1, ?2, ?3)")?
            .execute(params![node, *p, text])?;
        Ok(())
    }

    fn download(&mut self, node: &str, table: &str, k: Vec<Json>, row: Row) -> Result<()> {
        let ch = Change {
            pos: 0,
            t: table.to_string(),
            k,
            op: Op::I,
            old: None,
            new: Some(row),
            o: None,
            c: self.clock,
            ack: None,
            seen: None,
        };
        self.emit(node, &ch)
    }

    fn remove(&mut self, node: &str, table: &str, k: Vec<Json>, old: Row) -> Result<()> {
        let ch = Change {
            pos: 0,
            t: table.to_string(),
            k,
            op: Op::D,
            old: Some(old),
            new: None,
            o: None,
            c: self.clock,
            ack: None,
            seen: None,
        };
        self.emit(node, &ch)
    }
}

/// Routes central's log to every active node, in batches of [`BATCH`] entries, inside the
/// caller's transaction. With no docking model every table is enterprise.
pub fn route_all(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
) -> Result<()> {
    route_with_progress(conn, catalog, plan, eval, BATCH, &None)
}

/// [`route_all`] with batches of about `batch` entries (tests use tiny ones to put batch
/// boundaries everywhere).
pub fn route_in_batches(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
    batch: i64,
) -> Result<()> {
    route_with_progress(conn, catalog, plan, eval, batch, &None)
}

/// [`route_in_batches`], reporting the log entries routed to `progress` (a dock after a
/// large apply routes as long as it applied). One transaction, the caller's; the dock's pass
/// commits batch by batch instead ([`crate::route::run`]).
pub fn route_with_progress(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
    batch: i64,
    progress: &crate::progress::Reporter,
) -> Result<()> {
    let Some(mut run) = Run::start(conn, catalog, plan, eval)? else {
        return Ok(());
    };
    let mut tracker = crate::progress::Tracker::new(
        progress,
        "routing to the nodes",
        u64::try_from(run.left()).unwrap_or(0),
    );
    while run.left() > 0 {
        let n = run.batch(batch)?;
        tracker.advance(u64::try_from(n).unwrap_or(0));
    }
    drop(tracker);
    run.checkpoint()
}

/// A routing pass under way: what one batch hands on to the next (seed 004, the log
/// manager's run: it checkpoints every MaxBatchTxns entries).
pub(crate) struct Run<'a> {
    conn: &'a Connection,
    catalog: &'a Catalog,
    plan: Option<&'a Plan>,
    eval: Evaluation,
    nodes: Vec<NodeState>,
    out: Out<'a>,
    chains: crate::change::Chains,
    /// Routed to every node up to here.
    lo: i64,
    /// The log's end when the pass started: what it routes.
    top: i64,
    /// The last merge found open at a batch's end: its marker's position and its node.
    merge: Option<(i64, String)>,
}

impl<'a> Run<'a> {
    /// Starts a pass inside the caller's transaction (`None`: no active node, nothing is
    /// routed). With no docking model every table is enterprise.
    pub(crate) fn start(
        conn: &'a Connection,
        catalog: &'a Catalog,
        plan: Option<&'a Plan>,
        eval: Evaluation,
    ) -> Result<Option<Run<'a>>> {
        let nodes = nodes(conn)?;
        if nodes.is_empty() {
            // Nothing is routed, so the edges fall behind the log: the next node's
            // enrollment rebuilds them.
            if plan.is_some() {
                request_resync(conn)?;
            }
            return Ok(None);
        }
        identify(conn, &nodes)?;
        let mut out = Out {
            conn,
            ppos: nodes.iter().map(|n| (n.name.clone(), n.ppos)).collect(),
            clock: store::meta_i64(conn, meta_keys::CLOCK)?,
        };
        let top = store::max_pos(conn)?;
        if let Some(plan) = plan
            && store::meta(conn, meta_keys::ROUTING_RESYNC)?.is_some()
        {
            resync(conn, catalog, plan, &nodes, eval, top, &mut out)?;
            crate::store::clear_meta(conn, meta_keys::ROUTING_RESYNC)?;
        }
        let lo = nodes.iter().map(|n| n.routed_pos).min().unwrap_or(top);
        let chains = crate::change::Chains::load(conn, lo)?;
        Ok(Some(Run {
            conn,
            catalog,
            plan,
            eval,
            nodes,
            out,
            chains,
            lo,
            top,
            merge: None,
        }))
    }

    /// Log entries this pass has still to route.
    pub(crate) fn left(&self) -> i64 {
        (self.top - self.lo).max(0)
    }

    /// Routes the next batch, of `batch` entries (fewer at the end); returns how many it
    /// covered. It may end inside a node's merge: see [`Batch::open`].
    pub(crate) fn batch(&mut self, batch: i64) -> Result<i64> {
        let lo = self.lo;
        let hi = lo.saturating_add(batch.max(1)).min(self.top);
        let open = match &self.merge {
            // Nothing but the merge's own entries lies between `hi` and its marker.
            Some((marker, node)) if hi < *marker => Some(node.clone()),
            _ => {
                self.merge = open_merge(self.conn, hi, self.top)?;
                self.merge.as_ref().map(|(_, node)| node.clone())
            }
        };
        let b = Batch {
            chains: &self.chains,
            lo,
            hi,
            size: batch.max(1),
            open: open.as_deref(),
        };
        route_batch(
            self.conn,
            self.catalog,
            self.plan,
            &self.nodes,
            self.eval,
            &mut self.out,
            &b,
        )?;
        self.lo = hi;
        Ok(hi - lo)
    }

    /// Records how far the pass has routed, in the transaction that holds the batches'
    /// partial logs: every node's routing checkpoint, the end of its partial log, and the
    /// route mark between the two (what a node's change saw, SPEC 2.10).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "UPDATE berth_peers SET routed_pos = max(routed_pos, ?2), partial_pos = ?3 WHERE name = ?1",
        )?;
        for n in &self.nodes {
            let ppos = self.out.ppos.get(&n.name).copied().unwrap_or(n.ppos);
            st.execute(params![n.name, self.lo, ppos])?;
            // A node enrolled after `lo` has seen up to its own checkpoint: a mark below it
            // could outlive the enrollment's when marks are pruned, and make the node's next
            // changes contest what its extract carried.
            crate::partial::mark(self.conn, &n.name, ppos, self.lo.max(n.routed_pos))?;
        }
        Ok(())
    }

    /// Takes in what central's writers journaled since the pass last read the log (between
    /// two of its transactions): the entries it routes must see what came after them.
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        self.chains.extend(self.conn)
    }
}

/// The merge open at log position `pos` (up to `top`, the pass's end), if any: its marker's
/// position and its node. A merge journals the node's changes, corrective changes and then
/// its marker in one transaction, and central's own writes (no origin, no target) cannot
/// fall inside one; so when the first marker or entry of central's own after `pos` is a
/// marker, the entries up to it are that node's merge (or, when `pos` ends a merge, the next
/// merge whole: treated as open too, which only waits longer).
fn open_merge(conn: &Connection, pos: i64, top: i64) -> Result<Option<(i64, String)>> {
    let next: Option<(i64, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT pos, op, target FROM berth_log WHERE pos > ?1 AND pos <= ?2
               AND (op = 'A' OR (origin IS NULL AND target IS NULL)) ORDER BY pos LIMIT 1",
        )?
        .query_row(params![pos, top], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match next {
        Some((marker, op, Some(node))) if op == "A" => Some((marker, node)),
        _ => None,
    })
}

/// A stretch of the log routed at once, and the chains of the whole routing pass.
struct Batch<'a> {
    chains: &'a crate::change::Chains,
    lo: i64,
    hi: i64,
    /// The pass's batch size: the pending settlements are taken in chunks of it.
    size: i64,
    /// The node whose merge the batch ends inside of. Its rows found to settle (downloads
    /// and removals, [`Holdings::later`]) are kept in `berth_route_later` for the batch
    /// that holds the merge's marker: sent before the marker, a removal would be ignored
    /// and the node would keep a row central no longer sends it (SPEC 2.10).
    open: Option<&'a str>,
}

/// The columns [`Logged::decode`] reads.
const ENTRIES: &str =
    "SELECT pos, tbl, pk, op, old, new, origin, COALESCE(clock, 0), origin_pos, target
     FROM berth_log WHERE pos > ?1 AND pos <= ?2 ORDER BY pos";

/// Calls `f` with every entry of the batch, decoded, in log order. Read from the log at
/// every call: a batch's entries are never all in memory (a merged node bundle of millions
/// of changes is routed in bounded memory).
fn each_entry(
    conn: &Connection,
    catalog: &Catalog,
    batch: &Batch<'_>,
    mut f: impl FnMut(&Logged) -> Result<()>,
) -> Result<()> {
    let mut st = conn.prepare_cached(ENTRIES)?;
    let mut rows = st.query(params![batch.lo, batch.hi])?;
    while let Some(r) = rows.next()? {
        let e = Logged::decode(conn, catalog, batch.chains, r)?;
        f(&e)?;
    }
    Ok(())
}

fn route_batch(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    nodes: &[NodeState],
    eval: Evaluation,
    out: &mut Out<'_>,
    batch: &Batch<'_>,
) -> Result<()> {
    let Some(plan) = plan else {
        // No docking model: everything goes everywhere but back where it came from.
        return each_entry(conn, catalog, batch, |e| {
            for ch in e.wire() {
                for n in nodes.iter().filter(|n| e.base.pos > n.routed_pos) {
                    if routed_to_all(e, &n.name) {
                        out.emit(&n.name, &ch)?;
                    }
                }
            }
            Ok(())
        });
    };
    let pass = Pass {
        conn,
        plan,
        nodes,
        eval,
    };
    // 1-3: which instances the batch can affect, and their visibility now.
    let mut dirty = vec![BTreeSet::new(); plan.objects.len()];
    let mut whole = vec![false; plan.objects.len()];
    let mut touched = BTreeSet::new();
    {
        let mut st = conn.prepare_cached(ENTRIES)?;
        let mut rows = st.query(params![batch.lo, batch.hi])?;
        while let Some(r) = rows.next()? {
            let (t, op, target): (String, String, Option<String>) =
                (r.get(1)?, r.get(3)?, r.get(9)?);
            if target.is_some() || !matches!(op.as_str(), "I" | "U" | "D" | "P") {
                continue;
            }
            // Only a pre-image may be void, and only some tables' rows name instances:
            // the other entries are data changes whose rows need not be read.
            if op != "P" && !plan.rows_matter(&t) {
                touched.insert(lower(&t));
                continue;
            }
            let e = Logged::decode(conn, catalog, batch.chains, r)?;
            if data_change(&e) {
                touched.insert(lower(&e.base.t));
                let rows: Vec<&Row> = e.old.iter().chain(e.new.iter()).collect();
                plan.dirty_from_row(conn, &e.base.t, &rows, &mut dirty, &mut whole)?;
            }
        }
    }
    let (gained, lost) = pass.revisit(dirty, &whole, &touched)?;

    // 4: rows. The changes themselves, in log order.
    let mut h = Holdings::default();
    each_entry(conn, catalog, batch, |e| {
        let wire = e.wire();
        if wire.is_empty() {
            gone_before_routing(&pass, e, &mut h)?;
        }
        for ch in wire {
            route_change(&pass, e, &ch, &mut h, out)?;
        }
        Ok(())
    })?;
    // What earlier batches left for after a marker this batch holds, then this batch's.
    let later = std::mem::take(&mut h.later);
    h = settle_pending(&pass, catalog, batch, h, out)?;
    for (key, node) in later {
        settle(&pass, catalog, batch, &key, &node, &mut h, out)?;
    }
    // Instances gained bring their member rows; instances lost take theirs away.
    settle_instances(&pass, catalog, batch, &gained, &lost, &mut h, out)?;
    // Rows below a changed row on a member path may have moved between instances.
    let below_paths = touched.iter().any(|t| {
        plan.hops
            .get(t)
            .is_some_and(|places| places.iter().any(|(_, at)| at.hop > 0))
    });
    if below_paths {
        each_entry(conn, catalog, batch, |e| {
            if !data_change(e) {
                return Ok(());
            }
            let Some(places) = plan.hops.get(&lower(&e.base.t)) else {
                return Ok(());
            };
            let mut below = BTreeSet::new();
            for &(oi, at) in places.iter().filter(|(_, at)| at.hop > 0) {
                if !plan.moves_below(oi, at, e.old.as_ref(), e.new.as_ref()) {
                    continue;
                }
                let table = plan.objects[oi].r.members[at.m].table.clone();
                for row in e.old.iter().chain(e.new.iter()) {
                    for k in plan.rows_below(conn, oi, at, row)? {
                        below
                            .insert((table.clone(), serde_json::to_string(&k).unwrap_or_default()));
                    }
                }
            }
            for key in below {
                reconcile(&pass, catalog, batch, &key, &mut h, out)?;
            }
            Ok(())
        })?;
    }
    h.save(conn)
}

/// Settles what `node` holds of one row now ([`reconcile_node`]), or, when the batch ends
/// inside `node`'s merge and the row is not as it should be, keeps it in
/// `berth_route_later` for the batch that holds the merge's marker ([`Batch::open`]).
fn settle(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    key: &(String, String),
    node: &str,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    if batch.open != Some(node) {
        return reconcile_node(pass, catalog, key, node, h, out);
    }
    let holds = h.held(pass.conn, key)?.contains(node);
    let wants = desired(pass, key, h)?.contains(node);
    if holds != wants {
        keep_for_later(pass.conn, node, key)?;
    }
    Ok(())
}

/// Keeps a row of `node`'s to settle after the marker of its merge (`berth_route_later`).
fn keep_for_later(conn: &Connection, node: &str, key: &(String, String)) -> Result<()> {
    conn.prepare_cached("INSERT INTO berth_route_later(node, tbl, pk) VALUES (?1, ?2, ?3)")?
        .execute(params![node, key.0, key.1])?;
    Ok(())
}

/// Settles the rows earlier batches kept for after a marker (`berth_route_later`), but those
/// of the node whose merge is still open, in the order they were kept, a chunk of the
/// batch's size at a time: each chunk's holdings are written back and let go, so what is
/// kept never comes into memory whole. Returns the holdings to go on with.
fn settle_pending(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    mut h: Holdings,
    out: &mut Out<'_>,
) -> Result<Holdings> {
    let mut after = 0i64;
    loop {
        let chunk: Vec<(i64, String, String, String)> = pass
            .conn
            .prepare_cached(
                "SELECT seq, node, tbl, pk FROM berth_route_later
                 WHERE seq > ?1 AND node IS NOT ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![after, batch.open, batch.size], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = chunk.last().map(|c| c.0) else {
            return Ok(h);
        };
        for (_, node, tbl, pk) in chunk {
            // A node revoked or removed since has nothing more routed to it.
            if pass.node(&node).is_some() {
                reconcile_node(pass, catalog, &(tbl, pk), &node, &mut h, out)?;
            }
        }
        pass.conn
            .prepare_cached(
                "DELETE FROM berth_route_later WHERE seq > ?1 AND seq <= ?2 AND node IS NOT ?3",
            )?
            .execute(params![after, last, batch.open])?;
        after = last;
        // The changes of the batch are routed: what was sent whole no longer matters
        // (`fresh`), and what the nodes hold is in `berth_node_rows` once written back.
        h.save(pass.conn)?;
        h = Holdings::default();
    }
}

/// A node's insert whose row central deleted before this pass routed it has nothing to
/// send, but the node still holds the row it made: it is recorded as a holder, so the
/// delete later in the log reaches it. (Routing usually follows the merge in the same dock;
/// a dock that only downloads, or a crash between the merge and the routing, lets central's
/// own writes come in between.)
fn gone_before_routing(pass: &Pass<'_>, e: &Logged, h: &mut Holdings) -> Result<()> {
    let Some(node) = e.base.o.as_deref() else {
        return Ok(());
    };
    if e.target.is_some()
        || e.base.op != Op::I
        || pass.plan.visibility(&e.base.t) != Visibility::Limited
        || !pass
            .nodes
            .iter()
            .any(|n| n.name == node && e.base.pos > n.routed_pos)
    {
        return Ok(());
    }
    let key = (e.base.t.clone(), e.base.key_text());
    h.held(pass.conn, &key)?.insert(node.to_string());
    h.later.push((key, node.to_string()));
    Ok(())
}

/// A journal entry that changed central's data (not a marker, statement or corrective
/// change).
fn data_change(e: &Logged) -> bool {
    e.target.is_none() && !e.void && matches!(e.base.op, Op::I | Op::U | Op::D)
}

/// Whether an entry with no docking model in play goes to `node`.
fn routed_to_all(e: &Logged, node: &str) -> bool {
    match &e.target {
        Some(t) => t == node,
        None => e.base.o.as_deref() != Some(node),
    }
}

/// Calls `f` with the key of every member row of the given instances of object `oi`.
fn for_member_rows<'i>(
    pass: &Pass<'_>,
    oi: usize,
    ids: impl Iterator<Item = &'i Id>,
    mut f: impl FnMut(&str, (Vec<Json>, String)) -> Result<()>,
) -> Result<()> {
    let mut set = vec![BTreeSet::new(); pass.n_obj()];
    set[oi] = ids.cloned().collect();
    if set[oi].is_empty() {
        return Ok(());
    }
    load_ids(pass.conn, &set)?;
    each_member_row(
        pass.conn,
        &pass.plan.objects[oi].r,
        oi,
        false,
        |m, _, k, r| {
            let id = id_of(&from_sql(r.get_ref(m.key.len())?));
            f(&m.table, (k, id))
        },
    )
}

/// Calls `f` with every member row (member, the names of the row columns when
/// `whole_row`, key values, the result row: key columns, primary id, then the row columns)
/// of the instances of object `oi` in `temp.berth_route_ids`.
fn each_member_row<'o>(
    conn: &Connection,
    o: &'o ResolvedObject,
    oi: usize,
    whole_row: bool,
    mut f: impl FnMut(&'o ResolvedMember, &[String], Vec<Json>, &rusqlite::Row<'_>) -> Result<()>,
) -> Result<()> {
    for m in &o.members {
        for sql in member_sql(o, m, whole_row) {
            let mut st = conn.prepare_cached(&sql)?;
            let n = m.key.len();
            let names: Vec<String> = st.column_names().skip(n + 1).map(str::to_string).collect();
            let mut rows = st.query(params![oi as i64])?;
            while let Some(r) = rows.next()? {
                let k: Vec<Json> = (0..n)
                    .map(|i| r.get_ref(i).map(from_sql))
                    .collect::<rusqlite::Result<_>>()?;
                f(m, &names, k, r)?;
            }
        }
    }
    Ok(())
}

/// Per path of member `m`: `SELECT <key columns>, <primary id> [, row columns]` of the member
/// rows whose instance is in `temp.berth_route_ids` for object `?1`.
fn member_sql(o: &ResolvedObject, m: &ResolvedMember, whole_row: bool) -> Vec<String> {
    let keys: Vec<String> = m.key.iter().map(|k| format!("t0.{}", ident(k))).collect();
    let extra = if whole_row { ", t0.*" } else { "" };
    let paths = path_choices(m);
    paths
        .into_iter()
        .map(|p| {
            let js = joins(m, p);
            let from = path_from(m, js, js.len());
            format!(
                "SELECT {}, t{}.{}{extra} FROM {from} WHERE t{}.{} IN (SELECT id FROM temp.berth_route_ids WHERE obj = +?1)",
                keys.join(", "),
                js.len(),
                ident(&o.primary_key),
                js.len(),
                ident(&o.primary_key)
            )
        })
        .collect()
}

/// One query for the rows of a member table held through any of `members` (the table as a
/// member of several objects, each with its paths): `SELECT <key columns>, t0.* FROM table
/// t0 WHERE <path> OR <path> ...`, each path written as nested `IN` subqueries from the
/// member row to the instances of its object in `temp.berth_route_ids`, so SQLite reads
/// each row once (through the index of each referencing column). `None` when a path joins
/// on several columns at once, which `IN` cannot say.
fn held_rows_sql(plan: &Plan, members: &[(usize, &ResolvedMember)]) -> Option<String> {
    let (_, first) = members.first()?;
    let mut terms = Vec::new();
    for &(oi, m) in members {
        let o = &plan.objects[oi].r;
        let ids = format!("(SELECT id FROM temp.berth_route_ids WHERE obj = +{oi})");
        let paths = path_choices(m);
        for p in paths {
            let js = joins(m, p);
            // From the primary table back to the member table: at hop k, the condition on
            // alias tk that the row is on the way to one of the instances.
            let mut cond = format!("t{}.{} IN {ids}", js.len(), ident(&o.primary_key));
            for (k, j) in js.iter().enumerate().rev() {
                let ([from], [to]) = (&j.from_columns[..], &j.to_columns[..]) else {
                    return None;
                };
                cond = format!(
                    "t{k}.{} IN (SELECT t{n}.{} FROM {} t{n} WHERE {cond})",
                    ident(from),
                    ident(to),
                    ident(&j.to_table),
                    n = k + 1
                );
            }
            terms.push(cond);
        }
    }
    let keys: Vec<String> = first
        .key
        .iter()
        .map(|k| format!("t0.{}", ident(k)))
        .collect();
    Some(format!(
        "SELECT {}, t0.* FROM {} t0 WHERE {}",
        keys.join(", "),
        ident(&first.table),
        terms.join("\n OR ")
    ))
}

/// The nodes that should hold a row now (after the instance set is up to date).
fn desired<'h>(
    pass: &Pass<'_>,
    key: &(String, String),
    h: &'h mut Holdings,
) -> Result<&'h BTreeSet<String>> {
    if !h.desired.contains_key(key) {
        let k: Vec<Json> = serde_json::from_str(&key.1).unwrap_or_default();
        let mut nodes = BTreeSet::new();
        for (oi, id) in pass.plan.row_instances(pass.conn, &key.0, &k)? {
            match pass.eval {
                Evaluation::Set => nodes.extend(pass.holders(oi, &id)?),
                Evaluation::PerPair => {
                    let mut st = pass.conn.prepare_cached(
                        "SELECT 1 FROM berth_instances WHERE obj = ?1 AND id = ?2 AND node = ?3",
                    )?;
                    for n in pass.nodes {
                        if st.exists(params![pass.plan.objects[oi].r.name, id, n.name])? {
                            nodes.insert(n.name.clone());
                        }
                    }
                }
            }
        }
        h.desired.insert(key.clone(), nodes);
    }
    Ok(h.desired.entry(key.clone()).or_default())
}

/// Routes one wire change of entry `e`.
fn route_change(
    pass: &Pass<'_>,
    e: &Logged,
    ch: &Change,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    let in_scope = |n: &&NodeState| e.base.pos > n.routed_pos;
    if ch.op == Op::M {
        // A schema migration: every node, in order with everything else.
        for n in pass.nodes.iter().filter(in_scope) {
            out.emit(&n.name, ch)?;
        }
        return Ok(());
    }
    if let Some(target) = &e.target {
        let Some(node) = pass
            .nodes
            .iter()
            .filter(in_scope)
            .find(|n| &n.name == target)
        else {
            return Ok(());
        };
        if matches!(ch.op, Op::A | Op::S) {
            return out.emit(&node.name, ch);
        }
        // A corrective change answers a change the node made to this row, so the node has
        // the row (or, after a corrective delete, not).
        match pass.plan.visibility(&ch.t) {
            Visibility::Limited => {
                let key = (ch.t.clone(), ch.key_text());
                if ch.op == Op::D {
                    h.held(pass.conn, &key)?.remove(&node.name);
                    return out.emit(&node.name, ch);
                }
                h.held(pass.conn, &key)?.insert(node.name.clone());
                if desired(pass, &key, h)?.contains(&node.name) {
                    out.emit(&node.name, ch)?;
                } else {
                    h.later.push((key.clone(), node.name.clone()));
                }
                Ok(())
            }
            _ => out.emit(&node.name, ch),
        }
    } else {
        match pass.plan.visibility(&ch.t) {
            // A local table is never captured; nothing of it is in the log to route.
            Visibility::Central | Visibility::Local => Ok(()),
            Visibility::Enterprise => {
                for n in pass.nodes.iter().filter(in_scope) {
                    if ch.o.as_deref() != Some(n.name.as_str()) {
                        out.emit(&n.name, ch)?;
                    }
                }
                Ok(())
            }
            Visibility::Limited => {
                let key = (ch.t.clone(), ch.key_text());
                // Only the nodes that hold the row, may hold it, or made the change are
                // concerned: the work per change does not grow with the number of nodes.
                let mut concerned: BTreeSet<String> = h.held(pass.conn, &key)?.clone();
                if ch.op != Op::D {
                    concerned.extend(desired(pass, &key, h)?.iter().cloned());
                }
                concerned.extend(ch.o.clone());
                for name in concerned {
                    let Some(n) = pass.node(&name).filter(in_scope) else {
                        continue;
                    };
                    let own = ch.o.as_deref() == Some(n.name.as_str());
                    if own {
                        // The node's own change is not sent back; it tells what it holds.
                        if ch.op == Op::D {
                            h.held(pass.conn, &key)?.remove(&n.name);
                        } else {
                            h.held(pass.conn, &key)?.insert(n.name.clone());
                            h.later.push((key.clone(), n.name.clone()));
                        }
                        continue;
                    }
                    if ch.op == Op::D {
                        // Deletes reach exactly the nodes that held the row.
                        if h.held(pass.conn, &key)?.remove(&n.name) {
                            out.emit(&n.name, ch)?;
                        }
                        continue;
                    }
                    let holds = h.held(pass.conn, &key)?.contains(&n.name);
                    let wants = desired(pass, &key, h)?.contains(&n.name);
                    let fresh = h
                        .fresh
                        .contains(&(n.name.clone(), key.0.clone(), key.1.clone()));
                    if holds && wants {
                        if !fresh {
                            out.emit(&n.name, ch)?;
                        }
                    } else {
                        h.later.push((key.clone(), n.name.clone()));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Makes what `node` holds of one row agree with what it should hold: a download or a
/// removal, or nothing.
fn reconcile_node(
    pass: &Pass<'_>,
    catalog: &Catalog,
    key: &(String, String),
    node: &str,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    let holds = h.held(pass.conn, key)?.contains(node);
    let wants = desired(pass, key, h)?.contains(node);
    if holds == wants {
        return Ok(());
    }
    if wants {
        return download(pass, catalog, key, node, h, out);
    }
    let (k, row) = row_now(pass, catalog, key)?;
    out.remove(node, &key.0, k, row.unwrap_or_default())?;
    h.held(pass.conn, key)?.remove(node);
    Ok(())
}

/// A row's key values and the row as central has it now (`None` once deleted).
fn row_now(
    pass: &Pass<'_>,
    catalog: &Catalog,
    key: &(String, String),
) -> Result<(Vec<Json>, Option<Row>)> {
    let k: Vec<Json> = serde_json::from_str(&key.1).unwrap_or_default();
    let row = match catalog.tables.get(&key.0) {
        Some(info) => read_row(pass.conn, info, &k)?,
        None => None,
    };
    Ok((k, row))
}

/// Sends `node` the row whole unless it holds it already.
fn download(
    pass: &Pass<'_>,
    catalog: &Catalog,
    key: &(String, String),
    node: &str,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    if h.held(pass.conn, key)?.contains(node) {
        return Ok(());
    }
    let (k, Some(row)) = row_now(pass, catalog, key)? else {
        return Ok(());
    };
    out.download(node, &key.0, k, row)?;
    h.held(pass.conn, key)?.insert(node.to_string());
    h.fresh
        .insert((node.to_string(), key.0.clone(), key.1.clone()));
    Ok(())
}

/// Reconciles one row for the nodes that hold it or should.
fn reconcile(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    key: &(String, String),
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    let mut concerned = h.held(pass.conn, key)?.clone();
    concerned.extend(desired(pass, key, h)?.iter().cloned());
    for n in concerned {
        settle(pass, catalog, batch, key, &n, h, out)?;
    }
    Ok(())
}

/// Figure 8: the member rows of instances gained are downloaded, those of instances lost
/// removed unless another visible instance still covers them.
fn settle_instances(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    gained: &Seen,
    lost: &Seen,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    for change in [gained, lost] {
        for (oi, ids) in change.iter().enumerate() {
            let mut rows: Vec<(String, String, Id)> = Vec::new();
            for_member_rows(pass, oi, ids.keys(), |table, (k, id)| {
                rows.push((
                    table.to_string(),
                    serde_json::to_string(&k).unwrap_or_default(),
                    id,
                ));
                Ok(())
            })?;
            for (table, key, id) in rows {
                let key = (table, key);
                for node in ids.get(&id).into_iter().flatten() {
                    if batch.open == Some(node.as_str()) {
                        // After the marker of the node's merge (a later batch).
                        settle(pass, catalog, batch, &key, node, h, out)?;
                    } else if std::ptr::eq(change, gained) {
                        // A member of an instance the node now sees: it holds the row.
                        download(pass, catalog, &key, node, h, out)?;
                    } else {
                        reconcile_node(pass, catalog, &key, node, h, out)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Rebuilds edges and the instance set from scratch and makes every node hold exactly what
/// it should (after a docking model change, or on first use).
fn resync(
    conn: &Connection,
    catalog: &Catalog,
    plan: &Plan,
    nodes: &[NodeState],
    eval: Evaluation,
    top: i64,
    out: &mut Out<'_>,
) -> Result<()> {
    conn.execute("DELETE FROM berth_edges", [])?;
    let pass = Pass {
        conn,
        plan,
        nodes,
        eval,
    };
    pass.refresh_edges(
        &vec![BTreeSet::new(); plan.objects.len()],
        &vec![true; plan.maps.len()],
    )?;
    let seen = pass.evaluate_all()?;
    let mut region = Vec::new();
    for o in &plan.objects {
        region.push(all_ids(conn, &o.r)?);
    }
    // Instances of objects the new model no longer has are forgotten.
    let names: Vec<String> = plan.objects.iter().map(|o| o.r.name.clone()).collect();
    let mut st = conn.prepare_cached("SELECT DISTINCT obj FROM berth_instances")?;
    let known: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for obj in known.iter().filter(|o| !names.contains(o)) {
        conn.execute("DELETE FROM berth_instances WHERE obj = ?1", params![obj])?;
    }
    for (oi, o) in plan.objects.iter().enumerate() {
        let mut st =
            conn.prepare_cached("SELECT DISTINCT id FROM berth_instances WHERE obj = ?1")?;
        let held = st
            .query_map(params![o.r.name], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        region[oi].extend(held);
    }
    pass.store_instances(&region, &seen)?;
    for n in nodes {
        let want_keys = desired_rows(&pass, &n.name)?;
        // A pass that stopped inside the node's merge (a crash, `max_changes`) settles its
        // rows after the merge's marker, as the batches do (`Batch::open`).
        let open = open_merge(conn, n.routed_pos, top)?.filter(|(_, node)| *node == n.name);
        let mut h = Holdings::default();
        let mut st = conn.prepare_cached("SELECT tbl, pk FROM berth_node_rows WHERE node = ?1")?;
        let held: BTreeSet<(String, String)> = st
            .query_map(params![n.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for key in held.symmetric_difference(&want_keys) {
            h.desired.insert(
                key.clone(),
                if want_keys.contains(key) {
                    BTreeSet::from([n.name.clone()])
                } else {
                    BTreeSet::new()
                },
            );
            if open.is_some() {
                keep_for_later(conn, &n.name, key)?;
                continue;
            }
            reconcile_node(&pass, catalog, key, &n.name, &mut h, out)?;
        }
        h.save(conn)?;
    }
    Ok(())
}

/// The `limited` rows `node` should hold, from its instance set: (table, key text).
fn desired_rows(pass: &Pass<'_>, node: &str) -> Result<BTreeSet<(String, String)>> {
    let plan = pass.plan;
    let mut ids = vec![BTreeSet::new(); plan.objects.len()];
    let mut st = pass
        .conn
        .prepare_cached("SELECT obj, id FROM berth_instances WHERE node = ?1")?;
    let rows = st.query_map(params![node], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    for r in rows {
        let (obj, id) = r?;
        if let Some(oi) = plan.object_index(&obj) {
            ids[oi].insert(id);
        }
    }
    let mut out = BTreeSet::new();
    for (oi, set) in ids.iter().enumerate() {
        for_member_rows(pass, oi, set.iter(), |table, (k, _)| {
            if plan.visibility(table) == Visibility::Limited {
                out.insert((
                    table.to_string(),
                    serde_json::to_string(&k).unwrap_or_default(),
                ));
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Sets up a new node's instance set from central as it is now (for its extract): the
/// instances it sees, evaluated for it alone over every instance. Calls `sink` once with
/// every `limited` row it holds (table, column names, the result row, and the index in it
/// of the first named column), records them in `berth_node_rows`, and returns how many.
pub fn extract_rows(
    conn: &Connection,
    plan: &Plan,
    node: &NodeState,
    mut sink: impl FnMut(&str, &[String], &rusqlite::Row<'_>, usize) -> Result<()>,
) -> Result<u64> {
    let nodes = std::slice::from_ref(node);
    identify(conn, nodes)?;
    let pass = Pass {
        conn,
        plan,
        nodes,
        eval: Evaluation::Set,
    };
    if store::meta(conn, meta_keys::ROUTING_RESYNC)?.is_some() {
        // No node was routed since the model was set (callers route the other nodes first,
        // which clears this when there are any): the edges are rebuilt now.
        conn.execute("DELETE FROM berth_edges", [])?;
        pass.refresh_edges(
            &vec![BTreeSet::new(); plan.objects.len()],
            &vec![true; plan.maps.len()],
        )?;
        crate::store::clear_meta(conn, meta_keys::ROUTING_RESYNC)?;
    }
    // Other nodes' instances are outside this evaluation: it only reads the edges.
    pass.evaluate_one()?;
    // Its instances, in key order: one range of the index per object.
    for (oi, o) in plan.objects.iter().enumerate() {
        conn.execute(
            "INSERT OR IGNORE INTO berth_instances(obj, id, node)
             SELECT ?1, id, ?2 FROM temp.berth_seen WHERE obj = ?3 ORDER BY id",
            params![o.r.name, node.name, oi as i64],
        )?;
    }
    // The objects it sees any instance of.
    let any: HashSet<usize> = conn
        .prepare("SELECT DISTINCT obj FROM temp.berth_seen")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .map(|oi| Ok(usize::try_from(oi?).unwrap_or(usize::MAX)))
        .collect::<Result<_>>()?;
    // The member queries read the ids' values (as `load_ids` binds them).
    conn.execute_batch(
        "DELETE FROM temp.berth_route_ids;
         INSERT INTO temp.berth_route_ids(obj, id) SELECT obj, json_extract(id, '$[0]') FROM temp.berth_seen;",
    )?;
    // Every limited member table once, with the paths of all the objects it belongs to:
    // one query per table where they allow it (no row read twice, none to drop), else one
    // per path with the repeats dropped by key.
    let mut tables: BTreeMap<&str, Vec<(usize, &ResolvedMember)>> = BTreeMap::new();
    for (oi, o) in plan.objects.iter().enumerate() {
        if !any.contains(&oi) {
            continue;
        }
        for m in &o.r.members {
            if plan.visibility(&m.table) == Visibility::Limited {
                tables.entry(m.table.as_str()).or_default().push((oi, m));
            }
        }
    }
    let mut count = 0u64;
    let mut key = Vec::new();
    for (table, members) in tables {
        let n = members[0].1.key.len();
        let (queries, unique) = match held_rows_sql(plan, &members) {
            Some(sql) => (vec![(sql, None)], true),
            None => (
                members
                    .iter()
                    .flat_map(|&(oi, m)| {
                        member_sql(&plan.objects[oi].r, m, true)
                            .into_iter()
                            .map(move |sql| (sql, Some(oi)))
                    })
                    .collect(),
                false,
            ),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut keys: Vec<String> = Vec::new();
        for (sql, oi) in queries {
            let mut st = conn.prepare_cached(&sql)?;
            // Per-path queries carry the primary id after the key columns.
            let at = if oi.is_some() { n + 1 } else { n };
            let names: Vec<String> = st.column_names().skip(at).map(str::to_string).collect();
            let mut rows = match oi {
                Some(oi) => st.query(params![oi as i64])?,
                None => st.query([])?,
            };
            while let Some(r) = rows.next()? {
                // The key text as `serde_json` writes the key's values (`Id`), written
                // straight from the row.
                let values = (0..n)
                    .map(|i| r.get_ref(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                crate::value::write_key(&mut key, values);
                let text = String::from_utf8_lossy(&key).into_owned();
                if !unique && !seen.insert(text.clone()) {
                    continue;
                }
                keys.push(text);
                count += 1;
                sink(table, &names, r, at)?;
            }
        }
        // The rows it holds, recorded per table in key order and in bulk (one statement per
        // chunk instead of one per row: this record is a large part of the extract's cost).
        keys.sort_unstable();
        bulk_insert(
            conn,
            "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) SELECT ?1, ?2, value FROM json_each(?3)",
            &[&node.name, &table],
            keys.iter(),
        )?;
    }
    Ok(count)
}

/// Runs `sql` over `texts` in chunks: its parameters are `head`, then one more, a JSON array
/// of texts read with `json_each` (one statement per chunk instead of one per text).
fn bulk_insert<'a>(
    conn: &Connection,
    sql: &str,
    head: &[&dyn rusqlite::ToSql],
    texts: impl Iterator<Item = &'a String>,
) -> Result<()> {
    const CHUNK: usize = 8192;
    let mut st = conn.prepare_cached(sql)?;
    let mut chunk: Vec<&String> = Vec::with_capacity(CHUNK);
    let mut flush = |chunk: &mut Vec<&String>| -> Result<()> {
        if !chunk.is_empty() {
            let json = serde_json::to_string(chunk).unwrap_or_default();
            let mut params = head.to_vec();
            params.push(&json);
            st.execute(params.as_slice())?;
            chunk.clear();
        }
        Ok(())
    };
    for t in texts {
        chunk.push(t);
        if chunk.len() == CHUNK {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)
}

pub use super::model::request_resync;

/// The plan for `model`, if there is one.
pub fn plan_for(conn: &Connection, model: Option<&DockingModel>) -> Result<Option<Plan>> {
    model.map(|m| Plan::new(conn, m)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Groups seen through permissions, items through their group, and a group through any
    /// of its items that its owner sees (a cycle). No foreign keys: permissions and items
    /// may name groups that do not exist, and such an id must not spread.
    const MODEL: &str = r#"
version = 1
[nodes]
attributes = ["employee"]
[tables]
grp = { visibility = "limited" }
item = { visibility = "limited" }
perm = { visibility = "limited" }
part = { visibility = "limited" }
part_note = { visibility = "limited" }
[[object]]
name = "group"
primary_table = "grp"
[[object.member]]
table = "perm"
vis_event = true
paths = [["perm.grp_id -> grp.id"]]
[[object.member]]
table = "item"
vis_event = false
paths = [["item.grp_id -> grp.id"]]
[[object.member]]
table = "part"
vis_event = false
[[object.member]]
table = "part_note"
vis_event = false
paths = [["part_note.grp_id -> grp.id"], ["part_note.(grp_id, n) -> part.(grp_id, n)", "part.grp_id -> grp.id"]]
[[object.rule]]
sql = "SELECT 'X' FROM perm WHERE grp_id = :primary_row_id AND emp = :attr_employee"
set_sql = "SELECT p.grp_id, na.node_id FROM perm p JOIN berth_node_attr na ON na.name = 'employee' AND na.value = p.emp"
[[object.rule]]
object = "item"
sql = "SELECT id FROM item WHERE grp_id = :primary_row_id"
set_sql = "SELECT grp_id, id FROM item WHERE grp_id IS NOT NULL AND owner IS NOT NULL"
[[object]]
name = "item"
primary_table = "item"
[[object.rule]]
sql = "SELECT 'X' FROM item WHERE id = :primary_row_id AND owner = :attr_employee"
set_sql = "SELECT i.id, na.node_id FROM item i JOIN berth_node_attr na ON na.name = 'employee' AND na.value = i.owner"
[[object.rule]]
object = "group"
sql = "SELECT grp_id FROM item WHERE id = :primary_row_id"
set_sql = "SELECT id, grp_id FROM item WHERE grp_id IS NOT NULL"
"#;

    fn central(perms: &[(u8, u8)], items: &[(u8, u8, Option<u8>)], groups: u8) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        // Dangling references on purpose.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn.execute_batch(store::DDL).unwrap();
        conn.execute_batch(
            "CREATE TABLE grp(id TEXT PRIMARY KEY);
             CREATE TABLE item(id INTEGER PRIMARY KEY, grp_id TEXT, owner TEXT);
             CREATE TABLE perm(grp_id TEXT, emp TEXT, PRIMARY KEY (grp_id, emp));
             CREATE TABLE part(grp_id TEXT REFERENCES grp(id), n INTEGER, PRIMARY KEY (grp_id, n));
             CREATE TABLE part_note(id INTEGER PRIMARY KEY, grp_id TEXT REFERENCES grp(id), n INTEGER,
                                    FOREIGN KEY (grp_id, n) REFERENCES part(grp_id, n));",
        )
        .unwrap();
        for g in 0..groups {
            conn.execute("INSERT INTO grp VALUES (?1)", [format!("G{g}")])
                .unwrap();
        }
        for (g, e) in perms {
            conn.execute(
                "INSERT OR IGNORE INTO perm VALUES (?1, ?2)",
                [format!("G{g}"), format!("E{e}")],
            )
            .unwrap();
        }
        for (i, (g, n, owner)) in items.iter().enumerate() {
            conn.execute(
                "INSERT INTO item VALUES (?1, ?2, ?3)",
                params![i as i64, format!("G{g}"), owner.map(|o| format!("E{o}"))],
            )
            .unwrap();
            // Parts of groups (some of groups that do not exist), and notes on parts (some
            // on parts that do not exist): the composite path.
            conn.execute(
                "INSERT OR IGNORE INTO part VALUES (?1, ?2)",
                params![format!("G{}", g % 6), n],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO part_note VALUES (?1, ?2, ?3)",
                params![i as i64, format!("G{}", (g + i as u8) % 7), (i % 2) as i64],
            )
            .unwrap();
        }
        conn
    }

    /// Central with that data, the plan of [`MODEL`], and node `n` standing for employee
    /// `E{emp}`.
    fn setup(
        perms: &[(u8, u8)],
        items: &[(u8, u8, Option<u8>)],
        groups: u8,
        emp: u8,
    ) -> (Connection, Plan, NodeState) {
        let conn = central(perms, items, groups);
        let plan = Plan::new(&conn, &DockingModel::from_toml(MODEL).unwrap()).unwrap();
        let node = NodeState {
            name: "n".into(),
            attrs: BTreeMap::from([("employee".to_string(), format!("E{emp}"))]),
            routed_pos: 0,
            ppos: 0,
        };
        (conn, plan, node)
    }

    /// Groups, permissions (group, employee), items (group, part, owner) and the node's
    /// employee; group numbers run past the groups that exist.
    #[allow(clippy::type_complexity)]
    fn data() -> impl Strategy<Value = (u8, Vec<(u8, u8)>, Vec<(u8, u8, Option<u8>)>, u8)> {
        (
            0u8..8,
            proptest::collection::vec((0u8..10, 0u8..3), 0..12),
            proptest::collection::vec((0u8..10, 0u8..2, proptest::option::of(0u8..3)), 0..20),
            0u8..3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The set-based evaluation of one node gives exactly the instances the general
        /// evaluation gives that node, dangling ids and the cycle included.
        #[test]
        fn one_node_evaluation_matches_the_general_one(
            (groups, perms, items, emp) in data(),
        ) {
            let (conn, plan, node) = setup(&perms, &items, groups, emp);
            let nodes = std::slice::from_ref(&node);
            identify(&conn, nodes).unwrap();
            let pass = Pass { conn: &conn, plan: &plan, nodes, eval: Evaluation::Set };
            pass.refresh_edges(&vec![BTreeSet::new(); plan.objects.len()], &vec![true; plan.maps.len()])
                .unwrap();
            let general: BTreeSet<(i64, String)> = pass
                .evaluate_all()
                .unwrap()
                .iter()
                .enumerate()
                .flat_map(|(oi, ids)| {
                    ids.iter()
                        .filter(|(_, nodes)| nodes.contains("n"))
                        .map(move |(id, _)| (oi as i64, id.clone()))
                })
                .collect();
            pass.evaluate_one().unwrap();
            let one: BTreeSet<(i64, String)> = conn
                .prepare("SELECT obj, id FROM temp.berth_seen")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            prop_assert_eq!(one, general);
        }

        /// Enrollment writes each row the node holds once and records exactly those rows:
        /// the rows of its instances as the per-path queries find them (`desired_rows`),
        /// through a table that belongs to two objects and a path on a composite key.
        #[test]
        fn enrollment_records_and_writes_exactly_the_held_rows(
            (groups, perms, items, emp) in data(),
        ) {
            let (conn, plan, node) = setup(&perms, &items, groups, emp);
            store::set_meta(&conn, meta_keys::ROUTING_RESYNC, "1").unwrap();
            let mut written = Vec::new();
            let count = extract_rows(&conn, &plan, &node, |table, names, row, at| {
                let values: Vec<String> = (0..names.len())
                    .map(|i| format!("{:?}", row.get_ref(at + i).map(from_sql)))
                    .collect();
                written.push((table.to_string(), names.to_vec(), values));
                Ok(())
            })
            .unwrap();
            let recorded: BTreeSet<(String, String)> = conn
                .prepare("SELECT tbl, pk FROM berth_node_rows WHERE node = 'n'")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let nodes = std::slice::from_ref(&node);
            let pass = Pass { conn: &conn, plan: &plan, nodes, eval: Evaluation::Set };
            prop_assert_eq!(&recorded, &desired_rows(&pass, "n").unwrap());
            prop_assert_eq!(count as usize, written.len());
            prop_assert_eq!(written.len(), recorded.len());
            let distinct: BTreeSet<_> = written.iter().collect();
            prop_assert_eq!(distinct.len(), written.len(), "a row written twice");
            // Whole rows: every column of the table, in order.
            for (table, names, _) in &written {
                let columns: Vec<String> = conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                prop_assert_eq!(names, &columns);
            }
        }
    }

    /// A path that joins on two columns at once cannot be written with `IN`: that table
    /// is read path by path instead.
    #[test]
    fn composite_paths_are_read_path_by_path() {
        let conn = central(&[], &[], 0);
        let plan = Plan::new(&conn, &DockingModel::from_toml(MODEL).unwrap()).unwrap();
        let group = &plan.objects[0].r;
        let member = |t: &str| group.members.iter().find(|m| m.table == t).unwrap();
        assert_eq!(
            member("part_note").paths.len(),
            2,
            "direct, and through its part"
        );
        assert!(held_rows_sql(&plan, &[(0, member("part_note"))]).is_none());
        let sql = held_rows_sql(
            &plan,
            &[(0, member("item")), (1, &plan.objects[1].r.members[0])],
        )
        .unwrap();
        assert_eq!(sql.matches(" IN ").count(), 3, "{sql}");
    }
}
