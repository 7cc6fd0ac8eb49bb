//! What the mock answers: picks the reply text, counts usage and renders the response.
//!
//! The entry points here take a parsed request and return a rendered [`MockReply`]; the rooms
//! beside them say where the text comes from (`content`), which tools a reply calls and what
//! structured output it writes (`tools`, `schema_gen`), how large a reply may grow (`limits`),
//! when its pieces are due (`timing`), and what embeddings are (`vectors`). May use `api` and
//! `accounting`; it knows nothing of the filter or Envoy.

pub mod config;
mod content;
pub mod faults;
mod limits;
pub mod load;
pub mod lorem;
pub mod metrics;
pub mod prefix_cache;
pub mod schema_gen;
mod timing;
mod tools;
mod vectors;

pub use timing::Timing;
pub use vectors::{check_embeddings, embeddings};

use content::{Source, reply_source, reply_texts, shape_all};
use limits::{
    LOREM_WORD_BYTES, ReplySize, SCHEMA_VALUE_BYTES, Wire, check_context, check_reply,
    generated_bytes, json_str_len, request_echo_bytes,
};
use timing::timed_reply;
use tools::{calls_tools, select_tools, structure, tool_call_choices};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::borrow::Cow;

use crate::accounting::tokens::Tokenizer;
use crate::api::anthropic::{self, MessagesRequest};
use crate::api::openai::ApiError;
use crate::api::openai::chat::{self, ChatRequest, Completion, ResponseFormat};
use crate::api::openai::completions::{self, CompletionRequest, Prompt, TextCompletion};
use crate::api::openai::generation::{ChoiceText, Usage};
use crate::api::openai::responses::{self, ResponseIds, ResponsesRequest};
use crate::mock::config::MockConfig;

/// The content type of streamed replies.
pub const EVENT_STREAM: &str = "text/event-stream";

/// How a reply goes out: one body, or a stream of server-sent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// One JSON body, sent whole.
    Whole,
    /// Server-sent events, one step at a time.
    Stream,
}

impl ReplyShape {
    /// The reply's `content-type` header.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Whole => "application/json",
            Self::Stream => EVENT_STREAM,
        }
    }
}

/// A rendered mock response, ready to send at once or paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    /// Whole or streamed, and so its `content-type`.
    pub shape: ReplyShape,
    /// The body in the pieces that go out together: one piece of JSON, or the SSE stream's steps.
    pub steps: Vec<Vec<u8>>,
    /// When each step is due, from the start of the reply; empty to send everything at once.
    pub offsets: Vec<Duration>,
    /// The reply's token counts.
    pub usage: Usage,
}

/// What a text-generating endpoint asks of the mock, whatever its wire format.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'a> {
    /// The model answering.
    pub model: &'a str,
    /// The text rules match and echo repeats: the last user message, or the prompt.
    pub prompt_text: &'a str,
    /// `prompt_text`'s token ids, when counting the prompt encoded them (exact tokens): an echo
    /// is then not encoded a second time.
    pub prompt_ids: Option<&'a [u32]>,
    /// httpbun's exact reply, if the request gave one.
    pub content_override: Option<&'a str>,
    /// How many choices.
    pub n: u32,
    /// Seed of generated (lorem) text.
    pub seed: Option<i64>,
    /// The reply's token limit.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: &'a [String],
}

impl<'a> Generation<'a> {
    /// The generation a chat request asks for.
    pub fn of_chat(request: &'a ChatRequest) -> Self {
        Self {
            model: &request.model,
            prompt_text: request.last_user_text(),
            prompt_ids: None,
            content_override: request.content_override.as_deref(),
            n: request.n,
            seed: request.seed,
            max_tokens: request.max_tokens,
            stop: &request.stop,
        }
    }
}

/// Generates the choices of a chat-shaped request (tool calls, structured or plain text) and
/// hands them with their usage to `render`, with the `stop` sequence each ended at (an index
/// into `request.stop`); or `context_length_exceeded` when the prompt does not fit the model's
/// window, or a 400 when the reply `wire` renders could exceed `mock.max_reply_bytes`.
/// `header` reads the request's headers, for rules that match on one.
fn with_chat_choices<'h, R>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    timing: &Timing,
    request: &ChatRequest,
    wire: ReplySize,
    header: impl Fn(&str) -> Option<&'h [u8]>,
    render: impl FnOnce(&[ChoiceText<'_>], &[Option<usize>], Usage) -> R,
) -> Result<R, ApiError> {
    let mut generation = Generation::of_chat(request);
    let (prompt_tokens, prompt_ids) = tokenizer.prompt_tokens_keeping(
        &request.model,
        &request.messages,
        Some(generation.prompt_text),
    );
    if let Some(window) = config.context_window(&request.model) {
        check_context(wire.wire, window, prompt_tokens, request.max_tokens)?;
    }
    generation.prompt_ids = prompt_ids.as_deref();
    let calls_tools = calls_tools(request);
    let source = reply_source(config, &generation, &header);
    let params = wire.wire.params();
    // What the refusal names when one choice alone is too large: what makes it so.
    let culprit = if calls_tools {
        "tools"
    } else if request.content_override.is_none() && request.response_format != ResponseFormat::Text
    {
        params.format
    } else {
        source.param(params)
    };
    let fewer = (request.n > 1).then_some("n");
    let generated = if calls_tools {
        select_tools(request).len() as u64 * SCHEMA_VALUE_BYTES
    } else {
        generated_bytes(source, &generation, request)
    };
    check_reply(
        config.max_reply_bytes,
        u64::from(request.n) * generated,
        generated,
        fewer,
        culprit,
    )?;
    let texts = if calls_tools {
        Vec::new()
    } else {
        structure(request, reply_texts(source, tokenizer, &generation))
    };
    let (choices, stops, completion_tokens) = if calls_tools {
        let (choices, tokens) = tool_call_choices(tokenizer, request);
        let stops = vec![None; choices.len()];
        (choices, stops, tokens)
    } else {
        let shaped = shape_all(tokenizer, &generation, &texts);
        (shaped.choices, shaped.stops, shaped.completion_tokens)
    };
    check_reply(
        config.max_reply_bytes,
        wire.of_choices(&choices, &[]),
        wire.of_choices(&choices[..choices.len().min(1)], &[]),
        fewer,
        culprit,
    )?;
    let usage = timing.usage(prompt_tokens, completion_tokens);
    Ok(render(&choices, &stops, usage))
}

/// Answers a chat completion request: `chat.completion` JSON, or an SSE stream when asked.
pub fn chat_completion<'h>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    timing: &Timing,
    request: &ChatRequest,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<MockReply, ApiError> {
    let wire = ReplySize::new(Wire::Chat, request, 0);
    with_chat_choices(
        config,
        tokenizer,
        timing,
        request,
        wire,
        header,
        |choices, _, usage| {
            let id = format!("chatcmpl-{}", random_hex());
            let completion = Completion {
                id: &id,
                created: unix_seconds(),
                model: &request.model,
                choices,
                usage,
            };
            let stream = request
                .stream
                .then(|| chat::render_stream(&completion, request.include_usage));
            timed_reply(timing, choices, usage, stream, || {
                chat::render_completion(&completion)
            })
        },
    )
}

/// Answers a Responses API request: the `response` object, or its typed event stream.
pub fn response<'h>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    timing: &Timing,
    request: &ResponsesRequest,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<MockReply, ApiError> {
    let wire = ReplySize::new(Wire::Responses, &request.chat, request_echo_bytes(request));
    with_chat_choices(
        config,
        tokenizer,
        timing,
        &request.chat,
        wire,
        header,
        |choices, _, usage| {
            let choice = &choices[0];
            let ids = ResponseIds {
                response: format!("resp_{}", random_hex()),
                message: format!("msg_{}", random_hex()),
                function_calls: choice
                    .tool_calls
                    .iter()
                    .map(|_| format!("fc_{}", random_hex()))
                    .collect(),
                created_at: unix_seconds(),
            };
            let stream = request
                .chat
                .stream
                .then(|| responses::render_stream(request, &ids, choice, usage));
            timed_reply(timing, choices, usage, stream, || {
                responses::render_response(request, &ids, choice, usage)
            })
        },
    )
}

/// Answers an Anthropic Messages request: the `message` object, or its event stream.
pub fn anthropic_message<'h>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    timing: &Timing,
    request: &MessagesRequest,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<MockReply, ApiError> {
    let chat = &request.chat;
    // The reply names the stop sequence it ended at.
    let longest_stop = chat.stop.iter().map(|s| json_str_len(s)).max().unwrap_or(0);
    let wire = ReplySize::new(Wire::Messages, chat, longest_stop);
    with_chat_choices(
        config,
        tokenizer,
        timing,
        chat,
        wire,
        header,
        |choices, stops, usage| {
            let id = format!("msg_{}", &random_hex()[..24]);
            let reply = anthropic::Reply {
                model: &chat.model,
                id: &id,
                choice: &choices[0],
                stop_sequence: stops[0].map(|i| chat.stop[i].as_str()),
            };
            let stream = chat.stream.then(|| anthropic::render_stream(&reply, usage));
            timed_reply(timing, choices, usage, stream, || {
                anthropic::render_message(&reply, usage)
            })
        },
    )
}

/// Answers a legacy completion request: `text_completion` JSON or its SSE stream, `n` choices
/// per prompt; or `context_length_exceeded` when a prompt does not fit the model's window.
pub fn text_completion<'h>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    timing: &Timing,
    request: &CompletionRequest,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<MockReply, ApiError> {
    let model = request.model.as_str();
    let prompt_texts: Vec<Cow<'_, str>> = request
        .prompts
        .iter()
        .map(|prompt| match prompt {
            Prompt::Text(text) => Cow::Borrowed(text.as_str()),
            Prompt::Tokens(ids) => Cow::Owned(tokenizer.decode(model, ids)),
        })
        .collect();
    // Text prompts are encoded once (exact tokens), for their count and for an echo of them.
    let len = |ids: &[u32]| u32::try_from(ids.len()).unwrap_or(u32::MAX);
    let (prompt_ids, prompt_token_counts): (Vec<Option<Vec<u32>>>, Vec<u32>) = request
        .prompts
        .iter()
        .zip(&prompt_texts)
        .map(|(prompt, text)| match prompt {
            Prompt::Tokens(ids) => (None, len(ids)),
            Prompt::Text(_) => match tokenizer.encode(model, text) {
                Some(ids) => {
                    let count = len(&ids);
                    (Some(ids), count)
                }
                None => (None, tokenizer.count(model, text)),
            },
        })
        .unzip();
    if let Some(window) = config.context_window(model) {
        let longest = prompt_token_counts.iter().copied().max().unwrap_or(0);
        check_context(Wire::Completions, window, longest, Some(request.max_tokens))?;
    }
    fn generation_of<'a>(
        request: &'a CompletionRequest,
        prompt_text: &'a str,
        ids: &'a Option<Vec<u32>>,
    ) -> Generation<'a> {
        Generation {
            model: &request.model,
            prompt_text,
            prompt_ids: ids.as_deref(),
            content_override: None,
            n: request.n,
            seed: request.seed,
            max_tokens: Some(request.max_tokens),
            stop: &request.stop,
        }
    }
    let sources: Vec<Source<'_>> = prompt_texts
        .iter()
        .zip(&prompt_ids)
        .map(|(text, ids)| reply_source(config, &generation_of(request, text, ids), &header))
        .collect();
    let lorem = (u64::from(request.max_tokens) + 1) * LOREM_WORD_BYTES;
    let owned = |source: &Source<'_>| match source {
        Source::Lorem { .. } => lorem,
        _ => 0,
    };
    let generated: u64 = sources.iter().map(owned).sum::<u64>() * u64::from(request.n);
    let params = Wire::Completions.params();
    let culprit = |sources: &[Source<'_>]| match sources.first() {
        Some(Source::Lorem { .. }) | None => params.max_tokens,
        Some(source) => source.param(params),
    };
    let fewer = if request.n > 1 {
        Some("n")
    } else {
        (sources.len() > 1).then_some(params.prompt)
    };
    let one_generated = sources.iter().map(owned).max().unwrap_or(0);
    check_reply(
        config.max_reply_bytes,
        generated,
        one_generated,
        fewer,
        culprit(&sources),
    )?;
    let mut storage: Vec<Vec<Cow<'_, str>>> = vec![Vec::new(); prompt_texts.len()];
    let mut choices = Vec::new();
    let mut echoes = Vec::new();
    let mut completion_tokens = 0u32;
    for (((prompt_text, ids), texts), source) in prompt_texts
        .iter()
        .zip(&prompt_ids)
        .zip(storage.iter_mut())
        .zip(&sources)
    {
        let generation = generation_of(request, prompt_text, ids);
        *texts = reply_texts(*source, tokenizer, &generation);
        let shaped = shape_all(tokenizer, &generation, texts);
        let generated = shaped.choices;
        completion_tokens = completion_tokens.saturating_add(shaped.completion_tokens);
        let echo = if request.echo {
            prompt_text.as_ref()
        } else {
            ""
        };
        echoes.extend(std::iter::repeat_n(echo, generated.len()));
        choices.extend(generated);
    }
    let size = ReplySize {
        wire: Wire::Completions,
        stream: request.stream,
        model: json_str_len(model),
        request_echo: 0,
    };
    // The largest single choice, for whether fewer choices would do.
    let one = (0..choices.len())
        .map(|i| size.of_choices(&choices[i..=i], &echoes[i..=i]))
        .max()
        .unwrap_or(0);
    check_reply(
        config.max_reply_bytes,
        size.of_choices(&choices, &echoes),
        one,
        fewer,
        culprit(&sources),
    )?;
    let id = format!("cmpl-{}", random_hex());
    let usage = timing.usage(
        prompt_token_counts
            .iter()
            .fold(0, |a, b| a.saturating_add(*b)),
        completion_tokens,
    );
    let completion = TextCompletion {
        id: &id,
        created: unix_seconds(),
        model,
        choices: &choices,
        echoes: &echoes,
        usage,
    };
    let stream = request
        .stream
        .then(|| completions::render_stream(&completion, request.include_usage));
    Ok(timed_reply(timing, &choices, usage, stream, || {
        completions::render_completion(&completion)
    }))
}

/// 32 random hex digits, for response ids such as `chatcmpl-…`.
fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests;
