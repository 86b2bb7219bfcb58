//! Replica digests and repair (issue 16, SPEC 2.15): a node finds out, by itself and offline,
//! that its rows are no longer what central says it holds, and central repairs the
//! differing buckets without a re-extract and without throwing any of the node's rows away.
//!
//! - Central's bundle to a node carries `payload/digests.json` (kind `digests`): the
//!   [`crate::digest`] of every table as the node should hold it once it applied the bundle
//!   (enterprise tables whole, `limited` tables as far as the node holds their rows,
//!   `central` tables not at all). It is written only when central's log has nothing the
//!   routing pass of the bundle did not take (an application writing at central meanwhile
//!   would make it describe rows the bundle does not carry yet).
//! - The node keeps the digests of the newest bundle it applied. At every dock it compares
//!   them with its own rows, leaving out the buckets that hold a row with local changes
//!   central has not merged (their difference is expected: those changes are on their way).
//!   The result is kept (`status`, `berth verify`) and, when it says something new, sent in
//!   the node's next bundle as `payload/report/digest.json` (kind `report`).
//! - Central answers a report that names differing buckets with their rows in its next
//!   bundle, `payload/repair.jsonl` (kind `repair`): per bucket, the number of rows it holds
//!   and each row. It repeats that at most [`MAX_ATTEMPTS`] times for one report, and only
//!   after the node has applied its previous repair.
//! - The node applies a repair after the bundle's changes, with capture suspended like any
//!   of central's changes: rows of the bucket that differ from central's are set to
//!   central's, rows central does not list are deleted, missing rows are inserted. Each row
//!   it changes is first kept aside whole in `berth_kept` (its row as it was, or none),
//!   because berth cannot tell whether the difference was the node's own write made while
//!   capture was off: `status` counts them, `berth repair --list` shows them, and
//!   `berth repair --reapply ID` writes one back as a local change (journaled, merged at
//!   central like any write). Rows with unmerged local changes are never touched.

use crate::digest::{self, Digests, Scope};
use crate::error::{EngineError, Result};
use crate::merge::apply::{Catalog, Pending, TableInfo};
use crate::route::model::{DockingModel, Visibility};
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use crate::value::{Row, same};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufWriter, Seek, Write};

/// Central's digests of what the node should hold.
pub const DIGESTS_ENTRY: &str = "payload/digests.json";
/// Central's rows of the buckets a node reported as differing.
pub const REPAIR_ENTRY: &str = "payload/repair.jsonl";
/// A node's comparison result.
pub const REPORT_ENTRY: &str = "payload/report/digest.json";
/// Content kind of [`DIGESTS_ENTRY`].
pub const KIND_DIGESTS: &str = "digests";
/// Content kind of [`REPAIR_ENTRY`].
pub const KIND_REPAIR: &str = "repair";
/// Content kind of [`REPORT_ENTRY`] (shared with upgrade reports).
pub const KIND_REPORT: &str = "report";
/// Repairs central sends for one report before it stops and leaves it to an operator.
pub const MAX_ATTEMPTS: i64 = 3;
/// The largest digests entry read (64 buckets of every table: far below).
const MAX_DIGESTS: u64 = 64 << 20;
/// The largest report entry read.
const MAX_REPORT: u64 = 16 << 20;

/// A place where the node's rows and central's digests differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// The table.
    pub t: String,
    /// The bucket (`None`: the whole table, missing on one side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<u16>,
    /// Rows the node holds there.
    pub node: u64,
    /// Rows central says it should hold there.
    pub central: u64,
}

/// The result of one comparison at a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The `seq` of central's bundle whose digests were compared.
    pub seq: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Where the rows differ.
    pub differ: Vec<Place>,
    /// Buckets left out because they hold rows with local changes not merged yet.
    pub skipped: u64,
    /// Rows the repairs applied with that bundle changed, and of those, rows kept aside.
    #[serde(default)]
    pub repaired: u64,
}

impl Report {
    /// One line for people.
    pub fn summary(&self) -> String {
        let when = format!("at {} (digests of central's bundle {})", self.at, self.seq);
        if self.differ.is_empty() {
            format!(
                "rows match central's digests {when}{}",
                if self.skipped > 0 {
                    format!(
                        "; {} bucket(s) with unsent local changes left for later",
                        self.skipped
                    )
                } else {
                    String::new()
                }
            )
        } else {
            let places: Vec<String> = self
                .differ
                .iter()
                .map(|p| match p.b {
                    Some(b) => format!(
                        "{} bucket {b} ({} rows here, {} at central)",
                        p.t, p.node, p.central
                    ),
                    None => format!("{} ({} rows here, {} at central)", p.t, p.node, p.central),
                })
                .collect();
            format!(
                "rows differ from central's digests {when}: {}; central sends the rows of these \
                 buckets in its next bundle (the node's rows it replaces are kept aside: \
                 `berth repair --list`)",
                places.join(", ")
            )
        }
    }
}

/// A row kept aside by a repair (`berth repair --list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Its id (`berth repair --reapply ID`).
    pub id: i64,
    /// The table.
    pub table: String,
    /// The key (JSON array of wire values).
    pub key: String,
    /// The node's row as the repair found it (`None`: the node had no such row).
    pub node_row: Option<Row>,
    /// Central's row the repair put in its place (`None`: central has none; deleted).
    pub central_row: Option<Row>,
    /// The bundle that carried the repair.
    pub bundle_id: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The tables a node holds and how much of each: what its digests cover.
pub fn scope<'c>(
    catalog: &'c Catalog,
    model: Option<&DockingModel>,
    node: Option<&str>,
) -> Vec<(&'c TableInfo, Scope)> {
    catalog
        .tables
        .values()
        .filter_map(|t| {
            let vis = model
                .and_then(|m| m.table(&t.name))
                .map_or(Visibility::Enterprise, |s| s.visibility);
            match (vis, node) {
                (Visibility::Central | Visibility::Local, _) => None,
                (Visibility::Limited, Some(n)) => Some((t, Scope::Held(n.to_string()))),
                _ => Some((t, Scope::All)),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Central
// ---------------------------------------------------------------------------------------

/// What central's next bundle to a node carries for its replica.
#[derive(Debug, Default)]
pub struct CentralOut {
    /// The node's last report names differing buckets and a repair is due.
    pub repair: Vec<Place>,
    /// The seq the node's report followed.
    report_seq: i64,
    /// The node has never been sent digests (a new node, or one enrolled before them):
    /// a bundle goes to it so it has something to compare with.
    first_digests: bool,
    /// The bundle being written carries digests.
    with_digests: std::cell::Cell<bool>,
    /// The bundle being written carries the repair.
    with_repair: std::cell::Cell<bool>,
}

impl CentralOut {
    /// Whether it alone justifies writing a bundle (a repair, or the node's first digests).
    pub fn due(&self) -> bool {
        !self.repair.is_empty() || self.first_digests
    }
}

/// Decides whether central's next bundle to `node` carries a repair: its last report names
/// differing buckets, it has applied the previous repair (or none was sent), and fewer than
/// [`MAX_ATTEMPTS`] were sent for what it reports.
pub fn central_out(conn: &Connection, node: &str) -> Result<CentralOut> {
    let row: Option<(Option<String>, i64, i64, i64)> = conn
        .query_row(
            "SELECT report, repair_seq, attempts, digests_seq FROM berth_replicas WHERE node = ?1",
            params![node],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((text, repair_seq, attempts, digests_seq)) = row else {
        return Ok(CentralOut {
            first_digests: true,
            ..CentralOut::default()
        });
    };
    let mut out = CentralOut {
        first_digests: digests_seq == 0,
        ..CentralOut::default()
    };
    let Some(report) = text.and_then(|t| serde_json::from_str::<Report>(&t).ok()) else {
        return Ok(out);
    };
    if !report.differ.is_empty() && report.seq >= repair_seq && attempts < MAX_ATTEMPTS {
        out.repair = report.differ;
        out.report_seq = report.seq;
    }
    Ok(out)
}

/// Writes central's replica entries for `node` into temporary files in `spool`: the digests
/// (when the log holds nothing past `routed_pos`, the position the bundle's partial log
/// covers) and the repair, if due. Returns (name, kind, file) sorted by name.
pub fn central_entries(
    conn: &Connection,
    catalog: &Catalog,
    model: Option<&DockingModel>,
    node: &str,
    routed_pos: i64,
    out: &CentralOut,
    spool: &std::path::Path,
) -> Result<Vec<(&'static str, &'static str, std::fs::File)>> {
    let tables = scope(catalog, model, Some(node));
    let mut entries = Vec::new();
    if store::max_pos(conn)? != routed_pos {
        // Written since the routing pass: the rows are ahead of the bundle's changes. The
        // next bundle carries both (a repair stays due until sent).
        return Ok(entries);
    }
    {
        let digests = digest::compute(conn, &tables)?;
        let mut f = tempfile::tempfile_in(spool).map_err(|e| EngineError::io(spool, e))?;
        f.write_all(digest::to_json(&digests).as_bytes())
            .map_err(|e| EngineError::io(spool, e))?;
        f.rewind().map_err(|e| EngineError::io(spool, e))?;
        entries.push((DIGESTS_ENTRY, KIND_DIGESTS, f));
        out.with_digests.set(true);
    }
    if !out.repair.is_empty() {
        out.with_repair.set(true);
        let mut f = tempfile::tempfile_in(spool).map_err(|e| EngineError::io(spool, e))?;
        write_repair(conn, &tables, &out.repair, &mut f, spool)?;
        f.rewind().map_err(|e| EngineError::io(spool, e))?;
        entries.push((REPAIR_ENTRY, KIND_REPAIR, f));
    }
    Ok(entries)
}

/// One line of `payload/repair.jsonl`: a bucket's header (`n`: how many rows central holds
/// in it; they follow) or one of its rows (`k`, `r`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepairLine {
    t: String,
    b: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<Row>,
}

fn write_repair(
    conn: &Connection,
    tables: &[(&TableInfo, Scope)],
    places: &[Place],
    f: &mut std::fs::File,
    spool: &std::path::Path,
) -> Result<()> {
    let io = |e: std::io::Error| EngineError::io(spool, e);
    let mut w = BufWriter::new(f);
    for (t, scope) in tables {
        let buckets: BTreeSet<u16> = places
            .iter()
            .filter(|p| p.t == t.name)
            .flat_map(|p| match p.b {
                Some(b) => vec![b],
                None => (0..digest::BUCKETS).collect(),
            })
            .collect();
        if buckets.is_empty() {
            continue;
        }
        let mut rows: BTreeMap<u16, Vec<(Vec<Json>, Row)>> =
            buckets.iter().map(|b| (*b, Vec::new())).collect();
        digest::rows_in_buckets(conn, t, scope, &buckets, |k, r| {
            if let Some(b) = digest::bucket_of_key(&k)
                && let Some(list) = rows.get_mut(&b)
            {
                list.push((k, r));
            }
            Ok(())
        })?;
        for (b, list) in rows {
            let head = RepairLine {
                t: t.name.clone(),
                b,
                n: Some(list.len() as u64),
                k: None,
                r: None,
            };
            serde_json::to_writer(&mut w, &head).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
            for (k, r) in list {
                let line = RepairLine {
                    t: t.name.clone(),
                    b,
                    n: None,
                    k: Some(k),
                    r: Some(r),
                };
                serde_json::to_writer(&mut w, &line).map_err(|e| io(e.into()))?;
                w.write_all(b"\n").map_err(io)?;
            }
        }
    }
    w.flush().map_err(io)
}

/// Records that bundle `seq` to `node` carried the repair.
pub fn record_sent(conn: &Connection, node: &str, seq: i64, out: &CentralOut) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO berth_replicas(node) VALUES (?1)",
        params![node],
    )?;
    if out.with_repair.get() {
        conn.execute(
            "UPDATE berth_replicas SET repair_seq = ?2, attempts = attempts + 1 WHERE node = ?1",
            params![node, seq.max(out.report_seq)],
        )?;
    }
    if out.with_digests.get() {
        conn.execute(
            "UPDATE berth_replicas SET digests_seq = ?2 WHERE node = ?1",
            params![node, seq],
        )?;
    }
    Ok(())
}

/// Reads a node's report from its bundle, if it carries one.
pub fn read_report(
    bundle: &mut berth_bundle::Bundle<berth_bundle::Verified, std::fs::File>,
) -> Result<Option<Report>> {
    let label = bundle.label().to_string();
    let Some(e) = bundle.manifest().entry(REPORT_ENTRY).cloned() else {
        return Ok(None);
    };
    if e.kind != KIND_REPORT {
        return Err(EngineError::BadPayload {
            bundle: label,
            entry: REPORT_ENTRY.into(),
            reason: format!("kind {:?}, expected {KIND_REPORT:?}", e.kind),
        });
    }
    let data = bundle.read_entry(REPORT_ENTRY, MAX_REPORT)?;
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| EngineError::BadPayload {
            bundle: label,
            entry: REPORT_ENTRY.into(),
            reason: e.to_string(),
        })
}

/// Records a node's report (inside the apply transaction). A report naming other places
/// than the last one starts the repair attempts anew.
pub fn record_report(conn: &Connection, node: &str, report: &Report, now: i64) -> Result<()> {
    let text = serde_json::to_string(report).unwrap_or_default();
    let before: Option<String> = conn
        .query_row(
            "SELECT report FROM berth_replicas WHERE node = ?1",
            params![node],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten();
    let same_places = before
        .and_then(|b| serde_json::from_str::<Report>(&b).ok())
        .is_some_and(|b| b.differ == report.differ);
    conn.execute(
        "INSERT INTO berth_replicas(node, report, at) VALUES (?1, ?2, ?3)
         ON CONFLICT(node) DO UPDATE SET report = excluded.report, at = excluded.at,
           attempts = CASE WHEN ?4 THEN attempts ELSE 0 END",
        params![node, text, now, same_places],
    )?;
    Ok(())
}

/// One node's last report at central as people read it (`status`, `berth verify`).
pub fn report_line(node: &str, report: &Report, received: i64, repairs_sent: i64) -> String {
    format!(
        "{node}: {} (received at {received}{})",
        report.summary(),
        if repairs_sent > 0 {
            format!("; repairs sent: {repairs_sent}")
        } else {
            String::new()
        }
    )
}

/// Each node's last report at central, with when it arrived and the repairs sent for it.
pub fn reports(conn: &Connection) -> Result<Vec<(String, Report, i64, i64)>> {
    let mut st = conn.prepare(
        "SELECT node, report, at, attempts FROM berth_replicas WHERE report IS NOT NULL
         ORDER BY node",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (node, text, at, attempts) = row?;
        if let Ok(report) = serde_json::from_str(&text) {
            out.push((node, report, at, attempts));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Node
// ---------------------------------------------------------------------------------------

/// Central's rows of one repaired bucket: how many its header announced, and each row with
/// its key.
type BucketRows = (u64, Vec<(Vec<Json>, Row)>);

/// What a bundle from central carries for the replica, read before its apply transaction.
#[derive(Debug, Default)]
pub struct Incoming {
    /// The digests of what the node holds once it applied the bundle.
    pub digests: Option<Digests>,
    /// Repaired buckets by (table, bucket).
    repair: BTreeMap<(String, u16), BucketRows>,
}

/// Reads the digests and the repair of central's bundle (hostile input: every line is
/// checked; a malformed one refuses the bundle).
pub fn read_incoming(
    site: &Site,
    bundle: &mut berth_bundle::Bundle<berth_bundle::Verified, std::fs::File>,
) -> Result<Incoming> {
    let label = bundle.label().to_string();
    let bad = |entry: &str, reason: String| EngineError::BadPayload {
        bundle: label.clone(),
        entry: entry.into(),
        reason,
    };
    let mut inc = Incoming::default();
    if bundle.manifest().entry(DIGESTS_ENTRY).is_some() {
        let data = bundle.read_entry(DIGESTS_ENTRY, MAX_DIGESTS)?;
        let d = digest::parse(&data).map_err(|e| bad(DIGESTS_ENTRY, e.to_string()))?;
        inc.digests = Some(d);
    }
    if bundle.manifest().entry(REPAIR_ENTRY).is_some() {
        let mut payload = crate::dock::Payload::spooled(site, bundle, REPAIR_ENTRY)?;
        let mut line = Vec::new();
        let mut i = 0usize;
        let spool = site.folder("spool");
        while payload
            .next_line(&mut line)
            .map_err(|e| EngineError::io(&spool, e))?
        {
            i += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let at = format!("{REPAIR_ENTRY} line {i}");
            let l: RepairLine =
                serde_json::from_slice(&line).map_err(|e| bad(&at, e.to_string()))?;
            if l.b >= digest::BUCKETS {
                return Err(bad(&at, format!("bucket {} out of range", l.b)));
            }
            let slot = (l.t.clone(), l.b);
            match (l.n, l.k, l.r) {
                (Some(n), None, None) => {
                    inc.repair.insert(slot, (n, Vec::new()));
                }
                (None, Some(k), Some(r)) => {
                    if digest::bucket_of_key(&k) != Some(l.b) {
                        return Err(bad(&at, "the row's key is not in that bucket".into()));
                    }
                    let Some(list) = inc.repair.get_mut(&slot) else {
                        return Err(bad(&at, "a row before its bucket's header".into()));
                    };
                    list.1.push((k, r));
                }
                _ => return Err(bad(&at, "neither a bucket header nor a row".into())),
            }
        }
        for ((t, b), (n, rows)) in &inc.repair {
            if *n != rows.len() as u64 {
                return Err(bad(
                    REPAIR_ENTRY,
                    format!(
                        "{t} bucket {b}: header says {n} rows, {} follow",
                        rows.len()
                    ),
                ));
            }
        }
    }
    Ok(inc)
}

/// The (table, key text) of every row with local changes central has not merged.
fn unmerged(conn: &Connection, catalog: &Catalog, acked: i64) -> Result<HashSet<(String, String)>> {
    Ok(Pending::load(conn, catalog, acked)?
        .keys()
        .cloned()
        .collect())
}

/// Applies central's repair and keeps the digests, inside the apply transaction (capture
/// suspended). Rows with local changes central has not merged (after `acked`) are left
/// alone. Returns how many rows it changed.
pub fn apply_incoming(
    conn: &Connection,
    catalog: &Catalog,
    inc: &Incoming,
    seq: i64,
    acked: i64,
    bundle_id: &str,
    now: i64,
) -> Result<u64> {
    // A bundle older than the newest applied (a copy that arrived late) describes central
    // as it was: its digests and repair would undo what newer bundles brought.
    if seq <= store::meta_i64(conn, meta_keys::REPLICA_DIGESTS_SEQ)? {
        return Ok(0);
    }
    let mut changed = 0u64;
    if !inc.repair.is_empty() {
        // Rows of several tables are repaired one by one: a child may be put back before its
        // parent. Foreign keys are checked at commit (the pragma ends with the transaction).
        conn.execute_batch("PRAGMA defer_foreign_keys = ON")?;
        let pending = unmerged(conn, catalog, acked)?;
        for ((table, b), (_, rows)) in &inc.repair {
            let Some(t) = catalog.tables.get(table) else {
                continue;
            };
            let central: BTreeMap<String, (&Vec<Json>, &Row)> = rows
                .iter()
                .map(|(k, r)| (canonical_key(k), (k, r)))
                .collect();
            let mut ours: BTreeMap<String, (Vec<Json>, Row)> = BTreeMap::new();
            digest::rows_in_buckets(conn, t, &Scope::All, &BTreeSet::from([*b]), |k, r| {
                ours.insert(serde_json::to_string(&k).unwrap_or_default(), (k, r));
                Ok(())
            })?;
            let keys: BTreeSet<&String> = central.keys().chain(ours.keys()).collect();
            for key in keys {
                if pending.contains(&(t.name.clone(), key.clone())) {
                    continue;
                }
                let theirs = central.get(key);
                let mine = ours.get(key);
                let equal = match (theirs, mine) {
                    (Some((_, c)), Some((_, n))) => rows_equal(c, n),
                    _ => false,
                };
                if equal {
                    continue;
                }
                keep(
                    conn,
                    t,
                    key,
                    mine.map(|m| &m.1),
                    theirs.map(|c| c.1),
                    bundle_id,
                    now,
                )?;
                let k: &Vec<Json> = match (theirs, mine) {
                    (Some((k, _)), _) => k,
                    (None, Some((k, _))) => k,
                    (None, None) => continue,
                };
                crate::merge::apply::repair_row(conn, t, k, theirs.map(|c| c.1))?;
                changed += 1;
            }
        }
    }
    if let Some(d) = &inc.digests {
        store::set_meta(conn, meta_keys::REPLICA_DIGESTS, &digest::to_json(d))?;
        store::set_meta(conn, meta_keys::REPLICA_DIGESTS_SEQ, &seq.to_string())?;
    }
    if changed > 0 {
        store::set_meta(conn, meta_keys::REPLICA_REPAIRED, &changed.to_string())?;
    }
    Ok(changed)
}

/// A key's text as a row read from SQLite gives it, whatever spelling of the same values it
/// came in (`1.0` for a real 1, hex in either case), so central's rows and ours are matched
/// by value.
fn canonical_key(k: &[Json]) -> String {
    let values = digest::canonical(k).unwrap_or_else(|| k.to_vec());
    serde_json::to_string(&values).unwrap_or_default()
}

fn rows_equal(a: &Row, b: &Row) -> bool {
    a.len() == b.len() && a.iter().all(|(c, v)| b.get(c).is_some_and(|w| same(v, w)))
}

fn keep(
    conn: &Connection,
    t: &TableInfo,
    key: &str,
    node_row: Option<&Row>,
    central_row: Option<&Row>,
    bundle_id: &str,
    now: i64,
) -> Result<()> {
    let text = |r: Option<&Row>| r.map(|r| serde_json::to_string(r).unwrap_or_default());
    conn.execute(
        "INSERT INTO berth_kept(tbl, pk, node_row, central_row, bundle_id, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            t.name,
            key,
            text(node_row),
            text(central_row),
            bundle_id,
            now
        ],
    )?;
    Ok(())
}

/// The digests of every replicated table as this node holds it (before a statement from
/// central runs: [`mark_local`]).
pub fn local_digests(conn: &Connection, catalog: &Catalog) -> Result<Digests> {
    let tables: Vec<(&TableInfo, Scope)> =
        catalog.tables.values().map(|t| (t, Scope::All)).collect();
    digest::compute(conn, &tables)
}

/// After a statement from central ran at this node: the buckets it changed hold rows that
/// differ from central's on purpose (a purge of old rows, a local fix-up). They are recorded
/// in `berth_local_buckets` and left out of every later comparison.
pub fn mark_local(conn: &Connection, catalog: &Catalog, before: &Digests) -> Result<()> {
    let after = local_digests(conn, catalog)?;
    let mut st = conn
        .prepare_cached("INSERT OR IGNORE INTO berth_local_buckets(tbl, bucket) VALUES (?1, ?2)")?;
    for m in digest::compare(&after, before) {
        match m.bucket {
            Some(b) => {
                st.execute(params![m.table, b])?;
            }
            None => {
                for b in 0..digest::BUCKETS {
                    st.execute(params![m.table, b])?;
                }
            }
        }
    }
    Ok(())
}

/// The buckets statements from central changed on purpose ([`mark_local`]).
fn local_buckets(conn: &Connection) -> Result<BTreeSet<(String, u16)>> {
    let mut st = conn.prepare("SELECT tbl, bucket FROM berth_local_buckets")?;
    let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u16>(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The digests of the newest bundle from central the node applied, with its seq.
fn stored_digests(conn: &Connection) -> Result<Option<(i64, Digests)>> {
    let Some(text) = store::meta(conn, meta_keys::REPLICA_DIGESTS)? else {
        return Ok(None);
    };
    let seq = store::meta_i64(conn, meta_keys::REPLICA_DIGESTS_SEQ)?;
    // Written by this site from digests it had checked: unreadable only if damaged, and
    // then as good as none (the next bundle brings new ones).
    Ok(digest::parse(text.as_bytes()).ok().map(|d| (seq, d)))
}

/// Compares the node's rows with the digests of the newest bundle it applied (none: it has
/// received none yet) and keeps the result as the site's last ([`compare_rows`]).
pub fn compare(conn: &Connection, catalog: &Catalog, acked: i64) -> Result<Option<Report>> {
    let report = compare_rows(conn, catalog, acked)?;
    if let Some(r) = &report {
        store::set_meta(
            conn,
            "replica_result",
            &serde_json::to_string(r).unwrap_or_default(),
        )?;
    }
    Ok(report)
}

/// Compares the node's rows with the digests of the newest bundle it applied, reading only.
/// Buckets holding rows with local changes central has not merged (after `acked`) are left
/// out: their difference is on its way.
pub fn compare_rows(conn: &Connection, catalog: &Catalog, acked: i64) -> Result<Option<Report>> {
    let Some((seq, theirs)) = stored_digests(conn)? else {
        return Ok(None);
    };
    let tables: Vec<(&TableInfo, Scope)> = theirs
        .keys()
        .filter_map(|name| catalog.tables.get(name).map(|t| (t, Scope::All)))
        .collect();
    let ours = digest::compute(conn, &tables)?;
    let mut skip = local_buckets(conn)?;
    for (tbl, key) in unmerged(conn, catalog, acked)? {
        if let Some(k) = crate::value::parse_key(key.as_bytes())
            && let Some(b) = digest::bucket_of_key(&k)
        {
            skip.insert((tbl, b));
        }
    }
    let mut differ = Vec::new();
    let mut skipped = BTreeSet::new();
    for m in digest::compare(&ours, &theirs) {
        if let Some(b) = m.bucket
            && skip.contains(&(m.table.clone(), b))
        {
            skipped.insert((m.table.clone(), b));
            continue;
        }
        differ.push(Place {
            t: m.table,
            b: m.bucket,
            node: m.ours_rows,
            central: m.theirs_rows,
        });
    }
    let repaired = store::meta_i64(conn, meta_keys::REPLICA_REPAIRED).unwrap_or(0);
    Ok(Some(Report {
        seq,
        at: store::now(),
        differ,
        skipped: skipped.len() as u64,
        repaired: u64::try_from(repaired).unwrap_or(0),
    }))
}

/// The last comparison's result at this node.
pub fn last(conn: &Connection) -> Result<Option<Report>> {
    Ok(store::meta(conn, meta_keys::REPLICA_RESULT)?.and_then(|t| serde_json::from_str(&t).ok()))
}

/// What a node's next bundle carries for its replica: its latest result, in every bundle (a
/// bundle that replaces one still waiting in the folder must not drop the report that one
/// carried). It alone justifies a bundle ([`NodeOut::due`]) when central has not had it: it
/// names other places than the last one sent, names places after newer digests, or follows
/// a repair.
#[derive(Debug, Default)]
pub struct NodeOut {
    /// The report to send.
    pub report: Option<Report>,
    due: bool,
}

impl NodeOut {
    /// Whether it alone justifies writing a bundle.
    pub fn due(&self) -> bool {
        self.due
    }

    /// The entry: (name, kind, content).
    pub fn entry(
        &self,
        spool: &std::path::Path,
    ) -> Result<Option<(&'static str, &'static str, std::fs::File)>> {
        let Some(r) = &self.report else {
            return Ok(None);
        };
        let mut f = tempfile::tempfile_in(spool).map_err(|e| EngineError::io(spool, e))?;
        serde_json::to_writer(&mut f, r).map_err(|e| EngineError::io(spool, e.into()))?;
        f.rewind().map_err(|e| EngineError::io(spool, e))?;
        Ok(Some((REPORT_ENTRY, KIND_REPORT, f)))
    }

    /// Records that it was sent.
    pub fn record_sent(&self, conn: &Connection) -> Result<()> {
        if let Some(r) = &self.report {
            store::set_meta(
                conn,
                "replica_sent",
                &serde_json::to_string(r).unwrap_or_default(),
            )?;
            crate::store::clear_meta(conn, meta_keys::REPLICA_REPAIRED)?;
        }
        Ok(())
    }
}

/// Runs the comparison at a node's dock and decides whether its result goes to central.
pub fn node_out(conn: &Connection, catalog: &Catalog, acked: i64) -> Result<NodeOut> {
    let Some(report) = compare(conn, catalog, acked)? else {
        return Ok(NodeOut::default());
    };
    let sent: Option<Report> =
        store::meta(conn, meta_keys::REPLICA_SENT)?.and_then(|t| serde_json::from_str(&t).ok());
    let due = match &sent {
        None => !report.differ.is_empty() || report.repaired > 0,
        Some(s) => {
            s.differ != report.differ
                || report.repaired > 0
                || (!report.differ.is_empty() && report.seq > s.seq)
        }
    };
    Ok(NodeOut {
        report: Some(report),
        due,
    })
}

/// The rows repairs kept aside at this node.
pub fn kept(conn: &Connection) -> Result<Vec<Kept>> {
    kept_rows(conn, None)
}

/// The kept rows, or the one with this id.
fn kept_rows(conn: &Connection, id: Option<i64>) -> Result<Vec<Kept>> {
    let mut st = conn.prepare(
        "SELECT id, tbl, pk, node_row, central_row, bundle_id, at FROM berth_kept
         WHERE ?1 IS NULL OR id = ?1 ORDER BY id",
    )?;
    let rows = st.query_map(params![id], |r| {
        let row = |i: usize| -> rusqlite::Result<Option<Row>> {
            Ok(r.get::<_, Option<String>>(i)?
                .and_then(|t| serde_json::from_str(&t).ok()))
        };
        Ok(Kept {
            id: r.get(0)?,
            table: r.get(1)?,
            key: r.get(2)?,
            node_row: row(3)?,
            central_row: row(4)?,
            bundle_id: r.get(5)?,
            at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Writes a kept row back as a local change, through the capture triggers, so it travels to
/// central like any write (and is merged there with the usual checks); then forgets it.
pub fn reapply(site: &mut Site, id: i64) -> Result<Kept> {
    if site.role() != Role::Node {
        return Err(EngineError::Kept(
            "repairs are kept aside at nodes; central has none to re-apply".into(),
        ));
    }
    let catalog = site.catalog()?;
    let k = take(&site.conn, id)?;
    let t = catalog.tables.get(&k.table).ok_or_else(|| {
        EngineError::Kept(format!(
            "kept row {id}: table {} is no longer replicated",
            k.table
        ))
    })?;
    let key: Vec<Json> = serde_json::from_str(&k.key).map_err(|e| {
        EngineError::Kept(format!(
            "kept row {id}: its key {} cannot be read: {e}",
            k.key
        ))
    })?;
    let tx = site.conn.transaction()?;
    crate::merge::apply::repair_row(&tx, t, &key, k.node_row.as_ref())?;
    tx.execute("DELETE FROM berth_kept WHERE id = ?1", params![id])?;
    tx.commit()?;
    Ok(k)
}

/// Forgets a kept row without writing it back.
pub fn discard(conn: &Connection, id: i64) -> Result<Kept> {
    let k = take(conn, id)?;
    conn.execute("DELETE FROM berth_kept WHERE id = ?1", params![id])?;
    Ok(k)
}

fn take(conn: &Connection, id: i64) -> Result<Kept> {
    kept_rows(conn, Some(id))?.pop().ok_or_else(|| {
        EngineError::Kept(format!(
            "no kept row {id}: `berth repair --list` shows the rows repairs kept aside"
        ))
    })
}
