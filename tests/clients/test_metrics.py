"""Prometheus metrics (`metrics_listen`): valid text format, and the counters agree with what
real clients did."""
import re
import urllib.request

from confluent_kafka import Producer

from conftest import free_port
from util import create_topic, read_all, topic_name, wait_until

SAMPLE = re.compile(r'^([a-z_]+)\{([a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\} (-?[0-9.e+]+|\+Inf)$')


def scrape(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    families, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in families, f"{name} typed twice"
            families[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = SAMPLE.match(line)
            assert m, f"not a Prometheus sample: {line!r}"
            name, labels = m.group(1), m.group(2)
            family = next((f for f in families if name.startswith(f)), None)
            assert family, f"{name} has no TYPE line before it"
            samples[(name, labels)] = float(m.group(4))
    return families, samples


def total(samples, name, **labels):
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for (n, l), v in samples.items()
               if n == name and all(w in l.split(",") for w in want))


def test_metrics_count_what_clients_did(broker_factory):
    addr = f"127.0.0.1:{free_port()}"
    b = broker_factory(shards=2, config={"metrics_listen": addr})
    topic = topic_name("metrics")
    create_topic(b.bootstrap, topic, 4)
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(3000):
        p.produce(topic, f"value-{i:06d}".encode(), partition=i % 4)
    assert p.flush(30) == 0
    got = read_all(b.bootstrap, topic, 4)
    assert sum(len(v) for v in got.values()) == 3000

    def settled():
        _, s = scrape(addr)
        return total(s, "flumen_partition_records_out_total", topic=topic) >= 3000
    wait_until(settled, 10, "a snapshot after the reads")
    families, s = scrape(addr)
    assert families["flumen_request_duration_seconds"] == "histogram"
    assert families["flumen_requests_total"] == "counter"
    for part in range(4):
        assert total(s, "flumen_partition_records_in_total", topic=topic, partition=part) == 750
        assert total(s, "flumen_partition_high_watermark", topic=topic, partition=part) == 750
        assert total(s, "flumen_partition_offline", topic=topic, partition=part) == 0
    bytes_in = total(s, "flumen_partition_bytes_in_total", topic=topic)
    assert 3000 * 12 < bytes_in < 3000 * 100
    assert total(s, "flumen_partition_bytes_out_total", topic=topic) >= bytes_in
    produces = total(s, "flumen_requests_total", api="Produce")
    assert produces >= 1
    assert total(s, "flumen_request_duration_seconds_count", api="Produce") == produces
    assert total(s, "flumen_request_duration_seconds_bucket", api="Produce", le="+Inf") == produces
    assert total(s, "flumen_connections_accepted_total") >= 2
    assert total(s, "flumen_request_memory_limit_bytes") == 2 * 256 * 1024 * 1024
    assert total(s, "flumen_uring_file_ops_total", op="write") >= 1
    assert total(s, "flumen_tail_cache_hits_total") + total(s, "flumen_tail_cache_misses_total") >= 1
    # Anything but /metrics is a 404, and the broker still answers.
    try:
        urllib.request.urlopen(f"http://{addr}/other", timeout=10)
        raise AssertionError("expected a 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    scrape(addr)
