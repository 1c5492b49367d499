//! `/api/v1/devices`: every device with its kind, residency and memory map; and
//! `/api/v1/scheduler`: the scheduling policy the server runs.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use crate::runtime::Runtime;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/devices", web::get().to(list)).route("/api/v1/scheduler", web::get().to(scheduler));
}

async fn scheduler(rt: web::Data<Runtime>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "policy": rt.config.policy,
        "shed": rt.config.shed,
        "sim_time_scale": rt.config.sim_time_scale,
        "devices": rt.devices.len(),
    }))
}

async fn list(rt: web::Data<Runtime>) -> HttpResponse {
    HttpResponse::Ok().json(devices_json(&rt).await)
}

/// Every device with its residency and memory map (also the event feed's snapshot).
pub async fn devices_json(rt: &Runtime) -> Vec<Value> {
    let snapshots = rt.device_snapshots().await;
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
                "capacity_bytes": s.capacity_bytes,
                "used_bytes": s.used_bytes,
                "free_bytes": s.free_bytes,
                "busy": s.busy,
                "executing": s.executing,
                "resident": s.resident,
            })
        })
        .collect()
}
