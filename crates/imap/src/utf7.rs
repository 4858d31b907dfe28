//! Modified UTF-7, the mailbox name encoding of IMAP4rev1 (RFC 3501 §5.1.3).
//!
//! Printable US-ASCII except `&` stands for itself; `&` is written `&-`; every other run of
//! characters is UTF-16, base64-encoded with `,` in place of `/`, between `&` and `-`.

/// Decodes a mailbox name as the server sent it. A name that is not valid modified UTF-7
/// is returned as `Err` with the reason; callers may then fall back to the raw bytes.
pub fn decode(raw: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'&' {
            let end = raw[i + 1..]
                .iter()
                .position(|&c| c == b'-')
                .ok_or_else(|| "an '&' shift is not closed by '-'".to_string())?
                + i
                + 1;
            let chunk = &raw[i + 1..end];
            if chunk.is_empty() {
                out.push('&');
            } else {
                decode_utf16_chunk(chunk, &mut out)?;
            }
            i = end + 1;
        } else if (0x20..0x7f).contains(&b) {
            out.push(b as char);
            i += 1;
        } else {
            return Err(format!("byte 0x{b:02x} is not allowed in modified UTF-7"));
        }
    }
    Ok(out)
}

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => (c - b'A') as u32,
        b'a'..=b'z' => (c - b'a') as u32 + 26,
        b'0'..=b'9' => (c - b'0') as u32 + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    })
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn decode_utf16_chunk(chunk: &[u8], out: &mut String) -> Result<(), String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut units: Vec<u16> = Vec::with_capacity(chunk.len() * 3 / 4);
    for &c in chunk {
        let v = b64_value(c).ok_or_else(|| format!("'{}' is not a base64 character", c as char))?;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 16 {
            nbits -= 16;
            units.push(((bits >> nbits) & 0xffff) as u16);
        }
    }
    // RFC 3501: leftover bits must be zero and fewer than 6 ... a sloppy encoder may
    // leave zero padding, which we accept.
    if nbits >= 6 || (bits & ((1 << nbits) - 1)) != 0 {
        return Err("base64 run has leftover bits".to_string());
    }
    let s = String::from_utf16(&units).map_err(|_| "invalid UTF-16 in shifted run".to_string())?;
    if s.chars().any(|c| (' '..='~').contains(&c)) {
        // Printable ASCII must be written directly; a shifted one is a non-canonical name.
        return Err("printable ASCII inside a shifted run".to_string());
    }
    out.push_str(&s);
    Ok(())
}

/// Encodes a UTF-8 mailbox name in modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let mut bits: u32 = 0;
        let mut nbits = 0;
        for &u in pending.iter() {
            bits = (bits << 16) | u as u32;
            nbits += 16;
            while nbits >= 6 {
                nbits -= 6;
                out.push(B64[((bits >> nbits) & 0x3f) as usize] as char);
            }
        }
        if nbits > 0 {
            out.push(B64[((bits << (6 - nbits)) & 0x3f) as usize] as char);
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_examples() {
        // RFC 3501 §5.1.3: "~peter/mail/台北/日本語"
        let raw = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        assert_eq!(decode(raw.as_bytes()).unwrap(), "~peter/mail/台北/日本語");
        assert_eq!(encode("~peter/mail/台北/日本語"), raw);
    }

    #[test]
    fn ampersand_and_umlauts() {
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode(b"Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(decode(b"Entw&APw-rfe").unwrap(), "Entwürfe");
        assert_eq!(encode("😀"), "&2D3eAA-");
        assert_eq!(decode(b"&2D3eAA-").unwrap(), "😀");
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [&b"&"[..], b"&AAA", b"a\xffb", b"&*-", b"&AGE-", b"&2D3-"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        for s in ["", "INBOX", "a&b", "日本", "x日y&z😀", "Ünïcödé/Sub"] {
            assert_eq!(decode(encode(s).as_bytes()).unwrap(), s);
        }
    }
}
