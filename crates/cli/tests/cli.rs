//! The `syncmail` command as a user or a program runs it, against a real Dovecot.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use syncmail_testkit::smtp::SmtpServer;
use syncmail_testkit::{Dovecot, Options, assert_store_matches};

fn write_config(dv: &Dovecot, root: &Path, password: &str) -> std::path::PathBuf {
    let conf = root.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "[accounts.t]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.t.imap]\nhost = \"127.0.0.1\"\n\
             port = {}\ntls = \"implicit\"\nuser = \"test\"\npassword = \"{password}\"\nca-file = \"{}\"\n",
            root.join("mail").display(),
            root.join("state").display(),
            dv.port_tls,
            dv.ca_file().display()
        ),
    )
    .unwrap();
    conf
}

fn syncmail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_syncmail"))
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn json_mode_prints_one_event_per_line_and_exits_zero() {
    let dv = Dovecot::start(Options { messages: 40, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = json_lines(&out.stdout);
    assert!(events.iter().all(|e| ["progress", "error", "done"].contains(&e["event"].as_str().unwrap())));
    assert!(events.iter().any(|e| e["event"] == "progress" && e["step"] == "download"));
    let done: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["success"], true);
    assert_eq!(done[0]["downloaded"], 40);
    assert_store_matches(&dv, &tmp.path().join("mail"));
}

#[test]
fn failures_give_exit_status_one_and_say_what_to_do() {
    let dv = Dovecot::start(Options::default());
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "not-the-password");
    let out = syncmail().arg("-c").arg(&conf).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("login as test failed") && err.contains("server said:") && err.contains("what to do:"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"));
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let events = json_lines(&out.stdout);
    let e = events.iter().find(|e| e["event"] == "error").unwrap();
    assert_eq!(e["kind"], "auth");
    assert!(e["server_text"].as_str().unwrap().contains("AUTHENTICATIONFAILED"), "{e}");
}

#[test]
fn usage_errors_give_exit_status_two() {
    let tmp = tempfile::tempdir().unwrap();
    let out = syncmail().arg("-c").arg(tmp.path().join("missing.toml")).arg("sync").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no configuration file"));
    let conf = tmp.path().join("c.toml");
    std::fs::write(&conf, "[accounts.a]\nmaildir='m'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n").unwrap();
    let out = syncmail().arg("-c").arg(&conf).args(["sync", "--flags", "sideways"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = syncmail().arg("-c").arg(&conf).args(["sync", "nosuchaccount"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchaccount"));
}

/// kill -9 at several points of a long download, then a clean run: every message is
/// there exactly once with its flags.
#[test]
fn killed_mid_download_then_resumed_loses_and_duplicates_nothing() {
    let dv = Dovecot::start(Options { messages: 2500, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    let mut downloaded_before = 0u64;
    for kill_after in [1u64, 300, 700] {
        let mut child = syncmail()
            .arg("-c")
            .arg(&conf)
            .args(["--json", "sync"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0u64;
        for line in BufReader::new(stdout).lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["event"] == "progress" && v["step"] == "download" {
                seen += 1;
                if seen >= kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(!status.success(), "the run ended before it could be killed (after {seen} downloads)");
        downloaded_before += seen;
    }
    assert!(downloaded_before > 0);
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_store_matches(&dv, &tmp.path().join("mail"));
    // And a run after that has nothing to do.
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    let events = json_lines(&out.stdout);
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["downloaded"], 0, "{done}");
}

/// notmuch (a Maildir mail reader, from Debian's package) over the store under `root`, with
/// Maildir flags synchronized to tags: runs it with the arguments, returns its output.
fn notmuch_on(root: &Path) -> impl Fn(&[&str]) -> String {
    let nm_conf = root.join("notmuch.conf");
    std::fs::write(
        &nm_conf,
        format!("[database]\npath={}\n[maildir]\nsynchronize_flags=true\n", root.join("mail").display()),
    )
    .unwrap();
    move |args: &[&str]| {
        let out = Command::new("notmuch").args(args).env("NOTMUCH_CONFIG", &nm_conf).output().unwrap();
        assert!(out.status.success(), "notmuch {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A Maildir mail reader (notmuch, from Debian's package) reads the synced store as it is:
/// every message indexed, subjects readable, flags mapped to tags.
#[test]
fn notmuch_reads_the_synced_store() {
    let dv = Dovecot::start(Options { messages: 80, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notmuch = notmuch_on(tmp.path());
    notmuch(&["new", "--quiet"]);
    let files: usize = notmuch(&["count", "--output=files"]).parse().unwrap();
    assert_eq!(files, 80);
    let server = dv.server_messages();
    let flagged = server.values().flatten().filter(|m| m.1.contains(syncmail_imap::Flags::FLAGGED)).count();
    let tagged: usize = notmuch(&["count", "--output=files", "tag:flagged"]).parse().unwrap();
    assert_eq!(tagged, flagged, "\\Flagged on the server should be notmuch's flagged tag");
    assert!(!notmuch(&["search", "--output=summary", "--limit=1", "*"]).is_empty());
}

/// Two-way work on both sides, the real binary killed (SIGKILL) after random delays, several
/// times over; then a clean run: both sides hold the same messages, none twice, and none
/// that nobody deleted is missing.
#[test]
fn killed_at_random_moments_during_two_way_work_loses_and_duplicates_nothing() {
    let dv = Dovecot::start(Options { messages: 1500, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    // A first sync, killed early, then finished.
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let kill_after = |ms: u64| {
        let mut child = syncmail().arg("-c").arg(&conf).args(["-q", "sync"]).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        child.wait().unwrap()
    };
    use std::os::unix::process::ExitStatusExt;
    let mut killed = 0;
    killed += usize::from(kill_after(150 + next() % 300).signal() == Some(9));
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Work on both sides: new local mail, local flag changes and deletions; new server mail.
    let inbox = tmp.path().join("mail/INBOX");
    let mut files: Vec<_> = std::fs::read_dir(inbox.join("cur"))
        .unwrap()
        .chain(std::fs::read_dir(inbox.join("new")).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for (i, f) in files.iter().take(60).enumerate() {
        if i % 3 == 0 {
            std::fs::remove_file(f).unwrap();
        } else {
            let name = f.file_name().unwrap().to_string_lossy().split(":2,").next().unwrap().to_string();
            std::fs::rename(f, inbox.join("cur").join(format!("{name}:2,FS"))).unwrap();
        }
    }
    for i in 0..40 {
        let m = syncmail_testkit::message(&format!("local {i}"), &"x".repeat(2000));
        std::fs::write(inbox.join("new").join(format!("local{i}.test")), m).unwrap();
        dv.save("INBOX", &syncmail_testkit::message(&format!("remote {i}"), "y"));
    }
    for _ in 0..3 {
        killed += usize::from(kill_after(20 + next() % 200).signal() == Some(9));
    }
    assert!(killed >= 2, "only {killed} of the runs were still working when killed");
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_store_matches(&dv, &tmp.path().join("mail"));
    let server = dv.server_messages();
    let inbox_msgs = &server["INBOX"];
    for i in 0..40 {
        for what in ["local", "remote"] {
            let subject = format!("Subject: {what} {i}\n");
            let n =
                inbox_msgs.iter().filter(|(m, _)| m.windows(subject.len()).any(|w| w == subject.as_bytes())).count();
            assert_eq!(n, 1, "{what} {i} is on the server {n} times");
        }
    }
}

#[test]
fn folder_changes_show_in_the_summary_and_the_json_done_event() {
    let dv = Dovecot::start(Options { messages: 20, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    let out = syncmail().arg("-c").arg(&conf).arg("sync").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let projects = syncmail_maildir::Folder::new(tmp.path().join("mail/Projects"));
    projects.create().unwrap();
    let staged = projects.stage("local-1", b"Subject: p1\nMessage-ID: <p1@test>\n\nx\n").unwrap();
    projects.publish(staged, syncmail_imap::Flags::empty()).unwrap();
    let out = syncmail().arg("-c").arg(&conf).arg("sync").output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("created Projects (server side)"), "{text}");
    std::fs::rename(tmp.path().join("mail/Projects"), tmp.path().join("mail/Renamed")).unwrap();
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = json_lines(&out.stdout);
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(
        done["hierarchy"],
        serde_json::json!([{"change": "renamed", "side": "server", "from": "Projects", "to": "Renamed"}])
    );
    assert_eq!(done["uploaded"], 0);
    assert!(dv.doveadm(&["mailbox", "list"]).lines().any(|l| l.trim() == "Renamed"));
}

/// A config whose account also sends, through `smtp` (STARTTLS on loopback).
fn write_send_config(dv: &Dovecot, smtp: &SmtpServer, root: &Path) -> std::path::PathBuf {
    let conf = write_config(dv, root, "secret");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "[accounts.t.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca-file = \"{}\"\n",
        smtp.port,
        dv.ca_file().display()
    ));
    std::fs::write(&conf, text).unwrap();
    dv.doveadm(&["mailbox", "create", "Sent Messages"]);
    conf
}

/// `syncmail send` fed a message as mutt does (`-oi -f FROM -- RCPT…`, Bcc recipients
/// given as arguments and the header kept): exit 0 once queued.
fn send_as_mutt(conf: &Path, message: &[u8], rcpts: &[&str]) {
    use std::io::Write;
    let mut child = syncmail()
        .arg("-c")
        .arg(conf)
        .args(["send", "-oi", "-f", "alice@example.org", "--"])
        .args(rcpts)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "send: {}", String::from_utf8_lossy(&out.stderr));
}

fn far_count(dv: &Dovecot, folder: &str, subject: &str) -> usize {
    dv.doveadm(&["search", "mailbox", folder, "header", "subject", subject]).lines().count()
}

const OUTGOING: &[u8] = b"From: Alice <alice@example.org>\nTo: bob@example.org\nBcc: dave@example.org\n\
    Subject: from mutt\nMessage-ID: <mutt-1@example.org>\n\nHi Bob.\n.\nA lone dot above.\n";

#[test]
fn sendmail_mode_queues_offline_and_sync_sends_and_files_it() {
    let dv = Dovecot::start(Options::default());
    let smtp = SmtpServer::start("starttls", &dv.dir().join("certs"));
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_send_config(&dv, &smtp, tmp.path());
    send_as_mutt(&conf, OUTGOING, &["bob@example.org", "dave@example.org"]);
    assert!(smtp.received().is_empty(), "queued, not sent yet");
    let out = syncmail().arg("-c").arg(&conf).args(["send", "--list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("queued") && listing.contains("from mutt"), "{listing}");

    // The default sync sends (the account has [smtp]), then files in Sent, then syncs.
    let out = syncmail().arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let events = json_lines(&out.stdout);
    assert!(events.iter().any(|e| e["event"] == "progress" && e["step"] == "send"));
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!((done["sent"].as_u64(), done["filed"].as_u64()), (Some(1), Some(1)), "{done}");
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].from, "alice@example.org");
    assert_eq!(got[0].to, vec!["bob@example.org", "dave@example.org"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(!text.contains("Bcc:"), "{text}");
    assert!(text.contains("Hi Bob.\r\n.\r\nA lone dot above.\r\n"), "-oi keeps the lone dot: {text:?}");
    assert_eq!(far_count(&dv, "Sent Messages", "from mutt"), 1);
    // The Sent copy came down in the same run; the outbox is empty.
    let local_sent = syncmail_testkit::read_maildir(&tmp.path().join("mail/Sent Messages"));
    assert_eq!(local_sent.len(), 1);
    assert!(syncmail_testkit::read_maildir(&tmp.path().join("mail/Outbox")).is_empty());
}

/// The real binary killed (SIGKILL) after the server took the message and before its answer
/// was recorded: the next runs do not send it again but say it may have been sent; the
/// person's `--sent` files it, once.
#[test]
fn killed_between_handing_over_and_the_answer_does_not_send_twice_and_says_so() {
    let dv = Dovecot::start(Options::default());
    let smtp = SmtpServer::start("starttls", &dv.dir().join("certs"));
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_send_config(&dv, &smtp, tmp.path());
    send_as_mutt(&conf, OUTGOING, &["bob@example.org"]);
    smtp.delay_answer(30);
    let mut child =
        syncmail().arg("-c").arg(&conf).args(["-q", "send", "--flush"]).stderr(Stdio::null()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while smtp.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the server never got the message");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, while the server holds back its 250
    child.wait().unwrap();
    smtp.normal();

    for _ in 0..2 {
        let out = syncmail().arg("-c").arg(&conf).args(["--json", "send", "--flush"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let events = json_lines(&out.stdout);
        let e = events.iter().find(|e| e["event"] == "error").unwrap();
        assert_eq!(e["kind"], "send");
        assert!(e["message"].as_str().unwrap().contains("may have been sent"), "{e}");
        assert!(e["hint"].as_str().unwrap().contains("syncmail send --sent 1"), "{e}");
        assert_eq!(smtp.received().len(), 1, "not sent a second time");
    }
    let out = syncmail().arg("-c").arg(&conf).args(["send", "--sent", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "send", "--flush"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(smtp.received().len(), 1);
    assert_eq!(far_count(&dv, "Sent Messages", "from mutt"), 1);
    assert!(syncmail_testkit::read_maildir(&tmp.path().join("mail/Outbox")).is_empty());
}

/// Headers first with the real binary, read by a real mail reader (notmuch): placeholders
/// are indexed with their subjects and show their note; a message flagged in notmuch (which
/// renames the placeholder's file) keeps the flag through `syncmail fetch`, which brings every
/// body; the store then equals the server's, flag included.
#[test]
fn headers_only_in_notmuch_then_syncmail_fetch_brings_the_bodies() {
    let dv = Dovecot::start(Options { messages: 20, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path(), "secret");
    let flags = "download-hierarchy,download-contents,upload-contents,headers-only";
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "sync", "--flags", flags]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let notmuch = notmuch_on(tmp.path());
    notmuch(&["new", "--quiet"]);
    assert_eq!(notmuch(&["count", "--output=files"]), "20");
    assert_eq!(notmuch(&["count", "--output=files", "downloaded"]), "20");
    // A message the server has, found by its subject, shown as the note in plain text.
    let (first, _) = &dv.server_messages()["INBOX"][0];
    let text = String::from_utf8_lossy(first);
    let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap().to_string();
    let id = text.lines().find_map(|l| l.strip_prefix("Message-ID: ")).unwrap().trim_matches(['<', '>']).to_string();
    let shown = notmuch(&["show", "--format=text", &format!("id:{id}")]);
    assert!(shown.contains(&subject) && shown.contains("not downloaded yet"), "{shown}");
    notmuch(&["tag", "+flagged", &format!("id:{id}")]);

    let out = syncmail().arg("-c").arg(&conf).args(["--json", "fetch", "--all"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = json_lines(&out.stdout);
    let done: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 1);
    let fetched: u64 =
        done[0]["folders"].as_array().unwrap().iter().map(|f| f["bodies_fetched"].as_u64().unwrap()).sum();
    assert_eq!(fetched, 20);
    let out = syncmail().arg("-c").arg(&conf).args(["-q", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_store_matches(&dv, &tmp.path().join("mail"));
    let flagged =
        dv.server_messages()["INBOX"].iter().any(|(d, f)| d == first && f.contains(syncmail_imap::Flags::FLAGGED));
    assert!(flagged, "the flag set in notmuch on the placeholder did not reach the server");
    // Usage errors: exit status 2.
    let out = syncmail().arg("-c").arg(&conf).args(["fetch", "INBOX"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
