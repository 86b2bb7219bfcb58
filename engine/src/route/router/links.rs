//! The links a node's write makes (SPEC 2.10, "Links"): the instances its row, or the rows
//! below it on a member path, come to belong to, and the pairs of the mappings between
//! objects (object rules, related objects) that appear. Central's merge refuses a node's
//! write whose new links reach an instance the node does not hold, unless the model grants
//! that link (`node_link`): otherwise a node could obtain any instance whose id it knows, or
//! write into another node's.
//!
//! Memberships are read from the row's values (the first hop) and central's tables (the
//! rest of the path). Mapping pairs are what the mapping's SQL answers, so they are read
//! twice: before the write and with the write made (the caller makes it in a savepoint and
//! rolls it back), restricted as the router restricts them to the instances the row reaches.

use super::{Id, Plan, identify, joins, load_ids, lower, mapping_pairs, nodes};
use crate::error::Result;
use crate::value::Row;
use rusqlite::Connection;
use std::collections::BTreeSet;

/// A mapping's pairs, (dependent, support).
type Pairs = BTreeSet<(Id, Id)>;

/// A link a write adds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gain {
    /// The object of the instance the write reaches.
    pub object: String,
    /// Its id (the key text of its primary row).
    pub id: Id,
    /// What makes the link: `member activity`, `member activity through quote`, or a
    /// mapping (`opportunity/rule/2`, `opportunity/related/1`).
    pub via: String,
    /// The model lets nodes make this link.
    pub granted: bool,
}

/// What a row reaches before a write, to compare with after it.
#[derive(Debug, Default)]
pub struct Probe {
    /// Memberships of the old row: (object, member, id).
    before: BTreeSet<(usize, usize, Id)>,
    /// The instances whose mapping pairs the write can change, per object.
    dirty: Vec<BTreeSet<Id>>,
    /// Per mapping that reads the table: (mapping, every pair compared, the pairs before).
    pairs: Vec<(usize, bool, Pairs)>,
}

impl Probe {
    /// Whether the comparison needs the write made before [`Plan::gains`] (a mapping's SQL
    /// reads the table).
    pub fn needs_write(&self) -> bool {
        !self.pairs.is_empty()
    }
}

impl Plan {
    /// Makes the relations the mappings' SQL may read (the nodes, the router's scratch
    /// table): once per merge, before the first [`Plan::probe`].
    pub fn prepare_links(&self, conn: &Connection) -> Result<()> {
        let reads_nodes = self.maps.iter().any(|m| {
            [&m.set, &m.pair]
                .into_iter()
                .flatten()
                .any(|sql| sql.to_ascii_lowercase().contains("berth_node"))
        });
        // Loading every node costs a dock at central with thousands of them; only a mapping
        // that reads node identity needs it.
        identify(
            conn,
            &if reads_nodes {
                nodes(conn)?
            } else {
                Vec::new()
            },
        )
    }

    /// Whether a write to `table` can link anything: it lies on a member path, a mapping
    /// reads it, or a rule does.
    pub fn links_through(&self, table: &str) -> bool {
        self.link_tables.contains(&lower(table))
    }

    /// The object one of whose SQL rules reads `table` off every member path: a write there
    /// can change who sees any of its instances, so no per-row check can bound it.
    pub fn read_by_rules(&self, table: &str) -> Option<&str> {
        let t = lower(table);
        self.objects
            .iter()
            .find(|o| o.whole_reads.contains(&t))
            .map(|o| o.r.name.as_str())
    }

    /// The instances `row` of `table` is the primary row of: (object index, object, id).
    pub fn own_instances(&self, table: &str, row: &Row) -> Vec<(String, Id)> {
        self.objects
            .iter()
            .filter(|o| o.r.primary_table.eq_ignore_ascii_case(table))
            .filter_map(|o| {
                let v = super::col(row, &o.r.primary_key)?;
                (!v.is_null()).then(|| (o.r.name.clone(), super::id_of(v)))
            })
            .collect()
    }

    /// Whether the primary row of instance `id` of `object` exists at central.
    pub fn instance_exists(&self, conn: &Connection, object: &str, id: &str) -> Result<bool> {
        let Some(o) = self.objects.iter().find(|o| o.r.name == object) else {
            return Ok(false);
        };
        let sql = format!(
            "SELECT EXISTS(SELECT 1 FROM {} WHERE {} = ?1)",
            crate::store::ident(&o.r.primary_table),
            crate::store::ident(&o.r.primary_key)
        );
        let v = super::id_value(id);
        Ok(conn
            .prepare_cached(&sql)?
            .query_row([crate::value::Bind(&v)], |r| r.get(0))?)
    }

    /// The instances `row` of `table` (or the rows below it) belongs to through member
    /// paths, its own instance left out: (object, member, id).
    fn memberships(
        &self,
        conn: &Connection,
        table: &str,
        row: Option<&Row>,
    ) -> Result<BTreeSet<(usize, usize, Id)>> {
        let mut out = BTreeSet::new();
        let (Some(row), Some(places)) = (row, self.hops.get(&lower(table))) else {
            return Ok(out);
        };
        for &(oi, at) in places {
            if at.hop == joins(&self.objects[oi].r.members[at.m], at.p).len() {
                continue;
            }
            for id in self.ids_from_row(conn, oi, at, row)? {
                out.insert((oi, at.m, id));
            }
        }
        Ok(out)
    }

    /// Before a node's write of `table` from `old` to `new`: what the row reaches now. Call
    /// [`Plan::gains`] after it (with the write made when [`Probe::needs_write`]).
    pub fn probe(
        &self,
        conn: &Connection,
        table: &str,
        old: Option<&Row>,
        new: Option<&Row>,
    ) -> Result<Probe> {
        let t = lower(table);
        let before = self.memberships(conn, table, old)?;
        let maps: Vec<usize> = (0..self.maps.len())
            .filter(|&mi| self.maps[mi].reads.contains(&t))
            .collect();
        if maps.is_empty() {
            return Ok(Probe {
                before,
                ..Probe::default()
            });
        }
        let mut dirty = vec![BTreeSet::new(); self.objects.len()];
        if let Some(places) = self.hops.get(&t) {
            for &(oi, at) in places {
                for row in [old, new].into_iter().flatten() {
                    dirty[oi].extend(self.ids_from_row(conn, oi, at, row)?);
                }
            }
        }
        load_ids(conn, &dirty)?;
        let mut pairs = Vec::new();
        for mi in maps {
            // A mapping reading tables off its objects' paths can pair anything.
            let all = !self.maps[mi].anchored;
            pairs.push((mi, all, mapping_pairs(conn, self, mi, &dirty, all)?));
        }
        Ok(Probe {
            before,
            dirty,
            pairs,
        })
    }

    /// The links the write added: memberships of `new` the old row did not have, and mapping
    /// pairs that were not there (their dependent is the instance reached). `pairs: false`
    /// leaves the mappings out (the write could not be made).
    pub fn gains(
        &self,
        conn: &Connection,
        table: &str,
        probe: &Probe,
        new: Option<&Row>,
        pairs: bool,
    ) -> Result<Vec<Gain>> {
        let mut out = BTreeSet::new();
        for (oi, mi, id) in self
            .memberships(conn, table, new)?
            .difference(&probe.before)
        {
            let o = &self.objects[*oi].r;
            let m = &o.members[*mi];
            let via = if m.table.eq_ignore_ascii_case(table) {
                format!("member {}", m.table)
            } else {
                format!("member {} through {table}", m.table)
            };
            out.insert(Gain {
                object: o.name.clone(),
                id: id.clone(),
                via,
                granted: m.node_link,
            });
        }
        if pairs && probe.needs_write() {
            load_ids(conn, &probe.dirty)?;
            for (mi, all, before) in &probe.pairs {
                let m = &self.maps[*mi];
                let after = mapping_pairs(conn, self, *mi, &probe.dirty, *all)?;
                for (dep, _) in after.difference(before) {
                    out.insert(Gain {
                        object: self.objects[m.dep].r.name.clone(),
                        id: dep.clone(),
                        via: m.name.clone(),
                        granted: m.node_link,
                    });
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}
