//! The byte stream under the client: TCP, optionally inside rustls, with a timeout on every
//! read and write, and a reader that returns one whole response (line plus literals).

use crate::deflate::{CompressStats, Deflate};
use crate::error::{Error, Result};
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Limits that keep a broken or hostile server from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest line (without literals) accepted.
    pub max_line: usize,
    /// Largest literal accepted (a message body, for instance).
    pub max_literal: u64,
    /// Largest whole response (lines and literals together).
    pub max_response: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_line: 16 << 20, max_literal: 1 << 30, max_response: 1 << 30 }
    }
}

/// Where large literals go instead of memory (a message body streamed to a file).
pub trait LiteralSink {
    /// Whether the literal of `len` bytes announced at the end of `line` goes to the sink.
    /// If so, the response keeps an empty literal (`{0}`) in its place.
    fn wants(&mut self, line: &[u8], len: u64) -> bool;
    /// The literal's bytes, in order, in chunks.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;
    /// The literal is complete.
    fn finish(&mut self) -> io::Result<()>;
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// Only while switching to TLS.
    Empty,
}

impl Stream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(&s.sock),
            Stream::Empty => None,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Empty => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Empty => Err(io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Empty => Ok(()),
        }
    }
}

pub struct Connection {
    stream: Stream,
    /// COMPRESS=DEFLATE, once the server agreed: between `stream` and `rbuf`.
    deflate: Option<Box<Deflate>>,
    host: String,
    /// What was read and not yet used (`rbuf[rpos..rend]`), inflated where compression is
    /// on. `rbuf` past `rend` is room for the next read, zeroed once, when first grown.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    timeout: Duration,
    limits: Limits,
    /// Bytes read from the network so far (after TLS, before inflating), for progress and
    /// for tests that check what a sync transferred.
    pub bytes_read: u64,
}

fn io_err(op: &str, e: io::Error, timeout: Duration) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            Error::Timeout { op: op.to_string(), secs: timeout.as_secs() }
        }
        _ => Error::Io { op: op.to_string(), source: e },
    }
}

/// Builds the TLS client configuration: the system's trust store plus `ca_file`.
pub fn tls_config(host: &str, ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A broken system certificate must not stop the others from loading.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Tls {
                host: host.into(),
                reason: format!("cannot read ca-file {}: {e}", path.display()),
            })?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Tls {
                host: host.into(),
                reason: format!("ca-file {} is not PEM: {e}", path.display()),
            })?;
        if certs.is_empty() {
            return Err(Error::Tls {
                host: host.into(),
                reason: format!("ca-file {} holds no certificate", path.display()),
            });
        }
        for c in certs {
            roots.add(c).map_err(|e| Error::Tls {
                host: host.into(),
                reason: format!("ca-file {}: unusable certificate: {e}", path.display()),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls { host: host.into(), reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A certificate error in words a person can act on: which host, what is wrong, what to do.
/// There is no switch to skip verification; each message says the fix instead.
fn explain_tls(host: &str, e: &io::Error) -> Error {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let reason = match inner {
        Some(rustls::Error::InvalidCertificate(c)) => {
            use rustls::CertificateError as C;
            match c {
                C::ExpiredContext { not_after, .. } => format!(
                    "the server's certificate expired on {}; the server's administrator must renew it \
                     (syncmail never connects with an expired certificate)",
                    day_of(not_after.as_secs())
                ),
                C::Expired => "the server's certificate has expired; the server's administrator must renew it \
                     (syncmail never connects with an expired certificate)"
                    .to_string(),
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "the server's certificate is not valid yet; check this machine's clock".to_string()
                }
                C::NotValidForNameContext { presented, .. } => format!(
                    "the server's certificate is not valid for the name {host} (it is for {}); set host in \
                     the [imap] section to a name the certificate is for",
                    if presented.is_empty() {
                        "no name at all".to_string()
                    } else {
                        presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
                    }
                ),
                C::NotValidForName => format!(
                    "the server's certificate is not valid for the name {host}; set host in the [imap] section \
                     to a name the certificate is for"
                ),
                C::UnknownIssuer => "the server's certificate is signed by an unknown issuer (for a private CA, \
                     set ca-file in the [imap] section to its PEM certificate)"
                    .to_string(),
                other => format!("the server's certificate is not acceptable: {other}"),
            }
        }
        Some(other) => other.to_string(),
        None => e.to_string(),
    };
    Error::Tls { host: host.into(), reason }
}

/// A presented name as webpki spells it (`DnsName("a.example")`, `IpAddress(…)`), bare.
fn bare_name(n: &str) -> &str {
    match (n.find('('), n.rfind(')')) {
        (Some(a), Some(b)) if a < b => n[a + 1..b].trim_matches('"'),
        _ => n,
    }
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for certificate dates (the civil-from-days
/// algorithm of Howard Hinnant's date library).
fn day_of(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Connection {
    pub fn connect(host: &str, port: u16, timeout: Duration, limits: Limits) -> Result<Connection> {
        let addrs: Vec<_> = (host, port)
            .to_socket_addrs()
            .map_err(|e| Error::Connect { host: host.into(), port, source: e })?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let set = |s: &TcpStream| -> io::Result<()> {
                        s.set_read_timeout(Some(timeout))?;
                        s.set_write_timeout(Some(timeout))?;
                        s.set_nodelay(true)
                    };
                    set(&s).map_err(|e| Error::Connect { host: host.into(), port, source: e })?;
                    return Ok(Connection {
                        stream: Stream::Plain(s),
                        deflate: None,
                        host: host.into(),
                        rbuf: Vec::new(),
                        rpos: 0,
                        rend: 0,
                        timeout,
                        limits,
                        bytes_read: 0,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(Error::Connect { host: host.into(), port, source: last })
    }

    /// Wraps the connection in TLS (implicit TLS right after connecting, or after STARTTLS).
    pub fn start_tls(&mut self, config: Arc<rustls::ClientConfig>) -> Result<()> {
        if self.rpos < self.rend {
            // RFC 3501 §6.2.1 / RFC 2595: data after the STARTTLS answer is an injection.
            return Err(Error::Protocol("the server sent data before the TLS handshake; refusing to continue".into()));
        }
        let name = ServerName::try_from(self.host.clone())
            .map_err(|_| Error::Tls { host: self.host.clone(), reason: "not a valid DNS name or IP address".into() })?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| Error::Tls { host: self.host.clone(), reason: e.to_string() })?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Empty) else {
            return Err(Error::Protocol("TLS is already active".into()));
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // Drive the handshake now so that certificate errors surface here, named as such.
        while tls.conn.is_handshaking() {
            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData => explain_tls(&self.host, &e),
                    _ => io_err("doing the TLS handshake", e, self.timeout),
                });
            }
        }
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Whether the peer is this machine (a loopback address), as connected, not as named.
    pub fn peer_is_loopback(&self) -> bool {
        self.stream.tcp().and_then(|t| t.peer_addr().ok()).is_some_and(|a| a.ip().is_loopback())
    }

    /// Turns COMPRESS=DEFLATE on (RFC 4978), right after the server's OK to `COMPRESS
    /// DEFLATE` was read: from the next byte on, both directions are compressed. What was
    /// read past the OK already is the start of the server's compressed stream.
    pub fn start_compress(&mut self) -> Result<()> {
        if self.deflate.is_some() {
            return Err(Error::Protocol("compression is already active".into()));
        }
        self.deflate = Some(Box::new(Deflate::new(&self.rbuf[self.rpos..self.rend])));
        self.rend = 0;
        self.rpos = 0;
        Ok(())
    }

    /// What compression carried, if it is on.
    pub fn compress_stats(&self) -> Option<CompressStats> {
        self.deflate.as_ref().map(|d| d.stats())
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        let t = self.timeout;
        let stream = &mut self.stream;
        match &mut self.deflate {
            None => stream.write_all(data),
            Some(d) => d.compress(data, &mut |b| stream.write_all(b)),
        }
        .map_err(|e| io_err("sending a command", e, t))?;
        self.stream.flush().map_err(|e| io_err("sending a command", e, t))
    }

    /// Reads at least one more byte into `rbuf` (inflated, where compression is on).
    fn fill(&mut self) -> Result<usize> {
        /// What one read may bring: into `rbuf`, or compressed into the inflater.
        const ROOM: usize = 64 << 10;
        if self.rpos > 0 && self.rpos == self.rend {
            self.rend = 0;
            self.rpos = 0;
        }
        let old = self.rend;
        if self.rbuf.len() < old + ROOM {
            self.rbuf.resize(old + ROOM, 0);
        }
        let (stream, host, timeout) = (&mut self.stream, self.host.as_str(), self.timeout);
        let bytes_read = &mut self.bytes_read;
        let rbuf = &mut self.rbuf[old..old + ROOM];
        let r = match self.deflate.as_deref_mut() {
            None => read_stream(stream, host, timeout, rbuf).inspect(|&n| *bytes_read += n as u64),
            // Inflated into `rbuf`; compressed bytes are read from the network only when the
            // inflater has nothing buffered to give.
            Some(d) => (|| loop {
                let n = d.inflate(rbuf).map_err(|e| io_err("reading a response", e, timeout))?;
                if n > 0 {
                    return Ok(n);
                }
                let got = read_stream(stream, host, timeout, d.spare(ROOM));
                d.received(ROOM, *got.as_ref().unwrap_or(&0));
                *bytes_read += got? as u64;
            })(),
        }?;
        self.rend = old + r;
        Ok(r)
    }

    /// Reads one line, up to and including its LF, into `out` (cleared first), under the
    /// line limit. For line-based protocols that share this transport (SMTP replies).
    pub fn read_line(&mut self, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.append_line(out)
    }

    /// Appends one line, up to and including its LF, to `out`, under the line limit.
    fn append_line(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let line_start = out.len();
        let too_long = |len: usize, max: usize| Error::TooLarge { what: "line", size: len as u64, limit: max as u64 };
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.rbuf[self.rpos..self.rend]) {
                // The line ends in what was read already: its length counts as much as
                // one that needed several reads (CRLF not counted).
                let len = out.len() - line_start + i + 1;
                if len > self.limits.max_line + 2 {
                    return Err(too_long(len, self.limits.max_line));
                }
                out.extend_from_slice(&self.rbuf[self.rpos..self.rpos + i + 1]);
                self.rpos += i + 1;
                return Ok(());
            }
            out.extend_from_slice(&self.rbuf[self.rpos..self.rend]);
            self.rpos = self.rend;
            if out.len() - line_start > self.limits.max_line {
                return Err(too_long(out.len() - line_start, self.limits.max_line));
            }
            self.fill()?;
        }
    }

    /// Reads one complete response into `out` (cleared first): its line, and for every
    /// line that ends in a literal announcement `{n}`, the n bytes and the line after.
    pub fn read_response(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.read_response_to(out, None)
    }

    /// [`Connection::read_response`], with the literals `sink` wants sent there in chunks
    /// instead of into `out`: memory stays bounded whatever their size.
    pub fn read_response_to(&mut self, out: &mut Vec<u8>, mut sink: Option<&mut dyn LiteralSink>) -> Result<()> {
        out.clear();
        loop {
            let line_start = out.len();
            self.append_line(out)?;
            let line = &out[line_start..];
            let Some(n) = literal_len(line) else { return Ok(()) };
            if n > self.limits.max_literal {
                return Err(Error::TooLarge { what: "literal", size: n, limit: self.limits.max_literal });
            }
            if let Some(sink) = sink.as_deref_mut()
                && sink.wants(line, n)
            {
                // The response keeps an empty literal; the bytes go to the sink.
                let open = out.iter().rposition(|&b| b == b'{').unwrap_or(out.len());
                out.truncate(open);
                out.extend_from_slice(b"{0}\r\n");
                let mut need = n;
                while need > 0 {
                    if self.rpos == self.rend {
                        self.fill()?;
                    }
                    let take = need.min((self.rend - self.rpos) as u64) as usize;
                    sink.write(&self.rbuf[self.rpos..self.rpos + take]).map_err(Error::Sink)?;
                    self.rpos += take;
                    need -= take as u64;
                }
                sink.finish().map_err(Error::Sink)?;
                continue;
            }
            let total = out.len() as u64 + n;
            if total > self.limits.max_response {
                return Err(Error::TooLarge { what: "response", size: total, limit: self.limits.max_response });
            }
            let mut need = n as usize;
            // Grow with the data actually received, not with what was announced.
            out.reserve(need.min(64 << 20));
            while need > 0 {
                if self.rpos == self.rend {
                    self.fill()?;
                }
                let take = need.min(self.rend - self.rpos);
                out.extend_from_slice(&self.rbuf[self.rpos..self.rpos + take]);
                self.rpos += take;
                need -= take;
            }
        }
    }

    /// Waits at most `wait` for data from the server; returns whether some came (or was
    /// buffered already). Nothing read is lost: it stays buffered for the next response.
    /// For IDLE, where the server may say nothing for minutes.
    /// With compression, what the inflater holds is inflated first, and only bytes that
    /// inflate to something count: a flush marker alone is no data.
    pub fn wait_readable(&mut self, wait: Duration) -> Result<bool> {
        if self.rpos < self.rend {
            return Ok(true);
        }
        let set =
            |s: &Stream, t: Duration| s.tcp().map(|tcp| tcp.set_read_timeout(Some(t.max(Duration::from_millis(1)))));
        let _ = set(&self.stream, wait);
        let r = self.fill();
        let _ = set(&self.stream, self.timeout);
        match r {
            Ok(_) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether data from the server is already buffered (used to refuse STARTTLS
    /// injection): read and not yet used, or, with compression, held by the inflater.
    pub fn has_buffered(&self) -> bool {
        self.rpos < self.rend || self.deflate.as_ref().is_some_and(|d| d.has_pending())
    }

    pub fn shutdown(&mut self) {
        if let Some(t) = self.stream.tcp() {
            let _ = t.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One read from the network into `buf`; end of stream and failures are errors.
fn read_stream(stream: &mut Stream, host: &str, timeout: Duration, buf: &mut [u8]) -> Result<usize> {
    match stream.read(buf) {
        Ok(0) => Err(Error::Io {
            op: "reading a response".into(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"),
        }),
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::InvalidData && matches!(stream, Stream::Tls(_)) => {
            Err(explain_tls(host, &e))
        }
        Err(e) => Err(io_err("reading a response", e, timeout)),
    }
}

/// `{n}\r\n` (or `{n+}` / `~{n}` forms) at the end of a line: the literal's length.
fn literal_len(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"\r\n").or_else(|| line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = &l[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::{Connection, Limits, day_of, literal_len};
    use crate::deflate::Deflate;
    use crate::error::Error;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Duration;

    /// A connection with compression on, and the other end of its socket (the peer
    /// compresses with its own [`Deflate`]; no IMAP server is involved: this tests the
    /// byte stream alone).
    fn compressed_pair(limits: Limits) -> (Connection, TcpStream, Deflate) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut c = Connection::connect("127.0.0.1", port, Duration::from_secs(5), limits).unwrap();
        let (peer, _) = l.accept().unwrap();
        c.start_compress().unwrap();
        (c, peer, Deflate::new(b""))
    }

    fn send(peer: &mut TcpStream, z: &mut Deflate, data: &[u8]) {
        z.compress(data, &mut |b| peer.write_all(b)).unwrap();
    }

    #[test]
    fn compressed_both_ways_and_waits_see_what_the_inflater_holds() {
        let (mut c, mut peer, mut z) = compressed_pair(Limits::default());
        c.write_all(b"S1 NOOP\r\n").unwrap();
        let mut wire = vec![0u8; 256];
        let n = peer.read(&mut wire).unwrap();
        let mut unz = Deflate::new(&wire[..n]);
        let mut plain = [0u8; 64];
        let m = unz.inflate(&mut plain).unwrap();
        assert_eq!(&plain[..m], b"S1 NOOP\r\n");

        // Three lines of exactly one read buffer each, in one batch: after the first is
        // read, the rest is in the inflater and nothing more comes from the socket.
        let line = |c: u8| {
            let mut l = vec![c; (64 << 10) - 2];
            l[..2].copy_from_slice(b"* ");
            l.extend_from_slice(b"\r\n");
            l
        };
        let lines = [line(b'a'), line(b'b'), line(b'c')];
        send(&mut peer, &mut z, &lines.concat());
        let mut out = Vec::new();
        for l in &lines {
            c.read_response(&mut out).unwrap();
            assert_eq!(&out, l);
            if l[2] != b'c' {
                assert!(c.wait_readable(Duration::from_millis(1)).unwrap(), "the inflater holds the next line");
            }
        }
        assert!(c.bytes_read < 4096, "{} compressed bytes for 192 KiB", c.bytes_read);
        // Nothing anywhere: the wait times out. A flush marker alone is no data either.
        assert!(!c.wait_readable(Duration::from_millis(50)).unwrap());
        send(&mut peer, &mut z, b"");
        assert!(!c.wait_readable(Duration::from_millis(50)).unwrap());
        send(&mut peer, &mut z, b"* 4 EXISTS\r\n");
        assert!(c.wait_readable(Duration::from_secs(5)).unwrap());
        c.read_response(&mut out).unwrap();
        assert_eq!(out, b"* 4 EXISTS\r\n");
        let stats = c.compress_stats().unwrap();
        assert_eq!(stats.received, 3 * (64 << 10) + 12);
        assert_eq!(stats.received_wire, c.bytes_read);
        assert_eq!(stats.sent, 9);
    }

    #[test]
    fn the_line_limit_holds_for_inflated_bytes() {
        let (mut c, mut peer, mut z) = compressed_pair(Limits { max_line: 1000, ..Limits::default() });
        // 64 MiB without a line end, a few KiB on the wire: refused after about a buffer.
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..64 {
                if rx.try_recv().is_ok() {
                    break;
                }
                z.compress(&chunk, &mut |b| peer.write_all(b)).ok();
            }
            peer
        });
        let mut out = Vec::new();
        let e = c.read_response(&mut out).unwrap_err();
        assert!(matches!(e, Error::TooLarge { what: "line", .. }), "{e}");
        assert!(out.capacity() < 1 << 20, "{} bytes held", out.capacity());
        let _ = tx.send(());
        drop(c);
        drop(writer.join().unwrap());
    }

    #[test]
    fn certificate_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_609_459_200), "2021-01-01");
        assert_eq!(day_of(951_782_400), "2000-02-29");
    }

    #[test]
    fn literal_announcements() {
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {123}\r\n"), Some(123));
        assert_eq!(literal_len(b"* 1 FETCH (BODY[] {123+}\r\n"), Some(123));
        assert_eq!(literal_len(b"* OK done\r\n"), None);
        assert_eq!(literal_len(b"* OK {}\r\n"), None);
        assert_eq!(literal_len(b"* OK {99999999999999999999}\r\n"), None);
    }
}
