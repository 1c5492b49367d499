//! The decode loop, one for every generative family and every device: the prompt's prefill
//! program, then one single-token program per new token, each returning the last position's
//! logits for the sampler; the KV cache stays in the device's workspace between programs. The
//! device only says how to run a program (`run`).

use super::arch::Decoder;
use super::error::Result;
use super::program::Program;
use super::sampling::{Sampler, SamplingParams};

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop after emitting one of the model's end-of-sequence tokens (included in the output).
    pub stop_at_eos: bool,
}

/// Why a generation ended, as the loop knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `max_new_tokens` reached.
    Length,
    /// An end-of-sequence token.
    Eos,
    /// `on_token` said stop.
    Stopped,
}

/// The new tokens of a generation and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub tokens: Vec<u32>,
    pub ended: Ended,
}

/// Generates up to `opts.max_new_tokens` after `prompt` (checked by the caller). `on_token`
/// sees each new token as soon as it exists and returns false to stop; `run` executes one
/// program and returns its output.
pub fn generate(
    decoder: &dyn Decoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> bool,
    run: &mut dyn FnMut(&Program) -> Result<Vec<f32>>,
) -> Result<Decoded> {
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut tokens = Vec::with_capacity(opts.max_new_tokens);
    if opts.max_new_tokens == 0 {
        return Ok(Decoded { tokens, ended: Ended::Length });
    }
    let capacity = prompt.len() + opts.max_new_tokens;
    let mut logits = run(&decoder.step(prompt, 0, capacity))?;
    let mut start = prompt.len();
    loop {
        let token = sampler.next(&logits);
        tokens.push(token);
        if !on_token(token) {
            return Ok(Decoded { tokens, ended: Ended::Stopped });
        }
        if opts.stop_at_eos && decoder.eos_ids().contains(&token) {
            return Ok(Decoded { tokens, ended: Ended::Eos });
        }
        if tokens.len() == opts.max_new_tokens {
            return Ok(Decoded { tokens, ended: Ended::Length });
        }
        logits = run(&decoder.step(&[token], start, capacity))?;
        start += 1;
    }
}
