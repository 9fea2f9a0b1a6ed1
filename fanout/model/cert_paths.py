"""Where a subscription's client certificate files may be: only under ``delivery.client_cert_dir``.

A subscription names files (``client_certificate.cert_file`` / ``key_file``) only in a routes file an
operator applies; the API takes inline PEM only. A relative name is taken relative to the directory.
The path is resolved with every symbolic link followed and must stay inside the resolved directory, so
neither ``..`` nor a link can reach another file on the dispatcher host. Checked when a routes file is
loaded and again on the dispatcher before the file is read (a subscription in the topic may have been
written by anything).
"""

from __future__ import annotations

import os
from pathlib import Path

from fanout.model.subscription import ClientCertificate

SETTING = "delivery.client_cert_dir"


class CertificatePathRefused(ValueError):
    """The file is not under the configured directory (or no directory is configured)."""


def resolve_cert_file(directory: Path | None, name: str) -> Path:
    """The real path of ``name`` (links resolved); CertificatePathRefused when outside ``directory``."""
    if directory is None:
        raise CertificatePathRefused(f"certificate files are refused: {SETTING} is not set; use inline PEM")
    if "\x00" in name:
        raise CertificatePathRefused("the file name contains a NUL character")
    root = Path(os.path.realpath(directory))
    path = Path(os.path.realpath(root / name))
    if not path.is_relative_to(root) or path == root:
        raise CertificatePathRefused(f"the file is outside {SETTING} ({directory})")
    return path


def named_files(cert: ClientCertificate | None, kept: ClientCertificate | None = None) -> list[str]:
    """The fields of ``cert`` that name a file other than the one ``kept`` names (API writes may only
    keep what an operator set)."""
    if cert is None:
        return []
    return [
        field
        for field in ("cert_file", "key_file")
        if getattr(cert, field) is not None and (kept is None or getattr(kept, field) != getattr(cert, field))
    ]
