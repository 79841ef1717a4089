//! `batch::merge` of several requests' tensors, with and without padding, and `batch::split` of
//! the result.
//!
//! Properties: neither panics nor allocates absurdly (dimensions may be huge when another one is
//! 0, so the tensor is empty but its padded merge would not be); a merge holds at most its byte
//! limit, and that limit is exact (B bytes do not merge under B - 1); when a merge succeeds, its rows
//! are the requests' first dimensions, each merged tensor's shape holds its elements, and split
//! gives each request back its own tensors (exactly without padding; padded with zeros at the end
//! of each dimension with padding).
#![no_main]

use aifn_fuzz::{check_padded, elements};
use aifn_tensor::batch::{merge, split};
use aifn_tensor::{DType, Tensor, TensorData};
use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Most dimensions are small; some are anything, so that empty tensors with huge other
/// dimensions (and shapes whose product overflows) come up.
#[derive(Debug, Clone, Copy)]
struct Dim(usize);

impl<'a> Arbitrary<'a> for Dim {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let b = u8::arbitrary(u)?;
        Ok(Dim(match b {
            0..=239 => usize::from(b % 5),
            240..=251 => u32::arbitrary(u)? as usize,
            _ => usize::arbitrary(u)?,
        }))
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// One of a few names, so that requests often agree.
    name: u8,
    /// Mostly the case's type; sometimes another (`DType::ALL[dtype % 7]`).
    dtype: u8,
    shape: Vec<Dim>,
}

#[derive(Arbitrary, Debug)]
struct Case {
    pad: bool,
    /// Index into `DType::ALL` of the type most inputs have.
    dtype: u8,
    /// A smaller merge limit, in units of 64 bytes.
    limit: u16,
    requests: Vec<Vec<Input>>,
}

/// Largest tensor built for a case, in elements.
const MAX_ELEMENTS: usize = 4096;

/// The merge limit, in bytes (the host's is larger; this keeps runs fast and under the
/// allocation limit).
const MAX_BYTES: usize = 1 << 20;

/// Bytes of a merged batch as the limit counts them: each element (a `String` itself for
/// strings) plus the strings' characters.
fn merged_bytes(tensors: &[Tensor]) -> usize {
    tensors
        .iter()
        .map(|t| match &t.data {
            TensorData::F32(v) => v.len() * 4,
            TensorData::I32(v) => v.len() * 4,
            TensorData::F64(v) => v.len() * 8,
            TensorData::I64(v) => v.len() * 8,
            TensorData::U8(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::String(v) => {
                v.len() * std::mem::size_of::<String>() + v.iter().map(String::len).sum::<usize>()
            }
        })
        .sum()
}

/// The product of an empty tensor's non-zero dimensions: how many empty rows a merge may step
/// through.
fn empty_dims(shape: &[usize]) -> usize {
    shape
        .iter()
        .filter(|&&d| d > 0)
        .fold(1usize, |n, &d| n.saturating_mul(d))
}

/// `AIFN_FUZZ_MAX_EMPTY_DIMS`: skip empty tensors whose other dimensions multiply to more, to fuzz
/// past a known slow merge of many empty rows (unset: no limit).
fn max_empty_dims() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("AIFN_FUZZ_MAX_EMPTY_DIMS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(usize::MAX)
    })
}

fn make(request: usize, input: &Input, base: u8) -> Option<Tensor> {
    let name = ["input_ids", "attention_mask", "x"][usize::from(input.name % 3)];
    let pick = if input.dtype < 224 { base } else { input.dtype };
    let dtype = DType::ALL[usize::from(pick) % DType::ALL.len()];
    let shape: Vec<usize> = input.shape.iter().take(5).map(|d| d.0).collect();
    let n = elements(&shape).filter(|&n| n <= MAX_ELEMENTS)?;
    if n == 0 && empty_dims(&shape) > max_empty_dims() {
        return None;
    }
    // Distinct, non-zero values, so a misplaced element or lost row shows.
    let value = |k: usize| request * 10_007 + k + 1;
    let data = match dtype {
        DType::F32 => TensorData::F32((0..n).map(|k| value(k) as f32).collect()),
        DType::F64 => TensorData::F64((0..n).map(|k| value(k) as f64).collect()),
        DType::I32 => TensorData::I32((0..n).map(|k| value(k) as i32).collect()),
        DType::I64 => TensorData::I64((0..n).map(|k| value(k) as i64).collect()),
        DType::U8 => TensorData::U8((0..n).map(|k| (value(k) % 255 + 1) as u8).collect()),
        DType::Bool => TensorData::Bool((0..n).map(|_| true).collect()),
        DType::String => TensorData::String((0..n).map(|k| format!("s{}", value(k))).collect()),
    };
    Some(Tensor::new(name, shape, data).expect("shape and data agree"))
}

fn check(requests: &[Vec<Tensor>], pad: bool, limit: usize) {
    let Ok(batch) = merge(requests, pad, limit) else {
        return;
    };
    let bytes = merged_bytes(&batch.inputs);
    assert!(
        bytes <= limit,
        "merged {bytes} bytes over the limit of {limit}"
    );
    if bytes > 0 {
        assert!(
            merge(requests, pad, bytes - 1).is_err(),
            "merged {bytes} bytes under a limit of {}",
            bytes - 1
        );
    }
    assert_eq!(batch.rows.len(), requests.len());
    for (request, &rows) in requests.iter().zip(&batch.rows) {
        for t in request {
            assert_eq!(t.shape.first(), Some(&rows), "rows of {t:?}");
        }
    }
    let total: usize = batch.rows.iter().sum();
    for t in &batch.inputs {
        assert_eq!(t.shape.first(), Some(&total), "merged rows of `{}`", t.name);
        assert_eq!(
            elements(&t.shape),
            Some(t.data.len()),
            "merged `{}` of shape {:?} has {} elements",
            t.name,
            t.shape,
            t.data.len()
        );
    }
    let parts = split(&batch.inputs, &batch.rows).expect("split of a merge");
    assert_eq!(parts.len(), requests.len());
    for (request, part) in requests.iter().zip(&parts) {
        assert_eq!(part.len(), batch.inputs.len());
        for got in part {
            // merge takes each request's first input of a name.
            let want = request
                .iter()
                .find(|t| t.name == got.name)
                .expect("split gives only names the request has");
            if pad {
                if let Err(e) = check_padded(want, got) {
                    panic!("split(merge) with padding: {e}\nwant {want:?}\ngot  {got:?}");
                }
            } else {
                assert_eq!(got, want, "split(merge) without padding");
            }
        }
    }
}

fuzz_target!(
    init: {
        aifn_fuzz::init();
    },
    |case: Case| {
        let requests: Vec<Vec<Tensor>> = case
            .requests
            .iter()
            .take(8)
            .enumerate()
            .map(|(r, inputs)| inputs.iter().take(4).filter_map(|i| make(r, i, case.dtype)).collect())
            .collect();
        let limit = usize::from(case.limit).saturating_mul(64).min(MAX_BYTES);
        check(&requests, case.pad, MAX_BYTES);
        check(&requests, !case.pad, MAX_BYTES);
        check(&requests, case.pad, limit);
    }
);
