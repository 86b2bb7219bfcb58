//! Writes the test vectors of `bundle-format/tests/vectors/` (see the README there).
//!
//! ```text
//! cargo run -p berth-bundle --example make_vectors -- bundle-format/tests/vectors
//! ```
//!
//! Deterministic: a fixed signing seed, fixed bundle id and time, the writer's fixed
//! zip profile, and byte patches at fixed offsets. Running it again reproduces the
//! committed files byte for byte (`tests/it/vectors.rs` checks that).
//!
//! Every hostile vector starts from a correct, signed bundle and breaks exactly one
//! thing, so that the expected kind is the only failure it can have.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::Path;

use berth_bundle::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use berth_bundle::*;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipArchive, ZipWriter};

/// Seed of the key that signs the vectors; `trusted.pub` is its public key,
/// trusted for site [`TRUSTED_SITE`]. A test key: never use it for anything else.
pub const SIGNER_SEED: [u8; 32] = *b"berth test vectors: signer seed.";
/// Seed of a key nobody trusts (for `unknown-signer` and foreign signatures).
pub const STRANGER_SEED: [u8; 32] = *b"berth test vectors: stranger....";
/// The site the signer's key is trusted for.
pub const TRUSTED_SITE: &str = "hq";
/// Extension of vector files.
pub const VECTOR_EXT: &str = "vector";
/// The first line of every vector.
pub const MAGIC: &str = "berth-vector v1";

const BUNDLE_ID: &str = "b0000000000000000000000000000001";
const CREATED: u64 = 1_700_000_000;

/// One vector: what it is and its raw bundle bytes.
#[derive(Debug)]
pub struct Vector {
    /// File stem.
    pub name: &'static str,
    /// `ok` or an error kind's kebab-case name.
    pub expect: &'static str,
    /// One line saying what is wrong (or right) with the bytes.
    pub description: &'static str,
    /// The bundle.
    pub bytes: Vec<u8>,
}

impl Vector {
    /// The file: header lines, `---`, then the raw bundle bytes.
    pub fn file_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{MAGIC}\nexpect: {}\ndescription: {}\n---\n",
            self.expect, self.description
        )
        .into_bytes();
        out.extend_from_slice(&self.bytes);
        out
    }
}

pub fn signer() -> SecretKey {
    SecretKey::from_seed(&SIGNER_SEED)
}

fn stranger() -> SecretKey {
    SecretKey::from_seed(&STRANGER_SEED)
}

// --- building blocks ---------------------------------------------------------

fn header(key: &SecretKey) -> BundleHeader {
    BundleHeader {
        sender: Party {
            site: TRUSTED_SITE.into(),
            key_id: key.public().key_id(),
        },
        recipients: vec!["alice".into()],
        created: CREATED,
        bundle_id: Some(BUNDLE_ID.into()),
        stream: Some(StreamPosition {
            seq: 7,
            log_from: 101,
            log_to: 120,
            requires: 100,
            acks: 42,
        }),
        schema_checksum: Some("sha256:5e1f0c2a".into()),
        software_level: Some("1.0.0".into()),
        critical: vec![],
        extensions: BTreeMap::new(),
    }
}

/// Text-like payload: `n` lines of change log.
fn changes(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"op\":\"update\",\"table\":\"orders\",\"id\":{i},\"qty\":{}}}\n",
                i % 7
            )
        })
        .collect::<String>()
        .into_bytes()
}

/// A bundle made by the real writer.
fn written(
    h: BundleHeader,
    entries: &[(&str, &str, Compression, &[u8])],
    extra_kinds: &[&str],
) -> Vec<u8> {
    let key = signer();
    let mut w = BundleWriter::new(Cursor::new(Vec::new()), h).unwrap();
    for k in extra_kinds {
        w.declare_kind(k).unwrap();
    }
    for (name, kind, c, data) in entries {
        w.add_bytes(name, kind, *c, data).unwrap();
    }
    w.finish(&key).unwrap().0.into_inner()
}

/// The zip options of the writer's profile.
fn opts(method: CompressionMethod) -> SimpleFileOptions {
    let o = SimpleFileOptions::default()
        .system(System::Unix)
        .last_modified_time(DateTime::DEFAULT)
        .unix_permissions(0o644)
        .large_file(false)
        .compression_method(method);
    if method == CompressionMethod::Deflated {
        o.compression_level(Some(6))
    } else {
        o.compression_level(None)
    }
}

/// A manifest (header fields as in [`header`]) listing `entries` as they are.
fn manifest_for(entries: &[(&str, &str, Compression, &[u8])]) -> Manifest {
    let key = signer();
    let h = header(&key);
    let mut kinds: Vec<String> = entries.iter().map(|e| e.1.to_owned()).collect();
    kinds.sort();
    kinds.dedup();
    Manifest {
        format: FORMAT_VERSION,
        bundle_id: BUNDLE_ID.into(),
        created: CREATED,
        sender: h.sender,
        recipients: h.recipients,
        kinds,
        stream: h.stream,
        schema_checksum: h.schema_checksum,
        software_level: h.software_level,
        entries: entries
            .iter()
            .map(|(name, kind, c, data)| EntryMeta {
                name: (*name).into(),
                kind: (*kind).into(),
                size: data.len() as u64,
                sha256: hex::encode(Sha256::digest(data)),
                compression: *c,
            })
            .collect(),
        critical: vec![],
        extensions: BTreeMap::new(),
    }
}

fn sig_file(text: &[u8], key: &SecretKey) -> Vec<u8> {
    format!("{}\n", hex::encode(key.sign(text))).into_bytes()
}

/// A zip built by hand: `(name, method, bytes)` in this order.
fn zip_of(entries: &[(&str, CompressionMethod, &[u8])]) -> Vec<u8> {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, m, data) in entries {
        z.start_file(*name, opts(*m)).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A bundle built by hand: `payload` entries (as zipped, whatever the manifest says),
/// then `manifest_text` and `sig`, both stored, as the writer lays them out.
fn assemble(
    payload: &[(&str, CompressionMethod, &[u8])],
    manifest_text: &[u8],
    sig: Option<&[u8]>,
) -> Vec<u8> {
    let mut all = payload.to_vec();
    all.push((MANIFEST_NAME, CompressionMethod::Stored, manifest_text));
    if let Some(sig) = sig {
        all.push((SIGNATURE_NAME, CompressionMethod::Stored, sig));
    }
    zip_of(&all)
}

/// A correctly signed hand-built bundle whose manifest is `m`.
fn signed(m: &Manifest, payload: &[(&str, CompressionMethod, &[u8])]) -> Vec<u8> {
    let text = m.to_toml().unwrap().into_bytes();
    assemble(payload, &text, Some(&sig_file(&text, &signer())))
}

/// A correctly signed hand-built bundle whose manifest text is `text` exactly.
fn signed_text(text: &str, payload: &[(&str, CompressionMethod, &[u8])]) -> Vec<u8> {
    assemble(
        payload,
        text.as_bytes(),
        Some(&sig_file(text.as_bytes(), &signer())),
    )
}

const REPORT: &[u8] = b"all good\n";

/// The base of most hostile vectors: one stored report entry, listed and signed.
fn base_entries() -> [(&'static str, &'static str, Compression, &'static [u8]); 1] {
    [("payload/report.txt", "report", Compression::Stored, REPORT)]
}

fn base_manifest() -> Manifest {
    manifest_for(&base_entries())
}

fn base_text() -> String {
    base_manifest().to_toml().unwrap()
}

/// The base bundle with `extra` zip entries placed before the manifest.
fn base_with(extra: &[(&str, CompressionMethod, &[u8])]) -> Vec<u8> {
    let mut payload = vec![("payload/report.txt", CompressionMethod::Stored, REPORT)];
    payload.extend_from_slice(extra);
    signed(&base_manifest(), &payload)
}

/// Offsets of `name`'s local header and central directory header.
fn offsets(bytes: &[u8], name: &str) -> (usize, usize) {
    let z = ZipArchive::new(Cursor::new(bytes)).unwrap();
    let i = z.index_for_name(name).unwrap();
    let e = z.by_index_data(i).unwrap();
    (e.header_start() as usize, e.central_header_start() as usize)
}

fn put(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}

// Field offsets in the local header (L_) and central directory header (C_).
const L_FLAGS: usize = 6;
const L_METHOD: usize = 8;
const L_CRC: usize = 14;
const L_USIZE: usize = 22;
const L_NAME: usize = 30;
const C_FLAGS: usize = 8;
const C_METHOD: usize = 10;
const C_CRC: usize = 16;
const C_USIZE: usize = 24;
const C_ATTRS: usize = 38;
const C_NAME: usize = 46;

/// Sets a field of entry `name` in both its local and central headers.
fn patch_both(bytes: &mut [u8], name: &str, local_at: usize, central_at: usize, v: &[u8]) {
    let (l, c) = offsets(bytes, name);
    put(bytes, l + local_at, v);
    put(bytes, c + central_at, v);
}

/// The base bundle plus one entry whose name is `raw` (any bytes): written under a
/// placeholder of the same length, then renamed in both headers (the zip writer
/// refuses some of these names).
fn base_with_raw_name(raw: &[u8]) -> Vec<u8> {
    let placeholder = format!("payload/{}", "z".repeat(raw.len() - "payload/".len()));
    let mut bytes = base_with(&[(&placeholder, CompressionMethod::Stored, b"x")]);
    patch_both(&mut bytes, &placeholder, L_NAME, C_NAME, raw);
    bytes
}

fn table(kv: &[(&str, toml::Value)]) -> toml::Value {
    toml::Value::Table(
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn eocd_at(bytes: &[u8]) -> usize {
    bytes.len() - 22
}

// --- the vectors -------------------------------------------------------------

pub fn vectors() -> Vec<Vector> {
    let mut v = Vec::new();
    let mut add = |name, expect, description, bytes| {
        v.push(Vector {
            name,
            expect,
            description,
            bytes,
        })
    };
    let key = signer();

    // valid ------------------------------------------------------------------
    let log = changes(40);
    add(
        "ok-one-entry",
        "ok",
        "one deflate entry, as the writer makes it",
        written(
            header(&key),
            &[(
                "payload/changes.jsonl",
                "changes",
                Compression::Deflate,
                &log,
            )],
            &[],
        ),
    );
    add(
        "ok-several-entries",
        "ok",
        "stored and deflate entries of three kinds, in subfolders",
        written(
            header(&key),
            &[
                (
                    "payload/changes.jsonl",
                    "changes",
                    Compression::Deflate,
                    &log,
                ),
                (
                    "payload/extract/orders.jsonl",
                    "extract",
                    Compression::Deflate,
                    &changes(10),
                ),
                (
                    "payload/extract/raw.bin",
                    "extract",
                    Compression::Stored,
                    &[0, 1, 2, 254, 255],
                ),
                ("payload/report.txt", "report", Compression::Stored, REPORT),
            ],
            &[],
        ),
    );
    add(
        "ok-empty-entries",
        "ok",
        "zero-byte entries, one stored and one deflate",
        written(
            header(&key),
            &[
                (
                    "payload/empty-deflate",
                    "changes",
                    Compression::Deflate,
                    b"",
                ),
                ("payload/empty-stored", "changes", Compression::Stored, b""),
            ],
            &[],
        ),
    );
    let mut ack_only = header(&key);
    ack_only.stream = Some(StreamPosition {
        seq: 8,
        log_from: 121,
        log_to: 120,
        requires: 120,
        acks: 43,
    });
    add(
        "ok-no-entries",
        "ok",
        "no payload at all: an acknowledgement only (kind ack, empty log range)",
        written(ack_only, &[], &["ack"]),
    );
    let mut broadcast = header(&key);
    broadcast.recipients = vec!["*".into()];
    broadcast.stream = None;
    add(
        "ok-broadcast",
        "ok",
        "addressed to every site (recipients = [\"*\"]), no stream position",
        written(
            broadcast,
            &[("payload/report.txt", "report", Compression::Stored, REPORT)],
            &[],
        ),
    );
    let mut ext = header(&key);
    ext.extensions.insert(
        "future-thing".into(),
        table(&[
            ("level", toml::Value::Integer(3)),
            ("note", "kept, not understood".into()),
        ]),
    );
    add(
        "ok-unknown-optional-extension",
        "ok",
        "an extension this reader does not know, not marked critical: kept and accepted",
        written(
            ext,
            &[("payload/report.txt", "report", Compression::Stored, REPORT)],
            &[],
        ),
    );

    // signature and trust -----------------------------------------------------
    let text = base_text();
    let payload = [("payload/report.txt", CompressionMethod::Stored, REPORT)];
    add(
        "bad-signature-other-key",
        "bad-signature",
        "manifest names the trusted key but is signed by another key",
        assemble(
            &payload,
            text.as_bytes(),
            Some(&sig_file(text.as_bytes(), &stranger())),
        ),
    );
    let mut sig = sig_file(text.as_bytes(), &key);
    sig[10] = if sig[10] == b'0' { b'1' } else { b'0' };
    add(
        "bad-signature-flipped",
        "bad-signature",
        "one hex digit of a valid signature changed",
        assemble(&payload, text.as_bytes(), Some(&sig)),
    );
    let sig = sig_file(text.as_bytes(), &key).to_ascii_uppercase();
    add(
        "bad-signature-malformed",
        "bad-signature",
        "valid signature written in uppercase hex (the signature file must be 128 lowercase hex digits and a newline)",
        assemble(&payload, text.as_bytes(), Some(&sig)),
    );
    let edited = text.replace(
        &format!("created = {CREATED}"),
        &format!("created = {}", CREATED + 1),
    );
    assert_ne!(edited, text);
    add(
        "bad-signature-manifest-edited",
        "bad-signature",
        "manifest edited after signing (created changed by one second)",
        assemble(
            &payload,
            edited.as_bytes(),
            Some(&sig_file(text.as_bytes(), &key)),
        ),
    );
    add(
        "bad-signature-manifest-comment",
        "bad-signature",
        "a TOML comment appended after signing: same meaning, different bytes",
        assemble(
            &payload,
            format!("{text}# harmless?\n").as_bytes(),
            Some(&sig_file(text.as_bytes(), &key)),
        ),
    );
    add(
        "missing-signature",
        "missing-signature",
        "no manifest.sig in the archive",
        assemble(&payload, text.as_bytes(), None),
    );
    let mut m = base_manifest();
    m.sender.key_id = stranger().public().key_id();
    let t = m.to_toml().unwrap();
    add(
        "unknown-signer",
        "unknown-signer",
        "correctly signed by a key that is not trusted",
        assemble(
            &payload,
            t.as_bytes(),
            Some(&sig_file(t.as_bytes(), &stranger())),
        ),
    );
    let mut m = base_manifest();
    m.sender.site = "other".into();
    add(
        "sender-mismatch",
        "sender-mismatch",
        "signed by the key trusted for site hq, claiming sender site other",
        signed(&m, &payload),
    );

    // manifest against zip ----------------------------------------------------
    add(
        "unlisted-entry",
        "unlisted-entry",
        "the zip holds payload/extra.txt, which the manifest does not list",
        base_with(&[("payload/extra.txt", CompressionMethod::Stored, b"extra\n")]),
    );
    let m = manifest_for(&[
        (
            "payload/missing.txt",
            "report",
            Compression::Stored,
            b"gone\n",
        ),
        ("payload/report.txt", "report", Compression::Stored, REPORT),
    ]);
    add(
        "missing-entry",
        "missing-entry",
        "the manifest lists payload/missing.txt, which the zip does not hold",
        signed(&m, &payload),
    );
    add(
        "size-mismatch",
        "size-mismatch",
        "the entry holds 8 bytes, the manifest says 9",
        signed(
            &base_manifest(),
            &[("payload/report.txt", CompressionMethod::Stored, b"all good")],
        ),
    );
    add(
        "hash-mismatch",
        "hash-mismatch",
        "the entry holds other bytes of the same size than the manifest's sha256 covers",
        signed(
            &base_manifest(),
            &[(
                "payload/report.txt",
                CompressionMethod::Stored,
                b"all bad!\n",
            )],
        ),
    );
    add(
        "method-mismatch",
        "method-mismatch",
        "the manifest says stored, the zip entry is deflate (same bytes)",
        signed(
            &base_manifest(),
            &[("payload/report.txt", CompressionMethod::Deflated, REPORT)],
        ),
    );
    let mut bytes = base_with(&[]);
    let (l, _) = offsets(&bytes, "payload/report.txt");
    let crc = u32::from_le_bytes(bytes[l + L_CRC..l + L_CRC + 4].try_into().unwrap());
    patch_both(
        &mut bytes,
        "payload/report.txt",
        L_CRC,
        C_CRC,
        &(crc ^ 1).to_le_bytes(),
    );
    add(
        "corrupt-entry-crc",
        "corrupt-entry",
        "the entry's bytes match the manifest but its zip CRC-32 (both headers) does not",
        bytes,
    );
    let data = changes(20);
    let m = manifest_for(&[(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        &data,
    )]);
    let mut bytes = signed(
        &m,
        &[("payload/changes.jsonl", CompressionMethod::Deflated, &data)],
    );
    let (l, _) = offsets(&bytes, "payload/changes.jsonl");
    let start = l + L_NAME + "payload/changes.jsonl".len();
    bytes[start] = 0xff; // BFINAL=1, BTYPE=11: a reserved block type
    add(
        "corrupt-entry-deflate",
        "corrupt-entry",
        "the deflate stream starts with a block of the reserved type 3",
        bytes,
    );
    let zeros = vec![0u8; 100_000];
    let mut m = manifest_for(&[(
        "payload/zeros.bin",
        "changes",
        Compression::Deflate,
        &zeros[..10],
    )]);
    m.entries[0].size = 10;
    let mut bytes = signed(
        &m,
        &[("payload/zeros.bin", CompressionMethod::Deflated, &zeros)],
    );
    patch_both(
        &mut bytes,
        "payload/zeros.bin",
        L_USIZE,
        C_USIZE,
        &10u32.to_le_bytes(),
    );
    add(
        "corrupt-entry-size-lie",
        "corrupt-entry",
        "manifest and zip both declare 10 bytes; the deflate stream holds 100000 (reading stops at the declared size)",
        bytes,
    );

    // container: names and entry types ------------------------------------------
    let mut bytes = base_with(&[("payload/Report.txt", CompressionMethod::Stored, REPORT)]);
    // rename it to exactly payload/report.txt: the zip writer refuses a repeated name
    patch_both(
        &mut bytes,
        "payload/Report.txt",
        L_NAME,
        C_NAME,
        b"payload/report.txt",
    );
    add(
        "duplicate-name-exact",
        "duplicate-name",
        "payload/report.txt appears twice in the zip",
        bytes,
    );
    add(
        "duplicate-name-case",
        "duplicate-name",
        "payload/report.txt and payload/REPORT.txt: the same name on a case-insensitive disk",
        base_with(&[("payload/REPORT.txt", CompressionMethod::Stored, REPORT)]),
    );
    for (name, raw, description) in [
        (
            "unsafe-name-absolute",
            &b"/etc/passwd"[..],
            "an entry named /etc/passwd (absolute path)",
        ),
        (
            "unsafe-name-dotdot",
            b"payload/../../evil.sh",
            "an entry named payload/../../evil.sh (`..` component)",
        ),
        (
            "unsafe-name-backslash",
            b"payload\\..\\evil.bat",
            "an entry named payload\\..\\evil.bat (backslash)",
        ),
        (
            "unsafe-name-drive-letter",
            b"C:/Windows/evil.dll",
            "an entry named C:/Windows/evil.dll (drive letter)",
        ),
        (
            "unsafe-name-nul",
            b"payload/evil\0.txt",
            "an entry name holding a NUL byte (payload/evil<NUL>.txt)",
        ),
        (
            "unsafe-name-con",
            b"payload/CON",
            "an entry named payload/CON (Windows reserved device name)",
        ),
        (
            "unsafe-name-aux-txt",
            b"payload/aux.txt",
            "an entry named payload/aux.txt (reserved device name with an extension)",
        ),
        (
            "unsafe-name-trailing-dot",
            b"payload/notes.",
            "an entry named payload/notes. (Windows drops the trailing dot)",
        ),
    ] {
        add(name, "unsafe-name", description, base_with_raw_name(raw));
    }
    let target = b"../../../etc/passwd";
    let m = manifest_for(&[
        ("payload/link", "report", Compression::Stored, target),
        ("payload/report.txt", "report", Compression::Stored, REPORT),
    ]);
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.add_symlink(
        "payload/link",
        "../../../etc/passwd",
        opts(CompressionMethod::Stored),
    )
    .unwrap();
    z.start_file("payload/report.txt", opts(CompressionMethod::Stored))
        .unwrap();
    z.write_all(REPORT).unwrap();
    let text = m.to_toml().unwrap();
    z.start_file(MANIFEST_NAME, opts(CompressionMethod::Stored))
        .unwrap();
    z.write_all(text.as_bytes()).unwrap();
    z.start_file(SIGNATURE_NAME, opts(CompressionMethod::Stored))
        .unwrap();
    z.write_all(&sig_file(text.as_bytes(), &key)).unwrap();
    add(
        "special-entry-symlink",
        "special-entry",
        "payload/link is a symbolic link to ../../../etc/passwd (listed, hash of its target text)",
        z.finish().unwrap().into_inner(),
    );
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.add_directory("payload/dir/", opts(CompressionMethod::Stored))
        .unwrap();
    let text = base_text();
    for (name, data) in [
        ("payload/report.txt", REPORT.to_vec()),
        (MANIFEST_NAME, text.clone().into_bytes()),
        (SIGNATURE_NAME, sig_file(text.as_bytes(), &key)),
    ] {
        z.start_file(name, opts(CompressionMethod::Stored)).unwrap();
        z.write_all(&data).unwrap();
    }
    add(
        "special-entry-directory",
        "special-entry",
        "a directory entry payload/dir/ (bundles hold files only)",
        z.finish().unwrap().into_inner(),
    );
    let mut bytes = base_with(&[]);
    let (_, c) = offsets(&bytes, "payload/report.txt");
    put(&mut bytes, c + C_ATTRS, &(0o010_644u32 << 16).to_le_bytes());
    add(
        "special-entry-fifo",
        "special-entry",
        "payload/report.txt has the unix mode of a named pipe (0o010644)",
        bytes,
    );
    let mut bytes = base_with(&[]);
    let (l, c) = offsets(&bytes, "payload/report.txt");
    put(&mut bytes, l + L_FLAGS, &1u16.to_le_bytes());
    put(&mut bytes, c + C_FLAGS, &1u16.to_le_bytes());
    add(
        "encrypted",
        "encrypted",
        "payload/report.txt has the encrypted flag set (both headers)",
        bytes,
    );
    let mut bytes = base_with(&[]);
    patch_both(
        &mut bytes,
        "payload/report.txt",
        L_METHOD,
        C_METHOD,
        &93u16.to_le_bytes(),
    );
    add(
        "unsupported-method",
        "unsupported-method",
        "payload/report.txt claims zstd (method 93), which unzip and zipfile cannot read",
        bytes,
    );

    // container: limits (zip bombs by declared sizes, under the default limits) ---
    let mut bytes = base_with(&[]);
    let e = eocd_at(&bytes);
    put(&mut bytes, e + 8, &10_001u16.to_le_bytes());
    put(&mut bytes, e + 10, &10_001u16.to_le_bytes());
    add(
        "too-many-entries",
        "too-many-entries",
        "the end record declares 10001 entries (default limit 10000)",
        bytes,
    );
    let mut bomb = Vec::new();
    let names: Vec<String> = (0..17).map(|i| format!("payload/part{i:02}.bin")).collect();
    for n in &names {
        bomb.push((n.as_str(), CompressionMethod::Stored, &b"x"[..]));
    }
    let mut bytes = base_with(&bomb);
    for n in &names {
        patch_both(
            &mut bytes,
            n,
            L_USIZE,
            C_USIZE,
            &0xFFFF_FFF0u32.to_le_bytes(),
        );
    }
    add(
        "too-large-total",
        "too-large",
        "17 stored entries of 1 byte each declare 4 GiB uncompressed: 68 GiB in all (default limit 64 GiB)",
        bytes,
    );
    // One entry over the per-entry limit needs zip64 sizes: written with a zip64
    // extra field (id, length, uncompressed u64, compressed u64), then patched.
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.start_file(
        "payload/huge.bin",
        opts(CompressionMethod::Stored).large_file(true),
    )
    .unwrap();
    z.write_all(b"x").unwrap();
    let text = base_text();
    for (name, data) in [
        ("payload/report.txt", REPORT.to_vec()),
        (MANIFEST_NAME, text.clone().into_bytes()),
        (SIGNATURE_NAME, sig_file(text.as_bytes(), &key)),
    ] {
        z.start_file(name, opts(CompressionMethod::Stored)).unwrap();
        z.write_all(&data).unwrap();
    }
    let mut bytes = z.finish().unwrap().into_inner();
    let name_len = "payload/huge.bin".len();
    let (l, c) = offsets(&bytes, "payload/huge.bin");
    let huge = (17u64 << 30).to_le_bytes();
    put(&mut bytes, l + L_NAME + name_len + 4, &huge);
    put(&mut bytes, c + C_NAME + name_len + 4, &huge);
    add(
        "too-large-entry",
        "too-large",
        "a 1-byte stored entry whose zip64 sizes declare 17 GiB uncompressed (default limit 16 GiB per entry)",
        bytes,
    );
    let mut bytes = base_with(&[("payload/bomb.bin", CompressionMethod::Deflated, b"x")]);
    patch_both(
        &mut bytes,
        "payload/bomb.bin",
        L_USIZE,
        C_USIZE,
        &0xFFFF_FFF0u32.to_le_bytes(),
    );
    add(
        "ratio-too-high",
        "ratio-too-high",
        "a 3-byte deflate entry declaring 4 GiB uncompressed (default ratio limit 200)",
        bytes,
    );

    // container: manifest -----------------------------------------------------
    add(
        "missing-manifest",
        "missing-manifest",
        "no manifest.toml (the payload and a signature only)",
        zip_of(&[
            ("payload/report.txt", CompressionMethod::Stored, REPORT),
            (
                SIGNATURE_NAME,
                CompressionMethod::Stored,
                &sig_file(base_text().as_bytes(), &key),
            ),
        ]),
    );
    let mut bytes = base_with(&[]);
    patch_both(
        &mut bytes,
        MANIFEST_NAME,
        L_USIZE,
        C_USIZE,
        &(5u32 << 20).to_le_bytes(),
    );
    add(
        "manifest-too-large",
        "manifest-too-large",
        "manifest.toml declares 5 MiB uncompressed (default limit 4 MiB)",
        bytes,
    );
    add(
        "bad-manifest-unknown-key",
        "bad-manifest",
        "signed manifest with an unknown top-level key (surprise = true)",
        signed_text(
            &base_text().replacen("format = 1\n", "format = 1\nsurprise = true\n", 1),
            &payload,
        ),
    );
    add(
        "bad-manifest-not-toml",
        "bad-manifest",
        "signed manifest that is not TOML",
        signed_text("format = 1\nthis is not toml [\n", &payload),
    );
    add(
        "bad-manifest-unsorted-entries",
        "bad-manifest",
        "signed manifest whose entries are not sorted by name",
        {
            let mut m = manifest_for(&[
                ("payload/a.txt", "report", Compression::Stored, b"a"),
                ("payload/b.txt", "report", Compression::Stored, b"b"),
            ]);
            m.entries.reverse();
            // to_toml validates; write the text by hand from the sorted form instead.
            let sorted = {
                let mut s = m.clone();
                s.entries.reverse();
                s.to_toml().unwrap()
            };
            let (head, tail) = sorted.split_at(sorted.find("[[entries]]").unwrap());
            let mut parts: Vec<&str> = tail.split_inclusive("\n\n").collect();
            parts.reverse();
            let text = format!("{head}{}", parts.concat());
            signed_text(
                &text,
                &[
                    ("payload/a.txt", CompressionMethod::Stored, b"a"),
                    ("payload/b.txt", CompressionMethod::Stored, b"b"),
                ],
            )
        },
    );
    add(
        "unsupported-version",
        "unsupported-version",
        "signed manifest of format 2, with a field format 1 does not know",
        signed_text(
            &format!(
                "{}\n[hologram]\nlayers = 3\n",
                base_text().replace("format = 1", "format = 2")
            ),
            &payload,
        ),
    );
    let mut m = base_manifest();
    m.critical = vec!["time-travel".into()];
    m.extensions.insert(
        "time-travel".into(),
        table(&[("apply_before", toml::Value::Integer(1))]),
    );
    add(
        "unknown-critical",
        "unknown-critical",
        "signed manifest marking extension time-travel critical; this reader does not know it",
        signed(&m, &payload),
    );

    // container: framing --------------------------------------------------------
    let good = base_with(&[]);
    add(
        "truncated-half",
        "truncated",
        "a valid bundle cut in half",
        good[..good.len() / 2].to_vec(),
    );
    add(
        "truncated-end-record",
        "truncated",
        "a valid bundle missing the last 10 bytes of its end record",
        good[..good.len() - 10].to_vec(),
    );
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"trailing garbage\n");
    add(
        "trailing-data",
        "trailing-data",
        "a valid bundle followed by 17 bytes of text",
        bytes,
    );
    let mut bytes = good.clone();
    let e = eocd_at(&bytes);
    put(&mut bytes, e + 20, &7u16.to_le_bytes());
    bytes.extend_from_slice(b"comment");
    add(
        "trailing-data-comment",
        "trailing-data",
        "a valid bundle with an archive comment",
        bytes,
    );
    let mut bytes = b"#!/bin/sh\necho surprise\nexit 0\n".to_vec();
    bytes.extend_from_slice(&good);
    add(
        "prepended-data",
        "prepended-data",
        "a shell script before a valid bundle (offsets not adjusted)",
        bytes,
    );
    add(
        "not-a-zip",
        "not-a-zip",
        "plain text",
        b"this is a text file, not a bundle\n".to_vec(),
    );
    add("not-a-zip-empty", "not-a-zip", "zero bytes", Vec::new());
    v
}

/// The public key text of the signer (`trusted.pub`).
pub fn trusted_pub() -> String {
    signer().public().to_text()
}

/// Writes every vector, `trusted.pub` and `TEST-ONLY-signer.key` into `dir`,
/// removing vector files that are no longer generated.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.extension().is_some_and(|e| e == VECTOR_EXT) {
            std::fs::remove_file(p)?;
        }
    }
    let all = vectors();
    for v in &all {
        std::fs::write(dir.join(format!("{}.{VECTOR_EXT}", v.name)), v.file_bytes())?;
    }
    std::fs::write(dir.join("trusted.pub"), trusted_pub())?;
    std::fs::write(dir.join("TEST-ONLY-signer.key"), signer().to_text())?;
    Ok(all.len())
}

#[allow(dead_code)] // included by tests/it/vectors.rs, where main is unused
fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "bundle-format/tests/vectors".to_owned());
    let n = write_all(Path::new(&dir)).unwrap();
    println!("wrote {n} vectors to {dir}");
}
