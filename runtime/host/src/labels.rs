//! Answers kept until their ground truth arrives, and what the labels say of the model.
//!
//! Each monitored answer with an `X-Request-Id` is kept with its prediction (bounded by count and
//! age, `spec.monitoring.labels`). A label sent later through the feedback route is joined with it;
//! the labelled pairs of the window give accuracy and the rest ([`aifn_monitor::quality`]).
//!
//! Durability: new predictions are written to the embedded database in one transaction a second,
//! off the request path, so a `kill -9` loses at most the last second or so of them; a label is
//! written before the feedback route answers, so an acknowledged label is never lost.

use crate::records::{now_ms, PredictionRecord};
use crate::store::Store;
use aifn_monitor::quality::{self, Labelled};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Unlabelled answers offered to a labelling process at most, per call.
pub const TO_LABEL: usize = 20;
/// Recent answers the to-label queue chooses from.
const CANDIDATES: usize = 1000;

/// Why a label was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("no answer with request id `{0}` is kept for labels (unknown, or older than the ttl and forgotten)")]
    Unknown(String),
    #[error("the answer with request id `{0}` is older than the labels' ttl ({1})")]
    Expired(String, String),
    #[error("the answer with request id `{0}` already has a label")]
    AlreadyLabelled(String),
    #[error("a label must be a number or a boolean")]
    NotALabel,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Where predictions persist: the host's store, under the function's name.
pub struct Persist {
    pub store: Arc<Store>,
    pub function: String,
    pub version: u64,
}

/// Predictions to write in one transaction.
pub struct Flush {
    store: Arc<Store>,
    function: String,
    records: Vec<(String, PredictionRecord)>,
    forgotten: Vec<String>,
}

impl Flush {
    pub fn write(self) {
        let Flush {
            store,
            function,
            records,
            forgotten,
        } = self;
        if let Err(e) = store.write(|txn| txn.save_predictions(&function, &records, &forgotten)) {
            tracing::error!(function = %function, "saving predictions: {e}");
        }
    }
}

/// A recent answer that a label would help most with.
#[derive(Debug, Clone, Serialize)]
pub struct ToLabel {
    pub request_id: String,
    pub prediction: f64,
    /// `uncertain` (a classifier's score nearest 0.5) or `drifted` (sent while drift held).
    pub reason: &'static str,
    pub at_ms: u64,
    pub request: Option<serde_json::Value>,
}

struct Candidate {
    request_id: String,
    prediction: f64,
    drifted: bool,
    at_ms: u64,
    /// The body as it came; parsed only for a labelling process that asks.
    request: Option<bytes::Bytes>,
}

pub struct Predictions {
    ttl: Duration,
    max: usize,
    kept: HashMap<String, PredictionRecord>,
    /// Request ids in the order they were kept, for eviction by count and age.
    order: VecDeque<(u64, String)>,
    /// Kept since the last flush.
    unsaved: Vec<String>,
    /// Evicted since the last flush.
    forgotten: Vec<String>,
    /// Taken by a flush that is being written.
    in_flight: usize,
    candidates: VecDeque<Candidate>,
    persist: Option<Persist>,
}

impl Predictions {
    /// Brings back what the store kept for this version (dropping what has expired since).
    pub fn new(ttl: Duration, max: usize, persist: Option<Persist>) -> Predictions {
        let mut predictions = Predictions {
            ttl,
            max,
            kept: HashMap::new(),
            order: VecDeque::new(),
            unsaved: Vec::new(),
            forgotten: Vec::new(),
            in_flight: 0,
            candidates: VecDeque::new(),
            persist,
        };
        if let Some(persist) = &predictions.persist {
            match persist
                .store
                .predictions(&persist.function, persist.version)
            {
                Ok(mut stored) => {
                    stored.sort_by_key(|(_, r)| r.at_ms);
                    for (id, record) in stored {
                        predictions.order.push_back((record.at_ms, id.clone()));
                        predictions.kept.insert(id, record);
                    }
                }
                Err(e) => {
                    tracing::error!(function = %persist.function, "reading kept predictions: {e}")
                }
            }
        }
        predictions.evict(now_ms());
        predictions
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Kept but not yet written to the database (what a `kill -9` now would lose).
    pub fn unsaved(&self) -> usize {
        self.unsaved.len() + self.in_flight
    }

    /// Keeps an answer's prediction for its label.
    pub fn keep(
        &mut self,
        request_id: String,
        prediction: f64,
        drifted: bool,
        request: Option<bytes::Bytes>,
    ) {
        if self.max == 0 {
            return;
        }
        let at_ms = now_ms();
        let version = self.persist.as_ref().map_or(0, |p| p.version);
        let record = PredictionRecord {
            version,
            prediction,
            at_ms,
            label: None,
            labelled_at_ms: None,
        };
        if self.kept.insert(request_id.clone(), record).is_none() {
            self.order.push_back((at_ms, request_id.clone()));
        }
        self.unsaved.push(request_id.clone());
        if self.candidates.len() >= CANDIDATES {
            self.candidates.pop_front();
        }
        self.candidates.push_back(Candidate {
            request_id,
            prediction,
            drifted,
            at_ms,
            request,
        });
        self.evict(at_ms);
    }

    /// Forgets the oldest answers past the count, and those past the ttl.
    fn evict(&mut self, now_ms: u64) {
        let ttl_ms = self.ttl.as_millis() as u64;
        while let Some((at, _)) = self.order.front() {
            if self.order.len() <= self.max && now_ms.saturating_sub(*at) <= ttl_ms {
                break;
            }
            let (_, id) = self.order.pop_front().expect("just seen");
            if self.kept.remove(&id).is_some() {
                self.forgotten.push(id);
            }
        }
    }

    /// What was kept and forgotten since the last flush, to write (outside the monitor's lock)
    /// with [`Flush::write`]; until [`Predictions::flushed`], it still counts as unsaved.
    pub fn take_flush(&mut self) -> Option<Flush> {
        self.evict(now_ms());
        let Some(persist) = &self.persist else {
            self.unsaved.clear();
            self.forgotten.clear();
            return None;
        };
        if self.unsaved.is_empty() && self.forgotten.is_empty() {
            return None;
        }
        let records: Vec<(String, PredictionRecord)> = self
            .unsaved
            .drain(..)
            .filter_map(|id| self.kept.get(&id).map(|r| (id, r.clone())))
            .collect();
        self.in_flight = records.len();
        Some(Flush {
            store: persist.store.clone(),
            function: persist.function.clone(),
            records,
            forgotten: std::mem::take(&mut self.forgotten),
        })
    }

    /// The last [`Flush`] has been written.
    pub fn flushed(&mut self) {
        self.in_flight = 0;
    }

    /// Joins a label with the answer `request_id` got, and writes it before returning.
    pub fn label(
        &mut self,
        request_id: &str,
        label: &serde_json::Value,
    ) -> Result<PredictionRecord, LabelError> {
        let label = match label {
            serde_json::Value::Number(n) => n.as_f64().ok_or(LabelError::NotALabel)?,
            serde_json::Value::Bool(b) => f64::from(u8::from(*b)),
            _ => return Err(LabelError::NotALabel),
        };
        let now = now_ms();
        let ttl = self.ttl;
        let record = self
            .kept
            .get_mut(request_id)
            .ok_or_else(|| LabelError::Unknown(request_id.to_string()))?;
        if now.saturating_sub(record.at_ms) > ttl.as_millis() as u64 {
            return Err(LabelError::Expired(
                request_id.to_string(),
                humantime::format_duration(ttl).to_string(),
            ));
        }
        if record.label.is_some() {
            return Err(LabelError::AlreadyLabelled(request_id.to_string()));
        }
        let mut labelled = record.clone();
        labelled.label = Some(label);
        labelled.labelled_at_ms = Some(now);
        if let Some(persist) = &self.persist {
            let row = [(request_id.to_string(), labelled.clone())];
            persist
                .store
                .write(|txn| txn.save_predictions(&persist.function, &row, &[]))?;
        }
        *record = labelled.clone();
        Ok(labelled)
    }

    /// The pairs labelled within `window`.
    fn labelled(&self, window: Duration) -> Vec<Labelled> {
        let since = now_ms().saturating_sub(window.as_millis() as u64);
        self.kept
            .values()
            .filter_map(|r| {
                let label = r.label?;
                (r.labelled_at_ms? >= since).then_some(Labelled {
                    prediction: r.prediction,
                    label,
                })
            })
            .collect()
    }

    /// Accuracy and the rest over the labels of `window`: a classifier's figures when every label
    /// is 0 or 1, a regressor's otherwise; `null` without labels.
    pub fn quality(&self, window: Duration) -> serde_json::Value {
        let pairs = self.labelled(window);
        if pairs.is_empty() {
            return serde_json::Value::Null;
        }
        if pairs.iter().all(|p| p.label == 0.0 || p.label == 1.0) {
            serde_json::json!({ "kind": "classification", "figures": quality::classification(&pairs) })
        } else {
            serde_json::json!({ "kind": "regression", "figures": quality::regression(&pairs) })
        }
    }

    /// The accuracy over `window`'s labels, with how many there were.
    pub fn accuracy(&self, window: Duration) -> Option<(f64, usize)> {
        let pairs = self.labelled(window);
        quality::classification(&pairs)
            .filter(|_| pairs.iter().all(|p| p.label == 0.0 || p.label == 1.0))
            .map(|c| (c.accuracy, c.samples))
    }

    /// Recent unlabelled answers a label would help most with: those sent while drift held, then
    /// those the model was least sure of (scores nearest 0.5).
    pub fn to_label(&self) -> Vec<ToLabel> {
        let mut open: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| {
                self.kept
                    .get(&c.request_id)
                    .is_some_and(|r| r.label.is_none())
            })
            .collect();
        open.sort_by(|a, b| {
            b.drifted.cmp(&a.drifted).then(
                (a.prediction - 0.5)
                    .abs()
                    .total_cmp(&(b.prediction - 0.5).abs()),
            )
        });
        open.into_iter()
            .take(TO_LABEL)
            .map(|c| ToLabel {
                request_id: c.request_id.clone(),
                prediction: c.prediction,
                reason: if c.drifted { "drifted" } else { "uncertain" },
                at_ms: c.at_ms,
                request: c
                    .request
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_bounded_by_count_and_labels_join_once() {
        let mut predictions = Predictions::new(Duration::from_secs(60), 3, None);
        for i in 0..5 {
            predictions.keep(format!("r{i}"), 0.1 * i as f64, false, None);
        }
        assert_eq!(predictions.len(), 3);
        assert!(matches!(
            predictions.label("r0", &serde_json::json!(1)),
            Err(LabelError::Unknown(_))
        ));
        let labelled = predictions.label("r4", &serde_json::json!(true)).unwrap();
        assert_eq!(labelled.label, Some(1.0));
        assert!(matches!(
            predictions.label("r4", &serde_json::json!(0)),
            Err(LabelError::AlreadyLabelled(_))
        ));
        assert!(matches!(
            predictions.label("r3", &serde_json::json!("yes")),
            Err(LabelError::NotALabel)
        ));
        // The most uncertain unlabelled answer first: r3 (0.3) is nearer 0.5 than r2 (0.2).
        let asked: Vec<String> = predictions
            .to_label()
            .into_iter()
            .map(|t| t.request_id)
            .collect();
        assert_eq!(asked, ["r3", "r2"]);
    }
}
