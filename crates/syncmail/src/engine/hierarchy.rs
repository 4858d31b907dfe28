//! The folder hierarchy, both ways: folders created, renamed or deleted on one side are
//! created, renamed or deleted on the other, before any folder's contents are synced.
//!
//! Each known folder (a state row) is looked for on both sides by its recorded names. One
//! that is missing on a side is looked for under a new name first:
//! - on the server, among folders the state does not know, by UIDVALIDITY (a RENAME keeps
//!   it) confirmed by UIDNEXT and the message count, or else by the UIDs and sizes it holds;
//! - locally, among directories the state does not know, by the unique names of the
//!   message files it holds (a directory move keeps them).
//!
//! A folder found under a new name is renamed on the other side (RENAME, or a directory
//! rename), never transferred again. One not found was deleted: it is deleted on the other
//! side only when that side holds nothing the deleting side has not seen (the server's
//! UIDVALIDITY, UIDNEXT, message count and HIGHESTMODSEQ equal to the last sync's; or the
//! Maildir holding exactly the agreed files with the agreed flags). Otherwise the folder
//! comes back on the deleting side, whole, and an error event says why.
//!
//! Crash safety: a rename is recorded in the state (new names, with the old ones kept
//! beside them) before it is carried out on the other side, so that the next run finishes
//! it instead of reading two unrelated folders. A CREATE happens before its state row, and
//! a run that finds a folder on both sides that the state does not know takes them as one.

use super::{Ctx, errors};
use crate::api::{ErrorKind, FolderChange, Side, Step, SyncError, SyncFlags};
use crate::config::DeletePolicy;
use crate::far::{Mailbox, MailboxStatus, Session};
use crate::state::{FolderRow, State};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::path::Path;
use syncmail_maildir::{self as maildir, Folder, Layout};

/// Directory levels looked into below the store root.
const MAX_DEPTH: usize = 32;

/// The Maildir folders under `root`, as relative paths (`Lists/rust`, or `.Lists.rust`
/// and `.` for INBOX in Maildir++): directories holding `cur` and `new`. Names that could
/// not have come from a folder name (a leading dot in the verbatim layout, a Maildir's
/// own `cur`/`new`/`tmp`, not UTF-8), symbolic links and folders moved aside after a
/// renumbering (`NAME~uidvalidity-N`) are passed over.
pub(crate) fn scan_near(root: &Path, layout: Layout) -> std::io::Result<Vec<String>> {
    let is_folder = |p: &Path| p.join("cur").is_dir() && p.join("new").is_dir();
    let mut out = Vec::new();
    if layout == Layout::MaildirPlusPlus {
        if is_folder(root) {
            out.push(".".to_string());
        }
        for entry in fs::read_dir(root)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !entry.file_type()?.is_dir() || name.contains("~uidvalidity-") || !name.starts_with('.') {
                continue;
            }
            let ok = name.len() > 1 && layout.components(&name).iter().all(|c| maildir::check_component(c).is_ok());
            if ok && is_folder(&entry.path()) {
                out.push(name);
            }
        }
        out.sort();
        return Ok(out);
    }
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth > 0 => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else { continue };
            if !entry.file_type()?.is_dir()
                || maildir::check_component(&name).is_err()
                || name.contains("~uidvalidity-")
            {
                continue;
            }
            let path = entry.path();
            let child = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if is_folder(&path) {
                out.push(child.clone());
            }
            if depth + 1 < MAX_DEPTH {
                stack.push((path, child, depth + 1));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Where a known folder is now on one side.
#[derive(Debug, Clone, PartialEq)]
enum Found<T> {
    Here,
    Renamed(T),
    Gone,
}

/// The server's hierarchy delimiter, as its folders show it (INBOX's first).
fn delimiter(mailboxes: &[Mailbox]) -> Option<char> {
    mailboxes
        .iter()
        .find(|m| m.far_name.eq_ignore_ascii_case("INBOX"))
        .and_then(|m| m.delimiter)
        .or_else(|| mailboxes.iter().find_map(|m| m.delimiter))
}

/// The UTF-8 folder name of a local path: its levels joined by the delimiter.
fn display_of(path: &str, delimiter: Option<char>, layout: Layout) -> Result<String, String> {
    let parts = layout.components(path);
    match delimiter {
        None if parts.len() > 1 => {
            Err("the server has no folder hierarchy, so a folder inside another cannot be made there".into())
        }
        None => Ok(parts.concat()),
        Some(d) => match parts.iter().find(|p| p.contains(d)) {
            Some(p) => Err(format!("{p:?} contains {d:?}, the server's hierarchy separator")),
            None => Ok(parts.join(&d.to_string())),
        },
    }
}

/// Whether the server's folder holds exactly what it held when last in agreement.
fn far_unchanged(row: &FolderRow, s: &MailboxStatus) -> bool {
    row.uidvalidity != 0
        && s.uidvalidity == row.uidvalidity
        && s.uidnext == row.uidnext
        && s.messages == row.far_count
        && s.highestmodseq.is_none_or(|m| m == row.highestmodseq)
}

/// Whether the local folder holds exactly the agreed files with the agreed flags, and no
/// upload or download is under way in it.
fn near_unchanged(state: &State, row: &FolderRow, root: &Path) -> Result<bool, String> {
    let known = state.messages(row.id).map_err(|e| e.to_string())?;
    if !state.appends(row.id).map_err(|e| e.to_string())?.is_empty() {
        return Ok(false);
    }
    let scan = Folder::new(root.join(&row.near_path)).scan().map_err(|e| e.to_string())?;
    Ok(super::folder::near_unchanged(&known, &scan))
}

/// Renames the folder at `from` to `to` (both relative to `root`), making `to`'s parents,
/// and makes the change durable. In the Maildir++ layout the folders inside it, which
/// are its siblings on disk, are renamed along (in the verbatim one they move with it).
fn move_dir(root: &Path, from: &str, to: &str, layout: Layout) -> std::io::Result<()> {
    let (src, dst) = (root.join(from), root.join(to));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(&src, &dst)?;
    move_children(root, from, to, layout)?;
    for p in [src.parent(), dst.parent()].into_iter().flatten() {
        fs::File::open(p)?.sync_all()?;
    }
    Ok(())
}

/// In the Maildir++ layout: renames the folders inside `from` to be inside `to`.
fn move_children(root: &Path, from: &str, to: &str, layout: Layout) -> std::io::Result<()> {
    if layout != Layout::MaildirPlusPlus {
        return Ok(());
    }
    let (old, new) = (layout.child_prefix(from), layout.child_prefix(to));
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&old) {
            let target = root.join(format!("{new}{rest}"));
            if !target.exists() {
                fs::rename(root.join(&name), target)?;
            }
        }
    }
    Ok(())
}

/// Removes a local folder whose every file is known and agreed: its messages, `cur`,
/// `new` and `tmp`, and the directory itself unless folders remain inside it.
fn remove_near_folder(root: &Path, near_path: &str) -> std::io::Result<()> {
    let dir = root.join(near_path);
    for sub in ["cur", "new", "tmp"] {
        match fs::remove_dir_all(dir.join(sub)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let _ = fs::remove_dir(&dir); // fails, as it should, when sub-folders remain
    if let Some(parent) = dir.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Carries out the hierarchy changes of both sides. `mailboxes` is the server's whole
/// list; it is updated to what the server holds afterwards.
pub(crate) fn sync_hierarchy(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mailboxes: &mut Vec<Mailbox>,
    flags: SyncFlags,
) -> Result<(), SyncError> {
    let up = flags.contains(SyncFlags::UPLOAD_HIERARCHY);
    let down = flags.contains(SyncFlags::DOWNLOAD_HIERARCHY);
    if (!up && !down) || ctx.req.folders.is_some() {
        return Ok(());
    }
    let name = ctx.name().to_string();
    let lerr = |what: String| errors::local(&name, None, what);
    let root = ctx.account.maildir.clone();
    let delim = delimiter(mailboxes);
    finish_interrupted_renames(ctx, session, state, mailboxes)?;

    let rows = state.folders().map_err(|e| lerr(format!("sync state: {e}")))?;
    let layout = ctx.account.layout;
    let near_paths = scan_near(&root, layout).map_err(|e| lerr(format!("cannot read {}: {e}", root.display())))?;
    let filter = &ctx.account.folders;
    let rows: Vec<FolderRow> = rows.into_iter().filter(|r| filter.matches(&r.display_name, r.delimiter)).collect();
    let known_far: HashSet<&str> = rows.iter().map(|r| r.far_name.as_str()).collect();
    let known_near: HashSet<&str> = rows.iter().map(|r| r.near_path.as_str()).collect();
    let mut new_far: Vec<usize> = mailboxes
        .iter()
        .enumerate()
        .filter(|(_, m)| m.selectable && !known_far.contains(m.far_name.as_str()))
        .filter(|(_, m)| filter.matches(&m.display_name, m.delimiter))
        .map(|(i, _)| i)
        .collect();
    // The outbox is local only (outgoing mail), never a folder of the server.
    let outbox = layout.folder_path(&ctx.account.outbox, Some('/')).ok().map(|p| p.to_string_lossy().into_owned());
    let mut new_near: Vec<String> = Vec::new();
    for p in near_paths.iter().filter(|p| !known_near.contains(p.as_str()) && Some(p.as_str()) != outbox.as_deref()) {
        match display_of(p, delim, layout) {
            Ok(d) if filter.matches(&d, delim) => new_near.push(p.clone()),
            Ok(_) => {}
            Err(why) if up => ctx.simple_error(
                ErrorKind::FolderName,
                Some(p),
                format!("the local folder {p} cannot be made on the server: {why}"),
                "rename the local directory; the rest of the account syncs",
            ),
            Err(_) => {}
        }
    }

    // Where each known folder is now.
    let mut found: Vec<(FolderRow, Found<usize>, Found<String>)> = Vec::new();
    for row in rows {
        let far = if listed_at(mailboxes, &row.far_name).is_some() { Found::Here } else { Found::Gone };
        let near = if Folder::new(root.join(&row.near_path)).exists() { Found::Here } else { Found::Gone };
        found.push((row, far, near));
    }
    // Renamed on the server: an unknown folder with the same UIDVALIDITY and contents.
    if down && found.iter().any(|(_, f, _)| *f == Found::Gone) && !new_far.is_empty() {
        fill_statuses(session, mailboxes, &new_far).map_err(|e| errors::from_imap(&name, None, &e))?;
        if found.iter().any(|(r, f, _)| *f == Found::Gone && !r.mailbox_id.is_empty()) {
            let names: Vec<String> = new_far.iter().map(|&i| mailboxes[i].far_name.clone()).collect();
            let ids = session.mailbox_ids(&names).map_err(|e| errors::from_imap(&name, None, &e))?;
            for &i in &new_far {
                if let (Some(id), Some(s)) = (ids.get(&mailboxes[i].far_name), mailboxes[i].status.as_mut()) {
                    s.mailbox_id = Some(id.clone());
                }
            }
        }
        for (row, far, _) in found.iter_mut().filter(|(_, f, _)| *f == Found::Gone) {
            if let Some(pos) = far_rename_candidate(ctx, session, state, row, mailboxes, &new_far)? {
                *far = Found::Renamed(new_far.remove(pos));
            }
        }
    }
    // Renamed locally: an unknown directory holding the folder's files.
    if up && found.iter().any(|(_, _, n)| *n == Found::Gone) && !new_near.is_empty() {
        let mut uniques: HashMap<String, HashSet<String>> = HashMap::new();
        for p in &new_near {
            let scan = Folder::new(root.join(p)).scan().map_err(|e| lerr(e.to_string()))?;
            uniques.insert(p.clone(), scan.into_keys().collect());
        }
        for (row, _, near) in found.iter_mut().filter(|(_, _, n)| *n == Found::Gone) {
            let known = state.messages(row.id).map_err(|e| lerr(format!("sync state: {e}")))?;
            if known.is_empty() {
                continue;
            }
            let best = new_near
                .iter()
                .enumerate()
                .map(|(i, p)| (i, known.values().filter(|r| uniques[p].contains(&r.near_id)).count()))
                .max_by_key(|(_, n)| *n);
            if let Some((i, n)) = best
                && n * 2 >= known.len()
                && n > 0
            {
                *near = Found::Renamed(new_near.remove(i));
            }
        }
    }

    // Deletions, held as a whole when they look like an accident.
    let total = found.len();
    let far_deletions = found.iter().filter(|(_, f, n)| *f != Found::Gone && *n == Found::Gone).count();
    let near_deletions = found.iter().filter(|(_, f, n)| *f == Found::Gone && *n != Found::Gone).count();
    // Many folders gone at once looks like an accident (an unmounted disk, a server that
    // listed only part of the account), not a person deleting: two or more, and more than
    // half of them, or what the account's delete-guard says for messages.
    let many = |n: usize| n >= 2 && (n * 2 > total || ctx.account.delete_guard.trips(n, total));
    let hold_far_deletions =
        up && far_deletions > 0 && !ctx.req.confirm_deletions && (near_paths.is_empty() || many(far_deletions));
    let hold_near_deletions = down
        && near_deletions > 0
        && !ctx.req.confirm_deletions
        && (mailboxes.iter().all(|m| !m.selectable) || many(near_deletions));
    if hold_far_deletions {
        ctx.error(SyncError {
            kind: ErrorKind::DeletionsHeld,
            account: name.clone(),
            folder: None,
            message: if near_paths.is_empty() {
                format!(
                    "the local store {} holds no folder at all; no folder was deleted on the server",
                    root.display()
                )
            } else {
                format!("{far_deletions} of {total} folders vanished here at once; none was deleted on the server")
            },
            server_text: None,
            hint: "if you meant it, run `syncmail sync --confirm-deletions`; if not, restore the folders \
                   (the server still has them)"
                .into(),
            retryable: false,
        });
    }
    if hold_near_deletions {
        ctx.error(SyncError {
            kind: ErrorKind::DeletionsHeld,
            account: name.clone(),
            folder: None,
            message: format!(
                "{near_deletions} of {total} folders vanished from the server at once; the local copies were kept"
            ),
            server_text: None,
            hint: "if that is right, run `syncmail sync --confirm-deletions` to delete the local copies too".into(),
            retryable: false,
        });
    }

    // Parents before children: a parent's rename takes its children along.
    found.sort_by(|a, b| a.0.near_path.cmp(&b.0.near_path));
    let mut deleted_far: Vec<String> = Vec::new();
    let mut i = 0;
    while i < found.len() {
        let (row, mut far, mut near) = found[i].clone();
        i += 1;
        // A parent's rename may have renamed this row, on either side, already.
        let Some(row) = state.folders().map_err(|e| lerr(e.to_string()))?.into_iter().find(|r| r.id == row.id) else {
            continue;
        };
        if row.far_name.eq_ignore_ascii_case("INBOX") {
            continue; // never created, renamed or deleted: the contents sync holds its rules
        }
        if listed_at(mailboxes, &row.far_name).is_some() {
            far = Found::Here;
        }
        if Folder::new(root.join(&row.near_path)).exists() {
            near = Found::Here;
        }
        let shown = row.display_name.clone();
        match (far, near) {
            (Found::Here, Found::Here) => {}
            (Found::Gone, Found::Gone) => {
                state.delete_folder(row.id).map_err(|e| lerr(e.to_string()))?;
            }
            (Found::Renamed(m), near) if down => {
                let mb = mailboxes[m].clone();
                let current = match &near {
                    Found::Renamed(p) => p.clone(),
                    _ => row.near_path.clone(),
                };
                let target = match super::folder::near_path_of(ctx.account, &mb) {
                    Ok(p) => p.to_string_lossy().into_owned(),
                    Err(e) => {
                        ctx.simple_error(
                            ErrorKind::FolderName,
                            Some(&mb.display_name),
                            e.to_string(),
                            "the folder was renamed on the server to a name that cannot be stored; rename it there",
                        );
                        continue;
                    }
                };
                if near == Found::Gone {
                    // Renamed there, deleted here: a deletion of the renamed folder.
                    state
                        .begin_rename(row.id, &mb.far_name, &mb.display_name, &target, layout)
                        .map_err(|e| lerr(e.to_string()))?;
                    state.finish_renames().map_err(|e| lerr(e.to_string()))?;
                    let row = state.folder(&mb.far_name).map_err(|e| lerr(e.to_string()))?.unwrap_or(row);
                    found.push((row, Found::Here, Found::Gone));
                    continue;
                }
                let clash = super::folder::clashing_folder(state, &target)
                    .map_err(|e| lerr(e.to_string()))?
                    .filter(|f| f.id != row.id);
                if current != target && (root.join(&target).exists() || clash.is_some()) {
                    ctx.simple_error(
                        ErrorKind::FolderName,
                        Some(&mb.display_name),
                        format!(
                            "the server renamed {shown} to {}, but {} is taken here (by a directory, or by a folder \
                                 whose name differs only in case or Unicode form); the folder was not renamed locally",
                            mb.display_name,
                            root.join(&target).display()
                        ),
                        "move the local directory out of the way, then sync again",
                    );
                    continue;
                }
                ctx.progress(
                    Step::Folders,
                    format!("renaming {shown} to {}", mb.display_name),
                    Some(&shown),
                    (0, 0),
                    (0, 0),
                );
                if current != row.near_path {
                    // Renamed on both sides: the local rename is recorded first.
                    state
                        .begin_rename(row.id, &row.far_name, &row.display_name, &current, layout)
                        .map_err(|e| lerr(e.to_string()))?;
                    state.finish_renames().map_err(|e| lerr(e.to_string()))?;
                }
                state
                    .begin_rename(row.id, &mb.far_name, &mb.display_name, &target, layout)
                    .map_err(|e| lerr(e.to_string()))?;
                ctx.step()?;
                if current != target {
                    move_dir(&root, &current, &target, layout)
                        .map_err(|e| lerr(format!("cannot rename {current} to {target}: {e}")))?;
                }
                state.finish_renames().map_err(|e| lerr(e.to_string()))?;
                ctx.report.hierarchy.push(FolderChange::Renamed {
                    side: Side::Local,
                    from: shown,
                    to: mb.display_name,
                });
                ctx.step()?;
            }
            (Found::Here, Found::Renamed(p)) if up => {
                let display = match display_of(&p, delim, layout) {
                    Ok(d) => d,
                    Err(why) => {
                        ctx.simple_error(
                            ErrorKind::FolderName,
                            Some(&shown),
                            format!(
                                "the folder was renamed locally to {p}, which cannot be a name on the server: {why}"
                            ),
                            "rename the local directory; the folder keeps its old name on the server meanwhile",
                        );
                        continue;
                    }
                };
                let far_name = session.encode_name(&display);
                if listed_at(mailboxes, &far_name).is_some() {
                    ctx.simple_error(
                        ErrorKind::FolderName,
                        Some(&shown),
                        format!(
                            "the folder was renamed locally to {display}, but the server has a folder of that name"
                        ),
                        "rename the local directory to a name the server does not use",
                    );
                    continue;
                }
                ctx.progress(
                    Step::Folders,
                    format!("renaming {shown} to {display} on the server"),
                    Some(&shown),
                    (0, 0),
                    (0, 0),
                );
                state.begin_rename(row.id, &far_name, &display, &p, layout).map_err(|e| lerr(e.to_string()))?;
                ctx.step()?;
                session.rename(&row.far_name, &far_name).map_err(|e| errors::from_imap(&name, Some(&shown), &e))?;
                state.finish_renames().map_err(|e| lerr(e.to_string()))?;
                rename_listed(mailboxes, &row.far_name, &far_name, &shown, &display, delim);
                ctx.report.hierarchy.push(FolderChange::Renamed { side: Side::Server, from: shown, to: display });
                ctx.step()?;
            }
            (Found::Gone, Found::Renamed(p)) => {
                // Deleted there, renamed here: the rename is recorded, then it is a
                // deletion on the server of a folder that still lives here.
                if let Ok(display) = display_of(&p, delim, layout) {
                    let far_name = session.encode_name(&display);
                    state.begin_rename(row.id, &far_name, &display, &p, layout).map_err(|e| lerr(e.to_string()))?;
                    state.finish_renames().map_err(|e| lerr(e.to_string()))?;
                    if let Some(r) = state.folder(&far_name).map_err(|e| lerr(e.to_string()))? {
                        found.push((r, Found::Gone, Found::Here));
                    }
                }
            }
            (Found::Here, Found::Gone) if up && !hold_far_deletions => {
                let Some(at) = listed_at(mailboxes, &row.far_name) else { continue };
                let mb = mailboxes[at].clone();
                let status = match mb.status {
                    Some(s) => s,
                    None => {
                        let mut got = session
                            .status_many(std::slice::from_ref(&row.far_name))
                            .map_err(|e| errors::from_imap(&name, Some(&shown), &e))?;
                        match got.remove(&row.far_name) {
                            Some(Ok(s)) => s,
                            _ => continue,
                        }
                    }
                };
                if !far_unchanged(&row, &status) {
                    // The server's copy changed since: it comes back here, whole.
                    state.rebuild_folder(row.id, 0, &[]).map_err(|e| lerr(e.to_string()))?;
                    ctx.simple_error(
                        ErrorKind::DeletionsHeld,
                        Some(&shown),
                        format!(
                            "the local folder {shown} was deleted, but the server's copy changed since the last sync; \
                                 it was not deleted there and comes back here"
                        ),
                        "delete it again once it is back, if you still want it gone",
                    );
                    continue;
                }
                if ctx.account.delete_policy == DeletePolicy::Flag {
                    ctx.simple_error(ErrorKind::DeletionsHeld, Some(&shown), format!("the local folder {shown} was deleted; with delete-policy = \"flag\" folders are not deleted on the server"), "delete the folder on the server yourself, or restore it here");
                    continue;
                }
                ctx.progress(Step::Folders, format!("deleting {shown} on the server"), Some(&shown), (0, 0), (0, 0));
                if ctx.account.delete_policy == DeletePolicy::Trash && status.messages > 0 {
                    let trash = mailboxes
                        .iter()
                        .find(|m| m.attributes.iter().any(|a| a.eq_ignore_ascii_case("\\Trash")))
                        .map(|m| m.far_name.clone())
                        .or_else(|| ctx.account.trash_folder.clone());
                    if let Some(trash) = trash.filter(|t| *t != row.far_name) {
                        let imap = |e: syncmail_imap::Error| errors::from_imap(&name, Some(&shown), &e);
                        session.select(&row.far_name, None).map_err(imap)?;
                        let uids: Vec<u32> = session.identities().map_err(imap)?.into_iter().map(|(u, ..)| u).collect();
                        session.move_messages(&uids, &trash).map_err(imap)?;
                    }
                }
                match session.delete_folder(&row.far_name) {
                    Ok(()) => {}
                    Err(e @ (syncmail_imap::Error::No { .. } | syncmail_imap::Error::Bad { .. })) => {
                        ctx.error(errors::from_imap(&name, Some(&shown), &e));
                        continue;
                    }
                    Err(e) => return Err(errors::from_imap(&name, Some(&shown), &e)),
                }
                ctx.step()?;
                state.delete_folder(row.id).map_err(|e| lerr(e.to_string()))?;
                deleted_far.push(row.far_name.clone());
                ctx.report.hierarchy.push(FolderChange::Deleted { side: Side::Server, folder: shown });
                ctx.step()?;
            }
            (Found::Gone, Found::Here) if down && !hold_near_deletions => {
                let quiet = near_unchanged(state, &row, &root).map_err(lerr)?;
                if !quiet {
                    if up {
                        ctx.progress(
                            Step::Folders,
                            format!("creating {shown} on the server again"),
                            Some(&shown),
                            (0, 0),
                            (0, 0),
                        );
                        session.create(&row.far_name).map_err(|e| errors::from_imap(&name, Some(&shown), &e))?;
                        state.rebuild_folder(row.id, 0, &[]).map_err(|e| lerr(e.to_string()))?;
                        mailboxes.push(listed(&row.far_name, &row.display_name, row.delimiter.or(delim)));
                        ctx.simple_error(
                            ErrorKind::DeletionsHeld,
                            Some(&shown),
                            format!(
                                "the folder {shown} was deleted on the server, but the local copy changed since \
                                     the last sync; it was created again there and its messages are uploaded"
                            ),
                            "delete it here and on the server once it is back, if you still want it gone",
                        );
                    } else {
                        ctx.simple_error(ErrorKind::DeletionsHeld, Some(&shown), format!("the folder {shown} was deleted on the server, but the local copy changed since the last sync; it was kept"), "sync with upload-hierarchy to bring it back to the server, or delete it here");
                    }
                    continue;
                }
                ctx.progress(Step::Folders, format!("deleting {shown} here"), Some(&shown), (0, 0), (0, 0));
                remove_near_folder(&root, &row.near_path)
                    .map_err(|e| lerr(format!("cannot delete {}: {e}", row.near_path)))?;
                ctx.step()?;
                state.delete_folder(row.id).map_err(|e| lerr(e.to_string()))?;
                ctx.report.hierarchy.push(FolderChange::Deleted { side: Side::Local, folder: shown });
                ctx.step()?;
            }
            _ => {}
        }
    }
    mailboxes.retain(|m| !deleted_far.contains(&m.far_name));

    // New local folders: created on the server.
    if up {
        let far_now: HashSet<String> = mailboxes.iter().map(|m| m.far_name.clone()).collect();
        for p in new_near {
            let Ok(display) = display_of(&p, delim, layout) else { continue };
            let far_name = session.encode_name(&display);
            if state.folder_by_path(&p).map_err(|e| lerr(e.to_string()))?.is_some() {
                continue;
            }
            if !far_now.contains(&far_name) {
                ctx.progress(
                    Step::Folders,
                    format!("creating {display} on the server"),
                    Some(&display),
                    (0, 0),
                    (0, 0),
                );
                match session.create(&far_name) {
                    Ok(()) => {}
                    Err(e @ (syncmail_imap::Error::No { .. } | syncmail_imap::Error::Bad { .. })) => {
                        ctx.error(errors::from_imap(&name, Some(&display), &e));
                        continue;
                    }
                    Err(e) => return Err(errors::from_imap(&name, Some(&display), &e)),
                }
                ctx.step()?;
                mailboxes.push(listed(&far_name, &display, delim));
                ctx.report.hierarchy.push(FolderChange::Created { side: Side::Server, folder: display.clone() });
            }
            // The folder exists on both sides now (or both made it): one state row for it.
            if state.folder(&far_name).map_err(|e| lerr(e.to_string()))?.is_none() {
                state.add_folder(&far_name, &display, &p, delim).map_err(|e| lerr(e.to_string()))?;
                ctx.step()?;
            }
        }
    }
    let _ = &new_far; // unknown server folders are created locally by the contents sync
    Ok(())
}

/// A folder as LIST would show it, for one created or renamed during this run.
fn listed(far_name: &str, display: &str, delimiter: Option<char>) -> Mailbox {
    Mailbox {
        far_name: far_name.to_string(),
        display_name: display.to_string(),
        delimiter,
        selectable: true,
        attributes: Vec::new(),
        status: None,
    }
}

/// Where the listing has a folder (selectable).
fn listed_at(mailboxes: &[Mailbox], far_name: &str) -> Option<usize> {
    mailboxes.iter().position(|m| m.selectable && m.far_name == far_name)
}

/// After a RENAME: the listing shows the folder and its children under the new name.
fn rename_listed(
    mailboxes: &mut [Mailbox],
    from: &str,
    to: &str,
    from_display: &str,
    to_display: &str,
    delim: Option<char>,
) {
    for m in mailboxes.iter_mut() {
        if m.far_name == from {
            m.far_name = to.to_string();
            m.display_name = to_display.to_string();
            m.status = None;
        } else if let Some(d) = delim
            && let Some(rest) = m.far_name.strip_prefix(&format!("{from}{d}")).map(str::to_string)
        {
            if let Some(shown_rest) = m.display_name.strip_prefix(&format!("{from_display}{d}")) {
                m.display_name = format!("{to_display}{d}{shown_rest}");
            }
            m.far_name = format!("{to}{d}{rest}");
            m.status = None;
        }
    }
}

/// Gets STATUS for the listed folders at `which` that came without it.
fn fill_statuses(session: &mut Session, mailboxes: &mut [Mailbox], which: &[usize]) -> syncmail_imap::Result<()> {
    let names: Vec<String> =
        which.iter().filter(|&&i| mailboxes[i].status.is_none()).map(|&i| mailboxes[i].far_name.clone()).collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut got = session.status_many(&names)?;
    for &i in which {
        if let Some(Ok(s)) = got.remove(&mailboxes[i].far_name) {
            mailboxes[i].status = Some(s);
        }
    }
    Ok(())
}

/// The position in `new_far` of the folder a known, vanished server folder was renamed
/// to, if one is found: same UIDVALIDITY, and the same UIDNEXT and count, or else at
/// least half of the known messages there under the same UIDs with the same sizes.
fn far_rename_candidate(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &State,
    row: &FolderRow,
    mailboxes: &[Mailbox],
    new_far: &[usize],
) -> Result<Option<usize>, SyncError> {
    // MAILBOXID (RFC 8474) stays with a folder across a rename: where both sides know it,
    // it decides alone.
    if !row.mailbox_id.is_empty() {
        return Ok((0..new_far.len()).find(|&k| {
            mailboxes[new_far[k]].status.as_ref().and_then(|s| s.mailbox_id.as_deref()) == Some(&row.mailbox_id)
        }));
    }
    if row.uidvalidity == 0 {
        return Ok(None);
    }
    let same: Vec<usize> = (0..new_far.len())
        .filter(|&k| mailboxes[new_far[k]].status.as_ref().is_some_and(|s| s.uidvalidity == row.uidvalidity))
        .collect();
    if let Some(&k) =
        same.iter().find(|&&k| mailboxes[new_far[k]].status.as_ref().is_some_and(|s| far_unchanged(row, s)))
    {
        return Ok(Some(k));
    }
    let known = state.messages(row.id).map_err(|e| errors::local(ctx.name(), None, e.to_string()))?;
    if known.is_empty() {
        return Ok(None);
    }
    for k in same {
        let mb = &mailboxes[new_far[k]];
        let imap = |e: syncmail_imap::Error| errors::from_imap(ctx.name(), Some(&mb.display_name), &e);
        match session.select(&mb.far_name, None) {
            Ok(_) => {}
            // Gone again (deleted meanwhile) or unreadable: not the folder looked for.
            Err(syncmail_imap::Error::No { .. }) => continue,
            Err(e) => return Err(imap(e)),
        }
        let there: HashMap<u32, u64> =
            session.identities().map_err(imap)?.into_iter().map(|(u, _, s, _)| (u, s)).collect();
        let matched = known.values().filter(|r| there.get(&r.uid) == Some(&r.size)).count();
        if matched * 2 >= known.len() {
            return Ok(Some(k));
        }
    }
    Ok(None)
}

/// Finishes renames a crash interrupted (rows with `prev_*` names): on the server, a
/// RENAME not yet made is made; locally, a directory not yet moved is moved.
fn finish_interrupted_renames(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    mailboxes: &mut [Mailbox],
) -> Result<(), SyncError> {
    let name = ctx.name().to_string();
    let lerr = |what: String| errors::local(&name, None, what);
    let rows = state.folders().map_err(|e| lerr(e.to_string()))?;
    let pending: Vec<&FolderRow> = rows.iter().filter(|r| !r.prev_far_name.is_empty()).collect();
    if pending.is_empty() {
        return Ok(());
    }
    let root = ctx.account.maildir.clone();
    let listed: BTreeSet<String> = mailboxes.iter().map(|m| m.far_name.clone()).collect();
    let delim = delimiter(mailboxes);
    // Children were renamed with their parent: only the top of each rename is carried out.
    for r in &pending {
        let is_child = pending.iter().any(|p| {
            p.id != r.id
                && (r.near_path.starts_with(&ctx.account.layout.child_prefix(&p.near_path))
                    || p.delimiter.is_some_and(|d| r.far_name.starts_with(&format!("{}{d}", p.far_name))))
        });
        if is_child {
            continue;
        }
        if r.prev_far_name != r.far_name && !listed.contains(&r.far_name) && listed.contains(&r.prev_far_name) {
            session
                .rename(&r.prev_far_name, &r.far_name)
                .map_err(|e| errors::from_imap(&name, Some(&r.display_name), &e))?;
            let old_display = mailboxes
                .iter()
                .find(|m| m.far_name == r.prev_far_name)
                .map_or_else(|| r.display_name.clone(), |m| m.display_name.clone());
            rename_listed(mailboxes, &r.prev_far_name, &r.far_name, &old_display, &r.display_name, delim);
        }
        if r.prev_near_path != r.near_path && !root.join(&r.near_path).exists() && root.join(&r.prev_near_path).exists()
        {
            move_dir(&root, &r.prev_near_path, &r.near_path, ctx.account.layout)
                .map_err(|e| lerr(format!("cannot rename {} to {}: {e}", r.prev_near_path, r.near_path)))?;
        }
    }
    state.finish_renames().map_err(|e| lerr(e.to_string()))?;
    Ok(())
}
