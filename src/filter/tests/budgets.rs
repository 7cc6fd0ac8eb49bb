//! Token budgets through the filter: refusals, reservations and what settles them, budget keys,
//! the ledger a route shares or keeps.

use super::*;
use crate::accounting::budgets::Need;

fn context_with(config: &str) -> Arc<FilterContext> {
    Arc::new(FilterContext::new(
        FilterConfig::from_json(config.as_bytes()).unwrap(),
    ))
}

/// Posts `body` to `path` through a new filter of `context`.
fn post_in(
    context: &Arc<FilterContext>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Filter, FakeHost) {
    let mut filter = Filter::new(Arc::clone(context));
    let mut host = FakeHost::request("POST", path);
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    (filter, host)
}

#[test]
fn a_mock_budget_refuses_the_reply_after_the_budget_is_spent() {
    let probe = post_with("", &[], HELLO);
    let total = probe.only_reply().json()["usage"]["total_tokens"]
        .as_u64()
        .unwrap();
    let context = context_with(&format!(
        r#"{{"budgets": {{"limits": [{{"name": "tpm", "tokens": {}, "per": "minute", "key": "global"}}]}}}}"#,
        2 * total
    ));
    let (_, first) = post_in(&context, CHAT, &[], HELLO);
    assert_eq!(first.only_reply().status, 200);
    let remaining = (2 * total - total).to_string();
    assert_eq!(
        first.only_reply().header("x-ratelimit-remaining-tokens"),
        Some(remaining.as_str())
    );
    let (_, second) = post_in(&context, CHAT, &[], HELLO);
    assert_eq!(
        second.only_reply().header("x-ratelimit-remaining-tokens"),
        Some("0")
    );
    let (_, third) = post_in(&context, CHAT, &[], HELLO);
    let refused = third.only_reply();
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"]["type"], "tokens");
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(
        refused.header("x-ratelimit-limit-tokens"),
        Some(&*(2 * total).to_string())
    );
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(
        counted(&third, Counter::BudgetRefusals),
        [(labels(&["tpm", "all"]), 1)]
    );
}

#[test]
fn a_credential_key_is_fingerprinted_in_stats() {
    let context = context_with(
        r#"{"budgets": {"limits": [{"name": "per_key", "tokens": 1000, "per": "hour", "key": {"header": "x-api-key"}}]}}"#,
    );
    let (_, host) = post_in(&context, CHAT, &[("x-api-key", "sk-secret")], HELLO);
    let charged = counted(&host, Counter::BudgetTokens);
    assert_eq!(charged.len(), 1);
    assert_eq!(charged[0].0[0], "per_key");
    assert!(!charged[0].0[1].contains("sk-secret"), "{charged:?}");
}

const RESERVING: &str = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
    {"name": "tpm", "tokens": 100, "per": "minute", "key": "global"}]}}"#;
const ASKS_60: &[u8] =
    br#"{"model":"gpt-4o","max_tokens":60,"messages":[{"role":"user","content":"hi"}]}"#;

/// Answers a forwarded request with a JSON reply that used `total` tokens.
fn reply_with_usage(filter: &mut Filter, host: &mut FakeHost, total: u64) {
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"application/json".to_vec()),
    ];
    filter.on_response_headers(host, false);
    host.response_chunk =
        format!(r#"{{"usage":{{"prompt_tokens":{total},"completion_tokens":0}}}}"#).into_bytes();
    filter.on_response_body(host, true);
}

#[test]
fn reservation_refuses_what_could_overshoot_and_settles_to_real_usage() {
    let context = context_with(RESERVING);
    let (mut first, mut first_host) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(first_host.sent.is_empty(), "the first request goes on");
    let (_, second) = post_in(&context, CHAT, &[], ASKS_60);
    assert_eq!(
        second.only_reply().status,
        429,
        "60 + prompt do not fit twice in 100"
    );
    reply_with_usage(&mut first, &mut first_host, 10);
    let remaining = first_host
        .response_headers
        .iter()
        .find(|(name, _)| name == "x-ratelimit-remaining-tokens")
        .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
    assert!(
        remaining.is_some(),
        "the reply carries the budget's headers"
    );
    let (_, third) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(
        third.sent.is_empty(),
        "the first request settled to 10 tokens"
    );
}

#[test]
fn a_stream_cut_short_is_charged_for_what_was_sent() {
    let context = context_with(RESERVING);
    let (mut filter, mut host) = post_in(&context, CHAT, &[], ASKS_60);
    host.response_headers = vec![
        (":status".into(), b"200".to_vec()),
        ("content-type".into(), b"text/event-stream".to_vec()),
    ];
    filter.on_response_headers(&mut host, false);
    host.response_chunk = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
        data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n"
        .to_vec();
    filter.on_response_body(&mut host, false);
    filter.on_stream_complete(&mut host);
    let charged = counted(&host, Counter::BudgetTokens);
    assert_eq!(charged.len(), 1, "{charged:?}");
    drop(filter);
    let standing = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now());
    let claim = standing.unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    let prompt = 100 - 2 - left;
    assert!(
        (1..20).contains(&prompt),
        "charged the prompt and two streamed tokens: {left}"
    );
    assert_eq!(
        charged[0].1,
        100 - left,
        "the stat counts what the budget was charged"
    );
}

#[test]
fn a_reservation_left_open_when_the_filter_goes_is_released() {
    let context = context_with(RESERVING);
    let (filter, _) = post_in(&context, CHAT, &[], ASKS_60);
    drop(filter);
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now())
        .unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    assert_eq!(
        left, 100,
        "no reply came: nothing is charged and nothing stays reserved"
    );
}

#[test]
fn a_roomy_budget_reserves_the_body_length_bound_without_counting() {
    let context = context_with(
        r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
            {"name": "tpm", "tokens": 100000, "per": "minute", "key": "global"}]}}"#,
    );
    let (_filter, host) = post_in(&context, CHAT, &[], ASKS_60);
    assert!(host.sent.is_empty(), "the request goes on");
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(0), Instant::now())
        .unwrap();
    let left = context.budgets.standings(&claim, Instant::now())[0].remaining;
    let bound = u64::try_from(ASKS_60.len()).unwrap() + 60;
    assert_eq!(100_000 - left, bound);
}

#[test]
fn a_request_without_max_tokens_reserves_what_is_left_up_to_the_default() {
    let context = context_with(
        r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
            {"name": "tpm", "tokens": 70, "per": "minute", "key": "global"}]}}"#,
    );
    let unlimited = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut first, mut first_host) = post_in(&context, CHAT, &[], unlimited);
    assert!(
        first_host.sent.is_empty(),
        "the prompt fits: the request goes on"
    );
    let (_, second) = post_in(&context, CHAT, &[], unlimited);
    assert_eq!(
        second.only_reply().status,
        429,
        "the first holds the rest of the budget until its reply ends"
    );
    reply_with_usage(&mut first, &mut first_host, 7);
    let (_, third) = post_in(&context, CHAT, &[], unlimited);
    assert!(third.sent.is_empty(), "the first settled to 7 tokens");
}

/// A clock a test moves by hand, for the budgets.
#[derive(Clone)]
struct FakeClock {
    start: Instant,
    elapsed_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeClock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            elapsed_ms: Arc::default(),
        }
    }

    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap();
        self.elapsed_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.elapsed_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn budgets_clock(&self) -> crate::accounting::budgets::Clock {
        let clock = self.clone();
        crate::accounting::budgets::Clock::new(move || {
            clock.start + Duration::from_millis(clock.now_ms())
        })
    }
}

/// A context whose budgets run on `clock`.
fn clocked_context(config: &str, clock: &FakeClock) -> Arc<FilterContext> {
    let mut context = FilterContext::new(FilterConfig::from_json(config.as_bytes()).unwrap());
    context.runtime.budgets = Arc::new(Budgets::with_clock(
        &context.config.budgets,
        clock.budgets_clock(),
    ));
    Arc::new(context)
}

/// Posts `body` to `path` through a new filter of `context`, on a route with `policy`.
fn post_on_route(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Filter, FakeHost) {
    let mut filter = Filter::new(Arc::clone(context));
    let mut host = FakeHost::request("POST", path);
    host.route_policy = policy.cloned();
    for (name, value) in headers {
        host = host.with_header(name, value);
    }
    post(&mut filter, &mut host, &[body]);
    (filter, host)
}

fn route(json: &str) -> Arc<crate::filter::route_policy::RoutePolicy> {
    Arc::new(crate::filter::route_policy::RoutePolicy::from_json(json.as_bytes()).unwrap())
}

/// A mock budget of 20 tokens a minute per `x-api-key`; HELLO costs 9 of them.
const PER_KEY: &str = r#"{"budgets": {"max_keys": 4, "limits": [
    {"name": "per_key", "tokens": 20, "per": "minute", "key": {"header": "x-api-key"}}]}}"#;

/// The status of a mock chat request under `context` with these headers.
fn status_of(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    headers: &[(&str, &str)],
) -> u16 {
    let (_, host) = post_on_route(context, policy, CHAT, headers, HELLO);
    host.only_reply().status
}

/// Spends a key's budget: requests until one is refused; the number admitted.
fn spend(
    context: &Arc<FilterContext>,
    policy: Option<&Arc<crate::filter::route_policy::RoutePolicy>>,
    headers: &[(&str, &str)],
) -> usize {
    (0..100)
        .position(|_| status_of(context, policy, headers) == 429)
        .expect("the budget runs out")
}

#[test]
fn a_route_that_extends_or_replaces_the_policy_spends_the_listeners_ledger() {
    let clock = FakeClock::new();
    let extend = route(r#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#);
    let replace = route(r#"{"replace": {"mock": {"models": ["gpt-4o"]}}}"#);
    for first in [None, Some(&extend), Some(&replace)] {
        for then in [None, Some(&extend), Some(&replace)] {
            let own = route(
                r#"{"replace": {"budgets": {"limits": [
                    {"name": "route", "tokens": 20, "per": "minute", "key": "global"}]}}}"#,
            );
            let context = clocked_context(PER_KEY, &clock);
            let key = [("x-api-key", "a")];
            assert_eq!(spend(&context, first, &key), 3);
            assert_eq!(
                status_of(&context, then, &key),
                429,
                "{first:?} then {then:?}: a spent key stays spent on another route"
            );
            assert_eq!(
                status_of(&context, Some(&own), &key),
                200,
                "a route naming its own budgets keeps its own ledger"
            );
        }
    }
}

#[test]
fn junk_keys_cannot_refill_a_spent_key() {
    let clock = FakeClock::new();
    let context = clocked_context(PER_KEY, &clock);
    let victim = [("x-api-key", "victim")];
    assert_eq!(spend(&context, None, &victim), 3);
    let mut full = 0;
    for i in 0..50 {
        let junk = format!("junk{i}");
        let (_, host) = post_on_route(&context, None, CHAT, &[("x-api-key", &junk)], HELLO);
        let reply = host.only_reply();
        if reply.status == 429 {
            assert!(reply.error_message().contains("keeps 4 keys"), "{reply:?}");
            assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
            assert_eq!(reply.header("retry-after"), Some("60"));
            assert_eq!(
                counted(&host, Counter::BudgetKeysFull),
                [(labels(&["per_key"]), 1)]
            );
            full += 1;
        }
        assert_eq!(status_of(&context, None, &victim), 429, "after {junk}");
    }
    assert_eq!(full, 47, "the victim and three junk keys fill the table");
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        status_of(&context, None, &victim),
        200,
        "its window has ended"
    );
    assert_eq!(status_of(&context, None, &[("x-api-key", "new")]), 200);
}

/// Random churn through the filter: junk keys come and go, spend or not, the clock moves; a
/// key that has spent its budget stays refused until its window ends.
#[test]
fn a_spent_key_stays_refused_until_its_window_ends_whatever_the_churn() {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    for seed in 0..24 {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = FakeClock::new();
        let max_keys = rng.random_range(1..8);
        let context = clocked_context(
            &format!(
                r#"{{"budgets": {{"max_keys": {max_keys}, "limits": [
                    {{"name": "k", "tokens": 20, "per": "second", "key": {{"header": "x-api-key"}}}}]}}}}"#
            ),
            &clock,
        );
        let mut window_start: Option<u64> = None;
        let mut spent = false;
        for _ in 0..300 {
            clock.advance(Duration::from_millis(rng.random_range(0..120)));
            let now = clock.now_ms();
            if window_start.is_some_and(|start| now >= start + 1000) {
                (window_start, spent) = (None, false);
            }
            if rng.random_bool(0.3) {
                let (_, host) = post_on_route(&context, None, CHAT, &[("x-api-key", "v")], HELLO);
                let reply = host.only_reply();
                if spent {
                    assert_eq!(reply.status, 429, "seed {seed}: a spent key was admitted");
                } else if reply.status == 200 {
                    window_start.get_or_insert(now);
                    spent = reply.header("x-ratelimit-remaining-tokens") == Some("0");
                }
            } else {
                let junk = format!("junk{}", rng.random_range(0..50));
                // A third of the junk is empty messages: whatever they cost.
                let body: &[u8] = if rng.random_bool(0.3) {
                    br#"{"model":"m","messages":[]}"#
                } else {
                    HELLO
                };
                post_on_route(&context, None, CHAT, &[("x-api-key", &junk)], body);
            }
        }
    }
}

#[test]
fn header_keys_match_whatever_case_the_config_names_them_in() {
    let clock = FakeClock::new();
    let context = clocked_context(
        r#"{"budgets": {"limits": [
            {"name": "tenant", "tokens": 20, "per": "minute", "key": {"header": "X-Tenant"}}]}}"#,
        &clock,
    );
    // Envoy hands the filter lower-case header names.
    assert_eq!(spend(&context, None, &[("x-tenant", "acme")]), 3);
    assert_eq!(status_of(&context, None, &[("x-tenant", "other")]), 200);
}

#[test]
fn bearer_and_bearer_are_one_budget() {
    let clock = FakeClock::new();
    let context = clocked_context(
        r#"{"budgets": {"limits": [
            {"name": "key", "tokens": 20, "per": "minute", "key": {"header": "Authorization"}}]}}"#,
        &clock,
    );
    assert_eq!(
        spend(&context, None, &[("authorization", "Bearer sk-1")]),
        3
    );
    for spelling in [
        "bearer sk-1",
        "BEARER sk-1",
        " Bearer  sk-1 ",
        "bearer\tsk-1",
    ] {
        assert_eq!(
            status_of(&context, None, &[("authorization", spelling)]),
            429,
            "{spelling:?}"
        );
    }
    assert_eq!(
        status_of(&context, None, &[("authorization", "Bearer sk-2")]),
        200
    );
}

/// What a pass-through request reserved of a roomy budget, less its body's length.
fn reserved_beyond_the_body(config: &str, path: &str, body: &str) -> u64 {
    let clock = FakeClock::new();
    let context = clocked_context(config, &clock);
    let (_filter, host) = post_on_route(&context, None, path, &[], body.as_bytes());
    assert!(host.sent.is_empty(), "{body} goes on: {:?}", host.sent);
    let sent = host.forwarded_body.as_deref().unwrap_or(body.as_bytes());
    let claim = context
        .budgets
        .admit(&["all".to_owned()], Need::exactly(1), clock_now(&context))
        .unwrap();
    let left = context.budgets.standings(&claim, clock_now(&context))[0].remaining;
    10_000_000 - 1 - left - u64::try_from(sent.len()).unwrap()
}

fn clock_now(context: &FilterContext) -> Instant {
    context.budgets.now()
}

#[test]
fn messages_reserve_their_max_tokens_whatever_else_the_request_names() {
    let reserving = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let body = r#"{"model":"claude","max_completion_tokens":1,"max_tokens":100000,
        "messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(
        reserved_beyond_the_body(reserving, "/v1/messages", body),
        100_000
    );
}

/// Every endpoint, every combination of the three limit fields (each absent, small or large,
/// as a whole number or written otherwise), read by the fast path and by the full one: the
/// reservation is the largest of the fields the endpoint's provider honours.
#[test]
fn each_endpoint_reserves_from_the_fields_its_provider_honours() {
    let fast = r#"{"mode": "passthrough", "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let full = r#"{"mode": "passthrough", "transform": {"defaults": {"user": "u"}},
        "budgets": {"reserve": true, "limits": [
        {"name": "tpd", "tokens": 10000000, "per": "day", "key": "global"}]}}"#;
    let endpoints: [(&str, &[usize]); 4] = [
        ("/v1/chat/completions", &[0, 1]),
        ("/v1/completions", &[1]),
        ("/v1/responses", &[2]),
        ("/v1/messages", &[1]),
    ];
    let fields = ["max_completion_tokens", "max_tokens", "max_output_tokens"];
    let values: [(Option<&str>, u64); 4] = [
        (None, 0),
        (Some("3"), 3),
        (Some("5000"), 5000),
        (Some("4999.5"), 5000),
    ];
    for config in [fast, full] {
        for (path, honoured) in endpoints {
            for combination in 0..values.len().pow(3) {
                let chosen: Vec<(Option<&str>, u64)> = (0..3)
                    .map(|i| values[combination / values.len().pow(i) % values.len()])
                    .collect();
                let mut body =
                    String::from(r#"{"model":"m","messages":[],"prompt":"p","input":"i""#);
                for (field, (value, _)) in fields.iter().zip(&chosen) {
                    if let Some(value) = value {
                        body.push_str(&format!(r#","{field}":{value}"#));
                    }
                }
                body.push('}');
                let expected = honoured
                    .iter()
                    .filter(|i| chosen[**i].0.is_some())
                    .map(|i| chosen[*i].1)
                    .max()
                    .unwrap_or(256);
                assert_eq!(
                    reserved_beyond_the_body(config, path, &body),
                    expected,
                    "{path} {body}"
                );
            }
        }
    }
}
