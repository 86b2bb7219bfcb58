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

use crate::error::{EngineError, Result};
use crate::merge::apply::MergeStats;
use crate::site::{Role, Site};
use crate::store;
use serde::Serialize;
use std::io::Write as _;
use std::path::{Path, PathBuf};

mod apply;
mod export;
mod intake;

pub use apply::*;
use export::*;
pub use intake::*;

/// Central's docking model for one dock: read and parsed once, resolved against the schema
/// (the routing plan) at most once, by the first bundle it authorizes or by the routing pass.
/// Central's schema does not change during a dock (a node's bundle carries no migration).
pub(crate) struct Model {
    /// The model (`None` at a node, or at a central without one).
    pub docking: Option<crate::route::model::DockingModel>,
    /// Its plan, once something needed it.
    pub plan: std::cell::OnceCell<crate::route::plan::Plan>,
}

impl Model {
    /// The site's model for this dock.
    pub(crate) fn load(site: &Site) -> Result<Model> {
        Ok(Model {
            docking: match site.role() {
                Role::Central => site.docking_model()?,
                Role::Node => None,
            },
            plan: std::cell::OnceCell::new(),
        })
    }

    /// The routing plan (`None` without a model), resolved at its first use.
    pub(crate) fn plan(
        &self,
        conn: &rusqlite::Connection,
    ) -> Result<Option<&crate::route::plan::Plan>> {
        self.docking
            .as_ref()
            .map(|model| crate::route::plan::plan_in(&self.plan, conn, model))
            .transpose()
    }
}

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
    let model = Model::load(site)?;
    if opts.download {
        report.incoming.extend(intake(site, via)?);
        tracing::debug!(
            taken = report.incoming.len(),
            "intake done; applying the spool"
        );
        crash_point(opts.fail_intake, IntakeStep::Spooled, "intake")?;
        process_spool(site, opts, &mut report, &model)?;
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
        process_spool(site, opts, &mut report, &model)?;
    }
    if opts.upload {
        upload(site, via, opts, &mut report, &model).map_err(|e| not_writable(e, via))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use berth_bundle::{Bundle, BundleHeader, BundleWriter, Limits, Party, StreamPosition};
    use std::fs;

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
