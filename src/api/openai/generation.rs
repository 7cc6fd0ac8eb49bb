//! What every generating endpoint reports, whatever its wire shape: token usage, why a choice
//! ended, and a choice's text and tool calls as the mock produced them.

use serde::Serialize;

/// Token counts reported in `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Tokens in the prompt, chat formatting included.
    pub prompt_tokens: u32,
    /// Tokens in the reply.
    pub completion_tokens: u32,
    /// Of `prompt_tokens`, those the (simulated) prefix cache already held.
    pub cached_tokens: u32,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The reply is complete, or reached a `stop` sequence.
    Stop,
    /// The reply hit `max_tokens`.
    Length,
    /// The reply calls tools.
    ToolCalls,
}

impl FinishReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::ToolCalls => "tool_calls",
        }
    }
}

/// One choice's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChoiceText<'a> {
    /// The whole reply text (empty, and `null` on the wire, when the choice calls tools).
    pub content: &'a str,
    /// The reply cut at token boundaries, one streamed delta each; they concatenate to `content`.
    pub deltas: Vec<&'a str>,
    /// Function calls, in order.
    pub tool_calls: Vec<ToolCallText>,
    /// Why the reply ended.
    pub finish_reason: FinishReason,
}

impl ChoiceText<'_> {
    /// How many streamed steps the choice takes: one per content delta, and per tool call one to
    /// open it plus one per arguments fragment.
    pub fn steps(&self) -> usize {
        self.deltas.len()
            + self
                .tool_calls
                .iter()
                .map(|call| 1 + call.cuts.len())
                .sum::<usize>()
    }
}

/// A function call in a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallText {
    /// `call_…`.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object as a string.
    pub arguments: String,
    /// Where the streamed arguments fragments end, as byte offsets into `arguments`.
    pub cuts: Vec<usize>,
}

#[derive(Serialize)]
pub(crate) struct UsageJson {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize)]
struct PromptTokensDetails {
    cached_tokens: u32,
    audio_tokens: u32,
}

#[derive(Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u32,
    audio_tokens: u32,
    accepted_prediction_tokens: u32,
    rejected_prediction_tokens: u32,
}

impl From<Usage> for UsageJson {
    fn from(usage: Usage) -> Self {
        Self {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: usage.cached_tokens,
                audio_tokens: 0,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        }
    }
}

/// A chunk's `usage`: absent unless usage was requested, then null on every chunk but the last.
pub(crate) enum UsageField {
    /// Usage was not asked for.
    Absent,
    /// Usage comes in the last chunk; this one has none.
    Null,
    /// The usage chunk.
    Present(UsageJson),
}

impl UsageField {
    pub(crate) fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }
}

impl Serialize for UsageField {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Present(usage) => usage.serialize(serializer),
            Self::Absent | Self::Null => serializer.serialize_none(),
        }
    }
}
