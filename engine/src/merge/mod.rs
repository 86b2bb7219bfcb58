//! The merge processor (seed 004, Figure 5): applies incoming changes, detects collisions and
//! writes corrective changes.
//!
//! [`resolve`] is the decision, a pure function of the current row and the incoming change;
//! [`apply`] is the thin shell that reads and writes SQLite. At central a node's change
//! collides when the current row differs from the old values it carries (update), when the
//! row is gone (update), when a delete meets a modified row, or when an insert meets a
//! different existing row. Colliding columns follow the table's [`Policy`]; the columns of
//! the same update that do not collide still apply.

pub mod apply;
pub mod contest;

use crate::change::{Change, Op};
use crate::value::{Row, same};
use std::collections::BTreeSet;

pub use crate::table::Policy;

/// The kind of a collision, as recorded in `berth_conflicts.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// Both sides changed the same column.
    UpdateUpdate,
    /// The node updated a row that central has deleted.
    UpdateDeleted,
    /// The node inserted a key that central holds with other values.
    InsertExists,
    /// The node deleted a row that central has modified since.
    DeleteModified,
    /// The change broke a constraint of central's database.
    Constraint,
}

impl Collision {
    /// Name stored in `berth_conflicts.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Collision::UpdateUpdate => "update-update",
            Collision::UpdateDeleted => "update-deleted",
            Collision::InsertExists => "insert-exists",
            Collision::DeleteModified => "delete-modified",
            Collision::Constraint => "constraint",
        }
    }
}

/// What to do to central's row.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Nothing.
    None,
    /// Insert this whole row.
    Insert(Row),
    /// Set these columns.
    Update(Row),
    /// Delete the row.
    Delete,
}

/// The change sent back to the node so that it converges on central's decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Corrective {
    /// The node must hold exactly this row (insert or replace).
    Upsert(Row),
    /// The node must set these columns (keys of the map) from central's row.
    SetColumns {
        /// The node's values of the columns being corrected.
        node: Row,
        /// Central's whole row.
        central: Row,
    },
    /// The node must delete the row.
    Delete,
}

/// The outcome of merging one change.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// What to write at central.
    pub write: Write,
    /// The collision, if any, and the columns it concerns.
    pub collision: Option<(Collision, Vec<String>)>,
    /// The corrective change for the node, if its change was (partly) rejected.
    pub corrective: Option<Corrective>,
}

impl Resolution {
    fn write(write: Write) -> Self {
        Resolution {
            write,
            collision: None,
            corrective: None,
        }
    }
}

/// Decides how one incoming change merges into central's current row.
///
/// `node_wins` says whether the node's side prevails in a collision (from the table's
/// policy and, for latest-wins, the logical order of the two versions). `contested` names
/// the columns another site changed since the node last saw the row ([`contest`]): they
/// collide even where central's value is the one the node saw.
pub fn resolve(
    current: Option<&Row>,
    change: &Change,
    node_wins: bool,
    contested: Option<&Cols>,
) -> Resolution {
    let is_contested = |c: &String| match contested {
        None => false,
        Some(Cols::All) => true,
        Some(Cols::Some(cols)) => cols.contains(c),
    };
    let empty = Row::new();
    let new = change.new.as_ref().unwrap_or(&empty);
    let old = change.old.as_ref().unwrap_or(&empty);
    match (change.op, current) {
        (Op::I, None) => Resolution::write(Write::Insert(new.clone())),
        (Op::I, Some(cur)) => {
            let differing = differing(cur, new);
            if differing.is_empty() {
                return Resolution::write(Write::None);
            }
            let cols: Vec<String> = differing.keys().cloned().collect();
            if node_wins {
                Resolution {
                    write: Write::Update(differing),
                    collision: Some((Collision::InsertExists, cols)),
                    corrective: None,
                }
            } else {
                Resolution {
                    write: Write::None,
                    collision: Some((Collision::InsertExists, cols)),
                    corrective: Some(Corrective::Upsert(cur.clone())),
                }
            }
        }
        (Op::U, None) => {
            let cols = old.keys().cloned().collect();
            if node_wins {
                Resolution {
                    write: Write::Insert(new.clone()),
                    collision: Some((Collision::UpdateDeleted, cols)),
                    corrective: None,
                }
            } else {
                Resolution {
                    write: Write::None,
                    collision: Some((Collision::UpdateDeleted, cols)),
                    corrective: Some(Corrective::Delete),
                }
            }
        }
        (Op::U, Some(cur)) => {
            let mut apply = Row::new();
            let mut collided = Row::new();
            for (col, was) in old {
                let Some(now) = new.get(col) else { continue };
                let at_central = cur.get(col).unwrap_or(&serde_json::Value::Null);
                if same(at_central, now) {
                    continue;
                } else if same(at_central, was) && !is_contested(col) {
                    apply.insert(col.clone(), now.clone());
                } else {
                    collided.insert(col.clone(), now.clone());
                }
            }
            if collided.is_empty() {
                let write = if apply.is_empty() {
                    Write::None
                } else {
                    Write::Update(apply)
                };
                return Resolution::write(write);
            }
            let cols: Vec<String> = collided.keys().cloned().collect();
            if node_wins {
                apply.extend(collided);
                Resolution {
                    write: Write::Update(apply),
                    collision: Some((Collision::UpdateUpdate, cols)),
                    corrective: None,
                }
            } else {
                let write = if apply.is_empty() {
                    Write::None
                } else {
                    Write::Update(apply.clone())
                };
                let mut central = cur.clone();
                central.extend(apply);
                Resolution {
                    write,
                    collision: Some((Collision::UpdateUpdate, cols)),
                    corrective: Some(Corrective::SetColumns {
                        node: collided,
                        central,
                    }),
                }
            }
        }
        (Op::D, None) | (Op::A, _) | (Op::S, _) | (Op::M, _) => Resolution::write(Write::None),
        (Op::D, Some(cur)) => {
            let mut changed = differing(old, cur);
            for (c, v) in cur.iter().filter(|(c, _)| is_contested(c)) {
                changed.insert(c.clone(), v.clone());
            }
            if changed.is_empty() || node_wins {
                let collision = (!changed.is_empty())
                    .then(|| (Collision::DeleteModified, changed.keys().cloned().collect()));
                Resolution {
                    write: Write::Delete,
                    collision,
                    corrective: None,
                }
            } else {
                Resolution {
                    write: Write::None,
                    collision: Some((Collision::DeleteModified, changed.keys().cloned().collect())),
                    corrective: Some(Corrective::Upsert(cur.clone())),
                }
            }
        }
    }
}

/// Columns of `theirs` whose value differs from `ours` (columns missing in `ours` count).
fn differing(ours: &Row, theirs: &Row) -> Row {
    theirs
        .iter()
        .filter(|(c, v)| ours.get(*c).is_none_or(|o| !same(o, v)))
        .map(|(c, v)| (c.clone(), v.clone()))
        .collect()
}

/// Columns of a row with local changes central has not merged yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cols {
    /// The row was inserted or deleted locally: all of it.
    All,
    /// These columns were updated locally.
    Some(BTreeSet<String>),
}

impl Cols {
    /// Every column of any of the sets (`None` for no set at all).
    pub fn union<'c>(sets: impl Iterator<Item = &'c Cols>) -> Option<Cols> {
        let mut out: Option<Cols> = None;
        for cols in sets {
            out = Some(match (out, cols) {
                (Some(Cols::All), _) | (_, Cols::All) => Cols::All,
                (Some(Cols::Some(mut have)), Cols::Some(more)) => {
                    have.extend(more.iter().cloned());
                    Cols::Some(have)
                }
                (None, Cols::Some(more)) => Cols::Some(more.clone()),
            });
        }
        out
    }
}

/// How a schema migration renames tables and columns, for changes made before it
/// ([`apply::Pending::translate`]); the migration's translation implements it.
pub trait Renames {
    /// The table's name afterwards, `None` when it is gone.
    fn table(&self, old: &str) -> Option<String>;
    /// The column's name afterwards in `new_table`, `None` when it is gone.
    fn column(&self, new_table: &str, old: &str) -> Option<String>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn row(v: Value) -> Row {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    fn change(op: Op, old: Option<Value>, new: Option<Value>) -> Change {
        Change {
            pos: 1,
            t: "opty".into(),
            k: vec![json!("o1")],
            op,
            old: old.map(row),
            new: new.map(row),
            o: None,
            c: 0,
            ack: None,
            seen: None,
        }
    }

    /// The seed's example: central holds "Carl Lake" (node A merged first); node B's change
    /// carries the prior value "Keith Palmer".
    #[test]
    fn carl_lake_collision_rejects_the_second_node() {
        let central = row(json!({"id":"o1","sales_rep":"Carl Lake","stage":"open"}));
        let b = change(
            Op::U,
            Some(json!({"sales_rep":"Keith Palmer"})),
            Some(json!({"id":"o1","sales_rep":"Greg Emerson","stage":"open"})),
        );
        let r = resolve(Some(&central), &b, false, None);
        assert_eq!(r.write, Write::None);
        assert_eq!(
            r.collision,
            Some((Collision::UpdateUpdate, vec!["sales_rep".into()]))
        );
        match r.corrective {
            Some(Corrective::SetColumns { node, central }) => {
                assert_eq!(node, row(json!({"sales_rep":"Greg Emerson"})));
                assert_eq!(central["sales_rep"], json!("Carl Lake"));
            }
            other => panic!("unexpected corrective {other:?}"),
        }
        let r = resolve(Some(&central), &b, true, None);
        assert_eq!(
            r.write,
            Write::Update(row(json!({"sales_rep":"Greg Emerson"})))
        );
        assert_eq!(r.corrective, None);
    }

    #[test]
    fn columns_that_do_not_collide_still_apply() {
        let central = row(json!({"id":"o1","a":"central","b":1}));
        let c = change(
            Op::U,
            Some(json!({"a":"orig","b":1})),
            Some(json!({"id":"o1","a":"node","b":2})),
        );
        let r = resolve(Some(&central), &c, false, None);
        assert_eq!(r.write, Write::Update(row(json!({"b":2}))));
        assert_eq!(r.collision.unwrap().1, vec!["a".to_string()]);
    }

    /// A column another site changed and changed back since the node saw it collides,
    /// though central holds the node's old value; the other columns still apply, and a
    /// delete of such a row is `delete-modified`.
    #[test]
    fn contested_columns_collide_though_the_value_is_back() {
        let central = row(json!({"id":"o1","a":"orig","b":1}));
        let u = change(
            Op::U,
            Some(json!({"a":"orig","b":1})),
            Some(json!({"id":"o1","a":"node","b":2})),
        );
        let contested = Cols::Some(["a".to_string()].into_iter().collect());
        let r = resolve(Some(&central), &u, false, Some(&contested));
        assert_eq!(r.write, Write::Update(row(json!({"b":2}))));
        assert_eq!(
            r.collision,
            Some((Collision::UpdateUpdate, vec!["a".to_string()]))
        );
        assert!(matches!(r.corrective, Some(Corrective::SetColumns { .. })));
        let other = Cols::Some(["c".to_string()].into_iter().collect());
        let r = resolve(Some(&central), &u, false, Some(&other));
        assert_eq!(r.collision, None);
        let d = change(Op::D, Some(json!({"id":"o1","a":"orig","b":1})), None);
        let r = resolve(Some(&central), &d, false, Some(&Cols::All));
        assert_eq!(r.write, Write::None);
        assert_eq!(r.collision.map(|c| c.0), Some(Collision::DeleteModified));
        assert_eq!(r.corrective, Some(Corrective::Upsert(central.clone())));
        let r = resolve(Some(&central), &d, false, Some(&other));
        assert_eq!((r.write, r.collision), (Write::Delete, None));
    }

    /// (current row, change, node_wins) -> (write, collision kind, corrective kind).
    type Case = (
        Option<Row>,
        Change,
        bool,
        Write,
        Option<Collision>,
        Option<&'static str>,
    );

    /// Case table of every merge outcome.
    #[test]
    fn collision_cases() {
        let cur = row(json!({"id":"o1","v":"c"}));
        let cases: Vec<Case> = vec![
            (
                None,
                change(Op::I, None, Some(json!({"id":"o1","v":"n"}))),
                false,
                Write::Insert(row(json!({"id":"o1","v":"n"}))),
                None,
                None,
            ),
            (
                Some(cur.clone()),
                change(Op::I, None, Some(json!({"id":"o1","v":"c"}))),
                false,
                Write::None,
                None,
                None,
            ),
            (
                Some(cur.clone()),
                change(Op::I, None, Some(json!({"id":"o1","v":"n"}))),
                false,
                Write::None,
                Some(Collision::InsertExists),
                Some("upsert"),
            ),
            (
                Some(cur.clone()),
                change(Op::I, None, Some(json!({"id":"o1","v":"n"}))),
                true,
                Write::Update(row(json!({"v":"n"}))),
                Some(Collision::InsertExists),
                None,
            ),
            (
                None,
                change(
                    Op::U,
                    Some(json!({"v":"c"})),
                    Some(json!({"id":"o1","v":"n"})),
                ),
                false,
                Write::None,
                Some(Collision::UpdateDeleted),
                Some("delete"),
            ),
            (
                None,
                change(
                    Op::U,
                    Some(json!({"v":"c"})),
                    Some(json!({"id":"o1","v":"n"})),
                ),
                true,
                Write::Insert(row(json!({"id":"o1","v":"n"}))),
                Some(Collision::UpdateDeleted),
                None,
            ),
            (
                Some(cur.clone()),
                change(
                    Op::U,
                    Some(json!({"v":"c"})),
                    Some(json!({"id":"o1","v":"n"})),
                ),
                false,
                Write::Update(row(json!({"v":"n"}))),
                None,
                None,
            ),
            (
                Some(cur.clone()),
                change(
                    Op::U,
                    Some(json!({"v":"x"})),
                    Some(json!({"id":"o1","v":"c"})),
                ),
                false,
                Write::None,
                None,
                None,
            ),
            (
                None,
                change(Op::D, Some(json!({"id":"o1","v":"c"})), None),
                false,
                Write::None,
                None,
                None,
            ),
            (
                Some(cur.clone()),
                change(Op::D, Some(json!({"id":"o1","v":"c"})), None),
                false,
                Write::Delete,
                None,
                None,
            ),
            (
                Some(cur.clone()),
                change(Op::D, Some(json!({"id":"o1","v":"old"})), None),
                false,
                Write::None,
                Some(Collision::DeleteModified),
                Some("upsert"),
            ),
            (
                Some(cur.clone()),
                change(Op::D, Some(json!({"id":"o1","v":"old"})), None),
                true,
                Write::Delete,
                Some(Collision::DeleteModified),
                None,
            ),
        ];
        for (i, (current, ch, wins, write, kind, corr)) in cases.into_iter().enumerate() {
            let r = resolve(current.as_ref(), &ch, wins, None);
            assert_eq!(r.write, write, "case {i}");
            assert_eq!(r.collision.map(|c| c.0), kind, "case {i}");
            let got = r.corrective.map(|c| match c {
                Corrective::Upsert(_) => "upsert",
                Corrective::SetColumns { .. } => "set",
                Corrective::Delete => "delete",
            });
            assert_eq!(got, corr, "case {i}");
        }
    }
}
