//! `OUTGOING_MAIL`: the outbox sent over SMTP, each message then filed in Sent.
//!
//! Each message moves through states recorded in the `outbox` table, each change one
//! committed statement followed by `Ctx::step` (where the crash tests interrupt):
//!
//! 1. a file a mail reader put in the outbox gets a row (`queued`), its envelope from its
//!    headers;
//! 2. `queued`: MAIL FROM, RCPT TO, DATA and the text (without Bcc) go to the server, all
//!    but the final `.`; then the row becomes `submitting`, durably, and only then is the
//!    `.` sent;
//! 3. the server's 250 makes it `accepted`; a 4xx (or a network error before the `.`)
//!    puts it back to `queued` with a later `next_attempt`; a 5xx makes it `failed`, with
//!    the server's words and the recipient concerned;
//! 4. `accepted` → `filing`, journaling the Sent folder's UIDVALIDITY and UIDNEXT as a
//!    floor → APPEND (the copy with Bcc, `\Seen`) → `filed`, then the file leaves the outbox.
//!
//! The guarantee: a message is handed to the server at most once without the person being
//! told. A run that finds a message `submitting` (killed, or the connection lost, between
//! the `.` and the answer's record) cannot know whether the server took it: it does not
//! send it again, but reports a `send` error on every run until the person says
//! `syncmail send --retry ID` (send it again) or `syncmail send --sent ID` (it went).
//! Filing happens once: a run that finds `filing` looks for the copy in Sent (UID above
//! the floor, Message-ID, size, then bytes) before appending again.

use super::message::{lf_to_crlf, without_fields};
use super::{Ctx, errors};
use crate::api::{ErrorKind, Step, SyncError, SyncFlags};
use crate::config::{AccountConfig, SmtpConfig};
use crate::far::Session;
use crate::outbox::{self, OutState, OutboxRow};
use crate::state::State;
use std::collections::{BTreeSet, HashMap};
use syncmail_imap::Flags;
use syncmail_maildir::{Entry, Folder};
use syncmail_smtp::{Client, Envelope, Error as SmtpError};

/// A row queued by `syncmail send` whose file never arrived (a crash while queueing) or
/// was deleted by the person: forgotten after this long.
const ORPHAN_AFTER_SECS: i64 = 3600;

/// How long a sent and filed message stays listed (`syncmail send --list --all`).
const KEEP_FILED_SECS: i64 = 30 * 86_400;

/// Wait before the next attempt after `attempts` temporary failures: 1, 2, 4 … minutes, at
/// most an hour.
fn retry_delay(attempts: u32) -> i64 {
    (60i64 << attempts.saturating_sub(1).min(6)).min(3600)
}

/// The run's connections: SMTP for sending, IMAP for filing (handed on to the contents
/// sync afterwards). `None` and `*_down`: not opened yet, or given up on for this run.
struct Links<'s> {
    smtp: Option<Client>,
    smtp_down: bool,
    imap: &'s mut Option<Session>,
    imap_down: bool,
    sent_folder: Option<String>,
}

fn smtp_error(account: &str, e: &SmtpError) -> SyncError {
    use syncmail_imap::Error as T;
    let (kind, hint) = match e {
        SmtpError::Transport(T::Tls { .. }) => (
            ErrorKind::Tls,
            "check host, port and tls in the [smtp] section; for a private CA set ca-file to its PEM file",
        ),
        SmtpError::Transport(_) => (
            ErrorKind::Network,
            "the outbox keeps the messages; they are sent when the server can be reached (check host and port \
             in the [smtp] section if this goes on)",
        ),
        SmtpError::Auth { reply, .. } if !reply.is_transient() => (
            ErrorKind::Auth,
            "check user and the password source (or auth-mech) in the [smtp] section; the messages stay queued",
        ),
        SmtpError::Auth { .. } => (ErrorKind::Network, "the server is busy; the messages stay queued"),
        SmtpError::Protocol(_) => (
            ErrorKind::Server,
            "the message says what the server lacks; adjust the [smtp] section if it names a setting",
        ),
        SmtpError::Refused { .. } | SmtpError::Recipients { .. } => (ErrorKind::Send, ""),
    };
    SyncError {
        kind,
        account: account.to_string(),
        folder: None,
        message: e.to_string(),
        server_text: e.server_text(),
        hint: hint.to_string(),
        retryable: e.is_transient(),
    }
}

fn connect(cfg: &SmtpConfig) -> Result<Client, Result<SmtpError, String>> {
    let opts = syncmail_smtp::ConnectOptions {
        server: syncmail_imap::ConnectOptions {
            host: cfg.host.clone(),
            port: cfg.port,
            tls: cfg.tls,
            ca_file: cfg.ca_file.clone(),
            timeout: cfg.timeout,
            limits: syncmail_imap::Limits::default(),
            allow_plaintext: cfg.allow_plaintext,
            trace: None,
        },
        helo: cfg.helo.clone(),
    };
    let mut client = Client::connect(&opts).map_err(Ok)?;
    if cfg.auth_mech != syncmail_smtp::AuthMech::None {
        let password = cfg.password.fetch().map_err(Err)?;
        client.authenticate(&cfg.user, &password, cfg.auth_mech).map_err(Ok)?;
    }
    Ok(client)
}

/// Sends what the outbox holds and files what was sent. Errors of one message are
/// reported and the others go on; a local failure (state, files) ends the run.
pub(crate) fn send_outbox(ctx: &mut Ctx<'_>, state: &mut State, imap: &mut Option<Session>) -> Result<(), SyncError> {
    let account: &AccountConfig = ctx.account;
    let name = account.name.clone();
    let Some(smtp_cfg) = &account.smtp else {
        ctx.simple_error(
            ErrorKind::Config,
            None,
            "outgoing mail was asked for, but the account has no [smtp] section".into(),
            "add [accounts.NAME.smtp] with host, tls and user (see the README), or leave outgoing-mail out",
        );
        return Ok(());
    };
    let shown = account.outbox.clone();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&name, Some(&shown), format!("outbox: {e}"));
    let dir = outbox::folder(account);
    dir.create().map_err(|e| lerr(&e))?;
    let files: HashMap<String, Entry> = dir.scan().map_err(|e| lerr(&e))?;
    let mut rows = state.outbox().map_err(|e| lerr(&e))?;

    // Files a mail reader put there: queued with the envelope of their headers.
    let known: BTreeSet<&str> = rows.iter().map(|r| r.near_id.as_str()).collect();
    let mut new: Vec<&Entry> = files.values().filter(|e| !known.contains(e.unique())).collect();
    new.sort_by(|a, b| a.unique().cmp(b.unique()));
    for entry in new {
        let data = dir.read(entry).map_err(|e| lerr(&e))?;
        let (from, to) = outbox::envelope(&data, None, &[], true);
        let row = outbox::new_row(entry.unique().to_string(), from, to, &data);
        rows.push(state.outbox_insert(&row).map_err(|e| lerr(&e))?);
        ctx.step()?;
    }

    let on_demand = ctx.req.flags.contains(SyncFlags::ON_DEMAND);
    let mut links = Links { smtp: None, smtp_down: false, imap, imap_down: false, sent_folder: None };
    let work: Vec<OutboxRow> =
        rows.into_iter().filter(|r| r.state != OutState::Filed || files.contains_key(&r.near_id)).collect();
    let total = work.len() as u64;
    for (i, mut row) in work.into_iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            ctx.report.cancelled = true;
            break;
        }
        let now = outbox::now();
        let entry = files.get(&row.near_id);
        let what = describe(&row);
        match (row.state, entry) {
            (OutState::Filed, Some(e)) => {
                dir.remove(e).map_err(|e| lerr(&e))?;
                ctx.step()?;
            }
            (OutState::Filed, None) if now - row.accepted_at > KEEP_FILED_SECS => {
                // History for `syncmail send --list --all`, kept a while.
                state.outbox_forget(row.id).map_err(|e| lerr(&e))?;
            }
            (OutState::Filed, None) => {}
            (OutState::Failed | OutState::Submitting, None) => {
                // The person deleted it from the outbox: that settles it.
                state.outbox_forget(row.id).map_err(|e| lerr(&e))?;
                ctx.progress(
                    Step::Send,
                    format!("{what} was deleted from the outbox; it is forgotten"),
                    Some(&shown),
                    (i as u64, total),
                    (0, 0),
                );
                ctx.step()?;
            }
            (OutState::Failed, Some(_)) => ctx.error(send_error(
                ctx,
                &row,
                format!("{what} was refused by the server and is kept in the outbox: {}", row.last_error),
                failed_hint(row.id),
                false,
            )),
            (OutState::Submitting, Some(_)) => ctx.error(send_error(
                ctx,
                &row,
                format!(
                    "{what} may have been sent: the run that handed it to the server stopped before it recorded \
                     the answer, so it is not sent again on its own"
                ),
                maybe_sent_hint(row.id),
                false,
            )),
            (OutState::Queued, None) if now - row.queued_at > ORPHAN_AFTER_SECS => {
                // Deleted from the outbox by the person (or never written): not to be sent.
                state.outbox_forget(row.id).map_err(|e| lerr(&e))?;
                ctx.step()?;
            }
            (OutState::Queued, None) => {}
            (OutState::Queued, Some(_)) if !on_demand && row.next_attempt > now => ctx.progress(
                Step::Send,
                format!("{what}: next attempt in {} s", row.next_attempt - now),
                Some(&shown),
                (i as u64, total),
                (0, 0),
            ),
            (OutState::Queued, Some(e)) => {
                if links.smtp_down {
                    continue;
                }
                ctx.progress(Step::Send, format!("sending {what}"), Some(&shown), (i as u64 + 1, total), (0, 0));
                let data = dir.read(e).map_err(|e| lerr(&e))?;
                if submit(ctx, state, smtp_cfg, &mut links, &mut row, &data)? {
                    file(ctx, state, &dir, &mut links, &mut row, e, &data)?;
                }
            }
            (OutState::Accepted | OutState::Filing, Some(e)) => {
                let data = dir.read(e).map_err(|e| lerr(&e))?;
                file(ctx, state, &dir, &mut links, &mut row, e, &data)?;
            }
            (OutState::Accepted | OutState::Filing, None) => {
                // Sent, but its file was taken out of the outbox before it was filed.
                ctx.error(send_error(
                    ctx,
                    &row,
                    format!("{what} was sent, but its file left the outbox before it was filed in Sent"),
                    "nothing to do: it was sent; there is no copy to file".into(),
                    false,
                ));
                row.state = OutState::Filed;
                state.outbox_update(&row).map_err(|e| lerr(&e))?;
                ctx.step()?;
            }
        }
    }
    if let Some(c) = links.smtp.take() {
        c.quit();
    }
    Ok(())
}

fn failed_hint(id: i64) -> String {
    format!("correct the address or the message, then `syncmail send --retry {id}`; or delete it from the outbox")
}

fn maybe_sent_hint(id: i64) -> String {
    format!(
        "it is not sent again on its own: check whether it arrived (ask a recipient, or look in the server's Sent \
         folder), then `syncmail send --sent {id}` if it did, or `syncmail send --retry {id}` to send it again"
    )
}

/// "message 3 to a@x, b@y (Subject)", for progress and errors.
fn describe(row: &OutboxRow) -> String {
    let subject = if row.subject.is_empty() { String::new() } else { format!(" ({:?})", row.subject) };
    format!("message {} to {}{subject}", row.id, row.to.join(", "))
}

fn send_error(ctx: &Ctx<'_>, row: &OutboxRow, message: String, hint: String, retryable: bool) -> SyncError {
    SyncError {
        kind: ErrorKind::Send,
        account: ctx.name().to_string(),
        folder: Some(ctx.account.outbox.clone()),
        message,
        server_text: if row.server_text.is_empty() { None } else { Some(row.server_text.clone()) },
        hint,
        retryable,
    }
}

/// Hands one queued message to the server. Returns whether the server accepted it.
fn submit(
    ctx: &mut Ctx<'_>,
    state: &mut State,
    cfg: &SmtpConfig,
    links: &mut Links<'_>,
    row: &mut OutboxRow,
    data: &[u8],
) -> Result<bool, SyncError> {
    let name = ctx.name().to_string();
    let lerr = |e: rusqlite::Error| errors::local(&name, None, format!("sync state: {e}"));
    if links.smtp.is_none() {
        ctx.progress(Step::Connect, format!("connecting to {}:{}", cfg.host, cfg.port), None, (0, 0), (0, 0));
        match connect(cfg) {
            Ok(c) => links.smtp = Some(c),
            Err(e) => {
                links.smtp_down = true;
                let mut se = match e {
                    Ok(e) => smtp_error(&name, &e),
                    Err(msg) => SyncError {
                        kind: ErrorKind::Config,
                        account: name.clone(),
                        folder: None,
                        message: format!("cannot get the SMTP password: {msg}"),
                        server_text: None,
                        hint: "check the password source in the [smtp] section (or [imap], which it defaults to)"
                            .into(),
                        retryable: false,
                    },
                };
                se.message = format!("cannot send the outbox: {}", se.message);
                ctx.error(se);
                return Ok(false);
            }
        }
    }
    let Some(client) = links.smtp.as_mut() else { return Ok(false) };
    // The copy sent has no Bcc (RFC 5322 §3.6.3); the one filed keeps it.
    let wire = without_fields(data, &["Bcc", "Resent-Bcc"]);
    let env = Envelope { from: row.from.clone(), to: row.to.clone() };
    if let Err(e) = client.send_until_end(&env, &wire) {
        if matches!(e, SmtpError::Transport(_)) {
            links.smtp = None;
            links.smtp_down = true;
        } else if matches!(e, SmtpError::Refused { .. }) && client.reset().is_err() {
            links.smtp = None;
        }
        refused(ctx, state, row, &e)?;
        return Ok(false);
    }
    row.state = OutState::Submitting;
    state.outbox_update(row).map_err(lerr)?;
    ctx.step()?;
    match client.end_data() {
        Ok(sent) => {
            row.state = OutState::Accepted;
            row.accepted_at = outbox::now();
            row.accepted_reply = sent.reply.to_string();
            row.last_error.clear();
            row.server_text.clear();
            state.outbox_update(row).map_err(lerr)?;
            ctx.report.sent += 1;
            ctx.step()?;
            Ok(true)
        }
        Err(e @ SmtpError::Refused { .. }) => {
            // A definite no: nothing was delivered.
            refused(ctx, state, row, &e)?;
            Ok(false)
        }
        Err(e) => {
            // The answer was lost: the row stays `submitting`, reported on every run.
            links.smtp = None;
            links.smtp_down = true;
            ctx.error(send_error(
                ctx,
                row,
                format!(
                    "{} may have been sent: the connection broke after the whole message was handed over, \
                     before the server's answer ({e})",
                    describe(row)
                ),
                maybe_sent_hint(row.id),
                false,
            ));
            Ok(false)
        }
    }
}

/// Records a refusal: a temporary one is queued again for later, a permanent one kept as
/// `failed`. Reports it either way, with the server's words.
fn refused(ctx: &mut Ctx<'_>, state: &mut State, row: &mut OutboxRow, e: &SmtpError) -> Result<(), SyncError> {
    let now = outbox::now();
    row.last_error = e.to_string();
    row.server_text = e.server_text().unwrap_or_default();
    let (message, hint, retryable) = if e.is_transient() {
        row.state = OutState::Queued;
        row.attempts += 1;
        row.next_attempt = now + retry_delay(row.attempts);
        (
            format!("{} was not sent this time: {e}", describe(row)),
            format!(
                "it stays in the outbox and is tried again in {} s, or at once with `syncmail send --flush` \
                 (attempt {} so far)",
                row.next_attempt - now,
                row.attempts
            ),
            true,
        )
    } else {
        row.state = OutState::Failed;
        (format!("{} was refused and is kept in the outbox: {e}", describe(row)), failed_hint(row.id), false)
    };
    let name = ctx.name().to_string();
    state.outbox_update(row).map_err(|e| errors::local(&name, None, format!("sync state: {e}")))?;
    let err = send_error(ctx, row, message, hint, retryable);
    ctx.error(err);
    ctx.step()
}

/// The Sent folder: `sent-folder`, else the one marked `\Sent` (RFC 6154), else one named
/// Sent; created when none exists.
fn sent_folder(account: &AccountConfig, session: &mut Session) -> syncmail_imap::Result<String> {
    let list = session.list()?;
    let found = match &account.sent_folder {
        Some(want) => list.iter().find(|m| &m.display_name == want || &m.far_name == want),
        None => list
            .iter()
            .find(|m| m.attributes.iter().any(|a| a.eq_ignore_ascii_case("\\Sent")))
            .or_else(|| list.iter().find(|m| m.display_name.eq_ignore_ascii_case("Sent"))),
    };
    if let Some(m) = found {
        return Ok(m.far_name.clone());
    }
    let name = account.sent_folder.clone().unwrap_or_else(|| "Sent".into());
    session.create(&name)?;
    Ok(name)
}

/// Files an accepted message in Sent once, then takes it out of the outbox. What cannot
/// be filed now (IMAP unreachable) is reported and left `accepted` for a later run.
fn file(
    ctx: &mut Ctx<'_>,
    state: &mut State,
    dir: &Folder,
    links: &mut Links<'_>,
    row: &mut OutboxRow,
    entry: &Entry,
    data: &[u8],
) -> Result<(), SyncError> {
    let name = ctx.name().to_string();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&name, None, format!("outbox: {e}"));
    if !ctx.account.server_files_sent {
        if links.imap_down {
            return Ok(());
        }
        let copy = lf_to_crlf(data);
        match file_on_server(ctx, state, links, row, &copy) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(FileError::Local(e)) => return Err(e),
            Err(FileError::Imap(e)) => {
                let mut se = errors::from_imap(&name, links.sent_folder.as_deref(), &e);
                se.message = format!("{} was sent but could not be filed in Sent: {}", describe(row), se.message);
                se.hint = format!("it is not sent again; a later run files it ({})", se.hint);
                se.retryable = true;
                ctx.error(se);
                // A broken session is not handed on to the contents sync.
                if e.is_retryable() {
                    *links.imap = None;
                }
                links.imap_down = true;
                return Ok(());
            }
        }
    } else {
        row.state = OutState::Filed;
        state.outbox_update(row).map_err(|e| lerr(&e))?;
        ctx.step()?;
    }
    dir.remove(entry).map_err(|e| lerr(&e))?;
    ctx.step()
}

enum FileError {
    Imap(syncmail_imap::Error),
    Local(SyncError),
}

impl From<syncmail_imap::Error> for FileError {
    fn from(e: syncmail_imap::Error) -> Self {
        FileError::Imap(e)
    }
}

impl From<SyncError> for FileError {
    fn from(e: SyncError) -> Self {
        FileError::Local(e)
    }
}

/// The APPEND to Sent, journaled. `Ok(false)`: not filed now, the error reported.
fn file_on_server(
    ctx: &mut Ctx<'_>,
    state: &mut State,
    links: &mut Links<'_>,
    row: &mut OutboxRow,
    copy: &[u8],
) -> Result<bool, FileError> {
    let name = ctx.name().to_string();
    let lerr = |e: rusqlite::Error| FileError::Local(errors::local(&name, None, format!("sync state: {e}")));
    if links.imap.is_none() {
        ctx.progress(
            Step::Connect,
            format!("connecting to {}:{}", ctx.account.imap.host, ctx.account.imap.port),
            None,
            (0, 0),
            (0, 0),
        );
        match Session::open_traced(&ctx.account.imap, ctx.trace()) {
            Ok(s) => *links.imap = Some(s),
            Err(e) => {
                links.imap_down = true;
                let mut se = errors::from_session(&name, &e);
                se.message = format!("{} was sent but cannot be filed in Sent yet: {}", describe(row), se.message);
                se.hint = format!("it is not sent again; a later run files it ({})", se.hint);
                ctx.error(se);
                return Ok(false);
            }
        }
    }
    let Some(session) = links.imap.as_mut() else { return Ok(false) };
    ctx.progress(Step::Send, format!("filing {} in Sent", describe(row)), None, (0, 0), (0, 0));
    if row.state == OutState::Filing {
        // An APPEND was under way when the last run stopped: did it arrive?
        let sel = session.select(&row.sent_folder, None)?;
        let floor = if sel.uidvalidity == row.sent_uidvalidity { row.sent_uid_floor } else { 1 };
        if let Some(uid) = session.find_appended(floor, &row.message_id, copy, &BTreeSet::new())? {
            row.state = OutState::Filed;
            row.sent_uid = uid;
            state.outbox_update(row).map_err(lerr)?;
            ctx.step()?;
            return Ok(true);
        }
    }
    let folder = match &links.sent_folder {
        Some(f) => f.clone(),
        None => {
            let f = sent_folder(ctx.account, session)?;
            links.sent_folder = Some(f.clone());
            f
        }
    };
    let status = session.status_many(std::slice::from_ref(&folder))?.remove(&folder).transpose()?.unwrap_or_default();
    row.state = OutState::Filing;
    row.sent_folder = folder.clone();
    row.sent_uidvalidity = status.uidvalidity;
    row.sent_uid_floor = status.uidnext.max(1);
    state.outbox_update(row).map_err(lerr)?;
    ctx.step()?;
    let uid = session.append(&folder, status.uidvalidity, Flags::SEEN, copy)?;
    row.state = OutState::Filed;
    row.sent_uid = uid.unwrap_or(0);
    state.outbox_update(row).map_err(lerr)?;
    ctx.report.filed += 1;
    ctx.step()?;
    Ok(true)
}
