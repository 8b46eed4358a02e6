//! The transaction coordinator driven by a manual clock: transaction timeouts are crossed by
//! moving the clock and calling `tick`, never by sleeping. Markers go to real partitions; a
//! partition placed on a shard this test broker cannot reach (no mesh) is a marker write that
//! fails, and moving it here is the repair.

use super::*;
use crate::coordinator::testkit::{run, Bench};

const TIMEOUT_MS: i32 = 10_000;
const FENCED: ErrorCode = ErrorCode::PRODUCER_FENCED;

/// InitProducerId as (error, producer id, epoch), -1s with an error.
async fn init(c: &Coordinator, timeout_ms: i32) -> (ErrorCode, i64, i16) {
    match c.init_producer_id("tx".into(), timeout_ms).await {
        Ok(p) => (ErrorCode::NONE, p.producer_id, p.epoch),
        Err(e) => (e, -1, -1),
    }
}

fn claim(pid: i64, epoch: i16) -> TxnClaim {
    TxnClaim {
        txn_id: "tx".into(),
        producer_id: pid,
        epoch,
        fenced: FENCED,
    }
}

async fn add(c: &Coordinator, pid: i64, epoch: i16, parts: &[i32]) -> ErrorCode {
    let partitions = parts.iter().map(|p| ("t".to_string(), *p)).collect();
    c.add_partitions(claim(pid, epoch), partitions).await
}

async fn end(c: &Coordinator, pid: i64, epoch: i16, commit: bool) -> ErrorCode {
    c.end_txn(claim(pid, epoch), commit).await
}

fn state(c: &Coordinator) -> TxnMeta {
    c.txns
        .borrow()
        .get("tx")
        .cloned()
        .expect("a known transactional id")
}

#[test]
fn init_add_commit_then_abort_write_markers_and_reload() {
    run(|| async {
        let b = Bench::new(1, &[("t", vec![0, 0])]).await;
        let c = b.broker.txns.clone();
        let (e, pid, epoch) = init(&c, TIMEOUT_MS).await;
        assert_eq!((e, epoch), (ErrorCode::NONE, 0));
        assert_eq!(state(&c).state, TxnState::Empty);
        assert_eq!(add(&c, pid, 0, &[0, 1]).await, ErrorCode::NONE);
        let m = state(&c);
        assert_eq!((m.state, m.partitions.len()), (TxnState::Ongoing, 2));
        assert_eq!(m.start_ms, b.clock.now_ms());
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::NONE);
        assert_eq!(state(&c).state, TxnState::CompleteCommit);
        assert!(state(&c).partitions.is_empty());
        // A retried EndTxn whose first try completed is answered the same.
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::NONE);
        assert_eq!(b.markers("t", 0).await, vec![(pid, true)]);
        assert_eq!(b.markers("t", 1).await, vec![(pid, true)]);
        assert_eq!(add(&c, pid, 0, &[1]).await, ErrorCode::NONE);
        assert_eq!(end(&c, pid, 0, false).await, ErrorCode::NONE);
        assert_eq!(state(&c).state, TxnState::CompleteAbort);
        assert_eq!(b.markers("t", 0).await, vec![(pid, true)]);
        assert_eq!(b.markers("t", 1).await, vec![(pid, true), (pid, false)]);
        // The state is what replaying `__transaction_state` gives.
        let reloaded = b.new_txns();
        assert!(reloaded.load(0).await.unwrap() >= 6);
        assert_eq!(state(&reloaded), state(&c));
    });
}

#[test]
fn a_transaction_past_its_timeout_is_aborted_by_tick_and_its_producer_fenced() {
    run(|| async {
        let b = Bench::new(1, &[("t", vec![0, 0])]).await;
        let c = b.broker.txns.clone();
        let (_, pid, _) = init(&c, TIMEOUT_MS).await;
        assert_eq!(add(&c, pid, 0, &[0]).await, ErrorCode::NONE);
        b.clock.advance(Duration::from_millis(TIMEOUT_MS as u64));
        c.tick().await;
        assert_eq!(
            state(&c).state,
            TxnState::Ongoing,
            "not past the timeout yet"
        );
        b.clock.advance(Duration::from_millis(1));
        c.tick().await;
        let m = state(&c);
        assert_eq!(
            (m.state, m.epoch, m.producer_id),
            (TxnState::CompleteAbort, 1, pid)
        );
        assert_eq!(b.markers("t", 0).await, vec![(pid, false)]);
        // The producer of the aborted transaction is fenced from now on.
        assert_eq!(end(&c, pid, 0, true).await, FENCED);
        assert_eq!(add(&c, pid, 0, &[1]).await, FENCED);
        // A restarted producer gets the next epoch.
        assert_eq!(init(&c, TIMEOUT_MS).await, (ErrorCode::NONE, pid, 2));
        assert_eq!(add(&c, pid, 2, &[1]).await, ErrorCode::NONE);
        assert_eq!(end(&c, pid, 2, true).await, ErrorCode::NONE);
    });
}

#[test]
fn a_second_init_producer_id_aborts_the_open_transaction_and_fences_the_first() {
    run(|| async {
        let b = Bench::new(1, &[("t", vec![0, 0])]).await;
        let c = b.broker.txns.clone();
        let (_, pid, _) = init(&c, TIMEOUT_MS).await;
        assert_eq!(add(&c, pid, 0, &[0]).await, ErrorCode::NONE);
        // The abort of what the first left open takes epoch 1, the new producer epoch 2.
        assert_eq!(init(&c, TIMEOUT_MS).await, (ErrorCode::NONE, pid, 2));
        assert_eq!(b.markers("t", 0).await, vec![(pid, false)]);
        assert_eq!(state(&c).state, TxnState::Empty);
        assert_eq!(add(&c, pid, 0, &[1]).await, FENCED);
        assert_eq!(end(&c, pid, 0, true).await, FENCED);
        assert_eq!(add(&c, pid, 2, &[1]).await, ErrorCode::NONE);
        assert_eq!(end(&c, pid, 2, true).await, ErrorCode::NONE);
        assert_eq!(b.markers("t", 1).await, vec![(pid, true)]);
        // Without an open transaction a new producer just takes the next epoch.
        assert_eq!(init(&c, TIMEOUT_MS).await, (ErrorCode::NONE, pid, 3));
    });
}

/// A transaction over t-0 (here) and t-1 (on shard 1, out of reach) whose EndTxn(commit)
/// made its decision durable but could not write every marker.
async fn interrupted_commit(b: &Bench, c: &Coordinator) -> i64 {
    let (_, pid, _) = init(c, TIMEOUT_MS).await;
    assert_eq!(add(c, pid, 0, &[0, 1]).await, ErrorCode::NONE);
    // The decision is durable, so the commit is answered as done: the markers will follow.
    assert_eq!(end(c, pid, 0, true).await, ErrorCode::NONE);
    assert_eq!(state(c).state, TxnState::PrepareCommit);
    assert_eq!(b.markers("t", 0).await, vec![(pid, true)]);
    // Until it completes, the transaction takes no other turn.
    assert_eq!(
        add(c, pid, 0, &[0]).await,
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    assert_eq!(
        end(c, pid, 0, false).await,
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    assert_eq!(
        init(c, TIMEOUT_MS).await.0,
        ErrorCode::CONCURRENT_TRANSACTIONS
    );
    c.tick().await;
    assert_eq!(
        state(c).state,
        TxnState::PrepareCommit,
        "t-1 is still out of reach"
    );
    // Even past its timeout a decided transaction is not aborted.
    b.clock
        .advance(Duration::from_millis(TIMEOUT_MS as u64 + 1));
    c.tick().await;
    assert_eq!(state(c).state, TxnState::PrepareCommit);
    assert_eq!(state(c).epoch, 0);
    pid
}

#[test]
fn an_interrupted_commit_is_finished_by_tick() {
    run(|| async {
        let b = Bench::new(2, &[("t", vec![0, 1])]).await;
        let c = b.broker.txns.clone();
        let pid = interrupted_commit(&b, &c).await;
        b.move_here("t", 1).await;
        c.tick().await;
        let m = state(&c);
        assert_eq!((m.state, m.epoch), (TxnState::CompleteCommit, 0));
        assert_eq!(b.markers("t", 1).await, vec![(pid, true)]);
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::NONE);
    });
}

#[test]
fn an_interrupted_commit_is_finished_by_the_retried_end_txn() {
    run(|| async {
        let b = Bench::new(2, &[("t", vec![0, 1])]).await;
        let c = b.broker.txns.clone();
        let pid = interrupted_commit(&b, &c).await;
        b.move_here("t", 1).await;
        // The other decision is still refused; the same one completes.
        assert_eq!(
            end(&c, pid, 0, false).await,
            ErrorCode::CONCURRENT_TRANSACTIONS
        );
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::NONE);
        assert_eq!(state(&c).state, TxnState::CompleteCommit);
        assert_eq!(b.markers("t", 1).await, vec![(pid, true)]);
        assert_eq!(add(&c, pid, 0, &[1]).await, ErrorCode::NONE);
    });
}

#[test]
fn requests_out_of_turn_get_invalid_txn_state_and_the_like() {
    run(|| async {
        let b = Bench::new(1, &[("t", vec![0, 0])]).await;
        let c = b.broker.txns.clone();
        assert_eq!(
            end(&c, 1, 0, true).await,
            ErrorCode::INVALID_PRODUCER_ID_MAPPING
        );
        let max = b.config().transaction_max_timeout_ms as i32;
        assert_eq!(
            init(&c, max + 1).await.0,
            ErrorCode::INVALID_TRANSACTION_TIMEOUT
        );
        assert_eq!(init(&c, 0).await.0, ErrorCode::INVALID_TRANSACTION_TIMEOUT);
        let (_, pid, _) = init(&c, TIMEOUT_MS).await;
        // EndTxn with nothing open.
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::INVALID_TXN_STATE);
        assert_eq!(end(&c, pid, 0, false).await, ErrorCode::INVALID_TXN_STATE);
        assert_eq!(
            end(&c, pid + 1, 0, true).await,
            ErrorCode::INVALID_PRODUCER_ID_MAPPING
        );
        assert_eq!(add(&c, pid, 0, &[0]).await, ErrorCode::NONE);
        assert_eq!(end(&c, pid, 0, true).await, ErrorCode::NONE);
        // The other outcome of a completed transaction is not a retry.
        assert_eq!(end(&c, pid, 0, false).await, ErrorCode::INVALID_TXN_STATE);
        assert_eq!(end(&c, pid, 1, true).await, FENCED);
    });
}

#[test]
fn state_record_round_trip() {
    let m = TxnMeta {
        producer_id: 9,
        epoch: 4,
        timeout_ms: 60000,
        state: TxnState::Ongoing,
        partitions: [
            ("a".to_string(), 1),
            ("a".to_string(), 0),
            ("b".to_string(), 3),
        ]
        .into_iter()
        .collect(),
        start_ms: 5,
        update_ms: 6,
    };
    assert_eq!(decode_value(encode_value(&m)), Some(m));
    assert_eq!(decode_key(encode_key("tx-1")).as_deref(), Some("tx-1"));
    assert_eq!(decode_value(Bytes::from_static(&[0, 0, 1])), None);
}

#[test]
fn an_idle_transactional_id_expires_and_starts_afresh() {
    run(|| async {
        let b = Bench::new(1, &[("t", vec![0, 0])]).await;
        let c = b.broker.txns.clone();
        let (e, pid, _) = init(&c, TIMEOUT_MS).await;
        assert_eq!(e, ErrorCode::NONE);
        assert_eq!(add(&c, pid, 0, &[0]).await, ErrorCode::NONE);
        let expiry = b.config().transactional_id_expiration_ms as u64;
        // An open transaction never expires (the timeout aborts it first, then it idles).
        b.clock
            .advance(std::time::Duration::from_millis(expiry + 1));
        c.tick().await;
        assert_eq!(state(&c).state, TxnState::CompleteAbort);
        b.clock.advance(std::time::Duration::from_millis(expiry));
        c.tick().await;
        assert!(
            c.txns.borrow().contains_key("tx"),
            "not idle past the expiry yet"
        );
        b.clock.advance(std::time::Duration::from_millis(1));
        c.tick().await;
        assert!(!c.txns.borrow().contains_key("tx"), "expired");
        assert!(!c.locks.borrow().contains_key("tx"));
        // The tombstone is in the log: a coordinator reloading it does not know the id either.
        let reloaded = b.new_txns();
        reloaded.load_owned().await.unwrap();
        assert!(!reloaded.txns.borrow().contains_key("tx"));
        // The id starts afresh: a new producer id at epoch 0.
        let (e, pid2, epoch) = init(&c, TIMEOUT_MS).await;
        assert_eq!((e, epoch), (ErrorCode::NONE, 0));
        assert_ne!(pid2, pid);
    });
}
