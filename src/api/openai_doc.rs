//! How `/api/openapi.json` describes the OpenAI-compatible routes. The handlers read their
//! bodies field by field (to answer each bad field in OpenAI's error shape, naming it in
//! `param`), so these types exist for the description alone; `tests/it/openapi.rs` holds the
//! two together by sending requests generated from it.

// Read by utoipa's derive only.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

/// A stop sequence or up to four.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(ToSchema)]
pub struct CompletionRequest {
    /// The function to run (a deployed decoder with a tokenizer).
    #[schema(example = "smollm2")]
    model: String,
    /// The prompt: text, or token ids.
    #[schema(value_type = Object, example = "Once upon a time")]
    prompt: Value,
    /// New tokens at most (default 16).
    max_tokens: Option<u32>,
    /// 0 (the default here is 1, as OpenAI's): greedy.
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    /// Answer as server-sent events.
    stream: Option<bool>,
    /// Only 1.
    n: Option<u32>,
}

/// One message of a chat.
#[derive(ToSchema)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ... as the chat template knows them.
    #[schema(example = "user")]
    role: String,
    /// Text.
    #[schema(example = "Hello!")]
    content: String,
}

/// `stream_options`.
#[derive(ToSchema)]
pub struct StreamOptions {
    /// A last chunk with the token counts.
    include_usage: Option<bool>,
}

/// `POST /v1/chat/completions`.
#[derive(ToSchema)]
pub struct ChatRequest {
    /// The function to run (a deployed decoder with a tokenizer and a chat template).
    #[schema(example = "smollm2")]
    model: String,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    /// Only 1.
    n: Option<u32>,
}

/// OpenAI's error shape.
#[derive(ToSchema)]
pub struct OpenAiErrorBody {
    #[schema(value_type = Object)]
    error: Value,
}
