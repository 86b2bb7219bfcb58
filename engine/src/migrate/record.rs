//! A migration as a change of central's stream: its wire form (`new` of an `M` change),
//! read back, and journaled.

use crate::change::Change;
use crate::error::{EngineError, Result};
use crate::evolve::history::{self, Migration};
use crate::value::Row;
use rusqlite::{Connection, params};
use serde_json::Value as Json;

/// The wire form of a migration: `new` of an `M` change.
pub fn to_row(m: &Migration) -> Row {
    let mut r = Row::new();
    r.insert("version".into(), Json::from(m.version));
    r.insert("name".into(), Json::from(m.name.clone()));
    r.insert("sql".into(), Json::from(m.sql.clone()));
    r.insert(
        "checksum_before".into(),
        Json::from(m.checksum_before.clone()),
    );
    r.insert(
        "checksum_after".into(),
        Json::from(m.checksum_after.clone()),
    );
    r.insert(
        "software_level".into(),
        Json::from(m.software_level.clone()),
    );
    r.insert(
        "foreign_keys_off".into(),
        Json::from(i64::from(m.foreign_keys_off)),
    );
    r.insert("origin".into(), Json::from(m.origin.clone()));
    r.insert("created".into(), Json::from(m.created));
    r.insert(
        "renames".into(),
        Json::from(serde_json::to_string(&m.renames).unwrap_or_else(|_| "[]".into())),
    );
    r.insert(
        "exec".into(),
        m.exec
            .as_ref()
            .and_then(|e| serde_json::to_string(e).ok())
            .map_or(Json::Null, Json::from),
    );
    r
}

/// Reads the migration of an `M` change; the reason when it is malformed.
pub fn from_change(ch: &Change) -> std::result::Result<Migration, String> {
    let r = ch.new.as_ref().ok_or("migration without its record")?;
    let text = |k: &str| {
        r.get(k)
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("migration record without {k}"))
    };
    let int = |k: &str| {
        r.get(k)
            .and_then(Json::as_i64)
            .ok_or_else(|| format!("migration record without {k}"))
    };
    let version = int("version")?;
    if version < 1 {
        return Err(format!("migration version {version} is not positive"));
    }
    let renames: Vec<String> =
        serde_json::from_str(&text("renames")?).map_err(|e| format!("migration renames: {e}"))?;
    for hint in &renames {
        hint.parse::<crate::evolve::diff::Rename>()
            .map_err(|e| e.to_string())?;
    }
    let exec = match r.get("exec") {
        None | Some(Json::Null) => None,
        Some(Json::String(t)) => {
            let step: history::ExecStep =
                serde_json::from_str(t).map_err(|e| format!("migration exec: {e}"))?;
            step.check().map_err(|e| e.to_string())?;
            Some(step)
        }
        Some(_) => return Err("migration exec: not a string".into()),
    };
    Ok(Migration {
        exec,
        version,
        name: text("name")?,
        sql: text("sql")?,
        checksum_before: text("checksum_before")?,
        checksum_after: text("checksum_after")?,
        software_level: text("software_level")?,
        foreign_keys_off: int("foreign_keys_off")? != 0,
        origin: text("origin")?,
        created: int("created")?,
        applied: None,
        renames,
    })
}

/// Journals migration `m` in central's log (for every node), in the caller's transaction.
pub fn journal(conn: &Connection, m: &Migration) -> Result<()> {
    let new = serde_json::to_string(&to_row(m)).map_err(|e| EngineError::Config {
        path: "berth_log".into(),
        reason: e.to_string(),
    })?;
    conn.execute(
        "INSERT INTO berth_log(tbl, pk, op, new) VALUES ('', '[]', 'M', ?1)",
        params![new],
    )?;
    Ok(())
}
