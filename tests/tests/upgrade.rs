//! Software upgrade distribution (seed 004, "Software Distribution Integration with Remote
//! Upgrade") across a real central and nodes exchanging real bundles: publish, activate,
//! announcement, forced and optional download, every apply policy, failures and retries,
//! trust refusals, and central's view of every node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(unix)]

use berth_bundle::{BundleHeader, BundleWriter, Compression, Party, SecretKey, StreamPosition};
use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, DockReport, dock_with_prompt};
use berth_engine::upgrade::{self, Prompt, Question, QuestionKind};
use berth_tests::{SCHEMA, World};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;

const DATA: &str = "INSERT INTO account VALUES ('A1', 'Acme', 'north');";

/// Writes the install script `ok`: records the level it installed and its environment.
const OK_SCRIPT: &str = r#"#!/bin/sh
echo "installing $BERTH_PACKAGE level $BERTH_LEVEL over $BERTH_PREVIOUS_LEVEL at $BERTH_SITE_NAME"
test "$(pwd)" = "$BERTH_PACKAGE_DIR" || { echo "not run from the package folder" >&2; exit 9; }
test -f "$BERTH_DATABASE" || exit 8
echo "$BERTH_PACKAGE $BERTH_LEVEL" >> "$BERTH_SITE_DIR/installed.txt"
"#;

/// Fails (exit 7, with output) until the file `fixed` exists in the site folder.
const FLAKY_SCRIPT: &str = r#"#!/bin/sh
echo "checking prerequisites"
if [ ! -f "$BERTH_SITE_DIR/fixed" ]; then echo "boom: disk full" >&2; exit 7; fi
echo "$BERTH_PACKAGE $BERTH_LEVEL" >> "$BERTH_SITE_DIR/installed.txt"
"#;

/// Fails at node `b` only.
const FAILS_AT_B: &str = r#"#!/bin/sh
if [ "$BERTH_SITE_NAME" = "b" ]; then echo "no space left at b" >&2; exit 3; fi
echo "$BERTH_PACKAGE $BERTH_LEVEL" >> "$BERTH_SITE_DIR/installed.txt"
"#;

/// Install commands are child processes: while one is being started, the child briefly holds
/// copies of every open descriptor of this process, site locks included, so a test opening a
/// site in another thread at that moment would find it busy. The tests of this file run one
/// at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn world(nodes: &[&str]) -> World {
    World::new(SCHEMA, DATA, nodes)
}

/// Writes a package folder (package.toml + install.sh) and publishes and activates it.
fn publish(w: &World, name: &str, level: &str, policies: &str, script: &str) -> PathBuf {
    let dir = w.root.path().join(format!("pkg-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("install.sh"), script).unwrap();
    std::fs::write(dir.join("readme.txt"), format!("{name} {level}\n")).unwrap();
    let toml = format!(
        r#"name = "{name}"
level = "{level}"
description = "Field app {level}"
download_message = "Field app {level} is available.\u001b[31m"
apply_message = "Close the field app before installing."
timeout = 1
install = ["sh", "install.sh"]
{policies}

[[files]]
name = "install.sh"

[[files]]
name = "readme.txt"
"#
    );
    // Messages may not carry control characters at publish: the escape above is refused...
    std::fs::write(dir.join("package.toml"), &toml).unwrap();
    let mut hq = w.open("hq");
    let err = upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap_err();
    assert!(err.to_string().contains("control"), "{err}");
    // ...so publish it plain.
    std::fs::write(dir.join("package.toml"), toml.replace("\\u001b[31m", "")).unwrap();
    let pkg = upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap();
    assert_eq!(pkg.files.len(), 2);
    assert!(
        pkg.files
            .iter()
            .all(|f| f.sha256.is_some() && f.size.is_some())
    );
    upgrade::central::activate(&mut hq, name).unwrap();
    dir
}

#[derive(Debug, Default)]
struct Scripted {
    answers: Mutex<VecDeque<Option<bool>>>,
    asked: Mutex<Vec<Question>>,
}

impl Scripted {
    fn with(answers: &[Option<bool>]) -> Scripted {
        Scripted {
            answers: Mutex::new(answers.iter().copied().collect()),
            asked: Mutex::default(),
        }
    }
}

impl Prompt for Scripted {
    fn ask(&self, q: &Question) -> Option<bool> {
        self.asked.lock().unwrap().push(q.clone());
        self.answers.lock().unwrap().pop_front().flatten()
    }
}

fn dock_asking(w: &World, node: &str, prompt: &dyn Prompt) -> DockReport {
    let mut s = w.open(node);
    dock_with_prompt(&mut s, &w.via, &DockOptions::default(), prompt).unwrap()
}

fn level(w: &World, site: &str) -> String {
    w.value(
        site,
        "SELECT value FROM berth_meta WHERE key = 'software_level'",
    )
}

fn installed(w: &World, node: &str) -> String {
    std::fs::read_to_string(w.dir(node).join("installed.txt")).unwrap_or_default()
}

fn local_state(w: &World, node: &str, pkg: &str) -> String {
    w.value(
        node,
        &format!("SELECT state FROM berth_upgrade_local WHERE name = '{pkg}'"),
    )
}

/// (state, exit code, detail, output) of one package at one node.
type NodeView = (String, Option<i64>, String, String);

/// Central's view: (package, node) -> where it stands.
fn central_view(w: &World) -> BTreeMap<(String, String), NodeView> {
    let hq = w.open("hq");
    upgrade::central::status(&hq)
        .unwrap()
        .into_iter()
        .flat_map(|p| {
            let name = p.name.clone();
            p.nodes.into_iter().map(move |n| {
                // The state is the last step the node reported (none yet: not-sent, sent).
                match n.state.as_str() {
                    "not-sent" | "sent" => assert!(n.steps.is_empty(), "{n:?}"),
                    state => assert_eq!(n.steps.last().map(String::as_str), Some(state), "{n:?}"),
                }
                (
                    (name.clone(), n.node),
                    (n.state, n.exit_code, n.detail, n.output),
                )
            })
        })
        .collect()
}

fn entries_of_waiting_bundle(w: &World, to: &str) -> Vec<String> {
    let f = berth_engine::transport::list(&w.via, Some(to))
        .unwrap()
        .into_iter()
        .find(|f| f.sender == "hq")
        .expect("a bundle from hq is waiting");
    let b = berth_bundle::Bundle::open(
        std::fs::File::open(&f.path).unwrap(),
        "x",
        &berth_bundle::Limits::default(),
    )
    .unwrap();
    b.manifest()
        .entries
        .iter()
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn forced_immediate_package_installs_at_the_end_of_the_dock_and_is_reported() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    assert_eq!(
        central_view(&w)[&("app-2".into(), "a".into())].0,
        "not-sent"
    );
    w.dock("hq");
    let entries = entries_of_waiting_bundle(&w, "a");
    assert!(
        entries.contains(&"payload/upgrade/app-2/package.toml".to_string()),
        "{entries:?}"
    );
    assert!(
        entries.contains(&"payload/upgrade/app-2/files/install.sh".to_string()),
        "{entries:?}"
    );
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "sent");
    let r = w.dock("a");
    assert!(r.upgrade.iter().any(|n| n.event == "applied"), "{r:?}");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
    assert_eq!(level(&w, "a"), "'2'");
    assert!(
        w.dir("a")
            .join("upgrade/packages/app-2/readme.txt")
            .is_file(),
        "files kept in the site's upgrade folder"
    );
    w.dock("hq");
    let v = central_view(&w);
    let (state, code, detail, output) = &v[&("app-2".into(), "a".into())];
    assert_eq!(state, "applied");
    assert_eq!(*code, Some(0));
    assert!(detail.contains("level 2"), "{detail}");
    assert!(
        output.contains("installing app-2 level 2 over 1 at a"),
        "{output}"
    );
    // Every step reached central, in order.
    let steps = w.value(
        "hq",
        "SELECT group_concat(step, ',') FROM (SELECT step FROM berth_upgrade_reports WHERE node = 'a' ORDER BY id)",
    );
    assert_eq!(steps, "'announced,downloaded,applied'");
    w.settle();
    // Central acknowledged the reports: the node no longer carries them.
    assert_eq!(
        w.value("a", "SELECT COUNT(*) FROM berth_upgrade_outbox"),
        "0"
    );
    // Nothing runs twice.
    w.settle();
    assert_eq!(installed(&w, "a"), "app-2 2\n");
}

#[test]
fn optional_download_is_asked_deferred_then_requested_and_sent_in_the_next_bundle() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"optional\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    let entries = entries_of_waiting_bundle(&w, "a");
    assert!(
        !entries.iter().any(|e| e.contains("/files/")),
        "an optional package travels without its files: {entries:?}"
    );
    // The user says no: deferred.
    let no = Scripted::with(&[Some(false)]);
    let r = dock_asking(&w, "a", &no);
    let asked = no.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].kind, QuestionKind::Download);
    assert_eq!(asked[0].message, "Field app 2 is available.");
    assert_eq!(asked[0].timeout, std::time::Duration::from_secs(1));
    assert!(r.upgrade.iter().any(|n| n.event == "deferred"), "{r:?}");
    assert_eq!(local_state(&w, "a", "app-2"), "'deferred'");
    w.dock("hq");
    assert_eq!(
        central_view(&w)[&("app-2".into(), "a".into())].0,
        "deferred"
    );
    // Asked again at the next dock; a time-out takes the package's default (download).
    let silent = Scripted::with(&[None]);
    dock_asking(&w, "a", &silent);
    assert_eq!(silent.asked.lock().unwrap().len(), 1);
    assert_eq!(local_state(&w, "a", "app-2"), "'requested'");
    assert_eq!(installed(&w, "a"), "");
    w.dock("hq");
    assert_eq!(
        central_view(&w)[&("app-2".into(), "a".into())].0,
        "requested"
    );
    let entries = entries_of_waiting_bundle(&w, "a");
    assert!(
        entries.contains(&"payload/upgrade/app-2/files/install.sh".to_string()),
        "{entries:?}"
    );
    w.dock("a");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "applied");
}

#[test]
fn deferrable_package_waits_across_docks_with_reminders_until_upgrade_apply() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"deferrable\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    for round in 0..3 {
        let p = Scripted::with(&[Some(false)]);
        let r = dock_asking(&w, "a", &p);
        let asked = p.asked.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "round {round}");
        assert_eq!(asked[0].kind, QuestionKind::Apply);
        assert_eq!(asked[0].message, "Close the field app before installing.");
        assert!(
            r.upgrade
                .iter()
                .any(|n| n.event == "reminder" && n.text.contains("berth upgrade apply app-2")),
            "round {round}: {r:?}"
        );
        w.dock("hq");
    }
    assert_eq!(level(&w, "a"), "'1'");
    assert_eq!(installed(&w, "a"), "");
    assert_eq!(
        w.value("a", "SELECT reminders FROM berth_upgrade_local"),
        "3"
    );
    assert_eq!(
        central_view(&w)[&("app-2".into(), "a".into())].0,
        "deferred"
    );
    // Deferral is reported once, not at every dock: the deployment settles.
    w.settle();
    let note = upgrade::node::apply_now(&mut w.open("a"), "app-2").unwrap();
    assert_eq!(note.event, "applied");
    assert_eq!(level(&w, "a"), "'2'");
    w.dock("a");
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "applied");
    let err = upgrade::node::apply_now(&mut w.open("a"), "app-2").unwrap_err();
    assert!(err.to_string().contains("already applied"), "{err}");
}

#[test]
fn immediate_at_start_installs_at_the_start_of_the_next_dock() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"\napply_at = \"start\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    w.dock("a");
    assert_eq!(local_state(&w, "a", "app-2"), "'downloaded'");
    assert_eq!(installed(&w, "a"), "");
    let r = w.dock("a");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
    assert_eq!(r.upgrade[0].event, "applied");
    // The start-of-session install is reported by the bundle written in the same dock.
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "applied");
}

#[test]
fn after_schema_package_waits_for_its_schema_version_through_the_gate_hook() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-3",
        "3",
        "download = \"forced\"\napply = \"after-schema\"\nschema_version = \"7\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    let r = w.dock("a");
    assert!(r.upgrade.iter().any(|n| n.event == "waiting"), "{r:?}");
    assert_eq!(installed(&w, "a"), "");
    let err = upgrade::node::apply_now(&mut w.open("a"), "app-3").unwrap_err();
    assert!(err.to_string().contains("schema version 7"), "{err}");
    // What the schema migration (issue 5) will record when it applies version 7.
    w.exec(
        "a",
        "INSERT OR REPLACE INTO berth_meta(key, value) VALUES ('schema_version', '7')",
    );
    let notes = upgrade::node::run_after_schema(&mut w.open("a")).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].event, "applied");
    assert_eq!(installed(&w, "a"), "app-3 3\n");
}

#[test]
fn install_failure_keeps_the_old_level_is_reported_and_retried() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        FLAKY_SCRIPT,
    );
    w.dock("hq");
    let r = w.dock("a");
    assert!(r.upgrade.iter().any(|n| n.event == "failed"), "{r:?}");
    assert_eq!(level(&w, "a"), "'1'");
    assert!(
        w.dir("a")
            .join("upgrade/packages/app-2/install.sh")
            .is_file()
    );
    w.dock("hq");
    let v = central_view(&w);
    let (state, code, _, output) = &v[&("app-2".into(), "a".into())];
    assert_eq!(state, "failed");
    assert_eq!(*code, Some(7));
    assert!(output.contains("boom: disk full"), "{output}");
    // Not retried behind the user's back; reminded instead.
    let r = w.dock("a");
    assert!(r.upgrade.iter().any(|n| n.event == "reminder"), "{r:?}");
    std::fs::write(w.dir("a").join("fixed"), "").unwrap();
    let note = upgrade::node::apply_now(&mut w.open("a"), "app-2").unwrap();
    assert_eq!(note.event, "applied", "{note:?}");
    assert_eq!(level(&w, "a"), "'2'");
    w.dock("a");
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "applied");
}

#[test]
fn a_file_whose_hash_differs_from_the_package_is_refused_and_nothing_runs() {
    let _serial = serial();
    let w = world(&["a", "b"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    // Someone edits central's stored copy after publishing: central's bundle is validly
    // signed, but the file no longer matches the package's sha256.
    std::fs::write(
        w.dir("hq").join("upgrade/app-2/install.sh"),
        "#!/bin/sh\necho pwned > \"$BERTH_SITE_DIR/pwned\"\n",
    )
    .unwrap();
    w.dock("hq");
    let r = w.dock("a");
    assert!(r.upgrade.is_empty() || r.upgrade.iter().all(|n| n.event != "applied"));
    assert!(!w.dir("a").join("pwned").exists());
    assert!(
        !w.dir("a")
            .join("upgrade/packages/app-2/install.sh")
            .exists()
    );
    assert_eq!(local_state(&w, "a", "app-2"), "'refused'");
    assert_eq!(level(&w, "a"), "'1'");
    w.dock("hq");
    let v = central_view(&w);
    assert_eq!(v[&("app-2".into(), "a".into())].0, "refused");
    assert!(v[&("app-2".into(), "a".into())].2.contains("differs"));
    // Activation re-checks the stored files.
    let err = upgrade::central::activate(&mut w.open("hq"), "app-2").unwrap_err();
    assert!(err.to_string().contains("no longer matches"), "{err}");
}

#[test]
fn a_file_changed_at_the_node_before_install_is_refused() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"deferrable\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    w.dock("a");
    assert_eq!(local_state(&w, "a", "app-2"), "'deferred'");
    std::fs::write(
        w.dir("a").join("upgrade/packages/app-2/install.sh"),
        "#!/bin/sh\necho pwned > \"$BERTH_SITE_DIR/pwned\"\n",
    )
    .unwrap();
    let note = upgrade::node::apply_now(&mut w.open("a"), "app-2").unwrap();
    assert_eq!(note.event, "refused", "{note:?}");
    assert!(!w.dir("a").join("pwned").exists());
    assert_eq!(level(&w, "a"), "'1'");
}

/// A node signs a bundle to central (and one to another node) carrying an upgrade package.
fn forge_from_node(w: &World, node: &str, to: &str) {
    let key =
        SecretKey::from_text(&std::fs::read_to_string(w.dir(node).join("keys/site.key")).unwrap())
            .unwrap();
    let header = BundleHeader {
        sender: Party {
            site: node.into(),
            key_id: key.public().key_id(),
        },
        recipients: vec![to.into()],
        created: 1,
        bundle_id: None,
        stream: Some(StreamPosition {
            seq: 50,
            log_from: 1,
            log_to: 0,
            requires: 0,
            acks: 0,
        }),
        schema_checksum: None,
        software_level: Some("1".into()),
        critical: Vec::new(),
        extensions: BTreeMap::new(),
    };
    let toc = "name = \"evil\"\nlevel = \"9\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\", \"x.sh\"]\n\n[[files]]\nname = \"x.sh\"\nsize = 5\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n";
    let path = w
        .via
        .join(berth_bundle::naming::bundle_file_name(node, to, 50));
    let f = std::fs::File::create(&path).unwrap();
    let mut wr = BundleWriter::new(f, header).unwrap();
    wr.add_entry(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        &b""[..],
    )
    .unwrap();
    wr.add_entry(
        "payload/upgrade/evil/files/x.sh",
        "upgrade",
        Compression::Deflate,
        &b"x.sh\n"[..],
    )
    .unwrap();
    wr.add_entry(
        "payload/upgrade/evil/package.toml",
        "upgrade",
        Compression::Deflate,
        toc.as_bytes(),
    )
    .unwrap();
    wr.finish(&key).unwrap();
}

#[test]
fn a_package_published_by_a_node_key_is_refused() {
    let _serial = serial();
    let w = world(&["a", "b"]);
    forge_from_node(&w, "a", "hq");
    forge_from_node(&w, "a", "b");
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Quarantined), 1, "{r:?}");
    assert!(
        r.incoming[0]
            .detail
            .contains("not trusted to send \"upgrade\""),
        "{r:?}"
    );
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_upgrades"), "0");
    let r = w.dock("b");
    assert_eq!(r.count(Disposition::Quarantined), 1, "{r:?}");
    assert_eq!(
        w.value("b", "SELECT COUNT(*) FROM berth_upgrade_local"),
        "0"
    );
    assert!(!w.dir("b").join("upgrade/packages/evil").exists());
}

#[test]
fn a_package_older_than_the_installed_level_is_refused() {
    let _serial = serial();
    let w = world(&["a"]);
    w.exec(
        "a",
        "UPDATE berth_meta SET value = '3' WHERE key = 'software_level'",
    );
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    w.dock("a");
    assert_eq!(installed(&w, "a"), "");
    assert_eq!(local_state(&w, "a", "app-2"), "'refused'");
    assert_eq!(level(&w, "a"), "'3'");
    w.dock("hq");
    let v = central_view(&w);
    assert_eq!(v[&("app-2".into(), "a".into())].0, "refused");
    assert!(v[&("app-2".into(), "a".into())].2.contains("downgrade"));
    // Central stops sending it.
    w.settle();
}

#[test]
fn several_active_packages_install_in_level_order_from_one_bundle() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-3",
        "3",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    w.dock("a");
    assert_eq!(installed(&w, "a"), "app-2 2\napp-3 3\n");
    assert_eq!(level(&w, "a"), "'3'");
}

#[test]
fn status_at_central_reflects_every_node_after_a_round_of_docking() {
    let _serial = serial();
    let w = world(&["a", "b", "c"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        FAILS_AT_B,
    );
    publish(
        &w,
        "app-3",
        "3",
        "download = \"optional\"\napply = \"deferrable\"",
        OK_SCRIPT,
    );
    w.settle();
    let v = central_view(&w);
    let state = |p: &str, n: &str| v[&(p.to_string(), n.to_string())].clone();
    assert_eq!(state("app-2", "a").0, "applied");
    assert_eq!(state("app-2", "c").0, "applied");
    let b = state("app-2", "b");
    assert_eq!((b.0.as_str(), b.1), ("failed", Some(3)));
    assert!(b.3.contains("no space left at b"), "{b:?}");
    // The optional package was downloaded by default and waits for the users.
    for n in ["a", "b", "c"] {
        assert_eq!(state("app-3", n).0, "deferred", "{n}");
    }
    // b cannot take 3 over a failed 2? It can: levels only need to increase.
    let hq = w.open("hq");
    let st = upgrade::central::status(&hq).unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].active, Some(1));
    assert_eq!(st[0].nodes.len(), 3);
    drop(hq);
    let view = upgrade::node::status(&w.open("b")).unwrap();
    assert_eq!(view.software_level, "1");
    assert_eq!(view.unreported, 0);
    assert_eq!(view.packages[0].exit_code, Some(3));
}

#[test]
fn publish_validates_the_package() {
    let _serial = serial();
    let w = world(&[]);
    let dir = w.root.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "name = \"x\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\"]\n[[files]]\nname = \"missing.sh\"\n",
            "not a regular file",
        ),
        (
            "name = \"Bad Name\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\"]\n[[files]]\nname = \"a.sh\"\n",
            "name",
        ),
        (
            "name = \"x\"\nlevel = \"two\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\"]\n[[files]]\nname = \"a.sh\"\n",
            "level",
        ),
        (
            "name = \"x\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"after-schema\"\ninstall = [\"sh\"]\n[[files]]\nname = \"a.sh\"\n",
            "schema_version",
        ),
        (
            "name = \"x\"\nlevel = \"2\"\ndownload = \"sometimes\"\napply = \"immediate\"\ninstall = [\"sh\"]\n[[files]]\nname = \"a.sh\"\n",
            "download",
        ),
        (
            "name = \"x\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\"]\n[[files]]\nname = \"a.sh\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
            "sha256",
        ),
        (
            "name = \"x\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\"]\nsurprise = 1\n[[files]]\nname = \"a.sh\"\n",
            "surprise",
        ),
    ];
    std::fs::write(dir.join("a.sh"), "echo\n").unwrap();
    let mut hq = w.open("hq");
    for (toml, want) in cases {
        std::fs::write(dir.join("package.toml"), toml).unwrap();
        let err = upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let ok = "name = \"x\"\nlevel = \"2\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\", \"a.sh\"]\n[[files]]\nname = \"a.sh\"\n";
    std::fs::write(dir.join("package.toml"), ok).unwrap();
    upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap();
    let err = upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap_err();
    assert!(err.to_string().contains("already published"), "{err}");
    let err = upgrade::central::activate(&mut hq, "nope").unwrap_err();
    assert!(err.to_string().contains("no upgrade package"), "{err}");
}

fn lose_bundles_from(w: &World, sender: &str) -> usize {
    let mut n = 0;
    for f in berth_engine::transport::list(&w.via, None).unwrap() {
        if f.sender == sender {
            std::fs::remove_file(&f.path).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn announcements_reports_and_acknowledgements_survive_lost_bundles() {
    let _serial = serial();
    let w = world(&["a"]);
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    // The announcement (with its files) is lost: central sends it again.
    w.dock("hq");
    assert_eq!(lose_bundles_from(&w, "hq"), 1);
    w.dock("hq");
    assert_eq!(
        entries_of_waiting_bundle(&w, "a").len(),
        5,
        "changes, digests (SPEC 2.15), toc, two files"
    );
    w.dock("a");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
    // The node's reports are lost: the node sends them again.
    assert_eq!(lose_bundles_from(&w, "a"), 1);
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "sent");
    w.dock("a");
    w.dock("hq");
    assert_eq!(central_view(&w)[&("app-2".into(), "a".into())].0, "applied");
    // Central's acknowledgement is lost: the node repeats its reports, central repeats the
    // acknowledgement, and the exchange ends.
    assert_eq!(lose_bundles_from(&w, "hq"), 1);
    w.settle();
    assert_eq!(
        w.value("a", "SELECT COUNT(*) FROM berth_upgrade_outbox"),
        "0"
    );
    assert_eq!(
        w.value(
            "hq",
            "SELECT COUNT(*) FROM berth_upgrade_reports WHERE node = 'a'"
        ),
        "3"
    );
    assert_eq!(installed(&w, "a"), "app-2 2\n", "installed once");
}

/// A migration made on a developer's copy and accepted at central (`hq`): version 1 adds
/// `opty.stage`, needing software `level`.
fn accept_stage_migration(w: &World, level: &str) {
    let dev = w.schema_copy("dev");
    berth_engine::migrate::create_by_sql(
        &dev,
        "ALTER TABLE opty ADD COLUMN stage TEXT DEFAULT 'open'",
        &berth_engine::evolve::history::NewMigration {
            name: "stage",
            software_level: level,
            origin: "dev",
            diff: Default::default(),
        },
    )
    .unwrap();
    let file =
        berth_engine::migrate::submit(&dev, "hq", 1, &w.root.path().join("outbox"), None).unwrap();
    berth_engine::migrate::accept(&mut w.open("hq"), &file).unwrap();
}

/// Installs only if the database already has the migrated column (proves the order).
const NEEDS_STAGE: &str = r#"#!/bin/sh
sqlite3 "$BERTH_DATABASE" "PRAGMA table_info(opty)" | grep -q '|stage|' || { echo "schema not migrated yet" >&2; exit 5; }
echo "$BERTH_PACKAGE $BERTH_LEVEL" >> "$BERTH_SITE_DIR/installed.txt"
"#;

#[test]
fn a_package_tied_to_a_migration_installs_right_after_it_from_one_bundle() {
    let _serial = serial();
    let w = world(&["a"]);
    accept_stage_migration(&w, "1");
    publish(
        &w,
        "app-3",
        "3",
        "download = \"forced\"\napply = \"after-schema\"\nschema_version = \"1\"",
        NEEDS_STAGE,
    );
    w.dock("hq");
    // One bundle carries the migration and the package.
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert!(
        r.upgrade.iter().any(|n| n.event == "applied"),
        "{:?}",
        r.upgrade
    );
    assert_eq!(installed(&w, "a"), "app-3 3\n");
    assert_eq!(level(&w, "a"), "'3'");
    assert_eq!(
        w.value(
            "a",
            "SELECT value FROM berth_meta WHERE key = 'schema_version'"
        ),
        "'1'"
    );
    w.dock("a");
    w.dock("hq");
    let st = upgrade::central::status(&w.open("hq")).unwrap();
    assert_eq!(st[0].nodes[0].state, "applied", "{st:?}");
}

#[test]
fn a_migration_needing_new_software_waits_for_the_package_in_the_same_bundle() {
    let _serial = serial();
    let w = world(&["a"]);
    accept_stage_migration(&w, "2");
    publish(
        &w,
        "app-2",
        "2",
        "download = \"forced\"\napply = \"immediate\"",
        OK_SCRIPT,
    );
    w.dock("hq");
    // The bundle is held for the software level, the package installs at the end of the
    // session, and the held bundle then applies in the same dock.
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
    assert_eq!(
        w.value("a", "SELECT stage FROM opty LIMIT 1"),
        w.value("hq", "SELECT stage FROM opty LIMIT 1")
    );
    assert_eq!(
        w.value("a", "SELECT count(*) FROM berth_held"),
        "0",
        "nothing left waiting"
    );
}

/// Writes a package folder without publishing it (an admin's checkout).
fn package_folder(w: &World, name: &str, level: &str) -> PathBuf {
    let dir = w.root.path().join(format!("admin-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("install.sh"), OK_SCRIPT).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        format!(
            "name = \"{name}\"\nlevel = \"{level}\"\ndownload = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\", \"install.sh\"]\n\n[[files]]\nname = \"install.sh\"\n"
        ),
    )
    .unwrap();
    dir.join("package.toml")
}

#[test]
fn an_admin_key_registered_at_central_may_publish_from_afar_and_nothing_else_may() {
    let _serial = serial();
    let w = world(&["a"]);
    let out = w.root.path().join("outbox");
    let admin = SecretKey::generate();
    let stranger = SecretKey::generate();
    berth_engine::keychain::add_admin(&w.open("hq"), "ann", &admin.public()).unwrap();
    let toml = package_folder(&w, "app-2", "2");

    // A key central does not know as an admin's: refused, nothing stored.
    let forged = upgrade::submit::submit(&toml, "ann", &stranger, "hq", &out).unwrap();
    let err = upgrade::submit::accept(&mut w.open("hq"), &forged).unwrap_err();
    assert!(
        err.to_string().contains("not a registered admin key"),
        "{err}"
    );
    // A node's own key is no admin key either.
    let node_key =
        SecretKey::from_text(&std::fs::read_to_string(w.dir("a").join("keys/site.key")).unwrap())
            .unwrap();
    let by_node = upgrade::submit::submit(&toml, "a", &node_key, "hq", &out).unwrap();
    let err = upgrade::submit::accept(&mut w.open("hq"), &by_node).unwrap_err();
    assert!(
        err.to_string().contains("not a registered admin key"),
        "{err}"
    );
    // Addressed to another central.
    let elsewhere = upgrade::submit::submit(&toml, "ann", &admin, "other", &out).unwrap();
    let err = upgrade::submit::accept(&mut w.open("hq"), &elsewhere).unwrap_err();
    assert!(err.to_string().contains("not to hq"), "{err}");
    // A file changed after signing: the bundle layer refuses it.
    let good = upgrade::submit::submit(&toml, "ann", &admin, "hq", &out).unwrap();
    let tampered = w.root.path().join("tampered.zip");
    let mut bytes = std::fs::read(&good).unwrap();
    // A byte flipped inside the first entry's compressed data (past its local header).
    let i = 30 + "payload/upgrade/app-2/files/install.sh".len() + 4;
    bytes[i] ^= 0x20;
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(upgrade::submit::accept(&mut w.open("hq"), &tampered).is_err());
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_upgrades"), "0");

    // The admin's own bundle publishes it; it then travels like any package.
    let a = upgrade::submit::accept(&mut w.open("hq"), &good).unwrap();
    assert_eq!(
        (a.admin.as_str(), a.package.name.as_str()),
        ("ann", "app-2")
    );
    assert_eq!(a.key_id, admin.public().key_id().to_string());
    assert!(a.package.files.iter().all(|f| f.sha256.is_some()));
    // Accepting it twice is refused (the name exists).
    assert!(upgrade::submit::accept(&mut w.open("hq"), &good).is_err());
    upgrade::central::activate(&mut w.open("hq"), "app-2").unwrap();
    w.dock("hq");
    let r = w.dock("a");
    assert!(r.upgrade.iter().any(|n| n.event == "applied"), "{r:?}");
    assert_eq!(level(&w, "a"), "'2'");
    assert_eq!(installed(&w, "a"), "app-2 2\n");
}
