//! The autoscaler on a real host: a burst of concurrent requests adds instances up to the ceiling
//! (max_replicas, capped by the cores), and quiet brings them back to min_replicas. Short windows
//! (`--autoscale-window-secs 2 --scale-down-delay-secs 1`) keep the test to a few seconds.

mod support;

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

fn status(host: &TestHost) -> Value {
    host.admin_get("/admin/v1/functions/text-embedder").json()
}

/// Polls `status` until `check` holds or `limit` passes; returns the last status.
fn wait_for(host: &TestHost, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let s = status(host);
        if check(&s) || started.elapsed() > limit {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bursts_scale_up_to_the_ceiling_and_quiet_scales_back_down() {
    let state = temp_dir("autoscale");
    let host = TestHost::start_autoscaling(&state, "2", "1");
    // One thread per instance, so a 2-core host has room for 2; 1 to 4 replicas asked.
    let spec = bundled_spec(
        "text-embedder",
        &state,
        "text-embedder.yaml",
        &[
            ("cpu: \"2\"", "cpu: \"1\""),
            ("max_batch_size: 16", "max_batch_size: 1"),
        ],
    );
    host.deploy(&spec);
    let s = status(&host);
    assert_eq!(s["load"]["instances"], 1, "{s}");
    let ceiling = s["scaling"]["ceiling"].as_u64().unwrap();
    assert_eq!(
        ceiling,
        (std::thread::available_parallelism().unwrap().get() as u64).min(4)
    );

    // 8 clients for at most 8 s, until the pool reaches its ceiling.
    let stop = AtomicBool::new(false);
    let reached = std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(8) {
                    let reply = host.post(
                        "/v1/embeddings",
                        &json!({ "inputs": "scale me up, please" }).to_string(),
                    );
                    assert_eq!(reply.status, 200, "{}", reply.body);
                }
            });
        }
        let s = wait_for(&host, Duration::from_secs(8), |s| {
            s["load"]["instances"].as_u64() == Some(ceiling)
        });
        stop.store(true, Ordering::Relaxed);
        s
    });
    assert_eq!(
        reached["load"]["instances"].as_u64(),
        Some(ceiling),
        "did not scale up: {reached}"
    );

    // Quiet: back to min_replicas (1) after the window and the delay.
    let s = wait_for(&host, Duration::from_secs(15), |s| {
        s["load"]["instances"] == 1
    });
    assert_eq!(s["load"]["instances"], 1, "did not scale down: {s}");
    // And it still answers.
    assert_eq!(
        host.post("/v1/embeddings", r#"{"inputs": "still here"}"#)
            .status,
        200
    );
}

#[test]
fn min_replicas_zero_scales_to_zero_and_a_request_brings_one_back() {
    let state = temp_dir("autoscale-zero");
    let host = TestHost::start_autoscaling(&state, "1", "0.5");
    host.deploy(&churn_spec(
        &state,
        "churn.yaml",
        &[("min_replicas: 2", "min_replicas: 0")],
    ));
    let body = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;
    assert_eq!(host.post("/v1/churn", body).status, 200);
    let churn = |host: &TestHost| host.admin_get("/admin/v1/functions/churn-predictor").json();
    let started = Instant::now();
    while churn(&host)["load"]["instances"] != 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        churn(&host)["load"]["instances"],
        0,
        "did not scale to zero"
    );
    // The next request waits for an instance to start, and is answered.
    let reply = host.post("/v1/churn", body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["churn_probability"].is_number());
    assert!(churn(&host)["load"]["instances"].as_u64().unwrap() >= 1);
}
