//! Which requests are ours: paths and the base path, routes' policies, body limits, trailers.

use super::*;

#[test]
fn other_paths_and_query_strings_are_handled_correctly() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/files");
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        HeadersStatus::Continue
    );
    assert_eq!(
        filter.on_request_body(&mut host, true),
        BodyStatus::Continue
    );
    assert_eq!(
        filter.on_request_trailers(&mut host),
        TrailersStatus::Continue
    );
    assert!(host.sent.is_empty());

    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/chat/completions?api-version=1");
    post(&mut filter, &mut host, &[HELLO]);
    assert_eq!(host.only_reply().status, 200);
}

#[test]
fn base_path_moves_the_endpoint() {
    let mut filter = filter_with(r#"{"api_base_path": "/llm"}"#);
    let mut host = FakeHost::request("POST", CHAT);
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        HeadersStatus::Continue
    );

    let mut host = FakeHost::request("POST", "/llm/chat/completions");
    let mut filter = filter_with(r#"{"api_base_path": "/llm"}"#);
    post(&mut filter, &mut host, &[HELLO]);
    assert_eq!(host.only_reply().status, 200);
}

#[test]
fn declared_oversize_body_is_refused_before_it_is_read() {
    let mut filter = filter_with(r#"{"max_request_body_bytes": 100}"#);
    let mut host = FakeHost::request("POST", CHAT).with_header("content-length", "101");
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        HeadersStatus::StopIteration
    );
    assert_eq!(
        filter.on_request_body(&mut host, false),
        BodyStatus::StopIterationNoBuffer
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "request_too_large");
}

#[test]
fn streamed_oversize_body_is_refused_once_it_crosses_the_limit() {
    let mut filter = filter_with(r#"{"max_request_body_bytes": 100}"#);
    let mut host = FakeHost::request("POST", CHAT);
    let statuses = post(
        &mut filter,
        &mut host,
        &[&[b' '; 60], &[b' '; 60], &[b' '; 60]],
    );
    assert_eq!(
        statuses,
        [
            BodyStatus::StopIterationAndBuffer,
            BodyStatus::StopIterationNoBuffer,
            BodyStatus::StopIterationNoBuffer,
            BodyStatus::StopIterationNoBuffer
        ]
    );
    assert_eq!(host.only_reply().status, 413);
}

#[test]
fn buffering_raises_envoys_limit_to_ours() {
    let mut filter = filter_with(r#"{"max_request_body_bytes": 8388608}"#);
    let mut host = FakeHost::request("POST", CHAT);
    filter.on_request_headers(&mut host, false);
    assert_eq!(host.buffer_limit, 8_388_608);
}

#[test]
fn trailers_end_the_body() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    filter.on_request_headers(&mut host, false);
    host.deliver(HELLO);
    assert_eq!(
        filter.on_request_body(&mut host, false),
        BodyStatus::StopIterationAndBuffer
    );
    host.deliver(b"");
    assert_eq!(
        filter.on_request_trailers(&mut host),
        TrailersStatus::StopIteration
    );
    assert_eq!(host.only_reply().status, 200);
}

fn with_route(config: &str, route: &str, body: &[u8]) -> FakeHost {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT);
    host.route_policy = Some(Arc::new(
        crate::filter::route_policy::RoutePolicy::from_json(route.as_bytes()).unwrap(),
    ));
    let status = filter.on_request_headers(&mut host, false);
    if status == HeadersStatus::StopIteration {
        host.deliver(body);
        filter.on_request_body(&mut host, false);
        host.deliver(b"");
        filter.on_request_body(&mut host, true);
    }
    host
}

#[test]
fn routes_can_disable_replace_or_extend_the_policy() {
    let hello = br#"{"model":"m","messages":[{"role":"user","content":"mail a@b.io"}]}"#;
    let disabled = with_route("", r#"{"disabled": true}"#, hello);
    assert!(disabled.sent.is_empty(), "passed through to the upstream");

    let replaced = with_route(
        "",
        r#"{"replace": {"mock": {"content": {"mode": "fixed", "text": "R"}}}}"#,
        hello,
    );
    assert_eq!(
        replaced.only_reply().json()["choices"][0]["message"]["content"],
        "R"
    );

    let extended = with_route(
        "",
        r#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#,
        hello,
    );
    assert_eq!(
        extended.only_reply().json()["choices"][0]["message"]["content"],
        "mail [EMAIL_1]"
    );
}
