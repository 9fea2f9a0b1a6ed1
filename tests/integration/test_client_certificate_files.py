"""Client certificate files (issue 13, defect 6): the API takes inline PEM only (a file path is a 400
naming the field, unless a write keeps the path an operator's routes file set), and the dispatcher reads
files only under ``delivery.client_cert_dir``, whatever the subscriptions topic says."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import trustme

from tests.integration.api import api_settings, create_api_topics, running_api, source_topic
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


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    """A server that requires a client certificate issued by ``ca``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    context.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(context)
    return context


def client_files(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    client = ca.issue_cert("fanout-client", common_name="fanout-client")
    cert_file, key_file = directory / "client.pem", directory / "client.key"
    for blob in client.cert_chain_pems:
        blob.write_to_path(str(cert_file), append=True)
    client.private_key_pem.write_to_path(str(key_file))
    return cert_file, key_file


async def test_the_api_takes_inline_pem_only(bootstrap: str, unique: str, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert_file, key_file = client_files(trustme.CA(), certs)
    settings = api_settings(bootstrap, unique)
    settings = settings.model_copy(
        update={"delivery": settings.delivery.model_copy(update={"client_cert_dir": certs})}
    )
    topic = source_topic(settings)
    create_api_topics(settings)
    base = {"url": "https://hooks.example.com/h", "topics": [topic]}
    inline = {"cert_pem": cert_file.read_text(), "key_pem": key_file.read_text()}
    async with running_api(settings) as api:
        for sub_id, cert, field in (
            ("f1", {"cert_file": "/etc/passwd", "key_pem": inline["key_pem"]}, "cert_file"),
            ("f2", {"cert_pem": inline["cert_pem"], "key_file": "/proc/self/environ"}, "key_file"),
            ("f3", {"cert_file": str(cert_file), "key_file": str(key_file)}, "cert_file"),  # even inside
        ):
            status, _, problem = await api.call(
                "POST", "/v1/subscriptions", {**base, "id": sub_id, "client_certificate": cert}
            )
            assert status == 400, problem
            assert [e["field"] for e in problem["errors"]] == [f"body/client_certificate/{field}"]
        status, _, created = await api.call(
            "POST", "/v1/subscriptions", {**base, "id": "pem", "client_certificate": inline}
        )
        assert status == 201, created

        # a subscription an operator applied with files: API writes may keep them, not change them
        operator = subscription(
            "op",
            base["url"],
            [topic],
            client_certificate={"cert_file": "client.pem", "key_file": "client.key"},
        )
        await apply(settings, [operator])
        deadline = time.monotonic() + 30
        while (await api.call("GET", "/v1/subscriptions/op"))[0] != 200:
            assert time.monotonic() < deadline, "the API never saw the applied subscription"
            await asyncio.sleep(0.1)
        status, _, patched = await api.call("PATCH", "/v1/subscriptions/op", {"description": "kept"})
        assert status == 200 and patched["client_certificate"]["cert_file"] == "client.pem", patched
        status, _, problem = await api.call(
            "PATCH", "/v1/subscriptions/op", {"client_certificate": {"key_file": "/etc/shadow"}}
        )
        assert status == 400 and problem["errors"][0]["field"] == "body/client_certificate/key_file", problem
        replaced = {**base, "client_certificate": {"cert_file": "/etc/passwd", "key_file": "client.key"}}
        status, _, problem = await api.call("PUT", "/v1/subscriptions/op", replaced)
        assert status == 400 and problem["errors"][0]["field"] == "body/client_certificate/cert_file", problem
        status, _, listed = await api.call("GET", "/v1/subscriptions")
    assert sorted(s["id"] for s in listed["items"]) == ["op", "pem"]


async def test_the_dispatcher_reads_certificate_files_under_the_directory_only(
    bootstrap: str, unique: str, tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    certs = tmp_path / "certs"
    inside = client_files(ca, certs)
    outside = client_files(ca, tmp_path / "elsewhere")  # a valid certificate, but not where it may be
    (certs / "link.pem").symlink_to(outside[0])
    settings = engine_settings(
        bootstrap, unique, delivery={"ca_bundle": str(ca_file), "client_cert_dir": certs}
    )
    topic = f"{unique}.events"
    create_engine_topics(settings, [topic])
    async with Receiver(ssl_context=server_context(ca)) as mutual:
        await apply(
            settings,
            [
                subscription(
                    "inside",
                    mutual.url + "/in",
                    [topic],
                    client_certificate={"cert_file": "client.pem", "key_file": "client.key"},
                ),
                subscription(
                    "outside",
                    mutual.url + "/out",
                    [topic],
                    client_certificate={"cert_file": str(outside[0]), "key_file": str(outside[1])},
                ),
                subscription(
                    "linked",
                    mutual.url + "/link",
                    [topic],
                    client_certificate={"cert_file": "link.pem", "key_file": "client.key"},
                ),
            ],
        )
        assert inside[0].exists()
        async with running(settings):
            produce(settings, topic, events(1))
            await mutual.wait_count(1, 30)
            letters = await asyncio.to_thread(read_topic, settings, settings.topics.dlq, 2)
    assert [r.path for r in mutual.requests] == ["/in"]
    reasons = {header(m, "fanout-subscription"): header(m, "fanout-reason") or "" for m in letters}
    assert set(reasons) == {"outside", "linked"}
    for reason in reasons.values():
        assert "client certificate: the file is outside delivery.client_cert_dir" in reason, reasons
