"""Exit 0 if a Kafka broker answers a metadata request at BOOTSTRAP within SECONDS, else 1."""

import sys

from confluent_kafka.admin import AdminClient


def main() -> int:
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 2000})
    try:
        metadata = admin.list_topics(timeout=seconds)
    except Exception as exc:
        print(f"no broker at {bootstrap}: {exc}", file=sys.stderr)
        return 1
    print(f"{len(metadata.brokers)} broker(s) at {bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
