//! Replay in mock mode: hits answer from their fixture (status, bytes, pacing, headers), misses
//! get what `on_miss` says, a reversible guard's placeholders come back as the request's values.

use super::*;
use crate::filter::replay::{FIXTURE_HEADER, RECORDED_AT_HEADER};
use crate::fixtures::canonical::{Ignored, Key};
use crate::fixtures::format::{LineOut, OneLineJson, RecordedEvent, RecordedUsage, VERSION};

/// A file of fixture lines under the test's own name, in the temp dir.
fn fixture_file(name: &str, lines: &[Vec<u8>]) -> String {
    let dir = std::env::temp_dir().join(format!("llm-edge-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.jsonl"));
    std::fs::write(&path, lines.concat()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A fixture line of `request` to chat completions: a JSON reply, or events.
fn recorded(request: &[u8], status: u16, reply: Result<&str, &[(u64, &str)]>) -> Vec<u8> {
    let request = OneLineJson::checked(request).unwrap();
    let raw = reply
        .ok()
        .map(|json| OneLineJson::checked(json.as_bytes()).unwrap());
    let events: Option<Vec<RecordedEvent>> = reply.err().map(|events| {
        let events = events.iter().map(|(at_ms, raw)| RecordedEvent {
            at_ms: *at_ms,
            raw: (*raw).to_owned(),
        });
        events.collect()
    });
    LineOut {
        llm_edge_fixture: VERSION,
        recorded_at: "2026-11-30T12:00:00Z",
        endpoint: "chat_completions",
        model: "gpt-4o",
        request: &request,
        status,
        content_type: if events.is_some() {
            "text/event-stream"
        } else {
            "application/json"
        },
        reply: raw.as_ref(),
        body: None,
        events: events.as_deref(),
        headers_ms: 3,
        duration_ms: 40,
        usage: RecordedUsage {
            prompt_tokens: Some(7),
            completion_tokens: Some(2),
        },
    }
    .to_line()
}

const REPLY: &str = r#"{"id":"chatcmpl-rec","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"recorded hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;

fn replay_config(file: &str, rest: &str) -> String {
    format!(r#"{{"mock": {{"fixtures": {{"files": ["{file}"]{rest}}}}}}}"#)
}

#[test]
fn a_recorded_reply_answers_its_request_byte_for_byte_with_its_fixture_named() {
    let file = fixture_file("whole", &[recorded(HELLO, 200, Ok(REPLY))]);
    let config = replay_config(&file, r#", "timing": "instant""#);
    let host = post_with(&config, &[], HELLO);
    let reply = host.only_reply();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, REPLY.as_bytes());
    let request: Value = serde_json::from_slice(HELLO).unwrap();
    let key = Key::of("chat_completions", &request, &Ignored::default());
    assert_eq!(reply.header(FIXTURE_HEADER), Some(key.id().as_str()));
    assert_eq!(
        reply.header(RECORDED_AT_HEADER),
        Some("2026-11-30T12:00:00Z")
    );
    assert_eq!(
        counted(&host, Counter::FixtureReplays),
        [(labels(&["exact"]), 1)]
    );
    assert!(counted(&host, Counter::PromptTokens).contains(&(labels(&["gpt-4o"]), 7)));
}

#[test]
fn a_recorded_error_replays_with_its_status_after_its_recorded_time() {
    let error = r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let file = fixture_file("error", &[recorded(HELLO, 429, Ok(error))]);
    let mut filter = filter_with(&replay_config(&file, r#", "replay_speed": 2"#));
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[HELLO]);
    // Recorded 40 ms, replayed twice as fast.
    assert_eq!(host.paced, [Duration::from_millis(20)]);
    assert_eq!(
        host.stream_head.as_ref().map(|(status, _)| *status),
        Some(429)
    );
    filter.on_scheduled(&mut host, 0);
    assert_eq!(host.stream_data, [(error.as_bytes().to_vec(), true)]);
}

#[test]
fn a_recorded_stream_replays_its_events_at_their_times_or_the_latency_model() {
    let events: &[(u64, &str)] = &[
        (
            120,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ),
        (
            150,
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        ),
        (151, "data: [DONE]\n\n"),
    ];
    let file = fixture_file("stream", &[recorded(HELLO, 200, Err(events))]);
    let mut filter = filter_with(&replay_config(&file, ""));
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[HELLO]);
    let millis: Vec<u128> = host.paced.iter().map(Duration::as_millis).collect();
    assert_eq!(millis, [120, 150, 151]);
    let (status, headers) = host.stream_head.clone().unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
    for event in 0..3 {
        filter.on_scheduled(&mut host, event);
    }
    let sent: Vec<u8> = host
        .stream_data
        .iter()
        .flat_map(|(d, _)| d.clone())
        .collect();
    let recorded: String = events.iter().map(|(_, raw)| *raw).collect();
    assert_eq!(sent, recorded.as_bytes());
    assert_eq!(host.stream_data.last().map(|(_, end)| *end), Some(true));

    let config = replay_config(&file, r#", "timing": "latency""#);
    let config = config.replacen(
        r#""mock": {"#,
        r#""mock": {"latency": {"time_to_first_token_ms": 10, "inter_token_ms": 5}, "#,
        1,
    );
    let mut filter = filter_with(&config);
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[HELLO]);
    let millis: Vec<u128> = host.paced.iter().map(Duration::as_millis).collect();
    assert_eq!(millis, [10, 15, 20]);
}

#[test]
fn a_miss_gets_a_404_naming_its_key_in_the_clients_api_or_the_mock() {
    let file = fixture_file("miss", &[recorded(HELLO, 200, Ok(REPLY))]);
    let other = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello!"}]}"#;
    let host = post_with(&replay_config(&file, ""), &[], other);
    let reply = host.only_reply();
    assert_eq!(reply.status, 404);
    let request: Value = serde_json::from_slice(other).unwrap();
    let key = Key::of("chat_completions", &request, &Ignored::default()).to_hex();
    assert!(
        reply.error_message().contains(&key),
        "{}",
        reply.error_message()
    );
    assert_eq!(reply.json()["error"]["code"], "fixture_not_found");
    assert_eq!(
        counted(&host, Counter::FixtureReplays),
        [(labels(&["miss"]), 1)]
    );
    assert!(
        counted(&host, Counter::Requests)
            .contains(&(labels(&["chat_completions", "fixture_miss"]), 1))
    );

    let mut filter = filter_with(&replay_config(&file, ""));
    let mut host = FakeHost::request("POST", "/v1/messages");
    post(
        &mut filter,
        &mut host,
        &[br#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#],
    );
    let reply = host.only_reply().json();
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["error"]["type"], "not_found_error");

    let host = post_with(&replay_config(&file, r#", "on_miss": "mock""#), &[], other);
    let reply = host.only_reply();
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "hello!");
}

#[test]
fn a_miss_goes_upstream_when_the_config_says_so() {
    let file = fixture_file("upstream", &[recorded(HELLO, 200, Ok(REPLY))]);
    let config = replay_config(&file, r#", "on_miss": "passthrough""#);
    let other = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"new"}]}"#;
    let mut filter = filter_with(&config);
    let mut host = FakeHost::request("POST", CHAT);
    let statuses = post(&mut filter, &mut host, &[other]);
    assert_eq!(statuses.last(), Some(&BodyStatus::Continue));
    assert!(host.sent.is_empty() && host.stream_head.is_none());
    assert_eq!(header_of(&host, "accept-encoding"), Some(&b"identity"[..]));
    // A hit still never reaches the upstream.
    let mut filter = filter_with(&config);
    let mut host = FakeHost::request("POST", CHAT);
    let statuses = post(&mut filter, &mut host, &[HELLO]);
    assert_eq!(statuses.last(), Some(&BodyStatus::StopIterationNoBuffer));
    assert!(host.stream_head.is_some() || !host.sent.is_empty());
}

#[test]
fn a_miss_sent_upstream_is_transformed_and_guarded_once() {
    let file = fixture_file("guarded-miss", &[recorded(HELLO, 200, Ok(REPLY))]);
    let config = format!(
        r#"{{"guard": {{"detectors": {{"email": "mask", "phone": "monitor"}}}},
            "transform": {{"system_prompts": [{{"position": "prepend", "content": "Be brief."}}]}},
            "mock": {{"fixtures": {{"files": ["{file}"], "on_miss": "passthrough"}}}}}}"#
    );
    let sent =
        br#"{"model":"gpt-4o","messages":[{"role":"user","content":"b@x.io +1 415-555-2671"}]}"#;
    let mut filter = filter_with(&config);
    let mut host = FakeHost::request("POST", CHAT);
    let statuses = post(&mut filter, &mut host, &[sent]);
    assert_eq!(statuses.last(), Some(&BodyStatus::Continue));
    assert_eq!(
        counted(&host, Counter::Detections),
        [
            (labels(&["email", "mask"]), 1),
            (labels(&["phone", "monitor"]), 1)
        ]
    );
    let forwarded: Value = serde_json::from_slice(host.forwarded_body.as_ref().unwrap()).unwrap();
    let messages = forwarded["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "one system prompt: {forwarded}");
    assert_eq!(messages[0]["content"], "Be brief.");
    assert_eq!(messages[1]["content"], "[EMAIL_1] +1 415-555-2671");
}

#[test]
fn a_reversible_guard_matches_on_placeholders_and_restores_them_in_the_replay() {
    let masked = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail [EMAIL_1]"}]}"#;
    let reply = r#"{"choices":[{"message":{"role":"assistant","content":"wrote to [EMAIL_1]"}}]}"#;
    let file = fixture_file("guarded", &[recorded(masked, 200, Ok(reply))]);
    let config = format!(
        r#"{{"guard": {{"detectors": {{"email": "mask"}}, "reversible": true}},
            "mock": {{"fixtures": {{"files": ["{file}"], "timing": "instant"}}}}}}"#
    );
    let sent = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail b@x.io"}]}"#;
    let host = post_with(&config, &[], sent);
    let reply = host.only_reply();
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.json()["choices"][0]["message"]["content"],
        "wrote to b@x.io"
    );
}

#[test]
fn bad_fixture_configs_are_refused_at_load_naming_the_field() {
    let file = fixture_file("config", &[recorded(HELLO, 200, Ok(REPLY))]);
    let cases = [
        (
            r#"{"mock": {"fixtures": {"files": []}}}"#.to_owned(),
            "mock.fixtures.files",
        ),
        (
            r#"{"mock": {"fixtures": {"files": ["/nonexistent/llm-edge.jsonl"]}}}"#.to_owned(),
            "mock.fixtures.files[0]",
        ),
        (
            replay_config(&file, r#", "replay_speed": 0"#),
            "mock.fixtures.replay_speed",
        ),
        (
            replay_config(&file, r#", "record_misses": true"#),
            "mock.fixtures.record_misses",
        ),
        (
            replay_config(&file, r#", "rules": [{"fixture": "nope"}]"#),
            "mock.fixtures.rules[0].fixture",
        ),
        (
            replay_config(&file, r#", "on_miss": "ask""#),
            "mock.fixtures.on_miss",
        ),
    ];
    for (config, field) in cases {
        let error = FilterConfig::from_json(config.as_bytes()).unwrap_err();
        assert_eq!(error.field, field, "{config}: {error}");
    }
}

#[test]
fn faults_on_request_break_a_replay_as_they_break_the_mock() {
    let events: &[(u64, &str)] = &[
        (
            0,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        ),
        (
            0,
            "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
        ),
        (0, "data: [DONE]\n\n"),
    ];
    let file = fixture_file("faults", &[recorded(HELLO, 200, Err(events))]);
    let config = replay_config(&file, r#", "timing": "instant""#);
    let host = post_with(&config, &[("x-llm-edge-stream-fault", "truncate:1")], HELLO);
    assert_eq!(host.stream_data.len(), 1);
    assert_eq!(host.stream_data[0].0, events[0].1.as_bytes());
    assert!(counted(&host, Counter::Faults).contains(&(labels(&["truncate"]), 1)));
    let host = post_with(&config, &[("x-llm-edge-stream-fault", "reset:2")], HELLO);
    assert_eq!((host.stream_data.len(), host.resets.len()), (2, 1));
    let host = post_with(&config, &[("x-llm-edge-fault", "429")], HELLO);
    let reply = host.only_reply();
    assert_eq!(reply.status, 429);
    assert!(counted(&host, Counter::FixtureReplays).is_empty());
}
