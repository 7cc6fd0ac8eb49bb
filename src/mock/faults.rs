//! Faults a test can ask the mock for: an OpenAI error instead of a reply, or a stream that breaks.
//!
//! Asked per request by header, or drawn at configured rates from a seeded generator:
//!
//! | header | effect |
//! |---|---|
//! | `x-test-scenario: rate-limit` | 429 `rate_limit_exceeded` with `retry-after` and `x-ratelimit-*` |
//! | `x-test-scenario: error` | 500 `server_error` |
//! | `x-llm-edge-fault: <status>` | that status (400, 401, 403, 404, 429, 500, 503) with OpenAI's body |
//! | `x-llm-edge-stream-fault: <kind>:<n>` | after `n` stream steps: `truncate` (end without `[DONE]`), `reset` (reset the stream), `malformed` (a broken event, then the rest), `stall` (stop sending, keep the stream open) |
//! | `x-llm-edge-scenario: <key>` | with `mock.faults.scenario`: the first `fail_first` requests of each key fail with its `status`, the rest succeed |
//!
//! With `mock.faults.upstream`, the same headers and rates apply to every request llm-edge
//! forwards upstream too (opt-in: a gateway must not let clients break streams unasked).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use rustc_hash::FxHashMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Deserialize;

use crate::config_error::ConfigError;

use crate::api::openai::ApiError;

/// Header of the scenarios that the WireMock mock-openai tutorial scripts use.
pub const SCENARIO_HEADER: &str = "x-test-scenario";
/// Header asking for an error status.
pub const STATUS_HEADER: &str = "x-llm-edge-fault";
/// Header asking for a broken stream.
pub const STREAM_HEADER: &str = "x-llm-edge-stream-fault";
/// Header naming a scenario: its first requests fail (see [`ScenarioConfig`]).
pub const SCENARIO_KEY_HEADER: &str = "x-llm-edge-scenario";
/// The longest scenario key, in bytes.
pub const MAX_SCENARIO_KEY_BYTES: usize = 256;

/// The statuses a fault can answer with.
pub const FAULT_STATUSES: [u16; 7] = [400, 401, 403, 404, 429, 500, 503];

/// An error reply: the OpenAI error and the headers that come with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReply {
    /// The status and body.
    pub error: ApiError,
    /// Extra headers, such as `retry-after`.
    pub headers: Vec<(&'static str, &'static str)>,
}

/// The error OpenAI answers with for `status`, about `model`.
pub fn error_for_status(status: u16, model: &str) -> Option<ErrorReply> {
    let error = |message: String, kind: &'static str, code: Option<&'static str>| ApiError {
        status,
        message,
        kind,
        param: None,
        code,
    };
    let mut headers = Vec::new();
    let error = match status {
        400 => error(
            "The request was invalid (fault injected by llm-edge).".to_owned(),
            "invalid_request_error",
            None,
        ),
        401 => error(
            "Incorrect API key provided. You can find your API key at \
             https://platform.openai.com/account/api-keys."
                .to_owned(),
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        403 => error(
            "Country, region, or territory not supported".to_owned(),
            "request_forbidden",
            Some("unsupported_country_region_territory"),
        ),
        404 => error(
            format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        ),
        429 => {
            headers = vec![
                ("retry-after", "1"),
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-limit-tokens", "150000"),
                ("x-ratelimit-remaining-tokens", "150000"),
                ("x-ratelimit-reset-tokens", "0s"),
            ];
            error(
                format!(
                    "Rate limit reached for {model} on requests per min (RPM): Limit 60, Used 60, \
                     Requested 1. Please try again in 1s."
                ),
                "requests",
                Some("rate_limit_exceeded"),
            )
        }
        500 => ApiError::internal(),
        503 => error(
            "The engine is currently overloaded, please try again later.".to_owned(),
            "server_error",
            None,
        ),
        _ => return None,
    };
    Some(ErrorReply { error, headers })
}

/// How a stream breaks, after how many of its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFault {
    /// End the stream cleanly after `n` steps, without `[DONE]`.
    Truncate(usize),
    /// Reset the stream after `n` steps.
    Reset(usize),
    /// Send a broken event after `n` steps, then the rest.
    Malformed(usize),
    /// Stop sending after `n` steps and leave the stream open.
    Stall(usize),
}

impl StreamFault {
    /// The fault's name, as in the header and the `faults_total` stat.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Truncate(_) => "truncate",
            Self::Reset(_) => "reset",
            Self::Malformed(_) => "malformed",
            Self::Stall(_) => "stall",
        }
    }

    /// After how many steps (the mock's) or events (a real stream's) the stream breaks.
    pub fn steps(self) -> usize {
        match self {
            Self::Truncate(n) | Self::Reset(n) | Self::Malformed(n) | Self::Stall(n) => n,
        }
    }

    /// Parses `kind:n`, as in the `x-llm-edge-stream-fault` header.
    pub fn parse(value: &str) -> Option<Self> {
        let (kind, steps) = value.trim().split_once(':')?;
        let steps = steps.trim().parse().ok()?;
        match kind.trim() {
            "truncate" => Some(Self::Truncate(steps)),
            "reset" => Some(Self::Reset(steps)),
            "malformed" => Some(Self::Malformed(steps)),
            "stall" => Some(Self::Stall(steps)),
            _ => None,
        }
    }
}

/// An event that is not valid JSON, as a broken upstream would send.
pub const MALFORMED_EVENT: &[u8] =
    b"data: {\"id\":\"chatcmpl-broken\",\"object\":\"chat.completion.ch\n\n";

/// What becomes of a piece of a real event stream that a [`StreamBreaker`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The piece goes on, as the breaker left it; the stream goes on too.
    Pass,
    /// The piece goes on, then the stream is reset, before any later piece.
    PassThenReset,
    /// The stream is reset now: nothing of the piece goes on.
    Reset,
    /// Nothing of the piece goes on, and the stream never ends.
    Hold,
}

/// Breaks a real event stream as a [`StreamFault`] asks, piece by piece as its bytes leave: counts
/// its events (blocks of lines ended by a blank line, with LF, CRLF or CR line ends) and breaks it
/// after the `n`-th. The work is one pass over each piece until the fault fires, none after it,
/// and the state a few flags, however the events are split across pieces.
///
/// A piece that carries the stream's end cannot go on without ending it: a `reset` or `stall`
/// that falls in the last piece sends none of that piece.
#[derive(Debug)]
pub struct StreamBreaker {
    fault: StreamFault,
    /// Events ended so far.
    events: usize,
    /// The bytes read so far end a line (or none were read).
    line_start: bool,
    /// The event being read has a line that is not empty.
    in_event: bool,
    /// The last byte read was a CR, so an LF next is the same line end.
    after_cr: bool,
    /// The fault has fired: later pieces are withheld, or pass unread (`malformed`).
    fired: bool,
    /// A reset is owed once the piece that fired it has gone on.
    reset_owed: bool,
}

impl StreamBreaker {
    /// A breaker of one stream, before its first byte.
    pub fn new(fault: StreamFault) -> Self {
        Self {
            fault,
            events: 0,
            line_start: true,
            in_event: false,
            after_cr: false,
            fired: false,
            reset_owed: false,
        }
    }

    /// The fault this breaker applies.
    pub fn fault(&self) -> StreamFault {
        self.fault
    }

    /// Whether a reset is owed: the piece that fired a `reset` went on, nothing may follow it.
    pub fn owes_reset(&self) -> bool {
        self.reset_owed
    }

    /// The owed reset was done.
    pub fn reset_done(&mut self) {
        self.reset_owed = false;
    }

    /// Whether nothing more is left to do: a `malformed` fault that fired passes the rest as it is.
    pub fn is_spent(&self) -> bool {
        self.fired && matches!(self.fault, StreamFault::Malformed(_))
    }

    /// Reads the next piece of the stream (`end`: the last), cutting or extending it in place, and
    /// says what becomes of it.
    pub fn piece(&mut self, data: &mut Vec<u8>, end: bool) -> Broken {
        if self.reset_owed {
            self.reset_owed = false;
            return Broken::Reset;
        }
        if self.fired {
            return match self.fault {
                StreamFault::Malformed(_) => Broken::Pass,
                StreamFault::Truncate(_) => {
                    data.clear();
                    Broken::Pass
                }
                StreamFault::Reset(_) => Broken::Reset,
                StreamFault::Stall(_) => Broken::Hold,
            };
        }
        let cut = self.scan(data);
        let Some(at) = cut.or(end.then_some(data.len())) else {
            return Broken::Pass;
        };
        self.fired = true;
        match self.fault {
            StreamFault::Malformed(_) => {
                data.splice(at..at, MALFORMED_EVENT.iter().copied());
                Broken::Pass
            }
            StreamFault::Truncate(_) => {
                data.truncate(at);
                Broken::Pass
            }
            StreamFault::Reset(_) if end || at == 0 => Broken::Reset,
            StreamFault::Reset(_) => {
                data.truncate(at);
                self.reset_owed = true;
                Broken::PassThenReset
            }
            StreamFault::Stall(_) if end => Broken::Hold,
            StreamFault::Stall(_) => {
                data.truncate(at);
                Broken::Pass
            }
        }
    }

    /// Counts the events that end in `data`; the offset just past the blank line that ends the
    /// `n`-th, if it is in `data`.
    fn scan(&mut self, data: &[u8]) -> Option<usize> {
        let n = self.fault.steps();
        if self.events >= n {
            return Some(0);
        }
        for (index, &byte) in data.iter().enumerate() {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    if self.line_start && self.in_event {
                        self.in_event = false;
                        self.events += 1;
                        if self.events == n {
                            // A CRLF's LF goes with it, when it is here.
                            let crlf = self.after_cr && data.get(index + 1) == Some(&b'\n');
                            return Some(index + 1 + usize::from(crlf));
                        }
                    }
                    self.line_start = true;
                }
                _ => {
                    self.after_cr = false;
                    self.line_start = false;
                    self.in_event = true;
                }
            }
        }
        None
    }
}

/// Configured fault rates: `mock.faults`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    /// Probability, 0 to 1, of answering each status instead of a reply (keys are statuses).
    #[serde(default)]
    pub rates: BTreeMap<String, f64>,
    /// Seeds the draws, so that a run repeats exactly.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Fail the first requests of each scenario key (header `x-llm-edge-scenario`).
    #[serde(default)]
    pub scenario: Option<ScenarioConfig>,
    /// Apply the faults to forwarded requests and their real replies too, not only the mock's.
    #[serde(default)]
    pub upstream: bool,
}

/// `mock.faults.scenario`: the first `fail_first` requests carrying a scenario key fail with
/// `status`, then that key's requests succeed; so a client's retries can be tested exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// How many requests of each key fail.
    pub fail_first: u32,
    /// The status they fail with (a fault status).
    #[serde(default = "default_scenario_status")]
    pub status: u16,
    /// How many keys are remembered; beyond them the oldest is forgotten (and fails afresh).
    #[serde(default = "default_scenario_keys")]
    pub max_keys: u32,
}

fn default_scenario_status() -> u16 {
    503
}

fn default_scenario_keys() -> u32 {
    10_000
}

/// The largest `mock.faults.scenario.max_keys`.
pub const MAX_SCENARIO_KEYS: u32 = 1_000_000;
/// The largest `mock.faults.scenario.fail_first`.
pub const MAX_SCENARIO_FAILURES: u32 = 1_000;

/// The configured fault rates, checked: what [`FaultDice`] draws from. Only
/// [`FaultRates::parse`] makes them, so every status is a fault status and the rates add up to at
/// most 1.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultRates {
    /// `(cumulative probability, status)`, ascending.
    thresholds: Vec<(f64, u16)>,
    /// The seed of the draws; none seeds them at random.
    seed: Option<u64>,
    /// The scenario faults, checked.
    scenario: Option<ScenarioConfig>,
    /// The faults apply to forwarded requests too.
    upstream: bool,
}

impl FaultRates {
    /// Checks `mock.faults`: known statuses, each rate 0 to 1, summing to at most 1.
    pub fn parse(config: &FaultsConfig) -> Result<Self, ConfigError> {
        let mut thresholds = Vec::new();
        let mut total = 0.0;
        for (status, &rate) in &config.rates {
            let field = format!("mock.faults.rates.{status}");
            let code = status
                .parse::<u16>()
                .ok()
                .filter(|code| FAULT_STATUSES.contains(code))
                .ok_or_else(|| {
                    let allowed = FAULT_STATUSES.map(|s| s.to_string()).join(", ");
                    ConfigError::new(
                        field.clone(),
                        format!("{status:?} is not a fault status; allowed: {allowed}"),
                    )
                })?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::new(
                    field,
                    format!("{rate} is out of range; allowed: 0 to 1"),
                ));
            }
            total += rate;
            thresholds.push((total, code));
        }
        if total > 1.0 {
            return Err(ConfigError::new(
                "mock.faults.rates",
                format!("the rates add up to {total}; allowed: at most 1"),
            ));
        }
        if let Some(scenario) = &config.scenario {
            check_scenario(scenario)?;
        }
        Ok(Self {
            thresholds,
            seed: config.seed,
            scenario: config.scenario,
            upstream: config.upstream,
        })
    }

    /// Whether the faults apply to the requests llm-edge forwards upstream, not only the mock's.
    pub fn apply_upstream(&self) -> bool {
        self.upstream
    }
}

fn check_scenario(scenario: &ScenarioConfig) -> Result<(), ConfigError> {
    if !(1..=MAX_SCENARIO_FAILURES).contains(&scenario.fail_first) {
        return Err(ConfigError::new(
            "mock.faults.scenario.fail_first",
            format!(
                "{} is out of range; allowed: 1 to {MAX_SCENARIO_FAILURES}",
                scenario.fail_first
            ),
        ));
    }
    if !FAULT_STATUSES.contains(&scenario.status) {
        let allowed = FAULT_STATUSES.map(|s| s.to_string()).join(", ");
        return Err(ConfigError::new(
            "mock.faults.scenario.status",
            format!(
                "{} is not a fault status; allowed: {allowed}",
                scenario.status
            ),
        ));
    }
    if !(1..=MAX_SCENARIO_KEYS).contains(&scenario.max_keys) {
        return Err(ConfigError::new(
            "mock.faults.scenario.max_keys",
            format!(
                "{} is out of range; allowed: 1 to {MAX_SCENARIO_KEYS}",
                scenario.max_keys
            ),
        ));
    }
    Ok(())
}

/// How many requests of each scenario key were seen, shared by all workers; at most
/// `max_keys` keys, the oldest forgotten first.
#[derive(Debug, Default)]
pub struct Scenarios {
    config: Option<ScenarioConfig>,
    seen: Mutex<ScenarioCounts>,
}

#[derive(Debug, Default)]
struct ScenarioCounts {
    counts: FxHashMap<Vec<u8>, u32>,
    order: VecDeque<Vec<u8>>,
}

impl Scenarios {
    /// The counts of the configured scenario faults (none configured: no request fails).
    pub fn new(rates: &FaultRates) -> Self {
        Self {
            config: rates.scenario,
            seen: Mutex::default(),
        }
    }

    /// The status this request of scenario `key` fails with, if it is among its first
    /// `fail_first`.
    pub fn fail(&self, key: &[u8]) -> Option<u16> {
        let config = self.config?;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let ScenarioCounts { counts, order } = &mut *seen;
        let count = match counts.get_mut(key) {
            Some(count) => count,
            None => {
                if counts.len() >= config.max_keys as usize {
                    if let Some(oldest) = order.pop_front() {
                        counts.remove(&oldest);
                    }
                }
                order.push_back(key.to_vec());
                counts.entry(key.to_vec()).or_insert(0)
            }
        };
        *count = count.saturating_add(1);
        (*count <= config.fail_first).then_some(config.status)
    }
}

/// Draws configured faults, one draw per request, from a generator shared by all workers.
#[derive(Debug)]
pub struct FaultDice {
    /// `(cumulative probability, status)`, ascending.
    thresholds: Vec<(f64, u16)>,
    rng: Mutex<StdRng>,
}

impl FaultDice {
    /// Dice that draw `rates`, seeded by their seed, or at random without one.
    pub fn new(rates: &FaultRates) -> Self {
        let seed = rates.seed.unwrap_or_else(rand::random);
        Self {
            thresholds: rates.thresholds.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The status to fail this request with, if the dice say so.
    pub fn roll(&self) -> Option<u16> {
        if self.thresholds.is_empty() {
            return None;
        }
        let draw: f64 = self
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random();
        self.thresholds
            .iter()
            .find(|(threshold, _)| draw < *threshold)
            .map(|&(_, status)| status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_status_has_an_openai_error() {
        for status in FAULT_STATUSES {
            let reply = error_for_status(status, "gpt-4o").unwrap();
            assert_eq!(reply.error.status, status);
        }
        assert!(error_for_status(418, "m").is_none());
    }

    #[test]
    fn rate_limit_carries_openais_headers_and_code() {
        let reply = error_for_status(429, "gpt-4o").unwrap();
        assert_eq!(reply.error.code, Some("rate_limit_exceeded"));
        assert!(reply.error.message.contains("gpt-4o"));
        let names: Vec<_> = reply.headers.iter().map(|(name, _)| *name).collect();
        assert!(names.contains(&"retry-after"));
        assert!(names.contains(&"x-ratelimit-remaining-requests"));
    }

    #[test]
    fn stream_faults_parse() {
        assert_eq!(
            StreamFault::parse("truncate:3"),
            Some(StreamFault::Truncate(3))
        );
        assert_eq!(
            StreamFault::parse(" reset : 0 "),
            Some(StreamFault::Reset(0))
        );
        assert_eq!(
            StreamFault::parse("malformed:2"),
            Some(StreamFault::Malformed(2))
        );
        assert_eq!(StreamFault::parse("stall:1"), Some(StreamFault::Stall(1)));
        for bad in ["truncate", "explode:1", "stall:-1", "reset:x", ""] {
            assert_eq!(StreamFault::parse(bad), None, "{bad}");
        }
    }

    fn dice(rates: &[(&str, f64)], seed: u64) -> Result<FaultDice, ConfigError> {
        let rates = FaultRates::parse(&FaultsConfig {
            rates: rates.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            seed: Some(seed),
            ..FaultsConfig::default()
        })?;
        Ok(FaultDice::new(&rates))
    }

    #[test]
    fn seeded_rates_repeat_and_roughly_hold() {
        let rolls = |seed| {
            let dice = dice(&[("429", 0.2), ("500", 0.1)], seed).unwrap();
            (0..10_000).map(|_| dice.roll()).collect::<Vec<_>>()
        };
        let a = rolls(1);
        assert_eq!(a, rolls(1));
        let count = |status| a.iter().filter(|r| **r == Some(status)).count();
        assert!((1_700..2_300).contains(&count(429)), "{}", count(429));
        assert!((800..1_200).contains(&count(500)), "{}", count(500));
    }

    #[test]
    fn no_rates_never_fail_and_bad_rates_are_named() {
        assert_eq!(dice(&[], 0).unwrap().roll(), None);
        assert_eq!(
            dice(&[("418", 0.1)], 0).unwrap_err().field,
            "mock.faults.rates.418"
        );
        assert_eq!(
            dice(&[("500", 1.5)], 0).unwrap_err().field,
            "mock.faults.rates.500"
        );
        let ConfigError { field, message } = dice(&[("500", 0.6), ("503", 0.6)], 0).unwrap_err();
        assert_eq!(field, "mock.faults.rates");
        assert!(message.contains("at most 1"));
    }

    fn scenarios(fail_first: u32, max_keys: u32) -> Scenarios {
        let rates = FaultRates::parse(&FaultsConfig {
            scenario: Some(ScenarioConfig {
                fail_first,
                status: 429,
                max_keys,
            }),
            ..FaultsConfig::default()
        })
        .unwrap();
        Scenarios::new(&rates)
    }

    #[test]
    fn a_scenario_fails_its_first_requests_then_succeeds_per_key() {
        let scenarios = scenarios(2, 10);
        let a: Vec<_> = (0..4).map(|_| scenarios.fail(b"a")).collect();
        assert_eq!(a, [Some(429), Some(429), None, None]);
        assert_eq!(scenarios.fail(b"b"), Some(429));
        assert_eq!(Scenarios::default().fail(b"a"), None);
    }

    #[test]
    fn scenario_keys_are_bounded_the_oldest_forgotten() {
        let scenarios = scenarios(1, 2);
        assert_eq!(scenarios.fail(b"a"), Some(429));
        assert_eq!(scenarios.fail(b"b"), Some(429));
        assert_eq!(scenarios.fail(b"c"), Some(429));
        // "a" was forgotten for "c": it fails afresh; "c" is remembered.
        assert_eq!(scenarios.fail(b"c"), None);
        assert_eq!(scenarios.fail(b"a"), Some(429));
        assert_eq!(scenarios.seen.lock().unwrap().counts.len(), 2);
    }

    #[test]
    fn bad_scenarios_are_named() {
        let error = |scenario| {
            FaultRates::parse(&FaultsConfig {
                scenario: Some(scenario),
                ..FaultsConfig::default()
            })
            .unwrap_err()
            .field
        };
        let ok = ScenarioConfig {
            fail_first: 1,
            status: 503,
            max_keys: 1,
        };
        let zero = ScenarioConfig {
            fail_first: 0,
            ..ok
        };
        assert_eq!(error(zero), "mock.faults.scenario.fail_first");
        let teapot = ScenarioConfig { status: 418, ..ok };
        assert_eq!(error(teapot), "mock.faults.scenario.status");
        let none = ScenarioConfig { max_keys: 0, ..ok };
        assert_eq!(error(none), "mock.faults.scenario.max_keys");
    }

    /// A stream of `count` events, each with its line ends drawn from LF, CR and CRLF, some with
    /// an `event:` line or a comment; and the offset just past each event's blank line.
    fn events(rng: &mut StdRng, count: usize) -> (Vec<u8>, Vec<usize>) {
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for index in 0..count {
            let end: &[u8] = [&b"\n"[..], b"\r", b"\r\n"][rng.random_range(0..3)];
            if rng.random_bool(0.3) {
                stream.extend_from_slice(b"event: delta");
                stream.extend_from_slice(end);
            }
            if rng.random_bool(0.2) {
                stream.extend_from_slice(b": keep-alive");
                stream.extend_from_slice(end);
            }
            stream.extend_from_slice(format!("data: {{\"i\":{index}}}").as_bytes());
            stream.extend_from_slice(end);
            stream.extend_from_slice(end);
            ends.push(stream.len());
        }
        (stream, ends)
    }

    /// Feeds `stream` to a breaker in pieces cut at random, the last carrying the end (an empty
    /// one when `empty_end`, as HTTP/1.1 delivers it): the bytes that went on, whether the stream
    /// was reset, and whether its end was held back.
    fn feed(
        rng: &mut StdRng,
        fault: StreamFault,
        stream: &[u8],
        empty_end: bool,
    ) -> (Vec<u8>, bool, bool) {
        let mut cuts: Vec<usize> = (0..rng.random_range(0..6))
            .map(|_| rng.random_range(0..=stream.len()))
            .collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut pieces: Vec<Vec<u8>> = cuts
            .windows(2)
            .map(|w| stream[w[0]..w[1]].to_vec())
            .collect();
        if empty_end {
            pieces.push(Vec::new());
        }
        let mut breaker = StreamBreaker::new(fault);
        let mut out = Vec::new();
        let last = pieces.len() - 1;
        for (index, mut piece) in pieces.into_iter().enumerate() {
            match breaker.piece(&mut piece, index == last) {
                Broken::Pass | Broken::PassThenReset => out.extend_from_slice(&piece),
                Broken::Reset => return (out, true, false),
                Broken::Hold => return (out, false, true),
            }
        }
        (out, false, false)
    }

    #[test]
    fn a_real_stream_breaks_after_its_nth_event_however_it_is_split() {
        let mut rng = StdRng::seed_from_u64(23);
        for _ in 0..2_000 {
            let count = rng.random_range(0..6);
            let (stream, ends) = events(&mut rng, count);
            let n = rng.random_range(0..=count + 1);
            let prefix = if n == 0 {
                0
            } else {
                ends.get(n - 1).copied().unwrap_or(stream.len())
            };
            // A CRLF blank line cut between its CR and LF ends the event at the CR.
            let ends_at = |out: &[u8]| {
                out == &stream[..prefix]
                    || (stream[..prefix].ends_with(b"\r\n") && out == &stream[..prefix - 1])
            };
            let empty_end = rng.random_bool(0.5);
            let (out, reset, held) = feed(&mut rng, StreamFault::Truncate(n), &stream, empty_end);
            assert!(
                ends_at(&out) && !reset && !held,
                "truncate:{n} {stream:?} {out:?}"
            );
            let (out, ..) = feed(&mut rng, StreamFault::Malformed(n), &stream, empty_end);
            let at = out
                .windows(MALFORMED_EVENT.len())
                .position(|w| w == MALFORMED_EVENT);
            let at = at.expect("the broken event is in");
            let rest = &out[at + MALFORMED_EVENT.len()..];
            assert!(ends_at(&out[..at]), "malformed:{n} {stream:?} {out:?}");
            assert_eq!([&out[..at], rest].concat(), stream, "malformed:{n}");
            for fault in [StreamFault::Reset(n), StreamFault::Stall(n)] {
                let (out, reset, held) = feed(&mut rng, fault, &stream, empty_end);
                assert_eq!(
                    (reset, held),
                    (fault.kind() == "reset", fault.kind() == "stall")
                );
                if empty_end {
                    assert!(ends_at(&out), "{fault:?} {stream:?} {out:?}");
                } else {
                    // What the last piece held never goes on: it would end the stream.
                    assert!(
                        stream[..prefix].starts_with(&out),
                        "{fault:?} {stream:?} {out:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_reset_owed_comes_before_any_later_piece() {
        let mut breaker = StreamBreaker::new(StreamFault::Reset(1));
        let mut piece = b"data: 1\n\ndata: 2\n\n".to_vec();
        assert_eq!(breaker.piece(&mut piece, false), Broken::PassThenReset);
        assert_eq!(piece, b"data: 1\n\n");
        assert!(breaker.owes_reset());
        assert_eq!(
            breaker.piece(&mut b"data: 3\n\n".to_vec(), false),
            Broken::Reset
        );
        assert!(!breaker.owes_reset());
        let mut done = StreamBreaker::new(StreamFault::Reset(1));
        done.piece(&mut b"data: 1\n\n".to_vec(), false);
        done.reset_done();
        assert_eq!(
            done.piece(&mut Vec::new(), true),
            Broken::Reset,
            "still reset"
        );
    }

    #[test]
    fn upstream_faults_are_opt_in() {
        let read = |json: &str| FaultRates::parse(&serde_json::from_str(json).unwrap()).unwrap();
        assert!(!read("{}").apply_upstream());
        assert!(read(r#"{"upstream": true}"#).apply_upstream());
    }
}
