//! The control plane: deploy, list, inspect and delete functions; upload artifacts; manage the model
//! store and API keys. Every route needs the admin token (`Authorization: Bearer <token>`).

use super::error::{json_response, ApiError, HttpResponse};
use super::read_body;
use crate::host::{DeployRequest, Host};
use crate::lifecycle::Actor;
use crate::store::{now_unix, Digest, ModelEntry};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Largest JSON document the control plane reads (specs are small; artifacts go through blobs).
const MAX_ADMIN_JSON: usize = 16 << 20;

pub(super) fn authorize<B>(host: &Host, request: &Request<B>) -> Result<(), ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "the control plane needs the admin token: `Authorization: Bearer <token>`",
            )
        })?;
    if bool::from(presented.as_bytes().ct_eq(host.admin_token().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the admin token is not valid"))
    }
}

pub(super) async fn handle(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    authorize(&host, &request)?;
    let actor = actor(&request);
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path
        .trim_start_matches("/admin/v1")
        .trim_start_matches('/')
        .split('/')
        .collect();
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["functions"]) => Ok(list(&host)),
        (&Method::POST, ["functions"]) => {
            let body = read_body(request, MAX_ADMIN_JSON).await?;
            let deploy: DeployRequest = parse_json(&body)?;
            let outcome = host.deploy(deploy, &actor).await?;
            let status = if outcome.unchanged {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &json!(outcome)))
        }
        (&Method::GET, ["functions", name]) => host
            .status(name)
            .map(|status| json_response(StatusCode::OK, &json!(status)))
            .ok_or_else(|| ApiError::not_found(format!("no function named `{name}`"))),
        (&Method::DELETE, ["functions", name]) => {
            let version = host.delete(name, &actor).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "name": name, "deleted_version": version }),
            ))
        }
        (&Method::POST, ["functions", name, "rollback"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Rollback {
                to: Option<u64>,
                reason: Option<String>,
            }
            let rollback: Rollback = optional_json(request).await?;
            let outcome = host
                .rollback(name, rollback.to, &actor, rollback.reason.as_deref())
                .await?;
            Ok(json_response(StatusCode::OK, &json!(outcome)))
        }
        (&Method::POST, ["functions", name, "promote"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Promote {
                #[serde(default)]
                full: bool,
                reason: Option<String>,
            }
            let promote: Promote = optional_json(request).await?;
            let record = host
                .promote(name, promote.full, &actor, promote.reason.as_deref())
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "name": name, "rollout": host.rollout_view(name), "serving": host.function(name).map(|f| f.version()), "candidate": record.candidate }),
            ))
        }
        (&Method::POST, ["functions", name, "abort"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Abort {
                reason: Option<String>,
            }
            let abort: Abort = optional_json(request).await?;
            let serving = host.abort(name, &actor, abort.reason.as_deref()).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "name": name, "serving": serving }),
            ))
        }
        (&Method::POST, ["functions", name, "prune"]) => {
            #[derive(Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Prune {
                keep: Option<usize>,
            }
            let prune: Prune = optional_json(request).await?;
            let keep = prune.keep.unwrap_or(host.config.keep_versions);
            let outcome = host.prune(name, keep, &actor).await?;
            Ok(json_response(StatusCode::OK, &json!(outcome)))
        }
        (&Method::GET, ["functions", name, "history"]) => {
            let events = host.store.history(name)?;
            if events.is_empty() {
                return Err(ApiError::not_found(format!("no function named `{name}`")));
            }
            let events: Vec<_> = events
                .into_iter()
                .map(|e| {
                    let mut view = json!(e);
                    view["seq"] = json!(e.seq);
                    view
                })
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "name": name, "events": events }),
            ))
        }
        (&Method::GET, ["functions", name, "versions"]) => {
            let deployment = host.store.deployment(name)?;
            let role = |version: u64| {
                let Some(d) = &deployment else { return "" };
                match &d.rollout {
                    Some(r) if r.candidate == version && d.stable != version => "candidate",
                    Some(r) if r.previous == version && d.stable != version => "previous",
                    _ if d.stable == version => "stable",
                    _ => "",
                }
            };
            let versions: Vec<_> = host
                .store
                .versions(name)?
                .into_iter()
                .map(|r| json!({ "version": r.version, "role": role(r.version), "digest": r.digest, "created_at": r.created_at, "deployed_by": r.deployed_by, "model": r.model, "module": r.module, "fallback_model": r.fallback_model }))
                .collect();
            if versions.is_empty() {
                return Err(ApiError::not_found(format!("no function named `{name}`")));
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({ "name": name, "versions": versions }),
            ))
        }
        (&Method::HEAD, ["blobs", digest]) => {
            let digest = parse_digest(digest)?;
            let status = if host.store.blob_size(&digest).is_some() {
                StatusCode::OK
            } else {
                StatusCode::NOT_FOUND
            };
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            Ok(response)
        }
        (&Method::PUT, ["blobs", digest]) => {
            let digest = parse_digest(digest)?;
            if host.store.blob_size(&digest).is_some() {
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({ "digest": digest, "stored": "already" }),
                ));
            }
            upload(&host, request, &digest).await
        }
        (&Method::GET, ["models"]) => Ok(json_response(
            StatusCode::OK,
            &json!({ "models": host.store.models()? }),
        )),
        (&Method::PUT, ["models", id]) => {
            #[derive(Deserialize)]
            struct Register {
                digest: Digest,
            }
            let body = read_body(request, MAX_ADMIN_JSON).await?;
            let register: Register = parse_json(&body)?;
            let size = host.store.blob_size(&register.digest).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_artifact",
                    format!("artifact {} is not uploaded", register.digest),
                )
            })?;
            if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || id.starts_with('.')
            {
                return Err(ApiError::bad_request(format!(
                    "`{id}` is not a valid model id"
                )));
            }
            let entry = ModelEntry {
                id: id.to_string(),
                model: crate::store::Artifact {
                    digest: register.digest,
                    size,
                },
                updated_at: now_unix(),
            };
            host.store.register_model(&entry)?;
            Ok(json_response(StatusCode::OK, &json!(entry)))
        }
        (&Method::GET, ["keys"]) => {
            let keys: Vec<_> = host.keys.list().into_iter().map(key_view).collect();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        (&Method::POST, ["keys"]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct CreateKey {
                function: String,
                endpoint: Option<String>,
                ttl_seconds: Option<u64>,
            }
            let body = read_body(request, MAX_ADMIN_JSON).await?;
            let create: CreateKey = parse_json(&body)?;
            let (record, secret) = host.keys.create(
                &create.function,
                create.endpoint.as_deref(),
                create.ttl_seconds,
            )?;
            let mut view = key_view(record);
            view["key"] = json!(secret);
            Ok(json_response(StatusCode::CREATED, &view))
        }
        (&Method::DELETE, ["keys", id]) => {
            if host.keys.revoke(id)? {
                Ok(json_response(StatusCode::OK, &json!({ "revoked": id })))
            } else {
                Err(ApiError::not_found(format!("no key with id `{id}`")))
            }
        }
        _ => Err(ApiError::not_found(format!(
            "no control-plane route {method} {path}"
        ))),
    }
}

/// Who calls the control plane, for the audit log: the `X-Aifn-Actor` header the CLI sets
/// (`user@machine`) and the address it came from.
fn actor<B>(request: &Request<B>) -> Actor {
    let named = request
        .headers()
        .get("x-aifn-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        })
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "admin".into());
    match request.extensions().get::<super::PeerAddr>() {
        Some(peer) => Actor(format!("{named} from {}", peer.0.ip().to_canonical())),
        None => Actor(named),
    }
}

/// A JSON body that may be empty (then the defaults).
async fn optional_json<T: for<'de> Deserialize<'de> + Default>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    let body = read_body(request, MAX_ADMIN_JSON).await?;
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_json(&body)
    }
}

fn key_view(key: crate::keys::KeyRecord) -> serde_json::Value {
    json!({
        "id": key.id,
        "function": key.function,
        "endpoint": key.endpoint,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
    })
}

fn list(host: &Host) -> HttpResponse {
    let functions: Vec<_> = host
        .function_names()
        .iter()
        .filter_map(|name| host.function(name))
        .map(|f| {
            json!({
                "name": f.name(),
                "version": f.version(),
                "digest": f.record.digest,
                "model_id": f.record.model_id,
                "replicas": f.placement.replicas,
                "endpoints": f.spec.spec.endpoints.iter().map(|e| format!("{} {}", e.method, e.route)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failed: Vec<_> = host
        .load_errors()
        .into_iter()
        .map(|(name, error)| json!({ "name": name, "error": error }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({ "functions": functions, "failed": failed }),
    )
}

/// Streams an artifact into the store; it lands only if its sha256 matches the URL.
async fn upload(
    host: &Host,
    request: Request<Incoming>,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    let limit = host.config.max_upload_bytes;
    let mut writer = host.store.blob_writer()?;
    let mut body = request.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the upload failed: {e}")))?;
        if let Some(chunk) = frame.data_ref() {
            received += chunk.len() as u64;
            if received > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the artifact is over the host's upload limit of {limit} bytes"),
                ));
            }
            writer.write(chunk)?;
        }
    }
    let artifact = host.store.finish_blob(writer, digest)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "digest": artifact.digest, "size": artifact.size }),
    ))
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    Digest::parse(text)
        .ok_or_else(|| ApiError::bad_request(format!("`{text}` is not a sha256 digest")))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}
