//! What the engine reads from a message's bytes: line-end conversions and header values.

/// Converts bare LF line ends to CRLF, as IMAP requires of an APPENDed message
/// (RFC 3501 §2.3.1.1 treats a message as CRLF text). Existing CRLFs stay.
pub fn lf_to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 40);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// The header fields (up to the first empty line), unfolded: (name, value trimmed).
pub fn fields(data: &[u8]) -> impl Iterator<Item = (&[u8], String)> {
    let mut lines = data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).peekable();
    std::iter::from_fn(move || {
        loop {
            let line = lines.next()?;
            if line.is_empty() {
                return None;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
            while let Some(next) = lines.peek() {
                if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    value.push(' ');
                    value.push_str(String::from_utf8_lossy(next).trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some((&line[..colon], value.trim().to_string()));
        }
    })
}

/// The values of every header field `name` (case-insensitive), unfolded and trimmed.
pub fn header_all(data: &[u8], name: &str) -> Vec<String> {
    fields(data).filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v).collect()
}

/// The value of the first header field `name` (case-insensitive), unfolded and trimmed,
/// if it is not empty. Only the header section (up to the first empty line) is read.
pub fn header(data: &[u8], name: &str) -> Option<String> {
    let (_, v) = fields(data).find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))?;
    if v.is_empty() { None } else { Some(v) }
}

/// The data without the header fields named (their continuation lines included).
pub fn without_fields(data: &[u8], names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut in_header = true;
    let mut dropping = false;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if in_header {
            let bare = line.strip_suffix(b"\n").unwrap_or(line);
            let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
            if bare.is_empty() {
                in_header = false;
            } else if bare[0] == b' ' || bare[0] == b'\t' {
                if dropping {
                    continue;
                }
            } else {
                let name = bare.iter().position(|&b| b == b':').map(|c| &bare[..c]);
                dropping = name.is_some_and(|n| names.iter().any(|x| n.eq_ignore_ascii_case(x.as_bytes())));
                if dropping {
                    continue;
                }
            }
        }
        out.extend_from_slice(line);
    }
    out
}

/// The addresses (addr-specs) of an address-list header value (RFC 5322 §3.4):
/// `"Doe, J." <j@x>, k@y (Kay), team: a@b, c@d;` → j@x, k@y, a@b, c@d. Comments and
/// display names are dropped; quoted local parts are kept as written.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut chars = value.chars().peekable();
    let mut flush = |current: &mut String, angle: &mut Option<String>| {
        let a = angle.take().unwrap_or_else(|| current.trim().to_string());
        let a = a.trim().to_string();
        if a.contains('@') || (!a.is_empty() && !a.contains(char::is_whitespace)) {
            out.push(a);
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted string: copied as is, so its commas and brackets do not count.
                let mut q = String::from('"');
                while let Some(c) = chars.next() {
                    q.push(c);
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            q.push(n);
                        }
                    } else if c == '"' {
                        break;
                    }
                }
                if in_angle {
                    angle.get_or_insert_with(String::new).push_str(&q);
                } else {
                    current.push_str(&q);
                }
            }
            '(' => {
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' => in_angle = false,
            // A group's name ends at ':'; its members follow.
            ':' if !in_angle => current.clear(),
            ',' | ';' if !in_angle => flush(&mut current, &mut angle),
            c if in_angle => angle.get_or_insert_with(String::new).push(c),
            c => current.push(c),
        }
    }
    flush(&mut current, &mut angle);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf() {
        assert_eq!(lf_to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(lf_to_crlf(b""), b"");
    }

    #[test]
    fn headers() {
        let m = b"From: a\nmessage-id:\n  <x@y>\nSubject: s\n\nMessage-ID: <body@z>\n";
        assert_eq!(header(m, "Message-ID").as_deref(), Some("<x@y>"));
        assert_eq!(header(m, "subject").as_deref(), Some("s"));
        assert_eq!(header(m, "To"), None);
        assert_eq!(header(b"\nMessage-ID: <late>\n", "Message-ID"), None);
        let m = b"To: a@x\nBcc: b@y,\n c@z\nCc: d@w\nbcc: e@v\n\nBcc: body@x\n";
        assert_eq!(header_all(m, "bcc"), vec!["b@y, c@z".to_string(), "e@v".to_string()]);
        assert_eq!(without_fields(m, &["Bcc"]), b"To: a@x\nCc: d@w\n\nBcc: body@x\n");
        assert_eq!(without_fields(b"To: a\r\n\r\nx", &["Bcc"]), b"To: a\r\n\r\nx");
    }

    #[test]
    fn address_lists() {
        let v = addresses(r#""Doe, J." <j@x>, k@y (Kay, the one), team: a@b, "q,r"@c; <m@n>"#);
        assert_eq!(v, vec!["j@x", "k@y", "a@b", r#""q,r"@c"#, "m@n"]);
        assert_eq!(addresses("Alice <alice@example.org>"), vec!["alice@example.org"]);
        assert_eq!(addresses("undisclosed-recipients:;"), Vec::<String>::new());
        assert_eq!(addresses(""), Vec::<String>::new());
        assert_eq!(addresses("(only a comment)"), Vec::<String>::new());
        assert_eq!(addresses("<>"), Vec::<String>::new());
    }
}
