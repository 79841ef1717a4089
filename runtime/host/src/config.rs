//! How a host is configured (as opposed to what a function declares in its spec).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct HostConfig {
    /// TLS for both listeners (`None`: plaintext).
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// Where the data plane (functions' routes, the v2 protocol, probes) is served.
    pub listen: SocketAddr,
    /// Where the control plane (`/admin/v1/...`) and `/metrics` are served: loopback by default,
    /// never the data plane's public listener.
    pub admin_listen: SocketAddr,
    /// Read-only token for `/metrics` (scrapers). `None`: read `<state_dir>/metrics-token`,
    /// creating it if absent.
    pub metrics_token: Option<String>,
    /// Deadline of one control-plane request: uploads of large models and slow model loads.
    pub admin_timeout: Duration,
    /// Artifacts, versions, model store and compiled modules.
    pub state_dir: PathBuf,
    /// The control plane's bearer token. `None`: read `<state_dir>/admin-token`, creating it if absent.
    pub admin_token: Option<String>,
    /// Largest request body an endpoint accepts (413 above).
    pub max_body_bytes: usize,
    /// Largest artifact upload.
    pub max_upload_bytes: u64,
    /// How long a request may take from arrival to answer (504 after).
    pub request_timeout: Duration,
    /// How long a client may take to send the request headers.
    pub header_read_timeout: Duration,
    /// When the host stops, how long open connections may take to finish their requests.
    pub drain_timeout: Duration,
    /// Deadline of one preprocess or postprocess call when the spec sets none.
    pub module_timeout: Duration,
    /// Memory cap of one module instance when the spec sets no `resources.memory`.
    pub module_memory_bytes: u64,
    /// Upper bound on tensors or a response body a module returns.
    pub max_module_output_bytes: usize,
    /// At most this many instances per function, whatever the spec asks.
    pub max_instances_per_function: usize,
    /// Requests that may wait per instance before the host answers 503.
    pub queue_per_instance: usize,
    /// Elements the raw tensors of one request may hold (the v2 route, endpoints without a module).
    pub max_tensor_elements: usize,
    /// Largest merged input of a dynamic batch, in bytes; requests that would merge to more run
    /// one by one.
    pub max_batch_bytes: usize,
    /// How long an instance thread that has just finished a job keeps looking for the next one
    /// (yielding its core to any other thread that wants it) before it sleeps.
    pub idle_spin: Duration,
    /// Bytes of log lines a module may write per request.
    pub max_module_log_bytes: usize,
    /// Data-plane connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request head (request line and headers), in bytes (431 above).
    pub max_header_bytes: usize,
    /// Most headers a request may carry (431 above).
    pub max_headers: usize,
    /// Secret for HS256 JWTs on `auth: jwt` endpoints.
    pub jwt_secret: Option<String>,
    /// JSON Web Key Set with the RS256 keys for `auth: jwt` endpoints.
    pub jwt_jwks: Option<PathBuf>,
    /// The host's OAuth2 client credentials at token introspection endpoints (HTTP Basic).
    pub introspection_client: crate::policy::introspection::ClientCredentials,
    /// Requests per second the host accepts for all functions together (429 above).
    pub max_requests_per_second: Option<f64>,
    /// How often the autoscaler observes each function and decides.
    pub autoscale_tick: Duration,
    /// The autoscaler's stable window (the panic window is a tenth of it).
    pub autoscale_stable_window: Duration,
    /// How long fewer instances must have been enough before the autoscaler removes any.
    pub autoscale_scale_down_delay: Duration,
    /// How often rollouts are judged (and steps taken, or versions rolled back).
    pub rollout_tick: Duration,
    /// Where rollout events (an automatic rollback above all) are POSTed as JSON.
    pub webhook_url: Option<String>,
    /// Versions kept per function; older ones not serving are pruned after each deploy.
    pub keep_versions: usize,
    /// `libonnxruntime.so` to load; `None`: find it (see `aifn_model::locate_onnxruntime`).
    pub onnxruntime: Option<PathBuf>,
    /// Write a line per request on the `aifn::access` log target.
    pub access_log: bool,
    /// Export traces of data-plane requests over OTLP.
    pub traces: Option<crate::traces::TraceConfig>,
}

impl HostConfig {
    // The defaults, in one place: `HostConfig::new` and the `aifn serve` flags both use them.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";
    pub const DEFAULT_ADMIN_LISTEN: &'static str = "127.0.0.1:8081";
    pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(600);
    pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
    pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 4 << 30;
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Inside Kubernetes' default 30 s grace period, with the shutdown delay before it.
    pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
    pub const DEFAULT_MODULE_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_MODULE_MEMORY_BYTES: u64 = 256 << 20;
    pub const DEFAULT_MAX_MODULE_OUTPUT_BYTES: usize = 64 << 20;
    pub const DEFAULT_QUEUE_PER_INSTANCE: usize = 64;
    pub const DEFAULT_AUTOSCALE_TICK: Duration = Duration::from_millis(250);
    pub const DEFAULT_AUTOSCALE_STABLE_WINDOW: Duration = Duration::from_secs(60);
    pub const DEFAULT_AUTOSCALE_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);
    pub const DEFAULT_ROLLOUT_TICK: Duration = Duration::from_millis(500);
    pub const DEFAULT_KEEP_VERSIONS: usize = 20;
    pub const DEFAULT_MAX_TENSOR_ELEMENTS: usize = 1 << 20;
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 64 << 20;
    /// Waking a sleeping thread costs tens of microseconds (more in a VM), twice per request at
    /// low load; a request arriving within this of the last one finds its instance awake.
    pub const DEFAULT_IDLE_SPIN: Duration = Duration::from_micros(300);
    pub const DEFAULT_MAX_MODULE_LOG_BYTES: usize = 64 << 10;
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 << 10;
    /// hyper's own default, which keeps the parsed headers on the stack (any other value puts
    /// them on the heap, about 5% slower).
    pub const DEFAULT_MAX_HEADERS: usize = 100;

    pub fn new(listen: SocketAddr, state_dir: PathBuf) -> HostConfig {
        HostConfig {
            tls: None,
            listen,
            admin_listen: Self::DEFAULT_ADMIN_LISTEN
                .parse()
                .expect("a socket address"),
            metrics_token: None,
            admin_timeout: Self::DEFAULT_ADMIN_TIMEOUT,
            state_dir,
            admin_token: None,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_upload_bytes: Self::DEFAULT_MAX_UPLOAD_BYTES,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            drain_timeout: Self::DEFAULT_DRAIN_TIMEOUT,
            module_timeout: Self::DEFAULT_MODULE_TIMEOUT,
            module_memory_bytes: Self::DEFAULT_MODULE_MEMORY_BYTES,
            max_module_output_bytes: Self::DEFAULT_MAX_MODULE_OUTPUT_BYTES,
            max_instances_per_function: Self::default_max_instances(),
            max_tensor_elements: Self::DEFAULT_MAX_TENSOR_ELEMENTS,
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            idle_spin: Self::DEFAULT_IDLE_SPIN,
            max_module_log_bytes: Self::DEFAULT_MAX_MODULE_LOG_BYTES,
            max_connections: Self::default_max_connections(Self::DEFAULT_MAX_BODY_BYTES),
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_headers: Self::DEFAULT_MAX_HEADERS,
            queue_per_instance: Self::DEFAULT_QUEUE_PER_INSTANCE,
            onnxruntime: None,
            access_log: false,
            traces: None,
            jwt_secret: None,
            jwt_jwks: None,
            introspection_client: Default::default(),
            max_requests_per_second: None,
            autoscale_tick: Self::DEFAULT_AUTOSCALE_TICK,
            autoscale_stable_window: Self::DEFAULT_AUTOSCALE_STABLE_WINDOW,
            autoscale_scale_down_delay: Self::DEFAULT_AUTOSCALE_SCALE_DOWN_DELAY,
            rollout_tick: Self::DEFAULT_ROLLOUT_TICK,
            webhook_url: None,
            keep_versions: Self::DEFAULT_KEEP_VERSIONS,
        }
    }

    /// Connections sized to the machine: each may hold a whole body and its buffers, and all of
    /// them together may take a quarter of the memory; never more than half the file descriptors
    /// the process may open (the rest are the state, models and outgoing calls).
    pub fn default_max_connections(max_body_bytes: usize) -> usize {
        let per_connection = max_body_bytes + Self::DEFAULT_MAX_HEADER_BYTES + (64 << 10);
        let by_memory = memory_bytes().map_or(usize::MAX, |m| (m / 4) as usize / per_connection);
        let by_files = open_files_limit().map_or(usize::MAX, |n| n / 2);
        by_memory.min(by_files).clamp(64, 100_000)
    }

    /// One instance per core.
    pub fn default_max_instances() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Physical memory (`MemTotal` of /proc/meminfo), or the cgroup's limit when lower.
fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?
        * 1024;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

/// The soft limit on open files (`Max open files` of /proc/self/limits).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
