//! The host: what is deployed, and the operations of the control plane.

use crate::autoscale::{Controller, Decision, Policy, Reason, Sample};
use crate::config::HostConfig;
use crate::function::{LoadFunctionError, LoadedFunction};
use crate::instance::InstancePool;
use crate::keys::KeyStore;
use crate::metrics::Metrics;
use crate::policy::access::JwtVerifier;
use crate::policy::rate_limit::{HostLimiter, RateLimiters};
use crate::store::{now_unix, Artifact, Digest, ModelEntry, Store, StoreError, VersionRecord};
use aifn_guest::GuestEngine;
use aifn_model::OnnxRuntime;
use aifn_spec::{Method, SpecErrors};
use anyhow::Context as _;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the spec is invalid")]
    Spec(SpecErrors),
    #[error("model `{0}` is not known to this host: give `spec.model.path` so `aifn deploy` uploads it, or register it with `aifn models push {0} FILE`")]
    UnknownModel(String),
    #[error("the model file's digest {actual} does not match spec.model.sha256 ({expected})")]
    ModelDigest { expected: String, actual: Digest },
    #[error("{0}")]
    Module(String),
    #[error("route {method} {route} is already served by function `{owner}`")]
    RouteConflict {
        method: Method,
        route: String,
        owner: String,
    },
    #[error("the function cannot be loaded: {0}")]
    Load(#[from] LoadFunctionError),
    #[error("no function named `{0}`")]
    NotFound(String),
    #[error("`{0}` has no version {1}")]
    NoSuchVersion(String, u64),
    #[error("`{0}` has no version older than {1} to roll back to")]
    NothingToRollBackTo(String, u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `POST /admin/v1/functions` receives.
#[derive(Debug, Deserialize)]
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
}

#[derive(Debug, Serialize)]
pub struct DeployOutcome {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// True when the same spec and artifacts were already serving: no new version was made.
    pub unchanged: bool,
    pub endpoints: Vec<EndpointView>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub method: Method,
    pub route: String,
    pub auth: aifn_spec::Auth,
}

/// `aifn status`: the serving version and how it runs.
#[derive(Debug, Serialize)]
pub struct FunctionStatus {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    pub created_at: u64,
    pub model_id: String,
    pub model: Artifact,
    pub module: Option<Artifact>,
    pub endpoints: Vec<EndpointView>,
    pub placement: crate::function::Placement,
    pub queue_depth: usize,
    /// Instances now, requests running and waiting.
    pub load: crate::instance::PoolLoad,
    /// p95 latency over the last 10 s, in milliseconds.
    pub p95_ms: Option<f64>,
    /// p50, p95 and p99 latency over the last 10 s, in milliseconds (queue + service).
    pub latency_ms: Option<LatencyView>,
    /// Instances the autoscaler keeps between (`min`, and `max` capped by this host's capacity).
    pub scaling: ScalingView,
    /// The `spec.fallback` model's pool, and whether it takes the traffic now.
    pub fallback: Option<FallbackView>,
    pub inputs: Vec<aifn_model::Port>,
    pub outputs: Vec<aifn_model::Port>,
    pub spec: aifn_spec::FunctionSpec,
}

pub struct Host {
    pub config: HostConfig,
    pub store: Store,
    pub keys: KeyStore,
    pub metrics: Arc<Metrics>,
    pub(crate) limiters: RateLimiters,
    pub(crate) host_limit: Option<HostLimiter>,
    pub(crate) jwt: JwtVerifier,
    admin_token: String,
    pub(crate) ort: OnnxRuntime,
    pub(crate) guest: GuestEngine,
    /// The version serving each function.
    functions: DashMap<String, Arc<LoadedFunction>>,
    /// Route → the functions serving it, by method.
    routes: DashMap<String, Vec<(Method, String)>>,
    /// Functions whose stored active version failed to load at start.
    load_errors: DashMap<String, String>,
    /// One deploy or delete at a time, so version numbers and routes stay consistent.
    deploy_lock: tokio::sync::Mutex<()>,
    ready: AtomicBool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyView {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FallbackView {
    pub active: bool,
    pub load: crate::instance::PoolLoad,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalingView {
    pub min: usize,
    pub max: usize,
    pub capacity: usize,
    pub ceiling: usize,
}

/// The route table's answer for a path.
pub enum RouteMatch {
    Found(Arc<LoadedFunction>),
    /// The path exists, but not for this method; the methods that do exist.
    WrongMethod(Vec<Method>),
    NotFound,
}

impl Host {
    /// Finds and loads ONNX Runtime, opens the state directory and the wasmtime engine.
    pub fn new(config: HostConfig) -> anyhow::Result<Host> {
        let library = match &config.onnxruntime {
            Some(path) => path.clone(),
            None => aifn_model::locate_onnxruntime()?,
        };
        let ort = OnnxRuntime::init(&library)?;
        tracing::info!(library = %library.display(), "ONNX Runtime loaded");
        let store = Store::open(&config.state_dir).with_context(|| {
            format!("opening the state directory {}", config.state_dir.display())
        })?;
        let keys = KeyStore::open(config.state_dir.join("keys.json"))?;
        let guest = GuestEngine::new(Some(store.compiled_dir()))?;
        let jwt = JwtVerifier::new(config.jwt_secret.as_deref(), config.jwt_jwks.as_deref())?;
        let host_limit = config.max_requests_per_second.map(HostLimiter::new);
        let admin_token = match &config.admin_token {
            Some(token) => token.clone(),
            None => admin_token_from(&store)?,
        };
        Ok(Host {
            config,
            store,
            keys,
            metrics: Arc::new(Metrics::default()),
            limiters: RateLimiters::default(),
            host_limit,
            jwt,
            admin_token,
            ort,
            guest,
            functions: DashMap::new(),
            routes: DashMap::new(),
            load_errors: DashMap::new(),
            deploy_lock: tokio::sync::Mutex::new(()),
            ready: AtomicBool::new(false),
        })
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Brings back every function's active version after a (re)start.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        let records = self
            .store
            .active_versions()
            .context("reading deployments")?;
        for record in records {
            let name = record.name.clone();
            let host = self.clone();
            let loaded =
                tokio::task::spawn_blocking(move || LoadedFunction::load(record, &host)).await?;
            match loaded {
                Ok(function) => {
                    tracing::info!(function = %name, version = function.version(), "restored");
                    self.activate(function);
                }
                Err(e) => {
                    tracing::error!(function = %name, "cannot restore: {e}");
                    self.load_errors.insert(name, e.to_string());
                }
            }
        }
        self.ready.store(true, Ordering::Release);
        self.start_housekeeping();
        self.start_autoscaler();
        Ok(())
    }

    /// Periodic upkeep while the host lives: forget rate-limit state of callers gone idle.
    fn start_housekeeping(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                match host.upgrade() {
                    Some(host) => host.limiters.forget_idle_callers(),
                    None => return,
                }
            }
        });
    }

    /// The autoscaler: every tick, for each function, one observation (ongoing requests, p95)
    /// goes to its controller ([`crate::autoscale`]), and the pool is resized to its decision;
    /// a function with a `fallback` is switched to it while the primary cannot keep its target at
    /// its ceiling. A thread of its own, because starting instances loads model sessions.
    fn start_autoscaler(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        let tick = self.config.autoscale_tick;
        let spawned = std::thread::Builder::new()
            .name("aifn-autoscale".into())
            .spawn(move || {
                let mut autoscaler = Autoscaler::default();
                crate::autoscale::register_thread();
                loop {
                    // A tick, or sooner when a request waits for a function with no instance.
                    std::thread::park_timeout(tick);
                    let Some(host) = host.upgrade() else { return };
                    autoscaler.tick(&host);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the autoscaler: {e}");
        }
    }

    /// The function's scaling policy with the host's timing (shorter windows in tests).
    fn autoscale_policy(&self, function: &LoadedFunction) -> Policy {
        let mut policy = function.autoscale.clone();
        policy.stable_window = self.config.autoscale_stable_window;
        policy.panic_window = self.config.autoscale_stable_window / 10;
        policy.scale_down_delay = self.config.autoscale_scale_down_delay;
        policy
    }

    pub fn route(&self, method: &str, path: &str) -> RouteMatch {
        let Some(entry) = self.routes.get(path) else {
            return RouteMatch::NotFound;
        };
        let owner = entry.iter().find(|(m, _)| m.as_str() == method);
        match owner.and_then(|(_, name)| self.functions.get(name)) {
            Some(function) => RouteMatch::Found(function.clone()),
            None => RouteMatch::WrongMethod(entry.iter().map(|(m, _)| *m).collect()),
        }
    }

    pub fn function(&self, name: &str) -> Option<Arc<LoadedFunction>> {
        self.functions.get(name).map(|f| f.clone())
    }

    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.functions.iter().map(|f| f.key().clone()).collect();
        names.sort();
        names
    }

    pub fn load_errors(&self) -> Vec<(String, String)> {
        self.load_errors
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    pub async fn deploy(
        self: &Arc<Self>,
        request: DeployRequest,
    ) -> Result<DeployOutcome, DeployError> {
        let result = self.deploy_inner(request).await;
        match &result {
            Ok(outcome) if !outcome.unchanged => self.metrics.deploys.inc(),
            Ok(_) => 0,
            Err(_) => self.metrics.failed_deploys.inc(),
        };
        result
    }

    async fn deploy_inner(
        self: &Arc<Self>,
        request: DeployRequest,
    ) -> Result<DeployOutcome, DeployError> {
        let spec = aifn_spec::parse(&request.spec).map_err(DeployError::Spec)?;
        let name = spec.metadata.name.clone();

        let (model, uploaded_model) =
            self.resolve_model(&spec.spec.model, request.model.as_ref())?;
        let fallback = match &spec.spec.fallback {
            Some(fallback) => {
                Some(self.resolve_model(&fallback.model, request.fallback_model.as_ref())?)
            }
            None if request.fallback_model.is_some() => {
                return Err(DeployError::Module(
                    "a fallback model was uploaded but the spec has no `fallback`".into(),
                ))
            }
            None => None,
        };
        let module = match (&spec.spec.module, &request.module) {
            (Some(_), Some(digest)) => Some(self.uploaded(digest)?),
            (Some(m), None) => {
                return Err(DeployError::Module(format!(
                    "spec.module.path is `{}` but no module was uploaded with the deploy",
                    m.path
                )))
            }
            (None, Some(_)) => {
                return Err(DeployError::Module(
                    "a module was uploaded but the spec has no `module`".into(),
                ))
            }
            (None, None) => None,
        };

        let _guard = self.deploy_lock.lock().await;
        self.check_routes_free(&name, &spec.spec.endpoints)?;

        let digest = VersionRecord::deployment_digest(
            &request.spec,
            &model,
            module.as_ref(),
            fallback.as_ref().map(|(artifact, _)| artifact),
        );
        if let Some(current) = self.function(&name) {
            if current.record.digest == digest {
                return Ok(self.outcome(&current, true));
            }
        }
        let record = VersionRecord {
            name: name.clone(),
            version: self.store.next_version(&name)?,
            digest,
            spec_yaml: request.spec,
            model_id: spec.spec.model.id.clone(),
            model,
            module,
            fallback_model: fallback.as_ref().map(|(artifact, _)| artifact.clone()),
            created_at: now_unix(),
        };
        // Load everything before touching what is serving: a failure here changes nothing.
        let function = self.load(record.clone()).await?;

        self.store.save_version(&record)?;
        // Uploaded models become known by their ids, for specs that name only the id.
        let uploaded = [(spec.spec.model.id.clone(), uploaded_model)]
            .into_iter()
            .chain(
                spec.spec
                    .fallback
                    .iter()
                    .zip(fallback)
                    .map(|(f, (_, up))| (f.model.id.clone(), up)),
            );
        for (id, artifact) in uploaded {
            if let Some(artifact) = artifact {
                self.store.register_model(&ModelEntry {
                    id,
                    model: artifact,
                    updated_at: now_unix(),
                })?;
            }
        }
        self.store.activate(&name, record.version)?;
        let function = self.activate(function);
        tracing::info!(function = %name, version = record.version, digest = %record.digest, "deployed");
        Ok(self.outcome(&function, false))
    }

    /// An artifact uploaded for a deploy, which must be in the store.
    fn uploaded(&self, digest: &Digest) -> Result<Artifact, DeployError> {
        let size = self
            .store
            .blob_size(digest)
            .ok_or(StoreError::MissingBlob(digest.clone()))?;
        Ok(Artifact {
            digest: digest.clone(),
            size,
        })
    }

    /// A model block's artifact: the uploaded file, or the model store's entry for its id; and
    /// the uploaded artifact again when there was one (to register it under the id).
    fn resolve_model(
        &self,
        model: &aifn_spec::ModelSpec,
        uploaded: Option<&Digest>,
    ) -> Result<(Artifact, Option<Artifact>), DeployError> {
        let uploaded = uploaded.map(|digest| self.uploaded(digest)).transpose()?;
        let artifact = match &uploaded {
            Some(artifact) => artifact.clone(),
            None => {
                self.store
                    .model(&model.id)?
                    .ok_or_else(|| DeployError::UnknownModel(model.id.clone()))?
                    .model
            }
        };
        if let Some(expected) = &model.sha256 {
            if expected != artifact.digest.hex() {
                return Err(DeployError::ModelDigest {
                    expected: expected.clone(),
                    actual: artifact.digest,
                });
            }
        }
        Ok((artifact, uploaded))
    }

    /// Refuses routes that another function serves.
    fn check_routes_free(
        &self,
        name: &str,
        endpoints: &[aifn_spec::Endpoint],
    ) -> Result<(), DeployError> {
        for endpoint in endpoints {
            if let Some(owners) = self.routes.get(&endpoint.route) {
                if let Some((_, owner)) = owners
                    .iter()
                    .find(|(m, owner)| *m == endpoint.method && owner != name)
                {
                    return Err(DeployError::RouteConflict {
                        method: endpoint.method,
                        route: endpoint.route.clone(),
                        owner: owner.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Loads a version off the async workers (sessions, module compilation).
    async fn load(self: &Arc<Self>, record: VersionRecord) -> Result<LoadedFunction, DeployError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || LoadedFunction::load(record, &host))
            .await
            .map_err(|e| DeployError::Module(format!("loading panicked: {e}")))?
            .map_err(DeployError::from)
    }

    /// Puts an earlier version back in service: `to`, or the newest version older than the one
    /// serving. Requests in flight finish on the version they started on; none fails.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        to: Option<u64>,
    ) -> Result<DeployOutcome, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let current = self
            .function(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?;
        let versions = self.store.versions(name)?;
        let target = match to {
            Some(version) => versions
                .into_iter()
                .find(|r| r.version == version)
                .ok_or(DeployError::NoSuchVersion(name.to_string(), version))?,
            None => versions
                .into_iter()
                .rev()
                .find(|r| r.version < current.version())
                .ok_or(DeployError::NothingToRollBackTo(
                    name.to_string(),
                    current.version(),
                ))?,
        };
        if target.version == current.version() {
            return Ok(self.outcome(&current, true));
        }
        let spec = aifn_spec::parse(&target.spec_yaml).map_err(DeployError::Spec)?;
        self.check_routes_free(name, &spec.spec.endpoints)?;
        let function = self.load(target).await?;
        self.store.activate(name, function.version())?;
        let from = current.version();
        let function = self.activate(function);
        tracing::info!(function = %name, from, to = function.version(), "rolled back");
        Ok(self.outcome(&function, false))
    }

    fn outcome(&self, function: &LoadedFunction, unchanged: bool) -> DeployOutcome {
        DeployOutcome {
            name: function.name().to_string(),
            version: function.version(),
            digest: function.record.digest.clone(),
            unchanged,
            endpoints: endpoint_views(function),
            warnings: function.placement.note.iter().cloned().collect(),
        }
    }

    /// Puts a loaded version in service: new routes first, then the function, then stale routes
    /// go, so no request in between finds nothing.
    fn activate(&self, function: LoadedFunction) -> Arc<LoadedFunction> {
        let function = Arc::new(function);
        let name = function.name().to_string();
        for endpoint in &function.spec.spec.endpoints {
            let mut owners = self.routes.entry(endpoint.route.clone()).or_default();
            if !owners
                .iter()
                .any(|(m, n)| *m == endpoint.method && *n == name)
            {
                owners.push((endpoint.method, name.clone()));
            }
        }
        let previous = self.functions.insert(name.clone(), function.clone());
        if let Some(previous) = previous {
            let still_served = |route: &str, method: Method| {
                function
                    .spec
                    .spec
                    .endpoints
                    .iter()
                    .any(|e| e.route == route && e.method == method)
            };
            for endpoint in &previous.spec.spec.endpoints {
                if !still_served(&endpoint.route, endpoint.method) {
                    self.remove_route(&endpoint.route, endpoint.method, &name);
                }
            }
        }
        self.load_errors.remove(&name);
        self.metrics
            .function_loaded(&name, function.version(), function.placement.replicas);
        function
    }

    fn remove_route(&self, route: &str, method: Method, name: &str) {
        if let Some(mut owners) = self.routes.get_mut(route) {
            owners.retain(|(m, n)| !(*m == method && n == name));
        }
        self.routes.remove_if(route, |_, owners| owners.is_empty());
    }

    /// Stops serving a function. Its versions stay in the store; a later deploy continues numbering.
    pub async fn delete(&self, name: &str) -> Result<u64, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let Some((_, function)) = self.functions.remove(name) else {
            if self.load_errors.remove(name).is_some() {
                self.store.deactivate(name)?;
                return Ok(0);
            }
            return Err(DeployError::NotFound(name.to_string()));
        };
        self.store.deactivate(name)?;
        for endpoint in &function.spec.spec.endpoints {
            self.remove_route(&endpoint.route, endpoint.method, name);
        }
        self.metrics.function_removed(name);
        tracing::info!(function = %name, version = function.version(), "deleted");
        Ok(function.version())
    }

    pub fn status(&self, name: &str) -> Option<FunctionStatus> {
        let f = self.function(name)?;
        Some(FunctionStatus {
            name: f.name().to_string(),
            version: f.version(),
            digest: f.record.digest.clone(),
            created_at: f.record.created_at,
            model_id: f.record.model_id.clone(),
            model: f.record.model.clone(),
            module: f.record.module.clone(),
            endpoints: endpoint_views(&f),
            placement: f.placement.clone(),
            queue_depth: f.pool.load().queued,
            load: f.pool.load(),
            p95_ms: f
                .pool
                .p95(std::time::Duration::from_secs(10))
                .map(|d| d.as_secs_f64() * 1e3),
            latency_ms: f
                .pool
                .percentiles(std::time::Duration::from_secs(10), &[0.5, 0.95, 0.99])
                .map(|p| LatencyView {
                    p50: p[0].as_secs_f64() * 1e3,
                    p95: p[1].as_secs_f64() * 1e3,
                    p99: p[2].as_secs_f64() * 1e3,
                }),
            fallback: f.fallback.as_ref().map(|pool| FallbackView {
                active: f.fallback_active.load(Ordering::Relaxed),
                load: pool.load(),
            }),
            scaling: ScalingView {
                min: f.autoscale.min,
                max: f.autoscale.max,
                capacity: f.autoscale.capacity,
                ceiling: f.autoscale.ceiling(),
            },
            inputs: f.signature.inputs.clone(),
            outputs: f.signature.outputs.clone(),
            spec: f.spec.clone(),
        })
    }
}

fn endpoint_views(function: &LoadedFunction) -> Vec<EndpointView> {
    function
        .spec
        .spec
        .endpoints
        .iter()
        .map(|e| EndpointView {
            method: e.method,
            route: e.route.clone(),
            auth: e.auth,
        })
        .collect()
}

/// The control plane token kept in the state directory (mode 0600), created on first start.
fn admin_token_from(store: &Store) -> anyhow::Result<String> {
    let path = store.root().join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token = hex::encode(rand::random::<[u8; 24]>());
    // Written owner-only from the start, then renamed into place: never readable by others.
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("creating {}", path.display()))?;
    tracing::info!(path = %path.display(), "created the admin token");
    Ok(token)
}

/// The autoscaler's memory between ticks: a controller per function version and variant, and
/// the fallback switch's timers.
struct Autoscaler {
    started: std::time::Instant,
    /// (function, variant) → (version, controller); a new version starts afresh.
    controllers: std::collections::HashMap<(String, &'static str), (u64, Controller)>,
    /// function → since when the primary has been over its target at its ceiling (while it
    /// serves), or the fallback's load has fit the primary (while the fallback serves).
    switch_since: std::collections::HashMap<String, std::time::Duration>,
}

impl Default for Autoscaler {
    fn default() -> Self {
        Autoscaler {
            started: std::time::Instant::now(),
            controllers: Default::default(),
            switch_since: Default::default(),
        }
    }
}

impl Autoscaler {
    fn tick(&mut self, host: &Host) {
        let functions: Vec<Arc<LoadedFunction>> =
            host.functions.iter().map(|f| f.value().clone()).collect();
        self.controllers
            .retain(|(name, _), _| functions.iter().any(|f| f.name() == name));
        self.switch_since
            .retain(|name, _| functions.iter().any(|f| f.name() == name));
        for function in functions {
            let primary = self.scale(host, &function, "primary", &function.pool);
            if let Some(fallback) = &function.fallback {
                self.scale(host, &function, "fallback", fallback);
                self.switch(host, &function, primary, fallback);
            }
        }
    }

    /// Observes one pool, resizes it to the controller's decision, and returns the decision.
    fn scale(
        &mut self,
        host: &Host,
        function: &LoadedFunction,
        variant: &'static str,
        pool: &InstancePool,
    ) -> Decision {
        let load = pool.load();
        let key = (function.name().to_string(), variant);
        let policy = || {
            let mut policy = host.autoscale_policy(function);
            if variant == "fallback" {
                policy.min = policy.min.min(1); // standby: one warm instance is enough
            }
            policy
        };
        let entry = self.controllers.entry(key).or_insert_with(|| {
            (
                function.version(),
                Controller::new(policy(), load.instances),
            )
        });
        if entry.0 != function.version() {
            *entry = (
                function.version(),
                Controller::new(policy(), load.instances),
            );
        }
        let window = entry.1.policy().panic_window;
        let decision = entry.1.observe(Sample {
            at: self.started.elapsed(),
            ongoing: load.running + load.queued,
            p95: pool.p95(window),
        });
        if decision.instances != load.instances {
            tracing::info!(
                function = function.name(),
                version = function.version(),
                variant,
                from = load.instances,
                to = decision.instances,
                running = load.running,
                queued = load.queued,
                panic = decision.panic,
                "scaling: {:?}",
                decision.reason
            );
            if let Err(e) = pool.resize(decision.instances) {
                tracing::error!(
                    function = function.name(),
                    variant,
                    "cannot start an instance: {e}"
                );
            }
            if variant == "primary" {
                host.metrics
                    .set_replicas(function.name(), pool.load().instances);
            }
        }
        decision
    }

    /// Moves traffic to the fallback when the primary stays over its target at its ceiling for
    /// the panic window (at least 1 s), and back when the fallback's load would fit the primary
    /// at half its target for the scale-down delay.
    fn switch(
        &mut self,
        host: &Host,
        function: &LoadedFunction,
        primary: Decision,
        fallback: &InstancePool,
    ) {
        let now = self.started.elapsed();
        let policy = host.autoscale_policy(function);
        let active = function.fallback_active.load(Ordering::Relaxed);
        let (condition, hold) = if active {
            let load = fallback.load();
            let fits = ((load.running + load.queued) as f64)
                <= policy.ceiling() as f64 * policy.target_ongoing / 2.0;
            (fits, policy.scale_down_delay)
        } else {
            let load = function.pool.load();
            let over_target = match (
                function.pool.p95(policy.panic_window),
                policy.target_latency,
            ) {
                (Some(p95), Some(target)) => p95 > target,
                _ => false,
            };
            let at_ceiling = primary.instances >= policy.ceiling()
                && matches!(primary.reason, Reason::AtCeiling { .. });
            (
                at_ceiling && over_target && load.queued > 0,
                policy.panic_window.max(std::time::Duration::from_secs(1)),
            )
        };
        if !condition {
            self.switch_since.remove(function.name());
            return;
        }
        let since = *self
            .switch_since
            .entry(function.name().to_string())
            .or_insert(now);
        if now.saturating_sub(since) >= hold {
            function.fallback_active.store(!active, Ordering::Relaxed);
            self.switch_since.remove(function.name());
            tracing::info!(
                function = function.name(),
                version = function.version(),
                "fallback {}: {}",
                if active { "off" } else { "on" },
                if active {
                    "the fallback's load fits the primary again"
                } else {
                    "the primary is over its target latency at its most replicas"
                }
            );
        }
    }
}
