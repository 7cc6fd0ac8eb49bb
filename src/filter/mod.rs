//! The per-stream logic: decide whether a request is ours, buffer its body, answer it.
//!
//! Written against [`Host`], never against Envoy, so every path here is unit-tested in memory.
//! Body hooks see the body **in chunks**: a call with `end_of_stream == false` is not the whole
//! body, and HTTP/1.1 ends with an extra empty call that carries `end_of_stream == true`.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::accounting::budgets::{Budgets, Need};
use crate::api::anthropic::{self, MessagesRequest};
use crate::api::httpbun::{self, HttpbunEndpoint, HttpbunError};
use crate::api::openai::chat::{ChatRequest, Usage};
use crate::api::openai::completions::CompletionRequest;
use crate::api::openai::embeddings::EmbeddingsRequest;
use crate::api::openai::responses::ResponsesRequest;
use crate::api::openai::{self, ApiError};
use crate::api::routes::{Endpoint, RequestPath};
use crate::config::{FilterConfig, Mode, UnclaimedPaths};
use crate::edge::guard::Masker;
use crate::filter::route_policy::RoutePolicy;
use crate::host::pacing::PacingHandle;
use crate::host::stats::{Counter, Histogram};
use crate::host::{BodyStatus, HeadersStatus, Host};
use crate::mock::config::MAX_DELAY_MS;
use crate::mock::faults::{self, ErrorReply, FaultDice, StreamFault};
use crate::mock::{self, MockReply, Timing};
use passthrough::Accounting;

/// Request header overriding the configured time to first token, in milliseconds.
pub const TTFT_HEADER: &str = "x-llm-edge-ttft-ms";
/// Request header overriding the configured inter-token latency, in milliseconds.
pub const ITL_HEADER: &str = "x-llm-edge-itl-ms";

/// What every stream of one filter config shares: the parsed config and the live state it
/// runs with.
#[derive(Debug)]
pub struct FilterContext {
    /// The parsed `filter_config`, its guard's detectors compiled.
    pub config: FilterConfig,
    /// The live state: shared with the routes that extend or replace this config, so a route
    /// cannot start a ledger, a fault sequence or a label cap afresh.
    pub runtime: Runtime,
}

/// The live state of a listener's config: handles that per-route policies share rather than
/// copy.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Draws the configured fault rates.
    pub fault_dice: Arc<FaultDice>,
    /// The model names with a stats label of their own.
    pub model_labels: Arc<ModelLabels>,
    /// The token budgets, shared by every worker.
    pub budgets: Arc<Budgets>,
    /// The budget keys with a stats label of their own.
    pub budget_key_labels: Arc<ModelLabels>,
}

impl FilterContext {
    /// The context of a parsed config, with live state of its own; its timer thread starts
    /// when first needed.
    pub fn new(config: FilterConfig) -> Self {
        let runtime = Runtime {
            fault_dice: Arc::new(FaultDice::new(&config.mock.faults)),
            model_labels: Arc::default(),
            budgets: Arc::new(Budgets::new(&config.budgets)),
            budget_key_labels: Arc::default(),
        };
        Self::with_runtime(config, runtime)
    }

    /// The context of a parsed config running with existing live state.
    pub fn with_runtime(config: FilterConfig, runtime: Runtime) -> Self {
        Self { config, runtime }
    }
}

/// Streams reach the live state as `context.budgets`, `context.fault_dice`, ….
impl std::ops::Deref for FilterContext {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

/// What to do with request trailers after the filter has seen them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailersStatus {
    /// Pass the trailers on.
    Continue,
    /// Hold them: the filter has answered the request.
    StopIteration,
}

/// Where a stream stands.
#[derive(Debug)]
enum State {
    /// Headers not seen yet.
    Start,
    /// Not a request we handle: everything passes through untouched.
    PassThrough,
    /// A handled request whose body is being buffered.
    Buffering(Endpoint),
    /// A whole reply waits for its due time; nothing has been sent yet.
    Delayed {
        reply: MockReply,
        _pacing: PacingHandle,
    },
    /// A streamed reply's headers are out; step `i` goes out at `on_scheduled(i)`.
    Streaming {
        steps: Vec<Vec<u8>>,
        end: StreamEnd,
        started: Instant,
        _pacing: PacingHandle,
    },
    /// Pass-through mode: a request whose body is being buffered for the transforms.
    Transforming(Endpoint),
    /// Pass-through mode: a request sent on upstream; its reply is being accounted.
    Proxying(Box<Accounting>),
    /// The whole request is in and being answered or forwarded: nothing has been sent yet, so
    /// a failure here can still answer OpenAI's 500.
    Deciding,
    /// A local reply has been sent, or the reply is accounted; nothing more to do.
    Answered,
}

/// How a streamed reply ends after its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// The last step ends the stream.
    Complete,
    /// The stream is reset (a `reset` fault).
    Reset,
    /// The stream stays open with nothing more to come (a `stall` fault).
    Stall,
}

/// What the request's headers and the fault dice decided, before the reply is made.
struct Plan {
    timing: Timing,
    stream_fault: Option<StreamFault>,
}

/// A request that generates text: chat completions and legacy completions.
trait GenerationRequest: Sized {
    fn parse(body: &[u8]) -> Result<Self, ApiError>;
    fn model(&self) -> &str;
    fn set_model(&mut self, model: String);
    fn stream(&self) -> bool;
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError>;
}

impl GenerationRequest for ChatRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        ChatRequest::parse(body)
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn set_model(&mut self, model: String) {
        self.model = model;
    }
    fn stream(&self) -> bool {
        self.stream
    }
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError> {
        mock::chat_completion(&config.mock, config.tokenizer, timing, self, header)
    }
}

impl GenerationRequest for CompletionRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        CompletionRequest::parse(body)
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn set_model(&mut self, model: String) {
        self.model = model;
    }
    fn stream(&self) -> bool {
        self.stream
    }
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError> {
        mock::text_completion(&config.mock, config.tokenizer, timing, self, header)
    }
}

impl GenerationRequest for ResponsesRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        ResponsesRequest::parse(body)
    }
    fn model(&self) -> &str {
        &self.chat.model
    }
    fn set_model(&mut self, model: String) {
        self.chat.model = model;
    }
    fn stream(&self) -> bool {
        self.chat.stream
    }
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError> {
        mock::response(&config.mock, config.tokenizer, timing, self, header)
    }
}

impl GenerationRequest for MessagesRequest {
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        MessagesRequest::parse(body)
    }
    fn model(&self) -> &str {
        &self.chat.model
    }
    fn set_model(&mut self, model: String) {
        self.chat.model = model;
    }
    fn stream(&self) -> bool {
        self.chat.stream
    }
    fn mock<'h>(
        &self,
        config: &FilterConfig,
        timing: &Timing,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<MockReply, ApiError> {
        mock::anthropic_message(&config.mock, config.tokenizer, timing, self, header)
    }
}

/// An error reply that ends a request before the mock answers it.
struct Refusal {
    reply: ErrorReply,
    outcome: Outcome,
}

/// Applies a stream fault to a reply's steps and their due times.
fn break_stream(
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

/// The status a request asks to fail with: `x-test-scenario` or `x-llm-edge-fault`.
fn requested_fault(host: &impl Host) -> Result<Option<u16>, ApiError> {
    if let Some(value) = host.request_header(faults::SCENARIO_HEADER) {
        return match value.to_ascii_lowercase().as_slice() {
            b"rate-limit" => Ok(Some(429)),
            b"error" => Ok(Some(500)),
            _ => Err(invalid_header(
                faults::SCENARIO_HEADER,
                &String::from_utf8_lossy(value),
                "rate-limit or error",
            )),
        };
    }
    let Some(value) = host.request_header(faults::STATUS_HEADER) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(value);
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|status| faults::FAULT_STATUSES.contains(status))
        .map(Some)
        .ok_or_else(|| {
            let allowed = faults::FAULT_STATUSES.map(|s| s.to_string()).join(", ");
            invalid_header(faults::STATUS_HEADER, &text, &allowed)
        })
}

/// 400 for a control header with a value llm-edge does not understand.
fn invalid_header(name: &str, value: &str, allowed: &str) -> ApiError {
    ApiError::bad_request(
        format!("Invalid value for header '{name}': {value:?}. Expected {allowed}."),
        None,
        Some("invalid_value"),
    )
}

/// How a handled request ended: a stats label and the `%RESPONSE_CODE_DETAILS%` of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Mock,
    InvalidRequest,
    TooLarge,
    MethodNotAllowed,
    InternalError,
    Fault,
    OverBudget,
    BadGateway,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Mock => "ok",
            Self::InvalidRequest => "invalid_request",
            Self::TooLarge => "too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InternalError => "internal_error",
            Self::Fault => "fault",
            Self::OverBudget => "over_budget",
            Self::BadGateway => "bad_gateway",
        }
    }

    fn details(self) -> &'static str {
        match self {
            Self::Mock => "llm_edge_mock",
            Self::InvalidRequest => "llm_edge_invalid_request",
            Self::TooLarge => "llm_edge_request_too_large",
            Self::MethodNotAllowed => "llm_edge_method_not_allowed",
            Self::InternalError => "llm_edge_internal_error",
            Self::Fault => "llm_edge_fault_injected",
            Self::OverBudget => "llm_edge_over_budget",
            Self::BadGateway => "llm_edge_upstream_reply_refused",
        }
    }
}

/// How many distinct model names get their own token-stat label; later ones count as `other`,
/// so that clients cannot grow the proxy's stats without bound.
const MAX_MODEL_LABELS: usize = 64;

/// The model names that have a stats label of their own.
#[derive(Debug, Default)]
pub struct ModelLabels {
    seen: RwLock<HashSet<String>>,
}

impl ModelLabels {
    /// `model`, if it has (or can still get) a label of its own, else `other`.
    pub fn label<'a>(&self, model: &'a str) -> &'a str {
        // Workers share this on every request: the common case only takes the read lock.
        if self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(model)
        {
            return model;
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(model) {
            return model;
        }
        if seen.len() < MAX_MODEL_LABELS {
            seen.insert(model.to_owned());
            return model;
        }
        "other"
    }
}

/// One HTTP stream's filter.
#[derive(Debug)]
pub struct Filter {
    context: Arc<FilterContext>,
    state: State,
    /// The `endpoint` stats label of the request, once its path is known.
    endpoint_label: &'static str,
    /// Errors are answered in Anthropic's envelope on its Messages endpoint, else OpenAI's.
    anthropic_errors: bool,
    /// This request's masked values, for restoring them in its reply.
    masker: Masker,
    /// The `x-ratelimit-*-tokens` headers of this request's reply, once a budget admitted it.
    rate_headers: Vec<(&'static str, String)>,
}

impl Filter {
    /// A filter for a new stream, sharing its config's context.
    pub fn new(context: Arc<FilterContext>) -> Self {
        Self {
            context,
            state: State::Start,
            endpoint_label: "",
            anthropic_errors: false,
            masker: Masker::default(),
            rate_headers: Vec::new(),
        }
    }

    /// Whether a local reply to this stream has started: after that, failing means a reset.
    pub fn has_answered(&self) -> bool {
        matches!(self.state, State::Answered | State::Streaming { .. })
    }

    fn config(&self) -> &FilterConfig {
        &self.context.config
    }

    /// Request headers: claim the OpenAI endpoints under `api_base_path`, pass everything else.
    pub fn on_request_headers(
        &mut self,
        host: &mut impl Host<RoutePolicy = RoutePolicy>,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let mut reroute = self.drop_model_header(host);
        if let Some(policy) = host.route_policy() {
            match &*policy {
                RoutePolicy::Disabled => {
                    self.state = State::PassThrough;
                    if reroute {
                        host.clear_route_cache();
                    }
                    return HeadersStatus::Continue;
                }
                RoutePolicy::Replace(replacement) => {
                    self.context = replacement.merged_with(&self.context);
                }
                RoutePolicy::Extend(extension) => {
                    self.context = extension.merged_with(&self.context);
                }
            }
            reroute |= self.drop_model_header(host);
        }
        let claimed = self.claim(host);
        reroute |= claimed.as_ref().is_some_and(|(_, rewritten)| *rewritten);
        if reroute {
            host.clear_route_cache();
        }
        let Some((endpoint, _)) = claimed else {
            return self.on_unclaimed_path(host);
        };
        self.endpoint_label = endpoint.label();
        self.anthropic_errors = matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens);
        if self.config().mode == Mode::Passthrough {
            return self.on_passthrough_headers(host, endpoint, end_of_stream);
        }
        let method = host.request_header(":method").unwrap_or_default();
        if method != endpoint.method().as_bytes() {
            if let Endpoint::Httpbun(httpbun) = endpoint {
                let body = httpbun.method_not_allowed();
                let allow = [("allow", "POST")];
                self.send_body(host, 405, &allow, &body, Outcome::MethodNotAllowed);
                return HeadersStatus::StopIteration;
            }
            let method = String::from_utf8_lossy(method).into_owned();
            let error =
                ApiError::method_not_allowed(&method, &endpoint.path(&self.config().api_base_path));
            self.send_error(
                host,
                &error,
                &[("allow", endpoint.method())],
                Outcome::MethodNotAllowed,
            );
            return HeadersStatus::StopIteration;
        }
        if endpoint.method() == "GET" {
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

    /// Removes the model header a client sent: it is llm-edge's to set, so no client may pick a
    /// route with it, on any path. Returns whether there was one (the route must be chosen
    /// again without it).
    fn drop_model_header(&self, host: &mut impl Host) -> bool {
        let name = &self.config().transform.model_header;
        if host.request_header(name).is_none() {
            return false;
        }
        let name = name.clone();
        host.set_request_header(&name, None);
        true
    }

    /// The endpoint the request's path names, read as an upstream would route it, and whether
    /// `:path` was rewritten to its canonical spelling (so that what llm-edge reads, guards and
    /// charges is what the upstream serves).
    fn claim(&self, host: &mut impl Host) -> Option<(Endpoint, bool)> {
        let config = self.config();
        let raw = host.request_header(":path").unwrap_or_default();
        let path = RequestPath::parse(raw);
        let (endpoint, canonical) =
            match Endpoint::for_profile(config.profile, &config.api_base_path, &path) {
                Some(endpoint) => {
                    let canonical = endpoint.canonical_path(&config.api_base_path);
                    (endpoint, canonical)
                }
                None if config.mode == Mode::Passthrough => {
                    (Endpoint::alias_of(&path)?, Some(path.canonical_escaped()))
                }
                None => return None,
            };
        let rewritten = canonical
            .map(|canonical| path.rewritten(&canonical))
            .filter(|rewritten| rewritten.as_bytes() != raw);
        let changed = rewritten.is_some();
        if let Some(rewritten) = rewritten {
            host.set_request_header(":path", Some(&rewritten));
        }
        Some((endpoint, changed))
    }

    /// A path llm-edge does not claim: it passes untouched, or gets OpenAI's 404 when the config
    /// refuses unclaimed paths.
    fn on_unclaimed_path(&mut self, host: &mut impl Host) -> HeadersStatus {
        if self.config().unclaimed_paths == UnclaimedPaths::Pass {
            self.state = State::PassThrough;
            return HeadersStatus::Continue;
        }
        let method = String::from_utf8_lossy(host.request_header(":method").unwrap_or_default());
        let path = String::from_utf8_lossy(host.request_header(":path").unwrap_or_default());
        let error = ApiError::unknown_url(&method, &path);
        self.endpoint_label = "unclaimed";
        self.send_error(host, &error, &[], Outcome::InvalidRequest);
        HeadersStatus::StopIteration
    }

    /// A request body chunk: buffer until the end, then answer.
    pub fn on_request_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> BodyStatus {
        match &self.state {
            State::Start | State::PassThrough | State::Proxying(_) => BodyStatus::Continue,
            State::Deciding | State::Answered | State::Delayed { .. } | State::Streaming { .. } => {
                BodyStatus::StopIterationNoBuffer
            }
            State::Buffering(_) | State::Transforming(_) => {
                let limit = self.config().max_request_body_bytes;
                // Checked before Envoy adds the chunk to its buffer, so our 413 always wins.
                if host.request_body_len() as u64 > limit {
                    self.send_error(
                        host,
                        &ApiError::request_too_large(limit),
                        &[],
                        Outcome::TooLarge,
                    );
                    return BodyStatus::StopIterationNoBuffer;
                }
                if !end_of_stream {
                    return BodyStatus::StopIterationAndBuffer;
                }
                self.body_complete(host)
            }
        }
    }

    /// Request trailers end the body of a request that has them.
    pub fn on_request_trailers(&mut self, host: &mut impl Host) -> TrailersStatus {
        match &self.state {
            State::Start | State::PassThrough | State::Proxying(_) => TrailersStatus::Continue,
            State::Deciding | State::Answered | State::Delayed { .. } | State::Streaming { .. } => {
                TrailersStatus::StopIteration
            }
            State::Buffering(_) | State::Transforming(_) => match self.body_complete(host) {
                BodyStatus::Continue => TrailersStatus::Continue,
                _ => TrailersStatus::StopIteration,
            },
        }
    }

    /// The whole request body is in: answer it (mock) or send it on (pass-through).
    fn body_complete(&mut self, host: &mut impl Host) -> BodyStatus {
        match std::mem::replace(&mut self.state, State::Deciding) {
            State::Buffering(endpoint) => {
                let mut body = Vec::with_capacity(host.request_body_len());
                host.read_request_body(&mut body);
                self.answer(host, endpoint, &body);
                BodyStatus::StopIterationNoBuffer
            }
            State::Transforming(endpoint) => self.forward(host, &endpoint),
            other => {
                self.state = other;
                BodyStatus::Continue
            }
        }
    }

    /// Response headers: pass-through replies are inspected, local replies pass.
    /// `end_of_stream`: the reply has no body.
    pub fn on_response_headers(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> HeadersStatus {
        self.on_proxied_response_headers(host, end_of_stream)
    }

    /// A response body chunk: pass-through replies are accounted, local replies pass.
    pub fn on_response_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> BodyStatus {
        self.on_proxied_response_body(host, end_of_stream)
    }

    /// Answers with OpenAI's 500 after a bug, unless a reply already went out.
    pub fn fail_closed(&mut self, host: &mut impl Host) {
        if !self.has_answered() {
            self.send_error(host, &ApiError::internal(), &[], Outcome::InternalError);
        }
    }

    fn answer(&mut self, host: &mut impl Host, endpoint: Endpoint, body: &[u8]) {
        // Transforms and the guard run before the mock, so echo shows what a model would see.
        let transformed = match endpoint.method() {
            "POST" => match self.prepared_body(host, body) {
                Ok(transformed) => transformed,
                Err(()) => return,
            },
            _ => None,
        };
        let body = transformed.as_deref().unwrap_or(body);
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
    }

    /// Answers with an error reply that `plan` decided on.
    fn refuse(&mut self, host: &mut impl Host, refusal: Refusal) {
        let Refusal { reply, outcome } = refusal;
        if outcome == Outcome::Fault {
            let status = reply.error.status.to_string();
            host.count(Counter::Faults, &[&status], 1);
        }
        self.send_error(host, &reply.error, &reply.headers, outcome);
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

    /// Counts an answered request and its tokens.
    fn count_answer(&self, host: &mut impl Host, model: &str, usage: Usage) {
        let model = self.context.model_labels.label(model);
        let outcome = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &outcome, 1);
        host.count(Counter::PromptTokens, &[model], usage.prompt_tokens.into());
        host.count(
            Counter::CompletionTokens,
            &[model],
            usage.completion_tokens.into(),
        );
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
        let streamed = reply.content_type == mock::EVENT_STREAM;
        let offsets = match (timing.is_instant(), streamed) {
            (true, _) => Vec::new(),
            (false, true) => timing.offsets(reply.steps.len()),
            (false, false) => timing.offsets(1),
        };
        let labels = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &labels, 1);
        let reply = MockReply {
            content_type: reply.content_type,
            steps: reply.steps,
            offsets,
            usage: Usage {
                prompt_tokens: 0,
                completion_tokens: 0,
            },
        };
        self.send_reply(host, reply, None, started);
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
        let tokens = budgets::prompt_tokens(
            self.config().tokenizer,
            &Endpoint::CountTokens,
            body,
            &model,
        );
        let body = format!("{{\"input_tokens\":{tokens}}}");
        self.send_json(host, body.as_bytes());
    }

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

    /// Answers a text-generating request (chat or legacy completion): parse, faults, model,
    /// mock reply, stats, then send at once or paced.
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
        let header = |name: &str| host.request_header(name);
        let reply = match request.mock(self.config(), &plan.timing, header) {
            Ok(reply) => reply,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return;
            }
        };
        let fault = plan.stream_fault.filter(|_| request.stream());
        let steps = reply.steps.len();
        if self
            .charge_mock(host, request.model(), reply.usage, fault, steps)
            .is_err()
        {
            return;
        }
        self.count_answer(host, request.model(), reply.usage);
        if let Some(fault) = fault {
            host.count(Counter::Faults, &[fault.kind()], 1);
        }
        self.send_reply(host, reply, fault, started);
    }

    /// Admits a mock reply under the budgets and charges it at once (its usage is known before
    /// it is sent): all of it, or the prompt and the share of steps sent of a stream cut short.
    /// `Err(())` after answering 429.
    fn charge_mock(
        &mut self,
        host: &mut impl Host,
        model: &str,
        usage: Usage,
        fault: Option<StreamFault>,
        steps: usize,
    ) -> Result<(), ()> {
        let prompt = u64::from(usage.prompt_tokens);
        let completion = u64::from(usage.completion_tokens);
        let need = Need::exactly(prompt + completion);
        let Some(claim) = self.admit(host, model, need, || need)? else {
            return Ok(());
        };
        let sent = match fault {
            Some(
                StreamFault::Truncate(kept) | StreamFault::Reset(kept) | StreamFault::Stall(kept),
            ) => {
                let steps = u64::try_from(steps.max(1)).unwrap_or(u64::MAX);
                let kept = u64::try_from(kept).unwrap_or(u64::MAX).min(steps);
                completion * kept / steps
            }
            Some(StreamFault::Malformed(_)) | None => completion,
        };
        self.charge(host, &claim, prompt + sent);
        Ok(())
    }

    /// Reads how this request is to be answered from its headers and the fault dice: an error
    /// reply (with its `details`) ends it here.
    fn plan(&self, host: &impl Host, model: &str) -> Result<Plan, Box<Refusal>> {
        let invalid = |error| {
            let reply = ErrorReply {
                error,
                headers: Vec::new(),
            };
            Box::new(Refusal {
                reply,
                outcome: Outcome::InvalidRequest,
            })
        };
        let timing = self.timing(host).map_err(invalid)?;
        let requested = requested_fault(host).map_err(invalid)?;
        if let Some(status) = requested.or_else(|| self.context.fault_dice.roll()) {
            let reply = faults::error_for_status(status, model)
                .expect("every fault status has an OpenAI error");
            return Err(Box::new(Refusal {
                reply,
                outcome: Outcome::Fault,
            }));
        }
        let stream_fault = match host.request_header(faults::STREAM_HEADER) {
            None => None,
            Some(value) => {
                let value = String::from_utf8_lossy(value);
                let fault = StreamFault::parse(&value).ok_or_else(|| {
                    invalid(invalid_header(
                        faults::STREAM_HEADER,
                        &value,
                        "truncate:<n>, reset:<n>, malformed:<n> or stall:<n>",
                    ))
                })?;
                Some(fault)
            }
        };
        Ok(Plan {
            timing,
            stream_fault,
        })
    }

    /// Sends a mock reply: at once, paced, or broken as a stream fault asks.
    fn send_reply(
        &mut self,
        host: &mut impl Host,
        reply: MockReply,
        fault: Option<StreamFault>,
        started: Instant,
    ) {
        if reply.content_type != mock::EVENT_STREAM {
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
            ("content-type", reply.content_type),
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

    /// Sends a whole reply now, as one local reply.
    fn send_now(&mut self, host: &mut impl Host, reply: &MockReply) {
        let headers = self.reply_headers(&[("content-type", reply.content_type)]);
        let body = reply.steps.concat();
        host.send_response(200, &headers, &body, Outcome::Mock.details());
        self.state = State::Answered;
    }

    /// After a stream's last step: reset it if the fault says so; a stall just stops.
    fn end_stream(&mut self, host: &mut impl Host, end: StreamEnd) {
        if end == StreamEnd::Reset {
            host.reset_stream(Outcome::Fault.details());
        }
        self.state = State::Answered;
    }

    /// A paced reply's step is due: send it, and end the reply after the last one.
    pub fn on_scheduled(&mut self, host: &mut impl Host, event: u64) {
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

    /// The configured timing, with the request's header overrides.
    fn timing(&self, host: &impl Host) -> Result<Timing, ApiError> {
        let mut timing = Timing::from_config(&self.config().mock.latency);
        if let Some(ttft) = delay_header(host, TTFT_HEADER)? {
            timing.time_to_first_token = ttft;
        }
        if let Some(itl) = delay_header(host, ITL_HEADER)? {
            timing.inter_token = itl;
        }
        Ok(timing)
    }

    /// The request body limit; `None` after answering OpenAI's 413 to a request whose
    /// `content-length` already exceeds it.
    fn body_limit_unless_declared_larger(&mut self, host: &mut impl Host) -> Option<u64> {
        let limit = self.config().max_request_body_bytes;
        if content_length(host).is_some_and(|declared| declared > limit) {
            let error = ApiError::request_too_large(limit);
            self.send_error(host, &error, &[], Outcome::TooLarge);
            return None;
        }
        Some(limit)
    }

    /// Answers with an error in the endpoint's envelope: Anthropic's on its Messages API, else
    /// OpenAI's.
    fn send_error(
        &mut self,
        host: &mut impl Host,
        error: &ApiError,
        extra_headers: &[(&str, &str)],
        outcome: Outcome,
    ) {
        let body = if self.anthropic_errors {
            anthropic::error_json(error)
        } else {
            error.to_json()
        };
        self.send_body(host, error.status, extra_headers, &body, outcome);
    }

    /// Answers with a JSON body and counts the outcome.
    fn send_body(
        &mut self,
        host: &mut impl Host,
        status: u16,
        extra_headers: &[(&str, &str)],
        body: &[u8],
        outcome: Outcome,
    ) {
        let mut headers = self.reply_headers(&[("content-type", "application/json")]);
        headers.extend_from_slice(extra_headers);
        let labels = [self.endpoint_label, outcome.label()];
        host.count(Counter::Requests, &labels, 1);
        host.send_response(status, &headers, body, outcome.details());
        self.state = State::Answered;
    }
}

/// Records how long the first token of a streamed reply took, from the complete request.
fn record_ttft(host: &mut impl Host, started: Instant) {
    let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    host.record(Histogram::TimeToFirstTokenMs, millis);
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

/// The declared `content-length`, when present and numeric.
fn content_length(host: &impl Host) -> Option<u64> {
    let value = host.request_header("content-length")?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

mod budgets;
mod passthrough;
pub mod route_policy;

#[cfg(test)]
mod tests;
