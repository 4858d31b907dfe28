//! Maildir folders as syncmail keeps them.
//!
//! A message is delivered the Maildir way: written to `tmp/`, fsynced, then renamed into
//! `new/` (no flags) or `cur/` (with flags after `:2,`), so a reader never sees half a
//! message. A file's *unique* part (the name before `:2,`) is its identity: mail readers
//! rename files to change flags but keep that part, and syncmail's state points at it.
//!
//! Folder names become paths through [`folder_path`], which refuses any component that
//! could escape the store root or collide with a Maildir's own `cur`, `new` and `tmp`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use syncmail_imap::Flags;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("folder name {name:?} cannot be stored: {reason}")]
    UnsafeName { name: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + use<'a> {
    move |source| Error::Io { op, path: path.to_path_buf(), source }
}

/// Checks one component of a folder name for use as a directory name.
pub fn check_component(c: &str) -> std::result::Result<(), String> {
    if c.is_empty() {
        return Err("it has an empty component (two separators in a row, or one at an end)".into());
    }
    if c == "." || c == ".." {
        return Err(format!("a component is {c:?}, which would leave its folder"));
    }
    if c.starts_with('.') {
        return Err("a component starts with '.', which Maildir++ readers take for a folder marker".into());
    }
    if let Some(ch) = c.chars().find(|ch| matches!(ch, '/' | '\\')) {
        return Err(format!("a component contains {ch:?}, a path separator on some systems"));
    }
    if let Some(ch) = c.chars().find(|ch| ch.is_control()) {
        return Err(format!("a component contains the control character U+{:04X}", ch as u32));
    }
    if matches!(c, "cur" | "new" | "tmp") {
        return Err(format!("a component is {c:?}, the name of a Maildir's own directory"));
    }
    if c.len() > 255 {
        return Err("a component is longer than 255 bytes, the file system's limit".into());
    }
    Ok(())
}

/// How folders are laid out under the store root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Each level a directory: `Lists.rust` → `Lists/rust`, INBOX → `INBOX`.
    #[default]
    Verbatim,
    /// Maildir++ (Courier, Dovecot): INBOX is the root itself (`.`), every other folder a
    /// directory `.Lists.rust` beside the others. A `.` inside a level cannot be stored.
    MaildirPlusPlus,
}

impl Layout {
    /// What follows a folder's path in the paths of the folders inside it.
    pub fn child_prefix(self, near_path: &str) -> String {
        match self {
            Layout::Verbatim => format!("{near_path}/"),
            Layout::MaildirPlusPlus if near_path == "." => ".INBOX.".to_string(),
            Layout::MaildirPlusPlus => format!("{near_path}."),
        }
    }

    /// The levels of a folder's name from its path (`Lists/rust` or `.Lists.rust` →
    /// `["Lists", "rust"]`; INBOX → `["INBOX"]`).
    pub fn components(self, near_path: &str) -> Vec<String> {
        match self {
            Layout::Verbatim => near_path.split('/').map(str::to_string).collect(),
            Layout::MaildirPlusPlus if near_path == "." => vec!["INBOX".to_string()],
            Layout::MaildirPlusPlus => {
                near_path.strip_prefix('.').unwrap_or(near_path).split('.').map(str::to_string).collect()
            }
        }
    }

    /// The relative path of a folder: the server's name split at its hierarchy
    /// delimiter, each level checked by [`check_component`].
    pub fn folder_path(self, name: &str, delimiter: Option<char>) -> Result<PathBuf> {
        if self == Layout::MaildirPlusPlus && name.eq_ignore_ascii_case("INBOX") {
            return Ok(PathBuf::from("."));
        }
        let verbatim = folder_path(name, delimiter)?;
        if self == Layout::Verbatim {
            return Ok(verbatim);
        }
        let parts: Vec<String> = verbatim.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        if let Some(p) = parts.iter().find(|p| p.contains('.')) {
            return Err(Error::UnsafeName {
                name: name.to_string(),
                reason: format!("{p:?} contains '.', which the Maildir++ layout uses between levels"),
            });
        }
        let joined = format!(".{}", parts.join("."));
        if joined.len() > 255 {
            return Err(Error::UnsafeName {
                name: name.to_string(),
                reason: "its Maildir++ directory name is longer than 255 bytes, the file system's limit".into(),
            });
        }
        Ok(PathBuf::from(joined))
    }
}

/// The relative path of a folder in the verbatim layout: the server's name split at its
/// hierarchy delimiter, each component a directory (`Lists.rust` with `.` → `Lists/rust`).
/// INBOX (any case) is `INBOX`.
pub fn folder_path(name: &str, delimiter: Option<char>) -> Result<PathBuf> {
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(PathBuf::from("INBOX"));
    }
    let parts: Vec<&str> = match delimiter {
        Some(d) => name.split(d).collect(),
        None => vec![name],
    };
    let mut p = PathBuf::new();
    for (i, c) in parts.iter().enumerate() {
        // Sub-folders of INBOX live under INBOX/ whatever case the server uses.
        let c = if i == 0 && c.eq_ignore_ascii_case("INBOX") { "INBOX" } else { c };
        check_component(c).map_err(|reason| Error::UnsafeName { name: name.to_string(), reason })?;
        p.push(c);
    }
    Ok(p)
}

/// Where a message file sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    New,
    Cur,
}

impl Sub {
    pub fn dir(self) -> &'static str {
        match self {
            Sub::New => "new",
            Sub::Cur => "cur",
        }
    }
}

/// One message file found in a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sub: Sub,
    /// The whole file name.
    pub file_name: String,
    /// The flags its name carries.
    pub flags: Flags,
}

impl Entry {
    /// The name before the info part: the message's identity.
    pub fn unique(&self) -> &str {
        split_name(&self.file_name).0
    }
}

/// Splits `unique:2,FLAGS` into the unique part and the info letters.
pub fn split_name(name: &str) -> (&str, &str) {
    match name.find(":2,") {
        Some(i) => (&name[..i], &name[i + 3..]),
        None => match name.find(':') {
            Some(i) => (&name[..i], ""),
            None => (name, ""),
        },
    }
}

/// A Maildir folder (a directory with `cur`, `new` and `tmp`).
#[derive(Debug, Clone)]
pub struct Folder {
    path: PathBuf,
}

/// A message written to `tmp/` and fsynced, not yet visible to readers.
#[derive(Debug)]
pub struct Staged {
    pub unique: String,
    tmp: PathBuf,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new unique name: `<secs>.M<usecs>P<pid>Q<n>.<host>`, after the Maildir convention.
pub fn new_unique() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let q = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}.M{}P{}Q{}.{}", now.as_secs(), now.subsec_micros(), std::process::id(), q, hostname())
}

/// The host name, read once per process (it is in every file name written).
fn hostname() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let raw = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
        // Maildir: '/' and ':' in the host name are written as octal escapes.
        raw.trim().replace('/', "\\057").replace(':', "\\072")
    })
}

/// Converts CRLF line ends to LF, as Maildir readers on Unix expect. Lone CRs stay.
pub fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    crlf_to_lf_into(data, &mut out);
    out
}

/// [`crlf_to_lf`] into a buffer the caller reuses (cleared first).
pub fn crlf_to_lf_into(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    crlf_to_lf_extend(data, out);
}

/// [`crlf_to_lf`], appended to what `out` holds.
fn crlf_to_lf_extend(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    let mut start = 0;
    for i in memchr::memchr_iter(b'\r', data) {
        if data.get(i + 1) == Some(&b'\n') {
            out.extend_from_slice(&data[start..i]);
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
}

/// [`crlf_to_lf`] for a message that arrives in pieces: `pending_cr` carries a CR that
/// ended the previous piece (it is written, or dropped before an LF, with the next one;
/// after the last piece, write a CR still pending). `out` is cleared first.
pub fn crlf_to_lf_piece(data: &[u8], pending_cr: &mut bool, out: &mut Vec<u8>) {
    out.clear();
    crlf_to_lf_piece_onto(data, pending_cr, out);
}

/// [`crlf_to_lf_piece`], appended to what `out` holds: a whole message converted as its
/// pieces come, into one buffer (push a CR still pending after the last piece).
pub fn crlf_to_lf_piece_onto(data: &[u8], pending_cr: &mut bool, out: &mut Vec<u8>) {
    if data.is_empty() {
        return; // a CR pending waits for a piece with bytes
    }
    let mut data = data;
    if std::mem::take(pending_cr) && data.first() != Some(&b'\n') {
        out.push(b'\r');
    }
    if let Some(rest) = data.strip_suffix(b"\r") {
        *pending_cr = true;
        data = rest;
    }
    crlf_to_lf_extend(data, out);
}

/// fsyncs a directory, so that renames and unlinks in it are durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(io("syncing directory", path))
}

impl Folder {
    /// A folder at `path`; nothing is touched until it is used.
    pub fn new(path: impl Into<PathBuf>) -> Folder {
        Folder { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.join("cur").is_dir() && self.path.join("new").is_dir() && self.path.join("tmp").is_dir()
    }

    /// Creates `cur`, `new` and `tmp` (and parents) where missing.
    pub fn create(&self) -> Result<()> {
        for d in ["cur", "new", "tmp"] {
            let p = self.path.join(d);
            fs::create_dir_all(&p).map_err(io("creating", &p))?;
        }
        Ok(())
    }

    /// Lists the messages in `new/` and `cur/`, by unique name. Only directory entries are
    /// read (no stat), so this is cheap even for large folders. Files whose names start
    /// with '.' are skipped, as the Maildir spec asks.
    pub fn scan(&self) -> Result<HashMap<String, Entry>> {
        let mut out = HashMap::new();
        for sub in [Sub::New, Sub::Cur] {
            let dir = self.path.join(sub.dir());
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io { op: "reading", path: dir, source: e }),
            };
            for ent in rd {
                let ent = ent.map_err(io("reading", &dir))?;
                let Ok(name) = ent.file_name().into_string() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let (unique, info) = split_name(&name);
                let e = Entry { sub, flags: Flags::from_maildir(info), file_name: name.clone() };
                out.entry(unique.to_string()).or_insert(e);
            }
        }
        Ok(out)
    }

    /// The path of an entry.
    pub fn entry_path(&self, e: &Entry) -> PathBuf {
        self.path.join(e.sub.dir()).join(&e.file_name)
    }

    /// Writes a message to `tmp/` under `unique` and fsyncs it. Not visible until
    /// [`Folder::publish`].
    pub fn stage(&self, unique: &str, data: &[u8]) -> Result<Staged> {
        let s = self.stage_unsynced(unique, data)?;
        File::open(&s.tmp).and_then(|f| f.sync_all()).map_err(io("syncing", &s.tmp))?;
        Ok(s)
    }

    /// Writes a message to `tmp/` without syncing it: for batches, which call
    /// [`Folder::sync_filesystem`] once before publishing any of them.
    pub fn stage_unsynced(&self, unique: &str, data: &[u8]) -> Result<Staged> {
        self.stage_unsynced_with(unique, data, false)
    }

    /// [`Folder::stage_unsynced`]; `write_back`: have the kernel start writing the file
    /// to disk now, without waiting for it (for a batch that is fsynced file by file,
    /// [`Folder::sync_staged`]: each fsync then finds its data written already, or under
    /// way, instead of writing it then. 100 files of 47 KB: their fsyncs 11 ms → 3.5 ms
    /// here). Not a durability step: a failure to start it is ignored.
    pub fn stage_unsynced_with(&self, unique: &str, data: &[u8], write_back: bool) -> Result<Staged> {
        let tmp = self.path.join("tmp").join(unique);
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(data).map_err(io("writing", &tmp))?;
        if write_back {
            // POSIX_FADV_DONTNEED starts the write-back of the file's dirty pages (Linux:
            // without waiting; pages still dirty or being written stay cached).
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
        }
        Ok(Staged { unique: unique.to_string(), tmp })
    }

    /// Takes a file already written in this folder's `tmp/` (a message streamed there) as
    /// the staged message `unique`, without syncing it.
    pub fn stage_written(&self, unique: &str, written: &Path) -> Result<Staged> {
        let tmp = self.path.join("tmp").join(unique);
        if written.parent() != Some(self.path.join("tmp").as_path()) {
            return Err(Error::Io {
                op: "staging (not in this folder's tmp/)",
                path: written.to_path_buf(),
                source: io::ErrorKind::InvalidInput.into(),
            });
        }
        fs::rename(written, &tmp).map_err(io("staging", &tmp))?;
        Ok(Staged { unique: unique.to_string(), tmp })
    }

    /// Makes staged messages durable (an fsync each): cheaper than a whole file system flush
    /// when they are few. The fsyncs are issued from a few threads at once, so that the
    /// disk's cache flushes of concurrent calls are shared (100 files of 40 KB here: about
    /// 20 ms one after another, 11 ms from four threads); every file is still fsynced.
    pub fn sync_staged(&self, staged: &[&Staged]) -> Result<()> {
        const THREADS: usize = 4;
        let fsync = |s: &Staged| File::open(&s.tmp).and_then(|f| f.sync_all()).map_err(io("syncing", &s.tmp));
        if staged.len() < 2 * THREADS {
            return staged.iter().try_for_each(|s| fsync(s));
        }
        let share = staged.len().div_ceil(THREADS);
        std::thread::scope(|scope| {
            let workers: Vec<_> =
                staged.chunks(share).map(|part| scope.spawn(move || part.iter().try_for_each(|s| fsync(s)))).collect();
            // Every worker is waited for before an error is returned: none outlives the call.
            let results: Vec<Result<()>> =
                workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect();
            results.into_iter().collect()
        })
    }

    /// Makes everything written on the folder's file system durable (syncfs(2)): one flush
    /// for a whole batch of staged messages instead of one fsync per message.
    pub fn sync_filesystem(&self) -> Result<()> {
        let dir = self.path.join("tmp");
        let f = File::open(&dir).map_err(io("opening", &dir))?;
        rustix::fs::syncfs(&f).map_err(|e| Error::Io { op: "syncing the file system of", path: dir, source: e.into() })
    }

    /// The modification times of `cur/` and `new/` in nanoseconds: any delivery, rename or
    /// deletion changes them. `None` where they cannot be read.
    pub fn mtimes(&self) -> Option<(i128, i128)> {
        let t = |d: &str| -> Option<i128> {
            let m = fs::metadata(self.path.join(d)).ok()?.modified().ok()?;
            Some(match m.duration_since(UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i128,
                Err(e) => -(e.duration().as_nanos() as i128),
            })
        };
        Some((t("cur")?, t("new")?))
    }

    /// Moves a staged message into `new/` (no flags) or `cur/` (with flags). Call
    /// [`Folder::sync`] afterwards to make the renames durable.
    pub fn publish(&self, staged: Staged, flags: Flags) -> Result<Entry> {
        let entry = if flags.is_empty() {
            Entry { sub: Sub::New, file_name: staged.unique.clone(), flags }
        } else {
            Entry { sub: Sub::Cur, file_name: format!("{}:2,{}", staged.unique, flags.to_maildir()), flags }
        };
        let dest = self.entry_path(&entry);
        fs::rename(&staged.tmp, &dest).map_err(io("moving into place", &dest))?;
        Ok(entry)
    }

    /// Renames an entry so its name carries `flags`; letters syncmail does not manage
    /// (Dovecot keyword letters, for one) are kept. A message in `new/` moves to `cur/`.
    pub fn set_flags(&self, e: &Entry, flags: Flags) -> Result<Entry> {
        let (unique, info) = split_name(&e.file_name);
        let mut letters: Vec<char> = info.chars().filter(|c| Flags::from_maildir(&c.to_string()).is_empty()).collect();
        letters.extend(flags.to_maildir().chars());
        letters.sort_unstable();
        letters.dedup();
        let info: String = letters.into_iter().collect();
        let new = Entry { sub: Sub::Cur, file_name: format!("{unique}:2,{info}"), flags };
        if new != *e {
            let from = self.entry_path(e);
            let to = self.entry_path(&new);
            fs::rename(&from, &to).map_err(io("renaming", &from))?;
        }
        Ok(new)
    }

    /// Puts a staged message in the place of the file `current`, under its name (same
    /// unique part, same flags), by one rename: a reader sees the old file or the new one,
    /// never a part of either. Call [`Folder::sync`] afterwards. A mail reader that renamed
    /// `current` meanwhile leaves its file beside the new one: see [`Folder::entries_of`].
    pub fn replace(&self, staged: Staged, current: &Entry) -> Result<Entry> {
        let dest = self.entry_path(current);
        fs::rename(&staged.tmp, &dest).map_err(io("replacing", &dest))?;
        Ok(current.clone())
    }

    /// The entry of message `unique` if its file is where syncmail would have put it with
    /// `flags`, by name: `new/UNIQUE` or `cur/UNIQUE:2,` without flags (a reader moves
    /// unread mail from `new/` to `cur/`), `cur/UNIQUE:2,LETTERS` with them. One `stat`
    /// per name tried, no listing. `None` when no such file is there (renamed, deleted,
    /// or carrying letters syncmail does not manage): then only a listing can tell.
    pub fn find_as_named(&self, unique: &str, flags: Flags) -> Option<Entry> {
        let candidates = if flags.is_empty() {
            vec![(Sub::New, unique.to_string()), (Sub::Cur, format!("{unique}:2,"))]
        } else {
            vec![(Sub::Cur, format!("{unique}:2,{}", flags.to_maildir()))]
        };
        candidates.into_iter().find_map(|(sub, file_name)| {
            let e = Entry { sub, file_name, flags };
            fs::symlink_metadata(self.entry_path(&e)).is_ok_and(|m| m.is_file()).then_some(e)
        })
    }

    /// Every file of the messages `uniques`, in `new/` and `cur/`: more than one for a
    /// message means a rename crossed another (see [`Folder::replace`]).
    pub fn entries_of(&self, uniques: &std::collections::BTreeSet<String>) -> Result<HashMap<String, Vec<Entry>>> {
        let mut out: HashMap<String, Vec<Entry>> = HashMap::new();
        for sub in [Sub::New, Sub::Cur] {
            let dir = self.path.join(sub.dir());
            for ent in fs::read_dir(&dir).map_err(io("reading", &dir))? {
                let ent = ent.map_err(io("reading", &dir))?;
                let Ok(name) = ent.file_name().into_string() else { continue };
                let (unique, info) = split_name(&name);
                if uniques.contains(unique) {
                    let e = Entry { sub, flags: Flags::from_maildir(info), file_name: name.clone() };
                    out.entry(unique.to_string()).or_default().push(e);
                }
            }
        }
        Ok(out)
    }

    /// Renames the file `from` to the name of `to`, replacing `to`'s file.
    pub fn rename_over(&self, from: &Entry, to: &Entry) -> Result<()> {
        let (a, b) = (self.entry_path(from), self.entry_path(to));
        fs::rename(&a, &b).map_err(io("renaming", &a))
    }

    /// Deletes an entry's file. A file that is already gone is not an error.
    pub fn remove(&self, e: &Entry) -> Result<()> {
        let p = self.entry_path(e);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::Io { op: "deleting", path: p, source: err }),
        }
    }

    /// Reads a message's bytes.
    pub fn read(&self, e: &Entry) -> Result<Vec<u8>> {
        let p = self.entry_path(e);
        fs::read(&p).map_err(io("reading", &p))
    }

    /// Removes files in `tmp/` older than `max_age` (the Maildir spec says 36 hours): what
    /// an interrupted delivery left behind. Returns how many were removed.
    pub fn clean_tmp(&self, max_age: std::time::Duration) -> Result<usize> {
        let dir = self.path.join("tmp");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::Io { op: "reading", path: dir, source: e }),
        };
        let now = SystemTime::now();
        let mut n = 0;
        for ent in rd {
            let ent = ent.map_err(io("reading", &dir))?;
            let Ok(meta) = ent.metadata() else { continue };
            let old = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age > max_age);
            if meta.is_file() && old && fs::remove_file(ent.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// fsyncs `new/` and `cur/`, making publishes, renames and deletions durable.
    pub fn sync(&self) -> Result<()> {
        sync_dir(&self.path.join("new"))?;
        sync_dir(&self.path.join("cur"))
    }
}

#[cfg(test)]
mod piece_tests {
    use super::*;

    #[test]
    fn line_ends_converted_across_pieces() {
        let whole = b"a\r\nb\r\r\nc\rd\r\n\r";
        for cut in 0..=whole.len() {
            let mut pending = false;
            let mut out = Vec::new();
            let mut got = Vec::new();
            for piece in [&whole[..cut], &whole[cut..]] {
                crlf_to_lf_piece(piece, &mut pending, &mut out);
                got.extend_from_slice(&out);
            }
            if pending {
                got.push(b'\r');
            }
            assert_eq!(got, crlf_to_lf(whole), "cut at {cut}");
        }
    }

    #[test]
    fn a_message_converted_onto_one_buffer_in_pieces_is_converted_whole() {
        let whole = b"a\r\nb\r\r\nc\rd\r\n\r\n\r";
        for cut in 0..=whole.len() {
            for cut2 in cut..=whole.len() {
                let mut pending = false;
                let mut got = b"kept".to_vec();
                for piece in [&whole[..cut], &whole[cut..cut2], &whole[cut2..]] {
                    crlf_to_lf_piece_onto(piece, &mut pending, &mut got);
                }
                if pending {
                    got.push(b'\r');
                }
                assert_eq!(got, [&b"kept"[..], &crlf_to_lf(whole)].concat(), "cut at {cut} and {cut2}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_messages_are_synced_from_several_threads_and_a_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::new(dir.path().join("F"));
        f.create().unwrap();
        let staged: Vec<Staged> = (0..20).map(|i| f.stage_unsynced(&format!("m{i}"), b"x\n").unwrap()).collect();
        f.sync_staged(&staged.iter().collect::<Vec<_>>()).unwrap();
        // One file gone from tmp/ (the fourth worker's share): the call fails and names it.
        fs::remove_file(&staged[17].tmp).unwrap();
        let err = f.sync_staged(&staged.iter().collect::<Vec<_>>()).unwrap_err().to_string();
        assert!(err.contains("m17"), "{err}");
        for s in staged.into_iter().take(3) {
            assert!(f.publish(s, Flags::empty()).is_ok());
        }
    }

    #[test]
    fn a_file_is_found_by_name_only_where_syncmail_would_have_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::new(dir.path().join("F"));
        f.create().unwrap();
        let seen = f.publish(f.stage("a", b"x\n").unwrap(), Flags::SEEN).unwrap();
        let unread = f.publish(f.stage("b", b"x\n").unwrap(), Flags::empty()).unwrap();
        assert_eq!(f.find_as_named("a", Flags::SEEN), Some(seen.clone()));
        assert_eq!(f.find_as_named("b", Flags::empty()), Some(unread.clone()));
        // Other flags than the file's, or a message that is not there: not found.
        assert_eq!(f.find_as_named("a", Flags::SEEN.union(Flags::FLAGGED)), None);
        assert_eq!(f.find_as_named("a", Flags::empty()), None);
        assert_eq!(f.find_as_named("c", Flags::empty()), None);
        // A reader moved the unread one to cur/ without flags: found there.
        let moved = f.set_flags(&unread, Flags::empty()).unwrap();
        assert_eq!(moved.sub, Sub::Cur);
        assert_eq!(f.find_as_named("b", Flags::empty()), Some(moved));
        // A keyword letter syncmail does not manage: only a listing finds that name.
        fs::rename(f.entry_path(&seen), f.path().join("cur/a:2,Sa")).unwrap();
        assert_eq!(f.find_as_named("a", Flags::SEEN), None);
        // A directory of the name is not a message.
        fs::create_dir(f.path().join("new/d")).unwrap();
        assert_eq!(f.find_as_named("d", Flags::empty()), None);
        assert_eq!(f.scan().unwrap()["a"].file_name, "a:2,Sa");
    }

    #[test]
    fn layouts_map_names_to_paths_and_back() {
        let v = Layout::Verbatim;
        let pp = Layout::MaildirPlusPlus;
        assert_eq!(v.folder_path("Lists.rust", Some('.')).unwrap(), PathBuf::from("Lists/rust"));
        assert_eq!(pp.folder_path("Lists/rust", Some('/')).unwrap(), PathBuf::from(".Lists.rust"));
        assert_eq!(pp.folder_path("inbox", Some('/')).unwrap(), PathBuf::from("."));
        assert_eq!(pp.folder_path("INBOX/Sub", Some('/')).unwrap(), PathBuf::from(".INBOX.Sub"));
        assert_eq!(pp.components(".Lists.rust"), ["Lists", "rust"]);
        assert_eq!(pp.components("."), ["INBOX"]);
        assert_eq!(v.components("Lists/rust"), ["Lists", "rust"]);
        assert_eq!(pp.child_prefix(".Lists"), ".Lists.");
        assert_eq!(pp.child_prefix("."), ".INBOX.");
        assert_eq!(v.child_prefix("Lists"), "Lists/");
        // A '.' inside a level cannot be told from the separator in Maildir++.
        let e = pp.folder_path("v1.2/notes", Some('/')).unwrap_err().to_string();
        assert!(e.contains("'.'"), "{e}");
        // The hostile names are refused in both layouts.
        for bad in ["..", "a/../b", ".hidden", "x\u{0}y", ""] {
            assert!(pp.folder_path(bad, Some('/')).is_err(), "{bad:?}");
            assert!(v.folder_path(bad, Some('/')).is_err(), "{bad:?}");
        }
        let long = "x".repeat(200);
        assert!(pp.folder_path(&format!("{long}/{long}"), Some('/')).is_err(), "longer than 255 bytes joined");
    }

    #[test]
    fn verbatim_paths() {
        assert_eq!(folder_path("Lists.rust", Some('.')).unwrap(), PathBuf::from("Lists/rust"));
        assert_eq!(folder_path("inbox", Some('/')).unwrap(), PathBuf::from("INBOX"));
        assert_eq!(folder_path("Inbox/Sub", Some('/')).unwrap(), PathBuf::from("INBOX/Sub"));
        assert!(folder_path("a/b", None).is_err());
        assert_eq!(folder_path("Entwürfe", Some('/')).unwrap(), PathBuf::from("Entwürfe"));
        assert_eq!(folder_path("Sent Items", Some('.')).unwrap(), PathBuf::from("Sent Items"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for (name, d) in [
            ("..", Some('/')),
            ("a/../b", Some('/')),
            ("../x", Some('.')), // '.' delimiter: components "", "", "/x"
            ("a..b", Some('.')),
            (".hidden", Some('/')),
            ("a/", Some('/')),
            ("", Some('/')),
            ("x\u{0}y", Some('/')),
            ("x\ny", Some('/')),
            ("a/cur", Some('/')),
            ("a.b/c", Some('.')),
        ] {
            assert!(folder_path(name, d).is_err(), "{name:?} was accepted");
        }
        let long = "x".repeat(256);
        assert!(folder_path(&long, Some('/')).is_err());
    }

    #[test]
    fn names_and_flags() {
        assert_eq!(split_name("123.M1P2Q3.host:2,FS"), ("123.M1P2Q3.host", "FS"));
        assert_eq!(split_name("123.host"), ("123.host", ""));
        let e = Entry { sub: Sub::Cur, file_name: "u:2,Sa".into(), flags: Flags::SEEN };
        assert_eq!(e.unique(), "u");
    }

    #[test]
    fn line_endings() {
        assert_eq!(crlf_to_lf(b"a\r\nb\rc\r\n\r\n"), b"a\nb\rc\n\n");
        assert_eq!(crlf_to_lf(b"no breaks"), b"no breaks");
        assert_eq!(crlf_to_lf(b"end\r"), b"end\r");
    }

    #[test]
    fn deliver_scan_rename_remove() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::new(dir.path().join("INBOX"));
        f.create().unwrap();
        assert!(f.exists());
        let u = new_unique();
        let s = f.stage(&u, b"Subject: x\n\nbody\n").unwrap();
        assert!(f.scan().unwrap().is_empty(), "a staged message must not be visible");
        let e = f.publish(s, Flags::empty()).unwrap();
        assert_eq!(e.sub, Sub::New);
        f.sync().unwrap();
        let scanned = f.scan().unwrap();
        assert_eq!(scanned.get(&u), Some(&e));
        // A reader's own keyword letter survives our flag change.
        let p = f.entry_path(&e);
        fs::rename(&p, f.path().join("cur").join(format!("{u}:2,a"))).unwrap();
        let e = f.scan().unwrap().remove(&u).unwrap();
        let e2 = f.set_flags(&e, Flags::SEEN.union(Flags::FLAGGED)).unwrap();
        assert_eq!(e2.file_name, format!("{u}:2,FSa"));
        assert_eq!(f.read(&e2).unwrap(), b"Subject: x\n\nbody\n");
        f.remove(&e2).unwrap();
        f.remove(&e2).unwrap();
        assert!(f.scan().unwrap().is_empty());
    }

    #[test]
    fn stale_tmp_files_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::new(dir.path());
        f.create().unwrap();
        f.stage("fresh", b"x").unwrap();
        assert_eq!(f.clean_tmp(std::time::Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(f.clean_tmp(std::time::Duration::ZERO).unwrap(), 1);
        assert!(fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn uniques_differ() {
        assert_ne!(new_unique(), new_unique());
    }
}
