//! What the three stream-translation targets share: fuzz bytes as an upstream stream cut into
//! chunks (the first byte says how many cuts there are, the next bytes how long each chunk is),
//! fed through a translation's stream translator.

use llm_edge::surface::TranslateConfig;
use llm_edge::surface::sse::EventReader;
use serde_json::json;

/// The client's bytes of `data` translated from `upstream` for a `client` (API names as the
/// config gives them), with a usage chunk asked for or not; `None` for no input.
pub fn translate(data: &[u8], client: &str, upstream: &str, path: &str) -> Option<Vec<u8>> {
    let (&cuts, rest) = data.split_first()?;
    let cuts = usize::from(cuts % 8).min(rest.len());
    let include_usage = cuts % 2 == 0;
    let (sizes, mut stream) = rest.split_at(cuts);
    let mut chunks = Vec::new();
    for &size in sizes {
        let (chunk, tail) = stream.split_at(usize::from(size).min(stream.len()));
        chunks.push(chunk);
        stream = tail;
    }
    chunks.push(stream);
    let config = TranslateConfig::parse(&json!([
        {"client": client, "upstream": upstream, "upstream_path": path}
    ]))
    .expect("a valid translation");
    let mut translator = config.translations[0].stream(1, include_usage, &Default::default());
    let mut reader = EventReader::default();
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend(translator.read(&mut reader, chunk, i + 1 == chunks.len()));
    }
    Some(out)
}
