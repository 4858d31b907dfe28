//! Property tests with arbitrary input for the configuration loader: any text, and
//! TOML made of the real keys with random values, is either a configuration or an error
//! that names the file; it never panics, and a password never appears in the error.
//! They stand in for a cargo-fuzz target (nightly only; see SECURITY.md).
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::path::Path;
use syncmail::Config;

const KEYS: [&str; 17] = [
    "maildir",
    "state-dir",
    "delete-policy",
    "trash-folder",
    "delete-guard",
    "delete-guard-min",
    "host",
    "port",
    "tls",
    "user",
    "password-env",
    "password-command",
    "ca-file",
    "timeout",
    "auth-mech",
    "allow-plaintext",
    "compress",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("\"implicit\"".to_string()),
        Just("\"none\"".to_string()),
        Just("\"trash\"".to_string()),
        Just("\"always\"".to_string()),
        Just("[\"*\", 1]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"".to_string()),
    ]
}

fn table(section: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(&KEYS[..]), value()), 0..10).prop_map(move |kv| {
        let mut t = format!("{section}\n");
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in kv {
            if seen.insert(k) {
                t.push_str(&format!("{k} = {v}\n"));
            }
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_loads_or_fails_cleanly(text in "\\PC{0,200}") {
        if let Err(e) = Config::parse(&text, Path::new("/c/config.toml")) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn real_keys_with_random_values_load_or_fail_cleanly(
        account in table("[accounts.a]"),
        imap in table("[accounts.a.imap]"),
        password in proptest::option::of(prop_oneof![
            Just("\"PASSWORD-MUST-NOT-SHOW\""),
            Just("\"PASSWORD-MUST-NOT-SHOW\" x"),
            Just("PASSWORD-MUST-NOT-SHOW"),
            Just("'PASSWORD-MUST-NOT-SHOW"),
        ]),
    ) {
        let pw = password.map(|p| format!("password = {p}\n")).unwrap_or_default();
        let text = format!("{account}{imap}{pw}");
        match Config::parse(&text, Path::new("/c/config.toml")) {
            Ok(c) => {
                for a in c.accounts.values() {
                    prop_assert!(a.imap.timeout.as_secs() >= 1);
                    prop_assert!(!format!("{a:?}").contains("PASSWORD-MUST-NOT-SHOW"), "{:?}", a);
                }
            }
            Err(e) => {
                let s = e.to_string();
                prop_assert!(!s.is_empty());
                prop_assert!(!s.contains("PASSWORD-MUST-NOT-SHOW"), "{}", s);
            }
        }
    }
}
