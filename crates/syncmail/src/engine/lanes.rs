//! The folders' contents, synced on one connection or on two at once ("lanes").
//!
//! The folders to sync wait in one queue, in the run's order (INBOX first). Each lane
//! takes the next folder, syncs it, and comes back for another, until the queue is empty or
//! the run stops (cancelled, giving way to on-demand work, or a fatal error in either lane:
//! the other lane finishes the folder in hand and takes no more).
//!
//! One lane is the first connection, on the sync's own thread. A second lane, on a thread
//! and a connection of its own, is opened where the account allows two connections and the
//! folder list shows two or more folders changed on the server: a sync with nothing to do
//! never opens it. It logs in with the secret the first connection used (no second password
//! command or keyring lookup, no second try of a wrong password). Refused (a server that
//! allows one connection per user answers `NO [LIMIT]`), it ends quietly and the first
//! lane takes the rest; cut in a folder, it hands that folder back (done again by the
//! first connection after the lanes, from its journal) and ends: the lane is a way to go
//! faster, never a reason to fail.
//!
//! Why two: for a changed folder the server has work of its own to do (Dovecot reads a
//! Maildir folder's whole directory for the first look after a change, and the folder's
//! uidlist for the first body fetched), and on one connection that work and the engine's
//! come one after the other. Two lanes overlap them, and over a network overlap the round
//! trips too.
//!
//! What keeps it safe: each lane has its own session, its own handle on the state (SQLite
//! serializes the writers; every write transaction takes the write lock first) and its own
//! [`NearIndex`]; every folder's steps are journaled as in a one-lane run. The steps that
//! reach into another folder are kept out of the lanes: a folder whose plan uploads or
//! deletes on the server (where local moves are found, and where a new local file may be a
//! message moved from another folder) is *deferred* by [`super::folder::sync_folder`] before
//! it acts, and synced after both lanes are done, on the first connection alone. What is
//! left across folders is the search for a local copy of a message moved on the server,
//! which only reads: a copy that another lane removes meanwhile is downloaded instead.
//! Progress and error callbacks come from both threads, one call at a time (every run
//! reports through a [`OneAtATime`]); the run's report lists the folders in the run's
//! order.

use super::moves::NearIndex;
use super::{Ctx, errors, folder, plan};
use crate::api::{ErrorKind, FolderReport, Progress, Step, SyncError, SyncFlags, SyncProgress, SyncReport};
use crate::config::{FindChanges, ImapConfig};
use crate::far::{Mailbox, MailboxStatus, Session};
use crate::lock;
use crate::state::{FolderRow, State};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use syncmail_imap::{Error as ImapError, Secret};

/// One folder to sync: its place in the run's order, and what the folder list (or STATUS)
/// said of it: `None` where nothing was asked (SELECT decides), an error where the server
/// refused the STATUS.
pub(crate) struct Item<'m> {
    pub index: usize,
    pub mailbox: &'m Mailbox,
    pub status: Option<Result<MailboxStatus, ImapError>>,
}

/// What every folder of the run shares.
pub(crate) struct Job<'t> {
    pub flags: SyncFlags,
    pub trash: Option<&'t str>,
    /// Folders in the run, for progress.
    pub total: u64,
}

/// The folders not taken yet, and whether the lanes should stop taking them.
struct Queue<'m> {
    items: Mutex<VecDeque<Item<'m>>>,
    stop: AtomicBool,
}

impl<'m> Queue<'m> {
    fn pop(&self) -> Option<Item<'m>> {
        if self.stop.load(Ordering::SeqCst) {
            return None;
        }
        lock(&self.items).pop_front()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How a lane ended.
#[derive(Default)]
struct LaneEnd<'m> {
    /// Folders where something changed, by their place in the run's order.
    reports: Vec<(usize, FolderReport)>,
    /// Folders whose plan reaches into other folders: for the first lane alone, after.
    deferred: Vec<Item<'m>>,
    /// The lane gave way to more urgent work: the folder it gave way in (its downloads so
    /// far committed) or the one it had taken but not begun, by place and name.
    gave_way: Option<(usize, String)>,
    /// The session or the store broke: the run ends with this error.
    fatal: Option<SyncError>,
    /// The second connection broke and handed its folder back: not to be logged out (a
    /// stalled one would make LOGOUT wait for the timeout again).
    broken: bool,
}

/// How one folder's turn ended.
enum Turn {
    Done(Option<FolderReport>),
    /// Its plan needs the first lane alone (see the module doc).
    Deferred,
    /// It gave way to more urgent work between two download batches; what it did so far.
    GaveWay(Option<FolderReport>),
    /// The second connection broke in it: for the first connection, after the lanes.
    HandBack,
}

/// Whether the server says nothing changed in the folder since the state's mark (so its
/// sync needs no SELECT, unless the Maildir changed).
pub(crate) fn far_unchanged(row: &FolderRow, s: &MailboxStatus) -> bool {
    row.uidvalidity != 0
        && s.uidvalidity == row.uidvalidity
        && s.uidnext == row.uidnext
        && s.highestmodseq.is_some_and(|m| m == row.highestmodseq)
        && s.messages == row.far_count
}

/// Folders' statuses by server name; an error where the server refused one.
pub(crate) type Statuses = HashMap<String, Result<MailboxStatus, ImapError>>;

/// A round trip at most this long (loopback, a LAN) makes asking STATUS a few folders at a
/// time cheap next to what it can save (see [`probe`]).
const CHEAP_ROUND_TRIP: std::time::Duration = std::time::Duration::from_millis(2);

/// Whether this run finds the changed folders with [`probe`] rather than with the status
/// in the folder list (or one pipelined STATUS per folder): for the contents, over a
/// session whose round trip is cheap, on a server with CONDSTORE (without it no folder can
/// be seen unchanged, and every one is selected anyway).
/// `find-changes = "auto"`; always with `"probe"`, never with `"list"`.
pub(crate) fn probes(session: &Session, flags: SyncFlags, how: FindChanges) -> bool {
    flags.intersects(SyncFlags::DOWNLOAD_CONTENTS | SyncFlags::UPLOAD_CONTENTS)
        && session.condstore
        && match how {
            FindChanges::Auto => session.round_trip.is_some_and(|t| t <= CHEAP_ROUND_TRIP),
            FindChanges::Probe => true,
            FindChanges::List => false,
        }
}

/// STATUS of the folders `names` that were synced before, a few at a time, until enough of
/// them have changed that the rest are better left to SELECT; the folders not asked about
/// get no status (SELECT decides).
///
/// Why: a server may do the same work for STATUS as for SELECT. Dovecot, for one, reads a
/// changed Maildir folder's directory to answer STATUS, then opens the folder again for the
/// SELECT and reads its uidlist again for the first body fetched: asking STATUS first costs
/// it 11 to 16 ms more per changed 10,000-message folder than a SELECT alone (measured, see
/// docs/PERFORMANCE.md), while an unchanged folder costs it far less to STATUS (from its
/// list index) than to SELECT. So: one folder at a time while every folder asked has
/// changed, stopping at two (or at the first, where it was slow to answer: longer than the
/// round trip and [`SLOW_ANSWER`], the server read the folder for it, as Dovecot does);
/// once one is found unchanged, all the rest at once. A sync with nothing to do asks every
/// folder in two round trips instead of one (which is why this is only done where round
/// trips are cheap); one where most folders changed asks one or two.
/// The folders are asked in an order of their own, a hash of the name, so that the share of
/// changed ones among those asked says something of the rest (in the run's order, Sent and
/// Trash, which change often, would come together at the end), INBOX last: it is the first
/// folder synced, and the one most worth a SELECT alone.
///
/// Where the first takes the server long to answer (it is reading changed folders), or has
/// changed, the second connection the lanes will want is opened meanwhile, with `secret`
/// (see [`Early`]).
pub(crate) fn probe(
    ctx: &Ctx<'_>,
    session: &mut Session,
    state: &State,
    names: &[String],
    secret: Option<&Secret>,
) -> Result<(Statuses, Option<Early>), SyncError> {
    let rows = rows_by_name(ctx, state)?;
    // A folder never synced is selected whatever its status says.
    let mut left: Vec<String> =
        names.iter().filter(|n| rows.get(*n).is_some_and(|r| r.uidvalidity != 0)).cloned().collect();
    // Asked from the end of `left`.
    left.sort_by_key(|n| (!n.eq_ignore_ascii_case("INBOX"), fnv1a(n.as_bytes())));
    let mut out = HashMap::new();
    let mut early = None;
    let slow = session.round_trip.unwrap_or_default() + SLOW_ANSWER;
    // Where a second connection may be wanted by the lanes.
    let may_open = secret.filter(|_| names.len() >= 2 && ctx.account.imap.connections >= 2);
    let (mut asked, mut changed) = (0usize, 0usize);
    while !left.is_empty() {
        // One more while every folder asked has changed (the case to stop early in), else
        // all the rest at once.
        let window = if changed == asked { 1 } else { left.len() };
        let these = left.split_off(left.len().saturating_sub(window));
        // The first answer slow in coming: the second connection logs in meanwhile.
        let answered = match may_open {
            Some(secret) if asked == 0 => Early::unless_answered(ctx, secret.clone(), slow).map(|(e, answered)| {
                early = Some(e);
                answered
            }),
            _ => None,
        };
        let sent = std::time::Instant::now();
        let got = session.status_many(&these);
        if let Some(answered) = answered {
            let _ = answered.send(());
        }
        let took = sent.elapsed();
        if asked == 0 && took <= slow {
            early = None; // not opened (or, answered just in time, logged out)
        }
        let got = got.map_err(|e| errors::from_imap(ctx.name(), None, &e))?;
        for (name, status) in got {
            asked += 1;
            let same = matches!((&status, rows.get(&name)), (Ok(s), Some(row)) if far_unchanged(row, s));
            changed += usize::from(!same);
            out.insert(name, status);
        }
        // A first folder changed, and slow to answer: the server reads changed folders
        // for STATUS, which is what asking first would make it do twice.
        if (asked == 1 && changed == 1 && took > slow) || (changed >= 2 && 2 * changed >= asked) {
            break;
        }
        // A changed folder among the first asked: more are likely, and the second
        // connection logs in while the asking goes on.
        if let (None, Some(secret), true) = (&early, may_open, changed == asked) {
            early = Early::unless_answered(ctx, secret.clone(), std::time::Duration::ZERO).map(|(e, _)| e);
        }
    }
    Ok((out, early))
}

/// Longer than a STATUS answered from the server's indexes takes (under a millisecond on
/// Dovecot), shorter than one for which the server reads a changed folder (10 ms and more
/// for 10,000 messages on Dovecot).
const SLOW_ANSWER: std::time::Duration = std::time::Duration::from_millis(3);

/// A second connection opened ahead of the lanes, on a thread of its own, where the first
/// folder [`probe`] asks about has changed, or its STATUS answer is slow in coming (the
/// server is reading changed folders): the login (about 12 ms on Dovecot, most of it the
/// server's) overlaps the asking instead of coming after it. `None` from the thread: it
/// was not opened (answered in time); `Some(Err)`: the login failed (the lanes do not try
/// again).
/// Dropped unused, it is logged out (its login waited for where it is under way), so that
/// no thread of the run outlives it.
pub(crate) struct Early(Option<std::thread::JoinHandle<Option<Result<Session, ()>>>>);

impl Early {
    /// Starts the thread; it opens the connection unless told within `wait` (by the
    /// sender returned) that the answers came. Zero, the sender dropped: at once.
    fn unless_answered(
        ctx: &Ctx<'_>,
        secret: Secret,
        wait: std::time::Duration,
    ) -> Option<(Early, std::sync::mpsc::Sender<()>)> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let cfg = ctx.account.imap.clone();
        let trace = ctx.lane(ctx.req, 2).trace();
        let thread = std::thread::Builder::new().name("syncmail-connect".into()).spawn(super::helping(move || {
            // Told in time; else the time is up, or the sender gone without a word (opened
            // at once).
            if rx.recv_timeout(wait).is_ok() {
                return None;
            }
            Some(open_second(&cfg, trace, secret))
        }));
        Some((Early(Some(thread.ok()?)), tx))
    }

    /// The connection, once its login is done: `None` where it was not opened.
    fn join(mut self) -> Option<Result<Session, ()>> {
        self.0.take()?.join().ok().flatten()
    }
}

impl Drop for Early {
    fn drop(&mut self) {
        if let Some(Ok(Some(Ok(session)))) = self.0.take().map(std::thread::JoinHandle::join) {
            session.logout();
        }
    }
}

/// The state's folder rows by server name.
fn rows_by_name(ctx: &Ctx<'_>, state: &State) -> Result<HashMap<String, FolderRow>, SyncError> {
    Ok(state
        .folders()
        .map_err(|e| errors::local(ctx.name(), None, format!("sync state: {e}")))?
        .into_iter()
        .map(|r| (r.far_name.clone(), r))
        .collect())
}

/// A second connection, logged in with the secret the first one used: asked once, not kept
/// past the login, never tried again (an error where the server refuses it).
fn open_second(cfg: &ImapConfig, trace: Option<syncmail_imap::Trace>, secret: Secret) -> Result<Session, ()> {
    let mut secret = Some(secret);
    let mut fetch = |refresh: bool| match secret.take() {
        Some(s) if !refresh => Ok(s),
        _ => Err("the server refused the token the first connection logged in with".to_string()),
    };
    Session::open_with(cfg, trace, &mut fetch, &|_| {}).map_err(|_| ())
}

/// FNV-1a, 64 bits: an order of names that has nothing to do with their spelling.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Syncs the folders of `items`, on `session` and, where it pays and the account allows
/// it, on a second connection logged in with `secret`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sync_contents(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    index: &mut NearIndex,
    items: Vec<Item<'_>>,
    job: &Job<'_>,
    secret: Option<Secret>,
    early: Option<Early>,
) -> Result<(), SyncError> {
    let contents = job.flags.intersects(SyncFlags::DOWNLOAD_CONTENTS | SyncFlags::UPLOAD_CONTENTS);
    let rows = rows_by_name(ctx, state)?;
    // Changed on the server, or not known to have stayed the same.
    let changed = items
        .iter()
        .filter(|it| match (&it.status, rows.get(&it.mailbox.far_name)) {
            (Some(Ok(s)), Some(row)) => !far_unchanged(row, s),
            _ => true,
        })
        .count();
    let second = secret.filter(|_| ctx.account.imap.connections >= 2 && contents && changed >= 2);
    // Not wanted after all (dropped: logged out).
    let early = early.filter(|_| second.is_some());
    let queue = Queue { items: Mutex::new(items.into()), stop: AtomicBool::new(false) };
    let (first, other) = match second {
        None => (lane(ctx, session, state, index, &queue, job, false), None),
        Some(secret) => {
            let req = ctx.req;
            let index2 = index.sharing_attic();
            let outer = &*ctx;
            let queue = &queue;
            let (first, other) = std::thread::scope(|scope| {
                let second = super::helping(move || {
                    let mut ctx2 = outer.lane(req, 2);
                    let end = second_lane(&mut ctx2, secret, early, queue, job, index2);
                    (ctx2.report, end)
                });
                let thread = std::thread::Builder::new().name("syncmail-lane".into()).spawn_scoped(scope, second);
                let mut ctx1 = outer.lane(req, 1);
                let end = lane(&mut ctx1, session, state, index, queue, job, thread.is_ok());
                // A panic there (a bug) is the run's, as one here would be.
                let other = thread.ok().map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
                ((ctx1.report, end), other)
            });
            absorb(&mut ctx.report, first.0);
            let other = other.map(|(report, end)| {
                absorb(&mut ctx.report, report);
                end
            });
            (first.1, other)
        }
    };
    let mut ends = vec![first];
    ends.extend(other);
    let mut fatal = None;
    let mut gave_way = false;
    let mut reports = Vec::new();
    let mut deferred = Vec::new();
    // What the resumed run is to do, where the run gives way: (place in the order, name).
    let mut left: Vec<(usize, String)> = Vec::new();
    for e in ends {
        fatal = fatal.or(e.fatal);
        gave_way |= e.gave_way.is_some();
        reports.extend(e.reports);
        deferred.extend(e.deferred);
        left.extend(e.gave_way);
    }
    left.extend(lock(&queue.items).drain(..).map(|it| (it.index, it.mailbox.far_name.clone())));
    deferred.sort_by_key(|it| it.index);
    if fatal.is_none() && !gave_way && !ctx.report.cancelled && !deferred.is_empty() {
        // The deferred folders, on the first connection alone, with listings read afresh
        // (the other lane changed folders this one had read).
        *index = index.sharing_attic();
        let queue = Queue { items: Mutex::new(deferred.into()), stop: AtomicBool::new(false) };
        let end = lane(ctx, session, state, index, &queue, job, false);
        fatal = end.fatal;
        gave_way = end.gave_way.is_some();
        reports.extend(end.reports);
        left.extend(end.gave_way);
        left.extend(lock(&queue.items).drain(..).map(|it| (it.index, it.mailbox.far_name.clone())));
    } else {
        left.extend(deferred.into_iter().map(|it| (it.index, it.mailbox.far_name.clone())));
    }
    reports.sort_by_key(|(i, _)| *i);
    ctx.report.folders.extend(reports.into_iter().map(|(_, r)| r));
    if let Some(e) = fatal {
        return Err(e);
    }
    if gave_way && !ctx.report.cancelled {
        left.sort();
        left.dedup();
        ctx.remaining = Some(left.into_iter().map(|(_, name)| name).collect());
    }
    Ok(())
}

/// The second lane: its own connection (opened `early`, or now) and state, then the queue.
fn second_lane<'m>(
    ctx: &mut Ctx<'_>,
    secret: Secret,
    early: Option<Early>,
    queue: &Queue<'m>,
    job: &Job<'_>,
    mut index: NearIndex,
) -> LaneEnd<'m> {
    let account = ctx.account;
    let opened = match early.and_then(Early::join) {
        Some(r) => r,
        None => open_second(&account.imap, ctx.trace(), secret),
    };
    // Not in: the first lane takes every folder (said in the protocol trace only).
    let Ok(mut session) = opened else {
        return LaneEnd::default();
    };
    let Ok(mut state) = State::open(&account.state_dir.join("state.sqlite")) else {
        session.logout();
        return LaneEnd::default();
    };
    let end = lane(ctx, &mut session, &mut state, &mut index, queue, job, true);
    ctx.report.count_traffic(&session);
    if end.fatal.is_none() && !end.broken {
        session.logout();
    }
    end
}

/// Takes folders from `queue` and syncs them until it is empty or the run stops.
/// `concurrent`: another lane works at the same time.
fn lane<'m>(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    index: &mut NearIndex,
    queue: &Queue<'m>,
    job: &Job<'_>,
    concurrent: bool,
) -> LaneEnd<'m> {
    ctx.concurrent = concurrent;
    let mut end = LaneEnd::default();
    loop {
        if ctx.cancel.is_cancelled() {
            ctx.report.cancelled = true;
            queue.stop();
            break;
        }
        let Some(item) = queue.pop() else { break };
        // Giving way leaves the store as a cancel does (the attic too: what a local move
        // left there is found again by the next run).
        if (ctx.preempt)() {
            end.gave_way = Some((item.index, item.mailbox.far_name.clone()));
            queue.stop();
            break;
        }
        match one(ctx, session, state, index, &item, job) {
            Ok(Turn::Done(r)) => end.reports.extend(r.map(|r| (item.index, r))),
            Ok(Turn::Deferred) => end.deferred.push(item),
            Ok(Turn::HandBack) => {
                end.deferred.push(item);
                end.broken = true;
                break;
            }
            Ok(Turn::GaveWay(r)) => {
                end.reports.extend(r.map(|r| (item.index, r)));
                end.gave_way = Some((item.index, item.mailbox.far_name.clone()));
                queue.stop();
                break;
            }
            Err(e) => {
                end.fatal = Some(e);
                queue.stop();
                break;
            }
        }
    }
    ctx.concurrent = false;
    end
}

/// One folder: its status resolved, then synced; a dropped or stalled connection is
/// retried on a new one, with backoff (every step is journaled, so doing the folder again
/// finishes what was cut off).
fn one(
    ctx: &mut Ctx<'_>,
    session: &mut Session,
    state: &mut State,
    index: &mut NearIndex,
    item: &Item<'_>,
    job: &Job<'_>,
) -> Result<Turn, SyncError> {
    let mb = item.mailbox;
    let name = ctx.name().to_string();
    let counts = (item.index as u64, job.total);
    let status: Option<MailboxStatus> = match &item.status {
        None => None,
        Some(Ok(s)) => Some(s.clone()),
        Some(Err(e)) => {
            // Deleted on the server since the list was read: no error; the next run's
            // hierarchy step follows the deletion.
            if matches!(e, ImapError::No { .. })
                && session.gone_after_refusal(&mb.far_name).map_err(|e| errors::from_imap(&name, None, &e))?
            {
                let text =
                    format!("{} was deleted on the server during this sync; the next sync follows", mb.display_name);
                ctx.progress(Step::CheckFolder, text, Some(&mb.display_name), counts, (0, 0));
                return Ok(Turn::Done(None));
            }
            ctx.error(errors::from_imap(&name, Some(&mb.display_name), e));
            return Ok(Turn::Done(None));
        }
    };
    ctx.progress(Step::CheckFolder, format!("checking {}", mb.display_name), Some(&mb.display_name), counts, (0, 0));
    let created_allowed = job.flags.contains(SyncFlags::DOWNLOAD_HIERARCHY);
    let mode = plan::Mode {
        download: job.flags.contains(SyncFlags::DOWNLOAD_CONTENTS),
        upload: job.flags.contains(SyncFlags::UPLOAD_CONTENTS),
    };
    if !mode.download && !mode.upload {
        // Hierarchy only: the folder exists locally now, its contents wait.
        if let Err(folder::FolderError::Folder(e) | folder::FolderError::Fatal(e)) =
            folder::ensure_folder(ctx, state, mb, created_allowed).map(|_| ())
        {
            ctx.error(e);
        }
        return Ok(Turn::Done(None));
    }
    let mut attempt = 0u32;
    let mut failed_attempts: Vec<usize> = Vec::new();
    let report = loop {
        let r = folder::sync_folder(ctx, session, state, mb, status.clone(), created_allowed, mode, job.trash, index);
        match r {
            Ok(Some(r)) if r != (FolderReport { folder: r.folder.clone(), ..Default::default() }) => break Some(r),
            Ok(_) => break None,
            Err(folder::FolderError::Deferred) => {
                // Done again later: a reconnection on the way counts as recovered.
                settle_retried(ctx, failed_attempts);
                return Ok(Turn::Deferred);
            }
            // The second connection broke: the folder goes back to the first, which does it
            // again from its journal, and this connection ends quietly.
            // (It never retries, so it has no recovered errors to settle.)
            Err(folder::FolderError::Fatal(e)) if e.kind == ErrorKind::Network && ctx.lane == 2 => {
                return Ok(Turn::HandBack);
            }
            Err(folder::FolderError::Folder(e)) => {
                ctx.error(e);
                break None;
            }
            Err(folder::FolderError::Fatal(mut e))
                if e.kind == ErrorKind::Network && attempt < super::MAX_RETRIES && !ctx.cancel.is_cancelled() =>
            {
                let wait = super::backoff(attempt);
                e.hint = format!(
                    "retrying in {:.1} s on a new connection ({} of {})",
                    wait.as_secs_f64(),
                    attempt + 1,
                    super::MAX_RETRIES
                );
                failed_attempts.push(ctx.report.errors.len());
                ctx.error(e);
                std::thread::sleep(wait);
                attempt += 1;
                ctx.progress(Step::Connect, "connecting again".into(), Some(&mb.display_name), (0, 0), (0, 0));
                match Session::open_traced(&ctx.account.imap, ctx.trace()) {
                    Ok(s) => {
                        let old = std::mem::replace(session, s);
                        ctx.report.count_traffic(&old);
                    }
                    Err(e) => return Err(errors::from_session(&name, &e)),
                }
            }
            Err(folder::FolderError::Fatal(e)) => return Err(e),
        }
    };
    // The folder went through after all: its network errors were recovered from.
    if !ctx.report.cancelled {
        settle_retried(ctx, failed_attempts);
    }
    // Gave way in the middle of this folder: it is the first of what remains.
    if std::mem::take(&mut ctx.preempted) {
        return Ok(Turn::GaveWay(report));
    }
    Ok(Turn::Done(report))
}

/// Moves the errors at `failed_attempts` (places in the report's errors) to the retried.
fn settle_retried(ctx: &mut Ctx<'_>, failed_attempts: Vec<usize>) {
    for i in failed_attempts.into_iter().rev() {
        let e = ctx.report.errors.remove(i);
        ctx.report.retried.insert(0, e);
    }
}

/// A lane's report, added to the run's (its folders are added by place, apart).
fn absorb(run: &mut SyncReport, lane: SyncReport) {
    run.errors.extend(lane.errors);
    run.retried.extend(lane.retried);
    run.cancelled |= lane.cancelled;
    run.bytes_received += lane.bytes_received;
    run.bytes_inflated += lane.bytes_inflated;
}

/// Passes calls on to `inner` one at a time, whichever lane makes them. Every run reports
/// through one (`engine::run_preemptible`).
pub(crate) struct OneAtATime {
    inner: Arc<dyn SyncProgress>,
    lock: Mutex<()>,
}

impl OneAtATime {
    pub fn new(inner: Arc<dyn SyncProgress>) -> OneAtATime {
        OneAtATime { inner, lock: Mutex::new(()) }
    }
}

impl SyncProgress for OneAtATime {
    fn progress(&self, p: &Progress) {
        let _one = lock(&self.lock);
        self.inner.progress(p);
    }
    fn error(&self, e: &SyncError) {
        let _one = lock(&self.lock);
        self.inner.error(e);
    }
    fn done(&self, r: &SyncReport) {
        let _one = lock(&self.lock);
        self.inner.done(r);
    }
    fn wants_trace(&self) -> bool {
        self.inner.wants_trace()
    }
    fn trace(&self, account: &str, line: &str) {
        let _one = lock(&self.lock);
        self.inner.trace(account, line);
    }
}
