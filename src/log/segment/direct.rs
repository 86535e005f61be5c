//! Appends written straight to the disk (`O_DIRECT`), for large batches that must be
//! durable, when the server runs with `direct_io = true`.
//!
//! A durable append is a write followed by an `fdatasync`. Written through the page
//! cache, the `fdatasync` has to write the dirty pages back one by one; written with
//! `O_DIRECT`, the data is on the device when the write returns and the `fdatasync` only
//! commits the file's size and flushes the device's cache. On this class of machine
//! 1 MiB appends each followed by a sync reach 1.2-1.5 GB/s that way against 0.5-0.8
//! GB/s through the page cache, and durable 1 MB produces with one request in flight
//! are 20-30% faster (BENCHMARKS.md, "Durable appends written directly").
//!
//! The price is paid by readers: the write drops the pages it covers from the page
//! cache, so a consumer of the batch reads it from the disk. The kernel is asked to read
//! the range back in the background (`POSIX_FADV_WILLNEED`), which recovers most of it,
//! but consumers of such batches are still slower than of page-cache ones; hence the
//! option is off by default.
//!
//! `O_DIRECT` needs the file position, the length and the memory to be aligned to the
//! device's block size; `ALIGN` (4 KiB) covers every common device. A batch rarely
//! starts or ends on a block boundary, so the write starts at the block that holds the
//! segment's end, carrying the bytes already there again (the same bytes: readers of
//! the committed part see no change), and ends with zeros up to the next boundary. Those
//! zeros lie past the committed end, where no reader looks; the next append overwrites
//! them; sealing or closing the segment cuts them off; and recovery after a crash treats
//! fewer than `ALIGN` zero bytes at the end of the file as that padding, not damage.
//! Rewriting the last block's earlier bytes risks no more than writing through the page
//! cache, which writes back the whole page holding them on every flush.
//!
//! The data is copied once, into an aligned buffer (the page-cache path copies once as
//! well, in the kernel). Buffers come from a small shared pool, so memory stays bounded
//! however many partitions write: at most `POOL_BUFFERS` of at most `KEEP_BYTES` are kept.

use std::fs::{File, OpenOptions};
use std::io::IoSlice;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use super::Segment;
use crate::error::{IoContext, Result};

/// Alignment of a direct write's position, length and memory.
pub const ALIGN: u64 = 4096;
/// Buffers kept in the pool, and the largest one kept; larger ones are freed after use.
const POOL_BUFFERS: usize = 4;
const KEEP_BYTES: usize = 8 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Opens `path` for direct writes; `None` where the file system does not support them
/// (tmpfs, some network file systems), so that the caller writes through the page cache.
pub fn open(path: &Path) -> std::io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The block-aligned range a direct write of `len` bytes at `position` covers.
pub fn span(position: u64, len: u64) -> (u64, u64) {
    let start = position & !(ALIGN - 1);
    let end = (position + len).div_ceil(ALIGN) * ALIGN;
    (start, end)
}

/// True if `rest`, the bytes past the last whole batch of a file `file_len` long, is
/// what a direct write pads with: fewer than `ALIGN` zeros, ending on a block boundary.
pub fn is_padding(rest: &[u8], file_len: u64) -> bool {
    (rest.len() as u64) < ALIGN && file_len % ALIGN == 0 && rest.iter().all(|&b| b == 0)
}

/// Writes `head` (the bytes from the block boundary `start` to the segment's end), then
/// `pieces`, then zeros to the next boundary, at `start`, with one direct write (more if
/// the kernel takes less). An error leaves the committed part as it was: the bytes of
/// the head are the ones already there.
pub fn write(file: &File, start: u64, head: &[u8], pieces: &[IoSlice<'_>]) -> std::io::Result<()> {
    let len = head.len() + pieces.iter().map(|p| p.len()).sum::<usize>();
    let padded = (len as u64).div_ceil(ALIGN) * ALIGN;
    let mut raw = take(padded as usize + ALIGN as usize);
    // The first aligned address in the buffer: safe code, no allocator tricks.
    let at = raw.as_ptr().align_offset(ALIGN as usize);
    let buf = &mut raw[at..at + padded as usize];
    let mut filled = 0;
    for piece in std::iter::once(head).chain(pieces.iter().map(|p| &p[..])) {
        buf[filled..filled + piece.len()].copy_from_slice(piece);
        filled += piece.len();
    }
    buf[filled..].fill(0);
    let mut written = 0;
    let result = loop {
        if written == buf.len() {
            break Ok(());
        }
        match rustix::io::pwrite(file, &buf[written..], start + written as u64) {
            Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => break Err(errno.into()),
        }
    };
    give_back(raw);
    result
}

fn take(len: usize) -> Vec<u8> {
    let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
    match pool.iter().position(|b| b.len() >= len) {
        Some(i) => pool.swap_remove(i),
        None => {
            drop(pool);
            vec![0; len]
        }
    }
}

fn give_back(buf: Vec<u8>) {
    if buf.len() <= KEEP_BYTES {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_BUFFERS {
            pool.push(buf);
        }
    }
}

/// The state of a segment's direct writes.
#[derive(Debug, Default)]
pub(super) enum Direct {
    /// No direct write yet: the file is opened for them at the first.
    #[default]
    Unopened,
    Open {
        file: File,
        /// The bytes from the last block boundary to the committed end, kept from the
        /// last direct write while nothing was appended after it (`at` is that end):
        /// reading them from the map would fault them back in from the disk.
        tail: Vec<u8>,
        at: u64,
    },
    /// The file system does not take direct writes: durable batches go through the
    /// page cache too.
    Unsupported,
}

impl Segment {
    /// Cuts off the zeros direct writes left past the committed end, so that the file's
    /// length is the committed size again (for a clean close, whose next open trusts it).
    pub fn cut_padding(&mut self) -> Result<()> {
        if self.padded {
            self.cut_to_committed()?;
            self.padded = false;
        }
        Ok(())
    }

    /// The file opened for direct writes, opened at the first; `None` if the file system
    /// does not take them.
    pub(super) fn direct_file(&mut self) -> Result<Option<&File>> {
        if let Direct::Unopened = self.direct {
            self.direct = match open(&self.log_path).at(&self.log_path)? {
                Some(file) => Direct::Open {
                    file,
                    tail: Vec::new(),
                    at: u64::MAX,
                },
                None => {
                    tracing::info!(path = %self.log_path.display(), "the file system does not take direct writes; durable appends go through the page cache");
                    Direct::Unsupported
                }
            };
        }
        Ok(match &self.direct {
            Direct::Open { file, .. } => Some(file),
            _ => None,
        })
    }

    /// Writes a batch of `len` bytes at the committed end with a direct write (see
    /// `direct.rs`); the committed end is the caller's to advance.
    pub(super) fn write_direct(&mut self, pieces: &[IoSlice<'_>], len: u64) -> Result<()> {
        let (start, end) = span(self.size, len);
        self.preallocate(end)?;
        let Direct::Open { file, tail, at } = &mut self.direct else {
            unreachable!("checked by the caller")
        };
        let head = if *at == self.size {
            &tail[..]
        } else {
            &self.map[start as usize..self.size as usize]
        };
        write(file, start, head, pieces).at(&self.log_path)?;
        // The write dropped these pages from the page cache: have the kernel read them
        // back in the background, so that consumers of the batch mostly find them there
        // (a hint: if it fails, they read from the disk).
        let span = std::num::NonZeroU64::new(end - start);
        let _ = rustix::fs::fadvise(file, start, span, rustix::fs::Advice::WillNeed);
        self.padded = true;
        // Keep the new last block's committed bytes for the next direct write: the last
        // `keep` bytes of the head and the pieces.
        let new_end = self.size + len;
        let keep = (new_end % ALIGN) as usize;
        let mut last = vec![0u8; keep];
        let mut need = keep;
        for piece in pieces.iter().map(|p| &p[..]).rev().chain([head]) {
            let take = need.min(piece.len());
            last[need - take..need].copy_from_slice(&piece[piece.len() - take..]);
            need -= take;
            if need == 0 {
                break;
            }
        }
        *tail = last;
        *at = new_end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_whole_blocks() {
        assert_eq!(span(0, 1), (0, 4096));
        assert_eq!(span(4096, 4096), (4096, 8192));
        assert_eq!(span(5000, 100), (4096, 8192));
        assert_eq!(span(8000, 200), (4096, 12288));
    }

    #[test]
    fn padding_is_a_short_run_of_zeros_to_a_block_boundary() {
        assert!(is_padding(&[0; 100], 8192));
        assert!(is_padding(&[], 8192));
        assert!(!is_padding(&[0; 100], 8100), "not on a boundary");
        assert!(!is_padding(&[0, 0, 1], 8192), "not all zeros");
        assert!(
            !is_padding(&[0; 4096], 8192),
            "a whole block of zeros is more than padding"
        );
    }
}
