//! What a person (progress bars, a summary) or a program (JSON lines) sees of a sync.

use crate::events;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use syncmail::{Progress, Step, SyncError, SyncProgress, SyncReport};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Quiet,
    Json,
}

pub struct Display {
    mode: Mode,
    /// `--verbose`: the IMAP protocol too (JSON `trace` events, or lines on stderr).
    verbose: bool,
    multi: MultiProgress,
    started: Instant,
    /// One line per account for its current step, one bar per folder downloading.
    bars: Mutex<HashMap<(String, Option<String>), ProgressBar>>,
}

fn human_bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

impl Display {
    pub fn new(mode: Mode, verbose: bool) -> Display {
        let target = if mode == Mode::Bars { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Display {
            mode,
            verbose,
            multi: MultiProgress::with_draw_target(target),
            started: Instant::now(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn json_line(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn bar(&self, account: &str, folder: Option<&str>) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry((account.to_string(), folder.map(str::to_string)))
            .or_insert_with(|| {
                let pb = self.multi.add(ProgressBar::new(0));
                if folder.is_none() {
                    pb.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    pb.enable_steady_tick(Duration::from_millis(120));
                    pb.set_prefix(account.to_string());
                } else {
                    pb.set_style(
                        ProgressStyle::with_template(
                            "  {prefix:30!} [{bar:25}] {pos}/{len} msgs {msg} {elapsed_precise}, {eta} left",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    pb.set_prefix(format!("{account}/{}", folder.unwrap_or("")));
                }
                pb
            })
            .clone()
    }

    pub fn finish(&self, reports: &[SyncReport]) {
        let bars: Vec<ProgressBar> =
            self.bars.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, b)| b).collect();
        for b in bars {
            b.finish_and_clear();
        }
        if self.mode == Mode::Json {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        for r in reports {
            let down: u64 = r.downloaded();
            let bytes: u64 = r.folders.iter().map(|f| f.bytes_downloaded).sum();
            let flags: u64 = r.folders.iter().map(|f| f.flags_changed).sum();
            let deleted: u64 = r.folders.iter().map(|f| f.deleted).sum();
            let created = r.folders.iter().filter(|f| f.created).count();
            for f in &r.folders {
                let _ = writeln!(
                    err,
                    "  {}/{}: down {} new ({}), {} flag changes, {} deleted; up {} new, {} flag changes, {} deleted{}{}",
                    r.account,
                    f.folder,
                    f.downloaded,
                    human_bytes(f.bytes_downloaded),
                    f.flags_changed,
                    f.deleted,
                    f.uploaded,
                    f.far_flags_changed,
                    f.far_deleted,
                    if f.held_deletions > 0 { format!("; {} deletions held", f.held_deletions) } else { String::new() },
                    if f.created { "; folder created" } else { "" }
                );
                if f.placeholders + f.bodies_fetched > 0 {
                    let _ = writeln!(
                        err,
                        "  {}/{}: {} stored as placeholders (headers only), {} placeholder bodies fetched",
                        r.account, f.folder, f.placeholders, f.bodies_fetched
                    );
                }
                if f.moved_on_server > 0 {
                    let _ = writeln!(
                        err,
                        "  {}/{}: {} messages moved to other folders here, moved on the server too (not uploaded again)",
                        r.account, f.folder, f.moved_on_server
                    );
                }
                if f.moved_in > 0 {
                    let _ = writeln!(
                        err,
                        "  {}/{}: {} new messages taken from local copies in other folders (not downloaded)",
                        r.account, f.folder, f.moved_in
                    );
                }
            }
            for c in &r.hierarchy {
                let _ = writeln!(err, "  {}: {c}", r.account);
            }
            let up: u64 = r.uploaded();
            let _ = writeln!(
                err,
                "{}: {} new messages down ({}), {} up, {} flag changes, {} deleted, {} folders created, {}{} errors{} in {:.1} s",
                r.account,
                down,
                human_bytes(bytes),
                up,
                flags + r.folders.iter().map(|f| f.far_flags_changed).sum::<u64>(),
                deleted + r.folders.iter().map(|f| f.far_deleted).sum::<u64>(),
                created,
                if r.sent + r.filed > 0 {
                    format!("{} sent, {} filed in Sent, ", r.sent, r.filed)
                } else {
                    String::new()
                },
                r.errors.len(),
                if r.cancelled { ", cancelled" } else { "" },
                secs
            );
        }
    }
}

impl SyncProgress for Display {
    fn wants_trace(&self) -> bool {
        self.verbose
    }

    fn trace(&self, account: &str, line: &str) {
        match self.mode {
            Mode::Json => self.json_line(events::trace(account, line)),
            _ => self.multi.suspend(|| eprintln!("{account}: {line}")),
        }
    }

    fn progress(&self, p: &Progress) {
        match self.mode {
            Mode::Json => self.json_line(events::progress(p)),
            Mode::Quiet => {}
            Mode::Bars => {
                let line = self.bar(&p.account, None);
                line.set_message(p.text.clone());
                if p.step == Step::Download
                    && let Some(folder) = &p.folder
                {
                    let b = self.bar(&p.account, Some(folder));
                    b.set_length(p.max);
                    b.set_position(p.index);
                    let secs = b.elapsed().as_secs_f64().max(0.001);
                    b.set_message(format!(
                        "{}/{} {}/s",
                        human_bytes(p.bytes),
                        human_bytes(p.bytes_max),
                        human_bytes((p.bytes as f64 / secs) as u64)
                    ));
                    if p.index == p.max {
                        b.finish();
                    }
                }
            }
        }
    }

    fn error(&self, e: &SyncError) {
        if self.mode == Mode::Json {
            self.json_line(events::error(e));
            return;
        }
        let mut text = format!("error: {e}\n");
        if let Some(t) = &e.server_text {
            text.push_str(&format!("  server said: {t}\n"));
        }
        text.push_str(&format!("  what to do: {}", e.hint));
        self.multi.suspend(|| eprintln!("{text}"));
    }

    fn done(&self, r: &SyncReport) {
        if self.mode == Mode::Json {
            self.json_line(events::done(r));
        } else if let Some(b) = self.bars.lock().unwrap_or_else(|p| p.into_inner()).get(&(r.account.clone(), None)) {
            b.finish_and_clear();
        }
    }
}
