//! A client of OpenAI Chat Completions, an upstream of Anthropic Messages: the request up, the
//! reply (whole or streamed) and its errors down.

use serde_json::{Map, Value, json};

use super::events::{Events, Fill, Template, fill_or_push};
use super::{Dropped, Refused, Upstream, refuse};
use crate::api::openai::ApiError;

/// Request fields with no counterpart in Messages that change nothing the client relies on:
/// left out, each counted.
const DROPPED: [&str; 14] = [
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "reasoning_effort",
    "store",
    "service_tier",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
    "function_call",
    "functions",
];

/// Translates a chat request to a Messages request.
pub(super) fn request(
    mut fields: Map<String, Value>,
    default_max_tokens: u32,
) -> Result<Upstream, Refused> {
    let mut dropped = Dropped::default();
    let mut out = Map::new();
    if let Some(model) = fields.remove("model") {
        out.insert("model".into(), model);
    }
    let stream = fields.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    let (system, messages) = messages(fields.remove("messages"))?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = match fields.remove("max_completion_tokens") {
        Some(Value::Null) | None => fields.remove("max_tokens"),
        given => {
            fields.remove("max_tokens");
            given
        }
    };
    let max_tokens = match max_tokens {
        None | Some(Value::Null) => json!(default_max_tokens),
        Some(n) if n.as_u64().is_some_and(|n| n >= 1) => n,
        Some(_) => {
            return Err(refuse(
                "max_tokens",
                "must be an integer of at least 1".into(),
            ));
        }
    };
    out.insert("max_tokens".into(), max_tokens);
    match fields.remove("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(one)) => {
            out.insert("stop_sequences".into(), json!([one]));
        }
        Some(Value::Array(many)) if many.iter().all(Value::is_string) => {
            if !many.is_empty() {
                out.insert("stop_sequences".into(), Value::Array(many));
            }
        }
        Some(_) => {
            return Err(refuse(
                "stop",
                "must be a string or an array of strings".into(),
            ));
        }
    }
    if let Some(temperature) = fields.remove("temperature").filter(|t| !t.is_null()) {
        // OpenAI's scale runs to 2, Anthropic's to 1: a value above 1 has no equal.
        match temperature.as_f64() {
            Some(t) if (0.0..=1.0).contains(&t) => {
                out.insert("temperature".into(), temperature);
            }
            _ => {
                return Err(refuse(
                    "temperature",
                    "must be a number from 0 to 1 when the upstream speaks Anthropic Messages"
                        .into(),
                ));
            }
        }
    }
    if let Some(top_p) = fields.remove("top_p").filter(|t| !t.is_null()) {
        out.insert("top_p".into(), top_p);
    }
    if let Some(tools) = fields.remove("tools").filter(|t| !t.is_null()) {
        let tools = self::tools(tools, &mut dropped)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    let parallel = fields.remove("parallel_tool_calls");
    let mut choice = match fields.remove("tool_choice") {
        None | Some(Value::Null) => None,
        Some(choice) => Some(tool_choice(&choice)?),
    };
    if parallel.as_ref().and_then(Value::as_bool) == Some(false) && out.contains_key("tools") {
        let choice = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    fields.remove("stream");
    fields.remove("stream_options");
    if let Some(format) = fields.remove("response_format").filter(|f| !f.is_null()) {
        if let Some(format) = output_format(&format, &mut dropped)? {
            out.insert("output_config".into(), json!({"format": format}));
        }
    }
    match fields.remove("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => return Err(refuse("n", "Anthropic Messages gives one choice".into())),
    }
    for flag in ["logprobs", "top_logprobs"] {
        match fields.remove(flag) {
            None | Some(Value::Null | Value::Bool(false)) => {}
            Some(_) => {
                return Err(refuse(
                    flag,
                    "Anthropic Messages reports no log probabilities".into(),
                ));
            }
        }
    }
    if let Some(modalities) = fields.remove("modalities") {
        let text_only = modalities
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m == "text"));
        if !text_only {
            return Err(refuse(
                "modalities",
                "Anthropic Messages answers in text".into(),
            ));
        }
    }
    if fields.remove("audio").is_some_and(|a| !a.is_null()) {
        return Err(refuse("audio", "Anthropic Messages answers in text".into()));
    }
    if let Some(user) = fields.remove("user").filter(Value::is_string) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    fields
        .remove("metadata")
        .inspect(|_| dropped.field("metadata"));
    dropped.rest(&fields, &DROPPED);
    Ok(Upstream {
        body: out,
        dropped,
        stream,
        echo: Default::default(),
        include_usage,
    })
}

/// The system blocks and the Messages turns of a chat conversation: system and developer
/// messages join `system`; tool results become `tool_result` blocks of a user turn; turns of the
/// same role in a row become one.
fn messages(messages: Option<Value>) -> Result<(Vec<Value>, Vec<Value>), Refused> {
    let Some(Value::Array(messages)) = messages else {
        return Err(refuse("messages", "must be an array of messages".into()));
    };
    let mut system = Vec::new();
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(message.get("content"), &param)?);
                continue;
            }
            "user" => ("user", user_blocks(message.get("content"), &param)?),
            "assistant" => ("assistant", assistant_blocks(&message, &param)?),
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str);
                let Some(id) = id else {
                    return Err(refuse(
                        &format!("{param}.tool_call_id"),
                        "a tool message needs the id of the call it answers".into(),
                    ));
                };
                let content = text_blocks(message.get("content"), &param)?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                ("user", vec![block])
            }
            other => {
                return Err(refuse(
                    &format!("{param}.role"),
                    format!(
                        "{other:?} has no counterpart in Anthropic Messages; allowed: system, \
                         developer, user, assistant, tool"
                    ),
                ));
            }
        };
        match turns.last_mut() {
            Some((last, held)) if last == role => held.extend(blocks),
            _ => turns.push((role.to_owned(), blocks)),
        }
    }
    let turns = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    Ok((system, turns))
}

/// Text content, a string or `text` parts, as Anthropic text blocks.
fn text_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, Refused> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter_map(|(j, part)| match part.get("type").and_then(Value::as_str) {
                Some("text" | "refusal") => {
                    let key = if part["type"] == "text" {
                        "text"
                    } else {
                        "refusal"
                    };
                    let text = part.get(key).and_then(Value::as_str).unwrap_or("");
                    (!text.is_empty()).then(|| Ok(json!({"type": "text", "text": text})))
                }
                _ => Some(Err(refuse(
                    &format!("{param}.content[{j}].type"),
                    "only text parts can be given here".into(),
                ))),
            })
            .collect(),
        Some(_) => Err(refuse(
            &format!("{param}.content"),
            "must be a string or an array of parts".into(),
        )),
    }
}

/// A user message's content: text and image parts.
fn user_blocks(content: Option<&Value>, param: &str) -> Result<Vec<Value>, Refused> {
    let Some(Value::Array(parts)) = content else {
        return text_blocks(content, param);
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_param = format!("{param}.content[{j}]");
        match part.get("type").and_then(Value::as_str) {
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        refuse(&format!("{part_param}.image_url.url"), "is required".into())
                    })?;
                blocks.push(image_block(url, &part_param)?);
            }
            Some("text") => {
                blocks.extend(text_blocks(Some(&Value::Array(vec![part.clone()])), param)?)
            }
            _ => {
                return Err(refuse(
                    &format!("{part_param}.type"),
                    "only text and image_url parts have a counterpart in Anthropic Messages".into(),
                ));
            }
        }
    }
    Ok(blocks)
}

/// An image part: a `data:` URL becomes a base64 source, any other URL a URL source.
fn image_block(url: &str, param: &str) -> Result<Value, Refused> {
    let Some(data) = url.strip_prefix("data:") else {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    };
    let parsed = data
        .split_once(',')
        .and_then(|(head, body)| Some((head.strip_suffix(";base64")?, body)));
    match parsed {
        Some((media_type, body)) if media_type.starts_with("image/") => Ok(json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": body},
        })),
        _ => Err(refuse(
            &format!("{param}.image_url.url"),
            "a data URL must be base64 of an image/* type".into(),
        )),
    }
}

/// An assistant message: its text, then a `tool_use` block per tool call, ids kept.
fn assistant_blocks(message: &Value, param: &str) -> Result<Vec<Value>, Refused> {
    let mut blocks = text_blocks(message.get("content"), param)?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(refuse(
                &format!("{param}.tool_calls"),
                "must be an array".into(),
            ));
        }
    };
    for (j, call) in calls.iter().enumerate() {
        let call_param = format!("{param}.tool_calls[{j}]");
        let id = call.get("id").and_then(Value::as_str);
        let name = call.pointer("/function/name").and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(refuse(
                &call_param,
                "needs an id and a function name".into(),
            ));
        };
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input = match serde_json::from_str::<Value>(arguments) {
            Ok(input @ Value::Object(_)) => input,
            _ => {
                return Err(refuse(
                    &format!("{call_param}.function.arguments"),
                    "must be a JSON object to become a tool_use input".into(),
                ));
            }
        };
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
    }
    Ok(blocks)
}

/// Function tools as Anthropic tools; `strict` has no counterpart and is counted.
fn tools(tools: Value, dropped: &mut Dropped) -> Result<Vec<Value>, Refused> {
    let Value::Array(tools) = tools else {
        return Err(refuse("tools", "must be an array".into()));
    };
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            let function = tool
                .get("function")
                .filter(|_| tool.get("type").and_then(Value::as_str) == Some("function"));
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(function), Some(name)) = (function, name) else {
                return Err(refuse(
                    &format!("tools[{i}]"),
                    "only function tools with a name have a counterpart in Anthropic Messages"
                        .into(),
                ));
            };
            let schema = function
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut out = json!({"name": name, "input_schema": schema});
            if let Some(description) = function.get("description").filter(|d| d.is_string()) {
                out["description"] = description.clone();
            }
            if function.get("strict").is_some() {
                dropped.field("strict");
            }
            Ok(out)
        })
        .collect()
}

/// `response_format` as `output_config.format`: a JSON schema is Anthropic's structured output
/// (always held to the schema, so `strict` changes nothing; `name` and `description` have no
/// place and are counted); `json_object` has no counterpart.
fn output_format(format: &Value, dropped: &mut Dropped) -> Result<Option<Value>, Refused> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_schema") => {
            let spec = format.get("json_schema");
            let Some(schema) = spec.and_then(|s| s.get("schema")).filter(|s| s.is_object()) else {
                return Err(refuse(
                    "response_format.json_schema.schema",
                    "Anthropic's structured outputs need a schema object".into(),
                ));
            };
            for key in ["name", "strict", "description"] {
                if spec.and_then(|s| s.get(key)).is_some_and(|v| !v.is_null()) {
                    dropped.field(key);
                }
            }
            Ok(Some(json!({"type": "json_schema", "schema": schema})))
        }
        Some("json_object") => Err(refuse(
            "response_format",
            "json_object has no counterpart in Anthropic Messages (a json_schema does)".into(),
        )),
        _ => Err(refuse(
            "response_format.type",
            "allowed: text, json_schema".into(),
        )),
    }
}

/// `tool_choice`: auto, none, required (Anthropic's any) or a named function.
fn tool_choice(choice: &Value) -> Result<Value, Refused> {
    match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "none" => Ok(json!({"type": "none"})),
            "required" => Ok(json!({"type": "any"})),
            _ => Err(refuse(
                "tool_choice",
                "allowed: auto, none, required or a named function".into(),
            )),
        },
        _ => match choice.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Ok(json!({"type": "tool", "name": name})),
            None => Err(refuse(
                "tool_choice",
                "allowed: auto, none, required or a named function".into(),
            )),
        },
    }
}

/// Anthropic's stop reason as a chat finish reason.
pub(super) fn finish_reason(stop_reason: Option<&str>) -> Value {
    match stop_reason {
        Some("max_tokens" | "model_context_window_exceeded") => json!("length"),
        Some("tool_use") => json!("tool_calls"),
        Some("refusal") => json!("content_filter"),
        Some(_) => json!("stop"),
        None => Value::Null,
    }
}

/// Chat's prompt tokens of Anthropic's three counts (an upstream's counts near `u64::MAX`
/// saturate rather than wrap).
pub(super) fn prompt_tokens(input: u64, cached: u64, cache_creation: u64) -> u64 {
    input.saturating_add(cached).saturating_add(cache_creation)
}

/// Anthropic's usage as chat's: prompt tokens include the cached and cache-written ones, as
/// OpenAI counts them, with the cached ones named in `prompt_tokens_details`.
pub(super) fn usage(usage: &Value) -> Value {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    let prompt = prompt_tokens(
        count("input_tokens"),
        cached,
        count("cache_creation_input_tokens"),
    );
    let completion = count("output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": 0},
    })
}

/// A whole Messages reply as a chat completion.
pub(super) fn reply(reply: &Value, created: u64, dropped: &mut Dropped) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in reply
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or_default(),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or_default(),
                    "arguments": block.get("input").unwrap_or(&json!({})).to_string(),
                },
            })),
            _ => dropped.field("content_block"),
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": reply.get("id").cloned().unwrap_or_default(),
        "object": "chat.completion",
        "created": created,
        "model": reply.get("model").cloned().unwrap_or_default(),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(reply.get("stop_reason").and_then(Value::as_str)),
        }],
        "usage": usage(reply.get("usage").unwrap_or(&Value::Null)),
    })
}

/// An Anthropic error reply as OpenAI's envelope, and the status the client gets (Anthropic's
/// 529, overloaded, is OpenAI's 503).
pub(super) fn error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|e| e.get("error"));
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| format!("The upstream answered {status}."), str::to_owned);
    let status = if status == 529 { 503 } else { status };
    let kind = match error.and_then(|e| e.get("type")).and_then(Value::as_str) {
        Some(
            kind @ ("authentication_error"
            | "permission_error"
            | "not_found_error"
            | "rate_limit_error"),
        ) => openai_kind(kind),
        Some("invalid_request_error" | "request_too_large") => "invalid_request_error",
        Some(_) if status < 500 => "invalid_request_error",
        Some(_) => "server_error",
        None => super::openai_kind_of_status(status),
    };
    let error = ApiError {
        status,
        message,
        kind,
        param: None,
        code: None,
    };
    (status, error.to_json())
}

fn openai_kind(kind: &str) -> &'static str {
    match kind {
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        _ => "rate_limit_error",
    }
}

/// Translates a Messages event stream into chat chunks, one upstream event at a time.
#[derive(Debug, Default)]
pub(super) struct Stream {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// The Anthropic usage so far: `message_start`'s, updated by each `message_delta`.
    usage: Map<String, Value>,
    /// The chat tool-call index of each open `tool_use` block, by block index.
    calls: Vec<(u64, usize)>,
    /// Tool calls opened so far.
    call_count: usize,
    /// The stream has ended (`message_stop` or an error): nothing more is emitted.
    done: bool,
    /// The chunk of a text delta and of a piece of a call's arguments, cut once the stream's
    /// id and model are known (`None` inside: cannot be cut, each is rendered whole).
    text_chunk: Option<Option<Template>>,
    arguments_chunk: Option<Option<Template>>,
    /// Content the client's API has no place for.
    pub(super) dropped: Dropped,
}

/// A chat chunk of the stream `id` and `model`, with one choice.
fn chunk(id: &str, model: &str, created: u64, delta: Value, finish_reason: Value) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
    })
}

impl Stream {
    /// A translator for a reply to a request that asked for usage (`stream_options`) or not.
    pub(super) fn new(created: u64, include_usage: bool) -> Self {
        Self {
            created,
            include_usage,
            ..Self::default()
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Value) -> Value {
        chunk(&self.id, &self.model, self.created, delta, finish_reason)
    }

    /// The client events one upstream event becomes.
    pub(super) fn event(&mut self, event: &Value, out: &mut Events) {
        if self.done {
            return;
        }
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                let text = |key: &str| {
                    message
                        .get(key)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                self.id = text("id");
                self.model = text("model");
                (self.text_chunk, self.arguments_chunk) = (None, None);
                if let Some(usage) = message.get("usage").and_then(Value::as_object) {
                    self.usage.clone_from(usage);
                }
                out.push(&self.chunk(json!({"role": "assistant", "content": ""}), Value::Null));
            }
            "content_block_start" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            self.text(text, out);
                        }
                    }
                    Some("tool_use") => {
                        let call = self.call_count;
                        self.call_count += 1;
                        self.calls.retain(|(block, _)| *block != index);
                        self.calls.push((index, call));
                        let delta = json!({"tool_calls": [{
                            "index": call,
                            "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                            "type": "function",
                            "function": {
                                "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                                "arguments": "",
                            },
                        }]});
                        out.push(&self.chunk(delta, Value::Null));
                    }
                    _ => self.dropped.field("content_block"),
                }
            }
            "content_block_delta" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = event.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            self.text(text, out);
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta.get("partial_json").and_then(Value::as_str);
                        let call = self.calls.iter().find(|(block, _)| *block == index);
                        if let (Some(partial), Some(&(_, call))) = (partial, call) {
                            if !partial.is_empty() {
                                self.arguments(call, partial, out);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
                self.calls.retain(|(block, _)| *block != index);
            }
            "message_delta" => {
                if let Some(usage) = event.get("usage").and_then(Value::as_object) {
                    for (key, value) in usage {
                        if !value.is_null() {
                            self.usage.insert(key.clone(), value.clone());
                        }
                    }
                }
                let reason = event.pointer("/delta/stop_reason").and_then(Value::as_str);
                if reason.is_some() {
                    out.push(&self.chunk(json!({}), finish_reason(reason)));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let mut last = self.chunk(json!({}), Value::Null);
                    last["choices"] = json!([]);
                    last["usage"] = usage(&Value::Object(self.usage.clone()));
                    out.push(&last);
                }
                out.push(&Value::String("[DONE]".into()));
                self.done = true;
            }
            "error" => {
                let (_, body) = error(500, event.to_string().as_bytes());
                out.push(&serde_json::from_slice(&body).unwrap_or_default());
                self.done = true;
            }
            _ => {}
        }
    }

    /// The chunk of a piece of text.
    fn text(&mut self, text: &str, out: &mut Events) {
        let (id, model, created) = (&self.id, &self.model, self.created);
        let make = |slots: &[Value]| {
            chunk(
                id,
                model,
                created,
                json!({"content": slots[0]}),
                Value::Null,
            )
        };
        fill_or_push(out, &mut self.text_chunk, make, &[Fill::Str(text)]);
    }

    /// The chunk of a piece of the arguments of the chat tool call `call`.
    fn arguments(&mut self, call: usize, partial: &str, out: &mut Events) {
        let (id, model, created) = (&self.id, &self.model, self.created);
        let make = |slots: &[Value]| {
            let delta = json!({"tool_calls": [{"index": slots[0],
                                               "function": {"arguments": slots[1]}}]});
            chunk(id, model, created, delta, Value::Null)
        };
        let fills = [Fill::Num(call as u64), Fill::Str(partial)];
        fill_or_push(out, &mut self.arguments_chunk, make, &fills);
    }
}
