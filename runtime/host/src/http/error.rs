//! Errors as HTTP answers: every error maps to a status and a JSON body in this one place.

use super::names;
use crate::control::DeployError;
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

#[derive(Debug, Clone)]
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

    pub fn rate_limited(
        scope: &'static str,
        limited: crate::policy::rate_limit::Limited,
    ) -> ApiError {
        let wait = limited.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let who = if scope == "host" {
            "the host's"
        } else {
            "this caller's"
        };
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("over {who} rate limit; retry in {wait} s"),
        )
        .with_header(hyper::header::RETRY_AFTER, wait.to_string())
        .with_header(names::RATELIMIT_LIMIT, limited.limit.to_string())
        .with_header(names::RATELIMIT_REMAINING, "0")
        .with_header(names::RATELIMIT_RESET, wait.to_string())
    }

    /// Adds the caller's rate-limit headers to an error that happened after admission.
    pub fn with_rate(mut self, rate: Option<crate::policy::rate_limit::Allowed>) -> ApiError {
        if let Some(rate) = rate {
            let reset = rate.reset.as_secs_f64().ceil() as u64;
            self.headers
                .push((names::RATELIMIT_LIMIT, rate.limit.to_string()));
            self.headers
                .push((names::RATELIMIT_REMAINING, rate.remaining.to_string()));
            self.headers
                .push((names::RATELIMIT_RESET, reset.to_string()));
        }
        self
    }

    /// The host limit this error is a refusal by, if any (counted in `aifn_limit_hits`).
    pub fn limit(&self) -> Option<&'static str> {
        match self.code {
            "body_too_large" => Some("body_bytes"),
            "tensor_too_large" => Some("tensor_elements"),
            "function_output_too_large" => Some("module_output_bytes"),
            _ => None,
        }
    }

    pub fn into_response(self) -> HttpResponse {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let mut response = json_response(self.status, &json!({ "error": error }));
        append_headers(&mut response, self.headers);
        response
    }
}

impl ApiError {
    /// The Open Inference Protocol's error answer: the same status and headers, the body
    /// `{"error": "<message>"}` its clients read, and aifn's machine-readable code in the
    /// `X-Aifn-Error` header.
    pub fn into_v2_response(self) -> HttpResponse {
        let mut response = json_response(self.status, &json!({ "error": self.message }));
        response
            .headers_mut()
            .insert(names::X_AIFN_ERROR, HeaderValue::from_static(self.code));
        append_headers(&mut response, self.headers);
        response
    }
}

/// The gRPC status of an error: its code by the HTTP status, its message, aifn's code in the
/// `x-aifn-error` metadata, and for a rate limit the protocol's `RetryInfo` detail (and
/// `retry-after`), so clients back off as long as the limit says.
impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> tonic::Status {
        use tonic::Code;
        use tonic_types::{ErrorDetails, StatusExt};
        let code = match error.status.as_u16() {
            400 | 422 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            405 | 501 => Code::Unimplemented,
            409 => Code::FailedPrecondition,
            413 | 429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        let retry_after = error
            .headers
            .iter()
            .find(|(name, _)| name == hyper::header::RETRY_AFTER)
            .and_then(|(_, v)| v.parse::<u64>().ok());
        let mut status = match retry_after {
            Some(seconds) if code == Code::ResourceExhausted => tonic::Status::with_error_details(
                code,
                error.message.clone(),
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(seconds))),
            ),
            _ => tonic::Status::new(code, error.message.clone()),
        };
        let metadata = status.metadata_mut();
        if let Ok(value) = error.code.parse() {
            metadata.insert("x-aifn-error", value);
        }
        for (name, value) in &error.headers {
            if let (Ok(name), Ok(value)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(name.as_str().as_bytes()),
                value.parse(),
            ) {
                metadata.insert(name, value);
            }
        }
        status
    }
}

impl From<InvokeError> for tonic::Status {
    fn from(error: InvokeError) -> tonic::Status {
        ApiError::from(error).into()
    }
}

fn append_headers(response: &mut HttpResponse, headers: Vec<(HeaderName, String)>) {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
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
            InvokeError::TensorLimit(_) => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, "tensor_too_large", message)
            }
            InvokeError::Guest(GuestError::OutputTooLarge(_)) => ApiError::new(
                S::INTERNAL_SERVER_ERROR,
                "function_output_too_large",
                message,
            ),
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

impl From<crate::policy::access::AccessDenied> for ApiError {
    fn from(denied: crate::policy::access::AccessDenied) -> ApiError {
        use crate::policy::access::AccessDenied as D;
        let message = denied.to_string();
        match denied {
            D::AddressNotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "address_not_allowed", message)
            }
            D::MissingCredentials(_) | D::InvalidCredentials(_) => ApiError::unauthorized(message),
            D::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
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
            StoreError::NoSuchVersion(..) => ApiError::not_found(error.to_string()),
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

impl From<crate::labels::LabelError> for ApiError {
    fn from(error: crate::labels::LabelError) -> ApiError {
        use crate::labels::LabelError;
        let (status, code) = match error {
            LabelError::Unknown(_) => (StatusCode::NOT_FOUND, "unknown_request_id"),
            LabelError::Expired(..) => (StatusCode::GONE, "expired_request_id"),
            LabelError::AlreadyLabelled(_) => (StatusCode::CONFLICT, "already_labelled"),
            LabelError::NotALabel => (StatusCode::BAD_REQUEST, "invalid_label"),
            LabelError::Store(e) => return ApiError::from(e),
        };
        ApiError::new(status, code, error.to_string())
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
            DeployError::RouteConflict(_) => ApiError::new(S::CONFLICT, "route_conflict", message),
            DeployError::NotFound(_) | DeployError::NoSuchVersion(..) => {
                ApiError::not_found(message)
            }
            DeployError::NothingToRollBackTo(..) => {
                ApiError::new(S::CONFLICT, "no_older_version", message)
            }
            DeployError::Rollout(_) => ApiError::new(S::CONFLICT, "rollout", message),
            DeployError::RolloutInProgress { .. } => {
                ApiError::new(S::CONFLICT, "rollout_in_progress", message)
            }
            DeployError::NoRollout(_) => ApiError::new(S::CONFLICT, "no_rollout", message),
            DeployError::CheckFailed(_) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "check_failed", message)
            }
            DeployError::Store(e) => e.into(),
        }
    }
}
