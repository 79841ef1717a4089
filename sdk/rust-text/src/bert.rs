//! The BERT tokenizer of Hugging Face `tokenizers` (`BertNormalizer`, `BertPreTokenizer`,
//! `WordPiece`, the `[CLS] A [SEP]` template), rule for rule, so ids match the reference exactly:
//!
//! 1. special tokens written literally in the text (`[SEP]`) are kept as themselves;
//! 2. the rest is cleaned (control characters dropped, whitespace made a space), CJK ideographs
//!    are set apart, accents are stripped (NFD, then non-spacing marks dropped) and it is lowercased;
//! 3. it is split on whitespace and around every punctuation character;
//! 4. each word becomes the longest vocabulary pieces from its start (`eating` → `eat`, `##ing`),
//!    or `[UNK]` when it cannot be covered or is longer than 100 characters;
//! 5. the ids are truncated to `max_len - 2` and wrapped in `[CLS]` ... `[SEP]`.

use crate::Vocab;
use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// Words longer than this (in characters) become `[UNK]`, as in the reference.
const MAX_CHARS_PER_WORD: usize = 100;

pub struct BertTokenizer {
    vocab: &'static Vocab,
    max_len: usize,
}

/// A padded batch, ready to become the model's `input_ids`, `attention_mask` and `token_type_ids`
/// tensors of shape `[rows, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    pub rows: usize,
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// Tokens per row before padding (the attention mask's ones).
    pub lengths: Vec<usize>,
}

impl BertTokenizer {
    /// `max_len` counts `[CLS]` and `[SEP]`; it must be at least 2.
    pub const fn new(vocab: &'static Vocab, max_len: usize) -> BertTokenizer {
        assert!(max_len >= 2, "max_len must leave room for [CLS] and [SEP]");
        BertTokenizer { vocab, max_len }
    }

    /// The ids of one text: `[CLS]`, its pieces (truncated), `[SEP]`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.vocab.cls];
        let budget = self.max_len - 2;
        let mut rest = text;
        while !rest.is_empty() && ids.len() <= budget {
            let (plain, special, after) = self.split_special(rest);
            self.push_pieces(plain, budget, &mut ids);
            ids.extend(special);
            rest = after;
        }
        ids.truncate(budget + 1);
        ids.push(self.vocab.sep);
        ids
    }

    /// Encodes each text and pads the rows to the longest with `[PAD]`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Encoding {
        let rows: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t.as_ref())).collect();
        let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut encoding = Encoding {
            rows: rows.len(),
            seq,
            input_ids: Vec::with_capacity(rows.len() * seq),
            attention_mask: Vec::with_capacity(rows.len() * seq),
            token_type_ids: vec![0; rows.len() * seq],
            lengths: rows.iter().map(Vec::len).collect(),
        };
        for row in &rows {
            encoding
                .input_ids
                .extend(row.iter().map(|&id| i64::from(id)));
            encoding
                .input_ids
                .extend((row.len()..seq).map(|_| i64::from(self.vocab.pad)));
            encoding
                .attention_mask
                .extend((0..seq).map(|i| i64::from(i < row.len())));
        }
        encoding
    }

    /// Splits off the text before the first special token written literally in it.
    fn split_special<'t>(&self, text: &'t str) -> (&'t str, Option<u32>, &'t str) {
        let first = self
            .vocab
            .specials
            .iter()
            .filter_map(|&(token, id)| text.find(token).map(|at| (at, token.len(), id)))
            .min_by_key(|&(at, _, _)| at);
        match first {
            Some((at, len, id)) => (&text[..at], Some(id), &text[at + len..]),
            None => (text, None, ""),
        }
    }

    /// Appends the pieces of `text`, stopping once there are more than `budget` ids.
    fn push_pieces(&self, text: &str, budget: usize, ids: &mut Vec<u32>) {
        let normalized = normalize(text);
        for word in normalized
            .split(char::is_whitespace)
            .filter(|w| !w.is_empty())
        {
            for part in split_punctuation(word) {
                if ids.len() > budget {
                    return;
                }
                self.word_pieces(part, ids);
            }
        }
    }

    /// Greedy longest-match-first WordPiece.
    fn word_pieces(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().count() > MAX_CHARS_PER_WORD {
            ids.push(self.vocab.unk);
            return;
        }
        let before = ids.len();
        let mut start = 0;
        while start < word.len() {
            let found = word[start..]
                .char_indices()
                .map(|(at, c)| start + at + c.len_utf8())
                .rev()
                .find_map(|end| {
                    let piece = &word[start..end];
                    let id = if start == 0 {
                        self.vocab.word_start(piece)
                    } else {
                        self.vocab.continuation(piece)
                    };
                    id.map(|id| (id, end))
                });
            match found {
                Some((id, end)) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(before);
                    ids.push(self.vocab.unk);
                    return;
                }
            }
        }
    }
}

/// `BertNormalizer` with clean_text, handle_chinese_chars, strip_accents and lowercase on.
fn normalize(text: &str) -> String {
    let mut spaced = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || is_control(c) {
            continue;
        }
        if is_whitespace(c) {
            spaced.push(' ');
        } else if is_chinese_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let mut out = String::with_capacity(spaced.len());
    for c in spaced.nfd().filter(|c| !c.is_mark_nonspacing()) {
        out.extend(c.to_lowercase());
    }
    out
}

/// Splits a word around each punctuation character, keeping the punctuation as its own part.
fn split_punctuation(word: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (at, c) in word.char_indices() {
        if is_punctuation(c) {
            if start < at {
                parts.push(&word[start..at]);
            }
            parts.push(&word[at..at + c.len_utf8()]);
            start = at + c.len_utf8();
        }
    }
    if start < word.len() {
        parts.push(&word[start..]);
    }
    parts.into_iter()
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::{vocab_at_run_time, vocab_source};

    // A tiny vocabulary: the generated tables, parsed back by hand.
    const VOCAB_TXT: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nman\nis\neat\n##ing\nfood\n.\n,\ncafe\n中\n文\n!\nun\n##aff\n##able";

    fn vocab() -> &'static Vocab {
        let src = vocab_source(VOCAB_TXT).unwrap();
        assert!(
            src.contains("\"ableaffing\""),
            "continuations are stored without ##: {src}"
        );
        vocab_at_run_time(VOCAB_TXT).unwrap()
    }

    #[test]
    fn words_pieces_punctuation_and_specials() {
        let t = BertTokenizer::new(vocab(), 64);
        assert_eq!(
            t.encode("A man is eating food."),
            vec![2, 5, 6, 7, 8, 9, 10, 11, 3]
        );
        assert_eq!(
            t.encode("  Café,\tUNAFFABLE!"),
            vec![2, 13, 12, 17, 18, 19, 16, 3]
        );
        assert_eq!(t.encode("中文"), vec![2, 14, 15, 3]);
        assert_eq!(t.encode("zebra food"), vec![2, 1, 10, 3]);
        assert_eq!(t.encode("food[MASK]food"), vec![2, 10, 4, 10, 3]);
        assert_eq!(t.encode(""), vec![2, 3]);
    }

    #[test]
    fn truncates_and_pads() {
        let t = BertTokenizer::new(vocab(), 4);
        assert_eq!(t.encode("a man is eating"), vec![2, 5, 6, 3]);
        let batch = t.encode_batch(&["a", "a man is"]);
        assert_eq!((batch.rows, batch.seq), (2, 4));
        assert_eq!(batch.input_ids, vec![2, 5, 3, 0, 2, 5, 6, 3]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 1, 1, 1, 1]);
        assert_eq!(batch.lengths, vec![3, 4]);
    }
}
