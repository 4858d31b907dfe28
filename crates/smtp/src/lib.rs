//! SMTP submission for syncmail's outbox: one blocking client that connects (implicit TLS
//! on 465, STARTTLS on 587), authenticates (PLAIN, LOGIN, XOAUTH2) and submits messages,
//! reporting each recipient's reply.
//!
//! The transport (TCP, rustls, timeouts, certificate errors) is `syncmail-imap`'s
//! [`syncmail_imap::conn::Connection`]; this crate adds only the SMTP dialogue.
//!
//! # Layout
//! - [`reply`]: a multi-line reply → code, enhanced status, text.
//! - [`client`]: greeting, EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA with dot-stuffing.

pub mod client;
pub mod reply;

pub use client::{AuthMech, Client, ConnectOptions, Envelope, Error, Result, Sent};
pub use reply::Reply;
pub use syncmail_imap::{Secret, TlsMode};
