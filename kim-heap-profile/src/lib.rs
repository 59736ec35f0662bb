//! jemalloc as the allocator of the binary that links this crate, with its sampling heap
//! profiler compiled in, and told to kim-debug: `kim_heap_bytes` and the trims after bursts then use
//! jemalloc's figures instead of glibc's, and once the profiler is active the debug listener
//! serves `/debug/pprof/heap`.
//!
//! A binary opts in with one call at the start of `main`, before any server starts:
//!
//! ```ignore
//! kim_heap_profile::install(); // or install_with_profiler(), to sample from the start
//! ```
//!
//! Why jemalloc at all: an idle connection's largest allocations are tokio's, aligned to 128
//! bytes, and glibc serves an aligned block by cutting a larger free one, which leaves pieces
//! that later small blocks fill only in part: at 10,000 idle websocket connections glibc
//! holds about 1,130 bytes of memory per connection where jemalloc, whose size classes are
//! aligned already, holds about 740.
//!
//! The profiler is compiled in and off until asked for (`prof_active:false`): inactive, it
//! costs nothing measurable. [`install_with_profiler`] (or `MALLOC_CONF=prof_active:true` in
//! the environment) turns it on; it then samples about one allocation per 2^16 bytes
//! allocated (`lg_prof_sample:16`), recording its stack: enough samples at 10,000
//! connections of a few hundred bytes each to say where the bytes go, for one backtrace per
//! 64 KiB allocated, and about 95 bytes per idle connection at 10,000. A dump scales each
//! sample up to estimate all live bytes, as Go's heap profile does.
//! `MALLOC_CONF=lg_prof_sample:8` overrides the rate for one run: nearly every allocation
//! sampled, exact figures, for ten times the memory. jemalloc is also the C allocator
//! (`unprefixed_malloc_on_supported_platforms`), so C code such as SQLite is profiled too.
//!
//! It is a crate of its own so that only the binaries that ask for it get jemalloc: cargo
//! unifies features over everything built together, so an allocator behind a feature of a
//! shared crate would reach every binary of a workspace build.

use kim_debug::allocator::{AllocatorControl, HeapProfileError, HeapProfileFuture};

/// The allocator of every binary linking this crate.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once when it starts: the profiler ready, not sampling; and free
/// memory reused for allocations up to 1/1024 of a free range's size rather than 1/64
/// (`lg_extent_max_active_fit:10`).
///
/// The second is for memory held a while and freed in batches, as sessions hold messages
/// until a client acknowledges them: freed neighbours merge into ranges of several MiB, which
/// jemalloc would not cut into 16 KiB pieces by default. It then took fresh pages and gave the
/// merged ranges back to the system, paying a page fault for every page of every held message
/// (echo of 16 KiB messages with sessions, acknowledged every 32: 37% of the server's time in
/// page faults, and 1.5x the rate once the free ranges are reused, at half the resident memory).
#[used]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
static malloc_conf: &[u8] =
    b"prof:true,prof_active:false,lg_prof_sample:16,lg_extent_max_active_fit:10\0";

/// jemalloc, as kim asks of it.
struct Jemalloc;

/// Tells kim the process runs on jemalloc (see the crate docs). Returns false if an allocator
/// was installed already.
pub fn install() -> bool {
    kim_debug::set_allocator(&Jemalloc)
}

/// [`install`], and turns the heap profiler on: allocations from now on are sampled, for
/// `/debug/pprof/heap`. Call it first thing in `main`, so that what the profile shows
/// includes everything allocated since the start. Returns false if an allocator was
/// installed already or the profiler could not be turned on.
pub fn install_with_profiler() -> bool {
    let installed = install();
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return false;
    };
    // Not yet in the runtime (start of main): blocking on the lock is fine.
    let mut ctl = ctl.blocking_lock();
    installed && (ctl.activated() || ctl.activate().is_ok())
}

fn failed(e: impl std::fmt::Display) -> HeapProfileError {
    HeapProfileError {
        status: 500,
        reason: format!("heap profile failed: {e}"),
    }
}

impl AllocatorControl for Jemalloc {
    fn stats(&self) -> Option<(u64, u64)> {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        epoch::advance().ok()?;
        let allocated = stats::allocated::read().ok()? as u64;
        let resident = stats::resident::read().ok()? as u64;
        Some((allocated, resident.saturating_sub(allocated)))
    }

    fn trim(&self) {
        // `arena.<MALLCTL_ARENAS_ALL>.purge` (4096 in jemalloc's headers): every arena
        // returns its unused dirty pages.
        let name = b"arena.4096.purge\0";
        // SAFETY: a void mallctl: no value is read or written.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }

    fn heap_profile(&self) -> HeapProfileFuture {
        Box::pin(async {
            let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
                return Err(HeapProfileError {
                    status: 503,
                    reason: "jemalloc's profiler is off (malloc_conf without prof:true)".into(),
                });
            };
            let mut ctl = ctl.clone().lock_owned().await;
            if !ctl.activated() {
                return Err(HeapProfileError {
                    status: 503,
                    reason: "jemalloc's profiler is not active: start the binary with \
                             MALLOC_CONF=prof_active:true, or have it call \
                             kim_heap_profile::install_with_profiler()"
                        .into(),
                });
            }
            // Dumping walks every sampled stack and writes a temporary file: not on the
            // runtime's threads.
            tokio::task::spawn_blocking(move || ctl.dump_pprof())
                .await
                .map_err(failed)?
                .map_err(failed)
        })
    }
}
