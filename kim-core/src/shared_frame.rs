//! A frame queued to many channels at once (a room's publish), encoded once for all of them.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::frame::Frame;

/// A frame shared by many outboxes: the frame itself, its bytes on the wire when they are the
/// same for every connection of the server's transport, and room for one more encoding that
/// the first writer needing it makes for all the others (websocket: the message compressed).
///
/// Writers receive it in [`FrameWriter::start_shared`](crate::FrameWriter::start_shared).
#[derive(Debug)]
pub struct SharedFrame {
    frame: Frame,
    wire: Option<Bytes>,
    variant: OnceLock<(u32, Bytes)>,
}

impl SharedFrame {
    /// `frame`, with `wire` from the transport's
    /// [`FrameWriter::encode_shared`](crate::FrameWriter::encode_shared).
    pub fn new(frame: Frame, wire: Option<Bytes>) -> SharedFrame {
        SharedFrame {
            frame,
            wire,
            variant: OnceLock::new(),
        }
    }

    /// The frame, for writers that encode it themselves.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Its bytes on the wire, the same for every connection (`None` when the transport
    /// encodes per connection).
    pub fn wire(&self) -> Option<&Bytes> {
        self.wire.as_ref()
    }

    /// The second encoding under `key`: made by `make` on the first call, and returned again to
    /// every writer asking with the same key. `key` names the settings the bytes depend on
    /// (say, a compression level and window); a writer asking with another key gets `None`
    /// and encodes the frame itself. Concurrent first callers wait for the one making it.
    pub fn variant(&self, key: u32, make: impl FnOnce() -> Bytes) -> Option<&Bytes> {
        let (k, bytes) = self.variant.get_or_init(|| (key, make()));
        (*k == key).then_some(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_is_made_once_per_key() {
        let s = SharedFrame::new(Frame::text("hi"), None);
        let mut made = 0;
        assert_eq!(
            s.variant(7, || {
                made += 1;
                Bytes::from_static(b"seven")
            }),
            Some(&Bytes::from_static(b"seven"))
        );
        assert_eq!(
            s.variant(7, || unreachable!()).map(|b| &b[..]),
            Some(&b"seven"[..])
        );
        assert_eq!(s.variant(8, || unreachable!()), None);
        assert_eq!(made, 1);
    }
}
