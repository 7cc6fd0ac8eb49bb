//! The Envoy pin, read from `envoy-version.env` by `build.rs` at compile time.

/// The Envoy release this module is built and tested against.
pub const ENVOY_VERSION: &str = env!("LLM_EDGE_ENVOY_VERSION");

/// The dynamic-module ABI version string that [`ENVOY_VERSION`] expects from
/// `envoy_dynamic_module_on_program_init`; Envoy logs `ABI version ... matched.` when it agrees.
pub const ENVOY_ABI_VERSION: &str = env!("LLM_EDGE_ENVOY_ABI_VERSION");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_is_read_from_the_pin_file() {
        let pin = include_str!("../envoy-version.env");
        assert!(pin.contains(&format!("ENVOY_VERSION={ENVOY_VERSION}\n")));
        assert!(pin.contains(&format!("ENVOY_ABI_VERSION={ENVOY_ABI_VERSION}\n")));
    }
}
