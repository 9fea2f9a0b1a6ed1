"""Delivery history: the attempt record (a wire contract, ``schemas/attempt.schema.json``), the writer's
port (``AttemptLog``), and the embedded index an API replica materialises from the attempts topic.
No confluent_kafka here: the topic reader is ``fanout.kafka.history_reader``."""
