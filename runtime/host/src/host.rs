//! The host: what is deployed, and the operations of the control plane.

use crate::autoscale::{Controller, Decision, Policy, Reason, Sample};
use crate::config::HostConfig;
use crate::function::{LoadFunctionError, LoadedFunction};
use crate::instance::InstancePool;
use crate::keys::KeyStore;
use crate::lifecycle::Actor;
use crate::metrics::Metrics;
use crate::policy::access::JwtVerifier;
use crate::policy::rate_limit::{HostLimiter, RateLimiters};
use crate::store::{
    now_unix, Artifact, Deployment, Digest, ModelEntry, Phase, Store, StoreError, VersionRecord,
};
use aifn_guest::GuestEngine;
use aifn_model::OnnxRuntime;
use aifn_spec::{Method, RolloutStrategy, SpecErrors};
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
    #[error("{0}")]
    Rollout(String),
    #[error("a rollout of `{name}` version {candidate} is in progress: `aifn promote {name}` or `aifn abort {name}` first")]
    RolloutInProgress { name: String, candidate: u64 },
    #[error("`{0}` has no rollout in progress")]
    NoRollout(String),
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
    /// How the new version replaces the serving one; absent: the spec's `rollout.strategy`, or
    /// at once.
    #[serde(default)]
    pub strategy: Option<aifn_spec::RolloutStrategy>,
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DeployOutcome {
    pub name: String,
    pub version: u64,
    pub digest: Digest,
    /// True when the same spec and artifacts were already serving: no new version was made.
    pub unchanged: bool,
    /// The version taking (most) traffic now: `version` itself, unless a rollout has begun.
    pub serving_version: u64,
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
    /// A new version on its way in, with both versions' figures.
    pub rollout: Option<crate::lifecycle::RolloutView>,
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
    /// Rollouts in progress, by function (see [`crate::lifecycle`]).
    pub(crate) rollouts: DashMap<String, Arc<crate::lifecycle::LiveRollout>>,
    pub(crate) notifier: crate::webhook::Notifier,
    /// One change of what serves traffic at a time (deploy, rollback, delete, a rollout's
    /// step), so version numbers, routes and rollouts stay consistent.
    pub(crate) deploy_lock: tokio::sync::Mutex<()>,
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
        let notifier = crate::webhook::Notifier::new(config.webhook_url.as_deref())?;
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
            rollouts: DashMap::new(),
            notifier,
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
    /// Brings back every function's stable version, and any rollout in progress, after a
    /// (re)start.
    pub async fn restore(self: &Arc<Self>) -> anyhow::Result<()> {
        let deployments = self.store.deployments().context("reading deployments")?;
        for (name, deployment) in deployments {
            let loaded = match self.store.version(&name, deployment.stable) {
                Ok(record) => self.load(record).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match loaded {
                Ok(function) => {
                    tracing::info!(function = %name, version = function.version(), "restored");
                    self.activate(function);
                    if let Some(rollout) = deployment.rollout {
                        self.resume_rollout(&name, rollout)
                            .await
                            .with_context(|| format!("resuming the rollout of {name}"))?;
                    }
                }
                Err(e) => {
                    tracing::error!(function = %name, "cannot restore: {e}");
                    self.load_errors.insert(name, e);
                }
            }
        }
        self.ready.store(true, Ordering::Release);
        self.start_housekeeping();
        self.start_autoscaler();
        self.start_rollout_loop();
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
        actor: &Actor,
    ) -> Result<DeployOutcome, DeployError> {
        let result = self.deploy_inner(request, actor).await;
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
        actor: &Actor,
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
        if let Some(live) = self.rollout(&name) {
            return Err(DeployError::RolloutInProgress {
                name,
                candidate: live.record.lock().expect("rollout lock").candidate,
            });
        }
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
            deployed_by: actor.0.clone(),
        };
        // Load everything before touching what is serving: a failure here changes nothing.
        let function = Arc::new(self.load(record.clone()).await?);

        // How it replaces the serving version: the deploy's choice, else the spec's; a first
        // deploy has nothing to replace.
        let current = self.function(&name);
        let strategy = request
            .strategy
            .or(spec.spec.rollout.as_ref().map(|r| r.strategy))
            .filter(|_| current.is_some())
            .unwrap_or(RolloutStrategy::Immediate);
        let (deployment, live) = match (&current, strategy) {
            (Some(stable), RolloutStrategy::Canary | RolloutStrategy::Shadow) => {
                let (deployment, live) = self.begin_rollout(stable, &function, strategy)?;
                (deployment, Some(live))
            }
            _ => (
                Deployment {
                    stable: record.version,
                    rollout: None,
                },
                None,
            ),
        };
        // Uploaded models become known by their ids, for specs that name only the id.
        let uploaded: Vec<ModelEntry> = [(spec.spec.model.id.clone(), uploaded_model)]
            .into_iter()
            .chain(
                spec.spec
                    .fallback
                    .iter()
                    .zip(fallback)
                    .map(|(f, (_, up))| (f.model.id.clone(), up)),
            )
            .filter_map(|(id, artifact)| {
                Some(ModelEntry {
                    id,
                    model: artifact?,
                    updated_at: now_unix(),
                })
            })
            .collect();
        let how = match (&deployment.rollout, strategy) {
            (Some(r), RolloutStrategy::Canary) if matches!(r.phase, Phase::Step { .. }) => {
                format!(
                    "canary against version {}: {}% of traffic first",
                    r.previous,
                    live.as_ref().map_or(0.0, |l| l.plan.steps[0])
                )
            }
            (Some(r), RolloutStrategy::Shadow) => {
                format!(
                    "shadow of version {}: gets a copy of its traffic",
                    r.previous
                )
            }
            (Some(r), _) => format!(
                "all traffic at once, watched, version {} on standby",
                r.previous
            ),
            (None, _) => "serves all traffic".to_string(),
        };
        let reason = match &request.reason {
            Some(reason) => format!("{how}; {reason}"),
            None => how,
        };
        self.store.write(|txn| {
            txn.save_version(&record)?;
            for entry in &uploaded {
                txn.register_model(entry)?;
            }
            txn.set_deployment(&name, Some(&deployment))?;
            txn.log(&crate::lifecycle::event(
                &name,
                actor,
                "deploy",
                record.version,
                deployment.stable,
                &reason,
                None,
            ))
        })?;
        let serving = match live {
            Some(live) => {
                if deployment.stable == record.version {
                    self.activate_arc(function.clone());
                }
                self.rollouts.insert(name.clone(), live);
                function
            }
            None => self.activate_arc(function),
        };
        tracing::info!(function = %name, version = record.version, digest = %record.digest, ?strategy, "deployed");
        // Keep the newest versions the host is configured to keep.
        if let Err(e) = self.prune_locked(&name, self.config.keep_versions, &Actor::platform()) {
            tracing::warn!(function = %name, "pruning old versions: {e}");
        }
        Ok(self.outcome(&serving, false))
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
    pub(crate) async fn load(
        self: &Arc<Self>,
        record: VersionRecord,
    ) -> Result<LoadedFunction, DeployError> {
        let host = self.clone();
        tokio::task::spawn_blocking(move || LoadedFunction::load(record, &host))
            .await
            .map_err(|e| DeployError::Module(format!("loading panicked: {e}")))?
            .map_err(DeployError::from)
    }

    /// Puts an earlier version back in service: `to`, or the newest version older than the one
    /// serving. Requests in flight finish on the version they started on; none fails.
    /// During a rollout, a rollback gives the traffic back to the version it started from.
    pub async fn rollback(
        self: &Arc<Self>,
        name: &str,
        to: Option<u64>,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<DeployOutcome, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let current = self
            .function(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?;
        if let Some(live) = self.rollout(name) {
            let previous = live.record.lock().expect("rollout lock").previous;
            if to.is_some_and(|v| v != previous) {
                return Err(DeployError::Rollout(format!(
                    "a rollout is in progress; a rollback now returns to version {previous} (or `aifn abort {name}` first)"
                )));
            }
            self.revert(
                name,
                &live,
                "rollback",
                actor,
                reason.unwrap_or("rolled back by hand"),
                None,
            )?;
            let function = self.function(name).unwrap_or(current);
            return Ok(self.outcome(&function, false));
        }
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
        let from = current.version();
        self.commit(
            name,
            Deployment {
                stable: function.version(),
                rollout: None,
            },
            &crate::lifecycle::event(
                name,
                actor,
                "rollback",
                from,
                function.version(),
                reason.unwrap_or("rolled back by hand"),
                None,
            ),
        )?;
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
            serving_version: self
                .function(function.name())
                .map_or(function.version(), |f| f.version()),
            endpoints: endpoint_views(function),
            warnings: function.placement.note.iter().cloned().collect(),
        }
    }

    /// Puts a loaded version in service: new routes first, then the function, then stale routes
    /// go, so no request in between finds nothing.
    fn activate(&self, function: LoadedFunction) -> Arc<LoadedFunction> {
        self.activate_arc(Arc::new(function))
    }

    pub(crate) fn activate_arc(&self, function: Arc<LoadedFunction>) -> Arc<LoadedFunction> {
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
    pub async fn delete(&self, name: &str, actor: &Actor) -> Result<u64, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let deleted = |version: u64| {
            self.commit(
                name,
                None,
                &crate::lifecycle::event(
                    name,
                    actor,
                    "deleted",
                    version,
                    0,
                    "stopped serving",
                    None,
                ),
            )
        };
        let Some(function) = self.function(name) else {
            if self.load_errors.contains_key(name) {
                deleted(0)?;
                self.load_errors.remove(name);
                return Ok(0);
            }
            return Err(DeployError::NotFound(name.to_string()));
        };
        deleted(function.version())?;
        self.functions.remove(name);
        self.rollouts.remove(name);
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
            rollout: self.rollout_view(name),
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
    /// (function, version, variant) → its controller.
    controllers: std::collections::HashMap<(String, u64, &'static str), Controller>,
    /// function → since when the primary has been over its target at its ceiling (while it
    /// serves), or the fallback's load has fit the primary (while the fallback serves).
    switch_since: std::collections::HashMap<(String, u64), std::time::Duration>,
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
        // Every loaded version: the stable ones, and the other version of each rollout.
        let functions: Vec<Arc<LoadedFunction>> = host
            .functions
            .iter()
            .map(|f| f.value().clone())
            .chain(host.rollouts.iter().map(|r| r.other.clone()))
            .collect();
        let loaded = |name: &str, version: u64| {
            functions
                .iter()
                .any(|f| f.name() == name && f.version() == version)
        };
        self.controllers
            .retain(|(name, version, _), _| loaded(name, *version));
        self.switch_since
            .retain(|(name, version), _| loaded(name, *version));
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
        let key = (function.name().to_string(), function.version(), variant);
        let policy = || {
            let mut policy = host.autoscale_policy(function);
            if variant == "fallback" {
                policy.min = policy.min.min(1); // standby: one warm instance is enough
            }
            policy
        };
        let controller = self
            .controllers
            .entry(key)
            .or_insert_with(|| Controller::new(policy(), load.instances));
        let window = controller.policy().panic_window;
        let decision = controller.observe(Sample {
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
            let serving = host
                .function(function.name())
                .is_some_and(|f| f.version() == function.version());
            if variant == "primary" && serving {
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
            self.switch_since
                .remove(&(function.name().to_string(), function.version()));
            return;
        }
        let since = *self
            .switch_since
            .entry((function.name().to_string(), function.version()))
            .or_insert(now);
        if now.saturating_sub(since) >= hold {
            function.fallback_active.store(!active, Ordering::Relaxed);
            self.switch_since
                .remove(&(function.name().to_string(), function.version()));
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
