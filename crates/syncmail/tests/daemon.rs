//! The daemon against a real Dovecot: mail delivered on the server arrives through IDLE
//! within seconds; a server restart is followed by a reconnect; a local change is
//! uploaded without waiting for the periodic sync; a shutdown mid-sync leaves a store
//! that the next sync completes, nothing lost or twice.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Conn, Recorder, account, assert_same, near_add, near_find};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmail::daemon::{Daemon, DaemonOptions};
use syncmail::{ErrorKind, Store};
use syncmail_testkit::{Dovecot, Options};

fn fast() -> DaemonOptions {
    DaemonOptions {
        poll: Duration::from_millis(100),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        debounce: Duration::from_millis(300),
        ..Default::default()
    }
}

/// Waits up to `secs` for `cond`; panics with `what` if it never holds.
fn within(secs: u64, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the daemon on a fresh store of `acc` and waits for its first sync.
fn run(acc: syncmail::AccountConfig) -> (Daemon, Store, Arc<Recorder>) {
    run_with(acc, fast())
}

/// [`run`] with these options.
fn run_with(acc: syncmail::AccountConfig, opts: DaemonOptions) -> (Daemon, Store, Arc<Recorder>) {
    let store = Store::open(acc).unwrap();
    let rec = Arc::new(Recorder::default());
    let daemon = Daemon::start(vec![store.clone()], rec.clone(), opts);
    within(10, "the first sync", || !rec.done.lock().unwrap().is_empty() && !store.is_busy());
    (daemon, store, rec)
}

/// Starts the daemon on a fresh store and waits for its first sync and for IDLE.
fn start(dv: &Dovecot, root: &Path) -> (Daemon, Store, Arc<Recorder>) {
    let (daemon, store, rec) = run(account(dv, root, Conn::Plain, ""));
    within(10, "IDLE on INBOX", || watching(&rec) >= 1);
    (daemon, store, rec)
}

fn watching(rec: &Recorder) -> usize {
    rec.progress.lock().unwrap().iter().filter(|p| p.text == "watching INBOX with IDLE").count()
}

#[test]
fn mail_delivered_on_the_server_arrives_through_idle() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, _store, rec) = start(&dv, tmp.path());
    dv.save("INBOX", &syncmail_testkit::message("pushed", "arrives by IDLE"));
    // The periodic sync is 300 s away: only IDLE can bring it this soon.
    within(10, "the delivered message locally", || near_find(tmp.path(), "INBOX", "pushed").is_some());
    daemon.shutdown();
    assert!(rec.errors.lock().unwrap().is_empty(), "{:#?}", rec.errors.lock().unwrap());
    assert_same(&dv, tmp.path());
}

#[test]
fn dropping_the_daemon_stops_it_like_a_shutdown() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, store, rec) = start(&dv, tmp.path());
    within(5, "the IDLE connection alone", || dv.imap_connections() == 1);
    drop(daemon);
    // Its threads are gone: the IDLE connection closed, no sync running or to come.
    within(5, "no connection on the server", || dv.imap_connections() == 0);
    assert!(!store.is_busy());
    dv.save("INBOX", &syncmail_testkit::message("after the drop", "no daemon to bring it"));
    // A running daemon brings it by IDLE well within this (the test above: about 0.1 s).
    std::thread::sleep(Duration::from_secs(2));
    assert!(near_find(tmp.path(), "INBOX", "after the drop").is_none(), "a sync ran after the daemon was dropped");
    assert!(rec.errors.lock().unwrap().is_empty(), "{:#?}", rec.errors.lock().unwrap());
}

/// A receiver that drops the daemon from one of its callbacks: at the first download of a
/// sync (on the account's worker thread), or at the first lost connection (on the
/// watcher's own thread). `dropped` says the drop returned.
struct DropsDaemon {
    daemon: std::sync::Mutex<Option<Daemon>>,
    on_lost_connection: bool,
    dropped: std::sync::atomic::AtomicBool,
}

impl DropsDaemon {
    fn drop_it(&self) {
        // Taken out first: the drop waits for threads that may call here meanwhile.
        let daemon = self.daemon.lock().unwrap().take();
        if daemon.is_some() {
            drop(daemon);
            self.dropped.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl syncmail::SyncProgress for DropsDaemon {
    fn progress(&self, p: &syncmail::Progress) {
        if p.step == syncmail::Step::Download && !self.on_lost_connection {
            self.drop_it();
        }
    }
    fn error(&self, e: &syncmail::SyncError) {
        if e.kind == ErrorKind::Network && self.on_lost_connection {
            self.drop_it();
        }
    }
}

#[test]
fn dropping_the_daemon_from_its_own_callbacks_returns() {
    for on_lost_connection in [false, true] {
        let mut dv = Dovecot::start(Options::default());
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
        let rec = Arc::new(DropsDaemon {
            daemon: std::sync::Mutex::new(None),
            on_lost_connection,
            dropped: Default::default(),
        });
        let daemon = Daemon::start(vec![store.clone()], rec.clone(), fast());
        within(10, "the first sync", || !store.is_busy() && dv.imap_connections() == 1);
        *rec.daemon.lock().unwrap() = Some(daemon);
        if on_lost_connection {
            dv.stop(); // the IDLE watcher reports the lost connection from its thread
        } else {
            dv.save("INBOX", &syncmail_testkit::message("brought by IDLE", "downloaded by the worker"));
        }
        // Before, the drop waited for the thread it was called on: forever.
        within(15, "the drop returned", || rec.dropped.load(std::sync::atomic::Ordering::SeqCst));
        within(10, "the sync it interrupted ended", || !store.is_busy());
    }
}

#[test]
fn folders_of_the_idle_setting_are_watched_and_a_missing_one_is_reported_once() {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", "Lists"]);
    let tmp = tempfile::tempdir().unwrap();
    let acc = common::account_with(&dv, tmp.path(), Conn::Plain, "idle = [\"Lists\", \"Nowhere\"]", "");
    let (daemon, store, rec) = run(acc);
    within(10, "IDLE on Lists", || noted(&rec, "watching Lists with IDLE"));
    dv.save("Lists", &syncmail_testkit::message("list mail", "pushed too"));
    within(10, "the message in Lists", || near_find(tmp.path(), "Lists", "list mail").is_some());
    // The missing folder: one error that says so, no reconnect loop.
    std::thread::sleep(Duration::from_millis(500));
    let errors = rec.errors.lock().unwrap().clone();
    let nowhere: Vec<_> = errors.iter().filter(|e| e.folder.as_deref() == Some("Nowhere")).collect();
    assert_eq!(nowhere.len(), 1, "{errors:#?}");
    assert_eq!(nowhere[0].kind, ErrorKind::Server);
    assert!(!nowhere[0].retryable);
    // Without NOTIFY: one connection for INBOX, one for Lists.
    within(5, "the syncs done", || !store.is_busy());
    assert_eq!(daemon.watch_connections(), 2);
    within(5, "two connections on the server", || dv.imap_connections() == 2);
    assert!(!rec.progress.lock().unwrap().iter().any(|p| p.text.contains("NOTIFY")));
    daemon.shutdown();
    assert_same(&dv, tmp.path());
}

#[test]
fn a_server_restart_is_followed_by_a_reconnect() {
    let mut dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, _store, rec) = start(&dv, tmp.path());
    dv.stop();
    within(10, "the lost connection reported", || {
        rec.errors.lock().unwrap().iter().any(|e| e.kind == ErrorKind::Network && e.hint.contains("connecting again"))
    });
    dv.restart();
    within(15, "IDLE again after the restart", || watching(&rec) >= 2);
    dv.save("INBOX", &syncmail_testkit::message("after restart", "arrives on the new connection"));
    within(10, "the message delivered after the restart", || near_find(tmp.path(), "INBOX", "after restart").is_some());
    daemon.shutdown();
    assert_same(&dv, tmp.path());
}

#[test]
fn a_local_change_is_uploaded_promptly() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, _store, _rec) = start(&dv, tmp.path());
    near_add(tmp.path(), "INBOX", "written here", syncmail_imap::Flags::SEEN);
    within(10, "the local message on the server", || dv.server_messages().get("INBOX").is_some_and(|m| !m.is_empty()));
    daemon.shutdown();
    assert_same(&dv, tmp.path());
}

#[test]
fn a_shutdown_mid_sync_leaves_a_store_the_next_sync_completes() {
    let dv = Dovecot::start(Options { messages: 1200, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    let rec = Arc::new(Recorder::default());
    let daemon = Daemon::start(vec![store.clone()], rec.clone(), fast());
    within(20, "the first download", || {
        rec.progress.lock().unwrap().iter().any(|p| p.step == syncmail::Step::Download && p.index > 0)
    });
    daemon.shutdown();
    assert!(!store.is_busy());
    let done = rec.done.lock().unwrap().clone();
    assert!(done.iter().any(|r| r.cancelled), "the sync in hand was stopped: {done:#?}");
    let names = dv.server_messages().into_keys();
    let local = syncmail_testkit::local_messages(&tmp.path().join("mail"), names).values().map(Vec::len).sum::<usize>();
    assert!(local < 1200, "stopped before the end ({local} messages)");
    // What the stopped sync did stays done; the next sync completes it, nothing twice.
    common::sync_ok(&store);
    assert_same(&dv, tmp.path());
}

fn noted(rec: &Recorder, text: &str) -> bool {
    rec.progress.lock().unwrap().iter().any(|p| p.text.contains(text))
}

#[test]
fn with_notify_one_connection_brings_mail_of_any_folder_and_new_folders() {
    let dv = Dovecot::start(Options { notify: true, ..Default::default() });
    dv.doveadm(&["mailbox", "create", "Lists"]);
    dv.doveadm(&["mailbox", "create", "Other"]);
    let tmp = tempfile::tempdir().unwrap();
    // Lists in `idle`: without NOTIFY it would take a second connection.
    let acc = common::account_with(&dv, tmp.path(), Conn::Plain, "idle = [\"Lists\"]", "");
    assert_eq!(acc.interval, Duration::from_secs(300));
    let mut probe = syncmail::far::Session::open(&acc.imap).unwrap();
    assert!(probe.has("NOTIFY"), "Dovecot offers NOTIFY after login with mailbox_list_index = yes");
    probe.examine("INBOX").unwrap();
    probe.logout();
    let (daemon, store, rec) = run_with(acc, DaemonOptions { watch_local: false, ..fast() });
    within(10, "NOTIFY set", || noted(&rec, "watching every folder with NOTIFY"));
    assert_eq!(daemon.watch_connections(), 1);
    assert!(!noted(&rec, "with IDLE"), "no per-folder IDLE beside NOTIFY");
    // Not INBOX, not in `idle`, the Maildir watcher off (its syncs would look at every
    // folder): only NOTIFY can bring it before the periodic sync.
    let t = Instant::now();
    dv.save("Other", &syncmail_testkit::message("notified", "in another folder"));
    within(5, "the message of Other locally", || near_find(tmp.path(), "Other", "notified").is_some());
    let other = t.elapsed();
    dv.create_mailbox_while_listed("Fresh");
    within(5, "the new folder locally", || tmp.path().join("mail/Fresh/cur").is_dir());
    dv.save("Fresh", &syncmail_testkit::message("fresh mail", "in the new folder"));
    within(5, "the message of Fresh locally", || near_find(tmp.path(), "Fresh", "fresh mail").is_some());
    // Renamed on the server by another client (LIST with OLDNAME, a hierarchy sync).
    // Dovecot 2.3 sends nothing for a `doveadm mailbox rename`; an IMAP RENAME it does.
    let mut other_client = syncmail::far::Session::open(&store.account().imap).unwrap();
    other_client.rename("Fresh", "Renamed").unwrap();
    other_client.logout();
    within(5, "the folder renamed locally", || {
        !tmp.path().join("mail/Fresh").exists() && near_find(tmp.path(), "Renamed", "fresh mail").is_some()
    });
    // Deleted on the server (empty): LIST \NonExistent, a hierarchy sync.
    dv.create_mailbox_while_listed("Brief");
    within(5, "Brief locally", || tmp.path().join("mail/Brief/cur").is_dir());
    dv.doveadm(&["mailbox", "delete", "Brief"]);
    within(5, "Brief gone locally", || !tmp.path().join("mail/Brief").exists());
    dv.save("INBOX", &syncmail_testkit::message("inbox mail", "selected"));
    within(5, "the message of INBOX locally", || near_find(tmp.path(), "INBOX", "inbox mail").is_some());
    within(5, "the syncs done", || !store.is_busy());
    // The server's side of the count: the daemon's one watch connection, no other.
    within(5, "one connection on the server", || dv.imap_connections() == 1);
    eprintln!("Other's message arrived {} ms after delivery", other.as_millis());
    daemon.shutdown();
    assert!(rec.errors.lock().unwrap().is_empty(), "{:#?}", rec.errors.lock().unwrap());
    assert_same(&dv, tmp.path());
}

#[test]
fn a_refused_notify_set_falls_back_to_idle_and_says_so_once() {
    // NOTIFY advertised on top of Dovecot's list, but no mailbox list index behind it.
    let dv = Dovecot::start(Options { capability: Some("+NOTIFY".into()), ..Default::default() });
    dv.doveadm(&["mailbox", "create", "Lists"]);
    let tmp = tempfile::tempdir().unwrap();
    let acc = common::account_with(&dv, tmp.path(), Conn::Plain, "idle = [\"Lists\"]", "");
    let (daemon, _store, rec) = run(acc);
    within(10, "IDLE on INBOX", || watching(&rec) >= 1);
    within(10, "IDLE on Lists", || noted(&rec, "watching Lists with IDLE"));
    dv.save("Lists", &syncmail_testkit::message("list mail", "by IDLE"));
    within(10, "the message in Lists", || near_find(tmp.path(), "Lists", "list mail").is_some());
    let refused: Vec<_> = rec
        .progress
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.text.contains("refused NOTIFY"))
        .map(|p| p.text.clone())
        .collect();
    assert_eq!(refused.len(), 1, "said once: {refused:?}");
    assert_eq!(daemon.watch_connections(), 2);
    daemon.shutdown();
    assert!(rec.errors.lock().unwrap().is_empty(), "{:#?}", rec.errors.lock().unwrap());
    assert_same(&dv, tmp.path());
}

#[test]
fn with_notify_a_server_restart_is_followed_by_a_reconnect() {
    let mut dv = Dovecot::start(Options { notify: true, ..Default::default() });
    dv.doveadm(&["mailbox", "create", "Other"]);
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, _store, rec) =
        run_with(account(&dv, tmp.path(), Conn::Plain, ""), DaemonOptions { watch_local: false, ..fast() });
    let set = || rec.progress.lock().unwrap().iter().filter(|p| p.text == "watching every folder with NOTIFY").count();
    within(10, "NOTIFY set", || set() == 1);
    dv.stop();
    within(10, "the lost connection reported", || {
        rec.errors.lock().unwrap().iter().any(|e| e.kind == ErrorKind::Network && e.hint.contains("connecting again"))
    });
    dv.restart();
    within(15, "NOTIFY again after the restart", || set() >= 2);
    dv.save("Other", &syncmail_testkit::message("after restart", "notified on the new connection"));
    within(10, "the message delivered after the restart", || near_find(tmp.path(), "Other", "after restart").is_some());
    daemon.shutdown();
    assert_same(&dv, tmp.path());
}
