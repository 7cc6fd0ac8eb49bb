//! Anthropic's Messages API, `POST /v1/messages`: the request we read, the responses and error
//! envelope we write.
//!
//! A Messages request is read into the [`ChatRequest`] the chat endpoint uses (`system` as a
//! system message, `tool_result` blocks as tool messages, `input_schema` tools as tools), so the
//! mock answers it alike; only the wire format differs.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::openai::ApiError;
use crate::api::openai::chat::{
    ChatMessage, ChatRequest, ResponseFormat, Tool, ToolChoice, parse_stop_sequences,
};
use crate::api::openai::generation::{ChoiceText, FinishReason, Usage};
use crate::api::openai::json::optional;
use crate::api::sse;

/// A parsed Messages request.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The request as the chat endpoint would see it.
    pub chat: ChatRequest,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Anthropic words its validation errors `field: problem`.
fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::bad_request(format!("{field}: {problem}"), Some(field), None)
}

impl MessagesRequest {
    /// Parses and validates a request body, with Anthropic's wording for bad input.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(ApiError::invalid_json)?;
        let Value::Object(mut fields) = value else {
            return Err(invalid("body", "Input should be an object"));
        };
        let model = match fields.remove("model") {
            Some(Value::String(model)) => model,
            None => return Err(invalid("model", "Field required")),
            Some(other) => {
                return Err(invalid(
                    "model",
                    &format!("Input should be a string, got {}", type_name(&other)),
                ));
            }
        };
        let max_tokens = match fields.get("max_tokens") {
            None | Some(Value::Null) => return Err(invalid("max_tokens", "Field required")),
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    invalid(
                        "max_tokens",
                        "Input should be an integer greater than or equal to 1",
                    )
                })?,
        };
        let mut messages = Vec::new();
        if let Some(system) = fields.get("system") {
            messages.push(ChatMessage {
                role: "system".into(),
                text: block_text(system),
                name: None,
            });
        }
        let items = match fields.remove("messages") {
            Some(Value::Array(items)) => items,
            None => return Err(invalid("messages", "Field required")),
            Some(other) => {
                return Err(invalid(
                    "messages",
                    &format!("Input should be a valid list, got {}", type_name(&other)),
                ));
            }
        };
        for (i, item) in items.iter().enumerate() {
            let role = match item.get("role").and_then(Value::as_str) {
                Some(role @ ("user" | "assistant")) => role,
                Some(_) => {
                    return Err(invalid(
                        &format!("messages.{i}.role"),
                        "Input should be 'user' or 'assistant'",
                    ));
                }
                None => return Err(invalid(&format!("messages.{i}.role"), "Field required")),
            };
            let content = item
                .get("content")
                .ok_or_else(|| invalid(&format!("messages.{i}.content"), "Field required"))?;
            let is_tool_result = content.as_array().is_some_and(|blocks| {
                blocks
                    .iter()
                    .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            });
            messages.push(ChatMessage {
                role: if is_tool_result { "tool" } else { role }.to_owned(),
                text: block_text(content),
                name: None,
            });
        }
        let tools = parse_tools(&fields)?;
        let tool_choice = match fields.get("tool_choice") {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(choice) => match choice.get("type").and_then(Value::as_str) {
                Some("auto") => ToolChoice::Auto,
                Some("any") => ToolChoice::Required,
                Some("none") => ToolChoice::None,
                Some("tool") => match choice.get("name").and_then(Value::as_str) {
                    Some(name) if tools.iter().any(|t| t.name == name) => {
                        ToolChoice::Named(name.to_owned())
                    }
                    Some(name) => {
                        return Err(invalid(
                            "tool_choice.name",
                            &format!("Tool '{name}' not found in tools"),
                        ));
                    }
                    None => return Err(invalid("tool_choice.name", "Field required")),
                },
                _ => {
                    return Err(invalid(
                        "tool_choice.type",
                        "Input should be 'auto', 'any', 'tool' or 'none'",
                    ));
                }
            },
        };
        let content_override =
            optional(&fields, "httpbun", "httpbun", "an object", Value::as_object)?
                .and_then(|options| options.get("content"))
                .and_then(Value::as_str)
                .map(str::to_owned);
        let stream = optional(&fields, "stream", "stream", "a boolean", Value::as_bool)?;
        let chat = ChatRequest {
            model,
            messages,
            stream: stream.unwrap_or(false),
            include_usage: false,
            content_override,
            n: 1,
            max_tokens: Some(max_tokens),
            stop: parse_stop_sequences(&fields, "stop_sequences")?,
            seed: None,
            tools,
            tool_choice,
            parallel_tool_calls: true,
            response_format: ResponseFormat::Text,
        };
        Ok(Self { chat })
    }
}

/// The text of a content value: a string, or its `text` blocks (and `tool_result` contents)
/// joined.
fn block_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|block| match block.get("type").and_then(Value::as_str) {
                Some("text") => block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                Some("tool_result") => block.get("content").map(block_text).unwrap_or_default(),
                _ => String::new(),
            })
            .collect(),
        _ => String::new(),
    }
}

fn parse_tools(fields: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(items) = optional(fields, "tools", "tools", "an array", Value::as_array)? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(&format!("tools.{i}.name"), "Field required"))?;
            let parameters = item
                .get("input_schema")
                .filter(|schema| schema.is_object())
                .cloned()
                .ok_or_else(|| invalid(&format!("tools.{i}.input_schema"), "Field required"))?;
            Ok(Tool {
                name: name.to_owned(),
                parameters,
            })
        })
        .collect()
}

/// Anthropic's error envelope, `{"type":"error","error":{"type","message"}}`, for an error
/// whose status llm-edge chose.
pub fn error_json(error: &ApiError) -> Vec<u8> {
    let kind = match error.status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        500 => "api_error",
        503 | 529 => "overloaded_error",
        _ => "invalid_request_error",
    };
    let envelope = ErrorEnvelope {
        kind: "error",
        error: ErrorBody {
            kind,
            message: &error.message,
        },
    };
    serde_json::to_vec(&envelope).expect("serializing borrowed structs cannot fail")
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn stop_reason(choice: &ChoiceText<'_>) -> &'static str {
    match choice.finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Stop => "end_turn",
    }
}

/// `toolu_…` from an OpenAI-style `call_…` id.
fn tool_use_id(call_id: &str) -> String {
    format!("toolu_{}", call_id.trim_start_matches("call_"))
}

/// A content block, as a `message` holds it and as `content_block_start` opens it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockJson<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
}

fn content_blocks<'a>(choice: &'a ChoiceText<'a>) -> Vec<BlockJson<'a>> {
    if choice.tool_calls.is_empty() {
        return vec![BlockJson::Text {
            text: choice.content,
        }];
    }
    choice
        .tool_calls
        .iter()
        .map(|call| BlockJson::ToolUse {
            id: tool_use_id(&call.id),
            name: &call.name,
            input: serde_json::from_str(&call.arguments)
                .unwrap_or_else(|_| Value::Object(Map::new())),
        })
        .collect()
}

/// `usage`, cache counts included (llm-edge caches nothing).
#[derive(Serialize)]
struct UsageJson {
    input_tokens: u32,
    output_tokens: u32,
    cache_creation_input_tokens: u32,
    cache_read_input_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(usage: Usage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: usage.cached_tokens,
        }
    }
}

/// A `message`, in the order Anthropic writes its fields.
#[derive(Serialize)]
struct MessageJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockJson<'a>>,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<()>,
    usage: UsageJson,
}

/// Renders a `message` object.
pub fn render_message(model: &str, id: &str, choice: &ChoiceText<'_>, usage: Usage) -> Vec<u8> {
    let message = MessageJson {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: content_blocks(choice),
        stop_reason: Some(stop_reason(choice)),
        stop_sequence: None,
        usage: usage.into(),
    };
    serde_json::to_vec(&message).expect("serializing borrowed structs cannot fail")
}

/// A streamed event; its `type` is also its SSE event name.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum EventJson<'a> {
    MessageStart {
        message: MessageJson<'a>,
    },
    ContentBlockStart {
        index: usize,
        content_block: BlockJson<'a>,
    },
    Ping,
    ContentBlockDelta {
        index: usize,
        delta: DeltaJson<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: StopJson,
        usage: OutputUsageJson,
    },
    MessageStop,
}

impl EventJson<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::Ping => "ping",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        sse::write_event(out, Some(self.name()), self);
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum DeltaJson<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct StopJson {
    stop_reason: &'static str,
    stop_sequence: Option<()>,
}

#[derive(Serialize)]
struct OutputUsageJson {
    output_tokens: u32,
}

/// Renders the event stream in timed steps: `message_start`, then per content block its start,
/// deltas (text, or `input_json_delta` fragments) and stop, then `message_delta` and
/// `message_stop`. Each delta is a step; each tool-use block opens with its own step.
pub fn render_stream(model: &str, id: &str, choice: &ChoiceText<'_>, usage: Usage) -> Vec<Vec<u8>> {
    let mut steps: Vec<Vec<u8>> = vec![Vec::new()];
    let start_usage = Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: 1,
        cached_tokens: usage.cached_tokens,
    };
    let message = MessageJson {
        id,
        kind: "message",
        role: "assistant",
        model,
        content: Vec::new(),
        stop_reason: None,
        stop_sequence: None,
        usage: start_usage.into(),
    };
    EventJson::MessageStart { message }.write(&mut steps[0]);
    if choice.tool_calls.is_empty() {
        let first = &mut steps[0];
        let content_block = BlockJson::Text { text: "" };
        EventJson::ContentBlockStart {
            index: 0,
            content_block,
        }
        .write(first);
        EventJson::Ping.write(first);
        for (k, text) in choice.deltas.iter().enumerate() {
            if k > 0 {
                steps.push(Vec::new());
            }
            let delta = DeltaJson::TextDelta { text };
            let step = steps.last_mut().expect("a step");
            EventJson::ContentBlockDelta { index: 0, delta }.write(step);
        }
        EventJson::ContentBlockStop { index: 0 }.write(steps.last_mut().expect("a step"));
    } else {
        for (index, call) in choice.tool_calls.iter().enumerate() {
            if index > 0 {
                steps.push(Vec::new());
            }
            let content_block = BlockJson::ToolUse {
                id: tool_use_id(&call.id),
                name: &call.name,
                input: Value::Object(Map::new()),
            };
            EventJson::ContentBlockStart {
                index,
                content_block,
            }
            .write(steps.last_mut().expect("a step"));
            let mut start = 0;
            for &end in &call.cuts {
                steps.push(Vec::new());
                let delta = DeltaJson::InputJsonDelta {
                    partial_json: &call.arguments[start..end],
                };
                EventJson::ContentBlockDelta { index, delta }
                    .write(steps.last_mut().expect("a step"));
                start = end;
            }
            EventJson::ContentBlockStop { index }.write(steps.last_mut().expect("a step"));
        }
    }
    let last = steps.last_mut().expect("a step");
    EventJson::MessageDelta {
        delta: StopJson {
            stop_reason: stop_reason(choice),
            stop_sequence: None,
        },
        usage: OutputUsageJson {
            output_tokens: usage.completion_tokens,
        },
    }
    .write(last);
    EventJson::MessageStop.write(last);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::generation::ToolCallText;
    use serde_json::json;

    fn parse(body: Value) -> Result<MessagesRequest, ApiError> {
        MessagesRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn reads_system_messages_tools_and_tool_results() {
        let req = parse(json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be kind",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"}, "stop_sequences": ["END"]}))
        .unwrap();
        let roles: Vec<&str> = req.chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(req.chat.messages[3].text, "sunny");
        assert!(req.chat.ends_with_tool_result());
        assert_eq!(
            (req.chat.max_tokens, &req.chat.tool_choice),
            (Some(100), &ToolChoice::Required)
        );
        assert_eq!(req.chat.stop, ["END"]);
    }

    #[test]
    fn bad_requests_use_anthropics_wording() {
        for (body, field) in [
            (json!({"max_tokens": 5, "messages": []}), "model"),
            (json!({"model": "m", "messages": []}), "max_tokens"),
            (
                json!({"model": "m", "max_tokens": 0, "messages": []}),
                "max_tokens",
            ),
            (json!({"model": "m", "max_tokens": 5}), "messages"),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"name": "t"}]}),
                "tools.0.input_schema",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(err.status, 400);
            assert!(
                err.message.starts_with(&format!("{field}: ")),
                "{}",
                err.message
            );
        }
        let envelope: Value =
            serde_json::from_slice(&error_json(&invalid("model", "Field required"))).unwrap();
        assert_eq!(
            envelope,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "model: Field required"}})
        );
    }

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 9,
            completion_tokens: 2,
            cached_tokens: 0,
        }
    }

    fn events(steps: &[Vec<u8>]) -> Vec<Value> {
        String::from_utf8(steps.concat())
            .unwrap()
            .split_terminator("\n\n")
            .map(|event| {
                let (_, data) = event.split_once("\ndata: ").unwrap();
                serde_json::from_str(data).unwrap()
            })
            .collect()
    }

    #[test]
    fn text_messages_render_and_stream() {
        let choice = ChoiceText {
            content: "Hi there",
            deltas: vec!["Hi", " there"],
            tool_calls: vec![],
            finish_reason: FinishReason::Length,
        };
        let message: Value =
            serde_json::from_slice(&render_message("m", "msg_1", &choice, usage())).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "Hi there"}])
        );
        assert_eq!(message["stop_reason"], "max_tokens");
        assert_eq!(message["usage"]["output_tokens"], 2);
        let events = events(&render_stream("m", "msg_1", &choice, usage()));
        assert_eq!(
            events[4],
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": " there"}})
        );
        let kinds: Vec<String> = events
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }

    #[test]
    fn tool_use_renders_blocks_and_streams_partial_json() {
        let choice = ChoiceText {
            content: "",
            deltas: vec![],
            tool_calls: vec![ToolCallText {
                id: "call_abc".into(),
                name: "w".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
                cuts: vec![4, 15],
            }],
            finish_reason: FinishReason::ToolCalls,
        };
        let message: Value =
            serde_json::from_slice(&render_message("m", "msg_1", &choice, usage())).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "tool_use", "id": "toolu_abc", "name": "w", "input": {"city": "Oslo"}}])
        );
        assert_eq!(message["stop_reason"], "tool_use");
        let partial: String = events(&render_stream("m", "msg_1", &choice, usage()))
            .iter()
            .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(partial, r#"{"city":"Oslo"}"#);
    }
}
