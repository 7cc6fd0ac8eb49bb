//! Any bytes as an upstream event stream, cut into chunks anywhere: read with every event kept,
//! the stream passes on byte for byte; the events seen do not depend on where the chunks were
//! cut; and rewriting every event with its own payload gives a stream that reads back the same.
//! The first byte says how many cuts there are, the next bytes how long each chunk is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::sse::{EventFate, EventReader};
use serde_json::Value;

/// Reads `chunks` in order; returns what passed on and the payloads decided on.
fn read(chunks: &[&[u8]], fate: impl Fn(&Value) -> EventFate) -> (Vec<u8>, Vec<Value>) {
    let mut reader = EventReader::default();
    let (mut out, mut seen) = (Vec::new(), Vec::new());
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(reader.read(chunk, i + 1 == chunks.len(), |value| {
            seen.push(value.clone());
            fate(value)
        }));
    }
    (out, seen)
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let cuts = usize::from(cuts % 8).min(rest.len());
    let (sizes, mut stream) = rest.split_at(cuts);
    let mut chunks = Vec::new();
    for &size in sizes {
        let (chunk, tail) = stream.split_at(usize::from(size).min(stream.len()));
        chunks.push(chunk);
        stream = tail;
    }
    chunks.push(stream);

    let whole = chunks.concat();
    let (kept, seen) = read(&chunks, |_| EventFate::Keep);
    assert_eq!(
        kept, whole,
        "a stream read with every event kept is unchanged"
    );
    let (_, seen_whole) = read(&[&whole], |_| EventFate::Keep);
    assert_eq!(
        seen, seen_whole,
        "the events read do not depend on the chunking"
    );

    let (rewritten, _) = read(&chunks, |value| EventFate::Replace(value.clone()));
    let (_, seen_again) = read(&[&rewritten], |_| EventFate::Keep);
    assert_eq!(seen_again, seen, "rewritten events read back the same");
});
