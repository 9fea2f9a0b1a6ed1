"""fanout: a Kafka-backed webhook fan-out service."""

__version__ = "0.1.0"
