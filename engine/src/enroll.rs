//! Enrollment and the initial extract. A node's secret key never travels: the node writes a
//! request signed by its new key; the admin approves it at central (`node add`), which
//! registers the key and writes the node's initial bundle (schema, rows, central's key and
//! the position the node starts from).

use crate::error::{EngineError, Result};
use crate::extract::{ROWS_ENTRY, SCHEMA_ENTRY, ext_str, extract_seq_key};
use crate::header::header;
use crate::outgoing::{write_bundle, write_bundle_at};
use crate::peer::{self, Peer};
use crate::site::{Role, Site, check_name};
use crate::{schema, store, transport};
use berth_bundle::{Bundle, Limits, PublicKey, StreamPosition, TrustedKey, TrustedKeys, naming};
use rusqlite::{TransactionBehavior, params};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, Write as _};
use std::path::{Path, PathBuf};

/// Entry of an enrollment request.
pub const ENROLL_ENTRY: &str = "payload/enrollment.toml";
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
    add_node_with(site, name, request, attrs, out, false)
}

/// [`add_node`], with the extract sealed to the key the request presents when `seal` is
/// set (`B.age`, SPEC 3.4; `berth node add --encrypt`): the plain extract is written in the
/// site's staging folder, never in `out`, and the registration commits only once the
/// sealed file is in `out`.
pub fn add_node_with(
    site: &mut Site,
    name: &str,
    request: &Path,
    attrs: &BTreeMap<String, String>,
    out: &Path,
    seal: bool,
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
    let model = site.docking_model()?;
    let who = crate::route::router::NodeState {
        name: name.to_string(),
        attrs: attrs.clone(),
        routed_pos: start,
        ppos: 0,
    };
    let rows = crate::extract::write_rows(&tx, site, model.as_ref(), &who, &mut rows_file)?;
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
    let entries = vec![
        (ROWS_ENTRY, "extract", rows_file),
        (SCHEMA_ENTRY, "extract", schema_file),
    ];
    let path = if seal {
        crate::outgoing::clear_staging(site)?;
        let staging = site.folder(crate::outgoing::STAGING);
        let staged = write_bundle_at(site, &staging, &file_name, h, entries, Some(1))?;
        let form = crate::outgoing::Form {
            seal_to: Some(&key),
            volume_size: None,
        };
        let mut files = crate::outgoing::deliver(&staged, out, form, &mut |_| Ok(()))?;
        files.pop().ok_or_else(|| {
            EngineError::io(
                out,
                std::io::Error::new(std::io::ErrorKind::NotFound, "the sealed extract"),
            )
        })?
    } else {
        write_bundle_at(site, out, &file_name, h, entries, Some(1))?
    };
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
    ("berth_route_later", "node"),
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
    crate::retention::forget(conn, &old.name)?;
    crate::catchup::forget(conn, &old.name)
}

#[cfg(test)]
mod tests {
    use super::NODE_STATE;

    /// Every table of berth's that names a node (a `node` or `peer` column) is forgotten
    /// when the name is enrolled again, or is history kept on purpose: a table added later
    /// without a decision fails here, instead of leaking the revoked machine's state to its
    /// replacement.
    #[test]
    fn every_table_that_names_a_node_is_forgotten_or_kept_on_purpose() {
        const KEPT: &[&str] = &["berth_conflicts"];
        let c = rusqlite::Connection::open_in_memory().unwrap();
        crate::store::install(&c).unwrap();
        let mut st = c
            .prepare(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
                 WHERE m.type = 'table' AND m.name LIKE 'berth\\_%' ESCAPE '\\'
                   AND p.name IN ('node', 'peer')",
            )
            .unwrap();
        let named: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0).unwrap(), r.get(1).unwrap())))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(named.len() >= 10, "{named:?}");
        for (table, column) in &named {
            let forgotten = NODE_STATE.iter().any(|(t, c)| t == table && c == column);
            assert!(
                forgotten || KEPT.contains(&table.as_str()),
                "{table}.{column} names a node: add it to NODE_STATE or KEPT"
            );
        }
        // And what the list names exists.
        for (table, column) in NODE_STATE {
            let ok = *table == "berth_peers" && *column == "name"
                || named.iter().any(|(t, c)| t == table && c == column);
            assert!(ok, "{table}.{column} is not a table's column");
        }
    }
}
