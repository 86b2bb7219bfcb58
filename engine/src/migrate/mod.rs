//! Distribution of schema migrations (seed 000 claims 48-59; seed 004 "software level"):
//! migrations travel in central's streams, in order with the changes, and every bundle says
//! which schema its changes were captured under.
//!
//! - At central a migration (created there, accepted from a developer, imported from version
//!   control) is journaled as an `M` entry of `berth_log` in the transaction that applies it.
//!   The router sends it to every node, so each node's stream holds the changes captured
//!   before it, the migration, then the changes captured after it. A node that lacks several
//!   migrations gets exactly those, in order, and nothing is ever re-ordered around them.
//! - A node applies an `M` inside the bundle's transaction ([`apply_at_node`]): the SQL, the
//!   capture triggers regenerated for the new schema at commit, and its pending local changes
//!   translated ([`Translation`]: renamed tables and columns followed, dropped columns'
//!   values dropped). A migration needing a newer software level than the node's waits: the
//!   bundle is held with the reason until the upgrade is installed.
//! - Every bundle carries `[extensions.schema] version` (and `schema_checksum`): the schema
//!   its first change was captured under; central's also carry `latest`, central's own
//!   version. A receiver applies changes captured under its own schema, translates changes
//!   captured under an older schema it migrated from, and holds anything else.
//!
//! One concern a file: `stream` (the schema a bundle says), `record` (a migration as a
//! change), `translate` (older changes to the current schema), `apply`, `submit`
//! (from a developer's site), `folder` (the history under version control) and `exec`
//! (a migration's executable step).

mod apply;
mod exec;
mod folder;
mod record;
pub(crate) mod stream;
mod submit;
mod translate;

pub use apply::*;
pub use exec::*;
pub use folder::*;
pub use record::*;
pub use stream::*;
pub use submit::*;
pub use translate::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, Op};
    use crate::evolve::history::{self, Migration};
    use crate::evolve::snapshot;
    use crate::value::Row;
    use rusqlite::Connection;
    use serde_json::Value as Json;
    use std::collections::BTreeMap;

    fn migration(renames: &[&str]) -> Migration {
        Migration {
            version: 2,
            name: "m".into(),
            sql: "SELECT 1".into(),
            checksum_before: "a".into(),
            checksum_after: "b".into(),
            software_level: "1".into(),
            foreign_keys_off: false,
            origin: "dev".into(),
            created: 5,
            applied: None,
            renames: renames.iter().map(|s| s.to_string()).collect(),
            exec: None,
        }
    }

    #[test]
    fn an_executable_step_is_checked_and_its_signature_binds_the_migration() {
        let mut m = migration(&[]);
        let admin = berth_bundle::SecretKey::generate();
        let mut step =
            history::ExecStep::new(vec!["sh".into(), "x.sh".into()], "x.sh", b"exit 0\n").unwrap();
        assert!(!step.signed(&m), "unsigned");
        step.admin_key = admin.public().to_hex();
        step.signature = hex::encode(admin.sign(&step.statement(&m)));
        assert!(step.signed(&m));
        // The signature covers the SQL and the program.
        m.sql = "DROP TABLE t".into();
        assert!(!step.signed(&m));
        let mut other = step.clone();
        other.program = hex::encode(b"rm -rf /\n");
        assert!(other.check().is_err(), "program no longer matches its hash");
        for bad in ["../x.sh", ".hidden", "a/b", "c:x"] {
            assert!(
                history::ExecStep::new(vec!["sh".into()], bad, b"x").is_err(),
                "{bad}"
            );
        }
        assert!(history::ExecStep::new(vec![], "x.sh", b"x").is_err());
        assert!(
            history::ExecStep::new(
                vec!["sh".into()],
                "x.sh",
                &vec![0u8; history::MAX_PROGRAM + 1]
            )
            .is_err()
        );
        // It travels in the migration record.
        m.exec = Some(step);
        let mut ch = change("", Op::M, &[], &[]);
        ch.new = Some(to_row(&m));
        assert_eq!(from_change(&ch).unwrap(), m);
    }

    fn change(t: &str, op: Op, old: &[(&str, i64)], new: &[(&str, i64)]) -> Change {
        let row = |cols: &[(&str, i64)]| -> Option<Row> {
            (!cols.is_empty()).then(|| {
                cols.iter()
                    .map(|(c, v)| (c.to_string(), Json::from(*v)))
                    .collect()
            })
        };
        Change {
            pos: 1,
            t: t.into(),
            k: vec![Json::from(1)],
            op,
            old: row(old),
            new: row(new),
            o: None,
            c: 0,
            ack: None,
            seen: None,
        }
    }

    #[test]
    fn translation_follows_renames_and_drops_what_is_gone() {
        let after = snapshot::from_sql(
            "CREATE TABLE Deal(id INTEGER PRIMARY KEY, owner TEXT, amount REAL);
             CREATE TABLE kept(id INTEGER PRIMARY KEY, v);",
        )
        .unwrap();
        // opty became Deal; its sales_rep became owner (hint by the old table name); note
        // was dropped; gone was dropped.
        let tr = Translation::new(&migration(&["opty=Deal", "opty.sales_rep=owner"]), &after);
        let ch = tr
            .change(change(
                "opty",
                Op::U,
                &[("sales_rep", 1), ("note", 2)],
                &[("id", 1), ("sales_rep", 3), ("note", 4), ("amount", 5)],
            ))
            .unwrap();
        assert_eq!(ch.t, "Deal");
        assert_eq!(
            ch.old.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["owner"]
        );
        assert_eq!(
            ch.new.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["amount", "id", "owner"]
        );
        assert!(
            tr.change(change("gone", Op::D, &[("id", 1)], &[]))
                .is_none()
        );
        let kept = tr
            .change(change("KEPT", Op::I, &[], &[("id", 1), ("V", 2)]))
            .unwrap();
        assert_eq!(kept.t, "kept");
        assert_eq!(
            kept.new.unwrap().keys().cloned().collect::<Vec<_>>(),
            vec!["id", "v"]
        );
        // The hint may name the table by its new name too.
        let tr = Translation::new(&migration(&["opty=Deal", "Deal.sales_rep=owner"]), &after);
        assert_eq!(tr.column("Deal", "SALES_REP").as_deref(), Some("owner"));
        // Markers, statements and migrations pass untouched.
        let m = change("", Op::A, &[], &[]);
        assert_eq!(tr.change(m.clone()), Some(m));
    }

    #[test]
    fn the_log_translation_keeps_what_is_no_row() {
        let after =
            snapshot::from_sql("CREATE TABLE Deal(id TEXT PRIMARY KEY, owner TEXT);").unwrap();
        let tr = Translation::new(&migration(&["opty=Deal", "opty.sales_rep=owner"]), &after);
        let conn = Connection::open_in_memory().unwrap();
        crate::store::install(&conn).unwrap();
        conn.execute_batch(
            r#"INSERT INTO berth_log(pos, tbl, pk, op, old, new) VALUES
                 (1, 'opty', '["a"]', 'D', '{"id":"a","sales_rep":"x"}', NULL),
                 (2, 'opty', '["b"]', 'I', '["a"]', NULL),
                 (3, 'opty', '["c"]', 'P', '{"id":"c","sales_rep":"y"}', 'void'),
                 (4, 'opty', '["d"]', 'U', '{"id":"d","sales_rep":"z"}', '{"id":"d","sales_rep":"w"}');"#,
        )
        .unwrap();
        tr.log(&conn).unwrap();
        let rows: Vec<(String, Option<String>, Option<String>)> = conn
            .prepare("SELECT tbl, old, new FROM berth_log ORDER BY pos")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let deal = |old: Option<&str>, new: Option<&str>| {
            (
                "Deal".to_string(),
                old.map(String::from),
                new.map(String::from),
            )
        };
        assert_eq!(
            rows,
            vec![
                deal(Some(r#"{"id":"a","owner":"x"}"#), None),
                // A key change's mark (the old key) and a settled pre-image's `void`.
                deal(Some(r#"["a"]"#), None),
                deal(Some(r#"{"id":"c","owner":"y"}"#), Some("void")),
                deal(
                    Some(r#"{"id":"d","owner":"z"}"#),
                    Some(r#"{"id":"d","owner":"w"}"#)
                ),
            ]
        );
    }

    #[test]
    fn a_migration_record_round_trips_and_malformed_ones_are_named() {
        let m = migration(&["t.a=b"]);
        let mut ch = change("", Op::M, &[], &[]);
        ch.new = Some(to_row(&m));
        assert_eq!(from_change(&ch).unwrap(), m);
        let cases: [(&str, Json, &str); 4] = [
            ("version", Json::from(0), "not positive"),
            ("version", Json::from("2"), "without version"),
            ("renames", Json::from("not json"), "renames"),
            ("renames", Json::from(r#"["=x"]"#), "rename"),
        ];
        for (field, value, expect) in cases {
            let mut bad = ch.clone();
            if let Some(r) = bad.new.as_mut() {
                r.insert(field.into(), value);
            }
            let err = from_change(&bad).unwrap_err();
            assert!(err.contains(expect), "{field}: {err}");
        }
        let mut missing = ch.clone();
        if let Some(r) = missing.new.as_mut() {
            r.remove("sql");
        }
        assert!(from_change(&missing).unwrap_err().contains("sql"));
        ch.new = None;
        assert!(from_change(&ch).is_err());
        assert!(ch.check().is_err());
    }

    #[test]
    fn the_schema_extension_reads_back_and_rejects_nonsense() {
        let mut m = BTreeMap::new();
        assert_eq!(read_extensions(&m), None);
        m.insert(EXTENSION.to_string(), extension(3, Some(5)));
        assert_eq!(read_extensions(&m), Some((3, Some(5))));
        m.insert(EXTENSION.into(), extension(-1, None));
        assert_eq!(read_extensions(&m), None);
        m.insert(EXTENSION.into(), toml::Value::String("3".into()));
        assert_eq!(read_extensions(&m), None);
    }
}
