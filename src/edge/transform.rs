//! Request transforms: what llm-edge changes in a request before it reaches the model (a real
//! upstream in pass-through mode, or the mock).
//!
//! Applied to the parsed JSON body, in this order: model aliases, removals, defaults, overrides,
//! the `max_tokens` cap, then system prompts (chat requests only). Each step is idempotent, so a
//! retried or already-transformed request comes out the same.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config_error::ConfigError;
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Where a system prompt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// Before every other message.
    Prepend,
    /// After the last system or developer message at the start (or first, if there is none).
    Append,
    /// Instead of every system and developer message.
    Replace,
}

/// A system prompt to inject; `{header:name}` in `content` becomes that request header's value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemPrompt {
    /// Where the prompt goes.
    pub position: Position,
    /// The prompt text, with `{header:name}` placeholders.
    pub content: String,
}

/// The `transform` section of the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// System prompts, applied in order.
    #[serde(default)]
    pub system_prompts: Vec<SystemPrompt>,
    /// Fields set when the request lacks them.
    #[serde(default)]
    pub defaults: Map<String, Value>,
    /// Fields always set.
    #[serde(default)]
    pub overrides: Map<String, Value>,
    /// Fields removed.
    #[serde(default)]
    pub remove: Vec<String>,
    /// The most tokens a reply may ask for: `max_tokens` / `max_completion_tokens` above it are
    /// lowered, and a request naming neither gets `max_completion_tokens` set to it.
    #[serde(default)]
    pub max_tokens_cap: Option<u64>,
    /// Model names rewritten to others: exact names first, then patterns with one `*`, in order.
    #[serde(default)]
    pub model_aliases: BTreeMap<String, String>,
    /// The request header that carries the resolved model, for routes to match on.
    #[serde(default = "default_model_header")]
    pub model_header: String,
}

fn default_model_header() -> String {
    "x-llm-edge-model".to_owned()
}

impl Default for TransformConfig {
    fn default() -> Self {
        Self {
            system_prompts: Vec::new(),
            defaults: Map::new(),
            overrides: Map::new(),
            remove: Vec::new(),
            max_tokens_cap: None,
            model_aliases: BTreeMap::new(),
            model_header: default_model_header(),
        }
    }
}

impl TransformConfig {
    /// Checks what serde cannot: placeholders, patterns, header names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, prompt) in self.system_prompts.iter().enumerate() {
            if let Err(bad) = placeholders(&prompt.content) {
                return Err(ConfigError::new(
                    format!("transform.system_prompts[{i}].content"),
                    format!("{bad:?} is not a placeholder; allowed: {{header:<name>}}"),
                ));
            }
        }
        for pattern in self.model_aliases.keys() {
            if pattern.matches('*').count() > 1 {
                return Err(ConfigError::new(
                    format!("transform.model_aliases.{pattern}"),
                    "a pattern may hold at most one '*'".to_owned(),
                ));
            }
        }
        let name = &self.model_header;
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ConfigError::new(
                "transform.model_header",
                format!(
                    "{name:?} is not a header name; allowed: lower-case letters, digits and '-'"
                ),
            ));
        }
        Ok(())
    }

    /// Whether no transform is configured (the model header aside).
    pub fn is_empty(&self) -> bool {
        self.system_prompts.is_empty()
            && self.defaults.is_empty()
            && self.overrides.is_empty()
            && self.remove.is_empty()
            && self.max_tokens_cap.is_none()
            && self.model_aliases.is_empty()
    }

    /// The model a request for `model` is sent as.
    pub fn resolve_model<'a>(&'a self, model: &'a str) -> &'a str {
        if let Some(target) = self.model_aliases.get(model) {
            return target;
        }
        self.model_aliases
            .iter()
            .find(|(pattern, _)| glob_match(pattern, model))
            .map_or(model, |(_, target)| target.as_str())
    }

    /// Applies every transform to a request body in place; `header` reads request headers for
    /// placeholders. Returns whether anything changed.
    pub fn apply<'h>(
        &self,
        body: &mut Map<String, Value>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> bool {
        // Each step reports its own change: copying the body to compare it afterwards cost a
        // deep copy and a deep comparison of every prompt.
        let mut changed = false;
        if let Some(Value::String(model)) = body.get_mut("model") {
            let resolved = self.resolve_model(model);
            if resolved != model {
                let resolved = resolved.to_owned();
                *model = resolved;
                changed = true;
            }
        }
        for field in &self.remove {
            changed |= body.remove(field).is_some();
        }
        for (field, value) in &self.defaults {
            if let Entry::Vacant(entry) = body.entry(field.as_str()) {
                entry.insert(value.clone());
                changed = true;
            }
        }
        for (field, value) in &self.overrides {
            changed |= body.insert(field.clone(), value.clone()).as_ref() != Some(value);
        }
        if let Some(cap) = self.max_tokens_cap {
            changed |= cap_max_tokens(body, cap);
        }
        if let Some(Value::Array(messages)) = body.get_mut("messages") {
            for prompt in &self.system_prompts {
                let content = render(&prompt.content, &header);
                changed |= inject(messages, prompt.position, content);
            }
        }
        changed
    }
}

/// Caps each max-tokens field at `cap`, or adds one; whether anything changed.
fn cap_max_tokens(body: &mut Map<String, Value>, cap: u64) -> bool {
    let mut named = false;
    let mut changed = false;
    for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
        if let Some(value) = body.get_mut(field) {
            named = true;
            if value.as_u64().is_none_or(|asked| asked > cap) {
                *value = Value::from(cap);
                changed = true;
            }
        }
    }
    if !named {
        body.insert("max_completion_tokens".into(), Value::from(cap));
    }
    changed || !named
}

/// Puts a system message in place, unless an identical one is already there (idempotence);
/// whether the messages changed.
fn inject(messages: &mut Vec<Value>, position: Position, content: String) -> bool {
    let is_system = |m: &Value| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer")
        )
    };
    let message = serde_json::json!({"role": "system", "content": content});
    if position == Position::Replace {
        let in_place = messages.first() == Some(&message) && !messages[1..].iter().any(is_system);
        if !in_place {
            messages.retain(|m| !is_system(m));
            messages.insert(0, message);
        }
        return !in_place;
    }
    let present = messages
        .iter()
        .any(|m| is_system(m) && m.get("content").and_then(Value::as_str) == Some(&content));
    if present {
        return false;
    }
    let at = match position {
        Position::Prepend => 0,
        _ => messages.iter().take_while(|m| is_system(m)).count(),
    };
    messages.insert(at, message);
    true
}

/// The `{header:name}` placeholders in `text`, or the first malformed `{…}`.
fn placeholders(text: &str) -> Result<Vec<&str>, &str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        let token = &rest[start..end];
        match token
            .strip_prefix("{header:")
            .and_then(|t| t.strip_suffix('}'))
            .filter(|name| !name.is_empty())
        {
            Some(name) => names.push(name),
            None => return Err(token),
        }
        rest = &rest[end..];
    }
    Ok(names)
}

/// `text` with each `{header:name}` replaced by that request header (empty when absent).
fn render<'h>(text: &str, header: &impl Fn(&str) -> Option<&'h [u8]>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{header:") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + "{header:".len()..start + len].to_ascii_lowercase();
        if let Some(value) = header(&name) {
            out.push_str(&String::from_utf8_lossy(value));
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> TransformConfig {
        let config: TransformConfig = serde_json::from_value(value).unwrap();
        config.validate().unwrap();
        config
    }

    fn apply(
        config: &TransformConfig,
        body: Value,
        headers: &[(&str, &'static str)],
    ) -> (Value, bool) {
        let Value::Object(mut body) = body else {
            panic!()
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        };
        let changed = config.apply(&mut body, header);
        (Value::Object(body), changed)
    }

    #[test]
    fn system_prompts_go_where_asked_once_with_header_values() {
        let config = config(json!({"system_prompts": [
            {"position": "prepend", "content": "Tenant {header:X-Tenant}."},
            {"position": "append", "content": "Be brief."}]}));
        let body = json!({"model": "m", "messages": [
            {"role": "system", "content": "Original."}, {"role": "user", "content": "hi"}]});
        let (out, changed) = apply(&config, body, &[("x-tenant", "acme")]);
        assert!(changed);
        let contents: Vec<&str> = out["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(contents, ["Tenant acme.", "Original.", "Be brief.", "hi"]);
        let (again, changed) = apply(&config, out.clone(), &[("x-tenant", "acme")]);
        assert!(!changed, "idempotent");
        assert_eq!(again, out);
    }

    #[test]
    fn reports_a_change_exactly_when_the_body_changed() {
        let rules = [
            json!({"model_aliases": {"gpt-4": "gpt-4o"}}),
            json!({"remove": ["user"]}),
            json!({"defaults": {"temperature": 0.2}}),
            json!({"overrides": {"n": 1}}),
            json!({"max_tokens_cap": 100}),
            json!({"system_prompts": [{"position": "prepend", "content": "S."}]}),
            json!({"system_prompts": [{"position": "append", "content": "S."}]}),
            json!({"system_prompts": [{"position": "replace", "content": "S."}]}),
        ];
        // Each rule leaves at least one of these as it was and changes at least one.
        let bodies = [
            json!({"model": "gpt-4", "messages": []}),
            json!({"model": "gpt-4o", "user": "u", "temperature": 1, "n": 1, "max_tokens": 50,
                   "messages": [{"role": "system", "content": "S."}, {"role": "user", "content": "q"}]}),
            json!({"model": "m", "n": 2, "max_tokens": 500, "max_completion_tokens": 100.0,
                   "messages": [{"role": "developer", "content": "d"}, {"role": "system", "content": "S."}]}),
            json!({"messages": [{"role": "system", "content": "S."}, {"role": "system", "content": "T."}]}),
            json!({"model": 4, "max_completion_tokens": 100}),
        ];
        for rule in rules {
            let transform = config(rule.clone());
            let mut seen = [false, false];
            for body in &bodies {
                let (out, changed) = apply(&transform, body.clone(), &[]);
                assert_eq!(changed, out != *body, "{rule} on {body}");
                seen[usize::from(changed)] = true;
            }
            assert_eq!(seen, [true, true], "{rule} both keeps and changes a body");
        }
    }

    #[test]
    fn replace_drops_every_system_and_developer_message() {
        let config =
            config(json!({"system_prompts": [{"position": "replace", "content": "Only this."}]}));
        let body = json!({"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "q"},
                                       {"role": "system", "content": "y"}]});
        let (out, _) = apply(&config, body, &[]);
        assert_eq!(
            out["messages"],
            json!([{"role": "system", "content": "Only this."}, {"role": "user", "content": "q"}])
        );
    }

    #[test]
    fn body_rules_and_the_max_tokens_cap() {
        let config = config(
            json!({"defaults": {"temperature": 0.2, "user": "edge"}, "overrides": {"n": 1},
                                   "remove": ["user", "metadata"], "max_tokens_cap": 100}),
        );
        let (out, _) = apply(
            &config,
            json!({"model": "m", "temperature": 1, "n": 3, "user": "me",
                                              "metadata": {}, "max_tokens": 500}),
            &[],
        );
        assert_eq!(
            out,
            json!({"model": "m", "temperature": 1, "n": 1, "user": "edge", "max_tokens": 100})
        );
        let (out, _) = apply(
            &config,
            json!({"model": "m", "max_completion_tokens": 50}),
            &[],
        );
        assert_eq!(out["max_completion_tokens"], 50);
        let (out, _) = apply(&config, json!({"model": "m"}), &[]);
        assert_eq!(out["max_completion_tokens"], 100);
    }

    #[test]
    fn aliases_match_exactly_then_by_pattern() {
        let config = config(
            json!({"model_aliases": {"gpt-4": "gpt-4o", "claude-*": "claude-sonnet-4-6",
                                                     "*-mini": "gpt-4o-mini"}}),
        );
        assert_eq!(config.resolve_model("gpt-4"), "gpt-4o");
        assert_eq!(config.resolve_model("claude-3-opus"), "claude-sonnet-4-6");
        assert_eq!(config.resolve_model("o3-mini"), "gpt-4o-mini");
        assert_eq!(config.resolve_model("llama"), "llama");
        let (out, _) = apply(&config, json!({"model": "gpt-4"}), &[]);
        assert_eq!(out["model"], "gpt-4o");
    }

    #[test]
    fn bad_placeholders_patterns_and_header_names_are_named() {
        let bad = |value: Value| {
            let config: TransformConfig = serde_json::from_value(value).unwrap();
            config.validate().unwrap_err().field
        };
        assert_eq!(
            bad(json!({"system_prompts": [{"position": "prepend", "content": "{tenant}"}]})),
            "transform.system_prompts[0].content"
        );
        assert_eq!(
            bad(json!({"model_aliases": {"a*b*": "c"}})),
            "transform.model_aliases.a*b*"
        );
        assert_eq!(
            bad(json!({"model_header": "X Model"})),
            "transform.model_header"
        );
    }
}
