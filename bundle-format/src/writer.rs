//! Building a bundle: payload entries streamed in name order, then the manifest
//! and its signature.
//!
//! The zip profile written here (SPEC: "container profile"): entries in the order
//! added (strictly increasing names) followed by `manifest.toml` and `manifest.sig`,
//! both stored; every entry's modification time is 1980-01-01 00:00:00, its unix
//! permissions `0644` (made by Unix), no extra fields, no comments, no data
//! descriptors, no zip64 (an entry must stay below 4 GiB); deflate at level 6
//! unless [`BundleWriter::set_deflate_level`] says otherwise. The same inputs
//! give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Seek, Write};

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

use crate::error::BundleError;
use crate::keys::SecretKey;
use crate::manifest::{
    Compression, EntryMeta, FORMAT_VERSION, MANIFEST_NAME, Manifest, PAYLOAD_PREFIX, Party,
    SIGNATURE_NAME, StreamPosition, is_valid_bundle_id,
};
use crate::naming::{entry_name_problem, is_valid_kind};

/// The default deflate level: the usual balance of speed and size.
pub const DEFAULT_DEFLATE_LEVEL: u32 = 6;

/// Entries at or above this size would need zip64, which the v1 writer does not write.
const MAX_WRITER_ENTRY: u64 = u32::MAX as u64 - 1;

const CHUNK: usize = 64 * 1024;

/// Everything in the manifest except the entries and kinds, which the writer
/// derives from what is added.
#[derive(Clone, Debug)]
pub struct BundleHeader {
    /// The sending site and the id of the key that will sign (must match the key given to `finish`).
    pub sender: Party,
    /// Recipient site names, or `["*"]`; the writer sorts them and removes duplicates.
    pub recipients: Vec<String>,
    /// Unix seconds, supplied by the caller (the crate has no clock).
    pub created: u64,
    /// A fixed bundle id (32 lowercase hex), or `None` for a random one.
    pub bundle_id: Option<String>,
    /// Position in the sender->recipient stream.
    pub stream: Option<StreamPosition>,
    /// The sender's schema checksum.
    pub schema_checksum: Option<String>,
    /// The sender's software level.
    pub software_level: Option<String>,
    /// Extensions a reader must understand.
    pub critical: Vec<String>,
    /// Data of later content kinds.
    pub extensions: BTreeMap<String, toml::Value>,
}

/// Writes one bundle to `W`, which should be empty and positioned at its start.
///
/// After any error the writer must be dropped: the output is garbage (write it
/// to a `*.part` file and delete that on error).
pub struct BundleWriter<W: Write + Seek> {
    zip: ZipWriter<W>,
    /// The manifest so far (entries and kinds grow as entries are added).
    manifest: Manifest,
    extra_kinds: BTreeSet<String>,
    folded: BTreeSet<String>,
    label: String,
    deflate_level: u32,
    poisoned: bool,
}

impl<W: Write + Seek> fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleWriter")
            .field("bundle_id", &self.manifest.bundle_id)
            .field("entries", &self.manifest.entries.len())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

fn random_bundle_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

impl<W: Write + Seek> BundleWriter<W> {
    /// Starts a bundle. Checks the header against the manifest rules now, so that
    /// a bad header fails before any payload is written.
    pub fn new(out: W, header: BundleHeader) -> Result<Self, BundleError> {
        let bundle_id = match header.bundle_id {
            Some(id) if is_valid_bundle_id(&id) => id,
            Some(id) => {
                return Err(BundleError::BadInput {
                    bundle: "writing".to_owned(),
                    entry: None,
                    detail: format!("bundle id {id:?} is not 32 lowercase hex digits"),
                });
            }
            None => random_bundle_id(),
        };
        let label = format!("writing {bundle_id}");
        let mut recipients = header.recipients;
        recipients.sort();
        recipients.dedup();
        let mut critical = header.critical;
        critical.sort();
        critical.dedup();
        let manifest = Manifest {
            format: FORMAT_VERSION,
            bundle_id,
            created: header.created,
            sender: header.sender,
            recipients,
            kinds: Vec::new(),
            stream: header.stream,
            schema_checksum: header.schema_checksum,
            software_level: header.software_level,
            entries: Vec::new(),
            critical,
            extensions: header.extensions,
        };
        // Same rules as the reader, so the writer cannot make a bundle nobody opens.
        manifest.validate().map_err(|e| as_input(e, &label))?;
        Ok(BundleWriter {
            zip: ZipWriter::new(out),
            manifest,
            extra_kinds: BTreeSet::new(),
            folded: BTreeSet::new(),
            label,
            deflate_level: DEFAULT_DEFLATE_LEVEL,
            poisoned: false,
        })
    }

    /// The bundle id (given, or generated by [`BundleWriter::new`]).
    pub fn bundle_id(&self) -> &str {
        &self.manifest.bundle_id
    }

    /// Deflate level (1 fastest to 9 smallest) for entries added from now on.
    pub fn set_deflate_level(&mut self, level: u32) -> Result<(), BundleError> {
        if !(1..=9).contains(&level) {
            return Err(self.input(None, format!("deflate level {level} is not 1 to 9")));
        }
        self.deflate_level = level;
        Ok(())
    }

    /// Lists `kind` in the manifest's `kinds` although no entry has it (content
    /// carried in `extensions` or in the stream position, e.g. `ack`).
    pub fn declare_kind(&mut self, kind: &str) -> Result<(), BundleError> {
        if !is_valid_kind(kind) {
            return Err(self.input(None, format!("kind {kind:?} is not a valid kind name")));
        }
        self.extra_kinds.insert(kind.to_owned());
        Ok(())
    }

    fn input(&self, entry: Option<&str>, detail: String) -> BundleError {
        BundleError::BadInput {
            bundle: self.label.clone(),
            entry: entry.map(str::to_owned),
            detail,
        }
    }

    fn io(&mut self, entry: &str, source: io::Error) -> BundleError {
        self.poisoned = true;
        BundleError::Io {
            bundle: self.label.clone(),
            entry: Some(entry.to_owned()),
            source,
        }
    }

    fn zip_err(&mut self, entry: &str, e: zip::result::ZipError) -> BundleError {
        let source = match e {
            zip::result::ZipError::Io(io) => io,
            other => io::Error::other(other.to_string()),
        };
        self.io(entry, source)
    }

    fn check_new_name(&self, name: &str, kind: &str) -> Result<(), BundleError> {
        if self.poisoned {
            return Err(self.input(Some(name), "an earlier write failed".to_owned()));
        }
        if !name.starts_with(PAYLOAD_PREFIX) || name.len() == PAYLOAD_PREFIX.len() {
            return Err(self.input(Some(name), "entry names start with payload/".to_owned()));
        }
        if let Some(reason) = entry_name_problem(name) {
            return Err(self.input(Some(name), format!("unsafe name: {reason}")));
        }
        if let Some(last) = self.manifest.entries.last()
            && last.name.as_str() >= name
        {
            return Err(self.input(
                Some(name),
                format!(
                    "entries must be added in strictly increasing name order (after {:?})",
                    last.name
                ),
            ));
        }
        if self.folded.contains(&name.to_lowercase()) {
            return Err(self.input(
                Some(name),
                "differs from an earlier entry only in case".to_owned(),
            ));
        }
        if !is_valid_kind(kind) {
            return Err(self.input(
                Some(name),
                format!("kind {kind:?} is not a valid kind name"),
            ));
        }
        Ok(())
    }

    fn file_options(&self, compression: Compression) -> SimpleFileOptions {
        let base = SimpleFileOptions::default()
            .system(System::Unix)
            .last_modified_time(DateTime::DEFAULT)
            .unix_permissions(0o644)
            .large_file(false);
        match compression {
            Compression::Stored => base
                .compression_method(CompressionMethod::Stored)
                .compression_level(None),
            Compression::Deflate => base
                .compression_method(CompressionMethod::Deflated)
                .compression_level(Some(i64::from(self.deflate_level))),
        }
    }

    /// Adds the payload entry `name` (which must start with `payload/` and sort after
    /// every entry added before), streaming `data` through sha256 into the zip.
    pub fn add_entry<R: Read>(
        &mut self,
        name: &str,
        kind: &str,
        compression: Compression,
        mut data: R,
    ) -> Result<EntryMeta, BundleError> {
        self.check_new_name(name, kind)?;
        let options = self.file_options(compression);
        if let Err(e) = self.zip.start_file(name, options) {
            return Err(self.zip_err(name, e));
        }
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(name, e)),
            };
            size = size.saturating_add(n as u64);
            if size > MAX_WRITER_ENTRY {
                self.poisoned = true;
                return Err(self.input(
                    Some(name),
                    "entry reaches 4 GiB; format v1 writers do not write zip64, split the payload"
                        .to_owned(),
                ));
            }
            let Some(chunk) = buf.get(..n) else {
                let e = io::Error::other("reader claimed more bytes than its buffer holds");
                return Err(self.io(name, e));
            };
            hasher.update(chunk);
            if let Err(e) = self.zip.write_all(chunk) {
                return Err(self.io(name, e));
            }
        }
        let meta = EntryMeta {
            name: name.to_owned(),
            kind: kind.to_owned(),
            size,
            sha256: hex::encode(hasher.finalize()),
            compression,
        };
        self.folded.insert(name.to_lowercase());
        self.manifest.entries.push(meta.clone());
        Ok(meta)
    }

    /// [`BundleWriter::add_entry`] for bytes already in memory.
    pub fn add_bytes(
        &mut self,
        name: &str,
        kind: &str,
        compression: Compression,
        data: &[u8],
    ) -> Result<EntryMeta, BundleError> {
        self.add_entry(name, kind, compression, data)
    }

    /// Writes `manifest.toml` and `manifest.sig` (signed with `key`, whose id must be
    /// the header's `sender.key_id`), closes the zip and returns the output and the manifest.
    ///
    /// `kinds` = the sorted set of the entries' kinds plus those given to
    /// [`BundleWriter::declare_kind`]. The signature covers exactly the stored
    /// `manifest.toml` bytes.
    pub fn finish(mut self, key: &SecretKey) -> Result<(W, Manifest), BundleError> {
        if self.poisoned {
            return Err(self.input(None, "an earlier write failed".to_owned()));
        }
        let key_id = key.public().key_id();
        if key_id != self.manifest.sender.key_id {
            return Err(self.input(
                None,
                format!(
                    "signing key {key_id} is not the sender key {} named in the header",
                    self.manifest.sender.key_id
                ),
            ));
        }
        let mut kinds = std::mem::take(&mut self.extra_kinds);
        kinds.extend(self.manifest.entries.iter().map(|e| e.kind.clone()));
        self.manifest.kinds = kinds.into_iter().collect();
        let text = self
            .manifest
            .to_toml()
            .map_err(|e| as_input(e, &self.label))?;
        let sig = format!("{}\n", hex::encode(key.sign(text.as_bytes())));

        for (name, bytes) in [
            (MANIFEST_NAME, text.as_bytes()),
            (SIGNATURE_NAME, sig.as_bytes()),
        ] {
            let options = self.file_options(Compression::Stored);
            if let Err(e) = self.zip.start_file(name, options) {
                return Err(self.zip_err(name, e));
            }
            if let Err(e) = self.zip.write_all(bytes) {
                return Err(self.io(name, e));
            }
        }
        match self.zip.finish() {
            Ok(out) => Ok((out, self.manifest)),
            Err(e) => Err(BundleError::Io {
                bundle: self.label,
                entry: None,
                source: match e {
                    zip::result::ZipError::Io(io) => io,
                    other => io::Error::other(other.to_string()),
                },
            }),
        }
    }
}

/// Manifest rule failures while writing are the caller's mistakes.
fn as_input(e: BundleError, label: &str) -> BundleError {
    match e {
        BundleError::BadInput { entry, detail, .. } => BundleError::BadInput {
            bundle: label.to_owned(),
            entry,
            detail,
        },
        other => BundleError::BadInput {
            bundle: label.to_owned(),
            entry: None,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::io::Cursor;

    fn header(key: &SecretKey) -> BundleHeader {
        BundleHeader {
            sender: Party {
                site: "hq".into(),
                key_id: key.public().key_id(),
            },
            recipients: vec!["bob".into(), "alice".into(), "bob".into()],
            created: 1,
            bundle_id: Some("00000000000000000000000000000001".into()),
            stream: None,
            schema_checksum: None,
            software_level: None,
            critical: vec![],
            extensions: BTreeMap::new(),
        }
    }

    #[test]
    fn refuses_misuse() {
        let key = SecretKey::from_seed(&[9; 32]);
        let mut w = BundleWriter::new(Cursor::new(Vec::new()), header(&key)).unwrap();
        w.add_bytes("payload/b", "changes", Compression::Stored, b"x")
            .unwrap();
        for (name, kind) in [
            ("payload/a", "changes"),
            ("payload/b", "changes"),
            ("payload/B2", "changes"),
            ("other/c", "changes"),
            ("payload/../c", "changes"),
            ("payload/c", "Bad Kind"),
            ("payload/", "changes"),
        ] {
            let e = w
                .add_bytes(name, kind, Compression::Stored, b"x")
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadInput, "{name}");
        }
        w.add_bytes("payload/c", "changes", Compression::Stored, b"x")
            .unwrap();
        let other = SecretKey::from_seed(&[8; 32]);
        assert_eq!(w.finish(&other).unwrap_err().kind(), ErrorKind::BadInput);
    }

    #[test]
    fn bad_header_fails_early() {
        let key = SecretKey::from_seed(&[9; 32]);
        let mut h = header(&key);
        h.sender.site = "Not A Site".into();
        assert_eq!(
            BundleWriter::new(Cursor::new(Vec::new()), h)
                .unwrap_err()
                .kind(),
            ErrorKind::BadInput
        );
        let mut h = header(&key);
        h.bundle_id = Some("xyz".into());
        assert!(BundleWriter::new(Cursor::new(Vec::new()), h).is_err());
    }

    #[test]
    fn kinds_and_recipients_are_normalized() {
        let key = SecretKey::from_seed(&[9; 32]);
        let mut w = BundleWriter::new(Cursor::new(Vec::new()), header(&key)).unwrap();
        w.declare_kind("ack").unwrap();
        w.add_bytes("payload/a", "report", Compression::Deflate, b"r")
            .unwrap();
        w.add_bytes("payload/b", "changes", Compression::Stored, b"c")
            .unwrap();
        let (_, m) = w.finish(&key).unwrap();
        assert_eq!(m.kinds, ["ack", "changes", "report"]);
        assert_eq!(m.recipients, ["alice", "bob"]);
    }
}
