//! Two-way contents sync against a real Dovecot: every rule of the three-way merge, each
//! scenario run again interrupted after every journaled step and resumed, random
//! operations on both sides with random interruptions, the deletion policies and the
//! mass-deletion guard. Server-side changes are made with doveadm, local ones on the
//! files, as a mail reader would.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use syncmail::{ErrorKind, Store, SyncRequest};
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

const S: Flags = Flags::SEEN;
const F: Flags = Flags::FLAGGED;
const NONE: Flags = Flags::empty();

/// Eight messages synced, then one change per rule, each on its own message.
fn scenario(dv: &Dovecot, root: &Path) -> Store {
    for i in 1..=8 {
        dv.save("INBOX", &message(&format!("m{i}"), "x"));
    }
    let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
    sync2(&store);
    dv.save("INBOX", &message("far-new", "x"));
    near_add(root, "INBOX", "near-new", NONE);
    near_add(root, "INBOX", "near-new-seen", S);
    dv.flags_add("INBOX", far_uid(dv, "INBOX", "m1"), "\\Flagged"); // far flag
    near_set_flags(root, "INBOX", "m2", S); // near flag
    dv.flags_add("INBOX", far_uid(dv, "INBOX", "m3"), "\\Flagged"); // both, different flags
    near_set_flags(root, "INBOX", "m3", S);
    dv.expunge("INBOX", far_uid(dv, "INBOX", "m4")); // expunged vs changed locally: kept
    near_set_flags(root, "INBOX", "m4", F);
    near_delete(root, "INBOX", "m5"); // deleted locally vs changed on server: kept
    dv.flags_add("INBOX", far_uid(dv, "INBOX", "m5"), "\\Seen");
    dv.expunge("INBOX", far_uid(dv, "INBOX", "m6")); // deleted on both
    near_delete(root, "INBOX", "m6");
    dv.expunge("INBOX", far_uid(dv, "INBOX", "m7")); // expunged on the server
    near_delete(root, "INBOX", "m8"); // deleted locally
    store
}

fn expected() -> BTreeMap<String, Flags> {
    [
        ("far-new", NONE),
        ("near-new", NONE),
        ("near-new-seen", S),
        ("m1", F),
        ("m2", S),
        ("m3", S.union(F)),
        ("m4", F),
        ("m5", S),
    ]
    .into_iter()
    .map(|(s, f)| (s.to_string(), f))
    .collect()
}

fn assert_expected(dv: &Dovecot, root: &Path, context: &str) {
    assert_state(dv, root, &expected(), context);
}

fn assert_state(dv: &Dovecot, root: &Path, want: &BTreeMap<String, Flags>, context: &str) {
    let (far, near) = both_sides(dv, root, "INBOX");
    assert_eq!(&far, want, "server side, {context}");
    assert_eq!(&near, want, "local side, {context}");
}

/// Twelve messages synced; then a local flag change, a local new message, a server flag
/// change, and the server renumbers the folder.
fn renumber_scenario(dv: &mut Dovecot, root: &Path) -> Store {
    for i in 1..=12 {
        dv.save("INBOX", &message(&format!("r{i}"), "x"));
    }
    // Two messages with the same Message-ID and size: only their content tells them apart.
    dv.save("INBOX", b"Subject: twin-a\r\nMessage-ID: <twin@x>\r\n\r\nAAAA\r\n");
    dv.save("INBOX", b"Subject: twin-b\r\nMessage-ID: <twin@x>\r\n\r\nBBBB\r\n");
    let store = Store::open(account(dv, root, Conn::Plain, "")).unwrap();
    sync2(&store);
    near_set_flags(root, "INBOX", "r1", F);
    near_add(root, "INBOX", "r-new", S);
    dv.flags_add("INBOX", far_uid(dv, "INBOX", "r2"), "\\Answered");
    dv.renumber("INBOX");
    store
}

fn renumber_expected() -> BTreeMap<String, Flags> {
    let mut m: BTreeMap<String, Flags> = (1..=12).map(|i| (format!("r{i}"), NONE)).collect();
    m.insert("r1".into(), F);
    m.insert("r2".into(), Flags::ANSWERED);
    m.insert("r-new".into(), S);
    m.insert("twin-a".into(), NONE);
    m.insert("twin-b".into(), NONE);
    m
}

#[test]
fn every_rule_in_one_run() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let store = scenario(&dv, tmp.path());
    let r = sync2(&store);
    assert_expected(&dv, tmp.path(), "after one two-way sync");
    let inbox = &r.folders[0];
    assert_eq!((inbox.uploaded, inbox.downloaded), (3, 2), "{inbox:#?}"); // near-new×2 + m4; far-new + m5
    assert_eq!(inbox.far_deleted, 1);
    // And then there is nothing left to do.
    let r = sync2(&store);
    assert_eq!((r.uploaded(), r.downloaded()), (0, 0));
    assert!(r.folders.iter().all(|f| f.flags_changed + f.far_flags_changed + f.deleted + f.far_deleted == 0));
    assert_expected(&dv, tmp.path(), "after a second sync");
}

/// A scenario interrupted after step k, for every k, then resumed (see
/// `common::interrupted_at_every_step`), checked against `want`.
fn interrupted_at_every_step(
    opts: Options,
    setup: fn(&mut Dovecot, &Path) -> Store,
    want: BTreeMap<String, Flags>,
) -> u64 {
    common::interrupted_at_every_step(
        opts,
        TWO_WAY,
        &setup,
        &|dv: &Dovecot, root: &Path, context: &str| assert_state(dv, root, &want, context),
        3,
    )
}

fn rules_scenario(dv: &mut Dovecot, root: &Path) -> Store {
    scenario(dv, root)
}

#[test]
fn interrupted_at_every_step_then_resumed() {
    interrupted_at_every_step(Options::default(), rules_scenario, expected());
}

#[test]
fn interrupted_at_every_step_on_a_server_without_uidplus_or_condstore() {
    let opts = Options { capability: Some("IMAP4rev1".into()), ..Default::default() };
    interrupted_at_every_step(opts, rules_scenario, expected());
}

#[test]
fn renumbered_folder_interrupted_at_every_step_then_resumed() {
    interrupted_at_every_step(Options::default(), renumber_scenario, renumber_expected());
}

/// A small deterministic generator (xorshift64*), so every seed replays exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Seeds that once failed, kept as regressions, then fresh ones.
const REGRESSION_SEEDS: &[u64] = &[];

fn random_run(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for i in 0..4 {
        dv.save("INBOX", &message(&format!("s{seed}-base{i}"), "x"));
    }
    let store = Store::open(account_with(&dv, root, Conn::Plain, "delete-guard = 100", "")).unwrap();
    sync2(&store);
    let mut created: Vec<String> = (0..4).map(|i| format!("s{seed}-base{i}")).collect();
    let mut deleted: Vec<String> = Vec::new();
    let flag_choices = [NONE, S, F, S.union(F), Flags::ANSWERED];
    for round in 0..4 {
        for op in 0..(2 + rng.below(4)) {
            let (far, near) = both_sides(&dv, root, "INBOX");
            let pick = |rng: &mut Rng, m: &BTreeMap<String, Flags>| {
                let keys: Vec<&String> = m.keys().collect();
                (!keys.is_empty()).then(|| keys[rng.below(keys.len() as u64) as usize].clone())
            };
            let subject = format!("s{seed}-r{round}-op{op}");
            match rng.below(6) {
                0 => {
                    dv.save("INBOX", &message(&subject, "far"));
                    created.push(subject);
                }
                1 => {
                    near_add(root, "INBOX", &subject, flag_choices[rng.below(5) as usize]);
                    created.push(subject);
                }
                2 => {
                    if let Some(s) = pick(&mut rng, &far) {
                        let uid = far_uid(&dv, "INBOX", &s);
                        let f = flag_choices[rng.below(5) as usize];
                        dv.doveadm(&["flags", "replace", &f.to_imap(), "mailbox", "INBOX", "uid", &uid.to_string()]);
                    }
                }
                3 => {
                    if let Some(s) = pick(&mut rng, &near) {
                        near_set_flags(root, "INBOX", &s, flag_choices[rng.below(5) as usize]);
                    }
                }
                4 => {
                    if let Some(s) = pick(&mut rng, &far) {
                        dv.expunge("INBOX", far_uid(&dv, "INBOX", &s));
                        deleted.push(s);
                    }
                }
                _ => {
                    if let Some(s) = pick(&mut rng, &near) {
                        near_delete(root, "INBOX", &s);
                        deleted.push(s);
                    }
                }
            }
        }
        // A sync killed at a random step (or not at all, when it has fewer steps).
        let mut req = SyncRequest::new(TWO_WAY);
        req.interrupt_after = Some(1 + rng.below(25));
        let r = store.synchronize(req);
        assert!(
            r.is_success() || r.errors.iter().all(|e| e.kind == ErrorKind::Cancelled),
            "seed {seed} round {round}: {:#?}",
            r.errors
        );
    }
    sync2(&store);
    let (far, near) = both_sides(&dv, root, "INBOX"); // panics on a duplicate
    assert_eq!(far, near, "seed {seed}: the two sides differ");
    for s in &created {
        if !deleted.contains(s) {
            assert!(far.contains_key(s), "seed {seed}: {s:?} vanished though nobody deleted it");
        }
    }
    let r = sync2(&store);
    assert_eq!((r.uploaded(), r.downloaded()), (0, 0), "seed {seed}: a second clean run still had work");
}

#[test]
fn random_operations_with_random_interruptions() {
    let fresh: Vec<u64> = (1..=8).collect();
    for seed in REGRESSION_SEEDS.iter().chain(fresh.iter()) {
        random_run(*seed);
    }
}

#[test]
fn mass_deletion_is_held_until_confirmed() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..30 {
        dv.save("INBOX", &message(&format!("keep{i}"), "x"));
    }
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    for i in 0..20 {
        near_delete(tmp.path(), "INBOX", &format!("keep{i}"));
    }
    let (r, _) = sync(&store, TWO_WAY);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].kind, ErrorKind::DeletionsHeld);
    assert!(r.errors[0].message.contains("20 of the 30"), "{}", r.errors[0].message);
    assert_eq!(dv.uids("INBOX").len(), 30, "nothing may be deleted on the server");
    // Held, not forgotten: it is held again until confirmed.
    let (r, _) = sync(&store, TWO_WAY);
    assert_eq!(r.errors[0].kind, ErrorKind::DeletionsHeld);
    let mut req = SyncRequest::new(TWO_WAY);
    req.confirm_deletions = true;
    let r = store.synchronize(req);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(dv.uids("INBOX").len(), 10);
}

#[test]
fn a_vanished_local_folder_deletes_nothing_on_the_server() {
    let dv = Dovecot::start(Options { messages: 60, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    let before = dv.server_messages();
    std::fs::remove_dir_all(tmp.path().join("mail")).unwrap();
    let (r, _) = sync(&store, TWO_WAY);
    assert!(r.errors.iter().all(|e| e.kind == ErrorKind::DeletionsHeld), "{:#?}", r.errors);
    assert!(!r.errors.is_empty());
    assert_eq!(dv.server_messages(), before, "the server lost messages");
}

#[test]
fn server_expunging_most_of_a_folder_keeps_the_local_copies() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..20 {
        dv.save("INBOX", &message(&format!("x{i}"), "x"));
    }
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    for uid in dv.uids("INBOX").into_iter().take(15) {
        dv.expunge("INBOX", uid);
    }
    let (r, _) = sync(&store, TWO_WAY);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].kind, ErrorKind::DeletionsHeld);
    assert_eq!(near_folder(tmp.path(), "INBOX").scan().unwrap().len(), 20);
}

#[test]
fn deletion_policies() {
    for (policy, expect_trash, expect_flagged) in
        [("trash", true, false), ("flag", false, true), ("expunge", false, false)]
    {
        let dv = Dovecot::start(Options::default());
        dv.doveadm(&["mailbox", "create", "Trash"]);
        dv.save("INBOX", &message("doomed", "x"));
        dv.save("INBOX", &message("stays", "x"));
        let tmp = tempfile::tempdir().unwrap();
        let extra = format!("delete-policy = \"{policy}\"");
        let store = Store::open(account_with(&dv, tmp.path(), Conn::Plain, &extra, "")).unwrap();
        sync2(&store);
        near_delete(tmp.path(), "INBOX", "doomed");
        sync2(&store);
        let server = dv.server_messages();
        let inbox = by_subject(&server["INBOX"]);
        let trash = by_subject(&server["Trash"]);
        assert_eq!(trash.contains_key("doomed"), expect_trash, "{policy}");
        assert_eq!(inbox.get("doomed").is_some_and(|f| f.contains(Flags::DELETED)), expect_flagged, "{policy}");
        if !expect_flagged {
            assert!(!inbox.contains_key("doomed"), "{policy}");
        }
        assert!(inbox.contains_key("stays"));
    }
}

#[test]
fn new_local_mail_in_new_and_cur_is_uploaded_with_its_flags() {
    let dv = Dovecot::start(Options { capability: Some("IMAP4rev1".into()), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    near_add(tmp.path(), "INBOX", "fresh", NONE);
    near_add(tmp.path(), "INBOX", "read", S.union(Flags::ANSWERED));
    let r = sync2(&store);
    assert_eq!(r.uploaded(), 2);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far, near);
    assert_eq!(far["read"], S.union(Flags::ANSWERED));
    // Uploaded, then known: the next run does not upload or download them again.
    let r = sync2(&store);
    assert_eq!((r.uploaded(), r.downloaded()), (0, 0));
}

#[test]
fn a_renumbered_folder_is_matched_again_not_downloaded_twice() {
    // The corpus has duplicate Message-IDs and messages without one: those are matched
    // by content.
    let mut dv = Dovecot::start(Options {
        messages: 150,
        corpus_args: vec!["--folders".into(), "INBOX".into()],
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    let local_before = near_folder(tmp.path(), "INBOX").scan().unwrap();
    // A local change made before the renumbering must survive it.
    let (first, e) = local_before.iter().next().unwrap();
    near_folder(tmp.path(), "INBOX").set_flags(e, e.flags.union(Flags::FLAGGED)).unwrap();
    let old = dv.uidvalidity("INBOX");
    dv.renumber("INBOX");
    assert_ne!(dv.uidvalidity("INBOX"), old, "the server did not renumber");
    let (r, rec) = sync(&store, TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!((r.downloaded(), r.uploaded()), (0, 0), "messages were transferred again");
    let said = rec.progress.lock().unwrap().iter().any(|p| p.text.contains("150 of 150 local messages matched again"));
    assert!(said, "the rematch was not reported");
    assert_same(&dv, tmp.path());
    let after = near_folder(tmp.path(), "INBOX").scan().unwrap();
    let names = |m: &std::collections::HashMap<String, syncmail_maildir::Entry>| {
        m.keys().cloned().collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(names(&after), names(&local_before), "local files were replaced");
    assert!(after[first].flags.contains(Flags::FLAGGED));
}

#[test]
fn a_different_folder_under_the_same_name_is_moved_aside() {
    let mut dv = Dovecot::start(Options::default());
    for i in 0..10 {
        dv.save("INBOX", &message(&format!("old{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    let others: Vec<Vec<u8>> = (0..7).map(|i| message(&format!("other{i}"), "y")).collect();
    dv.replace_folder("INBOX", &others);
    let (r, _) = sync(&store, TWO_WAY);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    assert_eq!(r.errors[0].kind, ErrorKind::UidValidity);
    assert!(r.errors[0].message.contains("moved"), "{}", r.errors[0].message);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far.len(), 7, "nothing of the old folder may be uploaded into the new one");
    assert_eq!(far, near);
    let aside: Vec<_> = std::fs::read_dir(tmp.path().join("mail"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("INBOX~uidvalidity-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let kept = by_subject(&syncmail_testkit::read_maildir(&tmp.path().join("mail").join(&aside[0])));
    assert_eq!(kept.len(), 10, "the old local messages must all be kept");
}

#[test]
fn a_local_change_after_a_quiet_run_is_still_seen() {
    // A quiet run records the Maildir's mtimes and the next ones skip the listing while
    // they are unchanged; a mail reader's change must still be found.
    let dv = Dovecot::start(Options::default());
    for i in 0..5 {
        dv.save("INBOX", &message(&format!("q{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    age_folder(tmp.path(), "INBOX");
    sync2(&store); // quiet: records the mtimes
    sync2(&store); // quiet: skips the listing
    near_set_flags(tmp.path(), "INBOX", "q1", F);
    near_add(tmp.path(), "INBOX", "q-new", NONE);
    let r = sync2(&store);
    assert_eq!(r.uploaded(), 1);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far, near);
    assert_eq!(far["q1"], F);
}

#[test]
fn without_uidplus_a_message_without_message_id_is_found_again_by_content() {
    let dv = Dovecot::start(Options { capability: Some("IMAP4rev1".into()), ..Default::default() });
    dv.save("INBOX", &message("already there", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    // Two local messages of the same size without a Message-ID: only their bytes differ.
    let inbox = near_folder(tmp.path(), "INBOX");
    for (name, body) in [("a", "AAAA"), ("b", "BBBB")] {
        let data = format!("From: x@example.org\nSubject: no-id-{name}\n\n{body}\n");
        let staged = inbox.stage(&format!("local-{name}"), data.as_bytes()).unwrap();
        inbox.publish(staged, NONE).unwrap();
    }
    let r = sync2(&store);
    assert_eq!(r.uploaded(), 2);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX"); // panics on a duplicate
    assert_eq!(far, near);
    assert_eq!(far.len(), 3);
    // Each was matched to its own UID: nothing moves on the next run.
    let r = sync2(&store);
    assert_eq!((r.uploaded(), r.downloaded()), (0, 0));
    assert_eq!(dv.uids("INBOX").len(), 3);
}

#[test]
fn a_small_vanished_folder_stays_held_run_after_run() {
    let dv = Dovecot::start(Options::default());
    for i in 0..3 {
        dv.save("INBOX", &message(&format!("few{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    std::fs::remove_dir_all(tmp.path().join("mail/INBOX")).unwrap();
    for _ in 0..2 {
        let (r, _) = sync(&store, TWO_WAY);
        assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
        assert_eq!(r.errors[0].kind, ErrorKind::DeletionsHeld);
        assert_eq!(dv.uids("INBOX").len(), 3, "a vanished folder must not empty the server's");
    }
    let mut req = SyncRequest::new(TWO_WAY);
    req.confirm_deletions = true;
    let r = store.synchronize(req);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(dv.uids("INBOX").len(), 0, "confirmed: the deletion is carried out");
}

#[test]
fn held_expunges_are_held_again_and_carried_out_when_confirmed() {
    let dv = Dovecot::start(Options::default());
    for i in 0..20 {
        dv.save("INBOX", &message(&format!("h{i}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    for uid in dv.uids("INBOX").into_iter().take(15) {
        dv.expunge("INBOX", uid);
    }
    for _ in 0..2 {
        let (r, _) = sync(&store, TWO_WAY);
        assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
        assert_eq!(r.errors[0].kind, ErrorKind::DeletionsHeld);
        assert_eq!(near_folder(tmp.path(), "INBOX").scan().unwrap().len(), 20);
    }
    let mut req = SyncRequest::new(TWO_WAY);
    req.confirm_deletions = true;
    let r = store.synchronize(req);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(near_folder(tmp.path(), "INBOX").scan().unwrap().len(), 5);
}

#[test]
fn an_upload_only_run_does_not_swallow_server_changes() {
    let dv = Dovecot::start(Options::default());
    dv.save("INBOX", &message("first", "x"));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    dv.save("INBOX", &message("arrived meanwhile", "x"));
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "first"), "\\Flagged");
    near_add(tmp.path(), "INBOX", "sent up", NONE);
    let (r, _) = sync(&store, syncmail::SyncFlags::UPLOAD_CONTENTS);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.uploaded(), 1);
    sync2(&store);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far, near);
    assert!(near.contains_key("arrived meanwhile"), "the server's new message was skipped for good");
    assert_eq!(near["first"], F);
}

#[test]
fn server_changes_after_a_quiet_run_are_applied_and_a_later_local_change_still_goes_up() {
    // After a quiet run recorded the Maildir's mtimes, a two-way run whose Maildir is
    // unchanged reads only what the server names (by file name, no listing); that must
    // carry out every server change, and leave local changes made later to be found.
    let dv = Dovecot::start(Options::default());
    for i in 0..40 {
        dv.save("INBOX", &message(&format!("q{i:02}"), "x"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    age_folder(tmp.path(), "INBOX");
    sync2(&store); // quiet: records the mtimes
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "q01"), "\\Flagged");
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "q02"), "\\Seen");
    dv.expunge("INBOX", far_uid(&dv, "INBOX", "q03"));
    dv.save("INBOX", &message("q-far", "y"));
    let r = sync2(&store);
    assert_eq!((r.downloaded(), r.uploaded()), (1, 0), "{:#?}", r.folders);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far, near);
    assert_eq!(near.len(), 40);
    assert_eq!((near["q01"], near["q02"]), (F, S));
    assert!(!near.contains_key("q03"));

    near_set_flags(tmp.path(), "INBOX", "q04", F);
    near_add(tmp.path(), "INBOX", "q-near", NONE);
    dv.flags_add("INBOX", far_uid(&dv, "INBOX", "q05"), "\\Seen");
    let r = sync2(&store);
    assert_eq!(r.uploaded(), 1);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX");
    assert_eq!(far, near);
    assert_eq!((far["q04"], far["q05"]), (F, S));
    assert_eq!(far.len(), 41);
}

/// A mail reader marks every message read and a third of them flagged: the changes go up
/// as a few `UID STORE` commands over UID sets (each change's messages together), not one
/// per message, and every message on the server then has its new flags.
#[test]
fn a_whole_store_marked_read_goes_up_in_a_few_store_commands() {
    let dv = Dovecot::start(Options { messages: 1500, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&store);
    // As a mail reader does: into cur/, with the new letters in the name's info part.
    let mut changed = 0usize;
    let mut dirs = vec![tmp.path().join("mail")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let in_box = p.parent().and_then(|q| q.file_name()).is_some_and(|n| n == "cur" || n == "new");
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if !in_box {
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let (base, letters) = name.split_once(":2,").unwrap_or((&name, ""));
            let mut letters: Vec<char> = letters.chars().collect();
            letters.push('S');
            if changed.is_multiple_of(3) {
                letters.push('F');
            }
            letters.sort_unstable();
            letters.dedup();
            let folder = p.parent().unwrap().parent().unwrap();
            let to = folder.join("cur").join(format!("{base}:2,{}", letters.iter().collect::<String>()));
            std::fs::rename(&p, &to).unwrap();
            changed += 1;
        }
    }
    assert!(changed >= 1500, "{changed} messages found locally");
    let (r, trace) = traced_sync(&store, TWO_WAY);
    let stores = trace.iter().filter(|l| l.contains("C: ") && l.contains("UID STORE")).count();
    let folders = dv.server_messages().len();
    // Per folder at most one command for +\Seen, one for +\Flagged \Seen and one for
    // +\Seen on flagged ones, with 500 messages at most in each.
    assert!(stores <= 3 * folders + changed / 500, "{stores} STORE commands for {changed} changes: {trace:#?}");
    assert_eq!(r.uploaded(), 0);
    for (folder, msgs) in dv.server_messages() {
        for (_, flags) in msgs {
            assert!(flags.contains(S), "{folder}: a message is not \\Seen on the server");
        }
    }
    assert_same(&dv, tmp.path());
}
