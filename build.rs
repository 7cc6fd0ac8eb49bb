//! Exposes the Envoy pin in `envoy-version.env` to the crate as compile-time environment variables,
//! so the ABI version string that `on_program_init` returns can never drift from the pinned Envoy.

use std::{env, fs, path::Path};

const PIN_FILE: &str = "envoy-version.env";
const KEYS: [&str; 2] = ["ENVOY_VERSION", "ENVOY_ABI_VERSION"];

fn main() {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let path = Path::new(&manifest_dir).join(PIN_FILE);
    println!("cargo:rerun-if-changed={PIN_FILE}");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));

    for key in KEYS {
        let value = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| panic!("{PIN_FILE} must set {key}=<value>"));
        println!("cargo:rustc-env=LLM_EDGE_{key}={value}");
    }
}
