//! The chat completion request llm-edge reads, and the field parsers other OpenAI-shaped APIs
//! share (stop sequences, stream options, tool choice).

use serde_json::{Map, Value};

use crate::api::openai::error::ApiError;
use crate::api::openai::json::{bounded_integer, optional, parse_object, take_model, type_phrase};

/// The most choices OpenAI generates for one request.
pub(crate) const MAX_CHOICES: u32 = 128;
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
    /// The tools earlier assistant turns called, by name, in order: which a forced call has
    /// not used yet.
    pub called_tools: Vec<String>,
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
        let called_tools = called_tools(fields.get("messages"));
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
            called_tools,
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

/// The function names in assistant messages' `tool_calls`, in order.
fn called_tools(messages: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(messages)) = messages else {
        return Vec::new();
    };
    messages
        .iter()
        .filter_map(|message| message.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .filter_map(|call| call.pointer("/function/name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
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
pub(crate) fn parse_tool_choice(
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

/// `stop`: null, one string, or an array of up to four strings. Empty strings never match.
pub(crate) fn parse_stop(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
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
fn parse_stop_sequences(fields: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
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

pub(crate) fn parse_stream_options(
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
