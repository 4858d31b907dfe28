//! `syncmail daemon`, `syncmail sync` handed to it over its socket, `syncmail status`,
//! and SIGTERM in the middle of a sync, against a real Dovecot.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use syncmail_testkit::{Dovecot, Options, assert_store_matches};

fn write_config(dv: &Dovecot, root: &Path) -> std::path::PathBuf {
    let conf = root.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "[accounts.t]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.t.imap]\nhost = \"127.0.0.1\"\n\
             port = {}\ntls = \"none\"\nuser = \"test\"\npassword = \"secret\"\n",
            root.join("mail").display(),
            root.join("state").display(),
            dv.port_plain,
        ),
    )
    .unwrap();
    conf
}

/// The command with its runtime directory (where the daemon's socket goes) in `root`.
fn syncmail(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_syncmail"));
    c.env("XDG_RUNTIME_DIR", root.join("run"));
    c
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Starts `syncmail --json daemon` and waits for its socket.
fn start_daemon(root: &Path, conf: &Path) -> Child {
    std::fs::create_dir_all(root.join("run")).unwrap();
    let child = syncmail(root)
        .arg("-c")
        .arg(conf)
        .args(["--json", "daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sock = root.join("run/syncmail/daemon.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "the daemon never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// SIGTERM by exact pid, through the shell's builtin (see common.md: never procps' kill
/// with a negative pid).
fn sigterm(child: &Child) {
    let st = Command::new("bash").arg("-c").arg(format!("kill -TERM {}", child.id())).status().unwrap();
    assert!(st.success());
}

/// Waits for the process to end; returns whether it exited 0.
fn wait_exit(child: &mut Child, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop within {secs} s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sync_goes_through_a_running_daemon_and_status_shows_it() {
    let dv = Dovecot::start(Options { messages: 30, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path());
    let mut daemon = start_daemon(tmp.path(), &conf);
    let run = tmp.path().join("run/syncmail");
    assert_eq!(std::fs::metadata(&run).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(run.join("daemon.sock")).unwrap().permissions().mode() & 0o777, 0o600);
    dv.save("INBOX", &syncmail_testkit::message("asked for", "now"));
    // No configuration here: only the daemon, with its own, can carry this out.
    let out = syncmail(tmp.path())
        .args(["-c", "/nonexistent/config.toml", "--json", "sync", "--folder", "INBOX"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = json_lines(&out.stdout);
    assert!(events.iter().any(|e| e["event"] == "progress" && e["step"] == "check-folder"), "{events:#?}");
    let done: Vec<_> = events.iter().filter(|e| e["event"] == "done").collect();
    assert_eq!(done.len(), 1, "{events:#?}");
    assert_eq!(done[0]["success"], true);
    assert_eq!(done[0]["account"], "t");

    // The daemon's own first sync, of every folder, ends too.
    let status_json = || {
        let out = syncmail(tmp.path()).args(["--json", "status"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        json_lines(&out.stdout).remove(0)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = status_json();
        let a = &s["accounts"][0];
        if a["running"].is_null() && a["queued"].as_array().is_some_and(Vec::is_empty) {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon never became idle: {s:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = &status;
    assert_eq!(status["daemon"], true);
    let account = &status["accounts"][0];
    assert_eq!(account["account"], "t");
    assert!(account["last_success"].as_u64().is_some(), "{status:#}");
    assert!(account["folders"]["INBOX"].as_u64().is_some(), "{status:#}");
    let human = syncmail(tmp.path()).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("t: last successful sync") && text.contains("INBOX: synced"), "{text}");

    sigterm(&daemon);
    assert!(wait_exit(&mut daemon, 20));
    assert!(!run.join("daemon.sock").exists(), "the socket is removed on the way out");
    // With no daemon, status says so and exits 1.
    let out = syncmail(tmp.path()).arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_store_matches(&dv, &tmp.path().join("mail"));
}

#[test]
fn sigterm_mid_sync_stops_cleanly_and_the_store_stays_consistent() {
    let dv = Dovecot::start(Options { messages: 1500, corpus_args: vec!["--tiny".into()], ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = write_config(&dv, tmp.path());
    let mut daemon = start_daemon(tmp.path(), &conf);
    let mut lines = BufReader::new(daemon.stdout.take().unwrap()).lines();
    // The first download under way, then SIGTERM.
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "progress" && v["step"] == "download" && v["index"].as_u64() > Some(0) {
            break;
        }
    }
    sigterm(&daemon);
    let rest: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert!(wait_exit(&mut daemon, 20), "exit status 0 after SIGTERM");
    let done: Vec<_> = rest.iter().filter(|e| e["event"] == "done").collect();
    assert!(done.iter().any(|d| d["cancelled"] == true), "the sync in hand stopped: {done:#?}");
    // The next sync (no daemon now: it runs here) completes it, nothing lost or twice.
    let out = syncmail(tmp.path()).arg("-c").arg(&conf).args(["--json", "sync"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = json_lines(&out.stdout).into_iter().find(|e| e["event"] == "done").unwrap();
    assert!(done["downloaded"].as_u64().unwrap() > 0, "the stopped sync had not finished: {done}");
    assert_store_matches(&dv, &tmp.path().join("mail"));
}
