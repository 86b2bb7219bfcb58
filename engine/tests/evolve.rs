//! Schema diff to migration: each case builds a real SQLite file with a schema and rows,
//! diffs it against a target schema, applies the plan, and checks that the migrated schema's
//! snapshot equals the target's exactly and that the rows are kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::evolve::diff::{DiffOptions, Plan, StepKind, diff};
use berth_engine::evolve::{Error, apply, snapshot};
use rusqlite::Connection;

struct Case {
    name: &'static str,
    from: &'static str,
    data: &'static str,
    to: &'static str,
    renames: &'static [&'static str],
    /// `--fill` arguments.
    fills: &'static [&'static str],
    destructive: bool,
    /// (query returning one value, expected text of it)
    checks: &'static [(&'static str, &'static str)],
    /// A step kind the plan must contain.
    expect: Option<StepKind>,
    /// SQL run on the migrated database before the checks (to see triggers fire).
    after: &'static str,
}

const fn case(
    name: &'static str,
    from: &'static str,
    data: &'static str,
    to: &'static str,
) -> Case {
    Case {
        name,
        from,
        data,
        to,
        renames: &[],
        fills: &[],
        destructive: false,
        checks: &[],
        expect: None,
        after: "",
    }
}

fn open(dir: &tempfile::TempDir, name: &str) -> Connection {
    let c = Connection::open(dir.path().join(format!("{name}.db"))).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;")
        .unwrap();
    c
}

fn value(c: &Connection, q: &str) -> String {
    c.query_row(q, [], |r| {
        Ok(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Null => "NULL".to_string(),
            rusqlite::types::ValueRef::Integer(i) => i.to_string(),
            rusqlite::types::ValueRef::Real(f) => f.to_string(),
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            rusqlite::types::ValueRef::Blob(b) => format!("blob{}", b.len()),
        })
    })
    .unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn options(c: &Case, db: &Connection, before: &snapshot::Snapshot) -> DiffOptions {
    let nonempty = snapshot::nonempty_tables(db, before).unwrap();
    DiffOptions {
        allow_destructive: c.destructive,
        renames: c.renames.iter().map(|r| r.parse().unwrap()).collect(),
        fills: c.fills.iter().map(|f| f.parse().unwrap()).collect(),
        empty_tables: before
            .tables
            .iter()
            .map(|t| t.name.to_ascii_lowercase())
            .filter(|n| !nonempty.iter().any(|m| m.eq_ignore_ascii_case(n)))
            .collect(),
    }
}

fn run(c: &Case) -> Plan {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, "site");
    db.execute_batch(c.from).unwrap();
    db.execute_batch(c.data).unwrap();
    let before = snapshot::read(&db).unwrap();
    let target = snapshot::from_sql(c.to).unwrap();
    let plan = diff(&before, &target, &options(c, &db, &before))
        .unwrap_or_else(|e| panic!("{}: diff: {e}", c.name));
    apply::apply(&db, &plan)
        .unwrap_or_else(|e| panic!("{}: apply: {e}\n{}", c.name, plan.script()));
    let after = snapshot::read(&db).unwrap();
    assert_eq!(
        after.canonical().unwrap(),
        target.canonical().unwrap(),
        "{}: migrated schema differs from the target\n{}",
        c.name,
        plan.script()
    );
    assert_eq!(after.checksum().unwrap(), plan.checksum_after, "{}", c.name);
    // Nothing left to do.
    let again = diff(&after, &target, &DiffOptions::default()).unwrap();
    assert!(
        again.is_empty(),
        "{}: second diff not empty: {:?}",
        c.name,
        again.steps
    );
    db.execute_batch(c.after).unwrap();
    for (q, want) in c.checks {
        assert_eq!(&value(&db, q), want, "{}: {q}\n{}", c.name, plan.script());
    }
    assert_eq!(
        value(&db, "PRAGMA foreign_keys"),
        "1",
        "{}: foreign keys restored",
        c.name
    );
    assert_eq!(
        value(&db, "SELECT count(*) FROM pragma_foreign_key_check"),
        "0",
        "{}",
        c.name
    );
    if let Some(k) = c.expect {
        assert!(
            plan.steps.iter().any(|s| s.kind == k),
            "{}: expected a {k:?} step in\n{}",
            c.name,
            plan.script()
        );
    }
    plan
}

const T: &str = "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER);";
const T_ROWS: &str = "INSERT INTO t VALUES ('x', 'alpha', 1), ('y', 'beta', 2), ('z', NULL, 3);";
const T_ALL: &str = "SELECT group_concat(id || ':' || ifnull(a, '-') || ':' || n, ',') FROM (SELECT * FROM t ORDER BY id)";

/// A schema with a comment in every position SQLite keeps one: inside the stored text of a
/// table (after `(`, after a column, between constraints, inside a CHECK and a type, before
/// `)`), of an index, a view and a trigger, and at their ends; and literals whose spaces
/// matter.
macro_rules! commented {
    ($n_type:literal, $extra:literal) => {
        concat!(
            "CREATE TABLE t( -- after the opening paren
  id TEXT PRIMARY KEY, -- the key
  /* before a column */ name TEXT NOT NULL /* between constraints */ DEFAULT 'a  b', -- spaces in a literal
  n ", $n_type, " CHECK (n /* inside a CHECK */ >= 0 -- a line comment inside a CHECK
  ),
  code VARCHAR /* inside a type */ (10),
  note TEXT CHECK (note <> '   ')", $extra, " -- before the closing paren
  -- a line of its own
) /* after the closing paren */; -- at the end of the statement
CREATE INDEX t_n ON t(n -- inside an index
) WHERE n > 0; -- after an index
CREATE VIEW v AS SELECT id, -- inside a view
  name FROM t /* at the end of a view */;
CREATE TABLE log(id INTEGER PRIMARY KEY, k TEXT);
CREATE TRIGGER t_log AFTER INSERT ON t BEGIN -- inside a trigger
  INSERT INTO log(k) VALUES (NEW.id); /* between trigger statements */
  UPDATE t SET note = 'x' WHERE id = NEW.id -- a line comment before END
  ;
END; -- after a trigger
"
        )
    };
}
const COMMENTED: &str = commented!("INTEGER", "");
/// [`COMMENTED`] without its comments.
const UNCOMMENTED: &str = "CREATE TABLE t(id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT 'a  b',
  n INTEGER CHECK (n >= 0), code VARCHAR (10), note TEXT CHECK (note <> '   '));
CREATE INDEX t_n ON t(n) WHERE n > 0;
CREATE VIEW v AS SELECT id, name FROM t;
CREATE TABLE log(id INTEGER PRIMARY KEY, k TEXT);
CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log(k) VALUES (NEW.id);
  UPDATE t SET note = 'x' WHERE id = NEW.id; END;";
const COMMENTED_ROWS: &str = "INSERT INTO t(id, n, note) VALUES ('a', 1, 'p'), ('b', 2, NULL);";
const COMMENTED_ALL: &str = "SELECT group_concat(id || ':' || name || ':' || n || ':' || note, ',') FROM (SELECT * FROM t ORDER BY id)";

fn cases() -> Vec<Case> {
    vec![
        Case {
            fills: &["t.code='c-' || id"],
            checks: &[("SELECT group_concat(code, ',') FROM (SELECT code FROM t ORDER BY id)", "c-x,c-y,c-z"),
                      (T_ALL, "x:alpha:1,y:beta:2,z:-:3")],
            expect: Some(StepKind::Rebuild),
            ..case("a new NOT NULL UNIQUE column filled per row", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, code TEXT NOT NULL UNIQUE);")
        },
        Case {
            fills: &["t.a=upper(id) || n"],
            checks: &[(T_ALL, "x:alpha:1,y:beta:2,z:Z3:3")],
            expect: Some(StepKind::Rebuild),
            ..case("a column that becomes NOT NULL, its NULLs filled per row", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT NOT NULL, n INTEGER);")
        },
        Case {
            fills: &["t.label=ifnull(a, 'none')"],
            checks: &[("SELECT group_concat(label, ',') FROM (SELECT label FROM t ORDER BY id)", "alpha,beta,none")],
            expect: Some(StepKind::Rebuild),
            ..case("a new nullable column filled from the row", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, label TEXT);")
        },
        Case {
            checks: &[
                (COMMENTED_ALL, "a:a  b:1:x,b:a  b:2:x,c:a  b:3:x"),
                // The new column's literal keeps its spaces; the trigger still fires.
                ("SELECT group_concat(extra, ',') FROM t", "q  r,q  r,q  r"),
                ("SELECT count(*) FROM log", "3"),
            ],
            after: "INSERT INTO t(id, n) VALUES ('c', 3);",
            expect: Some(StepKind::AddColumn),
            ..case("comments everywhere: add a column", COMMENTED, COMMENTED_ROWS,
                commented!("INTEGER", ",\n  extra TEXT /* new */ DEFAULT 'q  r' -- a new column\n"))
        },
        Case {
            checks: &[
                (COMMENTED_ALL, "a:a  b:1.0:x,b:a  b:2.0:x,c:a  b:3.0:x"),
                // The recreated trigger ran for the new row; the default and the CHECK keep
                // their literals' spaces.
                ("SELECT count(*) FROM log", "3"),
                ("SELECT count(*) FROM pragma_table_xinfo('t') WHERE dflt_value = '''a  b'''", "1"),
                ("SELECT instr(sql, '<> ''   ''') > 0 FROM sqlite_master WHERE name = 't'", "1"),
            ],
            after: "INSERT INTO t(id, n) VALUES ('c', 3);",
            expect: Some(StepKind::Rebuild),
            ..case("comments everywhere: rebuild, literals keep their spaces", COMMENTED, COMMENTED_ROWS,
                commented!("REAL", ""))
        },
        Case {
            checks: &[("SELECT group_concat(ifnull(b, 'null'), ',') FROM t", "null,null,null")],
            expect: Some(StepKind::AddColumn),
            ..case("add a nullable column", T, T_ROWS, "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, b REAL);")
        },
        Case {
            checks: &[("SELECT group_concat(s, ',') FROM t", "new,new,new"), (T_ALL, "x:alpha:1,y:beta:2,z:-:3")],
            expect: Some(StepKind::AddColumn),
            ..case("add a NOT NULL column with a default", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, s TEXT NOT NULL DEFAULT 'new');")
        },
        Case {
            checks: &[("SELECT count(*) FROM t WHERE at IS NOT NULL", "3")],
            expect: Some(StepKind::Rebuild),
            ..case("add a column defaulting to CURRENT_TIMESTAMP (rebuild)", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, at TEXT DEFAULT CURRENT_TIMESTAMP);")
        },
        Case {
            renames: &["t.a=label"],
            checks: &[("SELECT group_concat(label, ',') FROM v", "alpha,beta"),
                      ("SELECT count(*) FROM t INDEXED BY t_label WHERE label = 'beta'", "1")],
            expect: Some(StepKind::RenameColumn),
            ..case("rename a column used by an index and a view",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_label ON t(a);
                 CREATE VIEW v AS SELECT a FROM t WHERE a IS NOT NULL ORDER BY a;", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, label TEXT, n INTEGER); CREATE INDEX t_label ON t(label);
                 CREATE VIEW v AS SELECT label FROM t WHERE label IS NOT NULL ORDER BY label;")
        },
        Case {
            renames: &["p=parent"],
            checks: &[("SELECT count(*) FROM c JOIN parent ON parent.id = c.p", "2")],
            expect: Some(StepKind::RenameTable),
            ..case("rename a table that has foreign-key children",
                "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES p(id));",
                "INSERT INTO p VALUES ('1'), ('2'); INSERT INTO c VALUES ('a', '1'), ('b', '2');",
                "CREATE TABLE parent(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES parent(id));")
        },
        Case {
            destructive: true,
            checks: &[("SELECT group_concat(id || n, ',') FROM t", "x1,y2,z3")],
            expect: Some(StepKind::DropColumn),
            ..case("drop a column", T, T_ROWS, "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER);")
        },
        Case {
            destructive: true,
            checks: &[("SELECT count(*) FROM sqlite_master WHERE name = 't_a'", "0"), ("SELECT sum(n) FROM t", "6")],
            expect: Some(StepKind::DropColumn),
            ..case("drop a column used by an index",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_a ON t(a, n);", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER);")
        },
        Case {
            destructive: true,
            checks: &[("SELECT sum(n) FROM t", "6")],
            expect: Some(StepKind::Rebuild),
            ..case("drop a column named in a CHECK (rebuild)",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, CHECK (a <> 'bad'));", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER);")
        },
        Case {
            checks: &[("SELECT group_concat(typeof(n) || n, ',') FROM t", "text1,text2,text3")],
            expect: Some(StepKind::Rebuild),
            ..case("widen a type INTEGER -> TEXT (rebuild)", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n TEXT);")
        },
        Case {
            destructive: true,
            checks: &[("SELECT group_concat(typeof(a), ',') FROM t", "integer,text,null")],
            expect: Some(StepKind::Rebuild),
            ..case("narrow a type TEXT -> INTEGER, allowed",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER);",
                "INSERT INTO t VALUES ('x', '12', 1), ('y', 'beta', 2), ('z', NULL, 3);",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a INTEGER, n INTEGER);")
        },
        Case {
            checks: &[("SELECT count(*) FROM c", "3"), ("SELECT count(*) FROM g", "2"),
                      ("SELECT group_concat(typeof(code), ',') FROM p", "text,text")],
            expect: Some(StepKind::Rebuild),
            ..case("rebuild a parent with ON DELETE CASCADE children: no cascade fires",
                "CREATE TABLE p(id TEXT PRIMARY KEY, code INTEGER);
                 CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT NOT NULL REFERENCES p(id) ON DELETE CASCADE);
                 CREATE TABLE g(id TEXT PRIMARY KEY, c TEXT REFERENCES c(id) ON DELETE CASCADE);",
                "INSERT INTO p VALUES ('1', 10), ('2', 20);
                 INSERT INTO c VALUES ('a', '1'), ('b', '1'), ('c', '2'); INSERT INTO g VALUES ('g1', 'a'), ('g2', 'c');",
                "CREATE TABLE p(id TEXT PRIMARY KEY, code TEXT);
                 CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT NOT NULL REFERENCES p(id) ON DELETE CASCADE);
                 CREATE TABLE g(id TEXT PRIMARY KEY, c TEXT REFERENCES c(id) ON DELETE CASCADE);")
        },
        Case {
            checks: &[(T_ALL, "x:alpha:1,y:beta:2,z:?:3")],
            expect: Some(StepKind::Rebuild),
            ..case("make a column NOT NULL with a default: NULLs take it", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT NOT NULL DEFAULT '?', n INTEGER);")
        },
        Case {
            checks: &[("SELECT count(*) FROM t", "3")],
            expect: Some(StepKind::Rebuild),
            ..case("add a CHECK constraint", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER CHECK (n > 0));")
        },
        Case {
            checks: &[("SELECT count(*) FROM t", "3"), ("SELECT count(*) FROM pragma_index_list('t') WHERE origin = 'u'", "1")],
            expect: Some(StepKind::Rebuild),
            ..case("add a UNIQUE constraint", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT UNIQUE, n INTEGER);")
        },
        Case {
            checks: &[("SELECT count(*) FROM t WHERE a = 'ALPHA'", "1")],
            expect: Some(StepKind::Rebuild),
            ..case("change a column's collation", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT COLLATE NOCASE, n INTEGER);")
        },
        Case {
            checks: &[("SELECT count(*) FROM t INDEXED BY t_big WHERE n > 1", "2")],
            expect: Some(StepKind::CreateIndex),
            ..case("add a partial index", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_big ON t(n) WHERE n > 1;")
        },
        Case {
            checks: &[("SELECT count(*) FROM t INDEXED BY t_big WHERE n > 2", "1")],
            expect: Some(StepKind::DropIndex),
            ..case("change a partial index's WHERE",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_big ON t(n) WHERE n > 1;", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_big ON t(n) WHERE n > 2;")
        },
        Case {
            checks: &[("SELECT total FROM totals", "6"), ("SELECT count(*) FROM audit", "1"),
                      ("SELECT count(*) FROM (SELECT 1 FROM t)", "3")],
            expect: Some(StepKind::CreateTrigger),
            after: "UPDATE t SET n = n WHERE id = 'x';",
            ..case("add a view and a trigger", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER);
                 CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT);
                 CREATE VIEW totals AS SELECT sum(n) AS total FROM t;
                 CREATE TRIGGER t_audit AFTER UPDATE ON t BEGIN INSERT INTO audit(what) VALUES (NEW.id); END;")
        },
        Case {
            checks: &[("SELECT group_concat(id, ',') FROM named", "x,y")],
            expect: Some(StepKind::CreateView),
            ..case("change a view",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE VIEW named AS SELECT id FROM t;", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE VIEW named AS SELECT id FROM t WHERE a IS NOT NULL;")
        },
        Case {
            expect: Some(StepKind::DropTrigger),
            ..case("remove a trigger",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER);
                 CREATE TRIGGER t_no AFTER DELETE ON t BEGIN SELECT RAISE(ABORT, 'no'); END;", T_ROWS, T)
        },
        Case {
            checks: &[("SELECT count(*) FROM u", "0")],
            expect: Some(StepKind::CreateTable),
            ..case("add a table", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE TABLE u(id TEXT PRIMARY KEY, t TEXT REFERENCES t(id));")
        },
        Case {
            destructive: true,
            expect: Some(StepKind::DropTable),
            ..case("drop a table",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE TABLE old(id TEXT PRIMARY KEY);",
                "INSERT INTO old VALUES ('1');", T)
        },
        Case {
            checks: &[("SELECT seq FROM sqlite_sequence WHERE name = 'seqd'", "50"),
                      ("SELECT group_concat(id || v, ',') FROM seqd", "1a,2b")],
            expect: Some(StepKind::Rebuild),
            ..case("rebuild an AUTOINCREMENT table: the counter is kept",
                "CREATE TABLE seqd(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);",
                "INSERT INTO seqd(id, v) VALUES (1, 'a'), (2, 'b'), (50, 'gone'); DELETE FROM seqd WHERE id = 50;",
                "CREATE TABLE seqd(id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL DEFAULT '');")
        },
        Case {
            checks: &[("SELECT count(*) FROM pragma_foreign_key_list('c')", "1")],
            expect: Some(StepKind::Rebuild),
            ..case("add a foreign key",
                "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT);",
                "INSERT INTO p VALUES ('1'); INSERT INTO c VALUES ('a', '1'), ('b', NULL);",
                "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES p(id));")
        },
        Case {
            checks: &[("SELECT on_delete FROM pragma_foreign_key_list('c')", "CASCADE"), ("SELECT count(*) FROM c", "1")],
            expect: Some(StepKind::Rebuild),
            ..case("change a foreign key's action",
                "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES p(id) ON DELETE SET NULL);",
                "INSERT INTO p VALUES ('1'); INSERT INTO c VALUES ('a', '1');",
                "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES p(id) ON DELETE CASCADE);")
        },
        Case {
            checks: &[(T_ALL, "x:alpha:1,y:beta:2,z:-:3")],
            expect: Some(StepKind::Rebuild),
            ..case("change the primary key to a composite one", T, T_ROWS,
                "CREATE TABLE t(id TEXT, a TEXT, n INTEGER, PRIMARY KEY (id, n));")
        },
        Case {
            checks: &[(T_ALL, "x:alpha:1,y:beta:2,z:-:3")],
            expect: Some(StepKind::Rebuild),
            ..case("make a table WITHOUT ROWID", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER) WITHOUT ROWID;")
        },
        Case {
            checks: &[(T_ALL, "x:alpha:1,y:beta:2,z:-:3")],
            expect: Some(StepKind::Rebuild),
            ..case("reorder columns", T, T_ROWS, "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER, a TEXT);")
        },
        Case {
            checks: &[("SELECT group_concat(twice, ',') FROM t", "2,4,6")],
            expect: Some(StepKind::AddColumn),
            ..case("add a virtual generated column", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, twice INTEGER AS (n * 2) VIRTUAL);")
        },
        Case {
            checks: &[("SELECT group_concat(twice, ',') FROM t", "2,4,6")],
            expect: Some(StepKind::Rebuild),
            ..case("add a stored generated column (rebuild)", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, twice INTEGER AS (n * 2) STORED);")
        },
        Case {
            checks: &[("SELECT dflt_value FROM pragma_table_info('t') WHERE name = 'n'", "7"), ("SELECT sum(n) FROM t", "6")],
            expect: Some(StepKind::Rebuild),
            ..case("change a default", T, T_ROWS, "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER DEFAULT 7);")
        },
        Case {
            renames: &["t=things", "things.a=label"],
            checks: &[("SELECT group_concat(label, ',') FROM things", "alpha,beta")],
            expect: Some(StepKind::RenameColumn),
            ..case("rename a table and one of its columns", T, T_ROWS,
                "CREATE TABLE things(id TEXT PRIMARY KEY, label TEXT, n INTEGER);")
        },
        Case {
            destructive: true,
            checks: &[("SELECT group_concat(quote(must), ',') FROM t", "'','',''")],
            expect: Some(StepKind::Rebuild),
            ..case("a new NOT NULL column without a default, allowed: rows get ''", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, must TEXT NOT NULL);")
        },
        Case {
            checks: &[("SELECT count(*) FROM t", "0")],
            expect: Some(StepKind::Rebuild),
            ..case("a new NOT NULL column without a default on an empty table", T, "",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, must TEXT NOT NULL);")
        },
        Case {
            checks: &[("SELECT group_concat(rowid || k, ',') FROM r", "7a,9b")],
            expect: Some(StepKind::Rebuild),
            ..case("implicit rowids are kept through a rebuild",
                "CREATE TABLE r(k TEXT PRIMARY KEY, v INTEGER);",
                "INSERT INTO r(rowid, k, v) VALUES (7, 'a', 1), (9, 'b', 2);",
                "CREATE TABLE r(k TEXT PRIMARY KEY, v TEXT);")
        },
        Case {
            checks: &[("SELECT count(*) FROM t INDEXED BY t_lower WHERE lower(a) = 'alpha'", "1")],
            expect: Some(StepKind::CreateIndex),
            ..case("add an expression index", T, T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE INDEX t_lower ON t(lower(a));")
        },
        Case {
            checks: &[("SELECT count(*) FROM log", "1")],
            after: "INSERT INTO t VALUES ('q', 'r', 's');",
            expect: Some(StepKind::Rebuild),
            ..case("triggers of a rebuilt table are recreated and fire",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE TABLE log(id INTEGER PRIMARY KEY, k TEXT);
                 CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log(k) VALUES (NEW.id); END;", "",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n TEXT); CREATE TABLE log(id INTEGER PRIMARY KEY, k TEXT);
                 CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO log(k) VALUES (NEW.id); END;")
        },
        Case {
            checks: &[("SELECT group_concat(id, ',') FROM over2", "y,z"), ("SELECT count(*) FROM nested", "2")],
            expect: Some(StepKind::Rebuild),
            ..case("views on a rebuilt table, and a view on a view, survive",
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER); CREATE VIEW over2 AS SELECT id FROM t WHERE n >= 2;
                 CREATE VIEW nested AS SELECT * FROM over2;", T_ROWS,
                "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n REAL); CREATE VIEW over2 AS SELECT id FROM t WHERE n >= 2;
                 CREATE VIEW nested AS SELECT * FROM over2;")
        },
    ]
}

#[test]
fn every_change_case_migrates_to_exactly_the_target_and_keeps_the_rows() {
    let cases = cases();
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut names = std::collections::BTreeSet::new();
    for c in &cases {
        assert!(names.insert(c.name), "duplicate case {}", c.name);
        run(c);
    }
}

#[test]
fn destructive_steps_are_refused_and_named() {
    for (from, to, what) in [
        (
            T,
            "CREATE TABLE t(id TEXT PRIMARY KEY, n INTEGER);",
            "drop column t.a",
        ),
        (
            "CREATE TABLE t(id TEXT PRIMARY KEY); CREATE TABLE u(id TEXT PRIMARY KEY);",
            "CREATE TABLE t(id TEXT PRIMARY KEY);",
            "drop table u",
        ),
        (
            T,
            "CREATE TABLE t(id TEXT PRIMARY KEY, a INTEGER, n INTEGER);",
            "narrow t.a from TEXT to INTEGER",
        ),
        (
            T,
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, m TEXT NOT NULL);",
            "NOT NULL without a default",
        ),
    ] {
        let a = snapshot::from_sql(from).unwrap();
        let b = snapshot::from_sql(to).unwrap();
        let err = diff(&a, &b, &DiffOptions::default()).unwrap_err();
        assert!(matches!(&err, Error::Destructive { .. }), "{err}");
        assert!(err.to_string().contains(what), "{err}");
    }
}

#[test]
fn a_migration_that_breaks_a_foreign_key_leaves_everything_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, "fk");
    db.execute_batch(
        "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT);
         INSERT INTO p VALUES ('1'); INSERT INTO c VALUES ('a', '1'), ('b', 'missing');",
    )
    .unwrap();
    let before = snapshot::read(&db).unwrap();
    let target = snapshot::from_sql(
        "CREATE TABLE p(id TEXT PRIMARY KEY); CREATE TABLE c(id TEXT PRIMARY KEY, p TEXT REFERENCES p(id));",
    )
    .unwrap();
    let plan = diff(&before, &target, &DiffOptions::default()).unwrap();
    let err = apply::apply(&db, &plan).unwrap_err();
    assert!(matches!(err, Error::ForeignKeys { .. }), "{err}");
    assert_eq!(snapshot::read(&db).unwrap(), before);
    assert_eq!(value(&db, "SELECT count(*) FROM c"), "2");
    assert_eq!(value(&db, "PRAGMA foreign_keys"), "1");
}

#[test]
fn a_migration_that_fails_halfway_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, "dup");
    db.execute_batch(&format!("{T} {T_ROWS} UPDATE t SET a = 'same';"))
        .unwrap();
    let before = snapshot::read(&db).unwrap();
    let target = snapshot::from_sql(
        "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT UNIQUE, n INTEGER, extra TEXT);",
    )
    .unwrap();
    let plan = diff(&before, &target, &DiffOptions::default()).unwrap();
    let err = apply::apply(&db, &plan).unwrap_err();
    assert!(matches!(err, Error::Apply { .. }), "{err}");
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_eq!(snapshot::read(&db).unwrap(), before);
    assert_eq!(value(&db, T_ALL), "x:same:1,y:same:2,z:same:3");
}

#[test]
fn berth_objects_are_not_part_of_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir, "berth");
    db.execute_batch(T).unwrap();
    let plain = snapshot::read(&db).unwrap();
    db.execute_batch(
        "CREATE TABLE berth_log(pos INTEGER PRIMARY KEY, x TEXT);
         CREATE TRIGGER berth_ins_t AFTER INSERT ON t BEGIN INSERT INTO berth_log(x) VALUES (NEW.id); END;
         CREATE INDEX berth_log_x ON berth_log(x);",
    )
    .unwrap();
    assert_eq!(
        snapshot::read(&db).unwrap().checksum().unwrap(),
        plain.checksum().unwrap()
    );
}

#[test]
fn sql_that_does_not_parse_is_a_clear_error() {
    let err = snapshot::from_sql("CREATE TABLE t(id TEXT PRIMARY KEY,, a)").unwrap_err();
    assert!(matches!(err, Error::BadSql { .. }), "{err}");
    assert!(err.to_string().contains("syntax error"), "{err}");
}

mod random {
    //! Random pairs of schemas: whatever the two are, the plan leads exactly to the second.
    use super::*;
    use proptest::prelude::*;

    const TYPES: &[&str] = &["TEXT", "INTEGER", "REAL", "BLOB", "NUMERIC"];

    #[derive(Debug, Clone)]
    struct Col {
        name: usize,
        ty: usize,
        not_null: bool,
        default: bool,
        nocase: bool,
    }

    #[derive(Debug, Clone)]
    struct Tbl {
        cols: Vec<Col>,
        index: Option<usize>,
        check: bool,
    }

    fn col() -> impl Strategy<Value = Col> {
        (
            0..6usize,
            0..TYPES.len(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(name, ty, not_null, default, nocase)| Col {
                name,
                ty,
                not_null,
                default,
                nocase,
            })
    }

    fn tbl() -> impl Strategy<Value = Tbl> {
        (
            proptest::collection::vec(col(), 0..5),
            proptest::option::of(0..6usize),
            any::<bool>(),
        )
            .prop_map(|(mut cols, index, check)| {
                let mut seen = std::collections::BTreeSet::new();
                cols.retain(|c| seen.insert(c.name));
                Tbl { cols, index, check }
            })
    }

    fn schema(tables: &[Option<Tbl>]) -> String {
        let mut out = String::new();
        for (i, t) in tables.iter().enumerate() {
            let Some(t) = t else { continue };
            let mut defs = vec!["id TEXT PRIMARY KEY".to_string()];
            for c in &t.cols {
                let mut d = format!("c{} {}", c.name, TYPES[c.ty]);
                if c.not_null {
                    d.push_str(" NOT NULL");
                }
                if c.default || c.not_null {
                    d.push_str(if TYPES[c.ty] == "TEXT" {
                        " DEFAULT 'd'"
                    } else {
                        " DEFAULT 0"
                    });
                }
                if c.nocase {
                    d.push_str(" COLLATE NOCASE");
                }
                defs.push(d);
            }
            if t.check {
                defs.push("CHECK (length(id) > 0)".into());
            }
            out.push_str(&format!("CREATE TABLE t{i}({});\n", defs.join(", ")));
            if let Some(ix) = t.index
                && t.cols.iter().any(|c| c.name == ix)
            {
                out.push_str(&format!("CREATE INDEX t{i}_c{ix} ON t{i}(c{ix});\n"));
            }
        }
        out
    }

    /// A stored value, exactly: its storage class and its bytes (a real's bit pattern).
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Cell {
        Null,
        Integer(i64),
        Real(u64),
        Text(Vec<u8>),
        Blob(Vec<u8>),
    }

    impl Cell {
        fn of(v: rusqlite::types::ValueRef<'_>) -> Cell {
            use rusqlite::types::ValueRef;
            match v {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(i) => Cell::Integer(i),
                ValueRef::Real(f) => Cell::Real(f.to_bits()),
                ValueRef::Text(t) => Cell::Text(t.to_vec()),
                ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
            }
        }
    }

    /// A value to store: every storage class, text that reads as a number (which a column's
    /// affinity converts) and reals that need 17 significant digits.
    fn stored() -> impl Strategy<Value = rusqlite::types::Value> {
        use rusqlite::types::Value;
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            (-3i64..3).prop_map(Value::Integer),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::Real),
            (1u64..1 << 52).prop_map(|m| Value::Real(1.0 + m as f64 * f64::EPSILON)),
            (-3i64..3).prop_map(|i| Value::Real(i as f64)),
            prop_oneof![
                Just("12".to_string()),
                Just("1.5".to_string()),
                Just("0.30000000000000004".to_string()),
                Just(" 7 ".to_string()),
                Just("1e3".to_string()),
                "[a-z\u{e9}]{0,5}",
            ]
            .prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..5).prop_map(Value::Blob),
        ]
    }

    /// Every cell of every row of `table`, by key.
    fn cells(db: &Connection, table: &str) -> Vec<(String, Vec<(String, Cell)>)> {
        let mut st = db
            .prepare(&format!("SELECT * FROM {table} ORDER BY id"))
            .unwrap();
        let names: Vec<String> = st.column_names().map(|c| c.to_string()).collect();
        let mut rows = st.query([]).unwrap();
        let mut out = Vec::new();
        while let Some(r) = rows.next().unwrap() {
            let mut row: Vec<(String, Cell)> = names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), Cell::of(r.get_ref(i).unwrap())))
                .collect();
            row.sort();
            let id = match &row.iter().find(|(n, _)| n == "id").unwrap().1 {
                Cell::Text(t) => String::from_utf8(t.clone()).unwrap(),
                other => panic!("id {other:?}"),
            };
            out.push((id, row));
        }
        out
    }

    const ROWS: [&str; 2] = ["r1", "r2"];
    /// Values drawn per table, row and column name (tables 0..3, names c0..c5).
    const CELLS: usize = 3 * ROWS.len() * 6;

    fn cell_index(table: usize, row: usize, name: usize) -> usize {
        (table * ROWS.len() + row) * 6 + name
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Whatever the two schemas, the plan leads exactly to the second, and every cell of
        /// every row that both schemas hold a column for arrives with its storage class and
        /// value as the target column stores it (the column's affinity applied, a NULL in a
        /// column that became NOT NULL filled with its default); new columns hold their
        /// defaults.
        #[test]
        fn any_pair_of_schemas_migrates_exactly(
            a in proptest::collection::vec(proptest::option::of(tbl()), 1..4),
            b in proptest::collection::vec(proptest::option::of(tbl()), 1..4),
            values in proptest::collection::vec(stored(), CELLS),
        ) {
            let (from, to) = (schema(&a), schema(&b));
            let dir = tempfile::tempdir().unwrap();
            let db = open(&dir, "p");
            db.execute_batch(&from).unwrap();
            let before = snapshot::read(&db).unwrap();
            // The rows, every column set (a NOT NULL column gets no NULL).
            for (i, t) in a.iter().enumerate() {
                let Some(t) = t else { continue };
                for (r, id) in ROWS.iter().enumerate() {
                    let mut cols = vec!["id".to_string()];
                    let mut vals = vec![rusqlite::types::Value::Text(id.to_string())];
                    for c in &t.cols {
                        let v = values[cell_index(i, r, c.name)].clone();
                        cols.push(format!("c{}", c.name));
                        vals.push(if c.not_null && v == rusqlite::types::Value::Null {
                            rusqlite::types::Value::Integer(7)
                        } else {
                            v
                        });
                    }
                    let marks = vec!["?"; cols.len()].join(", ");
                    db.execute(
                        &format!("INSERT INTO t{i} ({}) VALUES ({marks})", cols.join(", ")),
                        rusqlite::params_from_iter(vals),
                    )
                    .unwrap();
                }
            }
            // What the rows must become: the stored values of the columns both schemas
            // have, written into a fresh database of the target schema.
            let expected_db = Connection::open_in_memory().unwrap();
            expected_db.execute_batch(&to).unwrap();
            for (i, t) in b.iter().enumerate() {
                let Some(t) = t else { continue };
                let Some(Some(was)) = a.get(i) else { continue };
                for (id, row) in cells(&db, &format!("t{i}")) {
                    let mut cols = vec!["id".to_string()];
                    let mut vals = vec![rusqlite::types::Value::Text(id)];
                    for c in t.cols.iter().filter(|c| was.cols.iter().any(|w| w.name == c.name)) {
                        let name = format!("c{}", c.name);
                        let v = match &row.iter().find(|(n, _)| *n == name).unwrap().1 {
                            Cell::Null if c.not_null => continue,
                            Cell::Null => rusqlite::types::Value::Null,
                            Cell::Integer(i) => rusqlite::types::Value::Integer(*i),
                            Cell::Real(f) => rusqlite::types::Value::Real(f64::from_bits(*f)),
                            Cell::Text(s) => rusqlite::types::Value::Text(String::from_utf8(s.clone()).unwrap()),
                            Cell::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
                        };
                        cols.push(name);
                        vals.push(v);
                    }
                    let marks = vec!["?"; cols.len()].join(", ");
                    expected_db
                        .execute(
                            &format!("INSERT INTO t{i} ({}) VALUES ({marks})", cols.join(", ")),
                            rusqlite::params_from_iter(vals),
                        )
                        .unwrap();
                }
            }
            let target = snapshot::from_sql(&to).unwrap();
            let plan = diff(&before, &target, &DiffOptions { allow_destructive: true, ..DiffOptions::default() }).unwrap();
            apply::apply(&db, &plan).unwrap();
            prop_assert_eq!(snapshot::read(&db).unwrap().canonical().unwrap(), target.canonical().unwrap());
            for t in &target.tables {
                let (got, want) = (cells(&db, &t.name), cells(&expected_db, &t.name));
                if before.table(&t.name).is_some() {
                    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
                    prop_assert_eq!(ids, ROWS.to_vec(), "{} lost or gained rows", &t.name);
                }
                prop_assert_eq!(got, want, "the cells of {} after\n{}\nto\n{}", &t.name, &from, &to);
            }
        }
    }
}

#[test]
fn a_migration_made_on_a_developer_copy_applies_at_a_site_with_capture() {
    use berth_engine::evolve::diff::Rename;
    use berth_engine::evolve::history::{self, NewMigration};
    use berth_engine::site::{CentralInit, Site};
    let dir = tempfile::tempdir().unwrap();
    let s1 = "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER);";
    std::fs::write(dir.path().join("s1.sql"), s1).unwrap();
    let (hq, _) = Site::init_central(&CentralInit {
        dir: &dir.path().join("hq"),
        name: None,
        schema: &dir.path().join("s1.sql"),
        docking: None,
        data: None,
    })
    .unwrap();
    hq.conn.execute_batch(T_ROWS).unwrap();
    assert_eq!(
        value(&hq.conn, "SELECT count(*) FROM berth_log"),
        "3",
        "captured"
    );
    // The developer's copy: plain SQLite, the schema changed by hand.
    let dev = open(&dir, "dev");
    dev.execute_batch(s1).unwrap();
    history::record(&dev, false).unwrap();
    dev.execute_batch(
        "ALTER TABLE t RENAME COLUMN a TO label; ALTER TABLE t DROP COLUMN n;
         ALTER TABLE t ADD COLUMN z TEXT DEFAULT 'q';",
    )
    .unwrap();
    let m = history::create_migration(
        &dev,
        &NewMigration {
            name: "label",
            software_level: "2",
            origin: "dev",
            diff: DiffOptions {
                allow_destructive: true,
                renames: vec![Rename::Column {
                    table: "t".into(),
                    from: "a".into(),
                    to: "label".into(),
                }],
                ..DiffOptions::default()
            },
        },
    )
    .unwrap();
    assert_eq!(m.version, 1);
    assert_eq!(history::migrations(&dev).unwrap(), vec![m.clone()]);
    // At the site: capture triggers name `n`, yet the column drops; capture follows.
    let logged = value(&hq.conn, "SELECT count(*) FROM berth_log");
    history::apply_migration(&hq.conn, &m).unwrap();
    assert_eq!(
        snapshot::read(&hq.conn).unwrap().checksum().unwrap(),
        m.checksum_after
    );
    assert_eq!(history::version(&hq.conn).unwrap(), 1);
    assert_eq!(
        value(
            &hq.conn,
            "SELECT group_concat(id || ':' || ifnull(label, '-') || ':' || z, ',') FROM t"
        ),
        "x:alpha:q,y:beta:q,z:-:q"
    );
    assert_eq!(
        value(&hq.conn, "SELECT count(*) FROM berth_log"),
        logged,
        "migration rows are not journaled"
    );
    hq.conn
        .execute_batch("UPDATE t SET label = 'gamma' WHERE id = 'x'")
        .unwrap();
    let old = value(&hq.conn, "SELECT old FROM berth_log WHERE op = 'U'");
    assert!(
        old.contains("\"label\":\"alpha\"")
            && old.contains("\"z\":\"q\"")
            && !old.contains("\"n\""),
        "{old}"
    );
    assert_eq!(
        value(&hq.conn, "SELECT cols FROM berth_tables WHERE name = 't'"),
        "[\"id\",\"label\",\"z\"]"
    );
    // The same migration twice is refused, and changes nothing.
    let err = history::apply_migration(&hq.conn, &m).unwrap_err();
    assert!(matches!(err, Error::OutOfOrder { .. }), "{err}");
}

#[test]
fn a_commented_schema_has_the_checksum_of_the_same_schema_without_comments() {
    let commented = snapshot::from_sql(COMMENTED).unwrap();
    let plain = snapshot::from_sql(UNCOMMENTED).unwrap();
    assert_eq!(
        commented.canonical().unwrap(),
        plain.canonical().unwrap(),
        "comments are not part of the schema"
    );
    // The stored statements keep their comments and line breaks, so each still runs: the
    // snapshot recreates the schema exactly.
    let t = commented.table("t").unwrap();
    assert!(t.sql.contains("-- the key\n"), "{}", t.sql);
    assert!(
        t.sql.contains("'a  b'") && t.sql.contains("'   '"),
        "{}",
        t.sql
    );
    let copy = snapshot::materialize(&commented).unwrap();
    assert_eq!(
        snapshot::read(&copy).unwrap().checksum().unwrap(),
        plain.checksum().unwrap()
    );
    // A script of the statements (each followed by `;`, as a plan prints them) runs too: no
    // trailing `--` comment swallows the `;`.
    let script: String = commented
        .create_sql()
        .iter()
        .map(|s| format!("{s};\n"))
        .collect();
    assert!(
        !script.contains("-- at the end of the statement"),
        "{script}"
    );
    let again = snapshot::from_sql(&script).unwrap();
    assert_eq!(again.checksum().unwrap(), plain.checksum().unwrap());
}

#[test]
fn whitespace_inside_literals_is_part_of_the_schema() {
    let a =
        snapshot::from_sql("CREATE TABLE t(id TEXT PRIMARY KEY, s TEXT DEFAULT 'a  b')").unwrap();
    let b =
        snapshot::from_sql("CREATE TABLE t(id TEXT PRIMARY KEY, s TEXT DEFAULT 'a b')").unwrap();
    assert_ne!(a.checksum().unwrap(), b.checksum().unwrap());
}

/// The checksum of a schema without comments is what earlier builds recorded (sites keep
/// their recorded checksums across this change).
#[test]
fn the_checksum_of_a_schema_without_comments_is_unchanged() {
    let s = snapshot::from_sql(UNCOMMENTED).unwrap();
    assert_eq!(s.checksum().unwrap(), PINNED_UNCOMMENTED);
}
/// Computed by the build before this change (main at daa472e, `berth schema snapshot`).
const PINNED_UNCOMMENTED: &str = "c27b47f9eb8b2ba90ca4a4e3c457f40f9f990ac31df520a6b88f8d56a7e35a8d";

#[test]
fn the_zero_fill_is_refused_where_it_cannot_apply_and_says_how_to_fill() {
    for (to, what) in [
        (
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, code TEXT NOT NULL UNIQUE);",
            "new column t.code is in the primary key or a UNIQUE constraint",
        ),
        (
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, code TEXT NOT NULL);
             CREATE UNIQUE INDEX t_code ON t(code);",
            "new column t.code is in the primary key or a UNIQUE constraint",
        ),
        (
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, code TEXT NOT NULL CHECK (length(code) = 3));",
            "CHECK (length(code) = 3) refuses the zero ''",
        ),
        (
            "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, k INT NOT NULL CHECK (k > 0));",
            "CHECK (k > 0) refuses the zero 0",
        ),
    ] {
        let a = snapshot::from_sql(T).unwrap();
        let b = snapshot::from_sql(to).unwrap();
        // Refused even with destructive steps allowed: the plan could never apply.
        let err = diff(
            &a,
            &b,
            &DiffOptions {
                allow_destructive: true,
                ..DiffOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(&err, Error::Unfillable { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(what), "{msg}");
        assert!(msg.contains("--fill TABLE.COLUMN=SQL-EXPR"), "{msg}");
    }
    // A zero that satisfies the column is still only a destructive step.
    let a = snapshot::from_sql(T).unwrap();
    let b = snapshot::from_sql(
        "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, k INT NOT NULL CHECK (k >= 0));",
    )
    .unwrap();
    let err = diff(&a, &b, &DiffOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Destructive { .. }) && err.to_string().contains("--fill t.k="),
        "{err}"
    );
}

#[test]
fn a_fill_that_cannot_fit_is_refused_before_anything_runs() {
    let a = snapshot::from_sql(T).unwrap();
    let b = snapshot::from_sql(
        "CREATE TABLE t(id TEXT PRIMARY KEY, a TEXT, n INTEGER, code TEXT NOT NULL UNIQUE CHECK (code <> 'no'));",
    )
    .unwrap();
    for (fill, what) in [
        ("t.code='no' || ''", "CHECK (code <> 'no')"),
        ("t.code='same'", "every row the same value"),
        ("t.code=nosuch || id", "no such column: nosuch"),
        ("t.code=hex(randomblob(4))", "not deterministic"),
        ("t.a=upper(id)", "neither a new"),
        ("t.nope=1", "has no column nope"),
        ("u.code=1", "no table u"),
    ] {
        let err = diff(
            &a,
            &b,
            &DiffOptions {
                fills: vec![fill.parse().unwrap()],
                ..DiffOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(&err, Error::BadFill { .. }), "{fill}: {err}");
        assert!(err.to_string().contains(what), "{fill}: {err}");
    }
}
