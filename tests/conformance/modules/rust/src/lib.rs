//! The conformance suite's preprocessing (tests/conformance/README.md) with the Rust SDK.

use aifn_sdk::{Error, Function, Request, Response, Tensor};

const VOCABULARY: [&str; 12] = [
    "the", "a", "model", "is", "good", "bad", "not", "very", "fast", "slow", "data", "ai",
];
const LENGTH: usize = 8;
const MEAN: [f64; 4] = [10.0, 0.5, 100.0, -3.0];
const SCALE: [f64; 4] = [2.0, 0.25, 50.0, 4.0];

fn tokenize(text: &[u8]) -> Vec<Tensor> {
    let lowered = text.to_ascii_lowercase();
    let mut ids: Vec<i64> = lowered
        .split(|b| !b.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            VOCABULARY
                .iter()
                .position(|v| v.as_bytes() == word)
                .map_or(1, |i| i as i64 + 2)
        })
        .take(LENGTH)
        .collect();
    let mut mask = vec![1i64; ids.len()];
    ids.resize(LENGTH, 0);
    mask.resize(LENGTH, 0);
    vec![
        Tensor::i64("ids", vec![1, LENGTH as u32], ids),
        Tensor::i64("mask", vec![1, LENGTH as u32], mask),
    ]
}

/// `[+-]?(digits[.digits?]|.digits)([eE][+-]?digits)?`: what every language's module accepts.
fn is_decimal(field: &[u8]) -> bool {
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut at = usize::from(matches!(field.first(), Some(b'+' | b'-')));
    let whole = digits(&field[at..]);
    at += whole;
    let mut fraction = 0;
    if field.get(at) == Some(&b'.') {
        at += 1;
        fraction = digits(&field[at..]);
        at += fraction;
    }
    if whole == 0 && fraction == 0 {
        return false;
    }
    if matches!(field.get(at), Some(b'e' | b'E')) {
        at += 1;
        at += usize::from(matches!(field.get(at), Some(b'+' | b'-')));
        let exponent = digits(&field[at..]);
        if exponent == 0 {
            return false;
        }
        at += exponent;
    }
    at == field.len()
}

fn scale(list: &[u8]) -> Result<Vec<Tensor>, Error> {
    let fields: Vec<&[u8]> = list.split(|b| *b == b',').collect();
    if fields.len() != 4 || !fields.iter().all(|f| is_decimal(f)) {
        return Err(Error::bad_request("nums: expects four decimal numbers"));
    }
    let features = fields
        .iter()
        .zip(MEAN.iter().zip(SCALE))
        .map(|(field, (mean, scale))| {
            let x: f64 = std::str::from_utf8(field).unwrap().parse().unwrap();
            ((x - mean) / scale) as f32
        })
        .collect();
    Ok(vec![Tensor::f32("features", vec![1, 4], features)])
}

struct Conformance;

impl Function for Conformance {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        if let Some(text) = req.body.strip_prefix(b"text:") {
            Ok(tokenize(text))
        } else if let Some(list) = req.body.strip_prefix(b"nums:") {
            scale(list)
        } else {
            Err(Error::bad_request("the body starts with `text:` or `nums:`"))
        }
    }

    fn postprocess(_req: Request, _outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        Ok(None)
    }
}

aifn_sdk::export!(Conformance);
