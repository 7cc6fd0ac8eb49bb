//! `POST /v1/responses` (the Responses API): the request we read and the responses we write.
//!
//! A Responses request is read into the same [`ChatRequest`] the chat endpoint uses (instructions
//! become a leading system message, input items become messages, function tools become tools),
//! so the mock answers both alike; only the wire format differs.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::chat::{ChatMessage, ChatRequest, ResponseFormat, Tool, ToolChoice, parse_tool_choice};
use super::error::ApiError;
use super::generation::{ChoiceText, FinishReason, Usage};
use super::json::{bounded_integer, optional};
use super::json::{parse_object, take_model, type_phrase};
use crate::api::sse;

/// A parsed Responses request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// The request as the chat endpoint would see it.
    pub chat: ChatRequest,
    /// `instructions`, echoed in the response object.
    pub instructions: Option<String>,
}

impl ResponsesRequest {
    /// Parses and validates a request body, with OpenAI's errors for bad input.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut fields = parse_object(body)?;
        let model = take_model(&mut fields)?;
        let instructions = optional(
            &fields,
            "instructions",
            "instructions",
            "a string",
            Value::as_str,
        )?
        .map(str::to_owned);
        let mut messages = Vec::new();
        if let Some(text) = &instructions {
            messages.push(ChatMessage {
                role: "system".into(),
                text: text.clone(),
                name: None,
            });
        }
        let called_tools = called_functions(fields.get("input"));
        messages.extend(parse_input(fields.remove("input"))?);
        let tools = parse_tools(&fields)?;
        let tool_choice = parse_tool_choice(&fields, &tools, &["name"], false)?;
        let stream = optional(&fields, "stream", "stream", "a boolean", Value::as_bool)?;
        let content_override =
            optional(&fields, "httpbun", "httpbun", "an object", Value::as_object)?
                .and_then(|options| options.get("output_text"))
                .and_then(Value::as_str)
                .map(str::to_owned);
        let chat = ChatRequest {
            model,
            messages,
            stream: stream.unwrap_or(false),
            include_usage: false,
            content_override,
            n: 1,
            max_tokens: bounded_integer(&fields, "max_output_tokens", 1, u32::MAX)?,
            stop: Vec::new(),
            seed: None,
            tools,
            tool_choice,
            parallel_tool_calls: optional(
                &fields,
                "parallel_tool_calls",
                "parallel_tool_calls",
                "a boolean",
                Value::as_bool,
            )?
            .unwrap_or(true),
            response_format: parse_text_format(&fields)?,
            called_tools,
        };
        Ok(Self { chat, instructions })
    }
}

/// `input`: a string (one user message), or a list of items: messages (string or content-part
/// content), earlier function calls and their outputs.
fn parse_input(value: Option<Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let message = |role: &str, text: String| ChatMessage {
        role: role.to_owned(),
        text,
        name: None,
    };
    let items = match value {
        None | Some(Value::Null) => return Err(ApiError::missing_parameter("input")),
        Some(Value::String(text)) => return Ok(vec![message("user", text)]),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid_type(
                "input",
                "a string or an array of input items",
                type_phrase(&other),
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::Object(item) = item else {
                return Err(ApiError::invalid_type(
                    &format!("input[{i}]"),
                    "an object",
                    type_phrase(&item),
                ));
            };
            match item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("message")
            {
                "function_call_output" => Ok(message("tool", item_text(item.get("output")))),
                "function_call" => Ok(message("assistant", String::new())),
                "message" => {
                    let role = match item.get("role").and_then(Value::as_str) {
                        Some(role @ ("user" | "assistant" | "system" | "developer")) => role,
                        Some(other) => {
                            return Err(ApiError::invalid_value(
                                &format!("input[{i}].role"),
                                other,
                                &["user", "assistant", "system", "developer"],
                            ));
                        }
                        None => {
                            return Err(ApiError::missing_parameter(&format!("input[{i}].role")));
                        }
                    };
                    Ok(message(role, item_text(item.get("content"))))
                }
                other => Ok(message("user", format!("[{other}]"))),
            }
        })
        .collect()
}

/// The names of the `function_call` input items, in order.
fn called_functions(input: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(items)) = input else {
        return Vec::new();
    };
    items
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("function_call"))
        .filter_map(|item| item.get("name").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The text of a content value: the string itself, or its text parts joined.
fn item_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Function tools (`{"type": "function", "name", "parameters"}`); other tool types are accepted
/// and not called.
fn parse_tools(fields: &Map<String, Value>) -> Result<Vec<Tool>, ApiError> {
    let Some(items) = optional(fields, "tools", "tools", "an array", Value::as_array)? else {
        return Ok(Vec::new());
    };
    let mut tools = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if item.get("type").and_then(Value::as_str) != Some("function") {
            continue;
        }
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::missing_parameter(&format!("tools[{i}].name")))?;
        let parameters = item
            .get("parameters")
            .filter(|p| p.is_object())
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        tools.push(Tool {
            name: name.to_owned(),
            parameters,
        });
    }
    Ok(tools)
}

/// `text.format`: `text`, `json_object`, or `json_schema` with the schema inline.
fn parse_text_format(fields: &Map<String, Value>) -> Result<ResponseFormat, ApiError> {
    let Some(format) = fields
        .get("text")
        .and_then(|text| text.get("format"))
        .filter(|format| !format.is_null())
    else {
        return Ok(ResponseFormat::Text);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => Ok(ResponseFormat::JsonSchema(
            format
                .get("schema")
                .filter(|schema| schema.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        )),
        Some(other) => Err(ApiError::invalid_value(
            "text.format.type",
            other,
            &["text", "json_object", "json_schema"],
        )),
        None => Err(ApiError::missing_parameter("text.format.type")),
    }
}

/// The ids and times one rendered response uses.
#[derive(Debug, Clone)]
pub struct ResponseIds {
    /// `resp_…`.
    pub response: String,
    /// `msg_…`, the message item's id.
    pub message: String,
    /// `fc_…` per function call.
    pub function_calls: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// The `Response` object, in the state given (`in_progress` with no output, or final).
fn response_object<'a>(
    request: &'a ResponsesRequest,
    ids: &'a ResponseIds,
    choice: &'a ChoiceText<'a>,
    usage: Usage,
    done: bool,
) -> ResponseJson<'a> {
    let incomplete = choice.finish_reason == FinishReason::Length;
    let (status, output, usage) = if done {
        let status = if incomplete {
            "incomplete"
        } else {
            "completed"
        };
        let output = output_items(ids, choice, "completed");
        (status, output, Some(UsageJson::from(usage)))
    } else {
        ("in_progress", Vec::new(), None)
    };
    let format = match &request.chat.response_format {
        ResponseFormat::Text => TextFormatJson::Text,
        ResponseFormat::JsonObject => TextFormatJson::JsonObject,
        ResponseFormat::JsonSchema(schema) => TextFormatJson::JsonSchema {
            name: "response",
            schema,
            strict: true,
        },
    };
    let tool_choice = match &request.chat.tool_choice {
        ToolChoice::None => ToolChoiceJson::Mode("none"),
        ToolChoice::Auto => ToolChoiceJson::Mode("auto"),
        ToolChoice::Required => ToolChoiceJson::Mode("required"),
        ToolChoice::Named(name) => ToolChoiceJson::Function {
            kind: "function",
            name,
        },
    };
    ResponseJson {
        id: &ids.response,
        object: "response",
        created_at: ids.created_at,
        status,
        error: None,
        incomplete_details: (done && incomplete).then_some(IncompleteDetails {
            reason: "max_output_tokens",
        }),
        instructions: request.instructions.as_deref(),
        max_output_tokens: request.chat.max_tokens,
        model: &request.chat.model,
        output,
        parallel_tool_calls: request.chat.parallel_tool_calls,
        previous_response_id: None,
        reasoning: Reasoning {
            effort: None,
            summary: None,
        },
        store: false,
        temperature: 1.0,
        text: TextJson { format },
        tool_choice,
        tools: request
            .chat
            .tools
            .iter()
            .map(FunctionToolJson::of)
            .collect(),
        top_p: 1.0,
        truncation: "disabled",
        usage,
        user: None,
        metadata: Empty {},
    }
}

/// `Response`, in the order OpenAI writes its fields.
#[derive(Serialize)]
struct ResponseJson<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    error: Option<()>,
    incomplete_details: Option<IncompleteDetails>,
    instructions: Option<&'a str>,
    max_output_tokens: Option<u32>,
    model: &'a str,
    output: Vec<ItemJson<'a>>,
    parallel_tool_calls: bool,
    previous_response_id: Option<()>,
    reasoning: Reasoning,
    store: bool,
    temperature: f64,
    text: TextJson<'a>,
    tool_choice: ToolChoiceJson<'a>,
    tools: Vec<FunctionToolJson<'a>>,
    top_p: f64,
    truncation: &'static str,
    usage: Option<UsageJson>,
    user: Option<()>,
    metadata: Empty,
}

#[derive(Serialize)]
struct IncompleteDetails {
    reason: &'static str,
}

#[derive(Serialize)]
struct Reasoning {
    effort: Option<()>,
    summary: Option<()>,
}

/// `{}`.
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct TextJson<'a> {
    format: TextFormatJson<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TextFormatJson<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'static str,
        schema: &'a Value,
        strict: bool,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoiceJson<'a> {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(&'static str),
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        name: &'a str,
    },
}

/// `FunctionTool`.
#[derive(Serialize)]
struct FunctionToolJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    parameters: &'a Value,
    strict: bool,
    description: Option<()>,
}

impl<'a> FunctionToolJson<'a> {
    fn of(tool: &'a Tool) -> Self {
        Self {
            kind: "function",
            name: &tool.name,
            parameters: &tool.parameters,
            strict: false,
            description: None,
        }
    }
}

/// `ResponseUsage`.
#[derive(Serialize)]
struct UsageJson {
    input_tokens: u32,
    input_tokens_details: InputTokensDetails,
    output_tokens: u32,
    output_tokens_details: OutputTokensDetails,
    total_tokens: u32,
}

#[derive(Serialize)]
struct InputTokensDetails {
    cached_tokens: u32,
}

#[derive(Serialize)]
struct OutputTokensDetails {
    reasoning_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(usage: Usage) -> Self {
        Self {
            input_tokens: usage.prompt_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: usage.cached_tokens,
            },
            output_tokens: usage.completion_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

/// An output item: an assistant message or a function call.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ItemJson<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputTextJson<'a>>,
    },
    FunctionCall {
        id: &'a str,
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
        status: &'static str,
    },
}

/// `output_text` content.
#[derive(Serialize)]
struct OutputTextJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
}

impl<'a> OutputTextJson<'a> {
    fn of(text: &'a str) -> Self {
        Self {
            kind: "output_text",
            text,
            annotations: [],
        }
    }
}

/// The output items: one per function call, else one assistant message.
fn output_items<'a>(
    ids: &'a ResponseIds,
    choice: &'a ChoiceText<'a>,
    status: &'static str,
) -> Vec<ItemJson<'a>> {
    if choice.tool_calls.is_empty() {
        vec![message_item(ids, choice.content, status)]
    } else {
        choice
            .tool_calls
            .iter()
            .zip(&ids.function_calls)
            .map(|(call, id)| ItemJson::FunctionCall {
                id,
                call_id: &call.id,
                name: &call.name,
                arguments: &call.arguments,
                status,
            })
            .collect()
    }
}

/// The message item; only a completed one holds its text.
fn message_item<'a>(ids: &'a ResponseIds, text: &'a str, status: &'static str) -> ItemJson<'a> {
    let content = if status == "completed" {
        vec![OutputTextJson::of(text)]
    } else {
        Vec::new()
    };
    ItemJson::Message {
        id: &ids.message,
        status,
        role: "assistant",
        content,
    }
}

/// Renders the final `Response` object.
pub fn render_response(
    request: &ResponsesRequest,
    ids: &ResponseIds,
    choice: &ChoiceText<'_>,
    usage: Usage,
) -> Vec<u8> {
    serde_json::to_vec(&response_object(request, ids, choice, usage, true))
        .expect("serializing borrowed structs cannot fail")
}

/// One typed server-sent event: its type and number, then the fields of its kind.
#[derive(Serialize)]
struct EventJson<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(flatten)]
    fields: T,
}

/// `response.created`, `response.in_progress`, `response.completed`, `response.incomplete`.
#[derive(Serialize)]
struct ResponseEvent<'a> {
    response: &'a ResponseJson<'a>,
}

/// `response.output_item.added` and `.done`.
#[derive(Serialize)]
struct ItemEvent<'a> {
    output_index: usize,
    item: ItemJson<'a>,
}

/// `response.content_part.added` and `.done`.
#[derive(Serialize)]
struct PartEvent<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    part: OutputTextJson<'a>,
}

/// `response.output_text.delta`: one per token, so written from borrowed fields.
#[derive(Serialize)]
struct TextDeltaEvent<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

/// `response.output_text.done`.
#[derive(Serialize)]
struct TextDoneEvent<'a> {
    item_id: &'a str,
    output_index: u32,
    content_index: u32,
    text: &'a str,
    logprobs: [(); 0],
}

/// `response.function_call_arguments.delta`.
#[derive(Serialize)]
struct ArgumentsDeltaEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    delta: &'a str,
}

/// `response.function_call_arguments.done`.
#[derive(Serialize)]
struct ArgumentsDoneEvent<'a> {
    item_id: &'a str,
    output_index: usize,
    arguments: &'a str,
}

/// Writes typed server-sent events, numbering them as they go.
struct EventWriter {
    sequence: u64,
}

impl EventWriter {
    fn write<T: Serialize>(&mut self, out: &mut Vec<u8>, kind: &'static str, fields: T) {
        let event = EventJson {
            kind,
            sequence_number: self.sequence,
            fields,
        };
        self.sequence += 1;
        sse::write_event(out, Some(kind), &event);
    }
}

/// Renders the typed event stream in timed steps, from `response.created` to
/// `response.completed` (or `response.incomplete`): each text delta or function-call arguments
/// fragment is a step, and each function call opens with its own step.
pub fn render_stream(
    request: &ResponsesRequest,
    ids: &ResponseIds,
    choice: &ChoiceText<'_>,
    usage: Usage,
) -> Vec<Vec<u8>> {
    let mut writer = EventWriter { sequence: 0 };
    let mut steps: Vec<Vec<u8>> = vec![Vec::new()];
    let in_progress = response_object(request, ids, choice, usage, false);
    let first = &mut steps[0];
    for kind in ["response.created", "response.in_progress"] {
        let fields = ResponseEvent {
            response: &in_progress,
        };
        writer.write(first, kind, fields);
    }
    if choice.tool_calls.is_empty() {
        let item_id = ids.message.as_str();
        let item = message_item(ids, "", "in_progress");
        let added = ItemEvent {
            output_index: 0,
            item,
        };
        writer.write(first, "response.output_item.added", added);
        let part = |text| PartEvent {
            item_id,
            output_index: 0,
            content_index: 0,
            part: OutputTextJson::of(text),
        };
        writer.write(first, "response.content_part.added", part(""));
        for (k, delta) in choice.deltas.iter().enumerate() {
            if k > 0 {
                steps.push(Vec::new());
            }
            let step = steps.last_mut().expect("a step");
            let fields = TextDeltaEvent {
                item_id,
                output_index: 0,
                content_index: 0,
                delta,
                logprobs: [],
            };
            writer.write(step, "response.output_text.delta", fields);
        }
        let last = steps.last_mut().expect("a step");
        let done = TextDoneEvent {
            item_id,
            output_index: 0,
            content_index: 0,
            text: choice.content,
            logprobs: [],
        };
        writer.write(last, "response.output_text.done", done);
        writer.write(last, "response.content_part.done", part(choice.content));
        let item = message_item(ids, choice.content, "completed");
        let done = ItemEvent {
            output_index: 0,
            item,
        };
        writer.write(last, "response.output_item.done", done);
    } else {
        for (index, (call, id)) in choice
            .tool_calls
            .iter()
            .zip(&ids.function_calls)
            .enumerate()
        {
            if index > 0 {
                steps.push(Vec::new());
            }
            let item = |arguments, status| ItemEvent {
                output_index: index,
                item: ItemJson::FunctionCall {
                    id,
                    call_id: &call.id,
                    name: &call.name,
                    arguments,
                    status,
                },
            };
            let step = steps.last_mut().expect("a step");
            writer.write(step, "response.output_item.added", item("", "in_progress"));
            let mut start = 0;
            for &end in &call.cuts {
                steps.push(Vec::new());
                let step = steps.last_mut().expect("a step");
                let fields = ArgumentsDeltaEvent {
                    item_id: id,
                    output_index: index,
                    delta: &call.arguments[start..end],
                };
                start = end;
                writer.write(step, "response.function_call_arguments.delta", fields);
            }
            let step = steps.last_mut().expect("a step");
            let done = ArgumentsDoneEvent {
                item_id: id,
                output_index: index,
                arguments: &call.arguments,
            };
            writer.write(step, "response.function_call_arguments.done", done);
            let done = item(&call.arguments, "completed");
            writer.write(step, "response.output_item.done", done);
        }
    }
    let last = steps.last_mut().expect("a step");
    let finished = response_object(request, ids, choice, usage, true);
    let kind = if choice.finish_reason == FinishReason::Length {
        "response.incomplete"
    } else {
        "response.completed"
    };
    let fields = ResponseEvent {
        response: &finished,
    };
    writer.write(last, kind, fields);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::openai::generation::ToolCallText;

    fn parse(body: Value) -> Result<ResponsesRequest, ApiError> {
        ResponsesRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn input_and_instructions_become_chat_messages() {
        let req = parse(json!({"model": "m", "instructions": "be brief", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "hi "}, {"type": "input_text", "text": "there"}]},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"}],
            "max_output_tokens": 20,
            "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}}))
        .unwrap();
        let roles: Vec<&str> = req.chat.messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "tool"]);
        assert_eq!(req.chat.messages[1].text, "hi there");
        assert!(req.chat.ends_with_tool_result());
        assert_eq!(req.chat.max_tokens, Some(20));
        assert_eq!(req.chat.tools.len(), 1);
        assert_eq!(
            req.chat.response_format,
            ResponseFormat::JsonSchema(json!({"type": "object"}))
        );
        let simple =
            parse(json!({"model": "m", "input": "q", "httpbun": {"output_text": "set"}})).unwrap();
        assert_eq!(simple.chat.last_user_text(), "q");
        assert_eq!(simple.chat.content_override.as_deref(), Some("set"));
    }

    #[test]
    fn bad_requests_name_the_param() {
        for (body, param) in [
            (json!({"input": "x"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": 3}), "input"),
            (
                json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
                "input[0].role",
            ),
            (
                json!({"model": "m", "input": "x", "tool_choice": {"type": "function", "name": "g"}}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": "x", "max_output_tokens": 0}),
                "max_output_tokens",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some(param)),
                "{body}"
            );
        }
    }

    fn ids() -> ResponseIds {
        ResponseIds {
            response: "resp_1".into(),
            message: "msg_1".into(),
            function_calls: vec!["fc_1".into()],
            created_at: 7,
        }
    }

    fn usage() -> Usage {
        Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            cached_tokens: 0,
        }
    }

    fn events(steps: &[Vec<u8>]) -> Vec<Value> {
        let text = String::from_utf8(steps.concat()).unwrap();
        text.split_terminator("\n\n")
            .map(|event| {
                let (kind, data) = event.split_once('\n').unwrap();
                let value: Value =
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(kind.strip_prefix("event: ").unwrap(), value["type"]);
                value
            })
            .collect()
    }

    #[test]
    fn text_replies_render_and_stream_in_order() {
        let req = parse(json!({"model": "m", "input": "hi"})).unwrap();
        let choice = ChoiceText {
            content: "Hi there",
            deltas: vec!["Hi", " there"],
            tool_calls: vec![],
            finish_reason: FinishReason::Stop,
        };
        let body: Value =
            serde_json::from_slice(&render_response(&req, &ids(), &choice, usage())).unwrap();
        assert_eq!(body["status"], "completed");
        assert_eq!(body["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(body["usage"]["total_tokens"], 7);

        let steps = render_stream(&req, &ids(), &choice, usage());
        assert_eq!(steps.len(), 2);
        let events = events(&steps);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
        // Every field OpenAI's ResponseTextDeltaEvent requires.
        assert_eq!(
            events[5],
            json!({"type": "response.output_text.delta", "sequence_number": 5,
                   "item_id": "msg_1", "output_index": 0, "content_index": 0,
                   "delta": " there", "logprobs": []})
        );
    }

    #[test]
    fn function_calls_stream_arguments_in_fragments() {
        let req = parse(
            json!({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}]}),
        )
        .unwrap();
        let choice = ChoiceText {
            content: "",
            deltas: vec![],
            tool_calls: vec![ToolCallText {
                id: "call_1".into(),
                name: "f".into(),
                arguments: r#"{"a":1}"#.into(),
                cuts: vec![3, 7],
            }],
            finish_reason: FinishReason::ToolCalls,
        };
        let body: Value =
            serde_json::from_slice(&render_response(&req, &ids(), &choice, usage())).unwrap();
        assert_eq!(body["output"][0]["type"], "function_call");
        assert_eq!(body["output"][0]["call_id"], "call_1");
        let events = events(&render_stream(&req, &ids(), &choice, usage()));
        let deltas: String = events
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta")
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, r#"{"a":1}"#);
    }
}
