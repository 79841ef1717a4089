//! Sentiment analyzer: sentences in, a label and its probability out.
//!
//! preprocess: `{"inputs": "text"}` or `{"inputs": ["text", ...]}` → BERT tokenization and
//! WordPiece → `input_ids`, `attention_mask`, `token_type_ids` int64 `[texts, longest]`.
//! The model (`model/sentiment.onnx`) is all-MiniLM-L6-v2 with a logistic-regression head.
//! postprocess: `probabilities` f32 `[texts, 2]` (negative, positive) →
//! `{"label": "positive", "probability": 0.97}`, or for a list `{"predictions": [...]}`.

use aifn_sdk::{output, Error, Function, Request, Response, Tensor};
use aifn_text::function::{check_rows, recall, tokenize_request};
use aifn_text::BertTokenizer;
use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/vocab.rs"));

static TOKENIZER: BertTokenizer = BertTokenizer::new(&VOCAB, 256);
const MAX_TEXTS: usize = 32;
const LABELS: [&str; 2] = ["negative", "positive"];

#[derive(Serialize)]
struct Prediction {
    label: &'static str,
    /// The probability of `label` (at least 0.5).
    probability: f32,
}

#[derive(Serialize)]
struct Predictions {
    predictions: Vec<Prediction>,
}

struct SentimentAnalyzer;

impl Function for SentimentAnalyzer {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        tokenize_request(&req, &TOKENIZER, MAX_TEXTS)
    }

    fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        let shape = recall()?;
        let probabilities = output(&outputs, "probabilities")?;
        check_rows(probabilities, &shape)?;
        let values = probabilities
            .as_f32()
            .ok_or_else(|| Error::internal("`probabilities` is not f32"))?;
        let mut predictions: Vec<Prediction> = values
            .chunks_exact(LABELS.len())
            .map(|p| {
                let positive = p[1] >= p[0];
                Prediction {
                    label: LABELS[usize::from(positive)],
                    probability: p[usize::from(positive)],
                }
            })
            .collect();
        let response = if shape.batch {
            Response::json(&Predictions { predictions })?
        } else {
            Response::json(&predictions.remove(0))?
        };
        Ok(Some(response))
    }
}

aifn_sdk::export!(SentimentAnalyzer);
