//! Any text: llm-edge's exact token ids are tiktoken's, for both of OpenAI's vocabularies (its
//! own pre-tokenizer and merge run on ASCII text, tiktoken's on the rest).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::tokens::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for (model, bpe) in [
        ("gpt-4o", tiktoken_rs::o200k_base_singleton()),
        ("gpt-4", tiktoken_rs::cl100k_base_singleton()),
    ] {
        let ids = Tokenizer::Exact
            .encode(model, text)
            .expect("exact counting encodes");
        assert_eq!(ids, bpe.encode_ordinary(text), "{model} {text:?}");
    }
});
