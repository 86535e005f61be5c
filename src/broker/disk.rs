//! The free-space floor (`min_free_disk`): below it, produce is refused with
//! RESOURCE_EXHAUSTED while reads, commits and deletes go on, and the cleaner is woken
//! at once. Produce resumes by itself when space is back.
//!
//! Free space is measured with `statvfs` by the cleaner's loop twice a second, and also by
//! a produce once the bytes written since the last measurement reach half the headroom
//! that measurement left, so a fast producer cannot run far past the floor between two
//! measurements, and a produce costs one atomic add, not a system call. A publish to
//! many topics, checked against the floor once for all of them, is admitted only if
//! all its bytes fit above it (`admit_bytes`), and holds them until it has written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::error::{Error, Result};

/// `min_free_disk`: bytes, a share of the file system, or the smaller of both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskFloor {
    bytes: Option<u64>,
    percent: Option<f64>,
}

impl Default for DiskFloor {
    /// 1 GiB or 5% of the file system, whichever is smaller.
    fn default() -> Self {
        DiskFloor {
            bytes: Some(1 << 30),
            percent: Some(5.0),
        }
    }
}

impl DiskFloor {
    pub fn bytes(n: u64) -> DiskFloor {
        DiskFloor {
            bytes: Some(n),
            percent: None,
        }
    }

    /// `"5%"`, `"1GiB"`, `"500MB"`, `"1073741824"`, or `"0"` (no floor).
    pub fn parse(text: &str) -> std::result::Result<DiskFloor, String> {
        let text = text.trim();
        let bad = || {
            format!("{text:?} is not a size: use bytes (1073741824), a size with a unit (500MB, 1GiB), or a share of the disk (5%)")
        };
        if let Some(percent) = text.strip_suffix('%') {
            let percent: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!("{text:?}: a share of the disk is from 0% to 100%"));
            }
            return Ok(DiskFloor {
                bytes: None,
                percent: Some(percent),
            });
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(bad()),
        };
        n.checked_mul(scale).map(DiskFloor::bytes).ok_or_else(bad)
    }

    /// The floor in bytes on a file system of `total` bytes (0: none).
    pub fn floor(&self, total: u64) -> u64 {
        let share = self.percent.map(|p| (total as f64 * p / 100.0) as u64);
        match (self.bytes, share) {
            (Some(b), Some(s)) => b.min(s),
            (Some(b), None) => b,
            (None, Some(s)) => s,
            (None, None) => 0,
        }
    }
}

/// Free and total bytes of a file system, as an unprivileged process may use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub free: u64,
    pub total: u64,
}

pub fn space_of(path: &Path) -> Result<Space> {
    let stat = rustix::fs::statvfs(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(Space {
        free: stat.f_bavail.saturating_mul(stat.f_frsize),
        total: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

/// Bytes `DiskGuard::admit_bytes` admitted, held against the headroom until dropped.
pub struct Reservation {
    disk: Arc<DiskGuard>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.disk.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Watches the data directory's free space against the floor.
pub struct DiskGuard {
    path: PathBuf,
    floor: DiskFloor,
    /// Below the floor at the last measurement.
    low: AtomicBool,
    /// Free bytes and floor at the last measurement, for the refusal's message.
    free: AtomicU64,
    floor_bytes: AtomicU64,
    /// Bytes produced since the last measurement, and how many may be before the next.
    written: AtomicU64,
    /// Bytes admitted to writes not made yet (`admit_bytes`).
    reserved: AtomicU64,
    /// How free space is measured: `space_of`.
    space: fn(&Path) -> Result<Space>,
    recheck_after: AtomicU64,
    /// Woken when space runs low, so the cleaner runs at once.
    pub low_space: Notify,
}

impl DiskGuard {
    pub fn new(path: &Path, floor: DiskFloor) -> DiskGuard {
        Self::measured_by(path, floor, space_of)
    }

    /// A guard whose measures come from `space` (a test's file system of its own).
    fn measured_by(path: &Path, floor: DiskFloor, space: fn(&Path) -> Result<Space>) -> DiskGuard {
        let guard = DiskGuard {
            space,
            path: path.to_path_buf(),
            floor,
            low: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
            floor_bytes: AtomicU64::new(0),
            written: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
            recheck_after: AtomicU64::new(0),
            low_space: Notify::new(),
        };
        guard.measure();
        guard
    }

    /// Measures free space now; returns whether it is below the floor. A file system
    /// that cannot be measured is not taken to be full (ENOSPC still fails appends
    /// cleanly).
    pub fn measure(&self) -> bool {
        let Ok(space) = (self.space)(&self.path) else {
            self.low.store(false, Ordering::Release);
            self.recheck_after.store(u64::MAX, Ordering::Release);
            // Nor is a large write refused on an old measure.
            self.free.store(u64::MAX, Ordering::Release);
            self.floor_bytes.store(0, Ordering::Release);
            self.written.store(0, Ordering::Release);
            return false;
        };
        let floor = self.floor.floor(space.total);
        let low = space.free < floor;
        self.free.store(space.free, Ordering::Release);
        self.floor_bytes.store(floor, Ordering::Release);
        self.written.store(0, Ordering::Release);
        self.recheck_after.store(
            (space.free.saturating_sub(floor) / 2).max(1 << 20),
            Ordering::Release,
        );
        let was_low = self.low.swap(low, Ordering::AcqRel);
        if low && !was_low {
            tracing::warn!(path = %self.path.display(), free = space.free, floor, "free disk space is below min_free_disk: produce is refused until space is freed; running the cleaner now");
            self.low_space.notify_one();
        } else if was_low && !low {
            tracing::info!(path = %self.path.display(), free = space.free, floor, "free disk space is above min_free_disk again: produce resumes");
        }
        low
    }

    /// Refuses a produce while space is below the floor.
    pub fn admit(&self) -> Result<()> {
        if self.low.load(Ordering::Acquire) {
            return Err(Error::DiskFull {
                path: self.path.clone(),
                free: self.free.load(Ordering::Acquire),
                floor: self.floor_bytes.load(Ordering::Acquire),
            });
        }
        Ok(())
    }

    /// `admit`, and for a write of `bytes` at once (a publish to many topics, checked
    /// once for them all): refused if they would take free space below the floor, by
    /// the last measure, what was written since and what other such writes hold,
    /// measured again before refusing. The bytes are held until the `Reservation`
    /// goes (a measure does not see what is not written yet); they are held before
    /// they are checked, so that two writes admitted at once see each other.
    pub fn admit_bytes(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        self.admit()?;
        self.reserved.fetch_add(bytes, Ordering::AcqRel);
        let held = Reservation {
            disk: Arc::clone(self),
            bytes,
        };
        let headroom = || {
            let free = self.free.load(Ordering::Acquire);
            let floor = self.floor_bytes.load(Ordering::Acquire);
            let used = (self.written.load(Ordering::Acquire))
                .saturating_add(self.reserved.load(Ordering::Acquire));
            (free.saturating_sub(floor), used)
        };
        let (room, used) = headroom();
        if used > room {
            self.measure();
            let (room, used) = headroom();
            if used > room {
                return Err(Error::LimitReached(format!(
                    "this publish would write {bytes} bytes over its topics, and the disk has {room} bytes above min_free_disk ({} of them taken by writes under way): send less a request, or free space",
                    used - bytes
                )));
            }
        }
        Ok(held)
    }

    /// Counts bytes produced; measures again once they reach half the last headroom.
    pub fn wrote(&self, bytes: u64) {
        let total = self.written.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if total >= self.recheck_after.load(Ordering::Acquire) {
            self.measure();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_parse_and_take_the_smaller_of_bytes_and_share() {
        let total = 100 << 30;
        assert_eq!(DiskFloor::default().floor(total), 1 << 30);
        assert_eq!(DiskFloor::default().floor(10 << 30), (10u64 << 30) / 20);
        assert_eq!(DiskFloor::parse("2GiB").unwrap().floor(total), 2 << 30);
        assert_eq!(DiskFloor::parse("500MB").unwrap().floor(total), 500_000_000);
        assert_eq!(DiskFloor::parse("10%").unwrap().floor(total), 10 << 30);
        assert_eq!(DiskFloor::parse("0").unwrap().floor(total), 0);
        assert_eq!(DiskFloor::parse("1024").unwrap().floor(total), 1024);
        for bad in [
            "",
            "lots",
            "5 apples",
            "-1",
            "101%",
            "99999999999999999999TiB",
        ] {
            assert!(DiskFloor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_floor_above_the_free_space_refuses_and_a_lower_one_admits() {
        let dir = tempfile::tempdir().unwrap();
        let space = space_of(dir.path()).unwrap();
        let above = DiskGuard::new(dir.path(), DiskFloor::bytes(space.total));
        let err = above.admit().unwrap_err().to_string();
        assert!(err.contains("min_free_disk"), "{err}");
        let below = DiskGuard::new(dir.path(), DiskFloor::bytes(0));
        below.admit().unwrap();
    }

    /// A write of many bytes at once (a publish to many topics) is admitted only if
    /// all of it fits above the floor, and those admitted share the headroom (on a
    /// file system of the test's own: 1 GiB free, the floor 64 MiB under it).
    #[test]
    fn a_large_write_is_admitted_only_if_it_fits_above_the_floor() {
        fn space(_: &Path) -> Result<Space> {
            Ok(Space {
                free: 1 << 30,
                total: 10 << 30,
            })
        }
        let floor = DiskFloor::bytes((1 << 30) - (64 << 20));
        let guard = Arc::new(DiskGuard::measured_by(Path::new("/d"), floor, space));
        guard.admit().unwrap();
        let err = guard.admit_bytes(1 << 30).err().unwrap().to_string();
        assert!(err.contains("min_free_disk"), "{err}");
        let first = guard.admit_bytes(20 << 20).unwrap();
        let _second = guard.admit_bytes(20 << 20).unwrap();
        let err = guard.admit_bytes(40 << 20).err();
        assert!(err.is_some(), "the headroom was shared");
        drop(first);
        let _third = guard.admit_bytes(30 << 20).unwrap();
        assert!(guard.admit_bytes(20 << 20).is_err());
    }
}
