//! The token check. It is every resource's middleware (`api::resource`), built with the
//! resource's pattern, so it runs after routing: the access a request needs comes from the route
//! actix dispatched it to (`crate::auth::route` on its pattern, and its decoded `name`), never
//! from the raw path. Requests no route matches reach the default service, which needs `admin` too. The
//! token comes from `Authorization: Bearer`, or on WebSocket routes from a `token` query
//! parameter.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpRequest};
use serde::Deserialize;

use super::error::{ApiError, Shape};
use crate::auth::{accepts_query_token, route, Access, RouteAccess};
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
fn authorize(req: &HttpRequest, query_token: bool, access: &Access) -> Result<(), ApiError> {
    let Some(rt) = req.app_data::<web::Data<Runtime>>() else {
        return Ok(());
    };
    let presented = bearer(req).or_else(|| {
        query_token.then(|| web::Query::<TokenQuery>::from_query(req.query_string()).ok()?.into_inner().token).flatten()
    });
    Ok(rt.config.auth.check(presented.as_deref(), access)?)
}

/// One route's token check, its needs read once from its pattern (`auth::route`).
#[derive(Debug, Clone, Copy)]
pub struct RouteCheck {
    access: RouteAccess,
    query_token: bool,
    shape: Shape,
}

impl RouteCheck {
    pub fn new(pattern: &str) -> Self {
        Self { access: route(pattern), query_token: accepts_query_token(pattern), shape: Shape::of(pattern) }
    }
}

/// Whether the request's token may invoke `function`: the check of the routes that name their
/// function in the body (`RouteAccess::InvokeInBody`), made by their handlers once they have read it.
pub fn may_invoke(req: &HttpRequest, function: &str) -> Result<(), ApiError> {
    authorize(req, false, &Access::Invoke(Some(function)))
}

/// The middleware of a route registered with `pattern`: it runs after routing, so the request
/// is one actix dispatched to that route.
pub async fn check(
    route: RouteCheck,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let protect_metrics = match req.app_data::<web::Data<Runtime>>() {
        // No tokens: everything is open (loopback only); nothing to parse per request.
        Some(rt) if !rt.config.auth.is_empty() => rt.config.auth.protect_metrics,
        _ => return next.call(req).await.map(ServiceResponse::map_into_left_body),
    };
    // The name as the handler's `web::Path` decodes it: the router leaves some escapes in a
    // segment (`%2F`, `%25`), which the extractor decodes; without a `%` both are the same.
    // A name that does not decode names no function: the route then needs admin.
    let decoded;
    let name = match (route.access, req.match_info().get("name")) {
        (RouteAccess::InvokeNamed, Some(raw)) if !raw.contains('%') => Some(raw),
        (RouteAccess::InvokeNamed, Some(_)) => {
            decoded = web::Path::<NameSegment>::extract(req.request()).await.ok().and_then(|p| p.into_inner().name);
            decoded.as_deref()
        }
        _ => None,
    };
    let access = route.access.needs(name, protect_metrics);
    match authorize(req.request(), route.query_token, &access) {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => {
            let response = e.response(route.shape);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// What no route matched: a JSON 404 for an admin, and the token error for anyone else (the
/// unknown fails closed: which paths exist is not told to strangers).
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    authorize(&req, false, &Access::Admin)?;
    Ok(super::error::json_error(actix_web::http::StatusCode::NOT_FOUND, "not_found", "no such endpoint"))
}
