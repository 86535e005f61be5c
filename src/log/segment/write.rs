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

/// Bytes written between two requests to start writeback, for a batch an `fdatasync`
/// will follow (`write_all_vectored_at`).
pub(crate) const WRITEBACK_CHUNK: usize = 256 << 10;

/// Writes every byte of `pieces` at `position`, in order: one `pwritev` per 1,024 pieces
/// unless the kernel takes fewer bytes (a disk filling part-way, a signal), then the rest.
///
/// With `writeback`, for a batch an `fdatasync` will follow: about `WRITEBACK_CHUNK`
/// bytes a `pwritev`, each followed by a request to start writing them to the disk, so
/// that the disk writes the first part of the batch while the rest is copied into the
/// page cache, instead of all of it once the sync asks. Measured on a 1 MiB batch, one
/// at a time: the sync after it waited about 0.1 ms less (BENCHMARKS.md).
pub(super) fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice<'_>],
    mut position: u64,
    writeback: bool,
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut pieces, 0); // skips empty pieces
    while !pieces.is_empty() {
        let mut take = pieces.len().min(MAX_PIECES);
        if writeback {
            let mut bytes = 0;
            take = 1 + pieces[..take - 1]
                .iter()
                .take_while(|piece| {
                    bytes += piece.len();
                    bytes < WRITEBACK_CHUNK
                })
                .count();
        }
        match rustix::io::pwritev(file, &pieces[..take], position) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                if writeback {
                    crate::log::mmap::start_writeback(file, position, written as u64);
                }
                position += written as u64;
                IoSlice::advance_slices(&mut pieces, written);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of every size around the chunk (empty, tiny, one short of it, several
    /// times it), more of them than one `pwritev` takes.
    fn pieces() -> Vec<Vec<u8>> {
        (0..3000)
            .map(|i| {
                let len = [0, 1, 100, WRITEBACK_CHUNK - 1, 3 * WRITEBACK_CHUNK, 1000][i % 6];
                let len = if i % 6 >= 3 && i % 50 != 3 { 7 } else { len };
                vec![(i % 251) as u8; len]
            })
            .collect()
    }

    #[test]
    fn a_write_with_writeback_stores_the_same_bytes_as_one_without() {
        let dir = tempfile::tempdir().unwrap();
        let owned = pieces();
        let expected: Vec<u8> = owned.iter().flatten().copied().collect();
        for writeback in [false, true] {
            let path = dir.path().join(format!("{writeback}"));
            let file = File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            // Written after a few bytes already there, as an append is.
            std::fs::write(&path, b"head").unwrap();
            let mut slices: Vec<IoSlice<'_>> = owned.iter().map(|p| IoSlice::new(p)).collect();
            write_all_vectored_at(&file, &mut slices, 4, writeback).unwrap();
            let stored = std::fs::read(&path).unwrap();
            assert_eq!(&stored[..4], b"head");
            assert!(stored[4..] == expected[..], "writeback {writeback}");
        }
    }
}
