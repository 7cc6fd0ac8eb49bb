//! Answering locally: endpoints and methods, pacing, faults, stats, the transforms and the guard
//! before the mock, failing closed.

use super::*;
use crate::filter::mock_path::{ITL_HEADER, QUEUE_HEADER, TTFT_HEADER};

#[test]
fn answers_a_chat_completion_from_a_chunked_body() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    let (head, tail) = HELLO.split_at(20);
    let statuses = post(&mut filter, &mut host, &[head, tail]);
    assert_eq!(
        statuses,
        [
            BodyStatus::StopIterationAndBuffer,
            BodyStatus::StopIterationAndBuffer,
            BodyStatus::StopIterationNoBuffer
        ]
    );
    let reply = host.only_reply();
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (200, "llm_edge_mock")
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "hello");
    assert!(filter.has_answered());
}

#[test]
fn wrong_method_is_405_with_allow() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("GET", CHAT);
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        HeadersStatus::StopIteration
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    assert_eq!(
        reply.json()["error"]["message"],
        "Invalid method for URL (GET /v1/chat/completions)"
    );
}

#[test]
fn a_post_without_body_is_invalid_json() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        HeadersStatus::StopIteration
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn bad_input_gets_the_openai_error() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    post(
        &mut filter,
        &mut host,
        &[br#"{"model": 1, "messages": []}"#],
    );
    let reply = host.only_reply();
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (400, "llm_edge_invalid_request")
    );
    assert_eq!(reply.json()["error"]["param"], "model");
}

const PACED: &str = r#"{"mock": {"latency": {"time_to_first_token_ms": 50, "inter_token_ms": 5}}}"#;

#[test]
fn a_paced_stream_sends_headers_now_and_each_step_when_scheduled() {
    let mut filter = filter_with(PACED);
    let mut host = FakeHost::request("POST", CHAT);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;
    post(&mut filter, &mut host, &[body]);
    assert!(host.sent.is_empty());
    let (status, headers) = host.stream_head.clone().unwrap();
    assert_eq!(status, 200);
    assert!(headers.contains(&("content-type".into(), "text/event-stream".into())));
    let ms = Duration::from_millis;
    assert_eq!(host.paced, [ms(50), ms(55), ms(60)]);
    assert!(filter.has_answered());

    for event in 0..3 {
        filter.on_scheduled(&mut host, event);
    }
    let ends: Vec<bool> = host.stream_data.iter().map(|(_, end)| *end).collect();
    assert_eq!(ends, [false, false, true]);
    let stream: Vec<u8> = host
        .stream_data
        .iter()
        .flat_map(|(d, _)| d.clone())
        .collect();
    assert!(stream.ends_with(b"data: [DONE]\n\n"));
    // Late or unknown events do nothing.
    filter.on_scheduled(&mut host, 3);
    filter.on_scheduled(&mut host, 0);
    assert_eq!(host.stream_data.len(), 3);
}

#[test]
fn a_paced_whole_reply_waits_for_the_last_token() {
    let mut filter = filter_with(PACED);
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[HELLO]);
    assert!(host.sent.is_empty() && host.stream_head.is_none());
    assert_eq!(host.paced, [Duration::from_millis(50)]);
    assert!(!filter.has_answered());
    filter.on_scheduled(&mut host, 0);
    assert_eq!(
        host.only_reply().json()["choices"][0]["message"]["content"],
        "hello"
    );
    assert!(filter.has_answered());
}

#[test]
fn headers_override_the_configured_latency() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT)
        .with_header(TTFT_HEADER, "20")
        .with_header(ITL_HEADER, "3");
    let body =
        br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two"}]}"#;
    post(&mut filter, &mut host, &[body]);
    assert_eq!(
        host.paced,
        [Duration::from_millis(20), Duration::from_millis(23)]
    );
}

#[test]
fn a_bad_latency_header_is_a_400() {
    for value in ["soon", "-1", "600001"] {
        let mut filter = filter_with("");
        let mut host = FakeHost::request("POST", CHAT).with_header(ITL_HEADER, value);
        post(&mut filter, &mut host, &[HELLO]);
        let reply = host.only_reply();
        assert_eq!(reply.status, 400);
        assert!(reply.error_message().contains(ITL_HEADER));
    }
}

#[test]
fn zero_latency_answers_at_once() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    let body = br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    post(&mut filter, &mut host, &[body]);
    assert!(host.paced.is_empty() && host.stream_head.is_none());
    assert_eq!(
        host.only_reply().header("content-type"),
        Some("text/event-stream")
    );
}

#[test]
fn test_scenarios_answer_rate_limit_and_error() {
    let host = post_with("", &[("x-test-scenario", "rate-limit")], HELLO);
    let reply = host.only_reply();
    assert_eq!(
        (reply.status, reply.details.as_str()),
        (429, "llm_edge_fault_injected")
    );
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");

    let host = post_with("", &[("x-test-scenario", "Error")], HELLO);
    assert_eq!(host.only_reply().status, 500);
}

#[test]
fn a_fault_status_header_answers_that_status() {
    let host = post_with("", &[("x-llm-edge-fault", "404")], HELLO);
    let reply = host.only_reply();
    assert_eq!(reply.status, 404);
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`gpt-4o`")
    );
}

#[test]
fn unknown_fault_headers_are_a_400_naming_the_header() {
    for (name, value) in [
        ("x-test-scenario", "meteor"),
        ("x-llm-edge-fault", "418"),
        ("x-llm-edge-stream-fault", "explode:1"),
    ] {
        let host = post_with("", &[(name, value)], HELLO);
        let reply = host.only_reply();
        assert_eq!(reply.status, 400);
        assert!(reply.error_message().contains(name));
    }
}

#[test]
fn configured_rates_fail_requests() {
    let config = r#"{"mock": {"faults": {"rates": {"503": 1.0}, "seed": 1}}}"#;
    assert_eq!(post_with(config, &[], HELLO).only_reply().status, 503);
}

const STREAM_BODY: &[u8] =
    br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;

fn stream_text(host: &FakeHost) -> String {
    host.stream_data
        .iter()
        .map(|(data, _)| String::from_utf8_lossy(data))
        .collect()
}

#[test]
fn truncate_ends_the_stream_early_without_done() {
    let host = post_with(
        "",
        &[("x-llm-edge-stream-fault", "truncate:2")],
        STREAM_BODY,
    );
    assert!(host.sent.is_empty());
    let ends: Vec<bool> = host.stream_data.iter().map(|(_, end)| *end).collect();
    assert_eq!(ends, [false, true]);
    assert!(!stream_text(&host).contains("[DONE]"));
    assert!(host.resets.is_empty());
}

#[test]
fn reset_and_stall_stop_after_n_steps() {
    let host = post_with("", &[("x-llm-edge-stream-fault", "reset:1")], STREAM_BODY);
    assert_eq!(host.stream_data.len(), 1);
    assert_eq!(host.resets, ["llm_edge_fault_injected"]);

    let host = post_with("", &[("x-llm-edge-stream-fault", "stall:1")], STREAM_BODY);
    assert_eq!(host.stream_data, [(host.stream_data[0].0.clone(), false)]);
    assert!(host.resets.is_empty());
}

#[test]
fn malformed_inserts_a_broken_event_and_carries_on() {
    let host = post_with(
        "",
        &[("x-llm-edge-stream-fault", "malformed:1")],
        STREAM_BODY,
    );
    let text = stream_text(&host);
    assert!(text.contains("chat.completion.ch\n\n"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(host.stream_data.last().unwrap().1);
}

#[test]
fn a_paced_reset_happens_after_the_last_kept_step() {
    let mut filter = filter_with(PACED);
    let mut host =
        FakeHost::request("POST", CHAT).with_header("x-llm-edge-stream-fault", "reset:2");
    post(&mut filter, &mut host, &[STREAM_BODY]);
    assert_eq!(host.paced.len(), 2);
    filter.on_scheduled(&mut host, 0);
    assert!(host.resets.is_empty());
    filter.on_scheduled(&mut host, 1);
    assert_eq!(host.resets.len(), 1);
    assert!(host.stream_data.iter().all(|(_, end)| !end));
}

#[test]
fn stream_faults_do_not_touch_whole_replies() {
    let host = post_with("", &[("x-llm-edge-stream-fault", "reset:0")], HELLO);
    assert_eq!(host.only_reply().status, 200);
    assert!(host.resets.is_empty());
}

#[test]
fn answered_requests_count_outcome_and_tokens_by_model() {
    let host = post_with("", &[], HELLO);
    assert_eq!(
        counted(&host, Counter::Requests),
        [(labels(&["chat_completions", "ok"]), 1)]
    );
    assert_eq!(
        counted(&host, Counter::PromptTokens),
        [(labels(&["gpt-4o"]), 8)]
    );
    assert_eq!(
        counted(&host, Counter::CompletionTokens),
        [(labels(&["gpt-4o"]), 1)]
    );

    let host = post_with("", &[], b"{");
    assert_eq!(
        counted(&host, Counter::Requests),
        [(labels(&["chat_completions", "invalid_request"]), 1)]
    );
}

#[test]
fn faults_are_counted_by_type() {
    let host = post_with("", &[("x-test-scenario", "rate-limit")], HELLO);
    assert_eq!(counted(&host, Counter::Faults), [(labels(&["429"]), 1)]);
    assert_eq!(
        counted(&host, Counter::Requests),
        [(labels(&["chat_completions", "fault"]), 1)]
    );
    let host = post_with("", &[("x-llm-edge-stream-fault", "reset:1")], STREAM_BODY);
    assert_eq!(counted(&host, Counter::Faults), [(labels(&["reset"]), 1)]);
}

#[test]
fn streams_record_time_to_first_token() {
    let host = post_with("", &[], STREAM_BODY);
    assert_eq!(host.recorded.len(), 1);
    let mut filter = filter_with(PACED);
    let mut host = FakeHost::request("POST", CHAT);
    post(&mut filter, &mut host, &[STREAM_BODY]);
    assert!(host.recorded.is_empty());
    filter.on_scheduled(&mut host, 0);
    assert_eq!(host.recorded.len(), 1);
    assert_eq!(host.recorded[0].0, Histogram::TimeToFirstTokenMs);
}

#[test]
fn fail_closed_sends_500_once() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", CHAT);
    filter.on_request_headers(&mut host, false);
    filter.fail_closed(&mut host);
    filter.fail_closed(&mut host);
    let reply = host.only_reply();
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json()["error"]["type"], "server_error");
}

fn get(config: &str, path: &str) -> FakeHost {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("GET", path);
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        HeadersStatus::StopIteration
    );
    host
}

const MODELS: &str = r#"{"mock": {"models": ["gpt-4o", "gpt-4o-mini"], "strict_models": true,
                                  "model_aliases": {"gpt-4": "gpt-4o"}}}"#;

#[test]
fn models_are_listed_and_retrieved() {
    let host = get(MODELS, "/v1/models");
    let ids: Vec<Value> = host.only_reply().json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(
        get(MODELS, "/v1/models/gpt-4o").only_reply().json()["id"],
        "gpt-4o"
    );
    let missing = get(MODELS, "/v1/models/llama");
    assert_eq!(missing.only_reply().status, 404);
    assert_eq!(
        missing.only_reply().json()["error"]["code"],
        "model_not_found"
    );
    assert_eq!(get("", "/v1/models/anything").only_reply().status, 200);
    assert_eq!(
        counted(&missing, Counter::Requests),
        [(labels(&["models", "invalid_request"]), 1)]
    );
}

#[test]
fn get_only_endpoints_refuse_post() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/models");
    filter.on_request_headers(&mut host, false);
    let reply = host.only_reply();
    assert_eq!((reply.status, reply.header("allow")), (405, Some("GET")));
}

#[test]
fn strict_models_refuse_unknown_models_and_aliases_answer_as_their_target() {
    let llama = br#"{"model":"llama","messages":[{"role":"user","content":"hi"}]}"#;
    let host = post_with(MODELS, &[], llama);
    assert_eq!(host.only_reply().status, 404);
    assert!(host.only_reply().error_message().contains("`llama`"));

    let alias = br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#;
    let host = post_with(MODELS, &[], alias);
    assert_eq!(host.only_reply().json()["model"], "gpt-4o");
}

#[test]
fn embeddings_are_answered_and_counted() {
    let mut filter = filter_with("");
    let mut host = FakeHost::request("POST", "/v1/embeddings");
    post(
        &mut filter,
        &mut host,
        &[br#"{"model":"text-embedding-3-small","input":"hello world"}"#],
    );
    let reply = host.only_reply();
    assert_eq!(
        reply.json()["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .len(),
        1536
    );
    assert_eq!(
        counted(&host, Counter::Requests),
        [(labels(&["embeddings", "ok"]), 1)]
    );
    assert_eq!(
        counted(&host, Counter::PromptTokens),
        [(labels(&["text-embedding-3-small"]), 2)]
    );
}

#[test]
fn mock_mode_runs_the_transforms_first() {
    let config = r#"{"transform": {"model_aliases": {"gpt-4": "gpt-4o"},
                     "system_prompts": [{"position": "prepend", "content": "S"}]}}"#;
    let host = post_with(
        config,
        &[],
        br#"{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}"#,
    );
    let reply = host.only_reply().json();
    assert_eq!(reply["model"], "gpt-4o");
    assert_eq!(reply["choices"][0]["message"]["content"], "hi");
    // 3 + 2 * (3 + 1 for the role) + "S" + "hi"
    assert_eq!(reply["usage"]["prompt_tokens"], 13);
}

#[test]
fn in_mock_mode_echo_shows_the_masked_request() {
    let config = r#"{"guard": {"detectors": {"email": "mask"}}}"#;
    let host = post_with(
        config,
        &[],
        br#"{"model":"m","messages":[{"role":"user","content":"me: a@b.io"}]}"#,
    );
    assert_eq!(
        host.only_reply().json()["choices"][0]["message"]["content"],
        "me: [EMAIL_1]"
    );
}

/// A loaded model: one place, one waiting, a second to the first token.
const LOADED: &str = r#"{"mock": {"latency": {"time_to_first_token_ms": 1000, "inter_token_ms": 10},
    "load": {"max_concurrent": 1, "max_queue": 1, "metrics_path": "/metrics"}}}"#;

fn shared(config: &str) -> Arc<FilterContext> {
    Arc::new(FilterContext::new(
        FilterConfig::from_json(config.as_bytes()).unwrap(),
    ))
}

fn stream_on(context: &Arc<FilterContext>, path: &str, body: &[u8]) -> (Filter, FakeHost) {
    let mut filter = Filter::new(Arc::clone(context));
    let mut host = FakeHost::request("POST", path);
    post(&mut filter, &mut host, &[body]);
    (filter, host)
}

const STREAMED: &[u8] =
    br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#;

fn queue_ms(host: &FakeHost) -> u64 {
    let (_, headers) = host.stream_head.as_ref().unwrap();
    let (_, value) = headers.iter().find(|(n, _)| n == QUEUE_HEADER).unwrap();
    value.parse().unwrap()
}

#[test]
fn a_loaded_model_queues_beyond_its_places_and_refuses_beyond_its_queue() {
    let context = shared(LOADED);
    let (first, first_host) = stream_on(&context, CHAT, STREAMED);
    assert_eq!(queue_ms(&first_host), 0);
    let ms = Duration::from_millis;
    assert_eq!(first_host.paced, [ms(1000), ms(1010), ms(1020)]);
    let (_second, second_host) = stream_on(&context, CHAT, STREAMED);
    // It waits for the first to end (about 1020 ms after it came), then takes as long.
    let wait = queue_ms(&second_host);
    assert!((900..=1020).contains(&wait), "{wait}");
    // Its first token is due a second after its wait (the header rounds the wait down).
    let first_token = second_host.paced[0];
    assert!(first_token >= ms(wait + 1000) && first_token < ms(wait + 1001));
    let (_, refused) = stream_on(&context, CHAT, STREAMED);
    let reply = refused.only_reply();
    assert_eq!(reply.status, 429);
    assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
    let messages =
        br#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, anthropic) = stream_on(&context, "/v1/messages", messages);
    assert_eq!(
        anthropic.only_reply().json()["error"]["type"],
        "rate_limit_error"
    );
    // The first stream's client goes: its place is free for the next.
    drop(first);
    let (_, next) = stream_on(&context, CHAT, STREAMED);
    assert_eq!(
        next.stream_head.as_ref().map(|(status, _)| *status),
        Some(200)
    );
}

#[test]
fn the_metrics_path_answers_vllms_metrics_and_only_with_a_load() {
    let context = shared(LOADED);
    let (_running, _) = stream_on(&context, CHAT, STREAMED);
    let mut filter = Filter::new(Arc::clone(&context));
    let mut host = FakeHost::request("GET", "/metrics?name=x");
    assert_eq!(
        filter.on_request_headers(&mut host, true),
        HeadersStatus::StopIteration
    );
    let reply = host.only_reply();
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body.clone()).unwrap();
    assert!(text.contains("vllm:num_requests_running{model_name=\"gpt-4o\"} 1.0"));
    // Another method, or a listener without a load, leaves the path alone.
    let mut post = FakeHost::request("POST", "/metrics");
    let mut filter = Filter::new(Arc::clone(&context));
    assert_eq!(
        filter.on_request_headers(&mut post, true),
        HeadersStatus::Continue
    );
    let mut plain = filter_with("");
    let mut host = FakeHost::request("GET", "/metrics");
    assert_eq!(
        plain.on_request_headers(&mut host, true),
        HeadersStatus::Continue
    );
}

#[test]
fn a_repeated_prompt_reports_cached_tokens() {
    let context = shared(r#"{"mock": {"load": {}}}"#);
    let long = "word ".repeat(200);
    let body = format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{long}"}}]}}"#);
    let cached = |host: &FakeHost| {
        host.only_reply().json()["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
    };
    let (_, first) = stream_on(&context, CHAT, body.as_bytes());
    assert_eq!(cached(&first), 0);
    let (_, second) = stream_on(&context, CHAT, body.as_bytes());
    let prompt = second.only_reply().json()["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    assert!((1..prompt).contains(&cached(&second)));
    assert_eq!(cached(&second) % 16, 0);
}

#[test]
fn a_scenario_fails_its_first_requests_then_succeeds() {
    let context = shared(r#"{"mock": {"faults": {"scenario": {"fail_first": 2, "status": 503}}}}"#);
    let status = |key: &str| {
        let mut filter = Filter::new(Arc::clone(&context));
        let mut host = FakeHost::request("POST", CHAT).with_header("x-llm-edge-scenario", key);
        post(&mut filter, &mut host, &[HELLO]);
        host.only_reply().status
    };
    let statuses: Vec<u16> = ["a", "a", "b", "a", "b", "b"].map(status).to_vec();
    assert_eq!(statuses, [503, 503, 503, 200, 503, 200]);
    let long = "k".repeat(300);
    assert_eq!(status(&long), 400);
}
