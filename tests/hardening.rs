//! Safe to expose: the findings of the hardening issue, each against a real host. v2 raw tensors
//! are bounded and closed where a module would be bypassed; a merge that padding would blow up
//! runs request by request; probes tell strangers nothing; connections are capped; the control
//! plane has its own listener and its token goes only to its own host; the state directory is the
//! owner's; the CLI survives a closed pipe. (The bad-request table is `bad_requests.rs`; kill -9 at
//! any moment is `crash_consistency.rs`.)

use crate::support;

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
fn connections_over_the_cap_get_a_503_and_normal_requests_succeed_once_idle_ones_close() {
    let dir = temp_dir("hardening-connections");
    let host = TestHost::start_with(
        &dir.join("state"),
        &["--max-connections", "200", "--header-timeout-ms", "60000"],
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
    // 2,000 idle connections: 200 are held (the idle timeout is a minute), the others refused at once.
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
    // Once the idle clients go, a normal request gets a connection again.
    drop(idle);
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

/// `tests/fixtures/modules/start_trap.wat` made a component with wasm-tools (installed by setup).
fn start_trap_component(dir: &std::path::Path) -> std::path::PathBuf {
    let wat = repo().join("tests/fixtures/modules/start_trap.wat");
    let (embedded, component) = (dir.join("embedded.wasm"), dir.join("start_trap.wasm"));
    let run = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("wasm-tools")
            .args(args)
            .status()
            .expect("wasm-tools (installed by scripts/setup.sh)");
        assert!(status.success(), "wasm-tools {args:?}");
    };
    let wit = repo().join("spec/wit");
    run(&[
        "component".as_ref(),
        "embed".as_ref(),
        wit.as_os_str(),
        "--world".as_ref(),
        "function".as_ref(),
        wat.as_os_str(),
        "-o".as_ref(),
        embedded.as_os_str(),
    ]);
    run(&[
        "component".as_ref(),
        "new".as_ref(),
        embedded.as_os_str(),
        "-o".as_ref(),
        component.as_os_str(),
    ]);
    component
}

#[test]
fn a_module_that_cannot_start_or_a_failed_check_keeps_a_version_from_traffic() {
    let dir = temp_dir("hardening-gate");
    let host = TestHost::start(&dir.join("state"));
    let (good, _) = &churn_expectations()[0];
    let check = |body: &str| {
        format!(
            "  check:\n    body: '{body}'\n    headers: {{ content-type: application/json }}\n  endpoints:\n"
        )
    };
    // A sample request answered 200: the version is activated.
    let passing = check(&good.to_string());
    host.deploy(&churn_spec(
        &dir,
        "v1.yaml",
        &[("  endpoints:\n", &passing)],
    ));
    assert_eq!(host.status("churn-predictor").version, 1);

    // One the module refuses (400): the deploy fails and version 1 keeps serving.
    let failing = check("not json");
    let spec = churn_spec(&dir, "v2.yaml", &[("  endpoints:\n", &failing)]);
    let output = host.cli(&["deploy", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    // The module refused it as a bad request: that is the version's answer, and not a 2xx.
    assert!(
        said.contains("422")
            && said.contains("spec.check: the new version failed: expected a customer"),
        "{said}"
    );
    assert!(said.contains("it was not activated"), "{said}");
    assert_eq!(host.status("churn-predictor").version, 1);
    assert_eq!(host.post("/v1/churn", &good.to_string()).status, 200);

    // A module whose start function traps is refused at deploy, before any request meets it.
    let module = start_trap_component(&dir);
    let spec = hostile_spec(&dir, &[]);
    replace_line(
        &spec,
        "hostile_guest.wasm",
        &format!("    path: {}", module.display()),
    );
    let output = host.cli(&["deploy", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(said.contains("could not be instantiated"), "{said}");
    assert_eq!(host.post("/v1/hostile", "{}").status, 404);
}

#[test]
fn a_grant_of_the_hosts_state_directory_is_refused_at_deploy() {
    let dir = temp_dir("hardening-state-grant");
    let host = TestHost::start(&dir.join("state"));
    let inside = host.state.join("blobs");
    let grant = format!(
        "    timeout: 100ms\n    capabilities: {{ read_dirs: {{ {}: /data }} }}\n",
        inside.display()
    );
    let spec = hostile_spec(&dir, &[("    timeout: 100ms\n", &grant)]);
    let output = host.cli(&["deploy", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(said.contains("the host's state directory"), "{said}");
}

#[test]
fn a_slow_upload_is_under_the_control_planes_deadline_not_the_data_planes() {
    let dir = temp_dir("hardening-upload");
    // Data-plane requests may take 1 s; the control plane keeps its own (600 s) deadline.
    let host = TestHost::start_with(&dir.join("state"), &["--request-timeout-secs", "1"]);
    let blob = vec![7u8; 4096];
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let path = aifn_host::api::Route::Blob(&digest).path();
    let address = host.admin_base.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        blob.len()
    )
    .unwrap();
    // 2.5 s to send 4 KiB: past the data plane's deadline.
    for chunk in blob.chunks(512) {
        stream.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 2"), "{answer}");
}

#[test]
fn an_upload_the_store_cannot_take_gets_the_hosts_answer_not_a_reset() {
    let dir = temp_dir("hardening-store-fails");
    let state = dir.join("state");
    let host = TestHost::start(&state);
    // Where uploads are written is no longer a directory: every upload fails on the host's side,
    // as it would on a full disk. The 23 MB model is far more than a socket buffers.
    std::fs::remove_dir_all(state.join("tmp")).unwrap();
    std::fs::write(state.join("tmp"), b"not a directory").unwrap();
    let spec = bundled_spec("sentiment-analyzer", &dir, "sentiment.yaml", &[]);
    let output = host.cli(&["deploy", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains("500") && said.contains("storage"), "{said}");
    assert!(
        !said.contains("Broken pipe") && !said.contains("reset"),
        "{said}"
    );
    // The host goes on serving.
    assert_eq!(host.get("/healthz").status, 200);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

mod http_properties {
    //! Arbitrary and mutated raw requests against a live host: whatever arrives, the host answers
    //! with a well-formed HTTP response (never a 5xx for a caller's mistake) or closes the
    //! connection, and keeps serving. `AIFN_HTTP_CASES` raises the case count for a long run
    //! (`fuzz/run.sh` does).
    use super::*;
    use proptest::prelude::*;

    const VALID: &str = "POST /v2/models/churn-predictor/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 85\r\n\r\n{\"inputs\":[{\"name\":\"features\",\"shape\":[1,6],\"datatype\":\"FP32\",\"data\":[1,2,3,0,0,1]}]}";

    /// A valid request with bytes overwritten, inserted or cut, or plain noise.
    fn requests() -> impl Strategy<Value = Vec<u8>> {
        let mutated = (
            proptest::collection::vec((0..VALID.len(), any::<u8>(), 0..3u8), 1..12),
            0..=VALID.len(),
        )
            .prop_map(|(edits, cut)| {
                let mut bytes = VALID.as_bytes()[..cut.max(1)].to_vec();
                for (at, byte, how) in edits {
                    let at = at.min(bytes.len().saturating_sub(1));
                    match how {
                        0 => bytes[at] = byte,
                        1 => bytes.insert(at, byte),
                        _ if bytes.len() > 1 => {
                            bytes.remove(at);
                        }
                        _ => {}
                    }
                }
                bytes
            });
        prop_oneof![
            3 => mutated,
            1 => proptest::collection::vec(any::<u8>(), 0..512),
        ]
    }

    /// Writes `bytes`, half-closes, and reads what comes back within a deadline.
    fn exchange(address: &str, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = stream.write_all(bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn any_request_gets_a_well_formed_answer_or_a_close_and_the_host_keeps_serving() {
        let dir = temp_dir("hardening-http-properties");
        let host = TestHost::start(&dir.join("state"));
        host.deploy(&churn_spec(&dir, "churn.yaml", &[]));
        let address = host.base.trim_start_matches("http://").to_string();
        assert!(exchange(&address, VALID.as_bytes()).starts_with("HTTP/1.1 200"));
        let cases = std::env::var("AIFN_HTTP_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(300);
        let config = ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        proptest!(config, |(bytes in requests())| {
            let answer = exchange(&address, &bytes);
            // A request that says HTTP/1.0 is answered in HTTP/1.0.
            for response in answer.split("HTTP/1.").skip(1) {
                let status: u16 = response.get(2..5).and_then(|s| s.parse().ok()).unwrap_or(0);
                prop_assert!((200..500).contains(&status), "{status} for {:?}: {answer}", String::from_utf8_lossy(&bytes));
            }
            prop_assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 ") || answer.starts_with("HTTP/1.0 "), "not HTTP: {answer}");
        });
        assert!(exchange(&address, VALID.as_bytes()).starts_with("HTTP/1.1 200"));
    }
}

#[test]
fn a_network_grant_does_not_include_name_lookups_unless_dns_is_granted() {
    let dir = temp_dir("hardening-dns");
    let host = TestHost::start(&dir.join("state"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = format!("net:localhost:{port}");
    let deploy = |dns: bool| {
        let grant = format!(
            "    timeout: 100ms\n    capabilities: {{ network: [\"127.0.0.1:{port}\"], dns: {dns} }}\n"
        );
        host.deploy(&hostile_spec(&dir, &[("    timeout: 100ms\n", &grant)]));
    };
    deploy(false);
    let reply = host.post("/v1/hostile", &probe);
    assert_eq!(reply.json()["connected"], false, "{}", reply.body);
    // The address itself is granted: without a name it connects.
    let direct = host.post("/v1/hostile", &format!("net:127.0.0.1:{port}"));
    assert_eq!(direct.json()["connected"], true, "{}", direct.body);
    deploy(true);
    let reply = host.post("/v1/hostile", &probe);
    assert_eq!(reply.json()["connected"], true, "{}", reply.body);
}
