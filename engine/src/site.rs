//! A site on disk: its folder layout, configuration, key pair and database.
//!
//! ```text
//! DIR/berth.toml        role, name, collision policies
//! DIR/data.db           the user's tables and berth's own berth_* tables
//! DIR/keys/site.key     the secret key (owner-only on Unix); never leaves the site
//! DIR/keys/site.pub     the public key
//! DIR/spool/            bundles taken from exchange folders, verified and applied from here
//! DIR/archive/          bundles applied
//! DIR/quarantine/       bundles that can never apply, each with NAME.reason.txt
//! DIR/berth.lock        held while a dock or watch runs
//! ```

pub use crate::config::{Config, Role};
use crate::error::{EngineError, Result};
use crate::store::meta_keys;
use crate::table::{Catalog, Policy};
use crate::{identity, schema, store};
use berth_bundle::{PublicKey, SecretKey};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// An open site. Holds the site lock while it lives.
#[derive(Debug)]
pub struct Site {
    /// The site folder.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: Config,
    /// The database connection.
    pub conn: Connection,
    key: SecretKey,
    _lock: File,
}

/// `sql` with a NUL byte appended, for `execute_batch` on a large script. SQLite copies
/// the rest of a script that is not NUL-terminated before parsing each statement
/// (`sqlite3Prepare`), which makes a script of many statements quadratic: a 50 MB data file
/// took 12 s instead of 2. With the NUL inside the length it reads the script in place, and
/// parsing ends at the NUL.
pub fn nul_terminated(sql: &str) -> String {
    let mut s = String::with_capacity(sql.len() + 1);
    s.push_str(sql);
    s.push('\0');
    s
}

/// What `init central` needs.
#[derive(Debug, Clone)]
pub struct CentralInit<'a> {
    /// The site folder to create.
    pub dir: &'a Path,
    /// The site name (defaults to the folder's name).
    pub name: Option<&'a str>,
    /// The schema file (SQL).
    pub schema: &'a Path,
    /// The docking model (kept for routing).
    pub docking: Option<&'a Path>,
    /// Initial data (SQL), loaded without being journaled.
    pub data: Option<&'a Path>,
}

pub(crate) fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| EngineError::io(path, e))
}

pub(crate) fn read_text(path: &Path) -> Result<String> {
    io(path, fs::read_to_string(path))
}

/// The docking model in `text` (from `path`), refused with every error `check` finds
/// against the schema in `conn`.
pub(crate) fn checked_model(
    text: &str,
    conn: &Connection,
    path: &Path,
) -> Result<crate::route::model::DockingModel> {
    let refuse = |findings: Vec<String>| EngineError::Docking {
        path: path.to_path_buf(),
        findings,
    };
    let errors: Vec<String> = crate::route::check::check_toml(text, conn)?
        .into_iter()
        .filter(|f| f.severity() == crate::route::check::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(refuse(errors));
    }
    crate::route::model::DockingModel::from_toml(text).map_err(|e| refuse(vec![e.to_string()]))
}

/// Checks a site or node name: well formed, and not `all`, which in a bundle's recipients
/// addresses every site (a new node's enrollment request goes `to_all`).
pub fn check_name(name: &str) -> Result<()> {
    if !berth_bundle::naming::is_valid_site_name(name) {
        return Err(EngineError::BadName {
            name: name.to_string(),
        });
    }
    if name == "all" {
        return Err(EngineError::ReservedName {
            name: name.to_string(),
            reason: "\"all\" addresses every site in a bundle's recipients (a new node's \
                     enrollment request is sent to all)"
                .into(),
        });
    }
    Ok(())
}

impl Site {
    /// Path of `berth.toml`.
    pub fn config_path(dir: &Path) -> PathBuf {
        dir.join("berth.toml")
    }

    /// Path of the database.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("data.db")
    }

    /// A working folder of the site (`spool`, `archive`, `quarantine`).
    pub fn folder(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Reads `berth.toml` of the site in `dir`.
    pub fn read_config(dir: &Path) -> Result<Config> {
        let cfg_path = Self::config_path(dir);
        if !cfg_path.exists() {
            return Err(EngineError::Config {
                path: cfg_path,
                reason: "not a berth site (no berth.toml); create one with `berth init`".into(),
            });
        }
        toml::from_str(&read_text(&cfg_path)?).map_err(|e| EngineError::Config {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })
    }

    /// Opens an existing site, taking its lock. Refuses a site whose files do not belong
    /// together (a missing or empty `data.db`, another site's database, a `berth.toml`
    /// whose role or name the database does not record: [`crate::identity`]).
    pub fn open(dir: &Path) -> Result<Site> {
        Self::open_with(dir, false)
    }

    /// [`Site::open`]; `creating`: the site is being created, its database is new.
    pub(crate) fn open_with(dir: &Path, creating: bool) -> Result<Site> {
        // Every path berth hands on (to install programs, executable steps, the demo's
        // checks) is absolute: they run in other folders than the caller's.
        let absolute = std::path::absolute(dir).map_err(|e| EngineError::io(dir, e))?;
        let dir = absolute.as_path();
        let config = Self::read_config(dir)?;
        let lock_path = dir.join("berth.lock");
        let lock = io(
            &lock_path,
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path),
        )?;
        // Another berth process on this site keeps the lock for as long as it works; a
        // process that is only starting a child (an install command, a foreign client) can
        // hold a copy of it for a moment. Wait briefly before calling the site busy.
        let mut tries = 0;
        while lock.try_lock().is_err() {
            tries += 1;
            if tries > 20 {
                return Err(EngineError::Busy {
                    path: dir.to_path_buf(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let key_path = dir.join("keys").join("site.key");
        let key = SecretKey::from_text(&read_text(&key_path)?)?;
        let db = dir.join("data.db");
        if !creating {
            identity::check_file(&db)?;
        }
        let conn = store::open(&db)?;
        if !creating {
            let keys = identity::site_keys(dir, key.public().to_hex())?;
            identity::ensure(&conn, &db, &config, &keys)?;
        }
        store::install(&conn)?;
        if config.role == Role::Node {
            // A partial replica may hold a row whose parent it does not see; central enforces
            // foreign keys, a node applies central's decisions as they come.
            conn.execute_batch("PRAGMA foreign_keys=OFF;")?;
        }
        let site = Site {
            dir: dir.to_path_buf(),
            config,
            conn,
            key,
            _lock: lock,
        };
        // Central reads its log by row: the contest of a node's change (merge::contest) and
        // latest-wins read a row's entries, which must not cost the whole log.
        if site.config.role == Role::Central
            || site.config.default_policy == Policy::LatestWins
            || site
                .config
                .policies
                .values()
                .any(|p| *p == Policy::LatestWins)
        {
            site.conn
                .execute_batch("CREATE INDEX IF NOT EXISTS berth_log_key ON berth_log(tbl, pk)")?;
        }
        Ok(site)
    }

    pub(crate) fn create(dir: &Path, config: &Config) -> Result<SecretKey> {
        check_name(&config.name)?;
        if Self::config_path(dir).exists() {
            return Err(EngineError::Config {
                path: Self::config_path(dir),
                reason: "a berth site already exists here".into(),
            });
        }
        for sub in ["keys", "spool", "archive", "quarantine"] {
            io(dir, fs::create_dir_all(dir.join(sub)))?;
        }
        let key = SecretKey::generate();
        write_secret(&dir.join("keys").join("site.key"), &key.to_text())?;
        let pub_path = dir.join("keys").join("site.pub");
        io(&pub_path, fs::write(&pub_path, key.public().to_text()))?;
        let text = toml::to_string(config).map_err(|e| EngineError::Config {
            path: Self::config_path(dir),
            reason: e.to_string(),
        })?;
        let cfg = Self::config_path(dir);
        io(&cfg, fs::write(&cfg, text))?;
        Ok(key)
    }

    /// Creates a node site with its own key; the database holds only berth's tables until the
    /// initial extract arrives.
    pub fn init_node(dir: &Path, name: &str) -> Result<Site> {
        let config = Config {
            role: Role::Node,
            name: name.to_string(),
            default_policy: Policy::CentralWins,
            policies: BTreeMap::new(),
            allow_executables: false,
            retention: Default::default(),
            routing: Default::default(),
        };
        Self::create(dir, &config)?;
        let site = Site::open_with(dir, true)?;
        store::set_meta(&site.conn, meta_keys::ROLE, "node")?;
        store::set_meta(&site.conn, meta_keys::NAME, name)?;
        store::set_meta(&site.conn, meta_keys::SITE_KEY, &site.public_key().to_hex())?;
        store::set_meta(&site.conn, meta_keys::CLOCK, "0")?;
        Ok(site)
    }

    /// The site's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The site's role.
    pub fn role(&self) -> Role {
        self.config.role
    }

    /// The site's secret key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The site's public key.
    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    /// The docking model (`docking.toml` in the site folder), if the site has one.
    pub fn docking_model(&self) -> Result<Option<crate::route::model::DockingModel>> {
        let path = self.dir.join("docking.toml");
        if !path.exists() {
            return Ok(None);
        }
        let text = read_text(&path)?;
        crate::route::model::DockingModel::from_toml(&text)
            .map(Some)
            .map_err(|e| EngineError::Docking {
                path,
                findings: vec![e.to_string()],
            })
    }

    /// Replaces the docking model of a central site (`berth docking apply`). The new model
    /// must pass `check` against the site's schema, and may not take a table out of
    /// `enterprise` (nodes hold those rows untracked, so they could not be removed). The
    /// next dock routes by it: rows arrive and leave as the new rules say.
    pub fn apply_docking(&self, file: &Path) -> Result<()> {
        self.require(Role::Central)?;
        let text = read_text(file)?;
        let new = checked_model(&text, &self.conn, file)?;
        if let Some(old) = self.docking_model()? {
            use crate::route::model::Visibility;
            let narrowed: Vec<String> = old
                .tables
                .iter()
                .filter(|(name, t)| {
                    t.visibility == Visibility::Enterprise
                        && new.tables.get(*name).is_some_and(|n| n.visibility != Visibility::Enterprise)
                })
                .map(|(_, t)| format!("table {} would stop being enterprise: nodes hold its rows untracked, so they cannot be removed; re-enroll the nodes instead", t.name))
                .collect();
            if !narrowed.is_empty() {
                return Err(EngineError::Docking {
                    path: file.to_path_buf(),
                    findings: narrowed,
                });
            }
        }
        // A table that exists keeps its class: a local table's rows differ at every site and
        // a replicated one's are in the nodes' logs, so neither can simply change sides.
        let (old, classes) = (schema::Classes::load(&self.conn)?, new.classes());
        let existing: std::collections::BTreeSet<String> =
            crate::route::check::Schema::read(&self.conn)?
                .tables
                .into_keys()
                .collect();
        let moved: Vec<String> = existing
            .iter()
            .filter(|t| old.is_local(t) != classes.is_local(t) || old.key(t) != classes.key(t))
            .map(|t| {
                format!(
                    "table {t} would change from {} to {}: a table that exists keeps whether it \
                     is local and its named key",
                    class_word(&old, t),
                    class_word(&classes, t)
                )
            })
            .collect();
        if !moved.is_empty() {
            return Err(EngineError::Docking {
                path: file.to_path_buf(),
                findings: moved,
            });
        }
        crate::transport::write_atomic(&self.dir, "docking.toml", |mut f| {
            use std::io::Write as _;
            f.write_all(text.as_bytes())
                .map_err(|e| EngineError::io(file, e))?;
            Ok(f)
        })?;
        classes.save(&self.conn)?;
        // The router's edges and instance sets follow the old model: the next routing pass
        // rebuilds them and moves rows in and out of the nodes accordingly.
        crate::route::model::request_resync(&self.conn)
    }

    /// The replicated tables with their policies.
    pub fn catalog(&self) -> Result<Catalog> {
        Catalog::load(
            &self.conn,
            &self.config.policies,
            self.config.default_policy,
        )
    }

    /// Fails unless the site has the role `expected`.
    pub fn require(&self, expected: Role) -> Result<()> {
        if self.role() == expected {
            Ok(())
        } else {
            Err(EngineError::WrongRole {
                expected: expected.as_str(),
                actual: self.role().as_str().into(),
            })
        }
    }
}

/// How a table is classed, in words for a message.
fn class_word(c: &schema::Classes, table: &str) -> String {
    match c.key(table) {
        _ if c.is_local(table) => "local".into(),
        Some(k) => format!("replicated by key ({})", k.join(", ")),
        None => "replicated by its PRIMARY KEY".into(),
    }
}

/// Writes a new secret file readable only by its owner (on Unix; on Windows the profile's ACLs apply).
pub fn write_secret(path: &Path, text: &str) -> Result<()> {
    let mut opts = File::options();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = io(path, opts.open(path))?;
    io(path, f.write_all(text.as_bytes()))?;
    io(path, f.sync_all())
}

#[cfg(test)]
mod tests {
    use super::{CentralInit, Site, nul_terminated};
    use crate::merge::contest::ROW_ENTRIES;

    /// Issue 20: central reads a row's entries of its log (the contest of a node's change)
    /// through an index by row, not by reading every entry after what the bundle saw, which
    /// cost every change the other nodes made: O(nodes) per bundle.
    #[test]
    fn central_reads_a_rows_log_entries_through_an_index() {
        let root = tempfile::tempdir().unwrap();
        let schema = root.path().join("schema.sql");
        std::fs::write(&schema, "CREATE TABLE t(id TEXT PRIMARY KEY, v INTEGER);").unwrap();
        let (hq, _) = Site::init_central(&CentralInit {
            dir: &root.path().join("hq"),
            name: Some("hq"),
            schema: &schema,
            docking: None,
            data: None,
        })
        .unwrap();
        let plan: Vec<String> = hq
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ROW_ENTRIES}"))
            .unwrap()
            .query_map(rusqlite::params!["t", "[1]", 0, "n", "hq"], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter().any(|d| d.contains(
                "SEARCH berth_log USING INDEX berth_log_key (tbl=? AND pk=? AND rowid>?)"
            )),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{plan:?}");
    }

    #[test]
    fn a_nul_terminated_script_runs_every_statement_and_still_reports_errors() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        c.execute_batch(&nul_terminated(
            "CREATE TABLE t(a); INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2); -- done\n",
        ))
        .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let err = c
            .execute_batch(&nul_terminated(
                "INSERT INTO t VALUES (3); INSERT INTO nope VALUES (1);",
            ))
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
