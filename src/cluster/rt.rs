//! `GlommioRuntime`: openraft's `AsyncRuntime` on glommio.
//!
//! Tasks, timers and the executor are glommio's, so openraft runs on the shard's own thread
//! like everything else. Channels and the async mutex are tokio's `sync` primitives: they only
//! use wakers (no tokio runtime needed), and they have what openraft asks for that glommio's
//! channels lack (bounded mpsc with weak senders, watch, oneshot).
//!
//! With openraft's `single-threaded` feature nothing here has to be `Send`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use glommio::timer::Timer;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use openraft::async_runtime as art;
use openraft::{OptionalSend, OptionalSync};
use pin_project_lite::pin_project;
use tokio::sync::{mpsc, oneshot, watch};

/// The longest a glommio timer is armed for at once. A longer sleep re-arms when it fires, so
/// a far deadline (`Duration::MAX` included) never depends on how far ahead the timer wheel
/// reaches; an hour makes the extra wake-ups free.
const MAX_TIMER_ARM: Duration = Duration::from_secs(3600);

/// Where a sleep whose deadline does not fit in an `Instant` ends: 30 years (never, in practice).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// openraft's async runtime on a glommio `LocalExecutor`.
///
/// In the broker openraft runs on an executor the server already started; `new`/`block_on`
/// (a fresh unpinned executor on the calling thread) are for tests and tools. `block_on` must
/// not be called from inside a running glommio executor (glommio asserts one per thread).
pub struct GlommioRuntime {
    executor: LocalExecutor,
}

impl fmt::Debug for GlommioRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlommioRuntime")
            .field("executor_id", &self.executor.id())
            .finish()
    }
}

impl art::AsyncRuntime for GlommioRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;

    fn spawn<T>(future: T) -> JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // Detached: openraft drops handles of tasks it means to keep running, and glommio
        // cancels a task whose `Task` is dropped.
        JoinHandle(glommio::spawn_local(future).detach())
    }

    fn sleep(duration: Duration) -> Sleep {
        Sleep::until(deadline_after(duration))
    }

    fn sleep_until(deadline: Instant) -> Sleep {
        Sleep::until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Timeout<F> {
        Timeout::new(deadline_after(duration), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Instant,
        future: F,
    ) -> Timeout<F> {
        Timeout::new(deadline, future)
    }

    /// Always false: glommio does not catch a task's panic, it unwinds through the executor
    /// (and the broker stops, as for any bug). A `JoinError` only ever means cancelled.
    fn is_panic(_join_error: &JoinError) -> bool {
        false
    }

    fn thread_rng() -> rand::rngs::ThreadRng {
        rand::rng()
    }

    type Mpsc = TokioMpsc;
    type Watch = TokioWatch;
    type Oneshot = TokioOneshot;
    type Mutex<T: OptionalSend + 'static> = TokioMutex<T>;

    /// `threads` is ignored: a glommio executor is one thread.
    fn new(_threads: usize) -> Self {
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("raft")
            .make()
            .expect("creating a glommio executor for openraft");
        Self { executor }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.executor.run(future)
    }
}

fn deadline_after(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .unwrap_or_else(|| now + FAR_FUTURE)
}

/// Why a spawned task gave no output: it was cancelled (its executor went away first).
#[derive(Debug)]
pub struct JoinError;

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task was cancelled before it finished")
    }
}

impl std::error::Error for JoinError {}

/// Awaits a spawned task. Dropping it leaves the task running.
pub struct JoinHandle<T>(glommio::task::JoinHandle<T>);

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|out| out.ok_or(JoinError))
    }
}

/// Completes at `deadline`.
///
/// The glommio `Timer` is made on the first poll (so a `Sleep` can be built off the executor)
/// and re-armed on every poll: glommio's `Timer::poll` adds a wheel entry each time it is polled
/// pending and never removes the previous one, so a timeout around a busy future would pile up
/// entries (and spurious wake-ups). `reset` removes the armed entry first: at most one per sleep.
pub struct Sleep {
    deadline: Instant,
    timer: Option<Timer>,
}

impl Sleep {
    fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = Instant::now();
            if now >= this.deadline {
                this.timer = None;
                return Poll::Ready(());
            }
            let arm = (this.deadline - now).min(MAX_TIMER_ARM);
            let timer = match &mut this.timer {
                Some(timer) => {
                    timer.reset(arm);
                    timer
                }
                None => this.timer.insert(Timer::new(arm)),
            };
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: the deadline has passed unless the arm was capped; look again.
        }
    }
}

/// A `timeout` that ran out.
#[derive(Debug)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

pin_project! {
    /// `future`'s output, or `Elapsed` if the deadline comes first. The future is polled first,
    /// so one that is ready at the deadline still wins.
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

impl<F> Timeout<F> {
    fn new(deadline: Instant, future: F) -> Self {
        Self {
            future,
            sleep: Sleep::until(deadline),
        }
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        Pin::new(this.sleep).poll(cx).map(|()| Err(Elapsed))
    }
}

/// Bounded mpsc channels: tokio's.
#[derive(Debug)]
pub struct TokioMpsc;

pub struct MpscTx<T>(mpsc::Sender<T>);
pub struct MpscRx<T>(mpsc::Receiver<T>);
pub struct MpscWeakTx<T>(mpsc::WeakSender<T>);

impl<T> Clone for MpscTx<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for MpscWeakTx<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl art::Mpsc for TokioMpsc {
    type Sender<T: OptionalSend> = MpscTx<T>;
    type Receiver<T: OptionalSend> = MpscRx<T>;
    type WeakSender<T: OptionalSend> = MpscWeakTx<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (MpscTx<T>, MpscRx<T>) {
        let (tx, rx) = mpsc::channel(buffer);
        (MpscTx(tx), MpscRx(rx))
    }
}

impl<T: OptionalSend> art::MpscSender<TokioMpsc, T> for MpscTx<T> {
    fn send(&self, msg: T) -> impl Future<Output = Result<(), art::SendError<T>>> + OptionalSend {
        let tx = &self.0;
        async move { tx.send(msg).await.map_err(|e| art::SendError(e.0)) }
    }

    fn downgrade(&self) -> MpscWeakTx<T> {
        MpscWeakTx(self.0.downgrade())
    }
}

impl<T: OptionalSend> art::MpscReceiver<T> for MpscRx<T> {
    fn recv(&mut self) -> impl Future<Output = Option<T>> + OptionalSend {
        self.0.recv()
    }

    fn try_recv(&mut self) -> Result<T, art::TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => art::TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => art::TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> art::MpscWeakSender<TokioMpsc, T> for MpscWeakTx<T> {
    fn upgrade(&self) -> Option<MpscTx<T>> {
        self.0.upgrade().map(MpscTx)
    }
}

/// Watch channels: tokio's.
#[derive(Debug)]
pub struct TokioWatch;

pub struct WatchTx<T>(watch::Sender<T>);
pub struct WatchRx<T>(watch::Receiver<T>);

impl<T> Clone for WatchTx<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Clone for WatchRx<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl art::Watch for TokioWatch {
    type Sender<T: OptionalSend + OptionalSync> = WatchTx<T>;
    type Receiver<T: OptionalSend + OptionalSync> = WatchRx<T>;
    type Ref<'a, T: OptionalSend + 'a> = watch::Ref<'a, T>;

    fn channel<T: OptionalSend + OptionalSync>(init: T) -> (WatchTx<T>, WatchRx<T>) {
        let (tx, rx) = watch::channel(init);
        (WatchTx(tx), WatchRx(rx))
    }
}

impl<T: OptionalSend + OptionalSync> art::WatchSender<TokioWatch, T> for WatchTx<T> {
    fn send(&self, value: T) -> Result<(), art::watch::SendError<T>> {
        self.0.send(value).map_err(|e| art::watch::SendError(e.0))
    }

    fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        self.0.send_if_modified(modify)
    }

    fn borrow_watched(&self) -> watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn subscribe(&self) -> WatchRx<T> {
        WatchRx(self.0.subscribe())
    }
}

impl<T: OptionalSend + OptionalSync> art::WatchReceiver<TokioWatch, T> for WatchRx<T> {
    async fn changed(&mut self) -> Result<(), art::RecvError> {
        self.0.changed().await.map_err(|_| art::RecvError(()))
    }

    fn borrow_watched(&self) -> watch::Ref<'_, T> {
        self.0.borrow()
    }

    fn borrow_and_update(&mut self) -> watch::Ref<'_, T> {
        self.0.borrow_and_update()
    }
}

/// Oneshot channels: tokio's (its receiver is used as is).
#[derive(Debug)]
pub struct TokioOneshot;

pub struct OneshotTx<T>(oneshot::Sender<T>);

impl art::Oneshot for TokioOneshot {
    type Sender<T: OptionalSend> = OneshotTx<T>;
    type Receiver<T: OptionalSend> = oneshot::Receiver<T>;
    type ReceiverError = oneshot::error::RecvError;

    fn channel<T: OptionalSend>() -> (OneshotTx<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (OneshotTx(tx), rx)
    }
}

impl<T: OptionalSend> art::OneshotSender<T> for OneshotTx<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

/// The async mutex: tokio's (fair, FIFO).
pub struct TokioMutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> art::Mutex<T> for TokioMutex<T> {
    type Guard<'a>
        = tokio::sync::MutexGuard<'a, T>
    where
        Self: 'a;

    fn new(value: T) -> Self {
        Self(tokio::sync::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = tokio::sync::MutexGuard<'_, T>> + OptionalSend {
        self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::async_runtime::AsyncRuntime;

    #[test]
    fn openraft_runtime_suite() {
        openraft::testing::runtime::Suite::<GlommioRuntime>::test_all();
    }

    #[test]
    fn a_dropped_join_handle_does_not_cancel_the_task() {
        GlommioRuntime::run(async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            drop(GlommioRuntime::spawn(async move {
                GlommioRuntime::sleep(Duration::from_millis(5)).await;
                tx.send(7).ok();
            }));
            assert_eq!(rx.await.ok(), Some(7));
        });
    }

    #[test]
    fn a_timeout_around_a_busy_future_fires_on_time() {
        // A future woken many times inside a long timeout: each poll re-arms the same timer,
        // and the timeout still fires on time.
        GlommioRuntime::run(async {
            let start = Instant::now();
            let busy = async {
                loop {
                    futures_lite::future::yield_now().await;
                }
            };
            let out = GlommioRuntime::timeout(Duration::from_millis(30), busy).await;
            assert!(out.is_err());
            assert!(start.elapsed() >= Duration::from_millis(30));
        });
    }

    #[test]
    fn a_sleep_past_the_end_of_time_does_not_overflow() {
        GlommioRuntime::run(async {
            let out = GlommioRuntime::timeout(
                Duration::from_millis(5),
                GlommioRuntime::sleep(Duration::MAX),
            )
            .await;
            assert!(out.is_err());
        });
    }
}
