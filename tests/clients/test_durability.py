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
        p.produce(topic, key=str(i).encode(), value=os.urandom(64), partition=i % 3)
    assert p.flush(30) == 0
    before = read_all(b.bootstrap, topic, 3)
    marks = [watermarks(b.bootstrap, topic, i) for i in range(3)]
    b.restart()
    after = read_all(b.bootstrap, topic, 3)
    assert [watermarks(b.bootstrap, topic, i) for i in range(3)] == marks
    for part in range(3):
        assert [(m.offset(), m.key(), m.value()) for m in after[part]] == \
               [(m.offset(), m.key(), m.value()) for m in before[part]]
    # And the log takes appends after the recovered end.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    p.produce(topic, value=b"after-restart", partition=0)
    assert p.flush(15) == 0
    assert watermarks(b.bootstrap, topic, 0) == (0, marks[0][1] + 1)


def test_kill9_keeps_every_acknowledged_record(broker_factory):
    b = broker_factory(shards=2, config={"flush_interval_ms": 0})
    topic = create_topic(b.bootstrap, topic_name("k9"), 2)
    acked = {}

    def cb(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 1,
                  "message.timeout.ms": 5000, "retries": 0})
    i = 0
    start = time.time()
    while len(acked) < 3000 and time.time() - start < 20:
        p.produce(topic, value=b"rec-%d" % i, partition=i % 2, on_delivery=cb)
        i += 1
        p.poll(0)
    assert len(acked) >= 3000, "the broker acknowledged too little before the kill"
    b.proc.send_signal(signal.SIGKILL)  # mid-stream: requests are still in flight
    b.proc.wait(timeout=10)
    b.proc = None
    p.flush(10)  # in-flight ones fail; only acknowledged ones are promised
    b.start()
    got = read_all(b.bootstrap, topic, 2)
    for part in range(2):
        offs = [m.offset() for m in got[part]]
        assert offs == list(range(len(offs))), "log is not a valid prefix"
        assert all(m.value().startswith(b"rec-") for m in got[part])
    present = {(m.partition(), m.offset()): m.value() for part in got.values() for m in part}
    lost = [k for k, v in acked.items() if present.get(k) != v]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
