//! Mock embeddings: deterministic unit vectors derived from the input.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::limits::check_reply;
use super::{MockReply, ReplyShape};
use crate::accounting::tokens::Tokenizer;
use crate::api::openai::ApiError;
use crate::api::openai::embeddings::{self, EmbeddingInput, EmbeddingsRequest};
use crate::api::openai::generation::Usage;
use crate::mock::config::MockConfig;

use super::limits::{CHOICE_BYTES, REPLY_BYTES, json_str_len};

/// Answers an embeddings request: one unit vector per input, determined by the input alone, so
/// the same text always embeds the same and different texts differ.
pub fn embeddings(tokenizer: Tokenizer, request: &EmbeddingsRequest) -> MockReply {
    let dimensions = request
        .dimensions
        .unwrap_or_else(|| default_dimensions(&request.model));
    let mut prompt_tokens = 0u32;
    let vectors = request
        .inputs
        .iter()
        .map(|input| {
            let tokens = match input {
                EmbeddingInput::Text(text) => tokenizer.count(&request.model, text),
                EmbeddingInput::Tokens(ids) => u32::try_from(ids.len()).unwrap_or(u32::MAX),
            };
            prompt_tokens = prompt_tokens.saturating_add(tokens);
            embedding_vector(input, dimensions)
        })
        .collect();
    let body = embeddings::render(
        &request.model,
        vectors,
        request.encoding_format,
        prompt_tokens,
    );
    MockReply {
        shape: ReplyShape::Whole,
        steps: vec![body],
        offsets: Vec::new(),
        usage: Usage {
            prompt_tokens,
            completion_tokens: 0,
            cached_tokens: 0,
        },
    }
}

/// OpenAI's 400 when the embeddings of `request` could exceed `mock.max_reply_bytes`: each
/// input is a vector of `dimensions` numbers, up to 16 bytes each as JSON floats.
pub fn check_embeddings(config: &MockConfig, request: &EmbeddingsRequest) -> Result<(), ApiError> {
    let dimensions = request
        .dimensions
        .unwrap_or_else(|| default_dimensions(&request.model)) as u64;
    let one = CHOICE_BYTES + 16 * dimensions;
    let estimate = REPLY_BYTES + json_str_len(&request.model) + request.inputs.len() as u64 * one;
    let fewer = (request.inputs.len() > 1).then_some("input");
    let culprit = if request.dimensions.is_some() {
        "dimensions"
    } else {
        "input"
    };
    check_reply(
        config.max_reply_bytes,
        estimate,
        REPLY_BYTES + one,
        fewer,
        culprit,
    )
}

/// OpenAI's vector size for the model: 3072 for text-embedding-3-large, else 1536.
pub(super) fn default_dimensions(model: &str) -> usize {
    if model.contains("embedding-3-large") {
        3072
    } else {
        1536
    }
}

/// A unit vector seeded by a stable hash (FNV-1a) of the input.
pub(super) fn embedding_vector(input: &EmbeddingInput, dimensions: usize) -> Vec<f32> {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = |seed: u64, bytes: &[u8]| {
        bytes
            .iter()
            .fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
    };
    let seed = match input {
        EmbeddingInput::Text(text) => hash(hash(FNV_OFFSET, b"text:"), text.as_bytes()),
        EmbeddingInput::Tokens(ids) => ids.iter().fold(hash(FNV_OFFSET, b"tokens:"), |h, id| {
            hash(h, &id.to_le_bytes())
        }),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vector: Vec<f32> = (0..dimensions)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}
