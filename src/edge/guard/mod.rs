//! Sensitive-data detection and masking: built-in detectors that validate what their pattern
//! finds (Luhn for cards, mod-97 for IBANs, ranges for SSNs and IP addresses), custom regexes,
//! and per-detector actions.
//!
//! A [`Masker`] works on one request: it numbers placeholders per detector (`[EMAIL_1]`), gives
//! the same value the same placeholder, and remembers originals so that reversible mode can put
//! them back in the reply.
//!
//! Owns the `guard` section of the config and everything it runs, a file per concern:
//! `config.rs` (what serde reads), `detect.rs` (the compiled detectors and where they look),
//! `validators.rs` (the checks of what a pattern finds), `hold.rs` (how much of a streamed text
//! each detector holds back), `masker.rs` (placeholders, per request), `fields.rs` (which strings
//! of each API's requests and replies are scanned) and `stream.rs` (streamed replies across
//! events). May use [`crate::api`] (the wire formats it walks and writes) and
//! [`crate::config_error`]; nothing else of the crate, and nothing of Envoy.

mod config;
mod detect;
mod fields;
mod hold;
mod json_text;
mod masker;
mod rewrite;
mod stream;
mod validators;

pub use config::{Action, CustomDetector, FieldRule, Guard, GuardConfig};
pub use detect::{BUILT_IN, Detectors};
pub use fields::{guard_reply, guard_request, guard_text};
pub use masker::{Detection, Masker, Rejected};
pub use rewrite::Rewriter;
pub use stream::{DeltaGuard, append_final_events, write_events};

/// What the tests of several of the guard's files build their detectors and configs from.
#[cfg(test)]
mod testing {
    use std::collections::BTreeMap;

    use super::{Action, BUILT_IN, Detectors, GuardConfig, Masker};

    pub(super) fn detectors(pairs: &[(&str, Action)]) -> Detectors {
        let actions = pairs.iter().map(|(n, a)| ((*n).to_owned(), *a)).collect();
        Detectors::compile(&actions, &[]).unwrap()
    }

    /// Every built-in detector, masking: compiled once for all the tests that use it.
    pub(super) fn every_detector() -> &'static Detectors {
        static EVERY: std::sync::OnceLock<Detectors> = std::sync::OnceLock::new();
        EVERY.get_or_init(|| {
            let all: Vec<(&str, Action)> = BUILT_IN.iter().map(|n| (*n, Action::Mask)).collect();
            detectors(&all)
        })
    }

    pub(super) fn mask_all(text: &str) -> String {
        Masker::default()
            .mask(every_detector(), text)
            .unwrap()
            .into_owned()
    }

    pub(super) fn emails(action: Action) -> GuardConfig {
        GuardConfig {
            detectors: BTreeMap::from([("email".to_owned(), action)]),
            ..GuardConfig::default()
        }
    }
}
