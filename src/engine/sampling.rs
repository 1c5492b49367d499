//! Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
//! from a seeded generator so that a seed reproduces a generation exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::error::{EngineError, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// `None` or 0: greedy (argmax).
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return Err(EngineError::BadInput(format!("temperature {t} must be ≥ 0")));
            }
        }
        if self.top_k == Some(0) {
            return Err(EngineError::BadInput("top_k must be ≥ 1".into()));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(EngineError::BadInput(format!("top_p {p} must be in (0, 1]")));
            }
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature.is_none_or(|t| t == 0.0)
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// Reused across steps: (logit, token) pairs.
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_os_rng(),
        };
        Ok(Self { params, rng, scratch: Vec::new() })
    }

    pub fn next(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        let t = self.params.temperature.unwrap_or(1.0);
        let c = &mut self.scratch;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| (l / t, i as u32)));
        // Stable sort: equal logits keep id order, so a seed gives the same tokens everywhere.
        c.sort_by(|a, b| b.0.total_cmp(&a.0));
        if let Some(k) = self.params.top_k {
            c.truncate(k.max(1));
        }
        let max = c[0].0;
        let mut probs: Vec<f32> = c.iter().map(|(l, _)| (l - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(top_p) = self.params.top_p {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if r < *p {
                return c[i].1;
            }
            r -= p;
        }
        c[probs.len() - 1].1
    }
}

/// Index of the largest logit; the first one on ties, as `torch.argmax` does.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64) -> SamplingParams {
        SamplingParams { temperature: Some(temperature), top_k, top_p, seed: Some(seed) }
    }

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.next(&[0.0, 1.0, 0.5]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_choices() {
        let logits = [0.5, 2.0, 1.9, 1.8, -3.0];
        let mut s = Sampler::new(params(5.0, Some(1), None, 7)).unwrap();
        assert!((0..50).all(|_| s.next(&logits) == 1));
        let mut s = Sampler::new(params(5.0, Some(3), None, 7)).unwrap();
        let seen: std::collections::BTreeSet<u32> = (0..300).map(|_| s.next(&logits)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn top_p_keeps_the_smallest_sufficient_prefix() {
        // Probabilities ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.8 keeps the first two.
        let logits = [3.0, 2.0, 1.0, 0.0];
        let mut s = Sampler::new(params(1.0, None, Some(0.8), 3)).unwrap();
        let seen: std::collections::BTreeSet<u32> = (0..400).map(|_| s.next(&logits)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let draw = |seed| {
            let mut s = Sampler::new(params(1.0, None, None, seed)).unwrap();
            (0..20).map(|_| s.next(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Sampler::new(params(-1.0, None, None, 0)).is_err());
        assert!(Sampler::new(params(1.0, Some(0), None, 0)).is_err());
        assert!(Sampler::new(params(1.0, None, Some(1.5), 0)).is_err());
    }
}
