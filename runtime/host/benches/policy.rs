//! What the endpoint policies cost a request before the function runs: API-key auth, the
//! per-caller rate limit, and a cache hit (key hashing + lookup).
//!
//! cargo bench -p aifn-host --bench policy

use aifn_host::keys::KeyStore;
use aifn_host::metrics::Metrics;
use aifn_host::policy::access::{self, JwtVerifier};
use aifn_host::policy::cache::CachedReply;
use aifn_host::policy::rate_limit::RateLimiters;
use aifn_host::policy::EndpointPolicy;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use hyper::header::{HeaderMap, HeaderValue};
use std::hint::black_box;
use std::sync::Arc;

const SPEC: &str = r#"apiVersion: ai.function/v1
kind: Function
metadata: {name: bench}
spec:
  model: {id: m, runtime: onnx}
  endpoints:
    - route: /v1/bench
      method: POST
      auth: api_key
      rate_limit: {requests_per_second: 1000000, burst: 1000000}
      cache: {ttl: 60s}
"#;

fn policies(c: &mut Criterion) {
    let spec = aifn_spec::parse(SPEC).unwrap();
    let metrics = Arc::new(Metrics::default());
    let limiters = RateLimiters::default();
    let policy = EndpointPolicy::new("bench", &spec.spec.endpoints[0], &limiters, &metrics);
    let dir = std::env::temp_dir().join(format!("aifn-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let store = std::sync::Arc::new(aifn_host::store::Store::open(&dir).unwrap());
    let keys = KeyStore::open(store).unwrap();
    // A realistic store: the caller's key among a hundred others.
    for _ in 0..99 {
        keys.create("other", None, None).unwrap();
    }
    let (_, secret) = keys.create("bench", None, None).unwrap();
    let jwt = JwtVerifier::default();
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_str(&secret).unwrap());
    let peer = "127.0.0.1".parse().unwrap();
    let body = br#"{"avg_monthly_spend": 42.5, "days_since_last_purchase": 12, "support_tickets_last_30d": 1, "subscription_tier": "premium"}"#;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let cache = policy.cache.as_ref().unwrap();
    let digest = "0".repeat(64);
    let reply = || async {
        Ok::<_, ()>(CachedReply {
            status: 200,
            content_type: "application/json".into(),
            body: Bytes::from_static(b"{\"churn_probability\":0.187}"),
        })
    };
    // Warm the entry so every measured lookup is a hit.
    let caller = ready(access::check(&policy, "bench", peer, &headers, &keys, &jwt)).unwrap();
    runtime
        .block_on(cache.lookup_or_run(&digest, "/v1/bench", &caller, body, reply()))
        .unwrap();

    c.bench_function("auth (api key among 100)", |b| {
        b.iter(|| {
            ready(access::check(
                black_box(&policy),
                "bench",
                peer,
                &headers,
                &keys,
                &jwt,
            ))
            .unwrap()
        })
    });
    let limiter = policy.rate_limit.as_ref().unwrap();
    c.bench_function("rate limit (per caller)", |b| {
        b.iter(|| {
            // At millions of checks a second the budget runs out; refusing costs the same.
            let _ = limiter.check(black_box(&caller));
        })
    });
    c.bench_function("cache hit (key + lookup)", |b| {
        b.iter(|| {
            runtime
                .block_on(cache.lookup_or_run(
                    &digest,
                    "/v1/bench",
                    &caller,
                    black_box(body),
                    reply(),
                ))
                .unwrap()
        })
    });
    c.bench_function("auth + rate limit + cache hit", |b| {
        b.iter(|| {
            let caller =
                ready(access::check(&policy, "bench", peer, &headers, &keys, &jwt)).unwrap();
            let _ = limiter.check(&caller);
            runtime
                .block_on(cache.lookup_or_run(
                    &digest,
                    "/v1/bench",
                    &caller,
                    black_box(body),
                    reply(),
                ))
                .unwrap()
        })
    });
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, policies);
criterion_main!(benches);

/// The value of a future that is ready when first polled (an API-key check never waits: only
/// fetching an identity provider's keys does).
fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut context) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => panic!("the check waited"),
    }
}
