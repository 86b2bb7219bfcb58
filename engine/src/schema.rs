//! The replicated schema: which tables berth carries and their keys. (The schema checksum
//! is the snapshot's, `evolve::snapshot`.)

use crate::error::{EngineError, Result};
use rusqlite::Connection;

/// A replicated table as berth sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Table name.
    pub name: String,
    /// Every column, in declaration order.
    pub columns: Vec<String>,
    /// The primary key columns, in key order.
    pub pk: Vec<String>,
    /// True when the key is an `INTEGER PRIMARY KEY` (a rowid alias): sites that each pick
    /// the next integer will collide.
    pub rowid_key: bool,
}

/// True for objects that belong to berth or SQLite rather than to the user.
pub fn is_internal(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with("berth_") || lower.starts_with("sqlite_")
}

/// Reads every user table of the database, refusing tables without an explicit primary key.
pub fn tables(conn: &Connection) -> Result<Vec<Table>> {
    let mut names = Vec::new();
    {
        let mut st =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for n in rows {
            let n = n?;
            if !is_internal(&n) {
                names.push(n);
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let mut st =
            conn.prepare("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")?;
        let cols: Vec<(String, String, i64)> = st
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut keyed: Vec<(i64, String, String)> = cols
            .iter()
            .filter(|c| c.2 > 0)
            .map(|c| (c.2, c.0.clone(), c.1.clone()))
            .collect();
        keyed.sort();
        if keyed.is_empty() {
            return Err(EngineError::Schema {
                table: name,
                reason: "has no PRIMARY KEY; berth identifies rows across sites by their key, \
                         so declare one (a TEXT id such as a UUID is safest)"
                    .into(),
            });
        }
        let rowid_key = keyed.len() == 1 && keyed[0].2.eq_ignore_ascii_case("INTEGER") && {
            // From the tokens, not the text: a comment may mention WITHOUT ROWID, and the
            // two words may be on two lines.
            let sql: Option<String> = conn.query_row(
                "SELECT sql FROM sqlite_master WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?;
            !sql.as_deref()
                .and_then(crate::evolve::sqltext::parse_create_table)
                .is_some_and(|p| p.without_rowid)
        };
        out.push(Table {
            columns: cols.into_iter().map(|c| c.0).collect(),
            pk: keyed.into_iter().map(|k| k.1).collect(),
            name,
            rowid_key,
        });
    }
    Ok(out)
}

/// The user's schema as SQL statements, in an order that recreates it: tables, indexes,
/// views, triggers (berth's own objects excluded). Each is the text SQLite stores, comments
/// included, without what follows its last token.
pub fn schema_sql(conn: &Connection) -> Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL
         ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid",
    )?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (_kind, name, sql) = row?;
        if !is_internal(&name) {
            // SQLite may store a trailing `--` comment with the statement; the `;` that joins
            // the statements must not end up inside it.
            out.push(crate::evolve::sqltext::statement_text(&sql).to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_without_a_key_is_refused_by_name() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE ok(id TEXT PRIMARY KEY); CREATE TABLE nokey(a, b);")
            .unwrap();
        let err = tables(&c).unwrap_err().to_string();
        assert!(err.contains("nokey"), "{err}");
    }

    #[test]
    fn keys_and_rowid_aliases_are_found() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE a(id INTEGER PRIMARY KEY, v);
             CREATE TABLE b(x TEXT, y INT, v, PRIMARY KEY (y, x));
             CREATE TABLE berth_meta(k PRIMARY KEY);",
        )
        .unwrap();
        let t = tables(&c).unwrap();
        assert_eq!(t.len(), 2);
        assert!(t[0].rowid_key);
        assert_eq!(t[1].pk, vec!["y".to_string(), "x".to_string()]);
        assert!(!t[1].rowid_key);
    }

    #[test]
    fn statements_with_comments_rejoin_into_a_script_that_runs() {
        let c = Connection::open_in_memory().unwrap();
        // SQLite keeps the trailing comment of the index, without a line break.
        c.execute_batch("CREATE TABLE t(id TEXT PRIMARY KEY, -- key\n v)")
            .unwrap();
        c.execute_batch("CREATE INDEX t_v ON t(v) -- by v").unwrap();
        c.execute_batch("CREATE VIEW w AS SELECT v FROM t /* all */")
            .unwrap();
        let script = schema_sql(&c).unwrap().join(";\n") + ";\n";
        let copy = Connection::open_in_memory().unwrap();
        copy.execute_batch(&script).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 4, "{script}");
    }
}
