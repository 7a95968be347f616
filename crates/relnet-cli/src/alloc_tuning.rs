//! glibc allocator settings for tensor workloads.
//!
//! glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh `mmap`
//! and returns it with `munmap` on free. A training step allocates and frees the same large
//! activation buffers every time, so each step pays page faults and page zeroing for all of
//! them. Serving them from the heap and keeping freed memory removes that cost without changing
//! any result; it matters most where activations are large (Deep InfoMax's per-position maps,
//! backbone passes of more than a few hundred views). Figures: docs/performance.md, "The
//! allocator settings". The cost: freed memory is kept by the process for reuse instead of
//! going back to the system, so RSS stays near its peak (which it reaches each step anyway).
//!
//! Skipped when `GLIBC_TUNABLES` is set, so a user's own malloc settings win.

/// Serve large allocations from the heap and never trim it. Called once at startup.
pub fn tune_for_tensors() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GLIBC_TUNABLES").is_none() {
        // SAFETY: glibc's `mallopt` takes no pointers and accepts any parameter and value (it
        // returns 0 for ones it rejects); it only changes malloc's tuning, under malloc's own
        // lock. `main` calls this first, before any other thread allocates.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}
