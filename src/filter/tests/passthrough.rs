//! The way through: transforms, routing on the model, accounting a reply, the guard both ways.

use super::*;

#[test]
fn passthrough_transforms_routes_on_the_model_and_sends_on() {
    let (_, host, status) = forward(
        PASS,
        &[("x-tenant", "acme"), ("x-llm-edge-model", "forged")],
        br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(status, BodyStatus::Continue);
    assert!(host.sent.is_empty());
    let sent: Value = serde_json::from_slice(host.forwarded_body.as_ref().unwrap()).unwrap();
    assert_eq!(sent["model"], "gpt-4o");
    assert_eq!(
        sent["messages"][0],
        serde_json::json!({"role": "system", "content": "Tenant acme."})
    );
    assert_eq!(header_of(&host, "x-llm-edge-model"), Some(&b"gpt-4o"[..]));
    // Once for the forged header the route was first chosen with, once for the model's.
    assert_eq!(host.route_cache_clears, 2);
}

#[test]
fn passthrough_leaves_other_requests_alone() {
    let mut filter = filter_with(PASS);
    let mut host = FakeHost::request("GET", "/v1/models").with_header("x-llm-edge-model", "forged");
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        HeadersStatus::Continue
    );
    assert_eq!(header_of(&host, "x-llm-edge-model"), None);
    let (_, host, status) = forward(
        r#"{"mode": "passthrough"}"#,
        &[],
        br#"{"model":"m","messages":[]}"#,
    );
    assert_eq!(status, BodyStatus::Continue);
    assert!(
        host.forwarded_body.is_none(),
        "nothing to change, body untouched"
    );
}

#[test]
fn passthrough_accounts_a_json_reply() {
    let (mut filter, mut host, _) = forward(PASS, &[], br#"{"model":"gpt-4","messages":[]}"#);
    host.response_headers = vec![("content-type".into(), b"application/json".to_vec())];
    assert_eq!(
        filter.on_response_headers(&mut host, false),
        HeadersStatus::Continue
    );
    host.response_chunk = br#"{"usage":{"prompt_tokens":7,"#.to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, false),
        BodyStatus::Continue
    );
    host.response_chunk = br#""completion_tokens":5}}"#.to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::Continue
    );
    let metadata: Vec<(&str, &str)> = host
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        metadata,
        [
            ("model", "gpt-4o"),
            ("prompt_tokens", "7"),
            ("completion_tokens", "5"),
            ("total_tokens", "12")
        ]
    );
    assert_eq!(
        counted(&host, Counter::CompletionTokens),
        [(labels(&["gpt-4o"]), 5)]
    );
}

#[test]
fn passthrough_asks_a_stream_for_usage_and_strips_it_from_the_client() {
    let (mut filter, mut host, _) = forward(
        PASS,
        &[],
        br#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
    );
    let sent: Value = serde_json::from_slice(host.forwarded_body.as_ref().unwrap()).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    host.response_headers = vec![
        ("content-type".into(), b"text/event-stream".to_vec()),
        ("content-length".into(), b"999".to_vec()),
    ];
    filter.on_response_headers(&mut host, false);
    assert!(host.response_header("content-length").is_none());
    host.response_chunk =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usa"
            .to_vec();
    filter.on_response_body(&mut host, false);
    host.response_chunk =
        b"ge\":{\"prompt_tokens\":2,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n".to_vec();
    filter.on_response_body(&mut host, true);
    let client_saw: Vec<u8> = host.replaced_chunks.concat();
    assert_eq!(
        client_saw,
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n".to_vec()
    );
    assert!(host.metadata.contains(&("total_tokens".into(), "3".into())));
}

#[test]
fn detections_are_counted_once_per_detector_and_action() {
    let (_, host, _) = forward(
        GUARDED,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"a@x.io b@y.io c@z.io"},{"role":"user","content":"d@w.io"}]}"#,
    );
    assert_eq!(
        counted(&host, Counter::Detections),
        [(labels(&["email", "mask"]), 4)]
    );
}

#[test]
fn the_guard_masks_what_goes_upstream_and_restores_the_reply() {
    let (mut filter, mut host, status) = forward(
        GUARDED,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com key sk-abcdefghijklmnopqrstuvwxyz"}]}"#,
    );
    assert_eq!(status, BodyStatus::Continue);
    let sent = String::from_utf8(host.forwarded_body.clone().unwrap()).unwrap();
    assert!(
        sent.contains("mail [EMAIL_1] key sk-abcdefghijklmnopqrstuvwxyz"),
        "{sent}"
    );
    assert!(!sent.contains("bob@corp.com"));
    assert_eq!(
        counted(&host, Counter::Detections),
        [
            (labels(&["email", "mask"]), 1),
            (labels(&["openai_key", "monitor"]), 1)
        ]
    );

    host.response_headers = vec![("content-type".into(), b"application/json".to_vec())];
    assert_eq!(
        filter.on_response_headers(&mut host, false),
        HeadersStatus::StopIteration
    );
    host.response_chunk =
        br#"{"choices":[{"message":{"content":"I wrote to [EMAIL_1]."}}]}"#.to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, false),
        BodyStatus::StopIterationAndBuffer
    );
    host.response_buffered = std::mem::take(&mut host.response_chunk);
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::Continue
    );
    let client_saw: Value = serde_json::from_slice(host.replaced_body.as_ref().unwrap()).unwrap();
    assert_eq!(
        client_saw["choices"][0]["message"]["content"],
        "I wrote to bob@corp.com."
    );
}

#[test]
fn a_guarded_reply_with_nothing_to_restore_or_mask_passes_as_it_came() {
    let (mut filter, mut host, _) = forward(
        GUARDED,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"mail bob@corp.com"}]}"#,
    );
    host.response_headers = vec![("content-type".into(), b"application/json".to_vec())];
    filter.on_response_headers(&mut host, false);
    host.response_buffered =
        b"{ \"choices\": [{\"message\": {\"content\": \"Sent.\"}}] }\n".to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::Continue
    );
    assert_eq!(host.replaced_body, None);
}

#[test]
fn a_reject_detector_refuses_the_request_without_echoing_the_value() {
    let (_, host, status) = forward(
        GUARDED,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"card 4111 1111 1111 1111"}]}"#,
    );
    assert_eq!(status, BodyStatus::StopIterationNoBuffer);
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "sensitive_data_detected");
    assert!(reply.error_message().contains("'credit_card'"));
    assert!(!String::from_utf8_lossy(&reply.body).contains("4111"));
    assert!(host.forwarded_body.is_none());
}
