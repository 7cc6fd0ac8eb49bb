//! Long text left to tiktoken, cut where tiktoken must cut anyway, so that its regex engine never
//! gets more than a bounded stretch at once: on a megabyte of spaces it ran out of stack and
//! panicked, and its merge of one long piece grows faster than the piece.

use std::sync::OnceLock;

use regex::Regex;

use super::work;

/// Pairs of characters that both vocabularies' expressions cut between, whatever comes before or
/// after them. Nothing but whitespace follows a space inside a piece, so a space after anything
/// else starts one; a word goes on only with letters, marks and a contraction's `'`; a number
/// only with digits; a newline ends a piece before anything but whitespace, and in `o200k_base`
/// a `/` after punctuation. None of the pieces before such a cut look past it (only whitespace
/// looks ahead), and the pieces after it do not look behind, so tiktoken splits the two sides as
/// it splits the whole. The `regex` crate finds them in linear time.
const CUT_PAIRS: &str = r"\S |\p{L}[^\p{L}\p{M}']|\p{N}\P{N}|[\r\n][^\s/]";

fn cut_pairs() -> &'static Regex {
    static CUT_PAIRS_REGEX: OnceLock<Regex> = OnceLock::new();
    CUT_PAIRS_REGEX.get_or_init(|| Regex::new(CUT_PAIRS).expect("the expression is valid"))
}

/// Some of the places in `text` where tiktoken must cut (see [`CUT_PAIRS`]), in order.
pub(super) fn safe_cuts(text: &str) -> impl Iterator<Item = usize> + '_ {
    cut_pairs().find_iter(text).map(|pair| {
        let first = pair.as_str().chars().next().map_or(0, char::len_utf8);
        pair.start() + first
    })
}

/// Calls `each` with stretches of `text`, in order, of at most `longest` bytes (at least 4, a
/// character's most): cut at the last safe cut that keeps a stretch short enough, or, where
/// there is none, at the last character boundary that does, which may change the count there.
pub(super) fn for_each_stretch<'a>(text: &'a str, longest: usize, mut each: impl FnMut(&'a str)) {
    debug_assert!(longest >= 4);
    if text.len() <= longest {
        each(text);
        return;
    }
    work::scanned(text.len());
    let mut start = 0;
    let mut last_cut = 0;
    for cut in safe_cuts(text).chain([text.len()]) {
        while cut - start > longest {
            let end = if last_cut > start {
                last_cut
            } else {
                work::forced_cut();
                floor_char_boundary(text, start + longest)
            };
            each(&text[start..end]);
            start = end;
        }
        last_cut = cut;
    }
    each(&text[start..]);
}

/// The last character boundary at or before `i`.
fn floor_char_boundary(text: &str, i: usize) -> usize {
    (0..=i)
        .rev()
        .find(|&k| text.is_char_boundary(k))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Every kind of character the expressions tell apart, and the pairs the cuts are about:
    /// letters of each case and script, marks, digits of several scripts, ASCII and other
    /// whitespace, newlines, punctuation, `/`, `'` and contractions, emoji.
    const FRAGMENTS: [&str; 36] = [
        "a", "Zq", "hello", " ", "  ", "\t", "\n", "\r\n", " \n", "\u{a0}", "\u{3000}", "\u{2028}",
        "é", "É", "ǅ", "ʰ", "中文", "ひら", "\u{301}", "\u{94d}", "ा", "1", "234", "٣", "²", "Ⅻ",
        "!", "...", "/", "'", "'s", "’", "🦀", "。", "，", "-",
    ];

    fn random_text(rng: &mut StdRng, most: usize) -> String {
        let len = rng.random_range(0..most);
        (0..len)
            .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
            .collect()
    }

    fn pieces<'a>(regex: &fancy_regex::Regex, text: &'a str) -> Vec<&'a str> {
        regex
            .find_iter(text)
            .map(|found| found.expect("the expression runs").as_str())
            .collect()
    }

    #[test]
    fn tiktoken_splits_both_sides_of_a_safe_cut_as_it_splits_the_whole() {
        let patterns = [
            tiktoken_rs::O200K_BASE_PAT_STR,
            crate::accounting::tokens::CL100K_PATTERN,
        ];
        let mut rng = StdRng::seed_from_u64(11);
        let mut cuts = 0;
        for pattern in patterns {
            let regex = fancy_regex::Regex::new(pattern).unwrap();
            for _ in 0..3_000 {
                let text = random_text(&mut rng, 30);
                let whole = pieces(&regex, &text);
                for cut in safe_cuts(&text) {
                    cuts += 1;
                    let (before, after) = text.split_at(cut);
                    let mut split = pieces(&regex, before);
                    split.extend(pieces(&regex, after));
                    assert_eq!(split, whole, "{text:?} cut at {cut}");
                }
            }
        }
        assert!(cuts > 20_000, "{cuts}");
    }

    #[test]
    fn stretches_are_short_and_cut_safely_where_they_can() {
        let mut rng = StdRng::seed_from_u64(12);
        for _ in 0..5_000 {
            let text = random_text(&mut rng, 40);
            let longest = rng.random_range(4..40);
            let cuts: Vec<usize> = safe_cuts(&text).collect();
            let mut stretches = Vec::new();
            for_each_stretch(&text, longest, |stretch| stretches.push(stretch));
            assert_eq!(stretches.concat(), text);
            let mut start = 0;
            for stretch in &stretches {
                let empty_only_if_the_text_is = !stretch.is_empty() || text.is_empty();
                assert!(
                    empty_only_if_the_text_is && stretch.len() <= longest,
                    "{stretches:?}"
                );
                let end = start + stretch.len();
                // A cut that is not safe is forced: no safe cut could have made this stretch.
                if end < text.len() && !cuts.contains(&end) {
                    assert!(
                        !cuts
                            .iter()
                            .any(|&cut| cut > start && cut <= start + longest),
                        "{text:?} {stretches:?}"
                    );
                }
                start = end;
            }
        }
    }
}
