"""Console sessions: the credential a person signed in with, sealed into a cookie, and its CSRF token.

The cookie holds ``base64url(nonce | AES-256-GCM(session))``: the session (a random id, the credential,
issue and expiry times) is encrypted and authenticated, so the browser holds no readable credential
and cannot alter or extend a session. The cookie is ``HttpOnly`` (no page script can read it),
``SameSite=Strict``, ``Path=/console/``, and ``Secure`` when the request came over TLS (or always, with
``console.cookie_secure: always`` behind a TLS proxy). A session lasts ``console.session_ttl`` from
sign-in, however much it is used; the credential is checked again on every request, so a JWT that
expires or a key removed from the configuration ends it sooner.

Signing out deletes the cookie and remembers the session id as revoked (in this process, until the
session would have expired anyway), so a copy of the cookie taken before is refused here too.

CSRF: every state-changing request carries ``HMAC(key, "session:" + id)`` (a form field or the
``X-CSRF-Token`` header); the sign-in form, before there is a session, carries ``HMAC(key, "login:" +
nonce)`` where the nonce is in a short-lived cookie of its own.

The keys come from ``console.session_key`` through HKDF (one for the cookie cipher, one for CSRF).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fanout.config import ConsoleSettings

log = logging.getLogger("fanout.api.console")

COOKIE = "fanout_console"
LOGIN_COOKIE = "fanout_console_login"
COOKIE_PATH = "/console/"
LOGIN_NONCE_TTL = 3600
NONCE_BYTES = 12
ASSOCIATED = b"fanout-console-session-v1"
MAX_CREDENTIAL_CHARS = 2800  # the sealed cookie stays under the 4096 bytes browsers keep
MAX_REVOKED = 100_000
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Session:
    id: str
    credential: str
    issued: float
    expires: float


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Seals and opens session cookies, makes and checks CSRF tokens, and remembers sign-outs."""

    def __init__(self, settings: ConsoleSettings) -> None:
        if settings.session_key is None:
            log.warning(
                "console.session_key is not set: console sessions end when this process restarts and are "
                "valid on this replica only; give every replica the same console.session_key"
            )
            key = os.urandom(32)
        else:
            key = base64.b64decode(settings.session_key.get_secret_value())
        self._cipher = AESGCM(_derive(key, b"fanout console cookie"))
        self._csrf_key = _derive(key, b"fanout console csrf")
        self.ttl = settings.session_ttl
        self.always_secure = settings.cookie_secure == "always"
        self._revoked: OrderedDict[str, float] = OrderedDict()

    def new(self, credential: str, now: float | None = None) -> Session:
        now = time.time() if now is None else now
        return Session(_b64(os.urandom(16)), credential, now, now + self.ttl)

    def seal(self, session: Session) -> str:
        data = {"id": session.id, "c": session.credential, "i": session.issued, "e": session.expires}
        nonce = os.urandom(NONCE_BYTES)
        return _b64(nonce + self._cipher.encrypt(nonce, orjson.dumps(data), ASSOCIATED))

    def open(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``, or ``None`` when absent, altered, expired or signed out."""
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = _unb64(cookie)
            data = orjson.loads(self._cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], ASSOCIATED))
            session = Session(str(data["id"]), str(data["c"]), float(data["i"]), float(data["e"]))
        except (binascii.Error, ValueError, InvalidTag, orjson.JSONDecodeError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if now >= session.expires or session.id in self._revoked:
            return None
        return session

    def revoke(self, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for sid, expires in list(self._revoked.items()):
            if expires <= now:
                del self._revoked[sid]
        self._revoked[session.id] = session.expires
        while len(self._revoked) > MAX_REVOKED:
            self._revoked.popitem(last=False)

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self._csrf_key, text.encode(), hashlib.sha256).digest())

    def csrf(self, session: Session) -> str:
        return self._mac("session:" + session.id)

    def login_csrf(self, nonce: str) -> str:
        return self._mac("login:" + nonce)

    @staticmethod
    def same(given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def secure(self, request: web.Request) -> bool:
        return self.always_secure or request.secure

    def set_cookie(self, response: web.StreamResponse, request: web.Request, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self.seal(session),
            max_age=max(1, int(session.expires - time.time())),
            path=COOKIE_PATH,
            httponly=True,
            secure=self.secure(request),
            samesite="Strict",
        )

    def clear_cookie(self, response: web.StreamResponse, request: web.Request) -> None:
        response.del_cookie(
            COOKIE, path=COOKIE_PATH, httponly=True, secure=self.secure(request), samesite="Strict"
        )

    @staticmethod
    def login_nonce(request: web.Request) -> str | None:
        """The sign-in form's nonce from the request's cookie, if it has a plausible one."""
        nonce = request.cookies.get(LOGIN_COOKIE)
        return nonce if nonce is not None and 16 <= len(nonce) <= 64 else None

    def set_login_nonce(self, response: web.StreamResponse, request: web.Request) -> str:
        nonce = _b64(os.urandom(18))
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_NONCE_TTL,
            path=COOKIE_PATH,
            httponly=True,
            secure=self.secure(request),
            samesite="Strict",
        )
        return nonce


SESSIONS: web.AppKey[Sessions] = web.AppKey("console_sessions")
