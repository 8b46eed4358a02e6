"""kafkajs (Node): admin createTopics, produce with keys and headers, consume in a group,
commit, admin offsets (tests/js/roundtrip.js); then an independent read-back with
confluent-kafka (assign, no group) of exactly what kafkajs wrote."""
import shutil
import subprocess
from pathlib import Path

import pytest

from util import read_all, topic_name

JS = Path(__file__).resolve().parents[1] / "js"


def test_kafkajs_round_trip(broker_factory):
    if shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs missing: run `npm ci` in tests/js (.ci/run does)")
    b = broker_factory(shards=2)
    topic = topic_name("js")
    r = subprocess.run(["node", str(JS / "roundtrip.js"), b.bootstrap, topic],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and r.stdout.startswith("OK 500"), r.stdout + r.stderr
    # What kafkajs wrote (roundtrip.js: record i = key k<i>, value v<i>, header seq=<i>, create
    # time 1700000000000 + i, to partition i % 3), read back without kafkajs and without a group.
    got = read_all(b.bootstrap, topic, 3)
    for part in range(3):
        expect = [(j, b"k%d" % i, b"v%d" % i, [("seq", b"%d" % i)], (1, 1_700_000_000_000 + i))
                  for j, i in enumerate(range(part, 500, 3))]
        assert [(m.offset(), m.key(), m.value(), m.headers(), m.timestamp())
                for m in got[part]] == expect


def test_kafkajs_admin_configs_partitions_records(broker):
    """kafkajs admin (tests/js/admin.js): DescribeConfigs, AlterConfigs replacing the
    overrides, an invalid value refused with INVALID_CONFIG, CreatePartitions, DeleteRecords
    (low watermark 6 of 10), DeleteTopics."""
    if shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs missing: run `npm ci` in tests/js (.ci/run does)")
    r = subprocess.run(["node", str(JS / "admin.js"), broker.bootstrap, topic_name("jsadmin")],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
