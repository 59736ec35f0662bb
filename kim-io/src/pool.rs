//! A small per-thread cache of empty buffers. A busy connection releases its read buffer
//! whenever a read would block and takes one again with the next message; the cache turns
//! that into a pop and a push instead of a free and a malloc, while idle connections still
//! hold nothing. Bounded: at most [`MAX_POOLED`] buffers of at most [`MAX_POOLED_SIZE`] bytes
//! per thread.
//!
//! Buffers are kept boxed, the way [`ReadBuffer`](super::ReadBuffer) and
//! [`WriteBuffer`](super::WriteBuffer) hold them: taking one moves a pointer, and the box is
//! allocated only with its memory.

use std::cell::RefCell;

use bytes::BytesMut;

/// A buffer as the read and write buffers hold it: one pointer while in use, none while idle.
pub(crate) type Boxed = Box<BytesMut>;

/// Buffers kept per thread.
pub(crate) const MAX_POOLED: usize = 16;
/// The smallest buffer kept, and the least a staging buffer is given: one read's worth, so
/// that a buffer a writer gave back serves the next read. (Smaller ones, kept, would be taken
/// for a read, found too small and let go: a miss, then an allocation.)
pub(crate) const MIN_POOLED_SIZE: usize = 4096;
/// The largest buffer kept.
pub(crate) const MAX_POOLED_SIZE: usize = 64 * 1024;

thread_local! {
    static POOL: RefCell<Vec<Boxed>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with capacity for at least `min` bytes, if one is cached.
///
/// A cached buffer may still share its allocation with payloads split off it earlier, and its
/// capacity shrinks by what they took; `try_reclaim` gives the capacity back without allocating once
/// they are gone. One that cannot serve this caller (too small, or still shared) stays for
/// another.
pub(crate) fn take(min: usize) -> Option<Boxed> {
    POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        // The most recently given first (its memory is the likeliest to be in cache).
        let i = p.iter_mut().rposition(|b| b.try_reclaim(min))?;
        Some(p.remove(i))
    })
    .ok()
    .flatten()
}

/// An empty buffer with capacity for at least `min` bytes: a cached one, or a new one of `size`
/// bytes (at least `min`).
pub(crate) fn take_or_new(min: usize, size: usize) -> Boxed {
    take(min).unwrap_or_else(|| Box::new(BytesMut::with_capacity(size.max(min))))
}

/// Returns a buffer to the cache unless it is too large or the cache is full; otherwise frees
/// it (its memory, once no payload shares it).
pub(crate) fn give(mut b: Boxed) {
    b.clear();
    // Payloads split off the front took their capacity with them; `take` gets it back once they
    // are gone. Only a buffer with little capacity left is checked here, so that one that is
    // truly small is not kept.
    if b.capacity() < MIN_POOLED_SIZE / 2 && !b.try_reclaim(MIN_POOLED_SIZE) {
        return;
    }
    if b.capacity() > MAX_POOLED_SIZE {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < MAX_POOLED {
            p.push(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_after_its_payloads_are_gone_is_taken_again_whole() {
        let mut b = BytesMut::with_capacity(8192);
        b.extend_from_slice(&[7u8; 100]);
        let payload = b.split_to(100).freeze();
        let base = b.as_ptr() as usize - 100;
        drop(payload);
        give(Box::new(b));
        // A small buffer given back is not kept: it could serve no read.
        give(Box::new(BytesMut::with_capacity(16)));
        let again = take(8192).expect("the buffer is cached");
        assert_eq!(
            again.as_ptr() as usize,
            base,
            "the same memory, from its start"
        );
        assert!(again.capacity() >= 8192);
        assert!(take(1).is_none(), "nothing else was kept");
    }
}
