//! `syncmail`: the command line over the syncmail library.
//!
//! Two stages, as in ripgrep: clap reads the raw arguments, then [`run`] turns them into
//! validated work (accounts from the configuration, a flag set) before anything starts.

mod display;
mod send;

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
    /// Fetch the bodies of placeholders (messages synced with the headers-only flag, or
    /// larger than the account's max-size): `fetch FOLDER UID...`, `fetch --message-id ID`,
    /// or `fetch --all [FOLDER]`. Each replaces its placeholder in place, flags kept.
    Fetch {
        /// The account (needed when the configuration has several).
        #[arg(short = 'a', long = "account")]
        account: Option<String>,
        /// Every placeholder with this Message-ID, in any folder.
        #[arg(long, conflicts_with_all = ["all", "uids"])]
        message_id: Option<String>,
        /// Every placeholder of FOLDER, or of the account.
        #[arg(long, conflicts_with = "uids")]
        all: bool,
        /// The folder (as `syncmail sync` shows it).
        folder: Option<String>,
        /// UIDs of messages in FOLDER (a placeholder's note names its UID).
        uids: Vec<u32>,
    },
    /// Queue a message read on standard input for sending, as a sendmail program does
    /// (`-t`, `-f ADDR`, `-F NAME`, `-i`, `-oi`, recipients; `--now` to send at once), or
    /// manage the outbox: `--flush` sends it, `--list [--all]` shows it, `--retry ID`
    /// queues a failed message again, `--sent ID` says a possibly sent one was sent.
    /// `--account NAME` chooses the account.
    Send {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
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

fn load_config(path: &std::path::Path) -> Result<Config> {
    if !path.exists() {
        bail!("no configuration file at {}; write one (see the README for an example) or pass -c FILE", path.display());
    }
    Ok(Config::load(path)?)
}

fn display_mode(cli: &Cli) -> display::Mode {
    if cli.json {
        display::Mode::Json
    } else if cli.quiet {
        display::Mode::Quiet
    } else {
        display::Mode::Bars
    }
}

/// Syncs the accounts at once, each on its own thread; returns whether all succeeded.
fn sync_all(
    (mode, verbose): (display::Mode, bool),
    accounts: Vec<syncmail::AccountConfig>,
    request: impl Fn(&syncmail::AccountConfig) -> SyncRequest,
) -> Result<bool> {
    let display = Arc::new(display::Display::new(mode, verbose));
    let mut handles = Vec::new();
    for account in accounts {
        let name = account.name.clone();
        let req = request(&account).with_progress(display.clone());
        let store = Store::open(account).with_context(|| format!("account {name}"))?;
        handles.push(store.synchronize_in_background(req));
    }
    let reports: Vec<_> = handles.iter().map(|h| h.wait()).collect();
    display.finish(&reports);
    Ok(reports.iter().all(|r| r.is_success()))
}

/// Returns whether everything succeeded.
fn run(cli: Cli) -> Result<bool> {
    let config_path = cli.config.clone().unwrap_or_else(syncmail::config::default_config_path);
    let mode = (display_mode(&cli), cli.verbose);
    match cli.command {
        Command::Sync { accounts, flags, folders, confirm_deletions } => {
            let explicit = !flags.is_empty();
            let flags = parse_flags(&flags)?;
            let config = load_config(&config_path)?;
            let accounts = config.select(&accounts)?;
            if accounts.is_empty() {
                bail!("the configuration at {} has no [accounts.NAME] section", config_path.display());
            }
            sync_all(mode, accounts, |account| {
                let mut f = flags;
                if !explicit && account.smtp.is_some() {
                    f |= SyncFlags::OUTGOING_MAIL;
                }
                let mut req = SyncRequest::new(f);
                req.confirm_deletions = confirm_deletions;
                if !folders.is_empty() {
                    req = req.with_folders(folders.clone());
                }
                req
            })
        }
        Command::Fetch { account, message_id, all, folder, uids } => {
            let which = match (message_id, folder) {
                (Some(id), None) => syncmail::Bodies::MessageId(id),
                (Some(_), Some(_)) => bail!("--message-id searches every folder; leave the folder out"),
                (None, folder) if all => syncmail::Bodies::All { folder },
                (None, Some(folder)) if !uids.is_empty() => syncmail::Bodies::Uids { folder, uids },
                _ => bail!("say what to fetch: FOLDER UID..., --message-id ID, or --all [FOLDER]"),
            };
            let config = load_config(&config_path)?;
            let accounts = config.select(account.as_slice())?;
            let [account] = <[_; 1]>::try_from(accounts)
                .map_err(|_| anyhow::anyhow!("say which account with -a NAME (the configuration has several)"))?;
            let name = account.name.clone();
            let store = Store::open(account).with_context(|| format!("account {name}"))?;
            let display = Arc::new(display::Display::new(mode.0, mode.1));
            let report =
                store.fetch_bodies(&which, &SyncRequest::new(SyncFlags::ON_DEMAND).with_progress(display.clone()));
            display.finish(std::slice::from_ref(&report));
            Ok(report.is_success())
        }
        Command::Send { args } => {
            let a = send::parse(&args)?;
            let config = load_config(&config_path)?;
            let send_now = SyncFlags::OUTGOING_MAIL | SyncFlags::ON_DEMAND;
            if a.list || a.flush || a.retry.is_some() || a.sent.is_some() {
                let accounts: Vec<_> = config
                    .select(a.account.as_slice())?
                    .into_iter()
                    .filter(|x| x.smtp.is_some() || a.account.is_some())
                    .collect();
                if a.flush {
                    return sync_all(mode, accounts, |_| SyncRequest::new(send_now));
                }
                let stores = accounts.into_iter().map(Store::open).collect::<Result<Vec<_>, _>>()?;
                if a.list {
                    send::list(&stores, a.all, cli.json)?;
                    return Ok(true);
                }
                let (id, retry) = match (a.retry, a.sent) {
                    (Some(id), _) => (id, true),
                    (_, Some(id)) => (id, false),
                    _ => bail!("nothing to do"),
                };
                let [store] = stores.as_slice() else {
                    bail!("say which account the message {id} is in with --account NAME");
                };
                let row = if retry { store.retry_outgoing(id)? } else { store.confirm_sent(id)? };
                eprintln!(
                    "syncmail: message {id} is {} now; `syncmail send --flush` {} it",
                    row.state.name(),
                    if retry { "sends" } else { "files" }
                );
                return Ok(true);
            }
            let message = send::read_message(std::io::stdin().lock(), a.ignore_dots)?;
            let sender = syncmail::outbox::sender(&message, a.queue.from.as_deref());
            let account = send::pick_account(&config, a.account.as_deref(), &sender)?;
            let store = Store::open(account.clone()).with_context(|| format!("account {}", account.name))?;
            store.queue(&message, &a.queue)?;
            if !a.now {
                return Ok(true);
            }
            sync_all(mode, vec![account], |_| SyncRequest::new(send_now))
        }
    }
}
