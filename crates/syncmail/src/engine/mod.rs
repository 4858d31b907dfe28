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
pub(crate) mod message;
mod moves;
mod outgoing;
mod placeholder;
pub mod plan;
mod prober;
mod rematch;
mod writer;

pub(crate) use fetch::run as fetch_bodies;
pub(crate) use message::header as message_header;

use crate::api::{CancelToken, ErrorKind, FolderReport, Progress, Step, SyncError, SyncFlags, SyncReport, SyncRequest};
use crate::config::AccountConfig;
use crate::far::{Mailbox, MailboxStatus, Session};
use crate::state::State;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};

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
    /// Journaled steps done so far, for `SyncRequest::interrupt_after`.
    steps: u64,
    /// What the engine is doing on the server, for error messages ("downloading").
    pub op: &'static str,
    /// Asked between folders: whether to stop here and leave the rest for later, because
    /// more urgent work waits (the scheduler's `ON_DEMAND` preemption).
    preempt: &'a dyn Fn() -> bool,
    /// The folders (server names) left undone when the run gave way to `preempt`.
    remaining: Option<Vec<String>>,
    /// The folder in hand gave way to `preempt` between two download batches: its
    /// downloads so far are committed, the rest waits for the resumed run.
    pub preempted: bool,
}

impl Ctx<'_> {
    /// The protocol trace for the session, where the receiver wants one.
    fn trace(&self) -> Option<syncmail_imap::Trace> {
        if !self.req.progress.wants_trace() {
            return None;
        }
        let (progress, account) = (self.req.progress.clone(), self.account.name.clone());
        Some(std::sync::Arc::new(move |line: &str| progress.trace(&account, line)))
    }

    /// Marks the end of a journaled step (a durable change on either side or in the
    /// state). With `interrupt_after`, stops the run dead there, as a kill would.
    pub fn step(&mut self) -> Result<(), SyncError> {
        self.steps += 1;
        match self.req.interrupt_after {
            Some(k) if self.steps >= k => Err(SyncError {
                kind: ErrorKind::Cancelled,
                account: self.account.name.clone(),
                folder: None,
                message: format!("interrupted after step {} (test hook)", self.steps),
                server_text: None,
                hint: "run the sync again".into(),
                retryable: true,
            }),
            _ => Ok(()),
        }
    }

    /// Opens a session to the account's server, saying so.
    fn connect(&self) -> Result<Session, SyncError> {
        self.connect_with(&|_| {})
    }

    /// [`Ctx::connect`], `logged_in` told the secret the server took.
    fn connect_with(&self, logged_in: &dyn Fn(&syncmail_imap::Secret)) -> Result<Session, SyncError> {
        let imap = &self.account.imap;
        self.progress(Step::Connect, format!("connecting to {}:{}", imap.host, imap.port), None, (0, 0), (0, 0));
        Session::open_with(imap, self.trace(), &mut |refresh| crate::far::secret_of(imap, refresh), logged_in)
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
                    let _ = f.set_len(0);
                    let _ = f.rewind();
                    let _ = write!(f, "{}", std::process::id());
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
    preempt: &dyn Fn() -> bool,
) -> (SyncReport, Option<Vec<String>>) {
    let mut ctx = Ctx {
        account,
        req,
        cancel,
        report: SyncReport { account: account.name.clone(), ..Default::default() },
        steps: 0,
        op: "",
        preempt,
        remaining: None,
        preempted: false,
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

fn run_sync(ctx: &mut Ctx<'_>, flags: SyncFlags, outgoing: bool) -> Result<(), SyncError> {
    let account = ctx.account;
    let name = account.name.clone();
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
    // A second connection for the folders' STATUS (see `prober`), where there are
    // contents to sync in more than one folder: as far as can be told before the folder
    // list, two known (a first sync has no marks to compare; the whole account comes
    // down) and not fewer asked for. It connects while this one does and logs in once this
    // one is in, with the secret this one used.
    let several =
        ctx.req.folders.as_ref().is_none_or(|f| f.len() >= 2) && state.folders().is_ok_and(|known| known.len() >= 2);
    let mut prober = (account.imap.connections >= 2
        && filing_session.is_none()
        && flags.intersects(SyncFlags::DOWNLOAD_CONTENTS | SyncFlags::UPLOAD_CONTENTS)
        && several)
        .then(|| prober::Prober::start(&account.imap, ctx.trace()));
    let mut session = match filing_session {
        Some(s) => s,
        None => ctx.connect_with(&|secret| {
            if let Some(p) = &prober {
                p.go(secret);
            }
        })?,
    };

    ctx.progress(Step::ListFolders, "reading the folder list".into(), None, (0, 0), (0, 0));
    let result = sync_folders(ctx, &mut session, &mut state, flags, &mut prober);
    ctx.report.count_traffic(&session);
    if result.is_ok() {
        session.logout();
    }
    // Its last STATUS answered, the prober logged out meanwhile: no connection of this
    // sync outlives it.
    if let Some(p) = prober {
        p.stop();
    }
    result
}

fn sync_folders(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    flags: SyncFlags,
    prober: &mut Option<prober::Prober>,
) -> Result<(), SyncError> {
    let name = ctx.name().to_string();
    let imap_err = |e: &syncmail_imap::Error| errors::from_imap(&name, None, e);
    let local_err = |e: rusqlite::Error| errors::local(&name, None, format!("sync state: {e}"));

    // The folders to sync: from the server's list (hierarchy) or the ones known already.
    // With a prober, the folders' status comes from it: no LIST-STATUS here.
    let mut mailboxes: Vec<Mailbox> = if flags.intersects(SyncFlags::DOWNLOAD_HIERARCHY | SyncFlags::UPLOAD_HIERARCHY) {
        session.list_with(prober.is_none()).map_err(|e| imap_err(&e))?
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
    // The prober pays off from two folders on; with fewer, this connection asks.
    if need_status.len() < 2
        && let Some(p) = prober.as_mut()
    {
        p.dismiss();
    }
    let probing = prober.as_ref().is_some_and(|p| !p.dismissed());
    let mut statuses = if need_status.is_empty() || probing {
        Default::default()
    } else {
        session.status_many(&need_status).map_err(|e| imap_err(&e))?
    };
    if let Some(p) = prober.as_mut().filter(|_| probing) {
        p.ask(need_status);
    }

    let total = mailboxes.len() as u64;
    for (i, mb) in mailboxes.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            ctx.report.cancelled = true;
            return Ok(());
        }
        // Giving way leaves the store as a cancel does (the attic too: what a local move
        // left there is found again by the next run).
        if (ctx.preempt)() {
            ctx.remaining = Some(mailboxes[i..].iter().map(|m| m.far_name.clone()).collect());
            return Ok(());
        }
        if mb.status.is_none()
            && let Some(p) = prober.as_mut().filter(|p| !p.dismissed())
        {
            match p.status(&mb.far_name) {
                Some(Some(r)) => {
                    statuses.insert(mb.far_name.clone(), r);
                }
                Some(None) => {}
                None => {
                    // The prober stopped: this connection asks for the rest.
                    p.dismiss();
                    let rest: Vec<String> =
                        mailboxes[i..].iter().filter(|m| m.status.is_none()).map(|m| m.far_name.clone()).collect();
                    statuses = session.status_many(&rest).map_err(|e| imap_err(&e))?;
                }
            }
        }
        let status: Option<MailboxStatus> = match mb.status.clone() {
            Some(s) => Some(s),
            None => match statuses.remove(&mb.far_name) {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    // Deleted on the server since the list was read: no error; the next
                    // run's hierarchy step follows the deletion.
                    if matches!(e, syncmail_imap::Error::No { .. })
                        && !session.exists(&mb.far_name).map_err(|e| imap_err(&e))?
                    {
                        ctx.progress(
                            Step::CheckFolder,
                            format!(
                                "{} was deleted on the server during this sync; the next sync follows",
                                mb.display_name
                            ),
                            Some(&mb.display_name),
                            (i as u64, total),
                            (0, 0),
                        );
                        continue;
                    }
                    ctx.error(errors::from_imap(&name, Some(&mb.display_name), &e));
                    continue;
                }
                None => None,
            },
        };
        ctx.progress(
            Step::CheckFolder,
            format!("checking {}", mb.display_name),
            Some(&mb.display_name),
            (i as u64, total),
            (0, 0),
        );
        let created_allowed = flags.contains(SyncFlags::DOWNLOAD_HIERARCHY);
        let mode = plan::Mode {
            download: flags.contains(SyncFlags::DOWNLOAD_CONTENTS),
            upload: flags.contains(SyncFlags::UPLOAD_CONTENTS),
        };
        if !mode.download && !mode.upload {
            // Hierarchy only: the folder exists locally now, its contents wait.
            if let Err(folder::FolderError::Folder(e) | folder::FolderError::Fatal(e)) =
                folder::ensure_folder(ctx, state, mb, created_allowed).map(|_| ())
            {
                ctx.error(e);
            }
            continue;
        }
        // A dropped or stalled connection is retried on a new one, with backoff: every step
        // is journaled, so doing the folder again finishes what was cut off.
        let mut attempt = 0u32;
        let mut failed_attempts: Vec<usize> = Vec::new();
        loop {
            let r = folder::sync_folder(
                ctx,
                session,
                state,
                mb,
                status.clone(),
                created_allowed,
                mode,
                trash.as_deref(),
                &mut index,
            );
            match r {
                Ok(Some(r)) => {
                    if r != (FolderReport { folder: r.folder.clone(), ..Default::default() }) {
                        ctx.report.folders.push(r);
                    }
                }
                Ok(None) => {}
                Err(folder::FolderError::Folder(e)) => ctx.error(e),
                Err(folder::FolderError::Fatal(mut e))
                    if e.kind == ErrorKind::Network && attempt < MAX_RETRIES && !ctx.cancel.is_cancelled() =>
                {
                    let wait = backoff(attempt);
                    e.hint = format!(
                        "retrying in {:.1} s on a new connection ({} of {MAX_RETRIES})",
                        wait.as_secs_f64(),
                        attempt + 1
                    );
                    failed_attempts.push(ctx.report.errors.len());
                    ctx.error(e);
                    std::thread::sleep(wait);
                    attempt += 1;
                    ctx.progress(Step::Connect, "connecting again".into(), Some(&mb.display_name), (0, 0), (0, 0));
                    match Session::open_traced(&ctx.account.imap, ctx.trace()) {
                        Ok(s) => {
                            let old = std::mem::replace(session, s);
                            ctx.report.count_traffic(&old);
                        }
                        Err(e) => return Err(errors::from_session(&name, &e)),
                    }
                    continue;
                }
                Err(folder::FolderError::Fatal(e)) => return Err(e),
            }
            break;
        }
        // The folder went through after all: its network errors were recovered from.
        if !failed_attempts.is_empty() && !ctx.report.cancelled {
            for i in failed_attempts.into_iter().rev() {
                let e = ctx.report.errors.remove(i);
                ctx.report.retried.insert(0, e);
            }
        }
        // Gave way in the middle of this folder: it is the first of what remains.
        if ctx.preempted {
            ctx.remaining = Some(mailboxes[i..].iter().map(|m| m.far_name.clone()).collect());
            return Ok(());
        }
    }
    moves::clear_attic(ctx);
    ctx.progress(Step::Finish, "done".into(), None, (total, total), (0, 0));
    Ok(())
}
