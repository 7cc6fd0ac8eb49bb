//! Small helpers for reading untrusted JSON and describing what was found.

use serde_json::{Map, Value};

use super::ApiError;
use crate::api::json_read::parse_value_noting_duplicates;

/// Parses a request body that must be a JSON object, with OpenAI's error otherwise.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body).map_err(ApiError::invalid_json)? {
        Value::Object(fields) => Ok(fields),
        other => Err(ApiError::invalid_json(format_args!(
            "expected an object, but got {}",
            type_phrase(&other)
        ))),
    }
}

/// [`parse_object`], also telling whether any object in the body names a key twice. Parsers
/// disagree on which one counts (serde_json and Python take the last, others the first), so a
/// body that goes on upstream after llm-edge read it must go as llm-edge read it: rewritten.
pub(crate) fn parse_object_noting_duplicates(
    body: &[u8],
) -> Result<(Map<String, Value>, bool), ApiError> {
    let (value, duplicated) =
        parse_value_noting_duplicates(body).map_err(ApiError::invalid_json)?;
    match value {
        Value::Object(fields) => Ok((fields, duplicated)),
        other => Err(ApiError::invalid_json(format_args!(
            "expected an object, but got {}",
            type_phrase(&other)
        ))),
    }
}

/// Takes the required string `model` out of a request's fields.
pub(crate) fn take_model(fields: &mut Map<String, Value>) -> Result<String, ApiError> {
    match fields.remove("model") {
        Some(Value::String(model)) => Ok(model),
        None | Some(Value::Null) => Err(ApiError::missing_parameter("model")),
        Some(other) => Err(ApiError::invalid_type(
            "model",
            "a string",
            type_phrase(&other),
        )),
    }
}

/// The phrase OpenAI uses for a JSON value's type in `got …` error messages.
pub(crate) fn type_phrase(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_noted_at_any_depth_and_the_last_wins() {
        for (body, duplicated) in [
            (
                r#"{"a": 1, "b": {"c": [1, 2.5e300, -3, null, true, "x"]}}"#,
                false,
            ),
            (r#"{"max_tokens": 1, "max_tokens": 100000}"#, true),
            (
                r#"{"messages": [{"content": "a@b.io", "content": "hi"}]}"#,
                true,
            ),
            (
                r#"{"x": [[{"k": 1}, {"k": 2}]], "y": {"z": {"k": 1, "k": 1}}}"#,
                true,
            ),
        ] {
            let (fields, noted) = parse_object_noting_duplicates(body.as_bytes()).unwrap();
            assert_eq!(noted, duplicated, "{body}");
            assert_eq!(
                Value::Object(fields),
                serde_json::from_str::<Value>(body).unwrap()
            );
        }
        for bad in ["[1]", "{", r#"{"a":1} x"#, ""] {
            let noting = parse_object_noting_duplicates(bad.as_bytes()).unwrap_err();
            assert_eq!(noting.status, 400, "{bad}");
            assert_eq!(
                noting.message,
                parse_object(bad.as_bytes()).unwrap_err().message,
                "the same error as parse_object: {bad}"
            );
        }
    }

    #[test]
    fn phrases_follow_openai_wording() {
        assert_eq!(type_phrase(&json!(1)), "an integer");
        assert_eq!(type_phrase(&json!(1.5)), "a decimal");
        assert_eq!(type_phrase(&json!("x")), "a string");
        assert_eq!(type_phrase(&json!([])), "an array");
        assert_eq!(type_phrase(&json!({})), "an object");
        assert_eq!(type_phrase(&json!(null)), "null");
        assert_eq!(type_phrase(&json!(true)), "a boolean");
    }
}

/// A `prompt` or an embeddings `input` item: text, or text already tokenized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextOrTokens {
    /// A string.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
}

/// `param` as OpenAI's text endpoints take it: a string, an array of strings, an array of token
/// ids, or an array of such arrays. The embeddings endpoint refuses an empty token array.
pub(crate) fn parse_text_or_tokens(
    param: &str,
    value: Option<Value>,
    refuse_empty_token_arrays: bool,
) -> Result<Vec<TextOrTokens>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Err(ApiError::missing_parameter(param)),
        Some(Value::String(text)) => return Ok(vec![TextOrTokens::Text(text)]),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ApiError::invalid_type(
                param,
                "a string, an array of strings, or an array of token arrays",
                type_phrase(&other),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::empty_array(param));
    }
    if items.iter().all(Value::is_number) {
        return Ok(vec![TextOrTokens::Tokens(token_ids(param, &items)?)]);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(text) => Ok(TextOrTokens::Text(text)),
            Value::Array(tokens) if tokens.is_empty() && refuse_empty_token_arrays => {
                Err(ApiError::empty_array(&format!("{param}[{i}]")))
            }
            Value::Array(tokens) => Ok(TextOrTokens::Tokens(token_ids(
                &format!("{param}[{i}]"),
                &tokens,
            )?)),
            other => Err(ApiError::invalid_type(
                &format!("{param}[{i}]"),
                "a string or an array of token ids",
                type_phrase(&other),
            )),
        })
        .collect()
}

/// Token ids: non-negative integers that fit a `u32`.
fn token_ids(param: &str, items: &[Value]) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            item.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid_type(
                        &format!("{param}[{j}]"),
                        "a non-negative token id",
                        type_phrase(item),
                    )
                })
        })
        .collect()
}

/// Reads optional field `key` (called `param` in errors) with `extract`; null counts as absent.
pub(crate) fn optional<'a, T>(
    fields: &'a Map<String, Value>,
    key: &str,
    param: &str,
    expected: &str,
    extract: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => extract(value)
            .map(Some)
            .ok_or_else(|| ApiError::invalid_type(param, expected, type_phrase(value))),
    }
}

/// Reads an optional integer field that must lie in `min..=max`.
pub(crate) fn bounded_integer(
    fields: &Map<String, Value>,
    key: &str,
    min: u32,
    max: u32,
) -> Result<Option<u32>, ApiError> {
    let Some(value) = optional(fields, key, key, "an integer", Value::as_i64)? else {
        return Ok(None);
    };
    if value < i64::from(min) {
        return Err(ApiError::bad_request(
            format!(
                "Invalid '{key}': integer below minimum value. \
                 Expected a value >= {min}, but got {value} instead."
            ),
            Some(key),
            Some("integer_below_min_value"),
        ));
    }
    u32::try_from(value)
        .ok()
        .filter(|&value| value <= max)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                format!(
                    "Invalid '{key}': integer above maximum value. \
                     Expected a value <= {max}, but got {value} instead."
                ),
                Some(key),
                Some("integer_above_max_value"),
            )
        })
}
