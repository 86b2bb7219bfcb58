//! The berth bundle format: a signed zip archive, built and verified without a
//! database, a filesystem path or a clock.
//!
//! A **bundle** is the only thing that travels between berth sites. It is a plain
//! zip file (stored or deflate entries, so any zip tool can open it) holding:
//!
//! - `payload/...`: the entries (change logs, extracts, migrations, upgrade files...),
//! - `manifest.toml`: the [`Manifest`]: format version, bundle id, sender site and
//!   key id, recipients, content kinds, stream position, schema checksum, software
//!   level, and every entry's size and sha256,
//! - `manifest.sig`: an ed25519 signature over the exact bytes of `manifest.toml`,
//!   as 128 hex digits and a newline.
//!
//! # Data flow
//!
//! - Writing: [`BundleWriter::new`] with a [`BundleHeader`] -> [`BundleWriter::add_entry`]
//!   for each entry in name order (streamed and hashed, never buffered) ->
//!   [`BundleWriter::finish`] with the sender's [`SecretKey`], which writes and signs
//!   the manifest. The same inputs give the same bytes.
//! - Reading: [`Bundle::open`] (structural checks against [`Limits`]; only the manifest
//!   and signature are read) gives a `Bundle<Unverified>` whose manifest may be shown
//!   but whose payload cannot be read. [`Bundle::verify`] against [`TrustedKeys`] gives a
//!   `Bundle<Verified>`, whose [`Bundle::copy_entry`] streams an entry out while
//!   checking its size and hash, and whose [`Bundle::stream_entry`] gives an entry to read
//!   as it streams, checked only when [`EntryStream::finish`] returns.
//! - Every failure is a [`BundleError`] naming the bundle (and entry); its
//!   [`ErrorKind`] is what tests and test vectors compare, and
//!   [`BundleError::is_permanent`] tells retry (I/O) from quarantine.
//! - [`naming`] holds the file-name rules: `hq_to_alice_0000000042.berth.zip`,
//!   temporary names to ignore, site names, safe entry names.
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::io::Cursor;
//! use berth_bundle::*;
//!
//! # fn main() -> Result<(), BundleError> {
//! let key = SecretKey::generate();
//! let header = BundleHeader {
//!     sender: Party { site: "hq".into(), key_id: key.public().key_id() },
//!     recipients: vec!["alice".into()],
//!     created: 1_700_000_000,
//!     bundle_id: None,
//!     stream: Some(StreamPosition { seq: 1, log_from: 1, log_to: 3, requires: 0, acks: 0 }),
//!     schema_checksum: None,
//!     software_level: None,
//!     critical: vec![],
//!     extensions: BTreeMap::new(),
//! };
//! let mut writer = BundleWriter::new(Cursor::new(Vec::new()), header)?;
//! writer.add_bytes("payload/changes.jsonl", "changes", Compression::Deflate, b"{\"op\":\"insert\"}\n")?;
//! let (file, _manifest) = writer.finish(&key)?;
//!
//! let mut trust = TrustedKeys::new();
//! trust.add(TrustedKey { public: key.public(), site: "hq".into(), kinds: None });
//!
//! let unverified = Bundle::open(Cursor::new(file.into_inner()), "example.berth.zip", &Limits::default())?;
//! let mut bundle = unverified.verify(&trust)?;
//! assert_eq!(bundle.manifest().sender.site, "hq");
//! let bytes = bundle.read_entry("payload/changes.jsonl", 1 << 20)?;
//! assert_eq!(bytes, b"{\"op\":\"insert\"}\n");
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod keys;
pub mod manifest;
pub mod naming;
pub mod reader;
pub mod seal;
pub mod volume;
pub mod writer;

pub use error::{BundleError, ErrorKind};
pub use keys::{KeyId, PublicKey, SecretKey, TrustedKey, TrustedKeys};
pub use manifest::{Compression, EntryMeta, FORMAT_VERSION, Manifest, Party, StreamPosition};
pub use reader::{Bundle, BundleState, EntryStream, Limits, Unverified, Verified};
pub use writer::{BundleHeader, BundleWriter};
