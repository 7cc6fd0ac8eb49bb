//! Small helpers for reading untrusted JSON and describing what was found.

use serde_json::{Map, Value};

use super::ApiError;

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
