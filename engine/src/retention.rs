//! How long a site keeps what it is done with (issue 20): the bundles in `archive/` and
//! the `berth_applied` rows of the bundles it applied. Without a bound both grow with every
//! dock, for ever: at central, by one bundle and one row per node per dock.
//!
//! `berth.toml`'s `[retention] days` (default [`DEFAULT_DAYS`]; `0` keeps everything) sets
//! the age after which, at the end of each dock, archived files and `berth_applied` rows
//! go. Nothing berth does reads the archive: it is there for the admin, who may copy
//! bundles back into a spool after restoring a database from a backup (a restored site
//! holds what it needs again, SPEC 2.8), so the default keeps a month, a common backup
//! interval. The rows serve the duplicate check (SPEC 2.8 rule 1); each peer's newest row
//! is kept whatever its age, and the highest sequence number pruned per peer is recorded:
//! a bundle at or below it counts as applied (every bundle of a stream up to there was
//! applied, or superseded by a later one that was).

pub use crate::config::{DEFAULT_DAYS, Retention};
use crate::error::Result;
use crate::site::Site;
use crate::store;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;

impl Retention {
    /// The time (Unix seconds) before which a node's last bundle must have come for the node
    /// to count as away (SPEC 2.8), `None` when no node ever does.
    pub fn away_cutoff(&self, now: i64) -> Option<i64> {
        let days = self.away_days.unwrap_or(self.days);
        (days > 0).then(|| now.saturating_sub(i64::from(days) * 86_400))
    }

    /// The time (Unix seconds) before which things go, `None` when everything is kept.
    fn cutoff(&self, now: i64) -> Option<i64> {
        (self.days > 0).then(|| now.saturating_sub(i64::from(self.days) * 86_400))
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Files removed from `archive/`.
    pub files: u64,
    /// `berth_applied` rows removed.
    pub rows: u64,
}

fn horizon_key(peer: &str) -> String {
    format!("applied_pruned.{peer}")
}

/// The highest sequence number of `peer`'s stream whose `berth_applied` row was pruned (0:
/// none): a bundle at or below it is a duplicate.
pub fn pruned_seq(conn: &Connection, peer: &str) -> Result<u64> {
    Ok(u64::try_from(store::meta_i64(conn, &horizon_key(peer))?).unwrap_or(0))
}

/// Forgets how far `peer`'s stream was pruned (its name is enrolled again with a new key,
/// whose stream starts over).
pub(crate) fn forget(conn: &Connection, peer: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM berth_meta WHERE key = ?1",
        rusqlite::params![horizon_key(peer)],
    )?;
    Ok(())
}

/// Removes, as `site`'s retention says, the archived files and `berth_applied` rows older
/// than its cutoff at `now`.
pub fn prune(site: &Site, now: i64) -> Result<Pruned> {
    let Some(cutoff) = site.config.retention.cutoff(now) else {
        return Ok(Pruned::default());
    };
    let rows = prune_applied(&site.conn, cutoff)?;
    let files = prune_folder(&site.folder("archive"), cutoff)?;
    Ok(Pruned { files, rows })
}

/// The rows that go: applied before the cutoff, and not their peer's newest.
const OLD: &str = "WHERE a.at < ?1
    AND a.seq < (SELECT MAX(b.seq) FROM berth_applied AS b WHERE b.peer = a.peer)";

/// Deletes the `berth_applied` rows applied before `cutoff`, but each peer's newest, in one
/// transaction with the record of how far each peer's stream was pruned.
fn prune_applied(conn: &Connection, cutoff: i64) -> Result<u64> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let tops: Vec<(String, i64)> = tx
        .prepare_cached(&format!(
            "SELECT a.peer, MAX(a.seq) FROM berth_applied AS a {OLD} GROUP BY a.peer"
        ))?
        .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if tops.is_empty() {
        return Ok(0);
    }
    for (peer, seq) in &tops {
        let key = horizon_key(peer);
        let before: Option<i64> = tx
            .query_row(
                "SELECT value FROM berth_meta WHERE key = ?1",
                params![key],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|v| v.parse().ok());
        store::set_meta(&tx, &key, &before.unwrap_or(0).max(*seq).to_string())?;
    }
    let n = tx
        .prepare_cached(&format!("DELETE FROM berth_applied AS a {OLD}"))?
        .execute(params![cutoff])?;
    tx.commit()?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Removes the regular files in `folder` last modified before `cutoff` (Unix seconds).
fn prune_folder(folder: &Path, cutoff: i64) -> Result<u64> {
    let entries = match std::fs::read_dir(folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(crate::EngineError::io(folder, e)),
    };
    let cutoff =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(cutoff).unwrap_or(0));
    let mut n = 0;
    for e in entries {
        let e = e.map_err(|err| crate::EngineError::io(folder, err))?;
        let Ok(meta) = e.metadata() else {
            continue; // gone meanwhile
        };
        if meta.is_file() && meta.modified().is_ok_and(|t| t < cutoff) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => n += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(crate::EngineError::io(e.path(), err)),
            }
        }
    }
    Ok(n)
}
