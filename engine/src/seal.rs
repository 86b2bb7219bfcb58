//! Sealed bundles on disk (SPEC part 3): an outgoing bundle for one site is encrypted to that
//! site's key (`B.age`, the age format, `berth_bundle::seal`), and a sealed bundle taken in is
//! opened into the spool under its plain name before it is verified like any other.
//!
//! Opening writes `B.part` in the spool and renames it only when the whole ciphertext
//! authenticated, so a tampered, truncated or foreign file never reaches the spool; it goes
//! to quarantine with a reason instead.

use crate::error::{EngineError, Result};
use crate::site::Site;
use crate::transport::{self, Found, Taken};
use crate::{peer, volumes};
use berth_bundle::seal::{self, SealError};
use berth_bundle::{Bundle, Limits, PublicKey, SecretKey};
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

fn label(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sealed_error(file: &Path, source: SealError) -> EngineError {
    EngineError::Sealed {
        file: file.to_path_buf(),
        source,
    }
}

/// Seals a bundle this site wrote (`path`, a canonical name) to its one recipient and
/// replaces it by `B.age`. A bundle for several sites, or for `all`, stays signed only and
/// its path is returned unchanged.
pub fn seal_file(site: &Site, path: &Path) -> Result<PathBuf> {
    let name = label(path);
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let bundle = Bundle::open(file, &name, &Limits::default())?;
    let [to] = bundle.manifest().recipients.as_slice() else {
        return Ok(path.to_path_buf());
    };
    if to == berth_bundle::naming::BROADCAST_RECIPIENT {
        return Ok(path.to_path_buf());
    }
    let key = if to == site.name() {
        site.public_key()
    } else {
        PublicKey::from_hex(&peer::require(&site.conn, to)?.public_key)?
    };
    let folder = path.parent().unwrap_or(Path::new("."));
    let sealed = seal_into(path, &key, folder)?;
    fs::remove_file(path).map_err(|e| EngineError::io(path, e))?;
    Ok(sealed)
}

/// Seals the bundle file `path` (a canonical name `B`) to `key` as `folder/B.age`, with the
/// write-then-rename rule; `path` is left as it is.
pub(crate) fn seal_into(path: &Path, key: &PublicKey, folder: &Path) -> Result<PathBuf> {
    transport::write_atomic(folder, &seal::sealed_name(&label(path)), |out| {
        let input = BufReader::new(File::open(path).map_err(|e| EngineError::io(path, e))?);
        let w = seal::seal(input, key, BufWriter::new(out)).map_err(|e| sealed_error(path, e))?;
        w.into_inner()
            .map_err(|e| EngineError::io(path, e.into_error()))
    })
}

/// Opens sealed bytes from `input` into `spool` as `plain_name` with the first of `keys`
/// that opens it, then checks that the signed manifest names this site (`me`) as its only
/// recipient (the binding of SPEC 3.4).
pub fn open_into<R: Read + std::io::Seek>(
    keys: &[SecretKey],
    me: &str,
    input: R,
    source: &Path,
    plain_name: &str,
    spool: &Path,
) -> Result<PathBuf> {
    let mut input = input;
    // Find the key the file is sealed to (a retired key of central's, for a node that has
    // not yet learned of a rotation) without writing anything.
    let mut key = None;
    for k in keys {
        input.rewind().map_err(|e| EngineError::io(source, e))?;
        match seal::check_complete(&mut input, k) {
            Err(SealError::NotForThisKey) => continue,
            _ => {
                key = Some(k);
                break;
            }
        }
    }
    let key = key.ok_or_else(|| sealed_error(source, SealError::NotForThisKey))?;
    input.rewind().map_err(|e| EngineError::io(source, e))?;
    let out = transport::write_atomic(spool, plain_name, |out| {
        let mut w = BufWriter::new(out);
        seal::open(input, key, &mut w).map_err(|e| sealed_error(source, e))?;
        w.into_inner()
            .map_err(|e| EngineError::io(spool, e.into_error()))
    })?;
    let refused = |reason: String| EngineError::Refused {
        bundle: label(source),
        reason,
    };
    let check = File::open(&out)
        .map_err(|e| EngineError::io(&out, e))
        .and_then(|f| Ok(Bundle::open(f, plain_name, &Limits::default())?))
        .and_then(|b| match b.manifest().recipients.as_slice() {
            [only] if only == me => Ok(()),
            other => Err(refused(format!(
                "sealed to this site, but its signed manifest is addressed to {other:?}"
            ))),
        });
    if let Err(e) = check {
        let _ = fs::remove_file(&out);
        return Err(e);
    }
    Ok(out)
}

fn quarantine(path: &Path, folder: &Path, me: &str, err: &EngineError) -> Result<()> {
    let dest = transport::move_into(path, folder)?;
    let reason = folder.join(format!("{}.reason.txt", label(&dest)));
    let text = format!(
        "This bundle can never be applied at site {me}.\nReason: {err}\nNothing from it was applied.\n"
    );
    fs::write(&reason, text).map_err(|e| EngineError::io(&reason, e))
}

/// Whether a file found in an exchange folder reads as whole, so that taking it cannot
/// catch it half-written or half-copied (SPEC 3.5 step 2): a plain bundle's zip directory
/// and manifest read (a prefix of a zip never does: its directory is at the end); a sealed
/// one's last chunk authenticates as the last one with one of `keys` (one sealed to another
/// key counts as whole: it is quarantined with that reason). `Err` says what does not read.
/// Volume sets are listed only once every piece has its size, and are not checked here.
pub fn reads_whole(keys: &[SecretKey], path: &Path) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    if seal::parse_sealed_name(&label(path)).is_none() {
        return Bundle::open(file, &label(path), &Limits::default())
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let mut input = BufReader::new(file);
    let mut last = SealError::NotForThisKey;
    for k in keys {
        std::io::Seek::rewind(&mut input).map_err(|e| e.to_string())?;
        match seal::check_complete(&mut input, k) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    match last {
        SealError::NotForThisKey => Ok(()),
        other => Err(other.to_string()),
    }
}

/// Takes a found bundle into `spool` and removes it from its folder: whole or volume set,
/// sealed or not. A sealed one is opened with the first of `keys` it is sealed to; one that
/// cannot be opened (another recipient, damaged, tampered) is moved to `quarantine` with a
/// reason.
pub fn take(
    keys: &[SecretKey],
    me: &str,
    f: &Found,
    spool: &Path,
    quarantine_dir: &Path,
) -> Result<Taken> {
    let file = if transport::is_volume_set(f) {
        label(&f.path)
            .trim_end_matches(berth_bundle::volume::INDEX_SUFFIX)
            .to_string()
    } else {
        label(&f.path)
    };
    let Some(plain) = seal::parse_sealed_name(&file).map(str::to_string) else {
        return transport::take_into(f, spool, quarantine_dir);
    };
    // A sealed set is joined first (hash-checked), into the spool under its sealed name.
    let (sealed_path, joined) = if transport::is_volume_set(f) {
        match volumes::join(&f.path, spool) {
            Ok(p) => (p, true),
            Err(e) if e.is_permanent() => {
                let reason = e.to_string();
                volumes::quarantine_set(&f.path, quarantine_dir, &reason)?;
                return Ok(Taken::Quarantined { reason });
            }
            Err(e) => return Err(e),
        }
    } else {
        (f.path.clone(), false)
    };
    let input = File::open(&sealed_path).map_err(|e| EngineError::io(&sealed_path, e))?;
    let result = open_into(keys, me, BufReader::new(input), &sealed_path, &plain, spool);
    match result {
        Ok(p) => {
            if joined {
                let _ = fs::remove_file(&sealed_path);
            }
            transport::remove(f)?;
            Ok(Taken::Spooled(p))
        }
        Err(e) if e.is_permanent() => {
            quarantine(&sealed_path, quarantine_dir, me, &e)?;
            if joined {
                transport::remove(f)?;
            }
            Ok(Taken::Quarantined {
                reason: e.to_string(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Writes `data` into a spool file (a helper for attachments that are not sealed).
pub fn spool_bytes(spool: &Path, name: &str, data: &[u8]) -> Result<PathBuf> {
    transport::write_atomic(spool, name, |mut f| {
        f.write_all(data)
            .map_err(|e| EngineError::io(spool.join(name), e))?;
        Ok(f)
    })
}
