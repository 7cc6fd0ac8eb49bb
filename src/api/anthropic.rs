//! Anthropic's Messages API, `POST /v1/messages`: the request we read, the responses and error
//! envelope we write.
//!
//! A Messages request is read into the [`ChatRequest`] the chat endpoint uses (`system` as a
//! system message, `tool_result` blocks as tool messages, `input_schema` tools as tools,
//! `output_config.format` as a JSON schema response format), so the mock answers it alike; only
//! the wire format differs. Bad requests get Anthropic's wording, `field.path: problem`.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::api::openai::ApiError;
use crate::api::openai::chat::{ChatMessage, ChatRequest, ResponseFormat, Tool, ToolChoice};
use crate::api::openai::generation::{ChoiceText, FinishReason, Usage};
use crate::api::sse;

/// A parsed Messages request.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The request as the chat endpoint would see it.
    pub chat: ChatRequest,
}

/// Anthropic words its validation errors `field.path: problem`, as its request models report
/// them.
fn invalid(field: &str, problem: &str) -> ApiError {
    ApiError::bad_request(format!("{field}: {problem}"), Some(field), None)
}

/// Anthropic's 400 for a body that is not JSON.
fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        format!("The request body is not valid JSON: {detail}"),
        None,
        None,
    )
}

/// The problem Anthropic names for a value that is not of the `expected` JSON type.
fn not_a(expected: &str) -> String {
    format!("Input should be a valid {expected}")
}

/// The field `key` of `fields`, absent when null; an error naming `at` unless `read` takes it.
fn optional<'v, T>(
    fields: &'v Map<String, Value>,
    key: &str,
    at: &str,
    expected: &str,
    read: impl FnOnce(&'v Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => read(value)
            .map(Some)
            .ok_or_else(|| invalid(at, &not_a(expected))),
    }
}

impl MessagesRequest {
    /// Parses and validates a request body, with Anthropic's wording for bad input.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(invalid_json)?;
        let Value::Object(mut fields) = value else {
            return Err(invalid("body", &not_a("dictionary")));
        };
        let model = match fields.remove("model") {
            Some(Value::String(model)) => model,
            None | Some(Value::Null) => return Err(invalid("model", "Field required")),
            Some(_) => return Err(invalid("model", &not_a("string"))),
        };
        let max_tokens = match fields.get("max_tokens") {
            None | Some(Value::Null) => return Err(invalid("max_tokens", "Field required")),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n < 1) => {
                return Err(invalid(
                    "max_tokens",
                    "Input should be greater than or equal to 1",
                ));
            }
            Some(value) => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("max_tokens", &not_a("integer")))?,
        };
        let mut messages = Vec::new();
        if let Some(system) = fields.get("system").filter(|system| !system.is_null()) {
            let text = content_text("system", system)?;
            messages.push(ChatMessage {
                role: "system".into(),
                text,
                name: None,
            });
        }
        let items = match fields.remove("messages") {
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) => return Err(invalid("messages", "Field required")),
            Some(_) => return Err(invalid("messages", &not_a("list"))),
        };
        if items.is_empty() {
            return Err(invalid("messages", "at least one message is required"));
        }
        let mut called_tools = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let (role, text, calls) = parse_message(i, item)?;
            called_tools.extend(calls);
            messages.push(ChatMessage {
                role: role.to_owned(),
                text,
                name: None,
            });
        }
        let tools = parse_tools(&fields)?;
        let (tool_choice, parallel_tool_calls) = parse_tool_choice(&fields, &tools)?;
        let content_override = fields
            .get("httpbun")
            .and_then(|options| options.get("content"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let stream = optional(&fields, "stream", "stream", "boolean", Value::as_bool)?;
        let chat = ChatRequest {
            model,
            messages,
            stream: stream.unwrap_or(false),
            include_usage: false,
            content_override,
            n: 1,
            max_tokens: Some(max_tokens),
            stop: parse_stop_sequences(&fields)?,
            seed: None,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format: parse_output_format(&fields)?,
            called_tools,
        };
        Ok(Self { chat })
    }
}

/// One message: its role as the chat endpoint sees it (`tool` for a turn of `tool_result`
/// blocks), its text, and the tools its `tool_use` blocks call.
fn parse_message(i: usize, item: &Value) -> Result<(&'static str, String, Vec<String>), ApiError> {
    let at = format!("messages.{i}");
    let Value::Object(message) = item else {
        return Err(invalid(&at, &not_a("dictionary")));
    };
    let role = match message.get("role") {
        Some(Value::String(role)) if role == "user" => "user",
        Some(Value::String(role)) if role == "assistant" => "assistant",
        Some(Value::String(role)) if role == "system" => {
            return Err(invalid(
                "messages",
                "Unexpected role \"system\". The Messages API accepts a top-level `system` \
                 parameter, not \"system\" as an input message role.",
            ));
        }
        None | Some(Value::Null) => return Err(invalid(&format!("{at}.role"), "Field required")),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.role"),
                "Input should be 'user' or 'assistant'",
            ));
        }
    };
    let at = format!("{at}.content");
    let content = match message.get("content") {
        None => return Err(invalid(&at, "Field required")),
        Some(content) => content,
    };
    let text = content_text(&at, content)?;
    let blocks = content.as_array().map_or(&[][..], Vec::as_slice);
    let kind = |block: &Value| block.get("type").and_then(Value::as_str).map(str::to_owned);
    let calls = blocks
        .iter()
        .filter(|block| kind(block).as_deref() == Some("tool_use"))
        .filter_map(|block| block.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let answers_a_tool = blocks
        .iter()
        .any(|block| kind(block).as_deref() == Some("tool_result"));
    let role = if answers_a_tool { "tool" } else { role };
    Ok((role, text, calls))
}

/// The text of a content value (a message's `content`, `system`, a `tool_result`'s `content`):
/// a string, or its `text` blocks (and `tool_result` contents) joined. Anything else is
/// Anthropic's 400 naming `at`.
fn content_text(at: &str, content: &Value) -> Result<String, ApiError> {
    let blocks = match content {
        Value::String(text) => return Ok(text.clone()),
        Value::Array(blocks) => blocks,
        _ => return Err(invalid(at, &not_a("list"))),
    };
    let mut text = String::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = format!("{at}.{j}");
        let Value::Object(block) = block else {
            return Err(invalid(&at, &not_a("dictionary")));
        };
        match block.get("type").and_then(Value::as_str) {
            Some("text") => match block.get("text") {
                Some(Value::String(part)) => text.push_str(part),
                None => return Err(invalid(&format!("{at}.text"), "Field required")),
                Some(_) => return Err(invalid(&format!("{at}.text"), &not_a("string"))),
            },
            Some("tool_result") => {
                if let Some(result) = block.get("content").filter(|c| !c.is_null()) {
                    text.push_str(&content_text(&format!("{at}.content"), result)?);
                }
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    &at,
                    "Unable to extract tag using discriminator 'type'",
                ));
            }
        }
    }
    Ok(text)
}

/// Custom tools (`name`, `input_schema`, `type` absent or `custom`); server tools (`web_search`,
/// `bash`, …) are accepted and never called.
fn parse_tools(fields: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(items) = optional(fields, "tools", "tools", "list", Value::as_array)? else {
        return Ok(Vec::new());
    };
    let mut tools = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |field: &str| format!("tools.{i}{field}");
        let Value::Object(tool) = item else {
            return Err(invalid(&at(""), &not_a("dictionary")));
        };
        if tool
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|kind| kind != "custom")
        {
            continue;
        }
        let name = match tool.get("name") {
            Some(Value::String(name)) => name.clone(),
            None | Some(Value::Null) => return Err(invalid(&at(".name"), "Field required")),
            Some(_) => return Err(invalid(&at(".name"), &not_a("string"))),
        };
        let parameters = match tool.get("input_schema") {
            Some(schema @ Value::Object(_)) => schema.clone(),
            None | Some(Value::Null) => {
                return Err(invalid(&at(".input_schema"), "Field required"));
            }
            Some(_) => return Err(invalid(&at(".input_schema"), &not_a("dictionary"))),
        };
        tools.push(Tool { name, parameters });
    }
    Ok(tools)
}

/// `tool_choice` (`auto`, `any`, `tool` with its `name`, `none`) and whether several tools
/// may be called at once (`disable_parallel_tool_use` says not).
fn parse_tool_choice(
    fields: &Map<String, Value>,
    tools: &[Tool],
) -> Result<(ToolChoice, bool), ApiError> {
    let Some(choice) = optional(
        fields,
        "tool_choice",
        "tool_choice",
        "dictionary",
        Value::as_object,
    )?
    else {
        return Ok((ToolChoice::Auto, true));
    };
    let parallel = !optional(
        choice,
        "disable_parallel_tool_use",
        "tool_choice.disable_parallel_tool_use",
        "boolean",
        Value::as_bool,
    )?
    .unwrap_or(false);
    let tool_choice = match choice.get("type").and_then(Value::as_str) {
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
    };
    Ok((tool_choice, parallel))
}

/// `stop_sequences`: a list of strings. Empty strings never match, so they are dropped.
fn parse_stop_sequences(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let key = "stop_sequences";
    let Some(items) = optional(fields, key, key, "list", Value::as_array)? else {
        return Ok(Vec::new());
    };
    let mut sequences = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(sequence) if sequence.is_empty() => {}
            Value::String(sequence) => sequences.push(sequence.clone()),
            _ => return Err(invalid(&format!("{key}.{i}"), &not_a("string"))),
        }
    }
    Ok(sequences)
}

/// Structured output: `output_config.format`, or the older beta's top-level `output_format`,
/// each `{"type": "json_schema", "schema": {…}}`.
fn parse_output_format(fields: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let config = optional(
        fields,
        "output_config",
        "output_config",
        "dictionary",
        Value::as_object,
    )?;
    let (at, format) = match config.and_then(|config| config.get("format")) {
        Some(format) if !format.is_null() => ("output_config.format", format),
        _ => match fields.get("output_format") {
            Some(format) if !format.is_null() => ("output_format", format),
            _ => return Ok(ResponseFormat::Text),
        },
    };
    let Value::Object(format) = format else {
        return Err(invalid(at, &not_a("dictionary")));
    };
    match format.get("type") {
        Some(Value::String(kind)) if kind == "json_schema" => {}
        None | Some(Value::Null) => return Err(invalid(&format!("{at}.type"), "Field required")),
        Some(_) => {
            return Err(invalid(
                &format!("{at}.type"),
                "Input should be 'json_schema'",
            ));
        }
    }
    match format.get("schema") {
        Some(schema @ Value::Object(_)) => Ok(ResponseFormat::JsonSchema(schema.clone())),
        None | Some(Value::Null) => Err(invalid(&format!("{at}.schema"), "Field required")),
        Some(_) => Err(invalid(&format!("{at}.schema"), &not_a("dictionary"))),
    }
}

/// Anthropic's error envelope, `{"type":"error","error":{"type","message"}}`, for an error
/// whose status llm-edge chose. Errors raised in OpenAI's terms on the way to this endpoint
/// (a body that is not JSON, a missing field, a size limit, a fault, an unknown model) are
/// worded as Anthropic words them, so nothing here speaks of OpenAI.
pub fn error_json(error: &ApiError) -> Vec<u8> {
    let kind = match error.status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let message = wording(error);
    let envelope = ErrorEnvelope {
        kind: "error",
        error: ErrorBody {
            kind,
            message: &message,
        },
    };
    serde_json::to_vec(&envelope).expect("serializing borrowed structs cannot fail")
}

/// The prefix and suffix of [`ApiError::invalid_json`]'s message, around the parser's detail.
const OPENAI_JSON_ERROR: (&str, &str) = (
    "We could not parse the JSON body of your request (",
    "). The OpenAI API expects a JSON payload.",
);

/// The prefix and suffix of the `model_not_found` fault's message, around the model.
const OPENAI_MODEL_NOT_FOUND: (&str, &str) = (
    "The model `",
    "` does not exist or you do not have access to it.",
);

/// OpenAI's wording of a server error, as llm-edge's 500 and its `503` fault write them: only
/// these are reworded as Anthropic words them; an upstream's own message (a translated reply's)
/// goes on as it came.
const OPENAI_SERVER_ERRORS: [&str; 2] = [
    "The server had an error while processing your request. Sorry about that!",
    "The engine is currently overloaded, please try again later.",
];

/// Anthropic's message for an error: its own when it has one for the error's kind, else the
/// error's message as llm-edge wrote it (which names no API).
fn wording(error: &ApiError) -> Cow<'_, str> {
    let between = |(prefix, suffix): (&str, &str)| {
        error
            .message
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
    };
    // OpenAI's `messages[0].role` is Anthropic's `messages.0.role`.
    let field = || {
        error
            .param
            .as_deref()
            .unwrap_or("body")
            .replace('[', ".")
            .replace(']', "")
    };
    let owned = |text: &str| Cow::Owned(text.to_owned());
    if let Some(detail) = between(OPENAI_JSON_ERROR).filter(|_| error.status == 400) {
        return Cow::Owned(format!("The request body is not valid JSON: {detail}"));
    }
    match (error.status, error.code) {
        (400, Some("missing_required_parameter")) => {
            Cow::Owned(format!("{}: Field required", field()))
        }
        (400, Some("invalid_type")) => {
            let expected = error
                .message
                .split_once(": expected ")
                .and_then(|(_, rest)| rest.split_once(", but got "))
                .map(|(expected, _)| expected);
            let expected = match expected {
                Some("a string") => "string",
                Some("an integer") => "integer",
                Some("a boolean") => "boolean",
                Some("an array") => "list",
                Some("an object") => "dictionary",
                _ => "value",
            };
            Cow::Owned(format!("{}: {}", field(), not_a(expected)))
        }
        (400, Some("empty_array")) => {
            Cow::Owned(format!("{}: at least one item is required", field()))
        }
        (401, _) => owned("invalid x-api-key"),
        (403, _) => owned("Your API key does not have permission to use the specified resource."),
        (404, Some("model_not_found")) => match between(OPENAI_MODEL_NOT_FOUND) {
            Some(model) => Cow::Owned(format!("model: {model}")),
            None => owned("model: not found"),
        },
        (405, _) => owned("Method Not Allowed"),
        (413, _) => owned("Request exceeds the maximum size"),
        // A fault's rate limit (a budget's is llm-edge's own, of kind `tokens`).
        (429, _) if error.kind == "requests" => owned(
            "This request would exceed your organization's rate limit of 60 requests per \
             minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can \
             see the response headers for current usage. Please try again later.",
        ),
        (500, _) if OPENAI_SERVER_ERRORS.contains(&error.message.as_str()) => {
            owned("Internal server error")
        }
        (503 | 529, _) if OPENAI_SERVER_ERRORS.contains(&error.message.as_str()) => {
            owned("Overloaded")
        }
        _ => Cow::Borrowed(error.message.as_str()),
    }
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

/// Why the reply stopped: `stop_sequence` when it ended at one of the request's
/// `stop_sequences` (`stop_sequence` names it), else as the choice finished.
fn stop_reason(choice: &ChoiceText<'_>, stop_sequence: Option<&str>) -> &'static str {
    match choice.finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::Stop if stop_sequence.is_some() => "stop_sequence",
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
            // Anthropic counts cache reads apart: `input_tokens` is the uncached rest.
            input_tokens: usage.prompt_tokens.saturating_sub(usage.cached_tokens),
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
    stop_sequence: Option<&'a str>,
    usage: UsageJson,
}

/// What one rendered message is: the model answering, its id, its content and how it stopped.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The model, as the request named it.
    pub model: &'a str,
    /// `msg_…`.
    pub id: &'a str,
    /// The text or tool calls.
    pub choice: &'a ChoiceText<'a>,
    /// The stop sequence the text ended at, if it did.
    pub stop_sequence: Option<&'a str>,
}

impl Reply<'_> {
    fn stop_sequence(&self) -> Option<&str> {
        self.stop_sequence
            .filter(|_| self.choice.finish_reason == FinishReason::Stop)
    }
}

/// Renders a `message` object.
pub fn render_message(reply: &Reply<'_>, usage: Usage) -> Vec<u8> {
    let stop_sequence = reply.stop_sequence();
    let message = MessageJson {
        id: reply.id,
        kind: "message",
        role: "assistant",
        model: reply.model,
        content: content_blocks(reply.choice),
        stop_reason: Some(stop_reason(reply.choice, stop_sequence)),
        stop_sequence,
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
        delta: StopJson<'a>,
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
struct StopJson<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutputUsageJson {
    output_tokens: u32,
}

/// Renders the event stream in timed steps: `message_start`, then per content block its start,
/// deltas (text, or `input_json_delta` fragments) and stop, then `message_delta` and
/// `message_stop`. Each delta is a step; each tool-use block opens with its own step.
pub fn render_stream(reply: &Reply<'_>, usage: Usage) -> Vec<Vec<u8>> {
    let Reply {
        model, id, choice, ..
    } = *reply;
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
            stop_reason: stop_reason(choice, reply.stop_sequence()),
            stop_sequence: reply.stop_sequence(),
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

    fn message(extra: Value) -> Value {
        let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    }

    #[test]
    fn reads_system_messages_tools_and_tool_results() {
        let req = parse(json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be kind",
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}],
            "tools": [{"name": "w", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END", ""]}))
        .unwrap();
        let roles: Vec<&str> = req.chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(req.chat.messages[3].text, "sunny");
        assert!(req.chat.ends_with_tool_result());
        assert_eq!(
            (req.chat.max_tokens, &req.chat.tool_choice),
            (Some(100), &ToolChoice::Required)
        );
        assert!(!req.chat.parallel_tool_calls);
        assert_eq!(req.chat.stop, ["END"]);
        assert_eq!(req.chat.called_tools, ["w"]);
        let names: Vec<&str> = req.chat.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["w"], "server tools are never called");
    }

    #[test]
    fn output_config_and_the_beta_output_format_ask_for_a_schema() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let format = json!({"type": "json_schema", "schema": schema});
        for extra in [
            json!({"output_config": {"format": format, "effort": "low"}}),
            json!({"output_format": format}),
        ] {
            let req = parse(message(extra)).unwrap();
            assert_eq!(
                req.chat.response_format,
                ResponseFormat::JsonSchema(schema.clone())
            );
        }
        let plain = parse(message(json!({"output_config": {"effort": "high"}}))).unwrap();
        assert_eq!(plain.chat.response_format, ResponseFormat::Text);
        for (extra, wording) in [
            (
                json!({"output_config": {"format": {"type": "json_object"}}}),
                "output_config.format.type: Input should be 'json_schema'",
            ),
            (
                json!({"output_config": {"format": {"type": "json_schema"}}}),
                "output_config.format.schema: Field required",
            ),
            (
                json!({"output_format": {"schema": {}}}),
                "output_format.type: Field required",
            ),
            (
                json!({"output_config": []}),
                "output_config: Input should be a valid dictionary",
            ),
        ] {
            assert_eq!(parse(message(extra)).unwrap_err().message, wording);
        }
    }

    #[test]
    fn bad_requests_get_anthropics_wording() {
        let user = json!([{"role": "user", "content": "x"}]);
        for (body, wording) in [
            (
                json!({"max_tokens": 5, "messages": user}),
                "model: Field required",
            ),
            (
                json!({"model": 5, "max_tokens": 5, "messages": user}),
                "model: Input should be a valid string",
            ),
            (
                json!({"model": "m", "messages": user}),
                "max_tokens: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": user}),
                "max_tokens: Input should be greater than or equal to 1",
            ),
            (
                json!({"model": "m", "max_tokens": "5", "messages": user}),
                "max_tokens: Input should be a valid integer",
            ),
            (
                json!({"model": "m", "max_tokens": 5}),
                "messages: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": []}),
                "messages: at least one message is required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": {}}),
                "messages: Input should be a valid list",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
                "messages: Unexpected role \"system\". The Messages API accepts a top-level \
                 `system` parameter, not \"system\" as an input message role.",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}),
                "messages.0.role: Input should be 'user' or 'assistant'",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"content": "x"}]}),
                "messages.0.role: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}),
                "messages.0.content: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}),
                "messages.0.content: Input should be a valid list",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text"}]}]}),
                "messages.0.content.0.text: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": ["x"]}]}),
                "messages.0.content.0: Input should be a valid dictionary",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "system": 3}),
                "system: Input should be a valid list",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "tools": [{"name": "t"}]}),
                "tools.0.input_schema: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "stop_sequences": "END"}),
                "stop_sequences: Input should be a valid list",
            ),
            (
                json!({"model": "m", "max_tokens": 5, "messages": user, "stream": "yes"}),
                "stream: Input should be a valid boolean",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!((err.status, err.message.as_str()), (400, wording), "{body}");
            assert!(!err.message.contains("OpenAI"));
        }
        let err = MessagesRequest::parse(b"{").unwrap_err();
        assert!(
            err.message
                .starts_with("The request body is not valid JSON: "),
            "{}",
            err.message
        );
        let envelope: Value =
            serde_json::from_slice(&error_json(&invalid("model", "Field required"))).unwrap();
        assert_eq!(
            envelope,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "model: Field required"}})
        );
    }

    fn envelope(error: &ApiError) -> (String, String) {
        let body: Value = serde_json::from_slice(&error_json(error)).unwrap();
        assert_eq!(body["type"], "error");
        (
            body["error"]["type"].as_str().unwrap().to_owned(),
            body["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn errors_raised_in_openais_terms_get_anthropics_type_and_wording() {
        let fault = |status| crate::mock::faults::error_for_status(status, "claude-x").unwrap();
        for (error, kind, wording) in [
            (
                ApiError::invalid_json("EOF while parsing"),
                "invalid_request_error",
                "The request body is not valid JSON: EOF while parsing",
            ),
            (
                ApiError::missing_parameter("messages"),
                "invalid_request_error",
                "messages: Field required",
            ),
            (
                ApiError::invalid_type("messages[0].content", "a string", "an integer"),
                "invalid_request_error",
                "messages.0.content: Input should be a valid string",
            ),
            (
                ApiError::request_too_large(10),
                "request_too_large",
                "Request exceeds the maximum size",
            ),
            (
                ApiError::method_not_allowed("GET", "/v1/messages"),
                "invalid_request_error",
                "Method Not Allowed",
            ),
            (ApiError::internal(), "api_error", "Internal server error"),
            (
                fault(401).error,
                "authentication_error",
                "invalid x-api-key",
            ),
            (
                fault(403).error,
                "permission_error",
                "Your API key does not have permission to use the specified resource.",
            ),
            (fault(404).error, "not_found_error", "model: claude-x"),
            (fault(500).error, "api_error", "Internal server error"),
            (fault(503).error, "overloaded_error", "Overloaded"),
        ] {
            assert_eq!(
                envelope(&error),
                (kind.to_owned(), wording.to_owned()),
                "{error:?}"
            );
        }
        for status in crate::mock::faults::FAULT_STATUSES {
            let (_, wording) = envelope(&fault(status).error);
            assert!(
                !wording.contains("OpenAI") && !wording.contains("openai"),
                "{wording}"
            );
        }
        let (kind, limited) = envelope(&fault(429).error);
        assert_eq!(kind, "rate_limit_error");
        assert!(limited.contains("rate limit"), "{limited}");
        let (kind, upstream) = envelope(&ApiError::bad_gateway("unreadable"));
        assert_eq!(kind, "api_error");
        assert!(upstream.ends_with("unreadable"));
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

    fn reply<'a>(choice: &'a ChoiceText<'a>, stop_sequence: Option<&'a str>) -> Reply<'a> {
        Reply {
            model: "m",
            id: "msg_1",
            choice,
            stop_sequence,
        }
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
            serde_json::from_slice(&render_message(&reply(&choice, None), usage())).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "text", "text": "Hi there"}])
        );
        assert_eq!(message["stop_reason"], "max_tokens");
        assert_eq!(message["usage"]["output_tokens"], 2);
        let events = events(&render_stream(&reply(&choice, None), usage()));
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
    fn a_stop_sequence_is_named_whole_and_streamed() {
        let choice = ChoiceText {
            content: "one two ",
            deltas: vec!["one", " two", " "],
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
        };
        let stopped = reply(&choice, Some("END"));
        let message: Value = serde_json::from_slice(&render_message(&stopped, usage())).unwrap();
        assert_eq!(
            (&message["stop_reason"], &message["stop_sequence"]),
            (&json!("stop_sequence"), &json!("END"))
        );
        let events = events(&render_stream(&stopped, usage()));
        assert_eq!(events[0]["message"]["stop_sequence"], Value::Null);
        let delta = &events[events.len() - 2];
        assert_eq!(
            delta["delta"],
            json!({"stop_reason": "stop_sequence", "stop_sequence": "END"})
        );
        let ended: Value =
            serde_json::from_slice(&render_message(&reply(&choice, None), usage())).unwrap();
        assert_eq!(
            (&ended["stop_reason"], &ended["stop_sequence"]),
            (&json!("end_turn"), &Value::Null)
        );
        // Cut by max_tokens first: the stop sequence was never reached.
        let cut = ChoiceText {
            finish_reason: FinishReason::Length,
            ..choice.clone()
        };
        let cut: Value =
            serde_json::from_slice(&render_message(&reply(&cut, Some("END")), usage())).unwrap();
        assert_eq!(
            (&cut["stop_reason"], &cut["stop_sequence"]),
            (&json!("max_tokens"), &Value::Null)
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
            serde_json::from_slice(&render_message(&reply(&choice, None), usage())).unwrap();
        assert_eq!(
            message["content"],
            json!([{"type": "tool_use", "id": "toolu_abc", "name": "w", "input": {"city": "Oslo"}}])
        );
        assert_eq!(message["stop_reason"], "tool_use");
        let partial: String = events(&render_stream(&reply(&choice, None), usage()))
            .iter()
            .filter_map(|e| e["delta"]["partial_json"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(partial, r#"{"city":"Oslo"}"#);
    }
}
