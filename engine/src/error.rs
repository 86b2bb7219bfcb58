//! Typed errors of the engine. Every variant says what went wrong and where.

use std::path::PathBuf;

// The errors each part of the engine returns live here, below every layer, so that
// `EngineError` can carry them without this module using the modules above it.
pub mod conflict;
pub mod digest;
pub mod guard;
pub mod migration;
pub mod upgrade;

/// An engine error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// SQLite refused an operation.
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// An entry of the site's update log cannot be read.
    #[error("update log (berth_log) position {pos}: {reason}")]
    Journal {
        /// The entry's position.
        pos: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// A value berth wrote into one of its own tables does not read back.
    #[error(
        "{place} does not read back ({reason}): the site's database was changed outside berth or is damaged; `berth verify` checks it, and a backup taken before puts it right"
    )]
    Stored {
        /// The table and column, or the `berth_meta` key.
        place: String,
        /// What the parser said.
        reason: String,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A bundle was refused by the bundle format layer.
    #[error(transparent)]
    Bundle(#[from] berth_bundle::BundleError),
    /// The site folder is not a berth site or its configuration is unreadable.
    #[error("{path}: {reason}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The user's schema cannot be replicated as it is.
    #[error("schema: table {table}: {reason}")]
    Schema {
        /// The offending table.
        table: String,
        /// Why it cannot be replicated.
        reason: String,
    },
    /// The schema file could not be executed.
    #[error("schema file {path}: {source}")]
    SchemaFile {
        /// The file.
        path: PathBuf,
        /// SQLite's complaint.
        source: rusqlite::Error,
    },
    /// A site or node name is not acceptable.
    #[error(
        "invalid site name {name:?}: use 1-32 characters a-z, 0-9 and '-', starting with a letter or digit"
    )]
    BadName {
        /// The name given.
        name: String,
    },
    /// A well-formed name that cannot be a site's: it already means something else.
    #[error("the name {name:?} cannot be used: {reason}; choose another name")]
    ReservedName {
        /// The name given.
        name: String,
        /// What it already means.
        reason: String,
    },
    /// The operation needs a site of the other role.
    #[error("this is a {actual} site; the operation needs a {expected} site")]
    WrongRole {
        /// The role needed.
        expected: &'static str,
        /// The site's role.
        actual: String,
    },
    /// A node named in a command is not registered at central.
    #[error("no node named {name:?} is registered at this site")]
    UnknownNode {
        /// The node name.
        name: String,
    },
    /// `node add --attr` names an attribute the docking model does not declare.
    #[error(
        "attribute {name:?} is not declared in the docking model; declared: {}; use one of those, or add {name:?} to [nodes] attributes and run `berth docking apply`",
        if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
    )]
    UndeclaredAttribute {
        /// The attribute given.
        name: String,
        /// The attributes `[nodes] attributes` declares.
        declared: Vec<String>,
    },
    /// A node with this name already exists.
    #[error("a node named {name:?} is already registered (key {key_id})")]
    NodeExists {
        /// The node name.
        name: String,
        /// The key it is registered with.
        key_id: String,
    },
    /// An enrollment request signed by a key that was revoked: a revoked key is never
    /// registered again, under any name.
    #[error(
        "the request for {name:?} is signed by key {key_id}, which was revoked: a revoked key is never registered again; make a new key on the machine (`berth init node DIR --name {name} --via FOLDER` in a new folder) and approve the request it writes"
    )]
    RevokedKey {
        /// The name the request asks for.
        name: String,
        /// The revoked key's id.
        key_id: String,
    },
    /// No enrollment request for the node was found.
    #[error("no enrollment request for {name:?} found in {folder}")]
    NoEnrollment {
        /// The node name.
        name: String,
        /// Where we looked.
        folder: PathBuf,
    },
    /// A verified bundle's payload is not what its kind promises.
    #[error("bundle {bundle}: payload {entry}: {reason}")]
    BadPayload {
        /// The bundle label.
        bundle: String,
        /// The entry.
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// A `send-sql` script holds a statement central will not run inside its transaction.
    #[error(
        "statement {statement} of the script is {what}, which send-sql does not allow: central tries the script inside a transaction of its own, so a script may not begin, end or release transactions (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE), attach or detach databases, or set pragmas; remove that statement and send the script again (nothing was run or journaled)"
    )]
    SqlRefused {
        /// Its position in the script, from 1.
        statement: usize,
        /// What it does (`COMMIT (or END)`, `ATTACH "x.db"`, `PRAGMA foreign_keys = OFF`).
        what: String,
    },
    /// A volume set (a bundle cut into pieces) cannot be joined: a piece differs from its index.
    #[error("volume set {index}: {reason}")]
    Volume {
        /// The index file (`B.volumes`).
        index: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// A sealed (encrypted) bundle cannot be opened here.
    #[error("sealed bundle {file}: {source}")]
    Sealed {
        /// The sealed file.
        file: PathBuf,
        /// Why it does not open.
        source: berth_bundle::seal::SealError,
    },
    /// A bundle is addressed to, or comes from, somewhere it should not.
    #[error("bundle {bundle}: {reason}")]
    Refused {
        /// The bundle label.
        bundle: String,
        /// Why it is refused.
        reason: String,
    },
    /// The site's own files do not belong together: `data.db` is missing or empty, or
    /// records another site than `berth.toml` and `keys/` (see `identity`).
    #[error("{path}: {reason}")]
    SiteFiles {
        /// The database.
        path: PathBuf,
        /// What does not match, naming both sides, and what to do.
        reason: String,
    },
    /// Another berth process holds the site.
    #[error("site {path} is busy: another berth process (dock or watch) holds its lock")]
    Busy {
        /// The site folder.
        path: PathBuf,
    },
    /// The docking model does not fit the schema (or does not parse).
    #[error("docking model {path}: {}", findings.join("; "))]
    Docking {
        /// The model file.
        path: PathBuf,
        /// Every error found, each saying what, where and what to do.
        findings: Vec<String>,
    },
    /// A replica digest received from another site cannot be right (engine/src/digest.rs).
    #[error(transparent)]
    Digest(#[from] digest::DigestError),
    /// An upgrade package or command was refused (engine/src/upgrade).
    #[error(transparent)]
    Upgrade(#[from] upgrade::UpgradeError),
    /// Capture is not what berth installed, or the replicated schema changed outside a
    /// migration (SPEC 2.4.1): the site applies and exports nothing until it is repaired.
    #[error(
        "site {site}: capture is not as berth installed it, so nothing was applied or exported:\n{guard}"
    )]
    CaptureStopped {
        /// The site's name.
        site: String,
        /// Each table and what changed, and what to do.
        guard: Box<guard::Guard>,
    },
    /// A schema migration failed or does not fit this site.
    #[error("schema migration: {0}")]
    Migration(Box<migration::Error>),
    /// A migration's executable step failed; the database was restored from the backup
    /// taken before it.
    #[error(
        "the executable step of migration {version} failed ({reason}); the database was restored from the backup taken before it"
    )]
    ExecStep {
        /// The migration's version.
        version: i64,
        /// Exit code or why it could not run, and the tail of its output.
        reason: String,
    },
    /// A failure injected by a test (crash simulation).
    #[error("injected failure at {0}")]
    Injected(&'static str),
    /// The exchange folder cannot be written (a write-protected stick, a read-only share):
    /// the incoming bundles were applied; the outgoing ones could not be written.
    #[error(
        "{folder} cannot be written ({source}): this site's outgoing bundles go there; make it writable (a stick's write-protect switch, the share's or mount's options, the folder's permissions) and dock again, or dock with --download-only to only apply what it holds"
    )]
    NotWritable {
        /// The exchange folder.
        folder: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A collision cannot be resolved as asked.
    #[error(transparent)]
    Resolve(#[from] conflict::ResolveError),
    /// A rows kept aside by a repair cannot be re-applied or discarded as asked (SPEC 2.15).
    #[error("{0}")]
    Kept(String),
}

impl EngineError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    /// True when retrying cannot help (the bundle should be quarantined).
    pub fn is_permanent(&self) -> bool {
        match self {
            EngineError::Bundle(e) => e.is_permanent(),
            EngineError::Sealed { source, .. } => source.is_permanent(),
            EngineError::BadPayload { .. }
            | EngineError::SqlRefused { .. }
            | EngineError::Refused { .. }
            | EngineError::Volume { .. }
            | EngineError::Digest(_)
            | EngineError::WrongRole { .. } => true,
            _ => false,
        }
    }
}

/// Result alias of the engine.
impl From<migration::Error> for EngineError {
    fn from(e: migration::Error) -> Self {
        match e {
            migration::Error::Engine(inner) => inner,
            migration::Error::Sql(inner) => EngineError::Sql(inner),
            other => EngineError::Migration(Box::new(other)),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
