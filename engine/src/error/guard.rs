//! What the capture guard found ([`crate::guard`]): the report a stopped site carries in
//! [`crate::EngineError::CaptureStopped`].

use crate::error::{EngineError, Result};
use serde::Serialize;

/// What is wrong with one replicated table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Problem {
    /// The table is gone (dropped, or renamed to a name berth does not replicate).
    TableMissing,
    /// Capture triggers are missing (a rebuilt table loses them): writes to the table are
    /// not journaled.
    TriggersMissing {
        /// The missing triggers.
        triggers: Vec<String>,
    },
    /// Capture triggers are not the text berth installs for the table as recorded.
    TriggersChanged {
        /// The differing triggers.
        triggers: Vec<String>,
    },
    /// The table's columns or key are not the ones recorded in `berth_tables`.
    ColumnsChanged {
        /// Recorded columns (key columns marked `*`).
        recorded: Vec<String>,
        /// Live columns (key columns marked `*`).
        live: Vec<String>,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::TableMissing => write!(f, "the table is gone (dropped or renamed)"),
            Problem::TriggersMissing { triggers } => write!(
                f,
                "capture triggers missing ({}): writes to it are not recorded",
                triggers.join(", ")
            ),
            Problem::TriggersChanged { triggers } => write!(
                f,
                "capture triggers changed ({}): they are not what berth installs",
                triggers.join(", ")
            ),
            Problem::ColumnsChanged { recorded, live } => write!(
                f,
                "columns changed: recorded ({}), now ({})",
                recorded.join(", "),
                live.join(", ")
            ),
        }
    }
}

/// One replicated table and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFinding {
    /// The table (as recorded).
    pub table: String,
    /// What is wrong.
    pub problems: Vec<Problem>,
}

/// The replicated schema's checksum is not the recorded one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaChange {
    /// The recorded checksum (`berth_meta.schema_checksum`).
    pub recorded: String,
    /// The live checksum of the replicated tables.
    pub live: String,
    /// What differs, one line each (`object: what`), from the diff of the recorded
    /// snapshot and the live one.
    pub changes: Vec<String>,
}

/// What the guard found at a site.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Guard {
    /// Replicated tables whose capture is not as berth installed it.
    pub tables: Vec<TableFinding>,
    /// The replicated schema changed outside a migration.
    pub schema: Option<SchemaChange>,
    /// User tables that are not replicated (made outside berth); a warning, not a stop.
    pub unreplicated: Vec<String>,
    /// What to do, when something stops the site.
    pub remedy: Option<String>,
    /// What to do about the unreplicated tables.
    pub unreplicated_hint: Option<String>,
}

impl Guard {
    /// True when capture is as berth installed it and the schema is the recorded one.
    pub fn is_sound(&self) -> bool {
        self.tables.is_empty() && self.schema.is_none()
    }

    /// The replicated tables with a finding.
    pub fn named_tables(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.table.clone()).collect()
    }

    /// The error that stops a dock, or `Ok` when sound.
    pub fn require_sound(self, site: &str) -> Result<()> {
        if self.is_sound() {
            Ok(())
        } else {
            Err(EngineError::CaptureStopped {
                site: site.to_string(),
                guard: Box::new(self),
            })
        }
    }
}

impl std::fmt::Display for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for t in &self.tables {
            for p in &t.problems {
                writeln!(f, "  - table {}: {p}", t.table)?;
            }
        }
        if let Some(s) = &self.schema {
            writeln!(
                f,
                "  - the replicated schema changed outside a migration (checksum {} recorded, {} now){}",
                short(&s.recorded),
                short(&s.live),
                if s.changes.is_empty() { "" } else { ":" }
            )?;
            for c in &s.changes {
                writeln!(f, "      {c}")?;
            }
        }
        if let Some(r) = &self.remedy {
            write!(f, "what to do: {r}")?;
        }
        Ok(())
    }
}

fn short(checksum: &str) -> &str {
    &checksum[..12.min(checksum.len())]
}
