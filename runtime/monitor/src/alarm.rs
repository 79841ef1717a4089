//! When a drift figure raises an alert, and when it clears: hysteresis, so a figure hovering
//! around its threshold never makes an alert flap.
//!
//! An alert fires after the figure is above its threshold for `consecutive` evaluations in a row,
//! and clears only after it is below `CLEAR_RATIO` × threshold for as many in a row. Evaluations
//! with too few samples change nothing.

use serde::Serialize;

/// A firing alert clears below this share of its threshold.
pub const CLEAR_RATIO: f64 = 0.8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Fired,
    Cleared,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Alarm {
    pub firing: bool,
    /// Evaluations in a row that argue for the other state.
    streak: u32,
}

impl Alarm {
    /// Counts one evaluation of `figure` against `threshold`.
    pub fn evaluate(
        &mut self,
        figure: f64,
        threshold: f64,
        consecutive: u32,
    ) -> Option<Transition> {
        let toward_other = if self.firing {
            figure < threshold * CLEAR_RATIO
        } else {
            figure > threshold
        };
        if !toward_other {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < consecutive.max(1) {
            return None;
        }
        self.streak = 0;
        self.firing = !self.firing;
        Some(if self.firing {
            Transition::Fired
        } else {
            Transition::Cleared
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_after_consecutive_evaluations_and_does_not_flap_around_the_threshold() {
        let mut alarm = Alarm::default();
        assert_eq!(alarm.evaluate(0.3, 0.2, 3), None);
        assert_eq!(alarm.evaluate(0.1, 0.2, 3), None, "the streak restarts");
        assert_eq!(alarm.evaluate(0.3, 0.2, 3), None);
        assert_eq!(alarm.evaluate(0.3, 0.2, 3), None);
        assert_eq!(alarm.evaluate(0.3, 0.2, 3), Some(Transition::Fired));
        // Hovering just under the threshold keeps it firing.
        for _ in 0..10 {
            assert_eq!(alarm.evaluate(0.19, 0.2, 3), None);
        }
        assert!(alarm.firing);
        assert_eq!(alarm.evaluate(0.1, 0.2, 3), None);
        assert_eq!(alarm.evaluate(0.1, 0.2, 3), None);
        assert_eq!(alarm.evaluate(0.1, 0.2, 3), Some(Transition::Cleared));
    }
}
