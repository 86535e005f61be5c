//! The only place in strom with `unsafe` code: it maps files into memory, and asks the
//! kernel to start writing a range of a file back (`start_writeback`: `sync_file_range`,
//! which neither rustix nor nix wraps).
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
