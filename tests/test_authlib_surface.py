"""authlib's AsyncOAuth2Client surface on EnturClient: each public name works as authlib
documents it, or is refused with an EnturError that says what to use instead."""

from __future__ import annotations

import pickle
import pydoc
import time
from typing import Any

import httpx2
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc6749 import OAuth2Token

from entur_oauth import (
    APIError,
    ConfigurationError,
    EnturClient,
    EnturError,
    ForbiddenError,
    MemoryTokenStore,
    SessionTimeoutError,
    TokenRequestError,
    UnauthorizedError,
)
from entur_oauth._errors import UnsupportedOperationError
from entur_oauth.testing import FakeEntur, ScriptedResponse

pytestmark = pytest.mark.anyio

#: authlib names that work on an EnturClient, each with the test that shows it.
WORKS = {
    "token": "test_token_is_an_oauth2_token_in_step_with_the_manager",
    "fetch_token": "test_fetch_token_forces_a_new_token_used_from_then_on",
    "ensure_active_token": "test_ensure_active_token_makes_no_request_while_valid",
    "parse_response_token": "test_parse_response_token_returns_an_oauth2_token",
    "register_compliance_hook": "test_access_token_response_hooks_run_on_every_token_response",
    "client_auth": "test_client_auth_refuses_methods_that_would_send_wrong_credentials",
    # Class-level constants authlib's own methods read; inert here, kept as authlib sets them.
    "EXTRA_AUTHORIZE_PARAMS": "test_every_authlib_name_is_covered",
    "SESSION_REQUEST_PARAMS": "test_every_authlib_name_is_covered",
    "client_auth_class": "test_client_auth_is_entur_json_body",
    "token_auth_class": "test_every_authlib_name_is_covered",
    "oauth_error_class": "test_every_authlib_name_is_covered",
}
#: authlib methods an Entur client refuses, with a call that must raise.
REFUSED: dict[str, tuple[tuple[Any, ...], str]] = {
    "refresh_token": (("https://x/token",), "fetch_token"),
    "create_authorization_url": (("https://x/authorize",), "client-credentials"),
    "token_from_fragment": (("https://x/cb#access_token=a",), "client-credentials"),
    "revoke_token": (("https://x/revoke",), "expire"),
    "introspect_token": (("https://x/introspect",), "client.token"),
    "register_client_auth_method": ((("name", lambda *a: a),), "JSON body"),
}


def _authlib_names() -> set[str]:
    return {
        name
        for name in set(dir(AsyncOAuth2Client)) - set(dir(httpx2.AsyncClient))
        if not name.startswith("_")
    }


def test_every_authlib_name_is_covered() -> None:
    """Each public name authlib's AsyncOAuth2Client adds to httpx2.AsyncClient is either in
    the works table or in the refused table: a new authlib name fails here until decided."""
    assert _authlib_names() == set(WORKS) | set(REFUSED)
    assert not set(WORKS) & set(REFUSED)
    # The constants are authlib's own values, not shadowed.
    for name in ("EXTRA_AUTHORIZE_PARAMS", "SESSION_REQUEST_PARAMS", "token_auth_class"):
        assert getattr(EnturClient, name) is getattr(AsyncOAuth2Client, name)
    # Every "works" entry names a test of this module that exists.
    for test in WORKS.values():
        assert callable(globals()[test])


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_authlib_methods_say_what_to_use(fake: FakeEntur, name: str) -> None:
    """refresh_token, create_authorization_url, ... raise UnsupportedOperationError (an
    EnturError and a NotImplementedError) naming the alternative, and send nothing."""
    client = fake.client()
    args, hint = REFUSED[name]
    with pytest.raises(UnsupportedOperationError, match=name) as caught:
        getattr(client, name)(*args)
    assert isinstance(caught.value, EnturError)
    assert isinstance(caught.value, NotImplementedError)
    assert hint in str(caught.value)
    assert fake.token_count == 0


async def test_token_is_an_oauth2_token_in_step_with_the_manager(fake: FakeEntur) -> None:
    """``client.token`` is None before the first fetch, then authlib's OAuth2Token of the
    token the API receives (access_token, token_type, expires_in, expires_at)."""
    async with fake.client() as client:
        assert client.token is None
        await client.get("/x")
        token = client.token
        assert isinstance(token, OAuth2Token)
        assert token["access_token"] == fake.issued_tokens[0]
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {token['access_token']}"
        assert token["token_type"] == "Bearer"
        # The lifetime the client settled on: the JWT's exp (whole seconds) may make it
        # a second shorter than expires_in.
        assert token["expires_in"] in {86399, 86400}
        assert abs(token["expires_at"] - (time.time() + 86400)) < 5
        assert token.is_expired() is False


async def test_token_taken_from_a_shared_store_shows_in_client_token(fake: FakeEntur) -> None:
    """A client that took its token from the shared store (no request of its own) shows
    that token as ``client.token`` too."""
    store = MemoryTokenStore()
    async with fake.client(token_store=store) as first, fake.client(token_store=store) as second:
        await first.get("/x")
        await second.get("/x")
        assert second.token_fetches == 0
        assert second.token is not None
        assert second.token["access_token"] == first.token["access_token"]


async def test_fetch_token_forces_a_new_token_used_from_then_on(fake: FakeEntur) -> None:
    """``await client.fetch_token()`` sends one token request (audience kept), returns an
    OAuth2Token, is counted in token_fetches, and the next API request carries it."""
    async with fake.client() as client:
        await client.get("/x")
        old = client.token["access_token"]
        new = await client.fetch_token()
        assert isinstance(new, OAuth2Token)
        assert new["access_token"] != old
        assert client.token["access_token"] == new["access_token"]
        assert client.token_fetches == 2
        assert fake.token_requests[-1].json()["audience"] == fake.audience
        await client.get("/x")
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {new['access_token']}"
        assert fake.token_count == 2


async def test_fetch_token_with_arguments_is_refused(fake: FakeEntur) -> None:
    """fetch_token takes no other URL, body or grant: it always runs Entur's grant."""
    client = fake.client()
    with pytest.raises(UnsupportedOperationError, match="takes no arguments"):
        await client.fetch_token("https://elsewhere.example/token")
    with pytest.raises(UnsupportedOperationError):
        await client.fetch_token(grant_type="password", username="u", password="p")
    assert fake.token_count == 0
    token = await client.fetch_token(client.environment.token_url)
    assert token["access_token"] == fake.issued_tokens[0]
    await client.aclose()


async def test_update_token_is_awaited_with_authlibs_signature(fake: FakeEntur) -> None:
    """``update_token=`` is awaited with each new token as
    ``update_token(token, access_token=<previous or None>)``, exactly as authlib's own
    ``ensure_active_token`` calls it for the client-credentials grant."""
    calls: list[tuple[OAuth2Token, dict[str, Any]]] = []

    async def update_token(token: OAuth2Token, **kwargs: Any) -> None:
        calls.append((token, kwargs))

    async with fake.client(update_token=update_token) as client:
        await client.get("/x")
        first = client.token["access_token"]
        await client.fetch_token()
        await client.get("/x")
    assert len(calls) == 2
    assert calls[0][0]["access_token"] == first
    assert calls[0][1] == {"access_token": None}
    assert calls[1][0]["access_token"] == client.token["access_token"]
    assert calls[1][1] == {"access_token": first}


async def test_a_failing_update_token_does_not_stop_requests(
    fake: FakeEntur, caplog: pytest.LogCaptureFixture
) -> None:
    """A persistence hook that raises is logged (its type only) and the token is used."""

    def update_token(token: OAuth2Token, **kwargs: Any) -> None:
        raise RuntimeError(f"cannot save {token['access_token']}")

    async with fake.client(update_token=update_token) as client:
        assert (await client.get("/x")).status_code == 200
    assert "update_token raised RuntimeError" in caplog.text
    assert fake.issued_tokens[0] not in caplog.text


async def test_access_token_response_hooks_run_on_every_token_response(fake: FakeEntur) -> None:
    """A registered ``access_token_response`` compliance hook sees every token response
    (before it is parsed) and may rewrite it, as authlib documents for provider quirks."""
    seen: list[int] = []

    def unwrap(response: httpx2.Response) -> httpx2.Response:
        seen.append(response.status_code)
        body = response.json()
        if "wrapped" in body:  # a provider that nests its token response
            return httpx2.Response(200, json=body["wrapped"], request=response.request)
        return response

    async with fake.client() as client:
        client.register_compliance_hook("access_token_response", unwrap)
        await client.get("/x")
        await client.fetch_token()
        assert seen == [200, 200]
        token = {"access_token": "abc.def.ghi", "token_type": "Bearer", "expires_in": 600}
        fake.fail_token(ScriptedResponse(200, json={"wrapped": token}))
        new = await client.fetch_token()
        assert new["access_token"] == "abc.def.ghi"
        assert new["expires_in"] == 600
        assert seen == [200, 200, 200]


def test_other_compliance_hooks_are_refused(fake: FakeEntur) -> None:
    """Hook types that never run on an Entur client are refused, not silently ignored."""
    client = fake.client()
    for hook_type in ("protected_request", "refresh_token_request", "revoke_token_request"):
        with pytest.raises(UnsupportedOperationError, match="access_token_response"):
            client.register_compliance_hook(hook_type, lambda *a: a)


async def test_ensure_active_token_makes_no_request_while_valid(fake: FakeEntur) -> None:
    """ensure_active_token() fetches the first token, then answers from the cached one."""
    async with fake.client() as client:
        assert await client.ensure_active_token() is True
        assert await client.ensure_active_token(client.token) is True
        assert fake.token_count == 1


async def test_token_argument_seeds_the_client(fake: FakeEntur) -> None:
    """``token=`` in the constructor is used without any token request, as in authlib; an
    expired one is not (the first request fetches), and a malformed one is refused."""
    async with fake.client() as donor:
        await donor.get("/x")
        issued = dict(donor.token)
    store = MemoryTokenStore()
    async with fake.client(token=issued, token_store=store) as client:
        assert client.token["access_token"] == issued["access_token"]
        await client.get("/x")
        assert client.token_fetches == 0
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {issued['access_token']}"
    expired = {**issued, "expires_at": int(time.time()) - 10}
    async with fake.client(token=expired, token_store=MemoryTokenStore()) as client:
        await client.get("/x")
        assert client.token_fetches == 1
    for bad in ({"access_token": "a\r\nb"}, {"token_type": "mac", "access_token": "x"}, "tok"):
        with pytest.raises(ConfigurationError, match="token"):
            fake.client(token=bad)


async def test_setting_client_token_makes_the_client_use_it(fake: FakeEntur) -> None:
    """``client.token = {...}`` (authlib's way to hand a client a token) is used from then
    on, without a token request."""
    async with fake.client() as donor:
        await donor.get("/x")
        issued = dict(donor.token)
    async with fake.client(token_store=MemoryTokenStore()) as client:
        client.token = issued
        assert client.token["access_token"] == issued["access_token"]
        await client.get("/x")
        assert client.token_fetches == 0
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {issued['access_token']}"


async def test_parse_response_token_returns_an_oauth2_token(fake: FakeEntur) -> None:
    """parse_response_token reads a token response into an OAuth2Token, and refuses an
    unusable one with a TokenRequestError (never authlib's OAuthError)."""
    client = fake.client()
    good = httpx2.Response(200, json={"access_token": "abc", "expires_in": 60})
    token = client.parse_response_token(good)
    assert isinstance(token, OAuth2Token)
    assert token["access_token"] == "abc"
    assert token["expires_in"] == 60
    with pytest.raises(TokenRequestError, match="mac"):
        client.parse_response_token(
            httpx2.Response(200, json={"access_token": "abc", "token_type": "mac"})
        )
    await client.aclose()


async def test_client_auth_is_entur_json_body(fake: FakeEntur) -> None:
    """client_auth() (which authlib's grant uses) sends Entur's JSON body with the
    client id, secret and audience."""
    async with fake.client() as client:
        auth = client.client_auth(client.token_endpoint_auth_method)
        assert isinstance(auth, client.client_auth_class)
        await client.get("/x")
    body = fake.token_requests[0].json()
    assert body == {
        "grant_type": "client_credentials",
        "audience": fake.audience,
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    assert fake.token_requests[0].headers["content-type"] == "application/json"


def test_help_reads_as_an_entur_client() -> None:
    """help(EnturClient) opens with the Entur client and lists the authlib methods that
    work and those that are refused."""
    text = pydoc.render_doc(EnturClient, renderer=pydoc.plaintext)
    head = text[:3000]
    assert "Entur's APIs" in head
    for name in ("fetch_token", "ensure_active_token", "update_token", *REFUSED):
        assert name in head


def test_help_opens_with_a_usage_example_and_no_private_heading() -> None:
    """help(EnturClient) shows a usage example right after the summary line; the authlib
    methods are documented as EnturClient's own, so no section of it is headed by a
    private class of entur_oauth (its only headings name EnturClient's dependencies)."""
    text = pydoc.render_doc(EnturClient, renderer=pydoc.plaintext)
    docstring = text[text.index("An ``httpx2.AsyncClient`` for Entur's APIs") :]
    assert docstring.index("Example::") < 200
    assert "EnturClient.from_env()" in docstring[:600]
    headings = [line for line in text.splitlines() if "inherited from" in line]
    assert headings
    assert not [h for h in headings if "entur_oauth" in h], headings
    assert "class EnturClient(authlib." in text
    assert "_TokenSurface" not in text
    # The authlib methods that work and the token are documented where they are defined.
    defined_here = text[: text.index("inherited from")]
    for name in ("fetch_token", "ensure_active_token", "parse_response_token", *REFUSED):
        assert f" |  {name}(" in defined_here or f" |  async {name}(" in defined_here, name
    assert "The current token as authlib's ``OAuth2Token``" in defined_here


async def test_setting_client_token_keeps_it_in_step_with_requests(fake: FakeEntur) -> None:
    """``client.token = None`` and ``client.token = <expired>`` do not change the token
    requests use, and ``client.token`` keeps showing that token; a valid one is used and
    shown."""
    async with fake.client() as client:
        await client.get("/x")
        live = client.token["access_token"]
        client.token = None
        await client.get("/x")
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {live}"
        assert client.token["access_token"] == live
        client.token = {"access_token": "expired1", "expires_at": time.time() - 10}
        await client.get("/x")
        assert fake.api_requests[-1].headers["authorization"] == f"Bearer {live}"
        assert client.token["access_token"] == live
        client.token = {"access_token": "seeded1", "expires_in": 3600}
        assert client.token["access_token"] == "seeded1"
    assert fake.token_count == 1


async def test_an_expired_token_argument_never_shows_as_client_token(fake: FakeEntur) -> None:
    """An expired ``token=`` is ignored, so ``client.token`` is None before the first
    request (not the expired token), then the fetched one."""
    expired = {"access_token": "old-token", "expires_at": time.time() - 10}
    async with fake.client(token=expired) as client:
        assert client.token is None
        await client.get("/x")
        assert client.token["access_token"] == fake.issued_tokens[0]


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post", "none"])
async def test_client_auth_refuses_methods_that_would_send_wrong_credentials(
    fake: FakeEntur, method: str
) -> None:
    """``client_auth`` for another method than the client's own raises
    UnsupportedOperationError: authlib would encode the masked ``Secret`` as the secret."""
    async with fake.client() as client:
        with pytest.raises(UnsupportedOperationError, match="JSON body"):
            client.client_auth(method)
        assert (await client.get("/x")).status_code == 200


async def test_update_token_with_authlibs_own_hook_signature_runs(fake: FakeEntur) -> None:
    """A hook written for authlib's client-credentials call, ``hook(token,
    access_token=None)`` (no ``refresh_token`` parameter), runs with each new token."""
    seen: list[tuple[str, str | None]] = []

    async def hook(token: OAuth2Token, access_token: str | None = None) -> None:
        seen.append((token["access_token"], access_token))

    async with fake.client(update_token=hook) as client:
        await client.get("/x")
        await client.fetch_token()
    first, second = fake.issued_tokens[:2]
    assert seen == [(first, None), (second, first)]


@pytest.mark.parametrize("kind", [UnauthorizedError, ForbiddenError, SessionTimeoutError])
async def test_api_errors_survive_a_pickle_round_trip(kind: type[APIError]) -> None:
    """APIError subclasses unpickle (a process pool, a task queue): same type, message,
    request and response status."""
    request = httpx2.Request("GET", "https://api.entur.test/x")
    error = kind("refused", request=request, response=httpx2.Response(418, request=request))
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is kind
    assert str(copy) == "refused"
    assert copy.status_code == 418
    assert copy.request.url == request.url
