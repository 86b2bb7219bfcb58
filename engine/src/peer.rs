//! The other end of each stream: `berth_peers` (at central: every node; at a node: central).

use crate::error::{EngineError, Result};
use rusqlite::{Connection, OptionalExtension, params};

/// One peer and the state of the two streams between us.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Peer {
    /// Site name.
    pub name: String,
    /// Public key (hex).
    pub public_key: String,
    /// "central" or "node".
    pub role: String,
    /// Attributes given at `node add` (JSON object).
    pub attrs: String,
    /// Last sequence number we sent on our stream to it.
    pub out_seq: i64,
    /// Highest sequence number of its stream we applied.
    pub in_seq: i64,
    /// Highest position of its log we applied.
    pub applied_pos: i64,
    /// Highest position of our log it has acknowledged.
    pub acked_pos: i64,
    /// Highest position of our log in the last bundle we sent it.
    pub sent_pos: i64,
    /// The acknowledgement carried by the last bundle we sent it.
    pub sent_ack: i64,
    /// When we last applied one of its bundles.
    pub last_in: Option<i64>,
    /// When we last wrote it a bundle.
    pub last_out: Option<i64>,
    /// When it was registered.
    pub added: i64,
    /// When its key was revoked, if it was.
    pub revoked: Option<i64>,
    /// At central: the last position of central's log routed into this node's partial log.
    pub routed_pos: i64,
    /// At central: the last position of this node's partial log.
    pub partial_pos: i64,
}

const COLS: &str = "name, public_key, role, attrs, out_seq, in_seq, applied_pos, acked_pos, sent_pos, \
                    sent_ack, last_in, last_out, added, revoked, routed_pos, partial_pos";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Peer> {
    Ok(Peer {
        name: r.get(0)?,
        public_key: r.get(1)?,
        role: r.get(2)?,
        attrs: r.get(3)?,
        out_seq: r.get(4)?,
        in_seq: r.get(5)?,
        applied_pos: r.get(6)?,
        acked_pos: r.get(7)?,
        sent_pos: r.get(8)?,
        sent_ack: r.get(9)?,
        last_in: r.get(10)?,
        last_out: r.get(11)?,
        added: r.get(12)?,
        revoked: r.get(13)?,
        routed_pos: r.get(14)?,
        partial_pos: r.get(15)?,
    })
}

/// Reads one peer.
pub fn get(conn: &Connection, name: &str) -> Result<Option<Peer>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLS} FROM berth_peers WHERE name = ?1"))?
        .query_row(params![name], from_row)
        .optional()?)
}

/// Reads one peer that must exist.
pub fn require(conn: &Connection, name: &str) -> Result<Peer> {
    get(conn, name)?.ok_or_else(|| EngineError::UnknownNode {
        name: name.to_string(),
    })
}

/// Every peer, by name.
pub fn all(conn: &Connection) -> Result<Vec<Peer>> {
    let mut st = conn.prepare_cached(&format!("SELECT {COLS} FROM berth_peers ORDER BY name"))?;
    let rows = st.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Registers a peer.
pub fn insert(conn: &Connection, p: &Peer) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO berth_peers({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"),
        params![
            p.name, p.public_key, p.role, p.attrs, p.out_seq, p.in_seq, p.applied_pos, p.acked_pos,
            p.sent_pos, p.sent_ack, p.last_in, p.last_out, p.added, p.revoked, p.routed_pos,
            p.partial_pos
        ],
    )?;
    Ok(())
}

/// Records what was applied from a peer's bundle.
pub fn record_in(
    conn: &Connection,
    name: &str,
    seq: i64,
    log_to: i64,
    acks: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE berth_peers SET in_seq = MAX(in_seq, ?2), applied_pos = MAX(applied_pos, ?3),
           acked_pos = MAX(acked_pos, ?4), last_in = ?5 WHERE name = ?1",
    )?
    .execute(params![name, seq, log_to, acks, now])?;
    Ok(())
}

/// Takes sequence number `seq` of our stream to a peer before its bundle is written.
pub fn reserve_out(conn: &Connection, name: &str, seq: i64) -> Result<()> {
    conn.prepare_cached("UPDATE berth_peers SET out_seq = MAX(out_seq, ?2) WHERE name = ?1")?
        .execute(params![name, seq])?;
    Ok(())
}

/// Records a bundle written to a peer.
pub fn record_out(
    conn: &Connection,
    name: &str,
    seq: i64,
    sent_pos: i64,
    sent_ack: i64,
    now: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE berth_peers SET out_seq = ?2, sent_pos = ?3, sent_ack = ?4, last_out = ?5 WHERE name = ?1",
    )?
    .execute(params![name, seq, sent_pos, sent_ack, now])?;
    Ok(())
}
