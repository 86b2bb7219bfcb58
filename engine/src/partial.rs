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
//! 2.8). With a docking model it also routes by visibility (seed Figures 6-8; see
//! [`crate::route::router`]): `central` tables never leave; `limited` rows go only to a
//! node that holds them (`berth_node_rows`); rows that became visible are downloaded whole
//! and rows that stopped being visible are removed. One pass routes every node at once.

use crate::error::{EngineError, Result};
use crate::peer::Peer;
use crate::sqlpolicy::{Gate, Policy};
use rusqlite::{Connection, OptionalExtension, params};

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

/// Forgets what `node` has acknowledged, and the route marks no change of it can refer to
/// any more (its changes to come were made knowing at least its acknowledged position).
pub fn prune(conn: &Connection, node: &str, acked: i64) -> Result<()> {
    conn.prepare_cached("DELETE FROM berth_partial WHERE node = ?1 AND ppos <= ?2")?
        .execute(params![node, acked])?;
    conn.prepare_cached(
        "DELETE FROM berth_route_marks WHERE node = ?1 AND ppos < (SELECT MAX(ppos)
           FROM berth_route_marks WHERE node = ?1 AND ppos <= ?2)",
    )?
    .execute(params![node, acked])?;
    Ok(())
}

/// Records that `node`'s partial log up to `ppos` covers central's log up to `pos`: once
/// the node has applied it, it has seen every change up to there that it is to receive.
pub fn mark(conn: &Connection, node: &str, ppos: i64, pos: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO berth_route_marks(node, ppos, pos) VALUES (?1, ?2, ?3)
         ON CONFLICT(node, ppos) DO UPDATE SET pos = max(pos, excluded.pos)",
    )?
    .execute(params![node, ppos, pos])?;
    Ok(())
}

/// Most entries of central's log one dock removes: the log is pruned in bounded steps, so a
/// dock after a long pause never holds the database for long.
pub const LOG_PRUNE_STEP: i64 = 50_000;

/// How much of central's log is still needed, and who needs it (seed 004: the log manager
/// deletes what every node has processed).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogHold {
    /// Entries in the log now.
    pub entries: i64,
    /// Every entry at or below this position has been processed by every active node: it is
    /// routed to all of them, and no change they will send can be contested by it.
    pub processed: i64,
    /// The active node that has processed least (the one holding the log back), if any.
    pub held_by: Option<String>,
    /// The nodes away (SPEC 2.8): they hold back only what is not routed to them yet, and
    /// their streams are kept compacted.
    pub away: Vec<String>,
}

/// What central's log must keep for each active (not revoked) node: the entries after its
/// routing checkpoint (not routed to it yet), and the entries after the position its route
/// mark at its acknowledged partial-log position names. A node's changes still to come
/// were made knowing at least that position (see [`prune`]), and the contest of a change
/// (`merge::contest`, SPEC 2.10) reads central's log only after what the change saw. A node
/// without such a mark (routed before marks existed) holds the whole log.
///
/// A node **away** (no bundle of it applied since `away_cutoff`, [`crate::catchup`]) holds
/// only what is not routed to it yet: its stream is kept compacted instead, and the contest
/// of its changes falls back on that stream where the log no longer reaches.
pub fn log_hold(conn: &Connection, away_cutoff: Option<i64>) -> Result<LogHold> {
    let entries: i64 = conn.query_row("SELECT COUNT(*) FROM berth_log", [], |r| r.get(0))?;
    let (processed, held_by) = processed(conn, away_cutoff)?;
    let away = crate::catchup::away(conn, away_cutoff)?
        .into_iter()
        .map(|a| a.node)
        .collect();
    Ok(LogHold {
        entries,
        processed,
        held_by,
        away,
    })
}

/// [`LogHold::processed`] and [`LogHold::held_by`], without counting the log (a dock
/// prunes without reading the log's size).
fn processed(conn: &Connection, away_cutoff: Option<i64>) -> Result<(i64, Option<String>)> {
    let top = crate::store::max_pos(conn)?;
    let least: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT p.name, CASE WHEN COALESCE(p.last_in, p.added) < ?1 THEN p.routed_pos
                     ELSE MIN(p.routed_pos, COALESCE((SELECT MAX(m.pos) FROM berth_route_marks m
                     WHERE m.node = p.name AND m.ppos <= p.acked_pos), 0)) END AS need
               FROM berth_peers p WHERE p.role = 'node' AND p.revoked IS NULL
              ORDER BY need, p.name LIMIT 1",
        )?
        .query_row(params![away_cutoff], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match least {
        Some((node, need)) => (need.min(top), Some(node)),
        None => (top, None),
    })
}

/// Removes up to `step` of the oldest entries of central's log that every active node has
/// processed ([`log_hold`]), inside the caller's transaction; the newest entry always stays,
/// so positions never restart. Returns how many were removed.
pub fn prune_log(conn: &Connection, step: i64, away_cutoff: Option<i64>) -> Result<i64> {
    let (processed, _) = processed(conn, away_cutoff)?;
    let first: Option<i64> = conn.query_row("SELECT MIN(pos) FROM berth_log", [], |r| r.get(0))?;
    let Some(first) = first else {
        return Ok(0);
    };
    let top = crate::store::max_pos(conn)?;
    let upto = processed
        .min(first.saturating_add(step.max(1)) - 1)
        .min(top - 1);
    if upto < first {
        return Ok(0);
    }
    let n = conn
        .prepare_cached("DELETE FROM berth_log WHERE pos <= ?1")?
        .execute(params![upto])?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
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
///
/// SPEC 2.8: the script MUST NOT end the transaction it is tried in or change the
/// connection. Every statement is prepared under [`Policy::Script`] (SQLite's authorizer):
/// transaction control, `ATTACH`/`DETACH` and pragmas are refused before any statement
/// runs when the whole script can be prepared up front, and always before the refused
/// statement itself runs (a statement that needs an earlier one's table is prepared after
/// that one ran, inside the savepoint).
pub fn send_sql(conn: &mut Connection, nodes: &[String], sql: &str) -> Result<()> {
    if sql.trim().is_empty() {
        return Err(EngineError::BadPayload {
            bundle: String::new(),
            entry: "send-sql".into(),
            reason: "no SQL statement given".into(),
        });
    }
    // The gate takes the authorizer off the connection when dropped, on every path.
    let gate = Gate::new(conn, Policy::Script)?;
    let tx = rusqlite::Transaction::new_unchecked(&gate, rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("SAVEPOINT berth_try_sql")?;
    // Capture is suspended inside the savepoint, so rolling back to it brings the triggers
    // back: nothing can leave capture off (if even that rollback failed, dropping `tx`
    // rolls everything back).
    let tried = crate::capture::suspend(&tx).and_then(|()| {
        gate.arm(true);
        let tried = try_script(&gate, &tx, sql);
        gate.arm(false);
        tried
    });
    tx.execute_batch("ROLLBACK TO berth_try_sql; RELEASE berth_try_sql")?;
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

/// Prepares every statement of `sql` (refusing what the gate refuses), then runs them one by
/// one, each prepared again just before it runs.
fn try_script(gate: &Gate<'_>, conn: &Connection, sql: &str) -> Result<()> {
    use rusqlite::fallible_iterator::FallibleIterator;
    let refused = |statement: usize, e: rusqlite::Error| match gate.take_refusal() {
        Some(what) => EngineError::SqlRefused { statement, what },
        None => EngineError::Sql(e),
    };
    // First pass, nothing runs: stops at the first statement that does not prepare, which
    // may be one needing a table an earlier statement creates; the second pass decides.
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut n = 0;
    loop {
        n += 1;
        match batch.next() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => match refused(n, e) {
                e @ EngineError::SqlRefused { .. } => return Err(e),
                _ => break,
            },
        }
    }
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut n = 0;
    loop {
        n += 1;
        let mut st = match batch.next() {
            Ok(Some(st)) => st,
            Ok(None) => return Ok(()),
            Err(e) => return Err(refused(n, e)),
        };
        let mut rows = st.raw_query();
        while rows.next()?.is_some() {}
    }
}
