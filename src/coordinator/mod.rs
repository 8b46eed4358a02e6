//! The coordinators, side by side: consumer groups (`group`) and transactions (`txn`). Each is
//! a per-shard service for the keys whose internal partition (`__consumer_offsets`,
//! `__transaction_state`) that shard owns; requests for a key reach its coordinator with the
//! service's own `call`, which crosses the mesh when needed. Their state is records in those
//! partitions, written through the partition manager and replayed from it at start-up.
//!
//! Below them: the controller (producer ids), the partition manager and the metadata image,
//! each reached through the few methods the coordinators need, never the shard's insides.

pub mod group;
pub mod txn;

#[cfg(test)]
mod testkit;

pub use group::Coordinator as GroupCoordinator;
pub use txn::Coordinator as TxnCoordinator;

use crate::protocol::errors::ErrorCode;
use crate::shard::{local, Shard};
use std::future::Future;
use std::rc::Rc;

/// Runs `f` with the coordinator service `C` of shard `owner` (the shard owning the key's
/// internal partition, or why there is none): there directly when it is this
/// shard, over the mesh otherwise. A failed crossing is COORDINATOR_NOT_AVAILABLE.
async fn on_owner<C, T, F, Fut>(
    shard: &Shard,
    owner: Result<usize, ErrorCode>,
    f: F,
) -> Result<T, ErrorCode>
where
    C: 'static,
    T: Send + 'static,
    F: FnOnce(Rc<C>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let owner = owner?;
    shard
        .invoke_on(owner, move || f(local::<C>()))
        .await
        .map_err(|_| ErrorCode::COORDINATOR_NOT_AVAILABLE)
}
