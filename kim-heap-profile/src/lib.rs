//! jemalloc, with its sampling heap profiler on, as the allocator of the binary that links
//! this crate; kim's debug listener then serves `/debug/pprof/heap` (kim-core's
//! `heap-profile` feature, which this crate turns on).
//!
//! A binary opts in with one line, since a crate nothing refers to is not linked:
//!
//! ```ignore
//! use kim_heap_profile as _;
//! ```
//!
//! It is a crate of its own so that only the binaries that ask for it get jemalloc: cargo
//! unifies a crate's features over everything built together, so an allocator behind a feature
//! of a shared crate would reach every binary of a workspace build.
//!
//! Profiling samples about one allocation per 2^16 bytes allocated (`lg_prof_sample:16`),
//! recording its stack: enough samples at 10,000 connections of a few hundred bytes each to
//! say where the bytes go, for one backtrace per 64 KiB allocated. A dump scales each sample
//! up to estimate all live bytes, as Go's heap profile does.

/// The allocator of every binary linking this crate.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once when it starts: profiling on and active. (With
/// `unprefixed_malloc_on_supported_platforms`, jemalloc is also the C allocator, so C code
/// such as SQLite is profiled too, and it reads the unprefixed `malloc_conf`.)
#[used]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:16\0";
