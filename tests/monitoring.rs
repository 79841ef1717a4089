//! `spec.monitoring` on a real host with the bundled churn predictor and its reference sample:
//! traffic like the training data raises nothing; traffic with one field shifted raises a drift
//! alert naming it, calls the webhooks, and moves the traffic to the fallback model until the
//! traffic is normal again.

use crate::support;

use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::*;

/// Waits for a webhook notice whose `event` is `event`, returning it.
fn notice(received: &mpsc::Receiver<(Instant, Value)>, event: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok((_, body)) if body["event"] == event => return body,
            Ok(_) => continue,
            Err(_) => panic!("no `{event}` webhook notice within {limit:?}"),
        }
    }
}

#[test]
fn shifted_spend_raises_a_drift_alert_moves_traffic_to_the_fallback_and_back() {
    let state = temp_dir("monitoring");
    let (hook, received) = webhook_receiver();
    let (retrain_hook, retrain) = webhook_receiver();
    let host = TestHost::start_with(
        &state,
        &["--rollout-tick-ms", "100", "--webhook-url", &hook],
    );
    // A short window evaluated often, so the test takes seconds; the rules are the bundled ones
    // plus a retraining webhook.
    let spec = churn_spec(
        &state,
        "monitored.yaml",
        &[
            (
                "window: 10m",
                "window: 3s\n    interval: 250ms\n    min_samples: 200\n    consecutive: 3",
            ),
            (
                "        action: fallback",
                &format!("        action: fallback\n      - on: drift\n        action: webhook\n        url: {retrain_hook}"),
            ),
        ],
    );
    host.deploy(&spec);

    let load = Traffic::new(1.0);
    let report = || -> Value { host.cli_json(&["monitor", "churn-predictor", "--json"]) };
    let drift = |r: &Value| r["versions"][0]["drift"].clone();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        load.start(scope, &host, [1, 2]);

        // 1. Traffic like the training data, over two windows: evaluations with enough samples,
        // and no alert.
        let evaluations_with_samples = wait_until(
            "two windows of normal traffic evaluated",
            Duration::from_secs(30),
            || {
                let d = drift(&report());
                (d["enough_samples"] == true && d["evaluations"].as_u64()? >= 24).then_some(d)
            },
        );
        assert_eq!(
            evaluations_with_samples["alerts"],
            json!([]),
            "a false alarm on normal traffic: {}",
            pretty(&evaluations_with_samples)
        );
        assert_eq!(load.fallback_answers(), 0);
        let score = evaluations_with_samples["drift_score"].as_f64().unwrap();
        assert!(score < 0.1, "drift score {score} on normal traffic");

        // 2. The spend doubles: the alert fires, naming it, within the window plus three
        // evaluations; both webhooks hear of it, and the fallback answers.
        load.set_spend(2.0);
        let shifted = Instant::now();
        let alert = notice(&received, "alert", Duration::from_secs(20));
        let took = shifted.elapsed();
        let features: Vec<&str> = alert["alert"]["features"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            features.contains(&"avg_monthly_spend"),
            "the alert names {features:?}"
        );
        assert!(
            !features.contains(&"subscription_tier")
                && !features.contains(&"support_tickets_last_30d"),
            "unshifted fields drift: {features:?}"
        );
        assert!(took < Duration::from_secs(8), "the alert took {took:?}");
        let retraining = notice(&retrain, "retrain", Duration::from_secs(10));
        assert_eq!(retraining["function"], "churn-predictor");
        assert!(!retraining["recent_inputs"].as_array().unwrap().is_empty());
        wait_until(
            "answers from the fallback model",
            Duration::from_secs(10),
            || (load.fallback_answers() > 50).then_some(()),
        );
        let during = report();
        assert_eq!(drift(&during)["on_fallback_for_drift"], true);
        let text = host.cli_ok(&["monitor", "churn-predictor"]);
        assert!(
            text.contains("avg_monthly_spend") && text.contains("DRIFTING"),
            "{text}"
        );

        // 3. Normal traffic again: the alert clears and the primary model answers.
        load.set_spend(1.0);
        notice(&received, "alert_cleared", Duration::from_secs(20));
        let primary_before = load.primary_answers();
        wait_until(
            "answers from the primary model again",
            Duration::from_secs(10),
            || (load.primary_answers() > primary_before + 50).then_some(()),
        );
        load.stop.store(true, Ordering::Relaxed);
    });

    // The audit log has both, with the figures that moved them; /metrics counts them.
    let history = host.cli_ok(&["history", "churn-predictor"]);
    assert!(
        history.contains("alert") && history.contains("alert_cleared"),
        "{history}"
    );
    let metrics = host.metrics().body;
    assert!(
        metrics.contains(r#"aifn_monitor_alerts_total{function="churn-predictor",alert="concept_drift",state="fired"} 1"#),
        "{metrics}"
    );
}

#[test]
fn labels_join_answers_into_accuracy_bad_labels_get_a_4xx_and_all_survive_kill_9() {
    let state = temp_dir("monitoring-labels");
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    host.deploy(&churn_spec(
        &state,
        "labelled.yaml",
        &[("window: 10m", "window: 10m\n    labels: { ttl: 30d }")],
    ));
    let feedback = |body: &Value| {
        request(
            &host.url("/aifn/v1/feedback/churn-predictor"),
            "POST",
            body.to_string().as_bytes(),
            &[],
        )
    };

    // Answers carry the caller's X-Request-Id, or one the host makes.
    let reply = host.post("/v1/churn", &Customers { state: 9 }.next(1.0).to_string());
    let made = reply.header("x-request-id").unwrap().to_string();
    assert!(
        made.len() == 20 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made}"
    );
    let mut customers = Customers { state: 5 };
    let mut answers = Vec::new();
    for i in 0..60 {
        let id = format!("customer-{i}");
        let reply = request(
            &host.url("/v1/churn"),
            "POST",
            customers.next(1.0).to_string().as_bytes(),
            &[("x-request-id", &id)],
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("x-request-id"), Some(id.as_str()));
        answers.push((id, reply.json()["churn_probability"].as_f64().unwrap()));
    }

    // Labels for the first 40; the rest wait.
    let mut right = 0;
    for (i, (id, probability)) in answers.iter().take(40).enumerate() {
        let label = u8::from(i % 3 == 0);
        let reply = feedback(&json!({ "request_id": id, "label": label }));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!((reply.json()["prediction"].as_f64().unwrap() - probability).abs() < 1e-6);
        right += usize::from((*probability >= 0.5) == (label == 1));
    }
    let accuracy = right as f64 / 40.0;

    // A caller's mistakes are 4xx with a JSON error, never a 5xx.
    for (body, status, code) in [
        (
            json!({"request_id": "never-sent", "label": 1}),
            404,
            "unknown_request_id",
        ),
        (
            json!({"request_id": "customer-0", "label": 0}),
            409,
            "already_labelled",
        ),
        (
            json!({"request_id": "customer-50", "label": "yes"}),
            400,
            "invalid_label",
        ),
        (json!({"label": 1}), 400, "bad_request"),
    ] {
        let reply = feedback(&body);
        assert_eq!(
            (reply.status, reply.error_code()),
            (status, code.to_string()),
            "{body}: {}",
            reply.body
        );
    }
    let reply = host.get("/aifn/v1/feedback/churn-predictor");
    assert_eq!(reply.status, 405);
    let reply = request(&host.url("/aifn/v1/feedback/nobody"), "POST", b"{}", &[]);
    assert_eq!(
        (reply.status, reply.error_code()),
        (404, "not_found".to_string())
    );

    let report: Value = host.cli_json(&["monitor", "churn-predictor", "--json"]);
    let measured = report["versions"][0]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        (measured - accuracy).abs() < 1e-12,
        "{measured} vs {accuracy}"
    );

    // Unlabelled answers, most uncertain first, for a labelling process.
    let asked: Value = host.cli_json(&["monitor", "churn-predictor", "--to-label"]);
    let asked: Vec<(String, f64)> = asked["to_label"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let a = &a["request"];
            (
                a["request_id"].as_str().unwrap().to_string(),
                a["prediction"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(!asked.is_empty());
    assert!(asked
        .iter()
        .all(|(id, _)| !answers[..40].iter().any(|(done, _)| done == id)));
    assert!(asked
        .windows(2)
        .all(|w| (w[0].1 - 0.5).abs() <= (w[1].1 - 0.5).abs()));

    // Once the monitor has written them (within about a second), kill -9 loses none of it.
    wait_until("predictions written", Duration::from_secs(10), || {
        let report: Value = host.cli_json(&["monitor", "churn-predictor", "--json"]);
        (report["versions"][0]["drift"]["labels"]["unsaved"] == 0).then_some(())
    });
    host.kill();
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    let report: Value = host.cli_json(&["monitor", "churn-predictor", "--json"]);
    let measured = report["versions"][0]["metrics"]["accuracy"]
        .as_f64()
        .unwrap();
    assert!(
        (measured - accuracy).abs() < 1e-12,
        "after kill -9: {measured} vs {accuracy}"
    );
    let reply = request(
        &host.url("/aifn/v1/feedback/churn-predictor"),
        "POST",
        json!({"request_id": "customer-55", "label": 1})
            .to_string()
            .as_bytes(),
        &[],
    );
    assert_eq!(
        reply.status, 200,
        "an answer from before the kill: {}",
        reply.body
    );
}

#[test]
fn a_drift_alert_with_action_rollback_puts_the_previous_version_back() {
    let state = temp_dir("monitoring-rollback");
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    // Version 1 only records alerts; version 2 rolls back on drift.
    host.deploy(&churn_spec(
        &state,
        "v1.yaml",
        &[("action: fallback", "action: alert")],
    ));
    host.deploy(&churn_spec(
        &state,
        "v2.yaml",
        &[
            (
                "window: 10m",
                "window: 3s\n    interval: 250ms\n    min_samples: 200\n    consecutive: 3",
            ),
            ("action: fallback", "action: rollback"),
        ],
    ));
    assert_eq!(
        host.post("/v1/churn", &Customers { state: 4 }.next(1.0).to_string())
            .header("x-aifn-version"),
        Some("2")
    );

    let load = Traffic::new(1.0);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        load.start(scope, &host, [7, 8]);
        wait_until(
            "version 2 has a full window",
            Duration::from_secs(30),
            || {
                let report: Value = host.cli_json(&["monitor", "churn-predictor", "--json"]);
                (report["versions"][0]["drift"]["enough_samples"] == true).then_some(())
            },
        );
        load.set_spend(2.0);
        wait_until("version 1 serving again", Duration::from_secs(20), || {
            let reply = host.post("/v1/churn", &Customers { state: 6 }.next(1.0).to_string());
            (reply.header("x-aifn-version") == Some("1")).then_some(())
        });
        load.stop.store(true, Ordering::Relaxed);
    });
    let history = host.cli_ok(&["history", "churn-predictor"]);
    assert!(
        history.contains("rollback")
            && history.contains("monitoring: concept_drift on avg_monthly_spend"),
        "{history}"
    );
}

#[test]
fn a_drift_alert_with_action_freeze_rollout_holds_a_canary_at_its_step_until_it_clears() {
    let state = temp_dir("monitoring-freeze");
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    host.deploy(&churn_spec(
        &state,
        "v1.yaml",
        &[("action: fallback", "action: alert")],
    ));
    // The canary's monitor freezes the rollout on drift.
    let canary = churn_spec(
        &state,
        "v2.yaml",
        &[
            (
                "window: 10m",
                "window: 2s\n    interval: 200ms\n    min_samples: 50\n    consecutive: 3",
            ),
            ("action: fallback", "action: freeze_rollout"),
            (
                "  endpoints:",
                "  rollout:\n    strategy: canary\n    steps: [50, 100]\n    step_duration: 3s\n    watch: 1s\n    window: 2s\n    min_requests: 10\n  endpoints:",
            ),
        ],
    );
    let load = Traffic::new(2.0); // drifted from the start
    let rollout = |host: &TestHost| host.status("churn-predictor").rollout;
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        load.start(scope, &host, [11, 12]);
        host.cli_ok(&["deploy", canary.to_str().unwrap()]);
        let frozen = wait_until(
            "the canary frozen by its drift alert",
            Duration::from_secs(20),
            || rollout(&host).filter(|r| r.frozen),
        );
        assert_eq!(frozen.candidate_share, 50.0, "{}", pretty(&frozen));
        // For two of its step's 3 s, a frozen canary stays at half the traffic.
        let held_since = Instant::now();
        while held_since.elapsed() < Duration::from_secs(6) {
            let held = rollout(&host).expect("the rollout is still in progress");
            assert!(
                held.frozen && held.candidate_share == 50.0,
                "{}",
                pretty(&held)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // Normal traffic: the alert clears, and the canary goes on to take all of it.
        load.set_spend(1.0);
        wait_until("the rollout finished", Duration::from_secs(60), || {
            rollout(&host).is_none().then_some(())
        });
        load.stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(host.status("churn-predictor").version, 2);
}
