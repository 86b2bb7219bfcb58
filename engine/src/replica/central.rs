//! Central's side of replica checking: the digests and repairs its bundles carry to a
//! node, and the reports it records from nodes.

use super::*;

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
    let report: Option<Report> = text
        .map(|t| store::stored_json("berth_replica_reports.report", &t))
        .transpose()?;
    let Some(report) = report else {
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
    let before: Option<Report> = before
        .map(|b| store::stored_json("berth_replica_reports.report", &b))
        .transpose()?;
    let same_places = before.is_some_and(|b| b.differ == report.differ);
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
        let report = store::stored_json("berth_replica_reports.report", &text)?;
        out.push((node, report, at, attempts));
    }
    Ok(out)
}
