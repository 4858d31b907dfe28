//! Dropped and stalled connections, through a fault-injecting proxy in front of a real
//! Dovecot: each is reported as an error event naming the folder and the operation,
//! retried on a new connection within the run, and nothing is lost or duplicated.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use syncmail::{ErrorKind, Store};
use syncmail_testkit::proxy::{Fault, FaultProxy};
use syncmail_testkit::{Dovecot, Options};

fn through(dv: &Dovecot, root: &std::path::Path, proxy: &FaultProxy) -> Store {
    let mut acc = account(dv, root, Conn::Plain, "");
    acc.imap.port = proxy.port;
    acc.imap.timeout = std::time::Duration::from_secs(2);
    Store::open(acc).unwrap()
}

fn corpus() -> Options {
    Options { messages: 300, corpus_args: vec!["--folders".into(), "INBOX".into()], ..Default::default() }
}

#[test]
fn a_connection_dropped_mid_fetch_is_retried_within_the_run() {
    let dv = Dovecot::start(corpus());
    let proxy = FaultProxy::start(dv.port_plain, Fault::CutServerAfter(3 << 20), 1);
    let tmp = tempfile::tempdir().unwrap();
    let store = through(&dv, tmp.path(), &proxy);
    let (r, rec) = sync(&store, TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.retried.len(), 1, "{:#?}", r.retried);
    let e = &r.retried[0];
    assert_eq!(e.kind, ErrorKind::Network);
    assert_eq!(e.folder.as_deref(), Some("INBOX"));
    assert!(e.message.contains("downloading (UID FETCH)"), "{}", e.message);
    assert!(e.hint.contains("retrying"), "{}", e.hint);
    assert_eq!(rec.errors.lock().unwrap().len(), 1, "the event was not sent");
    assert!(proxy.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    assert_same(&dv, tmp.path());
}

#[test]
fn a_connection_stalled_mid_fetch_times_out_and_is_retried() {
    let dv = Dovecot::start(corpus());
    let proxy = FaultProxy::start(dv.port_plain, Fault::StallServerAfter(2 << 20), 1);
    let tmp = tempfile::tempdir().unwrap();
    let store = through(&dv, tmp.path(), &proxy);
    let (r, _) = sync(&store, TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.retried.len(), 1);
    assert!(r.retried[0].message.contains("no answer from the server"), "{}", r.retried[0].message);
    assert_same(&dv, tmp.path());
}

#[test]
fn a_connection_dropped_mid_append_is_retried_and_the_message_arrives_once() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    // First a clean sync, straight to the server, so the folder is known.
    let direct = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&direct);
    let big = format!(
        "From: a@example.org\nSubject: big\nMessage-ID: <big@test>\n\n{}\n",
        "0123456789abcdef".repeat(1 << 16)
    );
    let inbox = near_folder(tmp.path(), "INBOX");
    let staged = inbox.stage("local-big", big.as_bytes()).unwrap();
    inbox.publish(staged, syncmail_imap::Flags::SEEN).unwrap();
    let proxy = FaultProxy::start(dv.port_plain, Fault::CutClientAfter(300_000), 1);
    let store = through(&dv, tmp.path(), &proxy);
    let (r, _) = sync(&store, TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.retried.len(), 1, "{:#?}", r.retried);
    assert!(r.retried[0].message.contains("uploading (APPEND)"), "{}", r.retried[0].message);
    let (far, near) = both_sides(&dv, tmp.path(), "INBOX"); // panics on a duplicate
    assert_eq!(far, near);
    assert!(far.contains_key("big"));
}

#[test]
fn a_connection_that_keeps_failing_ends_the_run_and_the_next_run_completes() {
    let dv = Dovecot::start(corpus());
    let proxy = FaultProxy::start(dv.port_plain, Fault::CutServerAfter(2 << 20), usize::MAX);
    let tmp = tempfile::tempdir().unwrap();
    let store = through(&dv, tmp.path(), &proxy);
    let (r, _) = sync(&store, TWO_WAY);
    assert!(!r.is_success());
    let last = r.errors.last().unwrap();
    assert_eq!(last.kind, ErrorKind::Network);
    assert!(last.retryable);
    // Each attempt kept what it had committed; the run after, on a good connection,
    // brings the rest and nothing twice.
    let direct = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    sync2(&direct);
    assert_same(&dv, tmp.path());
}
