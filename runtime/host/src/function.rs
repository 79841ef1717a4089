//! A function version loaded and ready to serve: its spec, model signature and instances.

use crate::autoscale::Policy;
use crate::host::Host;
use crate::instance::{Batching, Identity, InstancePool, SessionFactory};
use crate::policy::EndpointPolicy;
use crate::store::{StoreError, VersionRecord};
use aifn_guest::{CallLimits, LoadError};
use aifn_model::{ModelError, Signature};
use aifn_spec::FunctionSpec;
use serde::Serialize;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum LoadFunctionError {
    #[error("stored spec is invalid: {0}")]
    Spec(#[from] aifn_spec::SpecErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model `{id}`: {source}")]
    Model { id: String, source: ModelError },
    #[error("module: {0}")]
    Module(#[from] LoadError),
    #[error("spec.fallback.model: {0}")]
    Fallback(String),
    #[error("spec.scaling.max_batch_size: {0}")]
    Batching(String),
    #[error("endpoint {0} uses `auth: jwt`, but this host has no key to verify tokens: start it with --jwt-secret or --jwt-jwks")]
    NoJwtKeys(String),
}

/// Where the model runs, and why, for `aifn status`.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    pub device: &'static str,
    pub requested_gpus: u32,
    /// Set when the host runs the function differently from what the spec asked.
    pub note: Option<String>,
    pub replicas: usize,
    pub threads_per_replica: usize,
    /// Most requests merged into one inference (1: no batching), and whether shapes are padded.
    pub max_batch_size: usize,
    pub batch_padding: bool,
    pub execution: String,
}

pub struct LoadedFunction {
    pub record: VersionRecord,
    pub spec: FunctionSpec,
    pub signature: Signature,
    pub placement: Placement,
    pub pool: InstancePool,
    /// How the autoscaler may size `pool`.
    pub autoscale: Policy,
    /// The pool of `spec.fallback`'s lighter model, and whether traffic goes to it now (the
    /// autoscaler switches it when the primary cannot keep its target at its ceiling).
    pub fallback: Option<InstancePool>,
    pub fallback_active: std::sync::atomic::AtomicBool,
    /// One per endpoint, in the spec's order.
    pub endpoints: Vec<EndpointPolicy>,
    /// The `X-Aifn-Function` and `X-Aifn-Version` headers every answer carries.
    pub name_header: hyper::header::HeaderValue,
    pub version_header: hyper::header::HeaderValue,
    /// What this version answered lately, for judging rollouts.
    pub outcomes: crate::outcomes::Outcomes,
}

impl LoadedFunction {
    /// Loads the model into one session per replica and links the module; nothing is shared with
    /// the version serving now, so a failure here changes nothing that is serving.
    pub fn load(record: VersionRecord, host: &Host) -> Result<LoadedFunction, LoadFunctionError> {
        let (store, ort, guest, config) = (&host.store, &host.ort, &host.guest, &host.config);
        let spec = aifn_spec::parse(&record.spec_yaml)?;
        if let Some(endpoint) = spec
            .spec
            .endpoints
            .iter()
            .find(|e| e.auth == aifn_spec::Auth::Jwt)
        {
            if !host.jwt.is_configured() {
                return Err(LoadFunctionError::NoJwtKeys(endpoint.route.clone()));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Never more instances than the host allows per function, nor than requests the
        // function may hold at once.
        let instance_limit = config.max_instances_per_function.max(1).min(
            spec.spec
                .scaling
                .max_concurrency
                .map_or(usize::MAX, |m| m as usize),
        );
        let replicas = (spec.spec.scaling.min_replicas.max(1) as usize).min(instance_limit);
        let threads = spec
            .spec
            .resources
            .cpu
            .map_or(1, |cpu| cpu.0.div_ceil(1000) as usize)
            .clamp(1, cores);

        let model_bytes = Arc::new(store.read_blob(&record.model.digest)?);
        let model_err = |source| LoadFunctionError::Model {
            id: record.model_id.clone(),
            source,
        };
        // The first session proves the model loads and tells its signature; the autoscaler makes
        // the others with the same factory.
        let first_session = ort.load(&model_bytes, threads).map_err(model_err)?;
        let signature = first_session.signature().clone();
        let new_session: SessionFactory = {
            let (ort, model_bytes) = (ort.clone(), model_bytes.clone());
            Box::new(move || ort.load(&model_bytes, threads))
        };
        // Instances this host runs usefully for the function: its cores over the instance's
        // threads, the host's per-function limit, and the requests the function may hold.
        let capacity = (cores / threads).max(1).min(instance_limit);
        let autoscale = Policy::new(
            spec.spec.scaling.min_replicas as usize,
            spec.spec.scaling.max_replicas as usize,
            capacity,
            spec.spec.scaling.target_latency.map(|t| t.0),
        );
        let batching = batching(&spec.spec.scaling, &signature)?;

        let module = match &record.module {
            Some(artifact) => {
                let wasm = store.read_blob(&artifact.digest)?;
                let module_spec = spec.spec.module.as_ref();
                let limits = CallLimits {
                    timeout: module_spec
                        .and_then(|m| m.timeout)
                        .map_or(config.module_timeout, |t| t.0),
                    memory_bytes: spec
                        .spec
                        .resources
                        .memory
                        .map_or(config.module_memory_bytes, |m| m.0),
                    max_output_bytes: config.max_module_output_bytes,
                };
                let tag = format!("{}@v{}", record.name, record.version);
                let capabilities = module_spec
                    .map(|m| m.capabilities.clone())
                    .unwrap_or_default();
                let isolation = module_spec.map(|m| m.isolation).unwrap_or_default();
                Some(guest.load(
                    &wasm,
                    artifact.digest.hex(),
                    &tag,
                    limits,
                    &capabilities,
                    isolation,
                )?)
            }
            None => None,
        };

        let requested_gpus = spec.spec.resources.gpu;
        let placement = Placement {
            device: "cpu",
            requested_gpus,
            note: (requested_gpus > 0).then(|| {
                format!(
                    "spec asks for {requested_gpus} GPU(s) but this host has no GPU execution provider; running on CPU"
                )
            }),
            replicas,
            threads_per_replica: threads,
            max_batch_size: batching.max_size,
            batch_padding: batching.pad,
            execution: spec.spec.model.runtime.execution_note(),
        };
        if let Some(note) = &placement.note {
            tracing::warn!(function = %record.name, version = record.version, "{note}");
        }
        let identity = Identity {
            name: Arc::from(record.name.as_str()),
            version: record.version,
            variant: "primary",
        };
        // Requests held at once: `max_concurrency` (running + queued) or a queue per instance the
        // function may scale to.
        let queue = match spec.spec.scaling.max_concurrency {
            Some(max) => (max as usize).saturating_sub(replicas),
            None => autoscale.ceiling().max(1) * config.queue_per_instance,
        };
        // The lighter model of `spec.fallback`: its own pool (one instance to start, the
        // autoscaler sizes it), the same module, and it must take the same inputs.
        let fallback = match (&record.fallback_model, &spec.spec.fallback) {
            (Some(artifact), Some(fallback)) => {
                let bytes = Arc::new(store.read_blob(&artifact.digest)?);
                let err = |source| LoadFunctionError::Model {
                    id: fallback.model.id.clone(),
                    source,
                };
                let first = ort.load(&bytes, threads).map_err(err)?;
                if first.signature().inputs != signature.inputs {
                    return Err(LoadFunctionError::Fallback(format!(
                        "model `{}` takes {:?}, but `{}` takes {:?}; a fallback must take the same inputs",
                        fallback.model.id,
                        first.signature().inputs.iter().map(|p| &p.name).collect::<Vec<_>>(),
                        record.model_id,
                        signature.inputs.iter().map(|p| &p.name).collect::<Vec<_>>()
                    )));
                }
                let factory: SessionFactory = {
                    let ort = ort.clone();
                    Box::new(move || ort.load(&bytes, threads))
                };
                let identity = Identity {
                    variant: "fallback",
                    ..identity.clone()
                };
                let pool = InstancePool::start(
                    identity,
                    first,
                    factory,
                    1,
                    module.clone(),
                    queue,
                    batching,
                )
                .map_err(err)?;
                Some(pool)
            }
            _ => None,
        };
        let pool = InstancePool::start(
            identity,
            first_session,
            new_session,
            replicas,
            module,
            queue,
            batching,
        )
        .map_err(model_err)?;
        let endpoints = spec
            .spec
            .endpoints
            .iter()
            .map(|e| EndpointPolicy::new(&record.name, e, &host.limiters, &host.metrics))
            .collect();
        let record_version = record.version;
        let name_header = hyper::header::HeaderValue::from_str(&record.name)
            .expect("function names are header-safe");
        Ok(LoadedFunction {
            record,
            spec,
            signature,
            placement,
            pool,
            autoscale,
            fallback,
            fallback_active: Default::default(),
            endpoints,
            name_header,
            version_header: hyper::header::HeaderValue::from(record_version),
            outcomes: Default::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn version(&self) -> u64 {
        self.record.version
    }

    /// The policy of the endpoint serving `method` on `route`.
    pub fn endpoint(&self, method: &str, route: &str) -> Option<&EndpointPolicy> {
        self.endpoints
            .iter()
            .find(|e| e.route == route && e.method.as_str() == method)
    }
}

impl LoadedFunction {
    /// The pool that takes new requests: the fallback's while it is active, else the primary.
    pub fn serving_pool(&self) -> &InstancePool {
        match &self.fallback {
            Some(fallback)
                if self
                    .fallback_active
                    .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                fallback
            }
            _ => &self.pool,
        }
    }
}

/// Dynamic batching as the spec asks, if the model can take it: every input and output must have
/// a first dimension of any size (the batch).
fn batching(
    scaling: &aifn_spec::Scaling,
    signature: &Signature,
) -> Result<Batching, LoadFunctionError> {
    if scaling.max_batch_size <= 1 {
        return Ok(Batching::OFF);
    }
    let ports = signature
        .inputs
        .iter()
        .map(|p| ("input", p))
        .chain(signature.outputs.iter().map(|p| ("output", p)));
    for (role, port) in ports {
        if port.shape.first().is_none_or(|&d| d >= 0) {
            return Err(LoadFunctionError::Batching(format!(
                "the model's {role} `{}` has shape {:?}, without a batch dimension of any size first; set max_batch_size to 1 or export the model with a dynamic batch axis",
                port.name, port.shape
            )));
        }
    }
    Ok(Batching {
        max_size: scaling.max_batch_size as usize,
        max_delay: scaling
            .max_batch_delay
            .map_or(std::time::Duration::ZERO, |d| d.0),
        pad: scaling.batch_padding == aifn_spec::BatchPadding::Zeros,
    })
}
