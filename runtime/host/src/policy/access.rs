//! Who may call an endpoint: client network allowlists, API keys, and JWT bearer tokens.

use super::introspection::{ClientCredentials, Introspector};
use super::jwks::{RemoteKeys, Source};
use super::{Caller, EndpointPolicy};
use crate::keys::{KeyRejection, KeyStore};
use aifn_spec::{Auth, JwtKeys, JwtRule};
use anyhow::Context as _;
use hyper::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessDenied {
    #[error("client address {0} is not allowed to call this endpoint")]
    AddressNotAllowed(IpAddr),
    #[error("{0}")]
    MissingCredentials(&'static str),
    #[error("{0}")]
    InvalidCredentials(String),
    /// Valid credentials that do not cover this endpoint.
    #[error("{0}")]
    Forbidden(String),
}

impl AccessDenied {
    /// The label used in the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AccessDenied::AddressNotAllowed(_) => "address",
            AccessDenied::MissingCredentials(_) => "missing",
            AccessDenied::InvalidCredentials(_) => "invalid",
            AccessDenied::Forbidden(_) => "forbidden",
        }
    }
}

/// Verifies JWTs: with the keys the host was configured with (an HS256 secret, keys from a JWKS
/// file, or both), or, for an endpoint whose `jwt.keys` says so, with its identity provider's
/// (see [`super::jwks`]).
#[derive(Default)]
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    rsa_keys: Vec<(Option<String>, DecodingKey)>,
    /// Providers' keys, one cache per source, shared by every endpoint that names it.
    remote: dashmap::DashMap<Source, Arc<RemoteKeys>>,
    /// Introspection endpoints for opaque tokens, one cache per URL.
    introspectors: dashmap::DashMap<String, Arc<Introspector>>,
    /// The host's client credentials at introspection endpoints.
    pub introspection_credentials: ClientCredentials,
}

impl JwtVerifier {
    pub fn new(secret: Option<&str>, jwks: Option<&Path>) -> anyhow::Result<JwtVerifier> {
        let mut verifier = JwtVerifier {
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            ..JwtVerifier::default()
        };
        if let Some(path) = jwks {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JWKS file {}", path.display()))?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JSON Web Key Set", path.display()))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk).with_context(|| {
                    format!("a key in {} cannot verify signatures", path.display())
                })?;
                verifier.rsa_keys.push((jwk.common.key_id.clone(), key));
            }
        }
        Ok(verifier)
    }

    pub fn is_configured(&self) -> bool {
        self.secret.is_some() || !self.rsa_keys.is_empty()
    }

    /// The keys of an identity provider, fetched once for all endpoints that use it.
    pub fn remote(&self, rule: &JwtRule) -> Option<Arc<RemoteKeys>> {
        let source = match &rule.keys {
            JwtKeys::Host => return None,
            JwtKeys::Discovery => Source::Discovery {
                issuer: rule.issuer.clone(),
            },
            JwtKeys::Url(url) => Source::Url(url.clone()),
        };
        Some(
            self.remote
                .entry(source.clone())
                .or_insert_with(|| RemoteKeys::new(source))
                .clone(),
        )
    }

    /// Checks signature, issuer, audience and expiry; returns the token's subject. A token that
    /// is not a JWT goes to the endpoint's introspection URL, if it has one.
    pub async fn verify(&self, token: &str, rule: &JwtRule) -> Result<String, AccessDenied> {
        let header = match (jsonwebtoken::decode_header(token), &rule.introspection) {
            (Ok(header), _) => header,
            (Err(_), Some(url)) => {
                let introspector = self
                    .introspectors
                    .entry(url.clone())
                    .or_insert_with(|| {
                        Introspector::new(url.clone(), self.introspection_credentials.clone())
                    })
                    .clone();
                return introspector
                    .check(token, rule)
                    .await
                    .map_err(AccessDenied::InvalidCredentials);
            }
            (Err(e), None) => return Err(invalid(e.to_string())),
        };
        let no_key = || {
            invalid(format!(
                "no key {} verifies {:?} tokens{}",
                if rule.keys == JwtKeys::Host {
                    "on this host"
                } else {
                    "of the issuer"
                },
                header.alg,
                header
                    .kid
                    .as_ref()
                    .map(|k| format!(" with kid `{k}`"))
                    .unwrap_or_default()
            ))
        };
        match self.remote(rule) {
            None => {
                let key = self.host_key(&header).ok_or_else(no_key)?;
                decode(token, key, header.alg, rule)
            }
            Some(remote) => {
                let key = remote
                    .find(header.kid.as_deref(), header.alg)
                    .await
                    .ok_or_else(no_key)?;
                decode(token, &key.key, header.alg, rule)
            }
        }
    }

    fn host_key(&self, header: &jsonwebtoken::Header) -> Option<&DecodingKey> {
        match header.alg {
            Algorithm::HS256 => self.secret.as_ref(),
            Algorithm::RS256 => match &header.kid {
                Some(kid) => self
                    .rsa_keys
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(kid))
                    .map(|(_, key)| key),
                None if self.rsa_keys.len() == 1 => Some(&self.rsa_keys[0].1),
                None => None,
            },
            _ => None,
        }
    }
}

fn invalid(why: String) -> AccessDenied {
    AccessDenied::InvalidCredentials(format!("the bearer token is not valid: {why}"))
}

/// Verifies a token's signature with `key` and its claims against `rule`.
fn decode(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
    rule: &JwtRule,
) -> Result<String, AccessDenied> {
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&rule.issuer]);
    validation.set_audience(&[&rule.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 5;
    validation.validate_nbf = true;
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: String,
    }
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(data.claims.sub)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Decides whether a request may reach the function, and who its caller is.
pub async fn check(
    policy: &EndpointPolicy,
    function: &str,
    peer: IpAddr,
    headers: &HeaderMap,
    keys: &KeyStore,
    jwt: &JwtVerifier,
) -> Result<Caller, AccessDenied> {
    if !policy.allow_ips.is_empty() && !policy.allow_ips.iter().any(|net| net.contains(&peer)) {
        return Err(AccessDenied::AddressNotAllowed(peer));
    }
    match policy.auth {
        Auth::None => Ok(Caller::Address(peer)),
        Auth::ApiKey => {
            let presented =
                bearer(headers).or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
            match keys.check(presented, function, &policy.route) {
                Ok(id) => Ok(Caller::ApiKey(id)),
                Err(KeyRejection::Unauthenticated) if presented.is_none() => Err(AccessDenied::MissingCredentials(
                    "this endpoint needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                )),
                Err(KeyRejection::Unauthenticated) => Err(AccessDenied::InvalidCredentials(
                    "the API key is not valid (unknown, revoked or expired)".into(),
                )),
                Err(KeyRejection::Forbidden) => Err(AccessDenied::Forbidden(format!("the API key is not valid for {}", policy.route))),
            }
        }
        Auth::Jwt => {
            let token = bearer(headers).ok_or(AccessDenied::MissingCredentials(
                "this endpoint needs a bearer token: send `Authorization: Bearer <JWT>`",
            ))?;
            let rule = policy
                .jwt
                .as_ref()
                .expect("the spec requires a jwt block with auth: jwt");
            jwt.verify(token, rule).await.map(Caller::Subject)
        }
    }
}
