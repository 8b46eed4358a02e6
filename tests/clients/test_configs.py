"""DescribeConfigs with confluent-kafka's and kafka-python's admin clients: a topic's override
and the broker's values, each with Kafka's source, read-only flag and type."""
import time

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType

from test_cluster import cluster_factory, create  # noqa: F401
from util import wait_until, watermarks


def test_describe_topic_and_broker_configs(broker_factory):
    b = broker_factory(config={"retention_ms": 3600000, "default_partitions": 2})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("cfg", 1, 1, config={"retention.ms": "60000"})])["cfg"].result(30)
    res = ConfigResource(ResourceType.TOPIC, "cfg")
    entries = admin.describe_configs([res])[res].result(30)
    assert entries["retention.ms"].value == "60000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not entries["retention.ms"].is_read_only
    # Not set on the topic: the broker's value, from its config file (retention_ms here) or
    # its built-in default.
    assert entries["retention.bytes"].value == "-1"
    assert entries["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert entries["cleanup.policy"].value == "delete"
    assert not entries["max.message.bytes"].is_read_only
    # A broker's own configs under Kafka's names.
    br = ConfigResource(ResourceType.BROKER, "0")
    entries = admin.describe_configs([br])[br].result(30)
    assert entries["log.retention.ms"].value == "3600000"
    assert entries["num.partitions"].value == "2"
    assert entries["num.partitions"].is_read_only
    assert entries["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["log.segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert not entries["log.retention.ms"].is_read_only
    # Unknown topic: its own error, not a failed request.
    missing = ConfigResource(ResourceType.TOPIC, "nope")
    with pytest.raises(Exception) as e:
        admin.describe_configs([missing])[missing].result(30)
    assert "UNKNOWN_TOPIC_OR_PART" in str(e.value) or "does not exist" in str(e.value)
    # kafka-python's admin client speaks another version of the API.
    from kafka.admin import KafkaAdminClient, ConfigResource as KRes, ConfigResourceType
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    r = k.describe_configs([KRes(ConfigResourceType.TOPIC, "cfg")])
    text = str(r)
    assert "retention.ms" in text and "60000" in text, text
    k.close()


def incremental(admin, topic, ops, validate_only=False, kind=ResourceType.TOPIC):
    """IncrementalAlterConfigs of one resource (a topic, or with `kind` BROKER a broker's own
    dynamic configs) with confluent-kafka: ops is [(name, op, value)]."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    kinds = {"set": AlterConfigOpType.SET, "delete": AlterConfigOpType.DELETE,
             "append": AlterConfigOpType.APPEND, "subtract": AlterConfigOpType.SUBTRACT}
    res = ConfigResource(kind, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=kinds[op]) for name, op, value in ops])
    return admin.incremental_alter_configs([res], validate_only=validate_only)[res].result(30)


OPS = {"set": 0, "delete": 1, "append": 2, "subtract": 3}
CODES = {0: "NONE", 40: "INVALID_CONFIG", 42: "INVALID_REQUEST"}


def cluster_defaults(bootstrap, ops, validate_only=False):
    """IncrementalAlterConfigs of the cluster's broker defaults (the BROKER resource "",
    sent raw: see rawkafka.incremental_alter_configs); raises naming the error code."""
    import rawkafka
    code, message = rawkafka.incremental_alter_configs(
        bootstrap, 4, "", [(k, OPS[op], v) for k, op, v in ops], validate_only)
    if code:
        raise Exception(f"{CODES.get(code, code)}: {message}")


def incremental_broker(admin, broker, ops, validate_only=False):
    """IncrementalAlterConfigs of a broker's own dynamic configs (confluent-kafka)."""
    return incremental(admin, broker, ops, validate_only, kind=ResourceType.BROKER)


def describe(admin, topic, kind=ResourceType.TOPIC):
    res = ConfigResource(kind, topic)
    return admin.describe_configs([res])[res].result(30)


def produce_read(bootstrap, topic, ts, partition=0):
    """Produces one record with CreateTime `ts` and reads it back: (timestamp type, timestamp)."""
    import time
    from confluent_kafka import Consumer, Producer, TopicPartition
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.produce(topic, b"v", timestamp=ts, partition=partition)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ts-read", "enable.auto.commit": False})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    c.assign([TopicPartition(topic, partition, hi - 1)])
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(1.0)
            if m is not None and not m.error():
                return m.timestamp()
        raise AssertionError(f"record {hi - 1} of {topic} not read back")
    finally:
        c.close()


def test_alter_configs_take_effect_at_once_and_persist(broker_factory):
    """IncrementalAlterConfigs and AlterConfigs (confluent-kafka, kafka-python): a topic's
    overrides change without a restart (the next write uses the new message.timestamp.type),
    DescribeConfigs shows them with their source, a restart keeps them; bad changes get
    INVALID_CONFIG naming the config and change nothing."""
    import time
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
    b = broker_factory()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("alt", 1, 1, config={"retention.ms": "600000"})])["alt"].result(30)
    assert produce_read(b.bootstrap, "alt", 1000) == (TIMESTAMP_CREATE_TIME, 1000)

    incremental(admin, "alt", [("message.timestamp.type", "set", "LogAppendTime"),
                               ("retention.ms", "delete", None),
                               ("retention.bytes", "set", "1073741824")])
    e = describe(admin, "alt")
    assert e["message.timestamp.type"].value == "LogAppendTime"
    assert e["message.timestamp.type"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert e["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert e["retention.bytes"].value == "1073741824"
    kind, ts = produce_read(b.bootstrap, "alt", 1000)
    assert kind == TIMESTAMP_LOG_APPEND_TIME and abs(ts / 1000 - time.time()) < 60, (kind, ts)

    # Refused, and nothing of the request applied (the valid SET beside the bad one neither).
    bad = [
        [("no.such.config", "set", "1")],
        [("retention.ms", "set", "soon")],
        [("segment.bytes", "set", "100")],
        [("retention.ms", "append", "5")],
        [("segment.ms", "set", "60000"), ("min.insync.replicas", "set", "0")],
    ]
    for ops in bad:
        with pytest.raises(Exception) as err:
            incremental(admin, "alt", ops)
        assert "INVALID_CONFIG" in str(err.value), (ops, err.value)
        assert ops[-1][0] in str(err.value), (ops, err.value)
    assert describe(admin, "alt")["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    # validate_only checks and changes nothing.
    incremental(admin, "alt", [("segment.ms", "set", "60000")], validate_only=True)
    assert describe(admin, "alt")["segment.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    with pytest.raises(Exception) as err:
        incremental(admin, "missing", [("retention.ms", "set", "1")])
    assert "UNKNOWN_TOPIC" in str(err.value) or "does not exist" in str(err.value)
    # A broker config only a restart changes: a clear error, not a closed connection.
    with pytest.raises(Exception) as err:
        incremental_broker(admin, "0", [("num.partitions", "set", "3")])
    assert "INVALID_REQUEST" in str(err.value) and "num.partitions" in str(err.value), err.value

    # Kept across a restart, and in force on the reopened partition.
    b.restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert describe(admin, "alt")["message.timestamp.type"].value == "LogAppendTime"
    assert produce_read(b.bootstrap, "alt", 1000)[0] == TIMESTAMP_LOG_APPEND_TIME

    # AlterConfigs: the configs given replace every override (confluent-kafka's alter_configs).
    res = ConfigResource(ResourceType.TOPIC, "alt", set_config={"retention.ms": "7200000"})
    admin.alter_configs([res])[res].result(30)
    e = describe(admin, "alt")
    assert e["retention.ms"].value == "7200000"
    assert e["message.timestamp.type"].source == ConfigSource.DEFAULT_CONFIG.value
    assert e["retention.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
    assert produce_read(b.bootstrap, "alt", 1000) == (TIMESTAMP_CREATE_TIME, 1000)
    # kafka-python's AlterConfigs (it describes first and sends the other overrides along).
    from kafka.admin import ConfigResource as KRes, ConfigResourceType, KafkaAdminClient
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    r = k.alter_configs([KRes(ConfigResourceType.TOPIC, "alt", configs={"segment.ms": "3600000"})],
                        incremental=False)
    k.close()
    e = describe(admin, "alt")
    assert e["segment.ms"].value == "3600000", r
    assert e["retention.ms"].value == "7200000", r


# Every topic config Kafka 3.9 documents, at Kafka's default value (what tools such as Kafka
# Connect and MirrorMaker write when they create topics).
KAFKA_TOPIC_DEFAULTS = {
    "cleanup.policy": "delete", "compression.type": "producer", "delete.retention.ms": "86400000",
    "file.delete.delay.ms": "60000", "flush.messages": "9223372036854775807",
    "flush.ms": "9223372036854775807", "follower.replication.throttled.replicas": "",
    "index.interval.bytes": "4096", "leader.replication.throttled.replicas": "",
    "local.retention.bytes": "-2", "local.retention.ms": "-2",
    "max.compaction.lag.ms": "9223372036854775807", "max.message.bytes": "1048588",
    "message.downconversion.enable": "true", "message.format.version": "3.0-IV1",
    "message.timestamp.after.max.ms": "9223372036854775807",
    "message.timestamp.before.max.ms": "9223372036854775807",
    "message.timestamp.difference.max.ms": "9223372036854775807",
    "message.timestamp.type": "CreateTime", "min.cleanable.dirty.ratio": "0.5",
    "min.compaction.lag.ms": "0", "min.insync.replicas": "1", "preallocate": "false",
    "remote.storage.enable": "false", "retention.bytes": "-1", "retention.ms": "604800000",
    "segment.bytes": "1073741824", "segment.index.bytes": "10485760", "segment.jitter.ms": "0",
    "segment.ms": "604800000", "unclean.leader.election.enable": "false",
}


def test_every_kafka_topic_config_is_accepted_or_refused_with_the_reason(broker_factory):
    """CreateTopics with every topic config Kafka documents, at Kafka's defaults: accepted
    (honoured, or kept as a documented no-op). Values Flumen cannot honour are refused with
    INVALID_CONFIG saying why; max.message.bytes and message.timestamp.before.max.ms are
    enforced on produce (MESSAGE_TOO_LARGE, INVALID_TIMESTAMP) and the rest of the topic works."""
    import time
    from confluent_kafka import KafkaError, Producer
    b = broker_factory()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("all-cfg", 1, 1, config=KAFKA_TOPIC_DEFAULTS)])["all-cfg"].result(30)
    e = describe(admin, "all-cfg")
    assert {k: e[k].value for k in KAFKA_TOPIC_DEFAULTS} == KAFKA_TOPIC_DEFAULTS
    for name, value, why in [("cleanup.policy", "shred", "not one of"),
                             ("remote.storage.enable", "true", "tiered storage"),
                             ("compression.type", "brotli", "one of"),
                             ("leader.replication.throttled.replicas", "0:1", "throttling"),
                             ("message.format.version", "2.8", "v2"),
                             ("min.cleanable.dirty.ratio", "1.5", "[0, 1]"),
                             ("retention.bytes", "-5", ">= -1")]:
        t = "bad-" + name.replace(".", "-")
        with pytest.raises(Exception) as err:
            admin.create_topics([NewTopic(t, 1, 1, config={name: value})])[t].result(30)
        text = str(err.value)
        assert "INVALID_CONFIG" in text and name in text and why in text, text

    admin.create_topics([NewTopic("limits", 1, 1, config={
        "max.message.bytes": "2000", "message.timestamp.before.max.ms": "3600000"})])["limits"].result(30)
    outcome = {}

    def deliver(value, **kw):
        p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "retries": 0,
                      "message.max.bytes": 100000})
        p.produce("limits", value, partition=0, on_delivery=lambda err, m: outcome.update(err=err), **kw)
        p.flush(30)
        return outcome["err"]

    err = deliver(b"x" * 5000)
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    err = deliver(b"old", timestamp=int(time.time() * 1000) - 2 * 86400 * 1000)
    assert err is not None and err.code() == KafkaError.INVALID_TIMESTAMP, err
    assert deliver(b"y" * 1000) is None
    # Raised at run time: the large batch goes in.
    incremental(admin, "limits", [("max.message.bytes", "set", "10000")])
    assert deliver(b"x" * 5000) is None


def test_compression_type_recompresses_what_producers_send(broker_factory):
    """compression.type=zstd: batches sent uncompressed or lz4 are stored as zstd, with the
    same records (read back by confluent-kafka); `producer` (the default) stores them as sent;
    altered at run time, the next batches follow the new codec."""
    import rawkafka
    from confluent_kafka import Producer
    from util import read_all
    b = broker_factory()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("zt", 1, 1, config={"compression.type": "zstd"})])["zt"].result(30)
    sent = []
    for codec in ["none", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": b.bootstrap, "compression.type": codec, "linger.ms": 20})
        for i in range(50):
            v = (f"{codec}-{i}-" + "x" * 200).encode()
            p.produce("zt", key=b"k%d" % i, value=v, partition=0)
            sent.append(v)
        assert p.flush(15) == 0
    err, _hw, blob = rawkafka.fetch_once(b.bootstrap, "zt", 0, 0)
    assert err == 0
    codecs = {bt["codec"] for bt in rawkafka.parse_batches(blob)}
    assert codecs == {4}, codecs
    assert [m.value() for m in read_all(b.bootstrap, "zt", 1)[0]] == sent
    # Back to `producer`: an lz4 batch stays lz4.
    res = ConfigResource(ResourceType.TOPIC, "zt", set_config={"compression.type": "producer"})
    admin.alter_configs([res])[res].result(30)
    time.sleep(0.5)
    p = Producer({"bootstrap.servers": b.bootstrap, "compression.type": "lz4", "linger.ms": 20})
    p.produce("zt", key=b"last", value=b"lz4 kept " * 100, partition=0)
    assert p.flush(15) == 0
    err, _hw, blob = rawkafka.fetch_once(b.bootstrap, "zt", 0, 150)
    assert [bt["codec"] for bt in rawkafka.parse_batches(blob)] == [3]


def test_dynamic_broker_configs_take_effect_persist_and_give_way_to_topics(broker_factory):
    """IncrementalAlterConfigs on the broker resources: the cluster's defaults ("") and a
    broker's own ("0") change what every topic without an override gets, at once and on
    open partitions (the next write's timestamp type, retention of an existing log), in
    that order of precedence under the topic's own override; DescribeConfigs reports each
    source with its synonyms; a restart keeps them; DELETE goes back to the config file."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Producer
    b = broker_factory(config={"retention_check_interval_ms": 200, "log_cleaner_backoff_ms": 100})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    made = admin.create_topics([NewTopic("plain", 1, 1), NewTopic("own", 1, 1, config={
        "message.timestamp.type": "CreateTime"})])
    for f in made.values():
        f.result(30)
    assert produce_read(b.bootstrap, "plain", 1000) == (TIMESTAMP_CREATE_TIME, 1000)

    cluster_defaults(b.bootstrap, [("log.message.timestamp.type", "set", "LogAppendTime")])
    assert produce_read(b.bootstrap, "plain", 1000)[0] == TIMESTAMP_LOG_APPEND_TIME
    # The topic's own override wins.
    assert produce_read(b.bootstrap, "own", 1000) == (TIMESTAMP_CREATE_TIME, 1000)
    e = describe(admin, "plain")["message.timestamp.type"]
    assert (e.value, e.source) == ("LogAppendTime", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    e = describe(admin, "0", ResourceType.BROKER)["log.message.timestamp.type"]
    assert (e.value, e.source) == ("LogAppendTime", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)

    # The broker's own value over the cluster's.
    incremental_broker(admin, "0", [("log.message.timestamp.type", "set", "CreateTime")])
    assert produce_read(b.bootstrap, "plain", 1000) == (TIMESTAMP_CREATE_TIME, 1000)
    e = describe(admin, "0", ResourceType.BROKER)["log.message.timestamp.type"]
    assert (e.value, e.source, e.is_read_only) == ("CreateTime", ConfigSource.DYNAMIC_BROKER_CONFIG.value, False)

    # Retention of a partition already open: the cluster's segment size and retention size
    # apply to it without a restart, so its oldest segments go.
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
    for i in range(3000):
        p.produce("plain", b"x" * 1000, partition=0)
    assert p.flush(30) == 0
    assert watermarks(b.bootstrap, "plain", 0)[0] == 0
    cluster_defaults(b.bootstrap, [("log.segment.bytes", "set", "65536"),
                                   ("log.retention.bytes", "set", "262144")])
    for i in range(3000):
        p.produce("plain", b"y" * 1000, partition=0)
    assert p.flush(30) == 0
    wait_until(lambda: watermarks(b.bootstrap, "plain", 0)[0] > 0, 30,
               "retention of plain-0 under the cluster's new log.retention.bytes")

    # Refused with the Kafka code and the config's name, and nothing of the request applied.
    bad = [
        ([("log.retention.ms", "set", "soon")], "INVALID_CONFIG"),
        ([("log.retention.ms", "set", "5"), ("no.such.config", "set", "1")], "INVALID_CONFIG"),
        ([("retention.ms", "set", "5")], "INVALID_CONFIG"),
        ([("log.segment.bytes", "set", "100")], "INVALID_CONFIG"),
        ([("log.retention.ms", "append", "5")], "INVALID_CONFIG"),
        ([("node.id", "set", "5")], "INVALID_REQUEST"),
    ]
    for ops, code in bad:
        with pytest.raises(Exception) as err:
            cluster_defaults(b.bootstrap, ops)
        assert code in str(err.value) and ops[-1][0] in str(err.value), (ops, err.value)
    unset = lambda: describe(admin, "0", ResourceType.BROKER)["log.retention.ms"].source \
        == ConfigSource.DEFAULT_CONFIG.value  # noqa: E731
    assert unset()
    # validate_only changes nothing.
    cluster_defaults(b.bootstrap, [("log.retention.ms", "set", "5")], validate_only=True)
    assert unset()

    # Kept across a restart.
    b.restart()
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    assert describe(admin, "plain")["segment.bytes"].value == "65536"
    assert produce_read(b.bootstrap, "plain", 1000) == (TIMESTAMP_CREATE_TIME, 1000)
    # DELETE: back to the next layer (the cluster's), then to the config file's.
    incremental_broker(admin, "0", [("log.message.timestamp.type", "delete", None)])
    assert produce_read(b.bootstrap, "plain", 1000)[0] == TIMESTAMP_LOG_APPEND_TIME
    cluster_defaults(b.bootstrap, [("log.message.timestamp.type", "delete", None),
                                   ("log.segment.bytes", "delete", None),
                                   ("log.retention.bytes", "delete", None)])
    assert produce_read(b.bootstrap, "plain", 1000) == (TIMESTAMP_CREATE_TIME, 1000)
    dynamic = (ConfigSource.DYNAMIC_BROKER_CONFIG.value, ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
    assert not [k for k, e in describe(admin, "0", ResourceType.BROKER).items() if e.source in dynamic]

    # kafka-python: alter (it checks the name against the broker's writable configs first),
    # the modified configs with their synonyms, reset.
    from kafka.admin import KafkaAdminClient, ConfigResource as KRes, ConfigResourceType
    k = KafkaAdminClient(bootstrap_servers=b.bootstrap)
    res = KRes(ConfigResourceType.BROKER, "0", configs={"log.retention.ms": "7200000"})
    assert k.alter_configs([res]) == {"broker": {"0": "OK"}}
    modified = lambda: k.describe_configs(  # noqa: E731
        [KRes(ConfigResourceType.BROKER, "0")], include_synonyms=True)["broker"]["0"]
    got = modified()["log.retention.ms"]
    assert (got["value"], got["config_source"]) == ("7200000", "DYNAMIC_BROKER_CONFIG"), got
    assert [x["source"] for x in got["synonyms"]] == ["DYNAMIC_BROKER_CONFIG", "DEFAULT_CONFIG"]
    k.reset_configs([KRes(ConfigResourceType.BROKER, "0", configs=["log.retention.ms"])])
    assert modified() == {}
    k.close()
    assert describe(admin, "plain")["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value


def test_dynamic_broker_configs_reach_every_broker_of_a_cluster(cluster_factory):
    """In a cluster the dynamic broker configs are metadata: set through one broker, the
    cluster's defaults are in force on every leader, and a broker's own on that broker
    alone."""
    from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
    c = cluster_factory(3).start()
    create(c.node(1).bootstrap, "dyn", 3, assignment=[[1, 2, 3], [2, 3, 1], [3, 1, 2]])
    admin = AdminClient({"bootstrap.servers": c.node(1).bootstrap})
    cluster_defaults(c.node(1).bootstrap, [("log.message.timestamp.type", "set", "LogAppendTime")])
    incremental_broker(admin, "2", [("log.message.timestamp.type", "set", "CreateTime")])
    # Partition p is led by broker p + 1.
    kinds = [produce_read(c.bootstrap(), "dyn", 1000, partition=p)[0] for p in range(3)]
    assert kinds == [TIMESTAMP_LOG_APPEND_TIME, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME]
    other = AdminClient({"bootstrap.servers": c.node(3).bootstrap})
    e = describe(other, "3", ResourceType.BROKER)["log.message.timestamp.type"]
    assert (e.value, e.source) == ("LogAppendTime", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value)
