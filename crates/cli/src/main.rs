//! `syncmail`: the command line over the syncmail library.
//!
//! Two stages, as in ripgrep: clap reads the raw arguments, then [`run`] turns them into
//! validated work (accounts from the configuration, a flag set) before anything starts.

mod daemon;
mod display;
mod events;
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
    /// Keep the accounts named (or all) in sync in the background until SIGTERM/SIGINT:
    /// a sync every `interval` seconds (config, default 300), new mail through IMAP IDLE
    /// on INBOX and the folders of `idle = [...]`, local changes uploaded as they happen.
    /// `syncmail sync` and `syncmail status` talk to it.
    Daemon { accounts: Vec<String> },
    /// What the running daemon is doing: per account, the last successful sync, the
    /// sync running and its progress, what is queued, the last errors; per folder, when
    /// it was last synced.
    Status { accounts: Vec<String> },
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

/// Sends the outboxes of the accounts now: through the daemon where one runs (it holds
/// the accounts), else here. Returns whether all succeeded.
fn send_all(mode: (display::Mode, bool), accounts: Vec<syncmail::AccountConfig>) -> Result<bool> {
    let send_now = SyncFlags::OUTGOING_MAIL | SyncFlags::ON_DEMAND;
    let names: Vec<String> = accounts.iter().map(|a| a.name.clone()).collect();
    if let Some(ok) = via_daemon(mode, &names, Some(send_now), &[], false)? {
        return Ok(ok);
    }
    sync_all(mode, accounts, |_| SyncRequest::new(send_now))
}

/// Hands the request to a running daemon (first in its queue) and shows its events as a
/// local sync would; `None` when no daemon runs. Returns whether all succeeded.
fn via_daemon(
    mode: (display::Mode, bool),
    accounts: &[String],
    flags: Option<SyncFlags>,
    folders: &[String],
    confirm_deletions: bool,
) -> Result<Option<bool>> {
    let display = display::Display::new(mode.0, mode.1);
    let Some(reports) = daemon::forward_sync(&display, accounts, flags, folders, confirm_deletions, mode.1)? else {
        return Ok(None);
    };
    display.finish(&reports);
    Ok(Some(reports.iter().all(|r| r.is_success())))
}

/// Returns whether everything succeeded.
fn run(cli: Cli) -> Result<bool> {
    let config_path = cli.config.clone().unwrap_or_else(syncmail::config::default_config_path);
    let mode = (display_mode(&cli), cli.verbose);
    match cli.command {
        Command::Sync { accounts, flags, folders, confirm_deletions } => {
            let explicit = !flags.is_empty();
            let flags = parse_flags(&flags)?;
            // A running daemon does it, first in its queue; its events show here.
            if let Some(ok) = via_daemon(mode, &accounts, explicit.then_some(flags), &folders, confirm_deletions)? {
                return Ok(ok);
            }
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
        Command::Daemon { accounts } => {
            let config = load_config(&config_path)?;
            let accounts = config.select(&accounts)?;
            if accounts.is_empty() {
                bail!("the configuration at {} has no [accounts.NAME] section", config_path.display());
            }
            let stores = accounts
                .into_iter()
                .map(|a| {
                    let name = a.name.clone();
                    Store::open(a).with_context(|| format!("account {name}"))
                })
                .collect::<Result<Vec<_>>>()?;
            daemon::run(stores, mode.0, mode.1)
        }
        Command::Status { accounts } => daemon::status(&accounts, cli.json),
        Command::Send { args } => {
            let a = send::parse(&args)?;
            let config = load_config(&config_path)?;
            if a.list || a.flush || a.retry.is_some() || a.sent.is_some() {
                let accounts: Vec<_> = config
                    .select(a.account.as_slice())?
                    .into_iter()
                    .filter(|x| x.smtp.is_some() || a.account.is_some())
                    .collect();
                if a.flush {
                    return send_all(mode, accounts);
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
            send_all(mode, vec![account])
        }
    }
}
