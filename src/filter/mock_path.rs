//! Answering locally, in mock mode: read the request's plan (latency, faults) from its headers
//! and the fault dice, run the transforms and the guard so the mock sees what a model would,
//! answer each endpoint, admit the reply to the simulated load (`mock.load`), and send it at
//! once or paced. The load's vLLM metrics are answered here too.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::accounting::prompt_tokens;
use super::chaos::{Refusal, invalid_header};
use super::claim::request_method;
use super::passthrough::Prepared;
use super::replay::Replayed;
use super::{Filter, Outcome, State, StreamEnd};
use crate::api::anthropic::MessagesRequest;
use crate::api::httpbun::{self, HttpbunEndpoint, HttpbunError};
use crate::api::json_writer;
use crate::api::openai::chat::ChatRequest;
use crate::api::openai::completions::{CompletionRequest, Prompt};
use crate::api::openai::embeddings::EmbeddingsRequest;
use crate::api::openai::generation::Usage;
use crate::api::openai::responses::ResponsesRequest;
use crate::api::openai::{self, ApiError, parse_object};
use crate::api::routes::{Endpoint, Method};
use crate::config::FilterConfig;
use crate::host::stats::{Counter, Histogram};
use crate::host::{BodyStatus, HeadersStatus, Host};
use crate::mock::config::MAX_DELAY_MS;
use crate::mock::faults::{self, StreamFault};
use crate::mock::load::{self, QueueFull};
use crate::mock::prefix_cache::{BlockHasher, CachedPrefix};
use crate::mock::{self, MockReply, ReplyShape, Timing};

/// Request header overriding the configured time to first token, in milliseconds.
pub const TTFT_HEADER: &str = "x-llm-edge-ttft-ms";

/// Request header overriding the configured inter-token latency, in milliseconds.
pub const ITL_HEADER: &str = "x-llm-edge-itl-ms";

/// Reply header saying how long the simulated load kept the request waiting for a place, in
/// milliseconds (0: it started at once).
pub const QUEUE_HEADER: &str = "x-llm-edge-queue-ms";

/// What the request's headers and the fault dice decided, before the reply is made.
struct Plan {
    timing: Timing,
    stream_fault: Option<StreamFault>,
}

/// A request that generates text: chat and legacy completions, Responses, Anthropic messages.
trait GenerationRequest: Sized {
    fn parse(body: &[u8]) -> Result<Self, ApiError>;
    fn model(&self) -> &str;
    fn set_model(&mut self, model: String);
    fn stream(&self) -> bool;
    /// Feeds the prompt's bytes, in order, to the prefix cache's hasher.
    fn feed_prompt(&self, hasher: &mut BlockHasher);
    /// The reply's token limit (per choice) and how many choices.
    fn token_limit(&self) -> (Option<u32>, u32);
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError>;
}

/// Implements [`GenerationRequest`] for a request type: `mock` answers it, and its `model` and
/// `stream` are its own fields or, after `chat:`, those of the chat request it holds.
macro_rules! generation_request {
    ($request:ty, $mock:path $(, chat: $chat:ident)?) => {
        impl GenerationRequest for $request {
            fn parse(body: &[u8]) -> Result<Self, ApiError> {
                <$request>::parse(body)
            }
            fn model(&self) -> &str {
                &self$(.$chat)?.model
            }
            fn set_model(&mut self, model: String) {
                self$(.$chat)?.model = model;
            }
            fn stream(&self) -> bool {
                self$(.$chat)?.stream
            }
            fn feed_prompt(&self, hasher: &mut BlockHasher) {
                self$(.$chat)?.write_prompt(hasher);
            }
            fn token_limit(&self) -> (Option<u32>, u32) {
                self$(.$chat)?.reply_limit()
            }
            fn mock<'h>(
                &self,
                config: &FilterConfig,
                timing: &Timing,
                header: impl Fn(&str) -> Option<&'h [u8]>,
            ) -> Result<MockReply, ApiError> {
                $mock(&config.mock, config.tokenizer, timing, self, header)
            }
        }
    };
}

/// What the simulated load reads of a request: its prompt's bytes and its token limit.
trait PromptBytes {
    fn write_prompt(&self, hasher: &mut BlockHasher);
    fn reply_limit(&self) -> (Option<u32>, u32);
}

impl PromptBytes for ChatRequest {
    fn write_prompt(&self, hasher: &mut BlockHasher) {
        for message in &self.messages {
            hasher.feed(message.role.as_bytes());
            hasher.feed(b"\x1f");
            hasher.feed(message.name.as_deref().unwrap_or_default().as_bytes());
            hasher.feed(b"\x1f");
            hasher.feed(message.text.as_bytes());
            hasher.feed(b"\x1e");
        }
    }
    fn reply_limit(&self) -> (Option<u32>, u32) {
        (self.max_tokens, self.n)
    }
}

impl PromptBytes for CompletionRequest {
    fn write_prompt(&self, hasher: &mut BlockHasher) {
        for prompt in &self.prompts {
            match prompt {
                Prompt::Text(text) => hasher.feed(text.as_bytes()),
                Prompt::Tokens(ids) => ids.iter().for_each(|id| hasher.feed(&id.to_le_bytes())),
            }
            hasher.feed(b"\x1e");
        }
    }
    fn reply_limit(&self) -> (Option<u32>, u32) {
        (
            Some(self.max_tokens),
            self.n * u32::try_from(self.prompts.len()).unwrap_or(1),
        )
    }
}

generation_request!(ChatRequest, mock::chat_completion);
generation_request!(CompletionRequest, mock::text_completion);
generation_request!(ResponsesRequest, mock::response, chat: chat);
generation_request!(MessagesRequest, mock::anthropic_message, chat: chat);

impl Filter {
    /// Request headers of a claimed request in mock mode: a wrong method is 405, a GET is
    /// answered at once, a POST is held for its body (or answered now when it has none).
    pub(super) fn hold_for_mock(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let allowed = endpoint.method();
        if request_method(host) != Some(allowed) {
            let allow = [("allow", allowed.as_str())];
            if let Endpoint::Httpbun(httpbun) = endpoint {
                let body = httpbun.method_not_allowed();
                self.send_body(host, 405, &allow, &body, Outcome::MethodNotAllowed);
                return HeadersStatus::StopIteration;
            }
            let method = host.request_header(":method").unwrap_or_default();
            let method = String::from_utf8_lossy(method).into_owned();
            let error =
                ApiError::method_not_allowed(&method, &endpoint.path(&self.config().api_base_path));
            self.send_error(host, &error, &allow, Outcome::MethodNotAllowed);
            return HeadersStatus::StopIteration;
        }
        if allowed == Method::Get {
            self.answer(host, endpoint, &[]);
            return HeadersStatus::StopIteration;
        }
        let Some(limit) = self.body_limit_unless_declared_larger(host) else {
            return HeadersStatus::StopIteration;
        };
        if end_of_stream {
            self.answer(host, endpoint, &[]);
        } else {
            host.ensure_buffer_limit(limit);
            self.state = State::Buffering(endpoint);
        }
        HeadersStatus::StopIteration
    }

    /// The whole body of a held request is in: answer it, from a fixture or the mock, or send
    /// it upstream when no fixture answers and the config says so.
    pub(super) fn answer_body(&mut self, host: &mut impl Host, endpoint: Endpoint) -> BodyStatus {
        let mut body = Vec::with_capacity(host.request_body_len());
        host.read_request_body(&mut body);
        match self.answer(host, endpoint.clone(), &body) {
            Some(prepared) => self.forward(host, &endpoint, Some(prepared)),
            None => BodyStatus::StopIterationNoBuffer,
        }
    }

    /// Answers a request to `endpoint` with its whole body (empty for a GET); when a fixture
    /// miss goes upstream instead, the body as the transforms and the guard left it.
    fn answer(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Option<Prepared> {
        // Transforms and the guard run before the mock, so echo shows what a model would see.
        let transformed = match endpoint.method() {
            Method::Post => match self.prepared_body(host, body) {
                Ok(transformed) => transformed,
                Err(()) => return None,
            },
            Method::Get => None,
        };
        let body = transformed.as_deref().unwrap_or(body);
        if endpoint.method() == Method::Post {
            match self.replay(host, &endpoint, body) {
                Replayed::Mock => {}
                Replayed::Answered => return None,
                Replayed::Forward => return Some(Prepared(transformed)),
            }
        }
        match endpoint {
            Endpoint::ChatCompletions => self.answer_generation::<ChatRequest>(host, body),
            Endpoint::Completions => self.answer_generation::<CompletionRequest>(host, body),
            Endpoint::Responses => self.answer_generation::<ResponsesRequest>(host, body),
            Endpoint::Messages => self.answer_generation::<MessagesRequest>(host, body),
            Endpoint::CountTokens => self.answer_count_tokens(host, body),
            Endpoint::Httpbun(endpoint) => self.answer_httpbun(host, endpoint, body),
            Endpoint::Embeddings => self.answer_embeddings(host, body),
            Endpoint::Models => {
                let models = self.config().mock.models.iter().map(String::as_str);
                let body = openai::models::render_list(models);
                self.send_json(host, &body);
            }
            Endpoint::Model(id) => {
                let mock = &self.config().mock;
                let listed = mock.models.is_empty() || mock.models.contains(&id);
                if listed {
                    let body = openai::models::render_model(&id);
                    self.send_json(host, &body);
                } else {
                    let reply = faults::error_for_status(404, &id).expect("404 has an error");
                    self.send_error(host, &reply.error, &[], Outcome::InvalidRequest);
                }
            }
        }
        None
    }

    /// The body as a model would see it after the transforms and the guard (the way through runs
    /// the same): `Ok(None)` when nothing changed, `Err(())` after answering an error.
    fn prepared_body(&mut self, host: &mut impl Host, body: &[u8]) -> Result<Option<Vec<u8>>, ()> {
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

    /// Answers a text-generating request (chat, legacy completion, Responses, Anthropic message):
    /// parse, plan, model, mock reply, charge and stats, then send at once or paced.
    fn answer_generation<R: GenerationRequest>(&mut self, host: &mut impl Host, body: &[u8]) {
        let started = Instant::now();
        let parsed = R::parse(body).and_then(|request| {
            openai::check_model_name(request.model())?;
            Ok(request)
        });
        let mut request = match parsed {
            Ok(request) => request,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        let plan = match self.plan(host, request.model()) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.refuse(host, *refusal);
                return;
            }
        };
        let Some(model) = self.serve_model(host, request.model()) else {
            return;
        };
        request.set_model(model);
        let mut timing = plan.timing;
        let blocks = self.look_up_prefix(&request, &mut timing);
        let header = |name: &str| host.request_header(name);
        let mut reply = match request.mock(self.config(), &timing, header) {
            Ok(reply) => reply,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        if self
            .admit_to_load(host, &request, &timing, &mut reply, blocks)
            .is_err()
        {
            return;
        }
        let fault = plan.stream_fault.filter(|_| request.stream());
        let steps = reply.steps.len();
        if self
            .charge_mock(host, request.model(), reply.usage, fault, steps)
            .is_err()
        {
            // Refused by a budget: the place it was given is not taken.
            self._load_slot = None;
            return;
        }
        self.count_answer(host, request.model(), reply.usage);
        if let Some(fault) = fault {
            host.count(Counter::Faults, &[fault.kind()], 1);
        }
        self.send_reply(host, reply, fault, started);
    }

    /// Answers an embeddings request: parse, plan, model, vectors, charge and stats, then send.
    fn answer_embeddings(&mut self, host: &mut impl Host, body: &[u8]) {
        let parsed = EmbeddingsRequest::parse(body).and_then(|request| {
            openai::check_model_name(&request.model)?;
            Ok(request)
        });
        let mut request = match parsed {
            Ok(request) => request,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        if let Err(refusal) = self.plan(host, &request.model) {
            self.refuse(host, *refusal);
            return;
        }
        let Some(model) = self.serve_model(host, &request.model) else {
            return;
        };
        request.model = model;
        if let Err(error) = mock::check_embeddings(&self.config().mock, &request) {
            self.send_error(host, &error, &[], Outcome::InvalidRequest);
            return;
        }
        let reply = mock::embeddings(self.config().tokenizer, &request);
        if self
            .charge_mock(host, &request.model, reply.usage, None, 1)
            .is_err()
        {
            return;
        }
        self.count_answer(host, &request.model, reply.usage);
        self.send_now(host, &reply);
    }

    /// Answers Anthropic's token counting: the prompt's tokens, as the budgets count a
    /// Messages prompt; free, so no budget is charged.
    fn answer_count_tokens(&mut self, host: &mut impl Host, body: &[u8]) {
        let fields = match openai::parse_object(body) {
            Ok(fields) => fields,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        let model = match fields.get("model") {
            Some(Value::String(model)) => model.clone(),
            _ => {
                let error = ApiError::missing_parameter("model");
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        if !fields.get("messages").is_some_and(Value::is_array) {
            let error = ApiError::missing_parameter("messages");
            self.send_error(host, &error, &[], Outcome::InvalidRequest);
            return;
        }
        let tokens = prompt_tokens(
            self.config().tokenizer,
            &Endpoint::CountTokens,
            body,
            &model,
        );
        let body = format!("{{\"input_tokens\":{tokens}}}");
        self.send_json(host, body.as_bytes());
    }

    /// Answers as httpbun would, paced by the configured latency (httpbun itself pauses 50 ms per
    /// chunk; set `mock.latency.inter_token_ms` to match).
    fn answer_httpbun(&mut self, host: &mut impl Host, endpoint: HttpbunEndpoint, body: &[u8]) {
        let started = Instant::now();
        let reply = match httpbun::answer(endpoint, body) {
            Ok(reply) => reply,
            Err(HttpbunError(body)) => {
                self.send_body(host, 400, &[], &body, Outcome::InvalidRequest);
                return;
            }
        };
        let timing = match self.timing(host) {
            Ok(timing) => timing,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        // httpbun names its reply's content type; the mock's reply carries its shape.
        let shape = if reply.content_type == mock::EVENT_STREAM {
            ReplyShape::Stream
        } else {
            ReplyShape::Whole
        };
        let offsets = match (timing.is_instant(), shape) {
            (true, _) => Vec::new(),
            (false, ReplyShape::Stream) => timing.offsets(reply.steps.len()),
            (false, ReplyShape::Whole) => timing.offsets(1),
        };
        let labels = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &labels, 1);
        let reply = MockReply {
            shape,
            steps: reply.steps,
            offsets,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
                cached_tokens: 0,
            },
        };
        self.send_reply(host, reply, None, started);
    }

    /// Reads how this request is to be answered from its headers and the fault dice: an error
    /// reply (with its `details`) ends it here.
    fn plan(&self, host: &impl Host, model: &str) -> Result<Plan, Box<Refusal>> {
        let timing = self.timing(host).map_err(Refusal::invalid)?;
        let stream_fault = self.plan_faults(host, model)?;
        Ok(Plan {
            timing,
            stream_fault,
        })
    }

    /// The model to answer as, or `None` after answering OpenAI's 404 for a refused model.
    fn serve_model(&mut self, host: &mut impl Host, requested: &str) -> Option<String> {
        if let Some(model) = self.config().mock.served_model(requested) {
            return Some(model.to_owned());
        }
        let reply = faults::error_for_status(404, requested).expect("404 has an error");
        self.send_error(host, &reply.error, &[], Outcome::InvalidRequest);
        None
    }

    /// Finds the prompt's cached prefix in the simulated load's cache, into `timing`; returns
    /// the prompt's blocks, to cache once the request is admitted.
    fn look_up_prefix(&self, request: &impl GenerationRequest, timing: &mut Timing) -> Vec<u64> {
        let Some(load) = &self.context.load else {
            return Vec::new();
        };
        let Some(mut hasher) = load.hasher(request.model()) else {
            return Vec::new();
        };
        request.feed_prompt(&mut hasher);
        let prompt = hasher.finish();
        let cached = load.cached_blocks(request.model(), &prompt.blocks, Instant::now());
        timing.prefix = CachedPrefix {
            matched_bytes: (cached * prompt.block_bytes) as u64,
            prompt_bytes: prompt.bytes,
            block_tokens: load.settings().prefix_cache.map_or(0, |c| c.block_tokens),
        };
        prompt.blocks
    }

    /// Admits a made reply to the simulated load: its schedule shifted by the wait for a place
    /// and stretched by the load, and the place held until the stream ends. `Err(())` after
    /// answering the 429 of a full queue.
    fn admit_to_load(
        &mut self,
        host: &mut impl Host,
        request: &impl GenerationRequest,
        timing: &Timing,
        reply: &mut MockReply,
        blocks: Vec<u64>,
    ) -> Result<(), ()> {
        let Some(load) = &self.context.load else {
            return Ok(());
        };
        let usage = reply.usage;
        let first_token = match reply.shape {
            ReplyShape::Stream => Duration::MAX,
            ReplyShape::Whole => timing.first_token(usage),
        };
        let finished_reason = match request.token_limit() {
            (Some(limit), choices)
                if usage.completion_tokens >= limit.saturating_mul(choices.max(1)) =>
            {
                "length"
            }
            _ => "stop",
        };
        let admitted = load.admit(
            load::Request {
                model: request.model(),
                offsets: std::mem::take(&mut reply.offsets),
                first_token,
                steps: reply.steps.len(),
                prompt_tokens: usage.prompt_tokens,
                cached_tokens: usage.cached_tokens,
                completion_tokens: usage.completion_tokens,
                finished_reason,
                blocks,
            },
            Instant::now(),
        );
        match admitted {
            Ok(admission) => {
                reply.offsets = admission.offsets;
                let wait = admission.wait.as_millis().to_string();
                self.rate_headers.push((QUEUE_HEADER, wait));
                self._load_slot = Some(admission.slot);
                Ok(())
            }
            Err(QueueFull { running, waiting }) => {
                let mut reply =
                    faults::error_for_status(429, request.model()).expect("429 has an error");
                reply.error.message = format!(
                    "The server is at capacity for {}: {running} requests running and {waiting} \
                     waiting. Please try again later.",
                    request.model()
                );
                host.count(Counter::Faults, &["429"], 1);
                self.send_error(host, &reply.error, &reply.headers, Outcome::Fault);
                Err(())
            }
        }
    }

    /// Answers `GET` on the simulated load's metrics path with vLLM's Prometheus metrics;
    /// returns whether the request was that.
    pub(super) fn answer_metrics(&mut self, host: &mut impl Host) -> bool {
        let Some(load) = &self.context.load else {
            return false;
        };
        let Some(metrics_path) = load.settings().metrics_path.as_deref() else {
            return false;
        };
        let path = host.request_header(":path").unwrap_or_default();
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        if path != metrics_path.as_bytes() || request_method(host) != Some(Method::Get) {
            return false;
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |elapsed| elapsed.as_secs_f64());
        let body = mock::metrics::render(load, Instant::now(), unix);
        self.endpoint_label = "metrics";
        host.count(Counter::Requests, &["metrics", Outcome::Mock.label()], 1);
        let headers = [("content-type", "text/plain; version=0.0.4; charset=utf-8")];
        host.send_response(200, &headers, body.as_bytes(), Outcome::Mock.details());
        self.state = State::Answered;
        true
    }

    /// The configured timing, with the request's header overrides.
    fn timing(&self, host: &impl Host) -> Result<Timing, ApiError> {
        let mut timing = Timing::from_config(&self.config().mock.latency);
        if let Some(load) = &self.context.load {
            timing.prefill_per_token = load.settings().prefill_per_token;
        }
        if let Some(ttft) = delay_header(host, TTFT_HEADER)? {
            timing.time_to_first_token = ttft;
        }
        if let Some(itl) = delay_header(host, ITL_HEADER)? {
            timing.inter_token = itl;
        }
        Ok(timing)
    }

    /// Sends a mock reply: at once, paced, or broken as a stream fault asks.
    fn send_reply(
        &mut self,
        host: &mut impl Host,
        reply: MockReply,
        fault: Option<StreamFault>,
        started: Instant,
    ) {
        if reply.shape == ReplyShape::Whole {
            self.send_whole(host, reply);
            return;
        }
        if reply.offsets.is_empty() {
            record_ttft(host, started);
        }
        if fault.is_none() && reply.offsets.is_empty() {
            self.send_now(host, &reply);
            return;
        }
        let (steps, offsets, end) = break_stream(reply.steps, reply.offsets, fault);
        let headers = self.reply_headers(&[
            ("content-type", reply.shape.content_type()),
            ("cache-control", "no-cache"),
        ]);
        host.send_response_headers(200, &headers);
        if !offsets.is_empty() {
            if let Some(pacing) = host.pace(&offsets) {
                self.state = State::Streaming {
                    steps,
                    end,
                    started,
                    _pacing: pacing,
                };
                return;
            }
            log::warn!("llm_edge: the proxy could not pace a stream; sending it at once");
        }
        let count = steps.len();
        for (index, step) in steps.iter().enumerate() {
            host.send_response_data(step, end == StreamEnd::Complete && index + 1 == count);
        }
        if count == 0 && end == StreamEnd::Complete {
            host.send_response_data(b"", true);
        }
        self.end_stream(host, end);
    }

    /// Sends a whole reply at once, or when the pacer says it is due.
    fn send_whole(&mut self, host: &mut impl Host, reply: MockReply) {
        if !reply.offsets.is_empty() {
            if let Some(pacing) = host.pace(&reply.offsets) {
                self.state = State::Delayed {
                    reply,
                    _pacing: pacing,
                };
                return;
            }
            log::warn!("llm_edge: the proxy could not pace a reply; sending it at once");
        }
        self.send_now(host, &reply);
    }

    /// Sends a whole reply now, as one local reply.
    fn send_now(&mut self, host: &mut impl Host, reply: &MockReply) {
        let headers = self.reply_headers(&[("content-type", reply.shape.content_type())]);
        let body = reply.steps.concat();
        host.send_response(200, &headers, &body, Outcome::Mock.details());
        self.state = State::Answered;
    }

    /// Sends a JSON body now, as one `200` local reply.
    fn send_json(&mut self, host: &mut impl Host, body: &[u8]) {
        host.count(
            Counter::Requests,
            &[self.endpoint_label, Outcome::Mock.label()],
            1,
        );
        let headers = [("content-type", "application/json")];
        host.send_response(200, &headers, body, Outcome::Mock.details());
        self.state = State::Answered;
    }

    /// A paced reply's step is due: send it, and end the reply after the last one; a late or
    /// unknown event does nothing.
    pub(super) fn send_due(&mut self, host: &mut impl Host, event: u64) {
        match &mut self.state {
            State::Streaming {
                steps,
                end,
                started,
                ..
            } => {
                let Some(index) = usize::try_from(event).ok().filter(|&i| i < steps.len()) else {
                    return;
                };
                if index == 0 {
                    record_ttft(host, *started);
                }
                let last = index + 1 == steps.len();
                let end = *end;
                let step = std::mem::take(&mut steps[index]);
                host.send_response_data(&step, last && end == StreamEnd::Complete);
                if last {
                    self.end_stream(host, end);
                }
            }
            State::Delayed { .. } => {
                let state = std::mem::replace(&mut self.state, State::Answered);
                if let State::Delayed { reply, .. } = state {
                    self.send_now(host, &reply);
                }
            }
            State::Start
            | State::PassThrough
            | State::Buffering(_)
            | State::Transforming(_)
            | State::Proxying(_)
            | State::Deciding
            | State::Answered => {}
        }
    }

    /// After a stream's last step: reset it if the fault says so; a stall just stops.
    pub(super) fn end_stream(&mut self, host: &mut impl Host, end: StreamEnd) {
        if end == StreamEnd::Reset {
            host.reset_stream(Outcome::Fault.details());
        }
        self.state = State::Answered;
    }
}

/// Applies a stream fault to a reply's steps and their due times.
pub(super) fn break_stream(
    mut steps: Vec<Vec<u8>>,
    mut offsets: Vec<Duration>,
    fault: Option<StreamFault>,
) -> (Vec<Vec<u8>>, Vec<Duration>, StreamEnd) {
    let (keep, end) = match fault {
        None => return (steps, offsets, StreamEnd::Complete),
        Some(StreamFault::Malformed(at)) => {
            let at = at.min(steps.len().saturating_sub(1));
            if let Some(step) = steps.get_mut(at) {
                step.splice(0..0, faults::MALFORMED_EVENT.iter().copied());
            }
            return (steps, offsets, StreamEnd::Complete);
        }
        Some(StreamFault::Truncate(keep)) => (keep, StreamEnd::Complete),
        Some(StreamFault::Reset(keep)) => (keep, StreamEnd::Reset),
        Some(StreamFault::Stall(keep)) => (keep, StreamEnd::Stall),
    };
    steps.truncate(keep);
    offsets.truncate(keep);
    (steps, offsets, end)
}

/// A delay in milliseconds from a request header, 0 to [`MAX_DELAY_MS`].
fn delay_header(host: &impl Host, name: &str) -> Result<Option<Duration>, ApiError> {
    let Some(value) = host.request_header(name) else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&ms| ms <= MAX_DELAY_MS)
        .map(|ms| Some(Duration::from_millis(ms)))
        .ok_or_else(|| {
            let expected = format!("whole milliseconds from 0 to {MAX_DELAY_MS}");
            invalid_header(name, &String::from_utf8_lossy(value), &expected)
        })
}

/// Records how long the first token of a streamed reply took, from the complete request.
fn record_ttft(host: &mut impl Host, started: Instant) {
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    host.record(Histogram::TimeToFirstTokenMs, millis);
}
