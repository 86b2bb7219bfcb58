//! The test vectors of `tests/vectors/` (format in its README): every `expect: ok`
//! vector opens, verifies and hash-checks; every other one fails with exactly the
//! kind it names. And the committed generator reproduces the files byte for byte.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use berth_bundle::*;

#[path = "../../examples/make_vectors.rs"]
mod make_vectors;

/// A parsed vector file.
#[derive(Debug)]
pub struct VectorFile {
    pub name: String,
    pub expect: String,
    pub description: String,
    pub bytes: Vec<u8>,
}

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// Parses `berth-vector v1` / `expect: ...` / `description: ...` / `---` / bytes.
pub fn parse(name: &str, file: &[u8]) -> VectorFile {
    let sep = b"\n---\n";
    let at = file
        .windows(sep.len())
        .position(|w| w == sep)
        .unwrap_or_else(|| panic!("{name}: no `---` line"));
    let header = std::str::from_utf8(&file[..at]).expect("ASCII header");
    let mut lines = header.lines();
    assert_eq!(
        lines.next(),
        Some(make_vectors::MAGIC),
        "{name}: first line"
    );
    let (mut expect, mut description) = (None, None);
    for line in lines {
        let (key, value) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{name}: header line {line:?} is not `key: value`"));
        match key {
            "expect" => expect = Some(value.to_owned()),
            "description" => description = Some(value.to_owned()),
            other => panic!("{name}: unknown header key {other:?}"),
        }
    }
    VectorFile {
        name: name.to_owned(),
        expect: expect.unwrap_or_else(|| panic!("{name}: no expect line")),
        description: description.unwrap_or_else(|| panic!("{name}: no description line")),
        bytes: file[at + sep.len()..].to_vec(),
    }
}

/// Every committed vector, sorted by name.
pub fn load_all() -> Vec<VectorFile> {
    let mut out: Vec<VectorFile> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == make_vectors::VECTOR_EXT))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            parse(&name, &std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() > 40, "vectors missing from {}", dir().display());
    out
}

/// `trusted.pub`, trusted for site `hq`, any kind.
pub fn trust() -> TrustedKeys {
    let text = std::fs::read_to_string(dir().join("trusted.pub")).unwrap();
    let mut t = TrustedKeys::new();
    t.add(TrustedKey {
        public: PublicKey::from_text(&text).unwrap(),
        site: make_vectors::TRUSTED_SITE.into(),
        kinds: None,
    });
    t
}

/// Open, verify, hash-check every entry: what `berth bundle verify` does.
pub fn check(bytes: &[u8], trust: &TrustedKeys) -> Result<Manifest, BundleError> {
    let b = Bundle::open(Cursor::new(bytes), "vector", &Limits::default())?;
    let mut v = b.verify(trust)?;
    v.check_all_entries()?;
    Ok(v.manifest().clone())
}

/// [`check`] with each entry read through `stream_entry` (a reader that ignores the bytes
/// it is given stops half-way through the first entry, then asks `finish`): a streamed
/// read reaches the same verdict as a copied one, and valid entries stream their bytes.
fn check_streamed(bytes: &[u8], trust: &TrustedKeys) -> Result<Manifest, BundleError> {
    use std::io::Read;
    let b = Bundle::open(Cursor::new(bytes), "vector", &Limits::default())?;
    let mut v = b.verify(trust)?;
    let names: Vec<String> = v
        .manifest()
        .entries
        .iter()
        .map(|e| e.name.clone())
        .collect();
    for (i, name) in names.iter().enumerate() {
        let size = v.manifest().entry(name).map_or(0, |e| e.size);
        let mut copied = Vec::new();
        let copy = v.copy_entry(name, &mut copied).map(|_| copied);
        let mut s = v.stream_entry(name)?;
        let mut streamed = Vec::new();
        let read = if i == 0 {
            (&mut s)
                .take(size / 2)
                .read_to_end(&mut streamed)
                .map(|_| ())
        } else {
            s.read_to_end(&mut streamed).map(|_| ())
        };
        let finished = s.finish();
        match (copy, finished) {
            (Ok(c), Ok(n)) => {
                assert!(read.is_ok(), "{name}: a valid entry reads");
                assert_eq!(n, c.len() as u64, "{name}");
                if i != 0 {
                    assert_eq!(streamed, c, "{name}: the bytes streamed are the entry's");
                }
            }
            (Err(c), Err(f)) => {
                assert_eq!(c.kind(), f.kind(), "{name}: {c} / {f}");
                return Err(f);
            }
            (c, f) => panic!("{name}: copied {:?}, streamed {:?}", c.err(), f.err()),
        }
    }
    Ok(v.manifest().clone())
}

#[test]
fn streaming_an_entry_reaches_the_same_verdict_as_copying_it() {
    let trust = trust();
    let mut failures = Vec::new();
    for v in load_all() {
        let got = match check_streamed(&v.bytes, &trust) {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.kind().as_str().to_owned(),
        };
        if got != v.expect {
            failures.push(format!("{}: expected {}, got {got}", v.name, v.expect));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_vector_fails_with_its_kind() {
    let trust = trust();
    let mut failures = Vec::new();
    for v in load_all() {
        let got = match check(&v.bytes, &trust) {
            Ok(_) => "ok".to_owned(),
            Err(e) => {
                if e.bundle().is_some() {
                    assert_eq!(e.bundle(), Some("vector"), "{}: {e}", v.name);
                }
                e.kind().as_str().to_owned()
            }
        };
        if got != v.expect {
            failures.push(format!(
                "{}: expected {}, got {got} ({})",
                v.name, v.expect, v.description
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn expectations_are_known_kinds_and_cover_the_reader() {
    let vectors = load_all();
    let named: BTreeSet<&str> = vectors.iter().map(|v| v.expect.as_str()).collect();
    for k in &named {
        assert!(
            *k == "ok" || ErrorKind::from_str(k).is_some(),
            "unknown kind {k}"
        );
    }
    // Kinds that cannot come from a bundle's bytes: caller mistakes, disks, keys,
    // and a key restricted to some kinds (trusted.pub is unrestricted).
    let not_from_bytes = [
        ErrorKind::NoSuchEntry,
        ErrorKind::BadKey,
        ErrorKind::BadInput,
        ErrorKind::Io,
        ErrorKind::KindNotAllowed,
    ];
    for k in ErrorKind::ALL {
        if !not_from_bytes.contains(k) {
            assert!(named.contains(k.as_str()), "no vector expects {k}");
        }
    }
    assert!(named.contains("ok"));
}

#[test]
fn valid_vectors_read_back() {
    let trust = trust();
    for v in load_all().iter().filter(|v| v.expect == "ok") {
        let m = check(&v.bytes, &trust).unwrap();
        assert_eq!(m.sender.site, "hq", "{}", v.name);
    }
}

#[test]
fn generator_reproduces_the_committed_files() {
    let tmp = tempfile::tempdir().unwrap();
    make_vectors::write_all(tmp.path()).unwrap();
    let list = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".vector") || n.ends_with(".pub") || n.ends_with(".key"))
            .collect()
    };
    let generated = list(tmp.path());
    assert_eq!(
        generated,
        list(&dir()),
        "rerun: cargo run -p berth-bundle --example make_vectors -- bundle-format/tests/vectors"
    );
    for name in &generated {
        assert!(
            std::fs::read(tmp.path().join(name)).unwrap()
                == std::fs::read(dir().join(name)).unwrap(),
            "{name} differs from what the generator writes now; rerun the generator and review the diff"
        );
    }
}

#[test]
fn signer_key_files_match() {
    let secret =
        SecretKey::from_text(&std::fs::read_to_string(dir().join("TEST-ONLY-signer.key")).unwrap())
            .unwrap();
    let public =
        PublicKey::from_text(&std::fs::read_to_string(dir().join("trusted.pub")).unwrap()).unwrap();
    assert_eq!(secret.public(), public);
}
