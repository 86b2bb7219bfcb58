//! A row change as it travels in a bundle, and its export from the update log.
//!
//! Wire form (one JSON object per line of `payload/changes.jsonl`):
//! `{"pos":12,"t":"opty","k":["o1"],"op":"U","old":{"name":"Keith Palmer"},"new":{...},"c":3}`.
//! `old` holds, for an update, the old values of the changed columns only (what a collision
//! check compares); for a delete, the whole old row. `new` holds the whole new row of an
//! insert or update. `o` names the site where the change was made when it is not the sender.

use crate::error::Result;
use crate::table::{Catalog, TableInfo, read_row};
use crate::value::{Row, log_row, parse_key, raw, same};
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

/// The largest logical clock a change may carry (SPEC 2.8): 2^53 - 1, the largest integer
/// every JSON reader holds exactly. A receiving site sets its clock one past the largest it
/// has seen, so a bound far below `i64::MAX` means that step can never wrap to a negative
/// clock, whatever a bundle claims.
pub const MAX_CLOCK: i64 = (1 << 53) - 1;

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
    /// For a node's own change: how far it had applied central's stream to it (a position
    /// of its partial log) when the change was made. Central counts the columns others
    /// changed after that as collided even where the value is back to what the node saw
    /// (SPEC 2.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<i64>,
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
        if !(0..=MAX_CLOCK).contains(&self.c) {
            return Err("logical clock out of range (0 to 2^53 - 1)");
        }
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
    /// Send a key change as one update of the key (what a node sends central, so that
    /// central's `ON UPDATE` actions follow it), not as a delete and an insert.
    pub key_updates: bool,
    /// At a node sending to central: how far it has applied central's stream now. Each
    /// local change carries in `seen` what it had applied when it was made: the stamp the
    /// next apply put on it, or this for a change made since (SPEC 2.4).
    pub seen_now: Option<i64>,
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
        "SELECT pos, tbl, pk, op, old, new, origin, COALESCE(clock, 0), origin_pos, target, seen
         FROM berth_log WHERE pos > ?1 AND (?2 IS NULL OR origin IS NULL OR origin <> ?2)
           AND (target IS NULL OR target = ?2)
         ORDER BY pos",
    )?;
    let mut rows = st.query(params![filter.after, filter.peer])?;
    let mut n = 0u64;
    let mut emit = |entry: &Logged| -> Result<()> {
        for ch in entry.wire() {
            sink(&ch)?;
            n += 1;
        }
        Ok(())
    };
    // A key change's delete, waiting to see whether the next entry is its insert.
    let mut held: Option<Logged> = None;
    while let Some(r) = rows.next()? {
        let mut entry = Logged::decode(conn, catalog, &chains, r)?;
        if let Some(now) = filter.seen_now
            && entry.target.is_none()
            && entry.base.o.is_none()
        {
            entry.base.seen = Some(r.get::<_, Option<i64>>(10)?.unwrap_or(now));
        }
        if let Some(d) = held.take() {
            match key_update(&d, &entry) {
                Some(l) => {
                    emit(&l)?;
                    continue;
                }
                None => emit(&d)?,
            }
        }
        if filter.key_updates && entry.base.op == Op::D && !entry.void && entry.target.is_none() {
            held = Some(entry);
        } else {
            emit(&entry)?;
        }
    }
    if let Some(d) = held {
        emit(&d)?;
    }
    Ok(n)
}

/// The update of the key that a delete and the insert right after it journaled, when the
/// insert is marked as that key change (SPEC 2.4): one entry whose old row is the delete's
/// and new row the insert's, keyed by the old key.
fn key_update(d: &Logged, i: &Logged) -> Option<Logged> {
    let moved_from = i.moved_from.as_ref()?;
    if i.base.op != Op::I
        || i.base.pos != d.base.pos + 1
        || i.base.t != d.base.t
        || i.base.o != d.base.o
        || i.target.is_some()
        || *moved_from != d.base.k
    {
        return None;
    }
    // The row left by the insert (gone when a later entry deleted or re-keyed it: then only
    // the delete stands).
    i.new.as_ref()?;
    Some(Logged {
        base: Change {
            pos: i.base.pos,
            op: Op::U,
            c: i.base.c,
            ..d.base.clone()
        },
        old: d.old.clone(),
        new: i.new.clone(),
        target: None,
        pk_cols: d.pk_cols.clone(),
        void: false,
        moved_from: None,
    })
}

/// The order of one row's entries in a stretch of the log: for every entry that leaves a
/// row behind (insert, update, pre-image), the next entry of the same key, whose old row is
/// exactly the row this one left (or, for an insert, says it was gone). Entries with no next
/// one left the row that is in the table now. Only the key is read here, not the rows.
///
/// SQLite pairs the entries (its sorter spills to a temporary file when the stretch is
/// large); only the pairs are kept, sorted by position, 16 bytes each: a stretch whose rows
/// changed once each holds nothing here, however long it is (issue 20: a map over every key
/// of a 2M-change log held ~400 MB while the node wrote its bundle).
#[derive(Debug, Default)]
pub(crate) struct Chains {
    /// (entry, the next entry of its key), by entry.
    next: Vec<(i64, i64)>,
    /// The position the chains start after.
    start: i64,
    /// The last position read.
    end: i64,
}

impl Chains {
    /// The chains of the entries after position `after`.
    pub fn load(conn: &Connection, after: i64) -> Result<Chains> {
        let mut chains = Chains {
            start: after,
            end: after,
            ..Chains::default()
        };
        chains.extend(conn)?;
        Ok(chains)
    }

    /// Reads the entries journaled since the last read: a routing pass that commits between
    /// batches lets central's writers go on, and what they change after an entry says what
    /// that entry left (the row in the table is already past it).
    pub fn extend(&mut self, conn: &Connection) -> Result<()> {
        let mut st = conn.prepare_cached(
            "SELECT pos, next FROM (
               SELECT pos, op, LEAD(pos) OVER (PARTITION BY tbl, pk ORDER BY pos) AS next
               FROM berth_log WHERE pos > ?1 AND target IS NULL AND op IN ('I', 'U', 'D', 'P'))
             WHERE next IS NOT NULL AND op <> 'D' ORDER BY pos",
        )?;
        let fresh = st
            .query_map(params![self.end], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
        if self.end > self.start {
            // A key's last entry read before, and its first entry since (through the log's
            // index by row, which central always has).
            let mut st = conn.prepare_cached(
                "SELECT o.pos, n.first FROM (
                   SELECT tbl, pk, MIN(pos) AS first FROM berth_log
                   WHERE pos > ?2 AND target IS NULL AND op IN ('I', 'U', 'D', 'P')
                   GROUP BY tbl, pk) AS n
                 JOIN berth_log AS o ON o.pos = (
                   SELECT MAX(x.pos) FROM berth_log AS x
                   WHERE x.tbl = n.tbl AND x.pk = n.pk AND x.pos > ?1 AND x.pos <= ?2
                     AND x.target IS NULL AND x.op IN ('I', 'U', 'D', 'P'))
                 WHERE o.op <> 'D'",
            )?;
            let across = st
                .query_map(params![self.start, self.end], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<Vec<(i64, i64)>>>()?;
            self.next.extend(across);
        }
        self.next.extend(fresh);
        self.next.sort_unstable();
        self.end = conn.query_row(
            "SELECT COALESCE(MAX(pos), ?1) FROM berth_log WHERE pos > ?1",
            params![self.end],
            |r| r.get(0),
        )?;
        Ok(())
    }

    /// The next entry of the key of entry `pos`, if any.
    fn next_of(&self, pos: i64) -> Option<i64> {
        self.next
            .binary_search_by_key(&pos, |(p, _)| *p)
            .ok()
            .and_then(|i| self.next.get(i))
            .map(|(_, q)| *q)
    }

    /// The row as entry `pos` left it: the old row of the next entry of its key (none when
    /// that next entry is an insert), else the row in the table now.
    fn after(
        &self,
        conn: &Connection,
        info: &TableInfo,
        key: &[Json],
        pos: i64,
    ) -> Result<Option<Row>> {
        let Some(q) = self.next_of(pos) else {
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
    /// For the insert of a key change: the old key (SPEC 2.4).
    pub moved_from: Option<Vec<Json>>,
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
                    reason: format!("unknown operation {:?}", String::from_utf8_lossy(letter)),
                })?
        };
        let (old, moved_from) = match op {
            // The insert of a key change holds the old key where rows hold the old row.
            Op::I => (None, parse_key(raw(r.get_ref(4)?))),
            _ => (log_row(r.get_ref(4)?), None),
        };
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
            // Settled when central's change came to its row (`NodeApply::settle`).
            (None, Op::D, _) if pre_image && raw(r.get_ref(5)?) == b"void" => {
                void = true;
                None
            }
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
                seen: None,
            },
            old,
            new,
            target,
            pk_cols,
            void,
            moved_from,
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
            seen: None,
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

    /// A database with capture on `schema`'s tables, and its catalog.
    fn captured(schema: &str) -> (Connection, Catalog) {
        let c = Connection::open_in_memory().unwrap();
        crate::store::install(&c).unwrap();
        c.execute_batch(schema).unwrap();
        crate::capture::install(&c, &crate::schema::tables(&c).unwrap()).unwrap();
        let cat = Catalog::load(&c, &Default::default(), Default::default()).unwrap();
        (c, cat)
    }

    /// What an export after `after` sends: (op, key, old, new) as JSON texts.
    fn exported(c: &Connection, cat: &Catalog, after: i64) -> Vec<(Op, String, String, String)> {
        let mut out = Vec::new();
        let f = Filter {
            after,
            peer: None,
            key_updates: false,
            seen_now: None,
        };
        export(c, &f, cat, |ch| {
            let text = |r: &Option<Row>| {
                r.as_ref()
                    .map(|r| serde_json::to_string(r).unwrap())
                    .unwrap_or_default()
            };
            out.push((ch.op, ch.key_text(), text(&ch.old), text(&ch.new)));
            Ok(())
        })
        .unwrap();
        out
    }

    /// The `old` of the last change an export after `after` sends.
    fn last_old(c: &Connection, cat: &Catalog, after: i64) -> Row {
        let mut old = None;
        export(
            c,
            &Filter {
                after,
                peer: None,
                key_updates: false,
                seen_now: None,
            },
            cat,
            |ch| {
                old = ch.old.clone();
                Ok(())
            },
        )
        .unwrap();
        old.unwrap()
    }

    fn top(c: &Connection) -> i64 {
        crate::store::max_pos(c).unwrap()
    }

    /// Issue 15, defect 1: an update's new values travel even when the row is deleted or
    /// re-keyed before the export.
    #[test]
    fn each_entry_carries_the_state_it_left() {
        let (c, cat) = captured("CREATE TABLE item(id TEXT PRIMARY KEY, v INTEGER);");
        c.execute_batch("INSERT INTO item VALUES ('k', 1)").unwrap();
        let seen = top(&c);
        c.execute_batch("UPDATE item SET v = 2 WHERE id = 'k'; DELETE FROM item WHERE id = 'k';")
            .unwrap();
        let e = exported(&c, &cat, seen);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            (e[0].0, e[0].2.as_str(), e[0].3.as_str()),
            (Op::U, r#"{"v":1}"#, r#"{"id":"k","v":2}"#)
        );
        assert_eq!((e[1].0, e[1].2.as_str()), (Op::D, r#"{"id":"k","v":2}"#));

        c.execute_batch("INSERT INTO item VALUES ('k', 1)").unwrap();
        let seen = top(&c);
        c.execute_batch(
            "UPDATE item SET v = 3 WHERE id = 'k'; UPDATE item SET id = 'k2' WHERE id = 'k';
             UPDATE item SET v = 4 WHERE id = 'k2'; INSERT INTO item VALUES ('k', 9);",
        )
        .unwrap();
        let e = exported(&c, &cat, seen);
        let ops: Vec<(Op, &str)> = e.iter().map(|x| (x.0, x.1.as_str())).collect();
        assert_eq!(
            ops,
            vec![
                (Op::U, r#"["k"]"#),
                (Op::D, r#"["k"]"#),
                (Op::I, r#"["k2"]"#),
                (Op::U, r#"["k2"]"#),
                (Op::I, r#"["k"]"#)
            ]
        );
        assert_eq!(e[0].3, r#"{"id":"k","v":3}"#);
        assert_eq!(e[1].2, r#"{"id":"k","v":3}"#);
        assert_eq!(e[2].3, r#"{"id":"k2","v":3}"#);
        assert_eq!(e[3].3, r#"{"id":"k2","v":4}"#);
        assert_eq!(e[4].3, r#"{"id":"k","v":9}"#);
    }

    /// Issue 15, defect 5: REPLACE's deletes are captured with or without
    /// `recursive_triggers`; IGNORE, DO NOTHING and a failed statement journal nothing.
    #[test]
    fn replace_is_captured_as_the_deletes_it_made() {
        for recursive in [false, true] {
            let (c, cat) =
                captured("CREATE TABLE u(id TEXT PRIMARY KEY, code TEXT UNIQUE, v INTEGER);");
            c.execute_batch(&format!("PRAGMA recursive_triggers = {recursive};"))
                .unwrap();
            c.execute_batch("INSERT INTO u VALUES ('a', 'A', 1), ('b', 'B', 2);")
                .unwrap();
            let seen = top(&c);
            c.execute_batch(
                "INSERT OR IGNORE INTO u VALUES ('a', 'Z', 7);
                 INSERT INTO u VALUES ('b', 'Y', 8) ON CONFLICT DO NOTHING;",
            )
            .unwrap();
            assert!(
                c.execute_batch("INSERT INTO u VALUES ('a', 'Q', 3)")
                    .is_err()
            );
            assert!(exported(&c, &cat, seen).is_empty(), "recursive {recursive}");

            c.execute_batch("INSERT OR REPLACE INTO u VALUES ('a', 'A', 5)")
                .unwrap();
            let e = exported(&c, &cat, seen);
            let ops: Vec<(Op, &str)> = e.iter().map(|x| (x.0, x.1.as_str())).collect();
            assert_eq!(
                ops,
                vec![(Op::D, r#"["a"]"#), (Op::I, r#"["a"]"#)],
                "recursive {recursive}"
            );
            assert_eq!(e[0].2, r#"{"code":"A","id":"a","v":1}"#);
            assert_eq!(e[1].3, r#"{"code":"A","id":"a","v":5}"#);

            // Displacing another row through the UNIQUE column.
            let seen = top(&c);
            c.execute_batch("REPLACE INTO u VALUES ('c', 'B', 6)")
                .unwrap();
            let e = exported(&c, &cat, seen);
            let ops: Vec<(Op, &str)> = e.iter().map(|x| (x.0, x.1.as_str())).collect();
            assert_eq!(
                ops,
                vec![(Op::D, r#"["b"]"#), (Op::I, r#"["c"]"#)],
                "recursive {recursive}"
            );

            // An upsert is an update.
            let seen = top(&c);
            c.execute_batch(
                "INSERT INTO u VALUES ('c', 'B', 7) ON CONFLICT(id) DO UPDATE SET v = excluded.v",
            )
            .unwrap();
            let e = exported(&c, &cat, seen);
            assert_eq!(e.len(), 1);
            assert_eq!((e[0].0, e[0].2.as_str()), (Op::U, r#"{"v":6}"#));
        }
    }

    proptest::proptest! {
        /// Issue 15, defects 3 and 4: every finite or infinite real and any text bytes come
        /// out of the journal exactly as stored.
        #[test]
        fn journaled_values_are_exact(
            bits in proptest::num::u64::ANY,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ) {
            let (c, cat) = captured("CREATE TABLE t(id INTEGER PRIMARY KEY, r REAL, x TEXT);");
            let f = f64::from_bits(bits);
            c.execute("INSERT INTO t VALUES (1, ?1, CAST(?2 AS TEXT))", rusqlite::params![f, bytes]).unwrap();
            let stored: (Option<f64>, Vec<u8>) = c
                .query_row("SELECT r, CAST(x AS BLOB) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            c.execute_batch("DELETE FROM t").unwrap();
            let old = last_old(&c, &cat, 1);
            let back = crate::value::to_sql(&old["r"]).unwrap();
            match (stored.0, back) {
                (None, crate::value::Sql::Value(rusqlite::types::Value::Null)) => {}
                (Some(a), crate::value::Sql::Value(rusqlite::types::Value::Real(b))) => {
                    proptest::prop_assert_eq!(a.to_bits(), b.to_bits());
                }
                other => proptest::prop_assert!(false, "{other:?}"),
            }
            let text = match crate::value::to_sql(&old["x"]).unwrap() {
                crate::value::Sql::Value(rusqlite::types::Value::Text(s)) => s.into_bytes(),
                crate::value::Sql::Bytes(b) => b,
                other => panic!("{other:?}"),
            };
            proptest::prop_assert_eq!(text, stored.1);
        }
    }

    /// Issue 15, defect 7: a table too wide for one `json_object` call.
    #[test]
    fn wide_tables_are_journaled_in_chunks() {
        let cols: Vec<String> = (0..130).map(|i| format!("c{i} INTEGER")).collect();
        let (c, cat) = captured(&format!(
            "CREATE TABLE w(id INTEGER PRIMARY KEY, {});",
            cols.join(", ")
        ));
        c.execute_batch("INSERT INTO w(id, c0, c129) VALUES (1, 10, 20); DELETE FROM w;")
            .unwrap();
        let old = last_old(&c, &cat, 1);
        assert_eq!(old.len(), 131);
        assert_eq!(old["c129"], json!(20));
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
