//! One Kafka client connection: size-prefixed request frames in, responses out, in
//! order, one request at a time (as a Kafka broker mutes a connection until it has
//! answered its request).
//!
//! Bounds: a frame over `max_request_bytes` closes the connection before anything is
//! read into memory; frames of 64 KiB or more are charged to the server's produce
//! budget, as a gRPC Produce is, before their bytes are read; a frame's bytes must all
//! arrive within `MESSAGE_DEADLINE`; a response its client has not read within
//! `stalled_reader_timeout` closes the connection; so does `idle_timeout` without a
//! request. Until the session has authenticated (`session.rs`), frames are at most
//! `UNAUTHENTICATED_MAX_FRAME` (never charged), and no wait lasts past the
//! connection's authentication deadline. A client over its quota (`grpc/quota/`) is
//! not read for the `throttle_time_ms` its last response gave (KIP-219's mute; over
//! `MAX_MUTE`, the connection closes), and its Produce or Fetch (any request, with a
//! request rate) waits for its turn before the frame past its API key is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::carry::Carried;
use super::dispatch::{answer, Answer};
use super::listener::Place;
use super::requests::key;
use super::session::Session;
use super::wire::Malformed;
use super::Kafka;
use crate::grpc::auth::Tokens;
use crate::grpc::budget::{FREE_BELOW, MESSAGE_DEADLINE, MESSAGE_IDLE};
use crate::grpc::quota::{Flow, Quota};

/// The smallest request frame: API key, version, correlation id and client id length.
const MIN_FRAME: usize = 10;

/// Where a connection came from and went to, and by when it must have authenticated.
pub struct Peer {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// Until the session is authenticated, no wait lasts past this.
    pub authenticate_by: Instant,
}

pub async fn serve_connection<S>(
    kafka: Arc<Kafka>,
    stream: S,
    mut session: Session,
    at: Peer,
    mut stranger: Option<Place>,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = at.peer;
    let closed = |why: String| {
        if let Some(also) = kafka.logs.closed.allow() {
            tracing::info!(?peer, also_closed = also, "kafka connection closed: {why}");
        }
    };
    // A reload of the tokens file also ends a connection that sends nothing more, if
    // its token went.
    let mut reloads = kafka.security.tokens.as_ref().map(Tokens::reloads);
    // The client's quota, once the session knows who the client is.
    let mut quota: Option<Quota> = None;
    let mut stream = Carried::new(stream);
    loop {
        if session.authenticated() {
            drop(stranger.take()); // its place among the strangers is free
            if quota.is_none() {
                let address = peer.map(|p| p.ip());
                quota = kafka.quotas.as_ref().map(|q| q.of(session.who(), address));
            }
        }
        // A stranger gets until its authentication deadline, not the idle timeout.
        let idle = Instant::now() + kafka.idle_timeout;
        let idle = match session.authenticated() {
            true => idle,
            false => idle.min(at.authenticate_by),
        };
        // Read by `read`, not `read_exact`, which a reload's wake-up would cancel
        // halfway.
        let mut prefix = [0u8; 4];
        let mut filled = 0;
        while filled < prefix.len() {
            let reloaded = async {
                match reloads.as_mut() {
                    Some(reloads) => reloads.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = stream.read(&mut prefix[filled..]) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                },
                live = reloaded => match live {
                    false => reloads = None, // no more reloads will come
                    true => if let Err(Malformed(why)) = session.recheck(&kafka.security) {
                        return closed(why);
                    },
                },
                _ = stopping.wait_for(|stop| *stop) => return,
                () = tokio::time::sleep_until(idle) => {
                    tracing::debug!(?peer, authenticated = session.authenticated(), "kafka connection idle: closed");
                    return;
                }
            }
        }
        let size = i32::from_be_bytes(prefix);
        let max = session.max_frame(kafka.max_request_bytes);
        if size < MIN_FRAME as i32 || size as usize > max {
            let stranger = match session.authenticated() {
                true => "",
                false => " before authentication",
            };
            return closed(format!(
                "a request frame of {size} bytes, where strom takes {MIN_FRAME} to {max}{stranger} (max_request_bytes)"
            ));
        }
        let size = size as usize;
        let deadline = |session: &Session| match session.authenticated() {
            true => Instant::now() + MESSAGE_DEADLINE,
            false => at.authenticate_by,
        };
        // With a quota, the API key first: a request of a client over its request
        // rate, and a produce or fetch of a client over its byte quota, waits for its
        // turn before its bytes are read or charged to the budget,
        // on whichever of the client's connections it comes (a produce is charged to
        // the quota then, by its size on the wire, as Kafka counts it, and after its
        // append by what decompression added, `dispatch.rs`). Without, the
        // frame is read in one go.
        let mut key = [0u8; 2];
        let mut head = 0;
        if let Some(quota) = &quota {
            let read = tokio::select! {
                read = read_frame(&mut stream, &mut key, deadline(&session)) => read,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            if let Err(why) = read {
                return closed(format!("a request frame of {size} bytes {why}"));
            }
            head = key.len();
            let turn = async {
                // Every request waits for one of its client's request rate, if limited.
                quota.take_turn(Flow::Requests, 1).await;
                match i16::from_be_bytes(key) {
                    key::PRODUCE => quota.take_turn(Flow::Produce, size).await,
                    key::FETCH => quota.ready_to_read(Flow::Fetch, usize::MAX).await,
                    _ => {}
                }
            };
            tokio::select! {
                turned = tokio::time::timeout(MAX_MUTE, turn) => if turned.is_err() {
                    return closed(format!("its client is over its quota for more than {MAX_MUTE:?}"));
                },
                _ = stopping.wait_for(|stop| *stop) => return,
            }
        }
        // Until the request is answered (not written): its decoded form and what it
        // copies are about three times its frame.
        let charge = async {
            match size >= FREE_BELOW {
                true => Some(kafka.budget.charge_produce(size).await),
                false => None,
            }
        };
        let charge = tokio::select! {
            charge = charge => charge,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let mut frame = BytesMut::zeroed(size);
        frame[..head].copy_from_slice(&key[..head]);
        let read = tokio::select! {
            read = read_frame(&mut stream, &mut frame[head..], deadline(&session)) => read,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        if let Err(why) = read {
            return closed(format!("a request frame of {size} bytes {why}"));
        }
        let waits = matches!(
            i16::from_be_bytes([frame[0], frame[1]]),
            key::JOIN_GROUP | key::SYNC_GROUP
        );
        let answered = answer(
            &kafka,
            &mut session,
            frame.freeze(),
            (at.local, quota.as_ref()),
        );
        let answered = match waits {
            true => answer_or_hang_up(answered, &mut stream).await,
            false => Some(answered.await),
        };
        let Answer {
            response,
            held,
            close,
            mute,
        } = match answered {
            Some(Ok(answer)) => answer,
            Some(Err(Malformed(why))) => return closed(format!("a request refused: {why}")),
            None => return, // the client hung up
        };
        drop(charge);
        if session.authenticated() {
            drop(stranger.take()); // not while its answer is written
        }
        // No answer (acks=0) never comes with a close: only a failed authentication
        // closes after its answer.
        let Some(response) = response else {
            if mute > MAX_MUTE {
                return closed(format!(
                    "its client is over its quota for {mute:?}, more than {MAX_MUTE:?}"
                ));
            }
            if !muted(mute, &mut stopping).await {
                return;
            }
            continue;
        };
        // Flushed too: TLS keeps the last records of a write in its buffer when the
        // socket is full, and reading the next request would never send them.
        let write = async {
            write_chunks(&mut stream, &response).await?;
            stream.flush().await
        };
        let written_by = match session.authenticated() {
            true => Instant::now() + kafka.stalled_reader_timeout,
            false => at.authenticate_by,
        };
        let written = tokio::select! {
            written = tokio::time::timeout_at(written_by, write) => written,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        drop(held); // the response's bytes, from the pool: written now
        match written {
            Ok(Ok(())) if !close => {}
            Ok(Ok(())) | Ok(Err(_)) => return,
            Err(_) => return closed("the client did not read its response in time".into()),
        }
        if mute > MAX_MUTE {
            // A wait the client would not sit through (its requests time out, and it
            // sends them again on a new connection while this one holds the old):
            // closed, and its next connection waits for its turn.
            return closed(format!(
                "its client is over its quota for {mute:?}, more than {MAX_MUTE:?}"
            ));
        }
        if !muted(mute, &mut stopping).await {
            return;
        }
    }
}

/// A JoinGroup or SyncGroup waits for the group's other members, up to its rebalance
/// timeout (minutes). Meanwhile the connection is read on (`carry.rs`), so that a
/// client that hangs up (a consumer killed mid-rebalance) gives its connection, and
/// its place among its address's, back at once rather than at the rebalance's end;
/// what it sends meanwhile is kept for its next requests. None once it has hung up
/// (also one that only closed its sending side, which Kafka's clients do not do: a
/// Kafka broker would answer it).
async fn answer_or_hang_up<S, T>(
    answered: impl std::future::Future<Output = T>,
    stream: &mut Carried<S>,
) -> Option<T>
where
    S: AsyncRead + Unpin,
{
    tokio::pin!(answered);
    loop {
        tokio::select! {
            answer = &mut answered => return Some(answer),
            read = stream.read_ahead() => match read {
                Ok(0) | Err(_) => {
                    tracing::debug!("kafka client hung up while its group call waited");
                    return None;
                }
                Ok(_) => {}
            },
        }
    }
}

/// The longest a connection is muted, or waits for its client's turn: a client that
/// has gone meanwhile is not seen until then (nothing is read), so it must not hold
/// its connection's place for long; and a request it sent meanwhile must be read
/// before the client gives up on it (`request.timeout.ms`, 30 s by default) and sends
/// it again elsewhere. Past it the connection is closed, after the response that
/// throttles it; the client's debt outlasts the connection (its next produce or fetch
/// waits for its turn on any connection).
pub(super) const MAX_MUTE: Duration = Duration::from_secs(20);

/// Reads nothing from the connection for `mute` (its client is over its quota): false
/// if the server began to stop meanwhile.
async fn muted(mute: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    if mute.is_zero() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(mute) => true,
        _ = stopping.wait_for(|stop| *stop) => false,
    }
}

/// Writes every chunk, several a call (`write_vectored`): a Fetch response's records
/// go from the read's buffers to the socket without another copy.
async fn write_chunks<W: AsyncWrite + Unpin>(
    writer: &mut W,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    let (mut next, mut offset) = (0, 0);
    while next < chunks.len() {
        let slices: Vec<std::io::IoSlice> = chunks[next..]
            .iter()
            .take(64)
            .enumerate()
            .map(|(i, chunk)| std::io::IoSlice::new(if i == 0 { &chunk[offset..] } else { chunk }))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Past the chunks written whole, into the one written in part.
        while next < chunks.len() && written >= chunks[next].len() - offset {
            written -= chunks[next].len() - offset;
            (next, offset) = (next + 1, 0);
        }
        offset += written;
    }
    Ok(())
}

/// Reads a frame's bytes: all by `deadline` (`MESSAGE_DEADLINE` from its start, once
/// authenticated), with no pause of `MESSAGE_IDLE` (as a gRPC message's, whose budget
/// it may hold).
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    frame: &mut [u8],
    deadline: Instant,
) -> Result<(), &'static str> {
    let mut filled = 0;
    while filled < frame.len() {
        let read = reader.read(&mut frame[filled..]);
        let idle = Instant::now() + MESSAGE_IDLE;
        match tokio::time::timeout_at(idle.min(deadline), read).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err("cut short"),
            Ok(Ok(n)) => filled += n,
            Err(_) => return Err("not sent whole in time"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through a pipe that takes 5 bytes a write, every chunk arrives whole and in
    /// order, whatever the partial writes cut.
    #[tokio::test]
    async fn chunks_are_written_whole_across_partial_writes() {
        let chunks: Vec<Bytes> = [
            &b"size"[..],
            b"",
            b"a header",
            b"r",
            &[b'x'; 300][..],
            b"tail",
        ]
        .iter()
        .map(|c| Bytes::copy_from_slice(c))
        .collect();
        let (mut writer, mut reader) = tokio::io::duplex(5);
        let expected = chunks.concat();
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        write_chunks(&mut writer, &chunks).await.unwrap();
        drop(writer);
        assert_eq!(reading.await.unwrap(), expected);
    }
}
