//! Swapping compacted segments in for the old ones, so that a crash leaves either the old
//! segment set or the new one, never a mix.
//!
//! The new segments are written and synced in `cleaning/`, then `compaction-manifest`
//! (JSON, replaced atomically, with a CRC) names the old segments, the new ones and the
//! offset compacted up to: that write is the commit point. Then, under the log's lock,
//! each old segment's files are renamed to `.deleted` and each new one's moved into the
//! partition directory; after the lock, the old files are unlinked, `cleaner-offset`
//! is written, and the manifest and `cleaning/` are removed. Open finishes a swap whose
//! manifest exists (every step is safe to repeat) and removes `cleaning/` otherwise.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::compaction::Compacted;
use super::files::{sync_dir, write_atomically};
use super::log::Log;
use super::naming::{deleted_path, segment_path, SegmentFile};
use crate::error::{Error, IoContext, Result};

/// Where a pass writes its new segments, inside the partition directory.
pub const CLEANING_DIR: &str = "cleaning";
/// The commit point of a swap.
pub const MANIFEST_FILE: &str = "compaction-manifest";
/// The offset below which the log has been compacted (see `files.rs` for its layout).
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset";

const KINDS: [SegmentFile; 3] = [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex];

/// Old and new segments of one compaction pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Base offsets of the segments replaced.
    pub inputs: Vec<u64>,
    /// Base offsets of the new segments, in `cleaning/` until moved.
    pub outputs: Vec<u64>,
    /// The end of the last segment replaced.
    pub cleaned_upto: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    manifest: Manifest,
    crc: u32,
}

impl Manifest {
    fn crc(&self) -> u32 {
        crc32fast::hash(&serde_json::to_vec(self).expect("plain data serializes"))
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let stored = Stored {
            manifest: self.clone(),
            crc: self.crc(),
        };
        let json = serde_json::to_vec(&stored).expect("plain data serializes");
        write_atomically(&dir.join(MANIFEST_FILE), &json)
    }

    /// The manifest of an interrupted swap, if there is one. A manifest that does not
    /// check is an error: which segment set is whole cannot be known without it.
    fn read(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).at(&path),
        };
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| Error::Corruption {
            path: path.clone(),
            position: 0,
            reason: format!("compaction manifest does not parse: {e}"),
        })?;
        if stored.crc != stored.manifest.crc() {
            return Err(Error::Corruption {
                path,
                position: 0,
                reason: "compaction manifest fails its CRC; move it away to keep the segments as they are on disk".into(),
            });
        }
        Ok(Some(stored.manifest))
    }

    /// Moves the new segments into place and the old ones to `.deleted`; safe to repeat.
    fn install(&self, dir: &Path) -> Result<()> {
        let staging = dir.join(CLEANING_DIR);
        for &base in &self.inputs {
            if self.outputs.contains(&base) {
                continue; // replaced below, file by file
            }
            for kind in KINDS {
                rename_if_there(
                    &segment_path(dir, base, kind),
                    &deleted_path(&segment_path(dir, base, kind)),
                )?;
            }
        }
        for &base in &self.outputs {
            for kind in KINDS {
                let new = segment_path(&staging, base, kind);
                if !new.exists() {
                    continue; // moved already
                }
                let old = segment_path(dir, base, kind);
                rename_if_there(&old, &deleted_path(&old))?;
                std::fs::rename(&new, &old).at(&new)?;
            }
        }
        sync_dir(dir)
    }

    /// After `install`: unlinks the old files, records the offset compacted up to, and
    /// removes the manifest and `cleaning/`.
    fn finish(&self, dir: &Path) -> Result<()> {
        for &base in &self.inputs {
            for kind in KINDS {
                let gone = deleted_path(&segment_path(dir, base, kind));
                match std::fs::remove_file(&gone) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err).at(&gone),
                }
            }
        }
        // Never backwards (a pass may stop earlier than the one before: a longer lag, a
        // smaller map).
        let cleaned = read_cleaner_offset(dir)?.max(self.cleaned_upto);
        write_cleaner_offset(dir, cleaned)?;
        let path = dir.join(MANIFEST_FILE);
        std::fs::remove_file(&path).at(&path)?;
        remove_staging(dir)?;
        sync_dir(dir)
    }
}

fn rename_if_there(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).at(from),
    }
}

fn remove_staging(dir: &Path) -> Result<()> {
    let staging = dir.join(CLEANING_DIR);
    match std::fs::remove_dir_all(&staging) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).at(&staging),
    }
}

/// At open, before the segments are listed: completes a committed swap, or drops an
/// uncommitted one.
pub(super) fn finish_interrupted(dir: &Path) -> Result<()> {
    match Manifest::read(dir)? {
        Some(manifest) => {
            tracing::warn!(dir = %dir.display(), outputs = manifest.outputs.len(), "completing a compaction that a crash interrupted");
            manifest.install(dir)?;
            manifest.finish(dir)
        }
        None => remove_staging(dir),
    }
}

pub fn write_cleaner_offset(dir: &Path, offset: u64) -> Result<()> {
    write_atomically(
        &dir.join(CLEANER_OFFSET_FILE),
        &super::files::encode_offset_file(super::files::CLEANER_OFFSET_MAGIC, offset),
    )
}

/// The offset below which the log was compacted: 0 if never (or the file is damaged,
/// which only costs a pass).
pub(super) fn read_cleaner_offset(dir: &Path) -> Result<u64> {
    let path = dir.join(CLEANER_OFFSET_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(super::files::decode_offset_file(
            super::files::CLEANER_OFFSET_MAGIC,
            &bytes,
        )
        .unwrap_or(0)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(err) => Err(err).at(&path),
    }
}

/// The old files, to unlink without the log's lock, and the rest of the swap.
#[must_use = "the old segments stay on disk until the job runs"]
pub struct SwapJob {
    dir: std::path::PathBuf,
    manifest: Option<Manifest>,
    cleaned_upto: u64,
}

impl SwapJob {
    /// The job of a pass that changed nothing but compacted up to `cleaned_upto`.
    #[cfg(test)]
    pub(super) fn for_test(dir: &Path, cleaned_upto: u64) -> SwapJob {
        SwapJob {
            dir: dir.to_path_buf(),
            manifest: None,
            cleaned_upto,
        }
    }

    pub fn run(self) -> Result<()> {
        match self.manifest {
            Some(manifest) => manifest.finish(&self.dir),
            None => {
                let cleaned = read_cleaner_offset(&self.dir)?.max(self.cleaned_upto);
                write_cleaner_offset(&self.dir, cleaned)
            }
        }
    }
}

impl Log {
    /// Swaps a pass's new segments in (renames, under the caller's lock) and returns the
    /// job that unlinks the old ones. Refused, changing nothing, if the log was truncated
    /// since the pass was planned.
    pub fn apply_compaction(&mut self, compacted: Compacted) -> Result<SwapJob> {
        if compacted.generation != self.generation {
            // Nothing is installed yet: the pass is dropped, manifest and all, so that no
            // later open installs it over a log that has moved on.
            if compacted.manifest.is_some() {
                let path = self.dir.join(MANIFEST_FILE);
                std::fs::remove_file(&path).at(&path)?;
                remove_staging(&self.dir)?;
                sync_dir(&self.dir)?;
            }
            return Err(Error::InvalidArgument(
                "the log was truncated or reopened after this compaction was planned".into(),
            ));
        }
        let (cleaned_upto, mapped_upto) = (compacted.cleaned_upto, compacted.mapped_upto);
        let Some(manifest) = compacted.manifest else {
            self.cleaned_upto = self.cleaned_upto.max(cleaned_upto);
            // A pass from the start that filled early leaves what later passes mapped.
            self.mapped_upto = self.mapped_upto.max(mapped_upto);
            return Ok(SwapJob {
                dir: self.dir.clone(),
                manifest: None,
                cleaned_upto,
            });
        };
        if let Err(err) = manifest.install(&self.dir) {
            // Half installed: what is on disk no longer matches this log. Like a failed
            // fsync, the log refuses writes until it is reopened, and opening completes
            // the swap from the manifest.
            self.syncs
                .fail(format!("a compaction swap failed halfway: {err}"));
            return Err(err);
        }
        for &base in &manifest.inputs {
            self.forget_sealed(base);
        }
        for (base, summary) in compacted.outputs {
            self.sealed.insert(base, summary);
        }
        self.cleaned_upto = self.cleaned_upto.max(cleaned_upto);
        self.mapped_upto = self.mapped_upto.max(mapped_upto);
        self.segments_changed += 1;
        Ok(SwapJob {
            dir: self.dir.clone(),
            manifest: Some(manifest),
            cleaned_upto,
        })
    }
}
