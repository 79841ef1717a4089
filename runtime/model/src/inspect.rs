//! `aifn inspect`: what an ONNX file declares, before anyone writes a module for it. Inputs and
//! outputs come from ONNX Runtime (so they are what a session takes: initializers are not inputs,
//! and dynamic dimensions keep their names); the file's own fields (producer, operator sets,
//! metadata) come from its header.

use crate::{dtype_of, onnx, ModelError, OnnxRuntime};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, ValueType};
use prost::Message as _;
use std::collections::BTreeMap;

/// What a model file says about itself.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelFacts {
    pub size_bytes: usize,
    pub ir_version: i64,
    /// Operator sets by domain (`ai.onnx` for the default one).
    pub opsets: BTreeMap<String, i64>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub description: String,
    /// The file's `metadata_props` (label names, preprocessing notes, ... where the exporter
    /// stored them).
    pub metadata: BTreeMap<String, String>,
    pub inputs: Vec<PortFacts>,
    pub outputs: Vec<PortFacts>,
    /// Why the host cannot serve the model as it is; empty when it can.
    pub problems: Vec<String>,
}

/// One input or output.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PortFacts {
    pub name: String,
    /// ONNX's name of the type, as onnxruntime's Python API writes it (`tensor(float)`).
    #[serde(rename = "type")]
    pub onnx_type: String,
    /// The v2 protocol's datatype (`FP32`), for a tensor the host can take or give.
    pub datatype: Option<String>,
    /// A tensor's dimensions (empty for other values).
    pub shape: Vec<Dim>,
}

/// A dimension: a size, a named size of any length (`batch`), or an unnamed one.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
    Any,
}

/// As onnxruntime's Python API writes a shape: numbers, names, and `null` for an unnamed one.
impl serde::Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Fixed(n) => s.serialize_i64(*n),
            Dim::Named(name) => s.serialize_str(name),
            Dim::Any => s.serialize_none(),
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Named(name) => f.write_str(name),
            Dim::Any => f.write_str("?"),
        }
    }
}

impl OnnxRuntime {
    /// Reads what `model` declares. Fails only when it is not a model ONNX Runtime can load; a
    /// model the host could not serve is described, with `problems` saying why.
    pub fn inspect(&self, model: &[u8]) -> Result<ModelFacts, ModelError> {
        let header = onnx::ModelHeader::decode(model)
            .map_err(|e| ModelError::InvalidModel(format!("not an ONNX file: {e}")))?;
        // Nothing runs: no optimization, one thread.
        let session = self
            .builder(1, GraphOptimizationLevel::Disable)?
            .commit_from_memory(model)
            .map_err(|e| ModelError::InvalidModel(e.to_string()))?;
        let mut problems = Vec::new();
        let mut describe = |role: &str, outlets: &[ort::value::Outlet]| -> Vec<PortFacts> {
            outlets
                .iter()
                .map(|o| {
                    let port = port(o.name(), o.dtype());
                    if port.datatype.is_none() {
                        problems.push(format!(
                            "{role} `{}` is {}, which the host cannot {}",
                            port.name,
                            port.onnx_type,
                            if role == "input" { "take" } else { "return" }
                        ));
                    }
                    port
                })
                .collect()
        };
        let inputs = describe("input", session.inputs());
        let outputs = describe("output", session.outputs());
        Ok(ModelFacts {
            size_bytes: model.len(),
            ir_version: header.ir_version,
            opsets: header
                .opset_import
                .into_iter()
                .map(|o| {
                    let domain = if o.domain.is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain
                    };
                    (domain, o.version)
                })
                .collect(),
            producer_name: header.producer_name,
            producer_version: header.producer_version,
            domain: header.domain,
            model_version: header.model_version,
            description: header.doc_string,
            metadata: header
                .metadata_props
                .into_iter()
                .map(|p| (p.key, p.value))
                .collect(),
            inputs,
            outputs,
            problems,
        })
    }
}

fn port(name: &str, value_type: &ValueType) -> PortFacts {
    let (datatype, shape) = match value_type {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => (
            dtype_of(*ty).map(|d| d.v2_name().to_string()),
            shape
                .iter()
                .enumerate()
                .map(|(i, &d)| match dimension_symbols.get(i) {
                    _ if d >= 0 => Dim::Fixed(d),
                    Some(symbol) if !symbol.is_empty() => Dim::Named(symbol.clone()),
                    _ => Dim::Any,
                })
                .collect(),
        ),
        _ => (None, Vec::new()),
    };
    PortFacts {
        name: name.to_string(),
        onnx_type: onnx_type_name(value_type),
        datatype,
        shape,
    }
}

/// `tensor(float)`, `seq(map(int64,tensor(float)))`: ONNX's spelling of a value's type.
fn onnx_type_name(value_type: &ValueType) -> String {
    match value_type {
        ValueType::Tensor { ty, .. } => format!("tensor({})", element_name(*ty)),
        ValueType::Sequence(inner) => format!("seq({})", onnx_type_name(inner)),
        ValueType::Map { key, value } => {
            format!(
                "map({},tensor({}))",
                element_name(*key),
                element_name(*value)
            )
        }
        ValueType::Optional(inner) => format!("optional({})", onnx_type_name(inner)),
    }
}

fn element_name(ty: TensorElementType) -> String {
    use TensorElementType as T;
    match ty {
        T::Float32 => "float",
        T::Float64 => "double",
        T::Float16 => "float16",
        T::Bfloat16 => "bfloat16",
        T::Int8 => "int8",
        T::Int16 => "int16",
        T::Int32 => "int32",
        T::Int64 => "int64",
        T::Uint8 => "uint8",
        T::Uint16 => "uint16",
        T::Uint32 => "uint32",
        T::Uint64 => "uint64",
        T::Bool => "bool",
        T::String => "string",
        T::Complex64 => "complex64",
        T::Complex128 => "complex128",
        other => return format!("{other:?}").to_lowercase(),
    }
    .to_string()
}
