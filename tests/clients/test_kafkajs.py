"""kafkajs (Node): produce, consume in a group, commit, admin offsets (tests/js/roundtrip.js)."""
import shutil
import subprocess
from pathlib import Path

import pytest

from util import topic_name

JS = Path(__file__).resolve().parents[1] / "js"


def test_kafkajs_round_trip(broker_factory):
    if shutil.which("node") is None or not (JS / "node_modules" / "kafkajs").exists():
        pytest.fail("kafkajs missing: run `npm ci` in tests/js (.ci/run does)")
    b = broker_factory(shards=2)
    r = subprocess.run(["node", str(JS / "roundtrip.js"), b.bootstrap, topic_name("js")],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and r.stdout.startswith("OK 500"), r.stdout + r.stderr
