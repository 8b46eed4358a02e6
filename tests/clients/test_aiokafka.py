"""aiokafka: produce, then consume in a group with commits."""
import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from util import create_topic, topic_name


def test_aiokafka_group_round_trip(broker_factory):
    b = broker_factory(config={"group_initial_rebalance_delay_ms": 500})
    topic = create_topic(b.bootstrap, topic_name("aio"), 2)
    group = "g-" + topic

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=b.bootstrap, acks="all")
        await p.start()
        try:
            for i in range(100):
                await p.send(topic, value=b"%d" % i, key=b"k", partition=i % 2)
            await p.flush()
        finally:
            await p.stop()
        c = AIOKafkaConsumer(topic, bootstrap_servers=b.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False)
        await c.start()
        got = []
        try:
            while len(got) < 100:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    got.extend(int(m.value) for m in msgs)
            await c.commit()
            committed = [await c.committed(tp) for tp in sorted(c.assignment())]
        finally:
            await c.stop()
        return got, committed

    got, committed = asyncio.run(run())
    assert sorted(got) == list(range(100))
    assert committed == [50, 50]
