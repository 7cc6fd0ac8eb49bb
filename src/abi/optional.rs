//! Callbacks that older Envoy releases lack, looked up once when the module loads.
//!
//! A Rust cdylib binds every symbol it links at load time, so one callback a release lacks and
//! the module would not load into it at all. The callbacks below are therefore never linked:
//! `dlsym` finds them in the running Envoy, and llm-edge does without the ones it does not find:
//! `log_v2` arrived with Envoy 1.40 (before it, log lines carry no source location), the others
//! with 1.38 (on 1.37 the stream keeps Envoy's buffer limit, a reset becomes a local reply that
//! Envoy turns into one, and the body is read from both views). docs/envoy-abi.md, "Optional
//! callbacks", has which release exports which.

use std::ffi::{CStr, c_void};
use std::sync::OnceLock;

use super::ffi::{
    self, GetBufferLimit, LogV2, ReceivedBufferedRequestBody, ResetStream, SetBufferLimit,
};

/// The optional callbacks the running Envoy exports.
pub(super) struct Optional {
    /// Logging with a source location (1.40).
    pub log_v2: Option<LogV2>,
    /// Whether the received body is the buffered one (1.38).
    pub received_buffered_request_body: Option<ReceivedBufferedRequestBody>,
    /// The stream's buffer limit (1.38).
    pub get_buffer_limit: Option<GetBufferLimit>,
    /// Raises the stream's buffer limit (1.38).
    pub set_buffer_limit: Option<SetBufferLimit>,
    /// Resets the stream (1.38).
    pub reset_stream: Option<ResetStream>,
}

/// The address of `name` in the running process, or null.
fn lookup(name: &CStr) -> *mut c_void {
    // SAFETY: a null handle is glibc's RTLD_DEFAULT; `name` is NUL-terminated and only read
    // during the call; dlsym is safe from any thread.
    unsafe { ffi::dlsym(std::ptr::null_mut(), name.as_ptr()) }
}

/// Looks `name` up as a function of type `F`.
///
/// # Safety
/// Where the running Envoy exports `name`, it must be a function with exactly the signature `F`.
unsafe fn function<F: Copy>(name: &CStr) -> Option<F> {
    // `transmute_copy` checks no size: refuse, at compile time, any `F` that is not pointer-sized.
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    let address = lookup(name);
    // SAFETY: `F` is pointer-sized (asserted above) and, per the contract, the signature of the
    // function at this non-null address.
    (!address.is_null()).then(|| unsafe { std::mem::transmute_copy::<*mut c_void, F>(&address) })
}

/// The callbacks of the running Envoy, looked up on first use.
pub(super) fn optional() -> &'static Optional {
    static OPTIONAL: OnceLock<Optional> = OnceLock::new();
    // SAFETY: each type is the signature of the symbol of that name in every release that
    // exports it, as verified against the binaries (docs/envoy-abi.md, "Optional callbacks").
    OPTIONAL.get_or_init(|| unsafe {
        Optional {
            log_v2: function(ffi::LOG_V2),
            received_buffered_request_body: function(ffi::RECEIVED_BUFFERED_REQUEST_BODY),
            get_buffer_limit: function(ffi::GET_BUFFER_LIMIT),
            set_buffer_limit: function(ffi::SET_BUFFER_LIMIT),
            reset_stream: function(ffi::RESET_STREAM),
        }
    })
}
