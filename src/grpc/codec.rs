//! The protobuf codec of every service: prost's, except that
//!
//! - a request that does not decode (malformed protobuf, a `string` that is not UTF-8) is
//!   INVALID_ARGUMENT, the client's mistake, rather than the INTERNAL that tonic-prost
//!   gives every decode error;
//! - a request (not a response) with more than `MAX_ENTRIES` top-level fields (the
//!   entries of its lists) is refused before it is decoded: an empty entry is 2 bytes
//!   sent and up to 64 decoded, so a 16 MiB CommitOffsets of them held 920 MB;
//! - a message is encoded into room reserved for its whole length. tonic's send buffer
//!   starts at 8 KiB and prost does not reserve, so a 1 MB produce request grew it by
//!   doubling, copying what was already written at every step (BENCHMARKS.md).

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_prost::ProstDecoder;

/// Named by `build.rs` as the generated services' codec.
pub struct StromCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StromCodec<T, U> {
    fn default() -> Self {
        StromCodec(PhantomData)
    }
}

impl<T, U> Codec for StromCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = StromEncoder<T>;
    type Decoder = StromDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        StromEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StromDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

pub struct StromEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for StromEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // `encode` would measure the message again only to check that `buf` has room,
        // which a BytesMut always has (it grows).
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Most top-level fields a request message may have: twice the largest list a request
/// decoded here may carry (100,000 offsets in a commit). Produce requests are decoded
/// by `grpc/direct`, and held to `max_records_per_request` there.
pub const MAX_ENTRIES: usize = 200_000;

/// Counts the top-level fields of an encoded message, stopping past `MAX_ENTRIES`; a
/// malformed message is left for prost to refuse (the count so far is returned). A
/// group (wire types 3 and 4, which no strom message uses) is refused: prost skips one
/// it does not know, and the count would stop at it.
fn top_level_fields(mut bytes: &[u8]) -> Result<usize, Status> {
    let mut count = 0;
    while !bytes.is_empty() && count <= MAX_ENTRIES {
        let Ok(key) = prost::encoding::decode_varint(&mut bytes) else {
            break;
        };
        let skip = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut bytes) {
                Ok(len) => usize::try_from(len).unwrap_or(usize::MAX),
                Err(_) => break,
            },
            5 => 4,
            3 | 4 => return Err(not_protobuf("groups (wire types 3 and 4) are not used")),
            _ => break, // damage: prost refuses it
        };
        if skip > bytes.len() {
            break;
        }
        bytes = &bytes[skip..];
        count += 1;
    }
    Ok(count)
}

/// Whether `U` is a request message (every request type's name ends so, and no
/// response type's: `requests_and_only_requests_are_named_so` checks the proto).
fn is_request<U>() -> bool {
    std::any::type_name::<U>().ends_with("Request")
}

pub struct StromDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StromDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Requests only: the clients decode responses with this codec too, and an
        // answer of many small records, partitions or groups is the server's own.
        if is_request::<U>() && top_level_fields(buf.chunk())? > MAX_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "the request has more than {MAX_ENTRIES} entries; send them in several requests"
            )));
        }
        self.0.decode(buf).map_err(|status| match status.code() {
            Code::Internal => not_protobuf(status.message()),
            _ => status,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of a request message that does not decode: the client's mistake.
pub fn not_protobuf(detail: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!(
        "the message is not valid protobuf for this method: {detail}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_level_fields_are_counted_and_groups_refused() {
        // Field 4, an empty message, over and over: 2 bytes an entry.
        let entries = |n: usize| [0x22u8, 0x00].repeat(n);
        assert_eq!(top_level_fields(&entries(1_000)).unwrap(), 1_000);
        assert!(top_level_fields(&entries(MAX_ENTRIES + 5)).unwrap() > MAX_ENTRIES);
        // A packed field and a fixed64 count once each; damage stops the count.
        let packed = [0x0a, 0x03, 0x01, 0x02, 0x03, 0x11, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(top_level_fields(&packed).unwrap(), 2);
        assert_eq!(top_level_fields(&[0x0a, 0x09, 0x01]).unwrap(), 0);
        // An empty group of an unknown field ahead of the entries (review finding: the
        // count stopped there, and prost skipped it and decoded them all).
        let mut grouped = vec![0x7b, 0x7c];
        grouped.extend(entries(MAX_ENTRIES + 5));
        assert_eq!(
            top_level_fields(&grouped).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    /// The entry count is applied by type name: every method's input type must be
    /// named `...Request`, and no output type may be, else a new request would go
    /// uncounted (or a client refuse a large answer).
    #[test]
    fn requests_and_only_requests_are_named_so() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::grpc::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = 0;
        for service in set.file.iter().flat_map(|f| &f.service) {
            for method in &service.method {
                methods += 1;
                assert!(method.input_type().ends_with("Request"), "{method:?}");
                assert!(!method.output_type().ends_with("Request"), "{method:?}");
            }
        }
        assert!(methods > 20, "{methods} methods");
    }
}
