//! A WordPiece vocabulary as static tables made at build time: no start-up cost, which matters
//! when every request gets a fresh WASM instance, and few memory pages touched per lookup (the
//! first touch of a page in a fresh instance is a page fault, a few microseconds each).

/// Keys per block: a block's entries (512 bytes) and its keys' bytes sit within a page or two.
pub(crate) const BLOCK: usize = 64;

/// One sorted table of `(key, id)`. The keys are concatenated in `blob`; `entries[i]` holds the
/// end of key `i` in `blob` and its id. Every `BLOCK`-th key is also copied into the small
/// `top_blob` index, so a lookup is a binary search of the index (a few pages, shared by every
/// lookup) and then of one block.
pub struct Table {
    blob: &'static str,
    entries: &'static [(u32, u32)],
    top_blob: &'static str,
    top_ends: &'static [u32],
}

impl Table {
    #[doc(hidden)]
    pub const fn new(
        blob: &'static str,
        entries: &'static [(u32, u32)],
        top_blob: &'static str,
        top_ends: &'static [u32],
    ) -> Table {
        Table {
            blob,
            entries,
            top_blob,
            top_ends,
        }
    }

    pub fn get(&self, piece: &str) -> Option<u32> {
        let piece = piece.as_bytes();
        let top_key = |i: usize| slice(self.top_blob, self.top_ends, i);
        // The last block whose first key is <= piece.
        let block = match binary_search(self.top_ends.len(), |i| top_key(i).cmp(piece)) {
            Ok(block) => return Some(self.entries[block * BLOCK].1),
            Err(0) => return None,
            Err(after) => after - 1,
        };
        let start = block * BLOCK;
        let end = (start + BLOCK).min(self.entries.len());
        let key = |i: usize| {
            let from = if i == 0 {
                0
            } else {
                self.entries[i - 1].0 as usize
            };
            &self.blob.as_bytes()[from..self.entries[i].0 as usize]
        };
        binary_search(end - start, |i| key(start + i).cmp(piece))
            .ok()
            .map(|i| self.entries[start + i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn slice<'b>(blob: &'b str, ends: &[u32], i: usize) -> &'b [u8] {
    let from = if i == 0 { 0 } else { ends[i - 1] as usize };
    &blob.as_bytes()[from..ends[i] as usize]
}

/// `slice::binary_search_by` over indices `0..len`.
fn binary_search(
    len: usize,
    compare: impl Fn(usize) -> std::cmp::Ordering,
) -> Result<usize, usize> {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        match compare(mid) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Ok(mid),
        }
    }
    Err(low)
}

/// The parts of a [`Table`] over `(key, id)` pairs sorted by key.
pub(crate) struct TableParts {
    pub blob: String,
    pub entries: Vec<(u32, u32)>,
    pub top_blob: String,
    pub top_ends: Vec<u32>,
}

pub(crate) fn table_parts(sorted: &[(&str, u32)]) -> TableParts {
    let mut parts = TableParts {
        blob: String::new(),
        entries: Vec::new(),
        top_blob: String::new(),
        top_ends: Vec::new(),
    };
    for (i, (key, id)) in sorted.iter().enumerate() {
        parts.blob.push_str(key);
        parts.entries.push((parts.blob.len() as u32, *id));
        if i % BLOCK == 0 {
            parts.top_blob.push_str(key);
            parts.top_ends.push(parts.top_blob.len() as u32);
        }
    }
    parts
}

/// Token ids made at build time by [`crate::codegen::write_vocab_table`].
pub struct Vocab {
    /// Pieces that start a word (`"eat"`).
    word_starts: Table,
    /// Pieces that continue a word, without their `##` prefix (`"##ing"` is stored as `"ing"`).
    continuations: Table,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    /// The special tokens as they may appear, literally, in the input text.
    pub specials: &'static [(&'static str, u32)],
}

impl Vocab {
    /// Used by generated code.
    #[doc(hidden)]
    pub const fn from_tables(
        word_starts: Table,
        continuations: Table,
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
        self.word_starts.get(piece)
    }

    /// The id of a piece inside a word (`##piece` in the vocabulary file).
    pub fn continuation(&self, piece: &str) -> Option<u32> {
        self.continuations.get(piece)
    }

    pub fn len(&self) -> usize {
        self.word_starts.len() + self.continuations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use crate::codegen::vocab_at_run_time;

    #[test]
    fn finds_every_key_across_blocks_and_nothing_else() {
        let mut lines: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
            .map(String::from)
            .to_vec();
        lines.extend((0..1000).map(|i| format!("w{}", i * 7)));
        lines.extend((0..300).map(|i| format!("##c{i}")));
        let vocab = vocab_at_run_time(Box::leak(lines.join("\n").into_boxed_str())).unwrap();
        for (id, line) in lines.iter().enumerate() {
            let found = match line.strip_prefix("##") {
                Some(rest) => vocab.continuation(rest),
                None => vocab.word_start(line),
            };
            assert_eq!(found, Some(id as u32), "{line}");
        }
        for missing in ["w1", "w6", "w6994", "", "a", "zzz", "w", "c0"] {
            assert_eq!(vocab.word_start(missing), None, "{missing}");
        }
        assert_eq!(vocab.continuation("c300"), None);
        assert_eq!(vocab.len(), lines.len());
    }
}
