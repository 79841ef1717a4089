//! How right the model was, from labels that arrive after the answers.
//!
//! A classifier's prediction is its score for the positive class (a probability); it predicts
//! positive at 0.5 or above. Precision, recall and F1 are those of the positive class (label 1),
//! and ROC AUC is the Mann–Whitney statistic with tied scores counted as half, which is what
//! scikit-learn's `roc_auc_score` computes. A regressor's prediction is its value.

use serde::Serialize;

/// One prediction joined with its label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Labelled {
    pub prediction: f64,
    pub label: f64,
}

/// Scores at or above this are predicted positive.
pub const DECISION_THRESHOLD: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub samples: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// `None` when the labels hold only one class (AUC is undefined then).
    pub roc_auc: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub samples: usize,
    pub mae: f64,
    pub rmse: f64,
}

/// Classification figures of `pairs` (labels 0 or 1); `None` when there are none.
pub fn classification(pairs: &[Labelled]) -> Option<Classification> {
    if pairs.is_empty() {
        return None;
    }
    let (mut tp, mut fp, mut tn, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    for pair in pairs {
        let predicted = pair.prediction >= DECISION_THRESHOLD;
        let actual = pair.label >= 0.5;
        match (predicted, actual) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Some(Classification {
        samples: pairs.len(),
        accuracy: ratio(tp + tn, pairs.len()),
        precision,
        recall,
        f1,
        roc_auc: roc_auc(pairs),
    })
}

/// ROC AUC: the chance that a random positive scores above a random negative (ties: half).
fn roc_auc(pairs: &[Labelled]) -> Option<f64> {
    let mut sorted: Vec<&Labelled> = pairs.iter().collect();
    sorted.sort_by(|a, b| a.prediction.total_cmp(&b.prediction));
    let positives = pairs.iter().filter(|p| p.label >= 0.5).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks, ties given their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].prediction == sorted[i].prediction {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = sorted[i..=j].iter().filter(|p| p.label >= 0.5).count();
        rank_sum += average_rank * tied_positives as f64;
        i = j + 1;
    }
    let (p, n) = (positives as f64, negatives as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// Regression figures of `pairs`; `None` when there are none.
pub fn regression(pairs: &[Labelled]) -> Option<Regression> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let mae = pairs
        .iter()
        .map(|p| (p.prediction - p.label).abs())
        .sum::<f64>()
        / n;
    let mse = pairs
        .iter()
        .map(|p| (p.prediction - p.label).powi(2))
        .sum::<f64>()
        / n;
    Some(Regression {
        samples: pairs.len(),
        mae,
        rmse: mse.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(scores: &[f64], labels: &[f64]) -> Vec<Labelled> {
        scores
            .iter()
            .zip(labels)
            .map(|(&prediction, &label)| Labelled { prediction, label })
            .collect()
    }

    #[test]
    fn classification_figures_on_a_small_case() {
        // Predicted positive: 0.9, 0.8, 0.6 (labels 1, 0, 1); negative: 0.4, 0.2 (labels 1, 0).
        let c = classification(&pairs(
            &[0.9, 0.8, 0.6, 0.4, 0.2],
            &[1.0, 0.0, 1.0, 1.0, 0.0],
        ))
        .unwrap();
        assert_eq!(c.accuracy, 0.6);
        assert!((c.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall - 2.0 / 3.0).abs() < 1e-12);
        // Positives 0.9, 0.6, 0.4 against negatives 0.8, 0.2: 4 of 6 pairs ordered right.
        assert!((c.roc_auc.unwrap() - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn tied_scores_count_half_and_one_class_has_no_auc() {
        let c = classification(&pairs(&[0.5, 0.5], &[1.0, 0.0])).unwrap();
        assert_eq!(c.roc_auc, Some(0.5));
        assert_eq!(
            classification(&pairs(&[0.1, 0.9], &[1.0, 1.0]))
                .unwrap()
                .roc_auc,
            None
        );
        assert_eq!(classification(&[]), None);
    }

    #[test]
    fn regression_figures() {
        let r = regression(&pairs(&[1.0, 2.0, 4.0], &[1.0, 3.0, 2.0])).unwrap();
        assert!((r.mae - 1.0).abs() < 1e-12);
        assert!((r.rmse - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
