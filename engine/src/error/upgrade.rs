//! Why an upgrade package or command is refused ([`crate::upgrade`]).

/// Why a package is not acceptable.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// A field of a package breaks a rule.
    #[error("package {package:?}: {field}: {reason}")]
    Invalid {
        /// The package name as given.
        package: String,
        /// The field.
        field: String,
        /// The rule broken.
        reason: String,
    },
    /// The package file is not TOML of the expected shape.
    #[error("package file {path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's complaint.
        reason: String,
    },
    /// No package of this name is known here.
    #[error("no upgrade package named {name:?} here")]
    Unknown {
        /// The name.
        name: String,
    },
    /// A package of this name was already published.
    #[error(
        "an upgrade package named {name:?} was already published; publish the new version under a new name"
    )]
    Exists {
        /// The name.
        name: String,
    },
    /// The package is not in a state where the command can act.
    #[error("upgrade package {name:?}: {reason}")]
    NotNow {
        /// The name.
        name: String,
        /// What it waits for, and what to do.
        reason: String,
    },
}
