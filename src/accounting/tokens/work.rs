//! A count of what exact counting does, kept in tests only, so that tests can bound the work by
//! the input's length without timing anything.

#[cfg(test)]
use std::cell::Cell;

/// What exact counting did on this thread since [`take`].
#[cfg(test)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Work {
    /// Bytes the pre-tokenizers looked at: each scan of a run, and of a segment for its cuts.
    pub scanned: usize,
    /// Bytes handed to a BPE merge or to tiktoken, summed over the calls.
    pub bpe_bytes: usize,
    /// The squares of the lengths handed to a BPE merge or to tiktoken, summed: the cost of a
    /// merge that is quadratic in its input.
    pub bpe_square: u128,
    /// The longest text handed to a BPE merge or to tiktoken at once.
    pub longest: usize,
    /// Cuts made where tiktoken need not cut, because a stretch had nowhere else to be cut.
    pub forced_cuts: usize,
}

#[cfg(test)]
thread_local! {
    static WORK: Cell<Work> = Cell::new(Work::default());
}

#[cfg(test)]
fn update(change: impl FnOnce(&mut Work)) {
    WORK.with(|work| {
        let mut now = work.get();
        change(&mut now);
        work.set(now);
    });
}

/// Notes `bytes` looked at by a pre-tokenizer.
#[cfg(test)]
pub(super) fn scanned(bytes: usize) {
    update(|work| work.scanned += bytes);
}

/// Notes `bytes` handed to a BPE merge or to tiktoken in one call.
#[cfg(test)]
pub(super) fn merged(bytes: usize) {
    update(|work| {
        work.bpe_bytes += bytes;
        work.bpe_square += (bytes as u128).pow(2);
        work.longest = work.longest.max(bytes);
    });
}

/// Notes a cut tiktoken would not have made.
#[cfg(test)]
pub(super) fn forced_cut() {
    update(|work| work.forced_cuts += 1);
}

/// The work done on this thread since the last call, and starts counting again.
#[cfg(test)]
pub(super) fn take() -> Work {
    WORK.with(Cell::take)
}

#[cfg(not(test))]
#[inline(always)]
pub(super) fn scanned(_: usize) {}

#[cfg(not(test))]
#[inline(always)]
pub(super) fn merged(_: usize) {}

#[cfg(not(test))]
#[inline(always)]
pub(super) fn forced_cut() {}
