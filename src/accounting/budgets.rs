//! Token budgets: so many tokens per unit of time, per key (an API key header, the request path,
//! the model, or everyone), shared by all of Envoy's workers.
//!
//! Each key has a fixed window that starts with its first request and lasts one unit; within it,
//! tokens are charged from replies' `usage`. With reservation on, a request first reserves its
//! prompt tokens plus the completion it may ask for, is refused if that does not fit, and settles
//! to its real usage when the reply ends, so a burst cannot overshoot the budget.
//!
//! State lives in memory, in shards of a bounded number of keys, and resets when Envoy restarts.
//! A full shard makes room by forgetting a key whose window has ended, else one that owes nothing
//! in its window; a key that owes anything keeps its window to its end, whatever keys come and
//! go, and a new key finds no room until then rather than a debt being forgotten.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::RefUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

use crate::config_error::{ConfigError, check_label_name};

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
    /// The value of this request header (such as an API key or a tenant id); its name is
    /// lower-cased at load, as Envoy names headers.
    Header(#[serde(deserialize_with = "lower_case")] String),
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

fn lower_case<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(String::deserialize(deserializer)?.to_ascii_lowercase())
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

/// The `budgets` section, checked: what [`Budgets`] are built from. Only [`BudgetLimits::parse`]
/// makes one, so every budget has a name of its own that can be a stats label, at least one token
/// and, kept per header, a header's name; and at least one key is kept per budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimits {
    limits: Vec<BudgetConfig>,
    reserve: bool,
    max_keys: usize,
    default_max_tokens: u64,
}

impl BudgetLimits {
    /// Checks names and sizes. Errors name fields under `budgets.`.
    pub fn parse(config: BudgetsConfig) -> Result<Self, ConfigError> {
        for (i, limit) in config.limits.iter().enumerate() {
            if limit.tokens == 0 {
                return Err(ConfigError::new(
                    format!("budgets.limits[{i}].tokens"),
                    "0 is out of range; allowed: 1 or more",
                ));
            }
            check_label_name(&format!("budgets.limits[{i}].name"), &limit.name)?;
            if let KeyBy::Header(name) = &limit.key {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::new(
                        format!("budgets.limits[{i}].key.header"),
                        format!("{name:?} is not a header name; allowed: a request header's name"),
                    ));
                }
            }
            if config.limits[..i]
                .iter()
                .any(|other| other.name == limit.name)
            {
                return Err(ConfigError::new(
                    format!("budgets.limits[{i}].name"),
                    format!("{:?} is used twice; allowed: a name per budget", limit.name),
                ));
            }
        }
        if config.max_keys == 0 {
            return Err(ConfigError::new(
                "budgets.max_keys",
                "0 is out of range; allowed: 1 or more",
            ));
        }
        Ok(Self {
            limits: config.limits,
            reserve: config.reserve,
            max_keys: config.max_keys,
            default_max_tokens: config.default_max_tokens,
        })
    }

    /// The budgets, in the order configured: what tests check a parsed or merged config by.
    #[cfg(test)]
    pub(crate) fn limits(&self) -> &[BudgetConfig] {
        &self.limits
    }
}

/// A key's window: when it started and what it has used or reserved.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    used: u64,
}

const SHARDS: usize = 16;

/// A key's window, and its place in the shard's orderings.
#[derive(Debug)]
struct Entry {
    window: Window,
    seq: u64,
}

/// Where a key sits in a shard's orderings: its window's start, then its arrival.
type Place = (Instant, u64);

/// Some of a budget's keys, with the orderings that find what to forget in O(log n).
#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<Arc<str>, Entry>,
    /// Every key by window start: the first is the first whose window ends (all have one length).
    by_start: BTreeMap<Place, Arc<str>>,
    /// The keys that owe nothing in their window, by window start.
    idle: BTreeMap<Place, Arc<str>>,
    next_seq: u64,
}

impl Shard {
    fn get(&self, key: &str) -> Option<Window> {
        self.entries.get(key).map(|entry| entry.window)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets a key's window, keeping the orderings in step.
    fn put(&mut self, key: &str, window: Window) {
        let (name, seq) = match self.entries.get(key) {
            Some(entry) => {
                let place = (entry.window.started, entry.seq);
                self.idle.remove(&place);
                let name = self
                    .by_start
                    .remove(&place)
                    .expect("every entry is in by_start");
                (name, entry.seq)
            }
            None => {
                self.next_seq += 1;
                (Arc::from(key), self.next_seq)
            }
        };
        let place = (window.started, seq);
        if window.used == 0 {
            self.idle.insert(place, Arc::clone(&name));
        }
        self.by_start.insert(place, Arc::clone(&name));
        self.entries.insert(name, Entry { window, seq });
    }

    /// Forgets one key that no longer matters: the first whose window has ended, else the first
    /// that owes nothing. `false` when every key owes tokens in a window still open.
    fn evict(&mut self, now: Instant, length: Duration) -> bool {
        let ended = self
            .by_start
            .first_key_value()
            .map(|(place, _)| *place)
            .filter(|(started, _)| now.duration_since(*started) >= length);
        let Some(place) = ended.or_else(|| self.idle.first_key_value().map(|(place, _)| *place))
        else {
            return false;
        };
        self.idle.remove(&place);
        if let Some(name) = self.by_start.remove(&place) {
            self.entries.remove(&name);
        }
        true
    }

    /// Forgets keys that no longer matter until fewer than `max` are kept; `false` when it cannot.
    /// Amortised O(log n): a key forgotten beyond the first was one too many, kept for a reply
    /// in flight (see [`Budget::settle`]).
    fn make_room(&mut self, max: usize, now: Instant, length: Duration) -> bool {
        while self.len() >= max {
            if !self.evict(now, length) {
                return false;
            }
        }
        true
    }

    /// How long until a key can be forgotten, making room for a new one.
    fn room_in(&self, now: Instant, length: Duration) -> Duration {
        self.by_start
            .first_key_value()
            .map_or(Duration::ZERO, |((started, _), _)| {
                length.saturating_sub(now.duration_since(*started))
            })
    }
}

/// The live state of one budget.
#[derive(Debug)]
struct Budget {
    config: BudgetConfig,
    shards: Vec<Mutex<Shard>>,
    max_keys: usize,
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

/// A refusal of a key new to a budget that keeps as many keys as it may, each owing tokens in
/// a window still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysFull {
    /// The budget's name.
    pub budget: String,
    /// The keys it keeps at most.
    pub max_keys: usize,
    /// How long until a window ends and makes room.
    pub reset: Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It does not fit a budget.
    Exceeded(Exceeded),
    /// Its key is new and a budget has no room for one.
    KeysFull(KeysFull),
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

/// A request's claim on the budgets: per budget, the key it was admitted under, the window it
/// was admitted in and what it reserved there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claim {
    keys: Vec<ClaimedKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClaimedKey {
    index: usize,
    key: String,
    started: Instant,
    reserved: u64,
}

/// Where budgets read the time: the monotonic clock, or a test's.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Instant + Send + Sync + RefUnwindSafe>);

impl Clock {
    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> Instant + Send + Sync + RefUnwindSafe + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> Instant {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new(Instant::now)
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// Every budget of a config.
#[derive(Debug, Default)]
pub struct Budgets {
    budgets: Vec<Budget>,
    reserve: bool,
    default_max_tokens: u64,
    clock: Clock,
}

impl Budgets {
    /// The live budgets of a config, on the monotonic clock.
    pub fn new(config: &BudgetLimits) -> Self {
        Self::with_clock(config, Clock::default())
    }

    /// The live budgets of a config, on `clock`.
    pub fn with_clock(config: &BudgetLimits, clock: Clock) -> Self {
        // Fewer shards for fewer keys, so that one full shard does not refuse new keys while
        // the others have room to spare.
        let shards = (config.max_keys / 256).clamp(1, SHARDS);
        let budgets = config
            .limits
            .iter()
            .map(|limit| Budget {
                config: limit.clone(),
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                max_keys: config.max_keys,
                max_keys_per_shard: config.max_keys.div_ceil(shards),
            })
            .collect();
        Self {
            budgets,
            reserve: config.reserve,
            default_max_tokens: config.default_max_tokens,
            clock,
        }
    }

    /// The time now, on the budgets' clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
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
        claim.keys.iter().filter_map(|claimed| {
            let budget = self.budgets.get(claimed.index)?;
            Some((budget.config.name.as_str(), budget.stat_key(&claimed.key)))
        })
    }

    /// The request headers the budgets key on, lower-case.
    pub fn key_headers(&self) -> impl Iterator<Item = &str> {
        self.budgets
            .iter()
            .filter_map(|budget| match &budget.config.key {
                KeyBy::Header(name) => Some(name.as_str()),
                _ => None,
            })
    }

    /// The keys a request falls under, one per budget. A header's value is taken without the
    /// whitespace around it, and a credential's scheme in lower case (`Bearer` and `bearer` are
    /// one key), so that spelling a key another way does not make it a new one.
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
                    |value| header_key(name, &String::from_utf8_lossy(value)),
                ),
                KeyBy::Route => path.to_owned(),
                KeyBy::Model => model.to_owned(),
            })
            .collect()
    }

    /// Admits a request under `keys` if every budget has room for what it needs (with
    /// reservation) or any room at all (without); reserves what it may use when reserving.
    pub fn admit(&self, keys: &[String], need: Need, now: Instant) -> Result<Claim, Refusal> {
        let need = if self.reserve { need } else { Need::exactly(0) };
        let mut claim = Claim::default();
        // Each budget checks and reserves under one lock, so concurrent requests cannot both
        // take the last tokens; a refusal gives back what the earlier budgets reserved.
        for (index, (budget, key)) in self.budgets.iter().zip(keys).enumerate() {
            match budget.try_add(key, need, self.reserve, now) {
                Ok((started, reserved)) => claim.keys.push(ClaimedKey {
                    index,
                    key: key.clone(),
                    started,
                    reserved,
                }),
                Err(refused) => {
                    self.settle(&claim, 0, now);
                    return Err(match refused {
                        Ok(standing) => Refusal::Exceeded(Exceeded {
                            standing,
                            requested: need.at_least.max(1),
                            stat_key: budget.stat_key(key),
                        }),
                        Err(reset) => Refusal::KeysFull(KeysFull {
                            budget: budget.config.name.clone(),
                            max_keys: budget.max_keys,
                            reset,
                        }),
                    });
                }
            }
        }
        Ok(claim)
    }

    /// Settles a claim to the tokens really used (its reservation, if any, is given back first).
    pub fn settle(&self, claim: &Claim, used: u64, now: Instant) {
        for claimed in &claim.keys {
            if let Some(budget) = self.budgets.get(claimed.index) {
                budget.settle(claimed, used, now);
            }
        }
    }

    /// Where each budget stands for a claim's keys, tightest first.
    pub fn standings(&self, claim: &Claim, now: Instant) -> Vec<Standing> {
        let mut standings: Vec<Standing> = claim
            .keys
            .iter()
            .filter_map(|claimed| {
                Some(self.budgets.get(claimed.index)?.standing(&claimed.key, now))
            })
            .collect();
        standings.sort_by_key(|s| s.remaining);
        standings
    }
}

impl Budget {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() as usize) % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
    fn current(&self, stored: Option<Window>, now: Instant) -> Window {
        match stored {
            Some(window) if now.duration_since(window.started) < self.window() => window,
            _ => Window {
                started: now,
                used: 0,
            },
        }
    }

    fn standing(&self, key: &str, now: Instant) -> Standing {
        let stored = self.shard(key).get(key);
        self.standing_of(self.current(stored, now), now)
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
    /// else admits while any room is left, reserving nothing), returning the window's start and
    /// what was reserved. Else `Ok(standing)` when it does not fit, `Err(reset)` when the key is
    /// new and no key can be forgotten for it.
    fn try_add(
        &self,
        key: &str,
        need: Need,
        whole: bool,
        now: Instant,
    ) -> Result<(Instant, u64), Result<Standing, Duration>> {
        let mut shard = self.shard(key);
        let stored = shard.get(key);
        let mut window = self.current(stored, now);
        let remaining = self.config.tokens.saturating_sub(window.used);
        // A request that needs nothing still needs a token: a spent budget admits none.
        let fits = if whole {
            remaining >= need.at_least.max(1)
        } else {
            remaining > 0
        };
        if !fits {
            return Err(Ok(self.standing_of(window, now)));
        }
        if stored.is_none() && !shard.make_room(self.max_keys_per_shard, now, self.window()) {
            return Err(Err(shard.room_in(now, self.window())));
        }
        let tokens = if whole {
            need.at_most.min(remaining)
        } else {
            0
        };
        window.used = window.used.saturating_add(tokens);
        shard.put(key, window);
        Ok((window.started, tokens))
    }

    fn settle(&self, claimed: &ClaimedKey, used: u64, now: Instant) {
        let mut shard = self.shard(&claimed.key);
        let stored = shard.get(&claimed.key);
        let mut window = self.current(stored, now);
        // A reservation made in an earlier window was dropped with it.
        let still_reserved = if window.started == claimed.started {
            claimed.reserved
        } else {
            0
        };
        window.used = window
            .used
            .saturating_sub(still_reserved)
            .saturating_add(used);
        if stored.is_none() {
            // Only a key that owed nothing can have been forgotten since it was admitted.
            if used == 0 {
                return;
            }
            // A debt is kept even in a full shard, which then outgrows its bound by at most the
            // replies that were in flight when it last admitted a new key.
            shard.make_room(self.max_keys_per_shard, now, self.window());
        }
        shard.put(&claimed.key, window);
    }
}

/// Whether a header carries credentials, whose values must not become stat labels.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["authorization", "key", "token", "secret"]
        .iter()
        .any(|word| name.contains(word))
}

/// A header's value as a budget key: without the whitespace around it; a credential's scheme in
/// lower case and one space after it (RFC 9110 makes schemes case-insensitive).
fn header_key(name: &str, value: &str) -> String {
    let value = value.trim_matches([' ', '\t']);
    if !matches!(name, "authorization" | "proxy-authorization") {
        return value.to_owned();
    }
    match value.split_once([' ', '\t']) {
        Some((scheme, credentials)) => format!(
            "{} {}",
            scheme.to_ascii_lowercase(),
            credentials.trim_start_matches([' ', '\t'])
        ),
        None => value.to_owned(),
    }
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

    fn exceeded(refusal: Refusal) -> Exceeded {
        match refusal {
            Refusal::Exceeded(exceeded) => exceeded,
            Refusal::KeysFull(full) => panic!("{full:?}"),
        }
    }

    fn budgets(reserve: bool, limits: &[(&str, u64, KeyBy)]) -> Budgets {
        parsed(BudgetsConfig {
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

    fn parsed(config: BudgetsConfig) -> Budgets {
        Budgets::new(&BudgetLimits::parse(config).unwrap())
    }

    #[test]
    fn parse_names_the_bad_field() {
        let field = |json: &str| {
            let config: BudgetsConfig = serde_json::from_str(json).unwrap();
            BudgetLimits::parse(config).unwrap_err().field
        };
        let limit = |name: &str, tokens: u64, key: &str| {
            format!(r#"{{"name": "{name}", "tokens": {tokens}, "per": "minute", "key": {key}}}"#)
        };
        let limits = |limits: &[String]| format!(r#"{{"limits": [{}]}}"#, limits.join(", "));
        let good = limit("tpm", 5, r#""global""#);
        assert_eq!(
            field(&limits(&[good.clone(), limit("b", 0, r#""model""#)])),
            "budgets.limits[1].tokens"
        );
        assert_eq!(
            field(&limits(&[limit("a b", 1, r#""route""#)])),
            "budgets.limits[0].name"
        );
        assert_eq!(
            field(&limits(&[limit("h", 1, r#"{"header": "x y"}"#)])),
            "budgets.limits[0].key.header"
        );
        assert_eq!(
            field(&limits(&[good.clone(), good.clone()])),
            "budgets.limits[1].name"
        );
        assert_eq!(field(r#"{"max_keys": 0}"#), "budgets.max_keys");
        let config: BudgetsConfig = serde_json::from_str(&limits(&[good])).unwrap();
        assert_eq!(BudgetLimits::parse(config).unwrap().limits()[0].name, "tpm");
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
        let refused = exceeded(budgets.admit(&keys, Need::exactly(0), now).unwrap_err());
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
        let refused = exceeded(budgets.admit(&keys, Need::exactly(20), now).unwrap_err());
        assert_eq!(refused.standing.budget, "small");
        let claim = budgets.admit(&keys, Need::exactly(5), now).unwrap();
        assert_eq!(budgets.standings(&claim, now)[1].remaining, 995);
    }

    fn kept(budgets: &Budgets) -> usize {
        budgets.budgets[0]
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum()
    }

    #[test]
    fn keys_are_bounded_and_a_key_that_owes_is_never_forgotten_for_a_new_one() {
        let budgets = budgets(false, &[("k", 5, KeyBy::Route)]);
        let now = Instant::now();
        let mut refused = 0;
        for i in 0..1000 {
            match budgets.admit(&[format!("/{i}")], Need::exactly(0), now) {
                Ok(claim) => budgets.settle(&claim, 1, now),
                Err(Refusal::KeysFull(full)) => {
                    assert_eq!(full.reset, Duration::from_secs(60));
                    refused += 1;
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(kept(&budgets), 100);
        assert_eq!(refused, 900, "every key kept owes a token");
        // Keys that owe nothing make room; once the windows end, every key does.
        let later = now + Duration::from_secs(60);
        assert!(
            budgets
                .admit(&["/new".into()], Need::exactly(0), later)
                .is_ok()
        );
        assert_eq!(kept(&budgets), 100);
    }

    #[test]
    fn keys_that_owe_nothing_are_forgotten_first() {
        let budgets = budgets(true, &[("k", 5, KeyBy::Route)]);
        let now = Instant::now();
        for i in 0..100 {
            let claim = budgets
                .admit(&[format!("/{i}")], Need::exactly(1), now)
                .unwrap();
            // Half of them settle to nothing (an upstream error, say).
            budgets.settle(&claim, u64::from(i % 2 == 0), now);
        }
        for i in 100..150 {
            assert!(
                budgets
                    .admit(&[format!("/{i}")], Need::exactly(0), now)
                    .is_ok()
            );
        }
        for i in (0..100).step_by(2) {
            assert!(
                budgets.budgets[0]
                    .shard(&format!("/{i}"))
                    .get(&format!("/{i}"))
                    .is_some()
            );
        }
    }

    /// Random churn of junk keys, spends and settles, over a small table and a fake clock: a key
    /// that has spent its budget stays refused until its window ends, and the table stays
    /// within its bound.
    #[test]
    fn churn_never_refills_a_spent_key() {
        use rand::rngs::StdRng;
        use rand::{RngExt, SeedableRng};
        const IN_FLIGHT: usize = 8;
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let reserve = rng.random_bool(0.5);
            let max_keys = rng.random_range(1..40);
            let budgets = parsed(BudgetsConfig {
                limits: vec![BudgetConfig {
                    name: "k".into(),
                    tokens: 10,
                    per: Per::Second,
                    key: KeyBy::Route,
                }],
                reserve,
                max_keys,
                default_max_tokens: 4,
            });
            let start = Instant::now();
            let mut now = start;
            // The spent key's window, once it has spent it all.
            let mut spent_until: Option<Instant> = None;
            let mut open: Vec<Claim> = Vec::new();
            for _ in 0..2000 {
                now += Duration::from_millis(rng.random_range(0..30));
                let key = if rng.random_bool(0.3) {
                    "victim".to_owned()
                } else {
                    format!("junk{}", rng.random_range(0..200))
                };
                let admitted = budgets.admit(
                    std::slice::from_ref(&key),
                    Need::exactly(rng.random_range(0..6)),
                    now,
                );
                if key == "victim" {
                    if let Some(until) = spent_until {
                        if now < until {
                            assert!(admitted.is_err(), "seed {seed}: a spent key was admitted");
                        } else {
                            spent_until = None;
                        }
                    }
                }
                if let Ok(claim) = admitted {
                    if key == "victim" {
                        // The victim spends its whole budget at once.
                        budgets.settle(&claim, 10, now);
                        let standing = &budgets.standings(&claim, now)[0];
                        if standing.remaining == 0 && spent_until.is_none() {
                            spent_until = Some(now + standing.reset);
                        }
                    } else {
                        open.push(claim);
                    }
                }
                if !open.is_empty() && (open.len() > IN_FLIGHT || rng.random_bool(0.5)) {
                    let claim = open.swap_remove(rng.random_range(0..open.len()));
                    budgets.settle(&claim, rng.random_range(0..3), now);
                }
                assert!(kept(&budgets) <= max_keys + IN_FLIGHT + 1, "seed {seed}");
            }
        }
    }

    #[test]
    fn header_keys_are_one_however_they_are_spelt() {
        let config: BudgetsConfig = serde_json::from_str(
            r#"{"limits": [
                {"name": "auth", "tokens": 1, "per": "minute", "key": {"header": "Authorization"}},
                {"name": "tenant", "tokens": 1, "per": "minute", "key": {"header": "X-Tenant"}}]}"#,
        )
        .unwrap();
        assert_eq!(config.limits[0].key, KeyBy::Header("authorization".into()));
        assert_eq!(config.limits[1].key, KeyBy::Header("x-tenant".into()));
        let budgets = parsed(config);
        let keys = |auth: &'static str, tenant: &'static str| {
            budgets.keys("m", "/", move |name| match name {
                "authorization" => Some(auth.as_bytes()),
                "x-tenant" => Some(tenant.as_bytes()),
                _ => None,
            })
        };
        let one = keys("Bearer sk-A", "acme");
        for (auth, tenant) in [
            ("bearer sk-A", " acme"),
            ("  BEARER   sk-A ", "acme\t"),
            ("bEaReR\tsk-A", "acme"),
        ] {
            assert_eq!(keys(auth, tenant), one);
        }
        assert_ne!(
            keys("Bearer sk-a", "acme")[0],
            one[0],
            "credentials keep their case"
        );
        assert_ne!(
            keys("Bearer sk-A", "Acme")[1],
            one[1],
            "other values keep their case"
        );
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
        assert_eq!(
            field_of(&limit(
                r#"{"name": "a", "tokens": 1, "per": "minute", "key": {"header": ""}}"#
            )),
            "budgets.limits[0].key.header"
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
