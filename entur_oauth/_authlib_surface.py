"""authlib's ``AsyncOAuth2Client`` surface, as an Entur client-credentials client answers it.

These work, answered by the :class:`TokenManager` (one fetch shared by all tasks, renewal
windows, retries, shared stores) instead of authlib's lock per request, which never
fetches the first client-credentials token (authlib#531): ``token``, ``fetch_token``,
``ensure_active_token``, ``update_token=`` (awaited with each new token),
``register_compliance_hook("access_token_response", ...)``, ``parse_response_token`` (our
defensive parser) and ``client_auth`` for the client's own method, which sends the JSON
body Entur documents with ``audience`` on every fetch (authlib drops it on its own
re-fetch, authlib#783). Those with no meaning for Entur raise UnsupportedOperationError
saying what to use instead (:data:`REFUSED`).

They are functions, not a base class: ``EnturClient`` lists them in its own class body, so
``help(EnturClient)`` documents them as its methods.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, overload
from urllib.parse import parse_qsl

import httpx2

from ._authlib import AsyncOAuth2Client, OAuth2Token
from ._clock import Clock
from ._errors import ConfigurationError, UnsupportedOperationError
from ._grant import oauth2_token, parse_response, seed_token
from ._secrets import Secret
from ._token import Token

if TYPE_CHECKING:
    from ._client import EnturClient

__all__ = [
    "AUTH_METHOD",
    "REFUSED",
    "TokenAttribute",
    "announce",
    "client_auth",
    "ensure_active_token",
    "fetch_token",
    "json_client_auth",
    "parse_response_token",
    "refused",
    "register_compliance_hook",
]

logger = logging.getLogger("entur_oauth")

#: The client-auth method registered for partner clients: Entur's JSON body.
AUTH_METHOD = "entur_client_secret_json"
#: authlib's AsyncOAuth2Client methods that have no meaning for Entur's client-credentials
#: clients, and what to use instead (each raises UnsupportedOperationError).
REFUSED = {
    "refresh_token": "Entur issues no refresh tokens to client-credentials clients; the "
    "client renews its token itself, and `await client.fetch_token()` forces a new one",
    "create_authorization_url": "Entur's partner clients use the client-credentials grant, "
    "which has no authorization step; the client fetches its token itself",
    "token_from_fragment": "Entur's partner clients use the client-credentials grant, which "
    "has no redirect with a token in it; the client fetches its token itself",
    "revoke_token": "Entur's token endpoint offers no revocation; tokens expire on their own "
    "(a new one: `await client.fetch_token()`)",
    "introspect_token": "Entur offers no introspection endpoint; `client.token` shows the "
    "token and its expiry",
    "register_client_auth_method": "the client authenticates with the JSON body Entur "
    "documents, registered at construction",
}
#: The compliance hooks that run: the token response is the one authlib step we keep.
_HOOKS = frozenset({"access_token_response"})


class TokenAttribute:
    """``EnturClient.token``, typed for type checkers (authlib's own is untyped)."""

    def __init__(self) -> None:
        # What help(EnturClient) shows for ``token`` (pydoc skips a class's own docstring).
        self.__doc__ = (
            "The current token as authlib's ``OAuth2Token``; ``None`` before the first.\n\n"
            "Setting it (authlib's dict) makes the client use that token from now on, "
            "without a token request, as authlib does; ``None`` or an expired token "
            "changes nothing."
        )

    @overload
    def __get__(self, client: None, owner: type[Any]) -> TokenAttribute: ...

    @overload
    def __get__(self, client: EnturClient, owner: type[Any]) -> OAuth2Token | None: ...

    def __get__(
        self, client: EnturClient | None, owner: type[Any]
    ) -> OAuth2Token | TokenAttribute | None:
        if client is None:
            return self
        token: OAuth2Token | None = client.token_auth.token
        return token

    def __set__(self, client: EnturClient, value: Mapping[str, Any] | None) -> None:
        seeded = _seeded(value, client._clock)
        del value  # not in the locals of the frame raising a ConfigurationError
        if isinstance(seeded, ConfigurationError):
            raise seeded
        manager = client._manager
        if manager is None:
            return  # an open-API client sends no token: it has none to show
        # What requests use from now on: an expired or None token is not installed.
        current = manager.seed(seeded)
        client.token_auth.set_token(oauth2_token(current) if current is not None else None)


def _seeded(value: object, clock: Clock) -> Token | ConfigurationError | None:
    """Parse a token set on ``client.token``: the Token, the (cleaned) error, or ``None``."""
    try:
        # seed_token refuses a non-mapping with a ConfigurationError.
        return seed_token(value, clock) if value is not None else None  # type: ignore[arg-type]
    except ConfigurationError as exc:
        exc.__cause__ = exc.__context__ = None
        exc.__suppress_context__ = True
        return exc.with_traceback(None)  # its frames held the token


async def fetch_token(
    self: EnturClient, url: str | None = None, body: str = "", **kwargs: Any
) -> OAuth2Token:
    """Fetch a new token now (authlib's method, through the shared token manager).

    Every task of this client uses the new token from then on, and a shared store
    receives it. ``url`` may only be the environment's token URL.

    Returns:
        The new token as authlib's ``OAuth2Token``.

    Raises:
        UnsupportedOperationError: Another URL, a body or grant options were given.
        TokenRequestError: No token could be fetched.
    """
    if body or kwargs or url not in {None, self.environment.token_url}:
        raise UnsupportedOperationError(
            "EnturClient.fetch_token() takes no arguments: it runs the client-credentials "
            f"grant against {self.environment.token_url} with the client's own audience."
        )
    return oauth2_token(await self._token_manager().renew())


async def ensure_active_token(self: EnturClient, token: Any = None) -> bool:
    """authlib's hook: make sure a valid token is at hand (no request while one is)."""
    await self._token_manager().token()
    return True


def parse_response_token(self: EnturClient, resp: httpx2.Response) -> OAuth2Token:
    """Read a token response (authlib calls this): typed errors, no secret in them.

    Raises:
        TokenRequestError: The response holds no usable bearer token.
    """
    return parse_response(
        resp,
        secret=self.client_secret,
        clock=self._clock,
        where=f"The token endpoint {self.environment.token_url}",
    )


def register_compliance_hook(self: EnturClient, hook_type: str, hook: Callable[..., Any]) -> None:
    """Register authlib's ``access_token_response`` hook; it runs on every token response.

    Raises:
        UnsupportedOperationError: Any other hook type (none of them ever runs here).
    """
    if hook_type not in _HOOKS:
        raise UnsupportedOperationError(
            f"The {hook_type!r} compliance hook never runs on an Entur client (it has no "
            "refresh, revocation or introspection, and sets the bearer itself): only "
            "'access_token_response' does. For API requests use httpx2's event_hooks."
        )
    AsyncOAuth2Client.register_compliance_hook(self, hook_type, hook)


def client_auth(self: EnturClient, auth_method: Any) -> Any:
    """authlib's client authentication, for the JSON body Entur documents only.

    Raises:
        UnsupportedOperationError: Any other method (``client_secret_basic``, ...): the
            secret is kept in a :class:`Secret`, so it would build wrong credentials.
    """
    if auth_method != AUTH_METHOD:
        raise UnsupportedOperationError(
            f"EnturClient.client_auth({auth_method!r}) is not available: the client "
            f"authenticates with the JSON body Entur documents ({AUTH_METHOD!r}); "
            "`await client.fetch_token()` gets a token."
        )
    return AsyncOAuth2Client.client_auth(self, auth_method)


def refused(name: str) -> Callable[..., NoReturn]:
    """Return a stand-in for authlib's ``name`` that raises UnsupportedOperationError."""
    advice = REFUSED[name]

    def refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
        raise UnsupportedOperationError(f"EnturClient.{name}() is not available: {advice}.")

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Not available on an Entur client: {advice}."
    return refuse


def json_client_auth(audience: str) -> Any:
    """Return the client-auth hook that turns authlib's form body into Entur's JSON body."""

    def encode(
        client: Any, method: str, uri: str, headers: httpx2.Headers, body: bytes
    ) -> tuple[str, httpx2.Headers, bytes]:
        raw = body.decode() if isinstance(body, bytes) else (body or "")
        fields: dict[str, str] = dict(parse_qsl(raw, keep_blank_values=True))
        secret = client.client_secret
        fields["client_id"] = client.client_id
        fields["client_secret"] = secret.reveal() if isinstance(secret, Secret) else secret
        fields.setdefault("audience", audience)
        headers["Content-Type"] = "application/json"
        return uri, headers, json.dumps(fields).encode()

    return encode


async def announce(client: EnturClient, token: Token) -> None:
    """The manager installed a new token: show it as ``client.token``, tell update_token."""
    previous = client.token
    new = oauth2_token(token)
    client.token_auth.set_token(new)  # not the setter: the manager has it already
    hook = client.update_token
    if hook is None:
        return
    old = previous.get("access_token") if previous else None
    try:
        # Exactly as authlib's own ensure_active_token calls it for this grant.
        result = hook(new, access_token=old)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # a persistence hook must not stop requests
        # Only the type: the hook's own message may quote the token it was handed.
        logger.warning(
            "update_token raised %s; the new token is used all the same", type(exc).__name__
        )
