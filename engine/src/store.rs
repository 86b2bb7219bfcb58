//! The `berth_*` tables: all engine state lives inside the site's own SQLite file, so an apply
//! and its bookkeeping commit in one transaction.

use crate::error::Result;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

/// Opens a site database with berth's settings.
///
/// WAL lets applications keep reading while a bundle applies; `synchronous=FULL` because a
/// bundle applied and acknowledged must survive a power cut (the sender may prune what we ack).
/// The page cache is 16 MiB, and SQLite's sorter takes as much again before it spills to a
/// temporary file: with the changes streamed, that is most of what a dock's memory peaks at,
/// whatever the bundle's size (issue 20; 256 MiB held 286 MB at central docking 2M changes,
/// and was no faster there: `engine/benches/memory.rs`, BENCHMARKS 9b).
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    // One statement per (table, operation, column set) is prepared during a merge.
    conn.set_prepared_statement_cache_capacity(512);
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=FULL;
         PRAGMA foreign_keys=ON;
         PRAGMA cache_size=-16384;",
    )?;
    Ok(conn)
}

/// DDL of berth's own tables.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS berth_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS berth_log(
  pos INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  op TEXT NOT NULL CHECK (op = 'I' OR op = 'U' OR op = 'D' OR op = 'P' OR op = 'A' OR op = 'S' OR op = 'M'),
  old TEXT,
  new TEXT,
  origin TEXT,
  origin_pos INTEGER,
  clock INTEGER,
  target TEXT,
  seen INTEGER
);
CREATE TABLE IF NOT EXISTS berth_tables(
  name TEXT PRIMARY KEY,
  pk TEXT NOT NULL,
  cols TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_peers(
  name TEXT PRIMARY KEY,
  public_key TEXT NOT NULL,
  role TEXT NOT NULL,
  attrs TEXT NOT NULL DEFAULT '{}',
  out_seq INTEGER NOT NULL DEFAULT 0,
  in_seq INTEGER NOT NULL DEFAULT 0,
  applied_pos INTEGER NOT NULL DEFAULT 0,
  acked_pos INTEGER NOT NULL DEFAULT 0,
  sent_pos INTEGER NOT NULL DEFAULT 0,
  sent_ack INTEGER NOT NULL DEFAULT 0,
  last_in INTEGER,
  last_out INTEGER,
  added INTEGER NOT NULL,
  revoked INTEGER,
  routed_pos INTEGER NOT NULL DEFAULT 0,
  partial_pos INTEGER NOT NULL DEFAULT 0
);
-- At central: the keys of revoked nodes whose name was enrolled again with a new key (the
-- name's row in berth_peers holds the new key). A request signed by one is refused.
CREATE TABLE IF NOT EXISTS berth_revoked_keys(
  public_key TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  revoked INTEGER NOT NULL,
  replaced INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_partial(
  node TEXT NOT NULL,
  ppos INTEGER NOT NULL,
  change TEXT NOT NULL,
  PRIMARY KEY (node, ppos)
) WITHOUT ROWID;
-- At central: after a routing pass, a node that applied its partial log up to `ppos` has
-- seen every change of central's log up to `pos` that it is to receive (SPEC 2.10).
CREATE TABLE IF NOT EXISTS berth_route_marks(
  node TEXT NOT NULL,
  ppos INTEGER NOT NULL,
  pos INTEGER NOT NULL,
  PRIMARY KEY (node, ppos)
) WITHOUT ROWID;
-- At central: each node's last replica report (SPEC 2.15) and the repairs sent for it.
CREATE TABLE IF NOT EXISTS berth_replicas(
  node TEXT PRIMARY KEY,
  report TEXT,
  at INTEGER,
  repair_seq INTEGER NOT NULL DEFAULT 0,
  attempts INTEGER NOT NULL DEFAULT 0,
  digests_seq INTEGER NOT NULL DEFAULT 0
);
-- At a node: rows a repair replaced or removed, kept aside whole (SPEC 2.15).
CREATE TABLE IF NOT EXISTS berth_kept(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  node_row TEXT,
  central_row TEXT,
  bundle_id TEXT NOT NULL,
  at INTEGER NOT NULL
);
-- At a node: buckets that statements from central changed on purpose, left out of the
-- replica comparison (SPEC 2.15).
CREATE TABLE IF NOT EXISTS berth_local_buckets(
  tbl TEXT NOT NULL,
  bucket INTEGER NOT NULL,
  PRIMARY KEY (tbl, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS berth_node_rows(
  node TEXT NOT NULL,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  PRIMARY KEY (node, tbl, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS berth_node_rows_row ON berth_node_rows(tbl, pk);
-- At central: rows a node holds and should not, or should hold and does not, found by a
-- routing batch that ended inside that node's merge: settled (downloaded or removed) by the
-- batch that holds the merge's marker, so after it (SPEC 2.8, 2.10).
CREATE TABLE IF NOT EXISTS berth_route_later(
  seq INTEGER PRIMARY KEY,
  node TEXT NOT NULL,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_instances(
  obj TEXT NOT NULL,
  id TEXT NOT NULL,
  node TEXT NOT NULL,
  PRIMARY KEY (obj, id, node)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS berth_instances_node ON berth_instances(node, obj);
CREATE TABLE IF NOT EXISTS berth_edges(
  map TEXT NOT NULL,
  dep_id TEXT NOT NULL,
  sup_id TEXT NOT NULL,
  PRIMARY KEY (map, dep_id, sup_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS berth_edges_sup ON berth_edges(map, sup_id);
CREATE TABLE IF NOT EXISTS berth_applied(
  bundle_id TEXT PRIMARY KEY,
  peer TEXT NOT NULL,
  seq INTEGER NOT NULL,
  changes INTEGER NOT NULL,
  at INTEGER NOT NULL
);
-- Retention (engine/src/retention.rs) finds each peer's newest row and the old ones.
CREATE INDEX IF NOT EXISTS berth_applied_peer ON berth_applied(peer, seq);
CREATE INDEX IF NOT EXISTS berth_applied_at ON berth_applied(at);
CREATE TABLE IF NOT EXISTS berth_held(
  file TEXT PRIMARY KEY,
  bundle_id TEXT NOT NULL,
  peer TEXT NOT NULL,
  seq INTEGER NOT NULL,
  reason TEXT NOT NULL,
  since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_conflicts(
  id INTEGER PRIMARY KEY,
  node TEXT NOT NULL,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  kind TEXT NOT NULL,
  columns TEXT NOT NULL,
  node_old TEXT,
  node_new TEXT,
  central TEXT,
  resolution TEXT NOT NULL,
  bundle_id TEXT NOT NULL,
  origin_pos INTEGER NOT NULL,
  at INTEGER NOT NULL
);
-- At central: collisions an admin settled by hand (`berth conflicts resolve`).
CREATE TABLE IF NOT EXISTS berth_resolved(
  conflict INTEGER PRIMARY KEY,
  took TEXT NOT NULL CHECK (took = 'node' OR took = 'central'),
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_overrides(
  id INTEGER PRIMARY KEY,
  tbl TEXT NOT NULL,
  pk TEXT NOT NULL,
  local_op TEXT NOT NULL,
  central_op TEXT NOT NULL,
  bundle_id TEXT NOT NULL,
  at INTEGER NOT NULL
);
-- At central: admin keys (engine/src/keychain.rs); a migration's executable step must be
-- signed by one.
CREATE TABLE IF NOT EXISTS berth_admins(
  key_id TEXT PRIMARY KEY,
  public_key TEXT NOT NULL,
  name TEXT NOT NULL,
  added INTEGER NOT NULL
);
-- What each peer told of its schema (engine/src/migrate.rs): at central, each node's
-- version; at a node, central's latest version.
CREATE TABLE IF NOT EXISTS berth_peer_schema(
  peer TEXT PRIMARY KEY,
  version INTEGER NOT NULL,
  checksum TEXT,
  latest INTEGER,
  at INTEGER NOT NULL
);
-- Software upgrades (engine/src/upgrade, SPEC part 3). At central: packages (master record),
-- their files (detail records), activation, where each node stands, the reports received.
CREATE TABLE IF NOT EXISTS berth_upgrades(
  name TEXT PRIMARY KEY,
  level TEXT NOT NULL,
  description TEXT NOT NULL,
  download_message TEXT NOT NULL,
  apply_message TEXT NOT NULL,
  download TEXT NOT NULL,
  apply TEXT NOT NULL,
  apply_at TEXT NOT NULL,
  schema_version TEXT,
  timeout INTEGER NOT NULL,
  install TEXT NOT NULL,
  toc TEXT NOT NULL,
  published INTEGER NOT NULL,
  active INTEGER,
  activated INTEGER
);
CREATE TABLE IF NOT EXISTS berth_upgrade_files(
  package TEXT NOT NULL,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  PRIMARY KEY (package, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS berth_upgrade_nodes(
  package TEXT NOT NULL,
  node TEXT NOT NULL,
  state TEXT,
  detail TEXT NOT NULL DEFAULT '',
  exit_code INTEGER,
  output TEXT NOT NULL DEFAULT '',
  level TEXT,
  at INTEGER,
  last_report INTEGER NOT NULL DEFAULT 0,
  requested INTEGER NOT NULL DEFAULT 0,
  has_files INTEGER NOT NULL DEFAULT 0,
  toc_sent INTEGER,
  files_sent INTEGER,
  PRIMARY KEY (package, node)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS berth_upgrade_reports(
  node TEXT NOT NULL,
  id INTEGER NOT NULL,
  package TEXT NOT NULL,
  step TEXT NOT NULL,
  detail TEXT NOT NULL,
  exit_code INTEGER,
  output TEXT NOT NULL,
  level TEXT NOT NULL,
  at INTEGER NOT NULL,
  received INTEGER NOT NULL,
  PRIMARY KEY (node, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS berth_upgrade_peers(
  node TEXT PRIMARY KEY,
  reports_in INTEGER NOT NULL DEFAULT 0,
  reports_acked INTEGER NOT NULL DEFAULT 0
);
-- At a node: the packages announced to it and where each stands, and the reports to send.
CREATE TABLE IF NOT EXISTS berth_upgrade_local(
  name TEXT PRIMARY KEY,
  level TEXT NOT NULL,
  toc TEXT NOT NULL,
  state TEXT NOT NULL,
  files INTEGER NOT NULL DEFAULT 0,
  detail TEXT NOT NULL DEFAULT '',
  exit_code INTEGER,
  output TEXT NOT NULL DEFAULT '',
  reminders INTEGER NOT NULL DEFAULT 0,
  updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS berth_upgrade_outbox(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  package TEXT NOT NULL,
  step TEXT NOT NULL,
  detail TEXT NOT NULL,
  exit_code INTEGER,
  output TEXT NOT NULL,
  level TEXT NOT NULL,
  at INTEGER NOT NULL
);
"#;

/// Creates berth's tables if they are missing.
pub fn install(conn: &Connection) -> Result<()> {
    conn.execute_batch(DDL)?;
    upgrade_log(conn)
}

/// Brings a log made by an older berth to the current definition, entries kept (inside the
/// caller's transaction when there is one): a log made before pre-images existed refuses op
/// `P`, which the capture triggers write, so it is rebuilt; a log without the `seen` column
/// (SPEC 2.4) gets it.
pub fn upgrade_log(conn: &Connection) -> Result<()> {
    let sql: String = conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'berth_log'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains("op = 'P'") {
        let create = DDL
            .split(';')
            .find(|s| s.contains("berth_log("))
            .unwrap_or_default()
            .replace("IF NOT EXISTS berth_log(", "berth_log_upgraded(")
            .replace(",\n  seen INTEGER", "");
        let indexes: Vec<String> = conn
            .prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'berth_log' AND sql IS NOT NULL")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        conn.execute_batch(&format!(
            "{create};
             INSERT INTO berth_log_upgraded SELECT * FROM berth_log;
             DROP TABLE berth_log;
             ALTER TABLE berth_log_upgraded RENAME TO berth_log;"
        ))?;
        for ix in indexes {
            conn.execute_batch(&ix)?;
        }
    }
    if !sql.contains("seen INTEGER") {
        conn.execute_batch("ALTER TABLE berth_log ADD COLUMN seen INTEGER")?;
    }
    Ok(())
}

/// The keys of `berth_meta` (SPEC 2.3): berth's own vocabulary for the site's state, one
/// place for all of them. Keys kept beside the code that owns them: `clock_stamped`
/// ([`stamp_clock`]), `table_classes` (`schema`), `capture_guard` and `capture_text`
/// (`guard`), `applied_pruned.<peer>` (`retention`), `extract_seq.<peer>` (`extract`),
/// `compacted.<node>` (`catchup`).
pub mod meta_keys {
    /// The site's role, `central` or `node` (SPEC 2.1: with `name` and `site_key`, what identifies the site the database belongs to).
    pub const ROLE: &str = "role";
    /// The site's name.
    pub const NAME: &str = "name";
    /// The site's public key (hex) when it was last opened.
    pub const SITE_KEY: &str = "site_key";
    /// At a node: its central's name, pinned by the extract.
    pub const CENTRAL: &str = "central";
    /// The Lamport clock (SPEC 2.10).
    pub const CLOCK: &str = "clock";
    /// The schema version (SPEC 5.5).
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// The schema snapshot's checksum (SPEC 5.2).
    pub const SCHEMA_CHECKSUM: &str = "schema_checksum";
    /// The software level installed (Part 4).
    pub const SOFTWARE_LEVEL: &str = "software_level";
    /// At a node: the digests of central's newest bundle (SPEC 2.15).
    pub const REPLICA_DIGESTS: &str = "replica_digests";
    /// At a node: the bundle those digests came with.
    pub const REPLICA_DIGESTS_SEQ: &str = "replica_digests_seq";
    /// At a node: rows a repair changed since the last report was sent.
    pub const REPLICA_REPAIRED: &str = "replica_repaired";
    /// At a node: the last comparison of its rows with the digests.
    pub const REPLICA_RESULT: &str = "replica_result";
    /// At a node: the last replica report sent.
    pub const REPLICA_SENT: &str = "replica_sent";
    /// At central: the next routing pass rebuilds edges and instance sets (the model changed).
    pub const ROUTING_RESYNC: &str = "routing_resync";
    /// At a node: the upgrade reports central acknowledged.
    pub const UPGRADE_REPORTS_ACKED: &str = "upgrade_reports_acked";
    /// At a node: the upgrade reports sent.
    pub const UPGRADE_REPORTS_SENT: &str = "upgrade_reports_sent";
}

/// Reads a value of `berth_meta`.
pub fn meta(conn: &Connection, key: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT value FROM berth_meta WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Reads an integer value of `berth_meta` (0 when unset).
pub fn meta_i64(conn: &Connection, key: &str) -> Result<i64> {
    Ok(meta(conn, key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// Removes a value of `berth_meta`.
pub fn clear_meta(conn: &Connection, key: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM berth_meta WHERE key = ?1")?
        .execute(params![key])?;
    Ok(())
}

/// Writes a value of `berth_meta`.
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO berth_meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Berth's own JSON `text`, stored at `place` (a table and column, or a `berth_meta` key),
/// as `T`: a value that does not parse is an error, never a default.
pub fn stored_json<T: serde::de::DeserializeOwned>(place: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| crate::EngineError::Stored {
        place: place.to_string(),
        reason: e.to_string(),
    })
}

/// Column `i` of `r`, berth's own JSON, as `T` (inside a row mapping; the error names the
/// column).
pub fn json_column<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// [`json_column`] of a column that may be NULL.
pub fn json_column_opt<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<Option<T>> {
    match r.get::<_, Option<String>>(i)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        }),
    }
}

/// Highest position in the log (0 when empty).
pub fn max_pos(conn: &Connection) -> Result<i64> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(pos), 0) FROM berth_log", [], |r| {
            r.get(0)
        })?,
    )
}

/// The lowest position central's log still holds (entries below it were pruned; positions
/// are never reused, so there is no gap above it).
pub fn log_floor(conn: &Connection) -> Result<i64> {
    let first: Option<i64> = conn.query_row("SELECT MIN(pos) FROM berth_log", [], |r| r.get(0))?;
    Ok(first.unwrap_or(1))
}

/// `berth_meta` key: every log entry at or below this position carries its clock.
const CLOCK_STAMPED: &str = "clock_stamped";

const STAMP_CLOCK: &str = "UPDATE berth_log SET clock = ?1 WHERE pos > ?2 AND clock IS NULL";

/// Stamps the log entries journaled since the last stamp with `clock` (SPEC 2.8: before
/// exporting or applying). Only the entries after the position recorded at the last stamp
/// are read, so the cost follows what was journaled since, not the log's size (central stamps
/// before writing each node's bundle; a scan of the whole log each time made an idle dock
/// cost nodes x log size, issue 20). The log only grows at its end: `pos` is an INTEGER
/// PRIMARY KEY given as the largest + 1, and pruning keeps the newest entry.
pub fn stamp_clock(conn: &Connection, clock: i64) -> Result<()> {
    let from = meta_i64(conn, CLOCK_STAMPED)?;
    conn.prepare_cached(STAMP_CLOCK)?
        .execute(params![clock, from])?;
    let to = max_pos(conn)?;
    if to != from {
        set_meta(conn, CLOCK_STAMPED, &to.to_string())?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Quotes an SQL identifier: the one place identifiers enter SQL text.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (for DDL where parameters cannot be bound).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berths_own_json_that_does_not_parse_is_an_error_never_a_default() {
        let bad = stored_json::<Vec<String>>("berth_meta replica_sent", "{not json");
        let Err(crate::EngineError::Stored { place, .. }) = bad else {
            panic!("{bad:?}");
        };
        assert_eq!(place, "berth_meta replica_sent");
        let c = Connection::open_in_memory().unwrap();
        let read = |text: Option<&str>| {
            c.query_row("SELECT ?1", params![text], |r| {
                json_column_opt::<Vec<String>>(r, 0)
            })
        };
        assert_eq!(read(None).unwrap(), None);
        assert_eq!(read(Some(r#"["a"]"#)).unwrap(), Some(vec!["a".to_string()]));
        assert!(read(Some("[")).is_err());
        let whole = c.query_row("SELECT 'x'", [], |r| json_column::<Vec<String>>(r, 0));
        assert!(whole.is_err());
    }

    fn journal(c: &Connection, n: i64) {
        c.execute(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < ?1)
             INSERT INTO berth_log(tbl, pk, op) SELECT 't', json_array(x), 'I' FROM i",
            [n],
        )
        .unwrap();
    }

    fn unstamped(c: &Connection) -> i64 {
        c.query_row(
            "SELECT COUNT(*) FROM berth_log WHERE clock IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// Issue 20: stamping reads only what was journaled since the last stamp (a range of
    /// the primary key), not the whole log: central stamps before every node's bundle, so a
    /// scan made an idle dock cost nodes x log size.
    #[test]
    fn stamping_the_clock_reads_only_the_log_after_the_last_stamp() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(DDL).unwrap();
        let plan: Vec<String> = c
            .prepare(&format!("EXPLAIN QUERY PLAN {STAMP_CLOCK}"))
            .unwrap()
            .query_map(params![1, 0], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|d| d.contains("SEARCH berth_log USING INTEGER PRIMARY KEY (rowid>?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{plan:?}");

        // Every entry journaled since is stamped, also those before an entry written with
        // its clock (a merge's marker) in the same transaction.
        journal(&c, 1000);
        stamp_clock(&c, 5).unwrap();
        assert_eq!(unstamped(&c), 0);
        assert_eq!(meta_i64(&c, CLOCK_STAMPED).unwrap(), 1000);
        journal(&c, 3);
        c.execute(
            "INSERT INTO berth_log(tbl, pk, op, clock) VALUES ('', '[]', 'A', 6)",
            [],
        )
        .unwrap();
        journal(&c, 2);
        stamp_clock(&c, 7).unwrap();
        assert_eq!(unstamped(&c), 0);
        let stamped: Vec<i64> = c
            .prepare("SELECT clock FROM berth_log WHERE pos > 1000 ORDER BY pos")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(stamped, [7, 7, 7, 6, 7, 7]);
        assert_eq!(meta_i64(&c, CLOCK_STAMPED).unwrap(), 1006);
        // What was stamped keeps its clock.
        stamp_clock(&c, 8).unwrap();
        let old: i64 = c
            .query_row("SELECT clock FROM berth_log WHERE pos = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(old, 5);
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("O'Hara"), "'O''Hara'");
    }

    /// A log made before pre-images existed is rebuilt: its entries and indexes are kept,
    /// `P` is accepted, and the `seen` column is added.
    #[test]
    fn a_log_from_before_pre_images_is_upgraded() {
        let c = Connection::open_in_memory().unwrap();
        let old = DDL
            .replace("op = 'P' OR ", "")
            .replace(",\n  seen INTEGER", "");
        assert_ne!(old, DDL);
        c.execute_batch(&old).unwrap();
        c.execute_batch(
            "CREATE INDEX berth_log_key ON berth_log(tbl, pk);
             INSERT INTO berth_log(tbl, pk, op, old) VALUES ('t', '[1]', 'D', '{\"id\":1}');",
        )
        .unwrap();
        let refused = c.execute(
            "INSERT INTO berth_log(tbl, pk, op) VALUES ('t', '[2]', 'P')",
            [],
        );
        assert!(refused.is_err());
        install(&c).unwrap();
        let kept: (String, String) = c
            .query_row("SELECT op, old FROM berth_log WHERE pos = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, ("D".into(), r#"{"id":1}"#.into()));
        c.execute(
            "INSERT INTO berth_log(tbl, pk, op) VALUES ('t', '[2]', 'P')",
            [],
        )
        .unwrap();
        let index: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'berth_log_key' AND tbl_name = 'berth_log'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 1);
        install(&c).unwrap();
        // The column the knowledge stamp goes in (SPEC 2.4) was added.
        c.execute("UPDATE berth_log SET seen = 3 WHERE pos = 1", [])
            .unwrap();
    }

    #[test]
    fn install_is_idempotent_and_meta_round_trips() {
        let c = Connection::open_in_memory().unwrap();
        install(&c).unwrap();
        install(&c).unwrap();
        set_meta(&c, "k", "1").unwrap();
        set_meta(&c, "k", "2").unwrap();
        assert_eq!(meta(&c, "k").unwrap().as_deref(), Some("2"));
        assert_eq!(meta_i64(&c, "missing").unwrap(), 0);
    }
}
