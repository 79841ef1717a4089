//! The conformance suite: every case in `tests/conformance/cases` against every language's module
//! in `tests/conformance/modules` (built from source by setup), run by the host's guest engine.
//! Every language must give the tensors the case expects, f32 bit for bit, or the same kind of error.

use crate::support;

use aifn_guest::{CallLimits, GuestEngine, GuestError, GuestRequest};
use aifn_tensor::{Tensor, TensorData};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use support::repo;

fn suite() -> PathBuf {
    repo().join("tests/conformance")
}

/// What a case's `expected.json` says, in the form a module's answer is compared in.
fn expected(case: &Value) -> Result<Vec<(String, Vec<usize>, String)>, String> {
    if let Some(error) = case["error"].as_str() {
        return Err(error.to_string());
    }
    Ok(case["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let data = t["data"].as_array().unwrap();
            let data = match t["dtype"].as_str().unwrap() {
                "f32" => data
                    .iter()
                    .map(|x| format!("{:08x}", (x.as_f64().unwrap() as f32).to_bits()))
                    .collect::<Vec<_>>()
                    .join(","),
                "i64" => data
                    .iter()
                    .map(|x| x.as_i64().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                other => panic!("dtype {other} is not used by the suite yet"),
            };
            (
                format!(
                    "{}:{}",
                    t["name"].as_str().unwrap(),
                    t["dtype"].as_str().unwrap()
                ),
                shape,
                data,
            )
        })
        .collect())
}

fn observed(
    answer: Result<Vec<Tensor>, GuestError>,
) -> Result<Vec<(String, Vec<usize>, String)>, String> {
    match answer {
        Ok(tensors) => Ok(tensors
            .into_iter()
            .map(|t| {
                let (dtype, data) = match &t.data {
                    TensorData::F32(v) => (
                        "f32",
                        v.iter()
                            .map(|x| format!("{:08x}", x.to_bits()))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    TensorData::I64(v) => (
                        "i64",
                        v.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    other => ("other", format!("{other:?}")),
                };
                (format!("{}:{dtype}", t.name), t.shape.clone(), data)
            })
            .collect()),
        Err(GuestError::Rejected(_)) => Err("bad_request".into()),
        Err(other) => Err(format!("{other}")),
    }
}

#[test]
fn every_language_gives_the_same_tensors_for_every_case() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(suite().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut languages: Vec<PathBuf> = std::fs::read_dir(suite().join("modules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    languages.sort();
    let names: Vec<String> = languages
        .iter()
        .map(|l| l.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for supported in ["assemblyscript", "c", "python", "rust", "zig"] {
        assert!(
            names.iter().any(|n| n == supported),
            "no conformance module for {supported}: {names:?}"
        );
    }
    assert!(cases.len() >= 10, "{cases:?}");

    let engine = GuestEngine::new(None).unwrap();
    let limits = CallLimits {
        timeout: Duration::from_secs(5),
        memory_bytes: 64 << 20,
        max_output_bytes: 1 << 20,
        ..CallLimits::default()
    };
    let mut failures = Vec::new();
    for language in &languages {
        let name = language.file_name().unwrap().to_string_lossy().into_owned();
        let wasm = std::fs::read(language.join("module.wasm")).unwrap_or_else(|_| {
            panic!(
                "{}/module.wasm is missing: run ./scripts/setup.sh (it runs build.sh there)",
                language.display()
            )
        });
        let module = engine
            .load(
                &wasm,
                &aifn_guest::ModuleConfig {
                    digest: format!("conformance-{name}"),
                    tag: format!("conformance@{name}"),
                    limits,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for case in &cases {
            let body = std::fs::read(case.join("request.txt")).unwrap();
            let want: Value =
                serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                    .unwrap();
            let request = GuestRequest {
                route: "/conformance",
                method: "POST",
                headers: Vec::new(),
                body: &body,
            };
            let got = observed(module.start().unwrap().preprocess(request));
            let want = expected(&want);
            if got != want {
                failures.push(format!(
                    "{name} / {}: expected {want:?}, got {got:?}",
                    case.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
