//! The write side of a segment file: vectored appends and disk reservations.

use std::fs::File;
use std::io::IoSlice;
use std::path::Path;

/// Disk space the active segment reserves past its end at a time. Appending into
/// reserved blocks needs no allocation; appending past the end of a file does, and ext4
/// allocates under a per-file lock that writeback of the file's earlier dirty pages
/// (an fsync, the kernel's flusher) holds for milliseconds at a time: an append that
/// allocated waited for it, up to 16 ms in `perf sched` traces. One reservation per
/// 4 MiB meets that lock a thousand times less often than one per 4 KiB block. The
/// reservation past the end is released when the segment is sealed.
pub(super) const PREALLOCATE_BYTES: u64 = 4 << 20;

/// Reserves disk blocks for `file` from `from` to `upto` without changing its length:
/// the length still marks where the batches end, for readers and for recovery. Returns
/// the position reserved up to: `upto`, or `from` if the reservation failed (not an
/// error: the append allocates as it writes, and reports a full disk itself), or
/// `u64::MAX` if the file system cannot reserve, so that it is not asked again.
pub(super) fn reserve(file: &File, from: u64, upto: u64, path: &Path) -> u64 {
    let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(file, flags, from, upto - from) {
        Ok(()) => upto,
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => u64::MAX,
        Err(errno) => {
            tracing::debug!(path = %path.display(), %errno, "could not reserve disk blocks");
            from
        }
    }
}

/// Most pieces one `pwritev` takes (Linux's `IOV_MAX`; rustix clamps to it as well, and
/// either way the loop below writes what one call left).
const MAX_PIECES: usize = 1024;

/// Writes every byte of `pieces` at `position`, in order: one `pwritev` per 1,024 pieces
/// unless the kernel takes fewer bytes (a disk filling part-way, a signal), then the rest.
pub(super) fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice<'_>],
    mut position: u64,
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut pieces, 0); // skips empty pieces
    while !pieces.is_empty() {
        let take = pieces.len().min(MAX_PIECES);
        match rustix::io::pwritev(file, &pieces[..take], position) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                position += written as u64;
                IoSlice::advance_slices(&mut pieces, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}
