//! The chat completion llm-edge writes: a whole `chat.completion` object, or its stream of
//! `chat.completion.chunk` events.

use serde::Serialize;

use crate::api::json_writer;
use crate::api::openai::generation::{ChoiceText, FinishReason, Usage, UsageField, UsageJson};
use crate::api::sse;

/// Everything needed to render one mock chat completion, streamed or not.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// `chatcmpl-…`, shared by every chunk of a stream.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The model named in the response.
    pub model: &'a str,
    /// The choices, indexed from 0.
    pub choices: &'a [ChoiceText<'a>],
    /// The token counts, all choices together.
    pub usage: Usage,
}

/// `CreateChatCompletionResponse`.
#[derive(Serialize)]
struct ChatCompletionJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceJson<'a>>,
    usage: UsageJson,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct ChoiceJson<'a> {
    index: u32,
    message: MessageJson<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// `ChatCompletionResponseMessage`: `content` and `refusal` are required even when null.
#[derive(Serialize)]
struct MessageJson<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallJson<'a>>,
    annotations: [(); 0],
}

/// `ChatCompletionMessageToolCall`.
#[derive(Serialize)]
struct ToolCallJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionJson<'a>,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// `ChatCompletionMessageToolCallChunk`: the first chunk of a call names it, later ones carry
/// arguments fragments.
#[derive(Serialize)]
struct ToolCallDeltaJson<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaJson<'a>,
}

#[derive(Serialize)]
struct FunctionDeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// `CreateChatCompletionStreamResponse`.
#[derive(Serialize)]
struct ChunkJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [ChunkChoiceJson<'a>],
    service_tier: &'static str,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    usage: UsageField,
}

#[derive(Serialize)]
struct ChunkChoiceJson<'a> {
    index: u32,
    delta: DeltaJson<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct DeltaJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    /// Absent, `null` (a tool-calling reply's role chunk), or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaJson<'a>; 1]>,
}

/// Renders a complete `chat.completion` object.
pub fn render_completion(completion: &Completion<'_>) -> Vec<u8> {
    let body = ChatCompletionJson {
        id: completion.id,
        object: "chat.completion",
        created: completion.created,
        model: completion.model,
        choices: completion
            .choices
            .iter()
            .zip(0..)
            .map(|(choice, index)| ChoiceJson {
                index,
                message: MessageJson {
                    role: "assistant",
                    content: choice.tool_calls.is_empty().then_some(choice.content),
                    refusal: None,
                    tool_calls: choice
                        .tool_calls
                        .iter()
                        .map(|call| ToolCallJson {
                            id: &call.id,
                            kind: "function",
                            function: FunctionJson {
                                name: &call.name,
                                arguments: &call.arguments,
                            },
                        })
                        .collect(),
                    annotations: [],
                },
                logprobs: None,
                finish_reason: choice.finish_reason.as_str(),
            })
            .collect(),
        usage: completion.usage.into(),
        service_tier: "default",
    };
    serde_json::to_vec(&body).expect("serializing plain data cannot fail")
}

/// Renders a completion as server-sent events, each `data: …\n\n`, grouped in timed steps: step
/// `k` carries the `k`-th token piece of every choice (choices interleaved by `index`). The first
/// step also opens with a role chunk per choice; the last also carries a `finish_reason` chunk per
/// choice, the usage chunk when asked for, and `data: [DONE]`.
pub fn render_stream(completion: &Completion<'_>, include_usage: bool) -> Vec<Vec<u8>> {
    let usage_placeholder = || {
        if include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        }
    };
    let event = |out: &mut Vec<u8>, index: u32, delta, finish_reason: Option<FinishReason>| {
        let choice = ChunkChoiceJson {
            index,
            delta,
            logprobs: None,
            finish_reason: finish_reason.map(FinishReason::as_str),
        };
        write_chunk(out, completion, &[choice], usage_placeholder());
    };
    let indexed = || completion.choices.iter().zip(0..);
    let deltas: Vec<Vec<DeltaJson<'_>>> = completion.choices.iter().map(choice_deltas).collect();
    let longest = deltas.iter().map(Vec::len).max().unwrap_or(0);
    let mut steps = vec![Vec::new(); longest.max(1)];

    for (choice, index) in indexed() {
        let role = DeltaJson {
            role: Some("assistant"),
            content: Some(choice.tool_calls.is_empty().then_some("")),
            tool_calls: None,
        };
        event(&mut steps[0], index, role, None);
    }
    let mut per_choice: Vec<_> = deltas.into_iter().map(Vec::into_iter).collect();
    let content_chunks: Vec<ContentChunk> = indexed()
        .map(|(_, index)| ContentChunk::new(completion, index, usage_placeholder()))
        .collect();
    for step in steps.iter_mut().take(longest) {
        for ((events, index), content_chunk) in per_choice.iter_mut().zip(0..).zip(&content_chunks)
        {
            match events.next() {
                Some(DeltaJson {
                    role: None,
                    content: Some(Some(piece)),
                    tool_calls: None,
                }) => content_chunk.write(step, piece),
                Some(delta) => event(step, index, delta, None),
                None => {}
            }
        }
    }
    let last = steps.last_mut().expect("at least one step");
    for (choice, index) in indexed() {
        event(
            last,
            index,
            DeltaJson::default(),
            Some(choice.finish_reason),
        );
    }
    if include_usage {
        let usage = UsageField::Present(completion.usage.into());
        write_chunk(last, completion, &[], usage);
    }
    last.extend_from_slice(sse::DONE);
    steps
}

/// A choice's stream deltas, in order: its content pieces, then for each tool call one delta that
/// opens it (id, type, name) and one per arguments fragment.
fn choice_deltas<'a>(choice: &'a ChoiceText<'a>) -> Vec<DeltaJson<'a>> {
    let content = choice.deltas.iter().map(|&piece| DeltaJson {
        content: Some(Some(piece)),
        ..DeltaJson::default()
    });
    let calls = choice.tool_calls.iter().zip(0..).flat_map(|(call, index)| {
        let call_delta = move |id, kind, name, arguments| DeltaJson {
            tool_calls: Some([ToolCallDeltaJson {
                index,
                id,
                kind,
                function: FunctionDeltaJson { name, arguments },
            }]),
            ..DeltaJson::default()
        };
        let open = call_delta(
            Some(call.id.as_str()),
            Some("function"),
            Some(call.name.as_str()),
            "",
        );
        let fragments = call.cuts.iter().scan(0, move |start, &end| {
            let fragment = &call.arguments[*start..end];
            *start = end;
            Some(call_delta(None, None, None, fragment))
        });
        std::iter::once(open).chain(fragments)
    });
    content.chain(calls).collect()
}

/// The event of one choice's content delta, rendered once with empty content and cut around it:
/// each token's event is then its JSON string between the two halves, not a whole chunk
/// serialized again.
struct ContentChunk {
    /// Up to `"content":`.
    before: Vec<u8>,
    /// From the byte after the content's string to the end of the event.
    after: Vec<u8>,
}

impl ContentChunk {
    /// The key and empty value the template is cut around. No string value can hold it
    /// unescaped, and a chunk has one `content` key.
    const EMPTY_CONTENT: &'static [u8] = br#""content":"""#;

    fn new(completion: &Completion<'_>, index: u32, usage: UsageField) -> Self {
        let choice = ChunkChoiceJson {
            index,
            delta: DeltaJson {
                content: Some(Some("")),
                ..DeltaJson::default()
            },
            logprobs: None,
            finish_reason: None,
        };
        let mut whole = Vec::new();
        write_chunk(&mut whole, completion, &[choice], usage);
        let at = whole
            .windows(Self::EMPTY_CONTENT.len())
            .position(|window| window == Self::EMPTY_CONTENT)
            .expect("a content delta has a content key")
            + br#""content":"#.len();
        Self {
            before: whole[..at].to_vec(),
            after: whole[at + 2..].to_vec(),
        }
    }

    fn write(&self, out: &mut Vec<u8>, piece: &str) {
        out.extend_from_slice(&self.before);
        json_writer::write_str(out, piece);
        out.extend_from_slice(&self.after);
    }
}

fn write_chunk(
    out: &mut Vec<u8>,
    completion: &Completion<'_>,
    choices: &[ChunkChoiceJson<'_>],
    usage: UsageField,
) {
    let chunk = ChunkJson {
        id: completion.id,
        object: "chat.completion.chunk",
        created: completion.created,
        model: completion.model,
        choices,
        service_tier: "default",
        usage,
    };
    sse::write_event(out, None, &chunk);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(choices: &'a [ChoiceText<'static>]) -> Completion<'a> {
        Completion {
            id: "chatcmpl-abc",
            created: 1_700_000_000,
            model: "gpt-4o",
            choices,
            usage: Usage {
                prompt_tokens: 9,
                completion_tokens: 5,
                cached_tokens: 0,
            },
        }
    }

    /// Token events are cut from a pre-rendered chunk: byte for byte what serializing the whole
    /// chunk gives, whatever the piece, the model name and the choice.
    #[test]
    fn content_events_match_whole_chunks() {
        let choice = ChoiceText {
            content: "Hello there",
            deltas: vec!["Hello", " there"],
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
        };
        let choices = vec![choice; 2];
        let tricky = Completion {
            model: r#"m "content":"" \ é"#,
            ..sample(&choices)
        };
        for usage in [|| UsageField::Absent, || UsageField::Null] {
            for index in [0, 1] {
                let template = ContentChunk::new(&tricky, index, usage());
                for piece in [
                    "",
                    "Hello",
                    " \"quoted\"\n\t",
                    "naïve 🦀",
                    "</script>\u{7f}",
                ] {
                    let mut cut = Vec::new();
                    template.write(&mut cut, piece);
                    let choice = ChunkChoiceJson {
                        index,
                        delta: DeltaJson {
                            content: Some(Some(piece)),
                            ..DeltaJson::default()
                        },
                        logprobs: None,
                        finish_reason: None,
                    };
                    let mut whole = Vec::new();
                    write_chunk(&mut whole, &tricky, &[choice], usage());
                    assert_eq!(
                        String::from_utf8(cut),
                        String::from_utf8(whole),
                        "{piece:?}"
                    );
                }
            }
        }
    }
}
