//! The folder hierarchy both ways, and messages moved between folders, against a real
//! Dovecot: folders created, renamed and deleted on each side show on the other; a renamed
//! folder of 1,000 messages and 100 messages moved between folders are not transferred
//! again (bytes received and the report's counters say so); deletions that would lose
//! something are turned back.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::path::Path;
use syncmail::{ErrorKind, FolderChange, Side, Store, SyncFlags, SyncReport};
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

const ALL: SyncFlags = TWO_WAY.union(SyncFlags::UPLOAD_HIERARCHY);

fn sync_all(store: &Store) -> SyncReport {
    let (r, _) = sync(store, ALL);
    assert!(r.is_success(), "sync failed: {:#?}", r.errors);
    r
}

fn far_folders(dv: &Dovecot) -> Vec<String> {
    let mut v: Vec<String> = dv.doveadm(&["mailbox", "list"]).lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

fn dir_of(root: &Path, rel: &str) -> std::path::PathBuf {
    root.join("mail").join(rel)
}

/// Nothing transferred: no message downloaded or uploaded, few bytes read.
fn assert_no_transfer(r: &SyncReport, context: &str) {
    assert_eq!((r.downloaded(), r.uploaded()), (0, 0), "{context}: {:#?}", r.folders);
    assert!(r.bytes_received < 256 << 10, "{context}: {} bytes received", r.bytes_received);
}

#[test]
fn folders_created_renamed_and_deleted_on_each_side() {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", "Projects"]);
    for i in 0..5 {
        dv.save("Projects", &message(&format!("p{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    assert_same(&dv, root);

    // Created locally → created on the server, its message uploaded.
    let local = syncmail_maildir::Folder::new(dir_of(root, "Local"));
    local.create().unwrap();
    near_add(root, "Local", "l1", Flags::SEEN);
    let r = sync_all(&store);
    assert!(far_folders(&dv).contains(&"Local".to_string()), "{:?}", far_folders(&dv));
    assert!(r.hierarchy.contains(&FolderChange::Created { side: Side::Server, folder: "Local".into() }));
    assert_eq!(r.uploaded(), 1);
    assert_same(&dv, root);

    // Created locally inside another folder → created with the server's separator.
    syncmail_maildir::Folder::new(dir_of(root, "Local/Sub")).create().unwrap();
    sync_all(&store);
    assert!(far_folders(&dv).contains(&"Local.Sub".to_string()), "{:?}", far_folders(&dv));

    // Renamed locally (with its child) → renamed on the server; nothing transferred.
    std::fs::rename(dir_of(root, "Local"), dir_of(root, "Renamed")).unwrap();
    let r = sync_all(&store);
    assert_no_transfer(&r, "local rename");
    let names = far_folders(&dv);
    assert!(names.contains(&"Renamed".to_string()) && names.contains(&"Renamed.Sub".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("Local")), "{names:?}");
    assert_same(&dv, root);

    // Renamed on the server → renamed here; nothing transferred.
    dv.doveadm(&["mailbox", "rename", "Projects", "Archive.Projects"]);
    let r = sync_all(&store);
    assert_no_transfer(&r, "server rename");
    assert!(dir_of(root, "Archive/Projects/cur").is_dir());
    assert!(!dir_of(root, "Projects").exists());
    assert!(
        r.hierarchy.iter().any(|c| matches!(c, FolderChange::Renamed { side: Side::Local, .. })),
        "{:?}",
        r.hierarchy
    );
    assert_same(&dv, root);

    // Deleted locally, server copy unchanged → deleted on the server.
    std::fs::remove_dir_all(dir_of(root, "Renamed")).unwrap();
    let r = sync_all(&store);
    let names = far_folders(&dv);
    assert!(!names.iter().any(|n| n.starts_with("Renamed")), "{names:?}");
    assert!(r.hierarchy.iter().any(|c| matches!(c, FolderChange::Deleted { side: Side::Server, .. })));

    // Deleted on the server, local copy unchanged → deleted here.
    dv.doveadm(&["mailbox", "delete", "Archive.Projects"]);
    let r = sync_all(&store);
    assert!(!dir_of(root, "Archive/Projects/cur").exists());
    assert!(r.hierarchy.iter().any(|c| matches!(c, FolderChange::Deleted { side: Side::Local, .. })));
    assert_same(&dv, root);
    // And then nothing is left to do.
    let r = sync_all(&store);
    assert!(r.hierarchy.is_empty(), "{:?}", r.hierarchy);
    assert_no_transfer(&r, "quiet run");
}

#[test]
fn a_deleted_folder_comes_back_when_the_other_side_changed_it() {
    let dv = Dovecot::start(Options::default());
    for f in ["Keep", "Gone"] {
        dv.doveadm(&["mailbox", "create", f]);
        dv.save(f, &message(&format!("{f}-1"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);

    // Deleted locally while the server got new mail there: not deleted on the server,
    // downloaded again whole.
    std::fs::remove_dir_all(dir_of(root, "Keep")).unwrap();
    dv.save("Keep", &message("Keep-2", "x"));
    let (r, _) = sync(&store, ALL);
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::DeletionsHeld && e.folder.as_deref() == Some("Keep")));
    assert!(far_folders(&dv).contains(&"Keep".to_string()));
    assert_eq!(near_folder(root, "Keep").scan().unwrap().len(), 2);

    // Deleted on the server while a new message arrived locally: created there again,
    // and the local messages uploaded.
    dv.doveadm(&["mailbox", "delete", "Gone"]);
    near_add(root, "Gone", "Gone-local", Flags::empty());
    let (r, _) = sync(&store, ALL);
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::DeletionsHeld && e.folder.as_deref() == Some("Gone")));
    assert!(far_folders(&dv).contains(&"Gone".to_string()));
    assert_eq!(dv.uids("Gone").len(), 2, "both local messages are on the server again");
    let r = sync_all(&store);
    assert_no_transfer(&r, "after the return");
    assert_same(&dv, root);
}

#[test]
fn a_folder_of_about_1000_renamed_and_100_messages_moved_are_not_transferred_again() {
    let dv = Dovecot::start(Options {
        messages: 2000,
        corpus_args: ["--tiny", "--folders", "Big,Other"].map(String::from).to_vec(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    let r = sync_all(&store);
    assert_eq!(r.downloaded(), 2000, "{:#?}", r.folders);
    // The corpus spreads messages about evenly.
    let big = dv.uids("Big").len();
    let n_other = dv.uids("Other").len();
    assert!(big >= 900 && n_other >= 900, "{big} {n_other}");

    // A local rename of the 1,000-message folder.
    std::fs::rename(dir_of(root, "Big"), dir_of(root, "Renamed")).unwrap();
    let r = sync_all(&store);
    assert_no_transfer(&r, "local rename of 1000");
    assert_eq!(dv.uids("Renamed").len(), big);
    assert_same(&dv, root);

    // A server rename of it.
    dv.doveadm(&["mailbox", "rename", "Renamed", "Again"]);
    let r = sync_all(&store);
    assert_no_transfer(&r, "server rename of 1000");
    assert_eq!(near_folder(root, "Again").scan().unwrap().len(), big);
    assert_same(&dv, root);

    // 100 messages moved on the server, some flagged first: taken from the local copies.
    let uids = dv.uids("Other");
    for &u in &uids[..10] {
        dv.flags_add("Other", u, "\\Flagged");
    }
    let set = format!("{}:{}", uids[0], uids[99]);
    dv.doveadm(&["move", "Again", "mailbox", "Other", "uid", &set]);
    let r = sync_all(&store);
    assert_no_transfer(&r, "100 moved on the server");
    let moved_in: u64 = r.folders.iter().map(|f| f.moved_in).sum();
    assert_eq!(moved_in, 100, "{:#?}", r.folders);
    assert_same(&dv, root);

    // 100 messages moved locally (files renamed into the other folder, flags changed on
    // some): moved on the server, not uploaded and deleted.
    let other = near_folder(root, "Other");
    let again = near_folder(root, "Again");
    let entries: Vec<_> = other.scan().unwrap().into_values().take(100).collect();
    for (i, e) in entries.iter().enumerate() {
        let name = if i < 5 { format!("{}:2,S", e.unique()) } else { e.file_name.clone() };
        std::fs::rename(other.entry_path(e), again.path().join("cur").join(name)).unwrap();
    }
    let r = sync_all(&store);
    assert_no_transfer(&r, "100 moved locally");
    let moved: u64 = r.folders.iter().map(|f| f.moved_on_server).sum();
    assert_eq!(moved, 100, "{:#?}", r.folders);
    assert_eq!(r.folders.iter().map(|f| f.far_deleted).sum::<u64>(), 0);
    assert_eq!(dv.uids("Again").len(), big + 200);
    assert_eq!(dv.uids("Other").len(), n_other - 200);
    assert_same(&dv, root);
    let r = sync_all(&store);
    assert_no_transfer(&r, "quiet run");
}

fn subject_of(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").trim().to_string()
}

/// Every hierarchy change and move kind at once, on a synced store.
fn mixed_scenario(dv: &Dovecot, root: &Path) -> Store {
    for (f, n) in [("A", 4), ("B", 3), ("C", 2), ("D", 1), ("E", 1), ("F", 1)] {
        dv.doveadm(&["mailbox", "create", f]);
        for i in 1..=n {
            dv.save(f, &message(&format!("{}{i}", f.to_lowercase()), "x"));
        }
    }
    let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    std::fs::rename(dir_of(root, "A"), dir_of(root, "A2")).unwrap(); // renamed here
    dv.doveadm(&["mailbox", "rename", "B", "B2"]); // renamed there
    let c1 = near_find(root, "C", "c1").unwrap(); // moved here, and marked seen
    std::fs::rename(
        near_folder(root, "C").entry_path(&c1),
        dir_of(root, "D").join("cur").join(format!("{}:2,S", c1.unique())),
    )
    .unwrap();
    let d1 = far_uid(dv, "D", "d1").to_string(); // moved there
    dv.doveadm(&["move", "C", "mailbox", "D", "uid", &d1]);
    syncmail_maildir::Folder::new(dir_of(root, "N")).create().unwrap(); // created here
    near_add(root, "N", "n1", Flags::empty());
    dv.doveadm(&["mailbox", "delete", "E"]); // deleted there
    std::fs::remove_dir_all(dir_of(root, "F")).unwrap(); // deleted here
    store
}

fn assert_mixed_result(dv: &Dovecot, root: &Path, context: &str) {
    assert_same(dv, root);
    let got: std::collections::BTreeMap<String, Vec<(String, Flags)>> = dv
        .server_messages()
        .into_iter()
        .filter(|(f, _)| f != "INBOX")
        .map(|(f, ms)| {
            let mut v: Vec<(String, Flags)> = ms.iter().map(|(d, fl)| (subject_of(d), *fl)).collect();
            v.sort();
            (f, v)
        })
        .collect();
    let s = |x: &str, f: Flags| (x.to_string(), f);
    let n = Flags::empty();
    let want: std::collections::BTreeMap<String, Vec<(String, Flags)>> = [
        ("A2", vec![s("a1", n), s("a2", n), s("a3", n), s("a4", n)]),
        ("B2", vec![s("b1", n), s("b2", n), s("b3", n)]),
        ("C", vec![s("c2", n), s("d1", n)]),
        ("D", vec![s("c1", Flags::SEEN)]),
        ("N", vec![s("n1", n)]),
    ]
    .into_iter()
    .map(|(f, v)| (f.to_string(), v))
    .collect();
    assert_eq!(got, want, "{context}");
}

#[test]
fn every_kind_of_change_in_one_run() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let store = mixed_scenario(&dv, tmp.path());
    let r = sync_all(&store);
    assert_mixed_result(&dv, tmp.path(), "after one sync");
    assert_eq!((r.downloaded(), r.uploaded()), (0, 1), "only n1 travels: {:#?}", r.folders);
    assert_eq!(r.folders.iter().map(|f| f.moved_in + f.moved_on_server).sum::<u64>(), 2);
}

/// The same, interrupted after step k for every k, then resumed: the same end state,
/// nothing lost or doubled, and a further run has nothing to do.
#[test]
fn every_kind_of_change_interrupted_at_every_step_then_resumed() {
    interrupted_at_every_step(
        Options::default(),
        ALL,
        &|dv: &mut Dovecot, root: &Path| mixed_scenario(dv, root),
        &assert_mixed_result,
        10,
    );
}

#[test]
fn another_separator_and_names_beyond_ascii_both_ways() {
    let dv = Dovecot::start(Options { separator: Some('/'), ..Default::default() });
    dv.doveadm(&["mailbox", "create", "Lists/rust"]);
    dv.doveadm(&["mailbox", "create", "Brouillons d'été"]);
    dv.save("Lists/rust", &message("r1", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    assert_eq!(syncmail_maildir::Folder::new(dir_of(root, "Lists/rust")).scan().unwrap().len(), 1);
    assert!(dir_of(root, "Brouillons d'été/cur").is_dir());

    // Made here: nested, and in UTF-8.
    for p in ["Projekte/Q4", "Entwürfe", "日本語/メモ"] {
        syncmail_maildir::Folder::new(dir_of(root, p)).create().unwrap();
    }
    near_add(root, "Entwürfe", "e1", Flags::empty());
    let r = sync_all(&store);
    let names = far_folders(&dv);
    for want in ["Projekte/Q4", "Entwürfe", "日本語/メモ"] {
        assert!(names.contains(&want.to_string()), "{want} missing from {names:?}");
    }
    assert_eq!(dv.uids("Entwürfe").len(), 1);
    assert_eq!(r.hierarchy.iter().filter(|c| matches!(c, FolderChange::Created { side: Side::Server, .. })).count(), 3);
    // Renamed here across levels.
    std::fs::rename(dir_of(root, "Entwürfe"), dir_of(root, "日本語/Entwürfe")).unwrap();
    let r = sync_all(&store);
    assert_no_transfer(&r, "rename into a UTF-8 parent");
    assert_eq!(dv.uids("日本語/Entwürfe").len(), 1);
    let r = sync_all(&store);
    assert!(r.hierarchy.is_empty(), "{:?}", r.hierarchy);
}

#[test]
fn a_local_name_holding_the_separator_is_refused_and_the_rest_syncs() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    syncmail_maildir::Folder::new(dir_of(root, "v1.2")).create().unwrap();
    syncmail_maildir::Folder::new(dir_of(root, "Fine")).create().unwrap();
    let (r, _) = sync(&store, ALL);
    let e = r.errors.iter().find(|e| e.kind == ErrorKind::FolderName).expect("an error for v1.2");
    assert!(e.message.contains("v1.2") && e.message.contains("separator"), "{e:#?}");
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let names = far_folders(&dv);
    assert!(names.contains(&"Fine".to_string()) && !names.iter().any(|n| n.starts_with("v1")), "{names:?}");
}

#[test]
fn names_that_differ_only_in_case_or_unicode_form_get_one_directory_each_or_an_error() {
    let dv = Dovecot::start(Options::default());
    for f in ["Work", "work", "Caf\u{e9}", "Cafe\u{301}"] {
        dv.doveadm(&["mailbox", "create", f]);
        dv.save(f, &message(&format!("in {f}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    let (r, _) = sync(&store, ALL);
    let refused: Vec<&str> =
        r.errors.iter().filter(|e| e.kind == ErrorKind::FolderName).filter_map(|e| e.folder.as_deref()).collect();
    assert_eq!(refused.len(), 2, "one of each pair is refused: {:#?}", r.errors);
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
    // One directory per pair, each holding its own folder's message only.
    let dirs: Vec<String> = std::fs::read_dir(root.join("mail"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "INBOX")
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    for d in dirs {
        let msgs = syncmail_testkit::read_maildir(&root.join("mail").join(&d));
        assert_eq!(msgs.len(), 1, "{d}");
    }
    // And a second run says the same, changing nothing.
    let (r, _) = sync(&store, ALL);
    assert_eq!(r.errors.len(), 2, "{:#?}", r.errors);
    assert_eq!(r.downloaded() + r.uploaded(), 0);
}

#[test]
fn special_use_folders_get_fixed_local_names_and_subscriptions_can_limit_the_sync() {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", "-s", "Sent Items"]);
    dv.doveadm(&["mailbox", "create", "-s", "Subscribed"]);
    dv.doveadm(&["mailbox", "create", "Unsubscribed"]);
    dv.save("Sent Items", &message("sent1", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let extra =
        "[accounts.test.folders]\nsubscribed-only = true\n[accounts.test.folders.local-names]\nsent = \"Sent\"\n";
    let store = Store::open(account(&dv, root, Conn::Plain, extra)).unwrap();
    let r = sync_all(&store);
    assert_eq!(r.downloaded(), 1);
    assert_eq!(syncmail_maildir::Folder::new(dir_of(root, "Sent")).scan().unwrap().len(), 1);
    assert!(!dir_of(root, "Sent Items").exists());
    assert!(dir_of(root, "Subscribed/cur").is_dir());
    assert!(!dir_of(root, "Unsubscribed").exists(), "not subscribed, not synced");
    // A message written locally to Sent goes to the server's Sent Items.
    near_add(root, "Sent", "sent2", Flags::SEEN);
    let r = sync_all(&store);
    assert_eq!(r.uploaded(), 1);
    assert_eq!(dv.uids("Sent Items").len(), 2);
    let r = sync_all(&store);
    assert!(r.hierarchy.is_empty(), "{:?}", r.hierarchy);
    assert_no_transfer(&r, "quiet run");
}

#[test]
fn unknown_special_use_in_local_names_is_a_config_error() {
    let text = "[accounts.a]\nmaildir = \"/tmp/m\"\n[accounts.a.imap]\nhost = \"h\"\nuser = \"u\"\npassword = \"p\"\n\
                [accounts.a.folders.local-names]\nsnet = \"Sent\"\n";
    let e = syncmail::Config::parse(text, Path::new("/tmp/c.toml")).unwrap_err().to_string();
    assert!(e.contains("snet") && e.contains("sent, drafts"), "{e}");
}

#[test]
fn the_maildir_plus_plus_layout_both_ways() {
    use syncmail_maildir::Layout::MaildirPlusPlus as PP;
    let dv = Dovecot::start(Options::default());
    dv.save("INBOX", &message("i1", "x"));
    dv.doveadm(&["mailbox", "create", "Lists.rust"]);
    dv.save("Lists.rust", &message("r1", "x"));
    dv.doveadm(&["mailbox", "create", "v1.2"]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account_with(&dv, root, Conn::Plain, "layout = \"maildir++\"", "")).unwrap();
    let (r, _) = sync(&store, ALL);
    // "v1.2" is the server's folder "2" inside "v1": with '.' as the separator it is two
    // levels, which Maildir++ stores fine.
    assert!(r.is_success(), "{:#?}", r.errors);
    let mail = root.join("mail");
    assert_eq!(syncmail_testkit::read_maildir(&mail).len(), 1, "INBOX is the root");
    assert_eq!(syncmail_testkit::read_maildir(&mail.join(".Lists.rust")).len(), 1);
    syncmail_testkit::assert_store_matches_in(&dv, &mail, PP);

    // Made here → made there; renamed here (with the folder inside it) → renamed there.
    syncmail_maildir::Folder::new(mail.join(".Local")).create().unwrap();
    syncmail_maildir::Folder::new(mail.join(".Local.Sub")).create().unwrap();
    let sub = syncmail_maildir::Folder::new(mail.join(".Local.Sub"));
    let staged = sub.stage("local-s1", b"Subject: s1\nMessage-ID: <s1@test>\n\nx\n").unwrap();
    sub.publish(staged, Flags::SEEN).unwrap();
    let r = sync_all(&store);
    assert_eq!(r.uploaded(), 1);
    assert!(far_folders(&dv).contains(&"Local.Sub".to_string()));
    std::fs::rename(mail.join(".Local.Sub"), mail.join(".Local.Moved")).unwrap();
    let r = sync_all(&store);
    assert_no_transfer(&r, "maildir++ rename");
    let names = far_folders(&dv);
    assert!(names.contains(&"Local.Moved".to_string()) && !names.contains(&"Local.Sub".to_string()), "{names:?}");
    // Renamed on the server with a folder inside: both follow here.
    dv.doveadm(&["mailbox", "rename", "Lists", "Groups"]);
    let r = sync_all(&store);
    assert_no_transfer(&r, "maildir++ server rename");
    assert!(mail.join(".Groups.rust/cur").is_dir() && !mail.join(".Lists.rust").exists());
    syncmail_testkit::assert_store_matches_in(&dv, &mail, PP);
    let r = sync_all(&store);
    assert!(r.hierarchy.is_empty(), "{:?}", r.hierarchy);
}

#[test]
fn messages_moved_into_a_new_local_folder_are_moved_on_the_server_not_uploaded() {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", "Work"]);
    for i in 0..8 {
        dv.save("Work", &message(&format!("m{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    // Folders are synced INBOX first, then by name: "Archive" comes before its source
    // "Work" (the move is seen first from the destination), "Zzz" after it.
    for target in ["Archive", "Zzz"] {
        let dest = syncmail_maildir::Folder::new(dir_of(root, target));
        dest.create().unwrap();
        let work = near_folder(root, "Work");
        for e in work.scan().unwrap().into_values().take(3) {
            std::fs::rename(work.entry_path(&e), dest.path().join("cur").join(&e.file_name)).unwrap();
        }
        let r = sync_all(&store);
        assert_eq!(r.uploaded(), 0, "{target}: {:#?}", r.folders);
        assert_eq!(r.folders.iter().map(|f| f.moved_on_server).sum::<u64>(), 3, "{target}: {:#?}", r.folders);
        assert_eq!(dv.uids(target).len(), 3);
        assert_same(&dv, root);
        let r = sync_all(&store);
        assert_no_transfer(&r, "quiet run");
    }
    assert_eq!(dv.uids("Work").len(), 2);
}

#[test]
fn an_emptied_store_deletes_no_folder_or_message_on_the_server() {
    let dv = Dovecot::start(Options { messages: 60, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    let before = far_folders(&dv);
    let messages_before = dv.server_messages();
    assert!(before.len() >= 4, "{before:?}");
    // The whole store gone (an unmounted disk, say).
    std::fs::remove_dir_all(root.join("mail")).unwrap();
    let (r, _) = sync(&store, ALL);
    assert!(r.errors.iter().any(|e| e.kind == ErrorKind::DeletionsHeld), "{:#?}", r.errors);
    assert_eq!(far_folders(&dv), before);
    assert_eq!(dv.server_messages(), messages_before);
}

#[test]
fn most_folders_vanishing_from_the_server_at_once_are_kept_here_until_confirmed() {
    let dv = Dovecot::start(Options::default());
    for f in ["A", "B", "C", "D"] {
        dv.doveadm(&["mailbox", "create", f]);
        dv.save(f, &message(&format!("in {f}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    sync_all(&store);
    // Three of five folders gone from the listing at once (a server that lists only part
    // of the account looks the same): held, every local copy kept.
    for f in ["A", "B", "C"] {
        dv.doveadm(&["mailbox", "delete", f]);
    }
    let (r, _) = sync(&store, ALL);
    assert!(
        r.errors.iter().any(|e| e.kind == ErrorKind::DeletionsHeld && e.message.contains("3 of 5")),
        "{:#?}",
        r.errors
    );
    for f in ["A", "B", "C"] {
        assert_eq!(near_folder(root, f).scan().unwrap().len(), 1, "{f} kept");
    }
    let mut req = syncmail::SyncRequest::new(ALL);
    req.confirm_deletions = true;
    let r = store.synchronize(req);
    assert!(r.is_success(), "{:#?}", r.errors);
    for f in ["A", "B", "C"] {
        assert!(!dir_of(root, f).join("cur").exists(), "{f} deleted once confirmed");
    }
    assert_same(&dv, root);
}

/// Deletes a server folder the moment the sync is about to look into it.
struct DeleteWhenChecked {
    dv_conf: std::path::PathBuf,
    folder: &'static str,
    inner: Recorder,
    done: std::sync::atomic::AtomicBool,
}

impl syncmail::SyncProgress for DeleteWhenChecked {
    fn progress(&self, p: &syncmail::Progress) {
        if p.step == syncmail::Step::CheckFolder
            && p.folder.as_deref() == Some(self.folder)
            && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let out = std::process::Command::new("/usr/bin/doveadm")
                .arg("-c")
                .arg(&self.dv_conf)
                .args(["mailbox", "delete", "-u", "test", self.folder])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        self.inner.progress(p);
    }
    fn error(&self, e: &syncmail::SyncError) {
        self.inner.error(e);
    }
    fn done(&self, r: &SyncReport) {
        self.inner.done(r);
    }
}

#[test]
fn a_folder_deleted_on_the_server_while_the_sync_runs_is_no_error_and_goes_next_time() {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", "Brief"]);
    dv.save("Brief", &message("short-lived", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let store = Store::open(account(&dv, root, Conn::Plain, "")).unwrap();
    let rec = std::sync::Arc::new(DeleteWhenChecked {
        dv_conf: dv.conf(),
        folder: "Brief",
        inner: Recorder::default(),
        done: Default::default(),
    });
    let r = store.synchronize(syncmail::SyncRequest::new(ALL).with_progress(rec));
    assert!(r.is_success(), "{:#?}", r.errors);
    assert!(!far_folders(&dv).contains(&"Brief".to_string()));
    let r = sync_all(&store);
    assert!(!dir_of(root, "Brief").exists(), "{:?}", r.hierarchy);
    assert_same(&dv, root);
}
