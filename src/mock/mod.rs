//! What the mock answers: picks the reply text, counts usage and renders the response.

pub mod config;
pub mod faults;
pub mod lorem;
pub mod schema_gen;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use std::borrow::Cow;

use crate::accounting::tokens::Tokenizer;
use crate::api::anthropic::{self, MessagesRequest};
use crate::api::openai::ApiError;
use crate::api::openai::chat::{
    self, ChatRequest, ChoiceText, Completion, FinishReason, ResponseFormat, Tool, ToolCallText,
    ToolChoice, Usage,
};
use crate::api::openai::completions::{self, CompletionRequest, Prompt, TextCompletion};
use crate::api::openai::embeddings::{self, EmbeddingInput, EmbeddingsRequest};
use crate::api::openai::responses::{self, ResponseIds, ResponsesRequest};
use crate::mock::config::{ContentMode, LatencyConfig, MockConfig, RuleMatch};

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

/// How long a reply takes: the first token after `time_to_first_token`, then one every
/// `inter_token`, each delay varied by up to `jitter` of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Delay before the first token.
    pub time_to_first_token: Duration,
    /// Delay between tokens.
    pub inter_token: Duration,
    /// Fraction, 0 to 1, by which each delay varies uniformly.
    pub jitter: f64,
    /// Seed of the jitter; `None` draws a fresh one per reply.
    pub seed: Option<u64>,
}

impl Timing {
    /// The configured timing.
    pub fn from_config(latency: &LatencyConfig) -> Self {
        Self {
            time_to_first_token: Duration::from_millis(latency.time_to_first_token_ms),
            inter_token: Duration::from_millis(latency.inter_token_ms),
            jitter: latency.jitter,
            seed: latency.seed,
        }
    }

    /// Whether replies go out at once.
    pub fn is_instant(&self) -> bool {
        self.time_to_first_token.is_zero() && self.inter_token.is_zero()
    }

    /// When each of `steps` token steps is due, measured from the start of the reply.
    pub fn offsets(&self, steps: usize) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(self.seed.unwrap_or_else(rand::random));
        let mut jittered = |delay: Duration| {
            if self.jitter == 0.0 || delay.is_zero() {
                delay
            } else {
                delay.mul_f64(1.0 + self.jitter * rng.random_range(-1.0..=1.0))
            }
        };
        let mut due = jittered(self.time_to_first_token);
        let mut offsets = Vec::with_capacity(steps);
        for step in 0..steps {
            if step > 0 {
                due += jittered(self.inter_token);
            }
            offsets.push(due);
        }
        offsets
    }
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

/// Cuts each text the way a model stops (`stop`, then `max_tokens`) into a choice; returns the
/// choices and their completion tokens.
fn shape_all<'t>(
    tokenizer: Tokenizer,
    generation: &Generation<'_>,
    texts: &'t [Cow<'t, str>],
) -> (Vec<ChoiceText<'t>>, u32) {
    let mut completion_tokens = 0u32;
    let mut previous: Option<(&str, ChoiceText<'t>, u32)> = None;
    let choices = texts
        .iter()
        .map(|text| {
            // Choices that share one text (echo, fixed, a rule) are cut into tokens once.
            let (choice, tokens) = match &previous {
                Some((shared, choice, tokens)) if std::ptr::eq(*shared, text.as_ref()) => {
                    (choice.clone(), *tokens)
                }
                _ => {
                    let (choice, tokens) = shape_reply(tokenizer, generation, text);
                    previous = Some((text, choice.clone(), tokens));
                    (choice, tokens)
                }
            };
            completion_tokens = completion_tokens.saturating_add(tokens);
            choice
        })
        .collect();
    (choices, completion_tokens)
}

/// A generator seeded by the request's `seed`, or freshly when it has none.
fn seeded(seed: Option<i64>) -> StdRng {
    StdRng::seed_from_u64(seed.map_or_else(rand::random, |seed| seed as u64))
}

/// The tools a reply calls: the named one; else those the last user message mentions by name
/// (all of them when parallel calls are allowed, else the first), or the first tool.
fn select_tools(request: &ChatRequest) -> Vec<&Tool> {
    if let ToolChoice::Named(name) = &request.tool_choice {
        return request
            .tools
            .iter()
            .filter(|tool| &tool.name == name)
            .collect();
    }
    let prompt = request.last_user_text().to_lowercase();
    let mentioned = |tool: &&Tool| {
        let name = tool.name.to_lowercase();
        prompt.contains(&name) || prompt.contains(&name.replace(['_', '-'], " "))
    };
    let mut picked: Vec<&Tool> = request.tools.iter().filter(mentioned).collect();
    if picked.is_empty() {
        picked.extend(request.tools.first());
    }
    if !request.parallel_tool_calls {
        picked.truncate(1);
    }
    picked
}

/// Choices that call tools, with arguments generated from each tool's parameter schema.
fn tool_call_choices(
    tokenizer: Tokenizer,
    request: &ChatRequest,
) -> (Vec<ChoiceText<'static>>, u32) {
    let tools = select_tools(request);
    let mut rng = seeded(request.seed);
    let mut completion_tokens = 0u32;
    let choices = (0..request.n)
        .map(|_| {
            let tool_calls = tools
                .iter()
                .map(|tool| {
                    let arguments = schema_gen::generate(&tool.parameters, &mut rng).to_string();
                    let pieces = tokenizer.pieces(&request.model, &arguments, None);
                    let tokens: u32 = pieces.iter().map(|piece| piece.tokens).sum();
                    let name_tokens = tokenizer.count(&request.model, &tool.name);
                    completion_tokens = completion_tokens.saturating_add(tokens + name_tokens);
                    let cuts = pieces
                        .iter()
                        .scan(0, |end, piece| {
                            *end += piece.text.len();
                            Some(*end)
                        })
                        .collect();
                    ToolCallText {
                        id: format!("call_{}", &random_hex()[..24]),
                        name: tool.name.clone(),
                        arguments,
                        cuts,
                    }
                })
                .collect();
            ChoiceText {
                content: "",
                deltas: Vec::new(),
                tool_calls,
                finish_reason: FinishReason::ToolCalls,
            }
        })
        .collect();
    (choices, completion_tokens)
}

/// The texts of a structured reply: for `json_object`, `{"response": text}`; for `json_schema`,
/// a value generated from the schema. An httpbun override stays as given.
fn structure<'a>(request: &ChatRequest, texts: Vec<Cow<'a, str>>) -> Vec<Cow<'a, str>> {
    if request.content_override.is_some() {
        return texts;
    }
    match &request.response_format {
        ResponseFormat::Text => texts,
        ResponseFormat::JsonObject => texts
            .into_iter()
            .map(|text| Cow::Owned(serde_json::json!({ "response": text }).to_string()))
            .collect(),
        ResponseFormat::JsonSchema(schema) => {
            let mut rng = seeded(request.seed);
            texts
                .iter()
                .map(|_| Cow::Owned(schema_gen::generate(schema, &mut rng).to_string()))
                .collect()
        }
    }
}

/// Packs rendered output with its timing: stream steps paced token by token, or one whole body
/// due when its last token would have been.
fn timed_reply(
    timing: &Timing,
    choices: &[ChoiceText<'_>],
    usage: Usage,
    stream: Option<Vec<Vec<u8>>>,
    whole: impl FnOnce() -> Vec<u8>,
) -> MockReply {
    let token_steps = choices
        .iter()
        .map(ChoiceText::steps)
        .max()
        .unwrap_or(0)
        .max(1);
    let offsets = if timing.is_instant() {
        Vec::new()
    } else {
        timing.offsets(token_steps)
    };
    match stream {
        Some(steps) => MockReply {
            shape: ReplyShape::Stream,
            steps,
            offsets,
            usage,
        },
        None => MockReply {
            shape: ReplyShape::Whole,
            steps: vec![whole()],
            offsets: offsets.last().copied().into_iter().collect(),
            usage,
        },
    }
}

/// Generates the choices of a chat-shaped request (tool calls, structured or plain text) and
/// hands them with their usage to `render`; or `context_length_exceeded` when the prompt does
/// not fit the model's window, or OpenAI's 400 when the reply `wire` renders could exceed
/// `mock.max_reply_bytes`. `header` reads the request's headers, for rules that match on one.
fn with_chat_choices<'h, R>(
    config: &MockConfig,
    tokenizer: Tokenizer,
    request: &ChatRequest,
    wire: ReplySize,
    header: impl Fn(&str) -> Option<&'h [u8]>,
    render: impl FnOnce(&[ChoiceText<'_>], Usage) -> R,
) -> Result<R, ApiError> {
    let mut generation = Generation::of_chat(request);
    let (prompt_tokens, prompt_ids) = tokenizer.prompt_tokens_keeping(
        &request.model,
        &request.messages,
        Some(generation.prompt_text),
    );
    if let Some(window) = config.context_window(&request.model) {
        check_context(window, prompt_tokens, request.max_tokens)?;
    }
    generation.prompt_ids = prompt_ids.as_deref();
    let calls_tools = !request.tools.is_empty()
        && request.tool_choice != ToolChoice::None
        && !request.ends_with_tool_result();
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
    let (choices, completion_tokens) = if calls_tools {
        tool_call_choices(tokenizer, request)
    } else {
        shape_all(tokenizer, &generation, &texts)
    };
    check_reply(
        config.max_reply_bytes,
        wire.of_choices(&choices, &[]),
        wire.of_choices(&choices[..choices.len().min(1)], &[]),
        fewer,
        culprit,
    )?;
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
    };
    Ok(render(&choices, usage))
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
        request,
        wire,
        header,
        |choices, usage| {
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
        &request.chat,
        wire,
        header,
        |choices, usage| {
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
    let wire = ReplySize::new(Wire::Messages, chat, 0);
    with_chat_choices(config, tokenizer, chat, wire, header, |choices, usage| {
        let id = format!("msg_{}", &random_hex()[..24]);
        let choice = &choices[0];
        let stream = chat
            .stream
            .then(|| anthropic::render_stream(&chat.model, &id, choice, usage));
        timed_reply(timing, choices, usage, stream, || {
            anthropic::render_message(&chat.model, &id, choice, usage)
        })
    })
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
        check_context(window, longest, Some(request.max_tokens))?;
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
        let (generated, tokens) = shape_all(tokenizer, &generation, texts);
        completion_tokens = completion_tokens.saturating_add(tokens);
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
    let usage = Usage {
        prompt_tokens: prompt_token_counts
            .iter()
            .fold(0, |a, b| a.saturating_add(*b)),
        completion_tokens,
    };
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

/// Whose wire format a reply is rendered in, for bounding its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    /// `chat.completion`, or its chunks.
    Chat,
    /// `text_completion`, or its chunks.
    Completions,
    /// The Responses API's `response`, or its typed events.
    Responses,
    /// Anthropic's `message`, or its events.
    Messages,
}

/// The request parameters a refusal names, as each API spells them.
#[derive(Debug, Clone, Copy)]
struct Params {
    /// The prompt an echo repeats.
    prompt: &'static str,
    /// The reply's token limit.
    max_tokens: &'static str,
    /// The structured-output format.
    format: &'static str,
    /// httpbun's reply override.
    content: &'static str,
}

impl Wire {
    fn params(self) -> Params {
        match self {
            Self::Chat => Params {
                prompt: "messages",
                max_tokens: "max_tokens",
                format: "response_format",
                content: "httpbun.content",
            },
            Self::Completions => Params {
                prompt: "prompt",
                max_tokens: "max_tokens",
                format: "response_format",
                content: "httpbun.content",
            },
            Self::Responses => Params {
                prompt: "input",
                max_tokens: "max_output_tokens",
                format: "text.format",
                content: "httpbun.output_text",
            },
            Self::Messages => Params {
                prompt: "messages",
                max_tokens: "max_tokens",
                format: "output_format",
                content: "httpbun.content",
            },
        }
    }
}

impl Source<'_> {
    /// The parameter that sets how long this source's text is.
    fn param(self, params: Params) -> &'static str {
        match self {
            Source::Echo(_) => params.prompt,
            Source::Override(_) => params.content,
            Source::Configured(_) | Source::Lorem { .. } => params.max_tokens,
        }
    }
}

/// The most bytes a streamed event takes besides its text and the model's name: `event:` and
/// `data: ` lines, the JSON envelope (ids, indexes, sequence numbers, `created`), the text's
/// quotes and the blank line. The largest, a chat chunk, is about 240.
const EVENT_BYTES: u64 = 320;
/// The most bytes one choice, or one tool call, takes besides its texts and events.
const CHOICE_BYTES: u64 = 320;
/// The most bytes a reply takes besides its choices, the model's name and the request fields
/// it repeats: envelope, usage, the opening and closing events.
const REPLY_BYTES: u64 = 8192;
/// The most times a reply names the model outside its per-event envelopes.
const MODEL_COPIES: u64 = 8;
/// The most bytes one lorem word takes with what follows it: 13 letters, a comma or full stop,
/// a space.
const LOREM_WORD_BYTES: u64 = 16;
/// The most bytes a generated schema value takes: its room, plus a `null` per nesting level
/// where the room ran out (requests nest at most 128 deep).
const SCHEMA_VALUE_BYTES: u64 = schema_gen::MAX_OUTPUT_BYTES as u64 + 128 * 8;

/// The bytes `text` takes as a JSON string, quotes included, escaped as serde_json and
/// [`crate::api::json_writer`] escape it.
fn json_str_len(text: &str) -> u64 {
    let escapes: u64 = text
        .bytes()
        .map(|byte| match byte {
            b'"' | b'\\' | 0x08 | 0x0C | b'\n' | b'\r' | b'\t' => 1,
            0..=0x1F => 5,
            _ => 0,
        })
        .sum();
    text.len() as u64 + escapes + 2
}

/// The bytes of request fields a `response` object repeats: instructions, tools, the schema.
fn request_echo_bytes(request: &ResponsesRequest) -> u64 {
    let chat = &request.chat;
    let tools: u64 = chat
        .tools
        .iter()
        .map(|tool| {
            CHOICE_BYTES
                + json_str_len(&tool.name)
                + crate::api::json_writer::serialized_len(&tool.parameters) as u64
        })
        .sum();
    let schema = match &chat.response_format {
        ResponseFormat::JsonSchema(schema) => {
            crate::api::json_writer::serialized_len(schema) as u64
        }
        _ => 0,
    };
    let tool_choice = match &chat.tool_choice {
        ToolChoice::Named(name) => json_str_len(name),
        _ => 0,
    };
    request.instructions.as_deref().map_or(0, json_str_len) + tools + schema + tool_choice
}

/// The bytes of text a choice generates before it is shaped, at most, counting only what each
/// choice owns: an echoed or configured text is shared by every choice.
fn generated_bytes(source: Source<'_>, generation: &Generation<'_>, request: &ChatRequest) -> u64 {
    let text = match source {
        Source::Lorem { max_tokens, .. } => match generation.max_tokens {
            Some(limit) => (u64::from(limit) + 1) * LOREM_WORD_BYTES,
            None => u64::from(max_tokens) * LOREM_WORD_BYTES + 1,
        },
        Source::Override(text) | Source::Configured(text) | Source::Echo(text) => {
            if request.content_override.is_none()
                && request.response_format == ResponseFormat::JsonObject
            {
                json_str_len(text)
            } else {
                0
            }
        }
    };
    if request.content_override.is_some() {
        return text;
    }
    match request.response_format {
        ResponseFormat::Text => text,
        // `{"response":…}` around the text.
        ResponseFormat::JsonObject => text + 16,
        ResponseFormat::JsonSchema(_) => SCHEMA_VALUE_BYTES,
    }
}

/// Bounds the size of a rendered reply from its shaped choices, before it is rendered.
#[derive(Debug, Clone, Copy)]
struct ReplySize {
    /// The wire format.
    wire: Wire,
    /// Whether the reply streams, one event per token.
    stream: bool,
    /// The model's name as a JSON string.
    model: u64,
    /// The bytes of request fields the reply repeats.
    request_echo: u64,
}

impl ReplySize {
    fn new(wire: Wire, request: &ChatRequest, request_echo: u64) -> Self {
        Self {
            wire,
            stream: request.stream,
            model: json_str_len(&request.model),
            request_echo,
        }
    }

    /// An upper bound of the bytes the reply of these choices renders to; `echoes` are the
    /// prompts a legacy completion repeats before each choice's text.
    fn of_choices(&self, choices: &[ChoiceText<'_>], echoes: &[&str]) -> u64 {
        let events = |count: usize| {
            if self.stream {
                count as u64 * (EVENT_BYTES + self.model)
            } else {
                0
            }
        };
        // A Responses stream repeats each text in its done events and final object, and the
        // request's fields in its created, in-progress and final objects.
        let (copies, echo_copies) = if self.stream && self.wire == Wire::Responses {
            (5, 3)
        } else {
            (1, 1)
        };
        let mut total = REPLY_BYTES + MODEL_COPIES * self.model + echo_copies * self.request_echo;
        for (i, choice) in choices.iter().enumerate() {
            // A stream opens each choice with a role event and ends it with a finish event.
            total += CHOICE_BYTES + events(2 + choice.deltas.len());
            total += copies * json_str_len(choice.content);
            for call in &choice.tool_calls {
                total += CHOICE_BYTES + events(2 + call.cuts.len());
                total += copies
                    * (json_str_len(&call.arguments)
                        + json_str_len(&call.name)
                        + json_str_len(&call.id));
            }
            if let Some(echo) = echoes.get(i) {
                total += json_str_len(echo) + events(1);
            }
        }
        total
    }
}

/// OpenAI's 400 when a reply of up to `estimate` bytes exceeds `limit`. It names `fewer` (the
/// parameter that asks for several choices) when one choice alone (`one` bytes) would fit, else
/// `culprit`, what makes one choice too large.
fn check_reply(
    limit: u64,
    estimate: u64,
    one: u64,
    fewer: Option<&str>,
    culprit: &str,
) -> Result<(), ApiError> {
    if estimate <= limit {
        return Ok(());
    }
    let param = match fewer {
        Some(fewer) if one <= limit => fewer,
        _ => culprit,
    };
    Err(ApiError::bad_request(
        format!(
            "The reply to this request could take {estimate} bytes, more than this server's \
             limit of {limit} bytes (mock.max_reply_bytes). Please reduce '{param}'."
        ),
        Some(param),
        Some("reply_too_large"),
    ))
}

/// OpenAI's 400 when the prompt, plus the completion it asks room for, exceeds the window.
fn check_context(window: u32, prompt: u32, max_tokens: Option<u32>) -> Result<(), ApiError> {
    let completion = max_tokens.unwrap_or(0);
    let requested = prompt.saturating_add(completion);
    if requested <= window {
        return Ok(());
    }
    let message = match max_tokens {
        None => format!(
            "This model's maximum context length is {window} tokens. However, your messages \
             resulted in {prompt} tokens. Please reduce the length of the messages."
        ),
        Some(_) => format!(
            "This model's maximum context length is {window} tokens. However, you requested \
             {requested} tokens ({prompt} in the messages, {completion} in the completion). \
             Please reduce the length of the messages or completion."
        ),
    };
    Err(ApiError::bad_request(
        message,
        Some("messages"),
        Some("context_length_exceeded"),
    ))
}

/// Answers an embeddings request: one unit vector per input, determined by the input alone, so
/// the same text always embeds the same and different texts differ.
pub fn embeddings(tokenizer: Tokenizer, request: &EmbeddingsRequest) -> MockReply {
    let dimensions = request
        .dimensions
        .unwrap_or_else(|| default_dimensions(&request.model));
    let mut prompt_tokens = 0u32;
    let vectors = request
        .inputs
        .iter()
        .map(|input| {
            let tokens = match input {
                EmbeddingInput::Text(text) => tokenizer.count(&request.model, text),
                EmbeddingInput::Tokens(ids) => u32::try_from(ids.len()).unwrap_or(u32::MAX),
            };
            prompt_tokens = prompt_tokens.saturating_add(tokens);
            embedding_vector(input, dimensions)
        })
        .collect();
    let body = embeddings::render(
        &request.model,
        vectors,
        request.encoding_format,
        prompt_tokens,
    );
    MockReply {
        shape: ReplyShape::Whole,
        steps: vec![body],
        offsets: Vec::new(),
        usage: Usage {
            prompt_tokens,
            completion_tokens: 0,
        },
    }
}

/// OpenAI's 400 when the embeddings of `request` could exceed `mock.max_reply_bytes`: each
/// input is a vector of `dimensions` numbers, up to 16 bytes each as JSON floats.
pub fn check_embeddings(config: &MockConfig, request: &EmbeddingsRequest) -> Result<(), ApiError> {
    let dimensions = request
        .dimensions
        .unwrap_or_else(|| default_dimensions(&request.model)) as u64;
    let one = CHOICE_BYTES + 16 * dimensions;
    let estimate = REPLY_BYTES + json_str_len(&request.model) + request.inputs.len() as u64 * one;
    let fewer = (request.inputs.len() > 1).then_some("input");
    let culprit = if request.dimensions.is_some() {
        "dimensions"
    } else {
        "input"
    };
    check_reply(
        config.max_reply_bytes,
        estimate,
        REPLY_BYTES + one,
        fewer,
        culprit,
    )
}

/// OpenAI's vector size for the model: 3072 for text-embedding-3-large, else 1536.
fn default_dimensions(model: &str) -> usize {
    if model.contains("embedding-3-large") {
        3072
    } else {
        1536
    }
}

/// A unit vector seeded by a stable hash (FNV-1a) of the input.
fn embedding_vector(input: &EmbeddingInput, dimensions: usize) -> Vec<f32> {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = |seed: u64, bytes: &[u8]| {
        bytes
            .iter()
            .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
    };
    let seed = match input {
        EmbeddingInput::Text(text) => hash(hash(FNV_OFFSET, b"text:"), text.as_bytes()),
        EmbeddingInput::Tokens(ids) => ids.iter().fold(hash(FNV_OFFSET, b"tokens:"), |h, id| {
            hash(h, &id.to_le_bytes())
        }),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

/// Cuts `text` the way a model stops: before the first of the generation's `stop` sequences it
/// contains, then at `max_tokens` (`finish_reason: "length"`). Returns the choice and its token
/// count.
fn shape_reply<'a>(
    tokenizer: Tokenizer,
    generation: &Generation<'_>,
    text: &'a str,
) -> (ChoiceText<'a>, u32) {
    let text = generation
        .stop
        .iter()
        .filter_map(|sequence| text.find(sequence.as_str()))
        .min()
        .map_or(text, |cut| &text[..cut]);
    // An echo of the whole prompt reuses the prompt's tokens; a cut one is encoded anew.
    let ids = generation
        .prompt_ids
        .filter(|_| text == generation.prompt_text);
    let limit = generation.max_tokens.unwrap_or(u32::MAX);
    let (mut tokens, mut end) = (0u32, 0usize);
    let mut deltas = Vec::new();
    let mut finish_reason = FinishReason::Stop;
    for piece in tokenizer.pieces(generation.model, text, ids) {
        if tokens.saturating_add(piece.tokens) > limit {
            finish_reason = FinishReason::Length;
            break;
        }
        tokens += piece.tokens;
        end += piece.text.len();
        deltas.push(piece.text);
    }
    let choice = ChoiceText {
        content: &text[..end],
        deltas,
        tool_calls: Vec::new(),
        finish_reason,
    };
    (choice, tokens)
}

/// Where the reply text of a generation comes from: the request's httpbun override, else the
/// first matching rule, else the configured content mode. Only lorem differs between choices.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// The request's httpbun override.
    Override(&'a str),
    /// A rule's reply, or the fixed content.
    Configured(&'a str),
    /// The prompt, echoed.
    Echo(&'a str),
    /// Filler sentences.
    Lorem { min_tokens: u32, max_tokens: u32 },
}

fn reply_source<'a, 'h>(
    config: &'a MockConfig,
    request: &Generation<'a>,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> Source<'a> {
    if let Some(text) = request.content_override {
        return Source::Override(text);
    }
    if let Some(rule) = config
        .rules
        .iter()
        .find(|rule| matches(&rule.when, request, header))
    {
        return Source::Configured(&rule.reply);
    }
    match &config.content {
        ContentMode::Echo {} => Source::Echo(request.prompt_text),
        ContentMode::Fixed { text } => Source::Configured(text),
        ContentMode::Lorem {
            min_tokens,
            max_tokens,
        } => Source::Lorem {
            min_tokens: *min_tokens,
            max_tokens: *max_tokens,
        },
    }
}

/// The reply text of each of the `n` choices, from `source`.
fn reply_texts<'a>(
    source: Source<'a>,
    tokenizer: Tokenizer,
    request: &Generation<'a>,
) -> Vec<Cow<'a, str>> {
    let n = request.n as usize;
    match source {
        Source::Override(text) | Source::Configured(text) | Source::Echo(text) => {
            vec![Cow::Borrowed(text); n]
        }
        Source::Lorem {
            min_tokens,
            max_tokens,
        } => {
            let mut rng = seeded(request.seed);
            (0..n)
                .map(|_| {
                    let text = match request.max_tokens {
                        // More words than tokens allowed: the reply is cut with "length".
                        Some(limit) => lorem::filler(&mut rng, limit as usize + 1),
                        None => {
                            let tokens = rng.random_range(min_tokens..=max_tokens);
                            sentence_of_tokens(tokenizer, request.model, &mut rng, tokens)
                        }
                    };
                    Cow::Owned(text)
                })
                .collect()
        }
    }
}

/// Filler of about `tokens` tokens that ends a sentence, so the reply stops naturally.
fn sentence_of_tokens(tokenizer: Tokenizer, model: &str, rng: &mut StdRng, tokens: u32) -> String {
    let text = lorem::filler(rng, tokens as usize);
    let end: usize = tokenizer
        .pieces(model, &text, None)
        .iter()
        .scan(0u32, |count, piece| {
            *count += piece.tokens;
            (*count <= tokens).then_some(piece.text.len())
        })
        .sum();
    let kept = text[..end].trim_end_matches([' ', ',', '.']);
    format!("{kept}.")
}

/// Whether every condition of a rule holds for this request.
fn matches<'h>(
    when: &RuleMatch,
    request: &Generation<'_>,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> bool {
    when.model
        .as_ref()
        .is_none_or(|model| *model == request.model)
        && when
            .user_message_regex
            .as_ref()
            .is_none_or(|regex| regex.is_match(request.prompt_text))
        && when
            .header
            .as_ref()
            .is_none_or(|expected| header(&expected.name) == Some(expected.value.as_bytes()))
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
mod tests {
    use super::*;
    use serde_json::Value;

    fn request(body: &str) -> ChatRequest {
        ChatRequest::parse(body.as_bytes()).unwrap()
    }

    fn answer(config: &MockConfig, body: &str) -> Value {
        let reply = chat_completion(
            config,
            Tokenizer::Exact,
            &instant(),
            &request(body),
            no_headers,
        )
        .unwrap();
        assert_eq!(reply.shape, ReplyShape::Whole);
        assert!(reply.offsets.is_empty());
        serde_json::from_slice(&reply.steps.concat()).unwrap()
    }

    const HELLO: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;

    #[test]
    fn echo_returns_the_last_user_message_and_the_model() {
        let body = answer(&MockConfig::default(), HELLO);
        assert_eq!(body["choices"][0]["message"]["content"], "hello");
        assert_eq!(body["model"], "gpt-4o-mini");
        let usage = &body["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(
                usage["prompt_tokens"].as_u64().unwrap()
                    + usage["completion_tokens"].as_u64().unwrap()
            )
        );
    }

    #[test]
    fn fixed_text_and_the_httpbun_override() {
        let fixed = MockConfig {
            content: ContentMode::Fixed {
                text: "configured".into(),
            },
            ..MockConfig::default()
        };
        assert_eq!(
            answer(&fixed, HELLO)["choices"][0]["message"]["content"],
            "configured"
        );
        let overridden = r#"{"model":"m","messages":[{"role":"user","content":"q"}],
                             "httpbun":{"content":"from request"}}"#;
        assert_eq!(
            answer(&fixed, overridden)["choices"][0]["message"]["content"],
            "from request"
        );
    }

    fn choice_of(body: &Value, i: usize) -> (&str, &str) {
        let choice = &body["choices"][i];
        (
            choice["message"]["content"].as_str().unwrap(),
            choice["finish_reason"].as_str().unwrap(),
        )
    }

    #[test]
    fn max_tokens_cuts_at_a_token_boundary_with_length() {
        let body = answer(
            &MockConfig::default(),
            r#"{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"one two three four"}]}"#,
        );
        assert_eq!(choice_of(&body, 0), ("one two", "length"));
        assert_eq!(body["usage"]["completion_tokens"], 2);

        let exact = r#"{"model":"gpt-4o","max_tokens":4,"messages":[{"role":"user","content":"one two three four"}]}"#;
        assert_eq!(
            choice_of(&answer(&MockConfig::default(), exact), 0),
            ("one two three four", "stop")
        );
    }

    #[test]
    fn stop_ends_the_reply_before_the_sequence() {
        let body = answer(
            &MockConfig::default(),
            r#"{"model":"gpt-4o","stop":["END","three"],"messages":[{"role":"user","content":"one two three END"}]}"#,
        );
        assert_eq!(choice_of(&body, 0), ("one two ", "stop"));
        // "one", " two", " "
        assert_eq!(body["usage"]["completion_tokens"], 3);
    }

    #[test]
    fn n_choices_are_all_counted() {
        let body = answer(
            &MockConfig::default(),
            r#"{"model":"gpt-4o","n":3,"messages":[{"role":"user","content":"hello world"}]}"#,
        );
        assert_eq!(body["choices"].as_array().unwrap().len(), 3);
        assert_eq!(choice_of(&body, 2), ("hello world", "stop"));
        assert_eq!(body["usage"]["completion_tokens"], 6);
    }

    #[test]
    fn usage_counts_exact_tokens() {
        let body = answer(&MockConfig::default(), HELLO);
        // "hello": 1 token; prompt: 3 + 3 + "user" (1) + "hello" (1).
        assert_eq!(body["usage"]["completion_tokens"], 1);
        assert_eq!(body["usage"]["prompt_tokens"], 8);
    }

    #[test]
    fn a_prompt_over_the_context_window_is_openais_400() {
        let small = config(r#"{"mock": {"context_windows": {"gpt-4o": 10}}}"#);
        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two three four five"}]}"#;
        let request = request(body);
        let err = chat_completion(&small, Tokenizer::Exact, &instant(), &request, no_headers)
            .unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (400, Some("context_length_exceeded"))
        );
        assert_eq!(err.param.as_deref(), Some("messages"));
        assert!(err.message.contains("maximum context length is 10 tokens"));
        assert!(
            err.message.contains("resulted in 12 tokens"),
            "{}",
            err.message
        );

        let fits = config(r#"{"mock": {"context_windows": {"*": 12}}}"#);
        assert!(chat_completion(&fits, Tokenizer::Exact, &instant(), &request, no_headers).is_ok());
        let with_completion = r#"{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"one two three four five"}]}"#;
        let err = chat_completion(
            &fits,
            Tokenizer::Exact,
            &instant(),
            &self::request(with_completion),
            no_headers,
        )
        .unwrap_err();
        assert!(
            err.message
                .contains("you requested 17 tokens (12 in the messages, 5 in the completion)"),
            "{}",
            err.message
        );
    }

    fn embed(body: &str) -> Value {
        let request = EmbeddingsRequest::parse(body.as_bytes()).unwrap();
        serde_json::from_slice(&embeddings(Tokenizer::Exact, &request).steps.concat()).unwrap()
    }

    fn vector(body: &Value, i: usize) -> Vec<f64> {
        body["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let body = embed(r#"{"model":"text-embedding-3-small","input":["hello","hello","bye"]}"#);
        let (a, b, c) = (vector(&body, 0), vector(&body, 1), vector(&body, 2));
        assert_eq!(a.len(), 1536);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        assert_eq!(body["usage"]["total_tokens"], 3);
        let again = embed(r#"{"model":"text-embedding-3-small","input":"hello"}"#);
        assert_eq!(vector(&again, 0), a);
    }

    #[test]
    fn embedding_sizes_follow_the_model_and_dimensions() {
        let large = embed(r#"{"model":"text-embedding-3-large","input":"x"}"#);
        assert_eq!(vector(&large, 0).len(), 3072);
        let small = embed(r#"{"model":"m","input":[[1,2,3]],"dimensions":8}"#);
        assert_eq!(vector(&small, 0).len(), 8);
        assert_eq!(small["usage"]["prompt_tokens"], 3);
    }

    fn complete(config: &MockConfig, body: &str) -> Value {
        let request = CompletionRequest::parse(body.as_bytes()).unwrap();
        let reply = text_completion(config, Tokenizer::Exact, &instant(), &request, no_headers);
        serde_json::from_slice(&reply.unwrap().steps.concat()).unwrap()
    }

    #[test]
    fn legacy_completions_echo_the_prompt_up_to_16_tokens_by_default() {
        let long = "one two three four five six seven eight nine ten eleven twelve thirteen \
                    fourteen fifteen sixteen seventeen";
        let body = complete(
            &MockConfig::default(),
            &format!(r#"{{"model":"gpt-4o","prompt":"{long}"}}"#),
        );
        assert_eq!(body["object"], "text_completion");
        assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 16);
        assert!(long.starts_with(choice["text"].as_str().unwrap()));
    }

    #[test]
    fn legacy_completions_take_token_prompts_echo_and_several_prompts() {
        let ids = tiktoken_rs::o200k_base_singleton().encode_ordinary("hello world");
        let body = format!(r#"{{"model":"gpt-4o","prompt":[{ids:?},"bye"],"n":2,"echo":true}}"#);
        let body = complete(&MockConfig::default(), &body);
        let texts: Vec<&str> = body["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "hello worldhello world",
                "hello worldhello world",
                "byebye",
                "byebye"
            ]
        );
        assert_eq!(body["usage"]["prompt_tokens"], 3);
        assert_eq!(body["choices"][3]["index"], 3);
    }

    const TOOLS: &str = r#""tools": [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
            "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}]"#;

    fn chat(body: &str) -> Value {
        answer(&MockConfig::default(), body)
    }

    fn called(body: &Value) -> Vec<String> {
        body["choices"][0]["message"]["tool_calls"]
            .as_array()
            .map(|calls| {
                calls
                    .iter()
                    .map(|c| c["function"]["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn tools_are_called_with_arguments_from_their_schema() {
        let body = chat(&format!(
            r#"{{"model":"gpt-4o",{TOOLS},"messages":[{{"role":"user","content":"weather in Paris?"}}]}}"#
        ));
        assert_eq!(called(&body), ["get_weather"]);
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(arguments["city"].is_string());
        assert!(["c", "f"].contains(&arguments["unit"].as_str().unwrap()));
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn tool_selection_follows_mentions_parallelism_and_tool_choice() {
        let ask = |extra: &str, text: &str| {
            chat(&format!(
                r#"{{"model":"gpt-4o",{TOOLS}{extra},"messages":[{{"role":"user","content":"{text}"}}]}}"#
            ))
        };
        assert_eq!(
            called(&ask("", "get weather and get time")),
            ["get_weather", "get_time"]
        );
        assert_eq!(
            called(&ask(
                r#","parallel_tool_calls":false"#,
                "get weather and get time"
            )),
            ["get_weather"]
        );
        assert_eq!(called(&ask("", "hello")), ["get_weather"]);
        let named = r#","tool_choice":{"type":"function","function":{"name":"get_time"}}"#;
        assert_eq!(called(&ask(named, "weather?")), ["get_time"]);
        let none = ask(r#","tool_choice":"none""#, "weather?");
        assert!(called(&none).is_empty());
        assert_eq!(none["choices"][0]["message"]["content"], "weather?");
    }

    #[test]
    fn after_a_tool_result_the_reply_is_text() {
        let body = chat(&format!(
            r#"{{"model":"gpt-4o",{TOOLS},"messages":[
                {{"role":"user","content":"weather?"}},
                {{"role":"assistant","tool_calls":[{{"id":"call_1","type":"function","function":{{"name":"get_weather","arguments":"{{}}"}}}}]}},
                {{"role":"tool","tool_call_id":"call_1","content":"sunny"}}]}}"#
        ));
        assert!(called(&body).is_empty());
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn structured_output_follows_the_response_format() {
        let object = chat(
            r#"{"model":"gpt-4o","response_format":{"type":"json_object"},"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let content: Value =
            serde_json::from_str(object["choices"][0]["message"]["content"].as_str().unwrap())
                .unwrap();
        assert_eq!(content, serde_json::json!({"response": "hi"}));

        let schema = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0,"maximum":120}},"required":["name","age"],"additionalProperties":false}"#;
        let body = chat(&format!(
            r#"{{"model":"gpt-4o","seed":1,"response_format":{{"type":"json_schema","json_schema":{{"name":"person","strict":true,"schema":{schema}}}}},"messages":[{{"role":"user","content":"hi"}}]}}"#
        ));
        let content: Value =
            serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap())
                .unwrap();
        assert!(content["name"].is_string());
        assert!((0..=120).contains(&content["age"].as_i64().unwrap()));
    }

    #[test]
    fn ids_are_fresh_and_hex() {
        let a = answer(&MockConfig::default(), HELLO)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let b = answer(&MockConfig::default(), HELLO)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_ne!(a, b);
        let hex = a.strip_prefix("chatcmpl-").unwrap();
        assert_eq!(hex.len(), 32);
        assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn streams_when_asked() {
        let reply = chat_completion(
            &MockConfig::default(),
            Tokenizer::Exact,
            &instant(),
            &request(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#),
            no_headers,
        )
        .unwrap();
        assert_eq!(reply.shape, ReplyShape::Stream);
        assert_eq!(reply.shape.content_type(), "text/event-stream");
        assert!(reply.steps.concat().ends_with(b"data: [DONE]\n\n"));
    }

    fn no_headers(_: &str) -> Option<&'static [u8]> {
        None
    }

    fn config(json: &str) -> MockConfig {
        crate::config::FilterConfig::from_json(json.as_bytes())
            .unwrap()
            .mock
    }

    fn content_with(
        config: &MockConfig,
        body: &str,
        headers: &[(&str, &'static str)],
    ) -> Vec<String> {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        };
        let reply =
            chat_completion(config, Tokenizer::Exact, &instant(), &request(body), header).unwrap();
        let body: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
        body["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["message"]["content"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_first_matching_rule_answers() {
        let rules = config(
            r#"{"mock": {"rules": [
                {"when": {"model": "gpt-4o", "user_message_regex": "(?i)weather"}, "reply": "Sunny."},
                {"when": {"header": {"name": "x-tenant", "value": "acme"}}, "reply": "Hello, Acme."}
            ]}}"#,
        );
        let weather =
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"What's the Weather?"}]}"#;
        assert_eq!(content_with(&rules, weather, &[]), ["Sunny."]);
        let other_model = weather.replace("gpt-4o", "gpt-5");
        assert_eq!(
            content_with(&rules, &other_model, &[]),
            ["What's the Weather?"]
        );
        assert_eq!(
            content_with(&rules, &other_model, &[("x-tenant", "acme")]),
            ["Hello, Acme."]
        );
        assert_eq!(
            content_with(&rules, &other_model, &[("x-tenant", "other")]),
            ["What's the Weather?"]
        );
    }

    #[test]
    fn lorem_fills_to_max_tokens_and_repeats_with_a_seed() {
        let lorem = config(r#"{"mock": {"content": {"mode": "lorem"}}}"#);
        let body = r#"{"model":"gpt-4o","max_tokens":30,"seed":5,"n":2,"messages":[{"role":"user","content":"q"}]}"#;
        let reply = chat_completion(
            &lorem,
            Tokenizer::Exact,
            &instant(),
            &request(body),
            no_headers,
        )
        .unwrap();
        let json: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
        assert_eq!(json["usage"]["completion_tokens"], 60);
        assert_eq!(json["choices"][0]["finish_reason"], "length");
        let texts = content_with(&lorem, body, &[]);
        assert_ne!(texts[0], texts[1], "choices differ");
        assert_eq!(
            texts,
            content_with(&lorem, body, &[]),
            "the seed repeats them"
        );
    }

    #[test]
    fn lorem_without_max_tokens_ends_a_sentence_within_the_range() {
        let lorem = config(
            r#"{"mock": {"content": {"mode": "lorem", "min_tokens": 10, "max_tokens": 40}}}"#,
        );
        for seed in 0..20 {
            let body = format!(
                r#"{{"model":"gpt-4o","seed":{seed},"messages":[{{"role":"user","content":"q"}}]}}"#
            );
            let reply = chat_completion(
                &lorem,
                Tokenizer::Exact,
                &instant(),
                &request(&body),
                no_headers,
            )
            .unwrap();
            let json: Value = serde_json::from_slice(&reply.steps.concat()).unwrap();
            let tokens = json["usage"]["completion_tokens"].as_u64().unwrap();
            assert!((5..=41).contains(&tokens), "{tokens}");
            assert_eq!(json["choices"][0]["finish_reason"], "stop");
            assert!(
                json["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .ends_with('.')
            );
        }
    }

    fn instant() -> Timing {
        Timing::from_config(&LatencyConfig::default())
    }

    fn paced(jitter: f64, seed: Option<u64>) -> Timing {
        Timing::from_config(&LatencyConfig {
            time_to_first_token_ms: 100,
            inter_token_ms: 10,
            jitter,
            seed,
        })
    }

    #[test]
    fn offsets_follow_ttft_then_inter_token_gaps() {
        let ms = Duration::from_millis;
        assert_eq!(paced(0.0, None).offsets(3), [ms(100), ms(110), ms(120)]);
        assert!(paced(0.0, None).offsets(0).is_empty());
        assert!(instant().is_instant() && !paced(0.0, None).is_instant());
    }

    #[test]
    fn seeded_jitter_repeats_and_stays_in_bounds() {
        let a = paced(0.5, Some(42)).offsets(50);
        assert_eq!(a, paced(0.5, Some(42)).offsets(50));
        assert_ne!(a, paced(0.5, Some(43)).offsets(50));
        assert!((50..=150).contains(&a[0].as_millis()));
        for gap in a.windows(2).map(|w| w[1] - w[0]) {
            assert!((5..=15).contains(&gap.as_millis()), "{gap:?}");
        }
    }

    #[test]
    fn paced_stream_has_one_offset_per_step_and_a_whole_reply_one() {
        let paced_reply = |body: &str| {
            chat_completion(
                &MockConfig::default(),
                Tokenizer::Exact,
                &paced(0.0, None),
                &request(body),
                no_headers,
            )
            .unwrap()
        };
        let reply = paced_reply(
            r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"one two three"}]}"#,
        );
        assert_eq!((reply.steps.len(), reply.offsets.len()), (3, 3));

        let reply = paced_reply(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"one two three"}]}"#,
        );
        assert_eq!(reply.steps.len(), 1);
        assert_eq!(reply.offsets, [Duration::from_millis(120)]);
    }

    /// A random text with what JSON escapes (quotes, backslashes, control bytes) and
    /// multi-byte characters.
    fn random_text(rng: &mut StdRng, len: usize) -> String {
        const PARTS: [&str; 12] = [
            "word", " ", "\"", "\\", "\n", "\u{1}", "é", "漢字", "🙂", "12345", ", ", "lorem ",
        ];
        (0..len)
            .map(|_| PARTS[rng.random_range(0..PARTS.len())])
            .collect()
    }

    /// A random chat-shaped request body for `wire`: every amplifier (n, echo, max_tokens,
    /// stream, tools, schemas) drawn at random.
    fn random_body(rng: &mut StdRng, wire: Wire) -> serde_json::Value {
        use serde_json::json;
        let len = rng.random_range(0..200);
        let prompt = random_text(rng, len);
        let len = rng.random_range(1..6);
        let model = random_text(rng, len);
        // Seeded, so that lorem repeats its text between calls.
        let mut body = json!({"model": model, "stream": rng.random_bool(0.5), "seed": 7});
        let n = rng.random_range(1..=4u32);
        let max_tokens = rng.random_range(1..300u32);
        let schema = json!({"type": "object", "properties": {
            "a": {"type": "string", "minLength": rng.random_range(0..2000)},
            "b": {"type": "array", "items": {"type": "number"}, "minItems": rng.random_range(0..50)},
            "c": {"enum": ["x\"y", "z\n"]}}, "required": ["a", "b", "c"]});
        let tools = json!([{"type": "function", "function": {"name": "get_x", "parameters": schema}},
                           {"type": "function", "function": {"name": "get_y"}}]);
        match wire {
            Wire::Chat => {
                body["messages"] = json!([{"role": "user", "content": prompt}]);
                body["n"] = json!(n);
                if rng.random_bool(0.5) {
                    body["max_tokens"] = json!(max_tokens);
                }
                if rng.random_bool(0.3) {
                    body["stop"] = json!(["o"]);
                }
                match rng.random_range(0..4) {
                    0 => body["tools"] = tools,
                    1 => body["response_format"] = json!({"type": "json_object"}),
                    2 => {
                        body["response_format"] = json!({"type": "json_schema",
                            "json_schema": {"name": "s", "schema": schema}})
                    }
                    _ => {}
                }
                if rng.random_bool(0.5) {
                    body["stream_options"] = json!({"include_usage": true});
                    body["stream"] = json!(true);
                }
            }
            Wire::Completions => {
                body["prompt"] = json!([prompt, random_text(rng, 20)]);
                body["n"] = json!(n);
                body["max_tokens"] = json!(max_tokens);
                body["echo"] = json!(rng.random_bool(0.5));
            }
            Wire::Responses => {
                body["input"] = json!(prompt);
                body["instructions"] = json!(random_text(rng, 30));
                body["max_output_tokens"] = json!(max_tokens);
                match rng.random_range(0..3) {
                    0 => {
                        body["tools"] = json!([{"type": "function", "name": "get_x",
                                                "parameters": schema}])
                    }
                    1 => {
                        body["text"] = json!({"format": {"type": "json_schema", "name": "s",
                                                         "schema": schema}})
                    }
                    _ => {}
                }
            }
            Wire::Messages => {
                body["messages"] = json!([{"role": "user", "content": prompt}]);
                body["max_tokens"] = json!(max_tokens);
                if rng.random_bool(0.5) {
                    body["tools"] = json!([{"name": "get_x", "input_schema": schema}]);
                }
            }
        }
        body
    }

    fn reply_to(config: &MockConfig, wire: Wire, body: &[u8]) -> Result<MockReply, ApiError> {
        let timing = instant();
        match wire {
            Wire::Chat => chat_completion(
                config,
                Tokenizer::Exact,
                &timing,
                &ChatRequest::parse(body).unwrap(),
                no_headers,
            ),
            Wire::Completions => text_completion(
                config,
                Tokenizer::Exact,
                &timing,
                &CompletionRequest::parse(body).unwrap(),
                no_headers,
            ),
            // These APIs take no seed; one is set so that generated text repeats between calls.
            Wire::Responses => {
                let mut request = ResponsesRequest::parse(body).unwrap();
                request.chat.seed = Some(7);
                response(config, Tokenizer::Exact, &timing, &request, no_headers)
            }
            Wire::Messages => {
                let mut request = MessagesRequest::parse(body).unwrap();
                request.chat.seed = Some(7);
                anthropic_message(config, Tokenizer::Exact, &timing, &request, no_headers)
            }
        }
    }

    fn reply_bytes(reply: &MockReply) -> u64 {
        reply.steps.iter().map(|step| step.len() as u64).sum()
    }

    #[test]
    fn the_reply_size_estimate_bounds_every_reply_and_the_ceiling_refuses_beyond_it() {
        let mut rng = StdRng::seed_from_u64(19);
        let contents = [
            ContentMode::Echo {},
            ContentMode::Fixed {
                text: "fixed \"text\"\n".repeat(20),
            },
            ContentMode::Lorem {
                min_tokens: 1,
                max_tokens: 200,
            },
        ];
        for case in 0..400 {
            let wire = [
                Wire::Chat,
                Wire::Completions,
                Wire::Responses,
                Wire::Messages,
            ][case % 4];
            let body = random_body(&mut rng, wire).to_string();
            let mut config = MockConfig {
                content: contents[rng.random_range(0..contents.len())].clone(),
                max_reply_bytes: u64::MAX,
                ..MockConfig::default()
            };
            let size = reply_bytes(&reply_to(&config, wire, body.as_bytes()).unwrap());
            // Refused just below the reply's size: the estimate is at least the real size.
            config.max_reply_bytes = size - 1;
            match reply_to(&config, wire, body.as_bytes()) {
                Err(err) => assert_eq!((err.status, err.code), (400, Some("reply_too_large"))),
                Ok(_) => panic!("a {size}-byte reply was estimated smaller: {wire:?} {body}"),
            }
            // Under any ceiling, a reply is either refused or within it.
            config.max_reply_bytes = rng.random_range(size / 4..=size * 4);
            if let Ok(reply) = reply_to(&config, wire, body.as_bytes()) {
                assert!(reply_bytes(&reply) <= config.max_reply_bytes, "{body}");
            }
        }
    }

    #[test]
    fn a_streamed_128_choice_echo_is_refused_naming_n_and_one_choice_is_served() {
        let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(32 * 1024 / 45);
        let body = |n: u32| {
            serde_json::json!({"model": "gpt-4o", "stream": true, "n": n,
                               "messages": [{"role": "user", "content": prompt}]})
            .to_string()
        };
        let config = MockConfig::default();
        let err = reply_to(&config, Wire::Chat, body(128).as_bytes()).unwrap_err();
        assert_eq!((err.status, err.param.as_deref()), (400, Some("n")));
        assert!(
            err.message.contains("limit of 16777216 bytes"),
            "{}",
            err.message
        );
        let reply = reply_to(&config, Wire::Chat, body(1).as_bytes()).unwrap();
        assert!(reply_bytes(&reply) < config.max_reply_bytes);
        // The estimate is not far above the real size: a few choices still fit.
        assert!(reply_to(&config, Wire::Chat, body(4).as_bytes()).is_ok());
    }

    #[test]
    fn huge_lorem_max_tokens_and_many_tools_are_refused_before_generating() {
        let lorem = MockConfig {
            content: ContentMode::Lorem {
                min_tokens: 1,
                max_tokens: 10,
            },
            ..MockConfig::default()
        };
        let body =
            r#"{"model":"m","max_tokens":4294967295,"messages":[{"role":"user","content":"q"}]}"#;
        let err = reply_to(&lorem, Wire::Chat, body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));
        let err = reply_to(&lorem, Wire::Messages, body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("max_tokens"));

        let names: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
        let tools: Vec<String> = names
            .iter()
            .map(|name| {
                format!(
                    r#"{{"type":"function","function":{{"name":"{name}","parameters":{{"type":"string","minLength":100000}}}}}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"model":"m","tools":[{}],"messages":[{{"role":"user","content":"{}"}}]}}"#,
            tools.join(","),
            names.join(" ")
        );
        let err = reply_to(&MockConfig::default(), Wire::Chat, body.as_bytes()).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tools"));
    }

    #[test]
    fn embeddings_over_the_ceiling_are_refused_naming_input_or_dimensions() {
        let config = MockConfig::default();
        let inputs = vec!["\"x\""; 2048].join(",");
        let many = format!(r#"{{"model":"text-embedding-3-large","input":[{inputs}]}}"#);
        let request = EmbeddingsRequest::parse(many.as_bytes()).unwrap();
        assert_eq!(
            check_embeddings(&config, &request)
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        let one = EmbeddingsRequest::parse(br#"{"model":"m","input":"x","dimensions":8}"#).unwrap();
        assert!(check_embeddings(&config, &one).is_ok());
        let mut rng = StdRng::seed_from_u64(6);
        for _ in 0..50 {
            let inputs = rng.random_range(1..20);
            let dimensions = rng.random_range(1..=3072);
            let body = format!(
                r#"{{"model":"m","input":{:?},"dimensions":{dimensions},"encoding_format":"{}"}}"#,
                vec!["x"; inputs],
                ["float", "base64"][rng.random_range(0..2)]
            );
            let request = EmbeddingsRequest::parse(body.as_bytes()).unwrap();
            let size = reply_bytes(&embeddings(Tokenizer::Exact, &request));
            let tight = MockConfig {
                max_reply_bytes: size - 1,
                ..MockConfig::default()
            };
            assert!(check_embeddings(&tight, &request).is_err(), "{body}");
        }
    }

    #[test]
    fn lorem_words_fit_their_byte_bound() {
        let mut rng = StdRng::seed_from_u64(3);
        for words in [1, 2, 7, 100, 1000] {
            let text = lorem::filler(&mut rng, words);
            assert!(
                text.len() as u64 <= words as u64 * LOREM_WORD_BYTES,
                "{words}"
            );
        }
    }
}
