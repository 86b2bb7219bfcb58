//! Change capture (seed 004, Figure 3): triggers inside the database journal every insert,
//! update and delete into `berth_log`, so any SQLite client's writes are captured.
//!
//! The triggers use only SQL that SQLite 3.37 understands (`json_object`, `json_array`,
//! `hex`, `CASE`), because the writer's SQLite is not ours to choose. They are kept as cheap
//! as the journal allows, since every application write pays for them:
//! - insert: the key only; the row is read from the table when the change is exported;
//! - update: the (new) key and the whole old row; which columns changed, and their new
//!   values, are worked out at export time against the row as it then is;
//! - delete: the key and the whole old row.
//!
//! Blob values are logged as `["b", "HEX"]` because JSON cannot hold bytes. The triggers
//! have no `WHEN` guard: while berth applies a bundle it drops them inside its own
//! transaction ([`suspend`]) and recreates them before commit ([`resume`]); other connections
//! never see them missing, and no application write pays for a guard.

use crate::error::Result;
use crate::schema::Table;
use crate::store::{ident, literal};
use rusqlite::Connection;

fn wire(prefix: &str, col: &str) -> String {
    let c = format!("{prefix}.{}", ident(col));
    format!("CASE WHEN typeof({c}) = 'blob' THEN json_array('b', hex({c})) ELSE {c} END")
}

fn row_json(prefix: &str, t: &Table) -> String {
    let parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("{}, {}", literal(c), wire(prefix, c)))
        .collect();
    format!("json_object({})", parts.join(", "))
}

fn key_json(prefix: &str, t: &Table) -> String {
    let parts: Vec<String> = t.pk.iter().map(|c| wire(prefix, c)).collect();
    format!("json_array({})", parts.join(", "))
}

/// Names of the three triggers of a table.
pub fn trigger_names(table: &str) -> [String; 3] {
    [
        format!("berth_ins_{table}"),
        format!("berth_upd_{table}"),
        format!("berth_del_{table}"),
    ]
}

/// The DDL of the capture triggers of one table.
pub fn trigger_sql(t: &Table) -> String {
    let [ins, upd, del] = trigger_names(&t.name);
    let tbl = ident(&t.name);
    let name = literal(&t.name);
    format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {tbl} BEGIN
  INSERT INTO berth_log(tbl, pk, op) VALUES ({name}, {knew}, 'I');
END;
CREATE TRIGGER {upd} AFTER UPDATE ON {tbl} BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {knew}, 'U', {rold});
END;
CREATE TRIGGER {del} AFTER DELETE ON {tbl} BEGIN
  INSERT INTO berth_log(tbl, pk, op, old) VALUES ({name}, {kold}, 'D', {rold});
END;
",
        ins = ident(&ins),
        upd = ident(&upd),
        del = ident(&del),
        knew = key_json("NEW", t),
        kold = key_json("OLD", t),
        rold = row_json("OLD", t),
    )
}

/// (Re)creates the capture triggers of every table and records the tables in `berth_tables`.
pub fn install(conn: &Connection, tables: &[Table]) -> Result<()> {
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
    conn.execute_batch(&trigger_sql(t))?;
    Ok(())
}

/// The replicated tables as recorded in `berth_tables`.
pub fn recorded(conn: &Connection) -> Result<Vec<Table>> {
    let catalog =
        crate::merge::apply::Catalog::load(conn, &Default::default(), Default::default())?;
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
