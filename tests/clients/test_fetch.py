"""Fetch semantics seen on the wire (hand-made Fetch v4 requests) and by real clients: the long
poll waits for data and wakes on an append, a fetch at an offset inside a batch returns the
batch that contains it, the high watermark is the last offset + 1, and fetched batches carry
valid CRCs."""
import socket
import threading
import time

import pytest
from confluent_kafka import Producer

import rawkafka as rk
from conftest import free_port
from test_kcat import kcat
from test_metrics import scrape, total
from util import create_topic, read_all, topic_name, wait_until

OFFSET_OUT_OF_RANGE = 1


def raw_produce(bootstrap, topic, values, corr=1):
    s = rk.connect(bootstrap)
    try:
        s.sendall(rk.produce_v3(topic, 0, rk.record_batch(values), corr=corr))
        corr_back, parts = rk.parse_produce_v3(rk.read_frame(s))
    finally:
        s.close()
    assert corr_back == corr and len(parts) == 1 and parts[0][1] == 0, parts
    return parts[0][2]


def raw_fetch(bootstrap, topic, offset, max_wait_ms=0):
    return rk.fetch_once(bootstrap, topic, 0, offset, max_wait_ms=max_wait_ms)


def test_long_poll_waits_and_wakes_on_append(broker):
    topic = create_topic(broker.bootstrap, topic_name("lpr"), 1)
    assert raw_produce(broker.bootstrap, topic, [b"first"]) == 0

    s = rk.connect(broker.bootstrap)
    s.settimeout(15)

    def later():
        time.sleep(1.0)
        raw_produce(broker.bootstrap, topic, [b"late"], corr=2)

    t = threading.Thread(target=later)
    start = time.time()
    s.sendall(rk.fetch_v4(topic, 0, 1, corr=21, max_wait_ms=6000))
    t.start()
    data = rk.read_frame(s)
    elapsed = time.time() - start
    t.join(15)
    s.close()
    assert data is not None, "connection closed during the long poll"
    corr, [(part, err, hw, recs)] = rk.parse_fetch_v4(data)
    assert (corr, part, err, hw) == (21, 0, 0, 2)
    batches = rk.parse_batches(recs)
    assert batches, f"the long poll answered without the appended record after {elapsed:.2f}s"
    assert all(b["crc_ok"] for b in batches)
    assert batches[0]["records"] == [(1, None, b"late", [])]
    # It waited for the append (1 s) instead of answering empty at once, and woke on it rather
    # than at max_wait (6 s). Generous bounds for a loaded 2-core machine.
    assert 0.8 <= elapsed < 4.5, elapsed


def test_long_poll_expires_empty(broker):
    topic = create_topic(broker.bootstrap, topic_name("lpe"), 1)
    raw_produce(broker.bootstrap, topic, [b"only"])
    start = time.time()
    err, hw, recs = raw_fetch(broker.bootstrap, topic, 1, max_wait_ms=400)
    elapsed = time.time() - start
    assert (err, hw, rk.parse_batches(recs)) == (0, 1, [])
    assert 0.3 <= elapsed < 3.0, elapsed


def test_fetch_inside_a_batch_returns_the_containing_batch(broker):
    topic = create_topic(broker.bootstrap, topic_name("mid"), 1)
    first = [b"a%d" % i for i in range(10)]
    second = [b"b%d" % i for i in range(5)]
    assert raw_produce(broker.bootstrap, topic, first) == 0
    assert raw_produce(broker.bootstrap, topic, second, corr=2) == 10

    err, hw, recs = raw_fetch(broker.bootstrap, topic, 5)
    assert (err, hw) == (0, 15)  # high watermark = last offset + 1, not last base offset + 1
    batches = rk.parse_batches(recs)
    assert [(b["base_offset"], b["last_offset"], b["crc_ok"]) for b in batches] == \
           [(0, 9, True), (10, 14, True)]
    assert [r[2] for b in batches for r in b["records"]] == first + second
    assert [r[0] for b in batches for r in b["records"]] == list(range(15))

    err, hw, recs = raw_fetch(broker.bootstrap, topic, 12)
    batches = rk.parse_batches(recs)
    assert err == 0 and batches and batches[0]["base_offset"] == 10 and batches[0]["crc_ok"]

    err, hw, recs = raw_fetch(broker.bootstrap, topic, 15)  # the end: nothing, no error
    assert (err, hw, rk.parse_batches(recs)) == (0, 15, [])
    err, hw, recs = raw_fetch(broker.bootstrap, topic, 16)  # past the end
    assert err == OFFSET_OUT_OF_RANGE

    # Real clients resuming inside a batch get exactly the records from their offset on,
    # neither hanging nor re-reading: current librdkafka and Debian's kcat (librdkafka 2.0.2).
    got = read_all(broker.bootstrap, topic, 1, start=5)[0]
    assert [(m.offset(), m.value()) for m in got] == list(zip(range(5, 15), (first + second)[5:]))
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "7", "-e",
               "-f", "%o|%s\n")
    assert out.split("\n")[:-1] == [f"{o}|{v.decode()}" for o, v in
                                    zip(range(7, 15), (first + second)[7:])]


def test_consume_from_inside_a_compressed_batch(broker):
    topic = create_topic(broker.bootstrap, topic_name("midz"), 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "lz4",
                  "linger.ms": 200, "batch.num.messages": 1000})
    for i in range(100):
        p.produce(topic, value=b"v%d" % i, partition=0)
    assert p.flush(15) == 0
    err, hw, recs = raw_fetch(broker.bootstrap, topic, 50)
    assert (err, hw) == (0, 100)
    batches = rk.parse_batches(recs)
    assert batches and all(b["crc_ok"] for b in batches)
    assert batches[0]["base_offset"] <= 50 <= batches[0]["last_offset"]
    assert batches[-1]["last_offset"] == 99
    got = read_all(broker.bootstrap, topic, 1, start=50)[0]
    assert [(m.offset(), m.value()) for m in got] == [(i, b"v%d" % i) for i in range(50, 100)]


@pytest.mark.parametrize("zero_copy", [True, False], ids=["sendfile", "copy"])
def test_file_fetch_of_megabytes_to_a_slow_reader(broker_factory, zero_copy):
    """Several MB fetched from the segment files (tail cache off) by a client with a small
    receive window that leaves them in the socket for three seconds, so the broker's sends meet a
    full socket: every batch arrives whole and in order with its CRC, twice. By the second read
    the page cache holds the range (the first read and its read-ahead put it there; the
    writes, O_DIRECT, did not): with zero_copy_fetch most of it goes by sendfile, the rest
    being the small copied writes that wait for room in the full socket; without it, none
    does. The broker's metrics say which way the bytes went."""
    metrics = f"127.0.0.1:{free_port()}"
    b = broker_factory(config={"zero_copy_fetch": zero_copy, "tail_cache_bytes": 0,
                               "metrics_listen": metrics})
    topic = create_topic(b.bootstrap, topic_name("big"), 1)
    n = 8000
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 50, "batch.size": 262144})
    for i in range(n):
        p.produce(topic, value=b"%06d" % i + bytes([i % 251]) * 1018, partition=0)
    assert p.flush(30) == 0

    def fetch_slowly():
        host, port = b.bootstrap.rsplit(":", 1)
        s = socket.socket()
        # Set before connecting: the window the broker sees stays small.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(30)
        s.connect((host, int(port)))
        try:
            s.sendall(rk.fetch_v4(topic, 0, 0, corr=31, max_wait_ms=0, max_bytes=16 << 20))
            start = time.time()
            time.sleep(0.5)
            # The shard serves others meanwhile: a send to the full socket waits for room
            # without holding the shard (a blocking sendfile would hold it until we read).
            other = rk.connect(b.bootstrap)
            other.sendall(rk.api_versions(corr=41))
            answer = rk.read_frame(other)
            other.close()
            waited = time.time() - start
            assert answer is not None and waited < 2.0, waited
            time.sleep(max(0.0, 3.0 - waited))
            data = rk.read_frame(s)
        finally:
            s.close()
        assert data is not None, "the broker closed the connection instead of answering"
        corr, [(part, err, hw, recs)] = rk.parse_fetch_v4(data)
        assert (corr, part, err, hw) == (31, 0, 0, n)
        batches = rk.parse_batches(recs)
        assert all(x["crc_ok"] for x in batches)
        values = [r[2] for x in batches for r in x["records"]]
        offsets = [r[0] for x in batches for r in x["records"]]
        assert offsets == list(range(n))
        assert values == [b"%06d" % i + bytes([i % 251]) * 1018 for i in range(n)]
        return len(recs)

    def file_bytes(at_least):
        """(by sendfile, copied) once the shard's published metrics count `at_least` bytes."""
        def seen():
            _, m = scrape(metrics)
            got = (total(m, "flumen_fetch_file_bytes_total", how="sendfile"),
                   total(m, "flumen_fetch_file_bytes_total", how="copy"))
            return got if sum(got) >= at_least else None
        return wait_until(seen, 15, f"{at_least} file bytes counted in the metrics")

    sent = fetch_slowly()
    assert sent > 8_000_000
    first = file_bytes(sent)
    fetch_slowly()
    second = file_bytes(sum(first) + sent)
    if zero_copy:
        # The second read finds the range in the page cache: most of it goes by sendfile (a
        # page marked for read-ahead, which fails the RWF_NOWAIT probe, once made the whole
        # read go copied).
        assert second[0] - first[0] >= sent * 3 // 4, (first, second)
    else:
        assert second[0] == 0, (first, second)
