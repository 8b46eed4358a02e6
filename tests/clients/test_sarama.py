"""Go's Sarama as Debian 12 ships it (golang-github-shopify-sarama-dev 1.22.1), built in GOPATH
mode over /usr/share/gocode with no module proxy: tests/go/sarama_client.

Sarama 1.22 sends no ApiVersions: it picks request versions from Config.Version alone, and some
are fixed whatever that says. Its OffsetManager (also under a ConsumerGroup) commits with
OffsetCommit v1 (v2 only when Consumer.Offsets.Retention is set) and reads with OffsetFetch v1;
FindCoordinator is v0, JoinGroup v1, SyncGroup, Heartbeat and LeaveGroup v0;
ClusterAdmin.ListTopics sends Metadata v0 then DescribeConfigs v0. Kafka 3.9 answers all of
them. Config.Version is 0.11.0.0 or later here: below it Sarama produces and fetches message
sets of magic 0/1 (Produce v0-v2, Fetch v0-v3), which would need message-format conversion, and
its ClusterAdmin refuses DescribeConfigs itself."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from util import create_topic, topic_name

SRC = Path(__file__).resolve().parents[1] / "go" / "sarama_client"
GOPATH = "/usr/share/gocode"


@pytest.fixture(scope="session")
def sarama_bin(tmp_path_factory):
    """The Sarama client, built once per session. Skipped only when Go is not installed; a
    failed build (e.g. Debian's Sarama missing) fails."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (apt-get install golang-go golang-github-shopify-sarama-dev)")
    out = tmp_path_factory.mktemp("sarama")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    # GOPATH mode over Debian's packaged sources: no module, no proxy, no network.
    env.update(GO111MODULE="off", GOPATH=GOPATH, GOPROXY="off", GOCACHE=str(out / "cache"))
    started = time.time()
    r = subprocess.run([go, "build", "-o", str(out / "sarama_client"), "."], cwd=SRC, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.fail(f"go build of {SRC} failed (is golang-github-shopify-sarama-dev installed "
                    f"in {GOPATH}?):\n{r.stderr}")
    print(f"sarama_client built in {time.time() - started:.1f}s")
    return str(out / "sarama_client")


def sarama(bin_, broker, cmd, version="0.11.0.0", **flags):
    """Runs one subcommand against `broker`; its JSON output. version None: Sarama's default
    Config.Version (0.8.2.0)."""
    args = [bin_, cmd, "-brokers", broker.bootstrap]
    if version is not None:
        args += ["-version", version]
    for k, v in flags.items():
        args += [f"-{k}", str(v)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"sarama_client {cmd} failed: {r.stderr.strip()}"
    return json.loads(r.stdout)


def confluent_committed(bootstrap, group, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        return c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    finally:
        c.close()


@pytest.mark.parametrize("version,mode", [("0.11.0.0", "manager"), ("2.2.0", "group")])
def test_sarama_group_commits_are_kept(broker, sarama_bin, version, mode):
    """Sarama produces 20 messages, reads them as a group, marks and commits them (OffsetCommit
    v1, whatever Config.Version says), and the commit is kept: Sarama's own OffsetFetch v1 (also
    with Sarama's default Config.Version) and confluent-kafka's committed() read 20, and the
    group's next run resumes at 20. Both ways Sarama 1.22 commits: the plain Consumer with an
    OffsetManager (generation -1, no member id) at the oldest Config.Version that needs no
    message-format conversion, and a ConsumerGroup session at the newest version Sarama 1.22
    knows."""
    topic = create_topic(broker.bootstrap, topic_name("sarama"))
    group = "sarama-" + topic
    out = sarama(sarama_bin, broker, "produce", version, topic=topic, n=20)
    assert out["offsets"] == [{"partition": 0, "offset": i} for i in range(20)]

    out = sarama(sarama_bin, broker, "group", version, topic=topic, group=group, n=20,
                 mode=mode)
    assert out["mode"] == mode
    assert out["messages"] == [{"partition": 0, "offset": i, "key": f"k{i}",
                                "value": f"sarama-{i}"} for i in range(20)]

    for v in (version, None):
        out = sarama(sarama_bin, broker, "committed", v, topic=topic, group=group)
        assert out["committed"] == {"0": 20}, (v, out)
    assert confluent_committed(broker.bootstrap, group, topic) == 20

    # The group's next run starts where the commit says, and commits again.
    sarama(sarama_bin, broker, "produce", version, topic=topic, n=5)
    out = sarama(sarama_bin, broker, "group", version, topic=topic, group=group, n=5, mode=mode)
    assert [m["offset"] for m in out["messages"]] == list(range(20, 25))
    out = sarama(sarama_bin, broker, "committed", version, topic=topic, group=group)
    assert out["committed"] == {"0": 25}
    assert confluent_committed(broker.bootstrap, group, topic) == 25


@pytest.mark.parametrize("version", ["0.11.0.0", "2.2.0"])
def test_sarama_list_topics(broker, sarama_bin, version):
    """ClusterAdmin.ListTopics (Metadata v0, then one DescribeConfigs v0 for every topic) lists
    a topic with its partitions, replication factor and its non-default config."""
    topic = create_topic(broker.bootstrap, topic_name("sarama-lt"), partitions=3,
                         config={"retention.ms": "60000"})
    out = sarama(sarama_bin, broker, "topics", version)
    assert topic in out["topics"], out
    t = out["topics"][topic]
    assert (t["partitions"], t["replication_factor"]) == (3, 1)
    assert t["configs"].get("retention.ms") == "60000", t
