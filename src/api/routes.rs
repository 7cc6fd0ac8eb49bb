//! Which endpoint a request path names: an OpenAI or Anthropic path under the configured
//! `api_base_path`, or one of httpbun's `/llm` paths in its profile.
//!
//! Paths are matched as an upstream would route them, not byte for byte: [`RequestPath`] decodes
//! percent-escapes (repeatedly, so double encoding cannot hide a path either), reads `\` as `/`,
//! drops `;` path parameters, empty segments and `.`, resolves `..`, ignores a trailing slash and
//! the case of the fixed part. Whatever spelling of `/v1/chat/completions` a server could route to
//! its chat handler, llm-edge claims, and in pass-through it sends the upstream the canonical
//! spelling, so that what it guarded and charged is what the provider serves.

use crate::api::httpbun::HttpbunEndpoint;
use serde::Deserialize;

/// How many rounds of percent-decoding a path gets: one per layer of encoding a chain of proxies
/// and frameworks could undo.
const DECODING_ROUNDS: usize = 4;

/// A request's `:path`, read as a router would: its canonical path and its raw query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath<'a> {
    /// The path after decoding and normalising, always starting with `/`.
    pub canonical: Vec<u8>,
    /// The query string after `?`, as it came; `None` without one.
    pub query: Option<&'a [u8]>,
}

impl<'a> RequestPath<'a> {
    /// Reads a raw `:path`. Linear in its length (each decoding round is one pass).
    pub fn parse(raw: &'a [u8]) -> Self {
        let (path, query) = match raw.iter().position(|&b| b == b'?' || b == b'#') {
            Some(at) => (&raw[..at], (raw[at] == b'?').then(|| &raw[at + 1..])),
            None => (raw, None),
        };
        let mut decoded = path.to_vec();
        for _ in 0..DECODING_ROUNDS {
            match percent_decode(&decoded) {
                Some(again) => decoded = again,
                None => break,
            }
        }
        Self {
            canonical: normalise_segments(&decoded),
            query,
        }
    }

    /// The canonical path, escaped again where a path must be (everything but unreserved
    /// characters, sub-delimiters, `:`, `@` and `/`), as sent upstream for an alias.
    pub fn canonical_escaped(&self) -> String {
        let mut out = String::with_capacity(self.canonical.len());
        for &byte in &self.canonical {
            let plain = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&byte);
            if plain {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }

    /// The canonical path of `endpoint` with this request's query, as sent upstream.
    pub fn rewritten(&self, endpoint_path: &str) -> String {
        match self.query {
            Some(query) => format!("{endpoint_path}?{}", String::from_utf8_lossy(query)),
            None => endpoint_path.to_owned(),
        }
    }
}

/// One round of percent-decoding; `None` when there is nothing (valid) to decode.
fn percent_decode(bytes: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((high, low)) => {
                out.push(u8::try_from(high * 16 + low).expect("two hex digits are one byte"));
                changed = true;
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    changed.then_some(out)
}

/// Whether a configured path prefix is already in the form [`RequestPath`] gives.
pub fn is_canonical(prefix: &str) -> bool {
    prefix.is_empty() || normalise_segments(prefix.as_bytes()) == prefix.as_bytes()
}

/// Splits at `/` and `\`, drops path parameters, empty and `.` segments, resolves `..`; the
/// result starts with `/` and has no trailing slash (`/` alone for the root).
fn normalise_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in path.split(|&b| b == b'/' || b == b'\\') {
        let segment = segment.split(|&b| b == b';').next().unwrap_or_default();
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    if segments.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for segment in segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    out
}

/// Whose wire format the mock speaks, and so which paths name endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// OpenAI's and Anthropic's APIs, exactly as their specifications say, under `api_base_path`.
    #[default]
    Spec,
    /// httpbun's `/llm` endpoints, exactly as httpbun answers them (a drop-in for its users).
    Httpbun,
}

/// The HTTP methods llm-edge's endpoints accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`: the model list and a model.
    Get,
    /// `POST`: every endpoint that takes a request body.
    Post,
}

impl Method {
    /// The method a request's `:method` names, if it is one of these. HTTP methods are
    /// case-sensitive: `post` is not `POST`.
    pub fn parse(method: &[u8]) -> Option<Self> {
        match method {
            b"GET" => Some(Self::Get),
            b"POST" => Some(Self::Post),
            _ => None,
        }
    }

    /// The method as HTTP spells it, as in an `allow` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

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
    /// `POST {base}/messages/count_tokens` (Anthropic's token counting: a Messages body).
    CountTokens,
    /// `GET {base}/models`.
    Models,
    /// `GET {base}/models/{id}`; the id may contain `/`.
    Model(String),
    /// One of httpbun's `/llm` endpoints, in the httpbun profile.
    Httpbun(HttpbunEndpoint),
}

impl Endpoint {
    /// The endpoint `path` names in `profile`; `None` for any other path.
    pub fn for_profile(profile: Profile, base: &str, path: &RequestPath<'_>) -> Option<Self> {
        match profile {
            Profile::Spec => Self::resolve(base, path),
            Profile::Httpbun => {
                let lower = path.canonical.to_ascii_lowercase();
                HttpbunEndpoint::resolve(&lower).map(Self::Httpbun)
            }
        }
    }

    /// The endpoint a canonical `path` names under `base`, whatever the case of either;
    /// `None` for any other path. A model id keeps its case.
    pub fn resolve(base: &str, path: &RequestPath<'_>) -> Option<Self> {
        let path = path.canonical.as_slice();
        // The config holds the base in canonical form (see `is_canonical`).
        let base = base.as_bytes();
        let prefix = path.get(..base.len())?;
        if !prefix.eq_ignore_ascii_case(base) {
            return None;
        }
        let rest = &path[base.len()..];
        let lower = rest.to_ascii_lowercase();
        match lower.as_slice() {
            b"/chat/completions" => Some(Self::ChatCompletions),
            b"/completions" => Some(Self::Completions),
            b"/embeddings" => Some(Self::Embeddings),
            b"/responses" => Some(Self::Responses),
            b"/messages" => Some(Self::Messages),
            b"/messages/count_tokens" => Some(Self::CountTokens),
            b"/models" => Some(Self::Models),
            _ => {
                lower.strip_prefix(b"/models/")?;
                let id = std::str::from_utf8(&rest[b"/models/".len()..]).ok()?;
                Some(Self::Model(id.to_owned()))
            }
        }
    }

    /// The one method the endpoint accepts.
    pub fn method(&self) -> Method {
        match self {
            Self::ChatCompletions
            | Self::Completions
            | Self::Embeddings
            | Self::Responses
            | Self::Messages
            | Self::CountTokens
            | Self::Httpbun(_) => Method::Post,
            Self::Models | Self::Model(_) => Method::Get,
        }
    }

    /// A generating or embedding endpoint that an upstream serves under another prefix than the
    /// configured base: llama.cpp and LiteLLM at the root (`/chat/completions`), Azure OpenAI
    /// and LiteLLM under `/openai/deployments/{name}/…` and `/engines/{name}/…`, OpenRouter-style
    /// gateways under `/api/v1/…`. Pass-through claims these too, so that no alias an upstream
    /// serves is a way past the guard and the budgets; they go upstream on their own canonical
    /// path. The Assistants API's `/threads/{id}/messages` is not Anthropic's.
    pub fn alias_of(path: &RequestPath<'_>) -> Option<Self> {
        let lower = path.canonical.to_ascii_lowercase();
        let segments: Vec<&[u8]> = lower.split(|&b| b == b'/').skip(1).collect();
        match segments.as_slice() {
            [.., b"chat", b"completions"] => Some(Self::ChatCompletions),
            [.., b"completions"] => Some(Self::Completions),
            [.., b"embeddings"] => Some(Self::Embeddings),
            [.., b"responses"] => Some(Self::Responses),
            [.., b"threads", _, b"messages"] => None,
            [.., b"messages", b"count_tokens"] => Some(Self::CountTokens),
            [.., b"messages"] => Some(Self::Messages),
            _ => None,
        }
    }

    /// Whether a reply from this endpoint costs tokens (token counting is free).
    pub fn is_charged(&self) -> bool {
        !matches!(self, Self::CountTokens | Self::Models | Self::Model(_))
    }

    /// The canonical path of a fixed endpoint under `base`, as llm-edge sends it upstream;
    /// `None` for a model's own path and httpbun's (read-only or answered locally).
    pub fn canonical_path(&self, base: &str) -> Option<String> {
        match self {
            Self::Model(_) | Self::Httpbun(_) => None,
            _ => Some(self.path(base)),
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
            Self::CountTokens => "count_tokens",
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
            Self::CountTokens => format!("{base}/messages/count_tokens"),
            Self::Models => format!("{base}/models"),
            Self::Model(id) => format!("{base}/models/{id}"),
            Self::Httpbun(endpoint) => format!("/llm/v1/{}", endpoint.label().replace('_', "/")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn resolve(path: &str) -> Option<Endpoint> {
        Endpoint::resolve("/v1", &RequestPath::parse(path.as_bytes()))
    }

    #[test]
    fn resolves_each_endpoint_under_the_base() {
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
        assert_eq!(resolve("/v1/models/"), Some(Endpoint::Models));
        assert_eq!(
            resolve("/v1/models/gpt-4o"),
            Some(Endpoint::Model("gpt-4o".into()))
        );
        assert_eq!(
            resolve("/v1/models/meta-llama/Llama-3.1-8B"),
            Some(Endpoint::Model("meta-llama/Llama-3.1-8B".into()))
        );
        for other in [
            "/v2/models",
            "/v1/chat/completions/x",
            "/v1/files",
            "/v1/audio/speech",
            "/",
            "/v1",
            "/v1x/chat/completions",
        ] {
            assert_eq!(resolve(other), None, "{other}");
        }
        assert_eq!(
            Endpoint::resolve("", &RequestPath::parse(b"/chat/completions")),
            Some(Endpoint::ChatCompletions)
        );
    }

    /// Every spelling a router could take for the chat endpoint is claimed as it.
    #[test]
    fn aliases_of_a_path_resolve_as_the_path() {
        for alias in [
            "/v1/chat/%63ompletions",
            "/v1/chat%2Fcompletions",
            "/v1/chat%2fcompletions",
            "/v1/chat%252Fcompletions",
            "/v1/chat%25252Fcompletions",
            "//v1/chat/completions",
            "/v1//chat///completions",
            "/v1/chat/completions/",
            "/V1/Chat/COMPLETIONS",
            "/v1/chat/completions;x=1",
            "/v1;a=b/chat;c/completions",
            "/v1/./chat/completions",
            "/v1/x/../chat/completions",
            "/x/../v1/chat/completions",
            "/../v1/chat/completions",
            "/v1/chat/completions/.",
            "\\v1\\chat\\completions",
            "/v1/chat/completions#frag",
            "/%2e/v1/chat/completions",
            "/v1/chat/%2E%2E/chat/completions",
        ] {
            assert_eq!(resolve(alias), Some(Endpoint::ChatCompletions), "{alias:?}");
        }
    }

    #[test]
    fn the_query_is_kept_and_the_path_rewritten_canonically() {
        let path = RequestPath::parse(b"/V1//chat/%63ompletions/?api-version=1&x=%2F");
        assert_eq!(path.canonical, b"/V1/chat/completions");
        assert_eq!(
            path.rewritten("/v1/chat/completions"),
            "/v1/chat/completions?api-version=1&x=%2F"
        );
        assert_eq!(RequestPath::parse(b"/a#b?c").query, None);
        assert_eq!(RequestPath::parse(b"").canonical, b"/");
        assert_eq!(RequestPath::parse(b"%").canonical, b"/%");
        assert_eq!(RequestPath::parse(b"/%zz%4").canonical, b"/%zz%4");
    }

    /// A random mangling of an endpoint's path (escapes of any byte, doubled slashes, dot
    /// segments, parameters, case, a trailing slash) still resolves as that endpoint.
    #[test]
    fn generated_aliases_resolve_as_their_endpoint() {
        let mut rng = StdRng::seed_from_u64(18);
        let endpoints = [
            ("/v1/chat/completions", Endpoint::ChatCompletions),
            ("/v1/completions", Endpoint::Completions),
            ("/v1/embeddings", Endpoint::Embeddings),
            ("/v1/responses", Endpoint::Responses),
            ("/v1/messages", Endpoint::Messages),
        ];
        for _ in 0..5_000 {
            let (path, endpoint) = &endpoints[rng.random_range(0..endpoints.len())];
            let mut alias = String::new();
            for segment in path.split('/').skip(1) {
                alias.push_str(["/", "//", "\\", "%2F", "/./", "/zz/../"][rng.random_range(0..6)]);
                for c in segment.chars() {
                    match rng.random_range(0..4) {
                        0 => alias.push_str(&format!("%{:02X}", c as u32)),
                        1 => alias.push(c.to_ascii_uppercase()),
                        _ => alias.push(c),
                    }
                }
                if rng.random_range(0..6) == 0 {
                    alias.push_str(";p=1");
                }
            }
            if rng.random() {
                alias.push('/');
            }
            assert_eq!(resolve(&alias).as_ref(), Some(endpoint), "{alias:?}");
        }
    }

    #[test]
    fn aliases_upstreams_serve_are_claimed_in_pass_through() {
        let alias = |path: &str| Endpoint::alias_of(&RequestPath::parse(path.as_bytes()));
        for (path, endpoint) in [
            ("/chat/completions", Endpoint::ChatCompletions),
            (
                "/openai/deployments/gpt-4o/chat/completions",
                Endpoint::ChatCompletions,
            ),
            (
                "/engines/gpt-4o/chat/%63ompletions",
                Endpoint::ChatCompletions,
            ),
            ("/api/v1/chat/completions", Endpoint::ChatCompletions),
            ("/openai/deployments/x/completions", Endpoint::Completions),
            ("/embeddings", Endpoint::Embeddings),
            ("/api/v1/Responses", Endpoint::Responses),
            ("/messages", Endpoint::Messages),
            ("/anthropic/v1/messages/count_tokens", Endpoint::CountTokens),
        ] {
            assert_eq!(alias(path), Some(endpoint), "{path}");
        }
        for path in [
            "/v1/threads/thread_1/messages",
            "/v1/files",
            "/",
            "/v1/models",
            "/health",
        ] {
            assert_eq!(alias(path), None, "{path}");
        }
        assert_eq!(
            resolve("/v1/messages/count_tokens"),
            Some(Endpoint::CountTokens)
        );
        let path = RequestPath::parse(b"/openai/deployments/my%20model/chat/completions?v=1");
        assert_eq!(
            path.canonical_escaped(),
            "/openai/deployments/my%20model/chat/completions"
        );
    }

    #[test]
    fn canonical_prefixes() {
        assert!(is_canonical("/v1"));
        assert!(is_canonical(""));
        assert!(is_canonical("/openai/v1"));
        for bad in ["/v1//x", "/./v1", "/a/../v1", "/v1;x"] {
            assert!(!is_canonical(bad), "{bad}");
        }
    }

    #[test]
    fn methods_labels_and_paths() {
        assert_eq!(Endpoint::Models.method(), Method::Get);
        assert_eq!(Endpoint::Embeddings.method(), Method::Post);
        for method in [Method::Get, Method::Post] {
            assert_eq!(Method::parse(method.as_str().as_bytes()), Some(method));
        }
        assert_eq!(Method::parse(b"post"), None, "methods are case-sensitive");
        assert_eq!(Endpoint::Model("m".into()).label(), "models");
        assert_eq!(Endpoint::Model("m".into()).path("/v1"), "/v1/models/m");
    }
}
