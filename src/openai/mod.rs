//! OpenAI's wire format: request parsing, response rendering and the error envelope.
//!
//! Everything here is pure: bytes in, bytes out. Shapes follow the official OpenAI OpenAPI schema,
//! including the fields it requires even when they are null (`logprobs`, `refusal`).

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
mod json;
pub mod models;
pub mod responses;

pub use error::ApiError;
pub(crate) use json::parse_object;
