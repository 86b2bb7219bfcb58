//! The fourth phase of a diff: each kept table altered in place or rebuilt, and what would
//! destroy data.

use super::*;

/// Whether a kept table is altered in place or rebuilt, and why it is rebuilt.
pub(super) struct Decision {
    pub(super) rebuild: bool,
    pub(super) why: Vec<String>,
}

/// Decides each pair of tables: altered in place, or rebuilt (and why). Refuses a new NOT
/// NULL column whose zero its table refuses and, unless `opts` allows it, any step that
/// would destroy data (each named, with the hint that would avoid it).
pub(super) fn decide(
    to: &Snapshot,
    renames: &Renames,
    tables: &Tables<'_>,
    fills: &Fills<'_>,
    opts: &DiffOptions,
) -> Result<Vec<Decision>, Error> {
    let (created, dropped_tables) = (&tables.created, &tables.dropped);
    let mut destructive: Vec<String> = Vec::new();
    for t in dropped_tables {
        let hint = match created.first() {
            Some(n) => format!(
                " (if it became {}, say so: --rename {}={})",
                n.name, t.name, n.name
            ),
            None => String::new(),
        };
        destructive.push(format!("drop table {}{hint}", t.name));
    }
    let has_rows = |t: &TableDef| !opts.empty_tables.contains(&lc(&t.name));
    let mut decisions: Vec<Decision> = Vec::new();
    let mut unfillable: Vec<String> = Vec::new();
    for p in &tables.pairs {
        let mut why: Vec<String> = Vec::new();
        decide_columns(
            p,
            to,
            fills,
            has_rows(p.from),
            &mut destructive,
            &mut unfillable,
            &mut why,
        )?;
        decide_structure(p, renames, fills, &mut why);
        decisions.push(Decision {
            rebuild: !why.is_empty(),
            why,
        });
    }
    if !unfillable.is_empty() {
        return Err(Error::Unfillable {
            columns: unfillable,
        });
    }
    if !destructive.is_empty() && !opts.allow_destructive {
        return Err(Error::Destructive { steps: destructive });
    }
    Ok(decisions)
}

/// The columns of a kept table: what would destroy data (`destructive`), new NOT NULL
/// columns whose zero the table refuses (`unfillable`), and the changes `ALTER TABLE` cannot
/// make (`why` the table is rebuilt).
fn decide_columns(
    p: &Pairing<'_>,
    to: &Snapshot,
    fills: &Fills<'_>,
    has_rows: bool,
    destructive: &mut Vec<String>,
    unfillable: &mut Vec<String>,
    why: &mut Vec<String>,
) -> Result<(), Error> {
    let (ft, tt) = (p.from, p.to);
    for c in &p.dropped {
        let hint = match p.added.first() {
            Some(a) => format!(
                " (if it became {}, say so: --rename {}.{}={})",
                a.name, ft.name, c.name, a.name
            ),
            None => String::new(),
        };
        destructive.push(format!("drop column {}.{}{hint}", ft.name, c.name));
    }
    for c in &tt.columns {
        let Some(fc) = p.source.get(&lc(&c.name)) else {
            if c.not_null
                && c.generated.is_none()
                && c.default.as_deref().is_none_or(|d| d == "NULL")
                && has_rows
                && fills.of(tt, c).is_none()
            {
                let zero = zero_value(&c.decl_type);
                let is_new = |n: &str| !p.source.contains_key(&lc(n));
                if let Some(why) = fill::zero_refusal(tt, &to.indexes, &c.name, zero, &is_new)? {
                    unfillable.push(format!("new column {}.{} {why}", tt.name, c.name));
                }
                destructive.push(format!(
                    "new column {}.{} is NOT NULL without a default on a table that may hold rows (existing rows get {zero}, or what --fill {}.{}=SQL-EXPR says)",
                    tt.name, c.name, tt.name, c.name
                ));
            }
            continue;
        };
        let mut changed = Vec::new();
        if fc.decl_type != c.decl_type {
            changed.push(format!("type {} -> {}", fc.decl_type, c.decl_type));
            if c.generated.is_none() && narrows(&fc.decl_type, &c.decl_type, tt.strict) {
                destructive.push(format!(
                    "narrow {}.{} from {} to {}",
                    tt.name,
                    c.name,
                    if fc.decl_type.is_empty() {
                        "no type"
                    } else {
                        &fc.decl_type
                    },
                    if c.decl_type.is_empty() {
                        "no type"
                    } else {
                        &c.decl_type
                    },
                ));
            }
        }
        if fc.not_null != c.not_null {
            changed.push(
                if c.not_null {
                    "NOT NULL added"
                } else {
                    "NOT NULL dropped"
                }
                .into(),
            );
            // A key column (WITHOUT ROWID makes keys NOT NULL) is never filled in: a NULL
            // key fails the copy and the whole migration rolls back.
            let in_key = tt
                .primary_key
                .iter()
                .any(|k| k.eq_ignore_ascii_case(&c.name));
            if c.not_null
                && c.default.is_none()
                && has_rows
                && c.generated.is_none()
                && !in_key
                && fills.of(tt, c).is_none()
            {
                destructive.push(format!(
                    "{}.{} becomes NOT NULL without a default (NULLs become {})",
                    tt.name,
                    c.name,
                    zero_value(&c.decl_type)
                ));
            }
        }
        if fc.default != c.default {
            changed.push("default".into());
        }
        if fc.collation != c.collation {
            changed.push(format!(
                "collation {} -> {}",
                fc.collation.as_deref().unwrap_or("BINARY"),
                c.collation.as_deref().unwrap_or("BINARY")
            ));
        }
        let from_gen = fc
            .generated
            .as_ref()
            .map(|g| Some((g.stored, rename_idents(&g.expr, &p.renamed))));
        let to_gen = c
            .generated
            .as_ref()
            .map(|g| Some((g.stored, g.expr.clone())));
        if from_gen != to_gen {
            changed.push("generated expression".into());
            if fc.generated.is_none() && c.generated.is_some() {
                destructive.push(format!(
                    "{}.{} becomes a generated column (its stored values are replaced)",
                    tt.name, c.name
                ));
            }
        }
        if !changed.is_empty() {
            why.push(format!("column {}: {}", c.name, changed.join(", ")));
        }
    }
    Ok(())
}

/// The table-level changes of a kept table `ALTER TABLE` cannot make (its flags, key,
/// constraints, column order, and the columns added or dropped that it refuses): `why` it
/// is rebuilt.
fn decide_structure(p: &Pairing<'_>, renames: &Renames, fills: &Fills<'_>, why: &mut Vec<String>) {
    let (ft, tt) = (p.from, p.to);
    if ft.without_rowid != tt.without_rowid {
        why.push("WITHOUT ROWID changed".into());
    }
    if ft.strict != tt.strict {
        why.push("STRICT changed".into());
    }
    if ft.autoincrement != tt.autoincrement {
        why.push("AUTOINCREMENT changed".into());
    }
    if lower_all(&map_names(&ft.primary_key, &p.renamed)) != lower_all(&tt.primary_key) {
        why.push("primary key changed".into());
    }
    let mut ffk: Vec<_> = ft
        .foreign_keys
        .iter()
        .map(|fk| {
            let parent_to = renames.table(&fk.parent);
            let parent_renames = renames
                .columns
                .get(&lc(&parent_to))
                .cloned()
                .unwrap_or_default();
            fk_key(&ForeignKey {
                columns: map_names(&fk.columns, &p.renamed),
                parent: parent_to,
                parent_columns: map_names(&fk.parent_columns, &parent_renames),
                ..fk.clone()
            })
        })
        .collect();
    let mut tfk: Vec<_> = tt.foreign_keys.iter().map(fk_key).collect();
    ffk.sort();
    tfk.sort();
    if ffk != tfk {
        why.push("foreign keys changed".into());
    }
    let mut fu: Vec<_> =
        ft.uniques
            .iter()
            .map(|u| {
                unique_key(
                    &u.iter()
                        .map(|c| IndexColumn {
                            name: c.name.as_ref().map(|n| {
                                p.renamed.get(&lc(n)).cloned().unwrap_or_else(|| n.clone())
                            }),
                            ..c.clone()
                        })
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
    let mut tu: Vec<_> = tt.uniques.iter().map(|u| unique_key(u)).collect();
    fu.sort();
    tu.sort();
    if fu != tu {
        why.push("UNIQUE constraints changed".into());
    }
    let mut fc: Vec<String> = ft
        .checks
        .iter()
        .map(|c| rename_idents(c, &p.renamed))
        .collect();
    let mut tc: Vec<String> = tt
        .checks
        .iter()
        .map(|c| rename_idents(c, &BTreeMap::new()))
        .collect();
    fc.sort();
    tc.sort();
    if fc != tc {
        why.push("CHECK constraints changed".into());
    }
    // Column order: kept columns in the old order, added ones at the end.
    let kept_order: Vec<String> = tt
        .columns
        .iter()
        .filter_map(|c| p.source.get(&lc(&c.name)).map(|f| lc(&f.name)))
        .collect();
    let old_order: Vec<String> = ft
        .columns
        .iter()
        .map(|c| lc(&c.name))
        .filter(|n| kept_order.contains(n))
        .collect();
    let first_added = tt
        .columns
        .iter()
        .position(|c| !p.source.contains_key(&lc(&c.name)));
    let added_at_end = first_added.is_none_or(|i| {
        tt.columns[i..]
            .iter()
            .all(|c| !p.source.contains_key(&lc(&c.name)))
    });
    if kept_order != old_order || !added_at_end {
        why.push("column order changed".into());
    }
    for c in &p.added {
        let d = c.default.as_deref().unwrap_or("NULL");
        let reason = if fills.of(tt, c).is_some() {
            Some("is filled per row")
        } else if tt
            .primary_key
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&c.name))
        {
            Some("is in the primary key")
        } else if c.generated.as_ref().is_some_and(|g| g.stored) {
            Some("is a STORED generated column")
        } else if c.not_null && d == "NULL" && c.generated.is_none() {
            Some("is NOT NULL without a default")
        } else if d.starts_with('(')
            || ["CURRENT_TIME", "CURRENT_DATE", "CURRENT_TIMESTAMP"].contains(&d)
        {
            Some("has a default ADD COLUMN does not accept")
        } else {
            None
        };
        if let Some(r) = reason {
            why.push(format!("new column {} {r}", c.name));
        }
    }
    for c in &p.dropped {
        let mention = |texts: &[String]| {
            texts
                .iter()
                .any(|t| sqltext::tokenize(t).is_ok_and(|tk| sqltext::mentions(&tk, &c.name)))
        };
        let gens: Vec<String> = ft
            .columns
            .iter()
            .filter_map(|x| x.generated.as_ref().map(|g| g.expr.clone()))
            .collect();
        let in_key = ft
            .primary_key
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&c.name));
        let in_unique = ft.uniques.iter().flatten().any(|u| {
            u.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&c.name))
        });
        let in_fk = ft
            .foreign_keys
            .iter()
            .any(|f| f.columns.iter().any(|x| x.eq_ignore_ascii_case(&c.name)));
        if in_key || in_unique || in_fk || mention(&ft.checks) || mention(&gens) {
            why.push(format!(
                "dropped column {} is in a key, constraint or generated column",
                c.name
            ));
        }
    }
}
