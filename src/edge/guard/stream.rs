//! Guarding streamed replies across events. Each part of a reply that text streams into (a chat
//! choice's content, reasoning or tool-call arguments, a legacy choice's text, a Responses output
//! text, arguments or reasoning, an Anthropic content block) holds back the tail that could still
//! grow into a value or a placeholder, until more of that part arrives or an event closes it; and
//! what it sends is judged with the character it sent last before it, so a value is found as it
//! is in the whole text (a word boundary at a cut is one only if it is one in the whole text).
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
//! `[DONE]` and the end of the upstream's body release every part. Every other string of every
//! event is guarded in that event, as JSON replies are (see [`guard_reply`]).
//!
//! At most [`MAX_PARTS`] parts are open at once in one stream; the text of a part opened past that
//! is dropped (see [`DeltaGuard::dropped`]).

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::fields::CHAT_TEXTS;
use super::json_text;
use super::{Guard, Masker, guard_reply};

/// The most parts one stream holds open at once: OpenAI's largest `n` (128 choices) times a
/// content, a reasoning and two tool calls each. A part is open from its first text to the event
/// that closes it, and holds up to [`Detectors::max_holdback`](super::Detectors::max_holdback) bytes, so this bounds what a
/// stream holds. The text of a part opened past it is dropped, not sent unguarded: guarded
/// without hold-back, a value split across its deltas would come out in clear, and released
/// early, the same value would be split across what is sent and what comes next.
pub const MAX_PARTS: usize = 512;

/// The longest string of an event copied into the events its parts' held text is released in:
/// ids and model names are shorter; a longer one is left out, so a part's event stays small.
const MAX_TEMPLATE_STRING: usize = 256;

/// The top-level fields of an event that the event releasing one of its parts' held text keeps:
/// what says which reply, part and kind it is. Everything else stays in the event it came in.
const TEMPLATE_KEYS: [&str; 13] = [
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
    "type",
    "item_id",
    "output_index",
    "content_index",
    "summary_index",
    "index",
    "sequence_number",
];

/// The Responses API's streamed texts: the event kind (`response.<kind>.delta` and
/// `response.<kind>.done`).
const RESPONSES_TEXTS: [&str; 8] = [
    "output_text",
    "refusal",
    "function_call_arguments",
    "custom_tool_call_input",
    "mcp_call_arguments",
    "reasoning_text",
    "reasoning_summary_text",
    "code_interpreter_call_code",
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

/// Whether a part's text is JSON, which the client decodes: a tool call's arguments.
fn carries_json(key: &PartKey, pointer: &str) -> bool {
    match key {
        PartKey::Choice {
            field: ChoiceField::ToolCall(_),
            ..
        } => true,
        PartKey::Output { kind, .. } => RESPONSES_TEXTS[*kind].ends_with("_arguments"),
        PartKey::Block(_) => pointer.ends_with("/partial_json"),
        PartKey::Choice { .. } => false,
    }
}

/// JSON text with the escapes JSON does not require written as their characters.
fn canonical(text: String) -> String {
    match json_text::canonical_escapes(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(canonical) => canonical,
    }
}

/// One open part: what it sent last, the text it holds back, and the event to release it in.
#[derive(Debug)]
struct Part {
    /// The order the part was opened in: parts are released in that order.
    order: u64,
    /// The last character of the part's text sent so far, as guarding judged it (restored): the
    /// left context its next text is judged with.
    context: String,
    /// The text not sent yet.
    text: String,
    /// A small event of the part (see [`part_event`]) whose text field, at `pointer`, is to
    /// hold released text.
    template: Value,
    pointer: String,
}

/// Guards the streamed text of one reply across events: see the module's table.
#[derive(Debug, Default)]
pub struct DeltaGuard {
    /// The open parts.
    parts: HashMap<PartKey, Part>,
    /// How many parts were opened so far.
    next_order: u64,
    /// How many texts of parts past [`MAX_PARTS`] were dropped.
    dropped: u64,
    /// The Responses stream's numbering as the client sees it: how many released events were
    /// put in so far, which every later event's `sequence_number` is moved up by, and the
    /// number the next event gets when the upstream's stream ends without one.
    numbering: Numbering,
}

/// The client's `sequence_number`s of a stream that events are put into.
#[derive(Debug, Default)]
struct Numbering {
    /// How many events were put in before the current one.
    inserted: u64,
    /// The number after the last one sent, once an event has had one.
    next: Option<u64>,
}

impl Numbering {
    /// Numbers `before` (put in ahead of `event`) and `event` itself, when the event is
    /// numbered: the upstream's numbers stay in order and none repeats.
    fn number(&mut self, before: &mut [Value], event: &mut Value) {
        let Some(upstream) = event.get("sequence_number").and_then(Value::as_u64) else {
            // `[DONE]`, or an event the upstream left unnumbered: what it releases follows on.
            self.number_released(before);
            return;
        };
        self.next = Some(upstream.saturating_add(self.inserted));
        self.number_released(before);
        let next = self.next.unwrap_or_default();
        event["sequence_number"] = next.into();
        self.next = Some(next.saturating_add(1));
    }

    /// Numbers the released events that carry a number (their part's first event did), from
    /// the next number on; each moves every later upstream number up by one.
    fn number_released(&mut self, released: &mut [Value]) {
        let Some(mut next) = self.next else {
            return;
        };
        for event in released {
            if event.get("sequence_number").is_some() {
                event["sequence_number"] = next.into();
                next = next.saturating_add(1);
                self.inserted += 1;
            }
        }
        self.next = Some(next);
    }
}

/// What guarding needs of the request.
struct Guarding<'a> {
    guard: &'a Guard,
    masker: &'a mut Masker,
}

impl Guarding<'_> {
    /// Where `text` can be cut: before what could still become a placeholder (reversible mode)
    /// or a value (response scanning, judged after `context`), and never inside a placeholder.
    fn cut(&self, context: &str, text: &str) -> usize {
        let config = self.guard.config();
        let mut cut = text.len();
        if config.reversible {
            cut -= self.masker.placeholder_holdback(text);
        }
        if config.responses {
            let judged = format!("{context}{text}");
            let safe = self.guard.detectors().safe_cut_from(&judged, context.len());
            cut = cut.min(safe - context.len());
        }
        if config.reversible {
            if let Some(open) = self.masker.placeholder_around(text, cut) {
                cut = open;
            }
        }
        cut
    }

    /// Restores the request's values in `text[..cut]` and masks new ones, as found in `context`
    /// (the part's last character sent) followed by the whole of `text` (what is held after
    /// `cut` included); `context` becomes the last character of what is sent.
    fn guard_before(&mut self, context: &mut String, text: &str, cut: usize) -> String {
        let config = self.guard.config();
        let (ready, held) = text.split_at(cut);
        if !config.responses {
            return if config.reversible {
                self.masker.restore(ready)
            } else {
                ready.to_owned()
            };
        }
        let (ready, held) = if config.reversible {
            (self.masker.restore(ready), self.masker.restore(held))
        } else {
            (ready.to_owned(), held.to_owned())
        };
        let judged = format!("{context}{ready}{held}");
        let from = context.len();
        let out =
            self.masker
                .mask_new_between(self.guard.detectors(), &judged, from, from + ready.len());
        if let Some(last) = ready.chars().next_back() {
            context.clear();
            context.push(last);
        }
        out
    }
}

impl DeltaGuard {
    /// Guards one event in place (the JSON string `"[DONE]"` stands for OpenAI's last event)
    /// and returns the events to send before it: the text held in the parts it closes. Nothing
    /// held is ever dropped; what is held is at most [`Detectors::max_holdback`](super::Detectors::max_holdback) bytes a part
    /// (or a placeholder). The work is linear in the event's size.
    pub fn guard_event(
        &mut self,
        event: &mut Value,
        guard: &Guard,
        masker: &mut Masker,
    ) -> Vec<Value> {
        let mut before = self.guard_parts(event, guard, masker);
        self.numbering.number(&mut before, event);
        before
    }

    /// [`guard_event`](Self::guard_event) before numbering.
    fn guard_parts(&mut self, event: &mut Value, guard: &Guard, masker: &mut Masker) -> Vec<Value> {
        let mut guarding = Guarding { guard, masker };
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
        if kind == "error" || event.get("error").is_some_and(Value::is_object) {
            // A stream's error event ends it for the client (OpenAI's `{"error":…}` chunk, the
            // Responses and Anthropic `error` events): what is held goes out before it.
            let before = self.release(&mut guarding, |_| true);
            guard_reply(event, guard, guarding.masker);
            return before;
        }
        if let Some(kind) = kind.strip_prefix("response.") {
            let kind = kind.to_owned();
            return self.responses(&kind, event, &mut guarding);
        }
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        let before = match kind {
            "content_block_delta" => {
                let delta_type = event.pointer("/delta/type").and_then(Value::as_str);
                if let Some((_, field)) = ANTHROPIC_DELTAS
                    .iter()
                    .find(|(name, _)| Some(*name) == delta_type)
                {
                    let pointer = format!("/delta/{field}");
                    self.steps(event, vec![(PartKey::Block(index), pointer)], &mut guarding);
                    return Vec::new();
                }
                Vec::new()
            }
            "content_block_stop" => {
                self.release(&mut guarding, |key| *key == PartKey::Block(index))
            }
            "message_delta" | "message_stop" => self.release(&mut guarding, |_| true),
            _ => Vec::new(),
        };
        guard_reply(event, guard, guarding.masker);
        before
    }

    /// Releases every part's held text, guarded: the events to send at the end of the stream
    /// (before `[DONE]`, or when the upstream's body ends without it).
    pub fn finish(&mut self, guard: &Guard, masker: &mut Masker) -> Vec<Value> {
        let mut guarding = Guarding { guard, masker };
        let mut released = self.release(&mut guarding, |_| true);
        self.numbering.number_released(&mut released);
        released
    }

    /// Whether any text is held back.
    #[cfg(test)]
    fn holds_text(&self) -> bool {
        self.parts.values().any(|part| !part.text.is_empty())
    }

    /// How many texts were dropped because their part would have been open past [`MAX_PARTS`]
    /// (a stream that opens more parts at once than any real reply: see [`MAX_PARTS`]).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A chat or legacy chunk: each choice's text fields, held back per choice and field and per
    /// tool call; a choice's finish releases all of its parts.
    fn choices(&mut self, event: &mut Value, guarding: &mut Guarding<'_>) -> Vec<Value> {
        let count = event["choices"].as_array().map_or(0, Vec::len);
        let mut choices = Vec::with_capacity(count);
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
            choices.push((index, finishing, fields));
        }
        let texts = take_texts(event, choices.iter().flat_map(|(_, _, fields)| fields));
        guard_reply(event, guarding.guard, guarding.masker);
        let mut texts = texts.into_iter();
        let mut before = Vec::new();
        for (index, finishing, fields) in choices {
            let touched: Vec<ChoiceField> = fields.iter().map(|(field, _)| *field).collect();
            for ((field, pointer), text) in fields.into_iter().zip(texts.by_ref()) {
                let key = PartKey::Choice {
                    choice: index,
                    field,
                };
                self.step(key, event, &pointer, text, finishing, guarding);
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
            RESPONSES_TEXTS.iter().position(|text| *text == name)
        };
        if let Some(text) = text_kind(".delta") {
            if event.get("delta").is_some_and(Value::is_string) {
                let key = PartKey::Output {
                    kind: text,
                    output,
                    content,
                };
                self.steps(event, vec![(key, "/delta".to_owned())], guarding);
                return Vec::new();
            }
        }
        let before = if let Some(text) = text_kind(".done") {
            let key = PartKey::Output {
                kind: text,
                output,
                content,
            };
            self.release(guarding, |held| *held == key)
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
        guard_reply(event, guarding.guard, guarding.masker);
        before
    }

    /// The one streamed text of a Responses or Anthropic delta event: the rest of the event is
    /// guarded whole, the text held back in its part.
    fn steps(
        &mut self,
        event: &mut Value,
        parts: Vec<(PartKey, String)>,
        guarding: &mut Guarding<'_>,
    ) {
        let texts = take_texts(event, parts.iter());
        guard_reply(event, guarding.guard, guarding.masker);
        for ((key, pointer), text) in parts.into_iter().zip(texts) {
            self.step(key, event, &pointer, text, false, guarding);
        }
    }

    /// Adds `new` (the text taken from `pointer` in `event`) to its part's held text, and puts
    /// in its place the guarded text that can be sent: all of it when `closing`, else up to the
    /// safe cut. A part opened past [`MAX_PARTS`] sends nothing, unless this is its whole text.
    fn step(
        &mut self,
        key: PartKey,
        event: &mut Value,
        pointer: &str,
        new: String,
        closing: bool,
        guarding: &mut Guarding<'_>,
    ) {
        // A tool call's arguments are read as the client will decode them.
        let json = carries_json(&key, pointer);
        if !self.parts.contains_key(&key) {
            if closing {
                // The part's whole text, in one event: guarded whole, nothing to hold.
                let new = if json { canonical(new) } else { new };
                let mut context = String::new();
                let guarded = guarding.guard_before(&mut context, &new, new.len());
                put_text(event, pointer, guarded);
                return;
            }
            if self.parts.len() >= MAX_PARTS {
                self.dropped += 1;
                return;
            }
            self.next_order += 1;
            let (template, pointer) = part_event(event, pointer);
            let part = Part {
                order: self.next_order,
                context: String::new(),
                text: String::new(),
                template,
                pointer,
            };
            self.parts.insert(key.clone(), part);
        }
        let Some(part) = self.parts.get_mut(&key) else {
            return;
        };
        let mut text = std::mem::take(&mut part.text);
        text.push_str(&new);
        if json {
            text = canonical(text);
        }
        let cut = if closing {
            text.len()
        } else if json {
            // An unfinished escape at the end is judged as more text to come, like a pause.
            let complete = json_text::escape_boundary(&text, text.len());
            let cut = guarding.cut(&part.context, &text[..complete]);
            json_text::escape_boundary(&text, cut)
        } else {
            guarding.cut(&part.context, &text)
        };
        let ready = guarding.guard_before(&mut part.context, &text, cut);
        put_text(event, pointer, ready);
        if closing {
            self.parts.remove(&key);
        } else {
            text.drain(..cut);
            part.text = text;
        }
    }

    /// Closes the parts `which` selects, releasing the held text of each, guarded whole after
    /// what it sent, as one event each (in the order the parts were opened).
    fn release(
        &mut self,
        guarding: &mut Guarding<'_>,
        which: impl Fn(&PartKey) -> bool,
    ) -> Vec<Value> {
        let keys: Vec<PartKey> = self
            .parts
            .keys()
            .filter(|key| which(key))
            .cloned()
            .collect();
        let mut parts: Vec<Part> = keys
            .into_iter()
            .filter_map(|key| self.parts.remove(&key))
            .collect();
        parts.sort_by_key(|part| part.order);
        parts
            .into_iter()
            .filter(|part| !part.text.is_empty())
            .filter_map(|part| {
                let Part {
                    mut context,
                    text,
                    mut template,
                    pointer,
                    ..
                } = part;
                let released = guarding.guard_before(&mut context, &text, text.len());
                let slot = template.pointer_mut(&pointer)?;
                *slot = Value::String(released);
                Some(template)
            })
            .collect()
    }
}

/// Takes the texts at the pointers of `parts` out of `event` (leaving empty strings), in order.
fn take_texts<'p, K: 'p>(
    event: &mut Value,
    parts: impl Iterator<Item = &'p (K, String)>,
) -> Vec<String> {
    parts
        .map(|(_, pointer)| match event.pointer_mut(pointer) {
            Some(Value::String(text)) => std::mem::take(text),
            _ => String::new(),
        })
        .collect()
}

/// Puts `text` at `pointer` in `event`.
fn put_text(event: &mut Value, pointer: &str, text: String) {
    if let Some(slot) = event.pointer_mut(pointer) {
        *slot = Value::String(text);
    }
}

/// The event a part's held text is released in, made from one of its events without copying
/// more than a few short fields: the [`TEMPLATE_KEYS`] fields (strings of at most
/// [`MAX_TEMPLATE_STRING`] bytes), and of a chat or legacy chunk only that choice (and, of a
/// delta, only that field or tool call), of an Anthropic delta only its type. Returns it with
/// the pointer of its text field.
fn part_event(event: &Value, pointer: &str) -> (Value, String) {
    let short = |value: &Value| match value {
        Value::String(text) => text.len() <= MAX_TEMPLATE_STRING,
        Value::Array(_) | Value::Object(_) => false,
        _ => true,
    };
    let mut part = Map::new();
    for key in TEMPLATE_KEYS {
        if let Some(value) = event.get(key).filter(|value| short(value)) {
            part.insert(key.to_owned(), value.clone());
        }
    }
    let index = |value: Option<&Value>| {
        value
            .and_then(|v| v.get("index"))
            .filter(|i| i.is_number())
            .cloned()
            .unwrap_or(json!(0))
    };
    let Some(rest) = pointer.strip_prefix("/choices/") else {
        let pointer = pointer.to_owned();
        match pointer.strip_prefix("/delta/") {
            Some(field) => {
                let kind = event
                    .pointer("/delta/type")
                    .filter(|kind| short(kind))
                    .cloned()
                    .unwrap_or(Value::Null);
                part.insert("delta".to_owned(), json!({"type": kind, field: ""}));
            }
            None => {
                part.insert("delta".to_owned(), json!(""));
            }
        }
        return (Value::Object(part), pointer);
    };
    let (at, field) = rest.split_once('/').unwrap_or((rest, ""));
    let choice = event.pointer(&format!("/choices/{at}"));
    let mut released = json!({"index": index(choice), "finish_reason": null});
    let pointer = if let Some(delta_field) = field.strip_prefix("delta/") {
        match delta_field.strip_prefix("tool_calls/") {
            Some(call) => {
                let k = call.split('/').next().unwrap_or("0");
                let call = choice.and_then(|c| c.pointer(&format!("/delta/tool_calls/{k}")));
                released["delta"] =
                    json!({"tool_calls": [{"index": index(call), "function": {"arguments": ""}}]});
                "/choices/0/delta/tool_calls/0/function/arguments".to_owned()
            }
            None => {
                released["delta"] = json!({ delta_field: "" });
                format!("/choices/0/delta/{delta_field}")
            }
        }
    } else {
        released["text"] = json!("");
        released["logprobs"] = Value::Null;
        "/choices/0/text".to_owned()
    };
    part.insert("choices".to_owned(), json!([released]));
    (Value::Object(part), pointer)
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
        crate::api::sse::write_event(&mut out, kind, event);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::api::sse::{EventFate, EventReader};
    use crate::edge::guard::testing::emails;
    use crate::edge::guard::{Action, BUILT_IN, GuardConfig};

    /// Every streamed shape of the module's table.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Shape {
        ChatContent,
        ChatReasoning,
        ChatToolCall,
        Legacy,
        ResponsesText,
        ResponsesArguments,
        ResponsesReasoning,
        AnthropicText,
        AnthropicToolInput,
        AnthropicThinking,
    }

    const SHAPES: [Shape; 10] = [
        Shape::ChatContent,
        Shape::ChatReasoning,
        Shape::ChatToolCall,
        Shape::Legacy,
        Shape::ResponsesText,
        Shape::ResponsesArguments,
        Shape::ResponsesReasoning,
        Shape::AnthropicText,
        Shape::AnthropicToolInput,
        Shape::AnthropicThinking,
    ];

    /// How a stream ends: with the events that close its part (and, for chat, the finish chunk
    /// carrying the last piece), with a closing event that carries no text, with `[DONE]` only,
    /// or with the end of the body and nothing else.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Ending {
        ClosedWithText,
        ClosedWithoutText,
        DoneOnly,
        BodyEnds,
    }

    const ENDINGS: [Ending; 4] = [
        Ending::ClosedWithText,
        Ending::ClosedWithoutText,
        Ending::DoneOnly,
        Ending::BodyEnds,
    ];

    fn done() -> Value {
        Value::String("[DONE]".into())
    }

    /// The events of a stream of `pieces` in `shape`, ending as `ending` says.
    fn events(shape: Shape, pieces: &[&str], ending: Ending) -> Vec<Value> {
        let whole: String = pieces.concat();
        let mut out = Vec::new();
        let (last, body) = match ending {
            Ending::ClosedWithText => (
                pieces.last().copied(),
                &pieces[..pieces.len().saturating_sub(1)],
            ),
            _ => (None, pieces),
        };
        let closes = matches!(ending, Ending::ClosedWithText | Ending::ClosedWithoutText);
        match shape {
            Shape::ChatContent | Shape::ChatReasoning | Shape::ChatToolCall | Shape::Legacy => {
                let chunk = |piece: Option<&str>, finish: Option<&str>| {
                    let mut choice = json!({"index": 0, "finish_reason": finish});
                    match (shape, piece) {
                        (Shape::Legacy, piece) => choice["text"] = json!(piece.unwrap_or("")),
                        (_, None) => {}
                        (Shape::ChatContent, Some(p)) => choice["delta"] = json!({"content": p}),
                        (Shape::ChatReasoning, Some(p)) => {
                            choice["delta"] = json!({"reasoning_content": p});
                        }
                        (_, Some(p)) => {
                            choice["delta"] = json!({"tool_calls": [
                                {"index": 0, "function": {"arguments": p}}]});
                        }
                    }
                    let object = if shape == Shape::Legacy {
                        "text_completion"
                    } else {
                        "chat.completion.chunk"
                    };
                    json!({"id": "c", "object": object, "model": "m", "choices": [choice]})
                };
                out.extend(body.iter().map(|piece| chunk(Some(piece), None)));
                if closes {
                    out.push(chunk(last, Some("stop")));
                    out.push(json!({"id": "c", "choices": [], "usage": {"total_tokens": 3}}));
                }
                if ending != Ending::BodyEnds {
                    out.push(done());
                }
            }
            Shape::ResponsesText | Shape::ResponsesArguments | Shape::ResponsesReasoning => {
                let (kind, field, item, index) = match shape {
                    Shape::ResponsesText => (
                        "output_text",
                        "text",
                        json!({"type": "message", "content": [{"type": "output_text", "text": whole}]}),
                        "content_index",
                    ),
                    Shape::ResponsesArguments => (
                        "function_call_arguments",
                        "arguments",
                        json!({"type": "function_call", "arguments": whole}),
                        "content_index",
                    ),
                    _ => (
                        "reasoning_summary_text",
                        "text",
                        json!({"type": "reasoning", "summary": [{"type": "summary_text", "text": whole}]}),
                        "summary_index",
                    ),
                };
                let delta = |piece: &str| {
                    json!({"type": format!("response.{kind}.delta"), "item_id": "i",
                           "output_index": 0, index: 0, "delta": piece})
                };
                out.extend(body.iter().map(|piece| delta(piece)));
                if let Some(piece) = last {
                    out.push(delta(piece));
                }
                if ending == Ending::ClosedWithText {
                    out.push(
                        json!({"type": format!("response.{kind}.done"), "item_id": "i",
                                    "output_index": 0, index: 0, field: whole}),
                    );
                    out.push(
                        json!({"type": "response.output_item.done", "output_index": 0,
                                    "item": item}),
                    );
                }
                if closes {
                    out.push(json!({"type": "response.completed",
                                    "response": {"output": [item]}}));
                }
                for (number, event) in out.iter_mut().enumerate() {
                    event["sequence_number"] = json!(number);
                }
            }
            Shape::AnthropicText | Shape::AnthropicToolInput | Shape::AnthropicThinking => {
                let (kind, field) = match shape {
                    Shape::AnthropicText => ("text_delta", "text"),
                    Shape::AnthropicToolInput => ("input_json_delta", "partial_json"),
                    _ => ("thinking_delta", "thinking"),
                };
                out.push(json!({"type": "message_start", "message": {"content": []}}));
                out.push(json!({"type": "content_block_start", "index": 0,
                                "content_block": {"type": "text", "text": ""}}));
                let delta = |piece: &str| {
                    json!({"type": "content_block_delta", "index": 0,
                           "delta": {"type": kind, field: piece}})
                };
                out.extend(body.iter().map(|piece| delta(piece)));
                if let Some(piece) = last {
                    out.push(delta(piece));
                }
                if ending == Ending::ClosedWithText {
                    out.push(json!({"type": "content_block_stop", "index": 0}));
                }
                if closes {
                    out.push(
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
                    );
                    out.push(json!({"type": "message_stop"}));
                }
            }
        }
        out
    }

    /// The streamed text of a shape's deltas, concatenated, and every other string the events
    /// hold (finished texts, whole items).
    fn texts(shape: Shape, events: &[Value]) -> (String, Vec<String>) {
        fn strings(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::String(text) => out.push(text.clone()),
                Value::Array(items) => items.iter().for_each(|item| strings(item, out)),
                Value::Object(fields) => fields.values().for_each(|field| strings(field, out)),
                _ => {}
            }
        }
        let mut streamed = String::new();
        let mut others = Vec::new();
        for event in events {
            let pointer = match shape {
                Shape::ChatContent => "/choices/0/delta/content",
                Shape::ChatReasoning => "/choices/0/delta/reasoning_content",
                Shape::ChatToolCall => "/choices/0/delta/tool_calls/0/function/arguments",
                Shape::Legacy => "/choices/0/text",
                Shape::ResponsesText | Shape::ResponsesArguments | Shape::ResponsesReasoning => {
                    "/delta"
                }
                Shape::AnthropicText => "/delta/text",
                Shape::AnthropicToolInput => "/delta/partial_json",
                Shape::AnthropicThinking => "/delta/thinking",
            };
            let is_delta = event["type"].as_str().is_none_or(|t| t.ends_with("delta"))
                && event.pointer(pointer).is_some_and(Value::is_string);
            match event.pointer(pointer).and_then(Value::as_str) {
                Some(text) if is_delta => streamed.push_str(text),
                _ => strings(event, &mut others),
            }
        }
        (streamed, others)
    }

    /// Runs events through a guard as pass-through does: events put before each, and what is
    /// held released at the end of the body.
    fn run(events: Vec<Value>, all: &Guard, masker: &mut Masker) -> Vec<Value> {
        let mut guard = DeltaGuard::default();
        let mut out = Vec::new();
        for mut event in events {
            out.extend(guard.guard_event(&mut event, all, masker));
            out.push(event);
        }
        out.extend(guard.finish(all, masker));
        assert!(!guard.holds_text());
        // The events put in to release held text are numbered in line: none repeats or skips.
        let numbers: Vec<u64> = out
            .iter()
            .filter_map(|event| event.get("sequence_number")?.as_u64())
            .collect();
        let expected: Vec<u64> = (0..numbers.len() as u64).collect();
        assert_eq!(numbers, expected, "{out:?}");
        out
    }

    /// A guard of every built-in detector with `action`.
    fn with_all(action: Action, reversible: bool, responses: bool) -> Guard {
        let detectors: BTreeMap<String, Action> = BUILT_IN
            .iter()
            .map(|name| ((*name).to_owned(), action))
            .collect();
        Guard::parse(GuardConfig {
            detectors,
            reversible,
            responses,
            ..GuardConfig::default()
        })
        .unwrap()
    }

    /// A JWT longer than the 256 bytes the guard once held at most (item 4 of issue 18).
    fn long_jwt() -> String {
        format!(
            "eyJhbGciOiJIUzI1NiJ9.eyJ{}.c2lnbmF0dXJl",
            "c3ViIjoiMSJ9".repeat(24)
        )
    }

    /// A value of every built-in detector, and the cases of issue 18 (a phone split at its space,
    /// an IBAN in groups, a long JWT).
    fn values() -> Vec<String> {
        let mut values: Vec<String> = [
            "jane.doe@example.com",
            "+1 (415) 555-2671",
            "(415) 555-2671",
            "4111 1111 1111 1111",
            "123-45-6789",
            "GB82 WEST 1234 5698 7654 32",
            "192.168.1.20",
            "2001:db8::8a2e:370:7334",
            "sk-proj-abcdefghijklmnopqrstuvwx",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "xoxb-1234567890-abcdef",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
        ]
        .map(str::to_owned)
        .to_vec();
        values.push(long_jwt());
        values
    }

    /// The char boundaries of `text`, inside it.
    fn splits(text: &str) -> impl Iterator<Item = usize> + '_ {
        (1..text.len()).filter(|&at| text.is_char_boundary(at))
    }

    /// Ways to stream `text`: in two pieces at every char boundary (when `at_every_boundary`),
    /// and eight times in random pieces of one to five bytes, each ending at a char boundary.
    fn cuts<'a>(text: &'a str, at_every_boundary: bool, rng: &mut StdRng) -> Vec<Vec<&'a str>> {
        let mut cuts: Vec<Vec<&str>> = splits(text)
            .filter(|_| at_every_boundary)
            .map(|at| vec![&text[..at], &text[at..]])
            .collect();
        for _ in 0..8 {
            let mut at = 0;
            let mut pieces = Vec::new();
            while at < text.len() {
                let mut end = (at + rng.random_range(1..6)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                pieces.push(&text[at..end]);
                at = end;
            }
            cuts.push(pieces);
        }
        cuts
    }

    /// A value a reply plants, split into two events at every boundary and into random pieces,
    /// in every shape and however the stream ends, never comes out: not in the deltas, not in
    /// the finished texts. Masked (`responses`) and refused-in-requests detectors alike.
    #[test]
    fn a_planted_value_never_comes_out() {
        let mut rng = StdRng::seed_from_u64(18);
        for action in [Action::Mask, Action::Reject] {
            let all = with_all(action, false, true);
            for value in values() {
                let text = format!("Note: {value} ok");
                // A refused detector masks in replies as a masking one does: the same path, cut
                // at random points only.
                let cuts = cuts(&text, action == Action::Mask, &mut rng);
                for shape in SHAPES {
                    for ending in ENDINGS {
                        for pieces in &cuts {
                            let mut masker = Masker::default();
                            let out = run(events(shape, pieces, ending), &all, &mut masker);
                            let (streamed, others) = texts(shape, &out);
                            assert!(
                                !streamed.contains(value.as_str()),
                                "{shape:?} {ending:?} {pieces:?}: {streamed:?}"
                            );
                            assert!(streamed.starts_with("Note: [") && streamed.ends_with("] ok"));
                            for other in others {
                                assert!(!other.contains(value.as_str()), "{shape:?} {other:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Reversible mode: the placeholder a request's value became, split anywhere in a reply of
    /// any shape, comes back as exactly the user's value, and the rest of the text as it was.
    #[test]
    fn placeholders_split_anywhere_are_restored_exactly() {
        for responses in [false, true] {
            let all = with_all(Action::Mask, true, responses);
            for value in values() {
                let mut masker = Masker::default();
                let placeholder = masker.mask(all.detectors(), &value).unwrap().into_owned();
                assert_ne!(placeholder, value);
                let text = format!("Sure, {placeholder} it is [x]");
                let expected = format!("Sure, {value} it is [x]");
                for at in splits(&text) {
                    for shape in SHAPES {
                        for ending in ENDINGS {
                            let pieces = [&text[..at], &text[at..]];
                            let out = run(events(shape, &pieces, ending), &all, &mut masker);
                            let (streamed, _) = texts(shape, &out);
                            assert_eq!(streamed, expected, "{shape:?} {ending:?} {pieces:?}");
                        }
                    }
                }
            }
        }
    }

    /// Pieces of replies with nothing sensitive in them, but much that looks like a start of a
    /// value: digits, groups of capitals, brackets, hex words, `eyJ`, `sk`, dashes, other scripts.
    const PLAIN: &[&str] = &[
        "Hello", " ", "world", ".", "\n", "Q2", "2026", "(", ")", "415", "-", "[", "]", "[EMA",
        "GB", "82", "WEST", "eyJ", "sk", "-----", "BEGIN", "号", "é", "\u{3000}", "３３", "cafe",
        ":", "@", "x", "+", "1.2", "AKIA", "ghp_", "\"", "{", "}", "\\",
    ];

    /// No text is lost: with nothing to mask or restore, the deltas a client gets add up to the
    /// upstream's text exactly, whatever the split points and however the stream ends.
    #[test]
    fn no_text_is_lost() {
        let plain = with_all(Action::Mask, false, false);
        let guards = [
            with_all(Action::Mask, true, true),
            with_all(Action::Mask, false, true),
            with_all(Action::Mask, true, false),
        ];
        let mut rng = StdRng::seed_from_u64(7);
        let mut checked = 0;
        for _ in 0..150 {
            let pieces: Vec<&str> = (0..rng.random_range(1..30))
                .map(|_| PLAIN[rng.random_range(0..PLAIN.len())])
                .collect();
            let text = pieces.concat();
            let mut probe = Masker::default();
            if probe.mask_new(plain.detectors(), &text) != text {
                continue;
            }
            checked += 1;
            let mut masker = Masker::default();
            masker.mask(plain.detectors(), "a@x.io").unwrap();
            for all in &guards {
                for shape in SHAPES {
                    for ending in ENDINGS {
                        let out = run(events(shape, &pieces, ending), all, &mut masker);
                        let (streamed, _) = texts(shape, &out);
                        assert_eq!(streamed, text, "{shape:?} {ending:?} {pieces:?}");
                    }
                }
            }
        }
        assert!(checked > 75, "only {checked} texts had nothing to mask");
    }

    /// The hold-back is bounded: a stream of a word that never ends (it could always still be
    /// an e-mail address's start) is held no more than the longest address, 254 bytes, and one
    /// that could always be a JWT no more than the longest JWT held.
    #[test]
    fn what_is_held_is_bounded() {
        let all = with_all(Action::Mask, false, true);
        for (start, piece, bound) in [("", "ab", 254), ("t eyJ", "a.", 8192)] {
            let mut masker = Masker::default();
            let mut guard = DeltaGuard::default();
            let mut streamed = 0;
            let mut sent = 0;
            let mut most = 0;
            for n in 0..6_000 {
                let text = if n == 0 { start } else { piece };
                let mut event = json!({"choices": [{"index": 0, "delta": {"content": text}}]});
                guard.guard_event(&mut event, &all, &mut masker);
                streamed += text.len();
                sent += event["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .len();
                assert!(streamed - sent <= bound, "{piece} {n}");
                most = most.max(streamed - sent);
            }
            assert!(most > bound - 4, "{piece}: held at most {most}");
        }
    }

    /// A value the model writes into a tool call's arguments with JSON escapes (`\u0040` for
    /// `@`, any of its characters as `\uXXXX`), split into two events at every boundary and
    /// into random pieces, never comes out of any arguments shape: the arguments the client
    /// decodes hold a placeholder, and are the JSON they were.
    #[test]
    fn a_value_written_with_json_escapes_in_streamed_arguments_never_comes_out() {
        let mut rng = StdRng::seed_from_u64(41);
        let all = with_all(Action::Mask, false, true);
        let arguments_shapes = [
            Shape::ChatToolCall,
            Shape::ResponsesArguments,
            Shape::AnthropicToolInput,
        ];
        // Every value a detector finds that no character JSON must escape is part of.
        let values = values().into_iter().filter(|v| !v.contains('\n'));
        for value in values {
            for all_escaped in [false, true] {
                let escaped: String = value
                    .chars()
                    .map(|c| {
                        if all_escaped || c == '@' || rng.random_bool(0.3) {
                            let mut units = [0u16; 2];
                            c.encode_utf16(&mut units)
                                .iter()
                                .map(|unit| format!("\\u{unit:04x}"))
                                .collect()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                let text = format!(r#"{{"to": "{escaped}", "n": 1}}"#);
                let cuts = cuts(&text, true, &mut rng);
                for shape in arguments_shapes {
                    for pieces in &cuts {
                        let mut masker = Masker::default();
                        let out = run(events(shape, pieces, Ending::BodyEnds), &all, &mut masker);
                        let (streamed, _) = texts(shape, &out);
                        let decoded: Value = serde_json::from_str(&streamed)
                            .unwrap_or_else(|e| panic!("{shape:?} {pieces:?}: {streamed:?} {e}"));
                        let to = decoded["to"].as_str().unwrap();
                        assert!(!to.contains(value.as_str()), "{shape:?} {pieces:?}: {to:?}");
                        assert!(
                            to.starts_with('[') && to.ends_with(']'),
                            "{shape:?}: {to:?}"
                        );
                        assert_eq!(decoded["n"], 1);
                    }
                }
            }
        }
    }

    /// The stream as bytes, through the event reader as pass-through reads it, cut into two
    /// chunks at every byte: the value never comes out and the text is whole.
    #[test]
    fn values_split_across_chunks_and_events_never_come_out() {
        let all = with_all(Action::Mask, false, true);
        for (shape, value) in [
            (Shape::ChatContent, "(415) 555-2671"),
            (Shape::ResponsesText, "GB82 WEST 1234 5698 7654 32"),
            (Shape::AnthropicText, "jane.doe@example.com"),
        ] {
            let text = format!("Call {value} now");
            let pieces: Vec<&str> = text.split_inclusive(' ').collect();
            let mut stream = events(shape, &pieces, Ending::DoneOnly);
            stream.retain(|event| *event != done());
            let mut bytes = write_events(&stream);
            bytes.extend_from_slice(crate::api::sse::DONE);
            for at in 0..=bytes.len() {
                let mut masker = Masker::default();
                let mut guard = DeltaGuard::default();
                let mut reader = EventReader::new(true);
                reader.offer_done();
                let mut sent = Vec::new();
                for (chunk, end) in [(&bytes[..at], false), (&bytes[at..], true)] {
                    let mut emitted = reader.read(chunk, end, |event| {
                        let mut guarded = event.clone();
                        let before = guard.guard_event(&mut guarded, &all, &mut masker);
                        // As pass-through decides: an event left as it came is kept.
                        let fate = if guarded == *event {
                            EventFate::Keep
                        } else {
                            EventFate::Replace(guarded)
                        };
                        EventFate::Prepend(write_events(&before), Box::new(fate))
                    });
                    if end {
                        let rest = guard.finish(&all, &mut masker);
                        append_final_events(&mut emitted, &rest);
                    }
                    sent.extend(emitted);
                }
                let mut read = Vec::new();
                EventReader::default().read(&sent, true, |event| {
                    read.push(event.clone());
                    EventFate::Keep
                });
                let (streamed, _) = texts(shape, &read);
                assert_eq!(
                    streamed,
                    "Call [PHONE_1] now".replace(
                        "PHONE",
                        match shape {
                            Shape::ChatContent => "PHONE",
                            Shape::ResponsesText => "IBAN",
                            _ => "EMAIL",
                        }
                    ),
                    "{shape:?} at {at}"
                );
                assert!(
                    sent.ends_with(crate::api::sse::DONE),
                    "{shape:?} at {at}: {}",
                    String::from_utf8_lossy(&sent)
                );
            }
        }
    }

    /// Item 4 of issue 18: the finish chunk without a delta, and `[DONE]` without a finish
    /// chunk, release the words held back instead of losing them.
    #[test]
    fn held_words_are_released_by_a_finish_without_delta_and_by_done() {
        let all = with_all(Action::Mask, false, true);
        for ending in [
            Ending::ClosedWithoutText,
            Ending::DoneOnly,
            Ending::BodyEnds,
        ] {
            let mut masker = Masker::default();
            let out = run(
                events(Shape::ChatContent, &["Hello ", "wor"], ending),
                &all,
                &mut masker,
            );
            let (streamed, _) = texts(Shape::ChatContent, &out);
            assert_eq!(streamed, "Hello wor", "{ending:?}");
            if ending != Ending::BodyEnds {
                let done_at = out.iter().position(|e| *e == done()).unwrap();
                let held_at = out
                    .iter()
                    .position(|e| e.pointer("/choices/0/delta/content") == Some(&json!("wor")))
                    .unwrap();
                assert!(held_at < done_at, "{ending:?}: {out:?}");
            }
        }
    }

    /// A Responses stream whose upstream leaves some events unnumbered (the event that releases
    /// held text, or the delta that opens a part) is still numbered in line: none repeats or skips.
    #[test]
    fn events_the_upstream_left_unnumbered_keep_the_numbering_in_line() {
        let all = with_all(Action::Mask, false, true);
        let delta = |piece: &str| {
            json!({"type": "response.output_text.delta", "item_id": "i", "output_index": 0,
                   "content_index": 0, "delta": piece})
        };
        let numbered = |mut event: Value, number: u64| {
            event["sequence_number"] = json!(number);
            event
        };
        let done = json!({"type": "response.output_text.done", "item_id": "i", "output_index": 0,
                          "content_index": 0, "text": "Hello wor"});
        let part_done = json!({"type": "response.content_part.done", "output_index": 0,
                               "content_index": 0});
        let streams = [
            // The release comes at an unnumbered `.done`.
            vec![
                numbered(delta("Hello wor"), 0),
                done.clone(),
                numbered(part_done.clone(), 1),
            ],
            // The part opens with an unnumbered delta: its released text carries no number.
            vec![
                delta("Hello wor"),
                numbered(done.clone(), 0),
                numbered(part_done.clone(), 1),
            ],
        ];
        for stream in streams {
            let mut masker = Masker::default();
            let out = run(stream, &all, &mut masker);
            let (streamed, _) = texts(Shape::ResponsesText, &out);
            assert_eq!(streamed, "Hello wor", "{out:?}");
        }
    }

    /// An error event ends the stream for the client: the text held before it goes out ahead of
    /// it, in every shape and each API's error event.
    #[test]
    fn held_text_goes_out_before_an_error_event() {
        let all = with_all(Action::Mask, true, true);
        for shape in SHAPES {
            let error = match shape {
                Shape::ResponsesText | Shape::ResponsesArguments | Shape::ResponsesReasoning => {
                    json!({"type": "error", "code": "server_error", "message": "m"})
                }
                Shape::AnthropicText | Shape::AnthropicToolInput | Shape::AnthropicThinking => {
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": "m"}})
                }
                _ => json!({"error": {"message": "m", "type": "server_error"}}),
            };
            let mut stream = events(shape, &["Hello ", "wor"], Ending::BodyEnds);
            stream.push(error.clone());
            let mut masker = Masker::default();
            let out = run(stream, &all, &mut masker);
            let (streamed, _) = texts(shape, &out);
            assert_eq!(streamed, "Hello wor", "{shape:?}");
            let error_at = out
                .iter()
                .position(|e| e.get("error").is_some() || e["type"] == "error");
            assert_eq!(error_at, Some(out.len() - 1), "{shape:?}: {out:?}");
        }
    }

    /// Streaming is never weaker than guarding the whole text at once: planted in random text
    /// (which may run into it, or hold values of its own) and cut at random, a value that the
    /// whole-text guard hides never comes out; and a text it leaves alone comes out as it was.
    #[test]
    fn streaming_is_never_weaker_than_the_whole_text() {
        let all = with_all(Action::Mask, false, true);
        let values = values();
        let mut rng = StdRng::seed_from_u64(99);
        let mut hidden = 0;
        for _ in 0..1_500 {
            let around = |rng: &mut StdRng| -> String {
                (0..rng.random_range(0..6))
                    .map(|_| PLAIN[rng.random_range(0..PLAIN.len())])
                    .collect()
            };
            let value = &values[rng.random_range(0..values.len())];
            let text = format!("{}{value}{}", around(&mut rng), around(&mut rng));
            let mut pieces = Vec::new();
            let mut at = 0;
            while at < text.len() {
                let mut end = (at + rng.random_range(1..9)).min(text.len());
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                pieces.push(&text[at..end]);
                at = end;
            }
            let whole = Masker::default().mask_new(all.detectors(), &text);
            let shape = SHAPES[rng.random_range(0..SHAPES.len())];
            let ending = ENDINGS[rng.random_range(0..ENDINGS.len())];
            let mut masker = Masker::default();
            let out = run(events(shape, &pieces, ending), &all, &mut masker);
            let (streamed, _) = texts(shape, &out);
            if !whole.contains(value.as_str()) {
                hidden += 1;
                assert!(
                    !streamed.contains(value.as_str()),
                    "{shape:?} {ending:?} {pieces:?}: {streamed:?}"
                );
            }
        }
        assert!(hidden > 700, "{hidden}");
    }

    /// The fuzzer's crash (`fuzz/artifacts/guard/crash-b58d6f5c…`): a card glued to the word
    /// before it (`ke4111 1111 1111 1111.m`) is no value in the whole text (no word boundary),
    /// and the stream once masked it, judging text sent after a cut without what came before.
    /// Streaming equals guarding the whole text, with values glued to words or standing free,
    /// cut into two and three pieces anywhere, in every shape and ending.
    #[test]
    fn streaming_equals_the_whole_text_around_every_cut() {
        let all = with_all(Action::Mask, false, true);
        let mut checked = 0;
        for value in [
            "4111 1111 1111 1111",
            "jane.doe@example.com",
            "(415) 555-2671",
        ] {
            for (left, right) in [("ke", ".m"), ("tok", "e.m"), ("a ", " b"), ("9", "x")] {
                let text = format!("{left}{value}{right}");
                let whole = Masker::default().mask_new(all.detectors(), &text);
                let at: Vec<usize> = splits(&text).collect();
                for (n, &first) in at.iter().enumerate() {
                    for &second in at[n..].iter().step_by(3) {
                        let pieces = [&text[..first], &text[first..second], &text[second..]];
                        for shape in SHAPES {
                            for ending in ENDINGS {
                                let out = run(
                                    events(shape, &pieces, ending),
                                    &all,
                                    &mut Masker::default(),
                                );
                                let (streamed, _) = texts(shape, &out);
                                assert_eq!(streamed, whole, "{shape:?} {ending:?} {pieces:?}");
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// Findings 7 and 8: an event of thousands of choices, each holding a tail, copies a few
    /// short fields per part (not the whole event per part: that was quadratic), opens at most
    /// `MAX_PARTS` parts, and drops the text of the others: the value split across two events
    /// never comes out, for a choice inside the cap or past it.
    #[test]
    fn many_parts_copy_little_and_are_capped() {
        let all = with_all(Action::Mask, false, true);
        for n in [10, MAX_PARTS, 5_000] {
            let chunk = |piece: &str, finish: Option<&str>| {
                let choices: Vec<Value> = (0..n)
                    .map(|i| json!({"index": i, "delta": {"content": piece}, "finish_reason": finish}))
                    .collect();
                json!({"id": "c", "model": "m", "choices": choices, "usage": {"n": n}})
            };
            let mut masker = Masker::default();
            let mut guard = DeltaGuard::default();
            let mut event = chunk("mail jane.doe@exa", None);
            assert!(guard.guard_event(&mut event, &all, &mut masker).is_empty());
            assert_eq!(guard.parts.len(), n.min(MAX_PARTS));
            assert_eq!(guard.dropped(), n.saturating_sub(MAX_PARTS) as u64);
            // The work of opening a part: copying its template, a few short fields.
            for part in guard.parts.values() {
                assert!(part.template.to_string().len() < 100, "{}", part.template);
            }
            let mut out = vec![event];
            let mut last = chunk("mple.com now", Some("stop"));
            out.extend(guard.guard_event(&mut last, &all, &mut masker));
            out.push(last);
            out.extend(guard.finish(&all, &mut masker));
            let sent: String = out.iter().map(Value::to_string).collect();
            assert!(!sent.contains("jane.doe"));
            assert_eq!(sent.matches("[EMAIL_1] now").count(), n.min(MAX_PARTS));
            assert!(guard.parts.is_empty());
        }
        // Parts opened one an event, never closed: still at most `MAX_PARTS` held.
        let mut masker = Masker::default();
        let mut guard = DeltaGuard::default();
        for i in 0..2_000 {
            let mut event = json!({"choices": [{"index": i, "delta": {"content": "abc"}}]});
            guard.guard_event(&mut event, &all, &mut masker);
        }
        assert_eq!(guard.parts.len(), MAX_PARTS);
        assert_eq!(guard.dropped(), (2_000 - MAX_PARTS) as u64);
    }

    /// The fuzzer's second find: in `fe80::123-45-6789`, the SSN wins the overlap with the IPv6
    /// address, so a cut before the SSN once sent `fe80::`; then `1` came, the SSN was no
    /// value, and the address it had hidden was one, half sent. And in `+1 4123-45-678915-555`
    /// the whole text's search goes on after a match its check refuses, so the card that starts
    /// inside that match is none, but once was in the stream. No cut falls inside any
    /// detector's match, whichever wins, checked or not.
    #[test]
    fn a_value_hidden_by_an_overlap_is_never_cut() {
        let all = with_all(Action::Mask, false, true);
        for text in [
            "ip fe80::123-45-67891, key",
            "call +1 415-555-2 +1 4123-45-678915-555-x",
        ] {
            let whole = Masker::default().mask_new(all.detectors(), text);
            let at: Vec<usize> = splits(text).collect();
            for (n, &first) in at.iter().enumerate() {
                for &second in &at[n..] {
                    let pieces = [&text[..first], &text[first..second], &text[second..]];
                    for shape in SHAPES {
                        let out = run(
                            events(shape, &pieces, Ending::BodyEnds),
                            &all,
                            &mut Masker::default(),
                        );
                        let (streamed, _) = texts(shape, &out);
                        assert_eq!(streamed, whole, "{shape:?} {pieces:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn values_split_across_deltas_are_restored_and_masked_whole() {
        let config = GuardConfig {
            reversible: true,
            responses: true,
            ..emails(Action::Mask)
        };
        let all = Guard::parse(config).unwrap();
        let mut masker = Masker::default();
        masker.mask(all.detectors(), "a@x.io").unwrap();
        let mut guard = DeltaGuard::default();
        let pieces = ["Write to [EMA", "IL_1] and z@", "y.io", " now"];
        let mut out = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            let finish = if i + 1 == pieces.len() {
                serde_json::json!("stop")
            } else {
                Value::Null
            };
            let mut event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}]});
            guard.guard_event(&mut event, &all, &mut masker);
            out.push_str(event["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        assert_eq!(out, "Write to a@x.io and [EMAIL_2] now");
    }
}
