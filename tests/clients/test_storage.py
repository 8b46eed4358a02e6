"""Segments on disk, roll, retention, ListOffsets by time, topic auto-creation."""
import os
import re
import time

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, Producer,
                             TopicPartition)

import rawkafka as rk
from conftest import free_port
from test_metrics import scrape, total
from util import create_topic, read_all, topic_name, wait_until, watermarks


def test_roll_and_retention_by_size(broker_factory):
    b = broker_factory(config={"segment_bytes": 262144, "retention_bytes": 524288,
                               "retention_check_interval_ms": 200})
    topic = create_topic(b.bootstrap, topic_name("ret"), 1)
    # Small batches: a batch never splits across segments, so 1 MB batches (librdkafka's
    # default batch.size, reached when the broker is slow) would make 1 MB segments and leave
    # one segment after retention.
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "1", "linger.ms": 5,
                  "batch.size": 16384})
    for i in range(3000):
        p.produce(topic, value=b"%06d" % i + b"." * 1000)
    assert p.flush(30) == 0
    d = b.data_dir / f"{topic}-0"
    deadline = time.time() + 10
    low = 0
    logs = []
    # Retention deletes segments one at a time: wait until a pass has finished (the log start
    # is the first remaining segment's base offset) rather than look in the middle of one.
    while time.time() < deadline:
        low, high = watermarks(b.bootstrap, topic, 0)
        logs = sorted(f.name for f in d.iterdir() if f.suffix == ".log")
        if low > 0 and logs and int(logs[0][:20]) == low:
            break
        time.sleep(0.2)
    assert high == 3000
    assert low > 0, "retention never deleted a segment"
    assert all(re.fullmatch(r"\d{20}\.log", n) for n in logs)
    assert len(logs) >= 2
    assert int(logs[0][:20]) == low, "log start is the first remaining segment's base offset"
    for n in logs[:-1]:
        stem = n[:20]
        assert (d / f"{stem}.index").exists() and (d / f"{stem}.timeindex").exists()
    # A consumer reading from the beginning starts at the new log start.
    got = read_all(b.bootstrap, topic, 1, start=low)
    assert got[0][0].offset() == low
    assert int(got[0][0].value()[:6]) == low
    assert len(got[0]) == 3000 - low
    # Below the log start is out of range (auto.offset.reset=earliest moves the consumer up),
    # and OFFSET_BEGINNING resolves to the log start.
    for start in (0, OFFSET_BEGINNING):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "r",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, start)])
        m = None
        for _ in range(40):
            m = c.poll(0.5)
            if m is not None and not m.error():
                break
        c.close()
        assert m is not None and not m.error() and m.offset() == low, start
        assert int(m.value()[:6]) == low
    # A clean restart recovers the rolled segments and the log start.
    b.restart()
    low2, high2 = watermarks(b.bootstrap, topic, 0)
    assert high2 == 3000 and low2 >= low
    got = read_all(b.bootstrap, topic, 1, start=low2)[0]
    assert [int(m.value()[:6]) for m in got] == list(range(low2, 3000))


def test_offsets_for_times(broker):
    topic = create_topic(broker.bootstrap, topic_name("ts"), 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    base = 1_600_000_000_000
    for i in range(100):
        p.produce(topic, value=b"%d" % i, timestamp=base + 10 * i)
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t"})
    q = lambda ts: c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)[0].offset
    assert q(base) == 0
    assert q(base + 1) == 1
    assert q(base + 505) == 51
    assert q(base + 990) == 99
    assert q(base + 991) == -1  # none at or after: Kafka answers -1 (end)
    c.close()


def test_offsets_for_times_out_of_order(broker):
    """Create times need not grow: the answer is the first offset whose timestamp is >= the
    query, across batches and inside one."""
    topic = create_topic(broker.bootstrap, topic_name("tso"), 1)
    base = 1_650_000_000_000
    stamps = [1000, 3000, 2000, 5000, 4000, 4000, 7000, 6000]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100})
    for i, ts in enumerate(stamps):
        p.produce(topic, value=b"%d" % i, timestamp=base + ts)
        if i < 4:
            assert p.flush(10) == 0  # one batch each; the rest share a batch
    assert p.flush(10) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "t"})
    try:
        for q in (0, 1000, 1001, 2000, 2500, 3001, 4000, 4500, 5001, 6000, 6500, 7000, 7001):
            want = next((i for i, ts in enumerate(stamps) if ts >= q), -1)
            got = c.offsets_for_times([TopicPartition(topic, 0, base + q)], timeout=10)[0]
            assert got.error is None and got.offset == want, (q, got.offset, want)
    finally:
        c.close()


def test_auto_create_with_defaults(broker):
    """Kafka's defaults: auto-creation on, one partition."""
    topic = topic_name("auto1")
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 15000})
    p.produce(topic, key=b"k", value=b"first")
    assert p.flush(20) == 0
    md = p.list_topics(topic, timeout=10)
    assert md.topics[topic].error is None
    assert list(md.topics[topic].partitions) == [0]
    got = read_all(broker.bootstrap, topic, 1)[0]
    assert [(m.offset(), m.key(), m.value()) for m in got] == [(0, b"k", b"first")]


def test_auto_create_default_and_disabled(broker_factory):
    b = broker_factory(name="on", config={"default_partitions": 3})
    topic = topic_name("auto")
    p = Producer({"bootstrap.servers": b.bootstrap})
    p.produce(topic, value=b"x")
    assert p.flush(15) == 0
    md = p.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3

    off = broker_factory(name="off", config={"auto_create_topics": False})
    c = Consumer({"bootstrap.servers": off.bootstrap, "group.id": "x",
                  "allow.auto.create.topics": True})
    md = c.list_topics(topic, timeout=10)
    c.close()
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == 3  # UNKNOWN_TOPIC_OR_PARTITION
    errors = []
    p = Producer({"bootstrap.servers": off.bootstrap, "message.timeout.ms": 3000})
    p.produce(topic, value=b"x", on_delivery=lambda e, m: errors.append(e))
    p.flush(10)
    # librdkafka reports it as unknown topic, or (Kafka's own behaviour) a message time-out.
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                                KafkaError._MSG_TIMED_OUT), errors[0]
    md = p.list_topics(topic, timeout=10)
    assert md.topics[topic].error is not None and md.topics[topic].error.code() == 3, \
        "the refused produce created the topic anyway"


def test_log_append_time(broker_factory):
    b = broker_factory(config={"message_timestamp_type": "LogAppendTime"})
    topic = create_topic(b.bootstrap, topic_name("lat"), 1)
    p = Producer({"bootstrap.servers": b.bootstrap})
    before = int(time.time() * 1000)
    p.produce(topic, value=b"x", timestamp=1000)
    assert p.flush(10) == 0
    m = read_all(b.bootstrap, topic, 1)[0][0]
    kind, ts = m.timestamp()
    assert kind == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= int(time.time() * 1000) + 1000


def test_copy_fetch_path(broker_factory):
    """zero_copy_fetch = false serves the same bytes (from files: tail cache off)."""
    b = broker_factory(config={"zero_copy_fetch": False, "tail_cache_bytes": 0})
    topic = create_topic(b.bootstrap, topic_name("cp"), 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "compression.type": "zstd"})
    for i in range(500):
        p.produce(topic, value=b"%d" % i)
    assert p.flush(10) == 0
    got = read_all(b.bootstrap, topic, 1)[0]
    assert [int(m.value()) for m in got] == list(range(500))


@pytest.mark.parametrize("ts_type", ["CreateTime", "LogAppendTime"])
def test_tail_cache_serves_large_batches_exactly_as_written(broker_factory, ts_type):
    """Batches of 64 KiB and more are cached as slices of the producer's request behind a copy
    of the header bytes the broker stamped (base offset and leader epoch; with LogAppendTime
    the whole header, CRC included). A fetch served by the cache returns byte for byte what a
    fetch from the file returns after a restart, which empties the cache."""
    metrics = f"127.0.0.1:{free_port()}"
    b = broker_factory(config={"message_timestamp_type": ts_type, "metrics_listen": metrics})
    topic = create_topic(b.bootstrap, topic_name("tc"), 1)
    values = [[b"%d-%d-" % (j, i) + bytes([i % 251]) * 1000 for i in range(80)]
              for j in range(3)]
    for j, vs in enumerate(values):
        batch = rk.record_batch(vs)
        assert len(batch) >= 64 * 1024
        s = rk.connect(b.bootstrap)
        try:
            s.sendall(rk.produce_v3(topic, 0, batch, corr=j + 1))
            corr, parts = rk.parse_produce_v3(rk.read_frame(s))
        finally:
            s.close()
        assert corr == j + 1 and parts[0][1:] == (0, 80 * j), parts

    err, hw, cached = rk.fetch_once(b.bootstrap, topic, 0, 0)
    assert (err, hw) == (0, 240)
    batches = rk.parse_batches(cached)
    assert [x["base_offset"] for x in batches] == [0, 80, 160]
    assert all(x["crc_ok"] for x in batches)
    assert [r[2] for x in batches for r in x["records"]] == [v for vs in values for v in vs]
    # Each batch's attributes: the LogAppendTime bit is the broker's stamp.
    at, flags = 0, []
    for _ in batches:
        length = int.from_bytes(cached[at + 8:at + 12], "big")
        flags.append(int.from_bytes(cached[at + 21:at + 23], "big") & 0x08)
        at += 12 + length
    assert flags == [0x08 if ts_type == "LogAppendTime" else 0] * 3

    def hits():
        _, m = scrape(metrics)
        return total(m, "flumen_tail_cache_hits_total")
    assert wait_until(hits, 15, "the fetch counted as a tail cache hit") >= 1

    b.restart()
    err, hw, from_file = rk.fetch_once(b.bootstrap, topic, 0, 0)
    assert (err, hw) == (0, 240)
    assert from_file == cached


def test_a_partition_holding_little_costs_one_descriptor_and_a_megabyte_of_disk(broker_factory):
    """Hundreds of partitions holding a record each: each keeps one descriptor open (its
    active segment's writer; the read handle recovery used is let go until a fetch needs it)
    and reserves 1 MiB of disk, not a 16 MiB step (10,000 partitions reserved 160 GB before they
    held anything), after a restart too. A partition that fills reserves in doubling steps,
    so it stays within twice what it holds."""
    b = broker_factory()
    n = 300
    topic = create_topic(b.bootstrap, topic_name("wide"), n)

    def topic_fds():
        pid, out = b.proc.pid, 0
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out += f"/{topic}-" in os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                pass
        return out

    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20})
    for i in range(n):
        p.produce(topic, value=b"x" * 100, partition=i)
    big = b"y" * 1000
    for i in range(5000):  # about 5 MB into partition 0
        p.produce(topic, value=big, partition=0)
    assert p.flush(30) == 0

    def reserved(part):
        d = b.data_dir / f"{topic}-{part}"
        return sum(f.stat().st_blocks * 512 for f in d.iterdir() if f.suffix == ".log")

    def check(when):
        fds = topic_fds()
        assert n <= fds <= n + 5, (when, fds)
        small = [reserved(i) for i in range(1, n)]
        # (st_blocks may count a block of the file system's own extent map too)
        assert max(small) <= (1 << 20) + 65536, (when, max(small))
        assert 5_000_000 < reserved(0) <= (8 << 20) + 65536, (when, reserved(0))

    check("running")
    b.stop()
    b.start()
    check("after a restart")
    # A fetch opens the read handle again and reads the records back.
    got = read_all(b.bootstrap, topic, [0, n - 1])
    assert [m.value() for m in got[n - 1]] == [b"x" * 100]
    assert len(got[0]) == 5001 and got[0][-1].value() == big
