"""`flumen bench` against the real broker: what it reports is what the broker holds, and its
checks find what is wrong."""
import json
import subprocess

import pytest
from confluent_kafka import Producer

from conftest import flumen_bin
from util import create_topic, read_all, topic_name, wait_until, watermarks


@pytest.mark.parametrize("acks", ["1", "-1", "0"])
def test_bench_produce_reports_what_was_written(broker, acks):
    topic = topic_name("bench")
    out = subprocess.run([flumen_bin(), "bench", "produce", "--bootstrap", broker.bootstrap,
                          "--topic", topic, "--partitions", "4", "--records", "20000",
                          "--batch-records", "100", "--record-size", "200", "--acks", acks,
                          "--connections", "2", "--json"],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    r = json.loads(out.stdout)
    assert r["records"] == 20000
    assert r["requests"] == (0 if acks == "0" else 200)
    lat = r["latency_ms"]
    if acks != "0":
        assert 0 < lat["p50"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    # acks=0 is fire and forget: the broker still reads every request the bench wrote before
    # it closed, so all of it arrives, a moment later.
    wait_until(lambda: sum(watermarks(broker.bootstrap, topic, p)[1] for p in range(4)) == 20000,
               15, "all 20000 records in the log")
    got = read_all(broker.bootstrap, topic, 4)
    assert sum(len(v) for v in got.values()) == 20000
    assert all(len(m.value()) == 200 for v in got.values() for m in v)


def bench(broker, *args, expect_ok=True):
    out = subprocess.run([flumen_bin(), "bench", *args, "--bootstrap", broker.bootstrap, "--json"],
                         capture_output=True, timeout=180)
    if expect_ok:
        assert out.returncode == 0, out.stderr.decode()
    return out.returncode, json.loads(out.stdout)


@pytest.mark.parametrize("compression,keys", [("none", "none"), ("lz4", "seq:10"),
                                              ("zstd", "random:1000"), ("gzip", "none")])
def test_bench_consume_checks_every_record(broker, compression, keys):
    topic = topic_name("bcons")
    bench(broker, "produce", "--topic", topic, "--partitions", "3", "--records", "30000",
          "--batch-records", "50", "--record-size", "120", "--compression", compression,
          "--keys", keys)
    _, r = bench(broker, "consume", "--topic", topic)
    v = r["verification"]
    assert v == {"ok": True, "verified": 30000, "missing": 0, "duplicates": 0, "corrupt": 0,
                 "foreign": 0, "runs": 1}
    assert r["records"] == 30000
    # What the bench says it wrote is what a real client reads back.
    got = read_all(broker.bootstrap, topic, 3)
    assert sum(len(v) for v in got.values()) == 30000
    if keys != "none":
        assert all(m.key() is not None and len(m.key()) == 16 for v in got.values() for m in v)


def copy_topic(broker, src, dst, partitions, change):
    """Copies every record of src into dst through a real client, after `change(values)`."""
    got = read_all(broker.bootstrap, src, partitions)
    values = [m.value() for p in sorted(got) for m in got[p]]
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for v in change(values):
        p.produce(dst, v)
    assert p.flush(30) == 0
    return len(values)


@pytest.mark.parametrize("fault", ["gap", "duplicate", "corrupt"])
def test_bench_consume_finds_gaps_duplicates_and_corruption(broker, fault):
    src, dst = topic_name("bsrc"), topic_name("bdst")
    bench(broker, "produce", "--topic", src, "--partitions", "2", "--records", "2000",
          "--batch-records", "20", "--record-size", "64")
    create_topic(broker.bootstrap, dst, 1)

    def change(values):
        if fault == "gap":
            return values[:700] + values[701:]
        if fault == "duplicate":
            return values + [values[5]]
        bad = bytearray(values[9])
        bad[40] ^= 0xFF  # in the filler: only the record checksum can tell
        return values[:9] + [bytes(bad)] + values[10:]

    copy_topic(broker, src, dst, 2, change)
    code, r = bench(broker, "consume", "--topic", dst, expect_ok=False)
    assert code != 0
    v = r["verification"]
    assert not v["ok"]
    want = {"gap": (1, 0, 0), "duplicate": (0, 1, 0), "corrupt": (1, 0, 1)}[fault]
    # A corrupt record does not count as seen: its number is missing too.
    assert (v["missing"], v["duplicates"], v["corrupt"]) == want


def test_bench_e2e_verifies_and_reports(broker, tmp_path):
    topic = topic_name("be2e")
    report = tmp_path / "e2e.html"
    _, r = bench(broker, "e2e", "--topic", topic, "--partitions", "4", "--records", "20000",
                 "--batch-records", "100", "--record-size", "100", "--acks", "-1",
                 "--report", str(report))
    assert r["verification"]["ok"] and r["verification"]["verified"] == 20000
    assert r["produce"]["records"] == 20000 and r["e2e"]["records"] == 20000
    lat = r["e2e"]["latency_ms"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    html = report.read_text()
    for part in ("Throughput", "Latency percentiles", "verification: <b>OK</b>", "<svg"):
        assert part in html


def test_bench_rate_limits_and_counts_latency_from_the_schedule(broker):
    topic = topic_name("brate")
    _, r = bench(broker, "produce", "--topic", topic, "--partitions", "2", "--rate", "5000",
                 "--duration", "3", "--record-size", "100", "--linger-ms", "10",
                 "--connections", "1")
    # 5000 records/s for 3 s: the schedule, not the broker, sets the pace.
    assert 9000 <= r["records"] <= 15500, r
    # Batches close after the linger time: about 50 records each.
    assert r["records"] / r["requests"] == pytest.approx(50, rel=0.1)
