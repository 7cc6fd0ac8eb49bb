//! A client of OpenAI Responses, an upstream of OpenAI Chat Completions: the request up, the
//! reply (whole or streamed, with sequence numbers) and its errors down.
//!
//! Stateless: llm-edge stores no responses, so `previous_response_id` is accepted only when the
//! input carries the whole conversation (see [`request`]), and `store` is ignored (every reply
//! says `"store": false`).

use serde_json::{Map, Value, json};

use super::events::{Events, Fill, Template, fill_or_push};
use super::{Dropped, Echo, Refused, Upstream, delta_calls, delta_texts, first_choices, refuse};

/// Request fields with no counterpart in Chat Completions that change nothing the client relies
/// on: left out, each counted.
const DROPPED: [&str; 7] = [
    "store",
    "metadata",
    "include",
    "truncation",
    "service_tier",
    "previous_response_id",
    "prompt_cache_key",
];

/// Translates a Responses request to a chat request.
pub(super) fn request(mut fields: Map<String, Value>) -> Result<Upstream, Refused> {
    let mut dropped = Dropped::default();
    let mut out = Map::new();
    if let Some(model) = fields.remove("model") {
        out.insert("model".into(), model);
    }
    for key in ["conversation", "prompt"] {
        if fields.remove(key).is_some_and(|v| !v.is_null()) {
            return Err(refuse(
                key,
                "llm-edge keeps no stored conversations or prompts: send the whole input".into(),
            ));
        }
    }
    if fields.remove("background").and_then(|b| b.as_bool()) == Some(true) {
        return Err(refuse(
            "background",
            "llm-edge answers in the foreground".into(),
        ));
    }
    // The reply repeats these as the client sent them, as OpenAI's does.
    let mut echo = Map::new();
    for key in ["instructions", "tools", "tool_choice"] {
        if let Some(value) = fields.get(key).filter(|v| !v.is_null()) {
            echo.insert(key.into(), value.clone());
        }
    }
    let mut messages = Vec::new();
    if let Some(instructions) = fields.remove("instructions").filter(|i| !i.is_null()) {
        let Value::String(instructions) = instructions else {
            return Err(refuse("instructions", "must be a string".into()));
        };
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let whole = input(fields.remove("input"), &mut messages, &mut dropped)?;
    if fields
        .get("previous_response_id")
        .is_some_and(|p| !p.is_null())
        && !whole
    {
        return Err(refuse(
            "previous_response_id",
            "llm-edge stores no responses, so it cannot continue one: send the whole \
             conversation in input (with the earlier assistant turns and every function_call \
             whose output it gives), or no previous_response_id"
                .into(),
        ));
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = fields.remove("max_output_tokens").filter(|m| !m.is_null()) {
        out.insert("max_tokens".into(), max);
    }
    for key in ["temperature", "top_p", "parallel_tool_calls", "user"] {
        if let Some(value) = fields.remove(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), value);
        }
    }
    if let Some(tools) = fields.remove("tools").filter(|t| !t.is_null()) {
        let tools = self::tools(tools)?;
        if !tools.is_empty() {
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = fields.remove("tool_choice").filter(|c| !c.is_null()) {
        out.insert("tool_choice".into(), tool_choice(&choice)?);
    }
    if let Some(text) = fields.remove("text").filter(|t| !t.is_null()) {
        if let Some(format) = response_format(&text)? {
            out.insert("response_format".into(), format);
        }
        if text.get("verbosity").is_some() {
            dropped.field("verbosity");
        }
    }
    if let Some(reasoning) = fields.remove("reasoning").filter(|r| !r.is_null()) {
        if let Some(effort) = reasoning.get("effort").filter(|e| e.is_string()) {
            out.insert("reasoning_effort".into(), effort.clone());
        }
        if reasoning.get("summary").is_some_and(|s| !s.is_null()) {
            dropped.field("reasoning.summary");
        }
    }
    if fields.remove("top_logprobs").is_some_and(|t| !t.is_null()) {
        return Err(refuse(
            "top_logprobs",
            "log probabilities of Responses output have no counterpart llm-edge translates".into(),
        ));
    }
    let stream = fields.remove("stream").and_then(|s| s.as_bool()) == Some(true);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // The Responses stream always ends with its usage; chat's only when asked.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    fields.remove("stream_options");
    dropped.rest(&fields, &DROPPED);
    Ok(Upstream {
        body: out,
        dropped,
        stream,
        include_usage: stream,
        echo: Echo(echo),
    })
}

/// Appends the chat messages of `input`; returns whether it carries a whole conversation: an
/// earlier assistant turn, and every `function_call_output` with its `function_call`.
fn input(
    input: Option<Value>,
    messages: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<bool, Refused> {
    let items = match input {
        Some(Value::String(text)) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(false);
        }
        Some(Value::Array(items)) => items,
        _ => {
            return Err(refuse(
                "input",
                "must be a string or an array of items".into(),
            ));
        }
    };
    let mut calls: Vec<String> = Vec::new();
    let mut answered: Vec<String> = Vec::new();
    let mut assistant_seen = false;
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                if !["user", "system", "developer", "assistant"].contains(&role) {
                    return Err(refuse(
                        &format!("{param}.role"),
                        "allowed: user, system, developer, assistant".into(),
                    ));
                }
                assistant_seen |= role == "assistant";
                let content = content(item.get("content"), role, &param)?;
                messages.push(json!({"role": role, "content": content}));
            }
            "function_call" => {
                let call_id = item.get("call_id").and_then(Value::as_str);
                let name = item.get("name").and_then(Value::as_str);
                let (Some(call_id), Some(name)) = (call_id, name) else {
                    return Err(refuse(
                        &param,
                        "a function_call needs a call_id and a name".into(),
                    ));
                };
                assistant_seen = true;
                calls.push(call_id.to_owned());
                let arguments = item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or("{}");
                let call = json!({"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}});
                // Calls in a row are one assistant turn, as chat gives them.
                let last_is_calls = messages
                    .last()
                    .is_some_and(|m| m["role"] == "assistant" && m.get("tool_calls").is_some());
                if last_is_calls {
                    let last = messages.last_mut().expect("a last message");
                    if let Some(list) = last["tool_calls"].as_array_mut() {
                        list.push(call);
                    }
                } else {
                    messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
                }
            }
            "function_call_output" => {
                let Some(call_id) = item.get("call_id").and_then(Value::as_str) else {
                    return Err(refuse(&format!("{param}.call_id"), "is required".into()));
                };
                answered.push(call_id.to_owned());
                let output = match item.get("output") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect(),
                    _ => String::new(),
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            "reasoning" => dropped.field("reasoning"),
            _ => {
                return Err(refuse(
                    &format!("{param}.type"),
                    "only message, function_call, function_call_output and reasoning items \
                     have a counterpart in Chat Completions (llm-edge stores nothing an \
                     item_reference could name)"
                        .into(),
                ));
            }
        }
    }
    Ok(assistant_seen && answered.iter().all(|id| calls.contains(id)))
}

/// A message item's content as chat content: a string, or text and image parts.
fn content(content: Option<&Value>, role: &str, param: &str) -> Result<Value, Refused> {
    let parts = match content {
        Some(Value::String(text)) => return Ok(json!(text)),
        Some(Value::Array(parts)) => parts,
        _ => {
            return Err(refuse(
                &format!("{param}.content"),
                "must be a string or an array of parts".into(),
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text" | "refusal") => {
                let key = if part["type"] == "refusal" {
                    "refusal"
                } else {
                    "text"
                };
                let text = part.get(key).and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            Some("input_image") if role == "user" => {
                let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                    return Err(refuse(
                        &format!("{param}.content[{j}].image_url"),
                        "an image by URL is translated; by file_id it is not".into(),
                    ));
                };
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                    image["detail"] = detail.clone();
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            _ => {
                return Err(refuse(
                    &format!("{param}.content[{j}].type"),
                    "only text parts, and images in user messages, have a counterpart here".into(),
                ));
            }
        }
    }
    // Assistant and system turns take text alone in chat: their parts joined.
    if role != "user" {
        let text: String = out
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        return Ok(json!(text));
    }
    Ok(Value::Array(out))
}

/// Function tools as chat's; built-in tools (web search, file search, computer use, …) refused.
fn tools(tools: Value) -> Result<Vec<Value>, Refused> {
    let Value::Array(tools) = tools else {
        return Err(refuse("tools", "must be an array".into()));
    };
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            let name = tool.get("name").and_then(Value::as_str);
            let (true, Some(name)) = (
                tool.get("type").and_then(Value::as_str) == Some("function"),
                name,
            ) else {
                return Err(refuse(
                    &format!("tools[{i}]"),
                    "only function tools have a counterpart in Chat Completions".into(),
                ));
            };
            let mut function = json!({"name": name});
            for key in ["description", "parameters", "strict"] {
                if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                    function[key] = value.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

fn tool_choice(choice: &Value) -> Result<Value, Refused> {
    match choice {
        Value::String(mode) if ["auto", "none", "required"].contains(&mode.as_str()) => {
            Ok(choice.clone())
        }
        _ if choice.get("type").and_then(Value::as_str) == Some("function") => {
            match choice.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(refuse("tool_choice.name", "is required".into())),
            }
        }
        _ => Err(refuse(
            "tool_choice",
            "allowed: auto, none, required or a function".into(),
        )),
    }
}

/// `text.format` as `response_format`: chat expresses all three.
fn response_format(text: &Value) -> Result<Option<Value>, Refused> {
    let Some(format) = text.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = json!({
                "name": format.get("name").and_then(Value::as_str).unwrap_or("response"),
                "schema": format.get("schema").cloned().unwrap_or_else(|| json!({})),
            });
            for key in ["strict", "description"] {
                if let Some(value) = format.get(key).filter(|v| !v.is_null()) {
                    schema[key] = value.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err(refuse(
            "text.format.type",
            "allowed: text, json_object, json_schema".into(),
        )),
    }
}

/// Chat's usage as the Responses API's.
fn usage(usage: &Value) -> Value {
    let count = |pointer: &str| usage.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
    let input = count("/prompt_tokens");
    let output = count("/completion_tokens");
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count("/prompt_tokens_details/cached_tokens")},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": count("/completion_tokens_details/reasoning_tokens")},
        "total_tokens": input + output,
    })
}

/// An id of the Responses API from a chat one: `chatcmpl-x` as `resp_x`, `call_x` as `fc_x`.
fn id(prefix: &str, from: &str) -> String {
    let bare = from
        .strip_prefix("chatcmpl-")
        .or_else(|| from.strip_prefix("call_"))
        .unwrap_or(from);
    format!("{prefix}_{bare}")
}

/// One output item, as the reply and the stream's events carry it.
#[derive(Debug, Clone)]
enum Item {
    Message {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl Item {
    fn json(&self, status: &str) -> Value {
        match self {
            Self::Message { id, text } => {
                let content = if status == "completed" {
                    json!([{"type": "output_text", "text": text, "annotations": []}])
                } else {
                    json!([])
                };
                json!({"type": "message", "id": id, "status": status, "role": "assistant",
                       "content": content})
            }
            Self::Call {
                id,
                call_id,
                name,
                arguments,
            } => json!({
                "type": "function_call", "id": id, "call_id": call_id, "name": name,
                "arguments": arguments, "status": status,
            }),
        }
    }
}

/// The `Response` object: `in_progress` with no output, or final with its items and usage.
fn response(
    id: &str,
    model: &str,
    created: u64,
    finish: Option<&str>,
    items: &[Item],
    usage: Option<Value>,
    echo: &Echo,
) -> Value {
    let (status, incomplete) = match finish {
        None => ("in_progress", Value::Null),
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        Some(_) => ("completed", Value::Null),
    };
    let output: Vec<Value> = items.iter().map(|item| item.json("completed")).collect();
    json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": incomplete,
        "instructions": echo.get("instructions", Value::Null),
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        // llm-edge stores nothing: `store` was ignored, and the reply says so.
        "store": false,
        "temperature": null, "text": {"format": {"type": "text"}},
        "tool_choice": echo.get("tool_choice", json!("auto")),
        "tools": echo.get("tools", json!([])), "top_p": null, "truncation": "disabled",
        "usage": usage.unwrap_or(Value::Null), "user": null, "metadata": {},
    })
}

/// A whole chat completion as a `Response`, repeating `echo` of the request.
pub(super) fn reply(reply: &Value, echo: &Echo) -> Value {
    let text_of = |key: &str| reply.get(key).and_then(Value::as_str).unwrap_or("");
    let chat_id = text_of("id");
    let choice = reply.pointer("/choices/0").unwrap_or(&Value::Null);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut items = Vec::new();
    let text = message.get("content").and_then(Value::as_str).unwrap_or("");
    let refusal = message.get("refusal").and_then(Value::as_str).unwrap_or("");
    let calls = message.get("tool_calls").and_then(Value::as_array);
    if !text.is_empty() || !refusal.is_empty() || calls.is_none_or(Vec::is_empty) {
        items.push(Item::Message {
            id: id("msg", chat_id),
            text: format!("{text}{refusal}"),
        });
    }
    for call in calls.into_iter().flatten() {
        let call_id = call.get("id").and_then(Value::as_str).unwrap_or("");
        let function = |key: &str| {
            call.pointer(&format!("/function/{key}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        items.push(Item::Call {
            id: id("fc", call_id),
            call_id: call_id.to_owned(),
            name: function("name"),
            arguments: function("arguments"),
        });
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let created = reply.get("created").and_then(Value::as_u64).unwrap_or(0);
    let usage = reply.get("usage").map(self::usage);
    response(
        &id("resp", chat_id),
        text_of("model"),
        created,
        Some(finish),
        &items,
        usage,
        echo,
    )
}

/// An error reply in OpenAI's envelope (the Responses API's too), same status.
pub(super) fn error(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|e| e.get("error"));
    let text = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    let message =
        text("message").map_or_else(|| format!("The upstream answered {status}."), str::to_owned);
    let kind = match text("type") {
        Some(kind) if kind.ends_with("_error") => kind.to_owned(),
        Some(_) if status < 500 => "invalid_request_error".to_owned(),
        Some(_) => "server_error".to_owned(),
        None => super::openai_kind_of_status(status).to_owned(),
    };
    let envelope = json!({"error": {"message": message, "type": kind,
                                     "param": text("param"), "code": text("code")}});
    (status, envelope.to_string().into_bytes())
}

/// Translates chat chunks into the Responses API's typed events, one upstream event at a time,
/// numbering them.
#[derive(Debug, Default)]
pub(super) struct Stream {
    sequence: u64,
    started: bool,
    id: String,
    chat_id: String,
    model: String,
    created: u64,
    items: Vec<Item>,
    /// The last item is still open.
    open: bool,
    /// Chat tool-call indexes, in the order their items opened.
    calls: Vec<u64>,
    finish: Option<String>,
    usage: Option<Value>,
    done: bool,
    /// What the responses repeat of the request.
    echo: Echo,
    /// The events of a piece of text and of a call's arguments, cut at their first use.
    text_delta: Option<Option<Template>>,
    arguments_delta: Option<Option<Template>>,
    /// Content the client's API has no place for.
    pub(super) dropped: Dropped,
}

/// The event of a piece of text (`slots`: the sequence number, the item's id, its output
/// index, the text).
fn text_delta(slots: &[Value]) -> Value {
    json!({"type": "response.output_text.delta", "sequence_number": slots[0],
           "item_id": slots[1], "output_index": slots[2], "content_index": 0,
           "delta": slots[3], "logprobs": []})
}

/// The event of a piece of a call's arguments (`slots`: the sequence number, the item's id,
/// its output index, the piece).
fn arguments_delta(slots: &[Value]) -> Value {
    json!({"type": "response.function_call_arguments.delta", "sequence_number": slots[0],
           "item_id": slots[1], "output_index": slots[2], "delta": slots[3]})
}

/// Appends the next event (`make`, through `template`) of a piece of the item `id` at
/// `output_index`, numbering it.
fn delta_event(
    out: &mut Events,
    template: &mut Option<Option<Template>>,
    make: fn(&[Value]) -> Value,
    sequence: &mut u64,
    id: &str,
    output_index: usize,
    piece: &str,
) {
    let fills = [
        Fill::Num(*sequence),
        Fill::Str(id),
        Fill::Num(output_index as u64),
        Fill::Str(piece),
    ];
    fill_or_push(out, template, make, &fills);
    *sequence += 1;
}

impl Stream {
    /// A translator whose responses repeat `echo` of the request.
    pub(super) fn new(echo: Echo) -> Self {
        Self {
            echo,
            ..Self::default()
        }
    }

    fn push(&mut self, kind: &str, mut fields: Value, out: &mut Events) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        out.push(&fields);
    }

    fn start(&mut self, chunk: &Value, out: &mut Events) {
        if self.started {
            return;
        }
        self.started = true;
        let text = |key: &str| {
            chunk
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        self.chat_id = text("id");
        self.id = id("resp", &self.chat_id);
        self.model = text("model");
        self.created = chunk.get("created").and_then(Value::as_u64).unwrap_or(0);
        let response = response(
            &self.id,
            &self.model,
            self.created,
            None,
            &[],
            None,
            &self.echo,
        );
        for kind in ["response.created", "response.in_progress"] {
            self.push(kind, json!({"response": response}), out);
        }
    }

    /// Closes the open item with its `done` events.
    fn close(&mut self, out: &mut Events) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let item = self.items[index].clone();
        match &item {
            Item::Message { id, text } => {
                let common = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = common.clone();
                done["text"] = json!(text);
                done["logprobs"] = json!([]);
                self.push("response.output_text.done", done, out);
                let mut part = common;
                part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
                self.push("response.content_part.done", part, out);
            }
            Item::Call { id, arguments, .. } => {
                let done = json!({"item_id": id, "output_index": index, "arguments": arguments});
                self.push("response.function_call_arguments.done", done, out);
            }
        }
        let done = json!({"output_index": index, "item": item.json("completed")});
        self.push("response.output_item.done", done, out);
    }

    fn open(&mut self, item: Item, out: &mut Events) {
        self.close(out);
        let index = self.items.len();
        let added = json!({"output_index": index, "item": item.json("in_progress")});
        self.items.push(item);
        self.open = true;
        self.push("response.output_item.added", added, out);
        if let Item::Message { id, .. } = &self.items[index] {
            let part = json!({"item_id": id, "output_index": index, "content_index": 0,
                              "part": {"type": "output_text", "text": "", "annotations": []}});
            self.push("response.content_part.added", part, out);
        }
    }

    /// The client events one upstream event becomes.
    pub(super) fn event(&mut self, event: &Value, out: &mut Events) {
        if self.done {
            return;
        }
        if event.as_str() == Some("[DONE]") {
            self.start(&Value::Null, out);
            self.close(out);
            let finish = self.finish.clone().unwrap_or_else(|| "stop".into());
            let response = response(
                &self.id,
                &self.model,
                self.created,
                Some(&finish),
                &self.items,
                self.usage.clone(),
                &self.echo,
            );
            let kind = if response["status"] == "incomplete" {
                "response.incomplete"
            } else {
                "response.completed"
            };
            self.push(kind, json!({"response": response}), out);
            self.done = true;
            return;
        }
        if let Some(error) = event.get("error") {
            let text = |key: &str| error.get(key).cloned().unwrap_or(Value::Null);
            let fields =
                json!({"code": text("code"), "message": text("message"), "param": text("param")});
            self.push("error", fields, out);
            self.done = true;
            return;
        }
        let Some(choices) = event.get("choices").and_then(Value::as_array) else {
            return;
        };
        self.start(event, out);
        if let Some(reported) = event.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(reported));
        }
        for choice in first_choices(choices) {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            for (_, text) in delta_texts(delta) {
                let message_open =
                    self.open && matches!(self.items.last(), Some(Item::Message { .. }));
                if !message_open {
                    let item = Item::Message {
                        id: id("msg", &self.chat_id),
                        text: String::new(),
                    };
                    self.open(item, out);
                }
                let index = self.items.len() - 1;
                let Some(Item::Message { id, text: all }) = self.items.last_mut() else {
                    continue;
                };
                all.push_str(text);
                let template = &mut self.text_delta;
                delta_event(
                    out,
                    template,
                    text_delta,
                    &mut self.sequence,
                    id,
                    index,
                    text,
                );
            }
            for call in delta_calls(delta) {
                let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                if !self.calls.contains(&index) {
                    self.calls.push(index);
                    let call_id = call
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let item = Item::Call {
                        id: id("fc", &call_id),
                        call_id,
                        name: name.to_owned(),
                        arguments: String::new(),
                    };
                    self.open(item, out);
                }
                let Some(piece) = call
                    .pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                else {
                    continue;
                };
                let current = self.calls.last() == Some(&index) && self.open;
                let output_index = self.items.len() - 1;
                match self.items.last_mut() {
                    Some(Item::Call { id, arguments, .. }) if current => {
                        arguments.push_str(piece);
                        let template = &mut self.arguments_delta;
                        let sequence = &mut self.sequence;
                        delta_event(
                            out,
                            template,
                            arguments_delta,
                            sequence,
                            id,
                            output_index,
                            piece,
                        );
                    }
                    _ => self.dropped.field("tool_call_delta"),
                }
            }
            if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish = Some(finish.to_owned());
                self.close(out);
            }
        }
    }
}
