"""Delivery history: the attempt record (a wire contract, ``schemas/attempt.schema.json``), the writer's
port (``AttemptLog``), and the embedded index an API replica materialises from the attempts topic.
The indexer (``indexer``) reads the topic through ``fanout.kafka.tail``; nothing here imports
confluent_kafka."""
