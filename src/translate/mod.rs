//! Translation between the APIs llm-edge speaks, on the pass-through path: a client's request in
//! its API goes upstream in another, and the upstream's reply (whole, streamed, or an error)
//! comes back in the client's.
//!
//! Owns request translation, whole-reply and error translation, and the stream translators:
//! state machines fed one upstream event at a time that emit each client event as soon as the
//! event it comes from is complete (nothing waits for the whole reply). Also the `translate`
//! section of the config ([`config`]). Pure: may use `api` and `config_error` only, so every
//! translation is tested without Envoy.
//!
//! A field with no counterpart upstream is dropped and counted ([`Dropped`]) when leaving it out
//! changes nothing the client relies on, and refused with a 400 when it would change the
//! meaning of the request (README, "Translation", has the table per direction).

use serde_json::{Map, Value};

use crate::api::openai::ApiError;
use crate::api::sse::{EventFate, EventReader};

mod chat_to_messages;
pub mod config;
mod events;
mod messages_to_chat;
mod plain;
mod responses_to_chat;

pub use config::{Api, TranslateConfig, Translation};
pub(crate) use events::Events;

/// A request refused because translating it would change its meaning: a 400 in the client's
/// dialect.
pub type Refused = ApiError;

/// A 400 naming the parameter that cannot be translated, and why.
fn refuse(param: &str, why: String) -> Refused {
    ApiError::bad_request(
        format!("llm-edge cannot translate '{param}' for this upstream: {why}."),
        Some(param),
        Some("untranslatable_parameter"),
    )
}

/// The choices of a chat chunk that a client reads: the first (a translated request asks for
/// one).
fn first_choices(choices: &[Value]) -> impl Iterator<Item = &Value> {
    choices
        .iter()
        .filter(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

/// A chat delta's text pieces in order, each with its key: `content`, then `refusal`, each when
/// not empty.
fn delta_texts(delta: &Value) -> impl Iterator<Item = (&'static str, &str)> {
    ["content", "refusal"].into_iter().filter_map(|key| {
        let text = delta.get(key).and_then(Value::as_str)?;
        (!text.is_empty()).then_some((key, text))
    })
}

/// A chat delta's tool-call pieces.
fn delta_calls(delta: &Value) -> impl Iterator<Item = &Value> {
    delta
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The OpenAI error type of an upstream error that names none (no body, or one not JSON), by its
/// status, as OpenAI types its own.
fn openai_kind_of_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

/// The fields a translation left out, by name (a fixed set of names: a field llm-edge does not
/// know is counted as `other`, so a client cannot mint stats labels).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped(Vec<(&'static str, u64)>);

impl Dropped {
    /// Counts one more `name` left out.
    pub fn field(&mut self, name: &'static str) {
        match self.0.iter_mut().find(|(field, _)| *field == name) {
            Some((_, count)) => *count += 1,
            None => self.0.push((name, 1)),
        }
    }

    /// Counts every field of `rest` (what a translation did not carry over), each under its own
    /// name when `known` lists it, else as `other`: a client cannot mint stats labels.
    pub fn rest(&mut self, rest: &Map<String, Value>, known: &[&'static str]) {
        for key in rest.keys() {
            let name = known.iter().find(|name| **name == key).copied();
            self.field(name.unwrap_or("other"));
        }
    }

    /// Each field left out and how many times, emptying the count.
    pub fn drain(&mut self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0.drain(..)
    }

    /// Whether nothing was left out.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a reply repeats of its request when the client's API says so, as the client sent it
/// (the Responses API's `instructions`, `tools` and `tool_choice`); empty for the other APIs.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Echo(Map<String, Value>);

impl Echo {
    /// The client's value of `key`, or `default` when it gave none.
    fn get(&self, key: &str, default: Value) -> Value {
        self.0.get(key).cloned().unwrap_or(default)
    }
}

/// A request translated for the upstream.
#[derive(Debug)]
pub struct Upstream {
    /// The body to send, in the upstream's API.
    pub body: Map<String, Value>,
    /// What was left out.
    pub dropped: Dropped,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of its stream.
    pub include_usage: bool,
    /// What the reply repeats of the request.
    pub echo: Echo,
}

/// A request translated straight from its bytes (see [`TranslateConfig::plain_request`]).
#[derive(Debug)]
pub struct PlainUpstream {
    /// The body to send, in the upstream's API.
    pub body: Vec<u8>,
    /// The model asked for.
    pub model: String,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of its stream.
    pub include_usage: bool,
    /// The completion tokens the request may use at most, as budgets reserve them.
    pub max_tokens: Option<u64>,
}

impl TranslateConfig {
    /// A request of `client`'s API that is a plain conversation (text messages and the common
    /// sampling fields), translated straight from its bytes: the same JSON value as
    /// [`Translation::request`] gives, without building a tree or decoding a text, so that
    /// translating the most common request costs little more than passing it on. `None` when
    /// the request is not plain, or no translation serves its model: the full way reads it.
    pub fn plain_request(
        &self,
        client: Api,
        body: &[u8],
    ) -> Option<(&std::sync::Arc<Translation>, PlainUpstream)> {
        match client {
            Api::Chat => {
                let chat = plain::PlainChat::read(body)?;
                let translation = self.for_request(client, chat.model())?;
                let upstream = plain::plain_request(chat, translation.default_max_tokens)?;
                Some((translation, upstream))
            }
            _ => None,
        }
    }
}

impl Translation {
    /// The stats label of this direction, such as `chat_to_messages`.
    pub fn label(&self) -> &'static str {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => "chat_to_messages",
            (Api::Messages, Api::Chat) => "messages_to_chat",
            (Api::Responses, Api::Chat) => "responses_to_chat",
            _ => "unknown",
        }
    }

    /// Translates a client request, read as a JSON object, for the upstream.
    pub fn request(&self, fields: Map<String, Value>) -> Result<Upstream, Refused> {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => {
                chat_to_messages::request(fields, self.default_max_tokens)
            }
            (Api::Messages, Api::Chat) => messages_to_chat::request(fields),
            (Api::Responses, Api::Chat) => responses_to_chat::request(fields),
            _ => unreachable!("the config admits only the directions llm-edge makes"),
        }
    }

    /// A whole 2xx reply of text only, translated straight from its bytes: the same JSON value
    /// as [`Translation::reply`] gives, nothing dropped, without building a tree or decoding
    /// its text. `None` when the reply is not plain text, or this direction has no plain way:
    /// the full way reads it.
    pub fn plain_reply(&self, body: &[u8], created: u64) -> Option<Vec<u8>> {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => {
                let reply = plain::PlainReply::read(body)?;
                Some(plain::plain_reply(reply, created))
            }
            _ => None,
        }
    }

    /// Translates a whole 2xx reply into the client's API; `created` stamps replies whose
    /// client API carries a creation time the upstream's lacks, `echo` is the request's
    /// ([`Upstream::echo`]).
    pub fn reply(&self, reply: &Value, created: u64, echo: &Echo, dropped: &mut Dropped) -> Value {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => chat_to_messages::reply(reply, created, dropped),
            (Api::Messages, Api::Chat) => messages_to_chat::reply(reply, dropped),
            (Api::Responses, Api::Chat) => responses_to_chat::reply(reply, echo),
            _ => unreachable!("the config admits only the directions llm-edge makes"),
        }
    }

    /// Translates an upstream error reply (any body, JSON or not) into the client's envelope,
    /// with the status the client's API uses for it.
    pub fn error(&self, status: u16, body: &[u8]) -> (u16, Vec<u8>) {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => chat_to_messages::error(status, body),
            (Api::Messages, Api::Chat) => messages_to_chat::error(status, body),
            (Api::Responses, Api::Chat) => responses_to_chat::error(status, body),
            _ => unreachable!("the config admits only the directions llm-edge makes"),
        }
    }

    /// The translator of a streamed reply; `echo` is the request's ([`Upstream::echo`]).
    pub fn stream(&self, created: u64, include_usage: bool, echo: &Echo) -> StreamTranslator {
        match (self.client, self.upstream) {
            (Api::Chat, Api::Messages) => StreamTranslator(Direction::MessagesToChat(
                chat_to_messages::Stream::new(created, include_usage),
            )),
            (Api::Messages, Api::Chat) => StreamTranslator(Direction::ChatToMessages(
                messages_to_chat::Stream::default(),
            )),
            (Api::Responses, Api::Chat) => StreamTranslator(Direction::ChatToResponses(
                responses_to_chat::Stream::new(echo.clone()),
            )),
            _ => unreachable!("the config admits only the directions llm-edge makes"),
        }
    }
}

/// Translates an upstream event stream into the client's, one upstream event at a time.
#[derive(Debug)]
pub struct StreamTranslator(Direction);

/// The state machine of each direction's stream.
#[derive(Debug)]
enum Direction {
    /// Anthropic Messages events to chat chunks.
    MessagesToChat(chat_to_messages::Stream),
    /// Chat chunks to Anthropic Messages events.
    ChatToMessages(messages_to_chat::Stream),
    /// Chat chunks to the Responses API's typed events.
    ChatToResponses(responses_to_chat::Stream),
}

impl StreamTranslator {
    /// Appends to `out` the client events that one complete upstream event becomes (the JSON
    /// string `"[DONE]"` stands for OpenAI's last event).
    pub(crate) fn event(&mut self, event: &Value, out: &mut Events) {
        match &mut self.0 {
            Direction::MessagesToChat(stream) => stream.event(event, out),
            Direction::ChatToMessages(stream) => stream.event(event, out),
            Direction::ChatToResponses(stream) => stream.event(event, out),
        }
    }

    /// What was left out so far, emptying the count.
    pub fn dropped(&mut self) -> &mut Dropped {
        match &mut self.0 {
            Direction::MessagesToChat(stream) => &mut stream.dropped,
            Direction::ChatToMessages(stream) => &mut stream.dropped,
            Direction::ChatToResponses(stream) => &mut stream.dropped,
        }
    }

    /// Reads a chunk of the upstream's stream with `reader` and returns the client's bytes:
    /// every complete event is translated as it completes; anything that is not a JSON event
    /// (comments, pings' names, unreadable data) is not passed on.
    pub fn read(&mut self, reader: &mut EventReader, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        let mut out = Events::default();
        // Chat streams end with `[DONE]`, which is an event of its own to translate.
        reader.offer_done();
        reader.read(chunk, end_of_stream, |event: &Value| {
            self.event(event, &mut out);
            EventFate::Drop
        });
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests;
