//! The routing plan: the docking model resolved against central's schema (objects, member
//! paths, mappings between objects, the SQL the router runs), and how a changed row names the
//! instances it can affect ([`Plan::dirty_from_row`]). Merge reads it to authorize a node's
//! writes, so it sits below merge in the layers of `lib.rs`.

use super::check::{self, ResolvedMember, ResolvedObject, Severity};
use super::model::{DockingModel, Rule, RuleSql, Visibility};
use crate::error::{EngineError, Result};
use crate::store::ident;
use crate::value::{Bind, Row, from_sql};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};

/// An instance id: the key text of its primary row (`["O1"]`).
pub type Id = String;

/// A mapping between two objects: an object rule of `dep` (visible if that `sup` instance is)
/// or a related object of `sup` (`dep` travels with it).
#[derive(Debug, Clone)]
pub(super) struct Mapping {
    /// Stable name, the key of its edges in `berth_edges`.
    pub(super) name: String,
    pub(super) dep: usize,
    pub(super) sup: usize,
    /// Set form, and whether its first column is the dependent's id.
    pub(super) set: Option<String>,
    pub(super) dep_first: bool,
    /// Pair form, and whether `:primary_row_id` is bound to the dependent's id.
    pub(super) pair: Option<String>,
    pub(super) pair_binds_dep: bool,
    /// Tables it reads (lowercase).
    pub(super) reads: BTreeSet<String>,
    /// Every table it reads lies on a member path of `dep` or `sup`, so its pairs change only
    /// with a dirty instance at one end.
    pub(super) anchored: bool,
    /// Nodes' writes may create its pairs to dependents they do not hold (SPEC 2.10).
    pub(super) node_link: bool,
}

/// One docking object, ready for routing.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub(super) r: ResolvedObject,
    /// The SQL rules (object rules are mappings).
    pub(super) rules: Vec<RuleSql>,
    /// Tables (lowercase) read by SQL rules but on no member path: a change there makes every
    /// instance dirty.
    pub(super) whole_reads: BTreeSet<String>,
    /// Tables (lowercase) whose changes can change visibility through a member path.
    pub(super) vis_tables: BTreeSet<String>,
}

/// A place on a member path: member `m`, path `p` (`None` for the primary table), hop `hop`
/// (0 is the member table; the last is the primary table).
#[derive(Debug, Clone, Copy)]
pub(super) struct Hop {
    pub(super) m: usize,
    pub(super) p: Option<usize>,
    pub(super) hop: usize,
}

/// The docking model resolved against central's schema, ready to route.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) objects: Vec<Object>,
    pub(super) maps: Vec<Mapping>,
    pub(super) visibility: BTreeMap<String, Visibility>,
    /// Table (lowercase) -> the objects and path places it appears at.
    pub(super) hops: BTreeMap<String, Vec<(usize, Hop)>>,
    /// Tables (lowercase) a node's write can link through: on a member path, read by a
    /// mapping or by a rule (SPEC 2.10, "Links").
    pub(super) link_tables: BTreeSet<String>,
}

pub(super) fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The paths of member `m` as `joins` takes them: `None` alone for the primary table.
pub(super) fn path_choices(m: &ResolvedMember) -> Vec<Option<usize>> {
    if m.paths.is_empty() {
        vec![None]
    } else {
        (0..m.paths.len()).map(Some).collect()
    }
}

pub(super) fn joins(m: &ResolvedMember, p: Option<usize>) -> &[super::model::Join] {
    p.and_then(|p| m.paths.get(p))
        .map_or(&[][..], |path| &path.joins[..])
}

/// The value of column `c` of `row` (column names compare case-insensitively).
pub(super) fn col<'a>(row: &'a Row, c: &str) -> Option<&'a Json> {
    row.get(c).or_else(|| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(c))
            .map(|(_, v)| v)
    })
}

pub(super) fn id_of(v: &Json) -> Id {
    serde_json::to_string(&[v]).unwrap_or_default()
}

/// `id_of(&from_sql(v))`, written straight from the value.
pub(super) fn id_text(v: ValueRef<'_>) -> Id {
    let mut out = Vec::new();
    crate::value::write_key(&mut out, [v]);
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn id_value(id: &str) -> Json {
    serde_json::from_str::<Vec<Json>>(id)
        .ok()
        .and_then(|v| v.into_iter().next())
        .unwrap_or(Json::Null)
}

/// `FROM t0 JOIN t1 ... JOIN t{upto}` along a member path.
pub(super) fn path_from(m: &ResolvedMember, js: &[super::model::Join], upto: usize) -> String {
    check::join_chain(&m.table, 0, &js[..upto.min(js.len())])
}

/// A rule's or mapping's SQL as a statement or subquery body (no trailing `;`).
pub(super) fn sql_body(sql: &str) -> &str {
    sql.trim().trim_end_matches(';')
}

/// A set-form query wrapped so that its first (`first`) or second column is restricted to
/// the ids in `temp.berth_route_ids` for object `?1`.
pub(super) fn restricted(set: &str, first: bool) -> String {
    let body = sql_body(set);
    let c = if first { "a" } else { "b" };
    format!(
        "WITH berth_q(a, b) AS ({body}\n) SELECT a, b FROM berth_q WHERE {c} IN (SELECT id FROM temp.berth_route_ids WHERE obj = +?1)"
    )
}

impl Plan {
    /// Resolves `model` against central's schema; refuses a model with errors.
    pub fn new(conn: &Connection, model: &DockingModel) -> Result<Plan> {
        let (resolved, findings) = check::resolve(model, conn)?;
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.severity() == Severity::Error)
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(EngineError::Docking {
                path: "docking.toml".into(),
                findings: errors,
            });
        }
        let index: BTreeMap<String, usize> = resolved
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| (o.name.clone(), i))
            .collect();
        let mut objects = Vec::new();
        let mut maps = Vec::new();
        for (oi, r) in resolved.objects.iter().enumerate() {
            let Some(o) = model.object(&r.name) else {
                continue;
            };
            let mut rules = Vec::new();
            for (ri, rule) in o.rules.iter().enumerate() {
                let reads = r.rule_reads.get(ri).cloned().unwrap_or_default();
                match rule {
                    Rule::Sql { sql, .. } => rules.push((sql.clone(), reads)),
                    Rule::Object {
                        object,
                        sql,
                        node_link,
                        ..
                    } => {
                        if let Some(&sup) = index.get(object) {
                            maps.push(Mapping {
                                name: format!("{}/rule/{}", r.name, ri + 1),
                                dep: oi,
                                sup,
                                set: sql.set.clone(),
                                dep_first: true,
                                pair: sql.pair.clone(),
                                pair_binds_dep: true,
                                reads: reads.iter().map(|t| lower(t)).collect(),
                                anchored: false,
                                node_link: *node_link,
                            });
                        }
                    }
                }
            }
            for (ri, rel) in o.related.iter().enumerate() {
                if let Some(&dep) = index.get(&rel.object) {
                    let reads = r.related_reads.get(ri).cloned().unwrap_or_default();
                    maps.push(Mapping {
                        name: format!("{}/related/{}", r.name, ri + 1),
                        dep,
                        sup: oi,
                        set: rel.sql.set.clone(),
                        dep_first: false,
                        pair: rel.sql.pair.clone(),
                        pair_binds_dep: false,
                        reads: reads.iter().map(|t| lower(t)).collect(),
                        anchored: false,
                        node_link: rel.node_link,
                    });
                }
            }
            let on_paths: BTreeSet<String> = path_tables(r);
            let mut whole_reads = BTreeSet::new();
            for (_, reads) in &rules {
                for t in reads {
                    if !on_paths.contains(&lower(t)) {
                        whole_reads.insert(lower(t));
                    }
                }
            }
            let mut vis_tables: BTreeSet<String> = BTreeSet::new();
            for m in r.members.iter().filter(|m| m.vis_event) {
                vis_tables.insert(lower(&m.table));
            }
            objects.push(Object {
                r: r.clone(),
                rules: rules.into_iter().map(|(s, _)| s).collect(),
                whole_reads,
                vis_tables,
            });
        }
        // A mapping is anchored when the tables it reads lie on member paths of its two
        // objects; those tables then change visibility of the objects at its ends.
        for m in &mut maps {
            let mut ends = path_tables(&objects[m.dep].r);
            ends.extend(path_tables(&objects[m.sup].r));
            m.anchored = m.set.is_some() && m.reads.iter().all(|t| ends.contains(t));
            for t in &m.reads {
                for end in [m.dep, m.sup] {
                    if path_tables(&objects[end].r).contains(t) {
                        objects[end].vis_tables.insert(t.clone());
                    }
                }
            }
        }
        let mut hops: BTreeMap<String, Vec<(usize, Hop)>> = BTreeMap::new();
        for (oi, o) in objects.iter().enumerate() {
            for (mi, m) in o.r.members.iter().enumerate() {
                let paths = path_choices(m);
                for p in paths {
                    let js = joins(m, p);
                    for hop in 0..=js.len() {
                        let table = if hop == 0 {
                            &m.table
                        } else {
                            &js[hop - 1].to_table
                        };
                        hops.entry(lower(table))
                            .or_default()
                            .push((oi, Hop { m: mi, p, hop }));
                    }
                }
            }
        }
        let link_tables = hops
            .keys()
            .cloned()
            .chain(maps.iter().flat_map(|m| m.reads.iter().cloned()))
            .chain(objects.iter().flat_map(|o| o.whole_reads.iter().cloned()))
            .collect();
        Ok(Plan {
            objects,
            maps,
            visibility: model
                .tables
                .iter()
                .map(|(k, v)| (lower(k), v.visibility))
                .collect(),
            hops,
            link_tables,
        })
    }

    /// A table's visibility (tables the model does not name are enterprise).
    pub fn visibility(&self, table: &str) -> Visibility {
        self.visibility
            .get(&lower(table))
            .copied()
            .unwrap_or(Visibility::Enterprise)
    }

    pub(super) fn object_index(&self, name: &str) -> Option<usize> {
        self.objects.iter().position(|o| o.r.name == name)
    }

    /// The instance ids reached from `row` (of the table at `at`) along the rest of the path.
    pub(super) fn ids_from_row(
        &self,
        conn: &Connection,
        oi: usize,
        at: Hop,
        row: &Row,
    ) -> Result<Vec<Id>> {
        let o = &self.objects[oi].r;
        let m = &o.members[at.m];
        let js = joins(m, at.p);
        if at.hop == js.len() {
            return Ok(match col(row, &o.primary_key) {
                Some(v) if !v.is_null() => vec![id_of(v)],
                _ => vec![],
            });
        }
        let j = &js[at.hop];
        let mut vals = Vec::new();
        for c in &j.from_columns {
            match col(row, c) {
                Some(v) if !v.is_null() => vals.push(v),
                _ => return Ok(vec![]),
            }
        }
        if at.hop + 1 == js.len()
            && j.to_columns.len() == 1
            && j.to_columns[0].eq_ignore_ascii_case(&o.primary_key)
        {
            return Ok(vec![id_of(vals[0])]);
        }
        // Follow the rest of the path through central's tables as they are now.
        let from = check::join_chain(&j.to_table, at.hop + 1, &js[at.hop + 1..]);
        let filter: Vec<String> = j
            .to_columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t{}.{} = +?{}", at.hop + 1, ident(c), i + 1))
            .collect();
        let sql = format!(
            "SELECT t{}.{} FROM {from} WHERE {}",
            js.len(),
            ident(&o.primary_key),
            filter.join(" AND ")
        );
        let mut st = conn.prepare_cached(&sql)?;
        let ids = st
            .query_map(params_from_iter(vals.iter().map(|v| Bind(v))), |r| {
                Ok(from_sql(r.get_ref(0)?))
            })?
            .collect::<rusqlite::Result<Vec<Json>>>()?;
        Ok(ids.iter().filter(|v| !v.is_null()).map(id_of).collect())
    }

    /// Keys of the member-table rows whose path runs through `row` (of the table at `at`,
    /// `at.hop >= 1`): the rows whose membership moves when `row` changes.
    pub(super) fn rows_below(
        &self,
        conn: &Connection,
        oi: usize,
        at: Hop,
        row: &Row,
    ) -> Result<Vec<Vec<Json>>> {
        let m = &self.objects[oi].r.members[at.m];
        let js = joins(m, at.p);
        let Some(j) = at.hop.checked_sub(1).and_then(|h| js.get(h)) else {
            return Ok(vec![]);
        };
        let mut vals = Vec::new();
        for c in &j.to_columns {
            match col(row, c) {
                Some(v) if !v.is_null() => vals.push(v),
                _ => return Ok(vec![]),
            }
        }
        let from = path_from(m, js, at.hop - 1);
        let filter: Vec<String> = j
            .from_columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("t{}.{} = +?{}", at.hop - 1, ident(c), i + 1))
            .collect();
        let keys: Vec<String> = m.key.iter().map(|k| format!("t0.{}", ident(k))).collect();
        let sql = format!(
            "SELECT {} FROM {from} WHERE {}",
            keys.join(", "),
            filter.join(" AND ")
        );
        let mut st = conn.prepare_cached(&sql)?;
        let n = m.key.len();
        let out = st
            .query_map(params_from_iter(vals.iter().map(|v| Bind(v))), |r| {
                (0..n).map(|i| Ok(from_sql(r.get_ref(i)?))).collect()
            })?
            .collect::<rusqlite::Result<Vec<Vec<Json>>>>()?;
        Ok(out)
    }

    /// Whether a change of a row at `at` (from `old` to `new`) can move the member rows
    /// below it on the path to another instance: it came or went, or changed a column the
    /// path joins on (into it or out of it).
    pub(super) fn moves_below(
        &self,
        oi: usize,
        at: Hop,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> bool {
        let (Some(old), Some(new)) = (old, new) else {
            return true;
        };
        let m = &self.objects[oi].r.members[at.m];
        let js = joins(m, at.p);
        let into = js.get(at.hop.wrapping_sub(1)).map(|j| &j.to_columns);
        let out_of = js.get(at.hop).map(|j| &j.from_columns);
        into.into_iter()
            .chain(out_of)
            .flatten()
            .any(|c| match (col(old, c), col(new, c)) {
                (Some(a), Some(b)) => !crate::value::same(a, b),
                (None, None) => false,
                _ => true,
            })
    }

    /// The instances (object, id) a row of `table` with key `key` belongs to now.
    pub(super) fn row_instances(
        &self,
        conn: &Connection,
        table: &str,
        key: &[Json],
    ) -> Result<Vec<(usize, Id)>> {
        let mut out = Vec::new();
        for (oi, o) in self.objects.iter().enumerate() {
            for m in
                o.r.members
                    .iter()
                    .filter(|m| m.table.eq_ignore_ascii_case(table))
            {
                if key.len() != m.key.len() {
                    continue;
                }
                let sql = m.primary_id_sql(&o.r.primary_table, &o.r.primary_key);
                let mut st = conn.prepare_cached(&sql)?;
                let ids = st
                    .query_map(params_from_iter(key.iter().map(Bind)), |r| {
                        Ok(from_sql(r.get_ref(0)?))
                    })?
                    .collect::<rusqlite::Result<Vec<Json>>>()?;
                out.extend(ids.iter().filter(|v| !v.is_null()).map(|v| (oi, id_of(v))));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Whether [`Plan::dirty_from_row`] reads the rows of a change of `table` or marks
    /// objects whole for it (when not, it does nothing with them).
    pub(super) fn rows_matter(&self, table: &str) -> bool {
        let t = lower(table);
        self.objects.iter().any(|o| o.whole_reads.contains(&t))
            || self.hops.get(&t).is_some_and(|places| {
                places
                    .iter()
                    .any(|&(oi, _)| self.objects[oi].vis_tables.contains(&t))
            })
    }

    /// Instances a change of `table` from `old` to `new` can make visible or invisible
    /// (Figure 7's entry point), into `dirty`; `whole` collects objects all of whose
    /// instances are affected.
    pub(super) fn dirty_from_row(
        &self,
        conn: &Connection,
        table: &str,
        rows: &[&Row],
        dirty: &mut [BTreeSet<Id>],
        whole: &mut [bool],
    ) -> Result<()> {
        let t = lower(table);
        for (oi, o) in self.objects.iter().enumerate() {
            if o.whole_reads.contains(&t) {
                whole[oi] = true;
            }
        }
        let Some(places) = self.hops.get(&t) else {
            return Ok(());
        };
        for &(oi, at) in places {
            if whole[oi] || !self.objects[oi].vis_tables.contains(&t) {
                continue;
            }
            for row in rows {
                dirty[oi].extend(self.ids_from_row(conn, oi, at, row)?);
            }
        }
        Ok(())
    }
}

/// The tables (lowercase) on any member path of `o`, its primary table included.
pub(super) fn path_tables(o: &ResolvedObject) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.insert(lower(&o.primary_table));
    for m in &o.members {
        out.insert(lower(&m.table));
        for p in &m.paths {
            for j in &p.joins {
                out.insert(lower(&j.to_table));
            }
        }
    }
    out
}

/// The plan for `model`, if there is one.
pub fn plan_for(conn: &Connection, model: Option<&DockingModel>) -> Result<Option<Plan>> {
    model.map(|m| Plan::new(conn, m)).transpose()
}

/// The plan of `model` kept in `cell`, resolved at the first call (a dock shares one between
/// every bundle's authorization and its routing pass).
pub fn plan_in<'c>(
    cell: &'c std::cell::OnceCell<Plan>,
    conn: &Connection,
    model: &DockingModel,
) -> Result<&'c Plan> {
    if let Some(p) = cell.get() {
        return Ok(p);
    }
    let p = Plan::new(conn, model)?;
    Ok(cell.get_or_init(|| p))
}
