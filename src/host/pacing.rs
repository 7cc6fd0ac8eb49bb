//! Pacing: one timer thread per filter config wakes every paced stream at its due times.
//!
//! A stream never blocks its Envoy worker and never owns a thread. It hands the [`Pacer`] a list of
//! offsets and a [`Wakeup`]; the timer thread calls `wake(i)` when offset `i` is due (the ABI layer
//! turns that into a scheduler commit, which runs the stream's `on_scheduled` on its own worker),
//! and `finish` once after the last wake or as soon as the stream is cancelled. The thread sleeps on
//! a condition variable until the earliest due time, so a thousand idle streams cost nothing, and a
//! dropped [`Pacer`] stops and joins it at once.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the timer thread calls for one paced stream. Called from the timer thread only.
pub trait Wakeup: Send {
    /// Offset number `event` is due.
    fn wake(&mut self, event: u64);
    /// No more wakes will come (all were delivered, or the stream was cancelled).
    fn finish(self: Box<Self>);
}

/// Cancels a paced stream when dropped: its remaining wakes are skipped and `finish` runs soon.
#[derive(Debug)]
pub struct PacingHandle {
    cancelled: Arc<AtomicBool>,
}

impl Drop for PacingHandle {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Release);
    }
}

struct Paced {
    wakeup: Box<dyn Wakeup>,
    due: Vec<Instant>,
    next: usize,
    cancelled: Arc<AtomicBool>,
}

/// A heap entry: the paced stream and its next due time, earliest first.
struct Entry {
    due: Instant,
    /// Tie-breaker keeping insertion order among equal due times.
    sequence: u64,
    paced: Paced,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.sequence) == (other.due, other.sequence)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.sequence).cmp(&(other.due, other.sequence))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    sequence: u64,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic in a wakeup never holds this lock, so a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The timer of one filter config. The thread starts with the first paced stream.
#[derive(Default)]
pub struct Pacer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").finish_non_exhaustive()
    }
}

impl Pacer {
    /// Paces a stream: `wakeup.wake(i)` at `start + offsets[i]`, then `finish`. Offsets must not
    /// decrease. Dropping the returned handle cancels what is left.
    pub fn pace(
        &self,
        wakeup: Box<dyn Wakeup>,
        start: Instant,
        offsets: &[Duration],
    ) -> PacingHandle {
        let cancelled = Arc::new(AtomicBool::new(false));
        let due: Vec<Instant> = offsets.iter().map(|offset| start + *offset).collect();
        let Some(&first) = due.first() else {
            wakeup.finish();
            return PacingHandle { cancelled };
        };
        self.ensure_thread();
        let paced = Paced {
            wakeup,
            due,
            next: 0,
            cancelled: Arc::clone(&cancelled),
        };
        push(&mut self.shared.lock(), first, paced);
        self.shared.changed.notify_one();
        PacingHandle { cancelled }
    }

    fn ensure_thread(&self) {
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        if thread.is_none() {
            let shared = Arc::clone(&self.shared);
            *thread = Some(
                std::thread::Builder::new()
                    .name("llm_edge_pacer".into())
                    .spawn(move || run(&shared))
                    .expect("spawning the pacing thread"),
            );
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_one();
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(thread) = thread.take() {
            // The thread only ends by seeing `stopping`; a panic in it was already logged.
            let _ = thread.join();
        }
    }
}

fn push(queue: &mut Queue, due: Instant, paced: Paced) {
    queue.sequence += 1;
    let sequence = queue.sequence;
    queue.heap.push(Reverse(Entry {
        due,
        sequence,
        paced,
    }));
}

/// The timer thread: wakes each stream when due, sleeping until the earliest due time.
fn run(shared: &Shared) {
    let mut queue = shared.lock();
    loop {
        if queue.stopping {
            // Streams still queued get their `finish`, so every scheduler is released.
            for Reverse(entry) in std::mem::take(&mut queue.heap) {
                entry.paced.wakeup.finish();
            }
            return;
        }
        let now = Instant::now();
        let Some(Reverse(next)) = queue.heap.peek() else {
            queue = shared
                .changed
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        if next.due > now {
            let wait = next.due - now;
            queue = shared
                .changed
                .wait_timeout(queue, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue;
        }
        let Reverse(Entry { mut paced, .. }) = queue.heap.pop().expect("peeked above");
        drop(queue);
        let next_due = step(&mut paced, now);
        queue = shared.lock();
        match next_due {
            Some(due) => push(&mut queue, due, paced),
            None => {
                drop(queue);
                paced.wakeup.finish();
                queue = shared.lock();
            }
        }
    }
}

/// Delivers every wake of `paced` due by `now`; returns when the next one is due, if any.
fn step(paced: &mut Paced, now: Instant) -> Option<Instant> {
    while paced.next < paced.due.len() {
        if paced.cancelled.load(Ordering::Acquire) {
            return None;
        }
        if paced.due[paced.next] > now {
            return Some(paced.due[paced.next]);
        }
        paced.wakeup.wake(paced.next as u64);
        paced.next += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Wake(usize, u64),
        Finish(usize),
    }

    struct Recorder {
        stream: usize,
        events: mpsc::Sender<Seen>,
    }

    impl Wakeup for Recorder {
        fn wake(&mut self, event: u64) {
            self.events.send(Seen::Wake(self.stream, event)).unwrap();
        }
        fn finish(self: Box<Self>) {
            self.events.send(Seen::Finish(self.stream)).unwrap();
        }
    }

    fn recorder(stream: usize, events: &mpsc::Sender<Seen>) -> Box<Recorder> {
        Box::new(Recorder {
            stream,
            events: events.clone(),
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn wakes_each_offset_in_order_then_finishes() {
        let pacer = Pacer::default();
        let (tx, rx) = mpsc::channel();
        let _handle = pacer.pace(
            recorder(7, &tx),
            Instant::now(),
            &[ms(0), ms(1), ms(1), ms(3)],
        );
        let seen: Vec<Seen> = rx.iter().take(5).collect();
        assert_eq!(
            seen,
            [
                Seen::Wake(7, 0),
                Seen::Wake(7, 1),
                Seen::Wake(7, 2),
                Seen::Wake(7, 3),
                Seen::Finish(7)
            ]
        );
    }

    #[test]
    fn interleaves_streams_by_due_time() {
        let pacer = Pacer::default();
        let (tx, rx) = mpsc::channel();
        let start = Instant::now() + ms(5);
        let _a = pacer.pace(recorder(1, &tx), start, &[ms(0), ms(20)]);
        let _b = pacer.pace(recorder(2, &tx), start, &[ms(10)]);
        let seen: Vec<Seen> = rx.iter().take(5).collect();
        assert_eq!(
            seen,
            [
                Seen::Wake(1, 0),
                Seen::Wake(2, 0),
                Seen::Finish(2),
                Seen::Wake(1, 1),
                Seen::Finish(1)
            ]
        );
    }

    #[test]
    fn a_dropped_handle_cancels_the_rest_and_still_finishes() {
        let pacer = Pacer::default();
        let (tx, rx) = mpsc::channel();
        let handle = pacer.pace(recorder(3, &tx), Instant::now(), &[ms(0), ms(60_000)]);
        assert_eq!(rx.recv().unwrap(), Seen::Wake(3, 0));
        drop(handle);
        // The next due time is a minute away: dropping the pacer wakes the thread to finish it.
        drop(pacer);
        assert_eq!(rx.recv().unwrap(), Seen::Finish(3));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn no_offsets_finish_at_once_without_a_thread() {
        let pacer = Pacer::default();
        let (tx, rx) = mpsc::channel();
        let _handle = pacer.pace(recorder(4, &tx), Instant::now(), &[]);
        assert_eq!(rx.try_recv().unwrap(), Seen::Finish(4));
        assert!(pacer.thread.lock().unwrap().is_none());
    }

    #[test]
    fn many_streams_all_complete() {
        let pacer = Pacer::default();
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let handles: Vec<_> = (0..1000)
            .map(|i| pacer.pace(recorder(i, &tx), start, &[ms(i as u64 % 7), ms(7)]))
            .collect();
        let finished = rx
            .iter()
            .filter(|seen| matches!(seen, Seen::Finish(_)))
            .take(1000)
            .count();
        assert_eq!(finished, 1000);
        drop(handles);
    }
}
