//! Record mode: each exchange becomes one fixture line, written by the background writer, that
//! replays to the same bytes; no value the guard masked is ever written; what cannot be recorded
//! is counted.

use super::*;
use crate::fixtures::canonical::Ignored;
use crate::fixtures::index::{self, Reply};

/// A fresh path for a test's fixture file.
fn fixture_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("llm-edge-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    let _ = std::fs::remove_file(&path);
    path.to_str().unwrap().to_owned()
}

fn record_config(path: &str, extra: &str) -> String {
    format!(r#"{{"mode": "record", "record": {{"path": "{path}"}}{extra}}}"#)
}

/// Runs requests and their upstream replies through one recording context, then drops it
/// (which writes everything queued) and reads the file back.
fn record(config: &str, path: &str, exchanges: &[(&[u8], Upstream<'_>)]) -> Vec<FakeHost> {
    let config = FilterConfig::from_json(config.as_bytes()).unwrap();
    let context = Arc::new(FilterContext::new(config));
    let mut hosts = Vec::new();
    for (body, upstream) in exchanges {
        let mut filter = Filter::new(Arc::clone(&context));
        let mut host = FakeHost::request("POST", CHAT);
        post(&mut filter, &mut host, &[body]);
        upstream.reply(&mut filter, &mut host);
        filter.on_stream_complete(&mut host);
        hosts.push(host);
    }
    drop(context);
    assert!(std::path::Path::new(path).exists());
    hosts
}

/// What the upstream answers.
enum Upstream<'a> {
    Json(u16, &'a [u8]),
    /// A reply that is not JSON.
    Text(u16, &'a [u8]),
    Stream(&'a [&'a [u8]]),
    /// The stream is cut before it ends.
    Cut(&'a [u8]),
}

impl Upstream<'_> {
    fn reply(&self, filter: &mut Filter, host: &mut FakeHost) {
        let (status, kind) = match self {
            Self::Json(status, _) => (*status, "application/json"),
            Self::Text(status, _) => (*status, "text/plain"),
            Self::Stream(_) | Self::Cut(_) => (200, "text/event-stream"),
        };
        host.response_headers = vec![
            (":status".into(), status.to_string().into_bytes()),
            ("content-type".into(), kind.as_bytes().to_vec()),
        ];
        filter.on_response_headers(host, false);
        match self {
            Self::Json(_, body) | Self::Text(_, body) => {
                host.response_chunk = body.to_vec();
                if filter.on_response_body(host, true) == BodyStatus::StopIterationAndBuffer {
                    host.response_buffered = std::mem::take(&mut host.response_chunk);
                    filter.on_response_body(host, true);
                }
            }
            Self::Stream(chunks) => {
                for (index, chunk) in chunks.iter().enumerate() {
                    host.response_chunk = chunk.to_vec();
                    filter.on_response_body(host, index + 1 == chunks.len());
                }
            }
            Self::Cut(chunk) => {
                host.response_chunk = chunk.to_vec();
                filter.on_response_body(host, false);
            }
        }
    }
}

fn loaded(path: &str) -> Vec<index::Fixture> {
    let bytes = std::fs::read(path).unwrap();
    index::parse_file(path, &bytes, &Ignored::default())
        .unwrap()
        .fixtures
}

const REPLY: &[u8] = b"{\n  \"id\": \"chatcmpl-1\",\n  \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"hi there\"}, \"finish_reason\": \"stop\"}],\n  \"usage\": {\"prompt_tokens\": 9, \"completion_tokens\": 2, \"total_tokens\": 11}\n}";

#[test]
fn a_recorded_exchange_replays_to_the_same_reply_with_no_upstream() {
    let path = fixture_path("roundtrip");
    let stream: &[&[u8]] = &[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"cho",
        b"ices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
    ];
    let streamed = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream it"}]}"#;
    let hosts = record(
        &record_config(&path, ""),
        &path,
        &[
            (HELLO, Upstream::Json(200, REPLY)),
            (streamed, Upstream::Stream(stream)),
        ],
    );
    assert!(counted(&hosts[0], Counter::FixtureRecords).contains(&(labels(&["queued"]), 1)));
    let fixtures = loaded(&path);
    assert_eq!(fixtures.len(), 2);
    assert_eq!(
        (fixtures[0].status, fixtures[0].usage.prompt_tokens),
        (200, Some(9))
    );
    assert_eq!(
        fixtures[0].request,
        serde_json::from_slice::<Value>(HELLO).unwrap()
    );
    let Reply::Events(events) = &fixtures[1].reply else {
        panic!("the stream was not recorded as events");
    };
    assert_eq!(events.len(), 4);
    let mode = std::fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Replayed with no upstream: the whole reply is the upstream's, whitespace aside; the
    // stream's bytes are the upstream's exactly.
    let replay =
        format!(r#"{{"mock": {{"fixtures": {{"files": ["{path}"], "timing": "instant"}}}}}}"#);
    let host = post_with(&replay, &[], HELLO);
    let reply = host.only_reply();
    let upstream: Value = serde_json::from_slice(REPLY).unwrap();
    assert_eq!(reply.json(), upstream);
    assert!(reply.body.starts_with(br#"{"id":"chatcmpl-1","choices""#));
    let mut filter = filter_with(&replay);
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[streamed]);
    let sent: Vec<u8> = host
        .stream_data
        .iter()
        .flat_map(|(d, _)| d.clone())
        .collect();
    assert_eq!(sent, stream.concat());
}

#[test]
fn no_value_the_guard_masks_is_ever_written() {
    let path = fixture_path("guarded");
    let config = record_config(
        &path,
        r#", "guard": {"detectors": {"email": "mask"}, "reversible": true, "responses": true}"#,
    );
    let request = br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com"}]}"#;
    let whole = br#"{"choices":[{"message":{"content":"wrote [EMAIL_1], cc eve@corp.com"}}]}"#;
    let stream: &[&[u8]] = &[
        b"data: {\"choices\":[{\"delta\":{\"content\":\"to [EMA\"}}]}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"IL_1] and eve@co\"}}]}\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"rp.com\"}}]}\n\ndata: [DONE]\n\n",
    ];
    let streamed = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"mail bob@corp.com"}]}"#;
    let hosts = record(
        &config,
        &path,
        &[
            (request, Upstream::Json(200, whole)),
            (streamed, Upstream::Stream(stream)),
        ],
    );
    // The client got its own value back...
    let client_saw = String::from_utf8(hosts[0].replaced_body.clone().unwrap()).unwrap();
    assert!(client_saw.contains("bob@corp.com"), "{client_saw}");
    let streamed_to_client = String::from_utf8(hosts[1].replaced_chunks.concat()).unwrap();
    assert!(
        streamed_to_client.contains("bob@corp.com"),
        "{streamed_to_client}"
    );
    // ...and the file holds neither it nor the reply's own.
    let file = std::fs::read_to_string(&path).unwrap();
    assert_eq!(file.lines().count(), 2);
    for secret in ["bob@corp.com", "eve@corp.com", "corp.com"] {
        assert!(!file.contains(secret), "{secret} in {file}");
    }
    assert!(file.contains("[EMAIL_1]"));
}

#[test]
fn exchanges_that_cannot_be_recorded_are_counted_not_written() {
    let path = fixture_path("counted");
    let config = format!(
        r#"{{"mode": "record", "record": {{"path": "{path}", "max_exchange_bytes": 1024}}}}"#
    );
    let large = format!(
        r#"{{"choices":[{{"message":{{"content":"{}"}}}}]}}"#,
        "x".repeat(2000)
    );
    let hosts = record(
        &config,
        &path,
        &[
            (HELLO, Upstream::Json(200, large.as_bytes())),
            (HELLO, Upstream::Cut(b"data: {\"choices\":[]}\n\n")),
        ],
    );
    assert_eq!(
        counted(&hosts[0], Counter::FixtureRecords),
        [(labels(&["too_large"]), 1)]
    );
    assert_eq!(
        counted(&hosts[1], Counter::FixtureRecords),
        [(labels(&["incomplete"]), 1)]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn record_configs_are_checked_at_load() {
    let path = fixture_path("config");
    let cases = [
        (r#"{"mode": "record"}"#.to_owned(), "record"),
        (
            format!(r#"{{"mode": "passthrough", "record": {{"path": "{path}"}}}}"#),
            "record",
        ),
        (
            r#"{"mode": "record", "record": {"path": "/nonexistent-dir/x.jsonl"}}"#.to_owned(),
            "record.path",
        ),
        (
            format!(r#"{{"mode": "record", "record": {{"path": "{path}", "max_files": 0}}}}"#),
            "record.max_files",
        ),
        (
            format!(
                r#"{{"mode": "record", "record": {{"path": "{path}", "max_exchange_bytes": 10}}}}"#
            ),
            "record.max_exchange_bytes",
        ),
    ];
    for (config, field) in cases {
        let error = FilterConfig::from_json(config.as_bytes()).unwrap_err();
        assert_eq!(error.field, field, "{config}: {error}");
    }
}

#[test]
fn a_stream_llm_edge_is_asked_to_break_is_not_recorded() {
    let path = fixture_path("chaos");
    let config = record_config(&path, r#", "mock": {"faults": {"upstream": true}}"#);
    let config = FilterConfig::from_json(config.as_bytes()).unwrap();
    let context = Arc::new(FilterContext::new(config));
    let mut filter = Filter::new(Arc::clone(&context));
    let mut host =
        FakeHost::request("POST", CHAT).with_header("x-llm-edge-stream-fault", "truncate:1");
    post(&mut filter, &mut host, &[HELLO]);
    let stream: &[&[u8]] =
        &[b"data: {\"choices\":[]}\n\ndata: {\"choices\":[]}\n\ndata: [DONE]\n\n"];
    Upstream::Stream(stream).reply(&mut filter, &mut host);
    filter.on_stream_complete(&mut host);
    drop(context);
    assert_eq!(
        counted(&host, Counter::FixtureRecords),
        [(labels(&["fault_injected"]), 1)]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}

#[test]
fn a_masked_value_in_any_form_never_reaches_the_file() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234567890abcdef\n-----END RSA PRIVATE KEY-----";
    let guard =
        r#", "guard": {"detectors": {"email": "mask", "private_key": "mask"}, "reversible": true}"#;
    let request = serde_json::to_vec(&serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": format!("mail bob@corp.com the key {key}")}]}))
    .unwrap();
    // The upstream echoes the placeholders inside tool arguments, escaped, and as plain text.
    let arguments = r#"{"to":"[EMAIL_1]","key":"[PRIVATE_KEY_1]"}"#;
    let tool_call = serde_json::to_vec(&serde_json::json!({"choices": [{"message": {
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}]}}]}))
    .unwrap();
    let escaped = br#"{"choices":[{"message":{"content":"to bob\u0040corp.com"}}]}"#;
    let stream: &[&[u8]] = &[
        b": upstream note [PRIVATE_KEY_1]\n\n",
        b"data: {\"choices\":[{\"delta\":{\"content\":\"bob\\u0040corp.com\"}}]}\n\ndata: [DONE]\n\n",
    ];
    let streamed = serde_json::to_vec(
        &serde_json::json!({"model": "m", "stream": true, "messages": [
        {"role": "user", "content": format!("mail bob@corp.com the key {key}")}]}),
    )
    .unwrap();
    let path = fixture_path("every-form");
    let hosts = record(
        &record_config(&path, guard),
        &path,
        &[
            (&request, Upstream::Json(200, &tool_call)),
            (&request, Upstream::Json(200, escaped)),
            (
                &request,
                Upstream::Text(500, format!("upstream failed on {key}").as_bytes()),
            ),
            (&streamed, Upstream::Stream(stream)),
        ],
    );
    // The client got its values back in the tool call...
    let client_saw: Value =
        serde_json::from_slice(hosts[0].replaced_body.as_ref().unwrap()).unwrap();
    let sent =
        client_saw["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].clone();
    let arguments: Value = serde_json::from_str(sent.as_str().unwrap()).unwrap();
    assert_eq!(arguments["key"], key);
    // ...and the file holds none of them, in any form.
    let file = std::fs::read_to_string(&path).unwrap();
    for secret in ["corp.com", "MIIEowIBAAKCAQEA", "bob\\u0040"] {
        assert!(!file.contains(secret), "{secret} in {file}");
    }
    let written: usize = hosts
        .iter()
        .map(|host| {
            counted(host, Counter::FixtureRecords)
                .iter()
                .filter(|(labels, _)| labels == &["queued"])
                .count()
        })
        .sum();
    assert_eq!(written, file.lines().count());
}

#[test]
fn the_request_counts_towards_the_exchange_limit() {
    let path = fixture_path("large-request");
    let config = format!(
        r#"{{"mode": "record", "record": {{"path": "{path}", "max_exchange_bytes": 2048}}}}"#
    );
    let large = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4000)
    );
    let hosts = record(
        &config,
        &path,
        &[(large.as_bytes(), Upstream::Json(200, b"{}"))],
    );
    assert_eq!(
        counted(&hosts[0], Counter::FixtureRecords),
        [(labels(&["too_large"]), 1)]
    );
    // Many tiny events cost their line more than their bytes.
    let events = b"data: {}\n\n".repeat(150);
    let hosts = record(&config, &path, &[(HELLO, Upstream::Stream(&[&events]))]);
    assert_eq!(
        counted(&hosts[0], Counter::FixtureRecords),
        [(labels(&["too_large"]), 1)]
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"");
}
