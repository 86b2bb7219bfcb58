//! A node applying central's row changes (SPEC 2.11): its own changes central had not merged
//! yet ([`Pending`]) are kept, and central's decisions are applied without being journaled.

use super::*;

use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
use crate::table::{OnConflict, WriteError, delete, insert_row, update};
use crate::value::Row;
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};

/// The node's local changes that central had not merged when it wrote a given change.
///
/// Central journals a marker (op `A`) each time it merges one of our bundles; changes after
/// the marker were decided knowing our changes up to its position, changes before it were
/// not. A change central made without knowing a local change must not overwrite it: central
/// settles that when the local change arrives, and sends a correction if it wins.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    pub(super) entries: Vec<(i64, String, String, Cols)>,
    pub(super) map: HashMap<(String, String), Cols>,
    /// Rows whose newest local entry is a pre-image not yet settled, by (table, key text):
    /// its position. Whether it was a delete is read from the table at export (SPEC 2.4),
    /// so it is settled before central's change alters the row ([`NodeApply::settle`]).
    pub(super) pre_images: HashMap<(String, String), i64>,
}

impl Pending {
    /// Loads the local changes after position `known`: what each exported as (the columns
    /// an update changed, or the whole row).
    pub fn load(conn: &Connection, catalog: &Catalog, known: i64) -> Result<Self> {
        let mut p = Pending::default();
        let filter = crate::change::Filter {
            after: known,
            peer: None,
            key_updates: false,
            seen_now: None,
        };
        crate::change::export(conn, &filter, catalog, |ch| {
            let cols = match ch.op {
                Op::U => Cols::Some(ch.old.iter().flat_map(|o| o.keys().cloned()).collect()),
                Op::I | Op::D => Cols::All,
                Op::A | Op::S | Op::M => return Ok(()),
            };
            p.entries.push((ch.pos, ch.t.clone(), ch.key_text(), cols));
            Ok(())
        })?;
        let mut st = conn.prepare_cached(
            "SELECT pos, tbl, pk, op = 'P' AND new IS NULL FROM berth_log
             WHERE pos > ?1 AND target IS NULL AND op IN ('I', 'U', 'D', 'P') ORDER BY pos",
        )?;
        let mut rows = st.query(params![known])?;
        let mut newest: HashMap<(String, String), (i64, bool)> = HashMap::new();
        while let Some(r) = rows.next()? {
            let key = crate::value::parse_key(crate::value::raw(r.get_ref(2)?))
                .and_then(|k| serde_json::to_string(&k).ok())
                .unwrap_or_default();
            newest.insert((r.get(1)?, key), (r.get(0)?, r.get(3)?));
        }
        p.pre_images = newest
            .into_iter()
            .filter(|(_, (_, open))| *open)
            .map(|(k, (pos, _))| (k, pos))
            .collect();
        p.advance(known);
        Ok(p)
    }

    /// Follows a schema migration: entries move to the tables' and columns' new names;
    /// entries of tables that are gone, and dropped columns, are forgotten.
    pub fn translate(&mut self, tr: &impl crate::merge::Renames) {
        let entries = std::mem::take(&mut self.entries);
        self.entries = entries
            .into_iter()
            .filter_map(|(pos, tbl, pk, cols)| {
                let t = tr.table(&tbl)?;
                let cols = match cols {
                    Cols::All => Cols::All,
                    Cols::Some(set) => {
                        Cols::Some(set.into_iter().filter_map(|c| tr.column(&t, &c)).collect())
                    }
                };
                Some((pos, t, pk, cols))
            })
            .collect();
        self.pre_images = std::mem::take(&mut self.pre_images)
            .into_iter()
            .filter_map(|((tbl, pk), pos)| Some(((tr.table(&tbl)?, pk), pos)))
            .collect();
        self.advance(i64::MIN);
    }

    /// Forgets the local changes up to `known` (central has merged them).
    pub fn advance(&mut self, known: i64) {
        self.entries.retain(|e| e.0 > known);
        self.map.clear();
        for (_, tbl, pk, cols) in &self.entries {
            let slot = self
                .map
                .entry((tbl.clone(), pk.clone()))
                .or_insert(Cols::Some(BTreeSet::new()));
            match (slot, cols) {
                (s @ Cols::Some(_), Cols::All) => *s = Cols::All,
                (Cols::Some(have), Cols::Some(more)) => have.extend(more.iter().cloned()),
                (Cols::All, _) => {}
            }
        }
    }

    /// The (table, key text) of every row with local changes or an open pre-image.
    pub fn keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.map.keys().chain(self.pre_images.keys())
    }

    /// The position of the newest local entry of a row.
    pub(super) fn last(&self, tbl: &str, pk: &str) -> Option<i64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.1 == tbl && e.2 == pk)
            .map(|e| e.0)
    }

    pub(super) fn get(&self, tbl: &str, pk: &str) -> Option<Cols> {
        self.map.get(&(tbl.to_string(), pk.to_string())).cloned()
    }

    /// Local changes to one row after position `after` (for a corrective change, which was
    /// decided knowing our changes up to `after` only).
    pub(super) fn get_after(&self, tbl: &str, pk: &str, after: i64) -> Option<Cols> {
        Cols::union(
            self.entries
                .iter()
                .filter(|e| e.0 > after && e.1 == tbl && e.2 == pk)
                .map(|e| &e.3),
        )
    }
}

/// A change of `bundle` that cannot be right.
pub(super) fn bad_change(bundle: &str, ch: &Change, reason: String) -> EngineError {
    EngineError::BadPayload {
        bundle: bundle.to_string(),
        entry: format!("change at position {}", ch.pos),
        reason,
    }
}

/// Applies central's changes at a node. Central has already decided, so they apply, except
/// over local changes central did not know of when it made them (see [`Pending`]); each such
/// case is recorded in `berth_overrides` for the user and settled by central when the local
/// change arrives.
#[derive(Debug)]
pub struct NodeApply<'a> {
    /// The open transaction's connection.
    pub conn: &'a Connection,
    /// The replicated tables (replaced when a migration in the stream changes them).
    pub catalog: std::borrow::Cow<'a, Catalog>,
    /// The bundle being applied.
    pub bundle_id: &'a str,
    /// Local changes central had not merged.
    pub pending: Pending,
    /// Apply time.
    pub now: i64,
}

impl NodeApply<'_> {
    /// Central's change is about to set columns of a row with local changes it has not
    /// merged. Applying it is not journaled, so the newest local entry of the row, whose new
    /// row would otherwise be read from the table at export, gets the row as it is now
    /// stored with it: the local change still travels exactly as it was made.
    pub(super) fn pin(&self, t: &TableInfo, k: &[Json], key: &str) -> Result<()> {
        let Some(pos) = self.pending.last(&t.name, key) else {
            return Ok(());
        };
        let Some(row) = read_row(self.conn, t, k)? else {
            return Ok(());
        };
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET new = ?2 WHERE pos = ?1 AND new IS NULL AND op IN ('I', 'U')",
            )?
            .execute(params![pos, json_text(Some(&row))])?;
        Ok(())
    }

    /// Central's change is about to alter a row whose newest local entry is a pre-image
    /// that export would settle by reading the table: it is settled now, by the row as the
    /// local statement left it: gone (the statement displaced it: the pre-image becomes its
    /// delete) or there (nothing happened: it is marked void).
    pub(super) fn settle(
        conn: &Connection,
        pending: &mut Pending,
        t: &TableInfo,
        k: &[Json],
        key: &str,
    ) -> Result<()> {
        let Some(pos) = pending
            .pre_images
            .remove(&(t.name.clone(), key.to_string()))
        else {
            return Ok(());
        };
        let sql = if read_row(conn, t, k)?.is_some() {
            "UPDATE berth_log SET new = 'void' WHERE pos = ?1"
        } else {
            "UPDATE berth_log SET op = 'D' WHERE pos = ?1"
        };
        conn.prepare_cached(sql)?.execute(params![pos])?;
        Ok(())
    }

    /// The error for a change of this bundle that cannot be right.
    pub fn bad(&self, ch: &Change, reason: String) -> EngineError {
        bad_change(self.bundle_id, ch, reason)
    }

    /// Applies one row change (insert, update or delete).
    pub fn apply(&mut self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        let bundle = self.bundle_id;
        let bad = |reason: String| bad_change(bundle, ch, reason);
        ch.check().map_err(|r| bad(r.to_string()))?;
        if !matches!(ch.op, Op::I | Op::U | Op::D) {
            // Markers, statements and migrations are the dock's to dispatch.
            return Err(bad(format!("{:?} is not a row change", ch.op)));
        }
        let t = self
            .catalog
            .tables
            .get(&ch.t)
            .ok_or_else(|| bad(format!("unknown table {}", ch.t)))?;
        check_key(t, ch).map_err(bad)?;
        let key = ch.key_text();
        if !self.pending.pre_images.is_empty() {
            Self::settle(self.conn, &mut self.pending, t, &ch.k, &key)?;
        }
        let pending = match ch.ack {
            Some(after) => self.pending.get_after(&ch.t, &key, after),
            None => self.pending.get(&ch.t, &key),
        };
        let keep = |c: &String| match &pending {
            None => true,
            Some(Cols::All) => false,
            Some(Cols::Some(cols)) => !cols.contains(c),
        };
        if let (Op::I | Op::U, Some(Cols::Some(_))) = (ch.op, &pending) {
            self.pin(t, &ch.k, &key)?;
        }
        let empty = Row::new();
        let new = ch.new.as_ref().unwrap_or(&empty);
        let result = match (ch.op, &pending) {
            (_, Some(Cols::All)) | (Op::D, Some(_)) => Ok(()),
            (Op::I, _) => {
                let set: Row = new
                    .iter()
                    .filter(|(c, _)| keep(c) && !t.pk.contains(c))
                    .map(|(c, v)| (c.clone(), v.clone()))
                    .collect();
                if set.is_empty() {
                    // Only key columns (or only columns kept locally): add the row if missing.
                    insert_row(self.conn, t, new, OnConflict::Keep)
                } else {
                    match update(self.conn, t, &ch.k, &set) {
                        Ok(0) => insert_row(self.conn, t, new, OnConflict::Replace),
                        other => other.map(|_| ()),
                    }
                }
            }
            (Op::U, _) => {
                let set: Row = ch
                    .old
                    .as_ref()
                    .unwrap_or(&empty)
                    .keys()
                    .filter(|c| keep(c))
                    .filter_map(|c| new.get(c).map(|v| (c.clone(), v.clone())))
                    .collect();
                match update(self.conn, t, &ch.k, &set) {
                    Ok(0) if pending.is_none() => {
                        insert_row(self.conn, t, new, OnConflict::Replace)
                    }
                    other => other.map(|_| ()),
                }
            }
            (Op::D, None) => delete(self.conn, t, &ch.k),
            (Op::A | Op::S | Op::M, _) => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        if pending.is_some() {
            stats.overrides += 1;
            self.conn
                .prepare_cached(
                    "INSERT INTO berth_overrides(tbl, pk, local_op, central_op, bundle_id, at)
                     VALUES (?1, ?2, COALESCE((SELECT op FROM berth_log WHERE tbl = ?1 AND pk = ?2
                                      ORDER BY pos DESC LIMIT 1), '?'), ?3, ?4, ?5)",
                )?
                .execute(params![ch.t, key, ch.op.as_str(), self.bundle_id, self.now])?;
        }
        stats.applied += 1;
        Ok(())
    }
}
