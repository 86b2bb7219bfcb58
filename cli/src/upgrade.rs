//! `berth upgrade ...`: publish, activate, apply and show software upgrade packages; and the
//! terminal prompt `berth dock` uses for upgrade questions.

use anyhow::{Context, Result};
use berth_engine::site::{Role, Site};
use berth_engine::upgrade::{self, Note, Prompt, Question, QuestionKind};
use clap::Subcommand;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError};

#[derive(Subcommand, Debug)]
pub enum UpgradeCmd {
    /// Validate a package (PACKAGE.toml and the files it names) and store it at central.
    #[command(
        after_help = "Example:\n  berth upgrade publish samples/upgrade/package.toml --site hq\n  berth upgrade activate fieldapp-2 --site hq"
    )]
    Publish {
        /// The package description (TOML; files are named relative to it).
        package: PathBuf,
        /// The central site.
        #[arg(long)]
        site: PathBuf,
    },
    /// An admin, away from central: sign a package (PACKAGE.toml and its files) with an admin
    /// key registered at central (`berth keys admin`) into a bundle for central.
    #[command(
        after_help = "Example:\n  berth upgrade submit samples/upgrade/package.toml --admin-key ann.key --as ann --to hq --out outbox\n  (at central) berth upgrade accept --site hq outbox/ann_to_hq_package_fieldapp-2.zip"
    )]
    Submit {
        /// The package description (TOML; files are named relative to it).
        package: PathBuf,
        /// The admin's secret key file.
        #[arg(long)]
        admin_key: PathBuf,
        /// The admin's name (the bundle's sender).
        #[arg(long = "as", value_name = "NAME")]
        admin: String,
        /// Central's site name.
        #[arg(long)]
        to: String,
        /// Folder to write the bundle into.
        #[arg(long)]
        out: PathBuf,
    },
    /// At central: publish a package an admin submitted, after checking it is signed by a
    /// registered admin key. It stays inactive until `berth upgrade activate`.
    #[command(
        after_help = "Example:\n  berth upgrade accept --site hq ann_to_hq_package_fieldapp-2.zip"
    )]
    Accept {
        /// The submitted bundle.
        file: PathBuf,
        /// The central site.
        #[arg(long)]
        site: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a published package active: every node's next bundle announces it.
    #[command(after_help = "Example:\n  berth upgrade activate fieldapp-2 --site hq")]
    Activate {
        /// The package name.
        name: String,
        /// The central site.
        #[arg(long)]
        site: PathBuf,
    },
    /// Install a downloaded package now at a node (deferred ones, or a retry after a failure);
    /// one whose files are not here yet (an optional download a dock deferred) is asked for.
    #[command(
        after_help = "A package whose files have not come yet is asked for instead: the next dock sends the\nrequest, central's bundle after it brings the files; run the command again then (or let\nthe package's apply policy install it).\n\nExample:\n  berth upgrade apply fieldapp-2 --site laptop"
    )]
    Apply {
        /// The package name.
        name: String,
        /// The node site.
        #[arg(long)]
        site: PathBuf,
    },
    /// At central: where every package stands at every node. At a node: its own view.
    #[command(after_help = "Example:\n  berth upgrade status --site hq --json")]
    Status {
        /// The site.
        #[arg(long)]
        site: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn open(site: &Path) -> Result<Site> {
    Site::open(site).with_context(|| format!("opening site {}", site.display()))
}

/// Runs a `berth upgrade` command.
pub fn run(cmd: UpgradeCmd) -> Result<()> {
    match cmd {
        UpgradeCmd::Publish { package, site } => {
            let mut s = open(&site)?;
            let p = upgrade::central::publish(&mut s, &package)
                .with_context(|| format!("publishing {}", package.display()))?;
            let bytes: u64 = p.files.iter().filter_map(|f| f.size).sum();
            println!(
                "published {} (level {}, {} files, {bytes} bytes); inactive until `berth upgrade activate {} --site {}`",
                p.name,
                p.level,
                p.files.len(),
                p.name,
                site.display()
            );
        }
        UpgradeCmd::Submit {
            package,
            admin_key,
            admin,
            to,
            out,
        } => {
            let key = crate::load_secret(&admin_key)?;
            let path = upgrade::submit::submit(&package, &admin, &key, &to, &out)
                .with_context(|| format!("submitting {}", package.display()))?;
            println!("wrote {}", path.display());
            println!(
                "signed by admin key {}; central's administrator runs: berth upgrade accept --site CENTRAL {}",
                key.public().key_id(),
                path.display()
            );
        }
        UpgradeCmd::Accept { file, site, json } => {
            let mut s = open(&site)?;
            let a = upgrade::submit::accept(&mut s, &file)
                .with_context(|| format!("accepting {}", file.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!(
                    "published {} (level {}, {} files) from admin {} (key {}); inactive until `berth upgrade activate {} --site {}`",
                    a.package.name,
                    a.package.level,
                    a.package.files.len(),
                    a.admin,
                    a.key_id,
                    a.package.name,
                    site.display()
                );
            }
        }
        UpgradeCmd::Activate { name, site } => {
            let mut s = open(&site)?;
            upgrade::central::activate(&mut s, &name)
                .with_context(|| format!("activating {name}"))?;
            println!("{name} is active: every node's next bundle announces it");
        }
        UpgradeCmd::Apply { name, site } => {
            let mut s = open(&site)?;
            let note = upgrade::node::apply_now(&mut s, &name)
                .with_context(|| format!("applying {name}"))?;
            print_notes(std::slice::from_ref(&note));
            if note.event == "requested" {
                return Ok(());
            }
            if note.event != "applied" {
                anyhow::bail!(
                    "{name} was not applied ({}); the outcome is reported at the next dock",
                    note.event
                );
            }
            // A bundle may have waited for this software level (a migration needing it).
            let held: i64 = s
                .conn
                .query_row("SELECT COUNT(*) FROM berth_held", [], |r| r.get(0))?;
            if held > 0 {
                let r = berth_engine::dock::apply_spool(
                    &mut s,
                    &berth_engine::dock::DockOptions::default(),
                )?;
                crate::output::dock_report(&r);
            }
        }
        UpgradeCmd::Status { site, json } => {
            let s = open(&site)?;
            match s.role() {
                Role::Central => {
                    let st = upgrade::central::status(&s)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&st)?);
                    } else if st.is_empty() {
                        println!("no upgrade packages published");
                    } else {
                        for p in &st {
                            println!(
                                "{} level {} ({} download, {} apply{}), {}, {} files {} bytes",
                                p.name,
                                p.level,
                                p.download,
                                p.apply,
                                p.schema_version
                                    .as_deref()
                                    .map(|v| format!(", schema {v}"))
                                    .unwrap_or_default(),
                                p.active.map_or_else(
                                    || "inactive".to_string(),
                                    |n| format!("active #{n}")
                                ),
                                p.files,
                                p.bytes
                            );
                            for f in &p.file_list {
                                println!(
                                    "  file {:<24} {:>12} bytes  sha256 {}",
                                    f.name,
                                    f.size.map_or_else(|| "?".to_string(), |s| s.to_string()),
                                    f.sha256.as_deref().unwrap_or("?")
                                );
                            }
                            for n in &p.nodes {
                                println!(
                                    "  {:<16} {:<11} {}{}",
                                    n.node,
                                    n.state,
                                    n.exit_code
                                        .map(|c| format!("exit {c}: "))
                                        .unwrap_or_default(),
                                    n.detail
                                );
                            }
                        }
                    }
                }
                Role::Node => {
                    let v = upgrade::node::status(&s)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    } else {
                        println!(
                            "software level {} ({} reports not yet acknowledged by central)",
                            v.software_level, v.unreported
                        );
                        for p in &v.packages {
                            println!(
                                "  {:<20} level {:<8} {:<11} {} download, {} apply{}",
                                p.name,
                                p.level,
                                p.state,
                                p.download,
                                p.apply,
                                if p.detail.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", p.detail)
                                }
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Prints upgrade notes after a dock or an apply (already plain text).
pub fn print_notes(notes: &[Note]) {
    for n in notes {
        println!("{:<12} {}", format!("upgrade {}", n.event), n.text);
    }
}

/// Asks on the terminal, with the package's time-out; unless both stdin and stderr are a
/// terminal (someone to see the question and answer it), every question takes the package's
/// default at once: an unattended dock never waits.
#[derive(Debug, Default)]
pub struct TerminalPrompt {
    lines: Mutex<Option<Receiver<String>>>,
}

impl TerminalPrompt {
    /// Whether a question would be asked (rather than answered by its default at once).
    pub fn attended() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }
}

impl Prompt for TerminalPrompt {
    fn ask(&self, q: &Question) -> Option<bool> {
        if !Self::attended() {
            return None;
        }
        let what = match q.kind {
            QuestionKind::Download => "Download",
            QuestionKind::Apply => "Install",
        };
        let mut err = std::io::stderr();
        let _ = writeln!(err, "\nSoftware upgrade {} (level {})", q.package, q.level);
        if !q.message.is_empty() {
            let _ = writeln!(err, "{}", q.message);
        }
        let _ = write!(
            err,
            "{what} now? [y/n] (in {} s: {}) ",
            q.timeout.as_secs(),
            if q.default { "yes" } else { "no" }
        );
        let _ = err.flush();
        let mut guard = self.lines.lock().ok()?;
        // One reader thread for the whole run: a line typed after a time-out answers the next
        // question rather than being lost in a thread of its own.
        let rx = guard.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let stdin = std::io::stdin();
                for line in stdin.lock().lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        });
        match rx.recv_timeout(q.timeout) {
            Ok(line) => match line.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => Some(true),
                "n" | "no" => Some(false),
                _ => None,
            },
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                let _ = writeln!(err, "(no answer: {})", if q.default { "yes" } else { "no" });
                None
            }
        }
    }
}
