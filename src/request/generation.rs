//! A generation request: the prompt and settings, where its tokens go as they exist, how the
//! client cancels it, and what it produced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::engine::GenerateOptions;

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
}
