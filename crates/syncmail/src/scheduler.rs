//! One worker per account: a priority queue of sync requests.
//!
//! Every [`crate::Store::synchronize_in_background`] call lands here. The account's worker
//! thread takes the most urgent request first: `ON_DEMAND` ones before background ones,
//! and in the order they came within each class. A background run in progress gives way
//! to a waiting `ON_DEMAND` request *between folders*, and inside a big folder *between
//! two download batches*: the run stops there (its steps are journaled anyway), and the
//! folders it had not finished go back in the queue at the background run's old place
//! (without the outgoing phase it already did; the folder list is read again, a single
//! LIST). So the preempted work resumes where it stopped, never starts over.
//!
//! A request equal to one still queued (same flags but `ON_DEMAND`, same folders, same
//! deletion confirmation) merges into it: one run, but every caller keeps its own
//! progress, error and done callbacks and its own handle; the merged work becomes
//! `ON_DEMAND` if any of its requests is. A caller that cancels a merged request is told
//! `done` (cancelled) at the next progress event; the run stops only when all cancel.
//!
//! The worker thread exists while there is work and ends when the queue is empty.

use crate::api::{
    CancelToken, Progress, Shared, Step, SyncError, SyncFlags, SyncHandle, SyncProgress, SyncReport, SyncRequest,
};
use crate::config::AccountConfig;
use crate::engine;
use crate::lock;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

/// How many of an account's latest errors [`Status::last_errors`] keeps.
const KEEP_ERRORS: usize = 20;

/// One caller of a (possibly merged) piece of work.
struct Waiter {
    progress: Arc<dyn SyncProgress>,
    shared: Arc<Shared>,
    cancel: CancelToken,
}

/// Queued work: one or more merged requests.
struct Job {
    /// The configuration of the store that asked: stores of one state directory share the
    /// worker, but one opened with other settings (another server address, say) syncs
    /// with its own.
    account: Arc<AccountConfig>,
    /// Arrival order; kept when a preempted run goes back in the queue.
    seq: u64,
    on_demand: bool,
    /// What to do; its `progress` is unused (the waiters' receivers are called).
    req: SyncRequest,
    waiters: Arc<Mutex<Vec<Waiter>>>,
    /// The members are the waiters' tokens: the work stops when all of them cancel.
    members: Arc<Mutex<Vec<CancelToken>>>,
    cancel: CancelToken,
    /// What the earlier, preempted parts of this work did.
    partial: Option<SyncReport>,
}

/// What a piece of work is, for [`Status`].
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub flags: SyncFlags,
    /// Server names; `None` for all folders.
    pub folders: Option<Vec<String>>,
    pub on_demand: bool,
    /// How many requests were merged into it.
    pub requests: usize,
    /// The latest progress report, for the running work.
    pub progress: Option<Progress>,
    /// Whether a run of it already gave way to `ON_DEMAND` work.
    pub resumed: bool,
}

/// Where an account's syncs stand: see [`crate::Store::status`].
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub account: String,
    pub running: Option<JobInfo>,
    /// In the order they will run.
    pub queued: Vec<JobInfo>,
    /// When a sync of the account last ended without an error.
    pub last_success: Option<SystemTime>,
    /// Per folder (name shown to people): when it was last synced without an error.
    pub folders: BTreeMap<String, SystemTime>,
    /// The latest errors, oldest first, with when they were reported.
    pub last_errors: Vec<(SystemTime, SyncError)>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    next_seq: u64,
    /// Whether a worker thread is alive; it ends when `jobs` is empty.
    worker: Option<std::thread::ThreadId>,
    running: Option<JobInfo>,
    /// Cancels the running work (shutdown).
    running_cancel: Option<CancelToken>,
    /// The callers of the running work.
    running_waiters: Option<Arc<Mutex<Vec<Waiter>>>>,
    status: Status,
}

/// The queue and worker of one account.
pub(crate) struct Scheduler {
    /// The account's name, for reports made here.
    name: String,
    queue: Mutex<Queue>,
}

/// The schedulers of the process, by state directory: one worker per account even when
/// a program opens the same store twice.
static SCHEDULERS: Mutex<Option<HashMap<PathBuf, Weak<Scheduler>>>> = Mutex::new(None);

impl Scheduler {
    /// The account's scheduler, made on first use.
    pub(crate) fn for_account(account: &AccountConfig) -> Arc<Scheduler> {
        let mut all = lock(&SCHEDULERS);
        let all = all.get_or_insert_with(HashMap::new);
        all.retain(|_, w| w.strong_count() > 0);
        let key = account.state_dir.clone();
        if let Some(s) = all.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let status = Status { account: account.name.clone(), ..Default::default() };
        let s = Arc::new(Scheduler {
            name: account.name.clone(),
            queue: Mutex::new(Queue { status, ..Default::default() }),
        });
        all.insert(key, Arc::downgrade(&s));
        s
    }

    /// Whether the calling thread is this account's worker, or a thread its run started
    /// (a progress callback, from either connection of the run).
    pub(crate) fn is_worker(&self) -> bool {
        lock(&self.queue).worker == Some(crate::engine::run_thread())
    }

    /// Queues a request (or merges it into an equal queued one) and returns its handle.
    pub(crate) fn submit(self: &Arc<Self>, account: &Arc<AccountConfig>, request: SyncRequest) -> SyncHandle {
        let shared = Arc::new(Shared::default());
        let cancel = CancelToken::default();
        let me = Arc::downgrade(self);
        let on_cancel: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(s) = me.upgrade() {
                s.reap_cancelled();
            }
        });
        let handle = SyncHandle { shared: shared.clone(), cancel: cancel.clone(), on_cancel: Some(on_cancel) };
        let on_demand = request.flags.contains(SyncFlags::ON_DEMAND);
        let waiter = Waiter { progress: request.progress.clone(), shared, cancel: cancel.clone() };
        let mut q = lock(&self.queue);
        if let Some(job) = q.jobs.iter_mut().find(|j| Arc::ptr_eq(&j.account, account) && same_work(&j.req, &request)) {
            lock(&job.waiters).push(waiter);
            lock(&job.members).push(cancel);
            job.on_demand |= on_demand;
            job.req.flags |= request.flags & SyncFlags::ON_DEMAND;
            return handle;
        }
        let members = Arc::new(Mutex::new(vec![cancel]));
        let seq = q.next_seq;
        q.next_seq += 1;
        q.jobs.push(Job {
            account: account.clone(),
            seq,
            on_demand,
            req: request,
            waiters: Arc::new(Mutex::new(vec![waiter])),
            cancel: CancelToken::all_of(members.clone()),
            members,
            partial: None,
        });
        if q.worker.is_none() {
            let me = self.clone();
            match std::thread::Builder::new().name(format!("sync-{}", self.name)).spawn(move || me.work()) {
                Ok(t) => q.worker = Some(t.thread().id()),
                Err(e) => {
                    let jobs = std::mem::take(&mut q.jobs);
                    drop(q);
                    for job in jobs {
                        let err = SyncError {
                            kind: crate::api::ErrorKind::Local,
                            account: self.name.clone(),
                            folder: None,
                            message: format!("cannot start the sync thread: {e}"),
                            server_text: None,
                            hint: "the system is out of threads or memory".into(),
                            retryable: true,
                        };
                        let mut report = SyncReport { account: self.name.clone(), ..Default::default() };
                        for w in lock(&job.waiters).iter() {
                            w.progress.error(&err);
                        }
                        report.errors.push(err);
                        finish_all(&job.waiters, &report);
                    }
                }
            }
        }
        handle
    }

    /// Where the account's work stands.
    pub(crate) fn status(&self) -> Status {
        let q = lock(&self.queue);
        let mut jobs: Vec<&Job> = q.jobs.iter().collect();
        jobs.sort_by_key(|j| (!j.on_demand, j.seq));
        let mut s = q.status.clone();
        s.running = q.running.clone();
        s.queued = jobs.into_iter().map(|j| info(j, None)).collect();
        s
    }

    /// Lets the callers that cancelled go at once, with their `done` (cancelled): queued
    /// work nobody wants any more leaves the queue; running work that others still want
    /// goes on for them.
    fn reap_cancelled(&self) {
        let mut gone = Vec::new();
        {
            let mut q = lock(&self.queue);
            for j in &q.jobs {
                gone.extend(detach_cancelled(&j.waiters, true));
            }
            q.jobs.retain(|j| !lock(&j.waiters).is_empty());
            if let Some(w) = &q.running_waiters {
                gone.extend(detach_cancelled(w, false));
            }
        }
        finish_cancelled(&self.name, gone);
    }

    /// Cancels the running work and everything queued: each caller gets its `done`
    /// (cancelled). The running work stops at its next step boundary.
    pub(crate) fn cancel_all(&self) {
        let jobs = {
            let mut q = lock(&self.queue);
            if let Some(c) = &q.running_cancel {
                c.cancel();
            }
            std::mem::take(&mut q.jobs)
        };
        for j in jobs {
            let r = SyncReport { account: self.name.clone(), cancelled: true, ..Default::default() };
            finish_all(&j.waiters, &r);
        }
    }

    /// The worker: runs the most urgent work until none is left.
    fn work(self: Arc<Self>) {
        loop {
            let mut job = {
                let mut q = lock(&self.queue);
                let Some(i) = q.jobs.iter().enumerate().min_by_key(|(_, j)| (!j.on_demand, j.seq)).map(|(i, _)| i)
                else {
                    q.worker = None;
                    return;
                };
                let job = q.jobs.remove(i);
                q.running = Some(info(&job, None));
                q.running_cancel = Some(job.cancel.clone());
                q.running_waiters = Some(job.waiters.clone());
                job
            };
            let fan = Arc::new(Fanout {
                account: self.name.clone(),
                waiters: job.waiters.clone(),
                scheduler: Arc::downgrade(&self),
                checked: Mutex::new(Vec::new()),
            });
            let mut req = job.req.clone();
            req.progress = fan.clone();
            let on_demand = job.on_demand;
            let preempt = || !on_demand && lock(&self.queue).jobs.iter().any(|j| j.on_demand);
            let (report, remaining) = if job.cancel.is_cancelled() {
                (SyncReport { account: self.name.clone(), cancelled: true, ..Default::default() }, None)
            } else {
                // A panic (a bug, here or in a caller's callback) must not take the worker,
                // and with it every waiting caller, down: the run ends with an error.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    engine::run_preemptible(&job.account, &req, &job.cancel, &preempt)
                }))
                .unwrap_or_else(|panic| (panicked(&self.name, panic.as_ref()), None))
            };
            self.record(&fan, &report);
            let report = merge(job.partial.take(), report);
            let mut q = lock(&self.queue);
            q.running = None;
            q.running_cancel = None;
            q.running_waiters = None;
            match remaining {
                Some(rest) if !report.cancelled => {
                    // Resume later with the folders left; the outbox is done. The folder
                    // list is read again (a LIST: folders not synced yet are known only
                    // from the server's list), finding the hierarchy in step already.
                    job.req.folders = Some(rest);
                    job.req.flags -= SyncFlags::OUTGOING_MAIL;
                    job.partial = Some(report);
                    q.jobs.push(job);
                }
                _ => {
                    drop(q);
                    finish_all(&job.waiters, &report);
                }
            }
        }
    }

    /// Keeps what a run says about the account for [`Status`].
    fn record(&self, fan: &Fanout, report: &SyncReport) {
        let now = SystemTime::now();
        let mut q = lock(&self.queue);
        let s = &mut q.status;
        if report.is_success() {
            s.last_success = Some(now);
        }
        let broken = report.errors.iter().any(|e| e.folder.is_none());
        let checked = lock(&fan.checked).clone();
        let last = checked.len().saturating_sub(1);
        for (i, folder) in checked.into_iter().enumerate() {
            // A run that broke off broke in the folder in hand.
            let failed = (broken && i == last) || report.errors.iter().any(|e| e.folder.as_ref() == Some(&folder));
            if !failed {
                s.folders.insert(folder, now);
            }
        }
        s.last_errors.extend(report.errors.iter().map(|e| (now, e.clone())));
        let excess = s.last_errors.len().saturating_sub(KEEP_ERRORS);
        s.last_errors.drain(..excess);
    }
}

/// Whether two requests ask for the same work, so that they may share one run.
fn same_work(a: &SyncRequest, b: &SyncRequest) -> bool {
    let sorted = |f: &Option<Vec<String>>| {
        f.as_ref().map(|v| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            v
        })
    };
    a.flags - SyncFlags::ON_DEMAND == b.flags - SyncFlags::ON_DEMAND
        && sorted(&a.folders) == sorted(&b.folders)
        && a.confirm_deletions == b.confirm_deletions
        && a.interrupt_after.is_none()
        && b.interrupt_after.is_none()
}

fn info(job: &Job, progress: Option<Progress>) -> JobInfo {
    JobInfo {
        flags: job.req.flags,
        folders: job.req.folders.clone(),
        on_demand: job.on_demand,
        requests: lock(&job.waiters).len(),
        progress,
        resumed: job.partial.is_some(),
    }
}

/// The report of work done in parts: the earlier parts, then the last.
fn merge(partial: Option<SyncReport>, last: SyncReport) -> SyncReport {
    let Some(mut r) = partial else { return last };
    r.folders.extend(last.folders);
    r.hierarchy.extend(last.hierarchy);
    r.errors.extend(last.errors);
    r.retried.extend(last.retried);
    r.cancelled |= last.cancelled;
    r.bytes_received += last.bytes_received;
    r.bytes_inflated += last.bytes_inflated;
    r.sent += last.sent;
    r.filed += last.filed;
    r
}

/// The report of a run that panicked: every step before it was journaled, so the store is
/// as a cancel leaves it; the error says so and asks for a report.
fn panicked(account: &str, panic: &(dyn std::any::Any + Send)) -> SyncReport {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    SyncReport {
        account: account.to_string(),
        errors: vec![crate::api::SyncError {
            kind: crate::api::ErrorKind::Local,
            account: account.to_string(),
            folder: None,
            message: format!("the sync stopped on an internal error: {what}"),
            server_text: None,
            hint: "what was done before is kept (every step is journaled) and the next sync goes on from there; \
                   this is a bug: please report it with the message"
                .into(),
            retryable: true,
        }],
        ..Default::default()
    }
}

fn finish_all(waiters: &Mutex<Vec<Waiter>>, report: &SyncReport) {
    let waiters = std::mem::take(&mut *lock(waiters));
    for w in waiters {
        w.progress.done(report);
        w.shared.finish(report.clone());
    }
}

/// The progress receiver of a run: passes every call to each waiter.
struct Fanout {
    account: String,
    waiters: Arc<Mutex<Vec<Waiter>>>,
    scheduler: Weak<Scheduler>,
    /// The folders the run reached, in order (names shown to people).
    checked: Mutex<Vec<String>>,
}

impl Fanout {
    /// The waiters still interested; those that cancelled are told `done` and let go.
    fn live(&self) -> Vec<Arc<dyn SyncProgress>> {
        let gone = detach_cancelled(&self.waiters, false);
        let live = lock(&self.waiters).iter().map(|w| w.progress.clone()).collect();
        finish_cancelled(&self.account, gone);
        live
    }
}

/// Takes the waiters that cancelled out of `waiters`. Unless `all`, when every one has
/// cancelled they all stay: their shared work's token is cancelled then, and it reports.
fn detach_cancelled(waiters: &Mutex<Vec<Waiter>>, all: bool) -> Vec<Waiter> {
    let mut ws = lock(waiters);
    let (gone, kept): (Vec<Waiter>, Vec<Waiter>) =
        std::mem::take(&mut *ws).into_iter().partition(|w| w.cancel.is_cancelled());
    let (gone, kept) = if kept.is_empty() && !all { (Vec::new(), gone) } else { (gone, kept) };
    *ws = kept;
    gone
}

fn finish_cancelled(account: &str, gone: Vec<Waiter>) {
    for w in gone {
        let r = SyncReport { account: account.to_string(), cancelled: true, ..Default::default() };
        w.progress.done(&r);
        w.shared.finish(r);
    }
}

impl SyncProgress for Fanout {
    fn progress(&self, p: &Progress) {
        if p.step == Step::CheckFolder
            && let Some(f) = &p.folder
        {
            lock(&self.checked).push(f.clone());
        }
        if let Some(s) = self.scheduler.upgrade()
            && let Some(r) = lock(&s.queue).running.as_mut()
        {
            r.progress = Some(p.clone());
        }
        for w in self.live() {
            w.progress(p);
        }
    }
    fn error(&self, e: &SyncError) {
        for w in self.live() {
            w.error(e);
        }
    }
    fn wants_trace(&self) -> bool {
        lock(&self.waiters).iter().any(|w| w.progress.wants_trace())
    }
    fn trace(&self, account: &str, line: &str) {
        let ws: Vec<_> = lock(&self.waiters).iter().map(|w| w.progress.clone()).collect();
        for w in ws.iter().filter(|w| w.wants_trace()) {
            w.trace(account, line);
        }
    }
}
