//! The token check. It is every resource's middleware (`api::resource`), so it runs after
//! routing: the access a request needs comes from the route actix dispatched it to
//! (`crate::auth::required` on the matched pattern and its decoded `name`), never from the raw
//! path. Requests no route matches reach the default service, which needs `admin` too. The
//! token comes from `Authorization: Bearer`, or on WebSocket routes from a `token` query
//! parameter.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest, ResponseError};
use serde::Deserialize;

use super::error::ApiError;
use crate::auth::{accepts_query_token, required, Access};
use crate::runtime::Runtime;

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `{name}` segment of the matched route, decoded exactly as the handlers' `web::Path`
/// decodes it.
#[derive(Deserialize)]
struct NameSegment {
    #[serde(default)]
    name: Option<String>,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// Checks the request's token against `access`; `Ok` when no tokens are configured.
fn authorize(req: &HttpRequest, pattern: Option<&str>, access: &Access) -> Result<(), ApiError> {
    let Some(rt) = req.app_data::<web::Data<Runtime>>() else {
        return Ok(());
    };
    let presented = bearer(req).or_else(|| {
        accepts_query_token(pattern)
            .then(|| web::Query::<TokenQuery>::from_query(req.query_string()).ok()?.into_inner().token)
            .flatten()
    });
    Ok(rt.config.auth.check(presented.as_deref(), access)?)
}

pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(rt) = req.app_data::<web::Data<Runtime>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let tokens = &rt.config.auth;
    if tokens.is_empty() {
        // No tokens: everything is open (loopback only); nothing to parse per request.
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    }
    let pattern = req.match_pattern();
    // A name that does not decode names no function: the route then needs admin.
    let name = web::Path::<NameSegment>::extract(req.request()).await.ok().and_then(|p| p.into_inner().name);
    let access = required(pattern.as_deref(), name.as_deref(), tokens.protect_metrics);
    match authorize(req.request(), pattern.as_deref(), &access) {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => {
            let response = e.error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// What no route matched: a JSON 404 for an admin, and the token error for anyone else (the
/// unknown fails closed: which paths exist is not told to strangers).
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    authorize(&req, None, &Access::Admin)?;
    Ok(super::error::json_error(actix_web::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint"))
}
