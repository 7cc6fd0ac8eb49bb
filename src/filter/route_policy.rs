//! Per-route policy: Envoy's `typed_per_filter_config` for llm-edge lets a route or virtual host
//! disable the listener's policy, replace it, or extend it.
//!
//! ```json
//! {"disabled": true}
//! {"replace": { …a whole filter_config… }}
//! {"extend": {"transform": { … }, "guard": { … }}}
//! ```

use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde::Deserialize;

use crate::accounting::budgets::Budgets;
use crate::config::FilterConfig;
use crate::config_error::ConfigError;
use crate::edge::guard::{Guard, GuardConfig};
use crate::edge::transform::TransformConfig;
use crate::filter::{FilterContext, Runtime};
use crate::mock::faults::FaultDice;
use crate::translate::TranslateConfig;

/// What a route does with the listener's policy.
#[derive(Debug)]
pub enum RoutePolicy {
    /// llm-edge stays out of this route's requests.
    Disabled,
    /// This route has a policy of its own.
    Replace(Box<Replacement>),
    /// This route adds to the listener's transforms, guard and translations.
    Extend(Box<Extension>),
}

/// A route's own policy. It runs with the listener's live state (budget ledgers, label caps,
/// pacer; fault dice when its fault rates are the listener's) unless it names its own
/// `budgets`, which then keep a ledger of their own for this route.
#[derive(Debug)]
pub struct Replacement {
    config: FilterConfig,
    /// The route's own ledger, when it names `budgets`.
    budgets: Option<Arc<Budgets>>,
    /// The dice of the route's fault rates, for a listener whose rates differ.
    fault_dice: Arc<FaultDice>,
    merged: Merges,
}

/// What a route adds to the listener's policy: a translation of a client API replaces the
/// listener's of the same API.
#[derive(Debug)]
pub struct Extension {
    transform: TransformConfig,
    guard: Guard,
    translate: TranslateConfig,
    merged: Merges,
}

/// A route's policy merged with each listener's it serves (a route config may serve several),
/// built once each. An entry holds its listener weakly: the allocation stays pinned, so a later
/// listener cannot reuse its address and be handed another config's merge, and entries of
/// listeners gone (a reload) are pruned.
#[derive(Debug, Default)]
struct Merges(Mutex<Vec<(Weak<FilterContext>, Arc<FilterContext>)>>);

impl Merges {
    fn get_or_build(
        &self,
        listener: &Arc<FilterContext>,
        build: impl FnOnce() -> FilterContext,
    ) -> Arc<FilterContext> {
        let mut merged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let of_listener =
            |weak: &Weak<FilterContext>| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(listener));
        if let Some((_, context)) = merged.iter().find(|(weak, _)| of_listener(weak)) {
            return Arc::clone(context);
        }
        merged.retain(|(weak, _)| weak.strong_count() > 0);
        let context = Arc::new(build());
        merged.push((Arc::downgrade(listener), Arc::clone(&context)));
        context
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
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
    #[serde(default)]
    translate: serde_json::Value,
}

impl RoutePolicy {
    /// Parses a per-route config; errors name the field as in the listener's config.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawRoutePolicy = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| ConfigError::from_serde(&e))?;
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
            let config = FilterConfig::from_json(replace.to_string().as_bytes())
                .map_err(|e| e.under("replace"))?;
            let budgets = replace
                .get("budgets")
                .is_some()
                .then(|| Arc::new(Budgets::new(&config.budgets)));
            let fault_dice = Arc::new(FaultDice::new(&config.mock.faults));
            return Ok(Self::Replace(Box::new(Replacement {
                config,
                budgets,
                fault_dice,
                merged: Merges::default(),
            })));
        }
        let extend = raw.extend.expect("exactly one policy was given");
        let transform = extend.transform.unwrap_or_default();
        let prefixed = |error: ConfigError| error.under("extend");
        transform.validate().map_err(prefixed)?;
        let guard = Guard::parse(extend.guard.unwrap_or_default()).map_err(prefixed)?;
        let translate = TranslateConfig::parse(&extend.translate).map_err(prefixed)?;
        Ok(Self::Extend(Box::new(Extension {
            transform,
            guard,
            translate,
            merged: Merges::default(),
        })))
    }
}

impl Replacement {
    /// The route's policy, running with `listener`'s live state (see [`Replacement`]).
    pub fn merged_with(&self, listener: &Arc<FilterContext>) -> Arc<FilterContext> {
        self.merged.get_or_build(listener, || {
            let mut config = self.config.clone();
            let budgets = match &self.budgets {
                Some(own) => Arc::clone(own),
                None => {
                    config.budgets = listener.config.budgets.clone();
                    Arc::clone(&listener.budgets)
                }
            };
            let fault_dice = if config.mock.faults == listener.config.mock.faults {
                Arc::clone(&listener.fault_dice)
            } else {
                Arc::clone(&self.fault_dice)
            };
            let runtime = Runtime {
                budgets,
                fault_dice,
                ..listener.runtime.clone()
            };
            FilterContext::with_runtime(config, runtime)
        })
    }
}

impl Extension {
    /// The listener's policy with this extension added, running with the listener's live state.
    pub fn merged_with(&self, listener: &Arc<FilterContext>) -> Arc<FilterContext> {
        self.merged.get_or_build(listener, || {
            let mut config = listener.config.clone();
            extend_transform(&mut config.transform, &self.transform);
            config.guard = config.guard.extended(&self.guard);
            config.translate = config.translate.extended_with(&self.translate);
            FilterContext::with_runtime(config, listener.runtime.clone())
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::guard::Action;

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
        let RoutePolicy::Replace(replacement) = replace else {
            panic!()
        };
        assert_eq!(replacement.config.mode, crate::config::Mode::Passthrough);
        assert!(matches!(
            RoutePolicy::from_json(br#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#),
            Ok(RoutePolicy::Extend(_))
        ));
        assert_eq!(RoutePolicy::from_json(b"{}").unwrap_err().field, ".");
        let unknown = RoutePolicy::from_json(br#"{"": 1}"#).unwrap_err();
        assert_eq!(
            unknown.field, ".",
            "an unknown key named \"\" is in the document"
        );
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
        assert_eq!(
            merged.config.guard.config().detectors["email"],
            Action::Reject
        );
        assert_eq!(merged.config.guard.config().detectors["iban"], Action::Mask);
        assert!(Arc::ptr_eq(&merged, &extension.merged_with(&base)));
        let other = listener("{}");
        assert!(!Arc::ptr_eq(&merged, &extension.merged_with(&other)));
    }

    fn extension(json: &str) -> Box<Extension> {
        match RoutePolicy::from_json(json.as_bytes()).unwrap() {
            RoutePolicy::Extend(extension) => extension,
            other => panic!("{other:?}"),
        }
    }

    fn replacement(json: &str) -> Box<Replacement> {
        match RoutePolicy::from_json(json.as_bytes()).unwrap() {
            RoutePolicy::Replace(replacement) => replacement,
            other => panic!("{other:?}"),
        }
    }

    const BUDGETED: &str = r#"{"mock": {"faults": {"rates": {"429": 0.5}, "seed": 7}},
        "budgets": {"limits": [{"name": "tpm", "tokens": 100, "per": "minute", "key": "global"}]}}"#;

    fn shares_runtime(a: &FilterContext, b: &FilterContext) -> [bool; 4] {
        [
            Arc::ptr_eq(&a.budgets, &b.budgets),
            Arc::ptr_eq(&a.fault_dice, &b.fault_dice),
            Arc::ptr_eq(&a.model_labels, &b.model_labels),
            Arc::ptr_eq(&a.budget_key_labels, &b.budget_key_labels),
        ]
    }

    #[test]
    fn extend_runs_with_the_listeners_live_state() {
        let base = listener(BUDGETED);
        let merged = extension(r#"{"extend": {"guard": {"detectors": {"email": "mask"}}}}"#)
            .merged_with(&base);
        assert_eq!(shares_runtime(&base, &merged), [true; 4]);
    }

    #[test]
    fn replace_shares_the_listeners_ledger_unless_it_names_its_own_budgets() {
        let base = listener(BUDGETED);
        let shared = replacement(r#"{"replace": {"mode": "passthrough"}}"#).merged_with(&base);
        assert_eq!(
            shares_runtime(&base, &shared),
            [true, false, true, true],
            "its fault rates differ from the listener's: its own dice"
        );
        assert_eq!(shared.config.budgets, base.config.budgets);
        let same_faults = replacement(
            r#"{"replace": {"mode": "passthrough", "mock": {"faults": {"rates": {"429": 0.5}, "seed": 7}}}}"#,
        )
        .merged_with(&base);
        assert_eq!(shares_runtime(&base, &same_faults), [true; 4]);
        let own = replacement(
            r#"{"replace": {"budgets": {"limits": [{"name": "route_tpm", "tokens": 5, "per": "minute", "key": "global"}]}}}"#,
        );
        let merged = own.merged_with(&base);
        assert_eq!(shares_runtime(&base, &merged), [false, false, true, true]);
        assert_eq!(merged.config.budgets.limits()[0].name, "route_tpm");
        let other = listener("{}");
        assert!(
            Arc::ptr_eq(&merged.budgets, &own.merged_with(&other).budgets),
            "the route's own ledger is one, whatever listener it serves"
        );
    }

    #[test]
    fn a_merge_never_outlives_its_listener_nor_serves_another() {
        let extension = extension(r#"{"extend": {}}"#);
        let replacement = replacement(r#"{"replace": {}}"#);
        for round in 0..50 {
            // Each listener is freed before the next is made: the allocator may well hand the
            // next one the same address.
            let tokens = 100 + round;
            let base = listener(&format!(
                r#"{{"budgets": {{"limits": [{{"name": "tpm", "tokens": {tokens}, "per": "minute", "key": "global"}}]}}}}"#
            ));
            for merged in [extension.merged_with(&base), replacement.merged_with(&base)] {
                assert_eq!(merged.config.budgets.limits()[0].tokens, tokens);
                assert!(Arc::ptr_eq(&merged.budgets, &base.budgets));
            }
            assert_eq!(
                extension.merged.len(),
                1,
                "the dead listeners' merges are pruned"
            );
            assert_eq!(replacement.merged.len(), 1);
        }
    }
}
