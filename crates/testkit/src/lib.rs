//! A throwaway Dovecot for tests: its own directory, ports on 127.0.0.1, a static user
//! `test`/`secret`, Maildir++ storage filled from the shared corpus, TLS with a private
//! CA. Started per test, killed when dropped. The config template and the notes behind it
//! are in `scripts/dovecot/`.
//!
//! [`smtp::SmtpServer`] is the SMTP side: aiosmtpd from PyPI, run by a script of ours.
//!
//! Requires `dovecot` and `doveadm` (Debian's `dovecot-imapd`; `scripts/test.sh` installs
//! it), `openssl`, `python3`, and root (Dovecot's mail processes run as `nobody`, so the
//! files are chowned to it).
#![allow(clippy::unwrap_used)] // a test harness: failing loudly is its job

pub mod cyrus;
pub mod hostile;
pub mod proxy;
pub mod smtp;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use syncmail_imap::Flags;

pub const USER: &str = "test";
pub const PASSWORD: &str = "secret";
const NOBODY: u32 = 65534;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The corpus generator: `$SYNCMAIL_CORPUS_SCRIPT`, else `../shared/corpus/make-corpus.py`
/// beside the repository.
pub fn corpus_script() -> PathBuf {
    if let Some(p) = std::env::var_os("SYNCMAIL_CORPUS_SCRIPT") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("../shared/corpus/make-corpus.py");
    assert!(p.exists(), "the corpus generator is not at {} (set SYNCMAIL_CORPUS_SCRIPT)", p.display());
    p
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Messages from the corpus generator (0: an empty INBOX only).
    pub messages: u32,
    /// Extra arguments for the corpus generator (`--tiny`, `--folders A,B`).
    pub corpus_args: Vec<String>,
    /// Advertise only this (`IMAP4rev1`) after login, to exercise the fallbacks.
    pub capability: Option<String>,
    /// SASL mechanisms offered (default `plain login`); `login` hides AUTH=PLAIN.
    pub auth_mechanisms: Option<String>,
    /// The hierarchy separator the server shows (default `.`).
    pub separator: Option<char>,
    /// The password of user `test` (default [`PASSWORD`]).
    pub password: Option<String>,
    /// Also offer XOAUTH2 and OAUTHBEARER, accepting JWTs (`sub` = `test`) signed with
    /// HS256 and this key (base64), checked by Dovecot itself (`introspection_mode =
    /// local`), so no OAuth server is needed.
    pub oauth2_key: Option<String>,
    /// `mailbox_list_index = yes`, with which Dovecot 2.3 offers NOTIFY (RFC 5465).
    pub notify: bool,
    /// Load the `imap_zlib` plugin, with which Dovecot offers COMPRESS=DEFLATE (RFC 4978).
    pub compress: bool,
    /// Logged-in connections allowed per user and address (default 100); more are refused
    /// with `NO [LIMIT]`.
    pub max_connections: Option<u32>,
}

pub struct Dovecot {
    dir: tempfile::TempDir,
    pub port_plain: u16,
    pub port_tls: u16,
    child: Option<Child>,
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn chown_tree(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path());
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why a server did not come up (printed by [`start_failed`]).
#[derive(Debug)]
#[allow(dead_code)] // the fields are read through Debug only
enum StartFailure {
    /// Its process ended first, with this status.
    Exited(std::process::ExitStatus),
    /// No greeting within 20 s.
    Timeout,
}

/// Waits until the server `child` answers on `port` with an IMAP greeting (`* OK`).
fn wait_for_greeting(port: u16, child: &mut Child) -> Result<(), StartFailure> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).is_ok() && &buf == b"* OK" {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(StartFailure::Exited(status));
        }
        if Instant::now() > deadline {
            return Err(StartFailure::Timeout);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a server in the foreground, in a process group of its own (so that
/// [`kill_group`] gets everything it forks), and returns once it greets on `port`.
/// Panics with the end of its `log` if it exits first or does not greet within 20 s.
fn start_server(cmd: &mut Command, port: u16, log: &Path) -> Child {
    try_start_server(cmd, port, log).unwrap_or_else(|why| panic!("{why}"))
}

/// [`start_server`], returning why it failed instead of panicking.
fn try_start_server(cmd: &mut Command, port: u16, log: &Path) -> Result<Child, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Err(why) = wait_for_greeting(port, &mut child) {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        kill_group(child);
        return Err(format!("{cmd:?} did not start ({why:?}); the end of {}:\n{tail}", log.display()));
    }
    Ok(child)
}

/// Kills a server started with `process_group(0)` and everything it forked (SIGKILL to
/// its process group), reaps it, and waits until the rest of the group is gone too.
fn kill_group(mut child: Child) {
    let pgid = child.id();
    // The shell's builtin kill, not procps' /usr/bin/kill: procps-ng 4.0.2 (Debian 12)
    // mis-parses a negative PID after a signal option and signals every process.
    let _ = Command::new("bash").arg("-c").arg(format!("kill -KILL -- -{pgid}")).status();
    let _ = child.kill();
    let _ = child.wait();
    // The server's children die a moment after it, and until they do they hold what they
    // inherited: Cyrus' imapd processes accept on the master's listening socket, so a
    // master started at once cannot bind the port (it goes on without the service), or
    // exits (status 78). Seen in about one restart in ten without this wait.
    // At most 5 s, and no panic (this runs in Drop): a launch after it reports a failure.
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether a process of group `pgid` still runs (zombies, which hold nothing, do not count).
fn group_alive(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else { return false };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok()).any(|stat| {
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else { return false };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let pgrp = fields.nth(1);
        state != Some("Z") && pgrp == Some(&pgid.to_string())
    })
}

impl Dovecot {
    pub fn start(opts: Options) -> Dovecot {
        for bin in ["/usr/sbin/dovecot", "/usr/bin/doveadm"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's dovecot-imapd (scripts/test.sh does it)"
            );
        }
        let dir = tempfile::Builder::new().prefix("syncmail-dovecot-").tempdir().unwrap();
        let d = dir.path();
        for sub in ["index", "control", "home"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let scripts = repo_root().join("scripts/dovecot");
        run(Command::new("sh").arg(scripts.join("make-certs.sh")).arg(d.join("certs")));
        if opts.messages > 0 {
            run(Command::new("python3")
                .arg(corpus_script())
                .arg(d.join("mail"))
                .arg("--messages")
                .arg(opts.messages.to_string())
                .args(&opts.corpus_args)
                .stdout(Stdio::null()));
        } else {
            for s in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(d.join("mail").join(s)).unwrap();
            }
        }
        for sub in ["mail", "index", "control", "home"] {
            chown_tree(&d.join(sub));
        }
        let mut mechanisms = opts.auth_mechanisms.clone().unwrap_or_else(|| "plain login".into());
        let mut oauth2_passdb = String::new();
        if let Some(key) = &opts.oauth2_key {
            // dict-fs keeps `shared/` keys under the prefix without it; both are written.
            for sub in ["oauth2-keys/default/HS256", "oauth2-keys/shared/default/HS256"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
                std::fs::write(d.join(sub).join("default"), key).unwrap();
            }
            std::fs::write(
                d.join("oauth2.conf.ext"),
                format!(
                    "introspection_mode = local\nlocal_validation_key_dict = fs:posix:prefix={}/oauth2-keys/\n\
                     username_attribute = sub\n",
                    d.display()
                ),
            )
            .unwrap();
            oauth2_passdb = format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}/oauth2.conf.ext\n}}",
                d.display()
            );
            mechanisms.push_str(" xoauth2 oauthbearer");
        }
        let template = std::fs::read_to_string(scripts.join("dovecot.conf.in"))
            .unwrap()
            .replace("@DIR@", d.to_str().unwrap())
            .replace("@IMAP_CAPABILITY@", opts.capability.as_deref().unwrap_or(""))
            .replace("@SEPARATOR@", &opts.separator.unwrap_or('.').to_string())
            .replace("@AUTH_MECHANISMS@", &mechanisms)
            .replace("@OAUTH2_PASSDB@", &oauth2_passdb)
            .replace("@MAILBOX_LIST_INDEX@", if opts.notify { "yes" } else { "no" })
            .replace("@IMAP_PLUGINS@", if opts.compress { "zlib imap_zlib" } else { "" })
            .replace("@MAX_CONNECTIONS@", &opts.max_connections.unwrap_or(100).to_string())
            .replace("@PASSWORD@", opts.password.as_deref().unwrap_or(PASSWORD));
        // A free port can be taken by another test between being found and being bound:
        // a server that could not listen is started again on other ports.
        let mut attempt = 0;
        loop {
            let port_plain = free_port();
            let port_tls = free_port();
            let conf =
                template.replace("@PORT_PLAIN@", &port_plain.to_string()).replace("@PORT_TLS@", &port_tls.to_string());
            std::fs::write(d.join("dovecot.conf"), conf).unwrap();
            let mut cmd = Command::new("/usr/sbin/dovecot");
            cmd.arg("-F").arg("-c").arg(d.join("dovecot.conf"));
            match try_start_server(&mut cmd, port_plain, &d.join("dovecot.log")) {
                Ok(child) => return Dovecot { dir, port_plain, port_tls, child: Some(child) },
                Err(why) if attempt >= 2 => panic!("{why}"),
                Err(_) => attempt += 1,
            }
        }
    }

    fn launch(&mut self) {
        // Ready when the greeting arrives (sent only once auth is up).
        let mut cmd = Command::new("/usr/sbin/dovecot");
        cmd.arg("-F").arg("-c").arg(self.conf());
        let log = self.dir.path().join("dovecot.log");
        self.child = Some(start_server(&mut cmd, self.port_plain, &log));
    }

    /// Stops the server at once (SIGKILL to its process group).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            kill_group(c);
        }
    }

    /// Starts the server again on the same ports and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Restarts the server with a certificate a client must refuse: `expired`,
    /// `wrong-name` or `other-ca` (see `scripts/dovecot/make-bad-cert.sh`).
    pub fn use_bad_certificate(&mut self, kind: &str) {
        let script = repo_root().join("scripts/dovecot/make-bad-cert.sh");
        run(Command::new("sh").arg(script).arg(self.dir.path().join("certs")).arg(kind));
        self.restart();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }
    /// The server's Maildir++ root (INBOX itself; folders as `.Name`).
    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// Runs doveadm against this instance as user `test`; returns its output.
    pub fn doveadm(&self, args: &[&str]) -> String {
        run(&mut self.doveadm_command(args))
    }

    /// The doveadm command line for `args`, as user `test`.
    fn doveadm_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("/usr/bin/doveadm");
        cmd.arg("-c").arg(self.conf());
        let (sub, rest) =
            args.split_at(if args.first() == Some(&"mailbox") || args.first() == Some(&"flags") { 2 } else { 1 });
        cmd.args(sub).arg("-u").arg(USER).args(rest);
        cmd
    }

    /// Creates a mailbox while IMAP sessions may be listing (a daemon syncing). Dovecot
    /// 2.3 can then answer "Mailbox already exists" for the mailbox it has just made: a
    /// session's LIST refreshed the folder list between its mkdir and its own update of
    /// that list. That answer is taken as done when the mailbox is listed afterwards.
    pub fn create_mailbox_while_listed(&self, name: &str) {
        let mut cmd = self.doveadm_command(&["mailbox", "create", name]);
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            return;
        }
        assert!(err.contains("Mailbox already exists"), "{cmd:?} failed: {err}");
        let listed = self.doveadm(&["mailbox", "list"]);
        assert!(listed.lines().any(|l| l.trim() == name), "{cmd:?} said it exists, but it is not listed: {listed}");
    }

    /// IMAP connections the server has open now, by `doveadm who -1` (one line each).
    pub fn imap_connections(&self) -> usize {
        let mut cmd = Command::new("/usr/bin/doveadm");
        cmd.arg("-c").arg(self.conf()).args(["who", "-1"]);
        run(&mut cmd).lines().filter(|l| l.split_whitespace().nth(1) == Some("imap")).count()
    }

    /// Delivers a message into a folder (UTF-8 name, `.` separator).
    pub fn save(&self, folder: &str, message: &[u8]) {
        let mut cmd = Command::new("/usr/bin/doveadm");
        cmd.arg("-c").arg(self.conf()).args(["save", "-u", USER, "-m", folder]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "doveadm save failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// UIDs of a folder, in order.
    pub fn uids(&self, folder: &str) -> Vec<u32> {
        let out = self.doveadm(&["search", "mailbox", folder, "all"]);
        out.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse().ok()).collect()
    }

    /// The folder's UIDVALIDITY.
    pub fn uidvalidity(&self, folder: &str) -> u32 {
        let out = self.doveadm(&["mailbox", "status", "uidvalidity", folder]);
        out.split("uidvalidity=")
            .nth(1)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("uidvalidity: {out:?}"))
    }

    pub fn flags_add(&self, folder: &str, uid: u32, flags: &str) {
        self.doveadm(&["flags", "add", flags, "mailbox", folder, "uid", &uid.to_string()]);
    }
    pub fn flags_remove(&self, folder: &str, uid: u32, flags: &str) {
        self.doveadm(&["flags", "remove", flags, "mailbox", folder, "uid", &uid.to_string()]);
    }
    pub fn expunge(&self, folder: &str, uid: u32) {
        self.doveadm(&["expunge", "mailbox", folder, "uid", &uid.to_string()]);
    }

    /// Makes the server renumber a folder (a new UIDVALIDITY, new UIDs), as a restored
    /// backup or a rebuilt index does: stops the server, removes the folder's UID list and
    /// index, starts it again. `folder` is the server name (`INBOX`, `Lists.rust`).
    pub fn renumber(&mut self, folder: &str) {
        self.stop();
        self.launch_after_renumber(folder);
    }

    /// Replaces a folder's messages on the server with others, behind its back, and
    /// renumbers it: the folder is a different one under the same name.
    pub fn replace_folder(&mut self, folder: &str, messages: &[Vec<u8>]) {
        self.stop();
        let dir = if folder == "INBOX" {
            self.mail_dir()
        } else {
            self.mail_dir().join(format!(".{}", syncmail_imap::utf7::encode(folder)))
        };
        for sub in ["cur", "new"] {
            for e in std::fs::read_dir(dir.join(sub)).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
        for (i, m) in messages.iter().enumerate() {
            let p = dir.join("new").join(format!("replaced{i}.test"));
            std::fs::write(&p, m).unwrap();
            std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        self.launch_after_renumber(folder);
    }

    fn launch_after_renumber(&mut self, folder: &str) {
        let sub = format!(".{}", syncmail_imap::utf7::encode(folder));
        for base in ["control", "index"] {
            let p = self.dir.path().join(base).join(&sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).unwrap();
            }
        }
        // UIDVALIDITY is a timestamp: make sure the new one differs.
        std::thread::sleep(Duration::from_millis(1100));
        self.launch();
    }

    /// Every message the server holds, read from its storage: server folder name (UTF-8,
    /// `.` separator) → sorted list of (content with LF line ends, flags).
    pub fn server_messages(&self) -> BTreeMap<String, Vec<(Vec<u8>, Flags)>> {
        let mut out = BTreeMap::new();
        let root = self.mail_dir();
        out.insert("INBOX".to_string(), read_maildir(&root));
        for e in std::fs::read_dir(&root).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if let Some(raw) = name.strip_prefix('.')
                && e.path().join("cur").is_dir()
            {
                let utf8 = syncmail_imap::utf7::decode(raw.as_bytes()).unwrap();
                out.insert(utf8, read_maildir(&e.path()));
            }
        }
        out
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The messages of one Maildir folder: sorted (content with LF line ends, flags).
pub fn read_maildir(dir: &Path) -> Vec<(Vec<u8>, Flags)> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else { continue };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let (_, info) = syncmail_maildir::split_name(&name);
            let data = std::fs::read(e.path()).unwrap();
            v.push((syncmail_maildir::crlf_to_lf(&data), Flags::from_maildir(info)));
        }
    }
    v.sort();
    v
}

/// The local store's messages by server folder name, for comparison with
/// [`Dovecot::server_messages`]: the verbatim layout maps `A.B` to `A/B`.
pub fn local_messages(
    root: &Path,
    server_names: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Vec<(Vec<u8>, Flags)>> {
    local_messages_in(root, server_names, syncmail_maildir::Layout::Verbatim)
}

/// [`local_messages`] for a store in `layout`.
pub fn local_messages_in(
    root: &Path,
    server_names: impl IntoIterator<Item = String>,
    layout: syncmail_maildir::Layout,
) -> BTreeMap<String, Vec<(Vec<u8>, Flags)>> {
    server_names
        .into_iter()
        .map(|n| {
            let rel: PathBuf = layout.folder_path(&n, Some('.')).unwrap();
            let msgs = read_maildir(&root.join(rel));
            (n, msgs)
        })
        .collect()
}

/// Asserts that the Maildir under `maildir_root` holds exactly the server's messages, folder
/// by folder, byte for byte up to line ends, with the same flags: nothing missing, nothing
/// twice.
pub fn assert_store_matches(dv: &Dovecot, maildir_root: &Path) {
    assert_store_matches_in(dv, maildir_root, syncmail_maildir::Layout::Verbatim);
}

/// [`assert_store_matches`] for a store in `layout`.
pub fn assert_store_matches_in(dv: &Dovecot, maildir_root: &Path, layout: syncmail_maildir::Layout) {
    let server = dv.server_messages();
    let local = local_messages_in(maildir_root, server.keys().cloned(), layout);
    for (folder, msgs) in &server {
        let l = &local[folder];
        assert_eq!(l.len(), msgs.len(), "{folder}: {} local messages, {} on the server", l.len(), msgs.len());
        for (i, (a, b)) in msgs.iter().zip(l.iter()).enumerate() {
            assert!(a.0 == b.0, "{folder}: message {i} differs in content");
            assert_eq!(a.1, b.1, "{folder}: message {i} differs in flags");
        }
    }
}

/// A small RFC 5322 message with a unique subject.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@example.org>\r\nTo: test@example.org\r\nSubject: {subject}\r\n\
         Message-ID: <{}@test>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n",
        subject.replace(' ', ".")
    )
    .into_bytes()
}
