//! The typed form of a valid `ai.function/v1` Function. See `spec/function.md` for the field reference.

use crate::quantity::{Bytes, HumanDuration, MilliCpu};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

pub const API_VERSION: &str = "ai.function/v1";
pub const KIND: &str = "Function";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpec {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: FunctionBody,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Notes for tools, as on Kubernetes objects: `ai.function/image` names the image that serves
    /// this version on a cluster (`aifn image`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FunctionBody {
    pub model: ModelSpec,
    pub resources: Resources,
    pub scaling: Scaling,
    pub endpoints: Vec<Endpoint>,
    /// The WASM component that turns requests into model inputs (and, optionally, outputs into
    /// responses). Without it, endpoints take Open Inference Protocol v2 tensors directly.
    pub module: Option<ModuleSpec>,
    /// A lighter variant of the model that takes the traffic when the function cannot keep its
    /// `target_latency` at its most replicas.
    pub fallback: Option<Fallback>,
    /// How a new version of this function replaces the serving one; absent: at once, unless
    /// `aifn deploy --canary` or `--shadow` asks otherwise (with [`Rollout::default`]).
    pub rollout: Option<Rollout>,
    /// Whether and how the model takes raw tensors on `/v2/models/NAME/infer`.
    pub v2: V2Access,
    /// A request a new version must answer with a 2xx before it is activated.
    pub check: Option<SampleRequest>,
    /// Whether the model is still right: drift of its inputs and outputs, accuracy from labels
    /// sent later, and what to do when either goes wrong.
    pub monitoring: Option<Monitoring>,
}

/// `spec.monitoring`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Monitoring {
    /// A JSON Lines file next to the spec, one training-time example per line:
    /// `{"request": {...the request body...}, "outputs": {"NAME": [..]}}`. Absent: the first
    /// `baseline` requests of each version are its reference.
    pub reference: Option<String>,
    /// Fields of the request body, as dotted paths (`customer.tier`, `items.0`); empty: the
    /// columns of every model input. Every model output column is monitored as well.
    pub features: Vec<String>,
    /// The sliding window compared with the reference.
    pub window: HumanDuration,
    /// How often drift is evaluated; absent: a tenth of the window.
    pub interval: Option<HumanDuration>,
    /// Bins per numeric feature.
    pub bins: u32,
    pub drift: DriftThresholds,
    /// Evaluations in a row over a threshold before an alert fires (and under it before it clears).
    pub consecutive: u32,
    /// Fewest samples in the window for an evaluation to move an alert.
    pub min_samples: u32,
    /// Requests taken as the reference when `reference` is absent.
    pub baseline: u32,
    /// Whether answers are kept for labels sent later, and for how long; absent: they are not.
    pub labels: Option<LabelPolicy>,
    pub alerts: Vec<AlertRule>,
}

impl Default for Monitoring {
    fn default() -> Monitoring {
        Monitoring {
            reference: None,
            features: Vec::new(),
            window: HumanDuration(std::time::Duration::from_secs(600)),
            interval: None,
            bins: 10,
            drift: DriftThresholds { psi: 0.2, kl: 0.15 },
            consecutive: 3,
            min_samples: 100,
            baseline: 1000,
            labels: None,
            alerts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DriftThresholds {
    pub psi: f64,
    pub kl: f64,
}

impl Default for LabelPolicy {
    fn default() -> LabelPolicy {
        LabelPolicy {
            ttl: HumanDuration(std::time::Duration::from_secs(30 * 86_400)),
            max_predictions: 100_000,
        }
    }
}

/// `spec.monitoring.labels`: how long answers wait for their ground truth, and how many.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct LabelPolicy {
    pub ttl: HumanDuration,
    pub max_predictions: u32,
}

/// `spec.monitoring.alerts[]`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AlertRule {
    pub on: AlertOn,
    pub action: AlertAction,
    /// `accuracy`: the lowest acceptable accuracy; `errors`: the highest error rate (0 to 1);
    /// `latency`: the highest p95 in seconds. Unused for `drift` (its thresholds are `drift`).
    pub threshold: Option<f64>,
    /// Where `action: webhook` posts (http://…); absent: the host's webhook.
    pub url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertOn {
    Drift,
    Accuracy,
    Latency,
    Errors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertAction {
    /// Record and notify only.
    Alert,
    /// Route the traffic to `spec.fallback` while the alert holds.
    Fallback,
    /// Post the alert, with a sample of recent inputs, to the rule's `url` (a retraining job).
    Webhook,
    /// Hold a rollout in progress at its current step.
    FreezeRollout,
    /// Roll a rollout in progress back to the stable version.
    Rollback,
}

/// `spec.check`: a sample request sent to a new version before it takes any traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SampleRequest {
    /// One of the function's endpoints; absent: the first.
    pub route: Option<String>,
    /// The body sent.
    pub body: String,
    /// Headers sent with it (`content-type`, say).
    #[serde(serialize_with = "pairs_as_mapping")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: Vec<(String, String)>,
}

/// `spec.v2`: the Open Inference Protocol v2 route, which hands the caller's tensors to the model
/// without the module.
///
/// The rule: it is on by default only for a function without a module, where the v2 route takes
/// what its endpoints take. With a module, the module's own bounds (a token limit, say) would be
/// bypassed, so it is off unless the spec turns it on, ideally with `max_shape`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct V2Access {
    /// Explicitly on or off; absent: the rule above.
    pub enabled: Option<bool>,
    /// Upper bound of each dimension of every input, by position (`[32, 256]`: at most 32 rows of
    /// 256); empty: only the model's fixed dimensions and the host's element limit bound a request.
    pub max_shape: Vec<u64>,
}

impl V2Access {
    pub fn exposed(&self, has_module: bool) -> bool {
        self.enabled.unwrap_or(!has_module)
    }
}

/// `spec.rollout`: a gradual, watched replacement of the serving version.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rollout {
    pub strategy: RolloutStrategy,
    /// Shares of traffic (percent) the new version takes in turn; the last is 100.
    pub steps: Vec<f64>,
    /// How long each step below 100% is held (and judged) before the next.
    pub step_duration: HumanDuration,
    /// How long the new version stays watched after it takes all traffic; the previous version
    /// stays loaded to take it back at once.
    pub watch: HumanDuration,
    /// The span over which the two versions' figures are compared.
    pub window: HumanDuration,
    /// How far the new version's error rate may exceed the stable one's (0.01: one point).
    pub max_error_rate_increase: f64,
    /// How many times the stable version's p95 the new version's p95 may be.
    pub max_latency_ratio: f64,
    /// Requests the new version must answer in the window before it is judged.
    pub min_requests: u32,
    /// Whether a caller stays on the version it first got for the whole rollout.
    pub sticky: Sticky,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            strategy: RolloutStrategy::Canary,
            steps: vec![1.0, 10.0, 100.0],
            step_duration: HumanDuration(std::time::Duration::from_secs(300)),
            watch: HumanDuration(std::time::Duration::from_secs(600)),
            window: HumanDuration(std::time::Duration::from_secs(60)),
            max_error_rate_increase: 0.01,
            max_latency_ratio: 1.5,
            min_requests: 20,
            sticky: Sticky::None,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStrategy {
    /// Replace the serving version at once.
    Immediate,
    /// Shift traffic in `steps`, judged against the stable version, promoted automatically.
    Canary,
    /// Send the new version a copy of live traffic; callers only see the stable version.
    Shadow,
}

impl RolloutStrategy {
    pub fn parse(text: &str) -> Option<RolloutStrategy> {
        match text {
            "immediate" => Some(RolloutStrategy::Immediate),
            "canary" => Some(RolloutStrategy::Canary),
            "shadow" => Some(RolloutStrategy::Shadow),
            _ => None,
        }
    }
}

/// `rollout.sticky`: what identifies a caller to keep on one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    None,
    /// The caller's API key (or JWT subject, or client IP on open endpoints).
    Caller,
    /// The value of this request header.
    Header(String),
}

/// Written as in a spec: `host`, `discovery` or the URL.
impl Serialize for JwtKeys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JwtKeys::Host => serializer.serialize_str("host"),
            JwtKeys::Discovery => serializer.serialize_str("discovery"),
            JwtKeys::Url(url) => serializer.serialize_str(url),
        }
    }
}

/// Written as in a spec (`none`, `caller`, `header:NAME`); serde's default would write the header
/// as a tagged value (`!header NAME` in YAML), which does not parse back.
impl Serialize for Sticky {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Sticky::None => serializer.serialize_str("none"),
            Sticky::Caller => serializer.serialize_str("caller"),
            Sticky::Header(name) => serializer.collect_str(&format_args!("header:{name}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Fallback {
    /// Same inputs and outputs as `spec.model` (the module serves both).
    pub model: ModelSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ModelSpec {
    /// The name the host's model store knows this model by.
    pub id: String,
    /// What the model was made with; the host serves every runtime through ONNX Runtime.
    pub runtime: ModelRuntime,
    /// A local ONNX file (relative to the spec file) that `aifn deploy` uploads and registers as `id`.
    pub path: Option<String>,
    /// The expected sha256 of the model file; a deploy with a different file fails.
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct Resources {
    pub memory: Option<Bytes>,
    pub cpu: Option<MilliCpu>,
    /// Number of GPUs requested. A host without one runs the function on CPU and says so.
    #[schemars(with = "crate::schema::WholeNumber")]
    pub gpu: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Scaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_latency: Option<HumanDuration>,
    /// Requests the function holds at once, running or queued; past it the host answers 503.
    pub max_concurrency: Option<u32>,
    /// Most requests merged into one inference (dynamic batching); 1 turns batching off.
    pub max_batch_size: u32,
    /// How long an instance holding a partial batch waits for more requests (none by default).
    pub max_batch_delay: Option<HumanDuration>,
    /// How inputs whose shapes differ beyond the batch dimension are merged.
    pub batch_padding: BatchPadding,
}

/// `scaling.batch_padding`: whether requests with different input shapes may share a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchPadding {
    /// Only requests whose inputs have the same shape (but for the batch dimension) are merged.
    #[default]
    None,
    /// Smaller inputs are padded with zeros to the largest; right for models that take a mask
    /// with their inputs (BERT: `input_ids`, `attention_mask`, `token_type_ids`).
    Zeros,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling {
            min_replicas: 1,
            max_replicas: 1,
            target_latency: None,
            max_concurrency: None,
            max_batch_size: 1,
            max_batch_delay: None,
            batch_padding: BatchPadding::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Endpoint {
    pub route: String,
    pub method: Method,
    pub auth: Auth,
    /// How bearer tokens are checked when `auth` is `jwt`.
    pub jwt: Option<JwtRule>,
    /// Client networks allowed to call the endpoint; empty: any.
    #[schemars(with = "Vec<String>")]
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Requests each caller (API key, token subject, or client IP) may make.
    pub rate_limit: Option<RateLimit>,
    /// Response caching; absent: every request runs the function.
    pub cache: Option<CachePolicy>,
    /// Deadline of a request to this endpoint (504 after); absent: the host's.
    pub timeout: Option<HumanDuration>,
    /// Largest request body (413 above); absent: the host's.
    pub max_body: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct JwtRule {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Where the keys that verify tokens come from.
    pub keys: JwtKeys,
    /// RFC 7662 token introspection URL: bearer tokens that are not JWTs (opaque tokens) are
    /// asked about there.
    pub introspection: Option<String>,
}

/// The keys of a `jwt` endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum JwtKeys {
    /// The host's own: `--jwt-secret` and `--jwt-jwks`.
    #[default]
    Host,
    /// The issuer's: OpenID Connect discovery (`ISSUER/.well-known/openid-configuration`) names
    /// its JWKS, which the host fetches and follows as it rotates.
    Discovery,
    /// A JWKS URL the host fetches and follows as it rotates.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct RateLimit {
    /// Sustained rate, per caller.
    pub requests_per_second: f64,
    /// Requests a caller may make at once after being idle.
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct CachePolicy {
    pub ttl: HumanDuration,
    pub max_entries: u64,
    pub max_bytes: Bytes,
    /// Keep each caller's responses apart (for responses that depend on who asks).
    pub per_caller: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ModuleSpec {
    /// Path of the compiled component (`.wasm`), relative to the spec file.
    pub path: String,
    /// How long one preprocess or postprocess call may run before it is stopped.
    pub timeout: Option<HumanDuration>,
    /// How `aifn build` makes `path` from source.
    pub build: Option<ModuleBuild>,
    /// What the sandbox lets the module reach; nothing unless granted here.
    pub capabilities: Capabilities,
    /// Whether an instance serves one request or many.
    pub isolation: Isolation,
}

/// `module.isolation`: what a request may see of earlier ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A fresh instance per request: nothing carries over (the default).
    #[default]
    Request,
    /// Instances are reused for later requests (up to a limit, and never after a trap): for
    /// languages whose start-up is heavy (Python). Module state can carry over between requests.
    Instance,
}

/// `module.build`: the module's language and source, relative to the spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ModuleBuild {
    pub language: Language,
    /// The entry source file; for Rust, the crate's directory (with its `Cargo.toml`).
    pub source: String,
}

/// The languages the SDKs (`sdk/`) support.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    C,
    Python,
    Zig,
    AssemblyScript,
}

impl Language {
    pub const ALL: [Language; 5] = [
        Language::Rust,
        Language::C,
        Language::Python,
        Language::Zig,
        Language::AssemblyScript,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::C => "c",
            Language::Python => "python",
            Language::Zig => "zig",
            Language::AssemblyScript => "assemblyscript",
        }
    }

    pub fn parse(text: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.name() == text)
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `module.capabilities`: WASI access granted to the module. The default grants nothing: no
/// environment, no files, no network, and a wall clock stopped at the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Capabilities {
    /// Environment variables the module sees, with the values given here (never the host's).
    #[serde(serialize_with = "pairs_as_mapping")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: Vec<(String, String)>,
    /// The host's real wall clock.
    pub wall_clock: bool,
    /// Host directories the module may read: (directory on the host, path the module sees).
    #[serde(serialize_with = "pairs_as_mapping")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub read_dirs: Vec<(String, String)>,
    /// Addresses (`ip:port`) the module may open TCP or UDP connections to.
    #[schemars(with = "Vec<String>")]
    pub network: Vec<std::net::SocketAddr>,
    /// Name lookups through the host's resolver (a way out of the sandbox of its own, so it is
    /// not implied by `network`).
    pub dns: bool,
}

impl Capabilities {
    pub fn none(&self) -> bool {
        *self == Capabilities::default()
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// Anyone who can reach the host may call the endpoint.
    None,
    /// Callers present an API key issued by the host (`Authorization: Bearer` or `X-API-Key`).
    ApiKey,
    /// Callers present a JWT (`Authorization: Bearer`) signed by a key the host is configured with.
    Jwt,
}

/// A `model.runtime` string, such as `python:3.11-pytorch` or `onnx`.
///
/// The host executes ONNX models natively. Every other framework is accepted as the *origin* of a
/// model that was exported to ONNX: the runtime string records where the model came from, and the
/// model file must be ONNX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRuntime {
    /// The text as written.
    pub text: String,
    pub language: Option<String>,
    pub framework: Framework,
}

impl Serialize for ModelRuntime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// The framework a model was made with. Every one has an exporter to ONNX, which is what the
/// host serves; the name records where the model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Onnx,
    Pytorch,
    Tensorflow,
    Keras,
    Tflite,
    Jax,
    Sklearn,
    Xgboost,
    Lightgbm,
    Catboost,
    Paddle,
    Mxnet,
    Mindspore,
    Caffe2,
    Cntk,
    Chainer,
    Coreml,
    Sparkml,
    Libsvm,
    H2o,
    Matlab,
}

/// One framework: its spec name, what it is, and how its models become ONNX.
pub struct FrameworkInfo {
    pub name: &'static str,
    pub framework: Framework,
    pub origin: &'static str,
    pub exporter: &'static str,
    /// What ONNX exporters of this framework write as the model's `producer_name` (lowercase
    /// prefixes), so that `aifn new --model` can name the origin of a model it is given.
    pub producers: &'static [&'static str],
}

impl Framework {
    pub const ALL: [FrameworkInfo; 21] = [
        FrameworkInfo {
            name: "onnx",
            framework: Framework::Onnx,
            origin: "a model written or saved as ONNX",
            exporter: "none needed",
            producers: &["onnx"],
        },
        FrameworkInfo {
            name: "pytorch",
            framework: Framework::Pytorch,
            origin: "PyTorch",
            exporter: "`torch.onnx.export`",
            producers: &["pytorch"],
        },
        FrameworkInfo {
            name: "tensorflow",
            framework: Framework::Tensorflow,
            origin: "TensorFlow",
            exporter: "`tf2onnx`",
            producers: &["tf2onnx"],
        },
        FrameworkInfo {
            name: "keras",
            framework: Framework::Keras,
            origin: "Keras",
            exporter: "`tf2onnx` (`from_keras`)",
            producers: &["keras2onnx"],
        },
        FrameworkInfo {
            name: "tflite",
            framework: Framework::Tflite,
            origin: "TensorFlow Lite",
            exporter: "`tf2onnx --tflite`",
            producers: &[],
        },
        FrameworkInfo {
            name: "jax",
            framework: Framework::Jax,
            origin: "JAX / Flax",
            exporter: "`jax2onnx`, or `jax2tf` then `tf2onnx`",
            producers: &["jax2onnx"],
        },
        FrameworkInfo {
            name: "sklearn",
            framework: Framework::Sklearn,
            origin: "scikit-learn",
            exporter: "`skl2onnx`, with ZipMap disabled so outputs are tensors",
            producers: &["skl2onnx"],
        },
        FrameworkInfo {
            name: "xgboost",
            framework: Framework::Xgboost,
            origin: "XGBoost",
            exporter: "`onnxmltools.convert_xgboost`",
            producers: &[],
        },
        FrameworkInfo {
            name: "lightgbm",
            framework: Framework::Lightgbm,
            origin: "LightGBM",
            exporter: "`onnxmltools.convert_lightgbm`",
            producers: &[],
        },
        FrameworkInfo {
            name: "catboost",
            framework: Framework::Catboost,
            origin: "CatBoost",
            exporter: "`model.save_model(path, format=\"onnx\")`",
            producers: &["catboost"],
        },
        FrameworkInfo {
            name: "paddle",
            framework: Framework::Paddle,
            origin: "PaddlePaddle",
            exporter: "`paddle2onnx`",
            producers: &["paddle"],
        },
        FrameworkInfo {
            name: "mxnet",
            framework: Framework::Mxnet,
            origin: "Apache MXNet",
            exporter: "`mx.onnx.export_model`",
            producers: &["mxnet"],
        },
        FrameworkInfo {
            name: "mindspore",
            framework: Framework::Mindspore,
            origin: "MindSpore",
            exporter: "`mindspore.export(..., file_format=\"ONNX\")`",
            producers: &["mindspore"],
        },
        FrameworkInfo {
            name: "caffe2",
            framework: Framework::Caffe2,
            origin: "Caffe2 (and Caffe models through it)",
            exporter: "`caffe2.python.onnx`",
            producers: &["caffe2"],
        },
        FrameworkInfo {
            name: "cntk",
            framework: Framework::Cntk,
            origin: "Microsoft CNTK",
            exporter: "`model.save(path, format=C.ModelFormat.ONNX)`",
            producers: &["cntk"],
        },
        FrameworkInfo {
            name: "chainer",
            framework: Framework::Chainer,
            origin: "Chainer",
            exporter: "`onnx_chainer.export`",
            producers: &["chainer"],
        },
        FrameworkInfo {
            name: "coreml",
            framework: Framework::Coreml,
            origin: "Apple Core ML",
            exporter: "`onnxmltools.convert_coreml`",
            producers: &[],
        },
        FrameworkInfo {
            name: "sparkml",
            framework: Framework::Sparkml,
            origin: "Spark ML",
            exporter: "`onnxmltools.convert_sparkml`",
            producers: &[],
        },
        FrameworkInfo {
            name: "libsvm",
            framework: Framework::Libsvm,
            origin: "LibSVM",
            exporter: "`onnxmltools.convert_libsvm`",
            producers: &[],
        },
        FrameworkInfo {
            name: "h2o",
            framework: Framework::H2o,
            origin: "H2O",
            exporter: "`onnxmltools.convert_h2o`",
            producers: &[],
        },
        FrameworkInfo {
            name: "matlab",
            framework: Framework::Matlab,
            origin: "MATLAB",
            exporter: "`exportONNXNetwork`",
            producers: &["matlab"],
        },
    ];

    pub fn info(self) -> &'static FrameworkInfo {
        Self::ALL
            .iter()
            .find(|info| info.framework == self)
            .expect("every framework is in ALL")
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The framework an ONNX file's `producer_name` says made it, when one does.
    pub fn from_producer(producer: &str) -> Option<Framework> {
        let producer = producer.to_ascii_lowercase();
        Self::ALL
            .iter()
            .find(|info| info.producers.iter().any(|p| producer.starts_with(p)))
            .map(|info| info.framework)
    }
}

impl ModelRuntime {
    /// Parses `[LANGUAGE:VERSION-]FRAMEWORK`, e.g. `onnx`, `pytorch`, `python:3.11-pytorch`.
    pub fn parse(text: &str) -> Result<ModelRuntime, String> {
        let names: Vec<&str> = Framework::ALL.iter().map(|info| info.name).collect();
        let known = || names.join(", ");
        let (language, framework_text) = match text.split_once(':') {
            Some((language, rest)) => {
                let Some((version, framework)) = rest.split_once('-') else {
                    return Err(format!(
                        "`{text}` must look like LANGUAGE:VERSION-FRAMEWORK (e.g. `python:3.11-pytorch`) or FRAMEWORK (one of {})",
                        known()
                    ));
                };
                let valid_version =
                    !version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.');
                if language != "python" || !valid_version {
                    return Err(format!(
                        "`{text}`: the language part must be `python:X.Y` (the models it exports are served as ONNX)"
                    ));
                }
                (Some(format!("{language}:{version}")), framework)
            }
            None => (None, text),
        };
        let framework = Framework::ALL
            .iter()
            .find(|info| info.name == framework_text)
            .map(|info| info.framework)
            .ok_or_else(|| {
                let hint = match crate::validate::closest(&framework_text.to_lowercase(), &names) {
                    Some(near) => format!(" (did you mean `{near}`?)"),
                    None => String::new(),
                };
                format!(
                    "unknown framework `{framework_text}` in `{text}`{hint}; expected one of {}",
                    known()
                )
            })?;
        Ok(ModelRuntime {
            text: text.to_string(),
            language,
            framework,
        })
    }

    /// How the host runs this model, in words for `aifn status`.
    pub fn execution_note(&self) -> String {
        match self.framework {
            Framework::Onnx => "ONNX model served natively by ONNX Runtime".to_string(),
            _ => format!(
                "`{}` model served from its ONNX export by ONNX Runtime (no Python in the serving path)",
                self.text
            ),
        }
    }
}

/// Writes `(key, value)` pairs as the mapping the spec is written with (not a list of pairs, which
/// does not parse back), in order and keeping repeated keys.
fn pairs_as_mapping<S: serde::Serializer>(
    pairs: &[(String, String)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes() {
        let r = ModelRuntime::parse("python:3.11-pytorch").unwrap();
        assert_eq!(r.framework, Framework::Pytorch);
        assert_eq!(r.language.as_deref(), Some("python:3.11"));
        assert_eq!(
            ModelRuntime::parse("onnx").unwrap().framework,
            Framework::Onnx
        );
        assert!(ModelRuntime::parse("java:17-dl4j").is_err());
        assert!(ModelRuntime::parse("python:3.11-caffe")
            .unwrap_err()
            .contains("unknown framework `caffe`"));
        assert!(ModelRuntime::parse("python:3.11").is_err());
        for framework in ["paddle", "jax", "mxnet", "catboost", "matlab"] {
            let parsed = ModelRuntime::parse(&format!("python:3.11-{framework}")).unwrap();
            assert_eq!(parsed.framework.name(), framework);
        }
    }

    #[test]
    fn a_misspelt_framework_gets_a_suggestion() {
        let message = ModelRuntime::parse("paddlepaddle").unwrap_err();
        assert!(
            message.contains("unknown framework `paddlepaddle`"),
            "{message}"
        );
        let message = ModelRuntime::parse("python:3.11-PyTorch").unwrap_err();
        assert!(message.contains("(did you mean `pytorch`?)"), "{message}");
        let message = ModelRuntime::parse("catbost").unwrap_err();
        assert!(message.contains("(did you mean `catboost`?)"), "{message}");
        let message = ModelRuntime::parse("caffe").unwrap_err();
        assert!(message.contains("(did you mean `caffe2`?)"), "{message}");
    }

    #[test]
    fn exporters_name_their_framework() {
        assert_eq!(
            Framework::from_producer("pytorch"),
            Some(Framework::Pytorch)
        );
        assert_eq!(
            Framework::from_producer("skl2onnx"),
            Some(Framework::Sklearn)
        );
        assert_eq!(
            Framework::from_producer("PaddlePaddle"),
            Some(Framework::Paddle)
        );
        assert_eq!(
            Framework::from_producer("tf2onnx"),
            Some(Framework::Tensorflow)
        );
        assert_eq!(Framework::from_producer("someone"), None);
        for info in Framework::ALL.iter() {
            assert_eq!(info.framework.name(), info.name);
        }
    }

    /// The reference and the editor schema list exactly the frameworks the validator takes.
    #[test]
    fn the_docs_and_the_schema_list_every_framework() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../spec");
        let reference = std::fs::read_to_string(format!("{root}/function.md")).unwrap();
        let schema = std::fs::read_to_string(format!("{root}/function.schema.json")).unwrap();
        let names: Vec<&str> = Framework::ALL.iter().map(|info| info.name).collect();
        for info in Framework::ALL.iter() {
            assert!(
                reference.contains(&format!("| `{}` | {} |", info.name, info.origin)),
                "spec/function.md has no row for {}",
                info.name
            );
        }
        assert!(reference.contains(&format!("FRAMEWORK = {}\n", names.join(" | "))));
        assert!(schema.contains(&format!("-)?({})$", names.join("|"))));
    }
}
