//! Placeholders: what a message downloaded headers-only (`HEADERS_ONLY`, or larger than the
//! account's `max-size`) looks like in the Maildir until its body is fetched.
//!
//! A placeholder is the server's header section (`BODY.PEEK[HEADER]`, line ends made LF)
//! with exactly these changes, so that any mail reader lists it with its subject, sender
//! and date, and shows the note as plain text:
//! - the fields `Content-Type`, `Content-Transfer-Encoding` and `X-Syncmail-Placeholder`
//!   are removed (with their continuation lines): a multipart type would make the note
//!   unreadable;
//! - three fields are added at the end: `X-Syncmail-Placeholder: 1; size=N; id=UNIQUE`
//!   (the marker, with the whole message's size and the unique name the placeholder was
//!   written under: a placeholder that lost its state row is still refused for upload, and
//!   one a mail reader copied under another name is still recognized as moved), `Content-Type: text/plain; charset=us-ascii`,
//!   `Content-Transfer-Encoding: 7bit`;
//! - the body is a short note saying the body is not downloaded yet, its size, and the
//!   `syncmail fetch` command that brings it.
//!
//! The file has the unique name the full message keeps; fetching the body replaces it
//! in place (see `engine::fetch`).

use super::message::{header, without_fields};

/// The field that marks a placeholder.
pub const MARKER: &str = "X-Syncmail-Placeholder";

/// The fields of the server's header that a placeholder does not keep.
const DROPPED: &[&str] = &["Content-Type", "Content-Transfer-Encoding", MARKER];

/// Builds the placeholder (LF line ends) of a message of `size` bytes on the server, from
/// its header section as the server sent it. `fetch_hint` is the command that fetches it.
pub fn build(header_section: &[u8], size: u64, unique: &str, fetch_hint: &str) -> Vec<u8> {
    let mut head = syncmail_maildir::crlf_to_lf(header_section);
    // The section ends with the empty line that separates it from the body (RFC 3501
    // §6.4.5 HEADER): cut it, and any other trailing line ends, before adding fields.
    while head.last() == Some(&b'\n') {
        head.pop();
    }
    let mut out = without_fields(&head, DROPPED);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(
        format!(
            "{MARKER}: 1; size={size}; id={unique}\nContent-Type: text/plain; charset=us-ascii\nContent-Transfer-Encoding: 7bit\n\n\
             [syncmail] The body of this message is not downloaded yet ({} on the server).\n\
             To download it, run:\n\n    {fetch_hint}\n\n\
             It then replaces this text in place, with the same flags.\n",
            human_size(size)
        )
        .as_bytes(),
    );
    out
}

/// Whether a message's text (LF or CRLF) is a placeholder: its header has the marker.
pub fn is_placeholder(data: &[u8]) -> bool {
    header(data, MARKER).is_some()
}

/// The size of the whole message a placeholder stands for, from its marker field.
pub fn declared_size(data: &[u8]) -> Option<u64> {
    marker_param(data, "size")?.parse().ok()
}

/// The unique name a placeholder was written under, from its marker field: it names the
/// message even when a mail reader copies the file under another name.
pub fn declared_id(data: &[u8]) -> Option<String> {
    marker_param(data, "id").filter(|v| !v.is_empty())
}

fn marker_param(data: &[u8], key: &str) -> Option<String> {
    let v = header(data, MARKER)?;
    v.split(';').find_map(|p| Some(p.trim().strip_prefix(key)?.strip_prefix('=')?.to_string()))
}

fn human_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// The shell command that fetches one message's body; the folder is quoted for a shell.
pub fn fetch_command(account: &str, folder: &str, uid: u32) -> String {
    format!("syncmail fetch -a {} {} {uid}", shell_quote(account), shell_quote(folder))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/@+=".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_header_becomes_plain_text_and_keeps_the_rest() {
        let head = b"From: A <a@example.org>\r\nSubject: Hello\r\nContent-Type: multipart/mixed;\r\n \
                     boundary=\"xyz\"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
        let p = build(head, 5_000_000, "123.M4P5.host", "syncmail fetch -a work INBOX 7");
        let text = String::from_utf8(p.clone()).unwrap();
        assert!(text.starts_with("From: A <a@example.org>\nSubject: Hello\nMIME-Version: 1.0\n"), "{text}");
        assert!(!text.contains("multipart") && !text.contains("boundary") && !text.contains("8bit"), "{text}");
        assert_eq!(header(&p, "Content-Type").as_deref(), Some("text/plain; charset=us-ascii"));
        assert_eq!(header(&p, "Subject").as_deref(), Some("Hello"));
        assert!(text.contains("4.8 MiB") && text.contains("syncmail fetch -a work INBOX 7"), "{text}");
        assert!(is_placeholder(&p));
        assert!(!is_placeholder(head));
        assert_eq!(declared_size(&p), Some(5_000_000));
        assert_eq!(declared_id(&p).as_deref(), Some("123.M4P5.host"));
        assert_eq!(declared_size(head), None);
        // One empty line between header and note, none lost, none doubled.
        assert_eq!(text.matches("\n\n").count(), 3, "{text}");
    }

    #[test]
    fn a_dropped_last_field_leaves_no_empty_line_in_the_header() {
        let p = build(b"Subject: x\r\nContent-Type: text/plain\r\n\r\n", 10, "u", "f");
        let text = String::from_utf8(p).unwrap();
        assert!(
            text.starts_with("Subject: x\nX-Syncmail-Placeholder: 1; size=10; id=u\nContent-Type: text/plain;"),
            "{text}"
        );
    }

    #[test]
    fn a_marker_from_the_server_is_not_kept_twice() {
        let p = build(b"Subject: x\nX-Syncmail-Placeholder: forged\n\n", 10, "u", "f");
        assert_eq!(String::from_utf8(p).unwrap().matches(MARKER).count(), 1);
    }

    #[test]
    fn fetch_command_quotes_for_a_shell() {
        assert_eq!(fetch_command("work", "INBOX", 3), "syncmail fetch -a work INBOX 3");
        assert_eq!(fetch_command("work", "Don't panic", 3), "syncmail fetch -a work 'Don'\\''t panic' 3");
    }
}
