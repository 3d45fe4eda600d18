"""Tests moved out of the former tests/test_review_regressions.py that are not about the
token manager. Each section names the behaviour file it belongs in; the lead moves them
there (tests/test_client.py, tests/test_environments.py, tests/test_token_parser.py are
other helpers' files)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2
import pytest

from entur_oauth import (
    ConfigurationError,
    EnturClient,
    Environment,
    ForbiddenError,
    Secret,
    TokenRequestError,
    UnauthorizedError,
)
from entur_oauth._token import parse_token_response
from entur_oauth.testing import FakeEntur

pytestmark = pytest.mark.anyio


# -- for tests/test_client.py: 401 retries of request bodies, redirects ------------------


async def test_multipart_upload_is_retried_after_401(fake: FakeEntur) -> None:
    """A multipart body can be sent again (its files are rewound), so a 401 is retried."""
    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        response = await client.post("/upload", files={"f": ("a.txt", b"hello")})
    assert response.status_code == 200
    assert fake.token_count == 2
    assert b"hello" in fake.api_requests[-1].body


async def test_unreplayable_body_401_drops_the_token_and_says_why(fake: FakeEntur) -> None:
    """A generator body cannot be retried; the 401 still drops the token for the next call."""

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with fake.client() as client:
        await client.get("/x")
        fake.revoke_all()
        with pytest.raises(UnauthorizedError, match="cannot be sent twice"):
            await client.post("/upload", content=body())
        assert (await client.get("/x")).status_code == 200
    assert fake.token_count == 2


def _redirecting(fake: FakeEntur, location: str, status_there: int) -> httpx2.AsyncBaseTransport:
    inner = fake.transport()

    class Redirecting(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            if request.url.path == "/moved":
                return httpx2.Response(302, headers={"location": location})
            if request.url.host == "cdn.other.test":
                return httpx2.Response(status_there)
            return await inner.handle_async_request(request)

    return Redirecting()


async def test_errors_after_a_same_origin_redirect_carry_no_token(fake: FakeEntur) -> None:
    """Every request an error carries (the redirect's too) has its Authorization removed."""
    transport = _redirecting(fake, "https://api.entur.test/forbidden/x", 200)
    async with fake.client(transport=transport, follow_redirects=True) as client:
        with pytest.raises(ForbiddenError) as info:
            await client.get("/moved")
    error = info.value
    sent = [error.request, error.response.request, *(r.request for r in error.response.history)]
    assert len(sent) == 3
    assert all("authorization" not in r.headers for r in sent)


async def test_401_from_a_foreign_host_after_redirect_keeps_the_token(fake: FakeEntur) -> None:
    """A 401 from another host (after a redirect) says nothing about our token."""
    transport = _redirecting(fake, "https://cdn.other.test/file", 401)
    async with fake.client(transport=transport, follow_redirects=True) as client:
        for _ in range(3):
            response = await client.get("/moved")
            assert response.status_code == 401
            assert "authorization" not in response.request.headers
        assert client.token_fetches == 1


# -- for tests/test_environments.py: extra_token_hosts ----------------------------------


@pytest.mark.parametrize(
    "hosts",
    ["api2.entur.io", ["evil.test/x@api.entur.io"], ["https://api2.entur.io"], ["user@api2.test"]],
)
def test_extra_token_hosts_must_be_bare_hosts(hosts: object) -> None:
    """A string (read as its characters) or a URL-ish entry is refused, not half-used."""
    with pytest.raises(ConfigurationError, match="extra_token_hosts"):
        Environment(
            name="t",
            token_url="https://partner.entur.org/oauth/token",
            audience="https://api.entur.io",
            api_base_url="https://api.entur.io",
            extra_token_hosts=hosts,  # type: ignore[arg-type]
        )


def test_extra_token_hosts_accept_host_and_port() -> None:
    """host and host:port are accepted, lower-cased."""
    env = Environment(
        name="t",
        token_url="https://partner.entur.org/oauth/token",
        audience="https://api.entur.io",
        api_base_url="https://api.entur.io",
        extra_token_hosts=frozenset({"API2.entur.io", "api3.entur.io:8443"}),
    )
    assert env.extra_token_hosts == frozenset({"api2.entur.io", "api3.entur.io:8443"})


# -- for tests/test_client.py (construction): client_secret types ------------------------


@pytest.mark.parametrize("secret", [Secret(""), b"bytes-secret", 42])
def test_empty_or_mistyped_secrets_are_configuration_errors(secret: object) -> None:
    """Secret('') and non-string secrets fail at construction with our error."""
    with pytest.raises(ConfigurationError):
        EnturClient("cid", secret, client_name="acme-app")  # type: ignore[arg-type]


# -- for tests/test_token_parser.py: redaction in unparseable bodies ---------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"access_token":"eyJhbGciOi.eyJzdWIi.c2ln","expires_in":60} trailing'),
        (502, b'<pre>{"access_token":"opaque-token-value-123"}</pre>'),
        (200, b"access_token=opaque-token-value-123&token_type=bearer"),
    ],
)
def test_tokens_in_unparseable_bodies_are_redacted(status: int, body: bytes) -> None:
    """A token inside a body that is not clean JSON never reaches the error message."""
    with pytest.raises(TokenRequestError) as info:
        parse_token_response(
            status,
            {"content-type": "text/plain"},
            body,
            sent_monotonic=0.0,
            sent_wall=0.0,
        )
    message = str(info.value)
    assert "opaque-token-value-123" not in message
    assert "eyJhbGciOi.eyJzdWIi" not in message
    assert "[redacted]" in message
