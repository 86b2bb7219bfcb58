//! What ties a site's own files together (issue 16 part 3): `berth.toml` says which site
//! this folder is (role, name), `keys/site.key` is its key, and `data.db` records the same
//! three in `berth_meta` (`role`, `name`, `site_key`). A site is opened only when they agree,
//! so a missing or empty database is never silently re-created (central's bundles would
//! then be refused as "not trusted"), and another site's database copied in, or a
//! `berth.toml` edited to another role or name, is refused with both sides named.
//!
//! [`mismatch`] decides from what was read (no I/O); [`ensure`] is the shell `Site::open`
//! runs, and `verify` reports the same findings without writing anything.

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::store;
use crate::store::meta_keys;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `data.db` records of the site it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// `berth_meta.role`.
    pub role: Option<String>,
    /// `berth_meta.name`.
    pub name: Option<String>,
    /// `berth_meta.site_key`: the site's public key (hex) when it was last opened.
    pub key: Option<String>,
}

/// Reads what the database records.
pub fn recorded(conn: &Connection) -> Result<Recorded> {
    Ok(Recorded {
        role: store::meta(conn, meta_keys::ROLE)?,
        name: store::meta(conn, meta_keys::NAME)?,
        key: store::meta(conn, meta_keys::SITE_KEY)?,
    })
}

/// Refuses a database file that is missing or empty (before SQLite would create one).
pub fn check_file(db: &Path) -> Result<()> {
    let refuse = |reason: &str| {
        Err(EngineError::SiteFiles {
            path: db.to_path_buf(),
            reason: format!(
                "{reason}; berth does not create a new one, which would hold none of this \
                 site's rows or its trust in its peers. Put the site's database back (from a \
                 backup), or create a new site with `berth init` (a node: and enroll it again)"
            ),
        })
    };
    match std::fs::metadata(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse("the site's database is missing")
        }
        Err(e) => Err(EngineError::io(db, e)),
        Ok(m) if m.len() == 0 && !wal_has_content(db) => refuse("the site's database is empty"),
        Ok(_) => Ok(()),
    }
}

fn wal_has_content(db: &Path) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(Path::new(&wal)).is_ok_and(|m| m.len() > 0)
}

/// Whether the database holds berth's tables at all.
pub fn has_berth_tables(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'berth_meta')",
        [],
        |r| r.get(0),
    )?)
}

/// What does not match between `berth.toml` (`config`), the site's keys (`keys`: the current
/// public key first, then the keys it retired, hex) and what the database records. `None`
/// when everything recorded matches (a value not recorded yet matches anything).
pub fn mismatch(config: &Config, keys: &[String], rec: &Recorded) -> Option<String> {
    let mut out = Vec::new();
    if let Some(role) = rec.role.as_deref().filter(|r| *r != config.role.as_str()) {
        out.push(format!(
            "berth.toml says this is a {} site, the database belongs to a {role} site",
            config.role.as_str()
        ));
    }
    if let Some(name) = rec.name.as_deref().filter(|n| *n != config.name) {
        out.push(format!(
            "berth.toml names the site {:?}, the database belongs to site {name:?}",
            config.name
        ));
    }
    if let Some(key) = rec.key.as_deref().filter(|k| !keys.iter().any(|o| o == k)) {
        out.push(format!(
            "the database belongs to the site with key {}, but keys/site.key is {}",
            short(key),
            keys.first().map_or("missing", |k| short(k))
        ));
    }
    (!out.is_empty()).then(|| {
        format!(
            "{}: another site's database copied in, or berth.toml or keys/ changed? Put back \
             the files that belong together; berth changes none of them",
            out.join("; ")
        )
    })
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

/// The site's public keys: `current` (hex), then those it retired (`keys/chain.toml`).
pub fn site_keys(dir: &Path, current: String) -> Result<Vec<String>> {
    let mut keys = vec![current];
    keys.extend(chain(dir)?.into_iter().map(|l| l.old));
    Ok(keys)
}

/// Refuses a database that does not belong to this site, and records what an older site
/// (or one opened for the first time since this check exists) did not record yet: the
/// role and name when its peers agree with the role, and the current key.
pub fn ensure(conn: &Connection, db: &Path, config: &Config, keys: &[String]) -> Result<()> {
    let refuse = |reason: String| EngineError::SiteFiles {
        path: db.to_path_buf(),
        reason,
    };
    if !has_berth_tables(conn)? {
        return Err(refuse(
            "this SQLite database holds no berth tables: it is not a berth site's database; \
             put the site's own data.db back"
                .into(),
        ));
    }
    let rec = recorded(conn)?;
    if let Some(reason) = mismatch(config, keys, &rec) {
        return Err(refuse(reason));
    }
    if rec.role.is_none() {
        // A node's only peer is central; central's peers are nodes.
        let same_role: i64 = conn.query_row(
            "SELECT COUNT(*) FROM berth_peers WHERE role = ?1",
            [config.role.as_str()],
            |r| r.get(0),
        )?;
        if same_role > 0 {
            return Err(refuse(format!(
                "the database records no role, and its peers are those of another kind of \
                 site than berth.toml's {}",
                config.role.as_str()
            )));
        }
        store::set_meta(conn, meta_keys::ROLE, config.role.as_str())?;
    }
    if rec.name.is_none() {
        store::set_meta(conn, meta_keys::NAME, &config.name)?;
    }
    // A retired key (central rotated it) is followed to the current one.
    if let Some(current) = keys.first()
        && rec.key.as_deref() != Some(current)
    {
        store::set_meta(conn, meta_keys::SITE_KEY, current)?;
    }
    Ok(())
}

/// The chain file in a central site's folder.
pub const CHAIN_FILE: &str = "chain.toml";

/// One rotation: `new` replaces `old`, signed by `old`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The retired public key (hex).
    pub old: String,
    /// Its successor (hex).
    pub new: String,
    /// When (Unix seconds).
    pub at: i64,
    /// ed25519 signature by `old` over [`crate::keychain::link_message`], hex.
    pub sig: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChainFile {
    #[serde(default)]
    pub(crate) link: Vec<Link>,
}

pub(crate) fn keys_dir(dir: &Path) -> PathBuf {
    dir.join("keys")
}

/// The rotations of a site so far (empty when never rotated).
pub fn chain(dir: &Path) -> Result<Vec<Link>> {
    let path = keys_dir(dir).join(CHAIN_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(&path, e)),
    };
    let f: ChainFile = toml::from_str(&text).map_err(|e| EngineError::Config {
        path,
        reason: e.to_string(),
    })?;
    Ok(f.link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Role;

    fn config(role: Role, name: &str) -> Config {
        toml::from_str(&format!("role = {:?}\nname = {name:?}\n", role.as_str())).unwrap()
    }

    fn rec(role: Option<&str>, name: Option<&str>, key: Option<&str>) -> Recorded {
        Recorded {
            role: role.map(str::to_string),
            name: name.map(str::to_string),
            key: key.map(str::to_string),
        }
    }

    #[test]
    fn mismatch_names_both_sides_and_accepts_what_is_not_recorded_yet() {
        let keys = ["aa".repeat(32), "bb".repeat(32)];
        let alice = config(Role::Node, "alice");
        assert_eq!(mismatch(&alice, &keys, &rec(None, None, None)), None);
        let same = rec(Some("node"), Some("alice"), Some(&keys[0]));
        assert_eq!(mismatch(&alice, &keys, &same), None);
        let retired = rec(Some("node"), Some("alice"), Some(&keys[1]));
        assert_eq!(mismatch(&alice, &keys, &retired), None);
        let bob = mismatch(&alice, &keys, &rec(Some("node"), Some("bob"), None)).unwrap();
        assert!(
            bob.contains("\"alice\"") && bob.contains("\"bob\""),
            "{bob}"
        );
        let hq = mismatch(&alice, &keys, &rec(Some("central"), Some("hq"), None)).unwrap();
        assert!(
            hq.contains("node site") && hq.contains("central site"),
            "{hq}"
        );
        let other = "cc".repeat(32);
        let k = mismatch(&alice, &keys, &rec(None, None, Some(&other))).unwrap();
        assert!(k.contains("cccccccc") && k.contains("aaaaaaaa"), "{k}");
    }
}
