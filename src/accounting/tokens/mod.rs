//! Token counting for `usage`, and token boundaries for streamed deltas and `max_tokens`.
//!
//! Exact counting uses OpenAI's own BPE vocabularies through tiktoken-rs: `o200k_base` for the
//! gpt-4o / 4.1 / 4.5 / 5 / o-series generation (and, as the modern default, for models OpenAI
//! does not name), `cl100k_base` for gpt-4, gpt-3.5 and the ada/3 embedding models. Chat
//! formatting is counted the way OpenAI counts it: 3 tokens per message, 1 more for a `name`,
//! and 3 to prime the reply. Approximate counting (one token per four characters) skips the BPE.
//!
//! ASCII text is split into pieces here ([`ascii`]), and each piece is looked up, or byte-pair
//! merged, in a table of the ASCII tokens built at config time; tiktoken encodes other text, a
//! bounded stretch at a time ([`stretch`]).
//!
//! Every cost is linear in the text: no call into tiktoken, and no merge, gets more than
//! [`LONGEST_STRETCH`] bytes. "Exact" means tiktoken's ids for every text in which no stretch that
//! long goes without a place where tiktoken must cut that llm-edge finds (a space, a newline,
//! the end of a word or number): such a stretch, in practice a single pre-token (a word, a run of
//! whitespace, punctuation or emoji) that long, which no prose or code has, is encoded in pieces
//! of at most that many bytes, each exactly, so only the tokens across each such cut can differ
//! from tiktoken's, and the ids still decode to the text.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use crate::api::openai::chat::ChatMessage;

mod ascii;
mod stretch;
mod work;

use ascii::Splitter;

/// Tokens added around every chat message by the chat format.
const TOKENS_PER_MESSAGE: u32 = 3;
/// Tokens added when a message has a `name`.
const TOKENS_PER_NAME: u32 = 1;
/// Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`).
const TOKENS_PER_REPLY: u32 = 3;
/// Characters per token in approximate counting.
const APPROX_CHARS_PER_TOKEN: usize = 4;
/// ASCII pieces this long are merged with a heap rather than by scanning every pair after each
/// merge, whose cost grows with the square of the piece (tiktoken switches at the same length).
const SHORTEST_PIECE_MERGED_BY_HEAP: usize = 100;
/// The most text that is merged, or handed to tiktoken, at once: longer text is cut where
/// tiktoken must cut, and a longer pre-token into pieces this long (see the module's comment).
/// Far above any pre-token of prose or code; small enough that tiktoken's regex engine, which
/// backtracks, stays far from its limits.
const LONGEST_STRETCH: usize = 4096;
/// The chat roles: each is one token in both of OpenAI's vocabularies (a test checks it), so
/// exact counting need not run the BPE over them for every message.
const ONE_TOKEN_ROLES: [&str; 6] = [
    "system",
    "user",
    "assistant",
    "tool",
    "developer",
    "function",
];

/// How tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// OpenAI's BPE for the model's family: counts match tiktoken's.
    #[default]
    Exact,
    /// About four characters per token: no vocabulary, cheaper per request.
    Approx,
}

/// A piece of text that is one token, or a few tokens that only together make whole characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The text, a slice of the original.
    pub text: &'a str,
    /// How many tokens it is.
    pub tokens: u32,
}

impl Tokenizer {
    /// Loads the vocabularies now, at config time, so no request pays for it.
    pub fn warm(self) {
        if self == Self::Exact {
            vocabulary_for("gpt-4o");
            vocabulary_for("gpt-4");
        }
    }

    /// Tokens in `text` for `model`.
    pub fn count(self, model: &str, text: &str) -> u32 {
        let count = match self {
            Self::Exact => vocabulary_for(model).encode(text).len(),
            Self::Approx => text.chars().count().div_ceil(APPROX_CHARS_PER_TOKEN),
        };
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The token ids of `text` for `model` when counting is exact; `None` when approximate.
    pub fn encode(self, model: &str, text: &str) -> Option<Vec<u32>> {
        (self == Self::Exact).then(|| vocabulary_for(model).encode(text))
    }

    /// Prompt tokens of a chat conversation for `model`, formatting overhead included.
    pub fn prompt_tokens(self, model: &str, messages: &[ChatMessage]) -> u32 {
        self.prompt_tokens_keeping(model, messages, None).0
    }

    /// [`Self::prompt_tokens`], also returning the token ids of the message whose text is `keep`
    /// (the very slice, borrowed from `messages`) when counting is exact: a reply that echoes it
    /// is then cut into tokens without encoding it again.
    pub fn prompt_tokens_keeping(
        self,
        model: &str,
        messages: &[ChatMessage],
        keep: Option<&str>,
    ) -> (u32, Option<Vec<u32>>) {
        let mut kept = None;
        let total = messages.iter().fold(TOKENS_PER_REPLY, |sum, message| {
            let name = message.name.as_deref().map_or(0, |name| {
                TOKENS_PER_NAME.saturating_add(self.count(model, name))
            });
            let kept_here = keep.is_some_and(|keep| std::ptr::eq(message.text.as_str(), keep));
            let text = if self == Self::Exact && kept_here {
                let ids = vocabulary_for(model).encode(&message.text);
                let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
                kept = Some(ids);
                count
            } else {
                self.count(model, &message.text)
            };
            sum.saturating_add(TOKENS_PER_MESSAGE)
                .saturating_add(self.count_role(model, &message.role))
                .saturating_add(text)
                .saturating_add(name)
        });
        (total, kept)
    }

    fn count_role(self, model: &str, role: &str) -> u32 {
        if self == Self::Exact && ONE_TOKEN_ROLES.contains(&role) {
            1
        } else {
            self.count(model, role)
        }
    }

    /// The text of token ids, in `model`'s vocabulary; ids it lacks decode to nothing.
    pub fn decode(self, model: &str, ids: &[u32]) -> String {
        let bpe = vocabulary_for(model).bpe;
        let bytes: Vec<u8> = ids
            .iter()
            .filter_map(|&id| bpe.decode_bytes(&[id]).ok())
            .flatten()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Splits `text` at token boundaries; the pieces concatenate back to exactly `text`.
    /// `ids`, when given, are `text`'s token ids from [`Self::encode`], so it is not encoded again.
    pub fn pieces<'a>(self, model: &str, text: &'a str, ids: Option<&[u32]>) -> Vec<Piece<'a>> {
        match (self, ids) {
            (Self::Exact, Some(ids)) => exact_pieces(vocabulary_for(model), text, ids),
            (Self::Exact, None) => {
                let vocabulary = vocabulary_for(model);
                exact_pieces(vocabulary, text, &vocabulary.encode(text))
            }
            (Self::Approx, _) => approx_pieces(text),
        }
    }
}

/// A BPE vocabulary and the byte length of each of its tokens, so that cutting a text at token
/// boundaries needs no decoding, and no allocation, per token.
struct Vocabulary {
    bpe: &'static CoreBPE,
    token_lengths: Vec<u16>,
    /// How the vocabulary's pre-tokenizer splits ASCII text.
    splitter: Splitter,
    /// The ASCII tokens, by their text: most pieces of ASCII text are one token.
    ascii: AsciiTokens,
    /// The longest ASCII token's length: no longer text need be looked up.
    longest_ascii: usize,
    /// The token of each single byte, which every byte-level BPE has.
    byte_tokens: [u32; 256],
}

/// A vocabulary's ASCII tokens, found by their text. The table's entries are slices of one
/// buffer: a map from owned texts took twice the memory.
#[derive(Default)]
struct AsciiTokens {
    /// Every ASCII token's text, one after another.
    text: Vec<u8>,
    /// The ASCII tokens, hashed by their text.
    table: HashTable<AsciiToken>,
}

/// An ASCII token: its id, and where its text is in [`AsciiTokens::text`].
#[derive(Clone, Copy)]
struct AsciiToken {
    start: u32,
    end: u32,
    id: u32,
}

impl AsciiTokens {
    fn hash(text: &[u8]) -> u64 {
        FxBuildHasher.hash_one(text)
    }

    /// Adds token `id`, whose text is `text`.
    fn insert(&mut self, id: u32, text: &[u8]) {
        let offset = |len: usize| u32::try_from(len).expect("a vocabulary is under 4 GiB");
        let start = offset(self.text.len());
        self.text.extend_from_slice(text);
        let end = offset(self.text.len());
        let Self { text, table } = self;
        let hash_of =
            |token: &AsciiToken| Self::hash(&text[token.start as usize..token.end as usize]);
        let token = AsciiToken { start, end, id };
        table.insert_unique(hash_of(&token), token, hash_of);
    }

    /// The id of the token whose text is `text`, if it is one.
    fn get(&self, text: &[u8]) -> Option<u32> {
        self.table
            .find(Self::hash(text), |token| {
                &self.text[token.start as usize..token.end as usize] == text
            })
            .map(|token| token.id)
    }
}

impl Vocabulary {
    /// Ids run densely from 0 (special tokens sit after them, and `encode_ordinary` never makes
    /// one); the tables stop at the first id the vocabulary does not know.
    fn new(bpe: &'static CoreBPE, splitter: Splitter) -> Self {
        let mut token_lengths = Vec::new();
        let mut ascii = AsciiTokens::default();
        let mut longest_ascii = 0;
        let mut byte_tokens = [0; 256];
        for (id, bytes) in (0..).map_while(|id| Some(id).zip(bpe.decode_bytes(&[id]).ok())) {
            token_lengths.push(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
            if let [byte] = bytes[..] {
                byte_tokens[usize::from(byte)] = id;
            }
            if bytes.is_ascii() {
                ascii.insert(id, &bytes);
                longest_ascii = longest_ascii.max(bytes.len());
            }
        }
        Self {
            bpe,
            token_lengths,
            splitter,
            ascii,
            longest_ascii,
            byte_tokens,
        }
    }

    /// The token ids of `text`: what tiktoken's `encode_ordinary` gives (see the module's
    /// comment on pre-tokens longer than [`LONGEST_STRETCH`]).
    fn encode(&self, text: &str) -> Vec<u32> {
        self.encode_within(text, LONGEST_STRETCH)
    }

    /// [`Self::encode`], merging or handing to tiktoken at most `longest` bytes at once.
    fn encode_within(&self, text: &str, longest: usize) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        for segment in ascii::segments(text) {
            if !segment.ascii {
                stretch::for_each_stretch(segment.text, longest, |stretch| {
                    self.encode_by_tiktoken(stretch, &mut ids);
                });
                continue;
            }
            for piece in self.splitter.pieces(segment.text) {
                if let Some(id) = self.ascii.get(piece.as_bytes()) {
                    ids.push(id);
                    continue;
                }
                // A pre-token too long to merge whole is merged in pieces.
                for (k, chunk) in piece.as_bytes().chunks(longest).enumerate() {
                    if k > 0 {
                        work::forced_cut();
                    }
                    work::merged(chunk.len());
                    if chunk.len() < SHORTEST_PIECE_MERGED_BY_HEAP {
                        self.merge_ascii(chunk, &mut ids);
                    } else {
                        self.merge_long_ascii(chunk, &mut ids);
                    }
                }
            }
        }
        ids
    }

    /// Appends tiktoken's ids for `text`. Should tiktoken panic all the same, `text` counts one
    /// token per byte, the most any BPE makes of it, so that a budget never undercounts it.
    fn encode_by_tiktoken(&self, text: &str, ids: &mut Vec<u32>) {
        work::merged(text.len());
        match catch_unwind(AssertUnwindSafe(|| self.bpe.encode_ordinary(text))) {
            Ok(tokens) => ids.extend(tokens),
            Err(_) => ids.extend(self.byte_fallback(text)),
        }
    }

    /// A token per byte of `text`: ids that decode to it, made without a merge.
    fn byte_fallback<'a>(&'a self, text: &'a str) -> impl Iterator<Item = u32> + 'a {
        text.bytes().map(|byte| self.byte_tokens[usize::from(byte)])
    }

    /// Byte-pair encodes an ASCII piece that is not one token: starting from single bytes, the
    /// adjacent pair whose union has the lowest rank (the leftmost, on a tie) merges, until no
    /// union is a token. Every union of ASCII bytes is ASCII, so the ASCII table has every rank
    /// this needs; ranks are ids in OpenAI's vocabularies.
    fn merge_ascii(&self, piece: &[u8], ids: &mut Vec<u32>) {
        let rank = |bytes: &[u8]| self.ascii.get(bytes).unwrap_or(u32::MAX);
        // Where each part starts, then the piece's end.
        let mut bounds: Vec<usize> = (0..=piece.len()).collect();
        // The rank of the union of part `i` and part `i + 1`.
        let mut unions: Vec<u32> = bounds
            .windows(3)
            .map(|w| rank(&piece[w[0]..w[2]]))
            .collect();
        while let Some((i, _)) = unions
            .iter()
            .enumerate()
            .filter(|&(_, &union)| union != u32::MAX)
            .min_by_key(|&(i, &union)| (union, i))
        {
            bounds.remove(i + 1);
            unions.remove(i);
            let union_at = |k: usize| match bounds.get(k + 2) {
                Some(&end) => rank(&piece[bounds[k]..end]),
                None => u32::MAX,
            };
            if i > 0 {
                unions[i - 1] = union_at(i - 1);
            }
            if i < unions.len() {
                unions[i] = union_at(i);
            }
        }
        ids.extend(bounds.windows(2).map(|w| rank(&piece[w[0]..w[1]])));
    }

    /// [`Self::merge_ascii`] for a long piece, in time that grows as `n log n`: the candidate
    /// unions wait in a heap, lowest rank (then leftmost) first, and a part's entry is stale once
    /// its union changed. Parts form a list: `ends[i]` is where the part starting at `i` ends,
    /// `starts[i]` where the part before it starts.
    fn merge_long_ascii(&self, piece: &[u8], ids: &mut Vec<u32>) {
        let rank = |bytes: &[u8]| {
            if bytes.len() > self.longest_ascii {
                u32::MAX
            } else {
                self.ascii.get(bytes).unwrap_or(u32::MAX)
            }
        };
        let len = piece.len();
        let mut ends: Vec<usize> = (1..=len).collect();
        let mut starts: Vec<usize> = (0..len).map(|i| i.saturating_sub(1)).collect();
        // The rank of the union of the part starting at `i` and the next one.
        let mut unions: Vec<u32> = (0..len)
            .map(|i| piece.get(i..i + 2).map_or(u32::MAX, rank))
            .collect();
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = unions
            .iter()
            .enumerate()
            .filter(|&(_, &union)| union != u32::MAX)
            .map(|(i, &union)| Reverse((union, i)))
            .collect();
        while let Some(Reverse((union, i))) = heap.pop() {
            if unions[i] != union {
                continue;
            }
            let next = ends[i];
            ends[i] = ends[next];
            unions[next] = u32::MAX;
            if ends[i] < len {
                starts[ends[i]] = i;
            }
            unions[i] = if ends[i] < len {
                rank(&piece[i..ends[ends[i]]])
            } else {
                u32::MAX
            };
            if unions[i] != u32::MAX {
                heap.push(Reverse((unions[i], i)));
            }
            if i > 0 {
                let before = starts[i];
                unions[before] = rank(&piece[before..ends[i]]);
                if unions[before] != u32::MAX {
                    heap.push(Reverse((unions[before], before)));
                }
            }
        }
        let mut i = 0;
        while i < len {
            ids.push(rank(&piece[i..ends[i]]));
            i = ends[i];
        }
    }

    fn token_len(&self, id: u32) -> usize {
        match self.token_lengths.get(id as usize) {
            Some(&len) => usize::from(len),
            None => self.bpe.decode_bytes(&[id]).map_or(0, |bytes| bytes.len()),
        }
    }
}

/// The vocabulary OpenAI uses for `model`, built once per process.
fn vocabulary_for(model: &str) -> &'static Vocabulary {
    static O200K: OnceLock<Vocabulary> = OnceLock::new();
    static CL100K: OnceLock<Vocabulary> = OnceLock::new();
    let bpe = bpe_for(model);
    if std::ptr::eq(bpe, tiktoken_rs::cl100k_base_singleton()) {
        CL100K.get_or_init(|| Vocabulary::new(bpe, Splitter::Cl100k))
    } else {
        O200K.get_or_init(|| Vocabulary::new(bpe, Splitter::O200k))
    }
}

/// The BPE OpenAI uses for `model`.
fn bpe_for(model: &str) -> &'static CoreBPE {
    const CL100K_FAMILIES: [&str; 4] =
        ["gpt-4", "gpt-3.5", "text-embedding-ada", "text-embedding-3"];
    const O200K_FAMILIES: [&str; 3] = ["gpt-4o", "gpt-4.1", "gpt-4.5"];
    let model = model.rsplit('/').next().unwrap_or(model);
    let is_o200k = O200K_FAMILIES
        .iter()
        .any(|family| model.starts_with(family));
    let is_cl100k = CL100K_FAMILIES
        .iter()
        .any(|family| model.starts_with(family));
    if is_cl100k && !is_o200k {
        tiktoken_rs::cl100k_base_singleton()
    } else {
        tiktoken_rs::o200k_base_singleton()
    }
}

fn exact_pieces<'a>(vocabulary: &Vocabulary, text: &'a str, ids: &[u32]) -> Vec<Piece<'a>> {
    let mut pieces = Vec::new();
    let (mut start, mut end, mut tokens) = (0, 0, 0);
    for &token in ids {
        end += vocabulary.token_len(token);
        tokens += 1;
        // A token may end inside a multi-byte character: carry on until the text is whole.
        if text.is_char_boundary(end) {
            pieces.push(Piece {
                text: &text[start..end],
                tokens,
            });
            (start, tokens) = (end, 0);
        }
    }
    if start < text.len() {
        pieces.push(Piece {
            text: &text[start..],
            tokens: tokens.max(1),
        });
    }
    pieces
}

fn approx_pieces(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest
            .char_indices()
            .nth(APPROX_CHARS_PER_TOKEN)
            .map_or(rest.len(), |(i, _)| i);
        let (text, tail) = rest.split_at(end);
        pieces.push(Piece { text, tokens: 1 });
        rest = tail;
    }
    pieces
}

/// tiktoken-rs's `cl100k_base` expression (its `o200k_base` one is exported): the oracle of the
/// pre-tokenizers' tests.
#[cfg(test)]
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn message(role: &str, text: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            text: text.into(),
            name: None,
        }
    }

    #[test]
    fn exact_counts_match_tiktoken() {
        // Reference counts from OpenAI's tiktoken for the same strings.
        assert_eq!(Tokenizer::Exact.count("gpt-4o", "hello world"), 2);
        assert_eq!(Tokenizer::Exact.count("gpt-4", "hello world"), 2);
        assert_eq!(Tokenizer::Exact.count("gpt-4o", ""), 0);
        let text = "tiktoken is great!";
        assert_eq!(
            Tokenizer::Exact.count("gpt-3.5-turbo", text),
            tiktoken_rs::cl100k_base_singleton()
                .encode_ordinary(text)
                .len() as u32
        );
    }

    #[test]
    fn the_length_table_matches_decoding_every_token() {
        for (model, ordinary_tokens) in [("gpt-4o", 199_998), ("gpt-4", 100_256)] {
            let vocabulary = vocabulary_for(model);
            assert_eq!(vocabulary.token_lengths.len(), ordinary_tokens, "{model}");
            for id in 0..ordinary_tokens as u32 + 2 {
                let decoded = vocabulary.bpe.decode_bytes(&[id]).map_or(0, |b| b.len());
                assert_eq!(vocabulary.token_len(id), decoded, "{model} token {id}");
            }
        }
    }

    #[test]
    fn model_families_pick_their_vocabulary() {
        let o200k: *const CoreBPE = tiktoken_rs::o200k_base_singleton();
        let cl100k: *const CoreBPE = tiktoken_rs::cl100k_base_singleton();
        for model in [
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5",
            "o3-mini",
            "llama-3.1-8b",
            "openai/gpt-4o",
        ] {
            assert_eq!(bpe_for(model) as *const _, o200k, "{model}");
        }
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(bpe_for(model) as *const _, cl100k, "{model}");
        }
    }

    #[test]
    fn prompt_tokens_follow_openais_chat_formula() {
        let messages = [
            message("system", "You are terse."),
            message("user", "hello world"),
        ];
        let bpe = tiktoken_rs::o200k_base_singleton();
        let content: usize = ["system", "You are terse.", "user", "hello world"]
            .iter()
            .map(|t| bpe.encode_ordinary(t).len())
            .sum();
        assert_eq!(
            Tokenizer::Exact.prompt_tokens("gpt-4o", &messages),
            3 + 2 * 3 + content as u32
        );
        let mut named = message("user", "hi");
        named.name = Some("alice".into());
        let unnamed = Tokenizer::Exact.prompt_tokens("gpt-4o", &[message("user", "hi")]);
        assert_eq!(
            Tokenizer::Exact.prompt_tokens("gpt-4o", &[named]),
            unnamed + 2
        );
    }

    #[test]
    fn exact_pieces_are_tokens_and_rebuild_the_text() {
        for text in [
            "Hello, streaming world!",
            "naïve café 日本語 🦀🦀",
            " spaces   here\n",
        ] {
            let pieces = Tokenizer::Exact.pieces("gpt-4o", text, None);
            let rebuilt: String = pieces.iter().map(|p| p.text).collect();
            assert_eq!(rebuilt, text);
            let tokens: u32 = pieces.iter().map(|p| p.tokens).sum();
            assert_eq!(tokens, Tokenizer::Exact.count("gpt-4o", text));
        }
        let pieces = Tokenizer::Exact.pieces("gpt-4o", "hello world", None);
        assert_eq!(
            pieces.iter().map(|p| p.text).collect::<Vec<_>>(),
            ["hello", " world"]
        );
    }

    #[test]
    fn chat_roles_are_one_token_in_both_vocabularies() {
        for model in ["gpt-4o", "gpt-4"] {
            for role in ONE_TOKEN_ROLES {
                assert_eq!(Tokenizer::Exact.count(model, role), 1, "{role} in {model}");
                assert_eq!(Tokenizer::Exact.count_role(model, role), 1);
            }
        }
        assert_eq!(
            Tokenizer::Exact.count_role("gpt-4o", "a made-up role"),
            Tokenizer::Exact.count("gpt-4o", "a made-up role")
        );
        assert_eq!(Tokenizer::Approx.count_role("gpt-4o", "assistant"), 3);
    }

    /// The mock counts the prompt and cuts an echo of it from one encoding: the same counts and
    /// pieces as encoding twice.
    #[test]
    fn a_kept_encoding_gives_what_encoding_again_gives() {
        let messages = [
            message("system", "Be brief."),
            message("user", "Tell me about naïve Bayes — in 2 lines, please."),
        ];
        let echoed = messages[1].text.as_str();
        for tokenizer in [Tokenizer::Exact, Tokenizer::Approx] {
            let (count, kept) = tokenizer.prompt_tokens_keeping("gpt-4o", &messages, Some(echoed));
            assert_eq!(count, tokenizer.prompt_tokens("gpt-4o", &messages));
            assert_eq!(kept, tokenizer.encode("gpt-4o", echoed));
            assert_eq!(
                tokenizer.pieces("gpt-4o", echoed, kept.as_deref()),
                tokenizer.pieces("gpt-4o", echoed, None)
            );
        }
        // Only the very slice named is kept, not an equal text elsewhere.
        let copy = echoed.to_owned();
        let (_, kept) = Tokenizer::Exact.prompt_tokens_keeping("gpt-4o", &messages, Some(&copy));
        assert_eq!(kept, None);
    }

    fn both_vocabularies() -> [(&'static Vocabulary, &'static CoreBPE); 2] {
        [
            (
                vocabulary_for("gpt-4o"),
                tiktoken_rs::o200k_base_singleton(),
            ),
            (
                vocabulary_for("gpt-4"),
                tiktoken_rs::cl100k_base_singleton(),
            ),
        ]
    }

    /// Pieces of 100 bytes and more, merged here with the heap: runs of letters in each case,
    /// of punctuation and of whitespace, random and repeating, each one pre-token.
    #[test]
    fn long_ascii_pieces_merge_as_tiktoken_does() {
        let alphabets: [&[u8]; 5] = [b"abcdefghijklmnopqrstuvwxyz", b"ab", b"A", b"!?.-=*#", b" "];
        let mut rng = StdRng::seed_from_u64(13);
        for (vocabulary, bpe) in both_vocabularies() {
            for _ in 0..300 {
                let alphabet = alphabets[rng.random_range(0..alphabets.len())];
                let len = rng.random_range(SHORTEST_PIECE_MERGED_BY_HEAP..1_500);
                let piece: String = (0..len)
                    .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                    .collect();
                let mut ids = Vec::new();
                vocabulary.merge_long_ascii(piece.as_bytes(), &mut ids);
                assert_eq!(ids, bpe.encode_ordinary(&piece), "{piece:?}");
                assert_eq!(vocabulary.encode(&piece), ids);
            }
        }
    }

    /// Text cut into short stretches at safe cuts encodes as the whole does: a bound of a few
    /// dozen bytes makes short random texts cut as a megabyte is cut at the real bound.
    #[test]
    fn text_cut_into_stretches_encodes_as_tiktoken_does() {
        const WORDS: [&str; 20] = [
            "café",
            "naïve",
            "日本語",
            "中文。",
            "🦀",
            "’s",
            "déjà",
            "é",
            "Ωμέγα",
            "١٢٣",
            "hello",
            "I'm",
            "42",
            "!",
            "...",
            "\u{a0}",
            "\u{3000}",
            "x\u{301}",
            "/",
            "ǅ",
        ];
        const BETWEEN: [&str; 5] = [" ", " ", "\n", "  ", ""];
        let mut rng = StdRng::seed_from_u64(14);
        let (mut exact, mut forced) = (0, 0);
        for (vocabulary, bpe) in both_vocabularies() {
            for _ in 0..2_000 {
                let text: String = (0..rng.random_range(0..40))
                    .flat_map(|_| {
                        [
                            WORDS[rng.random_range(0..WORDS.len())],
                            BETWEEN[rng.random_range(0..BETWEEN.len())],
                        ]
                    })
                    .collect();
                work::take();
                let ids = vocabulary.encode_within(&text, rng.random_range(8..64));
                let work = work::take();
                assert!(work.longest < 64, "{work:?}");
                assert_eq!(bpe.decode_bytes(&ids).unwrap(), text.as_bytes());
                if work.forced_cuts == 0 {
                    exact += 1;
                    assert_eq!(ids, bpe.encode_ordinary(&text), "{text:?}");
                } else {
                    forced += 1;
                }
            }
        }
        assert!(
            exact > 2_000 && forced > 100,
            "{exact} exact, {forced} forced"
        );
    }

    /// A long run of each kind of text: the pre-tokenizers look at each byte a few times, and
    /// what is merged or handed to tiktoken comes in bounded stretches, so that even a merge
    /// quadratic in its input would cost a constant per byte.
    #[test]
    fn every_kind_of_text_costs_work_linear_in_its_length() {
        // Far above the bound, so a cost that grows faster than the text would show.
        const LEN: usize = 32 * LONGEST_STRETCH;
        let classes = [
            "1",
            " ",
            "\n",
            "\t",
            " \n",
            "a",
            "Ab",
            "!",
            "!\n",
            "é",
            "中",
            "🦀",
            "\u{3000}",
            "٣",
            "e\u{301}",
            "aé中🦀",
            "a1",
            "'s",
            " é",
            "a ",
        ];
        for (vocabulary, _) in both_vocabularies() {
            for unit in classes {
                let text = unit.repeat(LEN / unit.len());
                work::take();
                let ids = vocabulary.encode(&text);
                let work = work::take();
                let len = text.len();
                assert!(work.scanned <= 8 * len, "{unit:?} {work:?}");
                assert!(work.bpe_bytes <= len, "{unit:?} {work:?}");
                assert!(work.longest <= LONGEST_STRETCH, "{unit:?} {work:?}");
                assert!(
                    work.bpe_square <= (LONGEST_STRETCH * len) as u128,
                    "{unit:?} {work:?}"
                );
                assert!(ids.len() <= len, "{unit:?}");
                let rebuilt: usize = ids.iter().map(|&id| vocabulary.token_len(id)).sum();
                assert_eq!(rebuilt, len, "{unit:?}");
            }
        }
    }

    #[test]
    fn the_byte_fallback_decodes_to_the_text() {
        for (vocabulary, bpe) in both_vocabularies() {
            let text = "naïve 日本語 🦀 \u{0}\u{7f} ascii";
            let ids: Vec<u32> = vocabulary.byte_fallback(text).collect();
            assert_eq!(ids.len(), text.len());
            assert_eq!(bpe.decode_bytes(&ids).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn decodes_token_ids() {
        let ids = tiktoken_rs::o200k_base_singleton().encode_ordinary("hello world");
        assert_eq!(Tokenizer::Exact.decode("gpt-4o", &ids), "hello world");
        assert_eq!(Tokenizer::Exact.decode("gpt-4o", &[u32::MAX]), "");
    }

    #[test]
    fn approx_counts_four_characters_per_token() {
        assert_eq!(Tokenizer::Approx.count("m", ""), 0);
        assert_eq!(Tokenizer::Approx.count("m", "abcd"), 1);
        assert_eq!(Tokenizer::Approx.count("m", "héllo"), 2);
        let pieces = Tokenizer::Approx.pieces("m", "héllo wörld", None);
        assert_eq!(
            pieces.iter().map(|p| p.text).collect::<Vec<_>>(),
            ["héll", "o wö", "rld"]
        );
        assert_eq!(
            pieces.len() as u32,
            Tokenizer::Approx.count("m", "héllo wörld")
        );
    }
}
