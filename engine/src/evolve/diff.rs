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

/// Plans the migration from `from` to `to`.
pub fn diff(from: &Snapshot, to: &Snapshot, opts: &DiffOptions) -> Result<Plan, Error> {
    // --- Renames, checked against both schemas.
    let mut table_renames: BTreeMap<String, String> = BTreeMap::new(); // from lc -> to name
    let mut col_hints: Vec<(&Rename, String, String, String)> = Vec::new();
    for r in &opts.renames {
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
    for r in &opts.renames {
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
            col_hints.push((r, ft.name.clone(), old.clone(), new.clone()));
        }
    }

    // --- Pair the tables.
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

    // --- Fills, checked against both schemas: table (new name, lower) -> column (lower) -> fill.
    let mut fills: BTreeMap<String, BTreeMap<String, &Fill>> = BTreeMap::new();
    for f in &opts.fills {
        let bad = |reason: String| Error::BadFill {
            fill: f.to_string(),
            reason,
        };
        let Some(p) = pairs.iter().find(|p| {
            p.to.name.eq_ignore_ascii_case(&f.table) || p.from.name.eq_ignore_ascii_case(&f.table)
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
    let fill_of = |t: &TableDef, c: &ColumnDef| -> Option<&Fill> {
        fills
            .get(&lc(&t.name))
            .and_then(|m| m.get(&lc(&c.name)))
            .copied()
    };

    // --- Decide each pair and collect destructive steps.
    let mut destructive: Vec<String> = Vec::new();
    for t in &dropped_tables {
        let hint = match created.first() {
            Some(n) => format!(
                " (if it became {}, say so: --rename {}={})",
                n.name, t.name, n.name
            ),
            None => String::new(),
        };
        destructive.push(format!("drop table {}{hint}", t.name));
    }
    let has_rows = |t: &TableDef| !opts.empty_tables.contains(&lc(&t.name));
    struct Decision {
        rebuild: bool,
        why: Vec<String>,
    }
    let mut decisions: Vec<Decision> = Vec::new();
    let mut unfillable: Vec<String> = Vec::new();
    for p in &pairs {
        let mut why: Vec<String> = Vec::new();
        let (ft, tt) = (p.from, p.to);
        for c in &p.dropped {
            let hint = match p.added.first() {
                Some(a) => format!(
                    " (if it became {}, say so: --rename {}.{}={})",
                    a.name, ft.name, c.name, a.name
                ),
                None => String::new(),
            };
            destructive.push(format!("drop column {}.{}{hint}", ft.name, c.name));
        }
        for c in &tt.columns {
            let Some(fc) = p.source.get(&lc(&c.name)) else {
                if c.not_null
                    && c.generated.is_none()
                    && c.default.as_deref().is_none_or(|d| d == "NULL")
                    && has_rows(ft)
                    && fill_of(tt, c).is_none()
                {
                    let zero = zero_value(&c.decl_type);
                    let is_new = |n: &str| !p.source.contains_key(&lc(n));
                    if let Some(why) = fill::zero_refusal(tt, &to.indexes, &c.name, zero, &is_new)?
                    {
                        unfillable.push(format!("new column {}.{} {why}", tt.name, c.name));
                    }
                    destructive.push(format!(
                        "new column {}.{} is NOT NULL without a default on a table that may hold rows (existing rows get {zero}, or what --fill {}.{}=SQL-EXPR says)",
                        tt.name, c.name, tt.name, c.name
                    ));
                }
                continue;
            };
            let mut changed = Vec::new();
            if fc.decl_type != c.decl_type {
                changed.push(format!("type {} -> {}", fc.decl_type, c.decl_type));
                if c.generated.is_none() && narrows(&fc.decl_type, &c.decl_type, tt.strict) {
                    destructive.push(format!(
                        "narrow {}.{} from {} to {}",
                        tt.name,
                        c.name,
                        if fc.decl_type.is_empty() {
                            "no type"
                        } else {
                            &fc.decl_type
                        },
                        if c.decl_type.is_empty() {
                            "no type"
                        } else {
                            &c.decl_type
                        },
                    ));
                }
            }
            if fc.not_null != c.not_null {
                changed.push(
                    if c.not_null {
                        "NOT NULL added"
                    } else {
                        "NOT NULL dropped"
                    }
                    .into(),
                );
                // A key column (WITHOUT ROWID makes keys NOT NULL) is never filled in: a NULL
                // key fails the copy and the whole migration rolls back.
                let in_key = tt
                    .primary_key
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&c.name));
                if c.not_null
                    && c.default.is_none()
                    && has_rows(ft)
                    && c.generated.is_none()
                    && !in_key
                    && fill_of(tt, c).is_none()
                {
                    destructive.push(format!(
                        "{}.{} becomes NOT NULL without a default (NULLs become {})",
                        tt.name,
                        c.name,
                        zero_value(&c.decl_type)
                    ));
                }
            }
            if fc.default != c.default {
                changed.push("default".into());
            }
            if fc.collation != c.collation {
                changed.push(format!(
                    "collation {} -> {}",
                    fc.collation.as_deref().unwrap_or("BINARY"),
                    c.collation.as_deref().unwrap_or("BINARY")
                ));
            }
            let from_gen = fc
                .generated
                .as_ref()
                .map(|g| Some((g.stored, rename_idents(&g.expr, &p.renamed))));
            let to_gen = c
                .generated
                .as_ref()
                .map(|g| Some((g.stored, g.expr.clone())));
            if from_gen != to_gen {
                changed.push("generated expression".into());
                if fc.generated.is_none() && c.generated.is_some() {
                    destructive.push(format!(
                        "{}.{} becomes a generated column (its stored values are replaced)",
                        tt.name, c.name
                    ));
                }
            }
            if !changed.is_empty() {
                why.push(format!("column {}: {}", c.name, changed.join(", ")));
            }
        }
        if ft.without_rowid != tt.without_rowid {
            why.push("WITHOUT ROWID changed".into());
        }
        if ft.strict != tt.strict {
            why.push("STRICT changed".into());
        }
        if ft.autoincrement != tt.autoincrement {
            why.push("AUTOINCREMENT changed".into());
        }
        if lower_all(&map_names(&ft.primary_key, &p.renamed)) != lower_all(&tt.primary_key) {
            why.push("primary key changed".into());
        }
        let mut ffk: Vec<_> = ft
            .foreign_keys
            .iter()
            .map(|fk| {
                let parent_to = rename_of(&fk.parent);
                let parent_renames = col_renames
                    .get(&lc(&parent_to))
                    .cloned()
                    .unwrap_or_default();
                fk_key(&ForeignKey {
                    columns: map_names(&fk.columns, &p.renamed),
                    parent: parent_to,
                    parent_columns: map_names(&fk.parent_columns, &parent_renames),
                    ..fk.clone()
                })
            })
            .collect();
        let mut tfk: Vec<_> = tt.foreign_keys.iter().map(fk_key).collect();
        ffk.sort();
        tfk.sort();
        if ffk != tfk {
            why.push("foreign keys changed".into());
        }
        let mut fu: Vec<_> = ft
            .uniques
            .iter()
            .map(|u| {
                unique_key(
                    &u.iter()
                        .map(|c| IndexColumn {
                            name: c.name.as_ref().map(|n| {
                                p.renamed.get(&lc(n)).cloned().unwrap_or_else(|| n.clone())
                            }),
                            ..c.clone()
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let mut tu: Vec<_> = tt.uniques.iter().map(|u| unique_key(u)).collect();
        fu.sort();
        tu.sort();
        if fu != tu {
            why.push("UNIQUE constraints changed".into());
        }
        let mut fc: Vec<String> = ft
            .checks
            .iter()
            .map(|c| rename_idents(c, &p.renamed))
            .collect();
        let mut tc: Vec<String> = tt
            .checks
            .iter()
            .map(|c| rename_idents(c, &BTreeMap::new()))
            .collect();
        fc.sort();
        tc.sort();
        if fc != tc {
            why.push("CHECK constraints changed".into());
        }
        // Column order: kept columns in the old order, added ones at the end.
        let kept_order: Vec<String> = tt
            .columns
            .iter()
            .filter_map(|c| p.source.get(&lc(&c.name)).map(|f| lc(&f.name)))
            .collect();
        let old_order: Vec<String> = ft
            .columns
            .iter()
            .map(|c| lc(&c.name))
            .filter(|n| kept_order.contains(n))
            .collect();
        let first_added = tt
            .columns
            .iter()
            .position(|c| !p.source.contains_key(&lc(&c.name)));
        let added_at_end = first_added.is_none_or(|i| {
            tt.columns[i..]
                .iter()
                .all(|c| !p.source.contains_key(&lc(&c.name)))
        });
        if kept_order != old_order || !added_at_end {
            why.push("column order changed".into());
        }
        for c in &p.added {
            let d = c.default.as_deref().unwrap_or("NULL");
            let reason = if fill_of(tt, c).is_some() {
                Some("is filled per row")
            } else if tt
                .primary_key
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&c.name))
            {
                Some("is in the primary key")
            } else if c.generated.as_ref().is_some_and(|g| g.stored) {
                Some("is a STORED generated column")
            } else if c.not_null && d == "NULL" && c.generated.is_none() {
                Some("is NOT NULL without a default")
            } else if d.starts_with('(')
                || ["CURRENT_TIME", "CURRENT_DATE", "CURRENT_TIMESTAMP"].contains(&d)
            {
                Some("has a default ADD COLUMN does not accept")
            } else {
                None
            };
            if let Some(r) = reason {
                why.push(format!("new column {} {r}", c.name));
            }
        }
        for c in &p.dropped {
            let mention = |texts: &[String]| {
                texts
                    .iter()
                    .any(|t| sqltext::tokenize(t).is_ok_and(|tk| sqltext::mentions(&tk, &c.name)))
            };
            let gens: Vec<String> = ft
                .columns
                .iter()
                .filter_map(|x| x.generated.as_ref().map(|g| g.expr.clone()))
                .collect();
            let in_key = ft
                .primary_key
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&c.name));
            let in_unique = ft.uniques.iter().flatten().any(|u| {
                u.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&c.name))
            });
            let in_fk = ft
                .foreign_keys
                .iter()
                .any(|f| f.columns.iter().any(|x| x.eq_ignore_ascii_case(&c.name)));
            if in_key || in_unique || in_fk || mention(&ft.checks) || mention(&gens) {
                why.push(format!(
                    "dropped column {} is in a key, constraint or generated column",
                    c.name
                ));
            }
        }
        decisions.push(Decision {
            rebuild: !why.is_empty(),
            why,
        });
    }
    if !unfillable.is_empty() {
        return Err(Error::Unfillable {
            columns: unfillable,
        });
    }
    if !destructive.is_empty() && !opts.allow_destructive {
        return Err(Error::Destructive { steps: destructive });
    }

    // --- Emit.
    let mut plan = Plan {
        checksum_before: from.checksum()?,
        checksum_after: to.checksum()?,
        ..Plan::default()
    };
    let rebuilt: BTreeSet<String> = pairs
        .iter()
        .zip(&decisions)
        .filter(|(_, d)| d.rebuild)
        .map(|(p, _)| lc(&p.from.name))
        .collect();
    let structural = !dropped_tables.is_empty()
        || !rebuilt.is_empty()
        || !table_renames.is_empty()
        || pairs
            .iter()
            .any(|p| !p.renamed.is_empty() || !p.dropped.is_empty());
    plan.foreign_keys_off = !dropped_tables.is_empty() || !rebuilt.is_empty();
    let step = |kind, object: &str, detail: String, destructive, sql: Vec<String>| Step {
        kind,
        object: object.to_string(),
        detail,
        destructive,
        sql,
    };

    // Views and triggers to replace.
    let view_same = |v: &super::snapshot::ViewDef| {
        !structural
            && to
                .views
                .iter()
                .any(|w| w.name == v.name && w.canonical == v.canonical)
    };
    let trig_same = |t: &super::snapshot::TriggerDef| {
        !structural
            && !rebuilt.contains(&lc(&t.table))
            && to
                .triggers
                .iter()
                .any(|w| w.name == t.name && w.canonical == t.canonical)
    };
    for v in &from.views {
        if !view_same(v) {
            plan.steps.push(step(
                StepKind::DropView,
                &v.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP VIEW {}", ident(&v.name))],
            ));
        }
    }
    for t in &from.triggers {
        if !trig_same(t) {
            plan.steps.push(step(
                StepKind::DropTrigger,
                &t.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP TRIGGER {}", ident(&t.name))],
            ));
        }
    }
    let dropped_lc: BTreeSet<String> = dropped_tables.iter().map(|t| lc(&t.name)).collect();
    let index_kept = |i: &super::snapshot::IndexDef| {
        !rebuilt.contains(&lc(&i.table))
            && !dropped_lc.contains(&lc(&i.table))
            && to.indexes.iter().any(|j| {
                j == i || (j.name == i.name && j.canonical == i.canonical && j.table == i.table)
            })
    };
    for i in &from.indexes {
        if !index_kept(i) && !rebuilt.contains(&lc(&i.table)) && !dropped_lc.contains(&lc(&i.table))
        {
            plan.steps.push(step(
                StepKind::DropIndex,
                &i.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP INDEX {}", ident(&i.name))],
            ));
        }
    }
    for t in &dropped_tables {
        plan.steps.push(step(
            StepKind::DropTable,
            &t.name,
            "not in the new schema".into(),
            true,
            vec![format!("DROP TABLE {}", ident(&t.name))],
        ));
    }
    for (old, new) in &table_renames {
        let name = from.table(old).map_or(old.clone(), |t| t.name.clone());
        plan.steps.push(step(
            StepKind::RenameTable,
            &name,
            format!("renamed to {new}"),
            false,
            vec![format!(
                "ALTER TABLE {} RENAME TO {}",
                ident(&name),
                ident(new)
            )],
        ));
    }
    for (p, d) in pairs.iter().zip(&decisions) {
        let name = &p.to.name;
        if d.rebuild {
            let table_fills = fills.get(&lc(&p.to.name)).cloned().unwrap_or_default();
            plan.steps
                .push(rebuild(p, &d.why, has_rows(p.from), &table_fills)?);
            continue;
        }
        for (fcol, tcol) in p
            .renamed
            .iter()
            .filter_map(|(o, n)| col(p.from, o).map(|c| (c.name.clone(), n.clone())))
        {
            plan.steps.push(step(
                StepKind::RenameColumn,
                &format!("{name}.{fcol}"),
                format!("renamed to {tcol}"),
                false,
                vec![format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {}",
                    ident(name),
                    ident(&fcol),
                    ident(&tcol)
                )],
            ));
        }
        for c in &p.dropped {
            plan.steps.push(step(
                StepKind::DropColumn,
                &format!("{name}.{}", c.name),
                "not in the new schema".into(),
                true,
                vec![format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    ident(name),
                    ident(&c.name)
                )],
            ));
        }
        for c in &p.added {
            let def = column_text(p.to, &c.name)?;
            plan.steps.push(step(
                StepKind::AddColumn,
                &format!("{name}.{}", c.name),
                "new column".into(),
                false,
                vec![format!("ALTER TABLE {} ADD COLUMN {def}", ident(name))],
            ));
        }
    }
    for t in &created {
        if t.sql.is_empty() {
            return Err(Error::Unsupported {
                table: t.name.clone(),
                reason: "the new schema does not carry its CREATE TABLE statement".into(),
            });
        }
        plan.steps.push(step(
            StepKind::CreateTable,
            &t.name,
            "new table".into(),
            false,
            vec![t.sql.clone()],
        ));
    }
    let rebuilt_to: BTreeSet<String> = pairs
        .iter()
        .filter(|p| rebuilt.contains(&lc(&p.from.name)))
        .map(|p| lc(&p.to.name))
        .collect();
    for i in &to.indexes {
        let existed = from
            .indexes
            .iter()
            .any(|j| index_kept(j) && j.name == i.name);
        if !existed || rebuilt_to.contains(&lc(&i.table)) {
            plan.steps.push(step(
                StepKind::CreateIndex,
                &i.name,
                format!("on {}", i.table),
                false,
                vec![i.sql.clone()],
            ));
        }
    }
    let mut views: Vec<&super::snapshot::ViewDef> = to
        .views
        .iter()
        .filter(|v| !from.views.iter().any(|w| view_same(w) && w.name == v.name))
        .collect();
    // A view is created after the views it names.
    let mut ordered = Vec::new();
    while !views.is_empty() {
        let pos = views
            .iter()
            .position(|v| {
                let tk = sqltext::tokenize(&v.sql).unwrap_or_default();
                !views
                    .iter()
                    .any(|w| w.name != v.name && sqltext::mentions(&tk, &w.name))
            })
            .unwrap_or(0);
        ordered.push(views.remove(pos));
    }
    for v in ordered {
        plan.steps.push(step(
            StepKind::CreateView,
            &v.name,
            "view".into(),
            false,
            vec![v.sql.clone()],
        ));
    }
    for t in &to.triggers {
        if !from
            .triggers
            .iter()
            .any(|w| trig_same(w) && w.name == t.name)
        {
            plan.steps.push(step(
                StepKind::CreateTrigger,
                &t.name,
                format!("on {}", t.table),
                false,
                vec![t.sql.clone()],
            ));
        }
    }
    let _ = col_hints;
    Ok(plan)
}

/// The definition text of one column in the table's `CREATE TABLE` statement.
fn column_text(t: &TableDef, name: &str) -> Result<String, Error> {
    let ct = sqltext::parse_create_table(&t.sql).ok_or_else(|| Error::Unsupported {
        table: t.name.clone(),
        reason: "its CREATE TABLE statement cannot be read".into(),
    })?;
    sqltext::column_text(&ct, name)
        .map(str::to_string)
        .ok_or_else(|| Error::Unsupported {
            table: t.name.clone(),
            reason: format!("column {name} not found in its CREATE TABLE statement"),
        })
}

/// The name a table is rebuilt under before it takes its own.
pub fn scratch_name(table: &str) -> String {
    format!("berth_migrate_{table}")
}

/// SQLite's 12-step rebuild of one table (steps 4-7 here; 1-3 and 8-12 are the plan's
/// framing, index/view/trigger recreation and foreign-key check).
fn rebuild(
    p: &Pairing,
    why: &[String],
    has_rows: bool,
    fills: &BTreeMap<String, &Fill>,
) -> Result<Step, Error> {
    let (ft, tt) = (p.from, p.to);
    let name = &tt.name;
    let scratch = scratch_name(name);
    let ct = sqltext::parse_create_table(&tt.sql).ok_or_else(|| Error::Unsupported {
        table: name.clone(),
        reason: "its new CREATE TABLE statement cannot be read".into(),
    })?;
    let mut sql = vec![sqltext::rename_table_text(&ct, &scratch)];
    let mut cols = Vec::new();
    let mut exprs = Vec::new();
    let rowid_alias = |t: &TableDef| {
        !t.without_rowid
            && t.primary_key.len() == 1
            && col(t, &t.primary_key[0]).is_some_and(|c| c.decl_type == "INTEGER")
    };
    if !ft.without_rowid && !tt.without_rowid && !rowid_alias(tt) {
        cols.push("rowid".to_string());
        exprs.push("rowid".to_string());
    }
    for c in &tt.columns {
        if c.generated.is_some() {
            continue;
        }
        match p.source.get(&lc(&c.name)) {
            Some(fc) => {
                let src = ident(&fc.name);
                let in_key = tt
                    .primary_key
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&c.name));
                let e = if let Some(f) = fills.get(&lc(&c.name)) {
                    format!("COALESCE({src}, ({}))", f.expr)
                } else if c.not_null && !fc.not_null && !in_key {
                    let fill = c
                        .default
                        .clone()
                        .unwrap_or_else(|| zero_value(&c.decl_type).to_string());
                    format!("COALESCE({src}, {fill})")
                } else {
                    src
                };
                cols.push(ident(&c.name));
                exprs.push(e);
            }
            None => {
                if let Some(f) = fills.get(&lc(&c.name)) {
                    cols.push(ident(&c.name));
                    exprs.push(format!("({})", f.expr));
                } else if c.not_null && c.default.as_deref().is_none_or(|d| d == "NULL") && has_rows
                {
                    cols.push(ident(&c.name));
                    exprs.push(zero_value(&c.decl_type).to_string());
                }
            }
        }
    }
    if !cols.is_empty() {
        sql.push(format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            ident(&scratch),
            cols.join(", "),
            exprs.join(", "),
            ident(name)
        ));
    }
    if ft.autoincrement && tt.autoincrement {
        // The counter may be above the highest key (rows deleted at the end): keep it.
        sql.push(format!(
            "DELETE FROM sqlite_sequence WHERE name = {}",
            literal(&scratch)
        ));
        sql.push(format!(
            "INSERT INTO sqlite_sequence(name, seq) SELECT {}, seq FROM sqlite_sequence WHERE name = {}",
            literal(&scratch),
            literal(name)
        ));
    }
    sql.push(format!("DROP TABLE {}", ident(name)));
    sql.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        ident(&scratch),
        ident(name)
    ));
    Ok(Step {
        kind: StepKind::Rebuild,
        object: name.clone(),
        detail: format!("rebuilt: {}", why.join("; ")),
        destructive: !p.dropped.is_empty(),
        sql,
    })
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
