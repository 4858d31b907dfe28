//! A throwaway SMTP server for tests: `scripts/smtp/testserver.py`, which runs aiosmtpd
//! (PyPI; `scripts/install-deps.sh` installs it into a virtual environment) on a free port
//! of 127.0.0.1, writes every accepted message with its envelope to a directory, and can
//! be told to answer 4xx or 5xx on cue. Started per test, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The Python of the virtual environment that holds aiosmtpd: `$SYNCMAIL_VENV/bin/python`,
/// else `~/.cache/syncmail-venv/bin/python` (where `scripts/install-deps.sh` puts it).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("SYNCMAIL_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/syncmail-venv"));
    let p = venv.join("bin/python");
    assert!(p.exists(), "{} is missing: run scripts/install-deps.sh (it installs aiosmtpd)", p.display());
    p
}

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    /// MAIL FROM parameters (`SIZE=…`, `BODY=8BITMIME`).
    pub mail_options: Vec<String>,
    /// The user that authenticated.
    pub auth: Option<String>,
    /// The text as received (CRLF, dots unstuffed).
    pub data: Vec<u8>,
}

pub struct SmtpServer {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl SmtpServer {
    /// Starts the server; `tls` is "implicit", "starttls" or "none"; `certs` holds
    /// `server.pem` and `server.key` (a Dovecot instance's `certs/`, same private CA).
    pub fn start(tls: &str, certs: &Path) -> SmtpServer {
        let dir = tempfile::Builder::new().prefix("syncmail-smtp-").tempdir().unwrap();
        let port = crate::free_port();
        let script = crate::repo_root().join("scripts/smtp/testserver.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--port", &port.to_string(), "--tls", tls, "--dir"])
            .arg(dir.path())
            .arg("--certs")
            .arg(certs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("server.log")).unwrap()))
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP test server did not start; see {}",
            dir.path().join("server.log").display()
        );
        SmtpServer { dir, port, child }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn control(&self, v: &str) {
        let tmp = self.dir.path().join("control.json.tmp");
        std::fs::write(&tmp, v).unwrap();
        std::fs::rename(tmp, self.dir.path().join("control.json")).unwrap();
    }

    /// Answer DATA with 451 for the next `n` messages.
    pub fn tempfail(&self, n: u32) {
        self.control(&format!("{{\"tempfail_data\": {n}}}"));
    }

    /// Refuse RCPT TO `addr` with `reply` (such as "550 5.1.1 no such user").
    pub fn reject(&self, addr: &str, reply: &str) {
        self.control(&format!("{{\"reject\": {{\"{addr}\": \"{reply}\"}}}}"));
    }

    /// Store each message, then wait `secs` before answering.
    pub fn delay_answer(&self, secs: u32) {
        self.control(&format!("{{\"data_delay\": {secs}}}"));
    }

    /// Behave normally again.
    pub fn normal(&self) {
        self.control("{}");
    }

    /// Every message accepted so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for n in 1.. {
            let env = self.dir.path().join(format!("{n}.envelope"));
            let Ok(text) = std::fs::read_to_string(&env) else { break };
            let mut r = Received {
                from: String::new(),
                to: Vec::new(),
                mail_options: Vec::new(),
                auth: None,
                data: std::fs::read(self.dir.path().join(format!("{n}.eml"))).unwrap(),
            };
            for l in text.lines() {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                match k {
                    "from" => r.from = v.to_string(),
                    "rcpt" => r.to.push(v.to_string()),
                    "mail-option" => r.mail_options.push(v.to_string()),
                    "auth" => r.auth = Some(v.to_string()),
                    _ => {}
                }
            }
            out.push(r);
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
