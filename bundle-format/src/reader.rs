//! Reading a bundle: [`Bundle::open`] checks the container, [`Bundle::verify`]
//! checks trust and turns a `Bundle<Unverified>` into a `Bundle<Verified>`, and
//! only a verified bundle gives out payload bytes, each hash-checked as it streams.
//!
//! `open` (structural checks; reads nothing but `manifest.toml` and `manifest.sig`):
//! 1. the end-of-central-directory record ends exactly at the end of the file and
//!    has no comment (`trailing-data`), the archive starts at offset 0
//!    (`prepended-data`), else `not-a-zip` / `truncated`;
//! 2. entry count (`too-many-entries`, checked before the central directory is read);
//! 3. per entry: exact and case-folded duplicate names (`duplicate-name`), directory,
//!    symlink or other special files (`special-entry`), unsafe names (`unsafe-name`),
//!    encryption (`encrypted`), methods other than stored and deflate
//!    (`unsupported-method`), declared sizes and ratio (`too-large`, `ratio-too-high`);
//! 4. `manifest.toml` present (`missing-manifest`), within the size limit
//!    (`manifest-too-large`), parsed and validated (`unsupported-version`,
//!    `bad-manifest`), its critical extensions understood (`unknown-critical`).
//!
//! `verify`, in this order (SPEC quotes it):
//! 1. the manifest's `sender.key_id` is a trusted key (`unknown-signer`);
//! 2. `manifest.sig` is present (`missing-signature`), well-formed and a valid
//!    signature by that key over the exact stored `manifest.toml` bytes (`bad-signature`);
//! 3. every manifest entry is in the zip (`missing-entry`) and every zip entry other
//!    than `manifest.toml` and `manifest.sig` is in the manifest (`unlisted-entry`);
//! 4. each entry's declared uncompressed size equals the manifest's (`size-mismatch`)
//!    and its compression method too (`method-mismatch`);
//! 5. every kind in `kinds` is allowed for the key, if the key is restricted (`kind-not-allowed`);
//! 6. the key's site is the manifest's `sender.site` (`sender-mismatch`).
//!
//! Reading an entry then stops with `size-mismatch` as soon as more bytes come out
//! than the manifest says (the zip's declared sizes are never trusted alone), and
//! ends with `size-mismatch` or `hash-mismatch` if the bytes differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use zip::result::ZipError;
use zip::{CompressionMethod, System, ZipArchive};

use crate::error::BundleError;
use crate::keys::TrustedKey;
use crate::keys::TrustedKeys;
use crate::manifest::{Compression, MANIFEST_NAME, Manifest, SIGNATURE_NAME};
use crate::naming::entry_name_problem;

mod container;
mod stream;

use container::*;
pub use stream::EntryStream;

const CHUNK: usize = 64 * 1024;
/// `manifest.sig`: 128 lowercase hex digits and `\n`.
const SIG_FILE_LEN: u64 = 129;

/// Limits applied while opening a bundle (zip bomb and resource guards).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most entries in the zip, manifest and signature included.
    pub max_entries: usize,
    /// Most uncompressed bytes declared by all entries together.
    pub max_total_size: u64,
    /// Most uncompressed bytes declared by one entry.
    pub max_entry_size: u64,
    /// Highest uncompressed/compressed ratio of a deflate entry.
    pub max_ratio: u64,
    /// Largest `manifest.toml`.
    pub max_manifest_size: u64,
    /// Extensions this reader understands (a critical extension not listed here is refused).
    pub understood_extensions: BTreeSet<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_total_size: 64 << 30,
            max_entry_size: 16 << 30,
            max_ratio: 200,
            max_manifest_size: 4 << 20,
            understood_extensions: BTreeSet::new(),
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Unverified {}
    impl Sealed for super::Verified {}
}

/// The verification state of a [`Bundle`]: [`Unverified`] or [`Verified`].
pub trait BundleState: sealed::Sealed {
    /// What the state carries (the signer's trusted key once verified).
    #[doc(hidden)]
    type Signer: fmt::Debug;
}

/// State of a bundle that passed the structural checks only: its manifest may be
/// shown (clearly marked unverified) but no payload can be read.
#[derive(Debug)]
pub struct Unverified;

/// State of a bundle whose signature, signer and entry list were checked.
#[derive(Debug)]
pub struct Verified;

impl BundleState for Unverified {
    type Signer = ();
}

impl BundleState for Verified {
    type Signer = TrustedKey;
}

/// Reads through to `R`, remembering whether `R` itself failed, so that errors of
/// the disk (retry later) are told from errors of the bytes (quarantine).
struct Tracked<R> {
    inner: R,
    failed: Arc<AtomicBool>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r
            && e.kind() != io::ErrorKind::Interrupted
        {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<R: Seek> Seek for Tracked<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let r = self.inner.seek(pos);
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }
}

/// The signature file as found at open.
#[derive(Debug, Clone)]
enum SigFile {
    Missing,
    Malformed,
    Present([u8; 64]),
}

/// A bundle read from `R`; `S` says whether it was verified.
pub struct Bundle<S: BundleState, R: Read + Seek> {
    label: String,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    signature: SigFile,
    zip: ZipArchive<Tracked<R>>,
    /// Zip entry name -> index in the central directory.
    index: BTreeMap<String, usize>,
    io_failed: Arc<AtomicBool>,
    signer: S::Signer,
    _state: PhantomData<S>,
}

impl<S: BundleState, R: Read + Seek> fmt::Debug for Bundle<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("label", &self.label)
            .field("bundle_id", &self.manifest.bundle_id)
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// The parts shared by both states: how a zip error becomes a bundle error.
fn classify(label: &str, entry: Option<&str>, failed: &AtomicBool, e: ZipError) -> BundleError {
    if failed.swap(false, Ordering::Relaxed) {
        let source = match e {
            ZipError::Io(io) => io,
            other => io::Error::other(other.to_string()),
        };
        return BundleError::Io {
            bundle: label.to_owned(),
            entry: entry.map(str::to_owned),
            source,
        };
    }
    match (e, entry) {
        (ZipError::CompressionMethodNotSupported(m), Some(entry)) => {
            BundleError::UnsupportedMethod {
                bundle: label.to_owned(),
                entry: entry.to_owned(),
                method: format!("{m}"),
            }
        }
        (e, Some(entry)) => BundleError::CorruptEntry {
            bundle: label.to_owned(),
            entry: entry.to_owned(),
            detail: e.to_string(),
        },
        (e, None) => BundleError::NotAZip {
            bundle: label.to_owned(),
            detail: e.to_string(),
        },
    }
}

/// An error while reading an entry's bytes: the disk's, or the data's.
fn read_error(label: &str, entry: &str, failed: &AtomicBool, e: io::Error) -> BundleError {
    if failed.swap(false, Ordering::Relaxed) {
        BundleError::Io {
            bundle: label.to_owned(),
            entry: Some(entry.to_owned()),
            source: e,
        }
    } else {
        BundleError::CorruptEntry {
            bundle: label.to_owned(),
            entry: entry.to_owned(),
            detail: e.to_string(),
        }
    }
}

impl<R: Read + Seek> Bundle<Unverified, R> {
    /// Opens a bundle and runs the structural checks (see the module documentation).
    /// Reads only `manifest.toml` and `manifest.sig`; `label` names the bundle in errors.
    pub fn open(reader: R, label: &str, limits: &Limits) -> Result<Self, BundleError> {
        let failed = Arc::new(AtomicBool::new(false));
        let mut tracked = Tracked {
            inner: reader,
            failed: failed.clone(),
        };
        let tail = Opener {
            label,
            r: &mut tracked,
        }
        .check_tail()?;
        if tail.entries > limits.max_entries as u64 {
            return Err(BundleError::TooManyEntries {
                bundle: label.to_owned(),
                count: usize::try_from(tail.entries).unwrap_or(usize::MAX),
                limit: limits.max_entries,
            });
        }
        let mut zip = ZipArchive::new(tracked).map_err(|e| classify(label, None, &failed, e))?;
        if zip.offset() != 0 {
            return Err(BundleError::PrependedData {
                bundle: label.to_owned(),
                offset: zip.offset(),
            });
        }
        if zip.len() > limits.max_entries {
            return Err(BundleError::TooManyEntries {
                bundle: label.to_owned(),
                count: zip.len(),
                limit: limits.max_entries,
            });
        }
        if zip.has_duplicate_names() {
            // The zip reader keeps one of each name; say which one repeats.
            let mut seen = BTreeSet::new();
            let dup = zip
                .file_names_raw()
                .find(|n| !seen.insert(n.to_vec()))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default();
            return Err(BundleError::DuplicateName {
                bundle: label.to_owned(),
                entry: dup.clone(),
                other: dup,
            });
        }
        let index = check_entries(&zip, label, limits)?;
        // Local headers must agree with the central directory, so that tools that
        // read either see the same archive.
        zip.validate_header_consistency().map_err(|e| {
            if failed.swap(false, Ordering::Relaxed) {
                classify(label, None, &AtomicBool::new(true), e)
            } else {
                BundleError::NotAZip {
                    bundle: label.to_owned(),
                    detail: format!("local headers disagree with the central directory: {e}"),
                }
            }
        })?;

        let Some(&mi) = index.get(MANIFEST_NAME) else {
            return Err(BundleError::MissingManifest {
                bundle: label.to_owned(),
            });
        };
        let manifest_bytes = read_small(
            &mut zip,
            mi,
            MANIFEST_NAME,
            limits.max_manifest_size,
            label,
            &failed,
        )?;
        let signature = match index.get(SIGNATURE_NAME) {
            None => SigFile::Missing,
            Some(&si) => {
                match read_small(&mut zip, si, SIGNATURE_NAME, SIG_FILE_LEN, label, &failed) {
                    Ok(bytes) => parse_sig(&bytes),
                    Err(e) if e.kind() == crate::ErrorKind::ManifestTooLarge => SigFile::Malformed,
                    Err(e) => return Err(e),
                }
            }
        };
        let manifest = Manifest::from_toml(&manifest_bytes).map_err(|e| e.relabel(label))?;
        manifest
            .check_critical(&limits.understood_extensions)
            .map_err(|e| e.relabel(label))?;
        Ok(Bundle {
            label: label.to_owned(),
            manifest,
            manifest_bytes,
            signature,
            zip,
            index,
            io_failed: failed,
            signer: (),
            _state: PhantomData,
        })
    }

    /// The manifest, NOT verified: anyone could have written it. For display only.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Checks trust (see the module documentation for the order) and returns the
    /// verified bundle.
    pub fn verify(self, trust: &TrustedKeys) -> Result<Bundle<Verified, R>, BundleError> {
        let label = self.label.as_str();
        let m = &self.manifest;
        // 1. a trusted signer
        let Some(key) = trust.get(&m.sender.key_id) else {
            return Err(BundleError::UnknownSigner {
                bundle: label.to_owned(),
                key_id: m.sender.key_id.clone(),
                site: m.sender.site.clone(),
            });
        };
        // 2. its signature over the exact stored manifest bytes
        match &self.signature {
            SigFile::Missing => {
                return Err(BundleError::MissingSignature {
                    bundle: label.to_owned(),
                });
            }
            SigFile::Malformed => {
                return Err(BundleError::BadSignature {
                    bundle: label.to_owned(),
                    detail: "manifest.sig is not 128 lowercase hex digits and a newline",
                });
            }
            SigFile::Present(sig) => {
                if !key.public.verify(&self.manifest_bytes, sig) {
                    return Err(BundleError::BadSignature {
                        bundle: label.to_owned(),
                        detail: "the signature does not match manifest.toml (edited after signing, or signed by another key)",
                    });
                }
            }
        }
        // 3. the manifest and the zip list the same entries
        for e in &m.entries {
            if !self.index.contains_key(&e.name) {
                return Err(BundleError::MissingEntry {
                    bundle: label.to_owned(),
                    entry: e.name.clone(),
                });
            }
        }
        for name in self.index.keys() {
            if name != MANIFEST_NAME && name != SIGNATURE_NAME && m.entry(name).is_none() {
                return Err(BundleError::UnlistedEntry {
                    bundle: label.to_owned(),
                    entry: name.clone(),
                });
            }
        }
        // 4. declared sizes and methods agree with the manifest
        for e in &m.entries {
            let Some(&i) = self.index.get(&e.name) else {
                continue; // checked in step 3
            };
            let z = self
                .zip
                .by_index_data(i)
                .map_err(|err| classify(label, Some(&e.name), &self.io_failed, err))?;
            if z.size() != e.size {
                return Err(BundleError::SizeMismatch {
                    bundle: label.to_owned(),
                    entry: e.name.clone(),
                    expected: e.size,
                    actual: z.size(),
                });
            }
            if compression_of(z.compression()) != Some(e.compression) {
                return Err(BundleError::MethodMismatch {
                    bundle: label.to_owned(),
                    entry: e.name.clone(),
                    expected: e.compression,
                    actual: method_name(z.compression()),
                });
            }
        }
        // 5. the key may send every kind carried
        if let Some(kind) = m.kinds.iter().find(|k| !key.allows_kind(k)) {
            return Err(BundleError::KindNotAllowed {
                bundle: label.to_owned(),
                kind: kind.clone(),
                key_id: m.sender.key_id.clone(),
            });
        }
        // 6. a key signs only for its own site
        if key.site != m.sender.site {
            return Err(BundleError::SenderMismatch {
                bundle: label.to_owned(),
                claimed: m.sender.site.clone(),
                key_site: key.site.clone(),
                key_id: m.sender.key_id.clone(),
            });
        }
        let signer = key.clone();
        Ok(Bundle {
            label: self.label,
            manifest: self.manifest,
            manifest_bytes: self.manifest_bytes,
            signature: self.signature,
            zip: self.zip,
            index: self.index,
            io_failed: self.io_failed,
            signer,
            _state: PhantomData,
        })
    }
}

impl<S: BundleState, R: Read + Seek> Bundle<S, R> {
    /// The label given at open (usually the file name).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The exact `manifest.toml` bytes as stored (what the signature covers).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Every entry name in the zip, sorted (manifest and signature included).
    pub fn zip_entry_names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Gives the underlying reader back.
    pub fn into_inner(self) -> R {
        self.zip.into_inner().inner
    }
}

impl<R: Read + Seek> Bundle<Verified, R> {
    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The trusted key that signed the bundle.
    pub fn signer(&self) -> &TrustedKey {
        &self.signer
    }

    /// Streams entry `name` into `out` while hashing it; returns the byte count.
    ///
    /// Stops with `size-mismatch` as soon as more bytes than the manifest's size come
    /// out. On any error `out` holds garbage: write to a temporary file and delete it.
    pub fn copy_entry<W: Write>(&mut self, name: &str, out: &mut W) -> Result<u64, BundleError> {
        let label = self.label.clone();
        let mut entry = self.stream_entry(name)?;
        let mut buf = vec![0u8; CHUNK];
        // A read that fails (the bomb guard among them) is kept by the stream and is what
        // `finish` reports.
        while let Ok(n) = entry.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            out.write_all(chunk).map_err(|e| BundleError::Io {
                bundle: label.clone(),
                entry: Some(name.to_owned()),
                source: e,
            })?;
        }
        entry.finish()
    }

    /// Opens entry `name` for reading as it streams, for payloads too large to check before
    /// they are used: the bytes read are **unchecked** until [`EntryStream::finish`] returns
    /// `Ok`. A caller applies them only where it can take everything back (inside a database
    /// transaction it commits after `finish`, SPEC 1.7), and on any failure of its own asks
    /// `finish` first, so that a corrupt entry is reported as corrupt.
    pub fn stream_entry(&mut self, name: &str) -> Result<EntryStream<'_, R>, BundleError> {
        let label = self.label.as_str();
        let Some(meta) = self.manifest.entry(name) else {
            return Err(BundleError::NoSuchEntry {
                bundle: label.to_owned(),
                entry: name.to_owned(),
            });
        };
        let Some(&i) = self.index.get(name) else {
            return Err(BundleError::MissingEntry {
                bundle: label.to_owned(),
                entry: name.to_owned(),
            });
        };
        let failed = &self.io_failed;
        failed.store(false, Ordering::Relaxed);
        let file = self
            .zip
            .by_index(i)
            .map_err(|e| classify(label, Some(name), failed, e))?;
        Ok(EntryStream {
            file,
            label,
            name: name.to_owned(),
            size: meta.size,
            sha256: meta.sha256.clone(),
            failed,
            hasher: Sha256::new(),
            total: 0,
            error: None,
        })
    }

    /// Reads entry `name` into memory, refusing it (`too-large`) if the manifest
    /// says it is larger than `max`; hash-checked before it is returned.
    pub fn read_entry(&mut self, name: &str, max: u64) -> Result<Vec<u8>, BundleError> {
        let Some(meta) = self.manifest.entry(name) else {
            return Err(BundleError::NoSuchEntry {
                bundle: self.label.clone(),
                entry: name.to_owned(),
            });
        };
        if meta.size > max {
            return Err(BundleError::TooLarge {
                bundle: self.label.clone(),
                entry: Some(name.to_owned()),
                size: meta.size,
                limit: max,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        self.copy_entry(name, &mut out)?;
        Ok(out)
    }

    /// Hash-checks every entry by streaming it to nowhere (`berth bundle verify`).
    pub fn check_all_entries(&mut self) -> Result<(), BundleError> {
        let names: Vec<String> = self
            .manifest
            .entries
            .iter()
            .map(|e| e.name.clone())
            .collect();
        for name in names {
            self.copy_entry(&name, &mut io::sink())?;
        }
        Ok(())
    }
}

fn parse_sig(bytes: &[u8]) -> SigFile {
    let Some(hex_part) = bytes.strip_suffix(b"\n") else {
        return SigFile::Malformed;
    };
    if hex_part.len() != 128
        || !hex_part
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return SigFile::Malformed;
    }
    let mut sig = [0u8; 64];
    match hex::decode_to_slice(hex_part, &mut sig) {
        Ok(()) => SigFile::Present(sig),
        Err(_) => SigFile::Malformed,
    }
}

/// Reads a small entry (manifest or signature), at most `max` bytes whatever the zip declares.
fn read_small<R: Read + Seek>(
    zip: &mut ZipArchive<Tracked<R>>,
    i: usize,
    name: &str,
    max: u64,
    label: &str,
    failed: &AtomicBool,
) -> Result<Vec<u8>, BundleError> {
    let too_large = |size| BundleError::ManifestTooLarge {
        bundle: label.to_owned(),
        entry: name.to_owned(),
        size,
        limit: max,
    };
    let mut file = zip
        .by_index(i)
        .map_err(|e| classify(label, Some(name), failed, e))?;
    if file.size() > max {
        return Err(too_large(file.size()));
    }
    let mut buf = Vec::new();
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| read_error(label, name, failed, e))?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64));
    }
    Ok(buf)
}

/// Per-entry structural checks from the central directory; nothing is decompressed.
fn check_entries<R: Read + Seek>(
    zip: &ZipArchive<Tracked<R>>,
    label: &str,
    limits: &Limits,
) -> Result<BTreeMap<String, usize>, BundleError> {
    let mut index = BTreeMap::new();
    let mut folded: BTreeMap<String, String> = BTreeMap::new();
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let z = zip.by_index_data(i).map_err(|e| BundleError::NotAZip {
            bundle: label.to_owned(),
            detail: e.to_string(),
        })?;
        let raw = z.name_raw();
        let lossy = String::from_utf8_lossy(raw).into_owned();
        let unsafe_name = |reason| BundleError::UnsafeName {
            bundle: label.to_owned(),
            entry: lossy.clone(),
            reason,
        };
        let special = |what| BundleError::SpecialEntry {
            bundle: label.to_owned(),
            entry: lossy.clone(),
            what,
        };
        let Ok(name) = std::str::from_utf8(raw) else {
            return Err(unsafe_name("not UTF-8"));
        };
        if name.ends_with('/') || name.ends_with('\\') {
            return Err(special("directory"));
        }
        if let Some(reason) = entry_name_problem(name) {
            return Err(unsafe_name(reason));
        }
        if let Some(other) = folded.insert(name.to_lowercase(), name.to_owned()) {
            return Err(BundleError::DuplicateName {
                bundle: label.to_owned(),
                entry: name.to_owned(),
                other,
            });
        }
        let attrs = z.external_attributes();
        match z.system() {
            System::Unix => match (attrs >> 16) & 0o170_000 {
                0 | 0o100_000 => {}
                0o040_000 => return Err(special("directory")),
                0o120_000 => return Err(special("symbolic link")),
                _ => return Err(special("device, pipe or socket")),
            },
            _ => {
                if attrs & 0x10 != 0 {
                    return Err(special("directory"));
                }
            }
        }
        if z.encrypted() {
            return Err(BundleError::Encrypted {
                bundle: label.to_owned(),
                entry: name.to_owned(),
            });
        }
        let Some(compression) = compression_of(z.compression()) else {
            return Err(BundleError::UnsupportedMethod {
                bundle: label.to_owned(),
                entry: name.to_owned(),
                method: method_name(z.compression()),
            });
        };
        let size = z.size();
        if size > limits.max_entry_size {
            return Err(BundleError::TooLarge {
                bundle: label.to_owned(),
                entry: Some(name.to_owned()),
                size,
                limit: limits.max_entry_size,
            });
        }
        total = total.saturating_add(size);
        if total > limits.max_total_size {
            return Err(BundleError::TooLarge {
                bundle: label.to_owned(),
                entry: None,
                size: total,
                limit: limits.max_total_size,
            });
        }
        let compressed = z.compressed_size();
        if compression == Compression::Deflate
            && size > 0
            && size > compressed.saturating_mul(limits.max_ratio)
        {
            return Err(BundleError::RatioTooHigh {
                bundle: label.to_owned(),
                entry: name.to_owned(),
                size,
                compressed,
                limit: limits.max_ratio,
            });
        }
        index.insert(name.to_owned(), i);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_file_shape() {
        let good = format!("{}\n", "ab".repeat(64));
        assert!(matches!(parse_sig(good.as_bytes()), SigFile::Present(_)));
        for bad in [
            "ab".repeat(64),
            format!("{}\r\n", "ab".repeat(64)),
            format!("{}\n", "AB".repeat(64)),
            format!("{}\n", "ab".repeat(63)),
            format!("{}\n\n", "ab".repeat(64)),
            String::new(),
        ] {
            assert!(
                matches!(parse_sig(bad.as_bytes()), SigFile::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn not_a_zip() {
        for bytes in [
            &b""[..],
            b"hello",
            b"this is definitely not a zip archive, just text",
            b"PK\x03\x04 truncated right here",
        ] {
            let e = Bundle::open(io::Cursor::new(bytes), "x", &Limits::default()).unwrap_err();
            assert!(
                matches!(
                    e.kind(),
                    crate::ErrorKind::NotAZip | crate::ErrorKind::Truncated
                ),
                "{e}"
            );
        }
    }
}
