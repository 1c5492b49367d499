//! The HTTP surface: KServe v2 (`kserve`), the management API (`functions`, `devices`),
//! generation and the event feed over WebSockets (`generate_ws`, `events_ws`), the admin UI
//! (`admin`), `/metrics`. `configure` registers every route; `error` maps every error to a status and a
//! stable code.

mod admin;
pub mod auth;
mod body;
mod devices;
pub mod error;
mod events_ws;
mod functions;
pub mod generate_ws;
mod kserve;
pub mod openapi;
mod tensors;

use actix_web::{web, HttpResponse};

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    kserve::configure(cfg);
    functions::configure(cfg);
    devices::configure(cfg);
    generate_ws::configure(cfg);
    events_ws::configure(cfg);
    admin::configure(cfg);
    cfg.route("/metrics", web::get().to(metrics)).route("/api/openapi.json", web::get().to(openapi::document));
}

#[utoipa::path(get, path = "/metrics", tag = "metrics", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(crate) async fn metrics(rt: web::Data<crate::runtime::Runtime>) -> HttpResponse {
    rt.publish_slo_metrics();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(crate::metrics::handle().render())
}
