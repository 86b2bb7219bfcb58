//! Creating a central site ([`Site::init_central`]). It records the schema's baseline in the
//! schema history, so it sits above schema evolution in the layers of `lib.rs`; opening a
//! site and creating a node ([`crate::site`]) need nothing of it.

use crate::error::{EngineError, Result};
use crate::site::{CentralInit, Config, Role, Site, checked_model, io, nul_terminated, read_text};
use crate::store::meta_keys;
use crate::table::Policy;
use crate::{capture, evolve, schema, store};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

fn default_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

impl Site {
    /// Creates a central site: configuration, keys, and a database with the user's schema,
    /// berth's tables and the capture triggers. Returns the site and warnings for the user.
    pub fn init_central(init: &CentralInit<'_>) -> Result<(Site, Vec<String>)> {
        let name = init
            .name
            .map_or_else(|| default_name(init.dir), str::to_string);
        let config = Config {
            role: Role::Central,
            name,
            default_policy: Policy::CentralWins,
            policies: BTreeMap::new(),
            allow_executables: false,
            retention: Default::default(),
            routing: Default::default(),
        };
        let schema_sql = read_text(init.schema)?;
        let data_sql = init.data.map(read_text).transpose()?;
        if init.dir.join("data.db").exists() {
            return Err(EngineError::Config {
                path: init.dir.join("data.db"),
                reason: "a database already exists here".into(),
            });
        }
        // Check the schema in memory first so a refused schema leaves nothing behind.
        let probe = Connection::open_in_memory()?;
        probe
            .execute_batch(&schema_sql)
            .map_err(|e| EngineError::SchemaFile {
                path: init.schema.to_path_buf(),
                source: e,
            })?;
        // The model first: it says which tables are local and which name their key, and its
        // findings name every table without a key at once.
        let mut classes = schema::Classes::default();
        if let Some(d) = init.docking {
            classes = checked_model(&read_text(d)?, &probe, d)?.classes();
        }
        let tables = schema::tables_with(&probe, &classes)?;
        Site::create(init.dir, &config)?;
        if let Some(d) = init.docking {
            let dest = init.dir.join("docking.toml");
            io(d, fs::copy(d, &dest))?;
        }
        let mut site = Site::open_with(init.dir, true)?;
        let site_key = site.public_key().to_hex();
        let tx = site.conn.transaction()?;
        tx.execute_batch(&schema_sql)
            .map_err(|e| EngineError::SchemaFile {
                path: init.schema.to_path_buf(),
                source: e,
            })?;
        if let Some(data) = &data_sql {
            tx.execute_batch(&nul_terminated(data))
                .map_err(|e| EngineError::SchemaFile {
                    path: init.data.map(Path::to_path_buf).unwrap_or_default(),
                    source: e,
                })?;
        }
        classes.save(&tx)?;
        capture::install(&tx, &tables)?;
        store::set_meta(&tx, meta_keys::ROLE, "central")?;
        store::set_meta(&tx, meta_keys::NAME, &site.config.name)?;
        store::set_meta(&tx, meta_keys::SITE_KEY, &site_key)?;
        // Schema version 0: the baseline snapshot, its checksum in `berth_meta`.
        evolve::history::baseline(&tx, 0)?;
        store::set_meta(&tx, meta_keys::CLOCK, "1")?;
        tx.commit()?;
        let warnings = tables
            .iter()
            .filter(|t| t.rowid_key)
            .map(|t| {
                format!(
                    "table {} has an INTEGER PRIMARY KEY: rows inserted at different sites will \
                     collide on the same number; prefer a TEXT id (UUID) for tables nodes insert into",
                    t.name
                )
            })
            .collect();
        site.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok((site, warnings))
    }
}
