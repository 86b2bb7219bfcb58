//! The final form of an outgoing bundle (SPEC 1.9, 3.2, 3.4). A bundle to be sealed or cut
//! into volumes is written plain into the site's staging folder (`DIR/outgoing/`), never
//! into the exchange folder; only its final form goes there: the sealed file `B.age`, a
//! volume set (every piece, then its index), or the plain file, each with the
//! write-then-rename rule. So a crash leaves, for that bundle, either nothing a reader lists
//! or its final form, never a plain bundle where a sealed one was asked, nor a file larger
//! than the volume size. The staging folder is emptied when the next export begins.

use crate::error::{EngineError, Result};
use crate::site::Site;
use crate::{seal, transport, volumes};
use berth_bundle::{BundleHeader, BundleWriter, Compression, PublicKey};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The staging folder inside a site folder.
pub const STAGING: &str = "outgoing";

/// The form outgoing bundles take in the exchange folder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Form<'a> {
    /// Seal each bundle to this key (its one recipient's), `B.age`.
    pub(crate) seal_to: Option<&'a PublicKey>,
    /// Cut a bundle file larger than this into volumes.
    pub(crate) volume_size: Option<u64>,
}

impl Form<'_> {
    /// Whether the bundle goes through the staging folder (anything but plain and whole).
    pub(crate) fn staged(&self) -> bool {
        self.seal_to.is_some() || self.volume_size.is_some()
    }
}

/// Empties the site's staging folder of anything an earlier crash left in it (the site's
/// lock is held: no other process writes there). A missing folder is left missing.
pub(crate) fn clear_staging(site: &Site) -> Result<()> {
    transport::remove_files(&site.folder(STAGING), |_| true)
}

/// Puts the final form of `staged` (a complete signed bundle in the staging folder, under
/// its canonical name) into `via`: sealed when `form` says so, cut into volumes when larger
/// than its volume size, else moved there whole; nothing staged is left. `after_piece` is
/// called after each piece of a volume set is in place (where a crash can be injected).
/// Returns the files now in `via`: the one file, or a set's index and pieces.
pub(crate) fn deliver(
    staged: &Path,
    via: &Path,
    form: Form<'_>,
    after_piece: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<PathBuf>> {
    let folder = staged.parent().unwrap_or(Path::new("."));
    let file = match form.seal_to {
        Some(key) => {
            let sealed = seal::seal_into(staged, key, folder)?;
            fs::remove_file(staged).map_err(|e| EngineError::io(staged, e))?;
            sealed
        }
        None => staged.to_path_buf(),
    };
    let index = match form.volume_size {
        Some(size) => volumes::split_with(&file, via, size, after_piece)?,
        None => None,
    };
    let out = match index {
        Some(index) => {
            fs::remove_file(&file).map_err(|e| EngineError::io(&file, e))?;
            volumes::set_files(&index)
        }
        None => vec![place(&file, via)?],
    };
    Ok(out)
}

/// Moves a staged file (complete and flushed) into `via` under its name: one rename where
/// both folders are on one file system (the folder entry flushed, as 1.9 does), else a
/// write-then-rename copy and the staged file removed.
fn place(file: &Path, via: &Path) -> Result<PathBuf> {
    let name = file.file_name().unwrap_or_default();
    let dest = via.join(name);
    if fs::rename(file, &dest).is_ok() {
        transport::sync_dir(via);
        return Ok(dest);
    }
    let copied = transport::copy_into(file, via)?;
    fs::remove_file(file).map_err(|e| EngineError::io(file, e))?;
    Ok(copied)
}

/// Writes one bundle file into `via` and returns its path.
pub(crate) fn write_bundle(
    site: &Site,
    via: &Path,
    file_name: &str,
    header: BundleHeader,
    entries: Vec<(&str, &str, File)>,
) -> Result<PathBuf> {
    write_bundle_at(site, via, file_name, header, entries, None)
}

/// [`write_bundle`] with a deflate level of choice (1 fastest .. 9 smallest; `None`: the
/// writer's default). Extracts, large and written once, use a fast level.
pub(crate) fn write_bundle_at(
    site: &Site,
    via: &Path,
    file_name: &str,
    header: BundleHeader,
    entries: Vec<(&str, &str, File)>,
    level: Option<u32>,
) -> Result<PathBuf> {
    transport::write_atomic(via, file_name, bundle_filler(site, header, entries, level))
}

/// Writes a signed bundle into the file it is given.
pub(crate) fn bundle_filler<'a>(
    site: &'a Site,
    header: BundleHeader,
    entries: Vec<(&'a str, &'a str, File)>,
    level: Option<u32>,
) -> impl FnOnce(File) -> Result<File> + 'a {
    move |f| {
        let mut w = BundleWriter::new(f, header)?;
        if let Some(level) = level {
            w.set_deflate_level(level)?;
        }
        for (name, kind, data) in entries {
            w.add_entry(
                name,
                kind,
                Compression::Deflate,
                std::io::BufReader::new(data),
            )?;
        }
        let (f, _manifest) = w.finish(site.key())?;
        Ok(f)
    }
}
