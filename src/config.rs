//! The `filter_config`: JSON carried in a `google.protobuf.StringValue`, parsed and validated once,
//! when Envoy creates the filter config.
//!
//! Parsing happens in two stages: serde reads the raw JSON (unknown fields rejected), then
//! [`FilterConfig::from_json`] checks values and precomputes what every request would otherwise
//! recompute. Errors name the field, the bad value and what is allowed.
//!
//! ```json
//! {
//!   "mode": "mock",
//!   "profile": "spec",
//!   "api_base_path": "/v1",
//!   "max_request_body_bytes": 1048576,
//!   "tokenizer": "exact",
//!   "mock": { "content": { "mode": "echo" } }
//! }
//! ```
//!
//! An empty config, or `{}`, means exactly the defaults above.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::budget::BudgetsConfig;
use crate::faults::{FaultDice, FaultsConfig};
use crate::guard::{Detectors, GuardConfig};
use crate::tokens::Tokenizer;
use crate::transform::TransformConfig;

/// The largest request body a config may allow. Envoy's own per-stream limit is raised to match.
pub const MAX_REQUEST_BODY_LIMIT: u64 = 64 * 1024 * 1024;

const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024;
const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 16 * 1024 * 1024;
const DEFAULT_API_BASE_PATH: &str = "/v1";

/// A validated filter configuration, shared read-only by every stream of every worker.
#[derive(Debug, Clone)]
pub struct FilterConfig {
    /// What the filter does with the requests it handles.
    pub mode: Mode,
    /// Whose wire format the mock speaks.
    pub profile: Profile,
    /// The prefix of the OpenAI paths, such as `/v1`.
    pub api_base_path: String,
    /// Bodies larger than this get an OpenAI-shaped 413.
    pub max_request_body_bytes: u64,
    /// The largest upstream reply llm-edge reads whole to guard it (a JSON or text reply in
    /// pass-through with reply guarding on); a larger one gets an OpenAI-shaped 502.
    pub max_response_body_bytes: u64,
    /// What becomes of a request on a path llm-edge does not claim.
    pub unclaimed_paths: UnclaimedPaths,
    /// What the mock answers.
    pub mock: MockConfig,
    /// How tokens are counted for `usage`, streamed deltas and `max_tokens`.
    pub tokenizer: Tokenizer,
    /// What changes in a request before it reaches the model.
    pub transform: TransformConfig,
    /// Which sensitive values are masked, refused or counted.
    pub guard: GuardConfig,
    /// Token budgets per unit of time.
    pub budgets: BudgetsConfig,
}

/// What the filter does with the requests it handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer inside Envoy, with no upstream (after the transforms, if any).
    #[default]
    Mock,
    /// Transform requests and send them on to the upstream; account tokens from its replies.
    Passthrough,
}

/// What becomes of a request on a path that names none of the endpoints llm-edge answers or
/// guards (files, audio, batches, anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnclaimedPaths {
    /// It goes on untouched, as Envoy routes it.
    #[default]
    Pass,
    /// It gets OpenAI's 404 for an unknown URL: nothing reaches the upstream unguarded.
    Refuse,
}

/// Whose wire format the mock speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// OpenAI's and Anthropic's APIs, exactly as their specifications say, under `api_base_path`.
    #[default]
    Spec,
    /// httpbun's `/llm` endpoints, exactly as httpbun answers them (a drop-in for its users).
    Httpbun,
}

/// Settings of the mock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockConfig {
    /// Scripted replies, tried in order before `content`; the first that matches answers.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where the reply text comes from when no rule matches.
    #[serde(default)]
    pub content: ContentMode,
    /// How fast the reply comes.
    #[serde(default)]
    pub latency: LatencyConfig,
    /// How often the reply is an error instead.
    #[serde(default)]
    pub faults: FaultsConfig,
    /// The models served: listed by `GET /v1/models`; with `strict_models`, the only ones accepted.
    #[serde(default)]
    pub models: Vec<String>,
    /// Refuse models not in `models` (nor aliases) with OpenAI's 404 `model_not_found`.
    #[serde(default)]
    pub strict_models: bool,
    /// Requested model names answered as another model, such as `{"gpt-4": "gpt-4o"}`.
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    /// Context windows in tokens by model (`"*"` for any other model): a prompt plus
    /// `max_tokens` beyond its window gets OpenAI's `context_length_exceeded`.
    #[serde(default)]
    pub context_windows: BTreeMap<String, u32>,
    /// The largest reply the mock builds, in bytes: a request whose reply could be larger (by
    /// its `n`, `max_tokens`, echoed prompt, tools, schema or stream events) gets a 400 first.
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            content: ContentMode::default(),
            latency: LatencyConfig::default(),
            faults: FaultsConfig::default(),
            models: Vec::new(),
            strict_models: false,
            model_aliases: BTreeMap::new(),
            context_windows: BTreeMap::new(),
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
        }
    }
}

/// The default of `mock.max_reply_bytes`: 16 MiB.
pub const DEFAULT_MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;
/// The range `mock.max_reply_bytes` may take: room for the largest generated structured value,
/// up to 1 GiB.
pub const MAX_REPLY_BYTES_RANGE: std::ops::RangeInclusive<u64> =
    (256 * 1024)..=(1024 * 1024 * 1024);

fn default_max_reply_bytes() -> u64 {
    DEFAULT_MAX_REPLY_BYTES
}

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

/// The largest compiled regex a rule may use, in bytes: a bound on memory and matching time.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    profile: Profile,
    #[serde(default = "default_api_base_path")]
    api_base_path: String,
    #[serde(default = "default_max_request_body_bytes")]
    max_request_body_bytes: u64,
    #[serde(default = "default_max_response_body_bytes")]
    max_response_body_bytes: u64,
    #[serde(default)]
    unclaimed_paths: UnclaimedPaths,
    #[serde(default)]
    mock: MockConfig,
    #[serde(default)]
    tokenizer: Tokenizer,
    #[serde(default)]
    transform: TransformConfig,
    #[serde(default)]
    guard: GuardConfig,
    #[serde(default)]
    budgets: BudgetsConfig,
}

impl Default for ContentMode {
    fn default() -> Self {
        Self::Echo {}
    }
}

fn default_api_base_path() -> String {
    DEFAULT_API_BASE_PATH.to_owned()
}

fn default_max_request_body_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_BODY_BYTES
}

fn default_max_response_body_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BODY_BYTES
}

/// A rejected `filter_config`: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's path, such as `mock.content.mode`, or `.` for the document itself.
    pub field: String,
    /// What is wrong: the bad value and what is allowed.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter_config: field `{}`: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self::from_json(b"").expect("the defaults are valid")
    }
}

impl FilterConfig {
    /// Parses and validates the `filter_config` bytes. Empty or blank input means all defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ConfigError::new(".", format!("not UTF-8 ({e}); expected JSON text")))?;
        let text = if text.trim().is_empty() { "{}" } else { text };
        // serde would also accept a JSON array as a struct, by position; only an object is valid.
        if !text.trim_start().starts_with('{') {
            return Err(ConfigError::new(
                ".",
                format!("expected a JSON object, got {text:?}"),
            ));
        }

        let deserializer = &mut serde_json::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // An unknown key named "" has an empty path: it sits in the document itself.
            let path = e.path().to_string();
            let field = if path.is_empty() { "." } else { path.as_str() };
            ConfigError::new(field, e.inner().to_string())
        })?;

        validate_api_base_path(&raw.api_base_path)?;
        validate_body_limit("max_request_body_bytes", raw.max_request_body_bytes)?;

        validate_body_limit("max_response_body_bytes", raw.max_response_body_bytes)?;
        validate_latency(&raw.mock.latency)?;
        validate_content(&raw.mock.content)?;
        validate_models(&raw.mock)?;
        if !MAX_REPLY_BYTES_RANGE.contains(&raw.mock.max_reply_bytes) {
            return Err(ConfigError::new(
                "mock.max_reply_bytes",
                format!(
                    "{} is out of range; allowed: {} to {} bytes",
                    raw.mock.max_reply_bytes,
                    MAX_REPLY_BYTES_RANGE.start(),
                    MAX_REPLY_BYTES_RANGE.end()
                ),
            ));
        }
        if let Some((model, _)) = raw.mock.context_windows.iter().find(|(_, w)| **w == 0) {
            return Err(ConfigError::new(
                &format!("mock.context_windows.{model}"),
                "0 is out of range; allowed: 1 or more tokens",
            ));
        }
        let mut mock = raw.mock;
        for rule in &mut mock.rules {
            if let Some(header) = &mut rule.when.header {
                header.name.make_ascii_lowercase();
            }
        }
        FaultDice::new(&mock.faults).map_err(|(field, message)| ConfigError { field, message })?;
        raw.transform
            .validate()
            .map_err(|(field, message)| ConfigError { field, message })?;
        validate_guard(&raw.guard)?;
        raw.budgets
            .validate()
            .map_err(|(field, message)| ConfigError { field, message })?;
        raw.tokenizer.warm();
        Ok(Self {
            mode: raw.mode,
            profile: raw.profile,
            api_base_path: raw.api_base_path,
            max_request_body_bytes: raw.max_request_body_bytes,
            max_response_body_bytes: raw.max_response_body_bytes,
            unclaimed_paths: raw.unclaimed_paths,
            mock,
            tokenizer: raw.tokenizer,
            transform: raw.transform,
            guard: raw.guard,
            budgets: raw.budgets,
        })
    }
}

fn validate_models(mock: &MockConfig) -> Result<(), ConfigError> {
    if mock.strict_models && mock.models.is_empty() {
        return Err(ConfigError::new(
            "mock.strict_models",
            "true needs a non-empty mock.models: strict mode would refuse every model",
        ));
    }
    if let Some(empty) = mock.models.iter().position(String::is_empty) {
        return Err(ConfigError::new(
            &format!("mock.models[{empty}]"),
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
            &format!("mock.model_aliases.{alias}"),
            format!(
                "{target:?} is not in mock.models; allowed: {:?}",
                mock.models
            ),
        )),
        None => Ok(()),
    }
}

fn validate_guard(guard: &GuardConfig) -> Result<(), ConfigError> {
    const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
    if let Some((i, role)) = guard
        .roles
        .iter()
        .enumerate()
        .find(|(_, role)| !ROLES.contains(&role.as_str()))
    {
        return Err(ConfigError::new(
            &format!("guard.roles[{i}]"),
            format!("{role:?} is not a role; allowed: {}", ROLES.join(", ")),
        ));
    }
    guard
        .validate_fields()
        .map_err(|(field, message)| ConfigError { field, message })?;
    Detectors::compile(&guard.detectors, &guard.custom)
        .map(drop)
        .map_err(|(field, message)| ConfigError { field, message })
}

fn validate_content(content: &ContentMode) -> Result<(), ConfigError> {
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

fn validate_latency(latency: &LatencyConfig) -> Result<(), ConfigError> {
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

/// A body size limit: 1 byte to [`MAX_REQUEST_BODY_LIMIT`].
fn validate_body_limit(field: &str, bytes: u64) -> Result<(), ConfigError> {
    if (1..=MAX_REQUEST_BODY_LIMIT).contains(&bytes) {
        return Ok(());
    }
    Err(ConfigError::new(
        field,
        format!("{bytes} is out of range; allowed: 1 to {MAX_REQUEST_BODY_LIMIT}"),
    ))
}

fn validate_api_base_path(path: &str) -> Result<(), ConfigError> {
    let well_formed = path.is_empty()
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"?#%\\;".contains(&b))
            && crate::routes::is_canonical(path));
    if well_formed {
        Ok(())
    } else {
        Err(ConfigError::new(
            "api_base_path",
            format!(
                "{path:?} is not a path prefix; allowed: \"\" or a path that starts with '/', \
                 does not end with '/', has no empty, '.' or '..' segment, and has no spaces, \
                 '?', '#', '%', ';' or '\\' (for example \"/v1\")"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(json: &str) -> ConfigError {
        FilterConfig::from_json(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn empty_and_blank_and_empty_object_mean_defaults() {
        for text in ["", "  \n", "{}"] {
            let config = FilterConfig::from_json(text.as_bytes()).unwrap();
            assert_eq!(config.mode, Mode::Mock);
            assert_eq!(config.api_base_path, "/v1");
            assert_eq!(config.max_request_body_bytes, 1024 * 1024);
            assert_eq!(config.mock.content, ContentMode::Echo {});
            assert_eq!(config.mock.max_reply_bytes, 16 * 1024 * 1024);
        }
    }

    #[test]
    fn reads_every_field() {
        let config = FilterConfig::from_json(
            br#"{"mode": "mock", "api_base_path": "/llm", "max_request_body_bytes": 4096,
                 "tokenizer": "approx",
                 "mock": {"content": {"mode": "fixed", "text": "hi"},
                          "latency": {"time_to_first_token_ms": 200, "inter_token_ms": 20,
                                      "jitter": 0.1, "seed": 7}}}"#,
        )
        .unwrap();
        assert_eq!(config.api_base_path, "/llm");
        assert_eq!(config.max_request_body_bytes, 4096);
        assert_eq!(
            config.mock.content,
            ContentMode::Fixed { text: "hi".into() }
        );
        assert_eq!(config.tokenizer, Tokenizer::Approx);
        assert_eq!(config.profile, Profile::Spec);
        let httpbun = FilterConfig::from_json(br#"{"profile": "httpbun"}"#).unwrap();
        assert_eq!(httpbun.profile, Profile::Httpbun);
        let latency = &config.mock.latency;
        assert_eq!(
            (latency.time_to_first_token_ms, latency.inter_token_ms),
            (200, 20)
        );
        assert_eq!((latency.jitter, latency.seed), (0.1, Some(7)));
    }

    #[test]
    fn reads_lorem_and_rules() {
        let config = FilterConfig::from_json(
            br#"{"mock": {"content": {"mode": "lorem", "max_tokens": 50},
                 "rules": [{"when": {"model": "m", "user_message_regex": "(?i)weather",
                                     "header": {"name": "X-Tenant", "value": "acme"}},
                            "reply": "Sunny."},
                           {"reply": "catch-all"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            config.mock.content,
            ContentMode::Lorem {
                min_tokens: 20,
                max_tokens: 50
            }
        );
        let rule = &config.mock.rules[0];
        assert!(
            rule.when
                .user_message_regex
                .as_ref()
                .unwrap()
                .is_match("WEATHER?")
        );
        assert_eq!(rule.when.header.as_ref().unwrap().name, "x-tenant");
        assert!(config.mock.rules[1].when.model.is_none());
    }

    #[test]
    fn bad_rules_and_lorem_bounds_are_named() {
        let err = error_of(
            r#"{"mock": {"rules": [{"when": {"user_message_regex": "(unclosed"}, "reply": "x"}]}}"#,
        );
        assert_eq!(err.field, "mock.rules[0].when.user_message_regex");
        assert!(err.message.contains("invalid regex \"(unclosed\""), "{err}");
        let err = error_of(r#"{"mock": {"rules": [{"when": {}}]}}"#);
        assert!(err.message.contains("missing field `reply`"), "{err}");
        let err = error_of(
            r#"{"mock": {"content": {"mode": "lorem", "min_tokens": 50, "max_tokens": 10}}}"#,
        );
        assert_eq!(err.field, "mock.content.min_tokens");
        let err = error_of(r#"{"mock": {"content": {"mode": "lorem", "max_tokens": 0}}}"#);
        assert_eq!(err.field, "mock.content.max_tokens");
        let huge = r#"{"mock": {"rules": [{"when": {"user_message_regex": "\\w{5000}{5000}"}, "reply": "x"}]}}"#;
        assert!(error_of(huge).message.contains("invalid regex"));
    }

    #[test]
    fn context_windows_fall_back_to_the_star_entry() {
        let config = FilterConfig::from_json(
            br#"{"mock": {"context_windows": {"gpt-4": 8192, "*": 128000}}}"#,
        )
        .unwrap();
        assert_eq!(config.mock.context_window("gpt-4"), Some(8192));
        assert_eq!(config.mock.context_window("other"), Some(128000));
        assert_eq!(FilterConfig::default().mock.context_window("gpt-4"), None);
        let err = error_of(r#"{"mock": {"context_windows": {"m": 0}}}"#);
        assert_eq!(err.field, "mock.context_windows.m");
    }

    #[test]
    fn an_unknown_empty_key_is_named_as_the_document() {
        // Found by the config fuzz target: the error named no field at all.
        let error = FilterConfig::from_json(br#"{"": 1}"#).unwrap_err();
        assert_eq!(error.field, ".");
        assert!(
            error
                .message
                .starts_with("unknown field ``, expected one of"),
            "{error}"
        );
    }

    #[test]
    fn models_aliases_and_strict_mode() {
        let config = FilterConfig::from_json(
            br#"{"mock": {"models": ["gpt-4o", "gpt-4o-mini"], "strict_models": true,
                          "model_aliases": {"gpt-4": "gpt-4o"}}}"#,
        )
        .unwrap();
        assert_eq!(config.mock.served_model("gpt-4"), Some("gpt-4o"));
        assert_eq!(config.mock.served_model("gpt-4o-mini"), Some("gpt-4o-mini"));
        assert_eq!(config.mock.served_model("llama"), None);
        let lenient = FilterConfig::default();
        assert_eq!(lenient.mock.served_model("llama"), Some("llama"));

        let err = error_of(r#"{"mock": {"strict_models": true}}"#);
        assert_eq!(err.field, "mock.strict_models");
        let err = error_of(r#"{"mock": {"models": ["a"], "model_aliases": {"b": "c"}}}"#);
        assert_eq!(err.field, "mock.model_aliases.b");
        let err = error_of(r#"{"mock": {"models": ["a", ""]}}"#);
        assert_eq!(err.field, "mock.models[1]");
    }

    #[test]
    fn guard_errors_name_the_field() {
        let err = error_of(r#"{"guard": {"detectors": {"passport": "mask"}}}"#);
        assert_eq!(err.field, "guard.detectors.passport");
        let err = error_of(r#"{"guard": {"detectors": {"email": "hide"}}}"#);
        assert_eq!(err.field, "guard.detectors.email");
        let err = error_of(r#"{"guard": {"roles": ["robot"]}}"#);
        assert_eq!(err.field, "guard.roles[0]");
        let err =
            error_of(r#"{"guard": {"custom": [{"name": "x", "regex": "(", "action": "mask"}]}}"#);
        assert_eq!(err.field, "guard.custom[0].regex");
    }

    #[test]
    fn an_empty_base_path_serves_at_the_root() {
        let config = FilterConfig::from_json(br#"{"api_base_path": ""}"#).unwrap();
        assert_eq!(config.api_base_path, "");
    }

    #[test]
    fn unknown_fields_are_named_with_what_is_allowed() {
        let err = error_of(r#"{"mokc": {}}"#);
        assert_eq!(err.field, "mokc");
        assert!(err.message.contains("unknown field `mokc`"), "{err}");
        assert!(err.message.contains("`mock`"), "{err}");

        let err = error_of(r#"{"mock": {"content": {"mode": "echo", "txt": "x"}}}"#);
        assert_eq!(err.field, "mock.content");
        assert!(err.message.contains("unknown field `txt`"), "{err}");
    }

    #[test]
    fn bad_values_are_named_with_what_is_allowed() {
        let err = error_of(r#"{"mock": {"content": {"mode": "lorme"}}}"#);
        assert_eq!(err.field, "mock.content.mode");
        assert!(err.message.contains("`lorme`"), "{err}");
        assert!(err.message.contains("`echo`"), "{err}");

        let err = error_of(r#"{"mode": "proxy"}"#);
        assert_eq!(err.field, "mode");
        assert!(err.message.contains("`proxy`") && err.message.contains("`passthrough`"));
        let err = error_of(r#"{"transform": {"model_header": "Bad Name"}}"#);
        assert_eq!(err.field, "transform.model_header");
        let err = error_of(
            r#"{"transform": {"system_prompts": [{"position": "middle", "content": "x"}]}}"#,
        );
        assert_eq!(err.field, "transform.system_prompts[0].position");

        let err = error_of(r#"{"max_request_body_bytes": "big"}"#);
        assert_eq!(err.field, "max_request_body_bytes");
        assert!(err.message.contains("\"big\""), "{err}");

        let err = error_of(r#"{"mock": {"content": {"mode": "fixed"}}}"#);
        assert!(err.message.contains("missing field `text`"), "{err}");
    }

    #[test]
    fn out_of_range_values_say_the_range() {
        let err = error_of(r#"{"max_request_body_bytes": 0}"#);
        assert_eq!(
            err.to_string(),
            "invalid filter_config: field `max_request_body_bytes`: 0 is out of range; \
             allowed: 1 to 67108864"
        );
        let err = error_of(r#"{"mock": {"latency": {"inter_token_ms": 600001}}}"#);
        assert_eq!(err.field, "mock.latency.inter_token_ms");
        assert!(
            err.message
                .contains("600001 is out of range; allowed: 0 to 600000")
        );
        let err = error_of(r#"{"mock": {"max_reply_bytes": 1000}}"#);
        assert_eq!(
            err.to_string(),
            "invalid filter_config: field `mock.max_reply_bytes`: 1000 is out of range; \
             allowed: 262144 to 1073741824 bytes"
        );
        let err = error_of(r#"{"mock": {"max_reply_bytes": -1}}"#);
        assert_eq!(err.field, "mock.max_reply_bytes");
        let err = error_of(r#"{"mock": {"max_reply_bytes": "16MiB"}}"#);
        assert_eq!(err.field, "mock.max_reply_bytes");
        let err = error_of(r#"{"mock": {"latency": {"jitter": 1.5}}}"#);
        assert_eq!(err.field, "mock.latency.jitter");
        let err = error_of(r#"{"mock": {"latency": {"time_to_first_token_ms": -1}}}"#);
        assert_eq!(err.field, "mock.latency.time_to_first_token_ms");
        for bad in [
            "v1", "/v1/", "/v 1", "/v1?x", "/", "//v1", "/a/../v1", "/v%31",
        ] {
            let err = error_of(&format!(r#"{{"api_base_path": "{bad}"}}"#));
            assert_eq!(err.field, "api_base_path");
            assert!(err.message.contains(bad), "{err}");
        }
    }

    #[test]
    fn malformed_json_and_non_utf8_are_rejected() {
        let err = error_of("{");
        assert!(err.message.contains("EOF"), "{err}");
        let err = FilterConfig::from_json(b"\xff").unwrap_err();
        assert!(err.message.contains("not UTF-8"), "{err}");
        let err = error_of("[]");
        assert_eq!(err.field, ".");
    }
}
