//! Translated pass-through: the request goes up in the upstream's API, to its path and with its
//! headers; the reply comes down in the client's, guarded as the client reads it.

use super::*;
use crate::filter::route_policy::RoutePolicy;

const TO_ANTHROPIC: &str = r#"{"mode": "passthrough", "translate": [
    {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
     "headers": {"anthropic-version": "2023-06-01"}}]}"#;

const GUARDED_TO_ANTHROPIC: &str = r#"{"mode": "passthrough",
    "guard": {"detectors": {"email": "mask"}, "reversible": true, "responses": true},
    "translate": [{"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages"}]}"#;

fn forwarded(host: &FakeHost) -> Value {
    serde_json::from_slice(host.forwarded_body.as_ref().expect("a body sent on")).unwrap()
}

/// The text a chat client reads from a stream.
fn chat_text(stream: &[u8]) -> String {
    let stream = String::from_utf8(stream.to_vec()).unwrap();
    let mut text = String::new();
    for event in stream.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event
            .strip_prefix("data: ")
            .expect("chat chunks are data alone");
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        text.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert!(stream.ends_with("data: [DONE]\n\n"));
    text
}

#[test]
fn a_translated_request_goes_to_the_upstreams_path_in_its_api() {
    let (_, host, status) = forward(TO_ANTHROPIC, &[], HELLO);
    assert_eq!(status, BodyStatus::Continue);
    assert_eq!(
        forwarded(&host),
        serde_json::json!({"model": "gpt-4o", "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]})
    );
    assert_eq!(header_of(&host, ":path"), Some(&b"/v1/messages"[..]));
    assert_eq!(
        header_of(&host, "anthropic-version"),
        Some(&b"2023-06-01"[..])
    );
    assert!(
        host.route_cache_clears >= 1,
        "the route is chosen again on the new path"
    );
}

#[test]
fn a_plain_conversation_goes_up_as_written_and_any_other_the_full_way() {
    // The plain way copies the client's text as written, escapes and all; the full way decodes
    // it and writes it again. The upstream reads the same request either way.
    let plain =
        br#"{"model":"m","messages":[{"role":"user","content":"it\u2019s"}],"stream":true}"#;
    let with_stop = br#"{"model":"m","messages":[{"role":"user","content":"it\u2019s"}],"stream":true,"stop":"x"}"#;
    for (body, as_written) in [(&plain[..], true), (&with_stop[..], false)] {
        let (_, host, status) = forward(TO_ANTHROPIC, &[], body);
        assert_eq!(status, BodyStatus::Continue);
        let sent = host.forwarded_body.clone().unwrap();
        let sent = String::from_utf8(sent).unwrap();
        assert_eq!(sent.contains(r"it\u2019s"), as_written, "{sent}");
        let sent: Value = serde_json::from_str(&sent).unwrap();
        assert_eq!(sent["messages"][0]["content"][0]["text"], "it\u{2019}s");
        assert_eq!(sent["stream"], true);
        assert_eq!(header_of(&host, ":path"), Some(&b"/v1/messages"[..]));
        assert_eq!(
            header_of(&host, "anthropic-version"),
            Some(&b"2023-06-01"[..])
        );
    }
}

#[test]
fn a_guarded_translated_stream_restores_a_value_split_at_any_byte() {
    let email = "ada@example.com";
    let body = format!(
        r#"{{"model":"m","stream":true,"messages":[{{"role":"user","content":"Mail {email}"}}]}}"#
    );
    let reply = anthropic_stream(&["Mail [EMA", "IL_1] ok"]);
    for size in [1, 7, 64, reply.len()] {
        let (mut filter, mut host, _) = forward(GUARDED_TO_ANTHROPIC, &[], body.as_bytes());
        let sent = forwarded(&host).to_string();
        assert!(
            !sent.contains(email) && sent.contains("[EMAIL_1]"),
            "{sent}"
        );
        host.response_headers = vec![
            (":status".into(), b"200".to_vec()),
            ("content-type".into(), b"text/event-stream".to_vec()),
            ("content-length".into(), b"999".to_vec()),
        ];
        assert_eq!(
            filter.on_response_headers(&mut host, false),
            HeadersStatus::Continue
        );
        assert_eq!(host.response_header("content-length"), None);
        let pieces: Vec<&[u8]> = reply.chunks(size).collect();
        for (i, piece) in pieces.iter().enumerate() {
            host.response_chunk = piece.to_vec();
            filter.on_response_body(&mut host, i + 1 == pieces.len());
        }
        assert_eq!(
            chat_text(&host.replaced_chunks.concat()),
            format!("Mail {email} ok"),
            "{size}"
        );
        let metadata: Vec<(&str, &str)> = host
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            metadata.contains(&("prompt_tokens", "9"))
                && metadata.contains(&("completion_tokens", "4"))
        );
    }
}

#[test]
fn an_upstream_error_comes_back_in_the_clients_envelope_and_status() {
    let (mut filter, mut host, _) = forward(TO_ANTHROPIC, &[], HELLO);
    host.response_headers = vec![
        (":status".into(), b"529".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    assert_eq!(
        filter.on_response_headers(&mut host, false),
        HeadersStatus::StopIteration
    );
    host.response_chunk =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Busy."}}"#.to_vec();
    assert_eq!(
        filter.on_response_body(&mut host, true),
        BodyStatus::Continue
    );
    assert_eq!(host.response_header(":status"), Some(&b"503"[..]));
    let body: Value = serde_json::from_slice(host.replaced_body.as_ref().unwrap()).unwrap();
    assert_eq!(body["error"]["message"], "Busy.");
    assert_eq!(body["error"]["type"], "server_error");
}

#[test]
fn a_route_extends_the_listener_with_a_translation() {
    let policy = RoutePolicy::from_json(
        br#"{"extend": {"translate": [{"client": "chat", "upstream": "messages", "upstream_path": "/anthropic/v1/messages"}]}}"#,
    )
    .unwrap();
    let mut filter = filter_with(r#"{"mode": "passthrough"}"#);
    let mut host = FakeHost::request("POST", CHAT);
    host.route_policy = Some(Arc::new(policy));
    post(&mut filter, &mut host, &[HELLO]);
    assert_eq!(
        header_of(&host, ":path"),
        Some(&b"/anthropic/v1/messages"[..])
    );
    assert_eq!(forwarded(&host)["max_tokens"], 4096);
    let bad =
        RoutePolicy::from_json(br#"{"extend": {"translate": [{"client": "chat"}]}}"#).unwrap_err();
    assert!(bad.field.starts_with("extend.translate"), "{bad}");
}

#[test]
fn an_untranslatable_request_is_refused_in_the_clients_envelope() {
    let config = r#"{"mode": "passthrough", "translate": [
        {"client": "messages", "upstream": "chat", "upstream_path": "/v1/chat/completions"}]}"#;
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", "/v1/messages");
    post(&mut filter, &mut host, &[br#"{"model":"m","max_tokens":5,"stop_sequences":["a","b","c","d","e"],"messages":[{"role":"user","content":"hi"}]}"#]);
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    let body = reply.json();
    assert_eq!(body["type"], "error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stop_sequences")
    );
    assert!(host.forwarded_body.is_none());
}
