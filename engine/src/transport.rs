//! Files in exchange folders: listing the bundles addressed to a site and taking them in
//! (atomic writes, `NAME.part` then rename, are [`crate::files`]). Readers ignore temporary names, so a half-written or
//! half-copied file is never read.

use crate::error::{EngineError, Result};
pub(crate) use crate::files::sync_dir;
pub use crate::files::{
    copy_into, is_read_only, move_into, remove_files, rename_part, write_atomic, write_part,
};
use berth_bundle::naming;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A bundle file found in a folder, by its self-describing name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Sender site.
    pub sender: String,
    /// Sequence number in the sender->recipient stream.
    pub seq: u64,
    /// Recipient site (`all` for broadcasts and enrollment requests).
    pub recipient: String,
    /// Where it is.
    pub path: PathBuf,
}

/// Lists the bundles in `folder` addressed to `recipient` (all of them when `None`),
/// sorted by sender and sequence. Temporary names and foreign files are ignored.
pub fn list(folder: &Path, recipient: Option<&str>) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(folder).map_err(|e| EngineError::io(folder, e))?;
    for e in entries {
        let e = e.map_err(|e| EngineError::io(folder, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if naming::is_temporary(&name) {
            continue;
        }
        // A bundle cut into volumes (SPEC part 3) is listed by its index once it is complete;
        // a sealed one (`B.age`) by its own name.
        let set = berth_bundle::volume::parse_index_name(&name);
        let file = set.unwrap_or(&name);
        let plain = berth_bundle::seal::parse_sealed_name(file).unwrap_or(file);
        let Some((sender, to, seq)) = naming::parse_bundle_file_name(plain) else {
            continue;
        };
        if set.is_some()
            && (recipient.is_some_and(|r| r != to)
                || !matches!(
                    crate::volumes::state(&e.path()),
                    crate::volumes::SetState::Complete(_)
                ))
        {
            continue;
        }
        if recipient.is_some_and(|r| r != to) {
            continue;
        }
        match e.file_type() {
            Ok(t) if t.is_file() => {}
            Ok(_) => continue,
            // Removed since the folder was read.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(EngineError::io(e.path(), err)),
        }
        out.push(Found {
            sender,
            seq,
            recipient: to,
            path: e.path(),
        });
    }
    out.sort();
    Ok(out)
}

/// What one sender has waiting in an exchange folder, by recipient, from one listing: its
/// bundles (as [`list`] finds them) and its `.part` files. A site writing to many peers
/// reads the folder once per dock with this, not once or more per peer: listing a folder
/// shared by N nodes for each of them made writing N streams cost N^2 (issue 20).
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    bundles: BTreeMap<String, Vec<Found>>,
    parts: BTreeMap<String, Vec<(u64, PathBuf)>>,
}

impl Outbox {
    /// Lists `folder` once for what `sender` has written there.
    pub fn read(folder: &Path, sender: &str) -> Result<Outbox> {
        let mut out = Outbox::default();
        for f in list(folder, None)? {
            if f.sender == sender {
                out.bundles.entry(f.recipient.clone()).or_default().push(f);
            }
        }
        let mut names = BTreeMap::new();
        for e in fs::read_dir(folder).map_err(|e| EngineError::io(folder, e))? {
            let e = e.map_err(|e| EngineError::io(folder, e))?;
            names.insert(e.file_name().to_string_lossy().into_owned(), e.path());
        }
        for (name, path) in &names {
            if let Some((s, r, seq)) = leftover(name, |n| names.contains_key(n))
                && s == sender
            {
                out.parts.entry(r).or_default().push((seq, path.clone()));
            }
        }
        Ok(out)
    }

    /// The sender's bundles to `recipient` that were waiting, by sequence number.
    pub fn waiting(&self, recipient: &str) -> &[Found] {
        self.bundles.get(recipient).map_or(&[], Vec::as_slice)
    }

    /// What a killed writer left of the sender's bundles to `recipient`, with their
    /// sequence: `.part` files (of a bundle, a sealed one, a piece or an index) and pieces of
    /// a volume set whose index is not there.
    pub fn parts(&self, recipient: &str) -> &[(u64, PathBuf)] {
        self.parts.get(recipient).map_or(&[], Vec::as_slice)
    }
}

/// The (sender, recipient, seq) of the bundle a file is an unfinished part of: `F.part` for
/// any file `F` of a bundle's form (`B`, `B.age`, a piece, an index), or a piece whose
/// set's index `exists` does not find (a split cut short: no reader lists it).
fn leftover(name: &str, exists: impl Fn(&str) -> bool) -> Option<(String, String, u64)> {
    use berth_bundle::volume;
    let file = match name.strip_suffix(".part") {
        Some(stem) => volume::parse_index_name(stem)
            .or_else(|| volume::parse_volume_name(stem).map(|(b, _)| b))
            .unwrap_or(stem),
        None => {
            let (bundle, _) = volume::parse_volume_name(name)?;
            if exists(&volume::index_name(bundle)) {
                return None;
            }
            bundle
        }
    };
    naming::parse_bundle_file_name(berth_bundle::seal::parse_sealed_name(file).unwrap_or(file))
}

/// What taking a found bundle did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Taken {
    /// It is in the spool, at this path, and gone from where it was found.
    Spooled(PathBuf),
    /// It can never be opened or joined: it was moved to quarantine with its reason file.
    Quarantined {
        /// Why (the text of its reason file).
        reason: String,
    },
}

/// Takes a found bundle into `folder` (the spool) and removes it from where it was: a whole
/// file is copied, a volume set is joined (every piece hash-checked). A set whose pieces do
/// not match its index is moved to `quarantine` with a reason instead.
pub fn take_into(f: &Found, folder: &Path, quarantine: &Path) -> Result<Taken> {
    if is_volume_set(f) {
        return match crate::volumes::join(&f.path, folder) {
            Ok(p) => {
                crate::volumes::remove_set(&f.path)?;
                Ok(Taken::Spooled(p))
            }
            Err(e) if e.is_permanent() => {
                let reason = e.to_string();
                crate::volumes::quarantine_set(&f.path, quarantine, &reason)?;
                Ok(Taken::Quarantined { reason })
            }
            Err(e) => Err(e),
        };
    }
    let p = copy_into(&f.path, folder)?;
    remove(f)?;
    Ok(Taken::Spooled(p))
}

/// Removes a found bundle once it is taken: the file, or every file of a volume set. A
/// source berth may not change (a write-protected stick, a read-only share) keeps it: the
/// copy in the spool is what applies, and a later dock sees the one left behind as a
/// duplicate.
pub fn remove(f: &Found) -> Result<()> {
    let done = if is_volume_set(f) {
        crate::volumes::remove_set(&f.path)
    } else {
        fs::remove_file(&f.path).map_err(|e| EngineError::io(&f.path, e))
    };
    match done {
        Err(EngineError::Io { source, .. }) if is_read_only(&source) => Ok(()),
        other => other,
    }
}

/// True when `f` is a volume set (its path is the set's index).
pub fn is_volume_set(f: &Found) -> bool {
    f.path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(berth_bundle::volume::parse_index_name)
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// One listing serves every peer a site writes to (issue 20): its own bundles and
    /// `.part` files, by recipient; other senders' files are not its.
    #[test]
    fn an_outbox_holds_what_one_sender_has_waiting_by_recipient() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            naming::bundle_file_name("hq", "alice", 2),
            naming::bundle_file_name("hq", "alice", 3),
            naming::bundle_file_name("hq", "bob", 1),
            naming::bundle_file_name("alice", "hq", 4),
            format!("{}.part", naming::bundle_file_name("hq", "bob", 2)),
            format!("{}.part", naming::bundle_file_name("carol", "hq", 2)),
            "notes.txt".to_string(),
        ] {
            fs::write(d.path().join(name), b"x").unwrap();
        }
        let o = Outbox::read(d.path(), "hq").unwrap();
        let seqs = |r: &str| o.waiting(r).iter().map(|f| f.seq).collect::<Vec<_>>();
        assert_eq!(seqs("alice"), [2, 3]);
        assert_eq!(seqs("bob"), [1]);
        assert!(o.waiting("hq").is_empty() && o.waiting("carol").is_empty());
        assert_eq!(o.parts("bob").len(), 1);
        assert_eq!(o.parts("bob")[0].0, 2);
        assert!(o.parts("alice").is_empty() && o.parts("hq").is_empty());
    }

    /// Issue 21: what an export sealing or cutting a bundle leaves when it is killed is
    /// found as left over (and removed by the next export): a `.part` of a sealed file, of
    /// a piece or of an index, and a piece whose set has no index. A piece of a whole set is
    /// not: the set is a bundle waiting.
    #[test]
    fn leftovers_of_a_sealed_or_cut_bundle_are_parts_of_its_seq() {
        let d = tempfile::tempdir().unwrap();
        let b = |seq| naming::bundle_file_name("hq", "alice", seq);
        let age = |seq| berth_bundle::seal::sealed_name(&b(seq));
        let vol = berth_bundle::volume::volume_name;
        let index = berth_bundle::volume::index_name;
        for name in [
            format!("{}.part", age(1)),
            format!("{}.part", vol(&b(2), 2)),
            vol(&b(2), 1),
            format!("{}.part", index(&age(3))),
            vol(&age(3), 1),
            vol(&age(4), 1),
            index(&age(4)),
        ] {
            fs::write(d.path().join(name), b"x").unwrap();
        }
        let o = Outbox::read(d.path(), "hq").unwrap();
        let mut parts: Vec<(u64, String)> = o
            .parts("alice")
            .iter()
            .map(|(seq, p)| (*seq, p.file_name().unwrap().to_string_lossy().into_owned()))
            .collect();
        parts.sort();
        assert_eq!(
            parts,
            [
                (1, format!("{}.part", age(1))),
                (2, vol(&b(2), 1)),
                (2, format!("{}.part", vol(&b(2), 2))),
                (3, vol(&age(3), 1)),
                (3, format!("{}.part", index(&age(3)))),
            ]
        );
    }

    #[test]
    fn lists_only_complete_bundles_for_the_recipient() {
        let d = tempfile::tempdir().unwrap();
        let names = [
            naming::bundle_file_name("hq", "alice", 2),
            naming::bundle_file_name("hq", "alice", 1),
            naming::bundle_file_name("hq", "bob", 1),
            format!("{}.part", naming::bundle_file_name("hq", "alice", 3)),
            "notes.txt".to_string(),
        ];
        for n in &names {
            fs::write(d.path().join(n), b"x").unwrap();
        }
        let found = list(d.path(), Some("alice")).unwrap();
        assert_eq!(found.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let r = write_atomic(d.path(), "x.berth.zip", |mut f| {
            f.write_all(b"half").unwrap();
            Err(EngineError::Injected("test"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
