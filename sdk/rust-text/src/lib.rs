//! Text helpers for aifn functions written in Rust: the BERT tokenizer (basic tokenization and
//! WordPiece, as Hugging Face `tokenizers` does it for `BertTokenizer` models) and sentence
//! embedding pooling.
//!
//! A function's module runs in a fresh instance per request, so nothing may be parsed at start-up:
//! the vocabulary is turned into sorted Rust tables at build time. In the module's `build.rs`:
//!
//! ```ignore
//! aifn_text::codegen::write_vocab_table("../model/vocab.txt", out_dir.join("vocab.rs")).unwrap();
//! ```
//!
//! and in the module: `include!(concat!(env!("OUT_DIR"), "/vocab.rs"));`, which defines
//! `static VOCAB: aifn_text::Vocab`. Then:
//!
//! ```ignore
//! let tokenizer = aifn_text::BertTokenizer::new(&VOCAB, 256);
//! let batch = tokenizer.encode_batch(&["A man is eating food."]);
//! ```

mod bert;
pub mod codegen;
#[cfg(feature = "sdk")]
pub mod function;
mod pooling;
mod vocab;

pub use bert::{BertTokenizer, Encoding};
pub use pooling::mean_pool_normalize;
pub use vocab::{Table, Vocab};
