//! Unit tests of `filter`, kept beside it so the module stays readable.
use super::*;
use crate::accounting::budgets::Need;
use crate::host::pacing::{Pacer, Wakeup};
use crate::host::stats::{Counter, Histogram};
use serde_json::Value;
use std::time::Duration;

mod hostile;

/// An in-memory stream: request headers, body chunks, and what the filter sent back.
#[derive(Default)]
struct FakeHost {
    headers: Vec<(String, Vec<u8>)>,
    buffered: Vec<u8>,
    received: Vec<u8>,
    buffer_limit: u64,
    sent: Vec<Sent>,
    /// A streamed reply: its status and headers, then its data pieces and end flags.
    stream_head: Option<(u16, Vec<(String, String)>)>,
    stream_data: Vec<(Vec<u8>, bool)>,
    /// The offsets the filter asked to be paced at.
    paced: Vec<Duration>,
    /// Stream resets, by details.
    resets: Vec<String>,
    /// Counter updates: counter, label values, value.
    counted: Vec<(Counter, Vec<String>, u64)>,
    /// Histogram values.
    recorded: Vec<(Histogram, u64)>,
    /// Pass-through: the body sent on, if replaced; route cache clears; the upstream's reply.
    forwarded_body: Option<Vec<u8>>,
    route_cache_clears: usize,
    response_headers: Vec<(String, Vec<u8>)>,
    response_chunk: Vec<u8>,
    /// Response chunks as sent on, when replaced.
    replaced_chunks: Vec<Vec<u8>>,
    metadata: Vec<(String, String)>,
    /// Response bytes Envoy buffered for the filter, and the body that replaced them.
    response_buffered: Vec<u8>,
    replaced_body: Option<Vec<u8>>,
    /// The route's per-route policy.
    route_policy: Option<Arc<crate::filter::route_policy::RoutePolicy>>,
    /// The timer behind `pace`'s handles (the test delivers `on_scheduled` itself).
    pacer: Pacer,
}

#[derive(Debug)]
struct Sent {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    details: String,
}

impl Sent {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().unwrap().to_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl FakeHost {
    fn request(method: &str, path: &str) -> Self {
        Self {
            headers: vec![
                (":method".into(), method.into()),
                (":path".into(), path.into()),
            ],
            buffer_limit: 1024 * 1024,
            ..Self::default()
        }
    }

    fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Delivers one body chunk the way Envoy does: earlier chunks move to the buffer.
    fn deliver(&mut self, chunk: &[u8]) {
        let earlier = std::mem::take(&mut self.received);
        self.buffered.extend_from_slice(&earlier);
        self.received = chunk.to_vec();
    }

    fn only_reply(&self) -> &Sent {
        assert_eq!(
            self.sent.len(),
            1,
            "expected exactly one reply: {:?}",
            self.sent
        );
        &self.sent[0]
    }
}

impl Host for FakeHost {
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
    fn request_header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }
    fn request_body_len(&self) -> usize {
        self.buffered.len() + self.received.len()
    }
    fn read_request_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buffered);
        out.extend_from_slice(&self.received);
    }
    fn ensure_buffer_limit(&mut self, bytes: u64) {
        self.buffer_limit = self.buffer_limit.max(bytes);
    }
    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
        self.sent.push(Sent {
            status,
            headers: owned(headers),
            body: body.to_vec(),
            details: details.to_owned(),
        });
    }
    fn send_response_headers(&mut self, status: u16, headers: &[(&str, &str)]) {
        assert!(self.stream_head.is_none(), "headers sent twice");
        self.stream_head = Some((status, owned(headers)));
    }
    fn send_response_data(&mut self, data: &[u8], end_stream: bool) {
        assert!(self.stream_head.is_some(), "data before headers");
        self.stream_data.push((data.to_vec(), end_stream));
    }
    type RoutePolicy = crate::filter::route_policy::RoutePolicy;

    fn route_policy(&self) -> Option<Arc<crate::filter::route_policy::RoutePolicy>> {
        self.route_policy.clone()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.headers.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.headers.push((name.into(), value.into()));
        }
    }
    fn replace_request_body(&mut self, body: &[u8]) {
        self.forwarded_body = Some(body.to_vec());
    }
    fn clear_route_cache(&mut self) {
        self.route_cache_clears += 1;
    }
    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.response_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
    fn read_response_chunk(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.response_chunk);
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.response_headers.retain(|(k, _)| k != name);
        if let Some(value) = value {
            self.response_headers.push((name.into(), value.into()));
        }
    }
    fn response_body_len(&self) -> usize {
        self.response_buffered.len() + self.response_chunk.len()
    }
    fn read_response_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.response_buffered);
        out.extend_from_slice(&self.response_chunk);
    }
    fn replace_response_body(&mut self, body: &[u8]) {
        self.replaced_body = Some(body.to_vec());
    }
    fn replace_response_chunk(&mut self, data: &[u8]) {
        self.replaced_chunks.push(data.to_vec());
    }
    fn set_metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.into(), value.into()));
    }
    fn reset_stream(&mut self, details: &str) {
        self.resets.push(details.to_owned());
    }
    fn count(&mut self, counter: Counter, labels: &[&str], value: u64) {
        assert_eq!(labels.len(), counter.labels().len(), "{counter:?}");
        let labels = labels.iter().map(|l| (*l).to_owned()).collect();
        self.counted.push((counter, labels, value));
    }
    fn record(&mut self, histogram: Histogram, value: u64) {
        self.recorded.push((histogram, value));
    }
    fn pace(&mut self, offsets: &[Duration]) -> Option<PacingHandle> {
        self.paced = offsets.to_vec();
        // The test delivers `on_scheduled` itself; this handle only has to exist.
        Some(
            self.pacer
                .pace(Box::new(NoWakeup), std::time::Instant::now(), &[]),
        )
    }
}

struct NoWakeup;

impl Wakeup for NoWakeup {
    fn wake(&mut self, _event: u64) {}
    fn finish(self: Box<Self>) {}
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn filter_with(config: &str) -> Filter {
    let config = FilterConfig::from_json(config.as_bytes()).unwrap();
    Filter::new(Arc::new(FilterContext::new(config)))
}

const CHAT: &str = "/v1/chat/completions";
const HELLO: &[u8] = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;

/// Runs a POST through the filter in the given chunks, ending with Envoy's empty EOS call.
fn post(filter: &mut Filter, host: &mut FakeHost, chunks: &[&[u8]]) -> Vec<BodyStatus> {
    assert_eq!(
        filter.on_request_headers(host, false),
        HeadersStatus::StopIteration
    );
    let mut statuses = Vec::new();
    for chunk in chunks {
        host.deliver(chunk);
        statuses.push(filter.on_request_body(host, false));
    }
    host.deliver(b"");
    statuses.push(filter.on_request_body(host, true));
    statuses
}

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

fn post_with(config: &str, headers: &[(&str, &str)], body: &[u8]) -> FakeHost {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT);
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    host
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

fn counted(host: &FakeHost, counter: Counter) -> Vec<(Vec<String>, u64)> {
    host.counted
        .iter()
        .filter(|(c, _, _)| *c == counter)
        .map(|(_, labels, value)| (labels.clone(), *value))
        .collect()
}

fn labels(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
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

const PASS: &str = r#"{"mode": "passthrough", "transform": {
    "system_prompts": [{"position": "prepend", "content": "Tenant {header:x-tenant}."}],
    "model_aliases": {"gpt-4": "gpt-4o"}}}"#;

/// Runs a request through pass-through mode up to the point it goes upstream.
fn forward(config: &str, headers: &[(&str, &str)], body: &[u8]) -> (Filter, FakeHost, BodyStatus) {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT);
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    assert_eq!(
        filter.on_request_headers(&mut host, false),
        HeadersStatus::StopIteration
    );
    host.deliver(body);
    assert_eq!(
        filter.on_request_body(&mut host, false),
        BodyStatus::StopIterationAndBuffer
    );
    host.deliver(b"");
    let status = filter.on_request_body(&mut host, true);
    (filter, host, status)
}

fn header_of<'a>(host: &'a FakeHost, name: &str) -> Option<&'a [u8]> {
    host.request_header(name)
}

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

const GUARDED: &str = r#"{"mode": "passthrough", "guard": {
    "detectors": {"email": "mask", "credit_card": "reject", "openai_key": "monitor"},
    "reversible": true}}"#;

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

fn context_with(config: &str) -> Arc<FilterContext> {
    Arc::new(FilterContext::new(
        FilterConfig::from_json(config.as_bytes()).unwrap(),
    ))
}

/// Posts `body` to `path` through a new filter of `context`.
fn post_in(
    context: &Arc<FilterContext>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Filter, FakeHost) {
    let mut filter = Filter::new(Arc::clone(context));
    let mut host = FakeHost::request("POST", path);
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    (filter, host)
}

#[test]
fn a_mock_budget_refuses_the_reply_after_the_budget_is_spent() {
    let probe = post_with("", &[], HELLO);
    let total = probe.only_reply().json()["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    let context = context_with(&format!(
        r#"{{"budgets": {{"limits": [{{"name": "tpm", "tokens": {}, "per": "minute", "key": "global"}}]}}}}"#,
        2 * total
    ));
    let (_, first) = post_in(&context, CHAT, &[], HELLO);
    assert_eq!(first.only_reply().status, 200);
    let remaining = (2 * total - total).to_string();
    assert_eq!(
        first.only_reply().header("x-ratelimit-remaining-tokens"),
        Some(remaining.as_str())
    );
    let (_, second) = post_in(&context, CHAT, &[], HELLO);
    assert_eq!(
        second.only_reply().header("x-ratelimit-remaining-tokens"),
        Some("0")
    );
    let (_, third) = post_in(&context, CHAT, &[], HELLO);
    let refused = third.only_reply();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        refused.header("x-ratelimit-limit-tokens"),
        Some(&*(2 * total).to_string())
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        counted(&third, Counter::BudgetRefusals),
        [(labels(&["tpm", "all"]), 1)]
    );
}

#[test]
fn a_credential_key_is_fingerprinted_in_stats() {
    let context = context_with(
        r#"{"budgets": {"limits": [{"name": "per_key", "tokens": 1000, "per": "hour", "key": {"header": "x-api-key"}}]}}"#,
    );
    let (_, host) = post_in(&context, CHAT, &[("x-api-key", "sk-secret")], HELLO);
    let charged = counted(&host, Counter::BudgetTokens);
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0].0[0], "per_key");
    assert!(!charged[0].0[1].contains("sk-secret"), "{charged:?}");
}

const RESERVING: &str = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
    {"name": "tpm", "tokens": 100, "per": "minute", "key": "global"}]}}"#;
const ASKS_60: &[u8] =
    br#"{"model":"gpt-4o","max_tokens":60,"messages":[{"role":"user","content":"hi"}]}"#;

/// Answers a forwarded request with a JSON reply that used `total` tokens.
fn reply_with_usage(filter: &mut Filter, host: &mut FakeHost, total: u64) {
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    filter.on_response_headers(host, false);
    host.response_chunk =
        format!(r#"{{"usage":{{"prompt_tokens":{total},"completion_tokens":0}}}}"#).into_bytes();
    filter.on_response_body(host, true);
}

#[test]
fn reservation_refuses_what_could_overshoot_and_settles_to_real_usage() {
    let context = context_with(RESERVING);
    let (mut first, mut first_host) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(first_host.sent.is_empty(), "the first request goes on");
    let (_, second) = post_in(&context, CHAT, &[], ASKS_60);
    assert_eq!(
        second.only_reply().status,
        429,
        "60 + prompt do not fit twice in 100"
    );
    reply_with_usage(&mut first, &mut first_host, 10);
    let remaining = first_host
        .response_headers
        .iter()
        .find(|(name, _)| name == "x-ratelimit-remaining-tokens")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
    assert!(
        remaining.is_some(),
        "the reply carries the budget's headers"
    );
    let (_, third) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(
        third.sent.is_empty(),
        "the first request settled to 10 tokens"
    );
}

#[test]
fn a_stream_cut_short_is_charged_for_what_was_sent() {
    let context = context_with(RESERVING);
    let (mut filter, mut host) = post_in(&context, CHAT, &[], ASKS_60);
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    filter.on_response_headers(&mut host, false);
    host.response_chunk = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n"
        .to_vec();
    filter.on_response_body(&mut host, false);
    filter.on_stream_complete(&mut host);
    let charged = counted(&host, Counter::BudgetTokens);
    assert_eq!(charged.len(), 1, "{charged:?}");
    drop(filter);
    let standing = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now());
    let claim = standing.unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    let prompt = 100 - 2 - left;
    assert!(
        (1..20).contains(&prompt),
        "charged the prompt and two streamed tokens: {left}"
    );
    assert_eq!(
        charged[0].1,
        100 - left,
        "the stat counts what the budget was charged"
    );
}

#[test]
fn a_reservation_left_open_when_the_filter_goes_is_released() {
    let context = context_with(RESERVING);
    let (filter, _) = post_in(&context, CHAT, &[], ASKS_60);
    drop(filter);
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now())
        .unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    assert_eq!(
        left, 100,
        "no reply came: nothing is charged and nothing stays reserved"
    );
}

#[test]
fn a_roomy_budget_reserves_the_body_length_bound_without_counting() {
    let context = context_with(
        r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
            {"name": "tpm", "tokens": 100000, "per": "minute", "key": "global"}]}}"#,
    );
    let (_filter, host) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(host.sent.is_empty(), "the request goes on");
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now())
        .unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    let bound = u64::try_from(ASKS_60.len()).unwrap() + 60;
    assert_eq!(100_000 - left, bound);
}

#[test]
fn a_request_without_max_tokens_reserves_what_is_left_up_to_the_default() {
    let context = context_with(
        r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
            {"name": "tpm", "tokens": 70, "per": "minute", "key": "global"}]}}"#,
    );
    let unlimited = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut first, mut first_host) = post_in(&context, CHAT, &[], unlimited);
    assert!(
        first_host.sent.is_empty(),
        "the prompt fits: the request goes on"
    );
    let (_, second) = post_in(&context, CHAT, &[], unlimited);
    assert_eq!(
        second.only_reply().status,
        429,
        "the first holds the rest of the budget until its reply ends"
    );
    reply_with_usage(&mut first, &mut first_host, 7);
    let (_, third) = post_in(&context, CHAT, &[], unlimited);
    assert!(third.sent.is_empty(), "the first settled to 7 tokens");
}

/// A clock a test moves by hand, for the budgets.
#[derive(Clone)]
struct FakeClock {
    start: Instant,
    elapsed_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed_ms: Arc::default(),
        }
    }

    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap();
        self.elapsed_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.elapsed_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn budgets_clock(&self) -> crate::accounting::budgets::Clock {
        let clock = self.clone();
        crate::accounting::budgets::Clock::new(move || {
            clock.start + Duration::from_millis(clock.now_ms())
        })
    }
}

/// A context whose budgets run on `clock`.
fn clocked_context(config: &str, clock: &FakeClock) -> Arc<FilterContext> {
    let mut context = FilterContext::new(FilterConfig::from_json(config.as_bytes()).unwrap());
    context.runtime.budgets = Arc::new(Budgets::with_clock(
        &context.config.budgets,
        clock.budgets_clock(),
    ));
    Arc::new(context)
}

/// Posts `body` to `path` through a new filter of `context`, on a route with `policy`.
fn post_on_route(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Filter, FakeHost) {
    let mut filter = Filter::new(Arc::clone(context));
    let mut host = FakeHost::request("POST", path);
    host.route_policy = policy.cloned();
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    (filter, host)
}

fn route(json: &str) -> Arc<crate::filter::route_policy::RoutePolicy> {
    Arc::new(crate::filter::route_policy::RoutePolicy::from_json(json.as_bytes()).unwrap())
}

/// A mock budget of 20 tokens a minute per `x-api-key`; HELLO costs 9 of them.
const PER_KEY: &str = r#"{"budgets": {"max_keys": 4, "limits": [
    {"name": "per_key", "tokens": 20, "per": "minute", "key": {"header": "x-api-key"}}]}}"#;

/// The status of a mock chat request under `context` with these headers.
fn status_of(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    headers: &[(&str, &str)],
) -> u16 {
    let (_, host) = post_on_route(context, policy, CHAT, headers, HELLO);
    host.only_reply().status
}

/// Spends a key's budget: requests until one is refused; the number admitted.
fn spend(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    headers: &[(&str, &str)],
) -> usize {
    (0..100)
        .position(|_| status_of(context, policy, headers) == 429)
        .expect("the budget runs out")
}

#[test]
fn a_route_that_extends_or_replaces_the_policy_spends_the_listeners_ledger() {
    let clock = FakeClock::new();
    let extend = route(r#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#);
    let replace = route(r#"{"replace": {"mock": {"models": ["gpt-4o"]}}}"#);
    for first in [None, Some(&extend), Some(&replace)] {
        for then in [None, Some(&extend), Some(&replace)] {
            let own = route(
                r#"{"replace": {"budgets": {"limits": [
                    {"name": "route", "tokens": 20, "per": "minute", "key": "global"}]}}}"#,
            );
            let context = clocked_context(PER_KEY, &clock);
            let key = [("x-api-key", "a")];
            assert_eq!(spend(&context, first, &key), 3);
            assert_eq!(
                status_of(&context, then, &key),
                429,
                "{first:?} then {then:?}: a spent key stays spent on another route"
            );
            assert_eq!(
                status_of(&context, Some(&own), &key),
                200,
                "a route naming its own budgets keeps its own ledger"
            );
        }
    }
}

#[test]
fn junk_keys_cannot_refill_a_spent_key() {
    let clock = FakeClock::new();
    let context = clocked_context(PER_KEY, &clock);
    let victim = [("x-api-key", "victim")];
    assert_eq!(spend(&context, None, &victim), 3);
    let mut full = 0;
    for i in 0..50 {
        let junk = format!("junk{i}");
        let (_, host) = post_on_route(&context, None, CHAT, &[("x-api-key", &junk)], HELLO);
        let reply = host.only_reply();
        if reply.status == 429 {
            assert!(reply.error_message().contains("keeps 4 keys"), "{reply:?}");
            assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
            assert_eq!(reply.header("retry-after"), Some("60"));
            assert_eq!(
                counted(&host, Counter::BudgetKeysFull),
                [(labels(&["per_key"]), 1)]
            );
            full += 1;
        }
        assert_eq!(status_of(&context, None, &victim), 429, "after {junk}");
    }
    assert_eq!(full, 47, "the victim and three junk keys fill the table");
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        status_of(&context, None, &victim),
        200,
        "its window has ended"
    );
    assert_eq!(status_of(&context, None, &[("x-api-key", "new")]), 200);
}

/// Random churn through the filter: junk keys come and go, spend or not, the clock moves; a
/// key that has spent its budget stays refused until its window ends.
#[test]
fn a_spent_key_stays_refused_until_its_window_ends_whatever_the_churn() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    for seed in 0..24 {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = FakeClock::new();
        let max_keys = rng.random_range(1..8);
        let context = clocked_context(
            &format!(
                r#"{{"budgets": {{"max_keys": {max_keys}, "limits": [
                    {{"name": "k", "tokens": 20, "per": "second", "key": {{"header": "x-api-key"}}}}]}}}}"#
            ),
            &clock,
        );
        let mut window_start: Option<u64> = None;
        let mut spent = false;
        for _ in 0..300 {
            clock.advance(Duration::from_millis(rng.random_range(0..120)));
            let now = clock.now_ms();
            if window_start.is_some_and(|start| now >= start + 1000) {
                (window_start, spent) = (None, false);
            }
            if rng.random_bool(0.3) {
                let (_, host) = post_on_route(&context, None, CHAT, &[("x-api-key", "v")], HELLO);
                let reply = host.only_reply();
                if spent {
                    assert_eq!(reply.status, 429, "seed {seed}: a spent key was admitted");
                } else if reply.status == 200 {
                    window_start.get_or_insert(now);
                    spent = reply.header("x-ratelimit-remaining-tokens") == Some("0");
                }
            } else {
                let junk = format!("junk{}", rng.random_range(0..50));
                // A third of the junk is empty messages: whatever they cost.
                let body: &[u8] = if rng.random_bool(0.3) {
                    br#"{"model":"m","messages":[]}"#
                } else {
                    HELLO
                };
                post_on_route(&context, None, CHAT, &[("x-api-key", &junk)], body);
            }
        }
    }
}

#[test]
fn header_keys_match_whatever_case_the_config_names_them_in() {
    let clock = FakeClock::new();
    let context = clocked_context(
        r#"{"budgets": {"limits": [
            {"name": "tenant", "tokens": 20, "per": "minute", "key": {"header": "X-Tenant"}}]}}"#,
        &clock,
    );
    // Envoy hands the filter lower-case header names.
    assert_eq!(spend(&context, None, &[("x-tenant", "acme")]), 3);
    assert_eq!(status_of(&context, None, &[("x-tenant", "other")]), 200);
}

#[test]
fn bearer_and_bearer_are_one_budget() {
    let clock = FakeClock::new();
    let context = clocked_context(
        r#"{"budgets": {"limits": [
            {"name": "key", "tokens": 20, "per": "minute", "key": {"header": "Authorization"}}]}}"#,
        &clock,
    );
    assert_eq!(
        spend(&context, None, &[("authorization", "Bearer sk-1")]),
        3
    );
    for spelling in [
        "bearer sk-1",
        "BEARER sk-1",
        " Bearer  sk-1 ",
        "bearer\tsk-1",
    ] {
        assert_eq!(
            status_of(&context, None, &[("authorization", spelling)]),
            429,
            "{spelling:?}"
        );
    }
    assert_eq!(
        status_of(&context, None, &[("authorization", "Bearer sk-2")]),
        200
    );
}

/// What a pass-through request reserved of a roomy budget, less its body's length.
fn reserved_beyond_the_body(config: &str, path: &str, body: &str) -> u64 {
    let clock = FakeClock::new();
    let context = clocked_context(config, &clock);
    let (_filter, host) = post_on_route(&context, None, path, &[], body.as_bytes());
    assert!(host.sent.is_empty(), "{body} goes on: {:?}", host.sent);
    let sent = host.forwarded_body.as_deref().unwrap_or(body.as_bytes());
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(1), clock_now(&context))
        .unwrap();
    let left = context.budgets.standings(&claim, clock_now(&context))[0].remaining;
    10_000_000 - 1 - left - u64::try_from(sent.len()).unwrap()
}

fn clock_now(context: &FilterContext) -> Instant {
    context.budgets.now()
}

#[test]
fn messages_reserve_their_max_tokens_whatever_else_the_request_names() {
    let reserving = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let body = r#"{"model":"claude","max_completion_tokens":1,"max_tokens":100000,
        "messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        reserved_beyond_the_body(reserving, "/v1/messages", body),
        100_000
    );
}

/// Every endpoint, every combination of the three limit fields (each absent, small or large,
/// as a whole number or written otherwise), read by the fast path and by the full one: the
/// reservation is the largest of the fields the endpoint's provider honours.
#[test]
fn each_endpoint_reserves_from_the_fields_its_provider_honours() {
    let fast = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let full = r#"{"mode": "passthrough", "transform": {"defaults": {"user": "u"}},
        "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let endpoints: [(&str, &[usize]); 4] = [
        ("/v1/chat/completions", &[0, 1]),
        ("/v1/completions", &[1]),
        ("/v1/responses", &[2]),
        ("/v1/messages", &[1]),
    ];
    let fields = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
    let values: [(Option<&str>, u64); 4] = [
        (None, 0),
        (Some("3"), 3),
        (Some("5000"), 5000),
        (Some("4999.5"), 5000),
    ];
    for config in [fast, full] {
        for (path, honoured) in endpoints {
            for combination in 0..values.len().pow(3) {
                let chosen: Vec<(Option<&str>, u64)> = (0..3)
                    .map(|i| values[combination / values.len().pow(i) % values.len()])
                    .collect();
                let mut body =
                    String::from(r#"{"model":"m","messages":[],"prompt":"p","input":"i""#);
                for (field, (value, _)) in fields.iter().zip(&chosen) {
                    if let Some(value) = value {
                        body.push_str(&format!(r#","{field}":{value}"#));
                    }
                }
                body.push('}');
                let expected = honoured
                    .iter()
                    .filter(|i| chosen[**i].0.is_some())
                    .map(|i| chosen[*i].1)
                    .max()
                    .unwrap_or(256);
                assert_eq!(
                    reserved_beyond_the_body(config, path, &body),
                    expected,
                    "{path} {body}"
                );
            }
        }
    }
}
