//! OAuth2 token introspection (RFC 7662) for opaque bearer tokens: the endpoint's
//! `jwt.introspection` URL is asked whether a token is active, as the host's client
//! (`--introspection-client-id` / `--introspection-client-secret`, HTTP Basic), and the answer is
//! cached: an active token until its `exp` (at most [`MAX_POSITIVE`]), an inactive one for
//! [`NEGATIVE`]. Concurrent requests with the same token share one call. Tokens are kept by their
//! SHA-256, never as they are.

use aifn_spec::JwtRule;
use base64::prelude::{Engine as _, BASE64_STANDARD};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An active token's answer is reused at most this long (a revocation shows within it).
pub const MAX_POSITIVE: Duration = Duration::from_secs(300);
/// An inactive token's answer is reused this long.
pub const NEGATIVE: Duration = Duration::from_secs(30);
const CAPACITY: u64 = 100_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The host's credentials at introspection endpoints.
#[derive(Debug, Clone, Default)]
pub struct ClientCredentials {
    pub id: Option<String>,
    pub secret: Option<String>,
}

/// What the introspection endpoint said about a token.
#[derive(Debug, Clone)]
enum Verdict {
    /// Active, for this subject.
    Active { subject: String },
    /// Not active, or not for this endpoint: why.
    Refused(String),
}

pub struct Introspector {
    url: String,
    credentials: ClientCredentials,
    /// By the token's SHA-256: the verdict and until when it holds.
    cache: moka::future::Cache<[u8; 32], (Verdict, Instant)>,
    /// Calls to the endpoint, for tests and metrics.
    pub calls: AtomicU64,
}

impl Introspector {
    pub fn new(url: String, credentials: ClientCredentials) -> Arc<Introspector> {
        Arc::new(Introspector {
            url,
            credentials,
            cache: moka::future::Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(MAX_POSITIVE)
                .build(),
            calls: AtomicU64::new(0),
        })
    }

    /// The subject of an active token that `rule` accepts; else why not.
    pub async fn check(self: &Arc<Self>, token: &str, rule: &JwtRule) -> Result<String, String> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut verdict = None;
        if let Some((cached, until)) = self.cache.get(&key).await {
            if Instant::now() < until {
                verdict = Some(cached);
            } else {
                self.cache.invalidate(&key).await;
            }
        }
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => {
                let (this, token, rule) = (self.clone(), token.to_string(), rule.clone());
                // Concurrent misses for the same token wait on one call.
                let found = self
                    .cache
                    .try_get_with(key, async move {
                        tokio::task::spawn_blocking(move || this.ask(&token, &rule))
                            .await
                            .map_err(|e| e.to_string())?
                    })
                    .await
                    .map_err(|e| format!("the token could not be introspected: {e}"))?;
                found.0
            }
        };
        match verdict {
            Verdict::Active { subject } => Ok(subject),
            Verdict::Refused(why) => Err(why),
        }
    }

    /// One call to the introspection endpoint (blocking).
    fn ask(&self, token: &str, rule: &JwtRule) -> Result<(Verdict, Instant), String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.post(&self.url);
        if let (Some(id), Some(secret)) = (&self.credentials.id, &self.credentials.secret) {
            request = request.header(
                "authorization",
                format!("Basic {}", BASE64_STANDARD.encode(format!("{id}:{secret}"))),
            );
        }
        let mut response = request
            .send_form([("token", token), ("token_type_hint", "access_token")])
            .map_err(|e| format!("{}: {e}", self.url))?;
        if !response.status().is_success() {
            return Err(format!("{} answered HTTP {}", self.url, response.status()));
        }
        let answer: serde_json::Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("{} did not answer JSON: {e}", self.url))?;
        Ok(judge(&answer, rule, now_secs()))
    }
}

/// The verdict on an introspection answer, and until when it may be reused.
fn judge(answer: &serde_json::Value, rule: &JwtRule, now: u64) -> (Verdict, Instant) {
    let refused = |why: &str| {
        (
            Verdict::Refused(format!("the bearer token is not valid: {why}")),
            Instant::now() + NEGATIVE,
        )
    };
    if answer["active"].as_bool() != Some(true) {
        return refused("it is not active (expired, revoked or unknown to the issuer)");
    }
    let exp = answer["exp"].as_u64();
    if exp.is_some_and(|exp| exp <= now) {
        return refused("it has expired");
    }
    if let Some(issuer) = answer["iss"].as_str() {
        if issuer != rule.issuer {
            return refused("it is from another issuer");
        }
    }
    let audience_fits = match &answer["aud"] {
        serde_json::Value::Null => true,
        serde_json::Value::String(aud) => *aud == rule.audience,
        serde_json::Value::Array(auds) => auds.iter().any(|a| a == rule.audience.as_str()),
        _ => false,
    };
    if !audience_fits {
        return refused("it is for another audience");
    }
    let Some(subject) = answer["sub"].as_str() else {
        return refused("the introspection answer names no `sub`");
    };
    let lasts = exp.map_or(MAX_POSITIVE, |exp| {
        Duration::from_secs(exp - now).min(MAX_POSITIVE)
    });
    (
        Verdict::Active {
            subject: subject.to_string(),
        },
        Instant::now() + lasts,
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule() -> JwtRule {
        JwtRule {
            issuer: "https://idp".into(),
            audience: "api".into(),
            keys: aifn_spec::JwtKeys::Host,
            introspection: Some("https://idp/introspect".into()),
        }
    }

    #[test]
    fn answers_are_judged_against_the_endpoint() {
        let now = 1_000_000;
        let active = json!({"active": true, "sub": "bob", "aud": ["x", "api"], "iss": "https://idp", "exp": now + 60});
        assert!(
            matches!(judge(&active, &rule(), now).0, Verdict::Active { subject } if subject == "bob")
        );
        for (answer, says) in [
            (json!({"active": false}), "not active"),
            (
                json!({"active": true, "sub": "bob", "exp": now - 1}),
                "expired",
            ),
            (
                json!({"active": true, "sub": "bob", "aud": "other"}),
                "another audience",
            ),
            (
                json!({"active": true, "sub": "bob", "iss": "https://evil"}),
                "another issuer",
            ),
            (json!({"active": true}), "no `sub`"),
        ] {
            match judge(&answer, &rule(), now).0 {
                Verdict::Refused(why) => assert!(why.contains(says), "{why}"),
                other => panic!("{answer} gave {other:?}"),
            }
        }
    }
}
