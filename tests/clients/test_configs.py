"""DescribeConfigs with confluent-kafka's and kafka-python's admin clients: a topic's override
and the broker's values, each with Kafka's source, read-only flag and type."""
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, ResourceType


def test_describe_topic_and_broker_configs(broker_factory):
    b = broker_factory(config={"retention_ms": 3600000, "default_partitions": 2})
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic("cfg", 1, 1, config={"retention.ms": "60000"})])["cfg"].result(30)
    res = ConfigResource(ResourceType.TOPIC, "cfg")
    entries = admin.describe_configs([res])[res].result(30)
    assert entries["retention.ms"].value == "60000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert not entries["retention.ms"].is_read_only
    # Not set on the topic: the broker's value (retention_ms from its config file here).
    assert entries["retention.bytes"].value == "-1"
    assert entries["retention.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert entries["cleanup.policy"].value == "delete"
    assert entries["max.message.bytes"].is_read_only
    # A broker's own configs under Kafka's names.
    br = ConfigResource(ResourceType.BROKER, "0")
    entries = admin.describe_configs([br])[br].result(30)
    assert entries["log.retention.ms"].value == "3600000"
    assert entries["num.partitions"].value == "2"
    assert entries["num.partitions"].is_read_only
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


def incremental(admin, topic, ops, validate_only=False):
    """IncrementalAlterConfigs of one topic with confluent-kafka: ops is [(name, op, value)]."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    kinds = {"set": AlterConfigOpType.SET, "delete": AlterConfigOpType.DELETE,
             "append": AlterConfigOpType.APPEND, "subtract": AlterConfigOpType.SUBTRACT}
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(name, value, incremental_operation=kinds[op]) for name, op, value in ops])
    return admin.incremental_alter_configs([res], validate_only=validate_only)[res].result(30)


def describe(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(30)


def produce_read(bootstrap, topic, ts):
    """Produces one record with CreateTime `ts` and reads it back: (timestamp type, timestamp)."""
    import time
    from confluent_kafka import Consumer, Producer, TopicPartition
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    p.produce(topic, b"v", timestamp=ts, partition=0)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ts-read", "enable.auto.commit": False})
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, hi - 1)])
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
    assert e["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
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
    assert describe(admin, "alt")["segment.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    # validate_only checks and changes nothing.
    incremental(admin, "alt", [("segment.ms", "set", "60000")], validate_only=True)
    assert describe(admin, "alt")["segment.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    with pytest.raises(Exception) as err:
        incremental(admin, "missing", [("retention.ms", "set", "1")])
    assert "UNKNOWN_TOPIC" in str(err.value) or "does not exist" in str(err.value)
    # Broker configs are static: a clear error, not a closed connection.
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    br = ConfigResource(ResourceType.BROKER, "0", incremental_configs=[
        ConfigEntry("log.retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception) as err:
        admin.incremental_alter_configs([br])[br].result(30)
    assert "static" in str(err.value), err.value

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
    assert e["message.timestamp.type"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert e["retention.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
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
