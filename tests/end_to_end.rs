//! End to end: a real host process, deploys through the real CLI, requests over HTTP on 127.0.0.1,
//! real wasmtime running the churn predictor's module, real ONNX Runtime running its model.

use crate::support;

use aifn_host::api::{FunctionStatus, KeyView, Route, VersionList};
use serde_json::json;
use support::*;

const SPEC: &str = "function.yaml";

fn churn_probability(reply: &Reply) -> f64 {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["churn_probability"].as_f64().unwrap()
}

#[test]
fn deploy_through_the_cli_and_match_python_onnxruntime() {
    let dir = temp_dir("deploy");
    let host = TestHost::start(&dir.join("state"));
    let spec = churn_spec(&dir, SPEC, &[]);
    let out = host.deploy(&spec);
    assert!(
        out.starts_with("deployed churn-predictor version 1 (sha256:"),
        "{out}"
    );
    assert!(
        out.contains(&format!("POST {}/v1/churn", host.base)),
        "{out}"
    );

    let expectations = churn_expectations();
    for (request, expected) in &expectations {
        let reply = host.post("/v1/churn", &request.to_string());
        let got = churn_probability(&reply);
        assert!(
            (got - expected).abs() < 1e-5,
            "{request}: host {got}, python onnxruntime {expected}"
        );
        assert_eq!(reply.json()["will_churn"], json!(*expected >= 0.5));
        assert_eq!(reply.header("x-aifn-version"), Some("1"));
    }

    // A batch answers in order.
    let customers: Vec<_> = expectations.iter().map(|(r, _)| r.clone()).collect();
    let reply = host.post("/v1/churn", &json!({ "customers": customers }).to_string());
    assert_eq!(reply.status, 200, "{}", reply.body);
    let predictions = reply.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(predictions.len(), expectations.len());
    for (prediction, (_, expected)) in predictions.iter().zip(&expectations) {
        assert!((prediction["churn_probability"].as_f64().unwrap() - expected).abs() < 1e-5);
    }

    // The same model over the Open Inference Protocol v2, with the features the module would make.
    let reply = host.post(
        "/v2/models/churn-predictor/infer",
        r#"{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}"#,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let outputs = reply.json()["outputs"].clone();
    let probabilities = outputs
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_eq!(probabilities["shape"], json!([1, 2]));
    assert!((probabilities["data"][1].as_f64().unwrap() - expectations[0].1).abs() < 1e-5);

    let metadata = host.get("/v2/models/churn-predictor").json();
    assert_eq!(
        metadata["inputs"][0],
        json!({ "name": "features", "datatype": "FP32", "shape": [-1, 6] })
    );
    assert_eq!(host.get("/v2/models/churn-predictor/ready").status, 200);
    assert_eq!(host.get("/v2/health/ready").status, 200);
    assert_eq!(host.get("/v2/health/live").status, 200);

    let ls = host.cli_ok(&["ls"]);
    assert!(
        ls.contains("churn-predictor") && ls.contains("POST /v1/churn"),
        "{ls}"
    );
    let status: FunctionStatus = host.cli_json(&["status", "churn-predictor"]);
    assert_eq!(status.version, 1);
    assert_eq!(status.placement.replicas, 2);
    assert_eq!(status.placement.device, "cpu");

    // Deploying the same thing again makes no new version.
    let again = host.deploy(&spec);
    assert!(
        again.starts_with("unchanged churn-predictor version 1"),
        "{again}"
    );

    // Every request above was counted.
    let metrics = host.metrics();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(
            r#"aifn_requests_total{function="churn-predictor",route="/v1/churn",status="200"} 6"#
        ),
        "{}",
        metrics.body
    );
}

#[test]
fn bad_requests_get_clear_json_errors() {
    let dir = temp_dir("bad-requests");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&churn_spec(&dir, SPEC, &[]));

    let reply = host.post("/v1/churn", "{not json");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "rejected_by_function"),
        "{}",
        reply.body
    );
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expected a customer"));

    let reply = host.post("/v1/churn", r#"{"avg_monthly_spend": 1, "days_since_last_purchase": 2, "support_tickets_last_30d": 0, "subscription_tier": "gold"}"#);
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .body
            .contains("subscription_tier must be one of basic, standard, premium"),
        "{}",
        reply.body
    );

    let reply = host.post("/v1/nothing-here", "{}");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (404, "not_found")
    );

    let reply = host.get("/v1/churn");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(reply.header("allow"), Some("POST"));

    // A body over the limit is refused from its Content-Length, before it is read…
    let answer = raw_http(
        &host.base,
        "POST /v1/churn HTTP/1.1\r\nhost: x\r\ncontent-length: 2097152\r\n\r\n",
        std::time::Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"body_too_large""#), "{answer}");
    // …and a chunked one (no length up front) while it is read.
    let chunk = "x".repeat(64 * 1024);
    let mut chunked =
        String::from("POST /v1/churn HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n");
    for _ in 0..20 {
        chunked.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let answer = raw_http(&host.base, &chunked, std::time::Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Without a module in between, tensor errors are the caller's and name the input.
    let reply = host.post("/v2/models/churn-predictor/infer", "[1, 2");
    assert_eq!(reply.status, 400);
    assert!(reply.error_message().contains("not valid JSON"));
    let reply = host.post(
        "/v2/models/churn-predictor/infer",
        r#"{"inputs":[{"name":"features","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
    );
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (400, "invalid_input")
    );
    assert!(
        reply
            .body
            .contains("input `features` has shape [1, 5] but the model expects [-1, 6]"),
        "{}",
        reply.body
    );
    let reply = host.post(
        "/v2/models/churn-predictor/infer",
        r#"{"inputs":[{"name":"features","shape":[1,6],"datatype":"INT64","data":[1,2,3,0,0,1]}]}"#,
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .body
            .contains("input `features` has datatype INT64 but the model expects FP32"),
        "{}",
        reply.body
    );
    let reply = host.post(
        "/v2/models/churn-predictor/infer",
        r#"{"inputs":[{"name":"feature","shape":[1,6],"datatype":"FP32","data":[1,2,3,0,0,1]}]}"#,
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .body
            .contains("input `feature` is not an input of the model"),
        "{}",
        reply.body
    );
    assert_eq!(host.post("/v2/models/nope/infer", "{}").status, 404);

    // The control plane is not on the data plane's listener at all, and on its own it needs the
    // admin token.
    assert_eq!(host.get(&Route::Functions.path()).status, 404);
    assert_eq!(host.get("/metrics").status, 404);
    let anonymous = request(&host.admin_url(&Route::Functions.path()), "GET", b"", &[]);
    assert_eq!(anonymous.status, 401);
    let wrong = request(
        &host.admin_url(&Route::Functions.path()),
        "GET",
        b"",
        &[("authorization", "Bearer nope")],
    );
    assert_eq!(
        (wrong.status, wrong.error_code().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(
        request(&host.admin_url("/metrics"), "GET", b"", &[]).status,
        401
    );

    // After all of that, the function still answers.
    let (request, expected) = &churn_expectations()[0];
    assert!(
        (churn_probability(&host.post("/v1/churn", &request.to_string())) - expected).abs() < 1e-5
    );
}

#[test]
fn versions_survive_kill_9() {
    let dir = temp_dir("restart");
    let state = dir.join("state");
    let host = TestHost::start(&state);
    host.deploy(&churn_spec(&dir, SPEC, &[]));
    let v2 = churn_spec(&dir, "v2.yaml", &[("timeout: 100ms", "timeout: 150ms")]);
    let out = host.deploy(&v2);
    assert!(
        out.starts_with("deployed churn-predictor version 2"),
        "{out}"
    );
    host.kill();

    let host = TestHost::start(&state);
    let (request, expected) = &churn_expectations()[1];
    let reply = host.post("/v1/churn", &request.to_string());
    assert!((churn_probability(&reply) - expected).abs() < 1e-5);
    assert_eq!(reply.header("x-aifn-version"), Some("2"));
    let versions: VersionList = host.cli_json(&["versions", "churn-predictor", "--json"]);
    assert_eq!(versions.versions.len(), 2);
    // The compiled module was cached by digest, so the restart did not compile it again.
    let compiled = std::fs::read_dir(state.join("compiled")).unwrap().count();
    assert_eq!(compiled, 1, "one compiled module for one module digest");
}

#[test]
fn a_failed_deploy_changes_nothing_that_is_serving() {
    let dir = temp_dir("failed-deploy");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&churn_spec(&dir, SPEC, &[]));

    // A "module" that is not WebAssembly: refused, nothing changes.
    std::fs::write(dir.join("garbage.wasm"), b"definitely not wasm").unwrap();
    let bad_module = churn_spec(&dir, "bad-module.yaml", &[]);
    replace_line(
        &bad_module,
        "churn_preprocess.wasm",
        &format!("    path: {}", dir.join("garbage.wasm").display()),
    );
    let out = host.cli(&["deploy", bad_module.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not WebAssembly"),
        "{out:?}"
    );

    // A model file that is not ONNX.
    std::fs::write(dir.join("garbage.onnx"), b"not a model").unwrap();
    let bad_model = churn_spec(&dir, "bad-model.yaml", &[]);
    replace_line(
        &bad_model,
        "churn.onnx",
        &format!("    path: {}", dir.join("garbage.onnx").display()),
    );
    let out = host.cli(&["deploy", bad_model.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid ONNX model"),
        "{out:?}"
    );

    // An invalid spec: every error, with positions, before anything is uploaded.
    let bad_spec = churn_spec(
        &dir,
        "bad-spec.yaml",
        &[
            ("memory: 64Mi", "memory: 64MB"),
            ("min_replicas: 2", "min_replicas: 20"),
        ],
    );
    let out = host.cli(&["deploy", bad_spec.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad-spec.yaml:16:13: spec.resources.memory: unknown unit `MB`"),
        "{stderr}"
    );
    assert!(stderr.contains("bad-spec.yaml:19:19: spec.scaling.min_replicas: min_replicas (20) is greater than max_replicas (8)"), "{stderr}");

    // Another function may not take a route that is served.
    let thief = churn_spec(
        &dir,
        "thief.yaml",
        &[("name: churn-predictor", "name: route-thief")],
    );
    let out = host.cli(&["deploy", thief.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("route POST /v1/churn is already served by function `churn-predictor`"),
        "{out:?}"
    );

    // A model id the host does not know.
    let unknown = dir.join("unknown-model.yaml");
    std::fs::copy(repo().join("examples/sentiment-analyzer.yaml"), &unknown).unwrap();
    let out = host.cli(&["deploy", unknown.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("model `sentiment_model_v3` is not known to this host"),
        "{out:?}"
    );

    let reply = host.post("/v1/churn", &churn_expectations()[0].0.to_string());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-aifn-version"), Some("1"));
    let list: VersionList = host.cli_json(&["versions", "churn-predictor", "--json"]);
    assert_eq!(list.versions.len(), 1, "failed deploys leave no version");
}

#[test]
fn the_reference_spec_deploys_once_its_model_is_known_and_api_keys_guard_it() {
    let dir = temp_dir("reference");
    let host = TestHost::start(&dir.join("state"));
    let model = repo().join("functions/churn-predictor/model/churn.onnx");
    host.cli_ok(&[
        "models",
        "push",
        "sentiment_model_v3",
        model.to_str().unwrap(),
    ]);
    let spec = repo().join("examples/sentiment-analyzer.yaml");
    let out = host.deploy(&spec);
    assert!(
        out.contains("deployed sentiment-analyzer version 1"),
        "{out}"
    );
    // The CPU wheel of ONNX Runtime has no CUDA execution provider: the function runs on the
    // CPU, and the deploy and the placement say why.
    assert!(
        out.contains("warning: spec asks for 1 GPU(s) but the host cannot use one (this ONNX Runtime has no CUDA execution provider"),
        "{out}"
    );
    let status: FunctionStatus = host.cli_json(&["status", "sentiment-analyzer"]);
    assert_eq!(status.placement.device, "cpu");
    assert_eq!(status.placement.requested_gpus, 1);
    assert!(
        status.placement.notes[0].contains("running on CPU"),
        "{:?}",
        status.placement.notes
    );
    // It asks for 200 replicas: the deploy says how many this host runs, and why.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(
        out.contains(&format!(
            "warning: spec.scaling.max_replicas is 200 but this host runs at most {cores} instance(s) of this function ({cores} core(s), 1 thread(s) per instance); the autoscaler stops at {cores}"
        )),
        "{out}"
    );

    let tensors = r#"{"inputs":[{"name":"features","shape":[1,6],"datatype":"FP32","data":[42.5,12,1,0,0,1]}]}"#;
    let reply = host.post("/v1/sentiment", tensors);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    // The v2 route of a guarded function is guarded too.
    assert_eq!(
        host.post("/v2/models/sentiment-analyzer/infer", tensors)
            .status,
        401
    );

    let key = host.new_key("sentiment-analyzer");
    let url = host.url("/v1/sentiment");
    let bearer = format!("Bearer {key}");
    assert_eq!(
        request(
            &url,
            "POST",
            tensors.as_bytes(),
            &[("authorization", &bearer)]
        )
        .status,
        200
    );
    assert_eq!(
        request(&url, "POST", tensors.as_bytes(), &[("x-api-key", &key)]).status,
        200
    );
    assert_eq!(
        request(
            &url,
            "POST",
            tensors.as_bytes(),
            &[("x-api-key", "aifn_wrong")]
        )
        .status,
        401
    );

    // A key for another function is valid, but not here: 403.
    let other = host.new_key("churn-predictor");
    assert_eq!(
        request(&url, "POST", tensors.as_bytes(), &[("x-api-key", &other)]).status,
        403
    );

    // Revocation takes effect at once; the host never stored the secret.
    let keys: Vec<KeyView> = host.cli_json(&["keys", "list"]);
    let id = keys
        .iter()
        .find(|k| k.function == "sentiment-analyzer")
        .unwrap()
        .id
        .clone();
    host.cli_ok(&["keys", "revoke", &id]);
    assert_eq!(
        request(&url, "POST", tensors.as_bytes(), &[("x-api-key", &key)]).status,
        401
    );
    // Keys live in the state database, by hash only.
    let stored = std::fs::read(dir.join("state/state.redb")).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(&other),
        "keys are stored hashed"
    );
}

#[test]
fn delete_stops_serving_and_a_redeploy_continues_the_numbering() {
    let dir = temp_dir("delete");
    let host = TestHost::start(&dir.join("state"));
    let spec = churn_spec(&dir, SPEC, &[]);
    host.deploy(&spec);
    let out = host.cli_ok(&["delete", "churn-predictor"]);
    assert!(
        out.contains("deleted churn-predictor (was serving version 1)"),
        "{out}"
    );
    assert_eq!(host.post("/v1/churn", "{}").status, 404);
    assert_eq!(host.get("/v2/models/churn-predictor").status, 404);
    assert!(host.cli_ok(&["ls"]).contains("no functions deployed"));
    let out = host.cli(&["delete", "churn-predictor"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no function named `churn-predictor`"));

    let changed = churn_spec(&dir, "again.yaml", &[("timeout: 100ms", "timeout: 120ms")]);
    let out = host.deploy(&changed);
    assert!(
        out.starts_with("deployed churn-predictor version 2"),
        "{out}"
    );
    assert_eq!(
        host.post("/v1/churn", &churn_expectations()[0].0.to_string())
            .status,
        200
    );
}

#[test]
fn a_looping_trapping_or_greedy_module_is_stopped_and_the_host_keeps_serving() {
    let dir = temp_dir("hostile");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&churn_spec(&dir, SPEC, &[]));
    let spec = hostile_spec(&dir, &[("timeout: 100ms", "timeout: 200ms")]);
    host.deploy(&spec);

    let started = std::time::Instant::now();
    let reply = host.post("/v1/hostile", "loop");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (504, "function_timeout"),
        "{}",
        reply.body
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "stopped at its deadline"
    );
    assert_eq!(
        reply.json()["error"]["details"],
        json!({ "function": "hostile", "version": 1 })
    );

    let reply = host.post("/v1/hostile", "trap");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (500, "function_trapped"),
        "{}",
        reply.body
    );

    let reply = host.post("/v1/hostile", "oom");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.error_code(),
        "function_out_of_memory",
        "{}",
        reply.body
    );

    // The same instances keep answering, and so does the other function.
    let reply = host.post("/v1/hostile", "fine");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (request, expected) = &churn_expectations()[0];
    assert!(
        (churn_probability(&host.post("/v1/churn", &request.to_string())) - expected).abs() < 1e-5
    );
}

#[test]
fn aifn_up_serves_a_function_in_one_process() {
    let dir = temp_dir("up");
    let spec = churn_spec(&dir, SPEC, &[]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args([
            "up",
            spec.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            // Not the default 8081: something else on the machine may hold it.
            "--admin-listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(dir.join("state"))
        .env("AIFN_CONFIG", dir.join("config/contexts.yaml"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.join("up.log")).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut printed = String::new();
    let base = loop {
        let Some(line) = lines.next() else {
            let _ = child.wait();
            panic!(
                "aifn up exited before it listened: {}",
                std::fs::read_to_string(dir.join("up.log")).unwrap_or_default()
            );
        };
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if let Some(base) = line.strip_prefix("aifn listening on ") {
            break base.to_string();
        }
    };
    assert!(
        printed.contains("deployed churn-predictor version 1"),
        "{printed}"
    );
    let (request_body, expected) = &churn_expectations()[2];
    let reply = request(
        &format!("{base}/v1/churn"),
        "POST",
        request_body.to_string().as_bytes(),
        &[],
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!((churn_probability(&reply) - expected).abs() < 1e-5);
    // Without --admin-token the host made one, readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("state/admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // It recorded itself as the current context `local`, with that token, owner-only.
    let contexts = std::fs::read_to_string(dir.join("config/contexts.yaml")).unwrap();
    let token = std::fs::read_to_string(dir.join("state/admin-token")).unwrap();
    assert!(contexts.contains("current: local"), "{contexts}");
    assert!(contexts.contains(&format!("url: {base}")), "{contexts}");
    assert!(contexts.contains(token.trim()), "{contexts}");
    let mode = |path: &str| {
        std::fs::metadata(dir.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("config/contexts.yaml"), 0o600);
    assert_eq!(mode("config"), 0o700);
}

#[test]
fn rollback_switches_versions_under_load_without_a_failed_request() {
    let dir = temp_dir("rollback");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&churn_spec(&dir, SPEC, &[]));
    host.deploy(&churn_spec(
        &dir,
        "v2.yaml",
        &[("timeout: 100ms", "timeout: 150ms")],
    ));
    let out = host.cli(&["rollback", "churn-predictor", "--to", "7"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no version 7"),
        "{out:?}"
    );

    // Clients keep calling while versions switch back and forth.
    let stop = std::sync::atomic::AtomicBool::new(false);
    // Answers from versions 1 and 2 so far, of all the clients.
    let by_version = [
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ];
    let (answered, versions_seen) = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut statuses = Vec::new();
                    let mut versions = std::collections::BTreeSet::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let reply = host.post("/v1/churn", &churn_expectations()[0].0.to_string());
                        let version = reply.header("x-aifn-version").unwrap_or("?").to_string();
                        if let Some(count) = ["1", "2"]
                            .iter()
                            .position(|v| *v == version)
                            .map(|i| &by_version[i])
                        {
                            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        versions.insert(version);
                        statuses.push(reply.status);
                    }
                    (statuses, versions)
                })
            })
            .collect();
        // Each version serves the clients a few answers before the next switch.
        let served = |version: usize| {
            let count = &by_version[version - 1];
            let before = count.load(std::sync::atomic::Ordering::Relaxed);
            wait_until(
                &format!("answered by version {version}"),
                std::time::Duration::from_secs(10),
                || (count.load(std::sync::atomic::Ordering::Relaxed) >= before + 5).then_some(()),
            );
        };
        for _ in 0..3 {
            assert!(host
                .cli_ok(&["rollback", "churn-predictor"])
                .contains("rolled back to version 1"));
            served(1);
            assert!(host
                .cli_ok(&["rollback", "churn-predictor", "--to", "2"])
                .contains("rolled back to version 2"));
            served(2);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for client in clients {
            let (statuses, versions) = client.join().unwrap();
            all.extend(statuses);
            seen.extend(versions);
        }
        (all, seen)
    });
    assert!(answered.len() > 20, "{} requests", answered.len());
    assert!(
        answered.iter().all(|s| *s == 200),
        "every request answered: {answered:?}"
    );
    assert_eq!(versions_seen.into_iter().collect::<Vec<_>>(), ["1", "2"]);

    // The rollback is persistent: after a restart the host serves the version rolled back to.
    host.cli_ok(&["rollback", "churn-predictor"]);
    let state = host.state.clone();
    host.kill();
    let host = TestHost::start(&state);
    let reply = host.post("/v1/churn", &churn_expectations()[0].0.to_string());
    assert_eq!(reply.header("x-aifn-version"), Some("1"));
    let out = host.cli(&["rollback", "churn-predictor"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no version older than 1"),
        "{out:?}"
    );
}

/// CPU time (user + system) the host process has used, from /proc (clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn idle_instances_look_for_work_briefly_and_then_sleep() {
    let dir = temp_dir("idle-spin");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&repo().join("functions/churn-predictor").join(SPEC));
    let body = r#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;
    for _ in 0..50 {
        churn_probability(&host.post("/v1/churn", body));
    }
    // With no requests, its instances (2 replicas) stop looking within the spin (300 µs): over
    // a half-second window the host uses far less than one core (the epoch ticker's wake-ups
    // take a few percent of one).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let before = cpu_ticks(host.pid());
        // The measuring window, not a wait for the condition (which the loop polls for).
        std::thread::sleep(std::time::Duration::from_millis(500));
        let used_ms = (cpu_ticks(host.pid()) - before) * 10;
        if used_ms < 150 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an idle host kept using {used_ms} ms of CPU per 500 ms"
        );
    }
    // And a request after the pause is answered as before.
    churn_probability(&host.post("/v1/churn", body));
}
