//! Outgoing mail against real servers: aiosmtpd (PyPI, run by `scripts/smtp/testserver.py`)
//! for SMTP and Dovecot for the Sent folder. Queued with the sendmail options, sent with
//! the right envelope and without Bcc, filed in Sent once; 4xx retried, 5xx kept and
//! reported; interrupted after every recorded step and resumed without loss or repeat.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::path::Path;
use syncmail::{ErrorKind, OutState, QueueOptions, Store, SyncFlags, SyncReport, SyncRequest};
use syncmail_testkit::smtp::SmtpServer;
use syncmail_testkit::{Dovecot, Options};

const SENT: &str = "Sent Messages";
const SEND: SyncFlags = SyncFlags::OUTGOING_MAIL;
const SEND_NOW: SyncFlags = SyncFlags::OUTGOING_MAIL.union(SyncFlags::ON_DEMAND);

/// A Dovecot with a `\Sent` folder named "Sent Messages", an SMTP server with the same CA,
/// and an account for both.
fn setup(tls: &str, smtp_keys: &str, account_keys: &str) -> (Dovecot, SmtpServer, tempfile::TempDir, Store) {
    let dv = Dovecot::start(Options::default());
    dv.doveadm(&["mailbox", "create", SENT]);
    let smtp = SmtpServer::start(tls, &dv.dir().join("certs"));
    let tmp = tempfile::tempdir().unwrap();
    let extra = format!(
        "[accounts.test.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"{tls}\"\nca-file = \"{}\"\ntimeout = 20\n{smtp_keys}\n",
        smtp.port,
        dv.ca_file().display()
    );
    let store = Store::open(account_with(&dv, tmp.path(), Conn::Plain, account_keys, &extra)).unwrap();
    (dv, smtp, tmp, store)
}

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.org>\nTo: Bob <bob@example.org>\nCc: carol@example.org\n\
         Bcc: dave@example.org\nSubject: {subject}\nMessage-ID: <{}@example.org>\n\n\
         Hello.\n.leading dot\n.\nEnd.\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

fn t_opts() -> QueueOptions {
    QueueOptions { read_recipients: true, ..Default::default() }
}

/// How many messages of a server folder have this subject.
fn far_count(dv: &Dovecot, folder: &str, subject: &str) -> usize {
    let out = dv.doveadm(&["search", "mailbox", folder, "header", "subject", subject]);
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

fn received_count(smtp: &SmtpServer, subject: &str) -> usize {
    let needle = format!("Subject: {subject}\r\n");
    smtp.received().iter().filter(|r| r.data.windows(needle.len()).any(|w| w == needle.as_bytes())).count()
}

fn outbox_files(root: &Path) -> usize {
    syncmail_maildir::Folder::new(root.join("mail/Outbox")).scan().unwrap().len()
}

fn run(store: &Store, flags: SyncFlags) -> (SyncReport, std::sync::Arc<Recorder>) {
    sync(store, flags)
}

#[test]
fn queued_message_arrives_with_its_envelope_without_bcc_and_is_filed_once() {
    let (dv, smtp, tmp, store) = setup("starttls", "", "");
    let row = store.queue(&mail("hello"), &t_opts()).unwrap();
    assert_eq!(row.state, OutState::Queued);
    assert_eq!(row.to, vec!["bob@example.org", "carol@example.org", "dave@example.org"]);
    assert_eq!(outbox_files(tmp.path()), 1);

    let (r, rec) = run(&store, SEND);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!((r.sent, r.filed), (1, 1));
    assert!(rec.progress.lock().unwrap().iter().any(|p| p.step == syncmail::Step::Send));
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].from, "alice@example.org");
    assert_eq!(got[0].to, vec!["bob@example.org", "carol@example.org", "dave@example.org"]);
    assert_eq!(got[0].auth.as_deref(), Some("test"));
    let text = String::from_utf8(got[0].data.clone()).unwrap();
    assert!(!text.contains("Bcc") && !text.contains("dave@"), "Bcc went out: {text}");
    assert!(text.contains("\r\n.leading dot\r\n.\r\nEnd.\r\n"), "dots and line ends: {text:?}");

    // Filed once, in the folder marked \Sent, with its Bcc, and gone from the outbox.
    assert_eq!(far_count(&dv, SENT, "hello"), 1);
    assert_eq!(dv.uids("INBOX").len(), 0);
    let filed = dv.doveadm(&["fetch", "text", "mailbox", SENT, "all"]);
    assert!(filed.contains("Bcc: dave@example.org"), "{filed}");
    assert_eq!(outbox_files(tmp.path()), 0);
    assert_eq!(store.outbox().unwrap()[0].state, OutState::Filed);

    // Nothing happens twice; the Sent copy comes down once with the contents.
    let (r, _) = run(&store, SEND_NOW | TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!((r.sent, r.filed), (0, 0));
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(far_count(&dv, SENT, "hello"), 1);
    let (_, near) = both_sides(&dv, tmp.path(), SENT);
    assert_eq!(near.len(), 1, "{near:?}");
}

#[test]
fn implicit_tls_with_xoauth2_and_a_server_that_files_sent_mail_itself() {
    let (dv, smtp, tmp, store) =
        setup("implicit", "auth-mech = \"xoauth2\"\npassword = \"token-secret\"\n", "server-files-sent = true");
    store
        .queue(&mail("oauth"), &QueueOptions { recipients: vec!["erin@example.org".into()], ..Default::default() })
        .unwrap();
    let (r, _) = run(&store, SEND);
    assert!(r.is_success(), "{:#?}", r.errors);
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    // Without -t only the recipients given count.
    assert_eq!(got[0].to, vec!["erin@example.org"]);
    assert_eq!(got[0].auth.as_deref(), Some("test"));
    assert_eq!(far_count(&dv, SENT, "oauth"), 0, "the server files it, not syncmail");
    assert_eq!(outbox_files(tmp.path()), 0);
}

#[test]
fn a_file_saved_into_the_outbox_is_sent_and_the_outbox_is_never_synced() {
    let (dv, smtp, tmp, store) = setup("starttls", "", "");
    // A server folder that maps to the outbox's directory is left alone.
    dv.doveadm(&["mailbox", "create", "Outbox"]);
    dv.save("Outbox", &syncmail_testkit::message("server outbox", "x"));
    let f = syncmail_maildir::Folder::new(tmp.path().join("mail/Outbox"));
    let staged = f.stage("reader-saved", &mail("saved by a reader")).unwrap();
    f.publish(staged, syncmail_imap::Flags::empty()).unwrap();
    let (r, _) = run(&store, SEND | TWO_WAY);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(received_count(&smtp, "saved by a reader"), 1);
    assert_eq!(smtp.received()[0].to, vec!["bob@example.org", "carol@example.org", "dave@example.org"]);
    assert_eq!(far_count(&dv, SENT, "saved by a reader"), 1);
    assert_eq!(far_count(&dv, "Outbox", "saved by a reader"), 0);
    assert_eq!(dv.uids("Outbox").len(), 1);
    assert_eq!(outbox_files(tmp.path()), 0, "the server's Outbox was not downloaded into the outbox");
}

#[test]
fn a_temporary_failure_is_retried_later_with_backoff() {
    let (dv, smtp, _tmp, store) = setup("starttls", "auth-mech = \"login\"", "");
    smtp.tempfail(1);
    let row = store.queue(&mail("later"), &t_opts()).unwrap();
    let (r, _) = run(&store, SEND);
    assert_eq!(r.sent, 0);
    let e = r.errors.iter().find(|e| e.kind == ErrorKind::Send).unwrap();
    assert!(e.retryable);
    assert!(e.server_text.as_deref().unwrap().contains("451 4.3.0"), "{e:?}");
    let q = &store.outbox().unwrap()[0];
    assert_eq!((q.state, q.attempts), (OutState::Queued, 1));
    assert!(q.next_attempt > syncmail_next_now(), "a later attempt is set");

    // A background run waits for the next attempt; one the person asks for goes at once.
    let (r, rec) = run(&store, SEND);
    assert!(r.is_success() && r.sent == 0, "{:#?}", r.errors);
    assert!(rec.progress.lock().unwrap().iter().any(|p| p.text.contains("next attempt")));
    let (r, _) = run(&store, SEND_NOW);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(r.sent, 1);
    assert_eq!(received_count(&smtp, "later"), 1);
    assert_eq!(far_count(&dv, SENT, "later"), 1);
    assert_eq!(store.outbox().unwrap()[0].id, row.id);
}

fn syncmail_next_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn a_permanent_failure_is_reported_with_the_recipient_and_kept() {
    let (dv, smtp, tmp, store) = setup("starttls", "", "");
    smtp.reject("carol@example.org", "550 5.1.1 <carol@example.org>: Recipient address rejected");
    let row = store.queue(&mail("refused"), &t_opts()).unwrap();
    for _ in 0..2 {
        // Reported on every run until the person acts; never sent meanwhile.
        let (r, _) = run(&store, SEND_NOW);
        let e = r.errors.iter().find(|e| e.kind == ErrorKind::Send).unwrap_or_else(|| panic!("{:#?}", r.errors));
        assert!(!e.retryable);
        assert!(e.message.contains("carol@example.org"), "{e:?}");
        assert!(e.server_text.as_deref().unwrap().contains("550 5.1.1"), "{e:?}");
        assert!(e.hint.contains(&format!("--retry {}", row.id)), "{e:?}");
        assert!(smtp.received().is_empty());
        assert_eq!(outbox_files(tmp.path()), 1);
        assert_eq!(store.outbox().unwrap()[0].state, OutState::Failed);
    }
    smtp.normal();
    store.retry_outgoing(row.id).unwrap();
    let (r, _) = run(&store, SEND);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_eq!(received_count(&smtp, "refused"), 1);
    assert_eq!(far_count(&dv, SENT, "refused"), 1);

    // Deleting a refused message from the outbox settles it: no more errors.
    smtp.reject("carol@example.org", "550 5.1.1 no");
    store.queue(&mail("given up"), &t_opts()).unwrap();
    let (r, _) = run(&store, SEND);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let f = syncmail_maildir::Folder::new(tmp.path().join("mail/Outbox"));
    for e in f.scan().unwrap().values() {
        f.remove(e).unwrap();
    }
    let (r, _) = run(&store, SEND);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert!(store.outbox().unwrap().iter().all(|x| x.state == OutState::Filed));
}

/// Stopped dead after every recorded step of queue → submit → accept → file → clean up,
/// then resumed: every message arrives once and is filed once. Stopped with the message
/// `submitting`, the resumed run does not send it again on its own but says so; the
/// person's `retry` then sends it (the server never saw the final dot).
#[test]
fn interrupted_after_every_step_then_resumed_sends_and_files_exactly_once() {
    let (dv, smtp, tmp, store) = setup("starttls", "", "");
    let mut covered = 0;
    let mut saw_submitting = false;
    for k in 1.. {
        let subject = format!("step {k}");
        let row = store.queue(&mail(&subject), &t_opts()).unwrap();
        let rec = std::sync::Arc::new(Recorder::default());
        let mut req = SyncRequest::new(SEND).with_progress(rec.clone());
        req.interrupt_after = Some(k);
        let r = store.synchronize(req);
        let interrupted = r.errors.iter().any(|e| e.message.contains("interrupted after step"));
        let (r, _) = run(&store, SEND_NOW);
        let now = store.outbox().unwrap().into_iter().find(|x| x.id == row.id).unwrap();
        if now.state == OutState::Submitting {
            saw_submitting = true;
            let e = r.errors.iter().find(|e| e.kind == ErrorKind::Send).unwrap();
            assert!(e.message.contains("may have been sent"), "{e:?}");
            assert_eq!(received_count(&smtp, &subject), 0, "step {k}: the dot was never sent");
            store.retry_outgoing(row.id).unwrap();
            let (r, _) = run(&store, SEND_NOW);
            assert!(r.is_success(), "step {k}: {:#?}", r.errors);
        } else {
            assert!(r.is_success(), "step {k}: {:#?}", r.errors);
        }
        assert_eq!(received_count(&smtp, &subject), 1, "step {k}: sent once");
        assert_eq!(far_count(&dv, SENT, &subject), 1, "step {k}: filed once");
        assert_eq!(outbox_files(tmp.path()), 0, "step {k}: outbox emptied");
        if !interrupted {
            break;
        }
        covered = k;
    }
    // submitting, accepted, filing, filed, out of the outbox: five steps per message.
    assert!(covered >= 5, "only {covered} steps were interrupted");
    assert!(saw_submitting, "no interruption left a message submitting");
    assert_eq!(smtp.received().len(), covered as usize + 1);
}

#[test]
fn eight_bit_text_and_utf8_addresses_use_8bitmime_and_smtputf8() {
    let (_dv, smtp, _tmp, store) = setup("starttls", "", "");
    let text = "From: Jürgen <jürgen@example.org>\nTo: zoë@example.org\nSubject: grüße\n\nGrüße aus Köln.\n";
    store.queue(text.as_bytes(), &t_opts()).unwrap();
    let (r, _) = run(&store, SEND);
    assert!(r.is_success(), "{:#?}", r.errors);
    let got = smtp.received();
    assert_eq!(got[0].from, "jürgen@example.org");
    assert_eq!(got[0].to, vec!["zoë@example.org"]);
    assert!(got[0].mail_options.iter().any(|o| o == "BODY=8BITMIME"), "{:?}", got[0].mail_options);
    assert!(got[0].mail_options.iter().any(|o| o == "SMTPUTF8"), "{:?}", got[0].mail_options);
    assert!(String::from_utf8_lossy(&got[0].data).contains("Grüße aus Köln."));
}

#[test]
fn a_wrong_password_is_reported_and_the_message_stays_queued() {
    let (_dv, smtp, tmp, store) = setup("starttls", "password = \"wrong\"", "");
    store.queue(&mail("not yet"), &t_opts()).unwrap();
    let (r, _) = run(&store, SEND_NOW);
    let e = r.errors.iter().find(|e| e.kind == ErrorKind::Auth).unwrap_or_else(|| panic!("{:#?}", r.errors));
    assert!(e.server_text.as_deref().unwrap().starts_with("535"), "{e:?}");
    assert!(e.hint.contains("[smtp]"), "{e:?}");
    assert!(!format!("{e:?}").contains("wrong"), "the password must not show");
    assert!(smtp.received().is_empty());
    let q = &store.outbox().unwrap()[0];
    assert_eq!((q.state, q.attempts), (OutState::Queued, 0));
    assert_eq!(outbox_files(tmp.path()), 1);
}
