//! The data plane: a function's own routes and the Open Inference Protocol v2.
//!
//! Request path: route match → method → auth → body (bounded) → instance queue → preprocess →
//! ONNX Runtime → postprocess → response.

use super::error::{json_response, ApiError, HttpResponse};
use super::read_body;
use crate::function::LoadedFunction;
use crate::host::{Host, RouteMatch};
use crate::instance::{Reply, Work};
use crate::keys::KeyRejection;
use crate::metrics::{FunctionLabels, RequestLabels};
use aifn_spec::Auth;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// Headers a module never sees: credentials stay with the host.
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "x-api-key", "cookie"];

pub(super) async fn endpoint(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let path = request.uri().path().to_string();
    let function = match host.route(request.method().as_str(), &path) {
        RouteMatch::Found(function) => function,
        RouteMatch::WrongMethod(allowed) => {
            let allowed: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{} is not allowed on {path}; allowed: {}",
                    request.method(),
                    allowed.join(", ")
                ),
            )
            .with_header(ALLOW, allowed.join(", ")));
        }
        RouteMatch::NotFound => {
            return Err(ApiError::not_found(format!("no function serves {path}")))
        }
    };
    let auth = function
        .spec
        .spec
        .endpoints
        .iter()
        .find(|e| e.route == path && e.method.as_str() == request.method().as_str())
        .map_or(Auth::None, |e| e.auth);
    let started = Instant::now();
    let result = async {
        authenticate(&host, &function, auth, &path, &request)?;
        let method = request.method().to_string();
        let headers = request
            .headers()
            .iter()
            .filter(|(name, _)| !PRIVATE_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        let body = read_body(request, host.config.max_body_bytes).await?;
        let work = Work::Endpoint {
            route: path.clone(),
            method,
            headers,
            body,
        };
        invoke(&host, &function, work).await
    }
    .await;
    Ok(finish(&host, &function, &path, started, result))
}

/// Checks the caller's API key where the endpoint asks for one.
fn authenticate(
    host: &Host,
    function: &LoadedFunction,
    auth: Auth,
    route: &str,
    request: &Request<Incoming>,
) -> Result<(), ApiError> {
    if auth == Auth::None {
        return Ok(());
    }
    let headers = request.headers();
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match host.keys.check(presented, function.name(), route) {
        Ok(()) => Ok(()),
        Err(KeyRejection::Unauthenticated) => Err(ApiError::unauthorized(if presented.is_none() {
            "this endpoint needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        } else {
            "the API key is not valid (unknown, revoked or expired)"
        })),
        Err(KeyRejection::Forbidden) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the API key is not valid for {route}"),
        )),
    }
}

/// Hands work to the function's instances and waits for the reply.
async fn invoke(host: &Host, function: &LoadedFunction, work: Work) -> Result<Reply, ApiError> {
    let receiver = function.pool.submit(work).inspect_err(|_| {
        host.metrics
            .overloaded
            .get_or_create(&FunctionLabels {
                function: function.name().to_string(),
            })
            .inc();
    })?;
    let reply = receiver
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "instance_stopped",
                "the instance stopped before answering",
            )
        })?
        .map_err(|e| {
            tracing::warn!(
                function = function.name(),
                version = function.version(),
                "request failed: {e}"
            );
            ApiError::from(e)
        })?;
    let name = function.name();
    let t = reply.timings;
    host.metrics.observe_stage(name, "queue", t.queued);
    host.metrics.observe_stage(name, "preprocess", t.preprocess);
    host.metrics.observe_stage(name, "inference", t.inference);
    host.metrics
        .observe_stage(name, "postprocess", t.postprocess);
    Ok(reply)
}

/// Turns a reply or an error into the response, tagged with the version that answered, and counts it.
fn finish(
    host: &Host,
    function: &LoadedFunction,
    route: &str,
    started: Instant,
    result: Result<Reply, ApiError>,
) -> HttpResponse {
    let mut response = match result {
        Ok(reply) => {
            let mut response = Response::new(Full::new(reply.body));
            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            if let Ok(value) = HeaderValue::from_str(&reply.content_type) {
                response.headers_mut().insert(CONTENT_TYPE, value);
            }
            response
        }
        Err(mut error) => {
            error.details.get_or_insert_with(
                || json!({ "function": function.name(), "version": function.version() }),
            );
            error.into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-aifn-function",
        HeaderValue::from_str(function.name()).expect("names are header-safe"),
    );
    headers.insert("x-aifn-version", HeaderValue::from(function.version()));
    let labels = RequestLabels {
        function: function.name().to_string(),
        route: route.to_string(),
        status: response.status().as_u16(),
    };
    host.metrics.requests.get_or_create(&labels).inc();
    host.metrics
        .request_seconds
        .get_or_create(&FunctionLabels {
            function: function.name().to_string(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The Open Inference Protocol v2 routes.
pub(super) async fn v2(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = request.method() == Method::GET;
    let post = request.method() == Method::POST;
    match segments.as_slice() {
        ["v2"] if get => Ok(json_response(
            StatusCode::OK,
            &json!({ "name": "aifn", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }),
        )),
        ["v2", "health", "live"] if get => {
            Ok(json_response(StatusCode::OK, &json!({ "live": true })))
        }
        ["v2", "health", "ready"] if get => Ok(super::readiness(&host)),
        ["v2", "models", name, rest @ ..] => {
            let function = host
                .function(name)
                .ok_or_else(|| ApiError::not_found(format!("no model named `{name}`")))?;
            // `/versions/<n>/...` addresses a version; only the active one is served.
            let rest = match rest {
                ["versions", version, rest @ ..] => {
                    if version.parse::<u64>().ok() != Some(function.version()) {
                        return Err(ApiError::not_found(format!(
                            "version {version} of `{name}` is not serving (version {} is)",
                            function.version()
                        )));
                    }
                    rest
                }
                rest => rest,
            };
            match rest {
                [] if get => Ok(json_response(StatusCode::OK, &model_metadata(&function))),
                ["ready"] if get => Ok(json_response(
                    StatusCode::OK,
                    &json!({ "name": name, "ready": true }),
                )),
                ["infer"] if post => {
                    let route = format!("/v2/models/{name}/infer");
                    let started = Instant::now();
                    let result = async {
                        authenticate(
                            &host,
                            &function,
                            if function.requires_key() {
                                Auth::ApiKey
                            } else {
                                Auth::None
                            },
                            &route,
                            &request,
                        )?;
                        let body = read_body(request, host.config.max_body_bytes).await?;
                        let tensors = aifn_tensor::decode_v2_request(&body).map_err(|e| {
                            ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", e.to_string())
                        })?;
                        function.signature.check_inputs(&tensors)?;
                        invoke(&host, &function, Work::Tensors(tensors)).await
                    }
                    .await;
                    Ok(finish(&host, &function, &route, started, result))
                }
                [] | ["ready"] | ["infer"] => Err(method_not_allowed(
                    &path,
                    if rest == ["infer"] { "POST" } else { "GET" },
                )),
                _ => Err(ApiError::not_found(format!("no route {path}"))),
            }
        }
        ["v2"] | ["v2", "health", "live" | "ready"] => Err(method_not_allowed(&path, "GET")),
        _ => Err(ApiError::not_found(format!("no route {path}"))),
    }
}

fn method_not_allowed(path: &str, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} allows only {allowed}"),
    )
    .with_header(ALLOW, allowed)
}

fn model_metadata(function: &LoadedFunction) -> serde_json::Value {
    let ports = |ports: &[aifn_model::Port]| -> Vec<serde_json::Value> {
        ports
            .iter()
            .map(|p| json!({ "name": p.name, "datatype": p.dtype.v2_name(), "shape": p.shape }))
            .collect()
    };
    json!({
        "name": function.name(),
        "versions": [function.version().to_string()],
        "platform": "onnxruntime_onnx",
        "inputs": ports(&function.signature.inputs),
        "outputs": ports(&function.signature.outputs),
    })
}
