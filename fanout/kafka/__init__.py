"""The only package that imports confluent_kafka: admin, consumer, producer and offsets."""
