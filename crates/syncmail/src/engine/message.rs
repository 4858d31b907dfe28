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

/// The value of the first header field `name` (case-insensitive), unfolded and trimmed.
/// Only the header section (up to the first empty line) is read.
pub fn header(data: &[u8], name: &str) -> Option<String> {
    let mut lines = data.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            continue;
        }
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
        let v = value.trim().to_string();
        return if v.is_empty() { None } else { Some(v) };
    }
    None
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
    }
}
