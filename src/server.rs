//! `faaswap serve` as a library function: takes the configuration and a bound listener (tests
//! bind port 0), starts the runtime and the HTTP server, restores persisted functions in the
//! background, and returns the running server.

use std::net::TcpListener;

use actix_web::{error::InternalError, web, App, HttpServer};

use crate::api;
use crate::config::ServeConfig;
use crate::runtime::{Runtime, StartError};

/// Starts everything; the returned server runs until stopped through its handle.
pub fn start(config: ServeConfig, listener: TcpListener) -> Result<actix_web::dev::Server, StartError> {
    let addr = listener.local_addr().map_or_else(|_| config.addr.clone(), |a| a.to_string());
    if config.auth.is_empty() {
        tracing::warn!("no API tokens configured: every endpoint is open to whoever reaches {addr}");
    } else {
        tracing::info!("API tokens: {:?}", config.auth);
    }
    let workers = config.http_workers;
    let runtime = Runtime::start(config)?;
    let data = web::Data::from(runtime.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                let resp = api::error::json_error(actix_web::http::StatusCode::BAD_REQUEST, "bad_request", &e);
                InternalError::from_response(e, resp).into()
            }))
            // The token check is each resource's middleware (it decides on the matched route),
            // and the default service's for what matches none.
            .configure(api::configure)
            .default_service(web::to(api::auth::not_found))
    })
    .workers(workers)
    .on_connect(api::client::on_connect)
    // Long-lived WebSockets (the event feed, generations) would otherwise hold a shutdown for
    // the default 30 s.
    .shutdown_timeout(5)
    .listen(listener)
    .map_err(|source| StartError::Listen { addr: addr.clone(), source })?
    .run();
    actix_rt::spawn(async move { runtime.restore().await });
    tracing::info!("faaswap listening on http://{addr}");
    Ok(server)
}
