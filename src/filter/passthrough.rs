//! Pass-through mode: transform a request, send it on to the upstream, and account the tokens of
//! its reply (JSON or server-sent events) into stats and dynamic metadata.

use serde_json::{Map, Value};

use super::{Filter, Outcome, State};
use crate::host::{BodyStatus, Counter, HeadersStatus, Host};
use crate::openai::ApiError;
use crate::routes::Endpoint;

/// The most response bytes kept to read `usage` from a JSON reply; larger replies are not
/// accounted (the reply itself still passes untouched).
const MAX_ACCOUNTED_BODY: usize = 16 * 1024 * 1024;

/// What the filter tracks of a forwarded request's reply.
#[derive(Debug, Default)]
pub(super) struct Accounting {
    /// The model the request was sent as.
    model: String,
    /// What the reply is.
    kind: ReplyKind,
    /// A copy of a JSON reply, or the unfinished event at the end of the stream so far.
    pending: Vec<u8>,
    /// Token counts seen so far.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// llm-edge asked for a usage chunk the client did not: remove it from the stream.
    strip_usage_chunk: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    #[default]
    Unknown,
    Json,
    EventStream,
}

impl Accounting {
    /// Takes the counts of a `usage` object anywhere OpenAI, the Responses API or Anthropic put
    /// it (top level, `response.usage`, `message.usage`).
    fn observe(&mut self, event: &Value) {
        let usage = [
            event.get("usage"),
            event.get("response").and_then(|r| r.get("usage")),
            event.get("message").and_then(|m| m.get("usage")),
        ]
        .into_iter()
        .flatten()
        .find(|usage| usage.is_object());
        let Some(usage) = usage else {
            return;
        };
        let count = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| usage.get(*k).and_then(Value::as_u64))
        };
        if let Some(prompt) = count(["prompt_tokens", "input_tokens"]) {
            self.prompt_tokens = Some(prompt);
        }
        if let Some(completion) = count(["completion_tokens", "output_tokens"]) {
            self.completion_tokens = Some(completion);
        }
    }
}

impl Filter {
    /// Request headers in pass-through mode: hold POSTs to the OpenAI/Anthropic endpoints for
    /// their body; let everything else through untouched.
    pub(super) fn on_passthrough_headers(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        end_of_stream: bool,
    ) -> HeadersStatus {
        // The model header is llm-edge's to set: a client must not pick a route with it.
        let model_header = self.config().transform.model_header.clone();
        host.set_request_header(&model_header, None);
        let is_post = host.request_header(":method") == Some(b"POST");
        if endpoint.method() != "POST" || !is_post || end_of_stream {
            self.state = State::PassThrough;
            return HeadersStatus::Continue;
        }
        let limit = self.config().max_request_body_bytes;
        if super::content_length(host).is_some_and(|declared| declared > limit) {
            self.send_error(
                host,
                &ApiError::request_too_large(limit),
                &[],
                Outcome::TooLarge,
            );
            return HeadersStatus::StopIteration;
        }
        host.ensure_buffer_limit(limit);
        self.state = State::Transforming(endpoint);
        HeadersStatus::StopIteration
    }

    /// The whole request body is in: transform it, route on its model, and send it on.
    pub(super) fn forward(&mut self, host: &mut impl Host, endpoint: &Endpoint) -> BodyStatus {
        let mut body = Vec::with_capacity(host.request_body_len());
        host.read_request_body(&mut body);
        let mut fields = match parse_object(&body) {
            Ok(fields) => fields,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return BodyStatus::StopIterationNoBuffer;
            }
        };
        let transform = &self.context.config.transform;
        let header = |name: &str| host.request_header(name);
        let mut changed = transform.apply(&mut fields, header);
        let reports_usage_unasked =
            !matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        let strip_usage_chunk = !reports_usage_unasked && ask_for_usage(&mut fields);
        changed |= strip_usage_chunk;
        if changed {
            let body = serde_json::to_vec(&fields).expect("serializing JSON values cannot fail");
            host.replace_request_body(&body);
        }
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !model.is_empty() {
            host.set_request_header(&transform.model_header, Some(&model));
        }
        host.clear_route_cache();
        self.state = State::Proxying(Accounting {
            model,
            strip_usage_chunk,
            ..Accounting::default()
        });
        BodyStatus::Continue
    }

    /// Response headers of a forwarded request: learn what the reply is.
    pub(super) fn on_proxied_response_headers(&mut self, host: &mut impl Host) -> HeadersStatus {
        if let State::Proxying(accounting) = &mut self.state {
            let content_type = host.response_header("content-type").unwrap_or_default();
            accounting.kind = if content_type.starts_with(b"text/event-stream") {
                ReplyKind::EventStream
            } else if content_type.starts_with(b"application/json") {
                ReplyKind::Json
            } else {
                ReplyKind::Unknown
            };
            if accounting.kind == ReplyKind::EventStream && accounting.strip_usage_chunk {
                // The body changes length as it streams.
                host.set_response_header("content-length", None);
            }
        }
        HeadersStatus::Continue
    }

    /// A response body chunk of a forwarded request: read usage as it passes; at the end, record
    /// it. The body passes on as it came, less a usage chunk llm-edge itself asked for.
    pub(super) fn on_proxied_response_body(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> BodyStatus {
        let State::Proxying(accounting) = &mut self.state else {
            return BodyStatus::Continue;
        };
        let mut chunk = Vec::new();
        host.read_response_chunk(&mut chunk);
        match accounting.kind {
            ReplyKind::Json => {
                if accounting.pending.len() + chunk.len() <= MAX_ACCOUNTED_BODY {
                    accounting.pending.extend_from_slice(&chunk);
                }
                if end_of_stream {
                    if let Ok(reply) = serde_json::from_slice::<Value>(&accounting.pending) {
                        accounting.observe(&reply);
                    }
                }
            }
            ReplyKind::EventStream => {
                let strip = accounting.strip_usage_chunk;
                let mut pending = std::mem::take(&mut accounting.pending);
                let emitted = scan_events(&mut pending, &chunk, end_of_stream, strip, |event| {
                    accounting.observe(event)
                });
                accounting.pending = pending;
                if strip {
                    host.replace_response_chunk(&emitted);
                }
            }
            ReplyKind::Unknown => {}
        }
        if end_of_stream {
            self.record_usage(host);
        }
        BodyStatus::Continue
    }

    /// Writes the reply's tokens to dynamic metadata (exact integers, as strings) and stats.
    fn record_usage(&mut self, host: &mut impl Host) {
        let State::Proxying(accounting) = &self.state else {
            return;
        };
        let (model, prompt, completion) = (
            accounting.model.clone(),
            accounting.prompt_tokens,
            accounting.completion_tokens,
        );
        host.set_metadata("model", &model);
        let labels = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &labels, 1);
        let label = self.context.model_labels.label(&model).to_owned();
        if let Some(prompt) = prompt {
            host.set_metadata("prompt_tokens", &prompt.to_string());
            host.count(Counter::PromptTokens, &[&label], prompt);
        }
        if let Some(completion) = completion {
            host.set_metadata("completion_tokens", &completion.to_string());
            host.count(Counter::CompletionTokens, &[&label], completion);
        }
        if let (Some(prompt), Some(completion)) = (prompt, completion) {
            host.set_metadata("total_tokens", &(prompt + completion).to_string());
        }
        self.state = State::Answered;
    }

    /// In mock mode with transforms: the body as the model would see it after them.
    pub(super) fn transformed_body(
        &self,
        host: &impl Host,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, ApiError> {
        let transform = &self.context.config.transform;
        if transform.is_empty() {
            return Ok(None);
        }
        let mut fields = parse_object(body)?;
        let header = |name: &str| host.request_header(name);
        Ok(transform
            .apply(&mut fields, header)
            .then(|| serde_json::to_vec(&fields).expect("serializing JSON values cannot fail")))
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(ApiError::invalid_json(format_args!(
            "expected an object, but got {}",
            crate::openai::type_phrase(&other)
        ))),
        Err(error) => Err(ApiError::invalid_json(error)),
    }
}

/// For a streamed chat or legacy completion that did not ask for usage, asks for it, so the
/// tokens can be accounted; returns whether it did (the usage chunk is then stripped).
fn ask_for_usage(fields: &mut Map<String, Value>) -> bool {
    let streamed = fields.get("stream").and_then(Value::as_bool) == Some(true);
    let asked = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if !streamed || asked {
        return false;
    }
    let options = fields
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    match options {
        Value::Object(options) => {
            options.insert("include_usage".into(), Value::Bool(true));
            true
        }
        _ => false,
    }
}

/// Scans server-sent events for JSON payloads. Complete events go to `observe`; an incomplete
/// one waits in `pending` for the next chunk (all of it goes out at the end of the stream).
/// Returns the bytes to send on: everything, less usage-only chunks (`"choices": []` with
/// `usage`) when `strip` is set.
fn scan_events(
    pending: &mut Vec<u8>,
    chunk: &[u8],
    end_of_stream: bool,
    strip: bool,
    mut observe: impl FnMut(&Value),
) -> Vec<u8> {
    pending.extend_from_slice(chunk);
    let mut out = Vec::with_capacity(pending.len());
    let mut start = 0;
    while let Some(end) = find_event_end(&pending[start..]) {
        let event = &pending[start..start + end];
        start += end;
        let data: Vec<u8> = event
            .split(|&b| b == b'\n')
            .filter_map(|line| line.strip_prefix(b"data:"))
            .flat_map(|data| data.strip_prefix(b" ").unwrap_or(data).to_vec())
            .collect();
        let parsed = serde_json::from_slice::<Value>(&data).ok();
        if let Some(value) = &parsed {
            observe(value);
            let usage_only = value
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
                && value.get("usage").is_some_and(Value::is_object);
            if strip && usage_only {
                continue;
            }
        }
        out.extend_from_slice(event);
    }
    pending.drain(..start);
    if end_of_stream {
        out.append(pending);
    }
    out
}

/// The length of the first complete event (through its blank line), if there is one.
fn find_event_end(bytes: &[u8]) -> Option<usize> {
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_split_across_chunks_are_scanned_whole() {
        let mut pending = Vec::new();
        let mut seen = Vec::new();
        let first = scan_events(
            &mut pending,
            b"data: {\"a\":1}\n\ndata: {\"b\"",
            false,
            false,
            |v| seen.push(v.clone()),
        );
        assert_eq!(first, b"data: {\"a\":1}\n\n");
        let rest = scan_events(&mut pending, b":2}\n\ndata: [DONE]\n\n", true, false, |v| {
            seen.push(v.clone())
        });
        assert_eq!(rest, b"data: {\"b\":2}\n\ndata: [DONE]\n\n");
        assert_eq!(seen, [json!({"a": 1}), json!({"b": 2})]);
    }

    #[test]
    fn a_usage_chunk_llm_edge_asked_for_is_stripped() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
                       data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
                       data: [DONE]\n\n";
        let mut accounting = Accounting::default();
        let out = scan_events(&mut Vec::new(), stream, true, true, |v| {
            accounting.observe(v)
        });
        assert_eq!(
            out,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n".to_vec()
        );
        assert_eq!(
            (accounting.prompt_tokens, accounting.completion_tokens),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn usage_is_read_from_each_api_shape() {
        let mut accounting = Accounting::default();
        accounting.observe(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}));
        accounting.observe(&json!({"type": "message_delta", "usage": {"output_tokens": 12}}));
        assert_eq!(
            (accounting.prompt_tokens, accounting.completion_tokens),
            (Some(9), Some(12))
        );
        let mut responses = Accounting::default();
        responses.observe(&json!({"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 5}}}));
        assert_eq!(
            (responses.prompt_tokens, responses.completion_tokens),
            (Some(4), Some(5))
        );
    }

    #[test]
    fn usage_is_asked_for_only_when_a_stream_lacks_it() {
        let mut stream = json!({"model": "m", "stream": true, "messages": []});
        assert!(ask_for_usage(stream.as_object_mut().unwrap()));
        assert_eq!(stream["stream_options"]["include_usage"], true);
        let mut asked =
            json!({"stream": true, "messages": [], "stream_options": {"include_usage": true}});
        assert!(!ask_for_usage(asked.as_object_mut().unwrap()));
        let mut whole = json!({"messages": []});
        assert!(!ask_for_usage(whole.as_object_mut().unwrap()));
    }
}
