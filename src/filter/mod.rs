//! The per-stream logic: decide whether a request is ours, buffer its body, answer it or send it
//! on.
//!
//! Written against [`Host`], never against Envoy, so every path here is unit-tested in memory.
//! Body hooks see the body **in chunks**: a call with `end_of_stream == false` is not the whole
//! body, and HTTP/1.1 ends with an extra empty call that carries `end_of_stream == true`.
//!
//! This file holds a stream's state and its hooks, in the order Envoy calls them; each hook hands
//! its work to the path the request takes, one file each:
//! - `claim`: which requests are ours (the route's policy, the path, the body limit);
//! - `mock_path`: answering locally (plans, pacing the reply);
//! - `chaos`: faults on request, for both paths (the mock's, and real streams broken as they
//!   leave);
//! - `passthrough`: the way through (transform, guard the request, the reply side);
//! - `accounting`: usage, model labels and dynamic metadata;
//! - `budgets`: reserve, charge, refund;
//! - `replies`: the error replies both paths send, and the outcome each counts.

use std::sync::Arc;
use std::time::Instant;

use crate::accounting::budgets::Budgets;
use crate::api::openai::ApiError;
use crate::api::routes::Endpoint;
use crate::config::{FilterConfig, Mode};
use crate::edge::guard::Masker;
use crate::filter::route_policy::RoutePolicy;
use crate::host::pacing::PacingHandle;
use crate::host::{BodyStatus, HeadersStatus, Host};
use crate::mock::MockReply;
use crate::mock::faults::{FaultDice, Scenarios};
use crate::mock::load::{Load, Slot};
use claim::Claimed;
use passthrough::Forwarding;
use replies::Outcome;

pub use accounting::ModelLabels;

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
    /// The simulated server load of `mock.load` (admission, queues, prefix cache, metrics),
    /// shared by every worker; none without that section.
    pub load: Option<Arc<Load>>,
    /// How many requests of each scenario key have failed so far.
    pub scenarios: Arc<Scenarios>,
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
            load: config
                .mock
                .load
                .clone()
                .map(|settings| Load::new(settings, &config.mock.models)),
            scenarios: Arc::new(Scenarios::new(&config.mock.faults)),
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
    Proxying(Box<Forwarding>),
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
    /// The `x-ratelimit-*-tokens` headers of this request's reply, once a budget admitted it,
    /// and `x-llm-edge-queue-ms` once the simulated load did.
    rate_headers: Vec<(&'static str, String)>,
    /// The place the simulated load gave this stream's reply; dropped with the stream, so a
    /// client that leaves early frees it.
    _load_slot: Option<Slot>,
}

/// The hooks, in the order Envoy calls them.
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
            _load_slot: None,
        }
    }

    /// Whether a local reply to this stream has started: after that, failing means a reset.
    pub fn has_answered(&self) -> bool {
        matches!(self.state, State::Answered | State::Streaming { .. })
    }

    fn config(&self) -> &FilterConfig {
        &self.context.config
    }

    /// Request headers: claim the endpoints under `api_base_path` (in pass-through, also the
    /// aliases an upstream serves) and hold the request for its body; everything else passes.
    pub fn on_request_headers(
        &mut self,
        host: &mut impl Host<RoutePolicy = RoutePolicy>,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let endpoint = match self.claim(host) {
            Claimed::Endpoint(endpoint) => endpoint,
            Claimed::Disabled => {
                self.state = State::PassThrough;
                return HeadersStatus::Continue;
            }
            Claimed::Unclaimed => return self.on_unclaimed_path(host),
        };
        match self.config().mode {
            Mode::Mock => self.hold_for_mock(host, endpoint, end_of_stream),
            Mode::Passthrough | Mode::Record => {
                self.hold_for_forwarding(host, endpoint, end_of_stream)
            }
        }
    }

    /// A request body chunk: buffer until the end, then answer or send on.
    pub fn on_request_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> BodyStatus {
        match &self.state {
            State::Start | State::PassThrough | State::Proxying(_) => BodyStatus::Continue,
            State::Deciding | State::Answered | State::Delayed { .. } | State::Streaming { .. } => {
                BodyStatus::StopIterationNoBuffer
            }
            State::Buffering(_) | State::Transforming(_) => {
                if self.refuse_if_over_limit(host) {
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

    /// The whole request body is in, at the body's end or its trailers: the mock answers it, or
    /// it is sent on.
    fn body_complete(&mut self, host: &mut impl Host) -> BodyStatus {
        match std::mem::replace(&mut self.state, State::Deciding) {
            State::Buffering(endpoint) => self.answer_body(host, endpoint),
            State::Transforming(endpoint) => self.forward(host, &endpoint, None),
            other => {
                self.state = other;
                BodyStatus::Continue
            }
        }
    }

    /// Response headers: a forwarded request's reply is inspected, local replies pass.
    /// `end_of_stream`: the reply has no body.
    pub fn on_response_headers(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> HeadersStatus {
        self.proxied_reply_headers(host, end_of_stream)
    }

    /// A response body chunk: a forwarded request's reply is accounted (and guarded), local
    /// replies pass.
    pub fn on_response_body(&mut self, host: &mut impl Host, end_of_stream: bool) -> BodyStatus {
        self.forwarded_reply_body(host, end_of_stream)
    }

    /// A paced local reply's step is due: send it, and end the reply after the last one. On a
    /// forwarded stream, the wake of a reset a stream fault owes.
    pub fn on_scheduled(&mut self, host: &mut impl Host, event: u64) {
        self.reset_owed_stream(host);
        self.send_due(host, event);
    }

    /// The stream is over: a forwarded request whose reply never ended (a stream cut short, a
    /// client gone) is charged for what was sent by then.
    pub fn on_stream_complete(&mut self, host: &mut impl Host) {
        self.abandon_recording(host);
        self.charge_forwarded(host);
    }

    /// Answers with OpenAI's 500 after a bug in any hook, unless a reply already went out.
    pub fn fail_closed(&mut self, host: &mut impl Host) {
        if !self.has_answered() {
            self.send_error(host, &ApiError::internal(), &[], Outcome::InternalError);
        }
    }
}

impl Drop for Filter {
    /// A claim still open when the filter goes (its stream's completion was never seen) is
    /// charged the same way, without stats.
    fn drop(&mut self) {
        self.settle_forwarded_quietly();
    }
}

mod accounting;
mod budgets;
mod chaos;
mod claim;
mod mock_path;
mod passthrough;
mod record;
mod replay;
mod replies;
pub mod route_policy;

#[cfg(test)]
mod tests;
