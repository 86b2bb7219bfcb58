//! Change capture (seed 004, Figure 3): triggers inside the database journal every insert,
//! update and delete into `berth_log`, so any SQLite client's writes are captured.
//!
//! The triggers use only SQL that SQLite 3.37 understands with its default limits
//! (`json_object`, `json_array`, `hex`, `printf`, `CASE`, at most 126 arguments a call),
//! because the writer's SQLite is not ours to choose. Every entry holds the exact state the
//! writer's SQLite produced, and they are kept as cheap as that allows, since every
//! application write pays for them (SPEC 2.4):
//! - insert (`I`): the key only. The new row is the old row of the next entry of the same
//!   key, or the row in the table when there is none ([`crate::change`] resolves it);
//! - before an insert (`P`, a pre-image): every row the new one could displace through its
//!   key or a UNIQUE index, whole. One index probe per UNIQUE index. An `INSERT OR REPLACE`
//!   deletes such rows without firing delete triggers (unless the client set
//!   `recursive_triggers`); a pre-image whose row is gone right after is exported as that
//!   delete, one whose row is still there (`OR IGNORE`, `DO NOTHING`, an upsert) as nothing;
//! - update (`U`): the key and the whole old row; an update that changes the key is
//!   journaled as the delete of the old key (`D`, whole old row) and, at the next position,
//!   the insert of the new whose `old` holds the old key (the mark that the pair is one key
//!   change: a node sends it as one update of the key, SPEC 2.5);
//! - delete (`D`): the key and the whole old row.
//!
//! Values keep their storage class and bytes: blobs as `["b", HEX]`, reals as
//! `["r", printf('%!.20e')]` (SQLite 3.40's `json_object` keeps 15 digits and writes
//! infinities as the bare word `Inf`), text as SQLite stores it, read back byte for byte by
//! [`crate::value::parse_row_bytes`]. A table too wide for one `json_object` call is journaled
//! as an array of objects of at most 63 columns each.
//!
//! The triggers have no guard for berth's own writes: while berth applies a bundle at a node
//! it drops them inside its own transaction ([`suspend`]) and recreates them before commit
//! ([`resume`]); other connections never see them missing, and no application write pays for
//! a guard. At central they stay: a node's change is journaled by them like any write, and so
//! is everything it sets off (cascades, the application's triggers).

use crate::error::Result;
use crate::schema::Table;
use crate::store::{ident, literal};
use rusqlite::Connection;

/// Columns a `json_object` call takes (two arguments each, 126 of SQLite's 127).
const CHUNK: usize = 63;

fn wire(prefix: &str, col: &str) -> String {
    let c = format!("{prefix}.{}", ident(col));
    format!(
        "CASE typeof({c}) WHEN 'blob' THEN json_array('b', hex({c})) \
         WHEN 'real' THEN json_array('r', printf('%!.20e', {c})) ELSE {c} END"
    )
}

fn row_json(prefix: &str, t: &Table) -> String {
    let objects: Vec<String> = t
        .columns
        .chunks(CHUNK)
        .map(|cols| {
            let parts: Vec<String> = cols
                .iter()
                .map(|c| format!("{}, {}", literal(c), wire(prefix, c)))
                .collect();
            format!("json_object({})", parts.join(", "))
        })
        .collect();
    match objects.as_slice() {
        [one] => one.clone(),
        _ => format!("json_array({})", objects.join(", ")),
    }
}

fn key_json(prefix: &str, t: &Table) -> String {
    let parts: Vec<String> = t.pk.iter().map(|c| wire(prefix, c)).collect();
    format!("json_array({})", parts.join(", "))
}

/// `a.c IS b.c AND ...` over the columns.
fn same_cols(a: &str, b: &str, cols: &[String]) -> String {
    cols.iter()
        .map(|c| format!("{a}.{0} IS {b}.{0}", ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Names of the triggers of a table: after insert, update (key kept), delete, before insert
/// (pre-images), update that changes the key, before an update of a UNIQUE column.
pub fn trigger_names(table: &str) -> [String; 6] {
    [
        format!("berth_ins_{table}"),
        format!("berth_upd_{table}"),
        format!("berth_del_{table}"),
        format!("berth_pre_{table}"),
        format!("berth_key_{table}"),
        format!("berth_preu_{table}"),
    ]
}

/// The column sets of a table's key and UNIQUE indexes on plain columns (expression indexes
/// are left out: SPEC 2.14).
pub fn unique_sets(conn: &Connection, t: &Table) -> Result<Vec<Vec<String>>> {
    let mut sets = vec![t.pk.clone()];
    let names: Vec<(String, bool)> = conn
        .prepare(&format!("PRAGMA index_list({})", ident(&t.name)))?
        .query_map([], |r| {
            Ok((r.get::<_, String>(1)?, r.get::<_, i64>(2)? != 0))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (name, unique) in names {
        if !unique {
            continue;
        }
        let cols: Vec<(i64, Option<String>)> = conn
            .prepare(&format!("PRAGMA index_info({})", ident(&name)))?
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let plain: Option<Vec<String>> = cols
            .into_iter()
            .map(|(cid, n)| if cid >= 0 { n } else { None })
            .collect();
        if let Some(set) = plain
            && !set.is_empty()
            && !sets.contains(&set)
        {
            sets.push(set);
        }
    }
    Ok(sets)
}

/// The DDL of the capture triggers of one table; `unique` from [`unique_sets`].
pub fn trigger_sql(t: &Table, unique: &[Vec<String>]) -> String {
    trigger_statements(t, unique)
        .into_iter()
        .map(|(_, sql)| sql + ";\n")
        .collect()
}

/// Each capture trigger of one table as `(name, statement)`, the statement without its
/// trailing `;`: exactly the text SQLite keeps in `sqlite_master.sql`, which is what the
/// capture guard compares ([`crate::guard`]).
pub fn trigger_statements(t: &Table, unique: &[Vec<String>]) -> Vec<(String, String)> {
    let [ins, upd, del, pre, key, preu] = trigger_names(&t.name);
    let tbl = ident(&t.name);
    let name = literal(&t.name);
    let r = "berth_r";
    // Rows the new one could displace: one probe per UNIQUE index.
    let probe = |extra: &str| {
        let any = unique
            .iter()
            .map(|set| {
                let eq = set
                    .iter()
                    .map(|c| format!("{r}.{0} = NEW.{0}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                format!("({eq})")
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        format!(
            "INSERT INTO berth_log(tbl, pk, op, old) SELECT {name}, {kr}, 'P', {rr} FROM {tbl} AS {r} WHERE ({any}){extra};",
            kr = key_json(r, t),
            rr = row_json(r, t),
        )
    };
    let key_same = same_cols("OLD", "NEW", &t.pk);
    let key_cols = t.pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let mut unique_cols: Vec<&String> = unique.iter().flatten().collect();
    unique_cols.sort();
    unique_cols.dedup();
    let unique_cols = unique_cols
        .iter()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let probe_ins = probe("");
    let probe_upd = probe(&format!(" AND NOT ({})", same_cols(r, "OLD", &t.pk)));
    let knew = key_json("NEW", t);
    let kold = key_json("OLD", t);
    let rold = row_json("OLD", t);
    vec![
        (
            pre.clone(),
            format!(
                "CREATE TRIGGER {} BEFORE INSERT ON {tbl} BEGIN\n  {probe_ins}\nEND",
                ident(&pre)
            ),
        ),
        (
            ins.clone(),
            format!(
                "CREATE TRIGGER {} AFTER INSERT ON {tbl} BEGIN\n  INSERT INTO berth_log(tbl, pk, op) VALUES ({name}, {knew}, 'I');\nEND",
                ident(&ins)
            ),
        ),
        (
            preu.clone(),
            format!(
                "CREATE TRIGGER {} BEFORE UPDATE OF {unique_cols} ON {tbl} BEGIN\n  {probe_upd}\nEND",
                ident(&preu)
            ),
        ),
        (
            upd.clone(),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE ON {tbl} WHEN {key_same} BEGIN\n  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {knew}, 'U', {rold});\nEND",
                ident(&upd)
            ),
        ),
        (
            key.clone(),
            format!(
                "CREATE TRIGGER {} AFTER UPDATE OF {key_cols} ON {tbl} WHEN NOT ({key_same}) BEGIN\n  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {kold}, 'D', {rold});\n  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {knew}, 'I', {kold});\nEND",
                ident(&key)
            ),
        ),
        (
            del.clone(),
            format!(
                "CREATE TRIGGER {} AFTER DELETE ON {tbl} BEGIN\n  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {kold}, 'D', {rold});\nEND",
                ident(&del)
            ),
        ),
    ]
}

/// A digest of the trigger text this berth installs (the statements for a sample table with a
/// UNIQUE index): it changes with any change to the text, so the capture guard can tell the
/// triggers of an earlier berth, brought up to date once after an upgrade, from triggers a
/// tool changed ([`crate::guard`]).
pub fn text_version() -> String {
    use sha2::{Digest, Sha256};
    let t = Table {
        name: "t".into(),
        columns: vec!["id".into(), "u".into(), "v".into()],
        pk: vec!["id".into()],
        rowid_key: false,
    };
    let sql = trigger_sql(&t, &[vec!["id".into()], vec!["u".into()]]);
    hex::encode(&Sha256::digest(sql.as_bytes())[..8])
}

/// (Re)creates the capture triggers of every table and records the tables in `berth_tables`.
pub fn install(conn: &Connection, tables: &[Table]) -> Result<()> {
    crate::store::upgrade_log(conn)?;
    for t in tables {
        create(conn, t)?;
    }
    record_tables(conn, tables)
}

/// Records the tables in `berth_tables` (key columns and columns), without touching the
/// triggers.
pub fn record_tables(conn: &Connection, tables: &[Table]) -> Result<()> {
    for t in tables {
        conn.execute(
            "INSERT INTO berth_tables(name, pk, cols) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET pk = excluded.pk, cols = excluded.cols",
            rusqlite::params![
                t.name,
                serde_json::to_string(&t.pk).unwrap_or_default(),
                serde_json::to_string(&t.columns).unwrap_or_default()
            ],
        )?;
    }
    Ok(())
}

fn create(conn: &Connection, t: &Table) -> Result<()> {
    for n in trigger_names(&t.name) {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {};", ident(&n)))?;
    }
    conn.execute_batch(&trigger_sql(t, &unique_sets(conn, t)?))?;
    Ok(())
}

/// The replicated tables as recorded in `berth_tables`.
pub fn recorded(conn: &Connection) -> Result<Vec<Table>> {
    let catalog = crate::table::Catalog::load(conn, &Default::default(), Default::default())?;
    Ok(catalog
        .tables
        .into_values()
        .map(|t| Table {
            name: t.name,
            columns: t.cols,
            pk: t.pk,
            rowid_key: false,
        })
        .collect())
}

/// Stops capture for the rest of the current transaction: drops every capture trigger.
/// Call only inside a transaction that ends with [`resume`] (or rolls back).
pub fn suspend(conn: &Connection) -> Result<()> {
    for t in recorded(conn)? {
        for n in trigger_names(&t.name) {
            conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {};", ident(&n)))?;
        }
    }
    Ok(())
}

/// Restores capture: recreates the triggers of every recorded table.
pub fn resume(conn: &Connection) -> Result<()> {
    for t in recorded(conn)? {
        create(conn, &t)?;
    }
    Ok(())
}

/// Suppresses (or restores) capture for the rest of the current transaction (see
/// [`suspend`]).
pub fn set_capture(conn: &Connection, on: bool) -> Result<()> {
    if on { resume(conn) } else { suspend(conn) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{schema, store};

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        store::install(&c).unwrap();
        c.execute_batch(
            "CREATE TABLE t(id TEXT PRIMARY KEY, n INT, b BLOB, \"odd \"\"name\" TEXT);",
        )
        .unwrap();
        install(&c, &schema::tables(&c).unwrap()).unwrap();
        c
    }

    fn log(c: &Connection) -> Vec<(String, String, Option<String>, Option<String>)> {
        let mut st = c
            .prepare("SELECT op, pk, old, new FROM berth_log ORDER BY pos")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn insert_update_delete_are_journaled_with_blobs_tagged() {
        let c = db();
        c.execute_batch(
            "INSERT INTO t VALUES ('a', 1, x'00ff', 'q');
             UPDATE t SET n = 2 WHERE id = 'a';
             DELETE FROM t WHERE id = 'a';",
        )
        .unwrap();
        let l = log(&c);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].0, "I");
        assert_eq!(l[0].1, r#"["a"]"#);
        assert!(
            l[0].2.is_none() && l[0].3.is_none(),
            "inserts log the key only"
        );
        assert_eq!(l[1].0, "U");
        assert!(l[1].2.as_deref().unwrap().contains(r#""n":1"#));
        assert_eq!(l[2].0, "D");
        assert_eq!(
            l[2].2.as_deref(),
            Some(r#"{"id":"a","n":2,"b":["b","00FF"],"odd \"name":"q"}"#)
        );
        assert!(l[2].3.is_none());
    }

    #[test]
    fn suppressed_capture_does_not_echo() {
        let c = db();
        c.execute_batch("BEGIN").unwrap();
        suspend(&c).unwrap();
        c.execute_batch("INSERT INTO t(id) VALUES ('x')").unwrap();
        resume(&c).unwrap();
        c.execute_batch("COMMIT; INSERT INTO t(id) VALUES ('y');")
            .unwrap();
        let l = log(&c);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1, r#"["y"]"#);
    }
}
