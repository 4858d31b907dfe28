//! Deciding, apart from doing: the state, what the far side (the server) reports and
//! what the near side (the Maildir) holds go in; the list of actions comes out. No I/O,
//! so the rules are pinned by table tests.
//!
//! The rules for the download direction, each compared against the last agreed state
//! (three-way), never far against near:
//! - **New on far** (UID at or above the recorded UIDNEXT, not known): download it.
//! - **Pending download** (journaled, then interrupted): if its file is there, adopt it
//!   with the flags its name carries; if not, download it again if the server still has
//!   it, else forget it.
//! - **Flags changed on far**: per flag, a flag the server changed takes the server's
//!   value; a flag the server left alone keeps the local value, so a local change made
//!   meanwhile survives (and is what upload will push). The agreed flags become the
//!   server's.
//! - **Expunged on far**: a local copy still as agreed is deleted; a local copy whose flags
//!   changed since is kept and forgotten, so it is treated as new local mail (a deletion
//!   on one side and a change on the other keeps the message). Gone on both: forgotten.
//! - **Deleted locally**, still on far: left as it is (the local deletion is upload's to
//!   carry out); a download never brings it back.

use crate::state::MessageRow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncmail_imap::Flags;
use syncmail_maildir::Entry;

/// What the server reported for the folder's known messages.
#[derive(Debug, Default, Clone)]
pub struct FarView {
    /// Current flags of known messages the server reported (all of them, or only those
    /// changed since the last HIGHESTMODSEQ).
    pub flags: BTreeMap<u32, Flags>,
    /// Known UIDs the server no longer has.
    pub gone: BTreeSet<u32>,
    /// Messages at or above the recorded UIDNEXT: UID → (size, flags).
    pub new: BTreeMap<u32, (u64, Flags)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch a message from the server and store it.
    Download { uid: u32, size: u64 },
    /// Rename the local file to carry `flags`, then record `agreed`.
    SetNearFlags { uid: u32, entry: Entry, flags: Flags, agreed: Flags },
    /// Record new agreed flags; the local file already carries what it should.
    Agree { uid: u32, flags: Flags },
    /// Delete the local file, then forget the message.
    DeleteNear { uid: u32, entry: Entry },
    /// Forget the message (the local file, if any, stays as new local mail).
    Forget { uid: u32, kept_local: bool },
}

/// Plans the download direction for one folder.
pub fn plan_download(known: &BTreeMap<u32, MessageRow>, far: &FarView, near: &HashMap<String, Entry>) -> Vec<Action> {
    let mut out = Vec::new();
    for (uid, row) in known {
        let local = near.get(&row.near_id);
        if row.pending {
            match (local, far.new.contains_key(uid) || far.flags.contains_key(uid)) {
                (Some(e), _) => out.push(Action::Agree { uid: *uid, flags: e.flags }),
                (None, true) => {} // downloaded below, with the new ones
                (None, false) => out.push(Action::Forget { uid: *uid, kept_local: false }),
            }
            continue;
        }
        if far.gone.contains(uid) {
            out.push(match local {
                None => Action::Forget { uid: *uid, kept_local: false },
                Some(e) if e.flags == row.flags => Action::DeleteNear { uid: *uid, entry: e.clone() },
                Some(_) => Action::Forget { uid: *uid, kept_local: true },
            });
            continue;
        }
        let Some(&far_flags) = far.flags.get(uid) else { continue };
        if far_flags == row.flags {
            continue;
        }
        match local {
            None => {} // deleted locally: upload's business
            Some(e) => {
                let changed = Flags::from_bits(far_flags.bits() ^ row.flags.bits());
                let merged = far_flags.intersection(changed).union(e.flags.difference(changed));
                if merged == e.flags {
                    out.push(Action::Agree { uid: *uid, flags: far_flags });
                } else {
                    out.push(Action::SetNearFlags { uid: *uid, entry: e.clone(), flags: merged, agreed: far_flags });
                }
            }
        }
    }
    for (uid, (size, _)) in &far.new {
        let have = known.get(uid).is_some_and(|r| !r.pending || near.contains_key(&r.near_id));
        if !have {
            out.push(Action::Download { uid: *uid, size: *size });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncmail_maildir::Sub;

    const S: Flags = Flags::SEEN;
    const F: Flags = Flags::FLAGGED;
    const R: Flags = Flags::ANSWERED;
    const NONE: Flags = Flags::empty();

    fn row(uid: u32, flags: Flags) -> MessageRow {
        MessageRow { uid, near_id: format!("u{uid}"), flags, size: 10, pending: false }
    }
    fn entry(uid: u32, flags: Flags) -> Entry {
        Entry { sub: Sub::Cur, file_name: format!("u{uid}:2,{}", flags.to_maildir()), flags }
    }

    /// One scenario: (agreed, far, near) → expected action, for a single message uid 1.
    /// `far`: None = expunged; `near`: None = file deleted.
    fn one(agreed: Flags, far: Option<Flags>, near: Option<Flags>) -> Vec<Action> {
        let known = BTreeMap::from([(1, row(1, agreed))]);
        let mut fv = FarView::default();
        match far {
            Some(f) => {
                fv.flags.insert(1, f);
            }
            None => {
                fv.gone.insert(1);
            }
        }
        let nm: HashMap<String, Entry> = near.map(|f| ("u1".to_string(), entry(1, f))).into_iter().collect();
        plan_download(&known, &fv, &nm)
    }

    /// (name, agreed, far, near, expected actions)
    type Case = (&'static str, Flags, Option<Flags>, Option<Flags>, Vec<Action>);

    #[test]
    fn scenario_table() {
        use Action::*;
        let cases: Vec<Case> = vec![
            ("nothing changed", S, Some(S), Some(S), vec![]),
            (
                "far added a flag",
                NONE,
                Some(S),
                Some(NONE),
                vec![SetNearFlags { uid: 1, entry: entry(1, NONE), flags: S, agreed: S }],
            ),
            (
                "far removed a flag",
                S,
                Some(NONE),
                Some(S),
                vec![SetNearFlags { uid: 1, entry: entry(1, S), flags: NONE, agreed: NONE }],
            ),
            ("near changed only: left for upload", S, Some(S), Some(S.union(F)), vec![]),
            (
                "both changed different flags: merged per flag",
                NONE,
                Some(S),
                Some(F),
                vec![SetNearFlags { uid: 1, entry: entry(1, F), flags: S.union(F), agreed: S }],
            ),
            ("both made the same change", NONE, Some(R), Some(R), vec![Agree { uid: 1, flags: R }]),
            (
                "far removed S while near added F",
                S,
                Some(NONE),
                Some(S.union(F)),
                vec![SetNearFlags { uid: 1, entry: entry(1, S.union(F)), flags: F, agreed: NONE }],
            ),
            (
                "expunged on far, near unchanged: delete",
                S,
                None,
                Some(S),
                vec![DeleteNear { uid: 1, entry: entry(1, S) }],
            ),
            (
                "expunged on far, near changed: keep",
                S,
                None,
                Some(S.union(F)),
                vec![Forget { uid: 1, kept_local: true }],
            ),
            ("deleted on both", S, None, None, vec![Forget { uid: 1, kept_local: false }]),
            ("deleted on near, far changed: untouched", S, Some(S.union(F)), None, vec![]),
            ("deleted on near, far unchanged: untouched", S, Some(S), None, vec![]),
        ];
        for (name, agreed, far, near, want) in cases {
            assert_eq!(one(agreed, far, near), want, "{name}");
        }
    }

    #[test]
    fn unreported_messages_are_unchanged() {
        // CONDSTORE reports only changed messages; silence is "no change".
        let known = BTreeMap::from([(1, row(1, S))]);
        let near = HashMap::from([("u1".to_string(), entry(1, NONE))]);
        assert_eq!(plan_download(&known, &FarView::default(), &near), vec![]);
    }

    #[test]
    fn new_and_pending() {
        let mut known = BTreeMap::new();
        let mut p1 = row(5, NONE);
        p1.pending = true;
        let mut p2 = row(6, NONE);
        p2.pending = true;
        let mut p3 = row(7, NONE);
        p3.pending = true;
        known.insert(5, p1); // file written before the crash
        known.insert(6, p2); // file never written, still on server
        known.insert(7, p3); // file never written, expunged since
        let near = HashMap::from([("u5".to_string(), entry(5, S))]);
        let mut far = FarView::default();
        far.new.insert(5, (10, S));
        far.new.insert(6, (20, NONE));
        far.new.insert(8, (30, F));
        let got = plan_download(&known, &far, &near);
        assert_eq!(
            got,
            vec![
                Action::Agree { uid: 5, flags: S },
                Action::Forget { uid: 7, kept_local: false },
                Action::Download { uid: 6, size: 20 },
                Action::Download { uid: 8, size: 30 },
            ]
        );
    }
}
