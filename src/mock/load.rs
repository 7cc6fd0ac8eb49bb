//! A loaded model server: admission, queueing and load-dependent pacing, per model.
//!
//! Admission is a pure computation when the mock answers, not a wait. Each model keeps the
//! planned start and finish of every stream it admitted (running or queued). A new stream starts
//! now while fewer than `max_concurrent` run; else it starts when enough of those ahead of it are
//! planned to finish (an order statistic of their finish times), and beyond `max_queue` waiting it
//! is refused. Its whole pacing schedule is shifted by the wait and its inter-token gaps stretched
//! by the load it starts under, so the existing pacer delivers it and no worker ever waits. A
//! stream that goes early (its client left) releases its place at once.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::FxHasher;
use serde::Deserialize;

use super::metrics::ModelMetrics;
use super::prefix_cache::{BYTES_PER_TOKEN, BlockHasher, PrefixCache};
use crate::config_error::ConfigError;

/// How many models keep state of their own; requests for others share one overflow entry.
pub const MAX_MODELS: usize = 64;
/// The name the overflow entry is reported under.
pub const OVERFLOW_MODEL: &str = "other";
/// The largest `max_concurrent` or `max_queue`: keeps each admission's work bounded.
pub const MAX_STREAMS: u32 = 100_000;
/// The largest `load_factor`.
pub const MAX_LOAD_FACTOR: f64 = 100.0;
/// The longest prefill a config may ask for per token, in milliseconds.
pub const MAX_PREFILL_MS_PER_TOKEN: f64 = 1_000.0;
/// The largest prefix cache, in blocks.
pub const MAX_CACHE_BLOCKS: u32 = 10_000_000;
/// The largest block, in tokens.
pub const MAX_BLOCK_TOKENS: u32 = 4_096;

/// `mock.load` as written; [`LoadSettings::parse`] checks it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadConfig {
    /// Streams a model serves at once.
    pub max_concurrent: u32,
    /// Streams that may wait for one of those places; beyond them, 429.
    pub max_queue: u32,
    /// How much slower each token comes with `max_concurrent` running than with one, linear
    /// in between (1: no slowdown).
    pub load_factor: f64,
    /// Milliseconds of prefill per prompt token not found in the prefix cache, on top of the
    /// time to first token (varied by `mock.latency.jitter`).
    pub prefill_ms_per_token: f64,
    /// The path of the mock listener that answers vLLM's Prometheus metrics, such as
    /// `/metrics`; none serves none.
    pub metrics_path: Option<String>,
    /// The simulated prefix cache; `null` turns it off.
    pub prefix_cache: Option<PrefixCacheConfig>,
    /// LoRA adapters served on a base model, as `{"adapter": "base-model"}`: an adapter's
    /// requests share its base model's places and cache, and `vllm:lora_requests_info` names it.
    pub lora_adapters: BTreeMap<String, String>,
    /// `vllm:lora_requests_info`'s `max_lora` label.
    pub max_loras: u32,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 256,
            max_queue: 1_024,
            load_factor: 1.0,
            prefill_ms_per_token: 0.0,
            metrics_path: None,
            prefix_cache: Some(PrefixCacheConfig::default()),
            lora_adapters: BTreeMap::new(),
            max_loras: 1,
        }
    }
}

/// `mock.load.prefix_cache`: per model, the most recent prompt blocks, least recently used first
/// to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixCacheConfig {
    /// Tokens per block (a block is cached whole or not at all).
    pub block_tokens: u32,
    /// Blocks the cache holds.
    pub capacity_blocks: u32,
}

impl Default for PrefixCacheConfig {
    fn default() -> Self {
        Self {
            block_tokens: 16,
            capacity_blocks: 8_192,
        }
    }
}

/// `mock.load`, checked: what [`Load`] runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSettings {
    /// Streams a model serves at once, at least 1.
    pub max_concurrent: u32,
    /// Streams that may wait.
    pub max_queue: u32,
    /// The slowdown at full concurrency, at least 1.
    pub load_factor: f64,
    /// Prefill time per uncached prompt token.
    pub prefill_per_token: Duration,
    /// The metrics path, if served.
    pub metrics_path: Option<String>,
    /// The prefix cache, if on.
    pub prefix_cache: Option<PrefixCacheConfig>,
    /// LoRA adapters and their base models.
    pub lora_adapters: BTreeMap<String, String>,
    /// `max_lora`.
    pub max_loras: u32,
}

impl LoadSettings {
    /// Checks `mock.load` against the served `models` (when listed, adapters and their bases
    /// must be among them). Errors name fields under `mock.load.`.
    pub fn parse(raw: LoadConfig, models: &[String]) -> Result<Self, ConfigError> {
        let range = |field: &str, value: u32, min: u32, max: u32| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    format!("mock.load.{field}"),
                    format!("{value} is out of range; allowed: {min} to {max}"),
                ))
            }
        };
        range("max_concurrent", raw.max_concurrent, 1, MAX_STREAMS)?;
        range("max_queue", raw.max_queue, 0, MAX_STREAMS)?;
        range("max_loras", raw.max_loras, 1, 1_024)?;
        if !(1.0..=MAX_LOAD_FACTOR).contains(&raw.load_factor) {
            return Err(ConfigError::new(
                "mock.load.load_factor",
                format!(
                    "{} is out of range; allowed: 1 to {MAX_LOAD_FACTOR}",
                    raw.load_factor
                ),
            ));
        }
        if !(0.0..=MAX_PREFILL_MS_PER_TOKEN).contains(&raw.prefill_ms_per_token) {
            return Err(ConfigError::new(
                "mock.load.prefill_ms_per_token",
                format!(
                    "{} is out of range; allowed: 0 to {MAX_PREFILL_MS_PER_TOKEN}",
                    raw.prefill_ms_per_token
                ),
            ));
        }
        if let Some(path) = &raw.metrics_path {
            let plain = path.starts_with('/')
                && path.len() > 1
                && path
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"?#%".contains(&b));
            if !plain {
                return Err(ConfigError::new(
                    "mock.load.metrics_path",
                    format!(
                        "{path:?} is not a plain path; allowed: \"/\" then printable ASCII without ?, # or %"
                    ),
                ));
            }
        }
        if let Some(cache) = &raw.prefix_cache {
            range(
                "prefix_cache.block_tokens",
                cache.block_tokens,
                1,
                MAX_BLOCK_TOKENS,
            )?;
            range(
                "prefix_cache.capacity_blocks",
                cache.capacity_blocks,
                1,
                MAX_CACHE_BLOCKS,
            )?;
        }
        for (adapter, base) in &raw.lora_adapters {
            let field = format!("mock.load.lora_adapters.{adapter}");
            if adapter.is_empty() || adapter == base || raw.lora_adapters.contains_key(base) {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "{base:?} is not a base model for {adapter:?}; allowed: a model that is no adapter"
                    ),
                ));
            }
            for name in [adapter, base] {
                if !models.is_empty() && !models.contains(name) {
                    return Err(ConfigError::new(
                        field,
                        format!("{name:?} is not in mock.models; allowed: {models:?}"),
                    ));
                }
            }
        }
        Ok(Self {
            max_concurrent: raw.max_concurrent,
            max_queue: raw.max_queue,
            load_factor: raw.load_factor,
            prefill_per_token: Duration::from_secs_f64(raw.prefill_ms_per_token / 1_000.0),
            metrics_path: raw.metrics_path,
            prefix_cache: raw.prefix_cache,
            lora_adapters: raw.lora_adapters,
            max_loras: raw.max_loras,
        })
    }

    /// The inter-token stretch of a stream that starts with `running` streams running (itself
    /// included): 1 alone, `load_factor` at `max_concurrent`, linear in between.
    pub fn itl_factor(&self, running: u32) -> f64 {
        if self.max_concurrent <= 1 {
            return 1.0;
        }
        let busy = f64::from(running.clamp(1, self.max_concurrent) - 1);
        1.0 + (self.load_factor - 1.0) * busy / f64::from(self.max_concurrent - 1)
    }
}

/// A stream the model admitted: when it starts and is planned to end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admitted {
    id: u64,
    pub(crate) start: Instant,
    pub(crate) finish: Instant,
    /// Index into the adapters' names, for a LoRA adapter's request.
    pub(crate) adapter: Option<usize>,
}

/// One model's live state.
#[derive(Debug)]
pub(crate) struct ModelState {
    pub(crate) streams: Vec<Admitted>,
    pub(crate) cache: Option<PrefixCache>,
    pub(crate) metrics: ModelMetrics,
    /// When it was last used, for evicting the least recent model.
    last_used: u64,
}

impl ModelState {
    fn new(cache: Option<PrefixCacheConfig>) -> Self {
        Self {
            streams: Vec::new(),
            cache: cache.map(|c| PrefixCache::new(c.capacity_blocks as usize)),
            metrics: ModelMetrics::default(),
            last_used: 0,
        }
    }

    /// Forgets the streams that are over by `now`.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.streams.retain(|s| s.finish > now);
    }

    /// Streams running at `at`.
    pub(crate) fn running_at(&self, at: Instant) -> u32 {
        let count = self
            .streams
            .iter()
            .filter(|s| s.start <= at && at < s.finish)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Streams admitted but not started by `at`.
    pub(crate) fn waiting_at(&self, at: Instant) -> u32 {
        let count = self.streams.iter().filter(|s| s.start > at).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }
}

/// What a stream asks of its model when the mock has made its reply.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The model answering (an adapter's name, for a LoRA request).
    pub model: &'a str,
    /// When each step of the reply is due, unloaded; empty for all at once.
    pub offsets: Vec<Duration>,
    /// When the first token is due within that, unloaded: the decode after it is stretched.
    pub first_token: Duration,
    /// How many steps the reply has (the offsets an immediate reply gets when it must wait).
    pub steps: usize,
    /// Tokens of the prompt, of which `cached_tokens` came from the prefix cache.
    pub prompt_tokens: u32,
    /// Prompt tokens found in the prefix cache.
    pub cached_tokens: u32,
    /// Tokens of the reply.
    pub completion_tokens: u32,
    /// vLLM's `finished_reason` when the stream completes: `stop` or `length`.
    pub finished_reason: &'static str,
    /// The prompt's block hashes, for the prefix cache.
    pub blocks: Vec<u64>,
}

/// An admitted stream: its schedule and the place it holds.
#[derive(Debug)]
pub struct Admission {
    /// The place; dropping it releases it.
    pub slot: Slot,
    /// How long it waits for a place before its first token's time counts.
    pub wait: Duration,
    /// The reply's schedule, shifted by the wait and stretched by the load.
    pub offsets: Vec<Duration>,
}

/// A stream refused because its model's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// Streams running.
    pub running: u32,
    /// Streams waiting.
    pub waiting: u32,
}

/// The live load state of every model of one filter config, shared by all workers.
#[derive(Debug)]
pub struct Load {
    settings: LoadSettings,
    /// The adapters' names, in order: [`Admitted::adapter`] indexes them.
    adapters: Vec<String>,
    models: Mutex<BTreeMap<String, ModelState>>,
    ticks: AtomicU64,
}

impl Load {
    /// The state of a config's `mock.load`, with an entry for each listed model (so metrics
    /// report them from the start).
    pub fn new(settings: LoadSettings, models: &[String]) -> Arc<Self> {
        let adapters = settings.lora_adapters.keys().cloned().collect();
        let mut states = BTreeMap::new();
        for model in models
            .iter()
            .filter(|m| !settings.lora_adapters.contains_key(*m))
            .take(MAX_MODELS)
        {
            states.insert(model.clone(), ModelState::new(settings.prefix_cache));
        }
        Arc::new(Self {
            settings,
            adapters,
            models: Mutex::new(states),
            ticks: AtomicU64::new(0),
        })
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// The adapters' names, in order.
    pub(crate) fn adapters(&self) -> &[String] {
        &self.adapters
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ModelState>> {
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The base model a served model runs on, and its adapter's index when it is one.
    fn base_of<'a>(&'a self, model: &'a str) -> (&'a str, Option<usize>) {
        match self.settings.lora_adapters.get(model) {
            Some(base) => (base, self.adapters.iter().position(|a| a == model)),
            None => (model, None),
        }
    }

    /// The state of `base`, made if new: beyond [`MAX_MODELS`], the least recently used idle
    /// model makes way, or the overflow entry serves it.
    fn state<'m>(
        &self,
        models: &'m mut BTreeMap<String, ModelState>,
        base: &str,
        now: Instant,
    ) -> (String, &'m mut ModelState) {
        let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
        let key = if models.contains_key(base) {
            base.to_owned()
        } else if models.len() < MAX_MODELS {
            models.insert(base.to_owned(), ModelState::new(self.settings.prefix_cache));
            base.to_owned()
        } else {
            let idle = models
                .iter_mut()
                .filter(|(name, _)| *name != OVERFLOW_MODEL)
                .filter_map(|(name, state)| {
                    state.prune(now);
                    state
                        .streams
                        .is_empty()
                        .then_some((state.last_used, name.clone()))
                })
                .min();
            match idle {
                Some((_, name)) => {
                    models.remove(&name);
                    models.insert(base.to_owned(), ModelState::new(self.settings.prefix_cache));
                    base.to_owned()
                }
                None => OVERFLOW_MODEL.to_owned(),
            }
        };
        let state = models
            .entry(key.clone())
            .or_insert_with(|| ModelState::new(self.settings.prefix_cache));
        state.last_used = tick;
        (key, state)
    }

    /// Hashes the bytes of a prompt to `model` into the cache's blocks (none when the cache is
    /// off). An adapter's blocks are its own, as vLLM keys them by adapter too.
    pub fn hasher(&self, model: &str) -> Option<BlockHasher> {
        let (_, adapter) = self.base_of(model);
        let seed = adapter.map_or(0, |i| {
            let mut hasher = FxHasher::default();
            hasher.write(self.adapters[i].as_bytes());
            hasher.finish()
        });
        self.settings.prefix_cache.map(|cache| {
            BlockHasher::new(
                cache.block_tokens as usize * BYTES_PER_TOKEN,
                cache.capacity_blocks as usize,
                seed,
            )
        })
    }

    /// How many of `blocks` (a prompt's, in order) `model`'s cache holds as a prefix.
    pub fn cached_blocks(&self, model: &str, blocks: &[u64], now: Instant) -> usize {
        let (base, _) = self.base_of(model);
        let mut models = self.lock();
        let (_, state) = self.state(&mut models, base, now);
        state
            .cache
            .as_ref()
            .map_or(0, |cache| cache.prefix_len(blocks))
    }

    /// Admits a stream at `now`, or refuses it when its model's queue is full. Also caches its
    /// prompt's blocks and records its metrics.
    pub fn admit(
        self: &Arc<Self>,
        request: Request<'_>,
        now: Instant,
    ) -> Result<Admission, QueueFull> {
        let (base, adapter) = self.base_of(request.model);
        let capacity = self.settings.max_concurrent as usize;
        let mut models = self.lock();
        let (key, state) = self.state(&mut models, base, now);
        state.prune(now);
        let running = state.running_at(now);
        let start = if (running as usize) < capacity {
            now
        } else {
            let waiting = state.waiting_at(now);
            if waiting >= self.settings.max_queue {
                state.metrics.queue_full += 1;
                return Err(QueueFull { running, waiting });
            }
            // Every admitted stream is ahead of this one: it starts once all but
            // `capacity - 1` of them have finished.
            let mut finishes: Vec<Instant> = state.streams.iter().map(|s| s.finish).collect();
            let k = finishes.len() - capacity;
            *finishes.select_nth_unstable(k).1
        };
        let wait = start - now;
        let running_then = state.running_at(start) + 1;
        let factor = self.settings.itl_factor(running_then);
        let offsets = loaded_offsets(&request, wait, factor);
        let finish = now + offsets.last().copied().unwrap_or(wait);
        let id = self.ticks.fetch_add(1, Ordering::Relaxed);
        state.streams.push(Admitted {
            id,
            start,
            finish,
            adapter,
        });
        if let Some(cache) = &mut state.cache {
            cache.insert(&request.blocks);
        }
        state.metrics.admitted(&request, wait, &offsets);
        Ok(Admission {
            slot: Slot {
                load: Arc::clone(self),
                model: key,
                id,
                finish,
                finished_reason: request.finished_reason,
                released: false,
            },
            wait,
            offsets,
        })
    }

    /// A stream's place is given back at `now`: early, it was aborted; else it succeeded.
    fn release(&self, slot: &Slot, now: Instant) {
        let mut models = self.lock();
        let Some(state) = models.get_mut(&slot.model) else {
            return;
        };
        state.streams.retain(|s| s.id != slot.id);
        let reason = if now + RELEASE_SLACK >= slot.finish {
            slot.finished_reason
        } else {
            "abort"
        };
        state.metrics.finished(reason);
    }
}

/// How early a stream may be released and still count as complete: the pacer's last wake and
/// the stream's end are not the same instant.
const RELEASE_SLACK: Duration = Duration::from_millis(5);

/// The schedule of an admitted reply: the first token after the wait, each gap after it
/// stretched by `factor`. An immediate reply that must wait gets every step at the wait.
fn loaded_offsets(request: &Request<'_>, wait: Duration, factor: f64) -> Vec<Duration> {
    if request.offsets.is_empty() {
        return if wait.is_zero() {
            Vec::new()
        } else {
            vec![wait; request.steps.max(1)]
        };
    }
    let first = request.first_token.min(request.offsets[0]);
    request
        .offsets
        .iter()
        .map(|&due| {
            let decode = due.saturating_sub(first);
            let decode = if factor == 1.0 {
                decode
            } else {
                decode.mul_f64(factor)
            };
            wait + first + decode
        })
        .collect()
}

/// A stream's place in its model's schedule; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    load: Arc<Load>,
    model: String,
    id: u64,
    finish: Instant,
    finished_reason: &'static str,
    released: bool,
}

impl Slot {
    /// Gives the place back at `now` (a test's clock; dropping uses the real one).
    pub fn release_at(mut self, now: Instant) {
        self.load.release(&self, now);
        self.released = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.released {
            self.load.release(self, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
