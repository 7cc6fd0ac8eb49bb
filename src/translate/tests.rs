//! The translations, direction by direction: requests up, replies and streams down, and the
//! properties a round trip keeps (text, tool names and ids, arguments as JSON values, usage).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use super::*;
use crate::api::sse::EventReader;

/// The one translation `config` gives.
fn translation(config: Value) -> std::sync::Arc<Translation> {
    TranslateConfig::parse(&json!([config]))
        .unwrap()
        .translations
        .remove(0)
}

fn chat_to_messages() -> std::sync::Arc<Translation> {
    translation(json!({
        "client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
        "headers": {"anthropic-version": "2023-06-01"}, "default_max_tokens": 1000,
    }))
}

/// What `translation`'s stream translator makes of `bytes` fed in chunks of random sizes.
fn read_in_random_chunks(translation: &Translation, bytes: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut translator = translation.stream(1, true, &Default::default());
    let mut reader = EventReader::default();
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rng.random_range(1..=rest.len().min(17)));
        out.extend(translator.read(&mut reader, chunk, tail.is_empty()));
        rest = tail;
    }
    out
}

fn object(value: Value) -> Map<String, Value> {
    let Value::Object(fields) = value else {
        panic!("an object")
    };
    fields
}

fn up(request: Value) -> Result<Upstream, Refused> {
    chat_to_messages().request(object(request))
}

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let sent = up(json!({
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":[1,2]}"}},
                {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "a hat"}]},
            {"role": "user", "content": "So?"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.",
                   "parameters": {"type": "object", "properties": {"at": {"type": "array"}}}, "strict": true}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "stop": "END",
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "user": "u-1",
        "stream": true,
        "stream_options": {"include_usage": true},
    }))
    .unwrap();
    assert!(sent.stream && sent.include_usage);
    assert_eq!(
        Value::Object(sent.body),
        json!({
            "model": "claude-sonnet-4-6",
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "look", "input": {"at": [1, 2]}},
                    {"type": "tool_use", "id": "call_2", "name": "look", "input": {}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "a cat"}]},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "a hat"}]},
                    {"type": "text", "text": "So?"},
                ]},
            ],
            "max_tokens": 1000,
            "stop_sequences": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "tools": [{"name": "look", "description": "Looks.",
                       "input_schema": {"type": "object", "properties": {"at": {"type": "array"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stream": true,
            "metadata": {"user_id": "u-1"},
        })
    );
    let mut dropped = sent.dropped;
    let mut counted: Vec<_> = dropped.drain().collect();
    counted.sort_unstable();
    assert_eq!(counted, [("seed", 1), ("strict", 1)]);
}

#[test]
fn max_tokens_comes_from_the_client_or_the_default() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(up(base.clone()).unwrap().body["max_tokens"], 1000);
    let mut given = base.clone();
    given["max_tokens"] = json!(5);
    assert_eq!(up(given.clone()).unwrap().body["max_tokens"], 5);
    given["max_completion_tokens"] = json!(9);
    assert_eq!(up(given).unwrap().body["max_tokens"], 9);
}

#[test]
fn tool_choices_map_and_unknown_fields_are_counted_as_other() {
    let with = |choice: Value| {
        let request = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                             "tool_choice": choice, "an_extension": 1, "another": 2});
        up(request).unwrap()
    };
    assert_eq!(
        with(json!("auto")).body["tool_choice"],
        json!({"type": "auto"})
    );
    assert_eq!(
        with(json!("none")).body["tool_choice"],
        json!({"type": "none"})
    );
    let named = with(json!({"type": "function", "function": {"name": "f"}}));
    assert_eq!(
        named.body["tool_choice"],
        json!({"type": "tool", "name": "f"})
    );
    let mut dropped = named.dropped;
    assert_eq!(dropped.drain().collect::<Vec<_>>(), [("other", 2)]);
}

#[test]
fn a_json_schema_response_format_becomes_anthropics_structured_output() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let sent = up(json!({
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "strict": true, "schema": schema}},
    }))
    .unwrap();
    assert_eq!(
        sent.body["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema}})
    );
    let mut dropped = sent.dropped;
    let mut counted: Vec<_> = dropped.drain().collect();
    counted.sort_unstable();
    assert_eq!(counted, [("name", 1), ("strict", 1)]);
    let text = up(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "response_format": {"type": "text"}}),
    )
    .unwrap();
    assert!(!text.body.contains_key("output_config"));
}

#[test]
fn anthropics_structured_output_becomes_a_json_schema_response_format() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
    let expected = json!({"type": "json_schema",
                          "json_schema": {"name": "response", "schema": schema}});
    let base =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for (key, value) in [
        (
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}, "effort": "low"}),
        ),
        (
            "output_format",
            json!({"type": "json_schema", "schema": schema}),
        ),
    ] {
        let mut request = base.clone();
        request[key] = value;
        let sent = up_to_chat(request).unwrap();
        assert_eq!(sent.body["response_format"], expected, "{key}");
        assert!(!sent.body.contains_key(key));
    }
    let mut request = base.clone();
    request["output_config"] = json!({"effort": "low"});
    let sent = up_to_chat(request).unwrap();
    assert!(!sent.body.contains_key("response_format"));
    let mut dropped = sent.dropped;
    assert_eq!(dropped.drain().collect::<Vec<_>>(), [("effort", 1)]);
    let mut request = base;
    request["output_config"] = json!({"format": {"type": "json_object"}});
    let error = up_to_chat(request).unwrap_err();
    assert_eq!(error.param.as_deref(), Some("output_config.format"));
}

#[test]
fn fields_whose_meaning_would_change_are_refused_naming_them() {
    let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    for (key, value) in [
        ("temperature", json!(1.5)),
        ("n", json!(2)),
        ("logprobs", json!(true)),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("modalities", json!(["text", "audio"])),
        (
            "tools",
            json!([{"type": "custom", "custom": {"name": "x"}}]),
        ),
        ("max_tokens", json!(0)),
    ] {
        let mut request = base.clone();
        request[key] = value;
        let error = up(request).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(
            error.param.as_deref().unwrap().starts_with(key),
            "{key}: {error:?}"
        );
        assert!(
            error.message.contains("cannot translate"),
            "{}",
            error.message
        );
    }
    let audio = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]});
    assert_eq!(
        up(audio).unwrap_err().param.as_deref(),
        Some("messages[0].content[0].type")
    );
    let bad_args = json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}]});
    assert!(
        up(bad_args)
            .unwrap_err()
            .param
            .unwrap()
            .ends_with("function.arguments")
    );
    let no_id = json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]});
    assert!(up(no_id).is_err());
}

/// A JSON string of random text, each character written as itself, its required escape or a
/// `\u` escape (a surrogate pair past the BMP), as clients write them; now and then half a pair.
fn random_json_string(rng: &mut StdRng) -> String {
    const CHARS: [char; 10] = ['a', ' ', '"', '\\', '\n', '\u{1}', '’', '😀', '/', '@'];
    let mut out = String::from("\"");
    for _ in 0..rng.random_range(0..12) {
        if rng.random_bool(0.01) {
            // Half of a surrogate pair, which no JSON reader of strings accepts alone.
            out.push_str(["\\ud83d", "\\uDE00"][rng.random_range(0..2)]);
            continue;
        }
        let c = CHARS[rng.random_range(0..CHARS.len())];
        if rng.random_bool(0.3) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            let written = serde_json::to_string(&c.to_string()).unwrap();
            out.push_str(&written[1..written.len() - 1]);
        }
    }
    out.push('"');
    out
}

/// A chat request as JSON text: mostly a plain conversation, often not quite one (another role,
/// a part array, a field or value of another kind, a key given twice, an array for an object).
fn random_chat_request(rng: &mut StdRng) -> String {
    let pick =
        |rng: &mut StdRng, options: &[&str]| options[rng.random_range(0..options.len())].to_owned();
    let model = pick(
        rng,
        &[
            "\"claude-sonnet-4-6\"",
            "\"cl\\u0061ude\"",
            "\"claude\"",
            "7",
        ],
    );
    let mut fields = vec![format!("\"model\":{model}")];
    let mut messages = Vec::new();
    for _ in 0..rng.random_range(0..5) {
        let role = match rng.random_range(0..40) {
            0 => "\"tool\"".to_owned(),
            1 => "\"User\"".to_owned(),
            2 => "\"\\u0075ser\"".to_owned(),
            _ => pick(
                rng,
                &["\"system\"", "\"developer\"", "\"user\"", "\"assistant\""],
            ),
        };
        let content = match rng.random_range(0..30) {
            0 => "\"\"".to_owned(),
            1 => "[{\"type\":\"text\",\"text\":\"t\"}]".to_owned(),
            2 => "null".to_owned(),
            _ => random_json_string(rng),
        };
        messages.push(match rng.random_range(0..60) {
            0 => format!("{{\"role\":{role},\"content\":{content},\"name\":\"n\"}}"),
            1 => format!("{{\"role\":{role},\"role\":{role},\"content\":{content}}}"),
            2 => format!("[{role},{content}]"),
            3 => format!("{{\"role\":{role}}}"),
            _ => format!("{{ \"content\" : {content} , \"role\" : {role} }}"),
        });
    }
    fields.push(format!("\"messages\":[{}]", messages.join(",")));
    let optional: [(&str, &[&str]); 9] = [
        ("max_tokens", &["0", "5", "null", "\"7\"", "3.5"]),
        ("max_completion_tokens", &["9", "null", "0"]),
        ("stream", &["true", "false", "null", "\"yes\""]),
        (
            "stream_options",
            &[
                "{\"include_usage\":true}",
                "{\"include_usage\":false,\"x\":1}",
                "{}",
                "[true]",
                "null",
            ],
        ),
        (
            "temperature",
            &["0", "0.50", "1", "1.5", "null", "\"0.5\"", "1e0", "1e999"],
        ),
        ("top_p", &["0.9", "null", "\"x\"", "1e999"]),
        ("stop", &["\"END\""]),
        ("user", &["\"u\""]),
        ("model", &["\"again\""]),
    ];
    for (key, values) in optional {
        if rng.random_bool(0.15) {
            fields.push(format!("\"{key}\":{}", pick(rng, values)));
        }
    }
    let body = format!("{{{}}}", fields.join(","));
    if rng.random_bool(0.02) {
        format!("[{body}]")
    } else {
        body
    }
}

/// The plain way writes every plain conversation as the full way translates it (the same JSON
/// value, the same stream, usage and budget); whatever the full way refuses or drops takes it.
#[test]
fn a_plain_conversation_is_translated_from_its_bytes_as_the_full_way_does() {
    let mut rng = StdRng::seed_from_u64(21);
    let mut plain = 0;
    for _ in 0..5000 {
        let body = random_chat_request(&mut rng);
        plain +=
            usize::from(plain_request_agrees(body.as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!((800..4000).contains(&plain), "{plain} of 5000 were plain");
}

/// Whether the plain way took a chat request, holding it to the contract: `Ok(true)` when it
/// wrote what the full way makes of the request as the filter reads it (the same JSON value,
/// nothing dropped, the same stream, usage, model and budget reservation), `Ok(false)` when it
/// declined, and what broke otherwise (a panic, output that is not JSON, a request the full way
/// refuses, another translation).
fn plain_request_agrees(body: &[u8]) -> Result<bool, String> {
    let shown = String::from_utf8_lossy(body);
    let config = TranslateConfig {
        translations: vec![chat_to_messages()],
    };
    let quick = std::panic::catch_unwind(|| config.plain_request(Api::Chat, body).map(|(_, q)| q));
    let quick = match quick {
        Err(_) => return Err(format!("{shown}: the plain way panicked")),
        Ok(None) => return Ok(false),
        Ok(Some(quick)) => quick,
    };
    let written = String::from_utf8_lossy(&quick.body).into_owned();
    let fields = match crate::api::json_read::parse_value_noting_duplicates(body) {
        Ok((Value::Object(fields), _)) => fields,
        other => {
            return Err(format!(
                "{shown}: plain {written}, the full way reads {other:?}"
            ));
        }
    };
    let limit = |key: &str| fields.get(key).and_then(Value::as_u64);
    let reserved = limit("max_completion_tokens")
        .max(limit("max_tokens"))
        .or(Some(1000));
    let model = fields
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let full = match chat_to_messages().request(fields) {
        Ok(full) => full,
        Err(refused) => {
            return Err(format!(
                "{shown}: plain {written}, the full way refuses {refused:?}"
            ));
        }
    };
    let parsed: Value = serde_json::from_slice(&quick.body)
        .map_err(|e| format!("{shown}: the plain way wrote no JSON ({e}): {written}"))?;
    let full_body = Value::Object(full.body);
    let same = parsed == full_body
        && full.dropped.is_empty()
        && (quick.stream, quick.include_usage) == (full.stream, full.include_usage)
        && Some(&quick.model) == model.as_ref()
        && quick.max_tokens == reserved;
    if !same {
        return Err(format!(
            "{shown}: plain {written} ({}, {}, {:?}), full {full_body} ({}, {}, {reserved:?})",
            quick.stream, quick.include_usage, quick.max_tokens, full.stream, full.include_usage
        ));
    }
    Ok(true)
}

/// [`plain_request_agrees`] for a Messages reply: the same chat completion, nothing dropped.
fn plain_reply_agrees(body: &[u8]) -> Result<bool, String> {
    let shown = String::from_utf8_lossy(body);
    let translation = chat_to_messages();
    let quick = match std::panic::catch_unwind(|| translation.plain_reply(body, 17)) {
        Err(_) => return Err(format!("{shown}: the plain way panicked")),
        Ok(None) => return Ok(false),
        Ok(Some(quick)) => quick,
    };
    let written = String::from_utf8_lossy(&quick).into_owned();
    let reply = match crate::api::json_read::parse_value_noting_duplicates(body) {
        Ok((reply, _)) => reply,
        Err(e) => {
            return Err(format!(
                "{shown}: plain {written}, the full way reads no JSON ({e})"
            ));
        }
    };
    let mut dropped = Dropped::default();
    let full = translation.reply(&reply, 17, &Default::default(), &mut dropped);
    let parsed: Value = serde_json::from_slice(&quick)
        .map_err(|e| format!("{shown}: the plain way wrote no JSON ({e}): {written}"))?;
    if parsed != full || !dropped.is_empty() {
        return Err(format!(
            "{shown}: plain {written}, full {full} ({dropped:?} dropped)"
        ));
    }
    Ok(true)
}

/// A Messages reply as JSON text: mostly text blocks, often not only (a tool use, a block of
/// another type or shape, a field of another type, a key given twice, keys `reply` ignores).
fn random_messages_reply(rng: &mut StdRng) -> String {
    let pick =
        |rng: &mut StdRng, options: &[&str]| options[rng.random_range(0..options.len())].to_owned();
    let mut blocks = Vec::new();
    for _ in 0..rng.random_range(0..4) {
        let text = random_json_string(rng);
        blocks.push(match rng.random_range(0..40) {
            0 => r#"{"type":"tool_use","id":"t","name":"f","input":{}}"#.to_owned(),
            1 => format!(r#"{{"type":"thinking","thinking":{text}}}"#),
            2 => format!(r#"{{"type":"text","text":{text},"type":"text"}}"#),
            3 => r#"{"type":"text","text":7}"#.to_owned(),
            4 => format!("[\"text\",{text}]"),
            5 => format!(r#"{{"text":{text},"citations":[{{"x":1}}],"type":"text"}}"#),
            6 => format!(r#"{{"type":"text","t\u0065xt":{text}}}"#),
            _ => format!(r#"{{"type":"text","text":{text}}}"#),
        });
    }
    let mut fields = vec![
        format!(
            "\"id\":{}",
            pick(rng, &["\"msg_1\"", "\"m\\u0073g\"", "\"msg_2\"", "3"])
        ),
        format!("\"content\":[{}]", blocks.join(",")),
    ];
    let optional: [(&str, &[&str]); 7] = [
        (
            "model",
            &["\"claude-sonnet-4-6\"", "\"claude-sonnet-4-6\"", "null"],
        ),
        (
            "stop_reason",
            &["\"end_turn\"", "\"max_tokens\"", "\"refusal\"", "null", "5"],
        ),
        (
            "usage",
            &[
                r#"{"input_tokens":5,"output_tokens":2,"cache_read_input_tokens":3}"#,
                r#"{"input_tokens":5,"service_tier":"standard","cache_creation":{"x":1}}"#,
                r#"{"input_tokens":18446744073709551615,"cache_creation_input_tokens":2}"#,
                r#"{"output_tokens":-1}"#,
                r#"{"output_tokens":1,"output_tokens":2}"#,
                "null",
                "\"x\"",
            ],
        ),
        ("type", &["\"message\""]),
        ("stop_sequence", &["null", "\"END\""]),
        ("container", &["{\"id\":\"c\"}"]),
        ("id", &["\"again\""]),
    ];
    for (key, values) in optional {
        if rng.random_bool(if key == "model" { 0.9 } else { 0.3 }) {
            fields.push(format!("\"{key}\":{}", pick(rng, values)));
        }
    }
    format!("{{ {} }}", fields.join(" , "))
}

/// The plain way writes every reply of text blocks as the full way translates it (the same
/// JSON value, nothing dropped); whatever else the upstream sends takes the full way.
#[test]
fn a_reply_of_text_is_translated_from_its_bytes_as_the_full_way_does() {
    let mut rng = StdRng::seed_from_u64(22);
    let mut plain = 0;
    for _ in 0..5000 {
        let body = random_messages_reply(&mut rng);
        plain += usize::from(plain_reply_agrees(body.as_bytes()).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!((800..4000).contains(&plain), "{plain} of 5000 were plain");
}

#[test]
fn a_messages_reply_becomes_a_chat_completion_with_cached_tokens() {
    let mut dropped = Dropped::default();
    let reply = chat_to_messages().reply(
        &json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"at": [1]}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 5,
                      "cache_creation_input_tokens": 2},
        }),
        1_700_000_000,
        &Default::default(),
        &mut dropped,
    );
    assert_eq!(
        reply,
        json!({
            "id": "msg_1", "object": "chat.completion", "created": 1_700_000_000, "model": "claude",
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.", "refusal": null,
                "tool_calls": [{"id": "toolu_1", "type": "function",
                                "function": {"name": "look", "arguments": "{\"at\":[1]}"}}],
            }}],
            "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21,
                      "prompt_tokens_details": {"cached_tokens": 5},
                      "completion_tokens_details": {"reasoning_tokens": 0}},
        })
    );
    assert_eq!(dropped.drain().collect::<Vec<_>>(), [("content_block", 1)]);
    for (stop, finish) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ] {
        let reply = chat_to_messages().reply(
            &json!({"stop_reason": stop}),
            0,
            &Default::default(),
            &mut dropped,
        );
        assert_eq!(reply["choices"][0]["finish_reason"], finish);
        assert_eq!(reply["choices"][0]["message"]["content"], "");
    }
}

#[test]
fn errors_are_answered_in_openais_envelope() {
    let translation = chat_to_messages();
    let (status, body) = translation.error(
        429,
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"Slow down."}}"#,
    );
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": {"message": "Slow down.", "type": "rate_limit_error", "param": null, "code": null}})
    );
    let (status, body) = translation.error(
        529,
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Busy."}}"#,
    );
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "server_error"
    );
    let (status, body) = translation.error(502, b"<html>bad gateway</html>");
    assert_eq!(status, 502);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["message"], "The upstream answered 502.");
    let (_, body) = translation.error(
        400,
        br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: bad"}}"#,
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "invalid_request_error"
    );
}

/// An Anthropic event stream of a reply: text blocks and tool-use blocks, their text and JSON
/// cut into the given number of deltas.
fn messages_stream(
    text: &str,
    calls: &[(String, String, Value)],
    usage: &Value,
    stop: &str,
    cuts: usize,
) -> Vec<Value> {
    let pieces = |s: &str| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let size = chars.len().div_ceil(cuts.max(1)).max(1);
        chars.chunks(size).map(|c| c.iter().collect()).collect()
    };
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_s", "type": "message", "role": "assistant",
               "model": "claude", "content": [], "stop_reason": null, "stop_sequence": null,
               "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1,
                         "cache_read_input_tokens": usage["cache_read_input_tokens"]}}}),
        json!({"type": "ping"}),
    ];
    let mut index = 0;
    if !text.is_empty() {
        events.push(json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}));
        for piece in pieces(text) {
            events.push(json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    for (id, name, input) in calls {
        events.push(json!({"type": "content_block_start", "index": index,
                           "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}));
        for piece in pieces(&input.to_string()) {
            events.push(json!({"type": "content_block_delta", "index": index,
                               "delta": {"type": "input_json_delta", "partial_json": piece}}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
        index += 1;
    }
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                       "usage": {"output_tokens": usage["output_tokens"]}}),
    );
    events.push(json!({"type": "message_stop"}));
    events
}

fn sse(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        crate::api::sse::write_event(&mut out, event["type"].as_str(), event);
    }
    out
}

/// A tool call: its id, name and arguments.
type Call = (String, String, Value);

/// What a chat client reassembles from a stream: text, tool calls (id, name, arguments as
/// JSON), finish reason, usage; and whether it ended with `[DONE]`.
fn reassemble(stream: &[u8]) -> (String, Vec<Call>, Value, Value, bool) {
    let text = String::from_utf8(stream.to_vec()).unwrap();
    let (mut content, mut calls, mut finish, mut usage, mut done) = (
        String::new(),
        Vec::<(String, String, String)>::new(),
        Value::Null,
        Value::Null,
        false,
    );
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .expect("chat chunks are data alone");
        assert!(!done, "nothing follows [DONE]");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(u) = chunk.get("usage") {
            usage = u.clone();
        }
        for choice in chunk["choices"].as_array().unwrap() {
            assert_eq!(choice["index"], 0);
            content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
            for call in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let i = usize::try_from(call["index"].as_u64().unwrap()).unwrap();
                if let Some(id) = call["id"].as_str() {
                    assert_eq!(i, calls.len(), "calls open in order");
                    calls.push((
                        id.into(),
                        call["function"]["name"].as_str().unwrap().into(),
                        String::new(),
                    ));
                }
                calls[i]
                    .2
                    .push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    let calls = calls
        .into_iter()
        .map(|(id, name, args)| (id, name, serde_json::from_str(&args).unwrap()))
        .collect();
    (content, calls, finish, usage, done)
}

fn random_text(rng: &mut StdRng) -> String {
    const PARTS: [&str; 8] = ["a", "é", " ", "日本", "\n", "\"", "🦀", "word"];
    (0..rng.random_range(0..40))
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

fn random_calls(rng: &mut StdRng) -> Vec<(String, String, Value)> {
    (0..rng.random_range(0..4))
        .map(|i| {
            let args = json!({"q": random_text(rng), "n": rng.random_range(0..1000), "deep": {"list": [i, null, true]}});
            (format!("toolu_{i}"), format!("tool_{}", rng.random_range(0..5)), args)
        })
        .collect()
}

/// A stream split at every kind of byte boundary gives the client what the whole reply gives:
/// the same text, tool ids, names, arguments (as JSON values), finish reason and usage.
#[test]
fn streams_and_whole_replies_agree_at_any_chunk_boundary() {
    let translation = chat_to_messages();
    let mut rng = StdRng::seed_from_u64(21);
    for _ in 0..200 {
        let text = random_text(&mut rng);
        let calls = random_calls(&mut rng);
        let usage = json!({"input_tokens": rng.random_range(0..500), "output_tokens": rng.random_range(0..500),
                           "cache_read_input_tokens": rng.random_range(0..50)});
        let stop = if calls.is_empty() {
            "end_turn"
        } else {
            "tool_use"
        };
        let mut content = Vec::new();
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        for (id, name, input) in &calls {
            content.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
        }
        let whole = translation.reply(
            &json!({"id": "msg_s", "model": "claude", "content": content, "stop_reason": stop, "usage": usage}),
            1, &Default::default(), &mut Dropped::default(),
        );
        let bytes = sse(&messages_stream(
            &text,
            &calls,
            &usage,
            stop,
            rng.random_range(1..6),
        ));
        let out = read_in_random_chunks(&translation, &bytes, &mut rng);
        let (streamed_text, streamed_calls, finish, streamed_usage, done) = reassemble(&out);
        assert!(done);
        let message = &whole["choices"][0]["message"];
        assert_eq!(streamed_text, message["content"].as_str().unwrap_or(""));
        assert_eq!(streamed_text, text);
        assert_eq!(streamed_calls, calls);
        let whole_calls: Vec<(String, String, Value)> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(whole_calls, calls);
        assert_eq!(finish, whole["choices"][0]["finish_reason"]);
        assert_eq!(streamed_usage, whole["usage"]);
        let prompt = usage["input_tokens"].as_u64().unwrap()
            + usage["cache_read_input_tokens"].as_u64().unwrap();
        assert_eq!(streamed_usage["prompt_tokens"], prompt);
        assert_eq!(streamed_usage["completion_tokens"], usage["output_tokens"]);
    }
}

/// A conversation translated up keeps every text, tool id, name and argument value, and the
/// reply built from what the upstream received comes back down with them intact.
#[test]
fn a_round_trip_keeps_text_tools_arguments_and_usage() {
    let translation = chat_to_messages();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..200 {
        let question = format!("q{}", random_text(&mut rng));
        let calls = random_calls(&mut rng);
        let mut messages = vec![json!({"role": "user", "content": question})];
        if !calls.is_empty() {
            let tool_calls: Vec<Value> = calls.iter().map(|(id, name, args)| json!({
                "id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})).collect();
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": tool_calls}));
            for (id, _, args) in &calls {
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": format!("r{}", args["q"])}));
            }
        }
        let sent = translation
            .request(object(json!({"model": "m", "messages": messages})))
            .unwrap();
        let turns = sent.body["messages"].as_array().unwrap();
        assert_eq!(turns[0]["content"][0]["text"], question);
        let uses: Vec<(String, String, Value)> = turns
            .iter()
            .flat_map(|t| t["content"].as_array().unwrap())
            .filter(|b| b["type"] == "tool_use")
            .map(|b| {
                (
                    b["id"].as_str().unwrap().into(),
                    b["name"].as_str().unwrap().into(),
                    b["input"].clone(),
                )
            })
            .collect();
        assert_eq!(uses, calls);
        let results: Vec<&Value> = turns
            .iter()
            .flat_map(|t| t["content"].as_array().unwrap())
            .filter(|b| b["type"] == "tool_result")
            .collect();
        assert_eq!(results.len(), calls.len());
        for (result, (id, _, args)) in results.iter().zip(&calls) {
            assert_eq!(result["tool_use_id"], id.as_str());
            assert_eq!(result["content"][0]["text"], format!("r{}", args["q"]));
        }
        // The upstream answers with the question and calls the tools again.
        let input = rng.random_range(1..1000);
        let mut content = vec![json!({"type": "text", "text": question})];
        content.extend(uses.iter().map(
            |(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input}),
        ));
        let reply = translation.reply(
            &json!({"id": "msg", "model": "m", "content": content,
            "stop_reason": "end_turn", "usage": {"input_tokens": input, "output_tokens": 3}}),
            0,
            &Default::default(),
            &mut Dropped::default(),
        );
        let message = &reply["choices"][0]["message"];
        assert_eq!(message["content"], question.as_str());
        let back: Vec<(String, String, Value)> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(back, calls);
        assert_eq!(reply["usage"]["prompt_tokens"], input);
        assert_eq!(reply["usage"]["total_tokens"], input + 3);
    }
}

#[test]
fn a_stream_without_usage_asked_ends_without_a_usage_chunk_and_errors_end_it() {
    let translation = chat_to_messages();
    let usage = json!({"input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 0});
    let bytes = sse(&messages_stream("hi", &[], &usage, "max_tokens", 1));
    let out = translation.stream(1, false, &Default::default()).read(
        &mut EventReader::default(),
        &bytes,
        true,
    );
    let (text, _, finish, usage, done) = reassemble(&out);
    assert_eq!(
        (text.as_str(), finish, usage, done),
        ("hi", json!("length"), Value::Null, true)
    );
    let error = sse(&[
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Busy."}}),
        json!({"type": "message_stop"}),
    ]);
    let out = translation.stream(1, true, &Default::default()).read(
        &mut EventReader::default(),
        &error,
        true,
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "data: {\"error\":{\"code\":null,\"message\":\"Busy.\",\"param\":null,\"type\":\"server_error\"}}\n\n"
    );
}

fn messages_to_chat() -> std::sync::Arc<Translation> {
    translation(json!({
        "client": "messages", "upstream": "chat", "upstream_path": "/v1/chat/completions",
    }))
}

fn up_to_chat(request: Value) -> Result<Upstream, Refused> {
    messages_to_chat().request(object(request))
}

#[test]
fn a_messages_request_becomes_a_chat_request() {
    let sent = up_to_chat(json!({
        "model": "gpt-4o",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hm", "signature": "s"},
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"at": [1, 2]}},
                {"type": "tool_use", "id": "toolu_2", "name": "look", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "a hat"}], "is_error": true},
                {"type": "text", "text": "So?"},
            ]},
        ],
        "tools": [{"name": "look", "description": "Looks.", "input_schema": {"type": "object", "properties": {"at": {"type": "array"}}}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "metadata": {"user_id": "u-1"},
        "stream": true,
    }))
    .unwrap();
    assert!(sent.stream && sent.include_usage);
    assert_eq!(
        Value::Object(sent.body),
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                ]},
                {"role": "assistant", "content": "Looking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":[1,2]}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "a hat"},
                {"role": "user", "content": "So?"},
            ],
            "max_tokens": 300,
            "stop": ["END"],
            "temperature": 0.5,
            "top_p": 0.9,
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.",
                       "parameters": {"type": "object", "properties": {"at": {"type": "array"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
        })
    );
    let mut dropped = sent.dropped;
    let mut counted: Vec<_> = dropped.drain().collect();
    counted.sort_unstable();
    assert_eq!(
        counted,
        [
            ("cache_control", 1),
            ("is_error", 1),
            ("thinking", 1),
            ("top_k", 1)
        ]
    );
}

#[test]
fn messages_fields_whose_meaning_would_change_are_refused() {
    let base =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for (key, value) in [
        ("stop_sequences", json!(["a", "b", "c", "d", "e"])),
        (
            "tools",
            json!([{"type": "web_search_20250305", "name": "web_search"}]),
        ),
        (
            "mcp_servers",
            json!([{"type": "url", "url": "https://x.test", "name": "x"}]),
        ),
        ("max_tokens", json!(null)),
        ("tool_choice", json!({"type": "sometimes"})),
    ] {
        let mut request = base.clone();
        request[key] = value;
        let error = up_to_chat(request).unwrap_err();
        assert!(
            error.param.as_deref().unwrap().starts_with(key),
            "{key}: {error:?}"
        );
    }
    let document = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]});
    assert_eq!(
        up_to_chat(document).unwrap_err().param.as_deref(),
        Some("messages.0.content.0.type")
    );
}

#[test]
fn a_chat_completion_becomes_a_messages_reply_with_cached_tokens() {
    let mut dropped = Dropped::default();
    let reply = messages_to_chat().reply(
        &json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.", "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "look", "arguments": "{\"at\":[1]}"}}]}}],
            "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21,
                      "prompt_tokens_details": {"cached_tokens": 5}},
        }),
        0,
        &Default::default(),
        &mut dropped,
    );
    assert_eq!(
        reply,
        json!({
            "id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o",
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_1", "name": "look", "input": {"at": [1]}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 4, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 5},
        })
    );
    assert!(dropped.is_empty());
    for (finish, stop) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ] {
        let reply = messages_to_chat().reply(
            &json!({"choices": [{"finish_reason": finish, "message": {}}]}),
            0,
            &Default::default(),
            &mut dropped,
        );
        assert_eq!(reply["stop_reason"], stop);
    }
    let bad = json!({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}]}}]});
    assert_eq!(
        messages_to_chat().reply(&bad, 0, &Default::default(), &mut dropped)["content"][0]["input"],
        json!({})
    );
    assert_eq!(dropped.drain().collect::<Vec<_>>(), [("arguments", 1)]);
}

#[test]
fn errors_are_answered_in_anthropics_envelope() {
    let (status, body) = messages_to_chat().error(
        429,
        br#"{"error":{"message":"Slow down.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}})
    );
    let (status, body) = messages_to_chat().error(503, b"busy");
    assert_eq!(status, 503);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["error"],
        json!({"type": "overloaded_error", "message": "The upstream answered 503."})
    );
}

/// A chat stream of a reply: text, then tool calls, their text and arguments cut into deltas.
fn chat_stream(text: &str, calls: &[Call], usage: &Value, finish: &str, cuts: usize) -> Vec<u8> {
    let pieces = |s: &str| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let size = chars.len().div_ceil(cuts.max(1)).max(1);
        chars.chunks(size).map(|c| c.iter().collect()).collect()
    };
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk",
        "created": 1, "model": "gpt-4o", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in pieces(text) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    for (i, (id, name, args)) in calls.iter().enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                                                 "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(&args.to_string()) {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    let mut last = chunk(json!({}), Value::Null);
    last["choices"] = json!([]);
    last["usage"] = usage.clone();
    events.push(last);
    let mut out = Vec::new();
    for event in &events {
        crate::api::sse::write_event(&mut out, None, event);
    }
    out.extend_from_slice(crate::api::sse::DONE);
    out
}

/// What an Anthropic client reassembles from a stream, checking the event order it relies on:
/// content blocks (text, or tool uses with their JSON input), stop reason and usage.
fn reassemble_messages(stream: &[u8]) -> (Vec<Value>, Value, Value) {
    let text = String::from_utf8(stream.to_vec()).unwrap();
    let (mut blocks, mut stop, mut usage) = (Vec::<Value>::new(), Value::Null, json!({}));
    let mut open: Option<usize> = None;
    let mut partial = String::new();
    let mut stage = 0;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let (name, data) = event.split_once('\n').unwrap();
        let event: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(name.strip_prefix("event: ").unwrap(), event["type"]);
        match event["type"].as_str().unwrap() {
            "message_start" => {
                assert_eq!(stage, 0);
                stage = 1;
                usage = event["message"]["usage"].clone();
            }
            "content_block_start" => {
                assert!(stage == 1 && open.is_none());
                assert_eq!(event["index"], blocks.len());
                open = Some(blocks.len());
                blocks.push(event["content_block"].clone());
                partial.clear();
            }
            "content_block_delta" => {
                let i = open.unwrap();
                assert_eq!(event["index"], i);
                let delta = &event["delta"];
                match delta["type"].as_str().unwrap() {
                    "text_delta" => {
                        let text = format!(
                            "{}{}",
                            blocks[i]["text"].as_str().unwrap(),
                            delta["text"].as_str().unwrap()
                        );
                        blocks[i]["text"] = json!(text);
                    }
                    "input_json_delta" => partial.push_str(delta["partial_json"].as_str().unwrap()),
                    other => panic!("{other}"),
                }
            }
            "content_block_stop" => {
                let i = open.take().unwrap();
                assert_eq!(event["index"], i);
                if blocks[i]["type"] == "tool_use" && !partial.is_empty() {
                    blocks[i]["input"] = serde_json::from_str(&partial).unwrap();
                }
            }
            "message_delta" => {
                assert!(stage == 1 && open.is_none());
                stage = 2;
                stop = event["delta"]["stop_reason"].clone();
                for (key, value) in event["usage"].as_object().unwrap() {
                    usage[key] = value.clone();
                }
            }
            "message_stop" => {
                assert_eq!(stage, 2);
                stage = 3;
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(stage, 3, "the stream ends with message_stop");
    (blocks, stop, usage)
}

/// A chat stream split anywhere gives the Anthropic client what the whole reply gives.
#[test]
fn chat_streams_and_whole_replies_agree_at_any_chunk_boundary() {
    let translation = messages_to_chat();
    let mut rng = StdRng::seed_from_u64(22);
    for _ in 0..200 {
        let text = random_text(&mut rng);
        let calls = random_calls(&mut rng);
        let cached = rng.random_range(0..50);
        let usage = json!({"prompt_tokens": cached + rng.random_range(0..500), "completion_tokens": rng.random_range(0..500),
                           "prompt_tokens_details": {"cached_tokens": cached}});
        let finish = if calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        let tool_calls: Vec<Value> = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": text});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let whole = translation.reply(&json!({"id": "chatcmpl-s", "model": "gpt-4o",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}), 0, &Default::default(), &mut Dropped::default());
        let bytes = chat_stream(&text, &calls, &usage, finish, rng.random_range(1..6));
        let out = read_in_random_chunks(&translation, &bytes, &mut rng);
        let (blocks, stop, streamed_usage) = reassemble_messages(&out);
        assert_eq!(Value::Array(blocks), whole["content"]);
        assert_eq!(stop, whole["stop_reason"]);
        assert_eq!(streamed_usage, whole["usage"]);
        assert_eq!(streamed_usage["cache_read_input_tokens"], cached);
    }
}

/// A conversation in Anthropic's shape translated up keeps texts, tool ids, names and inputs,
/// and the reply comes back down with them intact.
#[test]
fn a_messages_round_trip_keeps_text_tools_arguments_and_usage() {
    let translation = messages_to_chat();
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..200 {
        let question = format!("q{}", random_text(&mut rng));
        let calls = random_calls(&mut rng);
        let mut messages = vec![json!({"role": "user", "content": question})];
        if !calls.is_empty() {
            let uses: Vec<Value> = calls.iter().map(|(id, name, input)| json!({"type": "tool_use", "id": id, "name": name, "input": input})).collect();
            messages.push(json!({"role": "assistant", "content": uses}));
            let results: Vec<Value> = calls.iter().map(|(id, _, input)| json!({"type": "tool_result", "tool_use_id": id, "content": format!("r{}", input["q"])})).collect();
            messages.push(json!({"role": "user", "content": results}));
        }
        let sent = translation
            .request(object(
                json!({"model": "m", "max_tokens": 9, "messages": messages}),
            ))
            .unwrap();
        let chat = sent.body["messages"].as_array().unwrap();
        assert_eq!(chat[0]["content"], question.as_str());
        let sent_calls: Vec<Call> = chat
            .iter()
            .flat_map(|m| m["tool_calls"].as_array().into_iter().flatten())
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["function"]["name"].as_str().unwrap().into(),
                    serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                )
            })
            .collect();
        assert_eq!(sent_calls, calls);
        let results: Vec<&Value> = chat.iter().filter(|m| m["role"] == "tool").collect();
        for (result, (id, _, input)) in results.iter().zip(&calls) {
            assert_eq!(result["tool_call_id"], id.as_str());
            assert_eq!(result["content"], format!("r{}", input["q"]));
        }
        let prompt = rng.random_range(1..1000);
        let tool_calls: Vec<Value> = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
        let reply = translation.reply(
            &json!({"id": "c", "model": "m", "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"content": question, "tool_calls": tool_calls}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 3}}),
            0,
            &Default::default(),
            &mut Dropped::default(),
        );
        assert_eq!(reply["content"][0]["text"], question.as_str());
        let back: Vec<Call> = reply["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| {
                (
                    b["id"].as_str().unwrap().into(),
                    b["name"].as_str().unwrap().into(),
                    b["input"].clone(),
                )
            })
            .collect();
        assert_eq!(back, calls);
        assert_eq!(reply["usage"]["input_tokens"], prompt);
        assert_eq!(reply["usage"]["output_tokens"], 3);
    }
}

#[test]
fn a_chat_stream_error_ends_the_messages_stream_with_an_error_event() {
    let mut stream = Vec::new();
    crate::api::sse::write_event(
        &mut stream,
        None,
        &json!({"error": {"message": "Busy.", "type": "server_error"}}),
    );
    stream.extend_from_slice(crate::api::sse::DONE);
    let out = messages_to_chat()
        .stream(1, true, &Default::default())
        .read(&mut EventReader::default(), &stream, true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "event: error\ndata: {\"error\":{\"message\":\"Busy.\",\"type\":\"api_error\"},\"type\":\"error\"}\n\n"
    );
}

fn responses_to_chat() -> std::sync::Arc<Translation> {
    translation(json!({
        "client": "responses", "upstream": "chat", "upstream_path": "/v1/chat/completions",
    }))
}

fn up_from_responses(request: Value) -> Result<Upstream, Refused> {
    responses_to_chat().request(object(request))
}

#[test]
fn a_responses_request_becomes_a_chat_request() {
    let sent = up_from_responses(json!({
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is this?"},
                {"type": "input_image", "image_url": "https://x.test/cat.png", "detail": "low"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"at\":[1]}"},
            {"type": "function_call", "call_id": "call_2", "name": "look", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
            {"type": "function_call_output", "call_id": "call_2", "output": "a hat"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat in a hat."}]},
            {"role": "user", "content": "So?"},
        ],
        "previous_response_id": "resp_earlier",
        "store": true,
        "tools": [{"type": "function", "name": "look", "description": "Looks.", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "look"},
        "parallel_tool_calls": false,
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 300,
        "temperature": 0.5,
        "stream": true,
    }))
    .unwrap();
    assert!(sent.stream && sent.include_usage);
    assert_eq!(
        Value::Object(sent.body),
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png", "detail": "low"}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":[1]}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": "{}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "call_2", "content": "a hat"},
                {"role": "assistant", "content": "A cat in a hat."},
                {"role": "user", "content": "So?"},
            ],
            "max_tokens": 300,
            "temperature": 0.5,
            "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "look", "description": "Looks.",
                       "parameters": {"type": "object"}, "strict": true}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
            "reasoning_effort": "low",
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
    let mut dropped = sent.dropped;
    let mut counted: Vec<_> = dropped.drain().collect();
    counted.sort_unstable();
    assert_eq!(
        counted,
        [("previous_response_id", 1), ("reasoning", 1), ("store", 1)]
    );
}

#[test]
fn previous_response_id_is_refused_unless_the_input_is_whole() {
    for input in [
        json!("and then?"),
        json!([{"role": "user", "content": "and then?"}]),
        // An output whose call the input does not hold continues a stored response.
        json!([{"role": "assistant", "content": "Let me look."},
               {"type": "function_call_output", "call_id": "call_9", "output": "x"}]),
    ] {
        let error = up_from_responses(
            json!({"model": "m", "input": input, "previous_response_id": "resp_1"}),
        )
        .unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.param.as_deref(), Some("previous_response_id"));
        assert!(
            error.message.contains("stores no responses"),
            "{}",
            error.message
        );
    }
    for (key, value) in [
        ("input", json!([{"type": "item_reference", "id": "msg_1"}])),
        ("conversation", json!("conv_1")),
        ("tools", json!([{"type": "web_search"}])),
        ("text", json!({"format": {"type": "yaml"}})),
        ("background", json!(true)),
    ] {
        let mut request = json!({"model": "m", "input": "hi"});
        request[key] = value;
        let error = up_from_responses(request).unwrap_err();
        assert!(
            error.param.as_deref().unwrap().starts_with(key),
            "{key}: {error:?}"
        );
    }
}

#[test]
fn a_chat_completion_becomes_a_response() {
    let reply = responses_to_chat().reply(
        &json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me look.",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"at\":[1]}"}}]}}],
            "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21,
                      "prompt_tokens_details": {"cached_tokens": 5}, "completion_tokens_details": {"reasoning_tokens": 2}},
        }),
        0, &Default::default(),
        &mut Dropped::default(),
    );
    assert_eq!(
        (
            &reply["id"],
            &reply["object"],
            &reply["status"],
            &reply["created_at"]
        ),
        (
            &json!("resp_1"),
            &json!("response"),
            &json!("completed"),
            &json!(7)
        )
    );
    assert_eq!(
        reply["store"], false,
        "llm-edge stores nothing, and says so"
    );
    assert_eq!(
        reply["output"],
        json!([
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "look",
             "arguments": "{\"at\":[1]}", "status": "completed"},
        ])
    );
    assert_eq!(
        reply["usage"],
        json!({"input_tokens": 17, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 4,
               "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 21})
    );
    let cut = responses_to_chat().reply(
        &json!({"choices": [{"finish_reason": "length", "message": {"content": "a"}}]}),
        0,
        &Default::default(),
        &mut Dropped::default(),
    );
    assert_eq!(
        (&cut["status"], &cut["incomplete_details"]["reason"]),
        (&json!("incomplete"), &json!("max_output_tokens"))
    );
    let (status, body) = responses_to_chat().error(429, br#"{"error":{"message":"Slow down.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}"#);
    assert_eq!(status, 429);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"error": {"message": "Slow down.", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
    );
    let (_, body) = responses_to_chat().error(502, b"<html>");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
        "server_error"
    );
}

/// A chat stream split anywhere gives a Responses client numbered events, in order, whose final
/// `response` equals the whole reply's, and whose deltas add up to its output.
#[test]
fn responses_streams_and_whole_replies_agree_at_any_chunk_boundary() {
    let translation = responses_to_chat();
    let mut rng = StdRng::seed_from_u64(23);
    for _ in 0..200 {
        let text = random_text(&mut rng);
        let calls = random_calls(&mut rng);
        let usage = json!({"prompt_tokens": rng.random_range(0..500), "completion_tokens": rng.random_range(0..500)});
        let finish = ["stop", "length", "tool_calls"][rng.random_range(0..3)];
        let tool_calls: Vec<Value> = calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function",
            "function": {"name": name, "arguments": args.to_string()}})
            })
            .collect();
        let mut message = json!({"role": "assistant", "content": text});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        let whole = translation.reply(&json!({"id": "chatcmpl-s", "model": "gpt-4o", "created": 1,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}), 0, &Default::default(), &mut Dropped::default());
        let bytes = chat_stream(&text, &calls, &usage, finish, rng.random_range(1..6));
        let out = read_in_random_chunks(&translation, &bytes, &mut rng);
        let out = String::from_utf8(out).unwrap();
        let events: Vec<Value> = out
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let event: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(name.strip_prefix("event: ").unwrap(), event["type"]);
                event
            })
            .collect();
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], i);
        }
        assert_eq!(events[0]["type"], "response.created");
        let last = events.last().unwrap();
        let expected = if finish == "length" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        assert_eq!(last["type"], expected);
        let mut final_response = last["response"].clone();
        if text.is_empty() && calls.is_empty() {
            // A reply of nothing streams no message item.
            final_response["output"] = whole["output"].clone();
        }
        assert_eq!(final_response, whole);
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, text);
        let arguments: Vec<Value> = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.done")
            .map(|e| serde_json::from_str(e["arguments"].as_str().unwrap()).unwrap())
            .collect();
        assert_eq!(
            arguments,
            calls.iter().map(|c| c.2.clone()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn an_error_without_a_body_names_the_upstream_status_typed_by_it() {
    for (status, openai, anthropic) in [
        (429, "rate_limit_error", "rate_limit_error"),
        (401, "authentication_error", "authentication_error"),
        (400, "invalid_request_error", "invalid_request_error"),
        (502, "server_error", "api_error"),
    ] {
        let message = format!("The upstream answered {status}.");
        for (translation, kind) in [
            (chat_to_messages(), openai),
            (responses_to_chat(), openai),
            (messages_to_chat(), anthropic),
        ] {
            for body in [&b""[..], b"<html>Bad gateway</html>"] {
                let (sent, body) = translation.error(status, body);
                assert_eq!(sent, status);
                let error = serde_json::from_slice::<Value>(&body).unwrap()["error"].clone();
                assert_eq!(error["type"], kind, "{} {status}", translation.label());
                assert_eq!(error["message"], message.as_str());
            }
        }
    }
}

#[test]
fn a_response_repeats_the_requests_instructions_tools_and_tool_choice() {
    let tools = json!([{"type": "function", "name": "look", "parameters": {"type": "object"},
                        "strict": true}]);
    let choice = json!({"type": "function", "name": "look"});
    let sent = up_from_responses(
        json!({"model": "gpt-4o", "input": "hi", "instructions": "Be brief.",
                                        "tools": tools, "tool_choice": choice}),
    )
    .unwrap();
    let chat = json!({"id": "chatcmpl-e", "model": "gpt-4o", "created": 1,
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": "ok"}}]});
    let whole = responses_to_chat().reply(&chat, 0, &sent.echo, &mut Dropped::default());
    let mut translator = responses_to_chat().stream(1, true, &sent.echo);
    let stream = chat_stream(
        "ok",
        &[],
        &json!({"prompt_tokens": 1, "completion_tokens": 1}),
        "stop",
        1,
    );
    let out = translator.read(&mut EventReader::default(), &stream, true);
    let out = String::from_utf8(out).unwrap();
    let responses: Vec<Value> = out
        .split("\n\n")
        .filter_map(|e| e.split_once("data: "))
        .map(|(_, data)| serde_json::from_str::<Value>(data).unwrap())
        .filter_map(|event| event.get("response").cloned())
        .collect();
    assert_eq!(responses.len(), 3, "created, in_progress, completed");
    for response in responses.iter().chain([&whole]) {
        assert_eq!(response["instructions"], "Be brief.");
        assert_eq!(response["tools"], tools);
        assert_eq!(response["tool_choice"], choice);
    }
    let bare = up_from_responses(json!({"model": "gpt-4o", "input": "hi"})).unwrap();
    let whole = responses_to_chat().reply(&chat, 0, &bare.echo, &mut Dropped::default());
    assert_eq!(
        (
            &whole["instructions"],
            &whole["tools"],
            &whole["tool_choice"]
        ),
        (&Value::Null, &json!([]), &json!("auto"))
    );
}

/// Inputs an attacker would try on the plain ways (an adversarial review's list): keys twice or
/// escaped, arrays for objects, odd numbers, half surrogate pairs, invalid UTF-8 and deep nesting
/// in values the plain readers pass over, usage as an array. Each is declined, or written as
/// the full way writes it; none is accepted where the full way refuses.
#[test]
fn hostile_inputs_take_the_full_way_or_agree_with_it() {
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let reqs: Vec<(&str, Vec<u8>)> = vec![
        ("baseline", format!(r#"{{"model":"m",{m}}}"#).into_bytes()),
        ("dup model", format!(r#"{{"model":"m","model":"n",{m}}}"#).into_bytes()),
        ("escaped key model", format!(r#"{{"mod\u0065l":"m",{m}}}"#).into_bytes()),
        ("escaped dup key", format!(r#"{{"model":"m","mod\u0065l":"n",{m}}}"#).into_bytes()),
        ("dup message key", br#"{"model":"m","messages":[{"role":"user","role":"user","content":"hi"}]}"#.to_vec()),
        ("message as array", br#"{"model":"m","messages":[["user","hi"]]}"#.to_vec()),
        ("top-level array", br#"["m",[{"role":"user","content":"hi"}]]"#.to_vec()),
        ("leading ws", format!(" \n\t{{\"model\":\"m\",{m}}}  ").into_bytes()),
        ("form feed", format!("\x0c{{\"model\":\"m\",{m}}}").into_bytes()),
        ("bom", format!("\u{feff}{{\"model\":\"m\",{m}}}").into_bytes()),
        ("trailing junk", format!(r#"{{"model":"m",{m}}}x"#).into_bytes()),
        ("max_tokens -0", format!(r#"{{"model":"m",{m},"max_tokens":-0}}"#).into_bytes()),
        ("max_tokens 1e2", format!(r#"{{"model":"m",{m},"max_tokens":1e2}}"#).into_bytes()),
        ("max_tokens 1.0", format!(r#"{{"model":"m",{m},"max_tokens":1.0}}"#).into_bytes()),
        ("max_tokens u64max", format!(r#"{{"model":"m",{m},"max_tokens":18446744073709551615}}"#).into_bytes()),
        ("max_tokens u64max+1", format!(r#"{{"model":"m",{m},"max_tokens":18446744073709551616}}"#).into_bytes()),
        ("max_tokens 0", format!(r#"{{"model":"m",{m},"max_tokens":0}}"#).into_bytes()),
        ("mct 5 mt 0", format!(r#"{{"model":"m",{m},"max_completion_tokens":5,"max_tokens":0}}"#).into_bytes()),
        ("mct 0 mt 5", format!(r#"{{"model":"m",{m},"max_completion_tokens":0,"max_tokens":5}}"#).into_bytes()),
        ("mct null mt 5", format!(r#"{{"model":"m",{m},"max_completion_tokens":null,"max_tokens":5}}"#).into_bytes()),
        ("mct 5 mt 9", format!(r#"{{"model":"m",{m},"max_completion_tokens":5,"max_tokens":9}}"#).into_bytes()),
        ("temp -0", format!(r#"{{"model":"m",{m},"temperature":-0}}"#).into_bytes()),
        ("temp -0.0", format!(r#"{{"model":"m",{m},"temperature":-0.0}}"#).into_bytes()),
        ("temp 1e-400", format!(r#"{{"model":"m",{m},"temperature":1e-400}}"#).into_bytes()),
        ("temp 1e400", format!(r#"{{"model":"m",{m},"temperature":1e400}}"#).into_bytes()),
        ("temp near 1", format!(r#"{{"model":"m",{m},"temperature":1.000000000000000111}}"#).into_bytes()),
        ("temp long", format!(r#"{{"model":"m",{m},"temperature":0.{}}}"#, "9".repeat(400)).into_bytes()),
        ("temp string", format!(r#"{{"model":"m",{m},"temperature":"0.5"}}"#).into_bytes()),
        ("temp null", format!(r#"{{"model":"m",{m},"temperature":null}}"#).into_bytes()),
        ("top_p 1e400", format!(r#"{{"model":"m",{m},"top_p":1e400}}"#).into_bytes()),
        ("top_p -1e308", format!(r#"{{"model":"m",{m},"top_p":-1e308}}"#).into_bytes()),
        ("top_p huge int", format!(r#"{{"model":"m",{m},"top_p":123456789012345678901234567890}}"#).into_bytes()),
        ("top_p 2.5e-324", format!(r#"{{"model":"m",{m},"top_p":2.5e-324}}"#).into_bytes()),
        ("stream null", format!(r#"{{"model":"m",{m},"stream":null}}"#).into_bytes()),
        ("stream_options array", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":[true]}}"#).into_bytes()),
        ("stream_options null iu", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"include_usage":null}}}}"#).into_bytes()),
        ("stream_options escaped key", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"include_\u0075sage":true}}}}"#).into_bytes()),
        ("stream_options dup other", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"x":1,"x":2,"include_usage":true}}}}"#).into_bytes()),
        ("stream_options nested", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"o":{{"include_usage":false}},"include_usage":true}}}}"#).into_bytes()),
        ("stream_options lone surrogate", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"x":"\ud800","include_usage":true}}}}"#).into_bytes()),
        ("stream_options 1e400", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"x":1e400}}}}"#).into_bytes()),
        ("stream_options deep", format!(r#"{{"model":"m",{m},"stream":true,"stream_options":{{"x":{deep}}}}}"#).into_bytes()),
        ("stream_options bad utf8", { let mut b = format!(r#"{{"model":"m",{m},"stream_options":{{"x":"A"#).into_bytes(); b.push(0xff); b.extend_from_slice(b"\"}}"); b }),
        ("stream_options control char", format!("{{\"model\":\"m\",{m},\"stream_options\":{{\"x\":\"a\x01b\"}}}}").into_bytes()),
        ("role User", br#"{"model":"m","messages":[{"role":"User","content":"hi"}]}"#.to_vec()),
        ("role escaped", br#"{"model":"m","messages":[{"role":"\u0075ser","content":"hi"}]}"#.to_vec()),
        ("role tool", br#"{"model":"m","messages":[{"role":"tool","content":"hi"}]}"#.to_vec()),
        ("model number", br#"{"model":5,"messages":[]}"#.to_vec()),
        ("model null", br#"{"model":null,"messages":[]}"#.to_vec()),
        ("model missing", br#"{"messages":[]}"#.to_vec()),
        ("model empty", br#"{"model":"","messages":[]}"#.to_vec()),
        ("model escapes", br#"{"model":"a\"\\\/\b\f\n\r\t\u0001\u007f\u2028\ud83d\ude00","messages":[]}"#.to_vec()),
        ("model lone surrogate", br#"{"model":"\ud800","messages":[]}"#.to_vec()),
        ("messages empty", br#"{"model":"m","messages":[]}"#.to_vec()),
        ("messages null", br#"{"model":"m","messages":null}"#.to_vec()),
        ("content every escape", br#"{"model":"m","messages":[{"role":"user","content":"a\"\\\/\b\f\n\r\t\u0000\u001F\u007f\u2028\uD83D\uDE00\ud83d\ude00"}]}"#.to_vec()),
        ("content lone high", br#"{"model":"m","messages":[{"role":"user","content":"\ud800"}]}"#.to_vec()),
        ("content lone low", br#"{"model":"m","messages":[{"role":"user","content":"\uDC00x"}]}"#.to_vec()),
        ("content reversed pair", br#"{"model":"m","messages":[{"role":"user","content":"\ude00\ud83d"}]}"#.to_vec()),
        ("content escaped backslash u", br#"{"model":"m","messages":[{"role":"user","content":"\\ud800"}]}"#.to_vec()),
        ("content raw utf8", "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\u{e9}\u{1F600}\"}]}".as_bytes().to_vec()),
        ("content bad utf8", { let mut b = br#"{"model":"m","messages":[{"role":"user","content":"a"#.to_vec(); b.push(0xed); b.push(0xa0); b.push(0x80); b.extend_from_slice(b"\"}]}"); b }),
        ("content raw control", b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a\x01\"}]}".to_vec()),
        ("content empty", br#"{"model":"m","messages":[{"role":"user","content":""},{"role":"system","content":""}]}"#.to_vec()),
        ("content null", br#"{"model":"m","messages":[{"role":"user","content":null}]}"#.to_vec()),
        ("content number", br#"{"model":"m","messages":[{"role":"user","content":5}]}"#.to_vec()),
        ("merging", br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"developer","content":"d"},{"role":"user","content":"b"},{"role":"assistant","content":""},{"role":"assistant","content":"c"},{"role":"user","content":""}]}"#.to_vec()),
        ("content first then role", br#"{"model":"m","messages":[{"content":"hi","role":"assistant"}]}"#.to_vec()),
        ("unknown field", format!(r#"{{"model":"m",{m},"n":1}}"#).into_bytes()),
        ("whitespace around values", b"{ \"model\" : \"m\" , \"messages\" : [ { \"role\" : \"user\" , \"content\" : \"hi\" } ] , \"temperature\" : 0.5 , \"top_p\" : 1 }".to_vec()),
    ];
    let d = "{\"type\":\"text\",\"text\":\"hi\"}";
    let replies: Vec<(&str, Vec<u8>)> = vec![
        ("baseline", format!(r#"{{"id":"i","model":"c","content":[{d}]}}"#).into_bytes()),
        ("usage array", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":[5,6,7,8]}}"#).into_bytes()),
        ("usage empty array", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":[]}}"#).into_bytes()),
        ("usage float", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"input_tokens":1.0}}}}"#).into_bytes()),
        ("usage overflow sum", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"input_tokens":18446744073709551615,"cache_read_input_tokens":5,"output_tokens":18446744073709551615}}}}"#).into_bytes()),
        ("usage null fields", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"input_tokens":null,"output_tokens":3}}}}"#).into_bytes()),
        ("usage escaped key", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"input_t\u006fkens":4}}}}"#).into_bytes()),
        ("usage ignored lone surrogate", format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"service_tier":"\ud800"}}}}"#).into_bytes()),
        ("top ignored lone surrogate", format!(r#"{{"id":"i","model":"c","content":[{d}],"stop_sequence":"\udfff"}}"#).into_bytes()),
        ("top ignored 1e400", format!(r#"{{"id":"i","model":"c","content":[{d}],"x":1e400}}"#).into_bytes()),
        ("top ignored deep", format!(r#"{{"id":"i","model":"c","content":[{d}],"x":{deep}}}"#).into_bytes()),
        ("top ignored bad utf8", { let mut b = format!(r#"{{"id":"i","model":"c","content":[{d}],"x":"A"#).into_bytes(); b.push(0xff); b.extend_from_slice(b"\"}"); b }),
        ("block citations lone surrogate", br#"{"id":"i","model":"c","content":[{"type":"text","text":"hi","citations":[{"cited_text":"\ud800"}]}]}"#.to_vec()),
        ("block citations deep", format!(r#"{{"id":"i","model":"c","content":[{{"type":"text","text":"hi","citations":{deep}}}]}}"#).into_bytes()),
        ("block citations 1e400", br#"{"id":"i","model":"c","content":[{"type":"text","text":"hi","citations":1e400}]}"#.to_vec()),
        ("block text dup via ignored", br#"{"id":"i","model":"c","content":[{"type":"text","text":"hi","x":1,"x":2}]}"#.to_vec()),
        ("block type twice same", br#"{"id":"i","model":"c","content":[{"type":"text","type":"text","text":"hi"}]}"#.to_vec()),
        ("block type non-text then text", br#"{"id":"i","model":"c","content":[{"type":"tool_use","type":"text","text":"hi"}]}"#.to_vec()),
        ("block type text then other", br#"{"id":"i","model":"c","content":[{"type":"text","text":"hi","type":"tool_use"}]}"#.to_vec()),
        ("two texts pair split", br#"{"id":"i","model":"c","content":[{"type":"text","text":"\ud83d"},{"type":"text","text":"\ude00"}]}"#.to_vec()),
        ("texts escapes", br#"{"id":"i","model":"c","content":[{"type":"text","text":"a\"\\\/\b\f\n\r\t\u0000\u2028"},{"type":"text","text":"\\"},{"type":"text","text":"\""}]}"#.to_vec()),
        ("text ends in escaped backslash", br#"{"id":"i","model":"c","content":[{"type":"text","text":"a\\"},{"type":"text","text":"u0041"}]}"#.to_vec()),
        ("stop_reason null", format!(r#"{{"id":"i","model":"c","content":[{d}],"stop_reason":null}}"#).into_bytes()),
        ("stop_reason tool_use no calls", format!(r#"{{"id":"i","model":"c","content":[{d}],"stop_reason":"tool_use"}}"#).into_bytes()),
        ("id escaped", format!(r#"{{"id":"\u0069\n","model":"c","content":[{d}]}}"#).into_bytes()),
        ("content empty", br#"{"id":"i","model":"c","content":[]}"#.to_vec()),
        ("content null", br#"{"id":"i","model":"c","content":null}"#.to_vec()),
        ("model missing", format!(r#"{{"id":"i","content":[{d}]}}"#).into_bytes()),
        ("top dup unknown", format!(r#"{{"id":"i","model":"c","content":[{d}],"type":"message","type":"x"}}"#).into_bytes()),
        ("top escaped known key", format!(r#"{{"id":"i","model":"c","content":[{d}],"\u0069d":"j"}}"#).into_bytes()),
        ("bom", format!("\u{feff}{{\"id\":\"i\",\"model\":\"c\",\"content\":[{d}]}}").into_bytes()),
    ];
    let mut breaks = Vec::new();
    for (name, body) in &reqs {
        breaks.extend(
            plain_request_agrees(body)
                .err()
                .map(|e| format!("{name}: {e}")),
        );
    }
    for (name, body) in &replies {
        breaks.extend(
            plain_reply_agrees(body)
                .err()
                .map(|e| format!("{name}: {e}")),
        );
    }
    assert!(breaks.is_empty(), "{breaks:#?}");
}

/// A key given first as `null`, then with a value: the plain readers must not take the first.
#[test]
fn a_key_given_twice_after_a_null_takes_the_full_way_or_agrees_with_it() {
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    let d = "{\"type\":\"text\",\"text\":\"hi\"}";
    let mut breaks = Vec::new();
    for (name, body) in [
        (
            "dup stream null then true",
            format!(r#"{{"model":"m",{m},"stream":null,"stream":true}}"#),
        ),
        (
            "dup max_tokens null then 5",
            format!(r#"{{"model":"m",{m},"max_tokens":null,"max_tokens":5}}"#),
        ),
        (
            "dup temperature null then 2",
            format!(r#"{{"model":"m",{m},"temperature":null,"temperature":2}}"#),
        ),
        (
            "dup include_usage null then true",
            format!(
                r#"{{"model":"m",{m},"stream":true,"stream_options":{{"include_usage":null,"include_usage":true}}}}"#
            ),
        ),
        (
            "dup stream_options null then obj",
            format!(
                r#"{{"model":"m",{m},"stream":true,"stream_options":null,"stream_options":{{"include_usage":true}}}}"#
            ),
        ),
    ] {
        breaks.extend(
            plain_request_agrees(body.as_bytes())
                .err()
                .map(|e| format!("{name}: {e}")),
        );
    }
    for (name, body) in [
        (
            "dup stop_reason null then max",
            format!(
                r#"{{"id":"i","model":"c","content":[{d}],"stop_reason":null,"stop_reason":"max_tokens"}}"#
            ),
        ),
        (
            "dup usage null then obj",
            format!(
                r#"{{"id":"i","model":"c","content":[{d}],"usage":null,"usage":{{"input_tokens":3}}}}"#
            ),
        ),
        (
            "dup usage field null then 3",
            format!(
                r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"input_tokens":null,"input_tokens":3}}}}"#
            ),
        ),
        (
            "dup content",
            format!(r#"{{"id":"i","model":"c","content":[],"content":[{d}]}}"#),
        ),
        (
            "usage ignored deep",
            format!(
                r#"{{"id":"i","model":"c","content":[{d}],"usage":{{"cache_creation":{}{}}}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        ),
        (
            "usage seq of one",
            format!(r#"{{"id":"i","model":"c","content":[{d}],"usage":[42]}}"#),
        ),
    ] {
        breaks.extend(
            plain_reply_agrees(body.as_bytes())
                .err()
                .map(|e| format!("{name}: {e}")),
        );
    }
    assert!(breaks.is_empty(), "{breaks:#?}");
}
