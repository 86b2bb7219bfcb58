//! The fast path of a merge: a change nobody contested, written by prepared statements
//! kept per table and column set, in batches.

use super::*;

use crate::change::{Change, Op};
use crate::store::ident;
use crate::table::{Arg, OnConflict, WriteError, arg, binds, insert_sql};
use crate::value::Row;
use rusqlite::{params, params_from_iter};
use std::collections::HashMap;

/// Prepared fast-path statements of one merge, by (table, operation, column set), and the
/// journal insert: preparing or even looking them up by SQL text for every change would cost
/// as much as running them.
#[derive(Debug, Default)]
pub struct FastSql<'a> {
    pub(super) statements: std::cell::RefCell<HashMap<(usize, Op, u64), rusqlite::Statement<'a>>>,
    pub(super) journal: std::cell::RefCell<Option<rusqlite::Statement<'a>>>,
    /// The last log position already marked or queued ([`CentralMerge::tag`]).
    pub(super) seen: std::cell::Cell<Option<i64>>,
    /// Positions of the node's own entries still to be marked, with the change's `pos` and
    /// clock ([`CentralMerge::finish`]).
    pub(super) queued: std::cell::RefCell<Vec<(i64, i64, i64)>>,
    /// Changes a foreign key refused, to try again once the rest of the bundle is merged
    /// ([`CentralMerge::finish`]).
    pub(super) deferred: std::cell::RefCell<Vec<Change>>,
    /// Refusals are final: the deferred changes' last try.
    pub(super) last_try: std::cell::Cell<bool>,
    /// Deferred changes are being tried again (no nested tries).
    pub(super) retrying: std::cell::Cell<bool>,
    /// The tables each table's foreign keys refer to, as read once per merge.
    pub(super) parents: std::cell::RefCell<HashMap<String, Vec<String>>>,
    /// The rows other sites changed after what the bundle's changes saw
    /// ([`super::contest`]), read at its first change that says what it saw.
    pub(super) contest: std::cell::RefCell<Option<crate::merge::contest::Contest>>,
    /// The last `seen` turned into a position of central's log, and that position.
    pub(super) seen_at: std::cell::Cell<Option<(i64, Option<i64>)>>,
    /// For a node back from away: its stream after what a change saw, where the log no
    /// longer reaches back to it (SPEC 2.8, [`crate::merge::contest::Fallback`]).
    pub(super) away: std::cell::RefCell<Option<crate::merge::contest::Fallback>>,
}

/// Entries marked by one statement. Marking makes a journal row longer, so it is done while
/// the rows are still on the log's last pages: a bundle's worth at its end made SQLite split
/// pages all through the stretch and cost more than one statement per change (measured,
/// docs/BENCHMARKS.md section 3); 64 measured as well as 256, 16 a little worse.
pub(super) const MARK_BATCH: usize = 64;

/// Bit set of the positions of `cols` in the table's columns (None past 64 columns).
pub(super) fn column_mask(t: &TableInfo, cols: &[&String]) -> Option<u64> {
    let mut mask = 0u64;
    for c in cols {
        let i = t.cols.iter().position(|x| x == *c)?;
        if i >= 64 {
            return None;
        }
        mask |= 1 << i;
    }
    Some(mask)
}

/// The fast-path statement: an insert that does nothing on a key conflict, an update
/// conditional on the old values, a delete conditional on the whole old row.
pub(super) fn fast_sql(t: &TableInfo, op: Op, cols: &[&String]) -> String {
    let tbl = ident(&t.name);
    let n = cols.len();
    let numbered = |from: usize, sep: &str, f: &dyn Fn(&String, usize) -> String| {
        cols.iter()
            .enumerate()
            .map(|(i, c)| f(c, from + i + 1))
            .collect::<Vec<_>>()
            .join(sep)
    };
    match op {
        Op::I => insert_sql(t, cols, OnConflict::Keep),
        Op::U => {
            let sets = numbered(0, ", ", &|c, i| format!("{} = ?{i}", ident(c)));
            let conds = numbered(n, " AND ", &|c, i| format!("{} IS ?{i}", ident(c)));
            let keys =
                t.pk.iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} = ?{}", ident(c), 2 * n + i + 1))
                    .collect::<Vec<_>>()
                    .join(" AND ");
            format!("UPDATE {tbl} SET {sets} WHERE {conds} AND {keys}")
        }
        Op::D | Op::A | Op::S | Op::M => {
            let conds = numbered(0, " AND ", &|c, i| format!("{} IS ?{i}", ident(c)));
            format!("DELETE FROM {tbl} WHERE {conds}")
        }
    }
}

impl CentralMerge<'_> {
    /// The common case in one statement, without reading the row first: an insert of a new
    /// key, an update whose old values all still hold, a delete of an unchanged row. Returns
    /// false when the statement matched nothing (or broke a constraint), so the full
    /// collision check decides.
    pub(super) fn fast_path(
        &self,
        t: &TableInfo,
        ch: &Change,
    ) -> std::result::Result<bool, WriteError> {
        let empty = Row::new();
        let new = ch.new.as_ref().unwrap_or(&empty);
        let old = ch.old.as_ref().unwrap_or(&empty);
        let cols: Vec<&String> = match ch.op {
            Op::I => new.keys().collect(),
            Op::U => old.keys().collect(),
            Op::D => old.keys().collect(),
            Op::A | Op::S | Op::M => return Ok(false),
        };
        let usable = match ch.op {
            Op::I => !cols.is_empty(),
            Op::U => {
                !cols.is_empty()
                    && cols
                        .iter()
                        .all(|c| new.contains_key(*c) && !t.pk.contains(c))
            }
            Op::D => cols.len() == t.cols.len(),
            Op::A | Op::S | Op::M => false,
        };
        if !usable {
            return Ok(false);
        }
        let vals = self.fast_values(t, ch, &cols)?;
        let Some(mask) = column_mask(t, &cols) else {
            let mut st = self.conn.prepare_cached(&fast_sql(t, ch.op, &cols))?;
            return self.fast_run(t, ch, &mut st, &vals);
        };
        let key = (std::ptr::from_ref(t) as usize, ch.op, mask);
        let mut statements = self.sql.statements.borrow_mut();
        let st = match statements.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.conn.prepare(&fast_sql(t, ch.op, &cols))?)
            }
        };
        self.fast_run(t, ch, st, &vals)
    }

    /// The bound values of a fast-path statement, in the order [`fast_sql`] numbers them.
    pub(super) fn fast_values<'c>(
        &self,
        t: &TableInfo,
        ch: &'c Change,
        cols: &[&String],
    ) -> std::result::Result<Vec<Arg<'c>>, WriteError> {
        static EMPTY: std::sync::LazyLock<Row> = std::sync::LazyLock::new(Row::new);
        let new = ch.new.as_ref().unwrap_or(&EMPTY);
        let old = ch.old.as_ref().unwrap_or(&EMPTY);
        match ch.op {
            Op::I => binds(t, cols, new).map_err(WriteError::Payload),
            Op::U => {
                let mut vals = binds(t, cols, new).map_err(WriteError::Payload)?;
                vals.extend(binds(t, cols, old).map_err(WriteError::Payload)?);
                for k in &ch.k {
                    vals.push(arg(k).ok_or_else(|| WriteError::Payload("bad key value".into()))?);
                }
                Ok(vals)
            }
            Op::D | Op::A | Op::S | Op::M => binds(t, cols, old).map_err(WriteError::Payload),
        }
    }

    pub(super) fn fast_run(
        &self,
        t: &TableInfo,
        ch: &Change,
        st: &mut rusqlite::Statement<'_>,
        vals: &[Arg<'_>],
    ) -> std::result::Result<bool, WriteError> {
        let before = self.conn.total_changes();
        let changed = match st.execute(params_from_iter(vals.iter())) {
            Ok(n) => n,
            Err(e) if is_constraint(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if changed != 1 {
            return Ok(false);
        }
        if self.conn.total_changes() - before == 2 {
            // The row and one journal entry, its own, at the next position: nothing else
            // was set off. Marked with the others of the bundle at its end.
            self.queue(t, ch)?;
        } else {
            self.tag(t, ch)?;
        }
        Ok(true)
    }

    /// Queues the entry at the next position as the node's own change.
    pub(super) fn queue(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        let pos = self.seen()? + 1;
        self.sql.seen.set(Some(pos));
        let full = {
            let mut queued = self.sql.queued.borrow_mut();
            queued.push((pos, ch.pos, ch.c));
            queued.len() >= MARK_BATCH
        };
        if full {
            self.flush()?;
        }
        self.hold(t, ch)
    }

    /// Marks the queued entries as the node's, in one statement.
    pub(super) fn flush(&self) -> rusqlite::Result<()> {
        let queued = std::mem::take(&mut *self.sql.queued.borrow_mut());
        if queued.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(&queued).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET origin = ?1, origin_pos = j.value ->> 1, clock = j.value ->> 2
                 FROM json_each(?2) AS j WHERE berth_log.pos = j.value ->> 0",
            )?
            .execute(params![self.node, json])?;
        Ok(())
    }
}
