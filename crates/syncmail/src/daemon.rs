//! Background sync of a set of accounts, for `syncmail daemon`: a periodic sync of each
//! account, IMAP IDLE watchers that bring new mail in within seconds, and a watcher of
//! the Maildir that uploads local changes promptly. All work goes through the accounts'
//! schedulers ([`crate::scheduler`]), so what a person asks for meanwhile runs first.
//!
//! Per account, threads:
//! - *periodic*: a full sync at start, then every `interval` (config).
//! - *watch*: where the server offers NOTIFY (RFC 5465), one connection for every
//!   folder: NOTIFY SET ([`NOTIFY_EVENTS`]), EXAMINE INBOX, then IDLE re-issued every
//!   `idle_max`; a change in INBOX or a STATUS about another mailbox queues a sync of that
//!   folder, a LIST (created, deleted, renamed, (un)subscribed mailbox) a hierarchy sync,
//!   and a deletion a second one [`RELOOK_AFTER_DELETION`] later (the server may still
//!   list the folder when it announces the deletion).
//!   Without NOTIFY, or where NOTIFY SET is refused (said once), it runs the *idle*
//!   watchers instead.
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
use crate::lock;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use syncmail_imap::client::is_mailbox_change;
use syncmail_imap::parse::{Code, Untagged};

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
        *lock(&self.stopped)
    }
    fn stop(&self) {
        *lock(&self.stopped) = true;
        self.cond.notify_all();
    }
    /// Sleeps `d` or until stopped; returns whether stopped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = lock(&self.stopped);
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

thread_local! {
    /// Set in every thread the daemon starts.
    static DAEMON_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `f`, marked as run on a thread of the daemon.
fn daemon_thread<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    move || {
        DAEMON_THREAD.with(|d| d.set(true));
        f()
    }
}

/// What the daemon asks NOTIFY (RFC 5465 §5) for: in the selected mailbox (INBOX) new
/// and expunged messages and flag changes; in every other mailbox of the personal
/// namespace new and expunged messages, and mailboxes created, deleted, renamed or
/// (un)subscribed.
pub const NOTIFY_EVENTS: &str = "(selected (MessageNew MessageExpunge FlagChange)) \
     (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))";

/// How long after a folder's deletion was announced (NOTIFY) the folder list is looked at
/// once more. Dovecot announces a deletion while a new session's LIST may still show the
/// folder for some milliseconds; the sync the notice queues can see it there and keep it,
/// and nothing else would come until the periodic sync.
pub const RELOOK_AFTER_DELETION: Duration = Duration::from_secs(1);

/// What an untagged response under NOTIFY asks the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A change in the selected mailbox (INBOX).
    Selected,
    /// New or expunged messages in another mailbox (its name as the server sent it).
    Folder(String),
    /// A mailbox created, deleted, renamed or (un)subscribed: the hierarchy changed, and
    /// the contents of the named mailbox (not for a deleted one) are to be looked at.
    Hierarchy(Option<String>),
    /// The server dropped notifications (`[NOTIFICATIONOVERFLOW]`, RFC 5465): it
    /// sends no more until NOTIFY SET is given again.
    Overflow,
}

/// Reads one untagged response under NOTIFY; `None` for what asks for nothing.
pub fn notice(u: &Untagged<'_>) -> Option<Notice> {
    match u {
        u if is_mailbox_change(u) => Some(Notice::Selected),
        Untagged::MailboxStatus { name, .. } => String::from_utf8(name.clone()).ok().map(Notice::Folder),
        Untagged::List(e) | Untagged::Lsub(e) => {
            let gone = e.attributes.iter().any(|a| a.eq_ignore_ascii_case("\\NonExistent"));
            Some(Notice::Hierarchy(if gone { None } else { String::from_utf8(e.name.clone()).ok() }))
        }
        Untagged::Status { code: Some(Code::Other(c, _)), .. } if c.eq_ignore_ascii_case("NOTIFICATIONOVERFLOW") => {
            Some(Notice::Overflow)
        }
        _ => None,
    }
}

/// The running daemon.
pub struct Daemon {
    stores: Vec<Store>,
    stopper: Arc<Stopper>,
    threads: Vec<JoinHandle<()>>,
    contexts: Vec<Arc<AccountCtx>>,
}

/// What every thread of one account needs.
struct AccountCtx {
    store: Store,
    progress: Arc<dyn SyncProgress>,
    opts: DaemonOptions,
    stopper: Arc<Stopper>,
    jitter: Jitter,
    /// Watch connections open now (NOTIFY or IDLE).
    watching: AtomicUsize,
    /// When to look at the folder list once more after a deletion was announced
    /// ([`RELOOK_AFTER_DELETION`]).
    relook: Mutex<Option<Instant>>,
}

/// Counts a watch connection while it lives.
struct Open<'a>(&'a AtomicUsize);

impl<'a> Open<'a> {
    fn new(n: &'a AtomicUsize) -> Open<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Open(n)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
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

    fn network_error(&self, folder: Option<&str>, message: String, hint: String) {
        self.progress.error(&SyncError {
            kind: ErrorKind::Network,
            account: self.store.account().name.clone(),
            folder: folder.map(str::to_string),
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

    /// Queues a sync of the hierarchy only (folders created, deleted, renamed).
    fn queue_hierarchy(&self) {
        let req = SyncRequest::new(SyncFlags::UPLOAD_HIERARCHY | SyncFlags::DOWNLOAD_HIERARCHY)
            .with_progress(self.progress.clone());
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
        let mut contexts = Vec::new();
        for store in &stores {
            let ctx = Arc::new(AccountCtx {
                store: store.clone(),
                progress: progress.clone(),
                opts: opts.clone(),
                stopper: stopper.clone(),
                jitter: Jitter::new(),
                watching: AtomicUsize::new(0),
                relook: Mutex::new(None),
            });
            contexts.push(ctx.clone());
            let name = &store.account().name;
            let mut spawn = |what: String, f: Box<dyn FnOnce() + Send>| match std::thread::Builder::new()
                .name(format!("{what}-{name}"))
                .spawn(daemon_thread(f))
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
            let c = ctx.clone();
            spawn("watch".into(), Box::new(move || watch(&c, &watched)));
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
        Daemon { stores, stopper, threads, contexts }
    }

    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// How many connections watch the servers now (NOTIFY or IDLE), all accounts.
    pub fn watch_connections(&self) -> usize {
        self.contexts.iter().map(|c| c.watching.load(Ordering::SeqCst)).sum()
    }

    /// Stops: no new work is queued, queued work is dropped (its callers told `done`,
    /// cancelled), the running syncs stop at their next step boundary (every step is
    /// journaled: the store stays consistent), and this returns once they have. Dropping
    /// the daemon does the same: no thread of it outlives its handle. Called (or dropped)
    /// in a progress callback of the daemon's own work, it stops everything the same way
    /// but returns at once: what it would wait for includes the callback's own thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopper.stop();
        for s in &self.stores {
            s.cancel_all();
        }
        let threads = std::mem::take(&mut self.threads);
        // Stopped from inside (a callback on one of the daemon's threads or on a sync's
        // worker dropped the last handle): nothing is waited for, since what would be waited
        // for includes the callback's own thread. Each thread ends once it sees the stop, the
        // sync (cancelled) at its next step.
        if DAEMON_THREAD.with(|d| d.get()) || self.stores.iter().any(Store::on_worker) {
            return;
        }
        for t in threads {
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

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
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

/// How one connection went, for [`reconnecting`].
enum Life {
    /// It watched, until the daemon stopped or the machine slept (`None`) or it failed.
    Watched(Option<String>),
    /// It failed before it could watch.
    Failed(String),
    /// Watching this way is over (stopped, not possible, or handed over).
    Done,
}

/// Calls `once` (one connection's life; told whether it is a reconnection, after which
/// changes may have been missed) until it says `Done` or the daemon stops; after a
/// failure waits an exponential backoff with jitter and reports `what` failed.
fn reconnecting(ctx: &AccountCtx, folder: Option<&str>, what: &str, mut once: impl FnMut(bool) -> Life) {
    let mut attempt = 0u32;
    let mut again = false;
    while !ctx.stopper.is_stopped() {
        let why = match once(again) {
            Life::Done => return,
            Life::Watched(None) => {
                attempt = 0;
                again = true;
                continue;
            }
            Life::Watched(Some(why)) => {
                attempt = 0;
                why
            }
            Life::Failed(why) => why,
        };
        let wait = backoff(&ctx.opts, attempt, ctx.jitter.next());
        attempt = attempt.saturating_add(1);
        ctx.network_error(
            folder,
            format!("{what}: {why}"),
            format!("connecting again in {:.1} s (attempt {attempt})", wait.as_secs_f64()),
        );
        again = true;
        if ctx.stopper.sleep(wait) {
            return;
        }
    }
}

/// The account's server watcher: NOTIFY where the server offers and accepts it, else
/// one IDLE connection for each of `folders`.
fn watch(ctx: &AccountCtx, folders: &[String]) {
    let mut fall_back = false;
    reconnecting(ctx, None, "watching with NOTIFY", |again| notify_once(ctx, again, &mut fall_back));
    if !fall_back || ctx.stopper.is_stopped() {
        return;
    }
    std::thread::scope(|scope| {
        for folder in folders {
            let t = std::thread::Builder::new()
                .name(format!("idle-{}", ctx.store.account().name))
                .spawn_scoped(scope, daemon_thread(move || idle_watch(ctx, folder)));
            if let Err(e) = t {
                ctx.progress.error(&SyncError {
                    kind: ErrorKind::Local,
                    account: ctx.store.account().name.clone(),
                    folder: Some(folder.clone()),
                    message: format!("cannot start the idle thread: {e}"),
                    server_text: None,
                    hint: "the system is out of threads or memory".into(),
                    retryable: true,
                });
            }
        }
    });
}

/// One connection watched with NOTIFY; sets `fall_back` (and is `Done`) where the
/// server does not offer NOTIFY or refuses the NOTIFY SET.
fn notify_once(ctx: &AccountCtx, again: bool, fall_back: &mut bool) -> Life {
    let mut s = match Session::open(&ctx.store.account().imap) {
        Ok(s) => s,
        Err(e) => return Life::Failed(e.to_string()),
    };
    if !s.has("NOTIFY") || !s.has("IDLE") {
        s.logout();
        *fall_back = true;
        return Life::Done;
    }
    let _open = Open::new(&ctx.watching);
    let mut on = |u: &Untagged<'_>| notice(u).is_some_and(|n| act(ctx, n));
    let set = s.examine("INBOX").and_then(|()| {
        s.notify_set(NOTIFY_EVENTS, &mut |u| {
            on(u);
        })
    });
    match set {
        Err(e @ (syncmail_imap::Error::No { .. } | syncmail_imap::Error::Bad { .. })) => {
            ctx.note(Step::Connect, None, format!("{e}: watching with IDLE instead, one connection a folder"));
            s.logout();
            *fall_back = true;
            return Life::Done;
        }
        Err(e) => return Life::Failed(e.to_string()),
        Ok(()) => {}
    }
    ctx.note(Step::Connect, None, "watching every folder with NOTIFY".into());
    if again {
        // Changes while the connection was down were not announced.
        ctx.queue(None);
    }
    let failure = watch_session(ctx, &mut s, None, &mut on);
    if failure.is_none() {
        s.logout();
    }
    Life::Watched(failure)
}

/// Queues what a NOTIFY notice asks for; returns whether the IDLE is to end (overflow:
/// the connection is opened again and NOTIFY set anew).
fn act(ctx: &AccountCtx, n: Notice) -> bool {
    match n {
        Notice::Selected => ctx.queue(Some("INBOX")),
        Notice::Folder(f) => ctx.queue(Some(&f)),
        Notice::Hierarchy(name) => {
            ctx.queue_hierarchy();
            match name {
                Some(f) => ctx.queue(Some(&f)),
                None => *lock(&ctx.relook) = Some(Instant::now() + RELOOK_AFTER_DELETION),
            }
        }
        Notice::Overflow => {
            ctx.note(Step::Connect, None, "the server dropped notifications: connecting again".into());
            return true;
        }
    }
    false
}

/// Watches one folder with IDLE until the daemon stops, reconnecting as needed.
fn idle_watch(ctx: &AccountCtx, folder: &str) {
    let account = ctx.store.account();
    reconnecting(ctx, Some(folder), &format!("watching {folder}"), |again| {
        let mut s = match Session::open(&account.imap) {
            Ok(s) => s,
            Err(e) => return Life::Failed(e.to_string()),
        };
        if !s.has("IDLE") {
            ctx.note(
                Step::Connect,
                Some(folder),
                format!("the server offers no IDLE: {folder} syncs every {} s", account.interval.as_secs()),
            );
            s.logout();
            return Life::Done;
        }
        let _open = Open::new(&ctx.watching);
        match s.examine(folder) {
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
                Life::Done
            }
            Err(e) => Life::Failed(e.to_string()),
            Ok(()) => {
                ctx.note(Step::Connect, Some(folder), format!("watching {folder} with IDLE"));
                if again {
                    // Changes while the connection was down were not announced.
                    ctx.queue(Some(folder));
                }
                let failure = watch_session(ctx, &mut s, Some(folder), &mut is_mailbox_change);
                if failure.is_none() {
                    s.logout();
                }
                Life::Watched(failure)
            }
        }
    });
}

/// IDLE after IDLE on an examined folder, `on` reading the untagged responses. With a
/// `folder` (IDLE alone), `on` saying "change" queues a sync of it; without (NOTIFY,
/// where `on` queues the syncs itself), an IDLE that `on` or the server ended makes the
/// caller connect again. Returns why the connection failed, or `None` when the daemon
/// stops, the machine slept, or a NOTIFY session is to start anew.
fn watch_session(
    ctx: &AccountCtx,
    s: &mut Session,
    folder: Option<&str>,
    on: &mut dyn FnMut(&Untagged<'_>) -> bool,
) -> Option<String> {
    // Suspend stops the monotonic clock, not the wall clock: a gap between the two says
    // the machine slept, and the connection is likely dead.
    let start = (Instant::now(), SystemTime::now());
    let slept = move || {
        let wall = SystemTime::now().duration_since(start.1).unwrap_or_default();
        wall.saturating_sub(start.0.elapsed()) > Duration::from_secs(30)
    };
    // A second look at the folder list after a deletion was announced, when it is due.
    let relook_due = || lock(&ctx.relook).is_some_and(|t| Instant::now() >= t);
    loop {
        let stop = || ctx.stopper.is_stopped() || slept() || relook_due();
        match s.idle_with(ctx.opts.idle_max, ctx.opts.poll, &stop, on) {
            Ok(true) if folder.is_none() => return None,
            Ok(true) => ctx.queue(folder),
            Ok(false) if ctx.stopper.is_stopped() => return None,
            Ok(false) if relook_due() => {
                *lock(&ctx.relook) = None;
                ctx.queue_hierarchy();
            }
            Ok(false) if slept() => {
                ctx.note(Step::Connect, folder, "the machine slept: connecting again".into());
                ctx.queue(folder);
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

    /// Responses in the forms of RFC 5465's examples, and what the daemon does about them.
    #[test]
    fn notify_responses_ask_for_the_right_sync() {
        let n = |line: &[u8]| match syncmail_imap::parse::parse_response(line).unwrap() {
            syncmail_imap::parse::Response::Untagged(u) => notice(&u),
            r => panic!("{r:?}"),
        };
        assert_eq!(n(b"* STATUS misc (UIDVALIDITY 1 UIDNEXT 999)\r\n"), Some(Notice::Folder("misc".into())));
        assert_eq!(
            n(b"* STATUS \"Entw&APw-rfe\" (MESSAGES 3 UIDNEXT 4 UNSEEN 1)\r\n"),
            Some(Notice::Folder("Entw&APw-rfe".into()))
        );
        assert_eq!(n(b"* 4 EXISTS\r\n"), Some(Notice::Selected));
        assert_eq!(n(b"* 2 EXPUNGE\r\n"), Some(Notice::Selected));
        assert_eq!(n(b"* 1 FETCH (FLAGS (\\Seen))\r\n"), Some(Notice::Selected));
        assert_eq!(
            n(b"* LIST () \"/\" \"NewMailbox\" (\"OLDNAME\" (\"OldMailbox\"))\r\n"),
            Some(Notice::Hierarchy(Some("NewMailbox".into())))
        );
        assert_eq!(n(b"* LIST (\\NonExistent) \".\" \"Gone\"\r\n"), Some(Notice::Hierarchy(None)));
        assert_eq!(n(b"* LIST (\\Subscribed) \".\" \"Lists\"\r\n"), Some(Notice::Hierarchy(Some("Lists".into()))));
        assert_eq!(n(b"* OK [NOTIFICATIONOVERFLOW] ...A0\r\n"), Some(Notice::Overflow));
        assert_eq!(n(b"* OK still here\r\n"), None);
        assert_eq!(n(b"* FLAGS (\\Seen \\Draft)\r\n"), None);
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
