//! Which streams are ours: the route's policy, the model header no client may set, the endpoint
//! the path names (read as an upstream would route it), and the body limit a claimed request is
//! held to. Both paths start here.

use super::{Filter, Outcome, State};
use crate::api::openai::ApiError;
use crate::api::routes::{Endpoint, Method, RequestPath};
use crate::config::{Mode, UnclaimedPaths};
use crate::filter::route_policy::RoutePolicy;
use crate::host::{HeadersStatus, Host};

/// What the request headers make of a stream.
pub(super) enum Claimed {
    /// A request to this endpoint: llm-edge's to answer or to send on.
    Endpoint(Endpoint),
    /// The route disables llm-edge: the stream passes untouched.
    Disabled,
    /// A path that names no endpoint llm-edge claims.
    Unclaimed,
}

impl Filter {
    /// Applies the route's policy, removes a model header the client sent, and reads the endpoint
    /// the path names, rewriting `:path` to its canonical spelling. When a header changed, the
    /// route is chosen again.
    pub(super) fn claim(&mut self, host: &mut impl Host<RoutePolicy = RoutePolicy>) -> Claimed {
        let mut reroute = self.drop_model_header(host);
        if let Some(policy) = host.route_policy() {
            match &*policy {
                RoutePolicy::Disabled => {
                    if reroute {
                        host.clear_route_cache();
                    }
                    return Claimed::Disabled;
                }
                RoutePolicy::Replace(replacement) => {
                    self.context = replacement.merged_with(&self.context);
                }
                RoutePolicy::Extend(extension) => {
                    self.context = extension.merged_with(&self.context);
                }
            }
            reroute |= self.drop_model_header(host);
        }
        let claimed = self.endpoint_of_path(host);
        reroute |= claimed.as_ref().is_some_and(|(_, rewritten)| *rewritten);
        if reroute {
            host.clear_route_cache();
        }
        let Some((endpoint, _)) = claimed else {
            return Claimed::Unclaimed;
        };
        self.endpoint_label = endpoint.label();
        self.anthropic_errors = matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens);
        Claimed::Endpoint(endpoint)
    }

    /// Removes the model header a client sent: it is llm-edge's to set, so no client may pick a
    /// route with it, on any path. Returns whether there was one (the route must be chosen
    /// again without it).
    fn drop_model_header(&self, host: &mut impl Host) -> bool {
        let name = &self.config().transform.model_header;
        if host.request_header(name).is_none() {
            return false;
        }
        let name = name.clone();
        host.set_request_header(&name, None);
        true
    }

    /// The endpoint the request's path names, read as an upstream would route it, and whether
    /// `:path` was rewritten to its canonical spelling (so that what llm-edge reads, guards and
    /// charges is what the upstream serves).
    fn endpoint_of_path(&self, host: &mut impl Host) -> Option<(Endpoint, bool)> {
        let config = self.config();
        let raw = host.request_header(":path").unwrap_or_default();
        let path = RequestPath::parse(raw);
        let (endpoint, canonical) =
            match Endpoint::for_profile(config.profile, &config.api_base_path, &path) {
                Some(endpoint) => {
                    let canonical = endpoint.canonical_path(&config.api_base_path);
                    (endpoint, canonical)
                }
                None if config.mode.forwards() => {
                    (Endpoint::alias_of(&path)?, Some(path.canonical_escaped()))
                }
                None => return None,
            };
        let rewritten = canonical
            .map(|canonical| path.rewritten(&canonical))
            .filter(|rewritten| rewritten.as_bytes() != raw);
        let changed = rewritten.is_some();
        if let Some(rewritten) = rewritten {
            host.set_request_header(":path", Some(&rewritten));
        }
        Some((endpoint, changed))
    }

    /// A path llm-edge does not claim: it passes untouched, or gets OpenAI's 404 when the config
    /// refuses unclaimed paths.
    pub(super) fn on_unclaimed_path(&mut self, host: &mut impl Host) -> HeadersStatus {
        if self.config().mode == Mode::Mock && self.answer_metrics(host) {
            return HeadersStatus::StopIteration;
        }
        if self.config().unclaimed_paths == UnclaimedPaths::Pass {
            self.state = State::PassThrough;
            return HeadersStatus::Continue;
        }
        let method = String::from_utf8_lossy(host.request_header(":method").unwrap_or_default());
        let path = String::from_utf8_lossy(host.request_header(":path").unwrap_or_default());
        let error = ApiError::unknown_url(&method, &path);
        self.endpoint_label = "unclaimed";
        self.send_error(host, &error, &[], Outcome::InvalidRequest);
        HeadersStatus::StopIteration
    }

    /// The request body limit; `None` after answering OpenAI's 413 to a request whose
    /// `content-length` already exceeds it.
    pub(super) fn body_limit_unless_declared_larger(
        &mut self,
        host: &mut impl Host,
    ) -> Option<u64> {
        let limit = self.config().max_request_body_bytes;
        if content_length(host).is_some_and(|declared| declared > limit) {
            let error = ApiError::request_too_large(limit);
            self.send_error(host, &error, &[], Outcome::TooLarge);
            return None;
        }
        Some(limit)
    }

    /// Answers OpenAI's 413 when the body held so far is over the limit; returns whether it did.
    pub(super) fn refuse_if_over_limit(&mut self, host: &mut impl Host) -> bool {
        let limit = self.config().max_request_body_bytes;
        // Checked before Envoy adds the chunk to its buffer, so our 413 always wins.
        if host.request_body_len() as u64 <= limit {
            return false;
        }
        let error = ApiError::request_too_large(limit);
        self.send_error(host, &error, &[], Outcome::TooLarge);
        true
    }
}

/// The request's method, if it is one an endpoint accepts.
pub(super) fn request_method(host: &impl Host) -> Option<Method> {
    Method::parse(host.request_header(":method").unwrap_or_default())
}

/// The declared `content-length`, when present and numeric.
fn content_length(host: &impl Host) -> Option<u64> {
    let value = host.request_header("content-length")?;
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}
