//! Usage: the tokens of a forwarded request's reply, read as it passes (or counted when it
//! reports none), the dynamic metadata they are written to, and the token stats of every
//! answered request under a capped set of model labels.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use serde::Deserialize;
use serde_json::Value;

use super::{Filter, Outcome, State};
use crate::accounting::budgets::Claim;
use crate::accounting::tokens::Tokenizer;
use crate::api::json_read;
use crate::api::openai::chat::ChatRequest;
use crate::api::openai::generation::Usage;
use crate::api::openai::parse_object;
use crate::api::routes::Endpoint;
use crate::host::Host;
use crate::host::stats::Counter;

/// The request fields that hold prompt text, in every API llm-edge speaks.
const PROMPT_FIELDS: [&str; 5] = ["messages", "prompt", "input", "system", "instructions"];

/// The tokens of a forwarded request's reply, and the request's claim until they are charged.
#[derive(Debug, Default)]
pub(super) struct Accounting {
    /// The model the request was sent as.
    model: String,
    /// Token counts seen so far.
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// The request's claim on the token budgets, until its reply is charged.
    claim: Option<Claim>,
    /// The request as sent, to count its prompt only if a reply does not report it.
    prompt: Option<Prompt>,
    /// Stream events that carried generated text: about one token each.
    streamed_texts: u64,
    /// The upstream answered 2xx: only then are tokens charged without a reported usage.
    pub(super) upstream_ok: bool,
}

impl Accounting {
    /// The accounting of a request sent on as `model`, with its claim and prompt when a budget
    /// admitted it.
    pub(super) fn new(model: String, claim: Option<Claim>, prompt: Option<Prompt>) -> Self {
        Self {
            model,
            claim,
            prompt,
            ..Self::default()
        }
    }

    /// Takes the counts of a `usage` object anywhere OpenAI, the Responses API or Anthropic put
    /// it (top level, `response.usage`, `message.usage`).
    pub(super) fn observe(&mut self, event: &Value) {
        self.observe_members(
            event.get("usage"),
            event.get("response"),
            event.get("message"),
        );
    }

    /// [`Accounting::observe`] on a whole JSON reply, reading only the members that can hold its
    /// usage: the rest (the reply's text) is skipped, not built into a tree.
    pub(super) fn observe_reply(&mut self, reply: &[u8]) {
        /// The members of a reply that [`Accounting::observe`] looks in.
        #[derive(Deserialize)]
        struct Members {
            usage: Option<Value>,
            response: Option<Value>,
            message: Option<Value>,
        }
        if !json_read::opens_object(reply) {
            return;
        }
        match serde_json::from_slice::<Members>(reply) {
            Ok(members) => {
                let Members {
                    usage,
                    response,
                    message,
                } = &members;
                self.observe_members(usage.as_ref(), response.as_ref(), message.as_ref());
            }
            // A member given twice, which the struct refuses: read as the client's parser does
            // (the last wins), so that a repeated key cannot hide the reply's usage.
            Err(_) => {
                if let Ok(reply) = serde_json::from_slice::<Value>(reply) {
                    self.observe(&reply);
                }
            }
        }
    }

    /// [`Accounting::observe`] on an event of a stream, also counting whether it carried text.
    pub(super) fn observe_streamed(&mut self, event: &Value) {
        self.observe(event);
        self.streamed_texts += u64::from(carries_text(event));
    }

    /// Takes the counts of the first `usage` object among `usage`, `response.usage` and
    /// `message.usage`.
    fn observe_members(
        &mut self,
        usage: Option<&Value>,
        response: Option<&Value>,
        message: Option<&Value>,
    ) {
        let usage = [
            usage,
            response.and_then(|r| r.get("usage")),
            message.and_then(|m| m.get("usage")),
        ]
        .into_iter()
        .flatten()
        .find(|usage| usage.is_object());
        let Some(usage) = usage else {
            return;
        };
        let count = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| usage.get(*k).and_then(Value::as_u64))
        };
        if let Some(prompt) = count(["prompt_tokens", "input_tokens"]) {
            self.prompt_tokens = Some(prompt);
        }
        if let Some(completion) = count(["completion_tokens", "output_tokens"]) {
            self.completion_tokens = Some(completion);
        }
    }

    /// The prompt and completion tokens the reply reported, if it did.
    pub(super) fn reported(&self) -> (Option<u64>, Option<u64>) {
        (self.prompt_tokens, self.completion_tokens)
    }

    /// The tokens to charge: the reply's usage, else (a stream cut short, or a reply without
    /// usage) the counted prompt and one token per streamed text event; nothing for an error.
    pub(super) fn used_tokens(&self) -> u64 {
        match (self.prompt_tokens, self.completion_tokens) {
            (Some(prompt), Some(completion)) => prompt + completion,
            _ if !self.upstream_ok => 0,
            (prompt, completion) => {
                let counted = || self.prompt.as_ref().map_or(0, Prompt::tokens);
                prompt.unwrap_or_else(counted) + completion.unwrap_or(self.streamed_texts)
            }
        }
    }

    /// Takes the claim, to charge it once.
    pub(super) fn take_claim(&mut self) -> Option<Claim> {
        self.claim.take()
    }

    /// Whether the request's claim is still to be charged.
    pub(super) fn has_claim(&self) -> bool {
        self.claim.is_some()
    }
}

/// A forwarded request's prompt, kept uncounted until its count is needed.
#[derive(Debug)]
pub(super) struct Prompt {
    pub(super) tokenizer: Tokenizer,
    pub(super) endpoint: Endpoint,
    pub(super) model: String,
    pub(super) body: Vec<u8>,
}

impl Prompt {
    /// The prompt's tokens: exactly for chat completions, by its prompt fields' text otherwise.
    pub(super) fn tokens(&self) -> u64 {
        prompt_tokens(self.tokenizer, &self.endpoint, &self.body, &self.model)
    }
}

/// The prompt tokens of a request: exactly for chat completions (as the mock counts them), by
/// the text of its prompt fields otherwise.
pub(super) fn prompt_tokens(
    tokenizer: Tokenizer,
    endpoint: &Endpoint,
    body: &[u8],
    model: &str,
) -> u64 {
    if *endpoint == Endpoint::ChatCompletions {
        if let Ok(request) = ChatRequest::parse(body) {
            return tokenizer.prompt_tokens(model, &request.messages).into();
        }
    }
    let Ok(fields) = parse_object(body) else {
        return 0;
    };
    let mut text = String::new();
    for field in PROMPT_FIELDS {
        if let Some(value) = fields.get(field) {
            collect_strings(value, &mut text);
        }
    }
    tokenizer.count(model, &text).into()
}

/// Appends every string in `value`, a line each.
fn collect_strings(value: &Value, text: &mut String) {
    match value {
        Value::String(s) => {
            text.push_str(s);
            text.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, text)),
        Value::Object(fields) => fields.values().for_each(|v| collect_strings(v, text)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Whether a stream event carries generated text, in any API's shape: a chat delta's content,
/// reasoning or tool-call arguments, a legacy choice's text, a Responses text or arguments delta,
/// an Anthropic text, thinking or tool-input delta.
fn carries_text(event: &Value) -> bool {
    let non_empty =
        |text: Option<&Value>| text.and_then(Value::as_str).is_some_and(|t| !t.is_empty());
    if let Some(choice) = event.get("choices").and_then(|c| c.get(0)) {
        let delta = choice.get("delta");
        let field = |name: &str| delta.and_then(|d| d.get(name));
        let arguments = field("tool_calls")
            .and_then(|calls| calls.get(0))
            .and_then(|call| call.pointer("/function/arguments"));
        return non_empty(field("content"))
            || non_empty(field("reasoning_content"))
            || non_empty(arguments)
            || non_empty(choice.get("text"));
    }
    let kind = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind.starts_with("response.") && kind.ends_with(".delta") && kind != "response.audio.delta" {
        return non_empty(event.get("delta"));
    }
    if kind == "content_block_delta" {
        let delta = event.get("delta");
        return ["text", "thinking", "partial_json"]
            .iter()
            .any(|field| non_empty(delta.and_then(|d| d.get(field))));
    }
    false
}

/// How many distinct model names get their own token-stat label; later ones count as `other`,
/// so that clients cannot grow the proxy's stats without bound.
const MAX_MODEL_LABELS: usize = 64;

/// The model names that have a stats label of their own.
#[derive(Debug, Default)]
pub struct ModelLabels {
    seen: RwLock<HashSet<String>>,
}

impl ModelLabels {
    /// `model`, if it has (or can still get) a label of its own, else `other`.
    pub fn label<'a>(&self, model: &'a str) -> &'a str {
        // Workers share this on every request: the common case only takes the read lock.
        if self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(model)
        {
            return model;
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(model) {
            return model;
        }
        if seen.len() < MAX_MODEL_LABELS {
            seen.insert(model.to_owned());
            return model;
        }
        "other"
    }
}

impl Filter {
    /// Counts an answered request and its tokens.
    pub(super) fn count_answer(&self, host: &mut impl Host, model: &str, usage: Usage) {
        let model = self.context.model_labels.label(model);
        let outcome = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &outcome, 1);
        host.count(Counter::PromptTokens, &[model], usage.prompt_tokens.into());
        host.count(
            Counter::CompletionTokens,
            &[model],
            usage.completion_tokens.into(),
        );
    }

    /// A forwarded request's reply is over: charge its claim, then write its tokens to dynamic
    /// metadata (exact integers, as strings) and stats.
    pub(super) fn record_usage(&mut self, host: &mut impl Host) {
        self.submit_recording(host);
        self.charge_forwarded(host);
        let State::Proxying(forwarding) = &self.state else {
            return;
        };
        let accounting = &forwarding.accounting;
        let (model, prompt, completion) = (
            accounting.model.clone(),
            accounting.prompt_tokens,
            accounting.completion_tokens,
        );
        host.set_metadata("model", &model);
        let labels = [self.endpoint_label, Outcome::Mock.label()];
        host.count(Counter::Requests, &labels, 1);
        let label = self.context.model_labels.label(&model).to_owned();
        if let Some(prompt) = prompt {
            host.set_metadata("prompt_tokens", &prompt.to_string());
            host.count(Counter::PromptTokens, &[&label], prompt);
        }
        if let Some(completion) = completion {
            host.set_metadata("completion_tokens", &completion.to_string());
            host.count(Counter::CompletionTokens, &[&label], completion);
        }
        if let (Some(prompt), Some(completion)) = (prompt, completion) {
            host.set_metadata("total_tokens", &(prompt + completion).to_string());
        }
        self.state = State::Answered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_is_read_from_each_api_shape() {
        let mut accounting = Accounting::default();
        accounting.observe(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}));
        accounting.observe(&json!({"type": "message_delta", "usage": {"output_tokens": 12}}));
        assert_eq!(
            (accounting.prompt_tokens, accounting.completion_tokens),
            (Some(9), Some(12))
        );
        let mut responses = Accounting::default();
        responses.observe(&json!({"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 5}}}));
        assert_eq!(
            (responses.prompt_tokens, responses.completion_tokens),
            (Some(4), Some(5))
        );
    }

    /// A whole JSON reply is read as each of its events would be: the first `usage` object
    /// wins, a `null` one is passed over, and text that is not a JSON object leaves no count.
    #[test]
    fn a_json_reply_is_read_as_its_events_are() {
        let replies = [
            r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            r#"{"usage":null,"message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
            r#"{"response":{"usage":{"input_tokens":4}},"message":{"usage":{"output_tokens":9}}}"#,
            r#"{"usage":5}"#,
            r#"[{"usage":{"prompt_tokens":1}}]"#,
            r#"[{"prompt_tokens":1,"completion_tokens":1},null,null]"#,
            r#" {"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            "not json",
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":9,"completion_tokens":2}}"#,
            r#"{"message":{},"id":"x","message":{"usage":{"input_tokens":7,"output_tokens":1}}}"#,
        ];
        for reply in replies {
            let mut whole = Accounting::default();
            whole.observe_reply(reply.as_bytes());
            let mut event = Accounting::default();
            if let Ok(value) = serde_json::from_str::<Value>(reply) {
                event.observe(&value);
            }
            let counts = |a: &Accounting| (a.prompt_tokens, a.completion_tokens);
            assert_eq!(counts(&whole), counts(&event), "{reply}");
        }
        let mut chat = Accounting::default();
        chat.observe_reply(replies[0].as_bytes());
        assert_eq!(
            (chat.prompt_tokens, chat.completion_tokens),
            (Some(3), Some(2))
        );
    }

    #[test]
    fn model_labels_are_capped() {
        let labels = ModelLabels::default();
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(labels.label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(labels.label("one-too-many"), "other");
        assert_eq!(labels.label("m3"), "m3");
    }
}
