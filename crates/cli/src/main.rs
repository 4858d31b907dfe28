//! `syncmail`: the command line over the syncmail library.
//!
//! Two stages, as in ripgrep: clap reads the raw arguments, then [`run`] turns them into
//! validated work (accounts from the configuration, a flag set) before anything starts.

mod display;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use syncmail::{Config, Store, SyncFlags, SyncRequest};

#[derive(Parser)]
#[command(name = "syncmail", version, about = "Keep a local Maildir in sync with IMAP servers")]
struct Cli {
    /// The configuration file [default: $XDG_CONFIG_HOME/syncmail/config.toml]
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// One JSON object per line on stdout ("event": "progress" | "error" | "done"),
    /// instead of the progress display.
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors and the summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Also show the IMAP protocol, a line per command and response ("trace" events with
    /// --json); passwords and tokens are never shown.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synchronize the accounts named, or all of them.
    Sync {
        accounts: Vec<String>,
        /// What to do, as a comma-separated list of flags: download-hierarchy,
        /// download-contents, upload-hierarchy, upload-contents, outgoing-mail,
        /// headers-only, on-demand. The default is what this version carries out:
        /// upload-hierarchy,download-hierarchy,download-contents,upload-contents.
        #[arg(long, value_delimiter = ',')]
        flags: Vec<String>,
        /// Carry out deletions that the mass-deletion guard held back (it reports them as
        /// "deletions-held" errors).
        #[arg(long)]
        confirm_deletions: bool,
        /// Only these folders (the server's names, UTF-8); may be given several times.
        #[arg(long = "folder")]
        folders: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("syncmail: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn parse_flags(names: &[String]) -> Result<SyncFlags> {
    if names.is_empty() {
        return Ok(SyncFlags::UPLOAD_HIERARCHY
            | SyncFlags::DOWNLOAD_HIERARCHY
            | SyncFlags::DOWNLOAD_CONTENTS
            | SyncFlags::UPLOAD_CONTENTS);
    }
    let mut flags = SyncFlags::empty();
    for n in names {
        match SyncFlags::from_flag_name(n) {
            Some(f) => flags |= f,
            None => bail!(
                "unknown flag {n:?}; the flags are download-hierarchy, download-contents, upload-hierarchy, \
                 upload-contents, outgoing-mail, headers-only, on-demand"
            ),
        }
    }
    Ok(flags)
}

/// Returns whether everything succeeded.
fn run(cli: Cli) -> Result<bool> {
    let config_path = cli.config.clone().unwrap_or_else(syncmail::config::default_config_path);
    match cli.command {
        Command::Sync { accounts, flags, folders, confirm_deletions } => {
            let flags = parse_flags(&flags)?;
            if !config_path.exists() {
                bail!(
                    "no configuration file at {}; write one (see the README for an example) or pass -c FILE",
                    config_path.display()
                );
            }
            let config = Config::load(&config_path)?;
            let accounts = config.select(&accounts)?;
            if accounts.is_empty() {
                bail!("the configuration at {} has no [accounts.NAME] section", config_path.display());
            }
            let mode = if cli.json {
                display::Mode::Json
            } else if cli.quiet {
                display::Mode::Quiet
            } else {
                display::Mode::Bars
            };
            let display = Arc::new(display::Display::new(mode, cli.verbose));
            let mut handles = Vec::new();
            for account in accounts {
                let name = account.name.clone();
                let store = Store::open(account).with_context(|| format!("account {name}"))?;
                let mut req = SyncRequest::new(flags).with_progress(display.clone());
                req.confirm_deletions = confirm_deletions;
                if !folders.is_empty() {
                    req = req.with_folders(folders.clone());
                }
                handles.push(store.synchronize_in_background(req));
            }
            let reports: Vec<_> = handles.iter().map(|h| h.wait()).collect();
            display.finish(&reports);
            Ok(reports.iter().all(|r| r.is_success()))
        }
    }
}
