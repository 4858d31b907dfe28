//! The far side: what the engine asks of an IMAP server, in the terms of the sync
//! (folder listings, status, changes since a mark, message bodies), over one session.
//!
//! Contract for callers:
//! - Folder names are passed back exactly as [`Mailbox::far_name`] gave them.
//! - [`Session::select`] must precede [`Session::changes`] and [`Session::fetch_bodies`]
//!   on the same folder; those report only on the selected folder.
//! - A server without CONDSTORE, QRESYNC, UIDPLUS, ESEARCH or LIST-STATUS gets the plain
//!   IMAP4rev1 form of each request; the answers mean the same.

use crate::config::{DeletePolicy, ImapConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncmail_imap::parse::{Code, Untagged};
use syncmail_imap::{
    AuthMech, Client, CompressStats, ConnectOptions, Error, Flags, Limits, Result, parse_uid_set, quote, uid_set,
};

/// A folder as the server lists it.
#[derive(Debug, Clone)]
pub struct Mailbox {
    /// The name as the server spells it (modified UTF-7, or UTF-8 after UTF8=ACCEPT).
    pub far_name: String,
    /// The name decoded to UTF-8, for people and for the local path.
    pub display_name: String,
    pub delimiter: Option<char>,
    pub selectable: bool,
    /// LIST attributes, as sent (special-use such as `\\Trash` among them).
    pub attributes: Vec<String>,
    /// From LIST-STATUS, where the server offers it.
    pub status: Option<MailboxStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub messages: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub highestmodseq: Option<u64>,
    /// RFC 8474 MAILBOXID, where the server offers OBJECTID: stays with the folder across
    /// renames.
    pub mailbox_id: Option<String>,
}

/// What SELECT told us, plus what QRESYNC sent with it.
#[derive(Debug, Clone, Default)]
pub struct Selected {
    pub exists: u32,
    pub uidvalidity: u32,
    pub uidnext: Option<u32>,
    /// `None` when the server has no CONDSTORE or answered NOMODSEQ.
    pub highestmodseq: Option<u64>,
    /// QRESYNC: UIDs expunged since the given mark.
    pub vanished: Vec<(u32, u32)>,
    /// QRESYNC: flags of messages changed since the given mark.
    pub changed: BTreeMap<u32, Flags>,
    /// Whether QRESYNC data came with the SELECT.
    pub qresync_used: bool,
    /// RFC 8474 `[MAILBOXID (…)]`, where the server offers OBJECTID.
    pub mailbox_id: Option<String>,
}

pub struct Session {
    client: Client,
    pub condstore: bool,
    pub qresync: bool,
    /// Whether a folder is selected (for the [CLOSED] rule of QRESYNC).
    selected: bool,
    /// Folder names from the last LIST that are not UTF-8 (shown lossily): they cannot be
    /// sent back, so they are reported and skipped.
    pub unusable_names: Vec<String>,
    /// UIDs whose bodies the server sent without being asked (by
    /// [`Session::fetch_bodies_to`]); they were not stored. Taken by the caller to report.
    pub unasked: BTreeSet<u32>,
    /// How long the ENABLE command took, send to answer: the session's round trip with the
    /// server's cheapest work in it. `None` where ENABLE was not sent or enabled nothing.
    pub round_trip: Option<std::time::Duration>,
}

/// The account's secret; `refresh`: after the server refused a token.
pub(crate) fn secret_of(cfg: &ImapConfig, refresh: bool) -> std::result::Result<syncmail_imap::Secret, String> {
    if refresh { cfg.password.refresh().unwrap_or_else(|| cfg.password.fetch()) } else { cfg.password.fetch() }
}

fn flags_of(list: &[String]) -> Flags {
    let mut f = Flags::empty();
    for s in list {
        f.insert_imap(s);
    }
    f
}

fn status_of(items: &[(String, u64)], mailbox_id: Option<String>) -> MailboxStatus {
    let mut s = MailboxStatus { mailbox_id, ..Default::default() };
    for (k, v) in items {
        match k.as_str() {
            "MESSAGES" => s.messages = *v as u32,
            "UIDNEXT" => s.uidnext = *v as u32,
            "UIDVALIDITY" => s.uidvalidity = *v as u32,
            "HIGHESTMODSEQ" => s.highestmodseq = Some(*v),
            _ => {}
        }
    }
    s
}

/// RFC 8474 `objectid`: 1 to 255 of letters, digits, `-` and `_`.
fn is_object_id(s: &str) -> bool {
    (1..=255).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Refuses names that cannot be sent back in a quoted string.
fn sendable(name: &str) -> bool {
    !name.contains(['\r', '\n', '\0'])
}

impl Session {
    /// Connects, logs in, and enables what the server offers that the sync uses.
    pub fn open(cfg: &ImapConfig) -> std::result::Result<Session, SessionError> {
        Session::open_traced(cfg, None)
    }

    /// [`Session::open`], with the protocol (login included, credentials hidden) sent to
    /// `trace`.
    pub fn open_traced(
        cfg: &ImapConfig,
        trace: Option<syncmail_imap::Trace>,
    ) -> std::result::Result<Session, SessionError> {
        Session::open_with(cfg, trace, &mut |refresh| secret_of(cfg, refresh), &|_| {})
    }

    /// [`Session::open_traced`], the secret from `fetch` (asked after the server is known
    /// to accept it; `true`: asked again because the server refused an OAuth token, which
    /// may have expired), and `logged_in` told which secret the server took: a second
    /// connection gets it from there, so that a password command or keyring runs once.
    pub fn open_with(
        cfg: &ImapConfig,
        trace: Option<syncmail_imap::Trace>,
        fetch: &mut dyn FnMut(bool) -> std::result::Result<syncmail_imap::Secret, String>,
        logged_in: &dyn Fn(&syncmail_imap::Secret),
    ) -> std::result::Result<Session, SessionError> {
        Session::log_in(Session::connect(cfg, trace)?, cfg, fetch, logged_in)
    }

    /// The connection of a session, up to the server's greeting (and TLS): nothing of the
    /// account's secret is asked or sent yet. [`Session::log_in`] goes on from there.
    pub fn connect(cfg: &ImapConfig, trace: Option<syncmail_imap::Trace>) -> std::result::Result<Client, SessionError> {
        let opts = ConnectOptions {
            host: cfg.host.clone(),
            port: cfg.port,
            tls: cfg.tls,
            ca_file: cfg.ca_file.clone(),
            timeout: cfg.timeout,
            limits: Limits::default(),
            allow_plaintext: cfg.allow_plaintext,
            trace,
        };
        Client::connect(&opts).map_err(SessionError::Imap)
    }

    /// [`Session::open_with`] on a connection from [`Session::connect`].
    pub fn log_in(
        mut client: Client,
        cfg: &ImapConfig,
        fetch: &mut dyn FnMut(bool) -> std::result::Result<syncmail_imap::Secret, String>,
        logged_in: &dyn Fn(&syncmail_imap::Secret),
    ) -> std::result::Result<Session, SessionError> {
        // Refused before the secret is even fetched (no keyring prompt, no token refresh).
        client.check_may_send_password().map_err(SessionError::Imap)?;
        let secret = fetch(false).map_err(SessionError::Password)?;
        let mech = match cfg.auth_mech {
            // A token goes by the mechanism the server offers; RFC 7628's first.
            AuthMech::Auto if cfg.password.is_oauth() => {
                if client.has("AUTH=OAUTHBEARER") {
                    AuthMech::OAuthBearer
                } else {
                    AuthMech::XOAuth2
                }
            }
            m => m,
        };
        match client.login(&cfg.user, &secret, mech) {
            // A refused token may have expired: the token command runs once more (told to
            // refresh), and the login is tried once more on the same connection.
            Err(Error::Auth { .. }) if cfg.password.is_oauth() => {
                let fresh = fetch(true).map_err(SessionError::Password)?;
                client.login(&cfg.user, &fresh, mech).map_err(SessionError::Imap)?;
                logged_in(&fresh);
            }
            r => {
                r.map_err(SessionError::Imap)?;
                logged_in(&secret);
            }
        }
        // Before ENABLE and everything after it, so that all of the session is compressed.
        client.compress(cfg.compress).map_err(SessionError::Imap)?;
        let asked = std::time::Instant::now();
        let enabled = client.enable(&["QRESYNC", "UTF8=ACCEPT"]).map_err(SessionError::Imap)?;
        let round_trip = (!enabled.is_empty()).then(|| asked.elapsed());
        let qresync = enabled.iter().any(|e| e.eq_ignore_ascii_case("QRESYNC"));
        let condstore = qresync || client.has("CONDSTORE");
        Ok(Session {
            client,
            condstore,
            qresync,
            selected: false,
            unusable_names: Vec::new(),
            unasked: BTreeSet::new(),
            round_trip,
        })
    }

    pub fn has(&self, cap: &str) -> bool {
        self.client.has(cap)
    }

    /// Bytes received from the server so far (as they came: compressed, where
    /// compression is on).
    pub fn bytes_read(&self) -> u64 {
        self.client.bytes_read()
    }

    /// What COMPRESS=DEFLATE carried, where it is on.
    pub fn compress_stats(&self) -> Option<CompressStats> {
        self.client.compress_stats()
    }

    fn status_items(&self) -> &'static str {
        // MAILBOXID is never asked for among these: Cyrus 3.6 then answers it with bytes
        // from nowhere (see `mailbox_ids`).
        if self.condstore { "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ" } else { "MESSAGES UIDNEXT UIDVALIDITY" }
    }

    /// MAILBOXID (RFC 8474) of some folders, where the server offers OBJECTID: one
    /// `STATUS name (MAILBOXID)` each, pipelined, the item alone (Cyrus 3.6.1 sends garbage
    /// for MAILBOXID asked for beside other items). Folders it refuses are left out.
    pub fn mailbox_ids(&mut self, names: &[String]) -> Result<HashMap<String, String>> {
        if !self.client.has("OBJECTID") {
            return Ok(HashMap::new());
        }
        Ok(self
            .status_with(names, "MAILBOXID")?
            .into_iter()
            .filter_map(|(name, s)| Some((name, s.ok()?.mailbox_id.filter(|id| is_object_id(id))?)))
            .collect())
    }

    /// Lists every folder, with status where LIST-STATUS gives it in the same round trip.
    pub fn list(&mut self) -> Result<Vec<Mailbox>> {
        self.list_with(true)
    }

    /// Lists every folder; `status`: with each folder's status, where LIST-STATUS gives it.
    pub fn list_with(&mut self, status: bool) -> Result<Vec<Mailbox>> {
        // RFC 6154 §2: a server need not send special-use attributes (\\Sent, \\Trash)
        // unless asked with RETURN (SPECIAL-USE); Dovecot does not.
        let mut returns = Vec::new();
        if self.client.has("SPECIAL-USE") {
            returns.push("SPECIAL-USE".to_string());
        }
        if status && self.client.has("LIST-STATUS") {
            returns.push(format!("STATUS ({})", self.status_items()));
        }
        let cmd = if returns.is_empty() {
            "LIST \"\" \"*\"".to_string()
        } else {
            format!("LIST \"\" \"*\" RETURN ({})", returns.join(" "))
        };
        let mut out: Vec<Mailbox> = Vec::new();
        let mut statuses: HashMap<Vec<u8>, MailboxStatus> = HashMap::new();
        let mut bad: Vec<String> = Vec::new();
        {
            let client = &mut self.client;
            let mut entries = Vec::new();
            client.run(&cmd, |u| {
                match u {
                    Untagged::List(e) => entries.push(e),
                    Untagged::MailboxStatus { name, items, mailbox_id } => {
                        statuses.insert(name, status_of(&items, mailbox_id));
                    }
                    _ => {}
                }
                Ok(())
            })?;
            for e in entries {
                let selectable = !e
                    .attributes
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case("\\Noselect") || a.eq_ignore_ascii_case("\\NonExistent"));
                let far_name = match String::from_utf8(e.name.clone()) {
                    Ok(s) => s,
                    Err(_) => {
                        bad.push(String::from_utf8_lossy(&e.name).into_owned());
                        continue;
                    }
                };
                // Names that fail to decode are shown raw; the caller refuses them by path.
                let display_name = client.decode_name(&e.name).unwrap_or_else(|_| far_name.clone());
                out.push(Mailbox {
                    attributes: e.attributes.clone(),
                    status: statuses.get(&e.name).cloned(),
                    far_name,
                    display_name,
                    delimiter: e.delimiter,
                    selectable,
                });
            }
        }
        for m in &mut out {
            if m.status.is_none() {
                m.status = statuses.get(m.far_name.as_bytes()).cloned();
            }
        }
        self.unusable_names = bad.into_iter().collect();
        Ok(out)
    }

    /// STATUS for several folders in one round trip (all commands sent, then all answers read).
    pub fn status_many(
        &mut self,
        names: &[String],
    ) -> Result<HashMap<String, std::result::Result<MailboxStatus, Error>>> {
        let items = self.status_items();
        self.status_with(names, items)
    }

    /// `STATUS name (items)` for each of `names`, pipelined in windows; a NO or BAD for
    /// one folder is its answer, not the end of the session.
    fn status_with(
        &mut self,
        names: &[String],
        items: &str,
    ) -> Result<HashMap<String, std::result::Result<MailboxStatus, Error>>> {
        let mut got: HashMap<Vec<u8>, MailboxStatus> = HashMap::new();
        let mut out = HashMap::new();
        // In windows, so that thousands of folders cannot fill both socket buffers.
        let sendable_names: Vec<&String> = names.iter().filter(|n| sendable(n)).collect();
        for window in sendable_names.chunks(COMMANDS_IN_FLIGHT) {
            let cmds: Vec<String> = window.iter().map(|n| format!("STATUS {} ({items})", quote(n))).collect();
            let tags = self.client.send_all(&cmds)?;
            for (name, tag) in window.iter().map(|n| (*n).clone()).zip(tags) {
                let r = self.client.complete(&tag, |u| {
                    if let Untagged::MailboxStatus { name, items, mailbox_id } = u {
                        got.insert(name, status_of(&items, mailbox_id));
                    }
                    Ok(())
                });
                match r {
                    Ok(_) => {
                        let s = got.remove(name.as_bytes()).unwrap_or_default();
                        out.insert(name, Ok(s));
                    }
                    Err(e @ (Error::No { .. } | Error::Bad { .. })) => {
                        out.insert(name, Err(e));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// Selects a folder. With QRESYNC and a known mark, the server also reports what
    /// changed since (RFC 7162 §3.2.5).
    pub fn select(&mut self, far_name: &str, mark: Option<(u32, u64)>) -> Result<Selected> {
        if !sendable(far_name) {
            return Err(Error::No {
                command: "SELECT".into(),
                code: None,
                text: format!("the folder name {far_name:?} holds a line break or NUL and cannot be sent"),
            });
        }
        let mut sel = Selected::default();
        let cmd = match mark {
            Some((uv, ms)) if self.qresync && uv != 0 && ms != 0 => {
                sel.qresync_used = true;
                format!("SELECT {} (QRESYNC ({uv} {ms}))", quote(far_name))
            }
            _ if self.condstore => format!("SELECT {} (CONDSTORE)", quote(far_name)),
            _ => format!("SELECT {}", quote(far_name)),
        };
        let mut nomodseq = false;
        // RFC 7162 §3.2.11: with QRESYNC on, what comes before [CLOSED] still belongs to the
        // folder selected before; none of it may be taken for this one.
        let mut closed = !(self.qresync && self.selected);
        self.selected = false;
        self.client.run(&cmd, |u| {
            if !closed {
                if let Untagged::Status { code: Some(Code::Closed), .. } = u {
                    closed = true;
                }
                return Ok(());
            }
            match u {
                Untagged::Exists(n) => sel.exists = n,
                Untagged::Status { code: Some(code), .. } => match code {
                    Code::UidValidity(v) => sel.uidvalidity = v,
                    Code::UidNext(v) => sel.uidnext = Some(v),
                    Code::HighestModSeq(v) => sel.highestmodseq = Some(v),
                    Code::NoModSeq => nomodseq = true,
                    Code::MailboxId(id) if is_object_id(&id) => sel.mailbox_id = Some(id),
                    _ => {}
                },
                Untagged::Vanished { uids, earlier: true } => {
                    let set = parse_uid_set(&uids)
                        .ok_or_else(|| Error::Protocol(format!("VANISHED with an unreadable UID set: {uids}")))?;
                    sel.vanished.extend(set);
                }
                Untagged::Fetch { data, .. } => {
                    if let (Some(uid), Some(flags)) = (data.uid, data.flags) {
                        sel.changed.insert(uid, flags_of(&flags));
                    }
                }
                _ => {}
            }
            Ok(())
        })?;
        self.selected = true;
        if nomodseq {
            sel.highestmodseq = None;
            sel.qresync_used = false;
        }
        if sel.uidvalidity == 0 {
            // Folder-level: the session itself is fine.
            return Err(Error::No {
                command: "SELECT".into(),
                code: None,
                text: format!("the server sent no UIDVALIDITY for {far_name}, so its UIDs cannot be trusted"),
            });
        }
        Ok(sel)
    }

    /// For the selected folder: flags of known messages (all of them, or those changed since
    /// `since` with CONDSTORE) and the UIDs still present below `uidnext`, plus the listing
    /// of messages from `uidnext` on (UID, size, flags). Requests are pipelined.
    pub fn changes(&mut self, uidnext: u32, query: FlagQuery, need_uids: bool, list_new: bool) -> Result<Changes> {
        let mut ch = Changes::default();
        let old = uidnext.saturating_sub(1);
        let mut cmds = Vec::new();
        if old >= 1 {
            match query {
                FlagQuery::Nothing if !need_uids => {}
                FlagQuery::ChangedSince(_) | FlagQuery::Nothing => {
                    if let FlagQuery::ChangedSince(ms) = query {
                        cmds.push(format!("UID FETCH 1:{old} (UID FLAGS) (CHANGEDSINCE {ms})"));
                    }
                    if need_uids {
                        let cmd = if self.client.has("ESEARCH") {
                            format!("UID SEARCH RETURN (ALL) UID 1:{old}")
                        } else {
                            format!("UID SEARCH UID 1:{old}")
                        };
                        cmds.push(cmd);
                        ch.present = Some(UidRanges::default());
                    }
                }
                FlagQuery::All => {
                    // Without CONDSTORE the full flag listing also tells which UIDs remain.
                    cmds.push(format!("UID FETCH 1:{old} (UID FLAGS)"));
                    ch.present = Some(UidRanges::default());
                }
            }
        }
        if list_new {
            let emailid = if self.client.has("OBJECTID") { " EMAILID" } else { "" };
            cmds.push(format!("UID FETCH {}:* (UID FLAGS RFC822.SIZE{emailid})", uidnext.max(1)));
        }
        let tags = self.client.send_all(&cmds)?;
        let full_listing = query == FlagQuery::All;
        {
            let ch = &mut ch;
            self.client.complete_all(&tags, |u| {
                match u {
                    Untagged::Fetch { data, .. } => {
                        let (Some(uid), Some(flags)) = (data.uid, data.flags) else { return Ok(()) };
                        let flags = flags_of(&flags);
                        if uid >= uidnext {
                            // `N:*` returns the last message even below N (RFC 3501 §6.4.8).
                            if let Some(size) = data.size {
                                ch.new.insert(uid, (size, flags));
                            }
                            if let Some(id) = data.email_id {
                                ch.email_ids.insert(uid, id);
                            }
                        } else {
                            ch.flags.insert(uid, flags);
                            if full_listing && let Some(p) = ch.present.as_mut() {
                                p.add(uid, uid);
                            }
                        }
                    }
                    Untagged::Search(uids) => {
                        if let Some(p) = ch.present.as_mut() {
                            for u in uids {
                                p.add(u, u);
                            }
                        }
                    }
                    Untagged::Esearch { all, .. } => {
                        if let (Some(all), Some(p)) = (all, ch.present.as_mut()) {
                            let set = parse_uid_set(&all)
                                .ok_or_else(|| Error::Protocol(format!("ESEARCH with an unreadable UID set: {all}")))?;
                            for (a, b) in set {
                                p.add(a, b);
                            }
                        }
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        Ok(ch)
    }

    /// Fetches whole messages by UID, pipelining up to `window` commands; `on_message` gets
    /// each message as it arrives (UID, flags, bytes as sent). UIDs the server no longer
    /// has are simply not reported. Data for UIDs not asked for is ignored.
    /// A NO or BAD to one command (a message the server cannot read, say) does not stop
    /// the others; such refusals are returned for the caller to report.
    pub fn fetch_bodies<F>(
        &mut self,
        uids: &[u32],
        chunk: usize,
        window: usize,
        mut on_message: F,
    ) -> Result<Vec<Error>>
    where
        F: FnMut(u32, Option<Flags>, &[u8]) -> std::result::Result<(), Error>,
    {
        self.fetch_bodies_with(uids, chunk, window, None, |uid, flags, body| match body {
            Body::Bytes(b) => on_message(uid, flags, b),
            // Not without a sink; were it to happen, no file stays behind.
            Body::Lf { .. } => Ok(()),
            Body::File { path, .. } => {
                let _ = std::fs::remove_file(path);
                Ok(())
            }
        })
    }

    /// [`Session::fetch_bodies`], with message bodies of `spill.threshold` bytes or more
    /// streamed to a file in `spill.dir` (line ends converted to LF) instead of memory:
    /// `on_message` then gets [`Body::File`], whose file it must move away or delete.
    /// Smaller bodies come as [`Body::Lf`], converted as they were read (one pass over
    /// the bytes instead of a copy as sent and a conversion of that).
    pub fn fetch_bodies_to<F>(
        &mut self,
        uids: &[u32],
        chunk: usize,
        window: usize,
        spill: &Spill,
        on_message: F,
    ) -> Result<Vec<Error>>
    where
        F: FnMut(u32, Option<Flags>, Body<'_>) -> std::result::Result<(), Error>,
    {
        self.fetch_bodies_with(uids, chunk, window, Some(spill), on_message)
    }

    /// The pipelined body fetch: without `spill`, every body as sent ([`Body::Bytes`]).
    fn fetch_bodies_with<F>(
        &mut self,
        uids: &[u32],
        chunk: usize,
        window: usize,
        spill: Option<&Spill>,
        mut on_message: F,
    ) -> Result<Vec<Error>>
    where
        F: FnMut(u32, Option<Flags>, Body<'_>) -> std::result::Result<(), Error>,
    {
        let mut refused = Vec::new();
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let chunks: Vec<&[u32]> = uids.chunks(chunk.max(1)).collect();
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = 0;
        let mut sink = spill.map(|spill| BodySink { spill, current: None, pending_cr: false, buf: Vec::new() });
        while next < chunks.len() || !in_flight.is_empty() {
            while next < chunks.len() && in_flight.len() < window.max(1) {
                let cmd = format!("UID FETCH {} (UID FLAGS BODY.PEEK[])", uid_set(chunks[next]));
                in_flight.push_back(self.client.send(&cmd)?);
                next += 1;
            }
            if let Some(tag) = in_flight.pop_front() {
                let written = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
                let w2 = written.clone();
                let mut handle = sink.as_mut().map(|sink| SinkHandle { sink, out: w2 });
                let unasked = &mut self.unasked;
                let sink_ref = handle.as_mut().map(|h| h as &mut dyn syncmail_imap::LiteralSink);
                let r = self.client.complete_to(&tag, sink_ref, |u| {
                    let taken: Vec<Taken> = written.borrow_mut().drain(..).collect();
                    let mut taken = taken.into_iter();
                    if let Untagged::Fetch { data, .. } = &u
                        && let (Some(uid), Some(_)) = (data.uid, data.body)
                        && !wanted.contains(&uid)
                    {
                        unasked.insert(uid);
                    }
                    if let Untagged::Fetch { data, .. } = u
                        && let (Some(uid), Some(body)) = (data.uid, data.body)
                        && wanted.contains(&uid)
                    {
                        let body = match taken.next() {
                            Some(Taken::File(path, len)) => Body::File { path, len },
                            Some(Taken::Memory(data, len)) => Body::Lf { data, len },
                            None => Body::Bytes(body),
                        };
                        on_message(uid, data.flags.as_deref().map(flags_of), body)?;
                    }
                    // A file nobody took (data not asked for): not kept.
                    for t in taken {
                        remove_taken(t);
                    }
                    Ok(())
                });
                for t in written.borrow_mut().drain(..) {
                    remove_taken(t);
                }
                match r {
                    Ok(_) => {}
                    Err(e @ (Error::No { .. } | Error::Bad { .. })) => refused.push(e),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(refused)
    }

    /// Every message of the selected folder with what identifies it without its body:
    /// (UID, flags, size, Message-ID or "").
    pub fn identities(&mut self) -> Result<Vec<(u32, Flags, u64, String)>> {
        self.fetch_identities("1:*")
    }

    fn fetch_identities(&mut self, set: &str) -> Result<Vec<(u32, Flags, u64, String)>> {
        let mut out = Vec::new();
        let cmd = format!("UID FETCH {set} (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
        self.client.run(&cmd, |u| {
            if let Untagged::Fetch { data, .. } = u
                && let (Some(uid), Some(size)) = (data.uid, data.size)
            {
                let flags = data.flags.as_deref().map(flags_of).unwrap_or_default();
                let id = data.header.and_then(|h| crate::engine::message_header(h, "Message-ID")).unwrap_or_default();
                out.push((uid, flags, size, id));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Which of `uids` the selected folder still has.
    pub fn still_there(&mut self, uids: &[u32]) -> Result<BTreeSet<u32>> {
        let mut out = BTreeSet::new();
        if uids.is_empty() {
            return Ok(out);
        }
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        self.client.run(&format!("UID SEARCH UID {}", uid_set(uids)), |u| {
            if let Untagged::Search(v) = u {
                out.extend(v.into_iter().filter(|x| wanted.contains(x)));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Uploads a message (CRLF text) with its flags. Returns its UID where the server says
    /// (APPENDUID, RFC 4315) and the UIDVALIDITY matches `uidvalidity`; `None` otherwise.
    pub fn append(&mut self, far_name: &str, uidvalidity: u32, flags: Flags, message: &[u8]) -> Result<Option<u32>> {
        if !sendable(far_name) {
            return Err(Error::Protocol(format!("folder name {far_name:?} cannot be sent to the server")));
        }
        let done = self.client.append(&quote(far_name), &flags.to_imap(), message)?;
        Ok(match done.code {
            Some(Code::AppendUid(v, uids)) if v == uidvalidity => uids.parse().ok(),
            _ => None,
        })
    }

    /// Finds a message this client appended, in the selected folder, among UIDs at or
    /// above `floor` and not in `exclude`: by Message-ID (where it has one) and size, then
    /// by content where several candidates remain. `message` is the CRLF text sent.
    pub fn find_appended(
        &mut self,
        floor: u32,
        message_id: &str,
        message: &[u8],
        exclude: &BTreeSet<u32>,
    ) -> Result<Option<u32>> {
        let floor = floor.max(1);
        let mut candidates: BTreeSet<u32> = BTreeSet::new();
        let search = if message_id.is_empty() || !message_id.is_ascii() || message_id.contains(['\r', '\n']) {
            format!("UID SEARCH UID {floor}:*")
        } else {
            format!("UID SEARCH UID {floor}:* HEADER Message-ID {}", quote(message_id))
        };
        self.client.run(&search, |u| {
            if let Untagged::Search(uids) = u {
                candidates.extend(uids.into_iter().filter(|u| *u >= floor));
            }
            Ok(())
        })?;
        candidates.retain(|u| !exclude.contains(u));
        if candidates.is_empty() {
            return Ok(None);
        }
        // Same size first (cheap), then the same bytes.
        let mut sized = Vec::new();
        let want = message.len() as u64;
        self.client.run(
            &format!("UID FETCH {} (UID RFC822.SIZE)", uid_set(&candidates.iter().copied().collect::<Vec<_>>())),
            |u| {
                if let Untagged::Fetch { data, .. } = u
                    && let (Some(uid), Some(size)) = (data.uid, data.size)
                    && size == want
                    && candidates.contains(&uid)
                {
                    sized.push(uid);
                }
                Ok(())
            },
        )?;
        sized.sort_unstable();
        let mut found = None;
        if !sized.is_empty() {
            self.client.run(&format!("UID FETCH {} (UID BODY.PEEK[])", uid_set(&sized)), |u| {
                if let Untagged::Fetch { data, .. } = u
                    && let (Some(uid), Some(body)) = (data.uid, data.body)
                    && body == message
                    && found.is_none_or(|f| uid < f)
                {
                    found = Some(uid);
                }
                Ok(())
            })?;
        }
        Ok(found)
    }

    /// Adds and removes flags on messages of the selected folder. The messages given the
    /// same change go in one command (`UID STORE 3,7:9 +FLAGS.SILENT (\Seen)`), up to 500
    /// of them, so that marking a whole folder read is a few commands, not one per message;
    /// the commands are pipelined, 64 at a time (neither side's buffers fill while the
    /// other is not reading). `+FLAGS`/`-FLAGS` leave flags syncmail does not
    /// manage (keywords) as they are.
    pub fn store_flags(&mut self, changes: &[(u32, Flags, Flags)]) -> Result<()> {
        let mut groups: BTreeMap<(char, String), Vec<u32>> = BTreeMap::new();
        for (uid, add, remove) in changes {
            if !add.is_empty() {
                groups.entry(('+', add.to_imap())).or_default().push(*uid);
            }
            if !remove.is_empty() {
                groups.entry(('-', remove.to_imap())).or_default().push(*uid);
            }
        }
        let mut cmds = Vec::new();
        for ((sign, flags), mut uids) in groups {
            uids.sort_unstable();
            uids.dedup();
            for part in uids.chunks(STORE_UIDS) {
                cmds.push(format!("UID STORE {} {sign}FLAGS.SILENT ({flags})", uid_set(part)));
            }
        }
        let mut first_refusal = None;
        for window in cmds.chunks(COMMANDS_IN_FLIGHT) {
            let tags = self.client.send_all(window)?;
            match self.client.complete_all(&tags, |_| Ok(())) {
                Err(e @ (Error::No { .. } | Error::Bad { .. })) => {
                    first_refusal.get_or_insert(e);
                }
                r => r?,
            }
        }
        first_refusal.map_or(Ok(()), Err)
    }

    /// Deletes messages of the selected folder by `policy`. Returns a warning where the
    /// policy could not be carried out in full (the messages are then marked \Deleted).
    pub fn delete(&mut self, uids: &[u32], policy: DeletePolicy, trash: Option<&str>) -> Result<Option<String>> {
        if uids.is_empty() {
            return Ok(None);
        }
        let set = uid_set(uids);
        if policy == DeletePolicy::Trash {
            let Some(trash) = trash.filter(|t| sendable(t)) else {
                self.client.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), |_| Ok(()))?;
                return Ok(Some("no Trash folder was found on the server; the messages were marked \\Deleted".into()));
            };
            if self.client.has("MOVE") {
                self.client.run(&format!("UID MOVE {set} {}", quote(trash)), |_| Ok(()))?;
                return Ok(None);
            }
            self.client.run(&format!("UID COPY {set} {}", quote(trash)), |_| Ok(()))?;
        }
        self.client.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), |_| Ok(()))?;
        if policy == DeletePolicy::Flag {
            return Ok(None);
        }
        if self.client.has("UIDPLUS") {
            self.client.run(&format!("UID EXPUNGE {set}"), |_| Ok(()))?;
            return Ok(None);
        }
        // Without UIDPLUS, EXPUNGE removes every \Deleted message of the folder: only when
        // those are exactly ours.
        let mut deleted = BTreeSet::new();
        self.client.run("UID SEARCH DELETED", |u| {
            if let Untagged::Search(v) = u {
                deleted.extend(v);
            }
            Ok(())
        })?;
        let ours: BTreeSet<u32> = uids.iter().copied().collect();
        if deleted.is_subset(&ours) {
            self.client.run("EXPUNGE", |_| Ok(()))?;
            Ok(None)
        } else {
            Ok(Some(
                "the server lacks UIDPLUS and other messages are marked \\Deleted too; the messages were marked \\Deleted, not expunged".into(),
            ))
        }
    }

    /// The server's spelling of a UTF-8 folder name: as is after UTF8=ACCEPT, else in
    /// modified UTF-7.
    pub fn encode_name(&self, display_name: &str) -> String {
        if self.client.utf8_names() { display_name.to_string() } else { syncmail_imap::utf7::encode(display_name) }
    }

    /// Whether the server lists a folder of this exact name (`LIST "" name`).
    pub fn exists(&mut self, far_name: &str) -> Result<bool> {
        if !sendable(far_name) {
            return Ok(false);
        }
        let mut found = false;
        self.client.run(&format!("LIST \"\" {}", quote(far_name)), |u| {
            if let Untagged::List(e) = u
                && e.name == far_name.as_bytes()
                && !e.attributes.iter().any(|a| a.eq_ignore_ascii_case("\\NonExistent"))
            {
                found = true;
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Whether a folder the server has just refused to open is gone from it: not listed,
    /// or no longer listed after a short pause. Dovecot removes a deleted folder's
    /// directory before its folder list, so for a few milliseconds LIST still shows a
    /// folder that SELECT finds deleted ("Mailbox was deleted under us"). A folder still
    /// listed after the pauses (about a quarter of a second in all) is there and refused.
    pub fn gone_after_refusal(&mut self, far_name: &str) -> Result<bool> {
        for pause in [0, 50, 200] {
            std::thread::sleep(std::time::Duration::from_millis(pause));
            if !self.exists(far_name)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The names of the subscribed folders (LSUB).
    pub fn subscribed(&mut self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        self.client.run("LSUB \"\" \"*\"", |u| {
            if let Untagged::Lsub(e) = u
                && let Ok(n) = String::from_utf8(e.name)
            {
                out.insert(n);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs a folder command (CREATE, DELETE, RENAME …) whose arguments are folder names.
    fn folder_command(&mut self, verb: &str, names: &[&str]) -> Result<()> {
        if let Some(bad) = names.iter().find(|n| !sendable(n)) {
            return Err(Error::No {
                command: verb.into(),
                code: None,
                text: format!("the folder name {bad:?} holds a line break or NUL and cannot be sent"),
            });
        }
        let args: Vec<String> = names.iter().map(|n| quote(n)).collect();
        // A folder command on the selected folder would leave the session in a folder that
        // is gone or renamed: leave it first.
        if self.selected && verb != "CREATE" {
            self.client.run("UNSELECT", |_| Ok(())).or_else(|_| self.client.run("CLOSE", |_| Ok(())))?;
            self.selected = false;
        }
        self.client.run(&format!("{verb} {}", args.join(" ")), |_| Ok(()))?;
        Ok(())
    }

    /// Creates a folder, and subscribes it.
    pub fn create(&mut self, far_name: &str) -> Result<()> {
        self.folder_command("CREATE", &[far_name])?;
        // Subscribed, as a mail client creating a folder would do; a refusal is harmless.
        let _ = self.client.run(&format!("SUBSCRIBE {}", quote(far_name)), |_| Ok(()));
        Ok(())
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.folder_command("RENAME", &[from, to])?;
        let _ = self.client.run(&format!("SUBSCRIBE {}", quote(to)), |_| Ok(()));
        let _ = self.client.run(&format!("UNSUBSCRIBE {}", quote(from)), |_| Ok(()));
        Ok(())
    }

    pub fn delete_folder(&mut self, far_name: &str) -> Result<()> {
        self.folder_command("DELETE", &[far_name])?;
        let _ = self.client.run(&format!("UNSUBSCRIBE {}", quote(far_name)), |_| Ok(()));
        Ok(())
    }

    /// Moves messages of the selected folder to `to` (MOVE, else COPY and expunge), and
    /// returns the destination's UIDVALIDITY with old UID → new UID where the server says
    /// (COPYUID, RFC 4315).
    pub fn move_messages(&mut self, uids: &[u32], to: &str) -> Result<Option<(u32, HashMap<u32, u32>)>> {
        if uids.is_empty() {
            return Ok(None);
        }
        if !sendable(to) {
            return Err(Error::Protocol(format!("folder name {to:?} cannot be sent to the server")));
        }
        let set = uid_set(uids);
        let copyuid = |code: Option<Code>| match code {
            Some(Code::CopyUid(v, src, dst)) => {
                let (src, dst) = (parse_uid_set(&src)?, parse_uid_set(&dst)?);
                let src: Vec<u32> = src.into_iter().flat_map(|(a, b)| a..=b).collect();
                let dst: Vec<u32> = dst.into_iter().flat_map(|(a, b)| a..=b).collect();
                (src.len() == dst.len()).then(|| (v, src.into_iter().zip(dst).collect()))
            }
            _ => None,
        };
        if self.client.has("MOVE") {
            // RFC 6851: COPYUID comes in an untagged OK before the expunges.
            let mut code = None;
            let done = self.client.run(&format!("UID MOVE {set} {}", quote(to)), |u| {
                if let Untagged::Status { code: Some(c @ Code::CopyUid(..)), .. } = u {
                    code = Some(c);
                }
                Ok(())
            })?;
            return Ok(copyuid(code.or(done.code)));
        }
        let done = self.client.run(&format!("UID COPY {set} {}", quote(to)), |_| Ok(()))?;
        self.client.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"), |_| Ok(()))?;
        if self.client.has("UIDPLUS") {
            self.client.run(&format!("UID EXPUNGE {set}"), |_| Ok(()))?;
        }
        Ok(copyuid(done.code))
    }

    /// The flags of some messages of the selected folder.
    pub fn current_flags(&mut self, uids: &[u32]) -> Result<HashMap<u32, Flags>> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self.fetch_identities(&uid_set(uids))?.into_iter().map(|(uid, flags, ..)| (uid, flags)).collect())
    }

    /// Message-ID and size of some messages of the selected folder: UID → (size, id).
    pub fn identities_of(&mut self, uids: &[u32]) -> Result<HashMap<u32, (u64, String)>> {
        if uids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self.fetch_identities(&uid_set(uids))?.into_iter().map(|(uid, _, size, id)| (uid, (size, id))).collect())
    }

    /// Fetches the header sections of messages by UID (`BODY.PEEK[HEADER]`, which leaves
    /// `\Seen` alone), `chunk` UIDs per command; `on_header` gets (UID, flags, header as
    /// sent) for each. Like [`Session::fetch_bodies`]: UIDs gone are not reported, data not
    /// asked for is noted in `unasked`, and a NO or BAD to one command is returned, not
    /// fatal.
    pub fn fetch_headers<F>(&mut self, uids: &[u32], chunk: usize, mut on_header: F) -> Result<Vec<Error>>
    where
        F: FnMut(u32, Option<Flags>, &[u8]) -> std::result::Result<(), Error>,
    {
        let mut refused = Vec::new();
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        for part in uids.chunks(chunk.max(1)) {
            let unasked = &mut self.unasked;
            let r = self.client.run(&format!("UID FETCH {} (UID FLAGS BODY.PEEK[HEADER])", uid_set(part)), |u| {
                if let Untagged::Fetch { data, .. } = u
                    && let (Some(uid), Some(header)) = (data.uid, data.header)
                {
                    if wanted.contains(&uid) {
                        on_header(uid, data.flags.as_deref().map(flags_of), header)?;
                    } else {
                        unasked.insert(uid);
                    }
                }
                Ok(())
            });
            match r {
                Ok(_) => {}
                Err(e @ (Error::No { .. } | Error::Bad { .. })) => refused.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    /// Opens a folder read-only (EXAMINE), to watch it with [`Session::idle`].
    pub fn examine(&mut self, far_name: &str) -> Result<()> {
        if !sendable(far_name) {
            return Err(Error::Protocol(format!("the folder name {far_name:?} cannot be sent")));
        }
        self.selected = false;
        self.client.run(&format!("EXAMINE {}", quote(far_name)), |_| Ok(()))?;
        self.selected = true;
        Ok(())
    }

    /// Waits with IDLE (RFC 2177) on the examined folder until the server reports a
    /// change (returns true), `stop` says so or `max` passes (false). See
    /// [`Client::idle`].
    pub fn idle(
        &mut self,
        max: std::time::Duration,
        poll: std::time::Duration,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        self.client.idle(max, poll, stop)
    }

    /// NOTIFY SET (RFC 5465) with `events` (the text after `SET`). Untagged responses
    /// that come with its completion go to `on`. A refusal is `Error::No`/`Error::Bad`.
    pub fn notify_set(&mut self, events: &str, on: &mut dyn FnMut(&Untagged<'_>)) -> Result<()> {
        self.client.run(&format!("NOTIFY SET {events}"), |u| {
            on(&u);
            Ok(())
        })?;
        Ok(())
    }

    /// IDLE that hands every untagged response to `on` (which says whether it ends the
    /// IDLE); see [`syncmail_imap::Client::idle_with`].
    pub fn idle_with(
        &mut self,
        max: std::time::Duration,
        poll: std::time::Duration,
        stop: &dyn Fn() -> bool,
        on: &mut dyn FnMut(&Untagged<'_>) -> bool,
    ) -> Result<bool> {
        self.client.idle_with(max, poll, stop, on)
    }

    pub fn logout(self) {
        self.client.logout();
    }
}

/// Messages per `UID STORE` command of [`Session::store_flags`]: the UID set of 500
/// scattered messages is at most about 5.5 KB, well within any server's command line
/// (Dovecot's limit is 64 KB).
const STORE_UIDS: usize = 500;

/// Pipelined commands sent before their answers are read (STATUS, `UID STORE`): enough
/// for one round trip to carry many, few enough that neither side's socket buffers fill
/// while the other is not reading.
const COMMANDS_IN_FLIGHT: usize = 64;

/// A set of UIDs kept as ranges, so that a server's `1:4294967295` costs nothing.
#[derive(Debug, Default, Clone)]
pub struct UidRanges(Vec<(u32, u32)>);

impl UidRanges {
    pub fn add(&mut self, a: u32, b: u32) {
        self.0.push((a.min(b), a.max(b)));
    }
    pub fn contains(&mut self, uid: u32) -> bool {
        self.normalize();
        let i = self.0.partition_point(|(_, b)| *b < uid);
        self.0.get(i).is_some_and(|(a, _)| *a <= uid)
    }
    fn normalize(&mut self) {
        if self.0.windows(2).all(|w| w[0].1 < w[1].0) {
            return;
        }
        self.0.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(self.0.len());
        for (a, b) in self.0.drain(..) {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.0 = out;
    }
}

/// Which flags [`Session::changes`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagQuery {
    /// None (QRESYNC already told, or nothing changed).
    Nothing,
    /// Those changed since this mod-sequence (CONDSTORE).
    ChangedSince(u64),
    /// All of them (no CONDSTORE); this also tells which UIDs remain.
    All,
}

/// What [`Session::changes`] found.
#[derive(Debug, Default)]
pub struct Changes {
    /// Flags of known messages reported (all, or changed-since).
    pub flags: BTreeMap<u32, Flags>,
    /// UIDs below the old UIDNEXT still on the server, when asked for.
    pub present: Option<UidRanges>,
    /// Messages from the old UIDNEXT on: UID → (size, flags).
    pub new: BTreeMap<u32, (u64, Flags)>,
    /// Their EMAILID (RFC 8474), where the server offers OBJECTID.
    pub email_ids: HashMap<u32, String>,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Imap(Error),
    #[error("cannot get the password: {0}")]
    Password(String),
}

/// Where [`Session::fetch_bodies_to`] streams large message bodies.
#[derive(Debug, Clone)]
pub struct Spill {
    /// A directory on the file system the message will end up on (the folder's `tmp/`).
    pub dir: std::path::PathBuf,
    /// Bodies of at least this many bytes (as announced) go to a file.
    pub threshold: u64,
}

/// A message body as [`Session::fetch_bodies_to`] hands it over.
#[derive(Debug)]
pub enum Body<'a> {
    /// In memory, as sent (CRLF line ends): a body the server sent other than as a literal.
    Bytes(&'a [u8]),
    /// In memory, line ends already LF (converted as it was read, without a copy as
    /// sent); `len` is the size as sent.
    Lf { data: Vec<u8>, len: u64 },
    /// Streamed to this file, line ends already LF; `len` is the size as sent.
    File { path: std::path::PathBuf, len: u64 },
}

/// A body taken and not handed over: its file, if any, removed.
fn remove_taken(t: Taken) {
    if let Taken::File(p, _) = t {
        let _ = std::fs::remove_file(p);
    }
}

/// Takes `BODY[]` literals as they are read: converted to LF line ends into memory, or,
/// at the threshold and above, into files in the spill directory.
struct BodySink<'a> {
    spill: &'a Spill,
    /// The literal being taken, and its size as announced.
    current: Option<(Taking, u64)>,
    pending_cr: bool,
    buf: Vec<u8>,
}

enum Taking {
    File(std::fs::File, std::path::PathBuf),
    Memory(Vec<u8>),
}

/// A literal the sink took whole, in the order read.
enum Taken {
    File(std::path::PathBuf, u64),
    Memory(Vec<u8>, u64),
}

impl Drop for BodySink<'_> {
    /// A body cut short (the connection broke, the disk filled) leaves no file behind.
    fn drop(&mut self) {
        if let Some((Taking::File(_, p), _)) = self.current.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The sink as the client sees it, passing the bodies taken to the response's handler.
struct SinkHandle<'a, 'b> {
    sink: &'a mut BodySink<'b>,
    out: std::rc::Rc<std::cell::RefCell<Vec<Taken>>>,
}

impl syncmail_imap::LiteralSink for SinkHandle<'_, '_> {
    fn wants(&mut self, line: &[u8], len: u64) -> bool {
        // Only the body of an untagged FETCH, each then handed to the FETCH's handler.
        let body = line.starts_with(b"* ") && {
            let head = &line[..line.iter().rposition(|&b| b == b'{').unwrap_or(0)];
            head.trim_ascii_end().to_ascii_uppercase().ends_with(b"BODY[]")
        };
        if !body {
            return false;
        }
        self.sink.pending_cr = false;
        let in_memory = || Taking::Memory(Vec::with_capacity(len.min(self.sink.spill.threshold) as usize));
        let taking = if len < self.sink.spill.threshold {
            in_memory()
        } else {
            let path = self.sink.spill.dir.join(format!("{}.part", syncmail_maildir::new_unique()));
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => Taking::File(f, path),
                // Cannot write there: into memory; staging will say why.
                Err(_) => in_memory(),
            }
        };
        self.sink.current = Some((taking, len));
        true
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let s = &mut *self.sink;
        match s.current.as_mut() {
            None => Ok(()),
            Some((Taking::Memory(data), _)) => {
                syncmail_maildir::crlf_to_lf_piece_onto(chunk, &mut s.pending_cr, data);
                Ok(())
            }
            Some((Taking::File(f, _), _)) => {
                syncmail_maildir::crlf_to_lf_piece(chunk, &mut s.pending_cr, &mut s.buf);
                f.write_all(&s.buf)
            }
        }
    }

    fn finish(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let s = &mut *self.sink;
        let cr = std::mem::take(&mut s.pending_cr);
        let taken = match s.current.take() {
            None => return Ok(()),
            Some((Taking::Memory(mut data), len)) => {
                if cr {
                    data.push(b'\r');
                }
                Taken::Memory(data, len)
            }
            Some((Taking::File(mut f, path), len)) => {
                if cr && let Err(e) = f.write_all(b"\r") {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                Taken::File(path, len)
            }
        };
        self.out.borrow_mut().push(taken);
        Ok(())
    }
}
