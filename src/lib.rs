//! llm-edge: an Envoy dynamic module that makes Envoy speak LLM.
//!
//! The crate builds `libllm_edge.so`, which Envoy 1.40 loads through its dynamic-module HTTP filter
//! (`dynamic_module_config.name: llm_edge`). It answers OpenAI-compatible requests inside the proxy
//! with schema-exact mock responses, configured by JSON carried in a `google.protobuf.StringValue`.
//!
//! The layout is a pure core and a thin shell:
//!
//! ```text
//!   Envoy ──C ABI──▶ abi (all unsafe code) ──Host trait──▶ filter ──▶ openai / mock / tokens
//!                    EnvoyHost implements Host            per-stream    pure: bytes in, bytes out
//! ```
//!
//! - [`config`] parses and validates the `filter_config` once, at load.
//! - [`filter`] holds the per-stream logic, written against the [`host::Host`] trait so that it is
//!   unit-tested against an in-memory fake.
//! - [`openai`] parses requests and renders responses and errors in OpenAI's exact wire shape.
//! - [`mock`] decides what the mock says and when; [`faults`] breaks it on request; [`tokens`] counts tokens for `usage`;
//!   [`pacing`] runs the one timer thread that paces replies without blocking a worker.
//! - `abi` (private) binds Envoy's C ABI: the only module allowed to hold `unsafe` code.

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod abi;
pub mod accounting;
pub mod api;
pub mod config;
pub mod config_error;
pub mod edge;
pub mod filter;
pub mod host;
pub mod mock;
pub mod version;
