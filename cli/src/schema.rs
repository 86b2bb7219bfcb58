//! `berth schema ...` and `berth migration ...`: snapshots, diffs and migrations of the
//! replicated schema (engine module `evolve`).

use anyhow::{Context, Result};
use berth_engine::evolve::diff::{self, DiffOptions, Rename};
use berth_engine::evolve::fill::Fill;
use berth_engine::evolve::history::{self, NewMigration};
use berth_engine::evolve::snapshot::{self, Snapshot};
use berth_engine::migrate;
use berth_engine::site::{Role, Site};
use berth_engine::store;
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
    ///
    /// The printed plan is for a plain copy of the schema (a database without berth's capture
    /// triggers), e.g. to review it or to migrate an application's own copy. Do not run it
    /// on a site's data.db: it knows nothing of capture (SQLite refuses to drop a column the
    /// capture triggers name, and a rebuilt table loses its triggers). To change a site's
    /// schema, run `berth migration create --site SITE --name NAME --to FILE` with the same
    /// options: it runs this plan with capture suspended, regenerates capture, records the
    /// migration and, at a central, sends it to the nodes.
    #[command(
        after_help = "Example:\n  berth schema diff --site hq\n  berth schema diff --site hq --to next-schema.sql --rename opty.rep=sales_rep\n  berth schema diff --site hq --from v3.json --to other.db --allow-destructive --json\n  berth schema diff --site hq --to next-schema.sql --fill opty.stage=\"'open'\"\n\nTo apply it to the site:\n  berth migration create --site hq --name next --to next-schema.sql"
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
    /// What the existing rows get in a new column (or in the NULLs of a column that becomes
    /// NOT NULL): TABLE.COLUMN=SQL-EXPR, an expression over the row's old columns, evaluated
    /// per row when the table is copied (repeatable). Without it a new NOT NULL column
    /// without a default gets its type's zero ('', 0, X''), which --allow-destructive must
    /// accept and which is refused when the column is a key, UNIQUE, or has a CHECK the zero
    /// fails. The expression must be deterministic: the migration runs at every site.
    #[arg(long = "fill", value_parser = parse_fill, value_name = "TABLE.COLUMN=SQL-EXPR")]
    fills: Vec<Fill>,
}

fn parse_fill(s: &str) -> Result<Fill, String> {
    s.parse()
        .map_err(|e: berth_engine::evolve::Error| e.to_string())
}

fn parse_rename(s: &str) -> Result<Rename, String> {
    s.parse()
        .map_err(|e: berth_engine::evolve::Error| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum MigrationCmd {
    /// Freeze the change since the last snapshot into the next versioned migration.
    #[command(
        after_help = "Example:\n  berth schema snapshot --site dev          # before changing the schema\n  sqlite3 dev/data.db 'ALTER TABLE opty ADD COLUMN probability INTEGER'\n  berth migration create --site dev --name opty-probability --requires-software 2\n  berth migration create --site dev --name opty-close-date --sql samples/sales/migration/0001_opty_close_date.sql\n  berth migration create --site hq --name account-code --to next-schema.sql --fill \"account.code='A-' || id\""
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
        /// The schema to migrate to (SQL file, database or snapshot JSON): the migration is
        /// computed from the live schema and applied. Required at central, whose schema only
        /// changes this way (or by `migration accept` / `migration import`).
        #[arg(long, conflicts_with = "sql")]
        to: Option<PathBuf>,
        /// On a developer's copy: run the statements of this SQL file (capture suspended, so
        /// a column the capture triggers name can be dropped), then freeze the change.
        #[arg(long)]
        sql: Option<PathBuf>,
        /// An executable step: this program file ships with the migration and runs against
        /// the database after its SQL, where sites allow executables (admin-signed at submit).
        #[arg(long, requires = "exec_command")]
        exec_file: Option<PathBuf>,
        /// The executable step's command, words separated by spaces (e.g. "sh fix.sh"); its
        /// first word may name the program file.
        #[arg(long, requires = "exec_file")]
        exec_command: Option<String>,
        #[command(flatten)]
        opts: DiffArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write one of this site's migrations (a developer's copy) as a signed bundle for
    /// central's administrator, who takes it with `berth migration accept`.
    #[command(after_help = "Example:
  berth migration submit --site dev --to hq --out /mnt/share
  berth migration accept --site hq /mnt/share/dev_to_hq_migration_0003.zip")]
    Submit {
        /// The site folder (the developer's copy).
        #[arg(long)]
        site: PathBuf,
        /// Central's name (default: this site's central, when it is a node).
        #[arg(long)]
        to: Option<String>,
        /// Which migration (default: the latest).
        #[arg(long)]
        version: Option<i64>,
        /// Folder to write the bundle into.
        #[arg(long)]
        out: PathBuf,
        /// Sign with this admin key (.key file) instead of the site's key; required for a
        /// migration with an executable step.
        #[arg(long)]
        admin_key: Option<PathBuf>,
    },
    /// At central: verify a submitted migration, apply it to the master database and send
    /// it to every node with their next bundles.
    #[command(
        after_help = "Example:\n  berth migration accept --site hq /mnt/share/dev_to_hq_migration_0003.zip"
    )]
    Accept {
        /// Central's site folder.
        #[arg(long)]
        site: PathBuf,
        /// The submitted bundle.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the migration history as plain files for version control: one SQL file per
    /// migration and a checksummed index (migrations.toml).
    #[command(after_help = "Example:
  berth migration export --site hq --dir app/db/migrations")]
    Export {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// The folder to write (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Take new migrations from an exported history (a checkout); refused when its
    /// checksums or order disagree with the site's history.
    #[command(after_help = "Example:
  berth migration import --site hq --dir app/db/migrations")]
    Import {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// The folder holding migrations.toml.
        #[arg(long)]
        dir: PathBuf,
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

#[derive(Subcommand, Debug)]
pub enum CaptureCmd {
    /// Check that every replicated table has its capture triggers as berth installed them
    /// and that the schema is the recorded one (what every dock checks first); exit 1 if not.
    #[command(after_help = "Example:\n  berth capture check --site laptop --json")]
    Check {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reinstall the capture triggers once the tables are as recorded again (after a tool
    /// rebuilt a table or dropped a trigger). Writes made while they were missing were not
    /// recorded.
    #[command(after_help = "Example:\n  berth capture restore --site laptop")]
    Restore {
        /// The site folder.
        #[arg(long)]
        site: PathBuf,
    },
}

pub fn capture(cmd: CaptureCmd) -> Result<ExitCode> {
    match cmd {
        CaptureCmd::Check { site, json } => {
            let s = open(&site)?;
            let g = berth_engine::guard::check(&s)?;
            if json {
                crate::output::json(&g)?;
            } else if g.is_sound() {
                println!("capture ok");
            } else {
                println!(
                    "capture STOPPED: docks apply and export nothing until this is repaired\n{g}"
                );
            }
            if !json {
                for t in &g.unreplicated {
                    println!(
                        "table {t}: {}",
                        g.unreplicated_hint.as_deref().unwrap_or("not replicated")
                    );
                }
            }
            if !g.is_sound() {
                return Ok(ExitCode::FAILURE);
            }
        }
        CaptureCmd::Restore { site } => {
            let s = open(&site)?;
            let r = berth_engine::guard::restore(&s)?;
            if r.tables.is_empty() {
                println!("capture was already as berth installed it; nothing changed");
            } else {
                println!(
                    "capture triggers reinstalled for {}; writes made to them while the triggers \
                     were missing were not recorded and will not reach the other sites: check \
                     those rows",
                    r.tables.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `schema diff` says with every plan it prints (issue 18 part 4): the plan knows
/// nothing of capture, so it is for a plain copy, and the command that applies it to a site.
const PLAIN_COPY_NOTE: &str =
    "This plan is for a plain copy of the schema (a database without berth's capture
triggers). Do not run it on a site's data.db: to change a site's schema, run
  berth migration create --site SITE --name NAME --to FILE
with the same options (it suspends capture, runs the plan, regenerates capture,
records the migration and, at a central, sends it to the nodes).";

fn has_nodes(s: &Site) -> Result<bool> {
    Ok(berth_engine::peer::all(&s.conn)?
        .iter()
        .any(|p| p.role == "node"))
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
        fills: args.fills.clone(),
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
                    "note": PLAIN_COPY_NOTE,
                }))?;
            } else {
                for line in PLAIN_COPY_NOTE.lines() {
                    println!("-- {line}");
                }
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
            to,
            sql,
            exec_file,
            exec_command,
            opts,
            json,
        } => {
            let s = open(&site)?;
            let step = match (&exec_file, &exec_command) {
                (Some(file), Some(command)) => {
                    let bytes = std::fs::read(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Some(history::ExecStep::new(
                        command.split_whitespace().map(str::to_string).collect(),
                        &name,
                        &bytes,
                    )?)
                }
                _ => None,
            };
            let m = match &to {
                Some(to) => {
                    let target = snapshot::from_file(to)?;
                    let live = snapshot::read(&s.conn)?;
                    let diff = options(&opts, &s, &live)?;
                    migrate::create_from_target(
                        &s,
                        &target,
                        &NewMigration {
                            name: &name,
                            software_level: &requires_software,
                            origin: s.name(),
                            diff,
                        },
                    )?
                }
                None if s.role() == Role::Central && has_nodes(&s)? => {
                    anyhow::bail!(
                        "this central has nodes, so its schema changes only through berth \
                         (every change captured before a migration must reach the nodes \
                         first): give the schema to reach with --to FILE, or create the \
                         migration on a developer's copy and `berth migration submit` it"
                    )
                }
                None => {
                    let base =
                        history::latest(&s.conn)?.ok_or(berth_engine::evolve::Error::NoBaseline)?;
                    let diff = options(&opts, &s, &base.snapshot)?;
                    let new = NewMigration {
                        name: &name,
                        software_level: &requires_software,
                        origin: s.name(),
                        diff,
                    };
                    match &sql {
                        Some(file) => {
                            let text = std::fs::read_to_string(file)
                                .with_context(|| format!("reading {}", file.display()))?;
                            migrate::create_by_sql(&s, &text, &new)?
                        }
                        None => history::create_migration(&s.conn, &new)?,
                    }
                }
            };
            let m = match step {
                Some(step) => {
                    history::attach_exec(&s.conn, m.version, &step)?;
                    history::Migration {
                        exec: Some(step),
                        ..m
                    }
                }
                None => m,
            };
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
        MigrationCmd::Submit {
            site,
            to,
            version,
            out,
            admin_key,
        } => {
            let s = open(&site)?;
            let admin = admin_key.as_deref().map(crate::load_secret).transpose()?;
            let central = match to {
                Some(c) => c,
                None => store::meta(&s.conn, "central")?.context(
                    "this site has no central (it is not an enrolled node): name it with --to",
                )?,
            };
            let version = match version {
                Some(v) => v,
                None => history::version(&s.conn)?,
            };
            let path = migrate::submit(&s, &central, version, &out, admin.as_ref())?;
            println!("wrote {}", path.display());
            println!(
                "signed by {} (key {}); central's administrator runs: berth migration accept --site CENTRAL {}",
                if admin.is_some() {
                    "the admin key"
                } else {
                    s.name()
                },
                admin
                    .as_ref()
                    .map_or_else(|| s.public_key().key_id(), |k| k.public().key_id()),
                path.display()
            );
        }
        MigrationCmd::Accept { site, file, json } => {
            let mut s = open(&site)?;
            let a = migrate::accept(&mut s, &file)
                .with_context(|| format!("accepting {}", file.display()))?;
            if json {
                crate::output::json(&a)?;
            } else {
                println!(
                    "migration {} {:?} from {} (key {}) applied: schema {} -> {}; the nodes get it with their next bundles",
                    a.migration.version,
                    a.migration.name,
                    a.submitter,
                    a.key_id,
                    a.migration.checksum_before,
                    a.migration.checksum_after
                );
            }
        }
        MigrationCmd::Export { site, dir } => {
            let s = open(&site)?;
            let written = migrate::export_dir(&s.conn, &dir)?;
            let n = history::migrations(&s.conn)?.len();
            println!(
                "{n} migrations in {} ({} files written)",
                dir.display(),
                written.len()
            );
        }
        MigrationCmd::Import { site, dir, json } => {
            let mut s = open(&site)?;
            let done = migrate::import_dir(&mut s, &dir)
                .with_context(|| format!("importing from {}", dir.display()))?;
            if json {
                crate::output::json(&done)?;
            } else {
                println!(
                    "{} migrations already here, {} applied ({:?}); schema version {}",
                    done.known.len(),
                    done.applied.len(),
                    done.applied,
                    history::version(&s.conn)?
                );
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
