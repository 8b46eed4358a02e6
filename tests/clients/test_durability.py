"""Restart and kill -9: acknowledged records survive, the log stays valid."""
import os
import signal
import time

from confluent_kafka import Producer

from util import create_topic, read_all, topic_name, watermarks


def test_restart_keeps_everything(broker_factory):
    b = broker_factory(shards=2)
    topic = create_topic(b.bootstrap, topic_name("rs"), 3)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "compression.type": "lz4"})
    for i in range(3000):
        p.produce(topic, key=str(i).encode(), value=os.urandom(64), partition=i % 3,
                  headers=[("n", str(i).encode())], timestamp=1_700_000_000_000 + i)
    assert p.flush(30) == 0
    before = read_all(b.bootstrap, topic, 3)
    marks = [watermarks(b.bootstrap, topic, i) for i in range(3)]
    b.restart()
    after = read_all(b.bootstrap, topic, 3)
    assert [watermarks(b.bootstrap, topic, i) for i in range(3)] == marks
    for part in range(3):
        rows = lambda msgs: [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp())
                             for m in msgs]
        assert rows(after[part]) == rows(before[part])
        assert len(before[part]) == 1000
    # And the log takes appends after the recovered end.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    p.produce(topic, value=b"after-restart", partition=0)
    assert p.flush(15) == 0
    assert watermarks(b.bootstrap, topic, 0) == (0, marks[0][1] + 1)


def test_kill9_keeps_every_acknowledged_record(broker_factory):
    b = broker_factory(shards=2, config={"flush_interval_ms": 0})
    topic = create_topic(b.bootstrap, topic_name("k9"), 2)
    acked = {}
    sent = {0: [], 1: []}

    def cb(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    # No retries: a request in flight at the kill fails instead of being appended again later.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1,
                  "message.timeout.ms": 5000, "retries": 0})
    i = 0
    killed_at = None
    in_flight = 0
    start = time.time()
    # The stream goes on through the kill: the broker dies with requests half received, being
    # written and waiting for their fdatasync.
    while time.time() - start < 30:
        value = b"rec-%d-" % i + bytes([i % 251]) * (200 + i % 1000)
        try:
            p.produce(topic, value=value, partition=i % 2, on_delivery=cb)
        except BufferError:
            p.poll(0.01)
            continue
        sent[i % 2].append(value)
        i += 1
        p.poll(0)
        if killed_at is None and len(acked) >= 3000:
            in_flight = len(p)
            b.proc.send_signal(signal.SIGKILL)
            killed_at = i
        if killed_at is not None and i >= killed_at + 500:
            break
    assert killed_at is not None, f"the broker acknowledged only {len(acked)} records in 30 s"
    b.proc.wait(timeout=10)
    b.proc = None
    assert in_flight > 0, "nothing was in flight at the kill"
    # Every outstanding record fails (message.timeout.ms) before the restart, so nothing this
    # producer holds can be appended after it; only acknowledged ones are promised.
    assert p.flush(20) == 0
    del p
    acked_count = len(acked)
    print(f"sent {i}, acknowledged {acked_count}, {in_flight} outstanding at the kill")
    b.start()
    got = read_all(b.bootstrap, topic, 2)
    for part in range(2):
        offs = [m.offset() for m in got[part]]
        assert offs == list(range(len(offs))), "offsets are not consecutive from 0"
        values = [m.value() for m in got[part]]
        # What survived is exactly what was sent to the partition, in order, up to some point:
        # no corruption, no duplicates, no holes.
        assert values == sent[part][:len(values)], "the recovered log is not a prefix of the stream"
    present = {(m.partition(), m.offset()): m.value() for part in got.values() for m in part}
    lost = [k for k, v in acked.items() if present.get(k) != v]
    assert not lost, f"{len(lost)} of {acked_count} acknowledged records lost, e.g. {lost[:5]}"
    # The recovered log takes appends at its end.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    p.produce(topic, value=b"after", partition=0)
    assert p.flush(15) == 0
    assert watermarks(b.bootstrap, topic, 0) == (0, len(got[0]) + 1)
