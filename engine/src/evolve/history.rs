//! The schema history of a site: recorded snapshots (`berth_schema_history`) and the
//! migrations frozen from them (`berth_migrations`). Both tables are created by [`install`],
//! which every function here calls first.
//!
//! A site's **schema version** is the version of its latest migration (0 before any). A
//! snapshot is recorded at the current version; `create_migration` diffs the latest recorded
//! snapshot against the live schema, and stores the migration as version N+1 together with
//! the snapshot it leads to.

use super::Error;
use super::apply::{self, Script};
use super::diff::{self, DiffOptions};
use super::snapshot::{self, Snapshot};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::BTreeSet;

/// DDL of the schema history tables.
pub const DDL: &str = "
CREATE TABLE IF NOT EXISTS berth_schema_history(
  id INTEGER PRIMARY KEY,
  version INTEGER NOT NULL,
  checksum TEXT NOT NULL,
  snapshot TEXT NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_migrations(
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  sql TEXT NOT NULL,
  checksum_before TEXT NOT NULL,
  checksum_after TEXT NOT NULL,
  software_level TEXT NOT NULL,
  foreign_keys_off INTEGER NOT NULL,
  origin TEXT NOT NULL,
  created INTEGER NOT NULL,
  applied INTEGER
);
";

/// Creates the history tables if missing.
pub fn install(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(DDL)?;
    Ok(())
}

/// A migration: what turns schema version N-1 into N. The unit that bundles will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// Version it leads to (1, 2, ...).
    pub version: i64,
    /// A short name given by its author.
    pub name: String,
    /// The statements, run in one transaction ([`super::diff::Plan::body`]).
    pub sql: String,
    /// Schema checksum it starts from.
    pub checksum_before: String,
    /// Schema checksum it leads to.
    pub checksum_after: String,
    /// Software level a site needs before it may run the migration.
    pub software_level: String,
    /// Foreign keys must be off while it runs (tables are rebuilt or dropped).
    pub foreign_keys_off: bool,
    /// The site where it was created.
    pub origin: String,
    /// When it was created (seconds since the epoch).
    pub created: i64,
    /// When it was applied (or created) here.
    pub applied: Option<i64>,
}

/// A recorded snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// Schema version it belongs to.
    pub version: i64,
    /// Its checksum.
    pub checksum: String,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// True when this call added it (false: the same schema was already recorded).
    pub new: bool,
}

/// The site's schema version: its latest migration's version, 0 before any.
pub fn version(conn: &Connection) -> Result<i64, Error> {
    install(conn)?;
    Ok(conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM berth_migrations",
        [],
        |r| r.get(0),
    )?)
}

/// The latest recorded snapshot.
pub fn latest(conn: &Connection) -> Result<Option<Recorded>, Error> {
    install(conn)?;
    let row: Option<(i64, String, String)> = conn
        .query_row(
            "SELECT version, checksum, snapshot FROM berth_schema_history ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    row.map(|(version, checksum, text)| {
        Ok(Recorded {
            version,
            checksum,
            snapshot: snapshot::from_json(&text)?,
            new: false,
        })
    })
    .transpose()
}

fn insert_snapshot(conn: &Connection, version: i64, snap: &Snapshot) -> Result<String, Error> {
    let checksum = snap.checksum()?;
    let text = serde_json::to_string(snap).map_err(|e| Error::Snapshot {
        reason: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO berth_schema_history(version, checksum, snapshot, at) VALUES (?1, ?2, ?3, ?4)",
        params![version, checksum, text, crate::store::now()],
    )?;
    Ok(checksum)
}

/// Records the live schema at the current version. When a different schema was already
/// recorded at this version, that is a change without a migration: refused with
/// [`Error::Drift`] unless `rebaseline` (the new snapshot then replaces the old as the base of
/// the next migration).
pub fn record(conn: &Connection, rebaseline: bool) -> Result<Recorded, Error> {
    install(conn)?;
    let snap = snapshot::read(conn)?;
    let checksum = snap.checksum()?;
    let version = version(conn)?;
    if let Some(last) = latest(conn)? {
        if last.checksum == checksum {
            return Ok(Recorded { new: false, ..last });
        }
        if last.version == version && !rebaseline {
            return Err(Error::Drift {
                version,
                recorded: last.checksum,
                current: checksum,
            });
        }
    }
    insert_snapshot(conn, version, &snap)?;
    Ok(Recorded {
        version,
        checksum,
        snapshot: snap,
        new: true,
    })
}

/// What `create_migration` needs.
#[derive(Debug, Clone)]
pub struct NewMigration<'a> {
    /// Its name.
    pub name: &'a str,
    /// Software level it needs.
    pub software_level: &'a str,
    /// The site creating it.
    pub origin: &'a str,
    /// Diff options (renames, destructive steps).
    pub diff: DiffOptions,
}

/// Freezes the diff between the latest recorded snapshot and the live schema into migration
/// N+1, after checking that its SQL, run on an empty database with the old schema, gives
/// exactly the live schema. Records the new snapshot. The live database is not changed.
pub fn create_migration(conn: &Connection, new: &NewMigration<'_>) -> Result<Migration, Error> {
    install(conn)?;
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(Error::Snapshot {
            reason: format!("migration name {name:?}: use 1-100 printable characters"),
        });
    }
    let base = latest(conn)?.ok_or(Error::NoBaseline)?;
    let live = snapshot::read(conn)?;
    let after = live.checksum()?;
    if after == base.checksum {
        return Err(Error::NothingToMigrate {
            version: base.version,
            checksum: after,
        });
    }
    let mut opts = new.diff.clone();
    // Row counts of the old tables as far as they are still there under their names.
    let empty: BTreeSet<String> = base
        .snapshot
        .tables
        .iter()
        .filter(|t| live.table(&t.name).is_some())
        .filter(|t| {
            snapshot::nonempty_tables(
                conn,
                &Snapshot {
                    tables: vec![(*t).clone()],
                    ..Snapshot::default()
                },
            )
            .is_ok_and(|v| v.is_empty())
        })
        .map(|t| t.name.to_ascii_lowercase())
        .collect();
    opts.empty_tables.extend(empty);
    let plan = diff::diff(&base.snapshot, &live, &opts)?;
    // Check: the SQL turns the old schema into exactly the live one.
    let scratch = snapshot::materialize(&base.snapshot)?;
    apply::apply(&scratch, &plan)?;
    let version = version(conn)? + 1;
    let m = Migration {
        version,
        name: name.to_string(),
        sql: plan.body(),
        checksum_before: base.checksum.clone(),
        checksum_after: after,
        software_level: new.software_level.to_string(),
        foreign_keys_off: plan.foreign_keys_off,
        origin: new.origin.to_string(),
        created: crate::store::now(),
        applied: Some(crate::store::now()),
    };
    conn.execute_batch("SAVEPOINT berth_migration_create")?;
    let r = (|| {
        insert_migration(conn, &m)?;
        insert_snapshot(conn, version, &live)?;
        Ok(())
    })();
    match r {
        Ok(()) => conn.execute_batch("RELEASE berth_migration_create")?,
        Err(e) => {
            let _ = conn.execute_batch(
                "ROLLBACK TO berth_migration_create; RELEASE berth_migration_create",
            );
            return Err(e);
        }
    }
    Ok(m)
}

fn insert_migration(conn: &Connection, m: &Migration) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO berth_migrations(version, name, sql, checksum_before, checksum_after,
           software_level, foreign_keys_off, origin, created, applied)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            m.version,
            m.name,
            m.sql,
            m.checksum_before,
            m.checksum_after,
            m.software_level,
            m.foreign_keys_off,
            m.origin,
            m.created,
            m.applied
        ],
    )?;
    Ok(())
}

/// Every migration stored at the site, by version.
pub fn migrations(conn: &Connection) -> Result<Vec<Migration>, Error> {
    install(conn)?;
    let mut st = conn.prepare(
        "SELECT version, name, sql, checksum_before, checksum_after, software_level,
                foreign_keys_off, origin, created, applied
         FROM berth_migrations ORDER BY version",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(Migration {
                version: r.get(0)?,
                name: r.get(1)?,
                sql: r.get(2)?,
                checksum_before: r.get(3)?,
                checksum_after: r.get(4)?,
                software_level: r.get(5)?,
                foreign_keys_off: r.get(6)?,
                origin: r.get(7)?,
                created: r.get(8)?,
                applied: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Applies a migration received from elsewhere: the live schema must have its
/// `checksum_before` and the next version must be its version; the SQL runs in one
/// transaction with the migration record and the new snapshot, and the result must have
/// `checksum_after`. At a site (the database has `berth_tables`), capture is suspended for
/// the migration (its rows are not journaled, and SQLite refuses to drop a column a trigger
/// names) and regenerated for the new schema before commit; tables that are gone leave
/// `berth_tables`. Translating pending changes to the new schema is the docking code's part.
pub fn apply_migration(conn: &Connection, m: &Migration) -> Result<(), Error> {
    install(conn)?;
    let current = snapshot::read(conn)?.checksum()?;
    if current != m.checksum_before {
        return Err(Error::Mismatch {
            expected: m.checksum_before.clone(),
            actual: current,
        });
    }
    let expected = version(conn)? + 1;
    if m.version != expected {
        return Err(Error::OutOfOrder {
            version: m.version,
            expected,
        });
    }
    let site: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'berth_tables')",
        [],
        |r| r.get(0),
    )?;
    apply::run(
        conn,
        Script {
            sql: &m.sql,
            foreign_keys_off: m.foreign_keys_off,
            checksum_after: Some(&m.checksum_after),
        },
        |c| {
            if site {
                crate::capture::suspend(c)?;
            }
            Ok(())
        },
        |c| {
            if site {
                let tables = crate::schema::tables(c)?;
                c.execute(
                    "DELETE FROM berth_tables WHERE name NOT IN (SELECT value FROM json_each(?1))",
                    [serde_json::to_string(
                        &tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
                    )
                    .map_err(|e| Error::Snapshot {
                        reason: e.to_string(),
                    })?],
                )?;
                crate::capture::install(c, &tables)?;
            }
            insert_migration(
                c,
                &Migration {
                    applied: Some(crate::store::now()),
                    ..m.clone()
                },
            )?;
            insert_snapshot(c, m.version, &snapshot::read(c)?)?;
            Ok(())
        },
    )
}
