//! DOWNLOAD_HIERARCHY and DOWNLOAD_CONTENTS against a real Dovecot: an initial sync, then
//! new messages, flag changes and expunges on the server, then a run that changes
//! nothing; over plain TCP, STARTTLS and implicit TLS, and against a server that
//! advertises nothing but IMAP4rev1.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use syncmail::{ErrorKind, Store, SyncFlags};
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

fn full_cycle(opts: Options, tls: Conn) {
    let dv = Dovecot::start(opts);
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), tls, "")).unwrap();

    // Initial sync: everything arrives, byte for byte up to line ends, with its flags.
    let r1 = sync_ok(&store);
    assert!(r1.downloaded() > 0);
    assert_same(&dv, tmp.path());
    let server_total: usize = dv.server_messages().values().map(Vec::len).sum();
    assert_eq!(r1.downloaded() as usize, server_total);
    assert!(r1.folders.iter().any(|f| f.folder == "Lists.rust" && f.created));
    assert!(tmp.path().join("mail/Lists/rust/cur").is_dir(), "verbatim layout: Lists.rust → Lists/rust");
    assert!(tmp.path().join("mail/Ünïcödé Folder/cur").is_dir(), "names decoded from modified UTF-7");

    // Changes on the server.
    let inbox = dv.uids("INBOX");
    let rust = dv.uids("Lists.rust");
    dv.save("INBOX", &message("new one", "hello"));
    dv.save("INBOX", &message("new two", "hello again"));
    dv.save("Lists.rust", &message("new three", "in a folder"));
    dv.flags_add("INBOX", inbox[0], "\\Flagged");
    dv.flags_add("INBOX", inbox[1], "\\Seen \\Answered");
    dv.flags_remove("Lists.rust", rust[0], "\\Seen");
    dv.flags_add("Lists.rust", rust[0], "\\Draft");
    dv.expunge("INBOX", inbox[2]);
    dv.expunge("Lists.rust", rust[1]);
    let r2 = sync_ok(&store);
    assert_eq!(r2.downloaded(), 3, "{:#?}", r2.folders);
    assert_eq!(r2.folders.iter().map(|f| f.deleted).sum::<u64>(), 2);
    // inbox[1] may already carry \Seen in the corpus; at least three messages changed.
    assert!(r2.folders.iter().map(|f| f.flags_changed).sum::<u64>() >= 2);
    assert_same(&dv, tmp.path());

    // A second run with nothing changed changes nothing.
    let before = snapshot(tmp.path());
    let r3 = sync_ok(&store);
    assert_eq!(r3.downloaded(), 0);
    assert!(r3.bytes_received < 64 * 1024, "a run with nothing to do received {} bytes", r3.bytes_received);
    assert!(r3.folders.iter().all(|f| f.flags_changed == 0 && f.deleted == 0), "{:#?}", r3.folders);
    assert_eq!(before, snapshot(tmp.path()), "a sync with nothing to do touched the store");
}

/// Every file name under the Maildir root, sorted.
fn snapshot(root: &std::path::Path) -> Vec<String> {
    fn walk(p: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    let mut v = Vec::new();
    walk(&root.join("mail"), &mut v);
    v.sort();
    v
}

#[test]
fn plain_full_capabilities() {
    full_cycle(Options { messages: 120, ..Default::default() }, Conn::Plain);
}

#[test]
fn implicit_tls_with_private_ca() {
    full_cycle(Options { messages: 60, ..Default::default() }, Conn::Implicit);
}

#[test]
fn starttls_with_private_ca() {
    full_cycle(Options { messages: 60, ..Default::default() }, Conn::StartTls);
}

#[test]
fn server_with_only_imap4rev1() {
    full_cycle(Options { messages: 80, capability: Some("IMAP4rev1".into()), ..Default::default() }, Conn::Plain);
}

#[test]
fn server_with_condstore_and_esearch_but_no_qresync() {
    let caps = "IMAP4rev1 ENABLE CONDSTORE ESEARCH UIDPLUS LITERAL+";
    full_cycle(Options { messages: 80, capability: Some(caps.into()), ..Default::default() }, Conn::Plain);
}

#[test]
fn server_with_condstore_only() {
    full_cycle(
        Options { messages: 80, capability: Some("IMAP4rev1 CONDSTORE".into()), ..Default::default() },
        Conn::Plain,
    );
}

#[test]
fn login_command_when_configured() {
    let dv = Dovecot::start(Options { messages: 20, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::StartTls, "auth-mech = \"login\"")).unwrap();
    assert_eq!(store.account().imap.auth_mech, syncmail_imap::AuthMech::Login);
    sync_ok(&store);
    assert_same(&dv, tmp.path());
}

#[test]
fn login_disabled_is_a_clear_error() {
    // With only AUTH=LOGIN (a mechanism syncmail does not speak), Dovecot also disables
    // the LOGIN command: the error must say so, not hang or blame the password.
    let dv = Dovecot::start(Options { auth_mechanisms: Some("login".into()), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Implicit, "")).unwrap();
    let (r, _) = sync(&store, common::DOWNLOAD);
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].message.contains("LOGINDISABLED") && r.errors[0].message.contains("AUTH=LOGIN"),
        "{}",
        r.errors[0].message
    );
}

/// The variants above really take the fallback paths: what the session detected.
#[test]
fn capability_detection_drives_the_fallbacks() {
    for (caps, condstore, qresync, list_status) in [
        (None, true, true, true),
        (Some("IMAP4rev1 ENABLE CONDSTORE ESEARCH"), true, false, false),
        (Some("IMAP4rev1"), false, false, false),
    ] {
        let dv = Dovecot::start(Options { capability: caps.map(str::to_string), ..Default::default() });
        let tmp = tempfile::tempdir().unwrap();
        let acc = account(&dv, tmp.path(), Conn::Plain, "");
        let s = syncmail::far::Session::open(&acc.imap).unwrap();
        assert_eq!((s.condstore, s.qresync, s.has("LIST-STATUS")), (condstore, qresync, list_status), "{caps:?}");
        s.logout();
    }
}

#[test]
fn local_flag_change_survives_a_server_change_of_another_flag() {
    let dv = Dovecot::start(Options::default());
    dv.save("INBOX", &message("merge me", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync_ok(&store);
    // The reader marks it \Flagged locally; the server marks it \Seen.
    let inbox = syncmail_maildir::Folder::new(tmp.path().join("mail/INBOX"));
    let (_, e) = inbox.scan().unwrap().into_iter().next().unwrap();
    inbox.set_flags(&e, Flags::FLAGGED).unwrap();
    dv.flags_add("INBOX", dv.uids("INBOX")[0], "\\Seen");
    sync_ok(&store);
    let (_, e) = inbox.scan().unwrap().into_iter().next().unwrap();
    assert_eq!(e.flags, Flags::FLAGGED.union(Flags::SEEN), "per-flag merge");
}

#[test]
fn incremental_run_transfers_only_what_changed() {
    let dv = Dovecot::start(Options { messages: 100, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    let r1 = sync_ok(&store);
    let big = dv.server_messages().values().flatten().map(|m| m.0.len() as u64).sum::<u64>();
    assert!(r1.bytes_received >= big, "initial run received {} bytes for {big}", r1.bytes_received);
    dv.save("INBOX", &message("only this", "small"));
    let r2 = sync_ok(&store);
    assert_eq!(r2.downloaded(), 1);
    // One small message plus protocol chatter, nowhere near the mailbox's size.
    assert!(r2.bytes_received < 20_000, "second run received {} bytes", r2.bytes_received);
}

#[test]
fn folder_patterns_include_and_exclude() {
    let dv = Dovecot::start(Options { messages: 60, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let extra = "[accounts.test.folders]\nexclude = [\"Lists.%\", \"Trash\"]\n";
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, extra)).unwrap();
    let r = sync_ok(&store);
    let names: Vec<&str> = r.folders.iter().map(|f| f.folder.as_str()).collect();
    assert!(names.contains(&"INBOX") && names.contains(&"Sent"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("Lists") || *n == "Trash"), "{names:?}");
    assert!(!tmp.path().join("mail/Lists").exists());
}

#[test]
fn outgoing_mail_without_smtp_is_an_error_and_the_rest_is_done() {
    let dv = Dovecot::start(Options { messages: 2, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    // Every flag is carried out now (HEADERS_ONLY was the last): no `unsupported` error.
    assert_eq!(SyncFlags::IMPLEMENTED, SyncFlags::all());
    let (r, rec) = sync(
        &store,
        SyncFlags::HEADERS_ONLY
            | SyncFlags::OUTGOING_MAIL
            | SyncFlags::DOWNLOAD_CONTENTS
            | SyncFlags::DOWNLOAD_HIERARCHY,
    );
    assert!(!r.is_success());
    let errs = rec.errors.lock().unwrap();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    // This account has no [smtp] section to send with.
    assert_eq!(errs[0].kind, ErrorKind::Config);
    assert!(errs[0].message.contains("[smtp]"), "{:?}", errs[0]);
    assert_eq!(r.downloaded(), 2, "{r:#?}");
    assert_eq!(r.folders.iter().map(|f| f.placeholders).sum::<u64>(), 2, "{r:#?}");
}

#[test]
fn wrong_password_is_an_auth_error_with_the_server_words() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut acc = account(&dv, tmp.path(), Conn::Plain, "");
    acc.imap.password = syncmail::config::PasswordSource::Plain(syncmail_imap::Secret::new("wrong-password"));
    let store = Store::open(acc).unwrap();
    let (r, _) = sync(&store, common::DOWNLOAD);
    assert_eq!(r.errors.len(), 1);
    let e = &r.errors[0];
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.server_text.as_deref().unwrap_or("").contains("AUTHENTICATIONFAILED") || e.server_text.is_some());
    assert!(!format!("{e:?}").contains("wrong-password"), "the password leaked into the error");
}

#[test]
fn untrusted_certificate_is_a_tls_error_that_says_what_to_do() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let mut acc = account(&dv, tmp.path(), Conn::Implicit, "");
    acc.imap.ca_file = None;
    let store = Store::open(acc).unwrap();
    let (r, _) = sync(&store, common::DOWNLOAD);
    let e = &r.errors[0];
    assert_eq!(e.kind, ErrorKind::Tls, "{e:#?}");
    assert!(e.message.contains("unknown issuer") && e.message.contains("ca-file"), "{}", e.message);
}

#[test]
fn nothing_listening_is_a_network_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dv = Dovecot::start(Options::default());
    let mut acc = account(&dv, tmp.path(), Conn::Plain, "");
    drop(dv);
    acc.imap.port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = Store::open(acc).unwrap();
    let (r, _) = sync(&store, common::DOWNLOAD);
    assert_eq!(r.errors[0].kind, ErrorKind::Network);
    assert!(r.errors[0].retryable);
}

/// The second sync is refused with the lock holder's pid, and never gets as far as the
/// password: its connection, made while it takes the lock, is not logged in.
#[test]
fn a_second_sync_of_the_same_account_says_who_holds_the_lock() {
    let dv = Dovecot::start(Options { messages: 1500, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let mut acc = account(&dv, tmp.path(), Conn::Plain, "");
    let asked = tmp.path().join("password-asked");
    acc.imap.password =
        syncmail::config::PasswordSource::Command(format!("echo asked >> '{}'; echo secret", asked.display()));
    // A lock file left with a longer pid than this process's: the pid is written over it
    // (not truncated first, see `AccountLock`), and none of the old one may show.
    std::fs::create_dir_all(&acc.state_dir).unwrap();
    std::fs::write(acc.state_dir.join("lock"), "99999999999").unwrap();
    let store = Store::open(acc).unwrap();
    // The second sync starts from the first one's first download event: the first one
    // holds the lock then, and is blocked in the callback until the second one is done.
    struct Second(Store, std::sync::Mutex<Option<syncmail::SyncReport>>);
    impl syncmail::SyncProgress for Second {
        fn progress(&self, p: &syncmail::Progress) {
            let mut slot = self.1.lock().unwrap();
            if p.step == syncmail::Step::Download && slot.is_none() {
                *slot = Some(self.0.synchronize(syncmail::SyncRequest::new(common::DOWNLOAD)));
            }
        }
    }
    let second = std::sync::Arc::new(Second(store.clone(), std::sync::Mutex::new(None)));
    let first = store.synchronize(syncmail::SyncRequest::new(common::DOWNLOAD).with_progress(second.clone()));
    assert!(first.is_success(), "{:#?}", first.errors);
    let r = second.1.lock().unwrap().take().unwrap();
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].kind, ErrorKind::Locked);
    assert!(r.errors[0].message.contains(&format!("(pid {})", std::process::id())), "{}", r.errors[0].message);
    // The first sync's password command ran; the second's did not.
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), "asked\n");
    assert_same(&dv, tmp.path());
}

/// A state file that is not a database is refused by `Store::open` with its path and what
/// to do, and left as it was; one that only begins like a database (`Store::open` reads no
/// more than that) fails the sync with a local error, no panic, nothing downloaded. An
/// empty one is taken as a new state.
#[test]
fn a_state_that_is_not_a_database_is_named_and_left_alone() {
    let dv = Dovecot::start(Options { messages: 5, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let acc = account(&dv, tmp.path(), Conn::Plain, "");
    let db = acc.state_dir.join("state.sqlite");
    std::fs::create_dir_all(&acc.state_dir).unwrap();

    std::fs::write(&db, "not a database at all").unwrap();
    let e = Store::open(acc.clone()).err().expect("a text file is no state");
    let msg = e.to_string();
    assert!(msg.contains(&db.display().to_string()) && msg.contains("move it away"), "{msg}");
    assert_eq!(std::fs::read(&db).unwrap(), b"not a database at all");

    let mut fake = b"SQLite format 3\0".to_vec();
    fake.extend(std::iter::repeat_n(0xa5u8, 200));
    std::fs::write(&db, &fake).unwrap();
    let store = Store::open(acc.clone()).unwrap();
    let (r, _) = sync(&store, DOWNLOAD);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].kind, ErrorKind::Local, "{:#?}", r.errors);
    assert!(r.errors[0].message.contains("sync state"), "{:#?}", r.errors);
    assert_eq!(r.downloaded(), 0);
    assert_eq!(std::fs::read(&db).unwrap(), fake);

    std::fs::write(&db, "").unwrap();
    let store = Store::open(acc).unwrap();
    sync_ok(&store);
    assert_same(&dv, tmp.path());
}

#[test]
fn cancel_stops_between_steps_and_a_resume_completes() {
    let dv = Dovecot::start(Options { messages: 1200, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    struct CancelOnDownload(std::sync::Mutex<Option<syncmail::CancelToken>>);
    impl syncmail::SyncProgress for CancelOnDownload {
        fn progress(&self, p: &syncmail::Progress) {
            if p.step == syncmail::Step::Download
                && let Some(t) = self.0.lock().unwrap().as_ref()
            {
                t.cancel();
            }
        }
    }
    let canceller = std::sync::Arc::new(CancelOnDownload(std::sync::Mutex::new(None)));
    let h =
        store.synchronize_in_background(syncmail::SyncRequest::new(common::DOWNLOAD).with_progress(canceller.clone()));
    *canceller.0.lock().unwrap() = Some(h.cancel_token());
    let r = h.wait();
    assert!(r.cancelled, "the sync should have been cancelled");
    let server_total: usize = dv.server_messages().values().map(Vec::len).sum();
    assert!((r.downloaded() as usize) < server_total, "cancel did not stop the sync");
    // What is there is whole; the resume brings the rest, nothing twice.
    let r2 = sync_ok(&store);
    assert_eq!((r.downloaded() + r2.downloaded()) as usize, server_total);
    assert_same(&dv, tmp.path());
}

#[test]
fn server_changes_reach_files_a_reader_renamed_or_deleted_since_the_last_sync() {
    // Download-only runs read just the rows and files of the messages the server names,
    // looking for each file where syncmail left it. Files a mail reader renamed or
    // deleted meanwhile must still be found (by a listing): never a second copy, never a
    // lost flag, never a lost letter of the reader's.
    let dv = Dovecot::start(Options::default());
    for i in 0..40 {
        dv.save("INBOX", &message(&format!("m{i:02}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync_ok(&store);
    let f = near_folder(tmp.path(), "INBOX");
    let uid = |s: &str| far_uid(&dv, "INBOX", s);

    // Nothing local changed: server flags, an expunge and new mail, by name alone.
    dv.flags_add("INBOX", uid("m00"), "\\Seen");
    dv.expunge("INBOX", uid("m05"));
    dv.save("INBOX", &message("new one", "y"));
    let r = sync_ok(&store);
    assert_eq!((r.downloaded(), r.folders.iter().map(|f| f.deleted).sum::<u64>()), (1, 1), "{:#?}", r.folders);
    assert_same(&dv, tmp.path());

    // The reader flags m1, deletes m2 and gives m3 a keyword letter; the server changes
    // those three and m4.
    near_set_flags(tmp.path(), "INBOX", "m01", Flags::FLAGGED);
    near_delete(tmp.path(), "INBOX", "m02");
    let m3 = near_find(tmp.path(), "INBOX", "m03").unwrap();
    std::fs::rename(f.entry_path(&m3), f.path().join("cur").join(format!("{}:2,a", m3.unique()))).unwrap();
    dv.flags_add("INBOX", uid("m01"), "\\Seen");
    dv.flags_add("INBOX", uid("m02"), "\\Answered");
    dv.flags_add("INBOX", uid("m03"), "\\Flagged");
    dv.flags_add("INBOX", uid("m04"), "\\Seen");
    let r = sync_ok(&store);
    // m2 changed on the server after its local deletion: it comes down again, once.
    assert_eq!(r.downloaded(), 1, "{:#?}", r.folders);
    let near = by_subject(&syncmail_testkit::read_maildir(f.path())); // panics on a duplicate
    assert_eq!(near.len(), 40);
    assert_eq!(near["m01"], Flags::FLAGGED.union(Flags::SEEN), "the reader's flag and the server's, merged");
    assert_eq!(near["m02"], Flags::ANSWERED);
    assert_eq!(near["m03"], Flags::FLAGGED);
    assert_eq!(near["m04"], Flags::SEEN);
    let m3 = near_find(tmp.path(), "INBOX", "m03").unwrap();
    assert!(m3.file_name.ends_with(":2,Fa"), "the reader's keyword letter is kept: {}", m3.file_name);
    // Download-only: the reader's own flag stays here until an upload.
    assert_eq!(dv.server_messages()["INBOX"].len(), 40);
}

/// The files are written by a thread of their own while the next messages come from the
/// server. When writing fails mid-download (here `tmp/` stops being a directory), the run
/// ends for that folder with a local error, promptly, and commits nothing it did not
/// write; once `tmp/` is back, the next run brings every message exactly once.
#[test]
fn a_failed_write_mid_download_is_an_error_and_the_next_run_gets_every_message_once() {
    let dv = Dovecot::start(Options { messages: 5000, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    let inbox = common::near_folder(tmp.path(), "INBOX").path().to_path_buf();
    let inbox_total = dv.server_messages()["INBOX"].len() as u64;
    assert!(inbox_total > 2100, "the test needs more than one batch in INBOX: {inbox_total}");
    struct BreakTmp {
        dir: std::path::PathBuf,
        at: u64,
        broken: std::sync::atomic::AtomicBool,
    }
    impl syncmail::SyncProgress for BreakTmp {
        fn progress(&self, p: &syncmail::Progress) {
            if p.step == syncmail::Step::Download
                && p.folder.as_deref() == Some("INBOX")
                && p.index >= self.at
                && !self.broken.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                std::fs::rename(self.dir.join("tmp"), self.dir.join("tmp.away")).unwrap();
                std::fs::write(self.dir.join("tmp"), b"not a directory").unwrap();
            }
        }
    }
    // Broken in the second batch: the first is committed, the second is not.
    let breaker = std::sync::Arc::new(BreakTmp { dir: inbox.clone(), at: 2050, broken: Default::default() });
    let t0 = std::time::Instant::now();
    let req = syncmail::SyncRequest::new(common::DOWNLOAD).with_progress(breaker.clone());
    let r = store.synchronize_in_background(req).wait();
    assert!(breaker.broken.load(std::sync::atomic::Ordering::SeqCst), "the download never reached the break");
    assert!(t0.elapsed() < std::time::Duration::from_secs(60), "the failed run took {:?}", t0.elapsed());
    let inbox_errors: Vec<_> = r.errors.iter().filter(|e| e.folder.as_deref() == Some("INBOX")).collect();
    assert_eq!(inbox_errors.len(), 1, "one error for INBOX (not also 'the server did not send'): {inbox_errors:#?}");
    let e = inbox_errors[0];
    assert_eq!(e.kind, ErrorKind::Local, "{e:#?}");
    assert!(e.message.contains("tmp"), "the error should name the path: {}", e.message);
    let inbox_row = r.folders.iter().find(|f| f.folder == "INBOX").map_or(0, |f| f.downloaded);
    assert!(inbox_row < inbox_total, "INBOX reported whole ({inbox_row}) though its writes failed");
    // tmp/ back (with what the failed run staged there); the next run completes.
    std::fs::remove_file(inbox.join("tmp")).unwrap();
    std::fs::rename(inbox.join("tmp.away"), inbox.join("tmp")).unwrap();
    sync_ok(&store);
    assert_same(&dv, tmp.path());
    // And nothing is left to do.
    let again = sync_ok(&store);
    assert_eq!(again.downloaded(), 0);
}

/// A download of several batches (4,100 messages in INBOX: 2,000 + 2,000 + 100) cut off
/// after every step, then resumed: the store ends equal to the server, nothing lost and
/// nothing twice, and one more run finds nothing to do. The file writer keeps one batch
/// between its fetch and its commit, so a cut can leave two batches journaled at once:
/// one written and in place but not committed, the next being written.
#[test]
fn a_download_of_several_batches_interrupted_at_every_step_then_resumed() {
    let opts = Options {
        messages: 4100,
        corpus_args: vec!["--tiny".into(), "--folders".into(), "INBOX".into()],
        ..Default::default()
    };
    common::interrupted_at_every_step(
        opts,
        common::DOWNLOAD,
        &|dv: &mut Dovecot, root: &std::path::Path| Store::open(account(dv, root, Conn::Plain, "")).unwrap(),
        &|dv: &Dovecot, root: &std::path::Path, _context: &str| assert_same(dv, root),
        9,
    );
}

/// `find-changes = "probe"` (what "auto" does on loopback): STATUS is asked one folder at
/// a time while those asked have changed, INBOX last; two changed (or a first changed and
/// slow to answer), the rest are selected without asking; one unchanged, the rest are
/// asked at once. Round by round on eight folders: a first sync asks no STATUS (nothing is
/// known); nothing changed: every folder asked, none selected; INBOX alone changed: every
/// folder asked, INBOX selected; every folder but INBOX changed: one or two asked (one
/// where the server was slow to answer the first), never INBOX, and every folder selected
/// once, on two connections; then nothing again. The store ends equal to the server each
/// time.
#[test]
fn changed_folders_are_found_a_few_at_a_time_and_the_rest_selected_without_asking() {
    let folders = ["INBOX", "Archive", "Drafts", "Lists.rust", "Lists.debian", "Notes", "Sent", "Trash"];
    let dv = Dovecot::start(Options {
        messages: 80,
        corpus_args: vec!["--folders".into(), folders.join(",")],
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "find-changes = \"probe\"")).unwrap();
    for round in 0..5 {
        if round == 2 {
            dv.save("INBOX", &message("new for INBOX", "body"));
        }
        if round == 3 {
            for f in &folders[1..] {
                dv.save(f, &message(&format!("new for {f}"), "body"));
            }
        }
        let (r, trace) = traced_sync(&store, DOWNLOAD);
        assert_same(&dv, tmp.path());
        let on_server: usize = dv.server_messages().values().map(Vec::len).sum();
        let want = [on_server, 0, 1, 7, 0][round];
        assert_eq!(r.downloaded() as usize, want, "round {round}: {:#?}", r.folders);
        let named = |what: &str| -> Vec<String> {
            trace
                .iter()
                .filter(|l| (l.starts_with("C: ") || l.starts_with("[2] C: ")) && l.contains(what))
                .filter(|l| !l.contains("MAILBOXID"))
                .map(|l| l.split('"').nth(1).unwrap_or_default().to_string())
                .collect()
        };
        let (mut asked, mut selected) = (named(" STATUS "), named(" SELECT "));
        asked.sort();
        selected.sort();
        let mut once = selected.clone();
        once.dedup();
        assert_eq!(selected, once, "round {round}: a folder selected twice: {trace:#?}");
        let mut all: Vec<String> = folders.iter().map(|f| f.to_string()).collect();
        all.sort();
        match round {
            0 => {
                assert!(asked.is_empty(), "round {round}: {asked:?}");
                assert_eq!(selected, all, "round {round}");
            }
            1 | 4 => {
                assert_eq!(asked, all, "round {round}");
                assert!(selected.is_empty(), "round {round}: {selected:?}");
            }
            2 => {
                assert_eq!(asked, all, "round {round}");
                assert_eq!(selected, ["INBOX"], "round {round}");
            }
            _ => {
                assert!(asked.len() == 1 || asked.len() == 2, "round {round}: {asked:?}");
                assert!(!asked.iter().any(|f| f == "INBOX"), "round {round}: {asked:?}");
                assert_eq!(selected, all, "round {round}");
                // Seven folders to do: the second connection is in, and out again.
                let said = |what: &str| trace.iter().any(|l| l.starts_with("[2] C: ") && l.contains(what));
                assert!(said("AUTHENTICATE") && said("LOGOUT"), "round {round}: {trace:#?}");
            }
        }
    }
}

/// With two connections allowed (the default), a second connection (its trace lines start
/// `[2]`) is opened where two folders or more changed, and each folder is synced once, on
/// one connection or the other (which one takes which is a matter of timing: with folders
/// this small the first may do them all before the second is in); a sync with one folder
/// or none to do, and any sync with `connections = 1`, opens one. The store ends the same
/// either way.
#[test]
fn changed_folders_are_synced_on_two_connections_unless_one_is_asked_for() {
    let dv = Dovecot::start(Options {
        messages: 60,
        corpus_args: vec!["--folders".into(), "INBOX,Archive,Lists.rust".into()],
        ..Default::default()
    });
    for (n, connections) in ["", "connections = 1"].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        // Every status with the folder list: with "probe", which folders are selected
        // depends on which are asked first (see the next test).
        let keys = format!("{connections}\nfind-changes = \"list\"");
        let store = Store::open(account(&dv, tmp.path(), Conn::Plain, &keys)).unwrap();
        // Round 0: a first sync (every folder to do); 1: two folders changed; 2: none;
        // 3: one.
        for round in 0..4 {
            if round == 1 || round == 3 {
                dv.save("Archive", &message(&format!("new {round} for {connections:?}"), "body"));
            }
            if round == 1 {
                // A keyword new to the folder (the server is the same for both settings).
                let uids = dv.uids("Lists.rust");
                dv.flags_add("Lists.rust", uids[0], &format!("$Round{n}"));
            }
            let (r, trace) = traced_sync(&store, DOWNLOAD);
            assert_same(&dv, tmp.path());
            let on_server: usize = dv.server_messages().values().map(Vec::len).sum();
            let want = match round {
                0 => on_server,
                1 | 3 => 1,
                _ => 0,
            };
            assert_eq!(r.downloaded() as usize, want, "round {round}: {:#?}", r.folders);
            let selects = |prefix: &str| -> Vec<String> {
                trace
                    .iter()
                    .filter(|l| l.starts_with(prefix) && l.contains(" SELECT "))
                    .map(|l| l.split('"').nth(1).unwrap_or_default().to_string())
                    .collect()
            };
            let (first, second) = (selects("C: "), selects("[2] C: "));
            let two = connections.is_empty() && (round == 0 || round == 1);
            if two {
                let said = |what: &str| trace.iter().any(|l| l.starts_with("[2] C: ") && l.contains(what));
                assert!(said("AUTHENTICATE") && said("LOGOUT"), "round {round}: {trace:#?}");
            } else {
                assert!(!trace.iter().any(|l| l.starts_with("[2] ")), "round {round}: {trace:#?}");
            }
            // Each folder selected once, on one connection or the other.
            let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
            all.sort();
            let mut once = all.clone();
            once.dedup();
            assert_eq!(all, once, "round {round}: a folder synced twice: {trace:#?}");
            let folders = match round {
                0 => 3,
                1 => 2,
                2 => 0,
                _ => 1,
            };
            assert_eq!(all.len(), folders, "round {round}: {all:?}");
        }
    }
}

/// Bodies are converted to LF line ends as they are read, piece by piece from the
/// connection's buffer: whatever the sizes (pieces end anywhere, a CR of a CRLF at the end
/// of one and its LF at the start of the next), each file holds exactly the message with
/// CRLF turned into LF and lone CRs kept; a body of 1 MiB or more, streamed to its file,
/// the same.
#[test]
fn line_ends_are_converted_wherever_the_reads_cut_the_bodies() {
    let dv = Dovecot::start(Options { messages: 0, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    let mut sizes: Vec<usize> = (0..40).map(|i| 1 + i * 3_301).collect();
    sizes.extend([65_535, 65_536, 65_537, 131_071, 131_072, (1 << 20) - 10, (1 << 20) + 7_777]);
    for (i, size) in sizes.iter().enumerate() {
        // Lines of varying length, a lone CR now and then, one ending the body.
        let mut body = String::new();
        let mut n = 0;
        while body.len() < *size {
            n += 1;
            let line = "x".repeat((n * 7 + i) % 97);
            body.push_str(&line);
            body.push_str(if n % 13 == 0 { "\ra lone CR\r\n" } else { "\r\n" });
        }
        body.push('\r');
        dv.save("INBOX", &message(&format!("sized {i}"), &body));
    }
    let r = sync_ok(&store);
    assert_eq!(r.downloaded() as usize, sizes.len(), "{:#?}", r.folders);
    let raw = |dir: &std::path::Path| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = ["cur", "new"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(dir.join(sub)).unwrap())
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        v.sort();
        v
    };
    let mut server: Vec<Vec<u8>> = raw(&dv.mail_dir()).iter().map(|d| syncmail_maildir::crlf_to_lf(d)).collect();
    server.sort();
    let local = raw(&tmp.path().join("mail/INBOX"));
    assert_eq!(local.len(), server.len());
    let lone = |d: &Vec<u8>| d.windows(11).any(|w| w == b"\ra lone CR\n");
    assert!(server.iter().filter(|d| lone(d)).count() > 40, "the server kept the lone CRs: the case is tested");
    for (i, (l, s)) in local.iter().zip(&server).enumerate() {
        assert!(l == s, "message {i} ({} bytes here, {} on the server) differs", l.len(), s.len());
    }
}
