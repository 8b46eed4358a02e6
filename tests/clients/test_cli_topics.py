"""`flumen topics ...`, the real binary against a real broker: create (with configs, dry run),
list (table and --json, internal topics only with --internal), describe (partitions, offsets
after producing, the config overrides), alter (set and delete, checked with confluent-kafka's
AdminClient), add-partitions, delete-records, delete; and the broker's refusals, each printed
with Kafka's error name on stderr and a non-zero exit status. In a cluster, offsets and
DeleteRecords are asked of each partition's leader."""
import json
import subprocess
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType

from conftest import flumen_bin, free_port
from test_cluster import cluster_factory  # noqa: F401 (a fixture)
from util import watermarks


def topics(bootstrap, *args):
    return subprocess.run([flumen_bin(), "topics", "--bootstrap", bootstrap, *args],
                          capture_output=True, text=True, timeout=60)


def ok(bootstrap, *args):
    r = topics(bootstrap, *args)
    assert r.returncode == 0, f"flumen topics {' '.join(args)}: rc {r.returncode}\n" \
                              f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def ok_json(bootstrap, *args):
    return json.loads(ok(bootstrap, *args, "--json"))


def refused(bootstrap, *args):
    r = topics(bootstrap, *args)
    assert r.returncode != 0, f"flumen topics {' '.join(args)} succeeded:\n{r.stdout}"
    return r


def rows(out):
    """A table's lines split into cells (the tables have no spaces inside cells)."""
    return [line.split() for line in out.splitlines() if line.strip()]


def eventually(check, timeout=15, what="condition"):
    deadline = time.time() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def produce(bootstrap, topic, n, partition):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(n):
        p.produce(topic, b"v%d" % i, partition=partition)
    assert p.flush(30) == 0


def topic_configs(bootstrap, topic):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(30)


def partition_count(bootstrap, topic):
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def first_read(bootstrap, topic, partition, offset):
    """The offset of the first record read when starting at `offset` with
    auto.offset.reset=error, or the error."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli-" + uuid.uuid4().hex,
                  "auto.offset.reset": "error", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            return m.error() if m.error() else m.offset()
        raise AssertionError("nothing read")
    finally:
        c.close()


def test_create_list_describe(broker_factory):
    b = broker_factory(config={"default_partitions": 2})
    boot = b.bootstrap

    out = ok(boot, "create", "cli-a", "-p", "3", "-r", "1", "-c", "retention.ms=3600000",
             "--config", "max.message.bytes=2000000")
    assert rows(out) == [["TOPIC", "PARTITIONS", "REPLICAS", "STATUS"], ["cli-a", "3", "1", "OK"]]
    # -1 defaults: the broker's partition count (default_partitions) and replication factor.
    [made] = ok_json(boot, "create", "cli-b")
    assert made["name"] == "cli-b" and made["partitions"] == 2 and made["replication_factor"] == 1
    assert made["error"] is None and made["topic_id"]
    # A dry run creates nothing.
    out = ok(boot, "create", "cli-dry", "-p", "2", "--dry-run")
    assert "dry run" in out
    # --bootstrap also after the subcommand.
    r = subprocess.run([flumen_bin(), "topics", "list", "--bootstrap", boot],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    table = rows(r.stdout)
    assert table[0] == ["NAME", "PARTITIONS", "REPLICAS"]
    assert ["cli-a", "3", "1"] in table and ["cli-b", "2", "1"] in table
    assert not [t for t in table if t[0] == "cli-dry"]

    listed = {t["name"]: t for t in ok_json(boot, "list")}
    assert listed["cli-a"]["partitions"] == 3 and listed["cli-a"]["replication_factor"] == 1
    assert listed["cli-a"]["internal"] is False and listed["cli-a"]["error"] is None
    assert listed["cli-b"]["partitions"] == 2
    assert "cli-dry" not in listed

    produce(boot, "cli-a", 10, partition=1)
    d = ok_json(boot, "describe", "cli-a")
    assert d["name"] == "cli-a" and d["replication_factor"] == 1
    parts = d["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2]
    for p in parts:
        assert p["leader"] >= 0 and p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]]
        assert p["error"] is None
    assert [(p["log_start_offset"], p["high_watermark"]) for p in parts] == [(0, 0), (0, 10), (0, 0)]
    # Only the overrides, unless --all-configs.
    configs = {c["name"]: c for c in d["configs"]}
    assert set(configs) == {"retention.ms", "max.message.bytes"}, configs
    assert configs["retention.ms"]["value"] == "3600000"
    assert configs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    every = {c["name"]: c for c in ok_json(boot, "describe", "cli-a", "--all-configs")["configs"]}
    assert every["retention.ms"]["value"] == "3600000"
    assert "cleanup.policy" in every and every["cleanup.policy"]["source"] != "DYNAMIC_TOPIC_CONFIG"

    out = ok(boot, "describe", "cli-a")
    assert "SUMMARY" in out and "CONFIGS" in out and "PARTITIONS" in out
    table = rows(out)
    assert ["retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG"] in table
    header = ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "LOG-START-OFFSET", "HIGH-WATERMARK"]
    assert header in table
    p1 = next(r for r in table[table.index(header) + 1:] if r[0] == "1")
    assert p1[5:] == ["0", "10"], p1

    # Internal topics only with --internal: a consumer group's commit makes __consumer_offsets.
    c = Consumer({"bootstrap.servers": boot, "group.id": "cli-g", "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition("cli-a", 1, 5)], asynchronous=False)
    finally:
        c.close()
    names = [t["name"] for t in ok_json(boot, "list")]
    assert "__consumer_offsets" not in names
    internal = {t["name"]: t for t in ok_json(boot, "list", "--internal")}
    assert internal["__consumer_offsets"]["internal"] is True
    assert "__consumer_offsets" in ok(boot, "list", "-i")


def test_alter_and_add_partitions(broker):
    boot = broker.bootstrap
    ok(boot, "create", "cli-alt", "-p", "2")

    out = ok(boot, "alter", "cli-alt", "--set", "retention.ms=120000", "--set",
             "retention.bytes=1048576")
    assert rows(out) == [["TOPIC", "STATUS"], ["cli-alt", "OK"]]
    entries = topic_configs(boot, "cli-alt")
    assert entries["retention.ms"].value == "120000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["retention.bytes"].value == "1048576"

    # Delete one override and set another in one request.
    doc = ok_json(boot, "alter", "cli-alt", "--delete", "retention.ms", "--set", "segment.ms=600000")
    assert doc["error"] is None and doc["deleted"] == ["retention.ms"]
    entries = topic_configs(boot, "cli-alt")
    assert entries["retention.ms"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert entries["segment.ms"].value == "600000"
    assert entries["retention.bytes"].value == "1048576"
    overrides = {c["name"] for c in ok_json(boot, "describe", "cli-alt")["configs"]}
    assert overrides == {"segment.ms", "retention.bytes"}

    # A dry run changes nothing.
    ok(boot, "alter", "cli-alt", "--set", "retention.ms=1", "--dry-run")
    assert topic_configs(boot, "cli-alt")["retention.ms"].value != "1"
    r = refused(boot, "alter", "cli-alt")
    assert "nothing to change" in r.stderr

    out = ok(boot, "add-partitions", "cli-alt", "--count", "5")
    assert rows(out) == [["TOPIC", "PARTITIONS", "STATUS"], ["cli-alt", "5", "OK"]]
    eventually(lambda: partition_count(boot, "cli-alt") == 5, what="5 partitions in Metadata")
    d = ok_json(boot, "describe", "cli-alt")
    assert [p["partition"] for p in d["partitions"]] == [0, 1, 2, 3, 4]
    # Never shrinks.
    r = refused(boot, "add-partitions", "cli-alt", "--count", "3")
    assert "INVALID_PARTITIONS (37)" in r.stderr, r.stderr
    assert partition_count(boot, "cli-alt") == 5


def test_delete_records(broker):
    boot = broker.bootstrap
    ok(boot, "create", "cli-dr", "-p", "2")
    produce(boot, "cli-dr", 10, partition=0)

    [res] = ok_json(boot, "delete-records", "cli-dr", "--partition", "0", "--before", "4")
    assert res == {"topic": "cli-dr", "partition": 0, "low_watermark": 4, "error": None}, res
    assert watermarks(boot, "cli-dr", 0) == (4, 10)
    err = first_read(boot, "cli-dr", 0, 0)
    assert isinstance(err, KafkaError) and err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert first_read(boot, "cli-dr", 0, 4) == 4
    p0 = ok_json(boot, "describe", "cli-dr")["partitions"][0]
    assert (p0["log_start_offset"], p0["high_watermark"]) == (4, 10)

    # -1: everything up to the high watermark; the table form.
    out = ok(boot, "delete-records", "cli-dr", "-p", "0", "--before", "-1")
    assert rows(out) == [["TOPIC", "PARTITION", "LOW-WATERMARK", "STATUS"], ["cli-dr", "0", "10", "OK"]]
    assert watermarks(boot, "cli-dr", 0) == (10, 10)
    # Beyond the high watermark: OFFSET_OUT_OF_RANGE, the log start unmoved.
    r = refused(boot, "delete-records", "cli-dr", "-p", "0", "--before", "50")
    assert "OFFSET_OUT_OF_RANGE (1)" in r.stderr, r.stderr
    assert watermarks(boot, "cli-dr", 0) == (10, 10)
    r = refused(boot, "delete-records", "cli-dr", "-p", "7", "--before", "1")
    assert "no partition 7" in r.stderr, r.stderr


def test_delete(broker):
    boot = broker.bootstrap
    ok(boot, "create", "cli-d1", "cli-d2")
    out = ok(boot, "delete", "cli-d1", "cli-d2")
    assert rows(out) == [["TOPIC", "STATUS"], ["cli-d1", "OK"], ["cli-d2", "OK"]]
    eventually(lambda: not {"cli-d1", "cli-d2"} & {t["name"] for t in ok_json(boot, "list")},
               what="deleted topics gone from list")
    r = refused(boot, "delete", "cli-d1", "--json")
    [doc] = json.loads(r.stdout)
    assert doc["name"] == "cli-d1" and doc["error"]["name"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert "UNKNOWN_TOPIC_OR_PARTITION (3)" in r.stderr


def test_refusals(broker):
    boot = broker.bootstrap
    ok(boot, "create", "cli-e")
    r = refused(boot, "create", "cli-e")
    assert "TOPIC_ALREADY_EXISTS (36)" in r.stderr, r.stderr
    assert "TOPIC_ALREADY_EXISTS" in r.stdout  # the STATUS column
    # With --json the refusal is in the document too; still exit 1.
    r = refused(boot, "create", "cli-e", "--json")
    [doc] = json.loads(r.stdout)
    assert doc["error"]["code"] == 36 and doc["error"]["name"] == "TOPIC_ALREADY_EXISTS"
    # One refused, one created: both reported, exit 1.
    r = refused(boot, "create", "cli-e", "cli-e2")
    assert ["cli-e2", "1", "1", "OK"] in rows(r.stdout), r.stdout
    assert "cli-e2" not in r.stderr and "TOPIC_ALREADY_EXISTS" in r.stderr

    r = refused(boot, "alter", "cli-e", "--set", "no.such.config=1")
    assert "INVALID_CONFIG (40)" in r.stderr and "no.such.config" in r.stderr, r.stderr
    r = refused(boot, "create", "cli-bad", "-c", "retention.ms=soon")
    assert "INVALID_CONFIG (40)" in r.stderr, r.stderr
    r = refused(boot, "describe", "cli-missing")
    assert "UNKNOWN_TOPIC_OR_PARTITION (3)" in r.stderr, r.stderr
    r = refused(boot, "alter", "cli-missing", "--set", "retention.ms=1")
    assert "UNKNOWN_TOPIC_OR_PARTITION (3)" in r.stderr, r.stderr
    r = refused(boot, "add-partitions", "cli-missing", "--count", "3")
    assert "UNKNOWN_TOPIC_OR_PARTITION (3)" in r.stderr, r.stderr
    # Not Kafka's refusals: a bad argument, no broker.
    r = refused(boot, "create", "x", "-c", "novalue")
    assert "key=value" in r.stderr
    r = refused(f"127.0.0.1:{free_port()}", "list")
    assert "connecting to" in r.stderr


def test_cluster_leaders(cluster_factory):  # noqa: F811
    """Three brokers, the leaders spread: describe asks each partition's leader for its
    offsets and delete-records sends each partition to its leader (another broker would
    answer NOT_LEADER_OR_FOLLOWER)."""
    c = cluster_factory(3).start()
    boot = c.node(1).bootstrap
    [made] = ok_json(boot, "create", "cli-c", "-p", "3", "-r", "2")
    assert (made["partitions"], made["replication_factor"]) == (3, 2), made
    for p in range(3):
        produce(c.bootstrap(), "cli-c", 10 + p, partition=p)

    def described():
        d = ok_json(boot, "describe", "cli-c")
        return all(len(p["isr"]) == 2 for p in d["partitions"]) and d
    d = eventually(described, timeout=30, what="both replicas in sync")
    leaders = {p["leader"] for p in d["partitions"]}
    assert len(leaders) > 1, d  # spread, so some are not the bootstrap broker
    assert [(p["log_start_offset"], p["high_watermark"]) for p in d["partitions"]] == \
        [(0, 10), (0, 11), (0, 12)]
    assert ["cli-c", "3", "2"] in rows(ok(boot, "list"))

    res = ok_json(boot, "delete-records", "cli-c", "-p", "0,1,2", "--before", "5")
    assert [(r["partition"], r["low_watermark"], r["error"]) for r in res] == \
        [(0, 5, None), (1, 5, None), (2, 5, None)], res
    d = ok_json(boot, "describe", "cli-c")
    assert [(p["log_start_offset"], p["high_watermark"]) for p in d["partitions"]] == \
        [(5, 10), (5, 11), (5, 12)]
