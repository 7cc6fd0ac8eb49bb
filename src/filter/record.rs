//! Recording, in record mode (and for fixture misses sent upstream with `record_misses`): the
//! request as the upstream was asked it and the reply as the client got it, with their times,
//! become one fixture line handed to the background writer. No worker writes a file, and no
//! value the guard masked reaches one: the request is recorded masked, and a reply a reversible
//! guard restored is masked again first.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::{Filter, State};
use crate::api::sse::EventSplitter;
use crate::fixtures::format::{self, LineOut, OneLineJson, RecordedEvent, RecordedUsage, VERSION};
use crate::fixtures::writer::Submitted;
use crate::host::Host;
use crate::host::stats::Counter;

/// An exchange being recorded, until its reply ends.
#[derive(Debug)]
pub(super) struct Recording {
    /// The endpoint's stats label.
    endpoint: &'static str,
    /// The request's JSON in the client's API, after the transforms and the guard: bytes only,
    /// so recording builds no tree of a request nothing else rewrites.
    request: Vec<u8>,
    /// The model it was sent as.
    model: String,
    /// When the request was sent on.
    sent_at: Instant,
    /// The reply's status and `content-type`, and when its headers came.
    status: u16,
    content_type: String,
    headers_at: Duration,
    /// A whole reply's bytes as the client got them.
    body: Vec<u8>,
    /// A streamed reply's events as the client got them, with their times.
    events: Vec<RecordedEvent>,
    splitter: EventSplitter,
    /// An event was not UTF-8 text: the stream cannot be written as a fixture.
    unreadable: bool,
    /// Bytes kept so far.
    kept: usize,
    /// More than `record.max_exchange_bytes`: nothing more is kept, and nothing is written.
    too_large: bool,
}

impl Recording {
    /// The recording of a request about to be sent on.
    pub(super) fn new(endpoint: &'static str, request: Vec<u8>, model: String) -> Self {
        Self {
            endpoint,
            kept: request.len(),
            request,
            model,
            sent_at: Instant::now(),
            status: 0,
            content_type: String::new(),
            headers_at: Duration::ZERO,
            body: Vec::new(),
            events: Vec::new(),
            splitter: EventSplitter::default(),
            unreadable: false,
            too_large: false,
        }
    }
}

/// What each recorded event adds to its line besides its bytes, at least (`{"at_ms":…,"raw":…}`).
const EVENT_OVERHEAD: usize = 24;

/// Milliseconds, as a fixture stores them.
fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

impl Filter {
    /// Whether this filter's forwarded requests are recorded: in record mode, or a fixture miss
    /// sent upstream with `record_misses`.
    pub(super) fn records(&self) -> bool {
        self.config().record.is_some()
    }

    /// The reply's headers came: its status and type.
    pub(super) fn record_reply_headers(&mut self, host: &impl Host) {
        let Some(recording) = self.recording_mut() else {
            return;
        };
        let status = host.response_header(":status").unwrap_or_default();
        recording.status = std::str::from_utf8(status)
            .ok()
            .and_then(|status| status.parse().ok())
            .unwrap_or(0);
        let content_type = host.response_header("content-type").unwrap_or_default();
        recording.content_type = String::from_utf8_lossy(content_type).into_owned();
        recording.headers_at = recording.sent_at.elapsed();
    }

    /// Bytes of the reply on their way to the client: kept whole, or cut into events.
    pub(super) fn record_reply_bytes(&mut self, bytes: &[u8], stream: bool) {
        let limit = self
            .config()
            .record
            .as_ref()
            .map_or(0, |record| record.max_exchange_bytes);
        let Some(recording) = self.recording_mut() else {
            return;
        };
        if recording.too_large {
            return;
        }
        // An event costs its line more than its bytes (its time, its escapes): at least this.
        let overhead = if stream { EVENT_OVERHEAD } else { 0 };
        recording.kept += bytes.len() + overhead;
        if recording.kept > limit {
            recording.too_large = true;
            recording.body = Vec::new();
            recording.events = Vec::new();
            recording.splitter = EventSplitter::default();
            return;
        }
        if !stream {
            recording.body.extend_from_slice(bytes);
            return;
        }
        let at_ms = millis(recording.sent_at.elapsed());
        let Recording {
            splitter,
            events,
            unreadable,
            ..
        } = recording;
        splitter.push(bytes, |event| match std::str::from_utf8(event) {
            Ok(raw) => events.push(RecordedEvent {
                at_ms,
                raw: raw.to_owned(),
            }),
            Err(_) => *unreadable = true,
        });
    }

    /// The reply is over: its fixture line goes to the writer, or is counted as not recorded.
    pub(super) fn submit_recording(&mut self, host: &mut impl Host) {
        let Some(recording) = self.take_recording() else {
            return;
        };
        let Some(record) = self.config().record.as_ref() else {
            return;
        };
        let errors = record.recorder.take_write_errors();
        if errors > 0 {
            host.count(Counter::FixtureRecords, &["write_error"], errors);
        }
        let outcome = match self.fixture_line(*recording) {
            Err(outcome) => outcome,
            Ok(line) => match record.recorder.submit(line) {
                Submitted::Queued => "queued",
                Submitted::QueueFull => "queue_full",
                Submitted::TooLarge => "too_large",
            },
        };
        host.count(Counter::FixtureRecords, &[outcome], 1);
    }

    /// The stream ended before its reply did (a client gone, a reset): nothing is recorded.
    pub(super) fn abandon_recording(&mut self, host: &mut impl Host) {
        if self.take_recording().is_some() {
            host.count(Counter::FixtureRecords, &["incomplete"], 1);
        }
    }

    /// The exchange as a fixture line, or why it cannot be one.
    fn fixture_line(&self, mut recording: Recording) -> Result<Vec<u8>, &'static str> {
        let limit = self
            .config()
            .record
            .as_ref()
            .map_or(0, |record| record.max_exchange_bytes);
        if recording.too_large || recording.kept > limit {
            return Err("too_large");
        }
        let rest = recording.splitter.finish();
        let stream = !recording.events.is_empty() || !rest.is_empty();
        if !rest.is_empty() {
            let raw = String::from_utf8(rest).map_err(|_| "unrecordable")?;
            let at_ms = millis(recording.sent_at.elapsed());
            recording.events.push(RecordedEvent { at_ms, raw });
        }
        if recording.unreadable {
            return Err("unrecordable");
        }
        // A reversible guard put this request's values back in the reply: they leave it again,
        // in whatever form they took, and a recording that would still hold one is not written.
        if let Some(remask) = self.masker.remasker() {
            for event in &mut recording.events {
                let remasked = remask.event(event.raw.as_bytes());
                if remask.leaves_any(&remasked) {
                    return Err("unrecordable");
                }
                if let Cow::Owned(remasked) = remasked {
                    event.raw = String::from_utf8(remasked).map_err(|_| "unrecordable")?;
                }
            }
            if !stream {
                if let Cow::Owned(remasked) = remask.body(&recording.body) {
                    recording.body = remasked;
                }
                if remask.leaves_any(&recording.body) {
                    return Err("unrecordable");
                }
            }
        }
        let (reply, body) = if stream {
            (None, None)
        } else {
            match OneLineJson::checked(&recording.body) {
                Some(json) => (Some(json), None),
                None => {
                    let text = std::str::from_utf8(&recording.body);
                    (None, Some(text.map_err(|_| "unrecordable")?))
                }
            }
        };
        // Parsed when it was forwarded (read, or written by the transforms): not checked again.
        let request = OneLineJson::parsed(&recording.request).ok_or("unrecordable")?;
        let (prompt_tokens, completion_tokens) = match &self.state {
            State::Proxying(forwarding) => forwarding.accounting.reported(),
            _ => (None, None),
        };
        let line = LineOut {
            llm_edge_fixture: VERSION,
            recorded_at: &format::format_utc(now_secs()),
            endpoint: recording.endpoint,
            model: &recording.model,
            request: &request,
            status: recording.status,
            content_type: &recording.content_type,
            reply: reply.as_ref(),
            body,
            events: stream.then_some(recording.events.as_slice()),
            headers_ms: millis(recording.headers_at),
            duration_ms: millis(recording.sent_at.elapsed()),
            usage: RecordedUsage {
                prompt_tokens,
                completion_tokens,
            },
        };
        let line = line.to_line();
        // Escapes can make a line longer than what it holds: the line is what is bounded.
        if line.len() > limit {
            return Err("too_large");
        }
        Ok(line)
    }

    fn recording_mut(&mut self) -> Option<&mut Recording> {
        match &mut self.state {
            State::Proxying(forwarding) => forwarding.recording.as_deref_mut(),
            _ => None,
        }
    }

    fn take_recording(&mut self) -> Option<Box<Recording>> {
        match &mut self.state {
            State::Proxying(forwarding) => forwarding.recording.take(),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
