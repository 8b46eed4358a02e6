//! The transaction admin APIs: ListTransactions and DescribeTransactions (from the
//! transaction coordinators), DescribeProducers (from the partitions' leaders). What
//! `kafka-transactions.sh` and admin clients use to find and inspect hanging transactions.

use super::{decode, Ctx};
use crate::broker::Broker;
use crate::coordinator::txn::TxnState;
use crate::protocol::errors::ErrorCode;
use crate::protocol::Response;
use crate::security::acl::{Operation, ResourceType};
use bytes::Bytes;
use kafka_protocol::messages::describe_producers_request::DescribeProducersRequest;
use kafka_protocol::messages::describe_producers_response::{
    DescribeProducersResponse, PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_request::DescribeTransactionsRequest;
use kafka_protocol::messages::describe_transactions_response::{
    DescribeTransactionsResponse, TopicData, TransactionState as DescribedTxn,
};
use kafka_protocol::messages::list_transactions_request::ListTransactionsRequest;
use kafka_protocol::messages::list_transactions_response::{
    ListTransactionsResponse, TransactionState as ListedTxn,
};
use kafka_protocol::messages::{ProducerId, TopicName, TransactionalId};
use kafka_protocol::protocol::StrBytes;
use std::collections::BTreeMap;
use std::rc::Rc;

fn s(v: impl Into<String>) -> StrBytes {
    StrBytes::from_string(v.into())
}

/// ListTransactions v0-1: state names this broker does not know come back in
/// `unknown_state_filters` (and match nothing), as Kafka does.
pub async fn list(broker: &Rc<Broker>, ctx: &Ctx, body: &mut Bytes) -> Result<Response, Response> {
    let req: ListTransactionsRequest = decode(ctx, body)?;
    let (known, unknown): (Vec<String>, Vec<String>) = req
        .state_filters
        .iter()
        .map(|f| f.to_string())
        .partition(|f| TxnState::NAMES.contains(&f.as_str()));
    let mut resp = ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown.iter().map(|u| s(u.clone())).collect());
    if known.is_empty() && !unknown.is_empty() {
        return Ok(ctx.respond(&resp));
    }
    let pids = req.producer_id_filters.iter().map(|p| p.0).collect();
    let mut listed = broker.txns.list(known, pids, req.duration_filter).await;
    // The transactions the requester may describe.
    listed.retain(|(id, _, _)| {
        ctx.allowed(
            broker,
            Operation::Describe,
            ResourceType::TransactionalId,
            id,
        )
    });
    resp = resp.with_transaction_states(
        listed
            .into_iter()
            .map(|(id, pid, state)| {
                ListedTxn::default()
                    .with_transactional_id(TransactionalId(s(id)))
                    .with_producer_id(ProducerId(pid))
                    .with_transaction_state(s(state))
            })
            .collect(),
    );
    Ok(ctx.respond(&resp))
}

/// DescribeTransactions v0: each id's state from its coordinator.
pub async fn describe(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeTransactionsRequest = decode(ctx, body)?;
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in &req.transactional_ids {
        let base = DescribedTxn::default().with_transactional_id(id.clone());
        let found = match ctx.check_txn(broker, Operation::Describe, id) {
            Ok(()) => broker.txns.describe(id.to_string()).await,
            Err(e) => Err(e),
        };
        states.push(match found {
            Err(code) => base.with_error_code(code.0),
            Ok(m) => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                // Only the topics the requester may describe are named (Kafka's rule).
                for (t, p) in m.partitions.iter().filter(|(t, _)| {
                    ctx.allowed(broker, Operation::Describe, ResourceType::Topic, t)
                }) {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
                base.with_transaction_state(s(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.epoch)
                    .with_topics(
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicData::default()
                                    .with_topic(TopicName(s(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
            }
        });
    }
    Ok(ctx.respond(&DescribeTransactionsResponse::default().with_transaction_states(states)))
}

/// DescribeProducers v0: the producers each partition's log remembers, on its leader.
pub async fn describe_producers(
    broker: &Rc<Broker>,
    ctx: &Ctx,
    body: &mut Bytes,
) -> Result<Response, Response> {
    let req: DescribeProducersRequest = decode(ctx, body)?;
    let meta = broker.meta();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut parts = Vec::with_capacity(t.partition_indexes.len());
        for &p in &t.partition_indexes {
            let base = PartitionResponse::default().with_partition_index(p);
            let routed = ctx
                .check_topic(broker, Operation::Read, t.name.as_str())
                .and_then(|()| meta.route(t.name.as_str(), p));
            let found = match routed {
                Err(code) => Err(code),
                Ok(owner) => broker
                    .partitions
                    .producers_on(owner, vec![(t.name.to_string(), p)])
                    .await
                    .pop()
                    .unwrap_or(Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)),
            };
            parts.push(match found {
                Err(code) => base.with_error_code(code.0),
                Ok(list) => base.with_active_producers(
                    list.into_iter()
                        .map(|(pid, epoch, last_seq, last_ms, txn_start)| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(pid))
                                .with_producer_epoch(epoch as i32)
                                .with_last_sequence(last_seq)
                                .with_last_timestamp(last_ms)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(txn_start)
                        })
                        .collect(),
                ),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts),
        );
    }
    Ok(ctx.respond(&DescribeProducersResponse::default().with_topics(topics)))
}
