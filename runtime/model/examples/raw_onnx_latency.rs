//! Baseline for the HTTP benchmark: the same model run in-process through ONNX Runtime, no HTTP, no
//! WASM. Prints p50/p99 in microseconds.
//!
//! cargo run --release -p aifn-model --example raw_onnx_latency -- MODEL.onnx INPUT_NAME ROWS COLS [ITERATIONS]

use aifn_tensor::{Tensor, TensorData};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: raw_onnx_latency MODEL.onnx INPUT_NAME ROWS COLS [ITERATIONS]");
        std::process::exit(2);
    }
    let (model, input) = (&args[1], &args[2]);
    let rows: usize = args[3].parse().expect("ROWS");
    let cols: usize = args[4].parse().expect("COLS");
    let iterations: usize = args
        .get(5)
        .map_or(20_000, |n| n.parse().expect("ITERATIONS"));

    let library = aifn_model::locate_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    let runtime = aifn_model::OnnxRuntime::init(&library).expect("ONNX Runtime");
    let bytes = std::fs::read(model).expect("model file");
    let mut session = runtime.load(&bytes, 1).expect("model");
    let data: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32).collect();
    let make = || {
        Tensor::new(
            input.clone(),
            vec![rows, cols],
            TensorData::F32(data.clone()),
        )
        .unwrap()
    };

    for _ in 0..1000 {
        session.run(vec![make()]).unwrap();
    }
    let mut micros: Vec<f64> = (0..iterations)
        .map(|_| {
            let tensor = make();
            let started = Instant::now();
            session.run(vec![tensor]).unwrap();
            started.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    micros.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!(
        "raw_onnx p50_us={:.1} p99_us={:.1} iterations={iterations}",
        at(0.5),
        at(0.99)
    );
}
