//! The schema a model is checked against, read from SQLite: tables, key columns and foreign
//! keys ([`Schema::read`]).

use super::*;

/// A foreign key as SQLite reports it, with the parent's key filled in when implicit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// Referencing columns.
    pub from: Vec<String>,
    /// Parent table.
    pub table: String,
    /// Parent columns.
    pub to: Vec<String>,
}

/// One table of the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Name as declared.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<String>,
    /// Primary key columns in key order (empty if none).
    pub pk: Vec<String>,
    /// Foreign keys.
    pub fks: Vec<ForeignKey>,
}

impl TableInfo {
    pub(super) fn column(&self, c: &str) -> Option<&String> {
        self.columns.iter().find(|x| x.eq_ignore_ascii_case(c))
    }
}

/// The user tables of a database (berth's and SQLite's own excluded), keyed by lower-case
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schema {
    /// Tables by lower-case name.
    pub tables: BTreeMap<String, TableInfo>,
}

impl Schema {
    /// Reads tables, keys and foreign keys.
    pub fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let names: Vec<String> = conn
            .prepare("SELECT name FROM main.sqlite_master WHERE type = 'table' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut tables = BTreeMap::new();
        let shadow = crate::schema::shadow_tables(conn)?;
        for name in names
            .into_iter()
            .filter(|n| !crate::schema::is_internal(n) && !shadow.contains(&n.to_ascii_lowercase()))
        {
            let cols: Vec<(String, i64)> = conn
                .prepare("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?
                .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut pk: Vec<(i64, String)> = cols
                .iter()
                .filter(|c| c.1 > 0)
                .map(|c| (c.1, c.0.clone()))
                .collect();
            pk.sort();
            let pk: Vec<String> = pk.into_iter().map(|p| p.1).collect();
            let rows: Vec<(i64, String, String, Option<String>)> = conn
                .prepare(
                    "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1) \
                     ORDER BY id, seq",
                )?
                .query_map([&name], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
            for (id, parent, from, to) in rows {
                let fk = by_id.entry(id).or_insert_with(|| ForeignKey {
                    from: vec![],
                    table: parent,
                    to: vec![],
                });
                fk.from.push(from);
                // NULL `to` (the parent's key) is filled in below.
                fk.to.extend(to);
            }
            let fks = by_id.into_values().collect();
            tables.insert(
                name.to_ascii_lowercase(),
                TableInfo {
                    name,
                    columns: cols.into_iter().map(|c| c.0).collect(),
                    pk,
                    fks,
                },
            );
        }
        // `REFERENCES parent` without columns means the parent's primary key.
        let keys: BTreeMap<String, Vec<String>> = tables
            .iter()
            .map(|(k, t)| (k.clone(), t.pk.clone()))
            .collect();
        for t in tables.values_mut() {
            for fk in &mut t.fks {
                if fk.to.len() != fk.from.len() {
                    fk.to = keys
                        .get(&fk.table.to_ascii_lowercase())
                        .cloned()
                        .unwrap_or_default();
                }
            }
        }
        Ok(Schema { tables })
    }

    /// The table (case-insensitive).
    pub fn table(&self, name: &str) -> Option<&TableInfo> {
        self.tables.get(&name.to_ascii_lowercase())
    }
}
