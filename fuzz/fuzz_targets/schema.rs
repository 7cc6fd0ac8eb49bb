//! Any JSON as a tool's parameter schema (clients send these): generating arguments for it
//! finishes, stays small and serialises; never a panic, a hang or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::schema_gen;
use rand::SeedableRng;
use rand::rngs::StdRng;

fuzz_target!(|data: &[u8]| {
    let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(u64::from(data.len() as u32));
    let value = schema_gen::generate(&schema, &mut rng);
    let text = value.to_string();
    assert!(
        // Give or take a `null` per level of nesting, which serde_json caps at 128.
        text.len() <= schema_gen::MAX_OUTPUT_BYTES + 4 * 128,
        "{} bytes generated",
        text.len()
    );
});
