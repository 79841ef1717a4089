//! One accepted connection: TLS (when the host has a certificate) and then the protocol: HTTP/2
//! when TLS's ALPN chose `h2` or a plaintext client opens with HTTP/2's preface (h2c with prior
//! knowledge), HTTP/1.1 otherwise. Both serve the same routes, gRPC among them over HTTP/2.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What every HTTP/2 connection starts with (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads just enough of a plaintext connection to tell HTTP/2's preface from an HTTP/1.1 request:
/// whether it is HTTP/2, and the bytes read, which the connection gives back first.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(bool, Vec<u8>)> {
    let mut read = Vec::with_capacity(PREFACE.len());
    while read.len() < PREFACE.len() {
        let mut byte = [0u8; 24];
        let want = PREFACE.len() - read.len();
        let n = stream.read(&mut byte[..want]).await?;
        if n == 0 {
            return Ok((false, read));
        }
        read.extend_from_slice(&byte[..n]);
        if !PREFACE.starts_with(&read) {
            return Ok((false, read));
        }
    }
    Ok((true, read))
}

/// A stream whose first bytes were already read: they are read again first.
pub struct Rewound<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewound<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Rewound<S> {
        Rewound {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let left = &self.prefix[self.at..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_told_from_http1_and_given_back() {
        let (is_h2, read) = sniff(&mut &PREFACE[..]).await.unwrap();
        assert!(is_h2);
        assert_eq!(read, PREFACE);
        let mut request = &b"GET / HTTP/1.1\r\n\r\n"[..];
        let (is_h2, read) = sniff(&mut request).await.unwrap();
        assert!(!is_h2);
        let mut rewound = Rewound::new(read, request);
        let mut all = String::new();
        rewound.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\n");
    }
}
