//! Token counting for `usage`, and token boundaries for streamed deltas and `max_tokens`.
//!
//! Exact counting uses OpenAI's own BPE vocabularies through tiktoken-rs: `o200k_base` for the
//! gpt-4o / 4.1 / 4.5 / 5 / o-series generation (and, as the modern default, for models OpenAI
//! does not name), `cl100k_base` for gpt-4, gpt-3.5 and the ada/3 embedding models. Chat
//! formatting is counted the way OpenAI counts it: 3 tokens per message, 1 more for a `name`,
//! and 3 to prime the reply. Approximate counting (one token per four characters) skips the BPE.
//!
//! ASCII text is split into pieces here ([`ascii`]), and each piece is looked up, or byte-pair
//! merged, in a table of the ASCII tokens built at config time; tiktoken encodes other text.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use serde::Deserialize;
use tiktoken_rs::CoreBPE;

use crate::openai::chat::ChatMessage;

mod ascii;

use ascii::Splitter;

/// Tokens added around every chat message by the chat format.
const TOKENS_PER_MESSAGE: u32 = 3;
/// Tokens added when a message has a `name`.
const TOKENS_PER_NAME: u32 = 1;
/// Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`).
const TOKENS_PER_REPLY: u32 = 3;
/// Characters per token in approximate counting.
const APPROX_CHARS_PER_TOKEN: usize = 4;
/// Pieces this long are merged by tiktoken, whose merge of long pieces is not quadratic (a
/// hostile prompt can be one piece of a megabyte).
const LONGEST_PIECE_MERGED_HERE: usize = 100;
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
        for (id, bytes) in (0..).map_while(|id| Some(id).zip(bpe.decode_bytes(&[id]).ok())) {
            token_lengths.push(u16::try_from(bytes.len()).unwrap_or(u16::MAX));
            if bytes.is_ascii() {
                ascii.insert(id, &bytes);
            }
        }
        Self {
            bpe,
            token_lengths,
            splitter,
            ascii,
        }
    }

    /// The token ids of `text`: what tiktoken's `encode_ordinary` gives.
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        for segment in ascii::segments(text) {
            if !segment.ascii {
                ids.extend(self.bpe.encode_ordinary(segment.text));
                continue;
            }
            for piece in self.splitter.pieces(segment.text) {
                match self.ascii.get(piece.as_bytes()) {
                    Some(id) => ids.push(id),
                    None if piece.len() < LONGEST_PIECE_MERGED_HERE => {
                        self.merge_ascii(piece.as_bytes(), &mut ids);
                    }
                    // tiktoken splits its own piece into just that piece again.
                    None => ids.extend(self.bpe.encode_ordinary(piece)),
                }
            }
        }
        ids
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

#[cfg(test)]
mod tests {
    use super::*;

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
