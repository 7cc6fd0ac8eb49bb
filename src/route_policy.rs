//! Per-route policy: Envoy's `typed_per_filter_config` for llm-edge lets a route or virtual host
//! disable the listener's policy, replace it, or extend it.
//!
//! ```json
//! {"disabled": true}
//! {"replace": { …a whole filter_config… }}
//! {"extend": {"transform": { … }, "guard": { … }}}
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use serde::Deserialize;

use crate::config::{ConfigError, FilterConfig};
use crate::filter::FilterContext;
use crate::guard::{Detectors, GuardConfig};
use crate::transform::TransformConfig;

/// What a route does with the listener's policy.
#[derive(Debug)]
pub enum RoutePolicy {
    /// llm-edge stays out of this route's requests.
    Disabled,
    /// This route has a policy of its own.
    Replace(Arc<FilterContext>),
    /// This route adds to the listener's transforms and guard.
    Extend(Box<Extension>),
}

/// What a route adds to the listener's policy.
#[derive(Debug)]
pub struct Extension {
    transform: TransformConfig,
    guard: GuardConfig,
    /// The listener policies merged with this extension, by listener (a route config may serve
    /// several listeners); built once each.
    merged: Mutex<Vec<(usize, Arc<FilterContext>)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutePolicy {
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    replace: Option<serde_json::Value>,
    #[serde(default)]
    extend: Option<RawExtension>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    #[serde(default)]
    transform: Option<TransformConfig>,
    #[serde(default)]
    guard: Option<GuardConfig>,
}

impl RoutePolicy {
    /// Parses a per-route config; errors name the field as in the listener's config.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawRoutePolicy =
            serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError {
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let chosen = usize::from(raw.disabled)
            + usize::from(raw.replace.is_some())
            + usize::from(raw.extend.is_some());
        if chosen != 1 {
            return Err(ConfigError {
                field: ".".into(),
                message: format!(
                    "{chosen} policies given; allowed: exactly one of \"disabled\": true, \
                     \"replace\": {{…}} or \"extend\": {{…}}"
                ),
            });
        }
        if raw.disabled {
            return Ok(Self::Disabled);
        }
        if let Some(replace) = raw.replace {
            let config = FilterConfig::from_json(replace.to_string().as_bytes()).map_err(|e| {
                ConfigError {
                    field: format!("replace.{}", e.field),
                    message: e.message,
                }
            })?;
            return Ok(Self::Replace(Arc::new(FilterContext::new(config))));
        }
        let extend = raw.extend.expect("exactly one policy was given");
        let transform = extend.transform.unwrap_or_default();
        let guard = extend.guard.unwrap_or_default();
        let prefixed = |(field, message): (String, String)| ConfigError {
            field: format!("extend.{field}"),
            message,
        };
        transform.validate().map_err(prefixed)?;
        Detectors::compile(&guard.detectors, &guard.custom).map_err(prefixed)?;
        Ok(Self::Extend(Box::new(Extension {
            transform,
            guard,
            merged: Mutex::new(Vec::new()),
        })))
    }
}

impl Extension {
    /// The listener's policy with this extension added.
    pub fn merged_with(&self, listener: &Arc<FilterContext>) -> Arc<FilterContext> {
        let key = Arc::as_ptr(listener) as usize;
        let mut merged = self.merged.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, context)) = merged.iter().find(|(k, _)| *k == key) {
            return Arc::clone(context);
        }
        let mut config = listener.config.clone();
        extend_transform(&mut config.transform, &self.transform);
        extend_guard(&mut config.guard, &self.guard);
        let context = Arc::new(FilterContext::new(config));
        merged.push((key, Arc::clone(&context)));
        context
    }
}

/// The route's prompts come after the listener's; its fields, removals and aliases add to the
/// listener's (the route's win where both set one); its cap, if any, replaces the listener's.
fn extend_transform(base: &mut TransformConfig, route: &TransformConfig) {
    base.system_prompts
        .extend(route.system_prompts.iter().cloned());
    base.defaults.extend(route.defaults.clone());
    base.overrides.extend(route.overrides.clone());
    base.remove.extend(route.remove.iter().cloned());
    base.max_tokens_cap = route.max_tokens_cap.or(base.max_tokens_cap);
    base.model_aliases.extend(route.model_aliases.clone());
}

/// The route's detectors add to the listener's (its action wins for a detector both name); its
/// roles add to the listener's; reply scanning and reversibility turn on if either asks.
fn extend_guard(base: &mut GuardConfig, route: &GuardConfig) {
    base.detectors.extend(route.detectors.clone());
    base.custom.extend(route.custom.iter().cloned());
    for role in &route.roles {
        if !base.roles.contains(role) {
            base.roles.push(role.clone());
        }
    }
    base.tool_arguments |= route.tool_arguments;
    base.responses |= route.responses;
    base.reversible |= route.reversible;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::Action;

    fn listener(json: &str) -> Arc<FilterContext> {
        Arc::new(FilterContext::new(
            FilterConfig::from_json(json.as_bytes()).unwrap(),
        ))
    }

    #[test]
    fn parses_each_policy_and_refuses_none_or_two() {
        assert!(matches!(
            RoutePolicy::from_json(br#"{"disabled": true}"#),
            Ok(RoutePolicy::Disabled)
        ));
        let replace = RoutePolicy::from_json(br#"{"replace": {"mode": "passthrough"}}"#).unwrap();
        let RoutePolicy::Replace(context) = replace else {
            panic!()
        };
        assert_eq!(context.config.mode, crate::config::Mode::Passthrough);
        assert!(matches!(
            RoutePolicy::from_json(br#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#),
            Ok(RoutePolicy::Extend(_))
        ));
        assert_eq!(RoutePolicy::from_json(b"{}").unwrap_err().field, ".");
        let two = RoutePolicy::from_json(br#"{"disabled": true, "extend": {}}"#).unwrap_err();
        assert!(two.message.contains("2 policies given"));
        let bad = RoutePolicy::from_json(br#"{"replace": {"mode": "proxy"}}"#).unwrap_err();
        assert_eq!(bad.field, "replace.mode");
        let bad = RoutePolicy::from_json(br#"{"extend": {"guard": {"detectors": {"x": "mask"}}}}"#)
            .unwrap_err();
        assert_eq!(bad.field, "extend.guard.detectors.x");
    }

    #[test]
    fn extend_adds_to_the_listener_and_is_built_once_per_listener() {
        let base = listener(
            r#"{"transform": {"system_prompts": [{"position": "prepend", "content": "A"}]},
                "guard": {"detectors": {"email": "mask"}}}"#,
        );
        let RoutePolicy::Extend(extension) = RoutePolicy::from_json(
            br#"{"extend": {"transform": {"system_prompts": [{"position": "append", "content": "B"}]},
                            "guard": {"detectors": {"email": "reject", "iban": "mask"}}}}"#,
        )
        .unwrap() else {
            panic!()
        };
        let merged = extension.merged_with(&base);
        let prompts: Vec<&str> = merged
            .config
            .transform
            .system_prompts
            .iter()
            .map(|p| p.content.as_str())
            .collect();
        assert_eq!(prompts, ["A", "B"]);
        assert_eq!(merged.config.guard.detectors["email"], Action::Reject);
        assert_eq!(merged.config.guard.detectors["iban"], Action::Mask);
        assert!(Arc::ptr_eq(&merged, &extension.merged_with(&base)));
        let other = listener("{}");
        assert!(!Arc::ptr_eq(&merged, &extension.merged_with(&other)));
    }
}
