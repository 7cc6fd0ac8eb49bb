//! Raw declarations of Envoy's dynamic-module C ABI, pinned to the Envoy in `envoy-version.env`.
//!
//! Only the callbacks llm-edge calls are declared: a Rust cdylib binds every imported symbol when
//! Envoy loads it, so declaring one the target Envoy lacks would stop the module from loading.
//! `make test` checks every `envoy_dynamic_module_*` import against the Envoy binary's exports.
//!
//! Envoy's C enums travel as `u32`. The hooks' statuses and the log level are `#[repr(u32)]` enums,
//! which travel the same way; every other value is a named `u32` constant below. Nothing Envoy
//! hands us is ever read as a Rust enum: one holding a value we did not name would be UB.

use std::ffi::c_void;
use std::sync::Arc;

use crate::filter::route_policy::RoutePolicy;

use super::owned::Owned;

/// Envoy's per-stream filter object; valid from `http_filter_new` to `http_filter_destroy`, and
/// only on that stream's worker thread.
pub type FilterEnvoyPtr = *mut c_void;

/// The module's per-route config object: made by `per_route_config_new`, handed back by
/// `get_most_specific_route_config`, freed by `per_route_config_destroy`.
pub type RouteConfigPtr = Owned<Arc<RoutePolicy>>;

/// A `(pointer, length)` byte view, passed by value in both directions. Views from Envoy are
/// borrowed for the duration of the hook; views to Envoy are copied during the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Buffer {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Buffer {
    /// A view of `bytes`, valid while `bytes` is.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// A view of nothing.
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// The bytes behind the view; `(null, 0)`, which C passes routinely, is the empty slice.
    ///
    /// # Safety
    /// `ptr` must be null with `len == 0`, or point to `len` readable bytes that outlive `'a`.
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: `ptr` is non-null, and the caller vouches for `len` readable bytes that
            // outlive 'a; a `Buffer` never views more than isize::MAX bytes (Rust or Envoy memory).
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// One header as two byte views, the layout of both `envoy_http_header` and `module_http_header`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HttpHeader {
    /// Header name bytes.
    pub key_ptr: *const u8,
    /// Header name length.
    pub key_len: usize,
    /// Header value bytes.
    pub value_ptr: *const u8,
    /// Header value length.
    pub value_len: usize,
}

impl HttpHeader {
    /// The name.
    ///
    /// # Safety
    /// As [`Buffer::as_slice`]: the name's bytes must outlive `'a`.
    pub unsafe fn key<'a>(&self) -> &'a [u8] {
        // SAFETY: the caller vouches for the name's bytes, as `as_slice` requires.
        unsafe {
            Buffer {
                ptr: self.key_ptr,
                len: self.key_len,
            }
            .as_slice()
        }
    }

    /// The value.
    ///
    /// # Safety
    /// As [`Buffer::as_slice`]: the value's bytes must outlive `'a`.
    pub unsafe fn value<'a>(&self) -> &'a [u8] {
        // SAFETY: the caller vouches for the value's bytes, as `as_slice` requires.
        unsafe {
            Buffer {
                ptr: self.value_ptr,
                len: self.value_len,
            }
            .as_slice()
        }
    }

    /// A header of nothing, to be overwritten.
    pub const EMPTY: Self = Self {
        key_ptr: std::ptr::null(),
        key_len: 0,
        value_ptr: std::ptr::null(),
        value_len: 0,
    };

    /// A header view of `(name, value)`, valid while both strings are.
    pub fn of(name: &str, value: &str) -> Self {
        Self {
            key_ptr: name.as_ptr(),
            key_len: name.len(),
            value_ptr: value.as_ptr(),
            value_len: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_http_header_type`.
pub mod header_map {
    /// The request headers.
    pub const REQUEST: u32 = 0;
    /// The response headers.
    pub const RESPONSE: u32 = 2;
}

/// `envoy_dynamic_module_type_http_body_type`.
pub mod body {
    /// The request chunk delivered with the current call.
    pub const RECEIVED_REQUEST: u32 = 0;
    /// The request chunks buffered by earlier calls.
    pub const BUFFERED_REQUEST: u32 = 1;
    /// The response chunk delivered with the current call.
    pub const RECEIVED_RESPONSE: u32 = 2;
    /// The response chunks buffered by earlier calls.
    pub const BUFFERED_RESPONSE: u32 = 3;
}

// The statuses the stream hooks return. Returned, never received, so a Rust enum is sound here:
// `#[repr(u32)]` travels exactly as the C enum's `u32`, and Envoy never hands us a value to check.

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (and response headers).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    /// Continue to the next filter.
    Continue = 0,
    /// Hold the headers.
    StopIteration = 1,
}

/// `envoy_dynamic_module_type_on_http_filter_request_body_status` (and response body).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStatus {
    /// Continue to the next filter.
    Continue = 0,
    /// Buffer the chunk and wait for more.
    StopIterationAndBuffer = 1,
    /// Stop without buffering.
    StopIterationNoBuffer = 3,
}

/// `envoy_dynamic_module_type_on_http_filter_request_trailers_status` (and response trailers).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrailersStatus {
    /// Continue to the next filter.
    Continue = 0,
    /// Hold the trailers.
    StopIteration = 1,
}

/// `envoy_dynamic_module_type_log_level`, passed to Envoy's loggers (the levels `log` has).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Trace.
    Trace = 0,
    /// Debug.
    Debug = 1,
    /// Info.
    Info = 2,
    /// Warn.
    Warn = 3,
    /// Error.
    Error = 4,
}

/// `envoy_dynamic_module_type_metrics_result`.
pub mod metrics_result {
    /// The call succeeded.
    pub const SUCCESS: u32 = 0;
}

/// `envoy_dynamic_module_type_http_filter_stream_reset_reason`.
pub mod reset_reason {
    /// A local reset of the stream.
    pub const LOCAL_RESET: u32 = 0;
}

/// `envoy_dynamic_module_callback_log_v2`: logs `message` with a source location. Envoy 1.40
/// and later only, so it is looked up at load time (`super::optional`), never linked.
pub type LogV2 =
    unsafe extern "C" fn(level: LogLevel, message: Buffer, source_file: Buffer, source_line: u32);

/// The symbol name of [`LogV2`].
pub const LOG_V2: &std::ffi::CStr = c"envoy_dynamic_module_callback_log_v2";

/// `envoy_dynamic_module_callback_http_received_buffered_request_body`: true when this filter
/// receives a body that an earlier filter buffered (the received and buffered views are then the
/// same bytes). Envoy 1.38 and later.
pub type ReceivedBufferedRequestBody = unsafe extern "C" fn(filter: FilterEnvoyPtr) -> bool;

/// The symbol name of [`ReceivedBufferedRequestBody`].
pub const RECEIVED_BUFFERED_REQUEST_BODY: &std::ffi::CStr =
    c"envoy_dynamic_module_callback_http_received_buffered_request_body";

/// `envoy_dynamic_module_callback_http_get_buffer_limit`: the stream's buffer limit in bytes.
/// Envoy 1.38 and later.
pub type GetBufferLimit = unsafe extern "C" fn(filter: FilterEnvoyPtr) -> u64;

/// The symbol name of [`GetBufferLimit`].
pub const GET_BUFFER_LIMIT: &std::ffi::CStr =
    c"envoy_dynamic_module_callback_http_get_buffer_limit";

/// `envoy_dynamic_module_callback_http_set_buffer_limit`: sets the stream's buffer limit in
/// bytes. Envoy 1.38 and later.
pub type SetBufferLimit = unsafe extern "C" fn(filter: FilterEnvoyPtr, limit: u64);

/// The symbol name of [`SetBufferLimit`].
pub const SET_BUFFER_LIMIT: &std::ffi::CStr =
    c"envoy_dynamic_module_callback_http_set_buffer_limit";

/// `envoy_dynamic_module_callback_http_filter_reset_stream`: resets the stream, for failures after
/// the response has started. Envoy 1.38 and later.
pub type ResetStream = unsafe extern "C" fn(filter: FilterEnvoyPtr, reason: u32, details: Buffer);

/// The symbol name of [`ResetStream`].
pub const RESET_STREAM: &std::ffi::CStr = c"envoy_dynamic_module_callback_http_filter_reset_stream";

unsafe extern "C" {
    /// Finds a symbol in the process; `handle` null is glibc's `RTLD_DEFAULT`.
    pub fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;

    /// Logs `message` under Envoy's `dynamic_modules` logger, without a source location
    /// (every release from 1.37).
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: Buffer);

    /// Whether the `dynamic_modules` logger would print at `level`.
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    /// Reads value number `index` of header `key`; `count` receives how many values it has.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        result: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;

    /// How many entries (one per value) one header map has.
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: u32,
    ) -> usize;

    /// Writes every entry of one header map into `result`, which must have room for as many as
    /// `get_headers_size` reported; the views stay valid until the hook returns or the map
    /// changes.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: u32,
        result: *mut HttpHeader,
    ) -> bool;

    /// Sets (replacing every value) or, with a null value, removes header `key`.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    /// Removes `n` bytes from the front of one body view.
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter: FilterEnvoyPtr,
        body_type: u32,
        n: usize,
    ) -> bool;

    /// Appends `data` (copied) to one body view.
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter: FilterEnvoyPtr,
        body_type: u32,
        data: Buffer,
    ) -> bool;

    /// The per-route config object of the stream's current route (route first, then virtual
    /// host), as `per_route_config_new` returned it; null when there is none.
    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter: FilterEnvoyPtr,
    ) -> RouteConfigPtr;

    /// Makes Envoy select the route again.
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);

    /// Sets a string in the stream's dynamic metadata.
    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter: FilterEnvoyPtr,
        namespace: Buffer,
        key: Buffer,
        value: Buffer,
    );

    /// Bytes in one body view.
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter: FilterEnvoyPtr,
        body_type: u32,
    ) -> usize;

    /// Number of slices in one body view.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: FilterEnvoyPtr,
        body_type: u32,
    ) -> usize;

    /// Fills a caller-allocated array with the slices of one body view (no copy).
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: FilterEnvoyPtr,
        body_type: u32,
        out: *mut Buffer,
    ) -> bool;

    /// Sends a complete local reply; Envoy computes `content-length`.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *const HttpHeader,
        headers_len: usize,
        body: Buffer,
        details: Buffer,
    );

    /// Starts a streamed local reply; `headers` must include `:status`.
    pub fn envoy_dynamic_module_callback_http_send_response_headers(
        filter: FilterEnvoyPtr,
        headers: *const HttpHeader,
        headers_len: usize,
        end_stream: bool,
    );

    /// Sends a piece of a streamed local reply; `end_stream` completes it.
    pub fn envoy_dynamic_module_callback_http_send_response_data(
        filter: FilterEnvoyPtr,
        data: Buffer,
        end_stream: bool,
    );

    /// Creates a scheduler for the stream; the module owns it and deletes it once.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> *mut c_void;

    /// From any thread: runs `on_http_filter_scheduled(event_id)` on the stream's worker. A no-op
    /// once the stream is gone.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );

    /// From any thread, after the last commit: frees the scheduler.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);

    /// Defines a counter (in `config_new`); writes its id. Returns a metrics result, 0 on success.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: Buffer,
        label_names: *const Buffer,
        label_names_len: usize,
        id_out: *mut usize,
    ) -> u32;

    /// Defines a histogram (in `config_new`); writes its id. Returns a metrics result.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: *mut c_void,
        name: Buffer,
        label_names: *const Buffer,
        label_names_len: usize,
        id_out: *mut usize,
    ) -> u32;

    /// Adds to a counter; as many label values as it was defined with label names.
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;

    /// Records a histogram value.
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_values_len: usize,
        value: u64,
    ) -> u32;
}
