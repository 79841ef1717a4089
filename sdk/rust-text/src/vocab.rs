//! A WordPiece vocabulary as two sorted static tables, searched by binary search: no start-up
//! cost, which matters when every request gets a fresh WASM instance.

/// Token id tables made at build time by [`crate::codegen::write_vocab_table`].
pub struct Vocab {
    /// Pieces that start a word (`"eat"`), sorted by bytes.
    word_starts: &'static [(&'static str, u32)],
    /// Pieces that continue a word, without their `##` prefix (`"##ing"` is stored as `"ing"`).
    continuations: &'static [(&'static str, u32)],
    /// Ids of the special tokens.
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    /// The special tokens as they may appear, literally, in the input text.
    pub specials: &'static [(&'static str, u32)],
}

impl Vocab {
    /// Used by generated code; the tables must be sorted by key.
    #[doc(hidden)]
    pub const fn from_tables(
        word_starts: &'static [(&'static str, u32)],
        continuations: &'static [(&'static str, u32)],
        specials: &'static [(&'static str, u32)],
        [unk, cls, sep, pad]: [u32; 4],
    ) -> Vocab {
        Vocab {
            word_starts,
            continuations,
            unk,
            cls,
            sep,
            pad,
            specials,
        }
    }

    /// The id of a piece at the start of a word.
    pub fn word_start(&self, piece: &str) -> Option<u32> {
        lookup(self.word_starts, piece)
    }

    /// The id of a piece inside a word (`##piece` in the vocabulary file).
    pub fn continuation(&self, piece: &str) -> Option<u32> {
        lookup(self.continuations, piece)
    }

    pub fn len(&self) -> usize {
        self.word_starts.len() + self.continuations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lookup(table: &[(&str, u32)], piece: &str) -> Option<u32> {
    table
        .binary_search_by(|(key, _)| key.as_bytes().cmp(piece.as_bytes()))
        .ok()
        .map(|at| table[at].1)
}
