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
//! Today the pass leaves out the node's own changes and changes targeted at other nodes, as
//! SPEC 2.8 says. Visibility routing (issue 4, decision 0002) adds its decisions here.

use crate::change::{self, Filter};
use crate::error::{EngineError, Result};
use crate::merge::apply::Catalog;
use crate::peer::Peer;
use crate::store;
use rusqlite::{Connection, params};

/// Routes central's new log entries into `node`'s partial log; returns the partial log's
/// last position.
pub fn route(conn: &Connection, catalog: &Catalog, node: &Peer) -> Result<i64> {
    let routed_to = store::max_pos(conn)?;
    if routed_to <= node.routed_pos {
        return Ok(node.partial_pos);
    }
    let mut ppos = node.partial_pos;
    let mut insert =
        conn.prepare_cached("INSERT INTO berth_partial(node, ppos, change) VALUES (?1, ?2, ?3)")?;
    let filter = Filter {
        after: node.routed_pos,
        peer: Some(&node.name),
    };
    change::export(conn, &filter, catalog, |ch| {
        ppos += 1;
        let mut ch = ch.clone();
        ch.pos = ppos;
        let text = serde_json::to_string(&ch).map_err(|e| EngineError::BadPayload {
            bundle: String::new(),
            entry: "partial log".into(),
            reason: e.to_string(),
        })?;
        insert.execute(params![node.name, ppos, text])?;
        Ok(())
    })?;
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
