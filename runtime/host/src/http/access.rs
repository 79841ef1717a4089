//! What the HTTP layer records of every request once it is answered: OpenTelemetry's
//! `http.server.request.duration` and the request's trace (data plane), and with `--access-log`
//! a line on the `aifn::access` target. A line says what answered (function, version, variant,
//! cache), how (status, latency) and who asked: an API key's id, a JWT's subject or an address,
//! never a secret, a header's value or a body.

use super::facts::RequestFacts;
use super::{names, PeerAddr, Surface};
use crate::metrics::Metrics;
use crate::traces::{Ending, Tracer};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::Instant;

/// One request's record, begun when the request arrives and written when its answer's head goes
/// out (a streamed gRPC answer's trailers come later: its `grpc-status` is logged when the call
/// failed before any message, as gRPC then sends it in the head).
pub(super) struct AccessEntry {
    started: Instant,
    surface: Surface,
    method: hyper::Method,
    path: String,
    protocol: &'static str,
    peer: Option<std::net::SocketAddr>,
    /// The control plane's caller: who the CLI says runs it.
    actor: Option<String>,
    /// Only when the line is written or the request traced.
    facts: Option<Arc<RequestFacts>>,
    log: bool,
}

impl AccessEntry {
    /// `tracer`: the host's, when it exports traces (data-plane requests are traced).
    pub fn begin<B>(
        surface: Surface,
        request: &Request<B>,
        log: bool,
        tracer: Option<&Tracer>,
    ) -> AccessEntry {
        let trace = tracer
            .filter(|_| surface == Surface::Data)
            .map(|tracer| tracer.begin(request.headers()));
        let facts = (log || trace.is_some()).then(|| Arc::new(RequestFacts::new(trace)));
        let grpc = super::is_grpc(request);
        AccessEntry {
            started: Instant::now(),
            surface,
            method: request.method().clone(),
            // The path only: a query string may carry what must not be logged.
            path: request.uri().path().to_string(),
            protocol: match request.version() {
                _ if grpc => "grpc",
                hyper::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            },
            peer: request.extensions().get::<PeerAddr>().map(|p| p.0),
            actor: (surface == Surface::Control)
                .then(|| request.headers().get("x-aifn-actor"))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(64).collect()),
            facts,
            log,
        }
    }

    /// The facts the request path notes into (see `facts::scope`).
    pub fn facts(&self) -> Option<Arc<RequestFacts>> {
        self.facts.clone()
    }

    /// Records the answer: its metric, its trace (whose `traceparent` the answer then carries)
    /// and its line.
    pub fn end<B>(self, response: &mut Response<B>, metrics: &Metrics, tracer: Option<&Tracer>) {
        let status = response.status().as_u16();
        let elapsed = self.started.elapsed();
        let facts = self.facts.as_deref();
        if self.surface == Surface::Data {
            let served_by_function = response.headers().contains_key(names::X_AIFN_FUNCTION);
            let route = route_template(&self.path, served_by_function);
            let mut exported = None;
            if let (Some(trace), Some(tracer)) = (facts.and_then(|f| f.trace.as_ref()), tracer) {
                let header =
                    |name: &HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok());
                let ending = Ending {
                    status,
                    grpc_status: header(&GRPC_STATUS),
                    target_latency: facts
                        .and_then(RequestFacts::function)
                        .and_then(|a| a.target_latency),
                };
                let describe = || self.describe(response, facts, &route);
                if trace.end(tracer, ending, describe) {
                    exported = Some(trace.trace_id());
                }
                let headers = response.headers_mut();
                if let Ok(value) = HeaderValue::from_str(&trace.traceparent()) {
                    headers.insert(TRACEPARENT, value);
                }
                let state = trace.tracestate();
                if let Ok(value) = HeaderValue::from_str(&state) {
                    if !state.is_empty() {
                        headers.insert(TRACESTATE, value);
                    }
                }
            }
            metrics.observe_http(&self.method, route, status, elapsed, exported);
        }
        if let (true, Some(facts)) = (self.log, facts) {
            self.log_line(response, facts, status, elapsed);
        }
    }

    /// The server span's name and attributes.
    fn describe<B>(
        &self,
        response: &Response<B>,
        facts: Option<&RequestFacts>,
        route: &str,
    ) -> (String, Vec<KeyValue>) {
        let header = |name: &HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok());
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("http.route", route.to_string()),
            KeyValue::new("url.path", self.path.clone()),
            KeyValue::new("network.protocol.name", self.protocol),
        ];
        let function = facts
            .and_then(RequestFacts::function)
            .map(|a| a.name.as_str())
            .or(header(&names::X_AIFN_FUNCTION));
        for (key, value) in [
            ("aifn.function", function),
            ("aifn.version", header(&names::X_AIFN_VERSION)),
            ("aifn.variant", header(&names::X_AIFN_VARIANT)),
            ("aifn.cache", header(&names::X_CACHE)),
            ("aifn.request_id", header(&names::X_REQUEST_ID)),
            ("aifn.caller", facts.and_then(RequestFacts::caller)),
        ] {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.to_string()));
            }
        }
        (format!("{} {route}", self.method), attributes)
    }

    fn log_line<B>(
        &self,
        response: &Response<B>,
        facts: &RequestFacts,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let header = |name: &HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        };
        let caller = facts.caller().or(self.actor.as_deref()).unwrap_or("-");
        let peer = self
            .peer
            .map_or_else(|| "-".to_string(), |p| p.ip().to_string());
        tracing::info!(
            target: "aifn::access",
            surface = match self.surface {
                Surface::Data => "data",
                Surface::Control => "control",
            },
            protocol = self.protocol,
            method = %self.method,
            route = %self.path,
            status,
            grpc_status = header(&GRPC_STATUS),
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            // gRPC answers carry no aifn headers: the function is the one admission named.
            function = facts
                .function()
                .map_or_else(|| header(&names::X_AIFN_FUNCTION), |a| a.name.as_str()),
            version = header(&names::X_AIFN_VERSION),
            variant = header(&names::X_AIFN_VARIANT),
            cache = header(&names::X_CACHE),
            caller,
            request_id = header(&names::X_REQUEST_ID),
            traceparent = header(&TRACEPARENT),
            peer,
            "access"
        );
    }
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The bounded `http.route` of a data-plane path: a function's declared route (the answer names
/// the function), a v2 route with its model and version as placeholders, a gRPC method, or
/// `other` for paths nothing serves.
fn route_template(path: &str, served_by_function: bool) -> String {
    if path == "/v2" || path.starts_with("/v2/") {
        let segments: Vec<&str> = path.split('/').skip(2).collect();
        let template = match segments.as_slice() {
            [] | [""] => "/v2",
            ["health", "live"] => "/v2/health/live",
            ["health", "ready"] => "/v2/health/ready",
            ["repository", "index"] => "/v2/repository/index",
            ["models", _] => "/v2/models/{model}",
            ["models", _, "ready"] => "/v2/models/{model}/ready",
            ["models", _, "infer"] => "/v2/models/{model}/infer",
            ["models", _, "versions", _] => "/v2/models/{model}/versions/{version}",
            ["models", _, "versions", _, "ready"] => "/v2/models/{model}/versions/{version}/ready",
            ["models", _, "versions", _, "infer"] => "/v2/models/{model}/versions/{version}/infer",
            _ => "other",
        };
        return template.to_string();
    }
    let known_grpc = [
        "/inference.GRPCInferenceService/",
        "/grpc.health.v1.Health/",
    ];
    let grpc_method = known_grpc.iter().any(|service| {
        path.strip_prefix(service).is_some_and(|method| {
            method.len() <= 64 && method.bytes().all(|b| b.is_ascii_alphanumeric())
        })
    });
    if served_by_function || grpc_method || matches!(path, "/healthz" | "/readyz") {
        path.to_string()
    } else {
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::route_template;

    #[test]
    fn routes_are_templates_whatever_the_path() {
        assert_eq!(
            route_template("/v2/models/churn/infer", true),
            "/v2/models/{model}/infer"
        );
        assert_eq!(
            route_template("/v2/models/churn/versions/3/infer", true),
            "/v2/models/{model}/versions/{version}/infer"
        );
        assert_eq!(route_template("/v2/models/a/b/c/d/e", false), "other");
        assert_eq!(route_template("/v1/sentiment", true), "/v1/sentiment");
        assert_eq!(route_template("/wp-login.php", false), "other");
        assert_eq!(
            route_template("/inference.GRPCInferenceService/ModelInfer", false),
            "/inference.GRPCInferenceService/ModelInfer"
        );
        assert_eq!(
            route_template("/inference.GRPCInferenceService/a/b", false),
            "other"
        );
    }
}
