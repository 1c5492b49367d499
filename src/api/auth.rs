//! The middleware that checks API tokens before routing: the route's needed access comes from
//! `crate::auth::required`, the token from `Authorization: Bearer`, or on WebSocket endpoints
//! from a `token` query parameter.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use serde::Deserialize;

use super::error::ApiError;
use crate::auth::{accepts_query_token, required};
use crate::runtime::Runtime;

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
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
    let access = required(req.path(), tokens.protect_metrics);
    let presented = bearer(&req).or_else(|| {
        accepts_query_token(req.path())
            .then(|| web::Query::<TokenQuery>::from_query(req.query_string()).ok()?.into_inner().token)
            .flatten()
    });
    match tokens.check(presented.as_deref(), &access) {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(e) => {
            let response = ApiError::Auth(e).error_response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
