//! Token budgets: so many tokens per unit of time, per key (an API key header, the request path,
//! the model, or everyone), shared by all of Envoy's workers.
//!
//! Each key has a fixed window that starts with its first request and lasts one unit; within it,
//! tokens are charged from replies' `usage`. With reservation on, a request first reserves its
//! prompt tokens plus the completion it may ask for, is refused if that does not fit, and settles
//! to its real usage when the reply ends, so a burst cannot overshoot the budget.
//!
//! State lives in memory, in shards of a bounded number of keys (the oldest window is evicted
//! when a shard is full), and resets when Envoy restarts.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::host::check_label_name;

/// The length of a budget's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
}

impl Per {
    fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        })
    }

    /// The unit as OpenAI names it in rate-limit messages.
    fn abbreviation(self) -> &'static str {
        match self {
            Self::Second => "TPS",
            Self::Minute => "TPM",
            Self::Hour => "TPH",
            Self::Day => "TPD",
        }
    }
}

/// What a budget is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyBy {
    /// Everyone shares one budget.
    Global,
    /// The value of this request header (such as an API key or a tenant id).
    Header(String),
    /// The request path.
    Route,
    /// The model the request is sent as.
    Model,
}

/// One budget: `tokens` per `per`, kept per `key`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The budget's name, in stats and errors.
    pub name: String,
    /// Tokens allowed per window.
    pub tokens: u64,
    /// The window.
    pub per: Per,
    /// What the budget is kept per.
    pub key: KeyBy,
}

/// The `budgets` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetsConfig {
    /// The budgets; a request must fit every one.
    #[serde(default)]
    pub limits: Vec<BudgetConfig>,
    /// Reserve prompt plus completion tokens before a request goes on, and settle at its end.
    #[serde(default)]
    pub reserve: bool,
    /// The most keys kept in memory per budget.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// The completion tokens reserved for a request that sets no `max_tokens`.
    #[serde(default = "default_completion_reserve")]
    pub default_max_tokens: u64,
}

fn default_max_keys() -> usize {
    10_000
}

fn default_completion_reserve() -> u64 {
    256
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            limits: Vec::new(),
            reserve: false,
            max_keys: default_max_keys(),
            default_max_tokens: default_completion_reserve(),
        }
    }
}

impl BudgetsConfig {
    /// Checks names and sizes. Returns `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, limit) in self.limits.iter().enumerate() {
            if limit.tokens == 0 {
                return Err((
                    format!("budgets.limits[{i}].tokens"),
                    "0 is out of range; allowed: 1 or more".into(),
                ));
            }
            check_label_name(format!("budgets.limits[{i}].name"), &limit.name)?;
            if self.limits[..i]
                .iter()
                .any(|other| other.name == limit.name)
            {
                return Err((
                    format!("budgets.limits[{i}].name"),
                    format!("{:?} is used twice; allowed: a name per budget", limit.name),
                ));
            }
        }
        if self.max_keys == 0 {
            return Err((
                "budgets.max_keys".into(),
                "0 is out of range; allowed: 1 or more".into(),
            ));
        }
        Ok(())
    }
}

/// A key's window: when it started and what it has used or reserved.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u64,
}

const SHARDS: usize = 16;

/// The live state of one budget.
#[derive(Debug)]
struct Budget {
    config: BudgetConfig,
    shards: Vec<Mutex<HashMap<String, Window>>>,
    max_keys_per_shard: usize,
}

/// Where a budget stands for one key, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The budget's name.
    pub budget: String,
    /// Its tokens per window.
    pub limit: u64,
    /// What is left in the window.
    pub remaining: u64,
    /// How long until the window resets.
    pub reset: Duration,
    /// The window's unit, as OpenAI abbreviates it (`TPM`).
    pub unit: &'static str,
}

/// A refusal: the budget a request does not fit, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// Where the refusing budget stands.
    pub standing: Standing,
    /// The tokens the request would have needed.
    pub requested: u64,
    /// The refused key, as stats name it (see [`Budgets::stat_keys`]).
    pub stat_key: String,
}

/// The tokens a request may use: it is refused unless `at_least` fit, and reserves up to
/// `at_most` (its prompt plus `max_tokens` if it sets one, else the default completion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The least the request needs room for.
    pub at_least: u64,
    /// The most it reserves.
    pub at_most: u64,
}

impl Need {
    /// A need known exactly.
    pub fn exactly(tokens: u64) -> Self {
        Self {
            at_least: tokens,
            at_most: tokens,
        }
    }
}

/// A request's claim on the budgets: per budget, the key it was admitted under and what it
/// reserved there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    keys: Vec<(usize, String, u64)>,
}

/// Every budget of a config.
#[derive(Debug, Default)]
pub struct Budgets {
    budgets: Vec<Budget>,
    reserve: bool,
    default_max_tokens: u64,
}

impl Budgets {
    /// The live budgets of a config.
    pub fn new(config: &BudgetsConfig) -> Self {
        let budgets = config
            .limits
            .iter()
            .map(|limit| Budget {
                config: limit.clone(),
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                max_keys_per_shard: config.max_keys.div_ceil(SHARDS),
            })
            .collect();
        Self {
            budgets,
            reserve: config.reserve,
            default_max_tokens: config.default_max_tokens,
        }
    }

    /// Whether any budget is configured.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// Whether requests reserve tokens before they go on.
    pub fn reserves(&self) -> bool {
        self.reserve
    }

    /// What a request of `prompt` tokens needs: room for its `max_tokens` if it sets one; else
    /// room for the prompt, reserving up to `default_max_tokens` more of what is left (a reply with
    /// no limit cannot be bounded, so it is not refused for a guess).
    pub fn need(&self, prompt: u64, max_tokens: Option<u64>) -> Need {
        match max_tokens {
            Some(max_tokens) => Need::exactly(prompt.saturating_add(max_tokens)),
            None => Need {
                at_least: prompt,
                at_most: prompt.saturating_add(self.default_max_tokens),
            },
        }
    }

    /// The budget and stats key of each of a claim's keys: a credential header's value is
    /// replaced by its fingerprint, so stats never hold an API key.
    pub fn stat_keys<'a>(&'a self, claim: &'a Claim) -> impl Iterator<Item = (&'a str, String)> {
        claim.keys.iter().filter_map(|(index, key, _)| {
            let budget = self.budgets.get(*index)?;
            Some((budget.config.name.as_str(), budget.stat_key(key)))
        })
    }

    /// The keys a request falls under, one per budget.
    pub fn keys<'h>(
        &self,
        model: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Vec<String> {
        self.budgets
            .iter()
            .map(|budget| match &budget.config.key {
                KeyBy::Global => "all".to_owned(),
                KeyBy::Header(name) => header(name).map_or_else(
                    || "-".to_owned(),
                    |v| String::from_utf8_lossy(v).into_owned(),
                ),
                KeyBy::Route => path.to_owned(),
                KeyBy::Model => model.to_owned(),
            })
            .collect()
    }

    /// Admits a request under `keys` if every budget has room for what it needs (with
    /// reservation) or any room at all (without); reserves what it may use when reserving.
    pub fn admit(&self, keys: &[String], need: Need, now: Instant) -> Result<Claim, Exceeded> {
        let need = if self.reserve { need } else { Need::exactly(0) };
        let mut claim = Claim::default();
        // Each budget checks and reserves under one lock, so concurrent requests cannot both
        // take the last tokens; a refusal gives back what the earlier budgets reserved.
        for (index, (budget, key)) in self.budgets.iter().zip(keys).enumerate() {
            match budget.try_add(key, need, self.reserve, now) {
                Ok(reserved) => claim.keys.push((index, key.clone(), reserved)),
                Err(standing) => {
                    self.settle(&claim, 0, now);
                    return Err(Exceeded {
                        standing,
                        requested: need.at_least.max(1),
                        stat_key: budget.stat_key(key),
                    });
                }
            }
        }
        Ok(claim)
    }

    /// Settles a claim to the tokens really used (its reservation, if any, is given back first).
    pub fn settle(&self, claim: &Claim, used: u64, now: Instant) {
        for (index, key, reserved) in &claim.keys {
            if let Some(budget) = self.budgets.get(*index) {
                budget.settle(key, *reserved, used, now);
            }
        }
    }

    /// Where each budget stands for a claim's keys, tightest first.
    pub fn standings(&self, claim: &Claim, now: Instant) -> Vec<Standing> {
        let mut standings: Vec<Standing> = claim
            .keys
            .iter()
            .filter_map(|(index, key, _)| Some(self.budgets.get(*index)?.standing(key, now)))
            .collect();
        standings.sort_by_key(|s| s.remaining);
        standings
    }
}

impl Budget {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, Window>> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[(hasher.finish() as usize) % SHARDS]
    }

    fn stat_key(&self, key: &str) -> String {
        match &self.config.key {
            KeyBy::Header(name) if is_secret_header(name) => fingerprint(key),
            _ => key.to_owned(),
        }
    }

    fn window(&self) -> Duration {
        self.config.per.duration()
    }

    /// The key's current window, a fresh one if the last has ended.
    fn current(&self, windows: &HashMap<String, Window>, key: &str, now: Instant) -> Window {
        match windows.get(key) {
            Some(window) if now.duration_since(window.started) < self.window() => *window,
            _ => Window {
                started: now,
                used: 0,
            },
        }
    }

    fn standing(&self, key: &str, now: Instant) -> Standing {
        let windows = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.standing_of(self.current(&windows, key, now), now)
    }

    fn standing_of(&self, window: Window, now: Instant) -> Standing {
        Standing {
            budget: self.config.name.clone(),
            limit: self.config.tokens,
            remaining: self.config.tokens.saturating_sub(window.used),
            reset: self
                .window()
                .saturating_sub(now.duration_since(window.started)),
            unit: self.config.per.abbreviation(),
        }
    }

    /// Reserves up to `need.at_most` of the key's window if `need.at_least` fits (when `whole`;
    /// else admits while any room is left, reserving nothing); else says where the budget stands.
    fn try_add(&self, key: &str, need: Need, whole: bool, now: Instant) -> Result<u64, Standing> {
        let mut windows = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut window = self.current(&windows, key, now);
        let remaining = self.config.tokens.saturating_sub(window.used);
        let fits = if whole {
            remaining >= need.at_least
        } else {
            remaining > 0
        };
        if !fits {
            return Err(self.standing_of(window, now));
        }
        let tokens = if whole {
            need.at_most.min(remaining)
        } else {
            0
        };
        window.used = window.used.saturating_add(tokens);
        if !windows.contains_key(key) && windows.len() >= self.max_keys_per_shard {
            self.evict(&mut windows, now);
        }
        windows.insert(key.to_owned(), window);
        Ok(tokens)
    }

    fn settle(&self, key: &str, reserved: u64, used: u64, now: Instant) {
        let mut windows = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut window = self.current(&windows, key, now);
        // A reservation made in an earlier window was already dropped with it.
        let same_window = windows
            .get(key)
            .is_some_and(|w| w.started == window.started);
        let still_reserved = if same_window { reserved } else { 0 };
        window.used = window
            .used
            .saturating_sub(still_reserved)
            .saturating_add(used);
        windows.insert(key.to_owned(), window);
    }

    /// Makes room for one key: drop ended windows, else the oldest.
    fn evict(&self, windows: &mut HashMap<String, Window>, now: Instant) {
        let length = self.window();
        windows.retain(|_, w| now.duration_since(w.started) < length);
        if windows.len() >= self.max_keys_per_shard {
            if let Some(oldest) = windows
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(k, _)| k.clone())
            {
                windows.remove(&oldest);
            }
        }
    }
}

/// Whether a header carries credentials, whose values must not become stat labels.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["authorization", "key", "token", "secret"]
        .iter()
        .any(|word| name.contains(word))
}

/// A stable fingerprint of a secret key (FNV-1a, 64 bits), to label its stats without it.
fn fingerprint(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `1m12s`, `45s`, `0s`: how OpenAI writes reset times.
pub fn reset_text(reset: Duration) -> String {
    let seconds = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
    match (seconds / 3600, (seconds % 3600) / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(reserve: bool, limits: &[(&str, u64, KeyBy)]) -> Budgets {
        Budgets::new(&BudgetsConfig {
            limits: limits
                .iter()
                .map(|(name, tokens, key)| BudgetConfig {
                    name: (*name).into(),
                    tokens: *tokens,
                    per: Per::Minute,
                    key: key.clone(),
                })
                .collect(),
            reserve,
            max_keys: 100,
            default_max_tokens: 256,
        })
    }

    #[test]
    fn ten_seven_token_replies_fit_seventy_tokens_and_the_eleventh_does_not() {
        let budgets = budgets(false, &[("tpm", 70, KeyBy::Global)]);
        let now = Instant::now();
        let keys = vec!["all".to_owned()];
        for _ in 0..10 {
            let claim = budgets.admit(&keys, Need::exactly(0), now).unwrap();
            budgets.settle(&claim, 7, now);
        }
        let refused = budgets.admit(&keys, Need::exactly(0), now).unwrap_err();
        assert_eq!(refused.standing.remaining, 0);
        assert!(refused.standing.reset <= Duration::from_secs(60));
        // A new window opens a minute later.
        assert!(
            budgets
                .admit(&keys, Need::exactly(0), now + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn keys_have_separate_budgets() {
        let budgets = budgets(false, &[("per_key", 10, KeyBy::Header("x-api-key".into()))]);
        let now = Instant::now();
        let keys_a = budgets.keys("m", "/", |_| Some(b"a"));
        let claim = budgets.admit(&keys_a, Need::exactly(0), now).unwrap();
        budgets.settle(&claim, 10, now);
        assert!(budgets.admit(&keys_a, Need::exactly(0), now).is_err());
        let keys_b = budgets.keys("m", "/", |_| Some(b"b"));
        assert!(budgets.admit(&keys_b, Need::exactly(0), now).is_ok());
    }

    #[test]
    fn reservation_stops_a_burst_and_settles_to_real_usage() {
        let budgets = budgets(true, &[("tpm", 100, KeyBy::Global)]);
        let now = Instant::now();
        let keys = vec!["all".to_owned()];
        let claims: Vec<Claim> = (0..4)
            .filter_map(|_| budgets.admit(&keys, Need::exactly(30), now).ok())
            .collect();
        assert_eq!(
            claims.len(),
            3,
            "the fourth 30-token reservation would overshoot 100"
        );
        for claim in &claims {
            budgets.settle(claim, 10, now);
        }
        assert_eq!(budgets.standings(&claims[0], now)[0].remaining, 70);
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let budgets = budgets(true, &[("tpm", 100, KeyBy::Global)]);
        let now = Instant::now();
        let admitted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        budgets
                            .admit(&["all".to_owned()], Need::exactly(30), now)
                            .is_ok()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| usize::from(worker.join().unwrap()))
                .sum()
        });
        assert_eq!(admitted, 3);
    }

    #[test]
    fn every_budget_must_fit_and_a_refusal_reserves_nothing() {
        let budgets = budgets(
            true,
            &[("big", 1000, KeyBy::Global), ("small", 10, KeyBy::Model)],
        );
        let now = Instant::now();
        let keys = budgets.keys("gpt-4o", "/v1/chat/completions", |_| None);
        assert_eq!(keys, ["all", "gpt-4o"]);
        let refused = budgets.admit(&keys, Need::exactly(20), now).unwrap_err();
        assert_eq!(refused.standing.budget, "small");
        let claim = budgets.admit(&keys, Need::exactly(5), now).unwrap();
        assert_eq!(budgets.standings(&claim, now)[1].remaining, 995);
    }

    #[test]
    fn keys_are_bounded() {
        let budgets = budgets(false, &[("k", 5, KeyBy::Route)]);
        let now = Instant::now();
        for i in 0..1000 {
            let claim = budgets
                .admit(&[format!("/{i}")], Need::exactly(0), now)
                .unwrap();
            budgets.settle(&claim, 1, now);
        }
        let kept: usize = budgets.budgets[0]
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum();
        assert!(kept <= 100 + SHARDS, "{kept}");
    }

    #[test]
    fn bad_budgets_are_refused_naming_the_field() {
        let field_of = |json: &str| {
            crate::config::FilterConfig::from_json(json.as_bytes())
                .unwrap_err()
                .field
        };
        let limit = |body: &str| format!(r#"{{"budgets": {{"limits": [{body}]}}}}"#);
        let good = r#"{"name": "a", "tokens": 1, "per": "minute", "key": "global"}"#;
        assert_eq!(
            field_of(&limit(
                r#"{"name": "a", "tokens": 0, "per": "minute", "key": "global"}"#
            )),
            "budgets.limits[0].tokens"
        );
        assert_eq!(
            field_of(&limit(
                r#"{"name": "a b", "tokens": 1, "per": "minute", "key": "global"}"#
            )),
            "budgets.limits[0].name"
        );
        assert_eq!(
            field_of(&limit(&format!("{good}, {good}"))),
            "budgets.limits[1].name"
        );
        assert_eq!(
            field_of(&limit(
                r#"{"name": "a", "tokens": 1, "per": "week", "key": "global"}"#
            )),
            "budgets.limits[0].per"
        );
        assert_eq!(
            field_of(r#"{"budgets": {"max_keys": 0}}"#),
            "budgets.max_keys"
        );
    }

    #[test]
    fn reset_times_read_like_openais() {
        assert_eq!(reset_text(Duration::from_millis(400)), "1s");
        assert_eq!(reset_text(Duration::from_secs(72)), "1m12s");
        assert_eq!(reset_text(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(reset_text(Duration::ZERO), "0s");
    }
}
