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
use syncmail_imap::{Client, ConnectOptions, Error, Flags, Limits, Result, parse_uid_set, quote, uid_set};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxStatus {
    pub messages: u32,
    pub uidnext: u32,
    pub uidvalidity: u32,
    pub highestmodseq: Option<u64>,
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
}

fn flags_of(list: &[String]) -> Flags {
    let mut f = Flags::empty();
    for s in list {
        f.insert_imap(s);
    }
    f
}

fn status_of(items: &[(String, u64)]) -> MailboxStatus {
    let mut s = MailboxStatus::default();
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

/// Refuses names that cannot be sent back in a quoted string.
fn sendable(name: &str) -> bool {
    !name.contains(['\r', '\n', '\0'])
}

impl Session {
    /// Connects, logs in, and enables what the server offers that the sync uses.
    pub fn open(cfg: &ImapConfig) -> std::result::Result<Session, SessionError> {
        let opts = ConnectOptions {
            host: cfg.host.clone(),
            port: cfg.port,
            tls: cfg.tls,
            ca_file: cfg.ca_file.clone(),
            timeout: cfg.timeout,
            limits: Limits::default(),
        };
        let mut client = Client::connect(&opts).map_err(SessionError::Imap)?;
        let password = cfg.password.fetch().map_err(SessionError::Password)?;
        client.login(&cfg.user, &password, cfg.auth_mech).map_err(SessionError::Imap)?;
        let enabled = client.enable(&["QRESYNC", "UTF8=ACCEPT"]).map_err(SessionError::Imap)?;
        let qresync = enabled.iter().any(|e| e.eq_ignore_ascii_case("QRESYNC"));
        let condstore = qresync || client.has("CONDSTORE");
        Ok(Session { client, condstore, qresync, selected: false, unusable_names: Vec::new() })
    }

    pub fn has(&self, cap: &str) -> bool {
        self.client.has(cap)
    }

    pub fn bytes_read(&self) -> u64 {
        self.client.bytes_read()
    }

    fn status_items(&self) -> &'static str {
        if self.condstore { "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ" } else { "MESSAGES UIDNEXT UIDVALIDITY" }
    }

    /// Lists every folder, with status where LIST-STATUS gives it in the same round trip.
    pub fn list(&mut self) -> Result<Vec<Mailbox>> {
        // RFC 6154 §2: a server need not send special-use attributes (\\Sent, \\Trash)
        // unless asked with RETURN (SPECIAL-USE); Dovecot does not.
        let mut returns = Vec::new();
        if self.client.has("SPECIAL-USE") {
            returns.push("SPECIAL-USE".to_string());
        }
        if self.client.has("LIST-STATUS") {
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
                    Untagged::MailboxStatus { name, items } => {
                        statuses.insert(name, status_of(&items));
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
                    status: statuses.get(&e.name).copied(),
                    far_name,
                    display_name,
                    delimiter: e.delimiter,
                    selectable,
                });
            }
        }
        for m in &mut out {
            if m.status.is_none() {
                m.status = statuses.get(m.far_name.as_bytes()).copied();
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
        let mut got: HashMap<Vec<u8>, MailboxStatus> = HashMap::new();
        let mut out = HashMap::new();
        // In windows, so that thousands of folders cannot fill both socket buffers.
        let sendable_names: Vec<&String> = names.iter().filter(|n| sendable(n)).collect();
        for window in sendable_names.chunks(64) {
            let mut tags = Vec::new();
            for n in window {
                let cmd = format!("STATUS {} ({})", quote(n), self.status_items());
                tags.push(((*n).clone(), self.client.send(&cmd)?));
            }
            for (name, tag) in tags {
                let r = self.client.complete(&tag, |u| {
                    if let Untagged::MailboxStatus { name, items } = u {
                        got.insert(name, status_of(&items));
                    }
                    Ok(())
                });
                match r {
                    Ok(_) => {
                        let s = got.get(name.as_bytes()).copied().unwrap_or_default();
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
        let mut tags = Vec::new();
        if old >= 1 {
            match query {
                FlagQuery::Nothing if !need_uids => {}
                FlagQuery::ChangedSince(_) | FlagQuery::Nothing => {
                    if let FlagQuery::ChangedSince(ms) = query {
                        tags.push(self.client.send(&format!("UID FETCH 1:{old} (UID FLAGS) (CHANGEDSINCE {ms})"))?);
                    }
                    if need_uids {
                        let cmd = if self.client.has("ESEARCH") {
                            format!("UID SEARCH RETURN (ALL) UID 1:{old}")
                        } else {
                            format!("UID SEARCH UID 1:{old}")
                        };
                        tags.push(self.client.send(&cmd)?);
                        ch.present = Some(UidRanges::default());
                    }
                }
                FlagQuery::All => {
                    // Without CONDSTORE the full flag listing also tells which UIDs remain.
                    tags.push(self.client.send(&format!("UID FETCH 1:{old} (UID FLAGS)"))?);
                    ch.present = Some(UidRanges::default());
                }
            }
        }
        if list_new {
            tags.push(self.client.send(&format!("UID FETCH {}:* (UID FLAGS RFC822.SIZE)", uidnext.max(1)))?);
        }
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
        let mut refused = Vec::new();
        let wanted: BTreeSet<u32> = uids.iter().copied().collect();
        let chunks: Vec<&[u32]> = uids.chunks(chunk.max(1)).collect();
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = 0;
        while next < chunks.len() || !in_flight.is_empty() {
            while next < chunks.len() && in_flight.len() < window.max(1) {
                let cmd = format!("UID FETCH {} (UID FLAGS BODY.PEEK[])", uid_set(chunks[next]));
                in_flight.push_back(self.client.send(&cmd)?);
                next += 1;
            }
            if let Some(tag) = in_flight.pop_front() {
                let r = self.client.complete(&tag, |u| {
                    if let Untagged::Fetch { data, .. } = u
                        && let (Some(uid), Some(body)) = (data.uid, data.body)
                        && wanted.contains(&uid)
                    {
                        on_message(uid, data.flags.as_deref().map(flags_of), body)?;
                    }
                    Ok(())
                });
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
        let mut out = Vec::new();
        self.client.run("UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", |u| {
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

    /// Creates a folder.
    pub fn create(&mut self, far_name: &str) -> Result<()> {
        if !sendable(far_name) {
            return Err(Error::Protocol(format!("folder name {far_name:?} cannot be sent to the server")));
        }
        self.client.run(&format!("CREATE {}", quote(far_name)), |_| Ok(())).map(|_| ())
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

    /// Adds and removes flags on messages of the selected folder: one pipelined round trip
    /// for all of them. `+FLAGS`/`-FLAGS` leave flags syncmail does not manage (keywords)
    /// as they are.
    pub fn store_flags(&mut self, changes: &[(u32, Flags, Flags)]) -> Result<()> {
        let mut tags = Vec::new();
        for (uid, add, remove) in changes {
            if !add.is_empty() {
                tags.push(self.client.send(&format!("UID STORE {uid} +FLAGS.SILENT ({})", add.to_imap()))?);
            }
            if !remove.is_empty() {
                tags.push(self.client.send(&format!("UID STORE {uid} -FLAGS.SILENT ({})", remove.to_imap()))?);
            }
        }
        self.client.complete_all(&tags, |_| Ok(()))
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

    pub fn logout(self) {
        self.client.logout();
    }
}

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
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Imap(Error),
    #[error("cannot get the password: {0}")]
    Password(String),
}
