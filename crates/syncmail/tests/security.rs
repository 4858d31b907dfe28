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
         tls = \"none\"\nuser = \"test\"\npassword-command = \"echo secret\"\ntimeout = 5\n{extra}\n",
        tmp.join("mail").display(),
        tmp.join("state").display()
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
