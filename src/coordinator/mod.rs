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
