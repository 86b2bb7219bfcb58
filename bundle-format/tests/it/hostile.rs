//! Bundles edited or built by hand: each refused with its own kind.

use std::io::{self, Cursor, Write};

use berth_bundle::manifest::{MANIFEST_NAME, SIGNATURE_NAME};
use berth_bundle::*;
use sha2::{Digest, Sha256};
use zip::CompressionMethod::{Deflated, Stored};
use zip::ZipWriter;

use crate::util::*;

fn hq() -> TrustedKeys {
    trust_for(&key(), "hq")
}

// --- signature and manifest ---------------------------------------------------

#[test]
fn manifest_edited_after_signing() {
    let (bytes, _) = standard_bundle();
    let text = read_entry(&bytes, MANIFEST_NAME);
    let edited = String::from_utf8(text.clone())
        .unwrap()
        .replace("created = 1700000000", "created = 1700000001")
        .into_bytes();
    assert_ne!(edited, text);
    let bytes = replace_entry(&bytes, MANIFEST_NAME, Some(&edited));
    assert_eq!(verify_kind(&bytes, &hq()), ErrorKind::BadSignature);
}

#[test]
fn manifest_reserialized_is_not_the_signed_bytes() {
    // Same meaning, different bytes (a comment added): the signature covers bytes.
    let (bytes, _) = standard_bundle();
    let mut text = read_entry(&bytes, MANIFEST_NAME);
    text.extend_from_slice(b"# harmless?\n");
    let bytes = replace_entry(&bytes, MANIFEST_NAME, Some(&text));
    assert_eq!(verify_kind(&bytes, &hq()), ErrorKind::BadSignature);
}

#[test]
fn signature_missing_or_malformed() {
    let (bytes, _) = standard_bundle();
    let unsigned = replace_entry(&bytes, SIGNATURE_NAME, None);
    // an unsigned bundle still opens (for `inspect`), but never verifies
    assert_eq!(verify_kind(&unsigned, &hq()), ErrorKind::MissingSignature);
    for bad in [&b"not hex\n"[..], &[b'0'; 129][..], &[b'a'; 2000][..], b""] {
        let b = replace_entry(&bytes, SIGNATURE_NAME, Some(bad));
        assert_eq!(verify_kind(&b, &hq()), ErrorKind::BadSignature);
    }
    // a valid signature by another key over the same bytes
    let other = SecretKey::from_seed(&[5; 32]);
    let text = read_entry(&bytes, MANIFEST_NAME);
    let sig = format!("{}\n", hex::encode(other.sign(&text)));
    let b = replace_entry(&bytes, SIGNATURE_NAME, Some(sig.as_bytes()));
    assert_eq!(verify_kind(&b, &hq()), ErrorKind::BadSignature);
}

#[test]
fn manifest_missing_or_unreadable() {
    let (bytes, m) = standard_bundle();
    let no_manifest = replace_entry(&bytes, MANIFEST_NAME, None);
    assert_eq!(open_kind(&no_manifest), ErrorKind::MissingManifest);

    let limits = Limits {
        max_manifest_size: 100,
        ..Limits::default()
    };
    assert_eq!(open_kind_with(&bytes, &limits), ErrorKind::ManifestTooLarge);

    let text = m.to_toml().unwrap();
    let key = key();
    for (edited, kind) in [
        (format!("{text}surprise = true\n"), ErrorKind::BadManifest),
        (
            format!(
                "{}\n[future]\nx = 1\n",
                text.replace("format = 1", "format = 2")
            ),
            ErrorKind::UnsupportedVersion,
        ),
        ("not toml at all [".to_string(), ErrorKind::BadManifest),
    ] {
        // correctly signed, still refused at open
        let sig = format!("{}\n", hex::encode(key.sign(edited.as_bytes())));
        let b = replace_entry(&bytes, MANIFEST_NAME, Some(edited.as_bytes()));
        let b = replace_entry(&b, SIGNATURE_NAME, Some(sig.as_bytes()));
        assert_eq!(open_kind(&b), kind, "{edited}");
    }
}

// --- manifest against zip --------------------------------------------------------

fn report_only_manifest(size: u64, sha: &[u8], compression: Compression) -> Manifest {
    let (_, mut m) = standard_bundle();
    m.kinds = vec!["report".into()];
    m.entries = vec![EntryMeta {
        name: "payload/report.txt".into(),
        kind: "report".into(),
        size,
        sha256: hex::encode(Sha256::digest(sha)),
        compression,
    }];
    m
}

#[test]
fn payload_differs_from_manifest() {
    let m = report_only_manifest(9, b"all good\n", Compression::Stored);
    let bytes = build_bundle(&m, &[("payload/report.txt", b"all bad!\n", Stored)], &key());
    let mut b = open(&bytes).unwrap().verify(&hq()).unwrap();
    let e = b.read_entry("payload/report.txt", 100).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HashMismatch);
    assert!(e.to_string().contains("payload/report.txt"), "{e}");
    assert!(e.to_string().contains("test.berth.zip"), "{e}");
    assert_eq!(
        b.check_all_entries().unwrap_err().kind(),
        ErrorKind::HashMismatch
    );

    // the honest version of the same bundle passes
    let bytes = build_bundle(&m, &[("payload/report.txt", b"all good\n", Stored)], &key());
    open(&bytes)
        .unwrap()
        .verify(&hq())
        .unwrap()
        .check_all_entries()
        .unwrap();
}

#[test]
fn entries_missing_unlisted_or_different() {
    let key = key();
    let m = report_only_manifest(9, b"all good\n", Compression::Stored);
    let missing = build_bundle(&m, &[], &key);
    assert_eq!(verify_kind(&missing, &hq()), ErrorKind::MissingEntry);

    let unlisted = build_bundle(
        &m,
        &[
            ("payload/extra", b"x", Stored),
            ("payload/report.txt", b"all good\n", Stored),
        ],
        &key,
    );
    assert_eq!(verify_kind(&unlisted, &hq()), ErrorKind::UnlistedEntry);

    let shorter = build_bundle(&m, &[("payload/report.txt", b"all good", Stored)], &key);
    assert_eq!(verify_kind(&shorter, &hq()), ErrorKind::SizeMismatch);

    let deflated = build_bundle(&m, &[("payload/report.txt", b"all good\n", Deflated)], &key);
    assert_eq!(verify_kind(&deflated, &hq()), ErrorKind::MethodMismatch);
}

#[test]
fn declared_size_lies() {
    // The zip and the manifest both say 10 bytes; the deflate stream holds 1 MiB.
    let data = vec![0u8; 1 << 20];
    let m = report_only_manifest(10, &data[..10], Compression::Deflate);
    let mut bytes = build_bundle(&m, &[("payload/report.txt", &data, Deflated)], &key());
    let (local, central) = header_offsets(&bytes, "payload/report.txt");
    put(&mut bytes, local + 22, &10u32.to_le_bytes());
    put(&mut bytes, central + 24, &10u32.to_le_bytes());
    let mut b = open(&bytes).unwrap().verify(&hq()).unwrap();
    let mut out = Vec::new();
    let e = b.copy_entry("payload/report.txt", &mut out).unwrap_err();
    // zip 9 stops on its own ("larger than its declared uncompressed size"):
    // corrupt-entry; our own guard (size-mismatch) is the second line.
    assert!(
        matches!(e.kind(), ErrorKind::SizeMismatch | ErrorKind::CorruptEntry),
        "{e}"
    );
    assert!(out.len() <= 10, "stopped before writing past the size");
}

// --- container -----------------------------------------------------------------

#[test]
fn not_a_zip_truncated_trailing_prepended() {
    let (bytes, _) = standard_bundle();
    assert_eq!(
        open_kind(b"just some text, no zip here at all"),
        ErrorKind::NotAZip
    );
    assert_eq!(open_kind(b""), ErrorKind::NotAZip);
    for cut in [4, 10, 21, 22, 100, bytes.len() / 2, bytes.len() - 1] {
        assert_eq!(
            open_kind(&bytes[..cut]),
            ErrorKind::Truncated,
            "cut at {cut}"
        );
    }
    for cut in [1, 5, 21, 23, 200] {
        let k = open_kind(&bytes[..bytes.len() - cut]);
        assert_eq!(k, ErrorKind::Truncated, "cut {cut} from the end");
    }

    let mut trailing = bytes.clone();
    trailing.extend_from_slice(b"garbage");
    assert_eq!(open_kind(&trailing), ErrorKind::TrailingData);
    let mut trailing = bytes.clone();
    trailing.extend_from_slice(&vec![0u8; 100_000]);
    assert_eq!(open_kind(&trailing), ErrorKind::TrailingData);

    let mut prepended = b"#!/bin/sh\necho hi\n".to_vec();
    prepended.extend_from_slice(&bytes);
    assert_eq!(open_kind(&prepended), ErrorKind::PrependedData);
}

#[test]
fn archive_comment_is_refused() {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.set_comment("hello").unwrap();
    z.start_file("payload/a", opts(Stored)).unwrap();
    z.write_all(b"a").unwrap();
    let bytes = z.finish().unwrap().into_inner();
    assert_eq!(open_kind(&bytes), ErrorKind::TrailingData);
}

#[test]
fn limits() {
    let (bytes, _) = standard_bundle();
    let l = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    assert_eq!(
        open_kind_with(&bytes, &l(|l| l.max_entries = 4)),
        ErrorKind::TooManyEntries
    );
    assert_eq!(
        open_kind_with(&bytes, &l(|l| l.max_entry_size = 50_000)),
        ErrorKind::TooLarge
    );
    assert_eq!(
        open_kind_with(&bytes, &l(|l| l.max_total_size = 100_500)),
        ErrorKind::TooLarge
    );
    assert_eq!(
        open_kind_with(&bytes, &l(|l| l.max_ratio = 2)),
        ErrorKind::RatioTooHigh
    );
    // a real bomb: 10 MiB of zeros deflate ~1000:1
    let bomb = build_zip(&[("payload/zeros", &vec![0u8; 10 << 20], Deflated)]);
    assert_eq!(open_kind(&bomb), ErrorKind::RatioTooHigh);
}

#[test]
fn duplicate_names() {
    let bytes = build_zip(&[
        ("payload/A.txt", b"1", Stored),
        ("payload/a.txt", b"2", Stored),
    ]);
    assert_eq!(open_kind(&bytes), ErrorKind::DuplicateName);

    // exactly the same name twice (the zip writer refuses, so patch the bytes)
    let mut bytes = build_zip(&[
        ("payload/a.txt", b"1", Stored),
        ("payload/b.txt", b"2", Stored),
    ]);
    let (local, central) = header_offsets(&bytes, "payload/b.txt");
    put(&mut bytes, local + 30, b"payload/a.txt");
    put(&mut bytes, central + 46, b"payload/a.txt");
    assert_eq!(open_kind(&bytes), ErrorKind::DuplicateName);
}

#[test]
fn unsafe_names() {
    for name in [
        "../evil",
        "payload/../../evil",
        "/etc/passwd",
        "C:/Windows/x",
        "payload/CON",
        "payload/aux.txt",
        "payload/x:y",
        "payload/a\u{1}b",
        "payload/trailing.",
    ] {
        let bytes = build_zip(&[(name, b"x", Stored)]);
        assert_eq!(open_kind(&bytes), ErrorKind::UnsafeName, "{name:?}");
    }
    // names the zip writer will not write: patch them in
    for (name, patched) in [
        ("payload/abc", &b"payload\\abc"[..]),
        ("payload/abc", b"payload/a\0c"),
        ("payload/abc", b"payload/a\xffc"),
    ] {
        let mut bytes = build_zip(&[(name, b"x", Stored)]);
        let (local, central) = header_offsets(&bytes, name);
        put(&mut bytes, local + 30, patched);
        put(&mut bytes, central + 46, patched);
        assert_eq!(open_kind(&bytes), ErrorKind::UnsafeName, "{patched:?}");
    }
}

#[test]
fn special_entries() {
    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.add_directory("payload/dir/", opts(Stored)).unwrap();
    assert_eq!(
        open_kind(&z.finish().unwrap().into_inner()),
        ErrorKind::SpecialEntry
    );

    let mut z = ZipWriter::new(Cursor::new(Vec::new()));
    z.add_symlink("payload/link", "/etc/passwd", opts(Stored))
        .unwrap();
    assert_eq!(
        open_kind(&z.finish().unwrap().into_inner()),
        ErrorKind::SpecialEntry
    );

    // a FIFO: unix mode 0o010644 in the external attributes
    let mut bytes = build_zip(&[("payload/fifo", b"", Stored)]);
    let (_, central) = header_offsets(&bytes, "payload/fifo");
    put(
        &mut bytes,
        central + 38,
        &(0o010_644u32 << 16).to_le_bytes(),
    );
    assert_eq!(open_kind(&bytes), ErrorKind::SpecialEntry);
}

#[test]
fn encrypted_and_unknown_methods() {
    let mut bytes = build_zip(&[("payload/secret", b"x", Stored)]);
    let (local, central) = header_offsets(&bytes, "payload/secret");
    put(&mut bytes, local + 6, &1u16.to_le_bytes());
    put(&mut bytes, central + 8, &1u16.to_le_bytes());
    assert_eq!(open_kind(&bytes), ErrorKind::Encrypted);

    for method in [12u16, 14, 93, 99, 1234] {
        let mut bytes = build_zip(&[("payload/x", b"x", Stored)]);
        let (local, central) = header_offsets(&bytes, "payload/x");
        put(&mut bytes, local + 8, &method.to_le_bytes());
        put(&mut bytes, central + 10, &method.to_le_bytes());
        assert_eq!(open_kind(&bytes), ErrorKind::UnsupportedMethod, "{method}");
    }
}

#[test]
fn corrupt_deflate_data_is_permanent() {
    let data = text(50_000);
    let m = report_only_manifest(data.len() as u64, &data, Compression::Deflate);
    let mut bytes = build_bundle(&m, &[("payload/report.txt", &data, Deflated)], &key());
    let (local, _) = header_offsets(&bytes, "payload/report.txt");
    let start = local + 30 + "payload/report.txt".len();
    for b in &mut bytes[start + 100..start + 200] {
        *b ^= 0x5a;
    }
    let mut b = open(&bytes).unwrap().verify(&hq()).unwrap();
    let e = b
        .copy_entry("payload/report.txt", &mut io::sink())
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::CorruptEntry | ErrorKind::HashMismatch | ErrorKind::SizeMismatch
        ),
        "{e}"
    );
    assert!(e.is_permanent(), "{e}");
}
