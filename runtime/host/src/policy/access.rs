//! Who may call an endpoint: client network allowlists, API keys, and JWT bearer tokens.

use super::{Caller, EndpointPolicy};
use crate::keys::{KeyRejection, KeyStore};
use aifn_spec::{Auth, JwtRule};
use anyhow::Context as _;
use hyper::header::{HeaderMap, AUTHORIZATION};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::net::IpAddr;
use std::path::Path;

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

/// Verifies JWTs with the keys the host was configured with: an HS256 secret, RS256 keys from a
/// JWKS file, or both.
#[derive(Default)]
pub struct JwtVerifier {
    secret: Option<DecodingKey>,
    rsa_keys: Vec<(Option<String>, DecodingKey)>,
}

impl JwtVerifier {
    pub fn new(secret: Option<&str>, jwks: Option<&Path>) -> anyhow::Result<JwtVerifier> {
        let mut verifier = JwtVerifier {
            secret: secret.map(|s| DecodingKey::from_secret(s.as_bytes())),
            rsa_keys: Vec::new(),
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

    /// Checks signature, issuer, audience and expiry; returns the token's subject.
    pub fn verify(&self, token: &str, rule: &JwtRule) -> Result<String, AccessDenied> {
        let invalid = |why: String| {
            AccessDenied::InvalidCredentials(format!("the bearer token is not valid: {why}"))
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let key = match header.alg {
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
        .ok_or_else(|| {
            invalid(format!(
                "no key on this host verifies {:?} tokens{}",
                header.alg,
                header
                    .kid
                    .map(|k| format!(" with kid `{k}`"))
                    .unwrap_or_default()
            ))
        })?;
        let mut validation = Validation::new(header.alg);
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
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Decides whether a request may reach the function, and who its caller is.
pub fn check(
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
            jwt.verify(token, rule).map(Caller::Subject)
        }
    }
}
