"""HTTPS: certificates are verified (against a custom CA bundle here), and mTLS with a client
certificate per subscription."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import trustme

from tests.integration.engine import (
    apply,
    create_engine_topics,
    engine_settings,
    events,
    header,
    produce,
    read_topic,
    running,
    subscription,
)
from tests.receivers import Receiver


def server_context(ca: trustme.CA, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


async def test_certificates_are_verified_and_client_certificates_are_presented(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    ca, stranger = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client = ca.issue_cert("fanout-client", common_name="fanout-client")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(cert_file), append=True)
    client.private_key_pem.write_to_path(str(key_file))

    settings = engine_settings(
        bootstrap, unique, delivery={"ca_bundle": str(ca_file), "client_cert_dir": tmp_path}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    fail_fast = {"retry": {"schedule": [0.1, 0.1]}}
    async with (
        Receiver(ssl_context=server_context(ca)) as trusted,
        Receiver(ssl_context=server_context(stranger)) as untrusted,
        Receiver(ssl_context=server_context(ca, require_client_cert=True)) as mutual,
    ):
        await apply(
            settings,
            [
                subscription("trusted", trusted.url, [topic]),
                subscription("untrusted", untrusted.url, [topic], **fail_fast),
                subscription(
                    "mtls",
                    mutual.url,
                    [topic],
                    client_certificate={"cert_file": str(cert_file), "key_file": str(key_file)},
                ),
                subscription(
                    "mtls-without-cert", mutual.url.replace("localhost", "127.0.0.1"), [topic], **fail_fast
                ),
            ],
        )
        async with running(settings):
            produce(settings, topic, events(3))
            await trusted.wait_count(3, 30)
            await mutual.wait_count(3, 30)
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 6, 60)

    assert trusted.url.startswith("https://")
    assert {r.client_cert for r in mutual.requests} == {"fanout-client"}
    assert untrusted.requests == []
    by_sub: dict[str, list[str]] = {}
    for m in letters:
        by_sub.setdefault(header(m, "fanout-subscription") or "", []).append(
            header(m, "fanout-last-error") or ""
        )
    assert sorted(by_sub) == ["mtls-without-cert", "untrusted"]
    assert all("certificate" in e.lower() for e in by_sub["untrusted"]), by_sub["untrusted"]
    assert all(
        e.startswith(("TLS", "connection error", "server disconnected")) for e in by_sub["mtls-without-cert"]
    ), by_sub
