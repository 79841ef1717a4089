//! A function version loaded and ready to serve: its spec, model signature and instances.

use crate::api::Placement;
use crate::autoscale::Policy;
use crate::instance::InstancePool;
use crate::policy::EndpointPolicy;
use crate::records::VersionRecord;
use aifn_model::Signature;
use aifn_spec::FunctionSpec;

/// One answered request: its status and how long it took from submission to answer.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub status: u16,
    pub latency: std::time::Duration,
}

pub struct LoadedFunction {
    pub record: VersionRecord,
    pub spec: FunctionSpec,
    pub signature: Signature,
    pub placement: Placement,
    pub pool: InstancePool,
    /// How the autoscaler may size `pool`.
    pub autoscale: Policy,
    /// The pool of `spec.fallback`'s lighter model, and whether traffic goes to it now (the
    /// autoscaler switches it when the primary cannot keep its target at its ceiling).
    pub fallback: Option<InstancePool>,
    pub fallback_active: std::sync::atomic::AtomicBool,
    /// `spec.monitoring`'s drift and alerts for this version.
    pub monitor: Option<std::sync::Arc<crate::monitor::VersionMonitor>>,
    /// One per endpoint, in the spec's order.
    pub endpoints: Vec<EndpointPolicy>,
    /// Whether `/v2/models/NAME/...` serves this version (`spec.v2`; see `aifn_spec::V2Access`).
    pub v2_exposed: bool,
    /// What raw tensors of one request may hold.
    pub tensor_limits: std::sync::Arc<crate::instance::TensorLimits>,
    /// The `X-Aifn-Function` and `X-Aifn-Version` headers every answer carries.
    pub name_header: hyper::header::HeaderValue,
    pub version_header: hyper::header::HeaderValue,
    /// What this version answered lately, for judging rollouts.
    pub outcomes: crate::outcomes::Outcomes,
    /// The autoscaler's last resizes of `pool` and `fallback`.
    pub scaling_log: crate::autoscale::ScalingLog,
}

impl LoadedFunction {
    pub fn name(&self) -> &str {
        &self.record.name
    }

    pub fn version(&self) -> u64 {
        self.record.version
    }

    /// Counts one answer of this version, measured once: in its outcomes (rollouts, and what
    /// else watches its answers) and, when it reached `pool`, in that pool's latency window (the
    /// autoscaler). A request refused at the door of a full pool never reached it.
    pub fn observe(&self, measurement: Measurement, pool: Option<&InstancePool>) {
        self.outcomes
            .record(measurement.status, measurement.latency);
        if let Some(pool) = pool {
            pool.observe(measurement.latency);
        }
    }

    /// The policy of the endpoint serving `method` on `route`.
    /// The POST routes of a function with a module (what a gRPC call through its module may
    /// reach); empty without a module.
    pub fn module_routes(&self) -> Vec<String> {
        if self.spec.spec.module.is_none() {
            return Vec::new();
        }
        self.endpoints
            .iter()
            .filter(|e| e.method == aifn_spec::Method::Post)
            .map(|e| e.route.clone())
            .collect()
    }

    pub fn endpoint(&self, method: &str, route: &str) -> Option<&EndpointPolicy> {
        self.endpoints
            .iter()
            .find(|e| e.route == route && e.method.as_str() == method)
    }
}

impl LoadedFunction {
    /// The pool that takes new requests: the fallback's while it is active, else the primary.
    /// Two things switch to the fallback: the autoscaler (peak load) and a drift alert with
    /// `action: fallback`. Either keeps it on: while drift holds the traffic there, the
    /// autoscaler switching back does not take it away, and the other way round.
    pub fn serving_pool(&self) -> &InstancePool {
        use std::sync::atomic::Ordering::Relaxed;
        let for_drift = self
            .monitor
            .as_ref()
            .is_some_and(|m| m.drift_fallback.load(Relaxed));
        match &self.fallback {
            Some(fallback) if for_drift || self.fallback_active.load(Relaxed) => fallback,
            _ => &self.pool,
        }
    }
}
