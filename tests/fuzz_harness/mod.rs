//! What each fuzz target does with its input, shared by the targets in `fuzz/` (which
//! include this file by path) and by `tests/fuzz_regressions.rs` (which runs the
//! checked-in seeds and every input a fuzzer ever crashed on through the same code with
//! the stable toolchain). It uses only the crate's public API and the standard library,
//! so it compiles in both places.
//!
//! Every function here must return normally for any input: an error from strom is an
//! acceptable answer to damaged bytes, a panic (including a failed `assert!` below, each
//! of which states a documented guarantee) or a hang is a bug.
//!
//! The file-based targets take their input as a small container (see `Input`): a flags
//! byte and a few fixed-width fields first, then length-prefixed chunks that become the
//! files. Every field is always read, whatever the flags say, so that flipping a flag
//! does not shift the bytes of the files after it.

// Each fuzz target uses one entry point of this module; the rest is dead code there.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use strom::broker::topic::{PartitionsCreated, TopicConfig, TopicMetadata};
use strom::groups::offsets::{encode_record, encode_snapshot, Committed, Offsets};
use strom::groups::store::{GroupFiles, JOURNAL_FILE};
use strom::log::files::Checkpoint;
use strom::log::format::{self, check_header};
use strom::log::naming::{segment_path, SegmentFile, CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE};
use strom::log::HEADER_LEN;
use strom::log::{BatchBuilder, BatchHeader, FlushPolicy, Header, Log, LogConfig, Record};
use strom::Error;

/// Reads a log may make before the harness stops following it: every read advances by
/// at least one offset, and offsets can be far apart, so this bounds a run's time.
const MAX_READS: usize = 256;

/// Small segments and indexes, so that a few KiB of input reach rolls, several index
/// entries and full indexes.
pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        index_max_bytes: 64,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    }
}

/// A scratch directory for one fuzzing process: under `$STROM_FUZZ_SCRATCH` if set
/// (`scripts/fuzz.sh` points it at a fresh directory in /dev/shm, so the many small
/// writes and fsyncs of each run stay in memory), else the system's temp directory.
pub fn scratch_dir(target: &str) -> PathBuf {
    let root = std::env::var_os("STROM_FUZZ_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    root.join(format!("strom-fuzz-{target}-{}", std::process::id()))
}

/// Empties `dir` (creating it if needed), so each run starts from nothing.
fn reset_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => panic!("cannot clear scratch directory {}: {err}", dir.display()),
    }
    fs::create_dir_all(dir).expect("create scratch directory");
}

/// The fuzz input of a file-based target, read front to back. Past its end every field
/// reads as zero and every chunk as empty, so any input is a valid container.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.bytes())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.bytes())
    }
    /// A chunk: a u16 length, then that many bytes (fewer if the input ends first).
    fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_le_bytes(self.bytes())).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk
    }
}

/// Builds the container `Input` reads: fixed fields are written by the caller with
/// `extend_from_slice`, chunks with `put_chunk`.
fn put_chunk(out: &mut Vec<u8>, chunk: &[u8]) {
    let len = u16::try_from(chunk.len()).expect("seed chunks are small");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(chunk);
}

/// Stores a correct CRC in each batch of `log` that its header frames, front to back.
/// A random mutation almost never keeps a CRC valid, so without this the fuzzer would
/// rarely get past the CRC check to the checks behind it.
fn seal_crcs(log: &mut [u8]) {
    let mut at = 0;
    while log.len() - at >= HEADER_LEN {
        let len = BatchHeader::parse(&log[at..]).length as usize;
        if len <= HEADER_LEN || len > log.len() - at {
            break;
        }
        format::seal_crc(&mut log[at..at + len]);
        at += len;
    }
}

/// Target `records`: `data` as one stored batch, header included.
pub fn records(data: &[u8]) {
    let checked = check_header(data, None, data.len());
    if data.len() >= HEADER_LEN {
        let header = BatchHeader::parse(data);
        if let Ok(checked) = checked {
            assert_eq!(checked, header, "check_header returns the parsed header");
        }
    }
    if let Ok(views) = strom::log::records(data) {
        let header = BatchHeader::parse(data);
        assert_eq!(views.len(), header.record_count as usize);
        for (i, view) in views.iter().enumerate() {
            assert_eq!(view.offset, header.base_offset + i as u64);
            // Headers are read lazily; walking them must not panic either.
            for (name, value) in view.headers() {
                std::hint::black_box((name, value));
            }
        }
    }
}

/// Target `checkpoint`: `data` as a `recovery-checkpoint` file.
pub fn checkpoint(data: &[u8]) {
    if let Some(checkpoint) = Checkpoint::decode(data) {
        // Every byte is covered by the magic, the version or the CRC, so the only bytes
        // that decode are the ones `encode` writes.
        assert_eq!(
            &checkpoint.encode()[..],
            data,
            "decode accepted foreign bytes"
        );
    }
}

/// Target `group_files`: a consumer group's directory, `data` being a 4-byte length, that
/// many bytes of snapshot (`offsets.00000000000000000000.snap`), and the rest journal.
/// Opening it must not panic; what opens once must open again to the same offsets (an
/// open folds the journal into a new snapshot).
pub fn group_files(scratch: &Path, data: &[u8]) {
    let dir = scratch.join(format!("g.{:032x}", 1));
    reset_dir(&dir);
    let (len, rest) = data.split_at(data.len().min(4));
    let mut len_bytes = [0u8; 4];
    len_bytes[..len.len()].copy_from_slice(len);
    let snap_len = (u32::from_le_bytes(len_bytes) as usize).min(rest.len());
    let (snapshot, journal) = rest.split_at(snap_len);
    fs::write(dir.join(format!("offsets.{:020}.snap", 0)), snapshot).expect("write snapshot");
    fs::write(dir.join(JOURNAL_FILE), journal).expect("write journal");
    if let Ok((files, offsets)) = GroupFiles::<Offsets>::open(&dir) {
        drop(files);
        let (_, again) =
            GroupFiles::<Offsets>::open(&dir).expect("a group that opened once opens again");
        assert_eq!(again, offsets, "reopening changed the offsets");
    }
}

/// A `group_files` input: a snapshot of `offsets` at journal position 0, then `records`.
pub fn group_files_input(offsets: &Offsets, records: &[Vec<((u128, u32), Committed)>]) -> Vec<u8> {
    let snapshot = encode_snapshot(0, offsets);
    let mut out = (snapshot.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&snapshot);
    let mut seq = 0u64;
    for entries in records {
        let record = encode_record(seq, entries);
        seq += record.len() as u64;
        out.extend_from_slice(&record);
    }
    out
}

/// Target `share_files`: a share group's directory, `data` as for `group_files` (a
/// 4-byte length, that many bytes of `share.00000000000000000000.snap`, the rest
/// `share.journal`). Opening must not panic or allocate past the window bound; what
/// opens once opens again to the same state; and the state takes a fetch, the
/// acknowledgement of what it handed out, the end of every lock, and a cut to a short
/// log without panicking.
pub fn share_files(scratch: &Path, data: &[u8]) {
    use strom::groups::share::config::ShareConfig;
    use strom::groups::share::state::ShareState;
    use strom::groups::share::window::{Ack, Candidate, Offered, Want};
    let dir = scratch.join(format!("s.{:032x}", 1));
    reset_dir(&dir);
    let (len, rest) = data.split_at(data.len().min(4));
    let mut len_bytes = [0u8; 4];
    len_bytes[..len.len()].copy_from_slice(len);
    let snap_len = (u32::from_le_bytes(len_bytes) as usize).min(rest.len());
    let (snapshot, journal) = rest.split_at(snap_len);
    fs::write(dir.join(format!("share.{:020}.snap", 0)), snapshot).expect("write snapshot");
    fs::write(dir.join("share.journal"), journal).expect("write journal");
    let Ok((files, state)) = GroupFiles::<ShareState>::open(&dir) else {
        return;
    };
    drop(files);
    let canonical = |state: &ShareState| {
        let mut parts: Vec<_> = state
            .partitions
            .iter()
            .map(|(tp, p)| {
                let mut changes = Vec::new();
                p.snapshot(&mut changes);
                (*tp, format!("{changes:?}"))
            })
            .collect();
        parts.sort();
        parts
    };
    let (_, again) =
        GroupFiles::<ShareState>::open(&dir).expect("a share group that opened once opens again");
    assert_eq!(
        canonical(&again),
        canonical(&state),
        "reopening changed the state"
    );
    let cfg = ShareConfig::default();
    let mut state = state;
    for p in state.partitions.values_mut() {
        let mut changes = Vec::new();
        let (start, end) = (p.start(), p.end());
        assert!(end - start <= 100_000, "a window of {} slots", end - start);
        let records: Vec<Candidate> = (start..end.saturating_add(3))
            .map(|offset| Candidate {
                offset,
                key: offset % 3,
                deliver_at: 0,
                size: 1,
            })
            .collect();
        p.restore_records(&records, &mut changes);
        let offered = Offered {
            from: p.start(),
            end: end.saturating_add(3),
            records: &records,
        };
        let got = p.acquire(1, offered, Want::records(10), 0, &cfg, &mut changes);
        for (offset, _) in got.iter().take(5) {
            p.acknowledge(1, *offset, Ack::Accept, 1, &cfg, &mut changes)
                .expect("the member holds what it was just handed");
        }
        p.expire(i64::MAX, &cfg, &mut changes);
        p.fit_to_log(start.saturating_add(1), &mut changes);
        let _ = p.counts(0, end);
    }
}

/// Target `topic_json`: `data` as `topic.json` in a topic directory under `scratch`.
pub fn topic_json(scratch: &Path, data: &[u8]) {
    // An old topic.json has no name; the directory then names the topic.
    let dir = scratch.join("orders");
    reset_dir(&dir);
    fs::write(dir.join("topic.json"), data).expect("write topic.json");
    if let Ok(meta) = TopicMetadata::read(&dir) {
        // What was accepted once must survive being written back and read again, as
        // the server does when a topic's config changes.
        meta.write(&dir).expect("write topic.json back");
        let again = TopicMetadata::read(&dir).expect("a written topic.json reads back");
        assert_eq!(format!("{again:?}"), format!("{meta:?}"));
    }
}

/// A broker with topic `t` of three partitions, opened once per process under
/// `scratch` (a produce is only prepared, never appended, so it stays empty).
fn produce_broker(scratch: &Path) -> &'static strom::broker::Broker {
    static BROKER: std::sync::OnceLock<std::sync::Arc<strom::broker::Broker>> =
        std::sync::OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = scratch.join("produce-broker");
        reset_dir(&dir);
        let broker = std::sync::Arc::new(
            strom::broker::Broker::open(&dir, strom::broker::Limits::default())
                .expect("open a broker"),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let config = [("durability".to_string(), "page_cache".to_string())].into();
        runtime
            .block_on(broker.create_topic("t", 3, &config))
            .expect("create topic t");
        broker
    })
}

/// Target `produce`: `data` as the protobuf bytes of a `ProduceRequest`, decoded as the
/// server decodes it and checked and encoded into a batch as the server does (not
/// appended). The topic is always `t`, so the records are reached.
pub fn produce(scratch: &Path, data: &[u8]) {
    use prost::Message;
    let broker = produce_broker(scratch);
    let Ok(mut request) = strom::grpc::pb::ProduceRequest::decode(data) else {
        return;
    };
    request.topic = "t".into();
    let _ = strom::grpc::produce::prepare(broker, request);
}

/// Reads `log` from its start to its end the way a consumer does: following
/// `next_offset`, and skipping a damaged range to where the error says reading resumes.
/// Stops at any other error.
fn read_everything(log: &Log, max_bytes: usize) {
    let end = log.next_offset();
    let mut offset = log.log_start_offset();
    for _ in 0..MAX_READS {
        if offset >= end {
            return;
        }
        match log.read(offset, max_bytes) {
            Ok(read) => {
                for chunk in &read.chunks {
                    check_whole_batches(chunk);
                }
                assert!(
                    read.next_offset > offset,
                    "a read at {offset}, below the end {end}, did not advance: a consumer would spin"
                );
                offset = read.next_offset;
            }
            Err(Error::DamagedRange {
                from, resume_at, ..
            }) => {
                assert!(
                    resume_at > from,
                    "damage at {from} says to resume at {resume_at}: a consumer would spin"
                );
                offset = resume_at;
            }
            Err(_) => return,
        }
    }
}

/// A read returns whole batches whose headers and CRCs were checked (`Log::read`); the
/// records inside are decoded as a consumer would, where failing is allowed.
fn check_whole_batches(chunk: &[u8]) {
    let mut rest = chunk;
    while !rest.is_empty() {
        let header = check_header(rest, None, rest.len())
            .unwrap_or_else(|reason| panic!("a read returned a bad batch: {reason}"));
        let (batch, after) = rest.split_at(header.length as usize);
        assert_eq!(
            format::batch_crc(batch),
            header.crc,
            "a read returned a bad CRC"
        );
        let _ = strom::log::records(batch);
        rest = after;
    }
}

/// Timestamp lookups at the edges and at one chosen by the input.
fn look_up_timestamps(log: &Log, ts: i64) {
    for ts in [i64::MIN, 0, ts, i64::MAX] {
        let _ = log.offset_for_timestamp(ts);
    }
}

/// Bytes to ask for in one read: from a byte of the input, so that reads stop inside
/// segments as well as at their ends.
fn max_read_bytes(byte: u8) -> usize {
    64 * (1 + usize::from(byte))
}

pub mod recovery_flags {
    /// Seal the CRCs of segment 0's batches.
    pub const CRC_SEG0: u8 = 1;
    /// Write a `recovery-checkpoint`...
    pub const CHECKPOINT: u8 = 2;
    /// ...encoded from the fields (so its CRC is right) rather than the raw chunk.
    pub const CHECKPOINT_FIELDS: u8 = 4;
    /// Write a second segment.
    pub const SEG1: u8 = 8;
    /// Write the clean-shutdown marker.
    pub const CLEAN: u8 = 16;
    /// Leave out segment 0's `.index`, or its `.timeindex`.
    pub const NO_INDEX: u8 = 32;
    pub const NO_TIMEINDEX: u8 = 64;
    /// Seal the CRCs of segment 1's batches.
    pub const CRC_SEG1: u8 = 128;
}

/// The parts of a `recovery` input. Layout: flags u8, read size u8, timestamp i64,
/// segment 0's `.log`, `.index` and `.timeindex` chunks, the checkpoint as a raw chunk
/// and as fields (segment selector u8: even is segment 0, odd segment 1; position u32;
/// next offset as a signed distance i32 from the segment's base; max timestamp i64),
/// segment 1's base offset u32 and its three chunks.
pub struct RecoveryInput<'a> {
    pub flags: u8,
    pub read_size: u8,
    pub timestamp: i64,
    pub seg0: [&'a [u8]; 3],
    pub raw_checkpoint: &'a [u8],
    pub checkpoint_seg1: bool,
    pub checkpoint_position: u32,
    pub checkpoint_next: i32,
    pub checkpoint_max_ts: i64,
    pub seg1_base: u32,
    pub seg1: [&'a [u8]; 3],
}

impl<'a> RecoveryInput<'a> {
    fn parse(data: &'a [u8]) -> RecoveryInput<'a> {
        let mut input = Input(data);
        RecoveryInput {
            flags: input.u8(),
            read_size: input.u8(),
            timestamp: input.i64(),
            seg0: [input.chunk(), input.chunk(), input.chunk()],
            raw_checkpoint: input.chunk(),
            checkpoint_seg1: input.u8() % 2 == 1,
            checkpoint_position: input.u32(),
            checkpoint_next: input.i32(),
            checkpoint_max_ts: input.i64(),
            seg1_base: input.u32(),
            seg1: [input.chunk(), input.chunk(), input.chunk()],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags, self.read_size];
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        for chunk in self.seg0 {
            put_chunk(&mut out, chunk);
        }
        put_chunk(&mut out, self.raw_checkpoint);
        out.push(u8::from(self.checkpoint_seg1));
        out.extend_from_slice(&self.checkpoint_position.to_le_bytes());
        out.extend_from_slice(&self.checkpoint_next.to_le_bytes());
        out.extend_from_slice(&self.checkpoint_max_ts.to_le_bytes());
        out.extend_from_slice(&self.seg1_base.to_le_bytes());
        for chunk in self.seg1 {
            put_chunk(&mut out, chunk);
        }
        out
    }
}

const SEGMENT_FILES: [SegmentFile; 3] =
    [SegmentFile::Log, SegmentFile::Index, SegmentFile::TimeIndex];

/// Target `recovery`: the input as a partition directory (segment 0, optionally a
/// second segment, a checkpoint and the clean-shutdown marker), opened as after a crash
/// or a clean shutdown, read whole, searched by time, and appended to.
pub fn recovery(scratch: &Path, data: &[u8]) {
    use recovery_flags::*;
    let input = RecoveryInput::parse(data);
    let dir = scratch.join("partition");
    reset_dir(&dir);
    let flags = input.flags;
    for (kind, bytes) in SEGMENT_FILES.into_iter().zip(input.seg0) {
        let left_out = match kind {
            SegmentFile::Index => flags & NO_INDEX != 0,
            SegmentFile::TimeIndex => flags & NO_TIMEINDEX != 0,
            SegmentFile::Log => false,
        };
        let mut bytes = bytes.to_vec();
        if kind == SegmentFile::Log && flags & CRC_SEG0 != 0 {
            seal_crcs(&mut bytes);
        }
        if !left_out {
            fs::write(segment_path(&dir, 0, kind), bytes).expect("write segment 0");
        }
    }
    // Base 0 is segment 0's; then there is no second segment.
    let seg1_base = u64::from(input.seg1_base);
    if flags & SEG1 != 0 && seg1_base != 0 {
        for (kind, bytes) in SEGMENT_FILES.into_iter().zip(input.seg1) {
            let mut bytes = bytes.to_vec();
            if kind == SegmentFile::Log && flags & CRC_SEG1 != 0 {
                seal_crcs(&mut bytes);
            }
            fs::write(segment_path(&dir, seg1_base, kind), bytes).expect("write segment 1");
        }
    }
    if flags & CHECKPOINT != 0 {
        let bytes = if flags & CHECKPOINT_FIELDS != 0 {
            let base = if input.checkpoint_seg1 { seg1_base } else { 0 };
            let checkpoint = Checkpoint {
                segment_base: base,
                position: u64::from(input.checkpoint_position),
                next_offset: base.saturating_add_signed(i64::from(input.checkpoint_next)),
                max_timestamp: input.checkpoint_max_ts,
            };
            checkpoint.encode().to_vec()
        } else {
            input.raw_checkpoint.to_vec()
        };
        fs::write(dir.join(CHECKPOINT_FILE), bytes).expect("write checkpoint");
    }
    if flags & CLEAN != 0 {
        fs::write(dir.join(CLEAN_SHUTDOWN_FILE), b"").expect("write marker");
    }

    let Ok((mut log, _report)) = Log::open(&dir, log_config()) else {
        return;
    };
    read_everything(&log, max_read_bytes(input.read_size));
    look_up_timestamps(&log, input.timestamp);
    // A server appends to whatever the open left; that must not panic either.
    let mut batch = BatchBuilder::default();
    batch
        .push(&Record {
            value: Bytes::from_static(b"after recovery"),
            timestamp_ms: 7,
            ..Record::default()
        })
        .expect("a valid record");
    let _ = log.append(&mut batch.build().expect("one record"));
}

pub mod sealed_flags {
    /// Seal the CRCs of the fuzzed segment's batches.
    pub const CRC: u8 = 1;
    /// Leave out its `.index`, or its `.timeindex`.
    pub const NO_INDEX: u8 = 2;
    pub const NO_TIMEINDEX: u8 = 4;
}

/// The parts of a `sealed_segment` input. Layout: flags u8, read size u8, timestamp
/// i64, then the `.log`, `.index` and `.timeindex` chunks of segment 0.
pub struct SealedInput<'a> {
    pub flags: u8,
    pub read_size: u8,
    pub timestamp: i64,
    pub files: [&'a [u8]; 3],
}

impl<'a> SealedInput<'a> {
    fn parse(data: &'a [u8]) -> SealedInput<'a> {
        let mut input = Input(data);
        SealedInput {
            flags: input.u8(),
            read_size: input.u8(),
            timestamp: input.i64(),
            files: [input.chunk(), input.chunk(), input.chunk()],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags, self.read_size];
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        for chunk in self.files {
            put_chunk(&mut out, chunk);
        }
        out
    }
}

/// A record of the logs built here: small enough that a 1 KiB segment holds several
/// batches, with a key and a header so that every field of the encoding is present.
fn sample_record(i: u64) -> Record {
    Record {
        key: Some(Bytes::from(format!("key-{i}"))),
        value: Bytes::from(format!("value {i} ").repeat(3)),
        headers: vec![Header {
            name: "trace".into(),
            value: Bytes::from(i.to_string()),
        }],
        // Not monotonic, so that time lookups have to scan.
        timestamp_ms: 1_700_000_000_000 + ((i * 7) % 11) as i64 * 1000,
    }
}

fn sample_batch(first: u64, n: u64) -> strom::log::PendingBatch {
    let mut builder = BatchBuilder::default();
    for i in first..first + n {
        builder.push(&sample_record(i)).expect("a valid record");
    }
    builder.build().expect("records")
}

/// A log of one sealed segment (base 0, several batches) and an active one, closed
/// cleanly in `dir`.
fn write_sample_log(dir: &Path) {
    let (mut log, _) = Log::open(dir, log_config()).expect("open sample log");
    while log.segment_count() < 2 {
        let next = log.next_offset();
        log.append(&mut sample_batch(next, 3)).expect("append");
    }
    let next = log.next_offset();
    log.append(&mut sample_batch(next, 2)).expect("append");
    log.close().expect("close sample log");
}

/// The valid rest of the directory a `sealed_segment` input completes: an active
/// segment, a checkpoint at its exact end and the clean-shutdown marker, as a clean
/// close leaves them. Built once per process.
pub struct SealedTemplate {
    /// Name and bytes of every file but segment 0's.
    files: Vec<(String, Vec<u8>)>,
    /// Base offset of the active segment: where segment 0 must end.
    active_base: u64,
    /// What reading the active segment alone returns.
    active_read: Vec<u8>,
    /// Segment 0's files as the log wrote them, for seeds.
    seg0: [Vec<u8>; 3],
}

impl SealedTemplate {
    /// Builds the template in `scratch` (which it may clear).
    pub fn create(scratch: &Path) -> SealedTemplate {
        let dir = scratch.join("template");
        reset_dir(&dir);
        write_sample_log(&dir);
        let seg0 = SEGMENT_FILES.map(|kind| fs::read(segment_path(&dir, 0, kind)).expect("seg 0"));
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).expect("list template") {
            let path = entry.expect("entry").path();
            if SEGMENT_FILES
                .iter()
                .any(|&kind| path == segment_path(&dir, 0, kind))
            {
                continue;
            }
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            files.push((name, fs::read(&path).expect("read template file")));
        }
        // Reading the active segment needs the log open, which consumes the clean
        // marker: read it from a copy.
        let copy = scratch.join("template-copy");
        reset_dir(&copy);
        for (name, bytes) in &files {
            fs::write(copy.join(name), bytes).expect("copy template");
        }
        for (kind, bytes) in SEGMENT_FILES.into_iter().zip(&seg0) {
            fs::write(segment_path(&copy, 0, kind), bytes).expect("copy template");
        }
        let (log, report) = Log::open(&copy, log_config()).expect("open template");
        assert!(report.clean, "the template log was closed cleanly");
        let bases = log.segment_bases();
        assert_eq!(bases.len(), 2, "one sealed segment and the active one");
        let active_base = bases[1];
        let active_read = read_range(&log, active_base);
        SealedTemplate {
            files,
            active_base,
            active_read,
            seg0,
        }
    }

    /// Target `sealed_segment`: segment 0 replaced by the input's files, then opened
    /// (cleanly, so segment 0 is a sealed segment opened only when read), read whole,
    /// searched by time; the active segment must read as before, and segment 0's files
    /// must not have changed.
    pub fn run(&self, scratch: &Path, data: &[u8]) {
        use sealed_flags::*;
        let input = SealedInput::parse(data);
        let dir = scratch.join("partition");
        reset_dir(&dir);
        for (name, bytes) in &self.files {
            fs::write(dir.join(name), bytes).expect("copy template");
        }
        let mut written: Vec<(PathBuf, Option<Vec<u8>>)> = Vec::new();
        for (kind, bytes) in SEGMENT_FILES.into_iter().zip(input.files) {
            let path = segment_path(&dir, 0, kind);
            let left_out = match kind {
                SegmentFile::Index => input.flags & NO_INDEX != 0,
                SegmentFile::TimeIndex => input.flags & NO_TIMEINDEX != 0,
                SegmentFile::Log => false,
            };
            if left_out {
                written.push((path, None));
                continue;
            }
            let mut bytes = bytes.to_vec();
            if kind == SegmentFile::Log && input.flags & CRC != 0 {
                seal_crcs(&mut bytes);
            }
            fs::write(&path, &bytes).expect("write segment 0");
            written.push((path, Some(bytes)));
        }

        let (log, report) = Log::open(&dir, log_config()).expect("the template opens");
        assert!(
            report.clean,
            "the active segment and checkpoint are the template's"
        );
        read_everything(&log, max_read_bytes(input.read_size));
        look_up_timestamps(&log, input.timestamp);
        assert_eq!(
            read_range(&log, self.active_base),
            self.active_read,
            "damage in a sealed segment must leave the rest of the log readable"
        );
        drop(log);
        for (path, expected) in written {
            let now = match fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
                Err(err) => panic!("cannot read {}: {err}", path.display()),
            };
            assert!(
                now == expected,
                "reading a sealed segment changed {}",
                path.display()
            );
        }
    }
}

/// The stored bytes of every batch from `from` to the end of `log`.
fn read_range(log: &Log, from: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.next_offset() {
        let read = log.read(offset, 1 << 20).expect("the active segment reads");
        for chunk in &read.chunks {
            out.extend_from_slice(chunk);
        }
        offset = read.next_offset;
    }
    out
}

/// Seed inputs for every target, built with the log's own writer so they stay valid as
/// the format evolves: `(target, file name, bytes)`. `tests/fuzz_regressions.rs`
/// checks that `fuzz/corpus/` holds exactly these (and rewrites them on request).
pub fn seeds(scratch: &Path) -> Vec<(&'static str, String, Vec<u8>)> {
    use recovery_flags::*;
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_string(), bytes));
    };

    // share_files: an empty group; a snapshot of a window, then journal records.
    {
        use strom::groups::share::state::ShareState;
        use strom::groups::share::window::{Change, State, Totals};
        use strom::groups::store::Journaled;
        let share = |state: &ShareState, records: &[Vec<((u128, u32), Change)>]| {
            let snapshot = state.encode_snapshot(0);
            let mut out = (snapshot.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&snapshot);
            let mut seq = 0u64;
            for entries in records {
                let record = ShareState::encode_record(seq, entries);
                seq += record.len() as u64;
                out.extend_from_slice(&record);
            }
            out
        };
        add("share_files", "empty", share(&ShareState::default(), &[]));
        let slot = |offset, state, count| Change::Slot {
            offset,
            state,
            count,
            until: 0,
        };
        let mut state = ShareState::default();
        state.apply(vec![
            (
                (7, 0),
                Change::Reset {
                    offset: 10,
                    totals: Totals::default(),
                },
            ),
            ((7, 0), slot(10, State::Acquired, 1)),
            ((7, 0), slot(12, State::Accepted, 1)),
            (
                (7, 1),
                Change::Reset {
                    offset: 0,
                    totals: Totals::default(),
                },
            ),
        ]);
        let records = vec![
            vec![
                ((7, 0), slot(10, State::Available, 2)),
                ((7, 0), slot(11, State::Rejected, 1)),
            ],
            vec![(
                (7, 0),
                Change::Start {
                    offset: 11,
                    totals: Totals {
                        accepted: 1,
                        dead_lettered: 0,
                        lost: 0,
                    },
                },
            )],
        ];
        add(
            "share_files",
            "snapshot-and-journal",
            share(&state, &records),
        );
    }

    // group_files: an empty group; offsets in the snapshot and two commits after it.
    let committed = |offset: u64, metadata: &str| Committed {
        offset,
        metadata: metadata.to_string(),
        commit_ms: 1_700_000_000_000,
    };
    add(
        "group_files",
        "empty",
        group_files_input(&Offsets::default(), &[]),
    );
    let mut offsets = Offsets::default();
    offsets.apply([((7, 0), committed(5, "")), ((7, 1), committed(9, "m"))]);
    let records = vec![
        vec![((7, 0), committed(6, ""))],
        vec![((7, 1), committed(10, "x")), ((9, 3), committed(1, ""))],
    ];
    add(
        "group_files",
        "snapshot-and-journal",
        group_files_input(&offsets, &records),
    );

    let template = SealedTemplate::create(scratch);
    let dir = scratch.join("template");
    let file = |name: &str| fs::read(dir.join(name)).expect("template file");
    let seg = |base: u64, kind| fs::read(segment_path(&dir, base, kind)).expect("segment file");
    let [log0, index0, time0] = &template.seg0;
    let active = template.active_base;

    // records: the first batch of the sample log, and a one-record batch with no key.
    let first_len = BatchHeader::parse(log0).length as usize;
    add("records", "first-batch", log0[..first_len].to_vec());
    let active_log = seg(active, SegmentFile::Log);
    let active_first = BatchHeader::parse(&active_log).length as usize;
    add(
        "records",
        "batch-at-nonzero-offset",
        active_log[..active_first].to_vec(),
    );

    let checkpoint = file(CHECKPOINT_FILE);
    add("checkpoint", "valid", checkpoint.clone());
    let active_files = SEGMENT_FILES.map(|kind| seg(active, kind));
    let seg0 = [log0.as_slice(), index0, time0];

    let clean = RecoveryInput {
        flags: CHECKPOINT | SEG1 | CLEAN,
        read_size: 3,
        timestamp: 1_700_000_005_000,
        seg0,
        raw_checkpoint: &checkpoint,
        checkpoint_seg1: true,
        checkpoint_position: 0,
        checkpoint_next: 0,
        checkpoint_max_ts: 0,
        seg1_base: active as u32,
        seg1: active_files.each_ref().map(Vec::as_slice),
    };
    add("recovery", "clean-shutdown", clean.encode());
    // The same files after a crash: no marker, and a checkpoint (with a correct CRC)
    // in the middle of segment 0, so recovery scans from there.
    let crash = RecoveryInput {
        flags: CHECKPOINT | CHECKPOINT_FIELDS | SEG1,
        checkpoint_seg1: false,
        checkpoint_position: first_len as u32,
        checkpoint_next: 3,
        checkpoint_max_ts: BatchHeader::parse(log0).max_timestamp,
        ..clean
    };
    add("recovery", "crash-mid-segment", crash.encode());
    // One segment with a torn last batch and no checkpoint.
    let torn = &log0[..log0.len() - 10];
    let torn = RecoveryInput {
        flags: 0,
        seg0: [torn, &[], &[]],
        ..crash
    };
    add("recovery", "torn-tail", torn.encode());

    let sealed = SealedInput {
        flags: 0,
        read_size: 2,
        timestamp: 1_700_000_003_000,
        files: seg0,
    };
    add("sealed_segment", "intact", sealed.encode());
    let no_index = SealedInput {
        flags: sealed_flags::NO_INDEX | sealed_flags::NO_TIMEINDEX,
        ..sealed
    };
    add("sealed_segment", "no-indexes", no_index.encode());

    let meta = TopicMetadata {
        name: "orders".into(),
        id: "0123456789abcdef0123456789abcdef".into(),
        partitions: 3,
        config: TopicConfig::default(),
        overrides: Some(["retention.ms".to_string()].into()),
        created: vec![
            PartitionsCreated {
                count: 2,
                at_ms: 1_700_000_000_000,
            },
            PartitionsCreated {
                count: 1,
                at_ms: 1_800_000_000_000,
            },
        ],
    };
    let topic_dir = scratch.join("orders");
    reset_dir(&topic_dir);
    meta.write(&topic_dir).expect("write topic.json");
    add(
        "topic_json",
        "valid",
        fs::read(topic_dir.join("topic.json")).expect("topic.json"),
    );
    add(
        "topic_json",
        "legacy-no-name",
        br#"{"partitions":1,"config":{"durability":"page_cache"}}"#.to_vec(),
    );

    // produce: a request of keyed records with headers, as the Rust client encodes it.
    {
        use prost::Message;
        use strom::grpc::pb;
        let records = (0..3u8)
            .map(|i| pb::Record {
                key: (i != 1).then(|| Bytes::from(vec![b'k', i])),
                value: Bytes::from(vec![i; 40 * usize::from(i)]),
                headers: vec![pb::Header {
                    name: "h".into(),
                    value: Bytes::from_static(b"v"),
                }],
                timestamp_ms: 1_700_000_000_000,
                ..Default::default()
            })
            .collect();
        let request = pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(1),
            records,
            durability: 1,
            ..Default::default()
        };
        add("produce", "three-records", request.encode_to_vec());
    }
    seeds
}
