//! Rollouts on a running host: which version a request goes to, the loop that judges every
//! rollout ([`crate::rollout::judge`]) and acts on its verdict, and the hand-driven `promote`,
//! `abort` and `prune`. Every change of what serves traffic is written to the state database in
//! one transaction with its audit event before memory changes, so a restart resumes it or finds
//! it reverted, never half-applied.

use crate::function::LoadedFunction;
use crate::host::{DeployError, Host};
use crate::outcomes::Disagreement;
use crate::policy::Caller;
use crate::rollout::{self, Figures, Verdict};
use crate::store::{AuditEvent, Deployment, Phase, RolloutRecord, StoreError};
use aifn_spec::{RolloutStrategy, Sticky};
use dashmap::DashMap;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most callers remembered per rollout for `sticky`; past it, callers keep to their hash bucket.
const MAX_PINS: usize = 100_000;

/// Who acts on a deployment: a control-plane caller, or the platform itself.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

impl Actor {
    pub fn platform() -> Actor {
        Actor("aifn".into())
    }
}

/// A rollout in progress, in memory: the other version it involves (the candidate during a
/// canary or a shadow, the previous version during the watch) and the traffic split.
pub struct LiveRollout {
    pub record: Mutex<RolloutRecord>,
    pub plan: aifn_spec::Rollout,
    pub other: Arc<LoadedFunction>,
    /// The candidate's share of traffic in basis points (canary steps).
    share: AtomicU32,
    /// Sticky callers' first assignment (key hash → on the candidate).
    pins: DashMap<u64, bool>,
    pub disagreement: Mutex<Disagreement>,
    /// The last verdict's words, for `aifn status`.
    note: Mutex<String>,
    /// Since when the candidate's p95 has been over the threshold (milliseconds since the epoch).
    slow_since_ms: Mutex<Option<u64>>,
}

impl LiveRollout {
    fn new(record: RolloutRecord, plan: aifn_spec::Rollout, other: Arc<LoadedFunction>) -> Self {
        let share = rollout::share_basis_points(&plan, &record.phase);
        LiveRollout {
            record: Mutex::new(record),
            plan,
            other,
            share: AtomicU32::new(share),
            pins: DashMap::new(),
            disagreement: Mutex::new(Disagreement::default()),
            note: Mutex::new(String::new()),
            slow_since_ms: Mutex::new(None),
        }
    }

    fn record(&self) -> RolloutRecord {
        self.record.lock().expect("rollout lock").clone()
    }

    /// Whether a request goes to the candidate: by its caller's pinned or hashed bucket when the
    /// rollout is sticky, else at random.
    fn to_candidate(&self, sticky_key: Option<&str>) -> bool {
        let share = self.share.load(Ordering::Relaxed);
        let Some(key) = sticky_key else {
            return rollout::in_share(rand::random_range(0..10_000), share);
        };
        let hash = stable_hash(key);
        let hashed = rollout::in_share((hash % 10_000) as u32, share);
        if self.pins.len() >= MAX_PINS {
            return self.pins.get(&hash).map_or(hashed, |p| *p);
        }
        *self.pins.entry(hash).or_insert(hashed)
    }
}

/// FNV-1a: the same key gives the same bucket in every process (pins survive in spirit a restart).
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Which kind of phase a rollout is in (what routing needs of it, without copying the record).
enum PhaseKind {
    Step,
    Shadow,
    Watch,
}

/// Where a request goes.
pub struct Choice {
    pub serve: Arc<LoadedFunction>,
    /// A shadow that gets a copy of the request.
    pub shadow: Option<(Arc<LoadedFunction>, Arc<LiveRollout>)>,
}

/// `aifn status`: a rollout in progress.
#[derive(Debug, Serialize)]
pub struct RolloutView {
    pub strategy: RolloutStrategy,
    pub candidate: u64,
    pub previous: u64,
    pub phase: Phase,
    /// Percent of traffic the candidate takes now.
    pub candidate_share: f64,
    pub steps: Vec<f64>,
    pub note: String,
    /// Both versions over the window the rollout is judged on.
    pub stable_figures: Figures,
    pub candidate_figures: Figures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowView>,
}

#[derive(Debug, Serialize)]
pub struct ShadowView {
    #[serde(flatten)]
    pub disagreement: Disagreement,
    pub differing_share: f64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The plan a version rolls out by: its spec's `rollout`, or the defaults, with the strategy the
/// deploy asked for.
pub fn plan_for(function: &LoadedFunction, strategy: RolloutStrategy) -> aifn_spec::Rollout {
    let mut plan = function.spec.spec.rollout.clone().unwrap_or_default();
    plan.strategy = strategy;
    plan
}

impl Host {
    /// Where a request that routed to `stable` goes: the candidate for its share of a canary,
    /// and a copy to a shadow.
    /// With no rollout this is one map lookup: the caller's key is only made for sticky canaries.
    pub fn choose(
        &self,
        stable: &Arc<LoadedFunction>,
        caller: &Caller,
        headers: &hyper::HeaderMap,
    ) -> Choice {
        let live = self.rollouts.get(stable.name()).map(|r| r.clone());
        let Some(live) = live.filter(|l| l.other.version() != stable.version()) else {
            return Choice {
                serve: stable.clone(),
                shadow: None,
            };
        };
        let phase = match live.record.lock().expect("rollout lock").phase {
            Phase::Watch { .. } => PhaseKind::Watch,
            Phase::Shadow { .. } => PhaseKind::Shadow,
            Phase::Step { .. } => PhaseKind::Step,
        };
        match phase {
            PhaseKind::Watch => Choice {
                serve: stable.clone(),
                shadow: None,
            },
            PhaseKind::Shadow => Choice {
                serve: stable.clone(),
                shadow: Some((live.other.clone(), live)),
            },
            PhaseKind::Step => {
                let caller_key;
                let key = match &live.plan.sticky {
                    Sticky::None => None,
                    Sticky::Caller => {
                        caller_key = caller.key();
                        Some(caller_key.as_str())
                    }
                    Sticky::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
                };
                let serve = if live.to_candidate(key) {
                    live.other.clone()
                } else {
                    stable.clone()
                };
                Choice {
                    serve,
                    shadow: None,
                }
            }
        }
    }

    /// The rollout of `name` now, if any.
    pub fn rollout(&self, name: &str) -> Option<Arc<LiveRollout>> {
        self.rollouts.get(name).map(|r| r.clone())
    }

    pub fn rollout_view(&self, name: &str) -> Option<RolloutView> {
        let live = self.rollout(name)?;
        let stable = self.function(name)?;
        let record = live.record();
        let window = judged_window(&live.plan, &record.phase, now_ms());
        let (stable_figures, candidate_figures) = match &record.phase {
            Phase::Watch { baseline, .. } => (baseline.clone(), stable.outcomes.figures(window)),
            _ => (
                stable.outcomes.figures(window),
                live.other.outcomes.figures(window),
            ),
        };
        let shadow = matches!(record.phase, Phase::Shadow { .. }).then(|| {
            let disagreement = live.disagreement.lock().expect("rollout lock").clone();
            ShadowView {
                differing_share: disagreement.differing_share(),
                disagreement,
            }
        });
        let note = live.note.lock().expect("rollout lock").clone();
        Some(RolloutView {
            strategy: record.strategy,
            candidate: record.candidate,
            previous: record.previous,
            candidate_share: f64::from(live.share.load(Ordering::Relaxed)) / 100.0,
            steps: live.plan.steps.clone(),
            phase: record.phase,
            note,
            stable_figures,
            candidate_figures,
            shadow,
        })
    }

    /// Starts a canary or shadow of `candidate` against the serving `stable` (the deploy lock is
    /// held and the version is already loaded). Returns the deployment to write.
    pub(crate) fn begin_rollout(
        &self,
        stable: &Arc<LoadedFunction>,
        candidate: &Arc<LoadedFunction>,
        strategy: RolloutStrategy,
    ) -> Result<(Deployment, Arc<LiveRollout>), DeployError> {
        let same = |f: &LoadedFunction| {
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
        if same(stable) != same(candidate) {
            return Err(DeployError::Rollout(format!(
                "a {} needs the new version to serve the same endpoints as version {} ({}); deploy it with --immediate to change them",
                if strategy == RolloutStrategy::Shadow { "shadow" } else { "canary" },
                stable.version(),
                same(stable)
                    .iter()
                    .map(|(m, r)| format!("{m} {r}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let plan = plan_for(candidate, strategy);
        let now = now_ms();
        let (stable_version, phase, other) = match strategy {
            RolloutStrategy::Shadow => {
                (stable.version(), Phase::Shadow { since_ms: now }, candidate)
            }
            _ if plan.steps.len() > 1 => (
                stable.version(),
                Phase::Step {
                    index: 0,
                    since_ms: now,
                },
                candidate,
            ),
            // `steps: [100]`: all traffic at once, then the watch.
            _ => (
                candidate.version(),
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
            stable: stable_version,
            rollout: Some(record.clone()),
        };
        Ok((
            deployment,
            Arc::new(LiveRollout::new(record, plan, other.clone())),
        ))
    }

    /// Judges every rollout every `rollout_tick`, for the host's life.
    pub(crate) fn start_rollout_loop(self: &Arc<Self>) {
        let host = Arc::downgrade(self);
        let tick = self.config.rollout_tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            loop {
                interval.tick().await;
                let Some(host) = host.upgrade() else { return };
                let names: Vec<String> = host.rollouts.iter().map(|r| r.key().clone()).collect();
                for name in names {
                    if let Err(e) = host.judge(&name).await {
                        tracing::error!(function = %name, "rollout: {e}");
                    }
                }
            }
        });
    }

    /// Judges one rollout and acts on the verdict.
    async fn judge(self: &Arc<Self>, name: &str) -> Result<(), StoreError> {
        let _guard = self.deploy_lock.lock().await;
        let (Some(live), Some(stable)) = (self.rollout(name), self.function(name)) else {
            return Ok(());
        };
        let record = live.record();
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
            let mut slow_since = live.slow_since_ms.lock().expect("rollout lock");
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
                *live.note.lock().expect("rollout lock") = why;
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
                self.step_to(name, &live, index, &platform, &reason)
            }
            Verdict::Promote => {
                let reason = format!(
                    "every step held within thresholds ({} requests, {:.1}% errors, p95 {} against {})",
                    candidate_figures.requests,
                    candidate_figures.error_rate() * 100.0,
                    p95_text(&candidate_figures),
                    p95_text(&stable_figures)
                );
                self.promote_candidate(name, &live, stable_figures, &platform, &reason)
            }
            Verdict::Complete => self.finish_rollout(
                name,
                &live,
                "rollout_complete",
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
                self.revert(name, &live, "auto_rollback", &platform, &why, Some(figures))
            }
        }
    }

    /// Writes what serves `name` now (`None`: nothing) with the audit event that says why, in one
    /// transaction: a crash leaves both or neither.
    pub(crate) fn commit(
        &self,
        name: &str,
        deployment: impl Into<Option<Deployment>>,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let deployment = deployment.into();
        self.store.write(|txn| {
            txn.set_deployment(name, deployment.as_ref())?;
            txn.log(event)
        })
    }

    /// Moves a canary to step `index`.
    fn step_to(
        &self,
        name: &str,
        live: &LiveRollout,
        index: usize,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut record = live.record();
        record.phase = Phase::Step {
            index,
            since_ms: now_ms(),
        };
        let share = live.plan.steps[index];
        self.commit(
            name,
            Deployment {
                stable: record.previous,
                rollout: Some(record.clone()),
            },
            &event(
                name,
                actor,
                "step",
                record.candidate,
                record.previous,
                &format!(
                    "{share}% of traffic to version {}: {reason}",
                    record.candidate
                ),
                None,
            ),
        )?;
        live.share.store(
            rollout::share_basis_points(&live.plan, &record.phase),
            Ordering::Relaxed,
        );
        *live.record.lock().expect("rollout lock") = record.clone();
        tracing::info!(
            function = name,
            candidate = record.candidate,
            share,
            "rollout step"
        );
        self.notify(name, "step", &record, reason, None);
        Ok(())
    }

    /// The candidate takes all traffic; the watch begins (or, with `watch: 0s`, the rollout ends).
    fn promote_candidate(
        &self,
        name: &str,
        live: &LiveRollout,
        baseline: Figures,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut record = live.record();
        let Some(previous) = self.function(name) else {
            return Ok(());
        };
        let watch = live.plan.watch.0;
        if watch.is_zero() {
            return self.finish_rollout(name, live, "promoted", actor, reason);
        }
        record.phase = Phase::Watch {
            until_ms: now_ms() + watch.as_millis() as u64,
            baseline,
        };
        self.commit(
            name,
            Deployment {
                stable: record.candidate,
                rollout: Some(record.clone()),
            },
            &event(
                name,
                actor,
                "promoted",
                record.candidate,
                record.candidate,
                &format!("{reason}; watched for {}s", watch.as_secs()),
                None,
            ),
        )?;
        self.activate_arc(live.other.clone());
        self.rollouts.insert(
            name.to_string(),
            Arc::new(LiveRollout::new(
                record.clone(),
                live.plan.clone(),
                previous,
            )),
        );
        tracing::info!(
            function = name,
            version = record.candidate,
            "rollout promoted"
        );
        self.notify(name, "promoted", &record, reason, None);
        Ok(())
    }

    /// The candidate keeps all traffic and the rollout ends: the previous version is let go
    /// (`action`: rollout_complete at the end of the watch, promoted when there is none).
    fn finish_rollout(
        &self,
        name: &str,
        live: &LiveRollout,
        action: &str,
        actor: &Actor,
        reason: &str,
    ) -> Result<(), StoreError> {
        let record = live.record();
        self.commit(
            name,
            Deployment {
                stable: record.candidate,
                rollout: None,
            },
            &event(
                name,
                actor,
                action,
                record.candidate,
                record.candidate,
                reason,
                None,
            ),
        )?;
        // Promoted straight from a step: the candidate is not serving yet (in a watch it is).
        if self.function(name).map(|f| f.version()) != Some(record.candidate) {
            self.activate_arc(live.other.clone());
        }
        self.rollouts.remove(name);
        tracing::info!(
            function = name,
            version = record.candidate,
            "rollout {action}"
        );
        self.notify(name, action, &record, reason, None);
        Ok(())
    }

    /// Gives all traffic back to the previous version at once (`action`: auto_rollback,
    /// aborted or rollback).
    pub(crate) fn revert(
        &self,
        name: &str,
        live: &LiveRollout,
        action: &str,
        actor: &Actor,
        reason: &str,
        figures: Option<serde_json::Value>,
    ) -> Result<(), StoreError> {
        let record = live.record();
        self.commit(
            name,
            Deployment {
                stable: record.previous,
                rollout: None,
            },
            &event(
                name,
                actor,
                action,
                record.candidate,
                record.previous,
                reason,
                figures.clone(),
            ),
        )?;
        if matches!(record.phase, Phase::Watch { .. }) {
            self.activate_arc(live.other.clone());
        }
        self.rollouts.remove(name);
        tracing::warn!(
            function = name,
            candidate = record.candidate,
            serving = record.previous,
            "rollout {action}: {reason}"
        );
        self.notify(name, action, &record, reason, figures);
        Ok(())
    }

    /// `aifn promote`: the next step now (or, with `full`, all traffic); in a watch, its end.
    pub async fn promote(
        self: &Arc<Self>,
        name: &str,
        full: bool,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<RolloutRecord, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let live = self
            .rollout(name)
            .ok_or_else(|| DeployError::NoRollout(name.to_string()))?;
        let record = live.record();
        let reason = reason.unwrap_or("promoted by hand");
        match record.phase {
            Phase::Step { index, .. } if !full && index + 2 < live.plan.steps.len() => {
                self.step_to(name, &live, index + 1, actor, reason)?
            }
            Phase::Step { .. } | Phase::Shadow { .. } => {
                let stable = self
                    .function(name)
                    .ok_or_else(|| DeployError::NotFound(name.into()))?;
                let baseline = stable.outcomes.figures(live.plan.window.0);
                self.promote_candidate(name, &live, baseline, actor, reason)?
            }
            Phase::Watch { .. } => {
                self.finish_rollout(name, &live, "rollout_complete", actor, reason)?
            }
        }
        Ok(self.rollout(name).map_or(record, |l| l.record()))
    }

    /// `aifn abort`: the previous version takes all traffic back.
    pub async fn abort(
        self: &Arc<Self>,
        name: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<u64, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        let live = self
            .rollout(name)
            .ok_or_else(|| DeployError::NoRollout(name.to_string()))?;
        self.revert(
            name,
            &live,
            "aborted",
            actor,
            reason.unwrap_or("aborted by hand"),
            None,
        )?;
        Ok(live.record().previous)
    }

    /// Brings back a rollout found in the database at start: the other version is loaded, a
    /// step's hold starts again (its figures were in memory), a watch keeps its end. If the other
    /// version cannot load, the rollout is reverted (or, in a watch, completed) and logged.
    pub(crate) async fn resume_rollout(
        self: &Arc<Self>,
        name: &str,
        mut record: RolloutRecord,
    ) -> Result<(), StoreError> {
        let watching = matches!(record.phase, Phase::Watch { .. });
        let other_version = if watching {
            record.previous
        } else {
            record.candidate
        };
        let loaded = match self.store.version(name, other_version) {
            Ok(r) => self.load(r).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let platform = Actor::platform();
        let other = match loaded {
            Ok(other) => Arc::new(other),
            Err(e) => {
                let (stable, action) = if watching {
                    (record.candidate, "rollout_complete")
                } else {
                    (record.previous, "aborted")
                };
                let reason =
                    format!("after a restart version {other_version} could not be loaded: {e}");
                self.commit(
                    name,
                    Deployment {
                        stable,
                        rollout: None,
                    },
                    &event(
                        name,
                        &platform,
                        action,
                        record.candidate,
                        stable,
                        &reason,
                        None,
                    ),
                )?;
                tracing::error!(function = name, "{reason}");
                return Ok(());
            }
        };
        let strategy = record.strategy;
        // The plan is the candidate's: in a watch, the candidate is the stable version.
        let candidate = if watching { self.function(name) } else { None };
        let plan = plan_for(candidate.as_deref().unwrap_or(&other), strategy);
        match &mut record.phase {
            Phase::Step { since_ms, .. } | Phase::Shadow { since_ms } => *since_ms = now_ms(),
            Phase::Watch { .. } => {}
        }
        self.commit(
            name,
            Deployment {
                stable: if watching {
                    record.candidate
                } else {
                    record.previous
                },
                rollout: Some(record.clone()),
            },
            &event(
                name,
                &platform,
                "resumed",
                record.candidate,
                if watching {
                    record.candidate
                } else {
                    record.previous
                },
                if watching {
                    "the host restarted during the watch; it goes on to its end"
                } else {
                    "the host restarted mid-rollout; the current step's hold starts again"
                },
                None,
            ),
        )?;
        tracing::info!(
            function = name,
            candidate = record.candidate,
            "rollout resumed"
        );
        self.rollouts.insert(
            name.to_string(),
            Arc::new(LiveRollout::new(record, plan, other)),
        );
        Ok(())
    }

    /// `aifn prune`: drops the versions of `name` beyond the newest `keep` (never one serving or
    /// in a rollout), then the artifacts nothing names any more.
    pub async fn prune(
        &self,
        name: &str,
        keep: usize,
        actor: &Actor,
    ) -> Result<PruneOutcome, DeployError> {
        let _guard = self.deploy_lock.lock().await;
        self.prune_locked(name, keep, actor)
    }

    pub(crate) fn prune_locked(
        &self,
        name: &str,
        keep: usize,
        actor: &Actor,
    ) -> Result<PruneOutcome, DeployError> {
        let versions = self.store.versions(name)?;
        if versions.is_empty() {
            return Err(DeployError::NotFound(name.to_string()));
        }
        let mut in_use = vec![];
        if let Some(deployment) = self.store.deployment(name)? {
            in_use.push(deployment.stable);
            if let Some(r) = deployment.rollout {
                in_use.extend([r.candidate, r.previous]);
            }
        }
        let cut = versions.len().saturating_sub(keep.max(1));
        let pruned: Vec<u64> = versions[..cut]
            .iter()
            .map(|r| r.version)
            .filter(|v| !in_use.contains(v))
            .collect();
        if !pruned.is_empty() {
            self.store.write(|txn| {
                for version in &pruned {
                    txn.remove_version(name, *version)?;
                }
                txn.log(&AuditEvent {
                    seq: 0,
                    at_ms: now_ms(),
                    function: name.to_string(),
                    actor: actor.0.clone(),
                    action: "pruned".into(),
                    version: None,
                    serving: None,
                    reason: format!("kept the newest {keep}; removed versions {pruned:?}"),
                    figures: None,
                })
            })?;
        }
        // Blobs younger than this may belong to a deploy on its way.
        let (blobs, bytes) = self.store.collect_garbage(Duration::from_secs(600))?;
        Ok(PruneOutcome {
            pruned,
            kept: versions.len() - cut,
            blobs_removed: blobs,
            bytes_freed: bytes,
        })
    }

    fn notify(
        &self,
        name: &str,
        action: &str,
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
            "serving_version": self.function(name).map(|f| f.version()),
            "strategy": record.strategy,
            "reason": reason,
            "figures": figures,
            "at": humantime::format_rfc3339_millis(now).to_string(),
            "at_ms": now_ms(),
        }));
    }
}

#[derive(Debug, Serialize)]
pub struct PruneOutcome {
    pub pruned: Vec<u64>,
    pub kept: usize,
    pub blobs_removed: usize,
    pub bytes_freed: u64,
}

/// The window a phase is judged on: the plan's, but never reaching back before the phase began
/// (a new step is judged on its own traffic).
fn judged_window(plan: &aifn_spec::Rollout, phase: &Phase, now: u64) -> Duration {
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

pub(crate) fn event(
    function: &str,
    actor: &Actor,
    action: &str,
    version: u64,
    serving: u64,
    reason: &str,
    figures: Option<serde_json::Value>,
) -> AuditEvent {
    AuditEvent {
        seq: 0,
        at_ms: now_ms(),
        function: function.to_string(),
        actor: actor.0.clone(),
        action: action.to_string(),
        version: Some(version),
        serving: Some(serving),
        reason: reason.to_string(),
        figures,
    }
}
