//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), with
//! `grpc.health.v1.Health` and server reflection, served on the data plane's own port next to
//! REST: a request whose `content-type` is `application/grpc` comes here.
//!
//! Every call goes through [`super::inference`], the same admission (auth from the
//! `authorization` or `x-api-key` metadata, IP allowlists, rate limits), version choice, bounds
//! and metrics as the REST routes. Tensors arrive and leave as `raw_input_contents` /
//! `raw_output_contents` (the typed `contents` are read too). A function with a module is also
//! reachable through it: one BYTES input named `request` carries the body for the function's
//! endpoint, and the answer is the BYTES output `response` (see `docs/clients.md`).

use super::data::{count_answer, endpoint, DataPlane, RequestHead};
use super::error::ApiError;
use super::inference::{self, Metadata, EXTENSIONS};
use crate::instance::TensorAdmission;
use crate::registry::Registry;
use aifn_tensor::raw::{decode_raw, encode_raw};
use aifn_tensor::{element_count, DType, Tensor, TensorData};
use bytes::Bytes;
use http_body_util::BodyExt;
use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

pub mod proto {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("inference");
}

/// The compiled descriptors of the proto, for reflection.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// The gRPC services of the data plane, built once per listener.
pub fn routes(data: Arc<DataPlane>) -> tonic::service::Routes {
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(health, data.registry.clone()));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptors are valid");
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the compiled descriptors are valid");
    let max_message = data.limits.max_body_bytes;
    let inference = GrpcInferenceServiceServer::new(Inference { data })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    tonic::service::Routes::new(inference)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
}

/// Keeps `grpc.health.v1.Health` true to `/readyz`: serving once every stored function is loaded.
async fn report_health(health: tonic_health::server::HealthReporter, registry: Arc<Registry>) {
    use tonic_health::ServingStatus;
    let mut last = None;
    loop {
        let status = if registry.is_ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            health.set_service_status("", status).await;
            health
                .set_service_status(
                    <GrpcInferenceServiceServer<Inference> as tonic::server::NamedService>::NAME,
                    status,
                )
                .await;
            last = Some(status);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

struct Inference {
    data: Arc<DataPlane>,
}

/// A call's metadata as the admission path reads them.
struct CallHead {
    headers: hyper::HeaderMap,
    extensions: hyper::http::Extensions,
}

impl CallHead {
    fn of<T>(request: Request<T>) -> (CallHead, T) {
        let (metadata, extensions, message) = request.into_parts();
        let head = CallHead {
            headers: metadata.into_headers(),
            extensions,
        };
        (head, message)
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead::from_parts(&self.headers, &self.extensions)
    }

    /// The caller's `grpc-timeout` (`<digits><unit>`, unit one of H M S m u n).
    fn deadline(&self) -> Option<Duration> {
        let value = self.headers.get("grpc-timeout")?.to_str().ok()?;
        let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
        let amount: u64 = digits.parse().ok()?;
        Some(match unit {
            "H" => Duration::from_secs(amount.saturating_mul(3600)),
            "M" => Duration::from_secs(amount.saturating_mul(60)),
            "S" => Duration::from_secs(amount),
            "m" => Duration::from_millis(amount),
            "u" => Duration::from_micros(amount),
            "n" => Duration::from_nanos(amount),
            _ => return None,
        })
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.data.registry.is_ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let (call, message) = CallHead::of(request);
        let model = inference::find(&self.data, &message.name, Some(&message.version))?;
        model.check_access(&self.data, &call.head()).await?;
        Ok(Response::new(ModelReadyResponse { ready: true }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "aifn".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let (call, message) = CallHead::of(request);
        let model = inference::find(&self.data, &message.name, Some(&message.version))?;
        model.check_access(&self.data, &call.head()).await?;
        Ok(Response::new(metadata_message(model.metadata())))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (call, message) = CallHead::of(request);
        if let Some(body) = module_call(&message) {
            return self.through_module(&call, &message, body).await;
        }
        let started = Instant::now();
        let data = &self.data;
        let model = inference::find(data, &message.model_name, Some(&message.model_version))?;
        let mut answering = model.described().clone();
        let result = async {
            let admission = model.admit(data, &call.head(), call.deadline()).await?;
            answering = admission.function.clone();
            let function = &admission.function;
            let mut tensors = TensorAdmission::new(&function.signature, &function.tensor_limits);
            let inputs = decode_inputs(&message, &mut tensors)
                .map_err(|e| ApiError::from(tensors.refusal(e)))?;
            let inputs = tensors.finish(inputs)?;
            let deadline = admission.deadline;
            let (outputs, variant) = tokio::time::timeout(deadline, admission.run(data, inputs))
                .await
                .map_err(|_| super::data::timed_out(deadline))??;
            let answer = encode_outputs(&message, outputs)
                .map_err(|e| ApiError::new(hyper::StatusCode::BAD_REQUEST, "invalid_input", e))?;
            Ok::<_, ApiError>((
                ModelInferResponse {
                    model_name: function.name().to_string(),
                    model_version: function.version().to_string(),
                    id: message.id.clone(),
                    parameters: Default::default(),
                    outputs: answer.0,
                    raw_output_contents: answer.1,
                },
                variant,
            ))
        }
        .await;
        let (status, variant, limit) = match &result {
            Ok((_, variant)) => (200, Some(*variant), None),
            Err(error) => (error.status.as_u16(), None, error.limit()),
        };
        count_answer(
            data,
            &answering,
            None,
            &model.route(),
            started,
            status,
            variant,
            limit,
        );
        let (answer, _) = result?;
        Ok(Response::new(answer))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let models = inference::repository_index(&self.data, request.get_ref().ready)
            .into_iter()
            .map(|entry| repository_index_response::ModelIndex {
                name: entry.name,
                version: entry.version,
                state: entry.state.into(),
                reason: entry.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }
}

/// The request body of a call through a function's module: one BYTES input named `request`.
fn module_call(message: &ModelInferRequest) -> Option<Bytes> {
    let [input] = message.inputs.as_slice() else {
        return None;
    };
    if input.name != "request" || input.datatype != "BYTES" {
        return None;
    }
    let body = match message.raw_input_contents.first() {
        // One BYTES element: its 4-byte length, then the body.
        Some(raw) => {
            let length = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
            (raw.len() == 4 + length).then(|| raw.slice(4..))?
        }
        None => input.contents.as_ref()?.bytes_contents.first()?.clone(),
    };
    Some(body)
}

impl Inference {
    /// Sends `body` to the function's endpoint (the `route` parameter, else its first POST
    /// route) as if it came over REST, and answers with what the module answered.
    async fn through_module(
        &self,
        call: &CallHead,
        message: &ModelInferRequest,
        body: Bytes,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let no_model = || {
            Status::from(ApiError::not_found(format!(
                "no model named `{}`",
                message.model_name
            )))
        };
        let serving = self
            .data
            .registry
            .serving(&message.model_name)
            .ok_or_else(no_model)?;
        let asked = message
            .parameters
            .get("route")
            .and_then(|p| match &p.parameter_choice {
                Some(infer_parameter::ParameterChoice::StringParam(route)) => Some(route.clone()),
                _ => None,
            });
        let routes = serving.stable.module_routes();
        let route = match asked {
            Some(route) if routes.contains(&route) => route,
            Some(route) => {
                return Err(ApiError::not_found(format!(
                    "`{}` has no POST route {route}; its routes: {}",
                    message.model_name,
                    routes.join(", ")
                ))
                .into())
            }
            None => routes.first().cloned().ok_or_else(no_model)?,
        };
        let mut request = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(&route)
            .body(http_body_util::Full::new(body))
            .expect("a route is a valid URI");
        *request.headers_mut() = call
            .headers
            .iter()
            .filter(|(name, _)| !name.as_str().starts_with("grpc-") && *name != "te")
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        request.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        *request.extensions_mut() = call.extensions.clone();
        let work = endpoint(self.data.clone(), request);
        let response = match call.deadline() {
            Some(deadline) => tokio::time::timeout(deadline, work)
                .await
                .map_err(|_| Status::deadline_exceeded("the call's grpc-timeout passed"))?,
            None => work.await,
        }
        .unwrap_or_else(ApiError::into_response);
        let status = response.status();
        let version = response
            .headers()
            .get(super::names::X_AIFN_VERSION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let retry_after = response.headers().get(hyper::header::RETRY_AFTER).cloned();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !status.is_success() {
            // The endpoint's error, as its JSON body says it.
            let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let message = error["error"]["message"]
                .as_str()
                .unwrap_or("the function refused the request")
                .to_string();
            let mut error = ApiError::new(status, "function_error", message);
            if let Some(wait) = retry_after.and_then(|v| v.to_str().ok().map(str::to_string)) {
                error = error.with_header(hyper::header::RETRY_AFTER, wait);
            }
            return Err(error.into());
        }
        let mut raw = Vec::with_capacity(body.len() + 4);
        encode_raw(
            &TensorData::String(vec![String::from_utf8_lossy(&body).into_owned()]),
            &mut raw,
        );
        Ok(Response::new(ModelInferResponse {
            model_name: message.model_name.clone(),
            model_version: version,
            id: message.id.clone(),
            parameters: Default::default(),
            outputs: vec![model_infer_response::InferOutputTensor {
                name: "response".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                parameters: Default::default(),
                contents: None,
            }],
            raw_output_contents: vec![raw.into()],
        }))
    }
}

/// The request's tensors, each head admitted before its data is converted.
fn decode_inputs(
    message: &ModelInferRequest,
    admission: &mut TensorAdmission<'_>,
) -> Result<Vec<Tensor>, String> {
    let raw = &message.raw_input_contents;
    if !raw.is_empty() && raw.len() != message.inputs.len() {
        return Err(format!(
            "raw_input_contents has {} entries for {} inputs",
            raw.len(),
            message.inputs.len()
        ));
    }
    message
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let name = &input.name;
            let dtype = DType::from_v2_name(&input.datatype).ok_or_else(|| {
                format!(
                    "input `{name}`: unknown datatype `{}`; expected FP32, FP64, INT32, INT64, UINT8, BOOL or BYTES",
                    input.datatype
                )
            })?;
            let shape = input
                .shape
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| format!("input `{name}`: the shape {:?} has a negative dimension", input.shape))?;
            let elements = element_count(&shape)
                .ok_or_else(|| format!("input `{name}`: shape {shape:?} has more elements than memory can hold"))?;
            admission.admit(name, dtype, &shape)?;
            let data = match raw.get(i) {
                Some(bytes) => decode_raw(dtype, elements, bytes),
                None => typed_contents(dtype, input.contents.as_ref()),
            }
            .map_err(|e| format!("input `{name}`: {e}"))?;
            Tensor::new(name.clone(), shape, data).map_err(|e| e.to_string())
        })
        .collect()
}

/// An input's typed `contents`, for clients that do not send raw bytes.
fn typed_contents(
    dtype: DType,
    contents: Option<&InferTensorContents>,
) -> Result<TensorData, String> {
    let empty = InferTensorContents::default();
    let c = contents.unwrap_or(&empty);
    Ok(match dtype {
        DType::F32 => TensorData::F32(c.fp32_contents.clone()),
        DType::F64 => TensorData::F64(c.fp64_contents.clone()),
        DType::I32 => TensorData::I32(c.int_contents.clone()),
        DType::I64 => TensorData::I64(c.int64_contents.clone()),
        DType::U8 => TensorData::U8(
            c.uint_contents
                .iter()
                .map(|&v| u8::try_from(v).map_err(|_| format!("{v} is not a UINT8")))
                .collect::<Result<_, _>>()?,
        ),
        DType::Bool => TensorData::Bool(c.bool_contents.clone()),
        DType::String => TensorData::String(
            c.bytes_contents
                .iter()
                .map(|b| {
                    String::from_utf8(b.to_vec())
                        .map_err(|_| "a BYTES element is not UTF-8 text".to_string())
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

type EncodedOutputs = (Vec<model_infer_response::InferOutputTensor>, Vec<Bytes>);

/// The outputs asked for (all when none are), as raw bytes.
fn encode_outputs(
    message: &ModelInferRequest,
    outputs: Vec<Tensor>,
) -> Result<EncodedOutputs, String> {
    let selected: Vec<&Tensor> = if message.outputs.is_empty() {
        outputs.iter().collect()
    } else {
        message
            .outputs
            .iter()
            .map(|wanted| {
                outputs
                    .iter()
                    .find(|t| t.name == wanted.name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = outputs.iter().map(|t| t.name.as_str()).collect();
                        format!(
                            "unknown output `{}`; the model's outputs are {}",
                            wanted.name,
                            names.join(", ")
                        )
                    })
            })
            .collect::<Result<_, _>>()?
    };
    Ok(selected
        .into_iter()
        .map(|tensor| {
            let mut raw = Vec::new();
            encode_raw(&tensor.data, &mut raw);
            (
                model_infer_response::InferOutputTensor {
                    name: tensor.name.clone(),
                    datatype: tensor.dtype().v2_name().into(),
                    shape: tensor.shape.iter().map(|&d| d as i64).collect(),
                    parameters: Default::default(),
                    contents: None,
                },
                Bytes::from(raw),
            )
        })
        .unzip())
}

fn metadata_message(metadata: Metadata) -> ModelMetadataResponse {
    let ports = |ports: Vec<inference::TensorMetadata>| {
        ports
            .into_iter()
            .map(|p| model_metadata_response::TensorMetadata {
                name: p.name,
                datatype: p.datatype.into(),
                shape: p.shape,
            })
            .collect()
    };
    ModelMetadataResponse {
        name: metadata.name,
        versions: metadata.versions,
        platform: metadata.platform.into(),
        inputs: ports(metadata.inputs),
        outputs: ports(metadata.outputs),
    }
}
