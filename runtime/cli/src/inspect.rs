//! `aifn inspect model.onnx`: a model's inputs and outputs (names, types, shapes with their
//! dynamic dimensions named), operator sets, producer and metadata, read by ONNX Runtime itself.

use aifn_model::{ModelFacts, OnnxRuntime};
use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::Path;

/// Reads `path` and asks ONNX Runtime what it declares.
pub fn inspect(path: &Path) -> anyhow::Result<ModelFacts> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let library = match crate::installed::onnxruntime() {
        Some(library) => library,
        None => aifn_model::locate_onnxruntime()?,
    };
    let runtime = OnnxRuntime::init(&library, None)?;
    runtime
        .inspect(&bytes)
        .with_context(|| format!("{} is not a model ONNX Runtime can load", path.display()))
}

/// The origin a spec's `model.runtime` can record, from what wrote the file.
pub fn origin(facts: &ModelFacts) -> Option<aifn_spec::Framework> {
    aifn_spec::Framework::from_producer(&facts.producer_name)
}

/// For people: one line per input and output, then what made the model.
pub fn describe(path: &Path, facts: &ModelFacts) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = facts
        .opsets
        .iter()
        .map(|(domain, version)| format!("{domain} {version}"))
        .collect();
    let _ = writeln!(
        out,
        "{}: {}, ONNX IR version {}, opset {}",
        path.display(),
        human_size(facts.size_bytes),
        facts.ir_version,
        opsets.join(", ")
    );
    let producer = format!("{} {}", facts.producer_name, facts.producer_version);
    let _ = writeln!(
        out,
        "producer: {}{}",
        if producer.trim().is_empty() {
            "(not recorded)"
        } else {
            producer.trim()
        },
        match origin(facts) {
            Some(framework) => format!(" (model.runtime: {})", framework.name()),
            None => String::new(),
        }
    );
    if !facts.domain.is_empty() || facts.model_version != 0 {
        let _ = writeln!(
            out,
            "domain: {}, model version {}",
            facts.domain, facts.model_version
        );
    }
    if !facts.description.is_empty() {
        let _ = writeln!(out, "description: {}", facts.description);
    }
    let width = facts
        .inputs
        .iter()
        .chain(&facts.outputs)
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    for (title, ports) in [("inputs", &facts.inputs), ("outputs", &facts.outputs)] {
        let _ = writeln!(out, "{title}:");
        for port in ports.iter() {
            let shape: Vec<String> = port.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                out,
                "  {:<width$}  {:<16} {:<6} [{}]",
                port.name,
                port.onnx_type,
                port.datatype.as_deref().unwrap_or("-"),
                shape.join(", ")
            );
        }
    }
    if !facts.metadata.is_empty() {
        let _ = writeln!(out, "metadata:");
        for (key, value) in &facts.metadata {
            let _ = writeln!(out, "  {key}: {value}");
        }
    }
    for problem in &facts.problems {
        let _ = writeln!(out, "cannot serve: {problem}");
    }
    let _ = writeln!(
        out,
        "(`?` and names are dimensions of any size; `aifn new --model {}` starts a function for it)",
        path.display()
    );
    out
}

fn human_size(bytes: usize) -> String {
    match bytes {
        0..1_000 => format!("{bytes} bytes"),
        1_000..1_000_000 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}
