//! TLS and credentials: certificate errors against a real Dovecot serving a bad
//! certificate, and the refusal to send a password in clear text over a network.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use syncmail::{ErrorKind, Store};
use syncmail_testkit::hostile::{Script, ScriptedServer};
use syncmail_testkit::{Dovecot, Options};

/// Each bad certificate is refused, over implicit TLS and STARTTLS, with an error that
/// names the host, what is wrong and what to do; nothing is fetched.
#[test]
fn bad_certificates_are_refused_with_what_is_wrong_and_what_to_do() {
    let cases = [
        ("expired", "expired on 2021-01-01", "renew"),
        ("wrong-name", "not valid for the name 127.0.0.1 (it is for wrong.example)", "set host"),
        ("other-ca", "unknown issuer", "ca-file"),
    ];
    for (kind, what, fix) in cases {
        let mut dv = Dovecot::start(Options { messages: 3, ..Default::default() });
        dv.use_bad_certificate(kind);
        for conn in [Conn::Implicit, Conn::StartTls] {
            let tmp = tempfile::tempdir().unwrap();
            let store = Store::open(account(&dv, tmp.path(), conn, "")).unwrap();
            let (r, _) = sync(&store, DOWNLOAD);
            assert_eq!(r.errors.len(), 1, "{kind} {conn:?}: {:#?}", r.errors);
            let e = &r.errors[0];
            assert_eq!(e.kind, ErrorKind::Tls, "{kind} {conn:?}: {e:#?}");
            assert!(!e.retryable, "{kind}: a certificate error does not go away by retrying");
            for words in ["TLS with 127.0.0.1 failed", what, fix] {
                assert!(e.message.contains(words), "{kind} {conn:?}: {:?} should say {words:?}", e.message);
            }
            assert_eq!(r.downloaded(), 0);
        }
    }
}

/// The address of this machine on its network (not loopback), where it has one.
fn network_address() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?; // no packet is sent: this only picks a route
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn plain_account(tmp: &std::path::Path, ip: std::net::IpAddr, port: u16, extra: &str) -> syncmail::AccountConfig {
    let text = format!(
        "[accounts.t]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.t.imap]\nhost = \"{ip}\"\nport = {port}\n\
         tls = \"none\"\nuser = \"test\"\npassword-command = \"echo run >> '{}'; echo secret\"\ntimeout = 5\n{extra}\n",
        tmp.join("mail").display(),
        tmp.join("state").display(),
        tmp.join("runs").display()
    );
    syncmail::Config::parse(&text, &tmp.join("c.toml")).unwrap().accounts["t"].clone()
}

#[test]
fn no_password_goes_unencrypted_over_a_network_unless_the_config_says_so() {
    let Some(ip) = network_address() else {
        panic!("this test needs a non-loopback address on this machine (none found)");
    };
    let fake = ScriptedServer::start_on(ip, Script::default());
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(plain_account(tmp.path(), ip, fake.port, "")).unwrap();
    let (r, _) = sync(&store, DOWNLOAD);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let e = &r.errors[0];
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("refusing to send the password over an unencrypted connection"), "{}", e.message);
    assert!(e.message.contains("allow-plaintext") && e.hint.contains("tls"), "{e:#?}");
    let cmds = fake.commands();
    assert!(!cmds.iter().any(|c| c.starts_with("LOGIN") || c.starts_with("AUTHENTICATE")), "{cmds:?}");
    assert_eq!(runs(tmp.path()), 0, "the password was fetched although it could not be sent");

    // Said explicitly: allowed.
    let store = Store::open(plain_account(tmp.path(), ip, fake.port, "allow-plaintext = true")).unwrap();
    let (r, _) = sync(&store, DOWNLOAD);
    assert!(r.is_success(), "{:#?}", r.errors);
    assert!(fake.commands().iter().any(|c| c.starts_with("AUTHENTICATE")));

    // Loopback needs nothing said (the other tests run that way against Dovecot).
    let local = ScriptedServer::start(Script::default());
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(plain_account(tmp.path(), "127.0.0.1".parse().unwrap(), local.port, "")).unwrap();
    let (r, _) = sync(&store, DOWNLOAD);
    assert!(r.is_success(), "{:#?}", r.errors);
}

/// An account on 127.0.0.1:`port` (no TLS: loopback) whose token comes from `command`.
fn token_account(tmp: &std::path::Path, port: u16, mech: &str, command: &str) -> syncmail::AccountConfig {
    let text = format!(
        "[accounts.t]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.t.imap]\nhost = \"127.0.0.1\"\nport = {port}\n\
         tls = \"none\"\nuser = \"test\"\noauth-token-command = {command:?}\nauth-mech = \"{mech}\"\ntimeout = 5\n",
        tmp.join("mail").display(),
        tmp.join("state").display(),
    );
    syncmail::Config::parse(&text, &tmp.join("c.toml")).unwrap().accounts["t"].clone()
}

/// [`token_account`] with a command that prints `expired-token`, or `fresh-token` when
/// asked to refresh (or always `always`); each run is counted in `runs`.
fn oauth_account(tmp: &std::path::Path, port: u16, mech: &str, always: Option<&str>) -> syncmail::AccountConfig {
    let script = tmp.join("token.sh");
    let body = match always {
        Some(t) => format!("echo run >> '{0}/runs'\necho {t}\n", tmp.display()),
        None => format!(
            "echo run >> '{0}/runs'\nif [ \"$SYNCMAIL_OAUTH_REFRESH\" = 1 ]; then echo fresh-token; else echo expired-token; fi\n",
            tmp.display()
        ),
    };
    std::fs::write(&script, body).unwrap();
    token_account(tmp, port, mech, &format!("sh '{}'", script.display()))
}

fn runs(tmp: &std::path::Path) -> usize {
    std::fs::read_to_string(tmp.join("runs")).unwrap_or_default().lines().count()
}

fn oauth_server(caps: &str) -> ScriptedServer {
    let mut inbox = syncmail_testkit::hostile::FakeFolder::new("INBOX");
    inbox.add(&syncmail_testkit::message("hello", "via oauth"), &[]);
    ScriptedServer::start(Script {
        capabilities: caps.into(),
        oauth_tokens: vec!["fresh-token".into()],
        folders: vec![inbox],
        ..Default::default()
    })
}

#[test]
fn an_expired_oauth_token_is_refreshed_once_and_the_login_retried() {
    let both = "IMAP4rev1 SASL-IR AUTH=XOAUTH2 AUTH=OAUTHBEARER";
    let cases = [
        ("xoauth2", both, "AUTHENTICATE XOAUTH2"),
        ("oauthbearer", both, "AUTHENTICATE OAUTHBEARER"),
        ("auto", both, "AUTHENTICATE OAUTHBEARER"),
        ("auto", "IMAP4rev1 AUTH=XOAUTH2", "AUTHENTICATE XOAUTH2"), // no SASL-IR: "+" first
    ];
    for (mech, caps, sent) in cases {
        let fake = oauth_server(caps);
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(oauth_account(tmp.path(), fake.port, mech, None)).unwrap();
        let (r, _) = sync(&store, DOWNLOAD);
        assert!(r.is_success(), "{mech} {caps}: {:#?}", r.errors);
        assert_eq!(r.downloaded(), 1);
        assert_eq!(runs(tmp.path()), 2, "{mech}: the token command runs once more, and only once");
        let auths: Vec<String> = fake.commands().into_iter().filter(|c| c.starts_with("AUTHENTICATE")).collect();
        assert_eq!(auths, [sent, sent], "{mech} {caps}");
        // The next run starts again from the command (no token is kept anywhere).
        let (r, _) = sync(&store, DOWNLOAD);
        assert!(r.is_success());
        assert_eq!(runs(tmp.path()), 4);
    }
}

#[test]
fn a_token_refused_after_its_refresh_is_an_auth_error_without_the_token() {
    let fake = oauth_server("IMAP4rev1 SASL-IR AUTH=XOAUTH2");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(oauth_account(tmp.path(), fake.port, "xoauth2", Some("revoked-token-9f8e"))).unwrap();
    let (r, rec) = sync(&store, DOWNLOAD);
    assert_eq!(r.errors.len(), 1, "{:#?}", r.errors);
    let e = &r.errors[0];
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.server_text.as_deref().unwrap_or("").contains("invalid_token"), "{e:#?}");
    assert!(e.hint.contains("oauth-token-command"), "{}", e.hint);
    assert_eq!(runs(tmp.path()), 2, "refreshed once, not in a loop");
    let seen = format!("{:?} {:?}", r, rec.errors.lock().unwrap());
    assert!(!seen.contains("revoked-token-9f8e"), "the token leaked: {seen}");

    // A server that offers no OAuth mechanism: said so, with what it does offer.
    let plain = oauth_server("IMAP4rev1 AUTH=PLAIN");
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(oauth_account(tmp.path(), plain.port, "xoauth2", None)).unwrap();
    let (r, _) = sync(&store, DOWNLOAD);
    assert!(r.errors[0].message.contains("does not offer AUTH=XOAUTH2 (it offers AUTH=PLAIN)"), "{:#?}", r.errors);
}

/// A token command as users have them, here signing its own JWTs (HS256) for a Dovecot
/// that checks them locally: expired unless `SYNCMAIL_OAUTH_REFRESH=1` asks for a fresh one.
const JWT_COMMAND: &str = r#"
import base64, hashlib, hmac, json, os, sys, time
key = base64.b64decode(sys.argv[1])
with open(sys.argv[2], "a") as f:
    f.write("run\n")
now = int(time.time())
fresh = os.environ.get("SYNCMAIL_OAUTH_REFRESH") == "1"
claims = {"sub": "test", "iat": now - (10 if fresh else 7200), "exp": now + (3600 if fresh else -3600)}
enc = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
part = lambda d: enc(json.dumps(d, separators=(",", ":")).encode())
signed = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
print((signed + b"." + enc(hmac.new(key, signed, hashlib.sha256).digest())).decode())
"#;

#[test]
fn oauth_against_dovecot_an_expired_jwt_is_refreshed_by_the_token_command() {
    let key = "c3luY21haWwtdGVzdC1obWFjLWtleS0zMi1ieXRlcyE="; // base64 of a 32-byte key
    let dv = Dovecot::start(Options { messages: 5, oauth2_key: Some(key.into()), ..Default::default() });
    for mech in ["xoauth2", "oauthbearer"] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("jwt.py"), JWT_COMMAND).unwrap();
        let command =
            format!("python3 '{}' {key} '{}'", tmp.path().join("jwt.py").display(), tmp.path().join("runs").display());
        let acc = token_account(tmp.path(), dv.port_plain, mech, &command);
        let store = Store::open(acc).unwrap();
        let (r, _) = sync(&store, DOWNLOAD);
        assert!(r.is_success(), "{mech}: {:#?}", r.errors);
        assert_eq!(runs(tmp.path()), 2, "{mech}: expired, then refreshed once");
        assert_same(&dv, tmp.path());
    }
}

fn starttls_account(tmp: &std::path::Path, port: u16) -> syncmail::AccountConfig {
    let mut acc = plain_account(tmp, "127.0.0.1".parse().unwrap(), port, "");
    acc.imap.tls = syncmail_imap::TlsMode::StartTls;
    acc
}

/// STARTTLS cannot be stripped or abused: a server that does not offer it is refused (no
/// fallback to clear text), and one that slips a response in right after its go-ahead
/// (RFC 3501 §6.2.1 injection) is refused before the handshake. No password is fetched.
#[test]
fn starttls_is_neither_stripped_nor_injected() {
    let stripped = ScriptedServer::start(Script { capabilities: "IMAP4rev1 AUTH=PLAIN".into(), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let (r, _) = sync(&Store::open(starttls_account(tmp.path(), stripped.port)).unwrap(), DOWNLOAD);
    assert!(r.errors[0].message.contains("does not offer STARTTLS"), "{:#?}", r.errors);
    assert_eq!(runs(tmp.path()), 0);

    let injecting = ScriptedServer::start(
        Script { capabilities: "IMAP4rev1 STARTTLS AUTH=PLAIN".into(), ..Default::default() }.with_hook(|r, w| {
            if r.command != "STARTTLS" {
                return syncmail_testkit::hostile::Action::Normal;
            }
            let _ = w.write_all(
                format!("{} OK begin TLS\r\n* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] injected\r\n", r.tag).as_bytes(),
            );
            syncmail_testkit::hostile::Action::Replied
        }),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (r, _) = sync(&Store::open(starttls_account(tmp.path(), injecting.port)).unwrap(), DOWNLOAD);
    assert!(r.errors[0].message.contains("sent data right after STARTTLS"), "{:#?}", r.errors);
    assert_eq!(runs(tmp.path()), 0);
    let cmds = injecting.commands();
    assert!(!cmds.iter().any(|c| c.starts_with("AUTHENTICATE") || c.starts_with("LOGIN")), "{cmds:?}");
}
