//! Unit tests of `chat`, kept beside it so the module stays readable.
use super::*;
use crate::api::openai::error::ApiError;
use crate::api::openai::generation::{ChoiceText, FinishReason, ToolCallText, Usage};
use serde_json::{Value, json};

fn parse(body: Value) -> Result<ChatRequest, ApiError> {
    ChatRequest::parse(body.to_string().as_bytes())
}

fn param_of(body: Value) -> (u16, Option<String>, Option<&'static str>) {
    let err = parse(body).unwrap_err();
    (err.status, err.param, err.code)
}

#[test]
fn parses_a_minimal_request() {
    let req = parse(json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"}]}))
    .unwrap();
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(req.messages.len(), 2);
    assert_eq!(req.last_user_text(), "hello");
    assert!(!req.stream);
    assert_eq!(req.content_override, None);
}

#[test]
fn joins_text_parts_and_skips_images() {
    let req = parse(
        json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look "},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "here"}]}]}),
    )
    .unwrap();
    assert_eq!(req.last_user_text(), "look here");
}

#[test]
fn last_user_text_is_empty_without_a_user_message() {
    let req = parse(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}));
    assert_eq!(req.unwrap().last_user_text(), "");
}

#[test]
fn reads_the_httpbun_override_and_stream_options() {
    let req = parse(
        json!({"model": "m", "messages": [{"role": "user", "content": "q"}],
        "stream": true, "stream_options": {"include_usage": true},
        "httpbun": {"content": "fixed"}}),
    )
    .unwrap();
    assert!(req.stream && req.include_usage);
    assert_eq!(req.content_override.as_deref(), Some("fixed"));
}

#[test]
fn reads_generation_controls() {
    let req = parse(
        json!({"model": "m", "messages": [{"role": "user", "content": "q", "name": "ann"}],
        "n": 3, "max_tokens": 50, "max_completion_tokens": 7, "stop": ["\n", ""]}),
    )
    .unwrap();
    assert_eq!((req.n, req.max_tokens), (3, Some(7)));
    assert_eq!(req.stop, ["\n"]);
    assert_eq!(req.messages[0].name.as_deref(), Some("ann"));

    let req = parse(
        json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": 9, "stop": "END"}),
    );
    let req = req.unwrap();
    assert_eq!(
        (req.n, req.max_tokens, req.stop),
        (1, Some(9), vec!["END".to_owned()])
    );
}

#[test]
fn malformed_truncated_and_empty_bodies_are_invalid_json() {
    for body in [
        &b"{"[..],
        b"",
        b"{\"model\": \"m\",",
        b"not json",
        b"\xff\xfe",
    ] {
        let err = ChatRequest::parse(body).unwrap_err();
        assert_eq!((err.status, err.param, err.code), (400, None, None));
        assert!(err.message.starts_with("We could not parse the JSON body"));
    }
}

#[test]
fn invalid_utf8_inside_a_string_is_invalid_json() {
    let err = ChatRequest::parse(b"{\"model\": \"\xc3\x28\"}").unwrap_err();
    assert_eq!(err.status, 400);
}

#[test]
fn a_non_object_body_is_rejected() {
    let err = parse(json!([1, 2])).unwrap_err();
    assert!(err.message.contains("expected an object, but got an array"));
}

#[test]
fn missing_and_mistyped_fields_name_the_param() {
    let user = json!([{"role": "user", "content": "q"}]);
    let cases = [
        (
            json!({"messages": user}),
            "model",
            "missing_required_parameter",
        ),
        (
            json!({"model": 7, "messages": user}),
            "model",
            "invalid_type",
        ),
        (
            json!({"model": "m"}),
            "messages",
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "messages": "hi"}),
            "messages",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": []}),
            "messages",
            "empty_array",
        ),
        (
            json!({"model": "m", "messages": ["hi"]}),
            "messages[0]",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot"}]}),
            "messages[0].role",
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            "messages[0].content",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [3]}]}),
            "messages[0].content[0]",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": user, "stream": "yes"}),
            "stream",
            "invalid_type",
        ),
        (
            json!({"model": "m", "messages": user, "stream_options": {}}),
            "stream_options",
            "invalid_value",
        ),
        (
            json!({"model": "m", "messages": user, "httpbun": {"content": 1}}),
            "httpbun.content",
            "invalid_type",
        ),
    ];
    for (body, param, code) in cases {
        assert_eq!(
            param_of(body.clone()),
            (400, Some(param.to_owned()), Some(code)),
            "{body}"
        );
    }
}

const CONTENT: &str = "Hello there,  friend!";

fn choices(n: usize, finish_reason: FinishReason) -> Vec<ChoiceText<'static>> {
    let choice = ChoiceText {
        content: CONTENT,
        deltas: vec!["Hello", " there", ",", "  friend", "!"],
        tool_calls: Vec::new(),
        finish_reason,
    };
    vec![choice; n]
}

/// A completion of `choices`, as every rendering test here and in `response.rs` uses.
pub(super) fn sample<'a>(choices: &'a [ChoiceText<'static>]) -> Completion<'a> {
    Completion {
        id: "chatcmpl-abc",
        created: 1_700_000_000,
        model: "gpt-4o",
        choices,
        usage: Usage {
            prompt_tokens: 9,
            completion_tokens: 5,
            cached_tokens: 0,
        },
    }
}

#[test]
fn completion_has_every_required_field() {
    let choices = choices(1, FinishReason::Stop);
    let body: Value = serde_json::from_slice(&render_completion(&sample(&choices))).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o", "service_tier": "default",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello there,  friend!",
                            "refusal": null, "annotations": []}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        })
    );
}

#[test]
fn completion_numbers_its_choices() {
    let choices = choices(3, FinishReason::Length);
    let body: Value = serde_json::from_slice(&render_completion(&sample(&choices))).unwrap();
    let indexes: Vec<_> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].clone())
        .collect();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(body["choices"][2]["finish_reason"], "length");
}

/// The JSON of every event but `[DONE]`, which must come last.
fn chunks(steps: &[Vec<u8>]) -> Vec<Value> {
    let stream = String::from_utf8(steps.concat()).unwrap();
    let events: Vec<&str> = stream.split_terminator("\n\n").collect();
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(*done, "data: [DONE]");
    chunks
        .iter()
        .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn stream_steps_carry_one_token_per_choice() {
    let choices = choices(2, FinishReason::Stop);
    let steps = render_stream(&sample(&choices), true);
    assert_eq!(steps.len(), 5);
    let count = |step: &Vec<u8>| String::from_utf8_lossy(step).matches("data: ").count();
    // Step 0: two role chunks and two tokens; then two tokens a step; the last step adds two
    // finish chunks, the usage chunk and [DONE].
    assert_eq!(steps.iter().map(count).collect::<Vec<_>>(), [4, 2, 2, 2, 6]);
}

#[test]
fn an_empty_reply_streams_in_one_step() {
    let empty = [ChoiceText {
        content: "",
        deltas: vec![],
        tool_calls: Vec::new(),
        finish_reason: FinishReason::Stop,
    }];
    let steps = render_stream(&sample(&empty), false);
    assert_eq!(steps.len(), 1);
    assert_eq!(chunks(&steps).len(), 2);
}

#[test]
fn stream_deltas_concatenate_to_the_content() {
    let choices = choices(1, FinishReason::Stop);
    let chunks = chunks(&render_stream(&sample(&choices), false));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, CONTENT);
    assert_eq!(chunks.len(), 1 + 5 + 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c["id"] == "chatcmpl-abc"
        && c["object"] == "chat.completion.chunk"
        && c.get("usage").is_none()));
}

#[test]
fn stream_interleaves_choices_and_finishes_each() {
    let choices = choices(2, FinishReason::Length);
    let chunks = chunks(&render_stream(&sample(&choices), false));
    let index = |c: &Value| c["choices"][0]["index"].as_u64().unwrap();
    assert_eq!(
        chunks.iter().map(index).collect::<Vec<_>>(),
        [0, 1].repeat(7)
    );
    for i in 0..2 {
        let text: String = chunks
            .iter()
            .filter(|c| index(c) == i)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, CONTENT);
    }
    assert_eq!(chunks[13]["choices"][0]["finish_reason"], "length");
}

#[test]
fn stream_usage_chunk_comes_last_with_no_choices() {
    let choices = choices(1, FinishReason::Stop);
    let chunks = chunks(&render_stream(&sample(&choices), true));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 14);
    assert_eq!(chunks[0]["usage"], Value::Null);
    assert!(chunks[0].get("usage").is_some());
}

#[test]
fn reads_tools_tool_choice_and_response_format() {
    let req = parse(json!({"model": "m", "messages": [{"role": "user", "content": "q"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                  {"type": "function", "function": {"name": "noop"}}],
        "tool_choice": {"type": "function", "function": {"name": "noop"}},
        "parallel_tool_calls": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}))
    .unwrap();
    assert_eq!(req.tools.len(), 2);
    assert_eq!(
        req.tools[1].parameters,
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(req.tool_choice, ToolChoice::Named("noop".into()));
    assert!(!req.parallel_tool_calls);
    assert_eq!(
        req.response_format,
        ResponseFormat::JsonSchema(json!({"type": "object"}))
    );
    let plain = parse(json!({"model": "m", "messages": [{"role": "user"}]})).unwrap();
    assert_eq!(
        (plain.tool_choice, plain.response_format),
        (ToolChoice::Auto, ResponseFormat::Text)
    );
}

#[test]
fn bad_tools_and_formats_name_the_param() {
    let user = json!([{"role": "user", "content": "q"}]);
    let tool = json!([{"type": "function", "function": {"name": "f"}}]);
    let cases = [
        (json!({"tools": [{"type": "retrieval"}]}), "tools[0].type"),
        (
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "has space"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}),
            "tools[0].function.parameters",
        ),
        (json!({"tool_choice": "auto"}), "tool_choice"),
        (
            json!({"tools": tool, "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"tools": tool, "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"response_format": {"type": "xml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": {"type": "json_schema"}}),
            "response_format.json_schema",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}),
            "response_format.json_schema.name",
        ),
    ];
    for (extra, param) in cases {
        let mut body = json!({"model": "m", "messages": user});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let err = parse(body.clone()).unwrap_err();
        assert_eq!(
            (err.status, err.param.as_deref()),
            (400, Some(param)),
            "{body}"
        );
    }
}

#[test]
fn tool_calls_render_with_null_content_and_stream_as_deltas() {
    let call = ToolCallText {
        id: "call_1".into(),
        name: "get_weather".into(),
        arguments: r#"{"city":"Paris"}"#.into(),
        cuts: vec![2, 8, 16],
    };
    let choices = [ChoiceText {
        content: "",
        deltas: vec![],
        tool_calls: vec![call],
        finish_reason: FinishReason::ToolCalls,
    }];
    assert_eq!(choices[0].steps(), 4);
    let body: Value = serde_json::from_slice(&render_completion(&sample(&choices))).unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(
        message["tool_calls"],
        json!([{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let chunks = chunks(&render_stream(&sample(&choices), false));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": null})
    );
    assert_eq!(
        chunks[1]["choices"][0]["delta"]["tool_calls"],
        json!([{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}}])
    );
    let arguments: String = chunks[2..5]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(arguments, r#"{"city":"Paris"}"#);
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "tool_calls");
}
