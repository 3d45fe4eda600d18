"""``entur-oauth check``: fetch a fresh token and show what it grants, never its text."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from .._secrets import fingerprint
from .._token import Token
from ._output import EXIT_API, EXIT_OK, CommandError, Redactor, duration, print_rows
from ._settings import load, make_client, run_async

if TYPE_CHECKING:
    from .._client import EnturClient

__all__ = ["run"]


def run(args: argparse.Namespace, redactor: Redactor) -> int:
    """Print the environment, client and token description; with ``--path``, try the API."""
    settings = load(args, redactor)

    async def check() -> int:
        from .._stores import MemoryTokenStore

        # A store of its own: check proves the credentials work now, not that a cached
        # token from an earlier run still does.
        async with make_client(settings, token_store=MemoryTokenStore()) as client:
            env = client.environment
            rows = [
                ("environment", env.name),
                ("token URL", env.token_url),
                ("audience", env.audience),
                ("API base", env.api_base_url),
                ("client id", str(client.client_id)),
                ("client name", client.client_name),
            ]
            started = time.perf_counter()
            access_token = await client.get_access_token()
            took = time.perf_counter() - started
            rows.append(
                ("token", f"fetched in {took:.2f} s, fingerprint {fingerprint(access_token)}")
            )
            rows += _token_rows(access_token)
            print_rows(rows)
            if args.path:
                return await _check_path(client, args.path)
        print("OK: the token endpoint accepts these credentials.")
        print("Add --path /some/endpoint to check that an API accepts the token too.")
        return EXIT_OK

    return run_async(args, check)


def _claims(access_token: str) -> dict[str, Any]:
    # The token's own (unverified) claims tell what Entur granted and until when; read from
    # the text, they need nothing from the client's internals (the times here are unused).
    return Token(access_token, expires_at=0.0, expires_at_wall=0.0, lifetime=0.0).claims()


def _token_rows(access_token: str) -> list[tuple[str, str]]:
    """Describe the token from its (unverified) claims, never its text."""
    claims = _claims(access_token)
    rows: list[tuple[str, str]] = []
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        expires = dt.datetime.fromtimestamp(exp, tz=dt.UTC)
        rows.append(
            ("expires", f"{expires:%Y-%m-%d %H:%M:%S} UTC (in {duration(exp - time.time())})")
        )
    scope = claims.get("scope")
    rows.append(("scopes", str(scope) if scope else "(none)"))
    permissions = claims.get("permissions")
    if isinstance(permissions, list):
        rows.append(("permissions", ", ".join(map(str, permissions)) or "(none)"))
    for claim in ("iss", "sub", "aud", "azp"):
        if claim in claims:
            rows.append((f"claim {claim}", _claim(claims[claim])))
    for claim in sorted(claims):
        # Entur's own claims (organisation, ...) are namespaced URLs.
        if claim.startswith("https://"):
            rows.append((f"claim {claim}", _claim(claims[claim])))
    return rows


def _claim(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


async def _check_path(client: EnturClient, path: str) -> int:
    response = await client.get(path)  # 401/403/408 raise, and map to exit code 5
    line = f"GET {path} -> HTTP {response.status_code} {response.reason_phrase}"
    if response.is_success:
        print(f"API: {line}: the API accepts the token.")
        print("OK: the credentials work for this API.")
        return EXIT_OK
    raise CommandError(
        EXIT_API,
        f"API: {line}.",
        "The token was not refused (no 401/403), but the call failed: check the path.",
    )
