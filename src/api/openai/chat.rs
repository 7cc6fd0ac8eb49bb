//! `POST /v1/chat/completions`: the request we read and the responses we write.

use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiError;
use super::json::{parse_object, take_model, type_phrase};
use crate::api::json_writer;
use crate::api::sse;

/// The most choices OpenAI generates for one request.
pub(super) const MAX_CHOICES: u32 = 128;
/// The most `stop` sequences OpenAI accepts.
const MAX_STOP_SEQUENCES: usize = 4;

/// The roles OpenAI accepts in `messages[].role`, in the order its errors list them.
const ROLES: [&str; 6] = [
    "system",
    "assistant",
    "user",
    "function",
    "tool",
    "developer",
];

/// The parts of a chat completion request that llm-edge reads. Every other field is accepted and
/// ignored, as OpenAI-compatible servers do, so SDK `extra_body` fields pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The requested model, echoed back in the response.
    pub model: String,
    /// The conversation, at least one message.
    pub messages: Vec<ChatMessage>,
    /// `stream: true` asks for server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a final usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// httpbun's override, `"httpbun": {"content": "..."}`: the exact reply text.
    pub content_override: Option<String>,
    /// How many choices to generate (`n`, 1 to 128).
    pub n: u32,
    /// The reply's token limit: `max_completion_tokens`, else the older `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Up to four `stop` sequences; the reply ends before the first one it contains.
    pub stop: Vec<String>,
    /// `seed`: the same seed gives the same generated text.
    pub seed: Option<i64>,
    /// The functions the model may call.
    pub tools: Vec<Tool>,
    /// Whether and which tool to call.
    pub tool_choice: ToolChoice,
    /// Whether several tools may be called in one reply (default true).
    pub parallel_tool_calls: bool,
    /// The shape of the reply's content.
    pub response_format: ResponseFormat,
}

/// A function the model may call: `tools[].function`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// The function's name.
    pub name: String,
    /// The JSON Schema of its arguments (an empty object schema when absent).
    pub parameters: Value,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// Call tools when the conversation calls for it (the default with tools).
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this tool.
    Named(String),
}

/// `response_format`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this schema.
    JsonSchema(Value),
}

/// One message of the conversation, reduced to what the mock needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant`, `tool` or `function`.
    pub role: String,
    /// The text of `content`: the string itself, or its `text` parts joined.
    pub text: String,
    /// The participant's `name`, which the chat format counts too.
    pub name: Option<String>,
}

impl ChatRequest {
    /// Parses and validates a request body, answering malformed input with the error OpenAI gives.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut fields = parse_object(body)?;
        let model = take_model(&mut fields)?;
        let messages = parse_messages(fields.remove("messages"))?;
        let stream = optional(&fields, "stream", "stream", "a boolean", Value::as_bool)?;
        let stream = stream.unwrap_or(false);
        let include_usage = parse_stream_options(&fields, stream)?;
        let content_override = parse_httpbun(&fields)?;
        let n = bounded_integer(&fields, "n", 1, MAX_CHOICES)?.unwrap_or(1);
        let max_tokens = match bounded_integer(&fields, "max_completion_tokens", 1, u32::MAX)? {
            Some(limit) => Some(limit),
            None => bounded_integer(&fields, "max_tokens", 1, u32::MAX)?,
        };
        let stop = parse_stop(&fields)?;
        let seed = optional(&fields, "seed", "seed", "an integer", Value::as_i64)?;
        let tools = parse_tools(&fields)?;
        let tool_choice = parse_tool_choice(&fields, &tools, &["function", "name"], true)?;
        let parallel_tool_calls = optional(
            &fields,
            "parallel_tool_calls",
            "parallel_tool_calls",
            "a boolean",
            Value::as_bool,
        )?
        .unwrap_or(true);
        let response_format = parse_response_format(&fields)?;

        Ok(Self {
            model,
            messages,
            stream,
            include_usage,
            content_override,
            n,
            max_tokens,
            stop,
            seed,
            tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
        })
    }

    /// Whether the conversation ends with a tool's result, to be answered in words.
    pub fn ends_with_tool_result(&self) -> bool {
        self.messages
            .last()
            .is_some_and(|m| m.role == "tool" || m.role == "function")
    }

    /// The text of the last `user` message, or `""` when there is none.
    pub fn last_user_text(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.text.as_str())
    }
}

fn parse_messages(value: Option<Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match value {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => return Err(ApiError::missing_parameter("messages")),
        Some(other) => {
            return Err(ApiError::invalid_type(
                "messages",
                "an array",
                type_phrase(&other),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::empty_array("messages"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
        .collect()
}

fn parse_message(index: usize, item: Value) -> Result<ChatMessage, ApiError> {
    let at = |field: &str| format!("messages[{index}].{field}");
    let Value::Object(mut fields) = item else {
        return Err(ApiError::invalid_type(
            &format!("messages[{index}]"),
            "an object",
            type_phrase(&item),
        ));
    };
    let role = match fields.remove("role") {
        Some(Value::String(role)) if ROLES.contains(&role.as_str()) => role,
        Some(Value::String(role)) => {
            return Err(ApiError::invalid_value(&at("role"), &role, &ROLES));
        }
        None | Some(Value::Null) => return Err(ApiError::missing_parameter(&at("role"))),
        Some(other) => {
            return Err(ApiError::invalid_type(
                &at("role"),
                "a string",
                type_phrase(&other),
            ));
        }
    };
    let text = match fields.remove("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(Value::Array(parts)) => content_parts_text(index, parts)?,
        Some(other) => {
            return Err(ApiError::invalid_type(
                &at("content"),
                "a string or an array of content parts",
                type_phrase(&other),
            ));
        }
    };
    let name = match fields.remove("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(other) => {
            return Err(ApiError::invalid_type(
                &at("name"),
                "a string",
                type_phrase(&other),
            ));
        }
    };
    Ok(ChatMessage { role, text, name })
}

/// Joins the `text` of every `{"type":"text"}` part; images, audio and files carry no text.
fn content_parts_text(index: usize, parts: Vec<Value>) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, part) in parts.into_iter().enumerate() {
        let param = format!("messages[{index}].content[{j}]");
        let Value::Object(part) = part else {
            return Err(ApiError::invalid_type(
                &param,
                "an object",
                type_phrase(&part),
            ));
        };
        if part.get("type").and_then(Value::as_str) != Some("text") {
            continue;
        }
        match part.get("text") {
            Some(Value::String(s)) => text.push_str(s),
            None => return Err(ApiError::missing_parameter(&format!("{param}.text"))),
            Some(other) => {
                return Err(ApiError::invalid_type(
                    &format!("{param}.text"),
                    "a string",
                    type_phrase(other),
                ));
            }
        }
    }
    Ok(text)
}

/// Reads optional field `key` (called `param` in errors) with `extract`; null counts as absent.
pub(crate) fn optional<'a, T>(
    fields: &'a Map<String, Value>,
    key: &str,
    param: &str,
    expected: &str,
    extract: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => extract(value)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_type(param, expected, type_phrase(value))),
    }
}

/// Whether `name` is a valid function name: 1 to 64 of `a-z A-Z 0-9 _ -`.
fn is_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_tools(fields: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(items) = optional(fields, "tools", "tools", "an array", Value::as_array)? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |field: &str| format!("tools[{i}]{field}");
            let Value::Object(tool) = item else {
                return Err(ApiError::invalid_type(
                    &at(""),
                    "an object",
                    type_phrase(item),
                ));
            };
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {}
                Some(other) => {
                    return Err(ApiError::invalid_value(&at(".type"), other, &["function"]));
                }
                None => return Err(ApiError::missing_parameter(&at(".type"))),
            }
            let function = match tool.get("function") {
                Some(Value::Object(function)) => function,
                None | Some(Value::Null) => {
                    return Err(ApiError::missing_parameter(&at(".function")));
                }
                Some(other) => {
                    return Err(ApiError::invalid_type(
                        &at(".function"),
                        "an object",
                        type_phrase(other),
                    ));
                }
            };
            let name = match function.get("name") {
                Some(Value::String(name)) if is_function_name(name) => name.clone(),
                Some(Value::String(name)) => {
                    return Err(ApiError::bad_request(
                        format!(
                            "Invalid '{}': string does not match pattern. Expected a string that \
                             matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$', but got '{name}'.",
                            at(".function.name")
                        ),
                        Some(&at(".function.name")),
                        Some("invalid_value"),
                    ));
                }
                None | Some(Value::Null) => {
                    return Err(ApiError::missing_parameter(&at(".function.name")));
                }
                Some(other) => {
                    return Err(ApiError::invalid_type(
                        &at(".function.name"),
                        "a string",
                        type_phrase(other),
                    ));
                }
            };
            let parameters = match function.get("parameters") {
                None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
                Some(schema @ Value::Object(_)) => schema.clone(),
                Some(other) => {
                    return Err(ApiError::invalid_type(
                        &at(".function.parameters"),
                        "an object",
                        type_phrase(other),
                    ));
                }
            };
            Ok(Tool { name, parameters })
        })
        .collect()
}

/// `tool_choice`: a mode, or a named tool whose name sits at `name_path` (chat's
/// `function.name`, the Responses API's `name`). Chat also refuses a choice without `tools`.
pub(super) fn parse_tool_choice(
    fields: &Map<String, Value>,
    tools: &[Tool],
    name_path: &[&str],
    needs_tools: bool,
) -> Result<ToolChoice, ApiError> {
    let param = "tool_choice";
    let choice = match fields.get(param) {
        None | Some(Value::Null) => return Ok(ToolChoice::Auto),
        Some(Value::String(mode)) => match mode.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_value(
                    param,
                    other,
                    &["none", "auto", "required"],
                ));
            }
        },
        Some(named @ Value::Object(_)) => {
            let name = name_path
                .iter()
                .try_fold(named, |value, key| value.get(key))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::missing_parameter(&format!("{param}.{}", name_path.join(".")))
                })?;
            ToolChoice::Named(name.to_owned())
        }
        Some(other) => {
            return Err(ApiError::invalid_type(
                param,
                "a string or an object",
                type_phrase(other),
            ));
        }
    };
    if needs_tools && tools.is_empty() && choice != ToolChoice::None {
        return Err(ApiError::bad_request(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are \
             specified."
                .to_owned(),
            Some(param),
            None,
        ));
    }
    if let ToolChoice::Named(name) = &choice {
        if !tools.iter().any(|tool| &tool.name == name) {
            return Err(ApiError::bad_request(
                format!("Tool choice '{name}' not found in 'tools' parameter."),
                Some(param),
                None,
            ));
        }
    }
    Ok(choice)
}

fn parse_response_format(fields: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let param = "response_format";
    let Some(format) = optional(fields, param, param, "an object", Value::as_object)? else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| ApiError::missing_parameter("response_format.json_schema"))?;
            if !spec.get("name").is_some_and(Value::is_string) {
                return Err(ApiError::missing_parameter(
                    "response_format.json_schema.name",
                ));
            }
            let schema = spec
                .get("schema")
                .filter(|schema| schema.is_object())
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
            Ok(ResponseFormat::JsonSchema(schema))
        }
        Some(other) => Err(ApiError::invalid_value(
            "response_format.type",
            other,
            &["text", "json_object", "json_schema"],
        )),
        None => Err(ApiError::missing_parameter("response_format.type")),
    }
}

/// Reads an optional integer field that must lie in `min..=max`.
pub(crate) fn bounded_integer(
    fields: &Map<String, Value>,
    key: &str,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(value) = optional(fields, key, key, "an integer", Value::as_i64)? else {
        return Ok(None);
    };
    if value < i64::from(min) {
        return Err(ApiError::bad_request(
            format!(
                "Invalid '{key}': integer below minimum value. \
                 Expected a value >= {min}, but got {value} instead."
            ),
            Some(key),
            Some("integer_below_min_value"),
        ));
    }
    u32::try_from(value)
        .ok()
        .filter(|&value| value <= max)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "Invalid '{key}': integer above maximum value. \
                     Expected a value <= {max}, but got {value} instead."
                ),
                Some(key),
                Some("integer_above_max_value"),
            )
        })
}

/// `stop`: null, one string, or an array of up to four strings. Empty strings never match.
pub(super) fn parse_stop(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let count = fields
        .get("stop")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if count > MAX_STOP_SEQUENCES {
        return Err(ApiError::bad_request(
            format!(
                "Invalid 'stop': array too long. Expected an array with maximum length \
                 {MAX_STOP_SEQUENCES}, but got an array with length {count} instead."
            ),
            Some("stop"),
            Some("array_above_max_length"),
        ));
    }
    parse_stop_sequences(fields, "stop")
}

/// Stop sequences under `key`: null, one string, or an array of strings. Empty strings never
/// match, so they are dropped.
pub(crate) fn parse_stop_sequences(
    fields: &Map<String, Value>,
    key: &str,
) -> Result<Vec<String>, ApiError> {
    let sequences = match fields.get(key) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(items)) => {
            let mut sequences = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::String(sequence) = item else {
                    let param = format!("{key}[{i}]");
                    return Err(ApiError::invalid_type(
                        &param,
                        "a string",
                        type_phrase(item),
                    ));
                };
                sequences.push(sequence.clone());
            }
            sequences
        }
        Some(other) => {
            let expected = "a string or an array of strings";
            return Err(ApiError::invalid_type(key, expected, type_phrase(other)));
        }
    };
    Ok(sequences.into_iter().filter(|s| !s.is_empty()).collect())
}

pub(super) fn parse_stream_options(
    fields: &Map<String, Value>,
    stream: bool,
) -> Result<bool, ApiError> {
    let param = "stream_options";
    let Some(options) = optional(fields, param, param, "an object", Value::as_object)? else {
        return Ok(false);
    };
    if !stream {
        return Err(ApiError::bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.".to_owned(),
            Some(param),
            Some("invalid_value"),
        ));
    }
    let include_usage = optional(
        options,
        "include_usage",
        "stream_options.include_usage",
        "a boolean",
        Value::as_bool,
    )?;
    Ok(include_usage.unwrap_or(false))
}

fn parse_httpbun(fields: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    let Some(options) = optional(fields, "httpbun", "httpbun", "an object", Value::as_object)?
    else {
        return Ok(None);
    };
    let content = optional(
        options,
        "content",
        "httpbun.content",
        "a string",
        Value::as_str,
    )?;
    Ok(content.map(str::to_owned))
}

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt, chat formatting included.
    pub prompt_tokens: u32,
    /// Tokens in the reply.
    pub completion_tokens: u32,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The reply is complete, or reached a `stop` sequence.
    Stop,
    /// The reply hit `max_tokens`.
    Length,
    /// The reply calls tools.
    ToolCalls,
}

impl FinishReason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// One choice's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceText<'a> {
    /// The whole reply text (empty, and `null` on the wire, when the choice calls tools).
    pub content: &'a str,
    /// The reply cut at token boundaries, one streamed delta each; they concatenate to `content`.
    pub deltas: Vec<&'a str>,
    /// Function calls, in order.
    pub tool_calls: Vec<ToolCallText>,
    /// Why the reply ended.
    pub finish_reason: FinishReason,
}

impl ChoiceText<'_> {
    /// How many streamed steps the choice takes: one per content delta, and per tool call one to
    /// open it plus one per arguments fragment.
    pub fn steps(&self) -> usize {
        self.deltas.len()
            + self
                .tool_calls
                .iter()
                .map(|call| 1 + call.cuts.len())
                .sum::<usize>()
    }
}

/// A function call in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallText {
    /// `call_…`.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object as a string.
    pub arguments: String,
    /// Where the streamed arguments fragments end, as byte offsets into `arguments`.
    pub cuts: Vec<usize>,
}

/// Everything needed to render one mock chat completion, streamed or not.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// `chatcmpl-…`, shared by every chunk of a stream.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The model named in the response.
    pub model: &'a str,
    /// The choices, indexed from 0.
    pub choices: &'a [ChoiceText<'a>],
    /// The token counts, all choices together.
    pub usage: Usage,
}

#[derive(Serialize)]
pub(super) struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize)]
struct PromptTokensDetails {
    cached_tokens: u32,
    audio_tokens: u32,
}

#[derive(Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u32,
    audio_tokens: u32,
    accepted_prediction_tokens: u32,
    rejected_prediction_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: 0,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// `CreateChatCompletionResponse`.
#[derive(Serialize)]
struct ChatCompletionJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceJson<'a>>,
    usage: UsageJson,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct ChoiceJson<'a> {
    index: u32,
    message: MessageJson<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// `ChatCompletionResponseMessage`: `content` and `refusal` are required even when null.
#[derive(Serialize)]
struct MessageJson<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallJson<'a>>,
    annotations: [(); 0],
}

/// `ChatCompletionMessageToolCall`.
#[derive(Serialize)]
struct ToolCallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// `ChatCompletionMessageToolCallChunk`: the first chunk of a call names it, later ones carry
/// arguments fragments.
#[derive(Serialize)]
struct ToolCallDeltaJson<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaJson<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// `CreateChatCompletionStreamResponse`.
#[derive(Serialize)]
struct ChunkJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoiceJson<'a>],
    service_tier: &'static str,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    usage: UsageField,
}

/// A chunk's `usage`: absent unless usage was requested, then null on every chunk but the last.
pub(super) enum UsageField {
    /// Usage was not asked for.
    Absent,
    /// Usage comes in the last chunk; this one has none.
    Null,
    /// The usage chunk.
    Present(UsageJson),
}

impl UsageField {
    pub(super) fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Present(usage) => usage.serialize(serializer),
            Self::Absent | Self::Null => serializer.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct ChunkChoiceJson<'a> {
    index: u32,
    delta: DeltaJson<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// Absent, `null` (a tool-calling reply's role chunk), or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaJson<'a>; 1]>,
}

/// Renders a complete `chat.completion` object.
pub fn render_completion(completion: &Completion<'_>) -> Vec<u8> {
    let body = ChatCompletionJson {
        id: completion.id,
        object: "chat.completion",
        created: completion.created,
        model: completion.model,
        choices: completion
            .choices
            .iter()
            .zip(0..)
            .map(|(choice, index)| ChoiceJson {
                index,
                message: MessageJson {
                    role: "assistant",
                    content: choice.tool_calls.is_empty().then_some(choice.content),
                    refusal: None,
                    tool_calls: choice
                        .tool_calls
                        .iter()
                        .map(|call| ToolCallJson {
                            id: &call.id,
                            kind: "function",
                            function: FunctionJson {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                    annotations: [],
                },
                logprobs: None,
                finish_reason: choice.finish_reason.as_str(),
            })
            .collect(),
        usage: completion.usage.into(),
        service_tier: "default",
    };
    serde_json::to_vec(&body).expect("serializing plain data cannot fail")
}

/// Renders a completion as server-sent events, each `data: …\n\n`, grouped in timed steps: step
/// `k` carries the `k`-th token piece of every choice (choices interleaved by `index`). The first
/// step also opens with a role chunk per choice; the last also carries a `finish_reason` chunk per
/// choice, the usage chunk when asked for, and `data: [DONE]`.
pub fn render_stream(completion: &Completion<'_>, include_usage: bool) -> Vec<Vec<u8>> {
    let usage_placeholder = || {
        if include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        }
    };
    let event = |out: &mut Vec<u8>, index: u32, delta, finish_reason: Option<FinishReason>| {
        let choice = ChunkChoiceJson {
            index,
            delta,
            logprobs: None,
            finish_reason: finish_reason.map(FinishReason::as_str),
        };
        write_chunk(out, completion, &[choice], usage_placeholder());
    };
    let indexed = || completion.choices.iter().zip(0..);
    let deltas: Vec<Vec<DeltaJson<'_>>> = completion.choices.iter().map(choice_deltas).collect();
    let longest = deltas.iter().map(Vec::len).max().unwrap_or(0);
    let mut steps = vec![Vec::new(); longest.max(1)];

    for (choice, index) in indexed() {
        let role = DeltaJson {
            role: Some("assistant"),
            content: Some(choice.tool_calls.is_empty().then_some("")),
            tool_calls: None,
        };
        event(&mut steps[0], index, role, None);
    }
    let mut per_choice: Vec<_> = deltas.into_iter().map(Vec::into_iter).collect();
    let content_chunks: Vec<ContentChunk> = indexed()
        .map(|(_, index)| ContentChunk::new(completion, index, usage_placeholder()))
        .collect();
    for step in steps.iter_mut().take(longest) {
        for ((events, index), content_chunk) in per_choice.iter_mut().zip(0..).zip(&content_chunks)
        {
            match events.next() {
                Some(DeltaJson {
                    role: None,
                    content: Some(Some(piece)),
                    tool_calls: None,
                }) => content_chunk.write(step, piece),
                Some(delta) => event(step, index, delta, None),
                None => {}
            }
        }
    }
    let last = steps.last_mut().expect("at least one step");
    for (choice, index) in indexed() {
        event(
            last,
            index,
            DeltaJson::default(),
            Some(choice.finish_reason),
        );
    }
    if include_usage {
        let usage = UsageField::Present(completion.usage.into());
        write_chunk(last, completion, &[], usage);
    }
    last.extend_from_slice(sse::DONE);
    steps
}

/// A choice's stream deltas, in order: its content pieces, then for each tool call one delta that
/// opens it (id, type, name) and one per arguments fragment.
fn choice_deltas<'a>(choice: &'a ChoiceText<'a>) -> Vec<DeltaJson<'a>> {
    let content = choice.deltas.iter().map(|&piece| DeltaJson {
        content: Some(Some(piece)),
        ..DeltaJson::default()
    });
    let calls = choice.tool_calls.iter().zip(0..).flat_map(|(call, index)| {
        let call_delta = move |id, kind, name, arguments| DeltaJson {
            tool_calls: Some([ToolCallDeltaJson {
                index,
                id,
                kind,
                function: FunctionDeltaJson { name, arguments },
            }]),
            ..DeltaJson::default()
        };
        let open = call_delta(
            Some(call.id.as_str()),
            Some("function"),
            Some(call.name.as_str()),
            "",
        );
        let fragments = call.cuts.iter().scan(0, move |start, &end| {
            let fragment = &call.arguments[*start..end];
            *start = end;
            Some(call_delta(None, None, None, fragment))
        });
        std::iter::once(open).chain(fragments)
    });
    content.chain(calls).collect()
}

/// The event of one choice's content delta, rendered once with empty content and cut around it:
/// each token's event is then its JSON string between the two halves, not a whole chunk
/// serialized again.
struct ContentChunk {
    /// Up to `"content":`.
    before: Vec<u8>,
    /// From the byte after the content's string to the end of the event.
    after: Vec<u8>,
}

impl ContentChunk {
    /// The key and empty value the template is cut around. No string value can hold it
    /// unescaped, and a chunk has one `content` key.
    const EMPTY_CONTENT: &'static [u8] = br#""content":"""#;

    fn new(completion: &Completion<'_>, index: u32, usage: UsageField) -> Self {
        let choice = ChunkChoiceJson {
            index,
            delta: DeltaJson {
                content: Some(Some("")),
                ..DeltaJson::default()
            },
            logprobs: None,
            finish_reason: None,
        };
        let mut whole = Vec::new();
        write_chunk(&mut whole, completion, &[choice], usage);
        let at = whole
            .windows(Self::EMPTY_CONTENT.len())
            .position(|window| window == Self::EMPTY_CONTENT)
            .expect("a content delta has a content key")
            + br#""content":"#.len();
        Self {
            before: whole[..at].to_vec(),
            after: whole[at + 2..].to_vec(),
        }
    }

    fn write(&self, out: &mut Vec<u8>, piece: &str) {
        out.extend_from_slice(&self.before);
        json_writer::write_str(out, piece);
        out.extend_from_slice(&self.after);
    }
}

fn write_chunk(
    out: &mut Vec<u8>,
    completion: &Completion<'_>,
    choices: &[ChunkChoiceJson<'_>],
    usage: UsageField,
) {
    let chunk = ChunkJson {
        id: completion.id,
        object: "chat.completion.chunk",
        created: completion.created,
        model: completion.model,
        choices,
        service_tier: "default",
        usage,
    };
    sse::write_event(out, None, &chunk);
}

#[cfg(test)]
mod tests;
