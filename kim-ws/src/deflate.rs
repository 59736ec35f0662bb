//! permessage-deflate's data path (RFC 7692 section 7.2): compressing a message's payload on
//! the way out and inflating it, under the message size limit, on the way in.
//!
//! Without context takeover (kim's default) a message is compressed and inflated on its own,
//! so a connection needs no compression state at all: each thread keeps one compressor per
//! window size and one decompressor, reset before every message. A thread runs one message
//! through them at a time, without awaiting in between (a fragmented message is inflated once
//! its last fragment has arrived), so sharing them is safe. Only a connection that keeps its
//! context from message to message (an option) owns a compressor or decompressor, made when
//! its first compressed message passes.
//!
//! Two crates, each where it measured best (`kim-benchmark deflate`): zlib-rs compresses (it
//! ends a message with the sync flush every browser expects, honours smaller windows, and
//! keeps a context for takeover), and inflates for a peer that keeps its context; libdeflate
//! inflates a message compressed alone in one call, about 40% faster than zlib-rs on chat
//! JSON, into a buffer grown up to the size limit.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use libdeflater::{DecompressionError, Decompressor};
use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Method, Status};

/// The end of a sync flush (an empty stored block): the sender strips it from each message
/// and the receiver appends it again before inflating (7.2.1, 7.2.2).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// [`TAIL`] and then an empty stored block marked final: a whole deflate stream for an
/// inflater that wants one (libdeflate). Anything after a final block the sender already
/// made is ignored.
const FINAL_TAIL: [u8; 9] = [0, 0, 0xff, 0xff, 0x01, 0, 0, 0xff, 0xff];

/// The smallest window kim compresses with. zlib-style compressors cannot honour 8 for raw
/// deflate (they silently use 9), so a peer that insists on 8 is declined.
pub(crate) const MIN_WINDOW_BITS: u8 = 9;

/// The largest window, 32 KiB, and the default.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// zlib's default memory level for the shared compressors: per thread, not per connection.
const SHARED_MEM_LEVEL: u8 = 8;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// It inflates to more than the message size limit; inflating stopped there.
    TooBig,
    /// It is not valid deflate data.
    Invalid,
}

thread_local! {
    /// This thread's compressors for messages compressed on their own, by window bits (9..=15).
    static COMPRESSORS: RefCell<[Option<Box<Deflate>>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    /// This thread's decompressor for messages compressed on their own (a 32 KiB window
    /// inflates whatever window the peer used).
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    /// The message being inflated, with the tail that ends its deflate stream.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn new_deflate(level: u8, window_bits: u8, mem_level: u8) -> Deflate {
    Deflate::new_with_config(DeflateConfig {
        level: i32::from(level),
        method: Method::Deflated,
        // Negative: raw deflate, no zlib header.
        window_bits: -i32::from(window_bits),
        mem_level: i32::from(mem_level),
        strategy: Default::default(),
    })
}

/// Compresses `input` as one message with a fresh context: the thread's shared compressor for
/// `window_bits`, reset first. Returns the payload to send (the sync flush's tail stripped).
pub(crate) fn compress_alone(input: &[u8], level: u8, window_bits: u8) -> Bytes {
    let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    COMPRESSORS.with(|cell| {
        let mut slots = cell.borrow_mut();
        let slot = &mut slots[usize::from(bits - MIN_WINDOW_BITS)];
        let d = slot.get_or_insert_with(|| Box::new(new_deflate(level, bits, SHARED_MEM_LEVEL)));
        d.reset();
        // A level change between messages: free after a reset, which leaves nothing pending.
        let _ = d.set_level(i32::from(level));
        compress_with(d, input)
    })
}

/// Compresses `input` into one message's payload with `d`'s context, ending with a sync flush
/// whose tail is stripped.
pub(crate) fn compress_with(d: &mut Deflate, input: &[u8]) -> Bytes {
    // Enough for incompressible data plus the flush's empty block; grown if ever not.
    let mut out = BytesMut::zeroed(zlib_rs::compress_bound(input.len()) + 16);
    let mut consumed = 0;
    let mut written = 0;
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d.compress(
            &input[consumed..],
            &mut out[written..],
            DeflateFlush::SyncFlush,
        );
        consumed += (d.total_in() - in0) as usize;
        written += (d.total_out() - out0) as usize;
        match status {
            // Done once all input is in and the output had room to spare.
            Ok(_) if consumed == input.len() && written < out.len() => break,
            Ok(_) => {
                let more = out.len().max(64);
                out.resize(out.len() + more, 0);
            }
            // Only a misconfigured stream fails, and kim configures them itself.
            Err(e) => unreachable!("deflate failed on a valid stream: {e:?}"),
        }
    }
    out.truncate(written);
    if out.ends_with(&TAIL) {
        out.truncate(written - TAIL.len());
    }
    out.freeze()
}

/// The sending side of a connection that negotiated permessage-deflate. Writers hold it in an
/// `Arc`: one shared by every connection that compresses each message alone with the same
/// settings (nothing per connection), or one of its own for a connection with a context.
pub(crate) struct Deflater {
    /// Messages shorter than this go uncompressed.
    threshold: u32,
    level: u8,
    window_bits: u8,
    /// Set when the connection keeps its context between messages: the memory level of its
    /// own compressor, made with the first compressed message.
    takeover_mem_level: Option<u8>,
    own: Option<Box<Deflate>>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("threshold", &self.threshold)
            .field("level", &self.level)
            .field("window_bits", &self.window_bits)
            .field("takeover_mem_level", &self.takeover_mem_level)
            .field("own", &self.own.is_some())
            .finish()
    }
}

impl Deflater {
    /// A sender that compresses each message on its own.
    pub(crate) fn alone(threshold: usize, level: u8, window_bits: u8) -> Deflater {
        Deflater {
            threshold: threshold.min(u32::MAX as usize) as u32,
            level,
            window_bits,
            takeover_mem_level: None,
            own: None,
        }
    }

    /// A sender that keeps its context (window and history) from message to message.
    pub(crate) fn takeover(
        threshold: usize,
        level: u8,
        window_bits: u8,
        mem_level: u8,
    ) -> Deflater {
        Deflater {
            takeover_mem_level: Some(mem_level),
            ..Deflater::alone(threshold, level, window_bits)
        }
    }

    /// The payload to send with RSV1 set, or `None` to send `input` uncompressed: it is under
    /// the threshold, or (compressing alone, with a threshold above 0) compressing did not
    /// make it smaller. A threshold of 0 compresses every message.
    pub(crate) fn deflate(this: &mut Arc<Deflater>, input: &[u8]) -> Option<Bytes> {
        if input.len() < this.threshold as usize {
            return None;
        }
        match this.takeover_mem_level {
            None => {
                let out = compress_alone(input, this.level, this.window_bits);
                (this.threshold == 0 || out.len() < input.len()).then_some(out)
            }
            // With a context, every message it saw must reach the peer compressed, or the
            // peer's window would differ from ours.
            Some(mem) => {
                let this = Arc::get_mut(this).expect("a deflater with a context is not shared");
                let (level, bits) = (this.level, this.window_bits);
                let d = this
                    .own
                    .get_or_insert_with(|| Box::new(new_deflate(level, bits, mem)));
                Some(compress_with(d, input))
            }
        }
    }

    /// The key under which what [`Deflater::deflate`] makes of a message can be shared with
    /// other connections: `None` for a connection with its own context.
    pub(crate) fn shared_key(&self) -> Option<u32> {
        if self.takeover_mem_level.is_some() {
            return None;
        }
        Some(u32::from(self.level) << 16 | u32::from(self.window_bits) << 8 | 1)
    }
}

/// The receiving side of a connection that negotiated permessage-deflate. Readers hold it in
/// an `Arc`: the one of [`Inflater::alone`], shared by every connection whose peer compresses
/// each message alone, or one of their own for a peer with a context.
pub(crate) struct Inflater {
    /// Set when the peer keeps its context between messages: the window it compresses with,
    /// and the decompressor that follows it, made with the first compressed message.
    takeover_bits: Option<u8>,
    own: Option<Box<Inflate>>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("takeover_bits", &self.takeover_bits)
            .field("own", &self.own.is_some())
            .finish()
    }
}

impl Inflater {
    /// For a peer that compresses each message on its own: one for the whole process.
    pub(crate) fn alone() -> Arc<Inflater> {
        static ALONE: OnceLock<Arc<Inflater>> = OnceLock::new();
        ALONE
            .get_or_init(|| {
                Arc::new(Inflater {
                    takeover_bits: None,
                    own: None,
                })
            })
            .clone()
    }

    /// For a peer that keeps its context, with a window of `2^window_bits` bytes.
    pub(crate) fn takeover(window_bits: u8) -> Arc<Inflater> {
        Arc::new(Inflater {
            takeover_bits: Some(window_bits.clamp(8, MAX_WINDOW_BITS)),
            own: None,
        })
    }

    /// Inflates one message's payload, stopping with [`InflateError::TooBig`] as soon as the
    /// output passes `max` bytes.
    pub(crate) fn inflate(
        this: &mut Arc<Inflater>,
        input: &[u8],
        max: usize,
    ) -> Result<BytesMut, InflateError> {
        let Some(bits) = this.takeover_bits else {
            return inflate_alone(input, max);
        };
        let this = Arc::get_mut(this).expect("an inflater with a context is not shared");
        let inf = this
            .own
            .get_or_insert_with(|| Box::new(Inflate::new(false, bits)));
        let result = inflate_with(inf, input, max);
        match result {
            // A final block or an error ends the peer's stream: the next message starts a
            // new one.
            Ok((_, true)) | Err(_) => this.own = None,
            Ok((_, false)) => {}
        }
        result.map(|(out, _)| out)
    }
}

/// Inflates a message compressed on its own with the thread's libdeflate decompressor, in one
/// call into a buffer of a first guess, grown (and the call made again) while it is too small,
/// up to `max + 1` bytes: past that, [`InflateError::TooBig`].
fn inflate_alone(input: &[u8], max: usize) -> Result<BytesMut, InflateError> {
    SCRATCH.with(|scratch| {
        let mut whole = scratch.borrow_mut();
        whole.clear();
        whole.extend_from_slice(input);
        whole.extend_from_slice(&FINAL_TAIL);
        let result = DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            let d = slot.get_or_insert_with(Decompressor::new);
            let limit = max.saturating_add(1);
            let mut out = BytesMut::zeroed(first_guess(input.len(), limit));
            loop {
                match d.deflate_decompress(&whole, &mut out) {
                    Ok(n) if n <= max => {
                        out.truncate(n);
                        return Ok(out);
                    }
                    Ok(_) => return Err(InflateError::TooBig),
                    Err(DecompressionError::InsufficientSpace) if out.len() >= limit => {
                        return Err(InflateError::TooBig)
                    }
                    Err(DecompressionError::InsufficientSpace) => {
                        let grown = out.len().saturating_mul(4).min(limit);
                        out.resize(grown, 0);
                    }
                    Err(DecompressionError::BadData) => return Err(InflateError::Invalid),
                }
            }
        });
        // A large message leaves no large scratch behind.
        if whole.capacity() > 64 * 1024 {
            *whole = Vec::new();
        }
        result
    })
}

/// The first output buffer for `input_len` compressed bytes: enough for most messages (chat
/// JSON compresses 2 to 5 times), never more than `limit`.
fn first_guess(input_len: usize, limit: usize) -> usize {
    input_len.saturating_mul(6).max(256).min(limit)
}

/// Inflates `input` and the sync flush's tail with `inf`, into at most `max` bytes. Also says
/// whether the data ended its deflate stream (a block marked final).
fn inflate_with(
    inf: &mut Inflate,
    input: &[u8],
    max: usize,
) -> Result<(BytesMut, bool), InflateError> {
    // A first guess that fits most messages; doubled as needed, never past max + 1 bytes.
    let mut out = BytesMut::zeroed(first_guess(input.len(), max.saturating_add(1)));
    let mut written = 0;
    for (chunk, flush) in [
        (input, InflateFlush::NoFlush),
        (&TAIL[..], InflateFlush::SyncFlush),
    ] {
        let mut consumed = 0;
        loop {
            let (in0, out0) = (inf.total_in(), inf.total_out());
            let status = inf
                .decompress(&chunk[consumed..], &mut out[written..], flush)
                .map_err(|_| InflateError::Invalid)?;
            let took = (inf.total_in() - in0) as usize;
            let gave = (inf.total_out() - out0) as usize;
            consumed += took;
            written += gave;
            if written > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                out.truncate(written);
                return Ok((out, true));
            }
            if written == out.len() {
                // Full: there may be more to come.
                let grown = out.len().saturating_mul(2).min(max.saturating_add(1));
                out.resize(grown, 0);
                continue;
            }
            if consumed == chunk.len() {
                break;
            }
            if took == 0 && gave == 0 {
                // Input left, room left, and no progress: the data is cut or broken.
                return Err(InflateError::Invalid);
            }
        }
    }
    out.truncate(written);
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_json(i: usize) -> String {
        format!(
            r#"{{"type":"message","room":"general","from":"alice","id":{i},"text":"hello everyone, this is message number {i} in the general room","ts":1733212800}}"#
        )
    }

    #[test]
    fn messages_compressed_alone_inflate_back() {
        let mut inf = Inflater::alone();
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            for text in ["", "a", &chat_json(7), &chat_json(1).repeat(300)] {
                let packed = compress_alone(text.as_bytes(), 6, bits);
                let back = Inflater::inflate(&mut inf, &packed, 1 << 20).unwrap();
                assert_eq!(&back[..], text.as_bytes(), "window bits {bits}");
            }
        }
        // An empty message compresses to the single byte RFC 7692 7.2.3.6 shows.
        assert_eq!(&compress_alone(b"", 6, 15)[..], &[0x00]);
    }

    #[test]
    fn the_rfc_examples_inflate() {
        // RFC 7692 7.2.3.1 and 7.2.3.2: "Hello" compressed, in one block and in two.
        let mut inf = Inflater::alone();
        let one = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            &Inflater::inflate(&mut inf, &one, 100).unwrap()[..],
            b"Hello"
        );
        // 7.2.3.3: "Hello" as a stored block with BFINAL set.
        let stored = [0x01, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(
            &Inflater::inflate(&mut inf, &stored, 100).unwrap()[..],
            b"Hello"
        );
    }

    #[test]
    fn a_context_carries_over_between_messages() {
        let mut out = Arc::new(Deflater::takeover(0, 6, 9, 1));
        let mut inf = Inflater::takeover(9);
        let msg = chat_json(3);
        let first = Deflater::deflate(&mut out, msg.as_bytes()).unwrap();
        let second = Deflater::deflate(&mut out, msg.as_bytes()).unwrap();
        assert!(
            second.len() < first.len() / 3,
            "{} then {}",
            first.len(),
            second.len()
        );
        assert_eq!(
            &Inflater::inflate(&mut inf, &first, 1 << 16).unwrap()[..],
            msg.as_bytes()
        );
        assert_eq!(
            &Inflater::inflate(&mut inf, &second, 1 << 16).unwrap()[..],
            msg.as_bytes()
        );
        // Without the first message's context, the second refers back to nothing.
        assert_eq!(
            Inflater::inflate(&mut Inflater::takeover(9), &second, 1 << 16),
            Err(InflateError::Invalid)
        );
    }

    #[test]
    fn short_or_incompressible_messages_go_uncompressed() {
        let mut d = Arc::new(Deflater::alone(64, 6, 15));
        assert!(
            Deflater::deflate(&mut d, &[b'x'; 63]).is_none(),
            "under the threshold"
        );
        assert!(Deflater::deflate(&mut d, &[b'x'; 64]).is_some());
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(Deflater::deflate(&mut d, &noise).is_none(), "not smaller");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 16 MiB of zeros compresses to about 16 KiB.
        let zeros = vec![0u8; 16 << 20];
        let packed = compress_alone(&zeros, 9, 15);
        assert!(packed.len() < 40_000, "{}", packed.len());
        let mut inf = Inflater::alone();
        assert_eq!(
            Inflater::inflate(&mut inf, &packed, 1 << 20),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            Inflater::inflate(&mut inf, &packed, (16 << 20) - 1),
            Err(InflateError::TooBig)
        );
        assert_eq!(
            Inflater::inflate(&mut inf, &packed, 16 << 20)
                .unwrap()
                .len(),
            16 << 20
        );
        // The thread's decompressor is fine for the next message.
        let msg = chat_json(1);
        let packed = compress_alone(msg.as_bytes(), 6, 15);
        assert_eq!(
            &Inflater::inflate(&mut inf, &packed, 1000).unwrap()[..],
            msg.as_bytes()
        );
    }

    #[test]
    fn broken_data_is_refused() {
        let mut inf = Inflater::alone();
        // Block type 3 is reserved.
        assert_eq!(
            Inflater::inflate(&mut inf, &[0xff, 0xff, 0xff], 1000),
            Err(InflateError::Invalid)
        );
        let msg = chat_json(2).repeat(20);
        let packed = compress_alone(msg.as_bytes(), 6, 15);
        // Cut short: the tail appended then reads as garbage or as a cut stream.
        let cut = Inflater::inflate(&mut inf, &packed[..packed.len() / 2], 1 << 20);
        assert!(cut.map_or(true, |out| out.len() < msg.len()));
        assert_eq!(
            &Inflater::inflate(&mut inf, &packed, 1 << 20).unwrap()[..],
            msg.as_bytes()
        );
    }
}
