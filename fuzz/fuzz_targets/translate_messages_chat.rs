//! Any bytes as an OpenAI Chat Completions event stream, cut into chunks anywhere, translated for
//! an Anthropic Messages client: the translator never panics, and everything it emits is a
//! Messages stream a client reads (each event named by its `type`; `message_start` first; content
//! blocks opened, given deltas of their own kind and closed in order, one at a time; then
//! `message_delta` and `message_stop`, or an `error` that ends it). The first byte says how many
//! cuts there are, the next bytes how long each chunk is.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod translate_stream;

use serde_json::Value;

/// Asserts `stream` is a Messages event stream in the order Anthropic's SDKs rely on.
fn assert_messages_stream(stream: &[u8]) {
    let text = std::str::from_utf8(stream).expect("the events are UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "whole events only"
    );
    let (mut started, mut delta_sent, mut ended) = (false, false, false);
    let (mut open, mut blocks): (Option<(u64, String)>, u64) = (None, 0);
    for event in text.split("\n\n").filter(|event| !event.is_empty()) {
        assert!(!ended, "nothing follows the end");
        let (name, data) = event
            .split_once('\n')
            .expect("an event line and a data line");
        let name = name.strip_prefix("event: ").expect("a named event");
        let event: Value =
            serde_json::from_str(data.strip_prefix("data: ").expect("data")).expect("JSON");
        assert_eq!(event["type"], name);
        match name {
            "message_start" => {
                assert!(!started);
                started = true;
                assert_eq!(event["message"]["type"], "message");
                assert!(event["message"]["usage"]["input_tokens"].is_u64());
            }
            "content_block_start" => {
                assert!(started && !delta_sent && open.is_none());
                assert_eq!(event["index"], blocks);
                let kind = event["content_block"]["type"]
                    .as_str()
                    .expect("a block type");
                assert!(kind == "text" || kind == "tool_use");
                if kind == "tool_use" {
                    assert!(
                        event["content_block"]["id"].is_string()
                            && event["content_block"]["name"].is_string()
                    );
                }
                open = Some((blocks, kind.to_owned()));
                blocks += 1;
            }
            "content_block_delta" => {
                let (index, kind) = open.as_ref().expect("an open block");
                assert_eq!(event["index"], *index);
                let delta = &event["delta"];
                match kind.as_str() {
                    "text" => assert!(delta["type"] == "text_delta" && delta["text"].is_string()),
                    _ => assert!(
                        delta["type"] == "input_json_delta" && delta["partial_json"].is_string()
                    ),
                }
            }
            "content_block_stop" => {
                let (index, _) = open.take().expect("an open block");
                assert_eq!(event["index"], index);
            }
            "message_delta" => {
                assert!(started && open.is_none() && !delta_sent);
                delta_sent = true;
                let stop = event["delta"]["stop_reason"]
                    .as_str()
                    .expect("a stop reason");
                assert!(["end_turn", "max_tokens", "tool_use", "refusal"].contains(&stop));
                assert!(event["usage"]["output_tokens"].is_u64());
            }
            "message_stop" => {
                assert!(delta_sent);
                ended = true;
            }
            "error" => {
                assert!(
                    event["error"]["type"].is_string() && event["error"]["message"].is_string()
                );
                ended = true;
            }
            other => panic!("{other} is no Messages event"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(out) = translate_stream::translate(data, "messages", "chat", "/v1/chat/completions")
    {
        assert_messages_stream(&out);
    }
});
