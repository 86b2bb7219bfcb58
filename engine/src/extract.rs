//! A node's initial extract (SPEC 2.13). At central, the rows the new node is to hold (its
//! `limited` rows by its docking objects, the `enterprise` tables whole), written as the
//! extract's `payload/rows.jsonl` while the router records what the node holds; at the node,
//! the extract applied in one transaction. Enrollment itself (the request, the
//! registration, a revoked name enrolled again) is [`crate::enroll`].

mod apply;

pub(crate) use apply::apply;

use crate::error::{EngineError, Result};
use crate::route::model::{DockingModel, Visibility};
use crate::route::router::{self, Evaluation, NodeState, Plan};
use crate::site::Site;
use crate::table::Catalog;
use crate::{schema, store};
use berth_bundle::PublicKey;
use rusqlite::Connection;
use std::fs::File;
use std::io::Write as _;

/// Entries of an extract.
pub const SCHEMA_ENTRY: &str = "payload/schema.sql";
/// Rows of an extract: one `{"t": table, "r": row}` per line.
pub const ROWS_ENTRY: &str = "payload/rows.jsonl";

pub(crate) fn ext_str<'a>(
    m: &'a berth_bundle::Manifest,
    table: &str,
    key: &str,
) -> Option<&'a str> {
    m.extensions.get(table)?.get(key)?.as_str()
}

/// The central key an extract introduces, if its id matches the signer's.
pub fn introduced_central_key(m: &berth_bundle::Manifest) -> Option<PublicKey> {
    let k = PublicKey::from_hex(ext_str(m, "extract", "central_key")?).ok()?;
    (k.key_id() == m.sender.key_id).then_some(k)
}

/// The `berth_meta` key of the sequence number of the extract in the stream between central
/// and `peer` (at central the node, at the node central), when it is not 1 (the node's name
/// was enrolled again after a revocation).
pub(crate) fn extract_seq_key(peer: &str) -> String {
    format!("extract_seq.{peer}")
}

/// The sequence number of the extract in the stream between central and `peer` (SPEC
/// 2.13): 1, or more when the node's name was enrolled again after a revocation.
pub(crate) fn extract_seq(conn: &Connection, peer: &str) -> Result<u64> {
    Ok(
        u64::try_from(store::meta_i64(conn, &extract_seq_key(peer))?)
            .unwrap_or(0)
            .max(1),
    )
}

/// Writes the rows of `who`'s extract into `out`, one JSON line each, and records at central
/// what it holds from now on; returns how many rows. `model` `None`: every table is whole.
pub(crate) fn write_rows(
    tx: &Connection,
    site: &Site,
    model: Option<&DockingModel>,
    who: &NodeState,
    out: &mut File,
) -> Result<u64> {
    let spool = site.folder("spool");
    let mut rows = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
        // One JSON line per row, `{"t": TABLE, "r": {COLUMN: VALUE, ...}}`, written straight
        // from the result row (the extract can be large). Rows come table by table: the text
        // before each value (`{"t":"opty","r":{"id":`, then `,"name":` ...) is made once per
        // table.
        let mut before: (String, Vec<Vec<u8>>) = (String::new(), Vec::new());
        let mut write_row =
            |table: &str, names: &[String], r: &rusqlite::Row<'_>, at: usize| -> Result<()> {
                let io = |e: std::io::Error| EngineError::io(&spool, e);
                if before.0 != table || before.1.len() != names.len().max(1) {
                    before = (table.to_string(), value_prefixes(table, names));
                }
                for (i, prefix) in before.1.iter().enumerate() {
                    w.write_all(prefix).map_err(io)?;
                    if i < names.len() {
                        crate::value::write_json(&mut w, r.get_ref(at + i)?).map_err(io)?;
                    }
                }
                w.write_all(b"}}\n").map_err(io)?;
                rows += 1;
                Ok(())
            };
        // Partial extract: what this node sees (enterprise tables whole, limited tables by
        // its docking objects, central tables not at all), and the rows it holds from now on.
        if let Some(model) = model {
            limited_rows(tx, &site.catalog()?, model, who, &mut write_row)?;
        }
        for t in schema::tables(tx)? {
            let visibility = model
                .as_ref()
                .and_then(|m| m.table(&t.name))
                .map_or(Visibility::Enterprise, |s| s.visibility);
            if visibility != Visibility::Enterprise {
                continue;
            }
            let cols = t
                .columns
                .iter()
                .map(|c| store::ident(c))
                .collect::<Vec<_>>()
                .join(", ");
            let mut st = tx.prepare(&format!("SELECT {cols} FROM {}", store::ident(&t.name)))?;
            let mut q = st.query([])?;
            while let Some(r) = q.next()? {
                write_row(&t.name, &t.columns, r, 0)?;
            }
        }
        w.flush().map_err(|e| EngineError::io(&spool, e))?;
    }
    Ok(rows)
}

/// Sets up a node being enrolled: routes the other nodes first (so the router's state is
/// current), then evaluates what the new node sees, records it, and calls `sink` with every
/// `limited` row its extract carries (see [`router::extract_rows`]). Returns how many.
fn limited_rows(
    conn: &Connection,
    catalog: &Catalog,
    model: &DockingModel,
    node: &router::NodeState,
    sink: impl FnMut(&str, &[String], &rusqlite::Row<'_>, usize) -> Result<()>,
) -> Result<u64> {
    let plan = Plan::new(conn, model)?;
    router::route_all(conn, catalog, Some(&plan), Evaluation::Set)?;
    router::extract_rows(conn, &plan, node, sink)
}

/// The text an extract line has before each value of a row of `table` with columns
/// `names`: `{"t":TABLE,"r":{"NAME":` for the first, `,"NAME":` for the others (just
/// `{"t":TABLE,"r":{`, with no value after it, when there are no columns).
fn value_prefixes(table: &str, names: &[String]) -> Vec<Vec<u8>> {
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let head = format!("{{\"t\":{},\"r\":{{", quoted(table));
    if names.is_empty() {
        return vec![head.into_bytes()];
    }
    names
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let lead = if i == 0 { head.as_str() } else { "," };
            format!("{lead}{}:", quoted(c)).into_bytes()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::value_prefixes;

    /// The prefixes with the values between them make the line the node parses, whatever
    /// the names hold.
    #[test]
    fn value_prefixes_make_one_json_object_per_row() {
        let names = vec!["id".to_string(), "say \"hi\"\\".to_string()];
        let mut line = Vec::new();
        for (p, v) in value_prefixes("t\"x", &names).iter().zip(["1", "null"]) {
            line.extend_from_slice(p);
            line.extend_from_slice(v.as_bytes());
        }
        line.extend_from_slice(b"}}");
        let parsed: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"t": "t\"x", "r": {"id": 1, "say \"hi\"\\": null}})
        );
        let mut empty = value_prefixes("t", &[]).concat();
        empty.extend_from_slice(b"}}");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&empty).unwrap(),
            serde_json::json!({"t": "t", "r": {}})
        );
    }
}
