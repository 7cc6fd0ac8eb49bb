//! [`Host`] over Envoy's callbacks: the production side of the seam.

use crate::host::{Header, Host};

use super::ffi::{self, Buffer, FilterEnvoyPtr, HttpHeader};

/// A stream's view of Envoy, valid for the duration of one hook call.
pub(super) struct EnvoyHost {
    filter: FilterEnvoyPtr,
}

impl EnvoyHost {
    /// # Safety
    /// `filter` must be the live Envoy filter pointer of the hook being run, on its worker thread.
    pub(super) unsafe fn new(filter: FilterEnvoyPtr) -> Self {
        Self { filter }
    }

    /// The body views that together hold the request body seen so far.
    fn request_body_views(&self) -> &'static [u32] {
        // SAFETY: `self.filter` is live for this hook (see `new`).
        if unsafe {
            ffi::envoy_dynamic_module_callback_http_received_buffered_request_body(self.filter)
        } {
            &[ffi::body::RECEIVED_REQUEST]
        } else {
            &[ffi::body::BUFFERED_REQUEST, ffi::body::RECEIVED_REQUEST]
        }
    }

    /// Resets the stream, for a failure after the response has started.
    pub(super) fn reset_stream(&mut self, details: &str) {
        // SAFETY: live filter pointer; `details` is copied during the call.
        unsafe {
            ffi::envoy_dynamic_module_callback_http_filter_reset_stream(
                self.filter,
                ffi::reset_reason::LOCAL_RESET,
                Buffer::of(details.as_bytes()),
            );
        }
    }
}

impl Host for EnvoyHost {
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        let mut value = Buffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: live filter pointer; `name` is read during the call; out-params are valid.
        let found = unsafe {
            ffi::envoy_dynamic_module_callback_http_get_header(
                self.filter,
                ffi::header_map::REQUEST,
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

    fn request_body_len(&self) -> usize {
        self.request_body_views()
            .iter()
            // SAFETY: live filter pointer.
            .map(|&view| unsafe {
                ffi::envoy_dynamic_module_callback_http_get_body_size(self.filter, view)
            })
            .sum()
    }

    fn read_request_body(&self, out: &mut Vec<u8>) {
        for &view in self.request_body_views() {
            // SAFETY: live filter pointer; the array has exactly the number of slices Envoy
            // reported, and the slices are read before this hook returns or changes the body.
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

    fn ensure_buffer_limit(&mut self, bytes: u64) {
        // SAFETY: live filter pointer.
        unsafe {
            if ffi::envoy_dynamic_module_callback_http_get_buffer_limit(self.filter) < bytes {
                ffi::envoy_dynamic_module_callback_http_set_buffer_limit(self.filter, bytes);
            }
        }
    }

    fn send_response(&mut self, status: u16, headers: &[Header<'_>], body: &[u8], details: &str) {
        let headers: Vec<HttpHeader> = headers
            .iter()
            .map(|&(name, value)| HttpHeader::of(name, value))
            .collect();
        // SAFETY: live filter pointer; headers, body and details are copied during the call.
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
}
