//! The MLLP frame codec: `<VT> message <FS><CR>`, bounded and tolerant.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{Error, ErrorKind};

/// Start block, `<VT>`.
pub const START: u8 = 0x0b;
/// End block, `<FS>`.
pub const END: u8 = 0x1c;
/// The carriage return after the end block.
pub const CR: u8 = 0x0d;

/// Default maximum frame length: 16 MiB (a result with a base64 PDF fits).
pub const DEFAULT_MAX_LENGTH: usize = 16 * 1024 * 1024;

/// Why bytes on the wire are not a message. The raw bytes travel with the
/// reason in [`Frame::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// Bytes other than white space before a start block.
    JunkBeforeStart,
    /// A new start block before the end block of the previous frame.
    Unterminated,
    /// A frame longer than the maximum length; only its first
    /// `max_length` bytes are kept, the rest is skipped up to the end block.
    TooLong,
    /// The connection ended inside a frame.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::JunkBeforeStart => "bytes before the MLLP start block",
            FrameError::Unterminated => "MLLP frame without end block",
            FrameError::TooLong => "MLLP frame over the maximum length",
            FrameError::Truncated => "connection closed inside an MLLP frame",
        })
    }
}

/// One decoded unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The content of a well-formed frame (without `<VT>`, `<FS>`, `<CR>`).
    Message(Bytes),
    /// Bytes that are not a frame, kept for quarantine.
    Invalid {
        /// The bytes as read (at most `max_length` of them).
        raw: Bytes,
        /// Why.
        reason: FrameError,
    },
}

/// MLLP framing as a tokio-util [`Decoder`]/[`Encoder`] with a maximum length.
///
/// Tolerant where senders are known to be sloppy (white space or junk before
/// `<VT>`, a missing `<CR>` after `<FS>`), bounded everywhere: memory never
/// exceeds the maximum length plus one read, and nothing is silently
/// dropped: junk, overlong and truncated frames come out as
/// [`Frame::Invalid`] with their bytes.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// use transport::mllp::{Frame, FrameError, MllpCodec};
///
/// let mut codec = MllpCodec::new(1024);
/// let mut buf = BytesMut::new();
/// codec.encode(&b"MSH|^~\\&|A\r"[..], &mut buf)?;
/// assert_eq!(&buf[..], b"\x0bMSH|^~\\&|A\r\x1c\r");
///
/// // junk before the start block is kept, the frame after it still decodes
/// let mut wire = BytesMut::from(&b"oops\x0bMSH|^~\\&|B\r\x1c"[..]);
/// assert_eq!(
///     codec.decode(&mut wire)?,
///     Some(Frame::Invalid { raw: "oops".into(), reason: FrameError::JunkBeforeStart })
/// );
/// assert_eq!(codec.decode(&mut wire)?, Some(Frame::Message("MSH|^~\\&|B\r".into())));
/// # Ok::<(), transport::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MllpCodec {
    max_length: usize,
    /// Bytes of the current frame already searched for `<FS>`.
    scanned: usize,
    /// Discarding the rest of an overlong frame up to its end block.
    discarding: bool,
    /// The previous frame ended at `<FS>` with no byte after it yet: drop
    /// one leading `<CR>`.
    skip_cr: bool,
}

impl Default for MllpCodec {
    fn default() -> MllpCodec {
        MllpCodec::new(DEFAULT_MAX_LENGTH)
    }
}

impl MllpCodec {
    /// A codec that refuses frames longer than `max_length` bytes of content.
    pub fn new(max_length: usize) -> MllpCodec {
        MllpCodec { max_length, scanned: 0, discarding: false, skip_cr: false }
    }

    /// The maximum content length.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    fn invalid(raw: Bytes, reason: FrameError) -> Option<Frame> {
        Some(Frame::Invalid { raw, reason })
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

impl Decoder for MllpCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        loop {
            if self.skip_cr && !buf.is_empty() {
                if buf[0] == CR {
                    buf.advance(1);
                }
                self.skip_cr = false;
            }
            if self.discarding {
                match memchr::memchr(END, buf) {
                    Some(p) => {
                        buf.advance(p + 1);
                        self.discarding = false;
                        self.skip_cr = true;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] != START {
                let junk_end = memchr::memchr(START, buf);
                let end = junk_end.unwrap_or(buf.len());
                if buf[..end].iter().all(|&b| is_space(b)) {
                    buf.advance(end);
                    if junk_end.is_none() {
                        return Ok(None);
                    }
                    continue;
                }
                if junk_end.is_none() && end <= self.max_length {
                    // The start block may still come; wait for it (or EOF).
                    return Ok(None);
                }
                let take = end.min(self.max_length);
                let raw = buf.split_to(take).freeze();
                return Ok(MllpCodec::invalid(raw, FrameError::JunkBeforeStart));
            }
            // Inside a frame: buf[0] == START.
            let from = self.scanned.max(1);
            let hit = buf[from..].iter().position(|&b| b == END || b == START).map(|p| p + from);
            match hit {
                Some(p) if buf[p] == END => {
                    self.scanned = 0;
                    if p - 1 > self.max_length {
                        let raw = Bytes::copy_from_slice(&buf[1..=self.max_length]);
                        buf.advance(p + 1);
                        self.skip_cr = true;
                        return Ok(MllpCodec::invalid(raw, FrameError::TooLong));
                    }
                    let mut frame = buf.split_to(p + 1);
                    frame.advance(1);
                    frame.truncate(p - 1);
                    self.skip_cr = true;
                    return Ok(Some(Frame::Message(frame.freeze())));
                }
                Some(p) => {
                    // A new start block inside an open frame.
                    self.scanned = 0;
                    let raw = buf.split_to(p).freeze();
                    return Ok(MllpCodec::invalid(raw, FrameError::Unterminated));
                }
                None => {
                    if buf.len() - 1 > self.max_length {
                        let raw = Bytes::copy_from_slice(&buf[1..=self.max_length]);
                        buf.clear();
                        self.scanned = 0;
                        self.discarding = true;
                        return Ok(MllpCodec::invalid(raw, FrameError::TooLong));
                    }
                    self.scanned = buf.len();
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        self.scanned = 0;
        self.discarding = false;
        if buf.is_empty() {
            return Ok(None);
        }
        let raw = buf.split().freeze();
        if raw.iter().all(|&b| is_space(b)) {
            return Ok(None);
        }
        let reason = if raw[0] == START { FrameError::Truncated } else { FrameError::JunkBeforeStart };
        Ok(MllpCodec::invalid(raw, reason))
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), Error> {
        if item.len() > self.max_length {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!("message of {} bytes over the MLLP maximum of {}", item.len(), self.max_length),
            ));
        }
        if item.contains(&START) || item.contains(&END) {
            return Err(Error::new(ErrorKind::Protocol, "message contains an MLLP block character"));
        }
        dst.reserve(item.len() + 3);
        dst.put_u8(START);
        dst.extend_from_slice(item);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

impl Encoder<Bytes> for MllpCodec {
    type Error = Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), Error> {
        self.encode(&item[..], dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Frame {
        Frame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn bad(s: &[u8], reason: FrameError) -> Frame {
        Frame::Invalid { raw: Bytes::copy_from_slice(s), reason }
    }

    /// Decodes `wire` whole, then byte by byte: both must give `expected`.
    fn check(max: usize, wire: &[u8], expected: &[Frame]) {
        let mut codec = MllpCodec::new(max);
        let mut buf = BytesMut::from(wire);
        let mut got = Vec::new();
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, expected, "whole: {wire:?}");

        let mut codec = MllpCodec::new(max);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in wire {
            buf.put_u8(b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            got.push(f);
        }
        assert_eq!(got, expected, "byte by byte: {wire:?}");
    }

    #[test]
    fn table() {
        let cases: &[(&str, usize, &[u8], Vec<Frame>)] = &[
            ("one frame", 100, b"\x0bMSH|A\r\x1c\r", vec![msg("MSH|A\r")]),
            ("two frames", 100, b"\x0bM1\x1c\r\x0bM2\x1c\r", vec![msg("M1"), msg("M2")]),
            ("missing final CR", 100, b"\x0bM1\x1c\x0bM2\x1c", vec![msg("M1"), msg("M2")]),
            ("LF after frame", 100, b"\x0bM1\x1c\r\n\x0bM2\x1c\r\n", vec![msg("M1"), msg("M2")]),
            ("white space before start", 100, b"\r\n  \x0bM1\x1c\r", vec![msg("M1")]),
            ("junk before start", 100, b"xx\x0bM1\x1c\r", vec![bad(b"xx", FrameError::JunkBeforeStart), msg("M1")]),
            (
                "unterminated frame then a good one",
                100,
                b"\x0bM1\x0bM2\x1c\r",
                vec![bad(b"\x0bM1", FrameError::Unterminated), msg("M2")],
            ),
            ("truncated at EOF", 100, b"\x0bM1\x1c\r\x0bM2", vec![msg("M1"), bad(b"\x0bM2", FrameError::Truncated)]),
            ("unframed message", 100, b"MSH|A\r", vec![bad(b"MSH|A\r", FrameError::JunkBeforeStart)]),
            (
                "too long, then a good one",
                4,
                b"\x0b123456789\x1c\r\x0bM2\x1c\r",
                vec![bad(b"1234", FrameError::TooLong), msg("M2")],
            ),
            ("exactly max", 4, b"\x0b1234\x1c\r", vec![msg("1234")]),
            ("empty frame", 4, b"\x0b\x1c\r", vec![msg("")]),
        ];
        for (name, max, wire, expected) in cases {
            eprintln!("case: {name}");
            check(*max, wire, expected);
        }
    }

    #[test]
    fn memory_is_bounded_while_discarding() {
        let mut codec = MllpCodec::new(8);
        let mut buf = BytesMut::from(&b"\x0b0123456789"[..]);
        assert!(matches!(codec.decode(&mut buf).unwrap(), Some(Frame::Invalid { reason: FrameError::TooLong, .. })));
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 1000]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
        }
        buf.extend_from_slice(b"\x1c\r\x0bOK\x1c\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(msg("OK")));
    }

    #[test]
    fn encode_refuses_overlong_and_block_bytes() {
        let mut codec = MllpCodec::new(3);
        let mut buf = BytesMut::new();
        let e = codec.encode(&b"1234"[..], &mut buf).unwrap_err();
        assert_eq!(e.to_string(), "message of 4 bytes over the MLLP maximum of 3");
        let e = codec.encode(&b"a\x1c"[..], &mut buf).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
    }
}
