//! The autoscaling controller: how many instances a function should run, decided from what was
//! observed, as a pure function of its inputs (time included), so it can be tested with a
//! simulated clock.
//!
//! It follows Knative's autoscaler (KPA): the same samples of ongoing requests (running plus
//! waiting) are averaged over a *stable* window (60 s) for steady decisions and a *panic* window
//! (6 s) to react to bursts; in panic mode it only scales up. The target per instance is Ray
//! Serve's "target ongoing requests". On top, latency counts: a p95 over `target_latency` scales up
//! in proportion, whatever the request counts say. Scaling down waits until fewer instances have
//! been enough for `scale_down_delay`, so a dip does not flap the pool. Bounds: `min_replicas`,
//! `max_replicas`, and the host's capacity (instances whose threads fit the cores), past which more
//! instances only add latency and the host sheds load instead.
//!
//! [`scaler`] runs these rules for every loaded pool on a thread of its own.

pub mod scaler;

pub use scaler::ScalerWake;

use std::collections::VecDeque;
use std::time::Duration;

/// What the controller aims for and may do, for one function.
#[derive(Debug, Clone)]
pub struct Policy {
    pub min: usize,
    pub max: usize,
    /// Instances this host runs usefully at once for the function (its cores over the instance's
    /// threads); the controller never goes past it.
    pub capacity: usize,
    pub target_latency: Option<Duration>,
    /// Ongoing requests per instance the controller aims for.
    pub target_ongoing: f64,
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// Panic when the panic window asks for this many times the instances running.
    pub panic_threshold: f64,
    /// How long fewer instances must have been enough before the controller removes any.
    pub scale_down_delay: Duration,
}

impl Policy {
    /// Knative's and Ray Serve's defaults, scaled to a host that decides every few hundred ms.
    pub fn new(
        min: usize,
        max: usize,
        capacity: usize,
        target_latency: Option<Duration>,
    ) -> Policy {
        Policy {
            min,
            max: max.max(min).max(1),
            capacity: capacity.max(1),
            target_latency,
            target_ongoing: 2.0,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_down_delay: Duration::from_secs(30),
        }
    }

    /// The most instances the controller may run: `max_replicas`, or the host's capacity if
    /// smaller, but never fewer than `min_replicas` (a promise the spec made).
    pub fn ceiling(&self) -> usize {
        self.max.min(self.capacity).max(self.min)
    }
}

/// One observation of a function.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Time since the controller started (a monotonic clock, simulated in tests).
    pub at: Duration,
    /// Requests running or waiting.
    pub ongoing: usize,
    /// The p95 latency of the requests answered recently, if any were.
    pub p95: Option<Duration>,
}

/// Why the controller wants the number of instances it wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Nothing to change.
    Steady,
    /// More ongoing requests than the instances' target over the stable window.
    Load { ongoing: f64 },
    /// A burst: the panic window asks for at least `panic_threshold` times the instances.
    Burst { ongoing: f64 },
    /// p95 over the target latency.
    Latency { p95: Duration, target: Duration },
    /// Fewer instances have been enough for the whole scale-down delay.
    Idle { ongoing: f64 },
    /// More are needed than the ceiling allows; the host sheds what does not fit.
    AtCeiling { wanted: usize, ceiling: usize },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Steady => write!(f, "steady"),
            Reason::Load { ongoing } => write!(f, "load: {ongoing:.1} requests ongoing"),
            Reason::Burst { ongoing } => write!(f, "burst: {ongoing:.1} requests ongoing"),
            Reason::Latency { p95, target } => write!(
                f,
                "latency: p95 {:.1} ms over the target {:.1} ms",
                p95.as_secs_f64() * 1e3,
                target.as_secs_f64() * 1e3
            ),
            Reason::Idle { ongoing } => write!(f, "idle: {ongoing:.1} requests ongoing"),
            Reason::AtCeiling { wanted, ceiling } => {
                write!(f, "at the ceiling: {wanted} wanted, {ceiling} allowed")
            }
        }
    }
}

/// The last resizes of one function version's pools, for its status (and the dashboard).
#[derive(Debug, Default)]
pub struct ScalingLog(std::sync::Mutex<VecDeque<crate::api::ScalingDecision>>);

impl ScalingLog {
    const KEPT: usize = 32;

    pub fn push(&self, decision: crate::api::ScalingDecision) {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == Self::KEPT {
            log.pop_front();
        }
        log.push_back(decision);
    }

    pub fn recent(&self) -> Vec<crate::api::ScalingDecision> {
        let log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub instances: usize,
    pub reason: Reason,
    /// In panic mode the controller does not scale down.
    pub panic: bool,
}

pub struct Controller {
    policy: Policy,
    samples: VecDeque<Sample>,
    current: usize,
    /// When panic mode began, and when it was last re-triggered.
    panic_since: Option<Duration>,
    /// Since when fewer instances would have done (and the most wanted since then).
    lower_since: Option<(Duration, usize)>,
}

impl Controller {
    /// A controller for a function now running `current` instances.
    pub fn new(policy: Policy, current: usize) -> Controller {
        Controller {
            policy,
            samples: VecDeque::new(),
            current,
            panic_since: None,
            lower_since: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes one observation and says how many instances to run.
    pub fn observe(&mut self, sample: Sample) -> Decision {
        let now = sample.at;
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_sub(s.at) > self.policy.stable_window)
        {
            self.samples.pop_front();
        }
        let stable = self.average_since(now.saturating_sub(self.policy.stable_window));
        let burst = self.average_since(now.saturating_sub(self.policy.panic_window));
        let per_instance = self.policy.target_ongoing;
        let want_stable = (stable / per_instance).ceil() as usize;
        let want_burst = (burst / per_instance).ceil() as usize;
        let current = self.current.max(1);

        // Latency over target: scale up in proportion to how far over it is.
        let over_latency = match (sample.p95, self.policy.target_latency) {
            (Some(p95), Some(target)) if p95 > target && sample.ongoing > 0 => Some((p95, target)),
            _ => None,
        };
        let want_latency = over_latency.map_or(0, |(p95, target)| {
            ((current as f64) * p95.as_secs_f64() / target.as_secs_f64()).ceil() as usize
        });

        // Panic mode: entered on a burst (or latency over target), left once the stable window
        // has passed without either.
        let bursting = want_burst as f64 >= self.policy.panic_threshold * current as f64
            && want_burst > current;
        if bursting || over_latency.is_some() {
            self.panic_since = Some(now);
        } else if self
            .panic_since
            .is_some_and(|since| now.saturating_sub(since) >= self.policy.stable_window)
        {
            self.panic_since = None;
        }
        let panic = self.panic_since.is_some();

        let (mut wanted, mut reason) = (want_stable, Reason::Load { ongoing: stable });
        if panic && want_burst > wanted {
            (wanted, reason) = (want_burst, Reason::Burst { ongoing: burst });
        }
        if let Some((p95, target)) = over_latency {
            if want_latency > wanted {
                (wanted, reason) = (want_latency, Reason::Latency { p95, target });
            }
        }

        let ceiling = self.policy.ceiling();
        let mut next = wanted.clamp(self.policy.min, ceiling);
        if wanted > ceiling {
            reason = Reason::AtCeiling { wanted, ceiling };
        }
        if next < self.current {
            // Down only when not panicking and fewer have been enough for the whole delay; then to
            // the most that was wanted over that time.
            let since = match self.lower_since {
                Some((since, most)) => {
                    self.lower_since = Some((since, most.max(next)));
                    since
                }
                None => {
                    self.lower_since = Some((now, next));
                    now
                }
            };
            let most = self.lower_since.map_or(next, |(_, most)| most);
            if panic || now.saturating_sub(since) < self.policy.scale_down_delay {
                next = self.current;
                reason = Reason::Steady;
            } else {
                next = most;
                reason = Reason::Idle { ongoing: stable };
                self.lower_since = None;
            }
        } else {
            self.lower_since = None;
            if next == self.current && !matches!(reason, Reason::AtCeiling { .. }) {
                reason = Reason::Steady;
            }
        }
        self.current = next;
        Decision {
            instances: next,
            reason,
            panic,
        }
    }

    /// Mean ongoing requests over the samples since `from` (0 without samples).
    fn average_since(&self, from: Duration) -> f64 {
        let (sum, count) = self
            .samples
            .iter()
            .filter(|s| s.at >= from)
            .fold((0usize, 0usize), |(sum, n), s| (sum + s.ongoing, n + 1));
        if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    fn policy(min: usize, max: usize) -> Policy {
        Policy::new(min, max, 64, Some(Duration::from_millis(50)))
    }

    /// Feeds `ongoing` (and a p95) for `seconds`, one sample per tick, and returns the decisions.
    fn run(
        c: &mut Controller,
        clock: &mut Duration,
        seconds: f64,
        ongoing: usize,
        p95_ms: u64,
    ) -> Vec<Decision> {
        let ticks = (seconds / TICK.as_secs_f64()).round() as usize;
        (0..ticks)
            .map(|_| {
                *clock += TICK;
                c.observe(Sample {
                    at: *clock,
                    ongoing,
                    p95: Some(Duration::from_millis(p95_ms)),
                })
            })
            .collect()
    }

    fn last(decisions: &[Decision]) -> usize {
        decisions.last().unwrap().instances
    }

    #[test]
    fn a_step_up_is_met_within_the_panic_window() {
        let mut c = Controller::new(policy(1, 20), 1);
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 30.0, 2, 10);
        assert_eq!(c.current, 1);
        // 16 ongoing at 2 per instance: 8 instances. The first tick after the step already scales
        // up (panic mode), and the panic window (6 s) reaches all 8.
        let d = run(&mut c, &mut clock, 6.0, 16, 10);
        assert!(d[0].instances >= 2 && d[0].panic, "{d:?}");
        assert!(
            d.iter().any(|d| matches!(d.reason, Reason::Burst { .. })),
            "{d:?}"
        );
        assert_eq!(last(&d), 8, "{d:?}");
    }

    #[test]
    fn a_step_down_waits_for_the_delay_and_then_goes_down_once() {
        let mut c = Controller::new(policy(1, 20), 1);
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 70.0, 16, 10);
        assert_eq!(c.current, 8);
        // Load falls to 2: nothing for the panic's stable window and the scale-down delay...
        let d = run(&mut c, &mut clock, 20.0, 2, 10);
        assert!(
            d.iter().all(|d| d.instances == 8),
            "scaled down too early: {d:?}"
        );
        // ...then down, only ever down, to what the load needs.
        let d = run(&mut c, &mut clock, 120.0, 2, 10);
        assert!(
            d.windows(2).all(|w| w[1].instances <= w[0].instances),
            "flapped on the way down: {d:?}"
        );
        assert_eq!(last(&d), 1);
        assert!(d.iter().any(|d| matches!(d.reason, Reason::Idle { .. })));
    }

    #[test]
    fn a_short_burst_scales_up_and_does_not_flap() {
        let mut c = Controller::new(policy(2, 20), 2);
        let mut clock = Duration::ZERO;
        run(&mut c, &mut clock, 30.0, 3, 10);
        let up = run(&mut c, &mut clock, 2.0, 20, 10);
        assert!(last(&up) >= 4, "{up:?}");
        // Oscillating load after the burst: the pool never shrinks (panic mode does not scale
        // down), so it cannot flap.
        let mut all = up;
        for _ in 0..10 {
            all.extend(run(&mut c, &mut clock, 1.0, 2, 10));
            all.extend(run(&mut c, &mut clock, 1.0, 12, 10));
        }
        let counts: Vec<usize> = all.iter().map(|d| d.instances).collect();
        assert!(
            counts.windows(2).all(|w| w[1] >= w[0]),
            "flapped: {counts:?}"
        );
    }

    #[test]
    fn latency_over_target_scales_up_in_proportion() {
        let mut c = Controller::new(policy(1, 20), 2);
        let mut clock = Duration::ZERO;
        // Few ongoing requests, but p95 at twice the 50 ms target: twice the instances.
        let d = run(&mut c, &mut clock, 0.5, 2, 100);
        assert_eq!(last(&d), 4);
        assert!(matches!(d[0].reason, Reason::Latency { .. }), "{d:?}");
    }

    #[test]
    fn bounds_hold_and_the_ceiling_is_reported() {
        let mut c = Controller::new(Policy::new(2, 6, 4, None), 2);
        let mut clock = Duration::ZERO;
        let d = run(&mut c, &mut clock, 5.0, 100, 10);
        assert_eq!(last(&d), 4, "capacity 4 caps max_replicas 6");
        assert_eq!(
            d.last().unwrap().reason,
            Reason::AtCeiling {
                wanted: 50,
                ceiling: 4
            }
        );
        let d = run(&mut c, &mut clock, 300.0, 0, 10);
        assert_eq!(last(&d), 2, "never below min_replicas");
        assert!(d.iter().all(|d| (2..=4).contains(&d.instances)));
    }

    #[test]
    fn scales_to_zero_when_idle_and_back_on_the_first_request() {
        let mut c = Controller::new(policy(0, 4), 1);
        let mut clock = Duration::ZERO;
        let d = run(&mut c, &mut clock, 200.0, 0, 0);
        assert_eq!(last(&d), 0);
        let d = run(&mut c, &mut clock, 0.5, 1, 0);
        assert_eq!(last(&d), 1);
    }
}
