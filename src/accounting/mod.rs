//! What a request costs: tokens counted the way the model's tokenizer counts them, and budgets that
//! charge them to a key per unit of time.
//!
//! May use [`crate::api`] (to count a request's messages) and the shared config vocabulary in
//! [`crate::config_error`]; it knows nothing of the mock, the guard or Envoy.

pub mod budgets;
pub mod tokens;
