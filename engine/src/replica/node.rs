//! A node's side of replica checking: central's digests and repairs applied, its own rows
//! compared, and the report its next bundle carries.

use super::*;

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
        let mut payload = crate::payload::Payload::spooled(site, bundle, REPAIR_ENTRY)?;
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
    store::meta(conn, meta_keys::REPLICA_RESULT)?
        .map(|t| store::stored_json(&format!("berth_meta {}", meta_keys::REPLICA_RESULT), &t))
        .transpose()
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
    let sent: Option<Report> = store::meta(conn, meta_keys::REPLICA_SENT)?
        .map(|t| store::stored_json(&format!("berth_meta {}", meta_keys::REPLICA_SENT), &t))
        .transpose()?;
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
