//! Changes captured under an older schema, translated to the current one: renamed tables
//! and columns followed, dropped ones gone.

use super::stream::state;
use crate::change::{Change, Op};
use crate::error::Result;
use crate::evolve::history::{self, Migration};
use crate::evolve::snapshot::Snapshot;
use crate::store;
use crate::value::{Row, log_row};
use rusqlite::{Connection, params};
use std::collections::BTreeMap;

/// How names of one schema version map to the next: renamed tables and columns followed,
/// dropped tables and columns gone. Built from a migration's rename hints and the schema it
/// leads to.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Old table name (lower case) -> new table name, for tables that exist afterwards.
    tables: BTreeMap<String, String>,
    /// Table name (new name, lower case) -> old column (lower case) -> new column name.
    columns: BTreeMap<String, BTreeMap<String, String>>,
    /// Table (new name, lower case) -> its name and its columns afterwards (lower case ->
    /// name).
    after: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

impl Translation {
    /// The translation of migration `m` into the schema `after` it leads to.
    pub fn new(m: &Migration, after: &Snapshot) -> Translation {
        let mut tr = Translation::default();
        for t in &after.tables {
            tr.after.insert(
                t.name.to_ascii_lowercase(),
                (
                    t.name.clone(),
                    t.columns
                        .iter()
                        .map(|c| (c.name.to_ascii_lowercase(), c.name.clone()))
                        .collect(),
                ),
            );
        }
        let hints: Vec<crate::evolve::diff::Rename> =
            m.renames.iter().filter_map(|h| h.parse().ok()).collect();
        for h in &hints {
            if let crate::evolve::diff::Rename::Table { from, to } = h {
                tr.tables
                    .insert(from.to_ascii_lowercase(), to.to_ascii_lowercase());
            }
        }
        for h in &hints {
            if let crate::evolve::diff::Rename::Column { table, from, to } = h {
                // The hint names the table by its old or its new name.
                let lower = table.to_ascii_lowercase();
                let new_table = tr.tables.get(&lower).cloned().unwrap_or(lower);
                tr.columns
                    .entry(new_table)
                    .or_default()
                    .insert(from.to_ascii_lowercase(), to.to_ascii_lowercase());
            }
        }
        tr
    }

    /// The table's name afterwards, `None` when it is gone.
    pub fn table(&self, old: &str) -> Option<String> {
        let lower = old.to_ascii_lowercase();
        let new = self.tables.get(&lower).unwrap_or(&lower);
        self.after.get(new).map(|(name, _)| name.clone())
    }

    /// The column's name afterwards in `new_table`, `None` when it is gone.
    pub fn column(&self, new_table: &str, old: &str) -> Option<String> {
        let t = new_table.to_ascii_lowercase();
        let lower = old.to_ascii_lowercase();
        let renamed = self
            .columns
            .get(&t)
            .and_then(|m| m.get(&lower))
            .cloned()
            .unwrap_or(lower);
        self.after.get(&t)?.1.get(&renamed).cloned()
    }

    /// Translates a row's column names (values of dropped columns are dropped).
    pub fn row(&self, new_table: &str, row: Row) -> Row {
        row.into_iter()
            .filter_map(|(c, v)| self.column(new_table, &c).map(|n| (n, v)))
            .collect()
    }

    /// Translates a wire change; `None` when its table is gone.
    pub fn change(&self, mut ch: Change) -> Option<Change> {
        if matches!(ch.op, Op::A | Op::S | Op::M) {
            return Some(ch);
        }
        let t = self.table(&ch.t)?;
        ch.old = ch.old.map(|r| self.row(&t, r));
        ch.new = ch.new.map(|r| self.row(&t, r));
        ch.t = t;
        Some(ch)
    }

    /// Translates this site's own log (its pending changes, not yet acknowledged): table and
    /// column names follow the migration; changes to a table that is gone are dropped (the
    /// newest log row stays, so positions never restart).
    pub fn log(&self, conn: &Connection) -> Result<()> {
        let rows: Vec<(i64, String, Option<Row>, Option<Row>)> = conn
            .prepare("SELECT pos, tbl, old, new FROM berth_log WHERE tbl <> '' ORDER BY pos")?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    log_row(r.get_ref(2)?),
                    log_row(r.get_ref(3)?),
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let last = store::max_pos(conn)?;
        let text = |r: Row| serde_json::to_string(&r).unwrap_or_default();
        for (pos, tbl, old, new) in rows {
            let Some(t) = self.table(&tbl) else {
                if pos < last {
                    conn.execute("DELETE FROM berth_log WHERE pos = ?1", params![pos])?;
                }
                continue;
            };
            let old = old.map(|r| text(self.row(&t, r)));
            let new = new.map(|r| text(self.row(&t, r)));
            conn.execute(
                // What is no row stays as it is: the old key a key change's insert holds in
                // `old`, a settled pre-image's `void` (SPEC 2.4, 2.11).
                "UPDATE berth_log SET tbl = ?2, old = COALESCE(?3, old), new = COALESCE(?4, new)
                 WHERE pos = ?1",
                params![pos, t, old, new],
            )?;
        }
        Ok(())
    }
}

/// The translations from schema `version` (with `checksum`) to this site's current schema,
/// when this site migrated from it; `None` when it did not (the changes must wait).
pub fn translations_from(
    conn: &Connection,
    version: i64,
    checksum: Option<&str>,
) -> Result<Option<Vec<Translation>>> {
    let current = state(conn)?;
    if version > current.version {
        return Ok(None);
    }
    let ms: Vec<Migration> = history::migrations(conn)?
        .into_iter()
        .filter(|m| m.version > version && m.version <= current.version)
        .collect();
    let complete = ms.len() == usize::try_from(current.version - version).unwrap_or(0);
    let starts_there = match (ms.first(), checksum) {
        (Some(m), Some(c)) => m.checksum_before == c,
        _ => true,
    };
    if !complete || !starts_there {
        return Ok(None);
    }
    let mut out = Vec::new();
    for m in &ms {
        let Some(after) = history::snapshot_at(conn, m.version)? else {
            return Ok(None);
        };
        out.push(Translation::new(m, &after));
    }
    Ok(Some(out))
}

impl crate::merge::Renames for Translation {
    fn table(&self, old: &str) -> Option<String> {
        Translation::table(self, old)
    }

    fn column(&self, new_table: &str, old: &str) -> Option<String> {
        Translation::column(self, new_table, old)
    }
}
