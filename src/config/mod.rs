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

use serde::Deserialize;

use crate::accounting::budgets::{BudgetLimits, BudgetsConfig};
use crate::accounting::tokens::Tokenizer;
use crate::api::routes::Profile;
use crate::config_error::ConfigError;
use crate::edge::guard::{Guard, GuardConfig};
use crate::edge::transform::TransformConfig;
use crate::fixtures::config::{RawRecordConfig, Record};
use crate::mock::config::{MockConfig, RawMockConfig};
use crate::translate::TranslateConfig;

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
    /// Which sensitive values are masked, refused or counted, its detectors compiled.
    pub guard: Guard,
    /// Token budgets per unit of time.
    pub budgets: BudgetLimits,
    /// Which client APIs are translated to which upstream APIs, in pass-through.
    pub translate: TranslateConfig,
    /// Where exchanges are recorded: in record mode, and the misses of `mock.fixtures` with
    /// `record_misses`.
    pub record: Option<Record>,
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
    /// Pass-through that also writes every exchange to a fixture file (`record`), for replay.
    Record,
}

impl Mode {
    /// Whether handled requests go on to the upstream (pass-through and record).
    pub fn forwards(self) -> bool {
        matches!(self, Self::Passthrough | Self::Record)
    }
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
    mock: RawMockConfig,
    #[serde(default)]
    tokenizer: Tokenizer,
    #[serde(default)]
    transform: TransformConfig,
    #[serde(default)]
    guard: GuardConfig,
    #[serde(default)]
    budgets: BudgetsConfig,
    #[serde(default)]
    translate: serde_json::Value,
    #[serde(default)]
    record: Option<RawRecordConfig>,
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
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| ConfigError::from_serde(&e))?;

        validate_api_base_path(&raw.api_base_path)?;
        validate_body_limit("max_request_body_bytes", raw.max_request_body_bytes)?;

        validate_body_limit("max_response_body_bytes", raw.max_response_body_bytes)?;
        let mock = MockConfig::parse(raw.mock)?;
        raw.transform.validate()?;
        let guard = Guard::parse(raw.guard)?;
        let budgets = BudgetLimits::parse(raw.budgets)?;
        let translate = TranslateConfig::parse(&raw.translate)?;
        let record = parse_record(raw.mode, &mock, raw.record)?;
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
            guard,
            budgets,
            translate,
            record,
        })
    }
}

/// `record`, which record mode needs and `mock.fixtures.record_misses` uses; refused where
/// nothing would record, so a typo in `mode` cannot leave a recorder idle.
fn parse_record(
    mode: Mode,
    mock: &MockConfig,
    raw: Option<RawRecordConfig>,
) -> Result<Option<Record>, ConfigError> {
    let records_misses = mock.fixtures.as_ref().is_some_and(|f| f.record_misses);
    match raw {
        None if mode == Mode::Record => Err(ConfigError::new(
            "record",
            "missing; mode \"record\" needs record.path, the fixture file to write",
        )),
        None if records_misses => Err(ConfigError::new(
            "record",
            "missing; mock.fixtures.record_misses needs record.path, the fixture file to write",
        )),
        None => Ok(None),
        Some(_) if mode != Mode::Record && !records_misses => Err(ConfigError::new(
            "record",
            "is set but nothing records; allowed with mode \"record\", or with \
             mock.fixtures.record_misses",
        )),
        Some(raw) => Record::parse(raw).map(Some),
    }
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
            && crate::api::routes::is_canonical(path));
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
    use crate::mock::config::ContentMode;

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
