//! Writing files so that no reader ever sees half of one: the content goes to `NAME.part`
//! in the same folder, is flushed, then renamed into place (and the folder entry flushed
//! where the platform allows). Readers of exchange folders ignore `.part` names.

use crate::error::{EngineError, Result};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Writes `folder/name` atomically: the content goes to `name.part` in the same folder, is
/// flushed to disk, then renamed into place (and the folder entry flushed where the platform
/// allows).
pub fn write_atomic(
    folder: &Path,
    name: &str,
    fill: impl FnOnce(File) -> Result<File>,
) -> Result<PathBuf> {
    let part = write_part(folder, name, fill)?;
    rename_part(&part, &folder.join(name))
}

/// The first half of [`write_atomic`]: writes and flushes `folder/name.part` (removed again
/// if `fill` fails) and returns its path. Readers ignore it until [`rename_part`].
pub fn write_part(
    folder: &Path,
    name: &str,
    fill: impl FnOnce(File) -> Result<File>,
) -> Result<PathBuf> {
    fs::create_dir_all(folder).map_err(|e| EngineError::io(folder, e))?;
    let part = folder.join(format!("{name}.part"));
    let file = File::create(&part).map_err(|e| EngineError::io(&part, e))?;
    let result = fill(file).and_then(|f| f.sync_all().map_err(|e| EngineError::io(&part, e)));
    if let Err(e) = result {
        let _ = fs::remove_file(&part);
        return Err(e);
    }
    Ok(part)
}

/// The second half of [`write_atomic`]: renames a complete `.part` file into place.
pub fn rename_part(part: &Path, dest: &Path) -> Result<PathBuf> {
    fs::rename(part, dest).map_err(|e| EngineError::io(dest, e))?;
    if let Some(folder) = dest.parent() {
        sync_dir(folder);
    }
    Ok(dest.to_path_buf())
}

/// Removes the files of `folder` that `which` selects (a file already gone is no error; a
/// missing folder holds nothing).
pub fn remove_files(folder: &Path, which: impl Fn(&Path) -> bool) -> Result<()> {
    let entries = match fs::read_dir(folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EngineError::io(folder, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| EngineError::io(folder, e))?.path();
        if which(&path) {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(&path, e)),
            }
        }
    }
    Ok(())
}

/// Copies a file into `folder` atomically, keeping its name.
pub fn copy_into(src: &Path, folder: &Path) -> Result<PathBuf> {
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_atomic(folder, &name, |mut out| {
        let mut input = File::open(src).map_err(|e| EngineError::io(src, e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| EngineError::io(src, e))?;
        Ok(out)
    })
}

/// Whether an I/O error says the file system or folder may not be written.
pub fn is_read_only(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Moves a file into `folder` (rename, or copy and remove across file systems).
pub fn move_into(src: &Path, folder: &Path) -> Result<PathBuf> {
    fs::create_dir_all(folder).map_err(|e| EngineError::io(folder, e))?;
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = folder.join(&name);
    if fs::rename(src, &dest).is_err() {
        copy_into(src, folder)?;
        fs::remove_file(src).map_err(|e| EngineError::io(src, e))?;
    }
    Ok(dest)
}

#[cfg(unix)]
pub(crate) fn sync_dir(folder: &Path) {
    // Best effort: makes the rename durable on Unix file systems; not possible on Windows.
    if let Ok(d) = File::open(folder) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
pub(crate) fn sync_dir(_folder: &Path) {}
