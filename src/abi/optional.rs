//! Callbacks that older Envoy releases lack, looked up once when the module loads.
//!
//! A Rust cdylib binds every symbol it links at load time, so one callback a release lacks and
//! the module would not load into it at all. The callbacks below are therefore never linked:
//! `dlsym` finds them in the running Envoy, and llm-edge does without the ones it does not find.
//! Today that is `log_v2` (Envoy 1.40; before it, log lines carry no source location).

use std::sync::OnceLock;

use super::ffi::{self, LogV2};

/// The optional callbacks the running Envoy exports.
pub(super) struct Optional {
    /// Logging with a source location.
    pub log_v2: Option<LogV2>,
}

/// The callbacks of the running Envoy, looked up on first use.
pub(super) fn optional() -> &'static Optional {
    static OPTIONAL: OnceLock<Optional> = OnceLock::new();
    OPTIONAL.get_or_init(|| {
        // SAFETY: `dlsym` with RTLD_DEFAULT and a NUL-terminated name only reads the name.
        let log_v2 = unsafe { ffi::dlsym(std::ptr::null_mut(), ffi::LOG_V2.as_ptr()) };
        Optional {
            // SAFETY: Envoy exports this symbol as a function with exactly this signature
            // (verified on 1.40.0); a null pointer means it is absent.
            log_v2: (!log_v2.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut std::ffi::c_void, LogV2>(log_v2) }),
        }
    })
}
