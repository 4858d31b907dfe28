//! The configuration file (TOML) and what it resolves to.
//!
//! ```toml
//! state-dir = "~/.local/state/syncmail"     # optional, for all accounts
//! [accounts.work]
//! maildir = "~/Mail/work"          # local store root
//! state-dir = "/elsewhere"         # optional, this account's state directory
//! delete-policy = "expunge"        # what a locally deleted message becomes on the server:
//!                                  # "expunge" (default) | "trash" | "flag" (\Deleted only)
//! trash-folder = "Trash"           # for "trash" where the server marks no \Trash folder
//! delete-guard = 50                # hold back deletions of more than 50% of a folder …
//! delete-guard-min = 10            # … when they are at least 10 messages
//! layout = "verbatim"              # "verbatim" (Lists/rust/) | "maildir++" (.Lists.rust/, INBOX = the root)
//! outbox = "Outbox"                # the local Maildir folder of messages to send
//! sent-folder = "Sent"             # where sent mail is filed (default: the \Sent folder)
//! server-files-sent = false        # true when the SMTP server files sent mail itself
//! max-size = "1M"                  # larger messages come down as placeholders (header and a
//!                                  # note), their bodies by `syncmail fetch` (default: no limit)
//! fetch-flagged = false            # true: a placeholder flagged on either side gets its body
//! interval = 300                   # syncmail daemon: seconds between background syncs
//! idle = ["Lists/rust"]            # syncmail daemon: folders watched with IDLE besides INBOX
//! [accounts.work.imap]
//! host = "imap.example.org"
//! port = 993                       # default follows tls
//! tls = "implicit"                 # "implicit" (default) | "starttls" | "none"
//! user = "me@example.org"
//! password-command = "pass show mail/work"   # or: password = "...", password-env = "VAR",
//!                                            # or: oauth-token-command = "oama access me@example.org"
//!                                            # or: password-keyring = { service = "imap", user = "me" }
//! ca-file = "/path/to/ca.pem"                # optional
//! timeout = 60                               # seconds, for every read and write
//! auth-mech = "auto"                         # "auto" | "plain" (AUTHENTICATE PLAIN) | "login" (LOGIN)
//!                                            # | "xoauth2" | "oauthbearer" (with oauth-token-command)
//! allow-plaintext = false                    # with tls = "none": send the password to a server
//!                                            # that is not on this machine (loopback always may)
//! compress = "auto"                          # COMPRESS=DEFLATE where offered: "auto" (not on
//!                                            # loopback) | "always" | "never"
//! connections = 2                            # 1 | 2: with 2 (the default), folders that
//!                                            # changed are synced two at a time
//! find-changes = "auto"                      # how changed folders are found: "auto" (a few
//!                                            # at a time first where round trips are cheap,
//!                                            # else all at once) | "probe" | "list"
//! [accounts.work.smtp]                    # optional: outgoing mail (see the outbox)
//! host = "smtp.example.org"
//! port = 465                       # default follows tls: 465 implicit, 587 starttls, 25 none
//! tls = "implicit"                 # "implicit" (default) | "starttls" | "none"
//! user = "me@example.org"          # default: the [imap] user
//! password-env = "SMTP_PASSWORD"   # default: the [imap] password source
//! auth-mech = "auto"               # "auto" | "plain" | "login" | "xoauth2" | "none"
//! from = ["me@example.org"]        # addresses this account sends as (default: user)
//! [accounts.work.folders]
//! include = ["*"]                  # patterns: * any text, % any text without the delimiter
//! exclude = ["Spam", "Lists.%"]
//! subscribed-only = false          # true: only folders subscribed on the server (and INBOX)
//! [accounts.work.folders.local-names]   # fixed local names for special-use folders
//! sent = "Sent"                    # sent, drafts, trash, junk, archive, all, flagged
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use syncmail_imap::{AuthMech, Compress, Secret, TlsMode};
pub use syncmail_maildir::Layout;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the configuration file {path} is not valid: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("account {account}: {message}")]
    Invalid { account: String, message: String },
    #[error("no account named {0:?} in the configuration")]
    NoSuchAccount(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<String>,
    #[serde(default)]
    accounts: BTreeMap<String, RawAccount>,
}

/// A size: a number of bytes, or a string such as "500K", "1M", "2G" (powers of 1024).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

/// Reads a [`RawSize`]; `None` with the reason when it is not one.
fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(t) => t.trim(),
    };
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => return Err(format!("max-size = {text:?}: the unit is not one of K, M, G")),
    };
    let n: u64 = digits.parse().map_err(|_| format!("max-size = {text:?} is not a size such as \"1M\""))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("max-size = {text:?} is too large"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawAccount {
    maildir: String,
    state_dir: Option<String>,
    delete_policy: Option<String>,
    layout: Option<String>,
    trash_folder: Option<String>,
    delete_guard: Option<u32>,
    delete_guard_min: Option<u32>,
    outbox: Option<String>,
    sent_folder: Option<String>,
    server_files_sent: Option<bool>,
    max_size: Option<RawSize>,
    fetch_flagged: Option<bool>,
    interval: Option<u64>,
    idle: Option<Vec<String>>,
    imap: RawImap,
    smtp: Option<RawSmtp>,
    #[serde(default)]
    folders: RawFolders,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawImap {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    user: String,
    password: Option<String>,
    password_command: Option<String>,
    password_env: Option<String>,
    oauth_token_command: Option<String>,
    password_keyring: Option<BTreeMap<String, String>>,
    ca_file: Option<String>,
    timeout: Option<u64>,
    auth_mech: Option<String>,
    allow_plaintext: Option<bool>,
    compress: Option<String>,
    connections: Option<u8>,
    find_changes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSmtp {
    host: String,
    port: Option<u16>,
    tls: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_command: Option<String>,
    password_env: Option<String>,
    ca_file: Option<String>,
    timeout: Option<u64>,
    auth_mech: Option<String>,
    helo: Option<String>,
    from: Option<Vec<String>>,
    allow_plaintext: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawFolders {
    include: Option<Vec<String>>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    subscribed_only: bool,
    #[serde(default)]
    local_names: BTreeMap<String, String>,
}

/// The special-use attributes (RFC 6154) a folder can be given a fixed local name by.
pub const SPECIAL_USES: &[&str] = &["sent", "drafts", "trash", "junk", "archive", "all", "flagged"];

/// Where the password comes from. It is fetched when a sync connects, not when the
/// configuration is read, so a locked keyring does not block `syncmail --help`.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    Plain(Secret),
    Command(String),
    Env(String),
    /// A command that prints an OAuth 2.0 access token (for XOAUTH2 / OAUTHBEARER).
    OAuthCommand(String),
    /// The desktop keyring (Secret Service, through libsecret's `secret-tool`): the item
    /// with these attributes.
    Keyring(BTreeMap<String, String>),
}

impl PasswordSource {
    /// Gets the password. A command's first line of output is the password.
    pub fn fetch(&self) -> Result<Secret, String> {
        match self {
            PasswordSource::Plain(s) => Ok(s.clone()),
            PasswordSource::Env(var) => {
                std::env::var(var).map(Secret::new).map_err(|_| format!("the environment variable {var} is not set"))
            }
            PasswordSource::Command(cmd) => run_secret_command("password-command", cmd, false),
            PasswordSource::OAuthCommand(cmd) => run_secret_command("oauth-token-command", cmd, false),
            PasswordSource::Keyring(attrs) => keyring_lookup(attrs),
        }
    }

    /// After the server refused a token: runs the token command again, with
    /// `SYNCMAIL_OAUTH_REFRESH=1` in its environment so that it can skip its cache.
    /// `None` where the source is not a token command (a password is not retried).
    pub fn refresh(&self) -> Option<Result<Secret, String>> {
        match self {
            PasswordSource::OAuthCommand(cmd) => Some(run_secret_command("oauth-token-command", cmd, true)),
            _ => None,
        }
    }

    pub fn is_oauth(&self) -> bool {
        matches!(self, PasswordSource::OAuthCommand(_))
    }
}

/// Looks the password up in the Secret Service (GNOME Keyring, KWallet, KeePassXC…) with
/// `secret-tool lookup`, its arguments passed as they are (no shell).
fn keyring_lookup(attrs: &BTreeMap<String, String>) -> Result<Secret, String> {
    let pairs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k} {v:?}")).collect();
    let mut c = Command::new("secret-tool");
    c.arg("lookup").stdin(std::process::Stdio::null());
    for (k, v) in attrs {
        c.arg(k).arg(v);
    }
    let out = c.output().map_err(|e| {
        format!("cannot run secret-tool for password-keyring ({e}); install libsecret-tools (Debian) or libsecret")
    })?;
    let s = String::from_utf8(out.stdout).map_err(|_| "secret-tool printed non-UTF-8".to_string())?;
    // secret-tool prints the secret without a line end.
    let line = s.lines().next().unwrap_or("").to_string();
    if !out.status.success() || line.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "the keyring has no password with {}{}; store one with: secret-tool store --label=syncmail {}",
            pairs.join(", "),
            if err.trim().is_empty() { String::new() } else { format!(" ({})", err.trim()) },
            attrs.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(" ")
        ));
    }
    Ok(Secret::new(line))
}

/// Runs `cmd` with `sh -c`; its first line of output is the secret. On failure its stderr
/// is shown, never its stdout (which may hold the secret).
fn run_secret_command(key: &str, cmd: &str, refresh: bool) -> Result<Secret, String> {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd).stdin(std::process::Stdio::null());
    if refresh {
        c.env("SYNCMAIL_OAUTH_REFRESH", "1");
    }
    let out = c.output().map_err(|e| format!("cannot run {key}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{key} failed ({}){}",
            out.status,
            if err.trim().is_empty() { String::new() } else { format!(": {}", err.trim()) }
        ));
    }
    let s = String::from_utf8(out.stdout).map_err(|_| format!("{key} printed non-UTF-8"))?;
    let line = s.lines().next().unwrap_or("").trim_end().to_string();
    if line.is_empty() {
        return Err(format!("{key} printed nothing"));
    }
    Ok(Secret::new(line))
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: String,
    pub password: PasswordSource,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub auth_mech: AuthMech,
    /// Send the password without TLS to a server that is not on this machine (`tls =
    /// "none"` alone allows it only for loopback).
    pub allow_plaintext: bool,
    /// When to compress the connection (COMPRESS=DEFLATE, RFC 4978) where the server
    /// offers it: by default not to a server on this machine.
    pub compress: Compress,
    /// Connections a sync may open (2, the default, or 1). With 2, where the folder list
    /// shows two or more folders changed on the server, a second connection syncs folders
    /// beside the first, each taking the next folder in the run's order: the server's work
    /// on one folder overlaps syncmail's on another, and over a network the round trips
    /// overlap. A sync with nothing to do, or one folder to do, opens one connection. A
    /// second connection the server refuses is no error: the first does every folder (see
    /// the engine's `lanes`).
    pub connections: u8,
    /// How a sync finds the folders that changed on the server.
    pub find_changes: FindChanges,
}

/// How a sync finds the folders that changed on the server (`find-changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FindChanges {
    /// [`FindChanges::Probe`] where the connection's round trip is cheap (a server on this
    /// machine or the local network), else [`FindChanges::List`].
    #[default]
    Auto,
    /// STATUS of a few folders at a time, first one, then more while few have changed; once
    /// most of those asked have changed, the rest are selected without asking (a server
    /// that reads a changed folder for STATUS then reads it once, not twice; see the
    /// engine's `lanes::probe`). A sync with nothing to do takes a few round trips.
    Probe,
    /// Every folder's status in one round trip, with the folder list (LIST-STATUS) or one
    /// pipelined STATUS per folder.
    List,
}

/// The SMTP submission server of an account (`[accounts.NAME.smtp]`).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub user: String,
    /// Its own, or the `[imap]` section's when none is given.
    pub password: PasswordSource,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub auth_mech: syncmail_smtp::AuthMech,
    /// The name given in EHLO.
    pub helo: String,
    /// Addresses this account sends as, to pick the account for `syncmail send`.
    pub from: Vec<String>,
    /// Credentials may go unencrypted to a server not on this machine (as in `[imap]`).
    pub allow_plaintext: bool,
}

/// Which server folders are synced, and where special ones go locally.
#[derive(Debug, Clone)]
pub struct FolderFilter {
    /// Include/exclude patterns over server folder names.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Only folders the server lists as subscribed (LSUB), and INBOX.
    pub subscribed_only: bool,
    /// Special-use attribute (lower case, without `\\`: `sent`) → local folder name
    /// (`/` between levels): "Sent Items" and `[Gmail]/Sent Mail` can both be `Sent` here.
    pub local_names: BTreeMap<String, String>,
}

impl Default for FolderFilter {
    fn default() -> Self {
        FolderFilter {
            include: vec!["*".into()],
            exclude: Vec::new(),
            subscribed_only: false,
            local_names: BTreeMap::new(),
        }
    }
}

impl FolderFilter {
    /// Whether a folder (UTF-8 name, server delimiter) is synced.
    pub fn matches(&self, name: &str, delimiter: Option<char>) -> bool {
        let m = |p: &String| pattern_match(p.as_bytes(), name.as_bytes(), delimiter);
        self.include.iter().any(m) && !self.exclude.iter().any(m)
    }
}

/// IMAP LIST-style patterns: `*` matches anything, `%` anything but the delimiter.
/// `INBOX` matches case-insensitively, as IMAP names it.
fn pattern_match(p: &[u8], s: &[u8], delim: Option<char>) -> bool {
    if p.eq_ignore_ascii_case(b"INBOX") {
        return s.eq_ignore_ascii_case(b"INBOX");
    }
    let d = delim.and_then(|c| u8::try_from(c).ok());
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| pattern_match(rest, &s[i..], delim)),
        Some((b'%', rest)) => {
            (0..=s.len()).take_while(|&i| i == 0 || Some(s[i - 1]) != d).any(|i| pattern_match(rest, &s[i..], delim))
        }
        Some((c, rest)) => s.first() == Some(c) && pattern_match(rest, &s[1..], delim),
    }
}

/// What a message deleted locally becomes on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeletePolicy {
    /// Marked \Deleted and expunged (only that message: UID EXPUNGE). The default.
    #[default]
    Expunge,
    /// Moved to the Trash folder (special-use `\Trash`, else `trash-folder`, else "Trash").
    Trash,
    /// Only marked \Deleted; another client expunges it.
    Flag,
}

/// When deletions are held back instead of carried out: more than `percent` of a folder's
/// messages (and at least `min` of them) deleted on one side since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteGuard {
    pub percent: u32,
    pub min: u32,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        DeleteGuard { percent: 50, min: 10 }
    }
}

impl DeleteGuard {
    /// Whether `deleted` of `total` messages is a mass deletion.
    pub fn trips(&self, deleted: usize, total: usize) -> bool {
        deleted >= self.min as usize && deleted as u64 * 100 > total as u64 * self.percent as u64
    }
}

/// One account, resolved: paths expanded, defaults applied.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub name: String,
    pub maildir: PathBuf,
    pub state_dir: PathBuf,
    pub imap: ImapConfig,
    pub folders: FolderFilter,
    pub delete_policy: DeletePolicy,
    /// The server folder for `DeletePolicy::Trash`, when special-use does not tell.
    pub trash_folder: Option<String>,
    pub delete_guard: DeleteGuard,
    /// How folders are laid out in the Maildir root.
    pub layout: Layout,
    /// Outgoing mail; `None` when the account sends none.
    pub smtp: Option<SmtpConfig>,
    /// The local folder (a Maildir under `maildir`) whose messages wait to be sent.
    /// It is never synced as a folder.
    pub outbox: String,
    /// Where sent mail is filed, when the server marks no `\Sent` folder.
    pub sent_folder: Option<String>,
    /// The SMTP server files sent mail itself (Gmail does): syncmail does not.
    pub server_files_sent: bool,
    /// Messages larger than this (bytes, the server's RFC822.SIZE) come down as
    /// placeholders, their bodies on demand, as with `HEADERS_ONLY`. `None`: no limit.
    pub max_size: Option<u64>,
    /// A placeholder flagged (`\Flagged`, on either side) has its body fetched by the
    /// next sync that downloads.
    pub fetch_flagged: bool,
    /// `syncmail daemon`: seconds between two background syncs of the whole account
    /// (`interval`, default 300, at least 10).
    pub interval: std::time::Duration,
    /// `syncmail daemon`: the server folders watched with IDLE besides INBOX (`idle`).
    pub idle: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub accounts: BTreeMap<String, AccountConfig>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

fn expand(p: &str, base: &Path) -> PathBuf {
    let p = if p == "~" {
        home()
    } else if let Some(rest) = p.strip_prefix("~/") {
        home().join(rest)
    } else {
        PathBuf::from(p)
    };
    if p.is_relative() { base.join(p) } else { p }
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// `$XDG_CONFIG_HOME/syncmail/config.toml`.
pub fn default_config_path() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("syncmail").join("config.toml")
}

/// `$XDG_STATE_HOME/syncmail`.
pub fn default_state_base() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("syncmail")
}

/// A TOML error quotes the line it is about, and serde quotes a value of the wrong type:
/// either may be a `password = …` line. Every value given to a `password` key is hidden.
fn hide_passwords(text: &str, mut message: String) -> String {
    for line in text.lines() {
        let Some(rest) = line.trim_start().strip_prefix("password") else { continue };
        let Some(value) = rest.trim_start().strip_prefix('=') else { continue };
        let value = value.trim();
        let bare = value.trim_matches(|c| c == '"' || c == '\'');
        for v in [value, bare] {
            if !v.is_empty() && v != "\"" && v != "'" {
                message = message.replace(v, "(password hidden)");
            }
        }
    }
    message
}

/// `tls = "..."`, default implicit.
fn tls_mode(v: Option<&str>) -> Result<TlsMode, String> {
    match v.unwrap_or("implicit") {
        "implicit" => Ok(TlsMode::Implicit),
        "starttls" => Ok(TlsMode::StartTls),
        "none" => Ok(TlsMode::None),
        other => Err(format!("tls = {other:?} is not one of \"implicit\", \"starttls\", \"none\"")),
    }
}

/// At most one of `password`, `password-command`, `password-env`; `None` when none is set.
fn password_source(
    plain: Option<String>,
    command: Option<String>,
    env: Option<String>,
) -> Result<Option<PasswordSource>, String> {
    if [plain.is_some(), command.is_some(), env.is_some()].iter().filter(|s| **s).count() > 1 {
        return Err("set only one of password, password-command and password-env".into());
    }
    Ok(match (plain, command, env) {
        (Some(p), _, _) => Some(PasswordSource::Plain(Secret::new(p))),
        (_, Some(c), _) => Some(PasswordSource::Command(c)),
        (_, _, Some(v)) => Some(PasswordSource::Env(v)),
        _ => None,
    })
}

/// `[smtp]`, with the user and password of `[imap]` where it gives none.
fn smtp_config(
    sm: RawSmtp,
    imap_user: &str,
    imap_password: &PasswordSource,
    base: &Path,
) -> Result<SmtpConfig, String> {
    use syncmail_smtp::AuthMech as M;
    let tls = tls_mode(sm.tls.as_deref()).map_err(|e| format!("[smtp] {e}"))?;
    if sm.host.trim().is_empty() {
        return Err("[smtp] host is empty".into());
    }
    let port = sm.port.unwrap_or(match tls {
        TlsMode::Implicit => 465,
        TlsMode::StartTls => 587,
        TlsMode::None => 25,
    });
    let password = password_source(sm.password, sm.password_command, sm.password_env)
        .map_err(|e| format!("[smtp] {e}"))?
        .unwrap_or_else(|| imap_password.clone());
    let auth_mech = match sm.auth_mech.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("AUTO") => M::Auto,
        Some("PLAIN") => M::Plain,
        Some("LOGIN") => M::Login,
        Some("XOAUTH2") => M::XOAuth2,
        Some("NONE") => M::None,
        Some(other) => {
            return Err(format!(
                "[smtp] auth-mech = {other:?} is not one of \"auto\", \"plain\", \"login\", \"xoauth2\", \"none\""
            ));
        }
    };
    let user = sm.user.unwrap_or_else(|| imap_user.to_string());
    let from = sm.from.unwrap_or_else(|| if user.contains('@') { vec![user.clone()] } else { Vec::new() });
    Ok(SmtpConfig {
        host: sm.host,
        port,
        tls,
        user,
        password,
        ca_file: sm.ca_file.as_deref().map(|s| expand(s, base)),
        timeout: Duration::from_secs(sm.timeout.unwrap_or(60).max(1)),
        auth_mech,
        helo: sm.helo.unwrap_or_else(|| "localhost".into()),
        from,
        allow_plaintext: sm.allow_plaintext.unwrap_or(false),
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), source: e })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.into(), message: hide_passwords(text, e.to_string()) })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let state_base = raw.state_dir.as_deref().map(|s| expand(s, &base)).unwrap_or_else(default_state_base);
        let mut accounts = BTreeMap::new();
        for (name, a) in raw.accounts {
            let invalid = |message: String| ConfigError::Invalid { account: name.clone(), message };
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
                return Err(invalid("an account name must not be empty or contain '/'".into()));
            }
            let tls = tls_mode(a.imap.tls.as_deref()).map_err(invalid)?;
            let port = a.imap.port.unwrap_or(if tls == TlsMode::Implicit { 993 } else { 143 });
            let sources = [
                a.imap.password.is_some(),
                a.imap.password_command.is_some(),
                a.imap.password_env.is_some(),
                a.imap.oauth_token_command.is_some(),
                a.imap.password_keyring.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() > 1 {
                return Err(invalid(
                    "set only one of password, password-command, password-env, password-keyring and \
                     oauth-token-command"
                        .into(),
                ));
            }
            let password = match (a.imap.password, a.imap.password_command, a.imap.password_env) {
                (Some(p), _, _) => PasswordSource::Plain(Secret::new(p)),
                (_, Some(c), _) => PasswordSource::Command(c),
                (_, _, Some(v)) => PasswordSource::Env(v),
                _ => match (a.imap.oauth_token_command, a.imap.password_keyring) {
                    (Some(c), _) => PasswordSource::OAuthCommand(c),
                    (_, Some(attrs)) if !attrs.is_empty() => PasswordSource::Keyring(attrs),
                    (_, Some(_)) => {
                        return Err(invalid(
                            "password-keyring needs attributes, e.g. { service = \"imap\", user = \"me\" }".into(),
                        ));
                    }
                    _ => {
                        return Err(invalid(
                            "[imap] needs password-command, password-env, password-keyring, password or \
                             oauth-token-command"
                                .into(),
                        ));
                    }
                },
            };
            if a.imap.host.trim().is_empty() {
                return Err(invalid("[imap] host is empty".into()));
            }
            let timeout = Duration::from_secs(a.imap.timeout.unwrap_or(60).max(1));
            let auth_mech = match a.imap.auth_mech.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("AUTO") => AuthMech::Auto,
                Some("PLAIN") => AuthMech::Plain,
                Some("LOGIN") => AuthMech::Login,
                Some("XOAUTH2") => AuthMech::XOAuth2,
                Some("OAUTHBEARER") => AuthMech::OAuthBearer,
                Some(other) => {
                    return Err(invalid(format!(
                        "auth-mech = {other:?} is not one of \"auto\", \"plain\", \"login\", \"xoauth2\", \
                         \"oauthbearer\""
                    )));
                }
            };
            if auth_mech.is_oauth() != password.is_oauth() && auth_mech != AuthMech::Auto {
                return Err(invalid(if password.is_oauth() {
                    "oauth-token-command gives an OAuth token: auth-mech must be \"auto\", \"xoauth2\" or \
                     \"oauthbearer\""
                        .into()
                } else {
                    "auth-mech = \"xoauth2\" or \"oauthbearer\" needs oauth-token-command".into()
                }));
            }
            let compress = match a.imap.compress.as_deref() {
                None | Some("auto") => Compress::Auto,
                Some("always") => Compress::Always,
                Some("never") => Compress::Never,
                Some(other) => {
                    return Err(invalid(format!("compress = {other:?} is not one of \"auto\", \"always\", \"never\"")));
                }
            };
            let connections = match a.imap.connections {
                None => 2,
                Some(n @ (1 | 2)) => n,
                Some(n) => return Err(invalid(format!("connections = {n}: it is 1 or 2"))),
            };
            let find_changes = match a.imap.find_changes.as_deref() {
                None | Some("auto") => FindChanges::Auto,
                Some("probe") => FindChanges::Probe,
                Some("list") => FindChanges::List,
                Some(other) => {
                    return Err(invalid(format!(
                        "find-changes = {other:?} is not one of \"auto\", \"probe\", \"list\""
                    )));
                }
            };
            let state_dir = a.state_dir.as_deref().map(|s| expand(s, &base)).unwrap_or_else(|| state_base.join(&name));
            let delete_policy = match a.delete_policy.as_deref() {
                None | Some("expunge") => DeletePolicy::Expunge,
                Some("trash") => DeletePolicy::Trash,
                Some("flag") => DeletePolicy::Flag,
                Some(other) => {
                    return Err(invalid(format!(
                        "delete-policy = {other:?} is not one of \"expunge\", \"trash\", \"flag\""
                    )));
                }
            };
            let layout = match a.layout.as_deref() {
                None | Some("verbatim") => Layout::Verbatim,
                Some("maildir++") => Layout::MaildirPlusPlus,
                Some(other) => {
                    return Err(invalid(format!("layout = {other:?} is not one of \"verbatim\", \"maildir++\"")));
                }
            };
            let mut delete_guard = DeleteGuard::default();
            if let Some(p) = a.delete_guard {
                if p > 100 {
                    return Err(invalid("delete-guard is a percentage, 0 to 100".into()));
                }
                delete_guard.percent = p;
            }
            if let Some(m) = a.delete_guard_min {
                delete_guard.min = m;
            }
            let mut local_names = BTreeMap::new();
            for (k, v) in a.folders.local_names {
                let key = k.trim_start_matches('\\').to_ascii_lowercase();
                if !SPECIAL_USES.contains(&key.as_str()) {
                    return Err(invalid(format!(
                        "[folders.local-names] has {k:?}; the special uses are {}",
                        SPECIAL_USES.join(", ")
                    )));
                }
                if let Err(e) = syncmail_maildir::folder_path(&v, Some('/')) {
                    return Err(invalid(format!("[folders.local-names] {k} = {v:?}: {e}")));
                }
                local_names.insert(key, v);
            }
            let folders = FolderFilter {
                include: a.folders.include.unwrap_or_else(|| vec!["*".into()]),
                exclude: a.folders.exclude,
                subscribed_only: a.folders.subscribed_only,
                local_names,
            };
            let smtp = match a.smtp {
                None => None,
                Some(sm) => Some(smtp_config(sm, &a.imap.user, &password, &base).map_err(invalid)?),
            };
            let interval = a.interval.unwrap_or(300);
            if interval < 10 {
                return Err(invalid(format!("interval = {interval}: at least 10 seconds between background syncs")));
            }
            let outbox = a.outbox.unwrap_or_else(|| "Outbox".into());
            // One plain folder directly under the Maildir root, and never the INBOX, whose
            // mail would be taken for mail to send.
            if outbox.eq_ignore_ascii_case("INBOX") {
                return Err(invalid("outbox = \"INBOX\": the outbox must be a folder of its own".into()));
            }
            syncmail_maildir::check_component(&outbox).map_err(|e| invalid(format!("outbox = {outbox:?}: {e}")))?;
            let max_size = a.max_size.as_ref().map(parse_size).transpose().map_err(invalid)?;
            accounts.insert(
                name.clone(),
                AccountConfig {
                    maildir: expand(&a.maildir, &base),
                    state_dir,
                    imap: ImapConfig {
                        host: a.imap.host,
                        port,
                        tls,
                        user: a.imap.user.clone(),
                        password,
                        ca_file: a.imap.ca_file.as_deref().map(|s| expand(s, &base)),
                        timeout,
                        auth_mech,
                        allow_plaintext: a.imap.allow_plaintext.unwrap_or(false),
                        compress,
                        connections,
                        find_changes,
                    },
                    folders,
                    delete_policy,
                    trash_folder: a.trash_folder,
                    delete_guard,
                    layout,
                    smtp,
                    outbox,
                    sent_folder: a.sent_folder,
                    server_files_sent: a.server_files_sent.unwrap_or(false),
                    max_size,
                    fetch_flagged: a.fetch_flagged.unwrap_or(false),
                    interval: std::time::Duration::from_secs(interval),
                    idle: a.idle.unwrap_or_default(),
                    name,
                },
            );
        }
        Ok(Config { path: path.into(), accounts })
    }

    /// The accounts named, or all of them when `names` is empty.
    pub fn select(&self, names: &[String]) -> Result<Vec<AccountConfig>, ConfigError> {
        if names.is_empty() {
            return Ok(self.accounts.values().cloned().collect());
        }
        names
            .iter()
            .map(|n| self.accounts.get(n).cloned().ok_or_else(|| ConfigError::NoSuchAccount(n.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [accounts.work]
        maildir = "~/Mail/work"
        [accounts.work.imap]
        host = "imap.example.org"
        user = "me@example.org"
        password-command = "echo s3cret; echo second-line"
        ca-file = "ca.pem"
        [accounts.home]
        maildir = "/srv/mail"
        state-dir = "/var/lib/x"
        [accounts.home.imap]
        host = "localhost"
        tls = "none"
        user = "me"
        password = "pw"
        [accounts.home.folders]
        exclude = ["Spam", "Lists.%"]
    "#;

    #[test]
    fn parses_the_contract() {
        let c = Config::parse(SAMPLE, Path::new("/etc/sm/config.toml")).unwrap();
        let w = &c.accounts["work"];
        assert_eq!(w.imap.port, 993);
        assert_eq!(w.imap.tls, TlsMode::Implicit);
        assert_eq!(w.imap.ca_file.as_deref(), Some(Path::new("/etc/sm/ca.pem")));
        assert!(w.maildir.ends_with("Mail/work"));
        assert!(w.state_dir.ends_with("syncmail/work"));
        assert_eq!(w.imap.password.fetch().unwrap().expose(), "s3cret");
        let h = &c.accounts["home"];
        assert_eq!(h.imap.port, 143);
        assert_eq!(h.state_dir, PathBuf::from("/var/lib/x"));
        assert!(h.folders.matches("INBOX", Some('.')));
        assert!(!h.folders.matches("Spam", Some('.')));
        assert!(!h.folders.matches("Lists.rust", Some('.')));
        assert!(h.folders.matches("Lists.rust.sub", Some('.')));
        assert_eq!(c.select(&[]).unwrap().len(), 2);
        assert!(matches!(c.select(&["nope".into()]), Err(ConfigError::NoSuchAccount(_))));
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let start = doc.find("```toml").unwrap() + 7;
        let end = start + doc[start..].find("```").unwrap();
        let text: String =
            doc[start..end].lines().map(|l| l.trim_start_matches("//!").trim_start()).collect::<Vec<_>>().join("\n");
        let c = Config::parse(&text, Path::new("/c.toml")).unwrap();
        let w = &c.accounts["work"];
        assert_eq!(w.delete_policy, DeletePolicy::Expunge);
        assert_eq!(w.delete_guard, DeleteGuard { percent: 50, min: 10 });
        assert_eq!(w.trash_folder.as_deref(), Some("Trash"));
        assert_eq!(w.state_dir, PathBuf::from("/elsewhere"));
        assert_eq!(w.idle, ["Lists/rust"]);
        assert_eq!(w.outbox, "Outbox");
        assert!(!w.server_files_sent);
        assert_eq!(w.max_size, Some(1 << 20));
        assert!(!w.fetch_flagged);
        let sm = w.smtp.as_ref().unwrap();
        assert_eq!((sm.port, sm.tls, sm.user.as_str()), (465, TlsMode::Implicit, "me@example.org"));
        assert!(matches!(&sm.password, PasswordSource::Env(v) if v == "SMTP_PASSWORD"));
    }

    #[test]
    fn max_size_reads_units_and_refuses_nonsense() {
        let parse = |v: &str| {
            let text = format!(
                "[accounts.a]\nmaildir='x'\nmax-size={v}\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n"
            );
            Config::parse(&text, Path::new("/c.toml")).map(|c| c.accounts["a"].max_size)
        };
        assert_eq!(parse("2048").unwrap(), Some(2048));
        assert_eq!(parse("'500K'").unwrap(), Some(500 << 10));
        assert_eq!(parse("'1M'").unwrap(), Some(1 << 20));
        assert_eq!(parse("'3 GiB'").unwrap(), Some(3 << 30));
        for bad in ["'1T'", "'M'", "'-1M'", "'99999999999999999999G'", "'1.5M'"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("max-size"), "{bad}: {e}");
        }
    }

    #[test]
    fn daemon_settings_have_defaults_and_limits() {
        let base = "[accounts.a]\nmaildir='x'\n{}\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n";
        let parse = |keys: &str| Config::parse(&base.replace("{}", keys), Path::new("/c.toml"));
        let a = &parse("").unwrap().accounts["a"];
        assert_eq!(a.interval, std::time::Duration::from_secs(300));
        assert!(a.idle.is_empty());
        let a = &parse("interval = 60\nidle = ['Lists', 'Work/Team']").unwrap().accounts["a"];
        assert_eq!(a.interval, std::time::Duration::from_secs(60));
        assert_eq!(a.idle, ["Lists", "Work/Team"]);
        assert!(parse("interval = 5").unwrap_err().to_string().contains("at least 10 seconds"));
    }

    #[test]
    fn compress_is_auto_unless_set() {
        let base = "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n{}\n";
        let parse = |keys: &str| Config::parse(&base.replace("{}", keys), Path::new("/c.toml"));
        assert_eq!(parse("").unwrap().accounts["a"].imap.compress, Compress::Auto);
        assert_eq!(parse("compress = 'auto'").unwrap().accounts["a"].imap.compress, Compress::Auto);
        assert_eq!(parse("compress = 'always'").unwrap().accounts["a"].imap.compress, Compress::Always);
        assert_eq!(parse("compress = 'never'").unwrap().accounts["a"].imap.compress, Compress::Never);
        let e = parse("compress = 'yes'").unwrap_err().to_string();
        assert!(e.contains("compress = \"yes\" is not one of"), "{e}");
    }

    #[test]
    fn find_changes_is_auto_unless_set() {
        let base = "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n{}\n";
        let parse = |keys: &str| Config::parse(&base.replace("{}", keys), Path::new("/c.toml"));
        for (text, want) in [
            ("", FindChanges::Auto),
            ("find-changes = 'auto'", FindChanges::Auto),
            ("find-changes = 'probe'", FindChanges::Probe),
            ("find-changes = 'list'", FindChanges::List),
        ] {
            assert_eq!(parse(text).unwrap().accounts["a"].imap.find_changes, want, "{text}");
        }
        let e = parse("find-changes = 'sometimes'").unwrap_err().to_string();
        assert!(e.contains("find-changes = \"sometimes\" is not one of"), "{e}");
    }

    #[test]
    fn connections_are_two_unless_set() {
        let base = "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n{}\n";
        let parse = |keys: &str| Config::parse(&base.replace("{}", keys), Path::new("/c.toml"));
        assert_eq!(parse("").unwrap().accounts["a"].imap.connections, 2);
        assert_eq!(parse("connections = 1").unwrap().accounts["a"].imap.connections, 1);
        for bad in ["connections = 0", "connections = 3"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("it is 1 or 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn smtp_defaults_follow_imap() {
        let text = "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='me@x.org'\npassword='p'\n\
                    [accounts.a.smtp]\nhost='s'\ntls='starttls'\n";
        let c = Config::parse(text, Path::new("/c.toml")).unwrap();
        let sm = c.accounts["a"].smtp.clone().unwrap();
        assert_eq!((sm.port, sm.user.as_str()), (587, "me@x.org"));
        assert_eq!(sm.password.fetch().unwrap().expose(), "p");
        assert_eq!(sm.from, vec!["me@x.org".to_string()]);
        assert!(c.accounts["a"].smtp.is_some());
        let inbox = "[accounts.a]\nmaildir='x'\noutbox='inbox'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n";
        assert!(Config::parse(inbox, Path::new("/c.toml")).unwrap_err().to_string().contains("folder of its own"));
        let bad = "[accounts.a]\nmaildir='x'\noutbox='../x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\n";
        assert!(Config::parse(bad, Path::new("/c.toml")).unwrap_err().to_string().contains("outbox"));
    }

    #[test]
    fn clear_errors() {
        let bad = [
            ("[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\n", "needs password"),
            ("[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\ntls='ssl'\n", "tls"),
            ("[accounts.a]\nmaildir='x'\nfoo=1\n", "unknown field"),
            (
                "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword='p'\npassword-env='E'\n",
                "only one",
            ),
            ("not toml", "not valid"),
        ];
        for (text, want) in bad {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should mention {want:?}");
        }
    }

    #[test]
    fn patterns() {
        assert!(pattern_match(b"*", b"a.b.c", Some('.')));
        assert!(pattern_match(b"a.%", b"a.b", Some('.')));
        assert!(!pattern_match(b"a.%", b"a.b.c", Some('.')));
        assert!(pattern_match(b"inbox", b"INBOX", Some('.')));
        assert!(!pattern_match(b"Sent", b"sent", Some('.')));
        assert!(pattern_match(b"*Sent*", b"Old Sent Items", Some('/')));
    }

    #[test]
    fn a_syntax_error_on_the_password_line_does_not_show_the_password() {
        for text in [
            "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword = \"hunter2\" oops\n",
            "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword = hunter2\n",
            "[accounts.a]\nmaildir='x'\n[accounts.a.imap]\nhost='h'\nuser='u'\npassword = 12345678\n",
        ] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(!e.contains("hunter2") && !e.contains("12345678"), "{e}");
            assert!(e.contains("line 6"), "{e}");
        }
    }

    #[test]
    fn failing_password_command_says_why_without_stdout() {
        let p = PasswordSource::Command("echo topsecret; echo oops >&2; exit 3".into());
        let e = p.fetch().unwrap_err();
        assert!(e.contains("oops") && !e.contains("topsecret"), "{e}");
    }
}
