//! An SMTP submission session (RFC 5321, RFC 6409): greeting, EHLO, STARTTLS (RFC 3207),
//! AUTH (RFC 4954: PLAIN, LOGIN, XOAUTH2), then messages.
//!
//! A message goes in two calls so that the caller can record, durably, that the message
//! is about to be accepted before the server can accept it:
//! [`Client::send_until_end`] sends MAIL FROM, every RCPT TO (each recipient's reply is
//! kept), DATA and the dot-stuffed text, everything but the final `.`;
//! [`Client::end_data`] sends the `.` and returns the server's verdict. A server accepts
//! nothing before that final `.` (RFC 5321 §4.1.1.4): a caller that drops the client in
//! between has sent nothing.

use crate::reply::{Reply, assemble, parse_line};
use base64::Engine;
use std::collections::BTreeMap;
use syncmail_imap::conn::{Connection, tls_config};
use syncmail_imap::{Secret, TlsMode};

/// Where and how to connect: the same transport settings as IMAP's, plus the EHLO name.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Host, port, TLS mode, ca-file, timeout (and read limits).
    pub server: syncmail_imap::ConnectOptions,
    /// The name this client gives in EHLO.
    pub helo: String,
}

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMech {
    /// PLAIN where offered, else LOGIN.
    #[default]
    Auto,
    /// AUTH PLAIN (RFC 4616) with the initial response.
    Plain,
    /// AUTH LOGIN (the user name and the password, each on request).
    Login,
    /// AUTH XOAUTH2: the "password" is an OAuth 2 access token.
    XOAuth2,
    /// No authentication (a relay that trusts this host).
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, TLS, a broken or stalled connection, a line above the limit.
    #[error(transparent)]
    Transport(#[from] syncmail_imap::Error),
    /// The server refused a command.
    #[error("the server refused {command}: {reply}")]
    Refused { command: String, reply: Reply },
    /// The server refused one or more recipients (the others were not sent either).
    #[error("the server refused {}", refused.iter().map(|(r, reply)| format!("{r} ({reply})")).collect::<Vec<_>>().join(", "))]
    Recipients { refused: Vec<(String, Reply)> },
    /// Authentication failed.
    #[error("authentication as {user} failed: {reply}")]
    Auth { user: String, reply: Reply },
    /// The server lacks what is needed, or broke the protocol.
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// Whether the same submission may succeed later unchanged: 4xx replies and network
    /// trouble. A 5xx is permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(e) => e.is_retryable(),
            Error::Refused { reply, .. } | Error::Auth { reply, .. } => reply.is_transient(),
            Error::Recipients { refused } => refused.iter().all(|(_, r)| r.is_transient()),
            Error::Protocol(_) => false,
        }
    }
    /// The server's own words, where it said something.
    pub fn server_text(&self) -> Option<String> {
        match self {
            Error::Refused { reply, .. } | Error::Auth { reply, .. } => Some(reply.to_string()),
            Error::Recipients { refused } => {
                Some(refused.iter().map(|(r, reply)| format!("{r}: {reply}")).collect::<Vec<_>>().join("\n"))
            }
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who sends a message to whom (the envelope, not the headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path (MAIL FROM); empty for a bounce-like null sender.
    pub from: String,
    pub to: Vec<String>,
}

/// What the server said when it accepted a message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub reply: Reply,
}

pub struct Client {
    conn: Connection,
    host: String,
    /// EHLO keywords (upper case) → their parameters.
    ext: BTreeMap<String, String>,
    buf: Vec<u8>,
    /// Credentials may go over an unencrypted connection to a host not on this machine.
    allow_plaintext: bool,
}

/// Refuses an address that could break out of its command line.
fn check_address(a: &str) -> Result<()> {
    if a.contains(['\r', '\n', '\0', '<', '>']) || a.contains(char::is_whitespace) {
        return Err(Error::Protocol(format!("{a:?} is not a valid address for SMTP")));
    }
    Ok(())
}

impl Client {
    /// Connects, reads the greeting, says EHLO, and sets up TLS as asked.
    pub fn connect(options: &ConnectOptions) -> Result<Client> {
        let opts = &options.server;
        let mut conn = Connection::connect(&opts.host, opts.port, opts.timeout, opts.limits)?;
        if opts.tls == TlsMode::Implicit {
            conn.start_tls(tls_config(&opts.host, opts.ca_file.as_deref())?)?;
        }
        let mut c = Client {
            conn,
            host: opts.host.clone(),
            ext: BTreeMap::new(),
            buf: Vec::new(),
            allow_plaintext: opts.allow_plaintext,
        };
        let greeting = c.read_reply()?;
        if greeting.code != 220 {
            return Err(Error::Refused { command: "the connection (greeting)".into(), reply: greeting });
        }
        c.ehlo(&options.helo)?;
        if opts.tls == TlsMode::StartTls {
            if !c.has("STARTTLS") {
                return Err(Error::Protocol(format!(
                    "{} does not offer STARTTLS; use tls = \"implicit\" (port 465) if it supports that",
                    opts.host
                )));
            }
            c.command("STARTTLS", 220)?;
            if c.conn.has_buffered() {
                return Err(Error::Protocol("the server sent data right after STARTTLS; refusing to continue".into()));
            }
            c.conn.start_tls(tls_config(&opts.host, opts.ca_file.as_deref())?)?;
            // RFC 3207 §4.2: forget what was learned before TLS, ask again.
            c.ehlo(&options.helo)?;
        }
        Ok(c)
    }

    fn ehlo(&mut self, helo: &str) -> Result<()> {
        let r = self.command(&format!("EHLO {helo}"), 250)?;
        self.ext = r
            .text
            .lines()
            .skip(1)
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_ascii_uppercase(), v.to_string())
            })
            .collect();
        Ok(())
    }

    /// Whether the server announced an extension in EHLO (case-insensitive).
    pub fn has(&self, ext: &str) -> bool {
        self.ext.contains_key(&ext.to_ascii_uppercase())
    }

    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    fn auth_offers(&self, mech: &str) -> bool {
        self.ext.get("AUTH").is_some_and(|m| m.split_whitespace().any(|x| x.eq_ignore_ascii_case(mech)))
    }

    /// Reads one whole reply (all its lines).
    fn read_reply(&mut self) -> Result<Reply> {
        let mut lines = Vec::new();
        loop {
            self.conn.read_line(&mut self.buf)?;
            let Some((code, more, text)) = parse_line(&self.buf) else {
                return Err(Error::Protocol(format!(
                    "{} sent a line that is not an SMTP reply: {:?}",
                    self.host,
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)])
                )));
            };
            lines.push((code, text));
            if !more {
                break;
            }
            if lines.len() > 10_000 {
                return Err(Error::Protocol(format!("{} sent a reply of more than 10,000 lines", self.host)));
            }
        }
        let code = lines[lines.len() - 1].0;
        if lines.iter().any(|(c, _)| *c != code) {
            return Err(Error::Protocol(format!("{} sent a reply whose lines have different codes", self.host)));
        }
        Ok(assemble(code, lines.into_iter().map(|(_, t)| t).collect()))
    }

    /// Sends a command line and reads its reply; `Ok` only for the expected code.
    fn command(&mut self, line: &str, expect: u16) -> Result<Reply> {
        self.conn.write_all(format!("{line}\r\n").as_bytes())?;
        let r = self.read_reply()?;
        if r.code == expect {
            Ok(r)
        } else {
            let name = line.split([' ', ':']).next().unwrap_or(line).to_string();
            Err(Error::Refused { command: name, reply: r })
        }
    }

    /// A secret command line: like `command`, but the line never appears in an error.
    fn secret_line(&mut self, line: &str) -> Result<Reply> {
        self.conn.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Authenticates. With [`AuthMech::Auto`], PLAIN where offered, else LOGIN.
    pub fn authenticate(&mut self, user: &str, secret: &Secret, mech: AuthMech) -> Result<()> {
        if user.contains(['\0', '\r', '\n']) || secret.expose().contains(['\0', '\r', '\n']) {
            return Err(Error::Protocol("the user name or password contains a NUL or line break".into()));
        }
        if mech == AuthMech::None {
            return Ok(());
        }
        // The same rule as for IMAP: no credentials in the clear, except to this machine or
        // when the account says so.
        if !self.is_tls() && !self.allow_plaintext && !self.conn.peer_is_loopback() {
            return Err(Error::Transport(syncmail_imap::Error::Insecure(format!(
                "{} is not on this machine and the connection is not encrypted: the password is not sent; \
                 use tls = \"starttls\" or \"implicit\" in [smtp], or set allow-plaintext = true if you \
                 must",
                self.host
            ))));
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mech = match mech {
            AuthMech::None => return Ok(()),
            AuthMech::Auto if self.auth_offers("PLAIN") => AuthMech::Plain,
            AuthMech::Auto if self.auth_offers("LOGIN") => AuthMech::Login,
            AuthMech::Auto => {
                return Err(Error::Protocol(match self.ext.get("AUTH") {
                    None if !self.is_tls() => format!(
                        "{} offers no authentication on an unencrypted connection; use tls = \"starttls\" or \
                         \"implicit\"",
                        self.host
                    ),
                    None => format!("{} offers no authentication (no AUTH in EHLO)", self.host),
                    Some(m) => format!("{} offers only {m}; set auth-mech if one of them is XOAUTH2", self.host),
                }));
            }
            m => m,
        };
        let fail = |reply: Reply| Error::Auth { user: user.to_string(), reply };
        let r = match mech {
            AuthMech::Plain => {
                self.secret_line(&format!("AUTH PLAIN {}", b64(&format!("\0{user}\0{}", secret.expose()))))?
            }
            AuthMech::Login => {
                let r = self.secret_line("AUTH LOGIN")?;
                if r.code != 334 {
                    return Err(fail(r));
                }
                let r = self.secret_line(&b64(user))?;
                if r.code != 334 {
                    return Err(fail(r));
                }
                self.secret_line(&b64(secret.expose()))?
            }
            _ => {
                let ir = b64(&format!("user={user}\x01auth=Bearer {}\x01\x01", secret.expose()));
                let r = self.secret_line(&format!("AUTH XOAUTH2 {ir}"))?;
                if r.code == 334 {
                    // The server sent its error details as a challenge; an empty line ends it.
                    let details = r.text.clone();
                    let mut end = self.secret_line("")?;
                    end.text = format!("{}\n{details}", end.text);
                    end
                } else {
                    r
                }
            }
        };
        if r.code == 235 { Ok(()) } else { Err(fail(r)) }
    }

    /// Sends MAIL FROM, RCPT TO for each recipient, DATA and the message (CRLF text),
    /// dot-stuffed, without the final `.`. Any refused recipient refuses the message:
    /// the transaction is reset and [`Error::Recipients`] names each refused recipient
    /// with the server's reply. After `Ok`, call [`Client::end_data`] (or drop the client
    /// to send nothing).
    pub fn send_until_end(&mut self, env: &Envelope, data: &[u8]) -> Result<()> {
        check_address(&env.from)?;
        if env.to.is_empty() {
            return Err(Error::Protocol("the message has no recipient".into()));
        }
        for r in &env.to {
            check_address(r)?;
            if r.is_empty() {
                return Err(Error::Protocol("an empty recipient address".into()));
            }
        }
        let mut params = String::new();
        if let Some(limit) = self.ext.get("SIZE").and_then(|s| s.trim().parse::<u64>().ok()) {
            if limit > 0 && data.len() as u64 > limit {
                return Err(Error::Refused {
                    command: "the message".into(),
                    reply: Reply {
                        code: 552,
                        enhanced: Some("5.3.4".into()),
                        text: format!(
                            "the message is {} bytes; {} accepts at most {limit} (SIZE)",
                            data.len(),
                            self.host
                        ),
                    },
                });
            }
            params.push_str(&format!(" SIZE={}", data.len()));
        }
        if self.has("8BITMIME") && data.iter().any(|b| *b >= 0x80) {
            params.push_str(" BODY=8BITMIME");
        }
        let utf8_addresses = !env.from.is_ascii() || env.to.iter().any(|a| !a.is_ascii());
        if utf8_addresses {
            if !self.has("SMTPUTF8") {
                return Err(Error::Protocol(format!(
                    "{} does not accept addresses with non-ASCII characters (no SMTPUTF8)",
                    self.host
                )));
            }
            params.push_str(" SMTPUTF8");
        }
        self.command(&format!("MAIL FROM:<{}>{params}", env.from), 250)?;
        let mut refused = Vec::new();
        for r in &env.to {
            self.conn.write_all(format!("RCPT TO:<{r}>\r\n").as_bytes())?;
            let reply = self.read_reply()?;
            if !reply.is_positive() {
                refused.push((r.clone(), reply));
            }
        }
        if !refused.is_empty() {
            // Nothing goes to anyone unless everyone can have it: the person fixes the
            // address and sends again, without a partial delivery to explain.
            let _ = self.command("RSET", 250);
            return Err(Error::Recipients { refused });
        }
        self.command("DATA", 354)?;
        self.conn.write_all(&dot_stuff(data))?;
        Ok(())
    }

    /// Sends the final `.` and returns the server's verdict. An error here, other than a
    /// reply, leaves it unknown whether the server accepted the message.
    pub fn end_data(&mut self) -> Result<Sent> {
        self.conn.write_all(b".\r\n")?;
        let reply = self.read_reply()?;
        if reply.is_positive() {
            Ok(Sent { reply })
        } else {
            Err(Error::Refused { command: "the message (DATA)".into(), reply })
        }
    }

    /// Resets the transaction after a refused message, so the session can go on.
    pub fn reset(&mut self) -> Result<()> {
        self.command("RSET", 250).map(|_| ())
    }

    /// Says QUIT and closes, ignoring errors: the work is done.
    pub fn quit(mut self) {
        let _ = self.conn.write_all(b"QUIT\r\n");
        let _ = self.read_reply();
        self.conn.shutdown();
    }
}

/// The message as DATA carries it (RFC 5321 §4.5.2): CRLF line ends, a `.` doubled at the
/// start of a line, and a final CRLF so that the terminating `.` stands on its own line.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 50 + 2);
    let mut at_line_start = true;
    let mut prev = 0u8;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        prev = b;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A scripted fake server (not a real one: these servers misbehave on cue, which a real
    /// server will not): sends the greeting, then for each step reads one line, checks
    /// that it starts with the expected text, and sends the reply (nothing for "").
    /// Returns the port and a handle that yields the lines received.
    fn scripted(
        greeting: &'static str,
        steps: Vec<(&'static str, &'static str)>,
    ) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(greeting.as_bytes()).unwrap();
            let mut seen = Vec::new();
            for (expect, reply) in steps {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                assert!(line.starts_with(expect), "expected {expect:?}, got {line:?}");
                seen.push(line);
                w.write_all(reply.as_bytes()).unwrap();
            }
            seen
        });
        (port, h)
    }

    fn opts(port: u16, tls: TlsMode) -> ConnectOptions {
        ConnectOptions {
            server: syncmail_imap::ConnectOptions {
                host: "127.0.0.1".into(),
                port,
                tls,
                ca_file: None,
                timeout: std::time::Duration::from_secs(5),
                limits: syncmail_imap::Limits::default(),
                allow_plaintext: false,
                trace: None,
            },
            helo: "client.test".into(),
        }
    }

    #[test]
    fn a_refused_recipient_refuses_the_message_and_is_named() {
        let (port, h) = scripted(
            "220 fake ESMTP\r\n",
            vec![
                ("EHLO client.test", "250-fake\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"),
                ("MAIL FROM:<a@x> SIZE=", "250 ok\r\n"),
                ("RCPT TO:<b@y>", "250 ok\r\n"),
                ("RCPT TO:<c@z>", "550-5.1.1 <c@z>: no such\r\n550 5.1.1 user here\r\n"),
                ("RSET", "250 ok\r\n"),
            ],
        );
        let mut c = Client::connect(&opts(port, TlsMode::None)).unwrap();
        assert!(c.has("8bitmime") && !c.has("SMTPUTF8"));
        let env = Envelope { from: "a@x".into(), to: vec!["b@y".into(), "c@z".into()] };
        let e = c.send_until_end(&env, b"Subject: x\n\nhi\n").unwrap_err();
        let Error::Recipients { refused } = &e else { panic!("{e:?}") };
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, "c@z");
        assert_eq!(refused[0].1.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(refused[0].1.text, "<c@z>: no such\nuser here");
        assert!(!e.is_transient());
        drop(c);
        assert_eq!(h.join().unwrap().len(), 5);
    }

    #[test]
    fn a_message_too_large_for_size_is_refused_before_mail_from() {
        let (port, h) = scripted("220 fake\r\n", vec![("EHLO", "250-fake\r\n250 SIZE 10\r\n")]);
        let mut c = Client::connect(&opts(port, TlsMode::None)).unwrap();
        let env = Envelope { from: "a@x".into(), to: vec!["b@y".into()] };
        let e = c.send_until_end(&env, b"Subject: far too long\n\n").unwrap_err();
        assert!(matches!(&e, Error::Refused { reply, .. } if reply.code == 552), "{e:?}");
        drop(c);
        assert_eq!(h.join().unwrap().len(), 1);
    }

    #[test]
    fn starttls_not_offered_or_followed_by_injected_data_is_refused() {
        let (port, _h) = scripted("220 fake\r\n", vec![("EHLO", "250-fake\r\n250 AUTH PLAIN\r\n")]);
        let e = Client::connect(&opts(port, TlsMode::StartTls)).err().unwrap();
        assert!(e.to_string().contains("does not offer STARTTLS"), "{e}");
        let (port, _h) = scripted(
            "220 fake\r\n",
            vec![("EHLO", "250-fake\r\n250 STARTTLS\r\n"), ("STARTTLS", "220 go ahead\r\n250 injected\r\n")],
        );
        let e = Client::connect(&opts(port, TlsMode::StartTls)).err().unwrap();
        assert!(e.to_string().contains("right after STARTTLS"), "{e}");
    }

    #[test]
    fn garbage_and_a_lost_answer_are_errors_not_hangs() {
        let (port, _h) = scripted("* OK this is IMAP\r\n", vec![]);
        let e = Client::connect(&opts(port, TlsMode::None)).err().unwrap();
        assert!(e.to_string().contains("not an SMTP reply"), "{e}");
        // The connection drops after the final dot: the outcome is unknown, and the error
        // is a transport error (the engine then keeps the message `submitting`).
        let (port, h) = scripted(
            "220 fake\r\n",
            vec![
                ("EHLO", "250 fake\r\n"),
                ("MAIL FROM:<a@x>", "250 ok\r\n"),
                ("RCPT TO:<b@y>", "250 ok\r\n"),
                ("DATA", "354 go\r\n"),
                ("..dot", ""),
                (".", ""),
            ],
        );
        let mut c = Client::connect(&opts(port, TlsMode::None)).unwrap();
        let env = Envelope { from: "a@x".into(), to: vec!["b@y".into()] };
        c.send_until_end(&env, b".dot\n").unwrap();
        let e = c.end_data().unwrap_err();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
        let seen = h.join().unwrap();
        assert_eq!(seen.last().map(String::as_str), Some(".\r\n"));
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuff(b"a\n.b\n..c\r\n.\nend"), b"a\r\n..b\r\n...c\r\n..\r\nend\r\n");
        assert_eq!(dot_stuff(b".start\r\n"), b"..start\r\n");
        assert_eq!(dot_stuff(b""), b"");
        assert_eq!(dot_stuff(b"x.y\n"), b"x.y\r\n");
    }

    #[test]
    fn errors_know_whether_to_retry() {
        let r = |code, text: &str| Reply { code, enhanced: None, text: text.into() };
        assert!(Error::Refused { command: "DATA".into(), reply: r(451, "later") }.is_transient());
        assert!(!Error::Refused { command: "DATA".into(), reply: r(554, "no") }.is_transient());
        let mixed = Error::Recipients { refused: vec![("a@x".into(), r(450, "busy")), ("b@x".into(), r(550, "no"))] };
        assert!(!mixed.is_transient());
        assert_eq!(mixed.server_text().as_deref(), Some("a@x: 450 busy\nb@x: 550 no"));
        assert!(check_address("a b@x").is_err() && check_address("a@x>\r\nRSET").is_err());
        assert!(check_address("").is_ok());
    }
}
