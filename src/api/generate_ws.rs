//! `/api/v1/functions/{name}/ws`: generation over a WebSocket. Each JSON request is answered
//! with one `token` message per new token as soon as it exists, then `done`; requests on one
//! socket run in turn. An error is sent as `{"type":"error","code","error"}` and closes the
//! socket. When the client leaves, its generation stops within one token.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::error::{ApiError, ErrorBody};
use crate::engine::{GenerateOptions, SamplingParams};
use crate::request::{Generation, TokenEvent};
use crate::runtime::Runtime;

/// Largest request message, bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Most new tokens one request may ask for (the model's positions bound it further).
pub const MAX_NEW_TOKENS: usize = 4096;
const DEFAULT_NEW_TOKENS: usize = 16;
const MAX_STOP_STRINGS: usize = 16;
const MAX_STOP_BYTES: usize = 256;
/// Requests a client may send while one runs (they wait their turn); one more closes the
/// socket with 1008.
pub const MAX_WAITING: usize = 8;
/// A message the client does not take within this long means it stopped reading: its
/// generation is cancelled and the socket closed with 1008.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/api/v1/functions/{name}/ws", [web::get().to(connect)]);
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One generation request, as the client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    input_ids: Option<Vec<u32>>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    /// Go on past the model's end-of-sequence token.
    #[serde(default)]
    ignore_eos: bool,
}

/// A request checked for everything that does not need the model.
pub struct Checked {
    text: Option<String>,
    input_ids: Option<Vec<u32>>,
    options: GenerateOptions,
    stop: Vec<String>,
}

impl GenerateRequest {
    pub fn parse(text: &str) -> Result<Checked, ApiError> {
        let r: Self = serde_json::from_str(text).map_err(|e| ApiError::BadRequest(format!("bad request: {e}")))?;
        r.check()
    }

    fn check(self) -> Result<Checked, ApiError> {
        let bad = |m: String| Err(ApiError::BadRequest(m));
        if self.text.is_some() == self.input_ids.is_some() {
            return bad("give exactly one of text and input_ids".into());
        }
        let max_new_tokens = self.max_new_tokens.unwrap_or(DEFAULT_NEW_TOKENS);
        if max_new_tokens > MAX_NEW_TOKENS {
            return bad(format!("max_new_tokens {max_new_tokens} exceeds the limit of {MAX_NEW_TOKENS}"));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP_STRINGS || stop.iter().any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES) {
            return bad(format!(
                "stop takes up to {MAX_STOP_STRINGS} non-empty strings of up to {MAX_STOP_BYTES} bytes"
            ));
        }
        let sampling =
            SamplingParams { temperature: self.temperature, top_k: self.top_k, top_p: self.top_p, seed: self.seed };
        sampling.validate().map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Checked {
            text: self.text,
            input_ids: self.input_ids,
            options: GenerateOptions { max_new_tokens, sampling, stop_at_eos: !self.ignore_eos },
            stop,
        })
    }
}

#[utoipa::path(get, path = "/api/v1/functions/{name}/ws", tag = "streaming", params(("name" = String, Path, description = "function name", example = "bert"), ("token" = Option<String>, Query, description = "API token (browsers cannot set headers on WebSockets)")), responses((status = 101, description = "WebSocket: JSON generation requests in, token/done/error messages out"), (status = 400, description = "not a WebSocket upgrade"), (status = 404, description = "not deployed", body = ErrorBody)))]
pub(crate) async fn connect(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let name = path.into_inner().0;
    if rt.function(&name).is_none() {
        return Err(ApiError::FunctionNotFound(name).into());
    }
    let (response, session, stream) = super::events_ws::upgrade(&req, body)?;
    let stream =
        stream.max_frame_size(MAX_MESSAGE_BYTES).aggregate_continuations().max_continuation_size(MAX_MESSAGE_BYTES);
    actix_rt::spawn(serve(rt.into_inner(), name, session, stream));
    Ok(response)
}

/// How one request ended for the socket.
enum Outcome {
    /// Answered with `done`: take the next request.
    Done,
    /// The client left.
    Gone,
    /// Answer with an error and close.
    Failed(ApiError),
    /// Close with 1008 (policy) and this reason: the client broke a limit.
    Refused(String),
}

/// Sends one message, within `SEND_TIMEOUT`.
async fn send(session: &mut Session, text: String) -> Outcome {
    match tokio::time::timeout(SEND_TIMEOUT, session.text(text)).await {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(_)) => Outcome::Gone,
        Err(_) => Outcome::Refused(format!("messages not read within {} s", SEND_TIMEOUT.as_secs())),
    }
}

async fn serve(rt: Arc<Runtime>, name: String, mut session: Session, mut stream: AggregatedMessageStream) {
    let mut backlog = VecDeque::new();
    loop {
        let text = match backlog.pop_front() {
            Some(t) => t,
            None => match next_text(&mut session, &mut stream).await {
                Some(t) => t,
                None => return,
            },
        };
        match run_one(&rt, &name, &text, &mut session, &mut stream, &mut backlog).await {
            Outcome::Done => {}
            Outcome::Gone => return,
            Outcome::Failed(e) => {
                let (_, code) = e.status_and_code();
                let msg = json!({"type": "error", "code": code, "error": e.to_string()});
                if let Outcome::Done = send(&mut session, msg.to_string()).await {
                    let _ = session.close(Some(CloseReason { code: CloseCode::Normal, description: None })).await;
                }
                return;
            }
            Outcome::Refused(why) => {
                let reason = CloseReason { code: CloseCode::Policy, description: Some(why) };
                let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(reason))).await;
                return;
            }
        }
    }
}

/// The next text message; `None` when the client closes or breaks the protocol.
async fn next_text(session: &mut Session, stream: &mut AggregatedMessageStream) -> Option<String> {
    loop {
        match stream.recv().await? {
            Ok(AggregatedMessage::Text(t)) => return Some(t.to_string()),
            Ok(AggregatedMessage::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(AggregatedMessage::Ping(p)) => session.pong(&p).await.ok()?,
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(reason)) => {
                let _ = session.clone().close(reason).await;
                return None;
            }
            Err(_) => return None,
        }
    }
}

fn token_message(t: &TokenEvent) -> String {
    json!({"type": "token", "index": t.index, "id": t.id, "text": t.text}).to_string()
}

async fn run_one(
    rt: &Runtime,
    name: &str,
    text: &str,
    session: &mut Session,
    stream: &mut AggregatedMessageStream,
    backlog: &mut VecDeque<String>,
) -> Outcome {
    let received = Instant::now();
    let checked = match GenerateRequest::parse(text) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let Some(entry) = rt.function(name) else {
        return Outcome::Failed(ApiError::FunctionNotFound(name.to_string()));
    };
    let text_len = checked.text.as_ref().map_or(0, String::len);
    let prompt = match (checked.input_ids, checked.text, entry.model()) {
        (Some(ids), _, _) => ids,
        (None, Some(text), Some(model)) => {
            let model = model.clone();
            let tokenize = move || model.spec.tokenize(&[text]);
            // As for inference: a long text is tokenized off the HTTP worker.
            let ids = if text_len > crate::runtime::INLINE_TEXT_BYTES {
                actix_rt::task::spawn_blocking(tokenize).await.map_err(|_| crate::request::RuntimeError::Stopped)
            } else {
                Ok(tokenize())
            };
            match ids {
                Ok(Ok(mut ids)) => ids.remove(0),
                Ok(Err(e)) => return Outcome::Failed(crate::request::RuntimeError::Engine(e).into()),
                Err(e) => return Outcome::Failed(e.into()),
            }
        }
        (None, _, _) => {
            return Outcome::Failed(ApiError::BadRequest("this function has no tokenizer: send input_ids".into()))
        }
    };
    let (tx, mut tokens) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let generation = Generation {
        prompt,
        options: checked.options,
        stop: checked.stop,
        received,
        tokens: tx,
        cancel: cancel.clone(),
    };
    let result = rt.generate(&entry, generation, None);
    tokio::pin!(result);
    let mut ended = None;
    let result = loop {
        if let Some(outcome) = ended {
            // Stop the generation (within one token) and wait for the device to let it go,
            // so that the request is accounted for as cancelled.
            cancel.store(true, Ordering::Release);
            tokens.close();
            let _ = result.await;
            return outcome;
        }
        tokio::select! {
            biased;
            Some(t) = tokens.recv() => {
                if let out @ (Outcome::Gone | Outcome::Refused(_)) = send(session, token_message(&t)).await {
                    ended = Some(out);
                }
            }
            msg = stream.recv() => match msg {
                Some(Ok(AggregatedMessage::Text(t))) => ended = wait_turn(backlog, t.to_string()),
                Some(Ok(AggregatedMessage::Binary(b))) => {
                    ended = wait_turn(backlog, String::from_utf8_lossy(&b).into_owned())
                }
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if session.pong(&p).await.is_err() {
                        ended = Some(Outcome::Gone);
                    }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    // Answer the close handshake, then stop.
                    let _ = session.clone().close(reason).await;
                    ended = Some(Outcome::Gone);
                }
                Some(Err(_)) | None => ended = Some(Outcome::Gone),
            },
            r = &mut result => break r,
        }
    };
    // Every token was sent before the summary: flush what is still buffered.
    while let Ok(t) = tokens.try_recv() {
        if let out @ (Outcome::Gone | Outcome::Refused(_)) = send(session, token_message(&t)).await {
            return out;
        }
    }
    let done = match result {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e.into()),
    };
    let generated = done.generated.unwrap_or_else(|| crate::request::Generated {
        token_ids: Vec::new(),
        first_token_ms: 0.0,
        finish_reason: crate::request::FinishReason::Length,
    });
    let msg = json!({
        "type": "done",
        "token_ids": generated.token_ids,
        "finish_reason": generated.finish_reason,
        "timings": {
            "queue_ms": done.queue_ms,
            "swap_ms": done.swap_ms,
            "first_token_ms": generated.first_token_ms,
            "total_ms": done.total_ms,
        },
        "device": done.device,
        "swap_source": done.swap_source,
    });
    send(session, msg.to_string()).await
}

/// Queues a request sent while another runs; past `MAX_WAITING` the socket is closed.
fn wait_turn(backlog: &mut VecDeque<String>, text: String) -> Option<Outcome> {
    if backlog.len() >= MAX_WAITING {
        return Some(Outcome::Refused(format!("more than {MAX_WAITING} requests waiting on one socket")));
    }
    backlog.push_back(text);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_before_they_reach_a_model() {
        let ok = GenerateRequest::parse(r#"{"input_ids":[1,2],"max_new_tokens":4,"stop":"x"}"#).unwrap();
        assert_eq!(ok.options.max_new_tokens, 4);
        assert_eq!(ok.stop, vec!["x".to_string()]);
        assert!(ok.options.stop_at_eos);
        let defaults = GenerateRequest::parse(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(defaults.options.max_new_tokens, DEFAULT_NEW_TOKENS);
        assert!(defaults.options.sampling.is_greedy());
        for bad in [
            r#"{}"#,
            r#"{"text":"a","input_ids":[1]}"#,
            r#"{"text":"a","max_new_tokens":100000}"#,
            r#"{"text":"a","temperature":-1}"#,
            r#"{"text":"a","top_p":0}"#,
            r#"{"text":"a","stop":[""]}"#,
            r#"{"text":"a","unknown":1}"#,
            r#"{"text":"a","input_ids":"x"}"#,
            "not json",
        ] {
            assert!(GenerateRequest::parse(bad).is_err(), "{bad}");
        }
    }
}

/// Hostile WebSocket messages: any text, and JSON objects with any mix of the known keys and
/// wild values, are parsed without a panic; what is accepted respects the limits.
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 16, 5, |inner| prop::collection::vec(inner, 0..5).prop_map(Value::Array))
    }

    fn message() -> impl Strategy<Value = Value> {
        let keys = prop_oneof![
            Just("text"),
            Just("input_ids"),
            Just("max_new_tokens"),
            Just("temperature"),
            Just("top_k"),
            Just("top_p"),
            Just("seed"),
            Just("stop"),
            Just("ignore_eos"),
            Just("other"),
        ];
        prop::collection::vec((keys, value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<Map<_, _>>()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn any_text_parses_or_errs(text in ".{0,200}") {
            let _ = GenerateRequest::parse(&text);
        }

        #[test]
        fn accepted_messages_respect_the_limits(msg in message()) {
            if let Ok(c) = GenerateRequest::parse(&msg.to_string()) {
                prop_assert!(c.options.max_new_tokens <= MAX_NEW_TOKENS);
                prop_assert!(c.stop.len() <= MAX_STOP_STRINGS);
                prop_assert!(c.text.is_some() != c.input_ids.is_some());
                prop_assert!(c.options.sampling.validate().is_ok());
            }
        }
    }
}
