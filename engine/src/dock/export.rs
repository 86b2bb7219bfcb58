//! Writing this site's outgoing bundles (SPEC 2.8, 2.9): the routing pass at central, then
//! each stream's next bundle, and what waits for someone else.

use super::*;

use crate::change::{self, Change, Filter, Op};
use crate::error::{EngineError, Result};
use crate::header::header;
use crate::outgoing::bundle_filler;
use crate::peer::{self, Peer};
use crate::site::{Role, Site};
use crate::store::meta_keys;
use crate::{store, transport};
use berth_bundle::{StreamPosition, naming};
use rusqlite::{TransactionBehavior, params};
use std::fs;
use std::io::Seek;
use std::path::{Path, PathBuf};

/// The upload half of a dock: at a node its stream to central; at central one routing pass,
/// then every node's bundle, then the log manager's pruning.
pub(super) fn upload(
    site: &Site,
    via: &Path,
    opts: &DockOptions,
    report: &mut DockReport,
    model: &Model,
) -> Result<()> {
    // What a crash left staged is of no use: its sequence number was taken, the next bundle
    // carries everything it did.
    crate::outgoing::clear_staging(site)?;
    match site.role() {
        Role::Node => {
            if let Some(central) = store::meta(&site.conn, meta_keys::CENTRAL)? {
                let p = peer::require(&site.conn, &central)?;
                let outbox = transport::Outbox::read(via, site.name())?;
                if let Some(files) = write_stream(site, via, &p, opts, &outbox, model)? {
                    report.written.extend(files);
                }
            }
        }
        Role::Central => {
            // One routing pass for every node (seed Figure 6), committed batch by batch
            // with the checkpoints; then each node's bundle carries its partial log.
            let catalog = site.catalog()?;
            tracing::debug!("routing central's log to the nodes");
            report.routed = crate::route::run::route(
                &site.conn,
                &catalog,
                model.plan(&site.conn)?,
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
                    && let Some(files) = write_stream(site, via, &p, opts, &outbox, model)?
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
pub(super) fn not_writable(e: EngineError, via: &Path) -> EngineError {
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
pub(super) fn waits(site: &Site, via: &Path) -> Result<Vec<String>> {
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
pub(super) fn submissions_waiting(site: &Site, via: &Path) -> Result<Vec<String>> {
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

pub(super) fn held_count(site: &Site) -> Result<i64> {
    Ok(site
        .conn
        .query_row("SELECT COUNT(*) FROM berth_held", [], |r| r.get(0))?)
}

/// Writes the next bundle of our stream to `p` if it has anything to carry: changes it has
/// not acknowledged (and has not been sent, or whose bundle is no longer waiting in `via`),
/// or an acknowledgement it has not seen.
pub(super) fn write_stream(
    site: &Site,
    via: &Path,
    p: &Peer,
    opts: &DockOptions,
    outbox: &transport::Outbox,
    model: &Model,
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
                model.docking.as_ref(),
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
