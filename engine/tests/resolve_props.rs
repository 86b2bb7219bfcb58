#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Properties of merge resolution (`merge::resolve`, SPEC 2.10), over typed random rows:
//! NULL, integers, reals (17-digit ones and integral ones among them), text and blobs in wire
//! form, random rows at central and random node changes.
//!
//! The laws, as the SPEC's resolution table states them:
//! - an update whose old values equal central's row never collides, and central then holds
//!   the node's new values for those columns;
//! - an update collides (`update-update`) exactly on the columns (in both its `old` and its
//!   `new`) where central holds neither the old nor the new value; the other columns apply;
//! - when central wins, the collided columns are never written, and the corrective names
//!   exactly them: applied at the node, it brings those columns back to central's values;
//! - when the node wins, central ends with every new value of those columns and no corrective;
//! - an insert equal to central's row is a no-op; one that differs collides exactly on the
//!   differing columns;
//! - a delete whose old row equals central's deletes, whoever wins; one that does not collides
//!   (`delete-modified`) exactly on central's columns that differ;
//! - `same` is SQLite's equality: 1 and 1.0 are equal, an integer and a real are equal exactly
//!   when they are the same number, and no value of one storage class equals one of another.

use std::collections::BTreeSet;

use berth_engine::change::{Change, Op};
use berth_engine::merge::{Collision, Corrective, Resolution, Write, resolve};
use berth_engine::value::{Row, same, to_sql};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

/// The non-key columns of the table (`id` is the key).
const COLS: [&str; 4] = ["a", "b", "c", "d"];

fn real(f: f64) -> Json {
    Json::Number(serde_json::Number::from_f64(f).unwrap())
}

/// A value from a small pool (so that rows often agree) or a random one of any class.
fn value() -> impl Strategy<Value = Json> {
    let pool = prop_oneof![
        Just(Json::Null),
        Just(json!(0)),
        Just(json!(1)),
        Just(real(1.0)),
        Just(json!(2)),
        Just(real(0.1 + 0.2)),
        Just(real(0.3)),
        Just(real(2459580.5 + 1.0 / 3.0)),
        Just(json!("a")),
        Just(json!("")),
        Just(json!(["b", "00FF"])),
        Just(json!(["b", ""])),
    ];
    let random = prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(real),
        // Reals that need 17 significant digits to round-trip.
        (1u64..1 << 52).prop_map(|m| real(1.0 + m as f64 * f64::EPSILON)),
        // Integral reals, equal to an integer.
        (-1000i64..1000).prop_map(|i| real(i as f64)),
        "[a-z\u{e9}\u{4e16}]{0,6}".prop_map(Json::from),
        proptest::collection::vec(any::<u8>(), 0..6)
            .prop_map(|b| json!(["b", hex::encode_upper(b)])),
    ];
    prop_oneof![3 => pool, 2 => random]
}

/// The same value written the other way when it is a number SQLite holds as both an integer
/// and a real (1 <-> 1.0); any other value as it is.
fn respelled(v: &Json) -> Json {
    match v {
        Json::Number(n) if n.is_i64() && n.as_i64().unwrap().unsigned_abs() < 1 << 53 => {
            real(n.as_i64().unwrap() as f64)
        }
        Json::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                json!(f as i64)
            } else {
                v.clone()
            }
        }
        _ => v.clone(),
    }
}

/// A row of the table: the key and every column.
fn row() -> impl Strategy<Value = Row> {
    proptest::collection::vec(value(), COLS.len()).prop_map(|vals| {
        let mut r = Row::new();
        r.insert("id".into(), json!("k"));
        for (c, v) in COLS.iter().zip(vals) {
            r.insert((*c).into(), v);
        }
        r
    })
}

fn change(op: Op, old: Option<Row>, new: Option<Row>) -> Change {
    Change {
        pos: 1,
        t: "item".into(),
        k: vec![json!("k")],
        op,
        old,
        new,
        o: None,
        c: 0,
        ack: None,
        seen: None,
    }
}

/// How the node's update saw each column: not changed, changed from central's value (as
/// central holds it or respelled), or changed from another value.
#[derive(Debug, Clone)]
enum Was {
    Untouched,
    Central { respell: bool },
    Other(Json),
}

fn was() -> impl Strategy<Value = Was> {
    prop_oneof![
        Just(Was::Untouched),
        any::<bool>().prop_map(|respell| Was::Central { respell }),
        value().prop_map(Was::Other),
    ]
}

/// A node's update of central's row `cur`: `old` holds the columns it changed (the values it
/// saw before), `new` its whole new row.
fn update(cur: &Row, how: &[Was], new: &Row) -> Change {
    let mut old = Row::new();
    for (c, w) in COLS.iter().zip(how) {
        let at_central = cur.get(*c).cloned().unwrap_or(Json::Null);
        match w {
            Was::Untouched => {}
            Was::Central { respell } => {
                old.insert(
                    (*c).into(),
                    if *respell {
                        respelled(&at_central)
                    } else {
                        at_central
                    },
                );
            }
            Was::Other(v) => {
                old.insert((*c).into(), v.clone());
            }
        }
    }
    change(Op::U, Some(old), Some(new.clone()))
}

/// Central's row after the resolution's write.
fn written(cur: Option<&Row>, r: &Resolution) -> Option<Row> {
    match (&r.write, cur) {
        (Write::None, c) => c.cloned(),
        (Write::Insert(row), _) => Some(row.clone()),
        (Write::Update(set), Some(c)) => {
            let mut out = c.clone();
            out.extend(set.clone());
            Some(out)
        }
        (Write::Update(_), None) => panic!("an update of a row that is not there: {r:?}"),
        (Write::Delete, _) => None,
    }
}

fn cols(r: &Resolution) -> Option<(Collision, BTreeSet<String>)> {
    r.collision
        .as_ref()
        .map(|(k, c)| (*k, c.iter().cloned().collect()))
}

fn get<'a>(r: &'a Row, c: &str) -> &'a Json {
    r.get(c).unwrap_or(&Json::Null)
}

/// Rows equal column by column, by `same`.
fn same_row(a: &Row, b: &Row) -> bool {
    a.len() == b.len() && a.iter().all(|(c, v)| b.get(c).is_some_and(|w| same(v, w)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn an_update_collides_exactly_where_central_holds_neither_old_nor_new(
        cur in row(),
        how in proptest::collection::vec(was(), COLS.len()),
        new in row(),
        node_wins in any::<bool>(),
    ) {
        let ch = update(&cur, &how, &new);
        let old = ch.old.clone().unwrap();
        let r = resolve(Some(&cur), &ch, node_wins, None);
        // The columns in both old and new, and those of them central changed otherwise.
        let both: BTreeSet<String> = old.keys().filter(|c| new.contains_key(*c)).cloned().collect();
        let expected: BTreeSet<String> = both
            .iter()
            .filter(|c| !same(get(&cur, c), &old[*c]) && !same(get(&cur, c), &new[*c]))
            .cloned()
            .collect();
        if expected.is_empty() {
            prop_assert_eq!(cols(&r), None, "{:?}", r);
            prop_assert_eq!(&r.corrective, &None);
        } else {
            prop_assert_eq!(cols(&r), Some((Collision::UpdateUpdate, expected.clone())));
        }
        // Nothing outside the changed columns is written.
        if let Write::Update(set) = &r.write {
            prop_assert!(set.keys().all(|c| both.contains(c)), "{:?} writes outside {:?}", set, both);
            prop_assert!(!set.is_empty());
        } else {
            prop_assert_eq!(&r.write, &Write::None);
        }
        let after = written(Some(&cur), &r).unwrap();
        for c in COLS {
            if !both.contains(c) {
                prop_assert_eq!(get(&after, c), get(&cur, c), "column {} not in the change", c);
            } else if !expected.contains(c) || node_wins {
                prop_assert!(same(get(&after, c), &new[c]), "column {}: central holds {} not the node's {}", c, get(&after, c), new[c]);
            } else {
                // Central wins: the collided column is not written.
                prop_assert_eq!(get(&after, c), get(&cur, c), "collided column {} written", c);
            }
        }
        match (&r.corrective, node_wins || expected.is_empty()) {
            (None, true) => {}
            (Some(Corrective::SetColumns { node, central }), false) => {
                // It names exactly the collided columns, with the node's values of them.
                let named: BTreeSet<String> = node.keys().cloned().collect();
                prop_assert_eq!(&named, &expected);
                for c in &expected {
                    prop_assert_eq!(&node[c], &new[c]);
                }
                // Central's whole row, as it is after the write.
                prop_assert_eq!(central, &after);
                // Applied at the node (the node holds `new`), it restores exactly those
                // columns: the node then agrees with central on every column it changed.
                let mut at_node = new.clone();
                for c in &named {
                    at_node.insert(c.clone(), central[c].clone());
                }
                for c in &both {
                    prop_assert!(same(&at_node[c], get(&after, c)), "column {} differs after the corrective", c);
                }
                for c in COLS.iter().filter(|c| !named.contains(**c)) {
                    prop_assert_eq!(&at_node[*c], &new[*c]);
                }
            }
            (other, _) => prop_assert!(false, "corrective {:?} with node_wins {} and collision on {:?}", other, node_wins, expected),
        }
    }

    #[test]
    fn an_update_from_centrals_row_never_collides_and_sets_the_new_values(
        cur in row(),
        changed in proptest::collection::vec(any::<bool>(), COLS.len()),
        respell in proptest::collection::vec(any::<bool>(), COLS.len()),
        new in row(),
        node_wins in any::<bool>(),
    ) {
        let how: Vec<Was> = changed
            .iter()
            .zip(&respell)
            .map(|(ch, r)| if *ch { Was::Central { respell: *r } } else { Was::Untouched })
            .collect();
        let ch = update(&cur, &how, &new);
        let r = resolve(Some(&cur), &ch, node_wins, None);
        prop_assert_eq!(&r.collision, &None);
        prop_assert_eq!(&r.corrective, &None);
        let after = written(Some(&cur), &r).unwrap();
        for (c, ch) in COLS.iter().zip(&changed) {
            if *ch {
                prop_assert!(same(get(&after, c), &new[*c]), "column {}: {} not {}", c, get(&after, c), new[*c]);
            } else {
                prop_assert_eq!(get(&after, c), get(&cur, c));
            }
        }
    }

    #[test]
    fn an_update_of_a_row_central_deleted_collides_on_its_old_columns(
        cur in row(),
        how in proptest::collection::vec(was(), COLS.len()),
        new in row(),
        node_wins in any::<bool>(),
    ) {
        let ch = update(&cur, &how, &new);
        let r = resolve(None, &ch, node_wins, None);
        let old: BTreeSet<String> = ch.old.as_ref().unwrap().keys().cloned().collect();
        prop_assert_eq!(cols(&r), Some((Collision::UpdateDeleted, old)));
        if node_wins {
            prop_assert_eq!(&r.write, &Write::Insert(new.clone()));
            prop_assert_eq!(&r.corrective, &None);
        } else {
            prop_assert_eq!(&r.write, &Write::None);
            prop_assert_eq!(&r.corrective, &Some(Corrective::Delete));
        }
    }

    #[test]
    fn an_insert_equal_to_centrals_row_is_a_no_op_and_another_collides_on_the_differences(
        cur in row(),
        other in row(),
        take in proptest::collection::vec(0..3u8, COLS.len()),
        node_wins in any::<bool>(),
    ) {
        // Per column: central's value, central's value respelled, or another row's.
        let mut new = cur.clone();
        for (c, t) in COLS.iter().zip(&take) {
            match t {
                0 => {}
                1 => { new.insert((*c).into(), respelled(&cur[*c])); }
                _ => { new.insert((*c).into(), other[*c].clone()); }
            }
        }
        let differing: BTreeSet<String> = COLS
            .iter()
            .filter(|c| !same(&cur[**c], &new[**c]))
            .map(|c| (*c).to_string())
            .collect();
        let r = resolve(Some(&cur), &change(Op::I, None, Some(new.clone())), node_wins, None);
        if differing.is_empty() {
            prop_assert_eq!(&r, &Resolution { write: Write::None, collision: None, corrective: None });
        } else {
            prop_assert_eq!(cols(&r), Some((Collision::InsertExists, differing.clone())));
            let after = written(Some(&cur), &r).unwrap();
            if node_wins {
                prop_assert!(same_row(&after, &new), "{:?} is not the node's {:?}", after, new);
                prop_assert_eq!(&r.corrective, &None);
            } else {
                prop_assert_eq!(&after, &cur);
                prop_assert_eq!(&r.corrective, &Some(Corrective::Upsert(cur.clone())));
            }
        }
        // With no row at central, an insert inserts the node's row as it is.
        let r = resolve(None, &change(Op::I, None, Some(new.clone())), node_wins, None);
        prop_assert_eq!(&r, &Resolution { write: Write::Insert(new), collision: None, corrective: None });
    }

    #[test]
    fn a_delete_of_centrals_row_deletes_and_another_collides_on_the_differences(
        cur in row(),
        other in row(),
        take in proptest::collection::vec(0..3u8, COLS.len()),
        node_wins in any::<bool>(),
    ) {
        let mut old = cur.clone();
        for (c, t) in COLS.iter().zip(&take) {
            match t {
                0 => {}
                1 => { old.insert((*c).into(), respelled(&cur[*c])); }
                _ => { old.insert((*c).into(), other[*c].clone()); }
            }
        }
        let differing: BTreeSet<String> = COLS
            .iter()
            .filter(|c| !same(&cur[**c], &old[**c]))
            .map(|c| (*c).to_string())
            .collect();
        let r = resolve(Some(&cur), &change(Op::D, Some(old.clone()), None), node_wins, None);
        if differing.is_empty() {
            prop_assert_eq!(&r, &Resolution { write: Write::Delete, collision: None, corrective: None });
        } else {
            prop_assert_eq!(cols(&r), Some((Collision::DeleteModified, differing)));
            if node_wins {
                prop_assert_eq!(&r.write, &Write::Delete);
                prop_assert_eq!(&r.corrective, &None);
            } else {
                prop_assert_eq!(&r.write, &Write::None);
                prop_assert_eq!(&r.corrective, &Some(Corrective::Upsert(cur.clone())));
            }
        }
        // Nothing to delete: nothing happens.
        let r = resolve(None, &change(Op::D, Some(old), None), node_wins, None);
        prop_assert_eq!(&r, &Resolution { write: Write::None, collision: None, corrective: None });
    }

    #[test]
    fn same_is_an_equivalence_that_equates_1_and_1_0(a in value(), b in value(), c in value()) {
        prop_assert!(same(&a, &a));
        prop_assert!(same(&a, &respelled(&a)));
        prop_assert_eq!(same(&a, &b), same(&b, &a));
        if same(&a, &b) && same(&b, &c) {
            prop_assert!(same(&a, &c), "{} = {} = {} but not {} = {}", a, b, c, a, c);
        }
    }

    /// `same` says what SQLite's `IS` says of the two values bound as they would be written.
    #[test]
    fn same_agrees_with_sqlite(a in value(), b in value()) {
        prop_assert_eq!(same(&a, &b), sqlite_is(&a, &b), "{} vs {}", a, b);
    }
}

fn sqlite_is(a: &Json, b: &Json) -> bool {
    thread_local! {
        static CONN: rusqlite::Connection = rusqlite::Connection::open_in_memory().unwrap();
    }
    CONN.with(|c| {
        c.query_row(
            "SELECT ?1 IS ?2",
            rusqlite::params![to_sql(a).unwrap(), to_sql(b).unwrap()],
            |r| r.get(0),
        )
        .unwrap()
    })
}

#[test]
fn same_treats_1_and_1_0_as_equal_and_nothing_else_across_classes() {
    assert!(same(&json!(1), &real(1.0)));
    assert!(same(&real(1.0), &json!(1)));
    assert!(same(&json!(-0), &real(-0.0)));
    assert!(!same(&json!(1), &real(1.5)));
    assert!(!same(&json!(1), &json!("1")));
    assert!(!same(&json!("a"), &json!(["b", "61"])));
    assert!(!same(&Json::Null, &json!(0)));
    assert!(!same(&real(0.1 + 0.2), &real(0.3)));
}

/// An integer beyond 2^53 and the nearest real: SQLite compares them exactly (they differ).
/// `same` compares them as doubles and finds them equal, so in a column without affinity a
/// node's update from 9007199254740992.0 of central's 9007199254740993 merges as "central
/// already holds the new value" (or "central holds the old value") with no collision: the
/// sites diverge silently.
#[test]
fn same_compares_a_large_integer_and_a_real_exactly_as_sqlite_does() {
    let (i, f) = (
        json!(9_007_199_254_740_993i64),
        real(9_007_199_254_740_992.0),
    );
    assert!(!sqlite_is(&i, &f));
    assert_eq!(same(&i, &f), sqlite_is(&i, &f), "{i} vs {f}");
}
