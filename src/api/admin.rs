//! `/admin/`: the admin UI, a hand-written page embedded in the binary (no CDN, no build
//! step). It reads only the public API, with the token the operator types in.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX: &str = include_str!("admin/index.html");
const SCRIPT: &str = include_str!("admin/app.js");
const STYLE: &str = include_str!("admin/app.css");

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/admin", [web::get().to(redirect)]);
    super::resource(cfg, "/admin/", [web::get().to(|| asset("text/html; charset=utf-8", INDEX))]);
    super::resource(cfg, "/admin/app.js", [web::get().to(|| asset("text/javascript; charset=utf-8", SCRIPT))]);
    super::resource(cfg, "/admin/app.css", [web::get().to(|| asset("text/css; charset=utf-8", STYLE))]);
}

async fn redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/admin/")).finish()
}

async fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}
