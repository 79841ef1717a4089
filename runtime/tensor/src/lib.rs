//! Named, typed tensors: what a preprocessing module produces, what ONNX Runtime consumes and returns,
//! and what the Open Inference Protocol v2 JSON (`{"inputs":[{"name","shape","datatype","data"}]}`) carries.

pub mod batch;
pub mod raw;

use serde_json::{json, Map, Value};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I32,
    I64,
    U8,
    Bool,
    String,
}

impl DType {
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::Bool,
        DType::String,
    ];

    /// The datatype name used by the Open Inference Protocol v2.
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::I32 => "INT32",
            DType::I64 => "INT64",
            DType::U8 => "UINT8",
            DType::Bool => "BOOL",
            DType::String => "BYTES",
        }
    }

    pub fn from_v2_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.v2_name() == name)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v2_name())
    }
}

/// The elements of a tensor, flat, in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F64(_) => DType::F64,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::U8(_) => DType::U8,
            TensorData::Bool(_) => DType::Bool,
            TensorData::String(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate size in memory, used to bound what a module or model may return.
    pub fn byte_size(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len() * 4,
            TensorData::F64(v) => v.len() * 8,
            TensorData::I32(v) => v.len() * 4,
            TensorData::I64(v) => v.len() * 8,
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => v.iter().map(|s| s.len() + 8).sum(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            TensorData::F32(v) => json!(v),
            TensorData::F64(v) => json!(v),
            TensorData::I32(v) => json!(v),
            TensorData::I64(v) => json!(v),
            TensorData::U8(v) => json!(v),
            TensorData::Bool(v) => json!(v),
            TensorData::String(v) => json!(v),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("request body is not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Shape(String),
    #[error("input `{input}`: {message}")]
    Input { input: String, message: String },
}

impl Tensor {
    /// Checks that the number of elements matches the shape.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Tensor, TensorError> {
        let name = name.into();
        let Some(expected) = element_count(&shape) else {
            return Err(TensorError::Input {
                input: name,
                message: format!("shape {shape:?} has more elements than memory can hold"),
            });
        };
        if expected != data.len() {
            return Err(TensorError::Input {
                input: name,
                message: format!(
                    "shape {:?} holds {expected} elements but {} were given",
                    shape,
                    data.len()
                ),
            });
        }
        Ok(Tensor { name, shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// The v2 JSON object for this tensor: `{"name","shape","datatype","data"}`.
    pub fn to_v2_json(&self) -> Value {
        json!({
            "name": self.name,
            "shape": self.shape,
            "datatype": self.dtype().v2_name(),
            "data": self.data.to_json(),
        })
    }
}

/// The number of elements of a tensor of `shape`, or `None` when it overflows `usize` (a shape
/// like `[4294967296, 4294967296]` must not wrap to a small number).
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Decodes the body of a v2 inference request into its input tensors.
pub fn decode_v2_request(body: &[u8]) -> Result<Vec<Tensor>, TensorError> {
    decode_v2_request_with(body, |_, _, _| Ok(()))
}

/// [`decode_v2_request`], asking `admit` about each input's name, datatype and shape before its data
/// is converted (its error is the message returned): the caller refuses there what it will not run (a shape the model does not take,
/// more elements than a request may hold), before anything is allocated for it.
pub fn decode_v2_request_with(
    body: &[u8],
    admit: impl FnMut(&str, DType, &[usize]) -> Result<(), String>,
) -> Result<Vec<Tensor>, TensorError> {
    decode_v2_infer(body, &[], admit).map(|request| request.inputs)
}

/// A whole v2 inference request: its inputs, and what it asks of the answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct V2Request {
    /// Echoed in the answer.
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    pub outputs: OutputChoice,
}

/// Which outputs a request wants, and in which form (JSON `data`, or binary after the JSON).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OutputChoice {
    /// The outputs asked for, in order; empty: all of the model's.
    pub requested: Vec<RequestedOutput>,
    /// The request's `binary_data_output` parameter: binary unless an output says otherwise.
    pub binary_default: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    /// Its own `binary_data` parameter, if it has one.
    pub binary: Option<bool>,
}

/// Decodes a v2 inference request whose JSON is `json` and whose binary tensor data (the binary
/// data extension: inputs with a `binary_data_size` parameter, in order) is `binary`.
pub fn decode_v2_infer(
    json: &[u8],
    binary: &[u8],
    mut admit: impl FnMut(&str, DType, &[usize]) -> Result<(), String>,
) -> Result<V2Request, TensorError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| TensorError::Json(e.to_string()))?;
    let inputs = value
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| TensorError::Shape(r#"expected a JSON object with an "inputs" list of {"name","shape","datatype","data"}"#.into()))?;
    let mut binary_left = binary;
    let inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| decode_v2_tensor(i, input, &mut binary_left, &mut admit))
        .collect::<Result<Vec<_>, _>>()?;
    if !binary_left.is_empty() {
        return Err(TensorError::Shape(format!(
            "{} bytes of binary tensor data follow the inputs' binary_data_size in all",
            binary_left.len()
        )));
    }
    let id = match value.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => return Err(TensorError::Shape("\"id\" must be a string".into())),
    };
    let binary_default = parameter_bool(value.get("parameters"), "binary_data_output")?;
    let requested = match value.get("outputs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(outputs)) => outputs
            .iter()
            .enumerate()
            .map(|(i, output)| {
                let name = output.get("name").and_then(Value::as_str).ok_or_else(|| {
                    TensorError::Shape(format!("outputs[{i}] needs a string \"name\""))
                })?;
                let binary = parameter_bool(output.get("parameters"), "binary_data")?;
                Ok(RequestedOutput {
                    name: name.to_string(),
                    binary,
                })
            })
            .collect::<Result<_, TensorError>>()?,
        Some(_) => {
            return Err(TensorError::Shape(
                "\"outputs\" must be a list of {\"name\"}".into(),
            ))
        }
    };
    Ok(V2Request {
        id,
        inputs,
        outputs: OutputChoice {
            requested,
            binary_default: binary_default.unwrap_or(false),
        },
    })
}

/// A boolean parameter of a `parameters` object, if set.
fn parameter_bool(parameters: Option<&Value>, name: &str) -> Result<Option<bool>, TensorError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(TensorError::Shape(format!(
            "parameter `{name}` must be true or false, not {other}"
        ))),
    }
}

fn decode_v2_tensor(
    index: usize,
    input: &Value,
    binary: &mut &[u8],
    admit: &mut impl FnMut(&str, DType, &[usize]) -> Result<(), String>,
) -> Result<Tensor, TensorError> {
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TensorError::Shape(format!("inputs[{index}] needs a string \"name\"")))?
        .to_string();
    let err = |message: String| TensorError::Input {
        input: name.clone(),
        message,
    };
    let shape = input
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err("needs a \"shape\" list of non-negative integers".into()))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| err("\"shape\" must hold non-negative integers".into()))?;
    let Some(elements) = element_count(&shape) else {
        return Err(err(format!(
            "shape {shape:?} has more elements than memory can hold"
        )));
    };
    let datatype = input
        .get("datatype")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            err("needs a \"datatype\" (FP32, FP64, INT32, INT64, UINT8, BOOL or BYTES)".into())
        })?;
    let dtype = DType::from_v2_name(datatype)
        .ok_or_else(|| err(format!("unknown datatype `{datatype}`; expected FP32, FP64, INT32, INT64, UINT8, BOOL or BYTES")))?;
    admit(&name, dtype, &shape).map_err(TensorError::Shape)?;
    let binary_size = input
        .get("parameters")
        .and_then(|p| p.get("binary_data_size"));
    let data = match binary_size {
        Some(size) => {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| err("\"binary_data_size\" must be a whole number".into()))?;
            if size > binary.len() {
                return Err(err(format!(
                    "binary_data_size is {size} bytes, but only {} bytes of binary data are left",
                    binary.len()
                )));
            }
            let (mine, rest) = binary.split_at(size);
            *binary = rest;
            raw::decode_raw(dtype, elements, mine).map_err(err)?
        }
        None => {
            let data = input
                .get("data")
                .ok_or_else(|| err("needs \"data\" (or a binary_data_size parameter)".into()))?;
            let mut flat = Vec::with_capacity(elements.min(1 << 16));
            flatten(data, &mut flat);
            if flat.len() != elements {
                return Err(err(format!(
                    "shape {shape:?} holds {elements} elements but {} were given",
                    flat.len()
                )));
            }
            convert(dtype, &flat).map_err(err)?
        }
    };
    Tensor::new(name.clone(), shape, data)
}

/// v2 allows `data` flat or nested by shape; both are read in row-major order.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn convert(dtype: DType, values: &[&Value]) -> Result<TensorData, String> {
    fn each<T>(
        values: &[&Value],
        what: &str,
        f: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| f(v).ok_or_else(|| format!("data[{i}] = {v} is not {what}")))
            .collect()
    }
    Ok(match dtype {
        // Rounded to the nearest FP32 (`3.4028235e38` is FP32's largest); beyond its range, refused.
        DType::F32 => TensorData::F32(each(values, "a number within FP32's range", |v| {
            v.as_f64().map(|x| x as f32).filter(|x| x.is_finite())
        })?),
        DType::F64 => TensorData::F64(each(values, "a number", Value::as_f64)?),
        DType::I32 => TensorData::I32(each(values, "a 32-bit integer", |v| {
            v.as_i64().and_then(|x| i32::try_from(x).ok())
        })?),
        DType::I64 => TensorData::I64(each(values, "a 64-bit integer", Value::as_i64)?),
        DType::U8 => TensorData::U8(each(values, "an integer from 0 to 255", |v| {
            v.as_u64().and_then(|x| u8::try_from(x).ok())
        })?),
        DType::Bool => TensorData::Bool(each(values, "a boolean", Value::as_bool)?),
        DType::String => TensorData::String(each(values, "a string", |v| {
            v.as_str().map(str::to_string)
        })?),
    })
}

/// The v2 inference response body.
pub fn encode_v2_response(model_name: &str, model_version: &str, outputs: &[Tensor]) -> Value {
    let mut body = Map::new();
    body.insert("model_name".into(), json!(model_name));
    body.insert("model_version".into(), json!(model_version));
    body.insert(
        "outputs".into(),
        Value::Array(outputs.iter().map(Tensor::to_v2_json).collect()),
    );
    Value::Object(body)
}

/// A v2 inference answer in two parts: its JSON, and the binary tensor data that follows it
/// (empty when no output is binary).
#[derive(Debug)]
pub struct V2Answer {
    pub json: Vec<u8>,
    pub binary: Vec<u8>,
}

/// Encodes the outputs `choice` selects, each as JSON `data` or as binary data after the JSON
/// (with a `binary_data_size` parameter), and echoes the request's `id`. An output asked for that
/// the model does not produce is the caller's mistake.
pub fn encode_v2_answer(
    model_name: &str,
    model_version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    choice: &OutputChoice,
) -> Result<V2Answer, TensorError> {
    let selected: Vec<(&Tensor, bool)> = if choice.requested.is_empty() {
        outputs.iter().map(|t| (t, choice.binary_default)).collect()
    } else {
        choice
            .requested
            .iter()
            .map(|wanted| {
                let tensor = outputs
                    .iter()
                    .find(|t| t.name == wanted.name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
                        TensorError::Shape(format!(
                            "unknown output `{}`; the model's outputs are {}",
                            wanted.name,
                            names.join(", ")
                        ))
                    })?;
                Ok((tensor, wanted.binary.unwrap_or(choice.binary_default)))
            })
            .collect::<Result<_, TensorError>>()?
    };
    let mut binary = Vec::new();
    let outputs: Vec<Value> = selected
        .into_iter()
        .map(|(tensor, as_binary)| {
            if !as_binary {
                return tensor.to_v2_json();
            }
            let before = binary.len();
            raw::encode_raw(&tensor.data, &mut binary);
            json!({
                "name": tensor.name,
                "shape": tensor.shape,
                "datatype": tensor.dtype().v2_name(),
                "parameters": { "binary_data_size": binary.len() - before },
            })
        })
        .collect();
    let mut body = Map::new();
    body.insert("model_name".into(), json!(model_name));
    body.insert("model_version".into(), json!(model_version));
    if let Some(id) = id {
        body.insert("id".into(), json!(id));
    }
    body.insert("outputs".into(), Value::Array(outputs));
    Ok(V2Answer {
        json: serde_json::to_vec(&Value::Object(body)).expect("JSON values serialise"),
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flat_and_nested_data() {
        let body = br#"{"inputs":[
            {"name":"a","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]},
            {"name":"b","shape":[3],"datatype":"BYTES","data":["x","y","z"]}]}"#;
        let tensors = decode_v2_request(body).unwrap();
        assert_eq!(tensors[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(tensors[1].shape, vec![3]);
        assert_eq!(tensors[1].dtype(), DType::String);
    }

    #[test]
    fn errors_name_the_input() {
        let body = br#"{"inputs":[{"name":"x","shape":[3],"datatype":"INT64","data":[1,2]}]}"#;
        let err = decode_v2_request(body).unwrap_err().to_string();
        assert_eq!(
            err,
            "input `x`: shape [3] holds 3 elements but 2 were given"
        );
        let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#;
        let err = decode_v2_request(body).unwrap_err().to_string();
        assert!(
            err.starts_with("input `x`: data[0] = 300 is not an integer from 0 to 255"),
            "{err}"
        );
        assert!(matches!(
            decode_v2_request(b"{nope"),
            Err(TensorError::Json(_))
        ));
    }

    #[test]
    fn shapes_whose_element_count_overflows_are_refused() {
        let huge = 1usize << (usize::BITS / 2);
        let err = Tensor::new("x", vec![huge, huge], TensorData::I64(vec![])).unwrap_err();
        assert!(
            err.to_string()
                .contains("more elements than memory can hold"),
            "{err}"
        );
        let body = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"INT64","data":[]}]}"#;
        let err = decode_v2_request(body).unwrap_err().to_string();
        assert!(err.contains("more elements than memory can hold"), "{err}");
    }

    #[test]
    fn admit_sees_each_input_before_its_data_is_read() {
        let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1, 2]}]}"#;
        let mut seen = Vec::new();
        let err = decode_v2_request_with(body, |name, dtype, shape| {
            seen.push((name.to_string(), dtype, shape.to_vec()));
            Err("too many".into())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "too many");
        assert_eq!(seen, vec![("x".to_string(), DType::F32, vec![2])]);
        let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}]}"#;
        assert!(decode_v2_request(body).is_err());
    }

    #[test]
    fn binary_inputs_and_outputs_follow_the_extension() {
        let mut binary = Vec::new();
        raw::encode_raw(&TensorData::F32(vec![1.0, 2.0]), &mut binary);
        raw::encode_raw(&TensorData::String(vec!["hi".into()]), &mut binary);
        let json = br#"{"id":"r1","inputs":[
            {"name":"a","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},
            {"name":"j","shape":[1],"datatype":"INT64","data":[5]},
            {"name":"s","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}],
            "outputs":[{"name":"p","parameters":{"binary_data":true}},{"name":"q"}]}"#;
        let request = decode_v2_infer(json, &binary, |_, _, _| Ok(())).unwrap();
        assert_eq!(request.id.as_deref(), Some("r1"));
        assert_eq!(request.inputs[0].data, TensorData::F32(vec![1.0, 2.0]));
        assert_eq!(request.inputs[1].data, TensorData::I64(vec![5]));
        assert_eq!(
            request.inputs[2].data,
            TensorData::String(vec!["hi".into()])
        );
        assert_eq!(request.outputs.requested[0].binary, Some(true));
        assert_eq!(request.outputs.requested[1].binary, None);
        // Bytes left over, or too few, are refused.
        let extra = [binary.as_slice(), &[0]].concat();
        assert!(decode_v2_infer(json, &extra, |_, _, _| Ok(())).is_err());
        assert!(decode_v2_infer(json, &binary[..10], |_, _, _| Ok(())).is_err());

        let p = Tensor::new("p", vec![2], TensorData::F32(vec![0.5, 0.25])).unwrap();
        let q = Tensor::new("q", vec![1], TensorData::I64(vec![3])).unwrap();
        let answer =
            encode_v2_answer("m", "2", Some("r1"), &[q.clone(), p], &request.outputs).unwrap();
        let header: Value = serde_json::from_slice(&answer.json).unwrap();
        assert_eq!(header["id"], "r1");
        assert_eq!(header["outputs"][0]["name"], "p");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["outputs"][1]["data"][0], 3);
        assert_eq!(
            raw::decode_raw(DType::F32, 2, &answer.binary).unwrap(),
            TensorData::F32(vec![0.5, 0.25])
        );
        let unknown = OutputChoice {
            requested: vec![RequestedOutput {
                name: "z".into(),
                binary: None,
            }],
            binary_default: true,
        };
        let err = encode_v2_answer("m", "2", None, &[q], &unknown).unwrap_err();
        assert!(err.to_string().contains("unknown output `z`"), "{err}");
    }

    #[test]
    fn encodes_outputs() {
        let t = Tensor::new("p", vec![1, 2], TensorData::F32(vec![0.25, 0.75])).unwrap();
        let body = encode_v2_response("m", "1", &[t]);
        assert_eq!(body["outputs"][0]["datatype"], "FP32");
        assert_eq!(body["outputs"][0]["data"][1], 0.75);
    }
}
