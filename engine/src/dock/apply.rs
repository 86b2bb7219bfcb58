//! Applying one bundle's changes in one transaction (SPEC 2.10-2.12): central merges a
//! node's changes, a node applies central's; the schema gate says whether they apply yet.

use super::*;

use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
use crate::merge::apply::{CentralMerge, MergeStats, NodeApply, Pending, is_constraint};
use crate::payload::Payload;
use crate::peer::{self};
use crate::site::{Role, Site};
use crate::store::meta_keys;
use crate::{capture, store};
use berth_bundle::{Bundle, Verified};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use std::fs::{self, File};

pub(super) fn apply_changes(
    site: &mut Site,
    bundle: &mut Bundle<Verified, File>,
    opts: &DockOptions,
    model: &Model,
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
                auth: model
                    .docking
                    .as_ref()
                    .map(|m| crate::merge::apply::Authorization::new(m, &model.plan)),
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

pub(super) fn role_is_central(site: &Site) -> bool {
    site.role() == Role::Central
}

/// Whether changes captured under a schema apply here.
pub(super) enum Gate {
    /// They do, through these translations (none: captured under this site's schema).
    Ready(Vec<crate::migrate::Translation>),
    /// Not yet: why.
    Waits(String),
}

/// How changes captured under schema `version` (`checksum`) apply here: as they are (no
/// translation), translated through the migrations this site made since, or not yet (the
/// bundle is held with the reason).
pub(super) fn schema_gate(
    conn: &rusqlite::Connection,
    version: i64,
    checksum: Option<&str>,
) -> Result<Gate> {
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
pub(super) fn record_peer_schema(
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
pub(super) fn record_waiting(
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
