//! The engine: one sync of one account, from lock to report.
//!
//! Order of work: take the account lock → connect and log in → learn the folders
//! (LIST, with LIST-STATUS or pipelined STATUS) → for each folder whose mark moved, select
//! it, plan ([`plan`]) and carry out the plan (`folder`). Errors of one folder are reported
//! and the next folder goes on; a broken connection ends the run.

// Errors here are rare and end a folder or a run; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

mod errors;
mod fetch;
mod folder;
mod hierarchy;
mod lanes;
pub(crate) mod message;
mod moves;
mod outgoing;
mod placeholder;
pub mod plan;
mod rematch;
mod writer;

pub(crate) use fetch::run as fetch_bodies;
pub(crate) use message::header as message_header;

use crate::api::{CancelToken, ErrorKind, Progress, Step, SyncError, SyncFlags, SyncReport, SyncRequest};
use crate::config::AccountConfig;
use crate::far::{Mailbox, Session};
use crate::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicU64, Ordering};

/// How often a folder is tried again after a network error, within one run.
const MAX_RETRIES: u32 = 3;

/// 0.5 s, 1 s, 2 s, … with up to 25% jitter, so that many clients do not come back at once.
fn backoff(attempt: u32) -> std::time::Duration {
    let base = 500u64 << attempt.min(6);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let jitter = base * u64::from(nanos % 250) / 1000;
    std::time::Duration::from_millis(base + jitter)
}

/// Reports progress and errors and keeps the report.
pub(crate) struct Ctx<'a> {
    pub account: &'a AccountConfig,
    pub req: &'a SyncRequest,
    pub cancel: &'a CancelToken,
    pub report: SyncReport,
    /// Journaled steps done so far in the run (every lane's), for
    /// `SyncRequest::interrupt_after`.
    steps: &'a AtomicU64,
    /// What the engine is doing on the server, for error messages ("downloading").
    pub op: &'static str,
    /// Asked between folders: whether to stop here and leave the rest for later, because
    /// more urgent work waits (the scheduler's `ON_DEMAND` preemption).
    preempt: &'a (dyn Fn() -> bool + Sync),
    /// The folders (server names) left undone when the run gave way to `preempt`.
    remaining: Option<Vec<String>>,
    /// The folder in hand gave way to `preempt` between two download batches: its
    /// downloads so far are committed, the rest waits for the resumed run.
    pub preempted: bool,
    /// Which connection this context works on: 0 in a run on one connection, 1 or 2 where
    /// folders are synced two at a time (see `lanes`); the second's trace lines say `[2]`.
    lane: u8,
    /// Another lane syncs folders at the same time: a folder whose plan reaches into
    /// other folders is deferred (`folder::FolderError::Deferred`).
    pub concurrent: bool,
}

impl Ctx<'_> {
    /// The protocol trace for the session, where the receiver wants one.
    fn trace(&self) -> Option<syncmail_imap::Trace> {
        if !self.req.progress.wants_trace() {
            return None;
        }
        let (progress, account) = (self.req.progress.clone(), self.account.name.clone());
        if self.lane == 2 {
            return Some(std::sync::Arc::new(move |line: &str| progress.trace(&account, &format!("[2] {line}"))));
        }
        Some(std::sync::Arc::new(move |line: &str| progress.trace(&account, line)))
    }

    /// A context for one lane of this run, reporting to `req`: the run's account, cancel
    /// token, step count and preemption, a report of its own.
    fn lane<'b>(&'b self, req: &'b SyncRequest, lane: u8) -> Ctx<'b> {
        Ctx {
            account: self.account,
            req,
            cancel: self.cancel,
            report: SyncReport { account: self.account.name.clone(), ..Default::default() },
            steps: self.steps,
            op: "",
            preempt: self.preempt,
            remaining: None,
            preempted: false,
            lane,
            concurrent: false,
        }
    }

    /// Marks the end of a journaled step (a durable change on either side or in the
    /// state). With `interrupt_after`, stops the run dead there, as a kill would.
    pub fn step(&mut self) -> Result<(), SyncError> {
        let steps = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        match self.req.interrupt_after {
            Some(k) if steps >= k => Err(SyncError {
                kind: ErrorKind::Cancelled,
                account: self.account.name.clone(),
                folder: None,
                message: format!("interrupted after step {steps} (test hook)"),
                server_text: None,
                hint: "run the sync again".into(),
                retryable: true,
            }),
            _ => Ok(()),
        }
    }

    /// Opens a session to the account's server, saying so.
    fn connect(&self) -> Result<Session, SyncError> {
        self.log_in(None, &|_| {})
    }

    /// Logs in on the connection `connecting` makes (see `run_sync`), or on a new one,
    /// saying so; `logged_in` is told the secret the server took.
    fn log_in(
        &self,
        connecting: Option<Connecting>,
        logged_in: &dyn Fn(&syncmail_imap::Secret),
    ) -> Result<Session, SyncError> {
        let imap = &self.account.imap;
        self.progress(Step::Connect, format!("connecting to {}:{}", imap.host, imap.port), None, (0, 0), (0, 0));
        let client = match connecting.and_then(|t| t.join().ok()) {
            Some(c) => c,
            None => Session::connect(imap, self.trace()),
        };
        client
            .and_then(|c| Session::log_in(c, imap, &mut |refresh| crate::far::secret_of(imap, refresh), logged_in))
            .map_err(|e| errors::from_session(self.name(), &e))
    }

    pub fn progress(&self, step: Step, text: String, folder: Option<&str>, counts: (u64, u64), bytes: (u64, u64)) {
        self.req.progress.progress(&Progress {
            account: self.account.name.clone(),
            step,
            text,
            folder: folder.map(str::to_string),
            index: counts.0,
            max: counts.1,
            bytes: bytes.0,
            bytes_max: bytes.1,
        });
    }

    pub fn error(&mut self, e: SyncError) {
        self.req.progress.error(&e);
        self.report.errors.push(e);
    }

    pub fn name(&self) -> &str {
        &self.account.name
    }

    fn simple_error(&mut self, kind: ErrorKind, folder: Option<&str>, message: String, hint: &str) {
        let e = SyncError {
            kind,
            account: self.account.name.clone(),
            folder: folder.map(str::to_string),
            message,
            server_text: None,
            hint: hint.to_string(),
            retryable: false,
        };
        self.error(e);
    }
}

/// The account lock: an exclusive lock on `<state-dir>/lock`, holding the owner's pid.
pub(crate) struct AccountLock {
    _file: File,
}

/// The width the lock file's pid is padded to with spaces: more than any pid's digits
/// (Linux's largest is 4,194,304), so that each holder's pid covers the last one's.
const PID_WIDTH: usize = 12;

impl AccountLock {
    pub fn take(account: &AccountConfig) -> Result<AccountLock, String> {
        let path = account.state_dir.join("lock");
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // A lock can outlive its holder by a moment (a child process forked elsewhere in
        // the program holds the descriptor until it execs), so a busy lock is tried again
        // for a little while before the holder is named.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match f.try_lock() {
                Ok(()) => {
                    // Written over the last holder's pid, padded to a length of its own, not
                    // truncated first: on a file system mounted with `discard`, freeing the
                    // file's block waited for the disk to discard it (a millisecond, seen in
                    // a nothing-to-do sync's profile). The block stays the file's.
                    let _ = f.rewind();
                    let _ = write!(f, "{:<width$}", std::process::id(), width = PID_WIDTH);
                    return Ok(AccountLock { _file: f });
                }
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = f.rewind();
                    let _ = f.read_to_string(&mut pid);
                    return Err(format!("another sync of this account is running (pid {})", pid.trim()));
                }
                Err(fs::TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
        }
    }
}

/// Runs one sync to the end and returns its report; `done` is the caller's to call.
pub(crate) fn run(account: &AccountConfig, req: &SyncRequest, cancel: &CancelToken) -> SyncReport {
    run_preemptible(account, req, cancel, &|| false).0
}

/// Like [`run`], but asks `preempt` before each folder; when it says yes, the run stops
/// there (the folder in hand is finished, every step journaled) and returns the server
/// names of the folders it did not do, for the caller to run later.
pub(crate) fn run_preemptible(
    account: &AccountConfig,
    req: &SyncRequest,
    cancel: &CancelToken,
    preempt: &(dyn Fn() -> bool + Sync),
) -> (SyncReport, Option<Vec<String>>) {
    let steps = AtomicU64::new(0);
    // The receiver is called one call at a time, whichever connection's thread calls
    // (see `lanes`): the first connection's protocol trace included.
    let req =
        &SyncRequest { progress: std::sync::Arc::new(lanes::OneAtATime::new(req.progress.clone())), ..req.clone() };
    let mut ctx = Ctx {
        account,
        req,
        cancel,
        report: SyncReport { account: account.name.clone(), ..Default::default() },
        steps: &steps,
        op: "",
        preempt,
        remaining: None,
        preempted: false,
        lane: 0,
        concurrent: false,
    };
    let unsupported = req.flags.difference(SyncFlags::IMPLEMENTED);
    for (name, _) in unsupported.iter_names() {
        ctx.simple_error(
            ErrorKind::Unsupported,
            None,
            format!("{name} is not supported by this version of syncmail; nothing was done for it"),
            "leave the flag out of the request; the other flags are carried out",
        );
    }
    let wanted = req.flags.intersection(
        SyncFlags::UPLOAD_HIERARCHY
            | SyncFlags::DOWNLOAD_HIERARCHY
            | SyncFlags::DOWNLOAD_CONTENTS
            | SyncFlags::UPLOAD_CONTENTS,
    );
    let outgoing = req.flags.contains(SyncFlags::OUTGOING_MAIL);
    if wanted.is_empty() && !outgoing {
        return (ctx.report, None);
    }
    if let Err(e) = run_sync(&mut ctx, wanted, outgoing) {
        ctx.error(e);
    }
    (ctx.report, ctx.remaining)
}

thread_local! {
    /// In a thread a run started to help it (a lane, a connection being made): the thread
    /// the run is on.
    static RUN_THREAD: std::cell::Cell<Option<std::thread::ThreadId>> = const { std::cell::Cell::new(None) };
}

/// The thread of the run the calling thread works for: the one a run's helper thread was
/// started from, else the calling thread itself. For the scheduler, a progress callback
/// called from a lane's thread is called on the run's worker (`Store::synchronize` from it
/// runs at once instead of queueing behind the run that waits for it).
pub(crate) fn run_thread() -> std::thread::ThreadId {
    RUN_THREAD.with(|t| t.get()).unwrap_or_else(|| std::thread::current().id())
}

/// `f`, made to run on a helper thread of the calling thread's run (see [`run_thread`]).
pub(crate) fn helping<T>(f: impl FnOnce() -> T) -> impl FnOnce() -> T {
    let run = run_thread();
    move || {
        RUN_THREAD.with(|t| t.set(Some(run)));
        f()
    }
}

/// A connection being made on a thread of its own, up to the server's greeting.
type Connecting = std::thread::JoinHandle<Result<syncmail_imap::Client, crate::far::SessionError>>;

fn run_sync(ctx: &mut Ctx<'_>, flags: SyncFlags, outgoing: bool) -> Result<(), SyncError> {
    let account = ctx.account;
    let name = account.name.clone();
    // The connection is made while the account is locked and its state opened: the
    // server's greeting (a few milliseconds of its work; more with TLS) overlaps them. Not
    // where outgoing mail goes first (its sessions are its own). Nothing secret is sent
    // before the login, which waits for the lock; a connection not used (the lock held
    // elsewhere) is closed when its thread ends.
    let connecting: Option<Connecting> = if outgoing || flags.is_empty() {
        None
    } else {
        let (imap, trace) = (account.imap.clone(), ctx.trace());
        std::thread::Builder::new()
            .name("syncmail-connect".into())
            .spawn(helping(move || Session::connect(&imap, trace)))
            .ok()
    };
    ctx.progress(Step::Lock, "taking the account lock".into(), None, (0, 0), (0, 0));
    fs::create_dir_all(&account.state_dir)
        .map_err(|e| errors::local(&name, None, format!("cannot create {}: {e}", account.state_dir.display())))?;
    let _lock = AccountLock::take(account).map_err(|m| SyncError {
        kind: ErrorKind::Locked,
        account: name.clone(),
        folder: None,
        message: m,
        server_text: None,
        hint: "wait for the other sync to finish, or stop it".into(),
        retryable: true,
    })?;
    fs::create_dir_all(&account.maildir)
        .map_err(|e| errors::local(&name, None, format!("cannot create {}: {e}", account.maildir.display())))?;
    let mut state = State::open(&account.state_dir.join("state.sqlite"))
        .map_err(|e| errors::local(&name, None, format!("cannot open the sync state: {e}")))?;

    // Outgoing mail first: what it files in Sent then comes down with the contents.
    let mut filing_session = None;
    if outgoing {
        outgoing::send_outbox(ctx, &mut state, &mut filing_session)?;
    }
    if flags.is_empty() || ctx.report.cancelled {
        if let Some(s) = filing_session {
            ctx.report.count_traffic(&s);
            s.logout();
        }
        return Ok(());
    }
    // The secret the server took, for a second connection (see `lanes`): no second
    // password command or keyring lookup. Not kept where a second one cannot be used.
    let secret = std::sync::OnceLock::new();
    let wants_second = account.imap.connections >= 2 && filing_session.is_none();
    let mut session = match filing_session {
        Some(s) => s,
        None => ctx.log_in(connecting, &|s| {
            if wants_second {
                let _ = secret.set(s.clone());
            }
        })?,
    };

    ctx.progress(Step::ListFolders, "reading the folder list".into(), None, (0, 0), (0, 0));
    let result = sync_folders(ctx, &mut session, &mut state, flags, secret.into_inner());
    ctx.report.count_traffic(&session);
    // The run's last local work overlaps the logout, each part on a thread of its own: the
    // attic's files removed (where the run finished: their deletions are committed) and
    // the state closed (SQLite copies its log into the database then). A thread that
    // cannot be made drops its work: the state is closed all the same, and the attic is
    // emptied at the start of the next run. The account stays locked until all are done.
    let attic = (result.is_ok() && !ctx.report.cancelled && ctx.remaining.is_none()).then(|| moves::attic_dir(ctx));
    std::thread::scope(|scope| {
        let closing = std::thread::Builder::new().name("syncmail-close".into());
        let _ = closing.spawn_scoped(scope, move || drop(state));
        if let Some(dir) = attic {
            let clearing = std::thread::Builder::new().name("syncmail-attic".into());
            let _ = clearing.spawn_scoped(scope, move || moves::remove_attic(&dir));
        }
        if result.is_ok() {
            session.logout();
        }
    });
    result
}

fn sync_folders(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    flags: SyncFlags,
    secret: Option<syncmail_imap::Secret>,
) -> Result<(), SyncError> {
    let name = ctx.name().to_string();
    let imap_err = |e: &syncmail_imap::Error| errors::from_imap(&name, None, e);
    let local_err = |e: rusqlite::Error| errors::local(&name, None, format!("sync state: {e}"));

    // Which folders changed: asked a few at a time where round trips are cheap (see
    // `lanes::probe`), else with the folder list (LIST-STATUS) or all at once.
    let probing = lanes::probes(session, flags, ctx.account.imap.find_changes);
    // The folders to sync: from the server's list (hierarchy) or the ones known already.
    let mut mailboxes: Vec<Mailbox> = if flags.intersects(SyncFlags::DOWNLOAD_HIERARCHY | SyncFlags::UPLOAD_HIERARCHY) {
        session.list_with(!probing).map_err(|e| imap_err(&e))?
    } else {
        state
            .folders()
            .map_err(local_err)?
            .into_iter()
            .map(|f| Mailbox {
                far_name: f.far_name,
                display_name: f.display_name,
                delimiter: f.delimiter,
                selectable: true,
                attributes: Vec::new(),
                status: None,
            })
            .collect()
    };
    for bad in std::mem::take(&mut session.unusable_names) {
        ctx.error(SyncError {
            kind: ErrorKind::FolderName,
            account: name.clone(),
            folder: Some(bad.clone()),
            message: format!("the server lists a folder whose name is not UTF-8 ({bad:?}); it is skipped"),
            server_text: None,
            hint: "rename the folder on the server; the rest of the account syncs".into(),
            retryable: false,
        });
    }
    hierarchy::sync_hierarchy(ctx, session, state, &mut mailboxes, flags)?;
    moves::clear_attic(ctx);
    moves::recover(ctx, session, state)?;
    let mut index = moves::NearIndex::default();
    index.had_messages = state.has_messages().map_err(local_err)?;
    // The Trash folder for the "trash" deletion policy: special-use, else configured,
    // else one named Trash.
    let trash = mailboxes
        .iter()
        .find(|m| m.attributes.iter().any(|a| a.eq_ignore_ascii_case("\\Trash")))
        .map(|m| m.far_name.clone())
        .or_else(|| ctx.account.trash_folder.clone())
        .or_else(|| {
            mailboxes.iter().find(|m| m.display_name.eq_ignore_ascii_case("Trash")).map(|m| m.far_name.clone())
        });
    // The outbox is local only: a server folder that would share its directory is not
    // synced (its messages would be taken for mail to send).
    let outbox = ctx.account.layout.folder_path(&ctx.account.outbox, Some('/')).ok();
    mailboxes.retain(|m| {
        m.selectable
            && ctx.account.folders.matches(&m.display_name, m.delimiter)
            && folder::near_path_of(ctx.account, m).ok() != outbox
    });
    if ctx.account.folders.subscribed_only {
        let subscribed = session.subscribed().map_err(|e| imap_err(&e))?;
        mailboxes.retain(|m| m.far_name.eq_ignore_ascii_case("INBOX") || subscribed.contains(&m.far_name));
    }
    if let Some(only) = &ctx.req.folders {
        mailboxes.retain(|m| only.iter().any(|o| o == &m.display_name || o == &m.far_name));
    }
    // INBOX first: it is what people look at.
    mailboxes.sort_by_key(|m| (!m.far_name.eq_ignore_ascii_case("INBOX"), m.display_name.clone()));

    let need_status: Vec<String> =
        mailboxes.iter().filter(|m| m.status.is_none()).map(|m| m.far_name.clone()).collect();
    let mut early = None;
    let mut statuses = if need_status.is_empty() {
        Default::default()
    } else if probing {
        let (statuses, e) = lanes::probe(ctx, session, state, &need_status, secret.as_ref())?;
        early = e;
        statuses
    } else {
        session.status_many(&need_status).map_err(|e| imap_err(&e))?
    };
    let total = mailboxes.len() as u64;
    let items: Vec<lanes::Item<'_>> = mailboxes
        .iter()
        .enumerate()
        .map(|(index, mb)| lanes::Item {
            index,
            mailbox: mb,
            status: match &mb.status {
                Some(s) => Some(Ok(s.clone())),
                None => statuses.remove(&mb.far_name),
            },
        })
        .collect();
    let job = lanes::Job { flags, trash: trash.as_deref(), total };
    lanes::sync_contents(ctx, session, state, &mut index, items, &job, secret, early)?;
    if ctx.report.cancelled || ctx.remaining.is_some() {
        return Ok(());
    }
    // The attic is emptied by `run_sync`, while it logs out.
    ctx.progress(Step::Finish, "done".into(), None, (total, total), (0, 0));
    Ok(())
}
