//! The way through, in pass-through mode: hold a claimed request for its body, transform and
//! guard it, admit it under the budgets and send it on; then read its reply as it passes (JSON or
//! server-sent events) for its usage, guarding it when replies are guarded.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;

use serde_json::{Map, Value};

use super::accounting::{Accounting, Prompt};
use super::chaos::ChaosStream;
use super::claim::request_method;
use super::record::Recording;
use super::{Filter, Outcome, State, budgets};
use crate::api::json_read::{self, parse_value_noting_duplicates};
use crate::api::json_writer;
use crate::api::openai::{self, ApiError, parse_object_noting_duplicates};
use crate::api::routes::{Endpoint, Method};
use crate::api::sse::{Decide, EventFate, EventReader};
use crate::edge::guard;
use crate::host::stats::Counter;
use crate::host::{BodyStatus, HeadersStatus, Host};
use crate::translate::{Api, Dropped, Echo, Events, StreamTranslator, Translation};

/// The most response bytes kept to read `usage` from a JSON reply; larger replies are not
/// accounted (the reply itself still passes untouched).
const MAX_ACCOUNTED_BODY: usize = 16 * 1024 * 1024;

/// What the filter tracks of a forwarded request's reply.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// The reply's tokens, and the request's claim on the budgets until they are charged.
    pub(super) accounting: Accounting,
    /// What the reply is.
    pub(super) kind: ReplyKind,
    /// A copy of a JSON reply.
    pending: Vec<u8>,
    /// The reader of an event-stream reply.
    events: EventReader,
    /// llm-edge asked for a usage chunk the client did not: remove it from the stream.
    strip_usage_chunk: bool,
    /// Held-back stream text, when replies are guarded.
    delta_guard: guard::DeltaGuard,
    /// Streamed texts the guard dropped, as counted in stats so far.
    dropped_texts: u64,
    /// The reply's way back into the client's API, when the request was translated.
    translating: Option<Box<Translating>>,
    /// The exchange as it is recorded, when it is.
    pub(super) recording: Option<Box<Recording>>,
    /// The stream fault to break the reply with (`mock.faults.upstream`).
    pub(super) chaos: Option<Box<ChaosStream>>,
}

/// A translated request's reply, on its way back into the client's API.
#[derive(Debug)]
struct Translating {
    translation: Arc<Translation>,
    /// The client asked for a usage chunk at the end of its stream.
    include_usage: bool,
    /// The upstream's status, when it answered an error: its body goes to the client in the
    /// client's envelope.
    error_status: Option<u16>,
    /// The translator of a streamed reply, once the reply is known to be one.
    stream: Option<StreamTranslator>,
    /// The reader of the translated stream, which the guard reads as the client's own.
    client_events: EventReader,
    /// What the reply repeats of the request.
    echo: Echo,
}

impl Translating {
    /// The reply to a request sent on by `translation`, before its headers are in.
    fn new(translation: Arc<Translation>, include_usage: bool, echo: Echo) -> Self {
        Self {
            translation,
            include_usage,
            error_status: None,
            stream: None,
            // The guard decides on every event, however large.
            client_events: EventReader::new(true),
            echo,
        }
    }
}

/// What a forwarded reply is, as its content type says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyKind {
    #[default]
    Unknown,
    Json,
    EventStream,
}

impl ReplyKind {
    /// What a `content-type` says the reply is: its media type, whatever the case and the
    /// parameters; `+json` suffixes and `text/json` are JSON.
    fn of(content_type: Option<&[u8]>) -> Self {
        let content_type = content_type.unwrap_or_default();
        let media = content_type
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .to_ascii_lowercase();
        match media.as_slice() {
            b"text/event-stream" => Self::EventStream,
            b"application/json" | b"text/json" => Self::Json,
            media if media.ends_with(b"+json") && media.contains(&b'/') => Self::Json,
            _ => Self::Unknown,
        }
    }
}

/// A request body the mock path already ran the transforms and the guard over (a fixture miss
/// sent upstream): forwarded as they left it, so neither runs, nor counts, twice. Holds the body
/// they rewrote, `None` when they changed nothing.
pub(super) struct Prepared(pub(super) Option<Vec<u8>>);

impl Filter {
    /// Request headers of a claimed request in pass-through mode: hold a POST to a POST endpoint
    /// for its body; let everything else through untouched.
    pub(super) fn hold_for_forwarding(
        &mut self,
        host: &mut impl Host,
        endpoint: Endpoint,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let is_post = request_method(host) == Some(Method::Post);
        if endpoint.method() != Method::Post || !is_post || end_of_stream {
            self.state = State::PassThrough;
            return HeadersStatus::Continue;
        }
        let Some(limit) = self.body_limit_unless_declared_larger(host) else {
            return HeadersStatus::StopIteration;
        };
        host.ensure_buffer_limit(limit);
        self.state = State::Transforming(endpoint);
        HeadersStatus::StopIteration
    }

    /// The whole request body is in: transform it (unless `prepared` says it was), route on its
    /// model, and send it on.
    pub(super) fn forward(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        prepared: Option<Prepared>,
    ) -> BodyStatus {
        let mut body = Vec::with_capacity(host.request_body_len());
        host.read_request_body(&mut body);
        // Whether the transforms and the guard ran already, and rewrote the body.
        let prepared = prepared.map(|Prepared(rewritten)| match rewritten {
            Some(rewritten) => {
                body = rewritten;
                true
            }
            None => false,
        });
        // Nothing to transform or guard: the body is read without building its tree when it can
        // be, and passed on as it came or translated straight from its bytes.
        let as_sent =
            self.context.config.transform.is_empty() && !self.context.config.guard.is_active();
        // Recorded as the client sent it: nothing on these ways changes what the model is asked.
        let records = self.records();
        let quick = match as_sent {
            false => None,
            true if self.may_translate(endpoint) => {
                let translated = self.translate_plain(host, endpoint, &body);
                translated.map(|essentials| Essentials {
                    recorded_request: records.then(|| body.clone()),
                    ..essentials
                })
            }
            true => Essentials::read(&body, endpoint).map(|mut essentials| {
                essentials.recorded_request = records.then(|| body.clone());
                if essentials.strip_usage_chunk {
                    ask_for_usage_in_place(&mut body);
                    host.replace_request_body(&body);
                }
                essentials
            }),
        };
        let read = match quick {
            Some(essentials) => essentials,
            None => match self.rewrite(host, endpoint, &mut body, prepared) {
                Some(essentials) => essentials,
                None => return BodyStatus::StopIterationNoBuffer,
            },
        };
        let Essentials {
            model,
            max_tokens,
            strip_usage_chunk,
            translating,
            recorded_request,
        } = read;
        if let Err(error) = openai::check_model_name(&model) {
            self.send_error(host, &error, &[], Outcome::InvalidRequest);
            return BodyStatus::StopIterationNoBuffer;
        }
        let Ok(chaos) = self.upstream_faults(host, endpoint, &model) else {
            return BodyStatus::StopIterationNoBuffer;
        };
        let mut prompt = None;
        let mut claim = None;
        if !self.context.budgets.is_empty() && endpoint.is_charged() {
            let sent = Prompt {
                tokenizer: self.config().tokenizer,
                endpoint: endpoint.clone(),
                model: model.clone(),
                body,
            };
            // `admit` borrows `self` while the exact count reads the budgets: hold the config.
            let context = Arc::clone(&self.context);
            let budgets = &context.budgets;
            // Every token is at least one byte of the body: the body's length bounds the prompt
            // without counting it, which is only done when that bound does not fit.
            let bound = budgets.need(
                u64::try_from(sent.body.len()).unwrap_or(u64::MAX),
                max_tokens,
            );
            let exact = || budgets.need(sent.tokens(), max_tokens);
            match self.admit(host, &model, bound, exact) {
                Ok(admitted) => claim = admitted,
                Err(()) => return BodyStatus::StopIterationNoBuffer,
            }
            prompt = Some(sent);
        }
        let transform = &self.context.config.transform;
        if !model.is_empty() {
            host.set_request_header(&transform.model_header, Some(&model));
        }
        // Every reply is read for its usage, and guarded replies are rewritten: only a body in
        // no encoding can be (Envoy's compressor can still compress towards the client).
        host.set_request_header("accept-encoding", Some("identity"));
        host.clear_route_cache();
        let recording = match recorded_request {
            // A stream llm-edge is asked to break is no recording of the upstream.
            Some(_) if chaos.is_some() => {
                host.count(Counter::FixtureRecords, &["fault_injected"], 1);
                None
            }
            request => request
                .map(|request| Box::new(Recording::new(endpoint.label(), request, model.clone()))),
        };
        self.state = State::Proxying(Box::new(Forwarding {
            accounting: Accounting::new(model, claim, prompt),
            strip_usage_chunk,
            translating,
            recording,
            chaos,
            ..Forwarding::default()
        }));
        BodyStatus::Continue
    }

    /// Parses the body whole, transforms and guards it (unless `prepared`, which says whether
    /// that rewrote it), asks for usage where needed, and replaces the body when anything
    /// changed; `None` after answering an error.
    fn rewrite(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        body: &mut Vec<u8>,
        prepared: Option<bool>,
    ) -> Option<Essentials> {
        let (mut fields, duplicated) = match parse_object_noting_duplicates(body) {
            Ok(read) => read,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return None;
            }
        };
        let transform = &self.context.config.transform;
        let header = |name: &str| host.request_header(name);
        // A key given twice goes on once, as it was read, guarded and charged.
        let mut changed = duplicated;
        match prepared {
            Some(rewritten) => changed |= rewritten,
            None => {
                changed |= transform.apply(&mut fields, header);
                changed |= self.guard_request(host, &mut fields)?;
            }
        }
        // Recorded as the model is asked it, in the client's API: masked, not yet translated
        // (and without the usage chunk llm-edge may ask for below).
        let recorded_request = self.records().then(|| {
            if changed {
                let mut request = Vec::with_capacity(body.len());
                json_writer::write_object(&mut request, &fields);
                request
            } else {
                body.clone()
            }
        });
        let model = fields
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(translation) = self.translation(endpoint, model).cloned() {
            let essentials =
                self.translate_request(host, endpoint, translation, fields, body, changed);
            return essentials.map(|essentials| Essentials {
                recorded_request,
                ..essentials
            });
        }
        let strip_usage_chunk =
            reports_usage_only_when_asked(endpoint) && ask_for_usage(&mut fields);
        changed |= strip_usage_chunk;
        if changed {
            // Into the body's own buffer: about the size needed, so it is not grown step by step.
            body.clear();
            json_writer::write_object(body, &fields);
            host.replace_request_body(body);
        }
        let model = fields.get("model").and_then(Value::as_str);
        Some(Essentials {
            model: model.unwrap_or_default().to_owned(),
            max_tokens: budgets::max_tokens(endpoint, &fields),
            strip_usage_chunk,
            translating: None,
            recorded_request,
        })
    }

    /// Sends a plain conversation on in the upstream's API, translated straight from its bytes
    /// ([`TranslateConfig::plain_request`](crate::translate::TranslateConfig::plain_request));
    /// `None` when it is not one, or is not translated.
    fn translate_plain(
        &self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        body: &[u8],
    ) -> Option<Essentials> {
        let api = Api::of_endpoint(endpoint)?;
        let (translation, upstream) = self.context.config.translate.plain_request(api, body)?;
        host.replace_request_body(&upstream.body);
        self.send_to(host, translation);
        Some(Essentials {
            model: upstream.model,
            max_tokens: upstream.max_tokens,
            strip_usage_chunk: false,
            translating: Some(Box::new(Translating::new(
                translation.clone(),
                upstream.stream && upstream.include_usage,
                Echo::default(),
            ))),
            recorded_request: None,
        })
    }

    /// Sends the request to the translation's upstream path, with its headers.
    fn send_to(&self, host: &mut impl Host, translation: &Translation) {
        host.set_request_header(":path", Some(&translation.upstream_path));
        for (name, value) in &translation.headers {
            host.set_request_header(name, Some(value));
        }
    }

    /// Whether the config translates any of this endpoint's requests.
    fn may_translate(&self, endpoint: &Endpoint) -> bool {
        Api::of_endpoint(endpoint).is_some_and(|api| self.context.config.translate.translates(api))
    }

    /// The translation of this endpoint's requests for `model` (as the aliases resolved it).
    fn translation(&self, endpoint: &Endpoint, model: &str) -> Option<&Arc<Translation>> {
        let api = Api::of_endpoint(endpoint)?;
        self.context.config.translate.for_request(api, model)
    }

    /// Sends a transformed and guarded client request on in the upstream's API, to its path and
    /// with its headers; `body` is left holding the client's request, which budgets count (written
    /// again only when `changed`). `None` after refusing a request that cannot be translated
    /// without changing its meaning.
    fn translate_request(
        &mut self,
        host: &mut impl Host,
        endpoint: &Endpoint,
        translation: Arc<Translation>,
        fields: Map<String, Value>,
        body: &mut Vec<u8>,
        changed: bool,
    ) -> Option<Essentials> {
        let model = fields.get("model").and_then(Value::as_str);
        let model = model.unwrap_or_default().to_owned();
        let mut max_tokens = budgets::max_tokens(endpoint, &fields);
        if translation.upstream == Api::Messages {
            max_tokens = max_tokens.or(Some(translation.default_max_tokens.into()));
        }
        if changed {
            body.clear();
            json_writer::write_object(body, &fields);
        }
        let mut upstream = match translation.request(fields) {
            Ok(upstream) => upstream,
            Err(error) => {
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                return None;
            }
        };
        count_dropped(host, &translation, &mut upstream.dropped);
        let mut sent = Vec::with_capacity(body.len());
        json_writer::write_object(&mut sent, &upstream.body);
        host.replace_request_body(&sent);
        self.send_to(host, &translation);
        Some(Essentials {
            model,
            max_tokens,
            strip_usage_chunk: false,
            translating: Some(Box::new(Translating::new(
                translation,
                upstream.stream && upstream.include_usage,
                upstream.echo,
            ))),
            recorded_request: None,
        })
    }

    /// Guards a request body in place; `None` after refusing the request (a `reject` detector
    /// fired), else whether anything was masked. Detections are counted either way.
    pub(super) fn guard_request(
        &mut self,
        host: &mut impl Host,
        fields: &mut Map<String, Value>,
    ) -> Option<bool> {
        let context = &self.context;
        if !context.config.guard.is_active() {
            return Some(false);
        }
        let outcome = guard::guard_request(fields, &context.config.guard, &mut self.masker);
        self.count_detections(host);
        match outcome {
            Ok(masked) => Some(masked),
            Err(rejected) => {
                let error = ApiError::bad_request(
                    format!(
                        "The request was refused by llm-edge: it contains a value detected as \
                         '{}'.",
                        rejected.detector
                    ),
                    None,
                    Some("sensitive_data_detected"),
                );
                self.send_error(host, &error, &[], Outcome::InvalidRequest);
                None
            }
        }
    }

    /// One stat update per detector and action, however many values it found (the masker
    /// tallies them): a labelled update is a stat lookup in Envoy, far dearer than the addition.
    fn count_detections(&mut self, host: &mut impl Host) {
        for guard::Detection {
            detector,
            action,
            count,
        } in self.masker.detections.drain(..)
        {
            let action = match action {
                guard::Action::Mask => "mask",
                guard::Action::Reject => "reject",
                guard::Action::Monitor => "monitor",
            };
            host.count(Counter::Detections, &[&detector, action], count);
        }
    }

    /// Whether replies are rewritten: restored (reversible mode) or scanned.
    fn guards_replies(&self) -> bool {
        let guard = &self.context.config.guard;
        guard.is_active() && (guard.config().reversible || guard.config().responses)
    }

    /// Response headers of a forwarded request: learn what the reply is. A reply that promises
    /// a body llm-edge cannot read (an encoding it did not ask for) fails closed when it must be
    /// guarded or charged; one that ends with its headers is accounted at once.
    pub(super) fn proxied_reply_headers(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> HeadersStatus {
        let guards = self.guards_replies();
        self.record_reply_headers(host);
        let State::Proxying(forwarding) = &mut self.state else {
            return HeadersStatus::Continue;
        };
        forwarding.accounting.upstream_ok = host
            .response_header(":status")
            .is_some_and(|status| status.starts_with(b"2"));
        // llm-edge's budget is the one this client is held to: its headers replace the
        // upstream's.
        for (name, value) in &self.rate_headers {
            host.set_response_header(name, Some(value));
        }
        if end_of_stream {
            // An upstream error without a body still reaches the client in its API's envelope.
            let failed = !forwarding.accounting.upstream_ok;
            let translating = forwarding.translating.as_deref().filter(|_| failed);
            let error = translating.map(|t| t.translation.error(upstream_status(host), b""));
            self.record_usage(host);
            if let Some((status, body)) = error {
                let headers = self.reply_headers(&[("content-type", "application/json")]);
                host.send_response(status, &headers, &body, "llm_edge_upstream_error");
                return HeadersStatus::StopIteration;
            }
            return HeadersStatus::Continue;
        }
        let encoded = host
            .response_header("content-encoding")
            .is_some_and(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"identity"));
        let translating = forwarding.translating.is_some();
        if encoded && (guards || translating || forwarding.accounting.has_claim()) {
            self.refuse_reply(host, Unpassable::Encoded);
            return HeadersStatus::StopIteration;
        }
        forwarding.kind = ReplyKind::of(host.response_header("content-type"));
        if let Some(translating) = forwarding.translating.as_deref_mut() {
            if !forwarding.accounting.upstream_ok {
                // An error's body, whatever its type, is answered whole in the client's envelope.
                translating.error_status = Some(upstream_status(host));
                forwarding.kind = ReplyKind::Json;
            } else if forwarding.kind == ReplyKind::EventStream {
                let translation = &translating.translation;
                let (created, usage, echo) = (now(), translating.include_usage, &translating.echo);
                translating.stream = Some(translation.stream(created, usage, echo));
            }
        }
        let rewritten = forwarding.strip_usage_chunk || guards || translating;
        // A guarded stream lets no event pass unread, however large.
        forwarding.events = EventReader::new(guards);
        if forwarding.kind == ReplyKind::EventStream && rewritten {
            // The body changes length as it streams.
            host.set_response_header("content-length", None);
        }
        if forwarding.kind != ReplyKind::EventStream && (guards || translating) {
            // The whole reply is rewritten at its end: its content-length is set then, and
            // Envoy must hold as much of it as llm-edge reads.
            host.ensure_buffer_limit(self.context.config.max_response_body_bytes);
            return HeadersStatus::StopIteration;
        }
        HeadersStatus::Continue
    }

    /// Answers OpenAI's 502 in place of an upstream reply that cannot be passed on, charging the
    /// request as one the upstream answered.
    fn refuse_reply(&mut self, host: &mut impl Host, why: Unpassable) {
        self.charge_forwarded(host);
        let error = ApiError::bad_gateway(&why.reason());
        self.send_error(host, &error, &[], Outcome::BadGateway);
    }

    /// A response body chunk of a forwarded request: read usage as it passes; at the end, record
    /// it. The body passes on as it came, less a usage chunk llm-edge itself asked for.
    pub(super) fn proxied_reply_body(
        &mut self,
        host: &mut impl Host,
        end_of_stream: bool,
    ) -> BodyStatus {
        let guards = self.guards_replies();
        let State::Proxying(forwarding) = &mut self.state else {
            return BodyStatus::Continue;
        };
        let translating = forwarding.translating.is_some();
        if forwarding.kind != ReplyKind::EventStream && (guards || translating) {
            let limit = self.context.config.max_response_body_bytes;
            if host.response_body_len() as u64 > limit {
                self.refuse_reply(host, Unpassable::TooLarge(limit));
                return BodyStatus::StopIterationNoBuffer;
            }
            if !end_of_stream {
                return BodyStatus::StopIterationAndBuffer;
            }
            if translating {
                return self.translate_whole_reply(host, guards);
            }
            return self.guard_whole_reply(host);
        }
        let mut chunk = Vec::new();
        host.read_response_chunk(&mut chunk);
        if translating {
            self.translate_stream_chunk(host, &chunk, guards, end_of_stream);
            if end_of_stream {
                self.record_usage(host);
            }
            return BodyStatus::Continue;
        }
        match forwarding.kind {
            ReplyKind::Json => {
                if forwarding.pending.len() + chunk.len() <= MAX_ACCOUNTED_BODY {
                    forwarding.pending.extend_from_slice(&chunk);
                }
                if end_of_stream {
                    let reply = std::mem::take(&mut forwarding.pending);
                    forwarding.accounting.observe_reply(&reply);
                }
                self.record_reply_bytes(&chunk, false);
            }
            ReplyKind::EventStream => {
                let guard = guards.then_some(&self.context.config.guard);
                let strip = forwarding.strip_usage_chunk;
                let mut decider = StreamDecider {
                    strip,
                    guard,
                    masker: &mut self.masker,
                    delta_guard: &mut forwarding.delta_guard,
                    accounting: Some(&mut forwarding.accounting),
                };
                let emitted = decider.read(&mut forwarding.events, &chunk, end_of_stream);
                count_dropped_texts(host, &forwarding.delta_guard, &mut forwarding.dropped_texts);
                if strip || guards {
                    host.replace_response_chunk(&emitted);
                }
                self.count_detections(host);
                self.record_reply_bytes(if strip || guards { &emitted } else { &chunk }, true);
            }
            ReplyKind::Unknown => self.record_reply_bytes(&chunk, false),
        }
        if end_of_stream {
            self.record_usage(host);
        }
        BodyStatus::Continue
    }

    /// The whole of a translated reply that is not an event stream is in: a 2xx reply is
    /// translated into the client's API (refused when it is not JSON), an error into the client's
    /// envelope and status; then guarded as the client will read it.
    fn translate_whole_reply(&mut self, host: &mut impl Host, guards: bool) -> BodyStatus {
        let State::Proxying(forwarding) = &mut self.state else {
            return BodyStatus::Continue;
        };
        let Some(translating) = forwarding.translating.as_deref_mut() else {
            return BodyStatus::Continue;
        };
        let mut body = Vec::new();
        host.read_response_body(&mut body);
        let translation = &translating.translation;
        let plain = (translating.error_status.is_none() && !guards)
            .then(|| translation.plain_reply(&body, now()))
            .flatten();
        if let Some(plain) = plain {
            forwarding.accounting.observe_reply(&body);
            self.send_translated_reply(host, &plain);
            return BodyStatus::Continue;
        }
        let mut dropped = Dropped::default();
        let mut reply = if let Some(status) = translating.error_status {
            let (status, error) = translation.error(status, &body);
            host.set_response_header(":status", Some(&status.to_string()));
            serde_json::from_slice(&error).expect("an error envelope is JSON")
        } else {
            match parse_value_noting_duplicates(&body) {
                Ok((reply, _)) => {
                    forwarding.accounting.observe(&reply);
                    translation.reply(&reply, now(), &translating.echo, &mut dropped)
                }
                Err(_) => {
                    self.refuse_reply(host, Unpassable::NotJson);
                    return BodyStatus::StopIterationNoBuffer;
                }
            }
        };
        count_dropped(host, translation, &mut dropped);
        if guards {
            let context = &self.context;
            let guard = &context.config.guard;
            guard::guard_reply(&mut reply, guard, &mut self.masker);
        }
        body.clear();
        json_writer::write_value(&mut body, &reply);
        self.count_detections(host);
        self.send_translated_reply(host, &body);
        BodyStatus::Continue
    }

    /// Sends a whole reply translated into the client's API in place of the upstream's.
    fn send_translated_reply(&mut self, host: &mut impl Host, body: &[u8]) {
        host.set_response_header("content-type", Some("application/json"));
        host.replace_response_body(body);
        self.record_reply_bytes(body, false);
        self.record_usage(host);
    }

    /// A chunk of a translated stream: each upstream event completed in it is accounted as the
    /// upstream reported it, translated into the client's events and, when replies are guarded,
    /// guarded as the client will read them; only the client's events go on.
    fn translate_stream_chunk(
        &mut self,
        host: &mut impl Host,
        chunk: &[u8],
        guards: bool,
        end_of_stream: bool,
    ) {
        let State::Proxying(forwarding) = &mut self.state else {
            return;
        };
        let Some(translating) = forwarding.translating.as_deref_mut() else {
            return;
        };
        let Some(translator) = translating.stream.as_mut() else {
            return;
        };
        // A chat stream's `[DONE]` is an event to translate.
        forwarding.events.offer_done();
        let mut decider = TranslatingDecider {
            translator,
            accounting: &mut forwarding.accounting,
            out: Events::default(),
        };
        // Only the translated events go on: the upstream's own bytes (its comments, events
        // that are not JSON) have no place in the client's API.
        forwarding
            .events
            .read_with(chunk, end_of_stream, &mut decider);
        let mut emitted = decider.out.into_bytes();
        if guards {
            // Guarded as any stream in the client's API is, as the client will read it.
            let mut decider = StreamDecider {
                strip: false,
                guard: Some(&self.context.config.guard),
                masker: &mut self.masker,
                delta_guard: &mut forwarding.delta_guard,
                accounting: None,
            };
            emitted = decider.read(&mut translating.client_events, &emitted, end_of_stream);
            count_dropped_texts(host, &forwarding.delta_guard, &mut forwarding.dropped_texts);
        }
        if let Some(translator) = translating.stream.as_mut() {
            count_dropped(host, &translating.translation, translator.dropped());
        }
        host.replace_response_chunk(&emitted);
        self.count_detections(host);
        self.record_reply_bytes(&emitted, true);
    }

    /// The whole of a guarded reply that is not an event stream is in: guard it as JSON, or as
    /// text when it is not JSON; a body that is neither cannot be read, so it is refused.
    fn guard_whole_reply(&mut self, host: &mut impl Host) -> BodyStatus {
        let State::Proxying(forwarding) = &mut self.state else {
            return BodyStatus::Continue;
        };
        let mut body = Vec::new();
        host.read_response_body(&mut body);
        let context = &self.context;
        let guard = &context.config.guard;
        let parsed = parse_value_noting_duplicates(&body);
        if let Ok((mut reply, duplicated)) = parsed {
            forwarding.accounting.observe(&reply);
            // A reply with nothing to restore or mask goes on byte for byte as it came; one
            // with a key given twice goes on once, as it was read.
            let changed = guard::guard_reply(&mut reply, guard, &mut self.masker);
            if changed || duplicated {
                body.clear();
                json_writer::write_value(&mut body, &reply);
                host.replace_response_body(&body);
            }
            self.record_reply_bytes(&body, false);
        } else if forwarding.kind == ReplyKind::Json {
            // Said to be JSON, yet not JSON llm-edge reads (NaN, nesting past serde's limit, a
            // lone surrogate): a client's more lenient parser could decode what a text scan
            // misses, such as an escaped `\u0040`.
            self.refuse_reply(host, Unpassable::NotJson);
            return BodyStatus::StopIterationNoBuffer;
        } else if let Ok(text) = std::str::from_utf8(&body) {
            // Not JSON (an error page, plain text, a cut-off reply): every byte is still text
            // a value could hide in.
            let guarded = guard::guard_text(guard, &mut self.masker, text);
            if guarded != text {
                host.replace_response_body(guarded.as_bytes());
            }
            self.record_reply_bytes(guarded.as_bytes(), false);
        } else {
            self.refuse_reply(host, Unpassable::NeitherJsonNorText);
            return BodyStatus::StopIterationNoBuffer;
        }
        self.count_detections(host);
        self.record_usage(host);
        BodyStatus::Continue
    }
}

/// Why an upstream reply cannot be passed on to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unpassable {
    /// It came in a content encoding llm-edge did not ask for, so it cannot be read.
    Encoded,
    /// A guarded reply larger than `max_response_body_bytes` (given).
    TooLarge(u64),
    /// Said to be JSON, yet not JSON llm-edge reads.
    NotJson,
    /// Neither JSON nor UTF-8 text.
    NeitherJsonNorText,
}

impl Unpassable {
    /// The reason, as the 502's message gives it.
    fn reason(self) -> String {
        match self {
            Self::Encoded => "it came in a content-encoding llm-edge did not ask for".into(),
            Self::TooLarge(limit) => {
                format!("it is larger than max_response_body_bytes ({limit} bytes)")
            }
            Self::NotJson => "its body is not JSON llm-edge can read".into(),
            Self::NeitherJsonNorText => "its body is neither JSON nor text".into(),
        }
    }
}

/// Decides on each event of a stream in the client's API: reads its usage (unless it was read
/// as the upstream sent it, before translation), drops the usage chunk llm-edge asked for, and,
/// when replies are guarded, guards its text across events and every line that is not JSON data.
struct StreamDecider<'a> {
    strip: bool,
    /// The guard, when replies are guarded.
    guard: Option<&'a guard::Guard>,
    masker: &'a mut guard::Masker,
    delta_guard: &'a mut guard::DeltaGuard,
    accounting: Option<&'a mut Accounting>,
}

impl StreamDecider<'_> {
    /// Reads a piece of the stream with `reader` and returns what goes on in its place; at the
    /// end of the body, the text the guard still holds is released, so none is lost.
    fn read(&mut self, reader: &mut EventReader, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        if self.guard.is_some() {
            // Text held back is released before `[DONE]`, which clients stop reading at.
            reader.offer_done();
        }
        let mut emitted = reader.read_with(chunk, end_of_stream, &mut *self);
        if let Some(guard) = self.guard.filter(|_| end_of_stream) {
            // A body that ends without `[DONE]` (or a part's closing event) loses no text.
            let rest = self.delta_guard.finish(guard, self.masker);
            guard::append_final_events(&mut emitted, &rest);
        }
        emitted
    }
}

impl Decide for &mut StreamDecider<'_> {
    fn event(&mut self, event: &Value) -> EventFate {
        if let Some(accounting) = self.accounting.as_deref_mut() {
            accounting.observe_streamed(event);
        }
        if self.strip && is_usage_only(event) {
            return EventFate::Drop;
        }
        let Some(guard) = self.guard else {
            return EventFate::Keep;
        };
        let mut guarded = event.clone();
        let before = self
            .delta_guard
            .guard_event(&mut guarded, guard, self.masker);
        let fate = if guarded == *event {
            EventFate::Keep
        } else {
            EventFate::Replace(guarded)
        };
        if before.is_empty() {
            fate
        } else {
            EventFate::Prepend(guard::write_events(&before), Box::new(fate))
        }
    }

    fn guards_text(&self) -> bool {
        self.guard.is_some()
    }

    fn text(&mut self, line: &str) -> Option<String> {
        let guard = self.guard?;
        let guarded = guard::guard_text(guard, self.masker, line);
        (guarded != line).then_some(guarded)
    }
}

/// Decides on each event of a translated stream: accounts it as the upstream sent it, and
/// replaces it by the client events it becomes (guarded after, as the client's own stream).
struct TranslatingDecider<'a> {
    translator: &'a mut StreamTranslator,
    accounting: &'a mut Accounting,
    /// The client's events so far, in order.
    out: Events,
}

impl Decide for &mut TranslatingDecider<'_> {
    fn event(&mut self, event: &Value) -> EventFate {
        self.accounting.observe_streamed(event);
        self.translator.event(event, &mut self.out);
        EventFate::Drop
    }
}

/// Counts the streamed texts the guard dropped since last counted.
fn count_dropped_texts(host: &mut impl Host, delta_guard: &guard::DeltaGuard, counted: &mut u64) {
    let dropped = delta_guard.dropped() - *counted;
    if dropped > 0 {
        host.count(Counter::GuardDroppedTexts, &["part_cap"], dropped);
        *counted += dropped;
    }
}

/// Counts the fields a translation left out, by direction and field.
fn count_dropped(host: &mut impl Host, translation: &Translation, dropped: &mut Dropped) {
    for (field, count) in dropped.drain() {
        host.count(
            Counter::TranslationDropped,
            &[translation.label(), field],
            count,
        );
    }
}

/// The upstream reply's status (502 when it has none that reads as one).
fn upstream_status(host: &impl Host) -> u16 {
    let status = host.response_header(":status").unwrap_or_default();
    std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(502)
}

/// Seconds since the Unix epoch, for the `created` of a reply whose upstream API has none.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What forwarding needs to know of a request.
struct Essentials {
    /// The model the request is sent as.
    model: String,
    /// The most tokens the reply may take, if the request says.
    max_tokens: Option<u64>,
    /// llm-edge asked for a usage chunk: it leaves the stream before the client sees it.
    strip_usage_chunk: bool,
    /// How the reply goes back into the client's API, when the request was translated.
    translating: Option<Box<Translating>>,
    /// The request to record (its JSON), when exchanges are recorded.
    recorded_request: Option<Vec<u8>>,
}

/// The fields of a request body that forwarding reads, borrowed: nothing else is built.
#[derive(Deserialize)]
struct Borrowed<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl Essentials {
    /// Reads a body that nothing rewrites without building its JSON tree: far cheaper on a large
    /// prompt. A stream that must be asked for usage and has no `stream_options` comes back with
    /// `strip_usage_chunk` set, for [`ask_for_usage_in_place`]. `None` when the body needs the
    /// full path: invalid JSON or not an object (for the exact error), a field of an unexpected
    /// type or a duplicate (to keep the full path's reading of it), or `stream_options` without
    /// `include_usage: true` (a rewrite of an object).
    fn read(body: &[u8], endpoint: &Endpoint) -> Option<Self> {
        if !json_read::opens_object(body) {
            return None;
        }
        let fields: Borrowed<'_> = serde_json::from_slice(body).ok()?;
        let mut strip_usage_chunk = false;
        if reports_usage_only_when_asked(endpoint) && fields.stream == Some(true) {
            match fields.stream_options {
                None => strip_usage_chunk = true,
                Some(StreamOptions {
                    include_usage: Some(true),
                }) => {}
                Some(_) => return None,
            }
        }
        Some(Self {
            model: fields.model.unwrap_or_default().into_owned(),
            max_tokens: budgets::max_tokens_of(
                endpoint,
                [
                    fields.max_completion_tokens,
                    fields.max_tokens,
                    fields.max_output_tokens,
                ],
            ),
            strip_usage_chunk,
            translating: None,
            recorded_request: None,
        })
    }
}

/// Adds `"stream_options":{"include_usage":true}` to a JSON object's raw bytes, first, without
/// parsing it again. Only for an object that has no `stream_options` (see [`Essentials::read`]).
fn ask_for_usage_in_place(body: &mut Vec<u8>) {
    const ASK: &[u8] = br#""stream_options":{"include_usage":true}"#;
    let open = body
        .iter()
        .position(|&b| b == b'{')
        .expect("the body is a JSON object");
    let empty = body[open + 1..]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let separator: &[u8] = if empty { b"" } else { b"," };
    body.splice(open + 1..open + 1, ASK.iter().chain(separator).copied());
}

/// Chat and legacy completions report usage in a stream only when asked to.
fn reports_usage_only_when_asked(endpoint: &Endpoint) -> bool {
    matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
}

/// For a streamed chat or legacy completion that did not ask for usage, asks for it, so the
/// tokens can be accounted; returns whether it did (the usage chunk is then stripped).
fn ask_for_usage(fields: &mut Map<String, Value>) -> bool {
    let streamed = fields.get("stream").and_then(Value::as_bool) == Some(true);
    let asked = fields
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    if !streamed || asked {
        return false;
    }
    let options = fields
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    match options {
        Value::Object(options) => {
            options.insert("include_usage".into(), Value::Bool(true));
            true
        }
        _ => false,
    }
}

/// A usage-only chunk: `"choices": []` with a `usage` object.
fn is_usage_only(event: &Value) -> bool {
    event
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && event.get("usage").is_some_and(Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_can_be_dropped_or_rewritten_keeping_their_event_line() {
        let stream = b"event: x\ndata: {\"v\":1}\n\ndata: {\"choices\":[],\"usage\":{}}\n\n";
        let out = EventReader::default().read(stream, true, |v| {
            if is_usage_only(v) {
                EventFate::Drop
            } else {
                EventFate::Replace(json!({"v": 2}))
            }
        });
        assert_eq!(out, b"event: x\ndata: {\"v\":2}\n\n".to_vec());
    }

    #[test]
    fn untouched_bodies_are_read_without_a_tree_or_left_to_the_full_path() {
        let chat = Endpoint::ChatCompletions;
        let read = |body: &str, endpoint: &Endpoint| Essentials::read(body.as_bytes(), endpoint);
        let essentials = read(
            r#" {"model":"gpt-4o","max_tokens":null,"max_output_tokens":7,"messages":[],"x":{"y":[1]}}"#,
            &Endpoint::Responses,
        )
        .expect("a plain request");
        assert_eq!(
            (essentials.model.as_str(), essentials.max_tokens),
            ("gpt-4o", Some(7))
        );
        let asked = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
        assert!(!read(asked, &chat).unwrap().strip_usage_chunk);
        assert!(
            read(r#"{"model":"m","stream":true}"#, &chat)
                .unwrap()
                .strip_usage_chunk
        );
        // Anything the full path reads or rewrites its own way.
        for body in [
            r#"{"model":"m","stream":true,"stream_options":{}}"#,
            r#"["m", true]"#,
            r#"{"model":"m","max_tokens":1.5}"#,
            r#"{"model":7}"#,
            r#"{"model":"a","model":"b"}"#,
            "{",
        ] {
            assert!(read(body, &chat).is_none(), "{body}");
        }
        // Only chat and legacy completions need asking.
        let responses = read(r#"{"model":"m","stream":true}"#, &Endpoint::Responses);
        assert!(!responses.unwrap().strip_usage_chunk);
    }

    #[test]
    fn usage_is_asked_for_in_the_raw_bytes() {
        for (body, asked) in [
            (
                r#" {"model":"m","stream":true}"#,
                r#" {"stream_options":{"include_usage":true},"model":"m","stream":true}"#,
            ),
            ("{ }", r#"{"stream_options":{"include_usage":true} }"#),
        ] {
            let mut bytes = body.as_bytes().to_vec();
            ask_for_usage_in_place(&mut bytes);
            assert_eq!(String::from_utf8(bytes).unwrap(), asked);
            serde_json::from_str::<Value>(asked).expect("still JSON");
        }
    }

    #[test]
    fn usage_is_asked_for_only_when_a_stream_lacks_it() {
        let mut stream = json!({"model": "m", "stream": true, "messages": []});
        assert!(ask_for_usage(stream.as_object_mut().unwrap()));
        assert_eq!(stream["stream_options"]["include_usage"], true);
        let mut asked =
            json!({"stream": true, "messages": [], "stream_options": {"include_usage": true}});
        assert!(!ask_for_usage(asked.as_object_mut().unwrap()));
        let mut whole = json!({"messages": []});
        assert!(!ask_for_usage(whole.as_object_mut().unwrap()));
    }
}
