//! Evaluating visibility (steps 1-3 of a batch): the edges between instances, the region a
//! batch can affect, and the least fixpoint of the rules over it for every node at once.

use super::*;

use crate::error::Result;
use crate::route::check::ResolvedObject;
use crate::route::model::{
    NODE_RELATIONS_DDL, PARAM_ATTR_PREFIX, PARAM_NODE_ID, PARAM_PRIMARY_ROW_ID, RuleSql,
};
use crate::store::{self, ident};
use crate::value::{Bind, from_sql};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<(String, String, i64, i64)>>>()?;
    rows.into_iter()
        .map(|(name, attrs, routed_pos, ppos)| {
            Ok(NodeState {
                attrs: crate::store::stored_json(
                    &format!("berth_peers.attrs of node {name}"),
                    &attrs,
                )?,
                name,
                routed_pos,
                ppos,
            })
        })
        .collect()
}

/// Puts `nodes` into the TEMP relations set-form rules read node identity from, and makes
/// the router's scratch table.
pub(super) fn identify(conn: &Connection, nodes: &[NodeState]) -> Result<()> {
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
pub(super) fn load_ids(conn: &Connection, ids: &[BTreeSet<Id>]) -> Result<()> {
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
pub(super) fn load_keys(conn: &Connection, ids: &[BTreeSet<Id>]) -> Result<()> {
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
pub(super) fn run_pair(
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
pub(super) fn all_ids(conn: &Connection, o: &ResolvedObject) -> Result<BTreeSet<Id>> {
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
pub(super) fn mapping_pairs(
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
pub(super) type Seen = Vec<BTreeMap<Id, BTreeSet<String>>>;

pub(super) struct Pass<'a> {
    pub(super) conn: &'a Connection,
    pub(super) plan: &'a Plan,
    pub(super) nodes: &'a [NodeState],
    pub(super) eval: Evaluation,
}

impl<'a> Pass<'a> {
    /// The node named `name`, if it takes part in this pass.
    pub(super) fn node(&self, name: &str) -> Option<&'a NodeState> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub(super) fn n_obj(&self) -> usize {
        self.plan.objects.len()
    }

    /// Edges of mapping `mi` touching the given dependent or supporting ids (all its edges
    /// when `all`).
    pub(super) fn stored_edges(
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
    pub(super) fn refresh_edges(
        &self,
        dirty: &[BTreeSet<Id>],
        full: &[bool],
    ) -> Result<Vec<BTreeSet<Id>>> {
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
    pub(super) fn close(&self, region: &mut [BTreeSet<Id>]) -> Result<()> {
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
    pub(super) fn holders(&self, oi: usize, id: &str) -> Result<BTreeSet<String>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT node FROM berth_instances WHERE obj = ?1 AND id = ?2")?;
        let rows = st.query_map(params![self.plan.objects[oi].r.name, id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Visibility of every instance in `region` for every node: the least fixpoint of the
    /// rules, with support from outside the region taken from the instance set.
    pub(super) fn evaluate(&self, region: &[BTreeSet<Id>]) -> Result<Seen> {
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
    pub(super) fn rule_round(&self) -> Result<Seen> {
        let mut round: Seen = vec![BTreeMap::new(); self.n_obj()];
        self.rule_hits(|oi, id, node| {
            round[oi].entry(id).or_default().insert(node.to_string());
        })?;
        Ok(round)
    }

    /// Calls `f(object, id, node)` for every instance an SQL rule makes visible to one of the
    /// pass's nodes, evaluated over every instance.
    pub(super) fn rule_hits(&self, mut f: impl FnMut(usize, Id, &str)) -> Result<()> {
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
    pub(super) fn evaluate_one(&self) -> Result<()> {
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
    pub(super) fn evaluate_all(&self) -> Result<Seen> {
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
    pub(super) fn check_exist(
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
    pub(super) fn rule_pairs(&self, rule: &RuleSql, id: &Id) -> Result<Vec<String>> {
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
    pub(super) fn set_pair(&self, set: &str, id: &Json, node: &str) -> Result<bool> {
        let body = sql_body(set);
        let mut st = self.conn.prepare_cached(&format!(
            "WITH berth_q(a, b) AS ({body}\n) SELECT 1 FROM berth_q WHERE a = ?1 AND b = ?2 LIMIT 1"
        ))?;
        Ok(st.exists(params![Bind(id), node])?)
    }

    /// Writes `seen` for `region` into the instance set; returns what each instance gained
    /// and lost (object -> id -> nodes).
    #[allow(clippy::type_complexity)]
    pub(super) fn store_instances(
        &self,
        region: &[BTreeSet<Id>],
        seen: &Seen,
    ) -> Result<(Seen, Seen)> {
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
    pub(super) fn revisit(
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
