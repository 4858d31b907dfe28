//! HEADERS_ONLY and the `max-size` policy against a real Dovecot: messages come down as
//! placeholders (header and a note), their bodies on demand (`Store::fetch_bodies`),
//! replacing the placeholder in place; a placeholder is never uploaded.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syncmail::{Bodies, ErrorKind, Store, SyncFlags, SyncReport, SyncRequest};
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

const MARKER: &str = "X-Syncmail-Placeholder";
const HEADERS: SyncFlags = DOWNLOAD.union(SyncFlags::HEADERS_ONLY);
const HEADERS_TWO_WAY: SyncFlags = TWO_WAY.union(SyncFlags::HEADERS_ONLY);

fn fetch(store: &Store, which: Bodies) -> SyncReport {
    let rec = std::sync::Arc::new(Recorder::default());
    let r = store.fetch_bodies(&which, &SyncRequest::new(SyncFlags::ON_DEMAND).with_progress(rec.clone()));
    assert_eq!(rec.done.lock().unwrap().len(), 1, "done must be called exactly once");
    r
}

fn fetched(r: &SyncReport) -> u64 {
    r.folders.iter().map(|f| f.bodies_fetched).sum()
}

fn is_placeholder(data: &[u8]) -> bool {
    header(data, MARKER).is_some()
}

/// The first value of a header field, unfolded.
fn header(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let head = text.split("\n\n").next().unwrap_or("").replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ");
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Every local message file under the Maildir root: path relative to it → content.
fn local_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.join("mail")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.parent().is_some_and(|x| x.ends_with("cur") || x.ends_with("new")) {
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Every server message, as (folder, content) with LF line ends.
fn server_texts(dv: &Dovecot) -> Vec<Vec<u8>> {
    dv.server_messages().into_values().flatten().map(|(d, _)| d).collect()
}

/// Checks that every local file is a placeholder of a server message (same Subject, From,
/// Message-ID) or that message whole, and that each server message is there once.
fn assert_placeholders_or_whole(dv: &Dovecot, root: &Path, context: &str) -> usize {
    let server = server_texts(dv);
    let local = local_files(root);
    assert_eq!(local.len(), server.len(), "{context}: {} local files, {} server messages", local.len(), server.len());
    let mut placeholders = 0;
    let mut seen = BTreeSet::new();
    for (path, data) in &local {
        let data = syncmail_maildir::crlf_to_lf(data);
        let i = if is_placeholder(&data) {
            placeholders += 1;
            let mid = header(&data, "Message-ID");
            server
                .iter()
                .position(|s| header(s, "Message-ID") == mid)
                .unwrap_or_else(|| panic!("{context}: {path}: a placeholder of no server message"))
        } else {
            server.iter().position(|s| *s == data).unwrap_or_else(|| {
                panic!(
                    "{context}: {path}: not a server message:\n{}",
                    String::from_utf8_lossy(&data[..data.len().min(900)])
                )
            })
        };
        let s = &server[i];
        for f in ["Subject", "From", "Date", "Message-ID"] {
            assert_eq!(header(&data, f), header(s, f), "{context}: {path}: {f}");
        }
        assert!(seen.insert(i), "{context}: {path}: a message twice");
    }
    placeholders
}

/// File names without the folder's `new/`/`cur/` step (a file moves to `cur/` once it has
/// flags): unique name and flags.
fn names(root: &Path) -> BTreeSet<String> {
    local_files(root).into_keys().map(|p| p.rsplit('/').next().unwrap().to_string()).collect()
}

#[test]
fn headers_only_then_fetching_the_bodies_gives_the_bytes_of_a_full_sync() {
    let dv = Dovecot::start(Options { messages: 40, ..Default::default() });
    // The corpus has multipart messages: their placeholders must read as plain text.
    let server = server_texts(&dv);
    assert!(server.iter().any(|m| header(m, "Content-Type").is_some_and(|c| c.starts_with("multipart/"))));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    let (r, _) = sync(&store, HEADERS);
    assert!(r.is_success(), "{:#?}", r.errors);
    let placeholders: u64 = r.folders.iter().map(|f| f.placeholders).sum();
    assert_eq!(placeholders, server.len() as u64);
    assert_eq!(r.downloaded(), server.len() as u64);
    let total: u64 = server.iter().map(|m| m.len() as u64).sum();
    let got: u64 = r.folders.iter().map(|f| f.bytes_downloaded).sum();
    assert!(got * 4 < total, "headers only, yet {got} of {total} bytes came down");
    assert_eq!(assert_placeholders_or_whole(&dv, root, "after a headers-only sync"), server.len());
    for data in local_files(root).values() {
        assert_eq!(header(data, "Content-Type").as_deref(), Some("text/plain; charset=us-ascii"));
        let text = String::from_utf8_lossy(data);
        assert!(text.contains("not downloaded yet") && text.contains("syncmail fetch -a test "), "{text}");
    }
    // Flags came down on the placeholders already.
    let flagged_far: usize = dv.server_messages().values().flatten().filter(|(_, f)| !f.is_empty()).count();
    let flagged_near = names(root).iter().filter(|n| n.contains(":2,") && !n.ends_with(":2,")).count();
    assert!(flagged_far > 0);
    assert_eq!(flagged_far, flagged_near);
    // Nothing to do on the next headers-only sync.
    let (again, _) = sync(&store, HEADERS);
    assert!(again.is_success() && again.downloaded() == 0, "{again:#?}");

    let before = names(root);
    let r = fetch(&store, Bodies::All { folder: None });
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(fetched(&r), server.len() as u64);
    assert_eq!(names(root), before, "fetching bodies changed a file name (identity or flags)");
    assert_same(&dv, root);
    // The same as a full sync of the same server, byte for byte.
    let full = tempfile::tempdir().unwrap();
    let full_store = Store::open(account(&dv, full.path(), Conn::Plain, "")).unwrap();
    sync_ok(&full_store);
    let strip = |m: BTreeMap<String, Vec<u8>>| -> BTreeSet<Vec<u8>> { m.into_values().collect() };
    assert_eq!(strip(local_files(root)), strip(local_files(full.path())));
    // Whole now: nothing left to fetch, nothing to sync.
    assert_eq!(fetched(&fetch(&store, Bodies::All { folder: None })), 0);
    let r = sync2(&store);
    assert_eq!(r.downloaded() + r.uploaded(), 0, "{r:#?}");
}

/// A server with these messages in INBOX (and these other folders), synced two-way
/// headers-only.
fn synced_headers_only(dv: &Dovecot, root: &Path, subjects: &[&str], folders: &[&str]) -> Store {
    for f in folders {
        dv.doveadm(&["mailbox", "create", f]);
    }
    for s in subjects {
        dv.save("INBOX", &message(s, &format!("the body of {s}")));
    }
    let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    store
}

#[test]
fn flags_on_placeholders_sync_both_ways_and_survive_the_fetch() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = synced_headers_only(&dv, root, &["alpha", "beta"], &[]);
    // The placeholder shows its subject and sender.
    let e = near_find(root, "INBOX", "alpha").unwrap();
    let data = near_folder(root, "INBOX").read(&e).unwrap();
    assert!(is_placeholder(&data));
    assert_eq!(header(&data, "From").as_deref(), Some("Alice <alice@example.org>"));
    // Flagged here → on the server; seen on the server → here.
    near_set_flags(root, "INBOX", "alpha", Flags::FLAGGED);
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "beta"), "\\Seen");
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success() && r.uploaded() == 0, "{r:#?}");
    let (far, near) = both_sides(&dv, root, "INBOX");
    assert_eq!(far["alpha"], Flags::FLAGGED);
    assert_eq!(near["beta"], Flags::SEEN);
    assert_eq!(far, near);
    // Fetched by UID and by Message-ID: the flags stay, the server's \Seen is not set by it.
    let uid = far_uid(&dv, "INBOX", "alpha");
    let r = fetch(&store, Bodies::Uids { folder: "INBOX".into(), uids: vec![uid] });
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    let r = fetch(&store, Bodies::MessageId("beta@test".into()));
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    assert_same(&dv, root);
    let (far, _) = both_sides(&dv, root, "INBOX");
    assert_eq!(far["alpha"], Flags::FLAGGED);
    // Asking again, or for what is not there, says so.
    let r = fetch(&store, Bodies::MessageId("<beta@test>".into()));
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::Message), "{r:#?}");
    let r = fetch(&store, Bodies::Uids { folder: "INBOX".into(), uids: vec![999] });
    assert!(r.errors.iter().any(|e| e.message.contains("UID 999")), "{r:#?}");
    let r = fetch(&store, Bodies::Uids { folder: "Nope".into(), uids: vec![1] });
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::Config), "{r:#?}");
}

#[test]
fn max_size_brings_large_messages_as_placeholders_without_headers_only() {
    let dv = Dovecot::start(Options::default());
    dv.save("INBOX", &message("small", "short"));
    dv.save("INBOX", &message("large", &"x".repeat(5000)));
    // Above 1 MiB a body is streamed to tmp/ on its way in, never held whole in memory.
    dv.save("INBOX", &message("huge", &format!("{}\r\n", "y".repeat(78)).repeat(16_000)));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account_with(&dv, root, Conn::Plain, "max-size = \"2K\"", "")).unwrap();
    let r = sync2(&store);
    assert_eq!(r.folders.iter().map(|f| f.placeholders).sum::<u64>(), 2, "{r:#?}");
    let read = |s: &str| near_folder(root, "INBOX").read(&near_find(root, "INBOX", s).unwrap()).unwrap();
    assert!(!is_placeholder(&read("small")));
    let large = read("large");
    assert!(is_placeholder(&large) && large.len() < 2048, "{}", String::from_utf8_lossy(&large));
    assert!(String::from_utf8_lossy(&large).contains(" KiB on the server)"));
    let r = fetch(&store, Bodies::MessageId("<large@test>".into()));
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    assert!(is_placeholder(&read("huge")));
    let r = fetch(&store, Bodies::All { folder: Some("INBOX".into()) });
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    assert!(r.folders[0].bytes_downloaded > 1 << 20, "{r:#?}");
    assert_same(&dv, root);
    let tmp_dir = near_folder(root, "INBOX").path().join("tmp");
    assert_eq!(std::fs::read_dir(tmp_dir).unwrap().count(), 0, "a file left in tmp/");
}

#[test]
fn a_placeholder_is_never_uploaded_and_a_local_move_moves_it_on_the_server() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = synced_headers_only(&dv, root, &["stays", "moved", "copied"], &["Archive"]);
    let inbox = near_folder(root, "INBOX");
    let archive = near_folder(root, "Archive");
    // Moved by a mail reader (same file name): UID MOVE on the server, no APPEND.
    let e = near_find(root, "INBOX", "moved").unwrap();
    std::fs::rename(inbox.entry_path(&e), archive.path().join("cur").join(&e.file_name)).unwrap();
    // Copied under a new name (a placeholder syncmail does not know): refused.
    let e = near_find(root, "INBOX", "copied").unwrap();
    std::fs::copy(inbox.entry_path(&e), archive.path().join("new").join("copy-of-a-placeholder")).unwrap();
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert_eq!(r.uploaded(), 0, "{r:#?}");
    assert_eq!(r.folders.iter().map(|f| f.moved_on_server).sum::<u64>(), 1, "{r:#?}");
    let refused: Vec<_> = r.errors.iter().filter(|e| e.message.contains("placeholder")).collect();
    assert_eq!(refused.len(), 1, "{:#?}", r.errors);
    assert_eq!(refused[0].kind, ErrorKind::Message);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let far = dv.server_messages();
    assert_eq!(far["Archive"].len(), 1);
    assert_eq!(far["INBOX"].len(), 2);
    assert!(far.values().flatten().all(|(d, _)| !is_placeholder(d)), "a placeholder reached the server");
    // The moved placeholder is still known as one in its new folder: its body comes.
    std::fs::remove_file(archive.path().join("new").join("copy-of-a-placeholder")).unwrap();
    let r = fetch(&store, Bodies::All { folder: Some("Archive".into()) });
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    // A placeholder whose message the server expunged while its flags changed here would
    // be uploaded again by the rules: it is refused instead.
    dv.expunge("INBOX", far_uid(&dv, "INBOX", "stays"));
    near_set_flags(root, "INBOX", "stays", Flags::FLAGGED);
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert_eq!(r.uploaded(), 0, "{r:#?}");
    assert!(r.errors.iter().any(|e| e.message.contains("placeholder")), "{r:#?}");
    assert!(dv.server_messages().values().flatten().all(|(d, _)| !is_placeholder(d)));
}

fn fetch_scenario(dv: &Dovecot, root: &Path) -> Store {
    let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
    let (r, _) = sync(&store, HEADERS);
    assert!(r.is_success(), "{:#?}", r.errors);
    store
}

#[test]
fn a_fetch_interrupted_at_every_step_leaves_placeholder_or_whole_then_resumes() {
    let opts = Options { messages: 12, ..Default::default() };
    let mut k = 1;
    loop {
        let dv = Dovecot::start(opts.clone());
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let store = fetch_scenario(&dv, root);
        let before = names(root);
        let mut req = SyncRequest::new(SyncFlags::ON_DEMAND);
        req.interrupt_after = Some(k);
        let r = store.fetch_bodies(&Bodies::All { folder: None }, &req);
        let interrupted = r.errors.iter().any(|e| e.kind == ErrorKind::Cancelled);
        assert!(interrupted || r.is_success(), "step {k}: {:#?}", r.errors);
        let context = format!("interrupted after step {k}");
        assert_placeholders_or_whole(&dv, root, &context);
        assert_eq!(names(root), before, "{context}: a file name changed");
        let r = fetch(&store, Bodies::All { folder: None });
        assert!(r.is_success(), "{context}, resumed: {:#?}", r.errors);
        assert_eq!(assert_placeholders_or_whole(&dv, root, &context), 0);
        assert_same(&dv, root);
        assert_eq!(fetched(&fetch(&store, Bodies::All { folder: None })), 0, "{context}: marks left");
        let r = sync2(&store);
        assert_eq!(r.downloaded() + r.uploaded(), 0, "{context}: {r:#?}");
        if !interrupted {
            assert!(k > 3, "the fetch has only {k} steps: the hook is not reached");
            eprintln!("a fetch interrupted and resumed at each of {} steps", k - 1);
            return;
        }
        k += 1;
    }
}

#[test]
fn a_headers_only_sync_interrupted_at_every_step_then_resumed() {
    common::interrupted_at_every_step(
        Options { messages: 12, ..Default::default() },
        HEADERS,
        &|dv: &mut Dovecot, root: &Path| Store::open(account(dv, root, Conn::Plain, "")).unwrap(),
        &|dv: &Dovecot, root: &Path, context: &str| {
            let n = assert_placeholders_or_whole(dv, root, context);
            assert_eq!(n, server_texts(dv).len(), "{context}: every message a placeholder");
        },
        2,
    );
}

#[test]
fn a_renumbered_folder_keeps_its_placeholders_without_downloading_again() {
    let mut dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let subjects: Vec<String> = (1..=6).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let store = synced_headers_only(&dv, root, &refs, &[]);
    // One whole already, one flagged here meanwhile.
    let r = fetch(&store, Bodies::MessageId("n1@test".into()));
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    near_set_flags(root, "INBOX", "n2", Flags::FLAGGED);
    let before = local_files(root).len();
    dv.renumber("INBOX");
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.downloaded() + r.uploaded(), 0, "{r:#?}");
    assert_eq!(local_files(root).len(), before);
    assert_eq!(assert_placeholders_or_whole(&dv, root, "after the renumbering"), 5);
    // Still known as placeholders under the new UIDs: their bodies come.
    let r = fetch(&store, Bodies::All { folder: None });
    assert!(r.is_success() && fetched(&r) == 5, "{r:#?}");
    assert_same(&dv, root);
    let (far, _) = both_sides(&dv, root, "INBOX");
    assert_eq!(far["n2"], Flags::FLAGGED);
}

#[test]
fn fetch_flagged_brings_the_body_of_a_placeholder_flagged_on_either_side() {
    let dv = Dovecot::start(Options::default());
    for s in ["plain", "flagged-here", "flagged-there"] {
        dv.save("INBOX", &message(s, &format!("the body of {s}")));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account_with(&dv, root, Conn::Plain, "fetch-flagged = true", "")).unwrap();
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(assert_placeholders_or_whole(&dv, root, "first sync"), 3);
    near_set_flags(root, "INBOX", "flagged-here", Flags::FLAGGED);
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "flagged-there"), "\\Flagged");
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.folders.iter().map(|f| f.bodies_fetched).sum::<u64>(), 2, "{r:#?}");
    let read = |s: &str| near_folder(root, "INBOX").read(&near_find(root, "INBOX", s).unwrap()).unwrap();
    assert!(is_placeholder(&read("plain")));
    assert!(!is_placeholder(&read("flagged-here")) && !is_placeholder(&read("flagged-there")));
    assert_eq!(assert_placeholders_or_whole(&dv, root, "after flagging"), 1);
    let (far, near) = both_sides(&dv, root, "INBOX");
    assert_eq!(far, near);
    assert_eq!(far["flagged-here"], Flags::FLAGGED);
    assert_eq!(near["flagged-there"], Flags::FLAGGED);
}

/// A reader that moves a message by writing a copy under a new name and deleting the
/// original (mutt does): the placeholder is recognized by Message-ID and the size its
/// marker declares, so the message is moved on the server, not deleted there while only
/// a placeholder remains.
#[test]
fn a_placeholder_moved_as_a_copy_under_a_new_name_is_moved_on_the_server() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = synced_headers_only(&dv, root, &["keep", "move-me"], &["Archive"]);
    // Without a Message-ID, only the marker's id can tell which message the copy is.
    dv.save("INBOX", b"Subject: no-id\r\nFrom: x@example.org\r\n\r\nthe body of no-id\r\n");
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    let inbox = near_folder(root, "INBOX");
    let archive = near_folder(root, "Archive");
    for s in ["move-me", "no-id"] {
        let e = near_find(root, "INBOX", s).unwrap();
        let data = inbox.read(&e).unwrap();
        archive.publish(archive.stage(&format!("written-by-a-reader-{s}"), &data).unwrap(), Flags::SEEN).unwrap();
        inbox.remove(&e).unwrap();
    }
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert_eq!(r.folders.iter().map(|f| f.moved_on_server).sum::<u64>(), 2, "{r:#?}");
    assert_eq!(r.uploaded(), 0, "{r:#?}");
    let far = dv.server_messages();
    assert_eq!((far["INBOX"].len(), far["Archive"].len()), (1, 2));
    assert!(far.values().flatten().all(|(d, _)| !is_placeholder(d)));
    let r = fetch(&store, Bodies::All { folder: Some("Archive".into()) });
    assert!(r.is_success() && fetched(&r) == 2, "{r:#?}");
    let r = fetch(&store, Bodies::All { folder: None });
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    assert_same(&dv, root);
}

/// The same, when the destination folder is synced before the source (Archive before
/// Zeta): the copy is a move in flight, not a placeholder to refuse; no error at all.
#[test]
fn a_placeholder_copied_to_a_folder_synced_first_waits_for_the_move() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = synced_headers_only(&dv, root, &[], &["Archive", "Zeta"]);
    dv.save("Zeta", &message("wandering", "the body of wandering"));
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    let (zeta, archive) = (near_folder(root, "Zeta"), near_folder(root, "Archive"));
    let e = near_find(root, "Zeta", "wandering").unwrap();
    let data = zeta.read(&e).unwrap();
    assert!(is_placeholder(&data));
    archive.publish(archive.stage("copied-by-a-reader", &data).unwrap(), Flags::empty()).unwrap();
    zeta.remove(&e).unwrap();
    let (r, _) = sync(&store, HEADERS_TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.folders.iter().map(|f| f.moved_on_server).sum::<u64>(), 1, "{r:#?}");
    let far = dv.server_messages();
    assert_eq!((far["Archive"].len(), far["Zeta"].len()), (1, 0));
    let r = fetch(&store, Bodies::All { folder: None });
    assert!(r.is_success() && fetched(&r) == 1, "{r:#?}");
    assert_same(&dv, root);
}
