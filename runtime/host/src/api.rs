//! The control plane's API, defined once: its paths ([`Route`]) and the JSON each call takes and
//! answers. The host's handlers (`http/admin.rs`), the CLI's typed client and the tests all use
//! these types; no admin URL or JSON path is written anywhere else.

use crate::outcomes::Disagreement;
use crate::records::{Artifact, AuditEvent, Digest, Figures, ModelEntry, Phase};
use aifn_spec::{Auth, Method, RolloutStrategy};
use serde::{Deserialize, Serialize};

/// A control-plane resource. Which methods each takes is said at its handler and its client call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// GET: [`FunctionList`]; POST [`DeployRequest`]: [`DeployOutcome`].
    Functions,
    /// GET: [`FunctionStatus`]; DELETE: [`Deleted`].
    Function(&'a str),
    /// POST [`RollbackRequest`]: [`DeployOutcome`].
    Rollback(&'a str),
    /// POST [`PromoteRequest`]: [`Promoted`].
    Promote(&'a str),
    /// POST [`AbortRequest`]: [`Aborted`].
    Abort(&'a str),
    /// POST [`PruneRequest`]: [`PruneOutcome`].
    Prune(&'a str),
    /// GET: [`History`].
    History(&'a str),
    /// GET: the monitoring report of each loaded version (see `ControlPlane::monitor_report`).
    Monitor(&'a str),
    /// GET: recent answers a label would help most with (see `ControlPlane::to_label`).
    ToLabel(&'a str),
    /// GET: [`VersionList`].
    Versions(&'a str),
    /// HEAD: whether the host has the artifact; PUT (the bytes): [`Uploaded`].
    Blob(&'a str),
    /// GET: [`ModelList`].
    Models,
    /// PUT [`RegisterModel`]: [`ModelEntry`].
    Model(&'a str),
    /// GET: [`KeyList`]; POST [`CreateKey`]: [`CreatedKey`].
    Keys,
    /// DELETE: [`Revoked`].
    Key(&'a str),
    /// GET: [`Tracing`]; PUT [`Tracing`] (a new sample rate): [`Tracing`].
    Tracing,
}

impl<'a> Route<'a> {
    pub const PREFIX: &'static str = "/admin/v1";

    pub fn path(&self) -> String {
        let p = Self::PREFIX;
        match self {
            Route::Functions => format!("{p}/functions"),
            Route::Function(name) => format!("{p}/functions/{name}"),
            Route::Rollback(name) => format!("{p}/functions/{name}/rollback"),
            Route::Promote(name) => format!("{p}/functions/{name}/promote"),
            Route::Abort(name) => format!("{p}/functions/{name}/abort"),
            Route::Prune(name) => format!("{p}/functions/{name}/prune"),
            Route::Monitor(name) => format!("{p}/functions/{name}/monitor"),
            Route::ToLabel(name) => format!("{p}/functions/{name}/to-label"),
            Route::History(name) => format!("{p}/functions/{name}/history"),
            Route::Versions(name) => format!("{p}/functions/{name}/versions"),
            Route::Blob(digest) => format!("{p}/blobs/{digest}"),
            Route::Models => format!("{p}/models"),
            Route::Model(id) => format!("{p}/models/{id}"),
            Route::Keys => format!("{p}/keys"),
            Route::Key(id) => format!("{p}/keys/{id}"),
            Route::Tracing => format!("{p}/tracing"),
        }
    }

    /// The route of a request path, if it is one.
    pub fn parse(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix(Self::PREFIX)?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        Some(match segments.as_slice() {
            ["functions"] => Route::Functions,
            ["functions", name] => Route::Function(name),
            ["functions", name, "rollback"] => Route::Rollback(name),
            ["functions", name, "promote"] => Route::Promote(name),
            ["functions", name, "abort"] => Route::Abort(name),
            ["functions", name, "prune"] => Route::Prune(name),
            ["functions", name, "history"] => Route::History(name),
            ["functions", name, "monitor"] => Route::Monitor(name),
            ["functions", name, "to-label"] => Route::ToLabel(name),
            ["functions", name, "versions"] => Route::Versions(name),
            ["blobs", digest] => Route::Blob(digest),
            ["models"] => Route::Models,
            ["models", id] => Route::Model(id),
            ["keys"] => Route::Keys,
            ["keys", id] => Route::Key(id),
            ["tracing"] => Route::Tracing,
            _ => return None,
        })
    }
}

/// The host's trace export: where to, and the share of requests head sampling keeps (errors and
/// requests over their function's `target_latency` are exported whatever it is).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tracing {
    pub sample_rate: f64,
    /// The OTLP endpoint (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// What `POST /admin/v1/functions` receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The spec's YAML, exactly as written.
    pub spec: String,
    /// The uploaded model file, when the spec names a local `model.path`.
    pub model: Option<Digest>,
    /// The uploaded WASM component, when the spec has a `module`.
    pub module: Option<Digest>,
    /// The uploaded fallback model, when the spec's `fallback.model` names a local `path`.
    #[serde(default)]
    pub fallback_model: Option<Digest>,
    /// The uploaded reference sample, when the spec's `monitoring.reference` names one.
    #[serde(default)]
    pub monitoring_reference: Option<Digest>,
    /// How the new version replaces the serving one; absent: the spec's `rollout.strategy`, or
    /// at once.
    #[serde(default)]
    pub strategy: Option<RolloutStrategy>,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployOutcome {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// True when the same spec and artifacts were already serving: no new version was made.
    pub unchanged: bool,
    /// The version taking (most) traffic now: `version` itself, unless a rollout has begun.
    pub serving_version: u64,
    pub endpoints: Vec<EndpointView>,
    /// Whether `/v2/models/NAME/infer` serves it (`spec.v2`).
    #[serde(default)]
    pub v2: bool,
    /// The data plane's URL, where the endpoints are (the control plane is elsewhere).
    #[serde(default)]
    pub data_url: Option<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointView {
    pub method: Method,
    pub route: String,
    pub auth: Auth,
}

/// `GET /admin/v1/functions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionList {
    pub functions: Vec<FunctionSummary>,
    /// Functions whose stored version could not be loaded at start.
    pub failed: Vec<LoadFailure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionSummary {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    pub model_id: String,
    pub replicas: usize,
    /// `METHOD /route` of each endpoint.
    pub endpoints: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadFailure {
    pub name: String,
    pub error: String,
}

/// `aifn status`: the serving version and how it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionStatus {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    pub created_at: u64,
    pub model_id: String,
    pub model: Artifact,
    pub module: Option<Artifact>,
    pub endpoints: Vec<EndpointView>,
    pub placement: Placement,
    pub queue_depth: usize,
    /// Instances now, requests running and waiting.
    pub load: PoolLoad,
    /// p95 latency over the last 10 s, in milliseconds.
    pub p95_ms: Option<f64>,
    /// p50, p95 and p99 latency over the last 10 s, in milliseconds (queue + service).
    pub latency_ms: Option<LatencyView>,
    /// Numbers for what judges this host from outside: an autoscaler (KEDA's metrics-api reads
    /// them from each pod) and the Kubernetes operator's rollouts across pods.
    pub signals: Signals,
    /// Instances the autoscaler keeps between (`min`, and `max` capped by this host's capacity).
    pub scaling: ScalingView,
    /// The `spec.fallback` model's pool, and whether it takes the traffic now.
    pub fallback: Option<FallbackView>,
    /// A new version on its way in, with both versions' figures.
    pub rollout: Option<RolloutView>,
    pub inputs: Vec<PortView>,
    pub outputs: Vec<PortView>,
    /// The spec with its defaults filled in.
    pub spec: serde_json::Value,
}

/// Where the model runs, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placement {
    pub device: String,
    pub requested_gpus: u32,
    /// Where the host runs the function differently from what the spec asked, with the values it
    /// uses (a GPU it cannot use, more replicas or CPUs than it has); each is a deploy warning.
    pub notes: Vec<String>,
    pub replicas: usize,
    pub threads_per_replica: usize,
    /// Most requests merged into one inference (1: no batching), and whether shapes are padded.
    pub max_batch_size: usize,
    pub batch_padding: bool,
    pub execution: String,
}

/// How busy an instance pool is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PoolLoad {
    /// Instances serving (retiring ones excluded).
    pub instances: usize,
    /// Requests being served.
    pub running: usize,
    /// Requests waiting for an instance.
    pub queued: usize,
}

/// A model input or output (`-1` in `shape` for a dimension of any size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortView {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

impl From<&aifn_model::Port> for PortView {
    fn from(port: &aifn_model::Port) -> PortView {
        PortView {
            name: port.name.clone(),
            datatype: port.dtype.v2_name().to_string(),
            shape: port.shape.clone(),
        }
    }
}

/// [`FunctionStatus::signals`]: always numbers, since a scaler cannot read a missing value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// p95 latency over the last 10 s of the pool taking the traffic, in milliseconds; 0 when it
    /// answered nothing (no load, nothing to scale for).
    pub p95_ms: f64,
    /// Requests being served or waiting.
    pub in_flight: usize,
    /// Over the spec's rollout window (`window_secs`): requests answered and the 5xx among them,
    /// and their p95 (0 without answers); what a rollout is judged on.
    pub window_secs: u64,
    pub requests: u64,
    pub errors: u64,
    pub window_p95_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyView {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackView {
    pub active: bool,
    pub load: PoolLoad,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScalingView {
    pub min: usize,
    pub max: usize,
    pub capacity: usize,
    pub ceiling: usize,
    /// The autoscaler's last resizes of this version's pools, oldest first.
    #[serde(default)]
    pub decisions: Vec<ScalingDecision>,
}

/// One resize by the autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingDecision {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `primary` or `fallback`.
    pub variant: String,
    pub from: usize,
    pub to: usize,
    pub reason: String,
    /// In panic mode (a burst) the autoscaler does not scale down.
    pub panic: bool,
}

/// A rollout in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutView {
    pub strategy: RolloutStrategy,
    pub candidate: u64,
    pub previous: u64,
    pub phase: Phase,
    /// Percent of traffic the candidate takes now.
    pub candidate_share: f64,
    pub steps: Vec<f64>,
    pub note: String,
    /// Both versions over the window the rollout is judged on.
    pub stable_figures: Figures,
    pub candidate_figures: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowView>,
    /// Held at its step by a monitoring alert with `action: freeze_rollout`.
    #[serde(default)]
    pub frozen: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShadowView {
    #[serde(flatten)]
    pub disagreement: Disagreement,
    pub differing_share: f64,
}

/// `DELETE /admin/v1/functions/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub name: String,
    /// 0 when the function had no version loaded (it failed to load at start).
    pub deleted_version: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version to serve; absent: the one before the serving version.
    pub to: Option<u64>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// All traffic now, skipping the remaining steps.
    #[serde(default)]
    pub full: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    pub name: String,
    /// The rollout after the promotion; absent when it has ended.
    pub rollout: Option<RolloutView>,
    /// The version serving (most) traffic now.
    pub serving: Option<u64>,
    pub candidate: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aborted {
    pub name: String,
    /// The version that took the traffic back.
    pub serving: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRequest {
    /// Versions to keep; absent: the host's `--keep-versions`.
    pub keep: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneOutcome {
    pub pruned: Vec<u64>,
    pub kept: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// `GET /admin/v1/functions/NAME/history`: the audit log, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct History {
    pub name: String,
    pub events: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Position in the function's log.
    pub seq: u64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// `GET /admin/v1/functions/NAME/versions`: the versions kept, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionList {
    pub name: String,
    pub versions: Vec<VersionView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionView {
    pub version: u64,
    pub role: VersionRole,
    pub digest: Digest,
    pub created_at: u64,
    pub deployed_by: String,
    pub model: Artifact,
    pub module: Option<Artifact>,
    pub fallback_model: Option<Artifact>,
    /// `spec.monitoring.reference`'s sample, when the spec names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring_reference: Option<Artifact>,
}

/// What a kept version does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionRole {
    /// It serves (most) traffic.
    Stable,
    /// A rollout brings it in.
    Candidate,
    /// A rollout keeps it loaded to take the traffic back.
    Previous,
    /// Kept, not serving.
    #[serde(rename = "")]
    Kept,
}

impl VersionRole {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionRole::Stable => "stable",
            VersionRole::Candidate => "candidate",
            VersionRole::Previous => "previous",
            VersionRole::Kept => "",
        }
    }
}

/// `PUT /admin/v1/blobs/DIGEST`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Uploaded {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelEntry>,
}

/// `PUT /admin/v1/models/ID`: the id names this uploaded artifact from now on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterModel {
    pub digest: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// An API key as the control plane shows it: never its secret, nor its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub function: String,
    /// The route the key is limited to; absent: every endpoint of the function.
    pub endpoint: Option<String>,
    pub created_at: u64,
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub function: String,
    pub endpoint: Option<String>,
    pub ttl_seconds: Option<u64>,
}

/// The new key, with its secret: shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub revoked: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_back_from_its_path() {
        let routes = [
            Route::Functions,
            Route::Function("f"),
            Route::Rollback("f"),
            Route::Promote("f"),
            Route::Abort("f"),
            Route::Prune("f"),
            Route::History("f"),
            Route::Versions("f"),
            Route::Blob("sha256:00"),
            Route::Models,
            Route::Model("m"),
            Route::Keys,
            Route::Key("k"),
        ];
        for route in routes {
            let path = route.path();
            assert_eq!(Route::parse(&path), Some(route), "{path}");
        }
        assert_eq!(Route::parse("/admin/v1/functions/f/nothing"), None);
        assert_eq!(Route::parse("/admin/v2/functions"), None);
    }
}
