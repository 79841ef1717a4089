//! Drift of one function version: every monitored feature and model output, binned against its
//! reference, counted over the sliding window, and compared at each evaluation.
//!
//! A feature's reference is a sample given with the function (its training data), or, when none is
//! given, the first `baseline` values the version sees. `drift_score` is the largest PSI among the
//! features: one feature that moved is enough for the model's inputs to have moved, and averaging
//! would dilute it among the features that did not. A feature drifts when its PSI or its KL
//! divergence is over its threshold; its alarm ([`crate::alarm`]) turns that into an alert.

use crate::alarm::{Alarm, Transition};
use crate::binning::{Binning, Value};
use crate::divergence;
use crate::window::Window;
use serde::Serialize;
use std::time::Duration;

/// What the spec's `monitoring` section sets.
#[derive(Debug, Clone)]
pub struct Settings {
    pub window: Duration,
    pub bins: usize,
    pub psi: f64,
    pub kl: f64,
    /// Evaluations over a threshold in a row before an alert fires (and under it before it clears).
    pub consecutive: u32,
    /// Fewer samples than this in the window: the evaluation reports figures but moves no alarm.
    pub min_samples: u64,
    /// Values taken as the reference when the spec gives no reference sample.
    pub baseline: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            window: Duration::from_secs(600),
            bins: 10,
            psi: 0.2,
            kl: 0.15,
            consecutive: 3,
            min_samples: 100,
            baseline: 1000,
        }
    }
}

struct Feature {
    name: String,
    /// Values seen while the reference is still being collected from live traffic.
    collecting: Vec<Value>,
    frozen: Option<Frozen>,
    alarm: Alarm,
}

struct Frozen {
    binning: Binning,
    reference: Vec<f64>,
    reference_samples: usize,
    window: Window,
}

impl Frozen {
    fn new(values: &[Value], settings: &Settings) -> Frozen {
        let binning = Binning::from_reference(values, settings.bins);
        let mut reference = vec![0.0; binning.len()];
        for value in values {
            reference[binning.bin_of(value)] += 1.0;
        }
        let window = Window::new(settings.window, vec![binning.len()]);
        Frozen {
            binning,
            reference,
            reference_samples: values.len(),
            window,
        }
    }
}

/// One feature's figures at an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureDrift {
    pub name: String,
    /// `false` while its reference is still being collected from the first requests.
    pub reference_ready: bool,
    pub reference_samples: usize,
    pub samples: u64,
    pub psi: f64,
    pub kl: f64,
    pub js: f64,
    /// Its alert is firing.
    pub drifting: bool,
    pub bins: Vec<String>,
    /// Shares of the reference and of the window, per bin.
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// An evaluation of all features.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The largest PSI among the features whose reference is ready (0 when none is).
    pub drift_score: f64,
    /// Samples in the window (the fewest among the features).
    pub samples: u64,
    /// Whether the window had enough samples for alarms to move.
    pub enough_samples: bool,
    pub features: Vec<FeatureDrift>,
    /// Alerts that fired or cleared at this evaluation, by feature.
    #[serde(skip)]
    pub transitions: Vec<(String, Transition)>,
}

impl Evaluation {
    pub fn drifting(&self) -> impl Iterator<Item = &FeatureDrift> {
        self.features.iter().filter(|f| f.drifting)
    }
}

pub struct DriftMonitor {
    settings: Settings,
    features: Vec<Feature>,
}

impl DriftMonitor {
    /// Monitors `names`; `reference[i]`, when given and not empty, is feature i's reference sample.
    pub fn new(settings: Settings, names: Vec<String>, reference: Vec<Vec<Value>>) -> DriftMonitor {
        let features = names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let frozen = reference
                    .get(i)
                    .filter(|values| !values.is_empty())
                    .map(|values| Frozen::new(values, &settings));
                Feature {
                    name,
                    collecting: Vec::new(),
                    frozen,
                    alarm: Alarm::default(),
                }
            })
            .collect();
        DriftMonitor { settings, features }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.features.iter().map(|f| f.name.as_str())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counts one request's values (in the order of the names; `None`: not observed this time)
    /// at `at`, time since the monitor started: a binary search per feature.
    pub fn record(&mut self, at: Duration, values: &[Option<Value>]) {
        for (feature, value) in self.features.iter_mut().zip(values) {
            let Some(value) = value else { continue };
            match &mut feature.frozen {
                Some(frozen) => {
                    let bin = frozen.binning.bin_of(value);
                    frozen.window.add(at, &[bin]);
                }
                None => {
                    feature.collecting.push(value.clone());
                    if feature.collecting.len() >= self.settings.baseline {
                        let values = std::mem::take(&mut feature.collecting);
                        feature.frozen = Some(Frozen::new(&values, &self.settings));
                    }
                }
            }
        }
    }

    /// Compares each feature's window with its reference, and moves the alarms when the window
    /// holds enough samples.
    pub fn evaluate(&mut self, at: Duration) -> Evaluation {
        let mut evaluation = Evaluation {
            drift_score: 0.0,
            samples: u64::MAX,
            enough_samples: false,
            features: Vec::with_capacity(self.features.len()),
            transitions: Vec::new(),
        };
        let settings = &self.settings;
        for feature in &mut self.features {
            let Some(frozen) = &mut feature.frozen else {
                evaluation.samples = 0; // the fewest among the features: none yet
                evaluation.features.push(FeatureDrift {
                    name: feature.name.clone(),
                    reference_ready: false,
                    reference_samples: feature.collecting.len(),
                    samples: 0,
                    psi: 0.0,
                    kl: 0.0,
                    js: 0.0,
                    drifting: false,
                    bins: Vec::new(),
                    reference: Vec::new(),
                    current: Vec::new(),
                });
                continue;
            };
            let (samples, counts) = frozen.window.totals(at);
            let live: Vec<f64> = counts[0].iter().map(|&c| c as f64).collect();
            let (psi, kl, js) = if samples == 0 {
                (0.0, 0.0, 0.0)
            } else {
                (
                    divergence::psi(&frozen.reference, &live),
                    divergence::kl(&frozen.reference, &live),
                    divergence::js_distance(&frozen.reference, &live),
                )
            };
            if samples >= settings.min_samples {
                // Over either threshold is over; the alarm sees the larger of the two ratios.
                let figure = (psi / settings.psi).max(kl / settings.kl);
                if let Some(t) = feature.alarm.evaluate(figure, 1.0, settings.consecutive) {
                    evaluation.transitions.push((feature.name.clone(), t));
                }
            } else if feature.alarm.firing {
                // Too few samples to say it still drifts (a model output while the fallback
                // answers, a field callers stopped sending and then traffic stopped): the alert
                // does not hold on no evidence.
                feature.alarm = Alarm::default();
                evaluation
                    .transitions
                    .push((feature.name.clone(), Transition::Cleared));
            }
            evaluation.samples = evaluation.samples.min(samples);
            evaluation.drift_score = evaluation.drift_score.max(psi);
            evaluation.features.push(FeatureDrift {
                name: feature.name.clone(),
                reference_ready: true,
                reference_samples: frozen.reference_samples,
                samples,
                psi,
                kl,
                js,
                drifting: feature.alarm.firing,
                bins: frozen.binning.labels(),
                reference: divergence::shares(&frozen.reference, 0.0),
                current: divergence::shares(&live, 0.0),
            });
        }
        if evaluation.samples == u64::MAX {
            evaluation.samples = 0;
        }
        evaluation.enough_samples = evaluation.samples >= settings.min_samples;
        evaluation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic stream of numbers spread like the reference (a simple LCG, no crate).
    fn stream(seed: u64) -> impl Iterator<Item = f64> {
        let mut state = seed;
        std::iter::repeat_with(move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 * 100.0
        })
    }

    fn settings() -> Settings {
        Settings {
            window: Duration::from_secs(10),
            consecutive: 3,
            min_samples: 200,
            ..Settings::default()
        }
    }

    #[test]
    fn traffic_like_the_reference_never_alerts_and_a_shifted_feature_does() {
        let reference: Vec<Value> = stream(1).take(5000).map(Value::Number).collect();
        let mut monitor = DriftMonitor::new(
            settings(),
            vec!["spend".into(), "tier".into()],
            vec![reference, Vec::new()],
        );
        let mut live = stream(2);
        let mut t = Duration::ZERO;
        let mut fired = Vec::new();
        // 60 s of traffic like the reference, 100 requests a second, evaluated every second.
        for _ in 0..60 {
            for _ in 0..100 {
                let tier = Value::Category("basic".into());
                monitor.record(t, &[Some(Value::Number(live.next().unwrap())), Some(tier)]);
                t += Duration::from_millis(10);
            }
            let e = monitor.evaluate(t);
            assert!(e.transitions.is_empty(), "false alarm at {t:?}: {e:?}");
        }
        // Then the spend doubles.
        for second in 0..30 {
            for _ in 0..100 {
                let tier = Value::Category("basic".into());
                monitor.record(
                    t,
                    &[Some(Value::Number(2.0 * live.next().unwrap())), Some(tier)],
                );
                t += Duration::from_millis(10);
            }
            let e = monitor.evaluate(t);
            for (name, transition) in e.transitions {
                fired.push((second, name, transition));
            }
        }
        assert_eq!(fired.len(), 1, "{fired:?}");
        let (second, name, transition) = &fired[0];
        assert_eq!((name.as_str(), *transition), ("spend", Transition::Fired));
        assert!(*second < 10, "fired after {second} s");
    }

    #[test]
    fn without_a_reference_the_first_requests_are_the_baseline() {
        let mut monitor = DriftMonitor::new(
            Settings {
                baseline: 100,
                ..settings()
            },
            vec!["x".into()],
            Vec::new(),
        );
        for (i, x) in stream(3).take(99).enumerate() {
            monitor.record(Duration::from_millis(i as u64), &[Some(Value::Number(x))]);
        }
        assert!(!monitor.evaluate(Duration::from_secs(1)).features[0].reference_ready);
        monitor.record(Duration::from_millis(100), &[Some(Value::Number(1.0))]);
        let e = monitor.evaluate(Duration::from_secs(1));
        assert!(e.features[0].reference_ready);
        assert_eq!(e.features[0].reference_samples, 100);
        assert_eq!(e.samples, 0, "baseline samples are not live samples");
    }
}
