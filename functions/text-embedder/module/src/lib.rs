//! Text embedder: sentences in, all-MiniLM-L6-v2 sentence embeddings out.
//!
//! preprocess: `{"inputs": "text"}` or `{"inputs": ["text", ...]}` → BERT tokenization and
//! WordPiece → `input_ids`, `attention_mask`, `token_type_ids` int64 `[texts, longest]`.
//! postprocess: `last_hidden_state` f32 `[texts, seq, 384]` → mean pooling over each text's tokens
//! and L2 normalisation → `{"embedding": [...], "dimension": 384, "tokens": n}`, or for a list
//! `{"embeddings": [[...], ...], "dimension": 384, "tokens": [n, ...]}`.

use aifn_sdk::{output, Error, Function, Request, Response, Tensor};
use aifn_text::function::{check_rows, recall, tokenize_request};
use aifn_text::{mean_pool_normalize, BertTokenizer};
use serde::Serialize;

include!(concat!(env!("OUT_DIR"), "/vocab.rs"));

/// all-MiniLM-L6-v2 truncates at 256 word pieces (sentence-transformers' `max_seq_length`).
static TOKENIZER: BertTokenizer = BertTokenizer::new(&VOCAB, 256);
/// Texts per request: a batch of this many long texts still answers well within a second.
const MAX_TEXTS: usize = 32;

#[derive(Serialize)]
struct One {
    embedding: Vec<f32>,
    dimension: usize,
    tokens: usize,
}

#[derive(Serialize)]
struct Many {
    embeddings: Vec<Vec<f32>>,
    dimension: usize,
    tokens: Vec<usize>,
}

struct TextEmbedder;

impl Function for TextEmbedder {
    fn preprocess(req: Request) -> Result<Vec<Tensor>, Error> {
        tokenize_request(&req, &TOKENIZER, MAX_TEXTS)
    }

    fn postprocess(_req: Request, outputs: Vec<Tensor>) -> Result<Option<Response>, Error> {
        let shape = recall()?;
        let hidden = output(&outputs, "last_hidden_state")?;
        let seq = check_rows(hidden, &shape)?;
        let dimension = hidden.shape.get(2).copied().unwrap_or(0) as usize;
        let values = hidden
            .as_f32()
            .ok_or_else(|| Error::internal("`last_hidden_state` is not f32"))?;
        let mut embeddings = mean_pool_normalize(values, seq, dimension, &shape.lengths);
        let response = if shape.batch {
            Response::json(&Many {
                embeddings,
                dimension,
                tokens: shape.lengths,
            })?
        } else {
            Response::json(&One {
                embedding: embeddings.remove(0),
                dimension,
                tokens: shape.lengths[0],
            })?
        };
        Ok(Some(response))
    }
}

aifn_sdk::export!(TextEmbedder);
