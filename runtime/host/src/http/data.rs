//! The data plane: a function's own routes and the Open Inference Protocol v2.
//!
//! Request path: route match → method → auth → version (the stable one, or a canary's share) →
//! body (bounded) → instance queue → preprocess → ONNX Runtime → postprocess → response; a shadow
//! gets a copy afterwards.

use super::error::{json_response, ApiError, HttpResponse};
use super::facts;
use super::read_incoming;
use super::{names, rate_headers, PeerAddr};
use crate::function::{LoadedFunction, Measurement};
use crate::instance::{InstancePool, InvokeError, Overloaded, Reply, Work};
use crate::keys::KeyStore;
use crate::metrics::{EndpointMetrics, FunctionLabels, Metrics};
use crate::policy::access::{self, JwtVerifier};
use crate::policy::cache::{CachedReply, Lookup};
use crate::policy::rate_limit::{Allowed, HostLimiter, Limited};
use crate::policy::{Caller, EndpointPolicy};
use crate::registry::{LiveRollout, Registry, RouteMatch};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Headers a module never sees: credentials stay with the host.
const PRIVATE_HEADERS: [&str; 3] = ["authorization", "x-api-key", "cookie"];

/// What the data plane needs: the registry, and what admits and bounds a request.
pub struct DataPlane {
    pub registry: Arc<Registry>,
    pub keys: Arc<KeyStore>,
    pub jwt: JwtVerifier,
    /// The host's own rate limit over all functions, if any.
    pub host_limit: Option<HostLimiter>,
    pub metrics: Arc<Metrics>,
    pub limits: RequestLimits,
}

/// The host's bounds on one request (an endpoint may set tighter ones).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub request_timeout: std::time::Duration,
    pub max_body_bytes: usize,
}

impl RequestLimits {
    /// The deadline of a request to `policy`'s endpoint: its own, within the host's.
    pub(super) fn deadline(&self, policy: &EndpointPolicy) -> std::time::Duration {
        policy
            .timeout
            .map_or(self.request_timeout, |t| t.min(self.request_timeout))
    }

    /// The body limit of `policy`'s endpoint: its own, within the host's.
    pub(super) fn max_body(&self, policy: &EndpointPolicy) -> usize {
        policy
            .max_body
            .map_or(self.max_body_bytes, |m| m.min(self.max_body_bytes))
    }
}

pub(super) async fn endpoint<B>(
    data: Arc<DataPlane>,
    request: Request<B>,
) -> Result<HttpResponse, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path().to_string();
    let serving = match data.registry.route(request.method().as_str(), &path) {
        RouteMatch::Found(serving) => serving,
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
    let function = serving.stable.clone();
    let Some(policy) = function.endpoint(request.method().as_str(), &path) else {
        return Err(ApiError::not_found(format!("no function serves {path}")));
    };
    let request_id = request_id(request.headers());
    let started = Instant::now();
    let deadline = data.limits.deadline(policy);
    // The version that answers (a canary's candidate for its share), and a shadow's copy.
    let mut answering = function.clone();
    let mut shadow_job = None;
    let served = tokio::time::timeout(deadline, async {
        let admitted = admit(
            &data,
            &function,
            std::slice::from_ref(policy),
            &path,
            &RequestHead::of(&request),
        )
        .await?;
        let choice = serving.choose(&admitted.caller, request.headers());
        answering = choice.serve.clone();
        let function = choice.serve;
        let no_cache = request
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .is_some_and(|v| v.contains("no-cache") || v.contains("no-store"));
        let (parts, body) = request.into_parts();
        let body = read_incoming(&parts.headers, body, data.limits.max_body(policy))
            .await
            .map_err(|e| e.with_rate(admitted.rate))?;
        // Built only when the function runs (not on a cache hit).
        let work = |body: Bytes| Work::Endpoint {
            route: path.clone(),
            method: parts.method.to_string(),
            headers: parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    !PRIVATE_HEADERS.contains(&name.as_str()) && *name != names::X_REQUEST_ID
                })
                .filter_map(|(name, value)| {
                    Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
                })
                .chain(
                    request_id
                        .to_str()
                        .ok()
                        .map(|id| (names::X_REQUEST_ID.as_str().to_string(), id.to_string())),
                )
                .collect(),
            body,
        };
        if let Some((shadow, live)) = choice.shadow {
            shadow_job = Some((shadow, live, work(body.clone())));
        }
        let mut served = match &policy.cache {
            Some(cache) if !no_cache => {
                let run = async {
                    let reply = invoke(&data, &function, work(body.clone()))
                        .await
                        .map_err(NotStored::Error)?;
                    if (200..300).contains(&reply.status) {
                        Ok(CachedReply {
                            status: reply.status,
                            content_type: reply.content_type,
                            body: reply.body,
                        })
                    } else {
                        Err(NotStored::Answer(CachedReply {
                            status: reply.status,
                            content_type: reply.content_type,
                            body: reply.body,
                        }))
                    }
                };
                let digest = function.record.digest.hex();
                let found = cache
                    .lookup_or_run(digest, &path, &admitted.caller, &body, run)
                    .await;
                let (reply, lookup) = match found {
                    Ok(found) => found,
                    // Shared with every request that waited on the same run.
                    Err(shared) => match &*shared {
                        NotStored::Error(error) => {
                            return Err(error.clone().with_rate(admitted.rate))
                        }
                        NotStored::Answer(reply) => (Arc::new(reply.clone()), Lookup::Miss),
                    },
                };
                let outcome = match lookup {
                    Lookup::Hit => "hit",
                    Lookup::Miss => "miss",
                };
                policy.metrics.cache_lookup(outcome);
                Served::from_cache(&reply, outcome)
            }
            cache => {
                if cache.is_some() {
                    policy.metrics.cache_lookup("bypass");
                }
                let reply = invoke(&data, &function, work(body))
                    .await
                    .map_err(|e| e.with_rate(admitted.rate))?;
                Served {
                    status: reply.status,
                    content_type: reply.content_type,
                    body: reply.body,
                    cache: cache.as_ref().map(|_| "bypass"),
                    rate: None,
                    variant: Some(reply.variant),
                    headers: hyper::HeaderMap::new(),
                }
            }
        };
        served.rate = admitted.rate;
        Ok::<_, ApiError>(served)
    })
    .await
    .unwrap_or_else(|_| Err(timed_out(deadline)));
    if let Some((shadow, live, work)) = shadow_job {
        let stable = match &served {
            Ok(served) => (served.status, served.body.clone()),
            Err(error) => (error.status.as_u16(), Bytes::new()),
        };
        tokio::spawn(run_shadow(data.clone(), shadow, live, work, stable));
    }
    let mut response = finish(
        &data,
        &answering,
        Some(&policy.metrics),
        &path,
        started,
        served,
        ErrorShape::Aifn,
    );
    response
        .headers_mut()
        .insert(names::X_REQUEST_ID, request_id);
    Ok(response)
}

/// The caller's `X-Request-Id` when it is a sensible one (1 to 128 of `A-Z a-z 0-9 . _ : -`),
/// else one the host makes: a random prefix per start and a counter, so unique while it runs.
fn request_id(headers: &hyper::HeaderMap) -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if let Some(given) = headers.get(names::X_REQUEST_ID) {
        let bytes = given.as_bytes();
        if (1..=128).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
        {
            return given.clone();
        }
    }
    let prefix = *PREFIX.get_or_init(rand::random);
    let id = format!(
        "{prefix:08x}{:012x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    HeaderValue::from_str(&id).expect("hex is a header value")
}

/// Runs a shadow's copy of a request and compares its answer with the one the caller got. Off
/// the caller's path: the caller has its answer already, and never sees this one. A copy the
/// shadow has no room for is shed, not queued, and not counted as its answer.
async fn run_shadow(
    data: Arc<DataPlane>,
    shadow: Arc<LoadedFunction>,
    live: Arc<LiveRollout>,
    work: Work,
    stable: (u16, Bytes),
) {
    let disagreement = &live.progress.disagreement;
    let Ok(pending) = submit(&shadow, work) else {
        disagreement.lock().expect("rollout lock").shed += 1;
        return;
    };
    let answer = match pending.reply(&data).await {
        Ok(reply) => (reply.status, reply.body),
        Err(error) => (error.status.as_u16(), Bytes::new()),
    };
    disagreement
        .lock()
        .expect("rollout lock")
        .add((stable.0, &stable.1), (answer.0, &answer.1));
}

/// Why an answer was not stored in the cache: an error, or the function's own non-success answer
/// (which is still the response).
enum NotStored {
    Error(ApiError),
    Answer(CachedReply),
}

/// What admission looks at in a request, whichever protocol carried it: its headers (gRPC
/// metadata are headers too) and the client's address.
pub struct RequestHead<'r> {
    pub headers: &'r hyper::HeaderMap,
    pub peer: IpAddr,
}

impl<'r> RequestHead<'r> {
    pub fn of<B>(request: &'r Request<B>) -> RequestHead<'r> {
        RequestHead::from_parts(request.headers(), request.extensions())
    }

    pub fn from_parts(
        headers: &'r hyper::HeaderMap,
        extensions: &hyper::http::Extensions,
    ) -> RequestHead<'r> {
        // IPv4 clients of a dual-stack listener arrive as ::ffff:a.b.c.d; allowlists name them as IPv4.
        let peer = extensions
            .get::<PeerAddr>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip().to_canonical());
        RequestHead { headers, peer }
    }
}

/// What passing the endpoint's access rules and rate limits gave.
pub(super) struct Admitted<'p> {
    pub caller: Caller,
    pub rate: Option<Allowed>,
    /// The endpoint whose rules let the caller in: its body limit and deadline apply.
    pub policy: &'p EndpointPolicy,
}

/// Access rules, then the host's rate limit, then the endpoint's, each counted when it refuses.
pub(super) async fn admit<'p>(
    data: &DataPlane,
    function: &LoadedFunction,
    policies: &'p [EndpointPolicy],
    route: &str,
    head: &RequestHead<'_>,
) -> Result<Admitted<'p>, ApiError> {
    let began = Instant::now();
    let peer = head.peer;
    // The first policy that admits the caller applies; if none does, the first refusal is the answer.
    let mut refusal = None;
    let mut admitted = None;
    for policy in policies {
        match access::check(
            policy,
            function.name(),
            peer,
            head.headers,
            &data.keys,
            &data.jwt,
        )
        .await
        {
            Ok(caller) => {
                admitted = Some((policy, caller));
                break;
            }
            Err(denied) => {
                refusal.get_or_insert(denied);
            }
        }
    }
    let Some((policy, caller)) = admitted else {
        let denied = refusal.expect("a function has at least one endpoint");
        facts::note(|facts| {
            if let Some(phase) = facts.phase("admission", began, Instant::now()) {
                phase.attribute("aifn.admission", denied.reason()).done();
            }
        });
        Metrics::count_policy(
            &data.metrics.auth_failures,
            function.name(),
            route,
            denied.reason(),
        );
        return Err(ApiError::from(denied));
    };
    let refuse = |scope: &'static str, limited: Limited| {
        Metrics::count_policy(&data.metrics.rate_limited, function.name(), route, scope);
        ApiError::rate_limited(scope, limited)
    };
    let limits = (|| -> Result<Option<Allowed>, ApiError> {
        if let Some(limit) = &data.host_limit {
            limit.check().map_err(|l| refuse("host", l))?;
        }
        match &policy.rate_limit {
            Some(limiter) => Ok(Some(
                limiter.check(&caller).map_err(|l| refuse("caller", l))?,
            )),
            None => Ok(None),
        }
    })();
    facts::note(|facts| {
        let admitted = facts::Admitted {
            name: function.name().to_string(),
            target_latency: function.spec.spec.scaling.target_latency.map(|t| t.0),
        };
        facts.admitted(admitted, caller.key());
        if let Some(phase) = facts.phase("admission", began, Instant::now()) {
            let outcome = if limits.is_ok() {
                "admitted"
            } else {
                "rate_limited"
            };
            phase.attribute("aifn.admission", outcome).done();
        }
    });
    let rate = limits?;
    Ok(Admitted {
        caller,
        rate,
        policy,
    })
}

/// An answer on its way out, with what the policies add to its headers.
pub(super) struct Served {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    pub cache: Option<&'static str>,
    pub rate: Option<Allowed>,
    /// The model variant that answered (not known for cached answers).
    pub variant: Option<&'static str>,
    /// Headers of the protocol (the v2 binary data extension's header length).
    pub headers: hyper::HeaderMap,
}

impl Served {
    fn from_cache(reply: &CachedReply, outcome: &'static str) -> Served {
        Served {
            status: reply.status,
            content_type: reply.content_type.clone(),
            body: reply.body.clone(),
            cache: Some(outcome),
            rate: None,
            variant: None,
            headers: hyper::HeaderMap::new(),
        }
    }
}

/// Measures a version's answer once, when dropped: the status set, or 504 when the request's
/// deadline dropped the call before it ended (see [`LoadedFunction::observe`]).
struct Answered<'f> {
    function: &'f LoadedFunction,
    /// The pool the request was handed to.
    pool: &'f InstancePool,
    started: Instant,
    status: Option<u16>,
}

impl Drop for Answered<'_> {
    fn drop(&mut self) {
        let measurement = Measurement {
            status: self.status.unwrap_or(StatusCode::GATEWAY_TIMEOUT.as_u16()),
            latency: self.started.elapsed(),
        };
        self.function.observe(measurement, Some(self.pool));
    }
}

/// Work handed to a function's instances, waiting for its reply.
struct Pending<'f> {
    answered: Answered<'f>,
    receiver: tokio::sync::oneshot::Receiver<Result<Reply, InvokeError>>,
}

/// Hands work to the function's serving pool (or refuses it at once when the pool is full).
fn submit(function: &LoadedFunction, work: Work) -> Result<Pending<'_>, Overloaded> {
    let started = Instant::now();
    let pool = function.serving_pool();
    let receiver = pool.submit(work, facts::span_context())?;
    Ok(Pending {
        answered: Answered {
            function,
            pool,
            started,
            status: None,
        },
        receiver,
    })
}

impl Pending<'_> {
    /// Waits for the reply; counts it in the version's outcomes and its stages in the metrics.
    async fn reply(mut self, data: &DataPlane) -> Result<Reply, ApiError> {
        let function = self.answered.function;
        let result = match (&mut self.receiver).await {
            Err(_) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "instance_stopped",
                "the instance stopped before answering",
            )),
            Ok(Err(e)) => {
                tracing::warn!(
                    function = function.name(),
                    version = function.version(),
                    "request failed: {e}"
                );
                Err(ApiError::from(e))
            }
            Ok(Ok(reply)) => {
                let name = function.name();
                let t = reply.timings;
                data.metrics.observe_stage(name, "queue", t.queued);
                data.metrics.observe_stage(name, "preprocess", t.preprocess);
                data.metrics.observe_stage(name, "inference", t.inference);
                data.metrics
                    .observe_stage(name, "postprocess", t.postprocess);
                data.metrics.observe_batch(name, t.batch_size);
                note_stages(self.answered.started, &reply);
                Ok(reply)
            }
        };
        self.answered.status = Some(match &result {
            Ok(reply) => reply.status,
            Err(error) => error.status.as_u16(),
        });
        result
    }
}

/// The request's stages in its trace: they ran one after the other from its submission.
fn note_stages(submitted: Instant, reply: &Reply) {
    let timings = &reply.timings;
    facts::note(|facts| {
        let mut at = submitted;
        let stages = [
            ("queue", timings.queued),
            ("preprocess", timings.preprocess),
            ("inference", timings.inference),
            ("postprocess", timings.postprocess),
        ];
        for (name, took) in stages {
            if took.is_zero() && name != "inference" {
                continue;
            }
            let Some(phase) = facts.phase(name, at, at + took) else {
                return;
            };
            let phase = if name == "inference" {
                phase
                    .attribute("aifn.batch.size", timings.batch_size as i64)
                    .attribute("aifn.variant", reply.variant)
                    .shared_run(reply.shared_run.clone())
            } else {
                phase
            };
            phase.done();
            at += took;
        }
    });
}

/// Hands work to the function's instances and waits for the reply. A full pool answers 503,
/// which counts as the version's answer.
pub(super) async fn invoke(
    data: &DataPlane,
    function: &LoadedFunction,
    work: Work,
) -> Result<Reply, ApiError> {
    match submit(function, work) {
        Ok(pending) => pending.reply(data).await,
        Err(overloaded) => {
            data.metrics
                .overloaded
                .get_or_create(&FunctionLabels {
                    function: function.name().to_string(),
                })
                .inc();
            let error = ApiError::from(overloaded);
            let measurement = Measurement {
                status: error.status.as_u16(),
                latency: std::time::Duration::ZERO,
            };
            function.observe(measurement, None);
            Err(error)
        }
    }
}

/// Which error body an answer carries: aifn's own `{"error": {"code", "message", ...}}`, or the
/// Open Inference Protocol's `{"error": "<message>"}` on its routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ErrorShape {
    Aifn,
    OpenInference,
}

/// Turns an answer or an error into the response, tagged with the version that answered and the
/// policies' headers, and counts it.
pub(super) fn finish(
    data: &DataPlane,
    function: &LoadedFunction,
    endpoint_metrics: Option<&EndpointMetrics>,
    route: &str,
    started: Instant,
    result: Result<Served, ApiError>,
    shape: ErrorShape,
) -> HttpResponse {
    let (mut response, variant, limit) = match result {
        Ok(served) => {
            let mut response = Response::new(Full::new(served.body));
            *response.status_mut() = StatusCode::from_u16(served.status).unwrap_or(StatusCode::OK);
            let headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&served.content_type) {
                headers.insert(CONTENT_TYPE, value);
            }
            if let Some(outcome) = served.cache {
                headers.insert(names::X_CACHE, HeaderValue::from_static(outcome));
            }
            if let Some(variant) = served.variant {
                headers.insert(names::X_AIFN_VARIANT, HeaderValue::from_static(variant));
            }
            if let Some(rate) = served.rate {
                rate_headers(headers, rate.limit, rate.remaining, rate.reset);
            }
            headers.extend(served.headers);
            (response, served.variant, None)
        }
        Err(mut error) => {
            let limit = error.limit();
            let response = match shape {
                ErrorShape::Aifn => {
                    error.details.get_or_insert_with(
                        || json!({ "function": function.name(), "version": function.version() }),
                    );
                    error.into_response()
                }
                ErrorShape::OpenInference => error.into_v2_response(),
            };
            (response, None, limit)
        }
    };
    let headers = response.headers_mut();
    headers.insert(names::X_AIFN_FUNCTION, function.name_header.clone());
    headers.insert(names::X_AIFN_VERSION, function.version_header.clone());
    let status = response.status().as_u16();
    count_answer(
        data,
        function,
        endpoint_metrics,
        route,
        started,
        status,
        variant,
        limit,
    );
    response
}

/// Counts one answer of a version in the metrics: its status and latency (per endpoint, or per
/// route for the v2 routes), the model variant that gave it, and the host limit that refused it.
#[allow(clippy::too_many_arguments)]
pub(super) fn count_answer(
    data: &DataPlane,
    function: &LoadedFunction,
    endpoint_metrics: Option<&EndpointMetrics>,
    route: &str,
    started: Instant,
    status: u16,
    variant: Option<&'static str>,
    limit: Option<&'static str>,
) {
    if let Some(variant) = variant {
        data.metrics.count_variant(function.name(), variant);
    }
    if let Some(limit) = limit {
        data.metrics.limit_hit(limit);
    }
    match endpoint_metrics {
        Some(metrics) => metrics.answered(status, started.elapsed()),
        None => data
            .metrics
            .count_request(function.name(), route, status, started.elapsed()),
    }
}

pub(super) fn timed_out(deadline: std::time::Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "request_timeout",
        format!("the request took longer than the endpoint's limit of {deadline:?}"),
    )
}

pub(super) fn method_not_allowed(path: &str, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{path} allows only {allowed}"),
    )
    .with_header(ALLOW, allowed)
}

/// Where labels for a function's answers are sent: reserved, so it never meets a function's route.
pub(super) const FEEDBACK_PREFIX: &str = "/aifn/v1/feedback/";

/// Labels are small; a feedback body over this is refused.
const MAX_FEEDBACK_BYTES: usize = 64 << 10;

/// `POST /aifn/v1/feedback/NAME` with `{"request_id": "...", "label": 1}`: the ground truth of an
/// answer the function gave (its `X-Request-Id`), joined with the prediction the monitor kept. The
/// caller must pass the access rules of one of the function's endpoints.
pub(super) async fn feedback(
    data: Arc<DataPlane>,
    name: String,
    request: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let path = request.uri().path().to_string();
    if request.method() != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!(
                "{} is not allowed on {path}; allowed: POST",
                request.method()
            ),
        )
        .with_header(ALLOW, "POST"));
    }
    let no_function = || ApiError::not_found(format!("no function named `{name}`"));
    let serving = data.registry.serving(&name).ok_or_else(no_function)?;
    let function = serving.stable.clone();
    admit(
        &data,
        &function,
        &function.endpoints,
        &path,
        &RequestHead::of(&request),
    )
    .await?;
    let (parts, body) = request.into_parts();
    let body = read_incoming(&parts.headers, body, MAX_FEEDBACK_BYTES).await?;
    let feedback: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let Some(request_id) = feedback.get("request_id").and_then(|v| v.as_str()) else {
        return Err(ApiError::bad_request(
            "expected {\"request_id\": \"...\", \"label\": ...}: `request_id` (a string) is missing",
        ));
    };
    let Some(label) = feedback.get("label") else {
        return Err(ApiError::bad_request(
            "expected {\"request_id\": \"...\", \"label\": ...}: `label` is missing",
        ));
    };
    let versions =
        std::iter::once(function.clone()).chain(serving.rollout.as_ref().map(|l| l.other.clone()));
    let monitors: Vec<(u64, Arc<crate::monitor::VersionMonitor>)> = versions
        .filter_map(|f| f.monitor.clone().map(|m| (f.version(), m)))
        .collect();
    if monitors.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_monitored",
            format!("`{name}` has no `spec.monitoring`, so it keeps no answers for labels"),
        ));
    }
    // The version that answered has the prediction; a label is taken once.
    let mut refusal = None;
    for (version, monitor) in monitors {
        let (id, label) = (request_id.to_string(), label.clone());
        let outcome = tokio::task::spawn_blocking(move || monitor.label(&id, &label))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("labelling panicked: {e}"),
                )
            })?;
        match outcome {
            Ok(record) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &json!({
                        "function": name,
                        "version": version,
                        "request_id": request_id,
                        "prediction": record.prediction,
                        "label": record.label,
                    }),
                ))
            }
            Err(crate::labels::LabelError::Unknown(_)) if refusal.is_some() => {}
            Err(e) => refusal = Some(e),
        }
    }
    Err(refusal.expect("at least one monitor answered").into())
}
