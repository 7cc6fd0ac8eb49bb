//! Faults on the way through (`mock.faults.upstream`): status faults answered in place of the
//! provider, stream faults breaking the real stream as it leaves, translated and guarded.

use super::*;
use crate::api::sse::write_event;
use crate::mock::faults::MALFORMED_EVENT;

const CHAOS: &str = r#"{"mode": "passthrough", "mock": {"faults": {"upstream": true}}}"#;

const GUARDED_CHAOS: &str = r#"{"mode": "passthrough", "mock": {"faults": {"upstream": true}},
    "guard": {"detectors": {"email": "mask"}, "reversible": true, "responses": true}}"#;

const TRANSLATED_CHAOS: &str = r#"{"mode": "passthrough", "mock": {"faults": {"upstream": true}},
    "translate": [{"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages"}]}"#;

const STREAMED: &[u8] =
    br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

/// A chat stream of `deltas`, then a finish chunk and `[DONE]`.
fn chat_stream(deltas: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for delta in deltas {
        let chunk = serde_json::json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": null}]});
        write_event(&mut out, None, &chunk);
    }
    let finish = serde_json::json!({"object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    write_event(&mut out, None, &finish);
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// What a streamed reply did to its client.
#[derive(Debug)]
struct Delivered {
    /// The bytes that went on.
    bytes: Vec<u8>,
    /// Whether the stream's end went on.
    ended: bool,
}

impl Delivered {
    /// The events that went on, as text.
    fn events(&self) -> Vec<String> {
        String::from_utf8(self.bytes.clone())
            .unwrap()
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Forwards `body` with `headers` under `config`, answers with an event stream in pieces of
/// `size` bytes and an empty last piece (as HTTP/1.1 ends a body), and delivers any wake the
/// filter asks for after each piece.
fn stream_through(
    config: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    reply: &[u8],
    size: usize,
) -> (Filter, FakeHost, Delivered) {
    let (mut filter, mut host, status) = forward(config, headers, body);
    assert_eq!(status, BodyStatus::Continue, "{:?}", host.sent);
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    filter.on_response_headers(&mut host, false);
    let mut pieces: Vec<&[u8]> = reply.chunks(size).collect();
    pieces.push(b"");
    let mut delivered = Delivered {
        bytes: Vec::new(),
        ended: false,
    };
    for (index, piece) in pieces.iter().enumerate() {
        if !host.resets.is_empty() {
            break;
        }
        let end = index + 1 == pieces.len();
        host.response_chunk = piece.to_vec();
        let replaced = host.replaced_chunks.len();
        host.paced.clear();
        let status = filter.on_response_body(&mut host, end);
        if status == BodyStatus::Continue {
            match host.replaced_chunks.get(replaced..) {
                Some([.., last]) => delivered.bytes.extend_from_slice(last),
                _ => delivered.bytes.extend_from_slice(piece),
            }
            delivered.ended = end;
        }
        if !host.paced.is_empty() {
            filter.on_scheduled(&mut host, 0);
        }
    }
    filter.on_stream_complete(&mut host);
    (filter, host, delivered)
}

#[test]
fn a_status_fault_is_answered_in_place_of_the_provider() {
    let (_, host, status) = forward(CHAOS, &[("x-llm-edge-fault", "429")], HELLO);
    assert_eq!(status, BodyStatus::StopIterationNoBuffer);
    let reply = host.only_reply();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
    assert!(reply.error_message().contains("gpt-4o"));
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(reply.details, "llm_edge_fault_injected");
    assert_eq!(counted(&host, Counter::Faults), [(labels(&["429"]), 1)]);
    assert_eq!(
        counted(&host, Counter::Requests),
        [(labels(&["chat_completions", "fault"]), 1)]
    );
    assert!(host.forwarded_body.is_none());
}

#[test]
fn every_status_fault_answers_as_the_mock_does() {
    let mock = r#"{"mock": {}}"#;
    for status in crate::mock::faults::FAULT_STATUSES {
        let fault = [("x-llm-edge-fault", status.to_string())];
        let fault: Vec<(&str, &str)> = fault.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (_, forwarded, _) = forward(CHAOS, &fault, HELLO);
        let mocked = post_with(mock, &fault, HELLO);
        let (forwarded, mocked) = (forwarded.only_reply(), mocked.only_reply());
        assert_eq!(
            (forwarded.status, &forwarded.headers, &forwarded.body),
            (mocked.status, &mocked.headers, &mocked.body),
            "{status}"
        );
    }
    for scenario in ["rate-limit", "error"] {
        let (_, host, _) = forward(CHAOS, &[("x-test-scenario", scenario)], HELLO);
        assert!([429, 500].contains(&host.only_reply().status), "{scenario}");
    }
}

#[test]
fn an_anthropic_client_gets_anthropics_envelope() {
    let mut filter = filter_with(CHAOS);
    let mut host = FakeHost::request("POST", "/v1/messages").with_header("x-llm-edge-fault", "503");
    let body =
        br#"{"model":"claude-x","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    post(&mut filter, &mut host, &[body]);
    let reply = host.only_reply();
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.json(),
        serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
}

#[test]
fn rates_and_scenarios_fail_forwarded_requests_too() {
    let rated = r#"{"mode": "passthrough", "mock": {"faults": {"upstream": true,
        "rates": {"503": 1.0}, "seed": 1}}}"#;
    let (_, host, _) = forward(rated, &[], HELLO);
    assert_eq!(host.only_reply().status, 503);
    let scenario = r#"{"mode": "passthrough", "mock": {"faults": {"upstream": true,
        "scenario": {"fail_first": 1, "status": 500}}}}"#;
    let config = FilterConfig::from_json(scenario.as_bytes()).unwrap();
    let context = Arc::new(FilterContext::new(config));
    let statuses: Vec<_> = (0..2)
        .map(|_| {
            let mut filter = Filter::new(Arc::clone(&context));
            let mut host = FakeHost::request("POST", CHAT).with_header("x-llm-edge-scenario", "k");
            post(&mut filter, &mut host, &[HELLO]).pop().unwrap()
        })
        .collect();
    assert_eq!(
        statuses,
        [BodyStatus::StopIterationNoBuffer, BodyStatus::Continue]
    );
}

#[test]
fn without_upstream_the_fault_headers_pass_to_the_provider_untouched() {
    let headers = [
        ("x-llm-edge-fault", "500"),
        ("x-llm-edge-stream-fault", "reset:1"),
        ("x-test-scenario", "junk"),
    ];
    let rated = r#"{"mode": "passthrough", "mock": {"faults": {"rates": {"503": 1.0}}}}"#;
    let reply = chat_stream(&["a", "b"]);
    let (_, host, delivered) = stream_through(rated, &headers, STREAMED, &reply, 5);
    assert!(host.sent.is_empty() && host.resets.is_empty());
    assert_eq!((delivered.bytes, delivered.ended), (reply, true));
    for (name, value) in headers {
        assert_eq!(header_of(&host, name), Some(value.as_bytes()), "{name}");
    }
    assert!(counted(&host, Counter::Faults).is_empty());
}

#[test]
fn with_upstream_the_fault_headers_go_no_further_and_bad_ones_are_refused() {
    let (_, host, _) = stream_through(
        CHAOS,
        &[
            ("x-llm-edge-stream-fault", "truncate:9"),
            ("x-llm-edge-scenario", "k"),
        ],
        STREAMED,
        &chat_stream(&["a"]),
        64,
    );
    assert_eq!(header_of(&host, "x-llm-edge-stream-fault"), None);
    assert_eq!(header_of(&host, "x-llm-edge-scenario"), None);
    for (name, value) in [
        ("x-llm-edge-stream-fault", "explode:1"),
        ("x-llm-edge-stream-fault", "stall:99999999999999999999"),
        ("x-llm-edge-fault", "418"),
        ("x-test-scenario", "junk"),
    ] {
        let (_, host, _) = forward(CHAOS, &[(name, value)], HELLO);
        let reply = host.only_reply();
        assert_eq!(reply.status, 400, "{name}");
        assert!(reply.error_message().contains(name));
    }
}

#[test]
fn truncate_ends_with_the_upstream_after_n_events_at_any_split() {
    let reply = chat_stream(&["one", " two", " three"]);
    for size in [1, 3, 17, reply.len()] {
        let fault = [("x-llm-edge-stream-fault", "truncate:2")];
        let (_, host, delivered) = stream_through(CHAOS, &fault, STREAMED, &reply, size);
        let events = delivered.events();
        assert_eq!(events.len(), 2, "{size}: {events:?}");
        assert!(events[1].contains("two") && delivered.ended, "{size}");
        assert!(!String::from_utf8_lossy(&delivered.bytes).contains("[DONE]"));
        assert_eq!(
            counted(&host, Counter::Faults),
            [(labels(&["truncate"]), 1)]
        );
        assert!(host.resets.is_empty());
    }
}

#[test]
fn reset_resets_once_n_events_went_on() {
    let reply = chat_stream(&["one", " two", " three"]);
    for size in [1, 9, reply.len()] {
        let fault = [("x-llm-edge-stream-fault", "reset:1")];
        let (_, host, delivered) = stream_through(CHAOS, &fault, STREAMED, &reply, size);
        assert_eq!(host.resets, ["llm_edge_fault_injected"], "{size}");
        assert_eq!(delivered.events().len(), 1, "{size}");
        assert!(!delivered.ended);
    }
}

#[test]
fn malformed_inserts_a_broken_event_then_passes_the_rest() {
    let reply = chat_stream(&["one", " two"]);
    let fault = [("x-llm-edge-stream-fault", "malformed:1")];
    let (_, _, delivered) = stream_through(CHAOS, &fault, STREAMED, &reply, 7);
    let first = reply.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let expected = [&reply[..first], MALFORMED_EVENT, &reply[first..]].concat();
    assert_eq!(delivered.bytes, expected);
    assert!(delivered.ended);
    // A stream llm-edge does not otherwise rewrite is touched only where the event goes in.
    let asked =
        br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let (_, host, delivered) = stream_through(CHAOS, &fault, asked, &reply, 7);
    assert_eq!(delivered.bytes, expected);
    assert_eq!(host.replaced_chunks.len(), 1);
}

#[test]
fn stall_sends_nothing_more_and_never_ends() {
    let reply = chat_stream(&["one", " two"]);
    let fault = [("x-llm-edge-stream-fault", "stall:2")];
    let (_, host, delivered) = stream_through(CHAOS, &fault, STREAMED, &reply, 11);
    assert_eq!(delivered.events().len(), 2);
    assert!(!delivered.ended && host.resets.is_empty());
    // Even a fault past the stream's end holds the end back.
    let fault = [("x-llm-edge-stream-fault", "stall:99")];
    let (_, _, delivered) = stream_through(CHAOS, &fault, STREAMED, &reply, 11);
    assert_eq!(delivered.bytes, reply);
    assert!(!delivered.ended);
}

#[test]
fn a_whole_reply_ignores_stream_faults() {
    let fault = [("x-llm-edge-stream-fault", "reset:0")];
    let (mut filter, mut host, _) = forward(CHAOS, &fault, HELLO);
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    filter.on_response_headers(&mut host, false);
    host.response_chunk = br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#.to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::Continue
    );
    assert!(host.resets.is_empty() && host.replaced_chunks.is_empty());
    assert!(counted(&host, Counter::Faults).is_empty());
}

#[test]
fn a_guarded_stream_is_broken_on_the_restored_events_the_client_reads() {
    let email = "ada@example.com";
    let body = format!(
        r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"Mail {email}"}}]}}"#
    );
    let reply = chat_stream(&["Mail [EMA", "IL_1]", " ok"]);
    for size in [1, 8, reply.len()] {
        let fault = [("x-llm-edge-stream-fault", "truncate:2")];
        let (_, _, delivered) =
            stream_through(GUARDED_CHAOS, &fault, body.as_bytes(), &reply, size);
        let events = delivered.events();
        // The guard holds the placeholder back until whole: the client's second event is the
        // restored value, whatever the upstream's events were.
        assert_eq!(events.len(), 2, "{size}: {events:?}");
        assert!(
            events[0].contains("Mail ") && events[1].contains(email),
            "{size}: {events:?}"
        );
        assert!(!events[1].contains("ok"), "{size}: {events:?}");
    }
}

#[test]
fn a_translated_stream_is_broken_on_the_clients_events() {
    let reply = anthropic_stream(&["one", " two"]);
    for (fault, size) in [("truncate:2", 5), ("reset:2", 13), ("stall:2", reply.len())] {
        let headers = [("x-llm-edge-stream-fault", fault)];
        let (_, host, delivered) =
            stream_through(TRANSLATED_CHAOS, &headers, STREAMED, &reply, size);
        let events = delivered.events();
        assert_eq!(events.len(), 2, "{fault}: {events:?}");
        for event in &events {
            let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(chunk["object"], "chat.completion.chunk", "{fault}");
        }
        assert!(events[1].contains("one"), "{fault}: {events:?}");
        assert_eq!(delivered.ended, fault.starts_with("truncate"), "{fault}");
        assert_eq!(host.resets.len(), usize::from(fault.starts_with("reset")));
        if !fault.starts_with("reset") {
            // The upstream's usage is accounted all the same.
            assert!(
                host.metadata
                    .contains(&("completion_tokens".into(), "4".into()))
            );
        }
    }
}
