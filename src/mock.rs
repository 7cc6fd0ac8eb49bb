//! What the mock answers: picks the reply text, counts usage and renders the response.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ContentMode, MockConfig};
use crate::openai::chat::{self, ChatRequest, ChoiceText, Completion, FinishReason, Usage};
use crate::tokens::Tokenizer;

/// A rendered mock response, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    /// The `content-type` header.
    pub content_type: &'static str,
    /// The complete body: JSON, or the whole server-sent-event stream.
    pub body: Vec<u8>,
}

/// Answers a chat completion request: `chat.completion` JSON, or an SSE stream when asked.
pub fn chat_completion(
    config: &MockConfig,
    tokenizer: Tokenizer,
    request: &ChatRequest,
) -> MockReply {
    let text = reply_text(config, request);
    let (choice, completion_tokens) = shape_reply(
        tokenizer,
        &request.model,
        text,
        &request.stop,
        request.max_tokens,
    );
    let choices = vec![choice; request.n as usize];
    let id = completion_id();
    let completion = Completion {
        id: &id,
        created: unix_seconds(),
        model: &request.model,
        choices: &choices,
        usage: Usage {
            prompt_tokens: tokenizer.prompt_tokens(&request.model, &request.messages),
            completion_tokens: completion_tokens.saturating_mul(request.n),
        },
    };
    if request.stream {
        MockReply {
            content_type: "text/event-stream",
            body: chat::render_stream(&completion, request.include_usage).concat(),
        }
    } else {
        MockReply {
            content_type: "application/json",
            body: chat::render_completion(&completion),
        }
    }
}

/// Cuts `text` the way a model stops: before the first `stop` sequence it contains, then at
/// `max_tokens` (`finish_reason: "length"`). Returns the choice and its token count.
fn shape_reply<'a>(
    tokenizer: Tokenizer,
    model: &str,
    text: &'a str,
    stop: &[String],
    max_tokens: Option<u32>,
) -> (ChoiceText<'a>, u32) {
    let text = stop
        .iter()
        .filter_map(|sequence| text.find(sequence.as_str()))
        .min()
        .map_or(text, |cut| &text[..cut]);
    let limit = max_tokens.unwrap_or(u32::MAX);
    let (mut tokens, mut end) = (0u32, 0usize);
    let mut deltas = Vec::new();
    let mut finish_reason = FinishReason::Stop;
    for piece in tokenizer.pieces(model, text) {
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
        finish_reason,
    };
    (choice, tokens)
}

/// The reply text: the request's httpbun override, else the configured content mode.
fn reply_text<'a>(config: &'a MockConfig, request: &'a ChatRequest) -> &'a str {
    if let Some(text) = &request.content_override {
        return text;
    }
    match &config.content {
        ContentMode::Echo {} => request.last_user_text(),
        ContentMode::Fixed { text } => text,
    }
}

/// `chatcmpl-` and 32 random hex digits.
fn completion_id() -> String {
    format!("chatcmpl-{:032x}", rand::random::<u128>())
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
        let reply = chat_completion(config, Tokenizer::Exact, &request(body));
        assert_eq!(reply.content_type, "application/json");
        serde_json::from_slice(&reply.body).unwrap()
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
            &request(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#),
        );
        assert_eq!(reply.content_type, "text/event-stream");
        assert!(reply.body.ends_with(b"data: [DONE]\n\n"));
    }
}
