//! A secret never reaches output or state: syncs with a known password in every output
//! mode, failed logins (a wrong password; a scripted server that quotes back what it was
//! sent), and a failing password-command; then every byte of stdout, stderr and of every
//! file under the store and state directories is searched for the secrets, raw and in the
//! base64 form AUTHENTICATE PLAIN sends.
#![allow(clippy::unwrap_used)]

use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use syncmail_testkit::hostile::{Action, Script, ScriptedServer};
use syncmail_testkit::{Dovecot, Options};

const GOOD: &str = "Pw-q7Zr4-good-leakcheck";
const WRONG: &str = "Pw-x9Kd2-wrong-leakcheck";

/// A config that takes the password from `$SYNCMAIL_TEST_PW` (so the file itself holds none).
fn config(root: &Path, name: &str, port: u16, tls: &str, ca: Option<&Path>, source: &str) -> PathBuf {
    let conf = root.join(format!("{name}.toml"));
    let ca = ca.map(|c| format!("ca-file = \"{}\"\n", c.display())).unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "[accounts.{name}]\nmaildir = \"{}\"\nstate-dir = \"{}\"\n[accounts.{name}.imap]\nhost = \"127.0.0.1\"\n\
             port = {port}\ntls = \"{tls}\"\nuser = \"test\"\n{source}\n{ca}timeout = 10\n",
            root.join(name).join("mail").display(),
            root.join(name).join("state").display(),
        ),
    )
    .unwrap();
    conf
}

/// Runs the CLI with `args` and the password in the environment; returns stdout + stderr.
fn run(conf: &Path, password: &str, args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new(env!("CARGO_BIN_EXE_syncmail"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .env("SYNCMAIL_TEST_PW", password)
        .env("RUST_BACKTRACE", "full")
        .output()
        .unwrap();
    let mut all = out.stdout;
    all.extend_from_slice(&out.stderr);
    (out.status.success(), all)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_secret_in_any_output_or_state_file() {
    let dv = Dovecot::start(Options { messages: 20, password: Some(GOOD.into()), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let env_source = "password-env = \"SYNCMAIL_TEST_PW\"";
    let good = config(root, "good", dv.port_tls, "implicit", Some(&dv.ca_file()), env_source);
    let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();

    // Successful syncs, in each output mode, with the protocol trace (the most verbose).
    for args in [&["--json", "-v", "sync"][..], &["-v", "sync"], &["--quiet", "-v", "sync"], &["sync"]] {
        let (ok, out) = run(&good, GOOD, args);
        assert!(ok, "{}", String::from_utf8_lossy(&out));
        outputs.push((format!("good {args:?}"), out));
    }
    syncmail_testkit::assert_store_matches(&dv, &root.join("good/mail"));

    // A wrong password, over STARTTLS and over plain loopback (LOGIN and AUTHENTICATE).
    for (name, port, tls) in [("wrongtls", dv.port_plain, "starttls"), ("wrongplain", dv.port_plain, "none")] {
        let conf = config(root, name, port, tls, Some(&dv.ca_file()), env_source);
        for args in [&["--json", "-v", "sync"][..], &["-v", "sync"]] {
            let (ok, out) = run(&conf, WRONG, args);
            assert!(!ok);
            assert!(
                String::from_utf8_lossy(&out).contains("login as test failed"),
                "{}",
                String::from_utf8_lossy(&out)
            );
            outputs.push((format!("{name} {args:?}"), out));
        }
    }
    let conf = config(root, "loginmech", dv.port_plain, "none", None, &format!("{env_source}\nauth-mech = \"login\""));
    let (ok, out) = run(&conf, WRONG, &["--json", "-v", "sync"]);
    assert!(!ok);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("LOGIN (credentials hidden)"), "the trace does not show the login: {text}");
    outputs.push(("LOGIN command".into(), out));

    // A hostile server that quotes the credentials back in its refusal, raw and encoded.
    let echo = ScriptedServer::start(Script::default().with_hook(|r, w| {
        if r.command != "AUTHENTICATE" && r.command != "LOGIN" {
            return Action::Normal;
        }
        let _ = w.write_all(
            format!(
                "* OK you sent {}\r\n{} NO [AUTHENTICATIONFAILED] you sent {} for {GOOD}\r\n",
                r.args, r.tag, r.args
            )
            .as_bytes(),
        );
        Action::Replied
    }));
    for (name, mech) in [("echoplain", "plain"), ("echologin", "login")] {
        let conf = config(root, name, echo.port, "none", None, &format!("{env_source}\nauth-mech = \"{mech}\""));
        let (ok, out) = run(&conf, GOOD, &["--json", "-v", "sync"]);
        assert!(!ok);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("you sent") && text.contains("password hidden"), "{text}");
        assert!(text.contains("\"event\":\"trace\"") && text.contains("S: * OK you sent"), "{text}");
        outputs.push((name.into(), out));
    }

    // A password-command that prints the secret and then fails.
    let conf = config(
        root,
        "cmdfail",
        dv.port_tls,
        "implicit",
        Some(&dv.ca_file()),
        "password-command = \"printf '%s\\\\n' \\\"$SYNCMAIL_TEST_PW\\\"; echo broken >&2; exit 1\"",
    );
    let (ok, out) = run(&conf, GOOD, &["sync"]);
    assert!(!ok);
    assert!(String::from_utf8_lossy(&out).contains("password-command failed"), "{}", String::from_utf8_lossy(&out));
    outputs.push(("failing password-command".into(), out));

    // The state and store files of every account.
    let mut files = Vec::new();
    files_under(root, &mut files);
    for f in files.iter().filter(|f| f.extension().is_none_or(|e| e != "toml")) {
        outputs.push((f.display().to_string(), std::fs::read(f).unwrap()));
    }
    assert!(files.iter().any(|f| f.to_string_lossy().contains("good/state")), "no state files were searched");

    let b64 = |pw: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0test\0{pw}"));
    let needles = [GOOD.to_string(), WRONG.to_string(), b64(GOOD), b64(WRONG)];
    for (what, bytes) in &outputs {
        for n in &needles {
            assert!(
                !find(bytes, n.as_bytes()),
                "a secret ({n}) appears in {what}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    assert!(outputs.len() > 20, "only {} outputs were searched", outputs.len());
}

/// Runs `syncmail --json sync` inside a private D-Bus session with an unlocked GNOME
/// Keyring that holds `secret` under service=syncmail-test user=test.
fn run_with_keyring(home: &Path, conf: &Path, secret: &str) -> (bool, String) {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
        assert!(
            Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output().unwrap().status.success(),
            "{tool} is missing: scripts/install-deps.sh installs dbus, gnome-keyring and libsecret-tools"
        );
    }
    std::fs::create_dir_all(home.join(".local/share/keyrings")).unwrap();
    let script = r#"
        eval "$(printf keyring-pw | gnome-keyring-daemon --unlock --components=secrets)" >/dev/null
        eval "$(gnome-keyring-daemon --start --components=secrets)" >/dev/null
        printf %s "$KR_SECRET" | secret-tool store --label=syncmail service syncmail-test user test
        exec "$SYNCMAIL" -c "$CONF" --json sync
    "#;
    // The keyring daemon leaves with the session's bus when dbus-run-session ends.
    let out = Command::new("timeout")
        .args(["120", "dbus-run-session", "--", "sh", "-c", script])
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("KR_SECRET", secret)
        .env("SYNCMAIL", env!("CARGO_BIN_EXE_syncmail"))
        .env("CONF", conf)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_password_comes_from_the_desktop_keyring() {
    const KR: &str = "Kr-secret-5150-keyring";
    let dv = Dovecot::start(Options { messages: 5, password: Some(KR.into()), ..Default::default() });
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let source = "password-keyring = { service = \"syncmail-test\", user = \"test\" }";
    let conf = config(root, "kr", dv.port_tls, "implicit", Some(&dv.ca_file()), source);
    let (ok, out) = run_with_keyring(&root.join("home"), &conf, KR);
    assert!(ok, "{out}");
    assert!(!out.contains(KR));
    syncmail_testkit::assert_store_matches(&dv, &root.join("kr/mail"));

    // An item that is not there: the error says how to store it.
    let missing = "password-keyring = { service = \"syncmail-test\", user = \"nobody\" }";
    let conf = config(root, "krmissing", dv.port_tls, "implicit", Some(&dv.ca_file()), missing);
    let (ok, out) = run_with_keyring(&root.join("home2"), &conf, KR);
    assert!(!ok);
    assert!(out.contains("secret-tool store --label=syncmail service syncmail-test user nobody"), "{out}");
}
