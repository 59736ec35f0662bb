//! The permessage-deflate settings a server or client offers, and what a connection agreed.

use std::sync::Arc;

use crate::deflate::{Deflater, Inflater, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// permessage-deflate compression (RFC 7692), for [`WsUpgrader::with_compression`] and the
/// client's [`connect_compressed`].
///
/// By default each message is compressed on its own (`server_no_context_takeover;
/// client_no_context_takeover`), so a connection keeps no compression state: each runtime
/// thread has one compressor per window size and one decompressor, reset before every message.
/// An idle connection with compression costs what one without does.
///
/// [`Compression::with_context_takeover`] trades memory for ratio: the server keeps a small
/// window of what it sent, so repeated words and keys in later messages cost a few bits each.
/// That costs a compressor per connection, made with its first compressed message (see the
/// method for the figures).
///
/// Every compressed message is inflated under the connection's message size limit: one that
/// would inflate past it is refused with 1009 as soon as the limit is passed, and invalid
/// deflate data with 1007.
///
/// [`WsUpgrader::with_compression`]: crate::WsUpgrader::with_compression
/// [`connect_compressed`]: crate::connect_compressed
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub(crate) level: u8,
    pub(crate) threshold: usize,
    /// Window bits and memory level of a per-connection context, if one is kept.
    pub(crate) takeover: Option<(u8, u8)>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::new()
    }
}

impl Compression {
    /// Messages shorter than this go uncompressed by default. Measured on chat JSON
    /// (`kim-benchmark deflate`, level 6): a 1 KiB message shrinks to 37% for about 20 us of
    /// compressing, while a 200-byte one saves 44 bytes (to 76%) for 11 us, more CPU than the
    /// rest of its way through the server. Lower it where bandwidth costs more than CPU.
    pub const DEFAULT_THRESHOLD: usize = 1024;

    /// The default level: zlib's 6.
    pub const DEFAULT_LEVEL: u8 = 6;

    /// Each message compressed on its own at level 6; messages under 1 KiB uncompressed.
    pub fn new() -> Compression {
        Compression {
            level: Compression::DEFAULT_LEVEL,
            threshold: Compression::DEFAULT_THRESHOLD,
            takeover: None,
        }
    }

    /// The deflate level, 1 (fastest) to 9 (smallest); values outside are clamped.
    pub fn with_level(mut self, level: u8) -> Compression {
        self.level = level.clamp(1, 9);
        self
    }

    /// Messages shorter than `bytes` are sent uncompressed, as are those that compressing
    /// does not make smaller. 0 compresses every data message, even those that grow.
    pub fn with_threshold(mut self, bytes: usize) -> Compression {
        self.threshold = bytes;
        self
    }

    /// The server keeps its compression context between the messages it sends, in a window of
    /// `2^window_bits` bytes (9 to 15, clamped) with deflate's memory level `mem_level` (1 to
    /// 9, clamped; it sizes the match-finding tables). The client is still asked to compress
    /// each message alone, so no inflate state is kept per connection. A client that asks the
    /// server for no context takeover gets none.
    ///
    /// The compressor is made with a connection's first compressed message and lives as long
    /// as the connection. Its resident size, measured by `kim-benchmark deflate`: about
    /// 135 KiB with window bits 9 and memory level 1, 140 KiB with 11 and 2, 310 KiB with 15
    /// and 8 (zlib's defaults). zlib-rs keeps a 128 KiB hash table whatever the memory level,
    /// so a small window saves less than it would with zlib: budget over 100 KiB per
    /// connection that has sent a compressed message.
    pub fn with_context_takeover(mut self, window_bits: u8, mem_level: u8) -> Compression {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        self.takeover = Some((bits, mem_level.clamp(1, 9)));
        self
    }
}

/// What a connection agreed for permessage-deflate, as RFC 7692 names it. The server's
/// acceptor finds it in the handshake's extensions when the client's offer was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// The server compresses each message alone.
    pub server_no_context_takeover: bool,
    /// The client compresses each message alone.
    pub client_no_context_takeover: bool,
    /// The server's compression window, `2^bits` bytes.
    pub server_max_window_bits: u8,
    /// The client's compression window, `2^bits` bytes.
    pub client_max_window_bits: u8,
}

impl PerMessageDeflate {
    /// The server's `Sec-WebSocket-Extensions` value that states this agreement. The
    /// server's window is stated only when the offer named a limit (a smaller window needs no
    /// saying: any decompressor reads it); the client's only below 15.
    pub(crate) fn response(&self, server_bits_named: bool) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if server_bits_named {
            s.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_max_window_bits
            ));
        }
        if self.client_max_window_bits < MAX_WINDOW_BITS {
            s.push_str(&format!(
                "; client_max_window_bits={}",
                self.client_max_window_bits
            ));
        }
        s
    }

    /// The sending side for the server of this agreement.
    /// `alone` is the server's shared deflater for `c` at the full window, which most
    /// agreements use: it is handed out again rather than made per connection.
    pub(crate) fn server_deflater(&self, c: &Compression, alone: &Arc<Deflater>) -> Arc<Deflater> {
        let bits = self.server_max_window_bits;
        match c.takeover {
            Some((_, mem)) if !self.server_no_context_takeover => {
                Arc::new(Deflater::takeover(c.threshold, c.level, bits, mem))
            }
            _ if bits == MAX_WINDOW_BITS => alone.clone(),
            _ => Arc::new(Deflater::alone(c.threshold, c.level, bits)),
        }
    }

    /// The receiving side for the server of this agreement.
    pub(crate) fn server_inflater(&self) -> Arc<Inflater> {
        if self.client_no_context_takeover {
            Inflater::alone()
        } else {
            Inflater::takeover(self.client_max_window_bits)
        }
    }

    /// The sending side for the client: it always compresses each message alone, which any
    /// server can read.
    pub(crate) fn client_deflater(&self, c: &Compression) -> Arc<Deflater> {
        Arc::new(Deflater::alone(
            c.threshold,
            c.level,
            self.client_max_window_bits,
        ))
    }

    /// The receiving side for the client.
    pub(crate) fn client_inflater(&self) -> Arc<Inflater> {
        if self.server_no_context_takeover {
            Inflater::alone()
        } else {
            Inflater::takeover(self.server_max_window_bits)
        }
    }
}
