//! Which strings of each API's requests and replies are scanned: a request's text by role and
//! field (never its identifiers, enums or schema contracts), tool-call arguments kept valid JSON,
//! base64 text documents decoded; every string of a reply but its identifiers.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::config::{Action, Guard, GuardConfig, KNOWN_ROLES, PathToken};
use super::detect::Detectors;
use super::json_text::canonical_escapes;
use super::masker::{Masker, Rejected};

/// Guards a request body in place. `model` first: a value any enabled detector finds there
/// refuses the request, whatever its action (the model goes to a header and the access log, and
/// masking it would change the routing). Then field rules, then every string the model reads:
/// messages and input items whole, by role (see [`in_scope`]), but for their
/// [`STRUCTURAL_KEYS`]; tool-call arguments when `tool_arguments` is on, whatever the role, kept
/// valid JSON; instructions and tool and schema descriptions (system); prompts, predictions,
/// `suffix` and `stop` (user); `metadata`, `user` and `safety_identifier` always. Returns
/// whether anything was masked.
pub fn guard_request(
    body: &mut Map<String, Value>,
    guard: &Guard,
    masker: &mut Masker,
) -> Result<bool, Rejected> {
    let (config, detectors) = (guard.config(), guard.detectors());
    if let Some(Value::String(model)) = body.get("model") {
        if let Some(span) = detectors.spans(model).first() {
            let detector = span.detector.name.clone();
            masker.detected(&detector, Action::Reject);
            return Err(Rejected { detector });
        }
    }
    let mut walker = Walker {
        config,
        detectors,
        masker,
        changed: false,
    };
    for (rule, path) in guard.field_rules() {
        let Some(value) = scalar_at(body, path) else {
            continue;
        };
        walker.masker.detected(&rule.name, rule.action);
        match rule.action {
            Action::Reject => {
                return Err(Rejected {
                    detector: rule.name.clone(),
                });
            }
            Action::Monitor => {}
            Action::Mask => {
                let text = match &*value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let prefix = rule.name.to_ascii_uppercase();
                let placeholder = walker.masker.placeholder_named(&rule.name, &prefix, &text);
                *value = Value::String(placeholder.to_owned());
                walker.changed = true;
            }
        }
    }
    let system = in_scope(&config.roles, "system");
    let user = in_scope(&config.roles, "user");
    for key in ["system", "instructions"] {
        if let Some(value) = body.get_mut(key) {
            walker.strings(value, system)?;
        }
    }
    // Tool definitions and output schemas: their descriptions are instructions to the model.
    for key in ["tools", "functions", "response_format", "text"] {
        if let Some(value) = body.get_mut(key).filter(|_| system) {
            walker.descriptions(value)?;
        }
    }
    match body.get_mut("prompt") {
        // The Responses API's prompt template: its variables are the user's text.
        Some(Value::Object(template)) => {
            if let Some(Value::Object(variables)) = template.get_mut("variables") {
                for variable in variables.values_mut() {
                    walker.strings(variable, user)?;
                }
            }
        }
        Some(prompt) => walker.strings(prompt, user)?,
        None => {}
    }
    // Predicted output: text the user expects back (a file to edit), theirs to guard. The
    // legacy `suffix` is model input; `stop` sequences are the user's too.
    if let Some(content) = body
        .get_mut("prediction")
        .and_then(|p| p.get_mut("content"))
    {
        walker.strings(content, user)?;
    }
    for key in ["suffix", "stop"] {
        if let Some(value) = body.get_mut(key) {
            walker.strings(value, user)?;
        }
    }
    // The provider sees these whatever the roles: every string in them, keys aside.
    for key in ["metadata", "user", "safety_identifier"] {
        if let Some(value) = body.get_mut(key) {
            walker.json_strings(value)?;
        }
    }
    for key in ["messages", "input"] {
        match body.get_mut(key) {
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::Object(_) => walker.message(item)?,
                        // Embeddings' and legacy inputs: texts, or lists of them (token ids stay).
                        other => walker.strings(other, user)?,
                    }
                }
            }
            Some(text) => walker.strings(text, user)?,
            None => {}
        }
    }
    Ok(walker.changed)
}

/// The scalar value at a field rule's path in the body, if there is one.
fn scalar_at<'a>(body: &'a mut Map<String, Value>, path: &[PathToken]) -> Option<&'a mut Value> {
    let (first, rest) = path.split_first()?;
    let mut value = body.get_mut(&first.key)?;
    for token in rest {
        value = match value {
            Value::Object(fields) => fields.get_mut(&token.key)?,
            Value::Array(items) => items.get_mut(token.index?)?,
            _ => return None,
        };
    }
    (!value.is_object() && !value.is_array() && !value.is_null()).then_some(value)
}

/// One text of a reply, guarded whole: the request's values restored (reversible mode) and new
/// ones masked (response scanning).
pub fn guard_text(guard: &Guard, masker: &mut Masker, text: &str) -> String {
    let config = guard.config();
    let restored = if config.reversible {
        masker.restore(text)
    } else {
        text.to_owned()
    };
    if config.responses {
        masker.mask_new(guard.detectors(), &restored)
    } else {
        restored
    }
}

/// Guards a JSON reply in place: restores the request's values (reversible mode) and masks new
/// ones (response scanning) in every string of it but the [`STRUCTURAL`] ones, in any shape
/// (error bodies and events included); with response scanning, `logprobs` go (see
/// [`visit_reply_strings`]). Returns whether anything changed.
pub fn guard_reply(reply: &mut Value, guard: &Guard, masker: &mut Masker) -> bool {
    let mut fix = |text: &mut String| {
        let out = guard_text(guard, masker, text);
        let changed = out != *text;
        if changed {
            *text = out;
        }
        changed
    };
    visit_reply_strings(reply, guard.config().responses, &mut fix)
}

/// The text fields of a chat message or delta: its content, its reasoning (DeepSeek's and vLLM's
/// `reasoning_content`, OpenRouter's `reasoning`) and a refusal.
pub(super) const CHAT_TEXTS: [&str; 4] = ["content", "reasoning_content", "reasoning", "refusal"];

/// Keys whose string values are identifiers or names the API defines, not text, and which a
/// reply's strings are guarded without: ids, types, roles, the model, reasons, statuses, tiers, and
/// the opaque `signature` (Anthropic's thinking) and `encrypted_content` (Responses' reasoning)
/// that a client hands back as they are. A function's or tool's `name` (in an object that also
/// holds its `arguments`, `input` or `input_schema`) is one too.
const STRUCTURAL: [&str; 15] = [
    "id",
    "object",
    "type",
    "role",
    "model",
    "finish_reason",
    "stop_reason",
    "status",
    "call_id",
    "item_id",
    "tool_use_id",
    "system_fingerprint",
    "service_tier",
    "signature",
    "encrypted_content",
];

/// Calls `visit` (which says whether it changed the string) on every string of a reply but
/// those of [`STRUCTURAL`] keys: a model can write into any field, so none is trusted to hold
/// no value. Tool-call `arguments` that are JSON are visited string by string and stay valid
/// JSON; tool `input` objects are data, visited whole. With `strip_logprobs`, every `logprobs`
/// (chat's and legacy's object, Responses' arrays) goes, to `null` or `[]`: its tokens spell
/// the text a piece at a time, where no value can be found. Returns whether anything changed.
fn visit_reply_strings(
    value: &mut Value,
    strip_logprobs: bool,
    visit: &mut impl FnMut(&mut String) -> bool,
) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            visit_reply_strings(item, strip_logprobs, visit) | changed
        }),
        Value::Object(fields) => {
            let tool = ["arguments", "input", "input_schema"]
                .iter()
                .any(|key| fields.contains_key(*key));
            let mut changed = false;
            for (key, field) in fields.iter_mut() {
                changed |= match (key.as_str(), field) {
                    ("logprobs", Value::Array(tokens)) if strip_logprobs => {
                        let had = !tokens.is_empty();
                        tokens.clear();
                        had
                    }
                    ("logprobs", logprobs) if strip_logprobs => !std::mem::take(logprobs).is_null(),
                    (key, Value::String(_))
                        if STRUCTURAL.contains(&key) || (tool && key == "name") =>
                    {
                        false
                    }
                    ("arguments", Value::String(arguments)) => visit_arguments(arguments, visit),
                    ("input", input) => visit_json_strings(input, visit),
                    (_, field) => visit_reply_strings(field, strip_logprobs, visit),
                };
            }
            changed
        }
        _ => false,
    }
}

/// Tool-call arguments: JSON is visited string by string, decoded as the client reads it, and
/// written back only if one changed, so the arguments stay valid JSON; anything else is visited
/// as text, with the escapes JSON does not require written as their characters (a lenient
/// reader decodes them).
fn visit_arguments(arguments: &mut String, visit: &mut impl FnMut(&mut String) -> bool) -> bool {
    match serde_json::from_str::<Value>(arguments) {
        Ok(mut parsed) => {
            let changed = visit_json_strings(&mut parsed, visit);
            if changed {
                *arguments = parsed.to_string();
            }
            changed
        }
        Err(_) => {
            let canonical = canonical_escapes(arguments).into_owned();
            let escaped = canonical != *arguments;
            *arguments = canonical;
            visit(arguments) || escaped
        }
    }
}

/// Every string of a JSON value, whatever its key: data, not the API's structure.
fn visit_json_strings(value: &mut Value, visit: &mut impl FnMut(&mut String) -> bool) -> bool {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            visit_json_strings(item, visit) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, field| {
            visit_json_strings(field, visit) | changed
        }),
        _ => false,
    }
}

/// Keys of a message, input item or content part whose values are identifiers, enums or opaque
/// tokens, not text the model reads: never scanned, as masking them would break the request. A
/// `name` is one (a called tool's or function's) except on a message, where it is its author's.
const STRUCTURAL_KEYS: [&str; 16] = [
    "type",
    "role",
    "id",
    "call_id",
    "tool_call_id",
    "tool_use_id",
    "file_id",
    "name",
    "media_type",
    "mime_type",
    "cache_control",
    "signature",
    "encrypted_content",
    "status",
    "format",
    "detail",
];

/// Keys of a JSON schema whose values are part of the contract, not prose: left as they are.
const SCHEMA_VALUES: [&str; 4] = ["enum", "const", "default", "examples"];

/// Keys of a JSON schema whose values map names (never masked) to schemas.
const SCHEMA_MAPS: [&str; 5] = [
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];

/// Whether the text of a message of `role` is scanned: the roles in `roles`, compared without
/// ASCII case, `function` counting as `tool`; a role llm-edge does not know is always scanned.
fn in_scope(roles: &[String], role: &str) -> bool {
    let role = if role.eq_ignore_ascii_case("function") {
        "tool"
    } else {
        role
    };
    !KNOWN_ROLES
        .iter()
        .any(|known| known.eq_ignore_ascii_case(role))
        || roles.iter().any(|r| r.eq_ignore_ascii_case(role))
}

/// The role a message or input item counts as: Responses' `*_output` items are `tool`, its
/// `*_call` and `reasoning` items `assistant`; a message without a role is `user`'s; any other
/// item type, or a role that is not a string, is unknown (so always scanned).
fn role_of(item: &Value) -> &str {
    match item.get("type").and_then(Value::as_str) {
        Some(kind) if kind.ends_with("_output") => "tool",
        Some(kind) if kind.ends_with("_call") || kind == "reasoning" => "assistant",
        Some("message") | None => match item.get("role") {
            Some(Value::String(role)) => role,
            None => "user",
            Some(_) => "",
        },
        Some(_) => "",
    }
}

/// A `data:` URL's media type and base64 payload, if it is one.
fn base64_data_url(text: &str) -> Option<(&str, &str)> {
    let (head, payload) = text.strip_prefix("data:")?.split_once(',')?;
    Some((head.strip_suffix(";base64")?, payload))
}

struct Walker<'a> {
    config: &'a GuardConfig,
    detectors: &'a Detectors,
    masker: &'a mut Masker,
    changed: bool,
}

impl Walker<'_> {
    fn text(&mut self, text: &mut String) -> Result<(), Rejected> {
        if let Cow::Owned(masked) = self.masker.mask(self.detectors, text)? {
            if masked != *text {
                *text = masked;
                self.changed = true;
            }
        }
        Ok(())
    }

    /// A string of a message: text, or a base64 `data:` URL, whose payload is guarded decoded
    /// if it is text and left alone if it is binary (an image, a PDF: not text to scan).
    fn leaf(&mut self, text: &mut String) -> Result<(), Rejected> {
        let Some((media_type, payload)) = base64_data_url(text) else {
            return self.text(text);
        };
        let head_len = text.len() - payload.len();
        let media_type = media_type.to_owned();
        let mut payload = payload.to_owned();
        if self.base64(&media_type, &mut payload)? {
            text.truncate(head_len);
            text.push_str(&payload);
        }
        Ok(())
    }

    /// Base64 data of `media_type`: text (`text/*`) is decoded, guarded and encoded again;
    /// binary is left alone; what does not decode as UTF-8 text from base64 is guarded as text.
    /// Returns whether `data` changed.
    fn base64(&mut self, media_type: &str, data: &mut String) -> Result<bool, Rejected> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let is_text = media_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/"));
        let Ok(decoded) = STANDARD.decode(data.as_bytes()) else {
            let before = data.clone();
            self.text(data)?;
            return Ok(*data != before);
        };
        if !is_text {
            return Ok(false);
        }
        let Ok(mut decoded) = String::from_utf8(decoded) else {
            return Ok(false);
        };
        let before = self.changed;
        self.changed = false;
        self.text(&mut decoded)?;
        let changed = self.changed;
        if changed {
            *data = STANDARD.encode(decoded);
        }
        self.changed |= before;
        Ok(changed)
    }

    /// Every string in `value` when `scan`, but for [`STRUCTURAL_KEYS`]; tool-call arguments
    /// (`arguments`, a tool use's `input`) when `tool_arguments` is on, whether `scan` or not.
    fn strings(&mut self, value: &mut Value, scan: bool) -> Result<(), Rejected> {
        match value {
            Value::String(text) if scan => self.leaf(text),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.strings(item, scan)),
            Value::Object(fields) => self.fields(fields, scan),
            _ => Ok(()),
        }
    }

    fn fields(&mut self, fields: &mut Map<String, Value>, scan: bool) -> Result<(), Rejected> {
        let message = fields.contains_key("role");
        for (key, value) in fields.iter_mut() {
            match (key.as_str(), value) {
                ("arguments" | "input", value) => {
                    if self.config.tool_arguments {
                        match value {
                            Value::String(arguments) => self.arguments(arguments)?,
                            other => self.json_strings(other)?,
                        }
                    }
                }
                ("name", value) if message => self.strings(value, scan)?,
                (key, _) if STRUCTURAL_KEYS.contains(&key) => {}
                // Anthropic's base64 sources: a text/plain document is guarded decoded.
                ("source", Value::Object(source))
                    if source.get("type").and_then(Value::as_str) == Some("base64") =>
                {
                    let media_type = source
                        .get("media_type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    match source.get_mut("data") {
                        // `changed` is kept by the guarding itself.
                        Some(Value::String(data)) if scan => {
                            self.base64(&media_type, data)?;
                        }
                        Some(other) => self.strings(other, scan)?,
                        None => {}
                    }
                }
                (_, value) => self.strings(value, scan)?,
            }
        }
        Ok(())
    }

    /// The descriptions in tool definitions and JSON schemas (never names, enums or defaults).
    fn descriptions(&mut self, value: &mut Value) -> Result<(), Rejected> {
        match value {
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.descriptions(item)),
            Value::Object(fields) => {
                for (key, value) in fields.iter_mut() {
                    match (key.as_str(), value) {
                        ("description", Value::String(text)) => self.text(text)?,
                        (key, _) if SCHEMA_VALUES.contains(&key) => {}
                        (key, Value::Object(schemas)) if SCHEMA_MAPS.contains(&key) => {
                            for schema in schemas.values_mut() {
                                self.descriptions(schema)?;
                            }
                        }
                        (_, value) => self.descriptions(value)?,
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Tool-call arguments: a JSON string whose string values are guarded one by one, so the
    /// arguments stay valid JSON; not JSON, they are guarded as text.
    fn arguments(&mut self, arguments: &mut String) -> Result<(), Rejected> {
        let Ok(mut parsed) = serde_json::from_str::<Value>(arguments) else {
            // Not JSON, yet a lenient reader decodes its escapes: read as it would.
            if let Cow::Owned(canonical) = canonical_escapes(arguments) {
                *arguments = canonical;
                self.changed = true;
            }
            return self.text(arguments);
        };
        let before = self.changed;
        self.changed = false;
        self.json_strings(&mut parsed)?;
        if self.changed {
            *arguments = parsed.to_string();
        }
        self.changed |= before;
        Ok(())
    }

    /// Every string in `value`, whatever its key.
    fn json_strings(&mut self, value: &mut Value) -> Result<(), Rejected> {
        match value {
            Value::String(text) => self.text(text),
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|item| self.json_strings(item)),
            Value::Object(fields) => fields
                .values_mut()
                .try_for_each(|field| self.json_strings(field)),
            _ => Ok(()),
        }
    }

    /// One message or input item: every string in it when its role ([`role_of`]) is in scope,
    /// content blocks and all; its tool-call arguments when `tool_arguments` is on.
    fn message(&mut self, item: &mut Value) -> Result<(), Rejected> {
        let scan = in_scope(&self.config.roles, role_of(item));
        self.strings(item, scan)
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::edge::guard::testing::emails;
    use crate::edge::guard::{BUILT_IN, DeltaGuard, FieldRule};

    #[test]
    fn field_rules_guard_whole_values_by_pointer() {
        let config = GuardConfig {
            fields: vec![
                FieldRule {
                    pointer: "/user".into(),
                    name: "user_id".into(),
                    action: Action::Mask,
                },
                FieldRule {
                    pointer: "/metadata/ssn~1tax".into(),
                    name: "tax_id".into(),
                    action: Action::Mask,
                },
            ],
            ..GuardConfig::default()
        };
        let body =
            serde_json::json!({"user": "u-42", "metadata": {"ssn/tax": 12345}, "messages": []});
        let (outcome, out, masker) = guard(config, body);
        assert!(outcome.unwrap());
        assert_eq!(out["user"], "[USER_ID_1]");
        assert_eq!(out["metadata"]["ssn/tax"], "[TAX_ID_1]");
        assert_eq!(masker.restore("[USER_ID_1]"), "u-42");
        let reject = GuardConfig {
            fields: vec![FieldRule {
                pointer: "/user".into(),
                name: "user_id".into(),
                action: Action::Reject,
            }],
            ..GuardConfig::default()
        };
        let (outcome, _, _) = guard(reject, serde_json::json!({"user": "x"}));
        assert_eq!(outcome.unwrap_err().detector, "user_id");
        let bad = GuardConfig {
            fields: vec![FieldRule {
                pointer: "user".into(),
                name: "x".into(),
                action: Action::Mask,
            }],
            ..GuardConfig::default()
        };
        assert_eq!(
            Guard::parse(bad).unwrap_err().field,
            "guard.fields[0].pointer"
        );
    }

    /// A route that extends the listener's guard adds its field rules to the listener's: both
    /// apply, each by its own pointer.
    #[test]
    fn an_extended_guard_keeps_both_field_rules() {
        let rule = |pointer: &str, name: &str| GuardConfig {
            fields: vec![FieldRule {
                pointer: pointer.into(),
                name: name.into(),
                action: Action::Mask,
            }],
            ..GuardConfig::default()
        };
        let listener = Guard::parse(rule("/user", "user_id")).unwrap();
        let route = Guard::parse(rule("/metadata/tenant", "tenant")).unwrap();
        let extended = listener.extended(&route);
        let mut body =
            serde_json::json!({"user": "u-42", "metadata": {"tenant": "acme"}, "messages": []});
        let Value::Object(fields) = &mut body else {
            unreachable!("an object")
        };
        let mut masker = Masker::default();
        assert!(guard_request(fields, &extended, &mut masker).unwrap());
        assert_eq!(body["user"], "[USER_ID_1]");
        assert_eq!(body["metadata"]["tenant"], "[TENANT_1]");
    }

    /// A field rule's pointer, parsed once at load, finds what `serde_json`'s pointer finds in
    /// the body for it, read per request as it was before (the first token unescaped and looked
    /// up, the rest by `pointer_mut`, a trailing `/` naming the field before it).
    #[test]
    fn parsed_pointers_find_what_serde_json_finds() {
        fn by_serde<'a>(body: &'a mut Map<String, Value>, pointer: &str) -> Option<&'a mut Value> {
            let (first, rest) = pointer
                .strip_prefix('/')?
                .split_once('/')
                .map_or((pointer.strip_prefix('/')?, ""), |(f, r)| (f, r));
            let first = first.replace("~1", "/").replace("~0", "~");
            let value = body.get_mut(&first)?;
            let value = if rest.is_empty() {
                value
            } else {
                value.pointer_mut(&format!("/{rest}"))?
            };
            (!value.is_object() && !value.is_array() && !value.is_null()).then_some(value)
        }
        let body = serde_json::json!({"a": {"b": [10, 11, {"c/d": "x", "~e": "y", "01": "z"}],
            "": "empty", "0": "zero"}, "": {"": "nested"}, "n": 1, "s": "t", "z": null});
        let Value::Object(body) = body else { panic!() };
        const TOKENS: [&str; 15] = [
            "a", "b", "0", "1", "2", "01", "+1", "-1", "c~1d", "~0e", "", "n", "s", "z", "9",
        ];
        let mut rng = StdRng::seed_from_u64(9);
        let mut found = 0;
        for _ in 0..5_000 {
            let mut pointer = String::new();
            for _ in 0..rng.random_range(1..5) {
                pointer.push('/');
                pointer.push_str(TOKENS[rng.random_range(0..TOKENS.len())]);
            }
            if rng.random_bool(0.1) {
                pointer.push('/');
            }
            let config = GuardConfig {
                fields: vec![FieldRule {
                    pointer: pointer.clone(),
                    name: "f".into(),
                    action: Action::Mask,
                }],
                ..GuardConfig::default()
            };
            let guard = Guard::parse(config).unwrap();
            let (_, path) = guard.field_rules().next().unwrap();
            let (mut ours, mut theirs) = (body.clone(), body.clone());
            let expected = by_serde(&mut theirs, &pointer).cloned();
            assert_eq!(scalar_at(&mut ours, path).cloned(), expected, "{pointer}");
            found += usize::from(expected.is_some());
        }
        assert!(found > 100, "{found}");
    }

    #[test]
    fn stream_events_of_every_api_are_guarded() {
        let config = GuardConfig {
            reversible: true,
            ..emails(Action::Mask)
        };
        let guard = Guard::parse(config).unwrap();
        let mut masker = Masker::default();
        masker.mask(guard.detectors(), "a@x.io").unwrap();
        for (mut event, path) in [
            (
                serde_json::json!({"type": "response.output_text.delta", "delta": "[EMAIL_1]"}),
                "/delta",
            ),
            (
                serde_json::json!({"type": "response.output_text.done", "text": "[EMAIL_1]"}),
                "/text",
            ),
            (
                serde_json::json!({"response": {"output": [{"content": [{"text": "[EMAIL_1]"}]}]}}),
                "/response/output/0/content/0/text",
            ),
            (
                serde_json::json!({"item": {"content": [{"text": "[EMAIL_1]"}]}}),
                "/item/content/0/text",
            ),
            (
                serde_json::json!({"delta": {"type": "text_delta", "text": "[EMAIL_1]"}}),
                "/delta/text",
            ),
        ] {
            guard_reply(&mut event, &guard, &mut masker);
            assert_eq!(event.pointer(path).unwrap(), "a@x.io", "{event}");
        }
    }

    /// Tool-call arguments that hide a value in JSON escapes (`\u0040` for `@`): a JSON
    /// string rather than an object, or arguments that are not JSON at all, which a lenient
    /// reader still decodes. Masked in a request and in a reply alike.
    #[test]
    fn escaped_values_in_arguments_of_any_shape_are_masked() {
        let scalar = r#""bob\u0040evil.com""#;
        let unfinished = r#"{"to": "bob\u0040evil.com""#;
        for arguments in [scalar, unfinished] {
            let call = serde_json::json!([{"function": {"arguments": arguments}}]);
            let body = serde_json::json!({"messages": [{"role": "assistant", "tool_calls": call}]});
            let (outcome, out, _) = guard(emails(Action::Mask), body);
            assert!(outcome.unwrap());
            let sent = out.pointer("/messages/0/tool_calls/0/function/arguments");
            let sent = sent.and_then(Value::as_str).unwrap();
            assert!(
                sent.contains("[EMAIL_1]") && !sent.contains("evil"),
                "{sent}"
            );

            let guard = Guard::parse(GuardConfig {
                responses: true,
                ..emails(Action::Mask)
            })
            .unwrap();
            let mut reply = serde_json::json!({"choices": [{"message": {"tool_calls": call}}]});
            assert!(guard_reply(&mut reply, &guard, &mut Masker::default()));
            let sent = reply.pointer("/choices/0/message/tool_calls/0/function/arguments");
            let sent = sent.and_then(Value::as_str).unwrap();
            assert!(
                sent.contains("[EMAIL_1]") && !sent.contains("evil"),
                "{sent}"
            );
        }
    }

    fn guard(config: GuardConfig, body: Value) -> (Result<bool, Rejected>, Value, Masker) {
        let guard = Guard::parse(config).unwrap();
        let Value::Object(mut body) = body else {
            panic!()
        };
        let mut masker = Masker::default();
        let outcome = guard_request(&mut body, &guard, &mut masker);
        (outcome, Value::Object(body), masker)
    }

    #[test]
    fn requests_are_masked_in_every_place_text_goes() {
        let body = serde_json::json!({
            "system": "ops a@x.io", "instructions": "b@x.io", "prompt": ["c@x.io"],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "d@x.io"},
                                             {"type": "tool_result", "content": "e@x.io"}]},
                {"role": "assistant", "tool_calls": [{"function": {"arguments": "{\"to\":\"f@x.io\"}"}}]}],
            "input": [{"type": "function_call_output", "output": "g@x.io"}]});
        let (outcome, out, masker) = guard(emails(Action::Mask), body);
        assert!(outcome.unwrap());
        assert_eq!(out["system"], "ops [EMAIL_1]");
        assert_eq!(out["messages"][0]["content"][1]["content"], "[EMAIL_5]");
        let arguments = out["messages"][1]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(arguments).unwrap(),
            serde_json::json!({"to": "[EMAIL_6]"})
        );
        assert_eq!(out["input"][0]["output"], "[EMAIL_7]");
        assert_eq!(masker.restore("[EMAIL_6]"), "f@x.io");
    }

    #[test]
    fn roles_out_of_scope_are_left_alone_and_reject_names_the_detector() {
        let config = GuardConfig {
            roles: vec!["user".into()],
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"messages": [{"role": "system", "content": "a@x.io"},
                                                   {"role": "user", "content": "b@x.io"}]});
        let (_, out, _) = guard(config, body);
        assert_eq!(out["messages"][0]["content"], "a@x.io");
        assert_eq!(out["messages"][1]["content"], "[EMAIL_1]");
        let (outcome, _, _) = guard(
            emails(Action::Reject),
            serde_json::json!({"messages": [{"role": "user", "content": "a@x.io"}]}),
        );
        assert_eq!(outcome.unwrap_err().detector, "email");
    }

    #[test]
    fn replies_are_restored_and_new_values_masked() {
        let config = GuardConfig {
            reversible: true,
            responses: true,
            ..emails(Action::Mask)
        };
        let (_, _, mut masker) = guard(
            config.clone(),
            serde_json::json!({"messages": [{"role": "user", "content": "a@x.io"}]}),
        );
        let guard = Guard::parse(config).unwrap();
        let mut reply = serde_json::json!({"choices": [{"message": {"content": "[EMAIL_1] or z@y.io"}}],
                                           "content": [{"type": "text", "text": "[EMAIL_1]"}]});
        assert!(guard_reply(&mut reply, &guard, &mut masker));
        assert_eq!(
            reply["choices"][0]["message"]["content"],
            "a@x.io or [EMAIL_2]"
        );
        assert_eq!(reply["content"][0]["text"], "a@x.io");
        let plain = serde_json::json!({"choices": [{"message": {"content": "Nothing to see."}}]});
        let mut reply = plain.clone();
        assert!(!guard_reply(&mut reply, &guard, &mut masker));
        assert_eq!(reply, plain);
    }

    /// Item 5 of issue 18: the request fields that went upstream unscanned.
    #[test]
    fn every_request_field_that_holds_text_is_guarded() {
        let body = serde_json::json!({
            "input": ["a@x.io", [1, 2, 3], 7, "plain"],
            "prompt": {"id": "p", "variables": {"who": "b@x.io",
                                                "doc": {"type": "input_text", "text": "c@x.io"},
                                                "pic": {"type": "input_image", "image_url": "d@x.io"}}},
            "prediction": {"type": "content", "content": [{"type": "text", "text": "e@x.io"}]},
            "messages": [
                {"role": "function", "name": "lookup", "content": "f@x.io"},
                {"role": "user", "name": "g@x.io", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": "h@x.io"}},
                    {"type": "document", "source": {"type": "content",
                                                    "content": [{"type": "text", "text": "i@x.io"}]}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t", "name": "send",
                     "input": {"to": ["j@x.io"], "n": 1}}]}]});
        let (outcome, out, _) = guard(emails(Action::Mask), body);
        assert!(outcome.unwrap());
        let text = out.to_string();
        for (n, letter) in "abcdefghij".chars().enumerate() {
            assert!(
                !text.contains(&format!("{letter}@x.io")),
                "{letter}: {text}"
            );
            assert!(text.contains(&format!("[EMAIL_{}]", n + 1)), "{n}: {text}");
        }
        assert_eq!(
            out["input"][1],
            serde_json::json!([1, 2, 3]),
            "token ids stay"
        );
        assert_eq!(out["messages"][0]["name"], "lookup");
        // `function` messages are `tool` ones for scoping; tool_use inputs follow tool_arguments.
        let scoped = GuardConfig {
            roles: vec!["user".into()],
            tool_arguments: false,
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"messages": [
            {"role": "function", "name": "f", "content": "a@x.io"},
            {"role": "assistant", "content": [{"type": "tool_use", "input": {"to": "b@x.io"}}]}]});
        let (outcome, _, _) = guard(scoped, body);
        assert!(!outcome.unwrap());
    }

    /// Every field the model reads, in every request shape; `@@` is where a value is planted,
    /// `@ARG@` tool-call arguments (a JSON string) holding it, `@B64@` base64 text holding it,
    /// and `%role%` a spelling of a role (any case, or one llm-edge does not know).
    #[rustfmt::skip]
    const READ_FIELDS: &[&str] = &[
        // Chat.
        r#"{"messages":[{"role":"%role%","content":"@@"}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"text","text":"@@"}]}]}"#,
        r#"{"messages":[{"role":"%role%","name":"@@","content":"hi"}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"image_url","image_url":{"url":"https://x.test/?q=@@","detail":"low"}}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"@@"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":null,"reasoning_content":"@@"}]}"#,
        r#"{"messages":[{"role":"assistant","function_call":{"name":"f","arguments":"@ARG@"}}]}"#,
        r#"{"messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"@ARG@"}}]}]}"#,
        r#"{"messages":[{"role":"tool","tool_call_id":"c","content":"@@"}]}"#,
        r#"{"messages":[{"role":"function","name":"f","content":"@@"}]}"#,
        r#"{"messages":[{"role":"developer","content":"@@"}]}"#,
        r#"{"messages":[{"role":"system","content":[{"type":"text","text":"@@"}]}]}"#,
        r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","description":"@@"}}]}"#,
        r#"{"messages":[],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"to":{"type":"string","description":"@@"}}}}}]}"#,
        r#"{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"s","description":"@@","schema":{}}}}"#,
        r#"{"messages":[],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"$defs":{"a":{"description":"@@"}}}}}}"#,
        r#"{"messages":[],"stop":"@@"}"#,
        r#"{"messages":[],"stop":["END","@@"]}"#,
        r#"{"messages":[],"metadata":{"id":"@@"}}"#,
        r#"{"messages":[],"user":"@@"}"#,
        r#"{"messages":[],"prediction":{"type":"content","content":"@@"}}"#,
        // Legacy completions and embeddings.
        r#"{"prompt":"@@"}"#,
        r#"{"prompt":["x","@@"]}"#,
        r#"{"prompt":"x","suffix":"@@"}"#,
        r#"{"input":"@@"}"#,
        r#"{"input":[["x","@@"]]}"#,
        // Responses.
        r#"{"input":[{"role":"%role%","content":[{"type":"input_text","text":"@@"}]}]}"#,
        r#"{"input":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"@@","annotations":[]}]}]}"#,
        r#"{"input":[{"type":"reasoning","id":"r","summary":[{"type":"summary_text","text":"@@"}]}]}"#,
        r#"{"input":[{"type":"function_call","call_id":"c","name":"f","arguments":"@ARG@"}]}"#,
        r#"{"input":[{"type":"function_call_output","call_id":"c","output":"@@"}]}"#,
        r#"{"input":[{"type":"custom_tool_call","call_id":"c","name":"t","input":"@@"}]}"#,
        r#"{"input":[{"type":"computer_call_output","call_id":"c","output":{"type":"computer_screenshot","image_url":"https://x.test/@@"}}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"https://x.test/@@"}]}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_file","filename":"@@","file_data":"data:application/pdf;base64,JVBERi0="}]}]}"#,
        r#"{"input":[{"role":"user","content":[{"type":"input_file","file_data":"data:text/plain;base64,@B64@"}]}]}"#,
        r#"{"input":[],"instructions":"@@"}"#,
        r#"{"input":[],"instructions":[{"role":"developer","content":"@@"}]}"#,
        r#"{"input":[],"tools":[{"type":"function","name":"f","description":"@@","parameters":{}}]}"#,
        r#"{"input":[],"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object","properties":{"a":{"type":"string","description":"@@"}}}}}}"#,
        r#"{"prompt":{"id":"p","variables":{"who":"@@"}}}"#,
        r#"{"prompt":{"id":"p","variables":{"doc":{"type":"input_text","text":"@@"}}}}"#,
        // Anthropic Messages.
        r#"{"system":"@@","messages":[]}"#,
        r#"{"system":[{"type":"text","text":"@@","cache_control":{"type":"ephemeral"}}],"messages":[]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"thinking","thinking":"@@","signature":"s"}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"text","text":"x","citations":[{"type":"char_location","cited_text":"@@"}]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"search_result","source":"@@","title":"t","content":[]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"search_result","source":"s","title":"@@","content":[{"type":"text","text":"x"}]}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"image","source":{"type":"url","url":"https://x.test/@@"}}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"document","source":{"type":"base64","media_type":"text/plain","data":"@B64@"}}]}]}"#,
        r#"{"messages":[{"role":"%role%","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"@@"}}]}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"@@"}]}]}]}"#,
        r#"{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"send","input":{"to":["@@"]}}]}]}"#,
        r#"{"messages":[],"tools":[{"name":"f","description":"@@","input_schema":{"type":"object"}}]}"#,
        r#"{"messages":[],"tools":[{"name":"f","input_schema":{"type":"object","properties":{"to":{"type":"string","description":"@@"}}}}]}"#,
        r#"{"messages":[],"metadata":{"user_id":"@@"}}"#,
    ];

    /// Values of several detectors, and the texts they can be planted in.
    const PLANTED: [&str; 6] = [
        "jane.doe@example.com",
        "+1 (415) 555-2671",
        "GB82 WEST 1234 5698 7654 32",
        "sk-proj-abcdefghijklmnopqrstuvwx",
        "4111 1111 1111 1111",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ];

    /// Every string a body holds, with what base64 strings and data URLs decode to.
    fn readable(value: &Value, out: &mut String) {
        use base64::Engine as _;
        match value {
            Value::String(text) => {
                out.push_str(text);
                out.push('\n');
                let payload = base64_data_url(text).map_or(text.as_str(), |(_, p)| p);
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(payload) {
                    out.push_str(&String::from_utf8_lossy(&decoded));
                    out.push('\n');
                }
            }
            Value::Array(items) => items.iter().for_each(|item| readable(item, out)),
            Value::Object(fields) => fields.values().for_each(|field| readable(field, out)),
            _ => {}
        }
    }

    fn every_argument_is_json(value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().all(every_argument_is_json),
            Value::Object(fields) => fields.iter().all(|(key, field)| match field {
                Value::String(text) if key == "arguments" => {
                    serde_json::from_str::<Value>(text).is_ok()
                }
                other => every_argument_is_json(other),
            }),
            _ => true,
        }
    }

    /// A value planted in any field the model reads, of any request shape, in prose, under any
    /// spelling of its role, never reaches the guarded body with `mask`, and refuses the
    /// request with `reject`; tool-call arguments stay valid JSON.
    #[test]
    fn a_value_planted_in_any_field_the_model_reads_never_reaches_the_provider() {
        use base64::Engine as _;
        let roles = [
            "user",
            "User",
            "USER",
            "human",
            "Human",
            "bot",
            "uSeR",
            "Assistant",
        ];
        let before = ["", "mail ", "é 号 ", "to: ", "\n"];
        let after = ["", " now", " 号", ".", "\n"];
        let mut rng = StdRng::seed_from_u64(4);
        for action in [Action::Mask, Action::Reject] {
            let config = GuardConfig {
                detectors: BUILT_IN.iter().map(|n| ((*n).to_owned(), action)).collect(),
                ..GuardConfig::default()
            };
            for case in READ_FIELDS {
                for _ in 0..12 {
                    let value = PLANTED[rng.random_range(0..PLANTED.len())];
                    let text = format!(
                        "{}{value}{}",
                        before[rng.random_range(0..before.len())],
                        after[rng.random_range(0..after.len())]
                    );
                    let arguments = serde_json::json!({"to": text, "n": 1}).to_string();
                    let json_str = |s: &str| serde_json::to_string(s).unwrap();
                    let body = case
                        .replace("%role%", roles[rng.random_range(0..roles.len())])
                        .replace("\"@ARG@\"", &json_str(&arguments))
                        .replace(
                            "@B64@",
                            &base64::engine::general_purpose::STANDARD.encode(&text),
                        )
                        .replace("\"@@\"", &json_str(&text))
                        .replace("@@", json_str(&text).trim_matches('"'));
                    let body: Value = serde_json::from_str(&body).unwrap();
                    let mut planted = String::new();
                    readable(&body, &mut planted);
                    assert!(planted.contains(value), "{case}: planted");
                    let (outcome, out, _) = guard(config.clone(), body);
                    if action == Action::Reject {
                        assert!(outcome.is_err(), "{case}: {text:?}");
                        continue;
                    }
                    assert!(outcome.unwrap(), "{case}: {text:?}");
                    let mut after = String::new();
                    readable(&out, &mut after);
                    assert!(!after.contains(value), "{case}: {text:?} in {out}");
                    assert!(every_argument_is_json(&out), "{case}: {out}");
                }
            }
        }
    }

    /// Identifiers, enums and opaque tokens are never masked (each structural key, tool names,
    /// schema enums, defaults and property names), but a message's author `name` is.
    #[test]
    fn structural_keys_and_schema_contracts_are_left_alone() {
        for key in STRUCTURAL_KEYS {
            let body = serde_json::json!({"messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi"}, {key: "a@x.io"}, {key: {"type": "a@x.io"}}]}]});
            let (outcome, out, _) = guard(emails(Action::Mask), body.clone());
            assert!(!outcome.unwrap(), "{key}");
            assert_eq!(out, body, "{key}");
        }
        let body = serde_json::json!({
            "messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "a@x.io", "name": "a@x.io", "input": {}},
                {"type": "thinking", "thinking": "ok", "signature": "a@x.io"}]}],
            "tools": [{"type": "function", "function": {"name": "a@x.io", "parameters": {
                "type": "object", "required": ["a@x.io"],
                "properties": {"a@x.io": {"type": "string", "enum": ["a@x.io"],
                                          "default": "a@x.io", "examples": ["a@x.io"]},
                               "enum": {"type": "string", "description": "b@x.io"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "a@x.io"}}});
        let (outcome, out, _) = guard(emails(Action::Mask), body.clone());
        assert!(outcome.unwrap());
        let mut expected = body;
        expected["tools"][0]["function"]["parameters"]["properties"]["enum"]["description"] =
            "[EMAIL_1]".into();
        assert_eq!(out, expected);
        let (_, out, _) = guard(
            emails(Action::Mask),
            serde_json::json!({"messages": [{"role": "user", "name": "a@x.io", "content": "hi"}]}),
        );
        assert_eq!(out["messages"][0]["name"], "[EMAIL_1]");
    }

    /// Finding 3 of the review: roles are compared without case, and a role llm-edge does not
    /// know is scanned whatever `roles` says; known roles out of `roles` are still left alone.
    #[test]
    fn unknown_roles_are_scanned_and_roles_compare_without_case() {
        let config = GuardConfig {
            roles: vec!["user".into()],
            ..emails(Action::Mask)
        };
        for role in [
            "human",
            "User",
            "USER",
            "xyz",
            "",
            "Function_x",
            "usér",
            "user ",
        ] {
            let body = serde_json::json!({"messages": [{"role": role, "content": "a@x.io"}]});
            let (_, out, _) = guard(config.clone(), body);
            assert_eq!(out["messages"][0]["content"], "[EMAIL_1]", "{role:?}");
        }
        let body = serde_json::json!({"messages": [{"role": 7, "content": "a@x.io"}]});
        assert!(guard(config.clone(), body).0.unwrap());
        for role in ["System", "ASSISTANT", "developer", "Tool", "FUNCTION"] {
            let body = serde_json::json!({"messages": [{"role": role, "content": "a@x.io"}]});
            let (outcome, _, _) = guard(config.clone(), body);
            assert!(!outcome.unwrap(), "{role:?}");
        }
        let scoped = GuardConfig {
            roles: vec!["system".into()],
            ..emails(Action::Mask)
        };
        let body = serde_json::json!({"system": "a@x.io", "tools": [{"name": "f", "description": "b@x.io"}],
                                      "messages": [{"role": "user", "content": "c@x.io"}],
                                      "metadata": {"user_id": "d@x.io"}, "stop": ["e@x.io"]});
        let (_, out, _) = guard(scoped, body);
        assert_eq!(out["system"], "[EMAIL_1]");
        assert_eq!(out["tools"][0]["description"], "[EMAIL_2]");
        assert_eq!(out["messages"][0]["content"], "c@x.io");
        assert_eq!(out["metadata"]["user_id"], "[EMAIL_3]", "always scanned");
        assert_eq!(out["stop"][0], "e@x.io", "the user's");
    }

    /// Finding 10 of the review: a value in `model` refuses the request whatever the detector's
    /// action, and is counted as refused.
    #[test]
    fn a_value_in_the_model_refuses_the_request() {
        for action in [Action::Mask, Action::Reject, Action::Monitor] {
            let body = serde_json::json!({"model": "ft:jane.doe@example.com", "messages": []});
            let (outcome, out, masker) = guard(emails(action), body.clone());
            assert_eq!(outcome.unwrap_err().detector, "email");
            assert_eq!(out, body);
            assert_eq!(masker.detections[0].action, Action::Reject);
        }
        let body = serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "a@x.io"}]});
        assert!(guard(emails(Action::Mask), body).0.unwrap());
    }

    /// Base64 documents: text is guarded decoded and encoded again; binary is left alone; what
    /// is not base64 is guarded as text.
    #[test]
    fn base64_text_documents_are_decoded_guarded_and_encoded_again() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::STANDARD;
        let document = |media_type: &str, data: &str| {
            serde_json::json!({"messages": [{"role": "user", "content": [{"type": "document",
                "source": {"type": "base64", "media_type": media_type, "data": data}}]}]})
        };
        let (_, out, masker) = guard(
            emails(Action::Mask),
            document("text/plain", &engine.encode("mail a@x.io now")),
        );
        let data = out["messages"][0]["content"][0]["source"]["data"]
            .as_str()
            .unwrap();
        assert_eq!(engine.decode(data).unwrap(), b"mail [EMAIL_1] now");
        assert_eq!(masker.restore("[EMAIL_1]"), "a@x.io");
        let pdf = document("application/pdf", &engine.encode("%PDF a@x.io"));
        assert_eq!(guard(emails(Action::Mask), pdf.clone()).1, pdf);
        let (_, out, _) = guard(emails(Action::Mask), document("text/plain", "a@x.io"));
        assert_eq!(
            out["messages"][0]["content"][0]["source"]["data"],
            "[EMAIL_1]"
        );
        let clean = document("text/plain", &engine.encode("nothing here"));
        assert_eq!(guard(emails(Action::Mask), clean.clone()).1, clean);
    }

    /// Finding 2: with `responses`, a value in any string of a reply or stream event that is not
    /// an identifier (logprobs, audio transcripts, annotations and citations, legacy
    /// `function_call` arguments, MCP output, error messages, fields no API has yet) never
    /// comes out; identifiers stay as they were, arguments stay valid JSON, logprobs go.
    #[test]
    fn every_reply_string_is_guarded() {
        use serde_json::json;
        const V: &str = "jane.doe@example.com";
        let guard = Guard::parse(GuardConfig {
            responses: true,
            ..emails(Action::Mask)
        })
        .unwrap();
        let args = json!({"to": V, "list": [V, {"id": V}]}).to_string();
        let fixed = [
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "ok", "audio": {"transcript": V},
                    "annotations": [{"type": "url_citation", "url_citation": {"url": V, "title": V}}],
                    "function_call": {"name": "f", "arguments": args},
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": args}}]},
                "logprobs": {"content": [{"token": V, "bytes": [106], "top_logprobs": [{"token": V}]}]}}]}),
            json!({"error": {"message": format!("user {V} not allowed"), "type": "invalid_request_error"}}),
            json!({"output": [{"type": "message", "id": "msg_1", "content": [{"type": "output_text",
                "text": "ok", "annotations": [{"type": "url_citation", "url": V, "title": V}],
                "logprobs": [{"token": V}]}]},
                {"type": "mcp_call", "name": "m", "arguments": "{}", "output": V}]}),
            json!({"content": [{"type": "text", "text": "ok",
                "citations": [{"type": "char_location", "cited_text": V}]},
                {"type": "web_search_tool_result", "content": [{"url": V, "title": V}]}]}),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": V}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "citations_delta", "citation": {"cited_text": V}}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                "delta": "ok", "logprobs": [{"token": V, "top_logprobs": [{"token": V}]}]}),
            json!({"type": "response.output_text.annotation.added", "annotation": {"url": V}}),
            json!({"choices": [{"index": 0, "delta": {"content": "ok", "audio": {"transcript": V}},
                "logprobs": {"content": [{"token": V}]}}]}),
        ];
        // And replies of random shape: the value anywhere but under an identifier's key.
        let mut rng = StdRng::seed_from_u64(2);
        const KEYS: [&str; 12] = [
            "content",
            "text",
            "message",
            "x",
            "items",
            "url",
            "id",
            "type",
            "name",
            "arguments",
            "input",
            "logprobs",
        ];
        fn random(rng: &mut StdRng, depth: u32, key: &str) -> Value {
            let identifier = STRUCTURAL.contains(&key) || key == "name";
            if identifier {
                return json!("ident_1");
            }
            match rng.random_range(0..if depth > 3 { 2 } else { 5 }) {
                0 => json!(format!("mail {V}.")),
                1 if key == "arguments" => json!(json!({"a": V}).to_string()),
                1 => json!(rng.random_range(0..9)),
                2 => Value::Array((0..3).map(|_| random(rng, depth + 1, "")).collect()),
                _ => {
                    let mut object = Map::new();
                    for _ in 0..rng.random_range(1..5) {
                        let key = KEYS[rng.random_range(0..KEYS.len())];
                        object.insert(key.to_owned(), random(rng, depth + 1, key));
                    }
                    Value::Object(object)
                }
            }
        }
        let replies = fixed
            .into_iter()
            .chain((0..300).map(|_| random(&mut rng, 0, "")));
        let mut checked = 0;
        for reply in replies {
            let mut whole = reply.clone();
            let mut masker = Masker::default();
            guard_reply(&mut whole, &guard, &mut masker);
            let mut deltas = DeltaGuard::default();
            let mut streamed = reply.clone();
            let mut out = deltas.guard_event(&mut streamed, &guard, &mut masker);
            out.push(streamed);
            out.extend(deltas.finish(&guard, &mut masker));
            out.push(whole.clone());
            for event in &out {
                let sent = event.to_string();
                assert!(!sent.contains(V), "{reply} -> {sent}");
                check_left(event);
            }
            if reply.to_string().contains(V) {
                checked += 1;
            }
            // Identifiers are left alone.
            assert_eq!(whole.get("id"), reply.get("id"));
            assert_eq!(whole.get("type"), reply.get("type"));
        }
        assert!(checked > 200, "{checked}");

        /// Logprobs are gone and JSON arguments are still JSON.
        fn check_left(value: &Value) {
            match value {
                Value::Array(items) => items.iter().for_each(check_left),
                Value::Object(fields) => {
                    for (key, field) in fields {
                        match (key.as_str(), field) {
                            ("logprobs", Value::Array(items)) => assert!(items.is_empty()),
                            ("logprobs", field) => assert!(field.is_null(), "{field}"),
                            ("arguments", Value::String(text)) if text.starts_with('{') => {
                                serde_json::from_str::<Value>(text).expect("JSON arguments");
                            }
                            // Tool input is data: a `logprobs` in it is the model's.
                            ("input", _) => {}
                            _ => check_left(field),
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
