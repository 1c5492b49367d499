//! The HTTP surface: KServe v2 (`kserve`), the management API (`functions`, `devices`),
//! generation and the event feed over WebSockets (`generate_ws`, `events_ws`), the
//! OpenAI-compatible API (`openai`), the admin UI (`admin`), `/metrics`. `configure` registers
//! every route; `error` maps every error to a status and a stable code.

mod admin;
pub mod auth;
mod body;
pub mod client;
mod devices;
pub mod error;
mod events_ws;
mod functions;
pub mod generate_ws;
mod kserve;
mod openai;
mod openai_doc;
pub mod openapi;
mod tensors;

use actix_web::{web, HttpResponse, Route};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    kserve::configure(cfg);
    functions::configure(cfg);
    devices::configure(cfg);
    generate_ws::configure(cfg);
    openai::configure(cfg);
    events_ws::configure(cfg);
    admin::configure(cfg);
    resource(cfg, "/metrics", [web::get().to(metrics)]);
    resource(cfg, "/api/openapi.json", [web::get().to(openapi::document)]);
}

/// Registers the routes of one path pattern behind the token check. The check is the
/// resource's middleware, built with its pattern, so it runs after routing and decides on what
/// actix dispatched — this pattern and the request's decoded `name` — never on the raw path
/// (`crate::auth::route`). A method the pattern has no route for is a JSON 405. Errors are in
/// the pattern's shape (`error::Shape::of`).
fn resource<const N: usize>(cfg: &mut web::ServiceConfig, pattern: &str, routes: [Route; N]) {
    let shape = error::Shape::of(pattern);
    let mut resource = web::resource(pattern).default_service(web::to(move || async move {
        let status = actix_web::http::StatusCode::METHOD_NOT_ALLOWED;
        error::shaped_error(shape, status, "method_not_allowed", "method not allowed")
    }));
    for route in routes {
        resource = resource.route(route);
    }
    let check = auth::RouteCheck::new(pattern);
    cfg.service(resource.wrap(actix_web::middleware::from_fn(move |req, next| auth::check(check, req, next))));
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(crate) async fn metrics(rt: web::Data<crate::runtime::Runtime>) -> HttpResponse {
    rt.publish_slo_metrics();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::metrics::handle().render())
}
