"""Transaction state on disk: the aborted-transaction index (`.txnindex` per sealed segment
plus the replay of the active one), open transactions (the last stable offset) and the
coordinator's state survive a clean restart and a kill -9 of the broker."""
from confluent_kafka import Producer

from util import create_topic, read_isolated, topic_name, wait_until, watermarks_at


def lso_and_hw(bootstrap, topic):
    return (watermarks_at(bootstrap, topic, 0, "read_committed")[1],
            watermarks_at(bootstrap, topic, 0, "read_uncommitted")[1])


def test_aborted_index_and_open_transaction_survive_restart_and_kill9(broker_factory):
    b = broker_factory(config={"segment_bytes": 65536, "flush_interval_ms": 0,
                               "transaction_abort_check_interval_ms": 200})
    topic = create_topic(b.bootstrap, topic_name("txr"), 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "txr-" + topic,
                  "linger.ms": 5})
    p.init_transactions(30)
    pad = b"x" * 1000
    expected = []
    for t in range(8):
        p.begin_transaction()
        vals = [b"%d-%d|" % (t, i) + pad for i in range(30)]
        for v in vals:
            p.produce(topic, value=v, partition=0)
        assert p.flush(30) == 0
        if t % 2:
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            expected += vals
    # ~250 KB in 64 KiB segments: aborted transactions are indexed in sealed segments too.
    assert len(list(b.data_dir.glob(f"{topic}-0/*.txnindex"))) >= 2
    # A second producer leaves a transaction open across the restarts.
    p2 = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": "txr2-" + topic,
                   "transaction.timeout.ms": 20000, "linger.ms": 5})
    p2.init_transactions(30)
    p2.begin_transaction()
    p2.produce(topic, value=b"never committed", partition=0)
    assert p2.flush(30) == 0
    lso, hw = lso_and_hw(b.bootstrap, topic)
    assert lso == hw - 1, "the open transaction's record holds the last stable offset"

    records = 8 * 30 + 1
    for how in ("restart", "kill9"):
        if how == "restart":
            b.restart()
        else:
            # One more aborted transaction after the shutdown snapshot: after the kill it is
            # found again by replaying the log, not from an index.
            p.begin_transaction()
            for i in range(5):
                p.produce(topic, value=b"late-abort-%d" % i, partition=0)
            assert p.flush(30) == 0
            p.abort_transaction(30)
            records += 5
            hw += 6
            b.kill9()
            b.start()
        assert lso_and_hw(b.bootstrap, topic) == (lso, hw), how
        got = read_isolated(b.bootstrap, topic, 1, "read_committed")[0]
        assert [m.value() for m in got] == expected, f"read_committed after {how}"
        everything = read_isolated(b.bootstrap, topic, 1, "read_uncommitted")[0]
        assert len(everything) == records, how

    # The coordinator kept the open transaction's start: it is aborted on its timeout and
    # read_committed moves past it.
    wait_until(lambda: lso_and_hw(b.bootstrap, topic)[0] == lso_and_hw(b.bootstrap, topic)[1],
               60, "the open transaction to time out")
    got = read_isolated(b.bootstrap, topic, 1, "read_committed")[0]
    assert [m.value() for m in got] == expected
    assert lso_and_hw(b.bootstrap, topic)[1] == hw + 1, "one abort marker was written"
