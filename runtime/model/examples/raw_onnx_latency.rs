//! Baseline for the HTTP benchmarks: a model run in-process through ONNX Runtime (with the intra-op
//! threads a host instance gives it: `resources.cpu`, default 1), no HTTP, no WASM. The inputs are an Open Inference
//! Protocol v2 request body, the same one the host's `/v2/models/{name}/infer` takes. Prints p50/p99
//! in microseconds.
//!
//! cargo run --release -p aifn-model --example raw_onnx_latency -- MODEL.onnx V2_REQUEST.json [ITERATIONS] [THREADS]
//!
//! With `AIFN_SHARED_WEIGHTS=1` the session is made as the host makes them (over shared weights).

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: raw_onnx_latency MODEL.onnx V2_REQUEST.json [ITERATIONS] [THREADS]");
        std::process::exit(2);
    }
    let iterations: usize = args
        .get(3)
        .map_or(20_000, |n| n.parse().expect("ITERATIONS"));
    let threads: usize = args.get(4).map_or(1, |n| n.parse().expect("THREADS"));
    let request = std::fs::read(&args[2]).expect("v2 request file");
    let inputs = aifn_tensor::decode_v2_request(&request).unwrap_or_else(|e| panic!("{e}"));

    let library = aifn_model::locate_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&args[1]).expect("model file");
    // AIFN_SHARED_WEIGHTS=1: a session as the host makes them, over weights shared between sessions.
    let shared = std::env::var("AIFN_SHARED_WEIGHTS").is_ok_and(|v| v == "1");
    let share_in =
        shared.then(|| std::env::temp_dir().join(format!("aifn-raw-{}", std::process::id())));
    let runtime = aifn_model::OnnxRuntime::init(&library, share_in.clone()).expect("ONNX Runtime");
    // Without a directory to share in, the model's sessions each load their own copy.
    let model = runtime.model(bytes).expect("model");
    let mut session = model.session(threads).expect("model");

    let warmup = (iterations / 10).clamp(10, 1000);
    for _ in 0..warmup {
        let checked = session.signature().check_inputs(inputs.clone()).unwrap();
        session.run(checked).unwrap();
    }
    let mut micros: Vec<f64> = (0..iterations)
        .map(|_| {
            let tensors = inputs.clone();
            let started = Instant::now();
            // Checking is part of what a request pays, as in the host.
            let checked = session.signature().check_inputs(tensors).unwrap();
            session.run(checked).unwrap();
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
    drop((session, model));
    if let Some(dir) = share_in {
        let _ = std::fs::remove_dir_all(dir);
    }
}
