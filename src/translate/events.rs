//! The client's side of a translated stream, written as it is made: server-sent events in the
//! client's API.
//!
//! Most of a stream is one kind of event over and over (a text delta, a piece of a tool call's
//! arguments) that differs from the last only in a few values. Building each one as a
//! [`Value`] and serialising it costs a dozen allocations an event; a [`Template`] renders the
//! event once with markers where those values go, and each event after is the template's bytes
//! with the values written between them: byte for byte what rendering the whole event gives.

use serde_json::Value;

use crate::api::json_writer;
use crate::api::sse::DONE;

/// Server-sent events in the client's API, in order.
#[derive(Debug, Default)]
pub(crate) struct Events(Vec<u8>);

impl Events {
    /// Appends a whole event: the JSON string `"[DONE]"` as OpenAI writes its last event, a
    /// typed event (Anthropic's, the Responses API's) with its `event:` line, a chat chunk as
    /// data alone.
    pub(crate) fn push(&mut self, event: &Value) {
        write_event(&mut self.0, event);
    }

    /// Appends the event `template` makes with `fills`, one for each of its slots in order.
    pub(crate) fn fill(&mut self, template: &Template, fills: &[Fill<'_>]) {
        template.write(&mut self.0, fills);
    }

    /// The events written, as bytes.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Writes one event as [`Events::push`] does.
fn write_event(out: &mut Vec<u8>, event: &Value) {
    if event.as_str() == Some("[DONE]") {
        out.extend_from_slice(DONE);
        return;
    }
    let kind = event
        .get("choices")
        .is_none()
        .then(|| event.get("type").and_then(Value::as_str))
        .flatten();
    if let Some(kind) = kind {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
    }
    // As `sse::write_event` writes it, with strings escaped a word at a time.
    out.extend_from_slice(b"data: ");
    json_writer::write_value(out, event);
    out.extend_from_slice(b"\n\n");
}

/// A value written into a template's slot.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fill<'a> {
    /// A JSON string.
    Str(&'a str),
    /// A JSON number.
    Num(u64),
}

/// An event rendered once, cut where its slots are.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// The bytes around the slots: one more than there are slots.
    pieces: Vec<Vec<u8>>,
    /// Which fill goes in each cut, in the order the rendering has them.
    order: Vec<usize>,
}

impl Template {
    /// The value that marks slot `index` in the event a template is made from (JSON strings
    /// are escaped, so the marker's control character cannot be mistaken for text as written).
    pub(crate) fn slot(index: usize) -> Value {
        Value::String(format!("\u{1}{index}"))
    }

    /// Cuts `event`, holding [`Template::slot`] values, into a template; `None` when a marker
    /// is not found exactly once in the rendering (a value the upstream gave, such as an id,
    /// spells one), so that the caller renders each event whole instead.
    pub(crate) fn new(event: &Value, slots: usize) -> Option<Self> {
        let mut rendered = Vec::new();
        write_event(&mut rendered, event);
        let mut cuts = Vec::with_capacity(slots);
        for index in 0..slots {
            let mut marker = Vec::new();
            json_writer::write_str(&mut marker, &format!("\u{1}{index}"));
            let mut found = memchr::memmem::find_iter(&rendered, &marker);
            let (Some(at), None) = (found.next(), found.next()) else {
                return None;
            };
            cuts.push((at, at + marker.len(), index));
        }
        cuts.sort_unstable();
        let mut pieces = Vec::with_capacity(slots + 1);
        let mut from = 0;
        for &(start, end, _) in &cuts {
            pieces.push(rendered[from..start].to_vec());
            from = end;
        }
        pieces.push(rendered[from..].to_vec());
        let order = cuts.into_iter().map(|(_, _, index)| index).collect();
        Some(Self { pieces, order })
    }

    /// Appends the event with `fills` in its slots.
    fn write(&self, out: &mut Vec<u8>, fills: &[Fill<'_>]) {
        for (piece, &slot) in self.pieces.iter().zip(&self.order) {
            out.extend_from_slice(piece);
            match fills[slot] {
                Fill::Str(text) => json_writer::write_str(out, text),
                Fill::Num(number) => {
                    serde_json::to_writer(&mut *out, &number).expect("a number serializes");
                }
            }
        }
        out.extend_from_slice(self.pieces.last().expect("a template has a last piece"));
    }
}

/// The event a template makes, or the event rendered whole when no template could be cut: the
/// shape each translator's hot events take.
pub(crate) fn fill_or_push(
    out: &mut Events,
    template: &mut Option<Option<Template>>,
    make: impl Fn(&[Value]) -> Value,
    fills: &[Fill<'_>],
) {
    let template = template.get_or_insert_with(|| {
        let slots: Vec<Value> = (0..fills.len()).map(Template::slot).collect();
        Template::new(&make(&slots), fills.len())
    });
    match template {
        Some(template) => out.fill(template, fills),
        None => {
            let values: Vec<Value> = fills
                .iter()
                .map(|fill| match *fill {
                    Fill::Str(text) => Value::from(text),
                    Fill::Num(number) => Value::from(number),
                })
                .collect();
            out.push(&make(&values));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use serde_json::json;

    use super::*;

    fn delta(values: &[Value]) -> Value {
        json!({"type": "content_block_delta", "index": values[0],
               "delta": {"type": "text_delta", "text": values[1]}})
    }

    fn chunk(id: &str, values: &[Value]) -> Value {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": values[0]}, "logprobs": null,
                            "finish_reason": null}]})
    }

    fn whole(event: &Value) -> Vec<u8> {
        let mut out = Events::default();
        out.push(event);
        out.into_bytes()
    }

    /// Text with what JSON escapes, what a marker is made of, and text as it is.
    fn random_text(rng: &mut StdRng) -> String {
        const PARTS: [&str; 10] = [
            "a", "é", "\"", "\\", "\n", "\u{1}", "0", "7", "🦀", "\u{7f}",
        ];
        (0..rng.random_range(0..24))
            .map(|_| PARTS[rng.random_range(0..PARTS.len())])
            .collect()
    }

    /// A template's event is byte for byte the event rendered whole, whatever the text and the
    /// number, event after event.
    #[test]
    fn a_filled_template_is_the_whole_event() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut template = None;
        for _ in 0..2000 {
            let (text, index) = (random_text(&mut rng), rng.random::<u64>());
            let mut out = Events::default();
            fill_or_push(
                &mut out,
                &mut template,
                delta,
                &[Fill::Num(index), Fill::Str(&text)],
            );
            assert_eq!(
                out.into_bytes(),
                whole(&delta(&[json!(index), json!(text)]))
            );
        }
        assert!(
            template.is_some_and(|cut| cut.is_some()),
            "the template was cut"
        );
    }

    /// The same when a value from the upstream spells a marker: no template is cut, and every
    /// event is rendered whole.
    #[test]
    fn an_upstream_value_spelling_a_marker_still_gives_the_whole_event() {
        let mut rng = StdRng::seed_from_u64(4);
        for id in ["\u{1}0", "chatcmpl-\u{1}0", "\u{1}"] {
            let mut template = None;
            for _ in 0..50 {
                let text = random_text(&mut rng);
                let mut out = Events::default();
                fill_or_push(
                    &mut out,
                    &mut template,
                    |v| chunk(id, v),
                    &[Fill::Str(&text)],
                );
                assert_eq!(out.into_bytes(), whole(&chunk(id, &[json!(text)])));
            }
            assert_eq!(template.unwrap().is_none(), id == "\u{1}0", "{id:?}");
        }
    }

    #[test]
    fn done_and_typed_events_are_framed_as_their_apis_frame_them() {
        assert_eq!(whole(&json!("[DONE]")), b"data: [DONE]\n\n");
        assert_eq!(
            whole(&json!({"type": "message_stop"})),
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(
            whole(&json!({"choices": [], "type": "x"})),
            b"data: {\"choices\":[],\"type\":\"x\"}\n\n"
        );
    }
}
