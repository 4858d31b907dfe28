//! Dropped and stalled connections, through a fault-injecting proxy in front of a real
//! Dovecot: each is reported as an error event naming the folder and the operation,
//! retried on a new connection within the run, and nothing is lost or duplicated.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use syncmail::{ErrorKind, Store};
use syncmail_testkit::proxy::{Fault, FaultProxy};
use syncmail_testkit::{Dovecot, Options};

/// An account whose connection goes through `proxy`. One connection (`connections = 1`: no
/// second connection beside the sync's): the proxy gives its fault to the first
/// connections it accepts, which must be the sync's.
fn through(dv: &Dovecot, root: &std::path::Path, proxy: &FaultProxy) -> Store {
    let mut acc = account(dv, root, Conn::Plain, "connections = 1");
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

/// Several folders on a server that lets each user log in once at a time (Dovecot's
/// `mail_max_userip_connections = 1`, which refuses with `NO [LIMIT]`): the second
/// connection, which logs in after the sync's, is refused, and the first syncs every
/// folder, without an error.
#[test]
fn a_server_that_allows_one_connection_per_user_is_synced_in_full() {
    let dv = Dovecot::start(Options {
        messages: 120,
        corpus_args: vec!["--folders".into(), "INBOX,Archive,Lists.rust,Lists.debian".into()],
        max_connections: Some(1),
        ..Default::default()
    });
    // Both ways of finding the changed folders: with "probe" the second connection may be
    // opened early, while the first asks its first STATUS.
    for (m, how) in ["list", "probe"].into_iter().enumerate() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = format!("connections = 2\nfind-changes = \"{how}\"");
        let store = Store::open(account(&dv, tmp.path(), Conn::Plain, &keys)).unwrap();
        for round in 0..4 {
            if round > 0 {
                // Something to do in two folders each time.
                dv.save("Archive", &syncmail_testkit::message(&format!("new {round} {how}"), "body"));
                let uids = dv.uids("Lists.rust");
                dv.flags_add("Lists.rust", uids[4 * m + round], "\\Flagged");
            }
            let t = std::sync::Arc::new(Traced::default());
            let r =
                store.synchronize_in_background(syncmail::SyncRequest::new(TWO_WAY).with_progress(t.clone())).wait();
            let rec = &t.rec;
            assert!(r.is_success(), "round {round}: {:#?}", r.errors);
            // The second connection (two folders or more to do each round) tried, was
            // refused, and the sync's connection selected every folder to do.
            let lines = t.lines.lock().unwrap().clone();
            assert!(lines.iter().any(|l| l.starts_with("[2] S: ") && l.contains("[LIMIT]")), "{lines:#?}");
            assert!(!lines.iter().any(|l| l.starts_with("[2] C: ") && l.contains(" SELECT ")), "{lines:#?}");
            let selected: Vec<&String> =
                lines.iter().filter(|l| l.starts_with("C: ") && l.contains(" SELECT ")).collect();
            if how == "list" || round == 0 {
                assert_eq!(selected.len(), if round == 0 { 4 } else { 2 }, "{lines:#?}");
            } else {
                // The two changed, and those left to SELECT where the first asked had changed.
                assert!((2..=4).contains(&selected.len()), "{lines:#?}");
                for f in ["Archive", "Lists.rust"] {
                    assert!(selected.iter().any(|l| l.contains(&format!("\"{f}\""))), "{f} not selected: {lines:#?}");
                }
            }
            assert!(r.retried.is_empty(), "round {round}: {:#?}", r.retried);
            assert!(rec.errors.lock().unwrap().is_empty(), "round {round}: an error event was sent");
            assert_same(&dv, tmp.path());
        }
    }
}

/// A server at its connection limit (another program holds the one connection allowed):
/// the error says so, with the server's words and what to do, not "login failed" (it is
/// not the password), and it is worth trying again later. No second connection tries: one
/// is opened only after the sync's is in.
#[test]
fn a_server_at_its_connection_limit_gives_an_error_that_names_the_limit() {
    use std::io::{BufRead, BufReader, Write};
    let dv = Dovecot::start(Options { messages: 10, max_connections: Some(1), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "connections = 2")).unwrap();
    sync_ok(&store);

    // Another program takes the one connection allowed.
    let other = std::net::TcpStream::connect(("127.0.0.1", dv.port_plain)).unwrap();
    let mut lines = BufReader::new(other.try_clone().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap(); // greeting
    (&other).write_all(b"a LOGIN test secret\r\n").unwrap();
    loop {
        line.clear();
        lines.read_line(&mut line).unwrap();
        if line.starts_with("a ") {
            break;
        }
    }
    assert!(line.starts_with("a OK"), "{line}");

    let t = std::sync::Arc::new(Traced::default());
    let r = store.synchronize_in_background(syncmail::SyncRequest::new(TWO_WAY).with_progress(t.clone())).wait();
    assert!(!r.is_success());
    // One login, refused; no second connection.
    let lines = t.lines.lock().unwrap().clone();
    let logins = lines.iter().filter(|l| l.starts_with("C: ") && l.contains(" AUTHENTICATE ")).count();
    assert_eq!(logins, 1, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.starts_with("[2] ")), "{lines:#?}");
    let e = r.errors.last().unwrap();
    assert_eq!(e.kind, ErrorKind::Server, "{e:#?}");
    assert!(e.message.contains("refused"), "{e:#?}");
    assert!(e.server_text.as_deref().unwrap_or("").contains("Maximum number of connections"), "{e:#?}");
    assert!(e.hint.contains("connections = 1"), "{e:#?}");
    assert!(e.retryable, "{e:#?}");
    drop(other);
}
