//! Taking bundles in (SPEC 2.9): from the exchange folder into the spool, each verified and
//! judged by its stream position, then applied, held, archived or quarantined.

use super::*;

use crate::error::{EngineError, Result};
use crate::merge::apply::MergeStats;
use crate::peer::{self, Peer};
use crate::site::{Role, Site};
use crate::{store, transport};
use berth_bundle::{Bundle, Limits, StreamPosition, TrustedKey, TrustedKeys, naming};
use rusqlite::params;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Takes one explicitly named bundle file (an email attachment, a file an admin handed over)
/// into the spool under its self-describing name, so the next dock applies it. Only the
/// manifest is read here; the bundle is verified when it is applied.
pub fn import_file(site: &Site, path: &Path) -> Result<PathBuf> {
    let (label, bundle) = open_bundle(path)?;
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
    process_spool(site, opts, &mut report, &Model::load(site)?)?;
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
pub(super) fn intake(site: &Site, via: &Path) -> Result<Vec<Incoming>> {
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
pub(super) fn recently_modified(path: &Path) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .is_none_or(|age| age < INTAKE_GRACE)
}

/// Removes the `.part` files a killed dock left in the spool (SPEC 1.9): the site's lock is
/// held, so no other process is writing one.
pub(super) fn remove_parts(spool: &Path) -> Result<()> {
    transport::remove_files(spool, |p| p.extension().is_some_and(|x| x == "part"))
}

pub(super) fn process_spool(
    site: &mut Site,
    opts: &DockOptions,
    report: &mut DockReport,
    model: &Model,
) -> Result<()> {
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
            let result = process_one(site, &f.path, opts, model);
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
pub(super) fn stopping(opts: &DockOptions) -> bool {
    opts.stop
        .as_ref()
        .is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
}

pub(super) fn record_held(
    site: &Site,
    f: &transport::Found,
    file: &str,
    reason: &str,
) -> Result<()> {
    site.conn.execute(
        "INSERT INTO berth_held(file, bundle_id, peer, seq, reason, since) VALUES (?1, '', ?2, ?3, ?4, ?5)
         ON CONFLICT(file) DO UPDATE SET reason = excluded.reason",
        params![file, f.sender, f.seq as i64, reason, store::now()],
    )?;
    Ok(())
}

pub(super) fn quarantine(site: &Site, path: &Path, err: &EngineError) -> Result<()> {
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
pub(super) fn trust_for(site: &Site, m: &berth_bundle::Manifest) -> Result<TrustedKeys> {
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

pub(super) fn process_one(
    site: &mut Site,
    path: &Path,
    opts: &DockOptions,
    model: &Model,
) -> Result<Outcome> {
    let (label, bundle) = open_bundle(path)?;
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
        return apply_changes(site, &mut bundle, opts, model);
    }
    Err(EngineError::Refused {
        bundle: label,
        reason: format!("carries nothing this site applies ({:?})", m.kinds),
    })
}

/// A bundle's `requires` is what its sender believes we acknowledged. If we applied more,
/// our acknowledgement was lost on the way: forget that we sent it, so the next dock sends
/// it again (otherwise the sender would keep re-sending what we already have).
pub(super) fn note_sender_view(site: &Site, m: &berth_bundle::Manifest) -> Result<()> {
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

/// Opens the bundle file at `path` (manifest read, nothing verified), labelled by its name.
fn open_bundle(path: &Path) -> Result<(String, Bundle<berth_bundle::Unverified, File>)> {
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let bundle = Bundle::open(file, &label, &Limits::default())?;
    Ok((label, bundle))
}
