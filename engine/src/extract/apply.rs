//! A node applying its initial extract (SPEC 2.13): the schema, the rows, capture and
//! central's key in one transaction. It records the schema's baseline, so it sits with
//! docking, above schema evolution; central writing the extract is [`super`].

use super::{ROWS_ENTRY, SCHEMA_ENTRY, ext_str, extract_seq_key, introduced_central_key};
use crate::error::{EngineError, Result};
use crate::merge::apply::MergeStats;
use crate::payload::spool_entry;
use crate::peer::{self, Peer};
use crate::progress::Tracker;
use crate::site::Site;
use crate::store::meta_keys;
use crate::value::Row;
use crate::{capture, schema, store};
use berth_bundle::{Bundle, PublicKey, StreamPosition, Verified};
use rusqlite::{TransactionBehavior, params};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};

/// Applies an initial extract at a node: creates the schema, loads the rows, installs the
/// capture triggers and pins central's key, all in one transaction.
pub(crate) fn apply(site: &mut Site, bundle: &mut Bundle<Verified, File>) -> Result<MergeStats> {
    let m = bundle.manifest().clone();
    let label = bundle.label().to_string();
    let bad = |entry: &str, reason: String| EngineError::BadPayload {
        bundle: label.clone(),
        entry: entry.into(),
        reason,
    };
    if peer::all(&site.conn)?.iter().any(|p| p.role == "central") {
        return Err(EngineError::Refused {
            bundle: label,
            reason: "this node already has its initial extract".into(),
        });
    }
    let key = introduced_central_key(&m).ok_or_else(|| bad("manifest", "no central key".into()))?;
    if let Some(hex) = ext_str(&m, "extract", "node_key") {
        let own = site.public_key().key_id().to_string();
        let other = PublicKey::from_hex(hex)
            .map(|k| k.key_id().to_string())
            .map_err(|e| bad("manifest", format!("node_key: {e}")))?;
        if other != own {
            return Err(EngineError::Refused {
                bundle: label,
                reason: format!(
                    "this extract is for {}'s key {other}, not this site's key {own}: it \
                     belongs to another enrollment under the name",
                    site.name()
                ),
            });
        }
    }
    let mut ddl = String::new();
    spool_entry(site, bundle, SCHEMA_ENTRY, Tracker::none())?
        .read_to_string(&mut ddl)
        .map_err(|e| bad(SCHEMA_ENTRY, e.to_string()))?;
    let rows = spool_entry(site, bundle, ROWS_ENTRY, Tracker::none())?;
    let now = store::now();
    let tx = site
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(&ddl)
        .map_err(|e| bad(SCHEMA_ENTRY, e.to_string()))?;
    if let Some(classes) = schema::Classes::from_extensions(&m.extensions) {
        classes.save(&tx)?;
    }
    let tables = schema::tables(&tx)?;
    capture::install(&tx, &tables)?;
    let catalog = crate::table::Catalog::load(&tx, &BTreeMap::new(), Default::default())?;
    capture::set_capture(&tx, false)?;
    let mut stats = MergeStats::default();
    let mut apply = crate::merge::apply::NodeApply {
        conn: &tx,
        catalog: std::borrow::Cow::Borrowed(&catalog),
        bundle_id: &m.bundle_id,
        pending: Default::default(),
        now,
    };
    for (i, line) in BufReader::new(rows).lines().enumerate() {
        let line = line.map_err(|e| bad(ROWS_ENTRY, e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Line {
            t: String,
            r: Row,
        }
        let l: Line = serde_json::from_str(&line)
            .map_err(|e| bad(ROWS_ENTRY, format!("line {}: {e}", i + 1)))?;
        let t = catalog
            .tables
            .get(&l.t)
            .ok_or_else(|| bad(ROWS_ENTRY, format!("unknown table {}", l.t)))?;
        let k =
            t.pk.iter()
                .map(|c| l.r.get(c).cloned().unwrap_or_default())
                .collect();
        let ch = crate::change::Change {
            pos: 0,
            t: l.t,
            k,
            op: crate::change::Op::I,
            old: None,
            new: Some(l.r),
            o: None,
            c: 0,
            ack: None,
            seen: None,
        };
        apply.apply(&ch, &mut stats)?;
    }
    // The schema as central recorded it: its version, and a baseline snapshot to migrate
    // from.
    let version = crate::migrate::read_extension(&m).map_or(0, |(v, _)| v);
    let checksum = crate::evolve::history::baseline(&tx, version)?;
    if m.schema_checksum.as_deref().is_some_and(|c| c != checksum) {
        return Err(bad(
            SCHEMA_ENTRY,
            format!("schema checksum {checksum} differs from the manifest's"),
        ));
    }
    let stream = m.stream.clone().unwrap_or(StreamPosition {
        seq: 1,
        log_from: 1,
        log_to: 0,
        requires: 0,
        acks: 0,
    });
    let central = m.sender.site.clone();
    peer::insert(
        &tx,
        &Peer {
            name: central.clone(),
            public_key: key.to_hex(),
            role: "central".into(),
            attrs: "{}".into(),
            out_seq: 0,
            in_seq: i64::try_from(stream.seq).unwrap_or(0),
            applied_pos: i64::try_from(stream.log_to).unwrap_or(0),
            acked_pos: 0,
            sent_pos: 0,
            sent_ack: 0,
            last_in: Some(now),
            last_out: None,
            added: now,
            revoked: None,
            routed_pos: 0,
            partial_pos: 0,
        },
    )?;
    store::set_meta(&tx, meta_keys::CENTRAL, &central)?;
    if stream.seq > 1 {
        // Central's bundles numbered below it were written to an earlier key of this name.
        store::set_meta(&tx, &extract_seq_key(&central), &stream.seq.to_string())?;
    }
    if let Some(l) = &m.software_level {
        store::set_meta(&tx, meta_keys::SOFTWARE_LEVEL, l)?;
    }
    tx.execute(
        "INSERT INTO berth_applied(bundle_id, peer, seq, changes, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            m.bundle_id,
            central,
            i64::try_from(stream.seq).unwrap_or(0),
            i64::try_from(stats.applied).unwrap_or(0),
            now
        ],
    )?;
    capture::set_capture(&tx, true)?;
    tx.commit()?;
    Ok(stats)
}
