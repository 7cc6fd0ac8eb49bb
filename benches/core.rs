//! The pure core, without Envoy: what each request costs llm-edge itself. `make bench` runs it
//! (briefly) and reports it in BENCHMARKS.md; `cargo bench --bench core` runs it in full.
//!
//! The inputs are the ones the end-to-end benchmark (bench/compare.py) sends: the same short
//! chat request, and pass-through prompts that hold an e-mail address and a phone number in
//! every sentence, so that masking really happens.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use llm_edge::surface::ChatRequest;
use llm_edge::surface::FilterConfig;
use llm_edge::surface::MessagesRequest;
use llm_edge::surface::ResponsesRequest;
use llm_edge::surface::Tokenizer;
use llm_edge::surface::TranslateConfig;
use llm_edge::surface::guard::{self, Action, Detectors, Masker};
use llm_edge::surface::mock::{self, Timing};
use llm_edge::surface::sse;
use serde_json::json;

const PROMPT: &str =
    "Summarise, in two sentences, why answering LLM requests inside the proxy is fast.";
/// A sentence with an e-mail address and a phone number to mask.
const SENSITIVE: &str = "Please summarise the quarter’s report for the board; contact \
                         jane.doe@example.com or call +1 415-555-2671 if anything is unclear. ";
/// A sentence with nothing to mask, as most prompts are, but with numbers in it, as prose has:
/// the detectors of numbers (phone, card, IBAN, IPv4, SSN) look only where digits are.
const CLEAN: &str = "Please summarise the quarter’s 3 reports (Q2 2026) for the board; ask \
                     the finance team if any of the 14 points is still unclear. ";

fn chat_body(stream: bool) -> Vec<u8> {
    let body = json!({"model": "gpt-4o", "stream": stream,
                      "messages": [{"role": "user", "content": PROMPT}]});
    body.to_string().into_bytes()
}

/// `size` bytes of `sentence` repeated (with a typographic apostrophe, as real prose has: a
/// Unicode `\b` in a pattern once made such text 40× slower to mask).
fn prose(sentence: &str, size: usize) -> String {
    let mut text = sentence.repeat(size / sentence.len() + 1);
    while text.len() > size {
        text.pop();
    }
    text
}

fn parse_and_mock(c: &mut Criterion) {
    let config = FilterConfig::from_json(b"{}").expect("the default config");
    let timing = Timing::from_config(&config.mock.latency);
    let no_header = |_: &str| None;
    let body = chat_body(false);
    c.bench_function("chat request: parse", |b| {
        b.iter(|| ChatRequest::parse(black_box(&body)).expect("a valid request"))
    });
    let mut group = c.benchmark_group("chat request: parse and mock reply");
    for (name, tokenizer, stream) in [
        ("exact tokens", Tokenizer::Exact, false),
        ("approx tokens", Tokenizer::Approx, false),
        ("exact tokens, streamed", Tokenizer::Exact, true),
    ] {
        tokenizer.warm();
        let body = chat_body(stream);
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = ChatRequest::parse(black_box(&body)).expect("a valid request");
                mock::chat_completion(&config.mock, tokenizer, &timing, &request, no_header)
                    .expect("a reply")
            })
        });
    }
    group.finish();
}

/// A mock that writes 200 tokens of lorem ipsum, its timing, and the warmed exact tokenizer.
fn lorem_mock() -> (FilterConfig, Timing, Tokenizer) {
    let config = FilterConfig::from_json(
        br#"{"mock": {"content": {"mode": "lorem", "min_tokens": 200, "max_tokens": 200}}}"#,
    )
    .expect("a lorem config");
    let timing = Timing::from_config(&config.mock.latency);
    let tokenizer = Tokenizer::Exact;
    tokenizer.warm();
    (config, timing, tokenizer)
}

/// The same 200-token reply in each API's wire shape, whole and streamed: what rendering costs
/// per API (each renders from borrowed structs).
fn mock_reply_by_api(c: &mut Criterion) {
    let (config, timing, tokenizer) = lorem_mock();
    let no_header = |_: &str| None;
    let mut group = c.benchmark_group("mock reply of 200 tokens, by API");
    for stream in [false, true] {
        let shape = if stream { "streamed" } else { "whole" };
        let chat = json!({"model": "gpt-4o", "stream": stream, "seed": 7,
                          "messages": [{"role": "user", "content": PROMPT}]});
        let chat = ChatRequest::parse(chat.to_string().as_bytes()).expect("a chat request");
        group.bench_function(format!("chat completions, {shape}"), |b| {
            b.iter(|| mock::chat_completion(&config.mock, tokenizer, &timing, &chat, no_header))
        });
        let responses = json!({"model": "gpt-4o", "stream": stream, "input": PROMPT});
        let responses =
            ResponsesRequest::parse(responses.to_string().as_bytes()).expect("a Responses request");
        group.bench_function(format!("responses, {shape}"), |b| {
            b.iter(|| mock::response(&config.mock, tokenizer, &timing, &responses, no_header))
        });
        let messages = json!({"model": "claude-sonnet-4-5", "stream": stream, "max_tokens": 1024,
                              "messages": [{"role": "user", "content": PROMPT}]});
        let messages =
            MessagesRequest::parse(messages.to_string().as_bytes()).expect("a Messages request");
        group.bench_function(format!("anthropic messages, {shape}"), |b| {
            b.iter(|| {
                mock::anthropic_message(&config.mock, tokenizer, &timing, &messages, no_header)
            })
        });
    }
    group.finish();
}

fn sse_encode(c: &mut Criterion) {
    let chunk = json!({"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk",
                       "created": 1_763_700_000, "model": "gpt-4o", "service_tier": "default",
                       "choices": [{"index": 0, "delta": {"content": " proxy"},
                                    "logprobs": null, "finish_reason": null}]});
    let mut out = Vec::with_capacity(64 * 1024);
    c.bench_function("sse: write one chunk event", |b| {
        b.iter(|| {
            out.clear();
            sse::write_event(&mut out, None, black_box(&chunk));
        })
    });
}

fn masking(c: &mut Criterion) {
    let actions: BTreeMap<String, Action> = guard::BUILT_IN
        .iter()
        .map(|name| ((*name).to_owned(), Action::Mask))
        .collect();
    let detectors = Detectors::compile(&actions, &[]).expect("the built-in detectors compile");
    for (group, sentence) in [
        ("mask with all 13 detectors", SENSITIVE),
        ("scan with all 13 detectors, nothing to mask", CLEAN),
    ] {
        let mut group = c.benchmark_group(group);
        for size in [4 * 1024, 64 * 1024] {
            let text = prose(sentence, size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &text, |b, text| {
                b.iter(|| {
                    let mut masker = Masker::default();
                    masker
                        .mask(&detectors, black_box(text))
                        .map(|masked| masked.len())
                })
            });
        }
        group.finish();
    }
}

fn token_counting(c: &mut Criterion) {
    let mut group = c.benchmark_group("count tokens");
    for (name, tokenizer) in [("exact", Tokenizer::Exact), ("approx", Tokenizer::Approx)] {
        tokenizer.warm();
        for size in [4 * 1024, 64 * 1024] {
            let text = prose(SENSITIVE, size);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &text, |b, text| {
                b.iter(|| tokenizer.count("gpt-4o", black_box(text)))
            });
        }
    }
    group.finish();
}

/// Translation on the pass-through path, each direction: a 4 KB request up, and a realistic
/// 200-token reply (rendered by the mock in the upstream's API) back, whole and streamed.
fn translation(c: &mut Criterion) {
    let (config, timing, tokenizer) = lorem_mock();
    let no_header = |_: &str| None;
    let translations = TranslateConfig::parse(&json!([
        {"client": "chat", "upstream": "messages", "upstream_path": "/v1/messages"},
        {"client": "messages", "upstream": "chat", "upstream_path": "/v1/chat/completions"},
        {"client": "responses", "upstream": "chat", "upstream_path": "/v1/chat/completions"},
    ]))
    .expect("a valid translation")
    .translations;
    let text = prose(CLEAN, 4 * 1024);
    let requests = [
        json!({"model": "claude-sonnet-4-5", "max_tokens": 1024,
               "messages": [{"role": "system", "content": "You are terse."},
                            {"role": "user", "content": text}]}),
        json!({"model": "gpt-4o", "max_tokens": 1024, "system": "You are terse.",
               "messages": [{"role": "user", "content": text}]}),
        json!({"model": "gpt-4o", "instructions": "You are terse.", "input": text}),
    ];
    let upstream_reply = |translation: usize, stream: bool| {
        let reply = if translation == 0 {
            let request = json!({"model": "claude-sonnet-4-5", "stream": stream,
                                 "max_tokens": 1024,
                                 "messages": [{"role": "user", "content": PROMPT}]});
            let request = MessagesRequest::parse(request.to_string().as_bytes());
            let request = request.expect("a Messages request");
            mock::anthropic_message(&config.mock, tokenizer, &timing, &request, no_header)
        } else {
            let mut request = json!({"model": "gpt-4o", "stream": stream, "seed": 7,
                                     "messages": [{"role": "user", "content": PROMPT}]});
            if stream {
                request["stream_options"] = json!({"include_usage": true});
            }
            let request = ChatRequest::parse(request.to_string().as_bytes());
            let request = request.expect("a chat request");
            mock::chat_completion(&config.mock, tokenizer, &timing, &request, no_header)
        };
        reply.expect("a mock reply").steps
    };
    let mut group = c.benchmark_group("translate");
    for (i, translation) in translations.iter().enumerate() {
        let label = translation.label();
        let request = requests[i].to_string().into_bytes();
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function(format!("{label}: 4 KB request"), |b| {
            b.iter(|| {
                let fields = serde_json::from_slice(black_box(&request)).expect("an object");
                let upstream = translation.request(fields).expect("a translatable request");
                serde_json::to_vec(&upstream.body).expect("JSON")
            })
        });
        let config = TranslateConfig {
            translations: vec![translation.clone()],
        };
        if config.plain_request(translation.client, &request).is_some() {
            group.bench_function(format!("{label}: 4 KB request, from its bytes"), |b| {
                b.iter(|| config.plain_request(translation.client, black_box(&request)))
            });
        }
        let whole = upstream_reply(i, false).concat();
        group.throughput(Throughput::Bytes(whole.len() as u64));
        if translation.plain_reply(&whole, 1).is_some() {
            group.bench_function(format!("{label}: whole reply, from its bytes"), |b| {
                b.iter(|| translation.plain_reply(black_box(&whole), 1))
            });
        }
        group.bench_function(format!("{label}: whole reply"), |b| {
            b.iter(|| {
                let reply: serde_json::Value =
                    serde_json::from_slice(black_box(&whole)).expect("JSON");
                let mut dropped = Default::default();
                let reply = translation.reply(&reply, 1, &Default::default(), &mut dropped);
                serde_json::to_vec(&reply).expect("JSON")
            })
        });
        let steps = upstream_reply(i, true);
        group.throughput(Throughput::Bytes(
            steps.iter().map(Vec::len).sum::<usize>() as u64
        ));
        group.bench_function(format!("{label}: streamed reply"), |b| {
            b.iter(|| {
                let mut translator = translation.stream(1, true, &Default::default());
                let mut reader = sse::EventReader::default();
                let mut out = 0;
                for (j, step) in steps.iter().enumerate() {
                    let end = j + 1 == steps.len();
                    out += translator.read(&mut reader, black_box(step), end).len();
                }
                out
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    parse_and_mock,
    mock_reply_by_api,
    sse_encode,
    masking,
    token_counting,
    translation
);
criterion_main!(benches);
