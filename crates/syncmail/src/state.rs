//! Sync state in SQLite: per folder the server's UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ as
//! last agreed, per message the pair (server UID ↔ Maildir unique name) with the flags
//! both sides last agreed on.
//!
//! Durability: WAL with `synchronous = FULL`, so a committed transaction survives a crash.
//! The engine writes and fsyncs message files *before* committing rows that point at them,
//! and records a download as `pending` *before* writing its file, so a crash in between
//! leaves a row that the next run resolves (adopt the file if it is there, else forget it)
//! instead of a file nobody knows about.

use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use syncmail_imap::Flags;

pub type Result<T> = std::result::Result<T, rusqlite::Error>;

/// Migrations, append-only: entry i takes the schema from version i to i+1.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE folders (
    id INTEGER PRIMARY KEY,
    -- the name as the server sends it (modified UTF-7 or UTF-8), so commands use it as is
    far_name TEXT NOT NULL UNIQUE,
    -- the UTF-8 name shown to people
    display_name TEXT NOT NULL,
    -- the folder's directory relative to the Maildir root
    near_path TEXT NOT NULL UNIQUE,
    delimiter TEXT NOT NULL DEFAULT '',
    uidvalidity INTEGER NOT NULL DEFAULT 0,
    -- every server UID below this has been seen and is either in messages or gone
    uidnext INTEGER NOT NULL DEFAULT 1,
    highestmodseq INTEGER NOT NULL DEFAULT 0,
    -- the server's message count when last in agreement
    far_count INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE messages (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    -- the Maildir unique name (the file name before ':2,')
    near_id TEXT NOT NULL,
    -- flags both sides agreed on last (syncmail_imap::Flags bits)
    flags INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    -- 1 while a download is under way: the file may or may not exist yet
    pending INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (folder_id, uid)
) STRICT;
CREATE INDEX messages_near ON messages(folder_id, near_id);
"#,
    r#"
-- Uploads under way: journaled before the APPEND is sent, removed when its UID is known.
CREATE TABLE appends (
    folder_id INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    near_id TEXT NOT NULL,
    -- flags sent with the APPEND
    flags INTEGER NOT NULL DEFAULT 0,
    -- the size as sent (CRLF line ends) and the Message-ID, to find the message again
    size INTEGER NOT NULL DEFAULT 0,
    message_id TEXT NOT NULL DEFAULT '',
    -- a UID floor: the message, if it arrived, has a UID at or above this
    uid_floor INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (folder_id, near_id)
) STRICT;
"#,
    r#"
-- The mtimes of cur/ and new/ (ns, "cur,new") when the Maildir last held exactly what the
-- state agreed on; '' when unknown or too fresh to trust. Equal mtimes: nothing to scan.
ALTER TABLE folders ADD COLUMN near_mtimes TEXT NOT NULL DEFAULT '';
"#,
    r#"
-- 1 once the server accepted the APPEND but the message could not be found again: it is
-- never sent a second time.
ALTER TABLE appends ADD COLUMN sent INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- A folder rename under way: the names before it, '' when none. Set in the same
-- transaction as the new names, before the rename is carried out on the other side, so
-- that a crash in between is finished by the next run instead of read as two folders.
ALTER TABLE folders ADD COLUMN prev_far_name TEXT NOT NULL DEFAULT '';
ALTER TABLE folders ADD COLUMN prev_near_path TEXT NOT NULL DEFAULT '';
-- The Message-ID of each message ('' when it has none or is not known), to recognize a
-- message moved between folders without transferring it again.
ALTER TABLE messages ADD COLUMN message_id TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_by_near_id ON messages(near_id);
CREATE INDEX messages_by_identity ON messages(size, message_id) WHERE message_id != '';
-- Moves on the server under way (a message moved locally from one folder to another):
-- journaled before UID MOVE is sent, removed with the commit that records its new UID.
CREATE TABLE moves (
    from_folder INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    uid INTEGER NOT NULL,
    to_folder INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    -- the message's file in the destination folder
    near_id TEXT NOT NULL,
    flags INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    message_id TEXT NOT NULL DEFAULT '',
    -- the destination's UIDNEXT before the move: the message arrives at or above it
    uid_floor INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (from_folder, uid)
) STRICT;
"#,
    r#"
-- OBJECTID (RFC 8474), where the server offers it: MAILBOXID stays with a folder across
-- renames, EMAILID with a message across moves and copies. '' when not known.
ALTER TABLE folders ADD COLUMN mailbox_id TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN email_id TEXT NOT NULL DEFAULT '';
CREATE INDEX messages_by_email_id ON messages(email_id) WHERE email_id != '';
"#,
    r#"
-- Outgoing mail: one row per message of the outbox (by its Maildir unique name), moving
-- queued → submitting → accepted → filing → filed, or to failed. Each change is one
-- committed statement, made before the step it announces (see engine/outgoing.rs).
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY,
    near_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL DEFAULT 'queued',
    -- the envelope: MAIL FROM and the RCPT TO addresses, one per line
    env_from TEXT NOT NULL DEFAULT '',
    env_to TEXT NOT NULL DEFAULT '',
    -- to show the queue and to find the filed copy again
    message_id TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    queued_at INTEGER NOT NULL DEFAULT 0,
    -- temporary failures so far, and no new attempt before next_attempt (unix seconds)
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    -- the last failure, and the server's words
    last_error TEXT NOT NULL DEFAULT '',
    server_text TEXT NOT NULL DEFAULT '',
    -- the server's acceptance
    accepted_at INTEGER NOT NULL DEFAULT 0,
    accepted_reply TEXT NOT NULL DEFAULT '',
    -- filing in Sent: the folder, its UIDVALIDITY and a UID floor journaled before the
    -- APPEND; the UID once known (0: filed, UID unknown)
    sent_folder TEXT NOT NULL DEFAULT '',
    sent_uidvalidity INTEGER NOT NULL DEFAULT 0,
    sent_uid_floor INTEGER NOT NULL DEFAULT 0,
    sent_uid INTEGER NOT NULL DEFAULT 0
) STRICT;
"#,
    r#"
-- HEADERS_ONLY and max-size: 1 while the message's file is a placeholder (the server's
-- header and a short note), its body not downloaded yet. `size` stays the server's size
-- of the whole message. A placeholder is never a local copy of a message moved on the
-- server, and never uploaded.
ALTER TABLE messages ADD COLUMN placeholder INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Downloads journaled but not finished are few (none between runs, normally): a partial
-- index finds them without reading every row of a folder, which a sync with nothing to do
-- would otherwise pay for each folder.
CREATE INDEX messages_pending ON messages(folder_id) WHERE pending = 1;
"#,
    r#"
-- Placeholders are few too (headers-only folders aside): the folder's placeholders are
-- looked up whenever the server expunges one of its messages, which read every row of the
-- folder without this index.
CREATE INDEX messages_placeholder ON messages(folder_id) WHERE placeholder = 1;
"#,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRow {
    pub id: i64,
    pub far_name: String,
    pub display_name: String,
    pub near_path: String,
    pub delimiter: Option<char>,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub far_count: u32,
    /// See the `near_mtimes` column.
    pub near_mtimes: String,
    /// A rename under way: the far name and the local path before it ('' when none).
    pub prev_far_name: String,
    pub prev_near_path: String,
    /// The server's MAILBOXID ('' when not offered).
    pub mailbox_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub uid: u32,
    pub near_id: String,
    pub flags: Flags,
    pub size: u64,
    pub pending: bool,
}

/// An upload under way (see the `appends` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRow {
    pub near_id: String,
    pub flags: Flags,
    pub size: u64,
    pub message_id: String,
    pub uid_floor: u32,
    /// The server accepted it; it is never sent again.
    pub sent: bool,
}

/// A move on the server under way (see the `moves` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRow {
    pub from_folder: i64,
    pub uid: u32,
    pub to_folder: i64,
    pub near_id: String,
    pub flags: Flags,
    pub size: u64,
    pub message_id: String,
    pub uid_floor: u32,
}

/// Where a message of the outbox is on its way (see the `outbox` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// Waiting to be sent (again, after a temporary failure).
    Queued,
    /// The whole message went to the server, the final `.` is being sent: if a run finds
    /// this, it cannot know whether the server accepted it.
    Submitting,
    /// The server accepted it; it is never sent again. Not filed in Sent yet.
    Accepted,
    /// An APPEND to the Sent folder is under way (floor journaled).
    Filing,
    /// Sent and filed (or the server files it): done.
    Filed,
    /// The server refused it for good (5xx); kept until the person acts.
    Failed,
}

impl OutState {
    pub fn name(self) -> &'static str {
        match self {
            OutState::Queued => "queued",
            OutState::Submitting => "submitting",
            OutState::Accepted => "accepted",
            OutState::Filing => "filing",
            OutState::Filed => "filed",
            OutState::Failed => "failed",
        }
    }
    fn parse(s: &str) -> OutState {
        match s {
            "submitting" => OutState::Submitting,
            "accepted" => OutState::Accepted,
            "filing" => OutState::Filing,
            "filed" => OutState::Filed,
            "failed" => OutState::Failed,
            _ => OutState::Queued,
        }
    }
}

/// A message of the outbox and where it is on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// A small number people can type (`syncmail send --retry ID`); 0 before insertion.
    pub id: i64,
    /// The Maildir unique name of its file in the outbox folder.
    pub near_id: String,
    pub state: OutState,
    pub from: String,
    pub to: Vec<String>,
    pub message_id: String,
    pub subject: String,
    pub queued_at: i64,
    pub attempts: u32,
    pub next_attempt: i64,
    pub last_error: String,
    pub server_text: String,
    pub accepted_at: i64,
    pub accepted_reply: String,
    pub sent_folder: String,
    pub sent_uidvalidity: u32,
    pub sent_uid_floor: u32,
    pub sent_uid: u32,
}

/// What the server said of a folder when the two sides last agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FarMark {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: u64,
    pub far_count: u32,
}

pub struct State {
    conn: Connection,
}

impl State {
    pub fn open(path: &Path) -> Result<State> {
        // SQLite answers "busy" at once, without waiting out the busy timeout, where
        // waiting could deadlock: several openers of a new state switching it to WAL
        // together. One of them goes through; the others open again a little later, for
        // two seconds at most (a "busy" after the busy timeout is not tried again).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Self::open_once(path) {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn open_once(path: &Path) -> Result<State> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut s = State { conn };
        s.migrate()?;
        Ok(s)
    }

    /// A write transaction that takes the write lock at once: with two connections on the
    /// state (the second lane of a sync), a transaction that read first and wrote after the
    /// other had written could not wait for the lock, only fail.
    fn write(&mut self) -> Result<rusqlite::Transaction<'_>> {
        self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }

    /// Brings the schema to the current version, one migration per transaction. The
    /// version is read again inside each one (with the write lock held): another opener of
    /// a new state may have done that migration meanwhile.
    fn migrate(&mut self) -> Result<()> {
        let version: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.write()?;
            let now: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now > i as i64 {
                continue; // done by another; the transaction ends unchanged
            }
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    fn folder_from_row(r: &rusqlite::Row<'_>) -> Result<FolderRow> {
        let d: String = r.get(4)?;
        Ok(FolderRow {
            id: r.get(0)?,
            far_name: r.get(1)?,
            display_name: r.get(2)?,
            near_path: r.get(3)?,
            delimiter: d.chars().next(),
            uidvalidity: r.get::<_, i64>(5)? as u32,
            uidnext: r.get::<_, i64>(6)? as u32,
            highestmodseq: r.get::<_, i64>(7)? as u64,
            far_count: r.get::<_, i64>(8)? as u32,
            near_mtimes: r.get(9)?,
            prev_far_name: r.get(10)?,
            prev_near_path: r.get(11)?,
            mailbox_id: r.get(12)?,
        })
    }

    const FOLDER_COLS: &'static str = "id, far_name, display_name, near_path, delimiter, uidvalidity, uidnext, highestmodseq, far_count, near_mtimes, \
         prev_far_name, prev_near_path, mailbox_id";

    pub fn folders(&self) -> Result<Vec<FolderRow>> {
        let mut st = self.conn.prepare(&format!("SELECT {} FROM folders ORDER BY id", Self::FOLDER_COLS))?;
        st.query_map([], Self::folder_from_row)?.collect()
    }

    pub fn folder(&self, far_name: &str) -> Result<Option<FolderRow>> {
        // Cached: asked several times per folder and sync.
        let mut st =
            self.conn.prepare_cached(&format!("SELECT {} FROM folders WHERE far_name = ?1", Self::FOLDER_COLS))?;
        st.query_row([far_name], Self::folder_from_row).optional()
    }

    /// Records a folder that exists on both sides now.
    pub fn add_folder(
        &mut self,
        far_name: &str,
        display_name: &str,
        near_path: &str,
        delimiter: Option<char>,
    ) -> Result<FolderRow> {
        self.conn.execute(
            "INSERT INTO folders (far_name, display_name, near_path, delimiter) VALUES (?1, ?2, ?3, ?4)",
            params![far_name, display_name, near_path, delimiter.map(String::from).unwrap_or_default()],
        )?;
        let id = self.conn.last_insert_rowid();
        self.conn.query_row(
            &format!("SELECT {} FROM folders WHERE id = ?1", Self::FOLDER_COLS),
            [id],
            Self::folder_from_row,
        )
    }

    /// The folder whose directory is `near_path`, if any (to refuse two server folders
    /// that would share one directory).
    pub fn folder_by_path(&self, near_path: &str) -> Result<Option<FolderRow>> {
        let mut st =
            self.conn.prepare_cached(&format!("SELECT {} FROM folders WHERE near_path = ?1", Self::FOLDER_COLS))?;
        st.query_row([near_path], Self::folder_from_row).optional()
    }

    pub fn messages(&self, folder_id: i64) -> Result<BTreeMap<u32, MessageRow>> {
        self.messages_between(folder_id, &[(0, u32::MAX)])
    }

    /// The folder's messages whose UIDs fall in the ranges (inclusive): what a sync reads
    /// when the server named the few messages that changed.
    pub fn messages_between(&self, folder_id: i64, ranges: &[(u32, u32)]) -> Result<BTreeMap<u32, MessageRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT uid, near_id, flags, size, pending FROM messages WHERE folder_id = ?1 AND uid BETWEEN ?2 AND ?3",
        )?;
        let mut out = BTreeMap::new();
        for (lo, hi) in ranges {
            let rows = st.query_map(params![folder_id, lo, hi], |r| {
                Ok(MessageRow {
                    uid: r.get::<_, i64>(0)? as u32,
                    near_id: r.get(1)?,
                    flags: Flags::from_bits(r.get::<_, i64>(2)? as u8),
                    size: r.get::<_, i64>(3)? as u64,
                    pending: r.get::<_, i64>(4)? != 0,
                })
            })?;
            for r in rows {
                let r = r?;
                out.insert(r.uid, r);
            }
        }
        Ok(out)
    }

    /// How many messages of the folder the state knows.
    pub fn message_count(&self, folder_id: i64) -> Result<usize> {
        let mut st = self.conn.prepare_cached("SELECT count(*) FROM messages WHERE folder_id = ?1")?;
        st.query_row([folder_id], |r| r.get::<_, i64>(0).map(|n| n as usize))
    }

    /// Whether the account knows any message at all.
    pub fn has_messages(&self) -> Result<bool> {
        self.conn.query_row("SELECT EXISTS (SELECT 1 FROM messages)", [], |r| r.get::<_, i64>(0).map(|v| v != 0))
    }

    /// Whether a download of this folder was interrupted (rows still pending).
    pub fn has_pending(&self, folder_id: i64) -> Result<bool> {
        let mut st =
            self.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE folder_id = ?1 AND pending = 1)")?;
        st.query_row([folder_id], |r| r.get::<_, i64>(0).map(|v| v != 0))
    }

    /// Journals downloads about to start: each UID with the unique name its file will get.
    pub fn add_pending(&mut self, folder_id: i64, items: &[(u32, String, u64)]) -> Result<()> {
        self.add_pending_with(folder_id, items, &BTreeSet::new())
    }

    /// [`State::add_pending`], where the UIDs in `placeholders` come down as placeholders
    /// (header only): their rows carry the mark from the start, so that a file adopted after
    /// a crash is known for what it is.
    pub fn add_pending_with(
        &mut self,
        folder_id: i64,
        items: &[(u32, String, u64)],
        placeholders: &BTreeSet<u32>,
    ) -> Result<()> {
        let tx = self.write()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (folder_id, uid, near_id, size, pending, placeholder) \
                 VALUES (?1, ?2, ?3, ?4, 1, ?5)",
            )?;
            for (uid, near_id, size) in items {
                st.execute(params![folder_id, uid, near_id, *size as i64, i64::from(placeholders.contains(uid))])?;
            }
        }
        tx.commit()
    }

    /// The folder's messages whose file is a placeholder.
    pub fn placeholders(&self, folder_id: i64) -> Result<BTreeSet<u32>> {
        let mut st = self.conn.prepare_cached("SELECT uid FROM messages WHERE folder_id = ?1 AND placeholder = 1")?;
        let rows = st.query_map([folder_id], |r| r.get::<_, i64>(0).map(|u| u as u32))?;
        rows.collect()
    }

    /// Placeholders anywhere in the account whose message has this Message-ID: (folder, UID).
    pub fn placeholders_by_message_id(&self, message_id: &str) -> Result<Vec<(i64, u32)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT folder_id, uid FROM messages WHERE message_id = ?1 AND message_id != '' AND placeholder = 1 \
             ORDER BY folder_id, uid",
        )?;
        let rows = st.query_map([message_id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u32)))?;
        rows.collect()
    }

    /// Clears the placeholder mark of messages whose full text is in their file now.
    pub fn clear_placeholders(&mut self, folder_id: i64, uids: &[u32]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut st = tx.prepare_cached("UPDATE messages SET placeholder = 0 WHERE folder_id = ?1 AND uid = ?2")?;
            for uid in uids {
                st.execute(params![folder_id, uid])?;
            }
            tx.execute("UPDATE folders SET near_mtimes = '' WHERE id = ?1", [folder_id])?;
        }
        tx.commit()
    }

    pub fn appends(&self, folder_id: i64) -> Result<Vec<AppendRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT near_id, flags, size, message_id, uid_floor, sent FROM appends WHERE folder_id = ?1 ORDER BY near_id",
        )?;
        let rows = st.query_map([folder_id], |r| {
            Ok(AppendRow {
                near_id: r.get(0)?,
                flags: Flags::from_bits(r.get::<_, i64>(1)? as u8),
                size: r.get::<_, i64>(2)? as u64,
                message_id: r.get(3)?,
                uid_floor: r.get::<_, i64>(4)? as u32,
                sent: r.get::<_, i64>(5)? != 0,
            })
        })?;
        rows.collect()
    }

    /// Journals an upload before it is sent.
    pub fn journal_append(&mut self, folder_id: i64, a: &AppendRow) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO appends (folder_id, near_id, flags, size, message_id, uid_floor) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![folder_id, a.near_id, a.flags.bits() as i64, a.size as i64, a.message_id, a.uid_floor as i64],
        )?;
        Ok(())
    }

    /// Marks an upload as accepted by the server (see `AppendRow::sent`).
    pub fn mark_append_sent(&mut self, folder_id: i64, near_id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE appends SET sent = 1 WHERE folder_id = ?1 AND near_id = ?2",
            params![folder_id, near_id],
        )?;
        Ok(())
    }

    /// Ends an upload: the journal row goes; with a UID, the message is known from now on
    /// with `flags` agreed. One transaction.
    pub fn finish_append(&mut self, folder_id: i64, a: &AppendRow, uid: Option<u32>) -> Result<()> {
        let tx = self.write()?;
        tx.execute("DELETE FROM appends WHERE folder_id = ?1 AND near_id = ?2", params![folder_id, a.near_id])?;
        tx.execute("UPDATE folders SET near_mtimes = '' WHERE id = ?1", [folder_id])?;
        if let Some(uid) = uid {
            tx.execute(
                "INSERT OR REPLACE INTO messages (folder_id, uid, near_id, flags, size, pending, message_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![folder_id, uid, a.near_id, a.flags.bits() as i64, a.size as i64, a.message_id],
            )?;
        }
        tx.commit()
    }

    /// After a UIDVALIDITY change: the folder's messages become exactly `pairs` (new UID,
    /// unique name, agreed flags, size), its uploads under way are dropped, and its mark is
    /// reset to the new UIDVALIDITY with nothing seen yet. One transaction.
    pub fn rebuild_folder(
        &mut self,
        folder_id: i64,
        uidvalidity: u32,
        pairs: &[(u32, String, Flags, u64)],
    ) -> Result<()> {
        self.rebuild_folder_with(folder_id, uidvalidity, pairs, &BTreeSet::new())
    }

    /// [`State::rebuild_folder`], the messages whose unique name is in `placeholders`
    /// marked as placeholders.
    pub fn rebuild_folder_with(
        &mut self,
        folder_id: i64,
        uidvalidity: u32,
        pairs: &[(u32, String, Flags, u64)],
        placeholders: &BTreeSet<String>,
    ) -> Result<()> {
        let tx = self.write()?;
        tx.execute("DELETE FROM messages WHERE folder_id = ?1", [folder_id])?;
        tx.execute("DELETE FROM appends WHERE folder_id = ?1", [folder_id])?;
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO messages (folder_id, uid, near_id, flags, size, pending, placeholder) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
            )?;
            for (uid, near_id, flags, size) in pairs {
                let mark = i64::from(placeholders.contains(near_id));
                ins.execute(params![folder_id, uid, near_id, flags.bits() as i64, *size as i64, mark])?;
            }
        }
        tx.execute(
            "UPDATE folders SET uidvalidity = ?2, uidnext = 1, highestmodseq = 0, far_count = 0, near_mtimes = '' \
             WHERE id = ?1",
            params![folder_id, uidvalidity as i64],
        )?;
        tx.commit()
    }

    /// Renames a folder and everything below it, on both sides at once in the state:
    /// `far_name`/`near_path` become the new ones, the old ones are kept as `prev_*`
    /// until [`State::finish_renames`]. One transaction. Children are the rows whose far
    /// name starts with the old name and the delimiter, or whose path starts with the old
    /// path and the layout's separator (IMAP RENAME takes inferior names along; so does a
    /// directory move in the verbatim layout, and `move_dir` in the Maildir++ one).
    pub fn begin_rename(
        &mut self,
        folder_id: i64,
        far_name: &str,
        display_name: &str,
        near_path: &str,
        layout: syncmail_maildir::Layout,
    ) -> Result<()> {
        let all = self.folders()?;
        let Some(row) = all.iter().find(|f| f.id == folder_id).cloned() else { return Ok(()) };
        let tx = self.write()?;
        {
            let mut up = tx.prepare_cached(
                "UPDATE folders SET far_name = ?2, display_name = ?3, near_path = ?4, prev_far_name = ?5, \
                 prev_near_path = ?6, near_mtimes = '' WHERE id = ?1",
            )?;
            // Free the unique names first (a child may take a name another row gives up).
            tx.execute(
                "UPDATE folders SET far_name = '\u{1}' || id, near_path = '\u{1}' || id WHERE id = ?1",
                [row.id],
            )?;
            let mut updates =
                vec![(row.id, far_name.to_string(), display_name.to_string(), near_path.to_string(), row.clone())];
            for f in all.iter().filter(|f| f.id != row.id) {
                let far_child = row.delimiter.and_then(|d| {
                    f.far_name.strip_prefix(&format!("{}{d}", row.far_name)).map(|rest| format!("{far_name}{d}{rest}"))
                });
                let near_child = f
                    .near_path
                    .strip_prefix(&layout.child_prefix(&row.near_path))
                    .map(|rest| format!("{}{rest}", layout.child_prefix(near_path)));
                if far_child.is_none() && near_child.is_none() {
                    continue;
                }
                let display = row.delimiter.and_then(|d| {
                    f.display_name
                        .strip_prefix(&format!("{}{d}", row.display_name))
                        .map(|rest| format!("{display_name}{d}{rest}"))
                });
                tx.execute(
                    "UPDATE folders SET far_name = '\u{1}' || id, near_path = '\u{1}' || id WHERE id = ?1",
                    [f.id],
                )?;
                updates.push((
                    f.id,
                    far_child.unwrap_or_else(|| f.far_name.clone()),
                    display.unwrap_or_else(|| f.display_name.clone()),
                    near_child.unwrap_or_else(|| f.near_path.clone()),
                    f.clone(),
                ));
            }
            for (id, far, display, near, old) in updates {
                up.execute(params![id, far, display, near, old.far_name, old.near_path])?;
            }
        }
        tx.commit()
    }

    /// Ends every rename under way (see [`State::begin_rename`]).
    pub fn finish_renames(&mut self) -> Result<()> {
        self.conn.execute(
            "UPDATE folders SET prev_far_name = '', prev_near_path = '' WHERE prev_far_name != '' OR prev_near_path != ''",
            [],
        )?;
        Ok(())
    }

    /// Records the server's MAILBOXID of a folder.
    pub fn set_mailbox_id(&mut self, folder_id: i64, mailbox_id: &str) -> Result<()> {
        self.conn.execute("UPDATE folders SET mailbox_id = ?2 WHERE id = ?1", params![folder_id, mailbox_id])?;
        Ok(())
    }

    /// Known messages with this EMAILID: (folder, unique name).
    pub fn find_email_id(&self, email_id: &str) -> Result<Vec<(i64, String)>> {
        if email_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.conn.prepare_cached(
            "SELECT folder_id, near_id FROM messages WHERE email_id = ?1 AND pending = 0 AND placeholder = 0",
        )?;
        let rows = st.query_map([email_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Forgets a folder and all its messages and journals.
    pub fn delete_folder(&mut self, folder_id: i64) -> Result<()> {
        self.conn.execute("DELETE FROM folders WHERE id = ?1", [folder_id])?;
        Ok(())
    }

    /// Known messages elsewhere in the account with this size and Message-ID: (folder,
    /// UID, unique name, agreed flags).
    pub fn find_identity(&self, size: u64, message_id: &str) -> Result<Vec<(i64, u32, String, Flags)>> {
        if message_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.conn.prepare_cached(
            "SELECT folder_id, uid, near_id, flags FROM messages \
             WHERE size = ?1 AND message_id = ?2 AND message_id != '' AND pending = 0 AND placeholder = 0",
        )?;
        let rows = st.query_map(params![size as i64, message_id], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u32, r.get(2)?, Flags::from_bits(r.get::<_, i64>(3)? as u8)))
        })?;
        rows.collect()
    }

    /// Whether any message outside `folder_id` has this size and a known Message-ID (the
    /// cheap test before asking the server for a new message's Message-ID).
    pub fn size_known_elsewhere(&self, folder_id: i64, size: u64) -> Result<bool> {
        let mut st = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE size = ?1 AND message_id != '' AND folder_id != ?2)",
        )?;
        st.query_row(params![size as i64, folder_id], |r| r.get::<_, i64>(0).map(|v| v != 0))
    }

    /// The folders where a known message's file has this unique name.
    pub fn folders_with_near_id(&self, near_id: &str) -> Result<Vec<i64>> {
        let mut st = self.conn.prepare_cached("SELECT folder_id FROM messages WHERE near_id = ?1 AND pending = 0")?;
        let rows = st.query_map([near_id], |r| r.get(0))?;
        rows.collect()
    }

    /// The Message-ID recorded for a message ('' when none).
    pub fn message_id_of(&self, folder_id: i64, uid: u32) -> Result<String> {
        Ok(self.identity_of(folder_id, uid)?.0)
    }

    /// The Message-ID and EMAILID recorded for a message ('' where not known).
    pub fn identity_of(&self, folder_id: i64, uid: u32) -> Result<(String, String)> {
        self.conn
            .query_row(
                "SELECT message_id, email_id FROM messages WHERE folder_id = ?1 AND uid = ?2",
                params![folder_id, uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map(Option::unwrap_or_default)
    }

    pub fn moves(&self) -> Result<Vec<MoveRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT from_folder, uid, to_folder, near_id, flags, size, message_id, uid_floor FROM moves ORDER BY from_folder, uid",
        )?;
        let rows = st.query_map([], |r| {
            Ok(MoveRow {
                from_folder: r.get(0)?,
                uid: r.get::<_, i64>(1)? as u32,
                to_folder: r.get(2)?,
                near_id: r.get(3)?,
                flags: Flags::from_bits(r.get::<_, i64>(4)? as u8),
                size: r.get::<_, i64>(5)? as u64,
                message_id: r.get(6)?,
                uid_floor: r.get::<_, i64>(7)? as u32,
            })
        })?;
        rows.collect()
    }

    /// Journals moves on the server before UID MOVE is sent.
    pub fn journal_moves(&mut self, moves: &[MoveRow]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT OR REPLACE INTO moves (from_folder, uid, to_folder, near_id, flags, size, message_id, uid_floor) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for m in moves {
                st.execute(params![
                    m.from_folder,
                    m.uid,
                    m.to_folder,
                    m.near_id,
                    m.flags.bits() as i64,
                    m.size as i64,
                    m.message_id,
                    m.uid_floor as i64
                ])?;
            }
        }
        tx.commit()
    }

    /// Ends moves: each leaves its source folder; with a new UID it is known in the
    /// destination from now on (same file, same agreed flags). One transaction.
    pub fn finish_moves(&mut self, done: &[(MoveRow, Option<u32>)]) -> Result<()> {
        let tx = self.write()?;
        {
            let mut del_j = tx.prepare_cached("DELETE FROM moves WHERE from_folder = ?1 AND uid = ?2")?;
            let mut del_m = tx.prepare_cached("DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2")?;
            // A placeholder moved stays one: the mark goes with the message.
            let mut mark = tx.prepare_cached("SELECT placeholder FROM messages WHERE folder_id = ?1 AND uid = ?2")?;
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO messages (folder_id, uid, near_id, flags, size, pending, message_id, placeholder) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7)",
            )?;
            let mut stale = tx.prepare_cached("UPDATE folders SET near_mtimes = '' WHERE id = ?1")?;
            for (m, uid) in done {
                del_j.execute(params![m.from_folder, m.uid])?;
                let placeholder: i64 =
                    mark.query_row(params![m.from_folder, m.uid], |r| r.get(0)).optional()?.unwrap_or(0);
                del_m.execute(params![m.from_folder, m.uid])?;
                if let Some(uid) = uid {
                    ins.execute(params![
                        m.to_folder,
                        uid,
                        m.near_id,
                        m.flags.bits() as i64,
                        m.size as i64,
                        m.message_id,
                        placeholder
                    ])?;
                }
                stale.execute([m.from_folder])?;
                stale.execute([m.to_folder])?;
            }
        }
        tx.commit()
    }

    /// Records the Maildir mtimes at which the folder was last in agreement ('' to forget).
    pub fn set_near_mtimes(&mut self, folder_id: i64, mtimes: &str) -> Result<()> {
        self.conn.execute("UPDATE folders SET near_mtimes = ?2 WHERE id = ?1", params![folder_id, mtimes])?;
        Ok(())
    }

    /// One atomic step: flags now agreed (also turning pending rows into synced ones), rows
    /// to forget, and optionally the folder's new mark.
    pub fn commit(
        &mut self,
        folder_id: i64,
        agreed: &[(u32, Flags)],
        forget: &[u32],
        mark: Option<FarMark>,
    ) -> Result<()> {
        self.commit_with_ids(folder_id, agreed, &[], forget, mark)
    }

    /// [`State::commit`], also recording the Message-ID and EMAILID of messages
    /// (downloads): (UID, Message-ID, EMAILID), '' where not known.
    pub fn commit_with_ids(
        &mut self,
        folder_id: i64,
        agreed: &[(u32, Flags)],
        ids: &[(u32, String, String)],
        forget: &[u32],
        mark: Option<FarMark>,
    ) -> Result<()> {
        let tx = self.write()?;
        {
            if !ids.is_empty() {
                let mut st = tx.prepare_cached(
                    "UPDATE messages SET message_id = ?3, email_id = ?4 WHERE folder_id = ?1 AND uid = ?2",
                )?;
                for (uid, id, email_id) in ids {
                    st.execute(params![folder_id, uid, id, email_id])?;
                }
            }
            let mut up =
                tx.prepare_cached("UPDATE messages SET flags = ?3, pending = 0 WHERE folder_id = ?1 AND uid = ?2")?;
            for (uid, flags) in agreed {
                up.execute(params![folder_id, uid, flags.bits() as i64])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2")?;
            for uid in forget {
                del.execute(params![folder_id, uid])?;
            }
            if !agreed.is_empty() || !forget.is_empty() {
                // The rows changed: recorded Maildir mtimes no longer describe agreement.
                tx.execute("UPDATE folders SET near_mtimes = '' WHERE id = ?1", [folder_id])?;
            }
            if let Some(m) = mark {
                tx.execute(
                    "UPDATE folders SET uidvalidity = ?2, uidnext = ?3, highestmodseq = ?4, far_count = ?5 WHERE id = ?1",
                    params![folder_id, m.uidvalidity as i64, m.uidnext as i64, m.highestmodseq as i64, m.far_count as i64],
                )?;
            }
        }
        tx.commit()
    }
}

const OUTBOX_COLS: &str = "id, near_id, state, env_from, env_to, message_id, subject, queued_at, attempts, \
     next_attempt, last_error, server_text, accepted_at, accepted_reply, sent_folder, sent_uidvalidity, \
     sent_uid_floor, sent_uid";

fn write_outbox_row(conn: &Connection, r: &OutboxRow) -> Result<()> {
    conn.execute(
        "UPDATE outbox SET near_id = ?2, state = ?3, env_from = ?4, env_to = ?5, message_id = ?6, subject = ?7, \
         queued_at = ?8, attempts = ?9, next_attempt = ?10, last_error = ?11, server_text = ?12, \
         accepted_at = ?13, accepted_reply = ?14, sent_folder = ?15, sent_uidvalidity = ?16, \
         sent_uid_floor = ?17, sent_uid = ?18 WHERE id = ?1",
        params![
            r.id,
            r.near_id,
            r.state.name(),
            r.from,
            r.to.join("\n"),
            r.message_id,
            r.subject,
            r.queued_at,
            r.attempts as i64,
            r.next_attempt,
            r.last_error,
            r.server_text,
            r.accepted_at,
            r.accepted_reply,
            r.sent_folder,
            r.sent_uidvalidity as i64,
            r.sent_uid_floor as i64,
            r.sent_uid as i64,
        ],
    )?;
    Ok(())
}

impl State {
    fn outbox_from_row(r: &rusqlite::Row<'_>) -> Result<OutboxRow> {
        let to: String = r.get(4)?;
        Ok(OutboxRow {
            id: r.get(0)?,
            near_id: r.get(1)?,
            state: OutState::parse(&r.get::<_, String>(2)?),
            from: r.get(3)?,
            to: to.lines().map(str::to_string).collect(),
            message_id: r.get(5)?,
            subject: r.get(6)?,
            queued_at: r.get(7)?,
            attempts: r.get::<_, i64>(8)? as u32,
            next_attempt: r.get(9)?,
            last_error: r.get(10)?,
            server_text: r.get(11)?,
            accepted_at: r.get(12)?,
            accepted_reply: r.get(13)?,
            sent_folder: r.get(14)?,
            sent_uidvalidity: r.get::<_, i64>(15)? as u32,
            sent_uid_floor: r.get::<_, i64>(16)? as u32,
            sent_uid: r.get::<_, i64>(17)? as u32,
        })
    }

    /// Every message of the outbox the state knows, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        let mut st = self.conn.prepare(&format!("SELECT {OUTBOX_COLS} FROM outbox ORDER BY id"))?;
        st.query_map([], Self::outbox_from_row)?.collect()
    }

    pub fn outbox_row(&self, id: i64) -> Result<Option<OutboxRow>> {
        self.conn
            .query_row(&format!("SELECT {OUTBOX_COLS} FROM outbox WHERE id = ?1"), [id], Self::outbox_from_row)
            .optional()
    }

    /// Records a message of the outbox in one transaction; returns it with its id.
    pub fn outbox_insert(&mut self, row: &OutboxRow) -> Result<OutboxRow> {
        let tx = self.write()?;
        tx.execute("INSERT INTO outbox (near_id) VALUES (?1)", [&row.near_id])?;
        let saved = OutboxRow { id: tx.last_insert_rowid(), ..row.clone() };
        write_outbox_row(&tx, &saved)?;
        tx.commit()?;
        Ok(saved)
    }

    /// Writes every column of the row: one committed statement, durable on return.
    pub fn outbox_update(&mut self, r: &OutboxRow) -> Result<()> {
        write_outbox_row(&self.conn, r)
    }

    pub fn outbox_forget(&mut self, id: i64) -> Result<()> {
        self.conn.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several openers of one new state at the same moment (a daemon and a command, two
    /// stores of one account): each migration runs once, and every open succeeds.
    #[test]
    fn a_new_state_opened_by_several_at_once_is_migrated_once() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("state.sqlite");
            let start = std::sync::Barrier::new(6);
            std::thread::scope(|scope| {
                let openers: Vec<_> = (0..6)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            State::open(&db).map(drop)
                        })
                    })
                    .collect();
                for o in openers {
                    o.join().unwrap().unwrap();
                }
            });
            let s = State::open(&db).unwrap();
            let v: i64 = s.conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
            assert_eq!(v, MIGRATIONS.len() as i64);
        }
    }

    #[test]
    fn outbox_rows_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("state.sqlite")).unwrap();
        let row = crate::outbox::new_row(
            "u1".into(),
            "a@x".into(),
            vec!["b@y".into(), "c@z".into()],
            b"Message-ID: <m@x>\nSubject: hi\n\nbody\n",
        );
        assert_eq!((row.message_id.as_str(), row.subject.as_str()), ("<m@x>", "hi"));
        let mut saved = s.outbox_insert(&row).unwrap();
        assert!(saved.id > 0);
        saved.state = OutState::Filing;
        saved.sent_uid_floor = 7;
        s.outbox_update(&saved).unwrap();
        assert_eq!(s.outbox().unwrap(), vec![saved.clone()]);
        assert_eq!(s.outbox_row(saved.id).unwrap(), Some(saved.clone()));
        s.outbox_forget(saved.id).unwrap();
        assert!(s.outbox().unwrap().is_empty());
    }

    #[test]
    fn journaled_downloads_are_found_through_the_partial_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("state.sqlite")).unwrap();
        let f = s.add_folder("INBOX", "INBOX", "INBOX", Some('.')).unwrap();
        let rows: Vec<(u32, String, u64)> = (1..=500).map(|u| (u, format!("u{u}"), 10)).collect();
        s.add_pending(f.id, &rows).unwrap();
        assert!(s.has_pending(f.id).unwrap());
        let agreed: Vec<(u32, Flags)> = (1..=500).map(|u| (u, Flags::SEEN)).collect();
        s.commit(f.id, &agreed, &[], None).unwrap();
        assert!(!s.has_pending(f.id).unwrap());
        // The question a sync with nothing to do asks of every folder reads the index of
        // pending rows, not the folder's whole table.
        let plan: Vec<String> = s
            .conn
            .prepare("EXPLAIN QUERY PLAN SELECT EXISTS (SELECT 1 FROM messages WHERE folder_id = ?1 AND pending = 1)")
            .unwrap()
            .query_map([f.id], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert!(plan.iter().any(|d| d.contains("messages_pending")), "{plan:?}");
    }

    #[test]
    fn round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.sqlite");
        {
            let mut s = State::open(&p).unwrap();
            let f = s.add_folder("Entw&APw-rfe", "Entwürfe", "Entwürfe", Some('.')).unwrap();
            assert_eq!(f.uidnext, 1);
            s.add_pending(f.id, &[(5, "u5".into(), 100), (6, "u6".into(), 200)]).unwrap();
            s.commit(
                f.id,
                &[(5, Flags::SEEN)],
                &[6],
                Some(FarMark { uidvalidity: 9, uidnext: 7, highestmodseq: 3, far_count: 1 }),
            )
            .unwrap();
        }
        let s = State::open(&p).unwrap();
        let f = s.folder("Entw&APw-rfe").unwrap().unwrap();
        assert_eq!((f.uidvalidity, f.uidnext, f.highestmodseq, f.far_count), (9, 7, 3, 1));
        assert_eq!(f.delimiter, Some('.'));
        let m = s.messages(f.id).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[&5], MessageRow { uid: 5, near_id: "u5".into(), flags: Flags::SEEN, size: 100, pending: false });
        assert!(s.folder_by_path("Entwürfe").unwrap().is_some());
    }
}
