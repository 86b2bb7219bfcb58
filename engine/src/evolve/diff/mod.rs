//! Schema diff to migration (seed 000, claims 1-6): compares two [`Snapshot`]s and plans the
//! SQL that turns the first into the second. No database of the caller is touched (a fill
//! is tried in a scratch in-memory one, [`super::fill`]).
//!
//! Rules (SPEC "Schema snapshots and migrations"):
//! - `ALTER TABLE` where SQLite allows it: `RENAME TO`, `RENAME COLUMN`, `ADD COLUMN` (not a
//!   key, no UNIQUE, no STORED generated column, no parenthesized or CURRENT_* default, and a
//!   NOT NULL column only with a non-NULL default), `DROP COLUMN` (not in the key, a UNIQUE
//!   constraint, a foreign key, a CHECK or a generated column).
//! - Otherwise SQLite's 12-step rebuild
//!   (<https://www.sqlite.org/lang_altertable.html#otheralter>): create the new table under a
//!   scratch name, copy the rows (`rowid` too), keep the AUTOINCREMENT counter, drop the old
//!   table, rename the new one, recreate its indexes. Foreign keys are off outside the
//!   transaction (so no cascade fires on the rebuilt table's children) and checked before
//!   commit.
//! - Views and user triggers that changed are dropped first and created last; when any table
//!   is renamed, rebuilt or loses a column, all of them are (SQLite refuses to rename or drop
//!   what a view or trigger still names).
//! - Destructive steps (dropping a table or a column, narrowing a column's type affinity,
//!   turning a column into a generated one, NOT NULL without a default on a table that may
//!   hold rows) are refused unless [`DiffOptions::allow_destructive`].
//! - The existing rows of a new NOT NULL column get a [`Fill`] (an expression over the old
//!   row) or the zero of its type; a zero the column refuses (key, UNIQUE, CHECK) is refused
//!   at plan time.
//! - Renames are never guessed: a table or column missing on one side and new on the other is
//!   a drop and an add unless a [`Rename`] hint pairs them.

use super::Error;
use super::fill::{self, Fill};
use super::snapshot::{ColumnDef, ForeignKey, IndexColumn, Snapshot, TableDef};
use super::sqltext::{self, Token};
use crate::store::{ident, literal};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

mod decide;
mod emit;

use decide::{Decision, decide};
use emit::emit;
pub use emit::scratch_name;

/// A rename hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rename {
    /// `OLD=NEW`: table `OLD` is table `NEW`.
    Table {
        /// Name in the old schema.
        from: String,
        /// Name in the new schema.
        to: String,
    },
    /// `TABLE.OLD=NEW`: in `TABLE` (old or new name), column `OLD` is column `NEW`.
    Column {
        /// The table.
        table: String,
        /// Old column name.
        from: String,
        /// New column name.
        to: String,
    },
}

impl FromStr for Rename {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadRename {
            hint: s.to_string(),
            reason: reason.to_string(),
        };
        let (left, to) = s
            .split_once('=')
            .ok_or_else(|| bad("expected OLD=NEW or TABLE.OLD=NEW"))?;
        let to = to.trim();
        if to.is_empty() || left.trim().is_empty() {
            return Err(bad("a name is empty"));
        }
        match left.split_once('.') {
            Some((t, c)) if !t.trim().is_empty() && !c.trim().is_empty() => Ok(Rename::Column {
                table: t.trim().to_string(),
                from: c.trim().to_string(),
                to: to.to_string(),
            }),
            Some(_) => Err(bad("a name is empty")),
            None => Ok(Rename::Table {
                from: left.trim().to_string(),
                to: to.to_string(),
            }),
        }
    }
}

impl std::fmt::Display for Rename {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rename::Table { from, to } => write!(f, "{from}={to}"),
            Rename::Column { table, from, to } => write!(f, "{table}.{from}={to}"),
        }
    }
}

/// What the diff may do.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Allow steps that destroy data.
    pub allow_destructive: bool,
    /// Explicit renames.
    pub renames: Vec<Rename>,
    /// Tables of the old schema known to hold no rows (lower case). Every other table is
    /// assumed to hold rows.
    pub empty_tables: BTreeSet<String>,
    /// What the existing rows get in a new column, or in the NULLs of a column that becomes
    /// NOT NULL, instead of the zero of its type ([`fill`]).
    pub fills: Vec<Fill>,
}

/// The kind of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// `DROP VIEW`.
    DropView,
    /// `DROP TRIGGER`.
    DropTrigger,
    /// `DROP INDEX`.
    DropIndex,
    /// `DROP TABLE` (destructive).
    DropTable,
    /// `ALTER TABLE .. RENAME TO`.
    RenameTable,
    /// `ALTER TABLE .. RENAME COLUMN`.
    RenameColumn,
    /// `ALTER TABLE .. DROP COLUMN` (destructive).
    DropColumn,
    /// `ALTER TABLE .. ADD COLUMN`.
    AddColumn,
    /// The 12-step table rebuild.
    Rebuild,
    /// `CREATE TABLE`.
    CreateTable,
    /// `CREATE INDEX`.
    CreateIndex,
    /// `CREATE VIEW`.
    CreateView,
    /// `CREATE TRIGGER`.
    CreateTrigger,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// What it does.
    pub kind: StepKind,
    /// The object it concerns (`table`, `table.column`, index, view or trigger name).
    pub object: String,
    /// Why, in words.
    pub detail: String,
    /// Destroys data.
    pub destructive: bool,
    /// Its statements, each without the trailing `;`.
    pub sql: Vec<String>,
}

/// A migration plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// Foreign keys must be off while the plan runs (a table is rebuilt or dropped), and
    /// checked before commit where the site enforces them.
    pub foreign_keys_off: bool,
    /// Checksum of the schema the plan starts from.
    pub checksum_before: String,
    /// Checksum of the schema it leads to.
    pub checksum_after: String,
}

impl Plan {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Every statement, in order.
    pub fn statements(&self) -> Vec<&str> {
        self.steps
            .iter()
            .flat_map(|s| s.sql.iter().map(String::as_str))
            .collect()
    }

    /// The statements that run inside the transaction, each followed by `;\n`.
    pub fn body(&self) -> String {
        let mut out = String::new();
        for s in self.statements() {
            out.push_str(s);
            out.push_str(";\n");
        }
        out
    }

    /// A complete script for the `sqlite3` shell: the body in a transaction, framed by the
    /// foreign-key pragmas when needed.
    pub fn script(&self) -> String {
        let mut out = format!(
            "-- berth migration: schema {} -> {}\n",
            self.checksum_before, self.checksum_after
        );
        if self.steps.is_empty() {
            out.push_str("-- nothing to do\n");
            return out;
        }
        if self.foreign_keys_off {
            out.push_str(
                "-- foreign keys off outside the transaction: rebuilt or dropped tables must not cascade\nPRAGMA foreign_keys=OFF;\n",
            );
        }
        out.push_str("BEGIN IMMEDIATE;\n");
        for step in &self.steps {
            out.push_str(&format!("-- {}: {}\n", step.object, step.detail));
            for s in &step.sql {
                out.push_str(s);
                out.push_str(";\n");
            }
        }
        if self.foreign_keys_off {
            out.push_str(
                "-- must return no rows where foreign keys are enforced; otherwise ROLLBACK\nPRAGMA foreign_key_check;\n",
            );
        }
        out.push_str("COMMIT;\n");
        if self.foreign_keys_off {
            out.push_str("PRAGMA foreign_keys=ON;\n");
        }
        out
    }
}

/// SQLite's column affinity of a declared type (<https://www.sqlite.org/datatype3.html>, 3.1).
pub fn affinity(decl: &str) -> &'static str {
    let t = decl.to_ascii_uppercase();
    if t.contains("INT") {
        "INTEGER"
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        "TEXT"
    } else if t.contains("BLOB") || t.is_empty() {
        "BLOB"
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        "REAL"
    } else {
        "NUMERIC"
    }
}

/// True when a column's type change may alter or refuse stored values: anything but the same
/// affinity, a move to BLOB (no affinity), numbers to TEXT, and INTEGER or REAL to NUMERIC,
/// INTEGER to REAL. STRICT tables: any change of declared type.
pub fn narrows(from: &str, to: &str, strict: bool) -> bool {
    let (a, b) = (affinity(from), affinity(to));
    if strict {
        return !from.eq_ignore_ascii_case(to) && !to.eq_ignore_ascii_case("ANY");
    }
    !(a == b
        || b == "BLOB"
        || (b == "TEXT" && a != "BLOB")
        || (b == "NUMERIC" && (a == "INTEGER" || a == "REAL"))
        || (b == "REAL" && a == "INTEGER"))
}

fn zero_value(decl: &str) -> &'static str {
    match affinity(decl) {
        "TEXT" => "''",
        "BLOB" => "X''",
        _ => "0",
    }
}

/// Rewrites identifiers in canonical SQL text through a rename map (lower-case keys).
fn rename_idents(text: &str, map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return text.to_string();
    }
    match sqltext::tokenize(text) {
        Ok(tokens) => {
            let t: Vec<Token> = tokens
                .into_iter()
                .map(|t| match &t {
                    Token::Word(w) | Token::Quoted(w) => match map.get(&w.to_ascii_lowercase()) {
                        Some(n) => Token::Quoted(n.clone()),
                        None => t,
                    },
                    _ => t,
                })
                .collect();
            sqltext::render(&t)
        }
        Err(_) => text.to_string(),
    }
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// How the columns of one table pair up.
struct Pairing<'a> {
    from: &'a TableDef,
    to: &'a TableDef,
    /// to column (lower) -> from column.
    source: BTreeMap<String, &'a ColumnDef>,
    /// from column (lower) -> to name, for renamed columns only.
    renamed: BTreeMap<String, String>,
    dropped: Vec<&'a ColumnDef>,
    added: Vec<&'a ColumnDef>,
}

fn col<'a>(t: &'a TableDef, name: &str) -> Option<&'a ColumnDef> {
    t.columns.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

fn map_names(names: &[String], map: &BTreeMap<String, String>) -> Vec<String> {
    names
        .iter()
        .map(|n| map.get(&lc(n)).cloned().unwrap_or_else(|| n.clone()))
        .collect()
}

fn lower_all(v: &[String]) -> Vec<String> {
    v.iter().map(|s| lc(s)).collect()
}

fn fk_key(fk: &ForeignKey) -> (Vec<String>, String, Vec<String>, String, String, String) {
    (
        lower_all(&fk.columns),
        lc(&fk.parent),
        lower_all(&fk.parent_columns),
        fk.on_update.clone(),
        fk.on_delete.clone(),
        fk.match_.clone(),
    )
}

fn unique_key(u: &[IndexColumn]) -> Vec<(Option<String>, bool, String)> {
    u.iter()
        .map(|c| (c.name.as_deref().map(lc), c.desc, c.collation.clone()))
        .collect()
}

/// Plans the migration from `from` to `to`, in phases: the rename hints checked against both
/// schemas, the tables paired, the fills checked, each kept table decided (altered in place
/// or rebuilt; what would destroy data refused unless allowed), and the steps emitted.
pub fn diff(from: &Snapshot, to: &Snapshot, opts: &DiffOptions) -> Result<Plan, Error> {
    let renames = Renames::check(from, to, &opts.renames)?;
    let tables = Tables::pair(from, to, &renames);
    let fills = Fills::check(to, &tables, &opts.fills)?;
    let decisions = decide(to, &renames, &tables, &fills, opts)?;
    emit(from, to, &renames, &tables, &fills, &decisions, opts)
}

/// The rename hints, checked against both schemas.
struct Renames {
    /// Tables: old name (lower case) -> new name.
    tables: BTreeMap<String, String>,
    /// Per new table (lower case): old column (lower case) -> new name.
    columns: BTreeMap<String, BTreeMap<String, String>>,
}

impl Renames {
    /// Checks `hints` against both schemas: each names what exists on its side only, once.
    fn check(from: &Snapshot, to: &Snapshot, hints: &[Rename]) -> Result<Renames, Error> {
        let mut table_renames: BTreeMap<String, String> = BTreeMap::new(); // from lc -> to name
        for r in hints {
            let bad = |reason: String| Error::BadRename {
                hint: r.to_string(),
                reason,
            };
            match r {
                Rename::Table { from: old, to: new } => {
                    if from.table(old).is_none() {
                        return Err(bad(format!("the old schema has no table {old}")));
                    }
                    if to.table(new).is_none() {
                        return Err(bad(format!("the new schema has no table {new}")));
                    }
                    if to.table(old).is_some() {
                        return Err(bad(format!("the new schema still has a table {old}")));
                    }
                    if from.table(new).is_some() {
                        return Err(bad(format!("the old schema already has a table {new}")));
                    }
                    if table_renames.insert(lc(old), new.clone()).is_some() {
                        return Err(bad(format!("table {old} is renamed twice")));
                    }
                }
                Rename::Column { .. } => {}
            }
        }
        let rename_of = |old: &str| -> String {
            table_renames
                .get(&lc(old))
                .cloned()
                .unwrap_or_else(|| old.to_string())
        };
        // Per to-table (lower): from column (lower) -> new name.
        let mut col_renames: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in hints {
            if let Rename::Column {
                table,
                from: old,
                to: new,
            } = r
            {
                let bad = |reason: String| Error::BadRename {
                    hint: r.to_string(),
                    reason,
                };
                // The table may be named by its old or its new name.
                let ft = from
                    .table(table)
                    .or_else(|| {
                        table_renames
                            .iter()
                            .find(|(_, n)| n.eq_ignore_ascii_case(table))
                            .and_then(|(o, _)| from.table(o))
                    })
                    .ok_or_else(|| bad(format!("the old schema has no table {table}")))?;
                let tt = to
                    .table(&rename_of(&ft.name))
                    .ok_or_else(|| bad(format!("table {} is not in the new schema", ft.name)))?;
                if col(ft, old).is_none() {
                    return Err(bad(format!("table {} has no column {old}", ft.name)));
                }
                if col(tt, new).is_none() {
                    return Err(bad(format!(
                        "the new table {} has no column {new}",
                        tt.name
                    )));
                }
                if col(tt, old).is_some() {
                    return Err(bad(format!(
                        "the new table {} still has a column {old}",
                        tt.name
                    )));
                }
                if col(ft, new).is_some() {
                    return Err(bad(format!("table {} already has a column {new}", ft.name)));
                }
                let m = col_renames.entry(lc(&tt.name)).or_default();
                if m.insert(lc(old), new.clone()).is_some() {
                    return Err(bad(format!("column {old} is renamed twice")));
                }
            }
        }
        Ok(Renames {
            tables: table_renames,
            columns: col_renames,
        })
    }

    /// The new name of table `old`.
    fn table(&self, old: &str) -> String {
        self.tables
            .get(&lc(old))
            .cloned()
            .unwrap_or_else(|| old.to_string())
    }
}

/// The tables of both schemas: pairs (the same table, maybe renamed), the new ones and the
/// dropped ones.
struct Tables<'a> {
    pairs: Vec<Pairing<'a>>,
    created: Vec<&'a TableDef>,
    dropped: Vec<&'a TableDef>,
}

impl<'a> Tables<'a> {
    /// Pairs each table of `to` with its table in `from` (by name, or the rename hint), and
    /// each kept table's columns likewise.
    fn pair(from: &'a Snapshot, to: &'a Snapshot, renames: &Renames) -> Tables<'a> {
        let (table_renames, col_renames) = (&renames.tables, &renames.columns);
        let mut pairs: Vec<Pairing> = Vec::new();
        let mut created: Vec<&TableDef> = Vec::new();
        let mut matched_from: BTreeSet<String> = BTreeSet::new();
        for tt in &to.tables {
            let from_name = table_renames
                .iter()
                .find(|(_, n)| n.eq_ignore_ascii_case(&tt.name))
                .map(|(o, _)| o.clone())
                .unwrap_or_else(|| tt.name.clone());
            let Some(ft) = from.table(&from_name) else {
                created.push(tt);
                continue;
            };
            matched_from.insert(lc(&ft.name));
            let renamed = col_renames.get(&lc(&tt.name)).cloned().unwrap_or_default();
            let mut source = BTreeMap::new();
            let mut added = Vec::new();
            for c in &tt.columns {
                let old = renamed
                    .iter()
                    .find(|(_, n)| n.eq_ignore_ascii_case(&c.name))
                    .map(|(o, _)| o.clone())
                    .unwrap_or_else(|| c.name.clone());
                match col(ft, &old) {
                    Some(fc) => {
                        source.insert(lc(&c.name), fc);
                    }
                    None => added.push(c),
                }
            }
            let used: BTreeSet<String> = source.values().map(|c| lc(&c.name)).collect();
            let dropped = ft
                .columns
                .iter()
                .filter(|c| !used.contains(&lc(&c.name)))
                .collect();
            pairs.push(Pairing {
                from: ft,
                to: tt,
                source,
                renamed,
                dropped,
                added,
            });
        }
        let dropped_tables: Vec<&TableDef> = from
            .tables
            .iter()
            .filter(|t| !matched_from.contains(&lc(&t.name)))
            .collect();
        Tables {
            pairs,
            created,
            dropped: dropped_tables,
        }
    }
}

/// The fills, checked against both schemas: table (new name, lower case) -> column (lower
/// case) -> fill.
struct Fills<'a>(BTreeMap<String, BTreeMap<String, &'a Fill>>);

impl<'a> Fills<'a> {
    /// Checks each fill of `list`: it names a new (not generated) column of a kept table, or
    /// one that becomes NOT NULL, once, with an expression the old row can answer.
    fn check(to: &Snapshot, tables: &Tables<'_>, list: &'a [Fill]) -> Result<Fills<'a>, Error> {
        let (pairs, created) = (&tables.pairs, &tables.created);
        let mut fills: BTreeMap<String, BTreeMap<String, &Fill>> = BTreeMap::new();
        for f in list {
            let bad = |reason: String| Error::BadFill {
                fill: f.to_string(),
                reason,
            };
            let Some(p) = pairs.iter().find(|p| {
                p.to.name.eq_ignore_ascii_case(&f.table)
                    || p.from.name.eq_ignore_ascii_case(&f.table)
            }) else {
                return Err(bad(
                    if created
                        .iter()
                        .any(|t| t.name.eq_ignore_ascii_case(&f.table))
                    {
                        format!("table {} is new: it has no rows to fill", f.table)
                    } else {
                        format!("no table {} in both schemas", f.table)
                    },
                ));
            };
            let c = col(p.to, &f.column).ok_or_else(|| {
                bad(format!(
                    "the new table {} has no column {}",
                    p.to.name, f.column
                ))
            })?;
            let fillable = match p.source.get(&lc(&c.name)) {
                None => c.generated.is_none(),
                Some(fc) => c.not_null && !fc.not_null,
            };
            if !fillable {
                return Err(bad(format!(
                    "{}.{} is neither a new (not generated) column nor one that becomes NOT NULL; \
                     only those are filled",
                    p.to.name, c.name
                )));
            }
            let is_new = |n: &str| !p.source.contains_key(&lc(n));
            fill::check(f, p.from, p.to, &to.indexes, &is_new)?;
            if fills
                .entry(lc(&p.to.name))
                .or_default()
                .insert(lc(&c.name), f)
                .is_some()
            {
                return Err(bad(format!("{}.{} is filled twice", p.to.name, c.name)));
            }
        }
        Ok(Fills(fills))
    }

    /// The fill of column `c` of new table `t`.
    fn of(&self, t: &TableDef, c: &ColumnDef) -> Option<&'a Fill> {
        self.0
            .get(&lc(&t.name))
            .and_then(|m| m.get(&lc(&c.name)))
            .copied()
    }

    /// The fills of new table `t`, by column (lower case).
    fn table(&self, t: &TableDef) -> BTreeMap<String, &'a Fill> {
        self.0.get(&lc(&t.name)).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::snapshot::from_sql;

    fn plan(a: &str, b: &str, opts: &DiffOptions) -> Result<Plan, Error> {
        diff(&from_sql(a).unwrap(), &from_sql(b).unwrap(), opts)
    }

    fn kinds(p: &Plan) -> Vec<StepKind> {
        p.steps.iter().map(|s| s.kind).collect()
    }

    #[test]
    fn rename_hints_parse() {
        assert_eq!(
            "a=b".parse::<Rename>().unwrap(),
            Rename::Table {
                from: "a".into(),
                to: "b".into()
            }
        );
        assert_eq!(
            "t.a=b".parse::<Rename>().unwrap(),
            Rename::Column {
                table: "t".into(),
                from: "a".into(),
                to: "b".into()
            }
        );
        assert!("nothing".parse::<Rename>().is_err());
        assert!(".a=b".parse::<Rename>().is_err());
    }

    #[test]
    fn affinity_narrowing() {
        assert!(!narrows("INTEGER", "BIGINT", false));
        assert!(!narrows("INTEGER", "TEXT", false));
        assert!(!narrows("VARCHAR(10)", "TEXT", false));
        assert!(narrows("TEXT", "INTEGER", false));
        assert!(narrows("REAL", "INTEGER", false));
        assert!(!narrows("TEXT", "", false));
        assert!(narrows("INTEGER", "TEXT", true));
    }

    #[test]
    fn alter_where_sqlite_allows_it() {
        let p = plan(
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT)",
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, b INT NOT NULL DEFAULT 0)",
            &DiffOptions::default(),
        )
        .unwrap();
        assert_eq!(kinds(&p), vec![StepKind::AddColumn]);
        assert!(!p.foreign_keys_off);
    }

    #[test]
    fn renames_are_not_guessed() {
        let err = plan(
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT)",
            "CREATE TABLE t(id TEXT PRIMARY KEY, b TEXT)",
            &DiffOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Destructive { .. }), "{err}");
        let p = plan(
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT)",
            "CREATE TABLE t(id TEXT PRIMARY KEY, b TEXT)",
            &DiffOptions {
                renames: vec!["t.a=b".parse().unwrap()],
                ..DiffOptions::default()
            },
        )
        .unwrap();
        assert_eq!(kinds(&p), vec![StepKind::RenameColumn]);
    }

    #[test]
    fn a_rename_hint_that_does_not_fit_is_refused() {
        let err = plan(
            "CREATE TABLE t(id TEXT PRIMARY KEY)",
            "CREATE TABLE u(id TEXT PRIMARY KEY)",
            &DiffOptions {
                renames: vec!["x=u".parse().unwrap()],
                ..DiffOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::BadRename { .. }), "{err}");
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let s = "CREATE TABLE t(id TEXT PRIMARY KEY); CREATE VIEW v AS SELECT id FROM t;";
        assert!(plan(s, s, &DiffOptions::default()).unwrap().is_empty());
    }
}
