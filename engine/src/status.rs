//! What a site knows: role, schema, streams per peer, held bundles and conflicts.

use crate::error::Result;
use crate::peer;
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;

/// One stream's state as `berth status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Peer name.
    pub name: String,
    /// Peer role.
    pub role: String,
    /// Peer key id.
    pub key_id: String,
    /// Last time one of its bundles applied here.
    pub last_in: Option<i64>,
    /// Last time a bundle was written for it.
    pub last_out: Option<i64>,
    /// Our changes it has not acknowledged yet (pending outward).
    pub pending_out: i64,
    /// Its bundles waiting here (pending inward; see `held` for why).
    pub held_in: i64,
    /// At central with a docking model: the limited rows the node holds.
    pub rows_held: i64,
    /// At central with a docking model: the docking-object instances the node holds (its
    /// instance set).
    pub instances: i64,
    /// At central: entries of central's log not yet routed to the node (routing lag; they
    /// are routed at the next dock).
    pub routing_lag: i64,
    /// Highest sequence number applied from it.
    pub in_seq: i64,
    /// Last sequence number written to it.
    pub out_seq: i64,
    /// Collisions recorded for its changes.
    pub conflicts: i64,
    /// Revocation time, if revoked.
    pub revoked: Option<i64>,
    /// The schema version the peer last reported (at central: each node's; at a node:
    /// central's latest).
    pub schema_version: Option<i64>,
}

/// A held bundle and why it waits.
#[derive(Debug, Clone, Serialize)]
pub struct HeldStatus {
    /// File in the spool.
    pub file: String,
    /// Sender.
    pub peer: String,
    /// Sequence number.
    pub seq: i64,
    /// Why it waits.
    pub reason: String,
    /// Since when.
    pub since: i64,
}

/// Everything `berth status` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Site name.
    pub name: String,
    /// "central" or "node".
    pub role: String,
    /// Checksum of the replicated schema (snapshot checksum, SPEC 5.2).
    pub schema_checksum: Option<String>,
    /// Schema version (0 before any migration).
    pub schema_version: i64,
    /// At a node whose schema is behind central's: `(ours, central's)`. Its changes wait
    /// locally (they are not uploaded) until the migration applies.
    pub upload_waits: Option<(i64, i64)>,
    /// Software level.
    pub software_level: String,
    /// Highest position in the site's update log.
    pub log_pos: i64,
    /// At central: the log's size, how far every node has processed it (what is at or
    /// below is pruned at the next docks) and the node holding it back.
    pub log: Option<crate::partial::LogHold>,
    /// Streams.
    pub peers: Vec<PeerStatus>,
    /// Bundles waiting.
    pub held: Vec<HeldStatus>,
    /// Conflicts recorded (central).
    pub conflicts: i64,
    /// Local changes central overrode (node).
    pub overrides: i64,
    /// At a node before its extract arrived: true.
    pub awaiting_extract: bool,
    /// The capture guard (SPEC 2.4.1): when not sound, docks stop until it is repaired.
    pub capture: crate::guard::Guard,
    /// At a node: the last comparison of its rows with central's digests (SPEC 2.15), with
    /// its time; none before the first bundle that carried digests.
    pub replica: Option<crate::replica::Report>,
    /// At a node: rows repairs kept aside (`berth repair --list`).
    pub kept: i64,
    /// At central: each node's last replica report, with when it arrived.
    pub replicas: Vec<NodeReplica>,
}

/// A node's last replica report at central.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReplica {
    /// The node.
    pub node: String,
    /// What it reported.
    pub report: crate::replica::Report,
    /// When the report arrived (Unix seconds).
    pub received: i64,
    /// Repairs sent for it.
    pub repairs_sent: i64,
}

/// Reads the status of a site.
pub fn status(site: &Site) -> Result<Status> {
    let conn = &site.conn;
    let mut peers = Vec::new();
    for p in peer::all(conn)? {
        let pending_out: i64 = if site.role() == Role::Central {
            crate::partial::pending(conn, &p)?
        } else {
            conn.query_row(
                "SELECT COUNT(*) FROM berth_log WHERE pos > ?1",
                params![p.acked_pos],
                |r| r.get(0),
            )?
        };
        let conflicts: i64 = conn.query_row(
            "SELECT COUNT(*) FROM berth_conflicts WHERE node = ?1",
            params![p.name],
            |r| r.get(0),
        )?;
        let held_in: i64 = conn.query_row(
            "SELECT COUNT(*) FROM berth_held WHERE peer = ?1",
            params![p.name],
            |r| r.get(0),
        )?;
        let rows_held: i64 = conn.query_row(
            "SELECT COUNT(*) FROM berth_node_rows WHERE node = ?1",
            params![p.name],
            |r| r.get(0),
        )?;
        let instances: i64 = conn.query_row(
            "SELECT COUNT(*) FROM berth_instances WHERE node = ?1",
            params![p.name],
            |r| r.get(0),
        )?;
        let routing_lag: i64 = if site.role() == Role::Central {
            conn.query_row(
                "SELECT COUNT(*) FROM berth_log WHERE pos > ?1",
                params![p.routed_pos],
                |r| r.get(0),
            )?
        } else {
            0
        };
        let schema_version: Option<i64> = conn
            .query_row(
                "SELECT CASE WHEN ?2 = 'central' THEN latest ELSE version END
                 FROM berth_peer_schema WHERE peer = ?1",
                params![p.name, p.role],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        let key_id = berth_bundle::PublicKey::from_hex(&p.public_key)
            .map(|k| k.key_id().to_string())
            .unwrap_or_default();
        peers.push(PeerStatus {
            name: p.name,
            role: p.role,
            key_id,
            last_in: p.last_in,
            last_out: p.last_out,
            pending_out,
            held_in,
            rows_held,
            instances,
            routing_lag,
            in_seq: p.in_seq,
            out_seq: p.out_seq,
            conflicts,
            revoked: p.revoked,
            schema_version,
        });
    }
    let mut st =
        conn.prepare("SELECT file, peer, seq, reason, since FROM berth_held ORDER BY peer, seq")?;
    let held = st
        .query_map([], |r| {
            Ok(HeldStatus {
                file: r.get(0)?,
                peer: r.get(1)?,
                seq: r.get(2)?,
                reason: r.get(3)?,
                since: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Status {
        name: site.name().to_string(),
        role: site.role().as_str().to_string(),
        schema_checksum: store::meta(conn, meta_keys::SCHEMA_CHECKSUM)?,
        schema_version: crate::migrate::state(conn)?.version,
        upload_waits: match store::meta(conn, meta_keys::CENTRAL)? {
            Some(c) if site.role() == Role::Node => crate::dock::behind_central(conn, &c)?,
            _ => None,
        },
        software_level: store::meta(conn, meta_keys::SOFTWARE_LEVEL)?.unwrap_or_else(|| "1".into()),
        log_pos: store::max_pos(conn)?,
        log: match site.role() {
            Role::Central => Some(crate::partial::log_hold(
                conn,
                site.config.retention.away_cutoff(store::now()),
            )?),
            Role::Node => None,
        },
        awaiting_extract: site.role() == Role::Node
            && store::meta(conn, meta_keys::CENTRAL)?.is_none(),
        capture: crate::guard::check(site)?,
        replica: crate::replica::last(conn)?,
        kept: conn.query_row("SELECT COUNT(*) FROM berth_kept", [], |r| r.get(0))?,
        replicas: crate::replica::reports(conn)?
            .into_iter()
            .map(|(node, report, received, repairs_sent)| NodeReplica {
                node,
                report,
                received,
                repairs_sent,
            })
            .collect(),
        peers,
        held,
        conflicts: conn.query_row("SELECT COUNT(*) FROM berth_conflicts", [], |r| r.get(0))?,
        overrides: conn.query_row("SELECT COUNT(*) FROM berth_overrides", [], |r| r.get(0))?,
    })
}
