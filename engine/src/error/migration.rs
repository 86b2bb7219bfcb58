//! The errors of schema evolution ([`crate::evolve`]).

use std::path::PathBuf;

/// An error of schema evolution.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite refused an operation.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        error: std::io::Error,
    },
    /// An error about the contents of a file.
    #[error("{path}: {error}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: Box<Error>,
    },
    /// Schema SQL does not parse or does not run.
    #[error("the schema SQL does not run: {reason}")]
    BadSql {
        /// SQLite's complaint.
        reason: String,
    },
    /// A snapshot is malformed or of an unknown format.
    #[error("schema snapshot: {reason}")]
    Snapshot {
        /// What is wrong.
        reason: String,
    },
    /// A rename hint does not fit the two schemas.
    #[error("rename {hint:?}: {reason}")]
    BadRename {
        /// The hint as given (`OLD=NEW` or `TABLE.OLD=NEW`).
        hint: String,
        /// Why it does not fit.
        reason: String,
    },
    /// The migration would destroy data and destructive steps were not allowed.
    #[error("destructive steps refused (allow them explicitly, e.g. --allow-destructive): {}", steps.join("; "))]
    Destructive {
        /// Each destructive step, described.
        steps: Vec<String>,
    },
    /// A fill (`TABLE.COLUMN=SQL-EXPR`) does not parse, does not fit the two schemas, or
    /// gives a value the column refuses.
    #[error("fill {fill:?}: {reason}")]
    BadFill {
        /// The fill as given.
        fill: String,
        /// What is wrong with it.
        reason: String,
    },
    /// New NOT NULL columns whose existing rows cannot get their type's zero.
    #[error(
        "the existing rows cannot be filled with the type's zero: {}; say what each row gets with --fill TABLE.COLUMN=SQL-EXPR (an expression over the row's old columns, e.g. --fill t.code=id), or give the column a DEFAULT",
        columns.join("; ")
    )]
    Unfillable {
        /// Each column, and why its zero does not do.
        columns: Vec<String>,
    },
    /// A change that this version cannot turn into SQL.
    #[error("table {table}: {reason}")]
    Unsupported {
        /// The table.
        table: String,
        /// Why.
        reason: String,
    },
    /// A statement of a migration failed; nothing was changed.
    #[error("migration statement {index} failed, nothing was changed: {error}\n  in: {statement}")]
    Apply {
        /// 1-based index of the statement.
        index: usize,
        /// The statement.
        statement: String,
        /// SQLite's complaint.
        error: rusqlite::Error,
    },
    /// Foreign keys are violated after the migration; nothing was changed.
    #[error("foreign key violations after the migration, nothing was changed: {}", violations.join("; "))]
    ForeignKeys {
        /// `table rowid -> parent` of each violation (the first few).
        violations: Vec<String>,
    },
    /// The migrated schema is not the one the plan promised.
    #[error("the migrated schema has checksum {actual}, expected {expected}; nothing was changed")]
    Mismatch {
        /// The checksum the plan leads to.
        expected: String,
        /// What the database had after the SQL ran.
        actual: String,
    },
    /// No snapshot has been recorded at the site yet.
    #[error(
        "no schema snapshot recorded at this site yet; record one with `berth schema snapshot`"
    )]
    NoBaseline,
    /// The schema did not change since the last snapshot.
    #[error("the schema has not changed since snapshot version {version} ({checksum})")]
    NothingToMigrate {
        /// The current version.
        version: i64,
        /// The current checksum.
        checksum: String,
    },
    /// The live schema differs from the snapshot recorded at the current version.
    #[error(
        "the schema changed since the snapshot of version {version} ({recorded} -> {current}); freeze the change with `berth migration create`, or re-baseline"
    )]
    Drift {
        /// The current schema version.
        version: i64,
        /// Checksum recorded at that version.
        recorded: String,
        /// Checksum of the live schema.
        current: String,
    },
    /// A migration arrived out of order.
    #[error("migration {version} cannot run here: the next version is {expected}")]
    OutOfOrder {
        /// The migration's version.
        version: i64,
        /// The version this site needs next.
        expected: i64,
    },
    /// A site-level error.
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
}
