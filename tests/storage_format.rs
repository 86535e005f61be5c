//! `storage-format.md` and the code describe the same bytes: this test parses the
//! document's tables and compares them with the constants and encoders in `src/log/`.

use strom::log::files::{Checkpoint, CHECKPOINT_LEN, CHECKPOINT_MAGIC, CHECKPOINT_VERSION};
use strom::log::format::{FORMAT_VERSION, HEADER_FIELDS, HEADER_LEN};
use strom::log::index::{Entry, OffsetEntry, TimeEntry, OFFSET_ENTRY_SIZE, TIME_ENTRY_SIZE};
use strom::log::naming::{
    CHECKPOINT_FILE, CLEAN_SHUTDOWN_FILE, DELETED_SUFFIX, LOG_START_FILE, OFFSET_DIGITS,
};
use strom::log::record::*;

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/storage-format.md")).unwrap()
}

/// Rows of the first table after the heading `## {section}`, as cells.
fn table(doc: &str, section: &str) -> Vec<Vec<String>> {
    let start = doc
        .find(&format!("## {section}\n"))
        .unwrap_or_else(|| panic!("no section {section}"));
    doc[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // heading and separator
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// `(offset, size, field)` rows of a layout table.
fn layout(doc: &str, section: &str) -> Vec<(usize, usize, String)> {
    table(doc, section)
        .into_iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].clone()))
        .collect()
}

#[test]
fn batch_header_table_matches_the_code() {
    let doc = doc();
    let rows = layout(&doc, "Record batch");
    let code: Vec<_> = HEADER_FIELDS
        .iter()
        .map(|&(name, at, size)| (at, size, name.to_string()))
        .collect();
    assert_eq!(rows, code);
    let (last_at, last_size, _) = rows.last().unwrap();
    assert_eq!(last_at + last_size, HEADER_LEN);
    assert!(doc.contains(&format!("{HEADER_LEN}-byte header (`HEADER_LEN`)")));
    assert!(doc.contains(&format!("format version, `{FORMAT_VERSION}`")));
    // Fields are contiguous: each starts where the one before ends.
    for pair in rows.windows(2) {
        assert_eq!(pair[0].0 + pair[0].1, pair[1].0, "{pair:?}");
    }
}

#[test]
fn index_tables_match_the_encoders() {
    let doc = doc();
    let entry = OffsetEntry {
        rel_offset: 0x0403_0201,
        position: 0x0807_0605,
    };
    let mut bytes = Vec::new();
    entry.encode(&mut bytes);
    assert_eq!(bytes.len(), OFFSET_ENTRY_SIZE);
    assert_eq!(
        layout(&doc, "Offset index (`.index`)"),
        vec![(0, 4, "rel_offset".into()), (4, 4, "position".into())]
    );
    assert_eq!(&bytes[0..4], &entry.rel_offset.to_le_bytes());
    assert_eq!(&bytes[4..8], &entry.position.to_le_bytes());
    assert!(doc.contains(&format!(
        "{OFFSET_ENTRY_SIZE}-byte entries (`OFFSET_ENTRY_SIZE`)"
    )));

    let entry = TimeEntry {
        timestamp: 0x0102_0304_0506_0708,
        rel_offset: 9,
    };
    let mut bytes = Vec::new();
    entry.encode(&mut bytes);
    assert_eq!(bytes.len(), TIME_ENTRY_SIZE);
    assert_eq!(
        layout(&doc, "Time index (`.timeindex`)"),
        vec![(0, 8, "timestamp".into()), (8, 4, "rel_offset".into())]
    );
    assert_eq!(&bytes[0..8], &entry.timestamp.to_le_bytes());
    assert_eq!(&bytes[8..12], &9u32.to_le_bytes());
    assert!(doc.contains(&format!(
        "{TIME_ENTRY_SIZE}-byte entries (`TIME_ENTRY_SIZE`)"
    )));
}

#[test]
fn checkpoint_table_matches_the_encoder() {
    let doc = doc();
    let rows = layout(&doc, "Recovery checkpoint (`recovery-checkpoint`)");
    let names: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(
        names,
        [
            "magic",
            "version",
            "crc",
            "segment_base",
            "position",
            "next_offset",
            "max_timestamp"
        ]
    );
    assert_eq!(rows.last().map(|r| r.0 + r.1), Some(CHECKPOINT_LEN));
    let cp = Checkpoint {
        segment_base: 11,
        position: 22,
        next_offset: 33,
        max_timestamp: -44,
    };
    let bytes = cp.encode();
    let field = |name: &str| {
        let (at, size, _) = rows.iter().find(|r| r.2 == name).unwrap();
        &bytes[*at..at + size]
    };
    assert_eq!(field("magic"), CHECKPOINT_MAGIC);
    assert!(doc.contains(&format!(
        "ASCII `{}`",
        std::str::from_utf8(CHECKPOINT_MAGIC).unwrap()
    )));
    assert_eq!(field("version"), CHECKPOINT_VERSION.to_le_bytes());
    assert_eq!(field("crc"), crc32fast::hash(&bytes[16..]).to_le_bytes());
    assert_eq!(field("segment_base"), 11u64.to_le_bytes());
    assert_eq!(field("position"), 22u64.to_le_bytes());
    assert_eq!(field("next_offset"), 33u64.to_le_bytes());
    assert_eq!(field("max_timestamp"), (-44i64).to_le_bytes());
}

#[test]
fn log_start_table_matches_the_encoder() {
    use strom::log::files::{encode_log_start, LOG_START_LEN, LOG_START_MAGIC};
    let doc = doc();
    let rows = layout(&doc, "Log start offset (`log-start-offset`)");
    let names: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    assert_eq!(names, ["magic", "version", "crc", "log_start_offset"]);
    assert_eq!(rows.last().map(|r| r.0 + r.1), Some(LOG_START_LEN));
    let bytes = encode_log_start(0x0102_0304_0506_0708);
    let field = |name: &str| {
        let (at, size, _) = rows.iter().find(|r| r.2 == name).unwrap();
        &bytes[*at..at + size]
    };
    assert_eq!(field("magic"), LOG_START_MAGIC);
    assert_eq!(field("version"), 1u32.to_le_bytes());
    assert_eq!(field("crc"), crc32fast::hash(&bytes[16..]).to_le_bytes());
    assert_eq!(
        field("log_start_offset"),
        0x0102_0304_0506_0708u64.to_le_bytes()
    );
    assert!(doc.contains(&format!(
        "ASCII `{}`",
        std::str::from_utf8(LOG_START_MAGIC).unwrap()
    )));
}

#[test]
fn record_tags_match_the_code() {
    let doc = doc();
    let rows = table(&doc, "Record");
    let tags: Vec<(String, String)> = rows
        .iter()
        .filter(|r| !r[1].is_empty())
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let code = [
        (RECORD_TAG, "RECORD_TAG"),
        (OFFSET_TAG, "OFFSET_TAG"),
        (TIMESTAMP_TAG, "TIMESTAMP_TAG"),
        (KEY_TAG, "KEY_TAG"),
        (VALUE_TAG, "VALUE_TAG"),
        (HEADER_TAG, "HEADER_TAG"),
    ];
    let expected: Vec<(String, String)> = code
        .iter()
        .map(|(t, n)| (format!("`{t:#04X}`").replace("0X", "0x"), format!("`{n}`")))
        .collect();
    assert_eq!(tags, expected);
    assert!(doc.contains(
        &format!("then `{HEADER_NAME_TAG:#04X}` name and `{HEADER_VALUE_TAG:#04X}` value")
            .replace("0X", "0x")
    ));
    assert!(doc.contains(&format!("The first {FIXED_BODY_LEN} bytes of a body")));
}

#[test]
fn file_names_match_the_code() {
    let doc = doc();
    assert!(doc.contains(&format!("zero-padded to {OFFSET_DIGITS} digits")));
    assert!(doc.contains(&format!("| `{CHECKPOINT_FILE}` |")));
    assert!(doc.contains(&format!("| `{CLEAN_SHUTDOWN_FILE}` |")));
    assert!(doc.contains(&format!("| `{LOG_START_FILE}` |")));
    assert!(doc.contains(&format!("| `*.{DELETED_SUFFIX}` |")));
    assert!(doc.contains(&format!("\n`{:0width$}.log`", 1000, width = OFFSET_DIGITS)));
}

#[test]
fn group_journal_and_snapshot_tables_match_the_code() {
    use strom::groups::offsets::{
        encode_record, encode_snapshot, Committed, Offsets, ENTRY_FIXED_LEN, KIND_OFFSETS,
        RECORD_HEADER_LEN, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
    };
    let doc = doc();
    let field = |rows: &[(usize, usize, String)], name: &str| {
        let (at, size, _) = rows
            .iter()
            .find(|r| r.2 == name)
            .unwrap_or_else(|| panic!("no field {name}"));
        (*at, *size)
    };
    let read = |bytes: &[u8], (at, size): (usize, usize)| {
        let mut buf = [0u8; 16];
        buf[..size].copy_from_slice(&bytes[at..at + size]);
        u128::from_le_bytes(buf)
    };
    let topic: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
    let entry = (
        (topic, 7u32),
        Committed {
            offset: 1_000_000_007,
            metadata: "hi".into(),
            commit_ms: 1_700_000_000_123,
        },
    );
    // A journal record of one entry.
    let record_rows = layout(&doc, "Group journal record");
    let entry_rows = layout(&doc, "Group offset entry");
    let bytes = encode_record(4242, std::slice::from_ref(&entry));
    assert_eq!(field(&record_rows, "seq").0 + 8, RECORD_HEADER_LEN);
    assert_eq!(
        read(&bytes, field(&record_rows, "length")) as usize,
        bytes.len() - RECORD_HEADER_LEN
    );
    assert_eq!(read(&bytes, field(&record_rows, "seq")), 4242);
    assert_eq!(
        read(&bytes, field(&record_rows, "kind")),
        u128::from(KIND_OFFSETS)
    );
    assert_eq!(read(&bytes, field(&record_rows, "count")), 1);
    let crc = crc32fast::hash(&bytes[8..]);
    assert_eq!(read(&bytes, field(&record_rows, "crc")), u128::from(crc));
    let (last_at, last_size, _) = record_rows.last().unwrap();
    let e = &bytes[last_at + last_size..];
    assert_eq!(
        &e[field(&entry_rows, "topic id").0..][..16],
        &topic.to_be_bytes()
    );
    assert_eq!(read(e, field(&entry_rows, "partition")), 7);
    assert_eq!(read(e, field(&entry_rows, "offset")), 1_000_000_007);
    assert_eq!(
        read(e, field(&entry_rows, "commit time")),
        1_700_000_000_123
    );
    assert_eq!(read(e, field(&entry_rows, "metadata length")), 2);
    let (at, size, _) = entry_rows.last().unwrap();
    assert_eq!(at + size, ENTRY_FIXED_LEN);
    assert_eq!(&e[ENTRY_FIXED_LEN..], b"hi");
    // A snapshot of the same entry.
    let snap_rows = layout(&doc, "Group snapshot");
    let mut offsets = Offsets::default();
    offsets.apply([entry]);
    let snap = encode_snapshot(99, &offsets);
    assert_eq!(&snap[..8], SNAPSHOT_MAGIC);
    assert!(doc.contains(&format!(
        "`{}` (`SNAPSHOT_MAGIC`)",
        std::str::from_utf8(SNAPSHOT_MAGIC).unwrap()
    )));
    assert_eq!(
        read(&snap, field(&snap_rows, "version")),
        u128::from(SNAPSHOT_VERSION)
    );
    assert_eq!(read(&snap, field(&snap_rows, "seq")), 99);
    assert_eq!(read(&snap, field(&snap_rows, "count")), 1);
    let (at, size, _) = snap_rows.last().unwrap();
    assert_eq!(
        snap.len(),
        at + size + ENTRY_FIXED_LEN + 2 + 4,
        "entries, then a CRC"
    );
    let body = snap.len() - 4;
    assert_eq!(
        u32::from_le_bytes(snap[body..].try_into().unwrap()),
        crc32fast::hash(&snap[..body])
    );
}

#[test]
fn producer_snapshot_tables_match_the_encoder() {
    use strom::log::producers::snapshot::{encode, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
    use strom::log::producers::ProducerStates;
    use strom::log::ProducerInfo;
    let doc = doc();
    let header = layout(&doc, "Producer snapshot");
    assert_eq!(header.iter().map(|r| r.1).sum::<usize>(), 28);
    assert!(doc.contains(&format!(
        "ASCII `{}`",
        std::str::from_utf8(SNAPSHOT_MAGIC).unwrap()
    )));
    assert!(doc.contains(&format!("`{SNAPSHOT_VERSION}` (`SNAPSHOT_VERSION`)")));
    // One producer with two batches: the tables' sizes add up to the encoder's bytes,
    // and each field is where the tables put it.
    let mut states = ProducerStates::default();
    let p = ProducerInfo {
        id: 0x0102_0304_0506_0708,
        epoch: 9,
        base_sequence: 100,
    };
    states.record(&p, 3, 40, 0x1111, 10);
    states.record(
        &ProducerInfo {
            base_sequence: 103,
            ..p
        },
        2,
        43,
        0x2222,
        10,
    );
    let bytes = encode(50, &states);
    let producer_len: usize = [8, 2, 1, 1, 8].iter().sum();
    assert_eq!(bytes.len(), 28 + producer_len + 2 * 24);
    assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 50);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 1);
    let entry = &bytes[28..];
    assert_eq!(i64::from_le_bytes(entry[0..8].try_into().unwrap()), p.id);
    assert_eq!(i16::from_le_bytes(entry[8..10].try_into().unwrap()), 9);
    assert_eq!(entry[10], 2);
    assert_eq!(
        i64::from_le_bytes(entry[12..20].try_into().unwrap()),
        0x2222
    );
    let second = &entry[20 + 24..];
    assert_eq!(i32::from_le_bytes(second[0..4].try_into().unwrap()), 103);
    assert_eq!(i32::from_le_bytes(second[4..8].try_into().unwrap()), 104);
    assert_eq!(u64::from_le_bytes(second[8..16].try_into().unwrap()), 43);
    assert_eq!(u64::from_le_bytes(second[16..24].try_into().unwrap()), 44);
}

#[test]
fn share_group_tables_match_the_code() {
    use strom::groups::share::state::{ShareState, KIND_SHARE, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
    use strom::groups::share::window::{Change, State, Totals};
    use strom::groups::store::Journaled;
    let doc = doc();
    let read = |bytes: &[u8], at: usize, size: usize| {
        let mut buf = [0u8; 16];
        buf[..size].copy_from_slice(&bytes[at..at + size]);
        u128::from_le_bytes(buf)
    };
    let field = |section: &str, name: &str| {
        let rows = layout(&doc, section);
        let (at, size, _) = rows
            .iter()
            .find(|r| r.2 == name)
            .unwrap_or_else(|| panic!("no field {name} in {section}"))
            .clone();
        (at, size)
    };
    // The state table's values are the code's.
    for row in table(&doc, "Share groups")
        .iter()
        .skip_while(|r| r.len() != 3)
    {
        let value: u8 = row[0].parse().unwrap();
        let state = State::from_u8(value).unwrap();
        assert_eq!(
            format!("{state:?}").to_lowercase(),
            row[1].replace(' ', ""),
            "state {value}"
        );
    }
    let topic: u128 = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
    let slot = Change::Slot {
        offset: 1_007,
        state: State::Exhausted,
        count: 4,
        until: 1_700_000_000_123,
    };
    let start = Change::Start {
        offset: 77,
        totals: Totals {
            accepted: 5,
            dead_lettered: 6,
            lost: 7,
        },
    };
    let bytes = ShareState::encode_record(4242, &[((topic, 3), slot), ((topic, 3), start)]);
    let (kind_at, _) = field("Share journal record", "kind");
    assert_eq!(bytes[kind_at], KIND_SHARE);
    assert_eq!(read(&bytes, 17, 4), 2);
    let (head_at, head_size, _) = layout(&doc, "Share journal record").last().unwrap().clone();
    let e = &bytes[head_at + head_size..];
    assert_eq!(&e[..16], &topic.to_be_bytes());
    let (p_at, p_size) = field("Share entry head", "partition");
    assert_eq!(read(e, p_at, p_size), 3);
    let (tag_at, _) = field("Share entry head", "tag");
    assert_eq!(e[tag_at], 0);
    let body = &e[tag_at + 1..];
    let f = |name| field("Share slot change", name);
    assert_eq!(read(body, f("offset").0, 8), 1_007);
    assert_eq!(body[f("state").0], State::Exhausted as u8);
    assert_eq!(read(body, f("delivery count").0, 2), 4);
    assert_eq!(read(body, f("until").0, 8), 1_700_000_000_123);
    let slot_len = layout(&doc, "Share slot change")
        .last()
        .map(|r| r.0 + r.1)
        .unwrap();
    let e2 = &body[slot_len..];
    assert_eq!(e2[tag_at], 1);
    let b2 = &e2[tag_at + 1..];
    let g = |name| field("Share start change", name);
    assert_eq!(read(b2, g("start offset").0, 8), 77);
    assert_eq!(read(b2, g("accepted").0, 8), 5);
    assert_eq!(read(b2, g("dead-lettered").0, 8), 6);
    assert_eq!(read(b2, g("lost").0, 8), 7);
    // A snapshot.
    let mut state = ShareState::default();
    state.apply(vec![((topic, 3), start), ((topic, 3), slot)]);
    let snap = state.encode_snapshot(99);
    assert_eq!(&snap[..8], SNAPSHOT_MAGIC);
    assert!(doc.contains(&format!(
        "`{}` (`SNAPSHOT_MAGIC`",
        std::str::from_utf8(SNAPSHOT_MAGIC).unwrap()
    )));
    assert_eq!(
        read(&snap, field("Share snapshot", "version").0, 4),
        u128::from(SNAPSHOT_VERSION)
    );
    assert_eq!(read(&snap, field("Share snapshot", "seq").0, 8), 99);
    assert!(doc.contains(&format!("`kind` is `{KIND_SHARE}` (`KIND_SHARE`)")));
}
