//! What the gRPC server lets in: a bounded number of connections, none of them idle for long, and
//! a bounded number of message bytes at a time (`bytes`). A flood of connections or of large
//! messages queues or is turned away; it never takes the agent's descriptors, memory or CPU.

pub mod bytes;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::Connected;

/// Pause after a failed accept (out of descriptors, say): the failure would repeat at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counters of the admission gates, for `/metrics`.
#[derive(Debug, Default)]
pub struct AdmissionStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub idle_closed: AtomicU64,
    pub accept_errors: AtomicU64,
    pub bytes_in_flight: AtomicU64,
    pub bytes_in_flight_peak: AtomicU64,
    pub messages_waited: AtomicU64,
}

/// How many connections the server holds at most, and after how long without a byte from or to
/// the client one is closed (`None`: never).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max: usize,
    pub idle: Option<Duration>,
}

/// `incoming` with the limits applied: a connection beyond the cap is closed as soon as it is
/// accepted (it would otherwise wait in the listen backlog, or hold a descriptor), and a failed
/// accept is retried after a pause instead of at once.
pub fn admit<S, IO, E>(
    incoming: S,
    limits: ConnectionLimits,
    stats: Arc<AdmissionStats>,
) -> impl Stream<Item = Result<Admitted<IO>, E>>
where
    S: Stream<Item = Result<IO, E>>,
    E: std::fmt::Display,
{
    let slots = Arc::new(Semaphore::new(limits.max));
    incoming
        .then(move |conn| {
            let (slots, stats) = (slots.clone(), stats.clone());
            async move {
                match conn {
                    Ok(io) => match slots.try_acquire_owned() {
                        Ok(permit) => Some(Ok(Admitted::new(io, permit, limits.idle, stats))),
                        Err(_) => {
                            if stats.refused.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                                tracing::warn!(max = limits.max, "gRPC connection refused: at the connection cap");
                            }
                            None
                        }
                    },
                    Err(e) => {
                        if stats.accept_errors.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                            tracing::warn!("accepting a gRPC connection failed: {e}");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        None
                    }
                }
            }
        })
        .filter_map(|c| c)
}

/// An admitted connection: holds its slot until it closes, and fails its reads once neither side
/// has sent a byte for the idle time, which makes the server close it.
pub struct Admitted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    stats: Arc<AdmissionStats>,
}

impl<IO> Admitted<IO> {
    fn new(io: IO, slot: OwnedSemaphorePermit, idle: Option<Duration>, stats: Arc<AdmissionStats>) -> Self {
        stats.connections.fetch_add(1, Ordering::Relaxed);
        Admitted {
            io,
            _slot: slot,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            stats,
        }
    }

    fn active(&mut self) {
        if let Some((d, sleep)) = &mut self.idle {
            sleep.as_mut().reset(Instant::now() + *d);
        }
    }
}

impl<IO> Drop for Admitted<IO> {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<IO: Connected> Connected for Admitted<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Admitted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let idled = match &mut self.idle {
                    Some((_, sleep)) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !idled {
                    return Poll::Pending;
                }
                self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle gRPC connection closed",
                )))
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Admitted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
