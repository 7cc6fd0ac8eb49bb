//! Test-only stand-ins for the Envoy callbacks `ffi` declares, so that `cargo test` links and the
//! unit tests can drive the exported hooks the way Envoy would.
//!
//! In the module, Envoy resolves these symbols when it loads it; a test binary has no Envoy, so
//! each callback is defined here, under the same name and signature, over one [`Fake`] per test
//! thread. The fake serves the request a test sets, answers no other lookup, and records
//! the callbacks the module makes and the replies it sends.

use std::cell::RefCell;
use std::ffi::c_void;

use super::ffi::{Buffer, FilterEnvoyPtr, HttpHeader, LogLevel, RouteConfigPtr, body, header_map};

/// A complete local reply the module sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    /// The filter pointer it was sent on.
    pub filter: FilterEnvoyPtr,
    pub status: u32,
    pub body: Vec<u8>,
    pub details: String,
}

/// What Envoy holds for the test running on this thread.
#[derive(Default)]
pub(super) struct Fake {
    /// The request headers the module reads (`get_headers`).
    pub request_headers: Vec<(&'static str, &'static str)>,
    /// The request body, all of it in the received view (one chunk).
    pub request_body: &'static [u8],
    /// The name of every callback the module made, in order (the loggers excepted).
    pub calls: Vec<&'static str>,
    /// Every `send_response`.
    pub replies: Vec<Reply>,
    /// Run inside the next `send_response`, as Envoy would (before 1.40, ending a reply from a
    /// hook can destroy the stream right there).
    pub during_reply: Option<Box<dyn FnOnce()>>,
    next_stat_id: usize,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// Resets this thread's fake and sets the request headers the module will read.
pub(super) fn reset(request_headers: &[(&'static str, &'static str)]) {
    FAKE.set(Fake {
        request_headers: request_headers.to_vec(),
        ..Fake::default()
    });
}

/// Resets this thread's fake with a request body too.
pub(super) fn reset_with_body(
    request_headers: &[(&'static str, &'static str)],
    request_body: &'static [u8],
) {
    reset(request_headers);
    with(|fake| fake.request_body = request_body);
}

/// Reads or changes this thread's fake.
pub(super) fn with<R>(f: impl FnOnce(&mut Fake) -> R) -> R {
    FAKE.with_borrow_mut(f)
}

fn record(call: &'static str) {
    with(|fake| fake.calls.push(call));
}

/// A non-null filter pointer that the fake never dereferences.
pub(super) fn filter_pointer() -> FilterEnvoyPtr {
    std::ptr::NonNull::<c_void>::dangling().as_ptr()
}

/// Logging, enabled for no level: the unit tests install no logger, so nothing reaches these.
#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_log(_level: LogLevel, _message: Buffer) {}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: LogLevel) -> bool {
    false
}

/// No single header is found (the module reads only response headers this way).
///
/// # Safety
/// As Envoy's: `count` is null or writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    _filter: FilterEnvoyPtr,
    _header_type: u32,
    _key: Buffer,
    _result: *mut Buffer,
    _index: usize,
    count: *mut usize,
) -> bool {
    record("get_header");
    // SAFETY: the module passes null or a pointer to a live local (see `EnvoyHost::header`).
    if let Some(count) = unsafe { count.as_mut() } {
        *count = 0;
    }
    false
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    _filter: FilterEnvoyPtr,
    header_type: u32,
) -> usize {
    record("get_headers_size");
    if header_type == header_map::REQUEST {
        with(|fake| fake.request_headers.len())
    } else {
        0
    }
}

/// Writes the request headers, as views of static strings.
///
/// # Safety
/// As Envoy's: `result` has room for as many entries as `get_headers_size` reported.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    _filter: FilterEnvoyPtr,
    header_type: u32,
    result: *mut HttpHeader,
) -> bool {
    record("get_headers");
    if header_type != header_map::REQUEST {
        return false;
    }
    with(|fake| {
        for (i, &(name, value)) in fake.request_headers.iter().enumerate() {
            // SAFETY: the caller sized `result` for every entry get_headers_size reported, and the
            // headers cannot change between the two calls (the fake is this thread's).
            unsafe { result.add(i).write(HttpHeader::of(name, value)) };
        }
    });
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_set_header(
    _filter: FilterEnvoyPtr,
    _header_type: u32,
    _key: Buffer,
    _value: Buffer,
) -> bool {
    record("set_header");
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_drain_body(
    _filter: FilterEnvoyPtr,
    _body_type: u32,
    _n: usize,
) -> bool {
    record("drain_body");
    true
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_append_body(
    _filter: FilterEnvoyPtr,
    _body_type: u32,
    _data: Buffer,
) -> bool {
    record("append_body");
    true
}

/// No route has a per-route config.
#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_get_most_specific_route_config(
    _filter: FilterEnvoyPtr,
) -> RouteConfigPtr {
    record("get_most_specific_route_config");
    RouteConfigPtr::NULL
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_clear_route_cache(_filter: FilterEnvoyPtr) {
    record("clear_route_cache");
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
    _filter: FilterEnvoyPtr,
    _namespace: Buffer,
    _key: Buffer,
    _value: Buffer,
) {
    record("set_dynamic_metadata_string");
}

/// The one chunk of a body view: the request body in the received view, else nothing.
fn body_view(body_type: u32) -> &'static [u8] {
    if body_type == body::RECEIVED_REQUEST {
        with(|fake| fake.request_body)
    } else {
        &[]
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_body_size(
    _filter: FilterEnvoyPtr,
    body_type: u32,
) -> usize {
    record("get_body_size");
    body_view(body_type).len()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(
    _filter: FilterEnvoyPtr,
    body_type: u32,
) -> usize {
    record("get_body_chunks_size");
    usize::from(!body_view(body_type).is_empty())
}

/// # Safety
/// As Envoy's: `out` has room for as many chunks as `get_body_chunks_size` reported.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
    _filter: FilterEnvoyPtr,
    body_type: u32,
    out: *mut Buffer,
) -> bool {
    record("get_body_chunks");
    let chunk = body_view(body_type);
    if !chunk.is_empty() {
        // SAFETY: the caller sized `out` for the one chunk get_body_chunks_size reported.
        unsafe { out.write(Buffer::of(chunk)) };
    }
    true
}

/// Records the reply, then runs [`Fake::during_reply`].
///
/// # Safety
/// As Envoy's: `body` and `details` are valid views for the call.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_send_response(
    filter: FilterEnvoyPtr,
    status: u32,
    _headers: *const HttpHeader,
    _headers_len: usize,
    body: Buffer,
    details: Buffer,
) {
    record("send_response");
    // SAFETY: the module's views of its own body and details, live for this call.
    let (body, details) = unsafe { (body.as_slice().to_vec(), details.as_slice()) };
    let reply = Reply {
        filter,
        status,
        body,
        details: String::from_utf8_lossy(details).into_owned(),
    };
    // Taken out first: what runs may call back into the fake.
    let during_reply = with(|fake| {
        fake.replies.push(reply);
        fake.during_reply.take()
    });
    if let Some(during_reply) = during_reply {
        during_reply();
    }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_send_response_headers(
    _filter: FilterEnvoyPtr,
    _headers: *const HttpHeader,
    _headers_len: usize,
    _end_stream: bool,
) {
    record("send_response_headers");
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_send_response_data(
    _filter: FilterEnvoyPtr,
    _data: Buffer,
    _end_stream: bool,
) {
    record("send_response_data");
}

/// No scheduler: nothing is paced.
#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_new(
    _filter: FilterEnvoyPtr,
) -> *mut c_void {
    record("scheduler_new");
    std::ptr::null_mut()
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
    _scheduler: *mut c_void,
    _event_id: u64,
) {
    record("scheduler_commit");
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_scheduler_delete(_scheduler: *mut c_void) {
    record("scheduler_delete");
}

/// Writes the next stat id.
///
/// # Safety
/// As Envoy's: `id_out` is writable.
unsafe fn define(id_out: *mut usize) -> u32 {
    let id = with(|fake| {
        fake.next_stat_id += 1;
        fake.next_stat_id
    });
    // SAFETY: the module passes a pointer to a live local (see `metrics::define_with`).
    unsafe { id_out.write(id) };
    super::ffi::metrics_result::SUCCESS
}

/// # Safety
/// As Envoy's: `id_out` is writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    _config: *mut c_void,
    _name: Buffer,
    _label_names: *const Buffer,
    _label_names_len: usize,
    id_out: *mut usize,
) -> u32 {
    record("define_counter");
    // SAFETY: `id_out` is writable (this fn's contract; the module passes a live local).
    unsafe { define(id_out) }
}

/// # Safety
/// As Envoy's: `id_out` is writable.
#[unsafe(no_mangle)]
unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
    _config: *mut c_void,
    _name: Buffer,
    _label_names: *const Buffer,
    _label_names_len: usize,
    id_out: *mut usize,
) -> u32 {
    record("define_histogram");
    // SAFETY: `id_out` is writable (this fn's contract; the module passes a live local).
    unsafe { define(id_out) }
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_increment_counter(
    _filter: FilterEnvoyPtr,
    _id: usize,
    _label_values: *const Buffer,
    _label_values_len: usize,
    _value: u64,
) -> u32 {
    record("increment_counter");
    super::ffi::metrics_result::SUCCESS
}

#[unsafe(no_mangle)]
extern "C" fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
    _filter: FilterEnvoyPtr,
    _id: usize,
    _label_values: *const Buffer,
    _label_values_len: usize,
    _value: u64,
) -> u32 {
    record("record_histogram_value");
    super::ffi::metrics_result::SUCCESS
}
