//! Signing keys fetched from an identity provider (`jwt.keys: discovery` or a JWKS URL), kept
//! working while it rotates them:
//!
//! - the keys are cached and refreshed in the background when `Cache-Control: max-age` (clamped
//!   to [`MIN_MAX_AGE`, `MAX_MAX_AGE`]) says they are old, while the cached ones keep serving;
//! - a token whose `kid` is unknown triggers one refresh, shared by every request waiting on it;
//!   after a fetch, another waits [`COOLDOWN`], so a storm of unknown `kid`s costs one fetch;
//! - when the provider is down, the keys already fetched keep verifying tokens.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys are kept at least this long, whatever the provider says (no fetch per request)...
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// ...and at most this long.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Without `Cache-Control`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Between two fetches for unknown `kid`s.
pub const COOLDOWN: Duration = Duration::from_secs(2);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the keys are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// `ISSUER/.well-known/openid-configuration` names the JWKS.
    Discovery {
        issuer: String,
    },
    Url(String),
}

/// One verifying key.
pub struct Key {
    pub kid: Option<String>,
    pub algorithm: Algorithm,
    pub key: DecodingKey,
}

/// The keys fetched last, and when.
struct Fetched {
    keys: Vec<Arc<Key>>,
    /// When they go stale (a background refresh is due).
    stale_at: Option<Instant>,
    /// Counts the fetches that changed what is here.
    generation: u64,
}

pub struct RemoteKeys {
    source: Source,
    fetched: arc_swap::ArcSwap<Fetched>,
    /// Held by the one refresh in flight; the others wait on it.
    refresh: tokio::sync::Mutex<Option<Instant>>,
    /// Fetches of the JWKS (successful or not), for tests and metrics.
    pub fetches: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url} is not {what}: {message}")]
    Body {
        url: String,
        what: &'static str,
        message: String,
    },
}

impl RemoteKeys {
    pub fn new(source: Source) -> Arc<RemoteKeys> {
        Arc::new(RemoteKeys {
            source,
            fetched: arc_swap::ArcSwap::from_pointee(Fetched {
                keys: Vec::new(),
                stale_at: None,
                generation: 0,
            }),
            refresh: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// The key for a token's `kid` and `alg`: from the cache, else after one shared refresh.
    /// `None`: no key the provider publishes fits (or it could not be reached and none known does).
    pub async fn find(
        self: &Arc<Self>,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Option<Arc<Key>> {
        let fetched = self.fetched.load_full();
        if fetched.stale_at.is_some_and(|at| Instant::now() >= at) {
            // Old but still good: serve with it, refresh off the request's path.
            let (this, seen) = (self.clone(), fetched.generation);
            tokio::spawn(async move { this.refresh(seen).await });
        }
        if let Some(key) = pick(&fetched.keys, kid, algorithm) {
            return Some(key);
        }
        self.refresh(fetched.generation).await;
        pick(&self.fetched.load().keys, kid, algorithm)
    }

    /// Fetches the keys unless another refresh did since `seen` (then its keys are the answer),
    /// or the last fetch was less than [`COOLDOWN`] ago.
    async fn refresh(&self, seen: u64) {
        let mut last_fetch = self.refresh.lock().await;
        if self.fetched.load().generation != seen {
            return;
        }
        if last_fetch.is_some_and(|at| at.elapsed() < COOLDOWN) {
            return;
        }
        *last_fetch = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let source = self.source.clone();
        let result = tokio::task::spawn_blocking(move || fetch(&source))
            .await
            .unwrap_or_else(|e| {
                Err(FetchError::Http {
                    url: String::new(),
                    message: e.to_string(),
                })
            });
        match result {
            Ok((keys, max_age)) => {
                tracing::info!(source = ?self.source, keys = keys.len(), ?max_age, "JWKS fetched");
                self.fetched.store(Arc::new(Fetched {
                    keys,
                    stale_at: Some(Instant::now() + max_age),
                    generation: seen + 1,
                }));
            }
            // The keys already known keep serving; the next try waits out the cooldown.
            Err(e) => tracing::warn!("JWKS not refreshed, the cached keys stay: {e}"),
        }
    }
}

fn pick(keys: &[Arc<Key>], kid: Option<&str>, algorithm: Algorithm) -> Option<Arc<Key>> {
    let fits = |key: &&Arc<Key>| key.algorithm == algorithm;
    match kid {
        Some(kid) => keys
            .iter()
            .filter(fits)
            .find(|k| k.kid.as_deref() == Some(kid)),
        // Without a `kid`, only when exactly one key could have signed it.
        None => {
            let mut candidates = keys.iter().filter(fits);
            let only = candidates.next();
            candidates.next().is_none().then_some(only).flatten()
        }
    }
    .cloned()
}

fn get(agent: &ureq::Agent, url: &str) -> Result<(String, Option<String>), FetchError> {
    let http = |message: String| FetchError::Http {
        url: url.to_string(),
        message,
    };
    let mut response = agent.get(url).call().map_err(|e| http(e.to_string()))?;
    if !response.status().is_success() {
        return Err(http(format!("HTTP {}", response.status())));
    }
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .map_err(|e| http(e.to_string()))?;
    Ok((body, cache_control))
}

/// Fetches the JWKS (through discovery when asked): its usable keys and how long to keep them.
fn fetch(source: &Source) -> Result<(Vec<Arc<Key>>, Duration), FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    let jwks_url = match source {
        Source::Url(url) => url.clone(),
        Source::Discovery { issuer } => {
            let url = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            let (body, _) = get(&agent, &url)?;
            let document: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| FetchError::Body {
                    url: url.clone(),
                    what: "an OpenID configuration",
                    message: e.to_string(),
                })?;
            document["jwks_uri"]
                .as_str()
                .ok_or_else(|| FetchError::Body {
                    url: url.clone(),
                    what: "an OpenID configuration",
                    message: "no `jwks_uri`".into(),
                })?
                .to_string()
        }
    };
    let (body, cache_control) = get(&agent, &jwks_url)?;
    let set: JwkSet = serde_json::from_str(&body).map_err(|e| FetchError::Body {
        url: jwks_url.clone(),
        what: "a JSON Web Key Set",
        message: e.to_string(),
    })?;
    let keys = set
        .keys
        .iter()
        .filter_map(|jwk| {
            // A key the host cannot use (an encryption key, an unknown type) is skipped.
            Some(Arc::new(Key {
                kid: jwk.common.key_id.clone(),
                algorithm: algorithm_of(jwk)?,
                key: DecodingKey::from_jwk(jwk).ok()?,
            }))
        })
        .collect();
    Ok((keys, max_age(cache_control.as_deref())))
}

/// The key's algorithm: as it says, else the usual one for its type.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(algorithm) = jwk.common.key_algorithm {
        return match algorithm {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        AlgorithmParameters::OctetKey(_) => None,
    }
}

/// `Cache-Control: max-age=N`, clamped; the default without one.
fn max_age(cache_control: Option<&str>) -> Duration {
    cache_control
        .and_then(|value| {
            value.split(',').find_map(|directive| {
                let (name, seconds) = directive.trim().split_once('=')?;
                name.eq_ignore_ascii_case("max-age")
                    .then(|| seconds.trim().parse::<u64>().ok())
                    .flatten()
            })
        })
        .map_or(DEFAULT_MAX_AGE, |s| {
            Duration::from_secs(s).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_follows_cache_control_within_bounds() {
        assert_eq!(
            max_age(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(max_age(Some("max-age=0")), MIN_MAX_AGE);
        assert_eq!(max_age(Some("max-age=99999999")), MAX_MAX_AGE);
        assert_eq!(max_age(Some("no-cache")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
    }
}
