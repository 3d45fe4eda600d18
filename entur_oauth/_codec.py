"""How a token is written to a shared store: JSON, encrypted and authenticated.

The key is derived from the client secret (HKDF-SHA256) and the entry key is bound as
associated data, so a reader of the file or the Redis key learns nothing usable, an entry
cannot be moved to another key, and a rotated secret simply misses the cache.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._secrets import Secret
from ._token import Token

__all__ = ["TokenCodec", "derive_key", "store_key"]

_VERSION = b"eo1"
_NONCE = 12
_INFO = b"entur-oauth token store v1"


def derive_key(secret: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret`` to a 32-byte key.

    Written out with the standard library's HMAC: one block needs two HMACs, and
    cryptography's HKDF would cost the CLI's cached ``token`` path the import of its hash
    and KDF modules on every run. A test holds it equal to cryptography's HKDF.
    """
    pseudo_random_key = hmac.digest(salt, secret, "sha256")
    return hmac.digest(pseudo_random_key, _INFO + b"\x01", "sha256")


def store_key(token_url: str, audience: str, client_id: str) -> str:
    """Return the store key for one client: a hash of where, for what and who (no secret)."""
    material = "\x00".join((token_url, audience, client_id)).encode()
    return "entur-oauth:" + hashlib.sha256(material).hexdigest()[:32]


class TokenCodec:
    """Seals tokens for one store key with a key derived from the client secret."""

    __slots__ = ("_aead", "_key")

    def __init__(self, secret: Secret, key: str) -> None:
        self._aead = AESGCM(derive_key(secret.reveal().encode(), key.encode()))
        self._key = key.encode()

    def encode(self, token: Token) -> bytes:
        """Return the sealed bytes for ``token``."""
        fields: dict[str, object] = {
            "access_token": token.access_token,
            "expires_at_wall": token.expires_at_wall,
            "lifetime": token.lifetime,
            "scope": token.scope,
        }
        if token.replaced_at is not None:
            # Carried as wall time, like the expiry: other processes read it on their clocks.
            fields["replaced_at_wall"] = token.expires_at_wall - (
                token.expires_at - token.replaced_at
            )
        plain = json.dumps(fields).encode()
        nonce = os.urandom(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, self._key)

    def decode(self, data: bytes, *, now_monotonic: float, now_wall: float) -> Token | None:
        """Return the token sealed in ``data``, or ``None`` if it is corrupt, foreign or old."""
        if not data.startswith(_VERSION) or len(data) < len(_VERSION) + _NONCE + 16:
            return None
        nonce = data[len(_VERSION) : len(_VERSION) + _NONCE]
        try:
            plain = self._aead.decrypt(nonce, data[len(_VERSION) + _NONCE :], self._key)
            fields = json.loads(plain)
            expires_at_wall = float(fields["expires_at_wall"])
            remaining = expires_at_wall - now_wall
            if remaining <= 0:
                return None
            return Token(
                access_token=str(fields["access_token"]),
                expires_at=now_monotonic + remaining,
                expires_at_wall=expires_at_wall,
                lifetime=float(fields["lifetime"]),
                scope=fields.get("scope"),
                replaced_at=_replaced_at(fields.get("replaced_at_wall"), now_monotonic, now_wall),
            )
        except (InvalidTag, ValueError, KeyError, TypeError):
            return None


def _replaced_at(wall: Any, now_monotonic: float, now_wall: float) -> float | None:
    """The monotonic time a stored replacement was fetched at; ``None`` for any other token
    (and for values written before the mark existed)."""
    if wall is None:
        return None
    # Never in the future: a wall clock that went back (or a host ahead of this one) must
    # not stretch the 401-storm guard beyond credentials_error_ttl from now.
    return now_monotonic + min(float(wall) - now_wall, 0.0)
