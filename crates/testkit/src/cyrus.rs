//! A throwaway Cyrus IMAP 3.6 for tests that need what Dovecot 2.3 does not offer:
//! OBJECTID (RFC 8474: `MAILBOXID`, `EMAILID`; `THREADID` is always NIL here). Its own
//! directory, one plain IMAP port on 127.0.0.1, started per test, killed when dropped.
//! The config templates and the notes behind them are in `scripts/cyrus/`.
//!
//! - Login: any user name with any password (SASL's `alwaystrue`); tests use
//!   [`USER`]/[`PASSWORD`](crate::PASSWORD) like with Dovecot. A user's INBOX is created
//!   at its first login; [`Cyrus::start`] logs `test` in once, so INBOX exists when it
//!   returns. A wrong password cannot be tested here.
//! - Names: folders at the top level (`altnamespace`), `/` between levels
//!   (`unixhierarchysep`), so `.` is an ordinary character ([`SEPARATOR`]).
//! - Out-of-band changes ([`Cyrus::create`], [`Cyrus::deliver`], [`Cyrus::move_uids`]...)
//!   go through a separate IMAP session of the same user, opened for each call, as doveadm
//!   does for Dovecot: the session under test sees them at its next command.
//!
//! Requires Cyrus from Debian (`scripts/install-deps.sh cyrus`: cyrus-common and the imapd of cyrus-imapd; it creates the
//! `cyrus` system user the server drops to) and root (the master process starts as root
//! and switches to `cyrus`, so the instance directory is handed to that user).

use crate::{USER, kill_group, run, start_server};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

const MASTER: &str = "/usr/lib/cyrus/bin/master";

/// The hierarchy separator the instance shows (`unixhierarchysep: yes`).
pub const SEPARATOR: char = '/';

pub struct Cyrus {
    dir: tempfile::TempDir,
    /// Plain IMAP on 127.0.0.1 (no TLS: the OBJECTID tests do not need it).
    pub port: u16,
    /// The master process; its process group holds every imapd it forked.
    child: Option<Child>,
}

impl Cyrus {
    /// Starts a fresh instance and creates `test`'s INBOX. Measured: about 0.1 s.
    pub fn start() -> Cyrus {
        assert!(Path::new(MASTER).exists(), "{MASTER} is missing: install Cyrus with scripts/install-deps.sh cyrus");
        let dir = tempfile::Builder::new().prefix("syncmail-cyrus-").tempdir().unwrap();
        let d = dir.path();
        // The server runs as user `cyrus`: it must get through the (0700) temp dir.
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["conf/socket", "spool", "run/proc", "run/lock", "run/socket"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let port = crate::free_port();
        let scripts = crate::repo_root().join("scripts/cyrus");
        for name in ["imapd.conf", "cyrus.conf"] {
            let text = std::fs::read_to_string(scripts.join(format!("{name}.in")))
                .unwrap()
                .replace("@DIR@", d.to_str().unwrap())
                .replace("@PORT@", &port.to_string());
            std::fs::write(d.join(name), text).unwrap();
        }
        run(Command::new("chown")
            .arg("-R")
            .arg("cyrus:mail")
            .arg(d.join("conf"))
            .arg(d.join("spool"))
            .arg(d.join("run")));
        let mut cy = Cyrus { dir, port, child: None };
        cy.launch();
        // The first login creates INBOX (autocreate_quota); it also shows that logins work.
        cy.session().logout();
        cy
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let log = d.join("master.log");
        // In the foreground (master forks only the services); its log is the master's own
        // stdout/stderr: the services log to syslog, which is not kept here.
        let mut cmd = Command::new(MASTER);
        cmd.arg("-C").arg(d.join("imapd.conf")).arg("-M").arg(d.join("cyrus.conf"));
        cmd.arg("-p").arg(d.join("run/master.pid")).arg("-L").arg(&log);
        self.child = Some(start_server(&mut cmd, self.port, &log));
    }

    /// Stops the server at once (SIGKILL to its process group).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            kill_group(c);
        }
    }

    /// Starts the server again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// The imapd.conf to give Cyrus' own tools with `-C`.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("imapd.conf")
    }

    /// A new IMAP session, logged in as [`USER`] over plain TCP.
    pub fn session(&self) -> Session {
        let mut s = Session::connect(self.port);
        s.ok(&format!("LOGIN {USER} {}", crate::PASSWORD));
        s
    }

    /// Creates a folder (UTF-8 name, `/` between levels); returns its MAILBOXID.
    pub fn create(&self, folder: &str) -> String {
        let r = self.session().ok(&format!("CREATE {}", quote(folder)));
        // `a1 OK [MAILBOXID (<id>)] Completed` (RFC 8474 section 4.1)
        parenthesized_after(&r.tagged, "MAILBOXID").unwrap_or_else(|| panic!("CREATE {folder}: {}", r.tagged))
    }
    pub fn rename(&self, from: &str, to: &str) {
        self.session().ok(&format!("RENAME {} {}", quote(from), quote(to)));
    }
    pub fn delete(&self, folder: &str) {
        self.session().ok(&format!("DELETE {}", quote(folder)));
    }

    /// Delivers a message into a folder with APPEND; returns its UID (from APPENDUID).
    pub fn deliver(&self, folder: &str, message: &[u8]) -> u32 {
        let r = self.session().append(folder, message);
        // `a1 OK [APPENDUID <uidvalidity> <uid>] Completed`
        r.tagged
            .split("[APPENDUID ")
            .nth(1)
            .and_then(|rest| rest.split([' ', ']']).nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("APPEND to {folder}: {}", r.tagged))
    }

    /// The folder's UIDs, in order.
    pub fn uids(&self, folder: &str) -> Vec<u32> {
        let mut s = self.session();
        s.ok(&format!("EXAMINE {}", quote(folder)));
        let r = s.ok("UID SEARCH ALL");
        let mut uids: Vec<u32> = r
            .untagged
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|rest| rest.split_whitespace().map(|u| u.parse::<u32>().unwrap()))
            .collect();
        uids.sort_unstable();
        uids
    }

    /// Moves messages (by UID) from one folder to another (UID MOVE, RFC 6851).
    pub fn move_uids(&self, from: &str, uids: &[u32], to: &str) {
        assert!(!uids.is_empty(), "move_uids: no UIDs");
        let set: Vec<String> = uids.iter().map(u32::to_string).collect();
        let mut s = self.session();
        s.ok(&format!("SELECT {}", quote(from)));
        s.ok(&format!("UID MOVE {} {}", set.join(","), quote(to)));
    }

    /// The folder's MAILBOXID, from STATUS.
    pub fn mailbox_id(&self, folder: &str) -> String {
        let r = self.session().ok(&format!("STATUS {} (MAILBOXID)", quote(folder)));
        r.untagged
            .iter()
            .find_map(|l| parenthesized_after(l, "MAILBOXID"))
            .unwrap_or_else(|| panic!("STATUS {folder} (MAILBOXID): {:?}", r.untagged))
    }

    /// The EMAILID of one message.
    pub fn email_id(&self, folder: &str, uid: u32) -> String {
        let mut s = self.session();
        s.ok(&format!("EXAMINE {}", quote(folder)));
        let r = s.ok(&format!("UID FETCH {uid} (EMAILID)"));
        r.untagged
            .iter()
            .find_map(|l| parenthesized_after(l, "EMAILID"))
            .unwrap_or_else(|| panic!("UID FETCH {uid} (EMAILID) in {folder}: {:?}", r.untagged))
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value in `KEY (value)` within a response line: `MAILBOXID (abc)` → `abc`.
pub fn parenthesized_after(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key} ("))? + key.len() + 2;
    let len = line[start..].find(')')?;
    Some(line[start..start + len].to_string())
}

/// A mailbox name as an IMAP quoted string: modified UTF-7, `\` and `"` escaped.
pub fn quote(folder: &str) -> String {
    let mut out = String::from("\"");
    for c in syncmail_imap::utf7::encode(folder).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// What a command got back: the untagged lines (with any literal inlined) and the tagged
/// completion, both without CRLF.
#[derive(Debug, Clone)]
pub struct Reply {
    pub untagged: Vec<String>,
    pub tagged: String,
}

/// A minimal blocking IMAP client for driving a test server out of band and for reading
/// its responses verbatim. Not the engine's client: it checks nothing beyond the tagged
/// status, and it panics on I/O errors (10 s read timeout, so a stuck server fails the test).
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
    /// The greeting line.
    pub greeting: String,
}

impl Session {
    /// Connects to 127.0.0.1:`port` and reads the greeting.
    pub fn connect(port: u16) -> Session {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut s = Session { reader: BufReader::new(stream), writer, next_tag: 1, greeting: String::new() };
        s.greeting = s.read_line();
        assert!(s.greeting.starts_with("* OK"), "greeting: {}", s.greeting);
        s
    }

    /// Reads one response line; a literal (`{n}` at the end) is read and inlined, and the
    /// line goes on after it.
    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        loop {
            let before = line.len();
            let n = self.reader.read_until(b'\n', &mut line).unwrap();
            assert!(n > 0, "the server closed the connection");
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            let tail = String::from_utf8_lossy(&line[before..]).into_owned();
            let Some(count) = tail
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok())
            else {
                return String::from_utf8_lossy(&line).into_owned();
            };
            let mut literal = vec![0; count];
            self.reader.read_exact(&mut literal).unwrap();
            line.extend_from_slice(b"\r\n");
            line.extend_from_slice(&literal);
        }
    }

    fn send(&mut self, command: &str) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.writer.write_all(format!("{tag} {command}\r\n").as_bytes()).unwrap();
        tag
    }

    fn collect(&mut self, tag: &str) -> Reply {
        let mut untagged = Vec::new();
        loop {
            let line = self.read_line();
            if line.strip_prefix(tag).is_some_and(|r| r.starts_with(' ')) {
                return Reply { untagged, tagged: line };
            }
            untagged.push(line);
        }
    }

    /// Sends a command (without tag and CRLF) and reads up to its completion.
    pub fn command(&mut self, command: &str) -> Reply {
        let tag = self.send(command);
        self.collect(&tag)
    }

    /// [`Session::command`], and panics unless the completion is OK.
    pub fn ok(&mut self, command: &str) -> Reply {
        let r = self.command(command);
        assert!(r.tagged.split_whitespace().nth(1) == Some("OK"), "{command}: {r:?}");
        r
    }

    /// APPENDs a message to a folder (a synchronizing literal); panics unless OK.
    pub fn append(&mut self, folder: &str, message: &[u8]) -> Reply {
        let tag = self.send(&format!("APPEND {} {{{}}}", quote(folder), message.len()));
        let cont = self.read_line();
        assert!(cont.starts_with('+'), "APPEND to {folder}: {cont}");
        self.writer.write_all(message).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
        let r = self.collect(&tag);
        assert!(r.tagged.split_whitespace().nth(1) == Some("OK"), "APPEND to {folder}: {r:?}");
        r
    }

    /// Logs out and closes the connection.
    pub fn logout(mut self) {
        self.ok("LOGOUT");
    }
}
