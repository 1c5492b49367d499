//! A generation as a device runs it: the prompt and settings, and the sink that streams each
//! new token to the client the moment it exists (with its text, when the package has a
//! tokenizer), stops at a stop string, and ends the generation within one token once the
//! client has gone away.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::engine::{Decoded, Ended, GenerateOptions, ModelSpec, Result};

/// One new token, as the WebSocket sends it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenEvent {
    /// Counts new tokens from 0.
    pub index: usize,
    pub id: u32,
    /// The text this token adds (empty while it completes only part of a character; `None`
    /// without a tokenizer).
    pub text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// The model's end-of-sequence token.
    Eos,
    /// A stop string appeared in the text.
    Stop,
    /// The client went away.
    Cancelled,
}

/// What a finished generation produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    pub token_ids: Vec<u32>,
    /// From the request's arrival to its first token, ms.
    pub first_token_ms: f64,
    pub finish_reason: FinishReason,
}

/// A generation request bound for a device.
pub struct Generation {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    /// Stop strings: the generation ends with the token that completes one.
    pub stop: Vec<String>,
    pub received: Instant,
    pub tokens: mpsc::UnboundedSender<TokenEvent>,
    /// Set by the client's side when it leaves; checked after every token.
    pub cancel: Arc<AtomicBool>,
}

impl Generation {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire) || self.tokens.is_closed()
    }

    /// Runs a generation: `generate` is the engine's decode loop bound to the device's
    /// weights and workspace; it calls back once per token.
    pub fn run(
        &self,
        spec: &ModelSpec,
        generate: impl FnOnce(&mut dyn FnMut(u32) -> bool) -> Result<Decoded>,
    ) -> Result<Generated> {
        let mut text = TextTracker::default();
        let mut first_token_ms = None;
        let mut finish = None;
        let mut count = 0;
        let decoded = generate(&mut |id| {
            first_token_ms.get_or_insert_with(|| self.received.elapsed().as_secs_f64() * 1e3);
            let piece = spec.tokenizer.as_ref().map(|t| text.push(t, id));
            let stopped = self.stop.iter().any(|s| text.text.contains(s.as_str()));
            let sent = self.tokens.send(TokenEvent { index: count, id, text: piece });
            count += 1;
            if sent.is_err() || self.cancelled() {
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
