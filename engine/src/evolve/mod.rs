//! Schema evolution (seed 000, claims 1-6): snapshots of the replicated schema, the diff of
//! two snapshots into migration SQL, and migrations stored at a site.
//!
//! - [`snapshot::read`] describes a database's user schema as a [`snapshot::Snapshot`];
//!   [`snapshot::Snapshot::checksum`] is the sha256 of its canonical text.
//! - [`diff::diff`] (pure) compares two snapshots and returns a [`diff::Plan`]: ordered steps,
//!   each with its SQL, using `ALTER TABLE` where SQLite allows it and SQLite's 12-step table
//!   rebuild where it does not. Destructive steps are refused unless allowed; renames come
//!   only from explicit [`diff::Rename`] hints.
//! - [`apply::apply`] runs a plan's SQL on a connection: foreign keys off outside the
//!   transaction when tables are rebuilt, checked before commit.
//! - [`history`] keeps the site's snapshots and migrations in `berth_schema_history` and
//!   `berth_migrations`.
//!
//! ```
//! use berth_engine::evolve::{apply, diff, snapshot};
//! # fn main() -> Result<(), berth_engine::evolve::Error> {
//! let db = rusqlite::Connection::open_in_memory()?;
//! db.execute_batch("CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER); INSERT INTO t VALUES ('a', 1);")?;
//! // Widening n to TEXT needs the 12-step rebuild, which also adds the new column.
//! let target = snapshot::from_sql("CREATE TABLE t(id TEXT PRIMARY KEY, n TEXT, note TEXT);")?;
//! let plan = diff::diff(&snapshot::read(&db)?, &target, &diff::DiffOptions::default())?;
//! apply::apply(&db, &plan)?;
//! assert_eq!(snapshot::read(&db)?.checksum()?, target.checksum()?);
//! # Ok(()) }
//! ```

pub mod apply;
pub mod diff;
pub mod fill;
pub mod history;
pub mod snapshot;
pub mod sqltext;

pub use crate::error::migration::Error;
