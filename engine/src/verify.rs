//! `berth verify`: checks, offline and without changing anything, that a site's files can be
//! trusted. It reads the database read-only and takes no lock, so it runs beside a dock or
//! a watcher.
//!
//! Checks today:
//! - [`Check::SiteFiles`]: `data.db` is there, not empty, holds berth's tables, and records
//!   the site that `berth.toml` and `keys/` describe ([`crate::identity`]);
//! - [`Check::QuickCheck`]: SQLite's `PRAGMA quick_check` (damaged pages, broken b-trees).
//!
//! - [`Check::Replica`]: at a node, its rows against the digests of central's newest bundle
//!   (buckets with unsent local changes left out); at central, each node's last report
//!   ([`crate::replica`], SPEC 2.15).

use crate::error::{EngineError, Result};
use crate::identity;
use crate::site::{Role, Site};
use berth_bundle::SecretKey;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Most problems `quick_check` lists before it stops.
const QUICK_CHECK_LIMIT: u32 = 100;

/// One kind of check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Check {
    /// `data.db`, `berth.toml` and `keys/` belong to one site.
    SiteFiles,
    /// SQLite's `PRAGMA quick_check`.
    QuickCheck,
    /// At a node: its rows against the digests of central's newest bundle; at central: each
    /// node's last report (SPEC 2.15).
    Replica,
}

impl Check {
    /// The kebab-case name (as in `--json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Check::SiteFiles => "site-files",
            Check::QuickCheck => "quick-check",
            Check::Replica => "replica",
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Which check.
    pub check: Check,
    /// Whether it passed (a check that could not run did not pass).
    pub ok: bool,
    /// What was found: one line per problem, or what was checked.
    pub detail: Vec<String>,
}

/// Everything `verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// The site folder.
    pub site: PathBuf,
    /// The checks in the order they ran.
    pub checks: Vec<Finding>,
}

impl Verification {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// Verifies the site in `dir`. Fails only when `dir` is not a berth site (no readable
/// `berth.toml` or key); everything else is a finding.
pub fn verify(dir: &Path) -> Result<Verification> {
    let config = Site::read_config(dir)?;
    let key_path = dir.join("keys").join("site.key");
    let text = std::fs::read_to_string(&key_path).map_err(|e| EngineError::io(&key_path, e))?;
    let key = SecretKey::from_text(&text)?;
    let keys = identity::site_keys(dir, key.public().to_hex())?;
    let db = dir.join("data.db");
    let mut out = Verification {
        site: dir.to_path_buf(),
        checks: Vec::new(),
    };
    let failed = |check, e: EngineError| Finding {
        check,
        ok: false,
        detail: vec![e.to_string()],
    };
    if let Err(e) = identity::check_file(&db) {
        out.checks.push(failed(Check::SiteFiles, e));
        return Ok(out);
    }
    let conn = match Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => {
            out.checks.push(failed(Check::SiteFiles, e.into()));
            return Ok(out);
        }
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(30));
    out.checks.push(match site_files(&conn, &config, &keys) {
        Ok(f) => f,
        Err(e) => failed(Check::SiteFiles, e),
    });
    out.checks.push(match quick_check(&conn) {
        Ok(f) => f,
        Err(e) => failed(Check::QuickCheck, e),
    });
    out.checks.push(match replica(&conn, config.role) {
        Ok(f) => f,
        Err(e) => failed(Check::Replica, e),
    });
    Ok(out)
}

fn site_files(conn: &Connection, config: &crate::site::Config, keys: &[String]) -> Result<Finding> {
    let finding = |ok, line: String| Finding {
        check: Check::SiteFiles,
        ok,
        detail: vec![line],
    };
    if !identity::has_berth_tables(conn)? {
        return Ok(finding(
            false,
            "data.db holds no berth tables: it is not a berth site's database".into(),
        ));
    }
    let rec = identity::recorded(conn)?;
    if let Some(reason) = identity::mismatch(config, keys, &rec) {
        return Ok(finding(false, reason));
    }
    let line = if rec.role.is_none() || rec.name.is_none() || rec.key.is_none() {
        format!(
            "data.db does not contradict berth.toml ({} site {:?}); it does not record all of \
             role, name and key yet: the next dock records them",
            config.role.as_str(),
            config.name
        )
    } else {
        format!(
            "data.db, berth.toml and keys/ belong to {} site {:?}",
            config.role.as_str(),
            config.name
        )
    };
    Ok(finding(true, line))
}

fn quick_check(conn: &Connection) -> Result<Finding> {
    let mut st = conn.prepare(&format!("PRAGMA quick_check({QUICK_CHECK_LIMIT})"))?;
    let lines: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let ok = matches!(lines.as_slice(), [only] if only == "ok");
    Ok(Finding {
        check: Check::QuickCheck,
        ok,
        detail: if ok {
            vec!["SQLite's quick_check found no damage".into()]
        } else {
            lines
        },
    })
}

fn replica(conn: &Connection, role: Role) -> Result<Finding> {
    let finding = |ok, detail| Finding {
        check: Check::Replica,
        ok,
        detail,
    };
    if role == Role::Central {
        let reports = crate::replica::reports(conn)?;
        if reports.is_empty() {
            return Ok(finding(
                true,
                vec!["no node has reported on its replica yet".into()],
            ));
        }
        let ok = reports.iter().all(|(_, r, _, _)| r.differ.is_empty());
        let lines = reports
            .iter()
            .map(|(node, r, at, attempts)| crate::replica::report_line(node, r, *at, *attempts))
            .collect();
        return Ok(finding(ok, lines));
    }
    let catalog = crate::table::Catalog::load(conn, &Default::default(), Default::default())?;
    let acked: i64 = conn.query_row(
        "SELECT COALESCE(MAX(acked_pos), 0) FROM berth_peers WHERE role = 'central'",
        [],
        |r| r.get(0),
    )?;
    let kept = crate::replica::kept(conn)?.len();
    let kept_line = (kept > 0).then(|| {
        format!(
            "{kept} row(s) a repair replaced are kept aside: `berth repair --list` shows them, \
             `berth repair --reapply ID` writes one back"
        )
    });
    Ok(match crate::replica::compare_rows(conn, &catalog, acked)? {
        None => finding(
            true,
            std::iter::once("no digests from central yet: they come with its next bundle".into())
                .chain(kept_line)
                .collect(),
        ),
        Some(r) => finding(
            r.differ.is_empty(),
            std::iter::once(r.summary()).chain(kept_line).collect(),
        ),
    })
}
