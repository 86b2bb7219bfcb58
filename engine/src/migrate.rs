//! Distribution of schema migrations (seed 000 claims 48-59; seed 004 "software level"):
//! migrations travel in central's streams, in order with the changes, and every bundle says
//! which schema its changes were captured under.
//!
//! - At central a migration (created there, accepted from a developer, imported from version
//!   control) is journaled as an `M` entry of `berth_log` in the transaction that applies it.
//!   The router sends it to every node, so each node's stream holds the changes captured
//!   before it, the migration, then the changes captured after it. A node that lacks several
//!   migrations gets exactly those, in order, and nothing is ever re-ordered around them.
//! - A node applies an `M` inside the bundle's transaction ([`apply_at_node`]): the SQL, the
//!   capture triggers regenerated for the new schema at commit, and its pending local changes
//!   translated ([`Translation`]: renamed tables and columns followed, dropped columns'
//!   values dropped). A migration needing a newer software level than the node's waits: the
//!   bundle is held with the reason until the upgrade is installed.
//! - Every bundle carries `[extensions.schema] version` (and `schema_checksum`): the schema
//!   its first change was captured under; central's also carry `latest`, central's own
//!   version. A receiver applies changes captured under its own schema, translates changes
//!   captured under an older schema it migrated from, and holds anything else.

use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
use crate::evolve::history::{self, Migration};
use crate::evolve::snapshot::Snapshot;
use crate::site::{Role, Site};
use crate::store;
use crate::value::{Row, log_row};
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the manifest extension.
pub const EXTENSION: &str = "schema";

/// A site's schema: version and snapshot checksum (SPEC 5.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaState {
    /// Schema version (0 before any migration).
    pub version: i64,
    /// Snapshot checksum.
    pub checksum: String,
}

/// The site's current schema state, as recorded in `berth_meta`.
pub fn state(conn: &Connection) -> Result<SchemaState> {
    let version = match store::meta(conn, "schema_version")? {
        Some(v) => v.parse().unwrap_or(0),
        None => history::version(conn)?,
    };
    Ok(SchemaState {
        version,
        checksum: store::meta(conn, "schema_checksum")?.unwrap_or_default(),
    })
}

/// The `[extensions.schema]` table: the version the bundle's first change was captured
/// under, and (central) central's current version.
pub fn extension(version: i64, latest: Option<i64>) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("version".into(), toml::Value::Integer(version));
    if let Some(l) = latest {
        t.insert("latest".into(), toml::Value::Integer(l));
    }
    toml::Value::Table(t)
}

/// Reads `[extensions.schema]`: `(version, latest)`. `None` when absent or malformed.
pub fn read_extension(m: &berth_bundle::Manifest) -> Option<(i64, Option<i64>)> {
    read_extensions(&m.extensions)
}

fn read_extensions(ext: &BTreeMap<String, toml::Value>) -> Option<(i64, Option<i64>)> {
    let t = ext.get(EXTENSION)?;
    let version = t.get("version")?.as_integer()?;
    let latest = t.get("latest").and_then(toml::Value::as_integer);
    (version >= 0).then_some((version, latest))
}

/// The wire form of a migration: `new` of an `M` change.
pub fn to_row(m: &Migration) -> Row {
    let mut r = Row::new();
    r.insert("version".into(), Json::from(m.version));
    r.insert("name".into(), Json::from(m.name.clone()));
    r.insert("sql".into(), Json::from(m.sql.clone()));
    r.insert(
        "checksum_before".into(),
        Json::from(m.checksum_before.clone()),
    );
    r.insert(
        "checksum_after".into(),
        Json::from(m.checksum_after.clone()),
    );
    r.insert(
        "software_level".into(),
        Json::from(m.software_level.clone()),
    );
    r.insert(
        "foreign_keys_off".into(),
        Json::from(i64::from(m.foreign_keys_off)),
    );
    r.insert("origin".into(), Json::from(m.origin.clone()));
    r.insert("created".into(), Json::from(m.created));
    r.insert(
        "renames".into(),
        Json::from(serde_json::to_string(&m.renames).unwrap_or_else(|_| "[]".into())),
    );
    r.insert(
        "exec".into(),
        m.exec
            .as_ref()
            .and_then(|e| serde_json::to_string(e).ok())
            .map_or(Json::Null, Json::from),
    );
    r
}

/// Reads the migration of an `M` change; the reason when it is malformed.
pub fn from_change(ch: &Change) -> std::result::Result<Migration, String> {
    let r = ch.new.as_ref().ok_or("migration without its record")?;
    let text = |k: &str| {
        r.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("migration record without {k}"))
    };
    let int = |k: &str| {
        r.get(k)
            .and_then(Json::as_i64)
            .ok_or_else(|| format!("migration record without {k}"))
    };
    let version = int("version")?;
    if version < 1 {
        return Err(format!("migration version {version} is not positive"));
    }
    let renames: Vec<String> =
        serde_json::from_str(&text("renames")?).map_err(|e| format!("migration renames: {e}"))?;
    for hint in &renames {
        hint.parse::<crate::evolve::diff::Rename>()
            .map_err(|e| e.to_string())?;
    }
    let exec = match r.get("exec") {
        None | Some(Json::Null) => None,
        Some(Json::String(t)) => {
            let step: history::ExecStep =
                serde_json::from_str(t).map_err(|e| format!("migration exec: {e}"))?;
            step.check().map_err(|e| e.to_string())?;
            Some(step)
        }
        Some(_) => return Err("migration exec: not a string".into()),
    };
    Ok(Migration {
        exec,
        version,
        name: text("name")?,
        sql: text("sql")?,
        checksum_before: text("checksum_before")?,
        checksum_after: text("checksum_after")?,
        software_level: text("software_level")?,
        foreign_keys_off: int("foreign_keys_off")? != 0,
        origin: text("origin")?,
        created: int("created")?,
        applied: None,
        renames,
    })
}

/// Journals migration `m` in central's log (for every node), in the caller's transaction.
pub fn journal(conn: &Connection, m: &Migration) -> Result<()> {
    let new = serde_json::to_string(&to_row(m)).map_err(|e| EngineError::Config {
        path: "berth_log".into(),
        reason: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO berth_log(tbl, pk, op, new) VALUES ('', '[]', 'M', ?1)",
        params![new],
    )?;
    Ok(())
}

/// How names of one schema version map to the next: renamed tables and columns followed,
/// dropped tables and columns gone. Built from a migration's rename hints and the schema it
/// leads to.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Old table name (lower case) -> new table name, for tables that exist afterwards.
    tables: BTreeMap<String, String>,
    /// Table name (new name, lower case) -> old column (lower case) -> new column name.
    columns: BTreeMap<String, BTreeMap<String, String>>,
    /// Table (new name, lower case) -> its name and its columns afterwards (lower case ->
    /// name).
    after: BTreeMap<String, (String, BTreeMap<String, String>)>,
}

impl Translation {
    /// The translation of migration `m` into the schema `after` it leads to.
    pub fn new(m: &Migration, after: &Snapshot) -> Translation {
        let mut tr = Translation::default();
        for t in &after.tables {
            tr.after.insert(
                t.name.to_ascii_lowercase(),
                (
                    t.name.clone(),
                    t.columns
                        .iter()
                        .map(|c| (c.name.to_ascii_lowercase(), c.name.clone()))
                        .collect(),
                ),
            );
        }
        let hints: Vec<crate::evolve::diff::Rename> =
            m.renames.iter().filter_map(|h| h.parse().ok()).collect();
        for h in &hints {
            if let crate::evolve::diff::Rename::Table { from, to } = h {
                tr.tables
                    .insert(from.to_ascii_lowercase(), to.to_ascii_lowercase());
            }
        }
        for h in &hints {
            if let crate::evolve::diff::Rename::Column { table, from, to } = h {
                // The hint names the table by its old or its new name.
                let lower = table.to_ascii_lowercase();
                let new_table = tr.tables.get(&lower).cloned().unwrap_or(lower);
                tr.columns
                    .entry(new_table)
                    .or_default()
                    .insert(from.to_ascii_lowercase(), to.to_ascii_lowercase());
            }
        }
        tr
    }

    /// The table's name afterwards, `None` when it is gone.
    pub fn table(&self, old: &str) -> Option<String> {
        let lower = old.to_ascii_lowercase();
        let new = self.tables.get(&lower).unwrap_or(&lower);
        self.after.get(new).map(|(name, _)| name.clone())
    }

    /// The column's name afterwards in `new_table`, `None` when it is gone.
    pub fn column(&self, new_table: &str, old: &str) -> Option<String> {
        let t = new_table.to_ascii_lowercase();
        let lower = old.to_ascii_lowercase();
        let renamed = self
            .columns
            .get(&t)
            .and_then(|m| m.get(&lower))
            .cloned()
            .unwrap_or(lower);
        self.after.get(&t)?.1.get(&renamed).cloned()
    }

    /// Translates a row's column names (values of dropped columns are dropped).
    pub fn row(&self, new_table: &str, row: Row) -> Row {
        row.into_iter()
            .filter_map(|(c, v)| self.column(new_table, &c).map(|n| (n, v)))
            .collect()
    }

    /// Translates a wire change; `None` when its table is gone.
    pub fn change(&self, mut ch: Change) -> Option<Change> {
        if matches!(ch.op, Op::A | Op::S | Op::M) {
            return Some(ch);
        }
        let t = self.table(&ch.t)?;
        ch.old = ch.old.map(|r| self.row(&t, r));
        ch.new = ch.new.map(|r| self.row(&t, r));
        ch.t = t;
        Some(ch)
    }

    /// Translates this site's own log (its pending changes, not yet acknowledged): table and
    /// column names follow the migration; changes to a table that is gone are dropped (the
    /// newest log row stays, so positions never restart).
    pub fn log(&self, conn: &Connection) -> Result<()> {
        let rows: Vec<(i64, String, Option<Row>, Option<Row>)> = conn
            .prepare("SELECT pos, tbl, old, new FROM berth_log WHERE tbl <> '' ORDER BY pos")?
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    log_row(r.get_ref(2)?),
                    log_row(r.get_ref(3)?),
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let last = store::max_pos(conn)?;
        let text = |r: Row| serde_json::to_string(&r).unwrap_or_default();
        for (pos, tbl, old, new) in rows {
            let Some(t) = self.table(&tbl) else {
                if pos < last {
                    conn.execute("DELETE FROM berth_log WHERE pos = ?1", params![pos])?;
                }
                continue;
            };
            let old = old.map(|r| text(self.row(&t, r)));
            let new = new.map(|r| text(self.row(&t, r)));
            conn.execute(
                // What is no row stays as it is: the old key a key change's insert holds in
                // `old`, a settled pre-image's `void` (SPEC 2.4, 2.11).
                "UPDATE berth_log SET tbl = ?2, old = COALESCE(?3, old), new = COALESCE(?4, new)
                 WHERE pos = ?1",
                params![pos, t, old, new],
            )?;
        }
        Ok(())
    }
}

/// The translations from schema `version` (with `checksum`) to this site's current schema,
/// when this site migrated from it; `None` when it did not (the changes must wait).
pub fn translations_from(
    conn: &Connection,
    version: i64,
    checksum: Option<&str>,
) -> Result<Option<Vec<Translation>>> {
    let current = state(conn)?;
    if version > current.version {
        return Ok(None);
    }
    let ms: Vec<Migration> = history::migrations(conn)?
        .into_iter()
        .filter(|m| m.version > version && m.version <= current.version)
        .collect();
    let complete = ms.len() == usize::try_from(current.version - version).unwrap_or(0);
    let starts_there = match (ms.first(), checksum) {
        (Some(m), Some(c)) => m.checksum_before == c,
        _ => true,
    };
    if !complete || !starts_there {
        return Ok(None);
    }
    let mut out = Vec::new();
    for m in &ms {
        let Some(after) = history::snapshot_at(conn, m.version)? else {
            return Ok(None);
        };
        out.push(Translation::new(m, &after));
    }
    Ok(Some(out))
}

/// Applies a migration from central's stream at a node, inside the bundle's transaction.
/// `Ok(None)` when the node already has it (it wrote it, or imported it); otherwise the
/// translation of names it made. Waits ([`EngineError::Wait`]) when the node's software is
/// older than the migration needs, or when the migration does not follow the node's schema.
pub fn apply_at_node(conn: &Connection, m: &Migration) -> Result<Option<Translation>> {
    let have = state(conn)?;
    if m.version <= have.version {
        return match history::migration(conn, m.version)? {
            Some(mine) if mine.checksum_after != m.checksum_after => Err(EngineError::Wait {
                reason: format!(
                    "central's migration {} ({:?}) differs from the one this site has under the \
                     same version ({:?}); the schema histories diverged",
                    m.version, m.name, mine.name
                ),
            }),
            _ => Ok(None),
        };
    }
    if !crate::upgrade::node::software_gate(conn, &m.software_level)? {
        return Err(EngineError::Wait {
            reason: format!(
                "migration {} ({:?}) needs software level {}, this site has {}; it applies by \
                 itself once that upgrade is installed",
                m.version,
                m.name,
                m.software_level,
                crate::upgrade::node::installed_level(conn)?
            ),
        });
    }
    if m.version != have.version + 1 {
        return Err(EngineError::Wait {
            reason: format!(
                "migration {} arrived but this site is at schema version {}",
                m.version, have.version
            ),
        });
    }
    history::apply_in_tx(conn, m)?;
    let after = crate::evolve::snapshot::read(conn)?;
    let tr = Translation::new(m, &after);
    tr.log(conn)?;
    Ok(Some(tr))
}

/// Applies migration `m` to central's master database and journals it for every node, in
/// one transaction. What central's log holds from before is routed first, so every change
/// captured under the old schema reaches the nodes in the old schema, before the migration.
pub fn apply_at_central(site: &Site, m: &Migration) -> Result<()> {
    site.require(Role::Central)?;
    let catalog = site.catalog()?;
    let model = site.docking_model()?;
    history::apply_migration_with(
        &site.conn,
        m,
        |c| Ok(crate::partial::route(c, &catalog, model.as_ref())?),
        |c| Ok(journal(c, m)?),
    )?;
    Ok(())
}

/// Creates the next migration from a target schema: computed from the live schema to
/// `target`, then applied (at central also journaled for the nodes, [`apply_at_central`]).
/// This is how central's schema changes: never behind berth's back.
pub fn create_from_target(
    site: &Site,
    target: &Snapshot,
    new: &history::NewMigration<'_>,
) -> Result<Migration> {
    if let Some(last) = history::latest(&site.conn)? {
        let live = crate::evolve::snapshot::read(&site.conn)?.checksum()?;
        if live != last.checksum {
            return Err(crate::evolve::Error::Drift {
                version: last.version,
                recorded: last.checksum,
                current: live,
            }
            .into());
        }
    }
    let live = crate::evolve::snapshot::read(&site.conn)?;
    let version = history::version(&site.conn)?;
    let plan = crate::evolve::diff::diff(&live, target, &new.diff)?;
    if plan.is_empty() {
        return Err(crate::evolve::Error::NothingToMigrate {
            version,
            checksum: plan.checksum_before,
        }
        .into());
    }
    let m = Migration {
        exec: None,
        version: version + 1,
        name: checked_name(new.name)?,
        sql: plan.body(),
        checksum_before: plan.checksum_before.clone(),
        checksum_after: plan.checksum_after.clone(),
        software_level: new.software_level.to_string(),
        foreign_keys_off: plan.foreign_keys_off,
        origin: new.origin.to_string(),
        created: store::now(),
        applied: None,
        renames: new.diff.renames.iter().map(ToString::to_string).collect(),
    };
    if site.role() == Role::Central {
        apply_at_central(site, &m)?;
    } else {
        history::apply_migration(&site.conn, &m)?;
    }
    Ok(m)
}

fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(crate::evolve::Error::Snapshot {
            reason: format!("migration name {name:?}: use 1-100 printable characters"),
        }
        .into());
    }
    Ok(name.to_string())
}

/// The entry of a submitted migration.
pub const SUBMIT_ENTRY: &str = "payload/migration.json";
/// The content kind of a submitted migration.
pub const KIND_MIGRATION: &str = "migration";

/// File name of a submitted migration: `{site}_to_{central}_migration_{version:04}.zip`. It
/// is not a bundle name (1.8), so no dock or watcher takes it: central's administrator
/// accepts it explicitly ([`accept`]).
pub fn submit_file_name(site: &str, central: &str, version: i64) -> String {
    format!("{site}_to_{central}_migration_{version:04}.zip")
}

/// Writes migration `version` of this site (a developer's copy) as a signed bundle for
/// `central` into `out`; returns its path. Signed with `admin` when given (required for a
/// migration with an executable step, whose statement the admin signs too), else with the
/// site's key.
pub fn submit(
    site: &Site,
    central: &str,
    version: i64,
    out: &Path,
    admin: Option<&berth_bundle::SecretKey>,
) -> Result<PathBuf> {
    crate::site::check_name(central)?;
    let mut m = history::migration(&site.conn, version)?.ok_or_else(|| EngineError::Refused {
        bundle: String::new(),
        reason: format!(
            "this site has no migration {version} (see `berth migration list --site {}`)",
            site.dir.display()
        ),
    })?;
    m.applied = None;
    let key = admin.unwrap_or(site.key());
    if m.exec.is_some() {
        let admin = admin.ok_or_else(|| EngineError::Refused {
            bundle: String::new(),
            reason: format!(
                "migration {version} carries an executable step: it must be signed with an admin key (--admin-key FILE)"
            ),
        })?;
        let statement = m.exec.as_ref().map(|e| e.statement(&m)).unwrap_or_default();
        if let Some(step) = m.exec.as_mut() {
            step.admin_key = admin.public().to_hex();
            step.signature = hex::encode(admin.sign(&statement));
        }
    }
    let mut h = crate::dock::header(site, central, None)?;
    h.sender.key_id = key.public().key_id();
    crate::submission::name_key(&mut h, KIND_MIGRATION, &key.public());
    let body = serde_json::to_vec_pretty(&m).map_err(|e| EngineError::Config {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let name = submit_file_name(site.name(), central, version);
    crate::transport::write_atomic(out, &name, |f| {
        let mut w = berth_bundle::BundleWriter::new(f, h)?;
        w.add_bytes(
            SUBMIT_ENTRY,
            KIND_MIGRATION,
            berth_bundle::Compression::Deflate,
            &body,
        )?;
        let (f, _manifest) = w.finish(key)?;
        Ok(f)
    })
}

/// What [`accept`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// The migration, as applied.
    pub migration: Migration,
    /// Who submitted it.
    pub submitter: String,
    /// The key id that signed it (compare it with the submitter's `berth keys show`).
    pub key_id: String,
}

/// Largest submitted migration read.
const MAX_SUBMITTED: u64 = 64 << 20;

/// Central's administrator accepts a submitted migration: the bundle is verified with the key
/// it introduces (a registered node must have signed with its registered key), addressed to
/// this central; the migration must be the next version and start from central's schema;
/// its SQL must lead to the checksum it promises. It is then applied and journaled.
pub fn accept(site: &mut Site, file: &Path) -> Result<Accepted> {
    site.require(Role::Central)?;
    let mut sub = crate::submission::Submission::open(site, file, KIND_MIGRATION, "migration")?;
    let submitter = sub.manifest.sender.site.clone();
    if let Some(p) = crate::peer::get(&site.conn, &submitter)?
        && p.public_key != sub.key.to_hex()
    {
        return Err(sub.refused(format!(
            "signed by a key that is not the one registered for {submitter}"
        )));
    }
    let mut verified = sub.verify(KIND_MIGRATION)?;
    let body = verified.read_entry(SUBMIT_ENTRY, MAX_SUBMITTED)?;
    let m: Migration = serde_json::from_slice(&body).map_err(|e| EngineError::BadPayload {
        bundle: sub.label.clone(),
        entry: SUBMIT_ENTRY.into(),
        reason: e.to_string(),
    })?;
    let m = Migration {
        name: checked_name(&m.name)?,
        applied: None,
        ..m
    };
    for hint in &m.renames {
        hint.parse::<crate::evolve::diff::Rename>()?;
    }
    apply_here(site, &m)?;
    Ok(Accepted {
        migration: m,
        submitter,
        key_id: sub.key.key_id().to_string(),
    })
}

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

/// Changes a developer's copy with `sql` (capture suspended, so columns the capture triggers
/// name can be dropped) and freezes the change as the next migration, in one transaction:
/// when the migration cannot be made, the SQL is undone too.
pub fn create_by_sql(site: &Site, sql: &str, new: &history::NewMigration<'_>) -> Result<Migration> {
    let tx =
        rusqlite::Transaction::new_unchecked(&site.conn, rusqlite::TransactionBehavior::Immediate)?;
    crate::capture::suspend(&tx)?;
    crate::evolve::apply::run_statements(&tx, sql)?;
    let m = history::create_migration(&tx, new)?;
    tx.commit()?;
    Ok(m)
}

/// Where a migration's backup is kept while its executable step runs.
pub fn backup_path(site: &Site, what: &str) -> PathBuf {
    site.dir.join("backups").join(format!("before-{what}.db"))
}

/// Copies the site's database to `path` (SQLite's online backup).
pub fn backup(site: &Site, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(&site.dir);
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let _ = std::fs::remove_file(path);
    site.conn
        .backup(rusqlite::MAIN_DB, path, rusqlite::backup::NO_PROGRESS)?;
    Ok(())
}

/// Puts the database back as it was in the backup at `path`.
pub fn restore(site: &mut Site, path: &Path) -> Result<()> {
    site.conn
        .restore(rusqlite::MAIN_DB, path, rusqlite::backup::NO_PROGRESS)?;
    Ok(())
}

/// Runs migration `m`'s executable step against the site's database, which holds no open
/// transaction: the program file is written into `migrations/exec-NNNN/` and the command runs
/// from there with `BERTH_DATABASE`, `BERTH_SITE_DIR`, `BERTH_SITE_NAME`,
/// `BERTH_MIGRATION_VERSION` and `BERTH_MIGRATION_NAME` set. Its writes are captured like
/// any application's (each site runs the step, so the same values meet at central and
/// merge as equal). Output goes to `output.log` there.
pub fn run_exec(site: &Site, m: &Migration) -> Result<()> {
    let Some(step) = &m.exec else {
        return Ok(());
    };
    let failed = |reason: String| EngineError::ExecStep {
        version: m.version,
        reason,
    };
    step.check().map_err(|e| failed(e.to_string()))?;
    let dir = site
        .dir
        .join("migrations")
        .join(format!("exec-{:04}", m.version));
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let bytes = step.bytes()?;
    let program_path = dir.join(&step.file);
    crate::transport::write_atomic(&dir, &step.file, |mut f| {
        f.write_all(&bytes)
            .map_err(|e| EngineError::io(&program_path, e))?;
        Ok(f)
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&program_path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| EngineError::io(&program_path, e))?;
    }
    let log = dir.join("output.log");
    let out = std::fs::File::create(&log).map_err(|e| EngineError::io(&log, e))?;
    let err = out.try_clone().map_err(|e| EngineError::io(&log, e))?;
    // The first word names the shipped file, or a program on PATH: never leave a relative
    // name to the platform's lookup rules.
    let program = if step.command[0] == step.file {
        program_path.clone().into_os_string()
    } else {
        step.command[0].clone().into()
    };
    let status = std::process::Command::new(program)
        .args(&step.command[1..])
        .current_dir(&dir)
        .env("BERTH_DATABASE", site.db_path())
        .env("BERTH_SITE_DIR", &site.dir)
        .env("BERTH_SITE_NAME", site.name())
        .env("BERTH_MIGRATION_VERSION", m.version.to_string())
        .env("BERTH_MIGRATION_NAME", &m.name)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status();
    let tail = crate::upgrade::node::tail(&log);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(failed(format!(
            "{}; output: {tail}",
            s.code().map_or_else(
                || "killed by a signal".to_string(),
                |c| format!("exit code {c}")
            )
        ))),
        Err(e) => Err(failed(format!(
            "could not start {:?}: {e}",
            step.command[0]
        ))),
    }
}

/// Whether this site may run `m`'s executable step: the site allows executables, and an
/// admin key signed the step (at central: one registered there).
pub fn check_exec(site: &Site, m: &Migration) -> Result<()> {
    let Some(step) = &m.exec else {
        return Ok(());
    };
    let refused = |reason: String| EngineError::Refused {
        bundle: format!("migration {}", m.version),
        reason,
    };
    step.check()?;
    if !step.signed(m) {
        return Err(refused(
            "its executable step is not signed by an admin key (berth migration submit --admin-key)".into(),
        ));
    }
    if site.role() == Role::Central
        && !crate::keychain::admins(&site.conn)?
            .iter()
            .any(|a| a.public_key == step.admin_key)
    {
        return Err(refused(format!(
            "its executable step is signed by key {}, which is not a registered admin key (berth keys admin add)",
            berth_bundle::PublicKey::from_hex(&step.admin_key)
                .map(|k| k.key_id().to_string())
                .unwrap_or_default()
        )));
    }
    if !site.config.allow_executables {
        return Err(refused(
            "it carries an executable step and this site does not allow executables \
             (allow_executables = true in berth.toml)"
                .into(),
        ));
    }
    Ok(())
}

/// Applies a migration at this site in its own transaction (at central also journaled for
/// the nodes, [`apply_at_central`]); with an executable step, a backup is taken first, the
/// step runs after the migration commits, and the backup is restored if it fails.
pub fn apply_here(site: &mut Site, m: &Migration) -> Result<()> {
    check_exec(site, m)?;
    let plain = |site: &Site| -> Result<()> {
        if site.role() == Role::Central {
            apply_at_central(site, m)
        } else {
            Ok(history::apply_migration(&site.conn, m)?)
        }
    };
    if m.exec.is_none() {
        return plain(site);
    }
    let path = backup_path(site, &format!("migration-{:04}", m.version));
    backup(site, &path)?;
    let result = plain(site).and_then(|()| run_exec(site, m));
    if result.is_err() {
        restore(site, &path)?;
    }
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::snapshot;

    fn migration(renames: &[&str]) -> Migration {
        Migration {
            version: 2,
            name: "m".into(),
            sql: "SELECT 1".into(),
            checksum_before: "a".into(),
            checksum_after: "b".into(),
            software_level: "1".into(),
            foreign_keys_off: false,
            origin: "dev".into(),
            created: 5,
            applied: None,
            renames: renames.iter().map(|s| s.to_string()).collect(),
            exec: None,
        }
    }

    #[test]
    fn an_executable_step_is_checked_and_its_signature_binds_the_migration() {
        let mut m = migration(&[]);
        let admin = berth_bundle::SecretKey::generate();
        let mut step =
            history::ExecStep::new(vec!["sh".into(), "x.sh".into()], "x.sh", b"exit 0\n").unwrap();
        assert!(!step.signed(&m), "unsigned");
        step.admin_key = admin.public().to_hex();
        step.signature = hex::encode(admin.sign(&step.statement(&m)));
        assert!(step.signed(&m));
        // The signature covers the SQL and the program.
        m.sql = "DROP TABLE t".into();
        assert!(!step.signed(&m));
        let mut other = step.clone();
        other.program = hex::encode(b"rm -rf /\n");
        assert!(other.check().is_err(), "program no longer matches its hash");
        for bad in ["../x.sh", ".hidden", "a/b", "c:x"] {
            assert!(
                history::ExecStep::new(vec!["sh".into()], bad, b"x").is_err(),
                "{bad}"
            );
        }
        assert!(history::ExecStep::new(vec![], "x.sh", b"x").is_err());
        assert!(
            history::ExecStep::new(
                vec!["sh".into()],
                "x.sh",
                &vec![0u8; history::MAX_PROGRAM + 1]
            )
            .is_err()
        );
        // It travels in the migration record.
        m.exec = Some(step);
        let mut ch = change("", Op::M, &[], &[]);
        ch.new = Some(to_row(&m));
        assert_eq!(from_change(&ch).unwrap(), m);
    }

    fn change(t: &str, op: Op, old: &[(&str, i64)], new: &[(&str, i64)]) -> Change {
        let row = |cols: &[(&str, i64)]| -> Option<Row> {
            (!cols.is_empty()).then(|| {
                cols.iter()
                    .map(|(c, v)| (c.to_string(), Json::from(*v)))
                    .collect()
            })
        };
        Change {
            pos: 1,
            t: t.into(),
            k: vec![Json::from(1)],
            op,
            old: row(old),
            new: row(new),
            o: None,
            c: 0,
            ack: None,
            seen: None,
        }
    }

    #[test]
    fn translation_follows_renames_and_drops_what_is_gone() {
        let after = snapshot::from_sql(
            "CREATE TABLE Deal(id INTEGER PRIMARY KEY, owner TEXT, amount REAL);
             CREATE TABLE kept(id INTEGER PRIMARY KEY, v);",
        )
        .unwrap();
        // opty became Deal; its sales_rep became owner (hint by the old table name); note
        // was dropped; gone was dropped.
        let tr = Translation::new(&migration(&["opty=Deal", "opty.sales_rep=owner"]), &after);
        let ch = tr
            .change(change(
                "opty",
                Op::U,
                &[("sales_rep", 1), ("note", 2)],
                &[("id", 1), ("sales_rep", 3), ("note", 4), ("amount", 5)],
            ))
            .unwrap();
        assert_eq!(ch.t, "Deal");
        assert_eq!(
            ch.old.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["owner"]
        );
        assert_eq!(
            ch.new.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["amount", "id", "owner"]
        );
        assert!(
            tr.change(change("gone", Op::D, &[("id", 1)], &[]))
                .is_none()
        );
        let kept = tr
            .change(change("KEPT", Op::I, &[], &[("id", 1), ("V", 2)]))
            .unwrap();
        assert_eq!(kept.t, "kept");
        assert_eq!(
            kept.new.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["id", "v"]
        );
        // The hint may name the table by its new name too.
        let tr = Translation::new(&migration(&["opty=Deal", "Deal.sales_rep=owner"]), &after);
        assert_eq!(tr.column("Deal", "SALES_REP").as_deref(), Some("owner"));
        // Markers, statements and migrations pass untouched.
        let m = change("", Op::A, &[], &[]);
        assert_eq!(tr.change(m.clone()), Some(m));
    }

    #[test]
    fn the_log_translation_keeps_what_is_no_row() {
        let after =
            snapshot::from_sql("CREATE TABLE Deal(id TEXT PRIMARY KEY, owner TEXT);").unwrap();
        let tr = Translation::new(&migration(&["opty=Deal", "opty.sales_rep=owner"]), &after);
        let conn = Connection::open_in_memory().unwrap();
        crate::store::install(&conn).unwrap();
        conn.execute_batch(
            r#"INSERT INTO berth_log(pos, tbl, pk, op, old, new) VALUES
                 (1, 'opty', '["a"]', 'D', '{"id":"a","sales_rep":"x"}', NULL),
                 (2, 'opty', '["b"]', 'I', '["a"]', NULL),
                 (3, 'opty', '["c"]', 'P', '{"id":"c","sales_rep":"y"}', 'void'),
                 (4, 'opty', '["d"]', 'U', '{"id":"d","sales_rep":"z"}', '{"id":"d","sales_rep":"w"}');"#,
        )
        .unwrap();
        tr.log(&conn).unwrap();
        let rows: Vec<(String, Option<String>, Option<String>)> = conn
            .prepare("SELECT tbl, old, new FROM berth_log ORDER BY pos")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let deal = |old: Option<&str>, new: Option<&str>| {
            (
                "Deal".to_string(),
                old.map(String::from),
                new.map(String::from),
            )
        };
        assert_eq!(
            rows,
            vec![
                deal(Some(r#"{"id":"a","owner":"x"}"#), None),
                // A key change's mark (the old key) and a settled pre-image's `void`.
                deal(Some(r#"["a"]"#), None),
                deal(Some(r#"{"id":"c","owner":"y"}"#), Some("void")),
                deal(
                    Some(r#"{"id":"d","owner":"z"}"#),
                    Some(r#"{"id":"d","owner":"w"}"#)
                ),
            ]
        );
    }

    #[test]
    fn a_migration_record_round_trips_and_malformed_ones_are_named() {
        let m = migration(&["t.a=b"]);
        let mut ch = change("", Op::M, &[], &[]);
        ch.new = Some(to_row(&m));
        assert_eq!(from_change(&ch).unwrap(), m);
        let cases: [(&str, Json, &str); 4] = [
            ("version", Json::from(0), "not positive"),
            ("version", Json::from("2"), "without version"),
            ("renames", Json::from("not json"), "renames"),
            ("renames", Json::from(r#"["=x"]"#), "rename"),
        ];
        for (field, value, expect) in cases {
            let mut bad = ch.clone();
            if let Some(r) = bad.new.as_mut() {
                r.insert(field.into(), value);
            }
            let err = from_change(&bad).unwrap_err();
            assert!(err.contains(expect), "{field}: {err}");
        }
        let mut missing = ch.clone();
        if let Some(r) = missing.new.as_mut() {
            r.remove("sql");
        }
        assert!(from_change(&missing).unwrap_err().contains("sql"));
        ch.new = None;
        assert!(from_change(&ch).is_err());
        assert!(ch.check().is_err());
    }

    #[test]
    fn the_schema_extension_reads_back_and_rejects_nonsense() {
        let mut m = BTreeMap::new();
        assert_eq!(read_extensions(&m), None);
        m.insert(EXTENSION.to_string(), extension(3, Some(5)));
        assert_eq!(read_extensions(&m), Some((3, Some(5))));
        m.insert(EXTENSION.into(), extension(-1, None));
        assert_eq!(read_extensions(&m), None);
        m.insert(EXTENSION.into(), toml::Value::String("3".into()));
        assert_eq!(read_extensions(&m), None);
    }
}
