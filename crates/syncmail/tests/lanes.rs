//! Folders synced two at a time, on two connections (`connections = 2`, the default; the
//! engine's `lanes`), against a real Dovecot: what crosses folders (messages moved on
//! either side) comes out as on one connection, nothing lost and nothing twice, with a
//! crash at any step; the receiver is called one call at a time.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use syncmail::{Progress, Store, SyncError, SyncProgress, SyncReport, SyncRequest};
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

/// Whether the second connection logged in, and whether it selected a folder (it may not
/// have, where the first connection took every folder before it was in).
fn second_connection(trace: &[String]) -> (bool, bool) {
    let said = |what: &str| trace.iter().any(|l| l.starts_with("[2] C: ") && l.contains(what));
    (said(" AUTHENTICATE "), said(" SELECT "))
}

/// A Dovecot with 600 small messages in two folders, Left and Right: a first sync gives
/// each connection one.
fn left_and_right() -> Dovecot {
    Dovecot::start(Options {
        messages: 600,
        corpus_args: ["--tiny", "--folders", "Left,Right"].map(String::from).to_vec(),
        ..Default::default()
    })
}

/// Messages moved on the server between two folders that are synced at the same time,
/// both ways, round after round: each is taken from the local copy (in its old folder,
/// or in the attic once the other connection has carried out the expunge), never
/// downloaded again, and the store ends equal to the server.
#[test]
fn messages_moved_on_the_server_between_folders_synced_at_once_are_not_downloaded_again() {
    let dv = left_and_right();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    let (r, trace) = traced_sync(&store, DOWNLOAD);
    assert_eq!(r.downloaded(), 600, "{:#?}", r.folders);
    // The first connection is busy with its folder's 300 downloads long after the second is
    // in: each syncs one.
    assert_eq!(second_connection(&trace), (true, true), "{trace:#?}");
    assert_same(&dv, root);
    for round in 0..4 {
        let (from, to) = if round % 2 == 0 { ("Left", "Right") } else { ("Right", "Left") };
        let uids = dv.uids(from);
        let set = format!("{}:{}", uids[10 * round], uids[10 * round + 39]);
        dv.doveadm(&["move", to, "mailbox", from, "uid", &set]);
        // New mail in the folder the messages left too: both folders changed.
        dv.save(from, &message(&format!("new in round {round}"), "body"));
        let (r, trace) = traced_sync(&store, DOWNLOAD);
        assert!(second_connection(&trace).0, "round {round}: {trace:#?}");
        let moved_in: u64 = r.folders.iter().map(|f| f.moved_in).sum();
        assert_eq!(moved_in, 40, "round {round}: {:#?}", r.folders);
        assert_eq!(r.downloaded(), 1, "round {round}: 40 copied, one new: {:#?}", r.folders);
        assert_same(&dv, root);
    }
    let (r, _) = traced_sync(&store, DOWNLOAD);
    assert_eq!(r.downloaded(), 0, "{:#?}", r.folders);
}

/// Counts calls that overlapped another call (none may), and the threads calls came from.
#[derive(Default)]
struct OneAtATimeCheck {
    busy: AtomicBool,
    overlapped: AtomicUsize,
    threads: Mutex<Vec<std::thread::ThreadId>>,
    lines: Mutex<Vec<String>>,
}

impl OneAtATimeCheck {
    fn call(&self) {
        if self.busy.swap(true, Ordering::SeqCst) {
            self.overlapped.fetch_add(1, Ordering::SeqCst);
        }
        let id = std::thread::current().id();
        {
            let mut t = self.threads.lock().unwrap();
            if !t.contains(&id) {
                t.push(id);
            }
        }
        // Long enough for the other connection to call meanwhile, were it let through.
        std::thread::sleep(std::time::Duration::from_micros(200));
        self.busy.store(false, Ordering::SeqCst);
    }
}

impl SyncProgress for OneAtATimeCheck {
    fn progress(&self, _p: &Progress) {
        self.call();
    }
    fn error(&self, _e: &SyncError) {
        self.call();
    }
    fn done(&self, _r: &SyncReport) {}
    fn wants_trace(&self) -> bool {
        true
    }
    fn trace(&self, _account: &str, line: &str) {
        self.call();
        self.lines.lock().unwrap().push(line.to_string());
    }
}

/// A two-way sync in which every folder changed on the server (so both connections work)
/// and the Maildir changed too: a message a mail reader moved between two folders, a new
/// local message, a local deletion. The folders whose plan uploads or deletes on the
/// server wait for the first connection alone; the moved message is moved on the server
/// (not uploaded again, not deleted), the new one uploaded once, and a run after has
/// nothing to do. The receiver's calls, from both threads, never overlap.
#[test]
fn local_changes_while_folders_sync_two_at_a_time_are_carried_out_once() {
    let dv = Dovecot::start(Options {
        messages: 80,
        corpus_args: ["--folders", "INBOX,Archive,Lists.rust,Lists.debian"].map(String::from).to_vec(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync2(&store);
    assert_same(&dv, root);

    for f in ["INBOX", "Archive", "Lists.rust", "Lists.debian"] {
        dv.save(f, &message(&format!("new on the server in {f}"), "body"));
    }
    // A mail reader moves a message from Archive to Lists.rust (same file name), writes a
    // new one into Lists.debian, deletes one in INBOX.
    let archive = near_folder(root, "Archive");
    let moved = archive.scan().unwrap().into_values().next().unwrap();
    let moved_data = archive.read(&moved).unwrap();
    std::fs::rename(
        archive.entry_path(&moved),
        near_folder(root, "Lists.rust").path().join("cur").join(&moved.file_name),
    )
    .unwrap();
    near_add(root, "Lists.debian", "written here", Flags::SEEN);
    let inbox = near_folder(root, "INBOX");
    let gone = inbox.scan().unwrap().into_values().next().unwrap();
    inbox.remove(&gone).unwrap();

    let check = Arc::new(OneAtATimeCheck::default());
    let r = store.synchronize_in_background(SyncRequest::new(TWO_WAY).with_progress(check.clone())).wait();
    assert!(r.is_success(), "{:#?}", r.errors);
    let trace = check.lines.lock().unwrap().clone();
    assert!(second_connection(&trace).0, "{trace:#?}");
    assert_eq!(check.overlapped.load(Ordering::SeqCst), 0, "the receiver was called by two threads at once");
    assert!(check.threads.lock().unwrap().len() >= 2, "calls came from one thread only");
    let sum = |f: fn(&syncmail::FolderReport) -> u64| r.folders.iter().map(f).sum::<u64>();
    assert_eq!(sum(|f| f.moved_on_server), 1, "{:#?}", r.folders);
    assert_eq!(sum(|f| f.uploaded), 1, "{:#?}", r.folders);
    assert_eq!(sum(|f| f.far_deleted), 1, "{:#?}", r.folders);
    assert_eq!(sum(|f| f.downloaded), 4, "{:#?}", r.folders);
    // Moved on the server: in Lists.rust once, no longer in Archive.
    let server = dv.server_messages();
    let lf = |d: &[u8]| syncmail_maildir::crlf_to_lf(d);
    let copies = |folder: &str| server[folder].iter().filter(|(d, _)| lf(d) == moved_data).count();
    assert_eq!((copies("Archive"), copies("Lists.rust")), (0, 1));
    assert_same(&dv, root);
    let again = sync2(&store);
    let work: u64 = again.folders.iter().map(|f| f.downloaded + f.uploaded + f.far_deleted + f.moved_on_server).sum();
    assert_eq!(work, 0, "{:#?}", again.folders);
}

/// A change on both sides in three folders, and messages moved on the server between two
/// of them, synced on two connections and interrupted after each step in turn, then
/// resumed: the store ends equal to the server, and a run after has nothing to do.
#[test]
fn folders_synced_two_at_a_time_interrupted_at_every_step_then_resumed() {
    let opts = Options {
        messages: 60,
        corpus_args: ["--tiny", "--folders", "A,B,C"].map(String::from).to_vec(),
        ..Default::default()
    };
    common::interrupted_at_every_step(
        opts,
        TWO_WAY,
        &|dv: &mut Dovecot, root: &std::path::Path| {
            let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
            sync2(&store);
            for f in ["A", "B", "C"] {
                dv.save(f, &message(&format!("new in {f}"), "body"));
                let uids = dv.uids(f);
                dv.flags_add(f, uids[1], "\\Flagged");
                dv.expunge(f, uids[2]);
            }
            let uids = dv.uids("A");
            let set = format!("{}:{}", uids[3], uids[6]);
            dv.doveadm(&["move", "B", "mailbox", "A", "uid", &set]);
            near_add(root, "C", "written in C", Flags::SEEN);
            let b = near_folder(root, "B");
            let e = b.scan().unwrap().into_values().next().unwrap();
            b.set_flags(&e, e.flags.union(Flags::ANSWERED)).unwrap();
            store
        },
        &|dv: &Dovecot, root: &std::path::Path, _context: &str| assert_same(dv, root),
        8,
    );
}

/// Round after round, a mail reader moves messages around a ring of four folders (each
/// to the next) while every folder also changes on the server, so that both connections
/// work at once: each moved message is moved on the server, never uploaded a second time
/// or downloaded back, and the server holds exactly what was there plus the new mail.
#[test]
fn messages_moved_around_a_ring_of_folders_synced_two_at_a_time_arrive_once() {
    const FOLDERS: [&str; 4] = ["A", "B", "C", "D"];
    let dv = Dovecot::start(Options {
        messages: 160,
        corpus_args: ["--tiny", "--folders", "A,B,C,D"].map(String::from).to_vec(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync2(&store);
    let count = |f: &str| dv.uids(f).len();
    let mut want: Vec<usize> = FOLDERS.iter().map(|f| count(f)).collect();
    for round in 0..6 {
        for (i, f) in FOLDERS.iter().enumerate() {
            dv.save(f, &message(&format!("new in {f}, round {round}"), "body"));
            want[i] += 1;
        }
        // Chosen before any is moved: three of each folder's own, to the next folder.
        let mut moves = Vec::new();
        for (i, f) in FOLDERS.iter().enumerate() {
            let (from, to) = (near_folder(root, f), near_folder(root, FOLDERS[(i + 1) % 4]));
            let mut entries: Vec<_> = from.scan().unwrap().into_values().collect();
            entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
            for e in entries.iter().take(3) {
                moves.push((from.entry_path(e), to.path().join("cur").join(&e.file_name)));
            }
        }
        for (from, to) in moves {
            std::fs::rename(from, to).unwrap();
        }
        let (r, trace) = traced_sync(&store, TWO_WAY);
        assert!(second_connection(&trace).0, "round {round}: {trace:#?}");
        let sum = |f: fn(&syncmail::FolderReport) -> u64| r.folders.iter().map(f).sum::<u64>();
        assert_eq!(sum(|f| f.moved_on_server), 12, "round {round}: {:#?}", r.folders);
        assert_eq!((sum(|f| f.uploaded), sum(|f| f.far_deleted)), (0, 0), "round {round}: {:#?}", r.folders);
        assert_eq!(r.downloaded(), 4, "round {round}: {:#?}", r.folders);
        let have: Vec<usize> = FOLDERS.iter().map(|f| count(f)).collect();
        assert_eq!(have, want, "round {round}: messages per folder on the server");
        assert_same(&dv, root);
    }
}

/// A progress callback on the second connection's thread that asks for a sync of the same
/// account and waits for it (`Store::synchronize`): it meets the account lock at once, as
/// one on the first connection's thread does, instead of queueing behind the run that is
/// waiting for the callback (it did, and the run hung, where the second connection's
/// download event came first).
#[test]
fn a_sync_asked_from_a_callback_on_the_second_connection_meets_the_lock_at_once() {
    let dv = left_and_right();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    struct Nested(Store, Mutex<Option<SyncReport>>);
    impl SyncProgress for Nested {
        fn progress(&self, p: &Progress) {
            let on_second = std::thread::current().name() == Some("syncmail-lane");
            let mut slot = self.1.lock().unwrap();
            if p.step == syncmail::Step::Download && on_second && slot.is_none() {
                *slot = Some(self.0.synchronize(SyncRequest::new(DOWNLOAD)));
            }
        }
    }
    let nested = Arc::new(Nested(store.clone(), Mutex::new(None)));
    let handle = store.synchronize_in_background(SyncRequest::new(DOWNLOAD).with_progress(nested.clone()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !handle.is_done() {
        assert!(std::time::Instant::now() < deadline, "the run hangs: the nested sync waits for it");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = handle.wait();
    assert!(r.is_success(), "{:#?}", r.errors);
    let inner = nested.1.lock().unwrap().take().expect("the second connection downloaded a folder");
    assert_eq!(inner.errors.len(), 1, "{:#?}", inner.errors);
    assert_eq!(inner.errors[0].kind, syncmail::ErrorKind::Locked, "{:#?}", inner.errors);
    assert_same(&dv, tmp.path());
}
