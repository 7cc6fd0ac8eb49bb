//! Token counting for `usage`.
//!
//! This is the approximate counter: about four characters of English per token, the rule of thumb
//! OpenAI documents. It is cheap and dependency-free; chat formatting overhead is counted the way
//! OpenAI counts it (3 tokens per message, 3 to prime the reply).

use crate::openai::chat::ChatMessage;

/// Tokens added around every chat message by the chat format.
const TOKENS_PER_MESSAGE: u32 = 3;
/// Tokens that prime the assistant's reply (`<|start|>assistant<|message|>`).
const TOKENS_PER_REPLY: u32 = 3;

/// Approximate tokens in `text`: one per four characters, rounded up.
pub fn approx_text_tokens(text: &str) -> u32 {
    let chars = text.chars().count();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Approximate prompt tokens of a chat conversation, formatting overhead included.
pub fn approx_prompt_tokens(messages: &[ChatMessage]) -> u32 {
    messages.iter().fold(TOKENS_PER_REPLY, |sum, message| {
        sum.saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(approx_text_tokens(&message.role))
            .saturating_add(approx_text_tokens(&message.text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_characters_make_a_token() {
        assert_eq!(approx_text_tokens(""), 0);
        assert_eq!(approx_text_tokens("abcd"), 1);
        assert_eq!(approx_text_tokens("abcde"), 2);
        assert_eq!(approx_text_tokens("héllo"), 2);
    }

    #[test]
    fn prompt_counts_formatting_overhead() {
        let messages = [ChatMessage {
            role: "user".into(),
            text: "hello world!".into(),
        }];
        // 3 (reply) + 3 (message) + 1 ("user") + 3 ("hello world!")
        assert_eq!(approx_prompt_tokens(&messages), 10);
    }
}
