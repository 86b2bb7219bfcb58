//! Change capture (seed 004, Figure 3): triggers inside the database journal every insert,
//! update and delete into `berth_log`, so any SQLite client's writes are captured.
//!
//! The triggers use only SQL that SQLite 3.37 understands (`json_object`, `json_array`,
//! `hex`, `CASE`), because the writer's SQLite is not ours to choose. Each logs whole rows:
//! `new` for inserts, `old` and `new` for updates, `old` for deletes. Which columns an update
//! changed is computed when the change is exported, which keeps the trigger cheap. Blob values
//! are logged as `["b", "HEX"]` because JSON cannot hold bytes. Capture is skipped while
//! `berth_ctx.mode` is not 0, which berth sets only inside its own apply transactions.

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
    let when = "WHEN (SELECT mode FROM berth_ctx WHERE id = 1) = 0";
    format!(
        "CREATE TRIGGER {ins} AFTER INSERT ON {tbl} {when} BEGIN
  INSERT INTO berth_log(tbl, pk, op, old, new) VALUES ({name}, {knew}, 'I', NULL, {rnew});
END;
CREATE TRIGGER {upd} AFTER UPDATE ON {tbl} {when} BEGIN
  INSERT INTO berth_log(tbl, pk, op, old, new) VALUES ({name}, {kold}, 'U', {rold}, {rnew});
END;
CREATE TRIGGER {del} AFTER DELETE ON {tbl} {when} BEGIN
  INSERT INTO berth_log(tbl, pk, op, old, new) VALUES ({name}, {kold}, 'D', {rold}, NULL);
END;
",
        ins = ident(&ins),
        upd = ident(&upd),
        del = ident(&del),
        knew = key_json("NEW", t),
        kold = key_json("OLD", t),
        rnew = row_json("NEW", t),
        rold = row_json("OLD", t),
    )
}

/// (Re)creates the capture triggers of every table and records the tables in `berth_tables`.
pub fn install(conn: &Connection, tables: &[Table]) -> Result<()> {
    for t in tables {
        for n in trigger_names(&t.name) {
            conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {};", ident(&n)))?;
        }
        conn.execute_batch(&trigger_sql(t))?;
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
        assert_eq!(
            l[0].3.as_deref(),
            Some(r#"{"id":"a","n":1,"b":["b","00FF"],"odd \"name":"q"}"#)
        );
        assert_eq!(l[1].0, "U");
        assert!(l[1].2.as_deref().unwrap().contains(r#""n":1"#));
        assert!(l[1].3.as_deref().unwrap().contains(r#""n":2"#));
        assert_eq!(l[2].0, "D");
        assert!(l[2].3.is_none());
    }

    #[test]
    fn suppressed_capture_does_not_echo() {
        let c = db();
        c.execute_batch("BEGIN").unwrap();
        store::set_capture(&c, false).unwrap();
        c.execute_batch("INSERT INTO t(id) VALUES ('x')").unwrap();
        store::set_capture(&c, true).unwrap();
        c.execute_batch("COMMIT; INSERT INTO t(id) VALUES ('y');")
            .unwrap();
        let l = log(&c);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].1, r#"["y"]"#);
    }
}
