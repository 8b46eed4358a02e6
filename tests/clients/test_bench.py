"""`flumen bench produce` against the real broker: what it reports is what the broker holds."""
import json
import subprocess

import pytest

from conftest import flumen_bin
from util import read_all, topic_name, wait_until, watermarks


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
