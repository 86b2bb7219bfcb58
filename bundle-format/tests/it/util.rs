//! Helpers: a standard bundle, trust lists, and hand-built (hostile) zips.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use berth_bundle::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use berth_bundle::*;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

pub const BUNDLE_ID: &str = "0123456789abcdef0123456789abcdef";

pub fn key() -> SecretKey {
    SecretKey::from_seed(&[42; 32])
}

pub fn header(key: &SecretKey) -> BundleHeader {
    BundleHeader {
        sender: Party {
            site: "hq".into(),
            key_id: key.public().key_id(),
        },
        recipients: vec!["alice".into()],
        created: 1_700_000_000,
        bundle_id: Some(BUNDLE_ID.into()),
        stream: Some(StreamPosition {
            seq: 3,
            log_from: 100,
            log_to: 250,
            requires: 99,
            acks: 7,
        }),
        schema_checksum: Some("sha256:feed".into()),
        software_level: Some("1.2.0".into()),
        critical: vec![],
        extensions: BTreeMap::new(),
    }
}

pub fn trust_for(key: &SecretKey, site: &str) -> TrustedKeys {
    let mut t = TrustedKeys::new();
    t.add(TrustedKey {
        public: key.public(),
        site: site.into(),
        kinds: None,
    });
    t
}

pub fn text(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(
            format!(
                "{{\"op\":\"update\",\"table\":\"orders\",\"id\":{i},\"qty\":{}}}\n",
                i % 17
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(n);
    out
}

/// A valid bundle: a deflate entry, a stored entry and an empty entry.
pub fn standard_bundle() -> (Vec<u8>, Manifest) {
    let key = key();
    let mut w = BundleWriter::new(Cursor::new(Vec::new()), header(&key)).unwrap();
    w.add_bytes(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        &text(100_000),
    )
    .unwrap();
    w.add_bytes("payload/empty", "changes", Compression::Stored, b"")
        .unwrap();
    w.add_bytes(
        "payload/report.txt",
        "report",
        Compression::Stored,
        b"all good\n",
    )
    .unwrap();
    let (out, m) = w.finish(&key).unwrap();
    (out.into_inner(), m)
}

pub fn open(bytes: &[u8]) -> Result<Bundle<Unverified, Cursor<Vec<u8>>>, BundleError> {
    Bundle::open(
        Cursor::new(bytes.to_vec()),
        "test.berth.zip",
        &Limits::default(),
    )
}

pub fn open_kind(bytes: &[u8]) -> ErrorKind {
    open_kind_with(bytes, &Limits::default())
}

pub fn open_kind_with(bytes: &[u8], limits: &Limits) -> ErrorKind {
    match Bundle::open(Cursor::new(bytes.to_vec()), "test.berth.zip", limits) {
        Ok(_) => panic!("opened a bundle that should have been refused"),
        Err(e) => {
            assert_eq!(e.bundle(), Some("test.berth.zip"), "{e}");
            e.kind()
        }
    }
}

pub fn verify_kind(bytes: &[u8], trust: &TrustedKeys) -> ErrorKind {
    match open(bytes).unwrap().verify(trust) {
        Ok(_) => panic!("verified a bundle that should have been refused"),
        Err(e) => e.kind(),
    }
}

/// Manifest text and signature file for `m`, signed by `key`.
pub fn sign(m: &Manifest, key: &SecretKey) -> (Vec<u8>, Vec<u8>) {
    let text = m.to_toml().unwrap().into_bytes();
    let sig = format!("{}\n", hex::encode(key.sign(&text))).into_bytes();
    (text, sig)
}

pub fn opts(method: CompressionMethod) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(method)
        .last_modified_time(DateTime::DEFAULT)
        .unix_permissions(0o644)
}

/// A zip built by hand: `(name, bytes, method)` in the given order.
pub fn build_zip(entries: &[(&str, &[u8], CompressionMethod)]) -> Vec<u8> {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, method) in entries {
        z.start_file(*name, opts(*method)).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// A signed bundle built by hand from a manifest and the zip entries to put in it.
pub fn build_bundle(
    m: &Manifest,
    payload: &[(&str, &[u8], CompressionMethod)],
    key: &SecretKey,
) -> Vec<u8> {
    let (text, sig) = sign(m, key);
    let mut all: Vec<(&str, &[u8], CompressionMethod)> = payload.to_vec();
    all.push((MANIFEST_NAME, &text, CompressionMethod::Stored));
    all.push((SIGNATURE_NAME, &sig, CompressionMethod::Stored));
    build_zip(&all)
}

/// Rebuilds `bytes` with the entry `name` replaced by `data` (stored), others copied raw.
pub fn replace_entry(bytes: &[u8], name: &str, data: Option<&[u8]>) -> Vec<u8> {
    let mut src = ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..src.len() {
        let f = src.by_index_raw(i).unwrap();
        if f.name().unwrap() == name {
            drop(f);
            if let Some(data) = data {
                z.start_file(name, opts(CompressionMethod::Stored)).unwrap();
                z.write_all(data).unwrap();
            }
        } else {
            z.raw_copy_file(f).unwrap();
        }
    }
    z.finish().unwrap().into_inner()
}

pub fn read_entry(bytes: &[u8], name: &str) -> Vec<u8> {
    let mut src = ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let mut out = Vec::new();
    src.by_name(name).unwrap().read_to_end(&mut out).unwrap();
    out
}

/// Offsets of `name`'s local header and central directory header.
pub fn header_offsets(bytes: &[u8], name: &str) -> (usize, usize) {
    let src = ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let i = src.index_for_name(name).unwrap();
    let e = src.by_index_data(i).unwrap();
    (e.header_start() as usize, e.central_header_start() as usize)
}

/// Writes `v` little-endian at `at`.
pub fn put(bytes: &mut [u8], at: usize, v: &[u8]) {
    bytes[at..at + v.len()].copy_from_slice(v);
}
