//! What a version's answers were over the last minutes (requests, 5xx errors, latency), for
//! judging rollouts; and how a shadow's answers differ from the stable version's.

use crate::records::Figures;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest window kept (`rollout.window` is at most 10 minutes).
const KEEP: Duration = Duration::from_secs(600);
/// Latencies kept per second; past it a second's p95 comes from its first answers.
const SAMPLES_PER_SECOND: usize = 512;

/// Answers per second over the last [`KEEP`].
pub struct Outcomes {
    started: Instant,
    seconds: Mutex<VecDeque<Second>>,
}

struct Second {
    at: u64,
    requests: u64,
    errors: u64,
    latencies_ms: Vec<f32>,
}

impl Default for Outcomes {
    fn default() -> Self {
        Outcomes {
            started: Instant::now(),
            seconds: Mutex::new(VecDeque::new()),
        }
    }
}

impl Outcomes {
    /// Counts one answer; a 5xx status is the function's error.
    pub fn record(&self, status: u16, latency: Duration) {
        let now = self.started.elapsed().as_secs();
        let mut seconds = self.seconds.lock().expect("outcomes lock");
        if seconds.back().is_none_or(|s| s.at != now) {
            seconds.push_back(Second {
                at: now,
                requests: 0,
                errors: 0,
                latencies_ms: Vec::new(),
            });
            while seconds
                .front()
                .is_some_and(|s| now.saturating_sub(s.at) > KEEP.as_secs())
            {
                seconds.pop_front();
            }
        }
        let second = seconds.back_mut().expect("just pushed");
        second.requests += 1;
        if status >= 500 {
            second.errors += 1;
        }
        if second.latencies_ms.len() < SAMPLES_PER_SECOND {
            second.latencies_ms.push(latency.as_secs_f32() * 1e3);
        }
    }

    /// The answers of the last `window`.
    pub fn figures(&self, window: Duration) -> Figures {
        let now = self.started.elapsed().as_secs();
        let seconds = self.seconds.lock().expect("outcomes lock");
        let mut figures = Figures::default();
        let mut latencies = Vec::new();
        for second in seconds
            .iter()
            .rev()
            .take_while(|s| now.saturating_sub(s.at) < window.as_secs().max(1))
        {
            figures.requests += second.requests;
            figures.errors += second.errors;
            latencies.extend_from_slice(&second.latencies_ms);
        }
        if !latencies.is_empty() {
            let rank = ((latencies.len() as f64 * 0.95).ceil() as usize).clamp(1, latencies.len());
            let (_, p95, _) = latencies.select_nth_unstable_by(rank - 1, |a, b| a.total_cmp(b));
            figures.p95_ms = Some(f64::from(*p95));
        }
        figures
    }
}

/// How a shadow's answers compare with the stable version's, over the rollout.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Disagreement {
    /// Requests both versions answered (any status).
    pub compared: u64,
    /// ... of which the status, the JSON structure or a label (string, boolean) differed.
    pub differing: u64,
    /// Mean and largest Euclidean distance between the answers' numbers (same structure only).
    pub mean_distance: f64,
    pub max_distance: f64,
    /// Copies the shadow could not take (its queue was full); they are not compared.
    pub shed: u64,
    #[serde(skip)]
    distance_sum: f64,
    #[serde(skip)]
    distances: u64,
}

impl Disagreement {
    /// Compares one pair of answers.
    pub fn add(&mut self, stable: (u16, &[u8]), shadow: (u16, &[u8])) {
        self.compared += 1;
        let parsed = (
            serde_json::from_slice::<Value>(stable.1),
            serde_json::from_slice::<Value>(shadow.1),
        );
        let (Ok(a), Ok(b)) = parsed else {
            if stable != shadow {
                self.differing += 1;
            }
            return;
        };
        let mut squares = 0.0;
        let same = stable.0 == shadow.0 && compare(&a, &b, &mut squares);
        if !same {
            self.differing += 1;
            return;
        }
        let distance = f64::sqrt(squares);
        self.distances += 1;
        self.distance_sum += distance;
        self.mean_distance = self.distance_sum / self.distances as f64;
        self.max_distance = self.max_distance.max(distance);
    }

    /// The share of compared answers that differed.
    pub fn differing_share(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            self.differing as f64 / self.compared as f64
        }
    }
}

/// Walks two JSON answers together: false when their structure or a label differs; adds the
/// squared differences of their numbers to `squares`.
fn compare(a: &Value, b: &Value, squares: &mut f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let d = x.as_f64().unwrap_or(0.0) - y.as_f64().unwrap_or(0.0);
            *squares += d * d;
            true
        }
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| compare(x, y, squares))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| compare(x, y, squares)))
        }
        (x, y) => x == y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_count_errors_and_take_the_p95() {
        let outcomes = Outcomes::default();
        for i in 1..=100 {
            let status = if i % 10 == 0 { 500 } else { 200 };
            outcomes.record(status, Duration::from_millis(i));
        }
        outcomes.record(404, Duration::from_millis(1));
        let figures = outcomes.figures(Duration::from_secs(60));
        assert_eq!((figures.requests, figures.errors), (101, 10));
        assert_eq!(figures.p95_ms, Some(95.0));
    }

    #[test]
    fn disagreement_tells_labels_from_distances() {
        let mut d = Disagreement::default();
        d.add(
            (200, br#"{"label":"churn","p":[0.25,0.75]}"#),
            (200, br#"{"label":"churn","p":[0.25,0.5]}"#),
        );
        d.add(
            (200, br#"{"label":"churn","p":[0.25,0.75]}"#),
            (200, br#"{"label":"stay","p":[0.75,0.25]}"#),
        );
        d.add((200, b"{}"), (500, br#"{"error":{}}"#));
        assert_eq!((d.compared, d.differing), (3, 2));
        assert!((d.max_distance - 0.25).abs() < 1e-12);
        assert!((d.differing_share() - 2.0 / 3.0).abs() < 1e-12);
    }
}
