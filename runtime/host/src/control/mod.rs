//! The control plane: deploys, rollbacks, deletes, rollouts ([`rollouts`]), pruning ([`prune`])
//! and what `aifn status` and friends show ([`views`]).
//!
//! Every change of what serves a function holds that function's [`FunctionGuard`] from start to
//! end (loading included), so one function's slow deploy never delays another's rollback. A change
//! lands in one step ([`ControlPlane::apply`]): the database transaction (what serves, with the
//! audit event that says why) and the registry's next snapshot together, or neither.

pub mod monitoring;
pub mod prune;
pub mod rollouts;
pub mod views;

use crate::api::{DeployOutcome, DeployRequest, EndpointView};
use crate::function::LoadedFunction;
use crate::loader::{LoadFunctionError, Loader};
use crate::metrics::Metrics;
use crate::records::{
    now_unix, Actor, Artifact, AuditAction, AuditEvent, Deployment, Digest, ModelEntry, Phase,
    VersionRecord, Versions,
};
use crate::registry::{Entry, FunctionGuard, Registry, RouteConflict, Serving};
use crate::store::{Store, StoreError};
use crate::webhook::Notifier;
use aifn_spec::{RolloutStrategy, SpecErrors};
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
    #[error(transparent)]
    RouteConflict(#[from] RouteConflict),
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
    /// The new version did not answer `spec.check`'s sample request with a 2xx.
    #[error("spec.check: the new version {0}; it was not activated")]
    CheckFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ControlPlane {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    loader: Arc<Loader>,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    /// Versions kept per function; older ones not serving are pruned after each deploy.
    pub keep_versions: usize,
    /// Garbage collection of blobs, which functions share: one at a time.
    gc: std::sync::Mutex<()>,
}

impl ControlPlane {
    /// Runs `each_tick` every `tick` for as long as the control plane lives (the loops of
    /// rollouts and monitoring).
    fn every<F, Fut>(self: &Arc<Self>, tick: std::time::Duration, each_tick: F)
    where
        F: Fn(Arc<ControlPlane>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let control = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let Some(control) = control.upgrade() else {
                    return;
                };
                each_tick(control).await;
            }
        });
    }

    pub fn new(
        store: Arc<Store>,
        registry: Arc<Registry>,
        loader: Arc<Loader>,
        notifier: Notifier,
        keep_versions: usize,
    ) -> ControlPlane {
        ControlPlane {
            metrics: loader.metrics.clone(),
            store,
            registry,
            loader,
            notifier,
            keep_versions,
            gc: Default::default(),
        }
    }

    /// Brings back every function's stable version, and any rollout in progress, after a
    /// (re)start; then the registry says it is ready.
    pub async fn restore(&self) -> Result<(), StoreError> {
        for (name, deployment) in self.store.deployments()? {
            let guard = self.registry.lock(&name).await;
            let loaded = match self.store.version(&name, deployment.stable) {
                Ok(record) => self.load(record).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match loaded {
                Ok(function) => {
                    tracing::info!(function = %name, version = function.version(), "restored");
                    let served = self.registry.change(&guard, |entry| {
                        entry.set(Serving {
                            stable: function.clone(),
                            rollout: None,
                        })
                    });
                    match served {
                        Ok(()) => self.loaded(&function),
                        Err(e) => self.restore_failed(&guard, e.to_string()),
                    }
                    if let Some(rollout) = deployment.rollout {
                        self.resume_rollout(&guard, rollout).await?;
                    }
                }
                Err(e) => self.restore_failed(&guard, e),
            }
        }
        self.registry.set_ready();
        Ok(())
    }

    fn restore_failed(&self, guard: &FunctionGuard, error: String) {
        tracing::error!(function = guard.name(), "cannot restore: {error}");
        let _ = self.registry.change(guard, |entry| {
            entry.set_failed(error);
            Ok::<_, RouteConflict>(())
        });
    }

    pub async fn deploy(
        &self,
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
        &self,
        request: DeployRequest,
        actor: &Actor,
    ) -> Result<DeployOutcome, DeployError> {
        let spec = aifn_spec::parse(&request.spec).map_err(DeployError::Spec)?;
        let name = spec.metadata.name.clone();
        let artifacts = self.resolve_artifacts(&spec, &request)?;

        let guard = self.registry.lock(&name).await;
        let current = self.registry.serving(&name);
        if let Some(live) = current.as_ref().and_then(|s| s.rollout.as_ref()) {
            return Err(DeployError::RolloutInProgress {
                name,
                candidate: live.record.candidate,
            });
        }
        // Checked again when it lands; this only fails fast, before loading.
        self.registry
            .snapshot()
            .check_routes_free(&name, &spec.spec.endpoints)?;

        let digest = VersionRecord::deployment_digest(
            &request.spec,
            &artifacts.model,
            artifacts.module.as_ref(),
            artifacts.fallback.as_ref(),
            artifacts.reference.as_ref(),
        );
        if let Some(current) = &current {
            if current.stable.record.digest == digest {
                return Ok(self.outcome(&current.stable, true));
            }
        }
        let record = VersionRecord {
            name: name.clone(),
            version: self.store.next_version(&name)?,
            digest,
            spec_yaml: request.spec,
            model_id: spec.spec.model.id.clone(),
            model: artifacts.model,
            module: artifacts.module,
            fallback_model: artifacts.fallback,
            monitoring_reference: artifacts.reference,
            created_at: now_unix(),
            deployed_by: actor.0.clone(),
        };
        // Load everything before touching what is serving: a failure here changes nothing.
        let function = self.load(record.clone()).await?;
        run_check(&function).await?;

        // How it replaces the serving version: the deploy's choice, else the spec's; a first
        // deploy has nothing to replace.
        let strategy = request
            .strategy
            .or(spec.spec.rollout.as_ref().map(|r| r.strategy))
            .filter(|_| current.is_some())
            .unwrap_or(RolloutStrategy::Immediate);
        let (deployment, serving) = match (&current, strategy) {
            (Some(stable), RolloutStrategy::Canary | RolloutStrategy::Shadow) => {
                self.begin_rollout(&stable.stable, &function, strategy)?
            }
            _ => (
                Deployment {
                    stable: record.version,
                    rollout: None,
                },
                Serving {
                    stable: function.clone(),
                    rollout: None,
                },
            ),
        };
        let reason = deploy_reason(&deployment, &serving, strategy, request.reason.as_deref());
        let event = AuditEvent::new(
            &name,
            actor,
            AuditAction::Deploy,
            Some(Versions {
                acted_on: record.version,
                serving: deployment.stable,
            }),
            reason,
        );
        let serving_stable = serving.stable.clone();
        self.registry.change(&guard, |entry| {
            entry.set(serving)?;
            self.store.write(|txn| {
                txn.save_version(&record)?;
                for entry in &artifacts.register {
                    txn.register_model(entry)?;
                }
                txn.set_deployment(&name, Some(&deployment))?;
                txn.log(&event)
            })?;
            Ok::<_, DeployError>(())
        })?;
        self.loaded(&serving_stable);
        tracing::info!(function = %name, version = record.version, digest = %record.digest, ?strategy, "deployed");
        // Keep the newest versions the host is configured to keep.
        if let Err(e) = self.prune_versions(&guard, self.keep_versions, &Actor::platform()) {
            tracing::warn!(function = %name, "pruning old versions: {e}");
        }
        Ok(self.outcome(&function, false))
    }

    /// The artifacts a deploy names: uploaded, or known by their model ids.
    fn resolve_artifacts(
        &self,
        spec: &aifn_spec::FunctionSpec,
        request: &DeployRequest,
    ) -> Result<DeployArtifacts, DeployError> {
        let (model, uploaded_model) =
            self.resolve_model(&spec.spec.model, request.model.as_ref())?;
        let fallback = match &spec.spec.fallback {
            Some(fallback) => Some((
                fallback.model.id.clone(),
                self.resolve_model(&fallback.model, request.fallback_model.as_ref())?,
            )),
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
        // Uploaded models become known by their ids, for specs that name only the id.
        let register = [(spec.spec.model.id.clone(), uploaded_model)]
            .into_iter()
            .chain(
                fallback
                    .iter()
                    .map(|(id, (_, up))| (id.clone(), up.clone())),
            )
            .filter_map(|(id, artifact)| {
                Some(ModelEntry {
                    id,
                    model: artifact?,
                    updated_at: now_unix(),
                })
            })
            .collect();
        let wants_reference = spec
            .spec
            .monitoring
            .as_ref()
            .and_then(|m| m.reference.as_ref());
        let reference = match (wants_reference, &request.monitoring_reference) {
            (Some(_), Some(digest)) => Some(self.uploaded(digest)?),
            (Some(path), None) => {
                return Err(DeployError::Module(format!(
                    "spec.monitoring.reference is `{path}` but no reference was uploaded with the deploy"
                )))
            }
            (None, Some(_)) => {
                return Err(DeployError::Module(
                    "a monitoring reference was uploaded but the spec names none".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(DeployArtifacts {
            model,
            module,
            fallback: fallback.map(|(_, (artifact, _))| artifact),
            reference,
            register,
        })
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

    /// Loads a version off the async workers (sessions, module compilation).
    async fn load(&self, record: VersionRecord) -> Result<Arc<LoadedFunction>, DeployError> {
        let loader = self.loader.clone();
        let function = tokio::task::spawn_blocking(move || loader.load(record))
            .await
            .map_err(|e| DeployError::Module(format!("loading panicked: {e}")))??;
        Ok(Arc::new(function))
    }

    /// Puts an earlier version back in service: `to`, or the newest version older than the one
    /// serving. Requests in flight finish on the version they started on; none fails.
    /// During a rollout, a rollback gives the traffic back to the version it started from.
    pub async fn rollback(
        &self,
        name: &str,
        to: Option<u64>,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<DeployOutcome, DeployError> {
        let guard = self.registry.lock(name).await;
        let current = self
            .registry
            .serving(name)
            .ok_or_else(|| DeployError::NotFound(name.to_string()))?;
        let reason = reason.unwrap_or("rolled back by hand");
        if let Some(live) = &current.rollout {
            let previous = live.record.previous;
            if to.is_some_and(|v| v != previous) {
                return Err(DeployError::Rollout(format!(
                    "a rollout is in progress; a rollback now returns to version {previous} (or `aifn abort {name}` first)"
                )));
            }
            self.revert(&guard, live, AuditAction::Rollback, actor, reason, None)?;
            let function = self.registry.function(name).unwrap_or(current.stable);
            return Ok(self.outcome(&function, false));
        }
        let current = current.stable;
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
        self.registry
            .snapshot()
            .check_routes_free(name, &spec.spec.endpoints)?;
        let function = self.load(target).await?;
        let from = current.version();
        let event = AuditEvent::new(
            name,
            actor,
            AuditAction::Rollback,
            Some(Versions {
                acted_on: from,
                serving: function.version(),
            }),
            reason,
        );
        self.serve_alone(&guard, &function, &event)?;
        tracing::info!(function = %name, from, to = function.version(), "rolled back");
        Ok(self.outcome(&function, false))
    }

    /// Stops serving a function. Its versions stay in the store; a later deploy continues numbering.
    pub async fn delete(&self, name: &str, actor: &Actor) -> Result<u64, DeployError> {
        let guard = self.registry.lock(name).await;
        // A function that failed to load at start has no version serving, and may be deleted.
        let version = match self.registry.serving(name) {
            Some(serving) => serving.stable.version(),
            None if self.registry.snapshot().failed().any(|(n, _)| n == name) => 0,
            None => return Err(DeployError::NotFound(name.to_string())),
        };
        let event = AuditEvent::new(
            name,
            actor,
            AuditAction::Deleted,
            Some(Versions {
                acted_on: version,
                serving: 0,
            }),
            "stopped serving",
        );
        self.apply(&guard, None, &event, |entry| {
            entry.remove();
            Ok(())
        })?;
        self.metrics.function_removed(name);
        tracing::info!(function = %name, version, "deleted");
        Ok(version)
    }

    /// Lands one change of the guarded function: `serve` builds its entry in the registry's next
    /// snapshot, then `deployment` (`None`: not deployed) and `event` are written in one
    /// transaction; the snapshot is swapped in only if both succeed. A crash leaves the old
    /// state or the new.
    fn apply(
        &self,
        guard: &FunctionGuard,
        deployment: Option<Deployment>,
        event: &AuditEvent,
        serve: impl FnOnce(&mut Entry<'_>) -> Result<(), RouteConflict>,
    ) -> Result<(), DeployError> {
        self.registry.change(guard, |entry| {
            serve(entry)?;
            self.store.write(|txn| {
                txn.set_deployment(guard.name(), deployment.as_ref())?;
                txn.log(event)
            })?;
            Ok(())
        })
    }

    /// `function` serves all of the guarded function's traffic, with no rollout: after a rollback,
    /// a rollout's end or a revert.
    fn serve_alone(
        &self,
        guard: &FunctionGuard,
        function: &Arc<LoadedFunction>,
        event: &AuditEvent,
    ) -> Result<(), DeployError> {
        let deployment = Deployment {
            stable: function.version(),
            rollout: None,
        };
        self.apply(guard, Some(deployment), event, |entry| {
            entry.set(Serving {
                stable: function.clone(),
                rollout: None,
            })
        })?;
        self.loaded(function);
        Ok(())
    }

    /// Bookkeeping once a version serves as stable.
    fn loaded(&self, function: &LoadedFunction) {
        self.metrics.function_loaded(
            function.name(),
            function.version(),
            function.placement.replicas,
            function.spec.spec.scaling.target_latency.map(|t| t.0),
        );
    }

    fn outcome(&self, function: &LoadedFunction, unchanged: bool) -> DeployOutcome {
        DeployOutcome {
            name: function.name().to_string(),
            version: function.version(),
            digest: function.record.digest.clone(),
            unchanged,
            serving_version: self
                .registry
                .function(function.name())
                .map_or(function.version(), |f| f.version()),
            endpoints: endpoint_views(function),
            v2: function.v2_exposed,
            data_url: None,
            warnings: function.placement.notes.clone(),
        }
    }
}

/// Sends `spec.check`'s sample request to a loaded version before it takes any traffic (straight to
/// its instances: no admission, and not counted in its outcomes); anything but a 2xx answer, within
/// the endpoint's deadline, fails the deploy.
async fn run_check(function: &LoadedFunction) -> Result<(), DeployError> {
    let Some(check) = &function.spec.spec.check else {
        return Ok(());
    };
    let endpoints = &function.spec.spec.endpoints;
    let endpoint = match &check.route {
        Some(route) => endpoints.iter().find(|e| &e.route == route),
        None => endpoints.first(),
    }
    .ok_or_else(|| DeployError::CheckFailed("has no such endpoint".into()))?;
    let failed = DeployError::CheckFailed;
    let work = crate::instance::Work::Endpoint {
        route: endpoint.route.clone(),
        method: endpoint.method.as_str().to_string(),
        headers: check.headers.clone(),
        body: bytes::Bytes::from(check.body.clone()),
    };
    let receiver = function
        .pool
        .submit(work, None)
        .map_err(|e| failed(e.to_string()))?;
    let deadline = endpoint
        .timeout
        .map_or(std::time::Duration::from_secs(30), |t| t.0);
    match tokio::time::timeout(deadline, receiver).await {
        Ok(Ok(Ok(reply))) if (200..300).contains(&reply.status) => Ok(()),
        Ok(Ok(Ok(reply))) => {
            let body = String::from_utf8_lossy(&reply.body);
            let body: String = body.chars().take(300).collect();
            Err(failed(format!("answered {}: {body}", reply.status)))
        }
        Ok(Ok(Err(error))) => Err(failed(format!("failed: {error}"))),
        Ok(Err(_)) => Err(failed("stopped before answering".into())),
        Err(_) => Err(failed(format!("did not answer within {deadline:?}"))),
    }
}

/// What a deploy's spec names, resolved to stored artifacts.
struct DeployArtifacts {
    model: Artifact,
    module: Option<Artifact>,
    fallback: Option<Artifact>,
    reference: Option<Artifact>,
    /// Uploaded models to register under their ids.
    register: Vec<ModelEntry>,
}

/// The audit log's words for how a deploy replaces the serving version.
fn deploy_reason(
    deployment: &Deployment,
    serving: &Serving,
    strategy: RolloutStrategy,
    reason: Option<&str>,
) -> String {
    let how = match (&deployment.rollout, strategy) {
        (Some(r), RolloutStrategy::Canary) if matches!(r.phase, Phase::Step { .. }) => {
            format!(
                "canary against version {}: {}% of traffic first",
                r.previous,
                serving.rollout.as_ref().map_or(0.0, |l| l.plan.steps[0])
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
    match reason {
        Some(reason) => format!("{how}; {reason}"),
        None => how,
    }
}

pub(crate) fn endpoint_views(function: &LoadedFunction) -> Vec<EndpointView> {
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
