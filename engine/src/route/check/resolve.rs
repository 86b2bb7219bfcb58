//! Resolving a model against a schema ([`resolve`]): every member's paths to its primary
//! table, by declared joins or by foreign keys through member tables (the seed's
//! GeneratePrimaryIdSQL), into the [`Resolved`] model the router works from.

use super::*;

/// A member table with its paths resolved against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMember {
    /// The table.
    pub table: String,
    /// Its primary key columns.
    pub key: Vec<String>,
    /// VIS_EVENT_FLG.
    pub vis_event: bool,
    /// The paths to the primary table (empty for the primary table itself).
    pub paths: Vec<Path>,
    /// Nodes may link its rows to instances they do not hold (SPEC 2.10).
    pub node_link: bool,
}

/// A docking object resolved against the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedObject {
    /// Object name.
    pub name: String,
    /// Primary table.
    pub primary_table: String,
    /// The primary table's key column: its values are the primary row ids.
    pub primary_key: String,
    /// Members, the primary table first.
    pub members: Vec<ResolvedMember>,
    /// Per rule (in sequence), the tables its SQL reads: a change to any of them can change
    /// what the rule answers.
    pub rule_reads: Vec<BTreeSet<String>>,
    /// Per `[[object.related]]` mapping (in sequence), the tables its SQL reads.
    pub related_reads: Vec<BTreeSet<String>>,
}

impl ResolvedMember {
    /// The seed's GeneratePrimaryIdSQL: the primary row ids of the member row whose key is
    /// bound as `?1..?n` (in key order), every path followed and the results unioned.
    pub fn primary_id_sql(&self, primary_table: &str, primary_key: &str) -> String {
        let filter: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("t0.{} = +?{}", ident(k), i + 1))
            .collect();
        self.selects(primary_table, primary_key, &[])
            .into_iter()
            .map(|s| format!("{s} WHERE {}", filter.join(" AND ")))
            .collect::<Vec<_>>()
            .join(" UNION ")
    }

    /// The set form: `(member key columns..., primary_row_id)` for every member row.
    pub fn primary_id_set_sql(&self, primary_table: &str, primary_key: &str) -> String {
        self.selects(primary_table, primary_key, &self.key)
            .join(" UNION ")
    }

    fn selects(&self, primary_table: &str, primary_key: &str, key_cols: &[String]) -> Vec<String> {
        let lead: String = key_cols
            .iter()
            .map(|k| format!("t0.{}, ", ident(k)))
            .collect();
        if self.paths.is_empty() {
            return vec![format!(
                "SELECT {lead}t0.{} FROM {} t0",
                ident(primary_key),
                ident(primary_table)
            )];
        }
        self.paths
            .iter()
            .map(|p| {
                let from = join_chain(&self.table, 0, &p.joins);
                format!(
                    "SELECT {lead}t{}.{} FROM {from}",
                    p.joins.len(),
                    ident(primary_key)
                )
            })
            .collect()
    }
}

/// `TABLE t{start} JOIN ... ON ...` along `joins`: join k leads from alias `t{start+k}` to
/// alias `t{start+k+1}` (its columns compared with SQL `=`, so NULL reaches nothing).
pub(crate) fn join_chain(table: &str, start: usize, joins: &[Join]) -> String {
    let mut from = format!("{} t{start}", ident(table));
    for (k, j) in joins.iter().enumerate() {
        let (a, b) = (start + k, start + k + 1);
        let on: Vec<String> = j
            .from_columns
            .iter()
            .zip(&j.to_columns)
            .map(|(f, t)| format!("t{b}.{} = t{a}.{}", ident(t), ident(f)))
            .collect();
        from.push_str(&format!(
            " JOIN {} t{b} ON {}",
            ident(&j.to_table),
            on.join(" AND ")
        ));
    }
    from
}

/// The model resolved against a schema: what the router works from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// Objects in model order (objects whose tables are missing are left out).
    pub objects: Vec<ResolvedObject>,
}

/// Resolves the model against the schema of `conn` and lists every finding.
pub fn resolve(
    model: &DockingModel,
    conn: &Connection,
) -> rusqlite::Result<(Resolved, Vec<Finding>)> {
    let mut schema = Schema::read(conn)?;
    let mut findings = model_findings(model);
    key_findings(model, conn, &mut schema, &mut findings)?;

    for t in schema.tables.values() {
        if model.table(&t.name).is_none() {
            findings.push(Finding {
                at: loc("[tables]".into(), None),
                kind: Kind::UndeclaredTable {
                    table: t.name.clone(),
                },
            });
        }
    }
    for t in model.tables.values() {
        if schema.table(&t.name).is_none() {
            let table = t.name.clone();
            findings.push(Finding {
                at: loc(format!("table {:?}", t.name), t.line),
                kind: if t.visibility == Visibility::Local {
                    Kind::LocalNotYet { table }
                } else {
                    Kind::UnknownTable { table }
                },
            });
        }
    }

    // Every rule is vetted in a copy of the schema under the rules' allow-list before it
    // is prepared here (SPEC 2.8).
    let probe = QueryProbe::new(conn, NODE_RELATIONS_DDL)?;
    let db = Db {
        conn,
        probe: &probe,
    };
    let temp = TempRelations::create(conn)?;
    let mut resolved = Resolved::default();
    let outcome: rusqlite::Result<()> = model.objects.iter().try_for_each(|o| {
        if let Some(r) = resolve_object(model, o, &schema, &db, &mut findings)? {
            resolved.objects.push(r);
        }
        Ok(())
    });
    temp.remove(conn)?;
    outcome?;
    Ok((resolved, findings))
}

/// The database rules are compiled against, with the probe that vets them first.
pub(super) struct Db<'a> {
    pub(super) conn: &'a Connection,
    pub(super) probe: &'a QueryProbe,
}

fn resolve_object(
    model: &DockingModel,
    o: &DockingObject,
    schema: &Schema,
    conn: &Db<'_>,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<Option<ResolvedObject>> {
    let oat = loc(format!("object {:?}", o.name), o.line);
    // Missing tables were reported once at their declaration.
    if o.members.iter().any(|m| schema.table(&m.table).is_none()) {
        return Ok(None);
    }
    let Some(primary) = schema.table(&o.primary_table) else {
        return Ok(None);
    };
    let primary_key = match primary.pk.as_slice() {
        [one] => one.clone(),
        _ => {
            findings.push(Finding {
                at: oat,
                kind: Kind::Key {
                    table: primary.name.clone(),
                    reason: "is a primary table, so it needs a single-column PRIMARY KEY: its values are the instances' primary row ids",
                },
            });
            return Ok(None);
        }
    };

    let mut members = Vec::new();
    for m in &o.members {
        let at = member_loc(o, &m.table, m.line);
        let Some(info) = schema.table(&m.table) else {
            continue;
        };
        if info.pk.is_empty() {
            findings.push(Finding {
                at: at.clone(),
                kind: Kind::Key {
                    table: info.name.clone(),
                    reason: "has no PRIMARY KEY, so its rows cannot be routed; declare one",
                },
            });
            continue;
        }
        let paths = match &m.path {
            PathSpec::Primary => vec![],
            PathSpec::Declared(paths) => {
                let mut ok = true;
                for p in paths {
                    for j in &p.joins {
                        ok &= check_join(j, schema, &at, findings);
                    }
                }
                if !ok {
                    continue;
                }
                paths.clone()
            }
            PathSpec::ForeignKeys => {
                let found = fk_paths(o, &info.name, schema);
                match found.len() {
                    0 => {
                        findings.push(Finding {
                            at,
                            kind: Kind::NoPath {
                                member: info.name.clone(),
                                primary: primary.name.clone(),
                            },
                        });
                        continue;
                    }
                    1 => found,
                    _ => {
                        findings.push(Finding {
                            at,
                            kind: Kind::AmbiguousPath {
                                member: info.name.clone(),
                                candidates: found,
                            },
                        });
                        continue;
                    }
                }
            }
        };
        let rm = ResolvedMember {
            table: info.name.clone(),
            key: info.pk.clone(),
            vis_event: m.vis_event,
            paths,
            node_link: m.node_link,
        };
        // The generated SQL must compile too (it will, given the columns exist; this guards
        // the generator).
        let sql = rm.primary_id_sql(&primary.name, &primary_key);
        compile(conn, &sql, Form::PrimaryId, model, &at, findings)?;
        members.push(rm);
    }

    let mut rule_reads = Vec::new();
    for (i, r) in o.rules.iter().enumerate() {
        let at = loc(format!("object {:?} rule {}", o.name, i + 1), r.line());
        let (pair, set) = match r {
            Rule::Sql { .. } => (Form::RulePair, Form::RuleSet),
            Rule::Object { .. } => (Form::MapPair, Form::MapSet),
        };
        let reads = compile_both(conn, r.sql(), pair, set, model, &at, findings)?;
        if matches!(r, Rule::Sql { .. }) {
            for t in &reads {
                if o.member(t).is_none() && model.table(t).is_some_and(|spec| spec.node_write) {
                    findings.push(Finding {
                        at: at.clone(),
                        kind: Kind::NodeWritesRuleInput { table: t.clone() },
                    });
                }
            }
        }
        for t in &reads {
            if let Some(m) = o.member(t)
                && !m.vis_event
            {
                findings.push(Finding {
                    at: at.clone(),
                    kind: Kind::VisEventOff {
                        table: m.table.clone(),
                    },
                });
            }
        }
        rule_reads.push(reads);
    }
    let mut related_reads = Vec::new();
    for r in &o.related {
        let at = loc(
            format!("object {:?} related {:?}", o.name, r.object),
            r.line,
        );
        let reads = compile_both(
            conn,
            &r.sql,
            Form::MapPair,
            Form::MapSet,
            model,
            &at,
            findings,
        )?;
        related_reads.push(reads);
    }

    Ok(Some(ResolvedObject {
        name: o.name.clone(),
        primary_table: primary.name.clone(),
        primary_key,
        members,
        rule_reads,
        related_reads,
    }))
}

fn check_join(j: &Join, schema: &Schema, at: &Location, findings: &mut Vec<Finding>) -> bool {
    let mut ok = true;
    for (t, cols) in [
        (&j.from_table, &j.from_columns),
        (&j.to_table, &j.to_columns),
    ] {
        let Some(info) = schema.table(t) else {
            findings.push(Finding {
                at: at.clone(),
                kind: Kind::UnknownTable { table: t.clone() },
            });
            ok = false;
            continue;
        };
        for c in cols {
            if info.column(c).is_none() {
                findings.push(Finding {
                    at: at.clone(),
                    kind: Kind::UnknownColumn {
                        join: j.to_string(),
                        table: info.name.clone(),
                        column: c.clone(),
                    },
                });
                ok = false;
            }
        }
    }
    ok
}

/// Every foreign-key chain from `member` to the primary table that passes only through
/// member tables of `o` (the seed's AddPKTable), without visiting a table twice.
fn fk_paths(o: &DockingObject, member: &str, schema: &Schema) -> Vec<Path> {
    fn walk(
        o: &DockingObject,
        schema: &Schema,
        at: &str,
        seen: &mut Vec<String>,
        joins: &mut Vec<Join>,
        out: &mut Vec<Path>,
    ) {
        let Some(info) = schema.table(at) else {
            return;
        };
        for fk in &info.fks {
            let Some(parent) = schema.table(&fk.table) else {
                continue;
            };
            let lower = parent.name.to_ascii_lowercase();
            if o.member(&parent.name).is_none()
                || seen.contains(&lower)
                || fk.to.len() != fk.from.len()
            {
                continue;
            }
            joins.push(Join {
                from_table: info.name.clone(),
                from_columns: fk.from.clone(),
                to_table: parent.name.clone(),
                to_columns: fk.to.clone(),
            });
            if parent.name.eq_ignore_ascii_case(&o.primary_table) {
                out.push(Path {
                    joins: joins.clone(),
                });
            } else {
                seen.push(lower);
                walk(o, schema, &parent.name, seen, joins, out);
                seen.pop();
            }
            joins.pop();
        }
    }
    let mut out = Vec::new();
    let mut seen = vec![member.to_ascii_lowercase()];
    walk(o, schema, member, &mut seen, &mut Vec::new(), &mut out);
    out.sort();
    out.dedup();
    out
}
