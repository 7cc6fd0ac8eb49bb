//! llm-edge: an Envoy dynamic module that makes Envoy speak LLM.
//!
//! The crate builds `libllm_edge.so`, which Envoy 1.37 to 1.40 loads through its dynamic-module
//! HTTP filter (`dynamic_module_config.name: llm_edge`), configured by JSON carried in a
//! `google.protobuf.StringValue`. It does two things: it answers OpenAI and Anthropic requests
//! inside the proxy with schema-exact mock replies, and it transforms, guards and accounts for
//! traffic on its way to a real provider.
//!
//! A thin shell over a pure core; each room uses only the rooms below it:
//!
//! ```text
//!   Envoy ──C ABI──▶ abi        all unsafe code; EnvoyHost implements host::Host
//!                     │
//!                     ▼
//!                   filter      per-stream state and hooks; the mock path, the pass-through
//!                     │         path, accounting, budgets, per-route policy
//!          ┌──────────┼───────────┬──────────────┬───────────────┐
//!          ▼          ▼           ▼              ▼               ▼
//!        config     mock        edge         accounting         host
//!       (entry)  (answers)  (transform,   (tokens, budgets)  (the seam: trait,
//!          │          │        guard)            │            stats, pacing)
//!          └──────────┴───────────┴──────────────┘
//!                     ▼
//!                    api        wire formats: openai, anthropic, httpbun, sse, json, routes
//!                                (config_error sits below the rooms that parse config)
//! ```
//!
//! - [`config`] parses every room's part of the `filter_config` once, at load.
//! - [`filter`] holds the per-stream logic, written against the [`host::Host`] trait so that it
//!   is unit-tested against an in-memory fake.
//! - [`api`] parses requests and renders replies and errors in each provider's exact wire shape.
//! - [`mock`] decides what the mock says; [`edge`] changes and guards what passes through;
//!   [`translate`] carries a request and its reply between OpenAI's and Anthropic's APIs;
//!   [`accounting`] counts tokens and keeps budgets.
//! - `abi` (private) binds Envoy's C ABI: the only module allowed to hold `unsafe` code.
//!
//! `ARCHITECTURE.md` follows one mock and one pass-through request through these rooms.

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
pub mod translate;
pub mod version;
