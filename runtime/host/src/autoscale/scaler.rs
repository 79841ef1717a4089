//! The autoscaler's loop: every tick, for each loaded pool, one observation (ongoing requests,
//! p95) goes to its [`Controller`], and the pool is resized to its decision; a function with a
//! `fallback` is switched to it while the primary cannot keep its target at its ceiling. A
//! thread of its own, because starting instances loads model sessions.

use super::{Controller, Decision, Policy, Reason, Sample};
use crate::function::LoadedFunction;
use crate::instance::InstancePool;
use crate::metrics::Metrics;
use crate::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Wakes the autoscaler at once (a request waits for a pool with no instance). Pools are given
/// one when they are made.
#[derive(Clone, Default)]
pub struct ScalerWake(Arc<OnceLock<std::thread::Thread>>);

impl ScalerWake {
    pub fn wake(&self) {
        if let Some(thread) = self.0.get() {
            thread.unpark();
        }
    }
}

/// The host's timing for every function's policy (shorter windows in tests).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub tick: Duration,
    pub stable_window: Duration,
    pub scale_down_delay: Duration,
}

impl Timing {
    /// The function's scaling policy with the host's timing.
    fn policy_for(&self, function: &LoadedFunction) -> Policy {
        let mut policy = function.autoscale.clone();
        policy.stable_window = self.stable_window;
        policy.panic_window = self.stable_window / 10;
        policy.scale_down_delay = self.scale_down_delay;
        policy
    }
}

/// What the loop reads and reports to.
pub struct Scaler {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
}

impl Scaler {
    /// Runs the loop on its own thread until the registry is dropped; `wake` makes it tick now.
    pub fn start(self, wake: &ScalerWake) {
        let registry = Arc::downgrade(&self.registry);
        let Scaler {
            metrics, timing, ..
        } = self;
        let wake = wake.clone();
        let spawned = std::thread::Builder::new()
            .name("aifn-autoscale".into())
            .spawn(move || {
                let _ = wake.0.set(std::thread::current());
                let mut autoscaler = Autoscaler::default();
                loop {
                    // A tick, or sooner when a request waits for a function with no instance.
                    std::thread::park_timeout(timing.tick);
                    let Some(registry) = registry.upgrade() else {
                        return;
                    };
                    let scaler = Scaler {
                        registry,
                        metrics: metrics.clone(),
                        timing,
                    };
                    autoscaler.tick(&scaler);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the autoscaler: {e}");
        }
    }
}

/// The autoscaler's memory between ticks: a controller per function version and variant, and
/// the fallback switch's timers.
struct Autoscaler {
    started: std::time::Instant,
    /// (function, version, variant) → its controller.
    controllers: std::collections::HashMap<(String, u64, &'static str), Controller>,
    /// function → since when the primary has been over its target at its ceiling (while it
    /// serves), or the fallback's load has fit the primary (while the fallback serves).
    switch_since: std::collections::HashMap<(String, u64), std::time::Duration>,
}

impl Default for Autoscaler {
    fn default() -> Self {
        Autoscaler {
            started: std::time::Instant::now(),
            controllers: Default::default(),
            switch_since: Default::default(),
        }
    }
}

impl Autoscaler {
    fn tick(&mut self, scaler: &Scaler) {
        // Every loaded version: the stable ones, and the other version of each rollout.
        let functions = scaler.registry.snapshot().loaded();
        let loaded = |name: &str, version: u64| {
            functions
                .iter()
                .any(|f| f.name() == name && f.version() == version)
        };
        self.controllers
            .retain(|(name, version, _), _| loaded(name, *version));
        self.switch_since
            .retain(|(name, version), _| loaded(name, *version));
        for function in functions {
            let primary = self.scale(scaler, &function, "primary", &function.pool);
            if let Some(fallback) = &function.fallback {
                self.scale(scaler, &function, "fallback", fallback);
                self.switch(scaler, &function, primary, fallback);
            }
        }
    }

    /// Observes one pool, resizes it to the controller's decision, and returns the decision.
    fn scale(
        &mut self,
        scaler: &Scaler,
        function: &LoadedFunction,
        variant: &'static str,
        pool: &InstancePool,
    ) -> Decision {
        let load = pool.load();
        let key = (function.name().to_string(), function.version(), variant);
        let policy = || {
            let mut policy = scaler.timing.policy_for(function);
            if variant == "fallback" {
                policy.min = policy.min.min(1); // standby: one warm instance is enough
            }
            policy
        };
        let controller = self
            .controllers
            .entry(key)
            .or_insert_with(|| Controller::new(policy(), load.instances));
        let window = controller.policy().panic_window;
        let decision = controller.observe(Sample {
            at: self.started.elapsed(),
            ongoing: load.running + load.queued,
            p95: pool.p95(window),
        });
        if decision.instances != load.instances {
            tracing::info!(
                function = function.name(),
                version = function.version(),
                variant,
                from = load.instances,
                to = decision.instances,
                running = load.running,
                queued = load.queued,
                panic = decision.panic,
                "scaling: {:?}",
                decision.reason
            );
            function.scaling_log.push(crate::api::ScalingDecision {
                at_ms: crate::records::now_ms(),
                variant: variant.to_string(),
                from: load.instances,
                to: decision.instances,
                reason: decision.reason.to_string(),
                panic: decision.panic,
            });
            if let Err(e) = pool.resize(decision.instances) {
                tracing::error!(
                    function = function.name(),
                    variant,
                    "cannot start an instance: {e}"
                );
            }
            let serving = scaler
                .registry
                .function(function.name())
                .is_some_and(|f| f.version() == function.version());
            if variant == "primary" && serving {
                scaler
                    .metrics
                    .set_replicas(function.name(), pool.load().instances);
            }
        }
        decision
    }

    /// Moves traffic to the fallback when the primary stays over its target at its ceiling for
    /// the panic window (at least 1 s), and back when the fallback's load would fit the primary
    /// at half its target for the scale-down delay.
    fn switch(
        &mut self,
        scaler: &Scaler,
        function: &LoadedFunction,
        primary: Decision,
        fallback: &InstancePool,
    ) {
        let now = self.started.elapsed();
        let policy = scaler.timing.policy_for(function);
        let active = function.fallback_active.load(Ordering::Relaxed);
        let (condition, hold) = if active {
            let load = fallback.load();
            let fits = ((load.running + load.queued) as f64)
                <= policy.ceiling() as f64 * policy.target_ongoing / 2.0;
            (fits, policy.scale_down_delay)
        } else {
            let load = function.pool.load();
            let over_target = match (
                function.pool.p95(policy.panic_window),
                policy.target_latency,
            ) {
                (Some(p95), Some(target)) => p95 > target,
                _ => false,
            };
            let at_ceiling = primary.instances >= policy.ceiling()
                && matches!(primary.reason, Reason::AtCeiling { .. });
            (
                at_ceiling && over_target && load.queued > 0,
                policy.panic_window.max(std::time::Duration::from_secs(1)),
            )
        };
        if !condition {
            self.switch_since
                .remove(&(function.name().to_string(), function.version()));
            return;
        }
        let since = *self
            .switch_since
            .entry((function.name().to_string(), function.version()))
            .or_insert(now);
        if now.saturating_sub(since) >= hold {
            function.fallback_active.store(!active, Ordering::Relaxed);
            self.switch_since
                .remove(&(function.name().to_string(), function.version()));
            tracing::info!(
                function = function.name(),
                version = function.version(),
                "fallback {}: {}",
                if active { "off" } else { "on" },
                if active {
                    "the fallback's load fits the primary again"
                } else {
                    "the primary is over its target latency at its most replicas"
                }
            );
        }
    }
}
