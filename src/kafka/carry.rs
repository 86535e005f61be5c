//! A Kafka connection's stream, with what its client sent ahead: while a JoinGroup or
//! SyncGroup waits for the group (minutes, at worst), the connection is read on, so
//! that a client that hangs up is seen at once (`connection::answer_or_hang_up`); the
//! bytes read meanwhile (its next requests: a client may send them before the answer,
//! heartbeats say) are kept, at most `CARRY`, and read before the socket's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// Bytes kept of what a client sends while its group call waits; past them it is no
/// longer read (nor a hang-up seen) until the answer. Several heartbeats' worth.
pub const CARRY: usize = 16 << 10;

pub struct Carried<S> {
    inner: S,
    ahead: BytesMut,
}

impl<S: AsyncRead + Unpin> Carried<S> {
    pub fn new(inner: S) -> Carried<S> {
        Carried {
            inner,
            ahead: BytesMut::new(),
        }
    }

    /// Reads what the client sends next into the carry: Ok(0) at the end of its
    /// stream (it hung up). With `CARRY` bytes kept, it waits for ever. Cancel safe.
    pub async fn read_ahead(&mut self) -> io::Result<usize> {
        let room = CARRY.saturating_sub(self.ahead.len());
        if room == 0 {
            return std::future::pending().await;
        }
        self.ahead.reserve(room.min(4096));
        let mut room = (&mut self.ahead).limit(room);
        self.inner.read_buf(&mut room).await
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Carried<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ahead.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.ahead.len().min(buf.remaining());
        buf.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Carried<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What was read ahead comes first, then the socket's; a hang-up reads 0.
    #[tokio::test]
    async fn bytes_read_ahead_come_before_the_streams() {
        let (client, server) = tokio::io::duplex(64);
        let (mut client, mut carried) = (client, Carried::new(server));
        client.write_all(b"abc").await.unwrap();
        assert_eq!(carried.read_ahead().await.unwrap(), 3);
        client.write_all(b"def").await.unwrap();
        let mut all = [0u8; 6];
        carried.read_exact(&mut all).await.unwrap();
        assert_eq!(&all, b"abcdef");
        drop(client);
        assert_eq!(carried.read_ahead().await.unwrap(), 0);
    }
}
