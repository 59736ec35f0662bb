//! The process's allocator when it is not glibc's: what kim-debug asks of it, through a hook
//! the binary installs ([`set_allocator`]).
//!
//! kim-debug reads the heap's figures for `kim_heap_bytes`, gives free memory back after
//! bursts, and serves `/debug/pprof/heap` on the debug listener. With glibc's allocator the
//! first two come from glibc and there is no heap profile. A binary that makes another
//! allocator its own (jemalloc with its profiler: the `kim-heap-profile` crate) installs an
//! [`AllocatorControl`] for it at start, and kim-debug asks that instead.
//!
//! A hook rather than a cargo feature: cargo unifies features over everything built together,
//! so an allocator behind a feature of a shared crate would reach every binary of a workspace
//! build.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

/// Why a heap profile could not be taken: the HTTP status to answer and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeapProfileError {
    /// 500 for a failure, 503 when profiling is off.
    pub status: u16,
    /// What went wrong, for the operator.
    pub reason: String,
}

/// A heap profile being taken: a gzipped pprof protobuf when done.
pub type HeapProfileFuture =
    Pin<Box<dyn Future<Output = Result<Vec<u8>, HeapProfileError>> + Send>>;

/// What kim-debug asks of the process's allocator.
pub trait AllocatorControl: Send + Sync + 'static {
    /// The bytes allocated and in use, and the bytes the allocator holds without them being
    /// in use (free pages kept for later); `None` when it cannot say.
    fn stats(&self) -> Option<(u64, u64)>;
    /// Gives the free memory the allocator keeps back to the system.
    fn trim(&self);
    /// What is live on the heap now by allocating stack, as pprof's gzipped protobuf
    /// (`inuse_space` and `inuse_objects`), for `/debug/pprof/heap`.
    fn heap_profile(&self) -> HeapProfileFuture;
}

static INSTALLED: OnceLock<&'static dyn AllocatorControl> = OnceLock::new();

/// Tells kim-debug which allocator the process uses. Call it once, at start, before any server
/// starts; a second call changes nothing and returns false.
pub fn set_allocator(control: &'static dyn AllocatorControl) -> bool {
    INSTALLED.set(control).is_ok()
}

/// The allocator the binary installed, if any.
pub(crate) fn installed() -> Option<&'static dyn AllocatorControl> {
    INSTALLED.get().copied()
}

/// A heap profile of this process now, or why there is none.
pub(crate) async fn dump() -> Result<Vec<u8>, HeapProfileError> {
    match installed() {
        Some(control) => control.heap_profile().await,
        None => Err(HeapProfileError {
            status: 501,
            reason: "no heap profiler in this process: the binary must use one (link the \
                     kim-heap-profile crate and call kim_heap_profile::install() at start)"
                .into(),
        }),
    }
}
