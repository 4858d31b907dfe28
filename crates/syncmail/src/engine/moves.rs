//! Messages moved between folders, recognized instead of deleted and transferred again.
//!
//! - **Moved locally** (a mail reader moved the file, keeping its unique name, or wrote a
//!   copy and deleted the original): the message is missing from its folder A and a file
//!   the state does not know is in folder B, with the same unique name, or the same
//!   Message-ID and size. When A is synced, the message is moved on the server (UID MOVE,
//!   COPYUID giving its new UID) instead of deleted from A and uploaded to B. The move is
//!   journaled before it is sent; [`recover`] resolves one a crash interrupted. While A
//!   has not been synced yet, B does not upload such a file.
//! - **Moved on the server**: a new message in B whose Message-ID and size match a known
//!   message of another folder is taken from the local copy (the file still in A, or one
//!   removed from A earlier in this run, kept in the *attic* until the run ends) instead of
//!   downloaded. Its flags are the server's.
//!
//! Without a Message-ID, a match by size alone is never trusted: such a message is
//! transferred as before.

use super::message::{header, lf_to_crlf};
use super::{Ctx, errors};
use crate::api::SyncError;
use crate::far::Session;
use crate::lock;
use crate::state::{FolderRow, MoveRow, State};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use syncmail_imap::Flags;
use syncmail_maildir::{self as maildir, Entry, Folder};

/// New server messages found here already: UID → (the local file, its Message-ID).
pub(crate) type LocalCopies = HashMap<u32, (PathBuf, String)>;

/// The first of `files` when all hold the same bytes (files that vanished meanwhile left
/// out); `None` when there is none or they differ.
fn same_content(files: &[PathBuf]) -> Result<Option<PathBuf>, String> {
    let mut there: Vec<(&PathBuf, Vec<u8>)> = Vec::new();
    for p in files {
        match fs::read(p) {
            Ok(data) => there.push((p, data)),
            // Renamed or removed since it was listed (a reader, or another lane of the run).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("reading {}: {e}", p.display())),
        }
    }
    let Some((first, want)) = there.first() else { return Ok(None) };
    if there.iter().all(|(_, d)| d == want) { Ok(Some((*first).clone())) } else { Ok(None) }
}

/// What one run knows of local files across folders, read lazily and kept for the run
/// (by each lane of it: see `lanes`; the attic is the run's, shared).
#[derive(Default)]
pub(crate) struct NearIndex {
    /// Folder id → its listing.
    scans: HashMap<i64, HashMap<String, Entry>>,
    /// Files removed from their folders this run because the server expunged them.
    attic: Arc<Mutex<Attic>>,
    /// Files the state does not know, in every folder: built on first need.
    unknown: Option<Vec<Unknown>>,
    /// Whether the account had messages before this run: in a first sync nothing can
    /// have moved, and the search for local copies is skipped.
    pub had_messages: bool,
}

/// Files removed from a folder because the server expunged them, this run: (size,
/// Message-ID) → path in the attic; and EMAILID → path. More than one file under one key:
/// all of them, to be compared. Held locked while a file goes in (renamed and listed at
/// once) and while a copy is looked for, so that a lane looking for a message another
/// lane is putting away finds it in its folder or here, never in neither.
#[derive(Default)]
pub(crate) struct Attic {
    by_identity: HashMap<(u64, String), Vec<PathBuf>>,
    by_email_id: HashMap<String, Vec<PathBuf>>,
}

impl Attic {
    /// The file kept here for this message (by EMAILID where the server names one),
    /// when every file under its key holds the same bytes.
    fn find(&self, size: u64, message_id: &str, email_id: &str) -> Result<Option<PathBuf>, String> {
        if !email_id.is_empty()
            && let Some(files) = self.by_email_id.get(email_id)
        {
            return same_content(files);
        }
        match self.by_identity.get(&(size, message_id.to_string())) {
            Some(files) if !message_id.is_empty() => same_content(files),
            _ => Ok(None),
        }
    }
}

pub(crate) struct Unknown {
    pub folder: FolderRow,
    pub entry: Entry,
    /// CRLF size and Message-ID (the server's terms).
    pub size: u64,
    pub message_id: String,
    /// For a placeholder, the unique name it was written under (the known message it is).
    pub placeholder_of: Option<String>,
}

pub(crate) fn attic_dir(ctx: &Ctx<'_>) -> PathBuf {
    ctx.account.state_dir.join("attic")
}

/// Empties the attic (at the start of a run; at its end see `engine::run_sync`).
pub(crate) fn clear_attic(ctx: &Ctx<'_>) {
    remove_attic(&attic_dir(ctx));
}

/// Removes the attic at `dir` with what it holds; one that is not there is no error.
pub(crate) fn remove_attic(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

impl NearIndex {
    fn scan(&mut self, root: &Path, f: &FolderRow) -> std::io::Result<&HashMap<String, Entry>> {
        if let std::collections::hash_map::Entry::Vacant(v) = self.scans.entry(f.id) {
            v.insert(Folder::new(root.join(&f.near_path)).scan().map_err(std::io::Error::other)?);
        }
        Ok(&self.scans[&f.id])
    }

    /// Forgets what was read of a folder (it changed).
    pub fn invalidate(&mut self, folder_id: i64) {
        self.scans.remove(&folder_id);
        self.unknown = None;
    }

    /// An index for another lane of the same run: listings of its own, the run's attic.
    pub fn sharing_attic(&self) -> NearIndex {
        NearIndex { attic: self.attic.clone(), had_messages: self.had_messages, ..Default::default() }
    }

    /// The file the attic keeps for this message, if any (see [`Attic::find`]).
    pub fn in_attic(&self, size: u64, message_id: &str, email_id: &str) -> Result<Option<PathBuf>, String> {
        lock(&self.attic).find(size, message_id, email_id)
    }

    /// Keeps a file the server expunged until the run ends, in case the message went to
    /// another folder; removes it from its folder either way.
    pub fn remove_to_attic(
        &mut self,
        ctx: &Ctx<'_>,
        dir: &Folder,
        entry: &Entry,
        size: u64,
        message_id: String,
        email_id: String,
    ) -> maildir::Result<()> {
        if !message_id.is_empty() || !email_id.is_empty() {
            let attic_path = attic_dir(ctx);
            let to = attic_path.join(entry.unique());
            let mut attic = lock(&self.attic);
            if fs::create_dir_all(&attic_path).is_ok() && fs::rename(dir.entry_path(entry), &to).is_ok() {
                if !email_id.is_empty() {
                    attic.by_email_id.entry(email_id).or_default().push(to.clone());
                }
                if !message_id.is_empty() {
                    attic.by_identity.entry((size, message_id)).or_default().push(to);
                }
                return Ok(());
            }
        }
        dir.remove(entry)
    }

    /// A local file holding the message with this EMAILID, outside `folder_id`.
    fn local_copy_by_email_id(
        &mut self,
        ctx: &Ctx<'_>,
        state: &State,
        folder_id: i64,
        email_id: &str,
    ) -> Result<Option<PathBuf>, String> {
        let attic = self.attic.clone();
        let attic = lock(&attic);
        if let Some(files) = attic.by_email_id.get(email_id) {
            return same_content(files);
        }
        let found = state.find_email_id(email_id).map_err(|e| e.to_string())?;
        let pairs: Vec<(i64, String)> = found.into_iter().filter(|(f, _)| *f != folder_id).collect();
        self.find_file(ctx, state, &pairs)
    }

    /// The file of (folder, unique name) pairs that are there, when they all hold the same
    /// bytes; `None` when none is there, or when they differ (two messages sharing a
    /// Message-ID and size: which one the server's is cannot be told without its body).
    fn find_file(&mut self, ctx: &Ctx<'_>, state: &State, pairs: &[(i64, String)]) -> Result<Option<PathBuf>, String> {
        if pairs.is_empty() {
            return Ok(None);
        }
        let folders = state.folders().map_err(|e| e.to_string())?;
        let mut found: Vec<PathBuf> = Vec::new();
        for (fid, near_id) in pairs {
            let Some(f) = folders.iter().find(|f| f.id == *fid) else { continue };
            let scan = self.scan(&ctx.account.maildir, f).map_err(|e| e.to_string())?;
            if let Some(e) = scan.get(near_id) {
                found.push(ctx.account.maildir.join(&f.near_path).join(e.sub.dir()).join(&e.file_name));
            }
        }
        same_content(&found)
    }

    /// A local file holding the message with this size and Message-ID, outside `folder_id`.
    pub fn local_copy(
        &mut self,
        ctx: &Ctx<'_>,
        state: &State,
        folder_id: i64,
        size: u64,
        message_id: &str,
    ) -> Result<Option<PathBuf>, String> {
        if message_id.is_empty() {
            return Ok(None);
        }
        // Held until the folders are looked into: see `Attic`.
        let attic = self.attic.clone();
        let attic = lock(&attic);
        if let Some(files) = attic.by_identity.get(&(size, message_id.to_string())) {
            return same_content(files);
        }
        let pairs: Vec<(i64, String)> = state
            .find_identity(size, message_id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|(f, ..)| *f != folder_id)
            .map(|(f, _, near_id, _)| (f, near_id))
            .collect();
        self.find_file(ctx, state, &pairs)
    }

    /// Files the state does not know, in every known folder but `except`.
    fn unknown(&mut self, ctx: &Ctx<'_>, state: &State) -> Result<&[Unknown], String> {
        if self.unknown.is_none() {
            let mut out = Vec::new();
            for f in state.folders().map_err(|e| e.to_string())? {
                let known: BTreeSet<String> =
                    state.messages(f.id).map_err(|e| e.to_string())?.into_values().map(|r| r.near_id).collect();
                let dir = Folder::new(ctx.account.maildir.join(&f.near_path));
                let scan = self.scan(&ctx.account.maildir, &f).map_err(|e| e.to_string())?.clone();
                for (unique, entry) in scan {
                    if known.contains(&unique) {
                        continue;
                    }
                    let data = lf_to_crlf(&dir.read(&entry).map_err(|e| e.to_string())?);
                    out.push(Unknown {
                        folder: f.clone(),
                        entry,
                        // A placeholder (a reader moved it by writing a copy): the size of
                        // the message it stands for, so that it is recognized as moved.
                        size: super::placeholder::declared_size(&data).unwrap_or(data.len() as u64),
                        message_id: header(&data, "Message-ID").unwrap_or_default(),
                        placeholder_of: super::placeholder::declared_id(&data),
                    });
                }
            }
            self.unknown = Some(out);
        }
        Ok(self.unknown.as_deref().unwrap_or_default())
    }
}

/// A known message of `row` whose file is gone, found as a new file in another folder.
pub(crate) struct LocalMove {
    pub uid: u32,
    pub to: FolderRow,
    pub entry: Entry,
}

/// The flags a moved message should carry: where the local file changed a flag since the
/// last agreement, the file's; elsewhere the server's.
pub(crate) fn merged_flags(agreed: Flags, near: Flags, far: Flags) -> Flags {
    let changed_here = near.bits() ^ agreed.bits();
    Flags::from_bits((near.bits() & changed_here) | (far.bits() & !changed_here))
}

/// Which of the messages about to be deleted on the server (`uids`, missing locally) were
/// moved to another local folder.
pub(crate) fn find_local_moves(
    ctx: &Ctx<'_>,
    state: &State,
    index: &mut NearIndex,
    row: &FolderRow,
    uids: &[u32],
    known: &std::collections::BTreeMap<u32, crate::state::MessageRow>,
) -> Result<Vec<LocalMove>, String> {
    if uids.is_empty() {
        return Ok(Vec::new());
    }
    let filter = &ctx.account.folders;
    let unknown = index.unknown(ctx, state)?;
    let mut taken: BTreeSet<(i64, String)> = BTreeSet::new();
    let mut out = Vec::new();
    for &uid in uids {
        let Some(r) = known.get(&uid) else { continue };
        let mid = state.message_id_of(row.id, uid).map_err(|e| e.to_string())?;
        let candidate = unknown
            .iter()
            .filter(|u| u.folder.id != row.id && filter.matches(&u.folder.display_name, u.folder.delimiter))
            .filter(|u| !taken.contains(&(u.folder.id, u.entry.unique().to_string())))
            .find(|u| u.entry.unique() == r.near_id || u.placeholder_of.as_deref() == Some(r.near_id.as_str()))
            .or_else(|| {
                let same: Vec<&Unknown> = unknown
                    .iter()
                    .filter(|u| u.folder.id != row.id && !mid.is_empty())
                    .filter(|u| !taken.contains(&(u.folder.id, u.entry.unique().to_string())))
                    .filter(|u| u.size == r.size && u.message_id == mid)
                    .collect();
                // Two candidates with one identity: which went where is not known.
                if same.len() == 1 { Some(same[0]) } else { None }
            });
        if let Some(u) = candidate {
            taken.insert((u.folder.id, u.entry.unique().to_string()));
            out.push(LocalMove { uid, to: u.folder.clone(), entry: u.entry.clone() });
        }
    }
    Ok(out)
}

/// Whether a new local file in `row` is a message moved here from another folder whose
/// sync has not moved it on the server yet (so it must not be uploaded).
pub(crate) fn is_move_in_flight(
    ctx: &Ctx<'_>,
    state: &State,
    index: &mut NearIndex,
    row: &FolderRow,
    entry: &Entry,
    crlf: &[u8],
) -> Result<bool, String> {
    let mut sources: Vec<(i64, String)> = state
        .folders_with_near_id(entry.unique())
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|f| (f, entry.unique().to_string()))
        .collect();
    // A placeholder copied under a new name names the message it stands for.
    if let Some(id) = super::placeholder::declared_id(crlf) {
        sources
            .extend(state.folders_with_near_id(&id).map_err(|e| e.to_string())?.into_iter().map(|f| (f, id.clone())));
    }
    if let Some(mid) = header(crlf, "Message-ID") {
        sources.extend(
            state
                .find_identity(crlf.len() as u64, &mid)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(f, _, near_id, _)| (f, near_id)),
        );
    }
    if sources.is_empty() {
        return Ok(false);
    }
    let folders = state.folders().map_err(|e| e.to_string())?;
    for (fid, near_id) in sources {
        if fid == row.id {
            continue;
        }
        let Some(f) = folders.iter().find(|f| f.id == fid) else { continue };
        if !ctx.account.folders.matches(&f.display_name, f.delimiter) {
            continue;
        }
        if ctx.req.folders.as_ref().is_some_and(|only| !only.iter().any(|o| *o == f.display_name || *o == f.far_name)) {
            continue;
        }
        if !Folder::new(ctx.account.maildir.join(&f.near_path)).exists() {
            continue;
        }
        let scan = index.scan(&ctx.account.maildir, f).map_err(|e| e.to_string())?;
        if !scan.contains_key(&near_id) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Carries out local moves on the server from the selected folder `row`: journaled
/// (with the flags the message is to carry), then per destination the flags set on the
/// source, one UID MOVE, the local files' flags, and one commit. Returns how many moved.
pub(crate) fn move_on_server(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    row: &FolderRow,
    moves: &[LocalMove],
    known: &std::collections::BTreeMap<u32, crate::state::MessageRow>,
    far_flags: &std::collections::BTreeMap<u32, Flags>,
) -> Result<u64, SyncError> {
    let account = ctx.name().to_string();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&account, Some(&row.display_name), e.to_string());
    let mut journal = Vec::new();
    let mut far_now: HashMap<u32, Flags> = HashMap::new();
    for m in moves {
        let Some(r) = known.get(&m.uid) else { continue };
        let far = far_flags.get(&m.uid).copied().unwrap_or(r.flags);
        far_now.insert(m.uid, far);
        journal.push(MoveRow {
            from_folder: row.id,
            uid: m.uid,
            to_folder: m.to.id,
            near_id: m.entry.unique().to_string(),
            flags: merged_flags(r.flags, m.entry.flags, far),
            size: r.size,
            message_id: state.message_id_of(row.id, m.uid).map_err(|e| lerr(&e))?,
            // The destination's UIDNEXT as last seen: the message arrives above it.
            uid_floor: m.to.uidnext.max(1),
        });
    }
    state.journal_moves(&journal).map_err(|e| lerr(&e))?;
    ctx.step()?;
    let mut moved = 0;
    for m in moves {
        if journal.iter().any(|j| j.to_folder == m.to.id && j.uid == m.uid) {
            let group: Vec<MoveRow> = journal.iter().filter(|j| j.to_folder == m.to.id).cloned().collect();
            journal.retain(|j| j.to_folder != m.to.id);
            moved += complete_moves(ctx, session, state, row, &m.to, group, &far_now)?;
        }
    }
    Ok(moved)
}

/// The second half of a move, from the selected folder `from` to `to`: the flags each
/// message is to carry set on the source, UID MOVE, the local files' flags, one commit.
/// A move whose new UID the server does not say stays journaled, for [`recover`].
fn complete_moves(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    from: &FolderRow,
    to: &FolderRow,
    journal: Vec<MoveRow>,
    far_now: &HashMap<u32, Flags>,
) -> Result<u64, SyncError> {
    let account = ctx.name().to_string();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&account, Some(&from.display_name), e.to_string());
    let imap = |e: syncmail_imap::Error| errors::from_imap(&account, Some(&from.display_name), &e);
    let stores: Vec<(u32, Flags, Flags)> = journal
        .iter()
        .filter_map(|m| {
            let far = far_now.get(&m.uid).copied()?;
            (far != m.flags).then(|| (m.uid, m.flags.difference(far), far.difference(m.flags)))
        })
        .collect();
    if !stores.is_empty() {
        session.store_flags(&stores).map_err(imap)?;
    }
    let uids: Vec<u32> = journal.iter().map(|m| m.uid).collect();
    let map = match session.move_messages(&uids, &to.far_name).map_err(imap)? {
        Some((v, map)) if to.uidvalidity == 0 || v == to.uidvalidity => map,
        _ => HashMap::new(),
    };
    let done: Vec<(MoveRow, Option<u32>)> =
        journal.into_iter().filter_map(|m| map.get(&m.uid).map(|u| (m.clone(), Some(*u)))).collect();
    // The local file takes the merged flags before the record: a crash in between
    // leaves a file whose flags the next plan reads as a local change, which they are.
    let dest = Folder::new(ctx.account.maildir.join(&to.near_path));
    let scan = dest.scan().map_err(|e| lerr(&e))?;
    for (m, _) in &done {
        if let Some(e) = scan.get(&m.near_id)
            && e.flags != m.flags
        {
            dest.set_flags(e, m.flags).map_err(|e| lerr(&e))?;
        }
    }
    state.finish_moves(&done).map_err(|e| lerr(&e))?;
    ctx.step()?;
    Ok(done.len() as u64)
}

/// Resolves moves a crash interrupted: a message still in its source folder is moved
/// now (its flags may have been set already, which must not read as a change on the
/// server); one that left it is looked for in the destination and recorded there, or,
/// not found, forgotten in the source, so that the local file is uploaded as new.
pub(crate) fn recover(ctx: &mut Ctx<'_>, session: &mut Session, state: &mut State) -> Result<(), SyncError> {
    let name = ctx.name().to_string();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&name, None, e.to_string());
    let pending = state.moves().map_err(|e| lerr(&e))?;
    if pending.is_empty() {
        return Ok(());
    }
    let folders = state.folders().map_err(|e| lerr(&e))?;
    let by_id = |id: i64| folders.iter().find(|f| f.id == id);
    for m in pending {
        let (Some(from), Some(to)) = (by_id(m.from_folder), by_id(m.to_folder)) else { continue };
        let imap = |e: syncmail_imap::Error| errors::from_imap(&name, Some(&from.display_name), &e);
        session.select(&from.far_name, None).map_err(imap)?;
        if !session.still_there(&[m.uid]).map_err(imap)?.is_empty() {
            let far_now = session.current_flags(&[m.uid]).map_err(imap)?;
            let (from, to) = (from.clone(), to.clone());
            complete_moves(ctx, session, state, &from, &to, vec![m], &far_now)?;
            continue;
        }
        session.select(&to.far_name, None).map_err(imap)?;
        let dir = Folder::new(ctx.account.maildir.join(&to.near_path));
        let scan = dir.scan().map_err(|e| lerr(&e))?;
        let found = match scan.get(&m.near_id) {
            Some(e) => {
                let data = lf_to_crlf(&dir.read(e).map_err(|e| lerr(&e))?);
                let exclude: BTreeSet<u32> = state.messages(to.id).map_err(|e| lerr(&e))?.into_keys().collect();
                session.find_appended(m.uid_floor, &m.message_id, &data, &exclude).map_err(imap)?
            }
            None => None,
        };
        state.finish_moves(&[(m, found)]).map_err(|e| lerr(&e))?;
        ctx.step()?;
    }
    Ok(())
}

/// New server messages of `row` (UID, size) that are already here in another folder:
/// UID → (the local file, its Message-ID). Asks the server for Message-IDs only of
/// messages whose size some known message elsewhere has.
pub(crate) fn local_copies(
    ctx: &Ctx<'_>,
    session: &mut Session,
    state: &State,
    index: &mut NearIndex,
    row: &FolderRow,
    downloads: &[(u32, u64)],
    email_ids: &HashMap<u32, String>,
) -> Result<LocalCopies, String> {
    let mut out = HashMap::new();
    if !index.had_messages {
        return Ok(out);
    }
    let mut candidates = Vec::new();
    for (uid, size) in downloads {
        // With OBJECTID the server names the message: no guessing, no extra request.
        if let Some(id) = email_ids.get(uid) {
            if let Some(p) = index.local_copy_by_email_id(ctx, state, row.id, id)? {
                out.insert(*uid, (p, String::new()));
            }
            continue;
        }
        if lock(&index.attic).by_identity.keys().any(|(s, _)| s == size)
            || state.size_known_elsewhere(row.id, *size).map_err(|e| e.to_string())?
        {
            candidates.push(*uid);
        }
    }
    if candidates.is_empty() {
        return Ok(out);
    }
    let ids = session.identities_of(&candidates).map_err(|e| e.to_string())?;
    for (uid, (size, mid)) in ids {
        if let Some(p) = index.local_copy(ctx, state, row.id, size, &mid)? {
            out.insert(uid, (p, mid));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_trusted_only_when_every_candidate_holds_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str, data: &[u8]| {
            let path = dir.path().join(n);
            fs::write(&path, data).unwrap();
            path
        };
        let (a, b, c) = (p("a", b"same"), p("b", b"same"), p("c", b"diff"));
        assert_eq!(same_content(&[]).unwrap(), None);
        assert_eq!(same_content(std::slice::from_ref(&c)).unwrap(), Some(c.clone()));
        assert_eq!(same_content(&[a.clone(), b]).unwrap(), Some(a.clone()));
        assert_eq!(same_content(&[a.clone(), c]).unwrap(), None, "two messages under one identity: download");
        // A file renamed or removed since it was listed is left out, not an error.
        let gone = dir.path().join("gone");
        assert_eq!(same_content(&[gone.clone(), a.clone()]).unwrap(), Some(a));
        assert_eq!(same_content(&[gone]).unwrap(), None);
    }

    #[test]
    fn moved_flags_take_each_sides_changes() {
        let (s, f, r) = (Flags::SEEN, Flags::FLAGGED, Flags::ANSWERED);
        // Seen set here, flagged set there, answered unchanged on both.
        assert_eq!(merged_flags(r, r.union(s), r.union(f)), r.union(s).union(f));
        // Removed here wins over unchanged there.
        assert_eq!(merged_flags(s.union(f), f, s.union(f)), f);
    }
}
