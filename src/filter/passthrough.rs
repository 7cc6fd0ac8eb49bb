//! Pass-through mode: transform a request, send it on to the upstream, and account the tokens of
//! its reply (JSON or server-sent events) into stats and dynamic metadata.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use serde_json::{Map, Value};

use super::{Filter, Outcome, State, budgets};
use crate::accounting::budgets::Claim;
use crate::accounting::tokens::Tokenizer;
use crate::api::json_read::parse_value_noting_duplicates;
use crate::api::json_writer;
use crate::api::openai::{self, ApiError, parse_object, parse_object_noting_duplicates};
use crate::api::routes::Endpoint;
use crate::api::sse::{Decide, EventFate, EventReader};
use crate::edge::guard;
use crate::host::stats::Counter;
use crate::host::{BodyStatus, HeadersStatus, Host};

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
    /// A copy of a JSON reply.
    pending: Vec<u8>,
    /// The reader of an event-stream reply.
    events: EventReader,
    /// Token counts seen so far.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// llm-edge asked for a usage chunk the client did not: remove it from the stream.
    strip_usage_chunk: bool,
    /// Held-back stream text, when replies are guarded.
    delta_guard: guard::DeltaGuard,
    /// The request's claim on the token budgets, until its reply is charged.
    claim: Option<Claim>,
    /// The request as sent, to count its prompt only if a reply does not report it.
    prompt: Option<Prompt>,
    /// Stream events that carried generated text: about one token each.
    streamed_texts: u64,
    /// The upstream answered 2xx: only then are tokens charged without a reported usage.
    upstream_ok: bool,
    /// Streamed texts the guard dropped, as counted in stats so far.
    dropped_texts: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    #[default]
    Unknown,
    Json,
    EventStream,
}

impl ReplyKind {
    /// What a `content-type` says the reply is: its media type, whatever the case and the
    /// parameters; `+json` suffixes and `text/json` are JSON.
    fn of(content_type: Option<&[u8]>) -> Self {
        let content_type = content_type.unwrap_or_default();
        let media = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .to_ascii_lowercase();
        match media.as_slice() {
            b"text/event-stream" => Self::EventStream,
            b"application/json" | b"text/json" => Self::Json,
            media if media.ends_with(b"+json") && media.contains(&b'/') => Self::Json,
            _ => Self::Unknown,
        }
    }
}

impl Accounting {
    /// Takes the counts of a `usage` object anywhere OpenAI, the Responses API or Anthropic put
    /// it (top level, `response.usage`, `message.usage`).
    fn observe(&mut self, event: &Value) {
        self.observe_members(
            event.get("usage"),
            event.get("response"),
            event.get("message"),
        );
    }

    /// [`Accounting::observe`] on a whole JSON reply, reading only the members that can hold its
    /// usage: the rest (the reply's text) is skipped, not built into a tree.
    fn observe_reply(&mut self, reply: &[u8]) {
        /// The members of a reply that [`Accounting::observe`] looks in.
        #[derive(Deserialize)]
        struct Members {
            usage: Option<Value>,
            response: Option<Value>,
            message: Option<Value>,
        }
        // Serde also reads a struct from an array, by position: a reply is an object.
        if reply.trim_ascii_start().first() != Some(&b'{') {
            return;
        }
        if let Ok(members) = serde_json::from_slice::<Members>(reply) {
            let Members {
                usage,
                response,
                message,
            } = &members;
            self.observe_members(usage.as_ref(), response.as_ref(), message.as_ref());
        }
    }

    /// Takes the counts of the first `usage` object among `usage`, `response.usage` and
    /// `message.usage`.
    fn observe_members(
        &mut self,
        usage: Option<&Value>,
        response: Option<&Value>,
        message: Option<&Value>,
    ) {
        let usage = [
            usage,
            response.and_then(|r| r.get("usage")),
            message.and_then(|m| m.get("usage")),
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

    /// The tokens to charge: the reply's usage, else (a stream cut short, or a reply without
    /// usage) the counted prompt and one token per streamed text event; nothing for an error.
    pub(super) fn used_tokens(&self) -> u64 {
        match (self.prompt_tokens, self.completion_tokens) {
            (Some(prompt), Some(completion)) => prompt + completion,
            _ if !self.upstream_ok => 0,
            (prompt, completion) => {
                let counted = || self.prompt.as_ref().map_or(0, Prompt::tokens);
                prompt.unwrap_or_else(counted) + completion.unwrap_or(self.streamed_texts)
            }
        }
    }

    /// Takes the claim, to charge it once.
    pub(super) fn take_claim(&mut self) -> Option<Claim> {
        self.claim.take()
    }
}

/// A forwarded request's prompt, kept uncounted until its count is needed.
#[derive(Debug)]
pub(super) struct Prompt {
    tokenizer: Tokenizer,
    endpoint: Endpoint,
    model: String,
    body: Vec<u8>,
}

impl Prompt {
    /// The prompt's tokens: exactly for chat completions, by its prompt fields' text otherwise.
    fn tokens(&self) -> u64 {
        budgets::prompt_tokens(self.tokenizer, &self.endpoint, &self.body, &self.model)
    }
}

/// Whether a stream event carries generated text, in any API's shape: a chat delta's content,
/// reasoning or tool-call arguments, a legacy choice's text, a Responses text or arguments delta,
/// an Anthropic text, thinking or tool-input delta.
fn carries_text(event: &Value) -> bool {
    let non_empty =
        |text: Option<&Value>| text.and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if let Some(choice) = event.get("choices").and_then(|c| c.get(0)) {
        let delta = choice.get("delta");
        let field = |name: &str| delta.and_then(|d| d.get(name));
        let arguments = field("tool_calls")
            .and_then(|calls| calls.get(0))
            .and_then(|call| call.pointer("/function/arguments"));
        return non_empty(field("content"))
            || non_empty(field("reasoning_content"))
            || non_empty(arguments)
            || non_empty(choice.get("text"));
    }
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.starts_with("response.") && kind.ends_with(".delta") && kind != "response.audio.delta" {
        return non_empty(event.get("delta"));
    }
    if kind == "content_block_delta" {
        let delta = event.get("delta");
        return ["text", "thinking", "partial_json"]
            .iter()
            .any(|field| non_empty(delta.and_then(|d| d.get(field))));
    }
    false
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
        let is_post = host.request_header(":method") == Some(b"POST");
        if endpoint.method() != "POST" || !is_post || end_of_stream {
            self.state = State::PassThrough;
            return HeadersStatus::Continue;
        }
        let Some(limit) = self.body_limit_unless_declared_larger(host) else {
            return HeadersStatus::StopIteration;
        };
        host.ensure_buffer_limit(limit);
        self.state = State::Transforming(endpoint);
        HeadersStatus::StopIteration
    }

    /// The whole request body is in: transform it, route on its model, and send it on.
    pub(super) fn forward(&mut self, host: &mut impl Host, endpoint: &Endpoint) -> BodyStatus {
        let mut body = Vec::with_capacity(host.request_body_len());
        host.read_request_body(&mut body);
        let untouched =
            self.context.config.transform.is_empty() && !self.context.config.guard.is_active();
        let read = match untouched
            .then(|| Essentials::read(&body, endpoint))
            .flatten()
        {
            Some(essentials) => {
                if essentials.strip_usage_chunk {
                    ask_for_usage_in_place(&mut body);
                    host.replace_request_body(&body);
                }
                essentials
            }
            None => match self.rewrite(host, endpoint, &mut body) {
                Some(essentials) => essentials,
                None => return BodyStatus::StopIterationNoBuffer,
            },
        };
        let Essentials {
            model,
            max_tokens,
            strip_usage_chunk,
        } = read;
        if let Err(error) = openai::check_model_name(&model) {
            self.send_error(host, &error, &[], Outcome::InvalidRequest);
            return BodyStatus::StopIterationNoBuffer;
        }
        let mut prompt = None;
        let mut claim = None;
        if !self.context.budgets.is_empty() && endpoint.is_charged() {
            let sent = Prompt {
                tokenizer: self.config().tokenizer,
                endpoint: endpoint.clone(),
                model: model.clone(),
                body,
            };
            // `admit` borrows `self` while the exact count reads the budgets: hold the config.
            let context = Arc::clone(&self.context);
            let budgets = &context.budgets;
            // Every token is at least one byte of the body: the body's length bounds the prompt
            // without counting it, which is only done when that bound does not fit.
            let bound = budgets.need(
                u64::try_from(sent.body.len()).unwrap_or(u64::MAX),
                max_tokens,
            );
            let exact = || budgets.need(sent.tokens(), max_tokens);
            match self.admit(host, &model, bound, exact) {
                Ok(admitted) => claim = admitted,
                Err(()) => return BodyStatus::StopIterationNoBuffer,
            }
            prompt = Some(sent);
        }
        let transform = &self.context.config.transform;
        if !model.is_empty() {
            host.set_request_header(&transform.model_header, Some(&model));
        }
        // Every reply is read for its usage, and guarded replies are rewritten: only a body in
        // no encoding can be (Envoy's compressor can still compress towards the client).
        host.set_request_header("accept-encoding", Some("identity"));
        host.clear_route_cache();
        self.state = State::Proxying(Box::new(Accounting {
            model,
            strip_usage_chunk,
            claim,
            prompt,
            ..Accounting::default()
        }));
        BodyStatus::Continue
    }

    /// Parses the body whole, transforms and guards it, asks for usage where needed, and replaces
    /// the body when anything changed; `None` after answering an error.
    fn rewrite(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        body: &mut Vec<u8>,
    ) -> Option<Essentials> {
        let (mut fields, duplicated) = match parse_object_noting_duplicates(body) {
            Ok(read) => read,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return None;
            }
        };
        let transform = &self.context.config.transform;
        let header = |name: &str| host.request_header(name);
        // A key given twice goes on once, as it was read, guarded and charged.
        let mut changed = duplicated;
        changed |= transform.apply(&mut fields, header);
        changed |= self.guard_request(host, &mut fields)?;
        let strip_usage_chunk =
            reports_usage_only_when_asked(endpoint) && ask_for_usage(&mut fields);
        changed |= strip_usage_chunk;
        if changed {
            // Into the body's own buffer: about the size needed, so it is not grown step by step.
            body.clear();
            json_writer::write_object(body, &fields);
            host.replace_request_body(body);
        }
        let model = fields.get("model").and_then(Value::as_str);
        Some(Essentials {
            model: model.unwrap_or_default().to_owned(),
            max_tokens: budgets::max_tokens(endpoint, &fields),
            strip_usage_chunk,
        })
    }

    /// Guards a request body in place; `None` after refusing the request (a `reject` detector
    /// fired), else whether anything was masked. Detections are counted either way.
    pub(super) fn guard_request(
        &mut self,
        host: &mut impl Host,
        fields: &mut Map<String, Value>,
    ) -> Option<bool> {
        let context = &self.context;
        if !context.config.guard.is_active() {
            return Some(false);
        }
        let outcome = guard::guard_request(fields, &context.config.guard, &mut self.masker);
        self.count_detections(host);
        match outcome {
            Ok(masked) => Some(masked),
            Err(rejected) => {
                let error = ApiError::bad_request(
                    format!(
                        "The request was refused by llm-edge: it contains a value detected as \
                         '{}'.",
                        rejected.detector
                    ),
                    None,
                    Some("sensitive_data_detected"),
                );
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                None
            }
        }
    }

    /// One stat update per detector and action, however many values it found (the masker
    /// tallies them): a labelled update is a stat lookup in Envoy, far dearer than the addition.
    fn count_detections(&mut self, host: &mut impl Host) {
        for guard::Detection {
            detector,
            action,
            count,
        } in self.masker.detections.drain(..)
        {
            let action = match action {
                guard::Action::Mask => "mask",
                guard::Action::Reject => "reject",
                guard::Action::Monitor => "monitor",
            };
            host.count(Counter::Detections, &[&detector, action], count);
        }
    }

    /// Whether replies are rewritten: restored (reversible mode) or scanned.
    fn guards_replies(&self) -> bool {
        let guard = &self.context.config.guard;
        guard.is_active() && (guard.config().reversible || guard.config().responses)
    }

    /// Response headers of a forwarded request: learn what the reply is. A reply that promises
    /// a body llm-edge cannot read (an encoding it did not ask for) fails closed when it must be
    /// guarded or charged; one that ends with its headers is accounted at once.
    pub(super) fn on_proxied_response_headers(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let guards = self.guards_replies();
        let State::Proxying(accounting) = &mut self.state else {
            return HeadersStatus::Continue;
        };
        accounting.upstream_ok = host
            .response_header(":status")
            .is_some_and(|status| status.starts_with(b"2"));
        // llm-edge's budget is the one this client is held to: its headers replace the
        // upstream's.
        for (name, value) in &self.rate_headers {
            host.set_response_header(name, Some(value));
        }
        if end_of_stream {
            self.record_usage(host);
            return HeadersStatus::Continue;
        }
        let encoded = host
            .response_header("content-encoding")
            .is_some_and(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"identity"));
        if encoded && (guards || accounting.claim.is_some()) {
            self.refuse_reply(
                host,
                "it came in a content-encoding llm-edge did not ask for",
            );
            return HeadersStatus::StopIteration;
        }
        accounting.kind = ReplyKind::of(host.response_header("content-type"));
        let rewritten = accounting.strip_usage_chunk || guards;
        // A guarded stream lets no event pass unread, however large.
        accounting.events = EventReader::new(guards);
        if accounting.kind == ReplyKind::EventStream && rewritten {
            // The body changes length as it streams.
            host.set_response_header("content-length", None);
        }
        if accounting.kind != ReplyKind::EventStream && guards {
            // The whole reply is rewritten at its end: its content-length is set then, and
            // Envoy must hold as much of it as llm-edge reads.
            host.ensure_buffer_limit(self.context.config.max_response_body_bytes);
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    /// Answers OpenAI's 502 in place of an upstream reply that cannot be passed on, charging the
    /// request as one the upstream answered.
    fn refuse_reply(&mut self, host: &mut impl Host, why: &str) {
        if let State::Proxying(accounting) = &mut self.state {
            if let Some(claim) = accounting.take_claim() {
                let used = accounting.used_tokens();
                self.charge(host, &claim, used);
            }
        }
        self.send_error(host, &ApiError::bad_gateway(why), &[], Outcome::BadGateway);
    }

    /// A response body chunk of a forwarded request: read usage as it passes; at the end, record
    /// it. The body passes on as it came, less a usage chunk llm-edge itself asked for.
    pub(super) fn on_proxied_response_body(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> BodyStatus {
        let guards = self.guards_replies();
        let State::Proxying(accounting) = &mut self.state else {
            return BodyStatus::Continue;
        };
        if accounting.kind != ReplyKind::EventStream && guards {
            let limit = self.context.config.max_response_body_bytes;
            if host.response_body_len() as u64 > limit {
                let why = format!("it is larger than max_response_body_bytes ({limit} bytes)");
                self.refuse_reply(host, &why);
                return BodyStatus::StopIterationNoBuffer;
            }
            if !end_of_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            return self.guard_whole_reply(host);
        }
        let mut chunk = Vec::new();
        host.read_response_chunk(&mut chunk);
        match accounting.kind {
            ReplyKind::Json => {
                if accounting.pending.len() + chunk.len() <= MAX_ACCOUNTED_BODY {
                    accounting.pending.extend_from_slice(&chunk);
                }
                if end_of_stream {
                    let reply = std::mem::take(&mut accounting.pending);
                    accounting.observe_reply(&reply);
                }
            }
            ReplyKind::EventStream => {
                let mut events = std::mem::take(&mut accounting.events);
                let context = &self.context;
                let guard = &context.config.guard;
                if guards {
                    // Text held back is released before `[DONE]`, which clients stop reading at.
                    events.offer_done();
                }
                let mut decider = StreamDecider {
                    strip: accounting.strip_usage_chunk,
                    guard: guards.then_some(guard),
                    masker: &mut self.masker,
                    delta_guard: std::mem::take(&mut accounting.delta_guard),
                    accounting,
                };
                let mut emitted = events.read_with(&chunk, end_of_stream, &mut decider);
                let StreamDecider {
                    strip,
                    masker,
                    mut delta_guard,
                    accounting,
                    ..
                } = decider;
                if guards && end_of_stream {
                    // A body that ends without `[DONE]` (or a part's closing event) loses no text.
                    let rest = delta_guard.finish(guard, masker);
                    guard::append_final_events(&mut emitted, &rest);
                }
                let dropped = delta_guard.dropped() - accounting.dropped_texts;
                if dropped > 0 {
                    host.count(Counter::GuardDroppedTexts, &["part_cap"], dropped);
                    accounting.dropped_texts += dropped;
                }
                accounting.events = events;
                accounting.delta_guard = delta_guard;
                if strip || guards {
                    host.replace_response_chunk(&emitted);
                }
                self.count_detections(host);
            }
            ReplyKind::Unknown => {}
        }
        if end_of_stream {
            self.record_usage(host);
        }
        BodyStatus::Continue
    }

    /// The whole of a guarded reply that is not an event stream is in: guard it as JSON, or as
    /// text when it is not JSON; a body that is neither cannot be read, so it is refused.
    fn guard_whole_reply(&mut self, host: &mut impl Host) -> BodyStatus {
        let State::Proxying(accounting) = &mut self.state else {
            return BodyStatus::Continue;
        };
        let mut body = Vec::new();
        host.read_response_body(&mut body);
        let context = &self.context;
        let guard = &context.config.guard;
        let parsed = parse_value_noting_duplicates(&body);
        if let Ok((mut reply, duplicated)) = parsed {
            accounting.observe(&reply);
            // A reply with nothing to restore or mask goes on byte for byte as it came; one
            // with a key given twice goes on once, as it was read.
            let changed = guard::guard_reply(&mut reply, guard, &mut self.masker);
            if changed || duplicated {
                body.clear();
                json_writer::write_value(&mut body, &reply);
                host.replace_response_body(&body);
            }
        } else if accounting.kind == ReplyKind::Json {
            // Said to be JSON, yet not JSON llm-edge reads (NaN, nesting past serde's limit, a
            // lone surrogate): a client's more lenient parser could decode what a text scan
            // misses, such as an escaped `\u0040`.
            self.refuse_reply(host, "its body is not JSON llm-edge can read");
            return BodyStatus::StopIterationNoBuffer;
        } else if let Ok(text) = std::str::from_utf8(&body) {
            // Not JSON (an error page, plain text, a cut-off reply): every byte is still text
            // a value could hide in.
            let guarded = guard::guard_text(guard, &mut self.masker, text);
            if guarded != text {
                host.replace_response_body(guarded.as_bytes());
            }
        } else {
            self.refuse_reply(host, "its body is neither JSON nor text");
            return BodyStatus::StopIterationNoBuffer;
        }
        self.count_detections(host);
        self.record_usage(host);
        BodyStatus::Continue
    }

    /// Writes the reply's tokens to dynamic metadata (exact integers, as strings) and stats.
    fn record_usage(&mut self, host: &mut impl Host) {
        let State::Proxying(accounting) = &mut self.state else {
            return;
        };
        if let Some(claim) = accounting.take_claim() {
            let used = accounting.used_tokens();
            self.charge(host, &claim, used);
        }
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

    /// In mock mode: the body as a model would see it after the transforms and the guard;
    /// `Ok(None)` when nothing changed, `Err(())` after answering an error.
    pub(super) fn prepared_body(
        &mut self,
        host: &mut impl Host,
        body: &[u8],
    ) -> Result<Option<Vec<u8>>, ()> {
        let transform = &self.context.config.transform;
        let guarded = self.context.config.guard.is_active();
        if transform.is_empty() && !guarded {
            return Ok(None);
        }
        let mut fields = match parse_object(body) {
            Ok(fields) => fields,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return Err(());
            }
        };
        let header = |name: &str| host.request_header(name);
        let transformed = transform.apply(&mut fields, header);
        let masked = self.guard_request(host, &mut fields).ok_or(())?;
        Ok((transformed || masked).then(|| {
            let mut rewritten = Vec::with_capacity(body.len());
            json_writer::write_object(&mut rewritten, &fields);
            rewritten
        }))
    }
}

/// Decides on each event of a forwarded stream: reads its usage, drops the usage chunk llm-edge
/// asked for, and, when replies are guarded, guards its text across events and every line that
/// is not JSON data.
struct StreamDecider<'a> {
    strip: bool,
    /// The guard, when replies are guarded.
    guard: Option<&'a guard::Guard>,
    masker: &'a mut guard::Masker,
    delta_guard: guard::DeltaGuard,
    accounting: &'a mut Accounting,
}

impl Decide for &mut StreamDecider<'_> {
    fn event(&mut self, event: &Value) -> EventFate {
        self.accounting.observe(event);
        self.accounting.streamed_texts += u64::from(carries_text(event));
        if self.strip && is_usage_only(event) {
            return EventFate::Drop;
        }
        let Some(guard) = self.guard else {
            return EventFate::Keep;
        };
        let mut guarded = event.clone();
        let before = self
            .delta_guard
            .guard_event(&mut guarded, guard, self.masker);
        let fate = if guarded == *event {
            EventFate::Keep
        } else {
            EventFate::Replace(guarded)
        };
        if before.is_empty() {
            fate
        } else {
            EventFate::Prepend(guard::write_events(&before), Box::new(fate))
        }
    }

    fn guards_text(&self) -> bool {
        self.guard.is_some()
    }

    fn text(&mut self, line: &str) -> Option<String> {
        let guard = self.guard?;
        let guarded = guard::guard_text(guard, self.masker, line);
        (guarded != line).then_some(guarded)
    }
}

/// What forwarding needs to know of a request.
struct Essentials {
    /// The model the request is sent as.
    model: String,
    /// The most tokens the reply may take, if the request says.
    max_tokens: Option<u64>,
    /// llm-edge asked for a usage chunk: it leaves the stream before the client sees it.
    strip_usage_chunk: bool,
}

/// The fields of a request body that forwarding reads, borrowed: nothing else is built.
#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl Essentials {
    /// Reads a body that nothing rewrites without building its JSON tree: far cheaper on a large
    /// prompt. A stream that must be asked for usage and has no `stream_options` comes back with
    /// `strip_usage_chunk` set, for [`ask_for_usage_in_place`]. `None` when the body needs the
    /// full path: invalid JSON or not an object (for the exact error), a field of an unexpected
    /// type or a duplicate (to keep the full path's reading of it), or `stream_options` without
    /// `include_usage: true` (a rewrite of an object).
    fn read(body: &[u8], endpoint: &Endpoint) -> Option<Self> {
        // serde would read a struct from a JSON array too.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return None;
        }
        let fields: Borrowed<'_> = serde_json::from_slice(body).ok()?;
        let mut strip_usage_chunk = false;
        if reports_usage_only_when_asked(endpoint) && fields.stream == Some(true) {
            match fields.stream_options {
                None => strip_usage_chunk = true,
                Some(StreamOptions {
                    include_usage: Some(true),
                }) => {}
                Some(_) => return None,
            }
        }
        Some(Self {
            model: fields.model.unwrap_or_default().into_owned(),
            max_tokens: budgets::max_tokens_of(
                endpoint,
                [
                    fields.max_completion_tokens,
                    fields.max_tokens,
                    fields.max_output_tokens,
                ],
            ),
            strip_usage_chunk,
        })
    }
}

/// Adds `"stream_options":{"include_usage":true}` to a JSON object's raw bytes, first, without
/// parsing it again. Only for an object that has no `stream_options` (see [`Essentials::read`]).
fn ask_for_usage_in_place(body: &mut Vec<u8>) {
    const ASK: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let open = body
        .iter()
        .position(|&b| b == b'{')
        .expect("the body is a JSON object");
    let empty = body[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let separator: &[u8] = if empty { b"" } else { b"," };
    body.splice(open + 1..open + 1, ASK.iter().chain(separator).copied());
}

/// Chat and legacy completions report usage in a stream only when asked to.
fn reports_usage_only_when_asked(endpoint: &Endpoint) -> bool {
    matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
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

/// A usage-only chunk: `"choices": []` with a `usage` object.
fn is_usage_only(event: &Value) -> bool {
    event
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && event.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_can_be_dropped_or_rewritten_keeping_their_event_line() {
        let stream = b"event: x\ndata: {\"v\":1}\n\ndata: {\"choices\":[],\"usage\":{}}\n\n";
        let out = EventReader::default().read(stream, true, |v| {
            if is_usage_only(v) {
                EventFate::Drop
            } else {
                EventFate::Replace(json!({"v": 2}))
            }
        });
        assert_eq!(out, b"event: x\ndata: {\"v\":2}\n\n".to_vec());
    }

    #[test]
    fn untouched_bodies_are_read_without_a_tree_or_left_to_the_full_path() {
        let chat = Endpoint::ChatCompletions;
        let read = |body: &str, endpoint: &Endpoint| Essentials::read(body.as_bytes(), endpoint);
        let essentials = read(
            r#" {"model":"gpt-4o","max_tokens":null,"max_output_tokens":7,"messages":[],"x":{"y":[1]}}"#,
            &Endpoint::Responses,
        )
        .expect("a plain request");
        assert_eq!(
            (essentials.model.as_str(), essentials.max_tokens),
            ("gpt-4o", Some(7))
        );
        let asked = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert!(!read(asked, &chat).unwrap().strip_usage_chunk);
        assert!(
            read(r#"{"model":"m","stream":true}"#, &chat)
                .unwrap()
                .strip_usage_chunk
        );
        // Anything the full path reads or rewrites its own way.
        for body in [
            r#"{"model":"m","stream":true,"stream_options":{}}"#,
            r#"["m", true]"#,
            r#"{"model":"m","max_tokens":1.5}"#,
            r#"{"model":7}"#,
            r#"{"model":"a","model":"b"}"#,
            "{",
        ] {
            assert!(read(body, &chat).is_none(), "{body}");
        }
        // Only chat and legacy completions need asking.
        let responses = read(r#"{"model":"m","stream":true}"#, &Endpoint::Responses);
        assert!(!responses.unwrap().strip_usage_chunk);
    }

    #[test]
    fn usage_is_asked_for_in_the_raw_bytes() {
        for (body, asked) in [
            (
                r#" {"model":"m","stream":true}"#,
                r#" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#,
            ),
            ("{ }", r#"{"stream_options":{"include_usage":true} }"#),
        ] {
            let mut bytes = body.as_bytes().to_vec();
            ask_for_usage_in_place(&mut bytes);
            assert_eq!(String::from_utf8(bytes).unwrap(), asked);
            serde_json::from_str::<Value>(asked).expect("still JSON");
        }
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

    /// A whole JSON reply is read as each of its events would be: the first `usage` object
    /// wins, a `null` one is passed over, and text that is not a JSON object leaves no count.
    #[test]
    fn a_json_reply_is_read_as_its_events_are() {
        let replies = [
            r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"usage":null,"message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
            r#"{"response":{"usage":{"input_tokens":4}},"message":{"usage":{"output_tokens":9}}}"#,
            r#"{"usage":5}"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            r#"[{"prompt_tokens":1,"completion_tokens":1},null,null]"#,
            r#" {"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            "not json",
        ];
        for reply in replies {
            let mut whole = Accounting::default();
            whole.observe_reply(reply.as_bytes());
            let mut event = Accounting::default();
            if let Ok(value) = serde_json::from_str::<Value>(reply) {
                event.observe(&value);
            }
            let counts = |a: &Accounting| (a.prompt_tokens, a.completion_tokens);
            assert_eq!(counts(&whole), counts(&event), "{reply}");
        }
        let mut chat = Accounting::default();
        chat.observe_reply(replies[0].as_bytes());
        assert_eq!(
            (chat.prompt_tokens, chat.completion_tokens),
            (Some(3), Some(2))
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
