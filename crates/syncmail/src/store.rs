//! The local store of one account, and its background synchronization.

use crate::api::{CancelToken, SyncHandle, SyncRequest};
use crate::config::AccountConfig;
use crate::engine;
use crate::outbox::{self, OutboxError, OutboxRow, QueueOptions};
use crate::scheduler::{Scheduler, Status};
use crate::state::State;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}: {source}")]
    Create { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot open the sync state {path}: {source}")]
    State { path: std::path::PathBuf, source: rusqlite::Error },
    #[error("{path} is not a sync state (not an SQLite database); move it away and the next sync starts a new one")]
    NotState { path: std::path::PathBuf },
    #[error("cannot read the sync state {path}: {source}")]
    ReadState { path: std::path::PathBuf, source: std::io::Error },
}

/// An account's local store: its Maildir and its sync state. After the store object
/// that exposes `IMAPISync`.
#[derive(Clone)]
pub struct Store {
    account: Arc<AccountConfig>,
    /// The account's queue and worker, shared by every `Store` of the account.
    scheduler: Arc<Scheduler>,
}

/// Creates the state at `db` where there is none; an existing one is checked to begin as
/// an SQLite database does, no more (see [`Store::open`]).
fn check_state(db: &std::path::Path) -> Result<(), StoreError> {
    use std::io::Read;
    let read_err = |e| StoreError::ReadState { path: db.to_path_buf(), source: e };
    let mut head = Vec::with_capacity(16);
    match std::fs::File::open(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(read_err(e)),
        Ok(f) => {
            f.take(16).read_to_end(&mut head).map_err(read_err)?;
        }
    }
    match head.as_slice() {
        // None yet, or an empty file (SQLite takes one as a new database).
        [] => State::open(db).map(drop).map_err(|e| StoreError::State { path: db.to_path_buf(), source: e }),
        b"SQLite format 3\0" => Ok(()),
        _ => Err(StoreError::NotState { path: db.to_path_buf() }),
    }
}

impl Store {
    /// Opens the store, creating the Maildir root and the state directory if they are
    /// missing, and the state database where there is none. An existing state is only
    /// checked to be an SQLite database here; its schema is brought up to date by the first
    /// sync (or other use) that opens it. Why: a sync's connection to the server starts
    /// after this returns, and opening SQLite (its code read in, its log files made and
    /// removed) took about a millisecond of a nothing-to-do sync's twenty before it
    /// (docs/PERFORMANCE.md, *Session 10*); the sync opens the state anyway, while the
    /// server is still greeting.
    pub fn open(account: AccountConfig) -> Result<Store, StoreError> {
        for p in [&account.maildir, &account.state_dir] {
            std::fs::create_dir_all(p).map_err(|e| StoreError::Create { path: p.clone(), source: e })?;
        }
        let db = account.state_dir.join("state.sqlite");
        check_state(&db)?;
        if account.smtp.is_some() {
            // There from the start, so that a mail reader can save messages into it.
            let dir = outbox::folder(&account);
            dir.create().map_err(|e| StoreError::Create {
                path: dir.path().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        let account = Arc::new(account);
        Ok(Store { scheduler: Scheduler::for_account(&account), account })
    }

    pub fn account(&self) -> &AccountConfig {
        &self.account
    }

    /// Queues a synchronization with the account's scheduler and returns at once.
    /// Progress, errors and the final report go to `request.progress`; the handle waits,
    /// polls or cancels. `ON_DEMAND` requests run before queued background work and
    /// preempt a background run between folders (see [`crate::scheduler`]); a request equal
    /// to a queued one shares its run. After `IMAPISync::SynchronizeInBackground`.
    pub fn synchronize_in_background(&self, request: SyncRequest) -> SyncHandle {
        self.scheduler.submit(&self.account, request)
    }

    /// Where the account's syncs stand: what runs, what waits, the last success and
    /// errors (of the syncs of this process).
    pub fn status(&self) -> Status {
        self.scheduler.status()
    }

    /// Whether a sync of the account runs or waits in the queue.
    pub fn is_busy(&self) -> bool {
        let s = self.scheduler.status();
        s.running.is_some() || !s.queued.is_empty()
    }

    /// Cancels the running sync and everything queued for the account: each caller gets
    /// its `done`, cancelled; the running sync stops at its next step boundary.
    pub fn cancel_all(&self) {
        self.scheduler.cancel_all()
    }

    /// Puts a message in the outbox, to be sent by the next `OUTGOING_MAIL` sync (what a
    /// sendmail program does). Returns once the message and its envelope are durable.
    pub fn queue(&self, message: &[u8], options: &QueueOptions) -> Result<OutboxRow, OutboxError> {
        outbox::queue(&self.account, message, options)
    }

    /// The messages of the outbox with where each is on its way, oldest first; filed ones
    /// (done) included.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, OutboxError> {
        outbox::list(&self.account)
    }

    /// Puts a failed message, or one that may have been sent, back in the queue.
    pub fn retry_outgoing(&self, id: i64) -> Result<OutboxRow, OutboxError> {
        outbox::resolve(&self.account, id, true)
    }

    /// Says that a message that may have been sent was: it is filed, never sent again.
    pub fn confirm_sent(&self, id: i64) -> Result<OutboxRow, OutboxError> {
        outbox::resolve(&self.account, id, false)
    }

    /// Fetches the bodies of placeholders (messages a `HEADERS_ONLY` sync, or the account's
    /// `max-size`, brought down as header and note), on the calling thread: each replaces
    /// its placeholder in place, same file name, same flags. Progress and errors go to
    /// `request.progress` (`done` included); the report counts `bodies_fetched` per folder.
    /// Only `request.progress` (and the test hook `interrupt_after`) are read.
    pub fn fetch_bodies(&self, which: &crate::api::Bodies, request: &SyncRequest) -> crate::api::SyncReport {
        let report = engine::fetch_bodies(&self.account, which, request);
        request.progress.done(&report);
        report
    }

    /// Whether the calling thread works for this account's running sync (its progress
    /// callbacks are called there).
    pub(crate) fn on_worker(&self) -> bool {
        self.scheduler.is_worker()
    }

    /// Runs a synchronization and waits for it: `synchronize_in_background` then wait.
    /// Called from a progress callback of the same account's sync (on the worker thread,
    /// or on a thread of its run: the second connection's), where waiting in the queue
    /// would wait forever, it runs at once on the calling thread instead (and so meets the
    /// account lock).
    pub fn synchronize(&self, request: SyncRequest) -> crate::api::SyncReport {
        if self.on_worker() {
            let report = engine::run(&self.account, &request, &CancelToken::default());
            request.progress.done(&report);
            return report;
        }
        self.synchronize_in_background(request).wait()
    }
}
