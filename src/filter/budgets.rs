//! Token budgets in the filter: admit a request or refuse it (reserving what it may use, when
//! budgets reserve), charge what its reply used (releasing the rest of the reservation), and tell
//! the client where it stands with OpenAI's `x-ratelimit-*-tokens` headers.

use serde_json::{Map, Value};

use super::{Filter, Outcome, State};
use crate::accounting::budgets::{Claim, Exceeded, KeysFull, Need, Refusal, Standing, reset_text};
use crate::api::openai::ApiError;
use crate::api::openai::generation::Usage;
use crate::api::routes::Endpoint;
use crate::host::Host;
use crate::host::stats::Counter;
use crate::mock::faults::StreamFault;

impl Filter {
    /// Admits a request for `model` on what it needs at most, `bound`, or on `exact()` when the
    /// bound does not fit a reserving budget. `Ok(None)` when no budget is configured; `Err(())`
    /// after answering the refusal.
    pub(super) fn admit(
        &mut self,
        host: &mut impl Host,
        model: &str,
        bound: Need,
        exact: impl FnOnce() -> Need,
    ) -> Result<Option<Claim>, ()> {
        let budgets = &self.context.budgets;
        if budgets.is_empty() {
            return Ok(None);
        }
        let repeated = budgets
            .key_headers()
            .find(|name| host.request_header_count(name) > 1)
            .map(str::to_owned);
        if let Some(name) = repeated {
            // Which copy counts is up to each hop; a budget key must be one value.
            let error = ApiError::bad_request(
                format!("The header '{name}' is given more than once; a budget key is one value."),
                None,
                Some("invalid_value"),
            );
            self.send_error(host, &error, &[], Outcome::InvalidRequest);
            return Err(());
        }
        let path = host.request_header(":path").unwrap_or_default();
        let path = String::from_utf8_lossy(path);
        let route = path.split('?').next().unwrap_or_default();
        let keys = budgets.keys(model, route, |name| host.request_header(name));
        let admitted = budgets
            .admit(&keys, bound, budgets.now())
            .or_else(|refused| {
                if !budgets.reserves() || matches!(refused, Refusal::KeysFull(_)) {
                    return Err(refused);
                }
                match exact() {
                    need if need.at_least < bound.at_least => {
                        budgets.admit(&keys, need, budgets.now())
                    }
                    _ => Err(refused),
                }
            });
        match admitted {
            Ok(claim) => {
                self.rate_headers = rate_headers(budgets.standings(&claim, budgets.now()).first());
                Ok(Some(claim))
            }
            Err(Refusal::Exceeded(exceeded)) => {
                self.refuse_over_budget(host, model, &exceeded);
                Err(())
            }
            Err(Refusal::KeysFull(full)) => {
                self.refuse_new_key(host, &full);
                Err(())
            }
        }
    }

    /// Admits a mock reply under the budgets and charges it at once (its usage is known before
    /// it is sent): all of it, or the prompt and the share of steps sent of a stream cut short.
    /// `Err(())` after answering 429.
    pub(super) fn charge_mock(
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

    /// Charges a claim the tokens its request used, and updates the headers to match.
    pub(super) fn charge(&mut self, host: &mut impl Host, claim: &Claim, used: u64) {
        let budgets = &self.context.budgets;
        budgets.settle(claim, used, budgets.now());
        for (budget, key) in budgets.stat_keys(claim) {
            let key = self.context.budget_key_labels.label(&key);
            host.count(Counter::BudgetTokens, &[budget, key], used);
        }
        self.rate_headers = rate_headers(budgets.standings(claim, budgets.now()).first());
    }

    /// Charges a forwarded request's claim, once, what its reply used by now: at the reply's end,
    /// when it is refused, or when the stream ends first.
    pub(super) fn charge_forwarded(&mut self, host: &mut impl Host) {
        if let State::Proxying(forwarding) = &mut self.state {
            if let Some(claim) = forwarding.accounting.take_claim() {
                let used = forwarding.accounting.used_tokens();
                self.charge(host, &claim, used);
            }
        }
    }

    /// [`Filter::charge_forwarded`] without stats, for a filter dropped before its stream's
    /// completion was seen.
    pub(super) fn settle_forwarded_quietly(&mut self) {
        if let State::Proxying(forwarding) = &mut self.state {
            if let Some(claim) = forwarding.accounting.take_claim() {
                let used = forwarding.accounting.used_tokens();
                let budgets = &self.context.budgets;
                budgets.settle(&claim, used, budgets.now());
            }
        }
    }

    /// Answers 429 as OpenAI does when a request would exceed a token budget.
    fn refuse_over_budget(&mut self, host: &mut impl Host, model: &str, exceeded: &Exceeded) {
        let standing = &exceeded.standing;
        let key = self.context.budget_key_labels.label(&exceeded.stat_key);
        host.count(Counter::BudgetRefusals, &[&standing.budget, key], 1);
        let error = ApiError {
            status: 429,
            message: format!(
                "Rate limit reached for {model} on tokens ({unit}) by llm-edge budget '{budget}': \
                 Limit {limit}, Used {used}, Requested {requested}. Please try again in {reset}.",
                unit = standing.unit,
                budget = standing.budget,
                limit = standing.limit,
                used = standing.limit - standing.remaining,
                requested = exceeded.requested,
                reset = reset_text(standing.reset),
            ),
            kind: "tokens",
            param: None,
            code: Some("rate_limit_exceeded"),
        };
        self.rate_headers = rate_headers(Some(standing));
        self.send_429(host, &error, standing.reset);
    }

    /// Answers 429 when a budget keeps as many keys as it may, each owing tokens, and this
    /// request's key is new: forgetting one of theirs would refill it.
    fn refuse_new_key(&mut self, host: &mut impl Host, full: &KeysFull) {
        host.count(Counter::BudgetKeysFull, &[&full.budget], 1);
        let error = ApiError {
            status: 429,
            message: format!(
                "Rate limit reached on keys by llm-edge budget '{budget}': it keeps {max} keys, \
                 every one in use in its window. Please try again in {reset}.",
                budget = full.budget,
                max = full.max_keys,
                reset = reset_text(full.reset),
            ),
            kind: "tokens",
            param: None,
            code: Some("rate_limit_exceeded"),
        };
        self.send_429(host, &error, full.reset);
    }

    /// Answers a budget's 429, with `retry-after` in whole seconds (at least one).
    fn send_429(&mut self, host: &mut impl Host, error: &ApiError, reset: std::time::Duration) {
        let retry_after = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
        let retry_after = retry_after.max(1).to_string();
        self.send_error(
            host,
            error,
            &[("retry-after", &retry_after)],
            Outcome::OverBudget,
        );
    }
}

/// OpenAI's rate-limit headers for the tightest budget, if any.
fn rate_headers(standing: Option<&Standing>) -> Vec<(&'static str, String)> {
    let Some(standing) = standing else {
        return Vec::new();
    };
    vec![
        ("x-ratelimit-limit-tokens", standing.limit.to_string()),
        (
            "x-ratelimit-remaining-tokens",
            standing.remaining.to_string(),
        ),
        ("x-ratelimit-reset-tokens", reset_text(standing.reset)),
    ]
}

/// The completion limit fields, in the order [`max_tokens_of`] takes them.
const LIMIT_FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

/// The completion tokens a request to `endpoint` asks for at most (see [`max_tokens_of`]).
pub(super) fn max_tokens(endpoint: &Endpoint, fields: &Map<String, Value>) -> Option<u64> {
    max_tokens_of(
        endpoint,
        LIMIT_FIELDS.map(|field| fields.get(field).and_then(limit)),
    )
}

/// The completion tokens a request to `endpoint` asks for at most, from the fields its provider
/// honours, given as `[max_completion_tokens, max_tokens, max_output_tokens]`: chat reads
/// `max_completion_tokens` and the older `max_tokens`, at the larger when both are set (which
/// one a provider honours varies); legacy completions and Anthropic's messages `max_tokens`;
/// Responses `max_output_tokens`. A field the endpoint does not honour cannot lower its
/// reservation.
pub(super) fn max_tokens_of(endpoint: &Endpoint, limits: [Option<u64>; 3]) -> Option<u64> {
    let [max_completion_tokens, max_tokens, max_output_tokens] = limits;
    match endpoint {
        Endpoint::ChatCompletions => max_completion_tokens.max(max_tokens),
        Endpoint::Completions | Endpoint::Messages | Endpoint::CountTokens => max_tokens,
        Endpoint::Responses => max_output_tokens,
        _ => max_completion_tokens.max(max_tokens).max(max_output_tokens),
    }
}

/// A limit as a lenient provider reads it: a whole number, or a number written otherwise (a
/// fraction, a string) rounded up, so that `100000.0` does not reserve as if unlimited.
fn limit(value: &Value) -> Option<u64> {
    if let Some(whole) = value.as_u64() {
        return Some(whole);
    }
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    }?;
    // `as` saturates: a limit past u64's range reserves all there is.
    (number >= 0.0).then(|| number.ceil() as u64)
}
