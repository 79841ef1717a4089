//! Test harness: a real `aifn` host process on an ephemeral 127.0.0.1 port, the real CLI, and an
//! HTTP client.

#![allow(dead_code)]

use aifn_host::api::{self, Route};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built guest module at `relative` (under the repo), with a hint when setup has not run.
pub fn built(relative: &str) -> PathBuf {
    let path = repo().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run ./scripts/setup.sh first",
        path.display()
    );
    path
}

/// How often [`wait_until`] and [`wait_until_seen`] probe.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Waits for something the test cannot be told about: calls `probe` every 25 ms until it returns
/// `Some`, and returns what it returned. When `limit` passes first, panics with "not `what` within
/// `limit`", so `what` says what was awaited ("scaled to zero", "both instances busy"). The probe
/// runs at least once, and once more at the deadline.
///
/// Tests wait with this, and a deadline, never with a fixed sleep before an assertion.
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    match poll(limit, || probe().ok_or(())) {
        Ok(value) => value,
        Err(()) => panic!("not {what} within {limit:?}"),
    }
}

/// [`wait_until`] for a probe that shows what it saw: `Ok` ends the wait, `Err(seen)` goes on
/// waiting, and the last `seen` (a function's status, say) is in the panic message.
#[track_caller]
pub fn wait_until_seen<T, S: std::fmt::Display>(
    what: &str,
    limit: Duration,
    probe: impl FnMut() -> Result<T, S>,
) -> T {
    match poll(limit, probe) {
        Ok(value) => value,
        Err(seen) => panic!("not {what} within {limit:?}; last seen: {seen:#}"),
    }
}

/// Calls `probe` every [`POLL_EVERY`] until it returns `Ok`, or `limit` passes: then its last `Err`.
fn poll<T, E>(limit: Duration, mut probe: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(last);
        }
        std::thread::sleep(POLL_EVERY.min(deadline - now));
    }
}

/// Sets its flag when dropped, to stop clients that run until the flag is set: also when the test
/// fails inside the scope they run in, which would otherwise wait for them forever.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub struct TestHost {
    child: Child,
    /// The data plane.
    pub base: String,
    /// The control plane (`/admin/v1`, `/metrics`), on its own listener.
    pub admin_base: String,
    pub state: PathBuf,
}

impl TestHost {
    pub fn start(state: &Path) -> TestHost {
        Self::start_with(state, &[])
    }

    /// Starts `aifn serve` on a free port and waits until it says where it listens.
    pub fn start_with(state: &Path, extra_args: &[&str]) -> TestHost {
        Self::start_with_env(state, extra_args, &[])
    }

    /// [`TestHost::start_with`], with environment variables for the host (`AIFN_LOG`, say).
    /// Its log is `state.log` (`state` with the extension `log`).
    pub fn start_with_env(state: &Path, extra_args: &[&str], env: &[(&str, &str)]) -> TestHost {
        let log = std::fs::File::create(state.with_extension("log")).unwrap();
        // A free port unless the caller names one (`--listen` may be given once).
        let listen: &[&str] = if extra_args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_aifn"))
            .arg("serve")
            .args(listen)
            .args(["--admin-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state)
            .args(["--admin-token", ADMIN_TOKEN])
            .args(extra_args)
            // The context it records goes to a file of its own, not the user's.
            .env("AIFN_CONFIG", state.with_extension("contexts.yaml"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut admin = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("aifn control plane on ") {
                    admin = Some(base.to_string());
                }
                if let Some(base) = line.strip_prefix("aifn listening on ") {
                    let _ = tx.send((base.to_string(), admin.clone().unwrap_or_default()));
                }
            }
        });
        let (base, admin_base) = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "the host did not start; its log:\n{}",
                    std::fs::read_to_string(state.with_extension("log")).unwrap_or_default()
                )
            });
        TestHost {
            child,
            base,
            admin_base,
            state: state.to_path_buf(),
        }
    }

    /// The host's process id (for reading its memory from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as Kubernetes stops a pod; waits (at most `limit`) for the process to exit and
    /// says how it exited and how long it took.
    pub fn terminate(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = wait_until("the host to exit after SIGTERM", limit, || {
            self.child.try_wait().unwrap()
        });
        (exited, sent.elapsed())
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs the `aifn` CLI against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_aifn"))
            .args(args)
            .env("AIFN_HOST", &self.admin_base)
            .env("AIFN_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("AIFN_CONFIG", self.state.with_extension("contexts.yaml"))
            .env("AIFN_LOG", "off")
            .output()
            .unwrap()
    }

    /// Runs the CLI and insists that it succeeds; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "aifn {args:?} failed:\n{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The end of the host's log and whether it still runs: what a failed call's message needs.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.state.with_extension("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        // An exited child that nobody waited for is a zombie: its /proc entry stays.
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()));
        let alive = status.is_ok_and(|s| !s.contains("State:\tZ"));
        format!(
            "the host ({}) logged, last:\n{}",
            if alive { "still running" } else { "exited" },
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        request(&self.url(path), "POST", body.as_bytes(), &[])
    }

    pub fn get(&self, path: &str) -> Reply {
        request(&self.url(path), "GET", b"", &[])
    }

    /// A URL of the control plane.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
    }

    /// GETs a path of the control plane with the admin token.
    fn get_as_admin(&self, path: &str) -> Reply {
        request(
            &self.admin_url(path),
            "GET",
            b"",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        )
    }

    /// The host's Prometheus metrics (`GET /metrics`, with the admin token).
    pub fn metrics(&self) -> Reply {
        self.get_as_admin("/metrics")
    }

    /// GETs a control-plane route with the admin token, insists on 200, and decodes the answer
    /// (`host.admin::<api::FunctionList>(Route::Functions)`).
    #[track_caller]
    pub fn admin<T: DeserializeOwned>(&self, route: Route<'_>) -> T {
        let path = route.path();
        let reply = self.get_as_admin(&path);
        assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        decode(&reply.body, &format!("the answer to GET {path}"))
    }

    /// What `aifn status NAME` shows: the serving version and how it runs.
    #[track_caller]
    pub fn status(&self, name: &str) -> api::FunctionStatus {
        self.admin(Route::Function(name))
    }

    /// Runs the CLI, insists that it succeeds, and decodes the JSON it printed (`aifn status`,
    /// `aifn versions --json`, ...).
    #[track_caller]
    pub fn cli_json<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let out = self.cli_ok(args);
        decode(&out, &format!("what `aifn {}` printed", args.join(" ")))
    }

    /// A host whose autoscaler uses a short stable window and scale-down delay (seconds), so
    /// scaling tests finish in seconds.
    pub fn start_autoscaling(state: &Path, window: &str, scale_down_delay: &str) -> TestHost {
        Self::start_with(
            state,
            &[
                "--autoscale-window-secs",
                window,
                "--scale-down-delay-secs",
                scale_down_delay,
            ],
        )
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of a JSON error body; on `/v2` routes, whose body is the Open Inference
    /// Protocol's `{"error": "<message>"}`, the `X-Aifn-Error` header.
    pub fn error_code(&self) -> String {
        let json = self.json();
        match json["error"].as_str() {
            Some(_) => self.header("x-aifn-error").unwrap_or_default().to_string(),
            None => json["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    /// The message of a JSON error body, in either shape.
    pub fn error_message(&self) -> String {
        let json = self.json();
        let error = &json["error"];
        error
            .as_str()
            .or(error["message"].as_str())
            .unwrap_or_default()
            .to_string()
    }
}

/// `text` as JSON of type `T`; panics showing `what` it is and the text when it is not.
#[track_caller]
pub fn decode<T: DeserializeOwned>(text: &str, what: &str) -> T {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => panic!(
            "{what} is not a {} ({e}):\n{text}",
            std::any::type_name::<T>()
        ),
    }
}

/// A value as pretty JSON: what a test shows of an admin answer it did not expect.
pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(not JSON: {e})"))
}

pub fn request(url: &str, method: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut response = agent.run(builder.body(body.to_vec()).unwrap()).unwrap();
    Reply {
        status: response.status().as_u16(),
        headers: response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: response.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Writes a copy of the churn predictor's spec into `dir`, with model and module paths made
/// absolute and `edits` (pairs of text to replace) applied.
pub fn churn_spec(dir: &Path, file: &str, edits: &[(&str, &str)]) -> PathBuf {
    bundled_spec("churn-predictor", dir, file, edits)
}

/// Writes a copy of a bundled function's spec into `dir`, with model and module paths made
/// absolute and `edits` (pairs of text to replace) applied.
pub fn bundled_spec(name: &str, dir: &Path, file: &str, edits: &[(&str, &str)]) -> PathBuf {
    let function = repo().join("functions").join(name);
    let mut text = std::fs::read_to_string(function.join("function.yaml")).unwrap();
    text = text.replace(
        "path: model/",
        &format!("path: {}/model/", function.display()),
    );
    text = text.replace(
        "path: module/",
        &format!("path: {}/module/", function.display()),
    );
    text = text.replace(
        "reference: model/",
        &format!("reference: {}/model/", function.display()),
    );
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "the {name} spec has no `{from}` to edit"
        );
        text = text.replace(from, to);
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// The requests and the probabilities Python's onnxruntime gave for them (made by `train.py`).
pub fn churn_expectations() -> Vec<(Value, f64)> {
    let text =
        std::fs::read_to_string(repo().join("functions/churn-predictor/model/expected.json"))
            .unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["request"].clone(),
                c["churn_probability"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Sends raw bytes and returns what the server answered before closing or within `wait`: for
/// requests an ordinary client would not send, like headers that promise a body too large to send.
pub fn raw_http(base: &str, request: &str, wait: Duration) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n")
            && String::from_utf8_lossy(&answer).contains("}}")
        {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Replaces the line of the spec at `spec` that contains `needle` with `line`.
pub fn replace_line(spec: &Path, needle: &str, line: &str) {
    let text = std::fs::read_to_string(spec).unwrap();
    let old = text
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{} has no line with `{needle}`", spec.display()));
    std::fs::write(spec, text.replace(old, line)).unwrap();
}

/// The churn predictor's spec, renamed `hostile` on `/v1/hostile`, with the misbehaving test module
/// (`tests/guests/hostile`) in place of its own, and `edits` applied.
pub fn hostile_spec(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    let module = built("tests/guests/hostile/target/wasm32-wasip2/release/hostile_guest.wasm");
    let mut all = vec![
        ("name: churn-predictor", "name: hostile"),
        ("route: /v1/churn", "route: /v1/hostile"),
    ];
    all.extend_from_slice(edits);
    let spec = churn_spec(dir, "hostile.yaml", &all);
    replace_line(
        &spec,
        "churn_preprocess.wasm",
        &format!("    path: {}", module.display()),
    );
    spec
}

impl TestHost {
    /// Creates an API key for `function` and returns its secret.
    pub fn new_key(&self, function: &str) -> String {
        self.cli_ok(&["keys", "create", "--function", function])
            .trim()
            .to_string()
    }

    /// POSTs `body` to `path` with an API key.
    pub fn post_with_key(&self, path: &str, body: &str, key: &str) -> Reply {
        request(
            &self.url(path),
            "POST",
            body.as_bytes(),
            &[("x-api-key", key)],
        )
    }

    /// Deploys a spec file and returns what the CLI printed.
    pub fn deploy(&self, spec: &Path) -> String {
        self.cli_ok(&["deploy", spec.to_str().unwrap()])
    }
}

/// One text of the text-embedder's reference (functions/text-embedder/tests/reference.json).
pub struct Case {
    pub text: String,
    pub ids: Vec<i64>,
    pub embedding: Vec<f32>,
}

pub fn reference() -> Vec<Case> {
    let path = repo().join("functions/text-embedder/tests/reference.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cases: Vec<Case> = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect(),
            embedding: c["embedding_e4"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32 * 1e-4)
                .collect(),
        })
        .collect();
    assert!(
        cases.len() >= 200,
        "the reference corpus has {} texts",
        cases.len()
    );
    cases
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

pub fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// A webhook receiver on 127.0.0.1: every POST's JSON body arrives on the channel with the
/// moment it came; it answers 200. Stops with the test process.
pub fn webhook_receiver() -> (String, mpsc::Receiver<(std::time::Instant, Value)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut data = Vec::new();
            let mut buffer = [0u8; 4096];
            // Headers, then as many body bytes as Content-Length says.
            let body = loop {
                let Ok(n) = stream.read(&mut buffer) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                data.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&data).into_owned();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    break Some(data[end + 4..end + 4 + length].to_vec());
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Some(body) = body {
                if let Ok(value) = serde_json::from_slice(&body) {
                    let _ = tx.send((std::time::Instant::now(), value));
                }
            }
        }
    });
    (url, rx)
}

/// Customers drawn as `functions/churn-predictor/model/train.py` draws its training data (a
/// small deterministic generator, so the test needs no crate): lognormal spend, exponential days,
/// Poisson tickets, tiers 50/30/20.
pub struct Customers {
    pub state: u64,
}

impl Customers {
    fn uniform(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn next(&mut self, spend_factor: f64) -> Value {
        let normal = (-2.0 * self.uniform().ln()).sqrt()
            * (2.0 * std::f64::consts::PI * self.uniform()).cos();
        let spend = (60f64.ln() + 0.6 * normal).exp() * spend_factor;
        let days = (-self.uniform().ln() * 30.0).min(365.0);
        // Poisson(0.8) by Knuth's method.
        let (limit, mut product, mut tickets) = ((-0.8f64).exp(), 1.0, -1);
        while product > limit {
            product *= self.uniform();
            tickets += 1;
        }
        let u = self.uniform();
        let tier = if u < 0.5 {
            "basic"
        } else if u < 0.8 {
            "standard"
        } else {
            "premium"
        };
        json!({
            "avg_monthly_spend": (spend * 100.0).round() / 100.0,
            "days_since_last_purchase": (days * 10.0).round() / 10.0,
            "support_tickets_last_30d": tickets,
            "subscription_tier": tier,
        })
    }
}

/// Customers sent from a few clients (each spend multiplied by the current factor) until
/// stopped, with the answers of each variant counted.
pub struct Traffic {
    spend_factor: std::sync::atomic::AtomicU64,
    pub stop: AtomicBool,
    fallback_answers: AtomicUsize,
    primary_answers: AtomicUsize,
}

impl Traffic {
    pub fn new(spend_factor: f64) -> Traffic {
        Traffic {
            spend_factor: std::sync::atomic::AtomicU64::new(spend_factor.to_bits()),
            stop: AtomicBool::new(false),
            fallback_answers: AtomicUsize::new(0),
            primary_answers: AtomicUsize::new(0),
        }
    }

    pub fn set_spend(&self, factor: f64) {
        self.spend_factor.store(factor.to_bits(), Ordering::Relaxed);
    }

    pub fn fallback_answers(&self) -> usize {
        self.fallback_answers.load(Ordering::Relaxed)
    }

    pub fn primary_answers(&self) -> usize {
        self.primary_answers.load(Ordering::Relaxed)
    }

    /// One client per seed, in `scope`.
    pub fn start<'s>(
        &'s self,
        scope: &'s std::thread::Scope<'s, '_>,
        host: &'s TestHost,
        seeds: [u64; 2],
    ) {
        for seed in seeds {
            scope.spawn(move || self.client(host, seed));
        }
    }

    fn client(&self, host: &TestHost, seed: u64) {
        let mut customers = Customers { state: seed };
        let started = Instant::now();
        // Bounded: the test stops it, and it stops itself after 2 minutes in any case.
        while !self.stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
            let factor = f64::from_bits(self.spend_factor.load(Ordering::Relaxed));
            let reply = host.post("/v1/churn", &customers.next(factor).to_string());
            assert_eq!(reply.status, 200, "{}", reply.body);
            match reply.header("x-aifn-variant") {
                Some("fallback") => self.fallback_answers.fetch_add(1, Ordering::Relaxed),
                _ => self.primary_answers.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}
