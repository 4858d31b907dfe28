//! Property tests with arbitrary input for the Maildir name parsers: file names (unique
//! part, info, flag letters) and folder names turned into paths. They stand in for
//! cargo-fuzz targets (nightly only; see SECURITY.md); case counts are bounded.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use std::path::Component;
use syncmail_imap::Flags;
use syncmail_maildir::{folder_path, split_name};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_file_name_splits_into_parts_of_itself(name in "\\PC{0,40}|[a-z0-9.:,]{0,30}") {
        let (unique, info) = split_name(&name);
        prop_assert!(name.starts_with(unique));
        prop_assert!(name.ends_with(info));
        prop_assert!(unique.len() + info.len() <= name.len());
        // Whatever the letters, the flags are a subset of the known ones.
        let f = Flags::from_maildir(info);
        prop_assert_eq!(Flags::from_bits(f.bits()), f);
    }

    #[test]
    fn flags_survive_a_file_name(bits in 0u8..64, unique in "[A-Za-z0-9.]{1,20}") {
        let f = Flags::from_bits(bits);
        let name = format!("{unique}:2,{}", f.to_maildir());
        let (u, info) = split_name(&name);
        prop_assert_eq!(u, unique.as_str());
        prop_assert_eq!(Flags::from_maildir(info), f);
    }

    /// A folder name, whatever it holds, becomes a path that stays below the store root,
    /// or is refused.
    #[test]
    fn folder_paths_stay_inside_the_store(
        name in "\\PC{0,30}|[./a-z\\\\]{0,12}|(\\.\\.|[a-z]|/|\\.){0,8}",
        delim in proptest::option::of(prop_oneof![Just('/'), Just('.'), Just('\\'), any::<char>()]),
    ) {
        if let Ok(p) = folder_path(&name, delim) {
            prop_assert!(p.is_relative());
            prop_assert!(p.components().count() >= 1);
            for c in p.components() {
                let Component::Normal(s) = c else { return Err(TestCaseError::fail(format!("{name:?} → {p:?}"))) };
                let s = s.to_str().unwrap();
                prop_assert!(!s.starts_with('.') && !s.is_empty() && !s.chars().any(char::is_control), "{:?} → {:?}", name, p);
                prop_assert!(!["cur", "new", "tmp"].contains(&s), "{:?} → {:?}", name, p);
            }
        }
    }
}
