//! Noticing local changes: inotify on the directories of the Maildir, with a debounce.

use crate::store::Store;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use std::mem::MaybeUninit;
use std::path::Path;
use std::time::{Duration, Instant};

/// Adds a watch on `dir` and every directory under it but `tmp/` ones (a message being
/// written there is no change until it is renamed into `new/` or `cur/`).
fn watch_tree(fd: &rustix::fd::OwnedFd, dir: &Path) {
    let mask = WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_FROM
        | WatchFlags::MOVED_TO
        | WatchFlags::ATTRIB
        | WatchFlags::ONLYDIR;
    if inotify::add_watch(fd, dir, mask).is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != "tmp" {
            watch_tree(fd, &e.path());
        }
    }
}

/// Watches the store's Maildir until `stop` says so; calls `changed` once the Maildir
/// has been quiet for `debounce` after a change. Changes seen while a sync of the
/// account runs or waits are its own and ignored. Returns an error when inotify cannot
/// be set up (the daemon then goes on without it).
pub(crate) fn local_watch(
    store: &Store,
    stop: &dyn Fn() -> bool,
    poll: Duration,
    debounce: Duration,
    changed: &dyn Fn(),
) -> Result<(), String> {
    let root = store.account().maildir.clone();
    let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)
        .map_err(|e| format!("cannot watch {} for local changes (inotify): {e}", root.display()))?;
    watch_tree(&fd, &root);
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut last_change: Option<Instant> = None;
    while !stop() {
        std::thread::sleep(poll);
        let (mut any, mut new_dir) = (false, false);
        let mut reader = inotify::Reader::new(&fd, &mut buf);
        loop {
            match reader.next() {
                Ok(ev) => {
                    any = true;
                    new_dir |= ev.events().contains(ReadFlags::ISDIR | ReadFlags::CREATE)
                        || ev.events().contains(ReadFlags::ISDIR | ReadFlags::MOVED_TO);
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("reading inotify events for {}: {e}", root.display())),
            }
        }
        if new_dir {
            watch_tree(&fd, &root);
        }
        if store.is_busy() {
            // The sync's own writes; and a change it will see anyway if it has not yet
            // reached that folder.
            continue;
        }
        if any {
            last_change = Some(Instant::now());
        }
        if last_change.is_some_and(|t| t.elapsed() >= debounce) {
            last_change = None;
            changed();
        }
    }
    Ok(())
}
