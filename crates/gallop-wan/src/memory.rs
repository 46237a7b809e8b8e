//! Process-wide allocator settings for tensor work.
//!
//! A forward pass frees and re-allocates the same large buffers (tens to hundreds of MB) over and
//! over. glibc hands blocks that size straight back to the kernel (`munmap`, heap trim), so every
//! new buffer starts as untouched pages and the kernel zeroes each one on first write: in the VAE
//! decode that was more system time than the convolutions' own work. Keeping freed memory in the
//! heap lets the next buffer reuse warm pages; peak RSS is unchanged because the sizes repeat.

/// Keep freed memory in the process for reuse. Call once at start, before the threads spawn.
/// A no-op off glibc.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before other threads allocate.
    unsafe {
        // Serve every size from the heap (mallopt takes an int, so i32::MAX is the ceiling)...
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        // ...never give the top of the heap back on free...
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // ...and grow it in large steps so growth is rare.
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Give memory freed since the last call back to the kernel (between jobs, so an idle server
/// does not sit on a finished job's peak). A no-op off glibc.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}
