//! Sentence embeddings from a transformer's token outputs.

/// Mean of each row's first `lengths[row]` token vectors (the tokens the attention mask keeps),
/// scaled to unit length. `hidden` is `[lengths.len(), seq, dim]`, row-major.
pub fn mean_pool_normalize(
    hidden: &[f32],
    seq: usize,
    dim: usize,
    lengths: &[usize],
) -> Vec<Vec<f32>> {
    assert_eq!(
        hidden.len(),
        lengths.len() * seq * dim,
        "hidden state shape"
    );
    lengths
        .iter()
        .enumerate()
        .map(|(row, &len)| {
            let len = len.clamp(1, seq);
            let mut sum = vec![0f32; dim];
            for token in hidden[row * seq * dim..].chunks_exact(dim).take(len) {
                sum.iter_mut().zip(token).for_each(|(s, x)| *s += x);
            }
            // Dividing by the count before normalising changes nothing but the rounding; it is
            // kept so the result equals the reference (sentence-transformers) bit for bit more often.
            sum.iter_mut().for_each(|s| *s /= len as f32);
            let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            sum.iter_mut().for_each(|s| *s /= norm);
            sum
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_only_masked_tokens_and_normalises() {
        // 2 rows, seq 3, dim 2; row 0 keeps 2 tokens, row 1 keeps 1.
        let hidden = [
            1.0, 0.0, 3.0, 0.0, 100.0, 100.0, 0.0, 2.0, 50.0, 50.0, 9.0, 9.0,
        ];
        let pooled = mean_pool_normalize(&hidden, 3, 2, &[2, 1]);
        assert_eq!(pooled, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }
}
