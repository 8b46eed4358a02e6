"""Client quotas (issue 16): produce and fetch byte rates and request-time share per user and
client id, set with `flumen quotas` (AlterClientQuotas) and enforced per shard with
throttle_time_ms, as Kafka does: a quota-limited client is held to its rate while an unlimited
one keeps its speed, and nothing is lost to throttling."""
import json
import os
import struct
import subprocess
import threading
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import rawkafka
from conftest import flumen_bin
from util import topic_name

RECORD = b"x" * 10_000


def quotas(b, *args, env=None):
    r = subprocess.run([flumen_bin(), "quotas", *args, "--bootstrap", b.bootstrap],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, **(env or {})))
    return r


def ok(r):
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def make_topic(b, t):
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(t, 1, 1)])[t].result(30)


def produce_for(b, t, client_id, n, stats=None):
    """Produces n 10 KB records as `client_id`; answers the seconds it took."""
    # 128 KiB requests: a throttle is paid before the next request is read, so the last
    # request's share is what a run can get beyond its rate.
    conf = {"bootstrap.servers": b.bootstrap, "client.id": client_id, "linger.ms": 5,
            "acks": 1, "batch.size": 131072}
    if stats is not None:
        conf.update({"statistics.interval.ms": 200, "stats_cb": stats.append})
    p = Producer(conf)
    start = time.time()
    for _ in range(n):
        while True:
            try:
                p.produce(t, RECORD, partition=0)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    took = time.time() - start
    p.poll(0.5)  # one more statistics event
    return took


def test_a_quota_limited_producer_is_held_to_its_rate_an_unlimited_one_is_not(broker):
    t = topic_name("q")
    make_topic(broker, t)
    rate = 512 * 1024
    out = ok(quotas(broker, "set", "--client-id", "slow", "--producer-byte-rate", str(rate)))
    assert "producer_byte_rate=524288" in out, out
    listed = json.loads(ok(quotas(broker, "list", "--json")))
    assert listed == [{"entity": {"client-id": "slow"}, "values": {"producer_byte_rate": rate}}]

    # Both at once: the slow one 3 MB, the fast one 30 MB.
    stats, slow = [], {}
    th = threading.Thread(target=lambda: slow.update(
        took=produce_for(broker, t, "slow", 300, stats)))
    th.start()
    fast_took = produce_for(broker, t, "fast", 3000)
    th.join(180)
    slow_rate = 300 * len(RECORD) / slow["took"]
    fast_rate = 3000 * len(RECORD) / fast_took
    # The bucket holds a second of the rate, so 3 MB at 512 KB/s in 128 KiB requests cannot
    # take under ~4.7 s (1.25x); unthrottled it takes a tenth of a second.
    assert slow_rate <= 1.5 * rate, (slow_rate, rate)
    # The unlimited client was not held back to anything near the quota.
    assert fast_rate >= 4 * rate, (fast_rate, rate)
    # librdkafka saw throttle_time_ms in the Produce responses.
    throttled = [json.loads(s)["brokers"] for s in stats]
    assert any(br["throttle"]["max"] > 0 for s in throttled for br in s.values()
               if br["nodeid"] >= 0), throttled[-1:]

    # Removing the quota frees the client.
    ok(quotas(broker, "remove", "--client-id", "slow"))
    assert json.loads(ok(quotas(broker, "list", "--json"))) == []
    took = produce_for(broker, t, "slow", 300)
    assert 300 * len(RECORD) / took > 2 * rate


def test_a_quota_limited_consumer_is_throttled_and_loses_nothing(broker):
    t = topic_name("qc")
    make_topic(broker, t)
    produce_for(broker, t, "loader", 300)  # 3 MB
    rate = 512 * 1024
    # The default user's quota (every user on its own), then a more specific one for this
    # client id: the most specific wins.
    ok(quotas(broker, "set", "--user", "<default>", "--consumer-byte-rate", str(64 * rate)))
    ok(quotas(broker, "set", "--user", "ANONYMOUS", "--client-id", "slowc",
              "--consumer-byte-rate", str(rate)))
    listed = json.loads(ok(quotas(broker, "list", "--user", "ANONYMOUS", "--json")))
    assert listed == [{"entity": {"user": "ANONYMOUS", "client-id": "slowc"},
                       "values": {"consumer_byte_rate": rate}}], listed
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "qc", "client.id": "slowc",
                  "auto.offset.reset": "earliest", "fetch.max.bytes": 131072,
                  "message.max.bytes": 131072,
                  "max.partition.fetch.bytes": 131072})
    c.subscribe([t])
    got, start = 0, None
    deadline = time.time() + 60
    while got < 300 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            start = start or time.time()
            assert m.offset() == got
            got += 1
    took = time.time() - start
    c.close()
    assert got == 300
    # A second's burst, then 512 KB/s: at least ~4.7 s for 3 MB in 128 KiB fetches.
    assert 300 * len(RECORD) / took <= 1.5 * rate, took


def produce_request(topic, client, corr):
    body = struct.pack(">h", -1) + struct.pack(">hi", 1, 10_000) + struct.pack(">i", 1)
    body += struct.pack(">h", len(topic)) + topic.encode()
    records = rawkafka.record_batch([b"v" * 100] * 200)
    body += struct.pack(">i", 1) + struct.pack(">ii", 0, len(records)) + records
    return rawkafka.frame(rawkafka.header(0, 3, corr, client) + body)


def test_request_percentage_throttles_and_bad_quotas_are_refused(broker):
    t = topic_name("qr")
    make_topic(broker, t)
    # 0.001% of a thread: 10 us of the shard's time a second.
    ok(quotas(broker, "set", "--client-id", "busy", "--request-percentage", "0.001"))

    def throttles(client, n=30):
        s = rawkafka.connect(broker.bootstrap)
        seen = []
        for i in range(n):
            s.sendall(produce_request(t, client, corr=i + 1))
            data = rawkafka.read_frame(s)
            (throttle,) = struct.unpack(">i", data[-4:])
            seen.append(throttle)
            if throttle > 0:
                break
        s.close()
        return seen

    busy = throttles(b"busy")
    assert busy[-1] > 0, busy
    assert max(throttles(b"idle", n=10)) == 0

    # Kafka's refusals: an unknown key, a value that is not positive, no entity.
    for args in [("--client-id", "x", "--request-percentage", "0"),
                 ("--client-id", "x", "--producer-byte-rate=-5")]:
        r = quotas(broker, "set", *args)
        assert r.returncode != 0 and "INVALID_REQUEST" in r.stderr, r.stdout + r.stderr
    r = quotas(broker, "remove", "--client-id", "x", "--key", "connection_creation_rate")
    assert r.returncode != 0 and "INVALID_REQUEST" in r.stderr, r.stdout + r.stderr
    r = quotas(broker, "set", "--producer-byte-rate", "5")
    assert r.returncode != 0
    # They survive a restart.
    broker.restart()
    listed = json.loads(ok(quotas(broker, "list", "--json")))
    assert listed == [{"entity": {"client-id": "busy"}, "values": {"request_percentage": 0.001}}]
