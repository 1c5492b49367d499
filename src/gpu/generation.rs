//! A generation as a device runs it: each new token streamed to the client the moment it
//! exists (with its text, when the package has a tokenizer), a stop at a stop string, and the
//! end within one token once the client has gone away.

use crate::engine::{Decoded, Ended, ModelSpec, Result};
use crate::request::{FinishReason, Generated, Generation, TokenEvent};

/// Runs a generation: `generate` is the engine's decode loop bound to the device's
/// weights and workspace; it calls back once per token.
pub fn stream(
    g: &Generation,
    spec: &ModelSpec,
    generate: impl FnOnce(&mut dyn FnMut(u32) -> bool) -> Result<Decoded>,
) -> Result<Generated> {
    let mut text = TextTracker::default();
    let mut first_token_ms = None;
    let mut finish = None;
    let mut count = 0;
    let decoded = generate(&mut |id| {
        first_token_ms.get_or_insert_with(|| g.received.elapsed().as_secs_f64() * 1e3);
        let piece = spec.tokenizer.as_ref().map(|t| text.push(t, id));
        let stopped = g.stop.iter().any(|s| text.text.contains(s.as_str()));
        let sent = g.tokens.send(TokenEvent { index: count, id, text: piece });
        count += 1;
        if sent.is_err() || g.cancelled() {
            finish = Some(FinishReason::Cancelled);
            return false;
        }
        if stopped {
            finish = Some(FinishReason::Stop);
            return false;
        }
        true
    })?;
    let finish_reason = finish.unwrap_or(match decoded.ended {
        Ended::Eos => FinishReason::Eos,
        Ended::Length | Ended::Stopped => FinishReason::Length,
    });
    Ok(Generated { token_ids: decoded.tokens, first_token_ms: first_token_ms.unwrap_or(0.0), finish_reason })
}

/// The text of the tokens so far, grown one token at a time: each token adds the difference
/// between the decoded text with and without it, held back while it ends inside a character.
#[derive(Default)]
struct TextTracker {
    ids: Vec<u32>,
    text: String,
}

impl TextTracker {
    fn push(&mut self, tokenizer: &crate::engine::TextEncoder, id: u32) -> String {
        self.ids.push(id);
        let Ok(full) = tokenizer.decode(&self.ids) else {
            return String::new();
        };
        if full.ends_with('\u{FFFD}') {
            return String::new();
        }
        let piece = match full.strip_prefix(self.text.as_str()) {
            Some(rest) => rest.to_string(),
            None => full.clone(),
        };
        self.text = full;
        piece
    }
}
