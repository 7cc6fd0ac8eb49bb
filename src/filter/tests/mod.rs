//! Unit tests of `filter`, a file for each path they test; this one holds the in-memory host
//! they run on and the helpers several of them share.

use super::*;
use crate::host::pacing::{Pacer, Wakeup};
use crate::host::stats::{Counter, Histogram};
use serde_json::Value;
use std::time::Duration;

mod budgets;
mod chaos;
mod claim;
mod hostile;
mod mock_path;
mod passthrough;
mod record;
mod replay;
mod translate;

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

fn post_with(config: &str, headers: &[(&str, &str)], body: &[u8]) -> FakeHost {
    let mut filter = filter_with(config);
    let mut host = FakeHost::request("POST", CHAT);
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    host
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

const GUARDED: &str = r#"{"mode": "passthrough", "guard": {
    "detectors": {"email": "mask", "credit_card": "reject", "openai_key": "monitor"},
    "reversible": true}}"#;

/// An Anthropic Messages stream of `deltas`.
fn anthropic_stream(deltas: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut event =
        |data: Value| crate::api::sse::write_event(&mut out, data["type"].as_str(), &data);
    event(
        serde_json::json!({"type": "message_start", "message": {"id": "msg_1",
        "model": "claude", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
    );
    event(
        serde_json::json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}),
    );
    for delta in deltas {
        event(
            serde_json::json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": delta}}),
        );
    }
    event(serde_json::json!({"type": "content_block_stop", "index": 0}));
    event(
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 4}}),
    );
    event(serde_json::json!({"type": "message_stop"}));
    out
}
