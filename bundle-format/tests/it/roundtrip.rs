//! Bundles the writer made, read back.

use std::collections::BTreeSet;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use berth_bundle::*;
use sha2::{Digest, Sha256};

use crate::util::*;

#[test]
fn write_open_verify_read() {
    let (bytes, written) = standard_bundle();
    let b = open(&bytes).unwrap();
    assert_eq!(b.manifest(), &written);
    assert_eq!(b.label(), "test.berth.zip");
    let mut b = b.verify(&trust_for(&key(), "hq")).unwrap();
    assert_eq!(b.manifest(), &written);
    assert_eq!(b.signer().site, "hq");
    assert_eq!(b.manifest().kinds, ["changes", "report"]);
    assert_eq!(b.manifest().stream.as_ref().unwrap().seq, 3);

    assert_eq!(
        b.read_entry("payload/changes.jsonl", u64::MAX).unwrap(),
        text(100_000)
    );
    assert_eq!(
        b.read_entry("payload/report.txt", 9).unwrap(),
        b"all good\n"
    );
    assert_eq!(b.read_entry("payload/empty", 0).unwrap(), b"");
    let mut out = Vec::new();
    assert_eq!(b.copy_entry("payload/report.txt", &mut out).unwrap(), 9);
    b.check_all_entries().unwrap();

    let e = b.read_entry("payload/changes.jsonl", 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooLarge);
    let e = b.copy_entry("payload/nope", &mut io::sink()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchEntry);
    let e = b.copy_entry("manifest.toml", &mut io::sink()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoSuchEntry);
}

#[test]
fn manifest_layout() {
    let (bytes, _) = standard_bundle();
    let b = open(&bytes).unwrap();
    let names: Vec<&str> = b.zip_entry_names().collect();
    assert_eq!(
        names,
        [
            "manifest.sig",
            "manifest.toml",
            "payload/changes.jsonl",
            "payload/empty",
            "payload/report.txt"
        ]
    );
    let text = std::str::from_utf8(b.manifest_bytes()).unwrap();
    assert!(text.starts_with("format = 1\n"), "{text}");
    let sig = read_entry(&bytes, "manifest.sig");
    assert_eq!(sig.len(), 129);
    assert_eq!(sig.last(), Some(&b'\n'));
}

#[test]
fn deterministic_bytes() {
    let (a, _) = standard_bundle();
    let (b, _) = standard_bundle();
    assert_eq!(a, b);
    // and a different bundle id changes them
    let key = key();
    let mut h = header(&key);
    h.bundle_id = None;
    let w = BundleWriter::new(Cursor::new(Vec::new()), h).unwrap();
    let (c, m) = w.finish(&key).unwrap();
    assert_ne!(m.bundle_id, BUNDLE_ID);
    assert_ne!(c.into_inner(), a);
}

/// Text-like bytes made on the fly, `remaining` of them, hashed as they go out.
struct Generated {
    remaining: u64,
    state: u64,
    hasher: Sha256,
    max_request: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.max_request = self.max_request.max(buf.len());
        let n = buf.len().min(self.remaining as usize).min(8192);
        for b in &mut buf[..n] {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = b"abcdefgh ijklm,\n0123"[(self.state >> 59) as usize % 20];
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct HashSink(Sha256, u64);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn streams_fifty_megabytes() {
    const SIZE: u64 = 50 << 20;
    let key = key();
    let file = tempfile::tempfile().unwrap();
    let mut w = BundleWriter::new(file, header(&key)).unwrap();
    let mut src = Generated {
        remaining: SIZE,
        state: 1,
        hasher: Sha256::new(),
        max_request: 0,
    };
    let meta = w
        .add_entry("payload/big.txt", "extract", Compression::Deflate, &mut src)
        .unwrap();
    assert_eq!(meta.size, SIZE);
    let expected = hex::encode(src.hasher.clone().finalize());
    assert_eq!(meta.sha256, expected);
    assert!(src.max_request <= 1 << 20, "reads in bounded chunks");
    let (mut file, _) = w.finish(&key).unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();

    let mut b = Bundle::open(file, "big", &Limits::default())
        .unwrap()
        .verify(&trust_for(&key, "hq"))
        .unwrap();
    let mut sink = HashSink(Sha256::new(), 0);
    assert_eq!(b.copy_entry("payload/big.txt", &mut sink).unwrap(), SIZE);
    assert_eq!(hex::encode(sink.0.finalize()), expected);
    assert_eq!(sink.1, SIZE);
}

#[test]
fn untrusted_signer() {
    let (bytes, _) = standard_bundle();
    let stranger = SecretKey::from_seed(&[1; 32]);
    assert_eq!(
        verify_kind(&bytes, &trust_for(&stranger, "hq")),
        ErrorKind::UnknownSigner
    );
    assert_eq!(
        verify_kind(&bytes, &TrustedKeys::new()),
        ErrorKind::UnknownSigner
    );
}

#[test]
fn key_of_another_site() {
    let (bytes, _) = standard_bundle();
    let e = open(&bytes)
        .unwrap()
        .verify(&trust_for(&key(), "alice"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SenderMismatch);
    assert!(e.to_string().contains("alice"), "{e}");
}

#[test]
fn kind_not_allowed_for_key() {
    let (bytes, _) = standard_bundle();
    let mut t = TrustedKeys::new();
    t.add(TrustedKey {
        public: key().public(),
        site: "hq".into(),
        kinds: Some(BTreeSet::from(["changes".to_string()])),
    });
    assert_eq!(verify_kind(&bytes, &t), ErrorKind::KindNotAllowed);
    t.add(TrustedKey {
        public: key().public(),
        site: "hq".into(),
        kinds: Some(BTreeSet::from([
            "changes".to_string(),
            "report".to_string(),
        ])),
    });
    open(&bytes).unwrap().verify(&t).unwrap();
}

#[test]
fn critical_extension_needs_understanding() {
    let key = key();
    let mut h = header(&key);
    h.extensions
        .insert("migration".into(), toml::Value::String("v2".into()));
    h.extensions.insert("note".into(), toml::Value::Integer(1));
    h.critical = vec!["migration".into()];
    let w = BundleWriter::new(Cursor::new(Vec::new()), h).unwrap();
    let (out, _) = w.finish(&key).unwrap();
    let bytes = out.into_inner();
    assert_eq!(open_kind(&bytes), ErrorKind::UnknownCritical);
    let limits = Limits {
        understood_extensions: BTreeSet::from(["migration".to_string()]),
        ..Limits::default()
    };
    let b = Bundle::open(Cursor::new(bytes), "x", &limits)
        .unwrap()
        .verify(&trust_for(&key, "hq"))
        .unwrap();
    assert_eq!(b.manifest().extensions.len(), 2);
}

#[test]
fn broadcast_with_declared_kind_and_no_entries() {
    let key = key();
    let mut h = header(&key);
    h.recipients = vec!["*".into()];
    h.stream = None;
    let mut w = BundleWriter::new(Cursor::new(Vec::new()), h).unwrap();
    w.declare_kind("upgrade").unwrap();
    let (out, m) = w.finish(&key).unwrap();
    assert!(m.is_broadcast() && m.entries.is_empty());
    let mut b = Bundle::open(Cursor::new(out.into_inner()), "x", &Limits::default())
        .unwrap()
        .verify(&trust_for(&key, "hq"))
        .unwrap();
    assert_eq!(b.manifest().kinds, ["upgrade"]);
    b.check_all_entries().unwrap();
}

#[test]
fn io_errors_are_retryable() {
    use std::cell::Cell;
    use std::rc::Rc;

    /// A reader that fails every read once `fail` is set.
    struct Flaky {
        inner: Cursor<Vec<u8>>,
        fail: Rc<Cell<bool>>,
    }
    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail.get() {
                return Err(io::Error::other("disk went away"));
            }
            self.inner.read(buf)
        }
    }
    impl Seek for Flaky {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }
    let (bytes, _) = standard_bundle();
    let fail = Rc::new(Cell::new(true));
    let flaky = Flaky {
        inner: Cursor::new(bytes),
        fail: fail.clone(),
    };
    let e = Bundle::open(flaky, "x", &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(!e.is_permanent());

    // and while reading an entry, after a good open and verify
    let (bytes, _) = standard_bundle();
    fail.set(false);
    let flaky = Flaky {
        inner: Cursor::new(bytes),
        fail: fail.clone(),
    };
    let mut b = Bundle::open(flaky, "x", &Limits::default())
        .unwrap()
        .verify(&trust_for(&key(), "hq"))
        .unwrap();
    fail.set(true);
    let e = b
        .copy_entry("payload/changes.jsonl", &mut io::sink())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    fail.set(false);
    b.check_all_entries().unwrap();
}
