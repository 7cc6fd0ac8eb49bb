//! Any bytes as an OpenAI Chat Completions event stream, cut into chunks anywhere, translated for
//! an OpenAI Responses client: the translator never panics, and everything it emits is a
//! Responses stream a client reads (each event named by its `type` and numbered from 0 without a
//! gap; `response.created` first; items added, given deltas of their kind and done in order; a
//! `response.completed` or `.incomplete` whose output is every item done, or an `error`, last).
//! The first byte says how many cuts there are, the next bytes how long each chunk is.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod translate_stream;

use serde_json::Value;

/// Asserts `stream` is a Responses event stream in the order the SDKs rely on.
fn assert_responses_stream(stream: &[u8]) {
    let text = std::str::from_utf8(stream).expect("the events are UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "whole events only"
    );
    let (mut ended, mut open): (bool, Option<(u64, String)>) = (false, None);
    let mut done_items: Vec<Value> = Vec::new();
    for (sequence, event) in text
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .enumerate()
    {
        assert!(!ended, "nothing follows the end");
        let (name, data) = event
            .split_once('\n')
            .expect("an event line and a data line");
        let name = name.strip_prefix("event: ").expect("a named event");
        let event: Value =
            serde_json::from_str(data.strip_prefix("data: ").expect("data")).expect("JSON");
        assert_eq!(event["type"], name);
        assert_eq!(event["sequence_number"], sequence as u64);
        if sequence == 0 {
            assert!(name == "response.created" || name == "error");
        } else {
            assert_ne!(name, "response.created");
        }
        match name {
            "response.created" | "response.in_progress" => {
                assert_eq!(event["response"]["status"], "in_progress");
            }
            "response.output_item.added" => {
                assert!(open.is_none());
                assert_eq!(event["output_index"], done_items.len() as u64);
                let kind = event["item"]["type"]
                    .as_str()
                    .expect("an item type")
                    .to_owned();
                assert!(kind == "message" || kind == "function_call");
                open = Some((done_items.len() as u64, kind));
            }
            "response.content_part.added"
            | "response.content_part.done"
            | "response.output_text.delta"
            | "response.output_text.done" => {
                let (index, kind) = open.as_ref().expect("an open item");
                assert_eq!(
                    (event["output_index"].as_u64(), kind.as_str()),
                    (Some(*index), "message")
                );
            }
            "response.function_call_arguments.delta" | "response.function_call_arguments.done" => {
                let (index, kind) = open.as_ref().expect("an open item");
                assert_eq!(
                    (event["output_index"].as_u64(), kind.as_str()),
                    (Some(*index), "function_call")
                );
            }
            "response.output_item.done" => {
                let (index, _) = open.take().expect("an open item");
                assert_eq!(event["output_index"], index);
                done_items.push(event["item"].clone());
            }
            "response.completed" | "response.incomplete" => {
                assert!(open.is_none());
                assert_eq!(
                    event["response"]["output"],
                    Value::Array(done_items.clone())
                );
                ended = true;
            }
            "error" => {
                assert!(event["message"].is_string() || event["message"].is_null());
                ended = true;
            }
            other => panic!("{other} is no Responses event"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some(out) =
        translate_stream::translate(data, "responses", "chat", "/v1/chat/completions")
    {
        assert_responses_stream(&out);
    }
});
