//! Small single-threaded async helpers shared by the shard's modules, and the clock seam.

pub mod clock;

pub use clock::{Clock, ManualClock, SystemClock};

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

/// Wakes every task waiting on it; a waiter that started before a notification always sees it.
/// Single-threaded (one per shard-owned object), so no atomics.
#[derive(Default)]
pub struct Notify {
    epoch: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.epoch.set(self.epoch.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Resolves at the next `notify_all` after this call.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        let start = self.epoch.get();
        std::future::poll_fn(move |cx| {
            if self.epoch.get() != start {
                Poll::Ready(())
            } else {
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// 64 random bits for ids (member ids, topic ids), not for secrets: a per-thread SplitMix64
/// seeded once from std's per-thread random hasher keys (one getrandom per thread, at first
/// use), so a shard never reads `/dev/urandom` or blocks on the hot path.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_i64(now_ms());
            h.finish()
        });
    }
    STATE.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

pub fn align_down(v: u64, a: u64) -> u64 {
    v - v % a
}

pub fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Runs `fut` for at most `dur`; None when the time ran out first.
///
/// The timer is polled once to arm it and again only once the deadline has passed: glommio-ng
/// 0.12's `Timer::poll` registers a new reactor timer on every poll and forgets the previous
/// one, so polling it on each wake-up of `fut` (as `futures_lite::future::or` does) left a stale
/// timer per wake-up alive until the deadline (the 10-minute idle timeout of every connection
/// read), and the reactor's timer processing grew with them (found with perf/flamegraph.sh:
/// `process_timers` from 9% to 22% of CPU over a minute of load).
pub async fn with_timeout<T>(dur: std::time::Duration, fut: impl Future<Output = T>) -> Option<T> {
    let deadline = std::time::Instant::now() + dur;
    let mut timer = std::pin::pin!(glommio::timer::sleep(dur));
    let mut fut = std::pin::pin!(fut);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        // The task's waker is the same on every poll (one glommio task), so the timer armed
        // on the first poll wakes this future whichever poll registered it.
        if !armed || std::time::Instant::now() >= deadline {
            armed = true;
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await
}

/// A lock granted strictly in the order `lock` was called (a ticket lock).
///
/// glommio's `Semaphore` wakes a waiter on release without reserving the unit for it, so a
/// task arriving meanwhile takes the unit first: two appends to one partition could swap
/// places, reordering a producer's pipelined batches (seen: a librdkafka producer's third
/// batch of a partition stored before its second). Tickets are taken when `lock` is first
/// polled, so the order is that of the calls. A waiter dropped before its turn gives its turn up.
#[derive(Default)]
pub struct FifoLock {
    next: Cell<u64>,
    serving: Cell<u64>,
    abandoned: RefCell<std::collections::BTreeSet<u64>>,
    turn: Notify,
}

/// Holds a `FifoLock` until dropped.
pub struct FifoGuard<'a>(&'a FifoLock);

impl FifoLock {
    pub async fn lock(&self) -> FifoGuard<'_> {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        let mut waiter = Ticket {
            lock: self,
            ticket,
            done: false,
        };
        loop {
            let turn = self.turn.wait();
            if self.serving.get() == ticket {
                waiter.done = true;
                return FifoGuard(self);
            }
            turn.await;
        }
    }

    /// Passes the turn to the next ticket still waiting.
    fn advance(&self) {
        let mut next = self.serving.get() + 1;
        let mut gone = self.abandoned.borrow_mut();
        while gone.remove(&next) {
            next += 1;
        }
        self.serving.set(next);
        drop(gone);
        self.turn.notify_all();
    }
}

impl Drop for FifoGuard<'_> {
    fn drop(&mut self) {
        self.0.advance();
    }
}

/// A ticket not yet served: dropping it (the waiting task went away) gives up its turn.
struct Ticket<'a> {
    lock: &'a FifoLock,
    ticket: u64,
    done: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.lock.serving.get() == self.ticket {
            self.lock.advance();
        } else {
            self.lock.abandoned.borrow_mut().insert(self.ticket);
        }
    }
}

/// Resolves when any of the futures does.
pub struct AnyOf<'a>(pub Vec<std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>>);

impl Future for AnyOf<'_> {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        for f in self.0.iter_mut() {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn fifo_lock_serves_in_call_order_even_when_a_newcomer_arrives_at_release() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let lock = std::rc::Rc::new(FifoLock::default());
                let order = std::rc::Rc::new(RefCell::new(Vec::new()));
                let first = lock.lock().await;
                let mut tasks = Vec::new();
                for i in 0..5 {
                    let (l, o) = (lock.clone(), order.clone());
                    tasks.push(glommio::spawn_local(async move {
                        let _g = l.lock().await;
                        o.borrow_mut().push(i);
                        glommio::yield_if_needed().await;
                    }));
                }
                // Let all five queue up, then release and immediately ask again: the newcomer
                // must not take the turn of the five that waited.
                glommio::timer::sleep(Duration::from_millis(5)).await;
                drop(first);
                let late = lock.lock().await;
                order.borrow_mut().push(99);
                drop(late);
                for t in tasks {
                    t.await;
                }
                assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4, 99]);
                // A waiter that goes away gives up its turn instead of blocking the rest.
                let held = lock.lock().await;
                let gone = glommio::spawn_local({
                    let l = lock.clone();
                    async move {
                        let _g = l.lock().await;
                    }
                })
                .detach();
                glommio::timer::sleep(Duration::from_millis(5)).await;
                gone.cancel();
                glommio::timer::sleep(Duration::from_millis(5)).await;
                drop(held);
                let again = with_timeout(Duration::from_secs(5), lock.lock()).await;
                assert!(again.is_some(), "an abandoned ticket blocked the lock");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn with_timeout_answers_first_of_the_future_and_the_deadline() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let t = Instant::now();
                let never = std::future::pending::<()>();
                assert_eq!(with_timeout(Duration::from_millis(50), never).await, None);
                assert!(t.elapsed() >= Duration::from_millis(50));
                // A future woken many times before it finishes: still its value, on time.
                let n = Notify::default();
                let waits = async {
                    for _ in 0..100 {
                        n.wait().await;
                    }
                    7
                };
                let wakes = async {
                    for _ in 0..100 {
                        glommio::timer::sleep(Duration::from_micros(100)).await;
                        n.notify_all();
                    }
                };
                let t = Instant::now();
                let (got, ()) =
                    futures_lite::future::zip(with_timeout(Duration::from_secs(10), waits), wakes)
                        .await;
                assert_eq!(got, Some(7));
                assert!(t.elapsed() < Duration::from_secs(5));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
