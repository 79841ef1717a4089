//! `aifn inspect` says what ONNX Runtime says: on every bundled model and every test model, the
//! inputs' and outputs' names, types and shapes (dynamic dimensions named or not) equal those of
//! onnxruntime's Python API, and the producer, IR version, operator sets and metadata equal what
//! the onnx package reads from the file.

use crate::support::*;
use serde_json::Value;
use std::process::Command;

/// Every ONNX file the repo ships or makes (setup fetches, trains or makes the ones not committed).
fn models() -> Vec<std::path::PathBuf> {
    let mut models = vec![
        built("functions/churn-predictor/model/churn.onnx"),
        built("functions/churn-predictor/model/churn_fallback.onnx"),
        built("functions/text-embedder/model/model.onnx"),
        built("functions/sentiment-analyzer/model/sentiment.onnx"),
        built("sdk/templates/model.onnx"),
    ];
    for entry in std::fs::read_dir(repo().join("tests/fixtures/models")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "onnx") {
            models.push(path);
        }
    }
    models
}

#[test]
fn inspect_agrees_with_onnxruntime_on_every_model() {
    let models = models();
    let output = Command::new(repo().join(".venv/bin/python"))
        .arg(repo().join("tests/clients/inspect_reference.py"))
        .args(&models)
        .output()
        .expect("the project's .venv (run ./scripts/setup.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let references: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(references.len(), models.len());
    let mut named_dimension_seen = false;
    for (model, reference) in models.iter().zip(&references) {
        let inspected = Command::new(env!("CARGO_BIN_EXE_aifn"))
            .args(["inspect", "--json"])
            .arg(model)
            .output()
            .unwrap();
        assert!(
            inspected.status.success(),
            "{}: {}",
            model.display(),
            String::from_utf8_lossy(&inspected.stderr)
        );
        let facts: Value = serde_json::from_slice(&inspected.stdout).unwrap();
        let at = model.display();
        for side in ["inputs", "outputs"] {
            let ours: Vec<Value> = facts[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| serde_json::json!({"name": p["name"], "type": p["type"], "shape": p["shape"]}))
                .collect();
            assert_eq!(Value::from(ours), reference[side], "{at}: {side}");
        }
        for field in [
            "producer_name",
            "producer_version",
            "ir_version",
            "opsets",
            "metadata",
        ] {
            assert_eq!(facts[field], reference[field], "{at}: {field}");
        }
        assert_eq!(
            facts["size_bytes"].as_u64().unwrap(),
            std::fs::metadata(model).unwrap().len(),
            "{at}"
        );
        named_dimension_seen |= facts.to_string().contains("\"batch\"");
    }
    assert!(
        named_dimension_seen,
        "no model with a named dimension was compared"
    );

    // The text form names the same things, dynamic dimensions as `?` or their names.
    let text = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .arg("inspect")
        .arg(repo().join("tests/fixtures/models/two_inputs.onnx"))
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    for line in [
        "ONNX IR version 8, opset ai.onnx 17",
        "producer: aifn-tests 1.0",
        "features  tensor(float)    FP32   [batch, 3]",
        "counts    tensor(int64)    INT64  [?, 2]",
        "total     tensor(int64)    INT64  [?]",
        "labels: low,high",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // A file that is not a model is refused with its name, and nothing else is printed.
    let spec = repo().join("examples/sentiment-analyzer.yaml");
    let refused = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .arg("inspect")
        .arg(&spec)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("sentiment-analyzer.yaml"), "{said}");
}
