//! Property tests with arbitrary bytes for everything that reads what a server sends:
//! the response parser, the framer that cuts the stream into responses (lines and
//! literals under limits), UID sets and modified UTF-7 names. They stand in for cargo-fuzz
//! targets, which need a nightly compiler (see SECURITY.md). Case counts are bounded so
//! the suite stays fast; `PROPTEST_CASES` raises them for a longer run.
//!
//! Inputs that once broke something, or that are known to be hostile, are kept in
//! `tests/regressions/*.imap` and replayed on every run.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::io::Write;
use std::time::Duration;
use syncmail_imap::conn::{Connection, Limits};
use syncmail_imap::parse::{Response, Untagged, parse_response};
use syncmail_imap::{Error, parse_uid_set, uid_set, utf7};

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

/// What parsing may do with any input: succeed or fail with a reason and a printable line
/// cut to a bounded length; never panic.
fn parse_is_total(buf: &[u8]) {
    match parse_response(buf) {
        Ok(Response::Untagged(Untagged::Fetch { data, .. })) => {
            if let Some(b) = data.body {
                assert!(b.len() <= buf.len());
            }
        }
        Ok(Response::Tagged { text, .. }) | Ok(Response::Untagged(Untagged::Status { text, .. })) => {
            assert!(!text.chars().any(char::is_control), "control characters in server text {text:?}");
        }
        Ok(_) => {}
        Err(e) => {
            assert!(!e.reason.is_empty());
            // 300 bytes of the line at most, each shown as at most 4 characters (`\xNN`).
            assert!(e.line.len() <= 4 * 300 + 4, "{} bytes of line in an error", e.line.len());
            assert!(!e.line.chars().any(char::is_control), "control characters in {:?}", e.line);
        }
    }
}

/// Pieces that responses are made of, so that random sequences reach deep into the parser.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"* ".to_vec()),
        Just(b"S1 ".to_vec()),
        Just(b"+ ".to_vec()),
        Just(b"OK ".to_vec()),
        Just(b"NO ".to_vec()),
        Just(b"BYE ".to_vec()),
        Just(b"FETCH ".to_vec()),
        Just(b"LIST ".to_vec()),
        Just(b"STATUS ".to_vec()),
        Just(b"ESEARCH ".to_vec()),
        Just(b"VANISHED ".to_vec()),
        Just(b"UID ".to_vec()),
        Just(b"FLAGS ".to_vec()),
        Just(b"BODY[] ".to_vec()),
        Just(b"BODY[HEADER.FIELDS (MESSAGE-ID)] ".to_vec()),
        Just(b"RFC822.SIZE ".to_vec()),
        Just(b"MODSEQ ".to_vec()),
        Just(b"[UIDNEXT ".to_vec()),
        Just(b"[CAPABILITY ".to_vec()),
        Just(b"[APPENDUID ".to_vec()),
        Just(b"] ".to_vec()),
        Just(b"(".to_vec()),
        Just(b")".to_vec()),
        Just(b"NIL ".to_vec()),
        Just(b"\\Seen ".to_vec()),
        Just(b"\"q\\\"uoted\" ".to_vec()),
        Just(b"\r\n".to_vec()),
        (0u64..30).prop_map(|n| format!("{{{n}}}\r\n").into_bytes()),
        any::<u32>().prop_map(|n| format!("{n} ").into_bytes()),
        any::<u64>().prop_map(|n| format!("{n} ").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn response_like() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(token(), 0..40).prop_map(|v| v.concat())
}

/// A framer over a socket that carries `data` and then closes; collects what it yields.
fn frame(data: Vec<u8>, limits: Limits) -> (Vec<Vec<u8>>, Option<Error>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = s.write_all(&data);
    });
    let mut c = Connection::connect("127.0.0.1", port, Duration::from_secs(5), limits).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let err = loop {
        match c.read_response(&mut buf) {
            Ok(()) => out.push(buf.clone()),
            Err(e) => break Some(e),
        }
    };
    writer.join().unwrap();
    (out, err)
}

proptest! {
    #![proptest_config(cases(1500))]

    #[test]
    fn any_bytes_parse_or_fail_cleanly(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        parse_is_total(&buf);
    }

    #[test]
    fn response_shaped_bytes_parse_or_fail_cleanly(buf in response_like()) {
        parse_is_total(&buf);
    }

    #[test]
    fn uid_sets_never_panic_and_round_trip(s in "[0-9:,*]{0,40}", uids in proptest::collection::btree_set(1u32.., 0..50)) {
        let _ = parse_uid_set(&s);
        let v: Vec<u32> = uids.iter().copied().collect();
        if !v.is_empty() {
            let parsed = parse_uid_set(&uid_set(&v)).unwrap();
            let mut back: Vec<u32> = Vec::new();
            for (a, b) in parsed {
                back.extend(a..=b);
            }
            back.sort_unstable();
            prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn mailbox_names_decode_or_fail_and_round_trip(raw in proptest::collection::vec(any::<u8>(), 0..60), name in "\\PC{0,20}") {
        let _ = utf7::decode(&raw);
        prop_assert_eq!(utf7::decode(utf7::encode(&name).as_bytes()).unwrap(), name);
    }
}

proptest! {
    #![proptest_config(cases(60))]

    /// The framer never yields more than the limits allow and never panics; whatever it
    /// yields, the parser takes or refuses cleanly.
    #[test]
    fn the_framer_keeps_its_limits_on_any_stream(data in proptest::collection::vec(response_like(), 0..6)) {
        let limits = Limits { max_line: 200, max_literal: 20, max_response: 400 };
        let (responses, err) = frame(data.concat(), limits);
        for r in &responses {
            prop_assert!(r.len() as u64 <= limits.max_response + limits.max_line as u64 + 2);
            parse_is_total(r);
        }
        prop_assert!(err.is_some());
    }
}

#[test]
fn regression_inputs_parse_or_fail_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        parse_is_total(&data);
        let (responses, err) = frame(data, Limits::default());
        for r in &responses {
            parse_is_total(r);
        }
        assert!(err.is_some(), "{}", p.display());
        n += 1;
    }
    assert!(n >= 10, "only {n} regression inputs in {}", dir.display());
}

#[test]
fn a_literal_longer_than_its_limit_is_refused_by_the_framer() {
    let limits = Limits { max_line: 200, max_literal: 20, max_response: 400 };
    let (got, err) = frame(b"* 1 FETCH (BODY[] {21}\r\n".to_vec(), limits);
    assert!(got.is_empty());
    assert!(matches!(err, Some(Error::TooLarge { what: "literal", size: 21, limit: 20 })), "{err:?}");
}

/// Found by the property tests: server text reached error messages with its control
/// characters, so a hostile server could send terminal escape sequences to the screen.
#[test]
fn server_text_reaches_messages_without_control_characters() {
    let e = parse_response(b"* 1 FETCH \x1b]0;pwned\x07(\r\n").unwrap_err();
    assert!(e.line.contains("\\x1b]0;pwned\\x07"), "{}", e.line);
    match parse_response(b"S1 NO \x1b[31mred\r\n").unwrap() {
        Response::Tagged { text, .. } => assert_eq!(text, "\u{fffd}[31mred"),
        other => panic!("{other:?}"),
    }
}

/// Found by `the_framer_keeps_its_limits_on_any_stream` in CI: a line longer than
/// `max_line` that arrived whole in one read was let through (the limit was checked only
/// while a line was still incomplete).
#[test]
fn a_line_over_the_limit_is_refused_even_when_it_arrives_in_one_read() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions/line-longer-than-the-limit-in-one-read.imap");
    let data = std::fs::read(path).unwrap();
    assert!(data.len() > 202 && data.ends_with(b"\r\n") && data.iter().filter(|&&b| b == b'\n').count() == 1);
    let limits = Limits { max_line: 200, max_literal: 20, max_response: 400 };
    let (responses, err) = frame(data, limits);
    assert!(responses.is_empty(), "{} responses", responses.len());
    assert!(matches!(err, Some(Error::TooLarge { what: "line", .. })), "{err:?}");
}
