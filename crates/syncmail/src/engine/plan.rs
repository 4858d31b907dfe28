//! Deciding, apart from doing: the state, what the far side (the server) reports and
//! what the near side (the Maildir) holds go in; the list of actions comes out. No I/O,
//! so the rules are pinned by table tests.
//!
//! Every rule compares each side with the last agreed state (three-way), never far with
//! near, so a change is never mistaken for its opposite:
//! - **New on one side** (a server UID at or above the recorded UIDNEXT; a Maildir file
//!   the state does not know): copied to the other side.
//! - **Flags**: merged per flag. A flag one side changed takes that side's value; a flag
//!   neither changed keeps the agreed value; both sides can only change a flag the same way.
//! - **Deleted on one side, unchanged on the other**: deleted on the other side too (the
//!   server side by the account's deletion policy).
//! - **Deleted on one side, changed on the other** (flags): the message is kept. Expunged
//!   on the server but changed locally: the local copy is uploaded again. Deleted locally
//!   but changed on the server: it is downloaded again.
//! - **Deleted on both**: forgotten.
//! - **Pending download** (journaled, then interrupted): if its file is there it is
//!   adopted with the flags its name carries; if not, it is downloaded again while the
//!   server has it, else forgotten.
//!
//! A direction that is not asked for (download-only or upload-only) leaves its side alone;
//! the agreed state then records what the other side holds, so the skipped changes are
//! found again on the next run in that direction.

use crate::state::MessageRow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use syncmail_imap::Flags;
use syncmail_maildir::Entry;

/// What the server reported for the folder's known messages.
#[derive(Debug, Default, Clone)]
pub struct FarView {
    /// Current flags of known messages the server reported (all of them, or only those
    /// changed since the last HIGHESTMODSEQ: silence means unchanged).
    pub flags: BTreeMap<u32, Flags>,
    /// Known UIDs the server no longer has. The caller must name every one it knows of:
    /// a known UID that is neither here nor in `new` is taken as still on the server.
    pub gone: BTreeSet<u32>,
    /// Messages at or above the recorded UIDNEXT: UID → (size, flags).
    pub new: BTreeMap<u32, (u64, Flags)>,
}

/// Which directions a sync carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub download: bool,
    pub upload: bool,
}

impl Mode {
    pub const DOWNLOAD: Mode = Mode { download: true, upload: false };
    pub const UPLOAD: Mode = Mode { download: false, upload: true };
    pub const BOTH: Mode = Mode { download: true, upload: true };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch a message from the server and store it (replacing the row of a known UID).
    Download { uid: u32, size: u64 },
    /// Rename the local file so that it carries `flags`.
    SetNearFlags { uid: u32, entry: Entry, flags: Flags },
    /// Add and remove flags on the server.
    SetFarFlags { uid: u32, add: Flags, remove: Flags },
    /// Record new agreed flags (after the actions above for the same UID).
    Agree { uid: u32, flags: Flags },
    /// Delete the local file; the message is forgotten.
    DeleteNear { uid: u32, entry: Entry },
    /// Delete the message on the server (by the account's policy); it is forgotten.
    DeleteFar { uid: u32 },
    /// Forget the message; the local file, if any, stays.
    Forget { uid: u32, kept_local: bool },
    /// Upload a local message the state does not know.
    Append { entry: Entry },
}

fn merge(agreed: Flags, far: Flags, near: Flags) -> Flags {
    let fc = Flags::from_bits(far.bits() ^ agreed.bits());
    let nc = Flags::from_bits(near.bits() ^ agreed.bits());
    far.intersection(fc).union(near.intersection(nc)).union(agreed.difference(fc.union(nc)))
}

/// Plans one folder. `near` holds every local file by unique name; `journaled` the unique
/// names of uploads under way (resolved elsewhere, never planned again here).
pub fn plan(
    known: &BTreeMap<u32, MessageRow>,
    far: &FarView,
    near: &HashMap<String, Entry>,
    journaled: &BTreeSet<String>,
    mode: Mode,
) -> Vec<Action> {
    let mut out = Vec::new();
    let mut appends = Vec::new();
    let mut redownload = Vec::new();
    for (uid, row) in known {
        let local = near.get(&row.near_id);
        // A pending download whose file is there is adopted: the flags its file was
        // written with are the agreed ones, and it is planned like any other message,
        // so what the server did meanwhile is not lost.
        let (a, adopt) = match (row.pending, local) {
            (false, _) => (row.flags, false),
            (true, Some(e)) => (e.flags, true),
            (true, None) => {
                if far.gone.contains(uid) {
                    out.push(Action::Forget { uid: *uid, kept_local: false });
                } else if !far.new.contains_key(uid) {
                    // A download of a message the server still has (one it had before the
                    // last mark: a re-download) was cut short: again.
                    redownload.push(Action::Download { uid: *uid, size: row.size });
                } // else: downloaded below, with the new ones
                continue;
            }
        };
        if far.gone.contains(uid) {
            match local {
                None => out.push(Action::Forget { uid: *uid, kept_local: false }),
                Some(e) if e.flags == a => {
                    if mode.download {
                        out.push(Action::DeleteNear { uid: *uid, entry: e.clone() });
                    } else if adopt {
                        out.push(Action::Agree { uid: *uid, flags: a });
                    }
                }
                Some(e) => {
                    out.push(Action::Forget { uid: *uid, kept_local: true });
                    if mode.upload {
                        appends.push(Action::Append { entry: e.clone() });
                    }
                }
            }
            continue;
        }
        let f = far.flags.get(uid).copied().unwrap_or(a);
        let Some(e) = local else {
            // Only \Deleted added on the server: this client's own deletion, cut off
            // between marking and expunging (or the "flag" policy). Finish it.
            if f == a || f == a.union(Flags::DELETED) {
                if mode.upload {
                    out.push(Action::DeleteFar { uid: *uid });
                }
            } else if mode.download {
                redownload.push(Action::Download { uid: *uid, size: row.size });
            }
            continue;
        };
        let n = e.flags;
        let merged = merge(a, f, n);
        let near_target = if mode.download { merged } else { n };
        let far_target = if mode.upload { merged } else { f };
        if near_target != n {
            out.push(Action::SetNearFlags { uid: *uid, entry: e.clone(), flags: near_target });
        }
        if far_target != f {
            out.push(Action::SetFarFlags {
                uid: *uid,
                add: far_target.difference(f),
                remove: f.difference(far_target),
            });
        }
        let agreed = match (mode.download, mode.upload) {
            (true, true) => merged,
            (true, false) => far_target,
            _ => near_target,
        };
        if agreed != a || adopt {
            out.push(Action::Agree { uid: *uid, flags: agreed });
        }
    }
    if mode.upload {
        let known_ids: BTreeSet<&str> = known.values().map(|r| r.near_id.as_str()).collect();
        let mut fresh: Vec<&Entry> = near
            .iter()
            .filter(|(id, _)| !known_ids.contains(id.as_str()) && !journaled.contains(id.as_str()))
            .map(|(_, e)| e)
            .collect();
        fresh.sort_by(|x, y| x.file_name.cmp(&y.file_name));
        appends.extend(fresh.into_iter().map(|e| Action::Append { entry: e.clone() }));
    }
    out.extend(appends);
    out.extend(redownload);
    if mode.download {
        for (uid, (size, _)) in &far.new {
            let have = known.get(uid).is_some_and(|r| !r.pending || near.contains_key(&r.near_id));
            if !have {
                out.push(Action::Download { uid: *uid, size: *size });
            }
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
    const D: Mode = Mode::DOWNLOAD;
    const U: Mode = Mode::UPLOAD;
    const B: Mode = Mode::BOTH;

    fn row(uid: u32, flags: Flags) -> MessageRow {
        MessageRow { uid, near_id: format!("u{uid}"), flags, size: 10, pending: false }
    }
    fn entry(uid: u32, flags: Flags) -> Entry {
        Entry { sub: Sub::Cur, file_name: format!("u{uid}:2,{}", flags.to_maildir()), flags }
    }

    /// One known message, UID 1: (agreed, far, near) → actions. `far`/`near` None = gone.
    fn one(mode: Mode, agreed: Flags, far: Option<Flags>, near: Option<Flags>) -> Vec<Action> {
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
        plan(&known, &fv, &nm, &BTreeSet::new(), mode)
    }

    /// (name, mode, agreed, far, near, expected actions)
    type Case = (&'static str, Mode, Flags, Option<Flags>, Option<Flags>, Vec<Action>);

    #[test]
    fn scenario_table() {
        use Action::*;
        let sf = S.union(F);
        let cases: Vec<Case> = vec![
            ("nothing changed", B, S, Some(S), Some(S), vec![]),
            // Flags on one side.
            (
                "far added a flag",
                B,
                NONE,
                Some(S),
                Some(NONE),
                vec![SetNearFlags { uid: 1, entry: entry(1, NONE), flags: S }, Agree { uid: 1, flags: S }],
            ),
            (
                "far removed a flag",
                B,
                S,
                Some(NONE),
                Some(S),
                vec![SetNearFlags { uid: 1, entry: entry(1, S), flags: NONE }, Agree { uid: 1, flags: NONE }],
            ),
            (
                "near added a flag",
                B,
                S,
                Some(S),
                Some(sf),
                vec![SetFarFlags { uid: 1, add: F, remove: NONE }, Agree { uid: 1, flags: sf }],
            ),
            (
                "near removed a flag",
                B,
                sf,
                Some(sf),
                Some(F),
                vec![SetFarFlags { uid: 1, add: NONE, remove: S }, Agree { uid: 1, flags: F }],
            ),
            // Flags on both sides.
            (
                "both changed different flags: merged per flag",
                B,
                NONE,
                Some(S),
                Some(F),
                vec![
                    SetNearFlags { uid: 1, entry: entry(1, F), flags: sf },
                    SetFarFlags { uid: 1, add: F, remove: NONE },
                    Agree { uid: 1, flags: sf },
                ],
            ),
            ("both made the same change", B, NONE, Some(R), Some(R), vec![Agree { uid: 1, flags: R }]),
            (
                "far removed S while near added F",
                B,
                S,
                Some(NONE),
                Some(sf),
                vec![
                    SetNearFlags { uid: 1, entry: entry(1, sf), flags: F },
                    SetFarFlags { uid: 1, add: F, remove: NONE },
                    Agree { uid: 1, flags: F },
                ],
            ),
            // One direction only: the other side is left alone, the agreed state follows
            // the side that was read, so the skipped change is found again later.
            ("download only, near changed: left for upload", D, S, Some(S), Some(sf), vec![]),
            (
                "download only, both changed",
                D,
                NONE,
                Some(S),
                Some(F),
                vec![SetNearFlags { uid: 1, entry: entry(1, F), flags: sf }, Agree { uid: 1, flags: S }],
            ),
            ("upload only, far changed: left for download", U, NONE, Some(S), Some(NONE), vec![]),
            (
                "upload only, both changed",
                U,
                NONE,
                Some(S),
                Some(F),
                vec![SetFarFlags { uid: 1, add: F, remove: NONE }, Agree { uid: 1, flags: F }],
            ),
            // Deletions.
            (
                "expunged on far, near unchanged: delete",
                B,
                S,
                None,
                Some(S),
                vec![DeleteNear { uid: 1, entry: entry(1, S) }],
            ),
            (
                "expunged on far, near changed: kept and uploaded again",
                B,
                S,
                None,
                Some(sf),
                vec![Forget { uid: 1, kept_local: true }, Append { entry: entry(1, sf) }],
            ),
            ("expunged on far, upload only: left for download", U, S, None, Some(S), vec![]),
            ("deleted on near, far unchanged: delete on far", B, S, Some(S), None, vec![DeleteFar { uid: 1 }]),
            (
                "deleted on near, far changed: downloaded again",
                B,
                S,
                Some(sf),
                None,
                vec![Download { uid: 1, size: 10 }],
            ),
            (
                "deleted on near, far only marked Deleted (an unfinished delete): finished",
                B,
                S,
                Some(S.union(Flags::DELETED)),
                None,
                vec![DeleteFar { uid: 1 }],
            ),
            ("deleted on near, download only: left for upload", D, S, Some(S), None, vec![]),
            ("deleted on both", B, S, None, None, vec![Forget { uid: 1, kept_local: false }]),
            ("deleted on both, download only", D, S, None, None, vec![Forget { uid: 1, kept_local: false }]),
        ];
        for (name, mode, agreed, far, near, want) in cases {
            assert_eq!(one(mode, agreed, far, near), want, "{name}");
        }
    }

    #[test]
    fn merge_is_per_flag() {
        // Exhaustive over single flags: a flag changed by one side wins, else agreed.
        for a in [NONE, S] {
            for f in [NONE, S] {
                for n in [NONE, S] {
                    let m = merge(a, f, n);
                    let want = if f != a {
                        f
                    } else if n != a {
                        n
                    } else {
                        a
                    };
                    assert_eq!(m, want, "agreed {a:?} far {f:?} near {n:?}");
                }
            }
        }
    }

    #[test]
    fn unreported_messages_are_unchanged() {
        // CONDSTORE reports only changed messages; silence is "no change".
        let known = BTreeMap::from([(1, row(1, S))]);
        let near = HashMap::from([("u1".to_string(), entry(1, NONE))]);
        assert_eq!(
            plan(&known, &FarView::default(), &near, &BTreeSet::new(), B),
            vec![Action::SetFarFlags { uid: 1, add: NONE, remove: S }, Action::Agree { uid: 1, flags: NONE }]
        );
        assert_eq!(plan(&known, &FarView::default(), &near, &BTreeSet::new(), D), vec![]);
    }

    #[test]
    fn new_on_each_side() {
        let known = BTreeMap::new();
        let near = HashMap::from([("local-new".to_string(), entry(9, S)), ("busy".to_string(), entry(8, NONE))]);
        let mut far = FarView::default();
        far.new.insert(3, (30, F));
        let journaled = BTreeSet::from(["busy".to_string()]);
        assert_eq!(
            plan(&known, &far, &near, &journaled, B),
            vec![Action::Append { entry: entry(9, S) }, Action::Download { uid: 3, size: 30 }]
        );
        assert_eq!(plan(&known, &far, &near, &journaled, D), vec![Action::Download { uid: 3, size: 30 }]);
        assert_eq!(plan(&known, &far, &near, &journaled, U), vec![Action::Append { entry: entry(9, S) }]);
    }

    #[test]
    fn an_adopted_download_still_gets_what_the_server_did_meanwhile() {
        let mut known = BTreeMap::new();
        for uid in [5, 6] {
            let mut r = row(uid, NONE);
            r.pending = true;
            known.insert(uid, r);
        }
        // Both files were written (with no flags) before the crash; since then the server
        // flagged 5 and expunged 6.
        let near = HashMap::from([("u5".to_string(), entry(5, NONE)), ("u6".to_string(), entry(6, NONE))]);
        let mut far = FarView::default();
        far.new.insert(5, (10, F));
        far.flags.insert(5, F);
        far.gone.insert(6);
        assert_eq!(
            plan(&known, &far, &near, &BTreeSet::new(), B),
            vec![
                Action::SetNearFlags { uid: 5, entry: entry(5, NONE), flags: F },
                Action::Agree { uid: 5, flags: F },
                Action::DeleteNear { uid: 6, entry: entry(6, NONE) },
            ]
        );
    }

    #[test]
    fn an_interrupted_redownload_is_finished() {
        // Deleted locally, changed on the server: downloaded again; cut short after the
        // journal row was written. The server still has it (not gone, not new).
        let mut r = row(4, S);
        r.pending = true;
        let known = BTreeMap::from([(4, r)]);
        let got = plan(&known, &FarView::default(), &HashMap::new(), &BTreeSet::new(), B);
        assert_eq!(got, vec![Action::Download { uid: 4, size: 10 }]);
    }

    #[test]
    fn new_and_pending() {
        let mut known = BTreeMap::new();
        for uid in [5, 6, 7] {
            let mut r = row(uid, NONE);
            r.pending = true;
            known.insert(uid, r);
        }
        // 5: file written before the crash; 6: never written, still on server; 7: never
        // written, expunged since.
        let near = HashMap::from([("u5".to_string(), entry(5, S))]);
        let mut far = FarView::default();
        far.new.insert(5, (10, S));
        far.new.insert(6, (20, NONE));
        far.new.insert(8, (30, F));
        far.gone.insert(7);
        let got = plan(&known, &far, &near, &BTreeSet::new(), B);
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
