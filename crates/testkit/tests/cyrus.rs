//! The private Cyrus instance (testkit's `cyrus` module) against its promises: it starts,
//! `test` logs in over plain IMAP, OBJECTID (RFC 8474) is there on the wire, and the
//! out-of-band helpers change what a client session sees. Run with `--nocapture` to see
//! the transcripts.
#![allow(clippy::unwrap_used)]

use std::time::Instant;
use syncmail_testkit::cyrus::{Cyrus, Reply, SEPARATOR, Session, parenthesized_after};
use syncmail_testkit::{PASSWORD, USER, message};

/// Sends a command and prints it with its reply, the way the report quotes them.
fn traced(s: &mut Session, command: &str) -> Reply {
    let r = s.ok(command);
    eprintln!("C: {command}");
    for l in &r.untagged {
        eprintln!("S: {l}");
    }
    eprintln!("S: {}", r.tagged);
    r
}

/// An object id as RFC 8474 section 7 allows it: 1 to 255 of `A-Z a-z 0-9 _ -`.
fn assert_objectid(id: &str) {
    assert!(
        !id.is_empty() && id.len() <= 255 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "not an objectid: {id:?}"
    );
}

fn find_id(r: &Reply, key: &str) -> String {
    let id = r.untagged.iter().find_map(|l| parenthesized_after(l, key)).unwrap_or_else(|| panic!("no {key}: {r:?}"));
    assert_objectid(&id);
    id
}

#[test]
fn objectid_on_the_wire() {
    let t = Instant::now();
    let cy = Cyrus::start();
    eprintln!("started in {:?}", t.elapsed());
    let mut s = Session::connect(cy.port);
    eprintln!("S: {}", s.greeting);
    traced(&mut s, &format!("LOGIN {USER} {PASSWORD}"));
    let caps = traced(&mut s, "CAPABILITY");
    let line = caps.untagged.iter().find(|l| l.starts_with("* CAPABILITY ")).unwrap();
    assert!(line.split_whitespace().any(|c| c == "OBJECTID"), "{line}");

    let inbox_id = find_id(&traced(&mut s, "STATUS INBOX (MAILBOXID)"), "MAILBOXID");
    assert_eq!(inbox_id, cy.mailbox_id("INBOX"), "the id is stable across sessions");

    let uid = cy.deliver("INBOX", &message("objectid one", "first"));
    assert_eq!(uid, 1);
    let sel = traced(&mut s, "SELECT INBOX");
    assert!(sel.untagged.iter().any(|l| l == &format!("* OK [MAILBOXID ({inbox_id})] Ok")), "{sel:?}");
    let email_id = find_id(&traced(&mut s, "UID FETCH 1 (EMAILID THREADID)"), "EMAILID");
    assert_eq!(email_id, cy.email_id("INBOX", 1));

    // A second, different message gets another EMAILID.
    cy.deliver("INBOX", &message("objectid two", "second"));
    traced(&mut s, "NOOP");
    let both = traced(&mut s, "UID FETCH 1:* (EMAILID)");
    let ids: Vec<String> = both.untagged.iter().filter_map(|l| parenthesized_after(l, "EMAILID")).collect();
    assert_eq!(ids.len(), 2, "{both:?}");
    assert_eq!(ids[0], email_id);
    assert_ne!(ids[0], ids[1]);

    // The EMAILID comes from the content: the same message delivered again, here or in
    // another folder, has the same one. So it names a content, not one copy of it.
    cy.create("Copies");
    let again = cy.deliver("Copies", &message("objectid one", "first"));
    assert_eq!(cy.email_id("Copies", again), email_id);
    let twice = cy.deliver("INBOX", &message("objectid one", "first"));
    assert_eq!(cy.email_id("INBOX", twice), email_id);
}

#[test]
fn rename_keeps_the_mailboxid_and_move_keeps_the_emailid() {
    let cy = Cyrus::start();
    let mut s = cy.session();
    let created = traced(&mut s, "CREATE Alpha");
    let alpha_id = parenthesized_after(&created.tagged, "MAILBOXID").unwrap();
    assert_objectid(&alpha_id);
    assert_eq!(cy.mailbox_id("Alpha"), alpha_id);

    traced(&mut s, "RENAME Alpha Beta");
    assert_eq!(find_id(&traced(&mut s, "STATUS Beta (MAILBOXID)"), "MAILBOXID"), alpha_id);
    let gone = s.command("STATUS Alpha (MAILBOXID)");
    assert!(gone.tagged.contains(" NO "), "{gone:?}");
    let list = traced(&mut s, r#"LIST "" "*" RETURN (STATUS (MAILBOXID))"#);
    assert!(list.untagged.contains(&format!("* STATUS Beta (MAILBOXID ({alpha_id}))")), "{list:?}");

    // Out of band: a renamed folder keeps its id too, and a moved message its EMAILID.
    let uid = cy.deliver("Beta", &message("to move", "moving"));
    let email_id = cy.email_id("Beta", uid);
    let lists_id = cy.create("Lists");
    cy.rename("Lists", "Mailing lists");
    assert_eq!(cy.mailbox_id("Mailing lists"), lists_id);
    cy.move_uids("Beta", &[uid], "Mailing lists");
    assert_eq!(cy.uids("Beta"), Vec::<u32>::new());
    assert_eq!(cy.uids("Mailing lists"), vec![1]);
    assert_eq!(cy.email_id("Mailing lists", 1), email_id);
}

#[test]
fn helpers_change_what_a_session_sees() {
    let cy = Cyrus::start();
    let mut s = cy.session();
    s.ok("SELECT INBOX");
    // A name with a dot, a space and non-ASCII: "." is an ordinary character here.
    let folder = format!("Projects{SEPARATOR}v1.2 Ünïcödé");
    cy.create("Projects");
    cy.create(&folder);
    let list = s.ok(r#"LIST "" "*""#);
    assert!(list.untagged.iter().any(|l| l.ends_with(r#""/" "Projects/v1.2 &ANw-n&AO8-c&APY-d&AOk-""#)), "{list:?}");
    assert_eq!(cy.deliver(&folder, &message("a", "1")), 1);
    assert_eq!(cy.deliver(&folder, &message("b", "2")), 2);
    assert_eq!(cy.deliver(&folder, &message("c", "3")), 3);
    assert_eq!(cy.uids(&folder), vec![1, 2, 3]);
    cy.move_uids(&folder, &[1, 3], "INBOX");
    assert_eq!(cy.uids(&folder), vec![2]);
    assert_eq!(cy.uids("INBOX"), vec![1, 2]);
    // The selected session learns of the delivery at its next command.
    let noop = s.ok("NOOP");
    assert!(noop.untagged.contains(&"* 2 EXISTS".to_string()), "{noop:?}");
    // A literal in a response is read and inlined into its line.
    let header = s.ok("UID FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert_eq!(header.untagged, vec!["* 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {14}\r\nSubject: c\r\n\r\n)"]);
    cy.delete(&folder);
    let list = s.ok(r#"LIST "" "*""#);
    assert!(!list.untagged.iter().any(|l| l.contains("v1.2")), "{list:?}");
}

#[test]
fn restart_keeps_folders_and_ids() {
    let mut cy = Cyrus::start();
    let id = cy.create("Kept");
    cy.deliver("Kept", &message("kept", "kept"));
    let email_id = cy.email_id("Kept", 1);
    let t = Instant::now();
    cy.restart();
    eprintln!("restarted in {:?}", t.elapsed());
    assert_eq!(cy.mailbox_id("Kept"), id);
    assert_eq!(cy.email_id("Kept", 1), email_id);
}
