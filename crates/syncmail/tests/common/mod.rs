//! Shared helpers for the integration tests: accounts pointed at a test Dovecot, and a
//! progress receiver that records every event.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use syncmail::{Config, Progress, Store, SyncError, SyncFlags, SyncProgress, SyncReport, SyncRequest};
use syncmail_testkit::Dovecot;

#[derive(Clone, Copy, Debug)]
pub enum Conn {
    Plain,
    StartTls,
    Implicit,
}

/// Writes a config for the test server and returns the account.
pub fn account(dv: &Dovecot, root: &Path, tls: Conn, extra: &str) -> syncmail::AccountConfig {
    let (mode, port) = match tls {
        Conn::Plain => ("none", dv.port_plain),
        Conn::StartTls => ("starttls", dv.port_plain),
        Conn::Implicit => ("implicit", dv.port_tls),
    };
    let text = format!(
        r#"
[accounts.test]
maildir = "{maildir}"
state-dir = "{state}"
[accounts.test.imap]
host = "127.0.0.1"
port = {port}
tls = "{mode}"
user = "test"
password-command = "echo secret"
ca-file = "{ca}"
timeout = 20
{extra}
"#,
        maildir = root.join("mail").display(),
        state = root.join("state").display(),
        ca = dv.ca_file().display(),
    );
    let cfg = Config::parse(&text, &root.join("config.toml")).unwrap();
    cfg.accounts["test"].clone()
}

#[derive(Default)]
pub struct Recorder {
    pub progress: Mutex<Vec<Progress>>,
    pub errors: Mutex<Vec<SyncError>>,
    pub done: Mutex<Vec<SyncReport>>,
}

impl SyncProgress for Recorder {
    fn progress(&self, p: &Progress) {
        self.progress.lock().unwrap().push(p.clone());
    }
    fn error(&self, e: &SyncError) {
        self.errors.lock().unwrap().push(e.clone());
    }
    fn done(&self, r: &SyncReport) {
        self.done.lock().unwrap().push(r.clone());
    }
}

pub const DOWNLOAD: SyncFlags = SyncFlags::DOWNLOAD_HIERARCHY.union(SyncFlags::DOWNLOAD_CONTENTS);

/// One sync; returns the report and what the receiver saw.
pub fn sync(store: &Store, flags: SyncFlags) -> (SyncReport, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let report = store.synchronize_in_background(SyncRequest::new(flags).with_progress(rec.clone())).wait();
    assert_eq!(rec.done.lock().unwrap().len(), 1, "done must be called exactly once");
    (report, rec)
}

/// Asserts a clean sync.
pub fn sync_ok(store: &Store) -> SyncReport {
    let (r, _) = sync(store, DOWNLOAD);
    assert!(r.is_success(), "sync failed: {:#?}", r.errors);
    r
}

/// Asserts that the local store holds exactly the server's messages, with their flags.
pub fn assert_same(dv: &Dovecot, root: &Path) {
    syncmail_testkit::assert_store_matches(dv, &root.join("mail"));
}
