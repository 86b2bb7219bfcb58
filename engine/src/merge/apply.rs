//! The shell around [`super::resolve`]: reads current rows, writes the decision, journals it.

pub use super::Cols;
use super::{Collision, Corrective, Policy, Resolution, Write, resolve};
use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
use crate::store::ident;
pub use crate::table::{Catalog, TableInfo, is_constraint, read_row};
use crate::table::{OnConflict, WriteError, delete, insert_row, update};
use crate::value::{Row, same};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value as Json;

mod authorize;
mod fast;
mod node;

pub use authorize::*;
pub use fast::*;
pub use node::*;

/// The new key of an update that changes its row's key (SPEC 2.5), else `None`.
fn moved_to(t: &TableInfo, ch: &Change) -> Option<Vec<Json>> {
    if ch.op != Op::U || t.pk.len() != ch.k.len() {
        return None;
    }
    let new = ch.new.as_ref()?;
    let to: Vec<Json> =
        t.pk.iter()
            .map(|c| new.get(c).cloned())
            .collect::<Option<_>>()?;
    (!to.iter().zip(&ch.k).all(|(a, b)| same(a, b))).then_some(to)
}

/// True for a FOREIGN KEY violation.
fn is_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The columns a change writes (those of its `new`), for a conflict record.
fn new_columns(ch: &Change) -> Vec<String> {
    ch.new
        .as_ref()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn json_text(row: Option<&Row>) -> Option<String> {
    row.and_then(|r| serde_json::to_string(r).ok())
}

/// Counts of what a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeStats {
    /// Changes that applied in full.
    pub applied: u64,
    /// Changes skipped because they were already applied (positions seen before).
    pub skipped: u64,
    /// Changes that collided (rejected in full or in part, or applied over central's value).
    pub conflicts: u64,
    /// At a node: central changes that overrode a local change not yet acknowledged.
    pub overrides: u64,
    /// At a node: rows central's repair changed (SPEC 2.15).
    pub repaired: u64,
}

/// Merges one node's changes at central (Figure 5), journaling accepted changes with their
/// origin, recording collisions and journaling corrective changes for the node.
#[derive(Debug)]
pub struct CentralMerge<'a> {
    /// The open transaction's connection.
    pub conn: &'a Connection,
    /// The replicated tables.
    pub catalog: &'a Catalog,
    /// The node whose bundle this is.
    pub node: &'a str,
    /// The bundle id (for the conflict record).
    pub bundle_id: &'a str,
    /// Central's logical clock for corrective changes.
    pub clock: i64,
    /// Central's own site name (for latest-wins ties).
    pub central: &'a str,
    /// Merge time (Unix seconds).
    pub now: i64,
    /// SQL of the fast-path statements, by (table, operation, column set): building it for
    /// every change would cost as much as running it.
    pub sql: FastSql<'a>,
    /// Write authorization from the docking model (none: every table is open to nodes).
    pub auth: Option<Authorization<'a>>,
}

/// A key with another number of values than its table's key columns can never address a
/// row: the change is malformed (permanent), not a failure to retry at every dock.
fn check_key(t: &TableInfo, ch: &Change) -> std::result::Result<(), String> {
    if ch.k.len() == t.pk.len() {
        Ok(())
    } else {
        Err(format!(
            "its key has {} values, but table {} has {} key columns ({})",
            ch.k.len(),
            t.name,
            t.pk.len(),
            t.pk.join(", ")
        ))
    }
}

impl CentralMerge<'_> {
    /// Merges one change.
    pub fn merge(&self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        self.merge_one(ch, stats)?;
        // Nothing waits in almost every bundle: the key test stays off the hot path.
        if self.sql.retrying.get() || self.sql.deferred.borrow().is_empty() {
            return Ok(());
        }
        let adds_key = ch.op == Op::I
            || self
                .catalog
                .tables
                .get(&ch.t)
                .is_some_and(|t| moved_to(t, ch).is_some());
        if adds_key {
            self.retry_children(&ch.t, stats)?;
        }
        Ok(())
    }

    /// A row of `table` was added or re-keyed: the deferred changes whose foreign keys
    /// refer to that table are tried again at once, before later changes of the bundle
    /// (a child's update journaled before its parent's key change goes right after it,
    /// as the writer's SQLite ordered them; not after a later change of that parent).
    fn retry_children(&self, table: &str, stats: &mut MergeStats) -> Result<()> {
        let waiting = std::mem::take(&mut *self.sql.deferred.borrow_mut());
        self.sql.retrying.set(true);
        let mut out = Ok(());
        for ch in waiting {
            if out.is_ok() && self.refers_to(&ch.t, table)? {
                out = self.merge_one(&ch, stats);
            } else {
                self.sql.deferred.borrow_mut().push(ch);
            }
        }
        self.sql.retrying.set(false);
        out
    }

    /// Whether a foreign key of `child` refers to `parent`.
    fn refers_to(&self, child: &str, parent: &str) -> Result<bool> {
        let mut parents = self.sql.parents.borrow_mut();
        let list = match parents.entry(child.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                self.conn
                    .prepare(&format!("PRAGMA foreign_key_list({})", ident(child)))?
                    .query_map([], |r| r.get::<_, String>(2))?
                    .collect::<rusqlite::Result<_>>()?,
            ),
        };
        Ok(list.iter().any(|p| p.eq_ignore_ascii_case(parent)))
    }

    /// Merges one change, without trying deferred ones again.
    fn merge_one(&self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        let bad = |reason: String| self.malformed(ch, reason);
        ch.check().map_err(|r| bad(r.to_string()))?;
        if matches!(ch.op, Op::S | Op::A | Op::M) {
            return Err(bad("a node cannot send statements or markers".into()));
        }
        self.seen()?;
        let Some(t) = self.catalog.tables.get(&ch.t) else {
            self.record(ch, "denied", &[], None, "refused")?;
            stats.conflicts += 1;
            return Ok(());
        };
        check_key(t, ch).map_err(bad)?;
        if self.waits(ch) {
            // A change of a row whose earlier change waits goes after it.
            self.defer(ch);
            return Ok(());
        }
        let denied = self.denied(t, ch)?;
        if denied.is_none() {
            match self.links(t, ch)? {
                Links::Allowed => {}
                Links::Wait => {
                    self.defer(ch);
                    return Ok(());
                }
                Links::Denied(reason) => return self.deny_links(t, ch, &reason, stats),
            }
        }
        if let Some(to) = moved_to(t, ch) {
            return self.key_change(t, ch, to, stats);
        }
        if let Some(corrective) = denied {
            // Invariant 4: a node cannot change what it may not see or may not write.
            let cur = read_row(self.conn, t, &ch.k)?;
            let cols: Vec<String> = ch
                .new
                .as_ref()
                .or(ch.old.as_ref())
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            self.record(ch, "denied", &cols, cur.as_ref(), "refused")?;
            let corrective = match (corrective, cur) {
                (Corrective::Upsert(_), Some(cur)) => Corrective::Upsert(cur),
                (Corrective::Upsert(_), None) | (Corrective::Delete, _) => Corrective::Delete,
                (other, _) => other,
            };
            self.journal_corrective(t, ch, &corrective)?;
            stats.conflicts += 1;
            return Ok(());
        }
        let contested = self.contested(t, ch)?;
        let fast = match contested {
            None => self.fast_path(t, ch),
            Some(_) => Ok(false),
        };
        match fast {
            Ok(true) => {
                stats.applied += 1;
                return Ok(());
            }
            Ok(false) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        // What the full check reads of the log (latest-wins) must be marked already.
        self.flush()?;
        let current = read_row(self.conn, t, &ch.k)?;
        let node_wins = match t.policy {
            Policy::CentralWins => false,
            Policy::NodeWins => true,
            Policy::LatestWins => self.node_is_later(t, ch)?,
        };
        let res = resolve(current.as_ref(), ch, node_wins, contested.as_ref());
        match self.execute(t, ch, &res) {
            Ok(()) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) if self.defers(&e) => {
                // The row it refers to may come later in the bundle: a node's writer with
                // foreign keys on journals ON UPDATE CASCADE's child updates before the key
                // change of their parent.
                self.defer(ch);
                return Ok(());
            }
            Err(WriteError::Sql(e)) if is_constraint(&e) => {
                let corrective = match &current {
                    Some(cur) => Corrective::Upsert(cur.clone()),
                    None => Corrective::Delete,
                };
                let cols = new_columns(ch);
                self.record(
                    ch,
                    Collision::Constraint.as_str(),
                    &cols,
                    current.as_ref(),
                    "refused",
                )?;
                self.journal_corrective(t, ch, &corrective)?;
                stats.conflicts += 1;
                return Ok(());
            }
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        if let Some((kind, cols)) = &res.collision {
            let resolution = if res.corrective.is_some() {
                "central-wins"
            } else {
                "node-wins"
            };
            self.record(ch, kind.as_str(), cols, current.as_ref(), resolution)?;
            stats.conflicts += 1;
        } else {
            stats.applied += 1;
        }
        if let Some(c) = &res.corrective {
            self.journal_corrective(t, ch, c)?;
        }
        Ok(())
    }

    /// The columns of the change's row that another site changed after the node last saw
    /// it, though their values may be back to what it saw (SPEC 2.10).
    fn contested(&self, t: &TableInfo, ch: &Change) -> Result<Option<Cols>> {
        let Some(seen) = ch.seen else {
            return Ok(None);
        };
        let from = match self.sql.seen_at.get() {
            Some((s, from)) if s == seen => from,
            _ => {
                let from = super::contest::seen_pos(self.conn, self.node, seen)?;
                self.sql.seen_at.set(Some((seen, from)));
                from
            }
        };
        let Some(from) = from else {
            return Ok(None);
        };
        {
            let mut away = self.sql.away.borrow_mut();
            let away = match away.as_mut() {
                Some(a) if a.seen == seen => a,
                _ => away.insert(super::contest::Fallback::load(
                    self.conn, self.node, seen, from,
                )?),
            };
            if away.active {
                return Ok(away.get(&t.name, &ch.key_text()));
            }
        }
        let mut contest = self.sql.contest.borrow_mut();
        let contest = match contest.as_mut() {
            Some(c) if c.from <= from => c,
            _ => {
                // The node's entries queued so far must show as its own.
                self.flush()?;
                contest.insert(super::contest::Contest::load(self.conn, from)?)
            }
        };
        contest.get(
            self.conn,
            t,
            &ch.k,
            &ch.key_text(),
            (self.node, self.central),
            from,
        )
    }

    fn node_is_later(&self, t: &TableInfo, ch: &Change) -> Result<bool> {
        let key = ch.key_text();
        let last: Option<(Option<i64>, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT clock, origin FROM berth_log WHERE tbl = ?1 AND pk = ?2 AND target IS NULL
                 ORDER BY pos DESC LIMIT 1",
            )?
            .query_row(params![t.name, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((clock, origin)) = last else {
            return Ok(true);
        };
        let theirs = (
            clock.unwrap_or(self.clock),
            origin.unwrap_or_else(|| self.central.to_string()),
        );
        // Later logical time wins; on a tie the lower site name wins, the same everywhere.
        Ok((ch.c, std::cmp::Reverse(self.node)) > (theirs.0, std::cmp::Reverse(theirs.1.as_str())))
    }

    /// The error for a change of this bundle that is malformed (the bundle is refused).
    fn malformed(&self, ch: &Change, reason: String) -> EngineError {
        EngineError::BadPayload {
            bundle: self.bundle_id.to_string(),
            entry: format!("change at position {}", ch.pos),
            reason,
        }
    }

    /// Whether a write's error makes its change wait for another try: a foreign key refused
    /// it, and this is not the last try.
    fn defers(&self, e: &rusqlite::Error) -> bool {
        is_foreign_key(e) && !self.sql.last_try.get()
    }

    /// Puts a change among those waiting, after the ones already there.
    fn defer(&self, ch: &Change) {
        self.sql.deferred.borrow_mut().push(ch.clone());
    }

    /// Whether an earlier change of the same row waits for another try.
    fn waits(&self, ch: &Change) -> bool {
        let deferred = self.sql.deferred.borrow();
        !self.sql.last_try.get()
            && !deferred.is_empty()
            && deferred.iter().any(|d| d.t == ch.t && d.k == ch.k)
    }

    /// Tries again the changes a foreign key refused, while any of them goes through (one
    /// may make room for another); a change still refused on the last try is recorded as a
    /// `constraint` collision. Then marks every entry still queued. Call once the bundle's
    /// last change is merged.
    pub fn finish(&self, stats: &mut MergeStats) -> Result<()> {
        loop {
            let waiting = std::mem::take(&mut *self.sql.deferred.borrow_mut());
            if waiting.is_empty() {
                break;
            }
            let before = waiting.len();
            for ch in &waiting {
                self.merge(ch, stats)?;
            }
            if self.sql.deferred.borrow().len() == before {
                self.sql.last_try.set(true);
            }
        }
        self.sql.last_try.set(false);
        Ok(self.flush()?)
    }

    /// Merges a node's update of a row's key. When central's row still holds the old values
    /// of every column the node changed, it is one `UPDATE` of the key, so central's own
    /// `ON UPDATE` actions carry the row's children with it (a child the node does not hold
    /// included). Anything else (the row changed at central or gone, the new key taken, the
    /// change not allowed) is merged as what it also is, the delete of the old key and the
    /// insert of the new, each checked and resolved as such (SPEC 2.10).
    fn key_change(
        &self,
        t: &TableInfo,
        ch: &Change,
        to: Vec<Json>,
        stats: &mut MergeStats,
    ) -> Result<()> {
        let empty = Row::new();
        let old = ch.old.as_ref().unwrap_or(&empty);
        let new = ch.new.as_ref().unwrap_or(&empty);
        if self.denied(t, ch)?.is_none() {
            self.flush()?;
            let current = read_row(self.conn, t, &ch.k)?;
            // Another site's change to a column the node changed, even one whose value is
            // back to what the node saw, is a collision: merged as the delete it also is.
            let contested = match self.contested(t, ch)? {
                None => false,
                Some(Cols::All) => true,
                Some(Cols::Some(cols)) => old.keys().any(|c| cols.contains(c)),
            };
            let clean = !contested
                && current.as_ref().is_some_and(|cur| {
                    old.iter()
                        .all(|(c, was)| cur.get(c).is_some_and(|now| same(now, was)))
                });
            if clean {
                let set: Row = old
                    .keys()
                    .filter_map(|c| new.get(c).map(|v| (c.clone(), v.clone())))
                    .collect();
                match update(self.conn, t, &ch.k, &set) {
                    Ok(_) => {
                        self.tag_moved(t, ch, &to)?;
                        stats.applied += 1;
                        // Central changed other columns of the row since the node saw it:
                        // those changes, made under the old key, no longer reach the node
                        // (it deleted that key), so the row as it now stands goes to it.
                        let moved = Change {
                            k: to,
                            ..ch.clone()
                        };
                        if let Some(row) = read_row(self.conn, t, &moved.k)?
                            && row
                                .iter()
                                .any(|(c, v)| new.get(c).is_none_or(|n| !same(v, n)))
                        {
                            self.journal_corrective(t, &moved, &Corrective::Upsert(row))?;
                        }
                        return Ok(());
                    }
                    Err(WriteError::Payload(r)) => return Err(self.malformed(ch, r)),
                    Err(WriteError::Sql(e)) if self.defers(&e) => {
                        self.defer(ch);
                        return Ok(());
                    }
                    Err(WriteError::Sql(e)) if is_constraint(&e) => {}
                    Err(WriteError::Sql(e)) => return Err(e.into()),
                }
            }
        }
        let mut whole_old = new.clone();
        whole_old.extend(old.iter().map(|(c, v)| (c.clone(), v.clone())));
        let delete = Change {
            op: Op::D,
            old: Some(whole_old),
            new: None,
            ..ch.clone()
        };
        let insert = Change {
            op: Op::I,
            k: to,
            old: None,
            ..ch.clone()
        };
        self.merge(&delete, stats)?;
        self.merge(&insert, stats)
    }

    /// [`Self::tag`] for a key change: the entries of the row under its old key and its new
    /// one are the node's; the node holds the row under its new key.
    fn tag_moved(&self, t: &TableInfo, ch: &Change, to: &[Json]) -> rusqlite::Result<()> {
        let from = self.seen()?;
        self.tag(t, ch)?;
        let to_text = serde_json::to_string(to).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET origin = ?1 WHERE pos > ?2 AND tbl = ?3 AND pk = ?4
                   AND target IS NULL AND origin = ?5",
            )?
            .execute(params![self.node, from, t.name, to_text, self.central])?;
        if self.limited(t) {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![self.node, t.name, to_text])?;
        }
        Ok(())
    }

    /// Marks what the write just made journaled through the capture triggers: the entries
    /// of the node's own row as the node's (they are not sent back to it), the rest (the
    /// cascades of foreign keys, the application's own triggers) as central's, routed to
    /// every node that holds those rows, the writer included (SPEC 2.10).
    fn tag(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        let from = self.seen()?;
        let mut journal = self.sql.journal.borrow_mut();
        let st = match journal.as_mut() {
            Some(st) => st,
            None => journal.insert(self.conn.prepare(
                "UPDATE berth_log SET origin = CASE WHEN tbl = ?2 AND pk = ?3 THEN ?4 ELSE ?5 END,
                   origin_pos = ?6, clock = ?7
                 WHERE pos > ?1 AND target IS NULL RETURNING pos",
            )?),
        };
        let mut top = from;
        let mut rows = st.query(params![
            from,
            t.name,
            ch.key_text(),
            self.node,
            self.central,
            ch.pos,
            ch.c
        ])?;
        while let Some(r) = rows.next()? {
            top = top.max(r.get(0)?);
        }
        self.sql.seen.set(Some(top));
        drop(rows);
        self.hold(t, ch)
    }

    /// The node holds a row it made from the moment central accepts it: its later changes to
    /// it are allowed before any routing pass has run (SPEC 2.8).
    fn hold(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        if ch.op == Op::I && self.limited(t) {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![self.node, t.name, ch.key_text()])?;
        }
        Ok(())
    }

    /// The last position marked, read once per merge, before its first write.
    fn seen(&self) -> rusqlite::Result<i64> {
        if let Some(p) = self.sql.seen.get() {
            return Ok(p);
        }
        let p = self
            .conn
            .query_row("SELECT COALESCE(MAX(pos), 0) FROM berth_log", [], |r| {
                r.get(0)
            })?;
        self.sql.seen.set(Some(p));
        Ok(p)
    }

    fn limited(&self, t: &TableInfo) -> bool {
        use crate::route::model::Visibility;
        self.auth.as_ref().is_some_and(|a| {
            a.model
                .tables
                .get(&t.name.to_lowercase())
                .is_some_and(|spec| spec.visibility == Visibility::Limited)
        })
    }

    fn execute(
        &self,
        t: &TableInfo,
        ch: &Change,
        res: &Resolution,
    ) -> std::result::Result<(), WriteError> {
        // Journaled by the capture triggers, with whatever the write set off.
        match &res.write {
            Write::None => {
                if ch.op == Op::I {
                    // The node's insert matched central's row: the node holds it.
                    self.tag(t, ch)?;
                }
                return Ok(());
            }
            Write::Insert(row) => insert_row(self.conn, t, row, OnConflict::Fail)?,
            Write::Update(set) => {
                update(self.conn, t, &ch.k, set)?;
            }
            Write::Delete => delete(self.conn, t, &ch.k)?,
        }
        self.tag(t, ch)?;
        Ok(())
    }

    fn journal_corrective(&self, t: &TableInfo, ch: &Change, c: &Corrective) -> Result<()> {
        let (op, old, new) = match c {
            Corrective::Upsert(row) => (Op::I, None, Some(row.clone())),
            Corrective::SetColumns { node, central } => {
                (Op::U, Some(node.clone()), Some(central.clone()))
            }
            Corrective::Delete => (Op::D, ch.new.clone().or_else(|| ch.old.clone()), None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO berth_log(tbl, pk, op, old, new, origin, origin_pos, clock, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8)",
            )?
            .execute(params![
                t.name,
                ch.key_text(),
                op.as_str(),
                json_text(old.as_ref()),
                json_text(new.as_ref()),
                ch.pos,
                self.clock,
                self.node
            ])?;
        self.sql.seen.set(Some(self.conn.last_insert_rowid()));
        Ok(())
    }

    fn record(
        &self,
        ch: &Change,
        kind: &str,
        cols: &[String],
        cur: Option<&Row>,
        resolution: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO berth_conflicts(node, tbl, pk, kind, columns, node_old, node_new, central,
                   resolution, bundle_id, origin_pos, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                self.node,
                ch.t,
                ch.key_text(),
                kind,
                serde_json::to_string(cols).unwrap_or_default(),
                json_text(ch.old.as_ref()),
                json_text(ch.new.as_ref()),
                json_text(cur),
                resolution,
                self.bundle_id,
                ch.pos,
                self.now
            ])?;
        Ok(())
    }
}

/// Sets a row to `row` (insert or replace), or deletes it when `row` is `None`: a repair
/// (SPEC 2.15), or a row it kept aside written back.
pub fn repair_row(conn: &Connection, t: &TableInfo, key: &[Json], row: Option<&Row>) -> Result<()> {
    let done = match row {
        Some(r) => insert_row(conn, t, r, OnConflict::Replace),
        None => delete(conn, t, key),
    };
    match done {
        Ok(()) => Ok(()),
        Err(WriteError::Sql(e)) => Err(e.into()),
        Err(WriteError::Payload(reason)) => Err(EngineError::BadPayload {
            bundle: String::new(),
            entry: format!(
                "repair of {} {}",
                t.name,
                serde_json::to_string(key).unwrap_or_default()
            ),
            reason,
        }),
    }
}
