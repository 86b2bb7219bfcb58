//! Concurrent writes that a comparison of values cannot see (SPEC 2.10).
//!
//! Central finds most collisions by comparing the old values a node's change carries with
//! its current row. That misses one case: another site changed a column and changed it back
//! (or two sites' changes cancel out) after the node last saw the row. The value is what the
//! node saw, yet a write the node never saw was made, and the node's change would overwrite
//! it without a trace (an "ABA" lost update).
//!
//! So a node's change also says how far it had applied central's stream to it when it was
//! made (`seen`, a position of its partial log), and central's route marks turn that into a
//! position of central's log. Every entry of central's log after it on the same row, made
//! by another site (another node, or central's own application), contests the columns it
//! changed: a change of the node to such a column collides even where the values match.
//! What the node's own changes set off at central (its cascades, the application's
//! triggers) is its own and does not contest; nor do corrective changes.
//!
//! A row's contest is read when the bundle first changes it, through central's index of the
//! log by row (`berth_log_key`, [`crate::site`]): the cost of a bundle is its own rows, not
//! everything the other nodes changed since it last docked. It is the contest as the log
//! stood when the bundle's first change that saw something was merged (the log's end then,
//! [`Contest::load`]); the row's state at that moment is the state before the first entry
//! the bundle's own merge journaled on it after, or the row as it is when there is none.

use super::Cols;
use crate::change::{Change, Op};
use crate::error::Result;
use crate::table::{TableInfo, read_row};
use crate::value::{Row, parse_key, parse_row_bytes, raw, same};
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};

/// The rows other sites changed after a position of central's log, and which columns, read
/// row by row as the bundle's changes reach them.
#[derive(Debug, Default)]
pub struct Contest {
    /// The position the contest covers the changes after.
    pub from: i64,
    /// The log's last position at [`Contest::load`]: entries after it are the bundle's own.
    end: i64,
    /// By (table, key as JSON text): each contesting entry's position and the columns it
    /// changed, for the contested rows read so far.
    rows: HashMap<(String, String), Vec<(i64, Cols)>>,
}

/// One entry of a row's history: its position, whether another site made it, and the row
/// before it (`None`: the row did not exist).
struct Step {
    pos: i64,
    other: bool,
    before: Option<Row>,
}

/// The columns whose value differs between two states of a row (`None`: all of them).
fn changed(before: Option<&Row>, after: Option<&Row>) -> Option<Cols> {
    match (before, after) {
        (None, None) => None,
        (Some(b), Some(a)) => {
            let cols: BTreeSet<String> = b
                .keys()
                .chain(a.keys())
                .filter(|c| match (b.get(*c), a.get(*c)) {
                    (Some(x), Some(y)) => !same(x, y),
                    _ => true,
                })
                .cloned()
                .collect();
            (!cols.is_empty()).then_some(Cols::Some(cols))
        }
        _ => Some(Cols::All),
    }
}

/// Whether a key's JSON text is the very bytes every SQLite's capture trigger journals for
/// it: integers, NULL, blobs (`["b", HEX]`, `hex()` is upper case) and text without control
/// characters, whose JSON has one spelling. A real is journaled through `printf`, whose
/// digits changed between SQLite versions, and control characters have more than one
/// escape: those keys are compared by value instead ([`Contest::history`]).
pub(crate) fn one_spelling(key: &[Json]) -> bool {
    key.iter().all(|v| match v {
        Json::Null => true,
        Json::Number(n) => n.is_i64() || n.is_u64(),
        Json::String(s) => !s.chars().any(|c| c < ' ' || c == '\u{7f}'),
        Json::Array(a) => match a.as_slice() {
            [Json::String(tag), Json::String(h)] => {
                tag == "b"
                    && h.bytes()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            }
            _ => false,
        },
        _ => false,
    })
}

/// A row's entries after a position (`?1` table, `?2` key as journaled, `?3` position,
/// `?4` the node, `?5` central): a search of `berth_log_key`. The parameters are written `+?N`:
/// with STAT4 statistics a plain parameter in an index search makes SQLite prepare the
/// statement again at every new value (the test below; BENCHMARKS 10).
pub(crate) const ROW_ENTRIES: &str =
    "SELECT pos, op = 'I', origin IS NULL OR (origin <> ?4 AND origin <> ?5), old, pk
     FROM berth_log WHERE tbl = +?1 AND pk = +?2 AND pos > +?3 AND target IS NULL
     AND op IN ('I', 'U', 'D', 'P') ORDER BY pos";

/// [`ROW_ENTRIES`] for a key of more than one spelling: the table's entries, whose keys
/// the caller compares by value (`?2` is unused).
const TABLE_ENTRIES: &str =
    "SELECT pos, op = 'I', origin IS NULL OR (origin <> ?4 AND origin <> ?5), old, pk
     FROM berth_log WHERE tbl = +?1 AND ?2 IS NOT NULL AND pos > +?3 AND target IS NULL
     AND op IN ('I', 'U', 'D', 'P') ORDER BY pos";

/// An entry of a row's history as read: position, insert, made by another site, `old`.
type Entry = (i64, bool, bool, Vec<u8>);

impl Contest {
    /// The contest of the changes after `from`, as the log stands now.
    pub fn load(conn: &Connection, from: i64) -> Result<Contest> {
        let end = conn.query_row("SELECT COALESCE(MAX(pos), 0) FROM berth_log", [], |r| {
            r.get(0)
        })?;
        Ok(Contest {
            from,
            end,
            rows: HashMap::new(),
        })
    }

    /// The columns of a row other sites than `node` changed after position `after` (at
    /// least [`Self::from`]), if any (`central` names central's own site, the origin of what
    /// merges set off). `key_text` is `key` as `Change::key_text` writes it.
    pub fn get(
        &mut self,
        conn: &Connection,
        t: &TableInfo,
        key: &[Json],
        key_text: &str,
        ids: (&str, &str),
        after: i64,
    ) -> Result<Option<Cols>> {
        let after_it = |entries: &[(i64, Cols)]| {
            Cols::union(
                entries
                    .iter()
                    .filter(|(pos, _)| *pos > after)
                    .map(|(_, cols)| cols),
            )
        };
        let slot = (t.name.clone(), key_text.to_string());
        if let Some(entries) = self.rows.get(&slot) {
            return Ok(after_it(entries));
        }
        let contested = self.read(conn, t, key, key_text, ids)?;
        let out = after_it(&contested);
        // Only contested rows are kept: a bundle's rows that nobody else touched (nearly all
        // of a large one) would make this grow with the bundle. Another change to such a row
        // reads its (empty) history again, one index search.
        if !contested.is_empty() {
            self.rows.insert(slot, contested);
        }
        Ok(out)
    }

    /// The contesting entries of one row: each entry another site made in `(from, end]`
    /// with the columns it changed, judged against the state that followed it.
    fn read(
        &self,
        conn: &Connection,
        t: &TableInfo,
        key: &[Json],
        key_text: &str,
        ids: (&str, &str),
    ) -> Result<Vec<(i64, Cols)>> {
        let (entries, next) = self.history(conn, &t.name, key, key_text, ids)?;
        if !entries.iter().any(|e| e.2) {
            return Ok(Vec::new());
        }
        let before = |insert: bool, old: &[u8]| {
            // An insert's `old` is empty, or the old key of a key change.
            if insert { None } else { parse_row_bytes(old) }
        };
        let steps: Vec<Step> = entries
            .iter()
            .map(|(pos, insert, other, old)| Step {
                pos: *pos,
                other: *other,
                before: before(*insert, old),
            })
            .collect();
        // The row as it stood at `end`.
        let now = match next {
            Some((_, insert, _, old)) => before(insert, &old),
            None => read_row(conn, t, key)?,
        };
        let mut contested = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            if !step.other {
                continue;
            }
            let after = match steps.get(i + 1) {
                Some(next) => next.before.as_ref(),
                None => now.as_ref(),
            };
            if let Some(cols) = changed(step.before.as_ref(), after) {
                contested.push((step.pos, cols));
            }
        }
        Ok(contested)
    }

    /// The row's entries in `(from, end]`, and its first entry after `end` if any.
    fn history(
        &self,
        conn: &Connection,
        table: &str,
        key: &[Json],
        key_text: &str,
        (node, central): (&str, &str),
    ) -> Result<(Vec<Entry>, Option<Entry>)> {
        // One spelling: the index finds the row's entries. Otherwise every entry of the
        // table after `from` is read and its key compared by value.
        let exact = one_spelling(key);
        let mut st = conn.prepare_cached(if exact { ROW_ENTRIES } else { TABLE_ENTRIES })?;
        let mut q = st.query(params![table, key_text, self.from, node, central])?;
        let mut entries = Vec::new();
        while let Some(r) = q.next()? {
            if !exact {
                let same_key = parse_key(raw(r.get_ref(4)?))
                    .and_then(|k| serde_json::to_string(&k).ok())
                    .is_some_and(|k| k == key_text);
                if !same_key {
                    continue;
                }
            }
            let entry: Entry = (r.get(0)?, r.get(1)?, r.get(2)?, raw(r.get_ref(3)?).to_vec());
            if entry.0 > self.end {
                return Ok((entries, Some(entry)));
            }
            entries.push(entry);
        }
        Ok((entries, None))
    }
}

/// How far into central's log `node` had seen when it had applied its partial log up to
/// `ppos` (`None` when no mark says: a site routed before marks existed).
pub fn seen_pos(conn: &Connection, node: &str, ppos: i64) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT MAX(pos) FROM berth_route_marks WHERE node = ?1 AND ppos <= ?2")?
        .query_row(params![node, ppos], |r| r.get(0))?)
}

/// The contest of a node's changes made knowing central's log up to a position the log no
/// longer reaches back to (its entries after it were pruned while the node was away): the
/// columns its own stream changed after what the change saw, per row. The stream carries
/// every change of another site (or of central's application) to a row the node holds,
/// and downloads of rows it came to hold; so this holds every column the log would have
/// named, and may name more (what merges set off, corrective changes).
#[derive(Debug, Default)]
pub struct Fallback {
    /// The `seen` it was read for.
    pub seen: i64,
    /// Whether the log no longer reaches back: only then does it decide.
    pub active: bool,
    rows: HashMap<(String, String), Cols>,
}

impl Fallback {
    /// Reads `node`'s partial log after `seen` when the log's entries after `from` (the
    /// position `seen` stands for) are no longer all there.
    pub fn load(conn: &Connection, node: &str, seen: i64, from: i64) -> Result<Fallback> {
        let mut out = Fallback {
            seen,
            active: from.saturating_add(1) < crate::store::log_floor(conn)?,
            rows: HashMap::new(),
        };
        if !out.active {
            return Ok(out);
        }
        let mut st = conn.prepare_cached(
            "SELECT change FROM berth_partial WHERE node = ?1 AND ppos > ?2 ORDER BY ppos",
        )?;
        let mut rows = st.query(params![node, seen])?;
        while let Some(r) = rows.next()? {
            let text: String = r.get(0)?;
            let ch: Change = crate::store::stored_json("berth_partial.change", &text)?;
            let cols = match ch.op {
                Op::I | Op::D => Cols::All,
                Op::U => Cols::Some(
                    ch.old
                        .as_ref()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default(),
                ),
                // Statements run at nodes only; markers and migrations change no row.
                _ => continue,
            };
            let key = (ch.t.clone(), ch.key_text());
            let merged = match out.rows.remove(&key) {
                Some(have) => Cols::union([have, cols].iter()).unwrap_or(Cols::All),
                None => cols,
            };
            out.rows.insert(key, merged);
        }
        Ok(out)
    }

    /// The columns of the row `(table, key)` contested (`None`: none).
    pub fn get(&self, table: &str, key: &str) -> Option<Cols> {
        self.rows
            .get(&(table.to_string(), key.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::Policy;
    use serde_json::json;

    /// Central's log as capture and the site make it: `t(a, b, v, w)` keyed by (text, blob).
    fn central() -> (Connection, TableInfo) {
        let c = Connection::open_in_memory().unwrap();
        crate::store::install(&c).unwrap();
        c.execute_batch(
            "CREATE TABLE t(a TEXT, b BLOB, v INTEGER, w TEXT, PRIMARY KEY (a, b));
             CREATE TABLE r(x REAL PRIMARY KEY, v INTEGER);
             CREATE INDEX berth_log_key ON berth_log(tbl, pk);",
        )
        .unwrap();
        crate::capture::install(&c, &crate::schema::tables(&c).unwrap()).unwrap();
        let t = TableInfo {
            name: "t".into(),
            pk: vec!["a".into(), "b".into()],
            cols: ["a", "b", "v", "w"].map(String::from).to_vec(),
            policy: Policy::CentralWins,
        };
        (c, t)
    }

    fn last(c: &Connection) -> i64 {
        c.query_row("SELECT MAX(pos) FROM berth_log", [], |r| r.get(0))
            .unwrap()
    }

    fn get(contest: &mut Contest, c: &Connection, t: &TableInfo, k: &[Json]) -> Option<Cols> {
        let text = serde_json::to_string(k).unwrap();
        contest
            .get(c, t, k, &text, ("n", "hq"), contest.from)
            .unwrap()
    }

    fn cols(names: &[&str]) -> Option<Cols> {
        Some(Cols::Some(names.iter().map(|c| c.to_string()).collect()))
    }

    /// The contest of a row is found among many other rows' entries, whatever its key's
    /// spelling; the node's own entries and the rows nobody else touched are not contested.
    #[test]
    fn a_rows_contest_is_found_among_many_other_rows_entries() {
        let (c, t) = central();
        c.execute_batch(
            "INSERT INTO t VALUES ('it''s \u{e9}', x'00ff', 0, 'x'), ('a	b', x'01', 0, 'x'),
                                  ('mine', x'02', 0, 'x'), ('calm', x'03', 0, 'x');
             INSERT INTO r VALUES (1.5, 0);",
        )
        .unwrap();
        let from = last(&c);
        // Another site changes `v` and back on two rows (one key has a control character),
        // and `v` of a row keyed by a real; the node changes `mine`.
        c.execute_batch(
            "UPDATE t SET v = 1 WHERE b <> x'02' AND b <> x'03'; UPDATE t SET v = 0;
             UPDATE r SET v = 1;
             WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 3000)
             INSERT INTO t SELECT 'other' || x, x'', x, 'y' FROM i;
             UPDATE t SET w = 'z' WHERE a LIKE 'other%';",
        )
        .unwrap();
        c.execute(
            "UPDATE berth_log SET origin = 'n' WHERE pos > ?1 AND pk = '[\"mine\",[\"b\",\"02\"]]'",
            [from],
        )
        .unwrap();
        let mut contest = Contest::load(&c, from).unwrap();
        let key = |a: &str, b: &str| vec![json!(a), json!(["b", b])];
        assert_eq!(
            get(&mut contest, &c, &t, &key("it's \u{e9}", "00FF")),
            cols(&["v"])
        );
        assert_eq!(get(&mut contest, &c, &t, &key("a\tb", "01")), cols(&["v"]));
        assert_eq!(get(&mut contest, &c, &t, &key("mine", "02")), None);
        assert_eq!(get(&mut contest, &c, &t, &key("calm", "03")), None);
        let r = TableInfo {
            name: "r".into(),
            pk: vec!["x".into()],
            cols: vec!["x".into(), "v".into()],
            policy: Policy::CentralWins,
        };
        assert_eq!(get(&mut contest, &c, &r, &[json!(1.5)]), cols(&["v"]));
        assert!(!one_spelling(&[json!(1.5)]) && !one_spelling(&key("a\tb", "01")));
        assert!(one_spelling(&key("it's \u{e9}", "00FF")));
    }

    /// What the bundle's own merge journals after the contest was loaded does not change it:
    /// another site set `w`; the bundle's earlier change sets it back (its entry is not yet
    /// marked as the node's); the row is still contested on `w`.
    #[test]
    fn the_contest_is_the_log_as_it_stood_when_loaded() {
        let (c, t) = central();
        c.execute("INSERT INTO t VALUES ('r', x'', 0, 'a')", [])
            .unwrap();
        let from = last(&c);
        c.execute("UPDATE t SET w = 'b'", []).unwrap();
        let mut contest = Contest::load(&c, from).unwrap();
        c.execute("UPDATE t SET w = 'a'", []).unwrap();
        let k = [json!("r"), json!(["b", ""])];
        assert_eq!(get(&mut contest, &c, &t, &k), cols(&["w"]));
    }

    /// The search of a row's entries is prepared once, however many rows a merge asks
    /// about: with STAT4 statistics (SQLite's `ANALYZE`, which `PRAGMA optimize` runs), a
    /// statement whose index search binds a plain parameter is prepared again at every new
    /// value, which made central's merge 2.4x slower (BENCHMARKS 10). The unary plus keeps
    /// the index and the plan.
    #[test]
    fn a_rows_entries_are_searched_without_preparing_the_search_again() {
        let (c, _) = central();
        c.execute_batch(
            "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 2000)
             INSERT INTO t SELECT 'k' || x, x'', x, 'y' FROM i;
             UPDATE t SET v = v + 1 WHERE a < 'k5';
             ANALYZE;",
        )
        .unwrap();
        let mut st = c.prepare(ROW_ENTRIES).unwrap();
        for x in [1, 2, 3, 40, 500] {
            let key = format!("[\"k{x}\",[\"b\",\"\"]]");
            let n = st
                .query_map(params!["t", key, 0, "n", "hq"], |_| Ok(()))
                .unwrap()
                .count();
            assert!(n >= 1, "k{x}");
        }
        assert_eq!(
            st.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the search was prepared again"
        );
    }
}
