//! Any text: llm-edge's exact token ids are tiktoken's, for both of OpenAI's vocabularies (its
//! own pre-tokenizer and merge run on ASCII text, tiktoken's on the rest, a bounded stretch at a
//! time). On any text, short or repeated past the bound, encoding never panics, the ids decode
//! to the text, and there are no more of them than bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::Tokenizer;

/// The longest stretch llm-edge merges at once (`LONGEST_STRETCH`): no text this short can hold
/// a pre-token long enough to be cut, so its ids must be tiktoken's.
const LONGEST_STRETCH: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let long = if text.is_empty() {
        String::new()
    } else {
        text.repeat(2 * LONGEST_STRETCH / text.len() + 1)
    };
    for (model, bpe) in [
        ("gpt-4o", tiktoken_rs::o200k_base_singleton()),
        ("gpt-4", tiktoken_rs::cl100k_base_singleton()),
    ] {
        let ids = Tokenizer::Exact
            .encode(model, text)
            .expect("exact counting encodes");
        if text.len() <= LONGEST_STRETCH {
            assert_eq!(ids, bpe.encode_ordinary(text), "{model} {text:?}");
        }
        for text in [text, long.as_str()] {
            let ids = Tokenizer::Exact
                .encode(model, text)
                .expect("exact counting encodes");
            assert!(ids.len() <= text.len(), "{model} {text:?}");
            assert_eq!(
                bpe.decode_bytes(&ids).expect("ids are the vocabulary's"),
                text.as_bytes()
            );
            assert_eq!(Tokenizer::Exact.count(model, text) as usize, ids.len());
        }
    }
});
