//! The bundled text embedder against its reference: Hugging Face `tokenizers` and Python
//! onnxruntime (`functions/text-embedder/tests/make_reference.py` wrote `reference.json`).
//!
//! Token ids come from the real WASM module run by the host's guest engine; embeddings from the
//! real host over HTTP, with the model fetched by setup.

use crate::support;

use aifn_guest::{CallLimits, GuestEngine, GuestRequest};
use aifn_tensor::TensorData;
use serde_json::json;
use std::time::Duration;
use support::*;

const MODULE: &str =
    "functions/text-embedder/module/target/wasm32-wasip2/release/text_embedder.wasm";
const SPEC: &str = "functions/text-embedder/function.yaml";

#[test]
fn token_ids_equal_the_reference_tokenizer() {
    let wasm = std::fs::read(built(MODULE)).unwrap();
    let engine = GuestEngine::new(None).unwrap();
    let limits = CallLimits {
        timeout: Duration::from_secs(5),
        memory_bytes: 256 << 20,
        max_output_bytes: 64 << 20,
        ..CallLimits::default()
    };
    let module = engine
        .load(
            &wasm,
            &aifn_guest::ModuleConfig {
                digest: "text-embedder-test".into(),
                tag: "text-embedder@test".into(),
                limits,
                ..Default::default()
            },
        )
        .unwrap();
    let mut mismatches = Vec::new();
    let cases = reference();
    for case in &cases {
        let body = json!({ "inputs": case.text }).to_string();
        let request = GuestRequest {
            route: "/v1/embeddings",
            method: "POST",
            headers: Vec::new(),
            body: body.as_bytes(),
        };
        let tensors = module.start().unwrap().preprocess(request).unwrap();
        let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
        let TensorData::I64(ids) = &tensors[0].data else {
            panic!("input_ids is not int64")
        };
        assert_eq!(tensors[0].shape, [1, ids.len()]);
        assert_eq!(
            tensors[1].data,
            TensorData::I64(vec![1; ids.len()]),
            "attention_mask of {:?}",
            case.text
        );
        if *ids != case.ids {
            mismatches.push(format!(
                "{:?}\n    got      {ids:?}\n    expected {:?}",
                case.text, case.ids
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} texts tokenized differently from the reference:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn embeddings_equal_the_reference_over_http() {
    let state = temp_dir("text-embedder");
    let host = TestHost::start(&state);
    host.deploy(&repo().join(SPEC));
    let cases = reference();

    // One text per request.
    let mut worst = (1.0f64, String::new());
    for case in &cases {
        let reply = host.post(
            "/v1/embeddings",
            &json!({ "inputs": case.text }).to_string(),
        );
        assert_eq!(reply.status, 200, "{:?}: {}", case.text, reply.body);
        let body = reply.json();
        assert_eq!(body["dimension"], 384);
        assert_eq!(body["tokens"], case.ids.len());
        let cos = cosine(&floats(&body["embedding"]), &case.embedding);
        if cos < worst.0 {
            worst = (cos, case.text.clone());
        }
    }
    assert!(worst.0 >= 0.9999, "cosine {} for {:?}", worst.0, worst.1);

    // Lists of texts of mixed lengths: padded in one batch, each embedding still the reference's.
    for chunk in cases.chunks(23) {
        let texts: Vec<&str> = chunk.iter().map(|c| c.text.as_str()).collect();
        let reply = host.post("/v1/embeddings", &json!({ "inputs": texts }).to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        let embeddings = body["embeddings"].as_array().unwrap();
        assert_eq!(embeddings.len(), chunk.len());
        for (case, embedding) in chunk.iter().zip(embeddings) {
            let cos = cosine(&floats(embedding), &case.embedding);
            assert!(cos >= 0.9999, "batched: cosine {cos} for {:?}", case.text);
        }
        let tokens: Vec<usize> = chunk.iter().map(|c| c.ids.len()).collect();
        assert_eq!(body["tokens"], json!(tokens));
    }

    // The model card's pair.
    let reply = host.post(
        "/v1/embeddings",
        r#"{"inputs": ["A man is eating food.", "A man is eating a piece of bread."]}"#,
    );
    let body = reply.json();
    let pair = cosine(
        &floats(&body["embeddings"][0]),
        &floats(&body["embeddings"][1]),
    );
    assert!(
        (0.74..0.77).contains(&pair),
        "cosine of the model card's pair: {pair}"
    );
}

#[test]
fn bad_requests_are_the_callers_fault() {
    let state = temp_dir("text-embedder-bad");
    let host = TestHost::start(&state);
    host.deploy(&repo().join(SPEC));
    let too_many = json!({ "inputs": vec!["text"; 33] }).to_string();
    for body in [
        r#"{"input": "x"}"#,
        r#"{"inputs": []}"#,
        r#"{"inputs": 42}"#,
        "not json",
        too_many.as_str(),
    ] {
        let reply = host.post("/v1/embeddings", body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert_eq!(reply.error_code(), "rejected_by_function", "{body}");
        assert!(
            reply.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("inputs"),
            "{}",
            reply.body
        );
    }
    // The host is unharmed.
    assert_eq!(
        host.post("/v1/embeddings", r#"{"inputs": "still here"}"#)
            .status,
        200
    );
}
