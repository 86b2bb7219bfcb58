//! A node's side: take in announcements and files from central's bundles, ask the user
//! (prompts with time-outs), install under the apply policy, report every step.
//!
//! Layout: `NODE/upgrade/packages/NAME/FILE` (the verified files, kept until applied and
//! after a failure for a retry), `NODE/upgrade/logs/NAME.log` (the last install's output).
//!
//! Trust: announcements and files are accepted only inside a bundle verified against
//! central's key (SPEC 2.7); every file is checked against the sha256 the announcement lists
//! when it arrives, and again right before the install command runs.

use super::plan::{self, Action, OnAnnounce, Stage};
use super::{
    ApplyDefault, ApplyPolicy, DownloadDefault, EXTENSION, KIND_UPGRADE, MAX_TOC_BYTES, Note,
    OUTPUT_TAIL_BYTES, Package, Prompt, Question, QuestionKind, REPORT_ENTRY, Report, Step,
    UpgradeError, level_cmp, sanitize,
};
use crate::error::{EngineError, Result};
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use berth_bundle::{Bundle, Verified};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

mod receive;

pub use receive::*;

/// Where a package's verified files are kept at a node.
pub fn package_dir(site_dir: &Path, name: &str) -> PathBuf {
    site_dir.join("upgrade").join("packages").join(name)
}

fn log_path(site_dir: &Path, name: &str) -> PathBuf {
    site_dir
        .join("upgrade")
        .join("logs")
        .join(format!("{name}.log"))
}

/// The site's software level (`1` until an upgrade is applied).
pub fn installed_level(conn: &Connection) -> Result<String> {
    Ok(store::meta(conn, meta_keys::SOFTWARE_LEVEL)?.unwrap_or_else(|| "1".into()))
}

/// The answer of the schema gate for an `after-schema` package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaGate {
    /// The package may be installed now.
    pub ready: bool,
    /// The schema version this site records (`berth_meta.schema_version`), if any.
    pub have: Option<String>,
}

/// **Hook for schema migrations (issue 5).** Decides whether a package tied to schema
/// version `version` may be installed now: when the site's recorded schema version
/// (`berth_meta` key `schema_version`) equals it or is a later dotted-decimal version. Until
/// migrations record that key, `after-schema` packages wait (visibly, in `upgrade status`).
/// The migration apply step should call [`run_after_schema`] right after it commits.
pub fn schema_gate(conn: &Connection, version: &str) -> Result<SchemaGate> {
    let have = store::meta(conn, meta_keys::SCHEMA_VERSION)?;
    let ready = have.as_deref().is_some_and(|h| {
        h == version
            || (super::parse_level(h).is_some()
                && super::parse_level(version).is_some()
                && level_cmp(h, version) != Ordering::Less)
    });
    Ok(SchemaGate { ready, have })
}

/// **Hook for schema migrations (issue 5)**, the other direction of the gate (seed: "if a
/// schema upgrade that requires a corresponding software upgrade is to be applied, the
/// software upgrade must be applied first"): true when this site's software level has reached
/// `needed` (dotted decimal). A migration that needs newer software waits while it is false.
pub fn software_gate(conn: &Connection, needed: &str) -> Result<bool> {
    Ok(level_cmp(&installed_level(conn)?, needed) != Ordering::Less)
}

/// **Hook for schema migrations (issue 5)**: installs the downloaded `after-schema` packages
/// whose schema version is now reached (seed: "the applying of the schema upgrade invokes the
/// software upgrade at the end of the processing of the schema upgrade"). The docking session
/// also calls it at its end (as part of [`session`]).
pub fn run_after_schema(site: &mut Site) -> Result<Vec<Note>> {
    let mut notes = Vec::new();
    for (pkg, local) in local_packages(&site.conn)? {
        if pkg.apply == ApplyPolicy::AfterSchema
            && plan::session(Stage::End, local, &pkg, gate_for(&site.conn, &pkg)?)
                == Action::Install
        {
            notes.push(install(site, &pkg)?);
        }
    }
    Ok(notes)
}

fn gate_for(conn: &Connection, pkg: &Package) -> Result<bool> {
    match (&pkg.apply, &pkg.schema_version) {
        (ApplyPolicy::AfterSchema, Some(v)) => Ok(schema_gate(conn, v)?.ready),
        _ => Ok(false),
    }
}

/// Queues a report for central.
fn push_report(
    conn: &Connection,
    package: &str,
    step: Step,
    detail: &str,
    exit_code: Option<i64>,
    output: &str,
) -> Result<()> {
    let level = installed_level(conn)?;
    conn.execute(
        "INSERT INTO berth_upgrade_outbox(package, step, detail, exit_code, output, level, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            package,
            step.as_str(),
            detail,
            exit_code,
            output,
            level,
            store::now()
        ],
    )?;
    Ok(())
}

fn set_state(
    conn: &Connection,
    name: &str,
    step: Step,
    detail: &str,
    exit_code: Option<i64>,
    output: &str,
) -> Result<()> {
    conn.execute(
        "UPDATE berth_upgrade_local SET state = ?2, detail = ?3, exit_code = ?4, output = ?5, updated = ?6 WHERE name = ?1",
        params![name, step.as_str(), detail, exit_code, output, store::now()],
    )?;
    push_report(conn, name, step, detail, exit_code, output)
}

/// The reports a node's next bundle carries.
#[derive(Debug)]
pub struct ReportOut {
    /// The entry's content (`payload/report/upgrade.jsonl`), if there are reports.
    pub file: Option<File>,
    /// Highest report id carried.
    pub max_id: i64,
    /// Whether this alone justifies a new bundle.
    pub due: bool,
}

/// Collects the reports central has not acknowledged. They are due when new since the last
/// bundle, or when none of our bundles is waiting in the exchange folder (it was lost).
pub fn report_outbox(site: &Site, ours_waiting: bool) -> Result<ReportOut> {
    let acked = store::meta_i64(&site.conn, meta_keys::UPGRADE_REPORTS_ACKED)?;
    let sent = store::meta_i64(&site.conn, meta_keys::UPGRADE_REPORTS_SENT)?;
    let mut st = site.conn.prepare_cached(
        "SELECT id, package, step, detail, exit_code, output, level, at FROM berth_upgrade_outbox
         WHERE id > ?1 ORDER BY id",
    )?;
    let reports: Vec<Report> = st
        .query_map(params![acked], |r| {
            let step: String = r.get(2)?;
            Ok(Report {
                id: r.get(0)?,
                package: r.get(1)?,
                step: Step::parse(&step).unwrap_or(Step::Failed),
                detail: r.get(3)?,
                exit_code: r.get(4)?,
                output: r.get(5)?,
                level: r.get(6)?,
                at: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let max_id = reports.last().map_or(0, |r| r.id);
    if reports.is_empty() {
        return Ok(ReportOut {
            file: None,
            max_id,
            due: false,
        });
    }
    let spool = site.folder("spool");
    let io = |e| EngineError::io(&spool, e);
    let mut f = tempfile::tempfile_in(&spool).map_err(io)?;
    for r in &reports {
        serde_json::to_writer(&mut f, r).map_err(|e| EngineError::io(&spool, e.into()))?;
        f.write_all(b"\n").map_err(io)?;
    }
    f.rewind().map_err(io)?;
    Ok(ReportOut {
        file: Some(f),
        max_id,
        due: max_id > sent || !ours_waiting,
    })
}

/// Records that a bundle carried the reports up to `max_id`.
pub fn record_reports_sent(conn: &Connection, max_id: i64) -> Result<()> {
    if max_id > 0 {
        store::set_meta(conn, meta_keys::UPGRADE_REPORTS_SENT, &max_id.to_string())?;
    }
    Ok(())
}

/// The entry name of the reports (re-exported for the dock).
pub const REPORTS: &str = REPORT_ENTRY;

/// The packages this node knows, in level order, with where each stands.
fn local_packages(conn: &Connection) -> Result<Vec<(Package, plan::Local)>> {
    let mut st = conn.prepare_cached("SELECT toc, state, files FROM berth_upgrade_local")?;
    let rows: Vec<(String, String, bool)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (toc, state, files) in rows {
        let pkg = Package::from_toml(&toc, "berth_upgrade_local.toc")?;
        let step = Step::parse(&state).unwrap_or(Step::Failed);
        out.push((pkg, plan::Local { step, files }));
    }
    out.sort_by(|a, b| level_cmp(&a.0.level, &b.0.level).then_with(|| a.0.name.cmp(&b.0.name)));
    Ok(out)
}

fn note(pkg: &Package, event: &str, text: String) -> Note {
    Note {
        package: pkg.name.clone(),
        level: pkg.level.clone(),
        event: event.to_string(),
        text,
    }
}

/// One step of the docking session at a node: at its start (`immediate` packages with
/// `apply_at = "start"`) or its end (prompts for optional downloads, reminders and prompts
/// for deferrable packages, `immediate` installs, `after-schema` packages whose schema is
/// reached). Returns what the user should see.
pub fn session(site: &mut Site, stage: Stage, prompt: &dyn Prompt) -> Result<Vec<Note>> {
    if site.role() != Role::Node {
        return Ok(Vec::new());
    }
    let mut notes = Vec::new();
    for (pkg, local) in local_packages(&site.conn)? {
        let ready = gate_for(&site.conn, &pkg)?;
        // Earlier installs in this loop may have changed the state of this one: re-read.
        let local = current(&site.conn, &pkg.name)?.unwrap_or(local);
        let timeout = std::time::Duration::from_secs(u64::from(pkg.timeout));
        match plan::session(stage, local, &pkg, ready) {
            Action::Nothing => {}
            Action::AskDownload => {
                let q = Question {
                    package: pkg.name.clone(),
                    level: pkg.level.clone(),
                    kind: QuestionKind::Download,
                    message: sanitize(&pkg.download_message),
                    timeout,
                    default: pkg.download_default == DownloadDefault::Download,
                };
                let yes = prompt.ask(&q).unwrap_or(q.default);
                if yes {
                    set_state(&site.conn, &pkg.name, Step::Requested, "", None, "")?;
                    notes.push(note(
                        &pkg,
                        "requested",
                        format!("{}: files asked for; they come with central's next bundle", pkg.name),
                    ));
                } else {
                    bump_reminders(&site.conn, &pkg.name)?;
                    if local.step != Step::Deferred {
                        set_state(&site.conn, &pkg.name, Step::Deferred, "download deferred", None, "")?;
                    }
                    notes.push(note(
                        &pkg,
                        "deferred",
                        format!("{}: download deferred; asked again at the next dock. {}", pkg.name, q.message),
                    ));
                }
            }
            Action::AskApply => {
                let q = Question {
                    package: pkg.name.clone(),
                    level: pkg.level.clone(),
                    kind: QuestionKind::Apply,
                    message: sanitize(&pkg.apply_message),
                    timeout,
                    default: pkg.apply_default == ApplyDefault::Apply,
                };
                if prompt.ask(&q).unwrap_or(q.default) {
                    notes.push(install(site, &pkg)?);
                } else {
                    bump_reminders(&site.conn, &pkg.name)?;
                    if local.step != Step::Deferred {
                        set_state(&site.conn, &pkg.name, Step::Deferred, "installation deferred", None, "")?;
                    }
                    notes.push(note(
                        &pkg,
                        "reminder",
                        format!(
                            "{} (level {}) is ready to install: run `berth upgrade apply {} --site {}`. {}",
                            pkg.name,
                            pkg.level,
                            pkg.name,
                            site.dir.display(),
                            q.message
                        ),
                    ));
                }
            }
            Action::Install => notes.push(install(site, &pkg)?),
            Action::RemindFailed => notes.push(note(
                &pkg,
                "reminder",
                format!(
                    "{}: the last install failed; fix the cause and run `berth upgrade apply {} --site {}`",
                    pkg.name,
                    pkg.name,
                    site.dir.display()
                ),
            )),
            Action::WaitSchema => {
                let have = store::meta(&site.conn, meta_keys::SCHEMA_VERSION)?;
                notes.push(note(
                    &pkg,
                    "waiting",
                    format!(
                        "{}: waits for the schema migration to version {} (this site: {})",
                        pkg.name,
                        pkg.schema_version.as_deref().unwrap_or("?"),
                        have.as_deref().unwrap_or("no recorded schema version")
                    ),
                ));
            }
        }
    }
    Ok(notes)
}

fn current(conn: &Connection, name: &str) -> Result<Option<plan::Local>> {
    Ok(conn
        .query_row(
            "SELECT state, files FROM berth_upgrade_local WHERE name = ?1",
            params![name],
            |r| {
                let s: String = r.get(0)?;
                Ok(plan::Local {
                    step: Step::parse(&s).unwrap_or(Step::Failed),
                    files: r.get(1)?,
                })
            },
        )
        .optional()?)
}

fn bump_reminders(conn: &Connection, name: &str) -> Result<()> {
    conn.execute(
        "UPDATE berth_upgrade_local SET reminders = reminders + 1 WHERE name = ?1",
        params![name],
    )?;
    Ok(())
}

/// `berth upgrade apply NAME --site NODE`: installs a downloaded package now (one whose files
/// are not here yet is asked for instead: a `requested` note), whatever its
/// apply policy (an `after-schema` package only once its schema version is reached); also
/// the retry of a failed install.
pub fn apply_now(site: &mut Site, name: &str) -> Result<Note> {
    site.require(Role::Node)?;
    let (pkg, local) = local_packages(&site.conn)?
        .into_iter()
        .find(|(p, _)| p.name == name)
        .ok_or_else(|| UpgradeError::Unknown {
            name: name.to_string(),
        })?;
    let not_now = |reason: String| -> EngineError {
        UpgradeError::NotNow {
            name: name.to_string(),
            reason,
        }
        .into()
    };
    match local.step {
        Step::Applied => return Err(not_now("already applied".into())),
        Step::Refused => {
            let detail: String = site.conn.query_row(
                "SELECT detail FROM berth_upgrade_local WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )?;
            return Err(not_now(format!("refused: {}", sanitize(&detail))));
        }
        _ => {}
    }
    if !local.files {
        // Asked for by hand (a dock without a terminal took the default, defer): the next
        // dock reports the request, and central's bundle after it brings the files.
        if local.step != Step::Requested {
            set_state(
                &site.conn,
                &pkg.name,
                Step::Requested,
                "asked for by `berth upgrade apply`",
                None,
                "",
            )?;
        }
        return Ok(note(
            &pkg,
            "requested",
            format!(
                "{}: its files are asked for: the next `berth dock --site {}` sends the request, and central's bundle after it brings them; then run `berth upgrade apply {} --site {}` again (or let its apply policy install it)",
                pkg.name,
                site.dir.display(),
                pkg.name,
                site.dir.display()
            ),
        ));
    }
    if pkg.apply == ApplyPolicy::AfterSchema && !gate_for(&site.conn, &pkg)? {
        return Err(not_now(format!(
            "it goes with schema version {}, which this site has not reached; it installs right after that migration",
            pkg.schema_version.as_deref().unwrap_or("?")
        )));
    }
    install(site, &pkg)
}

/// Installs a package: checks the level (no downgrade) and every file's sha256, then runs the
/// install command from the package folder. The software level changes only on success; a
/// failure keeps the old level and the files.
fn install(site: &mut Site, pkg: &Package) -> Result<Note> {
    let conn = &site.conn;
    let previous = installed_level(conn)?;
    if level_cmp(&pkg.level, &previous) != Ordering::Greater {
        let reason = format!(
            "level {} is not newer than the installed level {previous}: a downgrade is refused",
            pkg.level
        );
        set_state(conn, &pkg.name, Step::Refused, &reason, None, "")?;
        return Ok(note(pkg, "refused", format!("{}: {reason}", pkg.name)));
    }
    let dir = package_dir(&site.dir, &pkg.name);
    for f in &pkg.files {
        let path = dir.join(&f.name);
        let ok = match super::central::hash_file(&path) {
            Ok((size, sha)) => Some(size) == f.size && f.sha256.as_deref() == Some(sha.as_str()),
            Err(_) => false,
        };
        if !ok {
            let reason = format!(
                "file {} is missing or differs from the package's sha256: refused, nothing run",
                f.name
            );
            set_state(conn, &pkg.name, Step::Refused, &reason, None, "")?;
            return Ok(note(pkg, "refused", format!("{}: {reason}", pkg.name)));
        }
    }
    let log = log_path(&site.dir, &pkg.name);
    let logs = site.dir.join("upgrade").join("logs");
    fs::create_dir_all(&logs).map_err(|e| EngineError::io(&logs, e))?;
    let out = File::create(&log).map_err(|e| EngineError::io(&log, e))?;
    let err = out.try_clone().map_err(|e| EngineError::io(&log, e))?;
    // A program named like one of the package's files is that file; anything else is looked
    // up on PATH (behaviour of relative program paths with a working folder is platform
    // specific, so never leave it to the platform).
    let program = if pkg.files.iter().any(|f| f.name == pkg.install[0]) {
        let path = dir.join(&pkg.install[0]);
        // Files arrive readable by the site only; the one the install command runs must
        // also be executable (as a migration's executable step is).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(|e| EngineError::io(&path, e))?;
        }
        path.into_os_string()
    } else {
        pkg.install[0].clone().into()
    };
    let status = std::process::Command::new(program)
        .args(&pkg.install[1..])
        .current_dir(&dir)
        .env("BERTH_PACKAGE", &pkg.name)
        .env("BERTH_LEVEL", &pkg.level)
        .env("BERTH_PREVIOUS_LEVEL", &previous)
        .env("BERTH_PACKAGE_DIR", &dir)
        .env("BERTH_SITE_DIR", &site.dir)
        .env("BERTH_SITE_NAME", site.name())
        .env("BERTH_DATABASE", site.db_path())
        .env(
            "BERTH_SCHEMA_VERSION",
            pkg.schema_version.as_deref().unwrap_or(""),
        )
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status();
    let tail = tail(&log);
    let applying = sanitize(&pkg.apply_message);
    match status {
        Ok(s) if s.success() => {
            let tx = rusqlite::Transaction::new_unchecked(
                &site.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            store::set_meta(&tx, meta_keys::SOFTWARE_LEVEL, &pkg.level)?;
            let detail = format!("level {} installed (was {previous})", pkg.level);
            set_state(&tx, &pkg.name, Step::Applied, &detail, Some(0), &tail)?;
            tx.commit()?;
            Ok(note(
                pkg,
                "applied",
                format!("{}: {detail}. {applying}", pkg.name),
            ))
        }
        Ok(s) => {
            let code = s.code().map(i64::from);
            let detail = format!(
                "install command failed ({}); level stays {previous}; files kept for a retry (`berth upgrade apply {} --site {}`)",
                code.map_or_else(
                    || "killed by a signal".to_string(),
                    |c| format!("exit code {c}")
                ),
                pkg.name,
                site.dir.display()
            );
            set_state(&site.conn, &pkg.name, Step::Failed, &detail, code, &tail)?;
            Ok(note(pkg, "failed", format!("{}: {detail}", pkg.name)))
        }
        Err(e) => {
            let detail = format!(
                "install command {:?} could not start: {e}; level stays {previous}",
                pkg.install[0]
            );
            set_state(&site.conn, &pkg.name, Step::Failed, &detail, None, &tail)?;
            Ok(note(pkg, "failed", format!("{}: {detail}", pkg.name)))
        }
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of the install output, as plain text.
pub(crate) fn tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_TAIL_BYTES as u64);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    sanitize(&String::from_utf8_lossy(&buf))
}

/// One package as a node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LocalState {
    /// Name.
    pub name: String,
    /// Level it installs.
    pub level: String,
    /// Last step.
    pub state: String,
    /// The files are here and verified.
    pub files: bool,
    /// Download policy.
    pub download: String,
    /// Apply policy.
    pub apply: String,
    /// Plain-text details of the last step.
    pub detail: String,
    /// Exit code of the last install.
    pub exit_code: Option<i64>,
    /// Tail of the last install output.
    pub output: String,
    /// How often the user deferred it.
    pub reminders: i64,
    /// The apply message (plain text).
    pub apply_message: String,
}

/// What a node knows about upgrades.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    /// The site's software level.
    pub software_level: String,
    /// Reports not yet acknowledged by central.
    pub unreported: i64,
    /// Every package announced to it.
    pub packages: Vec<LocalState>,
}

/// `berth upgrade status --site NODE`.
pub fn status(site: &Site) -> Result<NodeView> {
    site.require(Role::Node)?;
    let conn = &site.conn;
    let mut packages = Vec::new();
    for (pkg, _) in local_packages(conn)? {
        let (state, files, detail, exit_code, output, reminders) = conn.query_row(
            "SELECT state, files, detail, exit_code, output, reminders FROM berth_upgrade_local WHERE name = ?1",
            params![pkg.name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        packages.push(LocalState {
            name: pkg.name.clone(),
            level: pkg.level.clone(),
            state,
            files,
            download: serde_json::to_value(pkg.download)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            apply: serde_json::to_value(pkg.apply)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            detail: sanitize(&detail),
            exit_code,
            output: sanitize(&output),
            reminders,
            apply_message: sanitize(&pkg.apply_message),
        });
    }
    let unreported = conn.query_row(
        "SELECT COUNT(*) FROM berth_upgrade_outbox WHERE id > ?1",
        params![store::meta_i64(conn, meta_keys::UPGRADE_REPORTS_ACKED)?],
        |r| r.get(0),
    )?;
    Ok(NodeView {
        software_level: installed_level(conn)?,
        unreported,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::receive::{Part, parse_entry};
    use super::*;

    #[test]
    fn gates_read_the_recorded_schema_version_and_software_level() {
        let c = Connection::open_in_memory().unwrap();
        store::install(&c).unwrap();
        assert!(
            !schema_gate(&c, "7").unwrap().ready,
            "no recorded version: wait"
        );
        store::set_meta(&c, meta_keys::SCHEMA_VERSION, "6").unwrap();
        assert!(!schema_gate(&c, "7").unwrap().ready);
        store::set_meta(&c, meta_keys::SCHEMA_VERSION, "7").unwrap();
        assert!(schema_gate(&c, "7").unwrap().ready);
        store::set_meta(&c, meta_keys::SCHEMA_VERSION, "7.1").unwrap();
        assert!(
            schema_gate(&c, "7").unwrap().ready,
            "a later version is past it"
        );
        store::set_meta(&c, meta_keys::SCHEMA_VERSION, "abc").unwrap();
        assert!(
            schema_gate(&c, "abc").unwrap().ready,
            "other spellings: equality"
        );
        assert!(software_gate(&c, "1").unwrap(), "level 1 by default");
        assert!(!software_gate(&c, "2").unwrap());
        store::set_meta(&c, meta_keys::SOFTWARE_LEVEL, "2.0").unwrap();
        assert!(software_gate(&c, "2").unwrap());
    }

    #[test]
    fn entry_names_split_into_announcements_and_files() {
        assert!(matches!(
            parse_entry("payload/upgrade/app-2/package.toml"),
            Some(Part::Toc("app-2"))
        ));
        assert!(matches!(
            parse_entry("payload/upgrade/app-2/files/install.sh"),
            Some(Part::File("app-2", "install.sh"))
        ));
        assert!(parse_entry("payload/upgrade/app-2/files/a/b").is_none());
        assert!(parse_entry("payload/upgrade/app-2/other").is_none());
        assert!(parse_entry("payload/changes.jsonl").is_none());
    }
}
