//! The Open Inference Protocol's operations, whichever encoding carries them: [`super::v2`] (REST:
//! JSON and the binary tensor data extension) and [`super::grpc`] (gRPC) are two ways in to these,
//! so a model is found, admitted, pinned to a version, bounded and run in one way.
//!
//! A model is a function whose spec exposes raw tensors (`spec.v2`); it is served at the
//! versions that take traffic: the stable one and a rollout's candidate.

use super::data::{admit, invoke, DataPlane, RequestHead};
use super::error::ApiError;
use crate::function::LoadedFunction;
use crate::instance::Work;
use crate::policy::rate_limit::Allowed;
use crate::registry::Serving;
use aifn_model::{Inputs, Port};
use aifn_tensor::Tensor;
use std::sync::Arc;
use std::time::Duration;

/// A model, as a request names it.
pub struct Model {
    serving: Serving,
    /// The version the request asked for by number, if it did.
    pinned: Option<Arc<LoadedFunction>>,
}

/// Finds the model `name` (at `version`, when given and not empty), or says clearly why not.
pub fn find(data: &DataPlane, name: &str, version: Option<&str>) -> Result<Model, ApiError> {
    let no_model = || ApiError::not_found(format!("no model named `{name}`"));
    let serving = data.registry.serving(name).ok_or_else(no_model)?;
    // A function whose spec keeps v2 closed is not a model here (see `spec.v2`).
    if !serving.stable.v2_exposed {
        return Err(no_model());
    }
    let pinned = match version.filter(|v| !v.is_empty()) {
        None => None,
        Some(version) => {
            let taking_traffic = taking_traffic(&serving);
            let found = version
                .parse::<u64>()
                .ok()
                .and_then(|v| taking_traffic.iter().find(|f| f.version() == v).cloned());
            let Some(found) = found else {
                let serving: Vec<String> = taking_traffic
                    .iter()
                    .map(|f| f.version().to_string())
                    .collect();
                return Err(ApiError::not_found(format!(
                    "version {version} of `{name}` is not serving; serving: {}",
                    serving.join(", ")
                )));
            };
            Some(found)
        }
    };
    Ok(Model { serving, pinned })
}

/// The stable version, then a rollout's candidate.
fn taking_traffic(serving: &Serving) -> Vec<Arc<LoadedFunction>> {
    std::iter::once(serving.stable.clone())
        .chain(serving.rollout.as_ref().map(|live| live.other.clone()))
        .collect()
}

impl Model {
    pub fn name(&self) -> &str {
        self.serving.stable.name()
    }

    /// The version whose signature describes the model: the one asked for, else the stable one.
    pub fn described(&self) -> &Arc<LoadedFunction> {
        self.pinned.as_ref().unwrap_or(&self.serving.stable)
    }

    /// The route its answers are counted under in the metrics, whichever protocol asked.
    pub fn route(&self) -> String {
        format!("/v2/models/{}/infer", self.name())
    }

    pub fn metadata(&self) -> Metadata {
        let ports = |ports: &[Port]| -> Vec<TensorMetadata> {
            ports
                .iter()
                .map(|p| TensorMetadata {
                    name: p.name.clone(),
                    datatype: p.dtype.v2_name(),
                    shape: p.shape.clone(),
                })
                .collect()
        };
        let function = self.described();
        let versions = match &self.pinned {
            Some(pinned) => vec![pinned.version().to_string()],
            None => taking_traffic(&self.serving)
                .iter()
                .map(|f| f.version().to_string())
                .collect(),
        };
        Metadata {
            name: self.name().to_string(),
            versions,
            platform: "onnxruntime_onnx",
            inputs: ports(&function.signature.inputs),
            outputs: ports(&function.signature.outputs),
        }
    }

    /// Metadata and readiness tell what the model is: the caller needs what the function's
    /// endpoints ask for.
    pub async fn check_access(
        &self,
        data: &DataPlane,
        head: &RequestHead<'_>,
    ) -> Result<(), ApiError> {
        let function = self.described();
        admit(data, function, &function.endpoints, &self.route(), head)
            .await
            .map(|_| ())
    }

    /// Admits an inference request: the access rules and rate limits of the model's endpoints
    /// (the first that admits the caller sets the bounds), then the version that answers: the one
    /// asked for, or the rollout's choice. `client_deadline` is the caller's own (gRPC's
    /// `grpc-timeout`), kept within the endpoint's.
    pub async fn admit(
        &self,
        data: &DataPlane,
        head: &RequestHead<'_>,
        client_deadline: Option<Duration>,
    ) -> Result<Admission, ApiError> {
        let function = self.described();
        let admitted = admit(data, function, &function.endpoints, &self.route(), head).await?;
        let answering = match &self.pinned {
            Some(pinned) => pinned.clone(),
            None => self.serving.choose(&admitted.caller, head.headers).serve,
        };
        let deadline = data.limits.deadline(admitted.policy);
        Ok(Admission {
            function: answering,
            rate: admitted.rate,
            deadline: client_deadline.map_or(deadline, |d| d.min(deadline)),
            max_body: data.limits.max_body(admitted.policy),
        })
    }
}

/// An admitted inference request: who answers it, and its bounds.
pub struct Admission {
    pub function: Arc<LoadedFunction>,
    pub rate: Option<Allowed>,
    pub deadline: Duration,
    pub max_body: usize,
}

impl Admission {
    /// Runs the model on checked inputs: the output tensors, and the model variant that answered.
    pub async fn run(
        &self,
        data: &DataPlane,
        inputs: Inputs,
    ) -> Result<(Vec<Tensor>, &'static str), ApiError> {
        let reply = invoke(data, &self.function, Work::Tensors(inputs))
            .await
            .map_err(|e| e.with_rate(self.rate))?;
        let tensors = reply
            .tensors
            .expect("an instance answers tensor work with tensors");
        Ok((tensors, reply.variant))
    }
}

/// What the protocol's model metadata say.
pub struct Metadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

pub struct TensorMetadata {
    pub name: String,
    pub datatype: &'static str,
    /// A dimension of any size is -1.
    pub shape: Vec<i64>,
}

/// One model of the repository index (Triton's model repository extension).
pub struct IndexEntry {
    pub name: String,
    /// Empty for a function that failed to load.
    pub version: String,
    /// `READY`, or `UNAVAILABLE` with a reason.
    pub state: &'static str,
    pub reason: String,
}

/// The models there are: those serving raw tensors or reachable through a module, and (unless
/// `ready_only`) the functions that failed to load, with why.
pub fn repository_index(data: &DataPlane, ready_only: bool) -> Vec<IndexEntry> {
    let snapshot = data.registry.snapshot();
    let mut models: Vec<IndexEntry> = snapshot
        .names()
        .into_iter()
        .filter_map(|name| data.registry.serving(&name))
        .filter(|s| s.stable.v2_exposed || !s.stable.module_routes().is_empty())
        .map(|serving| IndexEntry {
            name: serving.stable.name().to_string(),
            version: serving.stable.version().to_string(),
            state: "READY",
            reason: String::new(),
        })
        .collect();
    if !ready_only {
        models.extend(snapshot.failed().map(|(name, error)| IndexEntry {
            name: name.to_string(),
            version: String::new(),
            state: "UNAVAILABLE",
            reason: error.to_string(),
        }));
    }
    models
}

/// The server metadata's extensions: the protocol's optional parts this host implements.
pub const EXTENSIONS: [&str; 2] = ["binary_tensor_data", "model_repository"];
