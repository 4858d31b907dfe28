//! The public face of the engine, after Outlook's `IMAPISync`: a request with flags and a
//! progress callback goes in, a handle comes out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

bitflags::bitflags! {
    /// What a synchronization does; after `MAPISIB.ulFlags`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SyncFlags: u32 {
        /// Push local folder creations, renames and deletions to the server.
        const UPLOAD_HIERARCHY = 0x0000_0001;
        /// Pull the server's folder list: new server folders appear locally.
        const DOWNLOAD_HIERARCHY = 0x0000_0002;
        /// Push local new messages, flag changes and deletions.
        const UPLOAD_CONTENTS = 0x0000_0040;
        /// Pull the server's new messages, flag changes and expunges.
        const DOWNLOAD_CONTENTS = 0x0000_0080;
        /// Send what waits in the outbox through the transport.
        const OUTGOING_MAIL = 0x0000_0200;
        /// New messages come down as placeholders: their header (and size, flags) and a
        /// note; their bodies on demand ([`crate::Store::fetch_bodies`]).
        const HEADERS_ONLY = 0x0200_0000;
        /// Started by a person: runs before queued background work of the account, and a
        /// background sync in progress gives way to it between folders (then goes on
        /// with the folders it had left). Outgoing mail that waits for its next attempt
        /// after a temporary failure is sent at once.
        const ON_DEMAND = 0x2000_0000;
    }
}

impl SyncFlags {
    /// The flags this version carries out. Any other flag in a request is answered with an
    /// [`ErrorKind::Unsupported`] error, never silently ignored.
    pub const IMPLEMENTED: SyncFlags = SyncFlags::UPLOAD_HIERARCHY
        .union(SyncFlags::DOWNLOAD_HIERARCHY)
        .union(SyncFlags::DOWNLOAD_CONTENTS)
        .union(SyncFlags::UPLOAD_CONTENTS)
        .union(SyncFlags::OUTGOING_MAIL)
        .union(SyncFlags::HEADERS_ONLY)
        .union(SyncFlags::ON_DEMAND);

    /// Parses a flag by its name (`download-contents` or `DOWNLOAD_CONTENTS`).
    pub fn from_flag_name(s: &str) -> Option<SyncFlags> {
        let norm = s.trim().to_ascii_uppercase().replace('-', "_");
        SyncFlags::all().iter_names().find(|(n, _)| *n == norm).map(|(_, f)| f)
    }
}

/// Which step a progress report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Waiting for another sync of the same account.
    Lock,
    Connect,
    /// Reading the server's folder list and status.
    ListFolders,
    /// Comparing one folder's state with the server's.
    CheckFolder,
    /// Downloading new messages; `index`/`max` count messages, `bytes`/`bytes_max` bytes.
    Download,
    /// Applying flag changes and deletions on either side.
    ApplyChanges,
    /// Uploading new local messages; `index`/`max` count messages.
    Upload,
    /// Creating, renaming or deleting folders on one side to follow the other.
    Folders,
    /// Sending the outbox over SMTP and filing sent mail; `index`/`max` count messages.
    Send,
    Finish,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Connect => "connect",
            Step::ListFolders => "list-folders",
            Step::CheckFolder => "check-folder",
            Step::Download => "download",
            Step::ApplyChanges => "apply-changes",
            Step::Upload => "upload",
            Step::Folders => "folders",
            Step::Send => "send",
            Step::Finish => "finish",
        }
    }

    /// The step of a [`Step::name`].
    pub fn from_name(name: &str) -> Option<Step> {
        use Step::*;
        [Lock, Connect, ListFolders, CheckFolder, Download, ApplyChanges, Upload, Folders, Send, Finish]
            .into_iter()
            .find(|s| s.name() == name)
    }
}

/// A progress report: after `Progress(text, index, indexMax)`, with more to say.
#[derive(Debug, Clone)]
pub struct Progress {
    pub account: String,
    pub step: Step,
    /// Human words for the step, such as "downloading 12 new messages".
    pub text: String,
    /// The folder concerned, where there is one (its name as shown to people, UTF-8).
    pub folder: Option<String>,
    pub index: u64,
    pub max: u64,
    pub bytes: u64,
    pub bytes_max: u64,
}

/// What kind of thing went wrong; decides what a caller or a person can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request asked for something this version does not do yet.
    Unsupported,
    /// The configuration is wrong or incomplete.
    Config,
    /// The server cannot be reached, or the connection broke. Retrying later may help.
    Network,
    /// TLS could not be set up (certificate, handshake).
    Tls,
    /// The server refused the credentials.
    Auth,
    /// The server refused a command (NO/BAD) or broke the protocol.
    Server,
    /// The local store (Maildir files, state database) could not be read or written.
    Local,
    /// A folder name that cannot be stored safely.
    FolderName,
    /// The folder's UIDVALIDITY changed; it was left alone.
    UidValidity,
    /// Another sync of the same account is running.
    Locked,
    /// Deletions were held back: too many at once (the mass-deletion guard).
    DeletionsHeld,
    /// A message could not be uploaded (the server refused it); the others went on.
    Message,
    /// An outgoing message was not sent: refused for good (5xx; it stays in the outbox,
    /// `retryable` false), deferred (4xx or network; `retryable` true), or perhaps sent
    /// (the run stopped between handing it over and hearing the answer).
    Send,
    /// The caller cancelled the sync.
    Cancelled,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Config => "config",
            ErrorKind::Network => "network",
            ErrorKind::Tls => "tls",
            ErrorKind::Auth => "auth",
            ErrorKind::Server => "server",
            ErrorKind::Local => "local",
            ErrorKind::FolderName => "folder-name",
            ErrorKind::UidValidity => "uidvalidity",
            ErrorKind::Locked => "locked",
            ErrorKind::DeletionsHeld => "deletions-held",
            ErrorKind::Message => "message",
            ErrorKind::Send => "send",
            ErrorKind::Cancelled => "cancelled",
        }
    }

    /// The kind of an [`ErrorKind::name`].
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        use ErrorKind::*;
        [
            Unsupported,
            Config,
            Network,
            Tls,
            Auth,
            Server,
            Local,
            FolderName,
            UidValidity,
            Locked,
            DeletionsHeld,
            Message,
            Send,
            Cancelled,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// An error or warning met during a sync: after `Error(hr, text)`, with what a person
/// needs to act on it.
#[derive(Debug, Clone)]
pub struct SyncError {
    pub kind: ErrorKind,
    pub account: String,
    pub folder: Option<String>,
    /// What failed, in a sentence.
    pub message: String,
    /// The server's own words, verbatim, where the server said something.
    pub server_text: Option<String>,
    /// What to do about it.
    pub hint: String,
    /// Whether trying again later may succeed without anyone changing anything.
    pub retryable: bool,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.account)?;
        if let Some(folder) = &self.folder {
            write!(f, "/{folder}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What changed in one folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderReport {
    pub folder: String,
    /// Messages that arrived from the server.
    pub downloaded: u64,
    pub bytes_downloaded: u64,
    /// Local messages whose flags changed to follow the server.
    pub flags_changed: u64,
    /// Local messages deleted because the server expunged them.
    pub deleted: u64,
    /// Local messages uploaded to the server.
    pub uploaded: u64,
    /// Server messages whose flags changed to follow the local ones.
    pub far_flags_changed: u64,
    /// Server messages deleted (by the deletion policy) because they were deleted locally.
    pub far_deleted: u64,
    /// Deletions held back by the mass-deletion guard.
    pub held_deletions: u64,
    /// Whether the folder was created locally in this run.
    pub created: bool,
    /// New server messages that were already here in another folder (moved or copied on
    /// the server): taken from the local copy, not downloaded.
    pub moved_in: u64,
    /// Messages moved here from another folder locally: moved on the server too (UID
    /// MOVE), not uploaded again.
    pub moved_on_server: u64,
    /// Of the messages downloaded, those stored as placeholders (header only: the run asked
    /// for `HEADERS_ONLY`, or they are larger than the account's `max-size`).
    pub placeholders: u64,
    /// Placeholders whose body was fetched ([`crate::Store::fetch_bodies`]), replacing them
    /// in place.
    pub bodies_fetched: u64,
}

/// Which placeholders' bodies to fetch (see [`crate::Store::fetch_bodies`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bodies {
    /// These UIDs of one folder (its name as shown to people, or the server's name).
    Uids { folder: String, uids: Vec<u32> },
    /// Every placeholder of the account whose message has this Message-ID (with or
    /// without the angle brackets).
    MessageId(String),
    /// Every placeholder of one folder, or of the account (`None`).
    All { folder: Option<String> },
}

/// Which side a change was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The Maildir.
    Local,
    /// The IMAP server.
    Server,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Server => "server",
        }
    }
}

/// A folder created, renamed or deleted on `side` to follow the other side. Names are
/// the UTF-8 names shown to people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderChange {
    Created { side: Side, folder: String },
    Renamed { side: Side, from: String, to: String },
    Deleted { side: Side, folder: String },
}

impl std::fmt::Display for FolderChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FolderChange::Created { side, folder } => write!(f, "created {folder} ({} side)", side.name()),
            FolderChange::Renamed { side, from, to } => write!(f, "renamed {from} to {to} ({} side)", side.name()),
            FolderChange::Deleted { side, folder } => write!(f, "deleted {folder} ({} side)", side.name()),
        }
    }
}

/// The outcome of a sync: after `Done(hr)`, with a report of what changed.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub account: String,
    /// Folders where something changed, in the order synced.
    pub folders: Vec<FolderReport>,
    /// Folders created, renamed or deleted to follow the other side, in order.
    pub hierarchy: Vec<FolderChange>,
    /// Every error reported through [`SyncProgress::error`], in order, except those below.
    pub errors: Vec<SyncError>,
    /// Network errors that were reported, then recovered from by a retry within the run.
    pub retried: Vec<SyncError>,
    pub cancelled: bool,
    /// Bytes received from the server (after TLS, before inflating), protocol included.
    pub bytes_received: u64,
    /// What the part of `bytes_received` that came compressed (COMPRESS=DEFLATE, from
    /// the sessions that used it) inflated to; 0 when no session was compressed.
    pub bytes_inflated: u64,
    /// Outgoing messages the SMTP server accepted in this run.
    pub sent: u64,
    /// Sent messages filed in the Sent folder in this run.
    pub filed: u64,
}

impl SyncReport {
    /// Adds what `session` received to the byte counts.
    pub(crate) fn count_traffic(&mut self, session: &crate::far::Session) {
        self.bytes_received += session.bytes_read();
        self.bytes_inflated += session.compress_stats().map_or(0, |c| c.received);
    }
    /// True when no error was reported and the sync was not cancelled.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && !self.cancelled
    }
    pub fn downloaded(&self) -> u64 {
        self.folders.iter().map(|f| f.downloaded).sum()
    }
    pub fn uploaded(&self) -> u64 {
        self.folders.iter().map(|f| f.uploaded).sum()
    }
}

/// Receives what a sync is doing. Calls come one at a time, in order, from the sync's own
/// thread or, where it syncs folders on two connections, from either of its two; keep them
/// short (hand work to another thread if it is slow): the other connection's calls wait.
/// After `IMAPISyncProgressCallback`.
pub trait SyncProgress: Send + Sync {
    /// Called as the sync moves on; may be called often.
    fn progress(&self, _p: &Progress) {}
    /// Called for every error or warning; the sync goes on with what it can still do.
    fn error(&self, _e: &SyncError) {}
    /// Called once, last.
    fn done(&self, _r: &SyncReport) {}
    /// Whether [`SyncProgress::trace`] should receive the IMAP protocol (off by default:
    /// it costs a line per command and response).
    fn wants_trace(&self) -> bool {
        false
    }
    /// One line of the IMAP protocol of `account`: `C: …` sent, `S: …` received.
    /// Credentials never appear in it.
    fn trace(&self, _account: &str, _line: &str) {}
}

/// A progress receiver that ignores everything.
pub struct NoProgress;
impl SyncProgress for NoProgress {}

/// What to synchronize, and whom to tell.
#[derive(Clone)]
pub struct SyncRequest {
    pub flags: SyncFlags,
    /// Limit the sync to these folders (server names in UTF-8); `None` for all.
    pub folders: Option<Vec<String>>,
    pub progress: Arc<dyn SyncProgress>,
    /// Carry out deletions even where the mass-deletion guard would hold them back: the
    /// person has seen the `deletions-held` error and confirms.
    pub confirm_deletions: bool,
    /// For crash tests: stop dead after this many journaled steps, as a kill would, and
    /// report an `interrupted` error. Not for production use.
    #[doc(hidden)]
    pub interrupt_after: Option<u64>,
}

impl SyncRequest {
    pub fn new(flags: SyncFlags) -> SyncRequest {
        SyncRequest {
            flags,
            folders: None,
            progress: Arc::new(NoProgress),
            confirm_deletions: false,
            interrupt_after: None,
        }
    }
    pub fn with_progress(mut self, p: Arc<dyn SyncProgress>) -> SyncRequest {
        self.progress = p;
        self
    }
    pub fn with_folders(mut self, folders: Vec<String>) -> SyncRequest {
        self.folders = Some(folders);
        self
    }
}

/// A flag the engine checks between steps.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    /// For work shared by several requests (merged duplicates): cancelled too once every
    /// member is, so that one caller cancelling does not stop the others' sync.
    all_of: Option<Arc<Mutex<Vec<CancelToken>>>>,
}

impl CancelToken {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
            || self.all_of.as_ref().is_some_and(|g| {
                let g = g.lock().unwrap_or_else(|p| p.into_inner());
                !g.is_empty() && g.iter().all(CancelToken::is_cancelled)
            })
    }
    /// A token cancelled by [`CancelToken::cancel`] or once all of `members` are (members
    /// may be added later).
    pub(crate) fn all_of(members: Arc<Mutex<Vec<CancelToken>>>) -> CancelToken {
        CancelToken { flag: Arc::default(), all_of: Some(members) }
    }
}

#[derive(Default)]
pub(crate) struct Shared {
    state: Mutex<SharedState>,
    cond: Condvar,
}

#[derive(Default)]
struct SharedState {
    report: Option<SyncReport>,
    wakers: Vec<Waker>,
}

impl Shared {
    pub(crate) fn finish(&self, report: SyncReport) {
        let wakers = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.report = Some(report);
            std::mem::take(&mut s.wakers)
        };
        self.cond.notify_all();
        for w in wakers {
            w.wake();
        }
    }
}

/// A running sync: wait on it (blocking or `.await`), poll it, or cancel it.
/// After `phSyncDoneEvent`. Dropping the handle does not stop the sync.
pub struct SyncHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cancel: CancelToken,
    /// Tells the scheduler at once, so that a request still queued ends without waiting
    /// for its turn.
    pub(crate) on_cancel: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl SyncHandle {
    /// Blocks until the sync is done and returns its report.
    pub fn wait(&self) -> SyncReport {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = &s.report {
                return r.clone();
            }
            s = self.shared.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The report if the sync is done, without blocking.
    pub fn try_report(&self) -> Option<SyncReport> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).report.clone()
    }

    pub fn is_done(&self) -> bool {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).report.is_some()
    }

    /// Asks the sync to stop at the next step boundary. What was done stays done and
    /// consistent; the report says `cancelled`. A request still queued, or sharing its run
    /// with other callers' equal requests, ends at once for this caller.
    pub fn cancel(&self) {
        self.cancel.cancel();
        if let Some(f) = &self.on_cancel {
            f();
        }
    }

    /// A token that cancels this sync, for a progress receiver or another thread to hold
    /// (through it, a queued request ends when its turn comes).
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }
}

impl Future for SyncHandle {
    type Output = SyncReport;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SyncReport> {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        match &s.report {
            Some(r) => Poll::Ready(r.clone()),
            None => {
                if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_follow_mapisib() {
        assert_eq!(SyncFlags::UPLOAD_HIERARCHY.bits(), 0x1);
        assert_eq!(SyncFlags::DOWNLOAD_HIERARCHY.bits(), 0x2);
        assert_eq!(SyncFlags::UPLOAD_CONTENTS.bits(), 0x40);
        assert_eq!(SyncFlags::DOWNLOAD_CONTENTS.bits(), 0x80);
        assert_eq!(SyncFlags::OUTGOING_MAIL.bits(), 0x200);
        assert_eq!(SyncFlags::HEADERS_ONLY.bits(), 0x0200_0000);
        assert_eq!(SyncFlags::ON_DEMAND.bits(), 0x2000_0000);
        assert_eq!(SyncFlags::from_flag_name("download-contents"), Some(SyncFlags::DOWNLOAD_CONTENTS));
        assert_eq!(SyncFlags::from_flag_name("HEADERS_ONLY"), Some(SyncFlags::HEADERS_ONLY));
        assert_eq!(SyncFlags::from_flag_name("nope"), None);
    }

    #[test]
    fn handle_waits_polls_and_awaits() {
        let shared = Arc::new(Shared::default());
        let h = SyncHandle { shared: shared.clone(), cancel: CancelToken::default(), on_cancel: None };
        assert!(!h.is_done());
        assert!(h.try_report().is_none());
        let s2 = shared.clone();
        let t = std::thread::spawn(move || {
            s2.finish(SyncReport { account: "a".into(), ..Default::default() });
        });
        assert_eq!(h.wait().account, "a");
        t.join().unwrap();
        assert!(h.is_done());
        // The Future side, driven by a minimal executor.
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut h = h;
        match Pin::new(&mut h).poll(&mut cx) {
            Poll::Ready(r) => assert_eq!(r.account, "a"),
            Poll::Pending => panic!("a finished handle must be ready"),
        }
    }
}
