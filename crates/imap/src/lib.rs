//! The IMAP side of syncmail: a response codec and a blocking client that keeps several
//! commands in flight.
//!
//! # Layout
//! - [`parse`]: one whole response (line and literals) → [`parse::Response`], borrowing.
//! - [`conn`]: TCP and rustls with a timeout on every read and write; reads whole responses
//!   under size limits.
//! - [`deflate`]: COMPRESS=DEFLATE (RFC 4978), the layer between TLS and the reader.
//! - [`client`]: greeting, STARTTLS, login, capabilities, tagged commands, pipelining.
//! - [`utf7`]: modified UTF-7 mailbox names.
//! - [`types`]: `Uid`, `Flags`, `Secret`, UID sets.

pub mod client;
pub mod conn;
pub mod deflate;
pub mod error;
pub mod parse;
pub mod types;
pub mod utf7;

pub use client::{AuthMech, Client, Completion, Compress, ConnectOptions, TlsMode, Trace, quote};
pub use conn::{Limits, LiteralSink};
pub use deflate::CompressStats;
pub use error::{Error, Result};
pub use types::{Flags, Secret, Uid, parse_uid_set, uid_set};
