//! `/api/v1/functions`: create (deploy with full settings), list, get, update settings,
//! delete (undeploy).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body;
use super::error::{ApiError, ErrorBody};
use super::kserve::io_metadata;
use crate::function::{Function, Unavailable};
use crate::policy::cluster::DeviceSnapshot;
use crate::policy::Profile;
use crate::runtime::Runtime;
use crate::store::FunctionSettings;

pub fn configure(cfg: &mut web::ServiceConfig) {
    super::resource(cfg, "/api/v1/functions", [web::get().to(list), web::post().to(create)]);
    super::resource(
        cfg,
        "/api/v1/functions/{name}",
        [web::get().to(get), web::patch().to(update), web::put().to(update), web::delete().to(delete)],
    );
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRequest {
    name: String,
    /// Package name in the model repository (default: the function's name).
    #[serde(default)]
    model: Option<String>,
    /// Deploy from a profile alone (sim devices only) instead of a package.
    #[serde(default)]
    profile: Option<Profile>,
    #[serde(default)]
    settings: FunctionSettings,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRequest {
    settings: FunctionSettings,
}

/// A persisted function that is not served: why, and that deleting it frees its name.
fn unavailable_view(u: &Unavailable) -> Value {
    json!({"name": u.name, "state": "unavailable", "unavailable": {"kind": u.kind, "reason": u.reason}})
}

/// A function as the API shows it; `snapshots` are the devices' memory maps, fetched once per
/// response.
async fn view(rt: &Runtime, entry: &Function, snapshots: &[DeviceSnapshot]) -> Value {
    let record = entry.record();
    let id2label = entry.model().and_then(|m| m.spec.arch.labels().map(|l| l.to_vec()));
    // The settings with the dtype the weights are held in (the package's unless one was named).
    let settings = crate::function::settings::shown(&record.settings, entry.held());
    let (model_type, max_input_tokens) = match entry.model() {
        Some(m) => {
            let s = m.spec.summary();
            (s.model_type.to_string(), Some(s.max_input_tokens))
        }
        None => ("profile".to_string(), None),
    };
    let (inputs, outputs) = io_metadata(entry);
    let resident_on: Vec<&str> = snapshots
        .iter()
        .zip(&rt.devices)
        .filter(|(s, _)| s.resident.iter().any(|r| r.function == record.name))
        .map(|(_, d)| d.id.as_str())
        .collect();
    json!({
        "name": record.name,
        "state": "ready",
        "model": record.model,
        "digest": record.digest,
        "settings": settings,
        "created_unix_ms": record.created_unix_ms,
        "model_type": model_type,
        "weight_bytes": entry.payload.bytes(),
        "max_input_tokens": max_input_tokens,
        "id2label": id2label,
        "profile": record.profile,
        "inputs": inputs,
        "outputs": outputs,
        "resident_on": resident_on,
        "slo": entry.slo(),
        "queued": rt.queued(entry),
    })
}

#[utoipa::path(get, path = "/api/v1/functions", tag = "functions", responses((status = 200, description = "every function with settings, residency, queue and SLO", body = Object), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn list(rt: web::Data<Runtime>) -> HttpResponse {
    let snapshots = rt.device_snapshots();
    let mut out = Vec::new();
    for entry in rt.functions() {
        out.push(view(&rt, &entry, &snapshots).await);
    }
    out.extend(rt.unavailable_functions().iter().map(unavailable_view));
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    HttpResponse::Ok().json(out)
}

#[utoipa::path(post, path = "/api/v1/functions", tag = "functions", request_body = CreateRequest, responses((status = 201, description = "deployed", body = Object), (status = 404, description = "no such package", body = ErrorBody), (status = 409, description = "already deployed", body = ErrorBody), (status = 422, description = "bad package or too large", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn create(rt: web::Data<Runtime>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload, 1 << 20, rt.config.body_timeout).await?;
    let req: CreateRequest = body::json(&body)?;
    let rt_arc = rt.clone().into_inner();
    let entry = match (req.profile, req.model) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give a model or a profile, not both".into())),
        (Some(profile), None) => rt_arc.deploy_profile(&req.name, profile, req.settings).await?,
        (None, model) => rt_arc.deploy(&req.name, &model.unwrap_or_else(|| req.name.clone()), req.settings).await?,
    };
    Ok(HttpResponse::Created().json(view(&rt, &entry, &rt.device_snapshots()).await))
}

#[utoipa::path(get, path = "/api/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "the function", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn get(rt: web::Data<Runtime>, path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    if let Some(u) = rt.unavailable(&path.0) {
        return Ok(HttpResponse::Ok().json(unavailable_view(&u)));
    }
    let entry = rt.function(&path.0).ok_or_else(|| ApiError::FunctionNotFound(path.0.clone()))?;
    Ok(HttpResponse::Ok().json(view(&rt, &entry, &rt.device_snapshots()).await))
}

#[utoipa::path(patch, path = "/api/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "function name", example = "bert")), request_body = UpdateRequest, responses((status = 200, description = "updated", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn update(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload, 1 << 20, rt.config.body_timeout).await?;
    let req: UpdateRequest = body::json(&body)?;
    rt.update_settings(&path.0, req.settings).await?;
    get(rt, path).await
}

#[utoipa::path(delete, path = "/api/v1/functions/{name}", tag = "functions", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "undeployed", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn delete(rt: web::Data<Runtime>, path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    rt.undeploy(&path.0).await?;
    Ok(HttpResponse::Ok().json(json!({"name": path.0, "deleted": true})))
}
