//! Server-sent events: writing them (every mock stream) and reading them as they pass through
//! (token accounting and guarding of upstream streams), whatever the chunk boundaries.

use serde::Serialize;
use serde_json::Value;

use crate::json_writer;

/// The event that ends an OpenAI stream.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The largest event read whole. A bigger one is not decoded: it passes on as it came, or is
/// dropped when the reader must see every event (see [`EventReader::new`]), so an upstream that
/// never ends an event cannot grow the proxy's memory without bound.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// Appends one event: an optional `event:` line, then `data:` with `data` as one line of JSON.
pub fn write_event(out: &mut Vec<u8>, kind: Option<&str>, data: &impl Serialize) {
    if let Some(kind) = kind {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    // JSON escapes line breaks inside strings, so the payload stays on its one line.
    serde_json::to_writer(&mut *out, data).expect("serializing plain data cannot fail");
    out.extend_from_slice(b"\n\n");
}

/// What becomes of one event read.
#[derive(Debug, Clone, PartialEq)]
pub enum EventFate {
    /// It goes on as it came.
    Keep,
    /// It is left out.
    Drop,
    /// Its JSON payload is replaced; its other lines (such as `event:`) stay.
    Replace(Value),
    /// These bytes (whole events) go first, then the event as the inner fate says.
    Prepend(Vec<u8>, Box<EventFate>),
}

/// Reads a stream of events chunk by chunk: each complete event whose data is JSON is offered to
/// a decision; an unfinished one waits for the next chunk.
#[derive(Debug, Default)]
pub struct EventReader {
    /// The unfinished event at the end of the stream so far.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no event end, so each byte is searched once.
    searched: usize,
    /// The rest of an oversized event is being skipped past (passed on or dropped).
    skipping: bool,
    /// Oversized events are dropped rather than passed on undecoded.
    drop_oversized: bool,
    /// `[DONE]` is offered to the decision too (see [`EventReader::offer_done`]).
    offer_done: bool,
}

impl EventReader {
    /// A reader; `drop_oversized` when no event may pass without a decision (guarded streams).
    pub fn new(drop_oversized: bool) -> Self {
        Self {
            drop_oversized,
            ..Self::default()
        }
    }

    /// From now on offers the `[DONE]` event to the decision as the JSON string `"[DONE]"`, so
    /// that events can be put before it.
    pub fn offer_done(&mut self) {
        self.offer_done = true;
    }

    /// Reads `chunk`; returns the bytes to send on. Each complete event with a JSON payload goes
    /// to `decide`; the rest (comments, `[DONE]`, non-JSON data) passes on. At the end of the
    /// stream an unfinished event is decided as if it were complete.
    pub fn read(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        mut decide: impl FnMut(&Value) -> EventFate,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending.len() + chunk.len());
        let mut chunk = chunk;
        if self.skipping {
            let end = find_event_end(chunk, 0);
            let (skipped, rest) = chunk.split_at(end.unwrap_or(chunk.len()));
            if !self.drop_oversized {
                out.extend_from_slice(skipped);
            }
            self.skipping = end.is_none();
            chunk = rest;
        }
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = find_event_end(&self.pending, self.searched.max(start)) {
            let fate = fate_of(&self.pending[start..end], self.offer_done, &mut decide);
            write_fate(&mut out, &self.pending[start..end], fate);
            start = end;
        }
        self.pending.drain(..start);
        // A blank line may straddle the next chunk: its first bytes are searched again.
        self.searched = self.pending.len().saturating_sub(3);
        if end_of_stream {
            // An event the stream ends in without its blank line is still offered: a client may
            // read it, so it must not pass undecided.
            let last = std::mem::take(&mut self.pending);
            if !last.is_empty() {
                let fate = fate_of(&last, self.offer_done, &mut decide);
                write_fate(&mut out, &last, fate);
            }
            self.searched = 0;
        } else if self.pending.len() > MAX_EVENT_BYTES {
            if !self.drop_oversized {
                out.append(&mut self.pending);
            }
            self.pending.clear();
            self.searched = 0;
            self.skipping = true;
        }
        out
    }
}

/// What `decide` makes of one event: events whose payload is JSON (and `[DONE]`, once offered)
/// are its to decide; the rest pass on as they came.
fn fate_of(
    event: &[u8],
    offer_done: bool,
    decide: &mut impl FnMut(&Value) -> EventFate,
) -> EventFate {
    let data = data_of(event);
    match serde_json::from_slice::<Value>(&data) {
        Ok(value) => decide(&value),
        Err(_) if offer_done && data == b"[DONE]" => decide(&Value::String("[DONE]".to_owned())),
        Err(_) => EventFate::Keep,
    }
}

/// The payload of one event: its `data:` lines, joined by line feeds.
fn data_of(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for line in lines(event) {
        if let Some(value) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
        }
    }
    data
}

fn write_fate(out: &mut Vec<u8>, event: &[u8], fate: EventFate) {
    match fate {
        EventFate::Keep => out.extend_from_slice(event),
        EventFate::Drop => {}
        EventFate::Prepend(first, fate) => {
            out.extend_from_slice(&first);
            write_fate(out, event, *fate);
        }
        EventFate::Replace(value) => {
            let mut data_written = false;
            for line in lines(event) {
                if line.is_empty() {
                    continue;
                }
                if !line.starts_with(b"data:") {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                } else if !data_written {
                    // A payload over several data lines becomes one line.
                    out.extend_from_slice(b"data: ");
                    json_writer::write_value(out, &value);
                    out.push(b'\n');
                    data_written = true;
                }
            }
            out.push(b'\n');
        }
    }
}

/// The end (past its blank line) of the first complete event in `bytes`, searching from `from`.
/// Lines end in CRLF, LF or a lone CR, as the event-stream format allows; a CR at the very end
/// waits for the next byte, which may make it a CRLF.
fn find_event_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', bytes.get(at..)?) {
        let line_end = line_break_end(bytes, at + offset)?;
        if bytes
            .get(line_end)
            .is_some_and(|&b| b == b'\n' || b == b'\r')
        {
            return line_break_end(bytes, line_end);
        }
        at = line_end;
    }
    None
}

/// The end of the line break at `at` (a CR or LF there); `None` for a CR that ends `bytes`.
fn line_break_end(bytes: &[u8], at: usize) -> Option<usize> {
    match (bytes[at], bytes.get(at + 1)) {
        (b'\r', Some(b'\n')) => Some(at + 2),
        (b'\r', None) => None,
        _ => Some(at + 1),
    }
}

/// The lines of one event, whichever line breaks it uses.
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = event;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(at) = memchr::memchr2(b'\n', b'\r', rest) else {
            return Some(std::mem::take(&mut rest));
        };
        let line = &rest[..at];
        let skip = if rest[at..].starts_with(b"\r\n") {
            2
        } else {
            1
        };
        rest = &rest[at + skip..];
        Some(line)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_all(reader: &mut EventReader, chunks: &[&[u8]], seen: &mut Vec<Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            out.extend(reader.read(chunk, i + 1 == chunks.len(), |value| {
                seen.push(value.clone());
                EventFate::Keep
            }));
        }
        out
    }

    #[test]
    fn events_split_across_chunks_are_read_whole() {
        let mut seen = Vec::new();
        let chunks: [&[u8]; 3] = [
            b"data: {\"a\":1}\n\ndata: {\"b\"",
            b":2}\n",
            b"\ndata: [DONE]\n\n",
        ];
        let out = read_all(&mut EventReader::default(), &chunks, &mut seen);
        assert_eq!(out, chunks.concat());
        assert_eq!(seen, [json!({"a": 1}), json!({"b": 2})]);
    }

    #[test]
    fn crlf_events_and_multi_line_data_are_understood() {
        let mut seen = Vec::new();
        let stream: &[u8] = b"event: x\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n: comment\n\n";
        let out = read_all(&mut EventReader::default(), &[stream], &mut seen);
        assert_eq!(out, stream);
        assert_eq!(seen, [json!({"a": 1})]);
    }

    /// Every line break the format allows, mixed, and every chunk split of the stream: the same
    /// events are read, and a stream passed on unchanged comes out byte for byte.
    #[test]
    fn events_are_read_whatever_their_line_breaks_and_splits() {
        let stream: &[u8] =
            b"data: {\"a\":1}\r\rdata: {\"b\":\rdata: 2}\r\n\r\nevent: x\ndata: {\"c\":3}\n\r\n: c\r\r";
        let expected = [json!({"a": 1}), json!({"b": 2}), json!({"c": 3})];
        for split in 0..=stream.len() {
            for second in split..=stream.len() {
                let mut seen = Vec::new();
                let chunks = [&stream[..split], &stream[split..second], &stream[second..]];
                let out = read_all(&mut EventReader::default(), &chunks, &mut seen);
                assert_eq!(out, stream, "split at {split} and {second}");
                assert_eq!(seen, expected, "split at {split} and {second}");
            }
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_decided() {
        for tail in [&b""[..], b"\n", b"\r", b"\r\n"] {
            let stream = [&b"data: {\"a\":1}\n\ndata: {\"b\":2}"[..], tail].concat();
            let out = EventReader::new(true).read(&stream, true, |value| {
                EventFate::Replace(json!({"seen": value}))
            });
            assert_eq!(
                out, b"data: {\"seen\":{\"a\":1}}\n\ndata: {\"seen\":{\"b\":2}}\n\n",
                "{tail:?}"
            );
        }
    }

    #[test]
    fn replaced_events_keep_their_other_lines() {
        let mut reader = EventReader::default();
        let out = reader.read(b"event: x\r\ndata: {\"a\":\ndata: 1}\n\n", true, |_| {
            EventFate::Replace(json!({"b": 2}))
        });
        assert_eq!(out, b"event: x\ndata: {\"b\":2}\n\n");
        let out = reader.read(b"data: {}\n\ndata: [DONE]\n\n", true, |_| EventFate::Drop);
        assert_eq!(out, DONE);
    }

    /// Found by the `sse` fuzz target: without serde_json's `float_roundtrip`, a rewritten event
    /// read back `29999…9` (31 digits) as a different number than the first reading.
    #[test]
    fn numbers_survive_a_rewrite() {
        let stream = format!("data: [1, 2{}]\n\n", "9".repeat(30));
        let mut first = Vec::new();
        let rewritten = EventReader::default().read(stream.as_bytes(), true, |value| {
            first.push(value.clone());
            EventFate::Replace(value.clone())
        });
        let mut again = Vec::new();
        read_all(&mut EventReader::default(), &[&rewritten], &mut again);
        assert_eq!(again, first);
    }

    #[test]
    fn written_events_read_back() {
        let mut out = Vec::new();
        write_event(
            &mut out,
            Some("delta"),
            &json!({"text": "two\nlines\r\n\n"}),
        );
        write_event(&mut out, None, &json!([1, 2]));
        let mut seen = Vec::new();
        read_all(&mut EventReader::default(), &[&out], &mut seen);
        assert_eq!(seen, [json!({"text": "two\nlines\r\n\n"}), json!([1, 2])]);
    }

    #[test]
    fn an_event_that_never_ends_is_passed_on_or_dropped_not_held() {
        let piece = vec![b'x'; 1024 * 1024];
        for drop_oversized in [false, true] {
            let mut reader = EventReader::new(drop_oversized);
            let mut passed = reader.read(b"data: ", false, |_| EventFate::Keep).len();
            for _ in 0..20 {
                passed += reader.read(&piece, false, |_| EventFate::Keep).len();
                assert!(reader.pending.len() <= MAX_EVENT_BYTES);
            }
            let mut seen = Vec::new();
            let tail = read_all(&mut reader, &[b"x\n\ndata: {}\n\n"], &mut seen);
            assert_eq!(
                seen,
                [json!({})],
                "reading resumes after the oversized event"
            );
            if drop_oversized {
                assert_eq!((passed, tail.as_slice()), (0, &b"data: {}\n\n"[..]));
            } else {
                assert_eq!(passed + tail.len(), 6 + 20 * piece.len() + 13);
            }
        }
    }
}
