//! Against a real Cyrus IMAP 3.6, a second server beside Dovecot and the one that offers
//! OBJECTID (RFC 8474): a two-way sync with folders made on both sides, a folder renamed
//! on the server while mail arrived in it recognized by its MAILBOXID, and messages
//! without a Message-ID moved on the server recognized by their EMAILID: none of them
//! downloaded again.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Recorder, cyrus_account, near_add};
use std::path::Path;
use std::sync::Arc;
use syncmail::{FolderChange, Side, Store, SyncFlags, SyncReport, SyncRequest};
use syncmail_imap::Flags;
use syncmail_testkit::cyrus::Cyrus;
use syncmail_testkit::message;

const ALL: SyncFlags = SyncFlags::UPLOAD_HIERARCHY
    .union(SyncFlags::DOWNLOAD_HIERARCHY)
    .union(SyncFlags::DOWNLOAD_CONTENTS)
    .union(SyncFlags::UPLOAD_CONTENTS);

fn store(cy: &Cyrus, root: &Path) -> Store {
    Store::open(cyrus_account(cy, root, "")).unwrap()
}

fn sync_ok(store: &Store) -> SyncReport {
    let rec = Arc::new(Recorder::default());
    let r = store.synchronize_in_background(SyncRequest::new(ALL).with_progress(rec)).wait();
    assert!(r.is_success(), "sync failed: {:#?}", r.errors);
    r
}

/// A message without a Message-ID, so that only EMAILID can tell it again.
fn anonymous(subject: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n").into_bytes()
}

fn local_count(root: &Path, rel: &str) -> usize {
    syncmail_testkit::read_maildir(&root.join("mail").join(rel)).len()
}

#[test]
fn two_way_with_folders_on_both_sides() {
    let cy = Cyrus::start();
    cy.create("Projects");
    cy.deliver("Projects", &message("p1", "x"));
    cy.deliver("INBOX", &message("i1", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let st = store(&cy, root);
    let r = sync_ok(&st);
    assert_eq!(r.downloaded(), 2);
    syncmail_maildir::Folder::new(root.join("mail/Local/Sub")).create().unwrap();
    near_add(root, "INBOX", "from here", Flags::SEEN);
    let r = sync_ok(&st);
    assert_eq!(r.uploaded(), 1);
    assert!(r.hierarchy.contains(&FolderChange::Created { side: Side::Server, folder: "Local/Sub".into() }));
    assert_eq!(cy.uids("INBOX").len(), 2);
    assert!(!cy.mailbox_id("Local/Sub").is_empty());
    let r = sync_ok(&st);
    assert_eq!(r.downloaded() + r.uploaded(), 0, "{:#?}", r.folders);
}

#[test]
fn a_server_rename_with_new_mail_is_recognized_by_mailboxid() {
    let cy = Cyrus::start();
    cy.create("Big");
    for i in 0..40 {
        cy.deliver("Big", &message(&format!("b{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let st = store(&cy, root);
    sync_ok(&st);
    assert_eq!(local_count(root, "Big"), 40);
    // Renamed, most of it expunged and new mail delivered: UIDNEXT, the count and the
    // UIDs moved so far that nothing but MAILBOXID can tell it is the same folder (without
    // it, the old folder would be deleted here and the new one downloaded whole).
    cy.rename("Big", "Archive/Big");
    let uids = cy.uids("Archive/Big");
    let mut s = cy.session();
    s.ok("SELECT \"Archive/Big\"");
    s.ok(&format!("UID STORE {}:{} +FLAGS.SILENT (\\Deleted)", uids[0], uids[24]));
    s.ok("EXPUNGE");
    s.logout();
    cy.deliver("Archive/Big", &message("new one", "x"));
    let rec = Arc::new(Recorder::default());
    let mut req = SyncRequest::new(ALL).with_progress(rec);
    req.confirm_deletions = true;
    let r = st.synchronize_in_background(req).wait();
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.downloaded(), 1, "only the new message: {:#?}", r.folders);
    assert!(r.bytes_received < 64 << 10, "{} bytes", r.bytes_received);
    assert!(!root.join("mail/Big").exists());
    assert_eq!(local_count(root, "Archive/Big"), 16);
    assert!(
        r.hierarchy
            .iter()
            .any(|c| matches!(c, FolderChange::Renamed { side: Side::Local, to, .. } if to == "Archive/Big")),
        "{:?}",
        r.hierarchy
    );
}

#[test]
fn messages_without_message_id_moved_on_the_server_are_recognized_by_emailid() {
    let cy = Cyrus::start();
    cy.create("A");
    cy.create("B");
    let uids: Vec<u32> = (0..20).map(|i| cy.deliver("A", &anonymous(&format!("anon {i}")))).collect();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let st = store(&cy, root);
    sync_ok(&st);
    assert_eq!(local_count(root, "A"), 20);
    cy.move_uids("A", &uids[..10], "B");
    let r = sync_ok(&st);
    assert_eq!(r.downloaded(), 0, "{:#?}", r.folders);
    assert_eq!(r.folders.iter().map(|f| f.moved_in).sum::<u64>(), 10, "{:#?}", r.folders);
    assert_eq!((local_count(root, "A"), local_count(root, "B")), (10, 10));
    // The copies are the same bytes the server holds.
    let mut here: Vec<Vec<u8>> =
        syncmail_testkit::read_maildir(&root.join("mail/B")).into_iter().map(|(d, _)| d).collect();
    here.sort();
    let mut want: Vec<Vec<u8>> =
        (0..10).map(|i| syncmail_maildir::crlf_to_lf(&anonymous(&format!("anon {i}")))).collect();
    want.sort();
    assert_eq!(here, want);
}
