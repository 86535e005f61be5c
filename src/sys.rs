//! The only place in strom with `unsafe` code: system calls that no safe crate wraps.
//! - `map_read_only`: the one `mmap` of segment and index files, for the log.
//! - `start_writeback`: `sync_file_range`, which neither rustix nor nix wraps, for the
//!   log's durable appends.
//! - `set_thread_time_slice`: `sched_setattr`, for the server's threads.
//!
//! Crate-private, because `map_read_only` is safe only under the log's rule below.
//!
//! # Maps
//!
//! A map is sound while nobody shrinks the mapped part of the file underneath a reader:
//! touching a page past the end of a file raises SIGBUS. strom keeps that invariant by
//! construction, and every caller relies on it:
//! - segment `.log` files are only ever appended to while mapped; the bytes a reader may
//!   touch are those below the segment's committed size, which never shrinks in place.
//!   Truncating a segment (`Log::truncate`) writes a shorter copy and renames it over
//!   the old name, so maps of the old inode stay valid; deleting a segment unlinks it,
//!   and the inode lives until its last map is dropped. The one in-place shrink is the
//!   rollback of a failed append, which removes only bytes past the committed size that
//!   no reader was ever told about. (Sealing a segment truncates it to its committed
//!   size too, to free disk blocks reserved past the end: nothing below that size moves.)
//! - index files are mapped by their segment and read only through `&self` methods of the
//!   `Log`; they are shrunk only through `&mut self`, so no lookup runs concurrently.
#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::{Mmap, MmapOptions};

use crate::error::{IoContext, Result};

/// Maps `len` bytes of `file` read-only. `len` may exceed the file's current size (the
/// active segment is mapped once at its size limit and grows underneath the map); the
/// caller must never read past the file's size.
pub fn map_read_only(file: &File, len: usize, path: &Path) -> Result<Mmap> {
    // SAFETY: the file is owned by this log's directory and no code in strom shrinks a
    // region of it that a reader may still touch (see the module comment). Readers only
    // touch bytes below the committed size, which is at most the file's size, so pages
    // past the end of the file (when `len` exceeds it) are never accessed.
    unsafe { MmapOptions::new().len(len.max(1)).map(file) }.at(path)
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to the disk, and
/// returns without waiting (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Not a sync:
/// it neither waits nor flushes metadata or the disk's cache, so durability still comes
/// from `fdatasync`, which then finds that part of its work begun. A failure here is
/// only a lost head start; a write error it meets stays recorded for the `fdatasync`.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor `file` keeps open for its duration,
    // with integer arguments; it touches no memory of this process.
    let done = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if done != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not start writeback");
    }
}

/// Asks the kernel to run the calling thread in time slices of `slice` (`sched_setattr`
/// with `sched_runtime`, which Linux 6.12 and later read as a fair-scheduled thread's
/// slice, clamped to 0.1-100 ms; zero restores the kernel's default). Under EEVDF a
/// shorter slice means an earlier deadline, so a thread woken for a request preempts a
/// thread of another program sooner, and itself runs in shorter turns; its share of the
/// CPU does not change. The policy and nice value are kept as they are, so no privilege
/// is needed. A thread under any policy but SCHED_OTHER and SCHED_BATCH (real-time,
/// deadline, SCHED_IDLE, whose slice the kernel ignores) is left alone. Older kernels
/// accept the call and ignore the slice.
pub fn set_thread_time_slice(slice: std::time::Duration) -> std::io::Result<()> {
    const THIS_THREAD: libc::pid_t = 0;
    const NO_FLAGS: libc::c_uint = 0;
    let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
    // SAFETY: `sched_attr` is plain integers, for which all zeros is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    // SAFETY: `sched_getattr` writes at most `size` bytes, the size of `attr`, into the
    // struct it is given, which lives across the call; the other arguments are integers
    // of the kernel's types.
    let got = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            THIS_THREAD,
            &mut attr,
            size,
            NO_FLAGS,
        )
    };
    if got != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH]
        .map(|p| p as u32)
        .contains(&attr.sched_policy);
    if !fair {
        return Ok(());
    }
    // Of the flags, only reset-on-fork describes the thread (and clearing it would need
    // a privilege); the others would ask for changes.
    attr.size = size;
    attr.sched_flags &= libc::SCHED_FLAG_RESET_ON_FORK as u64;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: `sched_setattr` reads the `size` bytes of `attr`, initialised above (and
    // may write its `size` field back, hence `&mut`); it changes only the calling
    // thread's scheduling.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, THIS_THREAD, &mut attr, NO_FLAGS) };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
