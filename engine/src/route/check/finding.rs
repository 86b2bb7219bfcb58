//! What `berth docking check` reports: a [`Finding`] is a [`Kind`] of problem at a place in
//! the model, with its [`Severity`].

use super::*;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Legal, but probably not what was meant.
    Warning,
    /// The model cannot be used with this schema.
    Error,
}

/// One problem found, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The item of the model it concerns.
    pub at: Location,
    /// What is wrong, and what to do.
    pub kind: Kind,
}

impl Finding {
    /// Whether it stops the model from being used.
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {}: {}", self.at, self.kind)
    }
}

/// Which SQL of a rule or related object a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `sql` of an SQL rule: one instance and one node at a time.
    RulePair,
    /// `set_sql` of an SQL rule: `(primary_row_id, node_id)` pairs.
    RuleSet,
    /// `sql` of an object rule or related object: this instance's id to the other's ids.
    MapPair,
    /// `set_sql` of an object rule or related object: `(primary_row_id, other_id)` pairs.
    MapSet,
    /// The primary id SQL generated from a member's paths.
    PrimaryId,
}

impl Form {
    fn field(self) -> &'static str {
        match self {
            Form::RulePair | Form::MapPair => "sql",
            Form::RuleSet | Form::MapSet => "set_sql",
            Form::PrimaryId => "generated primary id SQL",
        }
    }
    pub(super) fn columns(self) -> Option<usize> {
        match self {
            Form::RulePair => None,
            Form::MapPair | Form::PrimaryId => Some(1),
            Form::RuleSet | Form::MapSet => Some(2),
        }
    }
    fn contract(self) -> &'static str {
        match self {
            Form::RulePair => "any columns; a row means visible",
            Form::RuleSet => "(primary_row_id, node_id)",
            Form::MapPair => "the other object's primary row id",
            Form::MapSet => "(primary_row_id, other_primary_row_id)",
            Form::PrimaryId => "the primary row id",
        }
    }
    fn allowed(self) -> &'static str {
        match self {
            Form::RulePair => ":primary_row_id, :node_id and :attr_NAME",
            Form::MapPair => ":primary_row_id",
            Form::RuleSet | Form::MapSet | Form::PrimaryId => {
                "none (read node identity from berth_node / berth_node_attr)"
            }
        }
    }
}

/// What a finding says. Each message says what is wrong and what to do.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Kind {
    /// The model file itself cannot be read.
    #[error("{0}")]
    Model(ModelError),
    /// A table of the schema is not declared under `[tables]`.
    #[error(
        "table {table:?} of the schema is not declared; add it under [tables] with its visibility (enterprise, limited, central or local)"
    )]
    UndeclaredTable {
        /// The table.
        table: String,
    },
    /// A declared table does not exist in the schema.
    #[error("table {table:?} does not exist in the schema; fix the name or remove the declaration")]
    UnknownTable {
        /// The table.
        table: String,
    },
    /// A `local` table that does not exist yet: a later migration may create it.
    #[error(
        "table {table:?} is declared local but does not exist in the schema yet; it will be local once a migration creates it"
    )]
    LocalNotYet {
        /// The table.
        table: String,
    },
    /// A replicated table without a PRIMARY KEY and without a named key.
    #[error("table {table:?} {}", crate::schema::no_key_reason())]
    NoPrimaryKey {
        /// The table.
        table: String,
    },
    /// `key = [..]` that cannot identify the rows.
    #[error("table {table:?}: {reason}")]
    BadNamedKey {
        /// The table.
        table: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A declared join names a column the table does not have.
    #[error("join {join}: table {table:?} has no column {column:?}")]
    UnknownColumn {
        /// The join as written.
        join: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// A table's key cannot identify instances or rows.
    #[error("table {table:?} {reason}")]
    Key {
        /// The table.
        table: String,
        /// What is wrong with its key.
        reason: &'static str,
    },
    /// A member has no foreign-key path to the primary table and declares none.
    #[error(
        "no foreign-key path leads from {member:?} to {primary:?} through member tables; declare one, e.g. paths = [[\"{member}.COLUMN -> {primary}.KEY\"]]"
    )]
    NoPath {
        /// The member table.
        member: String,
        /// The primary table.
        primary: String,
    },
    /// A member reaches the primary table by several foreign-key paths.
    #[error(
        "{} foreign-key paths lead from {member:?} to the primary table: {}; declare the one(s) to follow, e.g. paths = [{}]",
        .candidates.len(), display_paths(.candidates), toml_paths(.candidates)
    )]
    AmbiguousPath {
        /// The member table.
        member: String,
        /// Every path found.
        candidates: Vec<Path>,
    },
    /// A member of a docking object is not a `limited` table.
    #[error(
        "{table:?} is {visibility} but is a member of this object; only limited tables are members: make it limited, or remove the member"
    )]
    MemberNotLimited {
        /// The table.
        table: String,
        /// Its declared visibility.
        visibility: Visibility,
    },
    /// A `limited` table belongs to no docking object, so no node would ever get a row.
    #[error(
        "{table:?} is limited but no docking object has it as a member, so no node would ever get its rows; add it to an object or make it enterprise or central"
    )]
    LimitedWithoutObject {
        /// The table.
        table: String,
    },
    /// `node_write = true` on a table nodes never hold.
    #[error(
        "{table:?} is central, so nodes never hold it; node_write = true has no effect: remove it"
    )]
    NodeWriteOnCentral {
        /// The table.
        table: String,
    },
    /// No chain of rules can ever make an instance of the object visible.
    #[error(
        "no instance can ever be visible: {reason}; give this object (or one its object rules lead to) an SQL rule"
    )]
    NeverVisible {
        /// Why.
        reason: String,
    },
    /// A related object has no object rule back to this object.
    #[error(
        "related object {related:?} travels and leaves with {object:?}, but has no object rule naming {object:?}: a node that sees {related:?} by its own rules does not get {object:?} with it; add to {related:?} a rule with object = {object:?} if it should"
    )]
    RelatedWithoutRule {
        /// This object.
        object: String,
        /// The related object.
        related: String,
    },
    /// SQL that SQLite will not compile against the schema.
    #[error("{} does not compile: {error}", .form.field())]
    Sql {
        /// Which SQL.
        form: Form,
        /// SQLite's message.
        error: String,
    },
    /// SQL that returns the wrong number of columns.
    #[error("{} returns {found} column(s); it must return {expected}: {}", .form.field(), .form.contract())]
    Columns {
        /// Which SQL.
        form: Form,
        /// How many it must return.
        expected: usize,
        /// How many it returns.
        found: usize,
    },
    /// SQL with a parameter the router will not bind.
    #[error("{} uses parameter {name}, which the router does not bind here; parameters allowed: {}", .form.field(), .form.allowed())]
    Parameter {
        /// Which SQL.
        form: Form,
        /// The parameter.
        name: String,
    },
    /// `:attr_NAME` for an attribute not listed under `[nodes] attributes`.
    #[error(
        "{} uses {PARAM_ATTR_PREFIX}{attribute} but {attribute:?} is not listed in [nodes] attributes; add it there (nodes get it at `node add --attr {attribute}=VALUE`)",
        .form.field()
    )]
    UndeclaredAttribute {
        /// Which SQL.
        form: Form,
        /// The attribute.
        attribute: String,
    },
    /// SQL that writes.
    #[error("{} is not a read-only query; rules and mappings must only SELECT", .form.field())]
    NotReadOnly {
        /// Which SQL.
        form: Form,
    },
    /// SQL that does what rules may not (SPEC 2.8: the allow-list), seen by SQLite's
    /// authorizer while preparing it.
    #[error(
        "{} uses {what}, which rules and mappings may not: they must be one read-only SELECT (reading tables and views, calling functions); ATTACH, DETACH, PRAGMA, transaction statements and writes are refused",
        .form.field()
    )]
    NotAllowed {
        /// Which SQL.
        form: Form,
        /// What it does (`ATTACH "x.db"`, `PRAGMA foreign_keys`, `INSERT INTO t`).
        what: String,
    },
    /// An SQL rule reads a table nodes may write that is on none of the object's member
    /// paths: a node's write there could change who sees any instance, so central refuses
    /// every node write to it (SPEC 2.10, "Links").
    #[error(
        "this rule reads {table:?}, which nodes may write (node_write = true) but which is not a member of the object: a node's write there could make any instance visible, so central refuses every node write to it; set node_write = false, or make it a member so each write is checked against the instance it belongs to"
    )]
    NodeWritesRuleInput {
        /// The table.
        table: String,
    },
    /// A rule reads a member table whose changes are declared not to change visibility.
    #[error(
        "this rule reads {table:?}, a member of the object with vis_event = false, so changes there would not re-evaluate visibility; set vis_event = true on that member"
    )]
    VisEventOff {
        /// The member table.
        table: String,
    },
}

pub(super) fn display_paths(p: &[Path]) -> String {
    p.iter()
        .map(Path::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

pub(super) fn toml_paths(p: &[Path]) -> String {
    p.iter()
        .map(|p| {
            let joins: Vec<String> = p
                .joins
                .iter()
                .map(|j| format!("{:?}", j.to_string()))
                .collect();
            format!("[{}]", joins.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Kind {
    /// Whether it stops the model from being used.
    pub fn severity(&self) -> Severity {
        match self {
            Kind::NodeWriteOnCentral { .. }
            | Kind::LocalNotYet { .. }
            | Kind::RelatedWithoutRule { .. }
            | Kind::VisEventOff { .. }
            | Kind::NodeWritesRuleInput { .. } => Severity::Warning,
            _ => Severity::Error,
        }
    }
}
