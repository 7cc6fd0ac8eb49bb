//! Any text through every built-in detector: masking then restoring gives the text back, and a
//! request body (when the bytes are JSON) is guarded without a panic.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llm_edge::guard::{self, Action, Detectors, GuardConfig, Masker};

fn detectors() -> &'static Detectors {
    static DETECTORS: OnceLock<Detectors> = OnceLock::new();
    DETECTORS.get_or_init(|| {
        let actions: BTreeMap<String, Action> = guard::BUILT_IN
            .iter()
            .map(|name| ((*name).to_owned(), Action::Mask))
            .collect();
        Detectors::compile(&actions, &[]).expect("the built-in detectors compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut masker = Masker::default();
    let masked = masker.mask(detectors(), text).expect("mask never rejects");
    // Placeholders the text already held would be "restored" too: only check clean texts.
    if !text.contains('[') {
        assert_eq!(masker.restore(&masked), text);
    }
    if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_str(text) {
        let config: GuardConfig = serde_json::from_str("{}").expect("the default guard");
        let _ = guard::guard_request(&mut body, &config, detectors(), &mut Masker::default());
    }
});
