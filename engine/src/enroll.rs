//! Enrollment and the initial extract. A node's secret key never travels: the node writes a
//! request signed by its new key; the admin approves it at central (`node add`), which
//! registers the key and writes the node's initial bundle (schema, rows, central's key and
//! the position the node starts from).

use crate::dock::{header, spool_entry, write_bundle, write_bundle_at};
use crate::error::{EngineError, Result};
use crate::merge::apply::MergeStats;
use crate::peer::{self, Peer};
use crate::progress::Tracker;
use crate::route::model::Visibility;
use crate::site::{Role, Site, check_name};
use crate::value::Row;
use crate::{capture, schema, store, transport};
use berth_bundle::{
    Bundle, Limits, PublicKey, StreamPosition, TrustedKey, TrustedKeys, Verified, naming,
};
use rusqlite::{TransactionBehavior, params};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write as _};
use std::path::{Path, PathBuf};

/// Entry of an enrollment request.
pub const ENROLL_ENTRY: &str = "payload/enrollment.toml";
/// Entries of an extract.
pub const SCHEMA_ENTRY: &str = "payload/schema.sql";
/// Rows of an extract: one `{"t": table, "r": row}` per line.
pub const ROWS_ENTRY: &str = "payload/rows.jsonl";

fn ext_str<'a>(m: &'a berth_bundle::Manifest, table: &str, key: &str) -> Option<&'a str> {
    m.extensions.get(table)?.get(key)?.as_str()
}

/// The central key an extract introduces, if its id matches the signer's.
pub fn introduced_central_key(m: &berth_bundle::Manifest) -> Option<PublicKey> {
    let k = PublicKey::from_hex(ext_str(m, "extract", "central_key")?).ok()?;
    (k.key_id() == m.sender.key_id).then_some(k)
}

/// Writes a node's enrollment request into `via`; returns its path.
pub fn write_request(site: &Site, via: &Path) -> Result<PathBuf> {
    site.require(Role::Node)?;
    let mut h = header(site, "all", None)?;
    let mut t = toml::Table::new();
    t.insert(
        "public_key".into(),
        toml::Value::String(site.public_key().to_hex()),
    );
    h.extensions
        .insert("enrollment".into(), toml::Value::Table(t));
    let body = format!(
        "name = {:?}\npublic_key = {:?}\n",
        site.name(),
        site.public_key().to_hex()
    );
    let spool = site.folder("spool");
    let mut tmp = tempfile::tempfile_in(&spool).map_err(|e| EngineError::io(&spool, e))?;
    tmp.write_all(body.as_bytes())
        .and_then(|()| tmp.rewind())
        .map_err(|e| EngineError::io(&spool, e))?;
    let name = naming::bundle_file_name(site.name(), "all", 0);
    write_bundle(site, via, &name, h, vec![(ENROLL_ENTRY, "enrollment", tmp)])
}

/// The result of approving a node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Added {
    /// The node's name.
    pub name: String,
    /// The node's key id (compare it with what `berth init node` printed).
    pub key_id: String,
    /// The initial bundle written for the node.
    pub extract: PathBuf,
    /// Rows in the extract.
    pub rows: u64,
    /// The revoked key this name was registered with before, if it is enrolled again.
    pub replaced: Option<String>,
}

/// Refuses an attribute the docking model does not declare under `[nodes] attributes`: no
/// rule could read it, so it is a typo or a model that is out of date.
fn check_attributes(
    attrs: &BTreeMap<String, String>,
    declared: &std::collections::BTreeSet<String>,
) -> Result<()> {
    match attrs.keys().find(|k| !declared.contains(*k)) {
        Some(k) => Err(EngineError::UndeclaredAttribute {
            name: k.clone(),
            declared: declared.iter().cloned().collect(),
        }),
        None => Ok(()),
    }
}

/// A node's attributes after `berth node set`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attributes {
    /// The node.
    pub name: String,
    /// Its attributes now.
    pub attributes: BTreeMap<String, String>,
    /// Its attributes before.
    pub before: BTreeMap<String, String>,
}

/// Changes a registered node's attributes at central (`set` adds or replaces, `unset`
/// removes), each checked against the docking model's `[nodes] attributes`. The next routing
/// pass evaluates visibility again for every node, so the rows the new attributes show
/// arrive and those they hide leave, as visibility events.
pub fn set_attributes(
    site: &Site,
    name: &str,
    set: &BTreeMap<String, String>,
    unset: &[String],
) -> Result<Attributes> {
    site.require(Role::Central)?;
    if let Some(model) = site.docking_model()? {
        check_attributes(set, &model.node_attributes)?;
    }
    let p = peer::require(&site.conn, name)?;
    let before: BTreeMap<String, String> =
        serde_json::from_str(&p.attrs).map_err(|e| EngineError::Config {
            path: site.dir.join("data.db"),
            reason: format!("node {name}'s stored attributes cannot be read: {e}"),
        })?;
    let mut attributes = before.clone();
    for k in unset {
        attributes.remove(k);
    }
    attributes.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
    let text = serde_json::to_string(&attributes).map_err(|e| EngineError::Config {
        path: site.dir.join("data.db"),
        reason: format!("node {name}'s attributes cannot be written: {e}"),
    })?;
    let tx = rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
    tx.execute(
        "UPDATE berth_peers SET attrs = ?2 WHERE name = ?1",
        params![name, text],
    )?;
    if attributes != before {
        crate::route::router::request_resync(&tx)?;
    }
    tx.commit()?;
    Ok(Attributes {
        name: name.to_string(),
        attributes,
        before,
    })
}

/// Approves a node at central: verifies its request, registers its key and attributes, and
/// writes its initial extract into `out`.
pub fn add_node(
    site: &mut Site,
    name: &str,
    request: &Path,
    attrs: &BTreeMap<String, String>,
    out: &Path,
) -> Result<Added> {
    site.require(Role::Central)?;
    check_name(name)?;
    if name == site.name() {
        return Err(EngineError::ReservedName {
            name: name.to_string(),
            reason: "it is central's own name: bundles to the node and to central could not \
                     be told apart"
                .into(),
        });
    }
    if let Some(model) = site.docking_model()? {
        check_attributes(attrs, &model.node_attributes)?;
    }
    let label = request
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = File::open(request).map_err(|e| EngineError::io(request, e))?;
    let bundle = Bundle::open(file, &label, &Limits::default())?;
    let m = bundle.manifest().clone();
    let refused = |reason: String| EngineError::Refused {
        bundle: label.clone(),
        reason,
    };
    if m.sender.site != name {
        return Err(refused(format!(
            "this is {}'s enrollment request, not {name}'s",
            m.sender.site
        )));
    }
    let key = ext_str(&m, "enrollment", "public_key")
        .and_then(|h| PublicKey::from_hex(h).ok())
        .ok_or_else(|| {
            refused("not an enrollment request (no public key in the manifest)".into())
        })?;
    let mut trust = TrustedKeys::new();
    trust.add(TrustedKey {
        public: key.clone(),
        site: name.to_string(),
        kinds: Some(["enrollment".to_string()].into_iter().collect()),
    });
    let mut verified = bundle.verify(&trust)?;
    verified.check_all_entries()?;
    // A revoked node's name may be enrolled again, with a new key (a replacement for a
    // stolen laptop); a live node's may not, and a revoked key never comes back.
    let replaced = match peer::get(&site.conn, name)? {
        Some(existing) if existing.revoked.is_none() => {
            let key_id = PublicKey::from_hex(&existing.public_key)
                .map(|k| k.key_id().to_string())
                .unwrap_or_default();
            return Err(EngineError::NodeExists {
                name: name.to_string(),
                key_id,
            });
        }
        other => other,
    };
    if is_revoked_key(&site.conn, &key)? {
        return Err(EngineError::RevokedKey {
            name: name.to_string(),
            key_id: key.key_id().to_string(),
        });
    }
    let now = store::now();
    let spool = site.folder("spool");
    let mut rows_file = tempfile::tempfile_in(&spool).map_err(|e| EngineError::io(&spool, e))?;
    let mut schema_file = tempfile::tempfile_in(&spool).map_err(|e| EngineError::io(&spool, e))?;
    let tx = rusqlite::Transaction::new_unchecked(&site.conn, TransactionBehavior::Immediate)?;
    // The new key's stream continues the revoked one's numbering, so that whatever central
    // wrote to the name before is below the extract: a duplicate to the new node (SPEC 2.13).
    let seq = match &replaced {
        Some(old) => {
            forget_revoked(&tx, old, now)?;
            let next = u64::try_from(old.out_seq).unwrap_or(0).max(1) + 1;
            store::set_meta(&tx, &extract_seq_key(name), &next.to_string())?;
            next
        }
        None => 1,
    };
    let start = store::max_pos(&tx)?;
    let mut rows = 0u64;
    let model = site.docking_model()?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut rows_file);
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
        if let Some(model) = &model {
            let who = crate::route::router::NodeState {
                name: name.to_string(),
                attrs: attrs.clone(),
                routed_pos: start,
                ppos: 0,
            };
            crate::partial::enroll(&tx, &site.catalog()?, model, &who, &mut write_row)?;
        }
        for t in schema::tables(&tx)? {
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
    let ddl = schema::schema_sql(&tx)?.join(";\n") + ";\n";
    schema_file
        .write_all(ddl.as_bytes())
        .map_err(|e| EngineError::io(&spool, e))?;
    let attrs_json = serde_json::to_string(attrs).unwrap_or_else(|_| "{}".into());
    peer::insert(
        &tx,
        &Peer {
            name: name.to_string(),
            public_key: key.to_hex(),
            role: "node".into(),
            attrs: attrs_json,
            out_seq: i64::try_from(seq).unwrap_or(i64::MAX),
            in_seq: 0,
            applied_pos: 0,
            // Central's stream to the node is its partial log, which starts empty: the
            // extract holds everything up to central's position `start`.
            acked_pos: 0,
            sent_pos: 0,
            sent_ack: 0,
            last_in: None,
            last_out: Some(now),
            added: now,
            revoked: None,
            routed_pos: start,
            partial_pos: 0,
        },
    )?;
    // The extract holds central's rows as of `start` (SPEC 2.10); marks of an earlier
    // enrollment under this name no longer say anything.
    tx.execute(
        "DELETE FROM berth_route_marks WHERE node = ?1",
        rusqlite::params![name],
    )?;
    crate::partial::mark(&tx, name, 0, start)?;
    rows_file.rewind().map_err(|e| EngineError::io(&spool, e))?;
    schema_file
        .rewind()
        .map_err(|e| EngineError::io(&spool, e))?;
    let stream = StreamPosition {
        seq,
        log_from: 1,
        log_to: 0,
        requires: 0,
        acks: 0,
    };
    let mut h = header(site, name, Some(stream))?;
    let mut ext = toml::Table::new();
    ext.insert(
        "central_key".into(),
        toml::Value::String(site.public_key().to_hex()),
    );
    // The key the extract is for: a node whose key differs (the machine a revoked key was
    // on, or one enrolled again under the name) refuses it.
    ext.insert("node_key".into(), toml::Value::String(key.to_hex()));
    h.extensions
        .insert("extract".into(), toml::Value::Table(ext));
    let file_name = naming::bundle_file_name(site.name(), name, seq);
    let path = write_bundle_at(
        site,
        out,
        &file_name,
        h,
        vec![
            (ROWS_ENTRY, "extract", rows_file),
            (SCHEMA_ENTRY, "extract", schema_file),
        ],
        Some(1),
    )?;
    // The registration commits only once the extract is safely on disk.
    if let Err(e) = tx.commit() {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    if replaced.is_some() {
        // What central wrote to the revoked key and is still waiting in the folder is of use
        // to no one: the new node takes it as a duplicate, the revoked one must not have it.
        if let Ok(outbox) = transport::Outbox::read(out, site.name()) {
            for old in outbox.waiting(name).iter().filter(|f| f.seq < seq) {
                let _ = transport::remove(old);
            }
        }
    }
    Ok(Added {
        name: name.to_string(),
        key_id: key.key_id().to_string(),
        extract: path,
        rows,
        replaced: replaced
            .and_then(|p| PublicKey::from_hex(&p.public_key).ok())
            .map(|k| k.key_id().to_string()),
    })
}

/// The `berth_meta` key of the sequence number of the extract in the stream between central
/// and `peer` (at central the node, at the node central), when it is not 1 (the node's name
/// was enrolled again after a revocation).
fn extract_seq_key(node: &str) -> String {
    format!("extract_seq.{node}")
}

/// The sequence number of the extract in the stream between central and `peer` (SPEC
/// 2.13): 1, or more when the node's name was enrolled again after a revocation.
pub(crate) fn extract_seq(conn: &rusqlite::Connection, peer: &str) -> Result<u64> {
    Ok(
        u64::try_from(store::meta_i64(conn, &extract_seq_key(peer))?)
            .unwrap_or(0)
            .max(1),
    )
}

/// Whether `key` is, or was, a revoked node's.
fn is_revoked_key(conn: &rusqlite::Connection, key: &PublicKey) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM berth_peers WHERE public_key = ?1 AND revoked IS NOT NULL)
             OR EXISTS(SELECT 1 FROM berth_revoked_keys WHERE public_key = ?1)",
        params![key.to_hex()],
        |r| r.get(0),
    )?)
}

/// Central's state of a node, by the column that names it: what it was sent and holds, what
/// it sent and reported. Forgotten when its name is enrolled again after a revocation; the
/// collisions it was party to stay on record (`berth_conflicts`).
const NODE_STATE: &[(&str, &str)] = &[
    ("berth_partial", "node"),
    ("berth_route_marks", "node"),
    ("berth_node_rows", "node"),
    ("berth_instances", "node"),
    ("berth_replicas", "node"),
    ("berth_applied", "peer"),
    ("berth_held", "peer"),
    ("berth_peer_schema", "peer"),
    ("berth_upgrade_nodes", "node"),
    ("berth_upgrade_reports", "node"),
    ("berth_upgrade_peers", "node"),
    ("berth_peers", "name"),
];

/// Forgets the revoked node `old` so its name can be enrolled with another key, keeping its
/// key on record as revoked (it is never registered again).
fn forget_revoked(conn: &rusqlite::Connection, old: &Peer, now: i64) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO berth_revoked_keys(public_key, name, revoked, replaced)
         VALUES (?1, ?2, ?3, ?4)",
        params![old.public_key, old.name, old.revoked.unwrap_or(now), now],
    )?;
    for (table, column) in NODE_STATE {
        conn.execute(
            &format!("DELETE FROM {table} WHERE {column} = ?1"),
            params![old.name],
        )?;
    }
    crate::retention::forget(conn, &old.name)
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
pub(crate) fn apply_extract(
    site: &mut Site,
    bundle: &mut Bundle<Verified, File>,
) -> Result<MergeStats> {
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
    store::set_capture(&tx, false)?;
    let mut stats = MergeStats::default();
    let mut apply = crate::merge::apply::NodeApply {
        conn: &tx,
        catalog: std::borrow::Cow::Borrowed(&catalog),
        bundle_id: &m.bundle_id,
        pending: Default::default(),
        allow_exec: false,
        backup_ready: false,
        execs: Vec::new(),
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
    store::set_meta(&tx, "central", &central)?;
    if stream.seq > 1 {
        // Central's bundles numbered below it were written to an earlier key of this name.
        store::set_meta(&tx, &extract_seq_key(&central), &stream.seq.to_string())?;
    }
    if let Some(l) = &m.software_level {
        store::set_meta(&tx, "software_level", l)?;
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
    store::set_capture(&tx, true)?;
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
