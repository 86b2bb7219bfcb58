//! `berth schema ...` and `berth migration ...`: snapshots, diffs and migrations of the
//! replicated schema (engine module `evolve`).

use anyhow::{Context, Result};
use berth_engine::evolve::diff::{self, DiffOptions, Rename};
use berth_engine::evolve::history::{self, NewMigration};
use berth_engine::evolve::snapshot::{self, Snapshot};
use berth_engine::site::Site;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum SchemaCmd {
    /// Record the site's schema (tables, columns, keys, constraints, indexes, views,
    /// triggers) in its schema history and print its version and checksum.
    #[command(
        after_help = "Example:\n  berth schema snapshot --site hq\n  berth schema snapshot --site hq --json > v3.json"
    )]
    Snapshot {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// Accept a schema that changed without a migration as the new base.
        #[arg(long)]
        rebaseline: bool,
        /// Print JSON (the snapshot included).
        #[arg(long)]
        json: bool,
    },
    /// Print the migration SQL from one schema to another. Without --from/--to: from the last
    /// recorded snapshot to the site's live schema; with only --to: from the live schema.
    #[command(
        after_help = "Example:\n  berth schema diff --site hq\n  berth schema diff --site hq --to next-schema.sql --rename opty.rep=sales_rep\n  berth schema diff --site hq --from v3.json --to other.db --allow-destructive --json"
    )]
    Diff {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// The old schema: a snapshot JSON, a SQL file or a database.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The new schema: a SQL file, a database or a snapshot JSON.
        #[arg(long)]
        to: Option<PathBuf>,
        #[command(flatten)]
        opts: DiffArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Allow steps that destroy data (drop a table or column, narrow a type, NOT NULL
    /// without a default on a table with rows).
    #[arg(long)]
    allow_destructive: bool,
    /// A rename: OLD=NEW for a table, TABLE.OLD=NEW for a column (repeatable). Renames are
    /// never guessed.
    #[arg(long = "rename", value_parser = parse_rename)]
    renames: Vec<Rename>,
}

fn parse_rename(s: &str) -> Result<Rename, String> {
    s.parse()
        .map_err(|e: berth_engine::evolve::Error| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum MigrationCmd {
    /// Freeze the change since the last snapshot into the next versioned migration.
    #[command(
        after_help = "Example:\n  berth schema snapshot --site dev          # before changing the schema\n  sqlite3 dev/data.db 'ALTER TABLE opty ADD COLUMN stage TEXT'\n  berth migration create --site dev --name opty-stage --requires-software 2"
    )]
    Create {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// A short name for the migration.
        #[arg(long)]
        name: String,
        /// The software level a site needs to run it.
        #[arg(long = "requires-software", default_value = "1")]
        requires_software: String,
        #[command(flatten)]
        opts: DiffArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the site's migrations.
    #[command(after_help = "Example:\n  berth migration list --site hq --json")]
    List {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// Print JSON (the SQL included).
        #[arg(long)]
        json: bool,
    },
}

fn open(site: &Path) -> Result<Site> {
    Site::open(site).with_context(|| format!("opening site {}", site.display()))
}

fn options(args: &DiffArgs, site: &Site, from: &Snapshot) -> Result<DiffOptions> {
    let live = snapshot::read(&site.conn)?;
    let mut empty = std::collections::BTreeSet::new();
    for t in &from.tables {
        if live.table(&t.name).is_some() {
            let one = Snapshot {
                tables: vec![t.clone()],
                ..Snapshot::default()
            };
            if snapshot::nonempty_tables(&site.conn, &one)?.is_empty() {
                empty.insert(t.name.to_ascii_lowercase());
            }
        }
    }
    Ok(DiffOptions {
        allow_destructive: args.allow_destructive,
        renames: args.renames.clone(),
        empty_tables: empty,
    })
}

pub fn schema(cmd: SchemaCmd) -> Result<ExitCode> {
    match cmd {
        SchemaCmd::Snapshot {
            site,
            rebaseline,
            json,
        } => {
            let s = open(&site)?;
            let r = history::record(&s.conn, rebaseline)?;
            if json {
                crate::output::json(&r)?;
            } else {
                println!(
                    "schema version {} checksum {} ({})",
                    r.version,
                    r.checksum,
                    if r.new { "recorded" } else { "unchanged" }
                );
                println!(
                    "{} tables, {} indexes, {} views, {} triggers",
                    r.snapshot.tables.len(),
                    r.snapshot.indexes.len(),
                    r.snapshot.views.len(),
                    r.snapshot.triggers.len()
                );
            }
        }
        SchemaCmd::Diff {
            site,
            from,
            to,
            opts,
            json,
        } => {
            let s = open(&site)?;
            let live = || snapshot::read(&s.conn);
            let old = match (&from, &to) {
                (Some(f), _) => snapshot::from_file(f)?,
                (None, Some(_)) => live()?,
                (None, None) => {
                    history::latest(&s.conn)?
                        .ok_or(berth_engine::evolve::Error::NoBaseline)?
                        .snapshot
                }
            };
            let new = match &to {
                Some(t) => snapshot::from_file(t)?,
                None => live()?,
            };
            let plan = diff::diff(&old, &new, &options(&opts, &s, &old)?)?;
            if json {
                crate::output::json(&serde_json::json!({
                    "checksum_before": plan.checksum_before,
                    "checksum_after": plan.checksum_after,
                    "foreign_keys_off": plan.foreign_keys_off,
                    "steps": plan.steps,
                    "script": plan.script(),
                }))?;
            } else {
                print!("{}", plan.script());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn migration(cmd: MigrationCmd) -> Result<ExitCode> {
    match cmd {
        MigrationCmd::Create {
            site,
            name,
            requires_software,
            opts,
            json,
        } => {
            let s = open(&site)?;
            let base = history::latest(&s.conn)?.ok_or(berth_engine::evolve::Error::NoBaseline)?;
            let diff = options(&opts, &s, &base.snapshot)?;
            let m = history::create_migration(
                &s.conn,
                &NewMigration {
                    name: &name,
                    software_level: &requires_software,
                    origin: s.name(),
                    diff,
                },
            )?;
            if json {
                crate::output::json(&m)?;
            } else {
                println!(
                    "migration {} {:?}: schema {} -> {} (needs software level {})",
                    m.version, m.name, m.checksum_before, m.checksum_after, m.software_level
                );
                print!("{}", m.sql);
            }
        }
        MigrationCmd::List { site, json } => {
            let s = open(&site)?;
            let list = history::migrations(&s.conn)?;
            if json {
                crate::output::json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no migrations (schema version {})",
                    history::version(&s.conn)?
                );
            } else {
                for m in &list {
                    println!(
                        "{:>4}  {:<24} {} -> {}  software {}  from {}",
                        m.version,
                        m.name,
                        &m.checksum_before[..12.min(m.checksum_before.len())],
                        &m.checksum_after[..12.min(m.checksum_after.len())],
                        m.software_level,
                        m.origin
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
