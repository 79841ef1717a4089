//! Merging the inputs of several requests into one batch along the first dimension, and splitting
//! the outputs back, for dynamic batching.
//!
//! Tensors of one name are stacked along dimension 0. Their other dimensions must be equal, unless
//! padding is allowed: then each is padded at the end of every dimension to the largest, with
//! zeros (`false`, `""`). That is right for models that take a mask with their inputs, such as
//! BERT (`input_ids`, `attention_mask` and `token_type_ids` all pad with 0), and wrong for most
//! others, so it is opt-in.

use crate::{Tensor, TensorData};

/// Why a set of requests cannot be merged (they then run one by one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unbatchable(String);

/// The merged inputs and how many rows each request contributed.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Vec<Tensor>,
    pub rows: Vec<usize>,
}

/// Stacks the requests' inputs (each request a list of named tensors with the same first
/// dimension) into one list of tensors, of at most `max_bytes` in all: padding multiplies sizes
/// (`[1, 100000]` and `[100000, 1]` pad to 10^10 elements), so the size is computed, with checked
/// arithmetic, before anything is allocated.
pub fn merge<R: AsRef<[Tensor]>>(
    requests: &[R],
    pad: bool,
    max_bytes: usize,
) -> Result<Batch, Unbatchable> {
    let first = requests
        .first()
        .ok_or_else(|| Unbatchable("no requests".into()))?
        .as_ref();
    let mut rows = Vec::with_capacity(requests.len());
    for inputs in requests {
        let inputs = inputs.as_ref();
        let count = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        if inputs.iter().any(|t| t.shape.first() != Some(&count)) {
            return Err(Unbatchable(
                "a request's inputs differ in their first dimension".into(),
            ));
        }
        if inputs.len() != first.len() {
            return Err(Unbatchable("requests give different inputs".into()));
        }
        rows.push(count);
    }
    let mut merged = Vec::with_capacity(first.len());
    let mut budget = max_bytes;
    for template in first {
        let parts: Vec<&Tensor> = requests
            .iter()
            .map(|inputs| {
                inputs
                    .as_ref()
                    .iter()
                    .find(|t| t.name == template.name)
                    .ok_or_else(|| {
                        Unbatchable(format!("a request has no input `{}`", template.name))
                    })
            })
            .collect::<Result<_, _>>()?;
        merged.push(stack(&parts, pad, &mut budget)?);
    }
    Ok(Batch {
        inputs: merged,
        rows,
    })
}

/// Cuts every output along dimension 0 into one list of tensors per request.
pub fn split(outputs: &[Tensor], rows: &[usize]) -> Result<Vec<Vec<Tensor>>, Unbatchable> {
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        if output.shape.first() != Some(&total) {
            return Err(Unbatchable(format!(
                "output `{}` has shape {:?}, not {total} rows",
                output.name, output.shape
            )));
        }
        // No rows, or rows of no elements: every part is empty (and the product may overflow).
        let row_len = crate::element_count(&output.shape[1..])
            .filter(|_| total > 0)
            .unwrap_or(0);
        let mut start = 0;
        for (request, &count) in per_request.iter_mut().zip(rows) {
            let mut shape = output.shape.clone();
            shape[0] = count;
            let data = output
                .data
                .slice(start * row_len, (start + count) * row_len);
            request.push(Tensor {
                name: output.name.clone(),
                shape,
                data,
            });
            start += count;
        }
    }
    Ok(per_request)
}

fn stack(parts: &[&Tensor], pad: bool, budget: &mut usize) -> Result<Tensor, Unbatchable> {
    let first = parts[0];
    let mut target = first.shape.clone();
    for part in parts {
        if part.dtype() != first.dtype() || part.shape.len() != first.shape.len() {
            return Err(Unbatchable(format!(
                "input `{}` differs in type or rank between requests",
                first.name
            )));
        }
        for (dim, (&have, want)) in part.shape.iter().zip(target.iter_mut()).enumerate().skip(1) {
            if have != *want && !pad {
                return Err(Unbatchable(format!(
                    "input `{}` differs in dimension {dim} between requests and batch padding is off",
                    first.name
                )));
            }
            *want = (*want).max(have);
        }
    }
    target[0] = parts
        .iter()
        .try_fold(0usize, |rows, p| rows.checked_add(p.shape[0]))
        .ok_or_else(|| Unbatchable("the batch has more rows than memory can hold".into()))?;
    let elements = crate::element_count(&target);
    let bytes = elements.and_then(|n| {
        let strings: usize = parts
            .iter()
            .filter_map(|p| match &p.data {
                TensorData::String(v) => Some(v.iter().map(String::len).sum::<usize>()),
                _ => None,
            })
            .sum();
        n.checked_mul(first.data.element_size())?
            .checked_add(strings)
    });
    match bytes {
        Some(bytes) if bytes <= *budget => *budget -= bytes,
        _ => {
            return Err(Unbatchable(format!(
                "input `{}` merged to shape {target:?} would be over the batch limit of {} bytes",
                first.name, *budget
            )))
        }
    }
    let mut data = first.data.empty_like(elements.unwrap_or(0));
    for part in parts {
        let mut part_target = target.clone();
        part_target[0] = part.shape[0];
        data.extend_padded(&part.data, &part.shape, &part_target);
    }
    Ok(Tensor {
        name: first.name.clone(),
        shape: target,
        data,
    })
}

/// Copies `data` of `shape` into `out` laid out as `target` (each dimension at least as large),
/// filling the rest with `T::default()`.
fn pad_into<T: Clone + Default>(out: &mut Vec<T>, data: &[T], shape: &[usize], target: &[usize]) {
    match shape {
        [] => out.extend_from_slice(data),
        [n] => {
            out.extend_from_slice(&data[..*n]);
            out.resize(out.len() + (target[0] - n), T::default());
        }
        // Rows of no elements: nothing to copy or pad (and `[268435456, 0]` must not loop).
        [_, ..] if target.contains(&0) => {}
        [n, rest @ ..] => {
            let chunk: usize = rest.iter().product();
            for row in 0..*n {
                pad_into(
                    out,
                    &data[row * chunk..(row + 1) * chunk],
                    rest,
                    &target[1..],
                );
            }
            let missing = (target[0] - n) * target[1..].iter().product::<usize>();
            out.resize(out.len() + missing, T::default());
        }
    }
}

macro_rules! each_variant {
    ($value:expr, $v:ident => $body:expr) => {
        match $value {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::F64($v) => TensorData::F64($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::I64($v) => TensorData::I64($body),
            TensorData::U8($v) => TensorData::U8($body),
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::String($v) => TensorData::String($body),
        }
    };
}

impl TensorData {
    /// Bytes one element takes in a merged batch (a string's characters are counted apart).
    fn element_size(&self) -> usize {
        match self {
            TensorData::F32(_) | TensorData::I32(_) => 4,
            TensorData::F64(_) | TensorData::I64(_) => 8,
            TensorData::U8(_) | TensorData::Bool(_) => 1,
            TensorData::String(_) => std::mem::size_of::<String>(),
        }
    }

    fn empty_like(&self, capacity: usize) -> TensorData {
        each_variant!(self, _v => Vec::with_capacity(capacity))
    }

    fn slice(&self, from: usize, to: usize) -> TensorData {
        each_variant!(self, v => v[from..to].to_vec())
    }

    fn extend_padded(&mut self, part: &TensorData, shape: &[usize], target: &[usize]) {
        match (self, part) {
            (TensorData::F32(out), TensorData::F32(v)) => pad_into(out, v, shape, target),
            (TensorData::F64(out), TensorData::F64(v)) => pad_into(out, v, shape, target),
            (TensorData::I32(out), TensorData::I32(v)) => pad_into(out, v, shape, target),
            (TensorData::I64(out), TensorData::I64(v)) => pad_into(out, v, shape, target),
            (TensorData::U8(out), TensorData::U8(v)) => pad_into(out, v, shape, target),
            (TensorData::Bool(out), TensorData::Bool(v)) => pad_into(out, v, shape, target),
            (TensorData::String(out), TensorData::String(v)) => pad_into(out, v, shape, target),
            _ => unreachable!("stack checks that the element types agree"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i64s(name: &str, shape: Vec<usize>, data: Vec<i64>) -> Tensor {
        Tensor::new(name, shape, TensorData::I64(data)).unwrap()
    }

    #[test]
    fn stacks_equal_shapes_and_splits_back() {
        let a = vec![i64s("x", vec![1, 3], vec![1, 2, 3])];
        let b = vec![i64s("x", vec![2, 3], vec![4, 5, 6, 7, 8, 9])];
        let batch = merge(&[a.clone(), b.clone()], false, usize::MAX).unwrap();
        assert_eq!(batch.rows, vec![1, 2]);
        assert_eq!(batch.inputs, vec![i64s("x", vec![3, 3], (1..=9).collect())]);
        let outputs = split(&batch.inputs, &batch.rows).unwrap();
        assert_eq!(outputs, vec![a, b]);
    }

    #[test]
    fn pads_other_dimensions_only_when_allowed() {
        let a = vec![
            i64s("ids", vec![1, 2], vec![1, 2]),
            i64s("mask", vec![1, 2], vec![1, 1]),
        ];
        let b = vec![
            i64s("mask", vec![1, 3], vec![1, 1, 1]),
            i64s("ids", vec![1, 3], vec![3, 4, 5]),
        ];
        assert!(merge(&[a.clone(), b.clone()], false, usize::MAX).is_err());
        let batch = merge(&[a, b], true, usize::MAX).unwrap();
        assert_eq!(
            batch.inputs[0],
            i64s("ids", vec![2, 3], vec![1, 2, 0, 3, 4, 5])
        );
        assert_eq!(
            batch.inputs[1],
            i64s("mask", vec![2, 3], vec![1, 1, 0, 1, 1, 1])
        );
    }

    #[test]
    fn pads_inner_dimensions_of_higher_rank() {
        let a = Tensor::new("h", vec![1, 1, 2], TensorData::F32(vec![1.0, 2.0])).unwrap();
        let b = Tensor::new(
            "h",
            vec![1, 2, 3],
            TensorData::F32(vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
        )
        .unwrap();
        let batch = merge(&[vec![a], vec![b]], true, usize::MAX).unwrap();
        assert_eq!(batch.inputs[0].shape, vec![2, 2, 3]);
        assert_eq!(
            batch.inputs[0].data,
            TensorData::F32(vec![
                1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0
            ])
        );
    }

    #[test]
    fn refuses_what_cannot_be_merged_or_split() {
        let x = vec![i64s("x", vec![1, 1], vec![1])];
        let y = vec![i64s("y", vec![1, 1], vec![1])];
        let f = vec![Tensor::new("x", vec![1, 1], TensorData::F32(vec![1.0])).unwrap()];
        assert!(merge(&[x.clone(), y], true, usize::MAX).is_err());
        assert!(merge(&[x.clone(), f], true, usize::MAX).is_err());
        assert!(split(&[i64s("out", vec![1], vec![0])], &[1, 1]).is_err());
    }

    #[test]
    fn refuses_a_merge_over_the_byte_limit_before_allocating_it() {
        // The reproduced abort: padding [1, 100000] and [100000, 1] asks for 10^10 elements.
        let wide = vec![i64s("ids", vec![1, 100_000], vec![1; 100_000])];
        let tall = vec![i64s("ids", vec![100_000, 1], vec![1; 100_000])];
        let err = merge(&[wide.clone(), tall.clone()], true, 64 << 20).unwrap_err();
        assert!(err.to_string().contains("over the batch limit"), "{err}");
        // Within the limit the same inputs merge (without padding they never could).
        let small = vec![i64s("ids", vec![2, 3], vec![1; 6])];
        assert_eq!(
            merge(&[small.clone(), small.clone()], false, 96)
                .unwrap()
                .rows,
            vec![2, 2]
        );
        assert!(merge(&[small.clone(), small], false, 95).is_err());
    }
}
