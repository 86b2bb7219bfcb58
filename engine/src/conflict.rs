//! What lost, for people and scripts: the collisions central recorded (`berth_conflicts`,
//! SPEC 2.10) and the overrides a node recorded (`berth_overrides`, SPEC 2.11), as values
//! rather than the JSON text they are stored as; and a collision settled by hand
//! ([`resolve`]): the side an admin chooses is written again at central as a new change,
//! through the capture triggers, so it travels to every node that holds the row.

pub use crate::error::conflict::ResolveError;
use crate::error::{EngineError, Result};
use crate::merge::apply::repair_row;
use crate::site::{Role, Site};
use crate::store::ident;
use crate::table::{TableInfo, read_row};
use crate::value::{Row, to_sql};
use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;
use serde_json::Value as Json;

/// One side of a collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The node whose change collided.
    Node,
    /// Central, as it held the row when the change arrived.
    Central,
}

impl Side {
    /// The word a command line and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Node => "node",
            Side::Central => "central",
        }
    }

    fn parse(s: &str) -> Option<Side> {
        match s {
            "node" => Some(Side::Node),
            "central" => Some(Side::Central),
            _ => None,
        }
    }
}

/// One recorded collision.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// Row id (what `resolve` takes).
    pub id: i64,
    /// Node whose change collided.
    pub node: String,
    /// Table.
    pub table: String,
    /// The row's key values.
    pub key: Vec<Json>,
    /// Collision kind (`update-update`, ..., `denied`).
    pub kind: String,
    /// Columns concerned.
    pub columns: Vec<String>,
    /// The node's old values.
    pub node_old: Option<Row>,
    /// The node's new values (none: the node deleted the row).
    pub node_new: Option<Row>,
    /// Central's row at the time (none: central had no such row).
    pub central: Option<Row>,
    /// Who won: `central-wins`, `node-wins` or `refused`.
    pub resolution: String,
    /// The side that lost and its values of the columns concerned.
    pub lost: Lost,
    /// Bundle that carried the change.
    pub bundle_id: String,
    /// When (Unix time).
    pub at: i64,
    /// The side an admin chose since (`berth conflicts resolve`), if any.
    pub resolved: Option<Resolved>,
}

/// The losing side of a collision.
#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    /// Which side lost.
    pub side: Side,
    /// Its values of the columns concerned; none when that side had no row (a delete, or a
    /// row central did not hold).
    pub values: Option<Row>,
}

/// A collision an admin settled by hand.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    /// The side chosen.
    pub took: Side,
    /// When (Unix time).
    pub at: i64,
}

/// At a node: a change from central that met a local change central had not merged yet.
#[derive(Debug, Clone, Serialize)]
pub struct Override {
    /// Row id.
    pub id: i64,
    /// Table.
    pub table: String,
    /// The row's key values.
    pub key: Vec<Json>,
    /// The op of the newest local change of the row (`I`, `U`, `D`).
    pub local_op: String,
    /// Central's op.
    pub central_op: String,
    /// The row as this replica holds it now (none: it holds no such row).
    pub row: Option<Row>,
    /// Bundle that carried central's change.
    pub bundle_id: String,
    /// When (Unix time).
    pub at: i64,
}

/// Column `i` of `r`, stored as JSON text, read as `T` (NULL as `T`'s reading of `null`).
fn json_col<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: Option<String> = r.get(i)?;
    serde_json::from_str(text.as_deref().unwrap_or("null")).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The columns of `row` named in `columns` (all of it when `columns` is empty).
fn only(row: &Row, columns: &[String]) -> Row {
    if columns.is_empty() {
        return row.clone();
    }
    row.iter()
        .filter(|(c, _)| columns.contains(c))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect()
}

/// The losing side of a collision decided with `resolution`, and its values.
fn lost(
    resolution: &str,
    node_new: Option<&Row>,
    central: Option<&Row>,
    columns: &[String],
) -> Lost {
    let (side, row) = if resolution == "node-wins" {
        (Side::Central, central)
    } else {
        (Side::Node, node_new)
    };
    Lost {
        side,
        values: row.map(|r| only(r, columns)),
    }
}

fn read(conn: &Connection, id: Option<i64>) -> Result<Vec<Conflict>> {
    let mut st = conn.prepare(
        "SELECT c.id, c.node, c.tbl, c.pk, c.kind, c.columns, c.node_old, c.node_new, c.central,
                c.resolution, c.bundle_id, c.at, r.took, r.at
         FROM berth_conflicts c LEFT JOIN berth_resolved r ON r.conflict = c.id
         WHERE ?1 IS NULL OR c.id = ?1 ORDER BY c.id",
    )?;
    let rows = st.query_map(params![id], |r| {
        let columns: Vec<String> = json_col(r, 5)?;
        let node_new: Option<Row> = json_col(r, 7)?;
        let central: Option<Row> = json_col(r, 8)?;
        let resolution: String = r.get(9)?;
        let took: Option<String> = r.get(12)?;
        let resolved_at: Option<i64> = r.get(13)?;
        Ok(Conflict {
            id: r.get(0)?,
            node: r.get(1)?,
            table: r.get(2)?,
            key: json_col(r, 3)?,
            kind: r.get(4)?,
            lost: lost(&resolution, node_new.as_ref(), central.as_ref(), &columns),
            columns,
            node_old: json_col(r, 6)?,
            node_new,
            central,
            resolution,
            bundle_id: r.get(10)?,
            at: r.get(11)?,
            resolved: match (took.as_deref().and_then(Side::parse), resolved_at) {
                (Some(took), Some(at)) => Some(Resolved { took, at }),
                _ => None,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every recorded collision, oldest first (central; a node records none).
pub fn conflicts(site: &Site) -> Result<Vec<Conflict>> {
    read(&site.conn, None)
}

/// Every override recorded at a node, oldest first, with the row as it is now.
pub fn overrides(site: &Site) -> Result<Vec<Override>> {
    let catalog = site.catalog()?;
    let mut st = site.conn.prepare(
        "SELECT id, tbl, pk, local_op, central_op, bundle_id, at FROM berth_overrides ORDER BY id",
    )?;
    let mut out: Vec<Override> = st
        .query_map([], |r| {
            Ok(Override {
                id: r.get(0)?,
                table: r.get(1)?,
                key: json_col(r, 2)?,
                local_op: r.get(3)?,
                central_op: r.get(4)?,
                row: None,
                bundle_id: r.get(5)?,
                at: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for o in &mut out {
        if let Some(t) = catalog.tables.get(&o.table) {
            o.row = read_row(&site.conn, t, &o.key)?;
        }
    }
    Ok(out)
}

/// What [`resolve`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Resolution {
    /// The collision, with the choice recorded.
    pub conflict: Conflict,
    /// The row central holds now (none: the row was deleted).
    pub row: Option<Row>,
}

/// Writes the side `take` of collision `id` again at central, as a new change of central's
/// (journaled by the capture triggers, routed at the next dock like any write): its values
/// of the columns concerned over the row as it is now, the whole row when central no longer
/// holds it, or a delete when that side had no row. The choice is recorded beside the
/// collision, in the same transaction.
pub fn resolve(site: &mut Site, id: i64, take: Side) -> Result<Resolution> {
    site.require(Role::Central)?;
    let c = read(&site.conn, Some(id))?
        .pop()
        .ok_or(ResolveError::Unknown { id })?;
    let catalog = site.catalog()?;
    let t = catalog.tables.get(&c.table).ok_or(ResolveError::Table {
        id,
        table: c.table.clone(),
    })?;
    let chosen = match take {
        Side::Node => c.node_new.as_ref(),
        Side::Central => c.central.as_ref(),
    };
    let tx = site.conn.transaction()?;
    let now = read_row(&tx, t, &c.key)?;
    match (chosen, &now) {
        (Some(values), Some(_)) => set_columns(&tx, t, &c.key, &only(values, &c.columns))?,
        (Some(values), None) => repair_row(&tx, t, &c.key, Some(values))?,
        (None, _) => repair_row(&tx, t, &c.key, None)?,
    }
    let row = read_row(&tx, t, &c.key)?;
    tx.execute(
        "INSERT OR REPLACE INTO berth_resolved(conflict, took, at) VALUES (?1, ?2, ?3)",
        params![id, take.as_str(), crate::store::now()],
    )?;
    tx.commit()?;
    let conflict = read(&site.conn, Some(id))?
        .pop()
        .ok_or(ResolveError::Unknown { id })?;
    Ok(Resolution { conflict, row })
}

/// `UPDATE` of some columns (not a replace, which would fire the foreign keys' delete
/// actions on the row's children).
fn set_columns(conn: &Connection, t: &TableInfo, key: &[Json], values: &Row) -> Result<()> {
    let cols: Vec<&String> = values.keys().filter(|c| !t.pk.contains(c)).collect();
    if cols.is_empty() {
        return Ok(());
    }
    let set = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let cond =
        t.pk.iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", ident(c), cols.len() + i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
    let bad = |what: &str| EngineError::BadPayload {
        bundle: String::new(),
        entry: format!("resolution of {} {}", t.name, Json::from(key.to_vec())),
        reason: format!("{what} is not a value SQLite can store"),
    };
    let mut binds = Vec::new();
    for c in &cols {
        binds.push(values.get(*c).and_then(to_sql).ok_or_else(|| bad(c))?);
    }
    for k in key {
        binds.push(to_sql(k).ok_or_else(|| bad("the key"))?);
    }
    conn.prepare_cached(&format!("UPDATE {} SET {set} WHERE {cond}", ident(&t.name)))?
        .execute(params_from_iter(binds.iter()))?;
    Ok(())
}
