//! A SCRIPTED FAKE IMAP server, for hostile and broken-server tests only.
//!
//! The project tests against a real Dovecot wherever it can; this fake exists because a
//! real server cannot be made to misbehave on cue (announce a 10 GB literal, send a line
//! without end, answer with data for UIDs nobody asked for, let UIDNEXT go backwards,
//! offer folder names that are path attacks). It speaks just enough IMAP4rev1 (RFC 3501)
//! for a whole engine sync: greeting, CAPABILITY, LOGIN, AUTHENTICATE PLAIN (with SASL-IR),
//! LIST, STATUS, SELECT/EXAMINE, UID SEARCH, UID FETCH, UID STORE, APPEND, CREATE, NOOP,
//! LOGOUT. It offers no extension beyond what [`Script::capabilities`] says, so the
//! client uses the plain IMAP4rev1 forms.
//!
//! What it serves is a [`Script`]: the folders (any names and delimiter the test wants,
//! bytes as sent on the wire), their messages, and a [`Hook`] that sees every command
//! before the normal answer and may replace it, add to it, or hang up. The folders live
//! behind [`ScriptedServer::folders`], so a test can change them between runs (a UIDNEXT
//! that goes backwards, a message that vanishes).
//!
//! ```no_run
//! use syncmail_testkit::hostile::{Action, FakeFolder, Script, ScriptedServer};
//! // Two folders, one with a hostile name, under the delimiter "/".
//! let inbox = FakeFolder::new("INBOX").with_message(b"Subject: hi\r\n\r\nhello\r\n", &["\\Seen"]);
//! let evil = FakeFolder::new("a/../../b").with_delimiter(Some('/'));
//! let fake = ScriptedServer::start(Script { folders: vec![inbox, evil], ..Default::default() }.with_hook(
//!     |req, w| {
//!         // Misbehave on cue: say goodbye instead of selecting.
//!         if req.command == "SELECT" {
//!             let _ = w.write_all(b"* BYE going away\r\n");
//!             return Action::Hangup;
//!         }
//!         Action::Normal
//!     },
//! ));
//! // Point an account at 127.0.0.1:fake.port with tls = "none", user "test",
//! // password "secret" (testkit's USER and PASSWORD), and sync.
//! # let _ = fake.port;
//! ```
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message of a fake folder.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    pub uid: u32,
    /// Flags as sent inside `FLAGS (…)`, verbatim (odd characters included).
    pub flags: Vec<String>,
    /// The message as sent (CRLF line ends expected, not enforced).
    pub body: Vec<u8>,
}

/// One folder as the fake lists it.
#[derive(Debug, Clone)]
pub struct FakeFolder {
    /// The name as sent in LIST (modified UTF-7 or anything a hostile test wants; sent as
    /// a literal where a quoted string cannot carry it).
    pub name: Vec<u8>,
    /// The hierarchy delimiter sent in LIST; `None` sends NIL.
    pub delimiter: Option<char>,
    /// LIST attributes, e.g. `\HasNoChildren`, `\Noselect`, `\Trash`.
    pub attributes: Vec<String>,
    pub uidvalidity: u32,
    /// What SELECT and STATUS report; kept above the highest UID by [`FakeFolder::add`],
    /// but a test may set it to anything (backwards, say).
    pub uidnext: u32,
    pub messages: Vec<FakeMessage>,
}

impl FakeFolder {
    /// An empty folder with delimiter `/`, UIDVALIDITY 1, UIDNEXT 1.
    pub fn new(name: impl Into<Vec<u8>>) -> FakeFolder {
        FakeFolder {
            name: name.into(),
            delimiter: Some('/'),
            attributes: Vec::new(),
            uidvalidity: 1,
            uidnext: 1,
            messages: Vec::new(),
        }
    }

    pub fn with_delimiter(mut self, d: Option<char>) -> FakeFolder {
        self.delimiter = d;
        self
    }

    /// Adds a message with the next UID.
    pub fn add(&mut self, body: &[u8], flags: &[&str]) -> u32 {
        let uid = self.uidnext.max(1);
        self.messages.push(FakeMessage {
            uid,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            body: body.to_vec(),
        });
        self.uidnext = uid + 1;
        uid
    }

    /// Builder form of [`FakeFolder::add`].
    pub fn with_message(mut self, body: &[u8], flags: &[&str]) -> FakeFolder {
        self.add(body, flags);
        self
    }
}

/// One command as the fake received it, for hooks.
#[derive(Debug, Clone)]
pub struct Request {
    pub tag: String,
    /// The command, upper case, with `UID ` kept: `UID FETCH`, `SELECT`, `LOGIN`.
    pub command: String,
    /// The rest of the line after the command name (a literal's bytes not included).
    pub args: String,
    /// The folder selected on this connection, if any (its wire name).
    pub selected: Option<Vec<u8>>,
    /// Which connection this is, counting from 1.
    pub connection: usize,
}

/// What a hook did with a command.
pub enum Action {
    /// Nothing: answer normally (the hook may already have written extra responses).
    Normal,
    /// The hook wrote the whole answer (including the tagged completion, if any).
    Replied,
    /// Close the connection now, without answering.
    Hangup,
}

/// Sees each command before the normal answer; may write to the client.
pub type Hook = Arc<dyn Fn(&Request, &mut dyn Write) -> Action + Send + Sync>;

/// What the fake serves.
#[derive(Clone)]
pub struct Script {
    /// The whole greeting line, CRLF included.
    pub greeting: Vec<u8>,
    /// Capabilities sent for CAPABILITY (before and after login alike).
    pub capabilities: String,
    pub user: String,
    pub password: String,
    /// Access tokens accepted by AUTHENTICATE XOAUTH2 and OAUTHBEARER (offer them in
    /// `capabilities` as AUTH=XOAUTH2, AUTH=OAUTHBEARER).
    pub oauth_tokens: Vec<String>,
    pub folders: Vec<FakeFolder>,
    pub hook: Hook,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: b"* OK scripted fake IMAP server ready\r\n".to_vec(),
            capabilities: "IMAP4rev1 AUTH=PLAIN SASL-IR".into(),
            user: crate::USER.into(),
            password: crate::PASSWORD.into(),
            oauth_tokens: Vec::new(),
            folders: vec![FakeFolder::new("INBOX")],
            hook: Arc::new(|_, _| Action::Normal),
        }
    }
}

impl Script {
    /// A script whose hook is `f`.
    pub fn with_hook(mut self, f: impl Fn(&Request, &mut dyn Write) -> Action + Send + Sync + 'static) -> Script {
        self.hook = Arc::new(f);
        self
    }
}

/// The running fake, on `port`; stops accepting when dropped.
pub struct ScriptedServer {
    pub port: u16,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Every command line received, in order (LOGIN and AUTHENTICATE arguments elided).
    pub log: Arc<Mutex<Vec<String>>>,
    folders: Arc<Mutex<Vec<FakeFolder>>>,
    stop: Arc<AtomicBool>,
}

impl ScriptedServer {
    /// Starts on 127.0.0.1.
    pub fn start(script: Script) -> ScriptedServer {
        ScriptedServer::start_on(std::net::Ipv4Addr::LOCALHOST.into(), script)
    }

    /// Starts on `ip` (a non-loopback address of this machine, for tests of what is sent
    /// over a network).
    pub fn start_on(ip: std::net::IpAddr, script: Script) -> ScriptedServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let folders = Arc::new(Mutex::new(script.folders.clone()));
        let connections = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, c, l, s) = (folders.clone(), connections.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                        let sess = Conn { script: script.clone(), folders: f.clone(), log: l.clone(), connection: n };
                        std::thread::spawn(move || sess.serve(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ScriptedServer { port, connections, log, folders, stop }
    }

    /// The folders, to read or change between runs.
    pub fn folders(&self) -> std::sync::MutexGuard<'_, Vec<FakeFolder>> {
        self.folders.lock().unwrap()
    }

    /// The folder with this wire name.
    pub fn with_folder<T>(&self, name: &[u8], f: impl FnOnce(&mut FakeFolder) -> T) -> T {
        let mut all = self.folders();
        let folder = all.iter_mut().find(|x| x.name == name).unwrap();
        f(folder)
    }

    /// Every command received so far (names only, e.g. `UID FETCH`).
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Conn {
    script: Script,
    folders: Arc<Mutex<Vec<FakeFolder>>>,
    log: Arc<Mutex<Vec<String>>>,
    connection: usize,
}

/// Splits IMAP arguments: quoted strings (unescaped), parenthesized groups (kept whole),
/// atoms.
pub fn split_args(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' => i += 1,
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    v.push(b[i]);
                    i += 1;
                }
                i += 1;
                out.push(String::from_utf8_lossy(&v).into_owned());
            }
            b'(' => {
                let start = i;
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                out.push(s[start..i].to_string());
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b' ' {
                    if b[i] == b'[' {
                        while i < b.len() && b[i] != b']' {
                            i += 1;
                        }
                    }
                    i += 1;
                }
                out.push(s[start..i.min(b.len())].to_string());
            }
        }
    }
    out
}

/// Parses a sequence set (`1:5,7,9:*`) against `max` (the value of `*`).
pub fn parse_set(set: &str, max: u32) -> Vec<(u32, u32)> {
    set.split(',')
        .filter_map(|part| {
            let num = |x: &str| if x == "*" { Some(max) } else { x.parse().ok() };
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            Some((a.min(b), a.max(b)))
        })
        .collect()
}

fn in_set(set: &[(u32, u32)], v: u32) -> bool {
    set.iter().any(|(a, b)| *a <= v && v <= *b)
}

/// A name as an IMAP astring: quoted, or a literal where a quoted string cannot hold it
/// (CR, LF, NUL, 8-bit bytes).
fn quote(name: &[u8]) -> Vec<u8> {
    if name.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0) || b >= 0x80) {
        let mut v = format!("{{{}}}\r\n", name.len()).into_bytes();
        v.extend_from_slice(name);
        return v;
    }
    let mut v = vec![b'"'];
    for &c in name {
        if c == b'"' || c == b'\\' {
            v.push(b'\\');
        }
        v.push(c);
    }
    v.push(b'"');
    v
}

impl Conn {
    fn serve(self, stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream);
        if w.write_all(&self.script.greeting).is_err() {
            return;
        }
        let mut selected: Option<Vec<u8>> = None;
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            let (tag, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
            let mut words = rest.splitn(2, ' ');
            let mut command = words.next().unwrap_or("").to_ascii_uppercase();
            let mut args = words.next().unwrap_or("").to_string();
            if command == "UID" {
                let mut w2 = args.splitn(2, ' ');
                command = format!("UID {}", w2.next().unwrap_or("").to_ascii_uppercase());
                args = w2.next().unwrap_or("").to_string();
            }
            let secret = command == "LOGIN" || command == "AUTHENTICATE";
            let logged = if secret {
                // The mechanism, never the credentials.
                let mech = if command == "AUTHENTICATE" { args.split(' ').next().unwrap_or("") } else { "" };
                format!("{command} {mech}").trim_end().to_string()
            } else {
                format!("{command} {args}")
            };
            self.log.lock().unwrap().push(logged);
            let req = Request {
                tag: tag.to_string(),
                command: command.clone(),
                args: args.clone(),
                selected: selected.clone(),
                connection: self.connection,
            };
            match (self.script.hook)(&req, &mut w) {
                Action::Replied => continue,
                Action::Hangup => {
                    let _ = w.shutdown(std::net::Shutdown::Both);
                    return;
                }
                Action::Normal => {}
            }
            let out = match self.answer(&req, &mut r, &mut w, &mut selected) {
                Some(out) => out,
                None => return,
            };
            if w.write_all(&out).is_err() {
                return;
            }
        }
    }

    /// The normal answer to one command; `None` ends the connection.
    fn answer(
        &self,
        req: &Request,
        r: &mut BufReader<TcpStream>,
        w: &mut TcpStream,
        selected: &mut Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let tag = &req.tag;
        let args = split_args(&req.args);
        let mut out = Vec::new();
        let ok = |out: &mut Vec<u8>, what: &str| out.extend_from_slice(format!("{tag} OK {what} done\r\n").as_bytes());
        match req.command.as_str() {
            "CAPABILITY" => {
                out.extend_from_slice(format!("* CAPABILITY {}\r\n", self.script.capabilities).as_bytes());
                ok(&mut out, "CAPABILITY");
            }
            "NOOP" => ok(&mut out, "NOOP"),
            "LOGOUT" => {
                let _ = w.write_all(format!("* BYE bye\r\n{tag} OK LOGOUT done\r\n").as_bytes());
                return None;
            }
            "LOGIN" => {
                if args.first() == Some(&self.script.user) && args.get(1) == Some(&self.script.password) {
                    ok(&mut out, "LOGIN");
                } else {
                    out.extend_from_slice(
                        format!("{tag} NO [AUTHENTICATIONFAILED] wrong user or password\r\n").as_bytes(),
                    );
                }
            }
            "AUTHENTICATE" => {
                let ir = match args.get(1) {
                    Some(ir) => ir.clone(),
                    None => {
                        w.write_all(b"+ \r\n").ok()?;
                        let mut l = String::new();
                        r.read_line(&mut l).ok()?;
                        l.trim_end().to_string()
                    }
                };
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD.decode(ir).unwrap_or_default();
                let mech = args.first().map(|m| m.to_ascii_uppercase()).unwrap_or_default();
                let good = match mech.as_str() {
                    "PLAIN" => decoded == format!("\0{}\0{}", self.script.user, self.script.password).as_bytes(),
                    "XOAUTH2" | "OAUTHBEARER" => {
                        let text = String::from_utf8_lossy(&decoded);
                        let user_ok = if mech == "XOAUTH2" {
                            text.starts_with(&format!("user={}\x01", self.script.user))
                        } else {
                            text.starts_with(&format!("n,a={},", self.script.user))
                        };
                        let ok = user_ok
                            && self
                                .script
                                .oauth_tokens
                                .iter()
                                .any(|t| text.contains(&format!("\x01auth=Bearer {t}\x01")));
                        if !ok {
                            // RFC 7628 §3.2.2: the error as a challenge, then NO after the
                            // client's dummy response.
                            let json = r#"{"status":"invalid_token","schemes":"Bearer","scope":"mail"}"#;
                            let ch = base64::engine::general_purpose::STANDARD.encode(json);
                            w.write_all(format!("+ {ch}\r\n").as_bytes()).ok()?;
                            let mut l = String::new();
                            r.read_line(&mut l).ok()?;
                        }
                        ok
                    }
                    _ => false,
                };
                if good {
                    ok(&mut out, "AUTHENTICATE");
                } else {
                    out.extend_from_slice(
                        format!("{tag} NO [AUTHENTICATIONFAILED] wrong user or password\r\n").as_bytes(),
                    );
                }
            }
            "LIST" => {
                for f in self.folders.lock().unwrap().iter() {
                    out.extend_from_slice(format!("* LIST ({}) ", f.attributes.join(" ")).as_bytes());
                    match f.delimiter {
                        Some(d) => out.extend_from_slice(&quote(d.to_string().as_bytes())),
                        None => out.extend_from_slice(b"NIL"),
                    }
                    out.push(b' ');
                    out.extend_from_slice(&quote(&f.name));
                    out.extend_from_slice(b"\r\n");
                }
                ok(&mut out, "LIST");
            }
            "STATUS" | "SELECT" | "EXAMINE" | "CREATE" => {
                let name = args.first().cloned().unwrap_or_default().into_bytes();
                let mut all = self.folders.lock().unwrap();
                if req.command == "CREATE" {
                    if !all.iter().any(|f| f.name == name) {
                        all.push(FakeFolder::new(name));
                    }
                    ok(&mut out, "CREATE");
                    return Some(out);
                }
                let Some(f) = all.iter().find(|f| f.name == name) else {
                    *selected = None;
                    out.extend_from_slice(format!("{tag} NO [NONEXISTENT] no such folder\r\n").as_bytes());
                    return Some(out);
                };
                let n = f.messages.len();
                if req.command == "STATUS" {
                    out.extend_from_slice(b"* STATUS ");
                    out.extend_from_slice(&quote(&f.name));
                    out.extend_from_slice(
                        format!(" (MESSAGES {n} UIDNEXT {} UIDVALIDITY {})\r\n", f.uidnext, f.uidvalidity).as_bytes(),
                    );
                } else {
                    out.extend_from_slice(
                        format!(
                            "* {n} EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft)\r\n\
                             * OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft \\*)] ok\r\n\
                             * OK [UIDVALIDITY {}] ok\r\n* OK [UIDNEXT {}] ok\r\n",
                            f.uidvalidity, f.uidnext
                        )
                        .as_bytes(),
                    );
                    *selected = Some(name);
                }
                ok(&mut out, &req.command);
            }
            "UID SEARCH" => {
                let all = self.folders.lock().unwrap();
                let f = selected.as_ref().and_then(|s| all.iter().find(|f| &f.name == s))?;
                let max = f.messages.last().map_or(0, |m| m.uid);
                let mut hits: Vec<u32> = f.messages.iter().map(|m| m.uid).collect();
                let mut i = 0;
                while i < args.len() {
                    let a = args[i].to_ascii_uppercase();
                    match a.as_str() {
                        "UID" => {
                            let set = parse_set(args.get(i + 1).map_or("", String::as_str), max);
                            hits.retain(|u| in_set(&set, *u));
                            i += 2;
                        }
                        "DELETED" => {
                            hits.retain(|u| {
                                f.messages.iter().any(|m| m.uid == *u && m.flags.iter().any(|x| x == "\\Deleted"))
                            });
                            i += 1;
                        }
                        "HEADER" => {
                            let needle = args.get(i + 2).cloned().unwrap_or_default();
                            hits.retain(|u| {
                                f.messages.iter().any(|m| {
                                    m.uid == *u && m.body.windows(needle.len().max(1)).any(|w| w == needle.as_bytes())
                                })
                            });
                            i += 3;
                        }
                        _ => i += 1,
                    }
                }
                out.extend_from_slice(b"* SEARCH");
                for u in hits {
                    out.extend_from_slice(format!(" {u}").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                ok(&mut out, "SEARCH");
            }
            "UID FETCH" => {
                let all = self.folders.lock().unwrap();
                let f = selected.as_ref().and_then(|s| all.iter().find(|f| &f.name == s))?;
                let max = f.messages.last().map_or(0, |m| m.uid);
                let set = parse_set(args.first().map_or("", String::as_str), max);
                let items = args.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
                for (i, m) in f.messages.iter().enumerate() {
                    if !in_set(&set, m.uid) {
                        continue;
                    }
                    out.extend_from_slice(format!("* {} FETCH (UID {}", i + 1, m.uid).as_bytes());
                    if items.contains("FLAGS") {
                        out.extend_from_slice(format!(" FLAGS ({})", m.flags.join(" ")).as_bytes());
                    }
                    if items.contains("RFC822.SIZE") {
                        out.extend_from_slice(format!(" RFC822.SIZE {}", m.body.len()).as_bytes());
                    }
                    if items.contains("BODY.PEEK[]") {
                        out.extend_from_slice(format!(" BODY[] {{{}}}\r\n", m.body.len()).as_bytes());
                        out.extend_from_slice(&m.body);
                    } else if items.contains("MESSAGE-ID") {
                        let end = m.body.windows(4).position(|w| w == b"\r\n\r\n").map_or(m.body.len(), |p| p + 2);
                        let id: Vec<u8> = m.body[..end]
                            .split(|&b| b == b'\n')
                            .filter(|l| l.to_ascii_lowercase().starts_with(b"message-id:"))
                            .flat_map(|l| {
                                l.iter().copied().chain(if l.ends_with(b"\r") { vec![b'\n'] } else { vec![] })
                            })
                            .chain(*b"\r\n")
                            .collect();
                        out.extend_from_slice(
                            format!(" BODY[HEADER.FIELDS (MESSAGE-ID)] {{{}}}\r\n", id.len()).as_bytes(),
                        );
                        out.extend_from_slice(&id);
                    }
                    out.extend_from_slice(b")\r\n");
                }
                ok(&mut out, "FETCH");
            }
            "UID STORE" => {
                let mut all = self.folders.lock().unwrap();
                let f = selected.as_ref().and_then(|s| all.iter_mut().find(|f| &f.name == s))?;
                let max = f.messages.last().map_or(0, |m| m.uid);
                let set = parse_set(args.first().map_or("", String::as_str), max);
                let op = args.get(1).map(|s| s.to_ascii_uppercase()).unwrap_or_default();
                let flags: Vec<String> = args
                    .get(2)
                    .map(|s| s.trim_matches(|c| c == '(' || c == ')').split(' ').map(str::to_string).collect())
                    .unwrap_or_default();
                for m in f.messages.iter_mut().filter(|m| in_set(&set, m.uid)) {
                    if op.starts_with('+') {
                        for x in &flags {
                            if !m.flags.contains(x) {
                                m.flags.push(x.clone());
                            }
                        }
                    } else if op.starts_with('-') {
                        m.flags.retain(|x| !flags.contains(x));
                    } else {
                        m.flags = flags.clone();
                    }
                }
                ok(&mut out, "STORE");
            }
            "APPEND" => {
                // APPEND name (flags) {n} or {n+}: the literal follows.
                let name = args.first().cloned().unwrap_or_default().into_bytes();
                let flags: Vec<String> = args
                    .iter()
                    .find(|a| a.starts_with('('))
                    .map(|s| {
                        s.trim_matches(|c| c == '(' || c == ')')
                            .split(' ')
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let lit = args.last().cloned().unwrap_or_default();
                let plus = lit.ends_with("+}");
                let n: usize = lit.trim_matches(|c| c == '{' || c == '}' || c == '+').parse().ok()?;
                if !plus {
                    w.write_all(b"+ go ahead\r\n").ok()?;
                }
                let mut body = vec![0u8; n];
                r.read_exact(&mut body).ok()?;
                let mut crlf = String::new();
                r.read_line(&mut crlf).ok()?;
                let mut all = self.folders.lock().unwrap();
                let Some(f) = all.iter_mut().find(|f| f.name == name) else {
                    out.extend_from_slice(format!("{tag} NO [TRYCREATE] no such folder\r\n").as_bytes());
                    return Some(out);
                };
                let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
                f.add(&body, &refs);
                ok(&mut out, "APPEND");
            }
            "CLOSE" | "UNSELECT" | "EXPUNGE" | "UID EXPUNGE" => {
                if req.command.contains("EXPUNGE") {
                    let mut all = self.folders.lock().unwrap();
                    if let Some(f) = selected.as_ref().and_then(|s| all.iter_mut().find(|f| &f.name == s)) {
                        let max = f.messages.last().map_or(0, |m| m.uid);
                        let set = args.first().map(|s| parse_set(s, max));
                        let gone: BTreeSet<u32> = f
                            .messages
                            .iter()
                            .filter(|m| m.flags.iter().any(|x| x == "\\Deleted"))
                            .filter(|m| set.as_ref().is_none_or(|s| in_set(s, m.uid)))
                            .map(|m| m.uid)
                            .collect();
                        // Highest sequence number first, so each stays right.
                        for (i, m) in f.messages.iter().enumerate().rev() {
                            if gone.contains(&m.uid) {
                                out.extend_from_slice(format!("* {} EXPUNGE\r\n", i + 1).as_bytes());
                            }
                        }
                        f.messages.retain(|m| !gone.contains(&m.uid));
                    }
                }
                if req.command == "CLOSE" || req.command == "UNSELECT" {
                    *selected = None;
                }
                ok(&mut out, &req.command);
            }
            _ => out.extend_from_slice(format!("{tag} BAD unknown command\r\n").as_bytes()),
        }
        Some(out)
    }
}
