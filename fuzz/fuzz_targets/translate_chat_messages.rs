//! Any bytes as an Anthropic Messages event stream, cut into chunks anywhere, translated for an
//! OpenAI Chat Completions client: the translator never panics, and everything it emits is a
//! chat stream a client reads (`data:` events only, each a chat chunk, an error, or a `[DONE]`
//! that nothing follows). The first byte says how many cuts there are, the next bytes how long
//! each chunk is.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod translate_stream;

use serde_json::Value;

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
    if let Some(out) = translate_stream::translate(data, "chat", "messages", "/v1/messages") {
        assert_chat_stream(&out);
    }
});
