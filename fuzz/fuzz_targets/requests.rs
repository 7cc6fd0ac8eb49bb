//! Any bytes as the body of every endpoint llm-edge answers: an OpenAI error, or a mock reply whose
//! JSON parses; never a panic. The first byte picks the endpoint and the tokenizer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_edge::surface::ChatRequest;
use llm_edge::surface::CompletionRequest;
use llm_edge::surface::EmbeddingsRequest;
use llm_edge::surface::FilterConfig;
use llm_edge::surface::MessagesRequest;
use llm_edge::surface::ResponsesRequest;
use llm_edge::surface::Tokenizer;
use llm_edge::surface::mock::{self, MockReply, ReplyShape, Timing};

/// A JSON reply parses whole; every event of a stream carries JSON data (or `[DONE]`).
fn check(reply: MockReply) {
    let body = reply.steps.concat();
    if reply.shape == ReplyShape::Whole {
        serde_json::from_slice::<serde_json::Value>(&body).expect("a mock reply is JSON");
        return;
    }
    let text = String::from_utf8(body).expect("a stream is UTF-8");
    for event in text.split_terminator("\n\n") {
        for data in event.lines().filter_map(|line| line.strip_prefix("data: ")) {
            if data != "[DONE]" {
                serde_json::from_str::<serde_json::Value>(data).expect("an event's data is JSON");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let config = FilterConfig::from_json(b"{}").expect("the default config");
    let tokenizer = if selector & 0x80 == 0 {
        Tokenizer::Exact
    } else {
        Tokenizer::Approx
    };
    let timing = Timing::from_config(&config.mock.latency);
    let header = |_: &str| None;
    match selector % 5 {
        0 => {
            if let Ok(request) = ChatRequest::parse(body) {
                if let Ok(reply) =
                    mock::chat_completion(&config.mock, tokenizer, &timing, &request, header)
                {
                    check(reply);
                }
            }
        }
        1 => {
            if let Ok(request) = CompletionRequest::parse(body) {
                if let Ok(reply) =
                    mock::text_completion(&config.mock, tokenizer, &timing, &request, header)
                {
                    check(reply);
                }
            }
        }
        2 => {
            if let Ok(request) = EmbeddingsRequest::parse(body) {
                check(mock::embeddings(tokenizer, &request));
            }
        }
        3 => {
            if let Ok(request) = ResponsesRequest::parse(body) {
                if let Ok(reply) =
                    mock::response(&config.mock, tokenizer, &timing, &request, header)
                {
                    check(reply);
                }
            }
        }
        _ => {
            if let Ok(request) = MessagesRequest::parse(body) {
                if let Ok(reply) =
                    mock::anthropic_message(&config.mock, tokenizer, &timing, &request, header)
                {
                    check(reply);
                }
            }
        }
    }
});
