//! Live bin counts over a sliding window, kept in time slots so old samples leave the window
//! without being stored one by one.

use std::collections::VecDeque;
use std::time::Duration;

/// Slots per window: the window moves in steps of a tenth of its length.
pub const SLOTS_PER_WINDOW: u32 = 10;

/// Counts per feature and bin, for the samples of one time slot.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Index of the slot since the monitor started (its start is `index * slot_width`).
    pub index: u64,
    pub samples: u64,
    pub counts: Vec<Vec<u64>>,
}

/// The slots of the last `window`.
#[derive(Debug, Clone)]
pub struct Window {
    slot_width: Duration,
    slots_kept: usize,
    bins: Vec<usize>,
    slots: VecDeque<Slot>,
}

impl Window {
    /// A window of `length` over features with `bins[i]` bins each.
    pub fn new(length: Duration, bins: Vec<usize>) -> Window {
        let slot_width = (length / SLOTS_PER_WINDOW).max(Duration::from_millis(1));
        Window {
            slot_width,
            slots_kept: SLOTS_PER_WINDOW as usize,
            bins,
            slots: VecDeque::new(),
        }
    }

    pub fn slot_width(&self) -> Duration {
        self.slot_width
    }

    fn slot_index(&self, since_start: Duration) -> u64 {
        (since_start.as_nanos() / self.slot_width.as_nanos()) as u64
    }

    /// Counts one sample, `bins[i]` being feature i's bin, at `since_start`.
    pub fn add(&mut self, since_start: Duration, bins: &[usize]) {
        let index = self.slot_index(since_start);
        self.expire(index);
        if self.slots.back().is_none_or(|s| s.index != index) {
            self.slots.push_back(Slot {
                index,
                samples: 0,
                counts: self.bins.iter().map(|&n| vec![0; n]).collect(),
            });
        }
        let slot = self.slots.back_mut().expect("just pushed");
        slot.samples += 1;
        for (feature, &bin) in bins.iter().enumerate() {
            if let Some(count) = slot.counts.get_mut(feature).and_then(|c| c.get_mut(bin)) {
                *count += 1;
            }
        }
    }

    /// Drops slots that have left the window ending in slot `now`.
    fn expire(&mut self, now: u64) {
        while self
            .slots
            .front()
            .is_some_and(|s| s.index + self.slots_kept as u64 <= now)
        {
            self.slots.pop_front();
        }
    }

    /// Samples and counts per feature and bin over the window ending at `since_start`.
    pub fn totals(&mut self, since_start: Duration) -> (u64, Vec<Vec<u64>>) {
        self.expire(self.slot_index(since_start));
        let mut totals: Vec<Vec<u64>> = self.bins.iter().map(|&n| vec![0; n]).collect();
        let mut samples = 0;
        for slot in &self.slots {
            samples += slot.samples;
            for (total, counts) in totals.iter_mut().zip(&slot.counts) {
                for (t, c) in total.iter_mut().zip(counts) {
                    *t += c;
                }
            }
        }
        (samples, totals)
    }

    /// The slots in the window, oldest first (the history a report shows).
    pub fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_leave_the_window_after_its_length() {
        let mut window = Window::new(Duration::from_secs(10), vec![3, 2]);
        window.add(Duration::from_millis(500), &[0, 1]);
        window.add(Duration::from_millis(1500), &[2, 1]);
        window.add(Duration::from_millis(1600), &[2, 0]);
        assert_eq!(
            window.totals(Duration::from_secs(5)),
            (3, vec![vec![1, 0, 2], vec![1, 2]])
        );
        // At 10.9 s the first slot (0–1 s) has left; at 12 s all have.
        assert_eq!(window.totals(Duration::from_millis(10_900)).0, 2);
        assert_eq!(window.totals(Duration::from_secs(12)).0, 0);
    }
}
