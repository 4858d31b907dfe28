//! Fetching the bodies of placeholders (see `placeholder`), on demand.
//!
//! Per folder, step by step (each step ends with `Ctx::step`, where the crash tests
//! interrupt):
//! 1. the folder is selected and its UIDVALIDITY checked against the state (a renumbered
//!    folder is left to the next sync); a placeholder whose file holds the whole message
//!    already (a run cut off after its rename) only has its mark cleared;
//! 2. the bodies are fetched (`BODY.PEEK[]`, so `\Seen` is not set), written to `tmp/`
//!    and fsynced; nothing visible has changed yet;
//! 3. each is renamed over its placeholder's *current* file (found by unique name: a mail
//!    reader may have renamed it for its flags), so the name, and with it the flags, stay;
//!    a reader's rename that crossed ours is caught by listing again; `cur/` and `new/` are
//!    fsynced;
//! 4. one state commit clears the placeholder marks.
//!
//! A crash anywhere leaves every message's file either the placeholder or the whole
//! message (renames are atomic); the state's mark and the file's marker field tell the
//! next fetch which one it is. The state is the journal: the mark is set before the
//! placeholder exists and cleared only after the whole message is durable.

use super::{Ctx, errors, placeholder};
use crate::api::{Bodies, ErrorKind, FolderReport, Step, SyncError, SyncReport, SyncRequest};
use crate::config::AccountConfig;
use crate::far::{Body, Session, Spill};
use crate::state::{FolderRow, State};
use std::collections::{BTreeMap, BTreeSet};
use syncmail_maildir::{self as maildir, Folder};

/// Messages per UID FETCH command, and commands in flight.
const CHUNK: usize = 20;
const WINDOW: usize = 2;
/// Bodies of this size or more are streamed to their file, never held in memory whole.
const STREAM_FROM: u64 = 1 << 20;

/// Fetches the bodies `which` names; returns the report (`done` is the caller's to call).
pub(crate) fn run(account: &AccountConfig, which: &Bodies, req: &SyncRequest) -> SyncReport {
    let cancel = crate::api::CancelToken::default();
    let steps = std::sync::atomic::AtomicU64::new(0);
    let mut ctx = Ctx {
        account,
        req,
        cancel: &cancel,
        report: SyncReport { account: account.name.clone(), ..Default::default() },
        steps: &steps,
        op: "",
        preempt: &|| false,
        remaining: None,
        preempted: false,
        lane: 0,
        concurrent: false,
    };
    if let Err(e) = fetch(&mut ctx, which) {
        ctx.error(e);
    }
    ctx.report
}

fn fetch(ctx: &mut Ctx<'_>, which: &Bodies) -> Result<(), SyncError> {
    let account = ctx.account;
    let name = account.name.clone();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&name, None, e.to_string());
    let _lock = super::AccountLock::take(account).map_err(|m| SyncError {
        kind: ErrorKind::Locked,
        account: name.clone(),
        folder: None,
        message: m,
        server_text: None,
        hint: "wait for the sync to finish, then fetch again".into(),
        retryable: true,
    })?;
    let mut state = State::open(&account.state_dir.join("state.sqlite")).map_err(|e| lerr(&e))?;
    let targets = targets(ctx, &state, which).map_err(|e| lerr(&e))?;
    if targets.is_empty() {
        return Ok(());
    }
    let mut session = ctx.connect()?;
    let result = (|| {
        for (row, uids) in &targets {
            let report = fetch_folder(ctx, &mut session, &mut state, row, uids)?;
            if report.bodies_fetched > 0 {
                ctx.report.folders.push(report);
            }
        }
        Ok(())
    })();
    ctx.report.count_traffic(&session);
    if result.is_ok() {
        session.logout();
    }
    result
}

/// The placeholders to fetch, by folder. Names that match nothing are reported.
fn targets(ctx: &mut Ctx<'_>, state: &State, which: &Bodies) -> rusqlite::Result<Vec<(FolderRow, Vec<u32>)>> {
    let folders = state.folders()?;
    let find = |f: &str| folders.iter().find(|r| r.display_name == f || r.far_name == f).cloned();
    let mut by_folder: BTreeMap<i64, (FolderRow, BTreeSet<u32>)> = BTreeMap::new();
    match which {
        Bodies::Uids { folder, uids } => {
            let Some(row) = find(folder) else {
                ctx.simple_error(
                    ErrorKind::Config,
                    Some(folder),
                    format!("there is no synced folder {folder:?}"),
                    "give the folder's name as `syncmail sync` shows it",
                );
                return Ok(Vec::new());
            };
            let known = state.messages(row.id)?;
            let marked = state.placeholders(row.id)?;
            let mut wanted = BTreeSet::new();
            for uid in uids {
                if marked.contains(uid) {
                    wanted.insert(*uid);
                } else if !known.contains_key(uid) {
                    ctx.simple_error(
                        ErrorKind::Message,
                        Some(&row.display_name),
                        format!("the folder has no message with UID {uid}"),
                        "check the UID (a placeholder's note names it); run `syncmail sync` first if it is new",
                    );
                } // else: whole already, nothing to do
            }
            by_folder.insert(row.id, (row, wanted));
        }
        Bodies::MessageId(id) => {
            let id = id.trim();
            let bare = id.trim_start_matches('<').trim_end_matches('>');
            let mut found = state.placeholders_by_message_id(&format!("<{bare}>"))?;
            found.extend(state.placeholders_by_message_id(bare)?);
            if found.is_empty() {
                ctx.simple_error(
                    ErrorKind::Message,
                    None,
                    format!("no placeholder has the Message-ID {id}"),
                    "the message is whole already, or not synced yet (run `syncmail sync`)",
                );
            }
            for (fid, uid) in found {
                if let Some(row) = folders.iter().find(|r| r.id == fid) {
                    by_folder.entry(fid).or_insert_with(|| (row.clone(), BTreeSet::new())).1.insert(uid);
                }
            }
        }
        Bodies::All { folder } => {
            let rows: Vec<FolderRow> = match folder {
                Some(f) => match find(f) {
                    Some(r) => vec![r],
                    None => {
                        ctx.simple_error(
                            ErrorKind::Config,
                            Some(f),
                            format!("there is no synced folder {f:?}"),
                            "give the folder's name as `syncmail sync` shows it",
                        );
                        Vec::new()
                    }
                },
                None => folders.clone(),
            };
            for row in rows {
                let marked = state.placeholders(row.id)?;
                by_folder.insert(row.id, (row, marked));
            }
        }
    }
    Ok(by_folder.into_values().filter(|(_, u)| !u.is_empty()).map(|(r, u)| (r, u.into_iter().collect())).collect())
}

pub(crate) fn fetch_folder(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    row: &FolderRow,
    uids: &[u32],
) -> Result<FolderReport, SyncError> {
    let account = ctx.name().to_string();
    let shown = row.display_name.as_str();
    let lerr = |e: &dyn std::fmt::Display| errors::local(&account, Some(shown), e.to_string());
    let imap = |e: syncmail_imap::Error| errors::from_imap(&account, Some(shown), &e);
    let mut report = FolderReport { folder: shown.to_string(), ..Default::default() };
    let dir = Folder::new(ctx.account.maildir.join(&row.near_path));

    // Step 1: the folder as the state knows it, and what a cut-off run finished already.
    let sel = session.select(&row.far_name, None).map_err(imap)?;
    if sel.uidvalidity != row.uidvalidity {
        ctx.simple_error(
            ErrorKind::UidValidity,
            Some(shown),
            "the server renumbered the folder since the last sync; no body was fetched".into(),
            "run `syncmail sync` (it matches the messages again), then fetch",
        );
        return Ok(report);
    }
    let known = state.messages(row.id).map_err(|e| lerr(&e))?;
    let uniques: BTreeSet<String> = uids.iter().filter_map(|u| known.get(u)).map(|r| r.near_id.clone()).collect();
    let files = dir.entries_of(&uniques).map_err(|e| lerr(&e))?;
    let mut whole_already = Vec::new();
    let mut to_fetch: BTreeMap<u32, String> = BTreeMap::new();
    for uid in uids {
        let Some(r) = known.get(uid) else { continue };
        let Some(entry) = files.get(&r.near_id).and_then(|v| v.first()) else {
            ctx.simple_error(
                ErrorKind::Message,
                Some(shown),
                format!("the placeholder of UID {uid} ({}) is not in the folder any more", r.near_id),
                "run `syncmail sync`: a placeholder deleted here is deleted on the server, one moved is moved",
            );
            continue;
        };
        if placeholder::is_placeholder(&dir.read(entry).map_err(|e| lerr(&e))?) {
            to_fetch.insert(*uid, r.near_id.clone());
        } else {
            whole_already.push(*uid);
        }
    }
    if !whole_already.is_empty() {
        state.clear_placeholders(row.id, &whole_already).map_err(|e| lerr(&e))?;
        report.bodies_fetched += whole_already.len() as u64;
        ctx.step()?;
    }
    if to_fetch.is_empty() {
        return Ok(report);
    }

    // Step 2: the bodies, to tmp/ and durable. A leftover of a cut-off run goes first.
    let tmp_name = |unique: &str| format!("{unique}.body");
    for unique in to_fetch.values() {
        let _ = std::fs::remove_file(dir.path().join("tmp").join(tmp_name(unique)));
    }
    let wanted: Vec<u32> = to_fetch.keys().copied().collect();
    let total = wanted.len() as u64;
    let total_bytes: u64 = wanted.iter().filter_map(|u| known.get(u)).map(|r| r.size).sum();
    let (mut done, mut done_bytes) = (0u64, 0u64);
    let mut staged: Vec<(u32, maildir::Staged)> = Vec::new();
    let mut failure: Option<SyncError> = None;
    let spill = Spill { dir: dir.path().join("tmp"), threshold: STREAM_FROM };
    let mut data = Vec::new();
    ctx.op = "fetching bodies (UID FETCH)";
    let refused = session
        .fetch_bodies_to(&wanted, CHUNK, WINDOW, &spill, |uid, _flags, body| {
            let Some(unique) =
                to_fetch.get(&uid).filter(|_| failure.is_none() && staged.iter().all(|(u, _)| *u != uid))
            else {
                if let Body::File { path, .. } = body {
                    let _ = std::fs::remove_file(path);
                }
                return Ok(());
            };
            let (result, len) = match body {
                Body::Bytes(b) => {
                    maildir::crlf_to_lf_into(b, &mut data);
                    (dir.stage_unsynced(&tmp_name(unique), &data), b.len() as u64)
                }
                Body::Lf { data: lf, len } => (dir.stage_unsynced(&tmp_name(unique), &lf), len),
                Body::File { path, len } => (dir.stage_written(&tmp_name(unique), &path), len),
            };
            match result {
                Ok(s) => staged.push((uid, s)),
                Err(e) => failure = Some(lerr(&e)),
            }
            done += 1;
            done_bytes += len;
            ctx.progress(
                Step::Download,
                format!("fetching {total} message bodies"),
                Some(shown),
                (done, total),
                (done_bytes, total_bytes.max(done_bytes)),
            );
            Ok(())
        })
        .map_err(imap)?;
    if let Some(f) = failure {
        return Err(f);
    }
    let files: Vec<&maildir::Staged> = staged.iter().map(|(_, s)| s).collect();
    dir.sync_staged(&files).map_err(|e| lerr(&e))?;
    let missing: Vec<u32> = wanted.iter().copied().filter(|u| staged.iter().all(|(s, _)| s != u)).collect();
    if !missing.is_empty() {
        ctx.error(SyncError {
            kind: ErrorKind::Message,
            account: account.clone(),
            folder: Some(shown.to_string()),
            message: format!(
                "the server did not send {} message(s) (UIDs {}); their placeholders stay",
                missing.len(),
                syncmail_imap::uid_set(&missing)
            ),
            server_text: refused.iter().find_map(|e| e.server_text().map(str::to_string)),
            hint: "they may have been deleted on the server; `syncmail sync` deletes such placeholders".into(),
            retryable: true,
        });
    }
    ctx.step()?;

    // Step 3: each body over its placeholder's current file, then the renames durable.
    let replacing: BTreeSet<String> = staged.iter().map(|(u, _)| to_fetch[u].clone()).collect();
    let now = dir.entries_of(&replacing).map_err(|e| lerr(&e))?;
    let mut placed = Vec::new();
    for (uid, s) in staged {
        let unique = &to_fetch[&uid];
        match now.get(unique).and_then(|v| v.first()) {
            Some(current) => placed.push((uid, unique.clone(), dir.replace(s, current).map_err(|e| lerr(&e))?)),
            None => {
                // Deleted by a mail reader while the body came: the deletion wins.
                let _ = std::fs::remove_file(dir.path().join("tmp").join(tmp_name(unique)));
            }
        }
    }
    // A reader's rename between the listing and ours leaves its (placeholder) file under
    // its new name beside ours: ours takes that name, flags the reader chose included.
    let after = dir.entries_of(&replacing).map_err(|e| lerr(&e))?;
    for (_, unique, ours) in &placed {
        if let Some(other) = after.get(unique).and_then(|v| v.iter().find(|e| *e != ours)) {
            dir.rename_over(ours, other).map_err(|e| lerr(&e))?;
        }
    }
    dir.sync().map_err(|e| lerr(&e))?;
    ctx.step()?;

    // Step 4: the marks cleared, in one commit.
    let fetched: Vec<u32> = placed.iter().map(|(u, ..)| *u).collect();
    state.clear_placeholders(row.id, &fetched).map_err(|e| lerr(&e))?;
    report.bodies_fetched += fetched.len() as u64;
    report.bytes_downloaded = done_bytes;
    ctx.step()?;
    Ok(report)
}
