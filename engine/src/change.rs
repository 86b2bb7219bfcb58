//! A row change as it travels in a bundle, and its export from the update log.
//!
//! Wire form (one JSON object per line of `payload/changes.jsonl`):
//! `{"pos":12,"t":"opty","k":["o1"],"op":"U","old":{"name":"Keith Palmer"},"new":{...},"c":3}`.
//! `old` holds, for an update, the old values of the changed columns only (what a collision
//! check compares); for a delete, the whole old row. `new` holds the whole new row of an
//! insert or update. `o` names the site where the change was made when it is not the sender.

use crate::error::Result;
use crate::merge::apply::{Catalog, TableInfo, read_row};
use crate::value::{Row, log_row, parse_key, raw, same};
use std::collections::HashMap;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The kind of a row change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// A new row (at a node: insert or replace).
    I,
    /// Changed columns of an existing row.
    U,
    /// A removed row.
    D,
    /// A marker, not a row change: from here on, the sender has merged the recipient's
    /// changes up to position `ack` (central writes one when it merges a node's bundle, so
    /// the node knows which of central's changes were decided knowing its own).
    A,
    /// An SQL statement central sent to chosen nodes (the appendix's SQLStatement records);
    /// `new` holds `{"sql": "..."}`. It runs at the node in order with the other changes.
    S,
    /// A schema migration central sends to every node ([`crate::migrate`]); `new` holds the
    /// migration record. It applies at the node in order with the other changes.
    M,
}

impl Op {
    /// The letter stored in `berth_log.op`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::I => "I",
            Op::U => "U",
            Op::D => "D",
            Op::A => "A",
            Op::S => "S",
            Op::M => "M",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        match s {
            "I" => Some(Op::I),
            "U" => Some(Op::U),
            "D" => Some(Op::D),
            "A" => Some(Op::A),
            "S" => Some(Op::S),
            "M" => Some(Op::M),
            _ => None,
        }
    }
}

/// One row change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Position in the sender's update log.
    pub pos: i64,
    /// Table name.
    pub t: String,
    /// Primary key values, in key order.
    pub k: Vec<Json>,
    /// What happened.
    pub op: Op,
    /// Old values (changed columns of an update; whole row of a delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Row>,
    /// New values (whole row of an insert or update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Row>,
    /// Site where the change was made, when not the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o: Option<String>,
    /// Logical clock of the change (Lamport order across sites).
    #[serde(default)]
    pub c: i64,
    /// For a marker (`op` A): the recipient's log position merged so far. For a corrective
    /// change: the position of the recipient's change it corrects (it was decided knowing the
    /// recipient's changes up to there, and no later ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<i64>,
}

impl Change {
    /// The SQL text of a statement change.
    pub fn sql(&self) -> Option<&str> {
        self.new.as_ref()?.get("sql")?.as_str()
    }

    /// The key as stored in `berth_log.pk`.
    pub fn key_text(&self) -> String {
        serde_json::to_string(&self.k).unwrap_or_default()
    }

    /// Checks the change is well formed for its operation.
    pub fn check(&self) -> std::result::Result<(), &'static str> {
        if self.op == Op::A {
            return if self.ack.is_some() {
                Ok(())
            } else {
                Err("marker without ack")
            };
        }
        if self.op == Op::S {
            return if self.sql().is_some() {
                Ok(())
            } else {
                Err("statement without sql")
            };
        }
        if self.op == Op::M {
            return if self.new.is_some() {
                Ok(())
            } else {
                Err("migration without its record")
            };
        }
        if self.k.is_empty() {
            return Err("empty key");
        }
        match self.op {
            Op::I if self.new.is_none() => Err("insert without new values"),
            Op::U if self.new.is_none() || self.old.is_none() => {
                Err("update without old and new values")
            }
            Op::D if self.old.is_none() => Err("delete without old values"),
            _ => Ok(()),
        }
    }
}

/// Which log entries an export takes.
#[derive(Debug, Clone)]
pub struct Filter<'a> {
    /// Entries after this position.
    pub after: i64,
    /// Leave out entries that came from this site, and take entries targeted at it.
    pub peer: Option<&'a str>,
}

/// Reads log entries in position order and turns them into wire changes, calling `sink` for
/// each. Each insert and update carries the row exactly as it was right after it (see
/// [`Chains`]), so run this inside one read transaction. Updates that changed nothing are
/// dropped; a pre-image whose row was displaced becomes its delete, any other is dropped.
/// Returns the number of changes produced.
pub fn export(
    conn: &Connection,
    filter: &Filter<'_>,
    catalog: &Catalog,
    mut sink: impl FnMut(&Change) -> Result<()>,
) -> Result<u64> {
    let chains = Chains::load(conn, filter.after)?;
    let mut st = conn.prepare_cached(
        "SELECT pos, tbl, pk, op, old, new, origin, COALESCE(clock, 0), origin_pos, target FROM berth_log
         WHERE pos > ?1 AND (?2 IS NULL OR origin IS NULL OR origin <> ?2)
           AND (target IS NULL OR target = ?2)
         ORDER BY pos",
    )?;
    let mut rows = st.query(params![filter.after, filter.peer])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let entry = Logged::decode(conn, catalog, &chains, r)?;
        for ch in entry.wire() {
            sink(&ch)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The order of one row's entries in a stretch of the log: for every entry that leaves a
/// row behind (insert, update, pre-image), the next entry of the same key, whose old row is
/// exactly the row this one left (or, for an insert, says it was gone). Entries with no next
/// one left the row that is in the table now. Only the key is read here, not the rows.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    next: HashMap<i64, i64>,
}

impl Chains {
    /// The chains of the entries after position `after`.
    pub fn load(conn: &Connection, after: i64) -> Result<Chains> {
        let mut st = conn.prepare_cached(
            "SELECT pos, tbl, pk, op FROM berth_log WHERE pos > ?1 AND target IS NULL
               AND op IN ('I', 'U', 'D', 'P') ORDER BY pos DESC",
        )?;
        let mut rows = st.query(params![after])?;
        let mut later: HashMap<(String, Vec<u8>), i64> = HashMap::new();
        let mut next = HashMap::new();
        while let Some(r) = rows.next()? {
            let pos: i64 = r.get(0)?;
            let key = (r.get::<_, String>(1)?, raw(r.get_ref(2)?).to_vec());
            let leaves_row = raw(r.get_ref(3)?) != b"D";
            let q = later.insert(key, pos);
            if let (true, Some(q)) = (leaves_row, q) {
                next.insert(pos, q);
            }
        }
        Ok(Chains { next })
    }

    /// The row as entry `pos` left it: the old row of the next entry of its key (none when
    /// that next entry is an insert), else the row in the table now.
    fn after(&self, conn: &Connection, info: &TableInfo, key: &[Json], pos: i64) -> Result<Option<Row>> {
        let Some(q) = self.next.get(&pos) else {
            return read_row(conn, info, key);
        };
        let (op, old): (String, Option<Row>) = conn
            .prepare_cached("SELECT op, old FROM berth_log WHERE pos = ?1")?
            .query_row(params![q], |r| Ok((r.get(0)?, log_row(r.get_ref(1)?))))?;
        Ok(if op == "I" { None } else { old })
    }
}

/// One entry of the update log, decoded: what the router reads.
#[derive(Debug, Clone)]
pub(crate) struct Logged {
    /// The change without its values (`old`/`new` are below).
    pub base: Change,
    /// The old row as journaled (the whole row for captured updates and deletes).
    pub old: Option<Row>,
    /// The new row: as journaled, or the row as this entry left it.
    pub new: Option<Row>,
    /// The node a targeted entry (corrective change, marker, statement) is for.
    pub target: Option<String>,
    /// The table's key columns.
    pub pk_cols: Vec<String>,
    /// A pre-image whose row was not displaced: nothing happened.
    pub void: bool,
}

impl Logged {
    /// Decodes a row of `SELECT pos, tbl, pk, op, old, new, origin, COALESCE(clock, 0),
    /// origin_pos, target FROM berth_log`, with the chains of the stretch it is read from.
    pub fn decode(
        conn: &Connection,
        catalog: &Catalog,
        chains: &Chains,
        r: &rusqlite::Row<'_>,
    ) -> Result<Logged> {
        let pos: i64 = r.get(0)?;
        let t: String = r.get(1)?;
        let letter = raw(r.get_ref(3)?);
        let pre_image = letter == b"P";
        let op = if pre_image {
            Op::D
        } else {
            std::str::from_utf8(letter)
                .ok()
                .and_then(Op::parse)
                .ok_or_else(|| crate::error::EngineError::Journal {
                    pos,
                    reason: format!(
                        "unknown operation {:?}",
                        String::from_utf8_lossy(letter)
                    ),
                })?
        };
        let old = log_row(r.get_ref(4)?);
        let stored_new = match op {
            // Statements and migrations are berth's own JSON records, not rows.
            Op::S | Op::M => serde_json::from_slice::<Json>(raw(r.get_ref(5)?))
                .ok()
                .and_then(|v| match v {
                    Json::Object(m) => Some(m.into_iter().collect()),
                    _ => None,
                }),
            _ => log_row(r.get_ref(5)?),
        };
        let o: Option<String> = r.get(6)?;
        let c: i64 = r.get(7)?;
        let target: Option<String> = r.get(9)?;
        // Markers and corrective changes (targeted at one node) say which of the node's
        // changes central had merged when it decided them.
        let ack: Option<i64> = if op == Op::A || target.is_some() {
            r.get(8)?
        } else {
            None
        };
        let k: Vec<Json> = parse_key(raw(r.get_ref(2)?)).unwrap_or_default();
        let table = catalog.tables.get(&t);
        let mut void = false;
        let new = match (stored_new, op, table) {
            (Some(n), _, _) => Some(n),
            (None, Op::I | Op::U, Some(info)) => chains.after(conn, info, &k, pos)?,
            (None, Op::D, Some(info)) if pre_image => {
                void = chains.after(conn, info, &k, pos)?.is_some();
                None
            }
            _ => None,
        };
        let pk_cols = table.map(|i| i.pk.clone()).unwrap_or_default();
        Ok(Logged {
            base: Change {
                pos,
                t,
                k,
                op,
                old: None,
                new: None,
                o,
                c,
                ack,
            },
            old,
            new,
            target,
            pk_cols,
            void,
        })
    }

    /// The entry's wire changes.
    pub fn wire(&self) -> Vec<Change> {
        if self.void {
            return Vec::new();
        }
        to_wire(
            self.base.clone(),
            self.old.clone(),
            self.new.clone(),
            &self.pk_cols,
        )
    }
}

/// Turns a logged entry into its wire changes. `new` is the row now (or as journaled).
fn to_wire(base: Change, old: Option<Row>, new: Option<Row>, pk_cols: &[String]) -> Vec<Change> {
    match base.op {
        Op::A => vec![base],
        Op::S | Op::M => vec![Change { new, ..base }],
        Op::I => match new {
            Some(new) => vec![Change {
                new: Some(new),
                ..base
            }],
            None => vec![],
        },
        Op::D => vec![Change { old, ..base }],
        Op::U => {
            let Some(old) = old else { return vec![] };
            let old_key: Vec<Json> = pk_cols
                .iter()
                .map(|c| old.get(c).cloned().unwrap_or(Json::Null))
                .collect();
            // Corrective changes carry only the corrected columns in `old`: no key there,
            // no key change.
            let whole_old = pk_cols.iter().all(|c| old.contains_key(c));
            if !pk_cols.is_empty() && whole_old && old_key != base.k {
                let mut out = vec![Change {
                    op: Op::D,
                    k: old_key,
                    old: Some(old),
                    ..base.clone()
                }];
                if let Some(new) = new {
                    out.push(Change {
                        op: Op::I,
                        new: Some(new),
                        ..base
                    });
                }
                return out;
            }
            let Some(new) = new else { return vec![] };
            let changed: Row = old
                .into_iter()
                .filter(|(c, v)| new.get(c).is_none_or(|nv| !same(v, nv)))
                .collect();
            if changed.is_empty() {
                return vec![];
            }
            vec![Change {
                old: Some(changed),
                new: Some(new),
                ..base
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Json) -> Row {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    fn base(op: Op) -> Change {
        Change {
            pos: 1,
            t: "t".into(),
            k: vec![json!("a")],
            op,
            old: None,
            new: None,
            o: None,
            c: 0,
            ack: None,
        }
    }

    #[test]
    fn update_keeps_only_changed_old_columns() {
        let w = to_wire(
            base(Op::U),
            Some(row(json!({"id":"a","n":1,"v":"x"}))),
            Some(row(json!({"id":"a","n":2,"v":"x"}))),
            &["id".into()],
        );
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].old, Some(row(json!({"n":1}))));
        assert_eq!(w[0].new.as_ref().unwrap().len(), 3);
    }

    #[test]
    fn no_op_update_is_dropped() {
        let r = row(json!({"id":"a","n":1}));
        assert!(to_wire(base(Op::U), Some(r.clone()), Some(r), &["id".into()]).is_empty());
    }

    #[test]
    fn key_change_becomes_delete_and_insert() {
        // The update trigger logs the new key; the old row holds the old one.
        let w = to_wire(
            Change {
                k: vec![json!("b")],
                ..base(Op::U)
            },
            Some(row(json!({"id":"a","n":1}))),
            Some(row(json!({"id":"b","n":1}))),
            &["id".into()],
        );
        assert_eq!(
            w.iter().map(|c| c.op).collect::<Vec<_>>(),
            vec![Op::D, Op::I]
        );
        assert_eq!(w[0].k, vec![json!("a")]);
        assert_eq!(w[1].k, vec![json!("b")]);
        // The row was changed again (or deleted) since: the delete of the old key still goes.
        let w = to_wire(
            Change {
                k: vec![json!("b")],
                ..base(Op::U)
            },
            Some(row(json!({"id":"a","n":1}))),
            None,
            &["id".into()],
        );
        assert_eq!(w.iter().map(|c| c.op).collect::<Vec<_>>(), vec![Op::D]);
    }

    #[test]
    fn changes_to_rows_gone_since_are_dropped() {
        assert!(to_wire(base(Op::I), None, None, &["id".into()]).is_empty());
        let old = Some(row(json!({"id":"a","n":1})));
        assert!(to_wire(base(Op::U), old, None, &["id".into()]).is_empty());
    }

    #[test]
    fn malformed_changes_are_detected() {
        assert!(base(Op::U).check().is_err());
        assert!(
            Change {
                k: vec![],
                ..base(Op::D)
            }
            .check()
            .is_err()
        );
    }
}
