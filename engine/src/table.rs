//! The replicated tables as the engine reads and writes them: the catalog (`berth_tables`:
//! each table's key and columns, and its collision policy) and keyed row I/O. Below the
//! merge, the capture and the router, which all read rows by key.

use crate::error::{EngineError, Result};
use crate::store::ident;
use crate::value::{Bind, Row, Sql, from_sql, to_sql};
use rusqlite::{Connection, OptionalExtension, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// How a table settles collisions at central.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// The seed's default: central's value stays, the node's change is rejected.
    #[default]
    CentralWins,
    /// The node's change is applied over central's value.
    NodeWins,
    /// The change later in logical (Lamport) order wins; ties go to the lower site name.
    LatestWins,
}

/// A replicated table as the merge needs it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Table name.
    pub name: String,
    /// Key columns in key order.
    pub pk: Vec<String>,
    /// Every column.
    pub cols: Vec<String>,
    /// Collision policy.
    pub policy: Policy,
}

/// Every replicated table, by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Tables by name.
    pub tables: BTreeMap<String, TableInfo>,
}

impl Catalog {
    /// Loads the catalog from `berth_tables`, with per-table policies.
    pub fn load(
        conn: &Connection,
        policies: &BTreeMap<String, Policy>,
        default: Policy,
    ) -> Result<Self> {
        let mut st = conn.prepare("SELECT name, pk, cols FROM berth_tables ORDER BY name")?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut tables = BTreeMap::new();
        for r in rows {
            let (name, pk, cols) = r?;
            let policy = policies.get(&name).copied().unwrap_or(default);
            let list = |text: &str, what: &str| {
                serde_json::from_str::<Vec<String>>(text).map_err(|e| EngineError::Schema {
                    table: name.clone(),
                    reason: format!(
                        "berth_tables.{what} is not a JSON list of column names ({e}): {text}"
                    ),
                })
            };
            let info = TableInfo {
                pk: list(&pk, "pk")?,
                cols: list(&cols, "cols")?,
                name: name.clone(),
                policy,
            };
            tables.insert(name, info);
        }
        Ok(Catalog { tables })
    }
}

pub(crate) fn where_key(t: &TableInfo) -> String {
    t.pk.iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

pub(crate) fn key_values(key: &[Json]) -> Option<Vec<Sql>> {
    key.iter().map(to_sql).collect()
}

/// Reads the current row with this key.
pub fn read_row(conn: &Connection, t: &TableInfo, key: &[Json]) -> Result<Option<Row>> {
    let cols = t
        .cols
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM {} WHERE {}",
        ident(&t.name),
        where_key(t)
    );
    let Some(kv) = key_values(key) else {
        return Ok(None);
    };
    let mut st = conn.prepare_cached(&sql)?;
    Ok(st
        .query_row(params_from_iter(kv.iter()), |r| {
            let mut row = Row::new();
            for (i, c) in t.cols.iter().enumerate() {
                row.insert(c.clone(), from_sql(r.get_ref(i)?));
            }
            Ok(row)
        })
        .optional()?)
}

pub(crate) fn values(
    t: &TableInfo,
    cols: &[&String],
    row: &Row,
) -> std::result::Result<Vec<Sql>, String> {
    cols.iter()
        .map(|c| {
            if !t.cols.contains(c) {
                return Err(format!("table {} has no column {c}", t.name));
            }
            to_sql(row.get(*c).unwrap_or(&Json::Null))
                .ok_or_else(|| format!("bad value in column {c}"))
        })
        .collect()
}

/// A bound value of the fast path: borrowed where it can be (the merge's hot path), decoded
/// where it must be (text that is not UTF-8).
#[derive(Debug)]
pub(crate) enum Arg<'r> {
    Borrowed(Bind<'r>),
    Owned(Sql),
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Borrowed(b) => b.to_sql(),
            Arg::Owned(v) => v.to_sql(),
        }
    }
}

pub(crate) fn arg(v: &Json) -> Option<Arg<'_>> {
    match v {
        Json::Array(_) => to_sql(v).map(Arg::Owned),
        _ => Bind(v).is_valid().then_some(Arg::Borrowed(Bind(v))),
    }
}

/// Like [`values`], borrowing instead of copying.
pub(crate) fn binds<'r>(
    t: &TableInfo,
    cols: &[&String],
    row: &'r Row,
) -> std::result::Result<Vec<Arg<'r>>, String> {
    static NULL: Json = Json::Null;
    cols.iter()
        .map(|c| {
            if !t.cols.contains(c) {
                return Err(format!("table {} has no column {c}", t.name));
            }
            arg(row.get(*c).unwrap_or(&NULL)).ok_or_else(|| format!("bad value in column {c}"))
        })
        .collect()
}

/// What an insert does when a row with the same key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Fail (a constraint error).
    Fail,
    /// Keep the existing row.
    Keep,
    /// Replace the existing row's non-key columns.
    Replace,
}

/// `INSERT INTO t (cols) VALUES (?1..?n)` with the given conflict handling on the key.
pub(crate) fn insert_sql(t: &TableInfo, cols: &[&String], on: OnConflict) -> String {
    let names = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let marks = (1..=cols.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key = t.pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let sets: Vec<String> = cols
        .iter()
        .filter(|c| !t.pk.contains(c))
        .map(|c| format!("{0} = excluded.{0}", ident(c)))
        .collect();
    let tail = match on {
        OnConflict::Fail => String::new(),
        OnConflict::Replace if !sets.is_empty() => {
            format!(" ON CONFLICT({key}) DO UPDATE SET {}", sets.join(", "))
        }
        OnConflict::Keep | OnConflict::Replace => format!(" ON CONFLICT({key}) DO NOTHING"),
    };
    format!(
        "INSERT INTO {} ({names}) VALUES ({marks}){tail}",
        ident(&t.name)
    )
}

/// Inserts a whole row, handling an existing row with the same key as `on` says.
pub(crate) fn insert_row(
    conn: &Connection,
    t: &TableInfo,
    row: &Row,
    on: OnConflict,
) -> std::result::Result<(), WriteError> {
    let cols: Vec<&String> = row.keys().collect();
    let vals = values(t, &cols, row).map_err(WriteError::Payload)?;
    conn.prepare_cached(&insert_sql(t, &cols, on))?
        .execute(params_from_iter(vals.iter()))?;
    Ok(())
}

/// Sets columns of the row with this key; returns how many rows changed (0 or 1).
pub(crate) fn update(
    conn: &Connection,
    t: &TableInfo,
    key: &[Json],
    set: &Row,
) -> std::result::Result<usize, WriteError> {
    let cols: Vec<&String> = set.keys().collect();
    if cols.is_empty() {
        return Ok(1);
    }
    let mut vals = values(t, &cols, set).map_err(WriteError::Payload)?;
    let kv = key_values(key).ok_or_else(|| WriteError::Payload("bad key value".into()))?;
    let n = cols.len();
    let sets = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ?{}", ident(c), i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let wher =
        t.pk.iter()
            .enumerate()
            .map(|(i, c)| format!("{} = ?{}", ident(c), n + i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
    vals.extend(kv);
    let sql = format!("UPDATE {} SET {sets} WHERE {wher}", ident(&t.name));
    Ok(conn
        .prepare_cached(&sql)?
        .execute(params_from_iter(vals.iter()))?)
}

pub(crate) fn delete(
    conn: &Connection,
    t: &TableInfo,
    key: &[Json],
) -> std::result::Result<(), WriteError> {
    let kv = key_values(key).ok_or_else(|| WriteError::Payload("bad key value".into()))?;
    let sql = format!("DELETE FROM {} WHERE {}", ident(&t.name), where_key(t));
    conn.prepare_cached(&sql)?
        .execute(params_from_iter(kv.iter()))?;
    Ok(())
}

/// Why a single write failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The change itself is malformed (the whole bundle is refused).
    Payload(String),
    /// SQLite refused it (a constraint at this site: a collision, not a broken bundle).
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Sql(e)
    }
}

/// True for SQLite's constraint violations (UNIQUE, CHECK, NOT NULL, FOREIGN KEY).
pub fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// berth's own record of a table that does not parse is an error naming the table, not
    /// a table with no key and no columns (whose rows would then be read as empty).
    #[test]
    fn a_catalog_row_that_does_not_parse_is_an_error() {
        let c = Connection::open_in_memory().unwrap();
        crate::store::install(&c).unwrap();
        c.execute_batch(
            "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT);
             INSERT INTO berth_tables(name, pk, cols) VALUES ('item', '[\"id\"]', '[\"id\", \"v\"]');",
        )
        .unwrap();
        let ok = Catalog::load(&c, &BTreeMap::new(), Policy::default()).unwrap();
        assert_eq!(ok.tables["item"].cols, ["id", "v"]);
        c.execute(
            "UPDATE berth_tables SET cols = 'id, v' WHERE name = 'item'",
            [],
        )
        .unwrap();
        let e = Catalog::load(&c, &BTreeMap::new(), Policy::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("item") && e.contains("berth_tables.cols"), "{e}");
    }
}
