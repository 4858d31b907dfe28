//! Background sync of a set of accounts, for `syncmail daemon`: a periodic sync of each
//! account, IMAP IDLE watchers that bring new mail in within seconds, and a watcher of
//! the Maildir that uploads local changes promptly. All work goes through the accounts'
//! schedulers ([`crate::scheduler`]), so what a person asks for meanwhile runs first.
//!
//! Per account, threads:
//! - *periodic*: a full sync at start, then every `interval` (config).
//! - *idle*, one per watched folder (INBOX, and the config's `idle` list): its own
//!   connection, EXAMINE, then IDLE (RFC 2177) re-issued every `idle_max`; a change
//!   queues a sync of that folder. A broken connection (network loss, server restart)
//!   is opened again after an exponential backoff with jitter; after a reconnect, and
//!   after the machine slept (wall clock ran ahead of the monotonic clock), the folder
//!   is synced, since changes may have been missed.
//! - *local*: inotify on the Maildir's directories; a change, once the Maildir has been
//!   quiet for `debounce`, queues a two-way contents sync. Changes made while a sync of
//!   the account runs are taken for the sync's own and ignored (a change a person makes
//!   just then waits for the next periodic sync).

use crate::api::{ErrorKind, Progress, Step, SyncError, SyncFlags, SyncProgress, SyncRequest};
use crate::far::Session;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Timings of the daemon; the defaults are for real use, tests shorten them.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The longest one IDLE command lasts before DONE and a new IDLE (RFC 2177 §3: under
    /// 29 minutes; shorter also finds a dead connection sooner).
    pub idle_max: Duration,
    /// How often waiting threads look whether to stop.
    pub poll: Duration,
    /// The first wait before reconnecting; doubled after each failure up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Watch the Maildir for local changes.
    pub watch_local: bool,
    /// How long the Maildir must stay quiet before local changes are synced.
    pub debounce: Duration,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions {
            idle_max: Duration::from_secs(10 * 60),
            poll: Duration::from_millis(500),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            watch_local: true,
            debounce: Duration::from_secs(2),
        }
    }
}

/// The flags of the daemon's syncs: both ways, the hierarchy too, and the outbox where
/// the account sends mail.
pub fn background_flags(store: &Store) -> SyncFlags {
    let mut f = SyncFlags::UPLOAD_HIERARCHY
        | SyncFlags::DOWNLOAD_HIERARCHY
        | SyncFlags::DOWNLOAD_CONTENTS
        | SyncFlags::UPLOAD_CONTENTS;
    if store.account().smtp.is_some() {
        f |= SyncFlags::OUTGOING_MAIL;
    }
    f
}

/// A stop signal that sleepers wake up for.
#[derive(Default)]
struct Stopper {
    stopped: Mutex<bool>,
    cond: Condvar,
}

impl Stopper {
    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cond.notify_all();
    }
    /// Sleeps `d` or until stopped; returns whether stopped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        while !*s {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self.cond.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }
}

/// The wait before reconnect attempt `attempt` (0-based): `base · 2^attempt`, at most
/// `max`, minus up to a quarter at random, so that many clients cut off by the same
/// server restart do not all come back in the same second.
pub fn backoff(opts: &DaemonOptions, attempt: u32, random: u64) -> Duration {
    let full = opts.backoff_base.saturating_mul(1u32 << attempt.min(20)).min(opts.backoff_max);
    let cut = full.as_millis() as u64 / 4;
    full.saturating_sub(Duration::from_millis(if cut == 0 { 0 } else { random % (cut + 1) }))
}

/// A small xorshift generator for the jitter, seeded from the clock and the pid.
struct Jitter(AtomicU64);

impl Jitter {
    fn new() -> Jitter {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        Jitter(AtomicU64::new(t ^ (u64::from(std::process::id()) << 32) | 1))
    }
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }
}

/// The running daemon.
pub struct Daemon {
    stores: Vec<Store>,
    stopper: Arc<Stopper>,
    threads: Vec<JoinHandle<()>>,
}

/// What every thread of one account needs.
struct AccountCtx {
    store: Store,
    progress: Arc<dyn SyncProgress>,
    opts: DaemonOptions,
    stopper: Arc<Stopper>,
    jitter: Jitter,
}

impl AccountCtx {
    /// A line about the daemon itself, as a progress report of the account.
    fn note(&self, step: Step, folder: Option<&str>, text: String) {
        self.progress.progress(&Progress {
            account: self.store.account().name.clone(),
            step,
            text,
            folder: folder.map(str::to_string),
            index: 0,
            max: 0,
            bytes: 0,
            bytes_max: 0,
        });
    }

    fn network_error(&self, folder: &str, message: String, hint: String) {
        self.progress.error(&SyncError {
            kind: ErrorKind::Network,
            account: self.store.account().name.clone(),
            folder: Some(folder.to_string()),
            message,
            server_text: None,
            hint,
            retryable: true,
        });
    }

    /// Queues a background sync; `folder` limits it to one folder.
    fn queue(&self, folder: Option<&str>) {
        let mut req = SyncRequest::new(background_flags(&self.store)).with_progress(self.progress.clone());
        if let Some(f) = folder {
            req = req.with_folders(vec![f.to_string()]);
            req.flags -= SyncFlags::OUTGOING_MAIL;
        }
        // The handle is not kept: the progress receiver hears how it went.
        drop(self.store.synchronize_in_background(req));
    }
}

impl Daemon {
    /// Starts the threads of every store and returns at once. Every background sync
    /// reports to `progress`, and so do the watchers (connection notes as progress of
    /// step `connect`, lost connections as `network` errors).
    pub fn start(stores: Vec<Store>, progress: Arc<dyn SyncProgress>, opts: DaemonOptions) -> Daemon {
        let stopper = Arc::new(Stopper::default());
        let mut threads = Vec::new();
        for store in &stores {
            let ctx = Arc::new(AccountCtx {
                store: store.clone(),
                progress: progress.clone(),
                opts: opts.clone(),
                stopper: stopper.clone(),
                jitter: Jitter::new(),
            });
            let name = &store.account().name;
            let mut spawn = |what: String, f: Box<dyn FnOnce() + Send>| match std::thread::Builder::new()
                .name(format!("{what}-{name}"))
                .spawn(f)
            {
                Ok(t) => threads.push(t),
                Err(e) => ctx.progress.error(&SyncError {
                    kind: ErrorKind::Local,
                    account: name.clone(),
                    folder: None,
                    message: format!("cannot start the {what} thread: {e}"),
                    server_text: None,
                    hint: "the system is out of threads or memory".into(),
                    retryable: true,
                }),
            };
            let c = ctx.clone();
            spawn("periodic".into(), Box::new(move || periodic(&c)));
            let mut watched = vec!["INBOX".to_string()];
            for f in &store.account().idle {
                if !watched.iter().any(|w| w == f) {
                    watched.push(f.clone());
                }
            }
            for folder in watched {
                let c = ctx.clone();
                spawn("idle".into(), Box::new(move || idle_watch(&c, &folder)));
            }
            if opts.watch_local {
                let c = ctx.clone();
                spawn(
                    "local".into(),
                    Box::new(move || {
                        let stop = || c.stopper.is_stopped();
                        let r =
                            crate::watch::local_watch(&c.store, &stop, c.opts.poll, c.opts.debounce, &|| c.queue(None));
                        if let Err(message) = r {
                            c.progress.error(&SyncError {
                                kind: ErrorKind::Local,
                                account: c.store.account().name.clone(),
                                folder: None,
                                message,
                                server_text: None,
                                hint: "local changes are uploaded by the periodic sync only".into(),
                                retryable: false,
                            });
                        }
                    }),
                );
            }
        }
        Daemon { stores, stopper, threads }
    }

    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// Stops: no new work is queued, queued work is dropped (its callers told `done`,
    /// cancelled), the running syncs stop at their next step boundary (every step is
    /// journaled: the store stays consistent), and this returns once they have.
    pub fn shutdown(self) {
        self.stopper.stop();
        for s in &self.stores {
            s.cancel_all();
        }
        for t in self.threads {
            let _ = t.join();
        }
        // Again: a watcher may have queued work before it saw the stop.
        for s in &self.stores {
            s.cancel_all();
        }
        for s in &self.stores {
            while s.is_busy() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn periodic(ctx: &AccountCtx) {
    loop {
        ctx.queue(None);
        if ctx.stopper.sleep(ctx.store.account().interval) {
            return;
        }
    }
}

/// Watches one folder with IDLE until the daemon stops, reconnecting as needed.
fn idle_watch(ctx: &AccountCtx, folder: &str) {
    let account = ctx.store.account();
    let mut attempt = 0u32;
    let mut first = true;
    while !ctx.stopper.is_stopped() {
        let failure = match Session::open(&account.imap) {
            Err(e) => Some(e.to_string()),
            Ok(s) if !s.has("IDLE") => {
                ctx.note(
                    Step::Connect,
                    Some(folder),
                    format!("the server offers no IDLE: {folder} syncs every {} s", account.interval.as_secs()),
                );
                s.logout();
                return;
            }
            Ok(mut s) => match s.examine(folder) {
                Err(e @ (syncmail_imap::Error::No { .. } | syncmail_imap::Error::Bad { .. })) => {
                    // No such folder, or not allowed: trying again will not help.
                    ctx.progress.error(&SyncError {
                        kind: ErrorKind::Server,
                        account: account.name.clone(),
                        folder: Some(folder.to_string()),
                        message: format!("cannot watch {folder} with IDLE: {e}"),
                        server_text: e.server_text().map(str::to_string),
                        hint: "check the folder name in `idle = [...]`; the folder syncs with the others".into(),
                        retryable: false,
                    });
                    s.logout();
                    return;
                }
                Err(e) => Some(e.to_string()),
                Ok(()) => {
                    attempt = 0;
                    ctx.note(Step::Connect, Some(folder), format!("watching {folder} with IDLE"));
                    if !first {
                        // Changes while the connection was down were not announced.
                        ctx.queue(Some(folder));
                    }
                    first = false;
                    let failure = watch_session(ctx, &mut s, folder);
                    if failure.is_none() {
                        s.logout();
                    }
                    failure
                }
            },
        };
        let Some(why) = failure else { continue };
        let wait = backoff(&ctx.opts, attempt, ctx.jitter.next());
        attempt = attempt.saturating_add(1);
        ctx.network_error(
            folder,
            format!("watching {folder}: {why}"),
            format!("connecting again in {:.1} s (attempt {attempt})", wait.as_secs_f64()),
        );
        first = false;
        if ctx.stopper.sleep(wait) {
            return;
        }
    }
}

/// IDLE after IDLE on an examined folder; returns why the connection failed, or `None`
/// when the daemon stops or the machine slept (the caller then connects again).
fn watch_session(ctx: &AccountCtx, s: &mut Session, folder: &str) -> Option<String> {
    // Suspend stops the monotonic clock, not the wall clock: a gap between the two says
    // the machine slept, and the connection is likely dead.
    let start = (Instant::now(), SystemTime::now());
    let slept = move || {
        let wall = SystemTime::now().duration_since(start.1).unwrap_or_default();
        wall.saturating_sub(start.0.elapsed()) > Duration::from_secs(30)
    };
    loop {
        let stop = || ctx.stopper.is_stopped() || slept();
        match s.idle(ctx.opts.idle_max, ctx.opts.poll, &stop) {
            Ok(true) => ctx.queue(Some(folder)),
            Ok(false) if ctx.stopper.is_stopped() => return None,
            Ok(false) if slept() => {
                ctx.note(Step::Connect, Some(folder), "the machine slept: connecting again".into());
                ctx.queue(Some(folder));
                return None;
            }
            Ok(false) => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_a_quarter_off() {
        let o = DaemonOptions {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(backoff(&o, 0, 0), Duration::from_secs(1));
        assert_eq!(backoff(&o, 3, 0), Duration::from_secs(8));
        assert_eq!(backoff(&o, 10, 0), Duration::from_secs(60));
        assert_eq!(backoff(&o, 40, 0), Duration::from_secs(60));
        let j = Jitter::new();
        for attempt in 0..8 {
            let full = backoff(&o, attempt, 0);
            let w = backoff(&o, attempt, j.next());
            assert!(w <= full && w >= full - full / 4, "{attempt}: {w:?} of {full:?}");
        }
        // Jitter spreads clients: not every draw gives the same wait.
        let draws: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(&o, 5, j.next())).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn a_stopped_sleeper_wakes_at_once() {
        let s = Arc::new(Stopper::default());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.sleep(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(50));
        s.stop();
        assert!(t.join().unwrap_or(false));
        assert!(!Stopper::default().sleep(Duration::from_millis(1)));
    }
}
