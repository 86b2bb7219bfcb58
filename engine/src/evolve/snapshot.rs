//! Schema snapshots: a normalized description of the replicated schema and its checksum.
//!
//! A [`Snapshot`] is read from a live connection with [`read`]: the structure of each table
//! comes from `PRAGMA table_xinfo`, `foreign_key_list`, `index_list` and `index_xinfo`; what
//! the pragmas do not say (CHECK constraints, column collations, generated-column
//! expressions, AUTOINCREMENT, STRICT) from the table's `CREATE TABLE` text. Views, triggers
//! and explicit indexes are compared by their SQL in canonical token form
//! ([`super::sqltext::normalize`]), which is stable under SQLite's own rewriting of names by
//! `ALTER TABLE .. RENAME`. berth's objects (`berth_*`, `sqlite_*`) are left out.
//!
//! [`Snapshot::canonical`] is the text that is hashed ([`Snapshot::checksum`]); the original
//! SQL kept in each object (`sql`) is not part of it: two databases with the same structure
//! but differently written `CREATE TABLE` statements have the same checksum.

use super::Error;
use super::sqltext::{self, Token};
use crate::schema::is_internal;
use crate::store::ident;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Version of the snapshot format; the first line of the canonical text.
pub const FORMAT: u32 = 1;

/// The replicated schema of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// User tables, by name.
    pub tables: Vec<TableDef>,
    /// Explicit (`CREATE INDEX`) indexes on user tables, by name.
    pub indexes: Vec<IndexDef>,
    /// Views, by name.
    pub views: Vec<ViewDef>,
    /// User triggers (berth's capture triggers excluded), by name.
    pub triggers: Vec<TriggerDef>,
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Columns in declaration order.
    pub columns: Vec<ColumnDef>,
    /// Primary key columns in key order (empty: rowid only).
    pub primary_key: Vec<String>,
    /// `WITHOUT ROWID`.
    pub without_rowid: bool,
    /// `STRICT`.
    pub strict: bool,
    /// The key is `INTEGER PRIMARY KEY AUTOINCREMENT` (a counter in `sqlite_sequence`).
    pub autoincrement: bool,
    /// Foreign keys, sorted.
    pub foreign_keys: Vec<ForeignKey>,
    /// UNIQUE constraints (column lists), sorted.
    pub uniques: Vec<Vec<IndexColumn>>,
    /// CHECK expressions (column and table constraints alike) in canonical form, sorted.
    pub checks: Vec<String>,
    /// The `CREATE TABLE` statement as stored by SQLite, comments and whitespace as written
    /// (only what follows its last token dropped). Not part of the canonical text; used to
    /// recreate the table.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sql: String,
}

/// One column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Column name.
    pub name: String,
    /// Declared type, upper case, comments dropped, whitespace folded ("" when none).
    #[serde(rename = "type")]
    pub decl_type: String,
    /// `NOT NULL`.
    pub not_null: bool,
    /// Default expression in canonical form.
    pub default: Option<String>,
    /// Collation, upper case; `None` for the default (BINARY).
    pub collation: Option<String>,
    /// Generated column: its expression.
    pub generated: Option<Generated>,
}

/// A generated column's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    /// `STORED` (else `VIRTUAL`).
    pub stored: bool,
    /// The expression in canonical form.
    pub expr: String,
}

/// A foreign key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForeignKey {
    /// Child columns.
    pub columns: Vec<String>,
    /// Parent table.
    pub parent: String,
    /// Parent columns (empty: the parent's primary key).
    pub parent_columns: Vec<String>,
    /// `ON UPDATE` action.
    pub on_update: String,
    /// `ON DELETE` action.
    pub on_delete: String,
    /// `MATCH` clause.
    #[serde(rename = "match")]
    pub match_: String,
}

/// A key column of an index or UNIQUE constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IndexColumn {
    /// Column name, or `None` for an expression (the expression is in the index's SQL).
    pub name: Option<String>,
    /// Descending.
    pub desc: bool,
    /// Collation, upper case.
    pub collation: String,
}

/// An explicit index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Index name.
    pub name: String,
    /// Indexed table.
    pub table: String,
    /// `UNIQUE`.
    pub unique: bool,
    /// Key columns.
    pub columns: Vec<IndexColumn>,
    /// The WHERE clause of a partial index, canonical form.
    pub partial: Option<String>,
    /// The `CREATE INDEX` statement in canonical form.
    pub canonical: String,
    /// The statement as stored (not part of the canonical text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sql: String,
}

/// A view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewDef {
    /// View name.
    pub name: String,
    /// The `CREATE VIEW` statement in canonical form.
    pub canonical: String,
    /// The statement as stored (not part of the canonical text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sql: String,
}

/// A user trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerDef {
    /// Trigger name.
    pub name: String,
    /// The table (or view) it is on.
    pub table: String,
    /// The `CREATE TRIGGER` statement in canonical form.
    pub canonical: String,
    /// The statement as stored (not part of the canonical text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sql: String,
}

/// The stored text of a statement, kept as SQLite stores it: comments and whitespace
/// inside it as written (a `--` comment ends at its line break, and string literals keep
/// their spaces), only what follows its last token dropped.
fn stored(sql: &str) -> String {
    sqltext::statement_text(sql).to_string()
}

/// A declared type as the snapshot compares it: comments dropped, whitespace runs folded to
/// one space, upper case. (Types hold no literals, so folding changes no value.)
fn decl_type(ty: &str) -> String {
    sqltext::strip_comments(ty)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

fn line<T: Serialize>(out: &mut String, kind: &str, v: &T) -> Result<(), Error> {
    out.push_str(kind);
    out.push(' ');
    out.push_str(&serde_json::to_string(v).map_err(|e| Error::Snapshot {
        reason: e.to_string(),
    })?);
    out.push('\n');
    Ok(())
}

impl Snapshot {
    /// The table of that name (case-insensitive, as SQLite resolves names).
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// The canonical text: `berth-schema 1`, then one line per object (`table`, `index`,
    /// `view`, `trigger`, each group sorted by name), each the kind, a space and the object
    /// as compact JSON without its stored `sql`.
    pub fn canonical(&self) -> Result<String, Error> {
        let mut out = format!("berth-schema {}\n", self.format);
        for t in &self.tables {
            let mut t = t.clone();
            t.sql.clear();
            line(&mut out, "table", &t)?;
        }
        for i in &self.indexes {
            let mut i = i.clone();
            i.sql.clear();
            line(&mut out, "index", &i)?;
        }
        for v in &self.views {
            let mut v = v.clone();
            v.sql.clear();
            line(&mut out, "view", &v)?;
        }
        for t in &self.triggers {
            let mut t = t.clone();
            t.sql.clear();
            line(&mut out, "trigger", &t)?;
        }
        Ok(out)
    }

    /// sha256 of the canonical text, 64 lowercase hex digits.
    pub fn checksum(&self) -> Result<String, Error> {
        Ok(hex::encode(Sha256::digest(self.canonical()?.as_bytes())))
    }

    /// Sorts every list the way [`read`] does (for snapshots built by hand or read from JSON).
    pub fn sort(&mut self) {
        self.tables.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &mut self.tables {
            t.foreign_keys.sort();
            t.uniques.sort();
            t.checks.sort();
        }
        self.indexes.sort_by(|a, b| a.name.cmp(&b.name));
        self.views.sort_by(|a, b| a.name.cmp(&b.name));
        self.triggers.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The statements that create this schema in an empty database: tables, indexes, views,
    /// triggers, each in name order.
    pub fn create_sql(&self) -> Vec<String> {
        let mut out: Vec<String> = self.tables.iter().map(|t| t.sql.clone()).collect();
        out.extend(self.indexes.iter().map(|i| i.sql.clone()));
        out.extend(self.views.iter().map(|v| v.sql.clone()));
        out.extend(self.triggers.iter().map(|t| t.sql.clone()));
        out
    }
}

/// Reads the snapshot of the user schema of a connection.
pub fn read(conn: &Connection) -> Result<Snapshot, Error> {
    read_where(conn, &|_| true)
}

/// Reads the snapshot of the user objects whose table (`sqlite_master.tbl_name`; a view's
/// own name) `keep` accepts. The capture guard reads the replicated tables only, so a table
/// a tool added beside them is reported, not taken for a change of the replicated schema.
pub fn read_where(conn: &Connection, keep: &dyn Fn(&str) -> bool) -> Result<Snapshot, Error> {
    // A virtual table's shadow tables come with it (SPEC 5.1).
    let shadow = crate::schema::shadow_tables(conn)?;
    let mut objects: Vec<(String, String, String, Option<String>)> = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name COLLATE BINARY",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        for r in rows {
            let r: (String, String, String, Option<String>) = r?;
            if !is_internal(&r.1)
                && !is_internal(&r.2)
                && !shadow.contains(&r.2.to_ascii_lowercase())
                && keep(&r.2)
            {
                objects.push(r);
            }
        }
    }
    let mut snap = Snapshot {
        format: FORMAT,
        ..Snapshot::default()
    };
    for (kind, name, tbl, sql) in objects {
        let Some(sql) = sql else { continue };
        match kind.as_str() {
            "table" => snap.tables.push(read_table(conn, &name, &sql)?),
            "index" => snap.indexes.push(read_index(conn, &name, &tbl, &sql)?),
            "view" => snap.views.push(ViewDef {
                name,
                canonical: sqltext::normalize(&sql),
                sql: stored(&sql),
            }),
            "trigger" => snap.triggers.push(TriggerDef {
                name,
                table: tbl,
                canonical: sqltext::normalize(&sql),
                sql: stored(&sql),
            }),
            _ => {}
        }
    }
    snap.sort();
    Ok(snap)
}

fn index_columns(conn: &Connection, index: &str) -> Result<Vec<IndexColumn>, Error> {
    let mut st = conn.prepare(
        "SELECT name, \"desc\", coll FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
    )?;
    let cols = st
        .query_map([index], |r| {
            Ok(IndexColumn {
                name: r.get(0)?,
                desc: r.get::<_, i64>(1)? != 0,
                collation: r
                    .get::<_, Option<String>>(2)?
                    .unwrap_or_default()
                    .to_ascii_uppercase(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(cols)
}

fn read_table(conn: &Connection, name: &str, sql: &str) -> Result<TableDef, Error> {
    let parsed = sqltext::parse_create_table(sql);
    let item = |col: &str| -> Option<&[Token]> {
        parsed.as_ref().and_then(|p| {
            p.columns
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(col))
                .map(|(_, t)| t.as_slice())
        })
    };
    let mut t = TableDef {
        name: name.to_string(),
        sql: stored(sql),
        without_rowid: parsed.as_ref().is_some_and(|p| p.without_rowid),
        strict: parsed.as_ref().is_some_and(|p| p.strict),
        ..TableDef::default()
    };
    let mut pk: Vec<(i64, String)> = Vec::new();
    {
        let mut st = conn.prepare(
            "SELECT name, type, \"notnull\", dflt_value, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid",
        )?;
        let rows = st.query_map([name], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        for row in rows {
            let (cname, ty, notnull, dflt, pkpos, hidden) = row?;
            let tokens = item(&cname);
            if hidden == 1 {
                // A virtual table's hidden column: not part of the stored row.
                continue;
            }
            if pkpos > 0 {
                pk.push((pkpos, cname.clone()));
            }
            let generated = if hidden == 2 || hidden == 3 {
                tokens
                    .and_then(|tk| sqltext::paren_after(tk, "AS").into_iter().next())
                    .map(|e| Generated {
                        stored: hidden == 3,
                        expr: sqltext::render(&e),
                    })
            } else {
                None
            };
            if let Some(tk) = tokens {
                if sqltext::has_kw(tk, "AUTOINCREMENT") {
                    t.autoincrement = true;
                }
                for c in sqltext::paren_after(tk, "CHECK") {
                    t.checks.push(sqltext::render(&c));
                }
            }
            let collation = tokens
                .and_then(sqltext::collation)
                .map(|c| c.to_ascii_uppercase())
                .filter(|c| c != "BINARY");
            t.columns.push(ColumnDef {
                name: cname,
                decl_type: decl_type(&ty.unwrap_or_default()),
                not_null: notnull != 0,
                default: dflt.map(|d| sqltext::normalize(&d)),
                collation,
                generated,
            });
        }
    }
    pk.sort();
    t.primary_key = pk.into_iter().map(|p| p.1).collect();
    if let Some(p) = &parsed {
        for c in &p.constraints {
            for e in sqltext::paren_after(c, "CHECK") {
                t.checks.push(sqltext::render(&e));
            }
        }
    }
    {
        let mut st = conn.prepare(
            "SELECT id, \"table\", \"from\", \"to\", on_update, on_delete, \"match\"
             FROM pragma_foreign_key_list(?1) ORDER BY id, seq",
        )?;
        let rows = st.query_map([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut last = None;
        for row in rows {
            let (id, parent, from, to, upd, del, m) = row?;
            if last != Some(id) {
                t.foreign_keys.push(ForeignKey {
                    columns: Vec::new(),
                    parent,
                    parent_columns: Vec::new(),
                    on_update: upd,
                    on_delete: del,
                    match_: m,
                });
                last = Some(id);
            }
            if let Some(fk) = t.foreign_keys.last_mut() {
                fk.columns.push(from);
                if let Some(to) = to {
                    fk.parent_columns.push(to);
                }
            }
        }
    }
    {
        let mut st = conn
            .prepare("SELECT name FROM pragma_index_list(?1) WHERE origin = 'u' ORDER BY name")?;
        let names: Vec<String> = st
            .query_map([name], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for n in names {
            t.uniques.push(index_columns(conn, &n)?);
        }
    }
    Ok(t)
}

fn read_index(conn: &Connection, name: &str, table: &str, sql: &str) -> Result<IndexDef, Error> {
    let unique: bool = conn
        .query_row(
            "SELECT \"unique\" FROM pragma_index_list(?1) WHERE name = ?2",
            [table, name],
            |r| r.get::<_, i64>(0),
        )
        .map(|u| u != 0)
        .unwrap_or(false);
    let partial = sqltext::tokenize(sql).ok().and_then(|tk| {
        let mut depth = 0i32;
        let pos = tk.iter().position(|t| {
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth -= 1;
            }
            depth == 0 && t.is_kw("WHERE")
        })?;
        Some(sqltext::render(&tk[pos + 1..]))
    });
    Ok(IndexDef {
        name: name.to_string(),
        table: table.to_string(),
        unique,
        columns: index_columns(conn, name)?,
        partial,
        canonical: sqltext::normalize(sql),
        sql: stored(sql),
    })
}

/// Builds the schema of an SQL text in a scratch in-memory database and snapshots it.
pub fn from_sql(sql: &str) -> Result<Snapshot, Error> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(sql).map_err(|e| Error::BadSql {
        reason: e.to_string(),
    })?;
    read(&conn)
}

/// Creates an empty database holding the snapshot's schema (from each object's stored SQL).
pub fn materialize(snap: &Snapshot) -> Result<Connection, Error> {
    let conn = Connection::open_in_memory()?;
    for s in snap.create_sql() {
        if s.is_empty() {
            return Err(Error::Snapshot {
                reason: "the snapshot lacks the SQL of an object".into(),
            });
        }
        conn.execute_batch(&s).map_err(|e| Error::BadSql {
            reason: format!("{e} in {s}"),
        })?;
    }
    Ok(conn)
}

/// Where a schema comes from, as named on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A SQLite database file.
    Database,
    /// A snapshot in JSON (as `berth schema snapshot --json` prints it).
    SnapshotJson,
    /// A file of SQL statements.
    SqlText,
}

/// Guesses what a file holds: the SQLite header, a JSON object, or SQL.
pub fn source_kind(bytes: &[u8]) -> SourceKind {
    if bytes.starts_with(b"SQLite format 3\0") {
        SourceKind::Database
    } else if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        SourceKind::SnapshotJson
    } else {
        SourceKind::SqlText
    }
}

/// A snapshot from JSON: either a bare snapshot or an object with a `snapshot` field.
pub fn from_json(text: &str) -> Result<Snapshot, Error> {
    #[derive(Deserialize)]
    struct Wrapped {
        snapshot: Snapshot,
    }
    let mut s = serde_json::from_str::<Snapshot>(text)
        .or_else(|_| serde_json::from_str::<Wrapped>(text).map(|w| w.snapshot))
        .map_err(|e| Error::Snapshot {
            reason: format!("not a schema snapshot: {e}"),
        })?;
    if s.format != FORMAT {
        return Err(Error::Snapshot {
            reason: format!(
                "snapshot format {} is not supported (expected {FORMAT})",
                s.format
            ),
        });
    }
    s.sort();
    Ok(s)
}

/// Reads a snapshot from a file: a database, a snapshot JSON or SQL statements.
pub fn from_file(path: &Path) -> Result<Snapshot, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    let with_path = |e: Error| Error::InFile {
        path: path.to_path_buf(),
        error: Box::new(e),
    };
    match source_kind(&bytes) {
        SourceKind::Database => {
            let conn = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            read(&conn).map_err(with_path)
        }
        SourceKind::SnapshotJson => from_json(&String::from_utf8_lossy(&bytes)).map_err(with_path),
        SourceKind::SqlText => match String::from_utf8(bytes) {
            Ok(text) => from_sql(&text).map_err(with_path),
            Err(_) => Err(with_path(Error::BadSql {
                reason: "the file is neither UTF-8 SQL text, a snapshot nor a SQLite database"
                    .into(),
            })),
        },
    }
}

/// Names of the user tables that hold at least one row.
pub fn nonempty_tables(conn: &Connection, snap: &Snapshot) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for t in &snap.tables {
        let any: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM {})", ident(&t.name)),
            [],
            |r| r.get(0),
        )?;
        if any {
            out.push(t.name.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(sql: &str) -> Snapshot {
        from_sql(sql).unwrap()
    }

    #[test]
    fn writing_style_does_not_change_the_checksum() {
        let a = snap(
            "CREATE TABLE t(id TEXT PRIMARY KEY, n INT NOT NULL DEFAULT 0 CHECK(n>=0));
             CREATE INDEX t_n ON t(n) WHERE n > 0;",
        );
        let b = snap(
            "create table \"t\" ( id text primary key , n int not null default 0 , check ( n >= 0 ) ) ;
             create index t_n on t ( \"n\" ) where n>0;",
        );
        assert_eq!(a.checksum().unwrap(), b.checksum().unwrap());
        assert_ne!(a.tables[0].sql, b.tables[0].sql);
    }

    #[test]
    fn every_kind_of_fact_is_seen() {
        let s = snap(
            "CREATE TABLE p(id INTEGER PRIMARY KEY AUTOINCREMENT, code TEXT COLLATE NOCASE UNIQUE);
             CREATE TABLE c(id TEXT PRIMARY KEY, p INT REFERENCES p(id) ON DELETE CASCADE,
                            g AS (id || 'x') STORED, CHECK (length(id) > 1)) WITHOUT ROWID;
             CREATE VIEW v AS SELECT * FROM c;
             CREATE TRIGGER tr AFTER INSERT ON p BEGIN SELECT 1; END;
             CREATE TABLE berth_x(a PRIMARY KEY);",
        );
        assert_eq!(s.tables.len(), 2);
        let p = s.table("p").unwrap();
        assert!(p.autoincrement);
        assert_eq!(p.columns[1].collation.as_deref(), Some("NOCASE"));
        assert_eq!(p.uniques.len(), 1);
        let c = s.table("c").unwrap();
        assert!(c.without_rowid);
        assert_eq!(c.foreign_keys[0].on_delete, "CASCADE");
        assert_eq!(c.checks, vec!["length(id) > 1".to_string()]);
        assert!(c.columns[2].generated.as_ref().unwrap().stored);
        assert_eq!(s.views.len(), 1);
        assert_eq!(s.triggers.len(), 1);
        let again = from_json(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn bad_sql_is_an_error() {
        assert!(matches!(
            from_sql("CREATE TABLE ("),
            Err(Error::BadSql { .. })
        ));
    }
}
