//! OpenTelemetry traces of data-plane requests, exported over OTLP (gRPC or HTTP/protobuf).
//!
//! No span is made while a request runs. Its path notes when each phase began and ended
//! (admission, the wait in the queue, preprocessing, the model's run, postprocessing), and the
//! request's end decides whether its trace goes out: when head sampling picked it (the caller's
//! `traceparent` said sampled, else the host's rate), and whatever the rate when it failed (5xx)
//! or took longer than its function's `target_latency`. That decision reads this request's own
//! record and nothing else. Only then are the spans built and handed to the OpenTelemetry SDK's
//! batch processor, which exports them from its own thread: a request that is not exported costs
//! a few timestamps.

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor as _,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How spans leave the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The collector: `http://HOST:4317` for gRPC, `http://HOST:4318` for HTTP (the host adds
    /// `/v1/traces` unless the URL has a path).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// The share of traces head sampling keeps, 0 to 1 (changeable while the host runs).
    pub sample_rate: f64,
    pub service_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("the sample rate must be from 0 to 1, not {0}")]
    Rate(f64),
}

/// The host's tracer: head sampling's rate and the exporter's batch processor.
#[derive(Debug)]
pub struct Tracer {
    processor: BatchSpanProcessor,
    /// An f64's bits.
    rate: AtomicU64,
    scope: InstrumentationScope,
}

impl Tracer {
    /// Starts the exporter. Call it within the host's tokio runtime: gRPC's channel runs on it.
    pub fn new(config: &TraceConfig) -> Result<Tracer, TraceError> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        check_rate(config.sample_rate)?;
        let exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT)
                .build()?,
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(&config.endpoint))
                .with_timeout(EXPORT_TIMEOUT)
                .with_http_client(BlockingHttp::new())
                .build()?,
        };
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(8192)
                    .with_scheduled_delay(Duration::from_millis(500))
                    .build(),
            )
            .build();
        processor.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        Ok(Tracer {
            processor,
            rate: AtomicU64::new(config.sample_rate.to_bits()),
            scope: InstrumentationScope::builder("aifn")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    pub fn sample_rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    pub fn set_sample_rate(&self, rate: f64) -> Result<(), TraceError> {
        check_rate(rate)?;
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
        Ok(())
    }

    /// A request's trace: the caller's (W3C `traceparent`, `tracestate`) continued, or a new one.
    pub fn begin(&self, headers: &hyper::HeaderMap) -> RequestTrace {
        let context = opentelemetry_sdk::propagation::TraceContextPropagator::new()
            .extract(&opentelemetry_http::HeaderExtractor(headers));
        let parent = context.span().span_context().clone();
        let parent = parent.is_valid().then_some(parent);
        let trace_id = parent.as_ref().map_or_else(
            || TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes()),
            SpanContext::trace_id,
        );
        let head_sampled = match &parent {
            Some(parent) => parent.is_sampled(),
            None => ratio_keeps(trace_id, self.sample_rate()),
        };
        RequestTrace {
            trace_id,
            span_id: SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes()),
            trace_state: parent
                .as_ref()
                .map_or_else(TraceState::default, |p| p.trace_state().clone()),
            parent,
            head_sampled,
            started: (SystemTime::now(), Instant::now()),
            // A request has at most six phases: one allocation.
            phases: Mutex::new(Vec::with_capacity(6)),
        }
    }

    /// Flushes what is queued; the host calls it when it stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown() {
            tracing::warn!("flushing traces: {e}");
        }
    }

    fn export(&self, span: SpanData) {
        self.processor.on_end(span);
    }
}

const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

fn check_rate(rate: f64) -> Result<(), TraceError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(TraceError::Rate(rate))
    }
}

/// OpenTelemetry's `TraceIdRatioBased` rule: the trace id's low 64 bits against the rate, so that
/// every service that samples at the same rate keeps the same traces.
fn ratio_keeps(trace_id: TraceId, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().expect("8 bytes")) >> 1;
    (low as f64) < rate * (1u64 << 63) as f64
}

/// The signal's URL of an OTLP/HTTP base URL (the specification's rule).
fn traces_url(endpoint: &str) -> String {
    let has_path = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split_once('/')
        .is_some_and(|(_, path)| !path.is_empty());
    if has_path {
        endpoint.to_string()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// One phase of a request, as its span will say.
#[derive(Debug)]
pub struct Phase {
    pub name: &'static str,
    pub start: Instant,
    pub end: Instant,
    pub attributes: Vec<KeyValue>,
    /// The model run this phase shared with other requests: the phase links to it, and it is
    /// exported with the first of their traces that is kept.
    pub shared_run: Option<Arc<SharedRun>>,
}

/// One model run that served several requests (a dynamic batch): a span of its own, in a trace
/// of its own, linked to the span of every request it served.
#[derive(Debug)]
pub struct SharedRun {
    context: SpanContext,
    start: SystemTime,
    end: SystemTime,
    served: Vec<SpanContext>,
    exported: AtomicBool,
}

impl SharedRun {
    pub fn new(start: SystemTime, took: Duration, served: Vec<SpanContext>) -> SharedRun {
        SharedRun {
            context: SpanContext::new(
                TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes()),
                SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes()),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            start,
            end: start + took,
            served,
            exported: AtomicBool::new(false),
        }
    }

    /// Exports the run's span unless a trace already did.
    fn export_once(&self, tracer: &Tracer) {
        if self.exported.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut links = SpanLinks::default();
        links.links = self
            .served
            .iter()
            .map(|request| Link::with_context(request.clone()))
            .collect();
        tracer.export(SpanData {
            span_context: self.context.clone(),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "batched inference".into(),
            start_time: self.start,
            end_time: self.end,
            attributes: vec![KeyValue::new("aifn.batch.size", self.served.len() as i64)],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links,
            status: Status::Unset,
            instrumentation_scope: tracer.scope.clone(),
        });
    }
}

/// What one request's trace holds until the request ends.
#[derive(Debug)]
pub struct RequestTrace {
    trace_id: TraceId,
    /// This host's server span, the parent of the phases' spans.
    span_id: SpanId,
    trace_state: TraceState,
    /// The caller's span, when it sent a `traceparent`.
    parent: Option<SpanContext>,
    head_sampled: bool,
    started: (SystemTime, Instant),
    phases: Mutex<Vec<Phase>>,
}

/// How a request ended, for the export decision.
pub struct Ending<'a> {
    pub status: u16,
    /// A gRPC call's status when it failed before any message.
    pub grpc_status: Option<&'a str>,
    pub target_latency: Option<Duration>,
}

impl RequestTrace {
    /// The `traceparent` the answer carries: this host's span in the trace.
    pub fn traceparent(&self) -> String {
        let flags = if self.head_sampled { 1 } else { 0 };
        format!(
            "00-{:032x}-{:016x}-{flags:02x}",
            self.trace_id, self.span_id
        )
    }

    pub fn tracestate(&self) -> String {
        self.trace_state.header()
    }

    /// This request's span, for links from work it shared with others (a batched run).
    pub fn span_context(&self) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            self.span_id,
            TraceFlags::SAMPLED,
            false,
            self.trace_state.clone(),
        )
    }

    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn note(&self, phase: Phase) {
        if let Ok(mut phases) = self.phases.lock() {
            phases.push(phase);
        }
    }

    /// Decides, and exports the spans if the trace is kept. Returns whether it was. `describe`
    /// gives the server span's name and attributes, built only for a trace that is kept.
    pub fn end(
        &self,
        tracer: &Tracer,
        ending: Ending<'_>,
        describe: impl FnOnce() -> (String, Vec<KeyValue>),
    ) -> bool {
        let elapsed = self.started.1.elapsed();
        let failed = ending.status >= 500
            || ending
                .grpc_status
                .is_some_and(|s| matches!(s, "2" | "4" | "8" | "13" | "14" | "15"));
        let slow = ending.target_latency.is_some_and(|target| elapsed > target);
        if !(self.head_sampled || failed || slow) {
            return false;
        }
        let at =
            |instant: Instant| self.started.0 + instant.saturating_duration_since(self.started.1);
        let context = |span_id| {
            SpanContext::new(
                self.trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                self.trace_state.clone(),
            )
        };
        let (name, mut attributes) = describe();
        attributes.push(KeyValue::new(
            "http.response.status_code",
            ending.status as i64,
        ));
        if !self.head_sampled {
            // Kept by the tail rule: say why, so sampled rates can still be estimated.
            let why = if failed { "error" } else { "slow" };
            attributes.push(KeyValue::new("aifn.trace.kept_for", why));
        }
        let phases = self
            .phases
            .lock()
            .map(|mut phases| std::mem::take(&mut *phases))
            .unwrap_or_default();
        for phase in phases {
            let mut links = SpanLinks::default();
            if let Some(run) = &phase.shared_run {
                run.export_once(tracer);
                links.links.push(Link::with_context(run.context.clone()));
            }
            tracer.export(SpanData {
                span_context: context(SpanId::from_bytes(
                    rand::random::<u64>().max(1).to_be_bytes(),
                )),
                parent_span_id: self.span_id,
                parent_span_is_remote: false,
                span_kind: SpanKind::Internal,
                name: phase.name.into(),
                start_time: at(phase.start),
                end_time: at(phase.end),
                attributes: phase.attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links,
                status: Status::Unset,
                instrumentation_scope: tracer.scope.clone(),
            });
        }
        tracer.export(SpanData {
            span_context: context(self.span_id),
            parent_span_id: self
                .parent
                .as_ref()
                .map_or(SpanId::INVALID, SpanContext::span_id),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: name.into(),
            start_time: self.started.0,
            end_time: self.started.0 + elapsed,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if failed {
                Status::error(format!("answered {}", ending.status))
            } else {
                Status::Unset
            },
            instrumentation_scope: tracer.scope.clone(),
        });
        true
    }
}

/// OTLP/HTTP's client: a blocking request from the SDK's export thread (ureq, as the host's other
/// outgoing calls).
#[derive(Debug)]
struct BlockingHttp {
    agent: ureq::Agent,
}

impl BlockingHttp {
    fn new() -> BlockingHttp {
        BlockingHttp {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(EXPORT_TIMEOUT))
                .build()
                .into(),
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: hyper::Request<bytes::Bytes>,
    ) -> Result<hyper::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = hyper::Request::from_parts(parts, body.to_vec());
        let mut response = self.agent.run(request)?;
        let status = response.status();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()?;
        Ok(hyper::Response::builder()
            .status(status)
            .body(bytes::Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_keeps_about_its_share_and_the_same_ids() {
        let ids: Vec<TraceId> = (0..20_000u128)
            .map(|i| {
                TraceId::from_bytes(
                    (i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).to_be_bytes(),
                )
            })
            .collect();
        let kept = ids.iter().filter(|id| ratio_keeps(**id, 0.1)).count();
        assert!((1_600..2_400).contains(&kept), "{kept}");
        assert!(ids.iter().all(|id| ratio_keeps(*id, 1.0)));
        assert!(!ids.iter().any(|id| ratio_keeps(*id, 0.0)));
    }

    #[test]
    fn otlp_http_urls_get_the_signals_path_unless_they_have_one() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/custom"), "http://c:4318/custom");
    }
}
