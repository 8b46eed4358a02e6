//! Small single-threaded async helpers shared by the shard's modules.

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
