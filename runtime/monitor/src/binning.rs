//! Bins frozen from a reference sample.
//!
//! Numbers get quantile bins: edges at the reference's quantiles, so each bin holds about the same
//! share of the reference, with open tails below the first edge and above the last (a live value
//! outside the reference's range still lands somewhere). Strings, booleans and integers with few
//! distinct values are categories, with one more bin for categories the reference never had. Every
//! binning has a last bin for missing and non-finite values: a caller that stops sending a field is
//! drift too.

use serde::Serialize;
use std::collections::HashMap;

/// One observed value of a feature.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Category(String),
    Missing,
}

impl Value {
    /// The value of a JSON field as monitoring sees it: numbers as numbers, strings and booleans
    /// as categories, anything else (null, absent, arrays, objects) as missing.
    pub fn from_json(value: Option<&serde_json::Value>) -> Value {
        match value {
            Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Value::Missing, Value::Number),
            Some(serde_json::Value::String(s)) => Value::Category(s.clone()),
            Some(serde_json::Value::Bool(b)) => Value::Category(b.to_string()),
            _ => Value::Missing,
        }
    }
}

/// How one feature's values are binned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binning {
    /// Bins `(-inf, e0)`, `[e0, e1)`, …, `[e_last, inf)`, then missing.
    Numeric { edges: Vec<f64> },
    /// One bin per category, then one for categories the reference did not have, then missing.
    Categorical { categories: Vec<String> },
}

/// Most categories kept from a reference; rarer ones share the "other" bin.
pub const MAX_CATEGORIES: usize = 64;

impl Binning {
    /// Bins for `reference`, aiming at `bins` bins of numbers. Integers with at most `bins`
    /// distinct values (a tier, a count of tickets) are categories, as are strings and booleans.
    pub fn from_reference(reference: &[Value], bins: usize) -> Binning {
        let bins = bins.max(1);
        let mut numbers: Vec<f64> = Vec::new();
        let mut categories: HashMap<String, usize> = HashMap::new();
        for value in reference {
            match value {
                Value::Number(x) if x.is_finite() => numbers.push(*x),
                Value::Category(c) => *categories.entry(c.clone()).or_default() += 1,
                _ => {}
            }
        }
        if categories.len() > numbers.len() {
            return Binning::categories(categories);
        }
        numbers.sort_by(f64::total_cmp);
        let mut distinct = numbers.clone();
        distinct.dedup();
        if !distinct.is_empty()
            && distinct.len() <= bins
            && distinct.iter().all(|x| x.fract() == 0.0)
        {
            let counts = distinct.iter().map(|x| (category_of(*x), 1)).collect();
            return Binning::categories(counts);
        }
        Binning::Numeric {
            edges: quantile_edges(&numbers, bins),
        }
    }

    fn categories(counts: HashMap<String, usize>) -> Binning {
        let mut by_count: Vec<(String, usize)> = counts.into_iter().collect();
        // Most frequent first, ties by name, so the same reference always gives the same bins.
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        by_count.truncate(MAX_CATEGORIES);
        let mut categories: Vec<String> = by_count.into_iter().map(|(c, _)| c).collect();
        categories.sort();
        Binning::Categorical { categories }
    }

    /// Bins in all, the missing bin included.
    pub fn len(&self) -> usize {
        match self {
            Binning::Numeric { edges } => edges.len() + 2,
            Binning::Categorical { categories } => categories.len() + 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The bin of `value`: a binary search over the edges or the sorted categories.
    pub fn bin_of(&self, value: &Value) -> usize {
        let missing = self.len() - 1;
        match (self, value) {
            (Binning::Numeric { edges }, Value::Number(x)) if x.is_finite() => {
                edges.partition_point(|edge| *edge <= *x)
            }
            (Binning::Categorical { categories }, value) => {
                let key = match value {
                    Value::Category(c) => std::borrow::Cow::Borrowed(c.as_str()),
                    Value::Number(x) if x.is_finite() => std::borrow::Cow::Owned(category_of(*x)),
                    _ => return missing,
                };
                categories
                    .binary_search_by(|c| c.as_str().cmp(&key))
                    .unwrap_or(categories.len())
            }
            _ => missing,
        }
    }

    /// A short label per bin, for reports: `< 12.5`, `[12.5, 40)`, `premium`, `other`, `missing`.
    pub fn labels(&self) -> Vec<String> {
        let mut labels = match self {
            Binning::Numeric { edges } if edges.is_empty() => vec!["all".to_string()],
            Binning::Numeric { edges } => {
                let mut labels = vec![format!("< {}", short(edges[0]))];
                labels.extend(
                    edges
                        .windows(2)
                        .map(|w| format!("[{}, {})", short(w[0]), short(w[1]))),
                );
                labels.push(format!(">= {}", short(edges[edges.len() - 1])));
                labels
            }
            Binning::Categorical { categories } => {
                let mut labels = categories.clone();
                labels.push("other".into());
                labels
            }
        };
        labels.push("missing".into());
        labels
    }
}

/// An integral number's category name: `3`, not `3.0`.
fn category_of(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

fn short(x: f64) -> String {
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Edges at the `i / bins` quantiles of sorted `numbers` (the lower of the two values around
/// each), without repeats: a value that fills several quantiles gets one bin starting at it.
fn quantile_edges(sorted: &[f64], bins: usize) -> Vec<f64> {
    if sorted.is_empty() {
        return Vec::new();
    }
    let mut edges: Vec<f64> = (1..bins)
        .map(|i| sorted[(i * sorted.len()) / bins])
        .collect();
    edges.dedup();
    // The lowest edge equal to the minimum would leave the lower tail empty by construction.
    if edges.first() == sorted.first() {
        edges.remove(0);
    }
    edges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(values: impl IntoIterator<Item = f64>) -> Vec<Value> {
        values.into_iter().map(Value::Number).collect()
    }

    #[test]
    fn numbers_get_quantile_bins_with_open_tails_and_a_missing_bin() {
        let binning = Binning::from_reference(&numbers((0..1000).map(|i| i as f64 / 10.0)), 10);
        let Binning::Numeric { edges } = &binning else {
            panic!("{binning:?}")
        };
        assert_eq!(edges.len(), 9);
        assert_eq!(binning.len(), 11);
        // Each bin holds a tenth of the reference.
        let mut counts = vec![0; binning.len()];
        for i in 0..1000 {
            counts[binning.bin_of(&Value::Number(i as f64 / 10.0))] += 1;
        }
        assert_eq!(&counts[..10], &[100; 10]);
        assert_eq!(binning.bin_of(&Value::Number(-1e9)), 0);
        assert_eq!(binning.bin_of(&Value::Number(1e9)), 9);
        assert_eq!(binning.bin_of(&Value::Number(f64::NAN)), 10);
        assert_eq!(binning.bin_of(&Value::Missing), 10);
        assert_eq!(binning.bin_of(&Value::Category("x".into())), 10);
    }

    #[test]
    fn strings_and_small_integers_are_categories_with_an_other_bin() {
        let tiers: Vec<Value> = ["basic", "premium", "basic", "enterprise"]
            .iter()
            .map(|t| Value::Category(t.to_string()))
            .collect();
        let binning = Binning::from_reference(&tiers, 10);
        assert_eq!(
            binning.labels(),
            ["basic", "enterprise", "premium", "other", "missing"]
        );
        assert_eq!(binning.bin_of(&Value::Category("premium".into())), 2);
        assert_eq!(binning.bin_of(&Value::Category("gold".into())), 3);
        assert_eq!(binning.bin_of(&Value::Missing), 4);

        let tickets = Binning::from_reference(&numbers([0.0, 1.0, 2.0, 1.0, 0.0]), 10);
        assert_eq!(tickets.labels(), ["0", "1", "2", "other", "missing"]);
        assert_eq!(tickets.bin_of(&Value::Number(1.0)), 1);
        assert_eq!(tickets.bin_of(&Value::Number(7.0)), 3);
    }

    #[test]
    fn repeated_values_do_not_make_empty_bins() {
        let mut reference = vec![0.0; 900];
        reference.extend((0..100).map(|i| 1.0 + i as f64 / 3.0));
        let binning = Binning::from_reference(&numbers(reference), 10);
        let Binning::Numeric { edges } = &binning else {
            panic!("{binning:?}")
        };
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
        assert_eq!(binning.bin_of(&Value::Number(0.0)), 0);
    }

    #[test]
    fn json_fields_become_values() {
        let body: serde_json::Value =
            serde_json::json!({"a": 1.5, "b": "x", "c": true, "d": null, "e": [1]});
        assert_eq!(Value::from_json(body.get("a")), Value::Number(1.5));
        assert_eq!(Value::from_json(body.get("b")), Value::Category("x".into()));
        assert_eq!(
            Value::from_json(body.get("c")),
            Value::Category("true".into())
        );
        assert_eq!(Value::from_json(body.get("d")), Value::Missing);
        assert_eq!(Value::from_json(body.get("e")), Value::Missing);
        assert_eq!(Value::from_json(body.get("nope")), Value::Missing);
    }
}
