//! Errors of the IMAP layer, by what broke.

use crate::parse::{Code, ParseError};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect { host: String, port: u16, source: io::Error },
    /// A read or write on an open connection failed (reset, closed by the server).
    #[error("connection lost while {op}: {source}")]
    Io { op: String, source: io::Error },
    /// No answer within the configured time.
    #[error("no answer from the server within {secs} s while {op}")]
    Timeout { op: String, secs: u64 },
    /// TLS failed: the certificate or the handshake.
    #[error("TLS with {host} failed: {reason}")]
    Tls { host: String, reason: String },
    /// The server's response could not be read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The server answered NO to a command.
    #[error("the server refused {command}: {text}")]
    No { command: String, code: Option<Code>, text: String },
    /// The server answered BAD to a command: a bug on one side or the other.
    #[error("the server rejected {command} as malformed: {text}")]
    Bad { command: String, text: String },
    /// Login failed.
    #[error("login as {user} failed: {text}")]
    Auth { user: String, text: String },
    /// The server closed the session (untagged BYE).
    #[error("the server closed the connection: {text}")]
    Bye { text: String },
    /// The server lacks something syncmail requires, or broke the protocol.
    #[error("{0}")]
    Protocol(String),
    /// Sending a password over this connection would expose it: no TLS, and the server is
    /// not on this machine, and the configuration did not allow it.
    #[error("{0}")]
    Insecure(String),
    /// A literal could not be written where it was streamed to (the disk is full, say).
    #[error("cannot write a message to disk: {0}")]
    Sink(io::Error),
    /// A line or literal above the configured limit.
    #[error("the server sent a {what} of {size} bytes, above the limit of {limit} bytes")]
    TooLarge { what: &'static str, size: u64, limit: u64 },
}

impl Error {
    /// Whether the same operation may succeed on a new connection.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Io { .. } | Error::Timeout { .. } | Error::Bye { .. })
            || self.is_limit()
    }

    /// A refusal for a limit the server keeps (`[LIMIT]`, RFC 5530), such as connections per
    /// user: not the request's fault, and it may pass.
    pub fn is_limit(&self) -> bool {
        matches!(self, Error::No { code: Some(Code::Other(name, _)), .. } if name.eq_ignore_ascii_case("LIMIT"))
    }
    /// The server's own words, where there are some.
    pub fn server_text(&self) -> Option<&str> {
        match self {
            Error::No { text, .. } | Error::Bad { text, .. } | Error::Auth { text, .. } | Error::Bye { text } => {
                Some(text)
            }
            Error::Parse(p) => Some(&p.line),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
