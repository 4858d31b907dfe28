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

/// Writes a config for the test server and returns the account; `extra` goes at the end
/// (in the `[imap]` table, or tables of its own).
pub fn account(dv: &Dovecot, root: &Path, tls: Conn, extra: &str) -> syncmail::AccountConfig {
    account_with(dv, root, tls, "", extra)
}

/// Like [`account`], with keys for the `[accounts.test]` table itself.
pub fn account_with(dv: &Dovecot, root: &Path, tls: Conn, account_keys: &str, extra: &str) -> syncmail::AccountConfig {
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
{account_keys}
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

/// An account (`c`) on the test Cyrus, over plain TCP; `extra` goes at the end of its
/// `[imap]` table.
pub fn cyrus_account(cy: &syncmail_testkit::cyrus::Cyrus, root: &Path, extra: &str) -> syncmail::AccountConfig {
    let text = format!(
        "[accounts.c]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.c.imap]\nhost = \"127.0.0.1\"\nport = {}\n\
         tls = \"none\"\nuser = \"test\"\npassword = \"secret\"\ntimeout = 20\n{extra}\n",
        root.join("mail").display(),
        root.join("state").display(),
        cy.port
    );
    let cfg = Config::parse(&text, &root.join("config.toml")).unwrap();
    cfg.accounts["c"].clone()
}

#[derive(Default)]
pub struct Recorder {
    pub progress: Mutex<Vec<Progress>>,
    pub errors: Mutex<Vec<SyncError>>,
    pub done: Mutex<Vec<SyncReport>>,
}

/// Set `SYNCMAIL_TEST_TRACE=1` to have every [`Recorder`] print what it hears, with the
/// IMAP protocol, to stderr (shown for a failing test): for chasing a test that fails
/// now and then.
fn tracing() -> bool {
    std::env::var_os("SYNCMAIL_TEST_TRACE").is_some()
}

fn say(what: std::fmt::Arguments) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    eprintln!("{}.{:03} {what}", t.as_secs() % 1000, t.subsec_millis());
}

impl SyncProgress for Recorder {
    fn progress(&self, p: &Progress) {
        if tracing() {
            say(format_args!("progress: {}", p.text));
        }
        self.progress.lock().unwrap().push(p.clone());
    }
    fn error(&self, e: &SyncError) {
        if tracing() {
            say(format_args!("error: {e:?}"));
        }
        self.errors.lock().unwrap().push(e.clone());
    }
    fn wants_trace(&self) -> bool {
        tracing()
    }
    fn trace(&self, account: &str, line: &str) {
        say(format_args!("{account}: {line}"));
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

pub const TWO_WAY: SyncFlags =
    SyncFlags::DOWNLOAD_HIERARCHY.union(SyncFlags::DOWNLOAD_CONTENTS).union(SyncFlags::UPLOAD_CONTENTS);

/// A local folder of the store (`INBOX`, or a server name with `.` separators).
pub fn near_folder(root: &Path, folder: &str) -> syncmail_maildir::Folder {
    let rel: std::path::PathBuf = if folder == "INBOX" { "INBOX".into() } else { folder.split('.').collect() };
    syncmail_maildir::Folder::new(root.join("mail").join(rel))
}

/// Delivers a message into a local folder as a mail reader or MDA would: tmp/, then new/
/// (no flags) or cur/.
pub fn near_add(root: &Path, folder: &str, subject: &str, flags: syncmail_imap::Flags) {
    let f = near_folder(root, folder);
    let data = syncmail_testkit::message(subject, &format!("body of {subject}"));
    let data = syncmail_maildir::crlf_to_lf(&data);
    let staged = f.stage(&format!("local-{}", subject.replace(' ', "_")), &data).unwrap();
    f.publish(staged, flags).unwrap();
}

/// The local entry holding the message with this subject.
pub fn near_find(root: &Path, folder: &str, subject: &str) -> Option<syncmail_maildir::Entry> {
    let f = near_folder(root, folder);
    let needle = format!("Subject: {subject}\n");
    f.scan().unwrap().into_values().find(|e| {
        let data = f.read(e).unwrap();
        data.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

pub fn near_set_flags(root: &Path, folder: &str, subject: &str, flags: syncmail_imap::Flags) {
    let e = near_find(root, folder, subject).unwrap_or_else(|| panic!("no local {subject:?}"));
    near_folder(root, folder).set_flags(&e, flags).unwrap();
}

pub fn near_delete(root: &Path, folder: &str, subject: &str) {
    let e = near_find(root, folder, subject).unwrap_or_else(|| panic!("no local {subject:?}"));
    near_folder(root, folder).remove(&e).unwrap();
}

/// The server's UID of the message with this subject.
pub fn far_uid(dv: &Dovecot, folder: &str, subject: &str) -> u32 {
    let uids = far_uids_with(dv, folder, "subject", subject);
    assert_eq!(uids.len(), 1, "{subject:?} on the server: {uids:?}");
    uids[0]
}

/// The server's UIDs of the messages in `folder` whose `header` contains `value`.
pub fn far_uids_with(dv: &Dovecot, folder: &str, header: &str, value: &str) -> Vec<u32> {
    let out = dv.doveadm(&["search", "mailbox", folder, "header", header, value]);
    out.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
}

/// Subject → flags of every message in a folder, on each side; panics on a duplicate.
pub fn by_subject(
    msgs: &[(Vec<u8>, syncmail_imap::Flags)],
) -> std::collections::BTreeMap<String, syncmail_imap::Flags> {
    let mut out = std::collections::BTreeMap::new();
    for (data, flags) in msgs {
        let text = String::from_utf8_lossy(data);
        let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string();
        assert!(out.insert(subject.clone(), *flags).is_none(), "duplicate message {subject:?}");
    }
    out
}

/// Both sides of one folder, by subject.
pub type Sides = (
    std::collections::BTreeMap<String, syncmail_imap::Flags>,
    std::collections::BTreeMap<String, syncmail_imap::Flags>,
);

pub fn both_sides(dv: &Dovecot, root: &Path, folder: &str) -> Sides {
    let server = dv.server_messages();
    let far = by_subject(server.get(folder).map(Vec::as_slice).unwrap_or(&[]));
    let rel: std::path::PathBuf = if folder == "INBOX" { "INBOX".into() } else { folder.split('.').collect() };
    let near = by_subject(&syncmail_testkit::read_maildir(&root.join("mail").join(rel)));
    (far, near)
}

/// One two-way sync that must succeed.
pub fn sync2(store: &Store) -> SyncReport {
    let (r, _) = sync(store, TWO_WAY);
    assert!(r.is_success(), "sync failed: {:#?}", r.errors);
    r
}

/// Runs the scenario `setup` builds, interrupted after step k, for every k, then resumed
/// with `flags`: each time `check` must hold (the same end state as an uninterrupted run,
/// nothing lost, nothing twice), and one more run must find nothing to do. Returns the
/// number of steps.
pub fn interrupted_at_every_step(
    opts: syncmail_testkit::Options,
    flags: SyncFlags,
    setup: &dyn Fn(&mut Dovecot, &Path) -> Store,
    check: &dyn Fn(&Dovecot, &Path, &str),
    min_steps: u64,
) -> u64 {
    let mut k = 1;
    loop {
        let mut dv = Dovecot::start(opts.clone());
        let tmp = tempfile::tempdir().unwrap();
        let store = setup(&mut dv, tmp.path());
        let mut req = SyncRequest::new(flags);
        req.interrupt_after = Some(k);
        let r = store.synchronize(req);
        let interrupted = r.errors.iter().any(|e| e.kind == syncmail::ErrorKind::Cancelled);
        assert!(interrupted || r.is_success(), "step {k}: {:#?}", r.errors);
        let (resumed, _) = sync(&store, flags);
        assert!(resumed.is_success(), "step {k}: the resumed sync failed: {:#?}", resumed.errors);
        check(&dv, tmp.path(), &format!("interrupted after step {k}, then resumed"));
        // The state agrees too: one more run finds nothing to do.
        let (again, _) = sync(&store, flags);
        assert!(again.is_success() && again.hierarchy.is_empty(), "step {k}: {:#?}", again);
        let work: u64 = again
            .folders
            .iter()
            .map(|f| f.downloaded + f.uploaded + f.flags_changed + f.far_flags_changed + f.deleted + f.far_deleted)
            .sum();
        assert_eq!(work, 0, "step {k}: a run after the resume still had work: {:#?}", again.folders);
        if !interrupted {
            assert!(k > min_steps, "the scenario has only {k} steps: the hook is not reached");
            eprintln!("interrupted and resumed at each of {} steps", k - 1);
            return k;
        }
        k += 1;
    }
}

/// Sets the mtimes of a local folder's `cur/` and `new/` a minute back, as if its last
/// change were long past: a quiet run then records them (it ignores mtimes under 2 s old,
/// which a change in the same clock tick could hide behind).
pub fn age_folder(root: &Path, folder: &str) {
    let f = near_folder(root, folder);
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for sub in ["cur", "new"] {
        std::fs::File::open(f.path().join(sub)).unwrap().set_modified(then).unwrap();
    }
}

/// Records the `-v` protocol trace besides what [`Recorder`] records.
#[derive(Default)]
pub struct Traced {
    pub rec: Recorder,
    pub lines: Mutex<Vec<String>>,
}

impl SyncProgress for Traced {
    fn progress(&self, p: &Progress) {
        self.rec.progress(p);
    }
    fn error(&self, e: &SyncError) {
        self.rec.error(e);
    }
    fn done(&self, r: &SyncReport) {
        self.rec.done(r);
    }
    fn wants_trace(&self) -> bool {
        true
    }
    fn trace(&self, _account: &str, line: &str) {
        self.lines.lock().unwrap().push(line.to_string());
    }
}

/// One traced sync that must succeed; returns the report and the trace.
pub fn traced_sync(store: &Store, flags: SyncFlags) -> (SyncReport, Vec<String>) {
    let t = Arc::new(Traced::default());
    let r = store.synchronize_in_background(SyncRequest::new(flags).with_progress(t.clone())).wait();
    assert!(r.is_success(), "sync failed: {:#?}", r.errors);
    let lines = t.lines.lock().unwrap().clone();
    (r, lines)
}
