//! The rows a repair kept aside at a node (SPEC 2.15): listed, applied again, or discarded.

use super::*;

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
        let row = |i: usize| -> rusqlite::Result<Option<Row>> { store::json_column_opt(r, i) };
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
