//! How many requests an instance merges into one inference when the function has a latency target.
//!
//! A request that arrives while a batch runs waits for that batch and then runs in the next one,
//! so it is answered within about two batch times. The limit therefore keeps one batch's inference
//! within half of `target_latency`: as large as that allows (larger batches keep both cores busier
//! and drain the queue faster), never larger. The time a batch takes is measured, not assumed: each
//! instance keeps a moving average of the inference time per request of its recent batches, which
//! adapts to the texts callers send (a batch of long texts takes longer than one of short ones).

use std::time::Duration;

/// Weight of the newest batch in the moving average: a few batches follow a change in traffic.
const SMOOTHING: f64 = 0.3;

/// One instance's batch limit.
#[derive(Debug, Clone)]
pub struct BatchLimit {
    /// The spec's `max_batch_size`: never exceeded.
    max_size: usize,
    /// Half of `target_latency`; `None` when the spec sets none (the limit is then `max_size`).
    budget: Option<Duration>,
    /// Moving average of inference seconds per request; `None` until a batch has run.
    per_request: Option<f64>,
}

impl BatchLimit {
    pub fn new(max_size: usize, target_latency: Option<Duration>) -> BatchLimit {
        BatchLimit {
            max_size: max_size.max(1),
            budget: target_latency.map(|t| t / 2),
            per_request: None,
        }
    }

    /// The most requests the next batch may hold.
    pub fn size(&self) -> usize {
        let (Some(budget), Some(per_request)) = (self.budget, self.per_request) else {
            return self.max_size;
        };
        if per_request <= 0.0 {
            return self.max_size;
        }
        // Whole requests that fit the budget; one always runs, however slow.
        let fits = (budget.as_secs_f64() / per_request).floor();
        (fits as usize).clamp(1, self.max_size)
    }

    /// Counts a batch of `requests` whose inference took `took`.
    pub fn observe(&mut self, requests: usize, took: Duration) {
        if requests == 0 {
            return;
        }
        // The per-request time of a batch includes its fixed cost, so a small batch overstates
        // what a large one costs per request: the estimate errs toward smaller, safer batches,
        // and it is exact for the size the instance settles at.
        let sample = took.as_secs_f64() / requests as f64;
        self.per_request = Some(match self.per_request {
            None => sample,
            Some(average) => average + SMOOTHING * (sample - average),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose batch of `n` takes `fixed + n * each`.
    fn run(limit: &mut BatchLimit, fixed: Duration, each: Duration, batches: usize) -> usize {
        for _ in 0..batches {
            let n = limit.size();
            limit.observe(n, fixed + each * n as u32);
        }
        limit.size()
    }

    #[test]
    fn without_a_target_the_limit_is_the_specs_maximum() {
        let mut limit = BatchLimit::new(16, None);
        assert_eq!(limit.size(), 16);
        limit.observe(16, Duration::from_secs(5));
        assert_eq!(limit.size(), 16);
    }

    #[test]
    fn the_limit_settles_where_a_batch_fits_half_the_target() {
        // 50 ms target: a batch may take 25 ms. At 1 ms + 2 ms per request that is 12 requests
        // (11 once the estimate has settled from below on the per-request time of 11).
        let mut limit = BatchLimit::new(32, Some(Duration::from_millis(50)));
        let size = run(
            &mut limit,
            Duration::from_millis(1),
            Duration::from_millis(2),
            50,
        );
        assert!((11..=12).contains(&size), "{size}");
        let batch = Duration::from_millis(1) + Duration::from_millis(2) * size as u32;
        assert!(batch <= Duration::from_millis(25), "{batch:?}");
    }

    #[test]
    fn slower_requests_shrink_the_batch_and_faster_ones_grow_it_back() {
        let mut limit = BatchLimit::new(16, Some(Duration::from_millis(50)));
        let fast = run(&mut limit, Duration::ZERO, Duration::from_millis(1), 30);
        assert_eq!(fast, 16, "cheap requests fill the spec's maximum");
        // Long texts: 10 ms each, so only 2 fit in 25 ms.
        let slow = run(&mut limit, Duration::ZERO, Duration::from_millis(10), 30);
        assert_eq!(slow, 2);
        assert_eq!(
            run(&mut limit, Duration::ZERO, Duration::from_millis(1), 30),
            16
        );
    }

    #[test]
    fn one_request_always_runs_however_slow() {
        let mut limit = BatchLimit::new(8, Some(Duration::from_millis(10)));
        limit.observe(1, Duration::from_secs(1));
        assert_eq!(limit.size(), 1);
    }
}
