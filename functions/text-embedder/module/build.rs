//! Turns the model's WordPiece vocabulary (fetched by ./scripts/setup.sh) into static tables.
fn main() {
    aifn_text::codegen::build_vocab("../model/vocab.txt");
}
