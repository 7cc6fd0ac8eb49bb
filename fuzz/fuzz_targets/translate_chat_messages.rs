//! Any bytes as an Anthropic Messages event stream, cut into chunks anywhere, translated for an
//! OpenAI Chat Completions client: the translator never panics, and everything it emits is a
//! chat stream a client reads (`data:` events only, each a chat chunk, an error, or a `[DONE]`
//! that nothing follows). The first byte says how many cuts there are, the next bytes how long
//! each chunk is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::TranslateConfig;
use llm_edge::surface::sse::EventReader;
use serde_json::{Value, json};

/// Asserts `stream` is a chat completion stream.
fn assert_chat_stream(stream: &[u8]) {
    let text = std::str::from_utf8(stream).expect("the events are UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "whole events only"
    );
    let mut done = false;
    for event in text.split("\n\n").filter(|event| !event.is_empty()) {
        assert!(!done, "nothing follows [DONE]");
        let data = event.strip_prefix("data: ").expect("data alone");
        assert!(!data.contains('\n'), "one data line");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).expect("JSON data");
        if let Some(error) = chunk.get("error") {
            assert!(error["message"].is_string() && error["type"].is_string());
            continue;
        }
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(chunk["id"].is_string() && chunk["model"].is_string() && chunk["created"].is_u64());
        for choice in chunk["choices"].as_array().expect("choices") {
            assert_eq!(choice["index"], 0);
            let delta = choice["delta"].as_object().expect("a delta");
            assert!(delta.get("content").is_none_or(Value::is_string));
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                assert!(call["index"].is_u64());
                assert!(call["function"]["arguments"].is_string());
            }
            let finish = &choice["finish_reason"];
            assert!(
                finish.is_null()
                    || ["stop", "length", "tool_calls", "content_filter"]
                        .contains(&finish.as_str().unwrap_or(""))
            );
        }
        if let Some(usage) = chunk.get("usage") {
            let count = |key: &str| usage[key].as_u64().expect("a count");
            assert_eq!(
                count("total_tokens"),
                count("prompt_tokens") + count("completion_tokens")
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 8).min(rest.len());
    let (sizes, mut stream) = rest.split_at(cuts);
    let mut chunks = Vec::new();
    for &size in sizes {
        let (chunk, tail) = stream.split_at(usize::from(size).min(stream.len()));
        chunks.push(chunk);
        stream = tail;
    }
    chunks.push(stream);
    let config = TranslateConfig::parse(&json!([
        {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages"}
    ]))
    .expect("a valid translation");
    let translation = &config.translations[0];
    let mut translator = translation.stream(1, cuts % 2 == 0, &Default::default());
    let mut reader = EventReader::default();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(translator.read(&mut reader, chunk, i + 1 == chunks.len()));
    }
    assert_chat_stream(&out);
});
