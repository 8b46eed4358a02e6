"""Debian's kcat (librdkafka 2.0.2, which mis-skips tagged fields): produce with keys and
headers, consume back exactly, list metadata."""
import shutil
import subprocess

import pytest

import rawkafka as rk
from util import topic_name

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def kcat(*args, input=None, timeout=30):
    if KCAT is None:
        pytest.fail("kcat is not installed (apt-get install kcat)")
    r = subprocess.run([KCAT, *args], input=input, capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_round_trip_with_keys_and_headers(broker, codec):
    topic = topic_name("kc")
    lines = "".join(f"key{i}:value {i}\n" for i in range(50))
    kcat("-b", broker.bootstrap, "-P", "-t", topic, "-K:", "-H", "app=flumen", "-H", "n=1",
         "-z", codec, input=lines.encode())
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic, "-e", "-f", "%p|%o|%k|%s|%h\n")
    rows = [l.split("|") for l in out.strip().split("\n")]
    assert rows == [["0", str(i), f"key{i}", f"value {i}", "app=flumen,n=1"] for i in range(50)]
    # The batches were stored as kcat compressed them, and fetched intact.
    err, hw, recs = rk.fetch_once(broker.bootstrap, topic, 0, 0)
    batches = rk.parse_batches(recs)
    assert (err, hw) == (0, 50) and batches and all(b["crc_ok"] for b in batches)
    # librdkafka 2.0.2 compresses gzip, snappy and lz4 only if ApiVersions lists Produce v0
    # (librdkafka issue 4956); otherwise it logs "Broker does not support compression type" and
    # sends them uncompressed. Kafka 4 dropped Produce v0-v2 yet still lists them for this
    # reason (KAFKA-18659) while refusing such requests.
    # librdkafka sends a batch uncompressed when compressing would not make it smaller (a
    # lone small record can come first), so codec 0 may appear beside the asked one.
    stored = {b["codec"] for b in batches}
    assert CODECS[codec] in stored and stored <= {0, CODECS[codec]}, \
        f"kcat -z {codec} was stored as codec {sorted(stored)}"


def test_kcat_metadata(broker):
    topic = topic_name("kcm")
    kcat("-b", broker.bootstrap, "-P", "-t", topic, input=b"x\n")
    out = kcat("-b", broker.bootstrap, "-L", "-t", topic)
    assert f'topic "{topic}" with 1 partitions' in out
    assert "leader 0" in out
    assert f"broker 0 at {broker.bootstrap}" in out


def test_api_versions_v3_writes_no_default_tagged_fields(broker):
    """librdkafka before 2.2.0 mis-skips tagged fields: a v3 answer carrying SupportedFeatures,
    FinalizedFeaturesEpoch, FinalizedFeatures or ZkMigrationReady at their defaults breaks it
    ("ApiVersionRequest failed: Local: Read underflow"). Flumen has none to report."""
    s = rk.connect(broker.bootstrap)
    s.sendall(rk.api_versions_v3(corr=33))
    data = rk.read_frame(s)
    s.close()
    assert data is not None
    corr, err, keys, per_api, throttle, tags = rk.parse_api_versions_v3(data)
    assert (corr, err, throttle) == (33, 0, 0)
    assert keys[18] == (0, 3) and 0 in keys and 1 in keys
    assert set(per_api) == {0}
    assert tags == [], f"top-level tagged fields written: {tags}"
