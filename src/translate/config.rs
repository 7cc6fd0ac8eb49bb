//! The `translate` section of a `filter_config`: which client API is translated to which upstream
//! API, the path the request is rewritten to, and the headers that upstream requires.
//!
//! ```json
//! "translate": [
//!   {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
//!    "headers": {"anthropic-version": "2023-06-01"}, "default_max_tokens": 4096}
//! ]
//! ```

use std::sync::Arc;

use serde::Deserialize;

use crate::api::routes::Endpoint;
use crate::config_error::ConfigError;

/// The largest `default_max_tokens` a config may set.
const MAX_DEFAULT_MAX_TOKENS: u32 = 1_000_000;

/// Headers that carry credentials: a key in the filter config would be a secret in plain text in
/// every config dump, so they are Envoy's to set (`credential_injector`, a header mutation).
const CREDENTIAL_HEADERS: [&str; 6] = [
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
    "cookie",
    "x-goog-api-key",
];

/// An API llm-edge speaks on either side of a translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// OpenAI Chat Completions, `POST /v1/chat/completions`.
    Chat,
    /// Anthropic Messages, `POST /v1/messages`.
    Messages,
    /// OpenAI Responses, `POST /v1/responses`.
    Responses,
}

impl Api {
    /// The API a claimed endpoint speaks, if it is one translations start from.
    pub fn of_endpoint(endpoint: &Endpoint) -> Option<Self> {
        match endpoint {
            Endpoint::ChatCompletions => Some(Self::Chat),
            Endpoint::Messages => Some(Self::Messages),
            Endpoint::Responses => Some(Self::Responses),
            _ => None,
        }
    }

    /// The name the config and the stats labels use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Messages => "messages",
            Self::Responses => "responses",
        }
    }
}

/// The directions implemented so far, as (client, upstream).
pub const DIRECTIONS: [(Api, Api); 3] = [
    (Api::Chat, Api::Messages),
    (Api::Messages, Api::Chat),
    (Api::Responses, Api::Chat),
];

/// One translation: requests of the client API go upstream in the upstream API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    /// The API the client speaks, as the request's path names it.
    pub client: Api,
    /// The API the upstream speaks.
    pub upstream: Api,
    /// The path the request is sent to upstream, such as `/v1/messages`.
    pub upstream_path: String,
    /// Headers set on the upstream request (such as `anthropic-version`); never credentials.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `max_tokens` for an Anthropic upstream when the client gives none (Anthropic requires it).
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
    /// The models (after aliases) this translation is for, each exact or with one `*`; empty:
    /// every model. So one listener can send `claude-*` to Anthropic and the rest on as they are.
    #[serde(default)]
    pub models: Vec<String>,
}

impl Translation {
    /// Whether requests for `model` (as resolved by the aliases) are translated.
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|pattern| glob_match(pattern, model))
    }
}

/// Whether `name` matches `pattern`, where one `*` stands for any run of characters.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, suffix)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix)
                && name.ends_with(suffix)
        }
    }
}

fn default_max_tokens() -> u32 {
    4096
}

/// Every translation of a config; of those for one client API, the first whose `models` match
/// the request's applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct TranslateConfig {
    /// The translations, in the order given (shared: each translated request's reply holds
    /// its own).
    pub translations: Vec<Arc<Translation>>,
}

impl TranslateConfig {
    /// Reads and checks the section (`null`, or absent, is no translation); errors name the
    /// field under `translate`.
    pub fn parse(value: &serde_json::Value) -> Result<Self, ConfigError> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let config: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "translate".to_owned()
            } else {
                format!("translate{}", bracketed(&path))
            };
            ConfigError::new(field, e.inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every translation: a direction llm-edge implements, each client API once, a path,
    /// header names and no credential header.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, translation) in self.translations.iter().enumerate() {
            let field = |name: &str| format!("translate[{i}].{name}");
            let direction = (translation.client, translation.upstream);
            if !DIRECTIONS.contains(&direction) {
                let allowed: Vec<String> = DIRECTIONS
                    .iter()
                    .map(|(c, u)| format!("{} to {}", c.name(), u.name()))
                    .collect();
                return Err(ConfigError::new(
                    field("upstream"),
                    format!(
                        "{} to {} is not a translation llm-edge makes; allowed: {}",
                        translation.client.name(),
                        translation.upstream.name(),
                        allowed.join(", ")
                    ),
                ));
            }
            if self.translations[..i]
                .iter()
                .any(|earlier| earlier.client == translation.client && earlier.models.is_empty())
            {
                return Err(ConfigError::new(
                    field("client"),
                    format!(
                        "{:?} is already translated for every model; allowed: one translation \
                         per client API, or several that each name their models",
                        translation.client.name()
                    ),
                ));
            }
            for (j, pattern) in translation.models.iter().enumerate() {
                if pattern.is_empty() || pattern.matches('*').count() > 1 {
                    return Err(ConfigError::new(
                        format!("translate[{i}].models[{j}]"),
                        format!(
                            "{pattern:?} is not a model pattern; allowed: a name, or a name with \
                             one '*'"
                        ),
                    ));
                }
            }
            let path = &translation.upstream_path;
            let is_path = path.starts_with('/')
                && path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"#%\\;".contains(&b));
            if !is_path {
                return Err(ConfigError::new(
                    field("upstream_path"),
                    format!(
                        "{path:?} is not a path; allowed: a path that starts with '/', with no \
                         spaces, '#', '%', ';' or '\\'"
                    ),
                ));
            }
            for (name, value) in &translation.headers {
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !token {
                    return Err(ConfigError::new(
                        field(&format!("headers.{name}")),
                        format!(
                            "{name:?} is not a header name; allowed: lowercase letters, digits \
                             and '-'"
                        ),
                    ));
                }
                if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                    return Err(ConfigError::new(
                        field(&format!("headers.{name}")),
                        format!(
                            "{name:?} carries a credential; allowed: headers that are not \
                             credentials (set keys with Envoy's credential_injector or a header \
                             mutation, never in the filter config)"
                        ),
                    ));
                }
                if value.bytes().any(|b| b.is_ascii_control()) {
                    return Err(ConfigError::new(
                        field(&format!("headers.{name}")),
                        format!("{value:?} holds a control character; allowed: printable text"),
                    ));
                }
            }
            if !(1..=MAX_DEFAULT_MAX_TOKENS).contains(&translation.default_max_tokens) {
                return Err(ConfigError::new(
                    field("default_max_tokens"),
                    format!(
                        "{} is out of range; allowed: 1 to {MAX_DEFAULT_MAX_TOKENS}",
                        translation.default_max_tokens
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The translation of requests in `client`'s API for `model`, if any.
    pub fn for_request(&self, client: Api, model: &str) -> Option<&Arc<Translation>> {
        self.translations
            .iter()
            .find(|t| t.client == client && t.serves(model))
    }

    /// Whether any request in `client`'s API may be translated.
    pub fn translates(&self, client: Api) -> bool {
        self.translations.iter().any(|t| t.client == client)
    }

    /// Whether nothing is translated.
    pub fn is_empty(&self) -> bool {
        self.translations.is_empty()
    }

    /// This config with `route`'s translations added: a route's translations of a client API
    /// replace the listener's.
    pub fn extended_with(&self, route: &Self) -> Self {
        let mut translations: Vec<Arc<Translation>> = self
            .translations
            .iter()
            .filter(|t| !route.translates(t.client))
            .cloned()
            .collect();
        translations.extend(route.translations.iter().cloned());
        Self { translations }
    }
}

/// serde_path_to_error writes `[0].client` for an array: kept as it is, and a leading `.` added
/// to anything else.
fn bracketed(path: &str) -> String {
    if path.starts_with('[') {
        path.to_owned()
    } else {
        format!(".{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn translations_may_be_for_some_models_the_first_matching_applies() {
        let config = TranslateConfig::parse(&json!([
            {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
             "models": ["claude-*", "sonnet"]},
            {"client": "chat", "upstream": "messages", "upstream_path": "/other", "models": ["*-haiku"]},
        ]))
        .unwrap();
        let path = |model: &str| {
            config
                .for_request(Api::Chat, model)
                .map(|t| t.upstream_path.as_str())
        };
        assert_eq!(path("claude-sonnet-4-6"), Some("/v1/messages"));
        assert_eq!(path("sonnet"), Some("/v1/messages"));
        assert_eq!(path("x-haiku"), Some("/other"));
        assert_eq!(path("gpt-4o"), None);
        assert!(config.translates(Api::Chat) && !config.translates(Api::Responses));
    }

    fn error_of(value: serde_json::Value) -> ConfigError {
        TranslateConfig::parse(&value).unwrap_err()
    }

    #[test]
    fn reads_a_translation_with_its_defaults() {
        let config = TranslateConfig::parse(&json!([
            {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages",
             "headers": {"anthropic-version": "2023-06-01"}}
        ]))
        .unwrap();
        let translation = config.for_request(Api::Chat, "any").unwrap();
        assert_eq!(translation.default_max_tokens, 4096);
        assert_eq!(translation.headers["anthropic-version"], "2023-06-01");
        assert!(config.for_request(Api::Messages, "any").is_none());
    }

    #[test]
    fn bad_translations_name_field_value_and_what_is_allowed() {
        let base =
            json!({"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages"});
        let with = |key: &str, value: serde_json::Value| {
            let mut one = base.clone();
            one[key] = value;
            json!([one])
        };
        let err = error_of(with("upstream", json!("chat")));
        assert_eq!(err.field, "translate[0].upstream");
        assert!(
            err.message.contains("chat to chat")
                && err
                    .message
                    .contains("allowed: chat to messages, messages to chat, responses to chat"),
            "{err}"
        );
        let err = error_of(with("upstream", json!("bedrock")));
        assert_eq!(err.field, "translate[0].upstream");
        assert!(err.message.contains("unknown variant `bedrock`"), "{err}");
        let err = error_of(with("upstream_path", json!("v1/messages")));
        assert_eq!(err.field, "translate[0].upstream_path");
        let err = error_of(with("headers", json!({"x-api-key": "sk-live"})));
        assert_eq!(err.field, "translate[0].headers.x-api-key");
        assert!(err.message.contains("credential_injector"), "{err}");
        assert!(
            !err.message.contains("sk-live"),
            "a secret is not repeated: {err}"
        );
        let err = error_of(with("headers", json!({"Anthropic Version": "x"})));
        assert!(err.message.contains("not a header name"), "{err}");
        let err = error_of(with("default_max_tokens", json!(0)));
        assert_eq!(err.field, "translate[0].default_max_tokens");
        assert!(err.message.contains("allowed: 1 to 1000000"), "{err}");
        let err = error_of(json!([base.clone(), base.clone()]));
        assert_eq!(err.field, "translate[1].client");
        let err = error_of(with("models", json!(["a*b*"])));
        assert_eq!(err.field, "translate[0].models[0]");
        let err = error_of(json!([{"client": "chat"}]));
        assert!(err.message.contains("missing field"), "{err}");
    }

    #[test]
    fn a_routes_translation_replaces_the_listeners_for_its_client_api() {
        let listener = TranslateConfig::parse(&json!([
            {"client": "chat", "upstream": "messages", "upstream_path": "/a"}
        ]))
        .unwrap();
        let route = TranslateConfig::parse(&json!([
            {"client": "chat", "upstream": "messages", "upstream_path": "/b"}
        ]))
        .unwrap();
        let merged = listener.extended_with(&route);
        assert_eq!(merged.translations.len(), 1);
        assert_eq!(
            merged.for_request(Api::Chat, "m").unwrap().upstream_path,
            "/b"
        );
        assert_eq!(
            listener.extended_with(&TranslateConfig::default()),
            listener
        );
    }
}
