//! One folder's sync: select, learn what changed on each side, plan, carry out, record.
//!
//! Crash safety, step by step (each step is durable before the next begins, and each
//! ends with `Ctx::step`, where the crash tests interrupt):
//! 1. uploads interrupted by a crash are resolved first: each journaled APPEND is looked
//!    for on the server (Message-ID, size, then content) and adopted, or dropped so that
//!    the message is planned again;
//! 2. flag renames and deletions of local files, flag stores and deletions on the server,
//!    then an fsync of `cur/` and `new/` and one state commit. A crash before that commit
//!    leaves both sides changed the same way, which the next plan reads as agreement;
//! 3. per new local message: the upload is journaled, sent, and its UID recorded;
//! 4. per batch of new server messages: the batch is journaled as `pending` rows (UID →
//!    the unique name its file will get); the files are written to `tmp/`, fsynced, moved
//!    into `new/`/`cur/`, the directories fsynced; then one commit turns the rows into
//!    synced ones and moves the folder's UIDNEXT mark past the batch;
//! 5. last, the folder's mark (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) is committed.

use super::message::{header, lf_to_crlf};
use super::moves::{self, NearIndex};
use super::plan::{Action, FarView, Mode, plan};
use super::{Ctx, errors, writer};
use crate::api::{ErrorKind, FolderReport, Step, SyncError};
use crate::far::{Body, FlagQuery, Mailbox, MailboxStatus, Session};
use crate::state::{AppendRow, FarMark, FolderRow, State};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncmail_imap::Error as ImapError;
use syncmail_maildir::{self as maildir, Entry, Folder};

/// Messages per state commit (one journal step), and the bytes after which a batch ends
/// early. Each batch ends in one syncfs(2): large batches keep the file system from
/// flushing under the writes (file creation stalls on blocks under writeback).
const BATCH: usize = 2000;
const BATCH_BYTES: u64 = 128 << 20;
/// UIDs per UID FETCH command, and how many such commands are in flight at once.
const FETCH_CHUNK: usize = 50;
const FETCH_WINDOW: usize = 4;
/// Messages of this size or more are streamed to their file as they arrive, never held
/// in memory whole.
const STREAM_FROM: u64 = 1 << 20;

pub(crate) enum FolderError {
    /// This folder failed; the others can go on.
    Folder(SyncError),
    /// The session or the store broke; the run ends.
    Fatal(SyncError),
    /// Not synced now: another lane works at the same time, and this folder's plan
    /// reaches into other folders (see `lanes`). Nothing of the plan was carried out; what
    /// came before it (the first mark, uploads a crash interrupted, a renumbered folder
    /// matched again) is journaled, and the folder's second pass finds it done.
    Deferred,
}

impl From<SyncError> for FolderError {
    fn from(e: SyncError) -> Self {
        FolderError::Fatal(e)
    }
}

fn imap_error(ctx: &Ctx<'_>, folder: &str, e: &ImapError) -> FolderError {
    let mut se = errors::from_imap(ctx.name(), Some(folder), e);
    if !ctx.op.is_empty() {
        se.message = format!("{} while {}", se.message, ctx.op);
    }
    match e {
        ImapError::No { .. } => FolderError::Folder(se),
        _ => FolderError::Fatal(se),
    }
}

fn local_error(ctx: &Ctx<'_>, folder: &str, what: impl std::fmt::Display) -> FolderError {
    FolderError::Fatal(errors::local(ctx.name(), Some(folder), what.to_string()))
}

/// Finds the folder's state row, creating the folder locally (and the row) when the
/// hierarchy may be downloaded. `None`: unknown and not to be created.
pub(crate) fn ensure_folder(
    ctx: &mut Ctx<'_>,
    state: &mut State,
    mb: &Mailbox,
    may_create: bool,
) -> Result<Option<(FolderRow, bool)>, FolderError> {
    let shown = mb.display_name.as_str();
    if let Some(r) = state.folder(&mb.far_name).map_err(|e| local_error(ctx, shown, e))? {
        return Ok(Some((r, false)));
    }
    if !may_create {
        return Ok(None);
    }
    // One folder created at a time: the clash check below and the new row must not
    // interleave with another lane's (two new folders differing only in case would both
    // pass the check, and share one directory where the file system ignores case).
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CREATING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = near_path_of(ctx.account, mb).map_err(|e| {
        FolderError::Folder(SyncError {
            kind: ErrorKind::FolderName,
            account: ctx.name().to_string(),
            folder: Some(shown.to_string()),
            message: e.to_string(),
            server_text: Some(mb.far_name.clone()),
            hint: "the folder is skipped, the rest of the account syncs; rename it on the server \
                   or exclude it in [accounts.NAME.folders]"
                .into(),
            retryable: false,
        })
    })?;
    let path_str = path.to_string_lossy().into_owned();
    if let Some(other) = clashing_folder(state, &path_str).map_err(|e| local_error(ctx, shown, e))? {
        return Err(FolderError::Folder(SyncError {
            kind: ErrorKind::FolderName,
            account: ctx.name().to_string(),
            folder: Some(shown.to_string()),
            message: format!("folder {shown:?} would share the directory {path_str:?} with {:?}", other.display_name),
            server_text: None,
            hint: "exclude one of the two in [accounts.NAME.folders]".into(),
            retryable: false,
        }));
    }
    let new_dir = ctx.account.maildir.join(&path);
    Folder::new(&new_dir).create().map_err(|e| local_error(ctx, shown, e))?;
    // The new directories must survive a power loss before the state says they exist.
    let mut p = new_dir.as_path();
    while let Some(parent) = p.parent() {
        maildir::sync_dir(parent).map_err(|e| local_error(ctx, shown, e))?;
        if parent == ctx.account.maildir {
            break;
        }
        p = parent;
    }
    let row = state.add_folder(&mb.far_name, shown, &path_str, mb.delimiter).map_err(|e| local_error(ctx, shown, e))?;
    Ok(Some((row, true)))
}

/// Where a server folder lives locally: the fixed local name of its special use where the
/// account gives one (`[folders.local-names]`), else its name split at its delimiter.
pub(crate) fn near_path_of(
    account: &crate::config::AccountConfig,
    mb: &Mailbox,
) -> maildir::Result<std::path::PathBuf> {
    let names = &account.folders.local_names;
    if !names.is_empty()
        && let Some(local) =
            mb.attributes.iter().find_map(|a| names.get(&a.trim_start_matches('\\').to_ascii_lowercase()))
    {
        return account.layout.folder_path(local, Some('/'));
    }
    account.layout.folder_path(&mb.display_name, mb.delimiter)
}

/// A path's key for telling folders apart on any file system: case-folded and in Unicode
/// normal form C (case-insensitive file systems, and macOS's decomposed names, would put
/// `Work` and `work`, or `é` and `e`+U+0301, in one directory).
pub(crate) fn path_key(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    path.nfc().collect::<String>().to_lowercase()
}

/// A known folder whose directory is `near_path`, or would be on a file system that
/// ignores case or Unicode normalization.
pub(crate) fn clashing_folder(state: &State, near_path: &str) -> rusqlite::Result<Option<FolderRow>> {
    if let Some(f) = state.folder_by_path(near_path)? {
        return Ok(Some(f));
    }
    let key = path_key(near_path);
    Ok(state.folders()?.into_iter().find(|f| path_key(&f.near_path) == key))
}

/// Whether the Maildir holds exactly what the state agreed on: every known message's file
/// with its agreed flags, no other file, no upload or download under way.
pub(crate) fn near_unchanged(
    known: &std::collections::BTreeMap<u32, crate::state::MessageRow>,
    near: &HashMap<String, Entry>,
) -> bool {
    near.len() == known.len()
        && known.values().all(|r| !r.pending && near.get(&r.near_id).is_some_and(|e| e.flags == r.flags))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sync_folder(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mb: &Mailbox,
    status: Option<MailboxStatus>,
    may_create: bool,
    mode: Mode,
    trash: Option<&str>,
    index: &mut NearIndex,
) -> Result<Option<FolderReport>, FolderError> {
    let r = sync_folder_once(ctx, session, state, mb, status, may_create, mode, trash, false, index);
    // Whatever happened here, what was read of this folder's files is stale now.
    if let Ok(Some(row)) = state.folder(&mb.far_name) {
        index.invalidate(row.id);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn sync_folder_once(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mb: &Mailbox,
    status: Option<MailboxStatus>,
    may_create: bool,
    mode: Mode,
    trash: Option<&str>,
    renumbered: bool,
    index: &mut NearIndex,
) -> Result<Option<FolderReport>, FolderError> {
    let shown = mb.display_name.as_str();
    let Some((row, created)) = ensure_folder(ctx, state, mb, may_create)? else { return Ok(None) };
    let mut report = FolderReport { folder: shown.to_string(), created, ..Default::default() };

    let dir = Folder::new(ctx.account.maildir.join(&row.near_path));
    let dir_existed = dir.exists();
    let lerr = |ctx: &Ctx<'_>, e: &dyn std::fmt::Display| local_error(ctx, shown, e);
    if !dir_existed {
        // A folder that vanished with messages the state knows (an unmounted disk, a
        // slip of `rm`) is left alone, run after run, until the person confirms: recreating
        // it empty would turn every message into a deletion once the guard looks away.
        let known_count = state.message_count(row.id).map_err(|e| lerr(ctx, &e))?;
        if known_count > 0 && !ctx.req.confirm_deletions && mode.upload {
            return Err(FolderError::Folder(SyncError {
                kind: ErrorKind::DeletionsHeld,
                account: ctx.name().to_string(),
                folder: Some(shown.to_string()),
                message: format!(
                    "the local folder {} is missing, with {known_count} messages syncmail knows; nothing was \
                     done in it, on either side",
                    dir.path().display()
                ),
                server_text: None,
                hint: "restore the folder (the server still has every message); or, if you deleted it on \
                       purpose, run `syncmail sync --confirm-deletions` to delete its messages on the server too"
                    .into(),
                retryable: false,
            }));
        }
        dir.create().map_err(|e| lerr(ctx, &e))?;
    }

    // An unchanged mark (CONDSTORE) means nothing changed on the server: no SELECT at all.
    let far_unchanged = status.is_some_and(|s| super::lanes::far_unchanged(&row, &s));
    let mut journal = state.appends(row.id).map_err(|e| lerr(ctx, &e))?;
    let busy = !journal.is_empty() || state.has_pending(row.id).map_err(|e| lerr(ctx, &e))?;
    // Upload needs to know whether the Maildir changed: unchanged directory mtimes say it
    // did not; otherwise the listing is compared with the state.
    let mut near: Option<HashMap<String, Entry>> = None;
    let mut known = None;
    let mtimes_read_at = std::time::SystemTime::now();
    let mtimes_now = dir.mtimes();
    let mtimes_same =
        !row.near_mtimes.is_empty() && mtimes_now.map(mtimes_text).as_deref() == Some(row.near_mtimes.as_str());
    let near_quiet = if !mode.upload || mtimes_same {
        true
    } else {
        let n = dir.scan().map_err(|e| lerr(ctx, &e))?;
        let k = state.messages(row.id).map_err(|e| lerr(ctx, &e))?;
        let quiet = near_unchanged(&k, &n);
        near = Some(n);
        known = Some(k);
        quiet
    };
    if far_unchanged && near_quiet && !busy {
        if mode.upload && dir.mtimes() == mtimes_now {
            record_mtimes(state, &row, mtimes_now, mtimes_read_at).map_err(|e| lerr(ctx, &e))?;
        }
        return Ok(Some(report));
    }
    // Narrow: when the Maildir cannot have changed in a way this run acts on (a
    // download-only run leaves local changes for a later upload; unchanged mtimes say
    // there are none) and nothing is under way, only the messages the server names are
    // read from the state and looked for by file name, instead of every row and a listing.
    // Decided for good after SELECT, when it is known that the server names them all.
    let may_narrow = (!mode.upload || mtimes_same) && journal.is_empty() && !busy && row.uidvalidity != 0;
    let mut known = match known {
        Some(k) => k,
        None if may_narrow => BTreeMap::new(),
        None => state.messages(row.id).map_err(|e| lerr(ctx, &e))?,
    };

    ctx.op = "selecting the folder (SELECT)";
    let sel = match session.select(&mb.far_name, Some((row.uidvalidity, row.highestmodseq))) {
        Ok(sel) => sel,
        // Deleted on the server since the folder list was read (another client, while
        // this run worked): nothing to do in it now; the next run's hierarchy step sees
        // it gone and follows the deletion rules.
        Err(e @ ImapError::No { .. }) => {
            if !session.gone_after_refusal(&mb.far_name).map_err(|e| imap_error(ctx, shown, &e))? {
                return Err(imap_error(ctx, shown, &e));
            }
            ctx.progress(
                Step::CheckFolder,
                format!("{shown} was deleted on the server during this sync; the next sync follows"),
                Some(shown),
                (0, 0),
                (0, 0),
            );
            return Ok(None);
        }
        Err(e) => return Err(imap_error(ctx, shown, &e)),
    };
    if let Some(id) = sel.mailbox_id.as_deref()
        && id != row.mailbox_id
    {
        state.set_mailbox_id(row.id, id).map_err(|e| lerr(ctx, &e))?;
    }
    if row.uidvalidity != 0 && sel.uidvalidity != row.uidvalidity && renumbered {
        return Err(FolderError::Folder(SyncError {
            kind: ErrorKind::UidValidity,
            account: ctx.name().to_string(),
            folder: Some(shown.to_string()),
            message: "the server renumbered the folder twice within one sync; it was left alone".into(),
            server_text: None,
            hint: "the server's UIDs are not stable; try again later, and report it if it persists".into(),
            retryable: true,
        }));
    }
    if row.uidvalidity != 0 && sel.uidvalidity != row.uidvalidity {
        // Renumbered: match the messages again, then sync the folder as it is now.
        ctx.op = "matching renumbered messages";
        match super::rematch::rematch(ctx, session, state, &row, &dir, sel.uidvalidity)? {
            super::rematch::Outcome::Rematched { matched, local } => ctx.progress(
                Step::CheckFolder,
                format!(
                    "the server renumbered {shown} (UIDVALIDITY {} → {}); {matched} of {local} local messages \
                     matched again, none downloaded twice",
                    row.uidvalidity, sel.uidvalidity
                ),
                Some(shown),
                (0, 0),
                (0, 0),
            ),
            super::rematch::Outcome::MovedAside { moved_to } => {
                let e = super::rematch::moved_aside_error(ctx, &row, sel.uidvalidity, &moved_to);
                ctx.error(e);
            }
        }
        ctx.step()?;
        return sync_folder_once(ctx, session, state, mb, None, false, mode, trash, true, index);
    }
    if let Some(n) = sel.uidnext
        && row.uidvalidity != 0
        && n < row.uidnext
    {
        // RFC 3501 §2.3.1.1: UIDNEXT never decreases unless UIDVALIDITY changes. A server
        // that lowers it may hand out UIDs already seen: none of its UIDs can be trusted.
        return Err(FolderError::Folder(SyncError {
            kind: ErrorKind::Server,
            account: ctx.name().to_string(),
            folder: Some(shown.to_string()),
            message: format!(
                "the server's UIDNEXT went backwards ({n}, after {}) under the same UIDVALIDITY; the folder \
                 was left alone",
                row.uidnext
            ),
            server_text: None,
            hint: "the server's UIDs cannot be trusted; report it to the server's administrator (rebuilding \
                   the server's index gives the folder a new UIDVALIDITY, which syncmail handles)"
                .into(),
            retryable: false,
        }));
    }
    let first_time = row.uidvalidity == 0;
    if first_time {
        let mark = FarMark { uidvalidity: sel.uidvalidity, uidnext: 1, highestmodseq: 0, far_count: 0 };
        state.commit(row.id, &[], &[], Some(mark)).map_err(|e| lerr(ctx, &e))?;
    }
    // A UID floor for this session's uploads: they all get UIDs at or above it.
    // (Narrow, `known` is empty here; the recorded UIDNEXT is a floor as good.)
    let floor =
        sel.uidnext.unwrap_or_else(|| known.keys().next_back().map_or(1, |u| u.saturating_add(1)).max(row.uidnext));

    let mut near = match near {
        Some(n) => n,
        None if may_narrow => HashMap::new(),
        None => dir.scan().map_err(|e| lerr(ctx, &e))?,
    };

    // Step 1: uploads a crash interrupted.
    let mut still_sent: BTreeSet<String> = BTreeSet::new();
    ctx.op = "looking for an interrupted upload (UID SEARCH)";
    if !journal.is_empty() {
        for a in std::mem::take(&mut journal) {
            let found = match near.get(&a.near_id) {
                Some(e) => {
                    let data = lf_to_crlf(&dir.read(e).map_err(|e| lerr(ctx, &e))?);
                    let exclude: BTreeSet<u32> = known.keys().copied().collect();
                    session
                        .find_appended(a.uid_floor, &a.message_id, &data, &exclude)
                        .map_err(|e| imap_error(ctx, shown, &e))?
                }
                // The file went away meanwhile: nothing to compare with; a copy that did
                // arrive comes down as new mail.
                None => None,
            };
            if found.is_none() && a.sent {
                still_sent.insert(a.near_id.clone());
                continue;
            }
            state.finish_append(row.id, &a, found).map_err(|e| lerr(ctx, &e))?;
            ctx.step()?;
        }
        known = state.messages(row.id).map_err(|e| lerr(ctx, &e))?;
    }

    // What changed on the server.
    // A HIGHESTMODSEQ below the mark (an index rebuilt on the server) voids the mark.
    let modseq_known =
        !first_time && row.highestmodseq != 0 && sel.highestmodseq.is_some_and(|m| m >= row.highestmodseq);
    let query = if sel.qresync_used || (modseq_known && sel.highestmodseq == Some(row.highestmodseq)) {
        FlagQuery::Nothing
    } else if modseq_known {
        FlagQuery::ChangedSince(row.highestmodseq)
    } else {
        FlagQuery::All
    };
    // QRESYNC names expunges. With CONDSTORE alone an expunge need not move HIGHESTMODSEQ
    // (RFC 7162 §3.2.10 asks it of QRESYNC servers only), but it changes the count.
    let need_uids = !sel.qresync_used
        && modseq_known
        && (sel.highestmodseq != Some(row.highestmodseq) || sel.exists != row.far_count);
    let list_new = sel.exists > 0 && sel.uidnext.is_none_or(|n| n > row.uidnext);
    // Narrow only where the server names every change: QRESYNC's changed and vanished
    // messages, or nothing changed but new mail. Otherwise every row and a listing.
    let mut narrow = may_narrow && query != FlagQuery::All && !need_uids;
    let known_count = if may_narrow { state.message_count(row.id).map_err(|e| lerr(ctx, &e))? } else { known.len() };
    ctx.op = "reading what changed (UID FETCH FLAGS)";
    let changes = if known_count == 0 && !list_new {
        Default::default()
    } else {
        session.changes(row.uidnext, query, need_uids, list_new).map_err(|e| imap_error(ctx, shown, &e))?
    };
    let email_ids = changes.email_ids;
    // Many changes: one read of every row is cheaper than a lookup each.
    narrow = narrow && sel.changed.len() + changes.flags.len() <= known_count / 8;
    if narrow {
        // The rows of the messages named (changed, vanished, at or above the recorded
        // UIDNEXT), and their files where syncmail left them. A file not there (a reader
        // renamed or deleted it) means the Maildir differs from the state after all: then
        // every row and a listing, as in a wide run.
        let mut ranges: Vec<(u32, u32)> = sel.changed.keys().chain(changes.flags.keys()).map(|u| (*u, *u)).collect();
        ranges.extend(sel.vanished.iter().copied());
        ranges.push((row.uidnext, u32::MAX));
        known = state.messages_between(row.id, &ranges).map_err(|e| lerr(ctx, &e))?;
        let found: Option<HashMap<String, Entry>> =
            known.values().map(|r| dir.find_as_named(&r.near_id, r.flags).map(|e| (r.near_id.clone(), e))).collect();
        match found {
            Some(n) => near = n,
            None => narrow = false,
        }
    }
    if may_narrow && !narrow {
        known = state.messages(row.id).map_err(|e| lerr(ctx, &e))?;
        near = dir.scan().map_err(|e| lerr(ctx, &e))?;
    }
    let mut far = FarView { new: changes.new, ..Default::default() };
    let listed_flags: HashMap<u32, syncmail_imap::Flags> = far.new.iter().map(|(u, (_, f))| (*u, *f)).collect();
    if sel.qresync_used {
        far.flags = sel.changed.iter().filter(|(u, _)| **u < row.uidnext).map(|(u, f)| (*u, *f)).collect();
        for (a, b) in &sel.vanished {
            far.gone.extend(known.range(*a..=*b).map(|(u, _)| *u));
        }
    } else {
        far.flags = changes.flags;
    }
    if let Some(mut present) = changes.present {
        far.gone.extend(known.keys().copied().filter(|u| *u < row.uidnext && !present.contains(*u)));
    }
    // The listing from the old UIDNEXT on is complete: a known UID there (an upload or a
    // download not yet covered by the mark) that it lacks is gone, and the flags it shows
    // are current.
    for uid in known.range(row.uidnext..).map(|(u, _)| *u) {
        match far.new.get(&uid) {
            Some((_, flags)) => {
                far.flags.insert(uid, *flags);
            }
            None => {
                far.gone.insert(uid);
            }
        }
    }

    let mut actions = plan(&known, &far, &near, &still_sent, mode);
    // A file a mail reader renamed while the directory was read may be missing from that
    // listing. Before a missing file deletes a message on the server or is downloaded
    // again, a second listing must agree that it is gone.
    // New mail (a Download of a UID the state does not know) needs no second look.
    if actions.iter().any(|a| match a {
        Action::DeleteFar { .. } => true,
        Action::Download { uid, .. } => known.contains_key(uid),
        _ => false,
    }) {
        let again = dir.scan().map_err(|e| lerr(ctx, &e))?;
        let mut changed = false;
        for (id, e) in again {
            if !near.contains_key(&id) && known.values().any(|r| r.near_id == id) {
                near.insert(id, e);
                changed = true;
            }
        }
        if changed {
            actions = plan(&known, &far, &near, &still_sent, mode);
        }
    }
    // Uploads and deletions on the server reach into other folders: a message missing
    // here may have moved to another folder, a new file here may have come from one. With
    // another lane at work they wait for the first connection alone, before anything of
    // this plan is carried out.
    if ctx.concurrent && actions.iter().any(|a| matches!(a, Action::Append { .. } | Action::DeleteFar { .. })) {
        return Err(FolderError::Deferred);
    }
    // Messages missing here that a mail reader moved to another folder: moved on the
    // server too, not deleted (and so not counted by the guard).
    let local_moves = if mode.upload && session.has("UIDPLUS") {
        let gone: Vec<u32> =
            actions.iter().filter_map(|a| if let Action::DeleteFar { uid } = a { Some(*uid) } else { None }).collect();
        moves::find_local_moves(ctx, state, index, &row, &gone, &known).map_err(|e| lerr(ctx, &e))?
    } else {
        Vec::new()
    };
    if !local_moves.is_empty() {
        let moving: BTreeSet<u32> = local_moves.iter().map(|m| m.uid).collect();
        actions.retain(|a| !matches!(a, Action::DeleteFar { uid } if moving.contains(uid)));
    }
    let held_near = hold_mass_deletions(ctx, &mut actions, &mut report, known_count, dir_existed, shown);

    // Step 2: flags and deletions on both sides, then one commit.
    let mut agreed = Vec::new();
    let mut forget = Vec::new();
    let mut far_flags = Vec::new();
    let mut far_deletes = Vec::new();
    let mut appends = Vec::new();
    let mut downloads = Vec::new();
    let mut touched = false;
    // Messages whose file a mail reader moved under us: left for the next run.
    let mut moved: BTreeSet<u32> = BTreeSet::new();
    let mut placeholders: Option<BTreeSet<u32>> = None;
    for a in actions {
        match a {
            Action::SetNearFlags { uid, entry, flags } => match dir.set_flags(&entry, flags) {
                Ok(_) => {
                    report.flags_changed += 1;
                    touched = true;
                    ctx.step()?;
                }
                Err(maildir::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    moved.insert(uid);
                }
                Err(e) => return Err(lerr(ctx, &e)),
            },
            Action::SetFarFlags { uid, add, remove } => far_flags.push((uid, add, remove)),
            Action::Agree { uid, flags } if moved.contains(&uid) => {
                let _ = flags; // not agreed: the next run looks again
            }
            Action::Agree { uid, flags } => agreed.push((uid, flags)),
            Action::DeleteNear { uid, entry } => {
                let size = known.get(&uid).map_or(0, |r| r.size);
                // A placeholder is never kept as a local copy of a message moved elsewhere.
                let placeholders = match &placeholders {
                    Some(p) => p,
                    None => placeholders.insert(state.placeholders(row.id).map_err(|e| lerr(ctx, &e))?),
                };
                let (mid, email_id) = if placeholders.contains(&uid) {
                    Default::default()
                } else {
                    state.identity_of(row.id, uid).map_err(|e| lerr(ctx, &e))?
                };
                index.remove_to_attic(ctx, &dir, &entry, size, mid, email_id).map_err(|e| lerr(ctx, &e))?;
                forget.push(uid);
                report.deleted += 1;
                touched = true;
                ctx.step()?;
            }
            Action::DeleteFar { uid } => {
                far_deletes.push(uid);
                forget.push(uid);
            }
            Action::Forget { uid, .. } => forget.push(uid),
            Action::Append { entry } => appends.push(entry),
            Action::Download { uid, size } => downloads.push((uid, size)),
        }
    }
    if !far_flags.is_empty() {
        ctx.op = "storing flags (UID STORE)";
        session.store_flags(&far_flags).map_err(|e| imap_error(ctx, shown, &e))?;
        report.far_flags_changed = far_flags.len() as u64;
        ctx.step()?;
    }
    if !local_moves.is_empty() {
        ctx.op = "moving messages moved locally (UID MOVE)";
        let moved = moves::move_on_server(ctx, session, state, &row, &local_moves, &known, &far.flags)?;
        report.moved_on_server += moved;
        for m in &local_moves {
            index.invalidate(m.to.id);
        }
    }
    if !far_deletes.is_empty() {
        let warning =
            session.delete(&far_deletes, ctx.account.delete_policy, trash).map_err(|e| imap_error(ctx, shown, &e))?;
        report.far_deleted = far_deletes.len() as u64;
        if let Some(w) = warning {
            ctx.error(SyncError {
                kind: ErrorKind::Server,
                account: ctx.name().to_string(),
                folder: Some(shown.to_string()),
                message: w,
                server_text: None,
                hint: "set delete-policy = \"flag\" to keep this behaviour quietly, or expunge on the server".into(),
                retryable: false,
            });
        }
        ctx.step()?;
    }
    // The folder's new mark. It moves past the server's changes only when this run
    // carried them all out: an upload-only run, or expunges held by the guard, keep the
    // old mark, so those changes are reported again next time. `max_uid`: the highest UID
    // this run downloaded.
    let new_mark = |max_uid: u32| {
        if mode.download && !held_near {
            FarMark {
                uidvalidity: sel.uidvalidity,
                uidnext: sel.uidnext.unwrap_or(0).max(max_uid.saturating_add(1)).max(row.uidnext),
                highestmodseq: sel.highestmodseq.unwrap_or(0),
                far_count: sel.exists,
            }
        } else {
            FarMark {
                uidvalidity: sel.uidvalidity,
                uidnext: if mode.download { max_uid.saturating_add(1).max(row.uidnext) } else { row.uidnext.max(1) },
                highestmodseq: if first_time { 0 } else { row.highestmodseq },
                far_count: row.far_count,
            }
        }
    };
    // With nothing to upload or download after it, this step's commit carries the mark
    // too: one commit (and one fsync) for the folder instead of two.
    let mut marked = false;
    if !agreed.is_empty() || !forget.is_empty() || touched {
        ctx.progress(
            Step::ApplyChanges,
            format!(
                "{} flag changes and {} deletions here, {} flag changes and {} deletions on the server",
                report.flags_changed, report.deleted, report.far_flags_changed, report.far_deleted
            ),
            Some(shown),
            (0, 0),
            (0, 0),
        );
        if touched {
            dir.sync().map_err(|e| lerr(ctx, &e))?;
        }
        marked = appends.is_empty() && downloads.is_empty();
        let mark = if marked { Some(new_mark(0)) } else { None };
        state.commit(row.id, &agreed, &forget, mark).map_err(|e| lerr(ctx, &e))?;
        ctx.step()?;
    }

    // Step 3: uploads, one journaled APPEND each.
    ctx.op = "uploading (APPEND)";
    let total_up = appends.len() as u64;
    for (i, entry) in appends.iter().enumerate() {
        if ctx.cancel.is_cancelled() {
            ctx.report.cancelled = true;
            return Ok(Some(report));
        }
        let data = lf_to_crlf(&dir.read(entry).map_err(|e| lerr(ctx, &e))?);
        if data.contains(&0) {
            ctx.error(message_error(ctx, shown, entry, "it contains a NUL byte, which IMAP cannot carry", None));
            continue;
        }
        if moves::is_move_in_flight(ctx, state, index, &row, entry, &data).map_err(|e| lerr(ctx, &e))? {
            // Moved here from a folder not synced yet: that folder's sync moves it on the
            // server; uploading it too would make two.
            continue;
        }
        if super::placeholder::is_placeholder(&data) {
            // A placeholder syncmail no longer knows (its state row lost, or copied by
            // hand): its body is not here, so it must never reach the server as a message.
            ctx.error(SyncError {
                hint: "it is not uploaded; if it is a copy, delete it; to have the message here too, run \
                       `syncmail fetch` where it came from first, then copy that"
                    .into(),
                ..message_error(
                    ctx,
                    shown,
                    entry,
                    &format!(
                        "it is a placeholder ({} header): its body was never downloaded",
                        super::placeholder::MARKER
                    ),
                    None,
                )
            });
            continue;
        }
        let a = AppendRow {
            near_id: entry.unique().to_string(),
            flags: entry.flags,
            size: data.len() as u64,
            message_id: header(&data, "Message-ID").unwrap_or_default(),
            uid_floor: floor,
            sent: false,
        };
        state.journal_append(row.id, &a).map_err(|e| lerr(ctx, &e))?;
        ctx.step()?;
        ctx.progress(
            Step::Upload,
            format!("uploading {total_up} new messages"),
            Some(shown),
            (i as u64 + 1, total_up),
            (0, 0),
        );
        let uid = match session.append(&mb.far_name, sel.uidvalidity, entry.flags, &data) {
            Ok(Some(uid)) => Some(uid),
            Ok(None) => {
                let exclude: BTreeSet<u32> = known.keys().copied().collect();
                let found = session
                    .find_appended(floor, &a.message_id, &data, &exclude)
                    .map_err(|e| imap_error(ctx, shown, &e))?;
                if found.is_none() {
                    // The server took it but it cannot be found again: it must never be sent
                    // a second time. The journal row stays, marked as sent.
                    state.mark_append_sent(row.id, &a.near_id).map_err(|e| lerr(ctx, &e))?;
                    ctx.error(message_error(
                        ctx,
                        shown,
                        entry,
                        "the server accepted it but syncmail cannot find it again; it will not be uploaded \
                         again, and the server's copy may come down as a second local copy",
                        None,
                    ));
                    ctx.step()?;
                    continue;
                }
                found
            }
            Err(e @ (ImapError::No { .. } | ImapError::Bad { .. })) => {
                let words = e.server_text().map(str::to_string);
                ctx.error(message_error(ctx, shown, entry, "the server refused it", words));
                state.finish_append(row.id, &a, None).map_err(|e| lerr(ctx, &e))?;
                continue;
            }
            Err(e) => return Err(imap_error(ctx, shown, &e)),
        };
        ctx.step()?;
        state.finish_append(row.id, &a, uid).map_err(|e| lerr(ctx, &e))?;
        if let Some(uid) = uid {
            known.insert(
                uid,
                crate::state::MessageRow {
                    uid,
                    near_id: a.near_id.clone(),
                    flags: a.flags,
                    size: a.size,
                    pending: false,
                },
            );
        }
        report.uploaded += 1;
        ctx.step()?;
    }

    // Step 4: downloads, batch by batch.
    ctx.op = "downloading (UID FETCH)";
    let mut flags_now = listed_flags;
    flags_now.extend(far.flags.iter().map(|(u, f)| (*u, *f)));
    let copies = if downloads.is_empty() {
        HashMap::new()
    } else {
        moves::local_copies(ctx, session, state, index, &row, &downloads, &email_ids).map_err(|e| lerr(ctx, &e))?
    };
    let plan = DownloadPlan {
        row: &row,
        dir: &dir,
        downloads: &downloads,
        copies: &copies,
        index,
        email_ids: &email_ids,
        flags_now: &flags_now,
        far: (sel.uidvalidity, first_time),
        new_mark: &new_mark,
    };
    let (max_uid, landed_mark) = download(ctx, session, state, &plan, &mut report)?;
    if ctx.report.cancelled || ctx.preempted {
        return Ok(Some(report));
    }

    // Step 5: the folder's new mark (unless step 2's or the last download's commit
    // carried it already).
    if !marked && !landed_mark {
        state.commit(row.id, &[], &[], Some(new_mark(max_uid))).map_err(|e| lerr(ctx, &e))?;
        ctx.step()?;
    }
    if ctx.account.fetch_flagged && mode.download {
        fetch_flagged(ctx, session, state, mb, &mut report)?;
    }
    // The mtimes are recorded only by a run that found the Maildir unchanged (above), and
    // then as read before the listing: a change made while this run worked must not hide
    // behind mtimes taken after it.
    Ok(Some(report))
}

/// `fetch-flagged`: the bodies of the folder's placeholders whose agreed flags (after this
/// sync, so either side's) include `\Flagged`.
fn fetch_flagged(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mb: &Mailbox,
    report: &mut FolderReport,
) -> Result<(), FolderError> {
    let lerr = |ctx: &Ctx<'_>, e: &dyn std::fmt::Display| local_error(ctx, &mb.display_name, e);
    let Some(row) = state.folder(&mb.far_name).map_err(|e| lerr(ctx, &e))? else { return Ok(()) };
    let marked = state.placeholders(row.id).map_err(|e| lerr(ctx, &e))?;
    if marked.is_empty() {
        return Ok(());
    }
    let known = state.messages(row.id).map_err(|e| lerr(ctx, &e))?;
    let flagged: Vec<u32> = marked
        .into_iter()
        .filter(|u| known.get(u).is_some_and(|r| !r.pending && r.flags.contains(syncmail_imap::Flags::FLAGGED)))
        .collect();
    if !flagged.is_empty() {
        let got = super::fetch::fetch_folder(ctx, session, state, &row, &flagged)?;
        report.bodies_fetched += got.bodies_fetched;
        report.bytes_downloaded += got.bytes_downloaded;
    }
    Ok(())
}

fn mtimes_text((cur, new): (i128, i128)) -> String {
    format!("{cur},{new}")
}

/// Remembers the Maildir's mtimes as those of agreement, unless they are so recent that a
/// change within the same clock tick could hide behind them (then the next run scans).
fn record_mtimes(
    state: &mut State,
    row: &FolderRow,
    mtimes: Option<(i128, i128)>,
    read_at: std::time::SystemTime,
) -> rusqlite::Result<()> {
    // Measured from when they were read: a change right after the reading must get a
    // later mtime, even on a file system whose clock is coarse (2 s on FAT).
    let now = read_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    let text = match mtimes {
        Some((c, n)) if now - c.max(n) > 2_000_000_000 => mtimes_text((c, n)),
        _ => String::new(),
    };
    if text != row.near_mtimes { state.set_near_mtimes(row.id, &text) } else { Ok(()) }
}

fn message_error(ctx: &Ctx<'_>, folder: &str, entry: &Entry, why: &str, words: Option<String>) -> SyncError {
    SyncError {
        kind: ErrorKind::Message,
        account: ctx.name().to_string(),
        folder: Some(folder.to_string()),
        message: format!("cannot upload {}: {why}", entry.file_name),
        server_text: words,
        hint: "the message stays in the local folder and is tried again on the next sync; \
               move it elsewhere if it cannot go to the server"
            .into(),
        retryable: false,
    }
}

/// The mass-deletion guard: when one side lost more of the folder than the account's
/// guard allows (or the local folder vanished), those deletions are not carried out.
/// The messages stay known, so nothing is forgotten, and the error says how to confirm.
fn hold_mass_deletions(
    ctx: &mut Ctx<'_>,
    actions: &mut Vec<Action>,
    report: &mut FolderReport,
    total: usize,
    dir_existed: bool,
    folder: &str,
) -> bool {
    if ctx.req.confirm_deletions {
        return false;
    }
    let guard = ctx.account.delete_guard;
    let far = actions.iter().filter(|a| matches!(a, Action::DeleteFar { .. })).count();
    let near = actions.iter().filter(|a| matches!(a, Action::DeleteNear { .. })).count();
    let hold_far = far > 0 && (!dir_existed || guard.trips(far, total));
    let hold_near = guard.trips(near, total);
    if hold_far {
        actions.retain(|a| !matches!(a, Action::DeleteFar { .. }));
        report.held_deletions += far as u64;
        let why = if dir_existed {
            format!("{far} of the {total} messages were deleted locally since the last sync")
        } else {
            format!("the local folder had vanished, which would delete all {far} of its messages")
        };
        ctx.error(SyncError {
            kind: ErrorKind::DeletionsHeld,
            account: ctx.name().to_string(),
            folder: Some(folder.to_string()),
            message: format!("{why}; the deletions were not carried out on the server"),
            server_text: None,
            hint: "if you meant it, run `syncmail sync --confirm-deletions`; if not, restore the files \
                   (the server still has every message)"
                .into(),
            retryable: false,
        });
    }
    if hold_near {
        actions.retain(|a| !matches!(a, Action::DeleteNear { .. }));
        report.held_deletions += near as u64;
        ctx.error(SyncError {
            kind: ErrorKind::DeletionsHeld,
            account: ctx.name().to_string(),
            folder: Some(folder.to_string()),
            message: format!(
                "the server expunged {near} of the {total} messages since the last sync; the local copies were kept"
            ),
            server_text: None,
            hint: "if that is right, run `syncmail sync --confirm-deletions` to delete the local copies too".into(),
            retryable: false,
        });
    }
    hold_near
}

/// The Message-ID of a message streamed to a file: read from its first 64 KiB.
fn message_id_of_file(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::with_capacity(64 << 10);
    std::fs::File::open(path).ok()?.take(64 << 10).read_to_end(&mut head).ok()?;
    header(&head, "Message-ID")
}

/// Splits downloads into batches of at most `BATCH` messages and about `BATCH_BYTES`.
fn batches(downloads: &[(u32, u64)]) -> Vec<&[(u32, u64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, (_, size)) in downloads.iter().enumerate() {
        if i > start && (i - start >= BATCH || bytes + size > BATCH_BYTES) {
            out.push(&downloads[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < downloads.len() {
        out.push(&downloads[start..]);
    }
    out
}

/// A batch whose files are with the writer, to be committed once it reports them durable
/// and in place.
struct InFlight {
    /// (UID, flags, copied from another folder) of every message sent to the writer.
    entries: Vec<(u32, syncmail_imap::Flags, bool)>,
    ids: Vec<(u32, String, String)>,
    /// Asked for, not sent, and confirmed gone by the server: forgotten in the commit.
    missing: Vec<u32>,
    max_uid: u32,
    done_bytes: u64,
}

/// Downloads new messages in journaled batches; returns the highest UID committed, and
/// whether the last batch's commit carried the folder's new mark (`plan.new_mark`: every
/// download done).
///
/// The files are written by a thread of their own (`writer`) while this one reads the
/// server's answers: batch n+1 is fetched while batch n is made durable and published, and
/// batch n is committed once the writer reports it done. At most one batch is between its
/// fetch and its commit; on an error nothing more is committed and the writer drops what
/// it has not done yet (the pending rows are the journal the next run recovers from, as
/// after a crash), on cancel or preemption the batch in flight is landed first.
fn download(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    plan: &DownloadPlan<'_>,
    report: &mut FolderReport,
) -> Result<(u32, bool), FolderError> {
    let (row, dir) = (plan.row, plan.dir);
    if plan.downloads.is_empty() {
        return Ok((row.uidnext.saturating_sub(1), false));
    }
    // What an interrupted run left in tmp/ (Maildir: older than 36 hours is garbage).
    dir.clean_tmp(std::time::Duration::from_secs(36 * 3600)).map_err(|e| local_error(ctx, &row.display_name, e))?;
    let (failed, abandon) = (std::sync::atomic::AtomicBool::new(false), std::sync::atomic::AtomicBool::new(false));
    let budget = writer::Budget::default();
    let (failed, abandon, budget) = (&failed, &abandon, &budget);
    std::thread::scope(|scope| {
        let (jobs, job_rx) = std::sync::mpsc::channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        scope.spawn(move || writer::run(dir, job_rx, done_tx, failed, abandon, budget));
        let mut pipe = Pipe { jobs, done, failed, budget, in_flight: None };
        let result = download_batches(ctx, session, state, plan, report, &mut pipe);
        // On an error the writer drops what it has not done, as a crash would (the crash
        // tests cut the run with such an error); otherwise it has nothing left.
        if result.is_err() {
            abandon.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    })
}

/// The channels to the writer and the batch it holds.
struct Pipe<'a> {
    jobs: std::sync::mpsc::Sender<writer::Job>,
    done: std::sync::mpsc::Receiver<maildir::Result<usize>>,
    /// Set by the writer when a file could not be written or published.
    failed: &'a std::sync::atomic::AtomicBool,
    budget: &'a writer::Budget,
    in_flight: Option<InFlight>,
}

impl Pipe<'_> {
    fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn send(&self, ctx: &Ctx<'_>, shown: &str, job: writer::Job) -> Result<(), FolderError> {
        self.queue(job).map_err(|_| local_error(ctx, shown, "the file writer stopped"))
    }

    /// Sends a job, first waiting for room in the queue's byte budget.
    fn queue(&self, job: writer::Job) -> Result<(), std::sync::mpsc::SendError<writer::Job>> {
        if let writer::Job::Bytes { data, .. } = &job {
            self.budget.take(data.len() as u64);
        }
        self.jobs.send(job)
    }

    /// Waits for the batch in flight to be durable and in place, then commits it.
    #[allow(clippy::too_many_arguments)]
    fn land(
        &mut self,
        ctx: &mut Ctx<'_>,
        state: &mut State,
        row: &FolderRow,
        report: &mut FolderReport,
        (uidvalidity, first_time): (u32, bool),
        max_uid: &mut u32,
        last: Option<&dyn Fn(u32) -> FarMark>,
    ) -> Result<bool, FolderError> {
        let Some(b) = self.in_flight.take() else { return Ok(false) };
        let shown = row.display_name.as_str();
        let written = self
            .done
            .recv()
            .map_err(|_| local_error(ctx, shown, "the file writer stopped"))?
            .map_err(|e| local_error(ctx, shown, e))?;
        debug_assert_eq!(written, b.entries.len());
        let mut agreed = Vec::with_capacity(b.entries.len());
        for (uid, flags, copied) in b.entries {
            agreed.push((uid, flags));
            if copied {
                report.moved_in += 1;
            } else {
                report.downloaded += 1;
            }
        }
        report.bytes_downloaded = b.done_bytes;
        ctx.step()?;
        let top = (*max_uid).max(b.max_uid);
        // The last batch of a download that went through carries the folder's new mark;
        // before that, the mark moves past the batch only.
        let mark = match last {
            Some(new_mark) => new_mark(top),
            None => FarMark {
                uidvalidity,
                uidnext: top.saturating_add(1).max(row.uidnext),
                highestmodseq: if first_time { 0 } else { row.highestmodseq },
                far_count: row.far_count,
            },
        };
        state
            .commit_with_ids(row.id, &agreed, &b.ids, &b.missing, Some(mark))
            .map_err(|e| local_error(ctx, shown, e))?;
        *max_uid = top;
        ctx.step()?;
        Ok(last.is_some())
    }
}

/// What a folder's download works from.
struct DownloadPlan<'a> {
    row: &'a FolderRow,
    dir: &'a Folder,
    /// (UID, size) of the messages to bring, in UID order.
    downloads: &'a [(u32, u64)],
    /// Messages found in another local folder: copied from there.
    copies: &'a moves::LocalCopies,
    /// Where a copy removed from its folder since it was found is looked for.
    index: &'a NearIndex,
    email_ids: &'a HashMap<u32, String>,
    flags_now: &'a HashMap<u32, syncmail_imap::Flags>,
    /// (UIDVALIDITY, first sync of the folder)
    far: (u32, bool),
    /// The folder's mark once every download is done, from the highest UID downloaded:
    /// committed with the last batch.
    new_mark: &'a dyn Fn(u32) -> FarMark,
}

fn download_batches(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    plan: &DownloadPlan<'_>,
    report: &mut FolderReport,
    pipe: &mut Pipe<'_>,
) -> Result<(u32, bool), FolderError> {
    let DownloadPlan { row, dir, downloads, copies, index, email_ids, flags_now, far, .. } = *plan;
    let shown = row.display_name.as_str();
    let total = downloads.len() as u64;
    let headers_only = ctx.req.flags.contains(crate::api::SyncFlags::HEADERS_ONLY);
    let max_size = ctx.account.max_size;
    let total_bytes: u64 = downloads.iter().map(|(_, s)| *s).sum();
    let mut done_bytes = 0u64;
    let mut done = 0u64;
    let mut max_uid = row.uidnext.saturating_sub(1);
    for (n, batch) in batches(downloads).into_iter().enumerate() {
        if pipe.failed() {
            pipe.land(ctx, state, row, report, far, &mut max_uid, None)?; // returns the writer's error
        }
        if ctx.cancel.is_cancelled() {
            pipe.land(ctx, state, row, report, far, &mut max_uid, None)?;
            ctx.report.cancelled = true;
            return Ok((max_uid, false));
        }
        // More urgent work waits (ON_DEMAND): give way between two journaled batches; the
        // resumed run downloads the rest, since the mark moved past what is here.
        if n > 0 && (ctx.preempt)() {
            pipe.land(ctx, state, row, report, far, &mut max_uid, None)?;
            ctx.preempted = true;
            return Ok((max_uid, false));
        }
        let journal: Vec<(u32, String, u64)> =
            batch.iter().map(|(uid, size)| (*uid, maildir::new_unique(), *size)).collect();
        // Headers only (asked for, or larger than max-size): a placeholder now, the body
        // on demand. A message found here already is copied whole: that costs nothing.
        let heads: BTreeSet<u32> = batch
            .iter()
            .filter(|(uid, size)| !copies.contains_key(uid) && (headers_only || max_size.is_some_and(|m| *size > m)))
            .map(|(uid, _)| *uid)
            .collect();
        state.add_pending_with(row.id, &journal, &heads).map_err(|e| local_error(ctx, shown, e))?;
        ctx.step()?;
        let names: HashMap<u32, &str> = journal.iter().map(|(u, n, _)| (*u, n.as_str())).collect();
        let uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        let mut entries = Vec::with_capacity(batch.len());
        let mut seen = BTreeSet::new();
        let mut ids: Vec<(u32, String, String)> = Vec::new();
        let email_id = |uid: u32| email_ids.get(&uid).cloned().unwrap_or_default();
        // Messages already here in another folder: copied from there, not downloaded.
        let mut copied = BTreeSet::new();
        for uid in uids.iter().filter(|u| copies.contains_key(u)) {
            let (path, mid) = &copies[uid];
            let data = match std::fs::read(path) {
                Ok(data) => data,
                // Gone since it was found: put in the attic meanwhile (the server expunged
                // it there, and another lane of this run carried that out), or moved by a
                // mail reader. The attic's copy, else a download.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let size = batch.iter().find(|(u, _)| u == uid).map_or(0, |(_, s)| *s);
                    let kept = index.in_attic(size, mid, &email_id(*uid)).map_err(|e| local_error(ctx, shown, e))?;
                    match kept.map(std::fs::read) {
                        Some(Ok(data)) => data,
                        _ => continue,
                    }
                }
                Err(e) => return Err(local_error(ctx, shown, format!("reading {}: {e}", path.display()))),
            };
            copied.insert(*uid);
            let flags = flags_now.get(uid).copied().unwrap_or_default();
            let mid = if mid.is_empty() { header(&data, "Message-ID").unwrap_or_default() } else { mid.clone() };
            pipe.send(ctx, shown, writer::Job::Bytes { name: names[uid].to_string(), data, flags })?;
            entries.push((*uid, flags, true));
            seen.insert(*uid);
            ids.push((*uid, mid, email_id(*uid)));
            done += 1;
        }
        let to_fetch: Vec<u32> = uids.iter().copied().filter(|u| !copied.contains(u) && !heads.contains(u)).collect();
        let mut stopped = false; // the writer is gone: its error comes with `land`
        let spill = crate::far::Spill { dir: dir.path().join("tmp"), threshold: STREAM_FROM };
        let fetched = session.fetch_bodies_to(&to_fetch, FETCH_CHUNK, FETCH_WINDOW, &spill, |uid, flags, body| {
            // Sent is seen, written or not: a message not written after the writer failed
            // is not one the server withheld.
            stopped |= pipe.failed();
            let first = seen.insert(uid);
            let unique = names.get(&uid).filter(|_| first && !stopped);
            // A server may send FLAGS in a FETCH of its own; the listing's are then current.
            let flags = flags.or_else(|| flags_now.get(&uid).copied()).unwrap_or_default();
            let (job, len, mid) = match (body, unique) {
                (Body::File { path, .. }, None) => {
                    let _ = std::fs::remove_file(path);
                    return Ok(());
                }
                (_, None) => return Ok(()),
                (Body::Bytes(b), Some(unique)) => {
                    let mut data = Vec::with_capacity(b.len());
                    maildir::crlf_to_lf_into(b, &mut data);
                    let job = writer::Job::Bytes { name: unique.to_string(), data, flags };
                    (job, b.len() as u64, header(b, "Message-ID"))
                }
                // Converted as it was read: handed over as it is.
                (Body::Lf { data, len }, Some(unique)) => {
                    let mid = header(&data, "Message-ID");
                    (writer::Job::Bytes { name: unique.to_string(), data, flags }, len, mid)
                }
                // Streamed to tmp/ already (a large message): only renamed.
                (Body::File { path, len }, Some(unique)) => {
                    let mid = message_id_of_file(&path);
                    (writer::Job::File { name: unique.to_string(), path, flags }, len, mid)
                }
            };
            if pipe.queue(job).is_err() {
                stopped = true;
                return Ok(());
            }
            let mid = mid.unwrap_or_default();
            if !mid.is_empty() || email_ids.contains_key(&uid) {
                ids.push((uid, mid, email_id(uid)));
            }
            entries.push((uid, flags, false));
            done += 1;
            done_bytes += len;
            ctx.progress(
                Step::Download,
                format!("downloading {total} new messages"),
                Some(shown),
                (done, total),
                (done_bytes, total_bytes.max(done_bytes)),
            );
            Ok(())
        });
        let mut refused = fetched.map_err(|e| imap_error(ctx, shown, &e))?;
        if !heads.is_empty() {
            let heads: Vec<u32> = heads.iter().copied().collect();
            let sizes: HashMap<u32, u64> = batch.iter().copied().collect();
            let fetched = session.fetch_headers(&heads, FETCH_CHUNK, |uid, flags, head| {
                stopped |= pipe.failed();
                let first = seen.insert(uid);
                let Some(unique) = names.get(&uid).filter(|_| first && !stopped) else {
                    return Ok(());
                };
                let flags = flags.or_else(|| flags_now.get(&uid).copied()).unwrap_or_default();
                let size = sizes.get(&uid).copied().unwrap_or(0);
                let hint = super::placeholder::fetch_command(ctx.name(), shown, uid);
                let data = super::placeholder::build(head, size, unique, &hint);
                if pipe.queue(writer::Job::Bytes { name: unique.to_string(), data, flags }).is_err() {
                    stopped = true;
                    return Ok(());
                }
                let mid = header(head, "Message-ID").unwrap_or_default();
                if !mid.is_empty() || email_ids.contains_key(&uid) {
                    ids.push((uid, mid, email_id(uid)));
                }
                entries.push((uid, flags, false));
                done += 1;
                done_bytes += head.len() as u64;
                report.placeholders += 1;
                ctx.progress(
                    Step::Download,
                    format!("downloading {total} new messages ({} headers only)", report.placeholders),
                    Some(shown),
                    (done, total),
                    (done_bytes, total_bytes.max(done_bytes)),
                );
                Ok(())
            });
            refused.extend(fetched.map_err(|e| imap_error(ctx, shown, &e))?);
        }
        let unasked = std::mem::take(&mut session.unasked);
        if !unasked.is_empty() {
            ctx.error(SyncError {
                kind: ErrorKind::Server,
                account: ctx.name().to_string(),
                folder: Some(shown.to_string()),
                message: format!(
                    "the server sent {} message(s) that were not asked for (UIDs {}); they were not stored",
                    unasked.len(),
                    syncmail_imap::uid_set(&unasked.into_iter().collect::<Vec<_>>())
                ),
                server_text: None,
                hint: "the server broke the protocol; the messages asked for were stored as usual; report it to \
                       the server's administrator if it persists"
                    .into(),
                retryable: false,
            });
        }
        // Asked for but not sent: expunged since the listing, or refused. Only what the
        // server confirms is gone is forgotten; the rest stays pending, to be fetched again
        // next time, and is reported.
        let unsent: Vec<u32> = uids.iter().copied().filter(|u| !seen.contains(u)).collect();
        let kept = session.still_there(&unsent).map_err(|e| imap_error(ctx, shown, &e))?;
        let missing: Vec<u32> = unsent.iter().copied().filter(|u| !kept.contains(u)).collect();
        if !kept.is_empty() {
            let words = refused.iter().find_map(|e| e.server_text().map(str::to_string));
            ctx.error(SyncError {
                kind: ErrorKind::Message,
                account: ctx.name().to_string(),
                folder: Some(shown.to_string()),
                message: format!(
                    "the server did not send {} message(s) it still has (UIDs {})",
                    kept.len(),
                    syncmail_imap::uid_set(&kept.iter().copied().collect::<Vec<_>>())
                ),
                server_text: words,
                hint: "they are fetched again on the next sync; if this repeats, the server cannot read them".into(),
                retryable: true,
            });
        }
        // The batch before this one, written meanwhile, is committed; this one goes to be
        // made durable and published while the next is fetched.
        pipe.land(ctx, state, row, report, far, &mut max_uid, None)?;
        pipe.send(ctx, shown, writer::Job::Publish)?;
        pipe.in_flight =
            Some(InFlight { entries, ids, missing, max_uid: uids.iter().copied().max().unwrap_or(0), done_bytes });
    }
    let marked = pipe.land(ctx, state, row, report, far, &mut max_uid, Some(plan.new_mark))?;
    Ok((max_uid, marked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_by_count_and_bytes() {
        let many: Vec<(u32, u64)> = (1..=4500).map(|u| (u, 10)).collect();
        let b = batches(&many);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![2000, 2000, 500]);
        let big: Vec<(u32, u64)> = (1..=5).map(|u| (u, 50 << 20)).collect();
        assert_eq!(batches(&big).iter().map(|x| x.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let huge = [(1, 1u64 << 40)];
        assert_eq!(batches(&huge).len(), 1, "one message larger than a batch is a batch");
        assert!(batches(&[]).is_empty());
    }
}
