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
