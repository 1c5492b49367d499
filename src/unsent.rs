//! Results held for clients that have not taken them yet: computed, encoded, or being written
//! to a socket that a slow (or stalled) client drains. Each request holds its bytes from before
//! it runs until its response is sent or dropped, and one shared limit bounds them all, so that
//! slow readers cannot make the server buffer without end (12 stalled clients each holding a
//! 581 MB logits response once took 8 GB). Past the limit a request is refused before it runs
//! (503 with `Retry-After`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct Unsent {
    used: AtomicU64,
    limit: u64,
}

/// Bytes held for one request; given back when dropped.
#[derive(Debug)]
pub struct Held {
    unsent: Arc<Unsent>,
    bytes: u64,
}

impl Unsent {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self { used: AtomicU64::new(0), limit })
    }

    /// Holds `bytes` if they fit under the limit with what is held already. A request larger
    /// than the whole limit is let through alone, when nothing else is held.
    pub fn hold(self: &Arc<Self>, bytes: u64) -> Option<Held> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let fits = used.saturating_add(bytes) <= self.limit || used == 0;
            if !fits {
                return None;
            }
            match self.used.compare_exchange_weak(used, used + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(Held { unsent: self.clone(), bytes }),
                Err(now) => used = now,
            }
        }
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

impl Held {
    /// The bytes are now `bytes` (the encoded response instead of the estimate). Never
    /// refused: the bytes exist already.
    pub fn resize(&mut self, bytes: u64) {
        if bytes >= self.bytes {
            self.unsent.used.fetch_add(bytes - self.bytes, Ordering::AcqRel);
        } else {
            self.unsent.used.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.unsent.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_stay_under_the_limit_and_are_given_back() {
        let u = Unsent::new(100);
        let a = u.hold(60).unwrap();
        assert!(u.hold(50).is_none(), "110 > 100");
        let mut b = u.hold(40).unwrap();
        assert_eq!(u.used(), 100);
        b.resize(70);
        assert_eq!(u.used(), 130, "the encoded response is larger: counted, not refused");
        drop(a);
        assert_eq!(u.used(), 70);
        drop(b);
        assert_eq!(u.used(), 0);
        let big = u.hold(500).expect("alone, a response larger than the limit still runs");
        assert!(u.hold(1).is_none());
        drop(big);
    }
}
