//! Properties of the v2 codec and of dynamic batching, over generated tensors and requests:
//! decoding never panics and gives tensors whose shape holds their data; v2 encode -> decode
//! round-trips (flat or nested data); `Tensor::new` takes exactly the data its shape holds;
//! `merge` then `split` gives each request its own rows back (padded with zeros when padding is
//! on); a merge stays within its byte limit, and a limit on elements in `decode_v2_request_with`
//! holds. The fuzz targets `fuzz/fuzz_targets/{v2_decode,batch_merge}.rs` check the same on
//! arbitrary bytes.

use aifn_tensor::batch::{merge, split};
use aifn_tensor::{
    decode_v2_request, decode_v2_request_with, element_count, encode_v2_response, DType, Tensor,
    TensorData, TensorError,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn dtype() -> impl Strategy<Value = DType> {
    prop::sample::select(DType::ALL.to_vec())
}

/// `n` elements of `dtype`; floats are finite (JSON has no infinity or NaN).
fn data(dtype: DType, n: usize) -> BoxedStrategy<TensorData> {
    use prop::collection::vec;
    use prop::num::{f32, f64};
    match dtype {
        DType::F32 => vec(
            prop_oneof![
                8 => f32::NORMAL | f32::SUBNORMAL | f32::ZERO | f32::NEGATIVE | f32::POSITIVE,
                1 => prop::sample::select(vec![f32::MAX, f32::MIN, f32::MIN_POSITIVE]),
            ],
            n,
        )
        .prop_map(TensorData::F32)
        .boxed(),
        DType::F64 => vec(
            f64::NORMAL | f64::SUBNORMAL | f64::ZERO | f64::NEGATIVE | f64::POSITIVE,
            n,
        )
        .prop_map(TensorData::F64)
        .boxed(),
        DType::I32 => vec(any::<i32>(), n).prop_map(TensorData::I32).boxed(),
        DType::I64 => vec(any::<i64>(), n).prop_map(TensorData::I64).boxed(),
        DType::U8 => vec(any::<u8>(), n).prop_map(TensorData::U8).boxed(),
        DType::Bool => vec(any::<bool>(), n).prop_map(TensorData::Bool).boxed(),
        DType::String => vec("\\PC{0,6}|[\\x00-\\x1f\"\\\\]{0,3}", n)
            .prop_map(TensorData::String)
            .boxed(),
    }
}

fn tensor_of(name: String, dtype: DType, shape: Vec<usize>) -> BoxedStrategy<Tensor> {
    let n = element_count(&shape).unwrap();
    data(dtype, n)
        .prop_map(move |d| Tensor::new(name.clone(), shape.clone(), d).unwrap())
        .boxed()
}

/// A tensor of rank 0 to 3 with small dimensions (0 included).
fn tensor() -> impl Strategy<Value = Tensor> {
    ("\\PC{0,8}", dtype(), prop::collection::vec(0..4usize, 0..4))
        .prop_flat_map(|(name, dtype, shape)| tensor_of(name, dtype, shape))
}

fn request_body(tensors: &[Tensor], nested: bool) -> Vec<u8> {
    let inputs: Vec<Value> = tensors
        .iter()
        .map(|t| {
            let mut v = t.to_v2_json();
            if nested {
                v["data"] = nest(v["data"].as_array().unwrap(), &t.shape);
            }
            v
        })
        .collect();
    serde_json::to_vec(&json!({ "inputs": inputs })).unwrap()
}

/// Flat row-major data as nested lists of `shape` (v2 takes both).
fn nest(flat: &[Value], shape: &[usize]) -> Value {
    match shape {
        [] | [_] => Value::Array(flat.to_vec()),
        [n, rest @ ..] => {
            let chunk = element_count(rest).unwrap();
            Value::Array(
                (0..*n)
                    .map(|i| nest(&flat[i * chunk..(i + 1) * chunk], rest))
                    .collect(),
            )
        }
    }
}

/// A JSON value shaped like a v2 request, often wrong: any names, shapes (huge, negative,
/// fractional), datatypes and nested data.
fn v2_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,4}".prop_map(Value::from),
        Just(Value::Null),
    ];
    let data = leaf.prop_recursive(3, 24, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Value::Array)
    });
    let dim = prop_oneof![
        4 => (0..5u64).prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => (1u64 << 31..1u64 << 33).prop_map(Value::from),
        1 => Just(json!(-1)),
        1 => Just(json!(1.5)),
        1 => Just(json!("2")),
    ];
    let datatype = prop_oneof![
        6 => prop::sample::select(DType::ALL.to_vec()).prop_map(|d| Value::from(d.v2_name())),
        1 => "[A-Z0-9]{0,6}".prop_map(Value::from),
        1 => Just(Value::Null),
    ];
    let name = prop_oneof![8 => "[a-z]{1,4}".prop_map(Value::from), 1 => Just(json!(7))];
    let input = (
        name,
        prop::collection::vec(dim, 0..4),
        datatype,
        data,
        any::<u8>(),
    )
        .prop_map(|(name, shape, datatype, data, drop)| {
            let mut v = json!({"name": name, "shape": shape, "datatype": datatype, "data": data});
            // Sometimes a field is missing.
            if drop < 40 {
                let key = ["name", "shape", "datatype", "data"][usize::from(drop % 4)];
                v.as_object_mut().unwrap().remove(key);
            }
            v
        });
    prop_oneof![
        8 => prop::collection::vec(input, 0..4).prop_map(|inputs| json!({ "inputs": inputs })),
        1 => Just(json!({"inputs": {}})),
        1 => Just(json!([])),
    ]
}

/// Names and elements of every decoded tensor agree with its shape; an input error names an
/// input of the request.
fn check_decoded(
    body: &Value,
    result: &Result<Vec<Tensor>, TensorError>,
) -> Result<(), TestCaseError> {
    match result {
        Ok(tensors) => {
            for t in tensors {
                prop_assert_eq!(element_count(&t.shape), Some(t.data.len()), "{:?}", t);
            }
        }
        Err(TensorError::Input { input, .. }) => {
            let names: Vec<&str> = body["inputs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str())
                .collect();
            prop_assert!(
                names.contains(&input.as_str()),
                "{:?} not in {:?}",
                input,
                names
            );
        }
        Err(_) => {}
    }
    Ok(())
}

/// Bytes a merged batch holds, as the merge limit counts them: each element's size (a string's
/// `String` itself) plus the strings' characters.
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

/// A batch's worth of requests with one schema: each input of a name has one type and rank in
/// every request; its rows vary per request, and with `vary` so do its other dimensions.
fn requests(vary: bool) -> impl Strategy<Value = Vec<Vec<Tensor>>> {
    let schema = prop::collection::vec((dtype(), prop::collection::vec(0..4usize, 0..3)), 1..4);
    (schema, 1..5usize).prop_flat_map(move |(schema, count)| {
        let request = (
            0..4usize,
            prop::collection::vec(prop::collection::vec(0..4usize, 0..3), schema.len()),
            any::<prop::sample::Index>(),
        )
            .prop_flat_map({
                let schema = schema.clone();
                move |(rows, own_dims, rotate)| {
                    let tensors: Vec<BoxedStrategy<Tensor>> = schema
                        .iter()
                        .zip(&own_dims)
                        .enumerate()
                        .map(|(i, ((dtype, dims), own))| {
                            let mut shape = vec![rows];
                            for (d, &dim) in dims.iter().enumerate() {
                                shape.push(if vary {
                                    own.get(d).copied().unwrap_or(dim)
                                } else {
                                    dim
                                });
                            }
                            tensor_of(format!("in{i}"), *dtype, shape)
                        })
                        .collect();
                    let rotate = rotate.index(schema.len());
                    // Requests may list their inputs in any order.
                    tensors.prop_map(move |mut t| {
                        t.rotate_left(rotate);
                        t
                    })
                }
            });
        prop::collection::vec(request, count)
    })
}

fn is_zero<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// `padded` is `original` padded at the end of every dimension but the first with zeros.
fn check_padded(original: &Tensor, padded: &Tensor) -> Result<(), TestCaseError> {
    prop_assert_eq!(&original.name, &padded.name);
    prop_assert_eq!(original.dtype(), padded.dtype());
    let (s, p) = (&original.shape, &padded.shape);
    prop_assert_eq!(s.len(), p.len());
    prop_assert_eq!(s.first(), p.first());
    prop_assert!(s.iter().zip(p).all(|(a, b)| a <= b), "{:?} -> {:?}", s, p);
    // Unpad: keep the elements whose every coordinate is inside the original shape.
    let total = element_count(p).unwrap();
    prop_assert_eq!(total, padded.data.len());
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    let mut index = vec![0usize; p.len()];
    for k in 0..total {
        if index.iter().zip(s).all(|(i, n)| i < n) {
            inside.push(k)
        } else {
            outside.push(k)
        }
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < p[d] {
                break;
            }
            index[d] = 0;
        }
    }
    macro_rules! compare {
        ($($variant:ident),*) => {
            match (&original.data, &padded.data) {
                $((TensorData::$variant(want), TensorData::$variant(have)) => {
                    let kept: Vec<_> = inside.iter().map(|&k| have[k].clone()).collect();
                    prop_assert_eq!(&kept, want);
                    prop_assert!(outside.iter().all(|&k| is_zero(&have[k])), "padding is not zero: {:?}", padded);
                })*
                _ => unreachable!(),
            }
        };
    }
    compare!(F32, F64, I32, I64, U8, Bool, String);
    Ok(())
}

/// 256 cases a property, or `PROPTEST_CASES` for a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn decoding_any_bytes_never_panics(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let result = decode_v2_request(&body);
        if let Ok(tensors) = result {
            for t in &tensors {
                prop_assert_eq!(element_count(&t.shape), Some(t.data.len()));
            }
        }
    }

    #[test]
    fn decoding_v2_like_json_never_panics(body in v2_like()) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let result = decode_v2_request(&bytes);
        check_decoded(&body, &result)?;
    }

    /// A shape whose element count overflows never wraps to a small number.
    #[test]
    fn overflowing_shapes_are_refused(
        dims in prop::collection::vec(1usize << 16..usize::MAX, 4..6),
        zero_first in any::<bool>(),
    ) {
        let mut dims = dims;
        dims[0] = if zero_first { 1 } else { dims[0] };
        prop_assume!(element_count(&dims).is_none());
        prop_assert!(Tensor::new("x", dims.clone(), TensorData::I64(vec![])).is_err());
        let body = json!({"inputs": [{"name": "x", "shape": dims, "datatype": "INT64", "data": []}]});
        prop_assert!(decode_v2_request(&serde_json::to_vec(&body).unwrap()).is_err());
    }

    /// `Tensor::new` accepts exactly the data whose length is the shape's element count.
    #[test]
    fn tensor_new_takes_exactly_what_the_shape_holds(
        shape in prop::collection::vec(prop_oneof![4 => 0..5usize, 1 => any::<usize>()], 0..4),
        len in 0..40usize,
    ) {
        let fits = element_count(&shape) == Some(len);
        let result = Tensor::new("t", shape.clone(), TensorData::U8(vec![0; len]));
        prop_assert_eq!(result.is_ok(), fits, "{:?} for {} elements: {:?}", shape, len, result);
    }

    /// Encoding tensors as a v2 request, with flat or nested data, and decoding gives them back;
    /// so do a response's outputs read as a request's inputs.
    #[test]
    fn v2_encode_then_decode_round_trips(
        tensors in prop::collection::vec(tensor(), 0..4),
        nested in any::<bool>(),
    ) {
        let body = request_body(&tensors, nested);
        prop_assert_eq!(decode_v2_request(&body), Ok(tensors.clone()));
        let response = encode_v2_response("m", "1", &tensors);
        let again = json!({ "inputs": response["outputs"] });
        prop_assert_eq!(decode_v2_request(&serde_json::to_vec(&again).unwrap()), Ok(tensors));
    }

    /// Any finite FP32 value written as a client would (its shortest decimal form, as in
    /// `3.4028235e38` for `f32::MAX`) decodes to itself.
    #[test]
    fn fp32_values_in_shortest_form_decode_to_themselves(
        x in prop_oneof![
            4 => prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
                | prop::num::f32::NEGATIVE | prop::num::f32::POSITIVE,
            1 => prop::sample::select(vec![f32::MAX, f32::MIN, f32::MIN_POSITIVE, f32::EPSILON]),
        ],
    ) {
        let body = format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":[{x:?}]}}]}}"#);
        let decoded = decode_v2_request(body.as_bytes());
        prop_assert_eq!(decoded, Ok(vec![Tensor::new("x", vec![1], TensorData::F32(vec![x])).unwrap()]), "{}", body);
    }

    /// An element limit given to `decode_v2_request_with` holds, and it sees every input (name,
    /// type, shape) in order, before any is decoded past it.
    #[test]
    fn an_element_limit_holds(
        tensors in prop::collection::vec(tensor(), 1..4),
        limit in 0..30usize,
    ) {
        let body = request_body(&tensors, false);
        let mut seen = Vec::new();
        let result = decode_v2_request_with(&body, |name, dtype, shape| {
            seen.push((name.to_string(), dtype, shape.to_vec()));
            match element_count(shape) {
                Some(n) if n <= limit => Ok(()),
                _ => Err(format!("over {limit} elements")),
            }
        });
        let first_over = tensors.iter().position(|t| t.data.len() > limit);
        let expected_seen: Vec<_> = tensors
            .iter()
            .take(first_over.map_or(tensors.len(), |i| i + 1))
            .map(|t| (t.name.clone(), t.dtype(), t.shape.clone()))
            .collect();
        prop_assert_eq!(seen, expected_seen);
        match first_over {
            None => prop_assert_eq!(result, Ok(tensors)),
            Some(_) => prop_assert!(result.is_err()),
        }
    }

    /// Without padding, requests of one schema merge, and split gives each its tensors back.
    #[test]
    fn merge_then_split_gives_back_each_request(requests in requests(false), pad in any::<bool>()) {
        let batch = merge(&requests, pad, usize::MAX).expect("requests of one schema merge");
        let expected_rows: Vec<usize> = requests.iter().map(|r| r[0].shape[0]).collect();
        prop_assert_eq!(&batch.rows, &expected_rows);
        let total: usize = expected_rows.iter().sum();
        for t in &batch.inputs {
            prop_assert_eq!(t.shape[0], total);
            prop_assert_eq!(element_count(&t.shape), Some(t.data.len()));
        }
        let parts = split(&batch.inputs, &batch.rows).unwrap();
        prop_assert_eq!(parts.len(), requests.len());
        for (request, part) in requests.iter().zip(&parts) {
            prop_assert_eq!(part.len(), request.len());
            for got in part {
                let want = request.iter().find(|t| t.name == got.name).unwrap();
                prop_assert_eq!(got, want);
            }
        }
    }

    /// With padding, requests whose other dimensions differ merge, and split gives each its
    /// tensors back padded with zeros; without padding they merge only if those dimensions agree.
    #[test]
    fn padded_merge_then_split_gives_back_each_request(requests in requests(true)) {
        let batch = merge(&requests, true, usize::MAX).expect("padding merges one schema");
        let parts = split(&batch.inputs, &batch.rows).unwrap();
        for (request, part) in requests.iter().zip(&parts) {
            prop_assert_eq!(part.len(), request.len());
            for got in part {
                let want = request.iter().find(|t| t.name == got.name).unwrap();
                check_padded(want, got)?;
            }
        }
        let same_dims = requests[0].iter().all(|t| {
            requests
                .iter()
                .all(|r| r.iter().find(|u| u.name == t.name).is_some_and(|u| u.shape[1..] == t.shape[1..]))
        });
        prop_assert_eq!(merge(&requests, false, usize::MAX).is_ok(), same_dims);
    }

    /// A merge never holds more than its byte limit, and the limit is exact: a batch of B bytes
    /// merges under a limit of B and not of B - 1.
    #[test]
    fn a_merge_stays_within_its_limit(
        requests in requests(true),
        pad in any::<bool>(),
        limit in 0..4096usize,
    ) {
        let result = merge(&requests, pad, limit);
        if let Ok(batch) = &result {
            prop_assert!(merged_bytes(&batch.inputs) <= limit);
        }
        if let Ok(unlimited) = merge(&requests, pad, usize::MAX) {
            let bytes = merged_bytes(&unlimited.inputs);
            prop_assert_eq!(merge(&requests, pad, bytes).ok(), Some(unlimited.clone()));
            if bytes > 0 {
                prop_assert!(merge(&requests, pad, bytes - 1).is_err());
            }
            prop_assert_eq!(result.is_ok(), bytes <= limit);
        } else {
            prop_assert!(result.is_err());
        }
    }

    /// Empty tensors with huge dimensions (`[1, 0, N]` and `[1, N, 0]`) would pad to N^2
    /// elements: the limit refuses them before anything is allocated.
    #[test]
    fn padding_huge_empty_tensors_is_refused(
        n in 1usize << 20..usize::MAX / 2,
    ) {
        let empty = |shape: Vec<usize>| Tensor::new("x", shape, TensorData::U8(vec![])).unwrap();
        let a = vec![empty(vec![1, 0, n])];
        let b = vec![empty(vec![1, n, 0])];
        prop_assert!(merge(&[a.clone(), b.clone()], true, 64 << 20).is_err());
        prop_assert!(merge(&[a, b], false, usize::MAX).is_err());
    }
}

/// Found by the `batch_merge` fuzz target: an empty tensor with many rows (`[4294967295, 0]`,
/// which a v2 request may send with `"data": []`), or many empty rows inside (`[1, 4294967295, 0]`),
/// took a minute to merge, one step per empty row. 2^28 rows here take seconds that way.
#[test]
fn empty_tensors_with_many_rows_merge_at_once() {
    let many = 1usize << 28;
    for shape in [vec![many, 0], vec![1, many, 0], vec![2, 3, many, 0]] {
        let empty = Tensor::new("x", shape.clone(), TensorData::F32(vec![])).unwrap();
        let start = std::time::Instant::now();
        for pad in [false, true] {
            let batch = merge(&[vec![empty.clone()], vec![empty.clone()]], pad, 1 << 20).unwrap();
            assert_eq!(batch.inputs[0].shape[0], 2 * shape[0]);
            let parts = split(&batch.inputs, &batch.rows).unwrap();
            assert_eq!(parts[1][0], empty);
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed < std::time::Duration::from_millis(500),
            "{shape:?} took {elapsed:?}"
        );
    }
}

/// Found by the `batch_merge` fuzz target (a build with overflow checks, as `cargo test` without
/// `--release` is): no rows of a huge row size (`[0, 3, usize::MAX, usize::MAX]` holds nothing, so
/// it is a valid tensor) overflowed computing that row size in `merge` and `split`.
#[test]
fn empty_tensors_with_overflowing_row_sizes_merge_and_split() {
    let huge = usize::MAX;
    for shape in [
        vec![0, 3, huge, huge],
        vec![0, 1 << 40, 1 << 40],
        vec![0, huge],
    ] {
        let empty = Tensor::new("x", shape.clone(), TensorData::I64(vec![])).unwrap();
        for pad in [false, true] {
            let batch = merge(&[vec![empty.clone()], vec![empty.clone()]], pad, 1 << 20).unwrap();
            assert_eq!(batch.inputs[0].shape, shape);
            let parts = split(&batch.inputs, &batch.rows).unwrap();
            assert_eq!(parts, vec![vec![empty.clone()], vec![empty.clone()]]);
        }
    }
}
