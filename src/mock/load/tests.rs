//! The admission, queue, load factor and cache of [`Load`], on an injected clock.

use super::*;
use crate::mock::metrics;

fn settings(json: &str) -> LoadSettings {
    let raw: LoadConfig = serde_json::from_str(json).unwrap();
    LoadSettings::parse(raw, &[]).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A stream of `steps` steps: first token at 100 ms, then one every 10 ms.
fn request(steps: usize) -> Request<'static> {
    Request {
        model: "m",
        offsets: (0..steps as u64).map(|i| ms(100 + 10 * i)).collect(),
        first_token: Duration::MAX,
        steps,
        prompt_tokens: 10,
        cached_tokens: 0,
        completion_tokens: steps as u32,
        finished_reason: "stop",
        blocks: Vec::new(),
    }
}

#[test]
fn beyond_max_concurrent_streams_wait_for_the_earliest_finishes_then_are_refused() {
    let load = Load::new(settings(r#"{"max_concurrent": 2, "max_queue": 2}"#), &[]);
    let t0 = Instant::now();
    let a = load.admit(request(11), t0).unwrap(); // finishes at 200 ms
    let b = load.admit(request(6), t0).unwrap(); // finishes at 150 ms
    assert_eq!((a.wait, b.wait), (Duration::ZERO, Duration::ZERO));
    let c = load.admit(request(6), t0).unwrap();
    // b's place frees first, at 150 ms; c then takes 150 ms more.
    assert_eq!(c.wait, ms(150));
    assert_eq!(c.offsets[0], ms(250));
    let d = load.admit(request(6), t0).unwrap();
    // With a, b and c ahead and two places, d starts at the second earliest finish: a's.
    assert_eq!(d.wait, ms(200));
    let refused = load.admit(request(6), t0).unwrap_err();
    assert_eq!(
        refused,
        QueueFull {
            running: 2,
            waiting: 2
        }
    );
    let state = &load.lock()["m"];
    assert_eq!((state.running_at(t0), state.waiting_at(t0)), (2, 2));
    assert_eq!(state.metrics.queue_full, 1);
}

#[test]
fn places_free_as_planned_streams_end() {
    let load = Load::new(settings(r#"{"max_concurrent": 1, "max_queue": 0}"#), &[]);
    let t0 = Instant::now();
    let _a = load.admit(request(1), t0).unwrap(); // ends at 100 ms
    assert!(load.admit(request(1), t0 + ms(99)).is_err());
    let b = load.admit(request(1), t0 + ms(100)).unwrap();
    assert_eq!(b.wait, Duration::ZERO);
}

#[test]
fn a_stream_released_early_frees_its_place_and_counts_as_aborted() {
    let load = Load::new(settings(r#"{"max_concurrent": 1, "max_queue": 0}"#), &[]);
    let t0 = Instant::now();
    let a = load.admit(request(11), t0).unwrap();
    assert!(load.admit(request(1), t0 + ms(10)).is_err());
    a.slot.release_at(t0 + ms(20));
    let b = load.admit(request(1), t0 + ms(30)).unwrap();
    assert_eq!(b.wait, Duration::ZERO);
    b.slot.release_at(t0 + ms(130));
    let text = metrics::render(&load, t0 + ms(200), 0.0);
    assert!(
        text.contains("vllm:request_success_total{finished_reason=\"abort\",model_name=\"m\"} 1.0")
    );
    assert!(
        text.contains("vllm:request_success_total{finished_reason=\"stop\",model_name=\"m\"} 1.0")
    );
}

#[test]
fn the_gap_between_tokens_grows_linearly_with_the_streams_running() {
    let load = Load::new(
        settings(r#"{"max_concurrent": 3, "max_queue": 0, "load_factor": 3.0}"#),
        &[],
    );
    assert_eq!(load.settings().itl_factor(1), 1.0);
    assert_eq!(load.settings().itl_factor(2), 2.0);
    assert_eq!(load.settings().itl_factor(3), 3.0);
    let t0 = Instant::now();
    let alone = load.admit(request(3), t0).unwrap();
    assert_eq!(alone.offsets, [ms(100), ms(110), ms(120)]);
    let second = load.admit(request(3), t0).unwrap();
    assert_eq!(second.offsets, [ms(100), ms(120), ms(140)]);
    let third = load.admit(request(3), t0).unwrap();
    assert_eq!(third.offsets, [ms(100), ms(130), ms(160)]);
}

#[test]
fn a_whole_reply_is_stretched_after_its_first_token_and_an_instant_one_waits_whole() {
    let load = Load::new(
        settings(r#"{"max_concurrent": 2, "max_queue": 1, "load_factor": 2.0}"#),
        &[],
    );
    let t0 = Instant::now();
    let _running = load.admit(request(11), t0).unwrap();
    let whole = Request {
        offsets: vec![ms(300)],
        first_token: ms(100),
        ..request(1)
    };
    // Second of two running: twice the decode after its first token.
    let whole = load.admit(whole, t0).unwrap();
    assert_eq!(whole.offsets, [ms(500)]);
    let instant = Request {
        offsets: Vec::new(),
        ..request(3)
    };
    let queued = load.admit(instant, t0).unwrap();
    assert_eq!(queued.wait, ms(200));
    assert_eq!(queued.offsets, [ms(200); 3]);
}

#[test]
fn admitted_prompts_fill_the_prefix_cache() {
    let load = Load::new(
        settings(r#"{"prefix_cache": {"block_tokens": 1, "capacity_blocks": 4}}"#),
        &[],
    );
    let t0 = Instant::now();
    assert_eq!(load.cached_blocks("m", &[1, 2, 3], t0), 0);
    let first = Request {
        blocks: vec![1, 2, 3],
        ..request(1)
    };
    let _slot = load.admit(first, t0).unwrap();
    assert_eq!(load.cached_blocks("m", &[1, 2, 9], t0), 2);
    let text = metrics::render(&load, t0, 0.0);
    assert!(text.contains("vllm:kv_cache_usage_perc{model_name=\"m\"} 0.75"));
}

#[test]
fn lora_adapters_share_their_base_models_places_and_are_named_in_the_metrics() {
    let raw: LoadConfig = serde_json::from_str(
        r#"{"max_concurrent": 1, "max_queue": 1, "lora_adapters": {"sql": "base"}}"#,
    )
    .unwrap();
    let models = ["base".to_owned(), "sql".to_owned()];
    let load = Load::new(LoadSettings::parse(raw, &models).unwrap(), &models);
    let t0 = Instant::now();
    let _base = load
        .admit(
            Request {
                model: "base",
                ..request(5)
            },
            t0,
        )
        .unwrap();
    let adapter = load
        .admit(
            Request {
                model: "sql",
                ..request(5)
            },
            t0,
        )
        .unwrap();
    assert_eq!(adapter.wait, ms(140));
    let text = metrics::render(&load, t0, 1.5);
    assert!(text.contains(
        "vllm:lora_requests_info{max_lora=\"1\",running_lora_adapters=\"\",waiting_lora_adapters=\"sql\"} 1.5"
    ));
    assert!(text.contains("vllm:num_requests_waiting{model_name=\"base\"} 1.0"));
    assert!(!text.contains("model_name=\"sql\""));
    // The adapter's prompts are cached apart from its base model's.
    let blocks = |model| {
        let mut hasher = load.hasher(model).unwrap();
        hasher.feed(&[b'x'; 256]);
        hasher.finish().blocks
    };
    assert_ne!(blocks("sql"), blocks("base"));
    assert_eq!(blocks("base"), blocks("other-base"));
}

#[test]
fn metrics_report_running_waiting_tokens_and_planned_latencies() {
    let load = Load::new(
        settings(r#"{"max_concurrent": 1, "max_queue": 1}"#),
        &["m".to_owned(), "idle".to_owned()],
    );
    let t0 = Instant::now();
    let _a = load.admit(request(2), t0).unwrap();
    let _b = load.admit(request(2), t0).unwrap();
    let text = metrics::render(&load, t0 + ms(1), 0.0);
    for line in [
        "# TYPE vllm:num_requests_running gauge",
        "vllm:num_requests_running{model_name=\"m\"} 1.0",
        "vllm:num_requests_waiting{model_name=\"m\"} 1.0",
        "vllm:num_requests_running{model_name=\"idle\"} 0.0",
        "# TYPE vllm:prompt_tokens_total counter",
        "vllm:prompt_tokens_total{model_name=\"m\"} 20.0",
        "vllm:generation_tokens_total{model_name=\"m\"} 4.0",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        // a's first token at 100 ms, b's at 110 + 100 ms (its wait included).
        "vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.1\"} 1.0",
        "vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.25\"} 2.0",
        "vllm:time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 2.0",
        "vllm:time_to_first_token_seconds_count{model_name=\"m\"} 2.0",
        "vllm:inter_token_latency_seconds_bucket{model_name=\"m\",le=\"0.01\"} 2.0",
        "vllm:request_queue_time_seconds_count{model_name=\"m\"} 2.0",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[test]
fn models_beyond_the_cap_share_the_overflow_entry() {
    let load = Load::new(settings("{}"), &[]);
    let t0 = Instant::now();
    let mut slots = Vec::new();
    for i in 0..MAX_MODELS + 2 {
        let model = format!("m{i}");
        let model: &'static str = Box::leak(model.into_boxed_str());
        slots.push(
            load.admit(
                Request {
                    model,
                    ..request(1)
                },
                t0,
            )
            .unwrap(),
        );
    }
    let models = load.lock();
    assert_eq!(models.len(), MAX_MODELS + 1);
    assert_eq!(models[OVERFLOW_MODEL].streams.len(), 2);
}

#[test]
fn bad_settings_are_named() {
    let error = |json: &str| {
        let raw: LoadConfig = serde_json::from_str(json).unwrap();
        LoadSettings::parse(raw, &["a".to_owned()])
            .unwrap_err()
            .field
    };
    assert_eq!(
        error(r#"{"max_concurrent": 0}"#),
        "mock.load.max_concurrent"
    );
    assert_eq!(error(r#"{"load_factor": 0.5}"#), "mock.load.load_factor");
    assert_eq!(
        error(r#"{"prefill_ms_per_token": -1}"#),
        "mock.load.prefill_ms_per_token"
    );
    assert_eq!(
        error(r#"{"metrics_path": "metrics"}"#),
        "mock.load.metrics_path"
    );
    assert_eq!(
        error(r#"{"prefix_cache": {"block_tokens": 0}}"#),
        "mock.load.prefix_cache.block_tokens"
    );
    assert_eq!(
        error(r#"{"lora_adapters": {"x": "a"}}"#),
        "mock.load.lora_adapters.x"
    );
    assert!(serde_json::from_str::<LoadConfig>(r#"{"max_concurent": 1}"#).is_err());
}
