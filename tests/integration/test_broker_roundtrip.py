"""The session broker really stores and serves records, with the headers streamproc relies on."""

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamproc import provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology


async def test_produce_and_consume_through_the_broker(kafka_settings: KafkaSettings, topology: Topology) -> None:
    await provisioning.apply(kafka_settings, topology)
    topic = topology.intake_topic("normal")
    async with AIOKafkaProducer(**kafka_settings.client_kwargs(), acks="all", enable_idempotence=True) as producer:
        for i in range(30):
            await producer.send_and_wait(topic, b'{"n": %d}' % i, key=b"k%d" % (i % 3), headers=[("task", b"noop")])

    consumer = AIOKafkaConsumer(
        topic,
        **kafka_settings.client_kwargs(),
        group_id=f"{topology.prefix}-g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen: list[bytes] = []
        while len(seen) < 30:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no records within 10 s"
            for records in batches.values():
                assert all(dict(r.headers) == {"task": b"noop"} for r in records)
                seen += [r.value for r in records]
        assert sorted(seen) == sorted(b'{"n": %d}' % i for i in range(30))
        assert len({tp.partition for tp in consumer.assignment()}) == topology.intake.partitions
    finally:
        await consumer.stop()
