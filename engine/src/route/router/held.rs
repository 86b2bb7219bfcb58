//! Rows (step 4 of a batch): which nodes hold each row (`berth_node_rows`), the changes
//! routed to them, rows downloaded and removed as visibility moves, and the resynchronisation.

use super::*;

use crate::change::{Change, Logged, Op};
use crate::error::{EngineError, Result};
use crate::merge::apply::{Catalog, read_row};
use crate::route::check::{ResolvedMember, ResolvedObject};
use crate::route::model::Visibility;
use crate::store::ident;
use crate::value::{Row, from_sql};
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap, HashSet};

/// What the nodes hold, row by row, while a batch is routed; written back at its end.
#[derive(Default)]
pub(super) struct Holdings {
    pub(super) held: HashMap<(String, String), BTreeSet<String>>,
    pub(super) loaded: HashMap<(String, String), BTreeSet<String>>,
    pub(super) desired: HashMap<(String, String), BTreeSet<String>>,
    /// (node, table, key) sent whole in this batch: later changes of it in the batch are
    /// already in what was sent.
    pub(super) fresh: HashSet<(String, String, String)>,
    /// Rows a node holds but may not, or may but does not hold, found while routing the
    /// batch's changes. They are downloaded or removed after every entry of the batch, so
    /// after the marker that acknowledges the node's own change to the row: a node keeps a
    /// local change that central decided without knowing of it (SPEC 2.10), and a removal
    /// sent before that marker would be ignored.
    pub(super) later: Vec<((String, String), String)>,
}

impl Holdings {
    pub(super) fn held(
        &mut self,
        conn: &Connection,
        key: &(String, String),
    ) -> Result<&mut BTreeSet<String>> {
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

    pub(super) fn save(&self, conn: &Connection) -> Result<()> {
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
pub(super) struct Out<'a> {
    pub(super) conn: &'a Connection,
    pub(super) ppos: HashMap<String, i64>,
    pub(super) clock: i64,
}

impl Out<'_> {
    pub(super) fn emit(&mut self, node: &str, ch: &Change) -> Result<()> {
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

    pub(super) fn download(
        &mut self,
        node: &str,
        table: &str,
        k: Vec<Json>,
        row: Row,
    ) -> Result<()> {
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

    pub(super) fn remove(&mut self, node: &str, table: &str, k: Vec<Json>, old: Row) -> Result<()> {
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

/// A node's insert whose row central deleted before this pass routed it has nothing to
/// send, but the node still holds the row it made: it is recorded as a holder, so the
/// delete later in the log reaches it. (Routing usually follows the merge in the same dock;
/// a dock that only downloads, or a crash between the merge and the routing, lets central's
/// own writes come in between.)
pub(super) fn gone_before_routing(pass: &Pass<'_>, e: &Logged, h: &mut Holdings) -> Result<()> {
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

/// Calls `f` with the key of every member row of the given instances of object `oi`.
pub(super) fn for_member_rows<'i>(
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
pub(super) fn each_member_row<'o>(
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
pub(super) fn member_sql(o: &ResolvedObject, m: &ResolvedMember, whole_row: bool) -> Vec<String> {
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
pub(super) fn held_rows_sql(plan: &Plan, members: &[(usize, &ResolvedMember)]) -> Option<String> {
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
pub(super) fn desired<'h>(
    pass: &Pass<'_>,
    key: &(String, String),
    h: &'h mut Holdings,
) -> Result<&'h BTreeSet<String>> {
    if !h.desired.contains_key(key) {
        let k: Vec<Json> = crate::store::stored_json("a row key of the routing pass", &key.1)?;
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
pub(super) fn route_change(
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
pub(super) fn reconcile_node(
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
pub(super) fn row_now(
    pass: &Pass<'_>,
    catalog: &Catalog,
    key: &(String, String),
) -> Result<(Vec<Json>, Option<Row>)> {
    let k: Vec<Json> = crate::store::stored_json("a row key of the routing pass", &key.1)?;
    let row = match catalog.tables.get(&key.0) {
        Some(info) => read_row(pass.conn, info, &k)?,
        None => None,
    };
    Ok((k, row))
}

/// Sends `node` the row whole unless it holds it already.
pub(super) fn download(
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
pub(super) fn reconcile(
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
pub(super) fn settle_instances(
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
pub(super) fn resync(
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
pub(super) fn desired_rows(pass: &Pass<'_>, node: &str) -> Result<BTreeSet<(String, String)>> {
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
