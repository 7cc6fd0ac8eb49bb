//! The `guard` section of the config: what serde reads (detectors and their actions, custom
//! patterns, roles, field rules, reply guarding), and the [`Guard`] it is parsed into once, at
//! load: checked, its detectors compiled and its field rules' pointers parsed.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_error::{ConfigError, check_label_name};

use super::detect::Detectors;

/// What to do with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Replace it with a typed placeholder such as `[EMAIL_1]`.
    Mask,
    /// Refuse the request with a 400 naming the detector (never the value).
    Reject,
    /// Count it and let it through.
    Monitor,
}

/// A custom detector: a regular expression and what to do with its matches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// The detector's name, used in placeholders and errors (`[EMPLOYEE_ID_1]`).
    pub name: String,
    /// The pattern (linear-time engine, size-limited).
    pub regex: String,
    /// What to do with a match.
    pub action: Action,
}

/// The `guard` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// Built-in detectors to run, by name, with their action.
    #[serde(default)]
    pub detectors: BTreeMap<String, Action>,
    /// Custom detectors.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
    /// Message roles whose content is scanned, compared without case (`system` covers
    /// instructions, Anthropic's `system` and tool descriptions; `user` prompts, `suffix` and
    /// `stop`). A message of a role llm-edge does not know is always scanned.
    #[serde(default = "all_roles")]
    pub roles: Vec<String>,
    /// Fields of the request body, by JSON Pointer, whose whole value is masked, refused or
    /// counted, such as `{"pointer": "/user", "name": "user_id", "action": "mask"}`.
    #[serde(default)]
    pub fields: Vec<FieldRule>,
    /// Scan tool-call arguments too (they stay valid JSON).
    #[serde(default = "yes")]
    pub tool_arguments: bool,
    /// Scan the upstream's replies too, in pass-through mode.
    #[serde(default)]
    pub responses: bool,
    /// Put the values masked in a request back into its reply, so the user sees real data and
    /// the provider never does.
    #[serde(default)]
    pub reversible: bool,
}

/// A field of the request body guarded whole, by JSON Pointer (RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Where the field is, such as `/metadata/customer_id`.
    pub pointer: String,
    /// The name in placeholders and errors (`[CUSTOMER_ID_1]`).
    pub name: String,
    /// What to do with the field's value.
    pub action: Action,
}

/// The roles llm-edge knows (`function`, the legacy one, counts as `tool`): the roles `roles` may
/// name, and all it holds by default. A message of any other role is scanned whatever `roles`
/// says, since self-hosted upstreams (vLLM, llama.cpp, Ollama) hand any role string to the model.
pub(super) const KNOWN_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

fn all_roles() -> Vec<String> {
    KNOWN_ROLES.map(str::to_owned).to_vec()
}

fn yes() -> bool {
    true
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            detectors: BTreeMap::new(),
            custom: Vec::new(),
            fields: Vec::new(),
            roles: all_roles(),
            tool_arguments: true,
            responses: false,
            reversible: false,
        }
    }
}

/// A guard ready to run: its `guard` section checked and its detectors compiled, once, when the
/// config loads. Only [`Guard::parse`] and [`Guard::extended`] make one, so a guard's detectors
/// are always those its config names, compiled.
#[derive(Debug, Clone)]
pub struct Guard {
    config: GuardConfig,
    detectors: Detectors,
    /// The pointer of each of `config.fields`, parsed.
    paths: Vec<Vec<PathToken>>,
}

/// One reference token of a field rule's JSON Pointer, unescaped: an object's key, or an array's
/// index when it reads as one.
#[derive(Debug, Clone)]
pub(super) struct PathToken {
    /// The key (`~1` read as `/`, `~0` as `~`).
    pub(super) key: String,
    /// The index, if the token is one as RFC 6901 spells it (digits, no leading zero).
    pub(super) index: Option<usize>,
}

impl PathToken {
    fn new(token: &str) -> Self {
        let key = token.replace("~1", "/").replace("~0", "~");
        let spelt_as_index = !key.starts_with('+') && (key == "0" || !key.starts_with('0'));
        let index = if spelt_as_index {
            key.parse().ok()
        } else {
            None
        };
        Self { key, index }
    }
}

/// The tokens of a pointer that starts with `/`. A trailing `/` names the field before it, as
/// field rules have always read it.
fn path_of(pointer: &str) -> Vec<PathToken> {
    let pointer = pointer.strip_prefix('/').unwrap_or(pointer);
    let (first, rest) = pointer.split_once('/').unwrap_or((pointer, ""));
    let rest = (!rest.is_empty()).then(|| rest.split('/'));
    std::iter::once(first)
        .chain(rest.into_iter().flatten())
        .map(PathToken::new)
        .collect()
}

impl Guard {
    /// Checks the `guard` section (roles, field rules, detectors) and compiles its detectors.
    /// Errors name the field under `guard.`, the bad value and what is allowed.
    pub fn parse(config: GuardConfig) -> Result<Self, ConfigError> {
        if let Some((i, role)) = config
            .roles
            .iter()
            .enumerate()
            .find(|(_, role)| !KNOWN_ROLES.contains(&role.as_str()))
        {
            return Err(ConfigError::new(
                format!("guard.roles[{i}]"),
                format!(
                    "{role:?} is not a role; allowed: {}",
                    KNOWN_ROLES.join(", ")
                ),
            ));
        }
        for (i, rule) in config.fields.iter().enumerate() {
            if !rule.pointer.starts_with('/') {
                return Err(ConfigError::new(
                    format!("guard.fields[{i}].pointer"),
                    format!(
                        "{:?} is not a JSON Pointer; allowed: \"/field\" or \"/a/b/0\"",
                        rule.pointer
                    ),
                ));
            }
            check_label_name(&format!("guard.fields[{i}].name"), &rule.name)?;
        }
        let detectors = Detectors::compile(&config.detectors, &config.custom)?;
        let paths = config
            .fields
            .iter()
            .map(|rule| path_of(&rule.pointer))
            .collect();
        Ok(Self {
            config,
            detectors,
            paths,
        })
    }

    /// The section as configured.
    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    /// The compiled detectors.
    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// The field rules, each with its pointer parsed.
    pub(super) fn field_rules(&self) -> impl Iterator<Item = (&FieldRule, &[PathToken])> {
        self.config
            .fields
            .iter()
            .zip(self.paths.iter().map(Vec::as_slice))
    }

    /// Whether the guard does anything: a detector or a field rule.
    pub fn is_active(&self) -> bool {
        !self.detectors.is_empty() || !self.config.fields.is_empty()
    }

    /// This guard with a route's added (a per-route `extend`): the route's detectors add to these
    /// (its action wins for a detector both name, its custom ones come after these); its roles
    /// add to these, as do its field rules; reply scanning and reversibility turn on if either
    /// asks. Both are compiled
    /// already, so this compiles nothing and cannot fail.
    pub fn extended(&self, route: &Guard) -> Guard {
        let mut config = self.config.clone();
        config.detectors.extend(route.config.detectors.clone());
        config.custom.extend(route.config.custom.iter().cloned());
        for role in &route.config.roles {
            if !config.roles.contains(role) {
                config.roles.push(role.clone());
            }
        }
        config.tool_arguments |= route.config.tool_arguments;
        config.responses |= route.config.responses;
        config.reversible |= route.config.reversible;
        // The route's field rules come after the listener's, each with its parsed pointer.
        config.fields.extend(route.config.fields.iter().cloned());
        let mut paths = self.paths.clone();
        paths.extend(route.paths.iter().cloned());
        Guard {
            config,
            detectors: self.detectors.extended(&route.detectors),
            paths,
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::edge::guard::Masker;

    fn guard(json: &str) -> Result<Guard, ConfigError> {
        Guard::parse(serde_json::from_str(json).unwrap())
    }

    /// The section is checked whole: roles, field rules, then the detectors, each error under
    /// `guard.`.
    #[test]
    fn parse_names_the_bad_field() {
        let field = |json| guard(json).unwrap_err().field;
        assert_eq!(field(r#"{"roles": ["user", "robot"]}"#), "guard.roles[1]");
        assert_eq!(
            field(r#"{"fields": [{"pointer": "/a", "name": "Bad Name", "action": "mask"}]}"#),
            "guard.fields[0].name"
        );
        assert_eq!(
            field(r#"{"detectors": {"passport": "mask"}}"#),
            "guard.detectors.passport"
        );
        let active = |json| guard(json).unwrap().is_active();
        assert!(!active("{}"));
        assert!(active(r#"{"detectors": {"email": "monitor"}}"#));
        assert!(active(
            r#"{"fields": [{"pointer": "/user", "name": "u", "action": "mask"}]}"#
        ));
    }

    /// A route's guard added to a listener's, without compiling anything, guards as the two
    /// configs merged and compiled whole would: the same detectors, in the same order, with the
    /// same actions, on random texts of values that overlap.
    #[test]
    fn extended_guards_as_the_merged_config_compiled() {
        let listener = guard(
            r#"{"detectors": {"email": "mask", "us_ssn": "monitor", "phone": "mask"},
                "custom": [{"name": "staff", "regex": "[a-z]+@corp\\.example", "action": "reject"},
                           {"name": "ticket", "regex": "T-\\d{3}", "action": "mask"}],
                "roles": ["user"], "tool_arguments": false}"#,
        )
        .unwrap();
        let route = guard(
            r#"{"detectors": {"us_ssn": "mask", "iban": "reject", "credit_card": "mask"},
                "custom": [{"name": "digits", "regex": "\\d{3}-\\d{2}-\\d{4}", "action": "mask"},
                           {"name": "ticket", "regex": "T-\\d{3}-\\d", "action": "monitor"}],
                "roles": ["system", "user"], "responses": true}"#,
        )
        .unwrap();
        let extended = listener.extended(&route);
        let mut merged = listener.config().clone();
        merged.detectors.extend(route.config().detectors.clone());
        merged.custom.extend(route.config().custom.iter().cloned());
        merged.roles = vec!["user".into(), "system".into()];
        merged.tool_arguments = true;
        merged.responses = true;
        assert_eq!(*extended.config(), merged);
        let compiled = Guard::parse(merged).unwrap();

        const PIECES: [&str; 12] = [
            "jane@corp.example",
            "a@x.io",
            "123-45-6789",
            "T-123",
            "T-123-4",
            "+1 415-555-2671",
            "4111 1111 1111 1111",
            "GB82 WEST 1234 5698 7654 32",
            " ",
            "x",
            "-",
            "7",
        ];
        let mut rng = StdRng::seed_from_u64(3);
        let mut refused = 0;
        for _ in 0..2_000 {
            let text: String = (0..rng.random_range(1..8))
                .map(|_| PIECES[rng.random_range(0..PIECES.len())])
                .collect();
            let mut ours = Masker::default();
            let mut theirs = Masker::default();
            let outcome = ours.mask(extended.detectors(), &text);
            assert_eq!(
                outcome,
                theirs.mask(compiled.detectors(), &text),
                "{text:?}"
            );
            assert_eq!(ours.detections, theirs.detections, "{text:?}");
            refused += usize::from(outcome.is_err());
            assert_eq!(
                ours.mask_new(extended.detectors(), &text),
                theirs.mask_new(compiled.detectors(), &text)
            );
            assert_eq!(
                extended.detectors().safe_cut_from(&text, 0),
                compiled.detectors().safe_cut_from(&text, 0)
            );
        }
        assert!((100..1_900).contains(&refused), "{refused}");
        assert_eq!(
            extended.detectors().max_holdback(),
            compiled.detectors().max_holdback()
        );
    }
}
