//! A node's initial extract (SPEC 2.13). At central, the rows the new node is to hold (its
//! `limited` rows by its docking objects, the `enterprise` tables whole), written as the
//! extract's `payload/rows.jsonl` while the router records what the node holds; at the node,
//! the extract applied in one transaction. Enrollment itself (the request, the
//! registration, a revoked name enrolled again) is [`crate::enroll`].

use crate::dock::spool_entry;
use crate::enroll::{ROWS_ENTRY, SCHEMA_ENTRY, ext_str, introduced_central_key};
use crate::error::{EngineError, Result};
use crate::merge::apply::MergeStats;
use crate::peer::{self, Peer};
use crate::progress::Tracker;
use crate::route::model::{DockingModel, Visibility};
use crate::route::router::{self, Evaluation, NodeState, Plan};
use crate::site::Site;
use crate::store::meta_keys;
use crate::table::Catalog;
use crate::value::Row;
use crate::{capture, schema, store};
use berth_bundle::{Bundle, PublicKey, StreamPosition, Verified};
use rusqlite::{Connection, TransactionBehavior, params};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write as _};

/// The `berth_meta` key of the sequence number of the extract in the stream between central
/// and `peer` (at central the node, at the node central), when it is not 1 (the node's name
/// was enrolled again after a revocation).
pub(crate) fn extract_seq_key(peer: &str) -> String {
    format!("extract_seq.{peer}")
}

/// The sequence number of the extract in the stream between central and `peer` (SPEC
/// 2.13): 1, or more when the node's name was enrolled again after a revocation.
pub(crate) fn extract_seq(conn: &Connection, peer: &str) -> Result<u64> {
    Ok(
        u64::try_from(store::meta_i64(conn, &extract_seq_key(peer))?)
            .unwrap_or(0)
            .max(1),
    )
}

/// Writes the rows of `who`'s extract into `out`, one JSON line each, and records at central
/// what it holds from now on; returns how many rows. `model` `None`: every table is whole.
pub(crate) fn write_rows(
    tx: &Connection,
    site: &Site,
    model: Option<&DockingModel>,
    who: &NodeState,
    out: &mut File,
) -> Result<u64> {
    let spool = site.folder("spool");
    let mut rows = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
        // One JSON line per row, `{"t": TABLE, "r": {COLUMN: VALUE, ...}}`, written straight
        // from the result row (the extract can be large). Rows come table by table: the text
        // before each value (`{"t":"opty","r":{"id":`, then `,"name":` ...) is made once per
        // table.
        let mut before: (String, Vec<Vec<u8>>) = (String::new(), Vec::new());
        let mut write_row =
            |table: &str, names: &[String], r: &rusqlite::Row<'_>, at: usize| -> Result<()> {
                let io = |e: std::io::Error| EngineError::io(&spool, e);
                if before.0 != table || before.1.len() != names.len().max(1) {
                    before = (table.to_string(), value_prefixes(table, names));
                }
                for (i, prefix) in before.1.iter().enumerate() {
                    w.write_all(prefix).map_err(io)?;
                    if i < names.len() {
                        crate::value::write_json(&mut w, r.get_ref(at + i)?).map_err(io)?;
                    }
                }
                w.write_all(b"}}\n").map_err(io)?;
                rows += 1;
                Ok(())
            };
        // Partial extract: what this node sees (enterprise tables whole, limited tables by
        // its docking objects, central tables not at all), and the rows it holds from now on.
        if let Some(model) = model {
            limited_rows(tx, &site.catalog()?, model, who, &mut write_row)?;
        }
        for t in schema::tables(tx)? {
            let visibility = model
                .as_ref()
                .and_then(|m| m.table(&t.name))
                .map_or(Visibility::Enterprise, |s| s.visibility);
            if visibility != Visibility::Enterprise {
                continue;
            }
            let cols = t
                .columns
                .iter()
                .map(|c| store::ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = tx.prepare(&format!("SELECT {cols} FROM {}", store::ident(&t.name)))?;
            let mut q = st.query([])?;
            while let Some(r) = q.next()? {
                write_row(&t.name, &t.columns, r, 0)?;
            }
        }
        w.flush().map_err(|e| EngineError::io(&spool, e))?;
    }
    Ok(rows)
}

/// Sets up a node being enrolled: routes the other nodes first (so the router's state is
/// current), then evaluates what the new node sees, records it, and calls `sink` with every
/// `limited` row its extract carries (see [`router::extract_rows`]). Returns how many.
fn limited_rows(
    conn: &Connection,
    catalog: &Catalog,
    model: &DockingModel,
    node: &router::NodeState,
    sink: impl FnMut(&str, &[String], &rusqlite::Row<'_>, usize) -> Result<()>,
) -> Result<u64> {
    let plan = Plan::new(conn, model)?;
    router::route_all(conn, catalog, Some(&plan), Evaluation::Set)?;
    router::extract_rows(conn, &plan, node, sink)
}

/// The text an extract line has before each value of a row of `table` with columns
/// `names`: `{"t":TABLE,"r":{"NAME":` for the first, `,"NAME":` for the others (just
/// `{"t":TABLE,"r":{`, with no value after it, when there are no columns).
fn value_prefixes(table: &str, names: &[String]) -> Vec<Vec<u8>> {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let head = format!("{{\"t\":{},\"r\":{{", quoted(table));
    if names.is_empty() {
        return vec![head.into_bytes()];
    }
    names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lead = if i == 0 { head.as_str() } else { "," };
            format!("{lead}{}:", quoted(c)).into_bytes()
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::value_prefixes;

    /// The prefixes with the values between them make the line the node parses, whatever
    /// the names hold.
    #[test]
    fn value_prefixes_make_one_json_object_per_row() {
        let names = vec!["id".to_string(), "say \"hi\"\\".to_string()];
        let mut line = Vec::new();
        for (p, v) in value_prefixes("t\"x", &names).iter().zip(["1", "null"]) {
            line.extend_from_slice(p);
            line.extend_from_slice(v.as_bytes());
        }
        line.extend_from_slice(b"}}");
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"t": "t\"x", "r": {"id": 1, "say \"hi\"\\": null}})
        );
        let mut empty = value_prefixes("t", &[]).concat();
        empty.extend_from_slice(b"}}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!({"t": "t", "r": {}})
        );
    }
}
