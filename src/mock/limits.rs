//! The reply ceiling: an upper bound on a reply's size, proven before it is built, and the
//! context-window check.

use super::Generation;
use super::content::Source;
use super::schema_gen;
use crate::api::openai::ApiError;
use crate::api::openai::chat::{ChatRequest, ResponseFormat, ToolChoice};
use crate::api::openai::generation::ChoiceText;
use crate::api::openai::responses::ResponsesRequest;

/// Whose wire format a reply is rendered in, for bounding its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
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
pub(super) struct Params {
    /// The prompt an echo repeats.
    pub(super) prompt: &'static str,
    /// The reply's token limit.
    pub(super) max_tokens: &'static str,
    /// The structured-output format.
    pub(super) format: &'static str,
    /// httpbun's reply override.
    pub(super) content: &'static str,
}

impl Wire {
    pub(super) fn params(self) -> Params {
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
                format: "output_config.format",
                content: "httpbun.content",
            },
        }
    }
}

impl Source<'_> {
    /// The parameter that sets how long this source's text is.
    pub(super) fn param(self, params: Params) -> &'static str {
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
pub(super) const EVENT_BYTES: u64 = 320;

/// The most bytes one choice, or one tool call, takes besides its texts and events.
pub(super) const CHOICE_BYTES: u64 = 320;

/// The most bytes a reply takes besides its choices, the model's name and the request fields
/// it repeats: envelope, usage, the opening and closing events.
pub(super) const REPLY_BYTES: u64 = 8192;

/// The most times a reply names the model outside its per-event envelopes.
pub(super) const MODEL_COPIES: u64 = 8;

/// The most bytes one lorem word takes with what follows it: 13 letters, a comma or full stop,
/// a space.
pub(super) const LOREM_WORD_BYTES: u64 = 16;

/// The most bytes a generated schema value takes: its room, plus a `null` per nesting level
/// where the room ran out (requests nest at most 128 deep).
pub(super) const SCHEMA_VALUE_BYTES: u64 = schema_gen::MAX_OUTPUT_BYTES as u64 + 128 * 8;

/// The bytes `text` takes as a JSON string, quotes included, escaped as serde_json and
/// [`crate::api::json_writer`] escape it.
pub(super) fn json_str_len(text: &str) -> u64 {
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
pub(super) fn request_echo_bytes(request: &ResponsesRequest) -> u64 {
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
pub(super) fn generated_bytes(
    source: Source<'_>,
    generation: &Generation<'_>,
    request: &ChatRequest,
) -> u64 {
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
pub(super) struct ReplySize {
    /// The wire format.
    pub(super) wire: Wire,
    /// Whether the reply streams, one event per token.
    pub(super) stream: bool,
    /// The model's name as a JSON string.
    pub(super) model: u64,
    /// The bytes of request fields the reply repeats.
    pub(super) request_echo: u64,
}

impl ReplySize {
    pub(super) fn new(wire: Wire, request: &ChatRequest, request_echo: u64) -> Self {
        Self {
            wire,
            stream: request.stream,
            model: json_str_len(&request.model),
            request_echo,
        }
    }

    /// An upper bound of the bytes the reply of these choices renders to; `echoes` are the
    /// prompts a legacy completion repeats before each choice's text.
    pub(super) fn of_choices(&self, choices: &[ChoiceText<'_>], echoes: &[&str]) -> u64 {
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
pub(super) fn check_reply(
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

/// The 400 when the prompt, plus the completion it asks room for, exceeds the window: OpenAI's
/// `context_length_exceeded`, or on Anthropic's wire its own wording.
pub(super) fn check_context(
    wire: Wire,
    window: u32,
    prompt: u32,
    max_tokens: Option<u32>,
) -> Result<(), ApiError> {
    let completion = max_tokens.unwrap_or(0);
    let requested = prompt.saturating_add(completion);
    if requested <= window {
        return Ok(());
    }
    let message = match (wire, max_tokens) {
        (Wire::Messages, _) if prompt > window => {
            format!("prompt is too long: {prompt} tokens > {window} maximum")
        }
        (Wire::Messages, _) => format!(
            "input length and `max_tokens` exceed context limit: {prompt} + {completion} > \
             {window}, decrease input length or `max_tokens` and try again"
        ),
        (_, None) => format!(
            "This model's maximum context length is {window} tokens. However, your messages \
             resulted in {prompt} tokens. Please reduce the length of the messages."
        ),
        (_, Some(_)) => format!(
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
