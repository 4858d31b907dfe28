//! A folder whose UIDVALIDITY changed: the server renumbered its messages (a restored
//! backup, a rebuilt index, a folder deleted and made again under the same name). Its
//! messages are matched again instead of being downloaded twice or deleted: by
//! Message-ID and size where that pair is unique on both sides, by content where it is
//! not. If fewer than half of the local messages are found, the server folder is taken to
//! be a different one: the local folder is moved aside, whole, and the folder is synced
//! afresh; an error event says where the old messages are.

use super::message::{header, lf_to_crlf};
use super::{Ctx, errors};
use crate::api::{ErrorKind, SyncError};
use crate::far::Session;
use crate::state::{FolderRow, State};
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use syncmail_imap::Flags;
use syncmail_maildir::{self as maildir, Folder};

/// What became of the folder.
pub(crate) enum Outcome {
    /// Matched again: `matched` of `local` local messages kept their server copy.
    Rematched { matched: usize, local: usize },
    /// A different folder: the old local one was moved to `moved_to`.
    MovedAside { moved_to: std::path::PathBuf },
}

fn digest(data: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

struct Local {
    near_id: String,
    /// The flags both sides agreed on under the old numbering (for a download that was
    /// cut short, or an upload under way, the flags of the file).
    agreed: Flags,
    message_id: String,
    crlf: Vec<u8>,
    /// The server's size of the message: the file's, except for a placeholder (whose
    /// recorded size is the whole message's).
    size: u64,
    /// A placeholder: matched by Message-ID and size only (its content is not the
    /// message's), and it stays one.
    placeholder: bool,
}

pub(crate) fn rematch(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    row: &FolderRow,
    dir: &Folder,
    uidvalidity: u32,
) -> Result<Outcome, SyncError> {
    let shown = row.display_name.as_str();
    let lerr = |e: &dyn std::fmt::Display| errors::local(ctx.name(), Some(shown), e.to_string());
    let near = dir.scan().map_err(|e| lerr(&e))?;
    let known = state.messages(row.id).map_err(|e| lerr(&e))?;
    let journal = state.appends(row.id).map_err(|e| lerr(&e))?;
    let marked = state.placeholders(row.id).map_err(|e| lerr(&e))?;
    let mut locals = Vec::new();
    let refs = known
        .values()
        .map(|r| (r.near_id.clone(), (!r.pending).then_some(r.flags), marked.contains(&r.uid).then_some(r.size)))
        .chain(journal.iter().map(|a| (a.near_id.clone(), None, None)));
    for (near_id, agreed, placeholder_size) in refs {
        let Some(e) = near.get(&near_id) else { continue };
        let crlf = lf_to_crlf(&dir.read(e).map_err(|e| lerr(&e))?);
        locals.push(Local {
            message_id: header(&crlf, "Message-ID").unwrap_or_default(),
            agreed: agreed.unwrap_or(e.flags),
            near_id,
            size: placeholder_size.unwrap_or(crlf.len() as u64),
            placeholder: placeholder_size.is_some(),
            crlf,
        });
    }
    let imap = |e: syncmail_imap::Error| errors::from_imap(ctx.name(), Some(shown), &e);
    let server = session.identities().map_err(imap)?;

    // Message-ID and size, where that pair is unique on both sides.
    let mut by_key: HashMap<(String, u64), Vec<u32>> = HashMap::new();
    for (uid, _, size, id) in &server {
        by_key.entry((id.clone(), *size)).or_default().push(*uid);
    }
    let mut local_keys: HashMap<(String, u64), usize> = HashMap::new();
    for l in &locals {
        *local_keys.entry((l.message_id.clone(), l.size)).or_default() += 1;
    }
    let mut used: BTreeSet<u32> = BTreeSet::new();
    let mut pairs: Vec<(u32, String, Flags, u64)> = Vec::new();
    let mut ambiguous: Vec<&Local> = Vec::new();
    for l in &locals {
        let key = (l.message_id.clone(), l.size);
        match by_key.get(&key) {
            Some(c) if !l.message_id.is_empty() && c.len() == 1 && local_keys[&key] == 1 => {
                used.insert(c[0]);
                pairs.push((c[0], l.near_id.clone(), l.agreed, l.size));
            }
            Some(_) if !l.placeholder => ambiguous.push(l),
            _ => {}
        }
    }
    // The rest by content: only the candidates of the same size are fetched.
    if !ambiguous.is_empty() {
        let sizes: BTreeSet<u64> = ambiguous.iter().map(|l| l.crlf.len() as u64).collect();
        let cands: Vec<u32> =
            server.iter().filter(|(u, _, s, _)| sizes.contains(s) && !used.contains(u)).map(|(u, ..)| *u).collect();
        let mut hashes: HashMap<u64, Vec<u32>> = HashMap::new();
        session
            .fetch_bodies(&cands, 50, 4, |uid, _, body| {
                hashes.entry(digest(body)).or_default().push(uid);
                Ok(())
            })
            .map_err(imap)?;
        for l in ambiguous {
            let d = digest(&l.crlf);
            if let Some(uids) = hashes.get_mut(&d)
                && let Some(pos) = uids.iter().position(|u| !used.contains(u))
            {
                let uid = uids.remove(pos);
                used.insert(uid);
                pairs.push((uid, l.near_id.clone(), l.agreed, l.crlf.len() as u64));
            }
        }
    }

    if !locals.is_empty() && pairs.len() * 2 < locals.len() {
        // A different folder under the old name: keep every local message, aside. Only
        // the folder's own messages move (cur, new, tmp); folders inside it stay.
        let base = dir.path().to_path_buf();
        let aside = |n: usize| {
            let suffix = if n == 1 { String::new() } else { format!("-{n}") };
            if row.near_path == "." {
                // Maildir++ INBOX: the root itself.
                base.join(format!(".INBOX~uidvalidity-{}{suffix}", row.uidvalidity))
            } else {
                let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                base.with_file_name(format!("{name}~uidvalidity-{}{suffix}", row.uidvalidity))
            }
        };
        let mut n = 1;
        let mut moved_to = aside(n);
        while moved_to.exists() {
            n += 1;
            moved_to = aside(n);
        }
        std::fs::create_dir_all(&moved_to).map_err(|e| lerr(&format!("creating {}: {e}", moved_to.display())))?;
        for sub in ["cur", "new", "tmp"] {
            match std::fs::rename(base.join(sub), moved_to.join(sub)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(lerr(&format!("moving {} aside: {e}", base.join(sub).display())));
                }
                _ => {}
            }
        }
        maildir::sync_dir(&moved_to).map_err(|e| lerr(&e))?;
        if let Some(parent) = moved_to.parent() {
            maildir::sync_dir(parent).map_err(|e| lerr(&e))?;
        }
        maildir::sync_dir(&base).map_err(|e| lerr(&e))?;
        dir.create().map_err(|e| lerr(&e))?;
        state.rebuild_folder(row.id, uidvalidity, &[]).map_err(|e| lerr(&e))?;
        return Ok(Outcome::MovedAside { moved_to });
    }
    // A placeholder not matched holds nothing but a header: kept, it would be a file no
    // row knows, refused for upload on every run, beside the message downloaded afresh.
    let matched: BTreeSet<&str> = pairs.iter().map(|(_, n, ..)| n.as_str()).collect();
    let mut removed = false;
    for l in locals.iter().filter(|l| l.placeholder && !matched.contains(l.near_id.as_str())) {
        if let Some(e) = near.get(&l.near_id) {
            dir.remove(e).map_err(|e| lerr(&e))?;
            removed = true;
        }
    }
    if removed {
        dir.sync().map_err(|e| lerr(&e))?;
    }
    let still: BTreeSet<String> = locals
        .iter()
        .filter(|l| l.placeholder && matched.contains(l.near_id.as_str()))
        .map(|l| l.near_id.clone())
        .collect();
    state.rebuild_folder_with(row.id, uidvalidity, &pairs, &still).map_err(|e| lerr(&e))?;
    Ok(Outcome::Rematched { matched: pairs.len(), local: locals.len() })
}

/// The error event for a folder moved aside.
pub(crate) fn moved_aside_error(ctx: &Ctx<'_>, row: &FolderRow, new: u32, moved_to: &std::path::Path) -> SyncError {
    SyncError {
        kind: ErrorKind::UidValidity,
        account: ctx.name().to_string(),
        folder: Some(row.display_name.clone()),
        message: format!(
            "the server's folder is a different one now (UIDVALIDITY {} → {new}) and holds fewer than half of the \
             local messages; the local folder was moved, whole, to {}, and the folder was synced afresh",
            row.uidvalidity,
            moved_to.display()
        ),
        server_text: None,
        hint: format!(
            "nothing was deleted: look through {} (your mail reader shows it as a folder) and move back what \
             you want in the new folder; syncmail does not touch it",
            moved_to.display()
        ),
        retryable: false,
    }
}
