"""Type-checked, never run: the lazily imported names keep their static types."""

from __future__ import annotations

from typing import assert_type

import entur_oauth
from entur_oauth import APIError, EnturClient, RedisTokenStore, TokenStore, __version__
from entur_oauth._api_errors import APIError as DefinedAPIError
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
