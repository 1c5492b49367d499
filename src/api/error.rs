//! The API's error type and the one table that maps every error to an HTTP status and a
//! stable snake_case code. Bodies are `{"error": "<message>", "code": "<code>"}`, or on the
//! OpenAI-compatible routes OpenAI's `{"error": {"message", "type", "param", "code"}}` (`Shape`).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::engine::EngineError;
use crate::function::DeployError;
use crate::request::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A request field with a bad value (`param` names it).
    #[error("{message}")]
    InvalidParameter { param: String, message: String },
    /// A request field asking for what faaswap does not do (`param` names it).
    #[error("{message}")]
    Unsupported { param: String, message: String },
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
            Self::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::Unsupported { .. } => (StatusCode::BAD_REQUEST, "unsupported_parameter"),
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
        RuntimeError::Chat(_) => (StatusCode::BAD_REQUEST, "invalid_chat"),
        RuntimeError::NoChatTemplate(_) => (StatusCode::BAD_REQUEST, "no_chat_template"),
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

impl ApiError {
    /// The request field the error is about, if one is (OpenAI's `param`).
    fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidParameter { param, .. } | Self::Unsupported { param, .. } => Some(param),
            Self::FunctionNotFound(_) | Self::FunctionUnavailable { .. } => Some("model"),
            _ => None,
        }
    }

    /// The error's response, its body in `shape`.
    pub fn response(&self, shape: Shape) -> HttpResponse {
        let status = self.status_and_code().0;
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
        response.json(self.body(shape))
    }

    /// The error's body in `shape`.
    pub fn body(&self, shape: Shape) -> serde_json::Value {
        let (status, code) = self.status_and_code();
        shape.body(status, code, &self.to_string(), self.param())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        self.response(Shape::Faaswap)
    }
}

/// How a route writes its error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"error": "<message>", "code": "<code>"}`.
    Faaswap,
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`, which its clients parse.
    OpenAi,
}

impl Shape {
    /// The shape of a route's errors, from its pattern: OpenAI's under `/v1/`.
    pub fn of(pattern: &str) -> Self {
        if pattern.starts_with("/v1/") {
            Self::OpenAi
        } else {
            Self::Faaswap
        }
    }

    fn body(self, status: StatusCode, code: &str, message: &str, param: Option<&str>) -> serde_json::Value {
        match self {
            Self::Faaswap => serde_json::json!({ "error": message, "code": code }),
            Self::OpenAi => {
                // OpenAI's types, which its clients show; the code is faaswap's own.
                let kind = match status.as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    429 => "rate_limit_error",
                    s if s >= 500 => "server_error",
                    _ => "invalid_request_error",
                };
                serde_json::json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
            }
        }
    }
}

/// An [`ApiError`] answered in OpenAI's shape: what the `/v1/` handlers return.
#[derive(Debug)]
pub struct OpenAiError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OpenAiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_and_code().0
    }

    fn error_response(&self) -> HttpResponse {
        self.0.response(Shape::OpenAi)
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
    shaped_error(Shape::Faaswap, status, code, message)
}

/// [`json_error`] in `shape`.
pub fn shaped_error(shape: Shape, status: StatusCode, code: &str, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(shape.body(status, code, &message.to_string(), None))
}
