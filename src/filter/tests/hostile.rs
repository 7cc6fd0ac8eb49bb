//! Hostile requests and replies through the filter: path aliases, forged model headers, replies
//! llm-edge cannot read, empty and oversized guarded replies, bad model names.

use super::*;

/// Runs the request headers of `path` through a filter of `config`.
fn headers_of(config: &str, method: &str, path: &str) -> (Filter, FakeHost, HeadersStatus) {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request(method, path).with_header("x-llm-edge-model", "forged");
    let status = filter.on_request_headers(&mut host, false);
    (filter, host, status)
}

#[test]
fn an_aliased_path_is_claimed_and_sent_upstream_canonically() {
    for alias in [
        "/v1/chat/%63ompletions?api-version=1",
        "/v1/chat%2Fcompletions?api-version=1",
        "//v1/chat/completions/?api-version=1",
        "/V1/chat/completions;x=1?api-version=1",
        "/v1/x/../chat/./completions?api-version=1",
    ] {
        let (_, host, status) = headers_of(PASS, "POST", alias);
        assert_eq!(status, HeadersStatus::StopIteration, "{alias}: claimed");
        assert_eq!(
            header_of(&host, ":path"),
            Some(&b"/v1/chat/completions?api-version=1"[..]),
            "{alias}"
        );
        assert_eq!(header_of(&host, "x-llm-edge-model"), None);
        assert_eq!(host.route_cache_clears, 1, "routed again on the new path");
    }
    let (_, host, _) = headers_of(PASS, "POST", "/v1/chat/completions");
    assert_eq!(
        header_of(&host, ":path"),
        Some(&b"/v1/chat/completions"[..])
    );
}

#[test]
fn a_forged_model_header_is_removed_on_every_path() {
    for (config, path) in [
        (PASS, "/v1/files"),
        (PASS, "/v1/models"),
        ("", "/v1/audio/speech"),
        (r#"{"mode": "passthrough"}"#, "/health"),
    ] {
        let mut filter = filter_with(config);
        let mut host = FakeHost::request("GET", path).with_header("x-llm-edge-model", "forged");
        filter.on_request_headers(&mut host, true);
        assert_eq!(header_of(&host, "x-llm-edge-model"), None, "{path}");
        assert_eq!(
            host.route_cache_clears, 1,
            "{path}: routed again without it"
        );
    }
    let mut filter = filter_with(PASS);
    let mut host = FakeHost::request("GET", "/v1/files");
    filter.on_request_headers(&mut host, true);
    assert_eq!(
        host.route_cache_clears, 0,
        "nothing forged, nothing to reroute"
    );
}

#[test]
fn unclaimed_paths_pass_or_get_openais_404() {
    let (_, host, status) = headers_of(r#"{"mode": "passthrough"}"#, "POST", "/v1/files");
    assert_eq!(status, HeadersStatus::Continue);
    assert!(host.sent.is_empty());
    let refusing = r#"{"mode": "passthrough", "unclaimed_paths": "refuse"}"#;
    let (_, host, status) = headers_of(refusing, "POST", "/v1/files?x=1");
    assert_eq!(status, HeadersStatus::StopIteration);
    let reply = host.only_reply();
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "unknown_url");
    assert_eq!(reply.error_message(), "Invalid URL (POST /v1/files?x=1)");
    let (_, host, status) = headers_of(refusing, "POST", "/v1/chat/completions");
    assert_eq!(status, HeadersStatus::StopIteration);
    assert!(host.sent.is_empty(), "claimed paths are not refused");
}

#[test]
fn forwarded_requests_ask_for_an_identity_reply() {
    let (_, host, _) = forward(PASS, &[("accept-encoding", "gzip, br")], HELLO);
    assert_eq!(header_of(&host, "accept-encoding"), Some(&b"identity"[..]));
}

/// A guarded request forwarded, and the reply's headers seen with `headers`.
fn guarded_reply(
    headers: &[(&str, &str)],
    end_of_stream: bool,
) -> (Filter, FakeHost, HeadersStatus) {
    let (mut filter, mut host, _) = forward(
        GUARDED,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com"}]}"#,
    );
    host.response_headers = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
        .collect();
    let status = filter.on_response_headers(&mut host, end_of_stream);
    (filter, host, status)
}

#[test]
fn a_reply_in_an_encoding_it_cannot_read_fails_closed_when_guarded() {
    for coding in ["gzip", "br", "GZIP", "deflate, gzip", "zstd"] {
        let headers = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-encoding", coding),
        ];
        let (filter, host, status) = guarded_reply(&headers, false);
        assert_eq!(status, HeadersStatus::StopIteration, "{coding}");
        let reply = host.only_reply();
        assert_eq!(reply.status, 502);
        assert_eq!(reply.json()["error"]["code"], "upstream_reply_unreadable");
        assert!(filter.has_answered());
    }
    let identity = [
        ("content-type", "application/json"),
        ("content-encoding", " Identity "),
    ];
    let (_, host, status) = guarded_reply(&identity, false);
    assert_eq!(status, HeadersStatus::StopIteration, "held to be guarded");
    assert!(host.sent.is_empty());
    // Nothing to guard or charge: an encoded reply passes, uncounted.
    let (mut filter, mut host, _) = forward(r#"{"mode": "passthrough"}"#, &[], HELLO);
    host.response_headers = vec![("content-encoding".into(), b"gzip".to_vec())];
    assert_eq!(
        filter.on_response_headers(&mut host, false),
        HeadersStatus::Continue
    );
    assert!(host.sent.is_empty());
}

#[test]
fn an_empty_guarded_reply_goes_on_at_once() {
    for status in ["200", "204", "500"] {
        let headers = [(":status", status), ("content-type", "application/json")];
        let (filter, host, status) = guarded_reply(&headers, true);
        assert_eq!(status, HeadersStatus::Continue);
        assert!(host.sent.is_empty());
        assert!(filter.has_answered(), "accounted, nothing left to wait for");
    }
}

#[test]
fn a_guarded_reply_over_the_limit_is_a_502_not_envoys_plain_text() {
    let (mut filter, mut host, _) = forward(
        r#"{"mode": "passthrough", "max_response_body_bytes": 64,
            "guard": {"detectors": {"email": "mask"}, "responses": true}}"#,
        &[],
        HELLO,
    );
    host.response_headers = vec![("content-type".into(), b"application/json".to_vec())];
    assert_eq!(
        filter.on_response_headers(&mut host, false),
        HeadersStatus::StopIteration
    );
    host.response_chunk = vec![b' '; 40];
    assert_eq!(
        filter.on_response_body(&mut host, false),
        BodyStatus::StopIterationAndBuffer
    );
    host.response_buffered = std::mem::take(&mut host.response_chunk);
    host.response_chunk = vec![b' '; 40];
    assert_eq!(
        filter.on_response_body(&mut host, false),
        BodyStatus::StopIterationNoBuffer
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 502);
    assert!(
        reply
            .error_message()
            .contains("max_response_body_bytes (64 bytes)")
    );
}

#[test]
fn guarded_replies_are_read_whatever_their_content_type_says() {
    for content_type in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
        "application/problem+json",
        "text/json",
        "text/plain",
        "text/html; charset=UTF-8",
    ] {
        let (mut filter, mut host, status) =
            guarded_reply(&[("content-type", content_type)], false);
        assert_eq!(status, HeadersStatus::StopIteration, "{content_type}");
        assert_eq!(
            host.buffer_limit,
            16 << 20,
            "Envoy holds what llm-edge reads"
        );
        host.response_buffered =
            br#"{"choices":[{"message":{"content":"to [EMAIL_1]"}}]}"#.to_vec();
        assert_eq!(
            filter.on_response_body(&mut host, true),
            BodyStatus::Continue
        );
        let body = String::from_utf8(host.replaced_body.clone().unwrap()).unwrap();
        assert!(body.contains("to bob@corp.com"), "{content_type}: {body}");
    }
    // No content type, and a body that is not JSON: guarded as text.
    let (mut filter, mut host, _) = guarded_reply(&[], false);
    host.response_buffered = b"upstream says: to [EMAIL_1]".to_vec();
    filter.on_response_body(&mut host, true);
    assert_eq!(
        host.replaced_body.as_deref(),
        Some(&b"upstream says: to bob@corp.com"[..])
    );
    // Neither JSON nor text: it cannot be read, so it does not pass.
    let (mut filter, mut host, _) = guarded_reply(&[("content-type", "image/png")], false);
    host.response_buffered = vec![0xff, 0xfe, 0x00];
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::StopIterationNoBuffer
    );
    assert_eq!(host.only_reply().status, 502);
}

#[test]
fn a_model_name_with_control_characters_is_openais_400() {
    for model in ["gpt\r\nx-evil: 1", "a\u{0}b", &"m".repeat(300)] {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let body = serde_json::to_vec(&body).unwrap();
        for config in [PASS, r#"{"mode": "passthrough"}"#, ""] {
            let mut filter = filter_with(config);
            let mut host = FakeHost::request("POST", CHAT);
            post(&mut filter, &mut host, &[&body]);
            let reply = host.only_reply();
            assert_eq!(reply.status, 400, "{config}");
            assert_eq!(reply.json()["error"]["param"], "model");
            assert!(host.metadata.is_empty(), "no metadata with the name");
            assert_eq!(header_of(&host, "x-llm-edge-model"), None);
        }
    }
}

#[test]
fn a_panic_while_the_body_is_answered_can_still_fail_closed() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    filter.on_request_headers(&mut host, false);
    host.deliver(HELLO);
    filter.on_request_body(&mut host, false);
    // What a panic inside `body_complete` leaves behind.
    filter.state = State::Deciding;
    assert!(!filter.has_answered());
    filter.fail_closed(&mut host);
    assert_eq!(host.only_reply().status, 500);
}

#[test]
fn embeddings_that_would_exceed_the_reply_ceiling_are_refused_before_they_are_built() {
    let config = r#"{"mock": {"max_reply_bytes": 262144}}"#;
    let inputs = vec!["a"; 2048];
    let body = serde_json::json!({"model": "text-embedding-3-large", "input": inputs});
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", "/v1/embeddings");
    post(
        &mut filter,
        &mut host,
        &[&serde_json::to_vec(&body).unwrap()],
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "reply_too_large");
    let small = serde_json::json!({"model": "text-embedding-3-large", "input": ["a"]});
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", "/v1/embeddings");
    post(
        &mut filter,
        &mut host,
        &[&serde_json::to_vec(&small).unwrap()],
    );
    assert_eq!(host.only_reply().status, 200);
}

#[test]
fn a_key_given_twice_goes_upstream_once_as_it_was_read() {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com"}],
        "messages":[{"role":"user","content":"hi"}],"max_tokens":1,"max_tokens":100000}"#;
    for config in [GUARDED, r#"{"mode": "passthrough"}"#] {
        let (_, host, status) = forward(config, &[], body);
        assert_eq!(status, BodyStatus::Continue);
        let sent = String::from_utf8(host.forwarded_body.clone().expect("rewritten")).unwrap();
        assert!(!sent.contains("bob@corp.com"), "{config}: {sent}");
        assert_eq!(sent.matches("\"messages\"").count(), 1);
        assert_eq!(sent.matches("\"max_tokens\"").count(), 1);
        assert!(sent.contains("\"max_tokens\":100000"));
    }
}

#[test]
fn aliases_an_upstream_serves_are_guarded_in_pass_through() {
    for (alias, upstream) in [
        ("/chat/completions", "/chat/completions"),
        (
            "/openai/deployments/gpt-4o/chat/%63ompletions?api-version=2024-10-21",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        ),
        ("/api//v1/chat/completions/", "/api/v1/chat/completions"),
    ] {
        let mut filter = filter_with(GUARDED);
        let mut host = FakeHost::request("POST", alias);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com"}]}"#;
        post(&mut filter, &mut host, &[body]);
        assert_eq!(
            header_of(&host, ":path"),
            Some(upstream.as_bytes()),
            "{alias}"
        );
        let sent = String::from_utf8(host.forwarded_body.clone().unwrap()).unwrap();
        assert!(!sent.contains("bob@corp.com"), "{alias}");
    }
    // Mock mode answers only under its base path.
    let (_, _, status) = headers_of("", "POST", "/chat/completions");
    assert_eq!(status, HeadersStatus::Continue);
}

#[test]
fn token_counting_is_answered_guarded_and_free() {
    let body =
        br#"{"model":"claude-sonnet-4-6","messages":[{"role":"user","content":"Hello there"}]}"#;
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/messages/count_tokens");
    post(&mut filter, &mut host, &[body]);
    let reply = host.only_reply();
    assert_eq!(reply.status, 200);
    assert!(reply.json()["input_tokens"].as_u64().unwrap() > 0);
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/messages/count_tokens");
    post(&mut filter, &mut host, &[br#"{"model":"m"}"#]);
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["type"], "error", "Anthropic's envelope");
    // Pass-through guards it and reserves nothing.
    let config = r#"{"mode": "passthrough", "guard": {"detectors": {"email": "mask"}},
        "budgets": {"reserve": true, "limits": [{"name": "t", "tokens": 1, "per": "minute", "key": "global"}]}}"#;
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", "/v1/messages/count_tokens");
    let body = br#"{"model":"m","max_tokens":100000,"messages":[{"role":"user","content":"to bob@corp.com"}]}"#;
    post(&mut filter, &mut host, &[body]);
    assert!(host.sent.is_empty(), "not refused by the budget");
    let sent = String::from_utf8(host.forwarded_body.clone().unwrap()).unwrap();
    assert!(sent.contains("[EMAIL_1]"));
}

#[test]
fn a_budget_key_header_given_twice_is_refused() {
    let config = r#"{"budgets": {"limits": [
        {"name": "tenant", "tokens": 100, "per": "minute", "key": {"header": "X-Tenant"}}]}}"#;
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT)
        .with_header("x-tenant", "junk")
        .with_header("x-tenant", "victim");
    post(&mut filter, &mut host, &[HELLO]);
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .error_message()
            .contains("'x-tenant' is given more than once")
    );
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT).with_header("x-tenant", "victim");
    post(&mut filter, &mut host, &[HELLO]);
    assert_eq!(host.only_reply().status, 200);
}
