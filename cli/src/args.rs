//! The command line: every command, its arguments and its help (clap). What each command
//! does is in [`crate::commands`].

use crate::{demo, schema, transports, upgrade};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Offline-first sync for SQLite: signed bundle files carried by folders, email or USB sticks.",
    after_help = "Example:\n  berth init central hq --schema samples/sales/schema.sql\n  berth init node laptop --name alice --via /media/usb\n  berth node add alice --site hq --via /media/usb\n  berth dock --site laptop --via /media/usb\n\nExit status:\n  0    done (for checks: every check passed)\n  1    failed: the message on stderr says what, where and what to do; or a check\n       failed (verify, docking check, capture check)\n  3    dock: a bundle was quarantined or waits to be retried (the report says which)\n  141  the reader of the output went away (`berth conflicts | head -1`)\n\nLogging: -v, -vv, -vvv (info, debug, trace) or RUST_LOG (e.g. RUST_LOG=berth_engine=debug)\nwrite the log to stderr; -q leaves only errors and draws no progress bars."
)]
pub(crate) struct Cli {
    /// More log output on stderr: -v info (with progress of long work when no bar is
    /// drawn), -vv debug, -vvv trace. RUST_LOG, when set, decides instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Only errors on stderr: no warnings in the log, no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    SendSql(SendSqlArgs),
    /// Say whether a row is visible to a node, and through which docking objects.
    #[command(
        after_help = "Example:\n  berth explain --site hq --node alice opty O1\n  berth explain --site hq --node alice opty_emp '[\"O1\",\"E1\"]' --json"
    )]
    Explain(ExplainArgs),
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

#[derive(Args, Debug)]
pub(crate) struct SendSqlArgs {
    /// The central site.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The nodes, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) nodes: Vec<String>,
    /// The SQL file.
    pub(crate) file: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    /// The central site.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The node.
    #[arg(long)]
    pub(crate) node: String,
    /// The table.
    pub(crate) table: String,
    /// The row's key: a JSON array of the key values, or the value of a one-column key.
    pub(crate) key: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SampleGenerateArgs {
    /// Size: 1 = 2,000 accounts and 5,000 opportunities (with employees, quotes,
    /// activities in proportion), on top of the hand-written sample rows.
    #[arg(long, default_value_t = 1)]
    pub(crate) scale: u32,
    /// Seed: the same scale and seed give the same data.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// The folder to write (new, empty, or holding a previous `sample generate` output).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Print JSON (counts per table).
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct InitCentralArgs {
    /// The site folder to create.
    pub(crate) dir: PathBuf,
    /// SQL file with the schema (every table needs a PRIMARY KEY).
    #[arg(long)]
    pub(crate) schema: PathBuf,
    /// Docking model (TOML).
    #[arg(long)]
    pub(crate) docking: Option<PathBuf>,
    /// SQL file with initial rows (loaded as the baseline, not journaled).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Site name (defaults to the folder's name).
    #[arg(long)]
    pub(crate) name: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct InitNodeArgs {
    /// The site folder to create.
    pub(crate) dir: PathBuf,
    /// The node's name.
    #[arg(long)]
    pub(crate) name: String,
    /// Folder to write the enrollment request into.
    #[arg(long)]
    pub(crate) via: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct NodeAddArgs {
    /// The node's name.
    pub(crate) name: String,
    /// The central site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// Exchange folder holding the request; the extract is written there too.
    #[arg(long, required_unless_present = "request")]
    pub(crate) via: Option<PathBuf>,
    /// The request file (instead of finding it in --via).
    #[arg(long)]
    pub(crate) request: Option<PathBuf>,
    /// Where to write the extract: a folder, or a file name ending in .zip (defaults to
    /// --via, or the request's folder).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Node attributes used by visibility rules, KEY=VALUE (repeatable).
    #[arg(long = "attr", value_parser = parse_attr)]
    pub(crate) attrs: Vec<(String, String)>,
    /// Seal the extract to the node's key (`NAME.age`): a lost stick leaks nothing.
    #[arg(long, conflicts_with = "out")]
    pub(crate) encrypt: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct NodeSetArgs {
    /// The node's name.
    pub(crate) name: String,
    /// The central site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// Set an attribute, KEY=VALUE (repeatable; KEY declared in the docking model's
    /// `[nodes] attributes`).
    #[arg(long = "attr", value_parser = parse_attr, required_unless_present = "unset")]
    pub(crate) attrs: Vec<(String, String)>,
    /// Remove an attribute (repeatable).
    #[arg(long, value_name = "KEY")]
    pub(crate) unset: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct NodeRevokeArgs {
    /// The node's name.
    pub(crate) name: String,
    /// The central site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct DockingApplyArgs {
    /// The central site.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The new model.
    pub(crate) file: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct DockingCheckArgs {
    /// The site whose schema the model is checked against.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The model file (defaults to the site's docking.toml).
    pub(crate) file: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct KeysGenerateArgs {
    /// Folder to write into.
    #[arg(long, default_value = ".")]
    pub(crate) out: PathBuf,
    /// File name stem.
    #[arg(long, default_value = "berth")]
    pub(crate) name: String,
}

#[derive(Args, Debug)]
pub(crate) struct KeysRotateArgs {
    /// The central site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct KeysShowArgs {
    /// A .key or .pub file, or a site folder.
    pub(crate) path: PathBuf,
    /// Print the age identity of the secret key (a site folder or a .key file) instead.
    #[arg(long)]
    pub(crate) age_identity: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct KeysAdminArgs {
    /// Central's site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The admin's name.
    #[arg(long, required_unless_present = "list")]
    pub(crate) name: Option<String>,
    /// The admin's public key file (.pub).
    #[arg(required_unless_present = "list")]
    pub(crate) key: Option<PathBuf>,
    /// List the registered admin keys.
    #[arg(long)]
    pub(crate) list: bool,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BundleInspectArgs {
    /// The bundle file.
    pub(crate) file: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BundleVerifyArgs {
    /// The bundle file.
    pub(crate) file: PathBuf,
    /// Keys to trust: `SITE=KEYFILE` binds the key to that site; a site folder binds its
    /// own key to its name; a bare `KEYFILE` trusts the key for whatever site it signs as.
    #[arg(long, required = true, num_args = 1..)]
    pub(crate) trust: Vec<String>,
}

#[derive(Args, Debug)]
pub(crate) struct BundleMailArgs {
    /// The bundle file.
    pub(crate) file: PathBuf,
    /// The recipient: `addr@example.org` or `Name <addr@example.org>`.
    #[arg(long)]
    pub(crate) to: String,
    /// The sender, written the same way (default berth@localhost).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// The message file to write.
    #[arg(long)]
    pub(crate) out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SampleCmd {
    /// Write schema.sql, docking.toml and a realistic data.sql (deterministic for a seed;
    /// checked against the schema with foreign keys on before it is written).
    #[command(
        after_help = "Example:\n  berth sample generate --scale 2 --seed 7 --out sales-data --json"
    )]
    Generate(SampleGenerateArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum Init {
    /// Create the central site from a schema.
    #[command(
        after_help = "Example:\n  berth init central hq --schema samples/sales/schema.sql --data seed.sql"
    )]
    Central(InitCentralArgs),
    /// Create a node site and write its enrollment request.
    #[command(after_help = "Example:\n  berth init node laptop --name alice --via /media/usb")]
    Node(InitNodeArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum NodeCmd {
    /// Approve a node's enrollment request and write its initial extract.
    #[command(
        after_help = "Example:\n  berth node add alice --site hq --via /media/usb --attr employee=E17\n  berth node add alice --site hq --request alice_to_all_0000000000.berth.zip --out outbox/"
    )]
    Add(NodeAddArgs),
    /// Change a node's attributes: the next dock at central routes by them (the rows they
    /// show arrive at the node, those they hide leave it).
    #[command(
        after_help = "Example:\n  berth node set alice --site hq --attr employee=E17\n  berth node set alice --site hq --unset region"
    )]
    Set(NodeSetArgs),
    /// Revoke a node's key (a stolen laptop): central refuses every bundle it signed, from
    /// now on, and stops writing to it. The name can then be enrolled again with a new key
    /// (`berth init node` on the replacement machine, then `berth node add NAME`).
    #[command(after_help = "Example:\n  berth node revoke alice --site hq")]
    Revoke(NodeRevokeArgs),
}

#[derive(Args, Debug)]
pub(crate) struct DockArgs {
    /// The site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// The exchange folder (shared folder, USB stick, ...), or one bundle file to apply
    /// (its folder then receives the outgoing bundles).
    #[arg(long)]
    pub(crate) via: PathBuf,
    /// Only write outgoing bundles.
    #[arg(long, conflicts_with = "download_only")]
    pub(crate) upload_only: bool,
    /// Only apply incoming bundles.
    #[arg(long)]
    pub(crate) download_only: bool,
    /// Print JSON (`happened` says whether anything was done); upgrade questions take their
    /// defaults without asking.
    #[arg(long)]
    pub(crate) json: bool,
    /// Split outgoing bundles larger than this many bytes into volumes (FAT32 media).
    #[arg(long, value_name = "BYTES", default_value_t = berth_engine::volumes::DEFAULT_VOLUME_SIZE)]
    pub(crate) volume_size: u64,
    /// Seal outgoing bundles for one site to that site's key (`NAME.age`, the age format).
    #[arg(long)]
    pub(crate) encrypt: bool,
}

#[derive(Args, Debug)]
pub(crate) struct SiteArgs {
    /// The site folder.
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ConflictsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<ConflictsCmd>,
    /// The site folder.
    #[arg(long, required = true)]
    pub(crate) site: Option<PathBuf>,
    /// Print JSON: `{"conflicts": [...], "overrides": [...]}`.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConflictsCmd {
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
pub(crate) enum Take {
    Node,
    Central,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").args(["list", "reapply", "discard"]).required(true)))]
pub(crate) struct RepairArgs {
    /// The site folder (a node).
    #[arg(long)]
    pub(crate) site: PathBuf,
    /// List the rows kept aside.
    #[arg(long)]
    pub(crate) list: bool,
    /// Write the kept row with this id back as a local change.
    #[arg(long, value_name = "ID")]
    pub(crate) reapply: Option<i64>,
    /// Forget the kept row with this id.
    #[arg(long, value_name = "ID")]
    pub(crate) discard: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum DockingCmd {
    /// Replace central's docking model; the next dock routes by it (rows arrive and leave).
    #[command(after_help = "Example:\n  berth docking apply --site hq new-docking.toml")]
    Apply(DockingApplyArgs),
    /// Validate a docking model: tables, columns, member paths, rule SQL, rules that can never
    /// match. Exit 0 when there is no error (warnings are printed), 1 otherwise.
    #[command(
        after_help = "Example:\n  berth docking check --site hq\n  berth docking check --site hq new-docking.toml --json"
    )]
    Check(DockingCheckArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeysCmd {
    /// Generate a key pair: NAME.key (secret, owner-only) and NAME.pub.
    #[command(after_help = "Example:\n  berth keys generate --out keys --name admin")]
    Generate(KeysGenerateArgs),
    /// Rotate central's key: the new key is announced, signed by the old one, in every bundle
    /// central writes; nodes follow the chain and refuse the retired keys from then on.
    #[command(after_help = "Example:\n  berth keys rotate --site hq")]
    Rotate(KeysRotateArgs),
    /// Show a key file's key id and public key (a site folder shows the site's key).
    #[command(
        after_help = "With --age-identity, only the site's age identity (AGE-SECRET-KEY-1...) is printed: the\nsecret that opens bundles sealed to it with the age tool. Keep it as private as the key.\n\nExample:\n  berth keys show keys/admin.pub\n  berth keys show hq\n  berth keys show laptop --age-identity > id.txt\n  age -d -i id.txt -o b.berth.zip hq_to_alice_0000000002.berth.zip.age"
    )]
    Show(KeysShowArgs),
    /// At central: register an admin key (its holder may sign a migration's executable
    /// step and submit upgrade packages), or list them.
    #[command(
        after_help = "Example:\n  berth keys generate --out keys --name dana\n  berth keys admin --site hq --name dana keys/dana.pub\n  berth keys admin --site hq --list"
    )]
    Admin(KeysAdminArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum BundleCmd {
    /// Summarize a bundle (its manifest is shown unverified); a sealed one (`.age`) is named
    /// with how to open it.
    #[command(
        after_help = "Example:\n  berth bundle inspect hq_to_alice_0000000002.berth.zip --json\n  berth bundle inspect hq_to_alice_0000000002.berth.zip.age"
    )]
    Inspect(BundleInspectArgs),
    /// Verify a bundle's signature and every entry's hash; exit 0 only when valid.
    #[command(
        after_help = "Example:\n  berth bundle verify hq_to_alice_0000000002.berth.zip --trust hq=hq/keys/site.pub"
    )]
    Verify(BundleVerifyArgs),
    /// Write a mail message (.eml) with a bundle attached, for any mail client or sendmail.
    #[command(
        after_help = "Example:\n  berth bundle mail out/hq_to_alice_0000000002.berth.zip --to 'Alice Lee <alice@example.org>' --out msg.eml\n  sendmail -t < msg.eml"
    )]
    Mail(BundleMailArgs),
}

pub(crate) fn parse_attr(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}
