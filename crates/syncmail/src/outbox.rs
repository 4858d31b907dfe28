//! The outbox: a local Maildir folder (`outbox` in the account, "Outbox" by default) whose
//! messages wait to be sent through the account's SMTP server, with their envelope and
//! their progress recorded in the state (`outbox` table, [`OutboxRow`]).
//!
//! A message gets there through [`crate::Store::queue`] (what `syncmail send` does, as a
//! sendmail program) or by a mail reader saving a file into the folder; such a file gets
//! its envelope from its headers (From; To, Cc, Bcc) when the next send finds it. Sending
//! itself is the engine's `OUTGOING_MAIL` work (`engine/outgoing.rs`).
//!
//! Queueing order, so that a crash leaves nothing half done: the file is written and
//! fsynced in `tmp/` (invisible to a send run), then its row is committed, then the file is
//! moved into `cur/`. A crash before the row leaves a stale file in `tmp/` (cleaned as
//! Maildir does); a crash after it leaves a row without a file, forgotten after an hour.

use crate::config::AccountConfig;
use crate::engine::message::{addresses, header, header_all};
use crate::state::State;
pub use crate::state::{OutState, OutboxRow};
use syncmail_imap::Flags;
use syncmail_maildir::Folder;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("account {0} has no [smtp] section, so it cannot send mail")]
    NoSmtp(String),
    #[error("the message has no sender: give one with -f, or a From header")]
    NoSender,
    #[error("the message has no recipient: give them as arguments, or use -t to read To, Cc and Bcc")]
    NoRecipients,
    #[error("{0}")]
    Local(String),
    #[error("no message {0} in the outbox")]
    NotFound(i64),
    #[error("message {id} is {state}: {what}")]
    WrongState { id: i64, state: &'static str, what: &'static str },
}

/// How `syncmail send` (a sendmail program) was asked to queue a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// The envelope sender (`-f`); else the From header's address.
    pub from: Option<String>,
    /// The full name for a From header the message lacks (`-F`).
    pub full_name: Option<String>,
    /// Recipients given on the command line.
    pub recipients: Vec<String>,
    /// `-t`: also send to the addresses of To, Cc and Bcc.
    pub read_recipients: bool,
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The outbox folder of an account (`Outbox`, or `.Outbox` in the Maildir++ layout).
pub(crate) fn folder(account: &AccountConfig) -> Folder {
    let rel = account.layout.folder_path(&account.outbox, None).unwrap_or_else(|_| account.outbox.clone().into());
    Folder::new(account.maildir.join(rel))
}

pub(crate) fn open_state(account: &AccountConfig) -> Result<State, OutboxError> {
    State::open(&account.state_dir.join("state.sqlite"))
        .map_err(|e| OutboxError::Local(format!("cannot open the sync state: {e}")))
}

/// The envelope sender and recipients of a message: `-f` or the From address; the
/// recipients given, plus with `read_headers` those of To, Cc and Bcc (as `sendmail -t`
/// and Postfix do), without repeats.
pub(crate) fn envelope(data: &[u8], from: Option<&str>, given: &[String], read_headers: bool) -> (String, Vec<String>) {
    let from = match from {
        Some(f) => f.to_string(),
        None => header(data, "From").map(|v| addresses(&v)).and_then(|a| a.into_iter().next()).unwrap_or_default(),
    };
    let mut to: Vec<String> = Vec::new();
    let mut add = |a: String| {
        if !a.is_empty() && !to.iter().any(|t| t.eq_ignore_ascii_case(&a)) {
            to.push(a);
        }
    };
    for r in given {
        for a in addresses(r) {
            add(a);
        }
    }
    if read_headers {
        for name in ["To", "Cc", "Bcc"] {
            for v in header_all(data, name) {
                for a in addresses(&v) {
                    add(a);
                }
            }
        }
    }
    (from, to)
}

/// The envelope sender of a message: `from` (`-f`), else the From header's address; ""
/// when there is none.
pub fn sender(message: &[u8], from: Option<&str>) -> String {
    envelope(message, from, &[], false).0
}

/// RFC 5322 date-time (UTC) of a Unix time.
fn rfc5322_date(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][month as usize - 1];
    format!("{weekday}, {day} {mon} {year} {:02}:{:02}:{:02} +0000", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Queues a message (any line ends; stored with LF as the rest of the store): adds the
/// Date, Message-ID and From a submission must carry where they are missing, works out
/// the envelope, and writes it to the outbox. Returns its row.
pub(crate) fn queue(account: &AccountConfig, data: &[u8], opts: &QueueOptions) -> Result<OutboxRow, OutboxError> {
    if account.smtp.is_none() {
        return Err(OutboxError::NoSmtp(account.name.clone()));
    }
    let body = syncmail_maildir::crlf_to_lf(data);
    let (from, to) = envelope(&body, opts.from.as_deref(), &opts.recipients, opts.read_recipients);
    if from.is_empty() {
        return Err(OutboxError::NoSender);
    }
    if to.is_empty() {
        return Err(OutboxError::NoRecipients);
    }
    let unique = syncmail_maildir::new_unique();
    let mut added = String::new();
    if header(&body, "From").is_none() {
        match &opts.full_name {
            Some(n) => added.push_str(&format!("From: \"{}\" <{from}>\n", n.replace(['"', '\\', '\r', '\n'], ""))),
            None => added.push_str(&format!("From: {from}\n")),
        }
    }
    if header(&body, "Date").is_none() {
        added.push_str(&format!("Date: {}\n", rfc5322_date(now())));
    }
    if header(&body, "Message-ID").is_none() {
        let domain = from.rsplit_once('@').map_or("syncmail.invalid", |(_, d)| d);
        added.push_str(&format!("Message-ID: <{}@{domain}>\n", unique.replace(['/', ':', '\\'], "-")));
    }
    let mut text = added.into_bytes();
    text.extend_from_slice(&body);

    let dir = folder(account);
    let local = |e: &dyn std::fmt::Display| OutboxError::Local(format!("outbox {}: {e}", dir.path().display()));
    dir.create().map_err(|e| local(&e))?;
    let staged = dir.stage(&unique, &text).map_err(|e| local(&e))?;
    let mut state = open_state(account)?;
    let row = new_row(unique, from, to, &text);
    let row = state.outbox_insert(&row).map_err(|e| local(&e))?;
    // Seen, so that a mail reader does not show the outbox as unread mail.
    dir.publish(staged, Flags::SEEN).map_err(|e| local(&e))?;
    Ok(row)
}

/// A new `queued` row for a file of the outbox.
pub(crate) fn new_row(near_id: String, from: String, to: Vec<String>, data: &[u8]) -> OutboxRow {
    OutboxRow {
        id: 0,
        near_id,
        state: OutState::Queued,
        from,
        to,
        message_id: header(data, "Message-ID").unwrap_or_default(),
        subject: header(data, "Subject").unwrap_or_default(),
        queued_at: now(),
        attempts: 0,
        next_attempt: 0,
        last_error: String::new(),
        server_text: String::new(),
        accepted_at: 0,
        accepted_reply: String::new(),
        sent_folder: String::new(),
        sent_uidvalidity: 0,
        sent_uid_floor: 0,
        sent_uid: 0,
    }
}

/// Every message the outbox holds or held (filed ones too), oldest first.
pub(crate) fn list(account: &AccountConfig) -> Result<Vec<OutboxRow>, OutboxError> {
    open_state(account)?.outbox().map_err(|e| OutboxError::Local(e.to_string()))
}

/// Changes a message's state at the person's word: `retry` puts a failed message (or one
/// that may have been sent) back in the queue; `confirm_sent` says one that may have been
/// sent was, so it is filed and not sent again.
pub(crate) fn resolve(account: &AccountConfig, id: i64, retry: bool) -> Result<OutboxRow, OutboxError> {
    let mut state = open_state(account)?;
    let local = |e: rusqlite::Error| OutboxError::Local(e.to_string());
    let mut row = state.outbox_row(id).map_err(local)?.ok_or(OutboxError::NotFound(id))?;
    match (row.state, retry) {
        (OutState::Failed | OutState::Submitting | OutState::Queued, true) => {
            row.state = OutState::Queued;
            row.attempts = 0;
            row.next_attempt = 0;
        }
        (OutState::Submitting, false) => {
            row.state = OutState::Accepted;
            row.accepted_at = now();
            row.accepted_reply = "confirmed as sent by the user".into();
        }
        (s, _) => {
            return Err(OutboxError::WrongState {
                id,
                state: s.name(),
                what: if retry {
                    "only a failed or possibly sent message can be retried"
                } else {
                    "only a possibly sent message can be confirmed as sent"
                },
            });
        }
    }
    row.last_error.clear();
    row.server_text.clear();
    state.outbox_update(&row).map_err(local)?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_from_args_and_headers() {
        let m = b"From: \"Me\" <me@x.org>\nTo: a@y, B <b@y>\nCc: c@z\nBcc: hidden@w\nSubject: s\n\nbody\n";
        let (from, to) = envelope(m, None, &["extra@v".into()], false);
        assert_eq!((from.as_str(), to), ("me@x.org", vec!["extra@v".to_string()]));
        let (from, to) = envelope(m, Some("bounce@x.org"), &["a@y".into()], true);
        assert_eq!(from, "bounce@x.org");
        assert_eq!(to, vec!["a@y", "b@y", "c@z", "hidden@w"]);
        assert_eq!(sender(m, None), "me@x.org");
        assert_eq!(sender(b"To: b\n\n", Some("f@x")), "f@x");
        assert_eq!(sender(b"To: b\n\n", None), "");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(1_795_521_600), "Tue, 24 Nov 2026 12:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
