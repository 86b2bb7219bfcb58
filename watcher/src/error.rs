//! Typed errors of the watcher.

use std::path::PathBuf;

/// A watcher error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The engine refused an operation (opening the site, applying, writing).
    #[error(transparent)]
    Engine(#[from] berth_engine::EngineError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Another watcher already runs for this site.
    #[error(
        "another `berth watch` already runs for site {site} (it holds {site}/watch.lock); stop it first"
    )]
    AlreadyWatching {
        /// The site folder.
        site: PathBuf,
    },
    /// The folder watcher (notify) could not be set up.
    #[error("cannot watch {path}: {reason}; use --no-events to rely on polling")]
    Notify {
        /// The folder.
        path: PathBuf,
        /// What notify said.
        reason: String,
    },
    /// A mail message is not one berth can take a bundle out of.
    #[error("mail message {path}: {reason}")]
    Mail {
        /// The message file (or the bundle being mailed).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The options do not make a watch possible.
    #[error("{0}")]
    Usage(&'static str),
    /// A `maildir:` source that is not a Maildir (no `new/` and no `cur/` folder in it).
    #[error(
        "{path} is not a Maildir (it has no new/ or cur/ folder): give the folder your mail \
         program delivers into, e.g. --via maildir:~/Maildir"
    )]
    NotMaildir {
        /// The path given.
        path: PathBuf,
    },
}

impl WatchError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        WatchError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of the watcher.
pub type Result<T, E = WatchError> = std::result::Result<T, E>;
