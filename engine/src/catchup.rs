//! A node away for months (issue 20; SPEC 2.8, "Nodes away"): it no longer holds central's
//! log back, and it catches up with one compact bundle.
//!
//! Central's log is kept for two readers: the routing pass (which has routed it to every
//! node, away or not) and the contest of a node's changes (`merge::contest`, SPEC 2.10),
//! which reads the log after what a change saw. A node that sends nothing for a long time
//! would hold the log at what it saw, for ever; and its partial log grows with every change
//! it can see. So a node whose last bundle central applied before a cutoff the admin sets
//! (`[retention] away_days`, default the retention's `days`) is **away**:
//!
//! - [`crate::partial::prune_log`] no longer keeps the log for its contest (only what is not
//!   routed to it yet, which the routing pass routes at every dock);
//! - its partial log after what it acknowledged is **compacted** ([`compact`]) at every
//!   central dock: between two barriers (a marker, a statement, a migration or a corrective
//!   change, whose position matters to the node's apply), each row keeps one change, at the
//!   position of its last one: a `D` when the last is a delete (the row was deleted, or left
//!   the node's visibility), an `I` with the latest whole row when any change of the row was
//!   an insert or a delete (a download, a row deleted and made again), else a `U` whose `old`
//!   names every column any of its updates changed and whose `new` is the latest row. So the
//!   stream holds one change per row changed (between barriers, and an away node sends
//!   nothing, so no new barrier is made), not the history;
//! - when its changes come back and the log no longer reaches back to what one saw,
//!   [`Fallback`] counts as contested every column its own stream changed after that
//!   position (the stream is routed from everything others did to the rows it holds):
//!   more collisions than the log would show, never fewer.
//!
//! Positions are kept as they are: a kept change stays at its last position, so a node that
//! had already applied part of the history skips, by position, exactly what it holds.

use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
pub use crate::merge::contest::Fallback;
use crate::store;
pub use crate::store::log_floor;
use rusqlite::{Connection, params};
use std::collections::HashMap;

/// What compacting the away nodes' partial logs did in one dock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Compacted {
    /// Away nodes whose partial log was read.
    pub nodes: u64,
    /// Changes removed (each superseded by a later change of its row).
    pub removed: u64,
    /// Changes rewritten (a row's last change carrying what the removed ones changed).
    pub rewritten: u64,
}

/// A node away, and where its stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Away {
    /// The node's name.
    pub node: String,
    /// The last position of its partial log it acknowledged.
    pub acked: i64,
    /// Its partial log's last position.
    pub last: i64,
}

/// The active nodes away at `cutoff`: no bundle of theirs applied since (or, never heard
/// from, added before it).
pub fn away(conn: &Connection, cutoff: Option<i64>) -> Result<Vec<Away>> {
    let Some(cutoff) = cutoff else {
        return Ok(Vec::new());
    };
    let mut st = conn.prepare_cached(
        "SELECT name, acked_pos, partial_pos FROM berth_peers
          WHERE role = 'node' AND revoked IS NULL AND COALESCE(last_in, added) < ?1
          ORDER BY name",
    )?;
    let rows = st
        .query_map(params![cutoff], |r| {
            Ok(Away {
                node: r.get(0)?,
                acked: r.get(1)?,
                last: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn compacted_key(node: &str) -> String {
    format!("compacted.{node}")
}

/// Forgets how far `node`'s stream was compacted (its name is enrolled again with a new key,
/// whose stream starts over).
pub(crate) fn forget(conn: &Connection, node: &str) -> Result<()> {
    store::clear_meta(conn, &compacted_key(node))
}

/// Compacts the partial log of every node away at `cutoff`, inside the caller's
/// transaction, and forgets the route marks of theirs that only say "before the log's
/// start" (one such is kept: it sends their changes to [`Fallback`]).
pub fn compact_away(conn: &Connection, cutoff: Option<i64>) -> Result<Compacted> {
    let mut out = Compacted::default();
    let floor = store::log_floor(conn)?;
    for Away { node, acked, last } in away(conn, cutoff)? {
        conn.prepare_cached(
            "DELETE FROM berth_route_marks WHERE node = ?1 AND ppos > ?2 AND pos < ?3
               AND ppos < (SELECT MAX(ppos) FROM berth_route_marks WHERE node = ?1 AND pos < ?3)",
        )?
        .execute(params![node, acked, floor - 1])?;
        // Nothing routed to it since the last time: nothing to read.
        let key = compacted_key(&node);
        if store::meta_i64(conn, &key)? == last {
            continue;
        }
        let (removed, rewritten) = compact(conn, &node, acked)?;
        store::set_meta(conn, &key, &last.to_string())?;
        out.nodes += 1;
        out.removed += removed;
        out.rewritten += rewritten;
    }
    Ok(out)
}

/// A change whose position in the stream matters beyond its row: a marker, a statement, a
/// migration, a corrective change (it is checked only against the node's changes after the
/// one it corrects, SPEC 2.11), or a line this version cannot read.
fn barrier(ch: &Change) -> bool {
    !matches!(ch.op, Op::I | Op::U | Op::D) || ch.ack.is_some()
}

/// One row's change so far in the current segment: where it is, and what it carries.
struct Slot {
    ppos: i64,
    change: Change,
    rewrite: bool,
}

/// `next` with what `prev`, an earlier change of the same row, did that `next` does not
/// say (`None`: `next` as it is).
pub fn fold(prev: &Change, next: &Change) -> Option<Change> {
    match (prev.op, next.op) {
        (_, Op::I | Op::D) => None,
        (Op::U, Op::U) => {
            let mut old = prev.old.clone().unwrap_or_default();
            for (c, v) in next.old.iter().flatten() {
                old.entry(c.clone()).or_insert_with(|| v.clone());
            }
            if next.old.as_ref() == Some(&old) {
                return None;
            }
            Some(Change {
                old: Some(old),
                ..next.clone()
            })
        }
        // An insert (a download) or a delete before: the row is set whole.
        _ => Some(Change {
            op: Op::I,
            old: None,
            ..next.clone()
        }),
    }
}

/// Compacts `node`'s partial log after `acked` (see the module's overview), inside the
/// caller's transaction. Returns how many changes were removed and how many rewritten.
pub fn compact(conn: &Connection, node: &str, acked: i64) -> Result<(u64, u64)> {
    let mut removed: Vec<i64> = Vec::new();
    let mut rewritten: Vec<(i64, String)> = Vec::new();
    let mut segment: HashMap<(String, String), Slot> = HashMap::new();
    let flush = |segment: &mut HashMap<(String, String), Slot>,
                 rewritten: &mut Vec<(i64, String)>|
     -> Result<()> {
        for (_, slot) in segment.drain() {
            if slot.rewrite {
                let text =
                    serde_json::to_string(&slot.change).map_err(|e| EngineError::BadPayload {
                        bundle: String::new(),
                        entry: "partial log".into(),
                        reason: e.to_string(),
                    })?;
                rewritten.push((slot.ppos, text));
            }
        }
        Ok(())
    };
    {
        let mut st = conn.prepare_cached(
            "SELECT ppos, change FROM berth_partial WHERE node = ?1 AND ppos > ?2 ORDER BY ppos",
        )?;
        let mut rows = st.query(params![node, acked])?;
        while let Some(r) = rows.next()? {
            let ppos: i64 = r.get(0)?;
            let text: String = r.get(1)?;
            let change = match serde_json::from_str::<Change>(&text) {
                Ok(ch) if !barrier(&ch) => ch,
                _ => {
                    flush(&mut segment, &mut rewritten)?;
                    continue;
                }
            };
            let key = (change.t.clone(), change.key_text());
            match segment.get_mut(&key) {
                Some(slot) => {
                    removed.push(slot.ppos);
                    let folded = fold(&slot.change, &change);
                    slot.rewrite = folded.is_some();
                    slot.change = folded.unwrap_or(change);
                    slot.ppos = ppos;
                }
                None => {
                    segment.insert(
                        key,
                        Slot {
                            ppos,
                            change,
                            rewrite: false,
                        },
                    );
                }
            }
        }
    }
    flush(&mut segment, &mut rewritten)?;
    let mut del = conn.prepare_cached("DELETE FROM berth_partial WHERE node = ?1 AND ppos = ?2")?;
    for ppos in &removed {
        del.execute(params![node, ppos])?;
    }
    let mut upd =
        conn.prepare_cached("UPDATE berth_partial SET change = ?3 WHERE node = ?1 AND ppos = ?2")?;
    for (ppos, text) in &rewritten {
        upd.execute(params![node, ppos, text])?;
    }
    let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
    Ok((n(removed.len()), n(rewritten.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ch(text: serde_json::Value) -> Change {
        serde_json::from_value(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn updates_fold_into_one_naming_every_column_with_the_earliest_old_value() {
        let a =
            ch(json!({"pos":1,"t":"x","k":[1],"op":"U","old":{"a":1},"new":{"id":1,"a":2,"b":0}}));
        let b = ch(
            json!({"pos":2,"t":"x","k":[1],"op":"U","old":{"a":2,"b":0},"new":{"id":1,"a":3,"b":5}}),
        );
        let f = fold(&a, &b).unwrap_or_else(|| panic!("folds"));
        assert_eq!(f.op, Op::U);
        assert_eq!(f.pos, 2);
        assert_eq!(
            f.old,
            Some(serde_json::from_value(json!({"a":1,"b":0})).unwrap_or_default())
        );
        assert_eq!(f.new, b.new);
    }

    #[test]
    fn an_insert_or_delete_before_an_update_makes_it_a_whole_row() {
        let i = ch(json!({"pos":1,"t":"x","k":[1],"op":"I","new":{"id":1,"a":2}}));
        let d = ch(json!({"pos":1,"t":"x","k":[1],"op":"D","old":{"id":1,"a":2}}));
        let u = ch(json!({"pos":2,"t":"x","k":[1],"op":"U","old":{"a":2},"new":{"id":1,"a":3}}));
        for prev in [&i, &d] {
            let f = fold(prev, &u).unwrap_or_else(|| panic!("folds"));
            assert_eq!(
                (f.op, f.old.is_none(), f.new.clone()),
                (Op::I, true, u.new.clone())
            );
        }
        // The last delete or insert stands as it is.
        assert!(fold(&u, &d).is_none());
        assert!(fold(&d, &i).is_none());
    }

    #[test]
    fn markers_statements_and_corrective_changes_are_barriers() {
        assert!(barrier(&ch(
            json!({"pos":1,"t":"","k":[],"op":"A","ack":3})
        )));
        assert!(barrier(&ch(
            json!({"pos":1,"t":"x","k":[1],"op":"I","new":{"id":1},"ack":3})
        )));
        assert!(!barrier(&ch(
            json!({"pos":1,"t":"x","k":[1],"op":"I","new":{"id":1}})
        )));
    }
}
