//! Protocol values that say what they are.

use std::fmt;
use std::num::NonZeroU32;

/// A message UID (RFC 3501 §2.3.1.1): never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uid(pub NonZeroU32);

impl Uid {
    /// `None` for zero, which is not a UID.
    pub fn new(v: u32) -> Option<Uid> {
        NonZeroU32::new(v).map(Uid)
    }
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A password or token: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The system flags a Maildir file name can carry, plus `$Forwarded` (Maildir `P`).
/// Other keywords are kept apart as strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Flags(u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const ANSWERED: Flags = Flags(2);
    pub const FLAGGED: Flags = Flags(4);
    pub const DELETED: Flags = Flags(8);
    pub const DRAFT: Flags = Flags(16);
    pub const FORWARDED: Flags = Flags(32);
    const ALL: [(Flags, &'static str, char); 6] = [
        (Flags::SEEN, "\\Seen", 'S'),
        (Flags::ANSWERED, "\\Answered", 'R'),
        (Flags::FLAGGED, "\\Flagged", 'F'),
        (Flags::DELETED, "\\Deleted", 'T'),
        (Flags::DRAFT, "\\Draft", 'D'),
        (Flags::FORWARDED, "$Forwarded", 'P'),
    ];

    pub const fn empty() -> Flags {
        Flags(0)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn from_bits(b: u8) -> Flags {
        Flags(b & 63)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    pub fn intersection(self, other: Flags) -> Flags {
        Flags(self.0 & other.0)
    }
    pub fn difference(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    pub fn insert(&mut self, other: Flags) {
        self.0 |= other.0;
    }

    /// Adds the flag an IMAP flag atom names; returns false for keywords it does not know.
    /// Flag names are case-insensitive (RFC 3501 §2.3.2).
    pub fn insert_imap(&mut self, atom: &str) -> bool {
        for (f, name, _) in Flags::ALL {
            if atom.eq_ignore_ascii_case(name) {
                self.insert(f);
                return true;
            }
        }
        false
    }

    /// The IMAP flag list, without parentheses: `\Seen \Flagged`.
    pub fn to_imap(self) -> String {
        let mut v = Vec::new();
        for (f, name, _) in Flags::ALL {
            if self.contains(f) {
                v.push(name);
            }
        }
        v.join(" ")
    }

    /// Maildir info letters, in ASCII order as the Maildir spec asks.
    pub fn to_maildir(self) -> String {
        let mut v: Vec<char> = Flags::ALL.iter().filter(|(f, _, _)| self.contains(*f)).map(|(_, _, c)| *c).collect();
        v.sort_unstable();
        v.into_iter().collect()
    }

    /// Reads Maildir info letters; letters it does not know (Dovecot keyword letters a–z,
    /// for instance) are ignored.
    pub fn from_maildir(info: &str) -> Flags {
        let mut out = Flags::empty();
        for c in info.chars() {
            for (f, _, l) in Flags::ALL {
                if c == l {
                    out.insert(f);
                }
            }
        }
        out
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_imap())
    }
}

/// Formats sorted UIDs as a compact IMAP sequence set: `1:4,7,9:10`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Parses an IMAP sequence set of UIDs (no `*`, which a server never sends in data);
/// ranges may be written high:low (RFC 3501 §9, seq-range).
pub fn parse_uid_set(s: &str) -> Option<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.split_once(':') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        if a == 0 || b == 0 {
            return None;
        }
        out.push((a.min(b), a.max(b)));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_maildir_round_trip() {
        let mut f = Flags::empty();
        assert!(f.insert_imap("\\seen"));
        assert!(f.insert_imap("\\Flagged"));
        assert!(f.insert_imap("$Forwarded"));
        assert!(!f.insert_imap("$Junk"));
        assert_eq!(f.to_maildir(), "FPS");
        assert_eq!(Flags::from_maildir("FPSa"), f);
        assert_eq!(f.to_imap(), "\\Seen \\Flagged $Forwarded");
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[1, 2, 3, 4, 7, 9, 10]), "1:4,7,9:10");
        assert_eq!(uid_set(&[]), "");
        assert_eq!(parse_uid_set("1:4,7,10:9"), Some(vec![(1, 4), (7, 7), (9, 10)]));
        assert_eq!(parse_uid_set("1:*"), None);
        assert_eq!(parse_uid_set("0"), None);
    }

    #[test]
    fn secret_does_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
