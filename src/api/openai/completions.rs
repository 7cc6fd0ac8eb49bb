//! `POST /v1/completions` (legacy): the request we read and the responses we write.

use serde::Serialize;
use serde_json::Value;

use super::chat::{MAX_CHOICES, parse_stop, parse_stream_options};
use super::error::ApiError;
use super::generation::{ChoiceText, FinishReason, Usage, UsageField, UsageJson};
use super::json::{bounded_integer, optional};
use super::json::{parse_object, parse_text_or_tokens, take_model};
use crate::api::sse;

/// The reply's token limit when the request names none: the legacy endpoint's default.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// One prompt: text, or text already tokenized.
pub use super::json::TextOrTokens as Prompt;

/// The parts of a legacy completion request that llm-edge reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRequest {
    /// The requested model, echoed back.
    pub model: String,
    /// The prompts; each gets `n` choices.
    pub prompts: Vec<Prompt>,
    /// Choices per prompt.
    pub n: u32,
    /// The reply's token limit (16 unless given).
    pub max_tokens: u32,
    /// Up to four stop sequences.
    pub stop: Vec<String>,
    /// `seed` for generated text.
    pub seed: Option<i64>,
    /// Stream server-sent events.
    pub stream: bool,
    /// A final usage chunk when streaming.
    pub include_usage: bool,
    /// `echo`: each choice's text starts with its prompt.
    pub echo: bool,
}

impl CompletionRequest {
    /// Parses and validates a request body, with OpenAI's errors for bad input.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut fields = parse_object(body)?;
        let model = take_model(&mut fields)?;
        let prompts = parse_text_or_tokens("prompt", fields.remove("prompt"), false)?;
        let stream = optional(&fields, "stream", "stream", "a boolean", Value::as_bool)?;
        let stream = stream.unwrap_or(false);
        Ok(Self {
            model,
            prompts,
            n: bounded_integer(&fields, "n", 1, MAX_CHOICES)?.unwrap_or(1),
            max_tokens: bounded_integer(&fields, "max_tokens", 1, u32::MAX)?
                .unwrap_or(DEFAULT_MAX_TOKENS),
            stop: parse_stop(&fields)?,
            seed: optional(&fields, "seed", "seed", "an integer", Value::as_i64)?,
            stream,
            include_usage: parse_stream_options(&fields, stream)?,
            echo: optional(&fields, "echo", "echo", "a boolean", Value::as_bool)?.unwrap_or(false),
        })
    }
}

/// Everything needed to render one legacy completion, streamed or not.
#[derive(Debug, Clone, Copy)]
pub struct TextCompletion<'a> {
    /// `cmpl-…`, shared by every chunk of a stream.
    pub id: &'a str,
    /// Unix seconds.
    pub created: u64,
    /// The model named in the response.
    pub model: &'a str,
    /// The choices, indexed from 0 (prompt by prompt, `n` each).
    pub choices: &'a [ChoiceText<'a>],
    /// Text that starts each choice (`echo`), by choice.
    pub echoes: &'a [&'a str],
    /// The token counts.
    pub usage: Usage,
}

#[derive(Serialize)]
struct CompletionJson<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChoiceJson<'a>>,
    #[serde(skip_serializing_if = "UsageField::is_absent")]
    usage: UsageField,
}

#[derive(Serialize)]
struct ChoiceJson<'a> {
    text: TextJson<'a>,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

/// A choice's text: an echoed prompt and the reply, written as one JSON string.
struct TextJson<'a>(&'a str, &'a str);

impl Serialize for TextJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            serializer.serialize_str(self.1)
        } else {
            serializer.serialize_str(&format!("{}{}", self.0, self.1))
        }
    }
}

/// Renders `CreateCompletionResponse`.
pub fn render_completion(completion: &TextCompletion<'_>) -> Vec<u8> {
    let choices = completion
        .choices
        .iter()
        .zip(0..)
        .map(|(choice, index)| ChoiceJson {
            text: TextJson(completion.echoes[index as usize], choice.content),
            index,
            logprobs: None,
            finish_reason: Some(choice.finish_reason.as_str()),
        })
        .collect();
    let body = CompletionJson {
        id: completion.id,
        object: "text_completion",
        created: completion.created,
        model: completion.model,
        choices,
        usage: UsageField::Present(UsageJson::from(completion.usage)),
    };
    serde_json::to_vec(&body).expect("serializing plain data cannot fail")
}

/// Renders a legacy completion as server-sent events in timed steps: step `k` carries the `k`-th
/// token piece of every choice (the first also each echoed prompt); the last step also carries a
/// `finish_reason` chunk per choice, the usage chunk when asked for, and `data: [DONE]`.
pub fn render_stream(completion: &TextCompletion<'_>, include_usage: bool) -> Vec<Vec<u8>> {
    let chunk = |out: &mut Vec<u8>, choices: Vec<ChoiceJson<'_>>, usage: UsageField| {
        let body = CompletionJson {
            id: completion.id,
            object: "text_completion",
            created: completion.created,
            model: completion.model,
            choices,
            usage,
        };
        sse::write_event(out, None, &body);
    };
    let placeholder = || {
        if include_usage {
            UsageField::Null
        } else {
            UsageField::Absent
        }
    };
    let piece = |index: u32, text, finish_reason: Option<FinishReason>| {
        vec![ChoiceJson {
            text: TextJson("", text),
            index,
            logprobs: None,
            finish_reason: finish_reason.map(FinishReason::as_str),
        }]
    };
    let indexed = || completion.choices.iter().zip(0u32..);
    let longest = indexed().map(|(c, _)| c.deltas.len()).max().unwrap_or(0);
    let mut steps = vec![Vec::new(); longest.max(1)];
    for (i, echo) in completion.echoes.iter().enumerate() {
        if !echo.is_empty() {
            let echoed = vec![ChoiceJson {
                text: TextJson("", echo),
                index: i as u32,
                logprobs: None,
                finish_reason: None,
            }];
            chunk(&mut steps[0], echoed, placeholder());
        }
    }
    for (k, step) in steps.iter_mut().enumerate().take(longest) {
        for (choice, index) in indexed() {
            if let Some(&text) = choice.deltas.get(k) {
                chunk(step, piece(index, text, None), placeholder());
            }
        }
    }
    let last = steps.last_mut().expect("at least one step");
    for (choice, index) in indexed() {
        chunk(
            last,
            piece(index, "", Some(choice.finish_reason)),
            placeholder(),
        );
    }
    if include_usage {
        chunk(
            last,
            Vec::new(),
            UsageField::Present(completion.usage.into()),
        );
    }
    last.extend_from_slice(sse::DONE);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<CompletionRequest, ApiError> {
        CompletionRequest::parse(body.to_string().as_bytes())
    }

    #[test]
    fn reads_prompts_and_defaults() {
        let req = parse(json!({"model": "m", "prompt": "Say"})).unwrap();
        assert_eq!(req.prompts, [Prompt::Text("Say".into())]);
        assert_eq!(
            (req.n, req.max_tokens, req.echo, req.stream),
            (1, 16, false, false)
        );
        let req = parse(
            json!({"model": "m", "prompt": [[1, 2], "x"], "n": 2, "max_tokens": 5,
                               "echo": true, "stop": "\n"}),
        )
        .unwrap();
        assert_eq!(
            req.prompts,
            [Prompt::Tokens(vec![1, 2]), Prompt::Text("x".into())]
        );
        assert_eq!((req.n, req.max_tokens, req.echo), (2, 5, true));
        assert_eq!(
            parse(json!({"model": "m", "prompt": [7, 8]}))
                .unwrap()
                .prompts,
            [Prompt::Tokens(vec![7, 8])]
        );
    }

    #[test]
    fn bad_prompts_name_the_param() {
        for (body, param) in [
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": []}), "prompt"),
            (json!({"model": "m", "prompt": {}}), "prompt"),
            (json!({"model": "m", "prompt": ["a", {}]}), "prompt[1]"),
            (json!({"model": "m", "prompt": [[1, "x"]]}), "prompt[0][1]"),
            (json!({"prompt": "x"}), "model"),
            (json!({"model": "m", "prompt": "x", "echo": 1}), "echo"),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert_eq!(
                (err.status, err.param.as_deref()),
                (400, Some(param)),
                "{body}"
            );
        }
    }

    fn sample<'a>(choices: &'a [ChoiceText<'a>], echoes: &'a [&'a str]) -> TextCompletion<'a> {
        TextCompletion {
            id: "cmpl-1",
            created: 1,
            model: "m",
            choices,
            echoes,
            usage: Usage {
                prompt_tokens: 2,
                completion_tokens: 2,
                cached_tokens: 0,
            },
        }
    }

    fn choice() -> ChoiceText<'static> {
        ChoiceText {
            content: "Hi there",
            deltas: vec!["Hi", " there"],
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Length,
        }
    }

    #[test]
    fn renders_openais_text_completion() {
        let choices = [choice()];
        let body: Value =
            serde_json::from_slice(&render_completion(&sample(&choices, &["Say: "]))).unwrap();
        assert_eq!(
            body,
            json!({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                   "choices": [{"text": "Say: Hi there", "index": 0, "logprobs": null,
                                "finish_reason": "length"}],
                   "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4,
                       "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                       "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                           "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}})
        );
    }

    #[test]
    fn streams_text_deltas_then_finish_usage_and_done() {
        let choices = [choice()];
        let steps = render_stream(&sample(&choices, &[""]), true);
        assert_eq!(steps.len(), 2);
        let stream = String::from_utf8(steps.concat()).unwrap();
        let events: Vec<&str> = stream.split_terminator("\n\n").collect();
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"].get(0).and_then(|ch| ch["text"].as_str()))
            .collect();
        assert_eq!(text, "Hi there");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "length");
        assert_eq!(chunks[3]["choices"], json!([]));
        assert_eq!(chunks[3]["usage"]["total_tokens"], 4);
        assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    }
}
