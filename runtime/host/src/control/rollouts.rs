//! Rollouts on a running host: the loop that judges every rollout ([`crate::rollout::judge`])
//! and acts on its verdict, and the hand-driven `promote` and `abort`. Each change is written to
//! the state database with its audit event as it lands in the registry (see
//! [`ControlPlane::apply`]), so a restart resumes a rollout or finds it reverted, never
//! half-applied.

use super::{ControlPlane, DeployError};
use crate::function::LoadedFunction;
use crate::records::{
    now_ms, Actor, AuditAction, AuditEvent, Deployment, Figures, Phase, RolloutRecord, Versions,
};
use crate::registry::{FunctionGuard, LiveRollout, Serving};
use crate::rollout::{self, Verdict};
use aifn_spec::RolloutStrategy;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The plan a version rolls out by: its spec's `rollout`, or the defaults, with the strategy the
/// deploy asked for.
pub fn plan_for(function: &LoadedFunction, strategy: RolloutStrategy) -> aifn_spec::Rollout {
    let mut plan = function.spec.spec.rollout.clone().unwrap_or_default();
    plan.strategy = strategy;
    plan
}

impl ControlPlane {
    /// Starts a canary or shadow of `candidate` against the serving `stable` (already loaded).
    /// Returns the deployment to write and what serves from then on.
    pub(super) fn begin_rollout(
        &self,
        stable: &Arc<LoadedFunction>,
        candidate: &Arc<LoadedFunction>,
        strategy: RolloutStrategy,
    ) -> Result<(Deployment, Serving), DeployError> {
        let endpoints = |f: &LoadedFunction| {
            let mut e: Vec<_> = f
                .spec
                .spec
                .endpoints
                .iter()
                .map(|e| (e.method, e.route.clone()))
                .collect();
            e.sort();
            e
        };
        if endpoints(stable) != endpoints(candidate) {
            return Err(DeployError::Rollout(format!(
                "a {} needs the new version to serve the same endpoints as version {} ({}); deploy it with --immediate to change them",
                if strategy == RolloutStrategy::Shadow { "shadow" } else { "canary" },
                stable.version(),
                endpoints(stable)
                    .iter()
                    .map(|(m, r)| format!("{m} {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let plan = plan_for(candidate, strategy);
        let now = now_ms();
        let (serving, phase, other) = match strategy {
            RolloutStrategy::Shadow => (stable, Phase::Shadow { since_ms: now }, candidate),
            _ if plan.steps.len() > 1 => (
                stable,
                Phase::Step {
                    index: 0,
                    since_ms: now,
                },
                candidate,
            ),
            // `steps: [100]`: all traffic at once, then the watch.
            _ => (
                candidate,
                Phase::Watch {
                    until_ms: now + plan.watch.0.as_millis() as u64,
                    baseline: stable.outcomes.figures(plan.window.0),
                },
                stable,
            ),
        };
        let record = RolloutRecord {
            candidate: candidate.version(),
            previous: stable.version(),
            strategy,
            phase,
            started_at_ms: now,
        };
        let deployment = Deployment {
            stable: serving.version(),
            rollout: Some(record.clone()),
        };
        let serving = Serving {
            stable: serving.clone(),
            rollout: Some(Arc::new(LiveRollout::new(record, plan, other.clone()))),
        };
        Ok((deployment, serving))
    }

    /// Judges every rollout every `tick`, for as long as the control plane lives. A function
    /// busy with a change of its own is judged at the next tick; the others are not held up.
    pub fn start_rollout_loop(self: &Arc<Self>, tick: Duration) {
        self.every(tick, |control| async move {
            let names: Vec<String> = control
                .registry
                .snapshot()
                .functions()
                .filter(|(_, s)| s.rollout.is_some())
                .map(|(name, _)| name.to_string())
                .collect();
            for name in names {
                let Some(guard) = control.registry.try_lock(&name) else {
                    continue;
                };
                if let Err(e) = control.judge(&guard) {
                    tracing::error!(function = %name, "rollout: {e}");
                }
            }
        });
    }

    /// Judges one rollout and acts on the verdict.
    fn judge(&self, guard: &FunctionGuard) -> Result<(), DeployError> {
        let Some(Serving {
            stable,
            rollout: Some(live),
        }) = self.registry.serving(guard.name())
        else {
            return Ok(());
        };
        if live
            .progress
            .frozen
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(()); // held by a monitoring alert until it clears
        }
        let record = &live.record;
        let now = now_ms();
        let window = judged_window(&live.plan, &record.phase, now);
        let (stable_figures, candidate_figures) = match &record.phase {
            Phase::Watch { .. } => {
                let own = stable.outcomes.figures(window);
                (own.clone(), own)
            }
            _ => (
                stable.outcomes.figures(window),
                live.other.outcomes.figures(window),
            ),
        };
        let verdict = {
            let mut slow_since = live.progress.slow_since_ms.lock().expect("rollout lock");
            let verdict = rollout::judge(
                &live.plan,
                &record.phase,
                now,
                &stable_figures,
                &candidate_figures,
                *slow_since,
            );
            *slow_since = match &verdict {
                Verdict::Slow(_) => Some(slow_since.unwrap_or(now)),
                _ => None,
            };
            verdict
        };
        let platform = Actor::platform();
        match verdict {
            Verdict::Hold(why) | Verdict::Slow(why) => {
                *live.progress.note.lock().expect("rollout lock") = why;
                Ok(())
            }
            Verdict::Advance(index) => {
                let reason = format!(
                    "step held for {}s within thresholds ({} requests, {:.1}% errors, p95 {})",
                    live.plan.step_duration.0.as_secs(),
                    candidate_figures.requests,
                    candidate_figures.error_rate() * 100.0,
                    p95_text(&candidate_figures)
                );
                self.step_to(guard, &live, index, &platform, &reason)
            }
            Verdict::Promote => {
                let reason = format!(
                    "every step held within thresholds ({} requests, {:.1}% errors, p95 {} against {})",
                    candidate_figures.requests,
                    candidate_figures.error_rate() * 100.0,
                    p95_text(&candidate_figures),
                    p95_text(&stable_figures)
                );
                self.promote_candidate(guard, &stable, &live, stable_figures, &platform, &reason)
            }
            Verdict::Complete => self.finish_rollout(
                guard,
                &live,
                AuditAction::RolloutComplete,
                &platform,
                "the watch ended without a fault",
            ),
            Verdict::Fail(why) => {
                let figures = json!({
                    "window_seconds": window.as_secs_f64(),
                    "candidate": candidate_figures,
                    "stable": match &record.phase {
                        Phase::Watch { baseline, .. } => baseline.clone(),
                        _ => stable_figures,
                    },
                    "thresholds": {
                        "max_error_rate_increase": live.plan.max_error_rate_increase,
                        "max_latency_ratio": live.plan.max_latency_ratio,
                        "min_requests": live.plan.min_requests,
                    },
                });
                self.revert(
                    guard,
                    &live,
                    AuditAction::AutoRollback,
                    &platform,
                    &why,
                    Some(figures),
                )
            }
        }
    }

    /// Moves a canary to step `index`.
    fn step_to(
        &self,
        guard: &FunctionGuard,
        live: &LiveRollout,
        index: usize,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), DeployError> {
        let mut record = live.record.clone();
        record.phase = Phase::Step {
            index,
            since_ms: now_ms(),
        };
        let share = live.plan.steps[index];
        let event = AuditEvent::new(
            guard.name(),
            actor,
            AuditAction::Step,
            Some(Versions {
                acted_on: record.candidate,
                serving: record.previous,
            }),
            format!(
                "{share}% of traffic to version {}: {reason}",
                record.candidate
            ),
        );
        let next = Arc::new(live.advanced(record.clone()));
        self.apply(
            guard,
            Some(Deployment {
                stable: record.previous,
                rollout: Some(record.clone()),
            }),
            &event,
            |entry| {
                entry.set_rollout(Some(next));
                Ok(())
            },
        )?;
        tracing::info!(
            function = guard.name(),
            candidate = record.candidate,
            share,
            "rollout step"
        );
        self.notify(guard.name(), AuditAction::Step, &record, reason, None);
        Ok(())
    }

    /// The candidate takes all traffic; the watch begins (or, with `watch: 0s`, the rollout ends).
    fn promote_candidate(
        &self,
        guard: &FunctionGuard,
        previous: &Arc<LoadedFunction>,
        live: &LiveRollout,
        baseline: Figures,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), DeployError> {
        let watch = live.plan.watch.0;
        if watch.is_zero() {
            return self.finish_rollout(guard, live, AuditAction::Promoted, actor, reason);
        }
        let mut record = live.record.clone();
        record.phase = Phase::Watch {
            until_ms: now_ms() + watch.as_millis() as u64,
            baseline,
        };
        let event = AuditEvent::new(
            guard.name(),
            actor,
            AuditAction::Promoted,
            Some(Versions {
                acted_on: record.candidate,
                serving: record.candidate,
            }),
            format!("{reason}; watched for {}s", watch.as_secs()),
        );
        // In the watch the candidate serves, and the previous version stands by.
        let serving = Serving {
            stable: live.other.clone(),
            rollout: Some(Arc::new(LiveRollout::new(
                record.clone(),
                live.plan.clone(),
                previous.clone(),
            ))),
        };
        self.apply(
            guard,
            Some(Deployment {
                stable: record.candidate,
                rollout: Some(record.clone()),
            }),
            &event,
            |entry| entry.set(serving),
        )?;
        self.loaded(&live.other);
        tracing::info!(
            function = guard.name(),
            version = record.candidate,
            "rollout promoted"
        );
        self.notify(guard.name(), AuditAction::Promoted, &record, reason, None);
        Ok(())
    }

    /// The candidate keeps all traffic and the rollout ends: the previous version is let go
    /// (`action`: rollout_complete at the end of the watch, promoted when there is none).
    fn finish_rollout(
        &self,
        guard: &FunctionGuard,
        live: &LiveRollout,
        action: AuditAction,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), DeployError> {
        let record = &live.record;
        let event = AuditEvent::new(
            guard.name(),
            actor,
            action,
            Some(Versions {
                acted_on: record.candidate,
                serving: record.candidate,
            }),
            reason,
        );
        // Promoted straight from a step, the candidate is `other`; in a watch it serves already.
        let candidate = match record.phase {
            Phase::Watch { .. } => self.registry.function(guard.name()),
            _ => Some(live.other.clone()),
        }
        .unwrap_or_else(|| live.other.clone());
        self.serve_alone(guard, &candidate, &event)?;
        tracing::info!(
            function = guard.name(),
            version = record.candidate,
            "rollout {action}"
        );
        self.notify(guard.name(), action, record, reason, None);
        Ok(())
    }

    /// Gives all traffic back to the previous version at once (`action`: auto_rollback,
    /// aborted or rollback).
    pub(super) fn revert(
        &self,
        guard: &FunctionGuard,
        live: &LiveRollout,
        action: AuditAction,
        actor: &Actor,
        reason: &str,
        figures: Option<serde_json::Value>,
    ) -> Result<(), DeployError> {
        let record = &live.record;
        let event = AuditEvent::new(
            guard.name(),
            actor,
            action,
            Some(Versions {
                acted_on: record.candidate,
                serving: record.previous,
            }),
            reason,
        )
        .with_figures(figures.clone());
        // In a watch the previous version is `other`; before it, it still serves.
        let previous = match record.phase {
            Phase::Watch { .. } => Some(live.other.clone()),
            _ => self.registry.function(guard.name()),
        }
        .unwrap_or_else(|| live.other.clone());
        self.serve_alone(guard, &previous, &event)?;
        tracing::warn!(
            function = guard.name(),
            candidate = record.candidate,
            serving = record.previous,
            "rollout {action}: {reason}"
        );
        self.notify(guard.name(), action, record, reason, figures);
        Ok(())
    }

    /// `aifn promote`: the next step now (or, with `full`, all traffic); in a watch, its end.
    pub async fn promote(
        &self,
        name: &str,
        full: bool,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<RolloutRecord, DeployError> {
        let guard = self.registry.lock(name).await;
        let Some(Serving {
            stable,
            rollout: Some(live),
        }) = self.registry.serving(name)
        else {
            return Err(DeployError::NoRollout(name.to_string()));
        };
        let reason = reason.unwrap_or("promoted by hand");
        match live.record.phase {
            Phase::Step { index, .. } if !full && index + 2 < live.plan.steps.len() => {
                self.step_to(&guard, &live, index + 1, actor, reason)?
            }
            Phase::Step { .. } | Phase::Shadow { .. } => {
                let baseline = stable.outcomes.figures(live.plan.window.0);
                self.promote_candidate(&guard, &stable, &live, baseline, actor, reason)?
            }
            Phase::Watch { .. } => {
                self.finish_rollout(&guard, &live, AuditAction::RolloutComplete, actor, reason)?
            }
        }
        Ok(self
            .registry
            .serving(name)
            .and_then(|s| s.rollout)
            .map_or(live.record.clone(), |l| l.record.clone()))
    }

    /// `aifn abort`: the previous version takes all traffic back.
    pub async fn abort(
        &self,
        name: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<u64, DeployError> {
        let guard = self.registry.lock(name).await;
        let live = self
            .registry
            .serving(name)
            .and_then(|s| s.rollout)
            .ok_or_else(|| DeployError::NoRollout(name.to_string()))?;
        self.revert(
            &guard,
            &live,
            AuditAction::Aborted,
            actor,
            reason.unwrap_or("aborted by hand"),
            None,
        )?;
        Ok(live.record.previous)
    }

    /// Brings back a rollout found in the database at start (the stable version serves
    /// already): the other version is loaded, a step's hold starts again (its figures were in
    /// memory), a watch keeps its end. If the other version cannot load, the rollout is reverted
    /// (or, in a watch, completed) and logged.
    pub(super) async fn resume_rollout(
        &self,
        guard: &FunctionGuard,
        mut record: RolloutRecord,
    ) -> Result<(), crate::store::StoreError> {
        let name = guard.name();
        let watching = matches!(record.phase, Phase::Watch { .. });
        let (other_version, stable_version) = if watching {
            (record.previous, record.candidate)
        } else {
            (record.candidate, record.previous)
        };
        let loaded = match self.store.version(name, other_version) {
            Ok(r) => self.load(r).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let platform = Actor::platform();
        let other = match loaded {
            Ok(other) => other,
            Err(e) => {
                let (stable, action) = if watching {
                    (record.candidate, AuditAction::RolloutComplete)
                } else {
                    (record.previous, AuditAction::Aborted)
                };
                let reason =
                    format!("after a restart version {other_version} could not be loaded: {e}");
                let event = AuditEvent::new(
                    name,
                    &platform,
                    action,
                    Some(Versions {
                        acted_on: record.candidate,
                        serving: stable,
                    }),
                    &reason,
                );
                self.store.write(|txn| {
                    txn.set_deployment(
                        name,
                        Some(&Deployment {
                            stable,
                            rollout: None,
                        }),
                    )?;
                    txn.log(&event)
                })?;
                tracing::error!(function = name, "{reason}");
                return Ok(());
            }
        };
        // The plan is the candidate's: in a watch, the candidate is the stable version.
        let candidate = if watching {
            self.registry.function(name)
        } else {
            None
        };
        let plan = plan_for(candidate.as_deref().unwrap_or(&other), record.strategy);
        match &mut record.phase {
            Phase::Step { since_ms, .. } | Phase::Shadow { since_ms } => *since_ms = now_ms(),
            Phase::Watch { .. } => {}
        }
        let event = AuditEvent::new(
            name,
            &platform,
            AuditAction::Resumed,
            Some(Versions {
                acted_on: record.candidate,
                serving: stable_version,
            }),
            if watching {
                "the host restarted during the watch; it goes on to its end"
            } else {
                "the host restarted mid-rollout; the current step's hold starts again"
            },
        );
        let live = Arc::new(LiveRollout::new(record.clone(), plan, other));
        let resumed = self.apply(
            guard,
            Some(Deployment {
                stable: stable_version,
                rollout: Some(record.clone()),
            }),
            &event,
            |entry| {
                entry.set_rollout(Some(live));
                Ok(())
            },
        );
        match resumed {
            Ok(()) => tracing::info!(
                function = name,
                candidate = record.candidate,
                "rollout resumed"
            ),
            Err(e) => tracing::error!(function = name, "resuming the rollout: {e}"),
        }
        Ok(())
    }

    fn notify(
        &self,
        name: &str,
        action: AuditAction,
        record: &RolloutRecord,
        reason: &str,
        figures: Option<serde_json::Value>,
    ) {
        let now = std::time::SystemTime::now();
        self.notifier.send(json!({
            "event": action,
            "function": name,
            "candidate_version": record.candidate,
            "previous_version": record.previous,
            "serving_version": self.registry.function(name).map(|f| f.version()),
            "strategy": record.strategy,
            "reason": reason,
            "figures": figures,
            "at": humantime::format_rfc3339_millis(now).to_string(),
            "at_ms": now_ms(),
        }));
    }
}

/// The window a phase is judged on: the plan's, but never reaching back before the phase began
/// (a new step is judged on its own traffic).
pub(super) fn judged_window(plan: &aifn_spec::Rollout, phase: &Phase, now: u64) -> Duration {
    let since = match phase {
        Phase::Step { since_ms, .. } | Phase::Shadow { since_ms } => *since_ms,
        Phase::Watch { until_ms, .. } => until_ms.saturating_sub(plan.watch.0.as_millis() as u64),
    };
    plan.window
        .0
        .min(Duration::from_millis(now.saturating_sub(since)))
        .max(Duration::from_secs(1))
}

fn p95_text(figures: &Figures) -> String {
    figures
        .p95_ms
        .map_or("n/a".into(), |p| format!("{p:.1} ms"))
}
