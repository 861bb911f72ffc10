"""Kafka chores of scripts/validate-deploy.sh's end-to-end run (confluent-kafka, which bundles
librdkafka).

    python kafka_tool.py poison BROKERS TOPIC
        Writes two undecodable messages to partition 0, each in its own transaction. The worker
        sends them to the dead-letter topic (worker_dead_lettered_total), and each commit
        marker takes an offset of its own, so the consumer sees offsets jump
        (worker_offset_gaps_total): the two counters only appear once incremented, and the
        alert rules and the dashboard use both. A transactional producer on the events topic
        is the real-world cause of such gaps (docs/OPERATIONS.md, InsightflowOffsetGap).
    python kafka_tool.py delete-topics BROKERS TOPIC...
        Deletes the run's topics (missing ones are fine).
"""

import sys
import uuid

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

TIMEOUT_SECONDS = 30


def poison(brokers, topic):
    producer = Producer({
        "bootstrap.servers": brokers,
        "transactional.id": f"insightflow-validate-deploy-{uuid.uuid4()}",
        "enable.idempotence": True,
    })
    producer.init_transactions(TIMEOUT_SECONDS)
    for n in range(2):
        producer.begin_transaction()
        producer.produce(topic, partition=0, key=b"validate-deploy",
                         value=f"not an InsightFlow event {n}".encode())
        producer.commit_transaction(TIMEOUT_SECONDS)
    print(f"kafka-tool: wrote 2 undecodable messages to {topic}[0] in 2 transactions")


def delete_topics(brokers, topics):
    admin = AdminClient({"bootstrap.servers": brokers})
    for topic, future in admin.delete_topics(list(topics), operation_timeout=TIMEOUT_SECONDS).items():
        try:
            future.result()
        except KafkaException as e:
            if "UNKNOWN_TOPIC" not in str(e):
                print(f"kafka-tool: cannot delete {topic}: {e}", file=sys.stderr)


def main():
    command, brokers, *rest = sys.argv[1:]
    if command == "poison":
        poison(brokers, rest[0])
    elif command == "delete-topics":
        delete_topics(brokers, rest)
    else:
        sys.exit(f"kafka-tool: unknown command {command}")


if __name__ == "__main__":
    main()
