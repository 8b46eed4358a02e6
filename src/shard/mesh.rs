//! Cross-shard messages: requests and their results, never locks. A request to the local shard
//! is served directly; one to another shard goes over glommio's channel mesh with a
//! correlation id, and the reply comes back the same way.

use super::{Req, Resp, Shard};
use crate::util::Notify;
use glommio::channels::channel_mesh::{MeshBuilder, Senders};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Messages queued between two shards before a sender waits.
const MESH_CHANNEL_CAPACITY: usize = 1024;

pub enum Msg {
    Req { id: u64, from: usize, body: Req },
    Resp { id: u64, body: Resp },
}

struct Slot {
    value: RefCell<Option<Resp>>,
    ready: Notify,
}

pub struct Mesh {
    senders: Senders<Msg>,
    pending: RefCell<HashMap<u64, Rc<Slot>>>,
    next_id: Cell<u64>,
}

/// Removes a pending call whose caller stopped waiting (a finished long poll), so a late
/// reply is dropped instead of kept.
struct PendingGuard<'a> {
    mesh: &'a Mesh,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.mesh.pending.borrow_mut().remove(&self.id);
    }
}

impl Mesh {
    pub fn builder(nr_shards: usize) -> MeshBuilder<Msg, glommio::channels::channel_mesh::Full> {
        MeshBuilder::full(nr_shards, MESH_CHANNEL_CAPACITY)
    }

    /// Joins the mesh (a barrier: returns once every shard joined) and starts the receive loops.
    pub async fn join(
        builder: MeshBuilder<Msg, glommio::channels::channel_mesh::Full>,
        shard: &Rc<Shard>,
    ) -> anyhow::Result<Mesh> {
        let (senders, mut receivers) = builder
            .join()
            .await
            .map_err(|_| anyhow::anyhow!("joining the shard mesh failed"))?;
        for (_peer, rx) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    match msg {
                        Msg::Req { id, from, body } => {
                            let shard = shard.clone();
                            glommio::spawn_local(async move {
                                let body = shard.serve(body).await;
                                if let Some(mesh) = shard.mesh.get() {
                                    let _ =
                                        mesh.senders.send_to(from, Msg::Resp { id, body }).await;
                                }
                            })
                            .detach();
                        }
                        Msg::Resp { id, body } => {
                            if let Some(mesh) = shard.mesh.get() {
                                let slot = mesh.pending.borrow_mut().remove(&id);
                                if let Some(slot) = slot {
                                    *slot.value.borrow_mut() = Some(body);
                                    slot.ready.notify_all();
                                }
                            }
                        }
                    }
                }
            })
            .detach();
        }
        Ok(Mesh {
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        })
    }

    /// Sends `body` to shard `to` and waits for its reply.
    pub async fn call(&self, from: usize, to: usize, body: Req) -> Resp {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let slot = Rc::new(Slot {
            value: RefCell::new(None),
            ready: Notify::default(),
        });
        self.pending.borrow_mut().insert(id, slot.clone());
        let _guard = PendingGuard { mesh: self, id };
        let ready = slot.ready.wait();
        if self
            .senders
            .send_to(to, Msg::Req { id, from, body })
            .await
            .is_err()
        {
            return Resp::Failed(format!("shard {to} is not reachable"));
        }
        ready.await;
        let v = slot.value.borrow_mut().take();
        v.unwrap_or_else(|| Resp::Failed(format!("shard {to} sent no reply")))
    }
}
