//! Token budgets in the filter: admit or refuse a request, charge what its reply used, and tell
//! the client where it stands with OpenAI's `x-ratelimit-*-tokens` headers.

use serde_json::{Map, Value};

use super::{Filter, Outcome, State};
use crate::accounting::budgets::{Claim, Exceeded, KeysFull, Need, Refusal, Standing, reset_text};
use crate::accounting::tokens::Tokenizer;
use crate::api::openai::chat::ChatRequest;
use crate::api::openai::{ApiError, parse_object};
use crate::api::routes::Endpoint;
use crate::host::Host;
use crate::host::stats::Counter;

/// The request fields that hold prompt text, in every API llm-edge speaks.
const PROMPT_FIELDS: [&str; 5] = ["messages", "prompt", "input", "system", "instructions"];

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

/// The prompt tokens of a forwarded request: exactly for chat completions (as the mock counts
/// them), by the text of its prompt fields otherwise.
pub(super) fn prompt_tokens(
    tokenizer: Tokenizer,
    endpoint: &Endpoint,
    body: &[u8],
    model: &str,
) -> u64 {
    if *endpoint == Endpoint::ChatCompletions {
        if let Ok(request) = ChatRequest::parse(body) {
            return tokenizer.prompt_tokens(model, &request.messages).into();
        }
    }
    let Ok(fields) = parse_object(body) else {
        return 0;
    };
    let mut text = String::new();
    for field in PROMPT_FIELDS {
        if let Some(value) = fields.get(field) {
            collect_strings(value, &mut text);
        }
    }
    tokenizer.count(model, &text).into()
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

fn collect_strings(value: &Value, text: &mut String) {
    match value {
        Value::String(s) => {
            text.push_str(s);
            text.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, text)),
        Value::Object(fields) => fields.values().for_each(|v| collect_strings(v, text)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

impl Filter {
    /// The stream is over: a forwarded request whose reply never ended (a stream cut short, a
    /// client gone) is charged for what was sent by then.
    pub fn on_stream_complete(&mut self, host: &mut impl Host) {
        if let State::Proxying(accounting) = &mut self.state {
            if let Some(claim) = accounting.take_claim() {
                let used = accounting.used_tokens();
                self.charge(host, &claim, used);
            }
        }
    }
}

impl Drop for Filter {
    /// A claim still open when the filter goes (its stream's completion was never seen) is
    /// charged the same way, without stats.
    fn drop(&mut self) {
        if let State::Proxying(accounting) = &mut self.state {
            if let Some(claim) = accounting.take_claim() {
                let used = accounting.used_tokens();
                let budgets = &self.context.budgets;
                budgets.settle(&claim, used, budgets.now());
            }
        }
    }
}
