//! The file writer of a folder's download: a thread of its own that creates the new
//! messages' files in `tmp/`, makes a batch durable and moves it into `new/`/`cur/`,
//! while the sync thread goes on reading the next messages from the server and keeping
//! the state.
//!
//! Creating, writing and renaming files is most of what a download costs on this side
//! (the kernel's work: inode allocation, directory entries, page cache); reading and
//! parsing the server's answers and the state's journal are the rest. On one thread the
//! two take turns; here they overlap, each on its own core.
//!
//! The journal rules do not change (see `folder`): a batch's rows are recorded as pending
//! before any of its files is written, and committed only after the writer reports the
//! whole batch durable and in place. Jobs are done in the order they are sent, so a
//! batch's `Publish` covers exactly the files sent before it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Condvar, Mutex};
use syncmail_imap::Flags;
use syncmail_maildir::{self as maildir, Folder, Staged};

/// Up to this many new files, each is fsynced; above, the file system is flushed once.
const FSYNC_EACH_UP_TO: usize = 128;

/// Bytes of messages sent to the writer and not yet written: the sender waits while more
/// are queued. Large enough that the sync thread goes on reading the next batch from the
/// server while the writer flushes and publishes the last one (2,000 small messages), small
/// enough to bound the memory (messages of 1 MiB or more are streamed to files, not queued).
const QUEUE_BYTES: u64 = 8 << 20;

/// The queue's byte count, shared by the sync thread (`take`) and the writer (`give`).
/// Once the writer has ended (`close`, also on a panic) nobody waits any more.
#[derive(Default)]
pub(crate) struct Budget {
    /// (bytes queued, writer ended)
    queued: Mutex<(u64, bool)>,
    freed: Condvar,
}

impl Budget {
    /// Counts `n` bytes in, first waiting until they fit (a single larger message is let
    /// through alone).
    pub(crate) fn take(&self, n: u64) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        while !q.1 && q.0 > 0 && q.0 + n > QUEUE_BYTES {
            q = self.freed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.0 += n;
    }

    /// Counts `n` bytes out (written, or dropped).
    fn give(&self, n: u64) {
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        q.0 = q.0.saturating_sub(n);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.queued.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.freed.notify_all();
    }
}

/// Closes the budget when the writer's loop ends, however it ends.
struct Closer<'a>(&'a Budget);

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Work for the writer, done in the order sent.
pub(crate) enum Job {
    /// A message's bytes (line ends already as stored) for `tmp/<name>`, to be published
    /// with `flags`.
    Bytes { name: String, data: Vec<u8>, flags: Flags },
    /// A message streamed to a file in this folder's `tmp/` already: renamed to `tmp/<name>`.
    File { name: String, path: PathBuf, flags: Flags },
    /// Every file sent since the last `Publish`: made durable, then moved into `new/` or
    /// `cur/` with its flags, then `new/` and `cur/` fsynced. Answered on the done channel
    /// with the number of files published, or the first error of the batch.
    Publish,
}

/// The writer's loop; ends when the job channel closes, or at once when `abandon` is set
/// (the sync thread failed: what was not published yet stays in `tmp/` under its pending
/// rows, exactly as after a crash, and the next run downloads it again). After an error,
/// `failed_flag` is set, never cleared (so that the sync stops sending files and gives up
/// at the next batch), the batch's remaining files are not written (a streamed one is
/// removed) and its `Publish` answers with the error.
pub(crate) fn run(
    dir: &Folder,
    jobs: Receiver<Job>,
    done: Sender<maildir::Result<usize>>,
    failed_flag: &AtomicBool,
    abandon: &AtomicBool,
    budget: &Budget,
) {
    let _closer = Closer(budget);
    let mut staged: Vec<(Flags, Staged)> = Vec::new();
    let mut failed: Option<maildir::Error> = None;
    for job in jobs {
        if abandon.load(Ordering::Relaxed) {
            return; // the sync failed: the jobs not done yet are left, as a crash would
        }
        match job {
            Job::Bytes { name, data, flags } => {
                if failed.is_none() {
                    // While the batch may still be fsynced file by file, each file's
                    // write-back starts now, overlapping the messages still to come.
                    let write_back = staged.len() < FSYNC_EACH_UP_TO;
                    match dir.stage_unsynced_with(&name, &data, write_back) {
                        Ok(s) => staged.push((flags, s)),
                        Err(e) => failed = Some(e),
                    }
                }
                budget.give(data.len() as u64);
            }
            Job::File { name, path, flags } => {
                if failed.is_some() {
                    let _ = std::fs::remove_file(&path);
                } else {
                    match dir.stage_written(&name, &path) {
                        Ok(s) => staged.push((flags, s)),
                        Err(e) => failed = Some(e),
                    }
                }
            }
            Job::Publish => {
                let files = std::mem::take(&mut staged);
                let result = match failed.take() {
                    Some(e) => Err(e),
                    None => publish(dir, files),
                };
                if result.is_err() {
                    failed_flag.store(true, Ordering::Relaxed);
                }
                if done.send(result).is_err() {
                    return; // the sync gave up on this folder
                }
            }
        }
        if failed.is_some() {
            failed_flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Every file of the batch durable before any becomes visible: one flush of the file
/// system for a large batch, an fsync each for a few (a file system flush also waits for
/// everything else written there, which costs more than a few fsyncs).
fn publish(dir: &Folder, files: Vec<(Flags, Staged)>) -> maildir::Result<usize> {
    if files.len() > FSYNC_EACH_UP_TO {
        dir.sync_filesystem()?;
    } else if !files.is_empty() {
        let staged: Vec<&Staged> = files.iter().map(|(_, s)| s).collect();
        dir.sync_staged(&staged)?;
    }
    let n = files.len();
    for (flags, s) in files {
        dir.publish(s, flags)?;
    }
    dir.sync()?;
    Ok(n)
}
