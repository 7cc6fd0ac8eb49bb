//! Replay, in mock mode with `mock.fixtures`: a request its fixture answers gets the recorded
//! reply (status, body or events, paced as configured), naming the fixture and its recording date
//! in headers; a miss gets what `on_miss` says.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::mock_path::break_stream;
use super::{Filter, Outcome, State, StreamEnd};
use crate::api::openai::{ApiError, parse_object};
use crate::api::routes::Endpoint;
use crate::fixtures::config::{Fixtures, OnMiss, ReplayTiming};
use crate::fixtures::index::{Fixture, Found, Reply};
use crate::host::Host;
use crate::host::stats::Counter;
use crate::mock::Timing;
use crate::mock::faults::StreamFault;

/// Reply header naming the fixture that answered (its id, as the fixture lister shows it).
pub const FIXTURE_HEADER: &str = "x-llm-edge-fixture";

/// Reply header giving the answering fixture's recording time (RFC 3339, UTC), so a stale one
/// shows.
pub const RECORDED_AT_HEADER: &str = "x-llm-edge-fixture-recorded-at";

/// What became of a request offered to replay.
pub(super) enum Replayed {
    /// A fixture answered, or the miss was answered as an error.
    Answered,
    /// The mock answers, as if there were no fixtures.
    Mock,
    /// The upstream answers.
    Forward,
}

impl Filter {
    /// Offers a request (its body after the transforms and the guard) to the fixtures.
    pub(super) fn replay(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        body: &[u8],
    ) -> Replayed {
        let context = std::sync::Arc::clone(&self.context);
        let Some(fixtures) = context.config.mock.fixtures.as_deref() else {
            return Replayed::Mock;
        };
        if matches!(endpoint, Endpoint::Httpbun(_)) {
            return Replayed::Mock;
        }
        let request = match parse_object(body) {
            Ok(fields) => Value::Object(fields),
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return Replayed::Answered;
            }
        };
        // Faults on request apply as to the mock's own replies, before any lookup.
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let fault = match self.plan_faults(host, model) {
            Ok(fault) => fault,
            Err(refusal) => {
                self.refuse(host, *refusal);
                return Replayed::Answered;
            }
        };
        let (fixture, result) = match fixtures.set.find(endpoint.label(), &request) {
            Found::Exact(fixture) => (fixture, "exact"),
            Found::Rule(fixture, _) => (fixture, "rule"),
            Found::Miss(key) => {
                host.count(Counter::FixtureReplays, &["miss"], 1);
                return match fixtures.on_miss {
                    OnMiss::Mock => Replayed::Mock,
                    OnMiss::Passthrough => Replayed::Forward,
                    OnMiss::Error => {
                        let error = ApiError::fixture_not_found(&key.to_hex());
                        self.send_error(host, &error, &[], Outcome::FixtureMiss);
                        Replayed::Answered
                    }
                };
            }
        };
        host.count(Counter::FixtureReplays, &[result], 1);
        if let Some(fault) = fault.filter(|_| matches!(fixture.reply, Reply::Events(_))) {
            host.count(Counter::Faults, &[fault.kind()], 1);
        }
        self.send_fixture(host, fixtures, fixture, fault);
        Replayed::Answered
    }

    /// Sends a fixture's reply: at once, or paced as `timing` says, a stream broken as its
    /// stream fault (if any) asks.
    fn send_fixture(
        &mut self,
        host: &mut impl Host,
        fixtures: &Fixtures,
        fixture: &Fixture,
        fault: Option<StreamFault>,
    ) {
        let usage = crate::api::openai::generation::Usage {
            prompt_tokens: saturate(fixture.usage.prompt_tokens),
            completion_tokens: saturate(fixture.usage.completion_tokens),
            cached_tokens: 0,
        };
        self.count_answer(host, &fixture.model, usage);
        let headers = self.reply_headers(&[
            ("content-type", fixture.content_type.as_str()),
            (FIXTURE_HEADER, fixture.id.as_str()),
            (RECORDED_AT_HEADER, fixture.recorded_at.as_str()),
        ]);
        let headers: Vec<(&str, &str)> = headers.into_iter().collect();
        // A reversible guard's placeholders, as recorded, become this request's values.
        let restorer = self.masker.restorer();
        let restore = |bytes: &[u8], event: bool| -> Vec<u8> {
            match &restorer {
                Some(restorer) if event => restorer.event(bytes).into_owned(),
                Some(restorer) => restorer.body(bytes).into_owned(),
                None => bytes.to_vec(),
            }
        };
        let (steps, recorded): (Vec<Vec<u8>>, Vec<Duration>) = match &fixture.reply {
            Reply::Whole(body) => (vec![restore(body, false)], vec![fixture.duration]),
            Reply::Events(events) => events
                .iter()
                .map(|(at, event)| (restore(event, true), *at))
                .unzip(),
        };
        let offsets = self.replay_offsets(fixtures, &recorded);
        let status = fixture.status;
        let whole = matches!(fixture.reply, Reply::Whole(_));
        let (steps, offsets, end) = if whole {
            (steps, offsets, StreamEnd::Complete)
        } else {
            break_stream(steps, offsets, fault)
        };
        if offsets.iter().all(Duration::is_zero) && whole {
            let body = steps.concat();
            host.send_response(status, &headers, &body, Outcome::Mock.details());
            self.state = State::Answered;
            return;
        }
        let mut headers = headers;
        if !whole {
            headers.push(("cache-control", "no-cache"));
        }
        host.send_response_headers(status, &headers);
        if !offsets.iter().all(Duration::is_zero) {
            if let Some(pacing) = host.pace(&offsets) {
                self.state = State::Streaming {
                    steps,
                    end,
                    started: Instant::now(),
                    _pacing: pacing,
                };
                return;
            }
            log::warn!("llm_edge: the proxy could not pace a replay; sending it at once");
        }
        let count = steps.len();
        let complete = end == StreamEnd::Complete;
        for (index, step) in steps.iter().enumerate() {
            host.send_response_data(step, complete && index + 1 == count);
        }
        if count == 0 && complete {
            host.send_response_data(b"", true);
        }
        self.end_stream(host, end);
    }

    /// When each step of a replayed reply is due, from now.
    fn replay_offsets(&self, fixtures: &Fixtures, recorded: &[Duration]) -> Vec<Duration> {
        match fixtures.timing {
            ReplayTiming::Instant => vec![Duration::ZERO; recorded.len()],
            ReplayTiming::Recorded => recorded
                .iter()
                .map(|at| at.div_f64(fixtures.replay_speed))
                .collect(),
            ReplayTiming::Latency => {
                let timing = Timing::from_config(&self.config().mock.latency);
                let gaps = (0u32..).map(|i| timing.inter_token.saturating_mul(i));
                let offsets = gaps.map(|gap| timing.time_to_first_token.saturating_add(gap));
                offsets.take(recorded.len()).collect()
            }
        }
    }
}

/// A recorded count as the usage stats take it.
fn saturate(tokens: Option<u64>) -> u32 {
    u32::try_from(tokens.unwrap_or(0)).unwrap_or(u32::MAX)
}
