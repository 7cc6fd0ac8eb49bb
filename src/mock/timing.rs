//! When a reply's pieces are due: time to first token (with the prompt's prefill), the gap
//! between tokens, jitter; and the prompt tokens the prefix cache spared.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{MockReply, ReplyShape};
use crate::api::openai::generation::{ChoiceText, Usage};
use crate::mock::config::LatencyConfig;
use crate::mock::prefix_cache::CachedPrefix;

/// How long a reply takes: the first token after `time_to_first_token`, then one every
/// `inter_token`, each delay varied by up to `jitter` of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// Delay before the first token.
    pub time_to_first_token: Duration,
    /// Delay between tokens.
    pub inter_token: Duration,
    /// Fraction, 0 to 1, by which each delay varies uniformly.
    pub jitter: f64,
    /// Seed of the jitter; `None` draws a fresh one per reply.
    pub seed: Option<u64>,
    /// Prefill time per prompt token not in the prefix cache, added to the first token's.
    pub prefill_per_token: Duration,
    /// What the prefix cache held of the prompt: reported as cached, not prefilled.
    pub prefix: CachedPrefix,
}

impl Timing {
    /// The configured timing.
    pub fn from_config(latency: &LatencyConfig) -> Self {
        Self {
            time_to_first_token: Duration::from_millis(latency.time_to_first_token_ms),
            inter_token: Duration::from_millis(latency.inter_token_ms),
            jitter: latency.jitter,
            seed: latency.seed,
            prefill_per_token: Duration::ZERO,
            prefix: CachedPrefix::default(),
        }
    }

    /// The usage of a reply of `completion_tokens` to a prompt of `prompt_tokens`, with the
    /// prompt tokens the prefix cache held.
    pub fn usage(&self, prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: self.prefix.tokens(prompt_tokens),
        }
    }

    /// The prefill of a reply with `usage`: its uncached prompt tokens, each
    /// `prefill_per_token`.
    pub fn prefill(&self, usage: Usage) -> Duration {
        let uncached = usage.prompt_tokens.saturating_sub(usage.cached_tokens);
        self.prefill_per_token * uncached
    }

    /// When the first token of a reply with `usage` is due, before jitter.
    pub fn first_token(&self, usage: Usage) -> Duration {
        self.time_to_first_token + self.prefill(usage)
    }

    /// Whether replies go out at once.
    pub fn is_instant(&self) -> bool {
        self.time_to_first_token.is_zero() && self.inter_token.is_zero()
    }

    /// When each of `steps` token steps is due, measured from the start of the reply.
    pub fn offsets(&self, steps: usize) -> Vec<Duration> {
        self.offsets_after(steps, Duration::ZERO)
    }

    /// [`Self::offsets`] with `prefill` added to the first token's delay (and jittered with
    /// it).
    pub fn offsets_after(&self, steps: usize, prefill: Duration) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(self.seed.unwrap_or_else(rand::random));
        let mut jittered = |delay: Duration| {
            if self.jitter == 0.0 || delay.is_zero() {
                delay
            } else {
                delay.mul_f64(1.0 + self.jitter * rng.random_range(-1.0..=1.0))
            }
        };
        let mut due = jittered(self.time_to_first_token + prefill);
        let mut offsets = Vec::with_capacity(steps);
        for step in 0..steps {
            if step > 0 {
                due += jittered(self.inter_token);
            }
            offsets.push(due);
        }
        offsets
    }
}

/// Packs rendered output with its timing: stream steps paced token by token, or one whole body
/// due when its last token would have been.
pub(super) fn timed_reply(
    timing: &Timing,
    choices: &[ChoiceText<'_>],
    usage: Usage,
    stream: Option<Vec<Vec<u8>>>,
    whole: impl FnOnce() -> Vec<u8>,
) -> MockReply {
    let token_steps = choices
        .iter()
        .map(ChoiceText::steps)
        .max()
        .unwrap_or(0)
        .max(1);
    let prefill = timing.prefill(usage);
    let offsets = if timing.is_instant() && prefill.is_zero() {
        Vec::new()
    } else {
        timing.offsets_after(token_steps, prefill)
    };
    match stream {
        Some(steps) => MockReply {
            shape: ReplyShape::Stream,
            steps,
            offsets,
            usage,
        },
        None => MockReply {
            shape: ReplyShape::Whole,
            steps: vec![whole()],
            offsets: offsets.last().copied().into_iter().collect(),
            usage,
        },
    }
}
