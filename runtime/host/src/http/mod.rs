//! The HTTP server: one accept loop, serving one of two surfaces on each listener.
//!
//! - data plane (the public listener): the routes functions declare, the Open Inference Protocol
//!   v2 (`/v2/...`), and probes: `/healthz` (the process is up) and `/readyz` (stored deployments
//!   are loaded; only yes or no, nothing about what is deployed);
//! - control plane (its own listener, loopback by default): `/admin/v1/...` behind the admin token,
//!   `/metrics` behind the admin token or the read-only metrics token, and `/readyz` with the
//!   functions and their load errors, and the dashboard's page (`/dashboard`, which reads the admin
//!   API with the token it is given).

mod access;
mod admin;
mod connection;
mod dashboard;
pub mod data;
pub mod error;
pub mod facts;
pub mod grpc;
mod inference;
pub mod tls;
pub mod v2;

use crate::config::HostConfig;
use crate::host::Host;
use crate::registry::Registry;
use bytes::Bytes;
use error::{ApiError, HttpResponse};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves until `shutdown` completes; connections in progress finish on their own tasks.
///
/// At most `max_connections` are open at once: one more is answered 503 and closed at once (a
/// client learns why, and the host holds nothing for it). Each open connection is bounded too: its
/// request head (`max_header_bytes`, `max_headers`: 431 above), its body (the endpoint's limit),
/// and its idle time (an idle keep-alive connection waits for the next request's head, so
/// `header_read_timeout` closes it). HTTP/1.1 serves one request of a connection at a time, so
/// pipelined requests wait their turn in the connection's bounded read buffer.
pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    accept(host, Surface::Data, listener, shutdown).await
}

/// Serves the control plane on its own listener until `shutdown` completes.
pub async fn serve_control(
    host: Arc<Host>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    accept(host, Surface::Control, listener, shutdown).await
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    Data,
    Control,
}

/// The body of any answer: a whole one (REST), or gRPC's stream of messages and trailers.
type AnyBody = http_body_util::Either<Full<Bytes>, tonic::body::Body>;

async fn accept(
    host: Arc<Host>,
    surface: Surface,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(host.config.max_connections));
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // A client that sends its request and shuts its writing side still gets the answer.
        .half_close(true)
        .header_read_timeout(host.config.header_read_timeout)
        .max_buf_size(host.config.max_header_bytes.max(8192))
        .max_header_size(host.config.max_header_bytes);
    if host.config.max_headers != HostConfig::DEFAULT_MAX_HEADERS {
        http1.max_headers(host.config.max_headers);
    }
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(host.config.max_header_bytes as u32)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // An idle client is pinged, and dropped when it stops answering.
        .keep_alive_interval(std::time::Duration::from_secs(30));
    let protocols = Arc::new((http1, http2));
    // gRPC is served next to REST on the data plane's port.
    let grpc = (surface == Surface::Data).then(|| grpc::routes(host.data.clone()));
    // Set when the listener stops: each connection finishes what it holds, then closes.
    let (drain, draining) = tokio::sync::watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            host.metrics.limit_hit("connections");
            if host.tls.is_none() {
                tokio::spawn(refuse_connection(stream, host.config.max_connections));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        let protocols = protocols.clone();
        let grpc = grpc.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let _slot = slot;
            host.metrics.connections.inc();
            let service = {
                let host = host.clone();
                service_fn(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(PeerAddr(peer));
                    let tracer = host.tracer.clone();
                    let access = access::AccessEntry::begin(
                        surface,
                        &request,
                        host.config.access_log,
                        tracer.as_deref(),
                    );
                    let host = host.clone();
                    let grpc = grpc.clone();
                    async move {
                        let metrics = host.metrics.clone();
                        let handling = async move {
                            match (surface, grpc) {
                                (Surface::Data, Some(grpc)) if is_grpc(&request) => {
                                    use tonic::codegen::Service;
                                    let Ok(response) = grpc.clone().call(request).await;
                                    response.map(AnyBody::Right)
                                }
                                (Surface::Data, _) => {
                                    handle(host, request).await.map(AnyBody::Left)
                                }
                                (Surface::Control, _) => {
                                    handle_control(host, request).await.map(AnyBody::Left)
                                }
                            }
                        };
                        let mut response = facts::scope(access.facts(), handling).await;
                        access.end(&mut response, &metrics, tracer.as_deref());
                        Ok::<_, Infallible>(response)
                    }
                })
            };
            let handshake = host.config.header_read_timeout;
            let served = match &host.tls {
                Some(tls) => {
                    match tokio::time::timeout(handshake, tls.acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve_io(&protocols, h2, stream, service, draining).await
                        }
                        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                        Err(_) => Err("TLS handshake took too long".into()),
                    }
                }
                None => {
                    let mut stream = stream;
                    match tokio::time::timeout(handshake, connection::sniff(&mut stream)).await {
                        Ok(Ok((h2, read))) => {
                            let stream = connection::Rewound::new(read, stream);
                            serve_io(&protocols, h2, stream, service, draining).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("no request within the header timeout".into()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("connection ended: {e}");
            }
            host.metrics.connections.dec();
        });
    }
    // Stopped accepting: open connections finish their requests (HTTP/1.1 answers with
    // `Connection: close`, HTTP/2 sends GOAWAY), within the drain timeout.
    drop(listener);
    let _ = drain.send(true);
    let all = u32::try_from(host.config.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(host.config.drain_timeout, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!(?surface, "connections drained"),
        Err(_) => tracing::warn!(
            ?surface,
            open = host.config.max_connections - slots.available_permits(),
            "connections still open after the drain timeout of {:?}",
            host.config.drain_timeout
        ),
    }
    Ok(())
}

/// Concurrent requests (streams) one HTTP/2 connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// A gRPC call: HTTP/2 with a `application/grpc[+proto]` body.
fn is_grpc<B>(request: &Request<B>) -> bool {
    request.version() == hyper::Version::HTTP_2
        && request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

type ConnectionError = Box<dyn std::error::Error + Send + Sync>;

/// Serves one connection's requests with HTTP/2 (`h2`) or HTTP/1.1.
async fn serve_io<I, S>(
    protocols: &(http1::Builder, http2::Builder<TokioExecutor>),
    h2: bool,
    io: I,
    service: S,
    draining: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ConnectionError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = hyper::Response<AnyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let connection = protocols.1.serve_connection(io, service);
        tokio::pin!(connection);
        until_drained(connection, draining, |c| c.graceful_shutdown()).await?;
    } else {
        let connection = protocols.0.serve_connection(io, service);
        tokio::pin!(connection);
        until_drained(connection, draining, |c| c.graceful_shutdown()).await?;
    }
    Ok(())
}

/// Runs a connection to its end; once the host drains, it is asked to finish gracefully.
async fn until_drained<C>(
    mut connection: std::pin::Pin<&mut C>,
    mut draining: tokio::sync::watch::Receiver<bool>,
    finish: impl FnOnce(std::pin::Pin<&mut C>),
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        result = connection.as_mut() => return result,
        Ok(_) = draining.wait_for(|drain| *drain) => finish(connection.as_mut()),
    }
    connection.await
}

/// Answers a connection over the cap with 503 and closes it (within a second: a client that does
/// not read is not waited for).
async fn refuse_connection(mut stream: tokio::net::TcpStream, cap: usize) {
    use tokio::io::AsyncWriteExt;
    let body = json!({ "error": {
        "code": "too_many_connections",
        "message": format!("the host has its limit of {cap} connections open; retry shortly"),
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}

/// The client's address, attached to each request for access rules and per-address limits.
/// (The host does not trust `X-Forwarded-For`: put it behind nothing, or extend this.)
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// The `RateLimit-*` headers (IETF draft `ratelimit-headers`): the budget, what is left of it, and
/// seconds until it is whole.
/// Names of the headers the host sets, validated at compile time rather than on each answer.
pub(crate) mod names {
    use hyper::header::HeaderName;
    pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
    pub const X_AIFN_VARIANT: HeaderName = HeaderName::from_static("x-aifn-variant");
    pub const X_AIFN_FUNCTION: HeaderName = HeaderName::from_static("x-aifn-function");
    pub const X_AIFN_VERSION: HeaderName = HeaderName::from_static("x-aifn-version");
    pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const X_AIFN_ERROR: HeaderName = HeaderName::from_static("x-aifn-error");
}

pub(crate) fn rate_headers(
    headers: &mut hyper::HeaderMap,
    limit: u32,
    remaining: u32,
    reset: std::time::Duration,
) {
    headers.insert(names::RATELIMIT_LIMIT, limit.into());
    headers.insert(names::RATELIMIT_REMAINING, remaining.into());
    headers.insert(
        names::RATELIMIT_RESET,
        (reset.as_secs_f64().ceil() as u64).into(),
    );
}

/// Routes one data-plane request, within the host's request deadline.
pub async fn handle(host: Arc<Host>, request: Request<Incoming>) -> HttpResponse {
    let path = request.uri().path();
    if let Some(name) = path.strip_prefix(data::FEEDBACK_PREFIX) {
        let name = name.to_string();
        return within(
            host.config.request_timeout,
            data::feedback(host.data.clone(), name, request),
        )
        .await;
    }
    if !(matches!(path, "/healthz" | "/readyz" | "/v2") || path.starts_with("/v2/")) {
        // Function routes keep their own deadline (the endpoint's, capped by the host's).
        return data::endpoint(host.data.clone(), request)
            .await
            .unwrap_or_else(ApiError::into_response);
    }
    let deadline = host.config.request_timeout;
    match path {
        "/healthz" => healthy(),
        "/readyz" => readiness(&host.registry, false),
        _ => tokio::time::timeout(deadline, v2::handle(host.data.clone(), request))
            .await
            .unwrap_or_else(|_| host_timeout(deadline).into_v2_response()),
    }
}

/// Routes one control-plane request, within the control plane's deadline (uploads of large
/// models and their loads take longer than any inference).
async fn handle_control(host: Arc<Host>, request: Request<Incoming>) -> HttpResponse {
    let deadline = host.config.admin_timeout;
    within(deadline, async {
        match request.uri().path() {
            "/healthz" => Ok(healthy()),
            "/readyz" => Ok(readiness(&host.registry, true)),
            "/metrics" => {
                admin::authorize_metrics(&host, &request)?;
                let mut response =
                    hyper::Response::new(Full::new(Bytes::from(host.metrics.render())));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                Ok(response)
            }
            p if p.starts_with("/admin/") => admin::handle(host, request).await,
            p if p.starts_with("/dashboard") => dashboard::file(p).ok_or_else(|| {
                ApiError::not_found(format!("no dashboard file {p}; the page is /dashboard"))
            }),
            p => Err(ApiError::not_found(format!(
                "no control-plane route {p}; functions are served on the data plane's listener"
            ))),
        }
    })
    .await
}

async fn within(
    deadline: std::time::Duration,
    answer: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> HttpResponse {
    match tokio::time::timeout(deadline, answer).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => host_timeout(deadline).into_response(),
    }
}

fn host_timeout(deadline: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "request_timeout",
        format!("the request took longer than the host's limit of {deadline:?}"),
    )
}

fn healthy() -> HttpResponse {
    error::json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Whether every stored deployment is loaded; `detailed` (the control plane only) adds which
/// functions there are and why any failed to load.
pub(crate) fn readiness(registry: &Registry, detailed: bool) -> HttpResponse {
    let ready = registry.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if registry.is_draining() {
        return error::json_response(status, &json!({ "ready": false, "draining": true }));
    }
    if !detailed {
        return error::json_response(status, &json!({ "ready": ready }));
    }
    let snapshot = registry.snapshot();
    let failed: Vec<_> = snapshot
        .failed()
        .map(|(name, error)| json!({ "name": name, "error": error }))
        .collect();
    error::json_response(
        status,
        &json!({ "ready": ready, "functions": snapshot.names(), "failed": failed }),
    )
}

/// Reads a whole body, refusing it with 413 past `limit` (by `Content-Length` before reading, and
/// while reading for chunked bodies).
pub(crate) async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let (parts, body) = request.into_parts();
    read_incoming(&parts.headers, body, limit).await
}

/// [`read_body`] for a request already split into head and body.
pub(crate) async fn read_incoming<B>(
    headers: &hyper::HeaderMap,
    body: B,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body failed: {e}"
        ))),
    }
}
