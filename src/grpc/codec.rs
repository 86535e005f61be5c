//! The protobuf codec of every service: prost's, except that
//!
//! - a request that does not decode (malformed protobuf, a `string` that is not UTF-8) is
//!   INVALID_ARGUMENT, the client's mistake, rather than the INTERNAL that tonic-prost
//!   gives every decode error;
//! - a message is encoded into room reserved for its whole length. tonic's send buffer
//!   starts at 8 KiB and prost does not reserve, so a 1 MB produce request grew it by
//!   doubling, copying what was already written at every step (BENCHMARKS.md).

use std::marker::PhantomData;

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

pub struct StromDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StromDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
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
