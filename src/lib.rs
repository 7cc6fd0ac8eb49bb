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
//!          ┌──────────┼───────────┬────────────┬──────────────┬──────────────┐
//!          ▼          ▼           ▼            ▼              ▼              ▼
//!        config     mock        edge       translate     accounting        host
//!       (entry)  (answers,  (transform,   (between the    (tokens,     (the seam: trait,
//!          │     loaded       guard)        APIs)         budgets)     stats, pacing)
//!          │      server)       │             │              │
//!          └──────────┴───────────┴────────────┴──────────────┘
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

// The crate is a cdylib whose readers are its developers: its docs are built with
// `cargo doc --document-private-items`, where links to private items resolve.
#![allow(rustdoc::private_intra_doc_links)]
#![deny(unsafe_code)]
#![deny(missing_docs)]

mod abi;
mod accounting;
mod api;
mod config;
mod config_error;
mod edge;
mod filter;
mod fixtures;
mod host;
mod mock;
mod translate;
mod version;

/// The pure core's entry points that the fuzz targets and benchmarks drive. Everything else is
/// private to the crate, so the compiler reports code nothing uses.
pub mod surface {
    pub use crate::accounting::tokens::Tokenizer;
    pub use crate::api::anthropic::MessagesRequest;
    pub use crate::api::openai::chat::ChatRequest;
    pub use crate::api::openai::completions::CompletionRequest;
    pub use crate::api::openai::embeddings::EmbeddingsRequest;
    pub use crate::api::openai::responses::ResponsesRequest;
    pub use crate::api::sse;
    pub use crate::config::FilterConfig;
    pub use crate::config_error::ConfigError;
    pub use crate::edge::guard;
    pub use crate::filter::route_policy::RoutePolicy;
    pub use crate::mock::schema_gen;
    pub use crate::translate::TranslateConfig;

    /// Record and replay: what the fixture lister, the loader's fuzz target and the writer's
    /// bench use.
    pub mod fixtures {
        pub use crate::fixtures::canonical::{Ignored, Key};
        pub use crate::fixtures::format::{
            LineOut, OneLineJson, RecordedEvent, RecordedUsage, VERSION, parse_utc,
        };
        pub use crate::fixtures::index::{FixtureSet, Found, Reply, parse_file, read_file};
        pub use crate::fixtures::writer::{Recorder, Submitted, WriterSettings};
    }

    /// The mock's entry points: a parsed request in, a rendered reply out.
    pub mod mock {
        pub use crate::mock::{
            MockReply, ReplyShape, Timing, anthropic_message, chat_completion, embeddings,
            response, text_completion,
        };
    }
}
