//! Monitoring of one function version, as its `spec.monitoring` asks: what each request carried
//! and what the model answered, compared with a reference on a thread of its own.
//!
//! The request path only hands a sample over: the body (a reference-counted buffer, not a copy)
//! and the few numbers read from the model's tensors, into a bounded queue it never waits on. A
//! full queue drops the sample and counts it. The monitor thread parses the body, bins every
//! feature (a binary search each), keeps the sliding window, and evaluates drift every
//! `interval`. Alerts that fire or clear wait in `pending` for the control plane, which records
//! them and acts ([`crate::control`]).

use crate::labels::{LabelError, Persist, Predictions, ToLabel};
use crate::records::PredictionRecord;
use aifn_model::Signature;
use aifn_monitor::alarm::Alarm;
use aifn_monitor::alarm::Transition;
use aifn_monitor::drift::{DriftMonitor, Evaluation, Settings};
use aifn_monitor::Value;
use aifn_spec::{AlertOn, Monitoring};
use aifn_tensor::{Tensor, TensorData};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Samples waiting for the monitor thread at most; past this they are dropped and counted.
const QUEUE: usize = 8192;
/// Columns of one tensor monitored at most (an embedding's 384 would cost more than they tell).
const MAX_COLUMNS: usize = 32;
/// Recent inputs kept for a retraining webhook.
const RECENT_INPUTS: usize = 20;
/// How often the monitor thread takes the samples that queued (the queue holds 8,192: room for
/// 400,000 requests a second).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// Samples a second a version's monitor takes at most when its answers get no labels: above it,
/// every k-th request is a sample (k set each second from the request rate). Drift figures over a
/// window of such a sample are unbiased, and 1,000 a second is ample for 10 bins, while the
/// monitor's CPU stays small at any load.
const MAX_SAMPLES_PER_SECOND: u64 = 1000;
/// How often new predictions are written to the database (what a `kill -9` may lose).
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Evaluations kept in the report's history: at a tenth of the window each, the last 12 windows.
const HISTORY: usize = 120;
/// Alerts kept per version for its report.
const ALERTS_KEPT: usize = 100;

/// Where a monitored feature's value comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A field of the JSON request body, by its dotted path.
    Body(Vec<String>),
    /// Column `column` of a model input's first row.
    Input { tensor: String, column: usize },
    /// Column `column` of a model output's first row.
    Output { tensor: String, column: usize },
}

/// The features of a version, in a fixed order: the spec's body fields (or every model input
/// column), then every model output column.
#[derive(Debug, Clone)]
pub struct Features {
    names: Vec<String>,
    sources: Vec<Source>,
    /// Whether any feature is a field of the request body (the monitor thread parses it then).
    reads_body: bool,
    /// The feature kept as an answer's prediction for its label: the last column of the last
    /// floating-point output (a binary classifier's score for the positive class).
    prediction: Option<usize>,
}

impl Features {
    pub fn new(spec: &Monitoring, signature: &Signature) -> Features {
        let mut features = Features {
            names: Vec::new(),
            sources: Vec::new(),
            reads_body: !spec.features.is_empty(),
            prediction: None,
        };
        if spec.features.is_empty() {
            for port in &signature.inputs {
                features.columns("input", port, |tensor, column| Source::Input {
                    tensor,
                    column,
                });
            }
        } else {
            for path in &spec.features {
                features.names.push(path.clone());
                features
                    .sources
                    .push(Source::Body(path.split('.').map(str::to_string).collect()));
            }
        }
        for port in &signature.outputs {
            let before = features.sources.len();
            features.columns("output", port, |tensor, column| Source::Output {
                tensor,
                column,
            });
            let float = matches!(
                port.dtype,
                aifn_tensor::DType::F32 | aifn_tensor::DType::F64
            );
            if float && features.sources.len() > before {
                features.prediction = Some(features.sources.len() - 1);
            }
        }
        features
    }

    /// `KIND:NAME` for a tensor of one value per row, `KIND:NAME[i]` per column otherwise. A
    /// tensor whose last dimension varies (token ids) has no fixed columns and is not monitored.
    fn columns(
        &mut self,
        kind: &str,
        port: &aifn_model::Port,
        source: impl Fn(String, usize) -> Source,
    ) {
        if port.dtype == aifn_tensor::DType::String {
            return;
        }
        let columns = match port.shape.as_slice() {
            [] | [_] => 1,
            [_, rest @ ..] if rest.iter().all(|&d| d > 0) => {
                rest.iter().product::<i64>().min(MAX_COLUMNS as i64) as usize
            }
            _ => return,
        };
        for column in 0..columns {
            self.names.push(if port.shape.len() <= 1 {
                format!("{kind}:{}", port.name)
            } else {
                format!("{kind}:{}[{column}]", port.name)
            });
            self.sources.push(source(port.name.clone(), column));
        }
    }

    fn reads_inputs(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, Source::Input { .. }))
    }

    /// The values of one reference example: `{"request": {...}, "inputs": {...}, "outputs": {...}}`,
    /// tensors as a row (`[0.8, 0.2]`) or rows (`[[0.8, 0.2]]`, the first is taken).
    fn values_of_example(&self, example: &serde_json::Value) -> Vec<Value> {
        self.sources
            .iter()
            .map(|source| match source {
                Source::Body(path) => body_value(example.get("request"), path),
                Source::Input { tensor, column } => {
                    example_column(example.get("inputs"), tensor, *column)
                }
                Source::Output { tensor, column } => {
                    example_column(example.get("outputs"), tensor, *column)
                }
            })
            .collect()
    }
}

fn body_value(body: Option<&serde_json::Value>, path: &[String]) -> Value {
    let mut value = body;
    for key in path {
        value = match value {
            Some(serde_json::Value::Object(map)) => map.get(key),
            Some(serde_json::Value::Array(items)) => {
                key.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
    }
    Value::from_json(value)
}

fn example_column(tensors: Option<&serde_json::Value>, name: &str, column: usize) -> Value {
    let Some(value) = tensors.and_then(|t| t.get(name)) else {
        return Value::Missing;
    };
    let row = match value {
        serde_json::Value::Array(items) if items.first().is_some_and(|f| f.is_array()) => &items[0],
        other => other,
    };
    match row {
        serde_json::Value::Array(items) => Value::from_json(items.get(column)),
        scalar if column == 0 => Value::from_json(Some(scalar)),
        _ => Value::Missing,
    }
}

/// Column `column` of a tensor's first row, as a number.
fn tensor_column(tensor: &Tensor, column: usize) -> Value {
    let x = match &tensor.data {
        TensorData::F32(v) => v.get(column).map(|&x| f64::from(x)),
        TensorData::F64(v) => v.get(column).copied(),
        TensorData::I32(v) => v.get(column).map(|&x| f64::from(x)),
        TensorData::I64(v) => v.get(column).map(|&x| x as f64),
        TensorData::U8(v) => v.get(column).map(|&x| f64::from(x)),
        TensorData::Bool(v) => v.get(column).map(|&x| if x { 1.0 } else { 0.0 }),
        TensorData::String(v) => {
            return v
                .get(column)
                .map_or(Value::Missing, |s| Value::Category(s.clone()))
        }
    };
    x.map_or(Value::Missing, Value::Number)
}

/// One request, handed to the monitor thread.
struct Sample {
    at: Instant,
    body: Option<Bytes>,
    request_id: Option<String>,
    /// Values of the tensor features, in feature order (`None`: not observed in this sample; body
    /// features are filled in by the monitor thread).
    tensors: Vec<Option<Value>>,
}

/// How an instance pool feeds a version's monitor.
#[derive(Clone)]
pub struct Tap {
    pub monitor: Arc<VersionMonitor>,
    /// `false` for the fallback's pool: its model's outputs are not the monitored model's.
    pub records_outputs: bool,
}

/// What the request path keeps of a request's inputs until its outputs are known.
pub struct Pending {
    body: Option<Bytes>,
    request_id: Option<String>,
    inputs: Vec<Option<Value>>,
}

/// An alert that fired or cleared, with the figures that moved it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertEvent {
    /// `concept_drift`, `latency` or `errors`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Which rules of `spec.monitoring.alerts` it answers to.
    #[serde(skip)]
    pub on: AlertOn,
    pub state: Transition,
    pub severity: &'static str,
    pub timestamp: String,
    pub at_ms: u64,
    /// The features that drifted (for drift alerts).
    pub features: Vec<String>,
    pub figures: serde_json::Value,
}

impl Shared {
    /// Keeps an alert for the report and for the control plane.
    fn keep(&mut self, event: AlertEvent) {
        if self.alerts.len() >= ALERTS_KEPT {
            self.alerts.pop_front();
        }
        self.alerts.push_back(event.clone());
        self.pending.push(event);
    }
}

/// What the report shows and the control plane reads.
struct Shared {
    latest: Option<Evaluation>,
    evaluations: u64,
    /// The last evaluations' drift score and sample count, oldest first.
    history: VecDeque<serde_json::Value>,
    alerts: VecDeque<AlertEvent>,
    /// Alerts not yet handed to the control plane.
    pending: Vec<AlertEvent>,
    /// Request bodies as they came (parsed only when asked for).
    recent_inputs: VecDeque<Bytes>,
    /// Answers kept for their labels.
    predictions: Predictions,
}

pub struct VersionMonitor {
    pub spec: Monitoring,
    features: Arc<Features>,
    queue: Sender<Sample>,
    shared: Arc<Mutex<Shared>>,
    pub recorded: AtomicU64,
    pub dropped: AtomicU64,
    /// Whether a drift alert with `action: fallback` holds traffic on the fallback now.
    pub drift_fallback: AtomicBool,
    /// Requests seen, and how many of them make one sample (1: all; more under heavy load).
    seen: Arc<AtomicU64>,
    stride: Arc<AtomicU64>,
    /// The latency and error-rate alerts: their thresholds and alarms, and when they were last
    /// evaluated.
    service: Mutex<ServiceAlarms>,
}

/// Alarms on what the version answered (not on what it was sent): p95 latency and error rate.
struct ServiceAlarms {
    rules: Vec<(AlertOn, f64, Alarm)>,
    last: Instant,
}

/// A reference that cannot be read: the deploy fails with this.
#[derive(Debug, thiserror::Error)]
#[error("spec.monitoring.reference line {line}: {message}")]
pub struct ReferenceError {
    line: usize,
    message: String,
}

impl VersionMonitor {
    /// Starts monitoring a version: `reference` is the JSON Lines reference sample, if any.
    /// `target_latency` is the default threshold of a latency alert that sets none.
    pub fn start(
        spec: Monitoring,
        signature: &Signature,
        reference: Option<&[u8]>,
        target_latency: Option<Duration>,
        persist: Option<Persist>,
        label: String,
    ) -> Result<Arc<VersionMonitor>, ReferenceError> {
        let features = Arc::new(Features::new(&spec, signature));
        let mut columns: Vec<Vec<Value>> = vec![Vec::new(); features.names.len()];
        if let Some(reference) = reference {
            let text = std::str::from_utf8(reference).map_err(|e| ReferenceError {
                line: 0,
                message: format!("not UTF-8: {e}"),
            })?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let example: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| ReferenceError {
                        line: i + 1,
                        message: format!("not JSON: {e}"),
                    })?;
                for (column, value) in columns.iter_mut().zip(features.values_of_example(&example))
                {
                    column.push(value);
                }
            }
        }
        let settings = Settings {
            window: spec.window.0,
            bins: spec.bins as usize,
            psi: spec.drift.psi,
            kl: spec.drift.kl,
            consecutive: spec.consecutive,
            min_samples: u64::from(spec.min_samples),
            baseline: spec.baseline as usize,
        };
        // A feature the reference never gives a value for takes the first requests instead.
        for column in &mut columns {
            if column.iter().all(|v| *v == Value::Missing) {
                column.clear();
            }
        }
        let drift = DriftMonitor::new(settings, features.names.clone(), columns);
        let (queue, samples) = crossbeam_channel::bounded(QUEUE);
        let mut rules = Vec::new();
        for rule in &spec.alerts {
            let threshold = match rule.on {
                AlertOn::Latency => rule.threshold.or(target_latency.map(|t| t.as_secs_f64())),
                AlertOn::Errors => rule.threshold,
                AlertOn::Drift => continue,
                AlertOn::Accuracy => rule.threshold,
            };
            match threshold {
                Some(threshold) => rules.push((rule.on, threshold, Alarm::default())),
                None => {
                    tracing::warn!(function = %label, "an `on: latency` alert without a threshold or a target_latency never fires")
                }
            }
        }
        // Without `labels`, nothing is kept (and a label for this version is a 404).
        let labels = spec.labels.clone().unwrap_or(aifn_spec::LabelPolicy {
            max_predictions: 0,
            ..Default::default()
        });
        let predictions = Predictions::new(
            labels.ttl.0,
            labels.max_predictions as usize,
            persist.filter(|_| spec.labels.is_some()),
        );
        let (seen, stride) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(1)));
        let monitor = Arc::new(VersionMonitor {
            spec,
            features: features.clone(),
            queue,
            shared: Arc::new(Mutex::new(Shared {
                latest: None,
                evaluations: 0,
                history: VecDeque::new(),
                alerts: VecDeque::new(),
                pending: Vec::new(),
                recent_inputs: VecDeque::new(),
                predictions,
            })),
            recorded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            drift_fallback: AtomicBool::new(false),
            seen: seen.clone(),
            stride: stride.clone(),
            service: Mutex::new(ServiceAlarms {
                rules,
                last: Instant::now(),
            }),
        });
        let interval = monitor
            .spec
            .interval
            .map_or(monitor.spec.window.0 / 10, |i| i.0)
            .max(Duration::from_millis(100));
        let worker = Worker {
            drift,
            features,
            samples,
            shared: monitor.shared.clone(),
            interval,
            alerting: false,
            to_keep: Vec::new(),
            last_body: None,
            // Every answer is a sample when it may get a label.
            sampling: monitor.spec.labels.is_none().then(|| Sampling {
                seen,
                stride,
                last: (Instant::now(), 0),
            }),
        };
        std::thread::Builder::new()
            .name(format!("monitor-{label}"))
            .spawn(move || {
                yield_to_serving();
                worker.run()
            })
            .expect("spawning a monitor thread");
        Ok(monitor)
    }

    /// Whether answers are kept for labels (the spec has `labels` and the model a prediction):
    /// only then does a request's id travel with its sample.
    pub fn keeps_predictions(&self) -> bool {
        self.spec.labels.is_some() && self.features.prediction.is_some()
    }

    pub fn feature_names(&self) -> &[String] {
        &self.features.names
    }

    /// What to keep of a request before the model runs: its body (shared, not copied) when
    /// body fields are monitored, and its input columns when those are.
    pub fn before(
        &self,
        body: Option<&Bytes>,
        inputs: &[Tensor],
        request_id: Option<String>,
    ) -> Option<Pending> {
        // Under load only every `stride`-th request is a sample (see `MAX_SAMPLES_PER_SECOND`).
        let stride = self.stride.load(Ordering::Relaxed).max(1);
        if !self
            .seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(stride)
        {
            return None;
        }
        let features = &self.features;
        let inputs = if features.reads_inputs() {
            features
                .sources
                .iter()
                .map(|source| match source {
                    Source::Input { tensor, column } => Some(
                        inputs
                            .iter()
                            .find(|t| &t.name == tensor)
                            .map_or(Value::Missing, |t| tensor_column(t, *column)),
                    ),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(Pending {
            // The body also goes to a labelling process that asks which answers to label.
            body: body.cloned(),
            request_id: request_id.filter(|_| self.keeps_predictions()),
            inputs,
        })
    }

    /// Hands a request's sample to the monitor thread, or drops it if the queue is full.
    /// `outputs` are the model's, or `None` when another model answered (the fallback): its
    /// outputs say nothing of this model's, but the inputs still count.
    pub fn record(&self, pending: Pending, outputs: Option<&[Tensor]>) {
        let Pending {
            body,
            request_id,
            mut inputs,
        } = pending;
        let features = &self.features;
        if inputs.is_empty() {
            inputs = vec![None; features.sources.len()];
        }
        if let Some(outputs) = outputs {
            for (value, source) in inputs.iter_mut().zip(&features.sources) {
                if let Source::Output { tensor, column } = source {
                    *value = Some(
                        outputs
                            .iter()
                            .find(|t| &t.name == tensor)
                            .map_or(Value::Missing, |t| tensor_column(t, *column)),
                    );
                }
            }
        }
        // The fallback's answers are not this model's predictions.
        let request_id = request_id.filter(|_| outputs.is_some());
        let sample = Sample {
            at: Instant::now(),
            body,
            request_id,
            tensors: inputs,
        };
        match self.queue.try_send(sample) {
            Ok(()) => {
                self.recorded.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Evaluates the latency and error-rate alerts on `figures` (the version's answers over the
    /// window) once per interval, with the same hysteresis and minimum sample as drift.
    pub fn evaluate_service(&self, figures: impl FnOnce() -> crate::records::Figures) {
        let interval = self
            .spec
            .interval
            .map_or(self.spec.window.0 / 10, |i| i.0)
            .max(Duration::from_millis(100));
        let mut service = self.service.lock().expect("monitor lock");
        if service.rules.is_empty() || service.last.elapsed() < interval {
            return;
        }
        let min_samples = u64::from(self.spec.min_samples);
        let Ok(shared) = self.shared.try_lock() else {
            return; // the monitor thread holds it: evaluated at the next call
        };
        service.last = Instant::now();
        let accuracy = shared.predictions.accuracy(self.spec.window.0);
        drop(shared);
        // Only now, once per interval: the window's answers are many to go through.
        let figures = &figures();
        let mut events = Vec::new();
        for (on, threshold, alarm) in &mut service.rules {
            // Each figure as "over its threshold is bad": accuracy as its shortfall.
            let (kind, figure, limit, samples) = match on {
                AlertOn::Latency => (
                    "latency",
                    figures.p95_ms.map_or(0.0, |ms| ms / 1e3),
                    *threshold,
                    figures.requests,
                ),
                AlertOn::Accuracy => match accuracy {
                    Some((accuracy, labels)) => {
                        ("accuracy", 1.0 - accuracy, 1.0 - *threshold, labels as u64)
                    }
                    None => continue,
                },
                _ => ("errors", figures.error_rate(), *threshold, figures.requests),
            };
            if samples < min_samples {
                continue;
            }
            if let Some(state) = alarm.evaluate(figure, limit, self.spec.consecutive) {
                let now = SystemTime::now();
                events.push(AlertEvent {
                    kind,
                    on: *on,
                    state,
                    severity: if figure > 2.0 * limit {
                        "high"
                    } else {
                        "medium"
                    },
                    timestamp: humantime::format_rfc3339_seconds(now).to_string(),
                    at_ms: crate::records::now_ms(),
                    features: Vec::new(),
                    figures: serde_json::json!({
                        kind: if *on == AlertOn::Accuracy { 1.0 - figure } else { figure },
                        "threshold": threshold,
                        "samples": samples,
                    }),
                });
            }
        }
        drop(service);
        let mut shared = self.shared.lock().expect("monitor lock");
        for event in events {
            shared.keep(event);
        }
    }

    /// The latest drift score and how many features drift.
    /// `None` while the monitor thread holds its state (the control plane tries again later
    /// rather than wait on a low-priority thread).
    pub fn drift_summary(&self) -> Option<(f64, usize)> {
        let shared = self.shared.try_lock().ok()?;
        Some(
            shared
                .latest
                .as_ref()
                .map_or((0.0, 0), |e| (e.drift_score, e.drifting().count())),
        )
    }

    /// Joins a label with the answer `request_id` got (see [`crate::labels`]).
    pub fn label(
        &self,
        request_id: &str,
        label: &serde_json::Value,
    ) -> Result<PredictionRecord, LabelError> {
        let mut shared = self.shared.lock().expect("monitor lock");
        shared.predictions.label(request_id, label)
    }

    /// Recent answers a label would help most with.
    pub fn to_label(&self) -> Vec<ToLabel> {
        self.shared
            .lock()
            .expect("monitor lock")
            .predictions
            .to_label()
    }

    /// Alerts that fired or cleared since the last call.
    /// Empty while the monitor thread holds its state (they wait for the next call).
    pub fn take_pending(&self) -> Vec<AlertEvent> {
        match self.shared.try_lock() {
            Ok(mut shared) => std::mem::take(&mut shared.pending),
            Err(_) => Vec::new(),
        }
    }

    /// Up to the last few request bodies (for a retraining webhook).
    pub fn recent_inputs(&self) -> Vec<serde_json::Value> {
        let shared = self.shared.lock().expect("monitor lock");
        shared
            .recent_inputs
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect()
    }

    /// The latest evaluation, the alerts and the counters, as the report shows them.
    pub fn report(&self) -> serde_json::Value {
        let shared = self.shared.lock().expect("monitor lock");
        let evaluation = shared.latest.as_ref();
        serde_json::json!({
            "features": self.features.names,
            "evaluations": shared.evaluations,
            "drift_score": evaluation.map(|e| e.drift_score),
            "samples_in_window": evaluation.map(|e| e.samples),
            "enough_samples": evaluation.map(|e| e.enough_samples),
            "min_samples": self.spec.min_samples,
            "window": self.spec.window.to_string(),
            "thresholds": { "psi": self.spec.drift.psi, "kl": self.spec.drift.kl },
            "drifting": evaluation
                .map(|e| e.drifting().map(|f| f.name.clone()).collect::<Vec<_>>())
                .unwrap_or_default(),
            "recorded": self.recorded.load(Ordering::Relaxed),
            "requests_seen": self.seen.load(Ordering::Relaxed),
            "sampling_one_in": self.stride.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
            "on_fallback_for_drift": self.drift_fallback.load(Ordering::Relaxed),
            "per_feature": evaluation.map(|e| &e.features),
            "history": shared.history.iter().collect::<Vec<_>>(),
            "alerts": shared.alerts.iter().collect::<Vec<_>>(),
            "labels": {
                "kept": shared.predictions.len(),
                "unsaved": shared.predictions.unsaved(),
                "quality": shared.predictions.quality(self.spec.window.0),
            },
        })
    }

    /// The accuracy over the window's labels, when they are a classifier's.
    pub fn accuracy(&self) -> Option<f64> {
        let shared = self.shared.lock().expect("monitor lock");
        shared
            .predictions
            .accuracy(self.spec.window.0)
            .map(|(accuracy, _)| accuracy)
    }
}

/// Lowers the calling thread to the lowest priority (nice 19): when the host is busy, serving
/// requests goes first and monitoring takes what is left. Under sustained overload the monitor then
/// falls behind, its queue fills, and samples are dropped and counted rather than taken from the
/// requests' CPU (the report's `dropped`, `aifn_monitor_samples_dropped`). Not `SCHED_IDLE`: a
/// thread that may go unscheduled for seconds would hold its lock against the control plane.
fn yield_to_serving() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority with our own thread id changes only this
    // thread's nice value (Linux applies PRIO_PROCESS to the one thread a tid names).
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) != 0 {
            tracing::debug!("could not lower the monitor thread's priority");
        }
    }
}

/// The monitor thread's state.
struct Worker {
    drift: DriftMonitor,
    features: Arc<Features>,
    samples: Receiver<Sample>,
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
    /// Whether the version's drift alert holds.
    alerting: bool,
    /// Predictions of the samples drained since the last [`Worker::publish`].
    to_keep: Vec<(String, f64, bool, Option<Bytes>)>,
    /// The newest request body since then (for the retraining webhook's recent inputs).
    last_body: Option<Bytes>,
    sampling: Option<Sampling>,
}

/// How the monitor thread sets the request path's sampling stride from the request rate.
struct Sampling {
    seen: Arc<AtomicU64>,
    stride: Arc<AtomicU64>,
    /// When the rate was last measured, and the requests seen then.
    last: (Instant, u64),
}

impl Sampling {
    fn adjust(&mut self) {
        let (now, seen) = (Instant::now(), self.seen.load(Ordering::Relaxed));
        let seconds = now.duration_since(self.last.0).as_secs_f64();
        if seconds > 0.0 {
            let rate = (seen - self.last.1) as f64 / seconds;
            let stride = (rate / MAX_SAMPLES_PER_SECOND as f64).ceil().max(1.0) as u64;
            self.stride.store(stride, Ordering::Relaxed);
        }
        self.last = (now, seen);
    }
}

impl Worker {
    fn run(mut self) {
        let started = Instant::now();
        let mut next = started + self.interval;
        let mut next_flush = started + FLUSH_EVERY;
        loop {
            // The thread wakes on its own clock and takes what queued meanwhile, so a request
            // handing over a sample never has to wake it.
            std::thread::sleep(DRAIN_EVERY);
            loop {
                match self.samples.try_recv() {
                    Ok(sample) => self.record(started, sample),
                    Err(TryRecvError::Empty) => {
                        self.publish();
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        // The version was unloaded.
                        self.flush();
                        return;
                    }
                }
            }
            let now = Instant::now();
            if now >= next_flush {
                self.flush();
                if let Some(sampling) = &mut self.sampling {
                    sampling.adjust();
                }
                next_flush = now + FLUSH_EVERY;
            }
            if now >= next {
                self.evaluate(started);
                next += self.interval;
                // After a long stall, evaluate once rather than once per missed interval.
                if next < now {
                    next = now + self.interval;
                }
            }
        }
    }

    /// Hands what the drained samples left (predictions to keep, the last body) to the shared
    /// state under one short lock.
    fn publish(&mut self) {
        if self.to_keep.is_empty() && self.last_body.is_none() {
            return;
        }
        let mut shared = self.shared.lock().expect("monitor lock");
        for (id, prediction, drifted, body) in self.to_keep.drain(..) {
            shared.predictions.keep(id, prediction, drifted, body);
        }
        if let Some(body) = self.last_body.take() {
            if shared.recent_inputs.len() >= RECENT_INPUTS {
                shared.recent_inputs.pop_front();
            }
            shared.recent_inputs.push_back(body);
        }
    }

    /// Writes new predictions, holding the lock only to take them.
    fn flush(&self) {
        let batch = self
            .shared
            .lock()
            .expect("monitor lock")
            .predictions
            .take_flush();
        if let Some(batch) = batch {
            batch.write();
            self.shared
                .lock()
                .expect("monitor lock")
                .predictions
                .flushed();
        }
    }

    fn record(&mut self, started: Instant, sample: Sample) {
        let body: Option<serde_json::Value> = sample
            .body
            .as_ref()
            .filter(|_| self.features.reads_body)
            .and_then(|b| serde_json::from_slice(b).ok());
        let mut values = sample.tensors;
        let from_body: Vec<(usize, Value)> = self
            .features
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, source)| match source {
                Source::Body(path) => Some((i, body_value(body.as_ref(), path))),
                _ => None,
            })
            .collect();
        // A body with none of the fields (a batch of customers, say) is another shape of request,
        // not a request missing them all: its fields are not counted.
        if from_body.iter().any(|(_, v)| *v != Value::Missing) {
            for (i, value) in from_body {
                values[i] = Some(value);
            }
        }
        let prediction = self.features.prediction.and_then(|i| match values.get(i) {
            Some(Some(Value::Number(p))) => Some(*p),
            _ => None,
        });
        if let (Some(id), Some(prediction)) = (sample.request_id, prediction) {
            self.to_keep
                .push((id, prediction, self.alerting, sample.body.clone()));
        }
        if let Some(body) = sample.body {
            self.last_body = Some(body);
        }
        self.drift
            .record(sample.at.saturating_duration_since(started), &values);
    }

    fn evaluate(&mut self, started: Instant) {
        let evaluation = self.drift.evaluate(started.elapsed());
        let events = self.drift_events(&evaluation);
        let mut shared = self.shared.lock().expect("monitor lock");
        shared.evaluations += 1;
        for event in events {
            shared.keep(event);
        }
        if shared.history.len() >= HISTORY {
            shared.history.pop_front();
        }
        shared.history.push_back(serde_json::json!({
            "at_ms": crate::records::now_ms(),
            "drift_score": evaluation.drift_score,
            "samples": evaluation.samples,
            "drifting": evaluation.drifting().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        }));
        shared.latest = Some(evaluation);
    }

    /// An event when the version's drift alert fires (its first feature starts drifting) or
    /// clears (its last one stops); features joining or leaving an alert that holds are in the
    /// report, not new events.
    fn drift_events(&mut self, evaluation: &Evaluation) -> Vec<AlertEvent> {
        let drifting: Vec<String> = evaluation.drifting().map(|f| f.name.clone()).collect();
        let state = match (self.alerting, drifting.is_empty()) {
            (false, false) => Transition::Fired,
            (true, true) => Transition::Cleared,
            _ => return Vec::new(),
        };
        self.alerting = state == Transition::Fired;
        let now = SystemTime::now();
        let figures: serde_json::Value = evaluation
            .features
            .iter()
            .filter(|f| f.reference_ready)
            .map(|f| {
                (
                    f.name.clone(),
                    serde_json::json!({ "psi": f.psi, "kl": f.kl, "js": f.js }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        vec![AlertEvent {
            kind: "concept_drift",
            on: AlertOn::Drift,
            state,
            severity: if evaluation.drift_score > 2.0 * self.drift.settings().psi {
                "high"
            } else {
                "medium"
            },
            timestamp: humantime::format_rfc3339_seconds(now).to_string(),
            at_ms: crate::records::now_ms(),
            features: if state == Transition::Fired {
                drifting
            } else {
                evaluation
                    .transitions
                    .iter()
                    .map(|(name, _)| name.clone())
                    .collect()
            },
            figures: serde_json::json!({
                "drift_score": evaluation.drift_score,
                "samples": evaluation.samples,
                "features": figures,
            }),
        }]
    }
}
