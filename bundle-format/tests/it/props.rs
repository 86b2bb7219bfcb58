//! Valid bundles with bytes changed or cut off: every result is an error, never a
//! panic, never a bundle accepted with other content than was signed.
//!
//! "Accepted" is checked to the end: open, verify, and read every entry. A change
//! the reader accepts must leave the signed manifest bytes and every entry's bytes
//! exactly as they were, and must lie in a byte the zip format lets vary without
//! changing content ([`slack`]). Those bytes exist, so byte-identity cannot be the
//! rule: zip header fields the reader does not pin, and the unused bits after the
//! end of a deflate stream (which no hash of the uncompressed bytes can cover).
//! `single_bit_flips_everywhere` lists them, exhaustively, for every valid vector.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::ops::Range;

use berth_bundle::*;
use proptest::prelude::*;
use zip::{CompressionMethod, ZipArchive};

use crate::vectors::{VectorFile, load_all, trust};

/// What a verified bundle gives out: the signed manifest bytes and every entry.
#[derive(Debug, PartialEq)]
struct Content {
    manifest: Vec<u8>,
    entries: Vec<(String, Vec<u8>)>,
}

fn content(bytes: &[u8], trust: &TrustedKeys) -> Result<Content, BundleError> {
    let b = Bundle::open(Cursor::new(bytes), "mutant", &Limits::default())?;
    let mut v = b.verify(trust)?;
    let names: Vec<String> = v
        .manifest()
        .entries
        .iter()
        .map(|e| e.name.clone())
        .collect();
    let mut entries = Vec::new();
    for name in names {
        let data = v.read_entry(&name, u64::MAX)?;
        entries.push((name, data));
    }
    Ok(Content {
        manifest: v.manifest_bytes().to_vec(),
        entries,
    })
}

fn le16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Byte ranges of `bytes` (a valid bundle) that may change without changing what a
/// verified bundle gives out, and that the reader currently does not pin:
/// - local header: version needed, general-purpose flags (`+4..+8`);
/// - central header: version made by, version needed, flags (`+4..+10`); first disk,
///   internal and external attributes (`+34..+42`: the file type bits are checked,
///   permission bits are not);
/// - the last central header's extra and comment lengths (`+30..+34`): growing them
///   swallows part of the end record, and the central directory's parsed length is
///   not compared with its declared size;
/// - the last byte of each deflate stream (padding bits after the final block).
fn slack(bytes: &[u8]) -> Vec<Range<usize>> {
    let z = ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    let last_central = (0..z.len())
        .map(|i| z.by_index_data(i).unwrap().central_header_start() as usize)
        .max();
    for i in 0..z.len() {
        let e = z.by_index_data(i).unwrap();
        let (l, c) = (e.header_start() as usize, e.central_header_start() as usize);
        out.push(l + 4..l + 8);
        out.push(c + 4..c + 10);
        out.push(c + 34..c + 42);
        if Some(c) == last_central {
            out.push(c + 30..c + 34);
        }
        if e.compression() == CompressionMethod::Deflated {
            let data = l + 30 + le16(bytes, l + 26) + le16(bytes, l + 28);
            let end = data + e.compressed_size() as usize;
            out.push(end - 1..end);
        }
    }
    out
}

fn in_slack(slack: &[Range<usize>], at: usize) -> bool {
    slack.iter().any(|r| r.contains(&at))
}

struct Shape {
    name: String,
    bytes: Vec<u8>,
    content: Content,
    slack: Vec<Range<usize>>,
}

/// The valid vectors: one deflate entry, several stored and deflate entries, empty
/// entries, no entries, a broadcast, an unknown extension.
fn shapes() -> Vec<Shape> {
    let trust = trust();
    load_all()
        .into_iter()
        .filter(|v| v.expect == "ok")
        .map(|VectorFile { name, bytes, .. }| Shape {
            content: content(&bytes, &trust).unwrap(),
            slack: slack(&bytes),
            name,
            bytes,
        })
        .collect()
}

/// The property for one mutant: refused, or (changes only in slack) the same
/// content. Returns whether it was accepted.
fn assert_not_wrongly_accepted(shape: &Shape, mutant: &[u8], trust: &TrustedKeys) -> bool {
    if mutant == shape.bytes.as_slice() {
        return true;
    }
    let Ok(got) = content(mutant, trust) else {
        return false;
    };
    let changed: Vec<usize> = (0..mutant.len().min(shape.bytes.len()))
        .filter(|&i| mutant[i] != shape.bytes[i])
        .collect();
    assert_eq!(
        mutant.len(),
        shape.bytes.len(),
        "{}: a bundle of another length was accepted",
        shape.name
    );
    assert!(
        changed.iter().all(|&i| in_slack(&shape.slack, i)),
        "{}: accepted with bytes changed at {changed:?}, outside the known slack",
        shape.name
    );
    assert!(
        got == shape.content,
        "{}: accepted with different content (bytes changed at {changed:?})",
        shape.name
    );
    true
}

#[test]
fn single_bit_flips_everywhere() {
    // Exhaustive: every bit of every valid vector. Pins the slack (a byte outside
    // it that starts being accepted fails here) and shows the slack is used.
    let trust = trust();
    let mut accepted_somewhere = BTreeSet::new();
    for shape in shapes() {
        for at in 0..shape.bytes.len() {
            for bit in 0..8 {
                let mut b = shape.bytes.clone();
                b[at] ^= 1 << bit;
                if assert_not_wrongly_accepted(&shape, &b, &trust) {
                    accepted_somewhere.insert((shape.name.clone(), at));
                }
            }
        }
    }
    assert!(
        !accepted_somewhere.is_empty(),
        "the slack is smaller now: tighten `slack`"
    );
}

#[test]
fn every_truncation_is_refused() {
    let trust = trust();
    for shape in shapes() {
        for len in 0..shape.bytes.len() {
            let e = content(&shape.bytes[..len], &trust).unwrap_err();
            assert!(e.is_permanent(), "{}: cut at {len}: {e}", shape.name);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Several bytes replaced at random offsets, optionally cut at a random offset.
    #[test]
    fn random_changes_are_refused_or_harmless(
        which in any::<prop::sample::Index>(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
        cut in prop::option::weighted(0.2, any::<prop::sample::Index>()),
    ) {
        thread_local! {
            static SHAPES: Vec<Shape> = shapes();
            static TRUST: TrustedKeys = trust();
        }
        SHAPES.with(|shapes| TRUST.with(|trust| {
            let shape = which.get(shapes);
            let mut b = shape.bytes.clone();
            for (at, mask) in &changes {
                let i = at.index(b.len());
                b[i] ^= mask;
            }
            if let Some(cut) = cut {
                b.truncate(cut.index(b.len()));
            }
            assert_not_wrongly_accepted(shape, &b, trust);
        }));
    }
}
