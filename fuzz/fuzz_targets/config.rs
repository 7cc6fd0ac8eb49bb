//! Any bytes as a `filter_config` or a per-route config: refused with a reason, or accepted; never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::FilterConfig;
use llm_edge::surface::RoutePolicy;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = FilterConfig::from_json(data) {
        assert!(!error.field.is_empty());
    }
    let _ = RoutePolicy::from_json(data);
});
