//! How far a live histogram is from the reference one.
//!
//! Both are counts over the same bins. PSI and KL divergence take the logarithm of a ratio of
//! shares, so a bin that is empty on either side would make them infinite: one request in a bin
//! the reference never saw would be "infinite drift". The shares are therefore estimated with
//! additive smoothing: half a count is added to every bin of each side before dividing (the
//! Jeffreys prior, the Krichevsky–Trofimov estimator). Its effect fades as samples grow, it treats
//! the two sides alike, and unlike clamping shares to an arbitrary epsilon it does not depend on
//! the bin count. The Jensen–Shannon distance is bounded and needs no smoothing; it uses the raw
//! shares, in base 2, so it lies in [0, 1].

/// Pseudo-count added to every bin before PSI and KL (see the module's comment).
pub const PSEUDO_COUNT: f64 = 0.5;

/// Shares of `counts` with `pseudo` added to every bin.
pub fn shares(counts: &[f64], pseudo: f64) -> Vec<f64> {
    let total: f64 = counts.iter().sum::<f64>() + pseudo * counts.len() as f64;
    if total <= 0.0 {
        return vec![0.0; counts.len()];
    }
    counts.iter().map(|c| (c + pseudo) / total).collect()
}

/// Population stability index: Σ (live − reference) · ln(live / reference), over smoothed shares.
/// Symmetric; 0.1 is commonly read as a moderate shift and 0.2 as a significant one.
pub fn psi(reference: &[f64], live: &[f64]) -> f64 {
    let (r, l) = (shares(reference, PSEUDO_COUNT), shares(live, PSEUDO_COUNT));
    r.iter().zip(&l).map(|(r, l)| (l - r) * (l / r).ln()).sum()
}

/// Kullback–Leibler divergence of the live histogram from the reference, KL(live ‖ reference)
/// in nats over smoothed shares: what describing live traffic with the reference costs.
pub fn kl(reference: &[f64], live: &[f64]) -> f64 {
    let (r, l) = (shares(reference, PSEUDO_COUNT), shares(live, PSEUDO_COUNT));
    r.iter()
        .zip(&l)
        .filter(|(_, l)| **l > 0.0)
        .map(|(r, l)| l * (l / r).ln())
        .sum()
}

/// Jensen–Shannon distance (the square root of the divergence), base 2, over raw shares: in
/// [0, 1], 0 for equal histograms and 1 for disjoint ones.
pub fn js_distance(reference: &[f64], live: &[f64]) -> f64 {
    let (r, l) = (shares(reference, 0.0), shares(live, 0.0));
    let half_kl = |p: &[f64], m: &[f64]| -> f64 {
        p.iter()
            .zip(m)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, m)| p * (p / m).log2())
            .sum()
    };
    let m: Vec<f64> = r.iter().zip(&l).map(|(r, l)| (r + l) / 2.0).collect();
    let divergence = (half_kl(&r, &m) + half_kl(&l, &m)) / 2.0;
    divergence.max(0.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_histograms_do_not_drift() {
        let h = [10.0, 20.0, 30.0, 0.0];
        assert!(psi(&h, &h).abs() < 1e-15);
        assert!(kl(&h, &h).abs() < 1e-15);
        assert!(js_distance(&h, &h).abs() < 1e-7);
    }

    #[test]
    fn empty_bins_give_finite_figures_and_disjoint_ones_the_largest_distance() {
        let (a, b) = ([100.0, 0.0], [0.0, 100.0]);
        assert!(psi(&a, &b).is_finite() && psi(&a, &b) > 5.0);
        assert!(kl(&a, &b).is_finite() && kl(&a, &b) > 2.5);
        assert!((js_distance(&a, &b) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn psi_is_symmetric_and_kl_is_not() {
        let (a, b) = ([50.0, 30.0, 20.0], [20.0, 30.0, 50.0]);
        assert!((psi(&a, &b) - psi(&b, &a)).abs() < 1e-12);
        let (c, d) = ([90.0, 10.0], [50.0, 50.0]);
        assert!((kl(&c, &d) - kl(&d, &c)).abs() > 1e-3);
    }
}
