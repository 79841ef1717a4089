//! The pod contract, on 127.0.0.1: `aifn bundle` writes a version as a directory, `aifn serve
//! --bundle` serves exactly it, and SIGTERM drains. The drill runs pods behind Debian's haproxy,
//! standing in for a Kubernetes Service (health checks on `/readyz`, no retries), under continuous
//! load: a rolling update from version 1 to 2, then a pod added and one removed, with zero failed
//! requests.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

/// `aifn bundle SPEC --out DIR`.
fn bundle(spec: &Path, out: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .arg("bundle")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .env("AIFN_LOG", "off")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "aifn bundle: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Bundles of the churn predictor: version 1 as shipped, and version 2 with one setting changed
/// (made from version 1's bundle, whose paths are relative).
fn churn_bundles(dir: &Path) -> (PathBuf, PathBuf) {
    let v1 = dir.join("bundle-v1");
    bundle(&repo().join("functions/churn-predictor/function.yaml"), &v1);
    let source = dir.join("source-v2");
    copy_dir(&v1, &source);
    replace_line(
        &source.join("function.yaml"),
        "timeout: 100ms",
        "    timeout: 120ms",
    );
    let v2 = dir.join("bundle-v2");
    bundle(&source.join("function.yaml"), &v2);
    (v1, v2)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A port nothing listens on now (the pod that takes it starts later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pod: `aifn serve --bundle` on its own port and state, as the rendered Deployment runs it.
fn start_pod(dir: &Path, name: &str, bundle: &Path, port: u16) -> (TestHost, Duration) {
    let state = dir.join(name);
    let started = Instant::now();
    let listen = format!("127.0.0.1:{port}");
    let pod = TestHost::start_with(
        &state,
        &[
            "--listen",
            &listen,
            "--bundle",
            bundle.to_str().unwrap(),
            "--shutdown-delay-ms",
            "1000",
            "--drain-timeout-secs",
            "10",
        ],
    );
    // Readiness is the first thing it answers: it listens only once its bundle is loaded.
    let ready = pod.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    (pod, started.elapsed())
}

/// haproxy in front of `ports`: a server per port, checked on `/readyz` every 100 ms, no retries
/// and no redispatch (a failed request shows), the answering server named in `X-Pod`.
struct Balancer {
    child: Child,
    port: u16,
}

impl Balancer {
    fn start(dir: &Path, ports: &[(String, u16)]) -> Balancer {
        let port = free_port();
        let servers: String = ports
            .iter()
            .map(|(name, p)| format!("  server {name} 127.0.0.1:{p} check\n"))
            .collect();
        let config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  retries 0\n  option http-keep-alive\n\
             frontend service\n  bind 127.0.0.1:{port}\n  default_backend pods\n\
             backend pods\n  balance roundrobin\n  option httpchk GET /readyz\n  http-check expect status 200\n  timeout check 1s\n\
             \x20 default-server inter 100ms fall 2 rise 1\n  http-response set-header X-Pod %[srv_name]\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
            .spawn()
            .expect("haproxy is installed by scripts/setup.sh");
        // Until its first checks have sorted the pods that run from the ports nothing serves yet.
        let url = format!("http://127.0.0.1:{port}/readyz");
        let mut in_a_row = 0;
        wait_until(
            "haproxy to route to the ready pods",
            Duration::from_secs(20),
            || {
                let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && request(&url, "GET", b"", &[]).status == 200;
                in_a_row = if ok { in_a_row + 1 } else { 0 };
                std::thread::sleep(Duration::from_millis(20)); // paces the probe; the deadline decides
                (in_a_row >= 25).then_some(())
            },
        );
        Balancer { child, port }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the clients saw: answers per pod, and every failure.
#[derive(Default)]
struct Seen {
    by_pod: BTreeMap<String, usize>,
    failures: Vec<String>,
    answers: usize,
}

/// Clients that keep their connections to the balancer and send customers until stopped.
fn client(port: u16, seen: &Mutex<Seen>, stop: &AtomicBool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v1/churn");
    let mut customers = Customers { state: port as u64 };
    let started = Instant::now();
    // Bounded: the test stops it, and it stops itself after 3 minutes in any case.
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
        let body = customers.next(1.0).to_string();
        let outcome = agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body.as_bytes());
        let mut seen = seen.lock().unwrap();
        match outcome {
            Ok(mut reply) if reply.status() == 200 => {
                let header = |name: &str| {
                    reply
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string()
                };
                let pod = header("x-pod");
                let _ = reply.body_mut().read_to_string();
                *seen.by_pod.entry(pod).or_default() += 1;
                seen.answers += 1;
            }
            Ok(mut reply) => {
                let status = reply.status();
                let text = reply.body_mut().read_to_string().unwrap_or_default();
                seen.failures.push(format!("{status}: {text}"));
            }
            Err(e) => seen.failures.push(format!("transport: {e}")),
        }
    }
}

/// Waits until the clients have had `more` answers from `pod` since now.
fn wait_for_answers_from(seen: &Mutex<Seen>, pod: &str, more: usize) {
    let before = seen.lock().unwrap().by_pod.get(pod).copied().unwrap_or(0);
    wait_until(
        &format!("{more} answers from {pod} through the balancer"),
        Duration::from_secs(30),
        || {
            let now = seen.lock().unwrap().by_pod.get(pod).copied().unwrap_or(0);
            (now >= before + more).then_some(())
        },
    );
}

#[test]
fn a_rolling_update_and_pods_added_and_removed_under_load_fail_no_request() {
    let dir = temp_dir("pods-drill");
    let (v1, v2) = churn_bundles(&dir);
    let names: Vec<(String, u16)> = (1..=7).map(|i| (format!("pod{i}"), free_port())).collect();
    let port_of = |name: &str| names.iter().find(|(n, _)| n == name).unwrap().1;
    let mut pods: BTreeMap<String, TestHost> = BTreeMap::new();
    let mut ready_times = Vec::new();
    for name in ["pod1", "pod2", "pod3"] {
        let (pod, took) = start_pod(&dir, name, &v1, port_of(name));
        ready_times.push(took);
        pods.insert(name.to_string(), pod);
    }
    let balancer = Balancer::start(&dir, &names);
    let seen = Mutex::new(Seen::default());
    let stop = AtomicBool::new(false);
    let mut drains = Vec::new();
    std::thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        for _ in 0..4 {
            scope.spawn(|| client(balancer.port, &seen, &stop));
        }
        for name in ["pod1", "pod2", "pod3"] {
            wait_for_answers_from(&seen, name, 20);
        }

        // The rolling update, one pod at a time (maxSurge 1, maxUnavailable 0): a pod of
        // version 2 starts and takes traffic, then one of version 1 gets SIGTERM and exits.
        for (new, old) in [("pod4", "pod1"), ("pod5", "pod2"), ("pod6", "pod3")] {
            let (pod, took) = start_pod(&dir, new, &v2, port_of(new));
            ready_times.push(took);
            pods.insert(new.to_string(), pod);
            wait_for_answers_from(&seen, new, 20);
            let (exit, took) = pods.remove(old).unwrap().terminate(Duration::from_secs(30));
            assert!(exit.success(), "{old} exited with {exit}");
            drains.push(took);
        }
        // A pod added, then one removed.
        let (pod, took) = start_pod(&dir, "pod7", &v2, port_of("pod7"));
        ready_times.push(took);
        pods.insert("pod7".to_string(), pod);
        wait_for_answers_from(&seen, "pod7", 20);
        let (exit, took) = pods
            .remove("pod4")
            .unwrap()
            .terminate(Duration::from_secs(30));
        assert!(exit.success(), "pod4 exited with {exit}");
        drains.push(took);
        // Every ready pod takes traffic.
        for name in ["pod5", "pod6", "pod7"] {
            wait_for_answers_from(&seen, name, 20);
        }
        stop.store(true, Ordering::Relaxed);
    });

    let seen = seen.into_inner().unwrap();
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        seen.failures.len(),
        seen.answers + seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
    let ms = |d: &Duration| d.as_millis();
    println!(
        "pods drill: {} answers, 0 failed; by pod {:?}; start to ready {:?} ms; SIGTERM to exit under load {:?} ms",
        seen.answers,
        seen.by_pod,
        ready_times.iter().map(ms).collect::<Vec<_>>(),
        drains.iter().map(ms).collect::<Vec<_>>()
    );
}

#[test]
fn a_bundle_is_served_only_as_its_manifest_says() {
    let dir = temp_dir("pods-bundle");
    let out = dir.join("bundle");
    let printed = bundle(
        &repo().join("functions/churn-predictor/function.yaml"),
        &out,
    );
    assert!(printed.contains("sha256:"), "{printed}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bundle.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "model/churn.onnx",
            "module/target/wasm32-wasip2/release/churn_preprocess.wasm",
            "model/churn_fallback.onnx",
            "model/reference.jsonl"
        ]
    );

    // As bundled, it serves, and answers as the function does anywhere.
    let pod = TestHost::start_with(&dir.join("pod"), &["--bundle", out.to_str().unwrap()]);
    for (customer, expected) in churn_expectations().into_iter().take(3) {
        let reply = pod.post("/v1/churn", &customer.to_string());
        assert_eq!(reply.status, 200, "{}", reply.body);
        let got = reply.json()["churn_probability"].as_f64().unwrap();
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }
    let (exit, _) = pod.terminate(Duration::from_secs(30));
    assert!(exit.success());

    // One byte of the model changed after bundling: the pod refuses to start, naming the file.
    let model = out.join("model/churn.onnx");
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(dir.join("pod-refused"))
        .arg("--bundle")
        .arg(&out)
        .env("AIFN_LOG", "off")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("model/churn.onnx") && error.contains("not the one bundled"),
        "{error}"
    );

    // A spec whose files lie outside its directory cannot be bundled, and nothing is written.
    let outside = churn_spec(&dir, "absolute.yaml", &[]);
    let failed = Command::new(env!("CARGO_BIN_EXE_aifn"))
        .arg("bundle")
        .arg(&outside)
        .arg("--out")
        .arg(dir.join("never"))
        .env("AIFN_LOG", "off")
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let error = String::from_utf8_lossy(&failed.stderr);
    assert!(error.contains("not below the spec's directory"), "{error}");
    assert!(!dir.join("never").exists());
}
