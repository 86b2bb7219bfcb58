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
use crate::store::meta_keys;
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
  applied INTEGER,
  renames TEXT NOT NULL DEFAULT '[]',
  exec TEXT
);
";

/// Creates the history tables if missing.
pub fn install(conn: &Connection) -> Result<(), Error> {
    conn.execute_batch(DDL)?;
    Ok(())
}

/// A migration: what turns schema version N-1 into N. The unit that bundles will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// The rename hints it was created with (`OLD=NEW`, `TABLE.OLD=NEW`): how changes
    /// captured under the old schema are translated to the new one.
    #[serde(default)]
    pub renames: Vec<String>,
    /// An executable step run against the database after the SQL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecStep>,
}

/// A migration's executable step: a program shipped with it and run against the database
/// after its SQL (seed 000: data conversions SQL cannot express). It runs only where the
/// site allows executables (`allow_executables = true` in `berth.toml`), only when an admin
/// key signed it, and with a backup of the database taken before, restored if it fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStep {
    /// The command, run from the step's folder: a first word naming `file` runs that file,
    /// anything else is looked up on PATH (e.g. `["sh", "fix.sh"]`).
    pub command: Vec<String>,
    /// The program file's name (plain, no path).
    pub file: String,
    /// The program file, hex.
    pub program: String,
    /// sha256 of the program file (64 hex digits).
    pub sha256: String,
    /// The admin key that signed the step (hex); empty until submitted.
    #[serde(default)]
    pub admin_key: String,
    /// The admin's ed25519 signature of [`ExecStep::statement`] (hex); empty until submitted.
    #[serde(default)]
    pub signature: String,
}

/// Largest program an executable step may ship.
pub const MAX_PROGRAM: usize = 1 << 20;

impl ExecStep {
    /// Builds a step from a program file's bytes.
    pub fn new(command: Vec<String>, file: &str, bytes: &[u8]) -> Result<ExecStep, Error> {
        let step = ExecStep {
            command,
            file: file.to_string(),
            program: hex::encode(bytes),
            sha256: sha256_hex(bytes),
            admin_key: String::new(),
            signature: String::new(),
        };
        step.check()?;
        Ok(step)
    }

    /// Checks the step is well formed: a command, a plain file name, a program that matches
    /// its hash and is not too large.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |reason: String| Error::Snapshot { reason };
        if self.command.is_empty() || self.command.iter().any(|a| a.contains('\0')) {
            return Err(bad("executable step: the command is empty".into()));
        }
        if self.file.is_empty()
            || self.file.contains(['/', '\\', ':'])
            || self.file.starts_with('.')
            || self.file.len() > 100
        {
            return Err(bad(format!(
                "executable step: file name {:?} is not a plain file name",
                self.file
            )));
        }
        let bytes = self.bytes()?;
        if bytes.len() > MAX_PROGRAM {
            return Err(bad(format!(
                "executable step: the program is larger than {MAX_PROGRAM} bytes"
            )));
        }
        if sha256_hex(&bytes) != self.sha256 {
            return Err(bad(
                "executable step: the program does not match its sha256".into(),
            ));
        }
        Ok(())
    }

    /// The program's bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, Error> {
        hex::decode(&self.program).map_err(|e| Error::Snapshot {
            reason: format!("executable step: the program is not hex: {e}"),
        })
    }

    /// What the admin signs: the migration's identity and schema checksums, its SQL's hash,
    /// the command and the program's hash.
    pub fn statement(&self, m: &Migration) -> Vec<u8> {
        format!(
            "berth-migration-exec 1\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
            m.version,
            m.checksum_before,
            m.checksum_after,
            sha256_hex(m.sql.as_bytes()),
            serde_json::to_string(&self.command).unwrap_or_default(),
            self.file,
            self.sha256
        )
        .into_bytes()
    }

    /// True when `admin_key` signed this step of `m`.
    pub fn signed(&self, m: &Migration) -> bool {
        let (Ok(key), Ok(sig)) = (
            berth_bundle::PublicKey::from_hex(&self.admin_key),
            hex::decode(&self.signature),
        ) else {
            return false;
        };
        key.verify(&self.statement(m), &sig)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Attaches an executable step to migration `version` of this site (before it is submitted).
pub fn attach_exec(conn: &Connection, version: i64, step: &ExecStep) -> Result<(), Error> {
    step.check()?;
    let text = serde_json::to_string(step).map_err(|e| Error::Snapshot {
        reason: e.to_string(),
    })?;
    let n = conn.execute(
        "UPDATE berth_migrations SET exec = ?2 WHERE version = ?1",
        params![version, text],
    )?;
    if n == 0 {
        return Err(Error::Snapshot {
            reason: format!("no migration {version} at this site"),
        });
    }
    Ok(())
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

/// The site's schema version: its latest migration's version, or the version its baseline
/// snapshot was recorded at (a node enrolled after migration N starts at N), 0 before any.
pub fn version(conn: &Connection) -> Result<i64, Error> {
    install(conn)?;
    Ok(conn.query_row(
        "SELECT MAX(COALESCE((SELECT MAX(version) FROM berth_migrations), 0),
                    COALESCE((SELECT MAX(version) FROM berth_schema_history), 0))",
        [],
        |r| r.get(0),
    )?)
}

/// The migration that led to `version`, if this site has it.
pub fn migration(conn: &Connection, version: i64) -> Result<Option<Migration>, Error> {
    Ok(migrations(conn)?.into_iter().find(|m| m.version == version))
}

/// The snapshot recorded at `version` (the latest of that version), if any.
pub fn snapshot_at(conn: &Connection, version: i64) -> Result<Option<Snapshot>, Error> {
    install(conn)?;
    let text: Option<String> = conn
        .query_row(
            "SELECT snapshot FROM berth_schema_history WHERE version = ?1 ORDER BY id DESC LIMIT 1",
            [version],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|t| snapshot::from_json(&t)).transpose()
}

/// Records the schema a site starts from (a node's extract, a new central): its snapshot at
/// `version`, and the site's schema state in `berth_meta`.
pub fn baseline(conn: &Connection, version: i64) -> Result<String, Error> {
    install(conn)?;
    let snap = snapshot::read(conn)?;
    let checksum = insert_snapshot(conn, version, &snap)?;
    mark(conn, version, &checksum)?;
    Ok(checksum)
}

/// Writes the site's schema state (`berth_meta` keys `schema_version` and
/// `schema_checksum`) that bundles carry and gates read.
fn mark(conn: &Connection, version: i64, checksum: &str) -> Result<(), Error> {
    let is_site: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'berth_meta')",
        [],
        |r| r.get(0),
    )?;
    if is_site {
        crate::store::set_meta(conn, meta_keys::SCHEMA_VERSION, &version.to_string())?;
        crate::store::set_meta(conn, meta_keys::SCHEMA_CHECKSUM, checksum)?;
    }
    Ok(())
}

fn is_site(conn: &Connection) -> Result<bool, Error> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'berth_tables')",
        [],
        |r| r.get(0),
    )?)
}

/// Brings `berth_tables` in line with the live schema (tables gone leave it; new and changed
/// ones are recorded) and, when `triggers`, recreates the capture triggers for it. Inside a
/// bundle's apply, where capture is suspended until commit, only the table list is updated.
pub fn refresh_capture(conn: &Connection, triggers: bool) -> Result<(), Error> {
    let tables = crate::schema::tables(conn)?;
    let names = serde_json::to_string(&tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>())
        .map_err(|e| Error::Snapshot {
            reason: e.to_string(),
        })?;
    conn.execute(
        "DELETE FROM berth_tables WHERE name NOT IN (SELECT value FROM json_each(?1))",
        [names],
    )?;
    if triggers {
        // Capture triggers still attached to a table renamed outside berth would journal
        // under the old name: drop every capture trigger before recreating them.
        let stale: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'
                   AND (name LIKE 'berth\\_ins\\_%' ESCAPE '\\' OR name LIKE 'berth\\_upd\\_%' ESCAPE '\\'
                        OR name LIKE 'berth\\_del\\_%' ESCAPE '\\')",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for name in stale {
            conn.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS {};",
                crate::store::ident(&name)
            ))?;
        }
        crate::capture::install(conn, &tables)?;
    } else {
        crate::capture::record_tables(conn, &tables)?;
    }
    Ok(())
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
        renames: new.diff.renames.iter().map(ToString::to_string).collect(),
        exec: None,
    };
    conn.execute_batch("SAVEPOINT berth_migration_create")?;
    let r = (|| {
        insert_migration(conn, &m)?;
        insert_snapshot(conn, version, &live)?;
        if is_site(conn)? {
            // The live schema changed under the capture triggers: capture the new columns.
            refresh_capture(conn, true)?;
        }
        mark(conn, version, &m.checksum_after)?;
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
           software_level, foreign_keys_off, origin, created, applied, renames, exec)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
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
            m.applied,
            serde_json::to_string(&m.renames).unwrap_or_else(|_| "[]".into()),
            m.exec.as_ref().and_then(|e| serde_json::to_string(e).ok())
        ],
    )?;
    Ok(())
}

/// Every migration stored at the site, by version.
pub fn migrations(conn: &Connection) -> Result<Vec<Migration>, Error> {
    install(conn)?;
    let mut st = conn.prepare(
        "SELECT version, name, sql, checksum_before, checksum_after, software_level,
                foreign_keys_off, origin, created, applied, renames, exec
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
                renames: crate::store::json_column(r, 10)?,
                exec: crate::store::json_column_opt(r, 11)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Applies a migration received from elsewhere, in its own transaction (central taking a
/// submitted or imported migration): see [`check_next`] and [`apply_in_tx`]. Foreign keys
/// are switched off around the transaction when the migration rebuilds tables, and checked
/// before commit.
pub fn apply_migration(conn: &Connection, m: &Migration) -> Result<(), Error> {
    apply_migration_with(conn, m, |_| Ok(()), |_| Ok(()))
}

/// [`apply_migration`] with work of the caller's inside the same transaction: `before` runs
/// before the migration's SQL (central routes what was captured under the old schema),
/// `also` after it is recorded (central journals it for the nodes).
pub fn apply_migration_with(
    conn: &Connection,
    m: &Migration,
    before: impl FnOnce(&Connection) -> Result<(), Error>,
    also: impl FnOnce(&Connection) -> Result<(), Error>,
) -> Result<(), Error> {
    install(conn)?;
    check_next(conn, m)?;
    let site = is_site(conn)?;
    apply::run(
        conn,
        Script {
            sql: &m.sql,
            foreign_keys_off: m.foreign_keys_off,
            checksum_after: Some(&m.checksum_after),
        },
        |c| {
            before(c)?;
            if site {
                crate::capture::suspend(c)?;
            }
            Ok(())
        },
        |c| {
            if site {
                refresh_capture(c, true)?;
            }
            record_applied(c, m)?;
            also(c)
        },
    )
}

/// Checks that `m` is the next migration for this site: the live schema has its
/// `checksum_before` and the next version is its version.
pub fn check_next(conn: &Connection, m: &Migration) -> Result<(), Error> {
    let expected = version(conn)? + 1;
    if m.version != expected {
        return Err(Error::OutOfOrder {
            version: m.version,
            expected,
        });
    }
    let current = snapshot::read(conn)?.checksum()?;
    if current != m.checksum_before {
        return Err(Error::Mismatch {
            expected: m.checksum_before.clone(),
            actual: current,
        });
    }
    Ok(())
}

fn record_applied(c: &Connection, m: &Migration) -> Result<(), Error> {
    insert_migration(
        c,
        &Migration {
            applied: Some(crate::store::now()),
            ..m.clone()
        },
    )?;
    insert_snapshot(c, m.version, &snapshot::read(c)?)?;
    mark(c, m.version, &m.checksum_after)
}

/// Applies a migration inside the caller's transaction (a node applying central's stream,
/// where the bundle's changes before and after it commit with it). The caller has capture
/// suspended and foreign keys off (a node always applies with them off, SPEC 2.11); the
/// table list in `berth_tables` is updated here, the triggers by the caller's resume.
/// Statements run inside a savepoint: a failure leaves the transaction as it was.
pub fn apply_in_tx(conn: &Connection, m: &Migration) -> Result<(), Error> {
    install(conn)?;
    check_next(conn, m)?;
    conn.execute_batch("SAVEPOINT berth_migration")?;
    let r = (|| {
        apply::run_statements(conn, &m.sql)?;
        let actual = snapshot::read(conn)?.checksum()?;
        if actual != m.checksum_after {
            return Err(Error::Mismatch {
                expected: m.checksum_after.clone(),
                actual,
            });
        }
        refresh_capture(conn, false)?;
        record_applied(conn, m)
    })();
    match r {
        Ok(()) => {
            conn.execute_batch("RELEASE berth_migration")?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK TO berth_migration; RELEASE berth_migration");
            Err(e)
        }
    }
}
