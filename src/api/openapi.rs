//! `/api/openapi.json`: the HTTP API described in OpenAPI 3.1, generated from the handlers'
//! `#[utoipa::path]` attributes and the request types' `ToSchema` derives, so the description
//! moves with the code.

use actix_web::HttpResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::functions::{CreateRequest, UpdateRequest};
use super::kserve::LoadRequest;
use super::tensors::{InferInput, InferOutput, InferRequestBody};
use crate::gpu::faults::{FaultKind, FaultSpec};
use crate::policy::{ModelClass, Profile};
use crate::store::FunctionSettings;

#[derive(OpenApi)]
#[openapi(
    info(title = "faaswap", description = "Serverless inference with model swapping: KServe v2, the OpenAI API, management, streaming."),
    paths(
        super::kserve::server_metadata,
        super::kserve::live,
        super::kserve::ready,
        super::kserve::model_metadata,
        super::kserve::model_ready,
        super::kserve::infer,
        super::kserve::stats,
        super::kserve::all_stats,
        super::kserve::repository_index,
        super::kserve::load,
        super::kserve::unload,
        super::functions::list,
        super::functions::create,
        super::functions::get,
        super::functions::update,
        super::functions::delete,
        super::devices::list,
        super::devices::inject,
        super::devices::scheduler,
        super::generate_ws::connect,
        super::events_ws::connect,
        super::metrics,
        super::openai::models,
        super::openai::model,
        super::openai::completions,
        super::openai::chat,
    ),
    components(schemas(
        ErrorBody,
        InferRequestBody,
        InferInput,
        InferOutput,
        LoadRequest,
        CreateRequest,
        UpdateRequest,
        FunctionSettings,
        Profile,
        ModelClass,
        FaultSpec,
        FaultKind,
        super::openai_doc::CompletionRequest,
        super::openai_doc::ChatRequest,
        super::openai_doc::ChatMessage,
        super::openai_doc::StreamOptions,
        super::openai_doc::Stop,
        super::openai_doc::OpenAiErrorBody
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// API tokens: `Authorization: Bearer <token>` (optional when the server has none).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
