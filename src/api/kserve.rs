//! KServe v2 / Open Inference Protocol: health, server and model metadata, infer, the model
//! repository extension and statistics.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use super::body;
use super::error::{ApiError, ErrorBody};
use super::tensors;
use super::tensors::InferRequestBody;
use crate::engine::{Compute, Dtype};
use crate::function::Function;
use crate::runtime::Runtime;
use crate::store::FunctionSettings;

/// Most elements in one input tensor.
const MAX_ELEMENTS: usize = 1 << 24;

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Resources are matched in order, a pattern at a time: the hot one goes first.
    super::resource(cfg, "/v2/models/{name}/infer", [web::post().to(infer)]);
    super::resource(cfg, "/v2/models/{name}/versions/1/infer", [web::post().to(infer)]);
    super::resource(cfg, "/v2", [web::get().to(server_metadata)]);
    super::resource(cfg, "/v2/health/live", [web::get().to(live)]);
    super::resource(cfg, "/v2/health/ready", [web::get().to(ready)]);
    // Before `/v2/models/{name}`, which would take "stats" for a function's name (a function
    // may not be called that: `request::name::RESERVED`).
    super::resource(cfg, "/v2/models/stats", [web::get().to(all_stats)]);
    super::resource(cfg, "/v2/models/{name}", [web::get().to(model_metadata)]);
    super::resource(cfg, "/v2/models/{name}/versions/1", [web::get().to(model_metadata)]);
    super::resource(cfg, "/v2/models/{name}/ready", [web::get().to(model_ready)]);
    super::resource(cfg, "/v2/models/{name}/versions/1/ready", [web::get().to(model_ready)]);
    super::resource(cfg, "/v2/models/{name}/stats", [web::get().to(stats)]);
    super::resource(cfg, "/v2/models/{name}/versions/1/stats", [web::get().to(stats)]);
    super::resource(cfg, "/v2/repository/index", [web::post().to(repository_index)]);
    super::resource(cfg, "/v2/repository/models/{name}/load", [web::post().to(load)]);
    super::resource(cfg, "/v2/repository/models/{name}/unload", [web::post().to(unload)]);
}

#[utoipa::path(get, path = "/v2", tag = "kserve", responses((status = 200, description = "server metadata", body = Object)))]
pub(crate) async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "faaswap",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_repository", "statistics"],
    }))
}

#[utoipa::path(get, path = "/v2/health/live", tag = "kserve", responses((status = 200, description = "the process is up")))]
pub(crate) async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve", responses((status = 200, description = "every persisted function restored"), (status = 503, description = "still restoring", body = ErrorBody)))]
pub(crate) async fn ready(rt: web::Data<Runtime>) -> Result<HttpResponse, ApiError> {
    if rt.is_ready() {
        Ok(HttpResponse::Ok().json(json!({"ready": true})))
    } else {
        Err(ApiError::NotReady)
    }
}

/// Shortens a request's deadline below its function's SLO (ms from arrival); a request that
/// cannot finish within it is refused (503 `deadline_unmeetable`) rather than run late.
pub const DEADLINE_HEADER: &str = "Faaswap-Deadline-Ms";

fn function(rt: &Runtime, name: &str) -> Result<Arc<Function>, ApiError> {
    rt.function(name).ok_or_else(|| match rt.unavailable(name) {
        Some(u) => ApiError::FunctionUnavailable { name: name.to_string(), reason: u.reason },
        None => ApiError::FunctionNotFound(name.to_string()),
    })
}

/// The tensors a function takes and produces, as KServe metadata lists them.
pub fn io_metadata(entry: &Function) -> (Value, Value) {
    let ids = |name: &str| json!({"name": name, "datatype": "INT64", "shape": [-1, -1]});
    let Some(model) = entry.model() else {
        // Profiled: token ids count only for the batch size; nothing is computed.
        return (json!([ids("input_ids")]), json!([]));
    };
    let spec = &model.spec;
    let mut inputs: Vec<Value> =
        spec.io().inputs.iter().map(|i| json!({"name": i.name, "datatype": i.datatype, "shape": i.shape})).collect();
    if spec.tokenizer.is_some() {
        inputs.push(json!({"name": "text", "datatype": "BYTES", "shape": [-1]}));
        inputs.push(json!({"name": "text_pair", "datatype": "BYTES", "shape": [-1]}));
    }
    let outputs: Vec<Value> = spec
        .outputs()
        .into_iter()
        .map(|o| json!({"name": o.name(), "datatype": "FP32", "shape": spec.output_shape(o)}))
        .collect();
    (Value::Array(inputs), Value::Array(outputs))
}

#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "inputs and outputs", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn model_metadata(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
) -> Result<HttpResponse, ApiError> {
    let entry = function(&rt, &path.0)?;
    let (inputs, outputs) = io_metadata(&entry);
    let mut body = json!({
        "name": path.0,
        "versions": ["1"],
        "platform": format!("faaswap_{}", entry.model().map_or("profile", |m| m.spec.arch.model_type())),
        "inputs": inputs,
        "outputs": outputs,
    });
    // A classifier's labels, keyed as transformers' `id2label` is ("0", "1", …).
    if let Some(labels) = entry.model().and_then(|m| m.spec.arch.labels()) {
        let map: serde_json::Map<String, Value> =
            labels.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(l.as_str()))).collect();
        body["id2label"] = Value::Object(map);
    }
    Ok(HttpResponse::Ok().json(body))
}

#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "deployed"), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn model_ready(rt: web::Data<Runtime>, path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    function(&rt, &path.0)?;
    Ok(HttpResponse::Ok().json(json!({"name": path.0, "ready": true})))
}

#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve", params(("name" = String, Path, description = "function name", example = "bert")), request_body(content = InferRequestBody, description = "KServe v2 JSON tensors (or JSON header + binary tensors with Inference-Header-Content-Length)"), responses((status = 200, description = "outputs and timings", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody), (status = 413, description = "body too large", body = ErrorBody), (status = 429, description = "queue full (Retry-After)", body = ErrorBody), (status = 503, description = "deadline unmeetable or not placed", body = ErrorBody)))]
pub(crate) async fn infer(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = &path.0;
    let entry = function(&rt, name)?;
    let body = body::read(payload, rt.config.max_body, rt.config.body_timeout).await?;
    let header_len = match req.headers().get("Inference-Header-Content-Length") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::BadRequest("Inference-Header-Content-Length is not a number".into()))?,
        ),
        None => None,
    };
    let deadline_ms = match req.headers().get(DEADLINE_HEADER) {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|d| d.is_finite() && *d > 0.0)
                .ok_or_else(|| ApiError::BadRequest(format!("{DEADLINE_HEADER} must be a positive number of ms")))?,
        ),
        None => None,
    };
    let request = tensors::decode(&body, header_len, MAX_ELEMENTS)?;
    let (done, held) = rt.infer(&entry, request.inputs, request.outputs, deadline_ms).await?;
    let (body, json_len) = tensors::encode(name, request.id, done, request.binary_output);
    let body = body::HeldBody::new(body, held, rt.config.send_timeout);
    Ok(match json_len {
        Some(n) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .insert_header(("Inference-Header-Content-Length", n.to_string()))
            .body(body),
        None => HttpResponse::Ok().content_type("application/json").body(body),
    })
}

fn stats_json(entry: &Function) -> Value {
    let s = &entry.counters;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let success = get(&s.success);
    json!({
        "name": entry.record().name,
        "version": "1",
        "last_inference": get(&s.last_inference_ms),
        "inference_count": success,
        "execution_count": success,
        "inference_stats": {
            "success": {"count": success, "ns": get(&s.success_ns)},
            "fail": {"count": get(&s.fail), "ns": get(&s.fail_ns)},
            "queue": {"count": success, "ns": get(&s.queue_ns)},
            "compute_input": {"count": success, "ns": get(&s.swap_ns)},
            "compute_infer": {"count": success, "ns": get(&s.exec_ns)},
            "compute_output": {"count": success, "ns": 0},
        },
    })
}

#[utoipa::path(get, path = "/v2/models/{name}/stats", tag = "kserve", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "KServe statistics", body = Object), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn stats(rt: web::Data<Runtime>, path: web::Path<(String,)>) -> Result<HttpResponse, ApiError> {
    let entry = function(&rt, &path.0)?;
    Ok(HttpResponse::Ok().json(json!({"model_stats": [stats_json(&entry)]})))
}

#[utoipa::path(get, path = "/v2/models/stats", tag = "kserve", responses((status = 200, description = "statistics of every function", body = Object), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn all_stats(rt: web::Data<Runtime>) -> HttpResponse {
    let stats: Vec<Value> = rt.functions().iter().map(|e| stats_json(e)).collect();
    HttpResponse::Ok().json(json!({"model_stats": stats}))
}

#[derive(Debug, Default, Deserialize)]
struct IndexRequest {
    #[serde(default)]
    ready: bool,
}

#[utoipa::path(post, path = "/v2/repository/index", tag = "repository", request_body(content = Object, description = "optional filter {\"ready\": bool}"), responses((status = 200, description = "packages and their state", body = Object), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn repository_index(rt: web::Data<Runtime>, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let body = body::read(payload, 1 << 20, rt.config.body_timeout).await?;
    let req: IndexRequest = body::json(&body)?;
    let mut names = rt.repository_models();
    let deployed = rt.functions().into_iter().map(|f| f.name.to_string());
    for name in deployed.chain(rt.unavailable_functions().into_iter().map(|u| u.name)) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names.sort();
    let index: Vec<Value> = names
        .into_iter()
        .filter_map(|name| {
            let deployed = rt.function(&name).is_some();
            if req.ready && !deployed {
                return None;
            }
            let (state, reason) = match (deployed, rt.unavailable(&name)) {
                (true, _) => ("READY", String::new()),
                (false, Some(u)) => ("UNAVAILABLE", u.reason),
                (false, None) => ("UNAVAILABLE", "not loaded".to_string()),
            };
            Some(json!({"name": name, "version": "1", "state": state, "reason": reason}))
        })
        .collect();
    Ok(HttpResponse::Ok().json(index))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(crate) struct LoadRequest {
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: serde_json::Map<String, Value>,
}

/// Deploys the repository package `name` as the function `name`; `parameters.config` may carry
/// the function's settings as a JSON string. Loading what is already deployed succeeds.
#[utoipa::path(post, path = "/v2/repository/models/{name}/load", tag = "repository", params(("name" = String, Path, description = "package (and function) name", example = "bert")), request_body(content = LoadRequest, description = "optional: parameters.config holds the settings as a JSON string"), responses((status = 200, description = "deployed"), (status = 404, description = "no such package", body = ErrorBody), (status = 413, description = "package too large", body = ErrorBody), (status = 422, description = "bad package or too large for any device", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn load(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = &path.0;
    let body = body::read(payload, 1 << 20, rt.config.body_timeout).await?;
    let req: LoadRequest = body::json(&body)?;
    let settings = match req.parameters.get("config") {
        Some(Value::String(s)) => {
            let v: Value = serde_json::from_str(s)
                .map_err(|e| ApiError::BadRequest(format!("parameters.config is not JSON: {e}")))?;
            let settings = v.get("settings").cloned().unwrap_or(v);
            serde_json::from_value(settings).map_err(|e| ApiError::BadRequest(format!("parameters.config: {e}")))?
        }
        Some(_) => return Err(ApiError::BadRequest("parameters.config must be a JSON string".into())),
        None => FunctionSettings::default(),
    };
    // `parameters.dtype` (how to hold the weights) and `parameters.compute` (how to multiply
    // half weights), beside the config.
    let mut settings = settings;
    if let Some(d) = choice(&req.parameters, "dtype", Dtype::parse, "\"f32\", \"f16\", \"bf16\"")? {
        settings.dtype = Some(d);
    }
    if let Some(c) = choice(&req.parameters, "compute", Compute::parse, "\"f32\", \"native\"")? {
        settings.compute = Some(c);
    }
    // Idempotent, as KServe has it: loading what is (or has just been, by a concurrent call)
    // deployed under this name succeeds.
    if rt.function(name).is_some() {
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    match rt.clone().into_inner().deploy(name, name, settings).await {
        Ok(_) | Err(crate::function::DeployError::AlreadyExists(_)) => Ok(HttpResponse::Ok().json(json!({}))),
        Err(e) => Err(e.into()),
    }
}

/// The load parameter `key`, a string naming one of `allowed` (what `parse` accepts).
fn choice<T>(
    parameters: &serde_json::Map<String, Value>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => parse(s)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest(format!("parameters.{key} {s:?} is not one of {allowed}"))),
        Some(other) => Err(ApiError::BadRequest(format!("parameters.{key} must be a string, found {other}"))),
    }
}

#[utoipa::path(post, path = "/v2/repository/models/{name}/unload", tag = "repository", params(("name" = String, Path, description = "function name", example = "bert")), responses((status = 200, description = "undeployed"), (status = 404, description = "not deployed", body = ErrorBody), (status = 400, description = "bad request", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "token without the scope", body = ErrorBody)))]
pub(crate) async fn unload(
    rt: web::Data<Runtime>,
    path: web::Path<(String,)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let _ = body::read(payload, 1 << 20, rt.config.body_timeout).await?;
    rt.undeploy(&path.0).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}
