//! The account scheduler against a real Dovecot: `ON_DEMAND` work overtakes a long
//! background sync between folders, and the background sync resumes where it stopped;
//! equal queued requests share one run, each with its own callbacks and handle.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Conn, DOWNLOAD, Recorder, account, assert_same};
use std::sync::{Arc, Mutex};
use syncmail::{Progress, Step, Store, SyncFlags, SyncHandle, SyncProgress, SyncReport, SyncRequest};
use syncmail_testkit::{Dovecot, Options};

/// Events of several requests in the one order they happened: (request, step or "done",
/// folder).
#[derive(Default)]
struct Log(Mutex<Vec<Event>>);

type Event = (&'static str, String, Option<String>);

/// A progress receiver that writes to a shared [`Log`] under its request's name, and can
/// run `hook` on each progress event.
struct Tagged {
    name: &'static str,
    log: Arc<Log>,
    hook: Box<dyn Fn(&Progress) + Send + Sync>,
}

impl SyncProgress for Tagged {
    fn progress(&self, p: &Progress) {
        self.log.0.lock().unwrap().push((self.name, p.step.name().to_string(), p.folder.clone()));
        (self.hook)(p);
    }
    fn done(&self, _r: &SyncReport) {
        self.log.0.lock().unwrap().push((self.name, "done".into(), None));
    }
}

/// A server with `messages` small messages in `folders` (comma-separated) and one urgent
/// message in INBOX; a store on it (`imap_keys` in its `[imap]` table), a log, and the
/// slot for the on-demand request.
#[allow(clippy::type_complexity)]
fn long_sync_with_urgent_mail(
    messages: u32,
    folders: &str,
    imap_keys: &str,
) -> (Dovecot, tempfile::TempDir, Store, Arc<Log>, Arc<Mutex<Option<SyncHandle>>>) {
    let dv = Dovecot::start(Options {
        messages,
        corpus_args: vec!["--tiny".into(), "--folders".into(), folders.into()],
        ..Default::default()
    });
    dv.save("INBOX", &syncmail_testkit::message("urgent", "read me now"));
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, imap_keys)).unwrap();
    (dv, tmp, store, Arc::default(), Arc::default())
}

/// A hook that asks for INBOX on demand (once, into `urgent`) at the first progress event
/// `when` picks, as a person opening their INBOX during a long background sync would.
fn ask_for_inbox_when(
    store: &Store,
    log: &Arc<Log>,
    urgent: &Arc<Mutex<Option<SyncHandle>>>,
    when: impl Fn(&Progress) -> bool + Send + Sync + 'static,
) -> impl Fn(&Progress) + Send + Sync + 'static {
    let (store, log, urgent) = (store.clone(), log.clone(), urgent.clone());
    move |p: &Progress| {
        let mut slot = urgent.lock().unwrap();
        if when(p) && slot.is_none() {
            let tag = Tagged { name: "on-demand", log: log.clone(), hook: Box::new(|_| {}) };
            *slot = Some(
                store.synchronize_in_background(
                    SyncRequest::new(DOWNLOAD | SyncFlags::ON_DEMAND)
                        .with_folders(vec!["INBOX".into()])
                        .with_progress(Arc::new(tag)),
                ),
            );
        }
    }
}

/// On one connection (`connections = 1`), the background sync gives way between its two
/// folders.
#[test]
fn on_demand_inbox_overtakes_a_long_background_sync_which_then_resumes() {
    let (dv, tmp, store, log, urgent) = long_sync_with_urgent_mail(1200, "Archive,Big", "connections = 1");
    // The person asks for INBOX while the background sync downloads Archive.
    let hook = ask_for_inbox_when(&store, &log, &urgent, |p| {
        p.step == Step::Download && p.folder.as_deref() == Some("Archive")
    });
    let background =
        store.synchronize_in_background(
            SyncRequest::new(DOWNLOAD)
                .with_folders(vec!["Archive".into(), "Big".into()])
                .with_progress(Arc::new(Tagged { name: "background", log: log.clone(), hook: Box::new(hook) })),
        );
    let bg = background.wait();
    let od = urgent.lock().unwrap().take().expect("the on-demand request was made").wait();
    assert!(bg.is_success(), "{:#?}", bg.errors);
    assert!(od.is_success(), "{:#?}", od.errors);
    assert_eq!(od.downloaded(), 1);
    let on_server = dv.uids("Archive").len() + dv.uids("Big").len();
    assert_eq!(bg.downloaded(), on_server as u64, "{:#?}", bg.folders);
    assert_eq!(bg.folders.len(), 2, "{:#?}", bg.folders);

    let log = log.0.lock().unwrap().clone();
    let dones: Vec<&str> = log.iter().filter(|e| e.1 == "done").map(|e| e.0).collect();
    assert_eq!(dones, ["on-demand", "background"], "the on-demand request finishes first");
    // It ran between the background sync's two folders: after the last of Archive, before
    // the first of Big; and Archive was not done again after.
    let pos = |pred: &dyn Fn(&Event) -> bool| log.iter().position(pred).unwrap();
    let first_od = pos(&|e| e.0 == "on-demand");
    let last_archive = log.iter().rposition(|e| e.0 == "background" && e.2.as_deref() == Some("Archive")).unwrap();
    let first_big = pos(&|e| e.0 == "background" && e.2.as_deref() == Some("Big"));
    let od_done = pos(&|e| e.0 == "on-demand" && e.1 == "done");
    assert!(last_archive < first_od && od_done < first_big, "{log:#?}");
    let archive_checks = log.iter().filter(|e| e.1 == "check-folder" && e.2.as_deref() == Some("Archive")).count();
    assert_eq!(archive_checks, 1, "the resumed sync does not start over");
    // One done per request, and the store holds each message once.
    assert_eq!(log.iter().filter(|e| e.1 == "done").count(), 2);
    assert_same(&dv, tmp.path());
}

/// On two connections (the default), each gives way at its next folder or download batch:
/// the folders not begun wait for the resumed run, after the on-demand one, and no folder
/// is started over.
#[test]
fn on_demand_inbox_overtakes_a_background_sync_on_two_connections() {
    let (dv, tmp, store, log, urgent) = long_sync_with_urgent_mail(1800, "Archive,Big,Other", "");
    let hook = ask_for_inbox_when(&store, &log, &urgent, |p| p.step == Step::Download);
    let folders = ["Archive", "Big", "Other"];
    let background =
        store.synchronize_in_background(
            SyncRequest::new(DOWNLOAD)
                .with_folders(folders.map(String::from).to_vec())
                .with_progress(Arc::new(Tagged { name: "background", log: log.clone(), hook: Box::new(hook) })),
        );
    let bg = background.wait();
    let od = urgent.lock().unwrap().take().expect("the on-demand request was made").wait();
    assert!(bg.is_success() && od.is_success(), "{:#?} {:#?}", bg.errors, od.errors);
    assert_eq!(od.downloaded(), 1);
    let on_server: usize = folders.iter().map(|f| dv.uids(f).len()).sum();
    assert_eq!(bg.downloaded(), on_server as u64, "{:#?}", bg.folders);
    let log = log.0.lock().unwrap().clone();
    let dones: Vec<&str> = log.iter().filter(|e| e.1 == "done").map(|e| e.0).collect();
    assert_eq!(dones, ["on-demand", "background"], "{log:#?}");
    // Two folders at most were under way when the request came: Other, the third, was
    // begun after the on-demand request was done.
    let od_done = log.iter().position(|e| e.0 == "on-demand" && e.1 == "done").unwrap();
    let first_other = log.iter().position(|e| e.0 == "background" && e.2.as_deref() == Some("Other")).unwrap();
    assert!(od_done < first_other, "{log:#?}");
    for f in folders {
        let checks = log.iter().filter(|e| e.0 == "background" && e.1 == "check-folder" && e.2.as_deref() == Some(f));
        assert_eq!(checks.count(), 1, "{f} started over: {log:#?}");
    }
    assert_same(&dv, tmp.path());
}

#[test]
fn on_demand_inbox_overtakes_a_big_folder_between_two_download_batches() {
    // One folder of more than two batches (2,000 messages each): the on-demand request
    // may not wait for the whole folder.
    let (dv, tmp, store, log, urgent) = long_sync_with_urgent_mail(4500, "Big", "");
    let hook =
        ask_for_inbox_when(&store, &log, &urgent, |p| p.step == Step::Download && p.folder.as_deref() == Some("Big"));
    let background = store.synchronize_in_background(
        SyncRequest::new(DOWNLOAD).with_folders(vec!["Big".into()]).with_progress(Arc::new(Tagged {
            name: "background",
            log: log.clone(),
            hook: Box::new(hook),
        })),
    );
    let bg = background.wait();
    let od = urgent.lock().unwrap().take().expect("the on-demand request was made").wait();
    assert!(bg.is_success() && od.is_success(), "{:#?} {:#?}", bg.errors, od.errors);
    assert_eq!(od.downloaded(), 1);
    assert_eq!(bg.downloaded(), dv.uids("Big").len() as u64, "{:#?}", bg.folders);
    let log = log.0.lock().unwrap().clone();
    let dones: Vec<&str> = log.iter().filter(|e| e.1 == "done").map(|e| e.0).collect();
    assert_eq!(dones, ["on-demand", "background"]);
    // The on-demand request finished while Big still had messages to download.
    let od_done = log.iter().position(|e| e.0 == "on-demand" && e.1 == "done").unwrap();
    let last_big_download =
        log.iter().rposition(|e| e.0 == "background" && e.1 == "download" && e.2.as_deref() == Some("Big")).unwrap();
    assert!(od_done < last_big_download, "the on-demand request waited for the whole folder");
    assert_same(&dv, tmp.path());
}

#[test]
fn equal_queued_requests_share_a_run_and_each_caller_keeps_its_handle() {
    let dv = Dovecot::start(Options {
        messages: 40,
        corpus_args: ["--tiny", "--folders", "INBOX,Other"].map(String::from).to_vec(),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    // The first request holds the worker in its first callback until released, so that
    // the next ones wait in the queue.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = Mutex::new(Some(held));
    let blocker = Tagged {
        name: "first",
        log: Arc::default(),
        hook: Box::new(move |_| {
            if let Some(rx) = held.lock().unwrap().take() {
                let _ = rx.recv();
            }
        }),
    };
    let first = store.synchronize_in_background(
        SyncRequest::new(DOWNLOAD).with_folders(vec!["Other".into()]).with_progress(Arc::new(blocker)),
    );
    let inbox = || SyncRequest::new(DOWNLOAD).with_folders(vec!["INBOX".into()]);
    let recs: Vec<Arc<Recorder>> = (0..3).map(|_| Arc::new(Recorder::default())).collect();
    let handles: Vec<SyncHandle> =
        recs.iter().map(|r| store.synchronize_in_background(inbox().with_progress(r.clone()))).collect();
    // A request for other work stays apart.
    let other = store.synchronize_in_background(SyncRequest::new(SyncFlags::DOWNLOAD_CONTENTS));
    // The worker has taken the first request (and waits in its callback).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.status().running.is_none() {
        assert!(std::time::Instant::now() < deadline, "the first request never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = store.status();
    assert_eq!(status.queued.len(), 2, "{status:#?}");
    assert_eq!(status.queued[0].requests, 3);
    assert_eq!(status.queued[0].folders.as_deref(), Some(&["INBOX".to_string()][..]));
    assert!(status.running.is_some());
    // One of the three callers cancels: it alone stops, at once.
    handles[2].cancel();
    assert!(handles[2].is_done(), "a queued request ends when cancelled");
    assert_eq!(store.status().queued[0].requests, 2);
    // A queued request of its own leaves the queue.
    let lone = store.synchronize_in_background(SyncRequest::new(SyncFlags::UPLOAD_CONTENTS));
    assert_eq!(store.status().queued.len(), 3);
    lone.cancel();
    assert!(lone.wait().cancelled);
    assert_eq!(store.status().queued.len(), 2);
    release.send(()).unwrap();
    assert!(first.wait().is_success());
    let reports: Vec<SyncReport> = handles.iter().map(SyncHandle::wait).collect();
    assert!(reports[0].is_success() && reports[1].is_success(), "{:#?}", reports[0].errors);
    assert!(reports[2].cancelled);
    let in_inbox = dv.uids("INBOX").len() as u64;
    assert!(in_inbox > 0);
    assert_eq!(reports[0].downloaded(), in_inbox);
    assert_eq!(reports[1].downloaded(), in_inbox);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.done.lock().unwrap().len(), 1, "caller {i}: done exactly once");
    }
    // The two that stayed saw the same run.
    let steps = |r: &Recorder| r.progress.lock().unwrap().iter().map(|p| p.text.clone()).collect::<Vec<_>>();
    assert_eq!(steps(&recs[0]), steps(&recs[1]));
    assert!(steps(&recs[0]).iter().any(|t| t.contains("INBOX")));
    assert!(other.wait().is_success());
    let status = store.status();
    assert!(status.running.is_none() && status.queued.is_empty(), "{status:#?}");
    assert!(status.last_success.is_some());
    assert!(status.folders.contains_key("INBOX") && status.folders.contains_key("Other"), "{status:#?}");
    assert_same(&dv, tmp.path());
}

/// A progress receiver that panics on its first download event.
struct Panicky;

impl SyncProgress for Panicky {
    fn progress(&self, p: &Progress) {
        if p.step == Step::Download {
            panic!("a caller's callback broke");
        }
    }
}

#[test]
fn a_panic_in_a_callback_ends_that_run_with_an_error_and_the_next_one_works() {
    let dv = Dovecot::start(Options { messages: 30, ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(account(&dv, tmp.path(), Conn::Plain, "")).unwrap();
    // Not a hang: the worker survives and the caller gets a report.
    let r = store.synchronize_in_background(SyncRequest::new(DOWNLOAD).with_progress(Arc::new(Panicky))).wait();
    assert!(!r.is_success());
    assert!(r.errors.iter().any(|e| e.message.contains("a caller's callback broke")), "{:#?}", r.errors);
    let r = store.synchronize(SyncRequest::new(DOWNLOAD));
    assert!(r.is_success(), "{:#?}", r.errors);
    assert_same(&dv, tmp.path());
}
