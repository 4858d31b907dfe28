//! syncmail: an offline mail store that keeps itself in sync with IMAP servers in the
//! background and tells its caller exactly what it is doing.
//!
//! The model is Outlook's `IMAPISync`: a [`Store`] (the local store of one account)
//! exposes [`Store::synchronize_in_background`], which takes a [`SyncRequest`] (what to do,
//! as [`SyncFlags`], and a [`SyncProgress`] receiver) and returns a [`SyncHandle`] to wait
//! on, poll or cancel.
//!
//! ```no_run
//! use std::sync::Arc;
//! use syncmail::{Config, Store, SyncFlags, SyncProgress, SyncRequest, Progress, SyncError, SyncReport};
//!
//! struct Print;
//! impl SyncProgress for Print {
//!     fn progress(&self, p: &Progress) { println!("{} {}/{}", p.text, p.index, p.max); }
//!     fn error(&self, e: &SyncError) { eprintln!("{e}: {}", e.hint); }
//!     fn done(&self, r: &SyncReport) { println!("{} new messages", r.downloaded()); }
//! }
//!
//! let config = Config::load(&syncmail::config::default_config_path())?;
//! let account = config.select(&[])?.remove(0);
//! let store = Store::open(account)?;
//! let handle = store.synchronize_in_background(
//!     SyncRequest::new(SyncFlags::DOWNLOAD_HIERARCHY | SyncFlags::DOWNLOAD_CONTENTS)
//!         .with_progress(Arc::new(Print)),
//! );
//! let report = handle.wait();
//! assert!(report.is_success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`api`]: the request, the flags, the progress trait, the handle.
//! - [`store`]: the local store of an account.
//! - [`daemon`]: background sync of accounts (periodic, IDLE, local changes), for
//!   `syncmail daemon`.
//! - [`scheduler`]: one worker per account, a priority queue of sync requests.
//! - `engine`: one sync of one account; `engine::plan` decides (pure, table-tested), the
//!   rest of the engine carries the plan out with every step journaled.
//! - [`far`]: the server side of a sync over IMAP.
//! - [`outbox`]: outgoing mail waiting to be sent; `engine::outgoing` sends it over SMTP.
//! - [`state`]: the sync state in SQLite.
//! - [`config`]: the TOML configuration.
//!
//! The Maildir side is the `syncmail-maildir` crate, the IMAP protocol `syncmail-imap`.

pub mod api;
pub mod config;
pub mod daemon;
mod engine;
pub mod far;
pub mod outbox;
pub mod scheduler;
pub mod state;
pub mod store;
mod watch;

pub use api::{
    Bodies, CancelToken, ErrorKind, FolderChange, FolderReport, NoProgress, Progress, Side, Step, SyncError, SyncFlags,
    SyncHandle, SyncProgress, SyncReport, SyncRequest,
};
pub use config::{AccountConfig, Config, ConfigError};
pub use engine::plan;
pub use outbox::{OutState, OutboxError, OutboxRow, QueueOptions};
pub use scheduler::{JobInfo, Status};
pub use store::{Store, StoreError};

/// Locks `m`, going on with what it holds where a thread panicked holding it (one
/// panicking callback is not to stop every other thread that shares the value).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
