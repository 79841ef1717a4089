//! The control plane: deploy, list, inspect and delete functions; upload artifacts; manage the model
//! store and API keys. Every route needs the admin token (`Authorization: Bearer <token>`).

use super::error::{json_response, ApiError, HttpResponse};
use super::read_body;
use crate::api::{self, DeployRequest, Route};
use crate::host::Host;
use crate::records::{now_unix, Actor, Artifact, Digest, ModelEntry};
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
    let presented = bearer(request)?;
    if bool::from(presented.as_bytes().ct_eq(host.admin_token().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("the admin token is not valid"))
    }
}

/// `/metrics` takes the admin token or the read-only metrics token.
pub(super) fn authorize_metrics<B>(host: &Host, request: &Request<B>) -> Result<(), ApiError> {
    let presented = bearer(request)?.as_bytes();
    let admin = presented.ct_eq(host.admin_token().as_bytes());
    let metrics = presented.ct_eq(host.metrics_token().as_bytes());
    if bool::from(admin | metrics) {
        Ok(())
    } else {
        Err(ApiError::unauthorized(
            "neither the metrics token nor the admin token",
        ))
    }
}

fn bearer<B>(request: &Request<B>) -> Result<&str, ApiError> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "the control plane needs the admin token: `Authorization: Bearer <token>`",
            )
        })
}

pub(super) async fn handle(
    host: Arc<Host>,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    authorize(&host, &request)?;
    let actor = actor(&request);
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let not_found = || ApiError::not_found(format!("no control-plane route {method} {path}"));
    let route = Route::parse(&path).ok_or_else(not_found)?;
    let control = &host.control;
    match (&method, route) {
        (&Method::GET, Route::Functions) => Ok(ok(&control.list())),
        (&Method::GET, Route::Tracing) => tracing_view(&host).map(|view| ok(&view)),
        (&Method::PUT, Route::Tracing) => {
            let change: api::Tracing = json_body(request).await?;
            let tracer = host.tracer.as_ref().ok_or_else(no_tracing)?;
            tracer
                .set_sample_rate(change.sample_rate)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            tracing::info!(actor = %actor.0, rate = change.sample_rate, "trace sample rate changed");
            tracing_view(&host).map(|view| ok(&view))
        }
        (&Method::POST, Route::Functions) => {
            let deploy: DeployRequest = json_body(request).await?;
            let mut outcome = control.deploy(deploy, &actor).await?;
            outcome.data_url = host.data_url.get().cloned();
            let status = if outcome.unchanged {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(status, &json!(outcome)))
        }
        (&Method::GET, Route::Function(name)) => control
            .status(name)
            .map(|status| ok(&status))
            .ok_or_else(|| no_function(name)),
        (&Method::DELETE, Route::Function(name)) => {
            let version = control.delete(name, &actor).await?;
            Ok(ok(&api::Deleted {
                name: name.to_string(),
                deleted_version: version,
            }))
        }
        (&Method::POST, Route::Rollback(name)) => {
            let rollback: api::RollbackRequest = optional_json(request).await?;
            let outcome = control
                .rollback(name, rollback.to, &actor, rollback.reason.as_deref())
                .await?;
            Ok(ok(&outcome))
        }
        (&Method::POST, Route::Promote(name)) => {
            let promote: api::PromoteRequest = optional_json(request).await?;
            let record = control
                .promote(name, promote.full, &actor, promote.reason.as_deref())
                .await?;
            Ok(ok(&api::Promoted {
                name: name.to_string(),
                rollout: control.rollout_view(name),
                serving: control.registry.function(name).map(|f| f.version()),
                candidate: record.candidate,
            }))
        }
        (&Method::POST, Route::Abort(name)) => {
            let abort: api::AbortRequest = optional_json(request).await?;
            let serving = control.abort(name, &actor, abort.reason.as_deref()).await?;
            Ok(ok(&api::Aborted {
                name: name.to_string(),
                serving,
            }))
        }
        (&Method::POST, Route::Prune(name)) => {
            let prune: api::PruneRequest = optional_json(request).await?;
            let keep = prune.keep.unwrap_or(control.keep_versions);
            Ok(ok(&control.prune(name, keep, &actor).await?))
        }
        (&Method::GET, Route::History(name)) => control
            .history(name)?
            .map(|history| ok(&history))
            .ok_or_else(|| no_function(name)),
        (&Method::GET, Route::Monitor(name)) => control
            .monitor_report(name)
            .map(|report| ok(&report))
            .ok_or_else(|| no_function(name)),
        (&Method::GET, Route::ToLabel(name)) => control
            .to_label(name)
            .map(|asked| ok(&asked))
            .ok_or_else(|| no_function(name)),
        (&Method::GET, Route::Versions(name)) => control
            .versions(name)?
            .map(|versions| ok(&versions))
            .ok_or_else(|| no_function(name)),
        (&Method::HEAD, Route::Blob(digest)) => {
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
        (&Method::PUT, Route::Blob(digest)) => {
            let digest = parse_digest(digest)?;
            if let Some(size) = host.store.blob_size(&digest) {
                return Ok(ok(&api::Uploaded { digest, size }));
            }
            upload(&host, request, &digest).await
        }
        (&Method::GET, Route::Models) => Ok(ok(&api::ModelList {
            models: host.store.models()?,
        })),
        (&Method::PUT, Route::Model(id)) => {
            let register: api::RegisterModel = json_body(request).await?;
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
                model: Artifact {
                    digest: register.digest,
                    size,
                },
                updated_at: now_unix(),
            };
            host.store.register_model(&entry)?;
            Ok(ok(&entry))
        }
        (&Method::GET, Route::Keys) => Ok(ok(&api::KeyList {
            keys: host.keys.list().into_iter().map(key_view).collect(),
        })),
        (&Method::POST, Route::Keys) => {
            let create: api::CreateKey = json_body(request).await?;
            let (record, secret) = host.keys.create(
                &create.function,
                create.endpoint.as_deref(),
                create.ttl_seconds,
            )?;
            Ok(json_response(
                StatusCode::CREATED,
                &json!(api::CreatedKey {
                    view: key_view(record),
                    key: secret,
                }),
            ))
        }
        (&Method::DELETE, Route::Key(id)) => {
            if host.keys.revoke(id)? {
                Ok(ok(&api::Revoked {
                    revoked: id.to_string(),
                }))
            } else {
                Err(ApiError::not_found(format!("no key with id `{id}`")))
            }
        }
        _ => Err(not_found()),
    }
}

fn no_function(name: &str) -> ApiError {
    ApiError::not_found(format!("no function named `{name}`"))
}

/// A 200 answer with `value` as its JSON body.
fn ok<T: serde::Serialize>(value: &T) -> HttpResponse {
    json_response(StatusCode::OK, &json!(value))
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

async fn json_body<T: for<'de> Deserialize<'de>>(
    request: Request<Incoming>,
) -> Result<T, ApiError> {
    parse_json(&read_body(request, MAX_ADMIN_JSON).await?)
}

fn key_view(key: crate::keys::KeyRecord) -> api::KeyView {
    api::KeyView {
        id: key.id,
        function: key.function,
        endpoint: key.endpoint,
        created_at: key.created_at,
        expires_at: key.expires_at,
    }
}

/// Streams an artifact into the store; it lands only if its sha256 matches the URL.
async fn upload(
    host: &Host,
    request: Request<Incoming>,
    digest: &Digest,
) -> Result<HttpResponse, ApiError> {
    let limit = host.config.max_upload_bytes;
    let mut writer = host.store.blob_writer();
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
            // After a failed write (a full disk, say) the rest is still read, so that the
            // client gets the answer rather than a connection reset in the middle of its upload.
            if let Ok(file) = &mut writer {
                if let Err(e) = file.write(chunk) {
                    writer = Err(e);
                }
            }
        }
    }
    let artifact = host.store.finish_blob(writer?, digest)?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!(api::Uploaded {
            digest: artifact.digest,
            size: artifact.size,
        }),
    ))
}

fn tracing_view(host: &Host) -> Result<api::Tracing, ApiError> {
    let tracer = host.tracer.as_ref().ok_or_else(no_tracing)?;
    Ok(api::Tracing {
        sample_rate: tracer.sample_rate(),
        endpoint: host.config.traces.as_ref().map(|t| t.endpoint.clone()),
    })
}

fn no_tracing() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "tracing_off",
        "the host exports no traces: start it with --otlp-endpoint",
    )
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    Digest::parse(text)
        .ok_or_else(|| ApiError::bad_request(format!("`{text}` is not a sha256 digest")))
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}
