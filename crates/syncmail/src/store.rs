//! The local store of one account, and its background synchronization.

use crate::api::{CancelToken, Shared, SyncHandle, SyncRequest};
use crate::config::AccountConfig;
use crate::engine;
use crate::outbox::{self, OutboxError, OutboxRow, QueueOptions};
use crate::state::State;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create {path}: {source}")]
    Create { path: std::path::PathBuf, source: std::io::Error },
    #[error("cannot open the sync state {path}: {source}")]
    State { path: std::path::PathBuf, source: rusqlite::Error },
}

/// An account's local store: its Maildir and its sync state. After the store object
/// that exposes `IMAPISync`.
#[derive(Clone)]
pub struct Store {
    account: Arc<AccountConfig>,
}

impl Store {
    /// Opens the store, creating the Maildir root and the state directory if they are
    /// missing, and bringing the state database to the current schema.
    pub fn open(account: AccountConfig) -> Result<Store, StoreError> {
        for p in [&account.maildir, &account.state_dir] {
            std::fs::create_dir_all(p).map_err(|e| StoreError::Create { path: p.clone(), source: e })?;
        }
        let db = account.state_dir.join("state.sqlite");
        State::open(&db).map_err(|e| StoreError::State { path: db, source: e })?;
        if account.smtp.is_some() {
            // There from the start, so that a mail reader can save messages into it.
            let dir = outbox::folder(&account);
            dir.create().map_err(|e| StoreError::Create {
                path: dir.path().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
        Ok(Store { account: Arc::new(account) })
    }

    pub fn account(&self) -> &AccountConfig {
        &self.account
    }

    /// Starts a synchronization on its own thread and returns at once. Progress, errors
    /// and the final report go to `request.progress`; the handle waits, polls or cancels.
    /// After `IMAPISync::SynchronizeInBackground`.
    pub fn synchronize_in_background(&self, request: SyncRequest) -> SyncHandle {
        let shared = Arc::new(Shared::default());
        let cancel = CancelToken::default();
        let handle = SyncHandle { shared: shared.clone(), cancel: cancel.clone() };
        let account = self.account.clone();
        let spawned = std::thread::Builder::new().name(format!("sync-{}", account.name)).spawn({
            let request = request.clone();
            let shared = shared.clone();
            move || {
                let report = engine::run(&account, &request, &cancel);
                request.progress.done(&report);
                shared.finish(report);
            }
        });
        if let Err(e) = spawned {
            let mut report = crate::api::SyncReport { account: self.account.name.clone(), ..Default::default() };
            let err = crate::api::SyncError {
                kind: crate::api::ErrorKind::Local,
                account: self.account.name.clone(),
                folder: None,
                message: format!("cannot start the sync thread: {e}"),
                server_text: None,
                hint: "the system is out of threads or memory".into(),
                retryable: true,
            };
            request.progress.error(&err);
            report.errors.push(err);
            request.progress.done(&report);
            shared.finish(report);
        }
        handle
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

    /// Runs a synchronization on the calling thread: `synchronize_in_background` then wait.
    pub fn synchronize(&self, request: SyncRequest) -> crate::api::SyncReport {
        self.synchronize_in_background(request).wait()
    }
}
