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
