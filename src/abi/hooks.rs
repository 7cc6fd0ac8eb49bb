//! The hooks Envoy calls: one-line trampolines into [`Filter`], each behind a panic guard.
//!
//! Failing closed, by phase:
//! - request path: answer OpenAI's 500, or reset the stream if a reply already started;
//! - response path: reset the stream, since headers may already be downstream;
//! - config creation: refuse the config (null);
//! - cleanup: log only.
//!
//! After a panic the stream is poisoned: later hooks do nothing but let Envoy finish it.
//!
//! Every release refuses a module that lacks any of these hooks, including the ones llm-edge does
//! not use yet (callouts, HTTP streams, watermarks); those are no-ops (docs/envoy-abi.md, "Hooks
//! llm-edge exports").

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::config::FilterConfig;
use crate::filter::route_policy::RoutePolicy;
use crate::filter::{Filter, FilterContext, TrailersStatus};
use crate::host::pacing::Pacer;
use crate::host::{BodyStatus, HeadersStatus, Host};
use crate::version::{ENVOY_ABI_VERSION, ENVOY_VERSION};

use super::envoy_host::EnvoyHost;
use super::ffi::{self, Buffer, FilterEnvoyPtr, HttpHeader, RouteConfigPtr};
use super::logger;
use super::metrics::MetricIds;
use super::optional::optional;
use super::owned::Owned;

/// The only `filter_name` this module serves (an empty name means the same).
const FILTER_NAME: &str = "llm_edge";

/// `%RESPONSE_CODE_DETAILS%` of a stream reset after a contained panic.
const PANIC_RESET_DETAILS: &str = "llm_edge_internal_error";

/// `%RESPONSE_CODE_DETAILS%` of the 500 answered when `filter_new` failed (Envoy before 1.40;
/// 1.40 answers itself, with `dynamic_module_filter_init_failed`).
const FILTER_INIT_FAILED_DETAILS: &str = "llm_edge_filter_init_failed";

/// What Envoy's config pointer owns, shared by `Arc` with every stream.
pub(super) struct ModuleConfig {
    context: Arc<FilterContext>,
    metrics: MetricIds,
    /// The one timer thread that paces this config's replies (its routes' policies included).
    pacer: Pacer,
}

/// What a stream's module pointer points to.
pub(super) struct Stream {
    filter: Filter,
    config: Arc<ModuleConfig>,
    poisoned: bool,
}

// Every worker reads the config, and every stream on a route its policy, at the same time.
const _: () = {
    const fn shared_across_workers<T: Send + Sync>() {}
    shared_across_workers::<ModuleConfig>();
    shared_across_workers::<RoutePolicy>();
};

/// Envoy's config pointer: owns one reference to the config, which every stream shares.
pub(super) type ConfigPtr = Owned<Arc<ModuleConfig>>;

/// Envoy's per-stream module pointer.
pub(super) type StreamPtr = Owned<Stream>;

thread_local! {
    /// The stream whose hook is running on this worker, and whether Envoy asked to destroy it
    /// meanwhile.
    static RUNNING: Cell<(StreamPtr, bool)> = const { Cell::new((StreamPtr::NULL, false)) };
}

/// Marks a stream's hook as running. Envoy before 1.40 may destroy a stream from inside a call
/// the hook makes (ending or resetting the reply): the destroy hook then only notes it, and the
/// stream is freed here, once the hook no longer uses it.
struct Running {
    outer: (StreamPtr, bool),
}

impl Running {
    fn enter(stream: StreamPtr) -> Self {
        Self {
            outer: RUNNING.replace((stream, false)),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let (stream, destroyed) = RUNNING.replace(self.outer);
        if destroyed {
            // SAFETY: `stream` came from filter_new and Envoy destroyed it while its hook ran, so
            // this is its one take and Envoy passes it no more; the hook's borrow of it has ended,
            // since each hook creates its guard first and the guard drops last.
            free_stream(unsafe { stream.take() });
        }
    }
}

/// The stream behind a hook's module pointer, or `None` for the null pointer Envoy before 1.40
/// passes when filter_new failed.
///
/// # Safety
/// `stream` must be the module pointer Envoy passed to the running hook, on the stream's worker
/// thread, with that hook's [`Running`] guard entered, and the borrow must end before the guard
/// drops. Envoy runs one stream's hooks one at a time on its worker, never one inside another
/// (docs/envoy-abi.md, "Threads"), and a destroy arriving meanwhile is deferred by the guard: the
/// stream is live and borrowed by nothing else.
unsafe fn borrow_stream<'a>(stream: StreamPtr) -> Option<&'a mut Stream> {
    // SAFETY: per the contract: made by filter_new (its type says so), live, and not aliased.
    unsafe { stream.borrow_mut() }
}

fn free_stream(stream: Option<Box<Stream>>) {
    if catch_unwind(AssertUnwindSafe(|| drop(stream))).is_err() {
        log::error!("llm_edge: panic while freeing a stream");
    }
}

/// The NUL-terminated ABI version string; `build.rs` takes it from the pin file.
static ABI_VERSION: &str = concat!(env!("LLM_EDGE_ENVOY_ABI_VERSION"), "\0");
/// The ABI string Envoy 1.38 and 1.39 expect. They warn about any other and load the module
/// anyway, but a matching string keeps their logs clean.
static ABI_VERSION_BEFORE_1_40: &str = "v0.1.0\0";
/// The ABI string Envoy 1.37 expects: a hash of its header, checked strictly (any other string
/// and it refuses the module, with a misleading "not found in any search path").
static ABI_VERSION_1_37: &str =
    "4dae397a7c9ff0238d318d57ea656ce8b3fbff595787dcd7ee2ff5b79c9fe10f\0";

/// Called once per process, before any config: installs logging and names our ABI version.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    match catch_unwind(logger::install) {
        Ok(()) => {
            log::debug!("llm_edge: built for Envoy {ENVOY_VERSION} (ABI {ENVOY_ABI_VERSION})");
            // log_v2 arrived with 1.40, the pinned release, and the buffer-limit pair with 1.38.
            let callbacks = optional();
            let abi = if callbacks.log_v2.is_some() {
                ABI_VERSION
            } else if callbacks.get_buffer_limit.is_some() {
                ABI_VERSION_BEFORE_1_40
            } else {
                ABI_VERSION_1_37
            };
            abi.as_ptr().cast()
        }
        Err(_) => std::ptr::null(),
    }
}

/// Whether a config names this filter (or none); logs the refusal of any other `what` name.
fn is_our_filter_name(name: &[u8], what: &str) -> bool {
    if name.is_empty() || name == FILTER_NAME.as_bytes() {
        return true;
    }
    log::error!(
        "llm_edge: invalid {what} {:?}; allowed: \"{FILTER_NAME}\"",
        String::from_utf8_lossy(name)
    );
    false
}

/// Parses the `filter_config` once, on the main thread; null refuses the config.
///
/// # Safety
/// `name` and `config` must be valid byte views for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    name: Buffer,
    config: Buffer,
) -> ConfigPtr {
    let created = catch_unwind(|| {
        // SAFETY: Envoy's views of `filter_name` and `filter_config` stay valid for this call,
        // on the main thread, and nothing borrowed from them outlives it.
        let (name, config) = unsafe { (name.as_slice(), config.as_slice()) };
        if !is_our_filter_name(name, "filter_name") {
            return ConfigPtr::NULL;
        }
        match FilterConfig::from_json(config) {
            Ok(config) => {
                log::info!(
                    "llm_edge: filter config accepted: mode {:?}, OpenAI API under {:?}",
                    config.mode,
                    config.api_base_path
                );
                // SAFETY: `config_envoy` is the config pointer of this very config_new call, on
                // the main thread, where stats must be defined.
                let metrics = unsafe { MetricIds::define(config_envoy) };
                let context = Arc::new(FilterContext::new(config));
                Owned::into_raw(Arc::new(ModuleConfig {
                    context,
                    metrics,
                    pacer: Pacer::default(),
                }))
            }
            Err(error) => {
                log::error!("llm_edge: {error}");
                ConfigPtr::NULL
            }
        }
    });
    created.unwrap_or(ConfigPtr::NULL)
}

/// Parses a route's or virtual host's `typed_per_filter_config`, once, on the main thread; null
/// refuses the config.
///
/// # Safety
/// `name` and `config` must be valid byte views for the duration of the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: Buffer,
    config: Buffer,
) -> RouteConfigPtr {
    let created = catch_unwind(|| {
        // SAFETY: Envoy's views of the per-route `filter_name` and `filter_config` stay valid
        // for this call, on the main thread, and nothing borrowed from them outlives it.
        let (name, config) = unsafe { (name.as_slice(), config.as_slice()) };
        if !is_our_filter_name(name, "per-route filter_name") {
            return RouteConfigPtr::NULL;
        }
        match RoutePolicy::from_json(config) {
            Ok(policy) => Owned::into_raw(Arc::new(policy)),
            Err(error) => {
                let (field, message) = (&error.field, &error.message);
                log::error!("llm_edge: invalid per-route config: field `{field}`: {message}");
                RouteConfigPtr::NULL
            }
        }
    });
    created.unwrap_or(RouteConfigPtr::NULL)
}

/// Frees a per-route config made by `per_route_config_new`.
///
/// # Safety
/// `config` must come from `envoy_dynamic_module_on_http_filter_per_route_config_new`, once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    config: RouteConfigPtr,
) {
    // SAFETY: `config` is null or came from per_route_config_new (its type says so); Envoy
    // destroys it once, on the main thread, after the last stream whose route held it.
    let policy = unsafe { config.take() };
    if catch_unwind(AssertUnwindSafe(|| drop(policy))).is_err() {
        log::error!("llm_edge: panic while freeing a per-route config");
    }
}

/// Frees a config made by `config_new`, on the main thread, after its streams are gone; this
/// stops and joins its pacing thread.
///
/// # Safety
/// `config` must come from `envoy_dynamic_module_on_http_filter_config_new`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ConfigPtr) {
    // SAFETY: `config` is null or came from config_new (its type says so); Envoy destroys it
    // once, on the main thread, after its last stream; streams hold their own `Arc`.
    let config = unsafe { config.take() };
    if catch_unwind(AssertUnwindSafe(|| drop(config))).is_err() {
        log::error!("llm_edge: panic while freeing a filter config");
    }
}

/// Creates the per-stream filter on the stream's worker thread.
///
/// # Safety
/// `config` must be a live pointer returned by `config_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigPtr,
    _filter_envoy: FilterEnvoyPtr,
) -> StreamPtr {
    // SAFETY: `config` is null or came from config_new (its type says so), and Envoy destroys it
    // only after its streams, so it is live here on the worker; it is only read (`ModuleConfig`
    // is `Sync`).
    let Some(config) = (unsafe { config.borrow() }) else {
        return StreamPtr::NULL;
    };
    // The closure only clones two `Arc`s of a config it never changes: a panic cannot leave it
    // half-updated (the recorder's thread handle is what makes the config not `RefUnwindSafe`).
    let created = catch_unwind(AssertUnwindSafe(|| {
        inject_filter_new_panic();
        let stream = Stream {
            filter: Filter::new(Arc::clone(&config.context)),
            config: Arc::clone(config),
            poisoned: false,
        };
        Owned::into_raw(stream)
    }));
    // A null stream pointer makes Envoy 1.40 answer 500 without calling any other hook.
    created.unwrap_or(StreamPtr::NULL)
}

/// Frees the per-stream filter.
///
/// # Safety
/// `stream` must come from `envoy_dynamic_module_on_http_filter_new`, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: StreamPtr) {
    if stream.is_null() {
        return;
    }
    let inside_its_hook = RUNNING.with(|running| {
        let (running_stream, _) = running.get();
        running_stream == stream && {
            running.set((stream, true));
            true
        }
    });
    if !inside_its_hook {
        // SAFETY: `stream` came from filter_new (its type says so), no hook of it is running on
        // this worker (checked just above), and Envoy destroys a stream once and then passes it
        // no more.
        free_stream(unsafe { stream.take() });
    }
}

/// The stream hooks that run filter logic, by the names that logs and the fault-injection header
/// use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    RequestHeaders,
    RequestBody,
    RequestTrailers,
    ResponseHeaders,
    ResponseBody,
    ResponseTrailers,
    StreamComplete,
    Scheduled,
}

impl Hook {
    /// The hook's name, as in `envoy_dynamic_module_on_http_filter_<name>`.
    const fn name(self) -> &'static str {
        match self {
            Self::RequestHeaders => "request_headers",
            Self::RequestBody => "request_body",
            Self::RequestTrailers => "request_trailers",
            Self::ResponseHeaders => "response_headers",
            Self::ResponseBody => "response_body",
            Self::ResponseTrailers => "response_trailers",
            Self::StreamComplete => "stream_complete",
            Self::Scheduled => "scheduled",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a response-path hook returns where it has nothing to do: let Envoy carry on.
trait ContinueStatus: Copy {
    const CONTINUE: Self;
}

impl ContinueStatus for ffi::HeadersStatus {
    const CONTINUE: Self = Self::Continue;
}

impl ContinueStatus for ffi::BodyStatus {
    const CONTINUE: Self = Self::Continue;
}

impl ContinueStatus for ffi::TrailersStatus {
    const CONTINUE: Self = Self::Continue;
}

/// Runs a request-path hook. A panic answers 500 (or resets a stream whose reply started).
///
/// # Safety
/// `filter_envoy` and `stream` must be the live pointers of the current hook call.
unsafe fn on_request<S>(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    hook: Hook,
    stop: S,
    run: impl FnOnce(&mut Filter, &mut EnvoyHost) -> S,
) -> S {
    let _running = Running::enter(stream);
    // SAFETY: `stream` is this hook's module pointer, on its worker (this fn's contract), its
    // guard is entered just above, and the borrow is last used before `_running` drops.
    let Some(stream) = (unsafe { borrow_stream(stream) }) else {
        // Envoy before 1.40 runs the hooks with a null stream when filter_new failed, where 1.40
        // answers 500 itself: fail closed the same way, with OpenAI's 500, rather than let the
        // request through unfiltered.
        if hook == Hook::RequestHeaders {
            let metrics = MetricIds::default();
            // SAFETY: `filter_envoy` is this hook's filter pointer, on its worker (this fn's
            // contract), and `host` drops before the hook returns.
            let mut host = unsafe { EnvoyHost::new(filter_envoy, &metrics, None) };
            host.send_internal_error(FILTER_INIT_FAILED_DETAILS);
        }
        return stop;
    };
    if stream.poisoned {
        return stop;
    }
    // SAFETY: `filter_envoy` is this hook's filter pointer, on its worker (this fn's contract),
    // and `host` drops before the hook returns.
    let mut host = unsafe {
        EnvoyHost::new(
            filter_envoy,
            &stream.config.metrics,
            Some(&stream.config.pacer),
        )
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        inject_panic(&host, hook);
        run(&mut stream.filter, &mut host)
    }));
    match outcome {
        Ok(status) => status,
        Err(_) => {
            log::error!("llm_edge: panic in {hook}; failing the request closed");
            stream.poisoned = true;
            let answered = stream.filter.has_answered();
            let sent = !answered
                && catch_unwind(AssertUnwindSafe(|| stream.filter.fail_closed(&mut host))).is_ok();
            if !sent {
                host.reset_stream(PANIC_RESET_DETAILS);
            }
            stop
        }
    }
}

/// Runs a response-path hook. A panic resets the stream: headers may already be downstream.
/// The hook then returns `after_panic`: for a body chunk, drop it, so that nothing the hook did
/// not finish reading passes, whether Envoy resets or (1.37) answers a local reply instead.
///
/// # Safety
/// `filter_envoy` and `stream` must be the live pointers of the current hook call.
unsafe fn on_response<S: ContinueStatus>(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    hook: Hook,
    after_panic: S,
    run: impl FnOnce(&mut Filter, &mut EnvoyHost) -> S,
) -> S {
    let _running = Running::enter(stream);
    // SAFETY: `stream` is this hook's module pointer, on its worker (this fn's contract), its
    // guard is entered just above, and the borrow is last used before `_running` drops.
    let Some(stream) = (unsafe { borrow_stream(stream) }) else {
        return S::CONTINUE;
    };
    if stream.poisoned {
        return S::CONTINUE;
    }
    // SAFETY: `filter_envoy` is this hook's filter pointer, on its worker (this fn's contract),
    // and `host` drops before the hook returns.
    let mut host = unsafe {
        EnvoyHost::new(
            filter_envoy,
            &stream.config.metrics,
            Some(&stream.config.pacer),
        )
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        inject_panic(&host, hook);
        run(&mut stream.filter, &mut host)
    }));
    match outcome {
        Ok(status) => status,
        Err(_) => {
            log::error!("llm_edge: panic in {hook}; resetting the stream");
            stream.poisoned = true;
            host.reset_stream(PANIC_RESET_DETAILS);
            after_panic
        }
    }
}

/// Test-only: panics in the hook named by the `x-llm-edge-test-panic` request header, so that the
/// end-to-end tests can prove every hook contains panics. Only the `fault-injection` build has it.
#[cfg(feature = "fault-injection")]
fn inject_panic(host: &EnvoyHost, hook: Hook) {
    use crate::host::Host;
    if host.request_header("x-llm-edge-test-panic") == Some(hook.name().as_bytes()) {
        panic!("injected panic in {hook}");
    }
}

#[cfg(not(feature = "fault-injection"))]
fn inject_panic(_host: &EnvoyHost, _hook: Hook) {}

/// Test-only: makes every `filter_new` fail when Envoy runs with this variable set, to prove the
/// null-stream path. Only the `fault-injection` build has it.
#[cfg(feature = "fault-injection")]
fn inject_filter_new_panic() {
    if std::env::var_os("LLM_EDGE_TEST_PANIC_IN_FILTER_NEW").is_some() {
        panic!("injected panic in filter_new");
    }
}

#[cfg(not(feature = "fault-injection"))]
fn inject_filter_new_panic() {}

fn headers_status(status: HeadersStatus) -> ffi::HeadersStatus {
    match status {
        HeadersStatus::Continue => ffi::HeadersStatus::Continue,
        HeadersStatus::StopIteration => ffi::HeadersStatus::StopIteration,
    }
}

fn body_status(status: BodyStatus) -> ffi::BodyStatus {
    match status {
        BodyStatus::Continue => ffi::BodyStatus::Continue,
        BodyStatus::StopIterationAndBuffer => ffi::BodyStatus::StopIterationAndBuffer,
        BodyStatus::StopIterationNoBuffer => ffi::BodyStatus::StopIterationNoBuffer,
    }
}

fn trailers_status(status: TrailersStatus) -> ffi::TrailersStatus {
    match status {
        TrailersStatus::Continue => ffi::TrailersStatus::Continue,
        TrailersStatus::StopIteration => ffi::TrailersStatus::StopIteration,
    }
}

/// Request headers.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    end_of_stream: bool,
) -> ffi::HeadersStatus {
    let stop = ffi::HeadersStatus::StopIteration;
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_request`'s contract.
    unsafe {
        on_request(
            filter_envoy,
            stream,
            Hook::RequestHeaders,
            stop,
            |filter, host| headers_status(filter.on_request_headers(host, end_of_stream)),
        )
    }
}

/// A request body chunk.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    end_of_stream: bool,
) -> ffi::BodyStatus {
    let stop = ffi::BodyStatus::StopIterationNoBuffer;
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_request`'s contract.
    unsafe {
        on_request(
            filter_envoy,
            stream,
            Hook::RequestBody,
            stop,
            |filter, host| body_status(filter.on_request_body(host, end_of_stream)),
        )
    }
}

/// Request trailers.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
) -> ffi::TrailersStatus {
    let stop = ffi::TrailersStatus::StopIteration;
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_request`'s contract.
    unsafe {
        on_request(
            filter_envoy,
            stream,
            Hook::RequestTrailers,
            stop,
            |filter, host| trailers_status(filter.on_request_trailers(host)),
        )
    }
}

/// Response headers: inspected in pass-through mode, else passed untouched.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    end_of_stream: bool,
) -> ffi::HeadersStatus {
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_response`'s contract.
    unsafe {
        let after_panic = ffi::HeadersStatus::Continue;
        on_response(
            filter_envoy,
            stream,
            Hook::ResponseHeaders,
            after_panic,
            |filter, host| headers_status(filter.on_response_headers(host, end_of_stream)),
        )
    }
}

/// Response body: accounted in pass-through mode, else passed untouched.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    end_of_stream: bool,
) -> ffi::BodyStatus {
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_response`'s contract.
    unsafe {
        let after_panic = ffi::BodyStatus::StopIterationNoBuffer;
        on_response(
            filter_envoy,
            stream,
            Hook::ResponseBody,
            after_panic,
            |filter, host| body_status(filter.on_response_body(host, end_of_stream)),
        )
    }
}

/// Response trailers: passed through untouched.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
) -> ffi::TrailersStatus {
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_response`'s contract.
    unsafe {
        let after_panic = ffi::TrailersStatus::Continue;
        on_response(
            filter_envoy,
            stream,
            Hook::ResponseTrailers,
            after_panic,
            |_, _| ffi::TrailersStatus::Continue,
        )
    }
}

/// The stream is finished (before access logging and destroy): a reply that never ended is
/// charged to its budgets now. A panic here has nothing left to fail: it is logged.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
) {
    let _running = Running::enter(stream);
    // SAFETY: `stream` is this hook's module pointer, on its worker (Envoy's contract for every
    // stream hook), its guard is entered just above, and the borrow is last used before
    // `_running` drops.
    let Some(stream) = (unsafe { borrow_stream(stream) }) else {
        return;
    };
    if stream.poisoned {
        return;
    }
    // SAFETY: `filter_envoy` is this hook's filter pointer, on its worker (Envoy's contract for
    // every stream hook), and `host` drops before the hook returns.
    let mut host = unsafe {
        EnvoyHost::new(
            filter_envoy,
            &stream.config.metrics,
            Some(&stream.config.pacer),
        )
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        inject_panic(&host, Hook::StreamComplete);
        stream.filter.on_stream_complete(&mut host);
    }));
    if outcome.is_err() {
        log::error!("llm_edge: panic in {}", Hook::StreamComplete);
        stream.poisoned = true;
    }
}

/// A paced reply's step is due (committed by the pacing thread), on the stream's worker.
///
/// # Safety
/// `filter_envoy` and `stream` must be Envoy's pointers for one live stream, on its worker thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: FilterEnvoyPtr,
    stream: StreamPtr,
    event_id: u64,
) {
    // Nothing to return: a panic answers 500 if nothing went out yet, else resets the stream.
    // SAFETY: Envoy calls this hook with the stream's own two pointers, on its worker thread:
    // exactly `on_request`'s contract.
    unsafe {
        on_request(filter_envoy, stream, Hook::Scheduled, (), |filter, host| {
            filter.on_scheduled(host, event_id);
        });
    }
}

/// An HTTP callout finished. llm-edge starts none.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _callout_id: u64,
    _result: u32,
    _headers: *const HttpHeader,
    _headers_len: usize,
    _body_chunks: *const Buffer,
    _body_chunks_len: usize,
) {
}

/// Headers of an HTTP stream started by the module. llm-edge starts none.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _stream_id: u64,
    _headers: *const HttpHeader,
    _headers_len: usize,
    _end_stream: bool,
) {
}

/// Data of an HTTP stream started by the module. llm-edge starts none.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _stream_id: u64,
    _data: *const Buffer,
    _data_len: usize,
    _end_stream: bool,
) {
}

/// Trailers of an HTTP stream started by the module. llm-edge starts none.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _stream_id: u64,
    _trailers: *const HttpHeader,
    _trailers_len: usize,
) {
}

/// End of an HTTP stream started by the module. llm-edge starts none.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _stream_id: u64,
) {
}

/// Reset of an HTTP stream started by the module. llm-edge starts none.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
    _stream_id: u64,
    _reason: u32,
) {
}

/// The client's write buffer filled up. Local replies are written whole, so nothing to pause.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
) {
}

/// The client's write buffer drained.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _filter_envoy: FilterEnvoyPtr,
    _stream: StreamPtr,
) {
}

#[cfg(test)]
mod tests;
