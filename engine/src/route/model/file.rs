//! The serde shape of the TOML file, before validation.

use super::Visibility;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Format version; must be 1.
    pub version: u32,
    /// Node identity.
    #[serde(default)]
    pub nodes: Nodes,
    /// Per-table visibility, keyed by table name.
    #[serde(default)]
    pub tables: BTreeMap<String, Spanned<Table>>,
    /// `[[object]]` entries.
    #[serde(default)]
    pub object: Vec<Spanned<Object>>,
}

/// `[nodes]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nodes {
    /// Attribute names rules may use as `:attr_NAME`.
    #[serde(default)]
    pub attributes: Vec<String>,
}

/// `[tables] NAME = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Who gets the rows.
    pub visibility: Visibility,
    /// Whether nodes may write (default false).
    #[serde(default)]
    pub node_write: bool,
    /// The row key of a table without a PRIMARY KEY.
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// `[[object]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    /// Object name.
    pub name: String,
    /// Primary table.
    pub primary_table: String,
    /// `[[object.member]]`.
    #[serde(default)]
    pub member: Vec<Spanned<Member>>,
    /// `[[object.rule]]`, in sequence.
    #[serde(default)]
    pub rule: Vec<Spanned<Rule>>,
    /// `[[object.related]]`.
    #[serde(default)]
    pub related: Vec<Spanned<Related>>,
}

/// `[[object.member]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Member table.
    pub table: String,
    /// VIS_EVENT_FLG (default true: always re-evaluate, the safe choice).
    #[serde(default = "yes")]
    pub vis_event: bool,
    /// Declared paths, each a list of `"table.column -> table.column"` joins. Absent:
    /// follow foreign keys.
    pub paths: Option<Vec<Vec<String>>>,
    /// Nodes may link rows of this table to instances they do not hold (default false).
    #[serde(default)]
    pub node_link: bool,
}

fn yes() -> bool {
    true
}

/// `[[object.rule]]`: an object rule when `object` is given, else an SQL rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// CHECK_DOBJ_ID of an object rule.
    pub object: Option<String>,
    /// Pair form.
    pub sql: Option<String>,
    /// Set form.
    pub set_sql: Option<String>,
    /// Nodes' writes may create this mapping to instances they do not hold (object
    /// rules only; default false).
    #[serde(default)]
    pub node_link: bool,
}

/// `[[object.related]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Related {
    /// The related object.
    pub object: String,
    /// Pair form of the mapping.
    pub sql: Option<String>,
    /// Set form of the mapping.
    pub set_sql: Option<String>,
    /// Nodes' writes may create this mapping to instances they do not hold (default
    /// false).
    #[serde(default)]
    pub node_link: bool,
}
