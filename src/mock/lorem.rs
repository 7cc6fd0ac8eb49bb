//! Realistic filler text: lorem-ipsum sentences of varying length, drawn from a seedable generator.

use rand::RngExt;
use rand::rngs::StdRng;

const WORDS: [&str; 64] = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "reprehenderit",
    "voluptate",
    "velit",
    "esse",
    "cillum",
    "eu",
    "fugiat",
    "nulla",
    "pariatur",
    "excepteur",
    "sint",
    "occaecat",
    "cupidatat",
    "non",
    "proident",
    "sunt",
    "culpa",
    "qui",
    "officia",
    "deserunt",
    "mollit",
    "anim",
    "id",
    "est",
    "laborum",
    "integer",
];

/// Sentences of 4 to 16 words, capitalised, some with a comma, each ending in a full stop,
/// `words` words in all (at least one).
pub fn filler(rng: &mut StdRng, words: usize) -> String {
    let mut text = String::with_capacity(words * 8);
    let mut left = words.max(1);
    while left > 0 {
        let length = rng.random_range(4..=16).min(left);
        let comma_after = (length > 6).then(|| rng.random_range(2..length - 2));
        for i in 0..length {
            let word = WORDS[rng.random_range(0..WORDS.len())];
            if !text.is_empty() {
                text.push(' ');
            }
            if i == 0 {
                let mut letters = word.chars();
                text.extend(letters.next().map(|c| c.to_ascii_uppercase()));
                text.push_str(letters.as_str());
            } else {
                text.push_str(word);
            }
            if comma_after == Some(i) {
                text.push(',');
            }
        }
        text.push('.');
        left -= length;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn has_the_asked_number_of_words_in_sentences() {
        let mut rng = StdRng::seed_from_u64(1);
        let text = filler(&mut rng, 57);
        assert_eq!(text.split(' ').count(), 57);
        assert!(text.ends_with('.'));
        assert!(text.chars().next().unwrap().is_ascii_uppercase());
        assert_eq!(filler(&mut rng, 0).split(' ').count(), 1);
    }

    #[test]
    fn a_seed_repeats_the_text() {
        let a = filler(&mut StdRng::seed_from_u64(9), 40);
        assert_eq!(a, filler(&mut StdRng::seed_from_u64(9), 40));
        assert_ne!(a, filler(&mut StdRng::seed_from_u64(10), 40));
    }
}
