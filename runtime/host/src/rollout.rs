//! Rollouts: how a new version takes over from the stable one, judged on its own figures against
//! the stable version's over the same window. Pure: the time and the figures are passed in, so the
//! rules are tested on a simulated clock; the host (`lifecycle.rs`) acts on the verdicts.
//!
//! A canary takes `steps[0]`% of traffic, then `steps[1]`%, ... each held for `step_duration` and
//! until it has answered `min_requests`; after the last step below 100 it is promoted (takes all
//! traffic) and watched for `watch` against the stable version's figures from just before. A
//! shadow gets a copy of the traffic until promoted or aborted by hand. At any point, a candidate
//! whose error rate or p95 crosses the thresholds fails, and the last good version takes the
//! traffic back.

use crate::records::{Figures, Phase};
use aifn_spec::Rollout;
use std::time::Duration;

/// A p95 is only called worse when it is also this much over the stable one: at sub-millisecond
/// latencies a ratio alone would fail versions on scheduling noise.
pub const LATENCY_SLACK_MS: f64 = 2.0;

/// A p95 over the threshold fails a version only once it has stayed over this long: a version just
/// given more traffic is slow while its pool grows to the new load. (Errors fail at once.)
pub const LATENCY_PERSISTENCE: Duration = Duration::from_secs(3);

/// What to do with a rollout now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep going as is; why, for `aifn status`.
    Hold(String),
    /// The p95 is over the threshold, not yet for [`LATENCY_PERSISTENCE`]: the caller remembers
    /// since when (and forgets it on any other verdict).
    Slow(String),
    /// Move to step `index`.
    Advance(usize),
    /// The candidate takes all traffic (and the watch begins).
    Promote,
    /// The watch ended without a fault: the rollout is done.
    Complete,
    /// The candidate crossed a threshold: give the traffic back. Says which and by how much.
    Fail(String),
}

/// Judges a rollout in `phase` at `now_ms`, given both versions' figures over the window and
/// since when the candidate has been too slow (see [`Verdict::Slow`]).
pub fn judge(
    plan: &Rollout,
    phase: &Phase,
    now_ms: u64,
    stable: &Figures,
    candidate: &Figures,
    slow_since_ms: Option<u64>,
) -> Verdict {
    let baseline = match phase {
        Phase::Watch { baseline, .. } => baseline,
        _ => stable,
    };
    match fault(plan, baseline, candidate) {
        Some(Fault::Errors(why)) => return Verdict::Fail(why),
        Some(Fault::Latency(why)) => {
            let slow_for =
                slow_since_ms.map(|since| Duration::from_millis(now_ms.saturating_sub(since)));
            return if slow_for.is_some_and(|d| d >= LATENCY_PERSISTENCE) {
                Verdict::Fail(format!("{why}, for {}s", LATENCY_PERSISTENCE.as_secs()))
            } else {
                Verdict::Slow(why)
            };
        }
        None => {}
    }
    match phase {
        Phase::Step { index, since_ms } => {
            let held = Duration::from_millis(now_ms.saturating_sub(*since_ms));
            let share = plan.steps.get(*index).copied().unwrap_or(100.0);
            if held < plan.step_duration.0 {
                return Verdict::Hold(format!(
                    "step {} of {}: {share}% of traffic, {}s of {}s held",
                    index + 1,
                    plan.steps.len(),
                    held.as_secs(),
                    plan.step_duration.0.as_secs()
                ));
            }
            if candidate.requests < u64::from(plan.min_requests) {
                return Verdict::Hold(format!(
                    "step {} of {}: {share}% of traffic, waiting for {} requests in the window (has {})",
                    index + 1,
                    plan.steps.len(),
                    plan.min_requests,
                    candidate.requests
                ));
            }
            if index + 2 < plan.steps.len() {
                Verdict::Advance(index + 1)
            } else {
                Verdict::Promote
            }
        }
        Phase::Shadow { .. } => Verdict::Hold(
            "shadowing: callers see the stable version; promote or abort by hand".into(),
        ),
        Phase::Watch { until_ms, .. } => {
            if now_ms >= *until_ms {
                Verdict::Complete
            } else {
                Verdict::Hold(format!(
                    "watching: {}s left",
                    (until_ms - now_ms).div_ceil(1000)
                ))
            }
        }
    }
}

/// How a candidate is worse than the baseline beyond the plan's thresholds, and by how much.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Errors(String),
    Latency(String),
}

/// How the candidate is worse than the baseline, if it is; no verdict before it has answered
/// `min_requests`.
pub fn fault(plan: &Rollout, baseline: &Figures, candidate: &Figures) -> Option<Fault> {
    if candidate.requests < u64::from(plan.min_requests) || candidate.requests == 0 {
        return None;
    }
    let (rate, base_rate) = (candidate.error_rate(), baseline.error_rate());
    if rate - base_rate > plan.max_error_rate_increase {
        return Some(Fault::Errors(format!(
            "error rate {:.1}% ({} of {} requests) against {:.1}% for the stable version; at most {:.1} points more allowed",
            rate * 100.0,
            candidate.errors,
            candidate.requests,
            base_rate * 100.0,
            plan.max_error_rate_increase * 100.0
        )));
    }
    if let (Some(p95), Some(base_p95)) = (candidate.p95_ms, baseline.p95_ms) {
        if p95 > base_p95 * plan.max_latency_ratio && p95 - base_p95 > LATENCY_SLACK_MS {
            return Some(Fault::Latency(format!(
                "p95 latency {p95:.1} ms against {base_p95:.1} ms for the stable version; at most {}x allowed",
                plan.max_latency_ratio
            )));
        }
    }
    None
}

/// The share of traffic (in basis points, 0..=10000) the candidate takes in `phase`.
pub fn share_basis_points(plan: &Rollout, phase: &Phase) -> u32 {
    match phase {
        Phase::Step { index, .. } => {
            (plan.steps.get(*index).copied().unwrap_or(100.0) * 100.0).round() as u32
        }
        Phase::Shadow { .. } => 0,
        Phase::Watch { .. } => 10_000,
    }
}

/// Whether a caller whose key hashes to `bucket` (0..10000) goes to the candidate at `share`.
/// The same key always lands in the same bucket, so a caller on the candidate stays there as
/// the share grows.
pub fn in_share(bucket: u32, share_basis_points: u32) -> bool {
    bucket < share_basis_points
}

#[cfg(test)]
mod tests {
    use super::*;
    use aifn_spec::HumanDuration;

    fn plan() -> Rollout {
        Rollout {
            steps: vec![1.0, 10.0, 100.0],
            step_duration: HumanDuration(Duration::from_secs(60)),
            min_requests: 20,
            ..Rollout::default()
        }
    }

    fn figures(requests: u64, errors: u64, p95_ms: f64) -> Figures {
        Figures {
            requests,
            errors,
            p95_ms: Some(p95_ms),
        }
    }

    #[test]
    fn a_healthy_canary_steps_up_then_is_promoted_then_completes() {
        let plan = plan();
        let stable = figures(1000, 1, 10.0);
        let good = figures(50, 0, 11.0);
        let step = |index, since_ms| Phase::Step { index, since_ms };
        assert!(matches!(
            judge(&plan, &step(0, 0), 59_000, &stable, &good, None),
            Verdict::Hold(_)
        ));
        assert_eq!(
            judge(&plan, &step(0, 0), 60_000, &stable, &good, None),
            Verdict::Advance(1)
        );
        assert_eq!(
            judge(&plan, &step(1, 60_000), 120_000, &stable, &good, None),
            Verdict::Promote
        );
        let watch = Phase::Watch {
            until_ms: 200_000,
            baseline: stable.clone(),
        };
        assert!(matches!(
            judge(&plan, &watch, 199_000, &stable, &good, None),
            Verdict::Hold(_)
        ));
        assert_eq!(
            judge(&plan, &watch, 200_000, &stable, &good, None),
            Verdict::Complete
        );
    }

    #[test]
    fn a_step_waits_for_enough_requests() {
        let verdict = judge(
            &plan(),
            &Phase::Step {
                index: 0,
                since_ms: 0,
            },
            600_000,
            &figures(1000, 0, 10.0),
            &figures(5, 0, 10.0),
            None,
        );
        assert!(matches!(verdict, Verdict::Hold(why) if why.contains("waiting for 20 requests")));
    }

    #[test]
    fn errors_or_latency_over_the_thresholds_fail_at_once() {
        let plan = plan();
        let step = Phase::Step {
            index: 0,
            since_ms: 0,
        };
        let stable = figures(1000, 10, 10.0); // 1% errors
        let Verdict::Fail(why) = judge(&plan, &step, 1, &stable, &figures(40, 2, 10.0), None)
        else {
            panic!("5% errors against 1% must fail");
        };
        assert!(why.contains("error rate 5.0% (2 of 40 requests)"), "{why}");
        // Within one point of the stable version's rate: fine.
        assert!(matches!(
            judge(&plan, &step, 1, &stable, &figures(100, 2, 10.0), None),
            Verdict::Hold(_)
        ));
        // A p95 1.6x the stable one is slow at first, and fails once it has lasted.
        let slow = figures(40, 0, 16.0);
        assert!(matches!(
            judge(&plan, &step, 1_000, &stable, &slow, None),
            Verdict::Slow(why) if why.contains("p95 latency 16.0 ms")
        ));
        assert!(matches!(
            judge(&plan, &step, 3_999, &stable, &slow, Some(1_000)),
            Verdict::Slow(_)
        ));
        let Verdict::Fail(why) = judge(&plan, &step, 4_000, &stable, &slow, Some(1_000)) else {
            panic!("a p95 1.6x the stable one for 3 s must fail");
        };
        assert!(
            why.contains("p95 latency 16.0 ms") && why.ends_with("for 3s"),
            "{why}"
        );
        // Sub-millisecond noise is not a fault.
        assert!(matches!(
            judge(
                &plan,
                &step,
                1,
                &figures(1000, 0, 0.3),
                &figures(40, 0, 0.9),
                None
            ),
            Verdict::Hold(_)
        ));
        // Nor are a few errors before min_requests answers.
        assert!(matches!(
            judge(&plan, &step, 1, &stable, &figures(5, 5, 10.0), None),
            Verdict::Hold(_)
        ));
    }

    #[test]
    fn the_watch_compares_with_the_baseline_from_before_the_promotion() {
        let watch = Phase::Watch {
            until_ms: 100,
            baseline: figures(1000, 0, 10.0),
        };
        // The stable figures passed in are the candidate's own once it serves everything.
        let now = figures(100, 30, 10.0);
        assert!(matches!(
            judge(&plan(), &watch, 50, &now, &now, None),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn shares_follow_the_steps_and_callers_stay_put_as_they_grow() {
        let plan = plan();
        let at = |index| share_basis_points(&plan, &Phase::Step { index, since_ms: 0 });
        assert_eq!((at(0), at(1)), (100, 1000));
        for bucket in 0..10_000 {
            if in_share(bucket, at(0)) {
                assert!(in_share(bucket, at(1)));
            }
        }
    }
}
