"""Client certificate files only under delivery.client_cert_dir: paths resolved, links followed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fanout.config import DeliverySettings
from fanout.control.routes import parse_routes
from fanout.model.cert_paths import CertificatePathRefused, named_files, resolve_cert_file
from fanout.model.errors import ValidationFailed
from fanout.model.subscription import ClientCertificate
from tests.unit.factories import SECRET


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """certs/ (the configured directory) with a file, a link to it, a link out, and a file outside."""
    certs = tmp_path / "certs"
    (certs / "crm").mkdir(parents=True)
    (certs / "crm" / "client.pem").write_text("cert")
    (tmp_path / "secret.key").write_text("not yours")
    os.symlink(certs / "crm" / "client.pem", certs / "inside-link.pem")
    os.symlink(tmp_path / "secret.key", certs / "outside-link.pem")
    os.symlink(tmp_path, certs / "up")
    return certs


def test_files_under_the_directory_resolve(tree: Path) -> None:
    real = (tree / "crm" / "client.pem").resolve()
    assert resolve_cert_file(tree, "crm/client.pem") == real
    assert resolve_cert_file(tree, str(tree / "crm" / "client.pem")) == real
    assert resolve_cert_file(tree, "inside-link.pem") == real, "a link that stays inside"
    assert resolve_cert_file(tree, "crm/../crm/client.pem") == real
    assert resolve_cert_file(tree, "crm/not-yet.pem") == (tree / "crm" / "not-yet.pem").resolve()


@pytest.mark.parametrize(
    "name",
    [
        "../secret.key",
        "crm/../../secret.key",
        "outside-link.pem",
        "up/secret.key",
        "/etc/passwd",
        ".",
        "",
        "a\x00b",
    ],
)
def test_files_outside_the_directory_are_refused(tree: Path, name: str) -> None:
    with pytest.raises(CertificatePathRefused):
        resolve_cert_file(tree, name)


def test_without_a_directory_no_file_is_accepted(tree: Path) -> None:
    with pytest.raises(CertificatePathRefused, match="client_cert_dir is not set"):
        resolve_cert_file(None, str(tree / "crm" / "client.pem"))


def test_a_routes_file_names_certificate_files_under_the_directory_only(tree: Path) -> None:
    def routes(cert: dict[str, str]) -> dict[str, object]:
        sub = {"id": "crm", "url": "https://crm.example.com/h", "topics": ["t"], "secrets": [SECRET]}
        return {"subscriptions": [{**sub, "client_certificate": cert}]}

    configured = DeliverySettings(client_cert_dir=tree)
    (sub,) = parse_routes(routes({"cert_file": "crm/client.pem", "key_pem": "k"}), configured)
    assert sub.client_certificate is not None and sub.client_certificate.cert_file == "crm/client.pem"
    for cert, field in (
        ({"cert_file": "/etc/ssl/private/host.pem", "key_pem": "k"}, "cert_file"),
        ({"cert_pem": "c", "key_file": "outside-link.pem"}, "key_file"),
        ({"cert_file": "crm/client.pem", "key_file": "../secret.key"}, "key_file"),
    ):
        with pytest.raises(ValidationFailed, match=rf"crm\.client_certificate\.{field}: the file is outside"):
            parse_routes(routes(cert), configured)
    with pytest.raises(ValidationFailed, match="client_cert_dir is not set"):
        parse_routes(routes({"cert_file": "crm/client.pem", "key_pem": "k"}), DeliverySettings())
    (inline,) = parse_routes(routes({"cert_pem": "c", "key_pem": "k"}), DeliverySettings())
    assert inline.client_certificate is not None


def test_named_files_are_those_that_differ_from_what_is_kept() -> None:
    files = ClientCertificate(cert_file="a.pem", key_file="a.key")
    assert named_files(files) == ["cert_file", "key_file"]
    assert named_files(files, files) == []
    assert named_files(files, ClientCertificate(cert_file="a.pem", key_pem="k")) == ["key_file"]
    assert named_files(ClientCertificate(cert_pem="c", key_pem="k")) == []
    assert named_files(None) == []
