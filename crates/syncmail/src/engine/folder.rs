//! One folder's download: select, learn what changed, plan, carry out, record.
//!
//! Crash safety, step by step (each step is durable before the next begins):
//! 1. flag renames and deletions of local files, then an fsync of `cur/` and `new/`,
//!    then one state commit recording the new agreed flags and forgotten UIDs;
//! 2. per batch of new messages: the batch is journaled as `pending` rows (UID → the
//!    unique name its file will get); the files are written to `tmp/`, fsynced, moved into
//!    `new/`/`cur/`, the directories fsynced; then one commit turns the rows into synced
//!    ones and moves the folder's UIDNEXT mark past the batch;
//! 3. last, the folder's mark (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ) is committed.
//!
//! Killed anywhere, the next run redoes at most the step in hand: a pending row whose file
//! exists is adopted, one whose file does not is downloaded again, and a HIGHESTMODSEQ
//! not yet moved makes the flag pass run again, which is idempotent.

use super::plan::{Action, FarView, plan_download};
use super::{Ctx, errors};
use crate::api::{ErrorKind, FolderReport, Step, SyncError};
use crate::far::{FlagQuery, Mailbox, MailboxStatus, Session};
use crate::state::{FarMark, State};
use std::collections::BTreeSet;
use syncmail_imap::Error as ImapError;
use syncmail_maildir::{self as maildir, Folder, folder_path};

/// Messages per state commit (one journal step).
const BATCH: usize = 500;
/// UIDs per UID FETCH command, and how many such commands are in flight at once.
const FETCH_CHUNK: usize = 50;
const FETCH_WINDOW: usize = 4;

pub(crate) enum FolderError {
    /// This folder failed; the others can go on.
    Folder(SyncError),
    /// The session or the store broke; the run ends.
    Fatal(SyncError),
}

fn imap_error(ctx: &Ctx<'_>, folder: &str, e: &ImapError) -> FolderError {
    let se = errors::from_imap(ctx.name(), Some(folder), e);
    match e {
        ImapError::No { .. } => FolderError::Folder(se),
        _ => FolderError::Fatal(se),
    }
}

fn local_error(ctx: &Ctx<'_>, folder: &str, what: impl std::fmt::Display) -> FolderError {
    FolderError::Fatal(errors::local(ctx.name(), Some(folder), what.to_string()))
}

pub(crate) fn sync_folder(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mb: &Mailbox,
    status: Option<MailboxStatus>,
    may_create: bool,
) -> Result<Option<FolderReport>, FolderError> {
    let shown = mb.display_name.as_str();
    let mut report = FolderReport { folder: shown.to_string(), ..Default::default() };
    let row = match state.folder(&mb.far_name).map_err(|e| local_error(ctx, shown, e))? {
        Some(r) => r,
        None if !may_create => return Ok(None),
        None => {
            let path = folder_path(shown, mb.delimiter).map_err(|e| {
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
            if let Some(other) = state.folder_by_path(&path_str).map_err(|e| local_error(ctx, shown, e))? {
                return Err(FolderError::Folder(SyncError {
                    kind: ErrorKind::FolderName,
                    account: ctx.name().to_string(),
                    folder: Some(shown.to_string()),
                    message: format!(
                        "folder {shown:?} would share the directory {path_str:?} with {:?}",
                        other.display_name
                    ),
                    server_text: None,
                    hint: "exclude one of the two in [accounts.NAME.folders]".into(),
                    retryable: false,
                }));
            }
            Folder::new(ctx.account.maildir.join(&path)).create().map_err(|e| local_error(ctx, shown, e))?;
            report.created = true;
            state.add_folder(&mb.far_name, shown, &path_str, mb.delimiter).map_err(|e| local_error(ctx, shown, e))?
        }
    };
    let dir = Folder::new(ctx.account.maildir.join(&row.near_path));
    if !dir.exists() {
        dir.create().map_err(|e| local_error(ctx, shown, e))?;
    }

    // An unchanged mark (CONDSTORE) means nothing changed on the server: no SELECT at all.
    if let Some(s) = status
        && row.uidvalidity != 0
        && s.uidvalidity == row.uidvalidity
        && s.uidnext == row.uidnext
        && s.highestmodseq.is_some_and(|m| m == row.highestmodseq)
        && s.messages == row.far_count
        && !state.has_pending(row.id).map_err(|e| local_error(ctx, shown, e))?
    {
        return Ok(Some(report));
    }

    let sel = session
        .select(&mb.far_name, Some((row.uidvalidity, row.highestmodseq)))
        .map_err(|e| imap_error(ctx, shown, &e))?;
    if row.uidvalidity != 0 && sel.uidvalidity != row.uidvalidity {
        return Err(FolderError::Folder(SyncError {
            kind: ErrorKind::UidValidity,
            account: ctx.name().to_string(),
            folder: Some(shown.to_string()),
            message: format!(
                "the server renumbered the folder (UIDVALIDITY {} → {}); it was left alone so that nothing \
                 is lost or downloaded twice",
                row.uidvalidity, sel.uidvalidity
            ),
            server_text: None,
            hint: "this version cannot re-match a renumbered folder yet; the local messages are untouched".into(),
            retryable: false,
        }));
    }
    let first_time = row.uidvalidity == 0;
    if first_time {
        let mark = FarMark { uidvalidity: sel.uidvalidity, uidnext: 1, highestmodseq: 0, far_count: 0 };
        state.commit(row.id, &[], &[], Some(mark)).map_err(|e| local_error(ctx, shown, e))?;
    }

    let known = state.messages(row.id).map_err(|e| local_error(ctx, shown, e))?;
    let modseq_known = !first_time && row.highestmodseq != 0 && sel.highestmodseq.is_some();
    let query = if sel.qresync_used || (modseq_known && sel.highestmodseq == Some(row.highestmodseq)) {
        FlagQuery::Nothing
    } else if modseq_known {
        FlagQuery::ChangedSince(row.highestmodseq)
    } else {
        FlagQuery::All
    };
    // With a mod-sequence mark, expunges show as a moved HIGHESTMODSEQ; QRESYNC names them.
    let need_uids = !sel.qresync_used && modseq_known && sel.highestmodseq != Some(row.highestmodseq);
    let list_new = sel.exists > 0 && sel.uidnext.is_none_or(|n| n > row.uidnext);
    let changes = if known.is_empty() && !list_new {
        Default::default()
    } else {
        session.changes(row.uidnext, query, need_uids, list_new).map_err(|e| imap_error(ctx, shown, &e))?
    };

    let mut far = FarView { new: changes.new, ..Default::default() };
    if sel.qresync_used {
        far.flags = sel.changed.into_iter().filter(|(u, _)| *u < row.uidnext).collect();
        for (a, b) in &sel.vanished {
            far.gone.extend(known.range(*a..=*b).map(|(u, _)| *u));
        }
    } else {
        far.flags = changes.flags;
    }
    if let Some(present) = &changes.present {
        far.gone.extend(known.keys().filter(|u| **u < row.uidnext && !present.contains(u)));
    }
    // A pending row at or above the old UIDNEXT that the listing no longer shows is gone.
    let near = dir.scan().map_err(|e| local_error(ctx, shown, e))?;
    let actions = plan_download(&known, &far, &near);

    // Step 1: local flag changes and deletions, then one commit.
    let mut agreed = Vec::new();
    let mut forget = Vec::new();
    let mut downloads = Vec::new();
    let mut touched = false;
    for a in actions {
        match a {
            Action::SetNearFlags { uid, entry, flags, agreed: ag } => {
                dir.set_flags(&entry, flags).map_err(|e| local_error(ctx, shown, e))?;
                agreed.push((uid, ag));
                report.flags_changed += 1;
                touched = true;
            }
            Action::Agree { uid, flags } => agreed.push((uid, flags)),
            Action::DeleteNear { uid, entry } => {
                dir.remove(&entry).map_err(|e| local_error(ctx, shown, e))?;
                forget.push(uid);
                report.deleted += 1;
                touched = true;
            }
            Action::Forget { uid, .. } => forget.push(uid),
            Action::Download { uid, size } => downloads.push((uid, size)),
        }
    }
    if !agreed.is_empty() || !forget.is_empty() {
        ctx.progress(
            Step::ApplyChanges,
            format!("{} flag changes, {} deletions from the server", report.flags_changed, report.deleted),
            Some(shown),
            (0, 0),
            (0, 0),
        );
        if touched {
            dir.sync().map_err(|e| local_error(ctx, shown, e))?;
        }
        state.commit(row.id, &agreed, &forget, None).map_err(|e| local_error(ctx, shown, e))?;
    }

    // Step 2: downloads, batch by batch.
    let total = downloads.len() as u64;
    let total_bytes: u64 = downloads.iter().map(|(_, s)| *s).sum();
    let mut done_bytes = 0u64;
    let mut done = 0u64;
    let mut max_uid = row.uidnext.saturating_sub(1);
    for batch in downloads.chunks(BATCH) {
        if ctx.cancel.is_cancelled() {
            ctx.report.cancelled = true;
            return Ok(Some(report));
        }
        let journal: Vec<(u32, String, u64)> =
            batch.iter().map(|(uid, size)| (*uid, maildir::new_unique(), *size)).collect();
        state.add_pending(row.id, &journal).map_err(|e| local_error(ctx, shown, e))?;
        let names: std::collections::HashMap<u32, &str> = journal.iter().map(|(u, n, _)| (*u, n.as_str())).collect();
        let uids: Vec<u32> = batch.iter().map(|(u, _)| *u).collect();
        let mut staged = Vec::with_capacity(batch.len());
        let mut failure: Option<FolderError> = None;
        let progress_name = shown.to_string();
        let fetched = session.fetch_bodies(&uids, FETCH_CHUNK, FETCH_WINDOW, |uid, flags, body| {
            if failure.is_some() || staged.iter().any(|(u, _, _)| *u == uid) {
                return Ok(());
            }
            let Some(unique) = names.get(&uid) else { return Ok(()) };
            let data = maildir::crlf_to_lf(body);
            match dir.stage(unique, &data) {
                Ok(s) => staged.push((uid, flags, s)),
                Err(e) => failure = Some(local_error(ctx, &progress_name, e)),
            }
            done += 1;
            done_bytes += body.len() as u64;
            ctx.progress(
                Step::Download,
                format!("downloading {total} new messages"),
                Some(&progress_name),
                (done, total),
                (done_bytes, total_bytes.max(done_bytes)),
            );
            Ok(())
        });
        fetched.map_err(|e| imap_error(ctx, shown, &e))?;
        if let Some(f) = failure {
            return Err(f);
        }
        let mut agreed = Vec::with_capacity(staged.len());
        for (uid, flags, s) in staged {
            dir.publish(s, flags).map_err(|e| local_error(ctx, shown, e))?;
            agreed.push((uid, flags));
            report.downloaded += 1;
        }
        report.bytes_downloaded = done_bytes;
        dir.sync().map_err(|e| local_error(ctx, shown, e))?;
        let got: BTreeSet<u32> = agreed.iter().map(|(u, _)| *u).collect();
        // Asked for but not sent: expunged since the listing.
        let missing: Vec<u32> = uids.iter().copied().filter(|u| !got.contains(u)).collect();
        max_uid = max_uid.max(uids.iter().copied().max().unwrap_or(0));
        let mark = FarMark {
            uidvalidity: sel.uidvalidity,
            uidnext: max_uid + 1,
            highestmodseq: if first_time { 0 } else { row.highestmodseq },
            far_count: row.far_count,
        };
        state.commit(row.id, &agreed, &missing, Some(mark)).map_err(|e| local_error(ctx, shown, e))?;
    }

    // Step 3: the folder's new mark.
    let mark = FarMark {
        uidvalidity: sel.uidvalidity,
        uidnext: sel.uidnext.unwrap_or(0).max(max_uid + 1).max(row.uidnext),
        highestmodseq: sel.highestmodseq.unwrap_or(0),
        far_count: sel.exists,
    };
    state.commit(row.id, &[], &[], Some(mark)).map_err(|e| local_error(ctx, shown, e))?;
    Ok(Some(report))
}
