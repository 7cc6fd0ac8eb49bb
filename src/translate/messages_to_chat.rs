//! A client of Anthropic Messages, an upstream of OpenAI Chat Completions: the request up, the
//! reply (whole or streamed) and its errors down.

use serde_json::{Map, Value, json};

use super::events::{Events, Fill, Template, fill_or_push};
use super::{Dropped, Refused, Upstream, delta_calls, delta_texts, first_choices, refuse};
use crate::api::anthropic;
use crate::api::openai::ApiError;

/// The most `stop` sequences Chat Completions takes.
const MAX_STOP: usize = 4;

/// Request fields with no counterpart in Chat Completions that change nothing the client relies
/// on: left out, each counted.
const DROPPED: [&str; 6] = [
    "top_k",
    "thinking",
    "service_tier",
    "container",
    "context_management",
    "inference_geo",
];

/// `output_config` fields other than `format`, which Chat Completions has no place for.
const DROPPED_OUTPUT_CONFIG: [&str; 1] = ["effort"];

/// Anthropic's structured output format (a JSON schema) as chat's `response_format`, named
/// `response` as chat requires a name; not `strict`, which refuses schemas Anthropic takes.
fn response_format(format: &Value, param: &str) -> Result<Value, Refused> {
    let schema = format.get("schema").filter(|s| s.is_object());
    match (format.get("type").and_then(Value::as_str), schema) {
        (Some("json_schema"), Some(schema)) => Ok(json!({"type": "json_schema",
            "json_schema": {"name": "response", "schema": schema}})),
        _ => Err(refuse(
            param,
            "must be a json_schema format with a schema object".into(),
        )),
    }
}

/// Translates a Messages request to a chat request.
pub(super) fn request(mut fields: Map<String, Value>) -> Result<Upstream, Refused> {
    let mut dropped = Dropped::default();
    let mut out = Map::new();
    if let Some(model) = fields.remove("model") {
        out.insert("model".into(), model);
    }
    let mut messages = Vec::new();
    if let Some(system) = fields.remove("system").filter(|s| !s.is_null()) {
        let text = text_of(&system, "system", &mut dropped)?;
        if !text.is_empty() {
            messages.push(json!({"role": "system", "content": text}));
        }
    }
    let Some(Value::Array(turns)) = fields.remove("messages") else {
        return Err(refuse("messages", "must be an array of messages".into()));
    };
    for (i, turn) in turns.iter().enumerate() {
        let param = format!("messages.{i}");
        match turn.get("role").and_then(Value::as_str) {
            Some("user") => user_turn(turn.get("content"), &param, &mut messages, &mut dropped)?,
            Some("assistant") => {
                messages.push(assistant_turn(turn.get("content"), &param, &mut dropped)?);
            }
            _ => {
                return Err(refuse(
                    &format!("{param}.role"),
                    "allowed: user, assistant".into(),
                ));
            }
        }
    }
    out.insert("messages".into(), Value::Array(messages));
    match fields.remove("max_tokens") {
        Some(n) if n.as_u64().is_some_and(|n| n >= 1) => {
            out.insert("max_tokens".into(), n);
        }
        _ => {
            return Err(refuse(
                "max_tokens",
                "is required: an integer of at least 1".into(),
            ));
        }
    }
    match fields.remove("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(stop)) if stop.iter().all(Value::is_string) => {
            if stop.len() > MAX_STOP {
                return Err(refuse(
                    "stop_sequences",
                    format!("Chat Completions takes at most {MAX_STOP}"),
                ));
            }
            if !stop.is_empty() {
                out.insert("stop".into(), Value::Array(stop));
            }
        }
        Some(_) => {
            return Err(refuse(
                "stop_sequences",
                "must be an array of strings".into(),
            ));
        }
    }
    for key in ["temperature", "top_p"] {
        if let Some(value) = fields.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), value);
        }
    }
    let mut has_tools = false;
    if let Some(tools) = fields.remove("tools").filter(|t| !t.is_null()) {
        let tools = self::tools(tools, &mut dropped)?;
        has_tools = !tools.is_empty();
        if has_tools {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = fields.remove("tool_choice").filter(|c| !c.is_null()) {
        let (choice, parallel) = tool_choice(&choice)?;
        out.insert("tool_choice".into(), choice);
        if !parallel && has_tools {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    let stream = fields.remove("stream").and_then(|s| s.as_bool()) == Some(true);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // Anthropic's stream always ends with its usage; chat's only when asked.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(metadata) = fields.remove("metadata") {
        if let Some(user) = metadata.get("user_id").filter(|u| u.is_string()) {
            out.insert("user".into(), user.clone());
        }
    }
    // The older beta's top-level `output_format` is the same schema.
    let output_format = fields.remove("output_format").filter(|f| !f.is_null());
    let format = match fields.remove("output_config") {
        None | Some(Value::Null) => None,
        Some(Value::Object(mut config)) => {
            let format = config.remove("format").filter(|f| !f.is_null());
            dropped.rest(&config, &DROPPED_OUTPUT_CONFIG);
            format
        }
        Some(_) => return Err(refuse("output_config", "must be an object".into())),
    };
    if let Some((param, format)) = format
        .map(|f| ("output_config.format", f))
        .or(output_format.map(|f| ("output_format", f)))
    {
        out.insert("response_format".into(), response_format(&format, param)?);
    }
    if fields.remove("mcp_servers").is_some_and(|m| !m.is_null()) {
        return Err(refuse(
            "mcp_servers",
            "Chat Completions calls no MCP servers".into(),
        ));
    }
    dropped.rest(&fields, &DROPPED);
    Ok(Upstream {
        body: out,
        dropped,
        stream,
        echo: Default::default(),
        include_usage: stream,
    })
}

/// The text of a string or of `text` blocks, joined; `cache_control` is counted.
fn text_of(content: &Value, param: &str, dropped: &mut Dropped) -> Result<String, Refused> {
    match content {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (j, block) in blocks.iter().enumerate() {
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(refuse(
                        &format!("{param}.{j}.type"),
                        "only text blocks can be given here".into(),
                    ));
                }
                count_cache_control(block, dropped);
                text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Ok(text)
        }
        _ => Err(refuse(
            param,
            "must be a string or an array of blocks".into(),
        )),
    }
}

fn count_cache_control(block: &Value, dropped: &mut Dropped) {
    if block.get("cache_control").is_some() {
        dropped.field("cache_control");
    }
}

/// A user turn: its `tool_result` blocks become tool messages, first (Anthropic puts them
/// first too), then its text and images one user message.
fn user_turn(
    content: Option<&Value>,
    param: &str,
    messages: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<(), Refused> {
    let blocks = match content {
        Some(Value::String(text)) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(refuse(
                &format!("{param}.content"),
                "must be a string or an array of blocks".into(),
            ));
        }
    };
    let mut parts = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let block_param = format!("{param}.content.{j}");
        count_cache_control(block, dropped);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => parts.push(image_part(block, &block_param)?),
            Some("tool_result") => {
                let id = block.get("tool_use_id").and_then(Value::as_str);
                let Some(id) = id else {
                    return Err(refuse(
                        &format!("{block_param}.tool_use_id"),
                        "is required".into(),
                    ));
                };
                let content = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(content) => text_of(content, &format!("{block_param}.content"), dropped)?,
                };
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    dropped.field("is_error");
                }
                messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            _ => {
                return Err(refuse(
                    &format!("{block_param}.type"),
                    "only text, image and tool_result blocks have a counterpart in Chat \
                     Completions"
                        .into(),
                ));
            }
        }
    }
    let all_text = parts.iter().all(|p| p["type"] == "text");
    match parts.len() {
        0 => {}
        1 if all_text => {
            let text = parts[0]["text"].clone();
            messages.push(json!({"role": "user", "content": text}));
        }
        _ => messages.push(json!({"role": "user", "content": parts})),
    }
    Ok(())
}

/// An image block as an `image_url` part: a base64 source as a `data:` URL.
fn image_part(block: &Value, param: &str) -> Result<Value, Refused> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let text = |key: &str| source.get(key).and_then(Value::as_str);
    let url = match text("type") {
        Some("base64") => match (text("media_type"), text("data")) {
            (Some(media), Some(data)) => format!("data:{media};base64,{data}"),
            _ => {
                return Err(refuse(
                    &format!("{param}.source"),
                    "needs media_type and data".into(),
                ));
            }
        },
        Some("url") => match text("url") {
            Some(url) => url.to_owned(),
            None => return Err(refuse(&format!("{param}.source.url"), "is required".into())),
        },
        _ => {
            return Err(refuse(
                &format!("{param}.source.type"),
                "allowed: base64, url".into(),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// An assistant turn: its text as `content`, its `tool_use` blocks as `tool_calls`, ids kept.
fn assistant_turn(
    content: Option<&Value>,
    param: &str,
    dropped: &mut Dropped,
) -> Result<Value, Refused> {
    let blocks = match content {
        Some(Value::String(text)) => return Ok(json!({"role": "assistant", "content": text})),
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return Err(refuse(
                &format!("{param}.content"),
                "must be a string or an array of blocks".into(),
            ));
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        count_cache_control(block, dropped);
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str);
                let name = block.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(refuse(
                        &format!("{param}.content.{j}"),
                        "a tool_use block needs an id and a name".into(),
                    ));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({"id": id, "type": "function",
                                  "function": {"name": name, "arguments": input.to_string()}}));
            }
            Some("thinking" | "redacted_thinking") => dropped.field("thinking"),
            _ => {
                return Err(refuse(
                    &format!("{param}.content.{j}.type"),
                    "only text, tool_use and thinking blocks can be given here".into(),
                ));
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": text});
    if !calls.is_empty() {
        if text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// Anthropic tools as function tools; server tools (typed, such as `web_search_…`) are refused.
fn tools(tools: Value, dropped: &mut Dropped) -> Result<Vec<Value>, Refused> {
    let Value::Array(tools) = tools else {
        return Err(refuse("tools", "must be an array".into()));
    };
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            let custom = tool
                .get("type")
                .is_none_or(|t| t.is_null() || t == "custom");
            let name = tool.get("name").and_then(Value::as_str);
            let (true, Some(name)) = (custom, name) else {
                return Err(refuse(
                    &format!("tools.{i}"),
                    "only client tools with a name and an input_schema have a counterpart in \
                     Chat Completions"
                        .into(),
                ));
            };
            count_cache_control(&tool, dropped);
            let schema = tool
                .get("input_schema")
                .filter(|s| s.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut function = json!({"name": name, "parameters": schema});
            if let Some(description) = tool.get("description").filter(|d| d.is_string()) {
                function["description"] = description.clone();
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

/// `tool_choice`, and whether parallel calls stay allowed.
fn tool_choice(choice: &Value) -> Result<(Value, bool), Refused> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        != Some(true);
    let choice = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => return Err(refuse("tool_choice.name", "is required".into())),
        },
        _ => {
            return Err(refuse(
                "tool_choice.type",
                "allowed: auto, any, tool, none".into(),
            ));
        }
    };
    Ok((choice, parallel))
}

/// Chat's finish reason as Anthropic's stop reason.
fn stop_reason(finish_reason: Option<&str>) -> Value {
    match finish_reason {
        Some("length") => json!("max_tokens"),
        Some("tool_calls" | "function_call") => json!("tool_use"),
        Some("content_filter") => json!("refusal"),
        Some(_) => json!("end_turn"),
        None => Value::Null,
    }
}

/// Chat's usage as Anthropic's: the cached prompt tokens apart from the rest, as Anthropic
/// counts them.
pub(super) fn usage(usage: &Value) -> Value {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = usage
        .pointer("/prompt_tokens_details/cached_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    json!({
        "input_tokens": count("prompt_tokens").saturating_sub(cached),
        "output_tokens": count("completion_tokens"),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    })
}

/// Tool-call arguments as a `tool_use` input: a JSON object, else the text kept under `input`'s
/// `arguments` would change its shape, so an empty object, counted.
fn input_of(arguments: &str, dropped: &mut Dropped) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => {
            dropped.field("arguments");
            json!({})
        }
    }
}

/// A whole chat completion as a Messages reply (its first choice: the request asked for one).
pub(super) fn reply(reply: &Value, dropped: &mut Dropped) -> Value {
    let choice = reply.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let text = message.get("content").and_then(Value::as_str).unwrap_or("");
    let refusal = message.get("refusal").and_then(Value::as_str).unwrap_or("");
    for text in [text, refusal] {
        if !text.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or_default(),
            "name": call.pointer("/function/name").cloned().unwrap_or_default(),
            "input": input_of(arguments, dropped),
        }));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    let stop = if refusal.is_empty() {
        stop_reason(finish)
    } else {
        json!("refusal")
    };
    json!({
        "id": reply.get("id").cloned().unwrap_or_default(),
        "type": "message",
        "role": "assistant",
        "model": reply.get("model").cloned().unwrap_or_default(),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage(reply.get("usage").unwrap_or(&Value::Null)),
    })
}

/// An OpenAI error reply as Anthropic's envelope, same status.
pub(super) fn error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|e| e.pointer("/error/message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The upstream answered {status}."), str::to_owned);
    let error = ApiError {
        status,
        message,
        kind: "",
        param: None,
        code: None,
    };
    // Anthropic's envelope and type for the status, with the upstream's own message (or the
    // status named): not the wording llm-edge gives its own errors, such as a 401's.
    let mut envelope: Value =
        serde_json::from_slice(&anthropic::error_json(&error)).expect("an envelope is JSON");
    envelope["error"]["message"] = Value::String(error.message);
    (status, envelope.to_string().into_bytes())
}

/// What the translator has open in the client's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Nothing,
    Text,
    /// The tool-use block of this chat tool-call index.
    Tool(u64),
}

/// Translates chat chunks into a Messages event stream, one upstream event at a time.
#[derive(Debug)]
pub(super) struct Stream {
    started: bool,
    open: Open,
    /// The index of the next content block.
    next_block: u64,
    /// The chat tool calls whose blocks have been opened (and perhaps closed).
    calls_seen: Vec<u64>,
    /// The finish reason, once given.
    finish: Option<Value>,
    /// `message_delta` has gone out.
    delta_sent: bool,
    /// The stream has ended (`[DONE]` or an error): nothing more is emitted.
    done: bool,
    /// The events of a piece of text and of a call's arguments, cut at their first use.
    text_delta: Option<Option<Template>>,
    arguments_delta: Option<Option<Template>>,
    /// Content the client's API has no place for.
    pub(super) dropped: Dropped,
}

/// The event of a piece of text (`slots`: the block's index, the text).
fn text_delta(slots: &[Value]) -> Value {
    json!({"type": "content_block_delta", "index": slots[0],
           "delta": {"type": "text_delta", "text": slots[1]}})
}

/// The event of a piece of a tool call's arguments (`slots`: the block's index, the piece).
fn arguments_delta(slots: &[Value]) -> Value {
    json!({"type": "content_block_delta", "index": slots[0],
           "delta": {"type": "input_json_delta", "partial_json": slots[1]}})
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            started: false,
            open: Open::Nothing,
            next_block: 0,
            calls_seen: Vec::new(),
            finish: None,
            delta_sent: false,
            done: false,
            text_delta: None,
            arguments_delta: None,
            dropped: Dropped::default(),
        }
    }
}

impl Stream {
    fn start(&mut self, chunk: &Value, out: &mut Events) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(&json!({"type": "message_start", "message": {
            "id": chunk.get("id").and_then(Value::as_str).unwrap_or(""),
            "type": "message", "role": "assistant",
            "model": chunk.get("model").and_then(Value::as_str).unwrap_or(""),
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }}));
    }

    fn close(&mut self, out: &mut Events) {
        if self.open != Open::Nothing {
            out.push(&json!({"type": "content_block_stop", "index": self.next_block - 1}));
            self.open = Open::Nothing;
        }
    }

    fn open(&mut self, open: Open, block: Value, out: &mut Events) {
        self.close(out);
        out.push(
            &json!({"type": "content_block_start", "index": self.next_block,
                        "content_block": block}),
        );
        self.next_block += 1;
        self.open = open;
    }

    fn message_delta(&mut self, usage: &Value, out: &mut Events) {
        self.close(out);
        let stop = self.finish.clone().unwrap_or_else(|| json!("end_turn"));
        out.push(&json!({"type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": null},
                        "usage": self::usage(usage)}));
        self.delta_sent = true;
    }

    /// The client events one upstream event becomes.
    pub(super) fn event(&mut self, event: &Value, out: &mut Events) {
        if self.done {
            return;
        }
        if event.as_str() == Some("[DONE]") {
            self.start(&Value::Null, out);
            if !self.delta_sent {
                self.message_delta(&Value::Null, out);
            }
            out.push(&json!({"type": "message_stop"}));
            self.done = true;
            return;
        }
        if let Some(error) = event.get("error") {
            let body = json!({"error": error}).to_string();
            let (_, body) = self::error(500, body.as_bytes());
            out.push(&serde_json::from_slice(&body).unwrap_or_default());
            self.done = true;
            return;
        }
        let Some(choices) = event.get("choices").and_then(Value::as_array) else {
            return;
        };
        self.start(event, out);
        if self.delta_sent && !choices.is_empty() {
            // Content after the usage chunk has no place once `message_delta` is out.
            self.dropped.field("content_after_usage");
            return;
        }
        for choice in first_choices(choices) {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            for (key, text) in delta_texts(delta) {
                if self.open != Open::Text {
                    self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                }
                let fills = [Fill::Num(self.next_block - 1), Fill::Str(text)];
                fill_or_push(out, &mut self.text_delta, text_delta, &fills);
                if key == "refusal" {
                    self.finish = Some(json!("refusal"));
                }
            }
            for call in delta_calls(delta) {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !self.calls_seen.contains(&index) {
                    self.calls_seen.push(index);
                    let block = json!({
                        "type": "tool_use",
                        "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
                        "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                        "input": {},
                    });
                    self.open(Open::Tool(index), block, out);
                }
                let arguments = call.pointer("/function/arguments").and_then(Value::as_str);
                let Some(arguments) = arguments.filter(|a| !a.is_empty()) else {
                    continue;
                };
                if self.open == Open::Tool(index) {
                    let fills = [Fill::Num(self.next_block - 1), Fill::Str(arguments)];
                    fill_or_push(out, &mut self.arguments_delta, arguments_delta, &fills);
                } else {
                    // A call resumed after another began: its block is closed.
                    self.dropped.field("tool_call_delta");
                }
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                if self.finish.is_none() {
                    self.finish = Some(stop_reason(Some(finish)));
                }
                self.close(out);
            }
        }
        if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
            if choices.is_empty() && !self.delta_sent {
                self.message_delta(usage, out);
            }
        }
    }
}
