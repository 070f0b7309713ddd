//! Large values are freed off the reply's path: dropping a 10,000-neighbor message, its changes and
//! its plan takes milliseconds the client would otherwise wait for.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

/// Values waiting to be freed; when that many are queued, the caller frees its own.
const QUEUE: usize = 4;

type Garbage = Box<dyn Send>;

fn queue() -> Option<&'static SyncSender<Garbage>> {
    static TX: OnceLock<Option<SyncSender<Garbage>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Garbage>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("alioth-free".into())
            .spawn(move || rx.into_iter().for_each(drop));
        spawned.ok().map(|_| tx)
    })
    .as_ref()
}

/// Frees `value` on the freeing thread, or here when that one is behind (never queues more).
pub fn free_later<T: Send + 'static>(value: T) {
    let Some(tx) = queue() else { return };
    match tx.try_send(Box::new(value)) {
        Ok(()) => {}
        Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => drop(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn everything_handed_over_is_freed() {
        let dropped = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            free_later(Counted(dropped.clone()));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dropped.load(Ordering::SeqCst) < 100 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 100);
    }
}
