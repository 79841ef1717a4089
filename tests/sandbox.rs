//! The sandbox around modules, probed from inside by the hostile test module
//! (`tests/guests/hostile`): no capability the spec does not grant, bounded outputs, a fresh
//! instance per request, failures that name the function and version. (Deadlines, memory caps and
//! traps are in `end_to_end.rs`.)

use crate::support;

use serde_json::{json, Value};
use support::*;

fn probe(host: &TestHost, route: &str, body: &str) -> Value {
    let reply = host.post(route, body);
    assert_eq!(reply.status, 200, "{body}: {}", reply.body);
    reply.json()
}

#[test]
fn a_module_gets_no_capability_and_no_state_from_other_requests() {
    let dir = temp_dir("sandbox");
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&hostile_spec(&dir, &[]));

    // No environment and no arguments, though the host has both.
    assert!(std::env::vars().count() > 0);
    assert_eq!(
        probe(&host, "/v1/hostile", "env"),
        json!({ "vars": 0, "args": 0 })
    );

    // No file: not the root, not the host's files, not a working directory.
    let fs = probe(&host, "/v1/hostile", "fs");
    let attempts = fs.as_object().unwrap();
    assert_eq!(attempts.len(), 4, "{fs}");
    for (path, outcome) in attempts {
        assert_ne!(outcome, "opened", "{path} was readable: {fs}");
    }

    // No network: a listener on the host's loopback is never reached.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap();
    let net = probe(&host, "/v1/hostile", &format!("net:{address}"));
    assert_eq!(net["connected"], false, "{net}");
    // Refused by the host's WASI (no socket address is allowed), not merely unsupported.
    assert!(
        net["error"].as_str().unwrap().contains("Permission denied"),
        "{net}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the module connected to {address}"
    );

    // No host clock: the wall clock a module reads stands at the Unix epoch.
    assert_eq!(
        probe(&host, "/v1/hostile", "clock"),
        json!({ "unix_seconds": 0 })
    );

    // A fresh instance per request: no request sees what an earlier one left, nor does another
    // function with the same module.
    let other = hostile_spec(
        &dir,
        &[
            ("name: hostile", "name: hostile-b"),
            ("route: /v1/hostile", "route: /v1/hostile-b"),
        ],
    );
    host.deploy(&other);
    for route in ["/v1/hostile", "/v1/hostile-b", "/v1/hostile"] {
        for _ in 0..3 {
            assert_eq!(probe(&host, route, "state"), json!({ "calls": 1 }));
        }
    }
}

#[test]
fn instances_are_reused_only_when_the_spec_allows_and_never_after_a_trap() {
    let dir = temp_dir("sandbox-reuse");
    let host = TestHost::start(&dir.join("state"));
    let spec = hostile_spec(
        &dir,
        &[
            (
                "    timeout: 100ms",
                "    timeout: 100ms\n    isolation: instance",
            ),
            ("min_replicas: 2", "min_replicas: 1"),
            ("max_replicas: 8", "max_replicas: 1"),
        ],
    );
    host.deploy(&spec);
    // One replica, requests one after another: the same instance serves them all.
    for calls in 1..=3 {
        assert_eq!(
            probe(&host, "/v1/hostile", "state"),
            json!({ "calls": calls })
        );
    }
    // A trapped instance is thrown away: the next request starts afresh.
    assert_eq!(host.post("/v1/hostile", "trap").status, 500);
    assert_eq!(probe(&host, "/v1/hostile", "state"), json!({ "calls": 1 }));
    // So is one stopped at its deadline.
    assert_eq!(probe(&host, "/v1/hostile", "state"), json!({ "calls": 2 }));
    assert_eq!(host.post("/v1/hostile", "loop").status, 504);
    assert_eq!(probe(&host, "/v1/hostile", "state"), json!({ "calls": 1 }));
}

#[test]
fn capabilities_reach_a_module_only_as_far_as_the_spec_grants_them() {
    let dir = temp_dir("sandbox-grants");
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("note.txt"), "granted").unwrap();
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grants = format!(
        "    timeout: 100ms\n    capabilities:\n      env: {{ GREETING: hello }}\n      wall_clock: true\n      read_dirs: {{ {}: /data }}\n      network: [\"{}\"]",
        shared.display(),
        allowed.local_addr().unwrap()
    );
    let host = TestHost::start(&dir.join("state"));
    host.deploy(&hostile_spec(&dir, &[("    timeout: 100ms", &grants)]));

    // The variable the spec sets, and nothing of the host's environment.
    assert_eq!(
        probe(&host, "/v1/hostile", "env"),
        json!({ "vars": 1, "args": 0 })
    );
    assert_eq!(
        probe(&host, "/v1/hostile", "var"),
        json!({ "greeting": "hello" })
    );
    // The granted directory, read-only, under the name the spec gives it; nothing else.
    assert_eq!(
        probe(&host, "/v1/hostile", "read:/data/note.txt"),
        json!({ "read": "granted" })
    );
    let outside = probe(&host, "/v1/hostile", "read:/etc/hostname");
    assert!(outside["error"].is_string(), "{outside}");
    let escape = probe(&host, "/v1/hostile", "read:/data/../../etc/hostname");
    assert!(escape["error"].is_string(), "{escape}");
    // The host's wall clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = probe(&host, "/v1/hostile", "clock")["unix_seconds"]
        .as_u64()
        .unwrap();
    assert!(clock.abs_diff(now) < 60, "module clock {clock}, host {now}");
    // The granted address, and no other.
    let net = probe(
        &host,
        "/v1/hostile",
        &format!("net:{}", allowed.local_addr().unwrap()),
    );
    assert_eq!(net["connected"], true, "{net}");
    let net = probe(
        &host,
        "/v1/hostile",
        &format!("net:{}", refused.local_addr().unwrap()),
    );
    assert_eq!(net["connected"], false, "{net}");

    // A granted directory that does not exist is refused at deploy, naming the field.
    let missing = hostile_spec(
        &dir,
        &[
            ("name: hostile", "name: hostile-missing"),
            ("route: /v1/hostile", "route: /v1/hostile-missing"),
            (
                "    timeout: 100ms",
                "    timeout: 100ms\n    capabilities:\n      read_dirs: { /nonexistent/aifn: /data }",
            ),
        ],
    );
    let out = host.cli(&["deploy", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("module.capabilities.read_dirs: cannot open /nonexistent/aifn"),
        "{stderr}"
    );
}

#[test]
fn outputs_are_bounded_and_failures_name_the_function_and_version() {
    let dir = temp_dir("sandbox-output");
    let host = TestHost::start_with(
        &dir.join("state"),
        &["--max-module-output-bytes", "1048576"],
    );
    host.deploy(&hostile_spec(&dir, &[]));

    // 8 MiB from postprocess against a 1 MiB limit: cut off with a clear error, while wasmtime
    // copies it out of the module (its hostcall fuel is the limit), so the host never holds it.
    let reply = host.post("/v1/hostile", "big");
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (500, "function_output_too_large"),
        "{}",
        reply.body
    );
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("module output is over the limit of 1048576 bytes"),
        "{message}"
    );
    assert_eq!(
        reply.json()["error"]["details"],
        json!({ "function": "hostile", "version": 1 })
    );

    // A trap names the function and version too, and the host goes on serving.
    let reply = host.post("/v1/hostile", "trap");
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(
        reply.json()["error"]["details"],
        json!({ "function": "hostile", "version": 1 })
    );
    assert_eq!(host.post("/v1/hostile", "fine").status, 200);
}
