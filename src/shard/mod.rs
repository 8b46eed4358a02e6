//! Shards: one pinned glommio executor per core, and the mesh between them. Nothing more.
//!
//! A shard hosts services (the partition manager, the group and transaction coordinators, the
//! metadata controller) without knowing them, the way Seastar's `sharded<T>` does: start-up
//! builds one instance of each service per shard and registers it here; a service reaches its
//! instance on another shard with `invoke_on`, whose closure runs there and looks the local
//! instance up with `local::<T>()`.
//!
//! Invariants: a service's state is changed only on its own shard; what crosses shards is a
//! closure and its `Send` result, never a lock. Keep calls few per request: one per remote
//! shard, not per partition.

pub mod mesh;

use mesh::{Mesh, MeshError, Task, Value};
use std::any::{Any, TypeId};
use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

/// One executor of the broker and its end of the mesh.
pub struct Shard {
    /// This shard's index, 0..nr_shards.
    pub id: usize,
    /// Shards in this broker process.
    pub nr_shards: usize,
    mesh: OnceCell<Mesh>,
}

thread_local! {
    /// The services of the shard running on this thread, by type.
    static SERVICES: RefCell<HashMap<TypeId, Rc<dyn Any>>> = RefCell::new(HashMap::new());
}

/// Makes `service` this shard's instance of `T` (start-up wiring).
pub fn register<T: 'static>(service: Rc<T>) {
    SERVICES.with(|s| s.borrow_mut().insert(TypeId::of::<T>(), service));
}

/// This shard's instance of service `T`. A missing one is a wiring bug, hence the panic.
pub fn local<T: 'static>() -> Rc<T> {
    SERVICES.with(|s| {
        s.borrow()
            .get(&TypeId::of::<T>())
            .cloned()
            .and_then(|svc| svc.downcast::<T>().ok())
            .unwrap_or_else(|| panic!("service {} is not registered", std::any::type_name::<T>()))
    })
}

impl Shard {
    pub fn new(id: usize, nr_shards: usize) -> Rc<Shard> {
        Rc::new(Shard {
            id,
            nr_shards,
            mesh: OnceCell::new(),
        })
    }

    /// Connects this shard to the others; calls to other shards fail until this is done.
    pub fn set_mesh(&self, mesh: Mesh) {
        let _ = self.mesh.set(mesh);
    }

    /// Runs `f` on shard `to` and returns its result: directly when `to` is this shard, over
    /// the mesh otherwise. `f` is built here and run there, so what it captures must be `Send`;
    /// the future it returns runs on shard `to` and may use that shard's services.
    pub async fn invoke_on<T, F, Fut>(&self, to: usize, f: F) -> Result<T, MeshError>
    where
        T: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if to == self.id {
            return Ok(f().await);
        }
        let Some(mesh) = self.mesh.get() else {
            return Err(MeshError(format!("no mesh to reach shard {to}")));
        };
        let task: Task = Box::new(move || Box::pin(async move { Box::new(f().await) as Value }));
        let value = mesh.call(self.id, to, task).await?;
        // The reply is what this call's own closure returned on shard `to`: another type
        // would be a bug in the mesh.
        Ok(*value
            .downcast::<T>()
            .unwrap_or_else(|_| panic!("shard {to} answered a call with another type")))
    }
}
