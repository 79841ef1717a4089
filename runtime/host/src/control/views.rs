//! What the control plane shows: the answers of `aifn ls`, `status`, `versions` and `history`,
//! read from the registry and the store.

use super::rollouts::judged_window;
use super::{endpoint_views, ControlPlane};
use crate::api::{
    FallbackView, FunctionList, FunctionStatus, FunctionSummary, History, HistoryEntry,
    LatencyView, LoadFailure, RolloutView, ScalingView, ShadowView, Signals, VersionList,
    VersionRole, VersionView,
};
use crate::records::{now_ms, Phase};
use crate::registry::Serving;
use crate::store::StoreError;
use std::time::Duration;

/// The window `aifn status` reports latency over.
const STATUS_WINDOW: Duration = Duration::from_secs(10);

impl ControlPlane {
    pub fn list(&self) -> FunctionList {
        let snapshot = self.registry.snapshot();
        FunctionList {
            functions: snapshot
                .functions()
                .map(|(_, serving)| {
                    let f = &serving.stable;
                    FunctionSummary {
                        name: f.name().to_string(),
                        version: f.version(),
                        digest: f.record.digest.clone(),
                        model_id: f.record.model_id.clone(),
                        replicas: f.placement.replicas,
                        endpoints: f
                            .spec
                            .spec
                            .endpoints
                            .iter()
                            .map(|e| format!("{} {}", e.method, e.route))
                            .collect(),
                    }
                })
                .collect(),
            failed: snapshot
                .failed()
                .map(|(name, error)| LoadFailure {
                    name: name.to_string(),
                    error: error.to_string(),
                })
                .collect(),
        }
    }

    pub fn status(&self, name: &str) -> Option<FunctionStatus> {
        let serving = self.registry.serving(name)?;
        let f = &serving.stable;
        let load = f.pool.load();
        let latency_ms = f
            .serving_pool()
            .percentiles(STATUS_WINDOW, &[0.5, 0.95, 0.99])
            .map(|p| LatencyView {
                p50: p[0].as_secs_f64() * 1e3,
                p95: p[1].as_secs_f64() * 1e3,
                p99: p[2].as_secs_f64() * 1e3,
            });
        let judged_over = f.spec.spec.rollout.clone().unwrap_or_default().window.0;
        let judged = f.outcomes.figures(judged_over);
        let signals = Signals {
            p95_ms: latency_ms.as_ref().map_or(0.0, |l| l.p95),
            in_flight: load.running + load.queued,
            window_secs: judged_over.as_secs(),
            requests: judged.requests,
            errors: judged.errors,
            window_p95_ms: judged.p95_ms.unwrap_or(0.0),
        };
        Some(FunctionStatus {
            name: f.name().to_string(),
            version: f.version(),
            digest: f.record.digest.clone(),
            created_at: f.record.created_at,
            model_id: f.record.model_id.clone(),
            model: f.record.model.clone(),
            module: f.record.module.clone(),
            endpoints: endpoint_views(f),
            placement: f.placement.clone(),
            queue_depth: load.queued,
            load,
            p95_ms: f.pool.p95(STATUS_WINDOW).map(|d| d.as_secs_f64() * 1e3),
            // From the pool that takes the traffic, so that it goes on while the fallback serves.
            latency_ms,
            signals,
            rollout: rollout_view(&serving),
            fallback: f.fallback.as_ref().map(|pool| FallbackView {
                active: std::ptr::eq(f.serving_pool(), pool),
                load: pool.load(),
            }),
            scaling: ScalingView {
                min: f.autoscale.min,
                max: f.autoscale.max,
                capacity: f.autoscale.capacity,
                ceiling: f.autoscale.ceiling(),
                decisions: f.scaling_log.recent(),
            },
            inputs: f.signature.inputs.iter().map(Into::into).collect(),
            outputs: f.signature.outputs.iter().map(Into::into).collect(),
            spec: serde_json::to_value(&f.spec).expect("specs serialise"),
        })
    }

    /// The rollout of `name` now, if any.
    pub fn rollout_view(&self, name: &str) -> Option<RolloutView> {
        rollout_view(&self.registry.serving(name)?)
    }

    /// The audit log of `name`; `None` for a function never deployed.
    pub fn history(&self, name: &str) -> Result<Option<History>, StoreError> {
        let events = self.store.history(name)?;
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(History {
            name: name.to_string(),
            events: events
                .into_iter()
                .map(|event| HistoryEntry {
                    seq: event.seq,
                    event,
                })
                .collect(),
        }))
    }

    /// The versions of `name` kept, and what each does; `None` for a function never deployed.
    pub fn versions(&self, name: &str) -> Result<Option<VersionList>, StoreError> {
        let deployment = self.store.deployment(name)?;
        let role = |version: u64| {
            let Some(d) = &deployment else {
                return VersionRole::Kept;
            };
            match &d.rollout {
                Some(r) if r.candidate == version && d.stable != version => VersionRole::Candidate,
                Some(r) if r.previous == version && d.stable != version => VersionRole::Previous,
                _ if d.stable == version => VersionRole::Stable,
                _ => VersionRole::Kept,
            }
        };
        let versions: Vec<VersionView> = self
            .store
            .versions(name)?
            .into_iter()
            .map(|r| VersionView {
                version: r.version,
                role: role(r.version),
                digest: r.digest,
                created_at: r.created_at,
                deployed_by: r.deployed_by,
                model: r.model,
                module: r.module,
                fallback_model: r.fallback_model,
                monitoring_reference: r.monitoring_reference,
            })
            .collect();
        Ok((!versions.is_empty()).then(|| VersionList {
            name: name.to_string(),
            versions,
        }))
    }
}

fn rollout_view(serving: &Serving) -> Option<RolloutView> {
    let live = serving.rollout.as_ref()?;
    let record = &live.record;
    let window = judged_window(&live.plan, &record.phase, now_ms());
    let (stable_figures, candidate_figures) = match &record.phase {
        Phase::Watch { baseline, .. } => {
            (baseline.clone(), serving.stable.outcomes.figures(window))
        }
        _ => (
            serving.stable.outcomes.figures(window),
            live.other.outcomes.figures(window),
        ),
    };
    let shadow = matches!(record.phase, Phase::Shadow { .. }).then(|| {
        let disagreement = live
            .progress
            .disagreement
            .lock()
            .expect("rollout lock")
            .clone();
        ShadowView {
            differing_share: disagreement.differing_share(),
            disagreement,
        }
    });
    Some(RolloutView {
        strategy: record.strategy,
        candidate: record.candidate,
        previous: record.previous,
        candidate_share: live.candidate_share(),
        steps: live.plan.steps.clone(),
        phase: record.phase.clone(),
        note: live.progress.note.lock().expect("rollout lock").clone(),
        stable_figures,
        candidate_figures,
        shadow,
        frozen: live
            .progress
            .frozen
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}
