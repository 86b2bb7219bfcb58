//! The replicated schema: which tables berth carries and their keys. (The schema checksum
//! is the snapshot's, `evolve::snapshot`.)
//!
//! Every user table is replicated by its PRIMARY KEY unless the docking model classes it
//! otherwise ([`Classes`]): a `local` table is part of the schema but never captured or
//! sent; a table without a PRIMARY KEY may name its key (NOT NULL columns with a UNIQUE
//! index on exactly them).

use crate::error::{EngineError, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The manifest extension in which central's bundles carry its [`Classes`] to the nodes
/// (`[extensions.tables] local = [..]`, `keys = { TABLE = [..] }`; SPEC 2.2).
pub const EXTENSION: &str = "tables";

/// Meta key of the [`Classes`] of a site (JSON).
const CLASSES_KEY: &str = "table_classes";

/// The tables the docking model takes out of plain replication by primary key, by
/// lower-case name. Central keeps it from its docking model; a node from central's bundles
/// (`[extensions.tables]`, SPEC 2.2), since the node has no model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classes {
    /// Tables that stay at each site: never captured, sent, routed or compared.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub local: BTreeSet<String>,
    /// Tables without a PRIMARY KEY, with the columns that identify their rows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keys: BTreeMap<String, Vec<String>>,
}

impl Classes {
    /// Whether `table` is local (case-insensitive).
    pub fn is_local(&self, table: &str) -> bool {
        self.local.contains(&table.to_ascii_lowercase())
    }

    /// The named key of `table`, if the model names one.
    pub fn key(&self, table: &str) -> Option<&Vec<String>> {
        self.keys.get(&table.to_ascii_lowercase())
    }

    /// The classes recorded at a site; none in a database without berth's tables.
    pub fn load(conn: &Connection) -> Result<Classes> {
        Ok(Classes::recorded(conn)?.unwrap_or_default())
    }

    /// The classes recorded at a site, `None` where none were ever recorded (a site made
    /// before classes existed, a node before its extract, a database without berth's
    /// tables).
    pub fn recorded(conn: &Connection) -> Result<Option<Classes>> {
        let has_meta: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'berth_meta')",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(None);
        }
        match crate::store::meta(conn, CLASSES_KEY)? {
            None => Ok(None),
            Some(text) => Classes::from_json(&text)
                .map(Some)
                .ok_or_else(|| EngineError::Schema {
                    table: CLASSES_KEY.into(),
                    reason: format!("berth_meta holds {text:?}, which is not a table class list"),
                }),
        }
    }

    /// Records the classes at a site.
    pub fn save(&self, conn: &Connection) -> Result<()> {
        crate::store::set_meta(conn, CLASSES_KEY, &self.to_json())
    }

    /// The JSON form (keys sorted: the same classes give the same text).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads the JSON form; `None` when malformed.
    pub fn from_json(text: &str) -> Option<Classes> {
        let c: Classes = serde_json::from_str(text).ok()?;
        Some(c.lowercased())
    }

    /// The `[extensions.tables]` value.
    pub fn to_extension(&self) -> toml::Value {
        let mut t = toml::Table::new();
        t.insert(
            "local".into(),
            toml::Value::Array(self.local.iter().map(|n| n.clone().into()).collect()),
        );
        let keys: toml::Table = self
            .keys
            .iter()
            .map(|(n, k)| {
                let cols = k.iter().map(|c| c.clone().into()).collect();
                (n.clone(), toml::Value::Array(cols))
            })
            .collect();
        t.insert("keys".into(), toml::Value::Table(keys));
        toml::Value::Table(t)
    }

    /// Reads `[extensions.tables]` of a manifest: `None` when absent or malformed.
    pub fn from_extensions(ext: &BTreeMap<String, toml::Value>) -> Option<Classes> {
        let t = ext.get(EXTENSION)?.as_table()?;
        let names = |v: &toml::Value| -> Option<Vec<String>> {
            v.as_array()?
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect()
        };
        let mut c = Classes::default();
        if let Some(local) = t.get("local") {
            c.local = names(local)?.into_iter().collect();
        }
        if let Some(keys) = t.get("keys") {
            for (n, k) in keys.as_table()? {
                c.keys.insert(n.clone(), names(k)?);
            }
        }
        Some(c.lowercased())
    }

    fn lowercased(self) -> Classes {
        Classes {
            local: self.local.iter().map(|t| t.to_ascii_lowercase()).collect(),
            keys: self
                .keys
                .into_iter()
                .map(|(t, k)| (t.to_ascii_lowercase(), k))
                .collect(),
        }
    }
}

/// The shadow tables of the database's virtual tables (an FTS5 table's `_data`, `_idx`,
/// ...), by lower-case name. The virtual table creates them, so they are never part of the
/// user's schema: recreating one beside its virtual table fails, and replicating one would
/// carry an index's internals.
pub fn shadow_tables(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    conn.prepare_cached(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'shadow'",
    )?
    .query_map([], |r| r.get::<_, String>(0))?
    .map(|n| n.map(|n| n.to_ascii_lowercase()))
    .collect()
}

/// The message for a table without a PRIMARY KEY: it names both ways out.
pub fn no_key_reason() -> String {
    "has no PRIMARY KEY; berth identifies rows across sites by their key. Either declare one \
     (a TEXT id such as a UUID is safest), or in the docking model make the table \
     `{ visibility = \"local\" }` (kept at each site, never sent) or name its key \
     (`key = [\"col\", ...]`: NOT NULL columns with a UNIQUE index on exactly them)"
        .into()
}

/// Why `key` cannot identify the rows of `table`, or `None` when it can: every column
/// exists and is NOT NULL, and a UNIQUE index (or constraint) has exactly these columns.
pub fn key_problem(conn: &Connection, table: &str, key: &[String]) -> Result<Option<String>> {
    if key.is_empty() {
        return Ok(Some("key = [] names no column".into()));
    }
    let cols: Vec<(String, bool)> = conn
        .prepare("SELECT name, \"notnull\" FROM pragma_table_info(?1)")?
        .query_map([table], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut wanted = BTreeSet::new();
    for k in key {
        match cols.iter().find(|c| c.0.eq_ignore_ascii_case(k)) {
            None => {
                return Ok(Some(format!(
                    "key column {k:?} is not a column of the table"
                )));
            }
            Some((_, false)) => {
                return Ok(Some(format!(
                    "key column {k:?} may be NULL; a key column must be NOT NULL"
                )));
            }
            Some((name, true)) => {
                if !wanted.insert(name.to_ascii_lowercase()) {
                    return Ok(Some(format!("key column {k:?} is named twice")));
                }
            }
        }
    }
    let indexes: Vec<(String, bool, bool)> = conn
        .prepare("SELECT name, \"unique\", partial FROM pragma_index_list(?1)")?
        .query_map([table], |r| {
            Ok((
                r.get(0)?,
                r.get::<_, i64>(1)? != 0,
                r.get::<_, i64>(2)? != 0,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (name, unique, partial) in indexes {
        if !unique || partial {
            continue;
        }
        let on: Vec<Option<String>> = conn
            .prepare("SELECT name FROM pragma_index_info(?1)")?
            .query_map([&name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let on: Option<BTreeSet<String>> = on
            .into_iter()
            .map(|n| n.map(|n| n.to_ascii_lowercase()))
            .collect();
        if on.as_ref() == Some(&wanted) && on.as_ref().map(BTreeSet::len) == Some(key.len()) {
            return Ok(None);
        }
    }
    Ok(Some(format!(
        "no UNIQUE index has exactly the key columns ({}); add `CREATE UNIQUE INDEX ... ON {table}({})`",
        key.join(", "),
        key.join(", ")
    )))
}

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

/// Reads every replicated user table of the database (the site's [`Classes`] say which
/// are local and which name their key), refusing tables without a key.
pub fn tables(conn: &Connection) -> Result<Vec<Table>> {
    tables_with(conn, &Classes::load(conn)?)
}

/// [`tables`] with the classes given: local tables are left out; a table without a
/// PRIMARY KEY needs a named key that [`key_problem`] accepts.
pub fn tables_with(conn: &Connection, classes: &Classes) -> Result<Vec<Table>> {
    let shadow = shadow_tables(conn)?;
    let mut names = Vec::new();
    {
        let mut st =
            conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for n in rows {
            let n = n?;
            if !is_internal(&n)
                && !classes.is_local(&n)
                && !shadow.contains(&n.to_ascii_lowercase())
            {
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
            let Some(key) = classes.key(&name) else {
                return Err(EngineError::Schema {
                    table: name,
                    reason: no_key_reason(),
                });
            };
            if let Some(reason) = key_problem(conn, &name, key)? {
                return Err(EngineError::Schema {
                    table: name,
                    reason,
                });
            }
            // The columns as the table spells them: the key is compared with them.
            let pk = key
                .iter()
                .filter_map(|k| cols.iter().find(|c| c.0.eq_ignore_ascii_case(k)))
                .map(|c| c.0.clone())
                .collect();
            out.push(Table {
                columns: cols.into_iter().map(|c| c.0).collect(),
                pk,
                name,
                rowid_key: false,
            });
            continue;
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
    let shadow = shadow_tables(conn)?;
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
        if !is_internal(&name) && !shadow.contains(&name.to_ascii_lowercase()) {
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
    fn local_tables_are_left_out_and_named_keys_stand_for_the_primary_key() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE kv(k, v); CREATE TABLE link(a NOT NULL, b NOT NULL, UNIQUE (b, a));",
        )
        .unwrap();
        let classes = Classes::from_json(r#"{"local":["KV"],"keys":{"Link":["a","B"]}}"#).unwrap();
        let t = tables_with(&c, &classes).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].pk, vec!["a".to_string(), "b".to_string()]);
        let ext = BTreeMap::from([(EXTENSION.to_string(), classes.to_extension())]);
        assert_eq!(Classes::from_extensions(&ext), Some(classes));
        let err = tables_with(&c, &Classes::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kv") && err.contains("local") && err.contains("key ="),
            "{err}"
        );
    }

    #[test]
    fn a_virtual_tables_shadow_tables_are_not_part_of_the_schema() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t(id TEXT PRIMARY KEY); CREATE VIRTUAL TABLE doc USING fts5(body);",
        )
        .unwrap();
        let script = schema_sql(&c).unwrap().join(";\n") + ";\n";
        assert!(!script.contains("doc_data"), "{script}");
        // The script recreates the schema: the shadow tables come with the virtual table.
        Connection::open_in_memory()
            .unwrap()
            .execute_batch(&script)
            .unwrap();
        let local = Classes::from_json(r#"{"local":["doc"]}"#).unwrap();
        let names: Vec<String> = tables_with(&c, &local)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["t"]);
        let snap = crate::evolve::snapshot::read(&c).unwrap();
        let tables: Vec<&str> = snap.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tables, ["doc", "t"]);
    }

    #[test]
    fn keys_and_rowid_aliases_are_found() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE a(id INTEGER PRIMARY KEY, v);
             CREATE TABLE b(x TEXT, y INT, v, PRIMARY KEY (y, x));
             CREATE TABLE berth_peers(k PRIMARY KEY);",
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
