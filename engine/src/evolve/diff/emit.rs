//! The last phase of a diff: the steps and their SQL, in the order SQLite needs them
//! (the 12-step rebuild of a table among them).

use super::*;

/// The steps, in the order SQLite needs them: views and triggers that change dropped, then
/// indexes, tables dropped, renamed, rebuilt or altered, tables created, indexes, views (each
/// after the views it names) and triggers created.
pub(super) fn emit(
    from: &Snapshot,
    to: &Snapshot,
    renames: &Renames,
    tables: &Tables<'_>,
    fills: &Fills<'_>,
    decisions: &[Decision],
    opts: &DiffOptions,
) -> Result<Plan, Error> {
    let (pairs, created, dropped_tables) = (&tables.pairs, &tables.created, &tables.dropped);
    let mut plan = Plan {
        checksum_before: from.checksum()?,
        checksum_after: to.checksum()?,
        ..Plan::default()
    };
    let rebuilt: BTreeSet<String> = pairs
        .iter()
        .zip(decisions)
        .filter(|(_, d)| d.rebuild)
        .map(|(p, _)| lc(&p.from.name))
        .collect();
    let structural = !dropped_tables.is_empty()
        || !rebuilt.is_empty()
        || !renames.tables.is_empty()
        || pairs
            .iter()
            .any(|p| !p.renamed.is_empty() || !p.dropped.is_empty());
    plan.foreign_keys_off = !dropped_tables.is_empty() || !rebuilt.is_empty();
    let step = |kind, object: &str, detail: String, destructive, sql: Vec<String>| Step {
        kind,
        object: object.to_string(),
        detail,
        destructive,
        sql,
    };

    // Views and triggers to replace.
    let view_same = |v: &crate::evolve::snapshot::ViewDef| {
        !structural
            && to
                .views
                .iter()
                .any(|w| w.name == v.name && w.canonical == v.canonical)
    };
    let trig_same = |t: &crate::evolve::snapshot::TriggerDef| {
        !structural
            && !rebuilt.contains(&lc(&t.table))
            && to
                .triggers
                .iter()
                .any(|w| w.name == t.name && w.canonical == t.canonical)
    };
    for v in &from.views {
        if !view_same(v) {
            plan.steps.push(step(
                StepKind::DropView,
                &v.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP VIEW {}", ident(&v.name))],
            ));
        }
    }
    for t in &from.triggers {
        if !trig_same(t) {
            plan.steps.push(step(
                StepKind::DropTrigger,
                &t.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP TRIGGER {}", ident(&t.name))],
            ));
        }
    }
    let dropped_lc: BTreeSet<String> = dropped_tables.iter().map(|t| lc(&t.name)).collect();
    let index_kept = |i: &crate::evolve::snapshot::IndexDef| {
        !rebuilt.contains(&lc(&i.table))
            && !dropped_lc.contains(&lc(&i.table))
            && to.indexes.iter().any(|j| {
                j == i || (j.name == i.name && j.canonical == i.canonical && j.table == i.table)
            })
    };
    for i in &from.indexes {
        if !index_kept(i) && !rebuilt.contains(&lc(&i.table)) && !dropped_lc.contains(&lc(&i.table))
        {
            plan.steps.push(step(
                StepKind::DropIndex,
                &i.name,
                "replaced or removed".into(),
                false,
                vec![format!("DROP INDEX {}", ident(&i.name))],
            ));
        }
    }
    for t in dropped_tables {
        plan.steps.push(step(
            StepKind::DropTable,
            &t.name,
            "not in the new schema".into(),
            true,
            vec![format!("DROP TABLE {}", ident(&t.name))],
        ));
    }
    for (old, new) in &renames.tables {
        let name = from.table(old).map_or(old.clone(), |t| t.name.clone());
        plan.steps.push(step(
            StepKind::RenameTable,
            &name,
            format!("renamed to {new}"),
            false,
            vec![format!(
                "ALTER TABLE {} RENAME TO {}",
                ident(&name),
                ident(new)
            )],
        ));
    }
    for (p, d) in pairs.iter().zip(decisions) {
        let name = &p.to.name;
        if d.rebuild {
            let table_fills = fills.table(p.to);
            plan.steps.push(rebuild(
                p,
                &d.why,
                !opts.empty_tables.contains(&lc(&p.from.name)),
                &table_fills,
            )?);
            continue;
        }
        for (fcol, tcol) in p
            .renamed
            .iter()
            .filter_map(|(o, n)| col(p.from, o).map(|c| (c.name.clone(), n.clone())))
        {
            plan.steps.push(step(
                StepKind::RenameColumn,
                &format!("{name}.{fcol}"),
                format!("renamed to {tcol}"),
                false,
                vec![format!(
                    "ALTER TABLE {} RENAME COLUMN {} TO {}",
                    ident(name),
                    ident(&fcol),
                    ident(&tcol)
                )],
            ));
        }
        for c in &p.dropped {
            plan.steps.push(step(
                StepKind::DropColumn,
                &format!("{name}.{}", c.name),
                "not in the new schema".into(),
                true,
                vec![format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    ident(name),
                    ident(&c.name)
                )],
            ));
        }
        for c in &p.added {
            let def = column_text(p.to, &c.name)?;
            plan.steps.push(step(
                StepKind::AddColumn,
                &format!("{name}.{}", c.name),
                "new column".into(),
                false,
                vec![format!("ALTER TABLE {} ADD COLUMN {def}", ident(name))],
            ));
        }
    }
    for t in created {
        if t.sql.is_empty() {
            return Err(Error::Unsupported {
                table: t.name.clone(),
                reason: "the new schema does not carry its CREATE TABLE statement".into(),
            });
        }
        plan.steps.push(step(
            StepKind::CreateTable,
            &t.name,
            "new table".into(),
            false,
            vec![t.sql.clone()],
        ));
    }
    let rebuilt_to: BTreeSet<String> = pairs
        .iter()
        .filter(|p| rebuilt.contains(&lc(&p.from.name)))
        .map(|p| lc(&p.to.name))
        .collect();
    for i in &to.indexes {
        let existed = from
            .indexes
            .iter()
            .any(|j| index_kept(j) && j.name == i.name);
        if !existed || rebuilt_to.contains(&lc(&i.table)) {
            plan.steps.push(step(
                StepKind::CreateIndex,
                &i.name,
                format!("on {}", i.table),
                false,
                vec![i.sql.clone()],
            ));
        }
    }
    let mut views: Vec<&crate::evolve::snapshot::ViewDef> = to
        .views
        .iter()
        .filter(|v| !from.views.iter().any(|w| view_same(w) && w.name == v.name))
        .collect();
    // A view is created after the views it names.
    let mut ordered = Vec::new();
    while !views.is_empty() {
        let pos = views
            .iter()
            .position(|v| {
                let tk = sqltext::tokenize(&v.sql).unwrap_or_default();
                !views
                    .iter()
                    .any(|w| w.name != v.name && sqltext::mentions(&tk, &w.name))
            })
            .unwrap_or(0);
        ordered.push(views.remove(pos));
    }
    for v in ordered {
        plan.steps.push(step(
            StepKind::CreateView,
            &v.name,
            "view".into(),
            false,
            vec![v.sql.clone()],
        ));
    }
    for t in &to.triggers {
        if !from
            .triggers
            .iter()
            .any(|w| trig_same(w) && w.name == t.name)
        {
            plan.steps.push(step(
                StepKind::CreateTrigger,
                &t.name,
                format!("on {}", t.table),
                false,
                vec![t.sql.clone()],
            ));
        }
    }
    Ok(plan)
}

/// The definition text of one column in the table's `CREATE TABLE` statement.
fn column_text(t: &TableDef, name: &str) -> Result<String, Error> {
    let ct = sqltext::parse_create_table(&t.sql).ok_or_else(|| Error::Unsupported {
        table: t.name.clone(),
        reason: "its CREATE TABLE statement cannot be read".into(),
    })?;
    sqltext::column_text(&ct, name)
        .map(str::to_string)
        .ok_or_else(|| Error::Unsupported {
            table: t.name.clone(),
            reason: format!("column {name} not found in its CREATE TABLE statement"),
        })
}

/// The name a table is rebuilt under before it takes its own.
pub fn scratch_name(table: &str) -> String {
    format!("berth_migrate_{table}")
}

/// SQLite's 12-step rebuild of one table (steps 4-7 here; 1-3 and 8-12 are the plan's
/// framing, index/view/trigger recreation and foreign-key check).
pub(super) fn rebuild(
    p: &Pairing,
    why: &[String],
    has_rows: bool,
    fills: &BTreeMap<String, &Fill>,
) -> Result<Step, Error> {
    let (ft, tt) = (p.from, p.to);
    let name = &tt.name;
    let scratch = scratch_name(name);
    let ct = sqltext::parse_create_table(&tt.sql).ok_or_else(|| Error::Unsupported {
        table: name.clone(),
        reason: "its new CREATE TABLE statement cannot be read".into(),
    })?;
    let mut sql = vec![sqltext::rename_table_text(&ct, &scratch)];
    let mut cols = Vec::new();
    let mut exprs = Vec::new();
    let rowid_alias = |t: &TableDef| {
        !t.without_rowid
            && t.primary_key.len() == 1
            && col(t, &t.primary_key[0]).is_some_and(|c| c.decl_type == "INTEGER")
    };
    if !ft.without_rowid && !tt.without_rowid && !rowid_alias(tt) {
        cols.push("rowid".to_string());
        exprs.push("rowid".to_string());
    }
    for c in &tt.columns {
        if c.generated.is_some() {
            continue;
        }
        match p.source.get(&lc(&c.name)) {
            Some(fc) => {
                let src = ident(&fc.name);
                let in_key = tt
                    .primary_key
                    .iter()
                    .any(|k| k.eq_ignore_ascii_case(&c.name));
                let e = if let Some(f) = fills.get(&lc(&c.name)) {
                    format!("COALESCE({src}, ({}))", f.expr)
                } else if c.not_null && !fc.not_null && !in_key {
                    let fill = c
                        .default
                        .clone()
                        .unwrap_or_else(|| zero_value(&c.decl_type).to_string());
                    format!("COALESCE({src}, {fill})")
                } else {
                    src
                };
                cols.push(ident(&c.name));
                exprs.push(e);
            }
            None => {
                if let Some(f) = fills.get(&lc(&c.name)) {
                    cols.push(ident(&c.name));
                    exprs.push(format!("({})", f.expr));
                } else if c.not_null && c.default.as_deref().is_none_or(|d| d == "NULL") && has_rows
                {
                    cols.push(ident(&c.name));
                    exprs.push(zero_value(&c.decl_type).to_string());
                }
            }
        }
    }
    if !cols.is_empty() {
        sql.push(format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            ident(&scratch),
            cols.join(", "),
            exprs.join(", "),
            ident(name)
        ));
    }
    if ft.autoincrement && tt.autoincrement {
        // The counter may be above the highest key (rows deleted at the end): keep it.
        sql.push(format!(
            "DELETE FROM sqlite_sequence WHERE name = {}",
            literal(&scratch)
        ));
        sql.push(format!(
            "INSERT INTO sqlite_sequence(name, seq) SELECT {}, seq FROM sqlite_sequence WHERE name = {}",
            literal(&scratch),
            literal(name)
        ));
    }
    sql.push(format!("DROP TABLE {}", ident(name)));
    sql.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        ident(&scratch),
        ident(name)
    ));
    Ok(Step {
        kind: StepKind::Rebuild,
        object: name.clone(),
        detail: format!("rebuilt: {}", why.join("; ")),
        destructive: !p.dropped.is_empty(),
        sql,
    })
}
