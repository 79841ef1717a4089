//! The loader: makes a stored version ready to serve (model sessions, the linked module, the
//! endpoint policies, the instance pools), with exactly what that needs and nothing of the rest
//! of the host.

use crate::api::Placement;
use crate::autoscale::{Policy, ScalerWake};
use crate::function::LoadedFunction;
use crate::instance::{Batching, Identity, InstancePool, PoolConfig, SessionFactory, TensorLimits};
use crate::metrics::Metrics;
use crate::monitor::{Tap, VersionMonitor};
use crate::policy::rate_limit::RateLimiters;
use crate::policy::EndpointPolicy;
use crate::records::VersionRecord;
use crate::store::{Store, StoreError};
use aifn_guest::{CallLimits, GuestEngine, LoadError, ModuleConfig};
use aifn_model::{ModelError, OnnxRuntime, Signature};
use std::sync::Arc;
use std::time::Duration;

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
    #[error("module.capabilities.read_dirs: {0}")]
    Grant(String),
    /// The module compiles but cannot start (its start function traps, say): refused before the
    /// version takes any traffic.
    #[error("module: {0}")]
    ModuleStart(aifn_guest::GuestError),
    #[error("spec.fallback.model: {0}")]
    Fallback(String),
    #[error("spec.scaling.max_batch_size: {0}")]
    Batching(String),
    #[error(transparent)]
    Reference(#[from] crate::monitor::ReferenceError),
    #[error("endpoint {0} uses `auth: jwt`, but this host has no key to verify tokens: start it with --jwt-secret or --jwt-jwks")]
    NoJwtKeys(String),
}

/// The host's limits on what a function may use (a spec asks within them).
#[derive(Debug, Clone)]
pub struct LoadLimits {
    /// Deadline of one module call when the spec sets none.
    pub module_timeout: Duration,
    /// Memory cap of one module instance when the spec sets no `resources.memory`.
    pub module_memory_bytes: u64,
    /// Upper bound on tensors or a response body a module returns.
    pub max_module_output_bytes: usize,
    /// At most this many instances per function (at least 1).
    pub max_instances_per_function: usize,
    /// Requests that may wait per instance before the host answers 503.
    pub queue_per_instance: usize,
    /// Elements one request's raw tensors may hold (v2, and endpoints without a module).
    pub max_tensor_elements: usize,
    /// Largest merged batch input in bytes.
    pub max_batch_bytes: usize,
    /// How long an idle instance looks for work before it sleeps.
    pub idle_spin: std::time::Duration,
    /// Bytes of log lines a module may write per request.
    pub max_module_log_bytes: usize,
}

/// What loading a version needs.
pub struct Loader {
    pub ort: OnnxRuntime,
    pub guest: GuestEngine,
    pub store: Arc<Store>,
    pub limits: LoadLimits,
    /// Whether the host can verify JWTs (an `auth: jwt` endpoint needs it).
    pub jwt_configured: bool,
    /// Rate-limit state, shared by the versions of an endpoint.
    pub limiters: Arc<RateLimiters>,
    pub metrics: Arc<Metrics>,
    /// Pools wake the autoscaler through it when a request finds no instance.
    pub scaler: ScalerWake,
}

impl Loader {
    /// Loads the model into one session per replica and links the module; nothing is shared with
    /// the version serving now, so a failure here changes nothing that is serving.
    pub fn load(&self, record: VersionRecord) -> Result<LoadedFunction, LoadFunctionError> {
        let (store, ort, guest, config) = (&self.store, &self.ort, &self.guest, &self.limits);
        let spec = aifn_spec::parse(&record.spec_yaml)?;
        if let Some(endpoint) = spec.spec.endpoints.iter().find(|e| {
            e.auth == aifn_spec::Auth::Jwt
                && e.jwt
                    .as_ref()
                    // Keys of the host's own; an introspected endpoint also takes opaque tokens.
                    .is_some_and(|j| {
                        j.keys == aifn_spec::JwtKeys::Host && j.introspection.is_none()
                    })
        }) {
            if !self.jwt_configured {
                return Err(LoadFunctionError::NoJwtKeys(endpoint.route.clone()));
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Never more instances than the host allows per function, nor than requests the
        // function may hold at once.
        let instance_limit = config.max_instances_per_function.min(
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

        let model_err = |source| LoadFunctionError::Model {
            id: record.model_id.clone(),
            source,
        };
        // A spec asking for a GPU gets one where ONNX Runtime can use CUDA; otherwise the CPU,
        // and the placement says why.
        let requested_gpus = spec.spec.resources.gpu;
        let model_bytes = store.read_blob(&record.model.digest)?;
        let (model, gpu_unavailable) = if requested_gpus > 0 {
            match ort.model_on_gpu(model_bytes) {
                Ok(model) => (model, None),
                Err((bytes, reason)) => (ort.model(bytes).map_err(model_err)?, Some(reason)),
            }
        } else {
            (ort.model(model_bytes).map_err(model_err)?, None)
        };
        let model = Arc::new(model);
        // The first session proves the model loads and tells its signature; the autoscaler makes
        // the others with the same factory, over the same shared weights.
        let first_session = model.session(threads).map_err(model_err)?;
        let signature = first_session.signature().clone();
        let new_session: SessionFactory = {
            let model = model.clone();
            Box::new(move || model.session(threads))
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
        let batching = batching(&spec.spec.scaling, &signature, config.max_batch_bytes)?;
        let tensor_limits = Arc::new(TensorLimits {
            max_elements: config.max_tensor_elements,
            max_shape: spec
                .spec
                .v2
                .max_shape
                .iter()
                .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                .collect(),
        });

        let module = match &record.module {
            Some(artifact) => {
                let wasm = store.read_blob(&artifact.digest)?;
                let module_spec = spec.spec.module.as_ref();
                if let Some(module) = module_spec {
                    refuse_state_dir(&module.capabilities.read_dirs, store.root())?;
                }
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
                    max_log_bytes: config.max_module_log_bytes,
                };
                let module_config = ModuleConfig {
                    digest: artifact.digest.hex().to_string(),
                    tag: format!("{}@v{}", record.name, record.version),
                    limits,
                    capabilities: module_spec
                        .map(|m| m.capabilities.clone())
                        .unwrap_or_default(),
                    isolation: module_spec.map(|m| m.isolation).unwrap_or_default(),
                };
                let module = guest.load(&wasm, &module_config)?;
                // One instance now, so a module that can never start fails the deploy, not
                // every request after it.
                drop(module.start().map_err(LoadFunctionError::ModuleStart)?);
                Some(module)
            }
            None => None,
        };

        let mut notes = Vec::new();
        match gpu_unavailable {
            Some(reason) => notes.push(format!(
                "spec asks for {requested_gpus} GPU(s) but the host cannot use one ({reason}); running on CPU"
            )),
            None if requested_gpus > 1 => notes.push(format!(
                "spec asks for {requested_gpus} GPUs; each replica runs on one ({})",
                model.device()
            )),
            None => {}
        }
        notes.extend(capacity_notes(
            &spec.spec,
            CapacityFacts {
                cores,
                threads,
                capacity,
                host_limit: config.max_instances_per_function,
            },
        ));
        let placement = Placement {
            device: model.device().into(),
            requested_gpus,
            notes,
            replicas,
            threads_per_replica: threads,
            max_batch_size: batching.max_size,
            batch_padding: batching.pad,
            execution: spec.spec.model.runtime.execution_note(),
        };
        for note in &placement.notes {
            tracing::warn!(function = %record.name, version = record.version, "{note}");
        }
        let identity = Identity {
            name: Arc::from(record.name.as_str()),
            version: record.version,
            variant: "primary",
        };
        // `spec.monitoring`: its thread starts now, with the reference sample if the spec has one.
        let monitor = match &spec.spec.monitoring {
            Some(monitoring) => {
                let reference = record
                    .monitoring_reference
                    .as_ref()
                    .map(|a| store.read_blob(&a.digest))
                    .transpose()?;
                Some(VersionMonitor::start(
                    monitoring.clone(),
                    &signature,
                    reference.as_deref(),
                    spec.spec.scaling.target_latency.map(|t| t.0),
                    Some(crate::labels::Persist {
                        store: store.clone(),
                        function: record.name.clone(),
                        version: record.version,
                    }),
                    format!("{}@v{}", record.name, record.version),
                )?)
            }
            None => None,
        };
        let tap = |records_outputs| {
            monitor.as_ref().map(|monitor| Tap {
                monitor: monitor.clone(),
                records_outputs,
            })
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
                let err = |source| LoadFunctionError::Model {
                    id: fallback.model.id.clone(),
                    source,
                };
                let model = Arc::new(ort.model(store.read_blob(&artifact.digest)?).map_err(err)?);
                let first = model.session(threads).map_err(err)?;
                if let Some(problem) = fallback_refuses(&signature, first.signature()) {
                    return Err(LoadFunctionError::Fallback(format!(
                        "model `{}` cannot take what `{}` takes: {problem}",
                        fallback.model.id, spec.spec.model.id
                    )));
                }
                let factory: SessionFactory = Box::new(move || model.session(threads));
                let identity = Identity {
                    variant: "fallback",
                    ..identity.clone()
                };
                let config = PoolConfig {
                    identity,
                    instances: 1,
                    module: module.clone(),
                    queue_capacity: queue,
                    batching,
                    tensor_limits: tensor_limits.clone(),
                    scaler: self.scaler.clone(),
                    idle_spin: config.idle_spin,
                    monitor: tap(false),
                };
                let pool = InstancePool::start(config, first, factory).map_err(err)?;
                Some(pool)
            }
            _ => None,
        };
        let config = PoolConfig {
            identity,
            instances: replicas,
            module,
            queue_capacity: queue,
            batching,
            tensor_limits: tensor_limits.clone(),
            scaler: self.scaler.clone(),
            idle_spin: config.idle_spin,
            monitor: tap(true),
        };
        let pool = InstancePool::start(config, first_session, new_session).map_err(model_err)?;
        let endpoints = spec
            .spec
            .endpoints
            .iter()
            .map(|e| EndpointPolicy::new(&record.name, e, &self.limiters, &self.metrics))
            .collect();
        let v2_exposed = spec.spec.v2.exposed(spec.spec.module.is_some());
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
            monitor,
            endpoints,
            v2_exposed,
            tensor_limits,
            name_header,
            version_header: hyper::header::HeaderValue::from(record_version),
            outcomes: Default::default(),
            scaling_log: Default::default(),
        })
    }
}

/// Why a fallback model cannot take every request the primary takes, if it cannot: each of the
/// primary's inputs must be one of the fallback's, of the same type, with each dimension the same
/// or of any size in the fallback.
fn fallback_refuses(primary: &Signature, fallback: &Signature) -> Option<String> {
    for input in &primary.inputs {
        let Some(theirs) = fallback.inputs.iter().find(|p| p.name == input.name) else {
            return Some(format!("it has no input `{}`", input.name));
        };
        let fits = theirs.dtype == input.dtype
            && theirs.shape.len() == input.shape.len()
            && theirs
                .shape
                .iter()
                .zip(&input.shape)
                .all(|(&f, &p)| f < 0 || f == p);
        if !fits {
            return Some(format!(
                "input `{}` is {} {:?} there and {} {:?} here",
                input.name,
                theirs.dtype.v2_name(),
                theirs.shape,
                input.dtype.v2_name(),
                input.shape
            ));
        }
    }
    (fallback.inputs.len() != primary.inputs.len())
        .then(|| "it takes inputs the primary does not".to_string())
}

/// No grant may reach the host's own state (specs with their `env` values, keys, every artifact):
/// neither the state directory, nor one inside it, nor one that holds it.
fn refuse_state_dir(
    read_dirs: &[(String, String)],
    state: &std::path::Path,
) -> Result<(), LoadFunctionError> {
    let state = state.canonicalize().unwrap_or_else(|_| state.to_path_buf());
    for (host, _) in read_dirs {
        let granted = std::path::Path::new(host);
        let granted = granted
            .canonicalize()
            .unwrap_or_else(|_| granted.to_path_buf());
        if granted.starts_with(&state) || state.starts_with(&granted) {
            return Err(LoadFunctionError::Grant(format!(
                "`{host}` would let the module read the host's state directory ({})",
                state.display()
            )));
        }
    }
    Ok(())
}

/// Dynamic batching as the spec asks, if the model can take it: every input and output must have
/// a first dimension of any size (the batch).
fn batching(
    scaling: &aifn_spec::Scaling,
    signature: &Signature,
    max_bytes: usize,
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
        max_bytes,
        target_latency: scaling.target_latency.map(|t| t.0),
    })
}

/// What bounds how many instances of a function this host runs.
#[derive(Clone, Copy)]
struct CapacityFacts {
    cores: usize,
    /// Threads each instance runs (from `resources.cpu`, at most `cores`).
    threads: usize,
    /// Instances the autoscaler may keep.
    capacity: usize,
    /// The host's `--max-instances`.
    host_limit: usize,
}

/// Deploy warnings for a spec that asks for more than this host can give, with the values it
/// uses instead: easy to miss in `aifn status`, and they change what `target_latency` can reach.
fn capacity_notes(spec: &aifn_spec::FunctionBody, facts: CapacityFacts) -> Vec<String> {
    let CapacityFacts {
        cores,
        threads,
        capacity,
        host_limit,
    } = facts;
    let mut notes = Vec::new();
    if let Some(cpu) = spec.resources.cpu {
        let asked = cpu.0.div_ceil(1000) as usize;
        if asked > cores {
            notes.push(format!(
                "spec.resources.cpu asks for {} CPUs but this host has {cores}; each instance runs {threads} thread(s)",
                cpu.0 as f64 / 1000.0
            ));
        }
    }
    let bound = if capacity == (cores / threads).max(1) {
        format!("{cores} core(s), {threads} thread(s) per instance")
    } else if capacity == host_limit {
        format!("the host's --max-instances is {host_limit}")
    } else {
        format!(
            "spec.scaling.max_concurrency is {}",
            spec.scaling.max_concurrency.unwrap_or(0)
        )
    };
    let max = spec.scaling.max_replicas as usize;
    if max > capacity {
        notes.push(format!(
            "spec.scaling.max_replicas is {max} but this host runs at most {capacity} instance(s) of this function ({bound}); the autoscaler stops at {capacity}"
        ));
    }
    let min = spec.scaling.min_replicas as usize;
    if min > capacity {
        notes.push(format!(
            "spec.scaling.min_replicas is {min} but this host runs at most {capacity} instance(s) of this function ({bound})"
        ));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::{capacity_notes, CapacityFacts};

    fn spec(text: &str) -> aifn_spec::FunctionBody {
        let yaml = format!(
            "apiVersion: ai.function/v1\nkind: Function\nmetadata: {{ name: f }}\nspec:\n  model: {{ id: m, runtime: onnx }}\n{text}  endpoints:\n    - {{ route: /v1/f, method: POST, auth: none }}\n"
        );
        aifn_spec::parse(&yaml).unwrap().spec
    }

    #[test]
    fn a_spec_asking_for_more_than_the_host_has_is_told_what_it_gets() {
        let two_cores = CapacityFacts {
            cores: 2,
            threads: 1,
            capacity: 2,
            host_limit: 2,
        };
        let notes = capacity_notes(
            &spec(
                "  resources: { cpu: \"1\" }\n  scaling: { min_replicas: 2, max_replicas: 200 }\n",
            ),
            two_cores,
        );
        assert_eq!(
            notes,
            ["spec.scaling.max_replicas is 200 but this host runs at most 2 instance(s) of this function (2 core(s), 1 thread(s) per instance); the autoscaler stops at 2"]
        );

        let notes = capacity_notes(
            &spec("  resources: { cpu: 4500m }\n  scaling: { min_replicas: 1, max_replicas: 1 }\n"),
            CapacityFacts {
                cores: 2,
                threads: 2,
                capacity: 1,
                host_limit: 2,
            },
        );
        assert_eq!(
            notes,
            ["spec.resources.cpu asks for 4.5 CPUs but this host has 2; each instance runs 2 thread(s)"]
        );

        let notes = capacity_notes(
            &spec("  scaling: { min_replicas: 3, max_replicas: 8 }\n"),
            CapacityFacts {
                cores: 16,
                threads: 1,
                capacity: 2,
                host_limit: 2,
            },
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("(the host's --max-instances is 2)"),
            "{notes:?}"
        );
        assert!(
            notes[1].starts_with("spec.scaling.min_replicas is 3"),
            "{notes:?}"
        );

        // Within what the host has: nothing to say.
        assert!(capacity_notes(
            &spec("  scaling: { min_replicas: 1, max_replicas: 2 }\n"),
            two_cores
        )
        .is_empty());
    }
}
