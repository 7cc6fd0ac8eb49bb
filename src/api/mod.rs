//! The wire formats: what OpenAI's, Anthropic's and httpbun's APIs send and receive, byte for byte.
//!
//! Owns request parsing, reply and error rendering, server-sent events, JSON reading and writing,
//! and the map from a request path to the endpoint it names. May use only the standard library and
//! serde: nothing here knows about mocking, guarding, budgets or Envoy, so every other room may
//! use it.

pub mod anthropic;
pub mod httpbun;
pub mod json_read;
pub mod json_writer;
pub mod openai;
pub mod routes;
pub mod sse;
