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

/// The least a reservation takes. A segment reserves as much again as it holds, from
/// this up to `PREALLOCATE_BYTES`: a busy one reaches 4 MiB within its first 8 MiB
/// (about seven reservations), while one that receives little holds little ahead of
/// its end. With 4 MiB each from the first append, 5,000 partitions of 57 KB held
/// 20 GB of disk for 286 MB of records (BENCHMARKS.md, "Disk reserved ahead of
/// segments, by their size").
pub(super) const MIN_PREALLOCATE_BYTES: u64 = 64 << 10;

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
/// With `writeback`, for a batch an `fdatasync` will follow: `WRITEBACK_CHUNK` bytes a
/// `pwritev` (a piece that crosses the chunk's end, such as one large value, is cut
/// there for the call), and after each but the last a request to start writing the
/// whole pages written so far to the disk, so that the disk writes the first part of the
/// batch while the rest is copied into the page cache, instead of all of it once the
/// sync asks. Measured on a 1 MiB batch, one at a time: the sync after it waited about
/// 0.1 ms less (BENCHMARKS.md).
pub(super) fn write_all_vectored_at(
    file: &File,
    mut pieces: &mut [IoSlice<'_>],
    mut position: u64,
    writeback: bool,
) -> std::io::Result<()> {
    // Skips empty pieces.
    IoSlice::advance_slices(&mut pieces, 0);
    // Writeback is asked for whole pages, from the page the batch starts in: a page sent
    // half-written would be written again by the sync.
    let mut started = position & !(PAGE - 1);
    while !pieces.is_empty() {
        let mut take = pieces.len().min(MAX_PIECES);
        // The piece that crosses the chunk's end, and how much of it this call writes.
        let mut cut = None;
        if writeback {
            let mut bytes = 0;
            if let Some(at) = pieces[..take].iter().position(|piece| {
                bytes += piece.len();
                bytes >= WRITEBACK_CHUNK
            }) {
                take = at + 1;
                let over = bytes - WRITEBACK_CHUNK;
                if over > 0 {
                    cut = Some((at, pieces[at].len() - over));
                }
            }
        }
        let result = match cut {
            None => rustix::io::pwritev(file, &pieces[..take], position),
            Some((at, keep)) => {
                let last = pieces[at];
                let mut call = pieces[..at].to_vec();
                call.push(IoSlice::new(&last[..keep]));
                rustix::io::pwritev(file, &call, position)
            }
        };
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                position += written as u64;
                IoSlice::advance_slices(&mut pieces, written);
                let upto = position & !(PAGE - 1);
                if writeback && !pieces.is_empty() && upto > started {
                    crate::sys::start_writeback(file, started, upto - started);
                    started = upto;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// The page size the writeback requests are aligned to (x86-64's and most others'; a
/// different one costs a page written twice, nothing more).
const PAGE: u64 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of every size around the chunk (empty, tiny, one short of it, exactly it,
    /// several times it, so that a call cuts one), more of them than one `pwritev` takes.
    fn pieces() -> Vec<Vec<u8>> {
        let sizes = [
            0,
            1,
            100,
            WRITEBACK_CHUNK - 1,
            WRITEBACK_CHUNK,
            3 * WRITEBACK_CHUNK + 5,
        ];
        (0..3000)
            .map(|i| {
                // Mostly small pieces, with each size among them.
                let len = if i % 97 == 0 {
                    sizes[(i / 97) % 6]
                } else {
                    sizes[i % 3]
                };
                // Bytes that differ along a piece, so a piece cut in the wrong place shows.
                (0..len).map(|j| ((i * 7 + j) % 251) as u8).collect()
            })
            .collect()
    }

    #[test]
    fn a_write_with_writeback_stores_the_same_bytes_as_one_without() {
        let dir = tempfile::tempdir().unwrap();
        let owned = pieces();
        for size in [
            WRITEBACK_CHUNK - 1,
            WRITEBACK_CHUNK,
            3 * WRITEBACK_CHUNK + 5,
        ] {
            assert!(owned.iter().any(|p| p.len() == size), "a piece of {size}");
        }
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
