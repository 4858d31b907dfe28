//! The second connection: each folder's STATUS, asked ahead of the folder's sync.
//!
//! Finding out whether a folder changed can cost the server more than the sync of the
//! folder that follows: Dovecot, for one, reads a Maildir folder's whole directory for the
//! first STATUS after mail arrived in it. On one connection those looks come one after
//! another, before any folder's work (LIST-STATUS answers when it has looked into every
//! folder). Here a thread with a connection of its own asks STATUS for one folder after the
//! other, in the order the folders are synced, and hands each answer over as it comes; the
//! sync of folder n on the first connection overlaps the server's look into folder n+1.
//!
//! The answers only decide which folders need a SELECT (an unchanged mark: none); the
//! SELECT on the first connection is what the sync goes by. So the prober can fail at any
//! point (the server allows one connection, the connection drops): the folders it has not
//! answered for are then selected, as without a status, and nothing is reported.
//!
//! It connects at once but logs in only once the first connection is in, with the secret
//! that one used: no second password command or keyring lookup, no second attempt with a
//! wrong password or an expired token, and a server that allows one connection per user
//! refuses the prober, never the sync (which then asks STATUS itself). The cost is the
//! prober's login after the first one's, partly hidden behind the folder list and the
//! hierarchy step.

use crate::config::ImapConfig;
use crate::far::{MailboxStatus, Session};
use std::sync::mpsc::{Receiver, Sender, channel};
use syncmail_imap::{Error as ImapError, Secret, Trace};

/// A folder and its status: `None` where the server cannot be asked (a name that cannot be
/// sent; the SELECT says so).
type Answer = (String, Option<Result<MailboxStatus, ImapError>>);

/// The prober, from the sync's side. Dropping it ([`Prober::stop`]) ends the thread and
/// waits for it: it logs out once its command in hand is answered (or gives up on its
/// login, never having had the secret), so no connection of a sync outlives the sync.
pub(crate) struct Prober {
    secret: Option<Sender<Secret>>,
    names: Option<Sender<Vec<String>>>,
    answers: Receiver<Answer>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Not to be asked (any more): the sync asks on its own connection.
    dismissed: bool,
}

impl Prober {
    /// Starts the thread: it connects at once, then waits for the secret ([`Prober::go`],
    /// once the first connection is in) before it logs in, and for the folder names
    /// ([`Prober::ask`]) before it asks anything.
    pub fn start(cfg: &ImapConfig, trace: Option<Trace>) -> Prober {
        let (secret_tx, secret_rx) = channel::<Secret>();
        let (names_tx, names_rx) = channel::<Vec<String>>();
        let (answers_tx, answers) = channel();
        let cfg = cfg.clone();
        let trace = trace.map(|t| -> Trace { std::sync::Arc::new(move |line: &str| t(&format!("[status] {line}"))) });
        // No thread: the answers' channel is closed at once, and the first connection asks
        // for every folder's status itself.
        let thread = std::thread::Builder::new()
            .name("syncmail-status".into())
            .spawn(move || run(&cfg, trace, secret_rx, names_rx, answers_tx))
            .ok();
        Prober { secret: Some(secret_tx), names: Some(names_tx), answers, thread, dismissed: false }
    }

    /// Not needed (any more): the thread logs out as soon as it can, and is waited for by
    /// [`Prober::stop`].
    pub fn dismiss(&mut self) {
        self.dismissed = true;
        self.secret = None;
        self.names = None;
    }

    pub fn dismissed(&self) -> bool {
        self.dismissed
    }

    /// Ends the prober and waits until its connection is closed (logged out, or never
    /// logged in).
    pub fn stop(self) {
        drop(self);
    }

    /// The first connection is in, with `secret`: the prober may log in too.
    pub fn go(&self, secret: &Secret) {
        if let Some(tx) = &self.secret {
            let _ = tx.send(secret.clone());
        }
    }

    /// The folders to ask for, in the order [`Prober::status`] will be called. The first
    /// connection is in by now: a prober still without a secret never gets one, and ends
    /// (so it cannot be waited on for ever).
    pub fn ask(&mut self, names: Vec<String>) {
        self.secret = None;
        if let Some(tx) = self.names.take() {
            let _ = tx.send(names);
        }
    }

    /// The answer for `name`, waiting for it: `Some(None)` where the server could not be
    /// asked, `None` once the prober has stopped (it never logged in, or its connection
    /// broke): the caller asks for the rest itself.
    #[allow(clippy::option_option)]
    pub fn status(&self, name: &str) -> Option<Option<Result<MailboxStatus, ImapError>>> {
        loop {
            match self.answers.recv() {
                Ok((n, r)) if n == name => return Some(r),
                Ok(_) => continue, // a folder the sync passed over
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.secret = None;
        self.names = None;
        // Answers not taken (the sync ended early) end the thread after its STATUS in hand.
        drop(std::mem::replace(&mut self.answers, channel().1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    cfg: &ImapConfig,
    trace: Option<Trace>,
    secret: Receiver<Secret>,
    names: Receiver<Vec<String>>,
    answers: Sender<Answer>,
) {
    // A refused token is not fetched again here: the first connection got in with it.
    let mut fetch = |refresh: bool| {
        if refresh {
            return Err("the server refused the token the first connection logged in with".to_string());
        }
        secret.recv().map_err(|_| "the first connection did not get as far as logging in".to_string())
    };
    let Ok(mut session) = Session::open_with(cfg, trace, &mut fetch, &|_| {}) else { return };
    let Ok(names) = names.recv() else {
        session.logout();
        return;
    };
    for name in names {
        match session.status_many(std::slice::from_ref(&name)) {
            Ok(mut got) => {
                let answer = got.remove(&name);
                if answers.send((name, answer)).is_err() {
                    break; // the sync is over or gave up on us
                }
            }
            Err(_) => return, // the connection is gone: the rest is selected
        }
    }
    session.logout();
}
