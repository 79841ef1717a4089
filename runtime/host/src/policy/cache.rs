//! Response caching per endpoint, with `moka`: bounded by entries and bytes, entries expire after
//! the endpoint's `ttl`, and concurrent identical misses run the function once (moka coalesces
//! concurrent initialisations of one key).
//!
//! A key is the sha256 of the function version's digest, the route, the caller (when responses are
//! per caller) and the canonical request body, so a new version never sees an old version's entries.

use super::Caller;
use crate::metrics::{CacheLabels, Metrics};
use aifn_spec::CachePolicy;
use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::sync::Arc;

/// A successful answer, as it is replayed.
#[derive(Debug, Clone)]
pub struct CachedReply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

pub struct ResponseCache {
    entries: Cache<[u8; 32], Arc<CachedReply>>,
    per_caller: bool,
}

/// Whether the answer came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    Miss,
}

impl ResponseCache {
    pub fn new(
        function: &str,
        route: &str,
        policy: &CachePolicy,
        metrics: Arc<Metrics>,
    ) -> ResponseCache {
        // Each entry weighs at least max_bytes / max_entries, so the byte bound also bounds the count.
        let floor =
            (policy.max_bytes.0 / policy.max_entries.max(1)).clamp(1, u64::from(u32::MAX)) as u32;
        let labels = CacheLabels {
            function: function.to_string(),
            route: route.to_string(),
        };
        let entries = Cache::builder()
            .max_capacity(policy.max_bytes.0)
            .weigher(move |_key, reply: &Arc<CachedReply>| {
                let size = u32::try_from(reply.body.len() + reply.content_type.len() + 64)
                    .unwrap_or(u32::MAX);
                size.max(floor)
            })
            .time_to_live(policy.ttl.0)
            .eviction_listener(move |_key, _value, cause| {
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    metrics.cache_evictions.get_or_create(&labels).inc();
                }
            })
            .build();
        ResponseCache {
            entries,
            per_caller: policy.per_caller,
        }
    }

    /// The key of a request whose body means the same as `body` (JSON canonicalised).
    pub fn key(&self, version_digest: &str, route: &str, caller: &Caller, body: &[u8]) -> [u8; 32] {
        self.hash(
            version_digest,
            route,
            caller,
            b"json",
            &canonical_body(body),
        )
    }

    /// `form` keeps exact-bytes keys and canonical keys apart.
    fn hash(
        &self,
        version_digest: &str,
        route: &str,
        caller: &Caller,
        form: &[u8],
        body: &[u8],
    ) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(version_digest.as_bytes());
        hasher.update(b"\0");
        hasher.update(route.as_bytes());
        hasher.update(b"\0");
        if self.per_caller {
            hasher.update(caller.key().as_bytes());
        }
        hasher.update(b"\0");
        hasher.update(form);
        hasher.update(b"\0");
        hasher.update(body);
        hasher.finalize().into()
    }

    /// Looks a request up: first by its exact bytes (no parsing: the common case of a client
    /// repeating itself), then by its canonical form, running `run` on a miss. The exact bytes are
    /// then remembered as an alias of the canonical entry (with its own `ttl`).
    pub async fn lookup_or_run<E, F>(
        &self,
        version_digest: &str,
        route: &str,
        caller: &Caller,
        body: &[u8],
        run: F,
    ) -> Result<(Arc<CachedReply>, Lookup), Arc<E>>
    where
        F: Future<Output = Result<CachedReply, E>>,
        E: Send + Sync + 'static,
    {
        let exact = self.hash(version_digest, route, caller, b"raw", body);
        if let Some(found) = self.entries.get(&exact).await {
            return Ok((found, Lookup::Hit));
        }
        let canonical = self.key(version_digest, route, caller, body);
        let found = self.get_or_run(canonical, run).await?;
        self.entries.insert(exact, found.0.clone()).await;
        Ok(found)
    }

    /// The cached answer, or the one `run` produces (stored only when it is a success). Concurrent
    /// callers with the same key wait for one `run`; an error is shared with them, not stored.
    pub async fn get_or_run<E, F>(
        &self,
        key: [u8; 32],
        run: F,
    ) -> Result<(Arc<CachedReply>, Lookup), Arc<E>>
    where
        F: Future<Output = Result<CachedReply, E>>,
        E: Send + Sync + 'static,
    {
        // The common case first: a plain lookup is cheaper than the coalescing entry API.
        if let Some(found) = self.entries.get(&key).await {
            return Ok((found, Lookup::Hit));
        }
        let entry = self
            .entries
            .entry_by_ref(&key)
            .or_try_insert_with(async { run.await.map(Arc::new) })
            .await?;
        let lookup = if entry.is_fresh() {
            Lookup::Miss
        } else {
            Lookup::Hit
        };
        Ok((entry.into_value(), lookup))
    }

    /// Entries now held (approximate: moka applies evictions in the background).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

/// JSON bodies that mean the same (key order, spacing) share a key; other bodies are used as is.
pub fn canonical_body(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut out = Vec::with_capacity(body.len());
            write_canonical(&value, &mut out);
            out
        }
        Err(_) => body.to_vec(),
    }
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).expect("writing to a Vec");
                out.push(b':');
                write_canonical(&map[key], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).expect("writing to a Vec"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalent_json_bodies_share_a_key() {
        assert_eq!(
            canonical_body(br#"{"b": 1, "a": [1, {"y":2,"x":1}]}"#),
            canonical_body(br#"{"a":[1,{"x":1,"y":2}],"b":1}"#)
        );
        assert_ne!(canonical_body(br#"{"a":1}"#), canonical_body(br#"{"a":2}"#));
        assert_eq!(canonical_body(b"not json"), b"not json");
    }

    fn cache(per_caller: bool) -> ResponseCache {
        let policy = CachePolicy {
            ttl: aifn_spec::HumanDuration(std::time::Duration::from_secs(60)),
            max_entries: 100,
            max_bytes: aifn_spec::Bytes(1 << 20),
            per_caller,
        };
        ResponseCache::new("f", "/r", &policy, Arc::new(Metrics::default()))
    }

    #[test]
    fn keys_separate_versions_and_optionally_callers() {
        let alice = Caller::Subject("alice".into());
        let bob = Caller::Subject("bob".into());
        let shared = cache(false);
        assert_eq!(
            shared.key("v1", "/r", &alice, b"{}"),
            shared.key("v1", "/r", &bob, b"{}")
        );
        assert_ne!(
            shared.key("v1", "/r", &alice, b"{}"),
            shared.key("v2", "/r", &alice, b"{}")
        );
        let private = cache(true);
        assert_ne!(
            private.key("v1", "/r", &alice, b"{}"),
            private.key("v1", "/r", &bob, b"{}")
        );
    }

    #[tokio::test]
    async fn memory_stays_bounded_by_entries() {
        let policy = CachePolicy {
            ttl: aifn_spec::HumanDuration(std::time::Duration::from_secs(60)),
            max_entries: 3,
            max_bytes: aifn_spec::Bytes(1 << 20),
            per_caller: false,
        };
        let metrics = Arc::new(Metrics::default());
        let cache = ResponseCache::new("f", "/r", &policy, metrics.clone());
        for i in 0..20u8 {
            cache
                .get_or_run::<(), _>([i; 32], async {
                    Ok(CachedReply {
                        status: 200,
                        content_type: String::new(),
                        body: Bytes::from_static(b"answer"),
                    })
                })
                .await
                .unwrap();
        }
        cache.entries.run_pending_tasks().await;
        assert!(cache.entry_count() <= 3, "{} entries", cache.entry_count());
        assert!(metrics
            .render()
            .contains("aifn_cache_evictions_total{function=\"f\",route=\"/r\"}"));
    }

    #[tokio::test]
    async fn concurrent_misses_run_once_and_errors_are_not_stored() {
        let cache = Arc::new(cache(false));
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = [7u8; 32];
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, runs) = (cache.clone(), runs.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_run::<(), _>(key, async {
                            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok(CachedReply {
                                status: 200,
                                content_type: "application/json".into(),
                                body: Bytes::from_static(b"{}"),
                            })
                        })
                        .await
                        .unwrap()
                        .1
                })
            })
            .collect();
        let mut misses = 0;
        for task in tasks {
            if task.await.unwrap() == Lookup::Miss {
                misses += 1;
            }
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(misses, 1);

        let other = [8u8; 32];
        assert!(cache
            .get_or_run::<&str, _>(other, async { Err("boom") })
            .await
            .is_err());
        let (_, lookup) = cache
            .get_or_run::<(), _>(other, async {
                Ok(CachedReply {
                    status: 200,
                    content_type: String::new(),
                    body: Bytes::new(),
                })
            })
            .await
            .unwrap();
        assert_eq!(lookup, Lookup::Miss, "the failed run was not cached");
    }
}
