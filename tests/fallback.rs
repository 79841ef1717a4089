//! `spec.fallback`: when the primary model cannot keep `target_latency` at its most replicas,
//! traffic moves to the lighter model, and back when load falls. A deliberately slow primary
//! (`tests/fixtures/models/slow.onnx`, made by setup) and the churn model as the fallback, on a
//! real host with short autoscaling windows.

use crate::support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

const BODY: &str = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;

fn fallback_spec(dir: &std::path::Path, fallback_model: &std::path::Path) -> std::path::PathBuf {
    let slow = repo().join("tests/fixtures/models/slow.onnx");
    assert!(
        slow.exists(),
        "{} is missing: run ./scripts/setup.sh first",
        slow.display()
    );
    let spec = churn_spec(
        dir,
        "slow.yaml",
        &[
            ("min_replicas: 2", "min_replicas: 1"),
            ("max_replicas: 8", "max_replicas: 1"),
            ("target_latency: 20ms", "target_latency: 10ms"),
            ("id: churn_tree_v1", "id: churn_fast"),
            // One body over and over is drift; here only load may move the traffic.
            ("action: fallback", "action: alert"),
        ],
    );
    replace_line(
        &spec,
        "churn.onnx",
        &format!("    path: {}", slow.display()),
    );
    replace_line(&spec, "id: churn_logreg_v1", "    id: churn_slow");
    replace_line(
        &spec,
        "churn_fallback.onnx",
        &format!("      path: {}", fallback_model.display()),
    );
    spec
}

#[test]
fn overload_moves_traffic_to_the_fallback_and_calm_moves_it_back() {
    let state = temp_dir("fallback");
    let host = TestHost::start_autoscaling(&state, "2", "1");
    host.deploy(&fallback_spec(
        &state,
        &repo().join("functions/churn-predictor/model/churn.onnx"),
    ));

    let reply = host.post("/v1/churn", BODY);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-aifn-variant"), Some("primary"));

    // 12 clients on one replica of a slow model: p95 far over 10 ms at the ceiling.
    let switched = AtomicBool::new(false);
    let fallback_answers = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..12 {
            scope.spawn(|| {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(15) {
                    let reply = host.post("/v1/churn", BODY);
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    assert!(
                        reply.json()["churn_probability"].is_number(),
                        "{}",
                        reply.body
                    );
                    if reply.header("x-aifn-variant") == Some("fallback") {
                        switched.store(true, Ordering::Relaxed);
                        // Keep the load on a little longer, then stop.
                        if fallback_answers.fetch_add(1, Ordering::Relaxed) > 200 {
                            return;
                        }
                    }
                }
            });
        }
    });
    assert!(
        switched.load(Ordering::Relaxed),
        "no request was answered by the fallback"
    );

    // Calm: one request at a time moves traffic back to the primary.
    let variant = wait_until("back on the primary", Duration::from_secs(15), || {
        let variant = host
            .post("/v1/churn", BODY)
            .header("x-aifn-variant")
            .unwrap_or_default()
            .to_string();
        if variant == "primary" {
            return Some(variant);
        }
        // A few requests a second: this pause is the calm, not a wait for the switch.
        std::thread::sleep(Duration::from_millis(200));
        None
    });
    assert_eq!(
        variant, "primary",
        "traffic did not come back to the primary"
    );

    let metrics = host.metrics().body;
    let fallback_count = metrics
        .lines()
        .find(|l| {
            l.starts_with("aifn_variant_requests_total{") && l.contains("variant=\"fallback\"")
        })
        .unwrap_or_else(|| panic!("no fallback counter in:\n{metrics}"));
    assert!(!fallback_count.ends_with(" 0"), "{fallback_count}");
}

#[test]
fn a_fallback_must_take_the_same_inputs() {
    let state = temp_dir("fallback-bad");
    let host = TestHost::start(&state);
    let spec = fallback_spec(
        &state,
        &repo().join("tests/fixtures/models/fixed_batch.onnx"),
    );
    let output = host.cli(&["deploy", spec.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("spec.fallback.model")
            && stderr.contains("cannot take what")
            && stderr.contains("[1, 6]"),
        "{stderr}"
    );
}
