"""Type-checked, never run: the lazily imported names keep their static types."""

from __future__ import annotations

from typing import assert_type

import entur_oauth
from entur_oauth import APIError, EnturClient, RedisTokenStore, TokenStore, __version__
from entur_oauth._api_errors import APIError as DefinedAPIError
from entur_oauth._authlib import OAuth2Token
from entur_oauth._client import EnturClient as DefinedEnturClient
from entur_oauth.testing import FakeEntur


def check_names(fake: FakeEntur, store: RedisTokenStore) -> None:
    """Each name a user imports from the package is the class its module defines."""
    assert_type(__version__, str)
    assert_type(entur_oauth.__version__, str)
    assert_type(fake.client(), DefinedEnturClient)
    assert_type(EnturClient, type[DefinedEnturClient])
    assert_type(APIError, type[DefinedAPIError])
    token_store: TokenStore = store
    del token_store


async def check_authlib_surface(client: EnturClient) -> None:
    """authlib's surface keeps its types: ``client.token`` is an OAuth2Token or None, not
    Any (authlib itself is untyped)."""
    assert_type(client.token, OAuth2Token | None)
    assert_type(await client.fetch_token(), OAuth2Token)
    assert_type(await client.ensure_active_token(), bool)
    client.token = {"access_token": "abc", "expires_in": 3600}
    client.token = None
