//! Per-endpoint policies against a real host: API keys, JWTs, IP allowlists, rate limits, the
//! response cache, deadlines, body limits and the concurrency bound.

use crate::support;

use aifn_host::api::Route;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

/// The churn predictor with its endpoint's `auth: none` line replaced by `endpoint` (YAML lines,
/// indented as endpoint fields).
fn spec_with(
    dir: &std::path::Path,
    file: &str,
    endpoint: &str,
    more: &[(&str, &str)],
) -> std::path::PathBuf {
    let mut edits = vec![("      auth: none", endpoint)];
    edits.extend_from_slice(more);
    churn_spec(dir, file, &edits)
}

fn customer() -> String {
    churn_expectations()[0].0.to_string()
}

fn metric(host: &TestHost, line_start: &str) -> f64 {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let text = request(
        &host.admin_url("/metrics"),
        "GET",
        b"",
        &[("authorization", &bearer)],
    )
    .body;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[test]
fn rate_limits_count_per_caller_answer_429_with_headers_and_survive_redeploys() {
    let dir = temp_dir("rate-limit");
    let host = TestHost::start(&dir.join("state"));
    let endpoint = "      auth: api_key\n      rate_limit: {requests_per_second: 0.1, burst: 3}";
    host.deploy(&spec_with(&dir, "f.yaml", endpoint, &[]));
    let alice = host.new_key("churn-predictor");
    let bob = host.new_key("churn-predictor");
    let call = |key: &str| host.post_with_key("/v1/churn", &customer(), key);

    for remaining in ["2", "1", "0"] {
        let reply = call(&alice);
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("ratelimit-limit"), Some("3"));
        assert_eq!(reply.header("ratelimit-remaining"), Some(remaining));
        assert!(
            reply
                .header("ratelimit-reset")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                <= 30
        );
    }
    let refused = call(&alice);
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (429, "rate_limited"),
        "{}",
        refused.body
    );
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "retry after {retry} s");
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // Bob has a budget of his own.
    assert_eq!(call(&bob).status, 200);
    // A data-plane key never opens the control plane.
    let bearer = format!("Bearer {bob}");
    assert_eq!(
        request(
            &host.admin_url(&Route::Functions.path()),
            "GET",
            b"",
            &[("authorization", &bearer)]
        )
        .status,
        401
    );

    // A new version keeps the callers' budgets.
    let v2 = spec_with(
        &dir,
        "v2.yaml",
        endpoint,
        &[("timeout: 100ms", "timeout: 150ms")],
    );
    assert!(host
        .cli_ok(&["deploy", v2.to_str().unwrap()])
        .contains("version 2"));
    assert_eq!(call(&alice).status, 429);

    // Under concurrent load the budget holds exactly: 3 of 40 get through for a fresh caller.
    let carol = host.new_key("churn-predictor");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..40).map(|_| s.spawn(|| call(&carol).status)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        37,
        "{statuses:?}"
    );
    assert!(
        metric(
            &host,
            r#"aifn_rate_limited_total{function="churn-predictor",route="/v1/churn",outcome="caller"}"#
        ) >= 39.0
    );
}

#[test]
fn the_host_wide_limit_applies_to_everyone() {
    let dir = temp_dir("host-limit");
    let host = TestHost::start_with(&dir.join("state"), &["--max-requests-per-second", "0.5"]);
    host.cli_ok(&["deploy", churn_spec(&dir, "f.yaml", &[]).to_str().unwrap()]);
    assert_eq!(host.post("/v1/churn", &customer()).status, 200);
    let refused = host.post("/v1/churn", &customer());
    assert_eq!(refused.status, 429);
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("host's rate limit"));
}

#[test]
fn the_cache_answers_repeats_never_crosses_versions_or_callers_and_runs_once_for_a_crowd() {
    let dir = temp_dir("cache");
    let host = TestHost::start(&dir.join("state"));
    let endpoint = "      auth: api_key\n      cache: {ttl: 60s, max_entries: 100, max_bytes: 1Mi}";
    host.deploy(&spec_with(&dir, "f.yaml", endpoint, &[]));
    let key = host.new_key("churn-predictor");
    let call = |body: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("x-api-key", key.as_str())];
        headers.extend_from_slice(extra);
        request(&host.url("/v1/churn"), "POST", body.as_bytes(), &headers)
    };
    let (request_body, expected) = &churn_expectations()[1];
    let first = call(&request_body.to_string(), &[]);
    assert_eq!(
        (first.status, first.header("x-cache")),
        (200, Some("miss")),
        "{}",
        first.body
    );
    // The same JSON with its keys in another order is the same request.
    let mut reordered: Vec<(String, Value)> = request_body
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .collect();
    reordered.reverse();
    let reordered = format!(
        "{{{}}}",
        reordered
            .iter()
            .map(|(k, v)| format!("{k:?}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let second = call(&reordered, &[]);
    assert_eq!(second.header("x-cache"), Some("hit"));
    assert_eq!(second.body, first.body);
    assert!((second.json()["churn_probability"].as_f64().unwrap() - expected).abs() < 1e-5);
    assert_eq!(
        call(&reordered, &[("cache-control", "no-cache")]).header("x-cache"),
        Some("bypass")
    );
    assert_eq!(call(&customer(), &[]).header("x-cache"), Some("miss"));
    // Failures are not cached.
    assert_eq!(call("{broken", &[]).status, 400);
    assert_eq!(call("{broken", &[]).header("x-cache"), None);

    // A new version never answers from the old version's entries.
    let v2 = spec_with(
        &dir,
        "v2.yaml",
        endpoint,
        &[("timeout: 100ms", "timeout: 150ms")],
    );
    host.deploy(&v2);
    let after = call(&request_body.to_string(), &[]);
    assert_eq!(
        (after.header("x-cache"), after.header("x-aifn-version")),
        (Some("miss"), Some("2"))
    );

    // 1,000 concurrent identical requests on a cold cache run the model exactly once.
    let crowd = json!({ "customers": [churn_expectations()[3].0] }).to_string();
    let before = metric(
        &host,
        r#"aifn_stage_duration_seconds_count{function="churn-predictor",stage="inference"}"#,
    );
    let barrier = std::sync::Barrier::new(1000);
    let bodies: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..1000)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let reply = call(&crowd, &[]);
                    (reply.status, reply.body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        bodies
            .iter()
            .all(|(status, body)| *status == 200 && *body == bodies[0].1),
        "every caller got the one answer"
    );
    let after = metric(
        &host,
        r#"aifn_stage_duration_seconds_count{function="churn-predictor",stage="inference"}"#,
    );
    assert_eq!(
        after - before,
        1.0,
        "the model ran once for 1,000 identical requests"
    );
}

#[test]
fn per_caller_caches_keep_callers_apart() {
    let dir = temp_dir("cache-per-caller");
    let host = TestHost::start(&dir.join("state"));
    let endpoint = "      auth: api_key\n      cache: {ttl: 60s, per_caller: true}";
    host.deploy(&spec_with(&dir, "f.yaml", endpoint, &[]));
    let alice = host.new_key("churn-predictor");
    let bob = host.new_key("churn-predictor");
    let call = |key: &str| host.post_with_key("/v1/churn", &customer(), key);
    assert_eq!(call(&alice).header("x-cache"), Some("miss"));
    assert_eq!(call(&alice).header("x-cache"), Some("hit"));
    assert_eq!(
        call(&bob).header("x-cache"),
        Some("miss"),
        "bob never sees alice's entry"
    );
}

fn token(
    claims: Value,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[test]
fn jwt_endpoints_check_signature_issuer_audience_and_expiry() {
    let dir = temp_dir("jwt");
    let jwks = repo().join("tests/fixtures/jwt/jwks.json");
    let host = TestHost::start_with(
        &dir.join("state"),
        &[
            "--jwt-jwks",
            jwks.to_str().unwrap(),
            "--jwt-secret",
            "test-hs256-secret",
        ],
    );
    let endpoint =
        "      auth: jwt\n      jwt: {issuer: https://auth.example.test/, audience: aifn-tests}";
    host.deploy(&spec_with(&dir, "f.yaml", endpoint, &[]));

    let pem = std::fs::read(repo().join("tests/fixtures/jwt/test-rsa-private.pem")).unwrap();
    let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let hs = jsonwebtoken::EncodingKey::from_secret(b"test-hs256-secret");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = |exp: u64, aud: &str| json!({ "sub": "user-1", "iss": "https://auth.example.test/", "aud": aud, "exp": exp });
    let call = |token: &str| {
        let bearer = format!("Bearer {token}");
        request(
            &host.url("/v1/churn"),
            "POST",
            customer().as_bytes(),
            &[("authorization", &bearer)],
        )
    };
    use jsonwebtoken::Algorithm::{HS256, RS256};

    assert_eq!(
        call(&token(
            claims(now + 300, "aifn-tests"),
            &rsa,
            RS256,
            Some("aifn-test-1")
        ))
        .status,
        200
    );
    assert_eq!(
        call(&token(claims(now + 300, "aifn-tests"), &hs, HS256, None)).status,
        200
    );

    let expired = call(&token(
        claims(now - 100, "aifn-tests"),
        &rsa,
        RS256,
        Some("aifn-test-1"),
    ));
    assert_eq!(
        (expired.status, expired.error_code().as_str()),
        (401, "unauthorized")
    );
    assert!(
        expired.body.contains("ExpiredSignature"),
        "{}",
        expired.body
    );
    let wrong_audience = call(&token(
        claims(now + 300, "someone-else"),
        &rsa,
        RS256,
        Some("aifn-test-1"),
    ));
    assert!(
        wrong_audience.status == 401 && wrong_audience.body.contains("InvalidAudience"),
        "{}",
        wrong_audience.body
    );
    let forged = jsonwebtoken::EncodingKey::from_secret(b"not-the-secret");
    let wrong_signature = call(&token(
        claims(now + 300, "aifn-tests"),
        &forged,
        HS256,
        None,
    ));
    assert!(
        wrong_signature.status == 401 && wrong_signature.body.contains("InvalidSignature"),
        "{}",
        wrong_signature.body
    );
    let unknown_kid = call(&token(
        claims(now + 300, "aifn-tests"),
        &rsa,
        RS256,
        Some("other"),
    ));
    assert_eq!(unknown_kid.status, 401);
    let missing = host.post("/v1/churn", &customer());
    assert_eq!(
        (missing.status, missing.header("www-authenticate")),
        (401, Some("Bearer"))
    );
    assert!(
        metric(
            &host,
            r#"aifn_auth_failures_total{function="churn-predictor",route="/v1/churn",outcome="invalid"}"#
        ) >= 4.0
    );
}

#[test]
fn a_jwt_endpoint_needs_keys_on_the_host() {
    let dir = temp_dir("jwt-no-keys");
    let host = TestHost::start(&dir.join("state"));
    let endpoint = "      auth: jwt\n      jwt: {issuer: a, audience: b}";
    let out = host.cli(&[
        "deploy",
        spec_with(&dir, "f.yaml", endpoint, &[]).to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("this host has no key to verify tokens"),
        "{out:?}"
    );
}

#[test]
fn allowlists_body_limits_deadlines_and_the_concurrency_bound() {
    let dir = temp_dir("bounds");
    let host = TestHost::start(&dir.join("state"));
    let closed = spec_with(
        &dir,
        "closed.yaml",
        "      allow_ips: [10.0.0.0/8]\n      max_body: 64",
        &[],
    );
    host.deploy(&closed);
    let refused = host.post("/v1/churn", &customer());
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (403, "address_not_allowed"),
        "{}",
        refused.body
    );

    let open = spec_with(
        &dir,
        "open.yaml",
        "      allow_ips: [127.0.0.1, \"::1\"]\n      max_body: 256",
        &[],
    );
    host.deploy(&open);
    assert_eq!(host.post("/v1/churn", &customer()).status, 200);
    let padded = format!("{{\"pad\": \"{}\"}}", "x".repeat(300));
    assert_eq!(host.post("/v1/churn", &padded).status, 413);

    // A module that loops: the endpoint's 300ms deadline answers first (504), and with
    // max_concurrency 2 on 2 replicas, a third request while two loop is refused at once (503).
    let spec = hostile_spec(
        &dir,
        &[
            ("      auth: none", "      timeout: 300ms"),
            ("timeout: 100ms", "timeout: 3s"),
            (
                "target_latency: 20ms",
                "target_latency: 20ms\n    max_concurrency: 2",
            ),
        ],
    );
    host.deploy(&spec);

    let started = std::time::Instant::now();
    let slow = host.post("/v1/hostile", "loop");
    assert_eq!(
        (slow.status, slow.error_code().as_str()),
        (504, "request_timeout"),
        "{}",
        slow.body
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // One instance still spins on that loop (its module deadline is 3 s); occupy the other, and
    // wait until the host counts both busy.
    let _second = std::thread::spawn({
        let url = host.url("/v1/hostile");
        move || request(&url, "POST", b"loop", &[])
    });
    wait_until_seen("both instances busy", Duration::from_secs(2), || {
        let load = host.status("hostile").load;
        if load.running == 2 {
            Ok(())
        } else {
            Err(format!("{load:?}"))
        }
    });
    let third = host.post("/v1/hostile", "fine");
    assert_eq!(
        (third.status, third.error_code().as_str()),
        (503, "overloaded"),
        "{}",
        third.body
    );
    assert_eq!(third.header("retry-after"), Some("1"));
}

#[test]
fn slow_clients_are_cut_off_while_sending_headers() {
    let dir = temp_dir("slow-client");
    let host = TestHost::start_with(&dir.join("state"), &["--header-timeout-ms", "300"]);
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(host.base.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    stream
        .write_all(b"POST /v1/churn HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    // Never finish the headers: the host closes the connection (possibly after a 408).
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cut off after {:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // The host itself is fine.
    assert_eq!(host.get("/healthz").status, 200);
}
