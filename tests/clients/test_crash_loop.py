"""kill -9 at a random moment of a produce stream, again and again, on the same data dir.

With `flush_interval_ms = 0` (fsync before every acknowledgement) every acknowledged record
must be there after the restart, in a log whose offsets are contiguous and whose batches pass
the client's CRC check. With the interval policy a kill -9 (not an OS crash) loses nothing
acknowledged either, and what survives of each run is a prefix of what was sent, in order,
per partition (idempotent producer: no duplicates, no reordering)."""
import random
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from util import create_topic, topic_name

PARTITIONS = 2


def stream_until_killed(b, topic, run, kill_after_s):
    """Produces run-tagged sequence numbers until the broker is killed; answers the acked
    sequence numbers per partition."""
    acked = {q: [] for q in range(PARTITIONS)}
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "linger.ms": 1,
                  "message.timeout.ms": 5000, "reconnect.backoff.max.ms": 200})

    def cb(err, msg):
        if err is None:
            acked[msg.partition()].append(int(msg.value().split(b"-")[1]))

    deadline = time.time() + kill_after_s
    seq = 0
    while time.time() < deadline:
        try:
            p.produce(topic, value=b"%d-%d" % (run, seq), partition=seq % PARTITIONS,
                      on_delivery=cb)
            seq += 1
        except BufferError:
            pass
        p.poll(0)
    b.kill9()
    p.purge()  # what is still queued or in flight was never acknowledged
    p.flush(10)
    return acked, seq


def read_log(bootstrap, topic):
    """Every record by partition with its offset; fails on a gap in the offsets."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "crash-reader",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "check.crcs": True})
    out = {}
    try:
        for q in range(PARTITIONS):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)
            assert lo == 0
            c.assign([TopicPartition(topic, q, 0)])
            got = []
            deadline = time.time() + 30
            while len(got) < hi:
                assert time.time() < deadline, f"reading {topic}/{q}: {len(got)} of {hi}"
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    assert m.error().code() == -191, m.error()  # only _PARTITION_EOF
                    continue
                assert m.offset() == len(got), f"offset gap at {len(got)} in partition {q}"
                got.append(m.value())
            out[q] = got
    finally:
        c.close()
    return out


@pytest.mark.parametrize("flush_interval_ms,runs", [(0, 50), (1000, 20)])
def test_kill9_at_random_moments(broker_factory, flush_interval_ms, runs):
    b = broker_factory(config={"flush_interval_ms": flush_interval_ms})
    topic = create_topic(b.bootstrap, topic_name("crash"), PARTITIONS)
    rng = random.Random(7 + flush_interval_ms)
    acked_by_run = []
    for run in range(runs):
        acked, sent = stream_until_killed(b, topic, run, rng.uniform(0.05, 0.6))
        acked_by_run.append(acked)
        b.start()
    log = read_log(b.bootstrap, topic)
    total_acked = 0
    for q in range(PARTITIONS):
        by_run = {}
        for v in log[q]:
            r, s = (int(x) for x in v.split(b"-"))
            by_run.setdefault(r, []).append(s)
        for run, acked in enumerate(acked_by_run):
            present = by_run.get(run, [])
            # A prefix, in order, without duplicates: the sequence numbers of this partition.
            assert present == list(range(q, q + PARTITIONS * len(present), PARTITIONS)), \
                f"run {run} partition {q}: not an in-order prefix: {present[:5]}..."
            missing = set(acked[q]) - set(present)
            assert not missing, f"run {run} partition {q}: {len(missing)} acked records lost"
            total_acked += len(acked[q])
    assert total_acked > runs * 10, f"too little was acknowledged ({total_acked}) to mean much"
