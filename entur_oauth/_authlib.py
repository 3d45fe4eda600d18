"""The one place authlib is imported: authlib ships no type information, so its surface
that we use is declared here for the type checker, and everything else imports from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2

__all__ = ["AsyncOAuth2Client", "ClientAuthMethod", "OAuth2Token"]

#: authlib's client-auth hook: ``(auth, method, uri, headers, body) -> (uri, headers, body)``.
ClientAuthMethod = Callable[
    [Any, str, str, httpx2.Headers, bytes], tuple[str, httpx2.Headers, bytes]
]

if TYPE_CHECKING:

    class AsyncOAuth2Client(httpx2.AsyncClient):
        """The part of authlib's AsyncOAuth2Client that entur_oauth relies on."""

        client_id: str | None
        client_secret: Any
        metadata: dict[str, Any]
        token: Any
        token_auth: Any
        update_token: Callable[..., Any] | None
        compliance_hook: dict[str, set[Callable[..., Any]]]

        def __init__(
            self,
            client_id: str | None = None,
            client_secret: Any = None,
            token_endpoint_auth_method: str | None = None,
            **kwargs: Any,
        ) -> None: ...

        def register_client_auth_method(self, auth: tuple[str, ClientAuthMethod]) -> None: ...

        async def fetch_token(
            self, url: str | None = None, body: str = "", **kwargs: Any
        ) -> Any: ...

        async def ensure_active_token(self, token: Any = None) -> Any: ...

        def register_compliance_hook(self, hook_type: str, hook: Callable[..., Any]) -> None: ...

        def parse_response_token(self, resp: httpx2.Response) -> Any: ...

        def client_auth(self, auth_method: Any) -> Any: ...

    class OAuth2Token(dict[str, Any]):
        """authlib's token: a dict with ``access_token``, ``expires_at``, ... ."""

        def __init__(self, params: dict[str, Any]) -> None: ...

        def is_expired(self, leeway: int = 60) -> bool | None: ...

else:
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc6749 import OAuth2Token
