//! Compiling rules the way the router will run them: each rule's SQL against the router's
//! TEMP relations, which are made in the connection's temp schema if missing and dropped
//! again afterwards.

use super::*;

pub(super) fn compile_both(
    conn: &Db<'_>,
    sql: &RuleSql,
    pair: Form,
    set: Form,
    model: &DockingModel,
    at: &Location,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<BTreeSet<String>> {
    let mut reads = BTreeSet::new();
    if let Some(s) = &sql.pair {
        reads.extend(compile(conn, s, pair, model, at, findings)?);
    }
    if let Some(s) = &sql.set {
        reads.extend(compile(conn, s, set, model, at, findings)?);
    }
    Ok(reads)
}

/// Prepares `sql` as the router will, checks its columns, parameters and that it only reads;
/// returns the user tables it reads.
pub(super) fn compile(
    db: &Db<'_>,
    sql: &str,
    form: Form,
    model: &DockingModel,
    at: &Location,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<BTreeSet<String>> {
    let conn = db.conn;
    let mut push = |kind| {
        findings.push(Finding {
            at: at.clone(),
            kind,
        })
    };
    let vetted = db.probe.vet(sql);
    if let Vetted::Refused(what) = vetted {
        push(Kind::NotAllowed { form, what });
        return Ok(BTreeSet::new());
    }
    let st = match conn.prepare(sql) {
        Ok(st) => st,
        Err(e) => {
            push(Kind::Sql {
                form,
                error: e.to_string(),
            });
            return Ok(BTreeSet::new());
        }
    };
    if !st.readonly() {
        push(Kind::NotReadOnly { form });
        return Ok(BTreeSet::new());
    }
    if let Vetted::Unknown(error) = vetted {
        // It compiles here but not in the copy of the schema: it cannot be vetted, so it
        // may not run.
        push(Kind::Sql {
            form,
            error: format!("it could not be checked against a copy of the schema: {error}"),
        });
        return Ok(BTreeSet::new());
    }
    if let Some(expected) = form.columns() {
        let found = st.column_count();
        if found != expected {
            push(Kind::Columns {
                form,
                expected,
                found,
            });
        }
    }
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i).unwrap_or("?").to_string();
        let allowed = match form {
            Form::RulePair => {
                name == PARAM_PRIMARY_ROW_ID
                    || name == PARAM_NODE_ID
                    || name.starts_with(PARAM_ATTR_PREFIX)
            }
            Form::MapPair => name == PARAM_PRIMARY_ROW_ID,
            Form::RuleSet | Form::MapSet | Form::PrimaryId => {
                // Generated SQL binds the member key positionally.
                form == Form::PrimaryId && !name.starts_with([':', '@', '$'])
            }
        };
        if !allowed {
            push(Kind::Parameter { form, name });
        } else if let Some(attr) = name.strip_prefix(PARAM_ATTR_PREFIX)
            && !model.node_attributes.contains(attr)
        {
            push(Kind::UndeclaredAttribute {
                form,
                attribute: attr.to_string(),
            });
        }
    }
    drop(st);
    tables_read(conn, sql)
}

/// The user tables a statement reads, from its bytecode: every `OpenRead` cursor's root page,
/// mapped to its table (an index's root page to the index's table).
pub(super) fn tables_read(conn: &Connection, sql: &str) -> rusqlite::Result<BTreeSet<String>> {
    let mut roots: BTreeMap<(i64, i64), String> = BTreeMap::new();
    for (db, master) in [(0, "main.sqlite_master"), (1, "temp.sqlite_master")] {
        let mut st = conn.prepare(&format!(
            "SELECT rootpage, tbl_name FROM {master} WHERE rootpage > 0"
        ))?;
        let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (page, table) = row?;
            roots.insert((db, page), table);
        }
    }
    let mut out = BTreeSet::new();
    let mut st = conn.prepare(&format!("EXPLAIN {sql}"))?;
    // Parameters stay unbound (NULL): only the program is read, not the answer.
    let mut rows = st.raw_query();
    while let Some(r) = rows.next()? {
        let opcode: String = r.get(1)?;
        if opcode == "OpenRead" {
            let page: i64 = r.get(3)?;
            let db: i64 = r.get(4)?;
            if let Some(t) = roots.get(&(db, page))
                && !crate::schema::is_internal(t)
            {
                out.insert(t.clone());
            }
        }
    }
    Ok(out)
}

/// The router's TEMP relations, created for compiling rules and dropped again if we made them.
pub(super) struct TempRelations {
    created: bool,
}

impl TempRelations {
    pub(super) fn create(conn: &Connection) -> rusqlite::Result<Self> {
        let existing: i64 = conn.query_row(
            "SELECT count(*) FROM temp.sqlite_master WHERE type = 'table' AND name IN (?1, ?2)",
            NODE_RELATIONS,
            |r| r.get(0),
        )?;
        let created = existing == 0;
        if created {
            conn.execute_batch(NODE_RELATIONS_DDL)?;
        }
        Ok(Self { created })
    }

    pub(super) fn remove(self, conn: &Connection) -> rusqlite::Result<()> {
        if self.created {
            for t in NODE_RELATIONS {
                conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", ident(t)))?;
            }
        }
        Ok(())
    }
}
