"""The transaction admin APIs with kafka-python's admin client (what kafka-transactions.sh
does): ListTransactions, DescribeTransactions and DescribeProducers show an open
transaction, its partitions, its producer and where it started in the log; after the
commit the state moves on and the filters select it."""
import pytest
from confluent_kafka import Producer
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

from util import create_topic, topic_name


def test_open_transaction_is_listed_described_and_its_producer_shown(broker):
    topic = create_topic(broker.bootstrap, topic_name("txadmin"), 2)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(3):
        plain.produce(topic, b"before-%d" % i, partition=1)
    assert plain.flush(30) == 0
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-admin-1",
                  "transaction.timeout.ms": 30000})
    p.init_transactions()
    p.begin_transaction()
    p.produce(topic, b"inside", partition=1)
    assert p.flush(30) == 0
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        [listed] = admin.list_transactions().values()
        ours = [t for t in listed if t.transactional_id == "tx-admin-1"]
        assert len(ours) == 1 and ours[0].state.value == "Ongoing", listed
        pid = ours[0].producer_id

        d = admin.describe_transactions(["tx-admin-1"])["tx-admin-1"]
        assert d.state.value == "Ongoing" and d.producer_id == pid, d
        assert d.transaction_timeout_ms == 30000
        assert d.topic_partitions == {TopicPartition(topic, 1)}, d
        assert d.transaction_start_time_ms > 0

        states = admin.describe_producers([TopicPartition(topic, 1), TopicPartition(topic, 0)])
        [prod] = [x for x in states[TopicPartition(topic, 1)].active_producers if x.producer_id == pid]
        # The transaction's first record is at offset 3 (after the three plain ones).
        assert prod.current_transaction_start_offset == 3, prod
        assert prod.last_sequence == 0
        assert states[TopicPartition(topic, 0)].active_producers == []

        with pytest.raises(Exception) as e:
            admin.describe_transactions(["no-such-id"])
        assert "TransactionalIdNotFound" in repr(e.value), e.value

        p.commit_transaction()
        [done] = admin.list_transactions(state_filters=["CompleteCommit"]).values()
        assert [t.transactional_id for t in done if t.transactional_id == "tx-admin-1"] == ["tx-admin-1"]
        [none] = admin.list_transactions(state_filters=["Ongoing"], producer_id_filters=[pid]).values()
        assert none == []
        states = admin.describe_producers([TopicPartition(topic, 1)])
        [prod] = [x for x in states[TopicPartition(topic, 1)].active_producers if x.producer_id == pid]
        assert prod.current_transaction_start_offset == -1, prod
    finally:
        admin.close()
