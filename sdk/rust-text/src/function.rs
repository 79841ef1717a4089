//! Helpers for text functions built with the Rust SDK: the request's texts in, the model's
//! inputs out, and what postprocess needs to know about the request.

use crate::{BertTokenizer, Encoding};
use aifn_sdk::{Error, Request, Tensor};
use serde::Deserialize;
use std::cell::RefCell;

/// The texts of a request: `{"inputs": "one text"}` or `{"inputs": ["a", "b"]}`.
pub struct Texts {
    pub texts: Vec<String>,
    /// Whether the caller sent a list (and so expects a list back).
    pub batch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    inputs: Inputs,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<String>),
}

/// The whole preprocess of a BERT text function: reads the texts, tokenizes them into one padded
/// batch, remembers the request's shape for postprocess and returns the model's inputs.
pub fn tokenize_request(
    req: &Request,
    tokenizer: &BertTokenizer,
    max_texts: usize,
) -> Result<Vec<Tensor>, Error> {
    let texts = read_texts(req, max_texts)?;
    let encoding = tokenizer.encode_batch(&texts.texts);
    remember(RequestShape {
        batch: texts.batch,
        lengths: encoding.lengths.clone(),
    });
    Ok(model_inputs(encoding))
}

/// Reads `{"inputs": ...}`; anything else, an empty list or more than `max_texts` is a 400.
pub fn read_texts(req: &Request, max_texts: usize) -> Result<Texts, Error> {
    let body: Body = serde_json::from_slice(&req.body).map_err(|e| {
        Error::bad_request(format!(
            "expected {{\"inputs\": \"a text\"}} or {{\"inputs\": [\"a text\", ...]}}: {e}"
        ))
    })?;
    let texts = match body.inputs {
        Inputs::One(text) => Texts {
            texts: vec![text],
            batch: false,
        },
        Inputs::Many(texts) => Texts { texts, batch: true },
    };
    if texts.texts.is_empty() || texts.texts.len() > max_texts {
        return Err(Error::bad_request(format!(
            "`inputs` holds 1 to {max_texts} texts, got {}",
            texts.texts.len()
        )));
    }
    Ok(texts)
}

/// A BERT model's `input_ids`, `attention_mask` and `token_type_ids`, each `[rows, seq]` int64.
pub fn model_inputs(encoding: Encoding) -> Vec<Tensor> {
    let shape = vec![encoding.rows as u32, encoding.seq as u32];
    vec![
        Tensor::i64("input_ids", shape.clone(), encoding.input_ids),
        Tensor::i64("attention_mask", shape.clone(), encoding.attention_mask),
        Tensor::i64("token_type_ids", shape, encoding.token_type_ids),
    ]
}

/// What preprocess learned about the request that postprocess needs.
#[derive(Clone, Debug)]
pub struct RequestShape {
    pub batch: bool,
    /// Tokens per text, `[CLS]` and `[SEP]` included.
    pub lengths: Vec<usize>,
}

thread_local! {
    // Each request runs in a fresh instance, and preprocess and postprocess of one request run in
    // the same instance: state kept here never reaches another request.
    static SHAPE: RefCell<Option<RequestShape>> = const { RefCell::new(None) };
}

/// Keeps the request's shape for postprocess.
pub fn remember(shape: RequestShape) {
    SHAPE.with(|s| *s.borrow_mut() = Some(shape));
}

/// The shape preprocess kept.
pub fn recall() -> Result<RequestShape, Error> {
    SHAPE
        .with(|s| s.borrow().clone())
        .ok_or_else(|| Error::internal("postprocess ran without preprocess"))
}

/// Checks a `[rows, seq, ...]` output against the request and returns `seq`.
pub fn check_rows(output: &Tensor, shape: &RequestShape) -> Result<usize, Error> {
    match output.shape.as_slice() {
        [rows, seq, ..] if *rows as usize == shape.lengths.len() => Ok(*seq as usize),
        other => Err(Error::internal(format!(
            "`{}` has shape {other:?}, expected {} rows",
            output.name,
            shape.lengths.len()
        ))),
    }
}
