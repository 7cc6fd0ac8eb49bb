//! Server-sent events: writing them (every mock stream) and reading them as they pass through
//! (token accounting and guarding of upstream streams), whatever the chunk boundaries.

use serde::Serialize;
use serde_json::Value;

use crate::api::json_read::parse_value_noting_duplicates;
use crate::api::json_writer;

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

/// Who decides on the events of a stream as [`EventReader`] reads them. Any
/// `FnMut(&Value) -> EventFate` decides on JSON events and keeps every other line as it came; a
/// guard also guards the text of those other lines.
pub trait Decide {
    /// The fate of an event whose data is JSON (or `[DONE]`, as the JSON string `"[DONE]"`, once
    /// offered).
    fn event(&mut self, event: &Value) -> EventFate;

    /// Whether [`Decide::text`] is to see every line that is not JSON data.
    fn guards_text(&self) -> bool {
        false
    }

    /// A line that is not JSON data (data that is not JSON, an `event:` or `id:` line, a
    /// comment), guarded: `None` keeps it as it came.
    fn text(&mut self, _line: &str) -> Option<String> {
        None
    }
}

impl<F: FnMut(&Value) -> EventFate> Decide for F {
    fn event(&mut self, event: &Value) -> EventFate {
        self(event)
    }
}

/// The byte-order mark a stream may begin with, which event-stream parsers skip.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

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
    /// The start of the stream has been read past (and a byte-order mark there passed on).
    started: bool,
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
        decide: impl FnMut(&Value) -> EventFate,
    ) -> Vec<u8> {
        self.read_with(chunk, end_of_stream, decide)
    }

    /// [`EventReader::read`] with any [`Decide`], such as a guard that also guards the lines
    /// that are not JSON data.
    pub fn read_with(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        mut decide: impl Decide,
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
        if !self.started && (self.pending.len() >= BYTE_ORDER_MARK.len() || end_of_stream) {
            // Parsers skip it: it goes on as it came, but the first event is read after it
            // (else its first line would not read `data:`).
            if self.pending.starts_with(BYTE_ORDER_MARK) {
                out.extend_from_slice(BYTE_ORDER_MARK);
                self.pending.drain(..BYTE_ORDER_MARK.len());
            }
            self.started = true;
        }
        let mut start = 0;
        while let Some(end) = find_event_end(&self.pending, self.searched.max(start)) {
            let event = &self.pending[start..end];
            let fate = fate_of(event, self.offer_done, &mut decide);
            write_decided(&mut out, event, fate, &mut decide);
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
                write_decided(&mut out, &last, fate, &mut decide);
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

/// Cuts a stream into its events' bytes, as they are, whatever the chunk boundaries: for a
/// recording, which keeps each event with the time it was complete.
#[derive(Debug, Default)]
pub struct EventSplitter {
    /// The unfinished event at the end of the stream so far.
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no event end.
    searched: usize,
}

impl EventSplitter {
    /// Reads `chunk` and hands each event it completes to `complete`, its ending blank line
    /// included. Each byte is searched about once.
    pub fn push(&mut self, chunk: &[u8], mut complete: impl FnMut(&[u8])) {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = find_event_end(&self.pending, self.searched.max(start)) {
            complete(&self.pending[start..end]);
            start = end;
        }
        self.pending.drain(..start);
        // A blank line may straddle the next chunk: its first bytes are searched again.
        self.searched = self.pending.len().saturating_sub(3);
    }

    /// The bytes after the last complete event, which a stream can end in.
    pub fn finish(&mut self) -> Vec<u8> {
        self.searched = 0;
        std::mem::take(&mut self.pending)
    }

    /// The bytes held for an unfinished event.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// What `decide` makes of one event: events whose payload is JSON (and `[DONE]`, once offered)
/// are its to decide; the rest pass on as they came.
fn fate_of(event: &[u8], offer_done: bool, decide: &mut impl Decide) -> Decided {
    let data = data_of(event);
    if data.is_empty() && !has_data_line(event) {
        return Decided::NotJson;
    }
    match parse_value_noting_duplicates(&data) {
        Ok((value, duplicated)) => match decide.event(&value) {
            // A key given twice goes on once, as it was read and decided on.
            EventFate::Keep if duplicated && decide.guards_text() => {
                Decided::Json(EventFate::Replace(value))
            }
            fate => Decided::Json(fate),
        },
        Err(_) if data == b"[DONE]" => Decided::Json(if offer_done {
            decide.event(&Value::String("[DONE]".to_owned()))
        } else {
            EventFate::Keep
        }),
        Err(_) => Decided::NotJson,
    }
}

/// What was decided of one event: its JSON data's fate, or that its data is not JSON.
enum Decided {
    Json(EventFate),
    NotJson,
}

fn has_data_line(event: &[u8]) -> bool {
    lines(event).any(|line| line.starts_with(b"data:"))
}

/// Writes an event as decided. When the decider guards text, every line that is not JSON data
/// is guarded too, and a line that is not UTF-8 (so cannot be read) is left out.
fn write_decided(out: &mut Vec<u8>, event: &[u8], decided: Decided, decide: &mut impl Decide) {
    let (fate, json) = match decided {
        Decided::Json(fate) => (fate, true),
        Decided::NotJson => (EventFate::Keep, false),
    };
    if !decide.guards_text() {
        write_fate(out, event, fate);
        return;
    }
    let (first, fate) = match fate {
        EventFate::Drop => return,
        EventFate::Prepend(first, fate) => (first, *fate),
        fate => (Vec::new(), fate),
    };
    out.extend_from_slice(&first);
    let mut guarded = Vec::new();
    let mut changed = false;
    for line in lines(event) {
        let is_data = line.starts_with(b"data:");
        if line.is_empty() || (is_data && json) {
            guarded.push(None);
            continue;
        }
        let Ok(text) = std::str::from_utf8(line) else {
            changed = true;
            guarded.push(Some(String::new()));
            continue;
        };
        let text = decide.text(text);
        changed |= text.is_some();
        guarded.push(text);
    }
    if !changed {
        write_fate(out, event, fate);
        return;
    }
    let mut data_written = false;
    for (line, guarded) in lines(event).zip(guarded) {
        match guarded {
            Some(text) if text.is_empty() => {}
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                out.push(b'\n');
            }
            None if line.is_empty() => {}
            None => match &fate {
                EventFate::Replace(value) if line.starts_with(b"data:") => {
                    if !data_written {
                        out.extend_from_slice(b"data: ");
                        json_writer::write_value(out, value);
                        out.push(b'\n');
                        data_written = true;
                    }
                }
                _ => {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
            },
        }
    }
    out.push(b'\n');
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
    #[test]
    fn the_splitter_cuts_events_as_they_are_at_any_chunk_boundary() {
        let stream = b"data: 1\n\nevent: e\r\ndata: 2\r\n\r\n: comment\n\ndata: tail";
        let whole = {
            let mut splitter = EventSplitter::default();
            let mut events = Vec::new();
            splitter.push(stream, |event| events.push(event.to_vec()));
            events.push(splitter.finish());
            events
        };
        assert_eq!(
            whole,
            [
                &b"data: 1\n\n"[..],
                b"event: e\r\ndata: 2\r\n\r\n",
                b": comment\n\n",
                b"data: tail"
            ]
        );
        for cut in 0..stream.len() {
            for cut2 in cut..stream.len() {
                let mut splitter = EventSplitter::default();
                let mut events = Vec::new();
                for chunk in [&stream[..cut], &stream[cut..cut2], &stream[cut2..]] {
                    splitter.push(chunk, |event| events.push(event.to_vec()));
                }
                events.push(splitter.finish());
                assert_eq!(events, whole, "cuts at {cut}, {cut2}");
            }
        }
    }

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

    /// A guard that masks `secret` in every text it is shown, and in JSON data.
    struct Masking;

    impl Decide for Masking {
        fn event(&mut self, event: &Value) -> EventFate {
            let text = event.to_string();
            if text.contains("secret") {
                EventFate::Replace(serde_json::from_str(&text.replace("secret", "[X]")).unwrap())
            } else {
                EventFate::Keep
            }
        }
        fn guards_text(&self) -> bool {
            true
        }
        fn text(&mut self, line: &str) -> Option<String> {
            line.contains("secret")
                .then(|| line.replace("secret", "[X]"))
        }
    }

    /// Whatever line an upstream hides a value in, a guarding reader shows it to the guard:
    /// data that is not JSON (NaN, a lone surrogate, plain text), comments, `event:` and `id:`
    /// lines, a stream that starts with a byte-order mark, a body that is no event stream.
    #[test]
    fn a_guarding_reader_guards_every_line_it_cannot_decode() {
        for stream in [
            &b"data: {\"content\": \"secret\", \"x\": NaN}\n\n"[..],
            b"data: {\"content\": \"secret \\ud800\"}\n\n",
            b"data: secret\n\n",
            b": secret\n\ndata: {}\n\n",
            b"event: secret\ndata: {}\n\n",
            b"id: secret\ndata: {}\n\n",
            b"\xEF\xBB\xBFdata: {\"content\": \"secret\"}\n\n",
            b"{\"choices\": [{\"message\": {\"content\": \"secret\"}}]}",
            b"data: {\"content\": \"secret\"}\n\n",
        ] {
            for split in 0..=stream.len() {
                let mut reader = EventReader::new(true);
                let mut out = reader.read_with(&stream[..split], false, Masking);
                out.extend(reader.read_with(&stream[split..], true, Masking));
                let out = String::from_utf8_lossy(&out);
                assert!(
                    !out.contains("secret"),
                    "{stream:?} split at {split}: {out}"
                );
                assert!(out.contains("[X]"), "{stream:?} split at {split}: {out}");
            }
        }
        // A line that is not UTF-8 cannot be read, so it does not pass.
        let out = EventReader::new(true).read_with(b": \xFF secret\ndata: {}\n\n", true, Masking);
        assert_eq!(out, b"data: {}\n\n");
        // A byte-order mark goes on as it came, with the first event read after it.
        let stream = b"\xEF\xBB\xBFdata: {\"a\":1}\n\n";
        let mut seen = Vec::new();
        let out = read_all(
            &mut EventReader::new(true),
            &[&stream[..2], &stream[2..]],
            &mut seen,
        );
        assert_eq!((out.as_slice(), seen), (&stream[..], vec![json!({"a": 1})]));
        // A reader that only decides on JSON passes other lines as they came.
        let stream = b": secret\ndata: secret\n\n";
        let out = EventReader::new(true).read(stream, true, |_| EventFate::Keep);
        assert_eq!(out, stream);
    }

    #[test]
    fn a_key_given_twice_is_written_once_when_guarded() {
        let stream = b"data: {\"content\": \"secret\", \"content\": \"hi\"}\n\n";
        let out = EventReader::new(true).read_with(stream, true, Masking);
        assert_eq!(out, b"data: {\"content\":\"hi\"}\n\n");
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
