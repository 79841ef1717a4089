//! Weights shared by every session of a model, and by models that hold the same weights.
//!
//! ONNX Runtime gives each session its own copy of the weights its graph optimizer makes (a
//! weight-only quantized MiniLM's int8 matrices become 90 MB of float32 per session), and its own
//! pre-packed copy for the matrix kernels. So each replica of a function used to cost several
//! times its model file. A [`SharedModel`] avoids both:
//!
//! 1. the model is optimized once and saved, its weights in a separate file;
//! 2. those weights are read once into tensors the host owns, deduplicated by content across
//!    models (the text-embedder and the sentiment analyzer carry the same encoder);
//! 3. every session is made from the saved graph with those tensors as its initializers
//!    (`AddInitializer`) and the host's one pre-packed weights container, so ONNX Runtime packs
//!    each weight once for all sessions.

use crate::{onnx, ModelError, ModelSession, OnnxRuntime};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, Tensor};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The optimized graph saved with its weights beside it, and the weights as shared tensors.
pub struct SharedModel {
    dir: PathBuf,
    graph: PathBuf,
    initializers: Vec<(String, Arc<DynValue>)>,
    shared_bytes: usize,
}

impl Drop for SharedModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Weights already loaded by some model, by the digest of their type, shape and bytes.
#[derive(Default)]
pub(crate) struct WeightCache(Mutex<HashMap<[u8; 32], Weak<DynValue>>>);

/// Weights smaller than this stay in the saved graph (not worth a lookup).
const SHARE_FROM_BYTES: usize = 1024;
const WEIGHTS_FILE: &str = "weights.bin";

impl SharedModel {
    /// Optimizes `model` into `dir` (which it owns from now on, and removes when dropped) and
    /// loads its weights, sharing those another model already loaded.
    pub(crate) fn prepare(
        ort: &OnnxRuntime,
        model: &[u8],
        dir: PathBuf,
    ) -> Result<SharedModel, ModelError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            ModelError::InvalidModel(format!("{what} for sharing its weights: {e}"))
        };
        std::fs::create_dir_all(&dir).map_err(|e| failed("creating a directory", &e))?;
        let mut shared = SharedModel {
            graph: dir.join("model.onnx"),
            dir,
            initializers: Vec::new(),
            shared_bytes: 0,
        };
        // The session made to optimize is not kept: it holds its own copy of everything.
        let optimize = |e: ort::Error| failed("optimizing the model", &e);
        ort.builder(1, GraphOptimizationLevel::Level3)?
            .with_optimized_model_path(&shared.graph)
            .map_err(|e| optimize(e.into()))?
            .with_config_entry(
                "session.optimized_model_external_initializers_file_name",
                WEIGHTS_FILE,
            )
            .map_err(|e| optimize(e.into()))?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                SHARE_FROM_BYTES.to_string(),
            )
            .map_err(|e| optimize(e.into()))?
            .commit_from_memory(model)
            .map_err(optimize)?;
        let graph = std::fs::read(&shared.graph).map_err(|e| failed("reading the graph", &e))?;
        let weights = std::fs::read(shared.dir.join(WEIGHTS_FILE))
            .map_err(|e| failed("reading the weights", &e))?;
        let graph = onnx::ModelProto::decode(graph.as_slice())
            .map_err(|e| failed("reading the optimized graph", &e))?;
        let mut initializers = Vec::new();
        let mut shared_bytes = 0;
        for tensor in graph.graph.map(|g| g.initializer).unwrap_or_default() {
            if let Some((value, bytes)) = shared_tensor(&ort.shared.weights, &tensor, &weights) {
                initializers.push((tensor.name, value));
                shared_bytes += bytes;
            }
        }
        shared.initializers = initializers;
        shared.shared_bytes = shared_bytes;
        Ok(shared)
    }

    /// A session of the saved graph over the shared weights.
    pub(crate) fn session(
        &self,
        ort: &OnnxRuntime,
        threads: usize,
    ) -> Result<ModelSession, ModelError> {
        let invalid = |e: ort::Error| ModelError::InvalidModel(e.to_string());
        // Already optimized: optimizing again would only make new private copies.
        let mut builder = ort
            .builder(threads, GraphOptimizationLevel::Disable)?
            .with_prepacked_weights(&ort.shared.prepacked)
            .map_err(|e| invalid(e.into()))?;
        for (name, value) in &self.initializers {
            builder = builder
                .with_initializer(name, value.clone())
                .map_err(|e| invalid(e.into()))?;
        }
        let session = builder.commit_from_file(&self.graph).map_err(invalid)?;
        ModelSession::new(session)
    }

    /// Bytes of weights this model's sessions share.
    pub fn shared_bytes(&self) -> usize {
        self.shared_bytes
    }
}

/// The weight `tensor` of the saved graph (its bytes in `weights`), as a tensor the host owns,
/// or the same one another model loaded. `None` for what stays in the graph: small tensors, and
/// element types the host does not convert (ONNX Runtime then reads them from the file itself).
fn shared_tensor(
    cache: &WeightCache,
    tensor: &onnx::TensorProto,
    weights: &[u8],
) -> Option<(Arc<DynValue>, usize)> {
    if tensor.data_location != onnx::EXTERNAL {
        return None;
    }
    let entry = |key: &str| {
        tensor
            .external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    if entry("location") != Some(WEIGHTS_FILE) {
        return None;
    }
    let offset: usize = entry("offset").unwrap_or("0").parse().ok()?;
    let length: usize = entry("length")?.parse().ok()?;
    let bytes = weights.get(offset..offset.checked_add(length)?)?;
    let mut digest = Sha256::new();
    digest.update(tensor.data_type.to_le_bytes());
    for dim in &tensor.dims {
        digest.update(dim.to_le_bytes());
    }
    digest.update(bytes);
    let key: [u8; 32] = digest.finalize().into();
    let mut cache = cache.0.lock().expect("weight cache lock");
    if let Some(value) = cache.get(&key).and_then(Weak::upgrade) {
        return Some((value, length));
    }
    let value = Arc::new(to_tensor(tensor.data_type, tensor.dims.clone(), bytes)?);
    cache.retain(|_, weak| weak.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&value));
    Some((value, length))
}

/// Little-endian `bytes` of ONNX element type `data_type` as a tensor.
fn to_tensor(data_type: i32, shape: Vec<i64>, bytes: &[u8]) -> Option<DynValue> {
    fn read<const N: usize, T>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
        bytes
            .chunks_exact(N)
            .map(|c| from(c.try_into().expect("chunks of N bytes")))
            .collect()
    }
    let value = match data_type {
        onnx::FLOAT => {
            Tensor::from_array((shape, read(bytes, f32::from_le_bytes))).map(|t| t.into_dyn())
        }
        onnx::DOUBLE => {
            Tensor::from_array((shape, read(bytes, f64::from_le_bytes))).map(|t| t.into_dyn())
        }
        onnx::INT64 => {
            Tensor::from_array((shape, read(bytes, i64::from_le_bytes))).map(|t| t.into_dyn())
        }
        onnx::INT32 => {
            Tensor::from_array((shape, read(bytes, i32::from_le_bytes))).map(|t| t.into_dyn())
        }
        onnx::INT8 => {
            Tensor::from_array((shape, read(bytes, i8::from_le_bytes))).map(|t| t.into_dyn())
        }
        onnx::UINT8 => Tensor::from_array((shape, bytes.to_vec())).map(|t| t.into_dyn()),
        _ => return None,
    };
    value.ok()
}

/// A directory of its own under `root` for one model's optimized copy.
pub(crate) fn model_dir(root: &Path) -> PathBuf {
    static PREPARED: AtomicUsize = AtomicUsize::new(0);
    root.join(format!(
        "{}-{}",
        std::process::id(),
        PREPARED.fetch_add(1, Ordering::Relaxed)
    ))
}

#[cfg(test)]
mod tests {
    //! Against real ONNX Runtime and the bundled MiniLM models (fetched by `scripts/setup.sh`).
    use crate::{Inputs, OnnxRuntime};
    use aifn_tensor::{Tensor, TensorData};
    use std::path::PathBuf;
    use std::sync::OnceLock;

    fn repo_file(relative: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative);
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run ./scripts/setup.sh", path.display()))
    }

    fn runtime() -> &'static (OnnxRuntime, PathBuf) {
        static RUNTIME: OnceLock<(OnnxRuntime, PathBuf)> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("aifn-shared-{}", std::process::id()));
            let library = crate::locate_onnxruntime().expect("onnxruntime");
            (OnnxRuntime::init(&library, Some(dir.clone())).unwrap(), dir)
        })
    }

    fn sentence(session: &mut crate::ModelSession) -> Vec<f32> {
        let ids = [101i64, 1996, 2047, 3185, 2003, 12476, 102];
        let n = ids.len();
        let tensor = |name: &str, data: Vec<i64>| Tensor {
            name: name.into(),
            shape: vec![1, n],
            data: TensorData::I64(data),
        };
        let inputs: Inputs = session
            .signature()
            .check_inputs(vec![
                tensor("input_ids", ids.to_vec()),
                tensor("attention_mask", vec![1; n]),
                tensor("token_type_ids", vec![0; n]),
            ])
            .unwrap();
        match session.run(inputs).unwrap().remove(0).data {
            TensorData::F32(values) => values,
            other => panic!("expected f32 outputs, got {other:?}"),
        }
    }

    #[test]
    fn sessions_over_shared_weights_answer_as_a_private_session_does() {
        let (ort, root) = runtime();
        let bytes = repo_file("functions/text-embedder/model/model.onnx");
        let expected = sentence(&mut ort.load(&bytes, 1).unwrap());
        let model = ort.model(bytes).unwrap();
        // The int8 encoder's weights become float32 when optimized: about 90 MB, held once.
        assert!(model.shared_bytes() > 50 << 20, "{}", model.shared_bytes());
        for _ in 0..2 {
            let got = sentence(&mut model.session(1).unwrap());
            assert_eq!(got.len(), expected.len());
            let worst = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "differs from a private session by {worst}");
        }
        let dirs = || std::fs::read_dir(root).unwrap().count();
        let before = dirs();
        drop(model);
        assert_eq!(dirs(), before - 1, "the optimized copy goes with the model");
    }

    #[test]
    fn models_with_the_same_weights_hold_them_once() {
        let (ort, _) = runtime();
        let embedder = ort
            .model(repo_file("functions/text-embedder/model/model.onnx"))
            .unwrap();
        let count = || {
            let cache = ort.shared.weights.0.lock().unwrap();
            cache.values().filter(|w| w.strong_count() > 0).count()
        };
        let alone = count();
        // The sentiment analyzer is the same encoder with a small head on top.
        let sentiment = ort
            .model(repo_file(
                "functions/sentiment-analyzer/model/sentiment.onnx",
            ))
            .unwrap();
        let crate::Source::Shared(shared) = &sentiment.source else {
            panic!("the sentiment model's weights are not shared");
        };
        let added = count() - alone;
        assert!(
            added * 10 < shared.initializers.len(),
            "the sentiment model added {added} of its {} weights",
            shared.initializers.len()
        );
        drop(embedder);
    }

    #[test]
    fn a_model_asked_onto_the_gpu_says_why_it_cannot_go() {
        use ort::ep::ExecutionProvider as _;
        let (ort, _) = runtime();
        let bytes = repo_file("functions/churn-predictor/model/churn.onnx");
        match ort.model_on_gpu(bytes.clone()) {
            Ok(model) => assert_eq!(model.device(), "cuda:0"),
            Err((returned, reason)) => {
                assert_eq!(returned, bytes, "the bytes come back for the CPU");
                if !ort::ep::CUDA::is_available().unwrap() {
                    // The CPU wheel of ONNX Runtime (what CI has).
                    assert!(reason.contains("no CUDA execution provider"), "{reason}");
                    assert!(reason.contains("setup-gpu.sh"), "{reason}");
                }
                let model = ort.model(returned).unwrap();
                assert_eq!(model.device(), "cpu");
            }
        }
    }
}
