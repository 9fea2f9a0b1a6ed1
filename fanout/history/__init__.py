"""Delivery history: the attempt record (a wire contract, ``schemas/attempt.schema.json``), the writer
(``SinkAttemptLog``, implementing ``fanout.model.ports.AttemptHistory``), and the embedded index an API
replica materialises from the attempts topic. The indexer (``indexer``) reads the topic through
``fanout.kafka.tail``; nothing here imports confluent_kafka."""
