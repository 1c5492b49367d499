//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/completions` and
//! `POST /v1/chat/completions`, answered as OpenAI's clients expect — streamed as server-sent
//! events when asked — with errors in OpenAI's shape from the one error table. `model` names a
//! function: the route takes any invoke token and the handler checks the function named.
//!
//! A generation runs as on the WebSocket route (`Runtime::generate`, its tokens over a channel,
//! on a task of its own so that it is accounted however it ends). A client that goes away drops
//! the response and with it the channel's receiver, which the device checks after every token.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::body;
use super::client::ClientSocket;
use super::error::{ApiError, OpenAiError, Shape};
use super::generate_ws::MAX_NEW_TOKENS;
use super::openai_doc::{ChatRequest, CompletionRequest, OpenAiErrorBody};
use crate::engine::{ChatMessage, EngineError, GenerateOptions, Model, SamplingParams, TextEncoder};
use crate::function::Function;
use crate::request::text::{cut_at_stop, without_eos, TextStream};
use crate::request::{Completed, FinishReason, Generation, RuntimeError, TokenEvent};
use crate::runtime::Runtime;

/// OpenAI's limit on stop strings.
const MAX_STOP_STRINGS: usize = 4;
const MAX_STOP_BYTES: usize = 256;
/// OpenAI's default `max_tokens` for a completion; a chat's is the room the model has left.
const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// Fields OpenAI defines that change nothing about an answer here.
const IGNORED: [&str; 5] = ["user", "metadata", "store", "service_tier", "parallel_tool_calls"];
/// How often a non-streamed generation looks whether its client is still there.
const CLIENT_CHECK: std::time::Duration = std::time::Duration::from_millis(20);
const FINGERPRINT: &str = concat!("faaswap-", env!("CARGO_PKG_VERSION"));

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/v1/chat/completions", [web::post().to(chat)]);
    super::resource(cfg, "/v1/completions", [web::post().to(completions)]);
    super::resource(cfg, "/v1/models", [web::get().to(models)]);
    super::resource(cfg, "/v1/models/{name}", [web::get().to(model)]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "the generative functions this token may call", body = Object)))]
async fn models(rt: web::Data<Runtime>, req: HttpRequest) -> HttpResponse {
    // The functions this token may call, of those that generate text.
    let data: Vec<Value> = rt
        .functions()
        .iter()
        .filter(|f| generative(f).is_ok() && super::auth::may_invoke(&req, f.name.as_str()).is_ok())
        .map(|f| model_json(f))
        .collect();
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

#[utoipa::path(get, path = "/v1/models/{name}", tag = "openai", params(("name" = String, Path, description = "function name")), responses((status = 200, description = "the function as an OpenAI model", body = Object), (status = 400, description = "not a generative function", body = OpenAiErrorBody), (status = 404, description = "no such function", body = OpenAiErrorBody)))]
async fn model(rt: web::Data<Runtime>, path: web::Path<(String,)>) -> Result<HttpResponse, OpenAiError> {
    let (entry, _) = function(&rt, &path.0)?;
    Ok(HttpResponse::Ok().json(model_json(&entry)))
}

fn model_json(entry: &Function) -> Value {
    let created = entry.record().created_unix_ms / 1000;
    json!({"id": entry.name.as_str(), "object": "model", "created": created, "owned_by": "faaswap"})
}

/// The function `name` and its model, if that generates text.
fn function(rt: &Runtime, name: &str) -> Result<(Arc<Function>, Arc<Model>), ApiError> {
    let entry = rt.function(name).ok_or_else(|| match rt.unavailable(name) {
        Some(u) => ApiError::FunctionUnavailable { name: name.to_string(), reason: u.reason },
        None => ApiError::FunctionNotFound(name.to_string()),
    })?;
    let model = generative(&entry)?.clone();
    Ok((entry, model))
}

/// The model of a function that can answer here: a decoder with a tokenizer.
fn generative(entry: &Function) -> Result<&Arc<Model>, ApiError> {
    let name = entry.name.as_str();
    let Some(model) = entry.model() else {
        return Err(invalid(
            "model",
            format!("function {name:?} is deployed from a profile alone: it cannot generate"),
        ));
    };
    if model.spec.arch.as_decoder().is_none() {
        let family = model.spec.arch.model_type();
        return Err(invalid("model", format!("function {name:?} runs a {family} model, which does not generate text")));
    }
    if model.spec.tokenizer.is_none() {
        return Err(RuntimeError::Engine(EngineError::NoTokenizer).into());
    }
    Ok(model)
}

/// A request body read within the limits, as fields, with the function it names (`model`) and
/// when it arrived.
async fn request_fields(rt: &Runtime, payload: web::Payload) -> Result<(Instant, Fields, String), OpenAiError> {
    let received = Instant::now();
    let body = body::read(payload, rt.config.max_body, rt.config.body_timeout).await?;
    let mut f = Fields::parse(&body)?;
    let name: String = f.require("model")?;
    Ok((received, f, name))
}

#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest, responses((status = 200, description = "the completion, or server-sent events with `stream`", body = Object), (status = 400, description = "a bad field, named in `param`", body = OpenAiErrorBody), (status = 401, description = "no or unknown token", body = OpenAiErrorBody), (status = 403, description = "a token that may not call the function", body = OpenAiErrorBody), (status = 404, description = "no such function", body = OpenAiErrorBody), (status = 413, description = "body too large", body = OpenAiErrorBody)))]
pub(crate) async fn completions(
    rt: web::Data<Runtime>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OpenAiError> {
    let (received, mut f, name) = request_fields(&rt, payload).await?;
    let prompt = take_prompt(&mut f)?;
    let settings = Settings::take(&mut f, Kind::Completion)?;
    f.refuse("best_of", |v| v == 1)?;
    f.refuse("echo", |v| v == false)?;
    f.refuse("suffix", |v| v == "")?;
    f.finish()?;
    super::auth::may_invoke(&req, &name)?;
    let (entry, model) = function(&rt, &name)?;
    let prompt = match prompt {
        Prompt::Ids(ids) => ids,
        Prompt::Text(text) => tokenize(&model, text).await?,
    };
    let caller = Caller { received, client: ClientSocket::of(&req) };
    answer(rt.into_inner(), entry, model, prompt, settings, Kind::Completion, caller).await
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatRequest, responses((status = 200, description = "the chat completion, or server-sent events with `stream`", body = Object), (status = 400, description = "a bad field, named in `param`", body = OpenAiErrorBody), (status = 401, description = "no or unknown token", body = OpenAiErrorBody), (status = 403, description = "a token that may not call the function", body = OpenAiErrorBody), (status = 404, description = "no such function", body = OpenAiErrorBody), (status = 413, description = "body too large", body = OpenAiErrorBody)))]
pub(crate) async fn chat(
    rt: web::Data<Runtime>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OpenAiError> {
    let (received, mut f, name) = request_fields(&rt, payload).await?;
    let messages = take_messages(&mut f)?;
    let settings = Settings::take(&mut f, Kind::Chat)?;
    let empty = |v: &Value| v.as_array().is_some_and(Vec::is_empty);
    f.refuse("tools", empty)?;
    f.refuse("functions", empty)?;
    f.refuse("tool_choice", |v| v == "none")?;
    f.refuse("function_call", |v| v == "none")?;
    f.refuse("response_format", |v| v["type"] == "text")?;
    f.refuse("modalities", |v| *v == json!(["text"]))?;
    f.finish()?;
    super::auth::may_invoke(&req, &name)?;
    let (entry, model) = function(&rt, &name)?;
    let rt = rt.into_inner();
    // Loading a template, rendering and tokenizing block: not on the HTTP worker.
    let (runtime, function) = (rt.clone(), entry.clone());
    let prompt = actix_rt::task::spawn_blocking(move || runtime.chat_prompt(&function, &messages))
        .await
        .map_err(|_| RuntimeError::Stopped)??;
    let caller = Caller { received, client: ClientSocket::of(&req) };
    answer(rt, entry, model, prompt, settings, Kind::Chat, caller).await
}

/// A completion's prompt text, tokenized as the WebSocket route does (with the special tokens
/// the tokenizer adds); a long one off the HTTP worker.
async fn tokenize(model: &Arc<Model>, text: String) -> Result<Vec<u32>, RuntimeError> {
    let long = text.len() > crate::runtime::INLINE_TEXT_BYTES;
    let model = model.clone();
    let run = move || model.spec.tokenize(&[text]).map(|mut ids| ids.remove(0));
    let ids = if long { actix_rt::task::spawn_blocking(run).await.map_err(|_| RuntimeError::Stopped)? } else { run() };
    Ok(ids?)
}

/// Who asked: when the request arrived, and its connection (to notice it closing).
struct Caller<'a> {
    received: Instant,
    client: Option<&'a ClientSocket>,
}

/// Runs the generation and answers: one JSON body, or a stream of chunks.
async fn answer(
    rt: Arc<Runtime>,
    entry: Arc<Function>,
    model: Arc<Model>,
    prompt: Vec<u32>,
    settings: Settings,
    kind: Kind,
    caller: Caller<'_>,
) -> Result<HttpResponse, OpenAiError> {
    let room = model.spec.arch.max_positions().saturating_sub(prompt.len());
    let default = match kind {
        Kind::Completion => DEFAULT_COMPLETION_TOKENS,
        Kind::Chat => MAX_NEW_TOKENS,
    };
    // Unasked, as many as fit; at least one, so that a prompt that fills the model is refused.
    let max_new_tokens = settings.max_tokens.unwrap_or(default.min(room).max(1));
    let reply = Reply::new(kind, &entry, model, prompt.len(), &settings);
    let options = GenerateOptions { max_new_tokens, sampling: settings.sampling, stop_at_eos: true };
    let (tx, tokens) = mpsc::unbounded_channel();
    let generation = Generation {
        prompt,
        options,
        stop: settings.stop,
        received: caller.received,
        tokens: tx,
        cancel: Arc::new(AtomicBool::new(false)),
    };
    let done = actix_rt::spawn(async move { rt.generate(&entry, generation, None).await });
    let mut run = Run { tokens, done };
    if !settings.stream {
        let done = run.finish(caller.client).await?;
        return Ok(HttpResponse::Ok().json(reply.whole(&done)?));
    }
    // The response starts with the first token, so that a request refused before it runs is
    // answered with its status rather than an error inside a stream.
    let first = run.next().await;
    if let Event::Done(Err(e)) = first {
        return Err(e.into());
    }
    let mut sse = Sse { run, reply, pending: VecDeque::new(), finished: false };
    if kind == Kind::Chat {
        let role = sse.reply.chunk(json!({"role": "assistant", "content": ""}), None);
        sse.pending.push_back(role);
    }
    sse.take(first);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(sse.into_stream()))
}

/// A generation running for a request: its tokens as they come, then its result. Dropped (its
/// client gone), it closes the token channel, and the device stops within a token; the task
/// still waits for the device, so the request is accounted as cancelled.
struct Run {
    tokens: mpsc::UnboundedReceiver<TokenEvent>,
    done: tokio::task::JoinHandle<Result<Completed, RuntimeError>>,
}

enum Event {
    Token(TokenEvent),
    Done(Result<Completed, RuntimeError>),
}

impl Run {
    /// The next token, or the result once every token has come (not to be called after that).
    async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            Some(t) = self.tokens.recv() => Event::Token(t),
            r = &mut self.done => Event::Done(r.unwrap_or(Err(RuntimeError::Stopped))),
        }
    }

    /// The result, once every token has come; `Cancelled` as soon as `client` is seen gone
    /// (checked every `CLIENT_CHECK`), which drops the run and so stops the device within a
    /// token.
    async fn finish(mut self, client: Option<&ClientSocket>) -> Result<Completed, RuntimeError> {
        let mut check = tokio::time::interval(CLIENT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.next() => if let Event::Done(result) = event {
                    return result;
                },
                _ = check.tick(), if client.is_some() => if client.is_some_and(ClientSocket::gone) {
                    return Err(RuntimeError::Cancelled);
                },
            }
        }
    }
}

/// The answer to one request: its identity, and its text as it grows.
struct Reply {
    kind: Kind,
    id: String,
    created: u64,
    function: String,
    model: Arc<Model>,
    stop: Vec<String>,
    prompt_tokens: usize,
    include_usage: bool,
    text: TextStream,
}

impl Reply {
    fn new(kind: Kind, entry: &Function, model: Arc<Model>, prompt_tokens: usize, s: &Settings) -> Self {
        let prefix = match kind {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
        };
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let text = TextStream::new(eos(&model), &s.stop);
        Self {
            kind,
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created,
            function: entry.name.to_string(),
            model,
            stop: s.stop.clone(),
            prompt_tokens,
            include_usage: s.include_usage,
            text,
        }
    }

    fn tokenizer(&self) -> &TextEncoder {
        self.model.spec.tokenizer.as_ref().expect("only functions with a tokenizer are answered")
    }

    /// A finished generation's text, why it ended, and how many tokens it made.
    fn ending(&self, done: &Completed) -> Result<(String, &'static str, usize), RuntimeError> {
        let generated = done.generated.as_ref();
        let ids = generated.map_or(&[][..], |g| &g.token_ids);
        let text = self.tokenizer().decode(without_eos(ids, eos(&self.model)))?;
        let (text, stopped) = cut_at_stop(text, &self.stop);
        let reason = match generated.map(|g| g.finish_reason) {
            _ if stopped => "stop",
            Some(FinishReason::Eos | FinishReason::Stop) => "stop",
            _ => "length",
        };
        Ok((text, reason, ids.len()))
    }

    /// The fields every body and chunk starts with.
    fn head(&self, object: &str) -> Map<String, Value> {
        let mut head = Map::new();
        head.insert("id".into(), json!(self.id));
        head.insert("object".into(), json!(object));
        head.insert("created".into(), json!(self.created));
        head.insert("model".into(), json!(self.function));
        head.insert("system_fingerprint".into(), json!(FINGERPRINT));
        head
    }

    fn usage(&self, completion_tokens: usize) -> Value {
        let (p, c) = (self.prompt_tokens, completion_tokens);
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
    }

    /// The answer of a request without streaming.
    fn whole(&self, done: &Completed) -> Result<Value, RuntimeError> {
        let (text, reason, completion_tokens) = self.ending(done)?;
        let (object, choice) = match self.kind {
            Kind::Completion => {
                ("text_completion", json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason}))
            }
            Kind::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                       "finish_reason": reason}),
            ),
        };
        let mut body = self.head(object);
        body.insert("choices".into(), json!([choice]));
        body.insert("usage".into(), self.usage(completion_tokens));
        Ok(Value::Object(body))
    }

    /// A stream's chunk: `delta` (a completion's text, a chat's delta object), and how the
    /// generation finished in the last one.
    fn chunk(&self, delta: Value, finish: Option<&str>) -> web::Bytes {
        let (object, choice) = match self.kind {
            Kind::Completion => {
                ("text_completion", json!({"index": 0, "text": delta, "logprobs": null, "finish_reason": finish}))
            }
            Kind::Chat => (
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
            ),
        };
        let mut chunk = self.head(object);
        chunk.insert("choices".into(), json!([choice]));
        if self.include_usage {
            // As OpenAI streams: every chunk has the field, the last one its value.
            chunk.insert("usage".into(), Value::Null);
        }
        event(&Value::Object(chunk))
    }

    fn piece(&self, text: &str) -> web::Bytes {
        match self.kind {
            Kind::Completion => self.chunk(json!(text), None),
            Kind::Chat => self.chunk(json!({"content": text}), None),
        }
    }

    /// The chunks that end a stream: the text's rest, the finish reason, the usage if asked,
    /// and `[DONE]`.
    fn end(&mut self, done: &Completed) -> Result<Vec<web::Bytes>, RuntimeError> {
        let (text, reason, completion_tokens) = self.ending(done)?;
        let mut chunks: Vec<web::Bytes> = self.text.rest(&text).map(|rest| self.piece(&rest)).into_iter().collect();
        let last = match self.kind {
            Kind::Completion => json!(""),
            Kind::Chat => json!({}),
        };
        chunks.push(self.chunk(last, Some(reason)));
        if self.include_usage {
            let object = match self.kind {
                Kind::Completion => "text_completion",
                Kind::Chat => "chat.completion.chunk",
            };
            let mut usage = self.head(object);
            usage.insert("choices".into(), json!([]));
            usage.insert("usage".into(), self.usage(completion_tokens));
            chunks.push(event(&Value::Object(usage)));
        }
        chunks.push(web::Bytes::from_static(b"data: [DONE]\n\n"));
        Ok(chunks)
    }
}

fn eos(model: &Model) -> &[u32] {
    model.spec.arch.as_decoder().map_or(&[], |d| d.eos_ids())
}

fn event(data: &Value) -> web::Bytes {
    format!("data: {data}\n\n").into()
}

/// A streamed answer: its chunks, made as the tokens come.
struct Sse {
    run: Run,
    reply: Reply,
    pending: VecDeque<web::Bytes>,
    finished: bool,
}

impl Sse {
    fn take(&mut self, event: Event) {
        let reply = &mut self.reply;
        match event {
            Event::Token(t) => {
                let tokenizer = reply.model.spec.tokenizer.as_ref();
                let piece = reply.text.push(t.id, |ids| tokenizer?.decode(ids).ok());
                self.pending.extend(piece.map(|p| reply.piece(&p)));
            }
            Event::Done(result) => {
                self.finished = true;
                match result.and_then(|done| reply.end(&done)) {
                    Ok(chunks) => self.pending.extend(chunks),
                    // OpenAI's clients raise an error event as the error it holds.
                    Err(e) => self.pending.push_back(self::event(&ApiError::from(e).body(Shape::OpenAi))),
                }
            }
        }
    }

    fn into_stream(self) -> impl futures_util::Stream<Item = Result<web::Bytes, actix_web::Error>> {
        futures_util::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(chunk) = s.pending.pop_front() {
                    return Some((Ok(chunk), s));
                }
                if s.finished {
                    return None;
                }
                let event = s.run.next().await;
                s.take(event);
            }
        })
    }
}

/// What completions and chats share: how many tokens, how to sample, where to stop, whether
/// to stream.
struct Settings {
    max_tokens: Option<usize>,
    sampling: SamplingParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

impl Settings {
    fn take(f: &mut Fields, kind: Kind) -> Result<Self, ApiError> {
        let mut max_tokens = f.take::<usize>("max_tokens")?;
        if kind == Kind::Chat {
            // The newer name wins.
            if let Some(n) = f.take("max_completion_tokens")? {
                max_tokens = Some(n);
            }
        }
        if max_tokens.is_some_and(|n| n == 0 || n > MAX_NEW_TOKENS) {
            return Err(invalid("max_tokens", format!("max_tokens must be from 1 to {MAX_NEW_TOKENS}")));
        }
        // OpenAI samples at temperature 1 unless told otherwise; 0 is greedy.
        let temperature = f.take::<f32>("temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(invalid("temperature", format!("temperature {temperature} must be from 0 to 2")));
        }
        let top_p = f.take::<f32>("top_p")?;
        if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(invalid("top_p", "top_p must be in (0, 1]"));
        }
        let top_k = f.take::<usize>("top_k")?;
        if top_k == Some(0) {
            return Err(invalid("top_k", "top_k must be at least 1"));
        }
        let sampling = SamplingParams { temperature: Some(temperature), top_k, top_p, seed: f.take("seed")? };
        let stop = match f.take::<Value>("stop")? {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(v) => serde_json::from_value(v).map_err(|_| invalid("stop", "stop must be a string or a list"))?,
        };
        if stop.len() > MAX_STOP_STRINGS || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return Err(invalid(
                "stop",
                format!("stop takes up to {MAX_STOP_STRINGS} non-empty strings of up to {MAX_STOP_BYTES} bytes"),
            ));
        }
        let stream = f.take("stream")?.unwrap_or(false);
        let options = f.take::<Value>("stream_options")?;
        let include_usage = options.is_some_and(|o| o["include_usage"] == true);
        f.refuse("n", |v| v == 1)?;
        f.refuse("presence_penalty", |v| v.as_f64() == Some(0.0))?;
        f.refuse("frequency_penalty", |v| v.as_f64() == Some(0.0))?;
        f.refuse("logit_bias", |v| v.as_object().is_some_and(Map::is_empty))?;
        f.refuse("logprobs", |v| v == false)?;
        f.refuse("top_logprobs", |v| v == 0)?;
        Ok(Self { max_tokens, sampling, stop, stream, include_usage })
    }
}

enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// A completion's prompt: a string or a list of token ids (a list of one of those is that one).
fn take_prompt(f: &mut Fields) -> Result<Prompt, ApiError> {
    let one = |v: Value| match v {
        Value::String(s) if !s.is_empty() => Ok(Prompt::Text(s)),
        Value::Array(ids) if !ids.is_empty() => serde_json::from_value(Value::Array(ids))
            .map(Prompt::Ids)
            .map_err(|_| invalid("prompt", "token ids must be integers from 0")),
        _ => Err(invalid("prompt", "prompt must be a non-empty string or list of token ids")),
    };
    match f.require::<Value>("prompt")? {
        Value::Array(mut list) if list.len() == 1 && (list[0].is_string() || list[0].is_array()) => one(list.remove(0)),
        Value::Array(list) if list.iter().any(|p| p.is_string() || p.is_array()) => Err(ApiError::Unsupported {
            param: "prompt".into(),
            message: "one prompt per request: a list of prompts is not supported".into(),
        }),
        v => one(v),
    }
}

/// A chat's messages: each a role and its text. Content may be a list of text parts, joined by
/// newlines (as vLLM joins them); tool calls and images are refused.
fn take_messages(f: &mut Fields) -> Result<Vec<ChatMessage>, ApiError> {
    let list: Vec<Map<String, Value>> = f.require("messages")?;
    if list.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    list.into_iter().map(message).collect()
}

fn message(mut m: Map<String, Value>) -> Result<ChatMessage, ApiError> {
    let Some(Value::String(role)) = m.remove("role") else {
        return Err(invalid("messages", "every message needs a role"));
    };
    let content = match m.remove("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => parts.iter().map(text_part).collect::<Result<Vec<_>, _>>()?.join("\n"),
        Some(_) => return Err(invalid("messages", "a message's content must be a string or a list of parts")),
    };
    // A name is for the model's provider; empty or null fields say nothing.
    m.remove("name");
    m.retain(|_, v| !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)));
    match m.keys().next() {
        Some(k) => Err(ApiError::Unsupported {
            param: "messages".into(),
            message: format!("message field {k:?} is not supported"),
        }),
        None => Ok(ChatMessage::new(role, content)),
    }
}

fn text_part(part: &Value) -> Result<&str, ApiError> {
    match (part["type"].as_str(), part["text"].as_str()) {
        (Some("text"), Some(text)) => Ok(text),
        (kind, _) => Err(ApiError::Unsupported {
            param: "messages".into(),
            message: format!("content parts of type {:?} are not supported: text only", kind.unwrap_or_default()),
        }),
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter { param: param.into(), message: message.into() }
}

/// A request body's fields, taken one at a time so that each error names its field; any left
/// at the end is refused, so that a field meant to change the answer is never ignored.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::BadRequest("the body must be a JSON object".into())),
            Err(e) => Err(ApiError::BadRequest(format!("invalid JSON body: {e}"))),
        }
    }

    /// The field `key` as a `T`; absent or `null`, `None`.
    fn take<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, ApiError> {
        match self.0.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v).map(Some).map_err(|e| invalid(key, format!("{key}: {e}"))),
        }
    }

    fn require<T: DeserializeOwned>(&mut self, key: &str) -> Result<T, ApiError> {
        self.take(key)?.ok_or_else(|| invalid(key, format!("{key} is required")))
    }

    /// Refuses the field `key` unless it is absent or `inert` (its value changes nothing).
    fn refuse(&mut self, key: &str, inert: impl Fn(&Value) -> bool) -> Result<(), ApiError> {
        match self.0.remove(key) {
            Some(v) if !v.is_null() && !inert(&v) => {
                Err(ApiError::Unsupported { param: key.into(), message: format!("{key} is not supported") })
            }
            _ => Ok(()),
        }
    }

    fn finish(mut self) -> Result<(), ApiError> {
        for key in IGNORED {
            self.0.remove(key);
        }
        match self.0.keys().next() {
            Some(key) => Err(invalid(key, format!("unknown field {key:?}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(body: Value) -> Result<(Prompt, Settings), ApiError> {
        let mut f = Fields::parse(body.to_string().as_bytes())?;
        let _: String = f.require("model")?;
        let prompt = take_prompt(&mut f)?;
        let settings = Settings::take(&mut f, Kind::Completion)?;
        f.finish()?;
        Ok((prompt, settings))
    }

    fn param(e: ApiError) -> String {
        match e {
            ApiError::InvalidParameter { param, .. } | ApiError::Unsupported { param, .. } => param,
            other => panic!("not about a field: {other}"),
        }
    }

    #[test]
    fn requests_are_read_as_openai_defines_them() {
        let (prompt, s) =
            completion(json!({"model": "m", "prompt": ["hi"], "stop": "x", "n": 1, "user": "u"})).unwrap();
        assert!(matches!(prompt, Prompt::Text(t) if t == "hi"));
        assert_eq!(
            (s.max_tokens, s.sampling.temperature, s.stop.as_slice()),
            (None, Some(1.0), &["x".to_string()][..])
        );
        assert!(!s.stream && !s.include_usage);
        let (prompt, s) = completion(json!({"model": "m", "prompt": [1, 2], "temperature": 0, "max_tokens": 5,
            "stream": true, "stream_options": {"include_usage": true}, "logprobs": null, "stop": ["a", "b"]}))
        .unwrap();
        assert!(matches!(prompt, Prompt::Ids(ids) if ids == [1, 2]));
        assert!(s.sampling.is_greedy() && s.stream && s.include_usage && s.max_tokens == Some(5));
    }

    #[test]
    fn what_would_change_the_answer_unseen_is_refused_naming_its_field() {
        for (body, field) in [
            (json!({"prompt": "a"}), "model"),
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": ["a", "b"]}), "prompt"),
            (json!({"model": "m", "prompt": [-1]}), "prompt"),
            (json!({"model": "m", "prompt": ""}), "prompt"),
            (json!({"model": "m", "prompt": "a", "logprobs": 1}), "logprobs"),
            (json!({"model": "m", "prompt": "a", "n": 2}), "n"),
            (json!({"model": "m", "prompt": "a", "presence_penalty": 0.5}), "presence_penalty"),
            (json!({"model": "m", "prompt": "a", "max_tokens": 0}), "max_tokens"),
            (json!({"model": "m", "prompt": "a", "max_tokens": 100000}), "max_tokens"),
            (json!({"model": "m", "prompt": "a", "temperature": 3}), "temperature"),
            (json!({"model": "m", "prompt": "a", "top_p": 0}), "top_p"),
            (json!({"model": "m", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}), "stop"),
            (json!({"model": "m", "prompt": "a", "stop": [""]}), "stop"),
            (json!({"model": "m", "prompt": "a", "colour": 1}), "colour"),
        ] {
            let err = completion(body.clone()).err().unwrap_or_else(|| panic!("{body} is refused"));
            assert_eq!(err.status_and_code().0, 400, "{body}");
            assert_eq!(param(err), field, "{body}");
        }
        assert!(matches!(Fields::parse(b"[1]"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn messages_are_text_with_a_role() {
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": null, "tool_calls": []}]});
        let mut f = Fields::parse(parts.to_string().as_bytes()).unwrap();
        let m = take_messages(&mut f).unwrap();
        assert_eq!(m, [ChatMessage::new("user", "a\nb"), ChatMessage::new("assistant", "")]);
        for bad in [
            json!({"messages": []}),
            json!({"messages": [{"content": "x"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "1"}]}]}),
        ] {
            let mut f = Fields::parse(bad.to_string().as_bytes()).unwrap();
            assert_eq!(param(take_messages(&mut f).unwrap_err()), "messages", "{bad}");
        }
    }
}
