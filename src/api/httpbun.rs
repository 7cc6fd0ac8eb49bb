//! The httpbun drop-in profile: answers exactly as httpbun's `/llm` endpoints do, so a test suite
//! written against httpbun passes unchanged against Envoy with llm-edge.
//!
//! What "exactly" covers, as httpbun's source has it: the paths (`/llm/v1/…` and `/llm/…`), the
//! fixed placeholder replies, the `httpbun` override fields (`content`, and `output_text` for
//! Responses), the default models, usage counted as ⌈bytes / 4⌉ of `"role: content\n"` lines
//! (Responses: the input plus one, and 29 output tokens), ids of 24 lowercase hex digits, the
//! minimal response fields, streams split into words that keep their whitespace, and its error
//! bodies. Unlike the OpenAI profile this is not spec-exact on purpose: it is httpbun's shape.

use crate::api::sse;
use serde_json::{Value, json};

/// An endpoint of httpbun's `/llm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpbunEndpoint {
    /// `/llm/v1/chat/completions`.
    ChatCompletions,
    /// `/llm/v1/completions`.
    Completions,
    /// `/llm/v1/responses`.
    Responses,
    /// `/llm/v1/messages` (Anthropic).
    Messages,
}

const CHAT_TEXT: &str = "This is a mock chat response from httpbun. I received your messages and I'm responding with this placeholder text.";
const COMPLETION_TEXT: &str =
    "This is a mock completion response from httpbun. Your prompt was received successfully.";
const RESPONSES_TEXT: &str = "This is a mock responses API response from httpbun. I received your input and I'm responding with this placeholder text.";
const MESSAGES_TEXT: &str = "This is a mock Anthropic messages API response from httpbun. I received your messages and I'm responding with this placeholder text.";
/// httpbun reports this many output tokens for every Responses reply.
const RESPONSES_OUTPUT_TOKENS: usize = 29;

impl HttpbunEndpoint {
    /// The endpoint `path` names: `/llm/v1/<name>` or `/llm/<name>`, query string ignored.
    pub fn resolve(path: &[u8]) -> Option<Self> {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        let rest = path.strip_prefix(b"/llm")?;
        let rest = rest.strip_prefix(b"/v1").unwrap_or(rest);
        match rest {
            b"/chat/completions" => Some(Self::ChatCompletions),
            b"/completions" => Some(Self::Completions),
            b"/responses" => Some(Self::Responses),
            b"/messages" => Some(Self::Messages),
            _ => None,
        }
    }

    /// The `endpoint` stats label.
    pub fn label(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
        }
    }

    /// httpbun's body for a method other than POST.
    pub fn method_not_allowed(self) -> Vec<u8> {
        let body = match self {
            Self::Messages => {
                json!({"error": {"type": "method_not_allowed", "message": "Method not allowed"}})
            }
            _ => json!({"error": "Method not allowed"}),
        };
        body.to_string().into_bytes()
    }
}

/// httpbun's reply to a request: one JSON body or the stream's events, each its own step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpbunReply {
    /// `application/json` or `text/event-stream`.
    pub content_type: &'static str,
    /// The body, or one stream event per step.
    pub steps: Vec<Vec<u8>>,
}

/// httpbun's 400 for a body that is not JSON of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpbunError(pub Vec<u8>);

/// Answers a request to `endpoint` as httpbun does.
pub fn answer(endpoint: HttpbunEndpoint, body: &[u8]) -> Result<HttpbunReply, HttpbunError> {
    let request: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid_json(endpoint, body))?;
    let model = |default: &str| {
        request
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(default)
            .to_owned()
    };
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let override_field = if endpoint == HttpbunEndpoint::Responses {
        "output_text"
    } else {
        "content"
    };
    let text = |default: &'static str| {
        request
            .get("httpbun")
            .and_then(|h| h.get(override_field))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map_or_else(|| default.to_owned(), str::to_owned)
    };
    let reply = match endpoint {
        HttpbunEndpoint::ChatCompletions => {
            let prompt = role_lines(request.get("messages"));
            chat(
                &model("gpt-4"),
                &text(CHAT_TEXT),
                estimate(&prompt),
                n(&request),
                stream,
            )
        }
        HttpbunEndpoint::Completions => {
            let prompt = prompt_text(request.get("prompt"));
            let model = model("gpt-3.5-turbo-instruct");
            completion(
                &model,
                &text(COMPLETION_TEXT),
                estimate(&prompt),
                n(&request),
                stream,
            )
        }
        HttpbunEndpoint::Responses => {
            let input = input_text(request.get("input").unwrap_or(&Value::Null));
            let input_tokens = match estimate(&input) {
                0 => 0,
                tokens => tokens + 1,
            };
            responses(
                &model("gpt-4.1-mini"),
                &text(RESPONSES_TEXT),
                input_tokens,
                stream,
            )
        }
        HttpbunEndpoint::Messages => {
            let prompt = role_lines(request.get("messages"));
            let model = model("claude-3-5-sonnet-20241022");
            messages(&model, &text(MESSAGES_TEXT), estimate(&prompt), stream)
        }
    };
    Ok(reply)
}

fn invalid_json(endpoint: HttpbunEndpoint, body: &[u8]) -> HttpbunError {
    let detail = match serde_json::from_slice::<Value>(body) {
        Err(error) => error.to_string(),
        Ok(_) => "expected a JSON object".to_owned(),
    };
    let message = format!("Invalid JSON in request body: {detail}");
    let body = match endpoint {
        HttpbunEndpoint::Messages => {
            json!({"error": {"type": "invalid_request_error", "message": message}})
        }
        _ => json!({"error": {"message": message, "type": "invalid_request_error"}}),
    };
    HttpbunError(body.to_string().into_bytes())
}

/// httpbun's estimate: a quarter of the UTF-8 bytes, rounded up.
fn estimate(text: &str) -> usize {
    text.len().div_ceil(4)
}

fn n(request: &Value) -> usize {
    request
        .get("n")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
        .map_or(1, |n| usize::try_from(n).unwrap_or(1).min(128))
}

/// `"role: content\n"` for every message, as httpbun counts the prompt.
fn role_lines(messages: Option<&Value>) -> String {
    let Some(Value::Array(messages)) = messages else {
        return String::new();
    };
    messages
        .iter()
        .map(|message| {
            let role = message.get("role").and_then(Value::as_str).unwrap_or("");
            format!(
                "{role}: {}\n",
                input_text(message.get("content").unwrap_or(&Value::Null))
            )
        })
        .collect()
}

/// The text of a content or input value, as httpbun flattens it.
fn input_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items
            .iter()
            .map(input_text)
            .filter(|text| !text.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        Value::Object(fields) => {
            if let Some(content) = fields.get("content") {
                let text = input_text(content);
                if !text.is_empty() {
                    return match fields.get("role").and_then(Value::as_str) {
                        Some(role) if !role.is_empty() => format!("{role}: {text}"),
                        _ => text,
                    };
                }
            }
            match fields.get("text").and_then(Value::as_str) {
                Some(text) => text.to_owned(),
                None => value.to_string(),
            }
        }
        other => other.to_string(),
    }
}

fn prompt_text(prompt: Option<&Value>) -> String {
    match prompt {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => other.to_string(),
    }
}

/// httpbun's stream split: leading whitespace alone, then each word with the whitespace after it.
fn words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let lead = rest.len() - rest.trim_start().len();
    if lead > 0 {
        pieces.push(&rest[..lead]);
        rest = &rest[lead..];
    }
    while !rest.is_empty() {
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let after = &rest[word_end..];
        let end = word_end + (after.len() - after.trim_start().len());
        pieces.push(&rest[..end]);
        rest = &rest[end..];
    }
    pieces
}

/// 24 lowercase hex digits.
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())[..24].to_owned()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn whole(body: &Value) -> HttpbunReply {
    HttpbunReply {
        content_type: "application/json",
        steps: vec![body.to_string().into_bytes()],
    }
}

fn data_event(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    sse::write_event(&mut out, None, value);
    out
}

fn typed_event(kind: &str, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    sse::write_event(&mut out, Some(kind), value);
    out
}

fn stream(steps: Vec<Vec<u8>>) -> HttpbunReply {
    HttpbunReply {
        content_type: "text/event-stream",
        steps,
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn chat(model: &str, text: &str, prompt_tokens: usize, n: usize, streamed: bool) -> HttpbunReply {
    let id = format!("chatcmpl-{}", random_id());
    if streamed {
        let chunk = |delta: Value, finish: Value| {
            data_event(
                &json!({"id": id, "object": "chat.completion.chunk", "created": now(),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        };
        let mut steps = vec![chunk(json!({"role": "assistant"}), Value::Null)];
        steps.extend(
            words(text)
                .into_iter()
                .map(|w| chunk(json!({"content": w}), Value::Null)),
        );
        let mut last = chunk(json!({}), json!("stop"));
        last.extend_from_slice(sse::DONE);
        steps.push(last);
        return stream(steps);
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}))
        .collect();
    whole(
        &json!({"id": id, "object": "chat.completion", "created": now(), "model": model,
        "choices": choices, "usage": usage(prompt_tokens, estimate(text))}),
    )
}

fn completion(
    model: &str,
    text: &str,
    prompt_tokens: usize,
    n: usize,
    streamed: bool,
) -> HttpbunReply {
    let id = format!("cmpl-{}", random_id());
    if streamed {
        let chunk = |piece: &str, finish: Value| {
            data_event(
                &json!({"id": id, "object": "text_completion", "created": now(), "model": model,
                "choices": [{"text": piece, "index": 0, "logprobs": null, "finish_reason": finish}]}),
            )
        };
        let mut steps: Vec<Vec<u8>> = words(text)
            .into_iter()
            .map(|w| chunk(w, Value::Null))
            .collect();
        let mut last = chunk("", json!("stop"));
        last.extend_from_slice(sse::DONE);
        steps.push(last);
        return stream(steps);
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"text": text, "index": i, "logprobs": null, "finish_reason": "stop"}))
        .collect();
    whole(
        &json!({"id": id, "object": "text_completion", "created": now(), "model": model,
        "choices": choices, "usage": usage(prompt_tokens, estimate(text))}),
    )
}

fn responses(model: &str, text: &str, input_tokens: usize, streamed: bool) -> HttpbunReply {
    let message_id = format!("msg-{}", random_id());
    let message = json!({"id": message_id, "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": null}]});
    let body = json!({
        "id": format!("resp-{}", random_id()), "object": "response", "created_at": now(),
        "model": model, "status": "completed", "error": null, "output": [message],
        "output_text": text,
        "usage": {"input_tokens": input_tokens, "output_tokens": RESPONSES_OUTPUT_TOKENS,
                  "total_tokens": input_tokens + RESPONSES_OUTPUT_TOKENS,
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
        "parallel_tool_calls": false, "tool_choice": "auto", "tools": []
    });
    if !streamed {
        return whole(&body);
    }
    let mut sequence = 0;
    let mut event = |kind: &str, mut fields: Value| {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(sequence);
        sequence += 1;
        typed_event(kind, &fields)
    };
    let mut in_progress = body.clone();
    in_progress["status"] = json!("in_progress");
    in_progress["output"] = json!([]);
    in_progress["output_text"] = json!("");
    in_progress["usage"] = Value::Null;
    let mut item_in_progress = message.clone();
    item_in_progress["status"] = json!("in_progress");
    item_in_progress["content"] = json!([]);
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let at = |mut fields: Value| {
        fields["item_id"] = json!(message_id);
        fields["output_index"] = json!(0);
        fields["content_index"] = json!(0);
        fields
    };
    let mut first = event("response.created", json!({"response": in_progress}));
    first.extend(event(
        "response.in_progress",
        json!({"response": in_progress}),
    ));
    first.extend(event(
        "response.output_item.added",
        json!({"output_index": 0, "item": item_in_progress}),
    ));
    first.extend(event(
        "response.content_part.added",
        at(json!({"part": part("")})),
    ));
    let mut steps = vec![first];
    for delta in words(text) {
        steps.push(event(
            "response.output_text.delta",
            at(json!({"delta": delta, "logprobs": []})),
        ));
    }
    let mut last = event(
        "response.output_text.done",
        at(json!({"text": text, "logprobs": []})),
    );
    last.extend(event(
        "response.content_part.done",
        at(json!({"part": part(text)})),
    ));
    last.extend(event(
        "response.output_item.done",
        json!({"output_index": 0, "item": message}),
    ));
    last.extend(event("response.completed", json!({"response": body})));
    steps.push(last);
    stream(steps)
}

fn messages(model: &str, text: &str, input_tokens: usize, streamed: bool) -> HttpbunReply {
    let id = format!("msg-{}", random_id());
    let output_tokens = estimate(text);
    if !streamed {
        return whole(&json!({"id": id, "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": text, "citations": null}], "model": model,
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}));
    }
    let start = json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0}}});
    let mut first = typed_event("message_start", &start);
    first.extend(typed_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    let mut steps = vec![first];
    for piece in words(text) {
        steps.push(typed_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    let mut last = typed_event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    );
    last.extend(typed_event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": output_tokens}}),
    ));
    last.extend(typed_event(
        "message_stop",
        &json!({"type": "message_stop"}),
    ));
    steps.push(last);
    stream(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(reply: &HttpbunReply) -> Value {
        serde_json::from_slice(&reply.steps.concat()).unwrap()
    }

    #[test]
    fn resolves_both_path_styles() {
        assert_eq!(
            HttpbunEndpoint::resolve(b"/llm/v1/chat/completions"),
            Some(HttpbunEndpoint::ChatCompletions)
        );
        assert_eq!(
            HttpbunEndpoint::resolve(b"/llm/chat/completions"),
            Some(HttpbunEndpoint::ChatCompletions)
        );
        assert_eq!(
            HttpbunEndpoint::resolve(b"/llm/v1/messages"),
            Some(HttpbunEndpoint::Messages)
        );
        assert_eq!(
            HttpbunEndpoint::resolve(b"/llm/responses?x"),
            Some(HttpbunEndpoint::Responses)
        );
        assert_eq!(HttpbunEndpoint::resolve(b"/v1/chat/completions"), None);
        assert_eq!(HttpbunEndpoint::resolve(b"/llm/v1/embeddings"), None);
    }

    #[test]
    fn chat_matches_httpbuns_body_and_usage() {
        let body = br#"{"model":"gpt-5-nano","messages":[{"role":"user","content":"Hello"}]}"#;
        let reply = json_of(&answer(HttpbunEndpoint::ChatCompletions, body).unwrap());
        let id = reply["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-") && id.len() == 33);
        assert_eq!(
            reply["choices"][0],
            json!({"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": CHAT_TEXT}})
        );
        assert_eq!(
            reply["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 29, "total_tokens": 32})
        );
        let keys: Vec<&str> = reply
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
    }

    #[test]
    fn defaults_overrides_and_usage_of_the_other_endpoints() {
        let reply = json_of(&answer(HttpbunEndpoint::Responses, br#"{"input":"Hello"}"#).unwrap());
        assert_eq!(reply["model"], "gpt-4.1-mini");
        // httpbun writes whole seconds; `1796301848.0` fails strict integer decoders.
        assert!(reply["created_at"].is_u64(), "{}", reply["created_at"]);
        assert_eq!(reply["usage"]["input_tokens"], 3);
        assert_eq!(reply["usage"]["output_tokens"], 29);
        let over = answer(
            HttpbunEndpoint::Responses,
            br#"{"input":"x","httpbun":{"output_text":"mine"}}"#,
        );
        assert_eq!(json_of(&over.unwrap())["output_text"], "mine");

        let reply = json_of(
            &answer(
                HttpbunEndpoint::Messages,
                br#"{"max_tokens":5,"messages":[{"role":"user","content":"Hello"}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(reply["model"], "claude-3-5-sonnet-20241022");
        assert_eq!(
            reply["usage"],
            json!({"input_tokens": 3, "output_tokens": 33})
        );
        assert_eq!(reply["content"][0]["citations"], Value::Null);

        let reply =
            json_of(&answer(HttpbunEndpoint::Completions, br#"{"prompt":"Say","n":2}"#).unwrap());
        assert_eq!(reply["model"], "gpt-3.5-turbo-instruct");
        assert_eq!(reply["choices"][1]["text"], COMPLETION_TEXT);
    }

    #[test]
    fn streams_keep_every_byte_of_whitespace() {
        assert_eq!(
            words("  Hello\n\nWorld  with   spaces"),
            ["  ", "Hello\n\n", "World  ", "with   ", "spaces"]
        );
        let body = br#"{"stream":true,"httpbun":{"content":"Hello\n\nWorld  with   spaces"}}"#;
        let reply = answer(HttpbunEndpoint::ChatCompletions, body).unwrap();
        assert_eq!(reply.content_type, "text/event-stream");
        let text = String::from_utf8(reply.steps.concat()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let joined: String = text
            .split_terminator("\n\n")
            .filter_map(|e| serde_json::from_str::<Value>(e.strip_prefix("data: ").unwrap()).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(joined, "Hello\n\nWorld  with   spaces");
    }

    #[test]
    fn bad_json_and_methods_get_httpbuns_errors() {
        let HttpbunError(body) = answer(HttpbunEndpoint::ChatCompletions, b"{").unwrap_err();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid JSON in request body: ")
        );
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let body: Value =
            serde_json::from_slice(&HttpbunEndpoint::ChatCompletions.method_not_allowed()).unwrap();
        assert_eq!(body, json!({"error": "Method not allowed"}));
    }
}
