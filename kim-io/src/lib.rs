//! kim-io: the buffers kim's transports read and write with (kim-ws and kim-tcp use them; a
//! transport of your own may too).
//!
//! Idle connections dominate an IM gateway: tens of thousands of clients that send a heartbeat
//! a minute. A read buffer held per connection would cost more than everything else kim keeps
//! per channel, so [`ReadBuffer`] allocates when a read is attempted and gives the memory back
//! when the read would block with nothing buffered. [`WriteBuffer`] does the same once a batch
//! has been flushed, and sends a batch of frames with vectored writes.
//!
//! Even empty, a buffer's bookkeeping (a `BytesMut` is four words) would be carried by every
//! idle connection's task, so both keep their memory behind one pointer: an idle connection's
//! read buffer is 16 bytes and its write buffer 16. The boxes move through a per-thread cache
//! together with the memory they point to, so a busy connection allocates no more often than
//! if it kept them.
#![warn(missing_docs)]

mod pool;
mod read_buffer;
mod write_buffer;

pub use read_buffer::{ReadBuffer, MAX_READ_SIZE};
pub use write_buffer::{WriteBuffer, COPY_THRESHOLD};
