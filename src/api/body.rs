//! Request bodies read with a size limit, whatever their content type (Triton's client sends
//! none), so an oversized body is a JSON 413 rather than a dropped connection.

use actix_web::web;
use futures_util::StreamExt;

use super::error::ApiError;
use crate::unsent::Held;

/// Reads a whole body of at most `limit` bytes, within `timeout` (a client that sends slowly
/// holds a worker's attention and its buffer; it gets a 408).
pub async fn read(payload: web::Payload, limit: usize, timeout: std::time::Duration) -> Result<web::Bytes, ApiError> {
    tokio::time::timeout(timeout, read_all(payload, limit)).await.map_err(|_| ApiError::BodyTimeout(timeout))?
}

async fn read_all(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body; an empty body reads as `{}`.
pub fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}" as &[u8] } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// A response body that holds its bytes in the shared `Unsent` count until they are written
/// (or the client goes), handed to the connection a slice at a time so that a stalled client
/// leaves its bytes here and not in the connection's buffer. A large one that its client has
/// not read within the send timeout is dropped (its bytes and its hold let go; the connection
/// fails at its next write), so that a client that stops reading cannot hold memory for good.
pub struct HeldBody {
    state: Body,
    len: u64,
}

/// A small body goes out whole (it fits the socket's buffers); a large one in slices, shared
/// with its send timer.
enum Body {
    Small(Option<(web::Bytes, Held)>),
    Large(std::sync::Arc<std::sync::Mutex<Sending>>),
}

enum Sending {
    Rest { data: web::Bytes, _held: Held },
    Done,
    TimedOut,
}

/// Slices handed to the connection.
const SLICE_BYTES: usize = 64 << 10;
/// Smaller bodies fit the socket's buffers and need no slices and no timer.
const TIMED_BYTES: usize = 1 << 20;

impl HeldBody {
    /// Call inside the actix system (a timer may be started).
    pub fn new(data: Vec<u8>, mut held: Held, send_timeout: std::time::Duration) -> Self {
        held.resize(data.len() as u64);
        let len = data.len() as u64;
        if data.len() <= TIMED_BYTES {
            return Self { state: Body::Small(Some((data.into(), held))), len };
        }
        let state = std::sync::Arc::new(std::sync::Mutex::new(Sending::Rest { data: data.into(), _held: held }));
        let weak = std::sync::Arc::downgrade(&state);
        actix_rt::spawn(async move {
            tokio::time::sleep(send_timeout).await;
            if let Some(state) = weak.upgrade() {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(*s, Sending::Rest { .. }) {
                    tracing::warn!("a response of {len} bytes was not read within {send_timeout:?}: dropped");
                    *s = Sending::TimedOut;
                }
            }
        });
        Self { state: Body::Large(state), len }
    }
}

impl actix_web::body::MessageBody for HeldBody {
    type Error = std::io::Error;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.len)
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<web::Bytes, Self::Error>>> {
        let state = match &mut self.state {
            // The hold goes with the last bytes handed over.
            Body::Small(body) => return std::task::Poll::Ready(body.take().map(|(data, _held)| Ok(data))),
            Body::Large(state) => state,
        };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let next = match &mut *s {
            Sending::Rest { data, .. } => {
                let slice = data.split_to(data.len().min(SLICE_BYTES));
                if data.is_empty() {
                    *s = Sending::Done;
                }
                Some(Ok(slice))
            }
            Sending::Done => None,
            Sending::TimedOut => {
                Some(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the client did not read the response")))
            }
        };
        std::task::Poll::Ready(next)
    }
}
