//! The autoscaler on a real host: a burst of concurrent requests adds instances up to the ceiling
//! (max_replicas, capped by the cores), and quiet brings them back to min_replicas. Short windows
//! (`--autoscale-window-secs 2 --scale-down-delay-secs 1`) keep the test to a few seconds.

use crate::support;

use aifn_host::api::FunctionStatus;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

fn status(host: &TestHost) -> FunctionStatus {
    host.status("text-embedder")
}

/// Polls `status` until `check` holds, and returns that status; panics naming `what` and the
/// last status when `limit` passes first.
#[track_caller]
fn wait_for(
    host: &TestHost,
    limit: Duration,
    what: &str,
    check: impl Fn(&FunctionStatus) -> bool,
) -> FunctionStatus {
    wait_until_seen(what, limit, || {
        let s = status(host);
        if check(&s) {
            Ok(s)
        } else {
            Err(pretty(&s))
        }
    })
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
    assert_eq!(s.load.instances, 1, "{}", pretty(&s));
    let ceiling = s.scaling.ceiling;
    assert_eq!(
        ceiling,
        std::thread::available_parallelism().unwrap().get().min(4)
    );

    // 8 clients for at most 8 s, until the pool reaches its ceiling.
    let stop = AtomicBool::new(false);
    let reached = std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
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
        let s = wait_for(
            &host,
            Duration::from_secs(8),
            "scaled up to the ceiling",
            |s| s.load.instances == ceiling,
        );
        stop.store(true, Ordering::Relaxed);
        s
    });
    assert_eq!(
        reached.load.instances,
        ceiling,
        "did not scale up: {}",
        pretty(&reached)
    );

    // Quiet: back to min_replicas (1) after the window and the delay.
    let s = wait_for(&host, Duration::from_secs(15), "scaled back down", |s| {
        s.load.instances == 1
    });
    assert_eq!(s.load.instances, 1, "did not scale down: {}", pretty(&s));
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
    let churn = |host: &TestHost| host.status("churn-predictor");
    wait_until_seen("scaled to zero", Duration::from_secs(10), || {
        let s = churn(&host);
        if s.load.instances == 0 {
            Ok(())
        } else {
            Err(pretty(&s))
        }
    });
    assert_eq!(churn(&host).load.instances, 0, "did not scale to zero");
    // The next request waits for an instance to start, and is answered.
    let reply = host.post("/v1/churn", body);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.json()["churn_probability"].is_number());
    assert!(churn(&host).load.instances >= 1);
}
