//! The `berth` command: parses arguments, calls the engine, prints.

mod args;
mod commands;
mod demo;
mod output;
mod sample;
mod schema;
mod transports;
mod upgrade;

use anyhow::Result;
use args::*;
use clap::Parser;
use commands::*;
pub(crate) use commands::{file_label, load_secret};
use std::process::ExitCode;

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

/// Runs the command `cli` names.
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init(Init::Central(a)) => init_central(a),
        Command::Init(Init::Node(a)) => init_node(a),
        Command::Node(NodeCmd::Add(a)) => node_add(a),
        Command::Dock(a) => dock(a),
        Command::Upgrade(cmd) => {
            upgrade::run(cmd)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(a) => status(a),
        Command::Verify(a) => verify(a),
        Command::Conflicts(a) => {
            conflicts(a)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::SendSql(a) => send_sql(a),
        Command::Explain(a) => explain(a),
        Command::Docking(DockingCmd::Apply(a)) => docking_apply(a),
        Command::Docking(DockingCmd::Check(a)) => docking_check(a),
        Command::Keys(KeysCmd::Generate(a)) => keys_generate(a),
        Command::Keys(KeysCmd::Show(a)) => keys_show(a),
        Command::Schema(cmd) => schema::schema(cmd),
        Command::Migration(cmd) => schema::migration(cmd),
        Command::Capture(cmd) => schema::capture(cmd),
        Command::Repair(a) => repair(a),
        Command::Bundle(BundleCmd::Inspect(a)) => bundle_inspect(a),
        Command::Bundle(BundleCmd::Verify(a)) => bundle_verify(a),
        Command::Bundle(BundleCmd::Mail(a)) => {
            transports::mail(&a.file, &a.to, a.from.as_deref(), &a.out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(a) => transports::watch(a),
        Command::Sample(SampleCmd::Generate(a)) => sample_generate(a),
        Command::Demo(a) => {
            demo::run(&a)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Node(NodeCmd::Set(a)) => node_set(a),
        Command::Node(NodeCmd::Revoke(a)) => {
            transports::revoke(&a.site, &a.name)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCmd::Rotate(a)) => {
            transports::rotate(&a.site)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCmd::Admin(a)) => keys_admin(a),
    }
}
