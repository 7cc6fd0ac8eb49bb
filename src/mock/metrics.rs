//! vLLM's Prometheus metrics of the simulated load, in the text format and with vLLM's names,
//! labels and buckets, so a scheduler scrapes a mock pod as it scrapes a vLLM pod.
//!
//! Latencies are the planned ones, recorded when a stream is admitted: time to first token
//! includes the queue wait, as the real server measures it from arrival.

use std::fmt::Write;
use std::time::{Duration, Instant};

use super::load::{Load, Request};

/// vLLM's time-to-first-token buckets, in seconds.
pub const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// vLLM's inter-token latency buckets, in seconds.
pub const ITL_BUCKETS: [f64; 19] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
/// vLLM's request latency buckets (queue time, end to end), in seconds.
pub const REQUEST_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

/// A metric's name, its help text, and how to read its value from a model's metrics.
type Family<T> = (&'static str, &'static str, fn(&ModelMetrics) -> T);
/// A histogram's name, its help text, and which of a model's histograms it is.
type HistogramFamily = (
    &'static str,
    &'static str,
    for<'a> fn(&'a ModelMetrics) -> &'a Histogram,
);

/// The `finished_reason` values counted.
const REASONS: [&str; 3] = ["stop", "length", "abort"];

/// A histogram over fixed buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations at or below each bound (not cumulative), then above the last.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Records `n` observations of `value` seconds.
    pub fn observe(&mut self, value: f64, n: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket] += n;
        self.sum += value * n as f64;
    }
}

/// One model's counters and histograms.
#[derive(Debug, Clone)]
pub struct ModelMetrics {
    prompt_tokens: u64,
    generation_tokens: u64,
    cache_queries: u64,
    cache_hits: u64,
    /// Finished streams by reason, in [`REASONS`] order.
    finished: [u64; 3],
    /// Streams refused because the queue was full.
    pub(crate) queue_full: u64,
    ttft: Histogram,
    itl: Histogram,
    queue_time: Histogram,
    e2e: Histogram,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        Self {
            prompt_tokens: 0,
            generation_tokens: 0,
            cache_queries: 0,
            cache_hits: 0,
            finished: [0; 3],
            queue_full: 0,
            ttft: Histogram::new(&TTFT_BUCKETS),
            itl: Histogram::new(&ITL_BUCKETS),
            queue_time: Histogram::new(&REQUEST_BUCKETS),
            e2e: Histogram::new(&REQUEST_BUCKETS),
        }
    }
}

impl ModelMetrics {
    /// Records an admitted stream: its tokens, and its planned latencies (`offsets` loaded, the
    /// wait included).
    pub(crate) fn admitted(&mut self, request: &Request<'_>, wait: Duration, offsets: &[Duration]) {
        self.prompt_tokens += u64::from(request.prompt_tokens);
        self.generation_tokens += u64::from(request.completion_tokens);
        self.cache_queries += u64::from(request.prompt_tokens);
        self.cache_hits += u64::from(request.cached_tokens);
        let first = offsets.first().copied().unwrap_or(wait);
        let last = offsets.last().copied().unwrap_or(wait);
        self.ttft.observe(first.as_secs_f64(), 1);
        self.queue_time.observe(wait.as_secs_f64(), 1);
        self.e2e.observe(last.as_secs_f64(), 1);
        if offsets.len() > 1 {
            for pair in offsets.windows(2) {
                self.itl.observe((pair[1] - pair[0]).as_secs_f64(), 1);
            }
        } else if request.completion_tokens > 1 {
            // A whole reply: its gaps as the same stream's would have been, on average.
            let gaps = request.completion_tokens - 1;
            let mean = last.saturating_sub(first).as_secs_f64() / f64::from(gaps);
            self.itl.observe(mean, u64::from(gaps));
        }
    }

    /// Counts a finished stream by vLLM's `finished_reason`.
    pub(crate) fn finished(&mut self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.finished[i] += 1;
        }
    }
}

/// Renders every model's metrics at `now` (`unix_seconds`, for `vllm:lora_requests_info`).
pub fn render(load: &Load, now: Instant, unix_seconds: f64) -> String {
    let mut models = load.lock();
    for state in models.values_mut() {
        state.prune(now);
    }
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: &dyn Fn(&str) -> f64| {
        header(out, name, help, "gauge");
        for model in models.keys() {
            sample(out, name, &[("model_name", model)], value(model));
        }
    };
    let get = |model: &str| &models[model];
    gauge(
        &mut out,
        "vllm:num_requests_running",
        "Number of requests in model execution batches.",
        &|m| f64::from(get(m).running_at(now)),
    );
    gauge(
        &mut out,
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed.",
        &|m| f64::from(get(m).waiting_at(now)),
    );
    gauge(
        &mut out,
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.",
        &|m| get(m).cache.as_ref().map_or(0.0, |c| c.usage()),
    );
    let counters: [Family<u64>; 4] = [
        (
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            |m| m.prompt_tokens,
        ),
        (
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            |m| m.generation_tokens,
        ),
        (
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            |m| m.cache_queries,
        ),
        (
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            |m| m.cache_hits,
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, help, "counter");
        for (model, state) in models.iter() {
            sample(
                &mut out,
                name,
                &[("model_name", model)],
                value(&state.metrics) as f64,
            );
        }
    }
    let name = "vllm:request_success_total";
    header(
        &mut out,
        name,
        "Count of successfully processed requests.",
        "counter",
    );
    for (model, state) in models.iter() {
        for (reason, count) in REASONS.iter().zip(state.metrics.finished) {
            let labels = [("finished_reason", *reason), ("model_name", model)];
            sample(&mut out, name, &labels, count as f64);
        }
    }
    let histograms: [HistogramFamily; 4] = [
        (
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            |m| &m.ttft,
        ),
        (
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            |m| &m.itl,
        ),
        (
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            |m| &m.queue_time,
        ),
        (
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            |m| &m.e2e,
        ),
    ];
    for (name, help, histogram) in histograms {
        header(&mut out, name, help, "histogram");
        for (model, state) in models.iter() {
            write_histogram(&mut out, name, model, histogram(&state.metrics));
        }
    }
    if !load.adapters().is_empty() {
        let name = "vllm:lora_requests_info";
        header(&mut out, name, "Running stats on lora requests.", "gauge");
        let (mut running, mut waiting) = (Vec::new(), Vec::new());
        for state in models.values() {
            for stream in &state.streams {
                let Some(adapter) = stream.adapter else {
                    continue;
                };
                let list = if stream.start > now {
                    &mut waiting
                } else {
                    &mut running
                };
                if !list.contains(&adapter) {
                    list.push(adapter);
                }
            }
        }
        let names = |list: &mut Vec<usize>| {
            list.sort_unstable();
            list.iter()
                .map(|&i| load.adapters()[i].as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let max = load.settings().max_loras.to_string();
        let running = names(&mut running);
        let waiting = names(&mut waiting);
        let labels = [
            ("max_lora", max.as_str()),
            ("running_lora_adapters", running.as_str()),
            ("waiting_lora_adapters", waiting.as_str()),
        ];
        sample(&mut out, name, &labels, unix_seconds);
    }
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn write_histogram(out: &mut String, name: &str, model: &str, histogram: &Histogram) {
    let mut cumulative = 0;
    let bucket = format!("{name}_bucket");
    for (i, count) in histogram.counts.iter().enumerate() {
        cumulative += count;
        let le = histogram
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |&bound| number(bound));
        let labels = [("model_name", model), ("le", le.as_str())];
        sample(out, &bucket, &labels, cumulative as f64);
    }
    let labels = [("model_name", model)];
    sample(out, &format!("{name}_count"), &labels, cumulative as f64);
    sample(out, &format!("{name}_sum"), &labels, histogram.sum);
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    out.push('{');
    for (i, (label, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{label}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let _ = writeln!(out, "}} {}", number(value));
}

/// A number as Python's Prometheus client writes it: `1.0`, `0.25`, `1.7e+09` style avoided.
fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}
