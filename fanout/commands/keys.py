"""``fanout keys api|encryption|signing``: make the keys the settings and subscriptions need (printed once,
never stored)."""

from __future__ import annotations

import secrets

import click

from fanout.commands.context import print_json
from fanout.config import SCOPES
from fanout.control.secretbox import new_key
from fanout.http.signing import new_ed25519_key, new_secret


@click.group()
def keys() -> None:
    """Generate API keys, encryption keys and signing keys."""


@keys.command("api")
@click.option("--name", required=True, help="Who the key is for (shown in logs, never secret).")
@click.option(
    "--scope", "scopes", multiple=True, type=click.Choice(SCOPES), help="A scope (repeatable; default: all)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def api_key(name: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """A new API key (printed once, stored nowhere) and the api.keys entry (its SHA-256) to configure."""
    from fanout.api.auth import key_digest

    key = "fo_" + secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": key_digest(key), "scopes": list(scopes or SCOPES)}
    if as_json:
        print_json({"key": key, "entry": entry})
        return
    click.echo(f"key (give it to {name}; it is not stored anywhere): {key}")
    click.echo("add to api.keys (YAML):")
    click.echo(f"  - name: {name}\n    sha256: {entry['sha256']}\n    scopes: [{', '.join(entry['scopes'])}]")


@keys.command("encryption")
def encryption_key() -> None:
    """A new AES-256 key for secrets.keys (put it first to encrypt with it; keep old ones after it)."""
    click.echo(new_key())


@keys.command("signing")
@click.option(
    "--ed25519", is_flag=True, help="An Ed25519 pair (v1a signatures) instead of an HMAC secret (v1)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def signing_key(ed25519: bool, as_json: bool) -> None:
    """A subscription signing secret (whsec_, for secrets), or with --ed25519 a key pair: the whsk_ key
    for ed25519_keys and the whpk_ public key to give the receiver."""
    if not ed25519:
        secret = new_secret()
        if as_json:
            print_json({"secret": secret})
        else:
            click.echo(secret)
        return
    private, public = new_ed25519_key()
    if as_json:
        print_json({"private_key": private, "public_key": public})
        return
    click.echo(f"private key (ed25519_keys; keep it secret): {private}")
    click.echo(f"public key (give it to the receiver): {public}")
