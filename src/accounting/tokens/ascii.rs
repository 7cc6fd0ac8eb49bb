//! tiktoken's pre-tokenizer on ASCII text, without a regex engine.
//!
//! Before BPE, tiktoken cuts text into pieces with a regular expression that needs a look-ahead,
//! so it runs on fancy-regex: on a short prompt that is most of the cost of an exact count. On
//! ASCII text, the expressions of `o200k_base` and `cl100k_base` come down to a few character
//! classes, scanned here by hand. A text is first cut into segments where tiktoken must cut
//! anyway (a space after an ASCII letter): a segment holding any other character is left
//! to tiktoken (in bounded stretches, see `stretch`), so the pieces are always tiktoken's. Each
//! piece is found by looking at its own bytes and the next one only, so a run of any length costs
//! time linear in it: a run of digits, whose pieces are three long, once looked at the whole rest
//! of the run for each. Tests and the `tokens` fuzz target
//! compare them with tiktoken's regex.

use super::work;

/// ASCII between non-ASCII characters shorter than this stays in tiktoken's segment: each
/// segment is a call into tiktoken, and accented prose (French, German) cut at every word ran
/// a third slower than tiktoken on the whole text.
const SHORTEST_ASCII_SEGMENT: usize = 64;

/// Which of OpenAI's pre-tokenizer expressions a vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Splitter {
    /// `o200k_base`: contractions end a word (`don't`), and case changes split words.
    O200k,
    /// `cl100k_base`: contractions are pieces of their own (`don`, `'t`).
    Cl100k,
}

/// A part of a text that tiktoken splits exactly as it splits it within the whole text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Segment<'a> {
    /// The text.
    pub text: &'a str,
    /// Whether it is all ASCII, so that [`Splitter::pieces`] may split it.
    pub ascii: bool,
}

/// Cuts `text` into segments, each all ASCII or not, that concatenate back to it.
pub(super) fn segments(text: &str) -> impl Iterator<Item = Segment<'_>> {
    let bytes = text.as_bytes();
    let mut position = 0;
    std::iter::from_fn(move || {
        if position >= bytes.len() {
            return None;
        }
        let start = position;
        let Some(offset) = bytes[start..].iter().position(|b| !b.is_ascii()) else {
            position = bytes.len();
            return Some(Segment {
                text: &text[start..],
                ascii: true,
            });
        };
        let first_other = start + offset;
        // Forward to it, and back to the last cut before it.
        work::scanned(2 * offset);
        // The ASCII before the last cut ahead of the character stays here; the rest, up to a
        // cut after it that starts a long run of ASCII, goes to tiktoken.
        let ascii_end = (start + 1..first_other)
            .rev()
            .find(|&i| is_cut(bytes, i))
            .unwrap_or(start);
        position = if ascii_end > start {
            ascii_end
        } else {
            other_segment_end(bytes, first_other)
        };
        // Cuts are at ASCII bytes, so both ends are character boundaries.
        Some(Segment {
            text: &text[start..position],
            ascii: ascii_end > start,
        })
    })
}

/// Where the segment left to tiktoken for the non-ASCII byte at `other` ends: at the first cut
/// after it that starts a long enough run of ASCII, else at the end of the text.
fn other_segment_end(bytes: &[u8], mut other: usize) -> usize {
    loop {
        let Some(cut) = (other + 1..bytes.len()).find(|&i| is_cut(bytes, i)) else {
            work::scanned(bytes.len() - other);
            return bytes.len();
        };
        work::scanned(cut + SHORTEST_ASCII_SEGMENT - other);
        let ahead = &bytes[cut..bytes.len().min(cut + SHORTEST_ASCII_SEGMENT)];
        match ahead.iter().position(|b| !b.is_ascii()) {
            Some(offset) => other = cut + offset,
            None => return cut,
        }
    }
}

/// Whether tiktoken cuts before byte `i` whatever surrounds it: a space after an ASCII letter
/// ends the word before it (a word runs to its last letter, and a space cannot be its
/// contraction), and what matches from `i` on never depends on what came before.
fn is_cut(bytes: &[u8], i: usize) -> bool {
    i >= 1 && bytes.get(i) == Some(&b' ') && bytes[i - 1].is_ascii_alphabetic()
}

impl Splitter {
    /// The pieces of an ASCII `text`, as tiktoken's expression cuts it.
    pub(super) fn pieces(self, text: &str) -> impl Iterator<Item = &str> {
        debug_assert!(text.is_ascii());
        let bytes = text.as_bytes();
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= bytes.len() {
                return None;
            }
            let end = match self {
                Self::O200k => o200k_piece_end(bytes, start),
                Self::Cl100k => cl100k_piece_end(bytes, start),
            };
            let piece = &text[start..end];
            start = end;
            Some(piece)
        })
    }
}

/// `\s`: ASCII's White_Space characters (not 0x1C to 0x1F, which Unicode does not count).
fn is_space(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ')
}

fn is_newline(b: u8) -> bool {
    b == b'\r' || b == b'\n'
}

/// `[^\s\p{L}\p{N}]`: punctuation, symbols and control characters.
fn is_other(b: u8) -> bool {
    !is_space(b) && !b.is_ascii_alphanumeric()
}

/// `[^\r\n\p{L}\p{N}]`: what may lead a word.
fn is_word_lead(b: u8) -> bool {
    !is_newline(b) && !b.is_ascii_alphanumeric()
}

/// How many bytes from `i` satisfy `class`.
fn run(bytes: &[u8], i: usize, class: impl Fn(u8) -> bool) -> usize {
    run_upto(bytes, i, usize::MAX, class)
}

/// How many bytes from `i`, up to `most`, satisfy `class`: a bounded piece stops looking where it
/// must end, or every piece of a long run would scan the rest of the run again.
fn run_upto(bytes: &[u8], i: usize, most: usize, class: impl Fn(u8) -> bool) -> usize {
    let len = bytes[i..]
        .iter()
        .take(most)
        .take_while(|&&b| class(b))
        .count();
    work::scanned(len + 1);
    len
}

/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: its length, or 0.
fn contraction(bytes: &[u8], i: usize) -> usize {
    if bytes.get(i) != Some(&b'\'') {
        return 0;
    }
    let lower = |k: usize| bytes.get(i + k).map(u8::to_ascii_lowercase);
    match (lower(1), lower(2)) {
        (Some(b's' | b't' | b'm' | b'd'), _) => 2,
        (Some(b'r' | b'v'), Some(b'e')) | (Some(b'l'), Some(b'l')) => 3,
        _ => 0,
    }
}

/// Where the number starting at `i` ends: `\p{N}{1,3}`.
fn digits_end(bytes: &[u8], i: usize) -> Option<usize> {
    let digits = run_upto(bytes, i, 3, |b| b.is_ascii_digit());
    (digits > 0).then_some(i + digits)
}

/// Where punctuation starting at `i` ends: ` ?[^\s\p{L}\p{N}]+` and then `trailing*`.
fn punctuation_end(bytes: &[u8], i: usize, trailing: impl Fn(u8) -> bool) -> Option<usize> {
    let lead = usize::from(bytes[i] == b' ' && bytes.get(i + 1).is_some_and(|&b| is_other(b)));
    let start = i + lead;
    let symbols = run(bytes, start, is_other);
    (symbols > 0).then(|| {
        let end = start + symbols;
        end + run(bytes, end, trailing)
    })
}

/// The whitespace run starting at `i`: where it ends, and where its last newline ends, if it
/// has one.
fn whitespace(bytes: &[u8], i: usize) -> (usize, Option<usize>) {
    let end = i + run(bytes, i, is_space);
    let last_newline = (i..end).rev().find(|&k| is_newline(bytes[k]));
    (end, last_newline.map(|k| k + 1))
}

/// Where whitespace that is not at the end of the text and has no newline ends:
/// `\s+(?!\S)` leaves the last space to the word after it, `\s` takes a lone one.
fn spaces_before_text_end(i: usize, run_end: usize) -> usize {
    if run_end - i >= 2 { run_end - 1 } else { i + 1 }
}

/// One piece of `o200k_base`'s expression, from `i`:
/// a word with its lead and contraction, up to 3 digits, punctuation, then whitespace
/// (`\s*[\r\n]+`, `\s+(?!\S)`, `\s+`). ASCII has no titlecase, modifier or other letters, and
/// no marks, so a word is upper-case letters then lower-case ones.
fn o200k_piece_end(bytes: &[u8], i: usize) -> usize {
    let word = i + usize::from(is_word_lead(bytes[i]));
    let upper = run(bytes, word, |b| b.is_ascii_uppercase());
    let lower = run(bytes, word + upper, |b| b.is_ascii_lowercase());
    if upper + lower > 0 {
        let end = word + upper + lower;
        return end + contraction(bytes, end);
    }
    if let Some(end) = digits_end(bytes, i) {
        return end;
    }
    if let Some(end) = punctuation_end(bytes, i, |b| is_newline(b) || b == b'/') {
        return end;
    }
    match whitespace(bytes, i) {
        (_, Some(newline_end)) => newline_end,
        (run_end, None) if run_end == bytes.len() => run_end,
        (run_end, None) => spaces_before_text_end(i, run_end),
    }
}

/// One piece of `cl100k_base`'s expression (tiktoken-rs's, with possessive quantifiers), from
/// `i`: a contraction, a word with its lead, up to 3 digits, punctuation, then whitespace
/// (`\s++$`, `\s*[\r\n]`, `\s+(?!\S)`, `\s`).
fn cl100k_piece_end(bytes: &[u8], i: usize) -> usize {
    let contraction = contraction(bytes, i);
    if contraction > 0 {
        return i + contraction;
    }
    let word = i + usize::from(is_word_lead(bytes[i]));
    let letters = run(bytes, word, |b| b.is_ascii_alphabetic());
    if letters > 0 {
        return word + letters;
    }
    if let Some(end) = digits_end(bytes, i) {
        return end;
    }
    if let Some(end) = punctuation_end(bytes, i, is_newline) {
        return end;
    }
    match whitespace(bytes, i) {
        (run_end, _) if run_end == bytes.len() => run_end,
        (_, Some(newline_end)) => newline_end,
        (run_end, None) => spaces_before_text_end(i, run_end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::tokens::CL100K_PATTERN;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Fragments that meet every branch of both expressions: words in each case, contractions
    /// (and near misses), digits, punctuation with and without a leading space, every kind of
    /// ASCII whitespace, control characters; and, for segments, text tiktoken must split:
    /// accents, a typographic apostrophe, CJK, emoji, a combining mark, a titlecase and a
    /// modifier letter, non-ASCII digits and spaces, and `ſ`, which `(?i)s` matches.
    const ASCII_FRAGMENTS: [&str; 40] = [
        "hello",
        "World",
        "WORLD",
        "camelCase",
        "xqzvk",
        "Antidisestablishmentarianism",
        "zzzzzzz",
        "aaaa",
        "a",
        "I",
        "don",
        "'t",
        "'s",
        "'S",
        "'re",
        "'VE",
        "'ll",
        "'Ll",
        "'m",
        "'d",
        "'x",
        "'",
        "7",
        "42",
        "12345",
        " ",
        "  ",
        "   ",
        "\t",
        "\n",
        "\r\n",
        " \n ",
        "\x0b",
        "\x0c",
        ".",
        "...",
        "//",
        "?!",
        "\x00",
        "\x7f",
    ];
    const OTHER_FRAGMENTS: [&str; 12] = [
        "é",
        "’",
        "日本語",
        "🦀",
        "\u{301}",
        "ǅ",
        "ʰ",
        "٣",
        "²",
        "\u{a0}",
        "\u{2028}",
        "ſ",
    ];

    /// Up to `fragments` fragments, each other than ASCII one time in `other_one_in` (never
    /// with 0).
    fn random_text(rng: &mut StdRng, fragments: usize, other_one_in: u32) -> String {
        let len = rng.random_range(0..fragments);
        (0..len)
            .map(|_| {
                if other_one_in > 0 && rng.random_range(0..other_one_in) == 0 {
                    OTHER_FRAGMENTS[rng.random_range(0..OTHER_FRAGMENTS.len())]
                } else {
                    ASCII_FRAGMENTS[rng.random_range(0..ASCII_FRAGMENTS.len())]
                }
            })
            .collect()
    }

    fn tiktoken_pieces<'a>(regex: &fancy_regex::Regex, text: &'a str) -> Vec<&'a str> {
        regex
            .find_iter(text)
            .map(|found| found.expect("the expression runs").as_str())
            .collect()
    }

    #[test]
    fn ascii_pieces_are_tiktokens() {
        let expressions = [
            (Splitter::O200k, tiktoken_rs::O200K_BASE_PAT_STR),
            (Splitter::Cl100k, CL100K_PATTERN),
        ];
        let mut rng = StdRng::seed_from_u64(8);
        for (splitter, pattern) in expressions {
            let regex = fancy_regex::Regex::new(pattern).unwrap();
            for _ in 0..20_000 {
                let text = random_text(&mut rng, 24, 0);
                let pieces: Vec<&str> = splitter.pieces(&text).collect();
                assert_eq!(
                    pieces,
                    tiktoken_pieces(&regex, &text),
                    "{splitter:?} {text:?}"
                );
            }
        }
    }

    #[test]
    fn segments_split_as_the_whole_text_does() {
        let mut rng = StdRng::seed_from_u64(9);
        let mut split_between_others = 0;
        for pattern in [tiktoken_rs::O200K_BASE_PAT_STR, CL100K_PATTERN] {
            let regex = fancy_regex::Regex::new(pattern).unwrap();
            for _ in 0..10_000 {
                // Long texts, other characters now and then: ASCII runs long enough to split.
                let text = random_text(&mut rng, 80, 24);
                let segments: Vec<Segment> = segments(&text).collect();
                split_between_others += usize::from(segments.len() >= 3);
                assert_eq!(segments.iter().map(|s| s.text).collect::<String>(), text);
                let pieces: Vec<&str> = segments
                    .iter()
                    .flat_map(|segment| tiktoken_pieces(&regex, segment.text))
                    .collect();
                assert_eq!(pieces, tiktoken_pieces(&regex, &text), "{text:?}");
                for segment in &segments {
                    assert_eq!(segment.ascii, segment.text.is_ascii(), "{segment:?}");
                }
            }
        }
        // The texts must really be cut, not handed to tiktoken whole.
        assert!(split_between_others > 2_000, "{split_between_others}");
    }

    /// The ids, not only the pieces: pieces that are not one token (rare words, runs of one
    /// letter whose pairs tie) are merged here, and non-ASCII segments encoded by tiktoken.
    #[test]
    fn encodings_are_tiktokens() {
        let vocabularies = [
            ("gpt-4o", tiktoken_rs::o200k_base_singleton()),
            ("gpt-4", tiktoken_rs::cl100k_base_singleton()),
        ];
        let mut rng = StdRng::seed_from_u64(10);
        for (model, bpe) in vocabularies {
            let vocabulary = crate::accounting::tokens::vocabulary_for(model);
            for _ in 0..5_000 {
                let other_one_in = [0, 6, 24][rng.random_range(0..3)];
                let text = random_text(&mut rng, 60, other_one_in);
                assert_eq!(
                    vocabulary.encode(&text),
                    bpe.encode_ordinary(&text),
                    "{model} {text:?}"
                );
            }
        }
    }

    #[test]
    fn long_pieces_encode_as_tiktoken_does() {
        let long_word = "Ab".repeat(300);
        let many_spaces = format!("{}x", " ".repeat(500));
        for text in ["a".repeat(99), "a".repeat(100), long_word, many_spaces] {
            for (model, bpe) in [
                ("gpt-4o", tiktoken_rs::o200k_base_singleton()),
                ("gpt-4", tiktoken_rs::cl100k_base_singleton()),
            ] {
                let vocabulary = crate::accounting::tokens::vocabulary_for(model);
                assert_eq!(vocabulary.encode(&text), bpe.encode_ordinary(&text));
            }
        }
    }

    #[test]
    fn non_ascii_words_go_to_tiktoken_with_short_ascii_between_them() {
        let long = " then a stretch of plain ASCII prose, long enough to be split off";
        let text = format!("the quarter’s report and naïve café and{long} déjà vu");
        let segments: Vec<(&str, bool)> = segments(&text).map(|s| (s.text, s.ascii)).collect();
        assert_eq!(
            segments,
            [
                ("the", true),
                (" quarter’s report and naïve café and", false),
                (long, true),
                (" déjà vu", false),
            ]
        );
    }
}
