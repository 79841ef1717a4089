//! Errors as HTTP answers: every error maps to a status and a JSON body in this one place.

use crate::host::DeployError;
use crate::instance::{InvokeError, Overloaded};
use crate::store::StoreError;
use aifn_guest::GuestError;
use aifn_model::ModelError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

pub type HttpResponse = Response<Full<Bytes>>;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable reason.
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub headers: Vec<(HeaderName, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
            .with_header(hyper::header::WWW_AUTHENTICATE, "Bearer")
    }

    pub fn into_response(self) -> HttpResponse {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = json_response(self.status, &json!({ "error": error }));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

pub fn json_response(status: StatusCode, body: &Value) -> HttpResponse {
    let bytes = serde_json::to_vec(body).expect("JSON values serialise");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

impl From<InvokeError> for ApiError {
    fn from(error: InvokeError) -> ApiError {
        use StatusCode as S;
        let message = error.to_string();
        match error {
            InvokeError::BadTensors(_) => ApiError::new(S::BAD_REQUEST, "invalid_input", message),
            InvokeError::Guest(GuestError::Rejected(_)) => {
                ApiError::new(S::BAD_REQUEST, "rejected_by_function", message)
            }
            InvokeError::Guest(GuestError::Timeout(_)) => {
                ApiError::new(S::GATEWAY_TIMEOUT, "function_timeout", message)
            }
            InvokeError::Guest(GuestError::OutOfMemory(_)) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "function_out_of_memory", message)
            }
            InvokeError::Guest(GuestError::Trap(_)) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "function_trapped", message)
            }
            InvokeError::Guest(_) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "function_failed", message)
            }
            InvokeError::ModuleOutput(_) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "function_failed", message)
            }
            InvokeError::Model(_) => {
                ApiError::new(S::INTERNAL_SERVER_ERROR, "inference_failed", message)
            }
            InvokeError::Panic(_) => ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl From<Overloaded> for ApiError {
    fn from(error: Overloaded) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            error.to_string(),
        )
        .with_header(hyper::header::RETRY_AFTER, "1")
    }
}

impl From<ModelError> for ApiError {
    fn from(error: ModelError) -> ApiError {
        match error {
            ModelError::BadInput(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message)
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "inference_failed",
                other.to_string(),
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::MissingBlob(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_artifact",
                error.to_string(),
            ),
            StoreError::DigestMismatch { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "digest_mismatch",
                error.to_string(),
            ),
            other => {
                tracing::error!("storage error: {other}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    other.to_string(),
                )
            }
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(error: DeployError) -> ApiError {
        use StatusCode as S;
        let message = error.to_string();
        match error {
            DeployError::Spec(errors) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_spec", errors.to_string())
                    .with_details(json!(errors))
            }
            DeployError::UnknownModel(_) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "unknown_model", message)
            }
            DeployError::ModelDigest { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "model_digest_mismatch", message)
            }
            DeployError::Module(_) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_module", message)
            }
            DeployError::Load(_) => ApiError::new(S::UNPROCESSABLE_ENTITY, "load_failed", message),
            DeployError::RouteConflict { .. } => {
                ApiError::new(S::CONFLICT, "route_conflict", message)
            }
            DeployError::NotFound(_) => ApiError::not_found(message),
            DeployError::Store(e) => e.into(),
        }
    }
}
