//! Validates a [`DockingModel`] against a real SQLite schema (`berth docking check`).
//!
//! [`resolve`] reads the schema ([`Schema::read`]), resolves every member's paths to its
//! primary table (the seed's GeneratePrimaryIdSQL: declared joins, or the schema's foreign
//! keys through member tables), compiles every rule's SQL the way the router will run it,
//! and returns the [`Resolved`] model together with the [`Finding`]s. [`check`] returns only
//! the findings; [`model_findings`] is the part that needs no database.
//!
//! Nothing here writes to the database: compiling rules needs the router's TEMP relations
//! ([`NODE_RELATIONS_DDL`]); they are created in the connection's temp schema if missing and
//! dropped again afterwards.

use super::model::{
    DockingModel, DockingObject, Join, Location, ModelError, NODE_RELATIONS, NODE_RELATIONS_DDL,
    PARAM_ATTR_PREFIX, PARAM_NODE_ID, PARAM_PRIMARY_ROW_ID, Path, PathSpec, Rule, RuleSql,
    Visibility,
};
use crate::sqlpolicy::{QueryProbe, Vetted};
use crate::store::ident;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod finding;
mod resolve;
mod rules;
mod schema;

pub use finding::*;
pub use resolve::*;
use rules::*;
pub use schema::*;

/// Findings of [`DockingModel`] against the schema of `conn`.
pub fn check(model: &DockingModel, conn: &Connection) -> rusqlite::Result<Vec<Finding>> {
    Ok(resolve(model, conn)?.1)
}

/// The links the model lets nodes make to instances they do not hold (`node_link`), one
/// line each; empty when nodes may link rows only to instances they hold (SPEC 2.10).
pub fn link_grants(model: &DockingModel) -> Vec<String> {
    let mut out = Vec::new();
    for o in &model.objects {
        for m in o.members.iter().filter(|m| m.node_link) {
            out.push(format!(
                "object {:?} member {:?}: nodes may put {} rows into any {} by its id",
                o.name, m.table, m.table, o.name
            ));
        }
        for (i, r) in o.rules.iter().enumerate() {
            if let Rule::Object {
                object,
                node_link: true,
                ..
            } = r
            {
                out.push(format!(
                    "object {:?} rule {}: nodes' writes may make any {} visible where the {object} they map it to is",
                    o.name,
                    i + 1,
                    o.name
                ));
            }
        }
        for r in o.related.iter().filter(|r| r.node_link) {
            out.push(format!(
                "object {:?} related {:?}: nodes' writes may bring any {} along with a {}",
                o.name, r.object, r.object, o.name
            ));
        }
    }
    out
}

/// Parses `text` and checks it; a model that does not parse is one finding.
pub fn check_toml(text: &str, conn: &Connection) -> rusqlite::Result<Vec<Finding>> {
    match DockingModel::from_toml(text) {
        Ok(m) => check(&m, conn),
        Err(e) => Ok(vec![Finding {
            at: Location {
                item: "docking model".into(),
                line: None,
            },
            kind: Kind::Model(e),
        }]),
    }
}

/// The findings that need no database: visibility of members, orphan tables, rules that can
/// never match, related objects without a way back.
pub fn model_findings(model: &DockingModel) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in model.tables.values() {
        let at = loc(format!("table {:?}", t.name), t.line);
        match t.visibility {
            Visibility::Limited if model.objects_of(&t.name).next().is_none() => {
                out.push(Finding {
                    at,
                    kind: Kind::LimitedWithoutObject {
                        table: t.name.clone(),
                    },
                })
            }
            Visibility::Central if t.node_write => out.push(Finding {
                at,
                kind: Kind::NodeWriteOnCentral {
                    table: t.name.clone(),
                },
            }),
            _ => {}
        }
    }
    for o in &model.objects {
        for m in &o.members {
            if let Some(spec) = model.table(&m.table)
                && spec.visibility != Visibility::Limited
            {
                out.push(Finding {
                    at: member_loc(o, &m.table, m.line),
                    kind: Kind::MemberNotLimited {
                        table: m.table.clone(),
                        visibility: spec.visibility,
                    },
                });
            }
        }
        for r in &o.related {
            let back = model.object(&r.object).is_some_and(|rel| {
                rel.rules.iter().any(
                    |x| matches!(x, Rule::Object { object, .. } if object.eq_ignore_ascii_case(&o.name)),
                )
            });
            if !back {
                out.push(Finding {
                    at: loc(
                        format!("object {:?} related {:?}", o.name, r.object),
                        r.line,
                    ),
                    kind: Kind::RelatedWithoutRule {
                        object: o.name.clone(),
                        related: r.object.clone(),
                    },
                });
            }
        }
    }
    out.extend(never_visible(model));
    out
}

/// Fig. 7: an instance is visible when an SQL rule matches, or an object rule leads to a
/// visible instance. So an object can be visible only if following object rules reaches an
/// object with an SQL rule; a cycle of object rules with no SQL rule in reach never matches.
fn never_visible(model: &DockingModel) -> Vec<Finding> {
    let key = |s: &str| s.to_ascii_lowercase();
    let mut can: BTreeSet<String> = model
        .objects
        .iter()
        .filter(|o| o.rules.iter().any(|r| matches!(r, Rule::Sql { .. })))
        .map(|o| key(&o.name))
        .collect();
    loop {
        let before = can.len();
        for o in &model.objects {
            if o.rules
                .iter()
                .any(|r| matches!(r, Rule::Object { object, .. } if can.contains(&key(object))))
            {
                can.insert(key(&o.name));
            }
            // A related object travels with a visible instance (route::oracle).
            if can.contains(&key(&o.name)) {
                for r in &o.related {
                    can.insert(key(&r.object));
                }
            }
        }
        if can.len() == before {
            break;
        }
    }
    model
        .objects
        .iter()
        .filter(|o| !can.contains(&key(&o.name)))
        .map(|o| {
            let targets: BTreeSet<&str> = o
                .rules
                .iter()
                .filter_map(|r| match r {
                    Rule::Object { object, .. } => Some(object.as_str()),
                    Rule::Sql { .. } => None,
                })
                .collect();
            let reason = if targets.is_empty() {
                "it has no rules".to_string()
            } else {
                format!(
                    "it has no SQL rule and its object rules lead only to {} (a cycle or chain of object rules with no SQL rule in it)",
                    targets.into_iter().collect::<Vec<_>>().join(", ")
                )
            };
            Finding {
                at: loc(format!("object {:?}", o.name), o.line),
                kind: Kind::NeverVisible { reason },
            }
        })
        .collect()
}

fn loc(item: String, line: Option<usize>) -> Location {
    Location { item, line }
}

fn member_loc(o: &DockingObject, table: &str, line: Option<usize>) -> Location {
    loc(
        format!("object {:?} member {table:?}", o.name),
        line.or(o.line),
    )
}

/// Tables without a PRIMARY KEY must be `local` or name their key; a named key must
/// identify the rows (SPEC 2.2). A valid named key becomes the table's key in `schema`, so
/// members and routing use it.
fn key_findings(
    model: &DockingModel,
    conn: &Connection,
    schema: &mut Schema,
    findings: &mut Vec<Finding>,
) -> rusqlite::Result<()> {
    for t in schema.tables.values_mut() {
        let spec = model.table(&t.name);
        let at = loc(format!("table {:?}", t.name), spec.and_then(|s| s.line));
        let local = spec.is_some_and(|s| s.visibility == Visibility::Local);
        let bad = |reason: String| Finding {
            at: at.clone(),
            kind: Kind::BadNamedKey {
                table: t.name.clone(),
                reason,
            },
        };
        match spec.and_then(|s| s.key.as_ref()) {
            Some(_) if local => findings.push(bad(
                "a local table is never sent, so it needs no key; remove `key`".into(),
            )),
            Some(_) if !t.pk.is_empty() => findings.push(bad(format!(
                "has a PRIMARY KEY ({}); `key` is only for tables without one, remove it",
                t.pk.join(", ")
            ))),
            Some(key) => match crate::schema::key_problem(conn, &t.name, key) {
                Ok(Some(reason)) => findings.push(bad(reason)),
                Ok(None) => {
                    t.pk = key
                        .iter()
                        .filter_map(|k| t.columns.iter().find(|c| c.eq_ignore_ascii_case(k)))
                        .cloned()
                        .collect();
                }
                Err(crate::error::EngineError::Sql(e)) => return Err(e),
                Err(e) => findings.push(bad(e.to_string())),
            },
            None if t.pk.is_empty() && !local => findings.push(Finding {
                at,
                kind: Kind::NoPrimaryKey {
                    table: t.name.clone(),
                },
            }),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = "
        CREATE TABLE emp(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
        CREATE TABLE opty_emp(
          opty_id TEXT REFERENCES opty(id), emp_id TEXT REFERENCES emp(id),
          PRIMARY KEY (opty_id, emp_id));
        CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id), owner TEXT);";

    const MODEL: &str = r#"version = 1
[nodes]
attributes = ["employee"]
[tables]
emp = { visibility = "enterprise" }
opty = { visibility = "limited", node_write = true }
opty_emp = { visibility = "limited" }
quote = { visibility = "limited" }

[[object]]
name = "opportunity"
primary_table = "opty"
[[object.member]]
table = "opty_emp"
[[object.rule]]
sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
set_sql = "SELECT oe.opty_id, na.node_id FROM opty_emp oe JOIN berth_node_attr na ON na.name = 'employee' AND na.value = oe.emp_id"
[[object.related]]
object = "quote"
sql = "SELECT id FROM quote WHERE opty_id = :primary_row_id"

[[object]]
name = "quote"
primary_table = "quote"
[[object.rule]]
sql = "SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee"
[[object.rule]]
object = "opportunity"
sql = "SELECT opty_id FROM quote WHERE id = :primary_row_id"
set_sql = "SELECT id, opty_id FROM quote WHERE opty_id IS NOT NULL"
"#;

    fn db(sql: &str) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(sql).unwrap();
        c
    }

    fn findings(schema: &str, toml: &str) -> Vec<Finding> {
        check_toml(toml, &db(schema)).unwrap()
    }

    #[test]
    fn the_base_case_is_clean_and_resolves() {
        let c = db(SCHEMA);
        let model = DockingModel::from_toml(MODEL).unwrap();
        let (resolved, found) = resolve(&model, &c).unwrap();
        assert!(found.is_empty(), "{found:#?}");
        let o = &resolved.objects[0];
        assert_eq!(o.primary_key, "id");
        assert_eq!(o.members[1].key, vec!["opty_id", "emp_id"]);
        assert_eq!(
            o.members[1].paths[0].to_string(),
            "[opty_emp.opty_id -> opty.id]"
        );
        assert_eq!(
            o.rule_reads[0],
            BTreeSet::from(["opty_emp".to_string()]),
            "the TEMP node relations are not user tables"
        );
        assert_eq!(
            resolved.objects[1].rule_reads[1],
            BTreeSet::from(["quote".to_string()])
        );
        // The TEMP relations made for compiling are gone again.
        let temp: i64 = c
            .query_row("SELECT count(*) FROM temp.sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(temp, 0);
    }

    /// One case per kind of finding: the schema and model (the base ones, changed), what
    /// must be found, and a fragment of where.
    #[test]
    fn each_kind_of_finding_is_reported_where_it_is() {
        type Expect = fn(&Kind) -> bool;
        let swap = |from: &str, to: &str| {
            assert!(MODEL.contains(from), "{from}");
            MODEL.replacen(from, to, 1)
        };
        let plus = |more: &str| format!("{MODEL}{more}");
        let s = SCHEMA.to_string();
        let cases: Vec<(&str, String, String, Expect, &str)> = vec![
            (
                "model error",
                s.clone(),
                swap("object = \"opportunity\"", "object = \"opportunityy\""),
                |k| matches!(k, Kind::Model(ModelError::UnknownObject { .. })),
                "docking model",
            ),
            (
                "schema table not declared",
                format!("{s} CREATE TABLE note(id TEXT PRIMARY KEY);"),
                MODEL.into(),
                |k| matches!(k, Kind::UndeclaredTable { table } if table == "note"),
                "[tables]",
            ),
            (
                "declared table not in schema",
                s.clone(),
                swap(
                    "[[object]]",
                    "ghost = { visibility = \"central\" }\n[[object]]",
                ),
                |k| matches!(k, Kind::UnknownTable { table } if table == "ghost"),
                "table \"ghost\" (line",
            ),
            (
                "unknown column in a declared join",
                s.clone(),
                swap(
                    "table = \"opty_emp\"\n",
                    "table = \"opty_emp\"\npaths = [[\"opty_emp.opty -> opty.id\"]]\n",
                ),
                |k| matches!(k, Kind::UnknownColumn { column, .. } if column == "opty"),
                "member \"opty_emp\" (line 13)",
            ),
            (
                "no path",
                format!("{s} CREATE TABLE note(id TEXT PRIMARY KEY, opty TEXT);"),
                swap(
                    "[[object]]",
                    "note = { visibility = \"limited\" }\n[[object]]",
                )
                .replacen(
                    "[[object.rule]]",
                    "[[object.member]]\ntable = \"note\"\n[[object.rule]]",
                    1,
                ),
                |k| matches!(k, Kind::NoPath { member, .. } if member == "note"),
                "member \"note\"",
            ),
            (
                "ambiguous foreign-key paths",
                format!(
                    "{s} CREATE TABLE swap(id TEXT PRIMARY KEY,
                     from_opty TEXT REFERENCES opty(id), to_opty TEXT REFERENCES opty);"
                ),
                swap(
                    "[[object]]",
                    "swap = { visibility = \"limited\" }\n[[object]]",
                )
                .replacen(
                    "[[object.rule]]",
                    "[[object.member]]\ntable = \"swap\"\n[[object.rule]]",
                    1,
                ),
                |k| {
                    matches!(k, Kind::AmbiguousPath { candidates, .. } if candidates.len() == 2
                    && k.to_string().contains("paths = [[\"swap.from_opty -> opty.id\"], [\"swap.to_opty -> opty.id\"]]"))
                },
                "member \"swap\"",
            ),
            (
                "SQL that does not compile",
                s.clone(),
                swap("AND owner = :attr_employee", "AND ownr = :attr_employee"),
                |k| matches!(k, Kind::Sql { form: Form::RulePair, error } if error.contains("ownr")),
                "object \"quote\" rule 1 (line 25)",
            ),
            (
                "two statements",
                s.clone(),
                swap(
                    "WHERE opty_id IS NOT NULL\"",
                    "WHERE opty_id IS NOT NULL; SELECT 1\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Sql {
                            form: Form::MapSet,
                            ..
                        }
                    )
                },
                "object \"quote\" rule 2",
            ),
            (
                "set form with three columns",
                s.clone(),
                swap(
                    "SELECT oe.opty_id, na.node_id",
                    "SELECT oe.opty_id, na.node_id, 1",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Columns {
                            form: Form::RuleSet,
                            expected: 2,
                            found: 3
                        }
                    )
                },
                "object \"opportunity\" rule 1",
            ),
            (
                "mapping with two columns",
                s.clone(),
                swap(
                    "sql = \"SELECT opty_id FROM quote",
                    "sql = \"SELECT opty_id, owner FROM quote",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::Columns {
                            form: Form::MapPair,
                            expected: 1,
                            found: 2
                        }
                    )
                },
                "object \"quote\" rule 2",
            ),
            (
                "node parameter in a set form",
                s.clone(),
                swap(
                    "WHERE opty_id IS NOT NULL\"",
                    "WHERE opty_id IS NOT NULL AND owner = :node_id\"",
                ),
                |k| matches!(k, Kind::Parameter { form: Form::MapSet, name } if name == ":node_id"),
                "object \"quote\" rule 2",
            ),
            (
                "node parameter in a mapping",
                s.clone(),
                swap(
                    "WHERE id = :primary_row_id\"\nset_sql",
                    "WHERE id = :primary_row_id AND owner = :node_id\"\nset_sql",
                ),
                |k| matches!(k, Kind::Parameter { form: Form::MapPair, name } if name == ":node_id"),
                "object \"quote\" rule 2",
            ),
            (
                "unknown parameter in a rule",
                s.clone(),
                swap("owner = :attr_employee", "owner = :employee"),
                |k| matches!(k, Kind::Parameter { form: Form::RulePair, name } if name == ":employee"),
                "object \"quote\" rule 1",
            ),
            (
                "undeclared attribute",
                s.clone(),
                swap("owner = :attr_employee", "owner = :attr_region"),
                |k| matches!(k, Kind::UndeclaredAttribute { attribute, .. } if attribute == "region"),
                "object \"quote\" rule 1",
            ),
            (
                "a rule that writes",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"DELETE FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what == "DELETE FROM quote"
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a rule that attaches a database (read-only to SQLite)",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"ATTACH 'evil.db' AS evil\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what.starts_with("ATTACH")
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a rule that runs a pragma",
                s.clone(),
                swap(
                    "sql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner = :attr_employee\"",
                    "sql = \"PRAGMA foreign_keys = OFF\"",
                ),
                |k| {
                    matches!(
                        k,
                        Kind::NotAllowed {
                            form: Form::RulePair,
                            what,
                        } if what == "PRAGMA foreign_keys = OFF"
                    )
                },
                "object \"quote\" rule 1",
            ),
            (
                "a cycle of object rules with no SQL rule",
                s.clone(),
                plus(
                    "[[object]]\nname = \"a\"\nprimary_table = \"emp\"\n[[object.rule]]\nobject = \"b\"\nsql = \"SELECT 1\"\n\
                      [[object]]\nname = \"b\"\nprimary_table = \"emp\"\n[[object.rule]]\nobject = \"a\"\nsql = \"SELECT 1\"\n",
                ),
                |k| matches!(k, Kind::NeverVisible { reason } if reason.contains("lead only to b")),
                "object \"a\" (line 31)",
            ),
            (
                "an object without rules",
                s.clone(),
                plus("[[object]]\nname = \"lonely\"\nprimary_table = \"quote\"\n"),
                |k| matches!(k, Kind::NeverVisible { reason } if reason == "it has no rules"),
                "object \"lonely\"",
            ),
            (
                "limited table in no object",
                s.clone(),
                swap(
                    "emp = { visibility = \"enterprise\" }",
                    "emp = { visibility = \"limited\" }",
                ),
                |k| matches!(k, Kind::LimitedWithoutObject { table } if table == "emp"),
                "table \"emp\" (line 5)",
            ),
            (
                "enterprise member",
                s.clone(),
                swap(
                    "opty_emp = { visibility = \"limited\" }",
                    "opty_emp = { visibility = \"enterprise\" }",
                ),
                |k| matches!(k, Kind::MemberNotLimited { table, visibility: Visibility::Enterprise } if table == "opty_emp"),
                "object \"opportunity\" member \"opty_emp\" (line 13)",
            ),
            (
                "central primary table",
                s.clone(),
                swap(
                    "quote = { visibility = \"limited\" }",
                    "quote = { visibility = \"central\" }",
                ),
                |k| matches!(k, Kind::MemberNotLimited { table, visibility: Visibility::Central } if table == "quote"),
                "object \"quote\" member \"quote\"",
            ),
            (
                "node_write on a central table",
                format!("{s} CREATE TABLE secret(id TEXT PRIMARY KEY);"),
                swap(
                    "[[object]]",
                    "secret = { visibility = \"central\", node_write = true }\n[[object]]",
                ),
                |k| matches!(k, Kind::NodeWriteOnCentral { table } if table == "secret"),
                "table \"secret\"",
            ),
            (
                "related object without a rule back",
                s.clone(),
                plus(
                    "[[object.related]]\nobject = \"quote\"\nsql = \"SELECT id FROM quote WHERE id = :primary_row_id\"\n",
                ),
                |k| matches!(k, Kind::RelatedWithoutRule { object, related } if object == "quote" && related == "quote"),
                "object \"quote\" related \"quote\"",
            ),
            (
                "a rule reads a member without vis_event",
                s.clone(),
                swap(
                    "table = \"opty_emp\"\n",
                    "table = \"opty_emp\"\nvis_event = false\n",
                ),
                |k| matches!(k, Kind::VisEventOff { table } if table == "opty_emp"),
                "object \"opportunity\" rule 1",
            ),
            (
                "primary table with a composite key",
                s.replace(
                    "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT)",
                    "CREATE TABLE opty(id TEXT, name TEXT, PRIMARY KEY (id, name))",
                ),
                MODEL.into(),
                |k| matches!(k, Kind::Key { table, .. } if table == "opty"),
                "object \"opportunity\"",
            ),
        ];
        for (name, schema, toml, expect, at) in cases {
            let found = findings(&schema, &toml);
            assert!(
                found
                    .iter()
                    .any(|f| expect(&f.kind) && f.at.to_string().contains(at)),
                "{name}: expected a finding at {at:?}; got:\n{}",
                found.iter().map(|f| format!("  {f}\n")).collect::<String>()
            );
        }
    }

    #[test]
    fn severities_and_messages_say_what_where_and_what_to_do() {
        let found = findings(
            &format!("{SCHEMA} CREATE TABLE note(id TEXT PRIMARY KEY);"),
            &MODEL.replacen(
                "table = \"opty_emp\"\n",
                "table = \"opty_emp\"\nvis_event = false\n",
                1,
            ),
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.starts_with("error: [tables]: table \"note\"")
                    && t.contains("add it under [tables]")),
            "{text:#?}"
        );
        assert!(
            text.iter().any(
                |t| t.starts_with("warning: object \"opportunity\" rule 1 (line 16)")
                    && t.contains("set vis_event = true")
            ),
            "{text:#?}"
        );
    }

    #[test]
    fn fk_paths_pass_only_through_member_tables_and_are_unioned() {
        let c = db("
            CREATE TABLE opty(id TEXT PRIMARY KEY);
            CREATE TABLE quote(id TEXT PRIMARY KEY, opty_id TEXT REFERENCES opty(id));
            CREATE TABLE item(id TEXT PRIMARY KEY, quote_id TEXT REFERENCES quote(id),
                              opty_id TEXT REFERENCES opty(id));");
        let base = r#"version = 1
[tables]
opty = { visibility = "limited" }
quote = { visibility = "limited" }
item = { visibility = "limited" }
[[object]]
name = "o"
primary_table = "opty"
[[object.rule]]
set_sql = "SELECT id, 'n' FROM opty"
[[object.member]]
table = "item"
"#;
        // quote is not a member: one path, and quote itself is in no object.
        let model = DockingModel::from_toml(base).unwrap();
        let (r, found) = resolve(&model, &c).unwrap();
        assert!(
            found
                .iter()
                .all(|f| matches!(f.kind, Kind::LimitedWithoutObject { .. })),
            "{found:?}"
        );
        assert_eq!(r.objects[0].members[1].paths.len(), 1);
        // quote is a member: two paths, ambiguous until declared.
        let with_quote = format!("{base}[[object.member]]\ntable = \"quote\"\n");
        let found = check_toml(&with_quote, &c).unwrap();
        assert!(
            matches!(
                &found[..],
                [Finding {
                    kind: Kind::AmbiguousPath { .. },
                    ..
                }]
            ),
            "{found:?}"
        );
        let declared = with_quote.replacen(
            "table = \"item\"\n",
            "table = \"item\"\npaths = [[\"item.opty_id -> opty.id\"], [\"item.quote_id -> quote.id\", \"quote.opty_id -> opty.id\"]]\n",
            1,
        );
        let model = DockingModel::from_toml(&declared).unwrap();
        let (r, found) = resolve(&model, &c).unwrap();
        assert!(found.is_empty(), "{found:?}");
        let item = &r.objects[0].members[1];
        c.execute_batch(
            "INSERT INTO opty VALUES ('O1'), ('O2');
             INSERT INTO quote VALUES ('Q1', 'O2');
             INSERT INTO item VALUES ('I1', 'Q1', 'O1'), ('I2', NULL, 'O1'), ('I3', 'Q1', NULL);",
        )
        .unwrap();
        let ids = |key: &str| -> Vec<String> {
            let sql = item.primary_id_sql("opty", "id");
            let mut st = c.prepare(&format!("{sql} ORDER BY 1")).unwrap();
            st.query_map([key], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(ids("I1"), vec!["O1", "O2"], "both paths are followed");
        assert_eq!(ids("I2"), vec!["O1"]);
        assert_eq!(ids("I3"), vec!["O2"]);
        let mut st = c
            .prepare(&format!(
                "{} ORDER BY 1, 2",
                item.primary_id_set_sql("opty", "id")
            ))
            .unwrap();
        let all: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want = [("I1", "O1"), ("I1", "O2"), ("I2", "O1"), ("I3", "O2")];
        assert_eq!(all, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    const SALES_SCHEMA: &str = include_str!("../../../samples/sales/schema.sql");
    const SALES_DATA: &str = include_str!("../../../samples/sales/data.sql");
    const SALES_MODEL: &str = include_str!("../../../samples/sales/docking.toml");

    #[test]
    fn the_sales_sample_passes_check_with_no_findings() {
        let c = db(SALES_SCHEMA);
        let found = check_toml(SALES_MODEL, &c).unwrap();
        assert!(
            found.is_empty(),
            "{}",
            found.iter().map(|f| format!("{f}\n")).collect::<String>()
        );
        let model = DockingModel::from_toml(SALES_MODEL).unwrap();
        let (r, _) = resolve(&model, &c).unwrap();
        let account = &r.objects[0];
        assert_eq!(
            account.rule_reads[0],
            BTreeSet::from(["acct_postn".to_string(), "emp_postn".to_string()]),
            "the account-position rule depends on emp_postn, which is no member"
        );
        let opportunity = &r.objects[1];
        assert_eq!(opportunity.members.len(), 4);
        assert_eq!(opportunity.members[3].paths.len(), 2);
    }

    /// Every rule and mapping of the sample gives the same answer in its pair form and its
    /// set form, on the sample data, for a node per employee.
    #[test]
    fn the_sales_sample_rules_agree_in_both_forms() {
        let c = db(&format!("{SALES_SCHEMA}{SALES_DATA}{NODE_RELATIONS_DDL}"));
        let emps: Vec<String> = c
            .prepare("SELECT id FROM employee ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for e in &emps {
            c.execute("INSERT INTO berth_node VALUES ('n-' || ?1)", [e])
                .unwrap();
            c.execute(
                "INSERT INTO berth_node_attr VALUES ('n-' || ?1, 'employee', ?1)",
                [e],
            )
            .unwrap();
        }
        let pairs = |sql: &str| -> BTreeSet<(String, String)> {
            let mut st = c.prepare(sql).unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let run = |sql: &str, id: &str, emp: &str| -> Vec<Option<String>> {
            let mut st = c.prepare(sql).unwrap();
            for (name, value) in [
                (PARAM_PRIMARY_ROW_ID, id.to_string()),
                (PARAM_NODE_ID, format!("n-{emp}")),
                (":attr_employee", emp.to_string()),
            ] {
                if let Some(i) = st.parameter_index(name).unwrap() {
                    st.raw_bind_parameter(i, value).unwrap();
                }
            }
            let mut rows = st.raw_query();
            let mut out = Vec::new();
            while let Some(r) = rows.next().unwrap() {
                out.push(r.get::<_, Option<String>>(0).ok().flatten());
            }
            out
        };
        let model = DockingModel::from_toml(SALES_MODEL).unwrap();
        let mut compared = 0;
        for o in &model.objects {
            let ids: Vec<String> = c
                .prepare(&format!("SELECT id FROM {}", ident(&o.primary_table)))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let maps = o.rules.iter().filter_map(|r| match r {
                Rule::Object { sql, .. } => Some(sql),
                Rule::Sql { .. } => None,
            });
            for sql in maps.chain(o.related.iter().map(|r| &r.sql)) {
                let (Some(pair), Some(set)) = (&sql.pair, &sql.set) else {
                    continue;
                };
                let by_pair: BTreeSet<(String, String)> = ids
                    .iter()
                    .flat_map(|id| {
                        run(pair, id, "-")
                            .into_iter()
                            .flatten()
                            .map(move |x| (id.clone(), x))
                    })
                    .collect();
                assert_eq!(by_pair, pairs(set), "object {} mapping {pair}", o.name);
                compared += 1;
            }
            for r in &o.rules {
                let Rule::Sql { sql, .. } = r else { continue };
                let (Some(pair), Some(set)) = (&sql.pair, &sql.set) else {
                    continue;
                };
                let mut by_pair = BTreeSet::new();
                for id in &ids {
                    for e in &emps {
                        if !run(pair, id, e).is_empty() {
                            by_pair.insert((id.clone(), format!("n-{e}")));
                        }
                    }
                }
                assert!(
                    !by_pair.is_empty(),
                    "object {}: rule matches nothing in the sample",
                    o.name
                );
                assert_eq!(by_pair, pairs(set), "object {} rule {pair}", o.name);
                compared += 1;
            }
        }
        assert_eq!(
            compared, 9,
            "3 SQL rules, 3 object rules, 3 related objects"
        );
    }

    /// An object with no rules of its own is visible when a visible object relates it.
    #[test]
    fn a_related_object_without_rules_is_not_never_visible() {
        let text = r#"
version = 1
[tables]
a = { visibility = "limited" }
b = { visibility = "limited" }
[[object]]
name = "a"
primary_table = "a"
[[object.rule]]
sql = "SELECT 1 FROM a WHERE id = :primary_row_id AND :node_id IS NOT NULL"
[[object.related]]
object = "b"
sql = "SELECT b_id FROM a WHERE id = :primary_row_id"
[[object]]
name = "b"
primary_table = "b"
"#;
        let model = DockingModel::from_toml(text).unwrap();
        let findings = model_findings(&model);
        assert!(
            !findings
                .iter()
                .any(|f| matches!(f.kind, Kind::NeverVisible { .. })),
            "{findings:?}"
        );
        assert!(
            findings
                .iter()
                .any(|f| matches!(f.kind, Kind::RelatedWithoutRule { .. }))
        );
    }

    /// The paths `check` suggests for an ambiguous member, composite keys included, are a
    /// model the checker then accepts, resolving to exactly those joins.
    #[test]
    fn suggested_composite_paths_are_accepted_as_written() {
        let schema = "
            CREATE TABLE grp(id TEXT PRIMARY KEY);
            CREATE TABLE part(grp_id TEXT REFERENCES grp(id), n INTEGER, PRIMARY KEY (grp_id, n));
            CREATE TABLE note(id INTEGER PRIMARY KEY, grp_id TEXT REFERENCES grp(id), n INTEGER,
                              FOREIGN KEY (grp_id, n) REFERENCES part(grp_id, n));";
        let model = |paths: &str| {
            format!(
                r#"version = 1
[tables]
grp = {{ visibility = "limited" }}
part = {{ visibility = "limited" }}
note = {{ visibility = "limited" }}
[[object]]
name = "group"
primary_table = "grp"
[[object.member]]
table = "part"
[[object.member]]
table = "note"
{paths}
[[object.rule]]
sql = "SELECT 'X' FROM grp WHERE id = :primary_row_id AND id = :node_id"
"#
            )
        };
        let found = findings(schema, &model(""));
        let suggested = found
            .iter()
            .find_map(|f| match &f.kind {
                Kind::AmbiguousPath { candidates, .. } => Some(toml_paths(candidates)),
                _ => None,
            })
            .expect("two paths from note to grp");
        assert!(
            suggested.contains("note.(grp_id, n) -> part.(grp_id, n)"),
            "{suggested}"
        );
        let text = model(&format!("paths = [{suggested}]"));
        let errors: Vec<String> = findings(schema, &text)
            .iter()
            .filter(|f| f.severity() == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let (resolved, _) = resolve(&DockingModel::from_toml(&text).unwrap(), &db(schema)).unwrap();
        let note = resolved.objects[0]
            .members
            .iter()
            .find(|m| m.table == "note")
            .unwrap();
        let composite = note
            .paths
            .iter()
            .find(|p| p.joins.len() == 2)
            .expect("the path through part");
        assert_eq!(composite.joins[0].from_columns, ["grp_id", "n"]);
        assert_eq!(composite.joins[0].to_columns, ["grp_id", "n"]);
    }
}
