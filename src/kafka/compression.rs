//! Compressed record batches: the records section of a produced batch decompressed
//! (gzip, snappy, lz4 or zstd, as Kafka's `compression.type` names them), within a
//! bound. strom stores records uncompressed, so that a Fetch sends stored bytes.
//!
//! A small compressed batch can hold a huge one (100 MB of zeros is 100 KB of gzip),
//! so output is bounded twice: one batch decompresses to at most `limit` bytes (the
//! server's `max_request_bytes`), and every batch being decompressed or appended
//! holds its output's bytes in a server-wide pool (`pool.rs`), taken before it
//! decompresses: a first guess from the compressed size, and if the output outgrows
//! it, the whole `limit`, waited for with nothing held (so that two batches each
//! holding part of the pool never wait for each other).

use std::io::Read;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::errors::{code, Refusal};
use super::pool::BytesPool;

/// Kafka's codec numbers, the low three bits of a batch's attributes.
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// The first guess of a batch's output: this many times its compressed size (log
/// lines compress 5 to 20 times), at least `FIRST_GUESS_MIN`.
const FIRST_GUESS_RATIO: usize = 32;
const FIRST_GUESS_MIN: usize = 1 << 20;

/// The header xerial's snappy-java writes (and librdkafka, for Java's sake): Kafka's
/// snappy batches are framed by it, or are one raw snappy block.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// `data` decompressed with `codec`, at most `limit` bytes, and its hold on `pool`, to
/// keep until the records are appended. Runs on a blocking thread.
pub async fn decompress(
    pool: &BytesPool,
    codec: i16,
    data: Bytes,
    limit: usize,
) -> Result<(Bytes, OwnedSemaphorePermit), Refusal> {
    let limit = limit.min(pool.size());
    let guess = limit.min(
        data.len()
            .saturating_mul(FIRST_GUESS_RATIO)
            .max(FIRST_GUESS_MIN),
    );
    // The decoder's own buffers are held too: zstd's window, lz4's blocks.
    let overhead = match codec {
        ZSTD => zstd_window(&data).unwrap_or(0).min(MAX_ZSTD_WINDOW) as usize,
        LZ4 => 4 << 20,
        _ => 64 << 10,
    };
    let held = pool.take(guess + overhead).await;
    match run(codec, data.clone(), guess).await {
        Err(Outgrew) if guess < limit => {}
        Err(Outgrew) => return Err(too_large(limit)),
        Ok(done) => return done.map(|out| (out, held)),
    }
    drop(held);
    let held = pool.take(limit + overhead).await;
    match run(codec, data, limit).await {
        Err(Outgrew) => Err(too_large(limit)),
        Ok(done) => done.map(|out| (out, held)),
    }
}

/// The output passed its bound.
struct Outgrew;

fn too_large(limit: usize) -> Refusal {
    Refusal::new(
        code::MESSAGE_TOO_LARGE,
        format!(
            "the batch decompresses to more than {limit} bytes, the most this server takes (max_request_bytes): send smaller batches (batch.size)"
        ),
    )
}

fn damaged(codec: i16, why: impl std::fmt::Display) -> Refusal {
    Refusal::new(
        code::CORRUPT_MESSAGE,
        format!(
            "the batch's {} records could not be decompressed: {why}",
            name(codec)
        ),
    )
}

fn name(codec: i16) -> &'static str {
    match codec {
        GZIP => "gzip",
        SNAPPY => "snappy",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "compressed",
    }
}

async fn run(codec: i16, data: Bytes, limit: usize) -> Result<Result<Bytes, Refusal>, Outgrew> {
    tokio::task::spawn_blocking(move || inflate(codec, &data, limit))
        .await
        .expect("decompression does not panic")
}

/// Decompresses `data`; `Err(Outgrew)` past `limit` bytes.
fn inflate(codec: i16, data: &[u8], limit: usize) -> Result<Result<Bytes, Refusal>, Outgrew> {
    let read = |reader: &mut dyn Read| -> Result<Result<Bytes, Refusal>, Outgrew> {
        // Room for the whole bound at once: a Vec grown by doubling holds up to twice
        // what it read (a hostile-client sweep measured 2.4 GB from a 256 MiB pool).
        // Pages are only touched as bytes come.
        let mut out = Vec::with_capacity(limit + 1);
        match reader.take(limit as u64 + 1).read_to_end(&mut out) {
            Ok(n) if n > limit => Err(Outgrew),
            Ok(_) => {
                if out.len() < out.capacity() / 2 {
                    out.shrink_to_fit(); // what is kept until appended is what was read
                }
                Ok(Ok(Bytes::from(out)))
            }
            Err(err) => Ok(Err(damaged(codec, err))),
        }
    };
    match codec {
        GZIP => read(&mut flate2::read::MultiGzDecoder::new(data)),
        LZ4 => read(&mut lz4_flex::frame::FrameDecoder::new(data)),
        ZSTD if zstd_window(data).is_some_and(|w| w > MAX_ZSTD_WINDOW) => Ok(Err(Refusal::new(
            code::INVALID_RECORD,
            format!(
                "a zstd frame with a window of {} bytes: strom takes windows of at most {MAX_ZSTD_WINDOW} (zstd levels up to 19 use at most 8 MiB)",
                zstd_window(data).unwrap_or_default()
            ),
        ))),
        ZSTD => match ruzstd::decoding::StreamingDecoder::new(data) {
            Ok(mut decoder) => read(&mut decoder),
            Err(err) => Ok(Err(damaged(codec, err))),
        },
        SNAPPY => snappy(data, limit),
        other => Ok(Err(Refusal::new(
            code::UNSUPPORTED_COMPRESSION_TYPE,
            format!(
                "compression codec {other}: strom takes gzip (1), snappy (2), lz4 (3) and zstd (4)"
            ),
        ))),
    }
}

/// The largest zstd window taken: the decoder holds a window's bytes besides its
/// output, so it is bounded (and charged) too.
pub const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// A zstd frame's window size, from its header (RFC 8878, 3.1.1.1): the content size
/// for a single-segment frame, else the window descriptor's.
pub fn zstd_window(data: &[u8]) -> Option<u64> {
    let (magic, rest) = data.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*magic) != 0xFD2F_B528 {
        return None;
    }
    let (&descriptor, rest) = rest.split_first()?;
    if descriptor & 0x20 != 0 {
        // Single segment: the window is the content size, after the dictionary id.
        let dictionary = [0, 1, 2, 4][usize::from(descriptor & 3)];
        let size_bytes = [1, 2, 4, 8][usize::from(descriptor >> 6)];
        let field = rest.get(dictionary..dictionary + size_bytes)?;
        let mut size = [0u8; 8];
        size[..size_bytes].copy_from_slice(field);
        let size = u64::from_le_bytes(size);
        return Some(if size_bytes == 2 { size + 256 } else { size });
    }
    let window = *rest.first()?;
    let base = 1u64 << (10 + (window >> 3));
    Some(base + base / 8 * u64::from(window & 7))
}

/// A raw snappy block, or xerial's framing: the magic, two int32 versions, then
/// blocks each prefixed by its int32 length.
fn snappy(data: &[u8], limit: usize) -> Result<Result<Bytes, Refusal>, Outgrew> {
    let mut out = Vec::new();
    let block = |block: &[u8], out: &mut Vec<u8>| -> Result<Result<(), Refusal>, Outgrew> {
        let len = match snap::raw::decompress_len(block) {
            // A snappy element of n bytes makes at most 64 (a 3-byte copy): a block
            // claiming more than 22 times its size is damaged, and refused before its
            // claim is allocated and zeroed.
            Ok(len) if len > block.len().saturating_mul(22) + 64 => {
                return Ok(Err(damaged(
                    SNAPPY,
                    "a block claiming more than snappy can hold",
                )))
            }
            Ok(len) => len,
            Err(err) => return Ok(Err(damaged(SNAPPY, err))),
        };
        if out.len() + len > limit {
            return Err(Outgrew);
        }
        let start = out.len();
        out.resize(start + len, 0);
        match snap::raw::Decoder::new().decompress(block, &mut out[start..]) {
            Ok(n) if n == len => Ok(Ok(())),
            Ok(_) => Ok(Err(damaged(SNAPPY, "a block shorter than it says"))),
            Err(err) => Ok(Err(damaged(SNAPPY, err))),
        }
    };
    let Some(mut rest) = data.strip_prefix(&XERIAL_MAGIC[..]) else {
        return Ok(block(data, &mut out)?.map(|()| Bytes::from(out)));
    };
    if rest.len() < 8 {
        return Ok(Err(damaged(SNAPPY, "xerial framing without its versions")));
    }
    rest = &rest[8..];
    while !rest.is_empty() {
        let Some((len, after)) = rest.split_first_chunk::<4>() else {
            return Ok(Err(damaged(SNAPPY, "a block length cut short")));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len > after.len() {
            return Ok(Err(damaged(SNAPPY, "a block longer than the batch")));
        }
        if let Err(refusal) = block(&after[..len], &mut out)? {
            return Ok(Err(refusal));
        }
        rest = &after[len..];
    }
    Ok(Ok(Bytes::from(out)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xerial(blocks: &[&[u8]]) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for block in blocks {
            let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
            out.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            out.extend_from_slice(&compressed);
        }
        out
    }

    #[test]
    fn every_codec_round_trips_within_its_bound() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&data).unwrap();
        let zstd = ruzstd::encoding::compress_to_vec(
            &data[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let cases = [
            (GZIP, gzip(&data)),
            (LZ4, lz4.finish().unwrap()),
            (ZSTD, zstd),
            (SNAPPY, raw_snappy),
            (SNAPPY, xerial(&[&data[..300_000], &data[300_000..]])),
        ];
        for (codec, compressed) in cases {
            let out = inflate(codec, &compressed, data.len())
                .ok()
                .unwrap()
                .unwrap();
            assert_eq!(out, data, "codec {codec}");
            assert!(
                inflate(codec, &compressed, data.len() - 1).is_err(),
                "codec {codec} bound"
            );
        }
    }

    #[test]
    fn damage_is_refused_not_panicked_on() {
        let mut bad = gzip(b"hello hello hello");
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        for codec in [GZIP, SNAPPY, LZ4, ZSTD] {
            for data in [&bad[..], &[][..], &[0xff; 64][..], &XERIAL_MAGIC[..]] {
                if let Ok(Ok(out)) = inflate(codec, data, 1 << 20) {
                    assert!(out.len() <= 1 << 20);
                }
            }
        }
        let lying = xerial(&[b"abc"]);
        let mut cut = lying.clone();
        cut.truncate(lying.len() - 1);
        assert!(matches!(inflate(SNAPPY, &cut, 1 << 20), Ok(Err(_))));
        assert!(
            matches!(inflate(7, b"x", 1 << 20), Ok(Err(r)) if r.code == code::UNSUPPORTED_COMPRESSION_TYPE)
        );
    }

    #[test]
    fn a_large_zstd_window_and_a_lying_snappy_length_are_refused_before_decoding() {
        // A frame header with a 96 MiB window and no content size (hostile sweep).
        let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x84, 0x01, 0x00, 0x00];
        assert_eq!(zstd_window(&frame), Some(96 << 20));
        let refused = inflate(ZSTD, &frame, 64 << 20).ok().unwrap().unwrap_err();
        assert_eq!(refused.code, code::INVALID_RECORD, "{}", refused.message);
        let level_3 = ruzstd::encoding::compress_to_vec(
            &[7u8; 100_000][..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert!(zstd_window(&level_3).unwrap() <= MAX_ZSTD_WINDOW);
        // A raw snappy block claiming 60 MB in two bytes.
        let mut lying = Vec::new();
        let mut n = 60_000_000u32;
        while n >= 0x80 {
            lying.push(n as u8 | 0x80);
            n >>= 7;
        }
        lying.extend([n as u8, 0x00, b'a']);
        // Refused as damaged, not taken for a batch that outgrew the bound: its claim
        // was never allocated.
        let refused = inflate(SNAPPY, &lying, 16 << 20).ok().unwrap().unwrap_err();
        assert_eq!(refused.code, code::CORRUPT_MESSAGE, "{}", refused.message);
    }

    #[tokio::test]
    async fn a_bomb_is_refused_and_gives_its_hold_back() {
        let bytes = BytesPool::new(8 << 20);
        let pool = &bytes;
        let bomb = Bytes::from(gzip(&vec![0u8; 20 << 20])); // 20 MiB of zeros, ~20 KiB
        let refused = decompress(pool, GZIP, bomb, 4 << 20).await.unwrap_err();
        assert_eq!(refused.code, code::MESSAGE_TOO_LARGE);
        assert_eq!(bytes.available(), 8 << 20);
        // Output past the first guess takes the whole limit, and holds it.
        let big = Bytes::from(gzip(&vec![7u8; 3 << 20]));
        let (out, held) = decompress(pool, GZIP, big, 4 << 20).await.unwrap();
        assert_eq!(out.len(), 3 << 20);
        assert_eq!(
            bytes.available(),
            (4 << 20) - (64 << 10),
            "the limit and gzip's window"
        );
        drop(held);
        assert_eq!(bytes.available(), 8 << 20);
    }
}
