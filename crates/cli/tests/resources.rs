//! Bounded resources, measured on the real binary: a 100 MB message is streamed to disk
//! (peak RSS of the process far below the message's size), file descriptors and
//! connections stay few while thousands of messages arrive, and stale files that a crash
//! left in a Maildir's `tmp/` are removed.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use syncmail_testkit::hostile::{FakeFolder, Script, ScriptedServer};
use syncmail_testkit::{Dovecot, Options};

fn config(root: &Path, port: u16) -> PathBuf {
    let conf = root.join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "[accounts.r]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.r.imap]\nhost = \"127.0.0.1\"\n\
             port = {port}\ntls = \"none\"\nuser = \"test\"\npassword = \"secret\"\ntimeout = 60\n",
            root.join("mail").display(),
            root.join("state").display()
        ),
    )
    .unwrap();
    conf
}

/// What one run of the binary used at its peak.
struct Usage {
    ok: bool,
    /// Peak resident set size (VmHWM), KiB.
    peak_rss_kib: u64,
    /// Most file descriptors open at once, sampled every few milliseconds.
    peak_fds: usize,
    output: String,
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Runs `syncmail -c conf --json sync`, sampling its open descriptors and its VmHWM (the
/// kernel's high-water mark of resident memory, which only grows) every 3 ms until it
/// exits.
fn measured_sync(conf: &Path) -> Usage {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncmail"))
        .arg("-c")
        .arg(conf)
        .args(["--json", "sync"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        use std::io::Read;
        let (mut o, mut e) = (out, err);
        let _ = o.read_to_string(&mut s);
        let _ = e.read_to_string(&mut s);
        s
    });
    let (mut peak_rss_kib, mut peak_fds) = (0, 0);
    loop {
        if let Some(v) = status_field(pid, "VmHWM:") {
            peak_rss_kib = peak_rss_kib.max(v);
        }
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            peak_fds = peak_fds.max(rd.count());
        }
        if let Some(st) = child.try_wait().unwrap() {
            return Usage { ok: st.success(), peak_rss_kib, peak_fds, output: reader.join().unwrap() };
        }
        std::thread::sleep(Duration::from_millis(3));
    }
}

/// A message of about `size` bytes: headers, then base64-like lines of 76 characters.
fn big_message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: a@example.org\r\nTo: test@example.org\r\nSubject: big one\r\nMessage-ID: <big@test>\r\n\r\n".to_vec();
    let line: Vec<u8> =
        (0..76).map(|i| b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64]).collect();
    while m.len() < size {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

#[test]
fn a_100_mb_message_is_streamed_to_disk_not_held_in_memory() {
    let dv = Dovecot::start(Options::default());
    let size = 100 << 20;
    let msg = big_message(size);
    dv.save("INBOX", &msg);
    drop(msg);
    let tmp = tempfile::tempdir().unwrap();
    let u = measured_sync(&config(tmp.path(), dv.port_plain));
    assert!(u.ok, "{}", u.output);
    let files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|d| std::fs::read_dir(tmp.path().join("mail/INBOX").join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    syncmail_testkit::assert_store_matches(&dv, &tmp.path().join("mail"));
    let rss_mib = u.peak_rss_kib / 1024;
    println!("peak RSS while downloading a {} MiB message: {rss_mib} MiB", size >> 20);
    assert!(rss_mib < 40, "peak RSS {rss_mib} MiB for a 100 MiB message: it was held in memory");
    assert!(std::fs::read_dir(tmp.path().join("mail/INBOX/tmp")).unwrap().next().is_none(), "tmp/ is not empty");
}

#[test]
fn descriptors_and_connections_stay_few_and_stale_tmp_files_go() {
    let mut folders = Vec::new();
    for name in ["INBOX", "Archive", "Lists/rust"] {
        let mut f = FakeFolder::new(name);
        for i in 0..400 {
            f.add(&syncmail_testkit::message(&format!("{name} {i}"), "short"), &[]);
        }
        // A few above the streaming threshold too.
        for i in 0..3 {
            let mut m = big_message(2 << 20);
            m.extend_from_slice(format!("{name} big {i}\r\n").as_bytes());
            f.add(&m, &["\\Seen"]);
        }
        folders.push(f);
    }
    let fake = ScriptedServer::start(Script { folders, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let conf = config(tmp.path(), fake.port);
    let u = measured_sync(&conf);
    assert!(u.ok, "{}", u.output);
    println!(
        "peak descriptors: {}, connections: {}",
        u.peak_fds,
        fake.connections.load(std::sync::atomic::Ordering::SeqCst)
    );
    // Two connections at most (three folders of a first sync: the second is opened), and
    // per connection a bounded set of descriptors (its socket, the state's database, WAL
    // and shared memory, the file being written): under 16 with one, under 24 with two,
    // however many messages and folders.
    assert!(u.peak_fds < 24, "{} file descriptors open at once", u.peak_fds);
    assert_eq!(fake.connections.load(std::sync::atomic::Ordering::SeqCst), 2, "two connections for the account");
    for (dir, n) in [("INBOX", 403), ("Archive", 403), ("Lists/rust", 403)] {
        let got = syncmail_testkit::read_maildir(&tmp.path().join("mail").join(dir));
        assert_eq!(got.len(), n, "{dir}");
    }

    // A crash left files in tmp/: one older than 36 hours, one fresh (a delivery that may
    // still be under way). The next download removes the old one only.
    let tmpdir = tmp.path().join("mail/INBOX/tmp");
    let old = tmpdir.join("1700000000.M1P1Q1.crashed");
    let fresh = tmpdir.join("1700000001.M1P1Q2.busy");
    std::fs::write(&old, b"half a message").unwrap();
    std::fs::write(&fresh, b"being written").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(40 * 3600)).unwrap();
    fake.with_folder(b"INBOX", |f| f.add(&syncmail_testkit::message("later", "x"), &[]));
    let u = measured_sync(&conf);
    assert!(u.ok, "{}", u.output);
    assert!(!old.exists(), "a stale file in tmp/ was left");
    assert!(fresh.exists(), "a fresh file in tmp/ was removed");
    assert_eq!(syncmail_testkit::read_maildir(&tmp.path().join("mail/INBOX")).len(), 404);
}
