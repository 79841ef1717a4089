//! `decode_v2_request` on arbitrary bytes, and `Tensor::new` on arbitrary shapes and data read
//! from the same bytes.
//!
//! Properties: neither panics; a decoded tensor's shape holds exactly its elements and its floats
//! are finite; with an element limit (`decode_v2_request_with`) no decoded tensor is over it; a
//! decoded request re-encoded as v2 JSON decodes to the same tensors (floats within 1 ULP, see
//! `same`); `Tensor::new` accepts exactly the data whose length the shape's product is.
#![no_main]

use aifn_fuzz::elements;
use aifn_tensor::{decode_v2_request, decode_v2_request_with, Tensor, TensorData};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

fn finite(data: &TensorData) -> bool {
    match data {
        TensorData::F32(v) => v.iter().all(|x| x.is_finite()),
        TensorData::F64(v) => v.iter().all(|x| x.is_finite()),
        _ => true,
    }
}

/// The element limit given to `decode_v2_request_with`.
const MAX_ELEMENTS: usize = 1 << 16;

/// With an element limit, no tensor decoded is over it, and the limit saw every shape decoded.
fn decode_limited(body: &[u8]) {
    let mut seen = Vec::new();
    let result = decode_v2_request_with(body, |name, dtype, shape| {
        seen.push((name.to_string(), dtype, shape.to_vec()));
        match elements(shape) {
            Some(n) if n <= MAX_ELEMENTS => Ok(()),
            _ => Err("over the element limit".into()),
        }
    });
    if let Ok(tensors) = result {
        let decoded: Vec<_> = tensors
            .iter()
            .map(|t| (t.name.clone(), t.dtype(), t.shape.clone()))
            .collect();
        assert_eq!(decoded, seen);
        assert!(tensors.iter().all(|t| t.data.len() <= MAX_ELEMENTS));
    }
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    fn near64(x: f64, y: f64) -> bool {
        x == y || (x.to_bits() as i64).abs_diff(y.to_bits() as i64) <= 1
    }
    fn near32(x: f32, y: f32) -> bool {
        x == y || (x.to_bits() as i32).abs_diff(y.to_bits() as i32) <= 1
    }
    if a.name != b.name || a.shape != b.shape {
        return false;
    }
    match (&a.data, &b.data) {
        (TensorData::F64(x), TensorData::F64(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| near64(*x, *y))
        }
        (TensorData::F32(x), TensorData::F32(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| near32(*x, *y))
        }
        (x, y) => x == y,
    }
}

fn decode(body: &[u8]) {
    let Ok(tensors) = decode_v2_request(body) else {
        return;
    };
    for t in &tensors {
        assert_eq!(
            elements(&t.shape),
            Some(t.data.len()),
            "tensor `{}` of shape {:?} has {} elements",
            t.name,
            t.shape,
            t.data.len()
        );
    }
    // JSON has no infinity or NaN, and FP32 refuses numbers beyond its range: an infinity
    // would be answered as `null`.
    assert!(
        tensors.iter().all(|t| finite(&t.data)),
        "non-finite float decoded: {tensors:?}"
    );
    {
        let inputs: Vec<_> = tensors.iter().map(Tensor::to_v2_json).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap();
        let again = decode_v2_request(&body).unwrap_or_else(|e| {
            panic!(
                "re-encoded request does not decode: {e}\n{}",
                String::from_utf8_lossy(&body)
            )
        });
        // By value (-0.0 == 0.0), and floats within one unit in the last place: serde_json
        // without its `float_roundtrip` feature may parse the decimal it wrote 1 ULP off (the
        // property test `v2_encode_then_decode_round_trips` is exact).
        assert_eq!(again.len(), tensors.len());
        for (a, b) in again.iter().zip(&tensors) {
            assert!(same(a, b), "re-encoded tensor differs:\n{a:?}\n{b:?}");
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

fn construct(bytes: &[u8]) {
    let mut u = Unstructured::new(bytes);
    let Ok(shape) = Vec::<usize>::arbitrary(&mut u) else {
        return;
    };
    let Ok(data) = Data::arbitrary(&mut u) else {
        return;
    };
    let data = match data {
        Data::F32(v) => TensorData::F32(v),
        Data::F64(v) => TensorData::F64(v),
        Data::I32(v) => TensorData::I32(v),
        Data::I64(v) => TensorData::I64(v),
        Data::U8(v) => TensorData::U8(v),
        Data::Bool(v) => TensorData::Bool(v),
        Data::String(v) => TensorData::String(v),
    };
    let len = data.len();
    let fits = elements(&shape) == Some(len);
    match Tensor::new("t", shape.clone(), data) {
        Ok(t) => {
            assert!(fits, "accepted shape {shape:?} for {len} elements");
            assert_eq!(t.shape, shape);
        }
        Err(_) => assert!(!fits, "refused shape {shape:?} for {len} elements"),
    }
}

fuzz_target!(
    init: {
        aifn_fuzz::init();
    },
    |data: &[u8]| {
        decode(data);
        decode_limited(data);
        construct(data);
    }
);
