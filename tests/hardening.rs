//! Safe to expose: the findings of the hardening issue, each against a real host. v2 raw tensors
//! are bounded and closed where a module would be bypassed; a merge that padding would blow up
//! runs request by request; probes tell strangers nothing; connections are capped; the control
//! plane has its own listener and its token goes only to its own host; the state directory is the
//! owner's; the CLI survives a closed pipe. (The bad-request table is `bad_requests.rs`; kill -9 at
//! any moment is `crash_consistency.rs`.)

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

/// A v2 body of the text-embedder's three INT64 inputs, all of `shape` and filled with 1s.
fn embedder_v2(rows: usize, columns: usize) -> String {
    let data = vec!["1"; rows * columns].join(",");
    let input = |name: &str| {
        format!(
            r#"{{"name":"{name}","shape":[{rows},{columns}],"datatype":"INT64","data":[{data}]}}"#
        )
    };
    format!(
        r#"{{"inputs":[{},{},{}]}}"#,
        input("input_ids"),
        input("attention_mask"),
        input("token_type_ids")
    )
}

#[test]
fn padded_batches_over_the_byte_limit_run_one_by_one_and_the_host_keeps_serving() {
    let dir = temp_dir("hardening-batch");
    // 64 KiB of merged input at most: [1, 300] and [300, 1] would pad to [301, 300] x 3 inputs.
    let host = TestHost::start_with(&dir.join("state"), &["--max-batch-bytes", "65536"]);
    host.deploy(&bundled_spec(
        "text-embedder",
        &dir,
        "embedder.yaml",
        &[("max_shape: [32, 256]", "max_shape: [512, 512]")],
    ));
    let (wide, tall) = (embedder_v2(1, 300), embedder_v2(300, 1));
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let body = if i % 2 == 0 { &wide } else { &tall };
                let url = host.url("/v2/models/text-embedder/infer");
                scope.spawn(move || request(&url, "POST", body.as_bytes(), &[]))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    assert_eq!(host.get("/healthz").status, 200);
}

#[test]
fn v2_is_closed_where_a_module_would_be_bypassed_and_bounded_where_open() {
    let dir = temp_dir("hardening-v2");
    let host = TestHost::start(&dir.join("state"));
    // The churn predictor has a module; without `v2.enabled` its raw v2 route does not exist.
    host.deploy(&churn_spec(
        &dir,
        "closed.yaml",
        &[("    enabled: true\n", "")],
    ));
    let body =
        r#"{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[1,2,3,0,0,1]}]}"#;
    let closed = host.post("/v2/models/churn-predictor/infer", body);
    assert_eq!(
        (closed.status, closed.error_code().as_str()),
        (404, "not_found")
    );
    assert_eq!(host.get("/v2/models/churn-predictor").status, 404);

    // Opened with `max_shape: [256, 6]` (the bundled spec): 257 rows are over it, with a 413.
    host.deploy(&churn_spec(&dir, "open.yaml", &[]));
    assert_eq!(
        host.post("/v2/models/churn-predictor/infer", body).status,
        200
    );
    let rows = vec!["1,2,3,0,0,1"; 257].join(",");
    let over = format!(
        r#"{{"inputs":[{{"name":"features","shape":[257,6],"datatype":"FP32","data":[{rows}]}}]}}"#
    );
    let reply = host.post("/v2/models/churn-predictor/infer", &over);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "tensor_too_large"),
        "{}",
        reply.body
    );
    let metrics = host.metrics().body;
    assert!(
        metrics.contains(r#"aifn_limit_hits_total{limit="tensor_elements"} 1"#),
        "{metrics}"
    );
}

#[test]
fn model_metadata_needs_the_endpoints_credentials_and_probes_name_nothing() {
    let dir = temp_dir("hardening-meta");
    let host = TestHost::start(&dir.join("state"));
    host.cli_ok(&[
        "models",
        "push",
        "sentiment_model_v3",
        repo()
            .join("functions/sentiment-analyzer/model/sentiment.onnx")
            .to_str()
            .unwrap(),
    ]);
    host.deploy(&repo().join("examples/sentiment-analyzer.yaml"));
    assert_eq!(host.get("/v2/models/sentiment-analyzer").status, 401);
    assert_eq!(host.get("/v2/models/sentiment-analyzer/ready").status, 401);
    let key = host.new_key("sentiment-analyzer");
    let bearer = format!("Bearer {key}");
    let meta = request(
        &host.url("/v2/models/sentiment-analyzer"),
        "GET",
        b"",
        &[("authorization", &bearer)],
    );
    assert_eq!(meta.status, 200, "{}", meta.body);

    // The public probe says ready or not; the names are on the control plane only.
    let public = host.get("/readyz");
    assert_eq!(public.json(), serde_json::json!({ "ready": true }));
    let private = request(&host.admin_url("/readyz"), "GET", b"", &[]);
    assert!(
        private.body.contains("sentiment-analyzer"),
        "{}",
        private.body
    );
}

#[test]
fn connections_over_the_cap_get_a_503_and_normal_requests_succeed_once_idle_ones_expire() {
    let dir = temp_dir("hardening-connections");
    let host = TestHost::start_with(
        &dir.join("state"),
        &["--max-connections", "200", "--header-timeout-ms", "4000"],
    );
    host.deploy(&churn_spec(&dir, "churn.yaml", &[]));
    let pid = host.pid();
    let rss = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss();
    let address = host.base.trim_start_matches("http://").to_string();
    // 2,000 idle connections: 200 are held (until the idle timeout, 4 s), the others refused at once.
    let mut idle: Vec<TcpStream> = (0..2000)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    let mut refused = 0;
    for stream in idle.iter_mut().skip(1950) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_connections") {
            refused += 1;
        }
    }
    assert_eq!(refused, 50, "connections beyond the cap are answered 503");
    let held = rss();
    assert!(
        held < before + (64 << 20),
        "2,000 connections took {} MiB",
        (held - before) >> 20
    );
    // The held ones are closed after the idle (header read) timeout; then a normal request works.
    let body = churn_expectations()[0].0.to_string();
    let normal = format!(
        "POST /v1/churn HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    wait_until("a normal request succeeds", Duration::from_secs(20), || {
        // A refused attempt (503, or the connection closed under the write) is tried again.
        let mut stream = TcpStream::connect(&address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(normal.as_bytes()).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200").then_some(())
    });
    let metrics = host.metrics().body;
    assert!(
        metrics.contains(r#"aifn_limit_hits_total{limit="connections"}"#),
        "{metrics}"
    );
    for stream in &mut idle {
        let _ = stream.write_all(b"");
    }
}

#[test]
fn the_state_is_the_owners_and_the_admin_token_goes_only_to_its_own_host() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("hardening-state");
    let host = TestHost::start(&dir.join("state"));
    let mode = std::fs::metadata(&host.state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    let recorded = std::fs::read_to_string(host.state.join("admin-address")).unwrap();
    assert_eq!(recorded, host.admin_base);

    // Without --token, the CLI reads the local token, and sends it only to the recorded address.
    let cli = |target: &str| {
        Command::new(env!("CARGO_BIN_EXE_aifn"))
            .args(["ls", "--host", target, "--state-dir"])
            .arg(&host.state)
            .env_remove("AIFN_ADMIN_TOKEN")
            .env("AIFN_LOG", "off")
            .output()
            .unwrap()
    };
    let elsewhere = cli("http://127.0.0.1:9");
    assert!(!elsewhere.status.success());
    let said = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(said.contains("belongs to the host at"), "{said}");
    std::fs::write(host.state.join("admin-token"), ADMIN_TOKEN).unwrap();
    assert!(cli(&host.admin_base).status.success());
}

#[test]
fn the_cli_exits_quietly_when_its_output_pipe_closes() {
    let dir = temp_dir("hardening-pipe");
    let host = TestHost::start(&dir.join("state"));
    let spec = churn_spec(&dir, "churn.yaml", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args(["deploy"])
        .arg(&spec)
        .env("AIFN_HOST", &host.admin_base)
        .env("AIFN_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // `| head -0`
    let output = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!said.contains("panicked"), "{said}");
}

#[test]
fn dangerous_capability_grants_are_refused_at_validation() {
    let dir = temp_dir("hardening-grants");
    for (grant, says) in [
        ("read_dirs: { /: /data }", "may not be granted"),
        ("read_dirs: { /proc/self: /data }", "no module reads /proc"),
        ("read_dirs: { /srv/../etc: /data }", "must not contain `..`"),
    ] {
        let spec = hostile_spec(
            &dir,
            &[(
                "    timeout: 100ms\n",
                &format!("    timeout: 100ms\n    capabilities: {{ {grant} }}\n"),
            )],
        );
        let output = Command::new(env!("CARGO_BIN_EXE_aifn"))
            .arg("validate")
            .arg(&spec)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{grant} was accepted: {said}");
        assert!(said.contains(says), "{grant}: {said}");
    }
}
