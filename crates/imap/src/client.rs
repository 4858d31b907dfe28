//! An IMAP client session: greeting, TLS, login, capabilities, and commands that can be
//! kept in flight together (pipelining).
//!
//! The client does not interpret mailbox state; it hands every untagged response to the
//! caller's handler while it waits for a tagged completion. Several commands may be sent
//! before their completions are read: [`Client::send`] returns the tag, and
//! [`Client::complete`] later waits for that tag, storing any other tag's completion that
//! arrives first, so completions may be collected in any order.

use crate::conn::{Connection, Limits, LiteralSink, tls_config};
use crate::error::{Error, Result};
use crate::parse::{Code, Response, Status, Untagged, parse_response};
use crate::types::Secret;
use crate::utf7;
use base64::Engine;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (port 993).
    Implicit,
    /// Plain TCP, then STARTTLS before login (port 143); refused if the server lacks it.
    StartTls,
    /// No TLS at all. Only where the configuration asks for it.
    None,
}

#[derive(Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    /// A PEM file of extra trusted CA certificates.
    pub ca_file: Option<PathBuf>,
    /// Applies to connecting and to every read and write.
    pub timeout: Duration,
    pub limits: Limits,
    /// Allow a password to be sent without TLS to a server that is not on this machine.
    /// Off by default: with `TlsMode::None`, only loopback servers get a password.
    pub allow_plaintext: bool,
    /// Where to send a protocol trace, if anywhere (the greeting and login included).
    pub trace: Option<Trace>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .field("limits", &self.limits)
            .field("allow_plaintext", &self.allow_plaintext)
            .field("trace", &self.trace.is_some())
            .finish()
    }
}

/// How to log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMech {
    /// AUTHENTICATE PLAIN where the server offers it, else the LOGIN command.
    #[default]
    Auto,
    /// AUTHENTICATE PLAIN (RFC 4616), with SASL-IR where offered.
    Plain,
    /// The LOGIN command (RFC 3501 §6.2.3).
    Login,
    /// AUTHENTICATE XOAUTH2 (Google's and Microsoft's SASL mechanism) with an OAuth 2.0
    /// access token in place of the password.
    XOAuth2,
    /// AUTHENTICATE OAUTHBEARER (RFC 7628) with an OAuth 2.0 access token.
    OAuthBearer,
}

impl AuthMech {
    /// Whether the secret is an OAuth 2.0 access token rather than a password.
    pub fn is_oauth(self) -> bool {
        matches!(self, AuthMech::XOAuth2 | AuthMech::OAuthBearer)
    }
}

/// When to compress the connection with COMPRESS=DEFLATE (RFC 4978), where the server
/// offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compress {
    /// Unless the server is on this machine (loopback), where compressing costs CPU on
    /// both ends and saves nothing.
    #[default]
    Auto,
    /// Even on loopback.
    Always,
    /// Never.
    Never,
}

/// A command's successful completion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub code: Option<Code>,
    pub text: String,
}

pub struct Client {
    conn: Connection,
    caps: BTreeSet<String>,
    next_tag: u32,
    buf: Vec<u8>,
    /// Completions read while waiting for another tag: tag → (command name, result).
    early: HashMap<String, (Status, Option<Code>, String)>,
    /// Command names by tag, for error messages.
    pending: HashMap<String, String>,
    utf8: bool,
    allow_plaintext: bool,
    /// Where the connection goes, for OAUTHBEARER's `host` and `port` (RFC 7628 §3.1).
    host: String,
    port: u16,
    /// Receives the protocol, a line per command and response, for `--verbose`.
    trace: Option<Trace>,
    /// Forms of the secret sent at login, hidden from the trace from then on (a server
    /// may quote them back).
    hidden: Vec<String>,
}

/// A receiver of protocol lines: `C: …` sent, `S: …` received (the first line of each
/// response, control characters escaped, cut to 300 bytes, literals elided). Credentials
/// never appear: commands that carry them show `(credentials hidden)`.
pub type Trace = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

impl Client {
    /// Connects, reads the greeting, and sets up TLS as asked.
    pub fn connect(opts: &ConnectOptions) -> Result<Client> {
        let mut conn = Connection::connect(&opts.host, opts.port, opts.timeout, opts.limits)?;
        if opts.tls == TlsMode::Implicit {
            conn.start_tls(tls_config(&opts.host, opts.ca_file.as_deref())?)?;
        }
        let mut c = Client {
            conn,
            caps: BTreeSet::new(),
            next_tag: 1,
            buf: Vec::new(),
            early: HashMap::new(),
            pending: HashMap::new(),
            utf8: false,
            allow_plaintext: opts.allow_plaintext,
            host: opts.host.clone(),
            port: opts.port,
            trace: opts.trace.clone(),
            hidden: Vec::new(),
        };
        c.greeting()?;
        if opts.tls == TlsMode::StartTls {
            if c.caps.is_empty() {
                c.capability()?;
            }
            if !c.has("STARTTLS") {
                return Err(Error::Protocol(format!(
                    "{} does not offer STARTTLS; use tls = \"implicit\" (port 993) if it supports that",
                    opts.host
                )));
            }
            c.run("STARTTLS", |_| Ok(()))?;
            if c.conn.has_buffered() {
                return Err(Error::Protocol("the server sent data right after STARTTLS; refusing to continue".into()));
            }
            c.conn.start_tls(tls_config(&opts.host, opts.ca_file.as_deref())?)?;
            // RFC 3501 §6.2.1: capabilities learned before TLS must be discarded.
            c.caps.clear();
            c.capability()?;
        } else if c.caps.is_empty() {
            c.capability()?;
        }
        Ok(c)
    }

    fn greeting(&mut self) -> Result<()> {
        self.read(None)?;
        let r = parse_response(&self.buf)?;
        match r {
            Response::Untagged(Untagged::Status { status: Status::Ok | Status::PreAuth, code, .. }) => {
                if let Some(Code::Capability(c)) = code {
                    self.set_caps(c);
                }
                Ok(())
            }
            Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => Err(Error::Bye { text }),
            _ => Err(Error::Protocol(format!(
                "the server's greeting is not an IMAP greeting: {}",
                crate::parse::excerpt(&self.buf)
            ))),
        }
    }

    fn set_caps(&mut self, caps: Vec<String>) {
        self.caps = caps.into_iter().map(|c| c.to_ascii_uppercase()).collect();
    }

    /// Whether the server announced a capability (case-insensitive).
    pub fn has(&self, cap: &str) -> bool {
        self.caps.contains(&cap.to_ascii_uppercase())
    }

    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.caps.iter().map(String::as_str)
    }

    pub fn capability(&mut self) -> Result<()> {
        let mut caps = None;
        self.run("CAPABILITY", |u| {
            if let Untagged::Capability(c) = u {
                caps = Some(c);
            }
            Ok(())
        })?;
        self.set_caps(caps.ok_or_else(|| Error::Protocol("CAPABILITY returned no capability list".into()))?);
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// Bytes received so far on this connection (compressed, where compression is on).
    pub fn bytes_read(&self) -> u64 {
        self.conn.bytes_read
    }

    /// Whether the server is on this machine (a loopback address).
    pub fn peer_is_loopback(&self) -> bool {
        self.conn.peer_is_loopback()
    }

    /// COMPRESS=DEFLATE (RFC 4978) where `mode` asks for it and the server offers it:
    /// sends `COMPRESS DEFLATE` and, on OK, compresses the connection both ways from the
    /// next byte on. Returns whether compression is on. A NO or BAD (`[COMPRESSIONACTIVE]`
    /// where TLS compresses already, RFC 4978 §3) leaves the connection as it was: the
    /// session goes on uncompressed. Call it after login (COMPRESS is a command of the
    /// authenticated state, RFC 4978 §5) with no command in flight.
    pub fn compress(&mut self, mode: Compress) -> Result<bool> {
        if self.conn.compress_stats().is_some() {
            return Ok(true);
        }
        let wanted = match mode {
            Compress::Never => false,
            Compress::Always => true,
            Compress::Auto => !self.conn.peer_is_loopback(),
        };
        if !wanted || !self.has("COMPRESS=DEFLATE") {
            return Ok(false);
        }
        if !self.pending.is_empty() {
            return Err(Error::Protocol("COMPRESS needs every earlier command completed first".into()));
        }
        match self.run("COMPRESS DEFLATE", |_| Ok(())) {
            Ok(_) => {
                self.conn.start_compress()?;
                Ok(true)
            }
            Err(Error::No { .. } | Error::Bad { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What compression carried so far, if it is on.
    pub fn compress_stats(&self) -> Option<crate::CompressStats> {
        self.conn.compress_stats()
    }

    /// Logs in: with [`AuthMech::Auto`], AUTHENTICATE PLAIN where offered, the LOGIN
    /// command otherwise.
    pub fn login(&mut self, user: &str, password: &Secret, mech: AuthMech) -> Result<()> {
        if user.contains(['\0', '\r', '\n']) || password.expose().contains(['\0', '\r', '\n']) {
            return Err(Error::Protocol("the user name or password contains a NUL or line break".into()));
        }
        self.check_may_send_password()?;
        self.hidden.extend(self.sent_forms(user, password));
        let result = if mech.is_oauth() {
            self.authenticate_oauth(user, password, mech)
        } else {
            self.login_inner(user, password, mech)
        };
        // A server may quote what it was sent; none of it reaches an error message.
        result.map_err(|e| redact(e, &self.sent_forms(user, password)))
    }

    /// Every form in which a login may have sent `secret`: as is, quoted (LOGIN), inside
    /// the base64 SASL messages of PLAIN, XOAUTH2 and OAUTHBEARER.
    fn sent_forms(&self, user: &str, secret: &Secret) -> Vec<String> {
        let pw = secret.expose();
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        vec![
            b64(format!("\0{user}\0{pw}")),
            b64(xoauth2_message(user, pw)),
            b64(oauthbearer_message(user, &self.host, self.port, pw)),
            quote(pw),
            pw.to_string(),
        ]
    }

    /// Refuses to send a password in clear text over the network (RFC 8314 §3: cleartext
    /// is for loopback, or where the person has said so). [`Client::login`] checks it;
    /// callers may check first, before they fetch the secret at all.
    pub fn check_may_send_password(&self) -> Result<()> {
        if self.is_tls() || self.allow_plaintext || self.conn.peer_is_loopback() {
            return Ok(());
        }
        Err(Error::Insecure(
            "refusing to send the password over an unencrypted connection to a server that is not on this \
             machine; use tls = \"implicit\" (port 993) or \"starttls\" (port 143), or set \
             allow-plaintext = true in the [imap] section if the network is trusted"
                .into(),
        ))
    }

    /// AUTHENTICATE XOAUTH2 or OAUTHBEARER with `token`. A server that refuses the token
    /// first sends a challenge (base64 JSON saying why); the client answers it with an
    /// empty (XOAUTH2) or `%x01` (RFC 7628 §3.2.3) response, and the server then says NO.
    fn authenticate_oauth(&mut self, user: &str, token: &Secret, mech: AuthMech) -> Result<()> {
        let (name, message, dummy) = if mech == AuthMech::OAuthBearer {
            ("OAUTHBEARER", oauthbearer_message(user, &self.host, self.port, token.expose()), "AQ==")
        } else {
            ("XOAUTH2", xoauth2_message(user, token.expose()), "")
        };
        if !self.has(&format!("AUTH={name}")) {
            let offered: Vec<&str> = self.caps.iter().filter(|c| c.starts_with("AUTH=")).map(String::as_str).collect();
            return Err(Error::Protocol(format!(
                "the server does not offer AUTH={name} (it offers {}); set auth-mech to one it offers",
                if offered.is_empty() { "no SASL mechanism".to_string() } else { offered.join(" ") }
            )));
        }
        let ir = base64::engine::general_purpose::STANDARD.encode(message);
        let command = format!("AUTHENTICATE {name}");
        let tag = if self.has("SASL-IR") {
            self.send_raw(&format!("{command} {ir}"), &command, &format!("{command} (credentials hidden)"))?
        } else {
            let tag = self.send_raw(&command, &command, &command)?;
            self.wait_continue()?;
            self.conn.write_all(format!("{ir}\r\n").as_bytes())?;
            tag
        };
        let mut why = String::new();
        loop {
            self.read(None)?;
            match parse_response(&self.buf)? {
                Response::Continue(challenge) => {
                    // The error report (RFC 7628 §3.2.2): kept for the error message.
                    let decoded =
                        base64::engine::general_purpose::STANDARD.decode(challenge.trim()).unwrap_or_default();
                    why = String::from_utf8_lossy(&decoded).chars().filter(|c| !c.is_control()).take(300).collect();
                    self.conn.write_all(format!("{dummy}\r\n").as_bytes())?;
                }
                Response::Tagged { tag: t, status, code, text } if t == tag => {
                    self.pending.remove(&tag);
                    let text = if why.is_empty() { text } else { format!("{text} ({why})") };
                    return match status {
                        Status::Ok => {
                            if let Some(Code::Capability(c)) = code {
                                self.set_caps(c);
                            } else {
                                self.capability()?;
                            }
                            Ok(())
                        }
                        _ => Err(login_refused(user, Error::No { command: "AUTHENTICATE".into(), code, text })),
                    };
                }
                Response::Tagged { tag: t, .. } => {
                    return Err(Error::Protocol(format!(
                        "the server completed a command that was never sent (tag {t})"
                    )));
                }
                Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                    return Err(Error::Bye { text });
                }
                Response::Untagged(_) => {}
            }
        }
    }

    fn login_inner(&mut self, user: &str, password: &Secret, mech: AuthMech) -> Result<()> {
        let use_plain = match mech {
            AuthMech::Auto => self.has("AUTH=PLAIN"),
            AuthMech::Plain => true,
            AuthMech::Login | AuthMech::XOAuth2 | AuthMech::OAuthBearer => false,
        };
        let result = if use_plain {
            let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{}", password.expose()));
            if self.has("SASL-IR") {
                self.run_secret(&format!("AUTHENTICATE PLAIN {ir}"), "AUTHENTICATE PLAIN")
            } else {
                let tag = self.send_raw("AUTHENTICATE PLAIN", "AUTHENTICATE PLAIN", "AUTHENTICATE PLAIN")?;
                self.wait_continue()?;
                self.conn.write_all(format!("{ir}\r\n").as_bytes())?;
                self.complete(&tag, |_| Ok(()))
            }
        } else if self.has("LOGINDISABLED") {
            let offered: Vec<&str> = self.caps.iter().filter(|c| c.starts_with("AUTH=")).map(String::as_str).collect();
            return Err(Error::Protocol(if self.is_tls() {
                format!(
                    "the server does not allow the LOGIN command (LOGINDISABLED) and syncmail speaks none of \
                     the mechanisms it offers ({})",
                    offered.join(" ")
                )
            } else {
                "the server does not allow login on an unencrypted connection (LOGINDISABLED); \
                 use tls = \"starttls\" or \"implicit\""
                    .to_string()
            }));
        } else {
            let tag = self.next_tag();
            self.trace_line(&format!("C: {tag} LOGIN (credentials hidden)"));
            let mut cmd = format!("{tag} LOGIN ").into_bytes();
            let mut parts = Vec::new();
            for (i, s) in [user, password.expose()].into_iter().enumerate() {
                if i > 0 {
                    parts.push(b' ');
                }
                if s.is_ascii() {
                    parts.extend_from_slice(quote(s).as_bytes());
                } else {
                    // Non-ASCII needs a literal; send what we have and wait for "+".
                    parts.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
                    cmd.extend_from_slice(&parts);
                    parts.clear();
                    self.conn.write_all(&cmd)?;
                    cmd.clear();
                    self.wait_continue()?;
                    parts.extend_from_slice(s.as_bytes());
                }
            }
            cmd.extend_from_slice(&parts);
            cmd.extend_from_slice(b"\r\n");
            self.conn.write_all(&cmd)?;
            self.pending.insert(tag.clone(), "LOGIN".into());
            self.complete(&tag, |_| Ok(()))
        };
        match result {
            Ok(done) => {
                if let Some(Code::Capability(c)) = done.code {
                    self.set_caps(c);
                } else {
                    self.capability()?;
                }
                Ok(())
            }
            Err(e) => Err(login_refused(user, e)),
        }
    }

    fn wait_continue(&mut self) -> Result<()> {
        loop {
            self.read(None)?;
            match parse_response(&self.buf)? {
                Response::Continue(_) => return Ok(()),
                Response::Tagged { status: Status::Ok, .. } => {
                    return Err(Error::Protocol("the server completed a command that waited for data".into()));
                }
                Response::Tagged { text, .. } => {
                    return Err(Error::No { command: "the command".into(), code: None, text });
                }
                Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                    return Err(Error::Bye { text });
                }
                Response::Untagged(_) => {}
            }
        }
    }

    /// Sends ENABLE for the extensions given that the server offers; returns those enabled.
    pub fn enable(&mut self, exts: &[&str]) -> Result<Vec<String>> {
        let offered: Vec<&str> = exts.iter().copied().filter(|e| self.has(e)).collect();
        if offered.is_empty() || !self.has("ENABLE") {
            return Ok(Vec::new());
        }
        let mut enabled = Vec::new();
        self.run(&format!("ENABLE {}", offered.join(" ")), |u| {
            if let Untagged::Enabled(e) = u {
                enabled.extend(e);
            }
            Ok(())
        })?;
        if enabled.iter().any(|e| e.eq_ignore_ascii_case("UTF8=ACCEPT")) {
            self.utf8 = true;
        }
        Ok(enabled)
    }

    /// Whether mailbox names travel as UTF-8 (RFC 6855) rather than modified UTF-7.
    pub fn utf8_names(&self) -> bool {
        self.utf8
    }

    /// Decodes a mailbox name as the server sent it.
    pub fn decode_name(&self, raw: &[u8]) -> std::result::Result<String, String> {
        if self.utf8 {
            String::from_utf8(raw.to_vec()).map_err(|_| "a mailbox name that is not UTF-8".to_string())
        } else {
            utf7::decode(raw)
        }
    }

    fn next_tag(&mut self) -> String {
        let t = format!("S{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Reads one response into `self.buf`, tracing it.
    fn read(&mut self, sink: Option<&mut dyn LiteralSink>) -> Result<()> {
        self.conn.read_response_to(&mut self.buf, sink)?;
        if self.trace.is_some() {
            let line = crate::parse::excerpt(&self.buf);
            self.trace_line(&format!("S: {line}"));
        }
        Ok(())
    }

    fn trace_line(&self, line: &str) {
        if let Some(t) = &self.trace {
            let mut line = line.to_string();
            for f in self.hidden.iter().filter(|f| !f.is_empty()) {
                line = line.replace(f.as_str(), "(credentials hidden)");
            }
            t(&line);
        }
    }

    /// Sends `cmd` under a new tag; the trace shows `shown` in its place.
    fn send_raw(&mut self, cmd: &str, name: &str, shown: &str) -> Result<String> {
        let mut line = Vec::with_capacity(cmd.len() + 16);
        let tag = self.tagged(&mut line, cmd, name, shown);
        self.conn.write_all(&line)?;
        Ok(tag)
    }

    /// Appends `cmd` under a new tag to `out`, traced and expected; returns the tag.
    fn tagged(&mut self, out: &mut Vec<u8>, cmd: &str, name: &str, shown: &str) -> String {
        let tag = self.next_tag();
        self.trace_line(&format!("C: {tag} {shown}"));
        out.extend_from_slice(tag.as_bytes());
        out.push(b' ');
        out.extend_from_slice(cmd.as_bytes());
        out.extend_from_slice(b"\r\n");
        self.pending.insert(tag.clone(), name.to_string());
        tag
    }

    /// Sends a command (without tag or CRLF) and returns its tag; does not wait.
    /// The command must not need a literal continuation.
    pub fn send(&mut self, cmd: &str) -> Result<String> {
        let name = command_name(cmd);
        self.send_raw(cmd, &name, cmd)
    }

    /// Sends several commands as [`Client::send`] does, in one write: one system call, and
    /// the server woken once for all of them rather than once each. Returns their tags.
    pub fn send_all<S: AsRef<str>>(&mut self, cmds: &[S]) -> Result<Vec<String>> {
        if cmds.is_empty() {
            return Ok(Vec::new()); // no write at all (with compression, not even a flush)
        }
        let mut out = Vec::with_capacity(cmds.iter().map(|c| c.as_ref().len() + 16).sum());
        let tags = cmds
            .iter()
            .map(|c| {
                let c = c.as_ref();
                self.tagged(&mut out, c, &command_name(c), c)
            })
            .collect();
        self.conn.write_all(&out)?;
        Ok(tags)
    }

    /// Runs a command whose text holds a secret: error messages name only `name`.
    fn run_secret(&mut self, cmd: &str, name: &str) -> Result<Completion> {
        let tag = self.send_raw(cmd, name, &format!("{name} (credentials hidden)"))?;
        self.complete(&tag, |_| Ok(()))
    }

    /// Sends a command and waits for its completion, handing untagged responses to `f`.
    pub fn run<F>(&mut self, cmd: &str, f: F) -> Result<Completion>
    where
        F: FnMut(Untagged<'_>) -> Result<()>,
    {
        let tag = self.send(cmd)?;
        self.complete(&tag, f)
    }

    /// Reads responses until `tag` completes. Untagged responses go to `f`; completions of
    /// other pipelined commands are kept for their own `complete` call.
    /// NO and BAD become errors that carry the server's words.
    pub fn complete<F>(&mut self, tag: &str, f: F) -> Result<Completion>
    where
        F: FnMut(Untagged<'_>) -> Result<()>,
    {
        self.complete_to(tag, None, f)
    }

    /// [`Client::complete`], with the literals `sink` wants streamed to it rather than
    /// held in memory; `f` then sees them as empty.
    pub fn complete_to<F>(&mut self, tag: &str, mut sink: Option<&mut dyn LiteralSink>, mut f: F) -> Result<Completion>
    where
        F: FnMut(Untagged<'_>) -> Result<()>,
    {
        let (status, code, text) = match self.early.remove(tag) {
            Some(done) => done,
            None => loop {
                self.read(sink.as_mut().map(|s| &mut **s as &mut dyn LiteralSink))?;
                let r = parse_response(&self.buf)?;
                match r {
                    Response::Tagged { tag: t, status, code, text } => {
                        if t == tag {
                            break (status, code, text);
                        }
                        if !self.pending.contains_key(&t) {
                            return Err(Error::Protocol(format!(
                                "the server completed a command that was never sent (tag {t})"
                            )));
                        }
                        self.early.insert(t, (status, code, text));
                    }
                    Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                        return Err(Error::Bye { text });
                    }
                    Response::Untagged(u) => f(u)?,
                    Response::Continue(_) => {
                        return Err(Error::Protocol("the server asked for data no command was going to send".into()));
                    }
                }
            },
        };
        let command = self.pending.remove(tag).unwrap_or_else(|| "a command".into());
        match status {
            Status::Ok => Ok(Completion { code, text }),
            Status::No => Err(Error::No { command, code, text }),
            _ => Err(Error::Bad { command, text }),
        }
    }

    /// APPEND (RFC 3501 §6.3.11) of `message` (CRLF text) with `flags` (an IMAP flag
    /// list without parentheses) to the mailbox `quoted_name` (already quoted). Uses a
    /// non-synchronizing literal where LITERAL+ is offered, else waits for the server's
    /// go-ahead. Returns the completion (its code may be APPENDUID, RFC 4315).
    pub fn append(&mut self, quoted_name: &str, flags: &str, message: &[u8]) -> Result<Completion> {
        let tag = self.next_tag();
        let plus = self.has("LITERAL+");
        let head =
            format!("{tag} APPEND {quoted_name} ({flags}) {{{}{}}}\r\n", message.len(), if plus { "+" } else { "" });
        self.trace_line(&format!("C: {} ({} bytes follow)", head.trim_end(), message.len()));
        self.pending.insert(tag.clone(), "APPEND".into());
        if plus {
            let mut buf = Vec::with_capacity(head.len() + message.len() + 2);
            buf.extend_from_slice(head.as_bytes());
            buf.extend_from_slice(message);
            buf.extend_from_slice(b"\r\n");
            self.conn.write_all(&buf)?;
        } else {
            self.conn.write_all(head.as_bytes())?;
            // The server answers "+" to go on, or completes the command at once (NO, e.g.
            // for a message too large): then the literal must not be sent.
            self.go_ahead(&tag, "APPEND")?;
            let mut buf = Vec::with_capacity(message.len() + 2);
            buf.extend_from_slice(message);
            buf.extend_from_slice(b"\r\n");
            self.conn.write_all(&buf)?;
        }
        self.complete(&tag, |_| Ok(()))
    }

    /// Completes every tag, in order. A NO or BAD does not stop the others from being read,
    /// so the stream stays in step; the first such error is returned once all are done.
    /// An error of the connection, or one `f` returns, ends at once.
    pub fn complete_all<F>(&mut self, tags: &[String], mut f: F) -> Result<()>
    where
        F: FnMut(Untagged<'_>) -> Result<()>,
    {
        let mut first = None;
        for t in tags {
            match self.complete(t, &mut f) {
                Ok(_) => {}
                Err(e @ (Error::No { .. } | Error::Bad { .. })) => {
                    first.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Reads until the server's go-ahead (`+`) for the command `tag`; its completion
    /// instead (a refusal) is an error.
    fn go_ahead(&mut self, tag: &str, command: &str) -> Result<()> {
        loop {
            self.read(None)?;
            match parse_response(&self.buf)? {
                Response::Continue(_) => return Ok(()),
                Response::Tagged { tag: t, status, code, text } if t == tag => {
                    self.pending.remove(tag);
                    return Err(match status {
                        Status::Ok => Error::Protocol(format!("the server completed {command} before its go-ahead")),
                        Status::No => Error::No { command: command.into(), code, text },
                        _ => Error::Bad { command: command.into(), text },
                    });
                }
                Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                    return Err(Error::Bye { text });
                }
                _ => {}
            }
        }
    }

    /// IDLE (RFC 2177) on the selected mailbox: waits until the server reports a change
    /// (EXISTS, EXPUNGE, FETCH, RECENT), `stop` returns true (asked every `poll`), or
    /// `max` has passed, then sends DONE and reads IDLE's completion. Returns whether the
    /// server reported a change. RFC 2177 §3: a client should end IDLE and issue it again
    /// at least every 29 minutes, or the server may log it out as inactive; callers pass
    /// `max` below that.
    pub fn idle(&mut self, max: Duration, poll: Duration, stop: &dyn Fn() -> bool) -> Result<bool> {
        self.idle_with(max, poll, stop, &mut is_mailbox_change)
    }

    /// [`Client::idle`] that hands every untagged response to `on`, which says whether it
    /// ends the IDLE as a change. With NOTIFY (RFC 5465) `on` takes the STATUS and LIST
    /// responses about other mailboxes as they come and keeps the IDLE going.
    pub fn idle_with(
        &mut self,
        max: Duration,
        poll: Duration,
        stop: &dyn Fn() -> bool,
        on: &mut dyn FnMut(&Untagged<'_>) -> bool,
    ) -> Result<bool> {
        if !self.has("IDLE") {
            return Err(Error::Protocol("the server does not offer IDLE (RFC 2177)".into()));
        }
        let tag = self.send("IDLE")?;
        // The go-ahead first: until then the server may refuse IDLE with a tagged NO.
        self.go_ahead(&tag, "IDLE")?;
        let start = Instant::now();
        let mut changed = false;
        while !changed && !stop() && start.elapsed() < max {
            if !self.conn.wait_readable(poll.min(max.saturating_sub(start.elapsed())))? {
                continue;
            }
            self.read(None)?;
            match parse_response(&self.buf)? {
                Response::Untagged(Untagged::Status { status: Status::Bye, text, .. }) => {
                    return Err(Error::Bye { text });
                }
                Response::Untagged(u) => changed = on(&u),
                Response::Tagged { tag: t, .. } if t == tag => {
                    // The server ended IDLE itself: the caller looks at the folder again.
                    self.pending.remove(&tag);
                    return Ok(true);
                }
                _ => {}
            }
        }
        self.trace_line("C: DONE");
        self.conn.write_all(b"DONE\r\n")?;
        self.complete(&tag, |u| {
            changed |= on(&u);
            Ok(())
        })?;
        Ok(changed)
    }

    /// Sends LOGOUT and closes the connection; errors are ignored, the session is over.
    pub fn logout(mut self) {
        let _ = self.run("LOGOUT", |_| Ok(()));
        self.conn.shutdown();
    }
}

/// Whether an untagged response during IDLE tells of a change in the selected mailbox.
pub fn is_mailbox_change(u: &Untagged<'_>) -> bool {
    matches!(u, Untagged::Exists(_) | Untagged::Expunge(_) | Untagged::Recent(_) | Untagged::Fetch { .. })
}

/// What a refused login is: a NO or BAD is a failed authentication, except a NO for a limit
/// the server keeps (`[LIMIT]`, RFC 5530: Dovecot's connections per user and address),
/// which is not the credentials' fault and stays a NO ([`Error::is_limit`]).
fn login_refused(user: &str, e: Error) -> Error {
    match e {
        e if e.is_limit() => e,
        Error::No { text, .. } | Error::Bad { text, .. } => Error::Auth { user: user.to_string(), text },
        e => e,
    }
}

/// The XOAUTH2 initial response (before base64), as Google and Microsoft document it.
fn xoauth2_message(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// The OAUTHBEARER initial response (RFC 7628 §3.1; the user name escaped as RFC 5801's
/// saslname).
fn oauthbearer_message(user: &str, host: &str, port: u16, token: &str) -> String {
    let user = user.replace('=', "=3D").replace(',', "=2C");
    format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01")
}

/// Replaces the secret, in every form it was sent, in whatever text of `e` came from the
/// server.
fn redact(e: Error, forms: &[String]) -> Error {
    let clean = |mut t: String| -> String {
        for f in forms.iter().filter(|f| !f.is_empty()) {
            t = t.replace(f.as_str(), "(password hidden)");
        }
        t
    };
    match e {
        Error::No { command, code, text } => Error::No { command, code, text: clean(text) },
        Error::Bad { command, text } => Error::Bad { command, text: clean(text) },
        Error::Auth { user, text } => Error::Auth { user, text: clean(text) },
        Error::Bye { text } => Error::Bye { text: clean(text) },
        Error::Protocol(t) => Error::Protocol(clean(t)),
        Error::Parse(mut p) => {
            p.line = clean(p.line);
            Error::Parse(p)
        }
        other => other,
    }
}

/// The command name for error messages: `UID FETCH`, `SELECT`, …
fn command_name(cmd: &str) -> String {
    let mut words = cmd.split(' ');
    let first = words.next().unwrap_or("");
    if first.eq_ignore_ascii_case("UID") { format!("UID {}", words.next().unwrap_or("")) } else { first.to_string() }
}

/// An IMAP quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(command_name("UID FETCH 1:* (FLAGS)"), "UID FETCH");
        assert_eq!(command_name("SELECT \"INBOX\""), "SELECT");
    }
}

/// Against scripted fake servers (the one place a fake is right: a real server cannot be
/// made to stall or send garbage on cue).
#[cfg(test)]
mod fake_server_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn serve(script: impl FnOnce(std::net::TcpStream) + Send + 'static) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                script(s);
            }
        });
        port
    }

    fn opts(port: u16, secs: u64) -> ConnectOptions {
        ConnectOptions {
            host: "127.0.0.1".into(),
            port,
            tls: TlsMode::None,
            ca_file: None,
            timeout: Duration::from_secs(secs),
            limits: Limits::default(),
            allow_plaintext: false,
            trace: None,
        }
    }

    #[test]
    fn a_silent_server_times_out() {
        let port = serve(|s| {
            std::thread::sleep(Duration::from_secs(5));
            drop(s);
        });
        let t = std::time::Instant::now();
        let e = Client::connect(&opts(port, 1)).err().unwrap();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_garbage_greeting_is_reported_with_the_line() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let e = Client::connect(&opts(port, 5)).err().unwrap();
        assert!(e.to_string().contains("HTTP/1.1 400 Bad Request"), "{e}");
    }

    #[test]
    fn garbage_mid_session_is_an_error_with_the_line_not_a_panic() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1] hi\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"* 1 FETCH (UID \x01\x02 garbage\r\nS1 OK done\r\n");
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        let e = c.run("NOOP", |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Parse(_)), "{e}");
        assert!(e.to_string().contains("* 1 FETCH (UID"), "{e}");
    }

    #[test]
    fn an_oversized_literal_is_refused_before_it_is_read() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1] hi\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"* 1 FETCH (BODY[] {10000000000}\r\n");
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        let e = c.run("NOOP", |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::TooLarge { what: "literal", .. }), "{e}");
    }

    #[test]
    fn bye_and_closed_connections_are_errors() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK hi\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf); // CAPABILITY
            let _ = s.write_all(b"* CAPABILITY IMAP4rev1\r\nS1 OK done\r\n");
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"* BYE going away\r\n");
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        let e = c.run("NOOP", |_| Ok(())).unwrap_err();
        assert!(matches!(e, Error::Bye { .. }), "{e}");
        let e = c.run("NOOP", |_| Ok(())).unwrap_err();
        assert!(e.is_retryable(), "{e}");
    }

    /// Scripted server (a real one cannot be made to split a response across the client's
    /// poll intervals on cue): a response whose second half comes several polls after the
    /// first is read whole, not cut at a poll.
    #[test]
    fn idle_keeps_a_response_split_across_polls_and_ends_with_done() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf); // S1 IDLE
            let _ = s.write_all(b"+ idling\r\n* 3 EXI");
            std::thread::sleep(Duration::from_millis(300));
            let _ = s.write_all(b"STS\r\n");
            let n = s.read(&mut buf).unwrap_or(0);
            if &buf[..n] == b"DONE\r\n" {
                let _ = s.write_all(b"S1 OK idle done\r\n");
            }
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        let changed = c.idle(Duration::from_secs(5), Duration::from_millis(50), &|| false).unwrap();
        assert!(changed);
    }

    /// Scripted server (Dovecot accepts every first COMPRESS): `auto` on loopback sends
    /// nothing, and a refusal (`[COMPRESSIONACTIVE]`, RFC 4978 §3) leaves the session
    /// uncompressed and working.
    #[test]
    fn compress_refused_goes_on_uncompressed() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 COMPRESS=DEFLATE] hi\r\n");
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            if &buf[..n] != b"S1 COMPRESS DEFLATE\r\n" {
                return;
            }
            let _ = s.write_all(b"S1 NO [COMPRESSIONACTIVE] TLS compresses already\r\n");
            let n = s.read(&mut buf).unwrap_or(0);
            if &buf[..n] == b"S2 NOOP\r\n" {
                let _ = s.write_all(b"S2 OK plain as before\r\n");
            }
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        assert!(!c.compress(Compress::Auto).unwrap(), "auto: not on loopback");
        assert!(!c.compress(Compress::Never).unwrap());
        assert!(!c.compress(Compress::Always).unwrap(), "refused");
        assert_eq!(c.compress_stats(), None);
        let done = c.run("NOOP", |_| Ok(())).unwrap();
        assert_eq!(done.text, "plain as before");
    }

    /// Scripted server: IDLE refused, and IDLE that nothing interrupts but `stop`.
    #[test]
    fn idle_refused_is_an_error_and_stop_ends_a_quiet_idle() {
        let port = serve(|mut s| {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 IDLE] hi\r\n");
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"S1 NO [LIMIT] not now\r\n");
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"+ idling\r\n");
            let n = s.read(&mut buf).unwrap_or(0);
            if &buf[..n] == b"DONE\r\n" {
                let _ = s.write_all(b"S2 OK idle done\r\n");
            }
            std::thread::sleep(Duration::from_millis(200));
        });
        let mut c = Client::connect(&opts(port, 5)).unwrap();
        let e = c.idle(Duration::from_secs(5), Duration::from_millis(50), &|| false).unwrap_err();
        assert!(matches!(e, Error::No { .. }), "{e}");
        let t = std::time::Instant::now();
        let stop_after = move || t.elapsed() > Duration::from_millis(200);
        let changed = c.idle(Duration::from_secs(5), Duration::from_millis(50), &stop_after).unwrap();
        assert!(!changed);
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
