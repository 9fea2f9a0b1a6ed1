# fanout container image: one image for every role (dispatcher, API, topic init, demo receiver).
#
#   docker build -t fanout:0.1.0 .
#   docker run --rm fanout:0.1.0 --help
#   docker run --rm -e FANOUT_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 fanout:0.1.0 run
#
# The base is pinned by version (override with --build-arg PYTHON_IMAGE=...@sha256:... to pin a digest).
# This repository's CI cannot build images (no Docker engine): tests/deploy checks this file statically.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- build: install fanout and its dependencies into a self-contained virtual environment
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/fanout
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fanout ./fanout
# Every dependency ships manylinux wheels; --only-binary keeps compilers out of this stage too.
RUN /opt/fanout/bin/pip install --only-binary=:all: --no-compile . \
 && /opt/fanout/bin/pip uninstall -y pip setuptools wheel \
 && /opt/fanout/bin/python -m compileall -q /opt/fanout/lib
COPY docker/healthcheck.py /opt/fanout/bin/fanout-healthcheck

# ---- runtime: the virtual environment and an unprivileged user, nothing else
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 fanout \
 && useradd --system --uid 10001 --gid fanout --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin fanout
COPY --from=build /opt/fanout /opt/fanout
ENV PATH=/opt/fanout/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
LABEL org.opencontainers.image.title="fanout" \
      org.opencontainers.image.description="Kafka-backed webhook fan-out" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /tmp
# 8080: fanout api (FANOUT_API__PORT); 8081: fanout run probes and metrics (FANOUT_DISPATCHER__HTTP_PORT)
EXPOSE 8080 8081
# /healthz of whichever server runs in the container (the dispatcher's or the API's); see the script.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["fanout-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["fanout"]
CMD ["--help"]
