//! Docking (seed 004, Figure 4): take the bundles addressed to this site from an exchange
//! folder, apply them in stream order, then write this site's outgoing bundles.
//!
//! Streams: each sender->recipient pair has a sequence number and every bundle covers the
//! sender's log positions `(acked, log_to]`, where `acked` is what the recipient has
//! acknowledged. A sender keeps sending what is unacknowledged, so a newer bundle contains
//! an older one: a lost bundle loses nothing, a duplicate or out-of-date one is skipped by
//! position, and one that needs positions the recipient has not applied (`requires`) is held.

mod steps;

use steps::{Halt, Step};

use crate::change::{self, Change, Filter, Op};
use crate::error::{EngineError, Result};
use crate::header::header;
use crate::merge::apply::{CentralMerge, MergeStats, NodeApply, Pending, is_constraint};
use crate::outgoing::bundle_filler;
use crate::payload::Payload;
use crate::peer::{self, Peer};
use crate::site::{Role, Site};
use crate::store::meta_keys;
use crate::{capture, store, transport};
use berth_bundle::{Bundle, Limits, StreamPosition, TrustedKey, TrustedKeys, Verified, naming};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Seek, Write as _};
use std::path::{Path, PathBuf};

/// The entry that carries row changes.
pub const CHANGES_ENTRY: &str = "payload/changes.jsonl";

/// What one dock should do.
#[derive(Debug, Clone)]
pub struct DockOptions {
    /// Write outgoing bundles.
    pub upload: bool,
    /// Apply incoming bundles.
    pub download: bool,
    /// Seal each outgoing bundle to its recipient's key (`B.age`, SPEC 3.4), as `berth dock
    /// --encrypt` asks. The plain bundle never enters the exchange folder.
    pub seal: bool,
    /// Cut an outgoing bundle file larger than this many bytes into volumes (SPEC 3.2), as
    /// `--volume-size` asks (`None`: never). The whole file never enters the exchange folder.
    pub volume_size: Option<u64>,
    /// Test hook: fail an apply after this many changes (crash injection).
    pub fail_after: Option<u64>,
    /// Test hook: stop the upload at this step of writing a bundle (crash injection).
    pub fail_export: Option<ExportStep>,
    /// Test hook: stop the download at this step of taking bundles in (crash injection).
    pub fail_intake: Option<IntakeStep>,
    /// Where progress of applying and writing large bundles goes.
    pub progress: crate::progress::Reporter,
    /// When set (a signal handler sets it), no further bundle is started: the one being
    /// applied finishes, the others stay in the spool for the next dock.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The time the dock runs at (Unix seconds; `None`: the system clock). What it decides by
    /// time (retention, which nodes are away, the time a peer was last heard from) reads
    /// this, so a simulation can run a year of docks in minutes.
    pub now: Option<i64>,
}

impl DockOptions {
    /// The time the dock runs at.
    pub fn clock(&self) -> i64 {
        self.now.unwrap_or_else(store::now)
    }
}

impl Default for DockOptions {
    fn default() -> Self {
        DockOptions {
            upload: true,
            download: true,
            seal: false,
            volume_size: None,
            fail_after: None,
            fail_export: None,
            fail_intake: None,
            progress: None,
            stop: None,
            now: None,
        }
    }
}

/// The steps of writing one outgoing bundle, where [`DockOptions::fail_export`] stops an
/// upload as a crash would. Whichever it is, the next dock writes what was not delivered,
/// and nothing is delivered twice under one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportStep {
    /// Central: the routing pass is committed; no bundle is written yet.
    Routed,
    /// The export snapshot is committed (log clocks stamped); the bundle is not begun.
    Snapshot,
    /// The bundle's sequence number is reserved; the bundle is not begun.
    Reserved,
    /// The bundle is complete but not in the exchange folder: in its `.part` file there
    /// (left behind, not renamed into place), or, when it is to be sealed or cut into
    /// volumes, in the site's staging folder (SPEC 3.2).
    Written,
    /// A bundle cut into volumes: its first piece is in the exchange folder, the others and
    /// the index are not. Only an export that cuts a bundle passes this step, so it is not
    /// in [`ExportStep::ALL`] (the steps every export passes).
    Piece,
    /// The bundle is in the exchange folder in its final form (plain, sealed, or a whole
    /// volume set); what it carried is not recorded as sent.
    Renamed,
    /// Everything is recorded; the stream's older bundles are still in the exchange folder.
    Recorded,
}

impl ExportStep {
    /// Every step every export passes, in order ([`ExportStep::Piece`] comes between
    /// `Written` and `Renamed` when a bundle is cut into volumes).
    pub const ALL: [ExportStep; 6] = [
        ExportStep::Routed,
        ExportStep::Snapshot,
        ExportStep::Reserved,
        ExportStep::Written,
        ExportStep::Renamed,
        ExportStep::Recorded,
    ];
}

/// The steps of taking bundles in around an apply (whose own middle `fail_after` reaches),
/// where [`DockOptions::fail_intake`] stops a download as a crash would. The next dock
/// applies what is in the spool, and skips as a duplicate what was applied already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntakeStep {
    /// The bundles addressed to the site are moved into its spool; none is applied yet.
    Spooled,
    /// A bundle's transaction is committed; the bundle is still in the spool, not archived.
    Applied,
}

impl IntakeStep {
    /// Every step, in the order a download passes them.
    pub const ALL: [IntakeStep; 2] = [IntakeStep::Spooled, IntakeStep::Applied];
}

/// Fails with [`EngineError::Injected`] when `opts` asks for a crash at `step`.
fn crash_point<T: PartialEq>(opts: Option<T>, step: T, what: &'static str) -> Result<()> {
    if opts == Some(step) {
        return Err(EngineError::Injected(what));
    }
    Ok(())
}

/// What became of an incoming bundle; its kebab-case name is what `--json` and the
/// watcher's events say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Applied (and archived).
    Applied,
    /// Applied before (archived again).
    Duplicate,
    /// Cannot apply yet: kept in the spool with the reason (schema gating, a gap).
    Held,
    /// Can never apply: moved to `quarantine/` with the reason.
    Quarantined,
    /// Failed for a reason that is not the bundle's (a full disk, a lock): retried at every
    /// dock.
    Retry,
    /// A file in the exchange folder that does not read whole yet, left there for a later
    /// dock.
    Waiting,
}

impl Disposition {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Applied => "applied",
            Disposition::Duplicate => "duplicate",
            Disposition::Held => "held",
            Disposition::Quarantined => "quarantined",
            Disposition::Retry => "retry",
            Disposition::Waiting => "waiting",
        }
    }
}

impl std::fmt::Display for Disposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one incoming bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Incoming {
    /// File name.
    pub file: String,
    /// What became of it.
    pub outcome: Disposition,
    /// Details: counts, or the reason.
    pub detail: String,
    /// Merge counts for applied bundles.
    pub stats: MergeStats,
}

/// What a dock did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DockReport {
    /// Every incoming bundle considered, in order.
    pub incoming: Vec<Incoming>,
    /// Files written into the exchange folder, each bundle in its final form: the bundle,
    /// the sealed `B.age`, or a volume set's index and pieces.
    pub written: Vec<PathBuf>,
    /// Software upgrade messages, reminders and outcomes for the user (nodes).
    pub upgrade: Vec<crate::upgrade::Note>,
    /// What waits for someone else before this site has anything to do, and the command
    /// that unblocks it (a node before central added it; at central a node's enrollment
    /// request, a submitted migration or upgrade package).
    pub waits: Vec<String>,
    /// Whether anything happened: a bundle taken in (applied, held, refused), a bundle
    /// written, or a software package asked for, installed or failed. False is the text
    /// output's "nothing to do" (what waits, if anything, is in `waits`).
    pub happened: bool,
    /// What the site's retention removed at the end of the dock (archived bundles and
    /// their records older than `[retention] days`).
    pub pruned: crate::retention::Pruned,
    /// At central: entries of its log removed because every node had processed them.
    pub log_pruned: i64,
    /// At central: what compacting the streams of nodes away a long time did (SPEC 2.8).
    pub compacted: crate::catchup::Compacted,
    /// At central: what the routing pass routed, in how many transactions, and what it left
    /// for the next dock (`[routing] max_changes`).
    pub routed: crate::route::run::Routed,
}

impl DockReport {
    /// Computes [`DockReport::happened`] from the rest.
    fn settle(&mut self) {
        self.happened = self
            .incoming
            .iter()
            .any(|i| i.outcome != Disposition::Waiting)
            || !self.written.is_empty()
            || self.upgrade.iter().any(|n| {
                matches!(
                    n.event.as_str(),
                    "requested" | "applied" | "failed" | "refused"
                )
            });
    }

    /// Bundles with this outcome.
    pub fn count(&self, outcome: Disposition) -> usize {
        self.incoming
            .iter()
            .filter(|i| i.outcome == outcome)
            .count()
    }
}

enum Outcome {
    Applied(MergeStats),
    Duplicate,
    Held(String),
}

/// Runs one docking session through `via`. Upgrade prompts take their defaults (see
/// [`dock_with_prompt`]).
pub fn dock(site: &mut Site, via: &Path, opts: &DockOptions) -> Result<DockReport> {
    dock_with_prompt(site, via, opts, &crate::upgrade::NonInteractive)
}

/// Runs one docking session through `via`, asking `prompt` the upgrade questions (download
/// an optional package? install a deferrable one?).
pub fn dock_with_prompt(
    site: &mut Site,
    via: &Path,
    opts: &DockOptions,
    prompt: &dyn crate::upgrade::Prompt,
) -> Result<DockReport> {
    let mut report = DockReport::default();
    if !via.is_dir() {
        return Err(EngineError::io(
            via,
            std::io::Error::new(std::io::ErrorKind::NotFound, "exchange folder not found"),
        ));
    }
    tracing::debug!(site = site.name(), via = %via.display(), "dock starts");
    // SPEC 2.4.1: nothing is applied or exported while capture is not as berth installed it.
    crate::guard::require(site)?;
    // Software upgrades (seed: at the start and, preferably, the end of the session).
    let start = crate::upgrade::plan::Stage::Start;
    report.upgrade = crate::upgrade::node::session(site, start, prompt)?;
    if opts.download {
        report.incoming.extend(intake(site, via)?);
        tracing::debug!(
            taken = report.incoming.len(),
            "intake done; applying the spool"
        );
        crash_point(opts.fail_intake, IntakeStep::Spooled, "intake")?;
        process_spool(site, opts, &mut report)?;
    }
    let end = crate::upgrade::plan::Stage::End;
    // An install may be what a held bundle waits for (a migration needing the new software
    // level): the spool is tried again after it, and the session again after that (a
    // migration that applied may release an `after-schema` package). Each package installs
    // at most once, so this ends.
    for _ in 0..4 {
        let notes = crate::upgrade::node::session(site, end, prompt)?;
        let installed = notes.iter().any(|n| n.event == "applied");
        report.upgrade.extend(notes);
        if !(installed && opts.download && held_count(site)? > 0) {
            break;
        }
        process_spool(site, opts, &mut report)?;
    }
    if opts.upload {
        upload(site, via, opts, &mut report).map_err(|e| not_writable(e, via))?;
    }
    // After what waits for others, what the upload itself left (routing behind).
    let mut left = std::mem::replace(&mut report.waits, waits(site, via)?);
    report.waits.append(&mut left);
    report.pruned = crate::retention::prune(site, opts.clock())?;
    report.settle();
    for i in &report.incoming {
        tracing::info!(file = %i.file, outcome = i.outcome.as_str(), "{}", i.detail);
    }
    for w in &report.written {
        tracing::info!(file = %w.display(), "written");
    }
    Ok(report)
}

/// The upload half of a dock: at a node its stream to central; at central one routing pass,
/// then every node's bundle, then the log manager's pruning.
fn upload(site: &Site, via: &Path, opts: &DockOptions, report: &mut DockReport) -> Result<()> {
    // What a crash left staged is of no use: its sequence number was taken, the next bundle
    // carries everything it did.
    crate::outgoing::clear_staging(site)?;
    match site.role() {
        Role::Node => {
            if let Some(central) = store::meta(&site.conn, meta_keys::CENTRAL)? {
                let p = peer::require(&site.conn, &central)?;
                let outbox = transport::Outbox::read(via, site.name())?;
                if let Some(files) = write_stream(site, via, &p, opts, &outbox)? {
                    report.written.extend(files);
                }
            }
        }
        Role::Central => {
            // One routing pass for every node (seed Figure 6), committed batch by batch
            // with the checkpoints; then each node's bundle carries its partial log.
            let catalog = site.catalog()?;
            let model = site.docking_model()?;
            tracing::debug!("routing central's log to the nodes");
            report.routed = crate::route::run::route(
                &site.conn,
                &catalog,
                model.as_ref(),
                &site.config.routing,
                &opts.progress,
            )?;
            if report.routed.behind > 0 {
                report.waits.push(format!(
                    "routing is behind: {} entries of central's log wait for the next dock \
                     (`[routing] max_changes` = {})",
                    report.routed.behind,
                    site.config.routing.max_changes.unwrap_or(0)
                ));
            }
            // A node away a long time gets the net effect of its stream, not its history
            // (after the routing pass, in a transaction of its own).
            let away = site.config.retention.away_cutoff(opts.clock());
            let tx =
                rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
            report.compacted = crate::catchup::compact_away(&tx, away)?;
            tx.commit()?;
            crash_point(opts.fail_export, ExportStep::Routed, "export")?;
            // The folder is listed once for every node (bundles other processes take
            // meanwhile are found gone when removed, and resent at the next dock).
            let outbox = transport::Outbox::read(via, site.name())?;
            for p in peer::all(&site.conn)? {
                if p.role == "node"
                    && p.revoked.is_none()
                    && let Some(files) = write_stream(site, via, &p, opts, &outbox)?
                {
                    report.written.extend(files);
                }
            }
            // The log manager deletes what every node has processed (seed 004).
            let tx =
                rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
            report.log_pruned =
                crate::partial::prune_log(&tx, crate::partial::LOG_PRUNE_STEP, away)?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// An error writing into the exchange folder, said as what it is: a folder berth must write
/// to (its outgoing bundles go there) and may not, with what to do.
fn not_writable(e: EngineError, via: &Path) -> EngineError {
    match e {
        EngineError::Io { path, source }
            if transport::is_read_only(&source) && path.starts_with(via) =>
        {
            EngineError::NotWritable {
                folder: via.to_path_buf(),
                source,
            }
        }
        other => other,
    }
}

/// What waits for someone else, said with the command that unblocks it.
fn waits(site: &Site, via: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match site.role() {
        Role::Node => {
            if store::meta(&site.conn, meta_keys::CENTRAL)?.is_none() {
                out.push(format!(
                    "this node has not been added at central yet: its enrollment request {} \
                     waits in the exchange folder; at central run `berth node add {} --site \
                     <central> --via <folder>`, then dock here again",
                    berth_bundle::naming::bundle_file_name(site.name(), "all", 0),
                    site.name()
                ));
            }
        }
        Role::Central => {
            let known: std::collections::BTreeSet<String> =
                peer::all(&site.conn)?.into_iter().map(|p| p.name).collect();
            for f in transport::list(via, Some("all"))? {
                if f.seq == 0 && f.sender != site.name() && !known.contains(&f.sender) {
                    out.push(format!(
                        "node {} asks to be added (its request {} waits in {}): run `berth \
                         node add {} --site {} --via {}` to enroll it",
                        f.sender,
                        f.path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        via.display(),
                        f.sender,
                        site.dir.display(),
                        via.display()
                    ));
                }
            }
            out.extend(submissions_waiting(site, via)?);
        }
    }
    Ok(out)
}

/// At central: migrations and upgrade packages submitted from away (`migration submit`,
/// `upgrade submit`) that lie in the exchange folder and have not been accepted. No dock
/// takes them (their names are not bundle names, SPEC 1.8): an administrator reviews and
/// accepts each.
fn submissions_waiting(site: &Site, via: &Path) -> Result<Vec<String>> {
    let version = crate::migrate::state(&site.conn)?.version;
    let mut out = Vec::new();
    let mut names: Vec<String> = fs::read_dir(via)
        .map_err(|e| EngineError::io(via, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        let Some((from, rest)) = name.strip_suffix(".zip").and_then(|n| n.split_once("_to_"))
        else {
            continue;
        };
        let Some(rest) = rest.strip_prefix(site.name()) else {
            continue;
        };
        let file = via.join(&name);
        if let Some(v) = rest
            .strip_prefix("_migration_")
            .and_then(|v| v.parse::<i64>().ok())
            && v > version
        {
            out.push(format!(
                "migration {v} submitted by {from} waits in {}: review it, then run `berth \
                 migration accept --site {} {}`",
                via.display(),
                site.dir.display(),
                file.display()
            ));
        } else if let Some(package) = rest.strip_prefix("_package_") {
            let published: bool = site.conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM berth_upgrades WHERE name = ?1)",
                params![package],
                |r| r.get(0),
            )?;
            if !published {
                out.push(format!(
                    "upgrade package {package} submitted by {from} waits in {}: review it, \
                     then run `berth upgrade accept --site {} {}`",
                    via.display(),
                    site.dir.display(),
                    file.display()
                ));
            }
        }
    }
    Ok(out)
}

fn held_count(site: &Site) -> Result<i64> {
    Ok(site
        .conn
        .query_row("SELECT COUNT(*) FROM berth_held", [], |r| r.get(0))?)
}

/// Takes one explicitly named bundle file (an email attachment, a file an admin handed over)
/// into the spool under its self-describing name, so the next dock applies it. Only the
/// manifest is read here; the bundle is verified when it is applied.
pub fn import_file(site: &Site, path: &Path) -> Result<PathBuf> {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let bundle = Bundle::open(file, &label, &Limits::default())?;
    let m = bundle.manifest();
    if !m.recipients.iter().any(|r| r == site.name()) {
        return Err(EngineError::Refused {
            bundle: label,
            reason: format!("addressed to {:?}, not to {}", m.recipients, site.name()),
        });
    }
    let seq = m.stream.as_ref().map_or(0, |s| s.seq);
    let name = naming::bundle_file_name(&m.sender.site, site.name(), seq);
    let spool = site.folder("spool");
    transport::write_atomic(&spool, &name, |mut out| {
        let mut input = File::open(path).map_err(|e| EngineError::io(path, e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| EngineError::io(path, e))?;
        Ok(out)
    })
}

/// Applies the bundles already in the site's spool (the watcher takes them in itself, once
/// each file is complete) without reading an exchange folder or writing anything.
pub fn apply_spool(site: &mut Site, opts: &DockOptions) -> Result<DockReport> {
    crate::guard::require(site)?;
    let mut report = DockReport::default();
    process_spool(site, opts, &mut report)?;
    report.pruned = crate::retention::prune(site, opts.clock())?;
    report.settle();
    Ok(report)
}

/// How long a file that does not read whole may still be in the middle of being written or
/// copied (the watcher's default `--grace`, SPEC 3.5): until then a dock leaves it where it is.
pub const INTAKE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Moves the bundles addressed to this site from the exchange folder into the spool, and
/// reports what it did not take: files still being written (left for a later dock) and files
/// that can never be opened or joined (quarantined, with the reason).
fn intake(site: &Site, via: &Path) -> Result<Vec<Incoming>> {
    let spool = site.folder("spool");
    remove_parts(&spool)?;
    let keys = crate::keychain::opening_keys(&site.dir, site.key())?;
    let mut report = Vec::new();
    for f in transport::list(via, Some(site.name()))? {
        let file = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let entry = |outcome, detail| Incoming {
            file: file.clone(),
            outcome,
            detail,
            stats: MergeStats::default(),
        };
        if !transport::is_volume_set(&f)
            && let Err(why) = crate::seal::reads_whole(&keys, &f.path)
            && recently_modified(&f.path)
        {
            report.push(entry(
                Disposition::Waiting,
                format!(
                    "does not read as a whole bundle yet ({why}): left where it is, as a copy may still be under way; a later dock takes it once it reads, or quarantines it once it has stayed unchanged for {} s",
                    INTAKE_GRACE.as_secs()
                ),
            ));
            continue;
        }
        match crate::seal::take(&keys, site.name(), &f, &spool, &site.folder("quarantine")) {
            Ok(transport::Taken::Spooled(_)) => {}
            Ok(transport::Taken::Quarantined { reason }) => {
                report.push(entry(Disposition::Quarantined, reason));
            }
            // Gone between the listing and the copy: its sender pruned it (a newer bundle
            // carries it all), or another process docking through the same folder took it.
            // What stays is taken; a later dock takes whatever comes next.
            Err(EngineError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Whether `path` changed within [`INTAKE_GRACE`] (or its time cannot be read, or lies in
/// the future: then it is given the benefit of the doubt).
fn recently_modified(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age < INTAKE_GRACE)
}

/// Removes the `.part` files a killed dock left in the spool (SPEC 1.9): the site's lock is
/// held, so no other process is writing one.
fn remove_parts(spool: &Path) -> Result<()> {
    transport::remove_files(spool, |p| p.extension().is_some_and(|x| x == "part"))
}

fn process_spool(site: &mut Site, opts: &DockOptions, report: &mut DockReport) -> Result<()> {
    let mut done: BTreeSet<PathBuf> = BTreeSet::new();
    loop {
        let mut progress = false;
        let mut last_round = Vec::new();
        for f in transport::list(&site.folder("spool"), Some(site.name()))? {
            if done.contains(&f.path) {
                continue;
            }
            if stopping(opts) {
                break;
            }
            let file = f
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let result = process_one(site, &f.path, opts);
            let entry = match result {
                Ok(Outcome::Applied(stats)) => {
                    progress = true;
                    done.insert(f.path.clone());
                    crash_point(opts.fail_intake, IntakeStep::Applied, "intake")?;
                    transport::move_into(&f.path, &site.folder("archive"))?;
                    let mut detail = format!(
                        "{} applied, {} conflicts, {} skipped, {} overrides",
                        stats.applied, stats.conflicts, stats.skipped, stats.overrides
                    );
                    if stats.repaired > 0 {
                        detail.push_str(&format!(
                            "; {} rows repaired from central's (the replaced ones are kept: \
                             berth repair --list)",
                            stats.repaired
                        ));
                    }
                    Incoming {
                        file,
                        outcome: Disposition::Applied,
                        detail,
                        stats,
                    }
                }
                Ok(Outcome::Duplicate) => {
                    done.insert(f.path.clone());
                    transport::move_into(&f.path, &site.folder("archive"))?;
                    site.conn
                        .execute("DELETE FROM berth_held WHERE file = ?1", params![file])?;
                    Incoming {
                        file,
                        outcome: Disposition::Duplicate,
                        detail: "already applied".into(),
                        stats: MergeStats::default(),
                    }
                }
                Ok(Outcome::Held(reason)) => {
                    record_held(site, &f, &file, &reason)?;
                    Incoming {
                        file,
                        outcome: Disposition::Held,
                        detail: reason,
                        stats: MergeStats::default(),
                    }
                }
                Err(e) if e.is_permanent() => {
                    done.insert(f.path.clone());
                    quarantine(site, &f.path, &e)?;
                    site.conn
                        .execute("DELETE FROM berth_held WHERE file = ?1", params![file])?;
                    Incoming {
                        file,
                        outcome: Disposition::Quarantined,
                        detail: e.to_string(),
                        stats: MergeStats::default(),
                    }
                }
                Err(e @ EngineError::Injected(_)) => return Err(e),
                Err(e) => {
                    // Not the bundle's fault as far as we can tell (a full disk, a lock, a
                    // constraint of this database): it stays in the spool and waits, visibly.
                    done.insert(f.path.clone());
                    let reason = format!("could not be applied, retried at every dock: {e}");
                    record_held(site, &f, &file, &reason)?;
                    Incoming {
                        file,
                        outcome: Disposition::Retry,
                        detail: e.to_string(),
                        stats: MergeStats::default(),
                    }
                }
            };
            last_round.push(entry);
        }
        // Keep only the latest verdict per file: a held bundle may apply in a later round.
        for e in last_round {
            report.incoming.retain(|i| i.file != e.file);
            report.incoming.push(e);
        }
        if !progress || stopping(opts) {
            return Ok(());
        }
    }
}

/// Whether a stop was asked for (no further bundle is started).
fn stopping(opts: &DockOptions) -> bool {
    opts.stop
        .as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
}

fn record_held(site: &Site, f: &transport::Found, file: &str, reason: &str) -> Result<()> {
    site.conn.execute(
        "INSERT INTO berth_held(file, bundle_id, peer, seq, reason, since) VALUES (?1, '', ?2, ?3, ?4, ?5)
         ON CONFLICT(file) DO UPDATE SET reason = excluded.reason",
        params![file, f.sender, f.seq as i64, reason, store::now()],
    )?;
    Ok(())
}

fn quarantine(site: &Site, path: &Path, err: &EngineError) -> Result<()> {
    let q = site.folder("quarantine");
    let dest = transport::move_into(path, &q)?;
    let mut reason_path = dest.clone().into_os_string();
    reason_path.push(".reason.txt");
    let reason_path = PathBuf::from(reason_path);
    let text = format!(
        "This bundle can never be applied at site {}.\nReason: {err}\nIt was moved here at {} (Unix time). \
         Nothing from it was applied.\n",
        site.name(),
        store::now()
    );
    fs::write(&reason_path, text).map_err(|e| EngineError::io(&reason_path, e))
}

/// Trust for an incoming bundle: at central, every registered node key (changes only);
/// at a node, central's key, or before enrollment completes, the key an extract introduces.
fn trust_for(site: &Site, m: &berth_bundle::Manifest) -> Result<TrustedKeys> {
    let mut trust = TrustedKeys::new();
    match site.role() {
        Role::Central => {
            let node_key = |p: &Peer| -> Result<Option<TrustedKey>> {
                if p.role != "node" || p.revoked.is_some() {
                    return Ok(None);
                }
                let kinds = ["changes", "report"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                Ok(Some(TrustedKey {
                    public: berth_bundle::PublicKey::from_hex(&p.public_key)?,
                    site: p.name.clone(),
                    kinds: Some(kinds),
                }))
            };
            // The signer is looked up by the site the manifest names (one row by its key):
            // decoding every node's key for every bundle made absorbing a bundle from each
            // of N nodes cost N^2 (issue 20). Only when that site's key is not the signer
            // are all keys tried, so a bundle signed with another node's key is still
            // refused for what it is (SPEC 1.6: the key signs only for its own site).
            if let Some(k) = peer::get(&site.conn, &m.sender.site)?
                .as_ref()
                .map(node_key)
                .transpose()?
                .flatten()
                .filter(|k| k.public.key_id() == m.sender.key_id)
            {
                trust.add(k);
                return Ok(trust);
            }
            for p in peer::all(&site.conn)? {
                if let Some(k) = node_key(&p)? {
                    trust.add(k);
                }
            }
        }
        Role::Node => {
            let peers = peer::all(&site.conn)?;
            if let Some(p) = peers.iter().find(|p| p.role == "central") {
                trust.add(TrustedKey {
                    public: crate::keychain::central_key_for(&p.public_key, m)?,
                    site: p.name.clone(),
                    kinds: None,
                });
            } else if let Some(k) = crate::extract::introduced_central_key(m) {
                trust.add(TrustedKey {
                    public: k,
                    site: m.sender.site.clone(),
                    kinds: Some(["extract".to_string()].into_iter().collect()),
                });
            }
        }
    }
    Ok(trust)
}

fn process_one(site: &mut Site, path: &Path, opts: &DockOptions) -> Result<Outcome> {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let bundle = Bundle::open(file, &label, &Limits::default())?;
    let trust = trust_for(site, bundle.manifest())?;
    let mut bundle = bundle.verify(&trust)?;
    crate::keychain::note_signer(site, bundle.signer())?;
    let m = bundle.manifest().clone();
    if !m.recipients.iter().any(|r| r == site.name()) {
        return Err(EngineError::Refused {
            bundle: label,
            reason: format!("addressed to {:?}, not to {}", m.recipients, site.name()),
        });
    }
    let applied: bool = site.conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM berth_applied WHERE bundle_id = ?1)",
        params![m.bundle_id],
        |r| r.get(0),
    )?;
    // Past the retention of `berth_applied`, a bundle at or below the last sequence number
    // pruned was applied, or superseded by a later bundle that was (SPEC 2.8 rule 1).
    // At a node, central's bundles numbered below its extract (an earlier extract among
    // them) were written to an earlier key of the node's name (SPEC 2.13): the extract
    // supersedes them.
    let pruned = match &m.stream {
        Some(s) => {
            s.seq <= crate::retention::pruned_seq(&site.conn, &m.sender.site)?
                || (site.role() == Role::Node
                    && s.seq < crate::extract::extract_seq(&site.conn, &m.sender.site)?)
        }
        None => false,
    };
    if applied || pruned {
        note_sender_view(site, &m)?;
        return Ok(Outcome::Duplicate);
    }
    if m.kinds.iter().any(|k| k == "extract") {
        site.require(Role::Node)?;
        return crate::extract::apply(site, &mut bundle).map(Outcome::Applied);
    }
    if m.kinds.iter().any(|k| k == "changes") {
        return apply_changes(site, &mut bundle, opts);
    }
    Err(EngineError::Refused {
        bundle: label,
        reason: format!("carries nothing this site applies ({:?})", m.kinds),
    })
}

/// A bundle's `requires` is what its sender believes we acknowledged. If we applied more,
/// our acknowledgement was lost on the way: forget that we sent it, so the next dock sends
/// it again (otherwise the sender would keep re-sending what we already have).
fn note_sender_view(site: &Site, m: &berth_bundle::Manifest) -> Result<()> {
    if let Some(s) = &m.stream {
        let requires = i64::try_from(s.requires).unwrap_or(i64::MAX);
        site.conn.execute(
            "UPDATE berth_peers SET sent_ack = MIN(sent_ack, ?2) WHERE name = ?1 AND applied_pos > ?2",
            params![m.sender.site, requires],
        )?;
    }
    Ok(())
}

/// What a receiver makes of a changes bundle by its stream position alone (SPEC 2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An earlier bundle of the sender has not arrived: this one waits in the spool.
    Held(String),
    /// Nothing new in the stream (its changes applied, its acknowledgement known): a
    /// duplicate, unless it carries something besides (digests, a repair, a report, upgrade
    /// entries).
    Stale,
    /// It carries changes or an acknowledgement not yet taken.
    Apply,
}

/// The [`Verdict`] on a bundle from `sender` at stream position `s`, at a receiver that has
/// applied the sender's stream up to `applied` and knows it acknowledged up to `acked`.
pub(crate) fn verdict(sender: &str, s: &StreamPosition, applied: i64, acked: i64) -> Verdict {
    let pos = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if pos(s.requires) > applied {
        return Verdict::Held(format!(
            "needs {sender}'s changes up to position {}, but only {applied} are applied here: \
             an earlier bundle from {sender} (before seq {}) has not arrived",
            s.requires, s.seq
        ));
    }
    if pos(s.log_to) <= applied && pos(s.acks) <= acked {
        Verdict::Stale
    } else {
        Verdict::Apply
    }
}

fn apply_changes(
    site: &mut Site,
    bundle: &mut Bundle<Verified, File>,
    opts: &DockOptions,
) -> Result<Outcome> {
    let m = bundle.manifest().clone();
    let label = bundle.label().to_string();
    let sender = m.sender.site.clone();
    let p = peer::require(&site.conn, &sender)?;
    let stream = m.stream.clone().ok_or_else(|| EngineError::BadPayload {
        bundle: label.clone(),
        entry: "manifest".into(),
        reason: "a changes bundle must carry a stream position".into(),
    })?;
    let (seq, log_to, acks) = (
        i64::try_from(stream.seq).unwrap_or(i64::MAX),
        i64::try_from(stream.log_to).unwrap_or(i64::MAX),
        i64::try_from(stream.acks).unwrap_or(i64::MAX),
    );
    let replica_only = m.kinds.iter().any(|k| {
        [
            crate::replica::KIND_DIGESTS,
            crate::replica::KIND_REPAIR,
            crate::replica::KIND_REPORT,
        ]
        .contains(&k.as_str())
    });
    match verdict(&sender, &stream, p.applied_pos, p.acked_pos) {
        Verdict::Held(reason) => return Ok(Outcome::Held(reason)),
        Verdict::Stale => {
            // Nothing new in the stream: what the sender believes we acknowledged tells
            // whether our acknowledgement was lost.
            note_sender_view(site, &m)?;
            if !replica_only && !crate::upgrade::carries(&site.conn, &m)? {
                return Ok(Outcome::Duplicate);
            }
        }
        Verdict::Apply => {}
    }
    let upgrade_in = crate::upgrade::read_incoming(site, bundle)?;
    // Replica digests and repair (SPEC 2.15): central's to a node, a node's report to central.
    let (replica_in, report_in) = match site.role() {
        Role::Node => (crate::replica::read_incoming(site, bundle)?, None),
        Role::Central => (Default::default(), crate::replica::read_report(bundle)?),
    };
    // The schema the bundle's first change was captured under (SPEC 5.5).
    let stream_schema =
        crate::migrate::read_extension(&m).map(|(v, _)| (v, m.schema_checksum.clone()));
    let latest = crate::migrate::read_extension(&m).and_then(|(_, l)| l);
    if role_is_central(site)
        && let Some((v, c)) = &stream_schema
    {
        // A node's bundle holds no migration: one schema for all of it.
        if let Gate::Waits(reason) = schema_gate(&site.conn, *v, c.as_deref())? {
            record_waiting(site, &sender, &upgrade_in, stream_schema.as_ref(), latest)?;
            return Ok(Outcome::Held(reason));
        }
    }
    let spool_path = site.folder("spool").join(&label);
    let catalog = site.catalog()?;
    let model = match site.role() {
        Role::Central => site.docking_model()?,
        Role::Node => None,
    };
    let me = site.name().to_string();
    let role = site.role();
    let now = opts.clock();
    let allow_exec = site.config.allow_executables;
    let attempt = |site: &mut Site,
                   bundle: &mut Bundle<Verified, File>,
                   backup_ready: bool|
     -> Result<Result<(Outcome, Vec<crate::evolve::history::Migration>), Halt>> {
        let mut payload = Payload::stream(bundle, CHANGES_ENTRY)?;
        let apply_stream = |tx: &rusqlite::Transaction<'_>,
                            payload: &mut Payload<berth_bundle::EntryStream<'_, File>>|
         -> Result<
            Result<(MergeStats, Vec<crate::evolve::history::Migration>), Halt>,
        > {
            // A node applies central's decisions without journaling them again; central
            // journals a node's changes through its capture triggers, with what they set off.
            if role == Role::Node {
                capture::set_capture(tx, false)?;
                // Before any migration of the bundle: a table it creates may be local.
                if let Some(classes) = crate::schema::Classes::from_extensions(&m.extensions) {
                    classes.save(tx)?;
                }
            }
            let clock = store::meta_i64(tx, meta_keys::CLOCK)?;
            // Our own changes captured so far happened before anything in this bundle was seen.
            store::stamp_clock(tx, clock)?;
            if role == Role::Node {
                // ... and were made knowing central's stream up to what we had applied (SPEC 2.4).
                tx.execute(
                    "UPDATE berth_log SET seen = ?1 WHERE seen IS NULL",
                    params![p.applied_pos],
                )?;
            }
            // At a node: our changes central had not merged before this bundle's first marker.
            let mut node_apply = NodeApply {
                conn: tx,
                catalog: std::borrow::Cow::Borrowed(&catalog),
                bundle_id: &m.bundle_id,
                pending: if role == Role::Node {
                    Pending::load(tx, &catalog, p.acked_pos)?
                } else {
                    Pending::default()
                },
                now,
            };
            let mut steps = steps::Steps {
                allow_exec,
                backup_ready,
                execs: Vec::new(),
            };
            let central_merge = CentralMerge {
                conn: tx,
                catalog: &catalog,
                node: &sender,
                bundle_id: &m.bundle_id,
                clock,
                central: &me,
                now,
                sql: Default::default(),
                auth: model.as_ref().map(crate::merge::apply::Authorization::new),
            };
            let mut stats = MergeStats::default();
            let mut deferred = Vec::new();
            let mut max_clock = clock;
            let mut count = 0u64;
            let mut line = Vec::new();
            let mut i = 0usize;
            let total = u64::try_from(log_to.saturating_sub(p.applied_pos)).unwrap_or(0);
            let mut progress =
                crate::progress::Tracker::new(&opts.progress, &format!("applying {label}"), total);
            // Schema of the changes being read, and how they translate to ours (`None`: not
            // checked yet since the schema last changed).
            let mut schema = stream_schema.clone();
            let mut translations: Option<Vec<crate::migrate::Translation>> = None;
            while payload
                .next_line(&mut line)
                .map_err(|e| EngineError::io(&spool_path, e))?
            {
                i += 1;
                progress.step();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ch: Change =
                    serde_json::from_slice(&line).map_err(|e| EngineError::BadPayload {
                        bundle: label.clone(),
                        entry: format!("{CHANGES_ENTRY} line {i}"),
                        reason: e.to_string(),
                    })?;
                if ch.pos > log_to {
                    // The manifest is what was signed and what the stream records as applied:
                    // a change beyond it would be applied and yet be sent again (SPEC 2.8).
                    return Err(EngineError::BadPayload {
                        bundle: label.clone(),
                        entry: format!("{CHANGES_ENTRY} line {i}"),
                        reason: format!(
                            "change at position {} lies beyond the manifest's log_to {log_to}",
                            ch.pos
                        ),
                    });
                }
                if ch.op == Op::M {
                    // Everything after a migration was captured under the schema it leads to.
                    if let Ok(mig) = crate::migrate::from_change(&ch) {
                        schema = Some((mig.version, Some(mig.checksum_after)));
                        translations = None;
                    }
                }
                if ch.pos <= p.applied_pos {
                    stats.skipped += 1;
                    continue;
                }
                if opts.fail_after == Some(count) {
                    return Err(EngineError::Injected("apply"));
                }
                let ch = match (&schema, ch.op) {
                    (Some((v, c)), Op::I | Op::U | Op::D) => {
                        if translations.is_none() {
                            match schema_gate(tx, *v, c.as_deref())? {
                                Gate::Ready(t) => translations = Some(t),
                                Gate::Waits(reason) => return Ok(Err(Halt::Wait(reason))),
                            }
                        }
                        let mut ch = Some(ch);
                        for tr in translations.iter().flatten() {
                            ch = ch.and_then(|ch| tr.change(ch));
                        }
                        match ch {
                            Some(ch) => ch,
                            None => {
                                // Its table is gone in our schema.
                                stats.skipped += 1;
                                continue;
                            }
                        }
                    }
                    _ => ch,
                };
                if ch.op == Op::M {
                    // Our schema changes: the changes after it are checked against the new one.
                    translations = None;
                }
                count += 1;
                max_clock = max_clock.max(ch.c);
                match role {
                    Role::Central => central_merge.merge(&ch, &mut stats)?,
                    Role::Node => match steps.apply(&mut node_apply, &ch, &mut stats) {
                        // A local row central does not know of yet may stand in the way (a UNIQUE
                        // value taken by a pending insert); a later change of this bundle (central's
                        // correction) may clear it, so try once more at the end.
                        Err(EngineError::Sql(e)) if is_constraint(&e) => deferred.push(ch),
                        Err(e) => return Err(e),
                        Ok(Step::Done) => {}
                        Ok(Step::Halt(h)) => return Ok(Err(h)),
                    },
                }
            }
            for ch in deferred {
                if let Step::Halt(h) = steps.apply(&mut node_apply, &ch, &mut stats)? {
                    return Ok(Err(h));
                }
            }
            if role == Role::Node {
                // After central's changes: its repair of the buckets we reported, and the
                // digests of what we now hold (SPEC 2.15).
                stats.repaired = crate::replica::apply_incoming(
                    tx,
                    &node_apply.catalog,
                    &replica_in,
                    seq,
                    p.acked_pos.max(acks),
                    &m.bundle_id,
                    now,
                )?;
            } else if let Some(r) = &report_in {
                crate::replica::record_report(tx, &sender, r, now)?;
            }
            let execs = steps.execs;
            drop(node_apply);
            central_merge.finish(&mut stats)?;
            drop(central_merge);
            if role == Role::Central && count > 0 {
                // Everything journaled after this marker was decided knowing this node's changes
                // up to `log_to` (see merge::apply::Pending).
                tx.prepare_cached(
            "INSERT INTO berth_log(tbl, pk, op, origin_pos, clock, target) VALUES ('', '[]', 'A', ?1, ?2, ?3)",
        )?
        .execute(params![log_to, clock, sender])?;
            }
            // Every change applied passed `Change::check`, so `max_clock` is at most MAX_CLOCK.
            store::set_meta(
                tx,
                meta_keys::CLOCK,
                &max_clock.saturating_add(1).to_string(),
            )?;
            peer::record_in(tx, &sender, seq, log_to, acks, now)?;
            if role == Role::Central {
                crate::partial::prune(tx, &sender, p.acked_pos.max(acks))?;
            }
            if role == Role::Node {
                // Central has these; keep the newest row so positions never restart.
                let acked = p.acked_pos.max(acks);
                tx.execute(
                "DELETE FROM berth_log WHERE pos <= ?1 AND pos < (SELECT MAX(pos) FROM berth_log)",
                params![acked],
            )?;
            }
            tx.execute(
        "INSERT INTO berth_applied(bundle_id, peer, seq, changes, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            m.bundle_id,
            sender,
            seq,
            i64::try_from(count).unwrap_or(i64::MAX),
            now
        ],
    )?;
            tx.execute("DELETE FROM berth_held WHERE file = ?1", params![label])?;
            crate::upgrade::record_incoming(tx, &sender, &upgrade_in)?;
            record_peer_schema(tx, &sender, stream_schema.as_ref(), latest)?;
            if role == Role::Node {
                capture::set_capture(tx, true)?;
            }
            Ok(Ok((stats, execs)))
        };
        let tx = site
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The changes are applied as they stream out of the bundle; the entry's hash is
        // checked before the commit, and after any failure (a corrupt entry is reported as
        // such, never as what its bytes made the apply do). Dropping `tx` rolls back.
        let applied = apply_stream(&tx, &mut payload);
        let checked = payload.finish();
        let (stats, execs) = match (applied, checked) {
            (_, Err(corrupt)) => return Err(corrupt),
            (Err(e), Ok(_)) => return Err(e),
            (Ok(Err(halt)), Ok(_)) => return Ok(Err(halt)),
            (Ok(Ok(done)), Ok(_)) => done,
        };
        tx.commit()?;
        Ok(Ok((Outcome::Applied(stats), execs)))
    };
    // A migration with an executable step: the apply starts again once a backup is taken;
    // the steps run after the commit, and a failure puts the backup back (SPEC 5.5).
    let backup_file = crate::migrate::backup_path(site, &label);
    let mut result = attempt(site, bundle, false);
    if matches!(result, Ok(Err(Halt::NeedsBackup))) {
        crate::migrate::backup(site, &backup_file)?;
        result = attempt(site, bundle, true);
    }
    let result = match result {
        Ok(Ok((outcome, execs))) => {
            let failed = execs
                .iter()
                .find_map(|mig| crate::migrate::run_exec(site, mig).err());
            match failed {
                None => Ok(Ok(outcome)),
                Some(e) => {
                    crate::migrate::restore(site, &backup_file)?;
                    Ok(Ok(Outcome::Held(e.to_string())))
                }
            }
        }
        other => other.map(|r| r.map(|(outcome, _)| outcome)),
    };
    let _ = fs::remove_file(&backup_file);
    match result? {
        Ok(outcome) => Ok(outcome),
        Err(Halt::Wait(reason)) => {
            record_waiting(site, &sender, &upgrade_in, stream_schema.as_ref(), latest)?;
            Ok(Outcome::Held(reason))
        }
        // A backup was taken before the second attempt, which therefore never asks again.
        Err(Halt::NeedsBackup) => Ok(Outcome::Held(
            "a backup of the database was needed before this bundle applies and could not be \
             used; it is retried at the next dock"
                .into(),
        )),
    }
}

/// At a node: `Some((ours, central's))` when central's schema version is ahead of ours.
pub fn behind_central(conn: &rusqlite::Connection, central: &str) -> Result<Option<(i64, i64)>> {
    let latest: Option<i64> = conn
        .query_row(
            "SELECT latest FROM berth_peer_schema WHERE peer = ?1",
            params![central],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    let ours = crate::migrate::state(conn)?.version;
    Ok(latest.filter(|l| *l > ours).map(|l| (ours, l)))
}

fn role_is_central(site: &Site) -> bool {
    site.role() == Role::Central
}

/// Whether changes captured under a schema apply here.
enum Gate {
    /// They do, through these translations (none: captured under this site's schema).
    Ready(Vec<crate::migrate::Translation>),
    /// Not yet: why.
    Waits(String),
}

/// How changes captured under schema `version` (`checksum`) apply here: as they are (no
/// translation), translated through the migrations this site made since, or not yet (the
/// bundle is held with the reason).
fn schema_gate(conn: &rusqlite::Connection, version: i64, checksum: Option<&str>) -> Result<Gate> {
    let me = crate::migrate::state(conn)?;
    if version == me.version {
        return match checksum {
            Some(c) if !me.checksum.is_empty() && c != me.checksum => Ok(Gate::Waits(format!(
                "its changes were captured under schema version {version} with checksum {c}, but this site's schema at that version has checksum {}: one of the two was changed outside a migration",
                me.checksum
            ))),
            _ => Ok(Gate::Ready(Vec::new())),
        };
    }
    match crate::migrate::translations_from(conn, version, checksum)? {
        Some(t) => Ok(Gate::Ready(t)),
        None if version > me.version => Ok(Gate::Waits(format!(
            "its changes were captured under schema version {version}, which this site does not have yet (it is at version {}); it applies once that migration is applied here",
            me.version
        ))),
        None => Ok(Gate::Waits(format!(
            "its changes were captured under schema version {version}{}, which this site's migration history (now at version {}) does not lead from",
            checksum
                .map(|c| format!(" (checksum {c})"))
                .unwrap_or_default(),
            me.version
        ))),
    }
}

/// What the peer told of its schema: at central, the node's version; at a node, central's
/// latest version (a node behind it does not upload, SPEC 5.5).
fn record_peer_schema(
    conn: &rusqlite::Connection,
    peer: &str,
    schema: Option<&(i64, Option<String>)>,
    latest: Option<i64>,
) -> Result<()> {
    let Some((version, checksum)) = schema else {
        return Ok(());
    };
    // A site's schema version only moves forward, but bundles can arrive late and out of
    // order (a stale one is still opened for the upgrade report it carries): an older claim
    // never lowers what is recorded.
    conn.execute(
        "INSERT INTO berth_peer_schema(peer, version, checksum, latest, at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(peer) DO UPDATE SET
           checksum = CASE WHEN excluded.version >= version THEN excluded.checksum ELSE checksum END,
           version = MAX(version, excluded.version),
           latest = MAX(COALESCE(latest, 0), COALESCE(excluded.latest, 0)), at = excluded.at",
        params![peer, version, checksum, latest, store::now()],
    )?;
    Ok(())
}

/// A bundle held by the schema gate still delivers what does not depend on the schema: the
/// upgrade announcements and files it carries (the software a migration waits for may be in
/// it) and what the peer told of its schema.
fn record_waiting(
    site: &Site,
    peer: &str,
    upgrade_in: &crate::upgrade::Incoming,
    schema: Option<&(i64, Option<String>)>,
    latest: Option<i64>,
) -> Result<()> {
    let tx = rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
    crate::upgrade::record_incoming(&tx, peer, upgrade_in)?;
    record_peer_schema(&tx, peer, schema, latest)?;
    tx.commit()?;
    Ok(())
}

/// Writes the next bundle of our stream to `p` if it has anything to carry: changes it has
/// not acknowledged (and has not been sent, or whose bundle is no longer waiting in `via`),
/// or an acknowledgement it has not seen.
fn write_stream(
    site: &Site,
    via: &Path,
    p: &Peer,
    opts: &DockOptions,
    outbox: &transport::Outbox,
) -> Result<Option<Vec<PathBuf>>> {
    let progress = &opts.progress;
    let catalog = site.catalog()?;
    // One snapshot for the log and the rows the export reads.
    let tx = rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
    let clock = store::meta_i64(&tx, meta_keys::CLOCK)?;
    store::stamp_clock(&tx, clock)?;
    let spool = site.folder("spool");
    let mut tmp = tempfile::tempfile_in(&spool).map_err(|e| EngineError::io(&spool, e))?;
    let mut out = std::io::BufWriter::new(&mut tmp);
    // The first migration the bundle carries, if any: its changes before it were captured
    // under the schema that migration starts from.
    let mut first_migration: Option<crate::evolve::history::Migration> = None;
    let (n, max_pos) = match site.role() {
        Role::Central => {
            let last = p.partial_pos;
            let total = u64::try_from(last.saturating_sub(p.acked_pos)).unwrap_or(0);
            let mut progress = crate::progress::Tracker::new(
                progress,
                &format!("writing {}'s bundle", p.name),
                total,
            );
            let n = crate::partial::export(&tx, &p.name, p.acked_pos, |line| {
                progress.step();
                if first_migration.is_none() && line.contains(r#""op":"M""#) {
                    let ch: Change = store::stored_json("berth_partial.change", line)?;
                    if ch.op == Op::M {
                        first_migration = crate::migrate::from_change(&ch).ok();
                    }
                }
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| EngineError::io(&spool, e))
            })?;
            (n, last)
        }
        Role::Node if behind_central(&tx, &p.name)?.is_some() => {
            // Behind central's schema: our changes wait until the migration applies here
            // (they are translated to the new schema then). The bundle still acknowledges
            // and reports.
            (0, p.acked_pos)
        }
        Role::Node => {
            let max_pos = store::max_pos(&tx)?;
            let total = u64::try_from(max_pos.saturating_sub(p.acked_pos)).unwrap_or(0);
            let mut progress = crate::progress::Tracker::new(
                progress,
                &format!("writing the bundle for {}", p.name),
                total,
            );
            let n = change::export(
                &tx,
                &Filter {
                    after: p.acked_pos,
                    peer: None,
                    key_updates: true,
                    seen_now: Some(p.applied_pos),
                },
                &catalog,
                |ch| {
                    progress.step();
                    serde_json::to_writer(&mut out, ch)
                        .map_err(|e| EngineError::io(&spool, e.into()))?;
                    out.write_all(b"\n").map_err(|e| EngineError::io(&spool, e))
                },
            )?;
            (n, max_pos)
        }
    };
    out.flush().map_err(|e| EngineError::io(&spool, e))?;
    drop(out);
    tx.commit()?;
    crash_point(opts.fail_export, ExportStep::Snapshot, "export")?;
    let ours_waiting = !outbox.waiting(&p.name).is_empty();
    let new_changes = n > 0 && (max_pos > p.sent_pos || !ours_waiting);
    let new_ack = p.applied_pos > p.sent_ack;
    let mut upgrade_out = crate::upgrade::outgoing(site, &p.name, ours_waiting)?;
    // Replica digests and repair (SPEC 2.15): a node compares its rows at every dock.
    let (central_replica, node_replica) = match site.role() {
        Role::Central => (crate::replica::central_out(&site.conn, &p.name)?, None),
        Role::Node => (
            Default::default(),
            Some(crate::replica::node_out(&site.conn, &catalog, p.acked_pos)?),
        ),
    };
    let replica_due = central_replica.due() || node_replica.as_ref().is_some_and(|r| r.due());
    if !new_changes && !new_ack && !upgrade_out.due() && !replica_due {
        return Ok(None);
    }
    tmp.rewind().map_err(|e| EngineError::io(&spool, e))?;
    let seq = p.out_seq + 1;
    let stream = StreamPosition {
        seq: u64::try_from(seq).unwrap_or(0),
        log_from: u64::try_from(p.acked_pos + 1).unwrap_or(0),
        log_to: u64::try_from(max_pos).unwrap_or(0),
        requires: u64::try_from(p.acked_pos).unwrap_or(0),
        acks: u64::try_from(p.applied_pos).unwrap_or(0),
    };
    let name = naming::bundle_file_name(site.name(), &p.name, stream.seq);
    let mut head = header(site, &p.name, Some(stream.clone()))?;
    if let Some(first) = &first_migration {
        head.schema_checksum = Some(first.checksum_before.clone());
        head.extensions.insert(
            crate::migrate::EXTENSION.into(),
            crate::migrate::extension(
                first.version - 1,
                Some(crate::migrate::state(&site.conn)?.version),
            ),
        );
    }
    upgrade_out.extend_header(&mut head);
    let extra = upgrade_out.take_entries()?;
    let mut entries = vec![(CHANGES_ENTRY, "changes", tmp)];
    entries.extend(
        extra
            .iter()
            .map(|(n, k, f)| f.try_clone().map(|f| (n.as_str(), *k, f)))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| EngineError::io(&spool, e))?,
    );
    match &node_replica {
        Some(r) => entries.extend(r.entry(&spool)?),
        None => {
            // In one read snapshot: the digests describe exactly what the routing pass took.
            let rtx =
                rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Deferred)?;
            entries.extend(crate::replica::central_entries(
                &rtx,
                &catalog,
                site.docking_model()?.as_ref(),
                &p.name,
                p.routed_pos,
                &central_replica,
                &spool,
            )?);
            rtx.commit()?;
        }
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    // The sequence number is taken before the bundle can reach the folder: a crash after
    // that leaves a gap (as a lost bundle does), never two different bundles under one
    // number (SPEC 2.8).
    peer::reserve_out(&site.conn, &p.name, seq)?;
    crash_point(opts.fail_export, ExportStep::Reserved, "export")?;
    let key = match opts.seal {
        true => Some(berth_bundle::PublicKey::from_hex(&p.public_key)?),
        false => None,
    };
    let form = crate::outgoing::Form {
        seal_to: key.as_ref(),
        volume_size: opts.volume_size,
    };
    let files = if form.staged() {
        // Sealed or cut: the plain bundle is written in the site's staging folder and only
        // its final form reaches `via` (SPEC 3.2, 3.4).
        let staging = site.folder(crate::outgoing::STAGING);
        let staged =
            transport::write_atomic(&staging, &name, bundle_filler(site, head, entries, None))?;
        crash_point(opts.fail_export, ExportStep::Written, "export")?;
        crate::outgoing::deliver(&staged, via, form, &mut |piece| match piece {
            1 => crash_point(opts.fail_export, ExportStep::Piece, "export"),
            _ => Ok(()),
        })?
    } else {
        let part = transport::write_part(via, &name, bundle_filler(site, head, entries, None))?;
        crash_point(opts.fail_export, ExportStep::Written, "export")?;
        vec![transport::rename_part(&part, &via.join(&name))?]
    };
    crash_point(opts.fail_export, ExportStep::Renamed, "export")?;
    // What the bundle carried is recorded as sent in one transaction: a crash before the
    // commit sends it again (in the next bundle, the receiver skips what it has).
    let tx = rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
    upgrade_out.record_sent(&tx, &p.name, seq)?;
    match &node_replica {
        Some(r) => r.record_sent(&tx)?,
        None => crate::replica::record_sent(&tx, &p.name, seq, &central_replica)?,
    }
    peer::record_out(&tx, &p.name, seq, max_pos, p.applied_pos, store::now())?;
    tx.commit()?;
    crash_point(opts.fail_export, ExportStep::Recorded, "export")?;
    // The new bundle contains everything the older ones still waiting in `via` carried,
    // except a node's initial extract (central's seq 1 to it, or more for a name enrolled
    // again, SPEC 2.13): a stream bundle never carries the rows an extract does.
    let extract = match site.role() {
        Role::Central => Some(crate::extract::extract_seq(&site.conn, &p.name)?),
        Role::Node => None,
    };
    for old in outbox.waiting(&p.name) {
        if old.seq < stream.seq && extract != Some(old.seq) {
            let _ = transport::remove(old);
        }
    }
    // So does any older bundle of ours a crash left half-way in its `.part` file (only this
    // site, holding its lock, writes bundles under its name).
    for (seq, part) in outbox.parts(&p.name) {
        if *seq < stream.seq {
            let _ = std::fs::remove_file(part);
        }
    }
    Ok(Some(files))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_bundle::{BundleHeader, BundleWriter, Party};

    /// The verdict on a bundle by its stream position: each row a case of SPEC 2.8.
    #[test]
    fn the_verdict_on_a_bundle_follows_its_stream_position() {
        // (requires, log_to, acks) of the bundle; (applied, acked) at the receiver.
        type Case = ((u64, u64, u64), (i64, i64), &'static str);
        let cases: &[Case] = &[
            ((0, 0, 0), (0, 0), "stale"),       // an acknowledgement we already have
            ((0, 5, 0), (0, 0), "apply"),       // the first changes
            ((0, 5, 0), (5, 0), "stale"),       // the same bundle again
            ((3, 8, 0), (5, 0), "apply"),       // more, overlapping what we have
            ((6, 9, 0), (5, 0), "held"),        // needs what an earlier bundle carries
            ((5, 5, 7), (5, 4), "apply"),       // no new change, a new acknowledgement
            ((5, 5, 4), (5, 7), "stale"),       // an older acknowledgement
            ((0, 2, 0), (9, 3), "stale"),       // long superseded
            ((u64::MAX, 0, 0), (9, 0), "held"), // a position no i64 holds
        ];
        for &((requires, log_to, acks), (applied, acked), want) in cases {
            let s = StreamPosition {
                seq: 4,
                log_from: 1,
                log_to,
                requires,
                acks,
            };
            let got = match verdict("hq", &s, applied, acked) {
                Verdict::Held(why) => {
                    assert!(why.contains("hq") && why.contains("before seq 4"), "{why}");
                    "held"
                }
                Verdict::Stale => "stale",
                Verdict::Apply => "apply",
            };
            assert_eq!(
                got, want,
                "requires {requires}, log_to {log_to}, acks {acks} at applied {applied}, acked {acked}"
            );
        }
    }

    /// Central with `n` enrolled nodes (`n0`, `n1`, ...), and their sites.
    fn central_with(root: &Path, n: usize) -> (Site, Vec<Site>) {
        let schema = root.join("schema.sql");
        fs::write(&schema, "CREATE TABLE t(id TEXT PRIMARY KEY, v INTEGER);").unwrap();
        let via = root.join("via");
        fs::create_dir_all(&via).unwrap();
        let (mut hq, _) = Site::init_central(&crate::site::CentralInit {
            dir: &root.join("hq"),
            name: Some("hq"),
            schema: &schema,
            docking: None,
            data: None,
        })
        .unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let node = Site::init_node(&root.join(&name), &name).unwrap();
            let request = crate::enroll::write_request(&node, &via).unwrap();
            crate::enroll::add_node(&mut hq, &name, &request, &Default::default(), &via).unwrap();
            nodes.push(node);
        }
        (hq, nodes)
    }

    fn manifest_from(sender: &str, key: &berth_bundle::SecretKey) -> berth_bundle::Manifest {
        let h = BundleHeader {
            sender: Party {
                site: sender.into(),
                key_id: key.public().key_id(),
            },
            recipients: vec!["hq".into()],
            created: 1,
            bundle_id: None,
            stream: None,
            schema_checksum: None,
            software_level: None,
            critical: Vec::new(),
            extensions: Default::default(),
        };
        let w = BundleWriter::new(std::io::Cursor::new(Vec::new()), h).unwrap();
        let (bytes, _) = w.finish(key).unwrap();
        Bundle::open(
            std::io::Cursor::new(bytes.into_inner()),
            "b",
            &Limits::default(),
        )
        .unwrap()
        .manifest()
        .clone()
    }

    /// Issue 20: central finds a node bundle's signer by the site it names, instead of
    /// decoding every node's key for every bundle (quadratic in the number of nodes). A
    /// bundle signed with another node's key still meets every key, so it is refused as
    /// the other node's (sender mismatch), as before.
    #[test]
    fn central_trusts_only_the_named_node_key_for_a_bundle() {
        let root = tempfile::tempdir().unwrap();
        let (hq, nodes) = central_with(root.path(), 5);
        let m = manifest_from("n3", nodes[3].key());
        let trust = trust_for(&hq, &m).unwrap();
        assert_eq!(trust.len(), 1, "one key looked up, not every node's");
        let k = trust.get(&m.sender.key_id).unwrap();
        assert_eq!(k.site, "n3");

        // n1's key claiming to be n3: every key is there, so verify names the real owner.
        let forged = manifest_from("n3", nodes[1].key());
        let trust = trust_for(&hq, &forged).unwrap();
        assert_eq!(trust.len(), 5);
        assert_eq!(trust.get(&forged.sender.key_id).unwrap().site, "n1");
        // An unknown site: every key (none of which is the signer's).
        let stranger = berth_bundle::SecretKey::from_seed(&[9; 32]);
        let trust = trust_for(&hq, &manifest_from("zed", &stranger)).unwrap();
        assert!(trust.get(&stranger.public().key_id()).is_none());
    }
}
