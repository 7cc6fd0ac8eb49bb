//! [`Host`] over Envoy's callbacks: the production side of the seam.

use std::cell::OnceCell;
use std::ffi::c_void;
use std::time::{Duration, Instant};

use crate::api::openai::ApiError;
use crate::filter::route_policy::RoutePolicy;
use crate::host::pacing::{Pacer, PacingHandle, Wakeup};
use crate::host::stats::{Counter, Histogram};
use crate::host::{Header, Host};

use super::ffi::{self, Buffer, FilterEnvoyPtr, HttpHeader};
use super::metrics::MetricIds;
use super::optional::optional;

/// A stream's Envoy scheduler, driven from the pacing thread: the one Envoy pointer that may
/// cross threads. Each wake commits an event; `finish` deletes the scheduler, exactly once.
struct EnvoyScheduler(*mut c_void);

// SAFETY: the scheduler pointer is the one Envoy pointer that may cross threads: its commit and
// delete are safe from any thread (docs/envoy-abi.md, "Threads"), and this type offers nothing
// else, so moving it to the pacing thread is sound.
unsafe impl Send for EnvoyScheduler {}

impl Wakeup for EnvoyScheduler {
    fn wake(&mut self, event: u64) {
        // SAFETY: `self.0` came from scheduler_new and is live until `finish` deletes it, which
        // consumes `self`; commit is safe from this (the pacing) thread, and a no-op once the
        // stream is gone.
        unsafe { ffi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event) }
    }

    fn finish(self: Box<Self>) {
        // SAFETY: `self.0` is live (deleted only here), this consumes its only owner so no commit
        // follows, and delete is safe from this (the pacing) thread.
        unsafe { ffi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

fn header_views(headers: &[Header<'_>]) -> Vec<HttpHeader> {
    headers
        .iter()
        .map(|&(name, value)| HttpHeader::of(name, value))
        .collect()
}

/// A stream's view of Envoy, valid for the duration of one hook call.
pub(super) struct EnvoyHost<'a> {
    filter: FilterEnvoyPtr,
    metrics: &'a MetricIds,
    /// The config's pacing timer; `None` where no config could be made (nothing is paced then).
    pacer: Option<&'a Pacer>,
    /// The request headers, read in one call at the first lookup of the hook: a request is
    /// asked for about ten headers, most of them absent, and each lookup through Envoy builds
    /// a lower-case key and scans its map. Cleared whenever llm-edge changes a request header.
    request_headers: OnceCell<Vec<HttpHeader>>,
}

impl<'a> EnvoyHost<'a> {
    /// A view for one hook call.
    ///
    /// # Safety
    /// `filter` must be the Envoy filter pointer passed to the hook being run, and the host must be
    /// used on that stream's worker thread and dropped before the hook returns. Every callback
    /// below relies on this: Envoy keeps `filter` valid for the whole call (a callback on a stream
    /// that ended meanwhile does nothing) and only ever on that thread.
    pub(super) unsafe fn new(
        filter: FilterEnvoyPtr,
        metrics: &'a MetricIds,
        pacer: Option<&'a Pacer>,
    ) -> Self {
        Self {
            filter,
            metrics,
            pacer,
            request_headers: OnceCell::new(),
        }
    }

    /// Answers OpenAI's 500, for a failure outside the filter's own logic.
    pub(super) fn send_internal_error(&mut self, details: &str) {
        let error = ApiError::internal();
        let json = [("content-type", "application/json")];
        self.send_response(error.status, &json, &error.to_json(), details);
    }

    /// The body views that together hold the request body seen so far.
    fn request_body_views(&self) -> &'static [u32] {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
        let received_is_buffered = optional()
            .received_buffered_request_body
            .is_some_and(|received_buffered| unsafe { received_buffered(self.filter) });
        if received_is_buffered {
            &[ffi::body::RECEIVED_REQUEST]
        } else {
            &[ffi::body::BUFFERED_REQUEST, ffi::body::RECEIVED_REQUEST]
        }
    }
}

/// The dynamic-metadata namespace of llm-edge's keys, as in `%DYNAMIC_METADATA(llm_edge:…)%`.
const METADATA_NAMESPACE: &str = "llm_edge";

impl EnvoyHost<'_> {
    fn header(&self, header_type: u32, name: &str) -> Option<&[u8]> {
        let mut value = Buffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // `name` is only read during the call, and both out-params point to live locals.
        let found = unsafe {
            ffi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                header_type,
                Buffer::of(name.as_bytes()),
                &mut value,
                0,
                &mut count,
            )
        };
        // SAFETY: the value points into Envoy's header map, which stays unchanged while `self` is
        // borrowed: every mutating call takes `&mut self`.
        found.then(|| unsafe { value.as_slice() })
    }

    /// Every entry of the request header map, read once per hook.
    fn request_headers(&self) -> &[HttpHeader] {
        self.request_headers.get_or_init(|| {
            let request = ffi::header_map::REQUEST;
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
            // the array has room for exactly the entries Envoy reported, and Envoy fills them all
            // before returning true.
            unsafe {
                let count =
                    ffi::envoy_dynamic_module_callback_http_get_headers_size(self.filter, request);
                let mut headers = vec![HttpHeader::EMPTY; count];
                if count > 0
                    && !ffi::envoy_dynamic_module_callback_http_get_headers(
                        self.filter,
                        request,
                        headers.as_mut_ptr(),
                    )
                {
                    headers.clear();
                }
                headers
            }
        })
    }

    /// Sets (replacing every value) or, with `None`, removes a header.
    fn set_header(&mut self, header_type: u32, name: &str, value: Option<&str>) {
        if header_type == ffi::header_map::REQUEST {
            self.request_headers.take();
        }
        let value = value.map_or(Buffer::EMPTY, |v| Buffer::of(v.as_bytes()));
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // Envoy copies name and value during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_set_header(
                self.filter,
                header_type,
                Buffer::of(name.as_bytes()),
                value,
            );
        }
    }

    /// Empties `views` and puts `data` in `into` (one of them).
    fn replace_views(&mut self, views: &[u32], into: u32, data: &[u8]) {
        for &view in views {
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
            // this drains no more than Envoy reports the view holds.
            unsafe {
                let size = ffi::envoy_dynamic_module_callback_http_get_body_size(self.filter, view);
                ffi::envoy_dynamic_module_callback_http_drain_body(self.filter, view, size);
            }
        }
        if !data.is_empty() {
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
            // Envoy copies the data during the call.
            unsafe {
                ffi::envoy_dynamic_module_callback_http_append_body(
                    self.filter,
                    into,
                    Buffer::of(data),
                );
            }
        }
    }

    fn read_views(&self, views: &[u32], out: &mut Vec<u8>) {
        for &view in views {
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
            // the array has exactly the number of slices Envoy reported, and the slices are
            // copied out before this hook returns or changes the body.
            unsafe {
                let count =
                    ffi::envoy_dynamic_module_callback_http_get_body_chunks_size(self.filter, view);
                if count == 0 {
                    continue;
                }
                let mut chunks = vec![Buffer::EMPTY; count];
                if ffi::envoy_dynamic_module_callback_http_get_body_chunks(
                    self.filter,
                    view,
                    chunks.as_mut_ptr(),
                ) {
                    for chunk in chunks {
                        out.extend_from_slice(chunk.as_slice());
                    }
                }
            }
        }
    }
}

impl Host for EnvoyHost<'_> {
    type RoutePolicy = RoutePolicy;

    fn route_policy(&self) -> Option<std::sync::Arc<RoutePolicy>> {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
        let policy = unsafe {
            ffi::envoy_dynamic_module_callback_get_most_specific_route_config(self.filter)
        };
        // SAFETY: the pointer is null or exactly what per_route_config_new returned (its type
        // says so). Envoy frees it only through per_route_config_destroy, on the main thread, and
        // this stream's route holds it during the hook; the stream then keeps its own `Arc`.
        unsafe { policy.borrow() }.map(std::sync::Arc::clone)
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.set_header(ffi::header_map::REQUEST, name, value);
    }

    fn set_response_header(&mut self, name: &str, value: Option<&str>) {
        self.set_header(ffi::header_map::RESPONSE, name, value);
    }

    fn response_body_len(&self) -> usize {
        [ffi::body::BUFFERED_RESPONSE, ffi::body::RECEIVED_RESPONSE]
            .iter()
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
            .map(|&view| unsafe {
                ffi::envoy_dynamic_module_callback_http_get_body_size(self.filter, view)
            })
            .sum()
    }

    fn read_response_body(&self, out: &mut Vec<u8>) {
        let views = [ffi::body::BUFFERED_RESPONSE, ffi::body::RECEIVED_RESPONSE];
        self.read_views(&views, out);
    }

    fn replace_response_body(&mut self, body: &[u8]) {
        let views = [ffi::body::BUFFERED_RESPONSE, ffi::body::RECEIVED_RESPONSE];
        self.replace_views(&views, ffi::body::RECEIVED_RESPONSE, body);
        self.set_response_header("content-length", Some(&body.len().to_string()));
    }

    fn replace_response_chunk(&mut self, data: &[u8]) {
        let view = ffi::body::RECEIVED_RESPONSE;
        self.replace_views(&[view], view, data);
    }

    fn replace_request_body(&mut self, body: &[u8]) {
        let views = self.request_body_views();
        self.replace_views(views, ffi::body::RECEIVED_REQUEST, body);
        self.set_request_header("content-length", Some(&body.len().to_string()));
    }

    fn clear_route_cache(&mut self) {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
        unsafe { ffi::envoy_dynamic_module_callback_http_clear_route_cache(self.filter) }
    }

    fn response_header(&self, name: &str) -> Option<&[u8]> {
        self.header(ffi::header_map::RESPONSE, name)
    }

    fn read_response_chunk(&self, out: &mut Vec<u8>) {
        self.read_views(&[ffi::body::RECEIVED_RESPONSE], out);
    }

    fn set_metadata(&mut self, key: &str, value: &str) {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // Envoy copies the three strings during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
                self.filter,
                Buffer::of(METADATA_NAMESPACE.as_bytes()),
                Buffer::of(key.as_bytes()),
                Buffer::of(value.as_bytes()),
            );
        }
    }

    fn count(&mut self, counter: Counter, labels: &[&str], value: u64) {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
        unsafe { self.metrics.count(self.filter, counter, labels, value) }
    }

    fn record(&mut self, histogram: Histogram, value: u64) {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
        unsafe { self.metrics.record(self.filter, histogram, value) }
    }

    fn request_header(&self, name: &str) -> Option<&[u8]> {
        // Envoy's keys are lower case, as llm-edge's names are; the first entry is the first value.
        self.request_headers().iter().find_map(|header| {
            // SAFETY: the views point into Envoy's request header map, valid until the hook
            // returns or the map changes; the returned slice borrows `self`, and every call that
            // changes the map takes `&mut self` and clears the snapshot first.
            let (key, value) = unsafe { (header.key(), header.value()) };
            (key == name.as_bytes()).then_some(value)
        })
    }

    fn request_header_count(&self, name: &str) -> usize {
        self.request_headers()
            .iter()
            // SAFETY: as in `request_header`; the key is compared before `self` is released.
            .filter(|header| unsafe { header.key() } == name.as_bytes())
            .count()
    }

    fn request_body_len(&self) -> usize {
        self.request_body_views()
            .iter()
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`).
            .map(|&view| unsafe {
                ffi::envoy_dynamic_module_callback_http_get_body_size(self.filter, view)
            })
            .sum()
    }

    fn read_request_body(&self, out: &mut Vec<u8>) {
        self.read_views(self.request_body_views(), out);
    }

    fn ensure_buffer_limit(&mut self, bytes: u64) {
        let (Some(get), Some(set)) = (optional().get_buffer_limit, optional().set_buffer_limit)
        else {
            return;
        };
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // `get` and `set` were found under their own names with these signatures (`optional`).
        unsafe {
            if get(self.filter) < bytes {
                set(self.filter, bytes);
            }
        }
    }

    fn send_response(&mut self, status: u16, headers: &[Header<'_>], body: &[u8], details: &str) {
        let headers = header_views(headers);
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // `headers` holds `headers.len()` views of live strings, and Envoy copies the headers,
        // the body and the details during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(status),
                headers.as_ptr(),
                headers.len(),
                Buffer::of(body),
                Buffer::of(details.as_bytes()),
            );
        }
    }

    fn send_response_headers(&mut self, status: u16, headers: &[Header<'_>]) {
        let status = status.to_string();
        let mut views = vec![HttpHeader::of(":status", &status)];
        views.extend(header_views(headers));
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // `views` holds `views.len()` views of live strings, copied during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_send_response_headers(
                self.filter,
                views.as_ptr(),
                views.len(),
                false,
            );
        }
    }

    fn send_response_data(&mut self, data: &[u8], end_stream: bool) {
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
        // Envoy copies the data during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_send_response_data(
                self.filter,
                Buffer::of(data),
                end_stream,
            );
        }
    }

    fn reset_stream(&mut self, details: &str) {
        match optional().reset_stream {
            // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`);
            // `reset` was found under its own name with this signature (`optional`), and Envoy
            // copies `details` during the call.
            Some(reset) => unsafe {
                reset(
                    self.filter,
                    ffi::reset_reason::LOCAL_RESET,
                    Buffer::of(details.as_bytes()),
                );
            },
            // Envoy 1.37 has no reset callback, but a local reply resets the stream itself once
            // response headers went downstream; before that, the client gets an OpenAI 500.
            None => self.send_internal_error(details),
        }
    }

    fn pace(&mut self, offsets: &[Duration]) -> Option<PacingHandle> {
        let pacer = self.pacer?;
        // SAFETY: `self.filter` is the running hook's filter pointer, on its worker (`new`),
        // where scheduler_new must be called; the scheduler it returns is ours to delete once.
        let scheduler =
            unsafe { ffi::envoy_dynamic_module_callback_http_filter_scheduler_new(self.filter) };
        if scheduler.is_null() {
            return None;
        }
        Some(pacer.pace(Box::new(EnvoyScheduler(scheduler)), Instant::now(), offsets))
    }
}
