//! The bundled sentiment analyzer, deployed from its folder as written, against the held-out
//! labelled sentences that `functions/sentiment-analyzer/model/train.py` never trained on.

use crate::support;

use serde_json::{json, Value};
use support::*;

struct Labelled {
    text: String,
    label: String,
    /// What the training script's Python onnxruntime pipeline predicted.
    p_positive: f64,
}

fn held_out() -> Vec<Labelled> {
    let text =
        std::fs::read_to_string(repo().join("functions/sentiment-analyzer/tests/heldout.jsonl"))
            .unwrap();
    let rows: Vec<Labelled> = text
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            Labelled {
                text: row["text"].as_str().unwrap().to_string(),
                label: row["label"].as_str().unwrap().to_string(),
                p_positive: row["p_positive"].as_f64().unwrap(),
            }
        })
        .collect();
    assert!(rows.len() >= 200, "{} held-out sentences", rows.len());
    rows
}

#[test]
fn held_out_accuracy_and_probabilities_match_training() {
    let state = temp_dir("sentiment");
    let host = TestHost::start(&state);
    let deployed = host.deploy(&repo().join("functions/sentiment-analyzer/function.yaml"));
    assert!(
        deployed.contains("POST") && deployed.contains("/v1/sentiment"),
        "{deployed}"
    );
    let key = host.new_key("sentiment-analyzer");

    // Without a key the endpoint is closed.
    let reply = host.post("/v1/sentiment", r#"{"inputs": "great"}"#);
    assert_eq!(reply.status, 401, "{}", reply.body);

    let rows = held_out();
    let mut correct = 0;
    for chunk in rows.chunks(25) {
        let texts: Vec<&str> = chunk.iter().map(|r| r.text.as_str()).collect();
        let reply = host.post_with_key(
            "/v1/sentiment",
            &json!({ "inputs": texts }).to_string(),
            &key,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        let predictions = reply.json()["predictions"].as_array().unwrap().clone();
        assert_eq!(predictions.len(), chunk.len());
        for (row, prediction) in chunk.iter().zip(&predictions) {
            let label = prediction["label"].as_str().unwrap();
            let probability = prediction["probability"].as_f64().unwrap();
            assert!((0.5..=1.0).contains(&probability), "{prediction}");
            let p_positive = if label == "positive" {
                probability
            } else {
                1.0 - probability
            };
            assert!(
                (p_positive - row.p_positive).abs() < 1e-3,
                "{:?}: host says p(positive) = {p_positive}, training pipeline {}",
                row.text,
                row.p_positive
            );
            correct += usize::from(label == row.label);
        }
    }
    let accuracy = correct as f64 / rows.len() as f64;
    let head: Value = serde_json::from_slice(
        &std::fs::read(repo().join("functions/sentiment-analyzer/model/head.json")).unwrap(),
    )
    .unwrap();
    let reported = head["held_out_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.80, "held-out accuracy {accuracy}");
    assert!(
        (accuracy - reported).abs() < 0.5 / rows.len() as f64 + 1e-9,
        "accuracy {accuracy}, README/head.json say {reported}"
    );

    // One text answers one prediction.
    let reply = host.post_with_key(
        "/v1/sentiment",
        r#"{"inputs": "I absolutely love this phone."}"#,
        &key,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["label"], "positive");
    let reply = host.post_with_key(
        "/v1/sentiment",
        r#"{"inputs": "Worst purchase ever, it broke in a day."}"#,
        &key,
    );
    assert_eq!(reply.json()["label"], "negative");
}
