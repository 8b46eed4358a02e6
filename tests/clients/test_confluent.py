"""confluent-kafka (current librdkafka): every compression with every acks, keys, values,
headers and timestamps read back exactly, per partition, in order, no gaps, no duplicates."""
import time

import pytest
from confluent_kafka import Producer

import rawkafka as rk
from util import create_topic, read_all, topic_name, watermarks

PARTITIONS = 4
RECORDS = 2000
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_produce_consume_exact(broker, compression, acks):
    topic = create_topic(broker.bootstrap, topic_name("cf"), PARTITIONS)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks,
                  "compression.type": compression, "linger.ms": 5, "batch.num.messages": 200})
    sent = {i: [] for i in range(PARTITIONS)}
    errors = []

    def cb(err, msg):
        if err:
            errors.append(err)

    base_ts = 1_700_000_000_000
    for i in range(RECORDS):
        part = i % PARTITIONS
        key = f"key-{i}".encode()
        value = (f"value-{i}-" + "x" * (i % 97)).encode()
        headers = [("seq", str(i).encode()), ("h2", b"\x00\x01")]
        ts = base_ts + i
        p.produce(topic, key=key, value=value, headers=headers, partition=part, timestamp=ts,
                  on_delivery=cb)
        sent[part].append((key, value, headers, (1, ts)))  # 1: TIMESTAMP_CREATE_TIME
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    assert not errors, errors
    if acks == "0":
        # Nothing acknowledges an acks=0 write: wait until the broker has them all visible
        # before reading up to the high watermark (a loaded host may still be writing).
        for q, v in sent.items():
            deadline = time.time() + 30
            while watermarks(broker.bootstrap, topic, q)[1] < len(v):
                assert time.time() < deadline, f"partition {q}: high watermark below {len(v)}"
                time.sleep(0.1)

    got = read_all(broker.bootstrap, topic, PARTITIONS)
    for part in range(PARTITIONS):
        msgs = got[part]
        assert [m.offset() for m in msgs] == list(range(len(sent[part]))), "gap or duplicate"
        assert [(m.key(), m.value(), m.headers(), m.timestamp()) for m in msgs] == sent[part]
        assert watermarks(broker.bootstrap, topic, part) == (0, len(sent[part]))
        # Stored and served as the producer compressed it, every batch CRC intact.
        err, hw, recs = rk.fetch_once(broker.bootstrap, topic, part, 0)
        batches = rk.parse_batches(recs)
        assert (err, hw) == (0, len(sent[part])) and batches
        assert all(b["crc_ok"] for b in batches)
        assert {b["codec"] for b in batches} == {CODECS[compression]}


def test_two_shards_one_connection(broker_factory):
    """With two shards the partitions land on both; one producer connection and one consumer
    reach all of them (requests split by owner and merged in order)."""
    b = broker_factory(shards=2)
    topic = create_topic(b.bootstrap, topic_name("sh"), 6)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 20})
    for i in range(600):
        p.produce(topic, value=str(i).encode(), partition=i % 6)
    assert p.flush(30) == 0
    got = read_all(b.bootstrap, topic, 6)
    for part in range(6):
        assert [int(m.value()) for m in got[part]] == list(range(part, 600, 6))
    # The placement really uses both shards.
    import tomllib
    meta = tomllib.loads((b.data_dir / "flumen-meta.toml").read_text())
    assert sorted(set(meta["topics"][topic]["placement"])) == [0, 1]


def test_long_poll_wakes_on_new_data(broker):
    import threading
    from confluent_kafka import Consumer, TopicPartition
    topic = create_topic(broker.bootstrap, topic_name("lp"), 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "lp",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 5000})
    c.assign([TopicPartition(topic, 0, 0)])
    c.poll(0.5)  # connect and start fetching at the (empty) end

    def later():
        time.sleep(1.0)
        p = Producer({"bootstrap.servers": broker.bootstrap})
        p.produce(topic, value=b"late")
        p.flush(10)

    t = threading.Thread(target=later)
    start = time.time()
    t.start()
    m = None
    while time.time() - start < 15:
        m = c.poll(0.2)
        if m is not None and not m.error():
            break
    t.join()
    c.close()
    assert m is not None and m.value() == b"late"
    # Generous bound: the long poll returns on the append, not at fetch.wait.max.ms (5 s) later.
    assert time.time() - start < 4.5

