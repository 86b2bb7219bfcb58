//! Real schema histories (issue 18): the SQLite migration directories of three applications
//! and a set of Atlas's SQLite diff cases, vendored under `tests/corpus/` with their
//! licences (`tests/corpus/README.md` says where each comes from).
//!
//! Every consecutive pair of schema versions is walked the way a user would: a central site
//! is made from the older version (tables without a PRIMARY KEY declared `local`, every
//! other one `enterprise`) and given rows, then `schema diff` (the plan from the live schema
//! to the newer version, built directly in a scratch database) and `migration create --to`
//! run. A pair passes when the migrated site has the newer version's checksum and every row
//! survived (same rows in the columns both versions have); or it is refused, and then every
//! step the refusal names must really destroy something (a table or column the newer
//! version no longer has, a new or changed NOT NULL column without a default, a narrowed
//! type): the same pair allowed to be destructive must then migrate, keeping the rest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::evolve::Error as EvolveError;
use berth_engine::evolve::diff::{self, DiffOptions};
use berth_engine::evolve::history::NewMigration;
use berth_engine::evolve::snapshot::{self, Snapshot, TableDef};
use berth_engine::site::{CentralInit, Site};
use berth_engine::{migrate, schema};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// One schema history: each version as the SQL that builds it from nothing.
struct History {
    name: String,
    versions: Vec<(String, String)>,
}

/// A migration directory: the files in name order, each version all files up to it.
fn migration_dir(name: &str, dir: &Path, suffix: &str) -> History {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    let mut sql = String::new();
    let mut versions = Vec::new();
    for f in files {
        sql.push_str(&std::fs::read_to_string(&f).unwrap());
        sql.push_str(";\n");
        let label = f.file_name().unwrap().to_string_lossy().into_owned();
        versions.push((label, sql.clone()));
    }
    History {
        name: name.to_string(),
        versions,
    }
}

/// An Atlas integration case: each `-- N.sql --` section is the schema after step N, one
/// statement a line.
fn atlas_case(path: &Path) -> History {
    let text = std::fs::read_to_string(path).unwrap();
    let mut versions = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(section) = line.strip_prefix("-- ").and_then(|l| l.strip_suffix(" --")) {
            versions.extend(current.take());
            let numbered = section
                .strip_suffix(".sql")
                .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            if numbered {
                current = Some((section.to_string(), String::new()));
            }
        } else if let Some((_, sql)) = &mut current
            && !line.trim().is_empty()
        {
            sql.push_str(line);
            sql.push_str(";\n");
        }
    }
    versions.extend(current);
    History {
        name: format!("atlas/{}", path.file_name().unwrap().to_string_lossy()),
        versions,
    }
}

fn histories() -> Vec<History> {
    let c = corpus_dir();
    let mut out = vec![
        migration_dir("shiori", &c.join("shiori"), ".up.sql"),
        migration_dir("authelia", &c.join("authelia"), ".up.sql"),
        migration_dir("pocket-id", &c.join("pocket-id"), ".up.sql"),
        migration_dir("atuin/history", &c.join("atuin/migrations"), ".sql"),
        migration_dir("atuin/records", &c.join("atuin/record-migrations"), ".sql"),
        migration_dir("atlas/sqlitetx", &c.join("atlas/sqlitetx"), ".sql"),
    ];
    let mut cases: Vec<PathBuf> = std::fs::read_dir(c.join("atlas"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txtar"))
        .collect();
    cases.sort();
    out.extend(cases.iter().map(|p| atlas_case(p)));
    out
}

/// A scratch database holding one version, built directly from its SQL. Authelia's and
/// pocket-id's migrations call functions their Go code registers; here they pass their
/// argument on (only data moved by a migration sees them, never the schema).
fn build(sql: &str) -> Result<Connection, String> {
    use rusqlite::functions::FunctionFlags;
    let c = Connection::open_in_memory().unwrap();
    for name in ["BIN2B64", "B642BIN"] {
        c.create_scalar_function(name, 1, FunctionFlags::SQLITE_DETERMINISTIC, |ctx| {
            ctx.get::<rusqlite::types::Value>(0)
        })
        .unwrap();
    }
    c.create_scalar_function("normalize", 2, FunctionFlags::SQLITE_DETERMINISTIC, |ctx| {
        ctx.get::<rusqlite::types::Value>(0)
    })
    .unwrap();
    c.execute_batch(sql)
        .map_err(|e| format!("the version does not build: {e}"))?;
    Ok(c)
}

fn lc(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn table<'a>(s: &'a Snapshot, name: &str) -> Option<&'a TableDef> {
    s.tables.iter().find(|t| lc(&t.name) == lc(name))
}

/// Tables without a PRIMARY KEY (in either version) are local; the rest enterprise.
fn docking_model(old: &Snapshot, new: &Snapshot) -> String {
    let mut tables = BTreeMap::new();
    for t in old.tables.iter().chain(&new.tables) {
        let local = t.primary_key.is_empty()
            || table(old, &t.name).is_some_and(|o| o.primary_key.is_empty());
        let entry = tables.entry(lc(&t.name)).or_insert((t.name.clone(), local));
        entry.1 |= local;
    }
    let mut toml = String::from("version = 1\n[tables]\n");
    for (name, local) in tables.values() {
        let vis = if *local { "local" } else { "enterprise" };
        if table(old, name).is_some() || *local {
            writeln!(toml, "{name:?} = {{ visibility = \"{vis}\" }}").unwrap();
        }
    }
    toml
}

/// A value for a column of this declared type (SQLite's affinity rules), row `i`.
fn value(decl: &str, i: usize) -> String {
    let d = decl.to_ascii_uppercase();
    if d.contains("INT") {
        format!("{i}")
    } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
        format!("'r{i}'")
    } else if d.contains("BLOB") || d.is_empty() {
        format!("x'0{i}'")
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        format!("{i}.5")
    } else {
        format!("{i}")
    }
}

/// Gives every table up to three rows: values by declared type, foreign keys pointing at the
/// parent's rows. Rows that a CHECK, UNIQUE or foreign key refuses are left out.
fn fill(db: &Path, snap: &Snapshot) {
    let c = Connection::open(db).unwrap();
    c.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    // Parents first: repeat until no table gains rows (foreign keys may form chains).
    for _ in 0..snap.tables.len().max(1) {
        for t in &snap.tables {
            for i in 1..=3 {
                let mut cols = Vec::new();
                let mut vals = Vec::new();
                for col in t.columns.iter().filter(|c| c.generated.is_none()) {
                    let fk = t.foreign_keys.iter().find_map(|fk| {
                        let at = fk.columns.iter().position(|x| lc(x) == lc(&col.name))?;
                        let parent = table(snap, &fk.parent)?;
                        let pcol = fk
                            .parent_columns
                            .get(at)
                            .cloned()
                            .or_else(|| parent.primary_key.get(at).cloned())?;
                        Some(format!(
                            "(SELECT \"{pcol}\" FROM \"{}\" ORDER BY rowid LIMIT 1 OFFSET {})",
                            parent.name,
                            i - 1
                        ))
                    });
                    cols.push(format!("\"{}\"", col.name));
                    vals.push(fk.unwrap_or_else(|| value(&col.decl_type, i)));
                }
                let sql = format!(
                    "INSERT OR IGNORE INTO \"{}\" ({}) VALUES ({})",
                    t.name,
                    cols.join(", "),
                    vals.join(", ")
                );
                // A foreign key that finds no parent row is an error, not ignored.
                let _ = c.execute(&sql, []);
            }
        }
    }
}

/// Every table's rows, projected on the columns both versions have, sorted.
fn rows(c: &Connection, old: &Snapshot, new: &Snapshot) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for t in &old.tables {
        let Some(n) = table(new, &t.name) else {
            continue;
        };
        let cols: Vec<String> = t
            .columns
            .iter()
            .filter(|c| c.generated.is_none())
            .filter(|c| {
                n.columns
                    .iter()
                    .any(|x| lc(&x.name) == lc(&c.name) && x.generated.is_none())
            })
            .map(|c| format!("quote(\"{}\")", c.name))
            .collect();
        if cols.is_empty() {
            continue;
        }
        let mut st = c
            .prepare(&format!(
                "SELECT {} FROM \"{}\"",
                cols.join(" || '|' || "),
                t.name
            ))
            .unwrap();
        let mut v: Vec<String> = st
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        v.sort();
        out.insert(lc(&t.name), v);
    }
    out
}

/// Whether a step of a destructive refusal names something the newer version really loses.
fn really_destructive(step: &str, old: &Snapshot, new: &Snapshot) -> bool {
    let column = |name: &str| -> Option<(String, String)> {
        let (t, c) = name.split_once('.')?;
        Some((t.to_string(), c.to_string()))
    };
    let first = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
    if let Some(rest) = step.strip_prefix("drop table ") {
        let t = first(rest);
        return table(old, &t).is_some() && table(new, &t).is_none();
    }
    if let Some(rest) = step.strip_prefix("drop column ") {
        let Some((t, c)) = column(&first(rest)) else {
            return false;
        };
        let had = table(old, &t).is_some_and(|t| t.columns.iter().any(|x| lc(&x.name) == lc(&c)));
        let has = table(new, &t).is_some_and(|t| t.columns.iter().any(|x| lc(&x.name) == lc(&c)));
        return had && !has;
    }
    let new_col = |t: &str, c: &str| {
        table(new, t).and_then(|t| t.columns.iter().find(|x| lc(&x.name) == lc(c)).cloned())
    };
    if let Some(rest) = step.strip_prefix("new column ") {
        let Some((t, c)) = column(&first(rest)) else {
            return false;
        };
        return new_col(&t, &c).is_some_and(|c| c.not_null && c.default.is_none());
    }
    if let Some(rest) = step.strip_prefix("narrow ") {
        let Some((t, c)) = column(&first(rest)) else {
            return false;
        };
        return new_col(&t, &c).is_some();
    }
    if step.contains(" becomes NOT NULL") || step.contains(" becomes a generated column") {
        let Some((t, c)) = column(&first(step)) else {
            return false;
        };
        return new_col(&t, &c).is_some();
    }
    false
}

/// A refusal because the rows break what only the newer version asks of them.
fn data_refusal(error: &str, old: &Snapshot, new: &Snapshot) -> bool {
    new_foreign_key_broken(error, old, new)
        || new_index_refuses(error, old, new)
        || new_check_refuses(error, old, new)
}

/// A refusal because a CHECK only the newer version has refuses the rows copied into a
/// rebuilt table: the failing statement fills a table that gained a CHECK.
fn new_check_refuses(error: &str, old: &Snapshot, new: &Snapshot) -> bool {
    let Some(statement) = error.split("\n  in: ").nth(1) else {
        return false;
    };
    let statement = statement.trim();
    let copied_from = statement
        .rsplit(" FROM ")
        .next()
        .map(|t| t.trim().trim_matches([';', '"']).to_ascii_lowercase());
    statement.starts_with("INSERT INTO ")
        && copied_from.is_some_and(|t| {
            let before = table(old, &t).map(|t| t.checks.clone()).unwrap_or_default();
            table(new, &t).is_some_and(|n| n.checks.iter().any(|c| !before.contains(c)))
        })
}

/// A refusal because an index only the newer version has cannot be built over the rows (an
/// expression index over `json_extract` of a column holding text that is not JSON): the
/// statement that failed creates that index.
fn new_index_refuses(error: &str, old: &Snapshot, new: &Snapshot) -> bool {
    let Some(statement) = error.split("\n  in: ").nth(1) else {
        return false;
    };
    let words: Vec<&str> = statement.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| w.eq_ignore_ascii_case("INDEX")) else {
        return false;
    };
    let name = words[at + 1..]
        .iter()
        .find(|w| !["IF", "NOT", "EXISTS"].contains(&w.to_ascii_uppercase().as_str()))
        .map(|w| w.trim_matches(['"', '`', '[', ']']).to_ascii_lowercase());
    let created = words[0].eq_ignore_ascii_case("CREATE");
    name.is_some_and(|n| {
        let same = |i: &&snapshot::IndexDef| lc(&i.name) == n;
        created
            && new.indexes.iter().any(|i| same(&i))
            && old.indexes.iter().find(same) != new.indexes.iter().find(same)
    })
}

/// A refusal because the rows break a foreign key that only the newer version has (the
/// application's own migration empties or rewrites those rows): each table named must have
/// gained a foreign key.
fn new_foreign_key_broken(error: &str, old: &Snapshot, new: &Snapshot) -> bool {
    let Some(list) = error
        .split("foreign key violations after the migration")
        .nth(1)
    else {
        return false;
    };
    let tables: Vec<&str> = list
        .split(';')
        .filter_map(|v| v.trim_start_matches([',', ':', ' ']).split(" row ").next())
        .map(|t| t.rsplit(' ').next().unwrap_or(t))
        .filter(|t| !t.is_empty())
        .collect();
    !tables.is_empty()
        && tables.iter().all(|t| {
            let before = table(old, t)
                .map(|t| t.foreign_keys.clone())
                .unwrap_or_default();
            table(new, t).is_some_and(|n| n.foreign_keys.iter().any(|fk| !before.contains(fk)))
        })
}

fn new_migration(diff: DiffOptions) -> NewMigration<'static> {
    NewMigration {
        name: "corpus step",
        software_level: "1",
        origin: "hq",
        diff,
    }
}

/// Walks one pair; `Ok(None)` when it migrated, `Ok(Some(steps))` when refused for real
/// destructive steps (and migrated once they were allowed), `Err` with what went wrong.
fn walk(dir: &Path, old_sql: &str, new_sql: &str) -> Result<Option<Vec<String>>, String> {
    let old_db = build(old_sql)?;
    let old = snapshot::read(&old_db).unwrap();
    let target = snapshot::read(&build(new_sql)?).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let schema_path = dir.join("schema.sql");
    let text = schema::schema_sql(&old_db).unwrap().join(";\n") + ";\n";
    std::fs::write(&schema_path, text).unwrap();
    let docking = dir.join("docking.toml");
    std::fs::write(&docking, docking_model(&old, &target)).unwrap();
    let init = |sub: &str| {
        Site::init_central(&CentralInit {
            dir: &dir.join(sub),
            name: Some("hq"),
            schema: &schema_path,
            docking: Some(&docking),
            data: None,
        })
        .map(|(s, _)| s)
        .map_err(|e| format!("init central: {e}"))
    };
    let migrate_to = |site: &Site, opts: DiffOptions| -> Result<(), String> {
        let live = snapshot::read(&site.conn).unwrap();
        fill(&site.dir.join("data.db"), &live);
        let before = rows(&site.conn, &old, &target);
        migrate::create_from_target(site, &target, &new_migration(opts))
            .map_err(|e| format!("migration create --to: {e}"))?;
        let after_snap = snapshot::read(&site.conn).unwrap();
        if after_snap.checksum().unwrap() != target.checksum().unwrap() {
            return Err("the migrated schema differs from the target built directly".into());
        }
        let after = rows(&site.conn, &old, &target);
        for (t, want) in &before {
            let got = after.get(t).cloned().unwrap_or_default();
            if &got != want {
                return Err(format!("rows of {t} changed: {want:?} -> {got:?}"));
            }
        }
        if !before.is_empty() && before.values().all(Vec::is_empty) {
            return Err("no table got a row: the walk tests nothing".into());
        }
        Ok(())
    };
    let site = init("hq")?;
    let live = snapshot::read(&site.conn).unwrap();
    // `schema diff`: the plan from the live schema to the target.
    match diff::diff(&live, &target, &DiffOptions::default()) {
        // A data-only step (or one SQLite cannot see): nothing to migrate.
        Ok(plan) if plan.is_empty() => Ok(None),
        Ok(_) => match migrate_to(&site, DiffOptions::default()) {
            Err(e) if data_refusal(&e, &old, &target) => Ok(Some(vec![e])),
            other => other.map(|()| None),
        },
        Err(EvolveError::Destructive { steps }) => {
            let unreal: Vec<&String> = steps
                .iter()
                .filter(|s| !really_destructive(s, &old, &target))
                .collect();
            if !unreal.is_empty() {
                return Err(format!(
                    "refused for steps that destroy nothing: {unreal:?}"
                ));
            }
            // `migration create --to` refuses the same way ...
            match migrate_to(&site, DiffOptions::default()) {
                Err(e) if e.contains("destructive steps refused") => {}
                other => {
                    return Err(format!(
                        "migration create --to without the refusal: {other:?}"
                    ));
                }
            }
            // ... and, allowed to, loses only what the steps say.
            let allowed = init("allowed")?;
            let opts = DiffOptions {
                allow_destructive: true,
                ..DiffOptions::default()
            };
            match migrate_to(&allowed, opts) {
                Err(e) if data_refusal(&e, &old, &target) => Ok(Some([steps, vec![e]].concat())),
                other => other.map(|()| Some(steps)),
            }
        }
        Err(e) => Err(format!("schema diff: {e}")),
    }
}

#[test]
fn every_consecutive_pair_of_real_schema_versions_migrates_or_is_refused_for_a_real_loss() {
    let root = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut report = String::new();
    let (mut passed, mut refused) = (0, 0);
    for h in histories() {
        assert!(h.versions.len() >= 2, "{}: fewer than two versions", h.name);
        for (i, pair) in h.versions.windows(2).enumerate() {
            let (from, to) = (&pair[0], &pair[1]);
            let dir = root
                .path()
                .join(format!("{}-{i}", h.name.replace('/', "-")));
            let label = format!("{}: {} -> {}", h.name, from.0, to.0);
            match walk(&dir, &from.1, &to.1) {
                Ok(None) => passed += 1,
                Ok(Some(steps)) => {
                    refused += 1;
                    writeln!(report, "refused {label}: {}", steps.join("; ")).unwrap();
                }
                Err(e) => {
                    eprintln!("failed {label}: {e}");
                    // The first line says it; a failing statement's text can be long.
                    let e: String = e.lines().next().unwrap_or("").chars().take(400).collect();
                    failures.push(format!("{label}: {e}"));
                }
            }
        }
    }
    eprintln!("{report}{passed} pairs migrated, {refused} refused for a real loss");
    assert!(
        failures.is_empty(),
        "{} pairs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(passed > 100, "{passed}");
}

#[test]
fn the_corpus_keeps_its_licences() {
    for d in ["shiori", "authelia", "pocket-id", "atlas"] {
        assert!(corpus_dir().join(d).join("LICENSE").is_file(), "{d}");
    }
}
