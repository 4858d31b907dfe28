//! `syncmail daemon`, and talking to a running one over a Unix socket in the runtime
//! directory (`$XDG_RUNTIME_DIR/syncmail/daemon.sock`; the directory mode 0700, the
//! socket 0600: only the user reaches it).
//!
//! The protocol is line-JSON: the client writes one request line, `{"op": "sync",
//! "accounts": [...], "flags": BITS or null, "folders": [...], "confirm_deletions": bool,
//! "trace": bool}` or `{"op": "status"}`; the daemon answers with event lines (those of
//! `--json`, docs/EVENTS.md) and ends with `{"event": "end"}`; a request it cannot carry
//! out gets `{"event": "fail", "message": ...}`.

use crate::display::{Display, Mode};
use crate::events;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use syncmail::daemon::{Daemon, DaemonOptions, background_flags};
use syncmail::{Progress, Status, Step, Store, SyncError, SyncFlags, SyncProgress, SyncReport, SyncRequest};

/// Where the daemon listens: `$XDG_RUNTIME_DIR/syncmail/daemon.sock`, or
/// `/tmp/syncmail-UID/daemon.sock` where no runtime directory is set.
pub fn socket_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if PathBuf::from(&d).is_absolute() => PathBuf::from(d).join("syncmail"),
        _ => {
            let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
            std::env::temp_dir().join(format!("syncmail-{uid}"))
        }
    };
    dir.join("daemon.sock")
}

/// Runs the daemon until SIGTERM or SIGINT; returns whether it stopped cleanly.
pub fn run(stores: Vec<Store>, mode: Mode, verbose: bool) -> Result<bool> {
    let path = socket_path();
    let dir = path.parent().context("the socket path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private", dir.display()))?;
    if UnixStream::connect(&path).is_ok() {
        bail!("a syncmail daemon already runs (it listens on {})", path.display());
    }
    // A socket left by a daemon that was killed: nobody listens on it.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }
    let log: Arc<dyn SyncProgress> = match mode {
        Mode::Json => Arc::new(Display::new(Mode::Json, verbose)),
        _ => Arc::new(LogLines { errors: Display::new(Mode::Quiet, verbose) }),
    };
    let names: Vec<&str> = stores.iter().map(|s| s.account().name.as_str()).collect();
    eprintln!("syncmail: daemon for {} listening on {}", names.join(", "), path.display());
    let daemon = Daemon::start(stores.clone(), log, DaemonOptions::default());
    let acceptor = std::thread::Builder::new().name("socket".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let stores = stores.clone();
            let _ = std::thread::Builder::new().name("client".into()).spawn(move || serve(conn, &stores));
        }
    });
    acceptor.context("cannot start the socket thread")?;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("syncmail: stopping (the sync in hand stops at its next step)");
    let _ = std::fs::remove_file(&path);
    daemon.shutdown();
    eprintln!("syncmail: stopped");
    Ok(true)
}

/// The daemon's log without `--json`: connections, errors and a line per sync that did
/// something, on stderr (the journal, under systemd).
struct LogLines {
    errors: Display,
}

impl SyncProgress for LogLines {
    fn progress(&self, p: &Progress) {
        if p.step == Step::Connect && p.folder.is_some() {
            eprintln!("{}: {}", p.account, p.text);
        }
    }
    fn error(&self, e: &SyncError) {
        self.errors.error(e);
    }
    fn done(&self, r: &SyncReport) {
        let changed = !r.folders.is_empty() || !r.hierarchy.is_empty() || r.sent > 0;
        if changed || !r.is_success() {
            eprintln!(
                "{}: {} down, {} up, {} folders changed, {} errors{}",
                r.account,
                r.downloaded(),
                r.uploaded(),
                r.folders.len(),
                r.errors.len(),
                if r.cancelled { ", cancelled" } else { "" }
            );
        }
    }
}

/// Events of one client's requests, written to its socket.
struct SocketOut {
    out: Mutex<UnixStream>,
    trace: bool,
    /// The client went away (a write failed): its requests are cancelled.
    gone: AtomicBool,
}

impl SocketOut {
    fn new(out: UnixStream, trace: bool) -> SocketOut {
        SocketOut { out: Mutex::new(out), trace, gone: AtomicBool::new(false) }
    }
    fn send(&self, v: Value) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if writeln!(out, "{v}").is_err() {
            self.gone.store(true, Ordering::SeqCst);
        }
    }
}

impl SyncProgress for SocketOut {
    fn progress(&self, p: &Progress) {
        self.send(events::progress(p));
    }
    fn error(&self, e: &SyncError) {
        self.send(events::error(e));
    }
    fn done(&self, r: &SyncReport) {
        self.send(events::done(r));
    }
    fn wants_trace(&self) -> bool {
        self.trace
    }
    fn trace(&self, account: &str, line: &str) {
        self.send(events::trace(account, line));
    }
}

/// Answers one client.
fn serve(conn: UnixStream, stores: &[Store]) {
    let Ok(reader) = conn.try_clone() else { return };
    let mut line = String::new();
    if BufReader::new(reader).read_line(&mut line).is_err() {
        return;
    }
    let out = Arc::new(SocketOut::new(conn, false));
    let req: Value = match serde_json::from_str(&line) {
        Ok(v) => v,
        Err(e) => return out.send(json!({"event": "fail", "message": format!("not a request: {e}")})),
    };
    let names: Vec<String> =
        req["accounts"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
    let chosen: Vec<&Store> = stores.iter().filter(|s| names.is_empty() || names.contains(&s.account().name)).collect();
    if let Some(missing) = names.iter().find(|n| !stores.iter().any(|s| &s.account().name == *n)) {
        return out.send(json!({"event": "fail", "message": format!("the daemon has no account named {missing:?}")}));
    }
    match req["op"].as_str() {
        Some("status") => {
            let accounts: Vec<Value> = chosen.iter().map(|s| status_json(&s.status())).collect();
            out.send(json!({"event": "status", "accounts": accounts}));
        }
        Some("sync") => {
            let Ok(conn) = out.out.lock().unwrap_or_else(|p| p.into_inner()).try_clone() else { return };
            let out = Arc::new(SocketOut::new(conn, req["trace"].as_bool().unwrap_or(false)));
            let handles: Vec<_> = chosen
                .iter()
                .map(|s| {
                    let flags = match req["flags"].as_u64() {
                        Some(bits) => SyncFlags::from_bits_retain(bits as u32),
                        None => background_flags(s),
                    };
                    let mut r = SyncRequest::new(flags | SyncFlags::ON_DEMAND).with_progress(out.clone());
                    r.confirm_deletions = req["confirm_deletions"].as_bool().unwrap_or(false);
                    let folders: Vec<String> = req["folders"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect();
                    if !folders.is_empty() {
                        r = r.with_folders(folders);
                    }
                    s.synchronize_in_background(r)
                })
                .collect();
            // A client that goes away (Ctrl-C) takes its requests with it: cancelled at
            // the next step, or at once where they wait in the queue.
            while !handles.iter().all(|h| h.is_done()) {
                if out.gone.load(Ordering::SeqCst) {
                    handles.iter().for_each(|h| h.cancel());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        _ => return out.send(json!({"event": "fail", "message": "unknown request"})),
    }
    out.send(json!({"event": "end"}));
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn job_json(j: &syncmail::JobInfo) -> Value {
    json!({
        "flags": j.flags.iter_names().map(|(n, _)| n.to_ascii_lowercase().replace('_', "-")).collect::<Vec<_>>(),
        "folders": j.folders,
        "on_demand": j.on_demand,
        "requests": j.requests,
        "resumed": j.resumed,
        "progress": j.progress.as_ref().map(events::progress),
    })
}

fn status_json(s: &Status) -> Value {
    json!({
        "account": s.account,
        "last_success": s.last_success.map(secs),
        "running": s.running.as_ref().map(job_json),
        "queued": s.queued.iter().map(job_json).collect::<Vec<_>>(),
        "folders": s.folders.iter().map(|(f, t)| (f.clone(), json!(secs(*t)))).collect::<serde_json::Map<_, _>>(),
        "last_errors": s.last_errors.iter().map(|(t, e)| {
            let mut v = events::error(e);
            v["at"] = json!(secs(*t));
            v
        }).collect::<Vec<_>>(),
    })
}

/// Sends `request` to the daemon and returns the event lines of its answer, each handed
/// to `each` as it comes; `None` when no daemon listens.
fn ask(request: &Value, each: &mut dyn FnMut(&Value)) -> Result<Option<()>> {
    let path = socket_path();
    let Ok(mut conn) = UnixStream::connect(&path) else { return Ok(None) };
    writeln!(conn, "{request}").context("cannot talk to the daemon")?;
    for line in BufReader::new(conn).lines() {
        let line = line.context("reading the daemon's answer")?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("the daemon said {line:?}"))?;
        match v["event"].as_str() {
            Some("end") => return Ok(Some(())),
            Some("fail") => bail!("the daemon refused: {}", v["message"].as_str().unwrap_or("")),
            _ => each(&v),
        }
    }
    bail!("the daemon went away before the end of its answer (it may have been stopped)")
}

/// Hands a sync to a running daemon as `ON_DEMAND` and shows its events through
/// `display` as a local sync would; `None` when no daemon runs.
pub fn forward_sync(
    display: &Display,
    accounts: &[String],
    flags: Option<SyncFlags>,
    folders: &[String],
    confirm_deletions: bool,
    trace: bool,
) -> Result<Option<Vec<SyncReport>>> {
    let request = json!({
        "op": "sync",
        "accounts": accounts,
        "flags": flags.map(|f| f.bits()),
        "folders": folders,
        "confirm_deletions": confirm_deletions,
        "trace": trace,
    });
    let mut reports = Vec::new();
    let mut errors: Vec<SyncError> = Vec::new();
    let answered = ask(&request, &mut |v| match v["event"].as_str() {
        Some("progress") => {
            if let Some(p) = events::parse_progress(v) {
                display.progress(&p);
            }
        }
        Some("error") => {
            if let Some(e) = events::parse_error(v) {
                display.error(&e);
                errors.push(e);
            }
        }
        Some("trace") => display.trace(v["account"].as_str().unwrap_or(""), v["line"].as_str().unwrap_or("")),
        Some("done") => {
            let account = v["account"].as_str().unwrap_or("");
            let (mine, rest) = std::mem::take(&mut errors).into_iter().partition(|e| e.account == account);
            errors = rest;
            let r = events::parse_done(v, mine);
            display.done(&r);
            reports.push(r);
        }
        _ => {}
    })?;
    Ok(answered.map(|()| reports))
}

/// `syncmail status`: asks the daemon; prints per account and folder. Returns whether a
/// daemon answered.
pub fn status(accounts: &[String], json_out: bool) -> Result<bool> {
    let mut answer = None;
    let found = ask(&json!({"op": "status", "accounts": accounts}), &mut |v| answer = Some(v.clone()))?;
    let Some(v) = answer.filter(|_| found.is_some()) else {
        if json_out {
            println!("{}", json!({"event": "status", "daemon": false, "accounts": []}));
        } else {
            eprintln!("syncmail: no daemon runs (nothing listens on {})", socket_path().display());
        }
        return Ok(false);
    };
    if json_out {
        let mut v = v;
        v["daemon"] = json!(true);
        println!("{v}");
        return Ok(true);
    }
    let now = secs(SystemTime::now());
    let ago = |t: &Value| match t.as_u64() {
        Some(t) => format!("{} ago", human_secs(now.saturating_sub(t))),
        None => "never".into(),
    };
    let job = |j: &Value| {
        let folders = match j["folders"].as_array() {
            Some(f) => f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
            None => "all folders".into(),
        };
        let flags = j["flags"].as_array().map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","));
        format!(
            "{folders} [{}]{}",
            flags.unwrap_or_default(),
            if j["requests"].as_u64() > Some(1) { format!(", {} requests", j["requests"]) } else { String::new() }
        )
    };
    for a in v["accounts"].as_array().into_iter().flatten() {
        println!("{}: last successful sync {}", a["account"].as_str().unwrap_or(""), ago(&a["last_success"]));
        match a["running"].as_object() {
            Some(_) => {
                let r = &a["running"];
                let p = &r["progress"];
                let mut now_doing = p["text"].as_str().unwrap_or("starting").to_string();
                if p["max"].as_u64().unwrap_or(0) > 0 {
                    now_doing.push_str(&format!(" ({}/{})", p["index"], p["max"]));
                }
                println!("  running: {}: {now_doing}", job(r));
            }
            None => println!("  running: nothing"),
        }
        for q in a["queued"].as_array().into_iter().flatten() {
            println!("  queued: {}", job(q));
        }
        for (f, t) in a["folders"].as_object().into_iter().flatten() {
            println!("  {f}: synced {}", ago(t));
        }
        for e in a["last_errors"].as_array().into_iter().flatten() {
            let folder = e["folder"].as_str().map(|f| format!("{f}: ")).unwrap_or_default();
            println!(
                "  error {}: {folder}{} ({})",
                ago(&e["at"]),
                e["message"].as_str().unwrap_or(""),
                e["hint"].as_str().unwrap_or("")
            );
        }
    }
    Ok(true)
}

fn human_secs(s: u64) -> String {
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}
