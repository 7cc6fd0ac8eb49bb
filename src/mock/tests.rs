//! Unit tests of `mock`, kept beside it so the module stays readable.
use super::*;
use crate::api::openai::embeddings::EmbeddingsRequest;
use crate::mock::config::{ContentMode, LatencyConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

fn request(body: &str) -> ChatRequest {
    ChatRequest::parse(body.as_bytes()).unwrap()
}

fn answer(config: &MockConfig, body: &str) -> Value {
    let reply = chat_completion(
        config,
        Tokenizer::Exact,
        &instant(),
        &request(body),
        no_headers,
    )
    .unwrap();
    assert_eq!(reply.shape, ReplyShape::Whole);
    assert!(reply.offsets.is_empty());
    serde_json::from_slice(&reply.steps.concat()).unwrap()
}

const HELLO: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

#[test]
fn echo_returns_the_last_user_message_and_the_model() {
    let body = answer(&MockConfig::default(), HELLO);
    assert_eq!(body["choices"][0]["message"]["content"], "hello");
    assert_eq!(body["model"], "gpt-4o-mini");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );
}

#[test]
fn fixed_text_and_the_httpbun_override() {
    let fixed = MockConfig {
        content: ContentMode::Fixed {
            text: "configured".into(),
        },
        ..MockConfig::default()
    };
    assert_eq!(
        answer(&fixed, HELLO)["choices"][0]["message"]["content"],
        "configured"
    );
    let overridden = r#"{"model":"m","messages":[{"role":"user","content":"q"}],
                         "httpbun":{"content":"from request"}}"#;
    assert_eq!(
        answer(&fixed, overridden)["choices"][0]["message"]["content"],
        "from request"
    );
}

fn choice_of(body: &Value, i: usize) -> (&str, &str) {
    let choice = &body["choices"][i];
    (
        choice["message"]["content"].as_str().unwrap(),
        choice["finish_reason"].as_str().unwrap(),
    )
}

#[test]
fn max_tokens_cuts_at_a_token_boundary_with_length() {
    let body = answer(
        &MockConfig::default(),
        r#"{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"one two three four"}]}"#,
    );
    assert_eq!(choice_of(&body, 0), ("one two", "length"));
    assert_eq!(body["usage"]["completion_tokens"], 2);

    let exact = r#"{"model":"gpt-4o","max_tokens":4,"messages":[{"role":"user","content":"one two three four"}]}"#;
    assert_eq!(
        choice_of(&answer(&MockConfig::default(), exact), 0),
        ("one two three four", "stop")
    );
}

#[test]
fn stop_ends_the_reply_before_the_sequence() {
    let body = answer(
        &MockConfig::default(),
        r#"{"model":"gpt-4o","stop":["END","three"],"messages":[{"role":"user","content":"one two three END"}]}"#,
    );
    assert_eq!(choice_of(&body, 0), ("one two ", "stop"));
    // "one", " two", " "
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[test]
fn n_choices_are_all_counted() {
    let body = answer(
        &MockConfig::default(),
        r#"{"model":"gpt-4o","n":3,"messages":[{"role":"user","content":"hello world"}]}"#,
    );
    assert_eq!(body["choices"].as_array().unwrap().len(), 3);
    assert_eq!(choice_of(&body, 2), ("hello world", "stop"));
    assert_eq!(body["usage"]["completion_tokens"], 6);
}

#[test]
fn usage_counts_exact_tokens() {
    let body = answer(&MockConfig::default(), HELLO);
    // "hello": 1 token; prompt: 3 + 3 + "user" (1) + "hello" (1).
    assert_eq!(body["usage"]["completion_tokens"], 1);
    assert_eq!(body["usage"]["prompt_tokens"], 8);
}

#[test]
fn a_prompt_over_the_context_window_is_openais_400() {
    let small = config(r#"{"mock": {"context_windows": {"gpt-4o": 10}}}"#);
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two three four five"}]}"#;
    let request = request(body);
    let err =
        chat_completion(&small, Tokenizer::Exact, &instant(), &request, no_headers).unwrap_err();
    assert_eq!(
        (err.status, err.code),
        (400, Some("context_length_exceeded"))
    );
    assert_eq!(err.param.as_deref(), Some("messages"));
    assert!(err.message.contains("maximum context length is 10 tokens"));
    assert!(
        err.message.contains("resulted in 12 tokens"),
        "{}",
        err.message
    );

    let fits = config(r#"{"mock": {"context_windows": {"*": 12}}}"#);
    assert!(chat_completion(&fits, Tokenizer::Exact, &instant(), &request, no_headers).is_ok());
    let with_completion = r#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"one two three four five"}]}"#;
    let err = chat_completion(
        &fits,
        Tokenizer::Exact,
        &instant(),
        &self::request(with_completion),
        no_headers,
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("you requested 17 tokens (12 in the messages, 5 in the completion)"),
        "{}",
        err.message
    );
}

fn embed(body: &str) -> Value {
    let request = EmbeddingsRequest::parse(body.as_bytes()).unwrap();
    serde_json::from_slice(&embeddings(Tokenizer::Exact, &request).steps.concat()).unwrap()
}

fn vector(body: &Value, i: usize) -> Vec<f64> {
    body["data"][i]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn embeddings_are_deterministic_unit_vectors() {
    let body = embed(r#"{"model":"text-embedding-3-small","input":["hello","hello","bye"]}"#);
    let (a, b, c) = (vector(&body, 0), vector(&body, 1), vector(&body, 2));
    assert_eq!(a.len(), 1536);
    assert_eq!(a, b);
    assert_ne!(a, c);
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 3);
    let again = embed(r#"{"model":"text-embedding-3-small","input":"hello"}"#);
    assert_eq!(vector(&again, 0), a);
}

#[test]
fn embedding_sizes_follow_the_model_and_dimensions() {
    let large = embed(r#"{"model":"text-embedding-3-large","input":"x"}"#);
    assert_eq!(vector(&large, 0).len(), 3072);
    let small = embed(r#"{"model":"m","input":[[1,2,3]],"dimensions":8}"#);
    assert_eq!(vector(&small, 0).len(), 8);
    assert_eq!(small["usage"]["prompt_tokens"], 3);
}

fn complete(config: &MockConfig, body: &str) -> Value {
    let request = CompletionRequest::parse(body.as_bytes()).unwrap();
    let reply = text_completion(config, Tokenizer::Exact, &instant(), &request, no_headers);
    serde_json::from_slice(&reply.unwrap().steps.concat()).unwrap()
}

#[test]
fn legacy_completions_echo_the_prompt_up_to_16_tokens_by_default() {
    let long = "one two three four five six seven eight nine ten eleven twelve thirteen \
                fourteen fifteen sixteen seventeen";
    let body = complete(
        &MockConfig::default(),
        &format!(r#"{{"model":"gpt-4o","prompt":"{long}"}}"#),
    );
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 16);
    assert!(long.starts_with(choice["text"].as_str().unwrap()));
}

#[test]
fn legacy_completions_take_token_prompts_echo_and_several_prompts() {
    let ids = tiktoken_rs::o200k_base_singleton().encode_ordinary("hello world");
    let body = format!(r#"{{"model":"gpt-4o","prompt":[{ids:?},"bye"],"n":2,"echo":true}}"#);
    let body = complete(&MockConfig::default(), &body);
    let texts: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "hello worldhello world",
            "hello worldhello world",
            "byebye",
            "byebye"
        ]
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["choices"][3]["index"], 3);
}

const TOOLS: &str = r#""tools": [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
        "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}]"#;

fn chat(body: &str) -> Value {
    answer(&MockConfig::default(), body)
}

fn called(body: &Value) -> Vec<String> {
    body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| c["function"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn tools_are_called_with_arguments_from_their_schema() {
    let body = chat(&format!(
        r#"{{"model":"gpt-4o",{TOOLS},"messages":[{{"role":"user","content":"weather in Paris?"}}]}}"#
    ));
    assert_eq!(called(&body), ["get_weather"]);
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string());
    assert!(["c", "f"].contains(&arguments["unit"].as_str().unwrap()));
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn tool_selection_follows_mentions_parallelism_and_tool_choice() {
    let ask = |extra: &str, text: &str| {
        chat(&format!(
            r#"{{"model":"gpt-4o",{TOOLS}{extra},"messages":[{{"role":"user","content":"{text}"}}]}}"#
        ))
    };
    assert_eq!(
        called(&ask("", "get weather and get time")),
        ["get_weather", "get_time"]
    );
    assert_eq!(
        called(&ask(
            r#","parallel_tool_calls":false"#,
            "get weather and get time"
        )),
        ["get_weather"]
    );
    assert_eq!(called(&ask("", "hello")), ["get_weather"]);
    let named = r#","tool_choice":{"type":"function","function":{"name":"get_time"}}"#;
    assert_eq!(called(&ask(named, "weather?")), ["get_time"]);
    let none = ask(r#","tool_choice":"none""#, "weather?");
    assert!(called(&none).is_empty());
    assert_eq!(none["choices"][0]["message"]["content"], "weather?");
}

#[test]
fn after_a_tool_result_the_reply_is_text() {
    let body = chat(&format!(
        r#"{{"model":"gpt-4o",{TOOLS},"messages":[
            {{"role":"user","content":"weather?"}},
            {{"role":"assistant","tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},
            {{"role":"tool","tool_call_id":"call_1","content":"sunny"}}]}}"#
    ));
    assert!(called(&body).is_empty());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

/// A chat conversation whose assistant turn called `get_weather` and whose last message is
/// that call's result, with `extra` fields.
fn after_weather(tools: &str, extra: &str) -> Value {
    chat(&format!(
        r#"{{"model":"gpt-4o",{tools}{extra},"messages":[
            {{"role":"user","content":"weather?"}},
            {{"role":"assistant","tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},
            {{"role":"tool","tool_call_id":"call_1","content":"sunny"}}]}}"#
    ))
}

#[test]
fn forced_tool_choices_bind_after_a_tool_result() {
    // Required: the first tool not yet called.
    let body = after_weather(TOOLS, r#","tool_choice":"required""#);
    assert_eq!(called(&body), ["get_time"]);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    // Named: always that tool, called before or not.
    let named = r#","tool_choice":{"type":"function","function":{"name":"get_weather"}}"#;
    assert_eq!(called(&after_weather(TOOLS, named)), ["get_weather"]);
    // None never calls; auto answers a tool's result in words.
    assert!(called(&after_weather(TOOLS, r#","tool_choice":"none""#)).is_empty());
    assert!(called(&after_weather(TOOLS, "")).is_empty());
    // Every tool called already: the first.
    let one = r#""tools":[{"type":"function","function":{"name":"get_weather"}}]"#;
    assert_eq!(
        called(&after_weather(one, r#","tool_choice":"required""#)),
        ["get_weather"]
    );
}

#[test]
fn a_forced_call_after_a_tool_result_ends_the_task_with_a_final_tool() {
    // pydantic-ai's loop: its tools, then `final_result`, required at every step.
    let tools = r#""tools":[
        {"type":"function","function":{"name":"get_weather"}},
        {"type":"function","function":{"name":"get_time"}},
        {"type":"function","function":{"name":"final_result","parameters":{"type":"object",
            "properties":{"city":{"type":"string"}},"required":["city"]}}}]"#;
    let body = after_weather(tools, r#","tool_choice":"required""#);
    assert_eq!(called(&body), ["final_result"]);
    let arguments = body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    let arguments: Value = serde_json::from_str(arguments).unwrap();
    assert!(arguments["city"].is_string());
    // Before any tool result the forced call is the one the prompt asks for.
    let first = chat(&format!(
        r#"{{"model":"gpt-4o",{tools},"tool_choice":"required","messages":[{{"role":"user","content":"weather?"}}]}}"#
    ));
    assert_eq!(called(&first), ["get_weather"]);
}

#[test]
fn final_tools_are_named_by_their_first_word() {
    for name in [
        "final_result",
        "final_result_Weather",
        "final_answer",
        "FinalAnswer",
        "finalResult",
        "FINAL_ANSWER",
        "submit",
        "submit-report",
        "respond_to_user",
        "answer",
        "finish",
        "done",
    ] {
        assert!(tools::is_final(name), "{name}");
    }
    for name in [
        "get_final_score",
        "finalize_order",
        "submitted_forms",
        "responder",
        "get_weather",
        "",
    ] {
        assert!(!tools::is_final(name), "{name}");
    }
}

#[test]
fn responses_force_calls_after_a_tool_result_too() {
    let timing = instant();
    let responses = ResponsesRequest::parse(
        br#"{"model":"gpt-4o","tool_choice":"required","tools":[
            {"type":"function","name":"lookup"},{"type":"function","name":"final_answer"}],
            "input":[{"role":"user","content":"look it up"},
                     {"type":"function_call","call_id":"c1","name":"lookup","arguments":"{}"},
                     {"type":"function_call_output","call_id":"c1","output":"42"}]}"#,
    )
    .unwrap();
    assert_eq!(responses.chat.called_tools, ["lookup"]);
    let reply = response(
        &MockConfig::default(),
        Tokenizer::Exact,
        &timing,
        &responses,
        no_headers,
    )
    .unwrap();
    let body: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
    assert_eq!(body["output"][0]["type"], "function_call");
    assert_eq!(body["output"][0]["name"], "final_answer");
}

#[test]
fn anthropic_any_and_tool_force_calls_after_a_tool_result() {
    let messages = |choice: &str| {
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":100,"tool_choice":{choice},
            "tools":[{{"name":"search","input_schema":{{"type":"object"}}}},
                     {{"name":"fetch","input_schema":{{"type":"object"}}}}],
            "messages":[{{"role":"user","content":"find it"}},
              {{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_1","name":"search","input":{{}}}}]}},
              {{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_1","content":"found"}}]}}]}}"#
        );
        let body = claude(&MockConfig::default(), &body);
        (
            body["stop_reason"].clone(),
            body["content"][0]["name"].clone(),
        )
    };
    assert_eq!(
        messages(r#"{"type":"any"}"#),
        (Value::from("tool_use"), Value::from("fetch"))
    );
    assert_eq!(
        messages(r#"{"type":"tool","name":"search"}"#),
        (Value::from("tool_use"), Value::from("search"))
    );
    assert_eq!(
        messages(r#"{"type":"auto"}"#),
        (Value::from("end_turn"), Value::Null)
    );
}

/// The Anthropic `message` the mock answers to `body`.
fn claude(config: &MockConfig, body: &str) -> Value {
    let request = MessagesRequest::parse(body.as_bytes()).unwrap();
    let reply =
        anthropic_message(config, Tokenizer::Exact, &instant(), &request, no_headers).unwrap();
    serde_json::from_slice(&reply.steps.concat()).unwrap()
}

#[test]
fn anthropic_structured_output_is_a_schema_valid_text_block() {
    let schema = r#"{"type":"object","properties":{"name":{"type":"string"},
        "age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],
        "additionalProperties":false}"#;
    for format in [
        format!(r#""output_config":{{"format":{{"type":"json_schema","schema":{schema}}}}}"#),
        format!(r#""output_format":{{"type":"json_schema","schema":{schema}}}"#),
    ] {
        let body = claude(
            &MockConfig::default(),
            &format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":1000,{format},
                "messages":[{{"role":"user","content":"who?"}}]}}"#
            ),
        );
        assert_eq!(body["stop_reason"], "end_turn");
        let text = body["content"][0]["text"].as_str().unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert!(value["name"].is_string(), "{text}");
        assert!(
            (0..=120).contains(&value["age"].as_i64().unwrap()),
            "{text}"
        );
    }
}

#[test]
fn anthropic_stop_sequences_cut_the_reply_and_are_named() {
    let ask = |stops: &str, max_tokens: u32| {
        claude(
            &MockConfig::default(),
            &format!(
                r#"{{"model":"claude-sonnet-4-5","max_tokens":{max_tokens},"stop_sequences":{stops},
                "messages":[{{"role":"user","content":"one two three END four"}}]}}"#
            ),
        )
    };
    let body = ask(r#"["END","three"]"#, 100);
    assert_eq!(body["content"][0]["text"], "one two ");
    assert_eq!(
        (&body["stop_reason"], &body["stop_sequence"]),
        (&Value::from("stop_sequence"), &Value::from("three"))
    );
    let unmatched = ask(r#"["never"]"#, 100);
    assert_eq!(
        (&unmatched["stop_reason"], &unmatched["stop_sequence"]),
        (&Value::from("end_turn"), &Value::Null)
    );
    // max_tokens cuts first: the sequence is never reached.
    let short = ask(r#"["END"]"#, 1);
    assert_eq!(
        (&short["stop_reason"], &short["stop_sequence"]),
        (&Value::from("max_tokens"), &Value::Null)
    );
}

#[test]
fn an_anthropic_prompt_over_the_window_gets_anthropics_wording() {
    let small = config(r#"{"mock": {"context_windows": {"*": 10}}}"#);
    let ask = |max_tokens: u32, text: &str| {
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":{max_tokens},
            "messages":[{{"role":"user","content":"{text}"}}]}}"#
        );
        let request = MessagesRequest::parse(body.as_bytes()).unwrap();
        anthropic_message(&small, Tokenizer::Exact, &instant(), &request, no_headers)
            .unwrap_err()
            .message
    };
    let long = "one two three four five six seven eight nine ten eleven";
    assert!(
        ask(1, long).starts_with("prompt is too long: "),
        "{}",
        ask(1, long)
    );
    assert!(ask(1, long).ends_with(" tokens > 10 maximum"));
    let message = ask(9, "hi");
    assert!(
        message.starts_with("input length and `max_tokens` exceed context limit: "),
        "{message}"
    );
    assert!(message.contains(" + 9 > 10,"), "{message}");
}

#[test]
fn structured_output_follows_the_response_format() {
    let object = chat(
        r#"{"model":"gpt-4o","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let content: Value =
        serde_json::from_str(object["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, serde_json::json!({"response": "hi"}));

    let schema = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}"#;
    let body = chat(&format!(
        r#"{{"model":"gpt-4o","seed":1,"response_format":{{"type":"json_schema","json_schema":{{"name":"person","strict":true,"schema":{schema}}}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    ));
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content["name"].is_string());
    assert!((0..=120).contains(&content["age"].as_i64().unwrap()));
}

#[test]
fn ids_are_fresh_and_hex() {
    let a = answer(&MockConfig::default(), HELLO)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = answer(&MockConfig::default(), HELLO)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(a, b);
    let hex = a.strip_prefix("chatcmpl-").unwrap();
    assert_eq!(hex.len(), 32);
    assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn streams_when_asked() {
    let reply = chat_completion(
        &MockConfig::default(),
        Tokenizer::Exact,
        &instant(),
        &request(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#),
        no_headers,
    )
    .unwrap();
    assert_eq!(reply.shape, ReplyShape::Stream);
    assert_eq!(reply.shape.content_type(), "text/event-stream");
    assert!(reply.steps.concat().ends_with(b"data: [DONE]\n\n"));
}

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

fn config(json: &str) -> MockConfig {
    crate::config::FilterConfig::from_json(json.as_bytes())
        .unwrap()
        .mock
}

fn content_with(config: &MockConfig, body: &str, headers: &[(&str, &'static str)]) -> Vec<String> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes())
    };
    let reply =
        chat_completion(config, Tokenizer::Exact, &instant(), &request(body), header).unwrap();
    let body: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
    body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_first_matching_rule_answers() {
    let rules = config(
        r#"{"mock": {"rules": [
            {"when": {"model": "gpt-4o", "user_message_regex": "(?i)weather"}, "reply": "Sunny."},
            {"when": {"header": {"name": "x-tenant", "value": "acme"}}, "reply": "Hello, Acme."}
        ]}}"#,
    );
    let weather =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What's the Weather?"}]}"#;
    assert_eq!(content_with(&rules, weather, &[]), ["Sunny."]);
    let other_model = weather.replace("gpt-4o", "gpt-5");
    assert_eq!(
        content_with(&rules, &other_model, &[]),
        ["What's the Weather?"]
    );
    assert_eq!(
        content_with(&rules, &other_model, &[("x-tenant", "acme")]),
        ["Hello, Acme."]
    );
    assert_eq!(
        content_with(&rules, &other_model, &[("x-tenant", "other")]),
        ["What's the Weather?"]
    );
}

#[test]
fn lorem_fills_to_max_tokens_and_repeats_with_a_seed() {
    let lorem = config(r#"{"mock": {"content": {"mode": "lorem"}}}"#);
    let body = r#"{"model":"gpt-4o","max_tokens":30,"seed":5,"n":2,"messages":[{"role":"user","content":"q"}]}"#;
    let reply = chat_completion(
        &lorem,
        Tokenizer::Exact,
        &instant(),
        &request(body),
        no_headers,
    )
    .unwrap();
    let json: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
    assert_eq!(json["usage"]["completion_tokens"], 60);
    assert_eq!(json["choices"][0]["finish_reason"], "length");
    let texts = content_with(&lorem, body, &[]);
    assert_ne!(texts[0], texts[1], "choices differ");
    assert_eq!(
        texts,
        content_with(&lorem, body, &[]),
        "the seed repeats them"
    );
}

#[test]
fn lorem_without_max_tokens_ends_a_sentence_within_the_range() {
    let lorem =
        config(r#"{"mock": {"content": {"mode": "lorem", "min_tokens": 10, "max_tokens": 40}}}"#);
    for seed in 0..20 {
        let body = format!(
            r#"{{"model":"gpt-4o","seed":{seed},"messages":[{{"role":"user","content":"q"}}]}}"#
        );
        let reply = chat_completion(
            &lorem,
            Tokenizer::Exact,
            &instant(),
            &request(&body),
            no_headers,
        )
        .unwrap();
        let json: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
        let tokens = json["usage"]["completion_tokens"].as_u64().unwrap();
        assert!((5..=41).contains(&tokens), "{tokens}");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert!(
            json["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .ends_with('.')
        );
    }
}

fn instant() -> Timing {
    Timing::from_config(&LatencyConfig::default())
}

fn paced(jitter: f64, seed: Option<u64>) -> Timing {
    Timing::from_config(&LatencyConfig {
        time_to_first_token_ms: 100,
        inter_token_ms: 10,
        jitter,
        seed,
    })
}

#[test]
fn offsets_follow_ttft_then_inter_token_gaps() {
    let ms = Duration::from_millis;
    assert_eq!(paced(0.0, None).offsets(3), [ms(100), ms(110), ms(120)]);
    assert!(paced(0.0, None).offsets(0).is_empty());
    assert!(instant().is_instant() && !paced(0.0, None).is_instant());
}

#[test]
fn seeded_jitter_repeats_and_stays_in_bounds() {
    let a = paced(0.5, Some(42)).offsets(50);
    assert_eq!(a, paced(0.5, Some(42)).offsets(50));
    assert_ne!(a, paced(0.5, Some(43)).offsets(50));
    assert!((50..=150).contains(&a[0].as_millis()));
    for gap in a.windows(2).map(|w| w[1] - w[0]) {
        assert!((5..=15).contains(&gap.as_millis()), "{gap:?}");
    }
}

#[test]
fn paced_stream_has_one_offset_per_step_and_a_whole_reply_one() {
    let paced_reply = |body: &str| {
        chat_completion(
            &MockConfig::default(),
            Tokenizer::Exact,
            &paced(0.0, None),
            &request(body),
            no_headers,
        )
        .unwrap()
    };
    let reply = paced_reply(
        r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#,
    );
    assert_eq!((reply.steps.len(), reply.offsets.len()), (3, 3));

    let reply =
        paced_reply(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two three"}]}"#);
    assert_eq!(reply.steps.len(), 1);
    assert_eq!(reply.offsets, [Duration::from_millis(120)]);
}

/// A random text with what JSON escapes (quotes, backslashes, control bytes) and
/// multi-byte characters.
fn random_text(rng: &mut StdRng, len: usize) -> String {
    const PARTS: [&str; 12] = [
        "word", " ", "\"", "\\", "\n", "\u{1}", "é", "漢字", "🙂", "12345", ", ", "lorem ",
    ];
    (0..len)
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

/// A random chat-shaped request body for `wire`: every amplifier (n, echo, max_tokens,
/// stream, tools, schemas) drawn at random.
fn random_body(rng: &mut StdRng, wire: Wire) -> serde_json::Value {
    use serde_json::json;
    let len = rng.random_range(0..200);
    let prompt = random_text(rng, len);
    let len = rng.random_range(1..6);
    let model = random_text(rng, len);
    // Seeded, so that lorem repeats its text between calls.
    let mut body = json!({"model": model, "stream": rng.random_bool(0.5), "seed": 7});
    let n = rng.random_range(1..=4u32);
    let max_tokens = rng.random_range(1..300u32);
    let schema = json!({"type": "object", "properties": {
        "a": {"type": "string", "minLength": rng.random_range(0..2000)},
        "b": {"type": "array", "items": {"type": "number"}, "minItems": rng.random_range(0..50)},
        "c": {"enum": ["x\"y", "z\n"]}}, "required": ["a", "b", "c"]});
    let tools = json!([{"type": "function", "function": {"name": "get_x", "parameters": schema}},
                       {"type": "function", "function": {"name": "get_y"}}]);
    match wire {
        Wire::Chat => {
            body["messages"] = json!([{"role": "user", "content": prompt}]);
            body["n"] = json!(n);
            if rng.random_bool(0.5) {
                body["max_tokens"] = json!(max_tokens);
            }
            if rng.random_bool(0.3) {
                body["stop"] = json!(["o"]);
            }
            match rng.random_range(0..4) {
                0 => body["tools"] = tools,
                1 => body["response_format"] = json!({"type": "json_object"}),
                2 => {
                    body["response_format"] = json!({"type": "json_schema",
                        "json_schema": {"name": "s", "schema": schema}})
                }
                _ => {}
            }
            if rng.random_bool(0.5) {
                body["stream_options"] = json!({"include_usage": true});
                body["stream"] = json!(true);
            }
        }
        Wire::Completions => {
            body["prompt"] = json!([prompt, random_text(rng, 20)]);
            body["n"] = json!(n);
            body["max_tokens"] = json!(max_tokens);
            body["echo"] = json!(rng.random_bool(0.5));
        }
        Wire::Responses => {
            body["input"] = json!(prompt);
            body["instructions"] = json!(random_text(rng, 30));
            body["max_output_tokens"] = json!(max_tokens);
            match rng.random_range(0..3) {
                0 => {
                    body["tools"] = json!([{"type": "function", "name": "get_x",
                                            "parameters": schema}])
                }
                1 => {
                    body["text"] = json!({"format": {"type": "json_schema", "name": "s",
                                                     "schema": schema}})
                }
                _ => {}
            }
        }
        Wire::Messages => {
            body["messages"] = json!([{"role": "user", "content": prompt}]);
            body["max_tokens"] = json!(max_tokens);
            match rng.random_range(0..3) {
                0 => body["tools"] = json!([{"name": "get_x", "input_schema": schema}]),
                1 => {
                    body["output_config"] = json!({"format": {"type": "json_schema",
                                                              "schema": schema}})
                }
                _ => {}
            }
            if rng.random_bool(0.3) {
                // A long stop sequence, which the reply names when it ends there.
                let len = rng.random_range(1..3000);
                body["stop_sequences"] = json!(["o", random_text(rng, len)]);
            }
        }
    }
    body
}

fn reply_to(config: &MockConfig, wire: Wire, body: &[u8]) -> Result<MockReply, ApiError> {
    let timing = instant();
    match wire {
        Wire::Chat => chat_completion(
            config,
            Tokenizer::Exact,
            &timing,
            &ChatRequest::parse(body).unwrap(),
            no_headers,
        ),
        Wire::Completions => text_completion(
            config,
            Tokenizer::Exact,
            &timing,
            &CompletionRequest::parse(body).unwrap(),
            no_headers,
        ),
        // These APIs take no seed; one is set so that generated text repeats between calls.
        Wire::Responses => {
            let mut request = ResponsesRequest::parse(body).unwrap();
            request.chat.seed = Some(7);
            response(config, Tokenizer::Exact, &timing, &request, no_headers)
        }
        Wire::Messages => {
            let mut request = MessagesRequest::parse(body).unwrap();
            request.chat.seed = Some(7);
            anthropic_message(config, Tokenizer::Exact, &timing, &request, no_headers)
        }
    }
}

fn reply_bytes(reply: &MockReply) -> u64 {
    reply.steps.iter().map(|step| step.len() as u64).sum()
}

#[test]
fn the_reply_size_estimate_bounds_every_reply_and_the_ceiling_refuses_beyond_it() {
    let mut rng = StdRng::seed_from_u64(19);
    let contents = [
        ContentMode::Echo {},
        ContentMode::Fixed {
            text: "fixed \"text\"\n".repeat(20),
        },
        ContentMode::Lorem {
            min_tokens: 1,
            max_tokens: 200,
        },
    ];
    for case in 0..400 {
        let wire = [
            Wire::Chat,
            Wire::Completions,
            Wire::Responses,
            Wire::Messages,
        ][case % 4];
        let body = random_body(&mut rng, wire).to_string();
        let mut config = MockConfig {
            content: contents[rng.random_range(0..contents.len())].clone(),
            max_reply_bytes: u64::MAX,
            ..MockConfig::default()
        };
        let size = reply_bytes(&reply_to(&config, wire, body.as_bytes()).unwrap());
        // Refused just below the reply's size: the estimate is at least the real size.
        config.max_reply_bytes = size - 1;
        match reply_to(&config, wire, body.as_bytes()) {
            Err(err) => assert_eq!((err.status, err.code), (400, Some("reply_too_large"))),
            Ok(_) => panic!("a {size}-byte reply was estimated smaller: {wire:?} {body}"),
        }
        // Under any ceiling, a reply is either refused or within it.
        config.max_reply_bytes = rng.random_range(size / 4..=size * 4);
        if let Ok(reply) = reply_to(&config, wire, body.as_bytes()) {
            assert!(reply_bytes(&reply) <= config.max_reply_bytes, "{body}");
        }
    }
}

#[test]
fn a_streamed_128_choice_echo_is_refused_naming_n_and_one_choice_is_served() {
    let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(32 * 1024 / 45);
    let body = |n: u32| {
        serde_json::json!({"model": "gpt-4o", "stream": true, "n": n,
                           "messages": [{"role": "user", "content": prompt}]})
        .to_string()
    };
    let config = MockConfig::default();
    let err = reply_to(&config, Wire::Chat, body(128).as_bytes()).unwrap_err();
    assert_eq!((err.status, err.param.as_deref()), (400, Some("n")));
    assert!(
        err.message.contains("limit of 16777216 bytes"),
        "{}",
        err.message
    );
    let reply = reply_to(&config, Wire::Chat, body(1).as_bytes()).unwrap();
    assert!(reply_bytes(&reply) < config.max_reply_bytes);
    // The estimate is not far above the real size: a few choices still fit.
    assert!(reply_to(&config, Wire::Chat, body(4).as_bytes()).is_ok());
}

#[test]
fn huge_lorem_max_tokens_and_many_tools_are_refused_before_generating() {
    let lorem = MockConfig {
        content: ContentMode::Lorem {
            min_tokens: 1,
            max_tokens: 10,
        },
        ..MockConfig::default()
    };
    let body =
        r#"{"model":"m","max_tokens":4294967295,"messages":[{"role":"user","content":"q"}]}"#;
    let err = reply_to(&lorem, Wire::Chat, body.as_bytes()).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("max_tokens"));
    let err = reply_to(&lorem, Wire::Messages, body.as_bytes()).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("max_tokens"));

    let names: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let tools: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                r#"{{"type":"function","function":{{"name":"{name}","parameters":{{"type":"string","minLength":100000}}}}}}"#
            )
        })
        .collect();
    let body = format!(
        r#"{{"model":"m","tools":[{}],"messages":[{{"role":"user","content":"{}"}}]}}"#,
        tools.join(","),
        names.join(" ")
    );
    let err = reply_to(&MockConfig::default(), Wire::Chat, body.as_bytes()).unwrap_err();
    assert_eq!(err.param.as_deref(), Some("tools"));
}

#[test]
fn embeddings_over_the_ceiling_are_refused_naming_input_or_dimensions() {
    let config = MockConfig::default();
    let inputs = vec!["\"x\""; 2048].join(",");
    let many = format!(r#"{{"model":"text-embedding-3-large","input":[{inputs}]}}"#);
    let request = EmbeddingsRequest::parse(many.as_bytes()).unwrap();
    assert_eq!(
        check_embeddings(&config, &request)
            .unwrap_err()
            .param
            .as_deref(),
        Some("input")
    );
    let one = EmbeddingsRequest::parse(br#"{"model":"m","input":"x","dimensions":8}"#).unwrap();
    assert!(check_embeddings(&config, &one).is_ok());
    let mut rng = StdRng::seed_from_u64(6);
    for _ in 0..50 {
        let inputs = rng.random_range(1..20);
        let dimensions = rng.random_range(1..=3072);
        let body = format!(
            r#"{{"model":"m","input":{:?},"dimensions":{dimensions},"encoding_format":"{}"}}"#,
            vec!["x"; inputs],
            ["float", "base64"][rng.random_range(0..2)]
        );
        let request = EmbeddingsRequest::parse(body.as_bytes()).unwrap();
        let size = reply_bytes(&embeddings(Tokenizer::Exact, &request));
        let tight = MockConfig {
            max_reply_bytes: size - 1,
            ..MockConfig::default()
        };
        assert!(check_embeddings(&tight, &request).is_err(), "{body}");
    }
}

#[test]
fn lorem_words_fit_their_byte_bound() {
    let mut rng = StdRng::seed_from_u64(3);
    for words in [1, 2, 7, 100, 1000] {
        let text = lorem::filler(&mut rng, words);
        assert!(
            text.len() as u64 <= words as u64 * LOREM_WORD_BYTES,
            "{words}"
        );
    }
}
