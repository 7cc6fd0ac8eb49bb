//! The simulated prefix cache: a prompt cut into blocks, each named by a hash of itself and all
//! before it (as vLLM names its KV blocks), and per model a bounded set of the most recently
//! used blocks. A prompt's cached prefix is its leading blocks the set holds.
//!
//! Blocks are cut from the prompt's text, not its tokens, at the approximate tokenizer's four
//! bytes a token, so that finding them costs one pass of hashing whatever the tokenizer; the
//! tokens they stand for are the prompt's count in proportion (see [`CachedPrefix::tokens`]).

use std::collections::BTreeMap;
use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};

/// The bytes of prompt text a token stands for, when cutting blocks.
pub const BYTES_PER_TOKEN: usize = 4;

/// Cuts a prompt's bytes, fed in pieces, into chained block hashes.
#[derive(Debug)]
pub struct BlockHasher {
    block_bytes: usize,
    max_blocks: usize,
    partial: Vec<u8>,
    previous: u64,
    blocks: Vec<u64>,
    bytes: u64,
}

/// A prompt's blocks, and its length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptBlocks {
    /// The hash of each whole block, in order (at most the cache's capacity).
    pub blocks: Vec<u64>,
    /// The bytes of one block.
    pub block_bytes: usize,
    /// The prompt's whole length in bytes.
    pub bytes: u64,
}

impl BlockHasher {
    /// A hasher of blocks of `block_bytes`, keeping at most `max_blocks` of them; the chain
    /// starts from `seed`, so that prompts under different seeds share no block.
    pub fn new(block_bytes: usize, max_blocks: usize, seed: u64) -> Self {
        Self {
            block_bytes: block_bytes.max(1),
            max_blocks,
            partial: Vec::with_capacity(block_bytes),
            previous: seed,
            blocks: Vec::new(),
            bytes: 0,
        }
    }

    /// Feeds the next bytes of the prompt.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.blocks.len() >= self.max_blocks {
                return;
            }
            let room = self.block_bytes - self.partial.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.partial.extend_from_slice(now);
            bytes = rest;
            if self.partial.len() == self.block_bytes {
                let mut hasher = FxHasher::default();
                hasher.write_u64(self.previous);
                hasher.write(&self.partial);
                self.previous = hasher.finish();
                self.blocks.push(self.previous);
                self.partial.clear();
            }
        }
    }

    /// The prompt's blocks; a partial last block is not one.
    pub fn finish(self) -> PromptBlocks {
        PromptBlocks {
            blocks: self.blocks,
            block_bytes: self.block_bytes,
            bytes: self.bytes,
        }
    }
}

/// What the prefix cache held of a prompt: the bytes its cached blocks cover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CachedPrefix {
    /// Bytes of the prompt covered by cached blocks.
    pub matched_bytes: u64,
    /// The prompt's length in bytes.
    pub prompt_bytes: u64,
    /// Tokens a block stands for: cached tokens come in whole blocks.
    pub block_tokens: u32,
}

impl CachedPrefix {
    /// The cached tokens of a prompt of `prompt_tokens`: its count in proportion to the bytes
    /// matched, in whole blocks, and never the whole prompt (the last token is always computed,
    /// as in vLLM).
    pub fn tokens(&self, prompt_tokens: u32) -> u32 {
        if self.prompt_bytes == 0 || self.block_tokens == 0 || self.matched_bytes == 0 {
            return 0;
        }
        let share = u64::from(prompt_tokens) * self.matched_bytes.min(self.prompt_bytes)
            / self.prompt_bytes;
        let share = u32::try_from(share)
            .unwrap_or(u32::MAX)
            .min(prompt_tokens.saturating_sub(1));
        share - share % self.block_tokens
    }
}

/// The most recently used blocks of one model, up to a capacity.
#[derive(Debug)]
pub struct PrefixCache {
    capacity: usize,
    /// Each block's last use.
    used: FxHashMap<u64, u64>,
    /// The blocks by last use, oldest first.
    by_use: BTreeMap<u64, u64>,
    tick: u64,
}

impl PrefixCache {
    /// An empty cache of `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            used: FxHashMap::default(),
            by_use: BTreeMap::new(),
            tick: 0,
        }
    }

    /// How many leading `blocks` the cache holds.
    pub fn prefix_len(&self, blocks: &[u64]) -> usize {
        blocks
            .iter()
            .take_while(|b| self.used.contains_key(b))
            .count()
    }

    /// Marks `blocks` used now, adding those it lacks and evicting the least recently used
    /// beyond capacity. A prompt's later blocks are marked older than its first, so eviction
    /// shortens a cached prefix from its end.
    pub fn insert(&mut self, blocks: &[u64]) {
        for &block in blocks.iter().take(self.capacity).rev() {
            self.tick += 1;
            if let Some(old) = self.used.insert(block, self.tick) {
                self.by_use.remove(&old);
            }
            self.by_use.insert(self.tick, block);
            if self.used.len() > self.capacity {
                if let Some((_, oldest)) = self.by_use.pop_first() {
                    self.used.remove(&oldest);
                }
            }
        }
    }

    /// Blocks held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.used.len()
    }

    /// The share of its capacity in use, 0 to 1.
    pub fn usage(&self) -> f64 {
        self.used.len() as f64 / self.capacity as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &str, block_bytes: usize) -> PromptBlocks {
        let mut hasher = BlockHasher::new(block_bytes, 100, 0);
        for piece in text.as_bytes().chunks(3) {
            hasher.feed(piece);
        }
        hasher.finish()
    }

    #[test]
    fn blocks_chain_so_only_a_shared_prefix_matches() {
        let a = blocks("aaaabbbbccccdd", 4);
        assert_eq!(a.blocks.len(), 3);
        assert_eq!(a.bytes, 14);
        let b = blocks("aaaabbbbXXXXcccc", 4);
        assert_eq!(a.blocks[..2], b.blocks[..2]);
        assert_ne!(a.blocks[2], b.blocks[2]);
        // The same block after a different prefix is a different block.
        let c = blocks("XXXXbbbb", 4);
        assert_ne!(a.blocks[1], c.blocks[1]);
        let mut seeded = BlockHasher::new(4, 100, 1);
        seeded.feed(b"aaaabbbb");
        assert_ne!(seeded.finish().blocks[0], a.blocks[0]);
        let mut cache = PrefixCache::new(10);
        cache.insert(&a.blocks);
        assert_eq!(cache.prefix_len(&b.blocks), 2);
        assert_eq!(cache.prefix_len(&c.blocks), 0);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_least_recently_used_blocks_go_first_a_prompts_tail_before_its_head() {
        let mut cache = PrefixCache::new(3);
        cache.insert(&[1, 2, 3]);
        cache.insert(&[4]);
        // 3, the tail of the first prompt, went.
        assert_eq!(cache.prefix_len(&[1, 2, 3]), 2);
        assert_eq!(cache.len(), 3);
        cache.insert(&[1]);
        cache.insert(&[5]);
        assert_eq!(cache.prefix_len(&[1]), 1);
        assert_eq!(cache.prefix_len(&[2]), 0);
        assert!((cache.usage() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn cached_tokens_come_in_whole_blocks_and_never_the_whole_prompt() {
        let prefix = CachedPrefix {
            matched_bytes: 384,
            prompt_bytes: 400,
            block_tokens: 16,
        };
        assert_eq!(prefix.tokens(100), 96);
        let all = CachedPrefix {
            matched_bytes: 64,
            prompt_bytes: 64,
            block_tokens: 16,
        };
        assert_eq!(all.tokens(16), 0);
        assert_eq!(all.tokens(33), 32);
        assert_eq!(CachedPrefix::default().tokens(100), 0);
    }

    #[test]
    fn a_long_prompt_keeps_at_most_capacity_blocks() {
        let mut hasher = BlockHasher::new(2, 3, 0);
        hasher.feed(b"0123456789");
        let prompt = hasher.finish();
        assert_eq!(prompt.blocks.len(), 3);
        assert_eq!(prompt.bytes, 10);
    }
}
