//! Central's side: publish and activate packages, carry announcements and files in each
//! node's bundles, take in the nodes' reports, show where every node stands.
//!
//! Seed: "a copy of the upgrade package files and an upgrade database table are created on the
//! server"; "the upgrade database table is scanned when a client docks to determine the status
//! of an upgrade with respect to the particular client"; "the upgrade is copied to the client
//! if the client has not received the upgrade".

use super::{
    DownloadPolicy, EXTENSION, FileSpec, KIND_REPORT, KIND_UPGRADE, Package, REPORT_ENTRY, Report,
    Step, UpgradeError, file_entry, sanitize, toc_entry,
};
use crate::error::{EngineError, Result};
use crate::site::{Role, Site};
use crate::{store, transport};
use berth_bundle::{Bundle, Verified};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Central's folder of published packages: `CENTRAL/upgrade/NAME/FILE`.
pub fn package_dir(site: &Site, name: &str) -> PathBuf {
    site.folder("upgrade").join(name)
}

/// Hashes a file: (size, sha256 hex).
pub(crate) fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut f = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| EngineError::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

/// `berth upgrade publish PACKAGE.toml`: validates the package, copies its files (named
/// relative to the TOML file's folder) into `CENTRAL/upgrade/NAME/`, computes or checks each
/// file's size and sha256, and records the package (inactive) in `berth_upgrades` and
/// `berth_upgrade_files`.
pub fn publish(site: &mut Site, toml_path: &Path) -> Result<Package> {
    site.require(Role::Central)?;
    let text = fs::read_to_string(toml_path).map_err(|e| EngineError::io(toml_path, e))?;
    let mut pkg = Package::from_toml(&text, &toml_path.display().to_string())?;
    pkg.validate(false)?;
    let exists: bool = site.conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM berth_upgrades WHERE name = ?1)",
        params![pkg.name],
        |r| r.get(0),
    )?;
    if exists {
        return Err(UpgradeError::Exists { name: pkg.name }.into());
    }
    let src_dir = toml_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dest = package_dir(site, &pkg.name);
    // A folder without a row is what an interrupted publish left: start again.
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(|e| EngineError::io(&dest, e))?;
    }
    fs::create_dir_all(&dest).map_err(|e| EngineError::io(&dest, e))?;
    let mut files = Vec::new();
    for f in &pkg.files {
        let src = src_dir.join(&f.name);
        if !src.is_file() {
            return Err(UpgradeError::Invalid {
                package: pkg.name.clone(),
                field: "files".into(),
                reason: format!("{} is not a regular file", src.display()),
            }
            .into());
        }
        // Hash what is stored, not what was read first: the copy is what travels.
        let mut h = Sha256::new();
        let mut size = 0u64;
        transport::write_atomic(&dest, &f.name, |mut out| {
            let mut input = File::open(&src).map_err(|e| EngineError::io(&src, e))?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = input.read(&mut buf).map_err(|e| EngineError::io(&src, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                size += n as u64;
                out.write_all(&buf[..n])
                    .map_err(|e| EngineError::io(&src, e))?;
            }
            Ok(out)
        })?;
        let sha = hex::encode(h.finalize());
        let mismatch = |what: &str| UpgradeError::Invalid {
            package: pkg.name.clone(),
            field: "files".into(),
            reason: format!(
                "{}: {what} differs from the one given in the package file",
                f.name
            ),
        };
        if f.sha256.as_ref().is_some_and(|want| *want != sha) {
            let _ = fs::remove_dir_all(&dest);
            return Err(mismatch("sha256").into());
        }
        if f.size.is_some_and(|want| want != size) {
            let _ = fs::remove_dir_all(&dest);
            return Err(mismatch("size").into());
        }
        files.push(FileSpec {
            name: f.name.clone(),
            size: Some(size),
            sha256: Some(sha),
        });
    }
    pkg.files = files;
    pkg.validate(true)?;
    let tx = site
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO berth_upgrades(name, level, description, download_message, apply_message,
           download, apply, apply_at, schema_version, timeout, install, toc, published)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            pkg.name,
            pkg.level,
            pkg.description,
            pkg.download_message,
            pkg.apply_message,
            enum_text(&pkg.download),
            enum_text(&pkg.apply),
            enum_text(&pkg.apply_at),
            pkg.schema_version,
            pkg.timeout,
            serde_json::to_string(&pkg.install).unwrap_or_default(),
            pkg.to_toml(),
            store::now(),
        ],
    )?;
    for f in &pkg.files {
        tx.execute(
            "INSERT INTO berth_upgrade_files(package, name, size, sha256) VALUES (?1, ?2, ?3, ?4)",
            params![
                pkg.name,
                f.name,
                i64::try_from(f.size.unwrap_or(0)).unwrap_or(i64::MAX),
                f.sha256
            ],
        )?;
    }
    tx.commit()?;
    Ok(pkg)
}

/// A policy or state as `package.toml` and the status spell it (`forced`, `after-schema`).
pub fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Reads a published package.
pub fn package(conn: &Connection, name: &str) -> Result<Package> {
    let toc: Option<String> = conn
        .query_row(
            "SELECT toc FROM berth_upgrades WHERE name = ?1",
            params![name],
            |r| r.get(0),
        )
        .optional()?;
    let toc = toc.ok_or_else(|| UpgradeError::Unknown {
        name: name.to_string(),
    })?;
    Ok(Package::from_toml(&toc, "berth_upgrades.toc")?)
}

/// `berth upgrade activate NAME`: checks the stored files against the package once more and
/// makes it active. Several packages may be active; nodes receive them in activation order
/// and install them in level order.
pub fn activate(site: &mut Site, name: &str) -> Result<()> {
    site.require(Role::Central)?;
    let pkg = package(&site.conn, name)?;
    let dir = package_dir(site, name);
    for f in &pkg.files {
        let path = dir.join(&f.name);
        let (size, sha) = hash_file(&path)?;
        if Some(size) != f.size || f.sha256.as_deref() != Some(sha.as_str()) {
            return Err(UpgradeError::NotNow {
                name: name.to_string(),
                reason: format!(
                    "{} no longer matches the published sha256; publish the package again under a new name",
                    path.display()
                ),
            }
            .into());
        }
    }
    site.conn.execute(
        "UPDATE berth_upgrades SET active = (SELECT COALESCE(MAX(active), 0) + 1 FROM berth_upgrades),
           activated = ?2 WHERE name = ?1 AND active IS NULL",
        params![name, store::now()],
    )?;
    Ok(())
}

/// The content of an outgoing entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Content {
    /// A file on disk.
    File(PathBuf),
    /// Text.
    Text(String),
}

/// What central's next bundle to a node carries for upgrades.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Entries (name, content), sorted by name.
    pub entries: Vec<(String, Content)>,
    /// Where temporary copies go.
    pub spool: PathBuf,
    /// Announcements carried (package names).
    pub tocs: Vec<String>,
    /// Packages whose files are carried.
    pub files: Vec<String>,
    /// Highest report id of the node central holds (acknowledged in the bundle).
    pub reports_in: i64,
    /// Whether this alone justifies a new bundle.
    pub due: bool,
}

impl Outbox {
    /// The manifest extension: `[extensions.upgrade] reports = N`.
    pub fn extension(&self) -> Option<(String, toml::Value)> {
        (self.reports_in > 0).then(|| {
            let mut t = toml::map::Map::new();
            t.insert("reports".into(), toml::Value::Integer(self.reports_in));
            (EXTENSION.to_string(), toml::Value::Table(t))
        })
    }

    /// Opens the entries for the bundle writer.
    pub fn open(&self) -> Result<Vec<(String, &'static str, File)>> {
        self.entries
            .iter()
            .map(|(n, c)| {
                let f = match c {
                    Content::File(p) => File::open(p).map_err(|e| EngineError::io(p, e))?,
                    Content::Text(t) => {
                        let io = |e| EngineError::io(&self.spool, e);
                        let mut f = tempfile::tempfile_in(&self.spool).map_err(io)?;
                        f.write_all(t.as_bytes()).map_err(io)?;
                        f.rewind().map_err(io)?;
                        f
                    }
                };
                Ok((n.clone(), KIND_UPGRADE, f))
            })
            .collect()
    }
}

/// Decides what the next bundle to `node` carries: the announcement of every active package
/// the node has not reported on yet, the files of those it must have (forced, or asked for)
/// and has not reported downloaded, and the acknowledgement of its reports. `ours_waiting`:
/// a bundle of ours to the node still lies in the exchange folder (then what it carries is
/// not sent again as a reason for a new bundle).
pub fn outbox(site: &Site, node: &str, ours_waiting: bool) -> Result<Outbox> {
    let conn = &site.conn;
    let mut out = Outbox {
        spool: site.folder("spool"),
        ..Outbox::default()
    };
    let (reports_in, reports_acked): (i64, i64) = conn
        .query_row(
            "SELECT reports_in, reports_acked FROM berth_upgrade_peers WHERE node = ?1",
            params![node],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0));
    out.reports_in = reports_in;
    out.due = reports_in > reports_acked;
    let mut st = conn.prepare_cached(
        "SELECT u.name, u.toc, n.state, n.requested, n.has_files, n.toc_sent, n.files_sent
         FROM berth_upgrades u LEFT JOIN berth_upgrade_nodes n ON n.package = u.name AND n.node = ?1
         WHERE u.active IS NOT NULL ORDER BY u.active",
    )?;
    type Row = (
        String,
        String,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = st
        .query_map(params![node], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (name, toc, state, requested, has_files, toc_sent, files_sent) in rows {
        let pkg = Package::from_toml(&toc, "berth_upgrades.toc")?;
        let refused = state.as_deref() == Some(Step::Refused.as_str());
        let wants_toc = state.is_none();
        let wants_files = !refused
            && has_files.unwrap_or(0) == 0
            && (pkg.download == DownloadPolicy::Forced || requested.unwrap_or(0) != 0);
        if wants_toc && (toc_sent.is_none() || !ours_waiting) {
            out.due = true;
        }
        if wants_files && (files_sent.is_none() || !ours_waiting) {
            out.due = true;
        }
        if !(wants_toc || wants_files) {
            continue;
        }
        // The seed's upgrade TOC (server.ts entry): the package as published.
        out.entries
            .push((toc_entry(&name), Content::Text(toc.clone())));
        out.tocs.push(name.clone());
        if wants_files {
            for f in &pkg.files {
                out.entries.push((
                    file_entry(&name, &f.name),
                    Content::File(package_dir(site, &name).join(&f.name)),
                ));
            }
            out.files.push(name.clone());
        }
    }
    out.entries.sort();
    Ok(out)
}

/// Records that the bundle `seq` to `node` carried `out`.
pub fn record_sent(conn: &Connection, node: &str, seq: i64, out: &Outbox) -> Result<()> {
    for p in &out.tocs {
        conn.execute(
            "INSERT INTO berth_upgrade_nodes(package, node, toc_sent) VALUES (?1, ?2, ?3)
             ON CONFLICT(package, node) DO UPDATE SET toc_sent = excluded.toc_sent",
            params![p, node, seq],
        )?;
    }
    for p in &out.files {
        conn.execute(
            "UPDATE berth_upgrade_nodes SET files_sent = ?3 WHERE package = ?1 AND node = ?2",
            params![p, node, seq],
        )?;
    }
    conn.execute(
        "INSERT INTO berth_upgrade_peers(node, reports_in, reports_acked) VALUES (?1, ?2, ?2)
         ON CONFLICT(node) DO UPDATE SET reports_acked = excluded.reports_acked",
        params![node, out.reports_in],
    )?;
    Ok(())
}

/// Reads a node's reports out of its verified bundle (before the apply transaction).
/// A node never sends upgrade content: such a bundle is refused (its key is not trusted for
/// it in the first place, SPEC 2.7).
pub fn read_reports(bundle: &mut Bundle<Verified, File>) -> Result<Vec<Report>> {
    let m = bundle.manifest().clone();
    let label = bundle.label().to_string();
    if m.kinds.iter().any(|k| k == KIND_UPGRADE) {
        return Err(EngineError::Refused {
            bundle: label,
            reason: format!(
                "{} sends upgrade packages: only central publishes them",
                m.sender.site
            ),
        });
    }
    let Some(e) = m.entry(REPORT_ENTRY) else {
        return Ok(Vec::new());
    };
    if e.kind != KIND_REPORT {
        return Err(EngineError::BadPayload {
            bundle: label,
            entry: REPORT_ENTRY.into(),
            reason: format!("kind {:?}, expected {KIND_REPORT:?}", e.kind),
        });
    }
    let data = bundle.read_entry(REPORT_ENTRY, 64 << 20)?;
    let mut out = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let r: Report = serde_json::from_slice(line).map_err(|e| EngineError::BadPayload {
            bundle: label.clone(),
            entry: format!("{REPORT_ENTRY} line {}", i + 1),
            reason: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

/// Records a node's reports (inside the bundle's transaction). Each report is kept once by
/// (node, id); the node's state per package follows its latest report. A report central
/// already held means our acknowledgement was lost: it is sent again.
pub fn record_reports(conn: &Connection, node: &str, reports: &[Report]) -> Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let now = store::now();
    let mut lowest = i64::MAX;
    let mut highest = 0;
    for r in reports {
        lowest = lowest.min(r.id);
        highest = highest.max(r.id);
        let detail = cap(&sanitize(&r.detail));
        let output = cap(&sanitize(&r.output));
        let level = cap(&sanitize(&r.level));
        let inserted = conn.execute(
            "INSERT INTO berth_upgrade_reports(node, id, package, step, detail, exit_code, output, level, at, received)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(node, id) DO NOTHING",
            params![node, r.id, r.package, r.step.as_str(), detail, r.exit_code, output, level, r.at, now],
        )?;
        if inserted == 0 {
            continue;
        }
        conn.execute(
            "INSERT INTO berth_upgrade_nodes(package, node) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            params![r.package, node],
        )?;
        conn.execute(
            "UPDATE berth_upgrade_nodes SET state = ?3, detail = ?4, exit_code = ?5, output = ?6,
               level = ?7, at = ?8, last_report = ?9,
               requested = requested OR ?10, has_files = has_files OR ?11
             WHERE package = ?1 AND node = ?2 AND last_report < ?9",
            params![
                r.package,
                node,
                r.step.as_str(),
                detail,
                r.exit_code,
                output,
                level,
                r.at,
                r.id,
                r.step == Step::Requested,
                matches!(r.step, Step::Downloaded | Step::Applied)
            ],
        )?;
        if r.step == Step::Failed {
            // A failed install keeps its files: no need to send them again.
            conn.execute(
                "UPDATE berth_upgrade_nodes SET has_files = 1 WHERE package = ?1 AND node = ?2",
                params![r.package, node],
            )?;
        }
    }
    conn.execute(
        "INSERT INTO berth_upgrade_peers(node, reports_in) VALUES (?1, ?2)
         ON CONFLICT(node) DO UPDATE SET reports_in = MAX(reports_in, excluded.reports_in),
           reports_acked = MIN(reports_acked, ?3)",
        params![node, highest, lowest - 1],
    )?;
    Ok(())
}

fn cap(s: &str) -> String {
    let mut out = s.to_string();
    if out.len() > super::OUTPUT_TAIL_BYTES * 2 {
        let mut at = super::OUTPUT_TAIL_BYTES * 2;
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    out
}

/// One node's standing on one package.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeState {
    /// The node.
    pub node: String,
    /// Its last reported step, or `not-sent` / `sent` (announced in a bundle, nothing
    /// reported yet).
    pub state: String,
    /// Plain-text details of the last step.
    pub detail: String,
    /// The install command's exit code, if it ran.
    pub exit_code: Option<i64>,
    /// The tail of the install output.
    pub output: String,
    /// The node's software level with its last report.
    pub level: Option<String>,
    /// When the node reported it (node's clock, Unix seconds).
    pub at: Option<i64>,
    /// Every step it reported for the package, in the order it reported them.
    pub steps: Vec<String>,
}

/// One package at central.
#[derive(Debug, Clone, Serialize)]
pub struct PackageState {
    /// The package as published.
    pub name: String,
    /// The level it installs.
    pub level: String,
    /// Description.
    pub description: String,
    /// Download policy.
    pub download: String,
    /// Apply policy.
    pub apply: String,
    /// The schema version it goes with.
    pub schema_version: Option<String>,
    /// Activation order (1, 2, ...), none while inactive.
    pub active: Option<i64>,
    /// Number of files and their total size.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
    /// Each file with its size and sha256 (what a node checks before it installs).
    pub file_list: Vec<super::FileSpec>,
    /// Every registered node.
    pub nodes: Vec<NodeState>,
}

/// `berth upgrade status --site CENTRAL`: per package, per node.
pub fn status(site: &Site) -> Result<Vec<PackageState>> {
    site.require(Role::Central)?;
    let conn = &site.conn;
    let names: Vec<(String, Option<i64>)> = conn
        .prepare("SELECT name, active FROM berth_upgrades ORDER BY active IS NULL, active, published, name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let nodes: Vec<String> = crate::peer::all(conn)?
        .into_iter()
        .filter(|p| p.role == "node" && p.revoked.is_none())
        .map(|p| p.name)
        .collect();
    let mut out = Vec::new();
    for (name, active) in names {
        let pkg = package(conn, &name)?;
        let mut per: BTreeMap<String, NodeState> = BTreeMap::new();
        let mut st = conn.prepare(
            "SELECT node, state, detail, exit_code, output, level, at, toc_sent FROM berth_upgrade_nodes WHERE package = ?1",
        )?;
        let rows = st.query_map(params![name], |r| {
            let state: Option<String> = r.get(1)?;
            let toc_sent: Option<i64> = r.get(7)?;
            Ok(NodeState {
                node: r.get(0)?,
                state: state.unwrap_or_else(|| {
                    if toc_sent.is_some() {
                        "sent"
                    } else {
                        "not-sent"
                    }
                    .to_string()
                }),
                detail: r.get(2)?,
                exit_code: r.get(3)?,
                output: r.get(4)?,
                level: r.get(5)?,
                at: r.get(6)?,
                steps: Vec::new(),
            })
        })?;
        for row in rows {
            let row = row?;
            per.insert(row.node.clone(), row);
        }
        let mut st = conn.prepare_cached(
            "SELECT node, step FROM berth_upgrade_reports WHERE package = ?1 ORDER BY node, id",
        )?;
        let reports = st.query_map(params![name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        for r in reports {
            let (node, step) = r?;
            if let Some(n) = per.get_mut(&node) {
                n.steps.push(step);
            }
        }
        for n in &nodes {
            per.entry(n.clone()).or_insert_with(|| NodeState {
                node: n.clone(),
                state: "not-sent".into(),
                detail: String::new(),
                exit_code: None,
                output: String::new(),
                level: None,
                at: None,
                steps: Vec::new(),
            });
        }
        out.push(PackageState {
            name: pkg.name.clone(),
            level: pkg.level.clone(),
            description: sanitize(&pkg.description),
            download: enum_text(&pkg.download),
            apply: enum_text(&pkg.apply),
            schema_version: pkg.schema_version.clone(),
            active,
            files: pkg.files.len(),
            bytes: pkg.files.iter().filter_map(|f| f.size).sum(),
            file_list: pkg.files.clone(),
            nodes: per.into_values().collect(),
        });
    }
    Ok(out)
}
