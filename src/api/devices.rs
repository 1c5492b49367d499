//! `/api/v1/devices`: every device with its kind, health, residency and memory map, and fault
//! injection into `sim` devices; and
//! `/api/v1/scheduler`: the scheduling policy the server runs.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::body;
use super::error::{ApiError, ErrorBody};
use crate::gpu::faults::FaultSpec;
use crate::runtime::Runtime;

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/api/v1/devices", [web::get().to(list)]);
    super::resource(cfg, "/api/v1/devices/{id}/faults", [web::post().to(inject)]);
    super::resource(cfg, "/api/v1/scheduler", [web::get().to(scheduler)]);
}

#[utoipa::path(get, path = "/api/v1/scheduler", tag = "devices", responses((status = 200, description = "policy, shedding, sim time scale", body = Object), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn scheduler(rt: web::Data<Runtime>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "policy": rt.config.policy,
        "shed": rt.config.shed,
        "sim_time_scale": rt.config.sim_time_scale,
        "devices": rt.devices.len(),
    }))
}

/// Arms a fault on a `sim` device: `{"fault": "device_lost" | "out_of_memory" | "copy_fail" |
/// "slow_copy" | "kernel_fail", "count"?, "duration_ms"?, "factor"?}`.
#[utoipa::path(post, path = "/api/v1/devices/{id}/faults", tag = "devices", params(("id" = String, Path, description = "device id", example = "sim:0")), request_body = FaultSpec, responses((status = 202, description = "armed", body = Object), (status = 404, description = "no such device", body = ErrorBody), (status = 409, description = "not a sim device", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn inject(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload, 64 << 10, rt.config.body_timeout).await?;
    let fault: FaultSpec = body::json(&body)?;
    rt.inject_fault(&path.0, fault).await?;
    Ok(HttpResponse::Accepted().json(json!({"device": path.0, "armed": true})))
}

#[utoipa::path(get, path = "/api/v1/devices", tag = "devices", responses((status = 200, description = "devices with memory maps", body = Object), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn list(rt: web::Data<Runtime>) -> HttpResponse {
    HttpResponse::Ok().json(devices_json(&rt).await)
}

/// Every device with its residency and memory map (also the event feed's snapshot).
pub async fn devices_json(rt: &Runtime) -> Vec<Value> {
    let snapshots = rt.device_snapshots();
    rt.devices
        .iter()
        .zip(snapshots)
        .map(|(info, s)| {
            json!({
                "id": info.id,
                "kind": info.kind,
                "page_bytes": info.page_bytes,
                "workspace_bytes": info.workspace_bytes,
                "host_link_bytes_per_s": info.host_link_bytes_per_s,
                "peer_links_bytes_per_s": info.peer_links_bytes_per_s,
                "host_group": info.host_group,
                "pci_bus_id": info.pci_bus_id,
                "capacity_bytes": s.capacity_bytes,
                "used_bytes": s.used_bytes,
                "free_bytes": s.free_bytes,
                "busy": s.busy,
                "healthy": s.healthy,
                "executing": s.executing,
                "resident": s.resident,
            })
        })
        .collect()
}
