//! Every metric the host exposes, defined in one place; `/metrics` renders them for Prometheus.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub function: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VariantLabels {
    pub function: String,
    pub variant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub function: String,
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub function: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub function: String,
    pub route: String,
    /// Why: for auth failures `missing`, `invalid`, `forbidden` or `address`; for rate limits
    /// `caller` or `host`; for cache lookups `hit`, `miss` or `bypass`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// Which limit: `connections`, `body_bytes`, `tensor_elements` (with `v2.max_shape`),
    /// `module_output_bytes`.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub function: String,
    pub version: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    pub function: String,
    /// `concept_drift`, `accuracy`, `latency` or `errors`.
    pub alert: &'static str,
    /// `fired` or `cleared`.
    pub state: &'static str,
}

/// OpenTelemetry's HTTP server metric (semantic conventions: `http.server.request.duration`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpServerLabels {
    /// The method, or `_OTHER` for one HTTP does not define.
    pub http_request_method: &'static str,
    /// The route template (`/v2/models/{model}/infer`, a function's declared route), never the
    /// raw path, so that the label stays bounded.
    pub http_route: String,
    pub http_response_status_code: u16,
}

/// The trace a latency sample came from, as an OpenMetrics exemplar.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type ExemplarHistogramFamily<L> =
    Family<L, HistogramWithExemplars<TraceExemplar>, fn() -> HistogramWithExemplars<TraceExemplar>>;

/// The bucket boundaries OpenTelemetry advises for `http.server.request.duration`, in seconds.
const HTTP_SERVER_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn latency_histogram() -> Histogram {
    // 50 µs to about 26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

pub struct Metrics {
    registry: Registry,
    /// Metrics named by OpenTelemetry's semantic conventions, without aifn's prefix.
    semconv: Registry,
    pub http_server_duration: ExemplarHistogramFamily<HttpServerLabels>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: HistogramFamily<FunctionLabels>,
    pub stage_seconds: HistogramFamily<StageLabels>,
    pub batch_size: HistogramFamily<FunctionLabels>,
    pub variants: Family<VariantLabels, Counter>,
    pub overloaded: Family<FunctionLabels, Counter>,
    pub replicas: Family<FunctionLabels, Gauge>,
    pub active_version: Family<FunctionLabels, Gauge>,
    pub target_latency: Family<FunctionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub deploys: Counter,
    pub failed_deploys: Counter,
    pub auth_failures: Family<PolicyLabels, Counter>,
    pub rate_limited: Family<PolicyLabels, Counter>,
    pub cache_lookups: Family<PolicyLabels, Counter>,
    pub cache_evictions: Family<CacheLabels, Counter>,
    pub limit_hits: Family<LimitLabels, Counter>,
    pub connections: Gauge,
    pub drift_score: Family<VersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub drifting: Family<VersionLabels, Gauge>,
    pub monitor_dropped: Family<VersionLabels, Gauge>,
    pub alerts: Family<AlertLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("aifn");
        let mut semconv = Registry::default();
        let http_server_duration: ExemplarHistogramFamily<HttpServerLabels> =
            Family::new_with_constructor(|| {
                HistogramWithExemplars::new(HTTP_SERVER_DURATION_BUCKETS.into_iter())
            });
        semconv.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests (OpenTelemetry's http.server.request.duration)",
            prometheus_client::registry::Unit::Seconds,
            http_server_duration.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by function, route and HTTP status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer",
            request_seconds.clone(),
        );
        let stage_seconds: HistogramFamily<StageLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "stage_duration_seconds",
            "Time in each stage of a request: queue, preprocess, inference, postprocess",
            stage_seconds.clone(),
        );
        let batch_size: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 12)));
        registry.register(
            "batch_size",
            "Requests in each inference (dynamic batching; 1 when a request ran alone), observed per request",
            batch_size.clone(),
        );
        let variants = Family::<VariantLabels, Counter>::default();
        registry.register(
            "variant_requests",
            "Requests answered by each model variant: primary, or fallback under peak load",
            variants.clone(),
        );
        let overloaded = Family::<FunctionLabels, Counter>::default();
        registry.register(
            "overloaded",
            "Requests refused because every instance was busy and the queue full",
            overloaded.clone(),
        );
        let replicas = Family::<FunctionLabels, Gauge>::default();
        registry.register(
            "replicas",
            "Instances serving each function",
            replicas.clone(),
        );
        let active_version = Family::<FunctionLabels, Gauge>::default();
        registry.register(
            "active_version",
            "Version number serving each function",
            active_version.clone(),
        );
        let target_latency =
            Family::<FunctionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "target_latency",
            "The serving version's scaling.target_latency (absent when its spec sets none)",
            prometheus_client::registry::Unit::Seconds,
            target_latency.clone(),
        );
        let deploys = Counter::default();
        registry.register(
            "deploys",
            "Deploys that activated a new version",
            deploys.clone(),
        );
        let failed_deploys = Counter::default();
        registry.register(
            "failed_deploys",
            "Deploys refused or failed (nothing changed)",
            failed_deploys.clone(),
        );
        let auth_failures = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by an endpoint's access rules, by reason",
            auth_failures.clone(),
        );
        let rate_limited = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused with 429 by a rate limit (the caller's or the host's)",
            rate_limited.clone(),
        );
        let cache_lookups = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Response cache lookups: hit, miss (the function ran) or bypass (Cache-Control: no-cache)",
            cache_lookups.clone(),
        );
        let cache_evictions = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_evictions",
            "Cached responses dropped for space or age",
            cache_evictions.clone(),
        );
        let limit_hits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "limit_hits",
            "Requests or connections refused by one of the host's limits, by limit",
            limit_hits.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open data-plane connections",
            connections.clone(),
        );
        let drift_score =
            Family::<VersionLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "drift_score",
            "Largest PSI among a version's monitored features at its last evaluation",
            drift_score.clone(),
        );
        let drifting = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "drifting_features",
            "Monitored features whose drift alert is firing",
            drifting.clone(),
        );
        let monitor_dropped = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "monitor_samples_dropped",
            "Samples the monitor had no room for (its queue was full), since the version loaded",
            monitor_dropped.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "monitor_alerts",
            "Monitoring alerts that fired or cleared",
            alerts.clone(),
        );
        Metrics {
            semconv,
            http_server_duration,
            drift_score,
            drifting,
            monitor_dropped,
            alerts,
            limit_hits,
            connections,
            auth_failures,
            rate_limited,
            cache_lookups,
            cache_evictions,
            registry,
            requests,
            request_seconds,
            stage_seconds,
            batch_size,
            variants,
            overloaded,
            replicas,
            active_version,
            target_latency,
            deploys,
            failed_deploys,
        }
    }
}

impl Metrics {
    /// One data-plane answer in OpenTelemetry's HTTP server histogram; `trace_id` (a sampled
    /// trace's) becomes the sample's exemplar.
    pub fn observe_http(
        &self,
        method: &hyper::Method,
        route: String,
        status: u16,
        elapsed: Duration,
        trace_id: Option<String>,
    ) {
        let http_request_method = match *method {
            hyper::Method::GET => "GET",
            hyper::Method::POST => "POST",
            hyper::Method::PUT => "PUT",
            hyper::Method::DELETE => "DELETE",
            hyper::Method::HEAD => "HEAD",
            hyper::Method::OPTIONS => "OPTIONS",
            hyper::Method::PATCH => "PATCH",
            hyper::Method::CONNECT => "CONNECT",
            hyper::Method::TRACE => "TRACE",
            _ => "_OTHER",
        };
        self.http_server_duration
            .get_or_create(&HttpServerLabels {
                http_request_method,
                http_route: route,
                http_response_status_code: status,
            })
            .observe(
                elapsed.as_secs_f64(),
                trace_id.map(|trace_id| TraceExemplar { trace_id }),
            );
    }

    /// A version's latest monitoring figures.
    pub fn observe_monitor(
        &self,
        function: &str,
        version: u64,
        monitor: &crate::monitor::VersionMonitor,
    ) {
        let labels = VersionLabels {
            function: function.to_string(),
            version,
        };
        let Some((score, drifting)) = monitor.drift_summary() else {
            return;
        };
        self.drift_score.get_or_create(&labels).set(score);
        self.drifting.get_or_create(&labels).set(drifting as i64);
        self.monitor_dropped
            .get_or_create(&labels)
            .set(monitor.dropped.load(std::sync::atomic::Ordering::Relaxed) as i64);
    }

    pub fn count_alert(&self, function: &str, alert: &'static str, state: &'static str) {
        self.alerts
            .get_or_create(&AlertLabels {
                function: function.to_string(),
                alert,
                state,
            })
            .inc();
    }

    /// Counts one refusal by the limit named `limit`.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabels { limit }).inc();
    }
}

/// One endpoint's metric handles, made once at load so a request counts without building labels.
pub struct EndpointMetrics {
    ok: Counter,
    latency: Histogram,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_bypass: Counter,
    metrics: std::sync::Arc<Metrics>,
    function: String,
    route: String,
}

impl EndpointMetrics {
    pub fn answered(&self, status: u16, elapsed: Duration) {
        if status == 200 {
            self.ok.inc();
        } else {
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    function: self.function.clone(),
                    route: self.route.clone(),
                    status,
                })
                .inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    pub fn cache_lookup(&self, outcome: &'static str) {
        match outcome {
            "hit" => self.cache_hit.inc(),
            "miss" => self.cache_miss.inc(),
            _ => self.cache_bypass.inc(),
        };
    }
}

impl Metrics {
    pub fn endpoint(self: &std::sync::Arc<Self>, function: &str, route: &str) -> EndpointMetrics {
        let policy = |outcome| {
            self.cache_lookups
                .get_or_create(&PolicyLabels {
                    function: function.to_string(),
                    route: route.to_string(),
                    outcome,
                })
                .clone()
        };
        EndpointMetrics {
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    function: function.to_string(),
                    route: route.to_string(),
                    status: 200,
                })
                .clone(),
            latency: self
                .request_seconds
                .get_or_create(&FunctionLabels {
                    function: function.to_string(),
                })
                .clone(),
            cache_hit: policy("hit"),
            cache_miss: policy("miss"),
            cache_bypass: policy("bypass"),
            metrics: self.clone(),
            function: function.to_string(),
            route: route.to_string(),
        }
    }

    /// Counts an answer on a route that has no [`EndpointMetrics`] (the v2 protocol).
    pub fn count_request(&self, function: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                function: function.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&FunctionLabels {
                function: function.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut text = String::new();
        encode_registry(&mut text, &self.registry)
            .and_then(|()| encode_registry(&mut text, &self.semconv))
            .and_then(|()| encode_eof(&mut text))
            .expect("writing to a String cannot fail");
        text
    }

    pub fn count_policy(
        family: &Family<PolicyLabels, Counter>,
        function: &str,
        route: &str,
        outcome: &'static str,
    ) {
        family
            .get_or_create(&PolicyLabels {
                function: function.to_string(),
                route: route.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn observe_stage(&self, function: &str, stage: &'static str, duration: Duration) {
        if !duration.is_zero() {
            self.stage_seconds
                .get_or_create(&StageLabels {
                    function: function.to_string(),
                    stage,
                })
                .observe(duration.as_secs_f64());
        }
    }

    pub fn observe_batch(&self, function: &str, size: usize) {
        if size > 0 {
            self.batch_size
                .get_or_create(&FunctionLabels {
                    function: function.to_string(),
                })
                .observe(size as f64);
        }
    }

    pub fn function_loaded(
        &self,
        function: &str,
        version: u64,
        replicas: usize,
        target_latency: Option<Duration>,
    ) {
        let labels = FunctionLabels {
            function: function.to_string(),
        };
        self.replicas.get_or_create(&labels).set(replicas as i64);
        self.active_version
            .get_or_create(&labels)
            .set(version as i64);
        match target_latency {
            Some(target) => {
                self.target_latency
                    .get_or_create(&labels)
                    .set(target.as_secs_f64());
            }
            None => {
                self.target_latency.remove(&labels);
            }
        }
    }

    pub fn count_variant(&self, function: &str, variant: &'static str) {
        self.variants
            .get_or_create(&VariantLabels {
                function: function.to_string(),
                variant,
            })
            .inc();
    }

    pub fn set_replicas(&self, function: &str, replicas: usize) {
        self.replicas
            .get_or_create(&FunctionLabels {
                function: function.to_string(),
            })
            .set(replicas as i64);
    }

    pub fn function_removed(&self, function: &str) {
        let labels = FunctionLabels {
            function: function.to_string(),
        };
        self.replicas.remove(&labels);
        self.active_version.remove(&labels);
        self.target_latency.remove(&labels);
    }
}
