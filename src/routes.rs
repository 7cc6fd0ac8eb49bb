//! Which endpoint a request path names: an OpenAI or Anthropic path under the configured
//! `api_base_path`, or one of httpbun's `/llm` paths in its profile.

use crate::config::Profile;
use crate::httpbun::HttpbunEndpoint;

/// An endpoint llm-edge answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST {base}/chat/completions`.
    ChatCompletions,
    /// `POST {base}/completions` (legacy).
    Completions,
    /// `POST {base}/embeddings`.
    Embeddings,
    /// `POST {base}/responses` (the Responses API).
    Responses,
    /// `POST {base}/messages` (Anthropic's Messages API).
    Messages,
    /// `GET {base}/models`.
    Models,
    /// `GET {base}/models/{id}`; the id may contain `/`.
    Model(String),
    /// One of httpbun's `/llm` endpoints, in the httpbun profile.
    Httpbun(HttpbunEndpoint),
}

impl Endpoint {
    /// The endpoint `path` names in `profile`; `None` for any other path.
    pub fn for_profile(profile: Profile, base: &str, path: &[u8]) -> Option<Self> {
        match profile {
            Profile::Spec => Self::resolve(base, path),
            Profile::Httpbun => HttpbunEndpoint::resolve(path).map(Self::Httpbun),
        }
    }

    /// The endpoint `path` names under `base`, ignoring any query string; `None` for any other path.
    pub fn resolve(base: &str, path: &[u8]) -> Option<Self> {
        let path = path.split(|&b| b == b'?').next().unwrap_or_default();
        let rest = path.strip_prefix(base.as_bytes())?;
        match rest {
            b"/chat/completions" => Some(Self::ChatCompletions),
            b"/completions" => Some(Self::Completions),
            b"/embeddings" => Some(Self::Embeddings),
            b"/responses" => Some(Self::Responses),
            b"/messages" => Some(Self::Messages),
            b"/models" => Some(Self::Models),
            _ => {
                let id = rest.strip_prefix(b"/models/")?;
                let id = std::str::from_utf8(id).ok().filter(|id| !id.is_empty())?;
                Some(Self::Model(id.to_owned()))
            }
        }
    }

    /// The one method the endpoint accepts.
    pub fn method(&self) -> &'static str {
        match self {
            Self::ChatCompletions
            | Self::Completions
            | Self::Embeddings
            | Self::Responses
            | Self::Messages
            | Self::Httpbun(_) => "POST",
            Self::Models | Self::Model(_) => "GET",
        }
    }

    /// The endpoint's `endpoint` label in stats.
    pub fn label(&self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::Models | Self::Model(_) => "models",
            Self::Httpbun(endpoint) => endpoint.label(),
        }
    }

    /// The path as OpenAI names it in errors, such as `/v1/models/{model}`.
    pub fn path(&self, base: &str) -> String {
        match self {
            Self::ChatCompletions => format!("{base}/chat/completions"),
            Self::Completions => format!("{base}/completions"),
            Self::Embeddings => format!("{base}/embeddings"),
            Self::Responses => format!("{base}/responses"),
            Self::Messages => format!("{base}/messages"),
            Self::Models => format!("{base}/models"),
            Self::Model(id) => format!("{base}/models/{id}"),
            Self::Httpbun(endpoint) => format!("/llm/v1/{}", endpoint.label().replace('_', "/")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_each_endpoint_under_the_base() {
        let resolve = |path: &str| Endpoint::resolve("/v1", path.as_bytes());
        assert_eq!(
            resolve("/v1/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(
            resolve("/v1/chat/completions?x=1"),
            Some(Endpoint::ChatCompletions)
        );
        assert_eq!(resolve("/v1/embeddings"), Some(Endpoint::Embeddings));
        assert_eq!(resolve("/v1/completions"), Some(Endpoint::Completions));
        assert_eq!(resolve("/v1/responses"), Some(Endpoint::Responses));
        assert_eq!(resolve("/v1/messages"), Some(Endpoint::Messages));
        assert_eq!(resolve("/v1/models"), Some(Endpoint::Models));
        assert_eq!(
            resolve("/v1/models/gpt-4o"),
            Some(Endpoint::Model("gpt-4o".into()))
        );
        assert_eq!(
            resolve("/v1/models/meta-llama/Llama-3.1-8B"),
            Some(Endpoint::Model("meta-llama/Llama-3.1-8B".into()))
        );
        for other in [
            "/v1/models/",
            "/v2/models",
            "/v1/chat/completions/x",
            "/",
            "/v1",
        ] {
            assert_eq!(resolve(other), None, "{other}");
        }
        assert_eq!(
            Endpoint::resolve("", b"/chat/completions"),
            Some(Endpoint::ChatCompletions)
        );
    }

    #[test]
    fn methods_labels_and_paths() {
        assert_eq!(Endpoint::Models.method(), "GET");
        assert_eq!(Endpoint::Embeddings.method(), "POST");
        assert_eq!(Endpoint::Model("m".into()).label(), "models");
        assert_eq!(Endpoint::Model("m".into()).path("/v1"), "/v1/models/m");
    }
}
