"""The store codec: its key derivation is HKDF-SHA256, and entries sealed by earlier
versions (with cryptography's HKDF) still open."""

from __future__ import annotations

import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from entur_oauth._codec import TokenCodec, derive_key, store_key
from entur_oauth._secrets import Secret

INFO = b"entur-oauth token store v1"


def cryptography_hkdf(secret: bytes, salt: bytes) -> bytes:
    """The derivation as the codec did it before it was written out with hmac."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO).derive(secret)


@given(secret=st.binary(max_size=200), salt=st.binary(max_size=100))
def test_derive_key_is_cryptographys_hkdf_sha256(secret: bytes, salt: bytes) -> None:
    """Any secret and salt (empty ones too) give the key cryptography's HKDF gives."""
    assert derive_key(secret, salt) == cryptography_hkdf(secret, salt)


def test_an_entry_sealed_with_cryptographys_hkdf_still_opens() -> None:
    """A cache entry written before (sealed by hand here, as the codec used to) opens with
    its token and times; under another secret or another key it does not."""
    key = store_key("https://auth.example/oauth/token", "https://api.example", "client-1")
    nonce = os.urandom(12)
    fields = {
        "access_token": "token-written-by-an-earlier-version",
        "expires_at_wall": 2_000_000_600.0,
        "lifetime": 3600.0,
        "scope": "read",
    }
    aead = AESGCM(cryptography_hkdf(b"the-client-secret", key.encode()))
    sealed = b"eo1" + nonce + aead.encrypt(nonce, json.dumps(fields).encode(), key.encode())

    token = TokenCodec(Secret("the-client-secret"), key).decode(
        sealed, now_monotonic=100.0, now_wall=2_000_000_000.0
    )
    assert token is not None
    assert token.access_token == "token-written-by-an-earlier-version"
    assert token.expires_at == 700.0
    assert token.lifetime == 3600.0
    assert token.scope == "read"
    assert (
        TokenCodec(Secret("a-rotated-secret"), key).decode(
            sealed, now_monotonic=100.0, now_wall=2_000_000_000.0
        )
        is None
    )
    other = store_key("https://auth.example/oauth/token", "https://api.example", "client-2")
    assert (
        TokenCodec(Secret("the-client-secret"), other).decode(
            sealed, now_monotonic=100.0, now_wall=2_000_000_000.0
        )
        is None
    )
