//! The response codec: one complete server response (its line, with every literal inline
//! as `{n}\r\n` followed by n bytes) becomes a [`Response`] borrowing from the buffer.
//!
//! The lexer knows nothing of commands; the parser above it knows the response forms of
//! RFC 3501 §7 and of the extensions syncmail speaks (CONDSTORE/QRESYNC RFC 7162, UIDPLUS
//! RFC 4315, ESEARCH RFC 4731, LIST-STATUS RFC 5819, OBJECTID RFC 8474). Anything else
//! untagged is kept as [`Untagged::Other`], so a new extension never breaks a sync.
//! A response it cannot read is a [`ParseError`] that carries the offending line.

use std::fmt;

/// A response the codec could not read, with the line that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What was expected.
    pub reason: String,
    /// The offending line (lossily decoded, cut to 300 bytes, literals elided).
    pub line: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in server response: {}", self.reason, self.line)
    }
}

impl std::error::Error for ParseError {}

/// One lexical value of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// An atom, possibly with a `[section]<partial>` tail, as in `BODY[HEADER]<0>`.
    Atom(&'a [u8]),
    Number(u64),
    /// A quoted string, unescaped.
    Quoted(Vec<u8>),
    Literal(&'a [u8]),
    Nil,
    List(Vec<Value<'a>>),
}

impl<'a> Value<'a> {
    pub fn as_atom(&self) -> Option<&'a [u8]> {
        match self {
            Value::Atom(a) => Some(a),
            _ => None,
        }
    }
    /// A string (atom, quoted or literal) as bytes; `None` for NIL, numbers and lists.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Atom(a) | Value::Literal(a) => Some(a),
            Value::Quoted(q) => Some(q),
            _ => None,
        }
    }
    pub fn as_number(&self) -> Option<u64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Tagged and untagged status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
    PreAuth,
    Bye,
}

/// Response codes (RFC 3501 §7.1 and extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Code {
    Alert,
    Capability(Vec<String>),
    PermanentFlags(Vec<String>),
    ReadOnly,
    ReadWrite,
    TryCreate,
    UidNext(u32),
    UidValidity(u32),
    Unseen(u32),
    HighestModSeq(u64),
    NoModSeq,
    /// RFC 4315: `[APPENDUID uidvalidity uid-set]`.
    AppendUid(u32, String),
    /// RFC 4315: `[COPYUID uidvalidity source-set dest-set]`.
    CopyUid(u32, String, String),
    Closed,
    /// RFC 8474: `[MAILBOXID (id)]`.
    MailboxId(String),
    Other(String, String),
}

/// The parts of a FETCH response that syncmail reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch<'a> {
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    pub size: Option<u64>,
    pub modseq: Option<u64>,
    pub internal_date: Option<String>,
    /// `BODY[]` (or `RFC822`): the whole message. `None` also when the server sent NIL.
    pub body: Option<&'a [u8]>,
    /// `BODY[HEADER]` (or `RFC822.HEADER`, or `BODY[HEADER.FIELDS (…)]`).
    pub header: Option<&'a [u8]>,
    /// RFC 8474 EMAILID.
    pub email_id: Option<String>,
}

/// A LIST or LSUB line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub attributes: Vec<String>,
    /// The hierarchy delimiter; `None` for a flat name space (NIL).
    pub delimiter: Option<char>,
    /// The name as the server sent it: modified UTF-7, or UTF-8 after UTF8=ACCEPT.
    pub name: Vec<u8>,
}

/// An untagged (`*`) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untagged<'a> {
    Status {
        status: Status,
        code: Option<Code>,
        text: String,
    },
    Capability(Vec<String>),
    List(ListEntry),
    Lsub(ListEntry),
    /// STATUS response: mailbox name as sent, the numeric items, and MAILBOXID (RFC 8474).
    MailboxStatus {
        name: Vec<u8>,
        items: Vec<(String, u64)>,
        mailbox_id: Option<String>,
    },
    Flags(Vec<String>),
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch {
        seq: u32,
        data: Fetch<'a>,
    },
    Search(Vec<u32>),
    /// RFC 4731 ESEARCH: the `ALL` set (as text) and `COUNT` where present.
    Esearch {
        all: Option<String>,
        count: Option<u64>,
    },
    /// RFC 7162 VANISHED, as a UID set text.
    Vanished {
        earlier: bool,
        uids: String,
    },
    Enabled(Vec<String>),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    Continue(String),
    Tagged { tag: String, status: Status, code: Option<Code>, text: String },
    Untagged(Untagged<'a>),
}

/// A printable form of a response for error messages: literals elided, cut to 300 bytes,
/// control characters shown as `\xNN` (a hostile server must not reach the terminal's
/// escape sequences through an error message).
pub fn excerpt(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = &buf[..end.min(300)];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut s = String::new();
    for c in String::from_utf8_lossy(line).chars() {
        if c.is_control() {
            s.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            s.push(c);
        }
    }
    let mut s = s.trim_end().to_string();
    if end > 300 || end < buf.len().saturating_sub(2) {
        s.push_str(" …");
    }
    s
}

struct Lexer<'a> {
    buf: &'a [u8],
    pos: usize,
    /// How deep in parentheses: bounded, so hostile nesting cannot exhaust the stack.
    depth: usize,
}

/// Deepest nesting of parenthesized lists accepted (real responses nest a few levels).
const MAX_DEPTH: usize = 64;

type PResult<T> = Result<T, String>;

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b'[' | b']')
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }
    fn expect(&mut self, b: u8) -> PResult<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected '{}'", b as char))
        }
    }
    /// The rest of the line as text (printable: see [`text`]).
    fn rest(&mut self) -> String {
        let s = text(&self.buf[self.pos..]);
        self.pos = self.buf.len();
        s
    }
    fn atom(&mut self) -> PResult<&'a [u8]> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if is_atom_char(b) {
                self.pos += 1;
            } else if b == b'[' && self.pos > start {
                // A section: BODY[HEADER.FIELDS (A B)] keeps its spaces and parentheses.
                let close =
                    self.buf[self.pos..].iter().position(|&c| c == b']').ok_or("a '[' section is not closed")?;
                self.pos += close + 1;
            } else {
                break;
            }
        }
        if self.pos == start {
            return Err("expected an atom".into());
        }
        Ok(&self.buf[start..self.pos])
    }
    fn quoted(&mut self) -> PResult<Vec<u8>> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err("a quoted string is not closed".into()),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let c = self.buf.get(self.pos + 1).copied().ok_or("a quoted string ends in '\\'")?;
                    out.push(c);
                    self.pos += 2;
                }
                Some(b'\r' | b'\n') => return Err("a line break inside a quoted string".into()),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
    fn literal(&mut self) -> PResult<&'a [u8]> {
        self.expect(b'{')?;
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let n: usize = std::str::from_utf8(&self.buf[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a literal without a length")?;
        self.expect(b'}')?;
        self.expect(b'\r')?;
        self.expect(b'\n')?;
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("a literal is cut short")?;
        let lit = &self.buf[self.pos..end];
        self.pos = end;
        Ok(lit)
    }
    fn value(&mut self) -> PResult<Value<'a>> {
        match self.peek() {
            None => Err("unexpected end of response".into()),
            Some(b'(') => {
                if self.depth >= MAX_DEPTH {
                    return Err(format!("lists nested deeper than {MAX_DEPTH} levels"));
                }
                self.pos += 1;
                self.depth += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_spaces();
                    match self.peek() {
                        Some(b')') => {
                            self.pos += 1;
                            self.depth -= 1;
                            return Ok(Value::List(items));
                        }
                        None => return Err("a list is not closed".into()),
                        _ => items.push(self.value()?),
                    }
                }
            }
            Some(b'"') => Ok(Value::Quoted(self.quoted()?)),
            Some(b'{') => Ok(Value::Literal(self.literal()?)),
            Some(_) => {
                let a = self.atom()?;
                if a.eq_ignore_ascii_case(b"NIL") {
                    Ok(Value::Nil)
                } else if a.iter().all(|b| b.is_ascii_digit()) && a.len() <= 19 {
                    Ok(Value::Number(std::str::from_utf8(a).ok().and_then(|s| s.parse().ok()).ok_or("bad number")?))
                } else {
                    Ok(Value::Atom(a))
                }
            }
        }
    }
    fn number(&mut self) -> PResult<u64> {
        self.value()?.as_number().ok_or_else(|| "expected a number".to_string())
    }
    fn astring(&mut self) -> PResult<Vec<u8>> {
        match self.value()? {
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            v => v.as_bytes().map(|b| b.to_vec()).ok_or_else(|| "expected a string".to_string()),
        }
    }
    fn words_to_end(&mut self) -> Vec<String> {
        self.rest().split_ascii_whitespace().map(str::to_string).collect()
    }
}

/// Server text as a string that is safe to show: invalid UTF-8 and control characters
/// (terminal escape sequences among them) become U+FFFD.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect()
}

fn string_list(v: &Value<'_>) -> PResult<Vec<String>> {
    match v {
        Value::List(items) => Ok(items
            .iter()
            .map(|i| match i {
                Value::Number(n) => n.to_string(),
                other => text(other.as_bytes().unwrap_or(b"")),
            })
            .collect()),
        _ => Err("expected a parenthesized list".into()),
    }
}

fn to_u32(n: u64) -> PResult<u32> {
    u32::try_from(n).map_err(|_| format!("number {n} is out of range"))
}

/// Parses one response. `buf` holds the response up to and including its final CRLF
/// (which may also be missing).
pub fn parse_response(buf: &[u8]) -> Result<Response<'_>, ParseError> {
    let trimmed = buf.strip_suffix(b"\r\n").or_else(|| buf.strip_suffix(b"\n")).unwrap_or(buf);
    let mut lx = Lexer { buf: trimmed, pos: 0, depth: 0 };
    parse_inner(&mut lx).map_err(|reason| ParseError { reason, line: excerpt(buf) })
}

fn parse_inner<'a>(lx: &mut Lexer<'a>) -> PResult<Response<'a>> {
    match lx.peek() {
        Some(b'+') => {
            lx.pos += 1;
            lx.skip_spaces();
            Ok(Response::Continue(lx.rest()))
        }
        Some(b'*') => {
            lx.pos += 1;
            lx.expect(b' ')?;
            Ok(Response::Untagged(untagged(lx)?))
        }
        Some(_) => {
            let tag = text(lx.atom()?);
            lx.expect(b' ')?;
            let (status, code, text) = status_rest(lx)?;
            if matches!(status, Status::PreAuth | Status::Bye) {
                return Err("a tagged response must be OK, NO or BAD".into());
            }
            Ok(Response::Tagged { tag, status, code, text })
        }
        None => Err("an empty line".into()),
    }
}

fn status_word(w: &[u8]) -> Option<Status> {
    Some(match w.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        b"PREAUTH" => Status::PreAuth,
        b"BYE" => Status::Bye,
        _ => return None,
    })
}

fn status_rest(lx: &mut Lexer<'_>) -> PResult<(Status, Option<Code>, String)> {
    let w = lx.atom()?;
    let status = status_word(w).ok_or("expected OK, NO, BAD, PREAUTH or BYE")?;
    lx.skip_spaces();
    // The text keeps the response code: it is the server's own words, shown verbatim.
    let text_start = lx.pos;
    let code = if lx.peek() == Some(b'[') { Some(code(lx)?) } else { None };
    lx.pos = text_start;
    Ok((status, code, lx.rest()))
}

fn code(lx: &mut Lexer<'_>) -> PResult<Code> {
    lx.expect(b'[')?;
    let name = text(lx.atom()?).to_ascii_uppercase();
    let close = lx.buf[lx.pos..].iter().position(|&c| c == b']').ok_or("a response code is not closed")?;
    let inner = &lx.buf[lx.pos..lx.pos + close];
    let after = lx.pos + close + 1;
    let mut sub = Lexer { buf: inner, pos: 0, depth: 0 };
    sub.skip_spaces();
    let num = |sub: &mut Lexer<'_>| sub.number();
    let c = match name.as_str() {
        "ALERT" => Code::Alert,
        "CAPABILITY" => Code::Capability(sub.words_to_end()),
        "PERMANENTFLAGS" => Code::PermanentFlags(string_list(&sub.value()?)?),
        "READ-ONLY" => Code::ReadOnly,
        "READ-WRITE" => Code::ReadWrite,
        "TRYCREATE" => Code::TryCreate,
        "UIDNEXT" => Code::UidNext(to_u32(num(&mut sub)?)?),
        "UIDVALIDITY" => Code::UidValidity(to_u32(num(&mut sub)?)?),
        "UNSEEN" => Code::Unseen(to_u32(num(&mut sub)?)?),
        "HIGHESTMODSEQ" => Code::HighestModSeq(num(&mut sub)?),
        "NOMODSEQ" => Code::NoModSeq,
        "CLOSED" => Code::Closed,
        "APPENDUID" => {
            let v = to_u32(num(&mut sub)?)?;
            sub.skip_spaces();
            Code::AppendUid(v, text(sub.atom().or_else(|_| sub.value().map(|_| &b""[..]))?))
        }
        "COPYUID" => {
            let v = to_u32(num(&mut sub)?)?;
            sub.skip_spaces();
            let src = set_text(&mut sub)?;
            sub.skip_spaces();
            let dst = set_text(&mut sub)?;
            Code::CopyUid(v, src, dst)
        }
        "MAILBOXID" => Code::MailboxId(string_list(&sub.value()?)?.into_iter().next().unwrap_or_default()),
        _ => Code::Other(name, text(inner).trim().to_string()),
    };
    lx.pos = after;
    Ok(c)
}

/// A sequence set such as `4:7,9` lexes as a number or an atom; give it back as text.
fn set_text(lx: &mut Lexer<'_>) -> PResult<String> {
    match lx.value()? {
        Value::Number(n) => Ok(n.to_string()),
        Value::Atom(a) => Ok(text(a)),
        _ => Err("expected a UID set".into()),
    }
}

fn untagged<'a>(lx: &mut Lexer<'a>) -> PResult<Untagged<'a>> {
    // `* 23 EXISTS`, `* 5 FETCH (...)`
    if lx.peek().is_some_and(|b| b.is_ascii_digit()) {
        let n = to_u32(lx.number()?)?;
        lx.expect(b' ')?;
        let kind = text(lx.atom()?).to_ascii_uppercase();
        return Ok(match kind.as_str() {
            "EXISTS" => Untagged::Exists(n),
            "RECENT" => Untagged::Recent(n),
            "EXPUNGE" => Untagged::Expunge(n),
            "FETCH" => {
                lx.skip_spaces();
                Untagged::Fetch { seq: n, data: fetch(lx)? }
            }
            _ => Untagged::Other(format!("{n} {kind} {}", lx.rest())),
        });
    }
    let word = lx.atom()?;
    if let Some(status) = status_word(word) {
        lx.skip_spaces();
        let text_start = lx.pos;
        let code = if lx.peek() == Some(b'[') { Some(code(lx)?) } else { None };
        lx.pos = text_start;
        return Ok(Untagged::Status { status, code, text: lx.rest() });
    }
    let kind = text(word).to_ascii_uppercase();
    lx.skip_spaces();
    Ok(match kind.as_str() {
        "CAPABILITY" => Untagged::Capability(lx.words_to_end()),
        "ENABLED" => Untagged::Enabled(lx.words_to_end()),
        "LIST" => Untagged::List(list_entry(lx)?),
        "LSUB" => Untagged::Lsub(list_entry(lx)?),
        "FLAGS" => Untagged::Flags(string_list(&lx.value()?)?),
        "STATUS" => {
            let name = lx.astring()?;
            lx.skip_spaces();
            let items = match lx.value()? {
                Value::List(v) => {
                    let mut items = Vec::new();
                    let mut mailbox_id = None;
                    for pair in v.chunks(2) {
                        let [k, val] = pair else { return Err("a STATUS item without a value".into()) };
                        let k = text(k.as_bytes().ok_or("a STATUS item name")?).to_ascii_uppercase();
                        if k == "MAILBOXID" {
                            mailbox_id = string_list(val)?.into_iter().next();
                            continue;
                        }
                        items.push((k, val.as_number().ok_or("a STATUS value that is not a number")?));
                    }
                    (items, mailbox_id)
                }
                _ => return Err("expected the STATUS item list".into()),
            };
            Untagged::MailboxStatus { name, items: items.0, mailbox_id: items.1 }
        }
        "SEARCH" => {
            let mut v = Vec::new();
            while !lx.at_end() {
                lx.skip_spaces();
                if lx.at_end() {
                    break;
                }
                match lx.value()? {
                    Value::Number(n) => v.push(to_u32(n)?),
                    // `(MODSEQ 123)` at the end, RFC 7162 §3.1.5.
                    Value::List(_) => {}
                    _ => return Err("expected a number in SEARCH".into()),
                }
            }
            Untagged::Search(v)
        }
        "ESEARCH" => {
            let mut all = None;
            let mut count = None;
            while !lx.at_end() {
                lx.skip_spaces();
                if lx.at_end() {
                    break;
                }
                match lx.value()? {
                    Value::List(_) => {} // (TAG "x")
                    Value::Atom(a) if a.eq_ignore_ascii_case(b"UID") => {}
                    Value::Atom(a) => {
                        let key = text(a).to_ascii_uppercase();
                        lx.skip_spaces();
                        let val = set_text(lx)?;
                        match key.as_str() {
                            "ALL" => all = Some(val),
                            "COUNT" => count = val.parse().ok(),
                            _ => {}
                        }
                    }
                    _ => return Err("unexpected value in ESEARCH".into()),
                }
            }
            Untagged::Esearch { all, count }
        }
        "VANISHED" => {
            let mut earlier = false;
            if lx.peek() == Some(b'(') {
                let v = lx.value()?;
                earlier = string_list(&v)?.iter().any(|s| s.eq_ignore_ascii_case("EARLIER"));
                lx.skip_spaces();
            }
            Untagged::Vanished { earlier, uids: set_text(lx)? }
        }
        _ => Untagged::Other(format!("{kind} {}", lx.rest())),
    })
}

fn list_entry(lx: &mut Lexer<'_>) -> PResult<ListEntry> {
    let attributes = string_list(&lx.value()?)?;
    lx.skip_spaces();
    let delimiter = match lx.value()? {
        Value::Nil => None,
        v => {
            let b = v.as_bytes().ok_or("expected the hierarchy delimiter")?;
            match b {
                [c] => Some(*c as char),
                _ => return Err("a hierarchy delimiter must be one character".into()),
            }
        }
    };
    lx.skip_spaces();
    let name = lx.astring()?;
    // LIST-EXTENDED data such as ("CHILDINFO" ("SUBSCRIBED")) may follow; it is not needed.
    Ok(ListEntry { attributes, delimiter, name })
}

fn fetch<'a>(lx: &mut Lexer<'a>) -> PResult<Fetch<'a>> {
    let Value::List(items) = lx.value()? else { return Err("expected the FETCH item list".into()) };
    let mut f = Fetch::default();
    let mut it = items.into_iter();
    while let Some(key) = it.next() {
        let key = key.as_atom().ok_or("expected a FETCH item name")?;
        let val = it.next().ok_or("a FETCH item without a value")?;
        let upper = key.to_ascii_uppercase();
        match upper.as_slice() {
            b"UID" => f.uid = Some(to_u32(val.as_number().ok_or("UID is not a number")?)?),
            b"FLAGS" => f.flags = Some(string_list(&val)?),
            b"RFC822.SIZE" => f.size = Some(val.as_number().ok_or("RFC822.SIZE is not a number")?),
            b"MODSEQ" => {
                let l = match &val {
                    Value::List(l) => l,
                    _ => return Err("MODSEQ is not a list".into()),
                };
                f.modseq = l.first().and_then(Value::as_number);
            }
            b"INTERNALDATE" => f.internal_date = val.as_bytes().map(text),
            b"EMAILID" => f.email_id = string_list(&val)?.into_iter().next(),
            b"BODY[]" | b"RFC822" | b"BINARY[]" => f.body = body_value(val)?,
            b"BODY[HEADER]" | b"RFC822.HEADER" => f.header = body_value(val)?,
            _ => {
                // `BODY[]<0>` partial answers; header fields asked for by name. BODYSTRUCTURE,
                // ENVELOPE, X-GM-* and the like are not needed.
                if upper.starts_with(b"BODY[]<") {
                    f.body = body_value(val)?;
                } else if upper.starts_with(b"BODY[HEADER.FIELDS") {
                    f.header = body_value(val)?;
                }
            }
        }
    }
    Ok(f)
}

fn body_value(v: Value<'_>) -> PResult<Option<&[u8]>> {
    match v {
        Value::Literal(l) => Ok(Some(l)),
        Value::Nil => Ok(None),
        // A quoted body is legal but rare; it cannot borrow, so it is refused explicitly.
        Value::Quoted(_) => Err("a message body sent as a quoted string".into()),
        _ => Err("a message body that is not a string".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Response<'_> {
        parse_response(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What a server sends under NOTIFY (RFC 5465): STATUS for mailboxes other than the
    /// selected one, LIST for created, deleted and renamed mailboxes, the overflow code.
    #[test]
    fn rfc5465_notify_responses() {
        // §3.1 (as corrected by errata 2318): new mail in a mailbox not selected.
        assert_eq!(
            p(b"* STATUS misc (UIDVALIDITY 1 UIDNEXT 999)\r\n"),
            Response::Untagged(Untagged::MailboxStatus {
                name: b"misc".to_vec(),
                items: vec![("UIDVALIDITY".into(), 1), ("UIDNEXT".into(), 999)],
                mailbox_id: None
            })
        );
        // Dovecot's form for a new message: MESSAGES, UIDNEXT, UNSEEN; a quoted name in
        // modified UTF-7.
        let Response::Untagged(Untagged::MailboxStatus { name, items, .. }) =
            p(b"* STATUS \"Entw&APw-rfe\" (MESSAGES 3 UIDNEXT 4 UNSEEN 1)\r\n")
        else {
            panic!()
        };
        assert_eq!((name, items.len()), (b"Entw&APw-rfe".to_vec(), 3));
        // §5.4 MailboxName: a renamed mailbox is sent with RFC 5258's OLDNAME extended
        // data after its new name; a deleted one as \NonExistent.
        assert_eq!(
            p(b"* LIST () \"/\" \"NewMailbox\" (\"OLDNAME\" (\"OldMailbox\"))\r\n"),
            Response::Untagged(Untagged::List(ListEntry {
                attributes: vec![],
                delimiter: Some('/'),
                name: b"NewMailbox".to_vec()
            }))
        );
        assert_eq!(
            p(b"* LIST (\\NonExistent) \".\" \"INBOX.Gone\"\r\n"),
            Response::Untagged(Untagged::List(ListEntry {
                attributes: vec!["\\NonExistent".into()],
                delimiter: Some('.'),
                name: b"INBOX.Gone".to_vec()
            }))
        );
        // Notification overflow: the server gave up sending events.
        let Response::Untagged(Untagged::Status { status: Status::Ok, code: Some(Code::Other(c, _)), .. }) =
            p(b"* OK [NOTIFICATIONOVERFLOW] ...A0\r\n")
        else {
            panic!()
        };
        assert_eq!(c, "NOTIFICATIONOVERFLOW");
        // A NOTIFY SET refused with the BADEVENT code.
        let Response::Tagged { status: Status::No, code: Some(Code::Other(c, _)), .. } =
            p(b"e NO [BADEVENT (MessageNew MessageExpunge FlagChange)] not supported\r\n")
        else {
            panic!()
        };
        assert_eq!(c, "BADEVENT");
    }

    #[test]
    fn rfc3501_select_transcript() {
        // RFC 3501 §6.3.1 example responses.
        assert_eq!(p(b"* 172 EXISTS\r\n"), Response::Untagged(Untagged::Exists(172)));
        assert_eq!(
            p(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"),
            Response::Untagged(Untagged::Flags(
                ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"].map(String::from).to_vec()
            ))
        );
        assert_eq!(
            p(b"* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"),
            Response::Untagged(Untagged::Status {
                status: Status::Ok,
                code: Some(Code::UidValidity(3857529045)),
                text: "[UIDVALIDITY 3857529045] UIDs valid".into()
            })
        );
        assert_eq!(
            p(b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n"),
            Response::Untagged(Untagged::Status {
                status: Status::Ok,
                code: Some(Code::PermanentFlags(["\\Deleted", "\\Seen", "\\*"].map(String::from).to_vec())),
                text: "[PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited".into()
            })
        );
        assert_eq!(
            p(b"A142 OK [READ-WRITE] SELECT completed\r\n"),
            Response::Tagged {
                tag: "A142".into(),
                status: Status::Ok,
                code: Some(Code::ReadWrite),
                text: "[READ-WRITE] SELECT completed".into()
            }
        );
    }

    #[test]
    fn fetch_with_literal_body() {
        let r = b"* 12 FETCH (UID 4827 FLAGS (\\Seen $Junk) RFC822.SIZE 5 MODSEQ (42) BODY[] {5}\r\nhello)\r\n";
        let Response::Untagged(Untagged::Fetch { seq, data }) = p(r) else { panic!() };
        assert_eq!(seq, 12);
        assert_eq!(data.uid, Some(4827));
        assert_eq!(data.flags, Some(vec!["\\Seen".to_string(), "$Junk".to_string()]));
        assert_eq!(data.size, Some(5));
        assert_eq!(data.modseq, Some(42));
        assert_eq!(data.body, Some(&b"hello"[..]));
    }

    #[test]
    fn fetch_literal_may_hold_anything() {
        let r = b"* 1 FETCH (BODY[] {11}\r\n) ( \"{3}\r\nx UID 7)\r\n";
        let Response::Untagged(Untagged::Fetch { data, .. }) = p(r) else { panic!() };
        assert_eq!(data.body, Some(&b") ( \"{3}\r\nx"[..]));
        assert_eq!(data.uid, Some(7));
    }

    #[test]
    fn header_section_with_spaces() {
        let r = b"* 1 FETCH (UID 3 BODY[HEADER.FIELDS (FROM TO)] {2}\r\nab)\r\n";
        let Response::Untagged(Untagged::Fetch { data, .. }) = p(r) else { panic!() };
        assert_eq!(data.uid, Some(3));
        assert_eq!(data.header, Some(&b"ab"[..]));
    }

    #[test]
    fn list_and_status() {
        assert_eq!(
            p(b"* LIST (\\HasNoChildren \\Sent) \".\" \"Sent Items\"\r\n"),
            Response::Untagged(Untagged::List(ListEntry {
                attributes: vec!["\\HasNoChildren".into(), "\\Sent".into()],
                delimiter: Some('.'),
                name: b"Sent Items".to_vec()
            }))
        );
        assert_eq!(
            p(b"* LIST () NIL INBOX\r\n"),
            Response::Untagged(Untagged::List(ListEntry {
                attributes: vec![],
                delimiter: None,
                name: b"INBOX".to_vec()
            }))
        );
        assert_eq!(
            p(b"* LIST (\\HasChildren) \"/\" {4}\r\na\"b/ (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"),
            Response::Untagged(Untagged::List(ListEntry {
                attributes: vec!["\\HasChildren".into()],
                delimiter: Some('/'),
                name: b"a\"b/".to_vec()
            }))
        );
        assert_eq!(
            p(b"* STATUS \"Lists.rust\" (MESSAGES 231 UIDNEXT 44292 UIDVALIDITY 1 HIGHESTMODSEQ 7011231777)\r\n"),
            Response::Untagged(Untagged::MailboxStatus {
                name: b"Lists.rust".to_vec(),
                items: vec![
                    ("MESSAGES".into(), 231),
                    ("UIDNEXT".into(), 44292),
                    ("UIDVALIDITY".into(), 1),
                    ("HIGHESTMODSEQ".into(), 7011231777)
                ],
                mailbox_id: None,
            })
        );
        assert_eq!(
            p(b"* STATUS INBOX (UIDVALIDITY 3 MAILBOXID (F2212ea87-6097-4256-9d51-71338625))\r\n"),
            Response::Untagged(Untagged::MailboxStatus {
                name: b"INBOX".to_vec(),
                items: vec![("UIDVALIDITY".into(), 3)],
                mailbox_id: Some("F2212ea87-6097-4256-9d51-71338625".into()),
            })
        );
    }

    #[test]
    fn extensions() {
        assert_eq!(
            p(b"* VANISHED (EARLIER) 41,43:116,118\r\n"),
            Response::Untagged(Untagged::Vanished { earlier: true, uids: "41,43:116,118".into() })
        );
        assert_eq!(
            p(b"* VANISHED 405\r\n"),
            Response::Untagged(Untagged::Vanished { earlier: false, uids: "405".into() })
        );
        assert_eq!(
            p(b"* ESEARCH (TAG \"A1\") UID ALL 1:3,5 COUNT 4\r\n"),
            Response::Untagged(Untagged::Esearch { all: Some("1:3,5".into()), count: Some(4) })
        );
        assert_eq!(p(b"* SEARCH 2 84 882\r\n"), Response::Untagged(Untagged::Search(vec![2, 84, 882])));
        assert_eq!(p(b"* SEARCH\r\n"), Response::Untagged(Untagged::Search(vec![])));
        assert_eq!(
            p(b"A3 OK [APPENDUID 38505 3955] APPEND completed\r\n"),
            Response::Tagged {
                tag: "A3".into(),
                status: Status::Ok,
                code: Some(Code::AppendUid(38505, "3955".into())),
                text: "[APPENDUID 38505 3955] APPEND completed".into()
            }
        );
        assert_eq!(
            p(b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"),
            Response::Untagged(Untagged::Status {
                status: Status::Ok,
                code: Some(Code::HighestModSeq(715194045007)),
                text: "[HIGHESTMODSEQ 715194045007] Highest".into()
            })
        );
        assert_eq!(p(b"+ \r\n"), Response::Continue(String::new()));
        assert_eq!(p(b"* ENABLED QRESYNC\r\n"), Response::Untagged(Untagged::Enabled(vec!["QRESYNC".into()])));
    }

    #[test]
    fn malformed_responses_are_errors_with_the_line() {
        for bad in [
            &b"* 1 FETCH (UID\r\n"[..],
            b"* 1 FETCH (UID 99999999999)\r\n",
            b"* 1 FETCH (BODY[] {10}\r\nabc)\r\n",
            b"* LIST (\\X) \"ab\" foo\r\n",
            b"* OK [UIDNEXT x] y\r\n",
            b"A1 BYE x\r\n",
            b"* STATUS x (MESSAGES)\r\n",
            b"\r\n",
            b"* 1 FETCH (BODY[HEADER x)\r\n",
            b"* \"unterminated\r\n",
        ] {
            let e = parse_response(bad).expect_err(&String::from_utf8_lossy(bad));
            assert!(!e.line.is_empty() || bad == b"\r\n");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut r = b"* 1 FETCH (FLAGS ".to_vec();
        r.extend(std::iter::repeat_n(b'(', 100_000));
        r.extend_from_slice(b"\r\n");
        let e = parse_response(&r).unwrap_err();
        assert!(e.reason.contains("nested"), "{e}");
    }

    #[test]
    fn unknown_untagged_is_kept() {
        assert_eq!(p(b"* XWHATEVER 1 2 3\r\n"), Response::Untagged(Untagged::Other("XWHATEVER 1 2 3".into())));
        assert_eq!(p(b"* 3 XTHING\r\n"), Response::Untagged(Untagged::Other("3 XTHING ".into())));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic stand-in for fuzzing: every prefix and many mutations of
        // real responses must give Ok or Err, never a panic.
        let seeds: [&[u8]; 4] = [
            b"* 12 FETCH (UID 4827 FLAGS (\\Seen) BODY[] {5}\r\nhello)\r\n",
            b"* LIST (\\HasChildren) \"/\" {4}\r\nabcd\r\n",
            b"* OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
            b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
        ];
        let mut x: u32 = 12345;
        for s in seeds {
            for i in 0..=s.len() {
                let _ = parse_response(&s[..i]);
            }
            for _ in 0..2000 {
                let mut m = s.to_vec();
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = (x as usize) % m.len();
                m[at] = (x >> 8) as u8;
                let _ = parse_response(&m);
            }
        }
    }
}
