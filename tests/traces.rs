//! OpenTelemetry traces: a host exports its requests' spans to a real OTLP receiver (built here
//! from the OpenTelemetry protocol's own definitions, `opentelemetry-proto`), over gRPC and over
//! HTTP/protobuf. The spans have the request's phases under its server span, the function,
//! version and route as attributes, and continue the caller's `traceparent`. Head sampling's rate
//! changes while the host runs, and a failing request is exported even when it was not sampled.

use crate::support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    service: String,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        let value = self.span.attributes.iter().find(|kv| kv.key == key)?;
        Some(match value.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            AnyValue::DoubleValue(d) => d.to_string(),
            other => format!("{other:?}"),
        })
    }

    fn trace_id(&self) -> String {
        hex::encode(&self.span.trace_id)
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    /// Export calls, by transport.
    calls: Arc<Mutex<HashMap<&'static str, usize>>>,
}

impl Collector {
    fn take(&self, request: ExportTraceServiceRequest, transport: &'static str) {
        *self.calls.lock().unwrap().entry(transport).or_default() += 1;
        let mut spans = self.spans.lock().unwrap();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        span,
                        service: service.clone(),
                    });
                }
            }
        }
    }

    fn trace(&self, trace_id: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id() == trace_id)
            .cloned()
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A receiver on 127.0.0.1: OTLP/gRPC and OTLP/HTTP (`POST /v1/traces`, protobuf), each on its
/// own port. It runs until the test process ends.
fn start_collector() -> (Collector, String, String) {
    let collector = Collector::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (grpc, http) = runtime.block_on(async {
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (grpc, http)
    });
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let http_url = format!("http://{}", http.local_addr().unwrap());
    let routes = tonic::service::Routes::new(TraceServiceServer::new(collector.clone()));
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = grpc.accept().await else {
                continue;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request| {
                    use tonic::codegen::Service as _;
                    routes.clone().call(request)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                        .await;
            });
        }
    });
    let service = collector.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = http.accept().await else {
                continue;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let handler = hyper::service::service_fn(move |request| {
                    let service = service.clone();
                    async move { http_export(&service, request).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), handler)
                    .await;
            });
        }
    });
    // Keep the runtime (and its servers) for the rest of the test process.
    std::mem::forget(runtime);
    (collector, grpc_url, http_url)
}

async fn http_export(
    collector: &Collector,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt as _;
    use prost::Message as _;
    let status = if request.uri().path() != "/v1/traces" {
        404
    } else if request
        .headers()
        .get("content-type")
        .is_none_or(|v| v != "application/x-protobuf")
    {
        415
    } else {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        match ExportTraceServiceRequest::decode(body) {
            Ok(export) => {
                collector.take(export, "http");
                200
            }
            Err(_) => 400,
        }
    };
    let body = ExportTraceServiceResponse {
        partial_success: None,
    }
    .encode_to_vec();
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-protobuf")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap())
}

fn header<'r>(reply: &'r Reply, name: &str) -> Option<&'r str> {
    reply
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const CUSTOMER: &str = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;

/// Waits for a trace's server span and the phases under it.
fn wait_for_trace(collector: &Collector, trace_id: &str, phases: usize) -> Vec<Received> {
    wait_until(
        &format!("trace {trace_id} with {phases} phases"),
        Duration::from_secs(20),
        || {
            let spans = collector.trace(trace_id);
            let server = spans.iter().any(|s| s.span.kind == 2);
            (server && spans.len() > phases).then_some(spans)
        },
    )
}

#[test]
fn requests_are_traced_to_an_otlp_collector_over_grpc_and_http_continuing_the_callers_trace() {
    let (collector, grpc_url, http_url) = start_collector();
    for (protocol, url) in [("grpc", &grpc_url), ("http/protobuf", &http_url)] {
        let state = temp_dir("traces-export");
        let host = TestHost::start_with(
            &state,
            &[
                "--otlp-endpoint",
                url,
                "--otlp-protocol",
                protocol,
                "--trace-sample-rate",
                "1",
                "--service-name",
                "churn-service",
            ],
        );
        host.deploy(&bundled_spec("churn-predictor", &state, "churn.yaml", &[]));
        // The caller's trace: its id and its span, sampled.
        let trace_id = format!("{:032x}", rand_u128());
        let parent = "00f067aa0ba902b7";
        let reply = request(
            &host.url("/v1/churn"),
            "POST",
            CUSTOMER.as_bytes(),
            &[
                ("traceparent", &format!("00-{trace_id}-{parent}-01")),
                ("tracestate", "vendor=opaque"),
            ],
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let answered = header(&reply, "traceparent").expect("a traceparent answer");
        let fields: Vec<&str> = answered.split('-').collect();
        assert_eq!(fields.len(), 4, "{answered}");
        assert_eq!(
            (fields[0], fields[1], fields[3]),
            ("00", trace_id.as_str(), "01")
        );
        assert_ne!(fields[2], parent, "the host's own span");
        assert_eq!(header(&reply, "tracestate"), Some("vendor=opaque"));

        // admission, queue, preprocess, inference, postprocess.
        let spans = wait_for_trace(&collector, &trace_id, 5);
        let server = spans.iter().find(|s| s.span.kind == 2).unwrap();
        assert_eq!(hex::encode(&server.span.span_id), fields[2]);
        assert_eq!(hex::encode(&server.span.parent_span_id), parent);
        assert_eq!(server.span.name, "POST /v1/churn");
        assert_eq!(server.service, "churn-service");
        assert_eq!(
            server.attribute("aifn.function").as_deref(),
            Some("churn-predictor")
        );
        assert_eq!(server.attribute("aifn.version").as_deref(), Some("1"));
        assert_eq!(server.attribute("http.route").as_deref(), Some("/v1/churn"));
        assert_eq!(
            server.attribute("http.response.status_code").as_deref(),
            Some("200")
        );
        let mut names: Vec<&str> = spans
            .iter()
            .filter(|s| s.span.parent_span_id == server.span.span_id)
            .map(|s| s.span.name.as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "admission",
                "inference",
                "postprocess",
                "preprocess",
                "queue"
            ],
            "{protocol}"
        );
        let inference = spans.iter().find(|s| s.span.name == "inference").unwrap();
        assert_eq!(inference.attribute("aifn.batch.size").as_deref(), Some("1"));
        // The phases lie within the request and after one another.
        let by_name = |name: &str| spans.iter().find(|s| s.span.name == name).unwrap();
        let (queue, pre, post) = (
            by_name("queue"),
            by_name("preprocess"),
            by_name("postprocess"),
        );
        assert!(server.span.start_time_unix_nano <= by_name("admission").span.start_time_unix_nano);
        assert!(queue.span.end_time_unix_nano <= pre.span.start_time_unix_nano);
        assert!(pre.span.end_time_unix_nano <= inference.span.start_time_unix_nano);
        assert!(post.span.end_time_unix_nano <= server.span.end_time_unix_nano);
        // The latency sample carries the trace as its exemplar.
        let metrics = host.metrics().body;
        assert!(
            metrics.lines().any(
                |l| l.starts_with("http_server_request_duration_seconds_bucket")
                    && l.contains(&format!("# {{trace_id=\"{trace_id}\"}}"))
            ),
            "no exemplar for {trace_id}"
        );
        let transport = if protocol == "grpc" { "grpc" } else { "http" };
        assert!(
            collector
                .calls
                .lock()
                .unwrap()
                .get(transport)
                .copied()
                .unwrap_or(0)
                > 0
        );
    }
}

#[test]
fn failures_are_exported_unsampled_and_the_rate_changes_while_the_host_runs() {
    let (collector, grpc_url, _) = start_collector();
    let state = temp_dir("traces-tail");
    let host = TestHost::start_with(
        &state,
        &[
            "--otlp-endpoint",
            &grpc_url,
            "--otlp-protocol",
            "grpc",
            "--trace-sample-rate",
            "0",
        ],
    );
    let dir = state.with_extension("specs");
    std::fs::create_dir_all(&dir).unwrap();
    host.deploy(&hostile_spec(&dir, &[]));
    let trace_of = |reply: &Reply| {
        let traceparent = header(reply, "traceparent")
            .expect("a traceparent")
            .to_string();
        let fields: Vec<String> = traceparent.split('-').map(String::from).collect();
        (fields[1].clone(), fields[3].clone())
    };
    // Not sampled: the answer says so, and nothing is exported...
    let fine = host.post("/v1/hostile", "fine");
    assert_eq!(fine.status, 200, "{}", fine.body);
    let (fine_trace, flags) = trace_of(&fine);
    assert_eq!(flags, "00");
    // ...but a failure is, whatever the rate.
    let failed = host.post("/v1/hostile", "trap");
    assert_eq!(failed.status, 500, "{}", failed.body);
    let (failed_trace, _) = trace_of(&failed);
    let spans = wait_for_trace(&collector, &failed_trace, 1);
    let server = spans.iter().find(|s| s.span.kind == 2).unwrap();
    assert_eq!(
        server.attribute("aifn.trace.kept_for").as_deref(),
        Some("error")
    );
    assert_eq!(
        server.span.status.as_ref().map(|s| s.code),
        Some(2),
        "status error"
    );
    // One queue, exported in order: the request before the failure would have arrived by now.
    assert!(collector.trace(&fine_trace).is_empty());

    // Every request, from now on.
    let shown: aifn_host::api::Tracing =
        serde_json::from_str(&host.cli_ok(&["tracing", "--sample-rate", "1"])).unwrap();
    assert_eq!(shown.sample_rate, 1.0);
    let sampled = host.post("/v1/hostile", "fine");
    let (sampled_trace, flags) = trace_of(&sampled);
    assert_eq!(flags, "01");
    wait_for_trace(&collector, &sampled_trace, 1);
    let refused = host.cli(&["tracing", "--sample-rate", "2"]);
    assert!(!refused.status.success());
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut high = std::collections::hash_map::RandomState::new().build_hasher();
    high.write_u8(1);
    let mut low = std::collections::hash_map::RandomState::new().build_hasher();
    low.write_u8(2);
    ((high.finish() as u128) << 64) | low.finish() as u128 | 1
}

#[test]
fn a_batched_run_is_one_span_linked_to_every_request_it_served() {
    let (collector, _, http_url) = start_collector();
    let state = temp_dir("traces-batch");
    let host = TestHost::start_with(
        &state,
        &["--otlp-endpoint", &http_url, "--trace-sample-rate", "1"],
    );
    // One replica, so that concurrent requests queue behind its inferences and merge.
    host.deploy(&bundled_spec(
        "text-embedder",
        &state,
        "text-embedder.yaml",
        &[(
            "max_batch_size: 16\n    batch_padding: zeros",
            "max_batch_size: 8\n    batch_padding: zeros",
        )],
    ));
    let batched = |collector: &Collector| {
        let spans = collector.spans.lock().unwrap();
        spans
            .iter()
            .find(|s| s.span.name == "batched inference" && s.span.links.len() > 1)
            .cloned()
    };
    // Bounded: 8 clients, at most 25 requests each, until a merged run has been seen.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        // Stops the clients also when the wait below fails.
        let _stop = StopOnDrop(&stop);
        for client in 0..8 {
            let (host, stop) = (&host, &stop);
            scope.spawn(move || {
                for i in 0..25 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let text = format!("client {client} asks question number {i} about batching");
                    let reply = host.post(
                        "/v1/embeddings",
                        &serde_json::json!({ "inputs": text }).to_string(),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.body);
                }
            });
        }
        wait_until("a batched run's span", Duration::from_secs(30), || {
            batched(&collector)
        });
    });
    let run = batched(&collector).unwrap();
    assert_eq!(
        run.attribute("aifn.batch.size"),
        Some(run.span.links.len().to_string())
    );
    // Every link names a request's server span, whose inference links back to the run.
    for link in &run.span.links {
        let trace_id = hex::encode(&link.trace_id);
        let spans = wait_for_trace(&collector, &trace_id, 2);
        let server = spans.iter().find(|s| s.span.kind == 2).unwrap();
        assert_eq!(server.span.span_id, link.span_id);
        let inference = spans.iter().find(|s| s.span.name == "inference").unwrap();
        assert!(inference
            .span
            .links
            .iter()
            .any(|l| l.span_id == run.span.span_id && l.trace_id == run.span.trace_id));
    }
}
