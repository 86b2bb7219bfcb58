//! Partial logs (seed 004, Figure 6): central's stream to each node is a log of its own.
//!
//! Before central writes a node's bundle, a routing pass takes the entries of central's
//! update log after the node's routing checkpoint (`berth_peers.routed_pos`, the seed's
//! S_DOCK_STATUS LOG_EXTRACT) and appends the changes that node is to receive to its partial
//! log (`berth_partial`), as finished wire changes numbered by the partial log's own
//! positions. The pass and the checkpoint commit together. A bundle then carries the partial
//! log after what the node acknowledged, so a re-sent bundle repeats exactly the decisions
//! made once. Entries the node acknowledged are pruned.
//!
//! The pass leaves out the node's own changes and changes targeted at other nodes (SPEC
//! 2.8). With a docking model it also routes by visibility (seed Figures 6-8): `central`
//! tables never leave; `limited` rows go only to a node that holds them
//! (`berth_node_rows`); rows that became visible are downloaded whole and rows that stopped
//! being visible are removed, comparing what the node should hold (the projection of
//! [`crate::route::oracle`]) with what it holds. This first router recomputes the node's
//! whole projection at every pass: exact, simple, and the reference for a faster one.

use crate::change::{self, Change, Filter, Op};
use crate::error::{EngineError, Result};
use crate::merge::apply::{Catalog, read_row};
use crate::peer::Peer;
use crate::route::model::{DockingModel, Visibility};
use crate::route::oracle;
use crate::store;
use crate::value::Row;
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// What one node should hold and holds, while a routing pass runs.
struct Visible<'m> {
    model: &'m DockingModel,
    desired: BTreeMap<String, BTreeMap<String, Row>>,
    held: BTreeSet<(String, String)>,
}

impl<'m> Visible<'m> {
    fn load(conn: &Connection, model: &'m DockingModel, node: &Peer) -> Result<Self> {
        let attributes: BTreeMap<String, String> =
            serde_json::from_str(&node.attrs).unwrap_or_default();
        let who = oracle::Node {
            name: node.name.clone(),
            attributes,
        };
        let projection = oracle::project(conn, model, &who).map_err(|e| EngineError::Docking {
            path: "docking.toml".into(),
            findings: vec![e.to_string()],
        })?;
        let mut st = conn.prepare_cached("SELECT tbl, pk FROM berth_node_rows WHERE node = ?1")?;
        let held = st
            .query_map(params![node.name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Visible {
            model,
            desired: projection.rows,
            held,
        })
    }

    fn visibility(&self, table: &str) -> Visibility {
        self.model
            .tables
            .get(&table.to_lowercase())
            .map_or(Visibility::Enterprise, |t| t.visibility)
    }

    fn desired(&self, table: &str, key: &str) -> bool {
        self.desired
            .get(table)
            .is_some_and(|rows| rows.contains_key(key))
    }

    /// Whether a routed change goes to the node, updating what it holds.
    fn admit(&mut self, ch: &Change) -> bool {
        if ch.op == Op::A {
            return true;
        }
        if ch.ack.is_some() && ch.op == Op::D {
            // Central undoes a row the node wrote (refused, or not its to hold): whatever the
            // table, the node has that row.
            self.held.remove(&(ch.t.clone(), ch.key_text()));
            return true;
        }
        match self.visibility(&ch.t) {
            Visibility::Enterprise => true,
            Visibility::Central => false,
            Visibility::Limited => {
                let key = (ch.t.clone(), ch.key_text());
                if ch.ack.is_some() {
                    // A corrective change answers a change the node made to this row, so the
                    // node holds it. If the node may no longer see the row, the removal below
                    // takes its place.
                    if ch.op == Op::D {
                        self.held.remove(&key);
                        return true;
                    }
                    self.held.insert(key.clone());
                    return self.desired(&key.0, &key.1);
                }
                match ch.op {
                    // Deletes reach exactly the nodes that held the row.
                    Op::D => self.held.remove(&key),
                    // Rows the node holds and still sees get the change; rows it does not
                    // hold yet are downloaded whole below, rows it no longer sees removed.
                    _ => self.held.contains(&key) && self.desired(&key.0, &key.1),
                }
            }
        }
    }
}

/// Which rows a node holds at first: the limited rows of its projection (what its extract
/// carries). Returns the rows of every table the extract must carry.
pub fn initial_rows(
    conn: &Connection,
    model: &DockingModel,
    node: &oracle::Node,
) -> Result<BTreeMap<String, BTreeMap<String, Row>>> {
    let projection = oracle::project(conn, model, node).map_err(|e| EngineError::Docking {
        path: "docking.toml".into(),
        findings: vec![e.to_string()],
    })?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
    )?;
    for (table, rows) in &projection.rows {
        let limited = model
            .tables
            .get(&table.to_lowercase())
            .is_some_and(|t| t.visibility == Visibility::Limited);
        if limited {
            for key in rows.keys() {
                insert.execute(params![node.name, table, key])?;
            }
        }
    }
    Ok(projection
        .rows
        .into_iter()
        .filter(|(t, _)| {
            model
                .tables
                .get(&t.to_lowercase())
                .is_none_or(|s| s.visibility != Visibility::Central)
        })
        .collect())
}

/// Routes central's new log entries into `node`'s partial log; returns the partial log's
/// last position.
pub fn route(
    conn: &Connection,
    catalog: &Catalog,
    node: &Peer,
    model: Option<&DockingModel>,
) -> Result<i64> {
    let routed_to = store::max_pos(conn)?;
    if routed_to <= node.routed_pos && model.is_none() {
        // Nothing journaled since the last pass: nothing to route. (With a docking model the
        // projection is compared even so: `berth docking apply` may have changed the model.)
        return Ok(node.partial_pos);
    }
    let mut visible = model.map(|m| Visible::load(conn, m, node)).transpose()?;
    let held_before = visible.as_ref().map(|v| v.held.clone()).unwrap_or_default();
    let mut ppos = node.partial_pos;
    let mut insert =
        conn.prepare_cached("INSERT INTO berth_partial(node, ppos, change) VALUES (?1, ?2, ?3)")?;
    let mut append = |ch: &Change, ppos: &mut i64| -> Result<()> {
        *ppos += 1;
        let mut ch = ch.clone();
        ch.pos = *ppos;
        let text = serde_json::to_string(&ch).map_err(|e| EngineError::BadPayload {
            bundle: String::new(),
            entry: "partial log".into(),
            reason: e.to_string(),
        })?;
        insert.execute(params![node.name, *ppos, text])?;
        Ok(())
    };
    if let Some(v) = visible.as_mut() {
        // The node's own changes tell what it holds without being sent back: a row it wrote
        // is there (if it may not see it, the removal below is sent again; the node kept the
        // row while its own change was on its way), a row it deleted is not.
        let mut st = conn.prepare_cached(
            "SELECT tbl, pk, op FROM berth_log WHERE pos > ?1 AND origin = ?2 AND op IN ('I', 'U', 'D') ORDER BY pos",
        )?;
        let own: Vec<(String, String, String)> = st
            .query_map(params![node.routed_pos, node.name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (t, pk, op) in own {
            if v.visibility(&t) == Visibility::Limited {
                if op == "I" || op == "U" {
                    v.held.insert((t, pk));
                } else {
                    v.held.remove(&(t, pk));
                }
            }
        }
    }
    let filter = Filter {
        after: node.routed_pos,
        peer: Some(&node.name),
    };
    change::export(conn, &filter, catalog, |ch| {
        if visible.as_mut().is_none_or(|v| v.admit(ch)) {
            append(ch, &mut ppos)?;
        }
        Ok(())
    })?;
    if let Some(v) = visible.as_mut() {
        let clock = store::meta_i64(conn, "clock")?;
        // Figure 8: download what became visible, remove what stopped being visible.
        let mut download = Vec::new();
        for (table, rows) in &v.desired {
            if v.visibility(table) != Visibility::Limited {
                continue;
            }
            for (key, row) in rows {
                if !v.held.contains(&(table.clone(), key.clone())) {
                    download.push((table.clone(), key.clone(), row.clone()));
                }
            }
        }
        let remove: Vec<(String, String)> = v
            .held
            .iter()
            .filter(|(t, k)| v.visibility(t) == Visibility::Limited && !v.desired(t, k))
            .cloned()
            .collect();
        for (t, key) in &remove {
            let k: Vec<Json> = serde_json::from_str(key).unwrap_or_default();
            let old = match catalog.tables.get(t) {
                Some(info) => read_row(conn, info, &k)?.unwrap_or_default(),
                None => Row::new(),
            };
            let ch = Change {
                pos: 0,
                t: t.clone(),
                k,
                op: Op::D,
                old: Some(old),
                new: None,
                o: None,
                c: clock,
                ack: None,
            };
            append(&ch, &mut ppos)?;
            v.held.remove(&(t.clone(), key.clone()));
        }
        for (t, key, row) in download {
            let k: Vec<Json> = serde_json::from_str(&key).unwrap_or_default();
            let ch = Change {
                pos: 0,
                t: t.clone(),
                k,
                op: Op::I,
                old: None,
                new: Some(row),
                o: None,
                c: clock,
                ack: None,
            };
            append(&ch, &mut ppos)?;
            v.held.insert((t, key));
        }
        let mut add = conn.prepare_cached(
            "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
        )?;
        for (t, k) in v.held.difference(&held_before) {
            add.execute(params![node.name, t, k])?;
        }
        let mut del = conn.prepare_cached(
            "DELETE FROM berth_node_rows WHERE node = ?1 AND tbl = ?2 AND pk = ?3",
        )?;
        for (t, k) in held_before.difference(&v.held) {
            del.execute(params![node.name, t, k])?;
        }
    }
    conn.execute(
        "UPDATE berth_peers SET routed_pos = ?2, partial_pos = ?3 WHERE name = ?1",
        params![node.name, routed_to, ppos],
    )?;
    Ok(ppos)
}

/// Calls `sink` with every change of `node`'s partial log after position `after`, in order,
/// as one JSON line each; returns how many.
pub fn export(
    conn: &Connection,
    node: &str,
    after: i64,
    mut sink: impl FnMut(&str) -> Result<()>,
) -> Result<u64> {
    let mut st = conn.prepare_cached(
        "SELECT change FROM berth_partial WHERE node = ?1 AND ppos > ?2 ORDER BY ppos",
    )?;
    let mut rows = st.query(params![node, after])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let text: String = r.get(0)?;
        sink(&text)?;
        n += 1;
    }
    Ok(n)
}

/// Forgets what `node` has acknowledged.
pub fn prune(conn: &Connection, node: &str, acked: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM berth_partial WHERE node = ?1 AND ppos <= ?2")?
        .execute(params![node, acked])?;
    Ok(())
}

/// Changes waiting for `node`: in its partial log after `acked`, plus central's log entries
/// not routed yet that it would receive.
pub fn pending(conn: &Connection, node: &Peer) -> Result<i64> {
    let routed: i64 = conn.query_row(
        "SELECT COUNT(*) FROM berth_partial WHERE node = ?1 AND ppos > ?2",
        params![node.name, node.acked_pos],
        |r| r.get(0),
    )?;
    let unrouted: i64 = conn.query_row(
        "SELECT COUNT(*) FROM berth_log WHERE pos > ?1 AND op <> 'A' AND (origin IS NULL OR origin <> ?2)
         AND (target IS NULL OR target = ?2)",
        params![node.routed_pos, node.name],
        |r| r.get(0),
    )?;
    Ok(routed + unrouted)
}

/// Journals an SQL statement for the chosen nodes only (the appendix's SQLStatement
/// records): each receives it in order with its other changes and runs it there. Central
/// does not run it; it is tried on central's schema inside a savepoint that is rolled back,
/// so a statement that cannot run is refused here rather than at the nodes.
pub fn send_sql(conn: &Connection, nodes: &[String], sql: &str) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(EngineError::BadPayload {
            bundle: String::new(),
            entry: "send-sql".into(),
            reason: "no SQL statement given".into(),
        });
    }
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    crate::capture::suspend(&tx)?;
    tx.execute_batch("SAVEPOINT berth_try_sql")?;
    let tried = tx.execute_batch(sql);
    tx.execute_batch("ROLLBACK TO berth_try_sql; RELEASE berth_try_sql")?;
    crate::capture::resume(&tx)?;
    tried?;
    let new = serde_json::json!({ "sql": sql }).to_string();
    for node in nodes {
        crate::peer::require(&tx, node)?;
        tx.execute(
            "INSERT INTO berth_log(tbl, pk, op, new, target) VALUES ('', '[]', 'S', ?1, ?2)",
            params![new, node],
        )?;
    }
    tx.commit()?;
    Ok(())
}
