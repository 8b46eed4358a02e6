//! Cross-shard messages: a task to run on another shard and its result, never a lock. Each
//! message carries a boxed closure that the receiving shard runs on its own executor (Seastar's
//! `invoke_on`); the result goes back type-erased and the caller's `Shard::invoke_on` gives it
//! its type again, so no service needs a request enum here.

use crate::util::Notify;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

/// Messages queued between two shards before a sender waits.
const MESH_CHANNEL_CAPACITY: usize = 1024;

/// A result crossing shards.
pub type Value = Box<dyn Any + Send>;
/// Work for another shard: built there (so it may hold `Rc`s of that shard), run there.
pub type Task = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Value>>> + Send>;

pub enum Msg {
    Req {
        id: u64,
        from: usize,
        task: Exclusive<Task>,
    },
    Resp {
        id: u64,
        value: Exclusive<Value>,
    },
}

/// A `Send` value made `Sync` by allowing no access through a shared reference at all: the
/// only way in is `into_inner` by value (what `std::sync::Exclusive` does, unstable still).
/// glommio's mesh wants `Sync` messages; a task or result is only ever moved, never shared.
pub struct Exclusive<T>(T);

// SAFETY: no method gives `&T` from `&Exclusive<T>`, so sharing `&Exclusive<T>` between threads
// shares nothing; moving it needs only `T: Send`.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    pub fn new(v: T) -> Exclusive<T> {
        Exclusive(v)
    }
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// Why a call to another shard brought no result.
#[derive(Debug, Clone)]
pub struct MeshError(pub String);

impl std::fmt::Display for MeshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Slot {
    value: RefCell<Option<Value>>,
    ready: Notify,
}

struct Inner {
    senders: Senders<Msg>,
    pending: RefCell<HashMap<u64, Rc<Slot>>>,
    next_id: Cell<u64>,
}

/// This shard's end of the full mesh between shards.
pub struct Mesh(Rc<Inner>);

/// Removes a pending call whose caller stopped waiting (a finished long poll), so a late
/// reply is dropped instead of kept.
struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.borrow_mut().remove(&self.id);
    }
}

impl Mesh {
    pub fn builder(nr_shards: usize) -> MeshBuilder<Msg, glommio::channels::channel_mesh::Full> {
        MeshBuilder::full(nr_shards, MESH_CHANNEL_CAPACITY)
    }

    /// Joins the mesh (a barrier: returns once every shard joined) and starts the receive
    /// loops. Every task that arrives runs as its own local task.
    pub async fn join(
        builder: MeshBuilder<Msg, glommio::channels::channel_mesh::Full>,
    ) -> anyhow::Result<Mesh> {
        let (senders, mut receivers) = builder
            .join()
            .await
            .map_err(|_| anyhow::anyhow!("joining the shard mesh failed"))?;
        let inner = Rc::new(Inner {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        });
        for (_peer, rx) in receivers.streams() {
            let inner = Rc::downgrade(&inner);
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    let Some(me) = inner.upgrade() else { break };
                    match msg {
                        Msg::Req { id, from, task } => {
                            glommio::spawn_local(async move {
                                let value = Exclusive::new(task.into_inner()().await);
                                let _ = me.senders.send_to(from, Msg::Resp { id, value }).await;
                            })
                            .detach();
                        }
                        Msg::Resp { id, value } => {
                            let slot = me.pending.borrow_mut().remove(&id);
                            if let Some(slot) = slot {
                                *slot.value.borrow_mut() = Some(value.into_inner());
                                slot.ready.notify_all();
                            }
                        }
                    }
                }
            })
            .detach();
        }
        Ok(Mesh(inner))
    }

    /// Runs `task` on shard `to` and waits for its result.
    pub async fn call(&self, from: usize, to: usize, task: Task) -> Result<Value, MeshError> {
        let inner = &*self.0;
        let id = inner.next_id.get();
        inner.next_id.set(id + 1);
        let slot = Rc::new(Slot {
            value: RefCell::new(None),
            ready: Notify::default(),
        });
        inner.pending.borrow_mut().insert(id, slot.clone());
        let _guard = PendingGuard { inner, id };
        let ready = slot.ready.wait();
        if inner
            .senders
            .send_to(
                to,
                Msg::Req {
                    id,
                    from,
                    task: Exclusive::new(task),
                },
            )
            .await
            .is_err()
        {
            return Err(MeshError(format!("shard {to} is not reachable")));
        }
        ready.await;
        let v = slot.value.borrow_mut().take();
        v.ok_or_else(|| MeshError(format!("shard {to} sent no reply")))
    }
}
