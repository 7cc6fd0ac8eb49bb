//! The transforms on the way through: what changes in a request before it reaches a real provider,
//! and what the guard masks, refuses or counts in requests and replies (streams included).
//!
//! May use [`crate::api`] (the shapes it walks) and [`crate::config_error`]; it knows nothing of the
//! mock, budgets or Envoy.

pub mod guard;
pub mod transform;
