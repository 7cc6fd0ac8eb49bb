//! The seam between the per-stream filter logic and Envoy.
//!
//! [`Host`] is the small set of things a stream needs from its proxy. The ABI layer implements it
//! over Envoy's C callbacks; tests implement it in memory. Nothing here knows about Envoy's types.

use std::sync::Arc;
use std::time::Duration;

pub mod pacing;
pub mod stats;

use pacing::PacingHandle;
use stats::{Counter, Histogram};

/// What to do with the request headers after the filter has seen them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadersStatus {
    /// Pass the headers on to the next filter.
    Continue,
    /// Hold the headers: the filter will answer locally or release them later.
    StopIteration,
}

/// What to do with a request body chunk after the filter has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyStatus {
    /// Pass the chunk on to the next filter.
    Continue,
    /// Keep the chunk in Envoy's buffer and call again with the next one.
    StopIterationAndBuffer,
    /// Stop without buffering: the filter has already answered the request.
    StopIterationNoBuffer,
}

/// One response header, as a name and a value.
pub type Header<'a> = (&'a str, &'a str);

/// What a stream can ask of its proxy.
///
/// Borrowed results (header values) live only as long as the shared borrow of the host, so they
/// cannot be held across a call that changes the stream, exactly as Envoy requires.
pub trait Host {
    /// The first value of request header `name` (lower-case; pseudo-headers such as `:path` work).
    fn request_header(&self, name: &str) -> Option<&[u8]>;

    /// How many times request header `name` (lower-case) is given.
    fn request_header_count(&self, name: &str) -> usize;

    /// What the proxy keeps per route for llm-edge: the filter decides the type, the proxy only
    /// stores it with the route and hands it back.
    type RoutePolicy;

    /// The policy the request's route sets for llm-edge, if it sets one.
    fn route_policy(&self) -> Option<Arc<Self::RoutePolicy>>;

    /// The request body seen so far: the chunks Envoy buffered earlier plus the one just received.
    fn request_body_len(&self) -> usize;

    /// Appends the whole request body seen so far (buffered, then just received) to `out`.
    fn read_request_body(&self, out: &mut Vec<u8>);

    /// Raises Envoy's per-stream buffer limit to at least `bytes`, so that a body the filter
    /// accepts is never refused by Envoy first.
    fn ensure_buffer_limit(&mut self, bytes: u64);

    /// Sends a complete local reply; Envoy sets `content-length` itself. `details` shows up as
    /// `%RESPONSE_CODE_DETAILS%` in access logs.
    fn send_response(&mut self, status: u16, headers: &[Header<'_>], body: &[u8], details: &str);

    /// Starts a streamed local reply: status and headers go out now, the body in
    /// [`Host::send_response_data`] calls.
    fn send_response_headers(&mut self, status: u16, headers: &[Header<'_>]);

    /// Sends the next piece of a streamed local reply; `end_stream` completes it.
    fn send_response_data(&mut self, data: &[u8], end_stream: bool);

    /// Adds `value` to a counter; `labels` are its label values, in [`Counter::labels`] order.
    fn count(&mut self, counter: Counter, labels: &[&str], value: u64);

    /// Records one value in a histogram.
    fn record(&mut self, histogram: Histogram, value: u64);

    /// Sets request header `name` (replacing every value), or removes it with `None`.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);

    /// Replaces the whole request body seen so far, and its `content-length`. Only at the end of
    /// the body, while the request is held.
    fn replace_request_body(&mut self, body: &[u8]);

    /// Makes the proxy choose the route again, after a header it routes on changed.
    fn clear_route_cache(&mut self);

    /// The first value of response header `name`.
    fn response_header(&self, name: &str) -> Option<&[u8]>;

    /// Appends the response body chunk delivered with the current call to `out`.
    fn read_response_chunk(&self, out: &mut Vec<u8>);

    /// Sets response header `name` (replacing every value), or removes it with `None`.
    fn set_response_header(&mut self, name: &str, value: Option<&str>);

    /// The response body held so far: the chunks Envoy buffered plus the one just received.
    fn response_body_len(&self) -> usize;

    /// Appends the whole response body so far (buffered, then just received) to `out`.
    fn read_response_body(&self, out: &mut Vec<u8>);

    /// Replaces the whole response body held so far, and its `content-length`. Only at the end
    /// of the body, while the response headers are held.
    fn replace_response_body(&mut self, body: &[u8]);

    /// Replaces the response body chunk delivered with the current call.
    fn replace_response_chunk(&mut self, data: &[u8]);

    /// Sets `key` to `value` in the stream's dynamic metadata, under llm-edge's namespace.
    fn set_metadata(&mut self, key: &str, value: &str);

    /// Resets the stream: the client sees the connection (HTTP/1.1) or stream (HTTP/2) cut.
    fn reset_stream(&mut self, details: &str);

    /// Runs the filter's `on_scheduled(i)`, on this stream's own thread, once `offsets[i]` from
    /// now is due (the proxy's [`pacing::Pacer`] keeps the time). Dropping the handle cancels what
    /// is left; `None` means the proxy could not schedule anything.
    fn pace(&mut self, offsets: &[Duration]) -> Option<PacingHandle>;
}
