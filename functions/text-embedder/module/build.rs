//! Turns the model's WordPiece vocabulary (fetched by ./scripts/setup.sh) into static tables.
use std::path::PathBuf;

fn main() {
    let vocab = "../model/vocab.txt";
    println!("cargo:rerun-if-changed={vocab}");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("vocab.rs");
    if let Err(e) = aifn_text::codegen::write_vocab_table(vocab, out) {
        panic!("{e}");
    }
}
