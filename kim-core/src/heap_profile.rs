//! Heap profiles: what is live on the heap right now, by the stack that allocated it, in
//! pprof's format (`go tool pprof -sample_index=inuse_space`).
//!
//! jemalloc does the sampling: with `prof:true`, about one allocation per 2^`lg_prof_sample`
//! bytes allocated records its stack, and a dump scales the samples up to estimate every live
//! byte. The cost is paid only by the sampled allocations, so it can stay on in production, as
//! Go's heap profile does. kim-core's `heap-profile` feature serves the dump; the binary must
//! make jemalloc its allocator and turn profiling on, because only the binary can:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
//!
//! // Read by jemalloc at start (tikv-jemallocator with `unprefixed_malloc_on_supported_platforms`).
//! #[allow(non_upper_case_globals)]
//! #[export_name = "malloc_conf"]
//! pub static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:16\0";
//! ```

/// Why no profile could be taken: an HTTP status and the reason.
pub(crate) type Refused = (u16, String);

/// A heap profile of this process now: a gzipped pprof protobuf.
#[cfg(feature = "heap-profile")]
pub(crate) async fn dump() -> Result<Vec<u8>, Refused> {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return Err((
            503,
            "jemalloc's profiler is off in this process: the binary must use \
             tikv-jemallocator as its allocator with malloc_conf prof:true"
                .to_string(),
        ));
    };
    let mut ctl = ctl.clone().lock_owned().await;
    if !ctl.activated() {
        return Err((
            503,
            "jemalloc's profiler is not active (malloc_conf prof_active:false)".to_string(),
        ));
    }
    // Dumping walks every sampled stack and writes a file: not on the runtime's threads.
    match tokio::task::spawn_blocking(move || ctl.dump_pprof()).await {
        Ok(Ok(profile)) => Ok(profile),
        Ok(Err(e)) => Err((500, format!("heap profile failed: {e}"))),
        Err(e) => Err((500, format!("heap profile failed: {e}"))),
    }
}

/// Without the feature there is nothing to dump.
#[cfg(not(feature = "heap-profile"))]
pub(crate) async fn dump() -> Result<Vec<u8>, Refused> {
    Err((
        501,
        "heap profiles need kim-core's `heap-profile` cargo feature, which this build does not have"
            .to_string(),
    ))
}
