//! Overhead of serving a model over HTTP, measured in pairs: each iteration runs the model once
//! in-process through ONNX Runtime (one intra-op thread, as an instance runs it) and then sends
//! one request to a running host, so both see the same machine at the same moment. On a shared
//! machine whose speed drifts by several milliseconds from minute to minute, the median of the
//! per-pair differences is far steadier than two separately measured medians.
//!
//! cargo run --release -p aifn --example paired_latency -- MODEL.onnx V2_REQUEST.json URL BODY [PAIRS] [THREADS]

use std::time::{Duration, Instant};

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: paired_latency MODEL.onnx V2_REQUEST.json URL BODY [PAIRS] [THREADS]");
        std::process::exit(2);
    }
    let (model, v2, url, body) = (&args[1], &args[2], &args[3], args[4].as_bytes());
    let pairs: usize = args.get(5).map_or(300, |n| n.parse().expect("PAIRS"));
    let threads: usize = args.get(6).map_or(1, |n| n.parse().expect("THREADS"));

    let inputs = aifn_tensor::decode_v2_request(&std::fs::read(v2).expect("v2 request file"))
        .unwrap_or_else(|e| panic!("{e}"));
    let library = aifn_model::locate_onnxruntime().unwrap_or_else(|e| panic!("{e}"));
    let runtime = aifn_model::OnnxRuntime::init(&library, None).expect("ONNX Runtime");
    let mut session = runtime
        .load(&std::fs::read(model).expect("model file"), threads)
        .expect("model");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let post = || {
        let mut response = agent
            .post(url)
            .header("content-type", "application/json")
            .send(body)
            .expect("request");
        response.body_mut().read_to_vec().expect("response body");
    };

    for _ in 0..20 {
        let checked = session.signature().check_inputs(inputs.clone()).unwrap();
        session.run(checked).unwrap();
        post();
    }
    let (mut raw, mut http, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let tensors = inputs.clone();
        let started = Instant::now();
        // Checking is part of what a request pays, as in the host.
        let checked = session.signature().check_inputs(tensors).unwrap();
        session.run(checked).unwrap();
        let r = started.elapsed().as_secs_f64() * 1e6;
        let started = Instant::now();
        post();
        let h = started.elapsed().as_secs_f64() * 1e6;
        raw.push(r);
        http.push(h);
        overhead.push(h - r);
    }
    println!(
        "raw_p50_us={:.0} http_p50_us={:.0} overhead_p50_us={:.0} pairs={pairs}",
        median(raw),
        median(http),
        median(overhead)
    );
}
