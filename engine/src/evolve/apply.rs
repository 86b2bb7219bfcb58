//! Runs migration SQL on a connection (SQLite's 12-step procedure, steps 1-3 and 10-12
//! around the plan's statements): foreign keys off outside the transaction when the plan
//! rebuilds or drops tables, one `IMMEDIATE` transaction, `PRAGMA foreign_key_check` before
//! commit where the site enforces foreign keys, the resulting schema checked against the
//! checksum the plan promises, foreign keys restored. Any failure rolls everything back.

use super::Error;
use super::diff::Plan;
use super::snapshot;
use rusqlite::Connection;

/// What to run: the statements, whether foreign keys must be off, the checksum to reach.
#[derive(Debug, Clone, Copy)]
pub struct Script<'a> {
    /// Statements separated by `;` (a plan's [`Plan::body`], or a stored migration's SQL).
    pub sql: &'a str,
    /// Foreign keys must be off while it runs.
    pub foreign_keys_off: bool,
    /// The schema checksum the database must have afterwards (`None`: not checked).
    pub checksum_after: Option<&'a str>,
}

/// Applies a plan in its own transaction.
pub fn apply(conn: &Connection, plan: &Plan) -> Result<(), Error> {
    if plan.is_empty() {
        return Ok(());
    }
    let body = plan.body();
    run(
        conn,
        Script {
            sql: &body,
            foreign_keys_off: plan.foreign_keys_off,
            checksum_after: Some(&plan.checksum_after),
        },
        |_| Ok(()),
        |_| Ok(()),
    )
}

/// Runs a script in its own transaction; `before` runs inside the transaction before it,
/// `also` after it succeeded and was checked (bookkeeping that must commit with it).
pub fn run(
    conn: &Connection,
    script: Script<'_>,
    before: impl FnOnce(&Connection) -> Result<(), Error>,
    also: impl FnOnce(&Connection) -> Result<(), Error>,
) -> Result<(), Error> {
    let fk_on: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    let switch = script.foreign_keys_off && fk_on;
    if switch {
        // A no-op inside a transaction: this is why the caller must not hold one.
        if !conn.is_autocommit() {
            return Err(Error::Unsupported {
                table: "*".into(),
                reason: "a migration that rebuilds tables must start outside a transaction \
                         (foreign keys cannot be switched off inside one)"
                    .into(),
            });
        }
        conn.execute_batch("PRAGMA foreign_keys=OFF")?;
    }
    let result = (|| {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let inner = (|| {
            before(conn)?;
            run_statements(conn, script.sql)?;
            if switch {
                check_foreign_keys(conn)?;
            }
            if let Some(expected) = script.checksum_after {
                let actual = snapshot::read(conn)?.checksum()?;
                if actual != expected {
                    return Err(Error::Mismatch {
                        expected: expected.to_string(),
                        actual,
                    });
                }
            }
            also(conn)
        })();
        match inner {
            Ok(()) => {
                conn.execute_batch("COMMIT")?;
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })();
    if switch {
        conn.execute_batch("PRAGMA foreign_keys=ON")?;
    }
    result
}

/// Runs the statements of a script one by one (inside the caller's transaction), naming the
/// one that fails.
pub fn run_statements(conn: &Connection, sql: &str) -> Result<(), Error> {
    use rusqlite::fallible_iterator::FallibleIterator as _;
    let mut batch = rusqlite::Batch::new(conn, sql);
    let mut index = 0;
    loop {
        index += 1;
        let mut st = match batch.next() {
            Ok(Some(st)) => st,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(Error::Apply {
                    index,
                    statement: "(statement does not parse)".into(),
                    error: source,
                });
            }
        };
        let text = st.expanded_sql().unwrap_or_default();
        let mut rows = st.raw_query();
        loop {
            match rows.next() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(source) => {
                    return Err(Error::Apply {
                        index,
                        statement: text,
                        error: source,
                    });
                }
            }
        }
    }
}

/// Fails when a foreign key is violated (12-step procedure, step 10).
pub fn check_foreign_keys(conn: &Connection) -> Result<(), Error> {
    let mut st =
        conn.prepare("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check LIMIT 5")?;
    let violations: Vec<String> = st
        .query_map([], |r| {
            Ok(format!(
                "{} row {} -> {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?
                    .map_or_else(|| "?".to_string(), |v| v.to_string()),
                r.get::<_, String>(2)?
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::ForeignKeys { violations })
    }
}
