//! Syncs one account from a syncmail configuration file in the background, printing
//! progress, errors and the final report as the library reports them.
//!
//!     cargo run --example sync_account -- CONFIG.toml [ACCOUNT]

use std::sync::Arc;
use syncmail::{Config, Progress, Store, SyncError, SyncFlags, SyncProgress, SyncReport, SyncRequest};

struct Print;

impl SyncProgress for Print {
    fn progress(&self, p: &Progress) {
        let folder = p.folder.as_deref().unwrap_or("-");
        println!(
            "[{}] {:<14} {:<20} {}/{} {} bytes  {}",
            p.account,
            p.step.name(),
            folder,
            p.index,
            p.max,
            p.bytes,
            p.text
        );
    }
    fn error(&self, e: &SyncError) {
        eprintln!("error ({}): {e}\n  what to do: {}", e.kind.name(), e.hint);
    }
    fn done(&self, r: &SyncReport) {
        println!("done: {} new messages, {} errors, cancelled: {}", r.downloaded(), r.errors.len(), r.cancelled);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: sync_account CONFIG.toml [ACCOUNT]")?;
    let config = Config::load(std::path::Path::new(&path))?;
    let names: Vec<String> = args.collect();
    let account = config.select(&names)?.into_iter().next().ok_or("the configuration has no account")?;
    let store = Store::open(account)?;
    let handle = store.synchronize_in_background(
        SyncRequest::new(SyncFlags::DOWNLOAD_HIERARCHY | SyncFlags::DOWNLOAD_CONTENTS).with_progress(Arc::new(Print)),
    );
    // The caller is free meanwhile; here it just waits.
    let report = handle.wait();
    std::process::exit(if report.is_success() { 0 } else { 1 });
}
