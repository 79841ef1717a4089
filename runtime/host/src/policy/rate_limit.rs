//! Rate limits per endpoint and caller (GCRA, from `governor`), and one for the whole host.
//!
//! Limiters live in the host, keyed by function, method and route, so a redeploy keeps every
//! caller's budget; only a changed limit starts afresh.

use super::Caller;
use aifn_spec::{Method, RateLimit};
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

type Keyed =
    RateLimiter<Caller, DefaultKeyedStateStore<Caller>, DefaultClock, StateInformationMiddleware>;
type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A request within its budget: what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowed {
    pub limit: u32,
    pub remaining: u32,
    /// Until the budget is whole again.
    pub reset: Duration,
}

/// A request over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub limit: u32,
    pub retry_after: Duration,
}

fn quota(requests_per_second: f64, burst: u32) -> Quota {
    let period = Duration::from_secs_f64(1.0 / requests_per_second).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is positive")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"))
}

fn outcome(
    result: Result<
        governor::middleware::StateSnapshot,
        governor::NotUntil<<DefaultClock as Clock>::Instant>,
    >,
    clock: &DefaultClock,
    limit: u32,
    period: Duration,
) -> Result<Allowed, Limited> {
    match result {
        Ok(state) => {
            let remaining = state.remaining_burst_capacity();
            Ok(Allowed {
                limit,
                remaining,
                reset: period * (limit - remaining.min(limit)),
            })
        }
        Err(not_until) => Err(Limited {
            limit,
            retry_after: not_until.wait_time_from(clock.now()),
        }),
    }
}

/// One endpoint's limit, counted per caller.
pub struct CallerLimiter {
    spec: RateLimit,
    limiter: Keyed,
    period: Duration,
}

impl CallerLimiter {
    pub fn new(spec: &RateLimit) -> CallerLimiter {
        CallerLimiter {
            spec: spec.clone(),
            limiter: RateLimiter::keyed(quota(spec.requests_per_second, spec.burst))
                .with_middleware(),
            period: Duration::from_secs_f64(1.0 / spec.requests_per_second),
        }
    }

    pub fn check(&self, caller: &Caller) -> Result<Allowed, Limited> {
        let result = self.limiter.check_key(caller);
        outcome(result, self.limiter.clock(), self.spec.burst, self.period)
    }
}

/// The host-wide limit, over all requests to functions.
pub struct HostLimiter {
    limiter: Direct,
    burst: u32,
    period: Duration,
}

impl HostLimiter {
    pub fn new(requests_per_second: f64) -> HostLimiter {
        let burst = (requests_per_second.ceil() as u32).max(1);
        HostLimiter {
            limiter: RateLimiter::direct(quota(requests_per_second, burst)).with_middleware(),
            burst,
            period: Duration::from_secs_f64(1.0 / requests_per_second),
        }
    }

    pub fn check(&self) -> Result<Allowed, Limited> {
        outcome(
            self.limiter.check(),
            self.limiter.clock(),
            self.burst,
            self.period,
        )
    }
}

/// Every endpoint's limiter, kept across redeploys.
#[derive(Default)]
pub struct RateLimiters {
    by_endpoint: DashMap<(String, Method, String), Arc<CallerLimiter>>,
}

impl RateLimiters {
    /// The endpoint's limiter: the existing one while its limit is unchanged.
    pub fn for_endpoint(
        &self,
        function: &str,
        method: Method,
        route: &str,
        spec: &RateLimit,
    ) -> Arc<CallerLimiter> {
        let key = (function.to_string(), method, route.to_string());
        let mut entry = self
            .by_endpoint
            .entry(key)
            .or_insert_with(|| Arc::new(CallerLimiter::new(spec)));
        if entry.spec != *spec {
            *entry = Arc::new(CallerLimiter::new(spec));
        }
        entry.clone()
    }

    /// Forgets callers whose budget is whole again, so memory follows active callers only.
    pub fn forget_idle_callers(&self) {
        for limiter in self.by_endpoint.iter() {
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_with_a_retry_time() {
        let limiter = CallerLimiter::new(&RateLimit {
            requests_per_second: 1.0,
            burst: 3,
        });
        let first = limiter.check(&Caller::ApiKey("a".into())).unwrap();
        assert_eq!((first.limit, first.remaining), (3, 2));
        limiter.check(&Caller::ApiKey("a".into())).unwrap();
        assert_eq!(
            limiter
                .check(&Caller::ApiKey("a".into()))
                .unwrap()
                .remaining,
            0
        );
        let refused = limiter.check(&Caller::ApiKey("a".into())).unwrap_err();
        assert!(
            refused.retry_after > Duration::from_millis(500)
                && refused.retry_after <= Duration::from_secs(1)
        );
        // Another caller has a budget of its own.
        assert_eq!(
            limiter
                .check(&Caller::ApiKey("b".into()))
                .unwrap()
                .remaining,
            2
        );
    }

    #[test]
    fn budgets_survive_a_redeploy_with_the_same_limit() {
        let limiters = RateLimiters::default();
        let spec = RateLimit {
            requests_per_second: 1.0,
            burst: 1,
        };
        let v1 = limiters.for_endpoint("f", Method::Post, "/r", &spec);
        v1.check(&Caller::ApiKey("a".into())).unwrap();
        let v2 = limiters.for_endpoint("f", Method::Post, "/r", &spec);
        assert!(
            v2.check(&Caller::ApiKey("a".into())).is_err(),
            "the caller's spent budget carried over"
        );
        let changed = RateLimit { burst: 5, ..spec };
        let v3 = limiters.for_endpoint("f", Method::Post, "/r", &changed);
        assert!(
            v3.check(&Caller::ApiKey("a".into())).is_ok(),
            "a new limit starts afresh"
        );
    }
}
