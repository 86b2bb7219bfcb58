//! The rows a new node is to hold, written as its extract while they are recorded as held
//! (enrollment, [`crate::extract`]).

use super::*;

use crate::error::Result;
use crate::route::check::ResolvedMember;
use crate::route::model::Visibility;
use crate::store::meta_keys;
use crate::store::{self};
use rusqlite::{Connection, params};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Sets up a new node's instance set from central as it is now (for its extract): the
/// instances it sees, evaluated for it alone over every instance. Calls `sink` once with
/// every `limited` row it holds (table, column names, the result row, and the index in it
/// of the first named column), records them in `berth_node_rows`, and returns how many.
pub fn extract_rows(
    conn: &Connection,
    plan: &Plan,
    node: &NodeState,
    mut sink: impl FnMut(&str, &[String], &rusqlite::Row<'_>, usize) -> Result<()>,
) -> Result<u64> {
    let nodes = std::slice::from_ref(node);
    identify(conn, nodes)?;
    let pass = Pass {
        conn,
        plan,
        nodes,
        eval: Evaluation::Set,
    };
    if store::meta(conn, meta_keys::ROUTING_RESYNC)?.is_some() {
        // No node was routed since the model was set (callers route the other nodes first,
        // which clears this when there are any): the edges are rebuilt now.
        conn.execute("DELETE FROM berth_edges", [])?;
        pass.refresh_edges(
            &vec![BTreeSet::new(); plan.objects.len()],
            &vec![true; plan.maps.len()],
        )?;
        crate::store::clear_meta(conn, meta_keys::ROUTING_RESYNC)?;
    }
    // Other nodes' instances are outside this evaluation: it only reads the edges.
    pass.evaluate_one()?;
    // Its instances, in key order: one range of the index per object.
    for (oi, o) in plan.objects.iter().enumerate() {
        conn.execute(
            "INSERT OR IGNORE INTO berth_instances(obj, id, node)
             SELECT ?1, id, ?2 FROM temp.berth_seen WHERE obj = ?3 ORDER BY id",
            params![o.r.name, node.name, oi as i64],
        )?;
    }
    // The objects it sees any instance of.
    let any: HashSet<usize> = conn
        .prepare("SELECT DISTINCT obj FROM temp.berth_seen")?
        .query_map([], |r| r.get::<_, i64>(0))?
        .map(|oi| Ok(usize::try_from(oi?).unwrap_or(usize::MAX)))
        .collect::<Result<_>>()?;
    // The member queries read the ids' values (as `load_ids` binds them).
    conn.execute_batch(
        "DELETE FROM temp.berth_route_ids;
         INSERT INTO temp.berth_route_ids(obj, id) SELECT obj, json_extract(id, '$[0]') FROM temp.berth_seen;",
    )?;
    // Every limited member table once, with the paths of all the objects it belongs to:
    // one query per table where they allow it (no row read twice, none to drop), else one
    // per path with the repeats dropped by key.
    let mut tables: BTreeMap<&str, Vec<(usize, &ResolvedMember)>> = BTreeMap::new();
    for (oi, o) in plan.objects.iter().enumerate() {
        if !any.contains(&oi) {
            continue;
        }
        for m in &o.r.members {
            if plan.visibility(&m.table) == Visibility::Limited {
                tables.entry(m.table.as_str()).or_default().push((oi, m));
            }
        }
    }
    let mut count = 0u64;
    let mut key = Vec::new();
    for (table, members) in tables {
        let n = members[0].1.key.len();
        let (queries, unique) = match held_rows_sql(plan, &members) {
            Some(sql) => (vec![(sql, None)], true),
            None => (
                members
                    .iter()
                    .flat_map(|&(oi, m)| {
                        member_sql(&plan.objects[oi].r, m, true)
                            .into_iter()
                            .map(move |sql| (sql, Some(oi)))
                    })
                    .collect(),
                false,
            ),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut keys: Vec<String> = Vec::new();
        for (sql, oi) in queries {
            let mut st = conn.prepare_cached(&sql)?;
            // Per-path queries carry the primary id after the key columns.
            let at = if oi.is_some() { n + 1 } else { n };
            let names: Vec<String> = st.column_names().skip(at).map(str::to_string).collect();
            let mut rows = match oi {
                Some(oi) => st.query(params![oi as i64])?,
                None => st.query([])?,
            };
            while let Some(r) = rows.next()? {
                // The key text as `serde_json` writes the key's values (`Id`), written
                // straight from the row.
                let values = (0..n)
                    .map(|i| r.get_ref(i))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                crate::value::write_key(&mut key, values);
                let text = String::from_utf8_lossy(&key).into_owned();
                if !unique && !seen.insert(text.clone()) {
                    continue;
                }
                keys.push(text);
                count += 1;
                sink(table, &names, r, at)?;
            }
        }
        // The rows it holds, recorded per table in key order and in bulk (one statement per
        // chunk instead of one per row: this record is a large part of the extract's cost).
        keys.sort_unstable();
        bulk_insert(
            conn,
            "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) SELECT ?1, ?2, value FROM json_each(?3)",
            &[&node.name, &table],
            keys.iter(),
        )?;
    }
    Ok(count)
}

/// Runs `sql` over `texts` in chunks: its parameters are `head`, then one more, a JSON array
/// of texts read with `json_each` (one statement per chunk instead of one per text).
pub(super) fn bulk_insert<'a>(
    conn: &Connection,
    sql: &str,
    head: &[&dyn rusqlite::ToSql],
    texts: impl Iterator<Item = &'a String>,
) -> Result<()> {
    pub(super) const CHUNK: usize = 8192;
    let mut st = conn.prepare_cached(sql)?;
    let mut chunk: Vec<&String> = Vec::with_capacity(CHUNK);
    let mut flush = |chunk: &mut Vec<&String>| -> Result<()> {
        if !chunk.is_empty() {
            let json = serde_json::to_string(chunk).unwrap_or_default();
            let mut params = head.to_vec();
            params.push(&json);
            st.execute(params.as_slice())?;
            chunk.clear();
        }
        Ok(())
    };
    for t in texts {
        chunk.push(t);
        if chunk.len() == CHUNK {
            flush(&mut chunk)?;
        }
    }
    flush(&mut chunk)
}
