//! The local replies both paths send: errors in the endpoint's envelope, each counted with its
//! outcome, and the headers every local reply carries.

use super::{Filter, State};
use crate::api::anthropic;
use crate::api::openai::ApiError;
use crate::host::Host;
use crate::host::stats::Counter;

/// How a handled request ended: a stats label and the `%RESPONSE_CODE_DETAILS%` of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Mock,
    InvalidRequest,
    TooLarge,
    MethodNotAllowed,
    InternalError,
    Fault,
    OverBudget,
    BadGateway,
    FixtureMiss,
}

impl Outcome {
    /// The `outcome` label of the requests stat.
    pub(super) fn label(self) -> &'static str {
        match self {
            Self::Mock => "ok",
            Self::InvalidRequest => "invalid_request",
            Self::TooLarge => "too_large",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InternalError => "internal_error",
            Self::Fault => "fault",
            Self::OverBudget => "over_budget",
            Self::BadGateway => "bad_gateway",
            Self::FixtureMiss => "fixture_miss",
        }
    }

    /// The reply's `%RESPONSE_CODE_DETAILS%`.
    pub(super) fn details(self) -> &'static str {
        match self {
            Self::Mock => "llm_edge_mock",
            Self::InvalidRequest => "llm_edge_invalid_request",
            Self::TooLarge => "llm_edge_request_too_large",
            Self::MethodNotAllowed => "llm_edge_method_not_allowed",
            Self::InternalError => "llm_edge_internal_error",
            Self::Fault => "llm_edge_fault_injected",
            Self::OverBudget => "llm_edge_over_budget",
            Self::BadGateway => "llm_edge_upstream_reply_refused",
            Self::FixtureMiss => "llm_edge_fixture_miss",
        }
    }
}

impl Filter {
    /// Answers with an error in the endpoint's envelope: Anthropic's on its Messages API, else
    /// OpenAI's.
    pub(super) fn send_error(
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
    pub(super) fn send_body(
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

    /// The reply headers of this request: its content type and the rate-limit headers.
    pub(super) fn reply_headers<'a>(
        &'a self,
        base: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        let mut headers = base.to_vec();
        headers.extend(self.rate_headers.iter().map(|(n, v)| (*n, v.as_str())));
        headers
    }
}
