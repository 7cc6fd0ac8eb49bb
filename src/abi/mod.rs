//! The binding to Envoy's dynamic-module C ABI: the one module allowed to hold `unsafe` code.
//!
//! - `ffi`: our own declarations of the C types and of the Envoy callbacks we call;
//! - `hooks`: the `envoy_dynamic_module_on_*` functions Envoy calls, each behind a panic guard;
//! - `envoy_host`: [`crate::host::Host`] implemented over the callbacks;
//! - `logger`: the `log` crate and panics routed into Envoy's log;
//! - `metrics`: llm-edge's stats, defined per config and updated per stream;
//! - `optional`: callbacks older Envoy releases lack, found at load time;
//! - `owned`: the typed handle behind each module pointer Envoy holds;
//! - `fake_envoy` (unit tests only): stand-ins for the callbacks, so the hooks can be driven.
//!
//! The declarations follow what was verified against the binaries of every release the module
//! loads into, 1.37 to 1.40, not Envoy's header: `docs/envoy-abi.md` records those facts (symbols
//! and which releases export them, layouts, status values, threads, lifetimes, differences).

#![allow(unsafe_code)]
// Every unsafe block says why it is sound, and every unsafe fn what its caller must uphold; the
// crate's `-D warnings` makes both hard errors.
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

mod envoy_host;
#[cfg(test)]
mod fake_envoy;
mod ffi;
mod hooks;
mod logger;
mod metrics;
mod optional;
mod owned;
