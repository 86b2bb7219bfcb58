//! Issue 17, paths 1-3, through the binary on the sales sample: a node's write never makes an
//! instance it did not hold visible to it or to another node, unless the docking model grants
//! the link (SPEC 2.10, "Links"). Each write is made with the system `sqlite3` shell at the
//! node, as a user would; each refusal is a `denied` conflict at central, undone at the
//! writer, with central and every other node unchanged.

use crate::support::{berth, samples, shell_exec};
use std::path::PathBuf;

/// Central `hq` with the sales sample and nodes keith (E1: O1, O4, A1, A3, A5, Q1, Q4) and
/// carl (E2: O2, A2, A4, Q2), both holding their extracts.
struct Sales {
    _d: tempfile::TempDir,
    root: PathBuf,
    hq: PathBuf,
    via: PathBuf,
}

impl Sales {
    fn new(docking: &str) -> Sales {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_path_buf();
        let via = root.join("usb");
        std::fs::create_dir_all(&via).unwrap();
        std::fs::write(root.join("docking.toml"), docking).unwrap();
        let hq = root.join("hq");
        let s = samples();
        berth()
            .args(["init", "central"])
            .arg(&hq)
            .arg("--schema")
            .arg(s.join("schema.sql"))
            .arg("--data")
            .arg(s.join("data.sql"))
            .arg("--docking")
            .arg(root.join("docking.toml"))
            .assert()
            .success();
        let sales = Sales {
            _d: d,
            root,
            hq,
            via: via.clone(),
        };
        for (name, emp) in [("keith", "E1"), ("carl", "E2")] {
            berth()
                .args(["init", "node"])
                .arg(sales.site(name))
                .args(["--name", name, "--via"])
                .arg(&via)
                .assert()
                .success();
            berth()
                .args(["node", "add", name, "--attr", &format!("employee={emp}")])
                .arg("--site")
                .arg(&sales.hq)
                .arg("--via")
                .arg(&via)
                .assert()
                .success();
            sales.dock(name);
        }
        sales
    }

    fn site(&self, name: &str) -> PathBuf {
        if name == "hq" {
            self.hq.clone()
        } else {
            self.root.join(name)
        }
    }

    fn dock(&self, name: &str) {
        berth()
            .args(["dock", "--site"])
            .arg(self.site(name))
            .arg("--via")
            .arg(&self.via)
            .assert()
            .success();
    }

    /// The writer's bundle to central, central's answer back, and to the other node.
    fn round(&self, writer: &str) {
        self.dock(writer);
        self.dock("hq");
        self.dock("keith");
        self.dock("carl");
    }

    /// Writes through the sqlite3 shell, a foreign client (foreign keys off, its default:
    /// the rows a hostile write names are not at the node).
    fn shell(&self, site: &str, sql: &str) {
        shell_exec(&self.site(site).join("data.db"), sql);
    }

    fn query(&self, site: &str, q: &str) -> String {
        let c = rusqlite::Connection::open(self.site(site).join("data.db")).unwrap();
        c.query_row(q, [], |r| r.get::<_, Option<String>>(0))
            .unwrap()
            .unwrap_or_default()
    }

    fn count(&self, site: &str, q: &str) -> i64 {
        let c = rusqlite::Connection::open(self.site(site).join("data.db")).unwrap();
        c.query_row(q, [], |r| r.get(0)).unwrap()
    }

    /// Every user row of a site, as text, table by table.
    fn snapshot(&self, site: &str) -> Vec<String> {
        let c = rusqlite::Connection::open(self.site(site).join("data.db")).unwrap();
        let tables: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'berth%' AND name NOT LIKE 'sqlite%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut out = Vec::new();
        for t in tables {
            let mut st = c
                .prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1, 2"))
                .unwrap();
            let n = st.column_count();
            let rows = st
                .query_map([], |r| {
                    let vals: Vec<String> = (0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect();
                    Ok(format!("{t}: {}", vals.join(", ")))
                })
                .unwrap()
                .map(Result::unwrap);
            out.extend(rows);
        }
        out
    }

    /// The `denied` conflicts central recorded for `node`, as `table key: resolution`.
    fn denied(&self, node: &str) -> Vec<String> {
        let c = rusqlite::Connection::open(self.hq.join("data.db")).unwrap();
        c.prepare("SELECT tbl || ' ' || pk || ': ' || resolution FROM berth_conflicts WHERE node = ?1 AND kind = 'denied' ORDER BY id")
            .unwrap()
            .query_map([node], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

fn sample_model() -> String {
    std::fs::read_to_string(samples().join("docking.toml")).unwrap()
}

/// Runs `write` at keith, then a round; asserts it was refused: one `denied` conflict per
/// line of `refused` (each naming what it linked to), keith back to what it held, central
/// and carl unchanged.
fn refused(s: &Sales, write: &str, refused: &[&str]) {
    let (keith, hq, carl) = (s.snapshot("keith"), s.snapshot("hq"), s.snapshot("carl"));
    let before = s.denied("keith").len();
    s.shell("keith", write);
    s.round("keith");
    let denied = s.denied("keith");
    let new = &denied[before..];
    assert_eq!(new.len(), refused.len(), "{write}: {new:#?}");
    for (got, want) in new.iter().zip(refused) {
        assert!(got.contains(want), "{write}: {got} should say {want}");
        assert!(
            got.contains("does not hold") || got.contains("does not exist"),
            "{got}"
        );
    }
    assert_eq!(s.snapshot("hq"), hq, "{write}: central changed");
    assert_eq!(s.snapshot("carl"), carl, "{write}: carl changed");
    assert_eq!(s.snapshot("keith"), keith, "{write}: not undone at keith");
}

/// Path 1: re-pointing a foreign key. Keith sets his own opportunity's account to carl's
/// account A2: he would receive A2 with its contacts and activities.
#[test]
fn repointing_a_foreign_key_to_an_instance_not_held_is_refused() {
    let s = Sales::new(&sample_model());
    assert_eq!(
        s.count("keith", "SELECT count(*) FROM account WHERE id = 'A2'"),
        0
    );
    refused(
        &s,
        "UPDATE opty SET account_id = 'A2' WHERE id = 'O1'",
        &["opty [\"O1\"]: refused: it links opty [\"O1\"] to account [\"A2\"]"],
    );
    assert_eq!(
        s.query("hq", "SELECT account_id FROM opty WHERE id = 'O1'"),
        "A1"
    );
    assert_eq!(
        s.count(
            "keith",
            "SELECT count(*) FROM contact WHERE account_id = 'A2'"
        ),
        0
    );
    // Re-pointing among accounts keith holds is his to do.
    s.shell("keith", "UPDATE opty SET account_id = 'A3' WHERE id = 'O1'");
    s.round("keith");
    assert_eq!(
        s.query("hq", "SELECT account_id FROM opty WHERE id = 'O1'"),
        "A3"
    );
    assert_eq!(s.denied("keith").len(), 1);
}

/// Path 2: linking a new row to someone else's object. Keith inserts a quote he owns on
/// carl's opportunity O2 (the quote object rule would make O2 visible to him, with its
/// quotes, products and account), and re-points his own quote Q1 there.
#[test]
fn linking_a_quote_to_an_opportunity_not_held_is_refused() {
    let s = Sales::new(&sample_model());
    refused(
        &s,
        "INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('Q9', 'O2', 'E1', 'mine now')",
        &["quote [\"Q9\"]: refused: it links quote [\"Q9\"] to opportunity [\"O2\"]"],
    );
    assert_eq!(
        s.count("keith", "SELECT count(*) FROM opty WHERE id = 'O2'"),
        0
    );
    refused(
        &s,
        "UPDATE quote SET opty_id = 'O2' WHERE id = 'Q1'",
        &["quote [\"Q1\"]: refused: it links quote [\"Q1\"] to opportunity [\"O2\"]"],
    );
    // A quote on his own opportunity is accepted, and carl never sees it.
    s.shell(
        "keith",
        "INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('Q8', 'O1', 'E1', 'second offer')",
    );
    s.round("keith");
    assert_eq!(
        s.query("hq", "SELECT opty_id FROM quote WHERE id = 'Q8'"),
        "O1"
    );
    assert_eq!(
        s.count("carl", "SELECT count(*) FROM quote WHERE id = 'Q8'"),
        0
    );
    assert_eq!(s.denied("keith").len(), 2);
}

/// Path 3: writing into someone else's object. Keith inserts an activity on carl's
/// opportunity O2, and moves his own activity there: carl would receive both.
#[test]
fn writing_into_an_instance_not_held_is_refused() {
    let s = Sales::new(&sample_model());
    refused(
        &s,
        "INSERT INTO activity(id, opty_id, kind, note) VALUES ('X1', 'O2', 'call', 'planted')",
        &[
            "activity [\"X1\"]: refused: it links activity [\"X1\"] to opportunity [\"O2\"] (member activity)",
        ],
    );
    s.shell(
        "keith",
        "INSERT INTO activity(id, opty_id, kind, note) VALUES ('X2', 'O1', 'call', 'mine')",
    );
    s.round("keith");
    assert_eq!(
        s.query("hq", "SELECT opty_id FROM activity WHERE id = 'X2'"),
        "O1"
    );
    refused(
        &s,
        "UPDATE activity SET opty_id = 'O2' WHERE id = 'X2'",
        &["activity [\"X2\"]: refused: it links activity [\"X2\"] to opportunity [\"O2\"]"],
    );
    // An activity on an account he does not hold, through the account's member path.
    refused(
        &s,
        "INSERT INTO activity(id, account_id, kind) VALUES ('X3', 'A4', 'visit')",
        &["to account [\"A4\"] (member activity)"],
    );
    assert_eq!(
        s.count("carl", "SELECT count(*) FROM activity WHERE id LIKE 'X%'"),
        0
    );
}

/// A link the model grants (`node_link = true` on the opportunity's activity member) is
/// accepted: keith logs an activity on carl's opportunity, carl receives it, keith still
/// does not see O2. Without the grant the same write is refused (the tests above).
#[test]
fn a_granted_link_is_accepted_and_reaches_the_holders() {
    let model = sample_model().replacen(
        "[[object.member]]\ntable = \"activity\"\nvis_event = false\n# Both paths",
        "[[object.member]]\ntable = \"activity\"\nvis_event = false\nnode_link = true\n# Both paths",
        1,
    );
    assert!(
        model.contains("node_link = true"),
        "the sample changed shape"
    );
    let s = Sales::new(&model);
    s.shell(
        "keith",
        "INSERT INTO activity(id, opty_id, kind, note) VALUES ('X1', 'O2', 'call', 'for carl')",
    );
    s.round("keith");
    assert_eq!(s.denied("keith"), Vec::<String>::new());
    assert_eq!(
        s.query("carl", "SELECT note FROM activity WHERE id = 'X1'"),
        "for carl"
    );
    assert_eq!(
        s.count("keith", "SELECT count(*) FROM opty WHERE id = 'O2'"),
        0
    );
    // The grant is for the activity's link only: a quote on O2 is still refused.
    refused(
        &s,
        "INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('Q9', 'O2', 'E1', 'no')",
        &["to opportunity [\"O2\"]"],
    );
}

/// A new instance the node creates is its own: with `opty_emp` node-writable, keith creates
/// an opportunity on his account with himself on the team and a quote for it; all arrive at
/// central and stay at keith. Putting himself on carl's team is refused.
#[test]
fn a_new_instance_created_by_the_node_is_accepted() {
    let model = sample_model().replace(
        "opty_emp = { visibility = \"limited\" }",
        "opty_emp = { visibility = \"limited\", node_write = true }",
    );
    let s = Sales::new(&model);
    s.shell(
        "keith",
        "INSERT INTO opty(id, account_id, name) VALUES ('O9', 'A1', 'New deal');
         INSERT INTO opty_emp(opty_id, emp_id, role) VALUES ('O9', 'E1', 'owner');
         INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('Q9', 'O9', 'E1', 'first offer');
         INSERT INTO activity(id, opty_id, kind) VALUES ('X9', 'O9', 'call');",
    );
    s.round("keith");
    assert_eq!(s.denied("keith"), Vec::<String>::new());
    for (t, id) in [("opty", "O9"), ("quote", "Q9"), ("activity", "X9")] {
        let q = format!("SELECT count(*) FROM {t} WHERE id = '{id}'");
        assert_eq!(s.count("hq", &q), 1, "{t} {id} at central");
        assert_eq!(s.count("keith", &q), 1, "{t} {id} kept at keith");
        assert_eq!(s.count("carl", &q), 0, "{t} {id} at carl");
    }
    refused(
        &s,
        "INSERT INTO opty_emp(opty_id, emp_id, role) VALUES ('O2', 'E1', 'helper')",
        &[
            "opty_emp [\"O2\",\"E1\"]: refused: it links opty_emp [\"O2\",\"E1\"] to opportunity [\"O2\"]",
        ],
    );
}

/// `docking check` says which links nodes may make, and warns of a node-writable table an
/// SQL rule reads outside the object's members (central refuses every node write to it).
#[test]
fn docking_check_explains_the_links_nodes_may_make() {
    let s = Sales::new(&sample_model());
    let check = |model: &str| {
        let file = s.root.join("candidate.toml");
        std::fs::write(&file, model).unwrap();
        let out = berth()
            .args(["docking", "check", "--site"])
            .arg(&s.hq)
            .arg(&file)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = check(&sample_model());
    assert!(
        plain.contains("links: a node's write may link rows only to instances it holds or creates (no node_link grants)"),
        "{plain}"
    );
    let granted = sample_model().replacen(
        "[[object.member]]\ntable = \"activity\"\nvis_event = false\n# Both paths",
        "[[object.member]]\ntable = \"activity\"\nvis_event = false\nnode_link = true\n# Both paths",
        1,
    );
    let out = check(&granted);
    assert!(
        out.contains("object \"opportunity\" member \"activity\": nodes may put activity rows into any opportunity by its id"),
        "{out}"
    );
    let risky = sample_model().replace(
        "emp_postn = { visibility = \"enterprise\" }",
        "emp_postn = { visibility = \"enterprise\", node_write = true }",
    );
    let out = check(&risky);
    assert!(
        out.contains("warning: object \"account\" rule 1")
            && out.contains("this rule reads \"emp_postn\", which nodes may write"),
        "{out}"
    );
    // And central does refuse a node's write there, whatever it links.
    std::fs::write(s.root.join("risky.toml"), &risky).unwrap();
    berth()
        .args(["docking", "apply", "--site"])
        .arg(&s.hq)
        .arg(s.root.join("risky.toml"))
        .assert()
        .success();
    s.dock("hq");
    s.shell("keith", "INSERT INTO emp_postn VALUES ('E1', 'P-SOUTH')");
    s.round("keith");
    let denied = s.denied("keith");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0].contains("a rule of object account reads table emp_postn"),
        "{denied:?}"
    );
    assert_eq!(
        s.count("keith", "SELECT count(*) FROM account WHERE id = 'A2'"),
        0
    );
    assert_eq!(
        s.count(
            "hq",
            "SELECT count(*) FROM emp_postn WHERE emp_id = 'E1' AND position_id = 'P-SOUTH'"
        ),
        0
    );
}
