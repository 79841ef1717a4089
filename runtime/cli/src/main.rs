//! `aifn`: run a host, and deploy and manage functions on it.

mod build;
mod bundle;
mod client;
mod context;
mod image;
mod inspect;
mod installed;
mod scaffold;

use aifn_host::api::{self, DeployRequest};
use aifn_host::records::{Actor, Digest};
use aifn_host::{Host, HostConfig};
use anyhow::Context as _;
use bundle::{render_spec_errors, Bundle};
use clap::{Args, Parser, Subcommand};
use client::Client;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "aifn",
    version,
    about = "Serverless AI functions: WASM preprocessing next to ONNX models"
)]
struct Cli {
    /// How log lines are written to stderr: `text` for people, `json` (one object per line) for
    /// log shippers. `AIFN_LOG` filters them (`info`, `aifn::access=off`, ...).
    #[arg(long, global = true, env = "AIFN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum K8sCommand {
    /// Print the objects of a function version for `kubectl apply -f -` (or a GitOps repository):
    /// Deployment, Services, PodDisruptionBudget, KEDA ScaledObject and TriggerAuthentication,
    /// and with --gateway an HTTPRoute.
    Render {
        spec: PathBuf,
        /// The image serving this version; by default the spec's `ai.function/image` annotation.
        #[arg(long)]
        image: Option<String>,
        /// What names this version's objects (`NAME-VERSION`); by default from the image's tag.
        #[arg(long)]
        version: Option<String>,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The Gateway API Gateway (`NAME` or `NAMESPACE/NAME`) the HTTPRoute attaches to.
        #[arg(long)]
        gateway: Option<String>,
    },
    /// Print the Function CustomResourceDefinition.
    Crd,
    /// Print the manifest that installs the CRD and the operator (deploy/kubernetes/install.yaml).
    Install {
        #[arg(long, default_value = DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
    },
}

/// The operator's image as the install manifest names it.
const DEFAULT_OPERATOR_IMAGE: &str = "localhost/aifn/operator:0.1.0";

#[derive(Subcommand)]
enum ContextCommand {
    /// List the contexts (`*` marks the current one); tokens are never shown.
    Ls,
    /// Make a context the one commands use.
    Use { name: String },
    /// Add a host (or replace the context of that name). The token is read from standard input
    /// (`--token-stdin`) or from a host's state directory on this machine (`--state-dir`), never
    /// from the command line, and checked against the host unless --no-check.
    Add {
        name: String,
        /// The host's control-plane URL (`http://HOST:8081`, or https://).
        #[arg(long)]
        admin: String,
        /// Its data-plane URL, where clients call the functions (shown by `aifn deploy`).
        #[arg(long)]
        url: Option<String>,
        /// Read the admin token from standard input.
        #[arg(long, conflicts_with = "state_dir")]
        token_stdin: bool,
        /// Read the admin token from this host state directory (`admin-token`).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// PEM CA certificate(s) to trust for an https:// host.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Do not call the host to check the token (it may be down).
        #[arg(long)]
        no_check: bool,
        /// Do not make it the current context.
        #[arg(long)]
        keep_current: bool,
    },
    /// Remove a context.
    Rm { name: String },
    /// Print the current context's name.
    Current,
}

#[derive(Subcommand)]
enum Command {
    /// The hosts this CLI talks to, by name (`~/.config/aifn/config.yaml`, mode 0600).
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Run a host: data plane, control plane and v2 inference protocol on one address.
    Serve(ServeArgs),
    /// Write a function version as a directory a pod serves (`aifn serve --bundle DIR`): the spec,
    /// each file it names, and bundle.json with their sha256 and the bundle's digest. Builds the
    /// module first if the spec says how.
    Bundle {
        spec: PathBuf,
        /// The directory to write (created if absent).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the OCI image of a function version (buildah, from this machine's files): the host,
    /// ONNX Runtime and the bundle, tagged by the bundle's digest. Prints the image's name.
    Image {
        spec: PathBuf,
        /// The image's repository; by default `localhost/aifn/NAME`.
        #[arg(long)]
        repository: Option<String>,
        /// A buildah store of its own (`--root DIR/root --runroot DIR/run`); by default buildah's.
        #[arg(long)]
        storage: Option<PathBuf>,
    },
    /// Kubernetes: the objects of a function, the Function CRD, the install manifest.
    K8s {
        #[command(subcommand)]
        command: K8sCommand,
    },
    /// Run a host with the given functions deployed, in one process (the quick start).
    Up {
        /// Function specs to deploy.
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Write a new function from a template: spec, model, and a module in LANG that builds and
    /// deploys as written.
    New {
        /// rust, c, python, zig or assemblyscript.
        #[arg(long = "lang", value_parser = parse_language)]
        language: aifn_spec::Language,
        name: String,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Start from this ONNX model instead of the template's: the spec serves it, and the
        /// module is a skeleton with its inputs' names, types and shapes filled in.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Show what an ONNX model declares: inputs and outputs (names, types, shapes with their
    /// dynamic dimensions named), operator sets, producer, metadata and size.
    Inspect {
        model: PathBuf,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compile a function's module from source (the spec's `module.build`) with its language's
    /// toolchain; says what is missing and how to install it.
    Build {
        #[arg(default_value = "function.yaml")]
        spec: PathBuf,
        /// Build even when the module is up to date.
        #[arg(long)]
        force: bool,
    },
    /// Check specs and print every error with its line and column.
    Validate {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        /// Print the normalised spec (defaults filled in) when it is valid.
        #[arg(long)]
        print: bool,
    },
    /// Upload a function's spec, model and module to a host as a new version, which replaces the
    /// serving one at once or by a rollout (the spec's `rollout`, or the flags).
    Deploy {
        spec: PathBuf,
        /// Roll the new version out in steps (default 1% → 10% → 100%), judged against the stable one.
        #[arg(long, group = "strategy")]
        canary: bool,
        /// Send the new version a copy of live traffic; callers keep the stable version's answers.
        #[arg(long, group = "strategy")]
        shadow: bool,
        /// Replace the serving version at once, whatever the spec's `rollout` says.
        #[arg(long, group = "strategy")]
        immediate: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Move a rollout on: its next step (or, with --full, all traffic); in a watch, end it.
    Promote {
        name: String,
        #[arg(long)]
        full: bool,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop a rollout: the version it started from takes all traffic back.
    Abort {
        name: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a function's audit log: who deployed, rolled back, changed traffic, and why.
    History {
        name: String,
        /// Print the events as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show whether a function's model is still right: drift per feature, alerts, throughput.
    Monitor {
        name: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// List recent answers a label would help most with (as JSON), for a labelling process
        /// to answer through POST /aifn/v1/feedback/NAME.
        #[arg(long)]
        to_label: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Delete a function's old versions (never one serving or in a rollout) and unused artifacts.
    Prune {
        name: String,
        /// Versions to keep (default: the host's --keep-versions).
        #[arg(long)]
        keep: Option<usize>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the functions a host serves.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show a function's serving version, endpoints, model signature and placement.
    Status {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the versions of a function the host keeps: who deployed them, when, their digests.
    Versions {
        name: String,
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Put an earlier version of a function back in service (default: the one before the current;
    /// during a rollout, the version it started from).
    Rollback {
        name: String,
        /// The version to serve.
        #[arg(long)]
        to: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Stop serving a function (its versions stay in the host's store).
    Delete {
        name: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// The host's model store: model ids and the files they resolve to.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// API keys for endpoints with `auth: api_key`.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the address of the host's dashboard (live charts, rollouts, drift, alerts), with
    /// the admin token in its fragment; --open opens it in the desktop's browser.
    Dashboard {
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Show the host's trace export, or change its sample rate while it runs.
    Tracing {
        /// The share of requests head sampling keeps, 0 to 1 (errors and requests over their
        /// target_latency are exported whatever it is).
        #[arg(long)]
        sample_rate: Option<f64>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Upload an ONNX file and register it under a model id.
    Push {
        id: String,
        file: PathBuf,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List registered models.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once and never again.
    Create {
        #[arg(long)]
        function: String,
        /// Limit the key to one route of the function.
        #[arg(long)]
        endpoint: Option<String>,
        /// Lifetime, such as `30d`, `12h` or `90m`.
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List keys (ids and scopes, never the secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Revoke a key; it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Address the data plane listens on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "AIFN_LISTEN", default_value = HostConfig::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address the control plane (`/admin/v1`, `/metrics`) listens on: keep it on loopback or a
    /// private network.
    #[arg(long, env = "AIFN_ADMIN_LISTEN", default_value = HostConfig::DEFAULT_ADMIN_LISTEN)]
    admin_listen: SocketAddr,
    /// Read-only token for scraping `/metrics`; by default one is created in the state directory.
    #[arg(long, env = "AIFN_METRICS_TOKEN", hide_env_values = true)]
    metrics_token: Option<String>,
    /// Longest a control-plane request (an upload, a deploy that loads a model) may take, in seconds.
    #[arg(long, env = "AIFN_ADMIN_TIMEOUT_SECS", default_value_t = HostConfig::DEFAULT_ADMIN_TIMEOUT.as_secs(), value_parser = at_least::<1, u64>)]
    admin_timeout_secs: u64,
    /// Where deployments, artifacts and the admin token are kept.
    #[arg(long, env = "AIFN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Control-plane token; by default one is created in the state directory.
    #[arg(long, env = "AIFN_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// ONNX Runtime library; by default the install's (scripts/install.sh), else found through
    /// ORT_DYLIB_PATH or the onnxruntime Python package.
    #[arg(long, env = "AIFN_ONNXRUNTIME")]
    onnxruntime: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, env = "AIFN_MAX_BODY_BYTES", default_value_t = HostConfig::DEFAULT_MAX_BODY_BYTES, value_parser = at_least::<1, usize>)]
    max_body_bytes: usize,
    /// Longest a request may take, in seconds.
    #[arg(long, env = "AIFN_REQUEST_TIMEOUT_SECS", default_value_t = HostConfig::DEFAULT_REQUEST_TIMEOUT.as_secs(), value_parser = at_least::<1, u64>)]
    request_timeout_secs: u64,
    /// How long a client may take to send a request's headers, in milliseconds (slow clients are cut off).
    #[arg(long, env = "AIFN_HEADER_TIMEOUT_MS", default_value_t = HostConfig::DEFAULT_HEADER_READ_TIMEOUT.as_millis() as u64, value_parser = at_least::<1, u64>)]
    header_timeout_ms: u64,
    /// Bundle directories to serve (`aifn bundle`), each checked against its manifest before
    /// anything loads: how a pod starts. Repeatable.
    #[arg(long = "bundle", env = "AIFN_BUNDLE", value_delimiter = ',')]
    bundles: Vec<PathBuf>,
    /// After SIGTERM, readiness says no at once and requests are still taken this long, so that
    /// load balancers take the host out before it stops listening, in milliseconds.
    #[arg(long, env = "AIFN_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    shutdown_delay_ms: u64,
    /// Then, how long open connections may take to finish their requests, in seconds.
    #[arg(long, env = "AIFN_DRAIN_TIMEOUT_SECS", default_value_t = HostConfig::DEFAULT_DRAIN_TIMEOUT.as_secs())]
    drain_timeout_secs: u64,
    /// Deadline of one module call when the spec sets none, in milliseconds.
    #[arg(long, env = "AIFN_MODULE_TIMEOUT_MS", default_value_t = HostConfig::DEFAULT_MODULE_TIMEOUT.as_millis() as u64, value_parser = at_least::<1, u64>)]
    module_timeout_ms: u64,
    /// Largest response body or set of tensors a module may return, in bytes (larger: 500).
    #[arg(long, env = "AIFN_MAX_MODULE_OUTPUT_BYTES", default_value_t = HostConfig::DEFAULT_MAX_MODULE_OUTPUT_BYTES, value_parser = at_least::<1, usize>)]
    max_module_output_bytes: usize,
    /// Elements the raw tensors of one request may hold (v2 route, endpoints without a module; 413 above).
    #[arg(long, env = "AIFN_MAX_TENSOR_ELEMENTS", default_value_t = HostConfig::DEFAULT_MAX_TENSOR_ELEMENTS, value_parser = at_least::<1, usize>)]
    max_tensor_elements: usize,
    /// Largest merged input of a dynamic batch, in bytes (requests that would merge to more run one by one).
    #[arg(long, env = "AIFN_MAX_BATCH_BYTES", default_value_t = HostConfig::DEFAULT_MAX_BATCH_BYTES, value_parser = at_least::<1, usize>)]
    max_batch_bytes: usize,
    /// Microseconds an instance that finished a job keeps looking for the next before it sleeps
    /// (yielding its core to other threads meanwhile); 0: sleep at once.
    #[arg(long, env = "AIFN_IDLE_SPIN_US", default_value_t = HostConfig::DEFAULT_IDLE_SPIN.as_micros() as u64)]
    idle_spin_us: u64,
    /// Bytes of log lines a module may write per request (the rest is dropped).
    #[arg(long, env = "AIFN_MAX_MODULE_LOG_BYTES", default_value_t = HostConfig::DEFAULT_MAX_MODULE_LOG_BYTES, value_parser = at_least::<1, usize>)]
    max_module_log_bytes: usize,
    /// Connections open at once; more are answered 503 and closed (default: sized to memory and open-file limit).
    #[arg(long, env = "AIFN_MAX_CONNECTIONS", value_parser = at_least::<1, usize>)]
    max_connections: Option<usize>,
    /// Largest request head (request line and headers), in bytes (431 above).
    #[arg(long, env = "AIFN_MAX_HEADER_BYTES", default_value_t = HostConfig::DEFAULT_MAX_HEADER_BYTES, value_parser = at_least::<1024, usize>)]
    max_header_bytes: usize,
    /// Most headers one request may carry (431 above).
    #[arg(long, env = "AIFN_MAX_HEADERS", default_value_t = HostConfig::DEFAULT_MAX_HEADERS, value_parser = at_least::<1, usize>)]
    max_headers: usize,
    /// Most instances a function gets, whatever its spec asks (default: number of cores).
    #[arg(long, env = "AIFN_MAX_INSTANCES", value_parser = at_least::<1, usize>)]
    max_instances: Option<usize>,
    /// The autoscaler's stable window in seconds (Knative's: 60); its panic window is a tenth.
    #[arg(long, env = "AIFN_AUTOSCALE_WINDOW_SECS", default_value_t = HostConfig::DEFAULT_AUTOSCALE_STABLE_WINDOW.as_secs_f64(), value_parser = seconds_at_least::<100>)]
    autoscale_window_secs: f64,
    /// Seconds fewer instances must have been enough before the autoscaler removes any.
    #[arg(long, env = "AIFN_SCALE_DOWN_DELAY_SECS", default_value_t = HostConfig::DEFAULT_AUTOSCALE_SCALE_DOWN_DELAY.as_secs_f64(), value_parser = seconds_at_least::<0>)]
    scale_down_delay_secs: f64,
    /// HS256 secret that verifies JWTs on `auth: jwt` endpoints.
    #[arg(long, env = "AIFN_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// JSON Web Key Set file with the RS256 keys that verify JWTs on `auth: jwt` endpoints.
    #[arg(long, env = "AIFN_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,
    /// OAuth2 client id the host presents at token introspection endpoints (`jwt.introspection`).
    #[arg(
        long,
        env = "AIFN_INTROSPECTION_CLIENT_ID",
        requires = "introspection_client_secret"
    )]
    introspection_client_id: Option<String>,
    /// Its client secret.
    #[arg(long, env = "AIFN_INTROSPECTION_CLIENT_SECRET", hide_env_values = true)]
    introspection_client_secret: Option<String>,
    /// PEM certificate chain: both listeners then speak TLS only (ALPN h2 and http/1.1). Read
    /// again when it or the key changes.
    #[arg(long, env = "AIFN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "AIFN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): clients must present a certificate it signed (mTLS).
    #[arg(long, env = "AIFN_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Requests per second the host accepts for all functions together (429 above).
    #[arg(long, env = "AIFN_MAX_REQUESTS_PER_SECOND", value_parser = positive_rate)]
    max_requests_per_second: Option<f64>,
    /// http:// URL that rollout events (automatic rollbacks above all) are POSTed to as JSON.
    #[arg(long, env = "AIFN_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Versions kept per function; older ones not serving are pruned after each deploy.
    #[arg(long, env = "AIFN_KEEP_VERSIONS", default_value_t = HostConfig::DEFAULT_KEEP_VERSIONS, value_parser = at_least::<1, usize>)]
    keep_versions: usize,
    /// How often rollouts are judged, in milliseconds.
    #[arg(long, env = "AIFN_ROLLOUT_TICK_MS", default_value_t = HostConfig::DEFAULT_ROLLOUT_TICK.as_millis() as u64, value_parser = at_least::<10, u64>)]
    rollout_tick_ms: u64,
    /// Log a line per request (route, status, latency, version, cache, caller, request id) on the
    /// `aifn::access` target.
    #[arg(long, env = "AIFN_ACCESS_LOG")]
    access_log: bool,
    /// Export traces of data-plane requests to this OTLP collector (`http://HOST:4318` for
    /// HTTP/protobuf, `http://HOST:4317` for gRPC).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// OTLP's transport: `http/protobuf` or `grpc`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_PROTOCOL", default_value = "http/protobuf", value_parser = ["http/protobuf", "grpc"])]
    otlp_protocol: String,
    /// The share of requests whose traces head sampling keeps (0 to 1; `aifn tracing
    /// --sample-rate` changes it while the host runs). A caller's sampled `traceparent` is
    /// followed; errors and requests over their target_latency are exported whatever the rate.
    #[arg(long, env = "AIFN_TRACE_SAMPLE_RATE", default_value_t = 0.01, value_parser = share)]
    trace_sample_rate: f64,
    /// The `service.name` the traces carry.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "aifn")]
    service_name: String,
    /// The context this host is recorded as, and made current, once it listens (`aifn context`),
    /// so that later commands on this machine reach it without flags. A pod (`--bundle`)
    /// records none.
    #[arg(long = "context", default_value = "local")]
    context_name: String,
    /// Record no context.
    #[arg(long, conflicts_with = "context_name")]
    no_context: bool,
}

fn share(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err("must be from 0 to 1".into());
    }
    Ok(value)
}

/// A whole number of at least `MIN`; clap names the flag when it is not.
fn at_least<const MIN: u64, T: std::str::FromStr + TryInto<u64> + Copy>(
    text: &str,
) -> Result<T, String> {
    let value: T = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))?;
    // A value too large for u64 is also large enough.
    if value.try_into().is_ok_and(|v: u64| v < MIN) {
        return Err(format!("must be at least {MIN}"));
    }
    Ok(value)
}

/// Seconds, at least `MIN_MS` milliseconds.
fn seconds_at_least<const MIN_MS: u64>(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    let min = MIN_MS as f64 / 1000.0;
    if !value.is_finite() || value < min {
        return Err(format!("must be at least {min} seconds"));
    }
    Ok(value)
}

fn positive_rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if !value.is_finite() || value <= 0.0 {
        return Err("must be more than 0 requests per second".into());
    }
    Ok(value)
}

#[derive(Args, Clone)]
struct RemoteArgs {
    /// The context (`aifn context ls`) to talk to, instead of the current one.
    #[arg(long, env = "AIFN_CONTEXT")]
    context: Option<String>,
    /// The host's control-plane URL; by default the current context's, else the one a host on
    /// this machine recorded in its state directory (`admin-address`), else http://127.0.0.1:8081.
    #[arg(long, env = "AIFN_HOST")]
    host: Option<String>,
    /// Admin token; by default the context's, or read from the state directory of a host on
    /// this machine.
    #[arg(long, env = "AIFN_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// State directory to read the admin token from.
    #[arg(long, env = "AIFN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for an https:// host (instead of the public web roots).
    #[arg(long, env = "AIFN_CA_FILE")]
    ca_file: Option<PathBuf>,
}

/// Blocks of 256 KiB and more are mapped on their own and unmapped when freed. glibc otherwise
/// raises this threshold to the largest block freed so far, so after one large inference the
/// activations of later ones come from the heap, which keeps its high-water mark.
fn return_large_frees_to_the_kernel() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Up { .. });
    if serving {
        return_large_frees_to_the_kernel();
    } else {
        // Die quietly when stdout's reader goes away (`aifn ls | head -1`), as other tools do,
        // instead of panicking on the failed write. Never in a host: there a client that closes
        // its connection while TLS writes to it (writev, which has no MSG_NOSIGNAL) would kill
        // the process; ignored, the write fails and only that connection ends.
        #[cfg(unix)]
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let default_level = if serving { "info" } else { "warn" };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIFN_LOG")
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        // One flat object per line: the event's fields beside `timestamp`, `level` and `target`.
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_language(text: &str) -> Result<aifn_spec::Language, String> {
    aifn_spec::Language::parse(text).ok_or_else(|| {
        let known: Vec<&str> = aifn_spec::Language::ALL.iter().map(|l| l.name()).collect();
        format!("expected one of: {}", known.join(", "))
    })
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Context { command } => context_command(command),
        Command::Serve(args) => serve(args, Vec::new()),
        Command::Up { specs, serve: args } => serve(args, specs),
        Command::New {
            language,
            name,
            dir,
            model,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let model = match &model {
                Some(path) => Some(build::StartingModel {
                    path,
                    facts: inspect::inspect(path)?,
                }),
                None => None,
            };
            let spec = build::new_function(language, &name, &dir, model.as_ref())?;
            println!("wrote a {language} function in {}", dir.display());
            println!(
                "  aifn deploy {}   # builds the module, then deploys",
                spec.display()
            );
            let body = if model.is_some() {
                "''"
            } else {
                "'hello world'"
            };
            // Where the current context's host takes calls, if there is one.
            let contexts = context::Contexts::load(&context::config_path()).unwrap_or_default();
            let data_url = contexts
                .selected(None)
                .ok()
                .flatten()
                .and_then(|c| c.url.clone())
                .unwrap_or_else(|| format!("http://{}", HostConfig::DEFAULT_LISTEN));
            println!("  curl -d {body} {data_url}/v1/{name}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect { model, json } => {
            let facts = inspect::inspect(&model)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&facts)?);
            } else {
                print!("{}", inspect::describe(&model, &facts));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { spec, force } => {
            match build::build(&spec, force)? {
                build::Outcome::NothingToBuild => {
                    println!("{}: no spec.module.build, nothing to build", spec.display())
                }
                build::Outcome::UpToDate(wasm) => println!("{} is up to date", wasm.display()),
                build::Outcome::Compiled => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { specs, print } => validate(&specs, print),
        Command::Bundle { spec, out } => {
            build::build(&spec, false)?;
            let manifest = Bundle::load(&spec)?.write_to(&out)?;
            println!(
                "bundled {} into {} ({} files, {})",
                manifest.name,
                out.display(),
                manifest.files.len() + 1,
                manifest.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Image {
            spec,
            repository,
            storage,
        } => {
            build::build(&spec, false)?;
            let built = image::build_image(&spec, repository.as_deref(), &image::Storage(storage))?;
            println!(
                "built {} ({} MB, bundle {})",
                built.reference,
                built.size / 1_000_000,
                built.digest
            );
            println!(
                "  serve it on Kubernetes: set metadata.annotations.\"{}\" to it, or `aifn k8s render --image`",
                aifn_k8s::IMAGE_ANNOTATION
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::K8s { command } => {
            let objects = match command {
                K8sCommand::Render {
                    spec,
                    image,
                    version,
                    namespace,
                    gateway,
                } => {
                    let (_, spec) = bundle::read_spec(&spec)?;
                    let version = aifn_k8s::render::Version::new(spec, image, version)?;
                    let placement = aifn_k8s::render::Placement { namespace, gateway };
                    aifn_k8s::render::render(&version, &placement)
                }
                K8sCommand::Crd => vec![aifn_k8s::crd::function_crd()],
                K8sCommand::Install { operator_image } => {
                    aifn_k8s::install::install_manifest(&operator_image)
                }
            };
            print!("{}", aifn_k8s::to_yaml(&objects));
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy {
            spec,
            canary,
            shadow,
            immediate,
            reason,
            remote,
        } => {
            build::build(&spec, false)?;
            let bundle = Bundle::load(&spec)?;
            let client = remote.client()?;
            use aifn_spec::RolloutStrategy;
            let strategy = [
                (canary, RolloutStrategy::Canary),
                (shadow, RolloutStrategy::Shadow),
                (immediate, RolloutStrategy::Immediate),
            ]
            .into_iter()
            .find_map(|(set, strategy)| set.then_some(strategy));
            let outcome = client.deploy(&bundle, strategy, reason.as_deref())?;
            let data_url = client.data_url.as_deref().or(outcome.data_url.as_deref());
            print_deploy(data_url.unwrap_or(""), &outcome);
            if outcome.version != outcome.serving_version {
                println!(
                    "  rolling out: `aifn status {0}` shows it, `aifn promote {0}` / `aifn abort {0}` act on it",
                    outcome.name
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Promote {
            name,
            full,
            reason,
            remote,
        } => {
            let answer = remote
                .client()?
                .promote(&name, &api::PromoteRequest { full, reason })?;
            let serving = answer.serving.map_or("?".into(), |v| v.to_string());
            match answer.rollout.map(|r| (r.phase, r.candidate_share)) {
                Some((aifn_host::records::Phase::Step { .. }, share)) => println!(
                    "{name}: version {} now takes {share}% of traffic",
                    answer.candidate
                ),
                Some((aifn_host::records::Phase::Watch { until_ms, .. }, _)) => println!(
                    "{name}: version {serving} takes all traffic, watched until {}",
                    format_ms(until_ms)
                ),
                _ => println!("{name}: version {serving} serves all traffic; rollout complete"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Abort {
            name,
            reason,
            remote,
        } => {
            let answer = remote
                .client()?
                .abort(&name, &api::AbortRequest { reason })?;
            println!(
                "{name}: rollout aborted; version {} serves all traffic",
                answer.serving
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::History { name, json, remote } => {
            let history = remote.client()?.history(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history.events)?);
            } else {
                print_history(&history);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Monitor {
            name,
            json,
            to_label,
            remote,
        } => {
            if to_label {
                let asked = remote.client()?.to_label(&name)?;
                println!("{}", serde_json::to_string_pretty(&asked)?);
                return Ok(ExitCode::SUCCESS);
            }
            let report = remote.client()?.monitor(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", monitor_table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune { name, keep, remote } => {
            let outcome = remote.client()?.prune(&name, &api::PruneRequest { keep })?;
            println!(
                "{name}: removed versions {}, kept {}; removed {} unused artifact(s), {} bytes",
                serde_json::to_string(&outcome.pruned)?,
                outcome.kept,
                outcome.blobs_removed,
                outcome.bytes_freed
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { remote } => {
            print_list(&remote.client()?.list()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { name, remote } => {
            let status = remote.client()?.status(&name)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Versions { name, json, remote } => {
            let versions = remote.client()?.versions(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
            } else {
                print_versions(&versions);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            name,
            to,
            reason,
            remote,
        } => {
            let outcome = remote
                .client()?
                .rollback(&name, &api::RollbackRequest { to, reason })?;
            let verb = if outcome.unchanged {
                "already serving"
            } else {
                "rolled back to"
            };
            println!(
                "{name}: {verb} version {} ({})",
                outcome.version, outcome.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete { name, remote } => {
            let deleted = remote.client()?.delete(&name)?;
            println!(
                "deleted {name} (was serving version {})",
                deleted.deleted_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Push { id, file, remote }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let digest = Digest::of(&bytes);
            let client = remote.client()?;
            client.upload(&bytes, &digest)?;
            client.register_model(&id, &digest)?;
            println!("model {id} -> {digest} ({} bytes)", bytes.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Models(ModelsCommand::Ls { remote }) => {
            let models = remote.client()?.models()?;
            println!("{}", serde_json::to_string_pretty(&models.models)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Create {
            function,
            endpoint,
            expires,
            remote,
        }) => {
            let ttl_seconds = expires.as_deref().map(parse_lifetime).transpose()?;
            let key = remote.client()?.create_key(&api::CreateKey {
                function: function.clone(),
                endpoint,
                ttl_seconds,
            })?;
            eprintln!(
                "key {} for {function} (shown once; the host keeps only its hash):",
                key.view.id
            );
            println!("{}", key.key);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::List { remote }) => {
            let keys = remote.client()?.keys()?;
            println!("{}", serde_json::to_string_pretty(&keys.keys)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Revoke { id, remote }) => {
            remote.client()?.revoke_key(&id)?;
            println!("revoked {id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Dashboard { open, remote } => {
            let client = remote.client()?;
            client.list()?; // the host answers, and takes the token
            let url = client.dashboard_url();
            println!("{url}");
            if open {
                let opened = std::process::Command::new("xdg-open")
                    .arg(&url)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                if !opened.is_ok_and(|s| s.success()) {
                    eprintln!("could not open a browser (xdg-open); open the address above");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Tracing {
            sample_rate,
            remote,
        } => {
            let client = remote.client()?;
            let tracing = match sample_rate {
                Some(sample_rate) => client.set_tracing(&api::Tracing {
                    sample_rate,
                    endpoint: None,
                })?,
                None => client.tracing()?,
            };
            println!("{}", serde_json::to_string_pretty(&tracing)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A key lifetime: `30d`, or any spec duration (`12h`, `90m`).
fn parse_lifetime(text: &str) -> anyhow::Result<u64> {
    if let Some(days) = text.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .with_context(|| format!("--expires: `{text}` is not a number of days"))?;
        return Ok(days * 86_400);
    }
    let seconds = aifn_spec::quantity::parse_duration(text)
        .map(|d| d.0.as_secs())
        .map_err(|m| anyhow::anyhow!("--expires: {m}"))?;
    if seconds == 0 {
        anyhow::bail!("--expires: `{text}` is under a second");
    }
    Ok(seconds)
}

fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("aifn");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/aifn"),
        None => PathBuf::from(".aifn"),
    }
}

impl RemoteArgs {
    /// A client of the control plane, from the first of: `--host`/`--token`/`--state-dir` (and
    /// their variables), the context named by `--context`, the current context, and the state
    /// directory of a host on this machine.
    fn client(&self) -> anyhow::Result<Client> {
        let explicit = self.host.is_some() || self.token.is_some() || self.state_dir.is_some();
        let contexts = match context::Contexts::load(&context::config_path()) {
            Ok(contexts) => contexts,
            // A broken contexts file does not stand in the way of a host named outright.
            Err(e) if explicit && self.context.is_none() => {
                eprintln!("warning: {e:#}");
                context::Contexts::default()
            }
            Err(e) => return Err(e),
        };
        if !explicit || self.context.is_some() {
            if let Some(chosen) = contexts.selected(self.context.as_deref())? {
                let ca_file = self.ca_file.as_deref().or(chosen.ca_file.as_deref());
                let mut client = Client::new(&chosen.admin, chosen.token.clone(), ca_file)?;
                client.data_url = chosen.url.clone();
                return Ok(client);
            }
        }
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        let recorded = std::fs::read_to_string(state_dir.join("admin-address"))
            .ok()
            .map(|a| a.trim().trim_end_matches('/').to_string());
        let host = match (&self.host, &recorded) {
            (Some(host), _) => host.trim_end_matches('/').to_string(),
            (None, Some(recorded)) => recorded.clone(),
            (None, None) => format!("http://{}", HostConfig::DEFAULT_ADMIN_LISTEN),
        };
        let token = match &self.token {
            Some(token) => token.clone(),
            // A context that knows this address has its token.
            None if self.state_dir.is_none() && contexts.for_admin(&host).is_some() => {
                let known = contexts.for_admin(&host).expect("checked");
                let ca_file = self.ca_file.as_deref().or(known.ca_file.as_deref());
                return Client::new(&host, known.token.clone(), ca_file);
            }
            None => {
                let path = state_dir.join("admin-token");
                if recorded.as_deref() != Some(host.as_str()) {
                    anyhow::bail!(
                        "the admin token in {} belongs to the host at {}, not {host}; pass --token (or AIFN_ADMIN_TOKEN) for that host, or add it as a context (`aifn context add`)",
                        path.display(),
                        recorded.as_deref().unwrap_or("(no address recorded)")
                    );
                }
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_string())
                    .with_context(|| {
                        format!(
                            "no admin token: start a host with `aifn serve` (it records a context), add one with `aifn context add`, or pass --token (reading {})",
                            path.display()
                        )
                    })?
            }
        };
        Client::new(&host, token, self.ca_file.as_deref())
    }
}

/// `aifn context ...`.
fn context_command(command: ContextCommand) -> anyhow::Result<ExitCode> {
    match command {
        ContextCommand::Ls => {
            print!(
                "{}",
                context::table(&context::Contexts::load(&context::config_path())?)
            );
        }
        ContextCommand::Current => {
            let contexts = context::Contexts::load(&context::config_path())?;
            match contexts.current {
                Some(name) => println!("{name}"),
                None => {
                    anyhow::bail!("no current context (`aifn context ls`, `aifn context use NAME`)")
                }
            }
        }
        ContextCommand::Use { name } => {
            context::update(|contexts| contexts.use_context(&name))?;
            println!("now using context {name}");
        }
        ContextCommand::Rm { name } => {
            context::update(|contexts| contexts.remove(&name))?;
            println!("removed context {name}");
        }
        ContextCommand::Add {
            name,
            admin,
            url,
            token_stdin,
            state_dir,
            ca_file,
            no_check,
            keep_current,
        } => {
            if let Err(message) = aifn_spec::validate::check_name(&name) {
                anyhow::bail!("context name: {message}");
            }
            let token = match (&state_dir, token_stdin) {
                (Some(dir), _) => {
                    let path = dir.join("admin-token");
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?
                }
                (None, true) => {
                    let mut token = String::new();
                    std::io::stdin().read_line(&mut token)?;
                    token
                }
                (None, false) => {
                    anyhow::bail!("give the admin token with --token-stdin or --state-dir")
                }
            };
            let token = token.trim().to_string();
            if token.is_empty() {
                anyhow::bail!("the admin token is empty");
            }
            let admin = admin.trim_end_matches('/').to_string();
            if !no_check {
                Client::new(&admin, token.clone(), ca_file.as_deref())?
                    .list()
                    .with_context(|| {
                        format!("checking the token against {admin} (--no-check skips this)")
                    })?;
            }
            let host = context::HostContext {
                name: name.clone(),
                admin,
                url: url.map(|u| u.trim_end_matches('/').to_string()),
                token,
                ca_file: ca_file.map(std::path::absolute).transpose()?,
            };
            context::update(|contexts| {
                contexts.put(host);
                if !keep_current || contexts.current.is_none() {
                    contexts.current = Some(name.clone());
                }
                Ok(())
            })?;
            println!("added context {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(specs: &[PathBuf], print: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for path in specs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match aifn_spec::parse(&text) {
            Ok(spec) => {
                println!(
                    "{}: valid ({} endpoint(s))",
                    path.display(),
                    spec.spec.endpoints.len()
                );
                if print {
                    print!("{}", aifn_spec::to_yaml(&spec));
                }
            }
            Err(errors) => {
                failed = true;
                println!("{}", render_spec_errors(path, &errors));
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn serve(args: ServeArgs, specs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    // Read every spec before starting, so a typo fails fast. Bundle directories are served as
    // they were bundled: checked, never built.
    let mut bundles = specs
        .iter()
        .map(|p| build::build(p, false).and_then(|_| Bundle::load(p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for dir in &args.bundles {
        let (manifest, bundle) = bundle::load_bundle_dir(dir)?;
        tracing::info!(bundle = %dir.display(), digest = %manifest.digest, "bundle checked");
        bundles.push(bundle);
    }
    let shutdown_delay = std::time::Duration::from_millis(args.shutdown_delay_ms);
    let (context_name, no_context) = (
        args.context_name,
        args.no_context || !args.bundles.is_empty(),
    );
    let mut config = HostConfig::new(
        args.listen,
        args.state_dir.unwrap_or_else(default_state_dir),
    );
    config.admin_token = args.admin_token;
    config.admin_listen = args.admin_listen;
    config.metrics_token = args.metrics_token;
    config.admin_timeout = std::time::Duration::from_secs(args.admin_timeout_secs);
    config.onnxruntime = args.onnxruntime.or_else(installed::onnxruntime);
    config.max_body_bytes = args.max_body_bytes;
    config.request_timeout = std::time::Duration::from_secs(args.request_timeout_secs);
    config.module_timeout = std::time::Duration::from_millis(args.module_timeout_ms);
    config.max_module_output_bytes = args.max_module_output_bytes;
    config.header_read_timeout = std::time::Duration::from_millis(args.header_timeout_ms);
    config.drain_timeout = std::time::Duration::from_secs(args.drain_timeout_secs);
    config.max_tensor_elements = args.max_tensor_elements;
    config.max_batch_bytes = args.max_batch_bytes;
    config.idle_spin = std::time::Duration::from_micros(args.idle_spin_us);
    config.max_module_log_bytes = args.max_module_log_bytes;
    config.max_connections = args
        .max_connections
        .unwrap_or_else(|| HostConfig::default_max_connections(args.max_body_bytes));
    config.max_header_bytes = args.max_header_bytes;
    config.max_headers = args.max_headers;
    config.jwt_secret = args.jwt_secret;
    config.jwt_jwks = args.jwt_jwks;
    config.introspection_client = aifn_host::policy::introspection::ClientCredentials {
        id: args.introspection_client_id,
        secret: args.introspection_client_secret,
    };
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(aifn_host::http::tls::TlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca,
        });
    }
    config.max_requests_per_second = args.max_requests_per_second;
    if let Some(max) = args.max_instances {
        config.max_instances_per_function = max;
    }
    config.autoscale_stable_window = std::time::Duration::from_secs_f64(args.autoscale_window_secs);
    config.autoscale_scale_down_delay =
        std::time::Duration::from_secs_f64(args.scale_down_delay_secs);
    config.webhook_url = args.webhook_url;
    config.keep_versions = args.keep_versions;
    config.rollout_tick = std::time::Duration::from_millis(args.rollout_tick_ms);
    config.access_log = args.access_log;
    config.traces = args
        .otlp_endpoint
        .map(|endpoint| aifn_host::traces::TraceConfig {
            endpoint,
            protocol: if args.otlp_protocol == "grpc" {
                aifn_host::traces::OtlpProtocol::Grpc
            } else {
                aifn_host::traces::OtlpProtocol::HttpProtobuf
            },
            sample_rate: args.trace_sample_rate,
            service_name: args.service_name,
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("aifn-io")
        .build()?;
    runtime.block_on(async move {
        let host = Arc::new(Host::new(config)?);
        let listener = tokio::net::TcpListener::bind(host.config.listen)
            .await
            .with_context(|| format!("listening on {}", host.config.listen))?;
        let address = listener.local_addr()?;
        let control = tokio::net::TcpListener::bind(host.config.admin_listen)
            .await
            .with_context(|| format!("listening on {}", host.config.admin_listen))?;
        let scheme = if host.tls.is_some() { "https" } else { "http" };
        let control_base = format!("{scheme}://{}", control.local_addr()?);
        host.restore().await?;
        let base = format!("{scheme}://{address}");
        let _ = host.data_url.set(base.clone());
        // Where this host's admin token may be sent (see `RemoteArgs::client`).
        aifn_host::store::write_atomically(
            &host.store.root().join("admin-address"),
            control_base.as_bytes(),
        )?;
        tokio::spawn(aifn_host::http::serve_control(
            host.clone(),
            control,
            std::future::pending(),
        ));
        for bundle in &bundles {
            let outcome = deploy_local(&host, bundle)
                .await
                .with_context(|| format!("deploying {}", bundle.spec.metadata.name))?;
            print_deploy(&base, &outcome);
        }
        if !no_context {
            record_context(&context_name, &control_base, &base, host.admin_token());
        }
        println!("aifn control plane on {control_base}");
        println!("aifn listening on {base}");
        std::io::stdout().flush()?;
        // SIGTERM (a pod's stop) or Ctrl-C: readiness says no at once; requests are still taken
        // for the shutdown delay; then the listener stops and open connections drain.
        let registry = host.registry.clone();
        let shutdown = async move {
            stop_signal().await;
            registry.set_draining();
            tracing::info!(delay = ?shutdown_delay, "stopping: readiness says no");
            tokio::time::sleep(shutdown_delay).await;
            tracing::info!("stopping: no new connections; draining");
        };
        let tracer = host.tracer.clone();
        aifn_host::http::serve(host, listener, shutdown).await?;
        if let Some(tracer) = tracer {
            // The SDK's export thread blocks while it flushes.
            tokio::task::spawn_blocking(move || tracer.shutdown()).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Records the host as context `name` and makes it current, so that `aifn deploy` and the rest
/// reach it without flags. Best effort: a host without a writable home (a pod) serves all the same.
fn record_context(name: &str, admin: &str, url: &str, token: &str) {
    let host = context::HostContext {
        name: name.to_string(),
        admin: admin.to_string(),
        url: Some(url.to_string()),
        token: token.to_string(),
        ca_file: None,
    };
    let recorded = context::update(|contexts| {
        contexts.put(host);
        contexts.current = Some(name.to_string());
        Ok(())
    });
    match recorded {
        Ok(()) => tracing::info!(
            context = name,
            config = %context::config_path().display(),
            "recorded this host as the current context"
        ),
        Err(e) => tracing::warn!("could not record the context `{name}`: {e:#}"),
    }
}

/// SIGTERM or SIGINT (Ctrl-C), whichever comes first.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot listen for SIGTERM: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `aifn up`: the same deploy as over HTTP, without the round trip.
async fn deploy_local(host: &Arc<Host>, bundle: &Bundle) -> anyhow::Result<api::DeployOutcome> {
    for artifact in bundle.artifacts() {
        if host.store.blob_size(&artifact.digest).is_none() {
            let mut writer = host.store.blob_writer()?;
            writer.write(&artifact.bytes)?;
            host.store.finish_blob(writer, &artifact.digest)?;
        }
    }
    let request = DeployRequest {
        spec: bundle.spec_yaml.clone(),
        model: bundle.model.as_ref().map(|a| a.digest.clone()),
        module: bundle.module.as_ref().map(|a| a.digest.clone()),
        fallback_model: bundle.fallback_model.as_ref().map(|a| a.digest.clone()),
        monitoring_reference: bundle
            .monitoring_reference
            .as_ref()
            .map(|a| a.digest.clone()),
        strategy: None,
        reason: Some("aifn up".into()),
    };
    host.control
        .deploy(request, &Actor("aifn up".into()))
        .await
        .map_err(|e| match e {
            aifn_host::control::DeployError::Spec(errors) => {
                anyhow::anyhow!(render_spec_errors(
                    Path::new(&bundle.spec.metadata.name),
                    &errors
                ))
            }
            other => other.into(),
        })
}

fn print_deploy(base: &str, outcome: &api::DeployOutcome) {
    let name = &outcome.name;
    let verb = if outcome.unchanged {
        "unchanged"
    } else {
        "deployed"
    };
    println!(
        "{verb} {name} version {} ({})",
        outcome.version, outcome.digest
    );
    for endpoint in &outcome.endpoints {
        println!(
            "  {} {base}{}  (auth: {})",
            endpoint.method,
            endpoint.route,
            serde_json::to_value(endpoint.auth)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        );
    }
    if outcome.v2 {
        println!("  POST {base}/v2/models/{name}/infer");
    }
    for warning in &outcome.warnings {
        println!("  warning: {warning}");
    }
}

fn print_list(list: &api::FunctionList) {
    if list.functions.is_empty() && list.failed.is_empty() {
        println!("no functions deployed");
        return;
    }
    println!(
        "{:<28} {:>7} {:>8}  {:<24} ENDPOINTS",
        "NAME", "VERSION", "REPLICAS", "MODEL"
    );
    for f in &list.functions {
        println!(
            "{:<28} {:>7} {:>8}  {:<24} {}",
            f.name,
            f.version,
            f.replicas,
            f.model_id,
            f.endpoints.join(", ")
        );
    }
    for f in &list.failed {
        println!("{:<28} FAILED: {}", f.name, f.error);
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC).
fn format_ms(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The first characters of a digest, enough to tell versions apart.
fn short(digest: &Digest) -> String {
    digest.to_string().chars().take(19).collect()
}

fn print_versions(versions: &api::VersionList) {
    println!(
        "{:>7}  {:<9}  {:<20}  {:<28}  {:<19}  MODEL",
        "VERSION", "ROLE", "CREATED", "BY", "DIGEST"
    );
    for v in &versions.versions {
        println!(
            "{:>7}  {:<9}  {:<20}  {:<28}  {:<19}  {}",
            v.version,
            v.role.as_str(),
            format_ms(v.created_at * 1000),
            v.deployed_by,
            short(&v.digest),
            short(&v.model.digest),
        );
    }
}

/// `aifn monitor NAME`: per version, the headline figures, then a row per feature, and a small
/// text histogram (reference vs now) for each drifting one.
fn monitor_table(report: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let number = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.3}"));
    for version in report["versions"].as_array().into_iter().flatten() {
        let metrics = &version["metrics"];
        let _ = writeln!(
            out,
            "{} v{} (model {}): drift_score {}, accuracy {}, p95 {}, {:.1} req/s, error rate {}",
            report["name"].as_str().unwrap_or("?"),
            version["version"],
            version["model_id"].as_str().unwrap_or("?"),
            number(&metrics["drift_score"]),
            number(&metrics["accuracy"]),
            metrics["latency_p95"].as_str().unwrap_or("-"),
            metrics["throughput_rps"].as_f64().unwrap_or(0.0),
            number(&metrics["error_rate"]),
        );
        let drift = &version["drift"];
        if drift.is_null() {
            let _ = writeln!(out, "  not monitored (the spec has no `monitoring`)");
            continue;
        }
        let _ = writeln!(
            out,
            "  window {}: {} samples (alerts move from {}), {} recorded, {} dropped{}",
            drift["window"].as_str().unwrap_or("?"),
            drift["samples_in_window"].as_u64().unwrap_or(0),
            drift["min_samples"],
            drift["recorded"],
            drift["dropped"],
            if drift["on_fallback_for_drift"].as_bool() == Some(true) {
                "; traffic is on the fallback model"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  {:<34} {:>8} {:>8} {:>8}  state",
            "feature", "PSI", "KL", "JS"
        );
        let features = drift["per_feature"].as_array().cloned().unwrap_or_default();
        for feature in &features {
            let state = if feature["drifting"].as_bool() == Some(true) {
                "DRIFTING".to_string()
            } else if feature["reference_ready"].as_bool() == Some(false) {
                format!(
                    "collecting its baseline ({} so far)",
                    feature["reference_samples"]
                )
            } else {
                "ok".to_string()
            };
            let _ = writeln!(
                out,
                "  {:<34} {:>8} {:>8} {:>8}  {state}",
                feature["name"].as_str().unwrap_or("?"),
                number(&feature["psi"]),
                number(&feature["kl"]),
                number(&feature["js"]),
            );
        }
        for feature in features
            .iter()
            .filter(|f| f["drifting"].as_bool() == Some(true))
        {
            let _ = writeln!(
                out,
                "\n  {}: reference | now",
                feature["name"].as_str().unwrap_or("?")
            );
            let shares = |key: &str| -> Vec<f64> {
                feature[key]
                    .as_array()
                    .map(|v| v.iter().filter_map(|x| x.as_f64()).collect())
                    .unwrap_or_default()
            };
            let (reference, current) = (shares("reference"), shares("current"));
            let bar = |share: f64| "#".repeat((share * 40.0).round() as usize);
            for (i, label) in feature["bins"].as_array().into_iter().flatten().enumerate() {
                let (r, c) = (
                    reference.get(i).copied().unwrap_or(0.0),
                    current.get(i).copied().unwrap_or(0.0),
                );
                let _ = writeln!(
                    out,
                    "  {:>20} {:>20} | {}",
                    label.as_str().unwrap_or("?"),
                    bar(r),
                    bar(c)
                );
            }
        }
        for alert in version["alerts"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  alert: {} {} ({}) at {} on {}",
                alert["type"].as_str().unwrap_or("?"),
                alert["state"].as_str().unwrap_or("?"),
                alert["severity"].as_str().unwrap_or("?"),
                alert["timestamp"].as_str().unwrap_or("?"),
                alert["features"]
                    .as_array()
                    .map(|f| f
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            );
        }
    }
    out
}

fn print_history(history: &api::History) {
    for entry in &history.events {
        let e = &entry.event;
        let version = match (e.version, e.serving) {
            (Some(v), Some(s)) if s != v && s != 0 => format!("v{v} (serving v{s})"),
            (Some(v), _) => format!("v{v}"),
            _ => String::new(),
        };
        println!(
            "{}  {:<16}  {:<20}  {}",
            format_ms(e.at_ms),
            e.action.as_str(),
            version,
            e.actor
        );
        if !e.reason.is_empty() {
            println!("    {}", e.reason);
        }
        if let Some(figures) = &e.figures {
            println!("    figures: {figures}");
        }
    }
}
