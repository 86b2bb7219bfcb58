//! The capture guard (SPEC 2.4.1): before a site applies or exports anything, and in
//! `status`, it checks that capture is exactly what berth installed.
//!
//! Tools that rebuild a table (`sqlite-utils transform`, DB Browser's "Modify table",
//! Alembic's batch mode) drop it and create a new one: its capture triggers go with the old
//! table, so writes stop being journaled without a sound, and a renamed column makes every
//! later change from central fail. The guard notices, names each table and what changed, and
//! stops the site; it never re-creates triggers by itself (writes made while they were gone
//! were not journaled, and a person has to know that). The remedy depends on the role
//! ([`Guard::remedy`]); `berth capture restore` ([`restore`]) reinstalls the triggers once
//! the tables are as recorded again.
//!
//! - [`inspect`] reads `sqlite_master` once, the recorded tables (`berth_tables`), and for
//!   each replicated table its columns and UNIQUE indexes (to know the triggers berth would
//!   install, [`crate::capture::trigger_statements`]); [`findings`] (pure) compares.
//! - The schema checksum (SPEC 5.2) of the replicated tables is compared with the recorded
//!   one; a difference is described by the diff of the recorded snapshot and the live one.
//! - User tables that are not replicated (made by a tool: `sqlite-utils insert`, `.import`)
//!   are reported with the command that makes them part of the schema; they do not stop
//!   the site.

use crate::capture;
pub use crate::error::guard::{Guard, Problem, SchemaChange, TableFinding};
use crate::error::{EngineError, Result};
use crate::evolve::{diff, history, snapshot};
use crate::schema::{Table, is_internal};
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A live user table: its name, columns and key columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    /// Name as in `sqlite_master`.
    pub name: String,
    /// Columns in order.
    pub columns: Vec<String>,
    /// Key columns in key order.
    pub pk: Vec<String>,
}

/// What [`findings`] compares: read by [`inspect`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The replicated tables as recorded (`berth_tables`).
    pub recorded: Vec<Table>,
    /// Live user tables by lower-case name (only the recorded ones need columns).
    pub live: BTreeMap<String, Option<LiveTable>>,
    /// Every trigger in `sqlite_master` whose name starts with `berth_`: name -> SQL.
    pub triggers: BTreeMap<String, String>,
    /// For each recorded table present: the statements berth installs now.
    pub expected: BTreeMap<String, Vec<(String, String)>>,
}

fn marked(cols: &[String], pk: &[String]) -> Vec<String> {
    cols.iter()
        .map(|c| {
            if pk.contains(c) {
                format!("{c}*")
            } else {
                c.clone()
            }
        })
        .collect()
}

/// Compares what was observed: per replicated table, what is wrong; and the user tables
/// that are not replicated (sorted).
pub fn findings(o: &Observed) -> (Vec<TableFinding>, Vec<String>) {
    let mut out = Vec::new();
    let mut known = BTreeSet::new();
    for t in &o.recorded {
        let lower = t.name.to_ascii_lowercase();
        known.insert(lower.clone());
        let mut problems = Vec::new();
        match o.live.get(&lower) {
            None => problems.push(Problem::TableMissing),
            Some(live) => {
                if let Some(live) = live
                    && (live.columns != t.columns || live.pk != t.pk)
                {
                    problems.push(Problem::ColumnsChanged {
                        recorded: marked(&t.columns, &t.pk),
                        live: marked(&live.columns, &live.pk),
                    });
                }
                let mut missing = Vec::new();
                let mut changed = Vec::new();
                for (name, sql) in o.expected.get(&lower).into_iter().flatten() {
                    match o.triggers.get(name) {
                        None => missing.push(name.clone()),
                        Some(have) if have != sql => changed.push(name.clone()),
                        Some(_) => {}
                    }
                }
                if !missing.is_empty() {
                    problems.push(Problem::TriggersMissing { triggers: missing });
                }
                if !changed.is_empty() {
                    problems.push(Problem::TriggersChanged { triggers: changed });
                }
            }
        }
        if !problems.is_empty() {
            out.push(TableFinding {
                table: t.name.clone(),
                problems,
            });
        }
    }
    let mut unreplicated: Vec<String> = o
        .live
        .iter()
        .filter(|(lower, _)| !known.contains(*lower))
        .map(|(lower, live)| {
            live.as_ref()
                .map_or_else(|| lower.clone(), |l| l.name.clone())
        })
        .collect();
    unreplicated.sort();
    (out, unreplicated)
}

fn live_table(conn: &Connection, name: &str) -> Result<LiveTable> {
    let mut st = conn.prepare_cached("SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let cols: Vec<(String, i64)> = st
        .query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut keyed: Vec<(i64, String)> = cols
        .iter()
        .filter(|c| c.1 > 0)
        .map(|c| (c.1, c.0.clone()))
        .collect();
    keyed.sort();
    Ok(LiveTable {
        name: name.to_string(),
        columns: cols.into_iter().map(|c| c.0).collect(),
        pk: keyed.into_iter().map(|k| k.1).collect(),
    })
}

/// Reads what the guard compares and compares it (no remedy yet: see [`check`]).
pub fn inspect(conn: &Connection) -> Result<Guard> {
    let recorded = capture::recorded(conn)?;
    let classes = crate::schema::Classes::load(conn)?;
    let shadow = crate::schema::shadow_tables(conn)?;
    // Local tables have no triggers and are not "unreplicated", but they are part of the
    // schema and so of its checksum.
    let in_schema: BTreeSet<String> = recorded
        .iter()
        .map(|t| t.name.to_ascii_lowercase())
        .chain(classes.local.iter().cloned())
        .collect();
    let mut o = Observed {
        recorded,
        ..Observed::default()
    };
    {
        let mut st = conn.prepare_cached(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('table', 'trigger')",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })?;
        for row in rows {
            let (kind, name, sql) = row?;
            if kind == "trigger" {
                if name.to_ascii_lowercase().starts_with("berth_") {
                    o.triggers.insert(name, sql.unwrap_or_default());
                }
            } else if !is_internal(&name)
                && !classes.is_local(&name)
                && !shadow.contains(&name.to_ascii_lowercase())
            {
                o.live.insert(name.to_ascii_lowercase(), None);
            }
        }
    }
    for t in &o.recorded {
        let lower = t.name.to_ascii_lowercase();
        if let Some(slot) = o.live.get_mut(&lower) {
            let mut live = live_table(conn, &t.name)?;
            if live.pk.is_empty()
                && let Some(key) = classes.key(&t.name)
            {
                live.pk = key
                    .iter()
                    .filter_map(|k| live.columns.iter().find(|c| c.eq_ignore_ascii_case(k)))
                    .cloned()
                    .collect();
            }
            let unique = capture::unique_sets(conn, t)?;
            o.expected
                .insert(lower, capture::trigger_statements(t, &unique));
            *slot = Some(live);
        }
    }
    let (tables, unreplicated) = findings(&o);
    let schema = schema_change(conn, &in_schema)?;
    Ok(Guard {
        tables,
        schema,
        unreplicated,
        ..Guard::default()
    })
}

/// The live checksum of the replicated tables against the recorded one; on a difference,
/// what changed.
fn schema_change(conn: &Connection, replicated: &BTreeSet<String>) -> Result<Option<SchemaChange>> {
    let recorded = store::meta(conn, meta_keys::SCHEMA_CHECKSUM)?.unwrap_or_default();
    if recorded.is_empty() || replicated.is_empty() {
        // A node before its extract: nothing is replicated yet.
        return Ok(None);
    }
    let keep = |t: &str| replicated.contains(&t.to_ascii_lowercase());
    let live_snap = snapshot::read_where(conn, &keep)?;
    let live = live_snap.checksum()?;
    if live == recorded {
        return Ok(None);
    }
    let changes = match history::latest(conn)? {
        Some(r) if r.checksum == recorded => {
            let opts = diff::DiffOptions {
                allow_destructive: true,
                ..diff::DiffOptions::default()
            };
            match diff::diff(&r.snapshot, &live_snap, &opts) {
                Ok(plan) => plan
                    .steps
                    .iter()
                    .map(|s| format!("{}: {}", s.object, s.detail))
                    .collect(),
                Err(e) => vec![e.to_string()],
            }
        }
        _ => Vec::new(),
    };
    Ok(Some(SchemaChange {
        recorded,
        live,
        changes,
    }))
}

/// Meta key of the fingerprint of the last sound check ([`fingerprint`]).
const SOUND_KEY: &str = "capture_guard";

/// Meta key of the [`capture::text_version`] of the berth that made the last sound check.
const TEXT_KEY: &str = "capture_text";

/// The sha256 of everything the guard's verdict depends on: every row of `sqlite_master`
/// (the user schema, berth's triggers and tables), `berth_tables` and the recorded schema
/// checksum; and the names of the user tables (for the unreplicated ones). Equal
/// fingerprints give equal verdicts, so a fingerprint recorded after a sound check lets the
/// next dock skip the trigger texts and the snapshot (the checksum) entirely. The version of
/// the trigger text this berth installs is part of it: after an upgrade that changes the
/// text, the first check compares the triggers again (and brings them up to date).
fn fingerprint(conn: &Connection) -> Result<(String, Vec<String>, BTreeSet<String>)> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(capture::text_version().as_bytes());
    let mut user = Vec::new();
    let mut st = conn.prepare_cached(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let (kind, name): (String, String) = (r.get(0)?, r.get(1)?);
        for part in [kind.as_bytes(), name.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        for i in [2, 3] {
            feed(&mut h, r.get_ref(i)?);
        }
        if kind == "table" && !is_internal(&name) {
            user.push(name);
        }
    }
    let mut recorded = BTreeSet::new();
    let mut st = conn.prepare_cached("SELECT name, pk, cols FROM berth_tables ORDER BY name")?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        for i in 0..3 {
            feed(&mut h, r.get_ref(i)?);
        }
        recorded.insert(r.get::<_, String>(0)?.to_ascii_lowercase());
    }
    let classes = crate::schema::Classes::load(conn)?;
    h.update(classes.to_json().as_bytes());
    recorded.extend(classes.local);
    recorded.extend(crate::schema::shadow_tables(conn)?);
    let checksum = store::meta(conn, meta_keys::SCHEMA_CHECKSUM)?.unwrap_or_default();
    h.update(checksum.as_bytes());
    Ok((hex::encode(h.finalize()), user, recorded))
}

fn feed(h: &mut sha2::Sha256, v: rusqlite::types::ValueRef<'_>) {
    use rusqlite::types::ValueRef;
    use sha2::Digest;
    let owned;
    let bytes: &[u8] = match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        ValueRef::Null => b"\0null",
        ValueRef::Integer(i) => {
            owned = i.to_string();
            owned.as_bytes()
        }
        ValueRef::Real(f) => {
            owned = f.to_bits().to_string();
            owned.as_bytes()
        }
    };
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The guard at a site, with what to do for its role.
pub fn check(site: &Site) -> Result<Guard> {
    check_with(site, false)
}

/// `remember`: record the fingerprint when sound (a dock does; `status` writes nothing).
fn check_with(site: &Site, remember: bool) -> Result<Guard> {
    let (print, user, recorded) = fingerprint(&site.conn)?;
    let mut g = if store::meta(&site.conn, SOUND_KEY)?.as_deref() == Some(print.as_str()) {
        let mut unreplicated: Vec<String> = user
            .into_iter()
            .filter(|t| !recorded.contains(&t.to_ascii_lowercase()))
            .collect();
        unreplicated.sort();
        Guard {
            unreplicated,
            ..Guard::default()
        }
    } else {
        let mut g = inspect(&site.conn)?;
        let mut print = print;
        let version = capture::text_version();
        let checked_by_this_version = store::meta(&site.conn, SOUND_KEY)?.is_some()
            && store::meta(&site.conn, TEXT_KEY)?.as_deref() == Some(version.as_str());
        if remember && only_older_text(&g) && !checked_by_this_version {
            // A site from before the guard, or last found sound by a berth whose trigger text
            // differs, first checked by this version: every trigger is there and the tables
            // are as recorded, only the text is an earlier berth's (a software upgrade changes
            // it). They are berth's own, brought to this version's text once; from then on
            // the recorded fingerprint tells them from a tool's.
            let tx = rusqlite::Transaction::new_unchecked(
                &site.conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            capture::resume(&tx)?;
            tx.commit()?;
            g = inspect(&site.conn)?;
            print = fingerprint(&site.conn)?.0;
        }
        if remember && g.is_sound() {
            store::set_meta(&site.conn, SOUND_KEY, &print)?;
            store::set_meta(&site.conn, TEXT_KEY, &version)?;
        }
        g
    };
    let dir = site.dir.display().to_string();
    let has_nodes = site.role() == Role::Central
        && crate::peer::all(&site.conn)?
            .iter()
            .any(|p| p.role == "node");
    if !g.is_sound() {
        g.remedy = Some(remedy(&g, site.role(), has_nodes, &dir));
    }
    if !g.unreplicated.is_empty() {
        g.unreplicated_hint = Some(unreplicated_hint(site.role(), has_nodes, &dir));
    }
    Ok(g)
}

/// Whether the only findings are trigger texts that differ (none missing, no table or column
/// or schema change).
fn only_older_text(g: &Guard) -> bool {
    g.schema.is_none()
        && !g.tables.is_empty()
        && g.tables.iter().all(|t| {
            t.problems
                .iter()
                .all(|p| matches!(p, Problem::TriggersChanged { .. }))
        })
}

/// Runs the guard and stops (with [`EngineError::CaptureStopped`]) unless it is sound.
pub fn require(site: &Site) -> Result<()> {
    check_with(site, true)?.require_sound(site.name())
}

/// What to do, by role (SPEC 2.4.1).
pub fn remedy(g: &Guard, role: Role, has_nodes: bool, dir: &str) -> String {
    let schema_changed = g.schema.is_some()
        || g.tables.iter().any(|t| {
            t.problems
                .iter()
                .any(|p| matches!(p, Problem::TableMissing | Problem::ColumnsChanged { .. }))
        });
    let restore = format!(
        "then run `berth capture restore --site {dir}`, which reinstalls the capture triggers \
         (writes made while they were missing were not recorded: check those rows)"
    );
    if !schema_changed {
        return format!(
            "the tables are as recorded but their capture is not: {}",
            restore.trim_start_matches("then ")
        );
    }
    match (role, has_nodes) {
        (Role::Node, _) => format!(
            "a node never changes its schema itself: undo the change (e.g. `sqlite-utils \
             transform` back, or restore data.db from a backup) so the tables are as recorded, \
             {restore}. A schema change is made at central as a migration (`berth migration \
             create --to FILE` there) and reaches this node with its bundles."
        ),
        (Role::Central, true) => format!(
            "central's schema changes only through migrations, which reach every node: restore \
             the tables as recorded (undo the change, or restore data.db from a backup), \
             {restore}; then make the change a migration with `berth migration create --site \
             {dir} --to FILE --name NAME` (FILE: the schema you want)."
        ),
        (Role::Central, false) => format!(
            "on a developer's copy, freeze the change into the next migration with `berth \
             migration create --site {dir} --name NAME` (it reinstalls capture), or undo the \
             change and {}",
            restore.trim_start_matches("then ")
        ),
    }
}

/// The command that makes a table made outside berth part of the schema, by role.
pub fn unreplicated_hint(role: Role, has_nodes: bool, dir: &str) -> String {
    match (role, has_nodes) {
        (Role::Node, _) => "not replicated: a node's schema changes only through central. To \
             replicate such a table, add it at central (`berth migration create --site CENTRAL \
             --to FILE --name NAME`) and remove it here; while it is here, a migration from \
             central does not apply (its checksum covers every table)"
            .to_string(),
        (Role::Central, true) => format!(
            "not replicated. To replicate such a table, move it out of data.db (dump it and \
             drop it), add it with `berth migration create --site {dir} --to FILE --name NAME` \
             (FILE declares it, with a PRIMARY KEY), then load its rows again"
        ),
        (Role::Central, false) => format!(
            "not replicated. To make such a table part of the schema, give it a PRIMARY KEY and \
             run `berth migration create --site {dir} --name NAME`"
        ),
    }
}

/// What [`restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// The tables whose triggers were reinstalled.
    pub tables: Vec<String>,
}

/// `berth capture restore`: reinstalls the capture triggers of every replicated table, in
/// one transaction, when the tables are as recorded (same columns, same checksum); refused
/// otherwise with the guard's findings. The only way berth re-creates triggers after the
/// guard stopped a site: by a person's command, who is told that writes made while capture
/// was off were not recorded.
pub fn restore(site: &Site) -> Result<Restored> {
    let g = check(site)?;
    let schema_changed = g.schema.is_some()
        || g.tables.iter().any(|t| {
            t.problems
                .iter()
                .any(|p| matches!(p, Problem::TableMissing | Problem::ColumnsChanged { .. }))
        });
    if schema_changed {
        return Err(EngineError::CaptureStopped {
            site: site.name().to_string(),
            guard: Box::new(g),
        });
    }
    let tables = g.named_tables();
    let tx =
        rusqlite::Transaction::new_unchecked(&site.conn, rusqlite::TransactionBehavior::Immediate)?;
    capture::resume(&tx)?;
    tx.commit()?;
    Ok(Restored { tables })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, cols: &[&str], pk: &[&str]) -> Table {
        Table {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            pk: pk.iter().map(|c| c.to_string()).collect(),
            rowid_key: false,
        }
    }

    fn live(name: &str, cols: &[&str], pk: &[&str]) -> Option<LiveTable> {
        Some(LiveTable {
            name: name.into(),
            columns: cols.iter().map(|c| c.to_string()).collect(),
            pk: pk.iter().map(|c| c.to_string()).collect(),
        })
    }

    fn observed() -> Observed {
        let t = table("dogs", &["id", "name"], &["id"]);
        let expected = capture::trigger_statements(&t, &[vec!["id".to_string()]]);
        Observed {
            recorded: vec![t],
            live: [("dogs".to_string(), live("dogs", &["id", "name"], &["id"]))].into(),
            triggers: expected.iter().cloned().collect(),
            expected: [("dogs".to_string(), expected)].into(),
        }
    }

    #[test]
    fn sound_site_has_no_findings() {
        assert_eq!(findings(&observed()), (vec![], vec![]));
    }

    #[test]
    fn missing_changed_and_renamed_are_named() {
        let mut o = observed();
        o.triggers.remove("berth_ins_dogs");
        o.triggers
            .insert("berth_del_dogs".into(), "CREATE TRIGGER x".into());
        o.live
            .insert("dogs".into(), live("dogs", &["id", "title"], &["id"]));
        o.live.insert("cats".into(), live("cats", &["id"], &["id"]));
        let (f, unreplicated) = findings(&o);
        assert_eq!(unreplicated, vec!["cats".to_string()]);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].problems,
            vec![
                Problem::ColumnsChanged {
                    recorded: vec!["id*".into(), "name".into()],
                    live: vec!["id*".into(), "title".into()],
                },
                Problem::TriggersMissing {
                    triggers: vec!["berth_ins_dogs".into()]
                },
                Problem::TriggersChanged {
                    triggers: vec!["berth_del_dogs".into()]
                },
            ]
        );
    }

    #[test]
    fn a_dropped_table_is_missing() {
        let mut o = observed();
        o.live.clear();
        let (f, _) = findings(&o);
        assert_eq!(f[0].problems, vec![Problem::TableMissing]);
    }

    #[test]
    fn installed_triggers_are_the_text_sqlite_keeps() {
        let c = Connection::open_in_memory().unwrap();
        store::install(&c).unwrap();
        c.execute_batch("CREATE TABLE t(id TEXT PRIMARY KEY, u TEXT UNIQUE, \"odd \"\"n\" BLOB);")
            .unwrap();
        capture::install(&c, &crate::schema::tables(&c).unwrap()).unwrap();
        let g = inspect(&c).unwrap();
        assert!(g.tables.is_empty(), "{g:?}");
        c.execute_batch("DROP TRIGGER berth_pre_t").unwrap();
        let g = inspect(&c).unwrap();
        assert_eq!(
            g.tables[0].problems,
            vec![Problem::TriggersMissing {
                triggers: vec!["berth_pre_t".into()]
            }]
        );
    }
}
