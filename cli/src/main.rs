//! The `berth` command: parses arguments, calls the engine, prints.

mod demo;
mod output;
mod sample;
mod schema;
mod transports;
mod upgrade;

use anyhow::{Context, Result, bail};
use berth_bundle::{Bundle, Limits, PublicKey, SecretKey, TrustedKey, TrustedKeys};
use berth_engine::dock::DockOptions;
use berth_engine::site::{CentralInit, Site};
use berth_engine::{enroll, status, transport};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Offline-first sync for SQLite: signed bundle files carried by folders, email or USB sticks.",
    after_help = "Example:\n  berth init central hq --schema samples/sales/schema.sql\n  berth init node laptop --name alice --via /media/usb\n  berth node add alice --site hq --via /media/usb\n  berth dock --site laptop --via /media/usb\n\nExit status:\n  0    done (for checks: every check passed)\n  1    failed: the message on stderr says what, where and what to do; or a check\n       failed (verify, docking check, capture check)\n  3    dock: a bundle was quarantined or waits to be retried (the report says which)\n  141  the reader of the output went away (`berth conflicts | head -1`)\n\nLogging: -v, -vv, -vvv (info, debug, trace) or RUST_LOG (e.g. RUST_LOG=berth_engine=debug)\nwrite the log to stderr; -q leaves only errors and draws no progress bars."
)]
struct Cli {
    /// More log output on stderr: -v info (with progress of long work when no bar is
    /// drawn), -vv debug, -vvv trace. RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr: no warnings in the log, no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Starts the log on stderr: RUST_LOG when set, else the level -v/-q choose (warnings by
/// default).
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level));
    output::QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    // A second subscriber (tests calling main twice) is not an error worth stopping for.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a site.
    #[command(
        subcommand,
        after_help = "Example:\n  berth init central hq --schema samples/sales/schema.sql\n  berth init node laptop --name alice --via /media/usb"
    )]
    Init(Init),
    /// Manage nodes at central.
    #[command(
        subcommand,
        after_help = "Example:\n  berth node add alice --site hq --via /media/usb\n  berth node set alice --site hq --attr employee=E17"
    )]
    Node(NodeCmd),
    /// Apply the bundles addressed to this site, then write its outgoing bundles.
    #[command(
        after_help = "Example:\n  berth dock --site laptop --via /media/usb\n  berth dock --site hq --via ~/Sync/berth --json"
    )]
    Dock(DockArgs),
    /// Show role, schema, streams, held bundles and conflicts.
    #[command(after_help = "Example:\n  berth status --site hq --json")]
    Status(SiteArgs),
    /// Check the site's own files without changing anything (runs beside a dock or watch).
    #[command(
        after_help = "Checks today:\n  site-files   data.db is there, not empty, and records the site that berth.toml\n               and keys/ describe (not another site's database)\n  quick-check  SQLite's PRAGMA quick_check: damaged pages, broken b-trees\n  replica      at a node: its rows against the digests of central's newest bundle\n               (buckets with unsent local changes left out); at central: each\n               node's last report\nExit 0 when every check passes, 1 when one fails.\n\nExample:\n  berth verify --site laptop\n  berth verify --site hq --json"
    )]
    Verify(SiteArgs),
    /// List what lost: collisions at central (with the losing value), overrides at a node;
    /// `resolve` writes the chosen side of a collision again as a new change.
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "At central each collision shows both sides and which lost; at a node each override is a\nlocal write central's change met before central had merged it (central settles it when\nthe write arrives, and the collision, if any, is listed at central).\n\nExample:\n  berth conflicts --site hq\n  berth conflicts --site hq --json\n  berth conflicts resolve 3 --take node --site hq"
    )]
    Conflicts(ConflictsArgs),
    /// Send SQL statements to chosen nodes: they run there in order with the other changes.
    #[command(
        name = "send-sql",
        after_help = "Central tries the script inside a transaction it rolls back; a script that begins, ends or\nreleases a transaction (BEGIN, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE), attaches or\ndetaches a database, or runs a PRAGMA is refused before anything runs.\n\nExample:\n  berth send-sql --site hq --nodes alice,bob purge-old-activities.sql"
    )]
    SendSql {
        /// The central site.
        #[arg(long)]
        site: PathBuf,
        /// The nodes, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// The SQL file.
        file: PathBuf,
    },
    /// Say whether a row is visible to a node, and through which docking objects.
    #[command(
        after_help = "Example:\n  berth explain --site hq --node alice opty O1\n  berth explain --site hq --node alice opty_emp '[\"O1\",\"E1\"]' --json"
    )]
    Explain {
        /// The central site.
        #[arg(long)]
        site: PathBuf,
        /// The node.
        #[arg(long)]
        node: String,
        /// The table.
        table: String,
        /// The row's key: a JSON array of the key values, or the value of a one-column key.
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a docking model (visibility rules) against the site's schema.
    #[command(
        subcommand,
        after_help = "Example:\n  berth docking check --site hq samples/sales/docking.toml"
    )]
    Docking(DockingCmd),
    /// Generate and show keys.
    #[command(
        subcommand,
        after_help = "Example:\n  berth keys generate --out keys --name admin\n  berth keys show keys/admin.pub"
    )]
    Keys(KeysCmd),
    /// Look inside and check bundle files.
    #[command(
        subcommand,
        after_help = "Example:\n  berth bundle inspect hq_to_alice_0000000002.berth.zip\n  berth bundle verify hq_to_alice_0000000002.berth.zip --trust hq/keys/site.pub"
    )]
    Bundle(BundleCmd),
    /// Watch exchange folders (and mail) and dock whenever a bundle arrives or data changes.
    #[command(
        after_help = "Example:\n  berth watch --site laptop --via ~/Sync/berth\n  berth watch --site hq --via /mnt/share --via maildir:~/Maildir --poll 30 --json"
    )]
    Watch(transports::WatchArgs),
    /// Software upgrades: publish and activate at central, apply at a node, status.
    #[command(
        subcommand,
        after_help = "Example:\n  berth upgrade publish samples/upgrade/package.toml --site hq\n  berth upgrade activate fieldapp-2 --site hq\n  berth upgrade status --site hq"
    )]
    Upgrade(upgrade::UpgradeCmd),
    /// Snapshot and diff the replicated schema.
    #[command(
        subcommand,
        after_help = "Example:\n  berth schema snapshot --site hq\n  berth schema diff --site hq --to next-schema.sql"
    )]
    Schema(schema::SchemaCmd),
    /// Versioned schema migrations.
    #[command(
        subcommand,
        after_help = "Example:\n  berth migration create --site dev --name opty-probability\n  berth migration list --site dev"
    )]
    Migration(schema::MigrationCmd),
    /// List the rows a repair of this node's replica kept aside, write one back, or drop it.
    #[command(
        after_help = "A repair (central's rows for buckets where this node's rows differed from its digests)\nkeeps every row it replaces or removes. Write one back as a local change with --reapply\n(it is journaled and merged at central like any write), or forget it with --discard.\n\nExample:\n  berth repair --site laptop --list\n  berth repair --site laptop --reapply 3"
    )]
    Repair(RepairArgs),
    /// Check or repair change capture (the triggers berth installs in data.db).
    #[command(
        subcommand,
        after_help = "Example:\n  berth capture check --site laptop\n  berth capture restore --site laptop"
    )]
    Capture(schema::CaptureCmd),
    /// Sample data for the sales sample (samples/sales/).
    #[command(
        subcommand,
        after_help = "Example:\n  berth sample generate --scale 1 --out sales-data\n  berth init central hq --schema sales-data/schema.sql --data sales-data/data.sql --docking sales-data/docking.toml"
    )]
    Sample(SampleCmd),
    /// A central and three nodes syncing through files: a narrated scenario, then every
    /// replica checked against what it should hold (exit 1 if a check fails).
    #[command(after_help = "Example:\n  berth demo\n  berth demo /tmp/berth-demo --scale 1 --json")]
    Demo(demo::DemoArgs),
}

#[derive(Subcommand, Debug)]
enum SampleCmd {
    /// Write schema.sql, docking.toml and a realistic data.sql (deterministic for a seed;
    /// checked against the schema with foreign keys on before it is written).
    #[command(
        after_help = "Example:\n  berth sample generate --scale 2 --seed 7 --out sales-data --json"
    )]
    Generate {
        /// Size: 1 = 2,000 accounts and 5,000 opportunities (with employees, quotes,
        /// activities in proportion), on top of the hand-written sample rows.
        #[arg(long, default_value_t = 1)]
        scale: u32,
        /// Seed: the same scale and seed give the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The folder to write (new, empty, or holding a previous `sample generate` output).
        #[arg(long)]
        out: PathBuf,
        /// Print JSON (counts per table).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Init {
    /// Create the central site from a schema.
    #[command(
        after_help = "Example:\n  berth init central hq --schema samples/sales/schema.sql --data seed.sql"
    )]
    Central {
        /// The site folder to create.
        dir: PathBuf,
        /// SQL file with the schema (every table needs a PRIMARY KEY).
        #[arg(long)]
        schema: PathBuf,
        /// Docking model (TOML).
        #[arg(long)]
        docking: Option<PathBuf>,
        /// SQL file with initial rows (loaded as the baseline, not journaled).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Site name (defaults to the folder's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Create a node site and write its enrollment request.
    #[command(after_help = "Example:\n  berth init node laptop --name alice --via /media/usb")]
    Node {
        /// The site folder to create.
        dir: PathBuf,
        /// The node's name.
        #[arg(long)]
        name: String,
        /// Folder to write the enrollment request into.
        #[arg(long)]
        via: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Approve a node's enrollment request and write its initial extract.
    #[command(
        after_help = "Example:\n  berth node add alice --site hq --via /media/usb --attr employee=E17\n  berth node add alice --site hq --request alice_to_all_0000000000.berth.zip --out outbox/"
    )]
    Add {
        /// The node's name.
        name: String,
        /// The central site folder.
        #[arg(long)]
        site: PathBuf,
        /// Exchange folder holding the request; the extract is written there too.
        #[arg(long, required_unless_present = "request")]
        via: Option<PathBuf>,
        /// The request file (instead of finding it in --via).
        #[arg(long)]
        request: Option<PathBuf>,
        /// Where to write the extract: a folder, or a file name ending in .zip (defaults to
        /// --via, or the request's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Node attributes used by visibility rules, KEY=VALUE (repeatable).
        #[arg(long = "attr", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Seal the extract to the node's key (`NAME.age`): a lost stick leaks nothing.
        #[arg(long, conflicts_with = "out")]
        encrypt: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a node's attributes: the next dock at central routes by them (the rows they
    /// show arrive at the node, those they hide leave it).
    #[command(
        after_help = "Example:\n  berth node set alice --site hq --attr employee=E17\n  berth node set alice --site hq --unset region"
    )]
    Set {
        /// The node's name.
        name: String,
        /// The central site folder.
        #[arg(long)]
        site: PathBuf,
        /// Set an attribute, KEY=VALUE (repeatable; KEY declared in the docking model's
        /// `[nodes] attributes`).
        #[arg(long = "attr", value_parser = parse_attr, required_unless_present = "unset")]
        attrs: Vec<(String, String)>,
        /// Remove an attribute (repeatable).
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a node's key (a stolen laptop): central refuses every bundle it signed, from
    /// now on, and stops writing to it. The name can then be enrolled again with a new key
    /// (`berth init node` on the replacement machine, then `berth node add NAME`).
    #[command(after_help = "Example:\n  berth node revoke alice --site hq")]
    Revoke {
        /// The node's name.
        name: String,
        /// The central site folder.
        #[arg(long)]
        site: PathBuf,
    },
}

#[derive(Args, Debug)]
struct DockArgs {
    /// The site folder.
    #[arg(long)]
    site: PathBuf,
    /// The exchange folder (shared folder, USB stick, ...), or one bundle file to apply
    /// (its folder then receives the outgoing bundles).
    #[arg(long)]
    via: PathBuf,
    /// Only write outgoing bundles.
    #[arg(long, conflicts_with = "download_only")]
    upload_only: bool,
    /// Only apply incoming bundles.
    #[arg(long)]
    download_only: bool,
    /// Print JSON (`happened` says whether anything was done); upgrade questions take their
    /// defaults without asking.
    #[arg(long)]
    json: bool,
    /// Split outgoing bundles larger than this many bytes into volumes (FAT32 media).
    #[arg(long, value_name = "BYTES", default_value_t = berth_engine::volumes::DEFAULT_VOLUME_SIZE)]
    volume_size: u64,
    /// Seal outgoing bundles for one site to that site's key (`NAME.age`, the age format).
    #[arg(long)]
    encrypt: bool,
}

#[derive(Args, Debug)]
struct SiteArgs {
    /// The site folder.
    #[arg(long)]
    site: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ConflictsArgs {
    #[command(subcommand)]
    action: Option<ConflictsCmd>,
    /// The site folder.
    #[arg(long, required = true)]
    site: Option<PathBuf>,
    /// Print JSON: `{"conflicts": [...], "overrides": [...]}`.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum ConflictsCmd {
    /// At central: write one side of a collision again as a new change of central's (it
    /// travels to every node holding the row with the next dock).
    #[command(after_help = "Example:\n  berth conflicts resolve 3 --take node --site hq")]
    Resolve {
        /// The collision's id (`berth conflicts` shows it as #ID).
        id: i64,
        /// The side to keep: the node's values, or central's as they were when the change
        /// arrived.
        #[arg(long, value_enum)]
        take: Take,
        /// The central site folder.
        #[arg(long)]
        site: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--take` of `conflicts resolve`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Take {
    Node,
    Central,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").args(["list", "reapply", "discard"]).required(true)))]
struct RepairArgs {
    /// The site folder (a node).
    #[arg(long)]
    site: PathBuf,
    /// List the rows kept aside.
    #[arg(long)]
    list: bool,
    /// Write the kept row with this id back as a local change.
    #[arg(long, value_name = "ID")]
    reapply: Option<i64>,
    /// Forget the kept row with this id.
    #[arg(long, value_name = "ID")]
    discard: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum DockingCmd {
    /// Replace central's docking model; the next dock routes by it (rows arrive and leave).
    #[command(after_help = "Example:\n  berth docking apply --site hq new-docking.toml")]
    Apply {
        /// The central site.
        #[arg(long)]
        site: PathBuf,
        /// The new model.
        file: PathBuf,
    },
    /// Validate a docking model: tables, columns, member paths, rule SQL, rules that can never
    /// match. Exit 0 when there is no error (warnings are printed), 1 otherwise.
    #[command(
        after_help = "Example:\n  berth docking check --site hq\n  berth docking check --site hq new-docking.toml --json"
    )]
    Check {
        /// The site whose schema the model is checked against.
        #[arg(long)]
        site: PathBuf,
        /// The model file (defaults to the site's docking.toml).
        file: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Generate a key pair: NAME.key (secret, owner-only) and NAME.pub.
    #[command(after_help = "Example:\n  berth keys generate --out keys --name admin")]
    Generate {
        /// Folder to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File name stem.
        #[arg(long, default_value = "berth")]
        name: String,
    },
    /// Rotate central's key: the new key is announced, signed by the old one, in every bundle
    /// central writes; nodes follow the chain and refuse the retired keys from then on.
    #[command(after_help = "Example:\n  berth keys rotate --site hq")]
    Rotate {
        /// The central site folder.
        #[arg(long)]
        site: PathBuf,
    },
    /// Show a key file's key id and public key (a site folder shows the site's key).
    #[command(
        after_help = "With --age-identity, only the site's age identity (AGE-SECRET-KEY-1...) is printed: the\nsecret that opens bundles sealed to it with the age tool. Keep it as private as the key.\n\nExample:\n  berth keys show keys/admin.pub\n  berth keys show hq\n  berth keys show laptop --age-identity > id.txt\n  age -d -i id.txt -o b.berth.zip hq_to_alice_0000000002.berth.zip.age"
    )]
    Show {
        /// A .key or .pub file, or a site folder.
        path: PathBuf,
        /// Print the age identity of the secret key (a site folder or a .key file) instead.
        #[arg(long)]
        age_identity: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// At central: register an admin key (its holder may sign a migration's executable
    /// step and submit upgrade packages), or list them.
    #[command(
        after_help = "Example:\n  berth keys generate --out keys --name dana\n  berth keys admin --site hq --name dana keys/dana.pub\n  berth keys admin --site hq --list"
    )]
    Admin {
        /// Central's site folder.
        #[arg(long)]
        site: PathBuf,
        /// The admin's name.
        #[arg(long, required_unless_present = "list")]
        name: Option<String>,
        /// The admin's public key file (.pub).
        #[arg(required_unless_present = "list")]
        key: Option<PathBuf>,
        /// List the registered admin keys.
        #[arg(long)]
        list: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BundleCmd {
    /// Summarize a bundle (its manifest is shown unverified); a sealed one (`.age`) is named
    /// with how to open it.
    #[command(
        after_help = "Example:\n  berth bundle inspect hq_to_alice_0000000002.berth.zip --json\n  berth bundle inspect hq_to_alice_0000000002.berth.zip.age"
    )]
    Inspect {
        /// The bundle file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle's signature and every entry's hash; exit 0 only when valid.
    #[command(
        after_help = "Example:\n  berth bundle verify hq_to_alice_0000000002.berth.zip --trust hq=hq/keys/site.pub"
    )]
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// Keys to trust: `SITE=KEYFILE` binds the key to that site; a site folder binds its
        /// own key to its name; a bare `KEYFILE` trusts the key for whatever site it signs as.
        #[arg(long, required = true, num_args = 1..)]
        trust: Vec<String>,
    },
    /// Write a mail message (.eml) with a bundle attached, for any mail client or sendmail.
    #[command(
        after_help = "Example:\n  berth bundle mail out/hq_to_alice_0000000002.berth.zip --to 'Alice Lee <alice@example.org>' --out msg.eml\n  sendmail -t < msg.eml"
    )]
    Mail {
        /// The bundle file.
        file: PathBuf,
        /// The recipient: `addr@example.org` or `Name <addr@example.org>`.
        #[arg(long)]
        to: String,
        /// The sender, written the same way (default berth@localhost).
        #[arg(long)]
        from: Option<String>,
        /// The message file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// Exit status when the reader of our output went away (`berth conflicts | head -1`): what a
/// shell reports for a program SIGPIPE ended, with nothing printed.
const BROKEN_PIPE: u8 = 141;

/// An error and its causes on one line, each said once: a library error that names its
/// cause in its own message (`file: No such file or directory`) is not followed by that
/// cause again.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Whether a panic's payload is the one `println!` raises on a closed pipe.
fn broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    msg.contains("Broken pipe") || msg.contains("os error 32") || msg.contains("os error 232")
}

fn main() -> ExitCode {
    // `println!` panics when stdout is a closed pipe: such a panic is not a bug to report.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(e))
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::from(BROKEN_PIPE)
        }
        Ok(Err(e)) => {
            eprintln!("berth: {}", message(&e));
            ExitCode::FAILURE
        }
        Err(payload) if broken_pipe(payload.as_ref()) => ExitCode::from(BROKEN_PIPE),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init(Init::Central {
            dir,
            schema,
            docking,
            data,
            name,
        }) => {
            let (site, warnings) = Site::init_central(&CentralInit {
                dir: &dir,
                name: name.as_deref(),
                schema: &schema,
                docking: docking.as_deref(),
                data: data.as_deref(),
            })
            .with_context(|| format!("creating central site in {}", dir.display()))?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "created central site {} in {} (key {})",
                site.name(),
                dir.display(),
                site.public_key().key_id()
            );
        }
        Command::Init(Init::Node { dir, name, via }) => {
            let site = Site::init_node(&dir, &name)
                .with_context(|| format!("creating node site in {}", dir.display()))?;
            let req =
                enroll::write_request(&site, &via).context("writing the enrollment request")?;
            println!(
                "created node site {name} in {} (key {})",
                dir.display(),
                site.public_key().key_id()
            );
            println!("enrollment request: {}", req.display());
            println!(
                "next: the admin runs `berth node add {name} --site CENTRAL --via FOLDER` and checks the key id above"
            );
        }
        Command::Node(NodeCmd::Add {
            name,
            site,
            via,
            request,
            out,
            attrs,
            encrypt,
            json,
        }) => {
            let mut s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            let req = match (&request, &via) {
                (Some(r), _) => r.clone(),
                (None, Some(v)) => find_request(v, &name)?,
                (None, None) => bail!("give --via FOLDER or --request FILE"),
            };
            let out = out
                .or(via)
                .or_else(|| req.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| PathBuf::from("."));
            // `--out FILE`: written under its self-describing name beside it, then renamed.
            let out_file =
                (!out.is_dir() && out.extension().is_some_and(|e| e == "zip")).then(|| out.clone());
            let out_dir = match &out_file {
                Some(f) => f
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
                None => out,
            };
            let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
            let mut added = enroll::add_node(&mut s, &name, &req, &attrs, &out_dir)
                .with_context(|| format!("approving {name} from {}", req.display()))?;
            if let Some(f) = out_file {
                std::fs::rename(&added.extract, &f)
                    .with_context(|| format!("writing {}", f.display()))?;
                added.extract = f;
            }
            if encrypt {
                added.extract = berth_engine::seal::seal_file(&s, &added.extract)
                    .with_context(|| format!("sealing {}", added.extract.display()))?;
            }
            if request.is_none() {
                transport::move_into(&req, &s.folder("archive"))?;
            }
            if json {
                output::json(&added)?;
            } else {
                println!("registered node {} with key {}", added.name, added.key_id);
                if let Some(old) = &added.replaced {
                    println!(
                        "it replaces the revoked key {old}: bundles signed by that key stay refused, and what central had written to it is withdrawn"
                    );
                }
                println!(
                    "initial extract ({} rows): {}",
                    added.rows,
                    added.extract.display()
                );
            }
        }
        Command::Dock(a) => {
            let mut s = Site::open(&a.site)
                .with_context(|| format!("opening site {}", a.site.display()))?;
            let opts = DockOptions {
                upload: !a.download_only,
                download: !a.upload_only,
                progress: output::bars(a.json),
                ..DockOptions::default()
            };
            let via = if a.via.is_file() {
                if !transports::taken_from_folder(&a.via) {
                    berth_engine::dock::import_file(&s, &a.via)
                        .with_context(|| format!("taking in {}", a.via.display()))?;
                }
                a.via
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            } else {
                a.via.clone()
            };
            // A script reading --json answers no question: each takes its default.
            let prompt: Box<dyn berth_engine::upgrade::Prompt> = if a.json {
                Box::new(berth_engine::upgrade::NonInteractive)
            } else {
                Box::new(upgrade::TerminalPrompt::default())
            };
            let mut report = berth_engine::dock::dock_with_prompt(&mut s, &via, &opts, &*prompt)
                .with_context(|| format!("docking {} via {}", s.name(), via.display()))?;
            report.written = transports::after_dock(&s, &report.written, a.encrypt, a.volume_size)?;
            if a.json {
                output::json(&report)?;
            } else {
                output::dock_report(&report);
                upgrade::print_notes(&report.upgrade);
            }
            if report.count("quarantined") > 0 || report.count("retry") > 0 {
                return Ok(ExitCode::from(3));
            }
        }
        Command::Upgrade(cmd) => upgrade::run(cmd)?,
        Command::Status(a) => {
            let s = Site::open(&a.site)
                .with_context(|| format!("opening site {}", a.site.display()))?;
            let st = status::status(&s)?;
            let watcher = transports::watcher_state(&a.site);
            if a.json {
                let mut v = serde_json::to_value(&st)?;
                if let (Some(obj), Some(w)) = (v.as_object_mut(), watcher) {
                    obj.insert("watcher".into(), w);
                }
                output::json(&v)?
            } else {
                output::status(&st);
                transports::print_watcher(watcher.as_ref());
            }
        }
        Command::Verify(a) => {
            let v = berth_engine::verify::verify(&a.site)
                .with_context(|| format!("verifying site {}", a.site.display()))?;
            if a.json {
                output::json(&v)?;
            } else {
                output::verification(&v);
            }
            if !v.ok() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Conflicts(a) => conflicts(a)?,
        Command::SendSql { site, nodes, file } => {
            let mut s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            s.require(berth_engine::site::Role::Central)?;
            let sql = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            berth_engine::partial::send_sql(&mut s.conn, &nodes, &sql)
                .with_context(|| format!("sending {} to {}", file.display(), nodes.join(", ")))?;
            println!(
                "journaled for {}; it travels with their next bundles",
                nodes.join(", ")
            );
        }
        Command::Explain {
            site,
            node,
            table,
            key,
            json,
        } => {
            let s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            let model = s.docking_model()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "site {} has no docking model: every node sees every row",
                    s.name()
                )
            })?;
            let peer = berth_engine::peer::require(&s.conn, &node)?;
            let attributes: BTreeMap<String, String> =
                serde_json::from_str(&peer.attrs).unwrap_or_default();
            let who = berth_engine::route::oracle::Node {
                name: node.clone(),
                attributes,
            };
            let key: Vec<serde_json::Value> = match serde_json::from_str(&key) {
                Ok(serde_json::Value::Array(a)) => a,
                _ => vec![serde_json::Value::String(key.clone())],
            };
            let e = berth_engine::route::explain::explain(&s.conn, &model, &who, &table, &key)?;
            if json {
                output::json(&e)?;
            } else {
                println!(
                    "{}: {}",
                    if e.visible { "visible" } else { "not visible" },
                    e.reason
                );
                for i in &e.instances {
                    println!(
                        "  {} {} {}",
                        i.object,
                        i.id,
                        if i.visible {
                            "(visible)"
                        } else {
                            "(not visible)"
                        }
                    );
                    for step in &i.chain {
                        println!("    {step}");
                    }
                }
            }
        }
        Command::Docking(DockingCmd::Apply { site, file }) => {
            let s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            s.apply_docking(&file)
                .with_context(|| format!("applying docking model {}", file.display()))?;
            println!(
                "docking model applied; the next `berth dock --site {}` routes by it",
                site.display()
            );
        }
        Command::Docking(DockingCmd::Check { site, file, json }) => {
            let s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            let file = file.unwrap_or_else(|| site.join("docking.toml"));
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading docking model {}", file.display()))?;
            let findings = berth_engine::route::check::check_toml(&text, &s.conn)?;
            // What the model takes out of replication by primary key, said once in full.
            let classes = berth_engine::route::model::DockingModel::from_toml(&text)
                .map(|m| m.classes())
                .unwrap_or_default();
            let is_error = |f: &berth_engine::route::check::Finding| {
                f.severity() == berth_engine::route::check::Severity::Error
            };
            let errors = findings.iter().filter(|f| is_error(f)).count();
            let grants = berth_engine::route::model::DockingModel::from_toml(&text)
                .map(|m| berth_engine::route::check::link_grants(&m))
                .unwrap_or_default();
            if json {
                let list: Vec<_> = findings
                    .iter()
                    .map(|f| {
                        let severity = if is_error(f) { "error" } else { "warning" };
                        serde_json::json!({"severity": severity, "message": f.to_string()})
                    })
                    .collect();
                output::json(
                    &serde_json::json!({"file": file, "errors": errors, "findings": list,
                        "local": classes.local, "keys": classes.keys, "link_grants": grants}),
                )?;
            } else {
                for f in &findings {
                    println!("{f}");
                }
                if !classes.local.is_empty() {
                    let names: Vec<&str> = classes.local.iter().map(String::as_str).collect();
                    println!(
                        "local (in the schema and its migrations, never captured or sent; each site keeps its own rows): {}",
                        names.join(", ")
                    );
                }
                for (table, key) in &classes.keys {
                    println!("{table}: rows identified by key ({})", key.join(", "));
                }
                if grants.is_empty() {
                    println!(
                        "links: a node's write may link rows only to instances it holds or creates (no node_link grants)"
                    );
                } else {
                    println!(
                        "links: a node's write may link rows only to instances it holds or creates, except:"
                    );
                    for g in &grants {
                        println!("  {g}");
                    }
                }
                println!(
                    "{}: {} error(s), {} warning(s)",
                    file.display(),
                    errors,
                    findings.len() - errors
                );
            }
            if errors > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Keys(KeysCmd::Generate { out, name }) => {
            berth_engine::site::check_name(&name)?;
            let key = SecretKey::generate();
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let secret = out.join(format!("{name}.key"));
            let public = out.join(format!("{name}.pub"));
            berth_engine::site::write_secret(&secret, &key.to_text())?;
            std::fs::write(&public, key.public().to_text())
                .with_context(|| format!("writing {}", public.display()))?;
            println!("key id {}", key.public().key_id());
            println!(
                "secret key: {} (keep it private)\npublic key: {}",
                secret.display(),
                public.display()
            );
        }
        Command::Keys(KeysCmd::Show {
            path,
            age_identity: true,
            json,
        }) => {
            let secret = load_secret(&if path.is_dir() {
                path.join("keys").join("site.key")
            } else {
                path.clone()
            })?;
            let id = berth_bundle::seal::identity_text(&secret)?;
            if json {
                output::json(&serde_json::json!({"age_identity": id}))?;
            } else {
                println!("{id}");
            }
        }
        Command::Keys(KeysCmd::Show { path, json, .. }) => {
            let public = load_public(&path)?;
            // What bundles for this key are sealed to (SPEC 3.4): a standard age recipient.
            let age = berth_bundle::seal::recipient_text(&public)?;
            if json {
                output::json(
                    &serde_json::json!({"key_id": public.key_id().to_string(), "public_key": public.to_hex(), "age_recipient": age}),
                )?;
            } else {
                println!(
                    "key id     {}\npublic key {}\nage        {age}",
                    public.key_id(),
                    public.to_hex()
                );
            }
        }
        Command::Schema(cmd) => return schema::schema(cmd),
        Command::Migration(cmd) => return schema::migration(cmd),
        Command::Capture(cmd) => return schema::capture(cmd),
        Command::Repair(a) => {
            let mut s = Site::open(&a.site)
                .with_context(|| format!("opening site {}", a.site.display()))?;
            if let Some(id) = a.reapply {
                let k = berth_engine::replica::reapply(&mut s, id)?;
                if a.json {
                    output::json(&k)?;
                } else {
                    println!(
                        "kept row {id} of {} {} written back as a local change: the next dock \
                         sends it to central",
                        k.table, k.key
                    );
                }
            } else if let Some(id) = a.discard {
                let k = berth_engine::replica::discard(&s.conn, id)?;
                if a.json {
                    output::json(&k)?;
                } else {
                    println!("kept row {id} of {} {} forgotten", k.table, k.key);
                }
            } else {
                let kept = berth_engine::replica::kept(&s.conn)?;
                if a.json {
                    output::json(&kept)?;
                } else {
                    output::kept(&kept);
                }
            }
        }
        Command::Bundle(BundleCmd::Inspect { file, json }) => {
            let label = file_label(&file);
            let mut f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            if transports::is_sealed(&mut f)
                .with_context(|| format!("reading {}", file.display()))?
            {
                return output::sealed(&file, json).map(|()| ExitCode::SUCCESS);
            }
            let b = Bundle::open(f, &label, &Limits::default())?;
            if json {
                output::json(b.manifest())?
            } else {
                output::manifest(&file, b.manifest())
            }
        }
        Command::Bundle(BundleCmd::Verify { file, trust }) => {
            let label = file_label(&file);
            let f = File::open(&file).with_context(|| format!("opening {}", file.display()))?;
            let mut keys = Vec::new();
            for t in &trust {
                keys.push(parse_trust(t)?);
            }
            let result = Bundle::open(f, &label, &Limits::default()).and_then(|b| {
                // A key file does not say which site it belongs to: trust each for the site
                // the manifest names; the signature still has to match.
                let mut tk = TrustedKeys::new();
                for (site, k) in &keys {
                    let site = site
                        .clone()
                        .unwrap_or_else(|| b.manifest().sender.site.clone());
                    tk.add(TrustedKey {
                        public: k.clone(),
                        site,
                        kinds: None,
                    });
                }
                let mut v = b.verify(&tk)?;
                v.check_all_entries()?;
                Ok(v.manifest().clone())
            });
            match result {
                Ok(m) => println!(
                    "ok: {label} signed by {} ({}), {} entries verified",
                    m.sender.site,
                    m.sender.key_id,
                    m.entries.len()
                ),
                Err(e) => {
                    println!("invalid ({}): {e}", e.kind().as_str());
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Bundle(BundleCmd::Mail {
            file,
            to,
            from,
            out,
        }) => transports::mail(&file, &to, from.as_deref(), &out)?,
        Command::Watch(a) => return transports::watch(a),
        Command::Sample(SampleCmd::Generate {
            scale,
            seed,
            out,
            json,
        }) => {
            let summary = sample::write(&out, scale, seed)?;
            if json {
                output::json(&summary)?;
            } else {
                sample::print(&summary);
            }
        }
        Command::Demo(a) => demo::run(&a)?,
        Command::Node(NodeCmd::Set {
            name,
            site,
            attrs,
            unset,
            json,
        }) => {
            let s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            let attrs: BTreeMap<String, String> = attrs.into_iter().collect();
            let a = enroll::set_attributes(&s, &name, &attrs, &unset)
                .with_context(|| format!("setting {name}'s attributes"))?;
            if json {
                output::json(&a)?;
            } else if a.attributes == a.before {
                println!("{name}'s attributes are unchanged");
            } else {
                let text = |m: &BTreeMap<String, String>| {
                    let v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    if v.is_empty() {
                        "none".to_string()
                    } else {
                        v.join(", ")
                    }
                };
                println!(
                    "{name}'s attributes: {} (were {})",
                    text(&a.attributes),
                    text(&a.before)
                );
                println!(
                    "next: `berth dock --site {} --via FOLDER` routes by them: rows they show arrive at {name}, rows they hide leave",
                    site.display()
                );
            }
        }
        Command::Node(NodeCmd::Revoke { name, site }) => transports::revoke(&site, &name)?,
        Command::Keys(KeysCmd::Rotate { site }) => transports::rotate(&site)?,
        Command::Keys(KeysCmd::Admin {
            site,
            name,
            key,
            list,
            json,
        }) => {
            let s =
                Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
            if let (Some(name), Some(key)) = (name, key) {
                let a = berth_engine::keychain::add_admin(&s, &name, &load_public(&key)?)?;
                if !json {
                    println!("admin {} registered (key {})", a.name, a.key_id);
                }
            }
            let all = berth_engine::keychain::admins(&s.conn)?;
            if json {
                output::json(&all)?;
            } else if list {
                for a in &all {
                    println!("{:<16} {}", a.name, a.key_id);
                }
                if all.is_empty() {
                    println!("no admin keys registered");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn conflicts(a: ConflictsArgs) -> Result<()> {
    use berth_engine::conflict::{self, Side};
    if let Some(ConflictsCmd::Resolve {
        id,
        take,
        site,
        json,
    }) = a.action
    {
        let mut s =
            Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
        let side = match take {
            Take::Node => Side::Node,
            Take::Central => Side::Central,
        };
        let r = conflict::resolve(&mut s, id, side)
            .with_context(|| format!("resolving conflict #{id}"))?;
        if json {
            output::json(&r)?;
        } else {
            output::resolution(&r, &site);
        }
        return Ok(());
    }
    let Some(site) = a.site else {
        bail!("give --site SITE");
    };
    let s = Site::open(&site).with_context(|| format!("opening site {}", site.display()))?;
    let c = conflict::conflicts(&s)?;
    let o = conflict::overrides(&s)?;
    if a.json {
        output::json(&serde_json::json!({"conflicts": c, "overrides": o}))
    } else {
        output::conflicts(&c, &o, &site);
        Ok(())
    }
}

pub(crate) fn file_label(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn find_request(via: &Path, name: &str) -> Result<PathBuf> {
    let found = transport::list(via, Some("all"))?;
    found
        .into_iter()
        .find(|f| f.sender == name && f.seq == 0)
        .map(|f| f.path)
        .ok_or_else(|| {
            berth_engine::EngineError::NoEnrollment {
                name: name.to_string(),
                folder: via.to_path_buf(),
            }
            .into()
        })
}

/// `SITE=KEYFILE`, a site folder (bound to its name), or a bare key file (any site).
fn parse_trust(arg: &str) -> Result<(Option<String>, PublicKey)> {
    if let Some((site, file)) = arg.split_once('=')
        && berth_bundle::naming::is_valid_site_name(site)
    {
        return Ok((Some(site.to_string()), load_public(Path::new(file))?));
    }
    let path = Path::new(arg);
    if path.is_dir() {
        let site = Site::open(path).with_context(|| format!("reading site {}", path.display()))?;
        return Ok((Some(site.name().to_string()), site.public_key()));
    }
    Ok((None, load_public(path)?))
}

/// Reads a secret key file (`berth keys generate`'s `.key`), for signing as an admin.
pub(crate) fn load_secret(path: &Path) -> Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SecretKey::from_text(&text)
        .with_context(|| format!("{} is not a secret key file", path.display()))
}

fn load_public(path: &Path) -> Result<PublicKey> {
    let file = if path.is_dir() {
        path.join("keys").join("site.pub")
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading key file {}", file.display()))?;
    if let Ok(k) = PublicKey::from_text(&text) {
        return Ok(k);
    }
    let k = SecretKey::from_text(&text)
        .with_context(|| format!("{} is not a berth key file", file.display()))?;
    Ok(k.public())
}
