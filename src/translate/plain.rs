//! The plain way between chat and Messages: the most common exchange (a chat conversation of
//! text messages up, a reply of text blocks down) translated straight from its bytes, with
//! nothing transformed or guarded. Read borrowed, its texts kept as the JSON strings the client
//! or the upstream wrote and copied, never decoded and escaped again, so translating it costs
//! little more than passing it on.
//!
//! The contract, held by generated tests (`translate/tests.rs`): whenever a plain reader reads a
//! body, what is written is the JSON value the full way
//! ([`request`](super::chat_to_messages::request), [`reply`](super::chat_to_messages::reply))
//! makes of it,
//! nothing dropped, the same stream, usage and budget. So every reader here reads JSON objects
//! only (serde's derived readers also take an array, field by field), refuses a key given twice
//! and a key or name written with escapes (they are borrowed), and checks what it passes over
//! as the full way's reader does ([`Checked`]); anything else fails to read and takes the full
//! way.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::PlainUpstream;
use super::chat_to_messages::{finish_reason, prompt_tokens};
use crate::api::{json_read, json_writer};

/// A type read from a JSON object only, entry by entry.
trait FromObject<'de>: Sized {
    /// What the reader expects, for serde's error message.
    const EXPECTING: &'static str;

    /// Reads the object's entries.
    fn read<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// The visitor of a [`FromObject`] type: anything but an object fails to read.
struct ObjectOnly<T>(PhantomData<T>);

impl<'de, T: FromObject<'de>> Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::read(map)
    }
}

/// A plain conversation, borrowed from the body: text messages of the four roles and the fields
/// every Messages request has. Anything else (another field or role, a part array, a duplicate
/// key, a value of another type) fails to read, and the request takes the full way.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlainChat<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<PlainMessage<'a>>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<PlainStreamOptions>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default)]
    top_p: Option<&'a RawValue>,
}

/// A message of a plain conversation: a role and a text.
struct PlainMessage<'a> {
    role: &'a str,
    /// A JSON string as the client wrote it: copied, never decoded.
    content: &'a RawValue,
}

/// `stream_options` as the full way reads it: only `include_usage` counts.
struct PlainStreamOptions {
    include_usage: Option<bool>,
}

// The role is borrowed, as the keys are: one written with escapes fails to read.
impl<'de: 'a, 'a> FromObject<'de> for PlainMessage<'a> {
    const EXPECTING: &'static str = "a message of a role and a text";

    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut role, mut content) = (None, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            let fresh = match key {
                "role" => role.replace(map.next_value::<&'de str>()?).is_none(),
                "content" => content
                    .replace(map.next_value::<&'de RawValue>()?)
                    .is_none(),
                _ => false,
            };
            if !fresh {
                return Err(de::Error::custom("not a plain message"));
            }
        }
        match (role, content) {
            (Some(role), Some(content)) => Ok(PlainMessage { role, content }),
            _ => Err(de::Error::custom("not a plain message")),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PlainMessage<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly(PhantomData))
    }
}

impl<'de> FromObject<'de> for PlainStreamOptions {
    const EXPECTING: &'static str = "stream options";

    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut include_usage = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            if key == "include_usage" {
                if include_usage.is_some() {
                    return Err(de::Error::custom("include_usage given twice"));
                }
                include_usage = Some(map.next_value::<Option<bool>>()?);
            } else {
                map.next_value::<Checked>()?;
            }
        }
        Ok(PlainStreamOptions {
            include_usage: include_usage.flatten(),
        })
    }
}

impl<'de> Deserialize<'de> for PlainStreamOptions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly(PhantomData))
    }
}

impl<'a> PlainChat<'a> {
    /// The body as a plain conversation, or `None` when it is not one.
    pub(super) fn read(body: &'a [u8]) -> Option<Self> {
        if !json_read::opens_object(body) {
            return None;
        }
        serde_json::from_slice(body).ok()
    }

    /// The model asked for.
    pub(super) fn model(&self) -> &str {
        &self.model
    }
}

/// Writes a plain conversation as the full way translates it (the same JSON value), copying its
/// texts as the client wrote them: no tree is built and no string decoded or escaped again.
/// `None` for what the full way would refuse or count as dropped, which then takes it.
pub(super) fn plain_request(chat: PlainChat<'_>, default_max_tokens: u32) -> Option<PlainUpstream> {
    let max_tokens = match chat.max_completion_tokens.or(chat.max_tokens) {
        Some(0) => return None,
        given => given.unwrap_or(default_max_tokens.into()),
    };
    let temperature = plain_number(chat.temperature)?;
    if temperature.is_some_and(|(_, t)| !(0.0..=1.0).contains(&t)) {
        return None;
    }
    let top_p = plain_number(chat.top_p)?;
    // Each text as an Anthropic text block, the blocks of a run of turns of one role together.
    let mut system: Vec<&RawValue> = Vec::new();
    let mut turns: Vec<(&str, Vec<&RawValue>)> = Vec::new();
    for message in &chat.messages {
        if !message.content.get().starts_with('"') || !decodes(message.content) {
            return None;
        }
        let text = (message.content.get() != "\"\"").then_some(message.content);
        let role = match message.role {
            "system" | "developer" => {
                system.extend(text);
                continue;
            }
            "user" => "user",
            "assistant" => "assistant",
            _ => return None,
        };
        match turns.last_mut() {
            Some((last, blocks)) if *last == role => blocks.extend(text),
            _ => turns.push((role, text.into_iter().collect())),
        }
    }
    let texts: usize = chat.messages.iter().map(|m| m.content.get().len()).sum();
    let mut body = Vec::with_capacity(texts + 64 * chat.messages.len() + 128);
    body.extend_from_slice(b"{\"model\":");
    json_writer::write_str(&mut body, &chat.model);
    if !system.is_empty() {
        body.extend_from_slice(b",\"system\":");
        write_text_blocks(&mut body, &system);
    }
    body.extend_from_slice(b",\"messages\":[");
    for (i, (role, blocks)) in turns.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"role\":\"");
        body.extend_from_slice(role.as_bytes());
        body.extend_from_slice(b"\",\"content\":");
        write_text_blocks(&mut body, blocks);
        body.push(b'}');
    }
    write!(body, "],\"max_tokens\":{max_tokens}").expect("a Vec takes every byte");
    for (key, raw) in [("temperature", temperature), ("top_p", top_p)] {
        if let Some((raw, _)) = raw {
            write!(body, ",\"{key}\":{}", raw.get()).expect("a Vec takes every byte");
        }
    }
    let stream = chat.stream == Some(true);
    if stream {
        body.extend_from_slice(b",\"stream\":true");
    }
    body.push(b'}');
    let include_usage = chat.stream_options.and_then(|o| o.include_usage) == Some(true);
    Some(PlainUpstream {
        body,
        model: chat.model.into_owned(),
        stream,
        include_usage,
        max_tokens: chat
            .max_completion_tokens
            .max(chat.max_tokens)
            .or(Some(default_max_tokens.into())),
    })
}

/// Whether a JSON string reads as a string: serde_json passes over half a surrogate pair in a
/// string it only skips, which the full way's reader refuses. Only a string with
/// a `\u` escape of a surrogate is decoded to tell.
fn decodes(string: &RawValue) -> bool {
    let raw = string.get().as_bytes();
    let surrogate = memchr::memmem::find_iter(raw, br"\u")
        .any(|at| matches!(raw.get(at + 2), Some(b'd' | b'D')));
    !surrogate || serde_json::from_str::<Cow<'_, str>>(string.get()).is_ok()
}

/// Any JSON value, read as the full way's reader reads one (strings decoded, numbers in range,
/// nesting within serde_json's limit) and kept nowhere: what a plain reader passes over must
/// still be JSON that the full way accepts, which serde's `IgnoredAny` does not check.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

/// An optional number as written and its value; `None` when it is not a number.
fn plain_number(raw: Option<&RawValue>) -> Option<Option<(&RawValue, f64)>> {
    match raw {
        None => Some(None),
        // A number past f64's range is one `request`'s reader refuses.
        Some(raw) => raw
            .get()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|n| Some((raw, n))),
    }
}

/// `[{"type":"text","text":…},…]` of JSON strings as written.
fn write_text_blocks(out: &mut Vec<u8>, texts: &[&RawValue]) {
    out.push(b'[');
    for (i, text) in texts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
        out.extend_from_slice(text.get().as_bytes());
        out.push(b'}');
    }
    out.push(b']');
}

/// A Messages reply of text blocks only, borrowed from the body. Any other reply (a tool use or
/// another block, a field of another type or one it does not know, a known key given twice)
/// fails to read, and takes the full way; the fields the full way does not use are checked as
/// its reader checks them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PlainReply<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    content: Vec<PlainText<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<PlainUsage>,
    #[serde(default, rename = "type")]
    _type: Option<Checked>,
    #[serde(default, rename = "role")]
    _role: Option<Checked>,
    #[serde(default, rename = "stop_sequence")]
    _stop_sequence: Option<Checked>,
    #[serde(default, rename = "container")]
    _container: Option<Checked>,
}

/// Anthropic's token counts, as the full way reads them; its other keys are checked and passed
/// over.
#[derive(Default)]
struct PlainUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

impl<'de> FromObject<'de> for PlainUsage {
    const EXPECTING: &'static str = "token counts";

    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut usage = PlainUsage::default();
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<&'de str>()? {
            let (slot, count) = match key {
                "input_tokens" => (0, &mut usage.input_tokens),
                "output_tokens" => (1, &mut usage.output_tokens),
                "cache_read_input_tokens" => (2, &mut usage.cache_read_input_tokens),
                "cache_creation_input_tokens" => (3, &mut usage.cache_creation_input_tokens),
                _ => {
                    map.next_value::<Checked>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom("a count given twice"));
            }
            *count = map.next_value::<Option<u64>>()?;
        }
        Ok(usage)
    }
}

impl<'de> Deserialize<'de> for PlainUsage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly(PhantomData))
    }
}

/// A `text` block's text, a JSON string as the upstream wrote it.
struct PlainText<'a>(&'a RawValue);

// Keys other than `type` and `text` (citations) are checked and passed over: the full way reads
// only those two.
impl<'de: 'a, 'a> FromObject<'de> for PlainText<'a> {
    const EXPECTING: &'static str = "a text block";

    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let (mut text_type, mut text) = (false, None);
        while let Some(key) = map.next_key::<&'de str>()? {
            let fresh = match key {
                "type" => {
                    let fresh = !text_type;
                    text_type = map.next_value::<&'de str>()? == "text";
                    fresh && text_type
                }
                "text" => text.replace(map.next_value::<&'de RawValue>()?).is_none(),
                _ => {
                    map.next_value::<Checked>()?;
                    true
                }
            };
            if !fresh {
                return Err(de::Error::custom("not a text block"));
            }
        }
        match text {
            Some(text) if text_type && text.get().starts_with('"') && decodes(text) => {
                Ok(PlainText(text))
            }
            _ => Err(de::Error::custom("not a text block")),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for PlainText<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectOnly(PhantomData))
    }
}

impl<'a> PlainReply<'a> {
    /// The body as a reply of text blocks, or `None` when it is not one.
    pub(super) fn read(body: &'a [u8]) -> Option<Self> {
        if !json_read::opens_object(body) {
            return None;
        }
        serde_json::from_slice(body).ok()
    }
}

/// Writes a reply of text blocks as the chat completion the full way makes of it (the same JSON
/// value), its text copied as the upstream wrote it.
pub(super) fn plain_reply(reply: PlainReply<'_>, created: u64) -> Vec<u8> {
    let texts: usize = reply.content.iter().map(|text| text.0.get().len()).sum();
    let mut out = Vec::with_capacity(texts + 512);
    out.extend_from_slice(b"{\"id\":");
    json_writer::write_str(&mut out, &reply.id);
    write!(out, ",\"object\":\"chat.completion\",\"created\":{created}")
        .expect("a Vec takes every byte");
    out.extend_from_slice(b",\"model\":");
    json_writer::write_str(&mut out, &reply.model);
    out.extend_from_slice(
        b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
    );
    // The texts of the blocks, one after the other: each is a JSON string, quotes cut off.
    for text in &reply.content {
        let quoted = text.0.get().as_bytes();
        out.extend_from_slice(&quoted[1..quoted.len() - 1]);
    }
    out.extend_from_slice(b"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
    json_writer::write_value(&mut out, &finish_reason(reply.stop_reason.as_deref()));
    let counts = reply.usage.unwrap_or_default();
    let cached = counts.cache_read_input_tokens.unwrap_or(0);
    let prompt = prompt_tokens(
        counts.input_tokens.unwrap_or(0),
        cached,
        counts.cache_creation_input_tokens.unwrap_or(0),
    );
    let completion = counts.output_tokens.unwrap_or(0);
    let total = prompt.saturating_add(completion);
    write!(
        out,
        "}}],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\
         \"total_tokens\":{total},\"prompt_tokens_details\":{{\"cached_tokens\":{cached}}},\
         \"completion_tokens_details\":{{\"reasoning_tokens\":0}}}}}}"
    )
    .expect("a Vec takes every byte");
    out
}
