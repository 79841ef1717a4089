//! The drift and quality figures against an independent implementation: numpy, scipy and
//! scikit-learn in the project's Python environment (`.venv`, made by ./scripts/setup.sh).

use aifn_monitor::divergence::{js_distance, kl, psi};
use aifn_monitor::quality::{classification, regression, Labelled};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};

/// Deterministic pseudo-random numbers in [0, 1).
fn numbers(seed: u64) -> impl Iterator<Item = f64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn python(case: &Value) -> Value {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut child = Command::new(format!("{root}/.venv/bin/python"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the project's .venv (run ./scripts/setup.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(case.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "reference.py failed");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn close(what: &str, ours: f64, theirs: &Value) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= 1e-9,
        "{what}: ours {ours}, numpy/scipy/scikit-learn {theirs}"
    );
}

#[test]
fn drift_and_quality_figures_equal_numpy_scipy_and_scikit_learn() {
    let mut random = numbers(7);
    let mut histogram = |bins: usize, empty_every: usize| -> Vec<f64> {
        (0..bins)
            .map(|i| {
                if empty_every > 0 && i % empty_every == 0 {
                    0.0
                } else {
                    (random.next().unwrap() * 500.0).floor() + 1.0
                }
            })
            .collect()
    };
    // Equal-ish, shifted, with empty bins on either side, and one bin.
    let histograms: Vec<(Vec<f64>, Vec<f64>)> = vec![
        (histogram(10, 0), histogram(10, 0)),
        (histogram(12, 3), histogram(12, 0)),
        (histogram(12, 0), histogram(12, 4)),
        (histogram(7, 2), histogram(7, 3)),
        (vec![10.0, 0.0, 0.0], vec![0.0, 0.0, 10.0]),
        (vec![5.0], vec![9.0]),
    ];

    let mut random = numbers(11);
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..500 {
        let score = (random.next().unwrap() * 100.0).round() / 100.0; // ties on purpose
        scores.push(score);
        // Labels that agree with the score more often than not.
        labels.push(if random.next().unwrap() < 0.2 + 0.6 * score {
            1.0
        } else {
            0.0
        });
    }
    let values: Vec<f64> = (0..300).map(|_| random.next().unwrap() * 10.0).collect();
    let targets: Vec<f64> = values
        .iter()
        .map(|v| v + random.next().unwrap() - 0.5)
        .collect();

    let theirs = python(&json!({
        "histograms": histograms,
        "scores": scores,
        "labels": labels,
        "values": values,
        "targets": targets,
    }));

    for (i, ((reference, live), expected)) in histograms
        .iter()
        .zip(theirs["histograms"].as_array().unwrap())
        .enumerate()
    {
        close(&format!("psi {i}"), psi(reference, live), &expected["psi"]);
        close(&format!("kl {i}"), kl(reference, live), &expected["kl"]);
        close(
            &format!("js {i}"),
            js_distance(reference, live),
            &expected["js"],
        );
    }

    let pairs = |predictions: &[f64], labels: &[f64]| -> Vec<Labelled> {
        predictions
            .iter()
            .zip(labels)
            .map(|(&prediction, &label)| Labelled { prediction, label })
            .collect()
    };
    let c = classification(&pairs(&scores, &labels)).unwrap();
    let expected = &theirs["classification"];
    close("accuracy", c.accuracy, &expected["accuracy"]);
    close("precision", c.precision, &expected["precision"]);
    close("recall", c.recall, &expected["recall"]);
    close("f1", c.f1, &expected["f1"]);
    close("roc_auc", c.roc_auc.unwrap(), &expected["roc_auc"]);

    let r = regression(&pairs(&values, &targets)).unwrap();
    close("mae", r.mae, &theirs["regression"]["mae"]);
    close("rmse", r.rmse, &theirs["regression"]["rmse"]);
}
