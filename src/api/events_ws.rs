//! `/api/v1/events`: the live event feed over a WebSocket. A subscriber first gets a
//! `snapshot` (every device's residency and memory map, the deployed functions), then every
//! event as it happens. One that cannot keep up is dropped, never allowed to slow the runtime:
//! a whole channel behind, it is closed with code 1008; a send that waits too long ends its
//! connection.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::devices::devices_json;
use crate::events::now_ms;
use crate::metrics as m;
use crate::runtime::Runtime;

/// A send that waits this long means the subscriber stopped reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/api/v1/events", [web::get().to(connect)]);
}

#[utoipa::path(get, path = "/api/v1/events", tag = "streaming", params(("token" = Option<String>, Query, description = "API token")), responses((status = 101, description = "WebSocket: a snapshot, then events"), (status = 400, description = "not a WebSocket upgrade")))]
pub(crate) async fn connect(
    rt: web::Data<Runtime>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = upgrade(&req, body)?;
    let stream = stream.aggregate_continuations();
    actix_rt::spawn(serve(rt.into_inner(), session, stream));
    Ok(response)
}

/// The WebSocket handshake; a request that is not one is a JSON 400.
pub(super) fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
) -> Result<(HttpResponse, Session, actix_ws::MessageStream), super::error::ApiError> {
    actix_ws::handle(req, body)
        .map_err(|e| super::error::ApiError::BadRequest(format!("this endpoint takes a WebSocket upgrade: {e}")))
}

async fn send(session: &mut Session, text: &str) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, session.text(text.to_string())).await, Ok(Ok(())))
}

async fn serve(rt: Arc<Runtime>, session: Session, stream: AggregatedMessageStream) {
    m::event_subscribers(1.0);
    let dropped = feed(&rt, session, stream).await;
    m::event_subscribers(-1.0);
    if dropped {
        m::event_subscriber_dropped();
    }
}

/// Serves one subscriber until it leaves (`false`) or is dropped for being slow (`true`).
async fn feed(rt: &Runtime, mut session: Session, mut stream: AggregatedMessageStream) -> bool {
    // Subscribe before taking the snapshot: an event in between is seen twice, never lost.
    let mut events = rt.events.subscribe();
    let functions: Vec<_> = rt
        .functions()
        .iter()
        .map(|f| json!({"name": f.name, "model": f.record().model, "weight_bytes": f.payload.bytes()}))
        .collect();
    let snapshot = json!({
        "type": "snapshot",
        "ts_ms": now_ms(),
        "devices": devices_json(rt).await,
        "functions": functions,
    });
    if !send(&mut session, &snapshot.to_string()).await {
        return true;
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(text) => {
                    if !send(&mut session, &text).await {
                        return true;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let reason = CloseReason {
                        code: CloseCode::Policy,
                        description: Some(format!("subscriber too slow: {missed} events missed")),
                    };
                    let _ = tokio::time::timeout(SEND_TIMEOUT, session.close(Some(reason))).await;
                    return true;
                }
                Err(RecvError::Closed) => {
                    let _ = session.close(None).await;
                    return false;
                }
            },
            msg = stream.recv() => match msg {
                Some(Ok(AggregatedMessage::Ping(p))) => {
                    if session.pong(&p).await.is_err() {
                        return false;
                    }
                }
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    let _ = session.close(reason).await;
                    return false;
                }
                Some(Err(_)) | None => return false,
                Some(Ok(_)) => {}
            },
        }
    }
}
