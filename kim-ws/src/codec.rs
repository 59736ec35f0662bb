//! Websocket frames (RFC 6455 section 5), for both ends of a connection.
//!
//! The reader checks each header completely before it reserves room for the payload, unmasks
//! the payload in place in the read buffer and splits it off as `Bytes`: a message that arrives
//! in one frame reaches the listener without a copy. Fragmented messages are reassembled, with
//! control frames allowed between fragments, and text is validated as UTF-8 fragment by
//! fragment, so a bad byte fails the message as soon as its fragment arrives. A compressed
//! message (RSV1, with permessage-deflate negotiated) is inflated whole, under the size limit.
//! This is the reading side of [`WsStream`]; the writing side is in `writer.rs`, the state
//! both share in `stream.rs`.

use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use kim_core::{CloseReason, Frame, FrameReader, OpCode, ReadError};
use tokio::io::AsyncRead;

use crate::deflate::{InflateError, Inflater};
use crate::stream::{limit, FragmentedMessage, Role, WsStream};

/// RSV1: set on the first frame of a compressed message (RFC 7692 section 6).
pub(crate) const RSV1: u8 = 0x40;

/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

fn protocol(reason: impl Into<std::borrow::Cow<'static, str>>) -> ReadError {
    ReadError::Protocol(CloseReason::protocol(reason))
}

fn invalid_utf8(what: &'static str) -> ReadError {
    ReadError::Protocol(CloseReason::new(CloseReason::INVALID_PAYLOAD, what))
}

/// XORs `data` with the 4-byte `mask`, as if `data` started `offset` bytes into the masked
/// payload. Works a machine word at a time.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let (head, mid, tail) = split_aligned(data);
    // `head` (shorter than 8 bytes) shifts the mask's phase for the rest.
    for (i, b) in head.iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
    m.rotate_left(head.len() % 4);
    let word = u32::from_ne_bytes(m) as u64;
    let wide = word | (word << 32);
    for chunk in mid.chunks_exact_mut(8) {
        let v = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in tail.iter_mut().enumerate() {
        *b ^= m[i % 4];
    }
}

/// Splits a slice into a head (to 8-byte alignment), a middle of whole 8-byte words, and a
/// tail, without unsafe code.
fn split_aligned(data: &mut [u8]) -> (&mut [u8], &mut [u8], &mut [u8]) {
    let misalign = data.as_ptr() as usize % 8;
    let head_len = if misalign == 0 {
        0
    } else {
        (8 - misalign).min(data.len())
    };
    let (head, rest) = data.split_at_mut(head_len);
    let mid_len = rest.len() - rest.len() % 8;
    let (mid, tail) = rest.split_at_mut(mid_len);
    (head, mid, tail)
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    fin: bool,
    /// RSV1 on a data frame: the message is compressed.
    compressed: bool,
    op: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
    header_len: usize,
}

/// Parses a header from the front of `buf`. `Ok(None)` when more bytes are needed. Every
/// check that can fail on the header alone is made here, before the payload is read.
/// `deflate` says whether permessage-deflate was negotiated, which gives RSV1 a meaning on
/// a message's first frame.
fn parse_header(
    buf: &[u8],
    role: Role,
    max: usize,
    partial_len: Option<usize>,
    deflate: bool,
) -> Result<Option<FrameHeader>, ReadError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let op = match OpCode::from_u8(b0 & 0x0f) {
        Some(op) => op,
        None => return Err(protocol(format!("reserved opcode {}", b0 & 0x0f))),
    };
    let compressed = b0 & RSV1 != 0;
    if b0 & 0x30 != 0 || (compressed && !deflate) {
        return Err(protocol("reserved bits set without a negotiated extension"));
    }
    if compressed && !matches!(op, OpCode::Text | OpCode::Binary) {
        return Err(protocol("RSV1 set on a control or continuation frame"));
    }
    let fin = b0 & 0x80 != 0;
    if op.is_control() && !fin {
        return Err(protocol("fragmented control frame"));
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(protocol("client frame is not masked")),
        (Role::Client, true) => return Err(protocol("server frame is masked")),
        _ => {}
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u16::from_be_bytes([b[0], b[1]]) as u64, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(protocol("payload length has its most significant bit set"));
            }
            (len, 10)
        }
        n => (n as u64, 2),
    };
    if op.is_control() && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(protocol("control frame payload over 125 bytes"));
    }
    if len > max as u64 {
        return Err(ReadError::Protocol(CloseReason::too_big(format!(
            "frame of {len} bytes exceeds the limit of {max}"
        ))));
    }
    if let Some(so_far) = partial_len {
        if !op.is_control() && so_far as u64 + len > max as u64 {
            return Err(ReadError::Protocol(CloseReason::too_big(format!(
                "message of more than {} bytes exceeds the limit of {max}",
                so_far as u64 + len
            ))));
        }
    }
    let mask = if masked {
        let Some(b) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([b[0], b[1], b[2], b[3]])
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        compressed,
        op,
        mask,
        len: len as usize,
        header_len: at,
    }))
}

/// Checks the UTF-8 of `data[from..]`, allowing an incomplete sequence at the end unless this
/// is the last fragment. Returns how far the data is known to be valid.
fn check_utf8(data: &[u8], from: usize, last: bool) -> Result<usize, ReadError> {
    match std::str::from_utf8(&data[from..]) {
        Ok(_) => Ok(data.len()),
        Err(e) if e.error_len().is_none() && !last => Ok(from + e.valid_up_to()),
        Err(_) => Err(invalid_utf8("text is not valid UTF-8")),
    }
}

/// True for close codes an endpoint may send (RFC 6455 7.4 and the IANA registry).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a close frame's payload: empty, or a valid code and a UTF-8 reason.
fn check_close(payload: &[u8]) -> Result<(), ReadError> {
    match payload.len() {
        0 => Ok(()),
        1 => Err(protocol("close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(protocol(format!("invalid close code {code}")));
            }
            std::str::from_utf8(&payload[2..])
                .map(|_| ())
                .map_err(|_| invalid_utf8("close reason is not valid UTF-8"))
        }
    }
}

/// Decodes a close payload already checked by the reader.
pub fn decode_close(payload: &[u8]) -> CloseReason {
    if payload.len() < 2 {
        return CloseReason::new(CloseReason::NO_STATUS, "");
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    CloseReason::new(code, String::from_utf8_lossy(&payload[2..]).into_owned())
}

impl<IO> WsStream<IO> {
    /// Inflates a whole compressed message under the size limit and checks text once
    /// inflated.
    fn inflate(&mut self, op: OpCode, payload: &[u8]) -> Result<Frame, ReadError> {
        let inflater = self
            .inflater
            .as_mut()
            .expect("RSV1 is accepted only with deflate");
        let max = self.max as usize;
        let data = Inflater::inflate(inflater, payload, max).map_err(|e| match e {
            InflateError::TooBig => ReadError::Protocol(CloseReason::too_big(format!(
                "compressed message inflates past the limit of {} bytes",
                self.max
            ))),
            InflateError::Invalid => ReadError::Protocol(CloseReason::new(
                CloseReason::INVALID_PAYLOAD,
                "invalid permessage-deflate data",
            )),
        })?;
        if op == OpCode::Text {
            check_utf8(&data, 0, true)?;
        }
        Ok(Frame::new(op, data.freeze()))
    }

    /// True if the frame with this header carries text whose validity can be checked on its
    /// own: a text frame, or a continuation of text that does not end mid-character.
    fn checks_text_early(&self, h: &FrameHeader) -> bool {
        match h.op {
            OpCode::Text => !h.compressed,
            OpCode::Continuation => self
                .partial
                .as_ref()
                .is_some_and(|p| p.op == OpCode::Text && !p.compressed && p.valid == p.data.len()),
            _ => false,
        }
    }

    /// Decodes the next frame from the buffer: `Ok(Err(n))` when `n` more bytes are needed.
    fn decode(&mut self) -> Result<Result<Frame, usize>, ReadError> {
        loop {
            let buf = self.rbuf.buf();
            let partial_len = self.partial.as_ref().map(|p| p.data.len());
            let deflate = self.inflater.is_some();
            let max = self.max as usize;
            let Some(h) = parse_header(buf, self.role, max, partial_len, deflate)? else {
                return Ok(Err(1));
            };
            let total = h.header_len + h.len;
            if buf.len() < total {
                let need = total - buf.len();
                if let Some(mask) = h.mask {
                    let done = self.unmasked as usize;
                    if buf.len() > h.header_len + done && self.checks_text_early(&h) {
                        let buf = self.rbuf.buf();
                        let start = h.header_len + done;
                        apply_mask(&mut buf[start..], mask, done);
                        let so_far = &buf[h.header_len..];
                        // Both are below the frame's length, which is within the limit.
                        self.valid = check_utf8(so_far, self.valid as usize, false)? as u32;
                        self.unmasked = so_far.len() as u32;
                    }
                }
                return Ok(Err(need));
            }
            let buf = self.rbuf.buf();
            buf.advance(h.header_len);
            let mut payload = buf.split_to(h.len);
            if let Some(mask) = h.mask {
                let done = self.unmasked as usize;
                apply_mask(&mut payload[done..], mask, done);
            }
            let valid = std::mem::take(&mut self.valid) as usize;
            self.unmasked = 0;
            match h.op {
                OpCode::Ping | OpCode::Pong => {
                    return Ok(Ok(Frame::new(h.op, payload.freeze())));
                }
                OpCode::Close => {
                    check_close(&payload)?;
                    return Ok(Ok(Frame::new(h.op, payload.freeze())));
                }
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(protocol("new message before the fragmented one ended"));
                    }
                    if h.fin {
                        if h.compressed {
                            return self.inflate(h.op, &payload).map(Ok);
                        }
                        if h.op == OpCode::Text {
                            check_utf8(&payload, valid, true)?;
                        }
                        return Ok(Ok(Frame::new(h.op, payload.freeze())));
                    }
                    let valid = if h.op == OpCode::Text && !h.compressed {
                        check_utf8(&payload, valid, false)?
                    } else {
                        0
                    };
                    self.partial = Some(Box::new(FragmentedMessage {
                        op: h.op,
                        compressed: h.compressed,
                        data: payload,
                        valid,
                    }));
                }
                OpCode::Continuation => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(protocol("continuation frame without a message to continue"));
                    };
                    p.data.extend_from_slice(&payload);
                    if p.op == OpCode::Text && !p.compressed {
                        p.valid = check_utf8(&p.data, p.valid, h.fin)?;
                    }
                    if h.fin {
                        let p = self.partial.take().expect("checked above");
                        if p.compressed {
                            return self.inflate(p.op, &p.data).map(Ok);
                        }
                        return Ok(Ok(Frame::new(p.op, p.data.freeze())));
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + Send + Unpin + 'static> FrameReader for WsStream<IO> {
    fn poll_read_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, ReadError>> {
        loop {
            // Nothing buffered: straight to the read, which takes a buffer sized for it.
            let need = if self.rbuf.is_empty() {
                1
            } else {
                match self.decode()? {
                    Ok(frame) => return Poll::Ready(Ok(Some(frame))),
                    Err(n) => n,
                }
            };
            let n = ready!(self.rbuf.poll_fill(&mut self.io, cx, need))?;
            if n == 0 {
                return Poll::Ready(if self.rbuf.is_empty() && self.partial.is_none() {
                    Ok(None)
                } else {
                    Err(ReadError::UnexpectedEof)
                });
            }
        }
    }

    fn close_reason(&self, payload: &Bytes) -> CloseReason {
        decode_close(payload)
    }

    fn set_max_message_size(&mut self, max: usize) {
        self.max = limit(max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::encode_frame;
    use kim_core::FrameWriter;
    use kim_io::ReadBuffer;

    /// A server's stream lives in every idle connection's task, which tokio rounds up to 128
    /// bytes: kim's session fits 256 only while it stays at 104 bytes over a TCP stream of 32
    /// (40 in debug builds, where mio adds a field).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_servers_stream_stays_small() {
        use tokio::net::TcpStream;
        let own = std::mem::size_of::<WsStream<TcpStream>>() - std::mem::size_of::<TcpStream>();
        assert!(own <= 72, "the stream's own state grew to {own} bytes");
    }

    fn naive_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(i + offset) % 4];
        }
    }

    #[test]
    fn word_masking_matches_byte_masking() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let backing: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..9 {
            for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 64, 131, 250] {
                for offset in 0..4 {
                    let mut a = backing.clone();
                    let mut b = backing.clone();
                    apply_mask(&mut a[start..start + len], mask, offset);
                    naive_mask(&mut b[start..start + len], mask, offset);
                    assert_eq!(a, b, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    fn masked_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        encode_frame(first, payload, Some([1, 2, 3, 4]))
    }

    fn code_of(e: ReadError) -> u16 {
        match e {
            ReadError::Protocol(r) => r.code,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn header_checks_come_before_the_payload() {
        let h = |bytes: &[u8]| parse_header(bytes, Role::Server, 1024, None, false);
        assert_eq!(code_of(h(&[0x81 | 0x40, 0x80]).unwrap_err()), 1002, "rsv1");
        assert_eq!(code_of(h(&[0x83, 0x80]).unwrap_err()), 1002, "opcode 3");
        assert_eq!(
            code_of(h(&[0x09, 0x80]).unwrap_err()),
            1002,
            "fragmented ping"
        );
        assert_eq!(code_of(h(&[0x81, 0x05]).unwrap_err()), 1002, "unmasked");
        assert_eq!(
            code_of(h(&[0x89, 0xfe, 0, 126]).unwrap_err()),
            1002,
            "ping of 126"
        );
        let huge = [0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(code_of(h(&huge).unwrap_err()), 1009);
        let msb = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(code_of(h(&msb).unwrap_err()), 1002);
        assert!(h(&[0x81]).unwrap().is_none());
        assert!(h(&[0x81, 0xfe, 0]).unwrap().is_none());
        let ok = h(&[0x81, 0x85, 1, 2, 3, 4]).unwrap().unwrap();
        assert_eq!((ok.len, ok.header_len, ok.fin), (5, 6, true));
        // A fragment that would take the message over the limit fails at its header.
        let e = parse_header(
            &[0x00, 0xfe, 0x02, 0x00],
            Role::Server,
            1024,
            Some(600),
            false,
        );
        assert_eq!(code_of(e.unwrap_err()), 1009);
        // The client side refuses masked frames.
        let e = parse_header(&[0x81, 0x85], Role::Client, 1024, None, false);
        assert_eq!(code_of(e.unwrap_err()), 1002);
    }

    #[test]
    fn utf8_is_checked_across_fragment_boundaries() {
        let euro = "€".as_bytes(); // three bytes
        assert_eq!(check_utf8(&euro[..2], 0, false).unwrap(), 0);
        assert!(check_utf8(&euro[..2], 0, true).is_err());
        assert_eq!(check_utf8(euro, 0, true).unwrap(), 3);
        // An impossible byte fails at once, even mid-message.
        assert!(check_utf8(&[b'a', 0xff], 0, false).is_err());
        assert!(check_utf8(&[0xf4, 0x90], 0, false).is_err());
    }

    #[test]
    fn close_payloads() {
        assert!(check_close(&[]).is_ok());
        assert_eq!(code_of(check_close(&[3]).unwrap_err()), 1002);
        for bad in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = bad.to_be_bytes();
            assert_eq!(code_of(check_close(&p).unwrap_err()), 1002, "{bad}");
        }
        for good in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(check_close(&good.to_be_bytes()).is_ok(), "{good}");
        }
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(&[
            0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed,
        ]);
        assert_eq!(code_of(check_close(&p).unwrap_err()), 1007);
        assert_eq!(decode_close(&[]).code, CloseReason::NO_STATUS);
        let r = decode_close(&[0x03, 0xe8, b'b', b'y', b'e']);
        assert_eq!((r.code, r.reason.as_ref()), (1000, "bye"));
    }

    #[tokio::test]
    async fn reassembles_fragments_around_a_ping_without_copying_single_frames() {
        use kim_core::FrameReaderExt;
        let mut bytes = masked_frame(0x01, b"Hel");
        bytes.extend(masked_frame(0x89, b"ping!"));
        bytes.extend(masked_frame(0x00, b"lo, "));
        bytes.extend(masked_frame(0x80, "wörld".as_bytes()));
        bytes.extend(masked_frame(0x82, &[9u8; 70_000]));
        let (mut a, b) = tokio::io::duplex(1 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut a, &bytes)
            .await
            .unwrap();
        drop(a);
        let mut r = WsStream::new(b, Role::Server, 1 << 20, ReadBuffer::new(4096));
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!((f.op, &f.payload[..]), (OpCode::Ping, &b"ping!"[..]));
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!(
            (f.op, &f.payload[..]),
            (OpCode::Text, "Hello, wörld".as_bytes())
        );
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!((f.op, f.payload.len()), (OpCode::Binary, 70_000));
        assert!(f.payload.iter().all(|&b| b == 9));
        assert!(r.read_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_utf8_fails_before_its_frame_is_complete() {
        use kim_core::FrameReaderExt;
        let mut text = "κόσμε".as_bytes().to_vec();
        text.extend_from_slice(&[0xed, 0xa0, 0x80]); // a surrogate: never valid
        text.extend_from_slice(&[b'x'; 1000]);
        let frame = masked_frame(0x81, &text);
        let (mut a, b) = tokio::io::duplex(1 << 16);
        // Only the first 40 bytes are sent; the rest never comes.
        tokio::io::AsyncWriteExt::write_all(&mut a, &frame[..40])
            .await
            .unwrap();
        let mut r = WsStream::new(b, Role::Server, 1 << 20, ReadBuffer::new(4096));
        let res = tokio::time::timeout(std::time::Duration::from_secs(5), r.read_frame()).await;
        match res {
            Ok(Err(e)) => assert_eq!(code_of(e), 1007),
            other => panic!("expected a 1007 before the frame completed, got {other:?}"),
        }

        // Valid text delivered in small pieces is unmasked once and arrives intact.
        let frame = masked_frame(0x81, "héllo wörld, κόσμε".repeat(50).as_bytes());
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let mut r = WsStream::new(b, Role::Server, 1 << 20, ReadBuffer::new(4096));
        let writer = tokio::spawn(async move {
            for piece in frame.chunks(7) {
                tokio::io::AsyncWriteExt::write_all(&mut a, piece)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
            a
        });
        let f = r.read_frame().await.unwrap().unwrap();
        assert_eq!(&f.payload[..], "héllo wörld, κόσμε".repeat(50).as_bytes());
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn client_and_server_codecs_agree() {
        use kim_core::{FrameReaderExt, FrameWriterExt};
        let (a, b) = tokio::io::duplex(1 << 20);
        // The client in halves, the server whole, as each runs.
        let (ar, aw) = tokio::io::split(a);
        let mut client_w = WsStream::new(aw, Role::Client, 0, ReadBuffer::new(0));
        let mut client_r = WsStream::new(ar, Role::Client, 1 << 20, ReadBuffer::new(4096));
        let mut server = WsStream::new(b, Role::Server, 1 << 20, ReadBuffer::new(4096));
        for len in [0usize, 1, 125, 126, 65535, 65536, 300_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            client_w.send(Frame::binary(payload.clone())).await.unwrap();
            let f = server.read_frame().await.unwrap().unwrap();
            assert_eq!(f.payload, payload, "client to server, {len} bytes");
            server.send(f).await.unwrap();
            let g = client_r.read_frame().await.unwrap().unwrap();
            assert_eq!(g.payload, payload, "server to client, {len} bytes");
        }
        let close = server.close_frame(&CloseReason::new(1000, "x".repeat(300)));
        assert_eq!(
            close.payload.len(),
            125,
            "reasons are cut to fit a control frame"
        );
        let close = server.close_frame(&CloseReason::new(CloseReason::NO_STATUS, "x"));
        assert!(close.payload.is_empty());
    }
}
