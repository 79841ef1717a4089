//! Per-request cost of a module: instantiate (fresh sandbox), preprocess, and both together.
//!
//! cargo run --release -p aifn-guest --example call_overhead -- MODULE.wasm BODY [ITERATIONS] [request|instance]
//!
//! The last argument is the module's isolation: `request` (default) instantiates afresh for every
//! call; `instance` reuses instances, so "instantiate" is then taking an idle one.

use aifn_guest::{CallLimits, GuestEngine, GuestRequest};
use aifn_spec::Isolation;
use std::time::{Duration, Instant};

fn percentile(mut micros: Vec<f64>, q: f64) -> f64 {
    micros.sort_by(|a, b| a.partial_cmp(b).unwrap());
    micros[((micros.len() - 1) as f64 * q) as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: call_overhead MODULE.wasm BODY [ITERATIONS] [request|instance]");
        std::process::exit(2);
    }
    let wasm = std::fs::read(&args[1]).expect("module file");
    let body = args[2].as_bytes();
    let iterations: usize = args
        .get(3)
        .map_or(20_000, |n| n.parse().expect("ITERATIONS"));
    let isolation = match args.get(4).map(String::as_str) {
        None | Some("request") => Isolation::Request,
        Some("instance") => Isolation::Instance,
        Some(other) => panic!("isolation `{other}`: expected request or instance"),
    };
    let engine = GuestEngine::new(None).expect("engine");
    let limits = CallLimits {
        timeout: Duration::from_secs(1),
        memory_bytes: 64 << 20,
        max_output_bytes: 1 << 20,
        ..CallLimits::default()
    };
    let load = |engine: &GuestEngine| {
        engine
            .load(
                &wasm,
                &aifn_guest::ModuleConfig {
                    digest: "bench".into(),
                    tag: "bench".into(),
                    limits,
                    isolation,
                    ..Default::default()
                },
            )
            .expect("module")
    };
    let started = Instant::now();
    let module = load(&engine);
    println!("compile_ms={:.1}", started.elapsed().as_secs_f64() * 1e3);

    // What a restart costs: the compiled artifact is cached by digest and read back.
    let cache = std::env::temp_dir().join(format!("aifn-call-overhead-{}", std::process::id()));
    load(&GuestEngine::new(Some(cache.clone())).expect("engine")); // writes the cache
    let restarted = GuestEngine::new(Some(cache.clone())).expect("engine");
    let started = Instant::now();
    load(&restarted);
    println!(
        "cached_load_ms={:.1}",
        started.elapsed().as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&cache);

    // `call` below covers preprocess and tearing the instance down.
    let (mut instantiate, mut call) = (Vec::new(), Vec::new());
    for i in 0..iterations + 1000 {
        let t0 = Instant::now();
        let mut guest = module.start().expect("instantiate");
        let t1 = Instant::now();
        let request = GuestRequest {
            route: "/bench",
            method: "POST",
            headers: Vec::new(),
            body,
        };
        guest.preprocess(request).expect("preprocess");
        drop(guest); // returning the instance's slot to the pool is part of the cost
        let t2 = Instant::now();
        if i >= 1000 {
            instantiate.push((t1 - t0).as_secs_f64() * 1e6);
            call.push((t2 - t1).as_secs_f64() * 1e6);
        }
    }
    let total: Vec<f64> = instantiate.iter().zip(&call).map(|(a, b)| a + b).collect();
    println!(
        "instantiate_p50_us={:.1} preprocess_and_drop_p50_us={:.1} total_p50_us={:.1} total_p99_us={:.1}",
        percentile(instantiate, 0.5),
        percentile(call, 0.5),
        percentile(total.clone(), 0.5),
        percentile(total, 0.99)
    );
}
