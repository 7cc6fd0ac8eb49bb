//! The exported hooks driven as Envoy drives them, over the stand-in callbacks of `fake_envoy`:
//! null and fake pointers, the lifecycle of configs and streams, destroys that arrive during a
//! hook, and every way a hook fails closed.

use std::rc::Rc;
use std::sync::{Arc, Weak};

use super::*;
use crate::abi::fake_envoy::{self, filter_pointer};

const NAME: &[u8] = b"llm_edge";
const MODELS: &[(&str, &str)] = &[(":method", "GET"), (":path", "/v1/models")];
const CHAT: &[(&str, &str)] = &[
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    ("content-type", "application/json"),
];
const CHAT_BODY: &[u8] = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;

/// What `config_new` made of `json` under our filter name.
fn config_new(json: &str) -> ConfigPtr {
    fake_envoy::reset(&[]);
    // SAFETY: both views are of live slices; a null config pointer is never dereferenced by the
    // fake's stat definitions.
    unsafe {
        envoy_dynamic_module_on_http_filter_config_new(
            std::ptr::null_mut(),
            Buffer::of(NAME),
            Buffer::of(json.as_bytes()),
        )
    }
}

/// The config behind a pointer `config_new` made, as a weak reference that dies with it.
fn watch(config: ConfigPtr) -> Weak<ModuleConfig> {
    // SAFETY: made by config_new and not destroyed yet.
    Arc::downgrade(unsafe { config.borrow() }.expect("a config"))
}

/// How many owners the config has: its pointer's reference plus one per live stream.
fn owners(config: &Weak<ModuleConfig>) -> usize {
    config.strong_count()
}

fn filter_new(config: ConfigPtr) -> StreamPtr {
    // SAFETY: a live config (or null) and a filter pointer the fake never dereferences.
    unsafe { envoy_dynamic_module_on_http_filter_new(config, filter_pointer()) }
}

fn destroy(stream: StreamPtr) {
    // SAFETY: made by filter_new (or null), destroyed once.
    unsafe { envoy_dynamic_module_on_http_filter_destroy(stream) }
}

fn config_destroy(config: ConfigPtr) {
    // SAFETY: made by config_new (or null), destroyed once; streams hold their own reference.
    unsafe { envoy_dynamic_module_on_http_filter_config_destroy(config) }
}

fn request_headers(stream: StreamPtr, end_of_stream: bool) -> ffi::HeadersStatus {
    // SAFETY: a live stream (or null) on this thread, and the fake's filter pointer.
    unsafe {
        envoy_dynamic_module_on_http_filter_request_headers(filter_pointer(), stream, end_of_stream)
    }
}

fn request_body(stream: StreamPtr) -> ffi::BodyStatus {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_request_body(filter_pointer(), stream, true) }
}

fn request_trailers(stream: StreamPtr) -> ffi::TrailersStatus {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_request_trailers(filter_pointer(), stream) }
}

fn response_headers(stream: StreamPtr) -> ffi::HeadersStatus {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_response_headers(filter_pointer(), stream, false) }
}

fn response_body(stream: StreamPtr) -> ffi::BodyStatus {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_response_body(filter_pointer(), stream, true) }
}

fn response_trailers(stream: StreamPtr) -> ffi::TrailersStatus {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_response_trailers(filter_pointer(), stream) }
}

fn stream_complete(stream: StreamPtr) {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_stream_complete(filter_pointer(), stream) }
}

fn scheduled(stream: StreamPtr) {
    // SAFETY: as in `request_headers`.
    unsafe { envoy_dynamic_module_on_http_filter_scheduled(filter_pointer(), stream, 0) }
}

/// Every hook after the request headers, in the order Envoy calls them.
fn every_later_hook(stream: StreamPtr) -> [u32; 5] {
    let statuses = [
        request_body(stream) as u32,
        request_trailers(stream) as u32,
        response_headers(stream) as u32,
        response_body(stream) as u32,
        response_trailers(stream) as u32,
    ];
    stream_complete(stream);
    scheduled(stream);
    statuses
}

/// A pass-through stream whose request went upstream: each later hook has work for Envoy.
fn proxied_stream(config: ConfigPtr) -> StreamPtr {
    let stream = filter_new(config);
    fake_envoy::reset_with_body(CHAT, CHAT_BODY);
    assert_eq!(
        request_headers(stream, false),
        ffi::HeadersStatus::StopIteration
    );
    assert_eq!(request_body(stream), ffi::BodyStatus::Continue);
    assert!(replies().is_empty(), "proxied, not answered");
    stream
}

fn poison(stream: StreamPtr) {
    // SAFETY: made by filter_new, on this thread, with no hook running.
    unsafe { borrow_stream(stream) }.unwrap().poisoned = true;
}

fn calls() -> Vec<&'static str> {
    fake_envoy::with(|fake| fake.calls.clone())
}

fn replies() -> Vec<fake_envoy::Reply> {
    fake_envoy::with(|fake| fake.replies.clone())
}

#[test]
fn a_config_that_is_not_json_is_refused_before_any_stat_is_defined() {
    assert!(config_new("{\"mode\": ").is_null());
    assert!(calls().is_empty());
}

#[test]
fn a_config_with_an_unknown_field_is_refused() {
    assert!(config_new(r#"{"no_such_field": 1}"#).is_null());
}

#[test]
fn a_config_for_another_filter_name_is_refused() {
    fake_envoy::reset(&[]);
    // SAFETY: both views are of live slices.
    let config = unsafe {
        envoy_dynamic_module_on_http_filter_config_new(
            std::ptr::null_mut(),
            Buffer::of(b"another_filter"),
            Buffer::of(b"{}"),
        )
    };
    assert!(config.is_null());
}

#[test]
fn a_config_lives_until_its_pointer_and_its_last_stream_are_gone() {
    let config = config_new("{}");
    assert!(!config.is_null());
    assert!(
        calls().contains(&"define_counter"),
        "stats are defined in config_new"
    );
    let watched = watch(config);
    assert_eq!(owners(&watched), 1);

    let first = filter_new(config);
    let second = filter_new(config);
    assert!(!first.is_null() && !second.is_null() && first != second);
    assert_eq!(owners(&watched), 3, "each stream shares the config");

    destroy(first);
    assert_eq!(owners(&watched), 2);
    config_destroy(config);
    assert_eq!(owners(&watched), 1, "a stream still holds the config");
    destroy(second);
    assert!(watched.upgrade().is_none(), "the last owner freed it");
}

#[test]
fn null_config_and_stream_pointers_are_no_ops() {
    fake_envoy::reset(&[]);
    assert!(filter_new(ConfigPtr::NULL).is_null());
    destroy(StreamPtr::NULL);
    config_destroy(ConfigPtr::NULL);
    // SAFETY: null is a pointer Envoy may pass.
    unsafe { envoy_dynamic_module_on_http_filter_per_route_config_destroy(RouteConfigPtr::NULL) };
    assert!(calls().is_empty());
}

#[test]
fn a_per_route_config_is_made_checked_and_freed() {
    let new = |json: &str| {
        // SAFETY: both views are of live slices.
        unsafe {
            envoy_dynamic_module_on_http_filter_per_route_config_new(
                Buffer::of(NAME),
                Buffer::of(json.as_bytes()),
            )
        }
    };
    assert!(new("[").is_null());
    assert!(new("{}").is_null(), "exactly one policy is required");
    let policy = new(r#"{"disabled": true}"#);
    // SAFETY: made just above, not destroyed yet.
    let watched = Arc::downgrade(unsafe { policy.borrow() }.expect("a policy"));
    assert!(matches!(*watched.upgrade().unwrap(), RoutePolicy::Disabled));
    // SAFETY: made by per_route_config_new, destroyed once.
    unsafe { envoy_dynamic_module_on_http_filter_per_route_config_destroy(policy) };
    assert!(watched.upgrade().is_none());
}

#[test]
fn a_null_stream_answers_openai_500_on_request_headers_and_nothing_after() {
    // Envoy before 1.40 calls every hook with a null stream when filter_new failed.
    fake_envoy::reset(CHAT);
    assert_eq!(
        request_headers(StreamPtr::NULL, false),
        ffi::HeadersStatus::StopIteration
    );
    let replies = replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].filter, filter_pointer());
    assert_eq!(replies[0].status, 500);
    assert_eq!(replies[0].details, FILTER_INIT_FAILED_DETAILS);
    let error: serde_json::Value = serde_json::from_slice(&replies[0].body).unwrap();
    assert_eq!(error["error"]["type"], "server_error");

    fake_envoy::reset(&[]);
    let [body, trailers, headers, response_body, response_trailers] =
        every_later_hook(StreamPtr::NULL);
    assert_eq!(body, ffi::BodyStatus::StopIterationNoBuffer as u32);
    assert_eq!(trailers, ffi::TrailersStatus::StopIteration as u32);
    assert_eq!(headers, ffi::HeadersStatus::Continue as u32);
    assert_eq!(response_body, ffi::BodyStatus::Continue as u32);
    assert_eq!(response_trailers, ffi::TrailersStatus::Continue as u32);
    assert!(
        calls().is_empty(),
        "no callback for a stream that does not exist"
    );
}

#[test]
fn a_poisoned_stream_stays_stopped_and_reaches_no_callback() {
    let config = config_new(r#"{"mode": "passthrough"}"#);
    let (poisoned, twin) = (proxied_stream(config), proxied_stream(config));
    poison(poisoned);
    fake_envoy::reset(&[]);
    response_headers(twin);
    response_body(twin);
    assert!(
        !calls().is_empty(),
        "a healthy stream's reply reaches Envoy"
    );

    fake_envoy::reset_with_body(CHAT, CHAT_BODY);
    assert_eq!(
        request_headers(poisoned, false),
        ffi::HeadersStatus::StopIteration
    );
    let [body, trailers, headers, response_body, response_trailers] = every_later_hook(poisoned);
    assert_eq!(body, ffi::BodyStatus::StopIterationNoBuffer as u32);
    assert_eq!(trailers, ffi::TrailersStatus::StopIteration as u32);
    assert_eq!(headers, ffi::HeadersStatus::Continue as u32);
    assert_eq!(response_body, ffi::BodyStatus::Continue as u32);
    assert_eq!(response_trailers, ffi::TrailersStatus::Continue as u32);
    assert!(
        calls().is_empty(),
        "a poisoned stream only lets Envoy finish it"
    );

    destroy(poisoned);
    destroy(twin);
    config_destroy(config);
}

#[test]
fn a_live_stream_is_answered_through_its_hook_filter_pointer() {
    let config = config_new("{}");
    let stream = filter_new(config);
    fake_envoy::reset(MODELS);
    assert_eq!(
        request_headers(stream, true),
        ffi::HeadersStatus::StopIteration
    );
    let replies = replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(
        (replies[0].filter, replies[0].status),
        (filter_pointer(), 200)
    );
    destroy(stream);
    config_destroy(config);
}

#[test]
fn a_destroy_during_a_hook_frees_the_stream_only_once_the_hook_returns() {
    let config = config_new("{}");
    let watched = watch(config);
    let stream = filter_new(config);
    fake_envoy::reset(MODELS);
    // As Envoy before 1.40 may: ending the reply destroys the stream inside send_response.
    let owners_right_after_destroy = Rc::new(Cell::new(0));
    let seen = Rc::clone(&owners_right_after_destroy);
    let during = Weak::clone(&watched);
    fake_envoy::with(|fake| {
        fake.during_reply = Some(Box::new(move || {
            destroy(stream);
            seen.set(owners(&during));
        }));
    });

    assert_eq!(
        request_headers(stream, true),
        ffi::HeadersStatus::StopIteration
    );
    assert_eq!(
        owners_right_after_destroy.get(),
        2,
        "still alive inside the hook"
    );
    assert_eq!(owners(&watched), 1, "freed when the hook returned");
    config_destroy(config);
}

#[test]
fn a_destroy_of_another_stream_during_a_hook_frees_it_at_once() {
    let config = config_new("{}");
    let watched = watch(config);
    let (running, other) = (filter_new(config), filter_new(config));
    let _running = Running::enter(running);
    destroy(other);
    assert_eq!(owners(&watched), 2);
    drop(_running);
    assert_eq!(owners(&watched), 2, "the running stream was not destroyed");
    destroy(running);
    config_destroy(config);
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_panic_in_a_hook_answers_openai_500_and_poisons_the_stream() {
    let config = config_new("{}");
    let stream = filter_new(config);
    fake_envoy::reset(&[
        (":method", "GET"),
        (":path", "/v1/models"),
        ("x-llm-edge-test-panic", "request_headers"),
    ]);
    assert_eq!(
        request_headers(stream, true),
        ffi::HeadersStatus::StopIteration
    );
    let replies = replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].status, 500);
    // SAFETY: made above, on this thread, with no hook running.
    assert!(unsafe { borrow_stream(stream) }.unwrap().poisoned);

    fake_envoy::reset(&[]);
    assert_eq!(request_body(stream), ffi::BodyStatus::StopIterationNoBuffer);
    assert!(calls().is_empty());
    destroy(stream);
    config_destroy(config);
}

#[test]
fn the_statuses_carry_the_values_envoy_reads() {
    let values = [
        ffi::HeadersStatus::Continue as u32,
        ffi::HeadersStatus::StopIteration as u32,
        ffi::BodyStatus::Continue as u32,
        ffi::BodyStatus::StopIterationAndBuffer as u32,
        ffi::BodyStatus::StopIterationNoBuffer as u32,
        ffi::TrailersStatus::Continue as u32,
        ffi::TrailersStatus::StopIteration as u32,
    ];
    assert_eq!(values, [0, 1, 0, 1, 3, 0, 1]);
}
