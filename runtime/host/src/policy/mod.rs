//! Per-endpoint policies, applied before any module or model runs: who may call (`access`), how
//! often (`rate_limit`), and which answers are reused (`cache`). Each endpoint of a loaded function
//! version has an [`EndpointPolicy`] built once at load, so a request only looks things up.

pub mod access;
pub mod cache;
pub mod introspection;
pub mod jwks;
pub mod rate_limit;

use aifn_spec::{Auth, Endpoint, JwtRule, Method};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Who is calling, as far as the endpoint's auth can tell: the unit of rate limiting and of
/// per-caller caching.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// An API key, by its id (never its secret).
    ApiKey(String),
    /// A JWT's `sub` claim.
    Subject(String),
    /// An anonymous caller, by client address.
    Address(IpAddr),
}

impl Caller {
    /// A stable text form, distinct between kinds.
    pub fn key(&self) -> String {
        match self {
            Caller::ApiKey(id) => format!("key:{id}"),
            Caller::Subject(sub) => format!("sub:{sub}"),
            Caller::Address(ip) => format!("ip:{ip}"),
        }
    }
}

pub struct EndpointPolicy {
    pub method: Method,
    pub route: String,
    pub auth: Auth,
    pub jwt: Option<JwtRule>,
    pub allow_ips: Vec<ipnet::IpNet>,
    pub rate_limit: Option<Arc<rate_limit::CallerLimiter>>,
    pub cache: Option<cache::ResponseCache>,
    pub timeout: Option<Duration>,
    pub max_body: Option<usize>,
    pub metrics: crate::metrics::EndpointMetrics,
}

impl EndpointPolicy {
    pub fn new(
        function: &str,
        endpoint: &Endpoint,
        limiters: &rate_limit::RateLimiters,
        metrics: &Arc<crate::metrics::Metrics>,
    ) -> EndpointPolicy {
        EndpointPolicy {
            method: endpoint.method,
            route: endpoint.route.clone(),
            auth: endpoint.auth,
            jwt: endpoint.jwt.clone(),
            allow_ips: endpoint.allow_ips.clone(),
            rate_limit: endpoint.rate_limit.as_ref().map(|spec| {
                limiters.for_endpoint(function, endpoint.method, &endpoint.route, spec)
            }),
            cache: endpoint.cache.as_ref().map(|spec| {
                cache::ResponseCache::new(function, &endpoint.route, spec, metrics.clone())
            }),
            timeout: endpoint.timeout.map(|t| t.0),
            max_body: endpoint
                .max_body
                .map(|b| usize::try_from(b.0).unwrap_or(usize::MAX)),
            metrics: metrics.endpoint(function, &endpoint.route),
        }
    }
}
