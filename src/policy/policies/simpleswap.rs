//! `simpleswap`: the baseline of swapping without a plan. FIFO, a random idle device with room
//! (seeded: runs repeat), copies from the host only, least recently used models evicted first.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{candidates, run_on, sorted, Choice};
use crate::policy::cluster::{DeviceId, EvictReason, FunctionId, State};
use crate::policy::SwapSource;

#[derive(Debug)]
pub struct SimpleSwap {
    /// Boxed: the generator's state is large beside the other policies'.
    rng: Box<ChaCha8Rng>,
}

impl SimpleSwap {
    pub fn new(seed: u64) -> Self {
        Self { rng: Box::new(ChaCha8Rng::seed_from_u64(seed)) }
    }

    /// A random idle device with room; copies come from the host.
    pub fn choose(&mut self, s: &State, f: FunctionId) -> Choice {
        let fits: Vec<DeviceId> = s.idle().filter(|&i| s.can_fit(i, f)).collect();
        if fits.is_empty() {
            return Choice::Wait;
        }
        let device = fits[self.rng.random_range(0..fits.len())];
        run_on(s, device, f, SwapSource::Host)
    }
}

/// Least recently used first.
pub fn victims(s: &State, i: DeviceId, f: FunctionId) -> Vec<(FunctionId, EvictReason)> {
    sorted(candidates(s, i, f).map(|(v, last)| (v, EvictReason::Lru, (0, last))).collect())
}
