//! ONNX models through ONNX Runtime (`ort`, loaded dynamically from `libonnxruntime.so`).
//!
//! [`OnnxRuntime::init`] loads the library once per process. [`OnnxRuntime::model`] prepares a
//! [`Model`], whose [`Model::session`] makes a [`ModelSession`] per replica: a session is used by
//! one thread at a time (`run` takes `&mut self`), and the sessions of a model share its weights.

mod inspect;
mod locate;
mod onnx;
mod shared;

pub use inspect::{Dim, ModelFacts, PortFacts};
pub use locate::{locate_onnxruntime, LocateError};

use aifn_tensor::{DType, Tensor, TensorData};
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::{RunOptions, Session};
use ort::value::{DynValue, TensorElementType, ValueType};
use shared::SharedModel;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("loading ONNX Runtime from {path}: {message}")]
    Library { path: PathBuf, message: String },
    #[error("the model is not a valid ONNX model: {0}")]
    InvalidModel(String),
    #[error("the model's {0}")]
    Unsupported(String),
    #[error("{0}")]
    BadInput(String),
    #[error("inference failed: {0}")]
    Inference(String),
}

/// The process-wide ONNX Runtime environment, and what its sessions share.
#[derive(Clone)]
pub struct OnnxRuntime {
    env: ort::environment::Environment,
    shared: Arc<Sharing>,
}

struct Sharing {
    /// One container for the whole host: ONNX Runtime packs a shared weight once for all sessions.
    prepacked: PrepackedWeights,
    weights: shared::WeightCache,
    /// Where models are optimized for sharing; `None`: every session loads its own copy.
    dir: Option<PathBuf>,
}

impl OnnxRuntime {
    /// Loads `libonnxruntime` from `library` and creates the environment. Sessions of a [`Model`]
    /// share their weights when `share_in` names a directory for the models' optimized copies.
    pub fn init(library: &Path, share_in: Option<PathBuf>) -> Result<OnnxRuntime, ModelError> {
        let err = |message: String| ModelError::Library {
            path: library.to_path_buf(),
            message,
        };
        let env = ort::init_from(library)
            .map_err(|e| err(e.to_string()))?
            .with_name("aifn")
            .build()
            .map_err(|e| err(e.to_string()))?;
        if let Some(dir) = &share_in {
            std::fs::create_dir_all(dir)
                .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        }
        Ok(OnnxRuntime {
            env,
            shared: Arc::new(Sharing {
                prepacked: PrepackedWeights::new(),
                weights: Default::default(),
                dir: share_in,
            }),
        })
    }

    /// The session options every session gets. `threads` is ONNX Runtime's intra-op thread count.
    fn builder(
        &self,
        threads: usize,
        level: GraphOptimizationLevel,
    ) -> Result<SessionBuilder, ModelError> {
        let invalid = |e: ort::Error| ModelError::InvalidModel(e.to_string());
        Session::builder(&self.env)
            .map_err(invalid)?
            .with_optimization_level(level)
            .map_err(|e| invalid(e.into()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| invalid(e.into()))?
            // Idle pool threads sleep instead of spinning: a spinning pool burns its cores after
            // every run, which on a shared host takes them from other functions' instances (and
            // with more threads than cores halves throughput).
            .with_intra_op_spinning(false)
            .map_err(|e| invalid(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| invalid(e.into()))
    }

    /// A session with its own copy of everything (see [`OnnxRuntime::model`] for shared weights).
    pub fn load(&self, model: &[u8], threads: usize) -> Result<ModelSession, ModelError> {
        let session = self
            .builder(threads, GraphOptimizationLevel::Level3)?
            .commit_from_memory(model)
            .map_err(|e| ModelError::InvalidModel(e.to_string()))?;
        ModelSession::new(session)
    }

    /// A model to make sessions of, for the replicas of a function. Their weights are shared
    /// (see the `shared` module) when the runtime has a directory for it; a model that cannot be
    /// prepared that way (say, one over protobuf's 2 GB) still loads, each session with its own copy.
    pub fn model(&self, bytes: Vec<u8>) -> Result<Model, ModelError> {
        let source = match &self.shared.dir {
            Some(root) => match SharedModel::prepare(self, &bytes, shared::model_dir(root)) {
                Ok(shared) => Source::Shared(shared),
                Err(e) => {
                    // Loading it the plain way says whether the model itself is at fault.
                    drop(self.load(&bytes, 1)?);
                    tracing::warn!("model weights are not shared between sessions: {e}");
                    Source::Private(bytes)
                }
            },
            None => Source::Private(bytes),
        };
        Ok(Model {
            runtime: self.clone(),
            source,
        })
    }
}

impl OnnxRuntime {
    /// A model whose sessions run on the first CUDA device, or why it cannot: ONNX Runtime built
    /// without the CUDA execution provider (the `onnxruntime` wheel; `onnxruntime-gpu` has it), no
    /// CUDA libraries, no device, or a model the provider cannot place. The bytes come back with
    /// the reason, for the caller to load the model on the CPU instead.
    pub fn model_on_gpu(&self, bytes: Vec<u8>) -> Result<Model, (Vec<u8>, String)> {
        match cuda_session(self, &bytes, 1) {
            Ok(_) => Ok(Model {
                runtime: self.clone(),
                source: Source::Gpu(bytes),
            }),
            Err(reason) => Err((bytes, reason)),
        }
    }
}

/// A session whose graph runs on CUDA device 0 (and only there: no silent fall back to the CPU).
fn cuda_session(
    runtime: &OnnxRuntime,
    model: &[u8],
    threads: usize,
) -> Result<ModelSession, String> {
    use ort::ep::ExecutionProvider as _;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err("this ONNX Runtime has no CUDA execution provider (install it with ./scripts/setup-gpu.sh)".into());
    }
    let cuda = ort::ep::CUDA::default().build().error_on_failure();
    let session = runtime
        .builder(threads, GraphOptimizationLevel::Level3)
        .map_err(|e| e.to_string())?
        .with_execution_providers([cuda])
        .map_err(|e| without_source_locations(&e.to_string()))?
        .commit_from_memory(model)
        .map_err(|e| without_source_locations(&e.to_string()))?;
    ModelSession::new(session).map_err(|e| e.to_string())
}

/// A model that sessions are made of (one per replica).
pub struct Model {
    runtime: OnnxRuntime,
    source: Source,
}

enum Source {
    Shared(SharedModel),
    Private(Vec<u8>),
    /// On the GPU, each session with its own copy (the weights live in device memory).
    Gpu(Vec<u8>),
}

impl Model {
    pub fn session(&self, threads: usize) -> Result<ModelSession, ModelError> {
        match &self.source {
            Source::Shared(shared) => shared.session(&self.runtime, threads),
            Source::Private(bytes) => self.runtime.load(bytes, threads),
            Source::Gpu(bytes) => {
                cuda_session(&self.runtime, bytes, threads).map_err(ModelError::InvalidModel)
            }
        }
    }

    /// Where its sessions run: `cuda:0` or `cpu`.
    pub fn device(&self) -> &'static str {
        match self.source {
            Source::Gpu(_) => "cuda:0",
            _ => "cpu",
        }
    }

    /// Bytes of weights all its sessions share (0 when each has its own copy).
    pub fn shared_bytes(&self) -> usize {
        match &self.source {
            Source::Shared(shared) => shared.shared_bytes(),
            Source::Private(_) | Source::Gpu(_) => 0,
        }
    }
}

/// A model input or output: name, element type and shape (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Port {
    pub name: String,
    #[serde(serialize_with = "serialize_dtype")]
    pub dtype: DType,
    pub shape: Vec<i64>,
}

fn serialize_dtype<S: serde::Serializer>(dtype: &DType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(dtype.v2_name())
}

impl Port {
    fn describe(name: &str, value_type: &ValueType, role: &str) -> Result<Port, ModelError> {
        let ValueType::Tensor { ty, shape, .. } = value_type else {
            return Err(ModelError::Unsupported(format!(
                "{role} `{name}` is {value_type}, not a tensor; export the model with tensor outputs only (for scikit-learn: skl2onnx with zipmap disabled)"
            )));
        };
        let dtype = dtype_of(*ty).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "{role} `{name}` has element type {ty}, which the host does not support"
            ))
        })?;
        Ok(Port {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        })
    }
}

/// The inputs and outputs a model declares.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Signature {
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

/// Tensors checked against a model's signature: what a session runs. Made only by
/// [`Signature::check_inputs`] (or by merging checked inputs), so each request is checked once.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs(Vec<Tensor>);

impl Inputs {
    pub fn tensors(&self) -> &[Tensor] {
        &self.0
    }

    /// Stacks several requests' checked inputs into one batch (see [`aifn_tensor::batch::merge`]).
    /// The batch fits the signature too: it differs from its members only in dimensions the model
    /// takes at any size (the first, and with `pad` those the members differ in, which cannot be
    /// fixed ones).
    pub fn merge(
        members: &[Inputs],
        pad: bool,
        max_bytes: usize,
    ) -> Result<(Inputs, Vec<usize>), aifn_tensor::batch::Unbatchable> {
        let tensors: Vec<&[Tensor]> = members.iter().map(|m| m.tensors()).collect();
        let batch = aifn_tensor::batch::merge(&tensors, pad, max_bytes)?;
        Ok((Inputs(batch.inputs), batch.rows))
    }
}

impl Signature {
    /// Checks names, element types and shapes of request tensors before they reach the model.
    pub fn check_inputs(&self, tensors: Vec<Tensor>) -> Result<Inputs, ModelError> {
        self.check(&tensors)?;
        Ok(Inputs(tensors))
    }

    /// Checks one input's name, element type and shape against the model, before its data is
    /// read (what [`Signature::check_inputs`] checks of each tensor).
    pub fn check_input(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<(), String> {
        let Some(port) = self.inputs.iter().find(|p| p.name == name) else {
            let names: Vec<_> = self.inputs.iter().map(|p| p.name.as_str()).collect();
            return Err(format!(
                "input `{name}` is not an input of the model; it takes: {}",
                names.join(", ")
            ));
        };
        if dtype != port.dtype {
            return Err(format!(
                "input `{name}` has datatype {dtype} but the model expects {}",
                port.dtype
            ));
        }
        let fits = shape.len() == port.shape.len()
            && shape
                .iter()
                .zip(&port.shape)
                .all(|(&given, &expected)| expected < 0 || given as i64 == expected);
        if !fits {
            return Err(format!(
                "input `{name}` has shape {shape:?} but the model expects {} (-1 means any size)",
                format_shape(&port.shape)
            ));
        }
        Ok(())
    }

    fn check(&self, tensors: &[Tensor]) -> Result<(), ModelError> {
        for (i, tensor) in tensors.iter().enumerate() {
            if tensors[..i].iter().any(|t| t.name == tensor.name) {
                return Err(ModelError::BadInput(format!(
                    "input `{}` is given twice",
                    tensor.name
                )));
            }
            self.check_input(&tensor.name, tensor.dtype(), &tensor.shape)
                .map_err(ModelError::BadInput)?;
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|p| !tensors.iter().any(|t| t.name == p.name))
        {
            return Err(ModelError::BadInput(format!(
                "input `{}` ({} {}) is missing",
                missing.name,
                missing.dtype,
                format_shape(&missing.shape)
            )));
        }
        Ok(())
    }
}

fn format_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

fn dtype_of(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float32 => DType::F32,
        TensorElementType::Float64 => DType::F64,
        TensorElementType::Int32 => DType::I32,
        TensorElementType::Int64 => DType::I64,
        TensorElementType::Uint8 => DType::U8,
        TensorElementType::Bool => DType::Bool,
        TensorElementType::String => DType::String,
        _ => return None,
    })
}

/// One ONNX Runtime session, owned by one worker thread.
pub struct ModelSession {
    session: Session,
    signature: Signature,
    /// For runs of large inputs: gives the arena's free memory back when the run ends.
    shrink_after: RunOptions,
    /// Whether the last run was large.
    shrink_next: bool,
}

/// Input elements of a run above which its activation memory is handed back at the end. ONNX
/// Runtime's arena otherwise keeps its high-water mark for ever, so one request of the largest
/// batch would hold its memory (hundreds of MB for a transformer) as long as the host runs. Small
/// runs keep the arena, so steady traffic does not map and fault the same memory again each time.
const SHRINK_ABOVE_ELEMENTS: usize = 16 << 10;

impl ModelSession {
    fn new(session: Session) -> Result<ModelSession, ModelError> {
        let invalid = |e: ort::Error| ModelError::InvalidModel(e.to_string());
        let inputs = session
            .inputs()
            .iter()
            .map(|o| Port::describe(o.name(), o.dtype(), "input"))
            .collect::<Result<_, _>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|o| Port::describe(o.name(), o.dtype(), "output"))
            .collect::<Result<_, _>>()?;
        let mut shrink_after = RunOptions::new().map_err(invalid)?;
        shrink_after
            .set("memory.enable_memory_arena_shrinkage", "cpu:0")
            .map_err(invalid)?;
        Ok(ModelSession {
            session,
            signature: Signature { inputs, outputs },
            shrink_after,
            shrink_next: false,
        })
    }

    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Runs the model on inputs checked against its signature (so errors name the input).
    pub fn run(&mut self, inputs: Inputs) -> Result<Vec<Tensor>, ModelError> {
        let elements: usize = inputs.0.iter().map(|t| t.data.len()).sum();
        let values = inputs
            .0
            .into_iter()
            .map(|t| Ok((t.name.clone(), to_ort(t)?)))
            .collect::<Result<Vec<(String, DynValue)>, ModelError>>()?;
        // The outputs of a large run still hold part of the arena when it ends, so the run after
        // it shrinks the arena again.
        let large = elements > SHRINK_ABOVE_ELEMENTS;
        let shrink = large || self.shrink_next;
        self.shrink_next = large;
        let outputs = if shrink {
            self.session.run_with_options(values, &self.shrink_after)
        } else {
            self.session.run(values)
        }
        .map_err(|e| ModelError::Inference(without_source_locations(&e.to_string())))?;
        outputs
            .iter()
            .map(|(name, value)| from_ort(name, &value))
            .collect()
    }
}

/// ONNX Runtime's message without its C++ source paths and signatures, which say nothing to a
/// caller (`.../gather.cc:154 onnxruntime::common::Status onnxruntime::Gather::Compute(...) const`).
pub fn without_source_locations(message: &str) -> String {
    let is_location = |word: &str| {
        [".cc:", ".h:", ".cpp:", ".hpp:"]
            .iter()
            .any(|ext| word.contains(ext))
    };
    let mut text = message
        .split(' ')
        .filter(|w| !is_location(w))
        .collect::<Vec<_>>()
        .join(" ");
    while let Some(end) = text.find(") const ") {
        let Some(start) = text[..end].find("onnxruntime::") else {
            break;
        };
        // From the return type (the word holding `start`) to the signature's end.
        let start = text[..start].rfind(' ').map_or(0, |space| space + 1);
        text.replace_range(start..end + ") const ".len(), "");
    }
    text
}

fn to_ort(tensor: Tensor) -> Result<DynValue, ModelError> {
    use ort::value::Tensor as OrtTensor;
    let shape = tensor.shape;
    let err = |e: ort::Error| {
        ModelError::BadInput(format!(
            "input `{}`: {}",
            tensor.name,
            without_source_locations(&e.to_string())
        ))
    };
    Ok(match tensor.data {
        TensorData::F32(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::F64(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::I32(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::I64(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::U8(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::Bool(v) => OrtTensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::String(v) => OrtTensor::from_string_array((shape, v.as_slice()))
            .map_err(err)?
            .into_dyn(),
    })
}

fn from_ort(name: &str, value: &ort::value::DynValueRef<'_>) -> Result<Tensor, ModelError> {
    let err = |e: ort::Error| ModelError::Inference(format!("reading output `{name}`: {e}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(ModelError::Unsupported(format!(
            "output `{name}` is not a tensor"
        )));
    };
    fn prim<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &ort::value::DynValueRef<'_>,
    ) -> ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => prim::<f32>(value).map(|(s, d)| (s, TensorData::F32(d))),
        TensorElementType::Float64 => prim::<f64>(value).map(|(s, d)| (s, TensorData::F64(d))),
        TensorElementType::Int32 => prim::<i32>(value).map(|(s, d)| (s, TensorData::I32(d))),
        TensorElementType::Int64 => prim::<i64>(value).map(|(s, d)| (s, TensorData::I64(d))),
        TensorElementType::Uint8 => prim::<u8>(value).map(|(s, d)| (s, TensorData::U8(d))),
        TensorElementType::Bool => prim::<bool>(value).map(|(s, d)| (s, TensorData::Bool(d))),
        TensorElementType::String => value.try_extract_strings().map(|(s, d)| {
            (
                s.iter().map(|&x| x as usize).collect(),
                TensorData::String(d),
            )
        }),
        other => {
            return Err(ModelError::Unsupported(format!(
                "output `{name}` has element type {other}, which the host does not support"
            )))
        }
    }
    .map_err(err)?;
    Tensor::new(name, shape, data).map_err(|e| ModelError::Inference(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_lose_onnx_runtime_source_locations() {
        let message = "Non-zero status code returned while running Gather node. Name:'/embeddings/Gather' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/gather.cc:154 onnxruntime::common::Status onnxruntime::Gather::Compute(onnxruntime::OpKernelContext*) const indices element out of data bounds, idx=30522 must be within the inclusive range [-30522,30521]";
        assert_eq!(
            without_source_locations(message),
            "Non-zero status code returned while running Gather node. Name:'/embeddings/Gather' Status Message: indices element out of data bounds, idx=30522 must be within the inclusive range [-30522,30521]"
        );
        assert_eq!(without_source_locations("plain"), "plain");
    }
}
