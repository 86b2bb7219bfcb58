//! Fills: what the existing rows of a table get in a new column (or in the NULLs of a column
//! that becomes NOT NULL) when a migration copies them (SPEC 5.3).
//!
//! By default that is the zero of the column's affinity (`''`, `0`, `X''`), which is only
//! sound when the zero satisfies the column's constraints: a key or UNIQUE column gets the
//! same zero in every row, and a CHECK may refuse it. [`zero_refusal`] says when the zero
//! cannot do; a [`Fill`] (`--fill TABLE.COLUMN=SQL-EXPR`) names an expression evaluated per
//! row over the old table's columns instead, checked by [`check`] as far as that is possible
//! before any row is seen.
//!
//! The checks run SQLite on a scratch in-memory database holding only a plain table with the
//! column; no database of the caller is touched.

use super::Error;
use super::snapshot::{IndexDef, TableDef};
use super::sqltext;
use crate::store::ident;
use rusqlite::Connection;
use serde::Serialize;
use std::str::FromStr;

/// `TABLE.COLUMN=SQL-EXPR`: the value the existing rows get in that column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fill {
    /// The table (its new or its old name).
    pub table: String,
    /// The column, by its new name.
    pub column: String,
    /// An SQL expression over the old table's columns.
    pub expr: String,
}

impl FromStr for Fill {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadFill {
            fill: s.to_string(),
            reason: reason.to_string(),
        };
        let (target, expr) = s
            .split_once('=')
            .ok_or_else(|| bad("expected TABLE.COLUMN=SQL-EXPR"))?;
        let (table, column) = target
            .split_once('.')
            .ok_or_else(|| bad("expected TABLE.COLUMN=SQL-EXPR"))?;
        let (table, column, expr) = (table.trim(), column.trim(), expr.trim());
        if table.is_empty() || column.is_empty() || expr.is_empty() {
            return Err(bad("a part is empty"));
        }
        // One expression: the text goes inside the copy's SELECT, so it must not end it.
        let tokens = sqltext::tokenize(expr).map_err(|e| bad(&e.to_string()))?;
        let mut depth = 0i64;
        for t in &tokens {
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth -= 1;
                if depth < 0 {
                    return Err(bad("unbalanced parentheses"));
                }
            } else if t.is_punct(";") {
                return Err(bad("one expression, without ';'"));
            }
        }
        if depth != 0 {
            return Err(bad("unbalanced parentheses"));
        }
        Ok(Fill {
            table: table.to_string(),
            column: column.to_string(),
            expr: expr.to_string(),
        })
    }
}

impl std::fmt::Display for Fill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}={}", self.table, self.column, self.expr)
    }
}

/// True when the column is in the primary key, a UNIQUE constraint or a UNIQUE index of the
/// new schema whose columns are all new (`is_new`): one value given to every row collides
/// from the second row on. (With an old column beside it, the old values may keep the rows
/// apart.)
fn unique(
    table: &TableDef,
    indexes: &[IndexDef],
    column: &str,
    is_new: &dyn Fn(&str) -> bool,
) -> bool {
    let mut sets: Vec<Vec<Option<&str>>> =
        vec![table.primary_key.iter().map(|k| Some(k.as_str())).collect()];
    sets.extend(
        table
            .uniques
            .iter()
            .map(|u| u.iter().map(|c| c.name.as_deref()).collect()),
    );
    sets.extend(
        indexes
            .iter()
            .filter(|i| {
                i.unique && i.partial.is_none() && i.table.eq_ignore_ascii_case(&table.name)
            })
            .map(|i| i.columns.iter().map(|c| c.name.as_deref()).collect()),
    );
    sets.iter().any(|set| {
        set.iter()
            .any(|c| c.is_some_and(|c| c.eq_ignore_ascii_case(column)))
            && set.iter().all(|c| c.is_some_and(is_new))
    })
}

/// A scratch database with a plain table of the given columns (declared types kept, so
/// values get the affinity the real column applies), holding no constraint.
fn scratch(name: &str, columns: &[(&str, &str)]) -> Result<Connection, Error> {
    let conn = Connection::open_in_memory()?;
    let cols: Vec<String> = columns
        .iter()
        .map(|(c, ty)| format!("{} {ty}", ident(c)))
        .collect();
    conn.execute_batch(&format!(
        "CREATE TABLE {}({})",
        ident(name),
        cols.join(", ")
    ))?;
    Ok(conn)
}

/// The CHECK expressions of the table that name the column and no other column of it
/// (those can be decided from the column's value alone).
fn own_checks<'a>(table: &'a TableDef, column: &str) -> Vec<&'a str> {
    table
        .checks
        .iter()
        .filter(|c| {
            let Ok(tk) = sqltext::tokenize(c) else {
                return false;
            };
            sqltext::mentions(&tk, column)
                && !table.columns.iter().any(|o| {
                    !o.name.eq_ignore_ascii_case(column) && sqltext::mentions(&tk, &o.name)
                })
        })
        .map(String::as_str)
        .collect()
}

/// The first CHECK of the column that refuses the value of `expr` (a constant expression),
/// or `None` when all accept it (or cannot be evaluated from the column alone).
fn failing_check(table: &TableDef, column: &str, expr: &str) -> Result<Option<String>, Error> {
    let decl = table
        .columns
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(column))
        .map_or("", |c| c.decl_type.as_str());
    let conn = scratch("berth_fill", &[(column, decl)])?;
    if conn
        .execute(&format!("INSERT INTO berth_fill VALUES (({expr}))"), [])
        .is_err()
    {
        // Fails only per row (an error raised by the expression): the copy will say so.
        return Ok(None);
    }
    for check in own_checks(table, column) {
        // SQLite refuses a row when the CHECK, cast to NUMERIC, is zero; NULL passes.
        let refused: Option<bool> = conn
            .query_row(
                &format!("SELECT CAST(({check}) AS NUMERIC) = 0 FROM berth_fill"),
                [],
                |r| r.get(0),
            )
            .unwrap_or(None);
        if refused == Some(true) {
            return Ok(Some(check.to_string()));
        }
    }
    Ok(None)
}

/// Why the zero of the column's affinity cannot fill the existing rows of a new NOT NULL
/// column, or `None` when it can.
pub fn zero_refusal(
    table: &TableDef,
    indexes: &[IndexDef],
    column: &str,
    zero: &str,
    is_new: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, Error> {
    if unique(table, indexes, column, is_new) {
        return Ok(Some(format!(
            "is in the primary key or a UNIQUE constraint, so the zero {zero} given to every \
             row collides from the second row on"
        )));
    }
    Ok(failing_check(table, column, zero)?
        .map(|c| format!("its CHECK ({c}) refuses the zero {zero}")))
}

/// Checks a fill before any row is seen: the expression must read only the old table's
/// columns, give the same value at every site (a migration runs at each), and, when it
/// names no column (the same value for every row), not be NULL, not fill a key or UNIQUE
/// column, and satisfy the column's CHECKs.
pub fn check(
    fill: &Fill,
    old: &TableDef,
    new: &TableDef,
    indexes: &[IndexDef],
    is_new: &dyn Fn(&str) -> bool,
) -> Result<(), Error> {
    let bad = |reason: String| Error::BadFill {
        fill: fill.to_string(),
        reason,
    };
    let columns: Vec<(&str, &str)> = old
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.decl_type.as_str()))
        .collect();
    let conn = scratch(&old.name, &columns)?;
    let expr = &fill.expr;
    if let Err(e) = conn.prepare(&format!("SELECT ({expr}) FROM {}", ident(&old.name))) {
        let msg = e.to_string();
        // A subquery may read other tables, which the scratch database lacks.
        if !msg.contains("no such table") {
            return Err(bad(format!(
                "{msg} (the expression reads the columns of {} as they were)",
                old.name
            )));
        }
        return Ok(());
    }
    // SQLite refuses non-deterministic functions in an index expression; datetime('now')
    // and the like only when a row is indexed.
    let nulls = vec!["NULL"; columns.len().max(1)].join(", ");
    if !columns.is_empty() {
        conn.execute(
            &format!("INSERT INTO {} VALUES ({nulls})", ident(&old.name)),
            [],
        )?;
    }
    if let Err(e) = conn.execute_batch(&format!(
        "CREATE INDEX berth_fill_check ON {}(({expr}))",
        ident(&old.name)
    )) && e.to_string().contains("non-deterministic")
    {
        return Err(bad(
            "the expression is not deterministic: the migration runs at every site and each \
             would fill other values, which no change carries; use an expression of the row"
                .into(),
        ));
    }
    // An expression that names no column is one value for every row: check it like the zero.
    let constant = Connection::open_in_memory()?
        .prepare(&format!("SELECT ({expr})"))
        .is_ok();
    if constant {
        let value_is_null: bool = Connection::open_in_memory()?
            .query_row(&format!("SELECT ({expr}) IS NULL"), [], |r| r.get(0))
            .unwrap_or(false);
        if value_is_null
            && new
                .columns
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&fill.column) && c.not_null)
        {
            return Err(bad(format!("it is NULL and {} is NOT NULL", fill.column)));
        }
        if let Some(c) = failing_check(new, &fill.column, expr)? {
            return Err(bad(format!("its value fails the CHECK ({c})")));
        }
        if unique(new, indexes, &fill.column, is_new) {
            return Err(bad(format!(
                "{} is in the primary key or a UNIQUE constraint and the expression gives every \
                 row the same value; use an expression of the row (e.g. one of its key columns)",
                fill.column
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evolve::snapshot::from_sql;

    #[test]
    fn fills_parse() {
        let f: Fill = "t.code = 'x' || id".parse().unwrap();
        assert_eq!((f.table.as_str(), f.column.as_str()), ("t", "code"));
        assert_eq!(f.expr, "'x' || id");
        assert!("t.code".parse::<Fill>().is_err());
        assert!("code=1".parse::<Fill>().is_err());
        assert!("t.code=1); DROP TABLE t; --".parse::<Fill>().is_err());
        assert!("t.code=(1".parse::<Fill>().is_err());
    }

    #[test]
    fn the_zero_is_refused_for_keys_uniques_and_failing_checks() {
        let s = from_sql(
            "CREATE TABLE t(id TEXT PRIMARY KEY, u TEXT NOT NULL UNIQUE,
               c TEXT NOT NULL CHECK (length(c) > 0), n INT NOT NULL CHECK (n >= 0),
               i TEXT NOT NULL, j INT NOT NULL CHECK (j > id));
             CREATE UNIQUE INDEX t_i ON t(i);",
        )
        .unwrap();
        let t = s.table("t").unwrap();
        let r = |c: &str, z: &str| zero_refusal(t, &s.indexes, c, z, &|c| c != "id").unwrap();
        assert!(r("u", "''").unwrap().contains("UNIQUE"));
        assert!(r("i", "''").unwrap().contains("UNIQUE"));
        assert!(r("c", "''").unwrap().contains("length(c) > 0"));
        assert_eq!(r("n", "0"), None);
        // With an old column in the key, the old values keep the rows apart.
        let k = from_sql("CREATE TABLE k(id TEXT, v TEXT NOT NULL, PRIMARY KEY (id, v))").unwrap();
        let kt = k.table("k").unwrap();
        assert_eq!(
            zero_refusal(kt, &[], "v", "''", &|c| c == "v").unwrap(),
            None
        );
        assert!(
            zero_refusal(kt, &[], "v", "''", &|_| true)
                .unwrap()
                .is_some()
        );
        // A CHECK that reads another column cannot be decided from the zero alone.
        assert_eq!(r("j", "0"), None);
    }

    #[test]
    fn fills_are_checked_where_possible() {
        let old = from_sql("CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT)").unwrap();
        let new = from_sql(
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, u TEXT NOT NULL UNIQUE,
               c TEXT NOT NULL CHECK (c <> 'no'))",
        )
        .unwrap();
        let (o, n) = (old.table("t").unwrap(), new.table("t").unwrap());
        let ck = |s: &str| {
            check(&s.parse().unwrap(), o, n, &new.indexes, &|c| {
                c == "u" || c == "c"
            })
        };
        assert!(ck("t.u='k' || id").is_ok());
        assert!(
            ck("t.u='same'")
                .unwrap_err()
                .to_string()
                .contains("same value")
        );
        assert!(ck("t.c='no'").unwrap_err().to_string().contains("CHECK"));
        assert!(ck("t.c='yes'").is_ok());
        assert!(ck("t.c=NULL").unwrap_err().to_string().contains("NULL"));
        assert!(
            ck("t.c=nosuch")
                .unwrap_err()
                .to_string()
                .contains("no such column")
        );
        assert!(
            ck("t.u=hex(randomblob(8))")
                .unwrap_err()
                .to_string()
                .contains("deterministic")
        );
        assert!(
            ck("t.c=datetime('now')")
                .unwrap_err()
                .to_string()
                .contains("deterministic")
        );
        assert!(ck("t.c=(SELECT name FROM other LIMIT 1)").is_ok());
    }
}
