//! Any text through every built-in detector: masking then restoring gives the text back, a
//! request body (when the bytes are JSON) is guarded without a panic, and a streamed reply of any
//! shape, cut anywhere and ended any way, is never weaker than the same text guarded whole: a
//! planted value that whole-text guarding hides never comes out, and a text with nothing to mask
//! comes out exactly as it went in.
//!
//! Input: byte 0 picks the planted value (or none), byte 1 the shape and ending, bytes 2..10 seed
//! the cut points; the rest is the text (UTF-8), the value planted in its middle.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::guard::{self, Action, DeltaGuard, Detectors, Guard, GuardConfig, Masker};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};

/// Every built-in detector, masking, in a guard that scans replies.
fn every_detector() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let detectors: BTreeMap<String, Action> = guard::BUILT_IN
            .iter()
            .map(|name| ((*name).to_owned(), Action::Mask))
            .collect();
        let config = GuardConfig {
            detectors,
            responses: true,
            ..GuardConfig::default()
        };
        Guard::parse(config).expect("the built-in detectors compile")
    })
}

fn detectors() -> &'static Detectors {
    every_detector().detectors()
}

/// A value of each built-in detector, and issue 18's cases.
const VALUES: &[&str] = &[
    "jane.doe@example.com",
    "(415) 555-2671",
    "+1 415-555-2671",
    "4111 1111 1111 1111",
    "123-45-6789",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.1.20",
    "2001:db8::8a2e:370:7334",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUgRG9lIiwiaWF0IjoxNTE2MjM5MDIyLCJyb2xlcyI6WyJhZG1pbiIsInVzZXIiLCJhdWRpdG9yIl0sImV4cCI6MTkxNjIzOTAyMiwiaXNzIjoiaHR0cHM6Ly9leGFtcGxlLmNvbSJ9.c2lnbmF0dXJlc2lnbmF0dXJlc2lnbmF0dXJl",
    "sk-proj-abcdefghijklmnopqrstuvwx",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "xoxb-1234567890-abcdef",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
];

/// The events of `pieces` in one of four shapes, and where each delta's text is.
fn events(shape: u8, pieces: &[&str]) -> (Vec<Value>, &'static str) {
    let pointer = match shape % 4 {
        0 => "/choices/0/delta/content",
        1 => "/choices/0/delta/tool_calls/0/function/arguments",
        2 => "/delta",
        _ => "/delta/text",
    };
    let event = |piece: &str| match shape % 4 {
        0 => json!({"choices": [{"index": 0, "delta": {"content": piece}}]}),
        1 => json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}}]}),
        2 => json!({"type": "response.output_text.delta", "output_index": 0,
                    "content_index": 0, "delta": piece}),
        _ => json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}),
    };
    let mut out: Vec<Value> = pieces.iter().map(|piece| event(piece)).collect();
    // Endings: a closing event, `[DONE]`, or the end of the body.
    match (shape / 4) % 3 {
        0 => out.push(match shape % 4 {
            0 | 1 => json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            2 => json!({"type": "response.output_text.done", "output_index": 0,
                        "content_index": 0, "text": pieces.concat()}),
            _ => json!({"type": "content_block_stop", "index": 0}),
        }),
        1 => out.push(Value::String("[DONE]".into())),
        _ => {}
    }
    (out, pointer)
}

/// The deltas a client gets of a stream guarded as pass-through guards it, and the other texts.
fn streamed(events: Vec<Value>, pointer: &str) -> (String, Vec<String>) {
    let mut masker = Masker::default();
    let mut guard = DeltaGuard::default();
    let mut out = Vec::new();
    for mut event in events {
        out.extend(guard.guard_event(&mut event, every_detector(), &mut masker));
        out.push(event);
    }
    out.extend(guard.finish(every_detector(), &mut masker));
    let mut text = String::new();
    let mut others = Vec::new();
    for event in &out {
        let is_delta = event["type"].as_str().is_none_or(|t| t.ends_with("delta"));
        match event.pointer(pointer).and_then(Value::as_str) {
            Some(delta) if is_delta => text.push_str(delta),
            _ => others.push(event.to_string()),
        }
    }
    (text, others)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let Ok(text) = std::str::from_utf8(&data[10..]) else {
        return;
    };
    let mut masker = Masker::default();
    let masked = masker.mask(detectors(), text).expect("mask never rejects");
    // Placeholders the text already held would be "restored" too: only check clean texts.
    if !text.contains('[') {
        assert_eq!(masker.restore(&masked), text);
    }
    if let Ok(Value::Object(mut body)) = serde_json::from_str(text) {
        let _ = guard::guard_request(&mut body, every_detector(), &mut Masker::default());
    }

    let planted = VALUES.get(usize::from(data[0]) % (VALUES.len() + 1));
    let mut middle = text.len() / 2;
    while !text.is_char_boundary(middle) {
        middle -= 1;
    }
    let whole = match planted {
        Some(value) => format!("{}{value}{}", &text[..middle], &text[middle..]),
        None => text.to_owned(),
    };
    let mut rng = StdRng::seed_from_u64(u64::from_le_bytes(data[2..10].try_into().unwrap()));
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < whole.len() {
        let mut end = (at + rng.random_range(1..12)).min(whole.len());
        while !whole.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(&whole[at..end]);
        at = end;
    }
    let guarded_whole = Masker::default().mask_new(detectors(), &whole);
    let (events, pointer) = events(data[1], &pieces);
    let (sent, others) = streamed(events, pointer);
    if guarded_whole == whole {
        assert_eq!(sent, whole, "text was lost or changed");
    }
    if let Some(value) = planted {
        if !guarded_whole.contains(value) {
            assert!(!sent.contains(value), "a planted value came out");
            let json_value = Value::String((*value).to_owned()).to_string();
            let escaped = &json_value[1..json_value.len() - 1];
            for other in others {
                assert!(!other.contains(escaped), "a planted value came out whole");
            }
        }
    }
});
