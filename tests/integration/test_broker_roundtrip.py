"""The session broker really stores and serves records, with the headers streamproc relies on."""

from aiokafka import AIOKafkaProducer

from streamproc import provisioning
from streamproc.settings import KafkaSettings
from streamproc.topology import Topology
from tests.helpers import read_records


async def test_produce_and_consume_through_the_broker(kafka_settings: KafkaSettings, topology: Topology) -> None:
    await provisioning.apply(kafka_settings, topology)
    topic = topology.intake_topic("normal")
    async with AIOKafkaProducer(**kafka_settings.client_kwargs(), acks="all", enable_idempotence=True) as producer:
        for i in range(30):
            await producer.send_and_wait(topic, b'{"n": %d}' % i, key=b"k%d" % (i % 3), headers=[("task", b"noop")])

    records = await read_records(kafka_settings, topic, 30)
    assert all(dict(r.headers) == {"task": b"noop"} for r in records)
    assert sorted(r.value for r in records) == sorted(b'{"n": %d}' % i for i in range(30))
    partitions_of_key = {key: {r.partition for r in records if r.key == key} for key in (b"k0", b"k1", b"k2")}
    assert all(len(partitions) == 1 for partitions in partitions_of_key.values())  # a key keeps its partition
