"""``entur-oauth demo --environment NAME``: the token steps against a real Entur environment.

Only the client's public surface is used (``get_access_token``, ``token_fetches``, ``get``).
"""

from __future__ import annotations

import anyio

from .._api_errors import ForbiddenError
from .._client import EnturClient
from .._secrets import fingerprint
from .._stores import MemoryTokenStore
from ._output import EXIT_API, EXIT_OK, CommandError, out
from ._settings import Settings, make_client

__all__ = ["demo_real"]


async def _burst(client: EnturClient, calls: int) -> str:
    """``calls`` concurrent ``get_access_token()``; the token's fingerprint."""
    tokens: set[str] = set()

    async def one() -> None:
        tokens.add(await client.get_access_token())

    async with anyio.create_task_group() as tg:
        for _ in range(calls):
            tg.start_soon(one)
    return ", ".join(sorted(fingerprint(t) for t in tokens))


async def _call_path(client: EnturClient, path: str) -> int:
    out(f"4. GET {path}")
    try:
        response = await client.get(path)
    except ForbiddenError as exc:
        out(
            f"   -> raised ForbiddenError (HTTP {exc.status_code}): the token is valid "
            "but this client lacks permission for the endpoint"
        )
        return EXIT_OK
    out(f"   -> HTTP {response.status_code} {response.reason_phrase}")
    if not response.is_success:
        raise CommandError(
            EXIT_API,
            f"API: GET {path} -> HTTP {response.status_code} {response.reason_phrase}.",
            "The token was not refused (no 401/403), but the call failed: check the path.",
        )
    return EXIT_OK


async def demo_real(settings: Settings, calls: int, path: str | None) -> int:
    """Many concurrent calls share one fetch; later calls reuse it; a new client re-fetches."""
    # A store of its own: every fetch below is a real one, not a token cached by 'token'.
    async with make_client(settings, token_store=MemoryTokenStore()) as client:
        env = client.environment
        out(f"entur-oauth demo: the real EnturClient against Entur {env.name!r}")
        out(f"(token URL {env.token_url}, API {env.api_base_url}, client id {client.client_id})")
        out()
        tag = await _burst(client, calls)
        out(f"1. {calls} concurrent get_access_token() calls")
        out(f"   -> token requests: {client.token_fetches} (token {tag})")
        before = client.token_fetches
        await _burst(client, calls)
        out(f"2. {calls} more calls")
        out(f"   -> token requests: {client.token_fetches - before} (the cached token was reused)")
        # What a 401 does to a cached token: it is dropped and fetched again, once for all.
        # A client with an empty store of its own stands for that here.
        async with make_client(settings, token_store=MemoryTokenStore()) as renewed:
            tag = await _burst(renewed, calls)
            out(
                f"3. the token is dropped (a fresh client and store, as after a 401); {calls} calls"
            )
            out(
                f"   -> token requests: {renewed.token_fetches} (one re-fetch for all; "
                f"new token {tag})"
            )
        if path:
            return await _call_path(client, path)
        out("4. (add --path /some/partner/endpoint to call an API with the token)")
    return EXIT_OK
