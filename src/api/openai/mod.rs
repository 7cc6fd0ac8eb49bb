//! OpenAI's wire format: request parsing, response rendering and the error envelope.
//!
//! Everything here is pure: bytes in, bytes out. Shapes follow the official OpenAI OpenAPI schema,
//! including the fields it requires even when they are null (`logprobs`, `refusal`).

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod generation;
pub(crate) mod json;
pub mod models;
pub mod responses;

pub use error::ApiError;
pub(crate) use json::{parse_object, parse_object_noting_duplicates};

/// The longest model name llm-edge passes on: far above any real provider's, far below what
/// could bloat a header, a log line or a stats name.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Checks a request's `model` before it goes into a header, dynamic metadata (and so access
/// logs) or a stats label: at most [`MAX_MODEL_NAME_BYTES`] bytes and no control characters
/// (no CR, LF or NUL can split a log line or a header). Empty passes: the API decides whether
/// a model is required.
pub fn check_model_name(model: &str) -> Result<(), ApiError> {
    if model.len() <= MAX_MODEL_NAME_BYTES && !model.chars().any(char::is_control) {
        return Ok(());
    }
    Err(ApiError::bad_request(
        format!(
            "Invalid 'model': a model name is at most {MAX_MODEL_NAME_BYTES} bytes of printable \
             characters."
        ),
        Some("model"),
        Some("invalid_value"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_printable_and_bounded() {
        for good in [
            "gpt-4o",
            "",
            "meta-llama/Llama-3.1-8B:free@v2",
            "模型",
            &"m".repeat(256),
        ] {
            assert!(check_model_name(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a\rb",
            "a\nb",
            "a\0b",
            "\u{7f}",
            "\u{85}x",
            &"m".repeat(257),
        ] {
            let error = check_model_name(bad).unwrap_err();
            assert_eq!((error.status, error.param.as_deref()), (400, Some("model")));
            assert!(!error.message.contains(bad), "the name is not echoed");
        }
    }
}
