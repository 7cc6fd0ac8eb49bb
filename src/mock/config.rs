//! The mock's part of the `filter_config`: rules, content, latency, faults, models and the reply
//! ceiling, parsed and checked once at load.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::config_error::{ConfigError, REGEX_SIZE_LIMIT};
use crate::fixtures::config::{Fixtures, RawFixturesConfig};
use crate::mock::faults::{FaultRates, FaultsConfig};
use crate::mock::load::{LoadConfig, LoadSettings};

/// Settings of the mock, checked (see [`MockConfig::parse`]).
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Scripted replies, tried in order before `content`; the first that matches answers.
    pub rules: Vec<Rule>,
    /// Where the reply text comes from when no rule matches.
    pub content: ContentMode,
    /// How fast the reply comes.
    pub latency: LatencyConfig,
    /// How often the reply is an error instead.
    pub faults: FaultRates,
    /// The models served: listed by `GET /v1/models`; with `strict_models`, the only ones accepted.
    pub models: Vec<String>,
    /// Refuse models not in `models` (nor aliases) with OpenAI's 404 `model_not_found`.
    pub strict_models: bool,
    /// Requested model names answered as another model, such as `{"gpt-4": "gpt-4o"}`.
    pub model_aliases: BTreeMap<String, String>,
    /// Context windows in tokens by model (`"*"` for any other model): a prompt plus
    /// `max_tokens` beyond its window gets OpenAI's `context_length_exceeded`.
    pub context_windows: BTreeMap<String, u32>,
    /// The largest reply the mock builds, in bytes: a request whose reply could be larger (by
    /// its `n`, `max_tokens`, echoed prompt, tools, schema or stream events) gets a 400 first.
    pub max_reply_bytes: u64,
    /// A loaded server's behaviour (admission, queueing, prefill, prefix cache, vLLM metrics);
    /// none answers every request at once, as before.
    pub load: Option<LoadSettings>,
    /// Recorded exchanges replayed before anything else answers, loaded and indexed at load.
    pub fixtures: Option<Arc<Fixtures>>,
}

/// The `mock` section as serde reads it (the fields of [`MockConfig`], `faults` as written);
/// [`MockConfig::parse`] checks it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMockConfig {
    rules: Vec<Rule>,
    content: ContentMode,
    latency: LatencyConfig,
    faults: FaultsConfig,
    models: Vec<String>,
    strict_models: bool,
    model_aliases: BTreeMap<String, String>,
    context_windows: BTreeMap<String, u32>,
    max_reply_bytes: MaxReplyBytes,
    load: Option<LoadConfig>,
    fixtures: Option<RawFixturesConfig>,
}

/// `mock.max_reply_bytes` as written, [`DEFAULT_MAX_REPLY_BYTES`] when it is not.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct MaxReplyBytes(u64);

impl Default for MaxReplyBytes {
    fn default() -> Self {
        Self(DEFAULT_MAX_REPLY_BYTES)
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            content: ContentMode::default(),
            latency: LatencyConfig::default(),
            faults: FaultRates::default(),
            models: Vec::new(),
            strict_models: false,
            model_aliases: BTreeMap::new(),
            context_windows: BTreeMap::new(),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            load: None,
            fixtures: None,
        }
    }
}

/// The default of `mock.max_reply_bytes`: 16 MiB.
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// The range `mock.max_reply_bytes` may take: room for the largest generated structured value,
/// up to 1 GiB.
pub const MAX_REPLY_BYTES_RANGE: std::ops::RangeInclusive<u64> =
    (256 * 1024)..=(1024 * 1024 * 1024);

impl MockConfig {
    /// The model a request for `requested` is answered as: its alias target, or itself; `None`
    /// when strict models refuse it.
    pub fn served_model<'a>(&'a self, requested: &'a str) -> Option<&'a str> {
        let model = self
            .model_aliases
            .get(requested)
            .map_or(requested, String::as_str);
        let known = self.models.iter().any(|m| m == model);
        (known || !self.strict_models).then_some(model)
    }

    /// The context window of `model`, if one is configured.
    pub fn context_window(&self, model: &str) -> Option<u32> {
        self.context_windows
            .get(model)
            .or_else(|| self.context_windows.get("*"))
            .copied()
    }
}

/// How fast the mock answers: time to first token, then one token every `inter_token_ms`.
/// A non-streamed reply waits as long as the same stream would take. All zero means at once.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    /// Milliseconds before the first token (per request: header `x-llm-edge-ttft-ms`).
    #[serde(default)]
    pub time_to_first_token_ms: u64,
    /// Milliseconds between tokens (per request: header `x-llm-edge-itl-ms`).
    #[serde(default)]
    pub inter_token_ms: u64,
    /// Each delay varies uniformly by up to this fraction of itself, 0 to 1.
    #[serde(default)]
    pub jitter: f64,
    /// Seeds the jitter, so that runs repeat exactly; unseeded jitter differs per request.
    #[serde(default)]
    pub seed: Option<u64>,
}

/// The longest delay a config or a request header may ask for, in milliseconds.
pub const MAX_DELAY_MS: u64 = 600_000;

/// Where the mock's reply text comes from. A request's `"httpbun": {"content": …}` overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentMode {
    /// Reply with the text of the last user message.
    // A struct variant, so that serde rejects unknown fields beside `"mode": "echo"` too.
    Echo {},
    /// Reply with the same configured text every time.
    Fixed {
        /// The reply text.
        text: String,
    },
    /// Reply with filler sentences: as long as the request's `max_tokens` allows (ending with
    /// `finish_reason: "length"`), else between `min_tokens` and `max_tokens` tokens. A request
    /// `seed` repeats the text.
    Lorem {
        /// The shortest reply, in tokens.
        #[serde(default = "default_lorem_min_tokens")]
        min_tokens: u32,
        /// The longest reply, in tokens.
        #[serde(default = "default_lorem_max_tokens")]
        max_tokens: u32,
    },
}

/// The longest lorem reply a config may ask for, in tokens.
pub const MAX_LOREM_TOKENS: u32 = 100_000;

fn default_lorem_min_tokens() -> u32 {
    20
}

fn default_lorem_max_tokens() -> u32 {
    120
}

/// A scripted reply: when every condition in `when` holds, answer with `reply`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The conditions; none at all matches every request.
    #[serde(default)]
    pub when: RuleMatch,
    /// The reply text.
    pub reply: String,
}

/// The conditions of a [`Rule`]; every one given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// The request's `model`, exactly.
    #[serde(default)]
    pub model: Option<String>,
    /// A regular expression that must match the last user message (linear-time engine).
    #[serde(default, deserialize_with = "deserialize_regex")]
    pub user_message_regex: Option<regex::Regex>,
    /// A request header that must have this exact value.
    #[serde(default)]
    pub header: Option<HeaderMatch>,
}

/// A request header and its expected value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    /// The header name; matched case-insensitively.
    pub name: String,
    /// The exact value.
    pub value: String,
}

fn deserialize_regex<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<regex::Regex>, D::Error> {
    let Some(pattern) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    regex::RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid regex {pattern:?}: {e}")))
}

impl Default for ContentMode {
    fn default() -> Self {
        Self::Echo {}
    }
}

impl MockConfig {
    /// Checks the values serde cannot, reads the fault rates, and normalises what every request
    /// would otherwise redo (rule header names to lower case). Errors name fields under `mock.`.
    pub fn parse(raw: RawMockConfig) -> Result<Self, ConfigError> {
        check_latency(&raw.latency)?;
        check_content(&raw.content)?;
        check_models(&raw)?;
        let MaxReplyBytes(max_reply_bytes) = raw.max_reply_bytes;
        if !MAX_REPLY_BYTES_RANGE.contains(&max_reply_bytes) {
            return Err(ConfigError::new(
                "mock.max_reply_bytes",
                format!(
                    "{} is out of range; allowed: {} to {} bytes",
                    max_reply_bytes,
                    MAX_REPLY_BYTES_RANGE.start(),
                    MAX_REPLY_BYTES_RANGE.end()
                ),
            ));
        }
        if let Some((model, _)) = raw.context_windows.iter().find(|(_, w)| **w == 0) {
            return Err(ConfigError::new(
                format!("mock.context_windows.{model}"),
                "0 is out of range; allowed: 1 or more tokens",
            ));
        }
        let faults = FaultRates::parse(&raw.faults)?;
        let load = raw
            .load
            .map(|load| LoadSettings::parse(load, &raw.models))
            .transpose()?;
        let fixtures = raw.fixtures.map(Fixtures::parse).transpose()?.map(Arc::new);
        let mut rules = raw.rules;
        for rule in &mut rules {
            if let Some(header) = &mut rule.when.header {
                header.name.make_ascii_lowercase();
            }
        }
        Ok(Self {
            rules,
            content: raw.content,
            latency: raw.latency,
            faults,
            models: raw.models,
            strict_models: raw.strict_models,
            model_aliases: raw.model_aliases,
            context_windows: raw.context_windows,
            max_reply_bytes,
            load,
            fixtures,
        })
    }
}

fn check_models(mock: &RawMockConfig) -> Result<(), ConfigError> {
    if mock.strict_models && mock.models.is_empty() {
        return Err(ConfigError::new(
            "mock.strict_models",
            "true needs a non-empty mock.models: strict mode would refuse every model",
        ));
    }
    if let Some(empty) = mock.models.iter().position(String::is_empty) {
        return Err(ConfigError::new(
            format!("mock.models[{empty}]"),
            "\"\" is not a model name",
        ));
    }
    if mock.models.is_empty() {
        return Ok(());
    }
    match mock
        .model_aliases
        .iter()
        .find(|(_, target)| !mock.models.contains(target))
    {
        Some((alias, target)) => Err(ConfigError::new(
            format!("mock.model_aliases.{alias}"),
            format!(
                "{target:?} is not in mock.models; allowed: {:?}",
                mock.models
            ),
        )),
        None => Ok(()),
    }
}

fn check_content(content: &ContentMode) -> Result<(), ConfigError> {
    if let ContentMode::Lorem {
        min_tokens,
        max_tokens,
    } = *content
    {
        if !(1..=MAX_LOREM_TOKENS).contains(&max_tokens) {
            return Err(ConfigError::new(
                "mock.content.max_tokens",
                format!("{max_tokens} is out of range; allowed: 1 to {MAX_LOREM_TOKENS}"),
            ));
        }
        if !(1..=max_tokens).contains(&min_tokens) {
            return Err(ConfigError::new(
                "mock.content.min_tokens",
                format!("{min_tokens} is out of range; allowed: 1 to max_tokens ({max_tokens})"),
            ));
        }
    }
    Ok(())
}

fn check_latency(latency: &LatencyConfig) -> Result<(), ConfigError> {
    for (field, value) in [
        (
            "mock.latency.time_to_first_token_ms",
            latency.time_to_first_token_ms,
        ),
        ("mock.latency.inter_token_ms", latency.inter_token_ms),
    ] {
        if value > MAX_DELAY_MS {
            return Err(ConfigError::new(
                field,
                format!("{value} is out of range; allowed: 0 to {MAX_DELAY_MS}"),
            ));
        }
    }
    if !(0.0..=1.0).contains(&latency.jitter) {
        return Err(ConfigError::new(
            "mock.latency.jitter",
            format!("{} is out of range; allowed: 0 to 1", latency.jitter),
        ));
    }
    Ok(())
}
