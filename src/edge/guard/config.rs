//! The `guard` section of the config: what serde reads (detectors and their actions, custom
//! patterns, roles, field rules, reply guarding).

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

fn all_roles() -> Vec<String> {
    ["system", "developer", "user", "assistant", "tool"]
        .map(str::to_owned)
        .to_vec()
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

impl GuardConfig {
    /// Whether the guard does anything: a detector or a field rule.
    pub fn is_active(&self, detectors: &Detectors) -> bool {
        !detectors.is_empty() || !self.fields.is_empty()
    }

    /// Checks the field rules.
    pub fn validate_fields(&self) -> Result<(), ConfigError> {
        for (i, rule) in self.fields.iter().enumerate() {
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
        Ok(())
    }
}
