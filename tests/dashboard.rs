//! The dashboard in a real browser: Debian's headless chromium, driven by playwright-core
//! (`tests/dashboard/drive.mjs`), against a real host with the churn predictor (monitored, with
//! labels) and the sentiment analyzer. The page must load with no console error and no request
//! leaving the host, show both functions, move its charts as requests arrive, show a rollout, and
//! show a drift alert and the fallback taking the traffic once drifted customers come.
//! Screenshots are kept in `target/tmp/dashboard-shots/`.

use crate::support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;

/// The browser driver: one JSON command per line, one JSON answer per line.
struct Browser {
    child: Child,
    commands: ChildStdin,
    answers: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let driver = repo().join("tests/dashboard/drive.mjs");
        assert!(
            repo()
                .join("tests/dashboard/node_modules/playwright-core")
                .exists(),
            "playwright-core is not installed: run ./scripts/setup.sh"
        );
        let mut child = Command::new("node")
            .arg(driver)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs tests/dashboard/drive.mjs");
        let commands = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            commands,
            answers,
        }
    }

    fn send(&mut self, command: Value) -> Value {
        writeln!(self.commands, "{command}").unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the driver answered {line:?} ({e}) to {command}"));
        assert_eq!(answer["ok"], true, "{command} failed: {}", answer["error"]);
        answer
    }

    /// Waits until `expression` is truthy in the page; its value, and when, after the page opened.
    fn wait(&mut self, what: &str, expression: &str, limit: Duration) -> (Value, u64) {
        let command = json!({ "wait": expression, "timeout_ms": limit.as_millis() as u64 });
        writeln!(self.commands, "{command}").unwrap();
        let mut line = String::new();
        self.answers.read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        if answer["ok"] != true {
            let text = self.text();
            panic!(
                "the dashboard never showed {what}: {}\npage text:\n{text}",
                answer["error"]
            );
        }
        (
            answer["value"].clone(),
            answer["since_open_ms"].as_u64().unwrap(),
        )
    }

    fn text(&mut self) -> String {
        self.send(json!({ "eval": "document.body.innerText" }))["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JavaScript expression: the chart `chart` of function `function` has at least `points`
/// points and its first line's last value is above 0.
fn chart_moves(function: &str, chart: &str, points: usize) -> String {
    format!(
        "(() => {{ const c = document.querySelector('section[data-function=\"{function}\"] svg[data-chart=\"{chart}\"]'); \
         return c && Number(c.dataset.points) >= {points} && Number(c.dataset.last) > 0 ? Number(c.dataset.last) : false; }})()"
    )
}

fn card_says(function: &str, text: &str) -> String {
    format!(
        "(() => {{ const c = document.querySelector('section[data-function=\"{function}\"]'); \
         return !!c && c.innerText.includes({text:?}); }})()"
    )
}

#[test]
fn the_dashboard_shows_functions_live_charts_a_rollout_and_a_drift_alert_in_chromium() {
    let state = temp_dir("dashboard");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let host = TestHost::start_with(&state, &["--rollout-tick-ms", "100"]);
    // A short drift window evaluated often, and labels kept, so that the test takes seconds.
    host.deploy(&churn_spec(
        &state,
        "churn.yaml",
        &[(
            "window: 10m",
            "window: 3s\n    interval: 250ms\n    min_samples: 200\n    consecutive: 3\n    labels: { ttl: 1d }",
        )],
    ));
    host.deploy(&bundled_spec(
        "sentiment-analyzer",
        &state,
        "sentiment.yaml",
        &[],
    ));

    let load = Traffic::new(1.0);
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&load.stop);
        load.start(scope, &host, [1, 2]);
        // Labels for earlier answers (a second old: the monitor keeps answers off the request
        // path), the model's answer taken as right four times in five.
        scope.spawn(|| {
            let mut customers = Customers { state: 7 };
            let started = Instant::now();
            let mut sent = 0u64;
            let mut unlabelled = std::collections::VecDeque::new();
            while !load.stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
            {
                let reply = host.post("/v1/churn", &customers.next(1.0).to_string());
                assert_eq!(reply.status, 200, "{}", reply.body);
                let id = reply.header("x-request-id").unwrap().to_string();
                let churns = reply.json()["churn_probability"].as_f64().unwrap() >= 0.5;
                sent += 1;
                let label = u8::from(churns != sent.is_multiple_of(5));
                unlabelled.push_back((Instant::now(), id, label));
                while let Some((at, id, label)) = unlabelled.front() {
                    if at.elapsed() < Duration::from_secs(1) {
                        break;
                    }
                    let body = json!({ "request_id": id, "label": label }).to_string();
                    let answer = host.post("/aifn/v1/feedback/churn-predictor", &body);
                    // The fallback's answers are not the model's predictions, and a sample the
                    // monitor dropped under load is not kept: neither takes a label.
                    assert!(
                        answer.status == 200 || answer.error_code() == "unknown_request_id",
                        "{}",
                        answer.body
                    );
                    unlabelled.pop_front();
                }
                std::thread::sleep(Duration::from_millis(20)); // about 50 labels a second
            }
        });

        // `aifn dashboard` prints the address, with the admin token in its fragment.
        let url = host.cli_ok(&["dashboard"]).trim().to_string();
        assert!(
            url.starts_with(&format!("{}/dashboard#token=", host.admin_base)),
            "{url}"
        );
        let mut browser = Browser::start();
        browser.send(json!({ "open": url }));

        // Both functions, and the first chart with two points.
        browser.wait(
            "both functions",
            "document.querySelectorAll('section.function').length === 2",
            Duration::from_secs(20),
        );
        let (_, first_chart_ms) = browser.wait(
            "the first chart",
            &chart_moves("churn-predictor", "requests", 2),
            Duration::from_secs(20),
        );
        // The token left the address bar.
        let address = browser.send(json!({ "eval": "location.href" }))["value"].clone();
        assert!(!address.as_str().unwrap().contains("token"), "{address}");

        // The charts move as requests arrive.
        for chart in [
            "requests", "latency", "replicas", "batch", "drift", "accuracy",
        ] {
            let points = if chart == "requests" { 5 } else { 2 };
            browser.wait(
                &format!("the {chart} chart moving"),
                &chart_moves("churn-predictor", chart, points),
                Duration::from_secs(30),
            );
        }
        browser.wait(
            "the audit history",
            &card_says("churn-predictor", "deploy"),
            Duration::from_secs(10),
        );
        browser.wait(
            "the reference and current histograms",
            "!!document.querySelector('section[data-function=\"churn-predictor\"] svg[data-feature=\"avg_monthly_spend\"]')",
            Duration::from_secs(20),
        );
        let text = browser.text();
        assert!(!text.contains("drifting"), "drift before any: {text}");
        browser.send(json!({ "shot": shots.join("functions.png") }));

        // A canary of the sentiment analyzer: its rollout shows, with its step.
        let canary = bundled_spec(
            "sentiment-analyzer",
            &state,
            "sentiment-v2.yaml",
            &[("timeout: 200ms", "timeout: 250ms")],
        );
        let deployed = host.cli(&["deploy", canary.to_str().unwrap(), "--canary"]);
        assert!(
            deployed.status.success(),
            "{}",
            String::from_utf8_lossy(&deployed.stderr)
        );
        browser.wait(
            "the rollout",
            &card_says("sentiment-analyzer", "rollout to v2"),
            Duration::from_secs(20),
        );
        browser.wait(
            "the rollout's step",
            &card_says("sentiment-analyzer", "step 1 of 3"),
            Duration::from_secs(5),
        );
        browser.send(json!({ "shot": shots.join("rollout.png") }));

        // Drifted customers: the alert, then the spec's action (the fallback model) show.
        load.set_spend(2.0);
        browser.wait(
            "the drift alert",
            &card_says("churn-predictor", "drifting: avg_monthly_spend"),
            Duration::from_secs(30),
        );
        browser.wait(
            "the fallback serving",
            &card_says("churn-predictor", "on the fallback model"),
            Duration::from_secs(30),
        );
        browser.wait(
            "the alert in the alerts table",
            &card_says("churn-predictor", "concept_drift"),
            Duration::from_secs(10),
        );
        assert!(load.fallback_answers() > 0);
        browser.send(json!({ "shot": shots.join("drift.png") }));

        // No console error, and no request left the host.
        let report = browser.send(json!({ "report": true }));
        assert_eq!(report["console_errors"], json!([]), "{}", pretty(&report));
        let requests = report["requests"].as_array().unwrap();
        assert!(requests.len() > 20, "{}", pretty(&report));
        for request in requests {
            let request = request.as_str().unwrap();
            assert!(
                request.starts_with(&format!("{}/", host.admin_base)),
                "a request off the host: {request}"
            );
        }
        let bytes = report["dashboard_bytes"].as_u64().unwrap();
        assert!(bytes > 1000 && bytes < 100_000, "{bytes} bytes");
        println!("dashboard: {bytes} bytes, first chart after {first_chart_ms} ms");
        std::fs::write(
            shots.join("figures.json"),
            pretty(&json!({ "dashboard_bytes": bytes, "first_chart_ms": first_chart_ms })),
        )
        .unwrap();
    });
}

#[test]
fn the_dashboard_files_are_served_without_data_and_its_data_needs_the_token() {
    let state = temp_dir("dashboard-files");
    let host = TestHost::start(&state);
    let page = request(&host.admin_url("/dashboard"), "GET", b"", &[]);
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("/dashboard/dashboard.js"),
        "{}",
        page.body
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    for (path, kind) in [
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ] {
        let file = request(&host.admin_url(path), "GET", b"", &[]);
        assert_eq!(file.status, 200, "{path}");
        assert!(file.header("content-type").unwrap().starts_with(kind));
    }
    let missing = request(&host.admin_url("/dashboard/nothing.js"), "GET", b"", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
    // What the page reads needs the admin token.
    let data = request(&host.admin_url("/admin/v1/functions"), "GET", b"", &[]);
    assert_eq!(data.status, 401);
    // On the data plane there is no dashboard.
    assert_eq!(host.get("/dashboard").status, 404);
}
