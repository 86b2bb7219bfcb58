//! What every bundle says of the schema its changes were captured under
//! (`[extensions.schema]`), and the site's own schema state.

use crate::error::Result;
use crate::evolve::history::{self};
use crate::store;
use crate::store::meta_keys;
use rusqlite::Connection;
use std::collections::BTreeMap;

/// Name of the manifest extension.
pub const EXTENSION: &str = "schema";

/// A site's schema: version and snapshot checksum (SPEC 5.2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaState {
    /// Schema version (0 before any migration).
    pub version: i64,
    /// Snapshot checksum.
    pub checksum: String,
}

/// The site's current schema state, as recorded in `berth_meta`.
pub fn state(conn: &Connection) -> Result<SchemaState> {
    let version = match store::meta(conn, meta_keys::SCHEMA_VERSION)? {
        Some(v) => v.parse().unwrap_or(0),
        None => history::version(conn)?,
    };
    Ok(SchemaState {
        version,
        checksum: store::meta(conn, meta_keys::SCHEMA_CHECKSUM)?.unwrap_or_default(),
    })
}

/// The `[extensions.schema]` table: the version the bundle's first change was captured
/// under, and (central) central's current version.
pub fn extension(version: i64, latest: Option<i64>) -> toml::Value {
    let mut t = toml::Table::new();
    t.insert("version".into(), toml::Value::Integer(version));
    if let Some(l) = latest {
        t.insert("latest".into(), toml::Value::Integer(l));
    }
    toml::Value::Table(t)
}

/// Reads `[extensions.schema]`: `(version, latest)`. `None` when absent or malformed.
pub fn read_extension(m: &berth_bundle::Manifest) -> Option<(i64, Option<i64>)> {
    read_extensions(&m.extensions)
}

pub(super) fn read_extensions(ext: &BTreeMap<String, toml::Value>) -> Option<(i64, Option<i64>)> {
    let t = ext.get(EXTENSION)?;
    let version = t.get("version")?.as_integer()?;
    let latest = t.get("latest").and_then(toml::Value::as_integer);
    (version >= 0).then_some((version, latest))
}
