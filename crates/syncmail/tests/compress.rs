//! COMPRESS=DEFLATE (RFC 4978) against a real Dovecot with its `imap_zlib` plugin: a
//! compressed download and two-way cycle that leaves both sides equal and moves fewer
//! bytes than it delivers; IDLE (alone and in the daemon) on a compressed connection; the
//! `compress` setting's "never" and "auto" (loopback: off), and a server without COMPRESS.
//! A compressed connection cut mid-FETCH, retried. And a compressed cycle against Cyrus,
//! whose COMPRESS is its own.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use syncmail::Store;
use syncmail::far::Session;
use syncmail_imap::Flags;
use syncmail_testkit::{Dovecot, Options, message};

fn compressing(messages: u32) -> Options {
    Options { messages, compress: true, ..Default::default() }
}

/// Whether the trace shows COMPRESS DEFLATE sent and accepted.
fn compress_accepted(trace: &[String]) -> bool {
    let Some(i) = trace.iter().position(|l| l.starts_with("C: ") && l.ends_with(" COMPRESS DEFLATE")) else {
        return false;
    };
    let tag = trace[i].split(' ').nth(1).unwrap();
    trace[i + 1..].iter().any(|l| l.starts_with(&format!("S: {tag} OK")))
}

fn compressed_cycle(tls: Conn) {
    let dv = Dovecot::start(compressing(150));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), tls, "compress = \"always\"")).unwrap();
    // A body large enough to be streamed to a file (1 MiB and more) rather than held.
    let big: String = (0..60_000).map(|i| format!("line {i} of a big message\r\n")).collect();
    dv.save("INBOX", &message("far big", &big));

    // The initial download, compressed: what came over the wire is much less than what
    // it inflated to, and less than the messages alone.
    let (r1, trace) = traced_sync(&store, DOWNLOAD);
    assert_same(&dv, tmp.path());
    let payload: usize = dv.server_messages().values().flatten().map(|(m, _)| m.len()).sum();
    assert_eq!(r1.downloaded() as usize, dv.server_messages().values().map(Vec::len).sum::<usize>());
    eprintln!(
        "{tls:?}: {} messages, {payload} bytes; {} bytes received, inflated to {}",
        r1.downloaded(),
        r1.bytes_received,
        r1.bytes_inflated
    );
    assert!(r1.bytes_inflated as usize > payload, "inflated {} < payload {payload}", r1.bytes_inflated);
    assert!(
        (r1.bytes_received as usize) < payload * 3 / 5,
        "{} bytes on the wire for {payload} bytes of messages",
        r1.bytes_received
    );
    // The trace is the protocol in plain text, COMPRESS and what follows it alike.
    assert!(compress_accepted(&trace), "{trace:#?}");
    assert!(trace.iter().any(|l| l.starts_with("C: ") && l.contains("UID FETCH")), "{trace:#?}");
    assert!(trace.iter().any(|l| l.starts_with("S: * ") && l.contains("FETCH (")), "{trace:#?}");

    // Two ways: changes on both sides, uploads included (APPEND through the compressor).
    // The local flag change goes to a message the server leaves alone: one expunged there
    // and changed here is kept and copied back (the sync rules), an upload more; picked
    // at random it was, now and then.
    let f = near_folder(tmp.path(), "INBOX");
    // A message whose Message-ID the server has once (the corpus has some twice, some
    // without), and its UID there.
    let server_uid = |e: &syncmail_maildir::Entry| -> Option<u32> {
        let text = String::from_utf8_lossy(&std::fs::read(f.entry_path(e)).ok()?).into_owned();
        let id = text.lines().find_map(|l| l.strip_prefix("Message-ID: "))?.trim().to_string();
        let uids = far_uids_with(&dv, "INBOX", "message-id", &id);
        (uids.len() == 1).then(|| uids[0])
    };
    let (e, changed_here) = f
        .scan()
        .unwrap()
        .into_values()
        .filter(|e| !e.flags.contains(Flags::ANSWERED))
        .find_map(|e| server_uid(&e).map(|u| (e, u)))
        .unwrap();
    let inbox: Vec<u32> = dv.uids("INBOX").into_iter().filter(|u| *u != changed_here).collect();
    dv.save("INBOX", &message("far new", "from the server"));
    dv.flags_add("INBOX", inbox[0], "\\Flagged");
    dv.expunge("INBOX", inbox[1]);
    near_add(tmp.path(), "INBOX", "near new", Flags::SEEN);
    near_add(tmp.path(), "Lists.rust", "near in a folder", Flags::empty());
    // An upload of several compressor chunks.
    let near_big = syncmail_maildir::crlf_to_lf(&message("near big", &big));
    let inbox_dir = near_folder(tmp.path(), "INBOX");
    inbox_dir.publish(inbox_dir.stage("local-near-big", &near_big).unwrap(), Flags::SEEN).unwrap();
    f.set_flags(&e, e.flags.union(Flags::ANSWERED)).unwrap();
    let (r2, trace) = traced_sync(&store, TWO_WAY);
    assert!(compress_accepted(&trace), "{trace:#?}");
    assert!(r2.bytes_inflated > 0);
    assert_eq!(r2.uploaded(), 3, "{:#?}", r2.folders);
    assert_eq!(r2.downloaded(), 1, "{:#?}", r2.folders);
    far_uid(&dv, "INBOX", "near new");
    far_uid(&dv, "INBOX", "near big");
    far_uid(&dv, "Lists.rust", "near in a folder");
    assert!(near_find(tmp.path(), "INBOX", "far new").is_some());
    for folder in ["INBOX", "Lists.rust"] {
        let (far, near) = both_sides(&dv, tmp.path(), folder);
        assert_eq!(far, near, "{folder}");
    }
    assert_same(&dv, tmp.path());

    // Nothing left to do.
    let (r3, _) = traced_sync(&store, TWO_WAY);
    assert_eq!(r3.downloaded() + r3.uploaded(), 0, "{:#?}", r3.folders);
}

#[test]
fn a_compressed_cycle_over_plain_tcp() {
    compressed_cycle(Conn::Plain);
}

#[test]
fn a_compressed_cycle_inside_tls() {
    compressed_cycle(Conn::Implicit);
}

#[test]
fn never_and_auto_on_loopback_leave_it_off_and_a_server_without_it_is_no_error() {
    let dv = Dovecot::start(compressing(20));
    for (setting, why) in [("compress = \"never\"", "never"), ("", "auto on loopback")] {
        let tmp = tempfile::tempdir().unwrap();
        let acc = account(&dv, tmp.path(), Conn::Plain, setting);
        let s = Session::open(&acc.imap).unwrap();
        assert!(s.has("COMPRESS=DEFLATE"), "the server offers it");
        assert_eq!(s.compress_stats(), None, "{why}");
        s.logout();
        let store = Store::open(acc).unwrap();
        let (r, trace) = traced_sync(&store, DOWNLOAD);
        assert!(!trace.iter().any(|l| l.contains("COMPRESS DEFLATE")), "{why}: {trace:#?}");
        assert_eq!(r.bytes_inflated, 0, "{why}");
        assert!(r.bytes_received > r.downloaded() * 200, "{why}: {} bytes", r.bytes_received);
        assert_same(&dv, tmp.path());
    }
    // "always" with a server that does not offer it: on without compression.
    let plain = Dovecot::start(Options { messages: 20, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&plain, tmp.path(), Conn::Plain, "compress = \"always\"")).unwrap();
    let (r, trace) = traced_sync(&store, DOWNLOAD);
    assert!(!trace.iter().any(|l| l.contains("COMPRESS")), "{trace:#?}");
    assert!(r.downloaded() > 0);
    assert_eq!(r.bytes_inflated, 0);
    assert_same(&plain, tmp.path());
}

/// IDLE on a compressed connection: a message saved while the client waits ends the IDLE
/// at once (the wait sees data the inflater holds as well as the socket's), and so does
/// the client's DONE (sent through the compressor) when nothing happens.
#[test]
fn idle_on_a_compressed_connection_sees_a_new_message() {
    let dv = Dovecot::start(compressing(5));
    let tmp = tempfile::tempdir().unwrap();
    let acc = account(&dv, tmp.path(), Conn::Plain, "compress = \"always\"");
    let mut s = Session::open(&acc.imap).unwrap();
    let before = s.compress_stats().expect("the session is compressed");
    s.examine("INBOX").unwrap();
    // Quiet: ends by `max`, through DONE and its completion.
    let t = Instant::now();
    assert!(!s.idle(Duration::from_millis(500), Duration::from_millis(50), &|| false).unwrap());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            dv.save("INBOX", &message("pushed", "while idling"));
        });
        let t = Instant::now();
        let changed = s.idle(Duration::from_secs(20), Duration::from_millis(50), &|| false).unwrap();
        assert!(changed);
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    });
    let after = s.compress_stats().unwrap();
    assert!(after.received > before.received && after.sent > before.sent, "{before:?} → {after:?}");
    s.logout();
}

/// The daemon's watchers (IDLE alone, and NOTIFY) with `compress = "always"`.
fn daemon_delivers(notify: bool) {
    let dv = Dovecot::start(Options { notify, ..compressing(5) });
    let tmp = tempfile::tempdir().unwrap();
    let acc = account(&dv, tmp.path(), Conn::Plain, "compress = \"always\"");
    let store = Store::open(acc).unwrap();
    let rec = Arc::new(Recorder::default());
    let opts = syncmail::daemon::DaemonOptions {
        poll: Duration::from_millis(100),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        debounce: Duration::from_millis(300),
        ..Default::default()
    };
    let daemon = syncmail::daemon::Daemon::start(vec![store.clone()], rec.clone(), opts);
    let within = |secs: u64, what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(Instant::now() < deadline, "not within {secs} s: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let watching = if notify { "watching every folder with NOTIFY" } else { "watching INBOX with IDLE" };
    within(15, watching, &|| rec.progress.lock().unwrap().iter().any(|p| p.text == watching));
    within(15, "the first sync", &|| !rec.done.lock().unwrap().is_empty() && !store.is_busy());
    assert!(rec.done.lock().unwrap()[0].bytes_inflated > 0, "the daemon's sync was compressed");
    dv.save("INBOX", &message("pushed", "arrives by IDLE, compressed"));
    within(10, "the delivered message locally", &|| near_find(tmp.path(), "INBOX", "pushed").is_some());
    daemon.shutdown();
    assert!(rec.errors.lock().unwrap().is_empty(), "{:#?}", rec.errors.lock().unwrap());
    assert_same(&dv, tmp.path());
}

#[test]
fn the_daemon_watches_with_idle_on_a_compressed_connection() {
    daemon_delivers(false);
}

#[test]
fn the_daemon_watches_with_notify_on_a_compressed_connection() {
    daemon_delivers(true);
}

/// Cyrus IMAP 3.6, a second server with a COMPRESS of its own: a compressed two-way
/// cycle.
#[test]
fn a_compressed_cycle_against_cyrus() {
    let cy = syncmail_testkit::cyrus::Cyrus::start();
    let body = "A line of text such as mail is made of, said again and again.\r\n".repeat(200);
    for i in 0..40 {
        cy.deliver("INBOX", &message(&format!("cyrus {i}"), &body));
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let acc = cyrus_account(&cy, root, "compress = \"always\"");
    let store = Store::open(acc).unwrap();
    let (r, trace) = traced_sync(&store, TWO_WAY);
    assert!(compress_accepted(&trace), "{trace:#?}");
    assert_eq!(r.downloaded(), 40);
    let payload = 40 * body.len() as u64;
    eprintln!(
        "Cyrus: {} bytes received, inflated to {}, {payload} bytes of bodies",
        r.bytes_received, r.bytes_inflated
    );
    assert!(r.bytes_inflated > payload && r.bytes_received < payload / 10, "{r:#?}");
    near_add(root, "INBOX", "from here", Flags::SEEN);
    let (r, _) = traced_sync(&store, TWO_WAY);
    assert_eq!(r.uploaded(), 1);
    assert_eq!(cy.uids("INBOX").len(), 41);
    assert_eq!(syncmail_testkit::read_maildir(&root.join("mail/INBOX")).len(), 41);

    // Mail from elsewhere comes down compressed too. (Not by IDLE: the test Cyrus tells
    // of new mail only when an IDLE ends, compressed or not; seen in this test's making.)
    cy.deliver("INBOX", &message("delivered", "later"));
    let (r, _) = traced_sync(&store, TWO_WAY);
    assert_eq!(r.downloaded(), 1);
    assert!(r.bytes_inflated > 0);
    assert_eq!(syncmail_testkit::read_maildir(&root.join("mail/INBOX")).len(), 42);
}

/// A compressed connection cut in the middle of a DEFLATE stream (mid-FETCH) is a network
/// error like any other: retried on a new connection, compressed afresh, nothing lost or
/// twice.
#[test]
fn a_compressed_connection_cut_mid_fetch_is_retried_within_the_run() {
    use syncmail_testkit::proxy::{Fault, FaultProxy};
    let dv = Dovecot::start(Options { corpus_args: vec!["--folders".into(), "INBOX".into()], ..compressing(300) });
    let proxy = FaultProxy::start(dv.port_plain, Fault::CutServerAfter(1 << 20), 1);
    let tmp = tempfile::tempdir().unwrap();
    // One connection: the proxy cuts the first it accepts, which must be the sync's.
    let mut acc = account(&dv, tmp.path(), Conn::Plain, "compress = \"always\"\nconnections = 1");
    acc.imap.port = proxy.port;
    let store = Store::open(acc).unwrap();
    let (r, trace) = traced_sync(&store, TWO_WAY);
    assert_eq!(r.retried.len(), 1, "{:#?}", r.retried);
    assert!(r.retried[0].message.contains("downloading (UID FETCH)"), "{}", r.retried[0].message);
    let compressions = trace.iter().filter(|l| l.ends_with(" COMPRESS DEFLATE")).count();
    assert_eq!(compressions, 2, "one per connection");
    assert!(r.bytes_inflated > r.bytes_received, "{} > {}", r.bytes_inflated, r.bytes_received);
    assert_same(&dv, tmp.path());
}
