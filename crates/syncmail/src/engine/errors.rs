//! Turning what broke into something a person can act on.

use crate::api::{ErrorKind, SyncError};
use crate::far::SessionError;
use syncmail_imap::Error as ImapError;

pub(crate) fn from_imap(account: &str, folder: Option<&str>, e: &ImapError) -> SyncError {
    let (kind, hint) = match e {
        ImapError::Connect { .. } => (
            ErrorKind::Network,
            "check host and port in the [imap] section, and that the server is reachable from here".to_string(),
        ),
        ImapError::Io { .. } | ImapError::Bye { .. } => {
            (ErrorKind::Network, "the connection broke; run the sync again (what was done is kept)".to_string())
        }
        ImapError::Timeout { .. } => (
            ErrorKind::Network,
            "the server stopped answering; run the sync again, or raise timeout in the [imap] section".to_string(),
        ),
        ImapError::Tls { .. } => (
            ErrorKind::Tls,
            "check the host name and the certificate; for a private CA set ca-file to its PEM file; \
             for tls = \"starttls\" or \"implicit\" check the port"
                .to_string(),
        ),
        ImapError::Auth { .. } => (
            ErrorKind::Auth,
            "check user and the password (password-command, password-env or password) in the [imap] section; \
             with oauth-token-command, check that the command prints a current access token for this user"
                .to_string(),
        ),
        ImapError::No { command, .. } if matches!(command.as_str(), "SELECT" | "EXAMINE" | "STATUS") => (
            ErrorKind::Server,
            "the folder may have been deleted, or be unreadable, on the server; the server's own words say \
             why, and its log may say more; the other folders are synced"
                .to_string(),
        ),
        ImapError::No { .. } if e.is_limit() => (
            ErrorKind::Server,
            "the server keeps a limit, most often on connections per user: close other mail programs \
             connected as this user, or set connections = 1 in the [imap] section (a sync may open two)"
                .to_string(),
        ),
        ImapError::No { .. } => (ErrorKind::Server, "the server's own words say why it refused".to_string()),
        ImapError::Sink(_) => {
            (ErrorKind::Local, "check that the Maildir is writable and the disk is not full".to_string())
        }
        ImapError::Insecure(_) => (
            ErrorKind::Config,
            "protect the connection with TLS (tls = \"implicit\" or \"starttls\" in the [imap] section); \
             allow-plaintext = true sends the password readable to anyone on the network path"
                .to_string(),
        ),
        ImapError::Protocol(_) => (
            ErrorKind::Server,
            "the message says what the server lacks or did; adjust tls, port or auth-mech in the [imap] \
             section if it names a setting, or report it"
                .to_string(),
        ),
        ImapError::Bad { .. } | ImapError::Parse(_) | ImapError::TooLarge { .. } => (
            ErrorKind::Server,
            "the server's answer was not what IMAP allows; please report it with the line above".to_string(),
        ),
    };
    SyncError {
        kind,
        account: account.to_string(),
        folder: folder.map(str::to_string),
        message: summary(e),
        server_text: e.server_text().map(str::to_string),
        hint,
        retryable: e.is_retryable(),
    }
}

/// What failed, without the server's words (those go in `server_text`).
fn summary(e: &ImapError) -> String {
    match e {
        ImapError::No { command, .. } => format!("the server refused {command}"),
        ImapError::Bad { command, .. } => format!("the server rejected {command} as malformed"),
        ImapError::Auth { user, .. } => format!("login as {user} failed"),
        ImapError::Bye { .. } => "the server closed the connection".to_string(),
        ImapError::Parse(p) => format!("cannot read the server's response: {}", p.reason),
        other => other.to_string(),
    }
}

pub(crate) fn from_session(account: &str, e: &SessionError) -> SyncError {
    match e {
        SessionError::Imap(i) => from_imap(account, None, i),
        SessionError::Password(msg) => SyncError {
            kind: ErrorKind::Config,
            account: account.to_string(),
            folder: None,
            message: format!("cannot get the password: {msg}"),
            server_text: None,
            hint: "check password-command, password-env, password-keyring or oauth-token-command in the [imap] \
                   section"
                .into(),
            retryable: false,
        },
    }
}

pub(crate) fn local(account: &str, folder: Option<&str>, what: String) -> SyncError {
    SyncError {
        kind: ErrorKind::Local,
        account: account.to_string(),
        folder: folder.map(str::to_string),
        message: what,
        server_text: None,
        hint: "check that the Maildir and the state directory are writable and the disk is not full".into(),
        retryable: false,
    }
}
