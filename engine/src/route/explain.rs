//! `berth explain`: is this row visible to that node, and why.
//!
//! Uses the reference oracle for the answer, and the seed's GeneratePrimaryIdSQL
//! ([`super::check::ResolvedMember::primary_id_sql`]) to name the docking-object instances
//! the row belongs to, each with whether the node sees it.

use super::check::{self, Severity};
use super::model::{DockingModel, Visibility};
use super::oracle::{self, Node, Reason};
use crate::value::{Bind, from_sql};
use rusqlite::{Connection, params_from_iter};
use serde::Serialize;
use serde_json::Value as Json;

/// A docking-object instance a row belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// The docking object.
    pub object: String,
    /// The instance's primary row id (key text; a JSON array in `--json`).
    #[serde(serialize_with = "crate::value::serialize_key_text")]
    pub id: String,
    /// Whether the node sees this instance.
    pub visible: bool,
    /// Why it does (the rule chain, from this instance to the SQL rule it rests on); empty
    /// when it does not.
    pub chain: Vec<String>,
}

/// The answer of `explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// Whether the node should hold the row.
    pub visible: bool,
    /// The table's visibility.
    pub visibility: String,
    /// The instances the row belongs to (limited tables).
    pub instances: Vec<Instance>,
    /// One sentence a person can read.
    pub reason: String,
}

/// Why `explain` gave no answer.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Reading central failed.
    #[error("reading central: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The oracle refused the model.
    #[error(transparent)]
    Oracle(#[from] oracle::OracleError),
    /// The table is not in the docking model.
    #[error("table {0:?} is not declared in the docking model")]
    UnknownTable(String),
}

/// Explains whether the row of `table` with key `key` is visible to `node`.
pub fn explain(
    central: &Connection,
    model: &DockingModel,
    node: &Node,
    table: &str,
    key: &[Json],
) -> Result<Explanation, ExplainError> {
    let spec = model
        .table(table)
        .ok_or_else(|| ExplainError::UnknownTable(table.to_string()))?;
    let key_text = oracle::key_text(key);
    let projection = oracle::project(central, model, node)?;
    let visible = projection
        .rows
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(table))
        .is_some_and(|(_, rows)| rows.contains_key(&key_text));
    let mut instances = Vec::new();
    if spec.visibility == Visibility::Limited {
        let (resolved, findings) = check::resolve(model, central)?;
        if findings.iter().any(|f| f.severity() == Severity::Error) {
            return Err(oracle::OracleError::Model {
                findings: findings
                    .into_iter()
                    .filter(|f| f.severity() == Severity::Error)
                    .collect(),
            }
            .into());
        }
        for object in &resolved.objects {
            for member in object
                .members
                .iter()
                .filter(|m| m.table.eq_ignore_ascii_case(table))
            {
                let sql = member.primary_id_sql(&object.primary_table, &object.primary_key);
                let mut st = central.prepare(&sql)?;
                let ids: Vec<Json> = st
                    .query_map(params_from_iter(key.iter().map(Bind)), |r| {
                        Ok(from_sql(r.get_ref(0)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                for id in ids {
                    let id = oracle::key_text(std::slice::from_ref(&id));
                    let seen = projection
                        .instances
                        .get(&object.name)
                        .is_some_and(|s| s.contains(&id));
                    let chain = if seen {
                        rule_chain(&projection, &object.name, &id, &node.name)
                    } else {
                        Vec::new()
                    };
                    instances.push(Instance {
                        object: object.name.clone(),
                        id,
                        visible: seen,
                        chain,
                    });
                }
            }
        }
        instances.sort_by(|a, b| (&a.object, &a.id).cmp(&(&b.object, &b.id)));
        instances.dedup();
    }
    let who = &node.name;
    let reason = match spec.visibility {
        Visibility::Enterprise => {
            format!("table {table} is enterprise: every node holds all its rows")
        }
        Visibility::Central => format!("table {table} is central: its rows never leave central"),
        Visibility::Local => {
            format!("table {table} is local: each site keeps its own rows, none are sent")
        }
        Visibility::Limited if instances.is_empty() => {
            format!("{table} {key_text} belongs to no docking-object instance, so no node holds it")
        }
        Visibility::Limited => {
            let list = |v: bool| {
                instances
                    .iter()
                    .filter(|i| i.visible == v)
                    .map(|i| format!("{} {}", i.object, i.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if visible {
                let why = instances
                    .iter()
                    .find(|i| i.visible)
                    .map(|i| i.chain.join("; "))
                    .unwrap_or_default();
                format!(
                    "{table} {key_text} is a member of {}, which {who} sees: {why}",
                    list(true)
                )
            } else {
                format!(
                    "{table} {key_text} is a member of {}, none of which {who} sees",
                    list(false)
                )
            }
        }
    };
    Ok(Explanation {
        visible,
        visibility: spec.visibility.to_string(),
        instances,
        reason,
    })
}

/// The rule chain that makes instance `id` of `object` visible: each step names the
/// instance and why, ending at the SQL rule the chain rests on.
fn rule_chain(projection: &oracle::Projection, object: &str, id: &str, node: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = (object.to_string(), id.to_string());
    let mut seen = std::collections::BTreeSet::new();
    while seen.insert(at.clone()) {
        match projection.reasons.get(&at) {
            Some(Reason::Rule { rule }) => {
                out.push(format!(
                    "{} {} is visible by rule {rule} of {} (an SQL rule matching {node})",
                    at.0, at.1, at.0
                ));
                break;
            }
            Some(Reason::Via { how, object, id }) => {
                out.push(format!(
                    "{} {} is visible with {object} {id} ({how})",
                    at.0, at.1
                ));
                at = (object.clone(), id.clone());
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Connection, DockingModel) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sales");
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(&std::fs::read_to_string(dir.join("schema.sql")).unwrap())
            .unwrap();
        c.execute_batch(&std::fs::read_to_string(dir.join("data.sql")).unwrap())
            .unwrap();
        let m =
            DockingModel::from_toml(&std::fs::read_to_string(dir.join("docking.toml")).unwrap())
                .unwrap();
        (c, m)
    }

    #[test]
    fn explains_limited_enterprise_and_central_rows() {
        let (c, m) = sample();
        let keith = Node::new("keith").attr("employee", "E1");
        let carl = Node::new("carl").attr("employee", "E2");
        let o1 = [Json::from("O1")];
        let e = explain(&c, &m, &keith, "opty", &o1).unwrap();
        assert!(e.visible, "{e:?}");
        assert!(
            e.instances
                .iter()
                .any(|i| i.object == "opportunity" && i.id == r#"["O1"]"# && i.visible)
        );
        let chain = &e.instances.iter().find(|i| i.visible).unwrap().chain;
        assert_eq!(chain.len(), 1, "{chain:?}");
        assert!(chain[0].contains("rule 1 of opportunity"), "{chain:?}");
        // A quote item of Q4 (owned by E4): visible through its quote, which rests on O4's
        // S_OPTY_EMP rule (the quote object rule): a chain of two steps.
        let e = explain(&c, &m, &keith, "quote_item", &[Json::from("QI6")]).unwrap();
        assert!(e.visible, "{e:?}");
        let chain = &e.instances[0].chain;
        assert!(chain.len() >= 2, "{chain:?}");
        assert!(
            chain.last().unwrap().contains("SQL rule matching keith"),
            "{chain:?}"
        );
        assert!(
            e.reason.contains("is visible with opportunity"),
            "{}",
            e.reason
        );
        let e = explain(&c, &m, &carl, "opty", &o1).unwrap();
        assert!(!e.visible);
        assert!(e.reason.contains("none of which carl sees"), "{}", e.reason);
        let e = explain(&c, &m, &carl, "product", &[Json::from("P1")]).unwrap();
        assert!(e.visible && e.reason.contains("enterprise"));
        let e = explain(&c, &m, &keith, "commission", &[Json::from("E1")]).unwrap();
        assert!(!e.visible && e.reason.contains("central"));
        assert!(matches!(
            explain(&c, &m, &keith, "nosuch", &o1),
            Err(ExplainError::UnknownTable(_))
        ));
    }
}
