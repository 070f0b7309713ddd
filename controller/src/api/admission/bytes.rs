//! The cap on goal-state bytes in flight. Each gRPC message announces its length in its 5-byte
//! prefix; before the body of a message is handed on, its request takes that many bytes from one
//! budget for all connections, and gives them back once it is answered (or, on a stream, when the
//! next message starts). Concurrent large messages therefore wait their turn, held back by HTTP/2
//! flow control, instead of each adding its size and its decoded size to the agent's memory.
//!
//! A request takes all it needs at once and holds nothing while it waits, so two requests can
//! never wait for each other.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::AdmissionStats;

/// Bytes are counted in units of this size (permits are u32).
const UNIT: u64 = 1024;

/// The budget shared by every request of one server.
#[derive(Clone)]
pub struct ByteGate {
    budget: Arc<Semaphore>,
    /// What one message may take at most (the largest message accepted): never more than the
    /// budget, so every message can get through.
    per_message: u32,
    stats: Arc<AdmissionStats>,
}

impl ByteGate {
    /// A budget of `total` bytes for messages of at most `max_message` bytes.
    pub fn new(total: u64, max_message: u64, stats: Arc<AdmissionStats>) -> Self {
        let units = |b: u64| u32::try_from(b.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let total = units(total.max(max_message + 5)).max(1);
        ByteGate {
            budget: Arc::new(Semaphore::new(total as usize)),
            per_message: units(max_message + 5).min(total),
            stats,
        }
    }

    /// `body` metered against the budget, and the hold on it that the request's answer keeps
    /// until it is sent.
    pub fn meter<B>(&self, body: B) -> (Metered<B>, Hold) {
        let hold = Hold::default();
        let metered = Metered {
            inner: body,
            gate: self.clone(),
            hold: hold.clone(),
            prefix: [0; 5],
            prefix_len: 0,
            remaining: 0,
            waiting: None,
        };
        (metered, hold)
    }
}

/// The bytes a request holds: released when the last of its body and its answer is done.
#[derive(Clone, Default)]
pub struct Hold(Arc<Mutex<Option<Held>>>);

struct Held {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    stats: Arc<AdmissionStats>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stats.bytes_in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Hold {
    fn set(&self, held: Option<Held>) {
        let old = std::mem::replace(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()), held);
        drop(old);
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body that waits for its bytes before it hands each message's data on.
pub struct Metered<B> {
    inner: B,
    gate: ByteGate,
    hold: Hold,
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// A frame held back until its units are granted.
    waiting: Option<(Acquire, u32, Frame<Bytes>)>,
}

impl<B> Metered<B> {
    /// Follows the gRPC framing through `data`; returns the units the messages that start in it
    /// need (0: none starts).
    fn scan(&mut self, mut data: &[u8]) -> u32 {
        let mut bytes = 0u64;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len() as u64);
                self.remaining -= n;
                data.advance(n as usize);
                continue;
            }
            let n = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&data[..n]);
            (self.prefix_len, data) = (self.prefix_len + n, &data[n..]);
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                self.remaining = u64::from(u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]));
                bytes += self.remaining + 5;
            }
        }
        match bytes {
            0 => 0,
            b => u32::try_from(b.div_ceil(UNIT))
                .unwrap_or(u32::MAX)
                .min(self.gate.per_message),
        }
    }

    fn granted(&mut self, permit: OwnedSemaphorePermit, units: u32) {
        let bytes = u64::from(units) * UNIT;
        let stats = &self.gate.stats;
        let now = stats.bytes_in_flight.fetch_add(bytes, Ordering::Relaxed) + bytes;
        stats.bytes_in_flight_peak.fetch_max(now, Ordering::Relaxed);
        self.hold.set(Some(Held {
            _permit: permit,
            bytes,
            stats: stats.clone(),
        }));
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some((acquire, units, _)) = &mut this.waiting {
            let (result, units) = (ready!(acquire.as_mut().poll(cx)), *units);
            let Some((_, _, frame)) = this.waiting.take() else {
                unreachable!("checked above")
            };
            // The budget is never closed; if it were, the message would go through unmetered.
            if let Ok(permit) = result {
                this.granted(permit, units);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let units = frame.data_ref().map_or(0, |d| this.scan(d));
        if units == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        // What the previous message held goes back first: nothing is held while waiting.
        this.hold.set(None);
        match this.gate.budget.clone().try_acquire_many_owned(units) {
            Ok(permit) => {
                this.granted(permit, units);
                Poll::Ready(Some(Ok(frame)))
            }
            Err(_) => {
                this.gate.stats.messages_waited.fetch_add(1, Ordering::Relaxed);
                let acquire = Box::pin(this.gate.budget.clone().acquire_many_owned(units));
                this.waiting = Some((acquire, units, frame));
                Pin::new(this).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7, len as usize));
        m
    }

    #[test]
    fn the_framing_is_followed_across_frames_of_any_split() {
        let gate = ByteGate::new(1 << 30, 1 << 29, Default::default());
        let mut stream = message(10_000);
        stream.extend(message(3));
        stream.extend(message(5_000));
        for split in [1, 2, 3, 5, 7, 1000, 4096, 20_000] {
            let (mut m, _) = gate.meter(());
            let needs: Vec<u32> = stream.chunks(split).map(|c| m.scan(c)).filter(|u| *u > 0).collect();
            let total: u32 = needs.iter().sum();
            // 10,005 + 8 + 5,005 bytes, each frame's starts rounded up to whole units.
            assert!((15..=18).contains(&total), "split {split}: {needs:?}");
            assert_eq!((m.remaining, m.prefix_len), (0, 0), "split {split}");
        }
    }

    #[test]
    fn a_message_never_needs_more_than_the_budget() {
        let gate = ByteGate::new(4096, 3000, Default::default());
        let (mut m, _) = gate.meter(());
        assert_eq!(m.scan(&message(1 << 20)[..5]), gate.per_message);
        assert!(gate.per_message as usize <= gate.budget.available_permits());
    }
}
