//! The migration history as a folder under version control (`migrations.toml` and one SQL
//! file per migration): exported, read back and imported.

use super::apply::{apply_here, checked_name};
use crate::error::{EngineError, Result};
use crate::evolve::history::{self, Migration};
use crate::site::Site;
use rusqlite::Connection;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The index file of an exported history.
pub const INDEX_FILE: &str = "migrations.toml";

/// One migration in an exported history's index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// Its version.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// The SQL file beside the index.
    pub file: String,
    /// sha256 of the SQL file (64 hex digits).
    pub sha256: String,
    /// Schema checksum it starts from.
    pub checksum_before: String,
    /// Schema checksum it leads to.
    pub checksum_after: String,
    /// Software level it needs.
    pub software_level: String,
    /// Foreign keys off while it runs.
    pub foreign_keys_off: bool,
    /// Rename hints.
    #[serde(default)]
    pub renames: Vec<String>,
    /// Where it was created.
    pub origin: String,
    /// When (seconds since the epoch).
    pub created: i64,
    /// Its executable step, if any: the program is the file `stored` beside the index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<IndexExec>,
}

/// An executable step in an exported history's index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexExec {
    /// The command.
    pub command: Vec<String>,
    /// The program's file name when it runs.
    pub file: String,
    /// The file beside the index holding the program.
    pub stored: String,
    /// sha256 of the program.
    pub sha256: String,
    /// The admin key that signed it (hex), empty if not signed yet.
    #[serde(default)]
    pub admin_key: String,
    /// The admin's signature (hex), empty if not signed yet.
    #[serde(default)]
    pub signature: String,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Index {
    format: u32,
    #[serde(default)]
    migration: Vec<IndexEntry>,
}

fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    let s: String = s.chars().take(40).collect();
    if s.is_empty() { "migration".into() } else { s }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes the site's migration history into `dir` as plain files a team commits to its
/// source repository: `NNNN_name.sql` per migration and `migrations.toml`, the index with
/// each file's sha256 and the schema checksums. Files already there with the same content
/// are left alone. Returns the files written.
pub fn export_dir(conn: &Connection, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut index = Index {
        format: 1,
        migration: Vec::new(),
    };
    let mut written = Vec::new();
    for m in history::migrations(conn)? {
        let file = format!("{:04}_{}.sql", m.version, slug(&m.name));
        let path = dir.join(&file);
        let same = std::fs::read(&path).is_ok_and(|b| b == m.sql.as_bytes());
        if !same {
            crate::transport::write_atomic(dir, &file, |mut f| {
                f.write_all(m.sql.as_bytes())
                    .map_err(|e| EngineError::io(&path, e))?;
                Ok(f)
            })?;
            written.push(path);
        }
        let exec = match &m.exec {
            Some(step) => {
                let stored = format!("{:04}_exec_{}", m.version, step.file);
                let bytes = step.bytes()?;
                let path = dir.join(&stored);
                if std::fs::read(&path).ok().as_deref() != Some(bytes.as_slice()) {
                    crate::transport::write_atomic(dir, &stored, |mut f| {
                        f.write_all(&bytes).map_err(|e| EngineError::io(&path, e))?;
                        Ok(f)
                    })?;
                    written.push(path);
                }
                Some(IndexExec {
                    command: step.command.clone(),
                    file: step.file.clone(),
                    stored,
                    sha256: step.sha256.clone(),
                    admin_key: step.admin_key.clone(),
                    signature: step.signature.clone(),
                })
            }
            None => None,
        };
        index.migration.push(IndexEntry {
            exec,
            version: m.version,
            name: m.name,
            file,
            sha256: sha256_hex(m.sql.as_bytes()),
            checksum_before: m.checksum_before,
            checksum_after: m.checksum_after,
            software_level: m.software_level,
            foreign_keys_off: m.foreign_keys_off,
            renames: m.renames,
            origin: m.origin,
            created: m.created,
        });
    }
    let text = format!(
        "# berth migration history: one SQL file per migration; checksums are sha256.\n# Written by `berth migration export`; read by `berth migration import`.\n{}",
        toml::to_string(&index).map_err(|e| EngineError::Config {
            path: dir.join(INDEX_FILE),
            reason: e.to_string(),
        })?
    );
    let index_path = dir.join(INDEX_FILE);
    crate::transport::write_atomic(dir, INDEX_FILE, |mut f| {
        f.write_all(text.as_bytes())
            .map_err(|e| EngineError::io(&index_path, e))?;
        Ok(f)
    })?;
    written.push(index_path);
    Ok(written)
}

/// Largest SQL file of an exported history read.
const MAX_SQL_FILE: u64 = 64 << 20;

/// Reads an exported history (`migrations.toml` and its SQL files), checking every file's
/// hash, that versions run 1, 2, ... in order, and that each starts where the previous
/// ended.
pub fn read_dir(dir: &Path) -> Result<Vec<Migration>> {
    let index_path = dir.join(INDEX_FILE);
    let bad = |reason: String| EngineError::Config {
        path: index_path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&index_path).map_err(|e| EngineError::io(&index_path, e))?;
    let index: Index = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if index.format != 1 {
        return Err(bad(format!(
            "format {} is not understood (expected 1)",
            index.format
        )));
    }
    let mut out: Vec<Migration> = Vec::new();
    for (i, e) in index.migration.into_iter().enumerate() {
        let expected = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if e.version != expected {
            return Err(bad(format!(
                "migration {} is listed where version {expected} belongs: versions must run 1, 2, ... in order",
                e.version
            )));
        }
        if let Some(prev) = out.last()
            && prev.checksum_after != e.checksum_before
        {
            return Err(bad(format!(
                "migration {} starts from schema {} but migration {} ends at {}",
                e.version, e.checksum_before, prev.version, prev.checksum_after
            )));
        }
        if e.file.contains(['/', '\\']) || e.file.starts_with('.') || !e.file.ends_with(".sql") {
            return Err(bad(format!(
                "migration {}: file name {:?} is not a plain .sql name",
                e.version, e.file
            )));
        }
        let path = dir.join(&e.file);
        let meta = std::fs::metadata(&path).map_err(|err| EngineError::io(&path, err))?;
        if meta.len() > MAX_SQL_FILE {
            return Err(bad(format!(
                "{} is larger than {MAX_SQL_FILE} bytes",
                e.file
            )));
        }
        let bytes = std::fs::read(&path).map_err(|err| EngineError::io(&path, err))?;
        if sha256_hex(&bytes) != e.sha256 {
            return Err(bad(format!(
                "{} does not match its sha256 in the index (edited after export?)",
                e.file
            )));
        }
        let sql = String::from_utf8(bytes).map_err(|_| bad(format!("{} is not UTF-8", e.file)))?;
        for hint in &e.renames {
            hint.parse::<crate::evolve::diff::Rename>()?;
        }
        let exec = match &e.exec {
            Some(x) => {
                if x.stored.contains(['/', '\\']) || x.stored.starts_with('.') {
                    return Err(bad(format!(
                        "migration {}: program file {:?} is not a plain name",
                        e.version, x.stored
                    )));
                }
                let path = dir.join(&x.stored);
                let bytes = std::fs::read(&path).map_err(|err| EngineError::io(&path, err))?;
                let mut step = history::ExecStep::new(x.command.clone(), &x.file, &bytes)?;
                if step.sha256 != x.sha256 {
                    return Err(bad(format!(
                        "{} does not match its sha256 in the index (edited after export?)",
                        x.stored
                    )));
                }
                step.admin_key.clone_from(&x.admin_key);
                step.signature.clone_from(&x.signature);
                Some(step)
            }
            None => None,
        };
        out.push(Migration {
            exec,
            version: e.version,
            name: checked_name(&e.name)?,
            sql,
            checksum_before: e.checksum_before,
            checksum_after: e.checksum_after,
            software_level: e.software_level,
            foreign_keys_off: e.foreign_keys_off,
            origin: e.origin,
            created: e.created,
            applied: None,
            renames: e.renames,
        });
    }
    Ok(out)
}

/// What [`import_dir`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Imported {
    /// Versions the site already had (identical).
    pub known: Vec<i64>,
    /// Versions applied now.
    pub applied: Vec<i64>,
}

/// Takes new migrations from an exported history (a checkout of the team's repository):
/// refused when the history disagrees with the site's (a version the site has with other
/// SQL or checksums). New ones are applied in order (at central, journaled for the nodes).
pub fn import_dir(site: &mut Site, dir: &Path) -> Result<Imported> {
    let theirs = read_dir(dir)?;
    let ours = history::migrations(&site.conn)?;
    let version = history::version(&site.conn)?;
    let mut done = Imported::default();
    for m in &theirs {
        if let Some(mine) = ours.iter().find(|o| o.version == m.version) {
            if mine.sql != m.sql
                || mine.checksum_before != m.checksum_before
                || mine.checksum_after != m.checksum_after
            {
                return Err(EngineError::Config {
                    path: dir.join(INDEX_FILE),
                    reason: format!(
                        "migration {} ({:?}) differs from this site's migration {} ({:?}): the histories disagree; nothing was imported",
                        m.version, m.name, mine.version, mine.name
                    ),
                });
            }
            done.known.push(m.version);
        } else if m.version <= version {
            // Before this site's baseline (a node enrolled later): nothing to check against.
            done.known.push(m.version);
        }
    }
    for m in theirs.iter().filter(|m| m.version > version) {
        apply_here(site, m)?;
        done.applied.push(m.version);
    }
    Ok(done)
}
