//! Faults on request, for both paths: reading them from the request's headers, the scenario
//! counts and the fault dice, and answering a status fault. In mock mode the mock breaks its own
//! streams; with `mock.faults.upstream`, a forwarded request's status fault is answered here in
//! place of the provider, and its stream fault breaks the real stream as its bytes leave (after
//! translation and the guard), without building anything per event.

use std::sync::Arc;
use std::time::Duration;

use super::passthrough::ReplyKind;
use super::{Filter, Outcome, State};
use crate::api::openai::ApiError;
use crate::api::routes::Endpoint;
use crate::host::pacing::PacingHandle;
use crate::host::stats::{Counter, Histogram};
use crate::host::{BodyStatus, Header, Host};
use crate::mock::faults::{self, Broken, ErrorReply, StreamBreaker, StreamFault};

/// The request headers that ask for faults: with `mock.faults.upstream` they are llm-edge's, so
/// they go no further (an upstream that is itself a mock would apply them again).
const FAULT_HEADERS: [&str; 4] = [
    faults::SCENARIO_HEADER,
    faults::STATUS_HEADER,
    faults::STREAM_HEADER,
    faults::SCENARIO_KEY_HEADER,
];

/// An error reply that ends a request before it is answered or forwarded.
pub(super) struct Refusal {
    reply: ErrorReply,
    outcome: Outcome,
}

impl Refusal {
    /// The `400` of a request whose control header llm-edge does not understand.
    pub(super) fn invalid(error: ApiError) -> Box<Self> {
        Box::new(Self {
            reply: ErrorReply {
                error,
                headers: Vec::new(),
            },
            outcome: Outcome::InvalidRequest,
        })
    }
}

/// A forwarded request's stream fault, applied to its reply when that is an event stream.
#[derive(Debug)]
pub(super) struct ChaosStream {
    breaker: StreamBreaker,
    /// The reply was seen to be an event stream the fault applies to (at its first piece).
    checked: bool,
    /// The wake that resets the stream once the piece before the reset has gone on.
    _pacing: Option<PacingHandle>,
}

impl Filter {
    /// Reads the faults a request asks for, or the dice draw: its stream fault, or the error
    /// reply that ends it (a status fault, or a `400` for a fault header llm-edge cannot read).
    pub(super) fn plan_faults(
        &self,
        host: &impl Host,
        model: &str,
    ) -> Result<Option<StreamFault>, Box<Refusal>> {
        let requested = requested_fault(host).map_err(Refusal::invalid)?;
        let scenario = self.scenario_fault(host).map_err(Refusal::invalid)?;
        let fault = requested
            .or(scenario)
            .or_else(|| self.context.fault_dice.roll());
        if let Some(status) = fault {
            let reply = faults::error_for_status(status, model)
                .expect("every fault status has an OpenAI error");
            return Err(Box::new(Refusal {
                reply,
                outcome: Outcome::Fault,
            }));
        }
        let Some(value) = host.request_header(faults::STREAM_HEADER) else {
            return Ok(None);
        };
        let value = String::from_utf8_lossy(value);
        StreamFault::parse(&value).map(Some).ok_or_else(|| {
            Refusal::invalid(invalid_header(
                faults::STREAM_HEADER,
                &value,
                "truncate:<n>, reset:<n>, malformed:<n> or stall:<n>",
            ))
        })
    }

    /// Answers with an error reply that the plan decided on; a fault is counted as one.
    pub(super) fn refuse(&mut self, host: &mut impl Host, refusal: Refusal) {
        let Refusal { reply, outcome } = refusal;
        if outcome == Outcome::Fault {
            let status = reply.error.status.to_string();
            host.count(Counter::Faults, &[&status], 1);
        }
        self.send_error(host, &reply.error, &reply.headers, outcome);
    }

    /// The status a scenario's request fails with, while its key is among its first
    /// `fail_first` requests.
    fn scenario_fault(&self, host: &impl Host) -> Result<Option<u16>, ApiError> {
        let Some(key) = host.request_header(faults::SCENARIO_KEY_HEADER) else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > faults::MAX_SCENARIO_KEY_BYTES {
            let expected = format!("a key of 1 to {} bytes", faults::MAX_SCENARIO_KEY_BYTES);
            let shown = String::from_utf8_lossy(&key[..key.len().min(32)]).into_owned();
            return Err(invalid_header(
                faults::SCENARIO_KEY_HEADER,
                &shown,
                &expected,
            ));
        }
        Ok(self.context.scenarios.fail(key))
    }

    /// A request about to be forwarded, with `mock.faults.upstream`: a status fault is answered
    /// here and the provider never called (`Err(())`); else its stream fault, if any, to break
    /// the reply with. The fault headers go no further either way.
    pub(super) fn upstream_faults(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        model: &str,
    ) -> Result<Option<Box<ChaosStream>>, ()> {
        // The endpoints the mock takes faults on.
        let faulted = matches!(
            endpoint,
            Endpoint::ChatCompletions
                | Endpoint::Completions
                | Endpoint::Responses
                | Endpoint::Messages
                | Endpoint::Embeddings
        );
        if !faulted || !self.config().mock.faults.apply_upstream() {
            return Ok(None);
        }
        let planned = self.plan_faults(host, model);
        for name in FAULT_HEADERS {
            host.set_request_header(name, None);
        }
        match planned {
            Ok(fault) => Ok(fault.map(|fault| {
                Box::new(ChaosStream {
                    breaker: StreamBreaker::new(fault),
                    checked: false,
                    _pacing: None,
                })
            })),
            Err(refusal) => {
                self.refuse(host, *refusal);
                Err(())
            }
        }
    }

    /// A response body piece of a forwarded request: read, translated and guarded as always;
    /// then, when a stream fault was planned and the reply is an event stream, broken as the
    /// fault says on the bytes that leave.
    pub(super) fn forwarded_reply_body(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> BodyStatus {
        let State::Proxying(forwarding) = &mut self.state else {
            return self.proxied_reply_body(host, end_of_stream);
        };
        let Some(mut chaos) = forwarding.chaos.take() else {
            return self.proxied_reply_body(host, end_of_stream);
        };
        if !chaos.checked {
            // Known since the reply's headers; a reply that is not a stream keeps no fault.
            if forwarding.kind != ReplyKind::EventStream || !forwarding.accounting.upstream_ok {
                return self.proxied_reply_body(host, end_of_stream);
            }
            chaos.checked = true;
            host.count(Counter::Faults, &[chaos.breaker.fault().kind()], 1);
        }
        let mut capture = Capture {
            host: &mut *host,
            replaced: None,
        };
        let status = self.proxied_reply_body(&mut capture, end_of_stream);
        let replaced = capture.replaced;
        if status != BodyStatus::Continue {
            // Refused meanwhile: what goes on is llm-edge's own reply.
            return status;
        }
        let rewritten = replaced.is_some();
        let mut data = replaced.unwrap_or_else(|| {
            let mut chunk = Vec::new();
            host.read_response_chunk(&mut chunk);
            chunk
        });
        let before = data.len();
        let status = match chaos.breaker.piece(&mut data, end_of_stream) {
            broken @ (Broken::Pass | Broken::PassThenReset) => {
                if rewritten || data.len() != before {
                    host.replace_response_chunk(&data);
                }
                if broken == Broken::PassThenReset {
                    // Reset once this piece has gone on: at the wake, or the next piece.
                    chaos._pacing = host.pace(&[Duration::ZERO]);
                }
                status
            }
            Broken::Reset => {
                host.reset_stream(Outcome::Fault.details());
                BodyStatus::StopIterationNoBuffer
            }
            Broken::Hold => {
                host.replace_response_chunk(&[]);
                BodyStatus::StopIterationNoBuffer
            }
        };
        // Unless the reply's end has been accounted by now, the stream still owes what its
        // fault holds (the reset after this piece, the stall, the truncation), or it is spent.
        if let State::Proxying(forwarding) = &mut self.state {
            if !chaos.breaker.is_spent() {
                forwarding.chaos = Some(chaos);
            }
        }
        status
    }

    /// A wake on a forwarded stream: the reset a `reset` fault owes, now that the piece before
    /// it has gone on.
    pub(super) fn reset_owed_stream(&mut self, host: &mut impl Host) {
        let State::Proxying(forwarding) = &mut self.state else {
            return;
        };
        let Some(chaos) = forwarding.chaos.as_deref_mut() else {
            return;
        };
        if chaos.breaker.owes_reset() {
            chaos.breaker.reset_done();
            chaos._pacing = None;
            host.reset_stream(Outcome::Fault.details());
        }
    }
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
pub(super) fn invalid_header(name: &str, value: &str, allowed: &str) -> ApiError {
    ApiError::bad_request(
        format!("Invalid value for header '{name}': {value:?}. Expected {allowed}."),
        None,
        Some("invalid_value"),
    )
}

/// The host, but a replaced response chunk is kept back for the stream fault to break, rather
/// than sent on: so the fault reads exactly the bytes that would leave.
struct Capture<'h, H: Host> {
    host: &'h mut H,
    replaced: Option<Vec<u8>>,
}

impl<H: Host> Host for Capture<'_, H> {
    type RoutePolicy = H::RoutePolicy;

    fn replace_response_chunk(&mut self, data: &[u8]) {
        self.replaced = Some(data.to_vec());
    }

    fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.host.request_header(name)
    }
    fn request_header_count(&self, name: &str) -> usize {
        self.host.request_header_count(name)
    }
    fn route_policy(&self) -> Option<Arc<Self::RoutePolicy>> {
        self.host.route_policy()
    }
    fn request_body_len(&self) -> usize {
        self.host.request_body_len()
    }
    fn read_request_body(&self, out: &mut Vec<u8>) {
        self.host.read_request_body(out);
    }
    fn ensure_buffer_limit(&mut self, bytes: u64) {
        self.host.ensure_buffer_limit(bytes);
    }
    fn send_response(&mut self, status: u16, headers: &[Header<'_>], body: &[u8], details: &str) {
        self.host.send_response(status, headers, body, details);
    }
    fn send_response_headers(&mut self, status: u16, headers: &[Header<'_>]) {
        self.host.send_response_headers(status, headers);
    }
    fn send_response_data(&mut self, data: &[u8], end_stream: bool) {
        self.host.send_response_data(data, end_stream);
    }
    fn count(&mut self, counter: Counter, labels: &[&str], value: u64) {
        self.host.count(counter, labels, value);
    }
    fn record(&mut self, histogram: Histogram, value: u64) {
        self.host.record(histogram, value);
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.host.set_request_header(name, value);
    }
    fn replace_request_body(&mut self, body: &[u8]) {
        self.host.replace_request_body(body);
    }
    fn clear_route_cache(&mut self) {
        self.host.clear_route_cache();
    }
    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.host.response_header(name)
    }
    fn read_response_chunk(&self, out: &mut Vec<u8>) {
        self.host.read_response_chunk(out);
    }
    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.host.set_response_header(name, value);
    }
    fn response_body_len(&self) -> usize {
        self.host.response_body_len()
    }
    fn read_response_body(&self, out: &mut Vec<u8>) {
        self.host.read_response_body(out);
    }
    fn replace_response_body(&mut self, body: &[u8]) {
        self.host.replace_response_body(body);
    }
    fn set_metadata(&mut self, key: &str, value: &str) {
        self.host.set_metadata(key, value);
    }
    fn reset_stream(&mut self, details: &str) {
        self.host.reset_stream(details);
    }
    fn pace(&mut self, offsets: &[Duration]) -> Option<PacingHandle> {
        self.host.pace(offsets)
    }
}
