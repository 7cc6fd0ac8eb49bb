//! Guarding streamed replies across events. Each part of a reply that text streams into (a chat
//! choice's content, reasoning or tool-call arguments, a legacy choice's text, a Responses output
//! text, arguments or reasoning, an Anthropic content block) holds back the tail that could still
//! grow into a value or a placeholder, until more of that part arrives or an event closes it.
//!
//! The text-bearing fields of streamed events, by API shape (the same fields as JSON replies):
//!
//! | Shape | Event | Field | Part | Closed by |
//! |---|---|---|---|---|
//! | chat | chunk | `choices[i].delta.content`, `.reasoning_content`, `.reasoning`, `.refusal` | choice `i`, field | `finish_reason` of choice `i` |
//! | chat | chunk | `choices[i].delta.tool_calls[k].function.arguments` | choice `i`, call `k` | `finish_reason` of choice `i` |
//! | legacy | chunk | `choices[i].text` | choice `i` | `finish_reason` of choice `i` |
//! | Responses | `response.<kind>.delta` | `delta` | kind, `output_index`, `content_index`/`summary_index` | `response.<kind>.done` (whole text guarded), `response.content_part.done`, `response.output_item.done`, `response.completed` |
//! | Anthropic | `content_block_delta` | `delta.text`, `delta.partial_json`, `delta.thinking` | `index` | `content_block_stop`, `message_delta`, `message_stop` |
//!
//! `[DONE]` and the end of the upstream's body release every part. Other events are guarded
//! whole, as JSON replies are.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{CHAT_TEXTS, Detectors, GuardConfig, Masker, guard_reply};

/// The Responses API's streamed texts: the event kind (`response.<kind>.delta` and
/// `response.<kind>.done`) and the field of its `.done` event that holds the whole text.
const RESPONSES_TEXTS: [(&str, &str); 8] = [
    ("output_text", "text"),
    ("refusal", "refusal"),
    ("function_call_arguments", "arguments"),
    ("custom_tool_call_input", "input"),
    ("mcp_call_arguments", "arguments"),
    ("reasoning_text", "text"),
    ("reasoning_summary_text", "text"),
    ("code_interpreter_call_code", "code"),
];

/// Anthropic's streamed deltas: the delta's type and its text field.
const ANTHROPIC_DELTAS: [(&str, &str); 3] = [
    ("text_delta", "text"),
    ("input_json_delta", "partial_json"),
    ("thinking_delta", "thinking"),
];

/// One part of a streamed reply that text streams into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PartKey {
    /// A chat or legacy choice's text field (`CHAT_TEXTS` index, or legacy `text`).
    Choice { choice: u64, field: ChoiceField },
    /// A Responses output text (`RESPONSES_TEXTS` index).
    Output {
        kind: usize,
        output: u64,
        content: u64,
    },
    /// An Anthropic content block.
    Block(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ChoiceField {
    /// `delta.<CHAT_TEXTS[n]>`.
    Delta(usize),
    /// `delta.tool_calls[index == k].function.arguments`.
    ToolCall(u64),
    /// A legacy completion's `text`.
    Text,
}

/// Text held back in one part, and the event to release it in.
#[derive(Debug)]
struct Held {
    /// The order the part was first held in: parts are released in that order.
    order: u64,
    /// The text not sent yet.
    text: String,
    /// An event of the part whose text field (at `pointer`) is to hold released text.
    template: Value,
    pointer: String,
}

/// Guards the streamed text of one reply across events: see the module's table.
#[derive(Debug, Default)]
pub struct DeltaGuard {
    /// Held-back text, by part.
    held: HashMap<PartKey, Held>,
    /// How many parts were held so far.
    next_order: u64,
}

/// What guarding needs of the request.
struct Guarding<'a> {
    config: &'a GuardConfig,
    detectors: &'a Detectors,
    masker: &'a mut Masker,
}

impl Guarding<'_> {
    /// Where `text` can be cut: before what could still become a placeholder (reversible mode)
    /// or a value (response scanning).
    fn cut(&self, text: &str) -> usize {
        let mut cut = text.len();
        if self.config.reversible {
            cut -= self.masker.placeholder_holdback(text);
        }
        if self.config.responses {
            cut = cut.min(self.detectors.safe_cut(text));
        }
        cut
    }

    /// Restores the request's values and masks new ones.
    fn guard(&mut self, text: &str) -> String {
        let restored = if self.config.reversible {
            self.masker.restore(text)
        } else {
            text.to_owned()
        };
        if self.config.responses {
            self.masker.mask_new(self.detectors, &restored)
        } else {
            restored
        }
    }
}

impl DeltaGuard {
    /// Guards one event in place (the JSON string `"[DONE]"` stands for OpenAI's last event)
    /// and returns the events to send before it: the text held in the parts it closes. Nothing
    /// held is ever dropped; what is held is at most [`Detectors::max_holdback`] bytes a part
    /// (or a placeholder).
    pub fn guard_event(
        &mut self,
        event: &mut Value,
        config: &GuardConfig,
        detectors: &Detectors,
        masker: &mut Masker,
    ) -> Vec<Value> {
        let mut guarding = Guarding {
            config,
            detectors,
            masker,
        };
        if event.as_str() == Some("[DONE]") {
            return self.release(&mut guarding, |_| true);
        }
        if event.get("choices").is_some_and(Value::is_array) {
            return self.choices(event, &mut guarding);
        }
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(kind) = kind.strip_prefix("response.") {
            let kind = kind.to_owned();
            return self.responses(&kind, event, &mut guarding);
        }
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "content_block_delta" => {
                let delta_type = event.pointer("/delta/type").and_then(Value::as_str);
                if let Some((_, field)) = ANTHROPIC_DELTAS
                    .iter()
                    .find(|(name, _)| Some(*name) == delta_type)
                {
                    let pointer = format!("/delta/{field}");
                    self.step(PartKey::Block(index), event, &pointer, false, &mut guarding);
                    return Vec::new();
                }
            }
            "content_block_stop" => {
                return self.release(&mut guarding, |key| *key == PartKey::Block(index));
            }
            "message_delta" | "message_stop" => {
                let before = self.release(&mut guarding, |_| true);
                guard_reply(event, config, detectors, guarding.masker);
                return before;
            }
            _ => {}
        }
        guard_reply(event, config, detectors, guarding.masker);
        Vec::new()
    }

    /// Releases every part's held text, guarded: the events to send at the end of the stream
    /// (before `[DONE]`, or when the upstream's body ends without it).
    pub fn finish(
        &mut self,
        config: &GuardConfig,
        detectors: &Detectors,
        masker: &mut Masker,
    ) -> Vec<Value> {
        let mut guarding = Guarding {
            config,
            detectors,
            masker,
        };
        self.release(&mut guarding, |_| true)
    }

    /// Whether any text is held back.
    pub fn holds_text(&self) -> bool {
        !self.held.is_empty()
    }

    /// A chat or legacy chunk: each choice's text fields, held back per choice and field and per
    /// tool call; a choice's finish releases all of its parts.
    fn choices(&mut self, event: &mut Value, guarding: &mut Guarding<'_>) -> Vec<Value> {
        let count = event["choices"].as_array().map_or(0, Vec::len);
        let mut before = Vec::new();
        for at in 0..count {
            let choice = &event["choices"][at];
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finishing = choice.get("finish_reason").is_some_and(|r| !r.is_null());
            let mut fields = Vec::new();
            if choice.get("text").is_some_and(Value::is_string) {
                fields.push((ChoiceField::Text, format!("/choices/{at}/text")));
            }
            if let Some(delta) = choice.get("delta").filter(|d| d.is_object()) {
                for (n, field) in CHAT_TEXTS.iter().enumerate() {
                    if delta.get(field).is_some_and(Value::is_string) {
                        let pointer = format!("/choices/{at}/delta/{field}");
                        fields.push((ChoiceField::Delta(n), pointer));
                    }
                }
                let calls = delta.get("tool_calls").and_then(Value::as_array);
                for (k, call) in calls.into_iter().flatten().enumerate() {
                    let arguments = call.pointer("/function/arguments");
                    if arguments.is_some_and(Value::is_string) {
                        let id = call
                            .get("index")
                            .and_then(Value::as_u64)
                            .unwrap_or(k as u64);
                        let pointer =
                            format!("/choices/{at}/delta/tool_calls/{k}/function/arguments");
                        fields.push((ChoiceField::ToolCall(id), pointer));
                    }
                }
            }
            let touched: Vec<ChoiceField> = fields.iter().map(|(field, _)| *field).collect();
            for (field, pointer) in fields {
                let key = PartKey::Choice {
                    choice: index,
                    field,
                };
                self.step(key, event, &pointer, finishing, guarding);
            }
            if finishing {
                before.extend(self.release(guarding, |key| {
                    matches!(key, PartKey::Choice { choice, field }
                        if *choice == index && !touched.contains(field))
                }));
            }
        }
        before
    }

    /// A Responses API event: deltas held back per output and content part; `.done` events
    /// release their part and are guarded whole, as are all other events.
    fn responses(
        &mut self,
        kind: &str,
        event: &mut Value,
        guarding: &mut Guarding<'_>,
    ) -> Vec<Value> {
        let number = |key: &str| event.get(key).and_then(Value::as_u64);
        let output = number("output_index").unwrap_or(0);
        let content = number("content_index").or(number("summary_index"));
        let content = content.unwrap_or(0);
        let text_kind = |suffix: &str| {
            let name = kind.strip_suffix(suffix)?;
            RESPONSES_TEXTS.iter().position(|(text, _)| *text == name)
        };
        if let Some(text) = text_kind(".delta") {
            if event.get("delta").is_some_and(Value::is_string) {
                let key = PartKey::Output {
                    kind: text,
                    output,
                    content,
                };
                self.step(key, event, "/delta", false, guarding);
                return Vec::new();
            }
        }
        let before = if let Some(text) = text_kind(".done") {
            let key = PartKey::Output {
                kind: text,
                output,
                content,
            };
            let before = self.release(guarding, |held| *held == key);
            let field = RESPONSES_TEXTS[text].1;
            if let Some(Value::String(whole)) = event.get_mut(field) {
                *whole = guarding.guard(whole);
            }
            before
        } else {
            match kind {
                "content_part.done" => self.release(guarding, |key| {
                    matches!(key, PartKey::Output { output: o, content: c, .. }
                        if *o == output && *c == content)
                }),
                "output_item.done" => self.release(
                    guarding,
                    |key| matches!(key, PartKey::Output { output: o, .. } if *o == output),
                ),
                "completed" | "incomplete" | "failed" => self.release(guarding, |_| true),
                _ => Vec::new(),
            }
        };
        guard_reply(event, guarding.config, guarding.detectors, guarding.masker);
        before
    }

    /// Adds the text at `pointer` in `event` to its part's held text, and puts back in its place
    /// the guarded text that can be sent: all of it when `closing`, else up to the safe cut.
    fn step(
        &mut self,
        key: PartKey,
        event: &mut Value,
        pointer: &str,
        closing: bool,
        guarding: &mut Guarding<'_>,
    ) {
        let Some(Value::String(new)) = event.pointer_mut(pointer) else {
            return;
        };
        let held = self.held.remove(&key);
        let mut text = held
            .as_ref()
            .map(|held| held.text.clone())
            .unwrap_or_default();
        text.push_str(new);
        let cut = if closing {
            text.len()
        } else {
            guarding.cut(&text)
        };
        let ready = guarding.guard(&text[..cut]);
        *new = ready;
        if cut == text.len() {
            return;
        }
        let rest = text[cut..].to_owned();
        let held = match held {
            Some(held) => Held { text: rest, ..held },
            None => {
                self.next_order += 1;
                let mut template = event.clone();
                if let Some(Value::String(slot)) = template.pointer_mut(pointer) {
                    slot.clear();
                }
                let (template, pointer) = part_event(template, pointer);
                Held {
                    order: self.next_order,
                    text: rest,
                    template,
                    pointer,
                }
            }
        };
        self.held.insert(key, held);
    }

    /// Releases the held text of the parts `which` selects, guarded whole, as one event each
    /// (in the order the parts were first held).
    fn release(
        &mut self,
        guarding: &mut Guarding<'_>,
        which: impl Fn(&PartKey) -> bool,
    ) -> Vec<Value> {
        let keys: Vec<PartKey> = self.held.keys().filter(|key| which(key)).cloned().collect();
        let mut parts: Vec<Held> = keys
            .into_iter()
            .filter_map(|key| self.held.remove(&key))
            .collect();
        parts.sort_by_key(|held| held.order);
        parts
            .into_iter()
            .filter_map(|held| {
                let Held {
                    text,
                    mut template,
                    pointer,
                    ..
                } = held;
                let released = guarding.guard(&text);
                let slot = template.pointer_mut(&pointer)?;
                *slot = Value::String(released);
                Some(template)
            })
            .collect()
    }
}

/// The event a part's held text is released in, made from one of its events: a chat or legacy
/// chunk keeps only that choice (and, of a delta, only that field or tool call) and no usage;
/// other events stay whole. Returns it with the pointer of its text field.
fn part_event(mut event: Value, pointer: &str) -> (Value, String) {
    let Some(rest) = pointer.strip_prefix("/choices/") else {
        return (event, pointer.to_owned());
    };
    let (at, field) = rest.split_once('/').unwrap_or((rest, ""));
    let choice = event
        .pointer(&format!("/choices/{at}"))
        .cloned()
        .unwrap_or_default();
    let mut part = json!({"index": choice.get("index").cloned().unwrap_or(json!(0)),
                          "finish_reason": null});
    let pointer = if let Some(delta_field) = field.strip_prefix("delta/") {
        match delta_field.strip_prefix("tool_calls/") {
            Some(call) => {
                let k = call.split('/').next().unwrap_or("0");
                let call = choice.pointer(&format!("/delta/tool_calls/{k}"));
                let index = call
                    .and_then(|c| c.get("index"))
                    .cloned()
                    .unwrap_or(json!(0));
                part["delta"] =
                    json!({"tool_calls": [{"index": index, "function": {"arguments": ""}}]});
                "/choices/0/delta/tool_calls/0/function/arguments".to_owned()
            }
            None => {
                part["delta"] = json!({ delta_field: "" });
                format!("/choices/0/delta/{delta_field}")
            }
        }
    } else {
        part["text"] = json!("");
        part["logprobs"] = Value::Null;
        "/choices/0/text".to_owned()
    };
    if let Value::Object(fields) = &mut event {
        fields.remove("usage");
        fields.insert("choices".to_owned(), json!([part]));
    }
    (event, pointer)
}

/// Server-sent events of `events`, as the upstream's own: with an `event:` line naming the type
/// of a typed event (the Responses API's and Anthropic's), none for chat and legacy chunks.
pub fn write_events(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for event in events {
        let kind = event
            .get("choices")
            .is_none()
            .then(|| event.get("type").and_then(Value::as_str))
            .flatten();
        crate::sse::write_event(&mut out, kind, event);
    }
    out
}

/// Appends the events `finish` released at the end of an upstream body to what is sent of it,
/// ending first an event the upstream left unfinished, so they are read as events of their own.
pub fn append_final_events(sent: &mut Vec<u8>, events: &[Value]) {
    if events.is_empty() {
        return;
    }
    if !sent.is_empty() && !sent.ends_with(b"\n\n") {
        if !sent.ends_with(b"\n") {
            sent.push(b'\n');
        }
        sent.push(b'\n');
    }
    sent.extend(write_events(events));
}
