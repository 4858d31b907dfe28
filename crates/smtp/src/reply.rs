//! SMTP replies (RFC 5321 §4.2): one or more lines `NNN-text`, the last `NNN text`.

/// A whole reply: its code, the enhanced status code where the server gives one
/// (RFC 3463, `5.1.1`), and the text of all its lines joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub text: String,
}

impl Reply {
    /// 2xx: done.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 3xx: go on (354 after DATA, 334 during AUTH).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }
    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// 5xx (and anything outside 2xx-4xx): do not try again unchanged.
    pub fn is_permanent(&self) -> bool {
        !(200..500).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        write!(f, " {}", self.text)
    }
}

/// One reply line split up: (code, whether more lines follow, text). `None` when the line
/// is not a reply line.
pub fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&line[0]) {
        return None;
    }
    let code = std::str::from_utf8(&line[..3]).ok()?.parse().ok()?;
    let (more, rest) = match line.get(3) {
        None => (false, &[][..]),
        Some(b' ') => (false, &line[4..]),
        Some(b'-') => (true, &line[4..]),
        Some(_) => return None,
    };
    Some((code, more, String::from_utf8_lossy(rest).into_owned()))
}

/// Assembles a reply from its lines (all with the same code, the caller checked).
pub fn assemble(code: u16, lines: Vec<String>) -> Reply {
    let mut text = lines.join("\n");
    // RFC 2034: the enhanced code starts each line's text; keep it once, apart.
    let enhanced = enhanced_code(&text, code);
    if let Some(e) = &enhanced {
        text = lines
            .iter()
            .map(|l| l.strip_prefix(e.as_str()).map(str::trim_start).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
    }
    Reply { code, enhanced, text }
}

fn enhanced_code(text: &str, code: u16) -> Option<String> {
    let first = text.split_whitespace().next()?;
    let mut parts = first.split('.');
    let class = parts.next()?;
    let ok = class.len() == 1
        && class.as_bytes()[0] == b'0' + (code / 100) as u8
        && parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_replies() {
        assert_eq!(parse_line(b"250-smtp.test\r\n"), Some((250, true, "smtp.test".into())));
        assert_eq!(parse_line(b"250 OK\r\n"), Some((250, false, "OK".into())));
        assert_eq!(parse_line(b"354\r\n"), Some((354, false, String::new())));
        assert_eq!(parse_line(b"hello\r\n"), None);
        assert_eq!(parse_line(b"2500 x\r\n"), None);
        assert_eq!(parse_line(b"650 x\r\n"), None);
        let r = assemble(550, vec!["5.1.1 <bob@x>: no such user".into()]);
        assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(r.text, "<bob@x>: no such user");
        assert!(r.is_permanent() && !r.is_transient());
        let r = assemble(451, vec!["Try later".into()]);
        assert_eq!(r.enhanced, None);
        assert!(r.is_transient());
        // A class that does not match the code is not an enhanced code.
        assert_eq!(assemble(250, vec!["5.1.1 odd".into()]).enhanced, None);
        assert_eq!(assemble(250, vec!["2.0.0 Ok: queued".into()]).to_string(), "250 2.0.0 Ok: queued");
    }
}
