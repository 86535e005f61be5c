//! Tests of `messages.rs`.

use std::collections::VecDeque;

use http_body::Frame;

use super::*;
use crate::grpc::pb;

/// A body that yields the given frames, then ends, or if `wait`, waits for more.
struct Frames {
    frames: VecDeque<Frame<Bytes>>,
    wait: bool,
}

impl Frames {
    /// A body of these DATA frames.
    fn data(frames: impl IntoIterator<Item = Bytes>) -> Frames {
        Frames {
            frames: frames.into_iter().map(Frame::data).collect(),
            wait: false,
        }
    }
}

impl HttpBody for Frames {
    type Data = Bytes;
    type Error = Status;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        match self.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None if self.wait => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

fn request(id: u64, value_len: usize) -> pb::ProduceStreamRequest {
    pb::ProduceStreamRequest {
        correlation_id: id,
        request: Some(crate::grpc::produce::ProduceRequest {
            topic: "t".into(),
            records: vec![pb::Record {
                value: Bytes::from(vec![7u8; value_len]),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn wire(messages: &[pb::ProduceStreamRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.encoded_len() as u32).to_be_bytes());
        m.encode(&mut out).unwrap();
    }
    out
}

fn decode_all(frames: Vec<Bytes>, max: usize) -> Vec<Result<u64, Code>> {
    let mut messages = Messages::<_, pb::ProduceStreamRequest>::new(Frames::data(frames), max);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    while let Poll::Ready(Some(item)) = Pin::new(&mut messages).poll_next(&mut cx) {
        out.push(item.map(|m| m.correlation_id).map_err(|s| s.code()));
    }
    out
}

#[test]
fn messages_decode_wherever_the_frames_split_them() {
    let messages = [request(1, 300), request(2, 5), request(3, 2000)];
    let wire = wire(&messages);
    // Every split point, and every pair of split points, of the three messages.
    for a in 0..=wire.len() {
        for b in (a..=wire.len()).step_by(97) {
            let frames = vec![
                Bytes::copy_from_slice(&wire[..a]),
                Bytes::copy_from_slice(&wire[a..b]),
                Bytes::copy_from_slice(&wire[b..]),
            ];
            assert_eq!(decode_all(frames, 1 << 20), vec![Ok(1), Ok(2), Ok(3)]);
        }
    }
}

#[test]
fn messages_of_one_byte_frames_are_copied_together_not_held() {
    let wire = wire(&[request(1, 3000), request(2, 0)]);
    let mut frames: VecDeque<Bytes> = wire.iter().map(|&b| Bytes::from(vec![b])).collect();
    let rest = frames.split_off(2000);
    let trickle = Frames {
        wait: true,
        ..Frames::data(frames)
    };
    let mut messages = Messages::<_, pb::ProduceStreamRequest>::new(trickle, 1 << 20);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // Two thousand frames in, the message is gathered in one buffer, no frame held.
    assert!(Pin::new(&mut messages).poll_next(&mut cx).is_pending());
    assert_eq!(messages.partial.len(), 2000 - PREFIX);
    assert_eq!(messages.partial.held(), 0, "one-byte frames were held");
    messages
        .body
        .frames
        .extend(rest.into_iter().map(Frame::data));
    let Poll::Ready(Some(Ok(m))) = Pin::new(&mut messages).poll_next(&mut cx) else {
        panic!("one message");
    };
    assert_eq!(m.correlation_id, 1);
    let next = Pin::new(&mut messages).poll_next(&mut cx);
    assert!(matches!(next, Poll::Ready(Some(Ok(ref m))) if m.correlation_id == 2));
}

/// A message whole in one frame is decoded from that frame; one that spans frames
/// keeps its long frame as it is. Either way, a record is a slice of its frame.
#[test]
fn a_record_is_a_slice_of_the_frame_it_arrived_in_not_a_copy() {
    for value_len in [4096, 100_000] {
        let wire = Bytes::from(wire(&[request(1, value_len)]));
        let frames = if value_len < 10_000 {
            vec![wire.clone()]
        } else {
            vec![wire.slice(..10), wire.slice(10..)]
        };
        let held = frames.last().unwrap().as_ptr_range();
        let mut messages =
            Messages::<_, pb::ProduceStreamRequest>::new(Frames::data(frames), 1 << 20);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(Ok(m))) = Pin::new(&mut messages).poll_next(&mut cx) else {
            panic!("one message");
        };
        let request = m.request.unwrap();
        let record = &request.received.shared()[0];
        assert!(held.contains(&record.as_ptr()), "copied: {value_len}");
    }
}

#[test]
fn a_response_ends_with_the_status_of_its_trailers_or_headers() {
    let data = || Frame::data(Bytes::from(wire(&[request(7, 10)])));
    let trailers = |code: &str| {
        let mut map = http::HeaderMap::new();
        map.insert("grpc-status", code.parse().unwrap());
        Frame::trailers(map)
    };
    let read = |frames: Vec<Frame<Bytes>>, headers: Option<Status>| {
        let body = Frames {
            frames: frames.into(),
            wait: false,
        };
        let mut messages =
            Messages::<_, pb::ProduceStreamRequest>::response(body, 1 << 20, headers);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = Pin::new(&mut messages).poll_next(&mut cx) {
            out.push(item.map(|m| m.correlation_id).map_err(|s| s.code()));
        }
        out
    };
    assert_eq!(read(vec![data(), trailers("0")], None), vec![Ok(7)]);
    assert_eq!(
        read(vec![data(), trailers("5")], None),
        vec![Ok(7), Err(Code::NotFound)]
    );
    // No status at all: as tonic, UNKNOWN.
    assert_eq!(read(vec![data()], None), vec![Ok(7), Err(Code::Unknown)]);
    // Trailers only: the status came with the headers.
    assert_eq!(read(vec![], Some(Status::ok(""))), vec![]);
}

#[test]
fn bad_framing_is_refused() {
    let ok = wire(&[request(1, 10)]);
    let mut compressed = ok.clone();
    compressed[0] = 1;
    assert_eq!(
        decode_all(vec![compressed.into()], 1 << 20),
        vec![Err(Code::Internal)]
    );
    // Over the limit: RESOURCE_EXHAUSTED, not tonic's OUT_OF_RANGE (strom's API
    // keeps that for offsets, and a consumer would reset its position on it).
    assert_eq!(
        decode_all(vec![ok.clone().into()], 4),
        vec![Err(Code::ResourceExhausted)]
    );
    let cut = Bytes::copy_from_slice(&ok[..ok.len() - 1]);
    assert_eq!(decode_all(vec![cut], 1 << 20), vec![Err(Code::Internal)]);
    // An empty message, the last bytes of its frame: a request without `request`.
    let empty = vec![0, 0, 0, 0, 0];
    assert_eq!(decode_all(vec![empty.into()], 1 << 20), vec![Ok(0)]);
    let garbage = vec![0, 0, 0, 0, 2, 0xff, 0xff];
    assert_eq!(
        decode_all(vec![garbage.into()], 1 << 20),
        vec![Err(Code::InvalidArgument)]
    );
}
