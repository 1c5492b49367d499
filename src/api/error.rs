//! The API's error type and the one table that maps every error to an HTTP status and a
//! stable snake_case code. Bodies are `{"error": "<message>", "code": "<code>"}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::engine::EngineError;
use crate::function::DeployError;
use crate::request::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("function {0:?} is not deployed")]
    FunctionNotFound(String),
    #[error("function {name:?} is persisted but not served: {reason}")]
    FunctionUnavailable { name: String, reason: String },
    #[error("not ready: functions are still being restored")]
    NotReady,
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Fault(#[from] crate::runtime::FaultError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl ApiError {
    /// The table: (status, code) for every error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use DeployError as D;
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::FunctionNotFound(_) => (StatusCode::NOT_FOUND, "function_not_found"),
            Self::FunctionUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "function_unavailable"),
            Self::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Self::Auth(crate::auth::AuthError::Forbidden { .. }) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Auth(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Fault(crate::runtime::FaultError::NoDevice(_)) => (StatusCode::NOT_FOUND, "device_not_found"),
            Self::Fault(crate::runtime::FaultError::NotSim(_)) => (StatusCode::CONFLICT, "faults_need_sim_devices"),
            Self::Fault(crate::runtime::FaultError::Invalid(_)) => (StatusCode::BAD_REQUEST, "invalid_fault"),
            Self::Deploy(d) => match d {
                D::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
                D::NoRepository => (StatusCode::NOT_FOUND, "no_model_repository"),
                D::ModelNotFound(_) => (StatusCode::NOT_FOUND, "model_not_found"),
                D::OutsideRepository(_) => (StatusCode::FORBIDDEN, "outside_repository"),
                D::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
                D::Unavailable { .. } => (StatusCode::CONFLICT, "function_unavailable"),
                D::PackageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "package_too_large"),
                D::NotDeployed(_) => (StatusCode::NOT_FOUND, "function_not_found"),
                D::InvalidSettings(_) => (StatusCode::BAD_REQUEST, "invalid_settings"),
                D::InvalidProfile(_) => (StatusCode::BAD_REQUEST, "invalid_profile"),
                D::ProfileNeedsSim => (StatusCode::CONFLICT, "profile_needs_sim_devices"),
                D::BadPackage(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_package"),
                D::DoesNotFit { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "model_too_large"),
                D::Store(_) | D::Task(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
                D::Runtime(r) => runtime_code(r),
            },
            Self::Runtime(r) => runtime_code(r),
        }
    }
}

fn runtime_code(e: &RuntimeError) -> (StatusCode, &'static str) {
    match e {
        RuntimeError::Engine(EngineError::UnknownOutput { .. }) => (StatusCode::BAD_REQUEST, "unknown_output"),
        RuntimeError::Engine(EngineError::NoTokenizer) => (StatusCode::BAD_REQUEST, "no_tokenizer"),
        RuntimeError::Engine(EngineError::WorkspaceTooSmall { .. }) => (StatusCode::BAD_REQUEST, "exceeds_workspace"),
        // A weights buffer of the wrong size is the runtime's fault, never the request's.
        RuntimeError::Engine(EngineError::WeightsSizeMismatch { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
        RuntimeError::Engine(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
        RuntimeError::Device { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "device_error"),
        RuntimeError::FunctionGone(_) => (StatusCode::NOT_FOUND, "function_not_found"),
        RuntimeError::NotPlaced(_) => (StatusCode::SERVICE_UNAVAILABLE, "function_not_placed"),
        RuntimeError::DeadlineUnmeetable(_) => (StatusCode::SERVICE_UNAVAILABLE, "deadline_unmeetable"),
        RuntimeError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
        RuntimeError::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        RuntimeError::Backlogged { .. } => (StatusCode::SERVICE_UNAVAILABLE, "responses_backlogged"),
        RuntimeError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        // nginx's "client closed request": only logs ever see it.
        RuntimeError::Cancelled => (StatusCode::from_u16(499).expect("499 is a valid status"), "cancelled"),
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.status_and_code();
        let mut response = HttpResponse::build(status);
        if let Self::Runtime(
            RuntimeError::Overloaded { retry_after_s, .. } | RuntimeError::Backlogged { retry_after_s },
        ) = self
        {
            response.insert_header(("Retry-After", retry_after_s.to_string()));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(serde_json::json!({ "error": self.to_string(), "code": code }))
    }
}

/// Every error body (for the API description).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// A stable snake_case code, for programs.
    pub code: String,
}

/// JSON errors for requests actix-web itself rejects (bad paths, bad JSON bodies).
pub fn json_error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message.to_string(), "code": code }))
}
