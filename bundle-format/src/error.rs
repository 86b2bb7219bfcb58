//! Every way a bundle can be refused, each with its own variant naming the bundle
//! (its label, usually the file name) and, where it applies, the entry.
//!
//! [`ErrorKind`] is the flat, comparable form used by tests, test vectors
//! (`expect: bad-signature`) and by the watcher to decide what to do:
//! [`BundleError::is_permanent`] tells "retry later" (I/O) from "quarantine".

use std::fmt;
use std::str::FromStr;

use crate::keys::KeyId;
use crate::manifest::Compression;

/// The kind of a [`BundleError`], without its details.
///
/// The kebab-case names from [`ErrorKind::as_str`] are part of the format's
/// specification: test vectors name the expected failure with them.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// `not-a-zip`
    NotAZip,
    /// `truncated`
    Truncated,
    /// `trailing-data`
    TrailingData,
    /// `prepended-data`
    PrependedData,
    /// `too-many-entries`
    TooManyEntries,
    /// `too-large`
    TooLarge,
    /// `ratio-too-high`
    RatioTooHigh,
    /// `duplicate-name`
    DuplicateName,
    /// `unsafe-name`
    UnsafeName,
    /// `special-entry`
    SpecialEntry,
    /// `encrypted`
    Encrypted,
    /// `unsupported-method`
    UnsupportedMethod,
    /// `missing-manifest`
    MissingManifest,
    /// `manifest-too-large`
    ManifestTooLarge,
    /// `bad-manifest`
    BadManifest,
    /// `unsupported-version`
    UnsupportedVersion,
    /// `unknown-critical`
    UnknownCritical,
    /// `missing-signature`
    MissingSignature,
    /// `bad-signature`
    BadSignature,
    /// `unknown-signer`
    UnknownSigner,
    /// `sender-mismatch`
    SenderMismatch,
    /// `kind-not-allowed`
    KindNotAllowed,
    /// `missing-entry`
    MissingEntry,
    /// `unlisted-entry`
    UnlistedEntry,
    /// `size-mismatch`
    SizeMismatch,
    /// `hash-mismatch`
    HashMismatch,
    /// `method-mismatch`
    MethodMismatch,
    /// `corrupt-entry`
    CorruptEntry,
    /// `no-such-entry`
    NoSuchEntry,
    /// `bad-key`
    BadKey,
    /// `bad-input`
    BadInput,
    /// `io`
    Io,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::NotAZip,
        ErrorKind::Truncated,
        ErrorKind::TrailingData,
        ErrorKind::PrependedData,
        ErrorKind::TooManyEntries,
        ErrorKind::TooLarge,
        ErrorKind::RatioTooHigh,
        ErrorKind::DuplicateName,
        ErrorKind::UnsafeName,
        ErrorKind::SpecialEntry,
        ErrorKind::Encrypted,
        ErrorKind::UnsupportedMethod,
        ErrorKind::MissingManifest,
        ErrorKind::ManifestTooLarge,
        ErrorKind::BadManifest,
        ErrorKind::UnsupportedVersion,
        ErrorKind::UnknownCritical,
        ErrorKind::MissingSignature,
        ErrorKind::BadSignature,
        ErrorKind::UnknownSigner,
        ErrorKind::SenderMismatch,
        ErrorKind::KindNotAllowed,
        ErrorKind::MissingEntry,
        ErrorKind::UnlistedEntry,
        ErrorKind::SizeMismatch,
        ErrorKind::HashMismatch,
        ErrorKind::MethodMismatch,
        ErrorKind::CorruptEntry,
        ErrorKind::NoSuchEntry,
        ErrorKind::BadKey,
        ErrorKind::BadInput,
        ErrorKind::Io,
    ];

    /// The stable kebab-case name, e.g. `"bad-signature"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotAZip => "not-a-zip",
            ErrorKind::Truncated => "truncated",
            ErrorKind::TrailingData => "trailing-data",
            ErrorKind::PrependedData => "prepended-data",
            ErrorKind::TooManyEntries => "too-many-entries",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::RatioTooHigh => "ratio-too-high",
            ErrorKind::DuplicateName => "duplicate-name",
            ErrorKind::UnsafeName => "unsafe-name",
            ErrorKind::SpecialEntry => "special-entry",
            ErrorKind::Encrypted => "encrypted",
            ErrorKind::UnsupportedMethod => "unsupported-method",
            ErrorKind::MissingManifest => "missing-manifest",
            ErrorKind::ManifestTooLarge => "manifest-too-large",
            ErrorKind::BadManifest => "bad-manifest",
            ErrorKind::UnsupportedVersion => "unsupported-version",
            ErrorKind::UnknownCritical => "unknown-critical",
            ErrorKind::MissingSignature => "missing-signature",
            ErrorKind::BadSignature => "bad-signature",
            ErrorKind::UnknownSigner => "unknown-signer",
            ErrorKind::SenderMismatch => "sender-mismatch",
            ErrorKind::KindNotAllowed => "kind-not-allowed",
            ErrorKind::MissingEntry => "missing-entry",
            ErrorKind::UnlistedEntry => "unlisted-entry",
            ErrorKind::SizeMismatch => "size-mismatch",
            ErrorKind::HashMismatch => "hash-mismatch",
            ErrorKind::MethodMismatch => "method-mismatch",
            ErrorKind::CorruptEntry => "corrupt-entry",
            ErrorKind::NoSuchEntry => "no-such-entry",
            ErrorKind::BadKey => "bad-key",
            ErrorKind::BadInput => "bad-input",
            ErrorKind::Io => "io",
        }
    }

    /// The kind named by `s` (as produced by [`ErrorKind::as_str`]), if any.
    /// (`"bad-signature".parse::<ErrorKind>()` works too, through [`FromStr`].)
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string did not name an [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error kind {0:?}")]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::from_str(s).ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

/// Why a bundle (or a key, or a writer call) was refused.
///
/// `bundle` is the label given to [`crate::Bundle::open`] (usually the file name);
/// for a bundle being written it is `writing <bundle_id>`, for a manifest parsed on
/// its own it is `manifest`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bytes are not a zip archive (no end-of-central-directory record, or a broken one).
    #[error("{bundle}: not a zip archive: {detail}")]
    NotAZip {
        /// The bundle's label.
        bundle: String,
        /// What the zip reader reported.
        detail: String,
    },
    /// The file starts like a zip archive but its end is missing.
    #[error("{bundle}: truncated archive: {detail}")]
    Truncated {
        /// The bundle's label.
        bundle: String,
        /// What the zip reader reported.
        detail: String,
    },
    /// Bytes follow the end-of-central-directory record, or the archive has a comment.
    #[error("{bundle}: data after the end of the archive: {detail}")]
    TrailingData {
        /// The bundle's label.
        bundle: String,
        /// What was found.
        detail: String,
    },
    /// Bytes precede the first zip record (the archive does not start at offset 0).
    #[error("{bundle}: {offset} bytes of data before the start of the archive")]
    PrependedData {
        /// The bundle's label.
        bundle: String,
        /// Where the archive really starts.
        offset: u64,
    },
    /// The archive has more entries than [`crate::Limits::max_entries`].
    #[error("{bundle}: {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// The bundle's label.
        bundle: String,
        /// Entries in the central directory.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An entry, or all entries together (`entry` is `None`), declare more bytes than allowed.
    #[error("{bundle}: {} declares {size} bytes, more than the limit of {limit}", entry.as_deref().unwrap_or("the archive in total"))]
    TooLarge {
        /// The bundle's label.
        bundle: String,
        /// The entry, or `None` for the total.
        entry: Option<String>,
        /// Declared uncompressed size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A compressed entry expands more than [`crate::Limits::max_ratio`] times (zip bomb guard).
    #[error(
        "{bundle}: entry {entry} expands {size}/{compressed} bytes, above the ratio limit {limit}"
    )]
    RatioTooHigh {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// Declared uncompressed size.
        size: u64,
        /// Declared compressed size.
        compressed: u64,
        /// The limit.
        limit: u64,
    },
    /// Two entries have the same name, exactly or after Unicode lowercasing.
    #[error(
        "{bundle}: entry {entry} has the same name as {other} (names are compared case-insensitively)"
    )]
    DuplicateName {
        /// The bundle's label.
        bundle: String,
        /// The later entry.
        entry: String,
        /// The earlier entry it collides with.
        other: String,
    },
    /// An entry name could escape a folder or cannot be a file name on every system.
    #[error("{bundle}: unsafe entry name {entry:?}: {reason}")]
    UnsafeName {
        /// The bundle's label.
        bundle: String,
        /// The name, lossily decoded.
        entry: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// An entry is a directory, a symbolic link or another special file.
    #[error("{bundle}: entry {entry} is not a regular file ({what})")]
    SpecialEntry {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// What it is instead.
        what: &'static str,
    },
    /// An entry is encrypted; bundles carry no encrypted zip entries.
    #[error("{bundle}: entry {entry} is encrypted")]
    Encrypted {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
    },
    /// An entry uses a compression method other than stored or deflate.
    #[error(
        "{bundle}: entry {entry} uses compression method {method}; only stored and deflate are allowed"
    )]
    UnsupportedMethod {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// The method as the zip reader names it.
        method: String,
    },
    /// The archive has no `manifest.toml`.
    #[error("{bundle}: no manifest.toml in the archive")]
    MissingManifest {
        /// The bundle's label.
        bundle: String,
    },
    /// `manifest.toml` (or `manifest.sig`) is larger than [`crate::Limits::max_manifest_size`].
    #[error("{bundle}: {entry} declares {size} bytes, more than the limit of {limit}")]
    ManifestTooLarge {
        /// The bundle's label.
        bundle: String,
        /// `manifest.toml` or `manifest.sig`.
        entry: String,
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The manifest is not valid TOML, has unknown or missing fields, or breaks a rule.
    #[error("{bundle}: bad manifest: {detail}")]
    BadManifest {
        /// The bundle's label.
        bundle: String,
        /// What is wrong.
        detail: String,
    },
    /// The manifest's `format` is not one this reader implements.
    #[error("{bundle}: manifest format {version} is not supported (this reader implements format {supported})", supported = crate::manifest::FORMAT_VERSION)]
    UnsupportedVersion {
        /// The bundle's label.
        bundle: String,
        /// The `format` found.
        version: i64,
    },
    /// The manifest marks an extension critical that this reader does not understand.
    #[error("{bundle}: critical extension {extension:?} is not understood by this reader")]
    UnknownCritical {
        /// The bundle's label.
        bundle: String,
        /// The extension's name.
        extension: String,
    },
    /// The archive has no `manifest.sig`.
    #[error("{bundle}: no manifest.sig in the archive (the bundle is unsigned)")]
    MissingSignature {
        /// The bundle's label.
        bundle: String,
    },
    /// The signature is malformed or does not match the manifest's bytes.
    #[error("{bundle}: bad signature: {detail}")]
    BadSignature {
        /// The bundle's label.
        bundle: String,
        /// Malformed, or not matching.
        detail: &'static str,
    },
    /// The manifest names a signing key that is not in the trusted keys.
    #[error("{bundle}: signed by key {key_id} of site {site}, which is not trusted here")]
    UnknownSigner {
        /// The bundle's label.
        bundle: String,
        /// The key id the manifest names.
        key_id: KeyId,
        /// The site the manifest claims.
        site: String,
    },
    /// The manifest's sender site is not the site the signing key is trusted for.
    #[error(
        "{bundle}: manifest claims sender {claimed} but key {key_id} belongs to site {key_site}"
    )]
    SenderMismatch {
        /// The bundle's label.
        bundle: String,
        /// The site the manifest claims.
        claimed: String,
        /// The site the key is trusted for.
        key_site: String,
        /// The signing key.
        key_id: KeyId,
    },
    /// The bundle carries a content kind its signer is not trusted to send.
    #[error("{bundle}: key {key_id} is not trusted to send {kind:?} content")]
    KindNotAllowed {
        /// The bundle's label.
        bundle: String,
        /// The refused kind.
        kind: String,
        /// The signing key.
        key_id: KeyId,
    },
    /// The manifest lists an entry that is not in the archive.
    #[error("{bundle}: entry {entry} is listed in the manifest but missing from the archive")]
    MissingEntry {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
    },
    /// The archive holds an entry the manifest does not list.
    #[error("{bundle}: entry {entry} is in the archive but not listed in the manifest")]
    UnlistedEntry {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
    },
    /// An entry's size differs from the manifest's (declared in the zip, or bytes actually read;
    /// `actual` may be a lower bound when reading stopped early).
    #[error("{bundle}: entry {entry} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// The manifest's size.
        expected: u64,
        /// What was found.
        actual: u64,
    },
    /// An entry's sha256 differs from the manifest's.
    #[error("{bundle}: entry {entry} has sha256 {actual}, the manifest says {expected}")]
    HashMismatch {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// The manifest's hash.
        expected: String,
        /// The hash of the bytes read.
        actual: String,
    },
    /// An entry's compression method differs from the manifest's.
    #[error("{bundle}: entry {entry} is stored with {actual}, the manifest says {expected}")]
    MethodMismatch {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// The manifest's method.
        expected: Compression,
        /// The zip's method.
        actual: String,
    },
    /// An entry's data cannot be decompressed, or fails the zip's own CRC check.
    #[error("{bundle}: entry {entry} is corrupt: {detail}")]
    CorruptEntry {
        /// The bundle's label.
        bundle: String,
        /// The entry.
        entry: String,
        /// What the decoder reported.
        detail: String,
    },
    /// The caller asked for an entry the manifest does not list.
    #[error("{bundle}: no entry {entry} in the manifest")]
    NoSuchEntry {
        /// The bundle's label.
        bundle: String,
        /// The entry asked for.
        entry: String,
    },
    /// A key's text form is malformed.
    #[error("bad key: {detail}")]
    BadKey {
        /// What is wrong.
        detail: String,
    },
    /// The caller misused the writer (entry order, names, kinds, header fields).
    #[error("{bundle}: {}{detail}", entry.as_ref().map(|e| format!("entry {e}: ")).unwrap_or_default())]
    BadInput {
        /// The bundle's label.
        bundle: String,
        /// The entry concerned, if any.
        entry: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// Reading or writing the underlying file failed; the same bundle may succeed later.
    #[error("{bundle}: I/O error{}: {source}", entry.as_ref().map(|e| format!(" on entry {e}")).unwrap_or_default())]
    Io {
        /// The bundle's label.
        bundle: String,
        /// The entry being read or written, if any.
        entry: Option<String>,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Matches every variant that names a bundle, binding its label to `$b` (by reference or
/// mutable reference, following `$e`); `$none` for the variants that name none.
macro_rules! with_bundle {
    ($e:expr, $b:ident => $some:expr, $none:expr) => {
        match $e {
            BundleError::BadKey { .. } => $none,
            BundleError::NotAZip { bundle: $b, .. }
            | BundleError::Truncated { bundle: $b, .. }
            | BundleError::TrailingData { bundle: $b, .. }
            | BundleError::PrependedData { bundle: $b, .. }
            | BundleError::TooManyEntries { bundle: $b, .. }
            | BundleError::TooLarge { bundle: $b, .. }
            | BundleError::RatioTooHigh { bundle: $b, .. }
            | BundleError::DuplicateName { bundle: $b, .. }
            | BundleError::UnsafeName { bundle: $b, .. }
            | BundleError::SpecialEntry { bundle: $b, .. }
            | BundleError::Encrypted { bundle: $b, .. }
            | BundleError::UnsupportedMethod { bundle: $b, .. }
            | BundleError::MissingManifest { bundle: $b }
            | BundleError::ManifestTooLarge { bundle: $b, .. }
            | BundleError::BadManifest { bundle: $b, .. }
            | BundleError::UnsupportedVersion { bundle: $b, .. }
            | BundleError::UnknownCritical { bundle: $b, .. }
            | BundleError::MissingSignature { bundle: $b }
            | BundleError::BadSignature { bundle: $b, .. }
            | BundleError::UnknownSigner { bundle: $b, .. }
            | BundleError::SenderMismatch { bundle: $b, .. }
            | BundleError::KindNotAllowed { bundle: $b, .. }
            | BundleError::MissingEntry { bundle: $b, .. }
            | BundleError::UnlistedEntry { bundle: $b, .. }
            | BundleError::SizeMismatch { bundle: $b, .. }
            | BundleError::HashMismatch { bundle: $b, .. }
            | BundleError::MethodMismatch { bundle: $b, .. }
            | BundleError::CorruptEntry { bundle: $b, .. }
            | BundleError::NoSuchEntry { bundle: $b, .. }
            | BundleError::BadInput { bundle: $b, .. }
            | BundleError::Io { bundle: $b, .. } => $some,
        }
    };
}

impl BundleError {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BundleError::NotAZip { .. } => ErrorKind::NotAZip,
            BundleError::Truncated { .. } => ErrorKind::Truncated,
            BundleError::TrailingData { .. } => ErrorKind::TrailingData,
            BundleError::PrependedData { .. } => ErrorKind::PrependedData,
            BundleError::TooManyEntries { .. } => ErrorKind::TooManyEntries,
            BundleError::TooLarge { .. } => ErrorKind::TooLarge,
            BundleError::RatioTooHigh { .. } => ErrorKind::RatioTooHigh,
            BundleError::DuplicateName { .. } => ErrorKind::DuplicateName,
            BundleError::UnsafeName { .. } => ErrorKind::UnsafeName,
            BundleError::SpecialEntry { .. } => ErrorKind::SpecialEntry,
            BundleError::Encrypted { .. } => ErrorKind::Encrypted,
            BundleError::UnsupportedMethod { .. } => ErrorKind::UnsupportedMethod,
            BundleError::MissingManifest { .. } => ErrorKind::MissingManifest,
            BundleError::ManifestTooLarge { .. } => ErrorKind::ManifestTooLarge,
            BundleError::BadManifest { .. } => ErrorKind::BadManifest,
            BundleError::UnsupportedVersion { .. } => ErrorKind::UnsupportedVersion,
            BundleError::UnknownCritical { .. } => ErrorKind::UnknownCritical,
            BundleError::MissingSignature { .. } => ErrorKind::MissingSignature,
            BundleError::BadSignature { .. } => ErrorKind::BadSignature,
            BundleError::UnknownSigner { .. } => ErrorKind::UnknownSigner,
            BundleError::SenderMismatch { .. } => ErrorKind::SenderMismatch,
            BundleError::KindNotAllowed { .. } => ErrorKind::KindNotAllowed,
            BundleError::MissingEntry { .. } => ErrorKind::MissingEntry,
            BundleError::UnlistedEntry { .. } => ErrorKind::UnlistedEntry,
            BundleError::SizeMismatch { .. } => ErrorKind::SizeMismatch,
            BundleError::HashMismatch { .. } => ErrorKind::HashMismatch,
            BundleError::MethodMismatch { .. } => ErrorKind::MethodMismatch,
            BundleError::CorruptEntry { .. } => ErrorKind::CorruptEntry,
            BundleError::NoSuchEntry { .. } => ErrorKind::NoSuchEntry,
            BundleError::BadKey { .. } => ErrorKind::BadKey,
            BundleError::BadInput { .. } => ErrorKind::BadInput,
            BundleError::Io { .. } => ErrorKind::Io,
        }
    }

    /// `false` for I/O errors (retry the same file later), `true` for everything
    /// else: the bytes themselves are wrong and retrying cannot help (quarantine).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, BundleError::Io { .. })
    }

    /// The bundle label this error names, if it names one (key errors do not).
    pub fn bundle(&self) -> Option<&str> {
        with_bundle!(self, bundle => Some(bundle.as_str()), None)
    }

    /// Replaces the bundle label (errors from [`crate::Manifest::from_toml`] say `manifest`).
    pub(crate) fn relabel(mut self, label: &str) -> Self {
        with_bundle!(&mut self, bundle => *bundle = label.to_owned(), ());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.as_str()), "duplicate name {}", k.as_str());
            assert_eq!(k.as_str().parse::<ErrorKind>().unwrap(), *k);
            assert_eq!(ErrorKind::from_str(k.as_str()), Some(*k));
        }
        assert!("nope".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn only_io_is_retryable() {
        let io = BundleError::Io {
            bundle: "b".into(),
            entry: None,
            source: std::io::Error::other("disk"),
        };
        assert!(!io.is_permanent());
        assert_eq!(io.kind(), ErrorKind::Io);
        let sig = BundleError::BadSignature {
            bundle: "b".into(),
            detail: "x",
        };
        assert!(sig.is_permanent());
        assert_eq!(sig.relabel("c").bundle(), Some("c"));
    }
}
