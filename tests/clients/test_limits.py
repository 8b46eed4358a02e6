"""Named connection limits and hostile or slow clients: over-limit connections are closed at
once, idle and slowloris connections are cut at the idle timeout, a client that never reads
its responses loses its connection without stalling anyone, a request memory budget smaller
than the load makes producers wait instead of failing, and floods of cheap requests do not
starve produce on the same shard."""
import os
import resource
import selectors
import socket
import struct
import threading
import time

from confluent_kafka import Producer

import rawkafka as rk
from util import create_topic, read_all, topic_name


def answers(s, corr=1):
    """True when the connection answers an ApiVersions request, False when it was closed."""
    try:
        s.sendall(rk.api_versions(0, corr=corr))
        f = rk.read_frame(s)
    except OSError:
        return False
    return f is not None and struct.unpack(">i", f[:4])[0] == corr


def produce_ok(bootstrap, topic, n=100, timeout=30):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    for i in range(n):
        p.produce(topic, value=b"ok-%d" % i)
    return p.flush(timeout) == 0


def test_max_connections_and_per_ip(broker_factory):
    b = broker_factory(config={"max_connections": 30, "max_connections_per_ip": 10})
    time.sleep(0.5)  # the readiness probe's connection is given back once the broker sees it close
    socks = [rk.connect(b.bootstrap) for _ in range(10)]
    assert all(answers(s) for s in socks)
    extra = rk.connect(b.bootstrap)
    assert not answers(extra), "the 11th connection from 127.0.0.1 must be closed"
    # Another loopback address is another client: it still gets in.
    other = socket.create_connection(("127.0.0.1", b.port), timeout=10,
                                     source_address=("127.0.0.2", 0))
    assert answers(other)
    # Slots come back when connections close.
    socks.pop().close()
    time.sleep(0.2)
    again = rk.connect(b.bootstrap)
    assert answers(again)
    for s in socks + [other, again, extra]:
        s.close()


def test_thousands_of_connections_accepted_or_cleanly_refused(broker_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 12000)), hard))
    b = broker_factory(shards=2, config={"max_connections": 4000,
                                         "max_connections_per_ip": 10000})
    host, port = "127.0.0.1", b.port
    n = 5000
    fds_before = len(os.listdir(f"/proc/{b.proc.pid}/fd"))
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, port))
            socks.append(s)
        # Once connected, each sends one ApiVersions and waits for the answer or the close.
        for i, s in enumerate(socks):
            sel.register(s, selectors.EVENT_WRITE, i)
        answered, refused, pending = 0, 0, {}
        deadline = time.time() + 90
        while answered + refused < n and time.time() < deadline:
            for key, ev in sel.select(timeout=1):
                s, i = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    try:
                        s.send(rk.api_versions(0, corr=i))
                    except OSError:
                        sel.unregister(s)
                        refused += 1
                        continue
                    sel.modify(s, selectors.EVENT_READ, i)
                    pending[i] = b""
                else:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        sel.unregister(s)
                        refused += 1
                        continue
                    pending[i] += data
                    if len(pending[i]) >= 8:
                        assert struct.unpack(">i", pending[i][4:8])[0] == i
                        sel.unregister(s)
                        answered += 1
        assert answered + refused == n, f"{n - answered - refused} connections never resolved"
        assert answered == 4000 and refused == 1000, (answered, refused)
        # One descriptor per open connection (a dup for the writing half made it two, and
        # halved the connections a descriptor limit allows).
        fds = len(os.listdir(f"/proc/{b.proc.pid}/fd")) - fds_before
        assert 3900 <= fds <= 4100, fds
    finally:
        for s in socks:
            s.close()
    # Over the limit the broker refused; it still serves everyone else.
    time.sleep(0.5)
    topic = create_topic(b.bootstrap, topic_name("many"), 1)
    assert produce_ok(b.bootstrap, topic)


def test_idle_and_slowloris_connections_are_cut(broker_factory):
    b = broker_factory(config={"connection_idle_timeout_ms": 1000})
    idle = rk.connect(b.bootstrap)
    slow = rk.connect(b.bootstrap)
    busy = rk.connect(b.bootstrap)
    # slowloris: announces a 100-byte request and sends one byte every 200 ms
    slow.sendall(struct.pack(">i", 100))
    start = time.time()
    closed = {}
    corr = 0
    while time.time() - start < 4 and len(closed) < 2:
        for name, s in (("idle", idle), ("slow", slow)):
            if name in closed:
                continue
            s.settimeout(0.01)
            try:
                if name == "slow":
                    s.send(b"x")
                if s.recv(1) == b"":
                    closed[name] = time.time() - start
            except socket.timeout:
                pass
            except OSError:
                closed[name] = time.time() - start
        corr += 1
        assert answers(busy, corr), "a connection with a request every 200 ms must stay open"
        time.sleep(0.2)
    assert set(closed) == {"idle", "slow"}, f"not cut within 4 s: {closed}"
    assert min(closed.values()) >= 0.8, f"cut before the idle timeout: {closed}"
    assert answers(busy, 999)
    for s in (idle, slow, busy):
        s.close()


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_client_that_never_reads_does_not_stall_the_shard(broker_factory):
    b = broker_factory(config={"connection_idle_timeout_ms": 3000})
    topic = create_topic(b.bootstrap, topic_name("noread"), 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(20000):
        p.produce(topic, value=b"%06d" % i + b"y" * 994)
    assert p.flush(30) == 0
    rss_before = rss_kib(b.proc.pid)
    # 64 pipelined fetches of the whole 20 MB topic, and never a read of the answers.
    hog = rk.connect(b.bootstrap)
    req = b"".join(rk.fetch_v4(topic, 0, 0, corr=i, max_wait_ms=0, max_bytes=50 << 20)
                   for i in range(64))
    hog.sendall(req)
    # Everyone else on the (single) shard is served meanwhile.
    for round in range(3):
        assert produce_ok(b.bootstrap, topic, 50), f"produce stalled (round {round})"
        assert len(read_all(b.bootstrap, topic, 1)[0]) == 20000 + 50 * (round + 1)
    # The hog is cut once a response has gone unread for the idle timeout: what it can still
    # read is what the kernel had buffered, not the 64 x 20 MB it asked for.
    time.sleep(4.5)
    hog.settimeout(10)
    got, cut = 0, False
    try:
        while True:
            chunk = hog.recv(1 << 20)
            if not chunk:
                cut = True
                break
            got += len(chunk)
    except ConnectionResetError:
        cut = True  # aborted: the unread responses are dropped
    assert cut, "the connection was not closed"
    assert got < 100 << 20, f"the client read {got >> 20} MiB after it should have been cut"
    growth_mib = (rss_kib(b.proc.pid) - rss_before) / 1024
    assert growth_mib < 200, f"RSS grew {growth_mib:.0f} MiB for a client that never reads"
    assert produce_ok(b.bootstrap, topic, 10)


def test_request_memory_budget_applies_back_pressure(broker_factory):
    # A 1 MiB budget and producers sending 700 KB requests, plus one 3 MiB request larger
    # than the whole budget: everything is written (requests wait their turn), nothing fails.
    b = broker_factory(config={"request_memory_bytes": 1 << 20, "max_batch_bytes": 8 << 20})
    topic = create_topic(b.bootstrap, topic_name("budget"), 4)
    errors = []

    def producer(k, size):
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 20,
                      "batch.size": 8 << 20, "message.max.bytes": 8 << 20,
                      "compression.type": "none"})
        for i in range(20):
            p.produce(topic, value=b"%d-%d|" % (k, i) + b"z" * size, partition=k % 4,
                      on_delivery=lambda e, m: e and errors.append(e))
            p.poll(0)
        if p.flush(60) != 0:
            errors.append("flush timed out")

    threads = [threading.Thread(target=producer, args=(k, 700_000 if k < 3 else 3_000_000))
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    got = read_all(b.bootstrap, topic, 4, timeout=60)
    assert sum(len(v) for v in got.values()) == 80


def test_metadata_flood_does_not_starve_produce(broker_factory):
    b = broker_factory(config={})
    topic = create_topic(b.bootstrap, topic_name("flood"), 1)
    stop = threading.Event()
    sent = [0]

    def flood():
        s = rk.connect(b.bootstrap)
        req = rk.frame(rk.header(3, 1, 7) + struct.pack(">i", -1))  # Metadata v1, all topics
        try:
            while not stop.is_set():
                s.sendall(req * 32)
                for _ in range(32):
                    if rk.read_frame(s) is None:
                        return
                sent[0] += 32
        finally:
            s.close()

    floods = [threading.Thread(target=flood) for _ in range(4)]
    for t in floods:
        t.start()
    try:
        time.sleep(0.5)
        assert produce_ok(b.bootstrap, topic, 2000, timeout=30), "produce starved by the flood"
    finally:
        stop.set()
        for t in floods:
            t.join()
    assert sent[0] > 1000, f"the flood was not a flood ({sent[0]} requests)"
    assert len(read_all(b.bootstrap, topic, 1)[0]) == 2000
