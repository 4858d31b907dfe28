//! The JSON events of `--json` (documented in docs/EVENTS.md), and back: the daemon's
//! socket carries the same events, and `syncmail sync` turns them back into calls of its
//! display, so that a sync run by the daemon shows as if it ran here.

use serde_json::{Value, json};
use syncmail::{ErrorKind, FolderChange, FolderReport, Progress, Side, Step, SyncError, SyncReport};

pub fn progress(p: &Progress) -> Value {
    json!({
        "event": "progress",
        "account": p.account,
        "step": p.step.name(),
        "text": p.text,
        "folder": p.folder,
        "index": p.index,
        "max": p.max,
        "bytes": p.bytes,
        "bytes_max": p.bytes_max,
    })
}

pub fn error(e: &SyncError) -> Value {
    json!({
        "event": "error",
        "kind": e.kind.name(),
        "account": e.account,
        "folder": e.folder,
        "message": e.message,
        "server_text": e.server_text,
        "hint": e.hint,
        "retryable": e.retryable,
    })
}

pub fn trace(account: &str, line: &str) -> Value {
    json!({ "event": "trace", "account": account, "line": line })
}

pub fn done(r: &SyncReport) -> Value {
    let folders: Vec<_> = r
        .folders
        .iter()
        .map(|f| {
            json!({
                "folder": f.folder,
                "downloaded": f.downloaded,
                "bytes_downloaded": f.bytes_downloaded,
                "flags_changed": f.flags_changed,
                "deleted": f.deleted,
                "uploaded": f.uploaded,
                "far_flags_changed": f.far_flags_changed,
                "far_deleted": f.far_deleted,
                "held_deletions": f.held_deletions,
                "created": f.created,
                "moved_in": f.moved_in,
                "moved_on_server": f.moved_on_server,
                "placeholders": f.placeholders,
                "bodies_fetched": f.bodies_fetched,
            })
        })
        .collect();
    let hierarchy: Vec<_> = r
        .hierarchy
        .iter()
        .map(|c| match c {
            FolderChange::Created { side, folder } => {
                json!({"change": "created", "side": side.name(), "folder": folder})
            }
            FolderChange::Renamed { side, from, to } => {
                json!({"change": "renamed", "side": side.name(), "from": from, "to": to})
            }
            FolderChange::Deleted { side, folder } => {
                json!({"change": "deleted", "side": side.name(), "folder": folder})
            }
        })
        .collect();
    json!({
        "event": "done",
        "hierarchy": hierarchy,
        "account": r.account,
        "success": r.is_success(),
        "cancelled": r.cancelled,
        "errors": r.errors.len(),
        "retried": r.retried.len(),
        "downloaded": r.downloaded(),
        "uploaded": r.uploaded(),
        "sent": r.sent,
        "filed": r.filed,
        "folders": folders,
    })
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}
fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}
fn opt_text(v: &Value, k: &str) -> Option<String> {
    v[k].as_str().map(str::to_string)
}

pub fn parse_progress(v: &Value) -> Option<Progress> {
    Some(Progress {
        account: text(v, "account"),
        step: Step::from_name(v["step"].as_str()?)?,
        text: text(v, "text"),
        folder: opt_text(v, "folder"),
        index: num(v, "index"),
        max: num(v, "max"),
        bytes: num(v, "bytes"),
        bytes_max: num(v, "bytes_max"),
    })
}

pub fn parse_error(v: &Value) -> Option<SyncError> {
    Some(SyncError {
        kind: ErrorKind::from_name(v["kind"].as_str()?)?,
        account: text(v, "account"),
        folder: opt_text(v, "folder"),
        message: text(v, "message"),
        server_text: opt_text(v, "server_text"),
        hint: text(v, "hint"),
        retryable: v["retryable"].as_bool().unwrap_or(false),
    })
}

/// The report of a `done` event; its errors are those of the `error` events before it
/// (the event only counts them), passed as `errors`.
pub fn parse_done(v: &Value, errors: Vec<SyncError>) -> SyncReport {
    let side = |c: &Value| if c["side"] == "local" { Side::Local } else { Side::Server };
    let hierarchy = v["hierarchy"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| match c["change"].as_str()? {
            "created" => Some(FolderChange::Created { side: side(c), folder: text(c, "folder") }),
            "renamed" => Some(FolderChange::Renamed { side: side(c), from: text(c, "from"), to: text(c, "to") }),
            "deleted" => Some(FolderChange::Deleted { side: side(c), folder: text(c, "folder") }),
            _ => None,
        })
        .collect();
    let folders = v["folders"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| FolderReport {
            folder: text(f, "folder"),
            downloaded: num(f, "downloaded"),
            bytes_downloaded: num(f, "bytes_downloaded"),
            flags_changed: num(f, "flags_changed"),
            deleted: num(f, "deleted"),
            uploaded: num(f, "uploaded"),
            far_flags_changed: num(f, "far_flags_changed"),
            far_deleted: num(f, "far_deleted"),
            held_deletions: num(f, "held_deletions"),
            created: f["created"].as_bool().unwrap_or(false),
            moved_in: num(f, "moved_in"),
            moved_on_server: num(f, "moved_on_server"),
            placeholders: num(f, "placeholders"),
            bodies_fetched: num(f, "bodies_fetched"),
        })
        .collect();
    SyncReport {
        account: text(v, "account"),
        folders,
        hierarchy,
        errors,
        cancelled: v["cancelled"].as_bool().unwrap_or(false),
        sent: num(v, "sent"),
        filed: num(v, "filed"),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_back_as_they_were_written() {
        let p = Progress {
            account: "a".into(),
            step: Step::Download,
            text: "downloading".into(),
            folder: Some("INBOX".into()),
            index: 3,
            max: 9,
            bytes: 30,
            bytes_max: 90,
        };
        let back = parse_progress(&progress(&p)).unwrap_or_else(|| panic!("unreadable"));
        assert_eq!(format!("{back:?}"), format!("{p:?}"));
        let e = SyncError {
            kind: ErrorKind::DeletionsHeld,
            account: "a".into(),
            folder: None,
            message: "m".into(),
            server_text: Some("s".into()),
            hint: "h".into(),
            retryable: true,
        };
        let back = parse_error(&error(&e)).unwrap_or_else(|| panic!("unreadable"));
        assert_eq!(format!("{back:?}"), format!("{e:?}"));
        let r = SyncReport {
            account: "a".into(),
            folders: vec![FolderReport { folder: "INBOX".into(), downloaded: 2, created: true, ..Default::default() }],
            hierarchy: vec![FolderChange::Renamed { side: Side::Local, from: "x".into(), to: "y".into() }],
            errors: vec![e.clone()],
            cancelled: true,
            sent: 1,
            ..Default::default()
        };
        let back = parse_done(&done(&r), vec![e]);
        assert_eq!(format!("{back:?}"), format!("{r:?}"));
        assert!(parse_progress(&json!({"step": "nonsense"})).is_none());
    }
}
