//! What the mock answers: picks the reply text, counts usage and renders the response.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{ContentMode, MockConfig};
use crate::openai::chat::{self, ChatRequest, Completion, Usage};
use crate::tokens;

/// A rendered mock response, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    /// The `content-type` header.
    pub content_type: &'static str,
    /// The complete body: JSON, or the whole server-sent-event stream.
    pub body: Vec<u8>,
}

/// Answers a chat completion request: `chat.completion` JSON, or an SSE stream when asked.
pub fn chat_completion(config: &MockConfig, request: &ChatRequest) -> MockReply {
    let content = reply_text(config, request);
    let id = completion_id();
    let completion = Completion {
        id: &id,
        created: unix_seconds(),
        model: &request.model,
        content,
        usage: Usage {
            prompt_tokens: tokens::approx_prompt_tokens(&request.messages),
            completion_tokens: tokens::approx_text_tokens(content),
        },
    };
    if request.stream {
        MockReply {
            content_type: "text/event-stream",
            body: chat::render_stream(&completion, request.include_usage),
        }
    } else {
        MockReply {
            content_type: "application/json",
            body: chat::render_completion(&completion),
        }
    }
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
        let reply = chat_completion(config, &request(body));
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
            &request(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#),
        );
        assert_eq!(reply.content_type, "text/event-stream");
        assert!(reply.body.ends_with(b"data: [DONE]\n\n"));
    }
}
