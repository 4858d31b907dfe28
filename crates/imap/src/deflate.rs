//! COMPRESS=DEFLATE (RFC 4978): the state of one compressed connection, both ways.
//!
//! RFC 4978 §3: after the tagged OK of `COMPRESS DEFLATE`, every byte either side sends is
//! raw DEFLATE (RFC 1951: no zlib header, no checksum), one stream per direction for the
//! rest of the connection. The layer sits between TLS and the response reader in
//! [`crate::conn::Connection`]: it never sees lines or literals, so the reader's limits
//! apply to the inflated bytes exactly as they do without compression.
//!
//! Sending: each batch the client writes ends with a sync flush (RFC 4978 §4 asks the
//! sender to flush so the peer can act on what it has), so a command is never held back
//! in the compressor while the client waits for its answer.
//!
//! Receiving: the inflater is only ever given room for one read buffer, so a small input
//! that inflates to a great deal (a decompression bomb) comes out one buffer at a time
//! and meets the reader's line, literal and response limits like any other data. What
//! the inflater still holds (input not yet inflated, or output that did not fit) is
//! known, so a wait for the server's next word (IDLE) looks there before the socket.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::io;

/// The sizes of what a compressed connection carried, both ways, since compression
/// began. The `_wire` counts are compressed bytes (after TLS decryption, before TLS
/// encryption); the others are the protocol as the client reads and writes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressStats {
    /// Compressed bytes received from the server.
    pub received_wire: u64,
    /// What those inflated to.
    pub received: u64,
    /// Protocol bytes the client sent.
    pub sent: u64,
    /// What they compressed to on the wire.
    pub sent_wire: u64,
}

/// Compressed input not yet inflated above this size while the inflater produces
/// nothing means the stream is not DEFLATE worth waiting for.
const MAX_IDLE_INPUT: usize = 1 << 20;

/// One direction's chunk of work: compressed output is written in pieces of this size.
const CHUNK: usize = 64 << 10;

pub(crate) struct Deflate {
    /// The client's stream to the server.
    tx: Compress,
    /// The server's stream to the client.
    rx: Decompress,
    /// Compressed bytes received and not yet inflated: `input[pos..]`.
    input: Vec<u8>,
    pos: usize,
    /// The last inflate filled all the room it was given: the inflater may hold more
    /// output without any more input.
    more: bool,
    /// The server ended its DEFLATE stream (a final block): nothing can follow.
    ended: bool,
    /// Compressed output before it is written.
    out: Vec<u8>,
    stats: CompressStats,
}

impl Deflate {
    /// A fresh pair of streams, the compressed bytes already received after the
    /// server's OK (`early`) waiting to be inflated first.
    pub(crate) fn new(early: &[u8]) -> Deflate {
        Deflate {
            tx: Compress::new(Compression::default(), false),
            rx: Decompress::new(false),
            input: early.to_vec(),
            pos: 0,
            more: false,
            ended: false,
            out: vec![0; CHUNK],
            stats: CompressStats { received_wire: early.len() as u64, ..Default::default() },
        }
    }

    pub(crate) fn stats(&self) -> CompressStats {
        self.stats
    }

    /// Compresses `data`, ending with a sync flush, and hands the compressed bytes to
    /// `write` in pieces of at most [`CHUNK`] bytes.
    pub(crate) fn compress(&mut self, data: &[u8], write: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut rest = data;
        loop {
            let (in0, out0) = (self.tx.total_in(), self.tx.total_out());
            let flush = if rest.is_empty() { FlushCompress::Sync } else { FlushCompress::None };
            self.tx.compress(rest, &mut self.out, flush).map_err(|e| io::Error::other(format!("deflate: {e}")))?;
            let consumed = (self.tx.total_in() - in0) as usize;
            let produced = (self.tx.total_out() - out0) as usize;
            rest = &rest[consumed..];
            if produced > 0 {
                write(&self.out[..produced])?;
            }
            self.stats.sent += consumed as u64;
            self.stats.sent_wire += produced as u64;
            // The flush is complete once it leaves room to spare in the output.
            if rest.is_empty() && flush == FlushCompress::Sync && produced < self.out.len() {
                return Ok(());
            }
        }
    }

    /// Whether inflating could give bytes without reading the socket.
    pub(crate) fn has_pending(&self) -> bool {
        self.pos < self.input.len() || self.more
    }

    /// Inflates what is buffered into `dst`; 0 when more input is needed.
    pub(crate) fn inflate(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let (in0, out0) = (self.rx.total_in(), self.rx.total_out());
        let status = self.rx.decompress(&self.input[self.pos..], dst, FlushDecompress::None).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, format!("the server's compressed stream is corrupt: {e}"))
        })?;
        self.pos += (self.rx.total_in() - in0) as usize;
        let produced = (self.rx.total_out() - out0) as usize;
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        }
        self.more = produced == dst.len();
        self.stats.received += produced as u64;
        if status == Status::StreamEnd {
            self.ended = true;
        }
        if produced == 0 {
            if self.ended {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server ended its compressed stream (RFC 4978 allows no end)",
                ));
            }
            if self.input.len() - self.pos > MAX_IDLE_INPUT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the server sent over 1 MiB of compressed data that inflates to nothing",
                ));
            }
        }
        Ok(produced)
    }

    /// Room at the end of the input for `n` more compressed bytes; [`Deflate::received`]
    /// then says how many arrived.
    pub(crate) fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.input.len();
        self.input.resize(old + n, 0);
        &mut self.input[old..]
    }

    /// Of the room [`Deflate::spare`] gave (`asked` bytes), `got` were filled.
    pub(crate) fn received(&mut self, asked: usize, got: usize) {
        let len = self.input.len() - asked + got;
        self.input.truncate(len);
        self.stats.received_wire += got as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inflates everything `d` can give from `wire`, fed in pieces of `step` bytes.
    fn inflate_all(d: &mut Deflate, wire: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        for piece in wire.chunks(step) {
            let room = d.spare(piece.len());
            room.copy_from_slice(piece);
            d.received(piece.len(), piece.len());
            loop {
                let n = d.inflate(&mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn what_one_side_compresses_the_other_inflates_batch_by_batch() {
        let mut client = Deflate::new(b"");
        let mut server = Deflate::new(b"");
        let mut received = Vec::new();
        let batches: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("S{i} UID FETCH {i}:* (FLAGS BODY.PEEK[])\r\n").repeat(i % 7 + 1).into_bytes())
            .collect();
        let mut expected = 0;
        for batch in &batches {
            expected += batch.len();
            let mut wire = Vec::new();
            client
                .compress(batch, &mut |b| {
                    wire.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            // The sync flush: every batch inflates whole from its own bytes, even fed
            // one byte at a time; nothing waits for the next batch.
            received.extend(inflate_all(&mut server, &wire, 1));
            assert_eq!(received.len(), expected);
            assert!(!server.has_pending());
        }
        assert_eq!(received, batches.concat());
        let s = client.stats();
        assert_eq!(s.sent, batches.concat().len() as u64);
        assert!(s.sent_wire < s.sent / 2, "{s:?}");
        assert_eq!(server.stats().received, s.sent);
        assert_eq!(server.stats().received_wire, s.sent_wire);
    }

    #[test]
    fn a_bomb_comes_out_one_buffer_at_a_time() {
        let mut server = Deflate::new(b"");
        let mut wire = Vec::new();
        let zeros = vec![0u8; 8 << 20];
        server
            .compress(&zeros, &mut |b| {
                wire.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
        assert!(wire.len() < 64 << 10, "{} bytes", wire.len());
        let mut client = Deflate::new(&wire);
        let mut buf = vec![0u8; 4096];
        let n = client.inflate(&mut buf).unwrap();
        assert_eq!(n, buf.len());
        // More is held, and said to be: a wait for data must not go to the socket.
        assert!(client.has_pending());
        let mut total = n;
        while client.has_pending() {
            total += client.inflate(&mut buf).unwrap();
        }
        assert_eq!(total, zeros.len());
    }

    #[test]
    fn garbage_and_an_ended_stream_are_errors() {
        let mut d = Deflate::new(&[0xff; 64]);
        let e = d.inflate(&mut [0u8; 256]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        // A final empty stored block: the stream is over.
        let mut d = Deflate::new(&[0x01, 0x00, 0x00, 0xff, 0xff]);
        let e = d.inflate(&mut [0u8; 256]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }
}
