//! Concurrent writes that a comparison of values cannot see (SPEC 2.10).
//!
//! Central finds most collisions by comparing the old values a node's change carries with
//! its current row. That misses one case: another site changed a column and changed it back
//! (or two sites' changes cancel out) after the node last saw the row. The value is what the
//! node saw, yet a write the node never saw was made, and the node's change would overwrite
//! it without a trace (an "ABA" lost update).
//!
//! So a node's change also says how far it had applied central's stream to it when it was
//! made (`seen`, a position of its partial log), and central's route marks turn that into a
//! position of central's log. Every entry of central's log after it on the same row, made
//! by another site (another node, or central's own application), contests the columns it
//! changed: a change of the node to such a column collides even where the values match.
//! What the node's own changes set off at central (its cascades, the application's
//! triggers) is its own and does not contest; nor do corrective changes.
//!
//! The contested rows are read once per bundle: one pass over the log after the earliest
//! position the bundle's changes saw.

use super::apply::{Catalog, Cols, read_row};
use crate::error::Result;
use crate::value::{Row, parse_key, parse_row_bytes, raw, same};
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};

/// The rows other sites changed after a position of central's log, and which columns.
#[derive(Debug, Default)]
pub struct Contest {
    /// The position the map covers the changes after.
    pub from: i64,
    /// By (table, key as JSON text): each contesting entry's position and the columns it
    /// changed.
    rows: HashMap<(String, String), Vec<(i64, Cols)>>,
}

/// One entry of a row's history: its position, whether another site made it, and the row
/// before it (`None`: the row did not exist).
struct Step {
    pos: i64,
    other: bool,
    before: Option<Row>,
}

/// The columns whose value differs between two states of a row (`None`: all of them).
fn changed(before: Option<&Row>, after: Option<&Row>) -> Option<Cols> {
    match (before, after) {
        (None, None) => None,
        (Some(b), Some(a)) => {
            let cols: BTreeSet<String> = b
                .keys()
                .chain(a.keys())
                .filter(|c| match (b.get(*c), a.get(*c)) {
                    (Some(x), Some(y)) => !same(x, y),
                    _ => true,
                })
                .cloned()
                .collect();
            (!cols.is_empty()).then_some(Cols::Some(cols))
        }
        _ => Some(Cols::All),
    }
}

impl Contest {
    /// Reads the log after `from`: the entries of rows another site than `node` changed
    /// since (`central` names central's own site, the origin of what merges set off).
    pub fn load(
        conn: &Connection,
        catalog: &Catalog,
        node: &str,
        central: &str,
        from: i64,
    ) -> Result<Contest> {
        let mut st = conn.prepare(
            "SELECT pos, tbl, pk, op, old, origin IS NULL OR (origin <> ?2 AND origin <> ?3)
             FROM berth_log WHERE pos > ?1 AND target IS NULL AND op IN ('I', 'U', 'D', 'P')
             ORDER BY pos",
        )?;
        let mut q = st.query(params![from, node, central])?;
        type Entry = (i64, bool, bool, Vec<u8>);
        let mut history: HashMap<(String, String), (Vec<Json>, Vec<Entry>)> = HashMap::new();
        while let Some(r) = q.next()? {
            let Some(k) = parse_key(raw(r.get_ref(2)?)) else {
                continue;
            };
            // The key as `Change::key_text` writes it.
            let text = serde_json::to_string(&k).unwrap_or_default();
            let slot = history
                .entry((r.get::<_, String>(1)?, text))
                .or_insert_with(|| (k, Vec::new()));
            slot.1.push((
                r.get(0)?,
                raw(r.get_ref(3)?) == b"I",
                r.get(5)?,
                raw(r.get_ref(4)?).to_vec(),
            ));
        }
        let mut rows = HashMap::new();
        for ((tbl, key), (k, entries)) in history {
            if !entries.iter().any(|e| e.2) {
                continue;
            }
            let Some(info) = catalog.tables.get(&tbl) else {
                continue;
            };
            let steps: Vec<Step> = entries
                .into_iter()
                .map(|(pos, insert, other, old)| Step {
                    pos,
                    other,
                    // An insert's `old` is empty, or the old key of a key change.
                    before: if insert { None } else { parse_row_bytes(&old) },
                })
                .collect();
            let now = read_row(conn, info, &k)?;
            let mut contested = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                if !step.other {
                    continue;
                }
                let after = match steps.get(i + 1) {
                    Some(next) => next.before.as_ref(),
                    None => now.as_ref(),
                };
                if let Some(cols) = changed(step.before.as_ref(), after) {
                    contested.push((step.pos, cols));
                }
            }
            if !contested.is_empty() {
                rows.insert((tbl, key), contested);
            }
        }
        Ok(Contest { from, rows })
    }

    /// Whether no row is contested.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The columns of a row other sites changed after position `after` (at least
    /// [`Self::from`]), if any.
    pub fn get(&self, table: &str, key: &str, after: i64) -> Option<Cols> {
        let entries = self.rows.get(&(table.to_string(), key.to_string()))?;
        Cols::union(
            entries
                .iter()
                .filter(|(pos, _)| *pos > after)
                .map(|(_, cols)| cols),
        )
    }
}
