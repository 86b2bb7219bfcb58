//! Volume sets on disk: a bundle larger than a medium allows is cut into numbered pieces
//! (`B.001`, `B.002`, ...) and an index `B.volumes`, and joined again on the way in (SPEC
//! part 3). The index format is `berth_bundle::volume`; this module does the file work.
//!
//! Writing: every piece, then the index, each with the write-then-rename rule, then the whole
//! file is removed. A set is *complete* when its index reads and every piece is there with at
//! least its stated size; only complete sets are listed by [`crate::transport::list`]. Joining
//! checks every piece's sha256 and the whole file's while it writes the bundle into the spool
//! (itself write-then-rename), so a stick pulled out mid-copy, a missing or a stale piece never
//! puts half a bundle in the spool.

use crate::error::{EngineError, Result};
use berth_bundle::volume::{self, VolumeIndex, VolumeMeta};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Largest file FAT32 holds is 4 GiB - 1 byte; the default volume stays well below it.
pub const DEFAULT_VOLUME_SIZE: u64 = 4_000_000_000;

/// Smallest volume size accepted (tests use small ones; real media use the default).
pub const MIN_VOLUME_SIZE: u64 = 4096;

/// What a folder holds of one volume set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetState {
    /// The index reads and every piece is present with at least its size.
    Complete(VolumeIndex),
    /// Pieces are missing or still short (a copy in progress, a stick pulled out).
    Incomplete {
        /// The bundle.
        bundle: String,
        /// The pieces not (fully) there.
        missing: Vec<String>,
        /// How many pieces the set has.
        total: usize,
    },
    /// The index itself cannot be read.
    Unreadable(String),
}

/// Reads the state of the set whose index is `index_path`.
pub fn state(index_path: &Path) -> SetState {
    let text = match fs::read_to_string(index_path) {
        Ok(t) => t,
        Err(e) => return SetState::Unreadable(e.to_string()),
    };
    let index = match VolumeIndex::parse(&text) {
        Ok(i) => i,
        Err(e) => return SetState::Unreadable(e.to_string()),
    };
    let expected_name = index_path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(volume::parse_index_name);
    if expected_name != Some(index.bundle.as_str()) {
        return SetState::Unreadable(format!(
            "the index names bundle {} but is not called {}",
            index.bundle,
            volume::index_name(&index.bundle)
        ));
    }
    let folder = index_path.parent().unwrap_or(Path::new("."));
    let missing: Vec<String> = index
        .volumes
        .iter()
        .filter(|v| {
            fs::metadata(folder.join(&v.name))
                .map(|m| !m.is_file() || m.len() < v.size)
                .unwrap_or(true)
        })
        .map(|v| v.name.clone())
        .collect();
    if missing.is_empty() {
        SetState::Complete(index)
    } else {
        SetState::Incomplete {
            bundle: index.bundle.clone(),
            total: index.volumes.len(),
            missing,
        }
    }
}

/// The index and every piece of a set (pieces as the index lists them; only the index
/// when it does not read).
pub fn set_files(index_path: &Path) -> Vec<PathBuf> {
    let folder = index_path.parent().unwrap_or(Path::new("."));
    let mut out = vec![index_path.to_path_buf()];
    if let Ok(text) = fs::read_to_string(index_path)
        && let Ok(index) = VolumeIndex::parse(&text)
    {
        out.extend(index.volumes.iter().map(|v| folder.join(&v.name)));
    }
    out
}

/// Cuts `path` (a bundle with its canonical name) into volumes of `volume_size` bytes in its
/// own folder when it is larger, writes the index last and removes the whole file. Returns
/// the index path, or `None` when the file fits in one volume.
pub fn split(path: &Path, volume_size: u64) -> Result<Option<PathBuf>> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let index = split_to(path, folder, volume_size)?;
    if index.is_some() {
        fs::remove_file(path).map_err(|e| EngineError::io(path, e))?;
    }
    Ok(index)
}

/// Cuts `path` (a bundle file with its canonical name, `B` or `B.age`) into volumes of
/// `volume_size` bytes written into `folder` when it is larger: every piece with the
/// write-then-rename rule, the index last, so the set is listed only once it is whole. The
/// file itself is left where it is. Returns the index path, or `None` when the file fits in
/// one volume (nothing is written).
pub fn split_to(path: &Path, folder: &Path, volume_size: u64) -> Result<Option<PathBuf>> {
    split_with(path, folder, volume_size, &mut |_| Ok(()))
}

/// [`split_to`], calling `after_piece` with each piece's number once it is in place (a
/// crash can be injected there).
pub(crate) fn split_with(
    path: &Path,
    folder: &Path,
    volume_size: u64,
    after_piece: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Option<PathBuf>> {
    let volume_size = volume_size.max(MIN_VOLUME_SIZE);
    let size = fs::metadata(path)
        .map_err(|e| EngineError::io(path, e))?
        .len();
    if size <= volume_size {
        return Ok(None);
    }
    let bundle = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| {
            let plain = berth_bundle::seal::parse_sealed_name(n).unwrap_or(n);
            berth_bundle::naming::parse_bundle_file_name(plain).is_some()
        })
        .ok_or_else(|| EngineError::Volume {
            index: path.to_path_buf(),
            reason: "only a bundle with its canonical name can be split".into(),
        })?
        .to_string();
    let mut input = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut whole = Sha256::new();
    let mut volumes = Vec::new();
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(volume_size);
        let name = volume::volume_name(&bundle, volumes.len() + 1);
        let mut piece = Sha256::new();
        crate::files::write_atomic(folder, &name, |mut out| {
            let mut todo = n;
            while todo > 0 {
                let want = usize::try_from(todo.min(buf.len() as u64)).unwrap_or(buf.len());
                let got = input
                    .read(&mut buf[..want])
                    .map_err(|e| EngineError::io(path, e))?;
                if got == 0 {
                    return Err(EngineError::io(
                        path,
                        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank"),
                    ));
                }
                piece.update(&buf[..got]);
                whole.update(&buf[..got]);
                out.write_all(&buf[..got])
                    .map_err(|e| EngineError::io(folder.join(&name), e))?;
                todo -= got as u64;
            }
            Ok(out)
        })?;
        volumes.push(VolumeMeta {
            name,
            size: n,
            sha256: hex::encode(piece.finalize()),
        });
        left -= n;
        after_piece(volumes.len())?;
    }
    let index = VolumeIndex {
        format: volume::VOLUME_FORMAT,
        bundle: bundle.clone(),
        size,
        sha256: hex::encode(whole.finalize()),
        volumes,
    };
    let text = index.to_toml().map_err(|e| EngineError::Volume {
        index: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let index_path = crate::files::write_atomic(folder, &volume::index_name(&bundle), |mut f| {
        f.write_all(text.as_bytes())
            .map_err(|e| EngineError::io(path, e))?;
        Ok(f)
    })?;
    Ok(Some(index_path))
}

/// Joins a complete set into `folder` under the bundle's name, checking every piece's hash
/// and the whole file's. Nothing appears in `folder` unless everything matched.
pub fn join(index_path: &Path, folder: &Path) -> Result<PathBuf> {
    let index = match state(index_path) {
        SetState::Complete(i) => i,
        SetState::Incomplete { missing, total, .. } => {
            return Err(EngineError::Volume {
                index: index_path.to_path_buf(),
                reason: format!(
                    "{} of {total} volumes missing or short: {}",
                    missing.len(),
                    missing.join(", ")
                ),
            });
        }
        SetState::Unreadable(reason) => {
            return Err(EngineError::Volume {
                index: index_path.to_path_buf(),
                reason,
            });
        }
    };
    let src = index_path.parent().unwrap_or(Path::new("."));
    let bad = |reason: String| EngineError::Volume {
        index: index_path.to_path_buf(),
        reason,
    };
    crate::files::write_atomic(folder, &index.bundle, |mut out| {
        let mut whole = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for v in &index.volumes {
            let p = src.join(&v.name);
            let mut f = File::open(&p).map_err(|e| EngineError::io(&p, e))?;
            let mut piece = Sha256::new();
            let mut total: u64 = 0;
            loop {
                let n = f.read(&mut buf).map_err(|e| EngineError::io(&p, e))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > v.size {
                    return Err(bad(format!(
                        "{} is larger than the {} bytes the index states",
                        v.name, v.size
                    )));
                }
                piece.update(&buf[..n]);
                whole.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| EngineError::io(folder, e))?;
            }
            if total != v.size {
                return Err(bad(format!(
                    "{} holds {total} bytes, the index states {}",
                    v.name, v.size
                )));
            }
            if hex::encode(piece.finalize()) != v.sha256 {
                return Err(bad(format!(
                    "{} does not match its sha256 in the index (a damaged or stale piece)",
                    v.name
                )));
            }
        }
        if hex::encode(whole.finalize()) != index.sha256 {
            return Err(bad(
                "the joined file does not match the index's sha256".into()
            ));
        }
        Ok(out)
    })
}

/// Removes a set: the index first (the set stops being listed), then the pieces.
pub fn remove_set(index_path: &Path) -> Result<()> {
    let files = set_files(index_path);
    for f in &files {
        match fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::io(f, e)),
        }
    }
    Ok(())
}

/// Moves every file of a set into `folder` (quarantine) and writes `B.volumes.reason.txt`.
pub fn quarantine_set(index_path: &Path, folder: &Path, why: &str) -> Result<()> {
    for f in set_files(index_path) {
        if f.exists() {
            crate::files::move_into(&f, folder)?;
        }
    }
    let name = index_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let reason = folder.join(format!("{name}.reason.txt"));
    let text = format!(
        "This volume set can never be joined.\nReason: {why}\nNothing from it was applied.\n"
    );
    fs::write(&reason, text).map_err(|e| EngineError::io(&reason, e))
}

/// The sets in `folder` addressed to `recipient` that are not complete, with a sentence
/// each (for logs and `status`).
pub fn incomplete(folder: &Path, recipient: &str) -> Result<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let entries = fs::read_dir(folder).map_err(|e| EngineError::io(folder, e))?;
    for e in entries {
        let e = e.map_err(|e| EngineError::io(folder, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(bundle) = volume::parse_index_name(&name) else {
            continue;
        };
        let plain = berth_bundle::seal::parse_sealed_name(bundle).unwrap_or(bundle);
        if berth_bundle::naming::parse_bundle_file_name(plain)
            .is_none_or(|(_, to, _)| to != recipient)
        {
            continue;
        }
        match state(&e.path()) {
            SetState::Complete(_) => {}
            SetState::Incomplete {
                bundle,
                missing,
                total,
            } => out.push((
                e.path(),
                format!(
                    "{bundle}: waiting for {} of {total} volumes ({})",
                    missing.len(),
                    missing.join(", ")
                ),
            )),
            SetState::Unreadable(reason) => out.push((
                e.path(),
                format!("{name}: unreadable volume index: {reason}"),
            )),
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_file(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let p = dir.join(berth_bundle::naming::bundle_file_name("hq", "alice", 3));
        fs::write(&p, &data).unwrap();
        (p, data)
    }

    #[test]
    fn split_then_join_gives_the_same_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (p, data) = bundle_file(d.path(), 10_000);
        let index = split(&p, 4096).unwrap().unwrap();
        assert!(!p.exists());
        assert_eq!(set_files(&index).len(), 4, "index + 3 pieces");
        let out = tempfile::tempdir().unwrap();
        let joined = join(&index, out.path()).unwrap();
        assert_eq!(fs::read(joined).unwrap(), data);
        remove_set(&index).unwrap();
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn small_files_are_not_split() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = bundle_file(d.path(), 100);
        assert!(split(&p, 4096).unwrap().is_none());
        assert!(p.exists());
    }

    #[test]
    fn missing_short_and_damaged_pieces_are_refused_and_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (p, _) = bundle_file(d.path(), 10_000);
        let index = split(&p, 4096).unwrap().unwrap();
        let second = d.path().join(volume::volume_name(
            &berth_bundle::naming::bundle_file_name("hq", "alice", 3),
            2,
        ));
        let good = fs::read(&second).unwrap();
        let out = tempfile::tempdir().unwrap();

        fs::remove_file(&second).unwrap();
        assert!(matches!(state(&index), SetState::Incomplete { .. }));
        assert_eq!(incomplete(d.path(), "alice").unwrap().len(), 1);
        assert!(matches!(
            join(&index, out.path()),
            Err(EngineError::Volume { .. })
        ));

        fs::write(&second, &good[..100]).unwrap();
        assert!(matches!(state(&index), SetState::Incomplete { .. }));

        let mut damaged = good.clone();
        damaged[7] ^= 1;
        fs::write(&second, &damaged).unwrap();
        assert!(matches!(state(&index), SetState::Complete(_)));
        let e = join(&index, out.path()).unwrap_err();
        assert!(e.is_permanent() && e.to_string().contains("sha256"), "{e}");
        assert_eq!(
            fs::read_dir(out.path()).unwrap().count(),
            0,
            "nothing half-joined"
        );

        fs::write(&index, "garbage = [").unwrap();
        assert!(matches!(state(&index), SetState::Unreadable(_)));
        assert!(join(&index, out.path()).is_err());
    }
}
