"""Debian's kcat (librdkafka 2.0.2, which mis-skips tagged fields): produce with keys and
headers, consume back exactly, list metadata."""
import shutil
import subprocess

import pytest

from util import topic_name

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(*args, input=None, timeout=30):
    if KCAT is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    r = subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def test_kcat_round_trip_with_keys_and_headers(broker):
    topic = topic_name("kc")
    lines = "".join(f"key{i}:value {i}\n" for i in range(50))
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "app=flumen", "-H", "n=1",
         input=lines.encode())
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-f", "%p|%o|%k|%s|%h\n")
    rows = [l.split("|") for l in out.strip().split("\n")]
    assert rows == [["0", str(i), f"key{i}", f"value {i}", "app=flumen,n=1"] for i in range(50)]


def test_kcat_metadata(broker):
    topic = topic_name("kcm")
    kcat("-b", broker.bootstrap, "-P", "-t", topic, input=b"x\n")
    out = kcat("-b", broker.bootstrap, "-L", "-t", topic)
    assert f'topic "{topic}" with 1 partitions' in out
    assert "leader 0" in out
    assert f"broker 0 at {broker.bootstrap}" in out
