//! The Open Inference Protocol v2 over REST (`/v2/...`), as the protocol and its binary tensor
//! data extension define it: errors are `{"error": "<message>"}`, and a request or answer may
//! carry tensors as raw bytes after its JSON (`Inference-Header-Content-Length` says where the
//! JSON ends).

use super::data::{
    finish, method_not_allowed, timed_out, DataPlane, ErrorShape, RequestHead, Served,
};
use super::error::{json_response, ApiError, HttpResponse};
use super::inference::{self, Metadata};
use super::read_body;
use crate::instance::v2_request;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

/// Where a request's or answer's JSON ends and its binary tensor data begins.
pub const INFERENCE_HEADER_CONTENT_LENGTH: HeaderName =
    HeaderName::from_static("inference-header-content-length");

/// Routes one `/v2` request; every error is in the protocol's shape.
pub(super) async fn handle(data: Arc<DataPlane>, request: Request<Incoming>) -> HttpResponse {
    route(data, request)
        .await
        .unwrap_or_else(ApiError::into_v2_response)
}

async fn route(data: Arc<DataPlane>, request: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = request.method() == Method::GET;
    let post = request.method() == Method::POST;
    match segments.as_slice() {
        ["v2"] if get => Ok(json_response(
            StatusCode::OK,
            &json!({
                "name": "aifn",
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": inference::EXTENSIONS,
            }),
        )),
        ["v2", "health", "live"] if get => {
            Ok(json_response(StatusCode::OK, &json!({ "live": true })))
        }
        ["v2", "health", "ready"] if get => Ok(super::readiness(&data.registry, false)),
        // Triton's model repository extension: the index (loading and unloading is `aifn deploy`).
        ["v2", "repository", "index"] if post => {
            let body = read_body(request, 64 << 10).await?;
            let ready_only = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["ready"].as_bool())
                .unwrap_or(false);
            let index: Vec<serde_json::Value> = inference::repository_index(&data, ready_only)
                .into_iter()
                .map(|e| {
                    let mut entry = json!({ "name": e.name, "state": e.state });
                    if !e.version.is_empty() {
                        entry["version"] = json!(e.version);
                    }
                    if !e.reason.is_empty() {
                        entry["reason"] = json!(e.reason);
                    }
                    entry
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!(index)))
        }
        ["v2", "models", name, rest @ ..] => {
            // `/versions/<n>/...` addresses one of the versions taking traffic.
            let (version, rest) = match rest {
                ["versions", version, rest @ ..] => (Some(*version), rest),
                rest => (None, rest),
            };
            let model = inference::find(&data, name, version)?;
            match rest {
                [] if get => {
                    model
                        .check_access(&data, &RequestHead::of(&request))
                        .await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &metadata_json(&model.metadata()),
                    ))
                }
                ["ready"] if get => {
                    model
                        .check_access(&data, &RequestHead::of(&request))
                        .await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({ "name": name, "ready": true }),
                    ))
                }
                ["infer"] if post => Ok(infer(&data, &model, request).await),
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

/// `POST /v2/models/{name}[/versions/{v}]/infer`: admitted, bounded by the admitting endpoint,
/// decoded (JSON, or JSON and binary data), run, and answered as the request asks.
async fn infer(
    data: &DataPlane,
    model: &inference::Model,
    request: Request<Incoming>,
) -> HttpResponse {
    let started = Instant::now();
    let route = model.route();
    let mut answering = model.described().clone();
    let result = async {
        let admission = model.admit(data, &RequestHead::of(&request), None).await?;
        answering = admission.function.clone();
        let header_length = header_length(request.headers())?;
        let deadline = admission.deadline;
        let run = async {
            let body = read_body(request, admission.max_body).await?;
            let (json, binary) = match header_length {
                Some(length) if length > body.len() => {
                    return Err(ApiError::bad_request(format!(
                    "Inference-Header-Content-Length is {length}, but the body has only {} bytes",
                    body.len()
                )))
                }
                Some(length) => body.split_at(length),
                None => (&body[..], &[][..]),
            };
            let function = &admission.function;
            let (inputs, request) =
                v2_request(&function.signature, &function.tensor_limits, json, binary)?;
            let (outputs, variant) = admission.run(data, inputs).await?;
            let answer = aifn_tensor::encode_v2_answer(
                function.name(),
                &function.version().to_string(),
                request.id.as_deref(),
                &outputs,
                &request.outputs,
            )
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", e.to_string()))?;
            Ok((answer, variant))
        };
        let (answer, variant) = tokio::time::timeout(deadline, run)
            .await
            .map_err(|_| timed_out(deadline))?
            .map_err(|e| e.with_rate(admission.rate))?;
        let mut headers = hyper::HeaderMap::new();
        let (content_type, body) = if answer.binary.is_empty() {
            ("application/json", answer.json)
        } else {
            headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, answer.json.len().into());
            let mut body = answer.json;
            body.extend_from_slice(&answer.binary);
            ("application/octet-stream", body)
        };
        Ok(Served {
            status: 200,
            content_type: content_type.to_string(),
            body: body.into(),
            cache: None,
            rate: admission.rate,
            variant: Some(variant),
            headers,
        })
    }
    .await;
    finish(
        data,
        &answering,
        None,
        &route,
        started,
        result,
        ErrorShape::OpenInference,
    )
}

/// The binary data extension's `Inference-Header-Content-Length`, if the request has one.
fn header_length(headers: &hyper::HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request("Inference-Header-Content-Length must be a whole number of bytes")
        })
}

fn metadata_json(metadata: &Metadata) -> serde_json::Value {
    let ports = |ports: &[inference::TensorMetadata]| -> Vec<serde_json::Value> {
        ports
            .iter()
            .map(|p| json!({ "name": p.name, "datatype": p.datatype, "shape": p.shape }))
            .collect()
    };
    json!({
        "name": metadata.name,
        "versions": metadata.versions,
        "platform": metadata.platform,
        "inputs": ports(&metadata.inputs),
        "outputs": ports(&metadata.outputs),
    })
}
